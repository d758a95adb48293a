//! The harness cannot pass a broken kernel: each test makes the kernel misbehave on
//! purpose (`test=...` switches) and checks the harness reports exactly that.

use std::time::Duration;

use bulkhead_tests::{Emulator, Outcome, Report, Run};

/// Asserts the run failed and that its diagnostic names each of `needles`.
fn assert_failed_naming(report: &Report, needles: &[&str]) {
    let diagnostic = report.diagnostic();
    assert!(
        matches!(report.outcome, Outcome::Failed(_)),
        "expected a failed run, got {}:\n{diagnostic}",
        report.outcome
    );
    for needle in needles {
        assert!(diagnostic.contains(needle), "the diagnostic does not mention {needle:?}:\n{diagnostic}");
    }
    // A failed run keeps its logs for whoever has to debug it.
    let dir = report.log_dir.as_ref().expect("logs of a failed run are kept");
    assert!(dir.join("serial.bin").is_file(), "{diagnostic}");
}

#[test]
fn harness_fails_invalid_opcode() {
    let report = Run::new(Emulator::QemuBios).switch("test=ud").execute();
    assert_failed_naming(&report, &["ERROR", "#UD (vector 6)", "rip=", "run ended: failure"]);
}

#[test]
fn harness_fails_panic() {
    let report = Run::new(Emulator::QemuBios).switch("test=panic").execute();
    assert_failed_naming(&report, &["panicked at kernel/src/", "run ended: failure"]);
}

#[test]
fn harness_times_out_hang() {
    let timeout = Duration::from_secs(5);
    let report = Run::new(Emulator::QemuBios).switch("test=hang").timeout(timeout).execute();
    let diagnostic = report.diagnostic();
    assert_eq!(report.outcome, Outcome::TimedOut, "{diagnostic}");
    // The kernel really ran and hung (rather than never starting).
    assert!(report.contains("test: hanging on purpose"), "{diagnostic}");
    assert!(report.exit.is_none(), "{diagnostic}");
    assert!(
        report.elapsed >= timeout && report.elapsed < timeout + Duration::from_secs(3),
        "killed after {:?}:\n{diagnostic}",
        report.elapsed
    );
}

#[test]
fn harness_fails_missing_cpu() {
    let report = Run::new(Emulator::QemuBios).cpus(2).switch("test=skip-ap").execute();
    assert_failed_naming(&report, &["smp: cpu 1 (apic_id ", "did not come up"]);
}
