//! Boots a Linux kernel directly, without the hypervisor, on the same emulated machine as
//! the hypervisor's runs: in QEMU `qemu-system-x86_64 -kernel vmlinuz -initrd initramfs
//! -append CMDLINE` ([`crate::emulator::qemu_machine_args`]); in Bochs ([`DirectBoot::bochs`],
//! VT-x model `corei7_skylake_x`, the harness's [`crate::emulator::bochs_config`]) from a GRUB
//! ISO whose `linux`/`initrd` entry prints the TSC right before `boot`
//! ([`bulkhead_image::LinuxIso`]). It checks that Debian's kernel and the initramfs built
//! here work, and is the baseline "the same kernel booted directly" for comparisons with
//! Linux in a partition (the Bochs one for `cargo xtask bench`).
//!
//! The run watches the serial output for marker strings, in order, and stops the emulator once the
//! last one appeared (a shell does not end by itself), when the emulator exits (a kernel panic with
//! `panic=-1` and `-no-reboot`), or at the deadline.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::emulator::{
    BOCHS_CONFIG_FILE, BOCHS_LOG_FILE, Emulator, Exit, ISO_FILE, Medium, SERIAL_FILE, STDERR_FILE, STDOUT_FILE,
};
use crate::run::{HarnessError, KEEP_LOGS_ENV, sanitize, spawn_in};
use crate::{initramfs, kernel};

/// The kernel command line of a direct boot: the console on the first UART, and a panic
/// ends the run at once (QEMU runs with `-no-reboot`) instead of waiting for the deadline.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1";

/// The Bochs MSR definitions of a direct boot (`cpu: msrs=`), in the run's folder.
pub const BOCHS_MSRS_FILE: &str = "msrs.def";

/// MSRs Bochs 2.7's `corei7_skylake_x` lacks although a real CPU of its kind has them,
/// which Debian's kernel needs when it runs on that CPU directly (in a partition the
/// hypervisor answers them or hides the feature):
///
/// - IA32_MISC_ENABLE (0x1A0): every Intel 64 CPU has it (SDM Vol. 4 Table 2-2); Linux's
///   `verify_cpu` reads it unguarded (a #GP there is a triple fault). It reads what a
///   partition reads on that CPU ([`bulkhead_virt::misc_enable::partition_value`] of a
///   refused read), so Linux sees the same value both ways.
/// - IA32_MCG_CAP (0x179, read-only) and IA32_MCG_STATUS (0x17A): the CPUID Bochs reports
///   has MCE and MCA (leaf 1 EDX bits 7 and 14), whose MSRs every such CPU has (SDM Vol. 3B
///   16.3.1); Linux panics ("MCA architectural violation") when MCG_STATUS is refused.
///   Defined as a CPU with no banks and nothing pending (0), which Linux accepts.
///
/// Bochs's format: address, type, reset value (high, low), reserved bits (high, low: a
/// write setting one is #GP), ignored bits (high, low).
pub fn bochs_msrs() -> String {
    let value = bulkhead_virt::misc_enable::partition_value(None);
    format!(
        "# Written by bulkhead-tests for a direct boot (tests/src/direct.rs).\n\
         0x00000179 0 00000000 00000000 ffffffff ffffffff 00000000 00000000\n\
         0x0000017a 0 00000000 00000000 ffffffff fffffff8 00000000 00000000\n\
         0x000001a0 0 {:08x} {:08x} 00000000 00000000 00000000 00000000\n",
        value >> 32,
        value & 0xffff_ffff
    )
}

/// Adds [`bochs_msrs`] to the bochsrc written in `dir`: more of the hardware's MSRs, never
/// fewer checks (`ignore_bad_msrs=0` stays).
fn with_bochs_msrs(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join(BOCHS_MSRS_FILE), bochs_msrs())?;
    let config = std::fs::read_to_string(dir.join(BOCHS_CONFIG_FILE))?;
    let config: String = config
        .lines()
        .map(|line| match line.starts_with("cpu: ") {
            true => format!("{line}, msrs=\"{BOCHS_MSRS_FILE}\"\n"),
            false => format!("{line}\n"),
        })
        .collect();
    std::fs::write(dir.join(BOCHS_CONFIG_FILE), config)
}

/// A direct boot to perform.
#[derive(Debug, Clone)]
pub struct DirectBoot {
    name: String,
    kernel: PathBuf,
    initrd: PathBuf,
    cmdline: String,
    cpus: u8,
    timeout: Duration,
    markers: Vec<String>,
    bochs: bool,
}

/// What a direct boot showed.
#[derive(Debug)]
pub struct DirectReport {
    pub name: String,
    /// The serial console, as text.
    pub serial: String,
    /// Each marker, with the time from the emulator's start to its appearance (None: never seen).
    pub markers: Vec<(String, Option<Duration>)>,
    /// How the emulator ended, if it ended by itself (a run that reached every marker is stopped).
    pub exit: Option<Exit>,
    pub elapsed: Duration,
    pub timeout: Duration,
    /// The emulator command line, run in the run's folder.
    pub command_line: String,
    /// Where the logs were kept (runs that did not reach every marker, or with
    /// `BULKHEAD_KEEP_LOGS`).
    pub log_dir: Option<PathBuf>,
}

