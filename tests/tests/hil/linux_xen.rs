//! Linux as a Xen guest: Debian's unmodified kernel on two vCPUs in a partition with
//! `interface = "xen"` (tests/configs/qemu-linux-xen.toml) detects Xen HVM, brings up its
//! second vCPU and reaches userspace; `bulkhead-msg xen-event-ping` binds the two event
//! connections through Linux's own `/dev/xen/evtchn` (Debian's `xen-evtchn` module) and
//! ping-pongs events with `linux-control`, which speaks Hyper-V on core 2 (docs/linux.md,
//! "Linux as a Xen guest"). On QEMU (SVM) and on Bochs VT-x, so both hardware backends run
//! Linux as a Xen guest; the shell test on QEMU only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bulkhead_tests::initramfs::{INIT_MARKER, INIT_SETUP, insmod_lines, step_function};
use bulkhead_tests::kernel::{target_dir, workspace_root};
use bulkhead_tests::{Emulator, Report, Run, linux_assets, linux_msg};

/// The system file.
const SYSTEM: &str = "tests/configs/qemu-linux-xen.toml";
/// `control`'s partition id (its place in the system file), Linux's remote domain.
const CONTROL_ID: u32 = 1;
/// The event connections: Linux → control, control → Linux.
const TO_CONTROL: u32 = 13;
const FROM_CONTROL: u32 = 23;
/// Round trips per run of the command; it runs twice (the second binds the connections
/// again after the first closed its ports).
const PINGS: u64 = 100;

/// sed scripts that turn Linux's IPI lines of /proc/interrupts (`N: CPU0 CPU1 xen-percpu
/// -ipi NAMEcpu`, one event channel per IPI and vCPU) into `NAME=COUNT` for vCPU 0 and 1.
const IPIS_OF_VCPU: [&str; 2] = [
    r"s/^ *[0-9]*: *\([0-9]*\) *[0-9]* *xen-percpu *-ipi *\([a-z]*\)0$/\2=\1/p",
    r"s/^ *[0-9]*: *[0-9]* *\([0-9]*\) *xen-percpu *-ipi *\([a-z]*\)1$/\2=\1/p",
];

/// What /init prints before each command's output lines, into the kernel log.
const PREFIX: &str = "bulkhead-test:";

/// `/init`: after the pause linux.rs explains (the console's rate limit refills after
/// Linux's boot lines), loads `xen-evtchn`, then runs each command with its output and
/// exit status into the kernel log, then the verdict on port 0xf4: pass only when the
/// module loaded and every command succeeded.
fn init_script(release: &str, modules: &[String]) -> String {
    let ping = format!("bulkhead-msg xen-event-ping {CONTROL_ID} {TO_CONTROL} {FROM_CONTROL} {PINGS}");
    let step = step_function(PREFIX);
    format!(
        "#!/bin/sh\n\
         {INIT_SETUP}\
         sleep 3\n\
         fail=0\n\
         {step}\
         {insmod}\
         step ls /dev/xen/evtchn\n\
         step {ping}\n\
         step {ping}\n\
         step sh -c 'echo ipis-vcpu0: $(sed -n \"{ipis0}\" /proc/interrupts)'\n\
         step sh -c 'echo ipis-vcpu1: $(sed -n \"{ipis1}\" /proc/interrupts)'\n\
         echo \"{INIT_MARKER} (kernel $(uname -r), $(nproc) cpus)\" > /dev/kmsg\n\
         if [ $fail = 0 ]; then verdict='\\0'; else verdict='\\1'; fi\n\
         echo -ne \"$verdict\" | dd of=/dev/port bs=1 seek=244 count=1\n\
         while true; do sleep 1; done\n",
        insmod = insmod_lines(release, modules),
        ipis0 = IPIS_OF_VCPU[0],
        ipis1 = IPIS_OF_VCPU[1],
    )
}

