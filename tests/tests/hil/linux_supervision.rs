//! Supervision from a Linux partition (docs/linux.md, "Supervision"; docs/supervision.md,
//! "From Linux"): Debian's kernel on one vCPU with the `bulkhead_msg` module and the
//! `bulkhead-msg` command, beside the bare-metal witness, on the 3-CPU q35 (the third core
//! is the monitor's, which no partition owns).
//!
//! - Linux with a watchdog: busybox's unmodified `watchdog` daemon keeps it alive through
//!   the module's watchdog device; killed, the hypervisor's deadline passes, the partition
//!   faults with reason `watchdog`, its policy restarts it and Linux boots again.
//! - Linux as the witness's supervisor: `bulkhead-msg status` shows both partitions, and
//!   `restart` and `halt` act on the witness but not on a partition Linux does not
//!   supervise.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_tests::console::Line;
use bulkhead_tests::initramfs::INIT_SETUP;
use bulkhead_tests::kernel::{target_dir, workspace_root};
use bulkhead_tests::linux_system::{TEST_CMDLINE, linux_partition_toml};
use bulkhead_tests::{Emulator, Report, Run, linux_assets, linux_msg};

/// What /init prints before its own lines, into the kernel log.
const PREFIX: &str = "bulkhead-test:";

/// Linux's watchdog period, and the grace before its first deadline after each start: it
/// covers Linux's boot until the daemon runs (first life) and until the verdict (second
/// life, without a daemon). Measured under QEMU TCG on the 2-core development machine,
/// with the other test running: the first check-in 25 s after the run's first line.
const WATCHDOG_MS: u64 = 1000;
const GRACE_MS: u64 = 90_000;

/// Seconds the daemon keeps Linux alive before /init kills it: several periods.
const ALIVE_S: u64 = 6;

/// Guest-physical address of the page that counts Linux's lives (as linux.rs's panic test:
/// shared memory only Linux maps, which the restart leaves alone).
const LIFE_PAGE: u64 = 0x820_0000;

/// `/init`'s first lines: file systems, the life byte, and `step`, which runs a command
/// with its output lines and exit status into the kernel log (`/dev/kmsg`, so they reach
/// the console).
fn init_head() -> String {
    format!(
        "#!/bin/sh\n\
         {INIT_SETUP}\
         log() {{ echo \"{PREFIX} $*\" > /dev/kmsg; }}\n\
         step() {{\n\
           out=\"$(\"$@\" 2>&1)\"; rc=$?\n\
           echo \"$out\" | while read -r line; do [ -z \"$line\" ] || echo \"{PREFIX} $line\" > /dev/kmsg; done\n\
           echo \"{PREFIX} $*: exit $rc\" > /dev/kmsg\n\
         }}\n\
         verdict() {{ echo -ne \"$1\" | dd of=/dev/port bs=1 seek=244 count=1; while true; do sleep 1; done; }}\n\
         life=$(devmem {LIFE_PAGE:#x} 8 2>&1)\n"
    )
}

/// The module, the command, the watchdog core, busybox's `watchdog` and `devmem`, and
/// `init`, in an initramfs written as `initramfs-NAME.cpio`.
fn initramfs(name: &str, init: String) -> (PathBuf, PathBuf) {
    let assets = linux_assets::shared().unwrap_or_else(|e| panic!("{e}"));
    let dir = target_dir().join("bulkhead-configs/linux");
    std::fs::create_dir_all(&dir).unwrap();
    let initrd = dir.join(format!("initramfs-{name}.cpio"));
    let watchdog_core = assets.modules(&["watchdog"]).unwrap_or_else(|e| panic!("{e}"));
    let base = assets.initramfs().unwrap_or_else(|e| panic!("{e}")).modules(&assets.selection.release, &watchdog_core);
    linux_msg::add_to_initramfs(assets, base)
        .unwrap_or_else(|e| panic!("{e}"))
        .symlink("bin/watchdog", "busybox")
        .symlink("bin/devmem", "busybox")
        .file("init", init.into_bytes(), 0o755)
        .write(&initrd)
        .unwrap();
    (dir, initrd)
}

/// Where the initramfs has the watchdog core.
fn watchdog_core_path() -> String {
    let assets = linux_assets::shared().unwrap_or_else(|e| panic!("{e}"));
    bulkhead_tests::initramfs::module_path(&assets.selection.release, "watchdog")
}