impl DirectBoot {
    /// Boots `kernel` with `initrd` and [`DEFAULT_CMDLINE`], one CPU, until
    /// [`initramfs::INIT_MARKER`] and then [`initramfs::SHELL_PROMPT`] appear, within five
    /// minutes.
    pub fn new(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>) -> Self {
        let name = std::thread::current().name().filter(|n| *n != "main").unwrap_or("direct").to_string();
        DirectBoot {
            name,
            kernel: kernel.into(),
            initrd: initrd.into(),
            cmdline: DEFAULT_CMDLINE.to_string(),
            cpus: 1,
            timeout: Duration::from_secs(300),
            markers: vec![initramfs::INIT_MARKER.to_string(), initramfs::SHELL_PROMPT.to_string()],
            bochs: false,
        }
    }

    /// Boots in Bochs (`corei7_skylake_x`, [`crate::emulator::Emulator::Bochs`]'s machine)
    /// from a GRUB ISO instead of QEMU.
    pub fn bochs(mut self) -> Self {
        self.bochs = true;
        self
    }

    /// Names the run (its log folder `target/hil-logs/<name>/`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn cpus(mut self, cpus: u8) -> Self {
        assert!(cpus >= 1, "a run needs at least one CPU");
        self.cpus = cpus;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds words to the kernel command line.
    pub fn append(mut self, words: &str) -> Self {
        self.cmdline.push(' ');
        self.cmdline.push_str(words);
        self
    }

    /// Replaces the kernel command line.
    pub fn cmdline(mut self, cmdline: &str) -> Self {
        self.cmdline = cmdline.to_string();
        self
    }

    /// Replaces the markers to wait for (in this order).
    pub fn until(mut self, markers: &[&str]) -> Self {
        self.markers = markers.iter().map(|m| m.to_string()).collect();
        self
    }

    /// The QEMU arguments, for a run in a folder where the serial file is written.
    pub fn qemu_args(&self) -> Vec<String> {
        let mut args = crate::emulator::qemu_machine_args("max", self.cpus);
        args.push("-kernel".into());
        args.push(self.kernel.display().to_string());
        args.push("-initrd".into());
        args.push(self.initrd.display().to_string());
        args.push("-append".into());
        args.push(self.cmdline.clone());
        args
    }

