//! The demo with its control partition as a Rust std program
//! (`board/systems/unikernel-demo.toml`, apps/control): the periodic loop's jitter reports
//! appear and are sane, on every backend.

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

every_backend! {
    /// control sleeps to 1 ms deadlines with `std::thread::sleep` and prints the jitter of
    /// every 1000 periods; telemetry (bare metal) runs beside it. The test takes 3 reports
    /// (`control:reports=3`): numbered 1, 2, 3, each over 1000 periods of 1000 µs, no
    /// wake-up early, the mean no more than the worst, the worst lateness under
    /// [`WORST_LATE_BOUND_US`]; control's exit status 0 ends the run.
    fn unikernel_demo_control_reports_its_jitter(emulator) {
        let report = Run::new(emulator)
            .cpus(2)
            .scenario("board/systems/unikernel-demo.toml")
            .switch("control:reports=3")
            .expect("[control] control: periodic loop, period 1000 us")
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
            assert_eq!((number, periods, period, early), (i as u64 + 1, 1000, 1000, 0), "{line}");
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
}
