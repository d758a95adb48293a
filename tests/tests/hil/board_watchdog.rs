//! The board watchdog and the reset record (docs/supervision.md), on QEMU only: QEMU models
//! the Intel 6300ESB watchdog (`-device i6300esb`), and keeps CMOS RAM over a system reset.
//!
//! One run, two boots of system `tests/configs/qemu-wdt.toml` (board
//! `tests/configs/boards/qemu-q35-wdt.toml`: the i6300esb at 00:05.0, timeout 1000 ms, the
//! record in CMOS 0x70-0x77; the monitor on core 0, partition `witness` on core 1). Boot 1
//! runs with the test switch `hang_cpu=1 hang_after_ms=0`: core 1 hangs in the hypervisor at
//! its first exit, the monitor calls it hung after `HANG_MS`, records why and stops
//! kicking, and the watchdog resets the machine. The harness runs QEMU with `-no-reboot`;
//! this test adds `-action reboot=reset` (QEMU 7.2), so the watchdog's reset reboots the
//! machine instead of ending QEMU. Boot 2 boots the same command line, prints the record,
//! does not hang (the switch applies only after an empty record) and lets `witness` give
//! the verdict after 3-5 s, several watchdog timeouts during which only the monitor's
//! kicks keep the board from resetting again. The lines must come in that order, and the
//! reset no earlier than the watchdog's timeout after the hang.
//!
//! A second test boots the same system without the device: the board file promised a
//! watchdog, so its absence is an error line, and the boot goes on.

use bulkhead_tests::{Emulator, Line, Run};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The board file's `timeout_ms`.
const TIMEOUT: Duration = Duration::from_millis(1000);

/// Runs the two boots, with each line's arrival time.
fn two_boots() -> (bulkhead_tests::Report, Vec<(Instant, String)>) {
    let seen: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let record = Arc::clone(&seen);
    let report = Run::new(Emulator::QemuBios)
        .cpus(3)
        .config("tests/configs/qemu-wdt.toml")
        .qemu_args(["-device", "i6300esb,addr=0x5", "-action", "reboot=reset"])
        .switch("hang_cpu=1")
        .switch("hang_after_ms=0")
        .timeout(Duration::from_secs(60))
        // Boot 1 logs the hung core and the stopped kicks as errors, on purpose.
        .allow_errors()
        .on_line(move |line: &Line| record.lock().unwrap().push((Instant::now(), line.to_string())))
        .execute();
    let seen = seen.lock().unwrap().clone();
    (report, seen)
}

/// The index and arrival time of the first line at or after `from` containing every one
/// of `texts`.
fn find_all(seen: &[(Instant, String)], from: usize, texts: &[&str]) -> (usize, Instant) {
    let at = seen[from..]
        .iter()
        .position(|(_, line)| texts.iter().all(|t| line.contains(t)))
        .unwrap_or_else(|| panic!("no line containing {texts:?} after line {from}; lines:\n{}", dump(seen)));
    (from + at, seen[from + at].0)
}

fn find(seen: &[(Instant, String)], from: usize, text: &str) -> (usize, Instant) {
    find_all(seen, from, &[text])
}

fn dump(seen: &[(Instant, String)]) -> String {
    seen.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n")
}