/// [`system_file`] on the Bochs board (`bochs-pc-3cpu.toml`: three cores, the same
/// layout as QEMU's q35 board for this system).
fn bochs_system_file(initrd: &Path) -> PathBuf {
    let path = system_file(initrd);
    let text = std::fs::read_to_string(&path).unwrap().replace("qemu-q35-3cpu.toml", "bochs-pc-3cpu.toml");
    assert!(text.contains("bochs-pc-3cpu.toml"), "{SYSTEM} names no q35 board");
    let path = initrd.with_file_name("linux-xen.bochs.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The system file with the test's initramfs and the board's absolute path, under
/// `target/bulkhead-configs/linux/`.
fn system_file(initrd: &Path) -> PathBuf {
    let source = workspace_root().join(SYSTEM);
    let text = std::fs::read_to_string(&source).unwrap();
    let board = source.parent().unwrap().join("boards/qemu-q35-3cpu.toml");
    let text = text
        .replace("initrd = \"@linux/shell-initramfs\"", &format!("initrd = {:?}", initrd.display().to_string()))
        .replace("board = \"boards/qemu-q35-3cpu.toml\"", &format!("board = {:?}", board.display().to_string()));
    assert!(text.contains(&initrd.display().to_string()), "{SYSTEM} names no @linux/shell-initramfs");
    let path = initrd.with_file_name("linux-xen.qemu.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Linux boots as a Xen HVM guest on 2 vCPUs (events through the per-vCPU upcall vector,
/// the TSC frequency from its command line) and reaches userspace; `xen-evtchn` loads;
/// two runs of 100 event round trips with the Hyper-V partition all come back, each on
/// the port bound to control's connection; the hypervisor counts 200 events each way.
#[test]
fn linux_xen_qemu_debian_kernel_pings_the_hyperv_partition_through_evtchn() {
    debian_kernel_pings_through_evtchn(Emulator::QemuBios);
}

/// The same on Bochs VT-x (`corei7_skylake_x`): the other hardware backend.
#[test]
fn linux_xen_bochs_vmx_debian_kernel_pings_the_hyperv_partition_through_evtchn() {
    debian_kernel_pings_through_evtchn(Emulator::Bochs);
}

fn debian_kernel_pings_through_evtchn(emulator: Emulator) {
    let assets = linux_assets::shared().unwrap_or_else(|e| panic!("{e}"));
    let release = &assets.selection.release;
    let modules = assets.modules(&["xen-evtchn"]).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
    let dir = target_dir().join("bulkhead-configs/linux");
    std::fs::create_dir_all(&dir).unwrap();
    let initrd = dir.join("initramfs-xen.cpio");
    let initramfs = assets.initramfs().unwrap_or_else(|e| panic!("{e}")).modules(release, &modules);
    let tool = linux_msg::build_tool().unwrap_or_else(|e| panic!("{e}"));
    initramfs
        .file(linux_msg::INITRAMFS_TOOL, std::fs::read(&tool).unwrap(), 0o755)
        .file("init", init_script(release, &names).into_bytes(), 0o755)
        .write(&initrd)
        .unwrap();
    let (config, timeout) = match emulator {
        // TCG on a shared two-core host: tens of seconds to /init.
        Emulator::QemuBios => (system_file(&initrd), 400),
        // About 2.5 min to the verdict on an idle host (Linux boots in Bochs' instruction
        // clock); generous for a loaded one.
        _ => (bochs_system_file(&initrd), 1200),
    };
    let report = Run::new(emulator)
        .cpus(3)
        .config(config)
        .timeout(Duration::from_secs(timeout))
        .forbid("control: fault")
        .forbid("linux: fault")
        .forbid("[control] panic:")
        .execute();
    eprintln!("{}: verdict after {:.1} s", report.name, report.elapsed.as_secs_f64());
    let console = report.partition_console("linux");
    for line in console.iter().filter(|l| l.contains(PREFIX)) {
        eprintln!("  {line}");
    }
    let need = |text: &str| report.console_line("linux", text);
    // Linux took the Xen interface (and no other), and brought up its second vCPU.
    need("Hypervisor detected: Xen HVM");
    need("xen:events: Xen HVM callback vector for event delivery is enabled");
    // The TSC frequency the hypervisor adds to the command line (kernel/src/xen/mod.rs).
    let cmdline = need("Kernel command line: ");
    assert!(cmdline.contains(" tsc_early_khz="), "{cmdline}");
    need(&format!("{INIT_MARKER} (kernel {release}, 2 cpus)"));
    for module in &names {
        need(&format!("bulkhead-initramfs: insmod {module}: exit 0"));
    }
    need(&format!("{PREFIX} ls /dev/xen/evtchn: exit 0"));
    // Each run bound both connections and got every answer.
    let bound = console.iter().filter(|l| {
        l.contains(&format!("{PREFIX} xen-event-ping {CONTROL_ID}: connection {TO_CONTROL} is port "))
            && l.contains(&format!(", connection {FROM_CONTROL} is port "))
    });
    assert_eq!(bound.count(), 2, "both runs bind both connections\n{}", report.diagnostic());
    let answered = format!("{PREFIX} xen-event-ping {CONTROL_ID}: {PINGS} round trips answered, ");
    let runs: Vec<&String> = console.iter().filter(|l| l.contains(&answered)).collect();
    assert_eq!(runs.len(), 2, "two runs of {PINGS} round trips\n{}", report.diagnostic());
    for line in &runs {
        eprintln!("{line}");
    }
    need(&format!("{PREFIX} bulkhead-msg xen-event-ping: exit 0"));
    // Linux's IPIs went through event channels (bind_ipi, send to the other vCPU), and
    // each vCPU took them on its own upcall vector: /proc/interrupts counts some on each.
    let mut per_vcpu = [0u64; 2];
    for (vcpu, count) in per_vcpu.iter_mut().enumerate() {
        let line = need(&format!("{PREFIX} ipis-vcpu{vcpu}: "));
        let counts = line.split_once(": ").map_or("", |(_, c)| c).split_once(": ").map_or("", |(_, c)| c);
        *count = counts.split_whitespace().filter_map(|w| w.split_once('=')?.1.parse::<u64>().ok()).sum();
        eprintln!("{line}");
    }
    eprintln!("IPIs through event channels: {per_vcpu:?} (vCPU 0, vCPU 1)");
    assert!(per_vcpu.iter().all(|&n| n > 0), "IPIs per vCPU {per_vcpu:?}\n{}", report.diagnostic());
    // The hypervisor counted every event both ways, none refused: 2 × PINGS each way.
    check_events(&report, 2 * PINGS);
    report.assert_passed();
}

/// The system file as `cargo xtask run` boots it, with the shell initramfs: its boot step
/// loads `xen-evtchn` (Linux says `/sys/hypervisor/type` is xen) and not `bulkhead_msg`;
/// the command typed at the shell ping-pongs with control.
#[test]
fn linux_xen_qemu_shell_initramfs_loads_evtchn_and_pings() {
    // The verdict only if the command succeeded.
    const PING: &str =
        "bulkhead-msg xen-event-ping 1 13 23 10 && echo -ne '\\0' | dd of=/dev/port bs=1 seek=244 count=1\n";
    // Typed at the first of the last lines before the shell: the console's rate limit may
    // drop any one of them after Linux's boot lines. Typed early, the bytes wait in the
    // tty (already open for /init) until the shell reads them.
    const SHELL_NEAR: [&str; 4] =
        ["xen-evtchn: module loaded", INIT_MARKER, "built-in shell (ash)", "Enter 'help' for a list"];
    let (keys, typed) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut sent = false;
    let report = Run::new(Emulator::QemuBios)
        .cpus(3)
        .config(SYSTEM)
        .timeout(Duration::from_secs(400))
        .input(typed)
        .on_line(move |line| {
            let text = line.to_string();
            if !sent && SHELL_NEAR.iter().any(|t| text.contains(t)) {
                sent = true;
                let _ = keys.send(PING.as_bytes().to_vec());
            }
        })
        .forbid("linux: fault")
        .forbid("control: fault")
        .execute();
    eprintln!("{}: verdict after {:.1} s", report.name, report.elapsed.as_secs_f64());
    // The command succeeded (the verdict follows it with `&&`; without /dev/xen/evtchn or
    // an answer it fails). Its own output lines may fall to the console's rate limit; the
    // hypervisor's counts do not: 10 events each way, none refused.
    check_events(&report, 10);
    let console = report.partition_console("linux");
    assert!(
        !console.iter().any(|l| l.contains("bulkhead-msg: module loaded")),
        "bulkhead_msg loaded in a Xen partition\n{}",
        report.diagnostic()
    );
    report.assert_passed();
}

/// The hypervisor's health lines at the end of the run: `linux` and `control` each sent and
/// received `events` events, none refused.
fn check_events(report: &Report, events: u64) {
    let log = report.log_text();
    for name in ["linux", "control"] {
        let health = log
            .lines()
            .find(|l| l.contains(&format!("partition {name}: health: ")))
            .unwrap_or_else(|| panic!("no health line of {name}\n{}", report.diagnostic()));
        assert!(health.ends_with(&format!("events sent {events} received {events} refused 0")), "{health}");
    }
}