    /// Boots and watches the console (see the module documentation).
    pub fn run(self) -> Result<DirectReport, HarnessError> {
        for file in [&self.kernel, &self.initrd] {
            if !file.is_file() {
                return Err(HarnessError(format!("no file {}", file.display())));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("bulkhead-direct-{}-", sanitize(&self.name)))
            .tempdir()
            .map_err(|e| HarnessError(format!("cannot create a run folder: {e}")))?;
        let cmd = if self.bochs {
            bulkhead_image::LinuxIso::new(&self.kernel, &self.initrd, &self.cmdline)
                .build(&dir.path().join(ISO_FILE))
                .map_err(|e| HarnessError(format!("cannot build the direct-boot ISO: {e}")))?;
            let cmd = Emulator::Bochs
                .command(self.cpus, dir.path(), Medium::Cdrom)
                .map_err(|e| HarnessError(format!("cannot write the Bochs configuration: {e}")))?;
            with_bochs_msrs(dir.path()).map_err(|e| HarnessError(format!("cannot write {BOCHS_MSRS_FILE}: {e}")))?;
            cmd
        } else {
            let mut cmd = Command::new("qemu-system-x86_64");
            cmd.args(self.qemu_args());
            cmd
        };
        let (mut child, command_line, started) = spawn_in(cmd, dir.path())?;

        let mut serial: Option<File> = None;
        let mut raw = Vec::new();
        let mut seen: Vec<(String, Option<Duration>)> = self.markers.iter().map(|m| (m.clone(), None)).collect();
        let mut search_from = 0;
        let deadline = started + self.timeout;
        let exit = loop {
            let exited = child.0.try_wait().map_err(|e| HarnessError(format!("cannot wait for the emulator: {e}")))?;
            if serial.is_none() {
                serial = File::open(dir.path().join(SERIAL_FILE)).ok();
            }
            if let Some(file) = serial.as_mut() {
                let _ = file.read_to_end(&mut raw);
            }
            // Markers in order: each is looked for after the previous one.
            while let Some(next) = seen.iter().position(|(_, t)| t.is_none()) {
                let marker = seen[next].0.as_bytes();
                match raw[search_from..].windows(marker.len()).position(|w| w == marker) {
                    Some(at) => {
                        search_from += at + marker.len();
                        seen[next].1 = Some(started.elapsed());
                    }
                    None => break,
                }
            }
            if let Some(status) = exited {
                break Some(Exit::from(status));
            }
            if seen.iter().all(|(_, t)| t.is_some()) || Instant::now() >= deadline {
                child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let elapsed = started.elapsed();
        let mut report = DirectReport {
            name: self.name,
            serial: String::from_utf8_lossy(&raw).into_owned(),
            markers: seen,
            exit,
            elapsed,
            timeout: self.timeout,
            command_line,
            log_dir: None,
        };
        report.keep_logs(dir.path());
        Ok(report)
    }
}

impl DirectReport {
    /// Whether every marker appeared.
    pub fn reached(&self) -> bool {
        self.markers.iter().all(|(_, t)| t.is_some())
    }

    /// The time from the emulator's start to `marker`.
    pub fn time_to(&self, marker: &str) -> Option<Duration> {
        self.markers.iter().find(|(m, _)| m == marker).and_then(|(_, t)| *t)
    }

    /// Panics with a diagnostic unless every marker appeared.
    #[track_caller]
    pub fn assert_reached(&self) {
        if self.reached() {
            return;
        }
        let missing: Vec<&str> = self.markers.iter().filter(|(_, t)| t.is_none()).map(|(m, _)| m.as_str()).collect();
        let ending = match self.exit {
            Some(exit) => format!("the emulator ended ({exit}) after {:.1} s", self.elapsed.as_secs_f64()),
            None => format!("timed out after {} s", self.timeout.as_secs()),
        };
        let tail: Vec<&str> = self.serial.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "{}: {ending}; never saw {missing:?}\ncommand: {}\nlogs: {}\nlast console lines:\n{}",
            self.name,
            self.command_line,
            self.log_dir.as_deref().map(|d| d.display().to_string()).unwrap_or_else(|| "(not kept)".into()),
            tail.join("\n")
        );
    }

    fn keep_logs(&mut self, run_dir: &Path) {
        let _ = std::fs::write(run_dir.join("command.txt"), &self.command_line);
        let dest = kernel::target_dir().join("hil-logs").join(sanitize(&self.name));
        let _ = std::fs::remove_dir_all(&dest);
        let keep = !self.reached() || std::env::var_os(KEEP_LOGS_ENV).is_some();
        if !keep || std::fs::create_dir_all(&dest).is_err() {
            return;
        }
        for name in
            [SERIAL_FILE, STDOUT_FILE, STDERR_FILE, BOCHS_CONFIG_FILE, BOCHS_MSRS_FILE, BOCHS_LOG_FILE, "command.txt"]
        {
            let _ = std::fs::copy(run_dir.join(name), dest.join(name));
        }
        self.log_dir = Some(dest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::MEMORY_MIB;

    #[test]
    fn qemu_boots_the_kernel_directly_on_the_harness_machine() {
        let boot = DirectBoot::new("/k/vmlinuz", "/k/initramfs.cpio").cpus(2).append("quiet");
        let args = boot.qemu_args();
        let after = |flag: &str| args[args.iter().position(|a| a == flag).expect(flag) + 1].as_str();
        assert_eq!(after("-M"), "q35");
        assert_eq!(after("-accel"), "tcg");
        assert_eq!(after("-smp"), "2");
        assert_eq!(after("-m"), MEMORY_MIB.to_string());
        assert_eq!(after("-serial"), "file:serial.bin");
        assert_eq!(after("-kernel"), "/k/vmlinuz");
        assert_eq!(after("-initrd"), "/k/initramfs.cpio");
        assert_eq!(after("-append"), "console=ttyS0 panic=-1 quiet");
        assert!(args.iter().any(|a| a == "-no-reboot"));
        assert!(!args.iter().any(|a| a == "-cdrom" || a == "-bios"));
    }

    #[test]
    fn bochs_direct_boot_defines_misc_enable_as_a_partition_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        Emulator::Bochs.command(2, dir.path(), Medium::Cdrom).unwrap();
        with_bochs_msrs(dir.path()).unwrap();
        let config = std::fs::read_to_string(dir.path().join(BOCHS_CONFIG_FILE)).unwrap();
        let cpu = config.lines().find(|l| l.starts_with("cpu: ")).unwrap();
        assert!(cpu.contains("ignore_bad_msrs=0") && cpu.ends_with(", msrs=\"msrs.def\""), "{cpu}");
        let msrs = std::fs::read_to_string(dir.path().join(BOCHS_MSRS_FILE)).unwrap();
        assert!(msrs.contains("\n0x000001a0 0 00000000 00001801 00000000 00000000 00000000 00000000\n"), "{msrs}");
    }

    #[test]
    fn a_missing_kernel_is_a_harness_error() {
        let e = DirectBoot::new("/surely/not/vmlinuz", "/surely/not/initrd").run().unwrap_err();
        assert!(e.0.contains("/surely/not/vmlinuz"), "{e}");
    }
}
