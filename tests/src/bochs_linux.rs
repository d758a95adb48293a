//! Linux in a partition on Bochs VT-x (`corei7_skylake_x`): the system the Bochs Linux
//! test and the Linux boot benchmark (`cargo xtask bench`) share, and the initramfs whose
//! `/init` reads the TSC first ([`crate::tsc_init`]).
//!
//! Linux runs on cores 0 and 1 with 130 MiB; the real-time partition `control` on core 2
//! runs, in the test, the bench guest's `ticker` case (a 1 kHz x2APIC timer, a report every
//! 1000 ticks) and, in the benchmark, `linux-control` (its own 1 ms timer) with the four
//! connections `bulkhead-msg ping control` uses, so that the same run also measures the
//! message round trip ([`bench_system_file`]).

use std::path::{Path, PathBuf};

use crate::initramfs::Initramfs;
use crate::kernel::workspace_root;
use crate::tsc_init;

/// What the init script writes to the kernel log with the TSC `/init` began at.
pub const TSC_LINE: &str = "bulkhead-test: /init began at tsc ";

/// Ticks between two of the ticker's reports.
pub const TICKER_EVERY: u64 = 1000;

/// The initramfs: `base` (busybox and the mount points) with the TSC-reading `/init` and
/// `script` as `/init.sh` (it gets the TSC as `$1`).
pub fn initramfs(base: Initramfs, script: &str) -> Initramfs {
    base.file("init", tsc_init::elf(), 0o755).file(tsc_init::SCRIPT_PATH, script.as_bytes().to_vec(), 0o755)
}

/// The shell line that logs the TSC `/init` passed (`$1`) to the kernel log: after the
/// kernel's file systems are mounted.
pub fn tsc_log_line() -> String {
    format!("echo \"{TSC_LINE}$1\" > /dev/kmsg\n")
}

/// Linux's command line in the benchmark, in a partition and booted directly alike:
/// `quiet`, so that the console's output (in a direct boot a real 16550 at 115200 baud,
/// whose every byte the kernel waits for; in a partition the virtual UART, which never
/// makes it wait) stays a small part of the count. The direct boot adds `mem=130M`, the
/// partition's RAM.
pub const BENCH_CMDLINE: &str = "console=ttyS0 quiet panic=-1";

/// What the benchmark's init script prints at the end: its last line.
pub const BENCH_DONE_LINE: &str = "bulkhead-bench: /init done";

/// What the benchmark's init script writes before each output line of its `bulkhead-msg`
/// commands.
pub const BENCH_MSG_PREFIX: &str = "bulkhead-bench: ";

/// Round trips of the benchmark's warm-up `ping` and `event-ping` commands (their figures
/// are logged, not reported) and of the measured ones.
pub const BENCH_WARMUP: u64 = 10;
pub const BENCH_PINGS: u64 = 1000;
pub const BENCH_EVENT_PINGS: u64 = 100;

/// The benchmark's `/init.sh`: mounts the kernel's file systems, writes the TSC `/init`
/// began at ([`TSC_LINE`], `$1`) to the kernel log at level 2 (so that `quiet` prints it);
/// where the partition has connections (the hypervisor's BHCN table: in a partition, not on
/// the bare PC) loads the messaging module and runs `bulkhead-msg ping control` and
/// `event-ping control`, a warm-up of [`BENCH_WARMUP`] round trips each and then
/// [`BENCH_PINGS`] and [`BENCH_EVENT_PINGS`], every output line and exit status into the
/// kernel log after [`BENCH_MSG_PREFIX`]; then [`BENCH_DONE_LINE`], and the verdict on port
/// 0xf4 (a partition's run ends there; on the bare Bochs PC the port is unassigned and the
/// harness stops the emulator at the done line). The initramfs carries the module and the
/// command in both runs ([`crate::linux_msg::add_to_initramfs`]), so both unpack the same.
pub fn bench_init_script() -> String {
    let module = crate::linux_msg::INITRAMFS_MODULE;
    format!(
        "#!/bin/sh\n\
         export PATH=/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         echo \"<2>{TSC_LINE}$1\" > /dev/kmsg\n\
         log() {{\n\
           out=\"$(\"$@\" 2>&1)\"; rc=$?\n\
           echo \"$out\" | while read -r line; do echo \"<2>{BENCH_MSG_PREFIX}$line\" > /dev/kmsg; done\n\
           echo \"<2>{BENCH_MSG_PREFIX}$1 $2: exit $rc\" > /dev/kmsg\n\
         }}\n\
         if [ -e /sys/firmware/acpi/tables/BHCN ]; then\n\
           log insmod /{module}\n\
           log bulkhead-msg ping control {BENCH_WARMUP}\n\
           log bulkhead-msg ping control {BENCH_PINGS}\n\
           log bulkhead-msg event-ping control {BENCH_WARMUP}\n\
           log bulkhead-msg event-ping control {BENCH_EVENT_PINGS}\n\
         fi\n\
         echo \"<2>{BENCH_DONE_LINE} (kernel $(uname -r), $(nproc) cpus)\" > /dev/kmsg\n\
         echo -ne '\\0' | dd of=/dev/port bs=1 seek=244 count=1\n\
         while true; do sleep 1; done\n"
    )
}

