//! Debian's kernel boots in a partition: the hypervisor's Linux loader (64-bit boot
//! protocol, e820 map, ACPI tables) starts it on two vCPUs beside a small partition on its
//! own core. Linux's log reaches the hypervisor console through the partition's virtual
//! UART; its `/init` tells the run's verdict through the verdict port (`/dev/port`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bulkhead_tests::initramfs::INIT_MARKER;
use bulkhead_tests::kernel::{target_dir, workspace_root};
use bulkhead_tests::linux_assets;
use bulkhead_tests::linux_system::linux_partition_toml;
use bulkhead_tests::{Emulator, Run};

/// Linux's command line in the partition. No clock parameter: Linux takes the TSC and
/// APIC timer frequencies from the Hyper-V frequency MSRs (there is no PIT to calibrate
/// against) and keeps time with the reference TSC page.
pub(crate) const CMDLINE: &str = bulkhead_tests::linux_system::TEST_CMDLINE;

/// What `/init` writes to its standard output, the console (ttyS0): a program's output
/// through the tty layer needs Linux's 8250 driver to poll the UART (the DSDT's COM1
/// without an interrupt, IIR's THRE condition), unlike the kernel's own messages.
pub(crate) const STDOUT_LINE: &str = "bulkhead-test: /init writes to ttyS0";

/// What `/init` looks for in the kernel log (`dmesg`) before it reports: it reached
/// userspace, recognised Hyper-V, brought up both vCPUs and keeps time with the
/// hypervisor's reference TSC page.
pub(crate) const DMESG_LINES: &[&str] = &[
    "Run /init as init process",
    "Hypervisor detected: Microsoft Hyper-V",
    "smp: Brought up 1 node, 2 CPUs",
    "clocksource: Switched to clocksource hyperv_clocksource_tsc_page",
    // The 8250 driver found the UART the DSDT describes, with no IRQ, as a 16550A.
    "ttyS0 at I/O 0x3f8 (irq = 0, base_baud = 115200) is a 16550A",
];

/// What must not be in the kernel log: a PIT calibration of the TSC (the frequency comes
/// from the hypervisor).
const DMESG_ABSENT: &[&str] = &["Fast TSC calibration failed", "TSC: PIT calibration"];

/// `/init`: after a pause, each of [`DMESG_LINES`] as found in the kernel log (or an
/// empty report), every one of [`DMESG_ABSENT`] that is there, and the marker, into the
/// kernel log (`/dev/kmsg`, so they need no open console); then the verdict on the
/// verdict port 0xf4 through `/dev/port`: 0 (pass) when all the lines are there and none
/// of the absent ones. The pause lets the partition's console rate limit (10 lines a
/// second after a burst of 200, docs/platform.md) refill after Linux's 300-odd boot lines,
/// so that these lines are printed, not dropped; the kernel log itself keeps every line.
pub(crate) fn init_script() -> String {
    let mut script = String::from(
        "#!/bin/sh\n\
         export PATH=/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         sleep 3\n\
         fail=0\n",
    );
    script.push_str(&format!("echo \"{STDOUT_LINE}\"\n"));
    for needle in DMESG_LINES {
        script.push_str(&format!(
            "line=\"$(dmesg | grep -m1 '{needle}')\"\n\
             echo \"bulkhead-test: dmesg: $line\" > /dev/kmsg\n\
             [ -n \"$line\" ] || fail=1\n"
        ));
    }
    for needle in DMESG_ABSENT {
        script.push_str(&format!(
            "if dmesg | grep -q '{needle}'; then echo \"bulkhead-test: dmesg has: {needle}\" > /dev/kmsg; fail=1; fi\n"
        ));
    }
    script.push_str(&format!(
        "echo \"{INIT_MARKER} (kernel $(uname -r), $(nproc) cpus)\" > /dev/kmsg\n\
         if [ $fail = 0 ]; then verdict='\\0'; else verdict='\\1'; fi\n\
         echo -ne \"$verdict\" | dd of=/dev/port bs=1 seek=244 count=1\n\
         while true; do sleep 1; done\n"
    ));
    script
}