/// Linux on core 0 (one vCPU; the memory of linux.rs's systems) with `linux_keys` in its
/// partition table, the witness on core 1, core 2 left to the monitor, the life page.
fn system_file(dir: &Path, name: &str, initrd: &Path, linux_keys: &str) -> PathBuf {
    let assets = linux_assets::shared().unwrap_or_else(|e| panic!("{e}"));
    let board = workspace_root().join("tests/configs/boards/qemu-q35-3cpu.toml");
    let text = format!(
        "name = \"{name}\"\n\
         board = {board:?}\n\
         [hypervisor]\n\
         reserved_memory = {{ base = 0x100000, size = \"31 MiB\" }}\n\
         verdict_partition = \"linux\"\n\
         {linux}\
         [[partition]]\n\
         name = \"witness\"\n\
         cores = [1]\n\
         [[partition.memory]]\n\
         guest_base = 0x0\n\
         size = \"16 MiB\"\n\
         large_pages = true\n\
         [partition.payload]\n\
         kind = \"elf\"\n\
         path = \"@guests/test-witness\"\n\
         cmdline = \"cycles=4000000000\"\n\
         [[shared_memory]]\n\
         name = \"life\"\n\
         size = \"4 KiB\"\n\
         sharers = [{{ partition = \"linux\", guest_base = {LIFE_PAGE:#x}, access = \"rw\" }}]\n",
        board = board.display().to_string(),
        linux = linux_partition_toml("linux", "[0]", linux_keys, &assets.vmlinuz(), initrd, TEST_CMDLINE),
    );
    let path = dir.join(format!("{name}.qemu.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Every decoded line with when the harness saw it.
type Seen = Arc<Mutex<Vec<(Instant, String)>>>;

fn timed(run: Run) -> (Run, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let run = run.on_line(move |line: &Line| sink.lock().unwrap().push((Instant::now(), line.to_string())));
    (run, seen)
}

/// The `bulkhead-msg status` row of partition `name` in `lines` (its fields), the last
/// one printed before line `before`.
fn status_row(lines: &[String], name: &str, before: usize) -> Option<Vec<String>> {
    lines[..before].iter().rev().find_map(|l| {
        let row = l.split_once(&format!("{PREFIX} "))?.1;
        let fields: Vec<String> = row.split_whitespace().map(str::to_string).collect();
        (fields.len() == 10 && fields[1] == name && fields[0].parse::<u8>().is_ok()).then_some(fields)
    })
}

/// The first line of `lines` containing `text` at or after `from`.
fn find(lines: &[String], text: &str, from: usize) -> Option<usize> {
    lines.iter().skip(from).position(|l| l.contains(text)).map(|i| i + from)
}

/// Linux's watchdog device, kept alive by busybox's `watchdog` for several periods: the
/// partition runs, checks in, misses no deadline. /init then kills the daemon (SIGKILL:
/// no magic close): the hypervisor's deadline passes within two periods, the partition
/// faults with reason `watchdog`, its policy restarts it, and Linux's second boot reaches
/// userspace and gives the verdict.
#[test]
fn linux_supervision_qemu_watchdog_daemon_keeps_linux_alive_until_killed() {
    let module = linux_msg::INITRAMFS_MODULE;
    let init = format!(
        "{head}\
         if [ \"$life\" = 0x00 ]; then\n\
           devmem {LIFE_PAGE:#x} 8 1\n\
           sleep 3\n\
           step insmod /{core}\n\
           step insmod /{module}\n\
           watchdog -F -T 1 -t 250ms /dev/watchdog &\n\
           daemon=$!\n\
           log \"watchdog daemon started, pid $daemon\"\n\
           sleep {ALIVE_S}\n\
           step bulkhead-msg status\n\
           log \"killing the watchdog daemon\"\n\
           kill -9 $daemon\n\
           log \"killed the watchdog daemon\"\n\
           n=0; while true; do sleep 1; n=$((n+1)); log \"$n s after the kill\"; done\n\
         fi\n\
         sleep 3\n\
         log \"second life (life byte $life) reached userspace\"\n\
         verdict '\\0'\n",
        head = init_head(),
        core = watchdog_core_path(),
    );
    let (dir, initrd) = initramfs("supervision-watchdog", init);
    let keys = format!(
        "watchdog_ms = {WATCHDOG_MS}\nwatchdog_grace_ms = {GRACE_MS}\nfault_policy = \"restart\"\nmax_restarts = 1\n"
    );
    let config = system_file(&dir, "linux-supervision-watchdog", &initrd, &keys);
    let (run, seen) = timed(
        Run::new(Emulator::QemuBios)
            .cpus(3)
            .config(&config)
            .timeout(Duration::from_secs(600))
            // The missed deadline is logged as an error.
            .allow_errors()
            .expect("partition linux: watchdog: no check-in by its deadline")
            .expect("partition linux: restart 1 of 1")
            .forbid("miss #2")
            .forbid("witness: fault"),
    );
    let report = run.execute();
    eprintln!("{}: verdict after {:.1} s", report.name, report.elapsed.as_secs_f64());
    let seen = seen.lock().unwrap().clone();
    let lines: Vec<String> = seen.iter().map(|(_, l)| l.clone()).collect();
    for line in lines.iter().filter(|l| l.contains(PREFIX) || l.contains("bulkhead_msg:") || l.contains("watchdog")) {
        eprintln!("  {line}");
    }
    let need = |text: &str, from: usize| {
        find(&lines, text, from).unwrap_or_else(|| panic!("no line with {text:?}\n{}", report.diagnostic()))
    };
    // The module made the watchdog device from the partition's own status.
    need("bulkhead_msg: partition 0 (linux), with a watchdog", 0);
    need("bulkhead_msg: watchdog 1000 ms: /dev/watchdog0, timeout 1 s", 0);
    let started = need(&format!("{PREFIX} watchdog daemon started"), 0);
    let first_check_in = need("partition linux: state starting -> running (first watchdog check-in)", 0);
    eprintln!(
        "Linux's first check-in {:.1} s after the run's first line (the grace is {} s)",
        (seen[first_check_in].0 - seen[0].0).as_secs_f64(),
        GRACE_MS / 1000
    );
    let killed = need(&format!("{PREFIX} killed the watchdog daemon"), started);
    // Alive with the daemon for several periods: running, checked in, no miss.
    let row = status_row(&lines, "linux", killed)
        .unwrap_or_else(|| panic!("no status row for linux before the kill\n{}", report.diagnostic()));
    assert_eq!(row[2], "running", "{row:?}");
    assert_eq!(row[6], format!("{WATCHDOG_MS}ms/0"), "{row:?}");
    assert_eq!(row[4], "0", "no fault yet: {row:?}");
    // The deadline passed only after the kill, and within two periods of it in the
    // partition's own time: /init logs each second after the kill, and Linux stopped
    // before its second such line (the module's worker checks in until the daemon's 1 s
    // timeout ends, the deadline comes half a period later).
    let miss = need("partition linux: watchdog: no check-in by its deadline", 0);
    assert!(miss > killed, "the watchdog fired before the daemon was killed\n{}", report.diagnostic());
    let after: Vec<&String> = lines[killed..miss].iter().filter(|l| l.contains(" s after the kill")).collect();
    eprintln!(
        "watchdog fault {:.2} s (host time) after the kill line; Linux's lines after the kill: {after:?}",
        (seen[miss].0 - seen[killed].0).as_secs_f64()
    );
    assert!(
        !lines.iter().any(|l| l.contains(&format!("{PREFIX} {} s after the kill", 2 * WATCHDOG_MS / 1000))),
        "Linux lived two periods after the kill\n{}",
        report.diagnostic()
    );
    // The fault's reason and the restart, then the second life reached userspace.
    need("partition linux: state running -> faulted (watchdog)", killed);
    let restart = need("partition linux: restart 1 of 1", miss);
    need(&format!("{PREFIX} second life (life byte 0x01) reached userspace"), restart);
    report.assert_passed();
}

/// The `bulkhead-msg` commands of the supervisor test, each through `step`.
fn supervisor_commands() -> Vec<&'static str> {
    vec![
        "bulkhead-msg status",
        "bulkhead-msg restart witness",
        // A partition Linux does not supervise (itself), and an id no partition has.
        "bulkhead-msg restart linux",
        "bulkhead-msg halt 7",
        "sleep 2",
        "bulkhead-msg halt witness",
        "sleep 1",
        "bulkhead-msg status",
        "bulkhead-msg restart 1",
        "sleep 2",
        "bulkhead-msg status",
    ]
}

/// Linux supervises the witness: the status table shows both partitions, running; a
/// restart request restarts the witness (the hypervisor logs who asked, the witness starts
/// again); a halt halts it and a restart starts it again; requests for Linux itself (which
/// it does not supervise) are refused with EACCES, for an id no partition has with ENOENT.
/// The table's counts agree with the hypervisor's log.
#[test]
fn linux_supervision_qemu_supervisor_restarts_and_halts_the_witness() {
    let module = linux_msg::INITRAMFS_MODULE;
    let mut init = format!("{head}sleep 3\nstep insmod /{module}\nstep ls /dev/bulkhead\n", head = init_head());
    for command in supervisor_commands() {
        init.push_str(&format!("step {command}\n"));
    }
    init.push_str("log \"supervisor test done\"\nverdict '\\0'\n");
    let (dir, initrd) = initramfs("supervision-supervisor", init);
    let config = system_file(&dir, "linux-supervision-supervisor", &initrd, "supervises = [\"witness\"]\n");
    let report: Report = Run::new(Emulator::QemuBios)
        .cpus(3)
        .config(&config)
        .timeout(Duration::from_secs(600))
        // The halt on request is logged as an error.
        .allow_errors()
        .expect("partition witness: restart requested by supervisor linux")
        .expect("partition witness: halt requested by supervisor linux")
        .forbid("witness: fault")
        .forbid("linux: fault")
        .execute();
    eprintln!("{}: verdict after {:.1} s", report.name, report.elapsed.as_secs_f64());
    let lines: Vec<String> = report.lines.iter().map(ToString::to_string).collect();
    for line in lines.iter().filter(|l| l.contains(PREFIX) || l.contains("bulkhead_msg:") || l.contains("witness")) {
        eprintln!("  {line}");
    }
    let need = |text: &str, from: usize| {
        find(&lines, text, from).unwrap_or_else(|| panic!("no line with {text:?}\n{}", report.diagnostic()))
    };
    need("bulkhead_msg: partition 0 (linux), supervisor", 0);
    need(&format!("{PREFIX} supervisor"), 0);
    // The first table: a header, then both partitions, running, nothing restarted.
    let header = need(&format!("{PREFIX} ID  NAME"), 0);
    for text in ["STATE", "RESTARTS", "FAULTS", "LAST-FAULT", "WATCHDOG", "EXITS", "MSGS(sent/recv/refused)"] {
        assert!(lines[header].contains(text), "{}", lines[header]);
    }
    let first_done = need(&format!("{PREFIX} bulkhead-msg status: exit 0"), header);
    let linux = status_row(&lines, "linux", first_done).expect("linux's row");
    let witness = status_row(&lines, "witness", first_done).expect("witness's row");
    assert_eq!((linux[0].as_str(), linux[2].as_str()), ("0", "running"), "{linux:?}");
    assert_eq!((witness[0].as_str(), witness[2].as_str(), witness[3].as_str()), ("1", "running", "0"), "{witness:?}");
    assert!(linux[7].parse::<u64>().unwrap() > 0, "linux's exits: {linux:?}");
    // The restart: requested, done by the hypervisor, the witness started again.
    need(&format!("{PREFIX} restart witness (partition 1): requested"), first_done);
    need(&format!("{PREFIX} bulkhead-msg restart witness: exit 0"), first_done);
    let requested = need("partition witness: restart requested by supervisor linux", 0);
    need("[witness] witness: canary at", requested);
    // Refused: itself (not supervised), an id no partition has.
    need(&format!("{PREFIX} bulkhead-msg: restart linux (partition 0): EACCES"), first_done);
    need(&format!("{PREFIX} bulkhead-msg restart linux: exit 1"), first_done);
    need(&format!("{PREFIX} bulkhead-msg: halt 7 (partition 7): ENOENT"), first_done);
    // Halted, shown so, then started again on request.
    let halted = need("partition witness: halt requested by supervisor linux", requested);
    let second_done = need(&format!("{PREFIX} bulkhead-msg status: exit 0"), first_done + 1);
    let witness = status_row(&lines, "witness", second_done).expect("witness's second row");
    assert_eq!((witness[2].as_str(), witness[3].as_str(), witness[4].as_str()), ("halted", "1", "0"), "{witness:?}");
    need("partition witness: restart requested by supervisor linux (it was halted)", halted);
    need(&format!("{PREFIX} bulkhead-msg restart 1: exit 0"), first_done);
    let third_done = need(&format!("{PREFIX} bulkhead-msg status: exit 0"), second_done + 1);
    let witness = status_row(&lines, "witness", third_done).expect("witness's third row");
    assert_eq!(witness[2], "running", "{witness:?}");
    // The witness started three times in all: at boot, after the restart, after the halt.
    let starts = report.partition_console("witness").iter().filter(|l| l.starts_with("witness: canary at")).count();
    assert_eq!(starts, 3, "witness starts\n{}", report.diagnostic());
    need(&format!("{PREFIX} supervisor test done"), third_done);
    // The table's counts are the hypervisor's: the witness's restarts as its end-of-run
    // report gives them, its exits at most the report's (it may exit after the table).
    let health = need("partition witness: health: ", third_done);
    assert!(lines[health].contains(&format!("restarts {},", witness[3])), "{witness:?} vs {}", lines[health]);
    let exits = need("partition witness: exits: total ", third_done);
    let total: u64 = lines[exits].split("total ").nth(1).and_then(|t| t.split(',').next()).unwrap().parse().unwrap();
    assert!(witness[7].parse::<u64>().unwrap() <= total, "{witness:?} vs {}", lines[exits]);
    report.assert_passed();
}