/// The average TSC ticks of a `bulkhead-msg ping` or `event-ping` summary line (`...
/// answered, min A us, avg B us, max C us; min D tsc, avg E tsc, max F tsc`), as (min,
/// avg, max).
pub fn round_trip_tsc(line: &str) -> Option<(u64, u64, u64)> {
    let ticks = line.rsplit_once("; ")?.1;
    let mut values = ticks.split(", ").map(|part| -> Option<(&str, u64)> {
        let mut words = part.split_whitespace();
        let key = words.next()?;
        let value = words.next()?.parse().ok()?;
        (words.next()? == "tsc").then_some((key, value))
    });
    match (values.next()??, values.next()??, values.next()??) {
        (("min", min), ("avg", avg), ("max", max)) => Some((min, avg, max)),
        _ => None,
    }
}

/// The benchmark's summary line of `bulkhead-msg ping control COUNT` (`event` false) or
/// `event-ping control COUNT` (`event` true) in Linux's console lines.
pub fn bench_summary(console: &[String], event: bool, count: u64) -> Option<&str> {
    let wanted = if event {
        format!("{BENCH_MSG_PREFIX}event-ping control: {count} signals answered, ")
    } else {
        format!("{BENCH_MSG_PREFIX}ping control: {count} pings answered, ")
    };
    console.iter().find_map(|l| Some(&l[l.find(&wanted)?..]))
}

/// The system file `dir/NAME.bochs.toml`: Linux (`vmlinuz`, `initrd`, `cmdline`) on cores 0
/// and 1 of the 3-CPU Bochs PC (2 MiB in 4 KiB pages from 0 for its boot data and SMP
/// trampoline, 128 MiB in 2 MiB pages from 2 MiB), the ticker on core 2; the run's verdict
/// comes from Linux (its `/init` writes port 0xf4).
pub fn system_file(dir: &Path, name: &str, vmlinuz: &Path, initrd: &Path, cmdline: &str) -> PathBuf {
    let control = format!("path = \"@guests/bench\"\ncmdline = \"case=ticker every={TICKER_EVERY}\"\n");
    write_system(dir, name, vmlinuz, initrd, cmdline, &control)
}

/// The benchmark's system file `dir/NAME.bochs.toml`: Linux as in [`system_file`], on core 2
/// `linux-control` (a 1 ms x2APIC timer like the ticker's; it answers messages and
/// signals) and the four connections of the Linux demo (`to-control`, `from-control`,
/// `to-control-event`, `from-control-event`; linux-control's default ids and SINTs).
pub fn bench_system_file(dir: &Path, name: &str, vmlinuz: &Path, initrd: &Path, cmdline: &str) -> PathBuf {
    let mut control = String::from("path = \"@guests/linux-control\"\n");
    for (id, conn, from, to, kind, sint, extra) in [
        (11, "to-control", "linux", "control", "message", 2, "queue_depth = 16"),
        (21, "from-control", "control", "linux", "message", 2, "queue_depth = 16"),
        (13, "to-control-event", "linux", "control", "event", 3, "flag = 0"),
        (23, "from-control-event", "control", "linux", "event", 3, "flag = 0"),
    ] {
        control.push_str(&format!(
            "[[connection]]\nid = {id}\nname = \"{conn}\"\nfrom = \"{from}\"\nto = \"{to}\"\n\
             kind = \"{kind}\"\nsint = {sint}\n{extra}\n"
        ));
    }
    write_system(dir, name, vmlinuz, initrd, cmdline, &control)
}

