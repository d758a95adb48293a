//! Debian's kernel in a partition on Bochs VT-x (`corei7_skylake_x`, x2APIC): Linux on two
//! vCPUs boots to userspace beside the real-time partition `control` on its own core, whose
//! 1 kHz x2APIC timer keeps ticking throughout without a single exit. One test only: Linux
//! needs about 6.6 G instruction slots to reach `/init` in Bochs (minutes of wall time).

use std::time::Duration;

use bulkhead_tests::bochs_linux::{self, TICKER_EVERY, TSC_LINE};
use bulkhead_tests::initramfs::INIT_MARKER;
use bulkhead_tests::kernel::target_dir;
use bulkhead_tests::{Emulator, Run, linux_assets, tsc_init};

use crate::linux::{CMDLINE, DMESG_LINES, STDOUT_LINE, init_script};

/// Bochs's TSC rate with `clock: sync=none` (`ips`): the ticker's 1000 ticks are this many
/// TSC ticks.
const TSC_HZ: u64 = bulkhead_tests::emulator::BOCHS_IPS;

/// The control partition's exits that are not its console's and not its timer's: the
/// switch to x2APIC mode (RDMSR and WRMSR of IA32_APIC_BASE, and one RDMSR more when the
/// timer starts), as in `partitions::vmx_boot_cpu_partition_gets_only_its_own_timer`.
const CONTROL_SETUP_EXITS: u64 = 3;

/// At most this many of Linux's exits on its way to /init are not port I/O (measured:
/// about 4 400 on Bochs; one per clock read would be hundreds of thousands).
const LINUX_NON_IO_EXITS_MAX: u64 = 20_000;

