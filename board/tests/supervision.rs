//! Supervision settings: when the system needs the hypervisor's monitor and which core it
//! gets, the watchdog grace, `critical` and `supervises` as the tables hold them, and what
//! `cargo xtask check` prints about them.

mod common;

use std::path::{Path, PathBuf};

use bulkhead_board::tables::{PartitionId, Watchdog};
use bulkhead_board::{System, load_system};
use common::{config_dir, options, scratch_dir};

/// A board with cores 0-3, listed out of order, and optionally a watchdog.
fn board(dir: &Path, watchdog: bool) -> PathBuf {
    let mut text =
        String::from("name = \"sup\"\nconsole_port = 0x3f8\nram = [{ base = 0x100000, size = \"255 MiB\" }]\n");
    for (core, boot) in [(3, false), (0, true), (2, false), (1, false)] {
        text.push_str(&format!("[[cpu]]\ncore = {core}\napic_id = {core}\nboot = {boot}\n"));
    }
    text.push_str(
        "[[device]]\nname = \"wdt\"\npci = { bus = 0, device = 5, function = 0 }\nbars = [{ index = 0, base = 0xfebf0000, size = \"4 KiB\" }]\n",
    );
    if watchdog {
        text.push_str("[watchdog]\nkind = \"i6300esb\"\ndevice = \"wdt\"\n");
    }
    let file = dir.join("board.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// Loads a system of one partition per `(cores, extra keys)` on [`board`].
fn system(name: &str, watchdog: bool, partitions: &[(&str, &str)]) -> Result<System, bulkhead_board::Diagnostics> {
    let dir = scratch_dir(name);
    let board = board(&dir, watchdog);
    let mut text = format!("board = {:?}\n", board.display().to_string());
    for (i, (cores, extra)) in partitions.iter().enumerate() {
        text.push_str(&format!(
            "[[partition]]\nname = \"p{i}\"\ncores = {cores}\n{extra}\n[[partition.memory]]\nguest_base = 0\nsize = \"2 MiB\"\n[partition.payload]\nkind = \"elf\"\npath = \"@guests/elf\"\n"
        ));
    }
    let file = dir.join("system.toml");
    std::fs::write(&file, text).unwrap();
    load_system(&file, &options()).result
}

fn monitor(name: &str, watchdog: bool, partitions: &[(&str, &str)]) -> Option<u32> {
    system(name, watchdog, partitions).unwrap_or_else(|d| panic!("{d}")).hypervisor.monitor_core
}

#[test]
fn no_monitor_without_a_setting_that_needs_one() {
    assert_eq!(monitor("none", false, &[("[0]", "")]), None);
    // Supervising alone needs no monitor: the supervisor asks, the hypervisor answers.
    assert_eq!(monitor("supervisor-only", false, &[("[0]", "supervises = [\"p1\"]"), ("[1]", "")]), None);
}

#[test]
fn the_monitor_takes_the_lowest_core_no_partition_owns() {
    assert_eq!(monitor("watchdog", false, &[("[0]", "watchdog_ms = 100")]), Some(1));
    assert_eq!(monitor("critical", false, &[("[1, 0]", "critical = true")]), Some(2));
    // The board lists core 3 first; the lowest number wins, not the board's order.
    assert_eq!(monitor("order", false, &[("[0]", ""), ("[1]", "watchdog_ms = 10")]), Some(2));
    assert_eq!(monitor("board", true, &[("[0, 2]", "")]), Some(1));
}

#[test]
fn a_system_without_a_free_core_is_refused_at_the_first_setting_that_needs_one() {
    let d = system("full-cores", false, &[("[0, 1]", "critical = true"), ("[2, 3]", "watchdog_ms = 5")]).unwrap_err();
    let [e] = d.errors() else { panic!("one problem:\n{d}") };
    assert_eq!((e.rule, e.line), ("supervision", 5), "{d}");
    assert!(e.message.contains("critical partition `p0`"), "{}", e.message);
    assert!(e.hint.contains("leave one core to the hypervisor"), "{}", e.hint);
    // Without any setting that needs it, owning every core is fine.
    assert!(system("full-cores-ok", false, &[("[0, 1, 2, 3]", "")]).is_ok());
}

#[test]
fn the_tables_hold_the_settings() {
    let s = system(
        "tables",
        false,
        &[
            ("[0]", "watchdog_ms = 100\nwatchdog_grace_ms = 3000\ncritical = true"),
            ("[1]", "supervises = [\"p2\", \"p0\"]"),
            ("[2]", ""),
        ],
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let [p0, p1, p2] = &s.partitions[..] else { panic!("three partitions") };
    assert_eq!(p0.watchdog, Some(Watchdog { period_ms: 100, grace_ms: 3000 }));
    assert!(p0.critical && !p1.critical && !p2.critical);
    // In the order written.
    assert_eq!(p1.supervises, [PartitionId(2), PartitionId(0)]);
    assert!(p0.supervises.is_empty() && p2.watchdog.is_none());
}

#[test]
fn the_board_watchdog_and_reset_record_reach_the_tables_and_the_summary() {
    let s = load_system(&config_dir().join("valid/full.toml"), &options()).result.unwrap();
    let w = s.board.watchdog.expect("the test board has a watchdog");
    assert_eq!(s.board.devices[usize::from(w.device.0)].name, "wdt");
    assert_eq!(w.timeout_ms, 2000);
    assert_eq!(s.board.reset_record, Some(bulkhead_board::tables::ResetRecord::Cmos { offset: 0x70 }));
    let summary = bulkhead_board::summary(&s);
    for line in [
        "monitor: core 4 (checks partition watchdogs and the hypervisor's cores, kicks the board watchdog)\n",
        "board watchdog: i6300esb `wdt` (0000:00:05.0), timeout 2000 ms\n",
        "reset record: CMOS RAM 0x70..0x78\n",
        "  4     8           (hypervisor monitor)\n",
    ] {
        assert!(summary.contains(line), "no {line:?} in:\n{summary}");
    }
    let rt = summary.lines().find(|l| l.contains("rt-control  1,2")).unwrap();
    assert!(rt.contains("250 ms (grace 5000 ms)  yes"), "{rt}");
    let bare = summary.lines().find(|l| l.contains("  bare ")).unwrap();
    assert!(bare.trim_end().ends_with("rt-control,linux"), "{bare}");
}

#[test]
fn the_default_board_watchdog_timeout_is_a_second() {
    let s = system("default-timeout", true, &[("[0]", "")]).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(s.board.watchdog.map(|w| w.timeout_ms), Some(1000));
}