/// The system file: Linux on cores 0 and 1 (128 MiB in 2 MiB pages from 2 MiB on, and the
/// first 2 MiB in 4 KiB pages, for the RAM below 0xA0000 it needs for its boot data and
/// SMP trampoline), a witness partition on core 2.
fn system_file(dir: &Path, vmlinuz: &Path, initrd: &Path) -> PathBuf {
    system_file_with(dir, "linux-boot", vmlinuz, initrd, "", "")
}

/// [`system_file`] named `name`, with `policy` lines in Linux's partition table (fault
/// policy) and `extra` tables at the end (shared memory).
fn system_file_with(dir: &Path, name: &str, vmlinuz: &Path, initrd: &Path, policy: &str, extra: &str) -> PathBuf {
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
         cores = [2]\n\
         [[partition.memory]]\n\
         guest_base = 0x0\n\
         size = \"16 MiB\"\n\
         large_pages = true\n\
         [partition.payload]\n\
         kind = \"elf\"\n\
         path = \"@guests/test-witness\"\n\
         cmdline = \"cycles=4000000000\"\n\
         {extra}",
        board = board.display().to_string(),
        linux = linux_partition_toml("linux", "[0, 1]", policy, vmlinuz, initrd, CMDLINE),
    );
    let path = dir.join(format!("{name}.qemu.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn linux_qemu_boots_debian_kernel_in_a_partition_to_init() {
    let assets = linux_assets::shared().unwrap_or_else(|e| panic!("{e}"));
    let release = &assets.selection.release;
    let dir = target_dir().join("bulkhead-configs/linux");
    std::fs::create_dir_all(&dir).unwrap();
    let initrd = dir.join("initramfs.cpio");
    assets
        .initramfs()
        .unwrap_or_else(|e| panic!("{e}"))
        .file("init", init_script().into_bytes(), 0o755)
        .write(&initrd)
        .unwrap();
    let config = system_file(&dir, &assets.vmlinuz(), &initrd);
    let report = Run::new(Emulator::QemuBios)
        .cpus(3)
        .config(&config)
        // TCG on a shared two-core host: Linux takes tens of seconds to its /init.
        .timeout(Duration::from_secs(400))
        .execute();
    eprintln!("{}: verdict after {:.1} s", report.name, report.elapsed.as_secs_f64());
    // What Linux made of the virtual UART (shown with --nocapture).
    let console = report.partition_console("linux");
    for line in console.iter().filter(|l| l.contains("ttyS0") || l.contains("pnp")) {
        eprintln!("  {line}");
    }
    // Linux's log on the partition's console (its virtual UART; each line carries Linux's
    // timestamp after the `[linux]` prefix): the cached kernel, the ACPI tables the
    // hypervisor wrote at 0x60000 with both vCPUs (all early lines, within the console's
    // burst), then /init's report of the kernel log's line and its marker with 2 CPUs
    // online.
    for text in [
        format!("Linux version {release}"),
        "ACPI: RSDP 0x0000000000060000".into(),
        "smpboot: Allowing 2 CPUs, 0 hotplug CPUs".into(),
        format!("{INIT_MARKER} (kernel {release}, 2 cpus)"),
        STDOUT_LINE.into(),
    ] {
        assert!(
            console.iter().any(|l| l.contains(&text)),
            "not on the linux partition's console: {text}\n{}",
            report.diagnostic()
        );
    }
    for needle in DMESG_LINES {
        assert!(
            console.iter().any(|l| l.contains("bulkhead-test: dmesg: [") && l.ends_with(needle)),
            "/init did not find {needle:?} in the kernel log\n{}",
            report.diagnostic()
        );
    }
    let present: Vec<&String> = console.iter().filter(|l| l.contains("bulkhead-test: dmesg has: ")).collect();
    assert!(present.is_empty(), "in the kernel log: {present:?}\n{}", report.diagnostic());
    // The verdict /init gave through the verdict port ended the run.
    report.assert_passed();
}

/// Guest-physical address of the page that counts Linux's lives: a shared region only
/// Linux maps (the e820 map shows it reserved, so `/dev/mem` reaches it), which a restart
/// leaves alone where it zeroes the partition's own RAM.
const LIFE_PAGE: u64 = 0x820_0000;

/// `/init` for the panic test: in its first life (the life byte is 0) it logs the byte,
/// sets it and panics the kernel through sysrq; in the next it waits for the console's
/// rate limit to refill after the boot (see [`init_script`]), logs the byte and the
/// restart, and reports the verdict: pass.
fn panic_init_script() -> String {
    format!(
        "#!/bin/sh\n\
         export PATH=/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         life=$(devmem {LIFE_PAGE:#x} 8 2>&1)\n\
         if [ \"$life\" = 0x00 ]; then\n\
           echo \"bulkhead-test: life byte $life\" > /dev/kmsg\n\
           devmem {LIFE_PAGE:#x} 8 1\n\
           echo c > /proc/sysrq-trigger\n\
         fi\n\
         sleep 3\n\
         echo \"bulkhead-test: life byte $life\" > /dev/kmsg\n\
         echo \"bulkhead-test: restarted after the panic\" > /dev/kmsg\n\
         echo -ne '\\0' | dd of=/dev/port bs=1 seek=244 count=1\n\
         while true; do sleep 1; done\n"
    )
}

/// `echo c > /proc/sysrq-trigger`: Linux hands its panic text to the hypervisor through
/// the Hyper-V crash MSRs, the text appears in the hypervisor log as `[linux] panic: `
/// lines, the partition's restart policy boots Linux again (the loader lays it out afresh),
/// and the second life reports the verdict; the witness on its own core runs throughout.
#[test]
fn linux_qemu_panic_is_logged_and_restarts_linux() {
    let assets = linux_assets::shared().unwrap_or_else(|e| panic!("{e}"));
    let dir = target_dir().join("bulkhead-configs/linux");
    std::fs::create_dir_all(&dir).unwrap();
    let initrd = dir.join("initramfs-panic.cpio");
    assets
        .initramfs()
        .unwrap_or_else(|e| panic!("{e}"))
        .file("init", panic_init_script().into_bytes(), 0o755)
        // busybox's devmem maps the page (a read() of /dev/mem stops at the end of RAM).
        .symlink("bin/devmem", "busybox")
        .write(&initrd)
        .unwrap();
    let config = system_file_with(
        &dir,
        "linux-panic",
        &assets.vmlinuz(),
        &initrd,
        "fault_policy = \"restart\"\nmax_restarts = 1\n",
        &format!(
            "[[shared_memory]]\nname = \"life\"\nsize = \"4 KiB\"\n\
             sharers = [{{ partition = \"linux\", guest_base = {LIFE_PAGE:#x}, access = \"rw\" }}]\n"
        ),
    );
    let report = Run::new(Emulator::QemuBios)
        .cpus(3)
        .config(&config)
        .timeout(Duration::from_secs(500))
        // The panic lines and the partition's fault are logged as errors.
        .allow_errors()
        .expect("[linux] panic: crash reported")
        .expect("partition linux: fault #1: the guest reported a crash (Hyper-V crash MSRs)")
        .expect("partition linux: restart 1 of 1")
        .forbid("witness: fault")
        .execute();
    eprintln!("{}: verdict after {:.1} s", report.name, report.elapsed.as_secs_f64());
    report.assert_passed();
    // The first life found the life byte clear, then crashed.
    let console = report.partition_console("linux");
    let first_life = console.iter().position(|l| l.ends_with("] bulkhead-test: life byte 0x00"));
    let reported = console.iter().position(|l| l.starts_with("panic: crash reported"));
    assert!(
        matches!((first_life, reported), (Some(a), Some(b)) if a < b),
        "no first life before the panic report:\n{}",
        report.diagnostic()
    );
    // The text Linux handed over (the last 4 KiB of its log: the end of the crash's
    // report, and what Linux printed while it stopped its other CPUs) has the panic's own
    // line and the crashing call's frame, and the second life, after the restart, found
    // the life byte set and gave the verdict.
    for text in ["] Kernel panic - not syncing: sysrq triggered crash", "sysrq_handle_crash+"] {
        assert!(
            console.iter().any(|l| l.starts_with("panic: [") && l.contains(text)),
            "no panic line with {text:?}:\n{}",
            report.diagnostic()
        );
    }
    for text in ["] bulkhead-test: life byte 0x01", "] bulkhead-test: restarted after the panic"] {
        assert!(console.iter().any(|l| l.ends_with(text)), "not on the console: {text:?}:\n{}", report.diagnostic());
    }
}
