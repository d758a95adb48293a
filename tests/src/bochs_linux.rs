//! Linux in a partition on Bochs VT-x (`corei7_skylake_x`): the system the Bochs Linux
//! test and the Linux boot benchmark (`cargo xtask bench`) share, and the initramfs whose
//! `/init` reads the TSC first ([`crate::tsc_init`]).
//!
//! Linux runs on cores 0 and 1 with 130 MiB, the real-time partition `control` on core 2
//! runs the bench guest's `ticker` case (a 1 kHz x2APIC timer, a report every 1000 ticks).

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

/// The benchmark's `/init.sh`: mounts the kernel's file systems, writes the TSC `/init`
/// began at ([`TSC_LINE`], `$1`) and [`BENCH_DONE_LINE`] to the kernel log at level 2 (so
/// that `quiet` prints them), then gives the verdict on port 0xf4 (a partition's run ends
/// there; on the bare Bochs PC the port is unassigned and the harness stops the emulator
/// at the done line).
pub fn bench_init_script() -> String {
    format!(
        "#!/bin/sh\n\
         export PATH=/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         echo \"<2>{TSC_LINE}$1\" > /dev/kmsg\n\
         echo \"<2>{BENCH_DONE_LINE} (kernel $(uname -r), $(nproc) cpus)\" > /dev/kmsg\n\
         echo -ne '\\0' | dd of=/dev/port bs=1 seek=244 count=1\n\
         while true; do sleep 1; done\n"
    )
}

/// The system file `dir/NAME.bochs.toml`: Linux (`vmlinuz`, `initrd`, `cmdline`) on cores 0
/// and 1 of the 3-CPU Bochs PC (2 MiB in 4 KiB pages from 0 for its boot data and SMP
/// trampoline, 128 MiB in 2 MiB pages from 2 MiB), the ticker on core 2; the run's verdict
/// comes from Linux (its `/init` writes port 0xf4).
pub fn system_file(dir: &Path, name: &str, vmlinuz: &Path, initrd: &Path, cmdline: &str) -> PathBuf {
    let board = workspace_root().join("tests/configs/boards/bochs-pc-3cpu.toml");
    let text = format!(
        "name = \"{name}\"\n\
         board = {board:?}\n\
         [hypervisor]\n\
         reserved_memory = {{ base = 0x100000, size = \"31 MiB\" }}\n\
         verdict_partition = \"linux\"\n\
         [[partition]]\n\
         name = \"linux\"\n\
         cores = [0, 1]\n\
         [[partition.memory]]\n\
         guest_base = 0x0\n\
         size = \"2 MiB\"\n\
         [[partition.memory]]\n\
         guest_base = 0x200000\n\
         size = \"128 MiB\"\n\
         large_pages = true\n\
         [partition.payload]\n\
         kind = \"linux\"\n\
         path = {vmlinuz:?}\n\
         initrd = {initrd:?}\n\
         cmdline = {cmdline:?}\n\
         [[partition]]\n\
         name = \"control\"\n\
         cores = [2]\n\
         [[partition.memory]]\n\
         guest_base = 0x0\n\
         size = \"16 MiB\"\n\
         large_pages = true\n\
         [partition.payload]\n\
         kind = \"elf\"\n\
         path = \"@guests/bench\"\n\
         cmdline = \"case=ticker every={TICKER_EVERY}\"\n",
        board = board.display().to_string(),
        vmlinuz = vmlinuz.display().to_string(),
        initrd = initrd.display().to_string(),
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
