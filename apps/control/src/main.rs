//! The demo's real-time "control" partition as an ordinary Rust `std` program (the
//! bare-metal original is guests/src/bin/demo-control.rs): a periodic loop that sleeps
//! with `std::thread::sleep` until absolute deadlines one period apart (the start plus N
//! periods, so a late wake-up never shifts the later ones), measures how late each
//! wake-up is against the partition's reference time (`Instant`), and reports the jitter
//! of every interval of `report_every` periods: the mean and worst lateness and the
//! count of periods, and how many woke early (never, if sleep is right).
//!
//! Command line (`cmdline` in the system file): `period_us=N` (default 1000),
//! `report_every=N` periods (default 1000: a report a second), `reports=N` to end with
//! exit status 0 (the partition's PASS) after N reports, 1 if a wake-up came early
//! (default: run forever).
//!
//! Each report goes out through [`publish`]: a line on the console, the one place where
//! a report leaves the partition.

use std::fmt;
use std::time::{Duration, Instant};

/// The jitter of one reporting interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalReport {
    /// The report's number, from 1.
    pub number: u64,
    /// The loop's period.
    pub period: Duration,
    /// Periods in the interval.
    pub periods: u64,
    /// Mean lateness of a wake-up after its deadline.
    pub mean_late: Duration,
    /// Worst lateness in the interval.
    pub worst_late: Duration,
    /// Wake-ups before their deadline.
    pub early: u64,
}

impl fmt::Display for IntervalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "jitter report {}: {} periods of {} us, late mean {}.{} us worst {}.{} us, {} early",
            self.number,
            self.periods,
            self.period.as_micros(),
            self.mean_late.as_micros(),
            self.mean_late.subsec_nanos() % 1000 / 100,
            self.worst_late.as_micros(),
            self.worst_late.subsec_nanos() % 1000 / 100,
            self.early,
        )
    }
}

/// Sends one interval's report out of the partition: today a console line.
fn publish(report: &IntervalReport) {
    println!("{report}");
}

/// Lateness of the wake-ups of one interval.
#[derive(Default)]
struct Meter {
    periods: u64,
    total: Duration,
    worst: Duration,
    early: u64,
}

impl Meter {
    fn woke(&mut self, deadline: Instant, now: Instant) {
        self.periods += 1;
        match now.checked_duration_since(deadline) {
            Some(late) => {
                self.total += late;
                self.worst = self.worst.max(late);
            }
            None => self.early += 1,
        }
    }

    /// The interval's report; the meter starts over.
    fn take(&mut self, number: u64, period: Duration) -> IntervalReport {
        let meter = std::mem::take(self);
        IntervalReport {
            number,
            period,
            periods: meter.periods,
            mean_late: meter.total / meter.periods.max(1) as u32,
            worst_late: meter.worst,
            early: meter.early,
        }
    }
}

/// The number given as `NAME=N` on the command line, the last one given (a test's switch
/// comes after the system file's `cmdline`).
fn argument(name: &str) -> Option<u64> {
    std::env::args().filter_map(|a| a.strip_prefix(name)?.strip_prefix('=')?.parse().ok()).last()
}

fn main() {
    let period = Duration::from_micros(argument("period_us").unwrap_or(1000).max(1));
    let report_every = argument("report_every").unwrap_or(1000).max(1);
    let reports = argument("reports");
    println!(
        "control: periodic loop, period {} us, std::thread::sleep to absolute deadlines; a jitter report every {} periods{}",
        period.as_micros(),
        report_every,
        match reports {
            Some(n) => format!(", {n} reports"),
            None => String::new(),
        }
    );
    let start = Instant::now();
    let mut meter = Meter::default();
    let (mut number, mut early) = (0u64, 0u64);
    let mut deadline = start;
    loop {
        deadline += period;
        if let Some(left) = deadline.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
        meter.woke(deadline, Instant::now());
        // The periodic work of a control loop would run here.
        if meter.periods == report_every {
            number += 1;
            let report = meter.take(number, period);
            early += report.early;
            publish(&report);
            if reports == Some(number) {
                std::process::exit(if early == 0 { 0 } else { 1 });
            }
        }
    }
}