#[test]
fn svm_qemu_max_hung_core_resets_the_board_and_the_next_boot_says_why() {
    let (report, seen) = two_boots();
    // What happened when, for the log of a failure (and `--nocapture`).
    let start = seen.first().map(|(t, _)| *t);
    for (at, line) in &seen {
        let ms = start.map_or(0, |s| (*at - s).as_millis());
        if ["board watchdog", "reset record", "test: ", "monitor: ", "starting", "PASS"]
            .iter()
            .any(|k| line.contains(k))
        {
            eprintln!("{ms:>6} ms  {line}");
        }
    }
    report.assert_passed();
    // Boot 1: armed, nothing recorded, core 1 hangs, the monitor stops kicking.
    let (armed, _) = find(&seen, 0, "board watchdog: i6300esb at 00:05.0 armed, timeout 1000 ms");
    let (none, _) = find(&seen, 0, "reset record: none");
    assert!(none < armed, "the record is read before the watchdog is armed");
    let (hang, hang_at) = find(&seen, armed, "test: cpu 1 hangs in the hypervisor on purpose");
    let (hung, hung_at) = find(&seen, hang, "monitor: cpu 1 has been in the hypervisor for over 2000 ms: hung");
    let (stopped, stopped_at) = find(&seen, hung, "monitor: the board watchdog is no longer kicked");
    // Boot 2: the record, the switch not applied, no hang, the verdict.
    let (second, boot_2_at) = find_all(&seen, stopped, &["bulkhead ", " starting"]);
    let (told, _) =
        find(&seen, second, "reset record: the last reset was the board watchdog (cpu 1 hung in the hypervisor)");
    let (rearmed, rearmed_at) = find(&seen, told, "board watchdog: i6300esb at 00:05.0 armed");
    find(&seen, told, "test: hang_cpu=1 not applied: this boot follows a recorded reset");
    let (_, passed_at) = find(&seen, rearmed, "partition witness: reports PASS");
    assert!(!seen[second..].iter().any(|(_, l)| l.contains("hangs in the hypervisor")), "boot 2 hung again");
    // Boot 2 outlived the timeout (witness counts for seconds) on the monitor's kicks alone,
    // and was the last.
    let boots = seen.iter().filter(|(_, l)| l.contains("bulkhead ") && l.contains(" starting")).count();
    assert_eq!(boots, 2, "the board reset more than once");
    let alive = passed_at - rearmed_at;
    assert!(alive >= TIMEOUT * 3 / 2, "boot 2 ran only {alive:?} with the watchdog armed: too short to show the kicks");
    // The timing: the monitor waits HANG_MS, the watchdog its whole timeout.
    let detected = hung_at - hang_at;
    let reset = boot_2_at - hang_at;
    eprintln!(
        "board watchdog: hang -> monitor's verdict {} ms, hang -> next boot {} ms, kicks stopped -> next boot {} ms, boot 2 armed -> verdict {} ms",
        detected.as_millis(),
        reset.as_millis(),
        (boot_2_at - stopped_at).as_millis(),
        alive.as_millis()
    );
    assert!(detected >= Duration::from_millis(1800), "the monitor called the core hung after {detected:?}");
    assert!(reset >= TIMEOUT, "the board reset {reset:?} after the hang, before the watchdog's timeout");
    // The kicks reload the timer every quarter of the timeout, so it counted at least three
    // quarters of it after the last kick (the next boot's first line comes later still:
    // the firmware boots first).
    let after_kicks = boot_2_at - stopped_at;
    assert!(after_kicks >= TIMEOUT * 3 / 4, "the board reset {after_kicks:?} after the last kicks");
    assert!(reset < TIMEOUT + Duration::from_secs(20), "the board reset only {reset:?} after the hang");
}

/// The board file promises a watchdog that the machine lacks (QEMU without `-device
/// i6300esb`): the boot says so loudly, as an error, and goes on unprotected.
#[test]
fn svm_qemu_max_missing_watchdog_is_an_error_and_the_boot_goes_on() {
    Run::new(Emulator::QemuBios)
        .cpus(3)
        .config("tests/configs/qemu-wdt.toml")
        .allow_errors()
        .expect("pci: wdt at 00:05.0: no function there (vendor ID reads 0xffff)")
        .expect("board watchdog: i6300esb wdt at 00:05.0 not found: the board is not protected")
        .expect("reset record: none")
        .expect("monitor: on cpu 0: 0 partition watchdogs, 0 critical partitions, board watchdog none")
        .expect("partition witness: reports PASS")
        .forbid("armed")
        .forbid("[cpu0 ERROR] monitor")
        .execute()
        .assert_passed();
}

/// A critical partition that faults stops the kicks only while it is faulted or
/// restarting (`tests/configs/qemu-wdt-critical.toml`): its watchdog faults it, its policy
/// restarts it within milliseconds, the monitor kicks again as soon as it runs, and the
/// board is not reset (one boot) although the partition runs on for twice the timeout.
#[test]
fn svm_qemu_max_critical_partition_pauses_the_kicks_while_it_is_down() {
    let report = Run::new(Emulator::QemuBios)
        .cpus(3)
        .config("tests/configs/qemu-wdt-critical.toml")
        .qemu_args(["-device", "i6300esb,addr=0x5", "-action", "reboot=reset"])
        .timeout(Duration::from_secs(60))
        .expect("board watchdog: i6300esb at 00:05.0 armed, timeout 1000 ms")
        .expect("monitor: on cpu 0: 1 partition watchdogs, 1 critical partitions, board watchdog armed")
        .expect("partition watched: fault #1: watchdog")
        .expect("monitor: critical partition watched is")
        .expect("monitor: the board watchdog is no longer kicked: the board resets unless this clears")
        .expect("partition watched: state restarting -> starting (loading its payload)")
        .expect("monitor: healthy again: the board watchdog is kicked again")
        .expect("[watched] watched: back: state running, restarts 1, faults 1 (watchdog 1), misses 1, check-ins 52, last fault watchdog")
        .expect("partition watched: reports PASS")
        .allow_errors()
        .execute();
    report.assert_passed();
    let boots = report.lines.iter().filter(|l| l.to_string().contains("reset record: ")).count();
    assert_eq!(boots, 1, "the board was reset:\n{}", report.diagnostic());
}
