//! Deciding whether a run passed, from what the kernel printed.
//!
//! The decoded log is the evidence; the emulator's exit status is only a cross-check
//! (a QEMU triple fault exits 0, exactly like a clean exit). A run passes only if:
//! - the kernel printed the run-end success line and no run-end failure line;
//! - no forbidden line appeared (by default: any ERROR-level line);
//! - every expected substring appeared;
//! - the emulator exited by itself, with the status that goes with a success; except where
//!   the harness stopped it because the run was over ([`Ending::Stopped`]): a kernel booted
//!   without `exit=emulator` (a prebuilt image, as on a board) halts after its run-end line
//!   instead of ending the emulator; then there is no exit status to check.

use std::fmt;
use std::time::Duration;

use bulkhead_abi::run::RUN_END_SUCCESS;

use crate::console::{Level, Line};
use crate::emulator::{Emulator, Exit};

/// At most this many lines are quoted for one kind of problem.
const QUOTE_LIMIT: usize = 5;

/// The verdict on a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// The reasons, one per line.
    Failed(String),
    /// The emulator was still running at the deadline and was killed.
    TimedOut,
}

impl Outcome {
    pub fn is_passed(&self) -> bool {
        matches!(self, Outcome::Passed)
    }

    /// The failure reasons, if the run failed.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Failed(reason) => Some(reason),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Passed => f.write_str("passed"),
            Outcome::Failed(reason) => write!(f, "failed: {reason}"),
            Outcome::TimedOut => f.write_str("timed out"),
        }
    }
}

/// What a run must and must not print.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expectations {
    /// Each must appear in some line (matched against the formatted line, so
    /// `"INFO ] run ended"` also checks the level).
    pub expected: Vec<String>,
    /// None may appear in any line.
    pub forbidden: Vec<String>,
    /// Whether ERROR-level lines are allowed (they are forbidden by default).
    pub allow_errors: bool,
}

impl Expectations {
    /// Whether `line` satisfies `expected`: its formatted text contains it, and a partition's
    /// console output counts only if `expected` names that partition's `[name]` prefix (a
    /// guest cannot print its way past a check on the hypervisor).
    pub fn line_matches(line: &Line, rendered: &str, expected: &str) -> bool {
        rendered.contains(expected)
            && line.partition_console().is_none_or(|name| expected.contains(&format!("[{name}]")))
    }
}

/// How the emulator process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It exited by itself.
    Exited(Exit),
    /// It was killed at the deadline.
    TimedOut,
    /// The kernel printed its run-end line, but the emulator was still running this long
    /// afterwards and was killed.
    Lingered(Duration),
    /// The harness stopped the emulator because the run was over: the kernel, booted without
    /// `exit=emulator`, printed its run-end line (after which it halts).
    Stopped,
}

/// Decides a run's outcome from its decoded lines and how the emulator ended.
pub fn decide(emulator: Emulator, lines: &[Line], expectations: &Expectations, ending: Ending) -> Outcome {
    if ending == Ending::TimedOut {
        return Outcome::TimedOut;
    }
    let mut problems: Vec<String> = Vec::new();
    let rendered: Vec<String> = lines.iter().map(ToString::to_string).collect();

    let success = lines.iter().any(Line::is_run_success);
    let failures: Vec<&Line> = lines.iter().filter(|l| l.is_run_failure()).collect();
    for failure in &failures {
        problems.push(format!("the kernel reported `{}`", failure.message()));
    }
    if success && !failures.is_empty() {
        problems.push("the kernel reported both success and failure".into());
    }

    if !expectations.allow_errors {
        let errors: Vec<&String> = lines
            .iter()
            .zip(&rendered)
            .filter(|(l, _)| l.level() == Some(Level::Error) && !l.is_run_failure())
            .map(|(_, r)| r)
            .collect();
        quote(&mut problems, "ERROR line (forbidden unless the test allows errors)", &errors);
    }
    for forbidden in &expectations.forbidden {
        let hits: Vec<&String> = rendered.iter().filter(|r| r.contains(forbidden.as_str())).collect();
        quote(&mut problems, &format!("forbidden {forbidden:?} in"), &hits);
    }

    if !success && failures.is_empty() {
        let wanted = format!("`{RUN_END_SUCCESS}`");
        problems.push(match ending {
            Ending::Exited(exit) => format!(
                "the emulator exited ({exit}) before the kernel printed {wanted}: \
                 the kernel crashed, triple-faulted or never started"
            ),
            _ => format!("the kernel never printed {wanted}"),
        });
    }

    for expected in &expectations.expected {
        if !lines.iter().zip(&rendered).any(|(line, text)| Expectations::line_matches(line, text, expected)) {
            problems.push(format!("expected output never appeared: {expected:?}"));
        }
    }

    match ending {
        Ending::Lingered(grace) => problems.push(format!(
            "the kernel ended the run but {emulator} was still running {} s later and was \
             killed (does the kernel honour `exit=emulator`?)",
            grace.as_secs_f32()
        )),
        Ending::Exited(exit) if success || !failures.is_empty() => {
            let want = emulator.expected_exit(failures.is_empty());
            if exit != want {
                let what = if failures.is_empty() { "success" } else { "failure" };
                problems.push(format!("the run ended in {what} but {emulator} ended with {exit}, expected {want}"));
            }
        }
        // Stopped by the harness as intended: no exit status to check.
        Ending::Stopped => {}
        Ending::Exited(_) | Ending::TimedOut => {}
    }

    if problems.is_empty() { Outcome::Passed } else { Outcome::Failed(problems.join("\n")) }
}