#[test]
fn linux_bochs_vmx_boots_debian_kernel_beside_a_ticking_partition() {
    let assets = linux_assets::shared().unwrap_or_else(|e| panic!("{e}"));
    let release = &assets.selection.release;
    let dir = target_dir().join("bulkhead-configs/linux-bochs");
    std::fs::create_dir_all(&dir).unwrap();
    // The Linux test's /init script, which also logs the TSC /init began at.
    let script = init_script();
    let with_tsc = script.replacen("fail=0\n", &format!("fail=0\n{}", bochs_linux::tsc_log_line()), 1);
    assert_ne!(script, with_tsc, "the init script changed shape");
    let initrd = dir.join("initramfs.cpio");
    bochs_linux::initramfs(assets.initramfs().unwrap_or_else(|e| panic!("{e}")), &with_tsc).write(&initrd).unwrap();
    let config = bochs_linux::system_file(&dir, "linux-bochs", &assets.vmlinuz(), &initrd, CMDLINE);
    let report = Run::new(Emulator::Bochs)
        .cpus(3)
        .config(&config)
        .expect("backend: vmx (Intel VT-x, EPT)")
        .expect("partition control: exits: total")
        .forbid(": fault #")
        // About 6.6 G instruction slots to /init (docs/testing.md gives the wall time).
        .timeout(Duration::from_secs(900))
        .execute();
    eprintln!("{}: verdict after {:.1} s", report.name, report.elapsed.as_secs_f64());
    let diagnostic = report.diagnostic();
    let console = report.partition_console("linux");
    for text in [
        format!("Linux version {release}"),
        "smpboot: Allowing 2 CPUs, 0 hotplug CPUs".into(),
        format!("{INIT_MARKER} (kernel {release}, 2 cpus)"),
        STDOUT_LINE.into(),
    ] {
        assert!(
            console.iter().any(|l| l.contains(&text)),
            "not on the linux partition's console: {text}\n{diagnostic}"
        );
    }
    for needle in DMESG_LINES {
        assert!(
            console.iter().any(|l| l.contains("bulkhead-test: dmesg: [") && l.ends_with(needle)),
            "/init did not find {needle:?} in the kernel log\n{diagnostic}"
        );
    }
    let present: Vec<&String> = console.iter().filter(|l| l.contains("bulkhead-test: dmesg has: ")).collect();
    assert!(present.is_empty(), "in the kernel log: {present:?}\n{diagnostic}");
    report.assert_passed();

    // When Linux started and when it reached /init, in TSC ticks (Bochs: instruction slots).
    let messages: Vec<&str> = report.lines.iter().map(|l| l.message()).collect();
    let linux_start = bochs_linux::start_tsc(messages.iter().copied(), "linux")
        .unwrap_or_else(|| panic!("no start line with a TSC for linux\n{diagnostic}"));
    let init_tsc = console
        .iter()
        .find_map(|l| tsc_init::parse_tsc(l.split_once(TSC_LINE)?.1))
        .unwrap_or_else(|| panic!("/init logged no TSC\n{diagnostic}"));
    assert!(init_tsc > linux_start, "/init's TSC {init_tsc} is before Linux's start {linux_start}");
    eprintln!(
        "linux: started at tsc {linux_start}, /init at tsc {init_tsc}: {} instruction slots",
        init_tsc - linux_start
    );

    // The ticker reported every 1000 ticks from before Linux's start until after Linux
    // reached /init, each 1000 ticks in about one emulated second (1 kHz): no report
    // missing, no stall.
    let reports = bochs_linux::ticker_reports(&report.partition_console("control"));
    assert!(reports.len() >= 2, "the ticker reported {} times:\n{diagnostic}", reports.len());
    for (i, &(ticks, _)) in reports.iter().enumerate() {
        assert_eq!(ticks, TICKER_EVERY * (i as u64 + 1), "ticker reports missing or late: {reports:?}");
    }
    for pair in reports.windows(2) {
        let interval = pair[1].1 - pair[0].1;
        assert!(
            (TSC_HZ * 9 / 10..=TSC_HZ * 11 / 10).contains(&interval),
            "1000 ticks took {interval} TSC ticks (1 kHz at {TSC_HZ} Hz is {TSC_HZ}): {reports:?}"
        );
    }
    let (first, last) = (reports[0].1, reports[reports.len() - 1].1);
    assert!(first <= linux_start + TSC_HZ * 2, "the ticker's first report at {first}, Linux started at {linux_start}");
    assert!(last >= init_tsc, "the ticker's last report at {last}, before Linux reached /init at {init_tsc}");

    // The clock Linux uses reads without exits: the reference TSC page, and the TSC under it,
    // are read by the hardware. Linux reads its clock hundreds of thousands of times on the
    // way to /init; its exits other than port I/O (the console's bytes, the absent CMOS
    // RTC's polling) are a few thousand (set-up MSRs, CPUID, hypercalls). A generous bound.
    let (_, msr, cpuid, other) = bochs_linux::exit_counts(messages.iter().copied(), "linux")
        .unwrap_or_else(|| panic!("no exit counts for linux\n{diagnostic}"));
    eprintln!("linux: exits: msr {msr}, cpuid {cpuid}, other {other}");
    assert!(
        msr + cpuid + other <= LINUX_NON_IO_EXITS_MAX,
        "Linux's clock reads exit? msr {msr}, cpuid {cpuid}, other {other}"
    );

    // 0 exits per timer interrupt: all the control partition's exits but its console's are
    // the set-up's.
    let (io, msr, cpuid, other) = bochs_linux::exit_counts(messages.iter().copied(), "control")
        .unwrap_or_else(|| panic!("no exit counts for control\n{diagnostic}"));
    let ticks = reports[reports.len() - 1].0;
    eprintln!("control: {ticks} ticks, exits: io {io}, msr {msr}, cpuid {cpuid}, other {other}");
    assert!(
        msr + cpuid + other <= CONTROL_SETUP_EXITS,
        "the timer caused exits: msr {msr}, cpuid {cpuid}, other {other} in {ticks} ticks"
    );
}
