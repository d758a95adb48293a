//! The demo with its control partition as a Rust std program
//! (`board/systems/unikernel-demo.toml`, apps/control): the periodic loop's jitter reports
//! reach telemetry over the messaging crate, in order and sane, on every backend; and
//! control alone reports on its console.

use bulkhead_tests::{Run, every_backend};

/// A generous bound on a wake-up's lateness, in microseconds: emulators deliver timer
/// interrupts late (QEMU TCG runs on a shared host), and this test checks that the loop
/// and its reports work, not how late it is; `cargo xtask bench` measures that
/// (`unikernel-sleep-late-*`, docs/performance.md).
const WORST_LATE_BOUND_US: u64 = 50_000;

/// A report line: `jitter report N: P periods of T us, late mean M.m us worst W.w us, E
/// early` as (N, P, T, mean µs, worst µs, E).
fn parse(line: &str) -> Option<(u64, u64, u64, u64, u64, u64)> {
    let rest = line.strip_prefix("jitter report ")?;
    let (number, rest) = rest.split_once(": ")?;
    let (periods, rest) = rest.split_once(" periods of ")?;
    let (period, rest) = rest.split_once(" us, late mean ")?;
    let (mean, rest) = rest.split_once(" us worst ")?;
    let (worst, rest) = rest.split_once(" us, ")?;
    let early = rest.strip_suffix(" early")?;
    let micros = |s: &str| s.split_once('.').and_then(|(whole, _)| whole.parse().ok());
    Some((
        number.parse().ok()?,
        periods.parse().ok()?,
        period.parse().ok()?,
        micros(mean)?,
        micros(worst)?,
        early.parse().ok()?,
    ))
}

/// A telemetry line: `report N from control: tick T, worst jitter W.w us` (with `; R
/// refused so far (queue full)` after a full queue) as (N, T, worst µs).
fn parse_telemetry(line: &str) -> Option<(u64, u64, u64)> {
    let rest = line.strip_prefix("report ")?;
    let (number, rest) = rest.split_once(" from control: tick ")?;
    let (tick, rest) = rest.split_once(", worst jitter ")?;
    let worst = rest.split_once(" us")?.0.split_once('.')?.0;
    Some((number.parse().ok()?, tick.parse().ok()?, worst.parse().ok()?))
}

every_backend! {
    /// control sleeps to 1 ms deadlines with `std::thread::sleep` and reports the worst
    /// lateness of every 200 periods (`control:report_every=200`) to telemetry (bare
    /// metal) over connection `reports` with the messaging crate; telemetry acknowledges
    /// each through `acks` and the status page and ends the run (PASS) once control has
    /// seen the acknowledgement of report 5. Checked here: the reports arrived numbered 1,
    /// 2, 3, ..., 200 periods apart, each with a worst lateness under
    /// [`WORST_LATE_BOUND_US`], and control never faulted.
    fn unikernel_demo_control_reports_its_jitter(emulator) {
        let report = Run::new(emulator)
            .cpus(2)
            .scenario("board/systems/unikernel-demo.toml")
            .switch("control:report_every=200")
            .expect(
                "[control] control: periodic loop, period 1000 us, std::thread::sleep to absolute deadlines; \
                 a jitter report every 200 periods to telemetry",
            )
            .expect("[telemetry] control has seen acknowledgements up to report 5")
            .expect("partition telemetry: reports PASS")
            .forbid(": fault #")
            .forbid("[control] panic:")
            .forbid("out of order")
            .execute();
        report.assert_passed();
        let reports: Vec<(u64, u64, u64)> =
            report.partition_console("telemetry").iter().filter_map(|l| parse_telemetry(l)).collect();
        assert!(reports.len() >= 6, "at least six reports expected: {reports:?}\n{}", report.diagnostic());
        for (i, &(number, tick, worst)) in reports.iter().enumerate() {
            assert_eq!((number, tick), (i as u64 + 1, (i as u64 + 1) * 200), "report {i}: {reports:?}");
            assert!(worst < WORST_LATE_BOUND_US, "a wake-up {worst} us late, over {WORST_LATE_BOUND_US} us");
        }
    }
}

every_backend! {
    /// Without the demo's connections (apps/control on its own, `bochs-hermit-control`),
    /// control prints each report on its console: numbered 1, 2, 3, each over 200 periods
    /// of 1000 µs, none early, the mean no more than the worst, the worst lateness under
    /// [`WORST_LATE_BOUND_US`]; its exit status 0 after 3 reports ends the run.
    fn unikernel_control_alone_prints_its_jitter(emulator) {
        let report = Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-hermit-control.toml")
            .expect(
                "[control] control: periodic loop, period 1000 us, std::thread::sleep to absolute deadlines; \
                 a jitter report every 200 periods to the console, 3 reports",
            )
            .expect("partition control: reports PASS")
            .forbid(": fault #")
            .forbid("[control] panic:")
            .execute();
        report.assert_passed();
        let reports: Vec<_> =
            report.partition_console("control").iter().filter(|l| l.starts_with("jitter report")).cloned().collect();
        assert_eq!(reports.len(), 3, "three jitter reports expected: {reports:?}\n{}", report.diagnostic());
        for (i, line) in reports.iter().enumerate() {
            let (number, periods, period, mean, worst, early) =
                parse(line).unwrap_or_else(|| panic!("a malformed jitter report: {line}"));
            assert_eq!((number, periods, period, early), (i as u64 + 1, 200, 1000, 0), "{line}");
            assert!(mean <= worst, "the mean lateness above the worst: {line}");
            assert!(worst < WORST_LATE_BOUND_US, "a wake-up {worst} us late, over {WORST_LATE_BOUND_US} us: {line}");
        }
    }
}

#[test]
fn jitter_reports_parse() {
    assert_eq!(
        parse("jitter report 2: 1000 periods of 1000 us, late mean 12.3 us worst 450.0 us, 0 early"),
        Some((2, 1000, 1000, 12, 450, 0))
    );
    assert_eq!(parse("jitter report 2: 1000 periods"), None);
    assert_eq!(parse_telemetry("report 3 from control: tick 600, worst jitter 61.2 us"), Some((3, 600, 61)));
    assert_eq!(
        parse_telemetry("report 4 from control: tick 800, worst jitter 7.0 us; 2 refused so far (queue full)"),
        Some((4, 800, 7))
    );
    assert_eq!(parse_telemetry("report 4 from control"), None);
}
