//! The terminal [`Ui`]: the plan and the y/N question on stderr/stdin, a progress bar on a
//! terminal and plain progress lines otherwise (logs, CI), and Ctrl-C turned into a clean stop
//! while the target is being written.

use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{BinaryBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};
use signal_hook::SigId;
use signal_hook::consts::{SIGINT, SIGTERM};

use super::{Answer, Plan, Stage, Ui};

/// Exit status after a second Ctrl-C (128 + SIGINT, as a shell reports a killed command).
pub const SECOND_INTERRUPT_STATUS: i32 = 130;

/// Talks to the user on the terminal.
pub struct TerminalUi {
    assume_yes: bool,
    bar: Option<ProgressBar>,
    plain: Option<PlainProgress>,
    interrupted: Arc<AtomicBool>,
    signals: Vec<SigId>,
}

impl TerminalUi {
    /// `assume_yes` (`--yes`): show the plan but do not ask. It skips nothing else.
    pub fn new(assume_yes: bool) -> Self {
        TerminalUi {
            assume_yes,
            bar: None,
            plain: None,
            interrupted: Arc::new(AtomicBool::new(false)),
            signals: Vec::new(),
        }
    }

    /// From the first write on, Ctrl-C (or SIGTERM) only raises a flag: the write loop stops
    /// at the next block and says how much was written. A second Ctrl-C exits at once (the
    /// first one already promised the message, but a hung device must not trap the user).
    /// Before that, Ctrl-C kills the command as usual: nothing has been written yet.
    fn catch_interrupts(&mut self) {
        if !self.signals.is_empty() {
            return;
        }
        for signal in [SIGINT, SIGTERM] {
            // The shutdown action must be registered first: it sees the flag as it was
            // before this signal, so only a second signal exits.
            let shutdown = signal_hook::flag::register_conditional_shutdown(
                signal,
                SECOND_INTERRUPT_STATUS,
                self.interrupted.clone(),
            );
            let flag = signal_hook::flag::register(signal, self.interrupted.clone());
            match (shutdown, flag) {
                (Ok(a), Ok(b)) => self.signals.extend([a, b]),
                (a, b) => {
                    // Without the handler Ctrl-C still stops the write, only without the
                    // final message; say so now.
                    self.signals.extend(a.into_iter().chain(b));
                    eprintln!("note: cannot catch Ctrl-C; interrupting will leave the target partially written");
                }
            }
        }
    }
}

impl Drop for TerminalUi {
    fn drop(&mut self) {
        for id in self.signals.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Reads a y/N answer: only `y` or `yes` (any case) is yes; anything else, including an empty
/// line or end of input, is no.
pub fn read_answer(input: &mut dyn BufRead) -> io::Result<bool> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    Ok(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

impl Ui for TerminalUi {
    fn confirm(&mut self, plan: &Plan) -> Answer {
        eprintln!("{plan}");
        if self.assume_yes {
            eprintln!("--yes given: writing without asking");
            return Answer::Yes;
        }
        if !io::stdin().is_terminal() {
            return Answer::CannotAsk(
                "no terminal to ask on (stdin is not a terminal); check the target above and pass --yes \
                 to write without asking"
                    .into(),
            );
        }
        eprint!("Write the image to {}, destroying its contents? [y/N] ", plan.target.path.display());
        let _ = io::stderr().flush();
        match read_answer(&mut io::stdin().lock()) {
            Ok(true) => Answer::Yes,
            Ok(false) => Answer::No,
            Err(e) => Answer::CannotAsk(format!("cannot read the answer: {e}")),
        }
    }

    fn begin(&mut self, stage: Stage, total: u64) {
        if stage == Stage::Write {
            self.catch_interrupts();
        }
        if io::stderr().is_terminal() {
            let style = ProgressStyle::with_template(
                "{msg:15} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}, {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                .with_style(style)
                .with_message(stage.label());
            self.bar = Some(bar);
        } else {
            self.plain = Some(PlainProgress::new(stage.label(), total, Instant::now()));
        }
    }

    fn progress(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        } else if let Some(plain) = &mut self.plain
            && let Some(line) = plain.update(done, Instant::now())
        {
            eprintln!("{line}");
        }
    }

    fn end(&mut self, _stage: Stage) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
        if let Some(plain) = self.plain.take() {
            eprintln!("{}", plain.finished(Instant::now()));
        }
    }

    fn note(&mut self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("note: {text}")),
            None => eprintln!("note: {text}"),
        }
    }

    fn interrupted(&mut self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }
}

