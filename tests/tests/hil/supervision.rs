//! Supervision on every backend (docs/supervision.md): partition watchdogs enforced by the
//! hypervisor's monitor, and the supervisor's hypercalls. Guest:
//! `guests/src/bin/test-supervision.rs`.

use bulkhead_tests::{Report, Run, every_backend};

/// The console lines of the run, as text.
fn text(report: &Report) -> Vec<String> {
    report.lines.iter().map(|l| l.to_string()).collect()
}

/// The number after `key` in the first line that contains it.
fn number_after(lines: &[String], key: &str) -> Option<u64> {
    let line = lines.iter().find(|l| l.contains(key))?;
    line.split_once(key)?.1.split(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty())?.parse().ok()
}

every_backend! {
    /// "watched" checks in 12 times every 50 ms (its watchdog is 200 ms), then spins without
    /// an exit: the monitor must see its deadline pass within one period, fault it with
    /// reason `watchdog` and its policy restart it; in its second life it checks in again and
    /// reads its own status (one restart, one miss, one watchdog fault). "steady" checks in
    /// all along and is never touched.
    fn watchdog_faults_a_partition_that_stops_checking_in(emulator) {
        let report = Run::new(emulator)
            .cpus(3)
            .scenario("tests/configs/bochs-watchdog.toml")
            .expect("config: monitor on core 0")
            .expect("monitor: on cpu 0: 2 partition watchdogs, 0 critical partitions, board watchdog none")
            .expect("partition watched: state starting -> running (first watchdog check-in)")
            .expect("[watched] watched: 12 check-ins done; stops checking in")
            .expect("partition watched: watchdog: no check-in by its deadline")
            .expect("partition watched: fault #1: watchdog: no check-in within its deadline (period 200 ms)")
            .expect("partition watched: state running -> faulted (watchdog)")
            .expect("partition watched: restart 1 of 1 (memory zeroed, payload reloaded)")
            .expect("partition watched: state faulted -> restarting (policy restart)")
            .expect("partition watched: state restarting -> starting (loading its payload)")
            .expect("[watched] watched: life 2 (state starting, restarts 1), watchdog 200 ms")
            .expect("[watched] watched: back: state running, restarts 1, faults 1 (watchdog 1), misses 1, check-ins 24, last fault watchdog")
            .expect("partition watched: reports PASS")
            .expect("partition steady: health: state running, restarts 0, faults 0, watchdog misses 0")
            .forbid("partition steady: watchdog")
            .forbid("partition steady: fault")
            .forbid("steady: FAIL")
            .forbid("miss #2")
            .allow_errors()
            .execute();
        report.assert_passed();
        let lines = text(&report);
        // Detected within one period of the deadline (the monitor ticks every millisecond).
        let late = number_after(&lines, "partition watched: watchdog: no check-in by its deadline (").unwrap();
        assert!(late < 200, "detected {late} ms after the deadline:\n{}", report.diagnostic());
        // steady kept checking in (it prints every 10th) and its count in the end-of-run
        // report is at least what it printed.
        let printed = lines.iter().filter(|l| l.contains("[steady] steady: ") && l.contains(" check-ins")).count();
        assert!(printed >= 1, "steady printed no progress:\n{}", report.diagnostic());
        let check_ins = number_after(&lines, "partition steady: health: state running, restarts 0, faults 0, watchdog misses 0, check-ins ").unwrap();
        assert!(check_ins >= 10 * printed as u64, "steady: {check_ins} check-ins:\n{}", report.diagnostic());
    }
}

every_backend! {
    /// "boss" supervises "worker" but not "bystander": it reads worker's state, restarts it,
    /// halts it and restarts it from halted (the state and restart count follow each step),
    /// is refused for bystander and for ids no partition has, and reads worker's counters,
    /// which must equal the hypervisor's end-of-run report (worker idles without exits by
    /// then). worker and bystander, which supervise nobody, are refused everything but their
    /// own status.
    fn supervisor_restarts_and_halts_only_the_partitions_it_supervises(emulator) {
        let report = Run::new(emulator)
            .cpus(3)
            .scenario("tests/configs/bochs-supervisor.toml")
            .expect("[boss] supervisor: I am partition 0 (boss), supervisor true")
            .expect("[bystander] supervised: partition 2 (bystander), life 1: refusals as documented")
            .expect("[boss] supervisor: target worker is running (0 restarts)")
            .expect("[boss] supervision: status of a partition not supervised status 0x6")
            .expect("[boss] supervision: status of partition 99 status 0xd")
            .expect("[boss] supervision: restart of a partition not supervised status 0x6")
            .expect("[boss] supervision: restart of partition 99 status 0xd")
            .expect("[boss] supervision: unknown action status 0x5")
            .expect("[boss] supervision: control in the memory form status 0x2")
            .expect("[boss] supervision: an undefined Bulkhead call code status 0x2")
            .expect("partition worker: restart requested by supervisor boss")
            .expect("partition worker: state running -> restarting (requested by the supervisor)")
            .expect("[boss] supervisor: after the restart: running, 1 restart")
            .expect("partition worker: halt requested by supervisor boss")
            .expect("partition worker: state running -> halted (requested by the supervisor)")
            .expect("[boss] supervisor: after the halt: halted")
            .expect("[boss] supervision: halt of a halted partition status 0x7")
            .expect("partition worker: restart requested by supervisor boss (it was halted)")
            .expect("[boss] supervisor: after the restart from halted: running, 2 restarts")
            .expect("[worker] supervised: partition 1 (worker), life 3: refusals as documented")
            .expect("partition boss: reports PASS")
            .forbid("supervision: FAIL")
            .forbid("refusals WRONG")
            .forbid("partition bystander: state running ->")
            .execute();
        report.assert_passed();
        let lines = text(&report);
        // The counters boss read equal the end-of-run report's.
        let read = lines.iter().find(|l| l.contains("[boss] supervisor: target counters: ")).expect("counters line");
        let field = |line: &str, key: &str| number_after(&[line.to_string()], key);
        let exits_line = lines.iter().find(|l| l.contains("partition worker: exits: total ")).expect("exit counts");
        for (read_key, report_key) in [(" io ", ", io "), (" msr ", ", msr "), (" cpuid ", ", cpuid "), (" other ", ", other ")] {
            let (a, b) = (field(read, read_key), field(exits_line, report_key));
            assert!(a.is_some() && a == b, "{read_key}: boss read {a:?}, the report says {b:?}:\n{}", report.diagnostic());
        }
        let health = lines.iter().find(|l| l.contains("partition worker: health: ")).expect("health line");
        assert_eq!(field(read, "restarts "), field(health, "restarts "), "{}", report.diagnostic());
        assert_eq!(field(health, "restarts "), Some(2), "{}", report.diagnostic());
    }
}