fn quote(problems: &mut Vec<String>, what: &str, hits: &[&String]) {
    for hit in hits.iter().take(QUOTE_LIMIT) {
        problems.push(format!("{what}: {hit}"));
    }
    if hits.len() > QUOTE_LIMIT {
        problems.push(format!("... and {} more such lines", hits.len() - QUOTE_LIMIT));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::Level::*;

    fn info(m: &str) -> Line {
        Line::log("cpu0", Info, m)
    }
    fn error(m: &str) -> Line {
        Line::log("cpu0", Error, m)
    }

    fn good_run() -> Vec<Line> {
        vec![
            Line::Console("SeaBIOS (version 1.16.2)".into()),
            info("capabilities: svm npt"),
            info("cpu 0 online: apic_id=0"),
            info("cpu 1 online: apic_id=1"),
            info("smp: 2 of 2 cpus online"),
            info("run ended: success"),
        ]
    }

    fn expect(items: &[&str]) -> Expectations {
        Expectations { expected: items.iter().map(|s| s.to_string()).collect(), ..Expectations::default() }
    }

    const QEMU_OK: Ending = Ending::Exited(Exit::Code(33));

    #[test]
    fn clean_success_passes() {
        let exp = expect(&["cpu 1 online", "smp: 2 of 2 cpus online", "[console] SeaBIOS"]);
        assert_eq!(decide(Emulator::QemuBios, &good_run(), &exp, QEMU_OK), Outcome::Passed);
        assert_eq!(decide(Emulator::Bochs, &good_run(), &exp, Ending::Exited(Exit::Code(0))), Outcome::Passed);
    }

    #[test]
    fn expected_text_can_include_the_level() {
        let exp = expect(&["INFO ] run ended: success"]);
        assert!(decide(Emulator::QemuBios, &good_run(), &exp, QEMU_OK).is_passed());
        let exp = expect(&["ERROR] run ended: success"]);
        assert!(!decide(Emulator::QemuBios, &good_run(), &exp, QEMU_OK).is_passed());
    }

    #[test]
    fn guest_console_text_does_not_satisfy_hypervisor_expectations() {
        let lines = vec![
            Line::log("cpu1", Level::Info, "[attacker] partition witness: reports PASS"),
            Line::log("cpu0", Level::Info, RUN_END_SUCCESS),
        ];
        let hypervisor = expect(&["partition witness: reports PASS"]);
        let outcome = decide(Emulator::QemuBios, &lines, &hypervisor, QEMU_OK);
        assert!(outcome.reason().unwrap().contains("never appeared"), "{outcome:?}");
        let guest = expect(&["[attacker] partition witness"]);
        assert!(decide(Emulator::QemuBios, &lines, &guest, QEMU_OK).is_passed());
    }

    #[test]
    fn missing_expected_line_fails_and_is_named() {
        let exp = expect(&["cpu 2 online"]);
        let outcome = decide(Emulator::QemuBios, &good_run(), &exp, QEMU_OK);
        let reason = outcome.reason().expect("should fail");
        assert!(reason.contains("\"cpu 2 online\""), "{reason}");
    }

    #[test]
    fn run_end_failure_fails_even_with_success_status() {
        let mut lines = good_run();
        lines.pop();
        lines.push(error("exception #UD (vector 6) on cpu 0: error_code=0x0 rip=0x1234"));
        lines.push(error("run ended: failure: exception"));
        let outcome = decide(Emulator::QemuBios, &lines, &expect(&[]), QEMU_OK);
        let reason = outcome.reason().expect("should fail");
        assert!(reason.contains("run ended: failure: exception"), "{reason}");
        assert!(reason.contains("#UD (vector 6)"), "{reason}");
        // The status mismatch is reported too.
        assert!(reason.contains("expected exit status 35"), "{reason}");
    }

    #[test]
    fn success_and_failure_together_fail() {
        let mut lines = good_run();
        lines.push(error("run ended: failure: late"));
        let outcome = decide(
            Emulator::QemuBios,
            &lines,
            &Expectations { allow_errors: true, ..Default::default() },
            Ending::Exited(Exit::Code(35)),
        );
        assert!(outcome.reason().unwrap().contains("both success and failure"));
    }

    #[test]
    fn error_lines_are_forbidden_by_default_and_can_be_allowed() {
        let mut lines = good_run();
        lines.insert(3, error("smp: cpu 1 (apic_id 1) did not come up within 100 ms"));
        let outcome = decide(Emulator::QemuBios, &lines, &expect(&[]), QEMU_OK);
        let reason = outcome.reason().expect("should fail");
        assert!(reason.contains("[cpu0 ERROR] smp: cpu 1 (apic_id 1)"), "{reason}");

        let allowed = Expectations { allow_errors: true, ..Default::default() };
        assert!(decide(Emulator::QemuBios, &lines, &allowed, QEMU_OK).is_passed());
    }

    #[test]
    fn forbidden_substrings_fail_even_at_info_level() {
        let exp = Expectations { forbidden: vec!["apic_id=1".into()], ..Default::default() };
        let outcome = decide(Emulator::QemuBios, &good_run(), &exp, QEMU_OK);
        assert!(outcome.reason().unwrap().contains("cpu 1 online: apic_id=1"));
    }

    #[test]
    fn many_error_lines_are_summarised() {
        let mut lines = good_run();
        for i in 0..20 {
            lines.insert(1, error(&format!("e{i}")));
        }
        let outcome = decide(Emulator::QemuBios, &lines, &expect(&[]), QEMU_OK);
        let reason = outcome.reason().unwrap();
        assert_eq!(reason.matches("ERROR line").count(), QUOTE_LIMIT);
        assert!(reason.contains("and 15 more"), "{reason}");
    }

    #[test]
    fn exit_without_run_end_line_fails() {
        // A triple fault under QEMU -no-reboot exits 0, like a clean exit.
        let lines = vec![Line::Console("GRUB".into()), info("capabilities: x")];
        let outcome = decide(Emulator::QemuBios, &lines, &expect(&[]), Ending::Exited(Exit::Code(0)));
        let reason = outcome.reason().expect("should fail");
        assert!(reason.contains("exited (exit status 0) before"), "{reason}");
        // Even the success exit status is not enough without the line.
        let outcome = decide(Emulator::QemuBios, &lines, &expect(&[]), QEMU_OK);
        assert!(!outcome.is_passed());
        // And no lines at all (the emulator failed to start the image).
        let outcome = decide(Emulator::Bochs, &[], &expect(&[]), Ending::Exited(Exit::Code(1)));
        assert!(!outcome.is_passed());
    }

    #[test]
    fn success_line_with_wrong_exit_status_fails() {
        for (emulator, exit) in [
            (Emulator::QemuBios, Exit::Code(0)),
            (Emulator::QemuUefi, Exit::Code(35)),
            (Emulator::QemuBios, Exit::Signal(9)),
            (Emulator::Bochs, Exit::Code(1)),
        ] {
            let outcome = decide(emulator, &good_run(), &expect(&[]), Ending::Exited(exit));
            let reason = outcome.reason().expect("should fail");
            assert!(reason.contains("ended in success"), "{reason}");
            assert!(reason.contains(&exit.to_string()), "{reason}");
        }
    }

    #[test]
    fn success_text_outside_a_log_frame_does_not_count() {
        let lines = vec![Line::Console("run ended: success".into())];
        let outcome = decide(Emulator::QemuBios, &lines, &expect(&[]), QEMU_OK);
        assert!(!outcome.is_passed());
    }

    #[test]
    fn timeout_wins() {
        assert_eq!(decide(Emulator::QemuBios, &good_run(), &expect(&[]), Ending::TimedOut), Outcome::TimedOut);
    }

    #[test]
    fn a_run_stopped_at_its_run_end_line_is_judged_from_the_console_alone() {
        let stopped = Ending::Stopped;
        for emulator in Emulator::ALL {
            assert_eq!(decide(emulator, &good_run(), &expect(&["smp: 2 of 2 cpus online"]), stopped), Outcome::Passed);
        }
        // Every other rule still applies.
        let outcome = decide(Emulator::QemuBios, &good_run(), &expect(&["cpu 2 online"]), stopped);
        assert!(outcome.reason().unwrap().contains("\"cpu 2 online\""), "{outcome:?}");
        let mut lines = good_run();
        lines.insert(2, error("smp: cpu 1 did not come up"));
        assert!(!decide(Emulator::Bochs, &lines, &expect(&[]), stopped).is_passed());
        lines.pop();
        lines.push(error("run ended: failure: exception"));
        let outcome =
            decide(Emulator::QemuUefi, &lines, &Expectations { allow_errors: true, ..Default::default() }, stopped);
        let reason = outcome.reason().expect("a failure line fails the run");
        assert!(reason.contains("run ended: failure: exception") && !reason.contains("exit status"), "{reason}");
        let outcome = decide(Emulator::QemuBios, &[info("capabilities: x")], &expect(&[]), stopped);
        assert!(outcome.reason().unwrap().contains("never printed"), "{outcome:?}");
    }

    #[test]
    fn emulator_that_does_not_exit_after_run_end_fails() {
        let outcome = decide(Emulator::Bochs, &good_run(), &expect(&[]), Ending::Lingered(Duration::from_secs(10)));
        assert!(outcome.reason().unwrap().contains("exit=emulator"));
    }
}