/// Progress as whole lines, for a stderr that is a log rather than a terminal: one line per
/// tenth of the work, and at least one every [`PlainProgress::EVERY`] on a slow device.
#[derive(Debug)]
pub struct PlainProgress {
    label: &'static str,
    total: u64,
    start: Instant,
    last_line: Instant,
    next_tenth: u64,
}

impl PlainProgress {
    pub const EVERY: Duration = Duration::from_secs(15);

    pub fn new(label: &'static str, total: u64, now: Instant) -> Self {
        PlainProgress { label, total, start: now, last_line: now, next_tenth: 1 }
    }

    /// The line to print for `done` bytes at `now`, if one is due.
    pub fn update(&mut self, done: u64, now: Instant) -> Option<String> {
        let tenth_reached = self.total > 0 && done.saturating_mul(10) >= self.next_tenth.saturating_mul(self.total);
        if done >= self.total || !(tenth_reached || now.duration_since(self.last_line) >= Self::EVERY) {
            return None;
        }
        while self.total > 0 && self.next_tenth <= 10 && done.saturating_mul(10) >= self.next_tenth * self.total {
            self.next_tenth += 1;
        }
        self.last_line = now;
        let elapsed = now.duration_since(self.start).as_secs_f64();
        let rate = if elapsed > 0.0 { done as f64 / elapsed } else { 0.0 };
        let left = if rate > 0.0 {
            format!(", about {} left", HumanDuration(Duration::from_secs_f64((self.total - done) as f64 / rate)))
        } else {
            String::new()
        };
        Some(format!(
            "{}: {} of {} ({}%), {}/s{left}",
            self.label,
            BinaryBytes(done),
            BinaryBytes(self.total),
            done * 100 / self.total.max(1),
            BinaryBytes(rate as u64)
        ))
    }

    /// The closing line.
    pub fn finished(&self, now: Instant) -> String {
        let elapsed = now.duration_since(self.start);
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 { (self.total as f64 / secs) as u64 } else { 0 };
        format!("{}: {} done in {:.1} s ({}/s)", self.label, BinaryBytes(self.total), secs, BinaryBytes(rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        for (input, yes) in [
            ("y\n", true),
            ("YES\n", true),
            (" yes \n", true),
            ("\n", false),
            ("n\n", false),
            ("yep\n", false),
            ("", false),
        ] {
            assert_eq!(read_answer(&mut input.as_bytes()).unwrap(), yes, "{input:?}");
        }
    }

    #[test]
    fn plain_lines_every_tenth_with_rate_and_time_left() {
        let t0 = Instant::now();
        let mib = 1u64 << 20;
        let mut p = PlainProgress::new("writing", 100 * mib, t0);
        // 4 MiB after one second: not yet a tenth, not yet 15 s.
        assert_eq!(p.update(4 * mib, t0 + Duration::from_secs(1)), None);
        let line = p.update(12 * mib, t0 + Duration::from_secs(2)).expect("a tenth reached");
        assert_eq!(line, "writing: 12.00 MiB of 100.00 MiB (12%), 6.00 MiB/s, about 15 seconds left");
        assert_eq!(p.update(16 * mib, t0 + Duration::from_secs(3)), None);
        // A jump over several tenths prints once.
        assert!(p.update(55 * mib, t0 + Duration::from_secs(4)).unwrap().contains("(55%)"));
        assert_eq!(p.update(58 * mib, t0 + Duration::from_secs(5)), None);
        // A stalled device still gets a line every 15 s.
        assert!(p.update(59 * mib, t0 + Duration::from_secs(20)).unwrap().contains("(59%)"));
        // The end is the closing line's job.
        assert_eq!(p.update(100 * mib, t0 + Duration::from_secs(21)), None);
        assert_eq!(p.finished(t0 + Duration::from_secs(25)), "writing: 100.00 MiB done in 25.0 s (4.00 MiB/s)");
    }

    #[test]
    fn plain_progress_of_nothing_does_not_divide_by_zero() {
        let t0 = Instant::now();
        let mut p = PlainProgress::new("verifying", 0, t0);
        assert_eq!(p.update(0, t0 + Duration::from_secs(30)), None);
        assert!(p.finished(t0).starts_with("verifying: 0 B done"));
    }

    /// The first SIGINT during a write sets the flag instead of killing the process.
    #[test]
    fn ctrl_c_while_writing_becomes_a_flag() {
        let mut ui = TerminalUi::new(true);
        assert!(!ui.interrupted());
        ui.begin(Stage::Write, 1);
        signal_hook::low_level::raise(SIGINT).unwrap();
        assert!(ui.interrupted());
        ui.end(Stage::Write);
    }
}
