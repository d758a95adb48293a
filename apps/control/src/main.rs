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
//! Each report goes out through [`publish`]. Where the system file gives the partition a
//! message connection `reports` (the demo, `board/systems/unikernel-demo.toml`), it is
//! posted there as the demo's [`Report`] (`bulkhead_abi::demo`: the same bytes the
//! bare-metal control sends) with the `bulkhead-messaging` crate, never waiting: a full
//! queue counts the report as refused. Telemetry acknowledges through the `acks` event and
//! the "status" shared page (`status=ADDRESS`), and the next report carries the highest
//! acknowledgement seen. Without the connection, the report is a console line (which
//! holds the loop while the UART sends it: about 7 ms at 115 200 baud).

use bulkhead_abi::demo::{Jitter, REPORT_TYPE, Report, StatusPage};
use bulkhead_messaging::{EventReceiver, Sender};
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

/// Where the reports go: the telemetry partition over the demo's connections.
struct Telemetry {
    reports: Sender,
    acks: EventReceiver,
    status: StatusPage,
    /// Reports the hypervisor accepted.
    sent: u32,
    /// Reports refused because telemetry's queue was full.
    refused: u32,
    /// The highest report telemetry acknowledged.
    acknowledged: u32,
}

impl Telemetry {
    /// The demo's connections and status page, if the system file gives them.
    fn open() -> Option<Telemetry> {
        let reports = Sender::open("reports").ok()?;
        let acks = EventReceiver::open("acks").ok()?;
        let address = argument("status")?;
        // SAFETY: the system file maps the "status" shared page (read-only) at the address
        // it puts on this partition's command line.
        let status = unsafe { StatusPage::at(address) };
        Some(Telemetry { reports, acks, status, sent: 0, refused: 0, acknowledged: 0 })
    }

    /// Posts `report` as the demo's [`Report`] at `tick` periods since the start.
    fn send(&mut self, report: &IntervalReport, tick: u64) {
        // The event says "look"; the page says what was acknowledged.
        if self.acks.try_take().unwrap_or(false) {
            self.acknowledged = self.status.acknowledged();
        }
        let message = Report {
            sequence: self.sent + 1,
            acknowledged: self.acknowledged,
            tick,
            worst_jitter: Jitter::Nanoseconds(u64::try_from(report.worst_late.as_nanos()).unwrap_or(u64::MAX)),
            refused: self.refused,
        };
        match self.reports.send(REPORT_TYPE, &message.to_bytes()) {
            Ok(()) => self.sent += 1,
            Err(e) if e.is_queue_full() => self.refused += 1,
            // Telemetry not listening yet (its SynIC still off): this report is not sent.
            Err(_) => {}
        }
    }
}

/// Sends one interval's report out of the partition: to telemetry where there is one,
/// else as a console line.
fn publish(report: &IntervalReport, telemetry: Option<&mut Telemetry>, tick: u64) {
    match telemetry {
        Some(telemetry) => telemetry.send(report, tick),
        None => println!("{report}"),
    }
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

/// The number given as `NAME=N` (decimal, or hexadecimal after `0x`) on the command line,
/// the last one given (a test's switch comes after the system file's `cmdline`).
fn argument(name: &str) -> Option<u64> {
    std::env::args().filter_map(|a| number(a.strip_prefix(name)?.strip_prefix('=')?)).last()
}

fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn main() {
    let period = Duration::from_micros(argument("period_us").unwrap_or(1000).max(1));
    let report_every = argument("report_every").unwrap_or(1000).max(1);
    let reports = argument("reports");
    let mut telemetry = Telemetry::open();
    println!(
        "control: periodic loop, period {} us, std::thread::sleep to absolute deadlines; a jitter report every {} periods \
         to {}{}",
        period.as_micros(),
        report_every,
        if telemetry.is_some() { "telemetry" } else { "the console" },
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
            publish(&report, telemetry.as_mut(), number * report_every);
            if reports == Some(number) {
                std::process::exit(if early == 0 { 0 } else { 1 });
            }
        }
    }
}