/// Writes the system file with `control`'s payload lines after its `kind = "elf"` (and any
/// tables that follow the partitions).
fn write_system(dir: &Path, name: &str, vmlinuz: &Path, initrd: &Path, cmdline: &str, control: &str) -> PathBuf {
    let board = workspace_root().join("tests/configs/boards/bochs-pc-3cpu.toml");
    let text = format!(
        "name = \"{name}\"\n\
         board = {board:?}\n\
         [hypervisor]\n\
         reserved_memory = {{ base = 0x100000, size = \"31 MiB\" }}\n\
         verdict_partition = \"linux\"\n\
         {linux}\
         [[partition]]\n\
         name = \"control\"\n\
         cores = [2]\n\
         [[partition.memory]]\n\
         guest_base = 0x0\n\
         size = \"16 MiB\"\n\
         large_pages = true\n\
         [partition.payload]\n\
         kind = \"elf\"\n\
         {control}",
        board = board.display().to_string(),
        linux = crate::linux_system::linux_partition_toml("linux", "[0, 1]", "", vmlinuz, initrd, cmdline),
    );
    let path = dir.join(format!("{name}.bochs.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The ticker's reports on its console (`ticker: ticks=N tsc=T`), as (ticks, TSC).
pub fn ticker_reports(console: &[String]) -> Vec<(u64, u64)> {
    console
        .iter()
        .filter_map(|l| {
            let (ticks, tsc) = l.strip_prefix("ticker: ticks=")?.split_once(" tsc=")?;
            Some((ticks.parse().ok()?, tsc.trim().parse().ok()?))
        })
        .collect()
}

/// The TSC at the partition's start from the hypervisor's line `partition NAME: starting on
/// cpu C at 0xRIP, tsc T`.
pub fn start_tsc<'a>(messages: impl IntoIterator<Item = &'a str>, partition: &str) -> Option<u64> {
    let prefix = format!("partition {partition}: starting on cpu ");
    messages.into_iter().find(|m| m.starts_with(&prefix))?.rsplit_once(", tsc ")?.1.trim().parse().ok()
}

/// The partition's exits from the hypervisor's end-of-run line `partition NAME: exits:
/// total A, io B, msr C, cpuid D, other E`, as (io, msr, cpuid, other).
pub fn exit_counts<'a>(messages: impl IntoIterator<Item = &'a str>, partition: &str) -> Option<(u64, u64, u64, u64)> {
    let prefix = format!("partition {partition}: exits: ");
    let line = messages.into_iter().find(|m| m.starts_with(&prefix))?;
    let count =
        |kind: &str| -> Option<u64> { line.split(&format!(" {kind} ")).nth(1)?.split(',').next()?.trim().parse().ok() };
    Some((count("io")?, count("msr")?, count("cpuid")?, count("other")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypervisor_lines_parse() {
        let lines = [
            "partition linux: starting on cpu 0 at 0x1000200, tsc 123456",
            "partition control: exits: total 130, io 120, msr 3, cpuid 0, other 7",
        ];
        assert_eq!(start_tsc(lines, "linux"), Some(123456));
        assert_eq!(start_tsc(lines, "control"), None);
        assert_eq!(exit_counts(lines, "control"), Some((120, 3, 0, 7)));
        assert_eq!(exit_counts(lines, "linux"), None);
    }

    #[test]
    fn bench_system_file_connects_linux_control() {
        let dir = tempfile::tempdir().unwrap();
        let path = bench_system_file(dir.path(), "x", Path::new("/k/vmlinuz"), Path::new("/k/initrd"), "q");
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains("kind = \"elf\"\npath = \"@guests/linux-control\"\n"), "{text}");
        let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"')).collect();
        assert_eq!(
            names,
            ["x", "linux", "control", "to-control", "from-control", "to-control-event", "from-control-event"]
        );
        assert!(!text.contains("case=ticker"), "{text}");
    }

    #[test]
    fn bench_script_pings_only_where_there_are_connections() {
        let script = bench_init_script();
        let tsc = script.find(TSC_LINE).unwrap();
        let guard = script.find("if [ -e /sys/firmware/acpi/tables/BHCN ]").unwrap();
        let pings = script.find(&format!("log bulkhead-msg ping control {BENCH_PINGS}\n")).unwrap();
        let done = script.find(BENCH_DONE_LINE).unwrap();
        assert!(tsc < guard && guard < pings && pings < done, "{script}");
    }

    #[test]
    fn ping_summaries_parse() {
        let console = [
            "bulkhead-bench: ping control: 10 pings answered, min 1 us, avg 2 us, max 3 us; min 4 tsc, avg 5 tsc, max 6 tsc"
                .to_string(),
            "[    9.1] bulkhead-bench: ping control: 1000 pings answered, min 7 us, avg 8 us, max 9 us; min 70 tsc, avg 80 tsc, max 90 tsc".into(),
            "bulkhead-bench: event-ping control: 1000 signals answered, min 1 us, avg 1 us, max 1 us; min 1 tsc, avg 2 tsc, max 3 tsc".into(),
        ];
        let ping = bench_summary(&console, false, 1000).unwrap();
        assert!(ping.starts_with(BENCH_MSG_PREFIX), "{ping}");
        assert_eq!(round_trip_tsc(ping), Some((70, 80, 90)));
        assert_eq!(bench_summary(&console, true, 1000).and_then(round_trip_tsc), Some((1, 2, 3)));
        assert_eq!(bench_summary(&console, true, 10), None);
        assert_eq!(round_trip_tsc("ping control: 1 pings answered, min 1 us, avg 1 us, max 1 us"), None);
    }

    #[test]
    fn ticker_reports_parse() {
        let console = ["ticker: 1 kHz timer started".to_string(), "ticker: ticks=1000 tsc=5000".into()];
        assert_eq!(ticker_reports(&console), vec![(1000, 5000)]);
    }

    #[test]
    fn system_file_puts_linux_and_the_ticker_on_the_bochs_board() {
        let dir = tempfile::tempdir().unwrap();
        let path = system_file(dir.path(), "x", Path::new("/k/vmlinuz"), Path::new("/k/initrd"), "console=ttyS0");
        let text = std::fs::read_to_string(path).unwrap();
        for wanted in ["bochs-pc-3cpu.toml", "cores = [0, 1]", "cores = [2]", "case=ticker", "kind = \"linux\""] {
            assert!(text.contains(wanted), "{wanted}: {text}");
        }
    }
}
