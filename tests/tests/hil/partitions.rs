//! Partitions run, each on its own cores, each with its own console: under VT-x (Bochs
//! `corei7_skylake_x`) and, for the scenarios defined with `every_backend!`, under SVM
//! (QEMU `-cpu max` and `EPYC`) too.

use bulkhead_tests::{Emulator, Run, every_backend};

/// The demo on each backend (`board/systems/demo.toml`, guests `demo-control` and
/// `demo-telemetry`): "control" on core 1 runs a periodic x2APIC timer loop, measures its
/// jitter and posts a report to "telemetry" on core 0 every 100 ticks (HvCallPostMessage,
/// connection 1); telemetry prints each and acknowledges it (HvCallSignalEvent, connection
/// 2, with the report's number in their shared page), and control prints the
/// acknowledgements. Telemetry ends the run once a report says control has seen the
/// acknowledgement of report 5.
///
/// Checked from the consoles: telemetry printed reports 1, 2, 3, ... (at least 6) with
/// rising tick counts and the jitter in microseconds (the TSC frequency from the reference
/// TSC page); control printed rising acknowledgements, none for a report never sent, up to
/// at least report 5. Checked from the hypervisor's exit counts: the hypercalls were made,
/// not just the lines printed: each report telemetry printed is one HvCallPostMessage exit
/// of control's and each acknowledgement one HvCallSignalEvent exit of telemetry's (both
/// counted as `other`). What the figures are (ticks at each report, jitter) depends on
/// the emulator's timing and is not checked.
///
/// VT-x (Bochs) has an x2APIC, passed through: control's timer interrupts and EOIs cause no
/// exits, its MSR exits are only the set-up of the hypercall page, SynIC and reference TSC
/// page. QEMU 7.2 TCG and Bochs `ryzen` have none, so under SVM the hypervisor performs the
/// partition's x2APIC MSRs on the xAPIC: each tick's EOI is an MSR exit there.
fn demo_runs(emulator: Emulator) {
    let backend = match emulator {
        Emulator::Bochs => "backend: vmx (Intel VT-x, EPT)",
        _ => "backend: svm (AMD-V, NPT) (partitions' x2APIC emulated on the xAPIC)",
    };
    let report = Run::new(emulator)
        .cpus(2)
        .expect(backend)
        .expect("partition control: starting on cpu 1 at 0x100000")
        .expect("partition telemetry: starting on cpu 0 at 0x100000")
        .expect("[cpu1 INFO ] [control] started; periodic x2APIC timer, vector 0x40; TSC ")
        .expect("[cpu0 INFO ] [telemetry] started; cpuid hypervisor=true vmx=false; waiting for control's reports on SINT 2")
        .expect("[cpu0 INFO ] [telemetry] control has seen acknowledgements up to report ")
        .expect("partition telemetry: reports PASS")
        .expect("partition control: exits: total")
        .expect("partition telemetry: exits: total")
        .forbid(": fault #")
        .execute();
    report.assert_passed();
    let console = |partition: &str| report.partition_console(partition);
    let diagnostic = report.diagnostic();
    assert!(
        console("control").iter().any(|l| l.contains("kHz (reference TSC page)")),
        "control did not take the TSC frequency from the reference TSC page:\n{diagnostic}"
    );

    // "report N from control: tick T, worst jitter J us"
    let reports: Vec<(u32, u64, String)> = console("telemetry")
        .iter()
        .filter_map(|l| {
            let (sequence, rest) = l.strip_prefix("report ")?.split_once(" from control: tick ")?;
            let (tick, jitter) = rest.split_once(", worst jitter ")?;
            Some((sequence.parse().ok()?, tick.parse().ok()?, jitter.to_string()))
        })
        .collect();
    assert!(reports.len() >= 6, "telemetry printed {} reports, expected at least 6:\n{diagnostic}", reports.len());
    for (i, (sequence, tick, jitter)) in reports.iter().enumerate() {
        assert_eq!(*sequence as usize, i + 1, "reports out of order:\n{diagnostic}");
        assert!(i == 0 || *tick > reports[i - 1].1, "tick counts not rising:\n{diagnostic}");
        let microseconds = jitter.split(';').next().and_then(|j| j.strip_suffix(" us"));
        assert!(
            microseconds.is_some_and(|us| us.parse::<f64>().is_ok()),
            "jitter `{jitter}` not in microseconds:\n{diagnostic}"
        );
    }
    let sent = reports.len() as u32;

    // "telemetry acknowledged report N"
    let acknowledged: Vec<u32> = console("control")
        .iter()
        .filter_map(|l| l.strip_prefix("telemetry acknowledged report ")?.parse().ok())
        .collect();
    assert!(
        acknowledged.windows(2).all(|w| w[0] < w[1]) && acknowledged.iter().all(|&n| (1..=sent).contains(&n)),
        "acknowledgements {acknowledged:?} not rising within the {sent} reports:\n{diagnostic}"
    );
    assert!(
        acknowledged.last().is_some_and(|&n| n >= 5),
        "control printed acknowledgements {acknowledged:?}, expected up to at least report 5:\n{diagnostic}"
    );

    // "partition NAME: exits: total A, io B, msr C, cpuid D, other E"
    let exits = |partition: &str| -> (u64, u64) {
        let text = format!("partition {partition}: exits: ");
        let line = report.lines.iter().map(|l| l.message()).find(|l| l.starts_with(&text)).unwrap();
        let count = |kind: &str| -> u64 {
            line.split(&format!("{kind} "))
                .nth(1)
                .and_then(|r| r.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap()
        };
        (count("msr"), count("other"))
    };
    let (control_msr, control_other) = exits("control");
    let (_, telemetry_other) = exits("telemetry");
    assert!(
        control_other >= u64::from(sent),
        "control has {control_other} hypercall (other) exits for {sent} reports posted:\n{diagnostic}"
    );
    assert!(
        telemetry_other >= u64::from(sent),
        "telemetry has {telemetry_other} hypercall (other) exits for {sent} reports acknowledged:\n{diagnostic}"
    );
    let last_tick = reports.last().map_or(0, |r| r.1);
    if emulator.has_x2apic() {
        // 8 today: GUEST_OS_ID, HYPERCALL written and read back, SINT3, SIMP, SIEFP,
        // SCONTROL, REFERENCE_TSC. An exit per tick would be hundreds.
        assert!(control_msr <= 16, "timer or EOI caused exits: {control_msr} MSR exits:\n{diagnostic}");
    } else {
        // The timer handler EOIs every tick it counts.
        assert!(
            control_msr >= last_tick,
            "the emulated x2APIC's EOIs should exit: {control_msr} MSR exits for {last_tick} ticks:\n{diagnostic}"
        );
    }
}

#[test]
fn vmx_demo_runs() {
    demo_runs(Emulator::Bochs);
}

#[test]
fn svm_demo_runs() {
    demo_runs(Emulator::QemuBios);
}

#[test]
fn svm_bochs_ryzen_demo_runs() {
    demo_runs(Emulator::BochsRyzen);
}

/// The demo when telemetry falls behind: with `telemetry:stall_ms=4000` it takes no
/// report for 4 s of its reference time after report 2, so control's reports fill
/// telemetry's message slot and the connection's queue (16 deep) and the hypervisor
/// refuses the next ones with INSUFFICIENT_BUFFERS. That is 40 reports in Bochs (one every
/// 100 ticks of 50 000 APIC timer counts, 100 ms of its instruction-counting clock) and
/// more in QEMU, where a tick is 50 us of host time; but on a busy host control's vCPU
/// thread takes far fewer ticks (those that fall due while it waits for a CPU merge: about
/// 2 400 in one second seen), hence the margin. Control counts each refusal and carries
/// on: the refused reports are not retried, so the accepted ones stay numbered 1, 2, 3,
/// ...; the count reaches telemetry in the next accepted report (at most what control
/// printed, counting the lines the hypervisor's console rate limit dropped, which it
/// reports at the end); and the demo still ends
/// with PASS.
fn demo_survives_a_full_queue(emulator: Emulator) {
    let report = Run::new(emulator)
        .cpus(2)
        .switch("telemetry:stall_ms=4000")
        .expect("[telemetry] stalling: taking no reports for 4000 ms")
        .expect("[telemetry] control has seen acknowledgements up to report ")
        .expect("partition telemetry: reports PASS")
        .forbid(": fault #")
        .execute();
    report.assert_passed();
    let diagnostic = report.diagnostic();
    let console = |partition: &str| report.partition_console(partition);
    // "report at tick T refused: telemetry's queue is full (K so far)"
    let refusals = console("control")
        .iter()
        .filter(|l| l.starts_with("report at tick ") && l.contains(" refused: telemetry's queue is full ("))
        .count();
    assert!(refusals > 0, "control met no full queue:\n{diagnostic}");
    // "report N from control: tick T, worst jitter J us[; K refused so far (queue full)]"
    let reports: Vec<(u32, usize)> = console("telemetry")
        .iter()
        .filter_map(|l| {
            let (sequence, rest) = l.strip_prefix("report ")?.split_once(" from control: ")?;
            let refused = rest.split("; ").nth(1).and_then(|r| r.strip_suffix(" refused so far (queue full)"));
            Some((sequence.parse().ok()?, refused.map_or(Some(0), |n| n.parse().ok())?))
        })
        .collect();
    assert!(
        reports.iter().enumerate().all(|(i, (sequence, _))| *sequence as usize == i + 1),
        "accepted reports not numbered 1, 2, 3, ...:\n{diagnostic}"
    );
    let reported = reports.iter().map(|(_, refused)| *refused).max().unwrap_or(0);
    // Control prints faster than the hypervisor's console rate limit lets through (under
    // QEMU especially): the lines it dropped count as printed refusals too (at most).
    let dropped: usize = report
        .lines
        .iter()
        .filter(|l| l.partition_console().is_none())
        .filter_map(|l| {
            l.message()
                .strip_prefix("partition control: console: ")?
                .strip_suffix(" lines dropped (rate limit) in total")?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert!(
        (1..=refusals + dropped).contains(&reported),
        "telemetry learnt of {reported} refusals, control printed {refusals} (and had {dropped} lines dropped):\n{diagnostic}"
    );
}

#[test]
fn vmx_demo_survives_a_full_queue() {
    demo_survives_a_full_queue(Emulator::Bochs);
}

#[test]
fn svm_demo_survives_a_full_queue() {
    demo_survives_a_full_queue(Emulator::QemuBios);
}

every_backend! {
    /// An SMP partition: its first vCPU starts, the second waits in the hypervisor until the
    /// partition sends it INIT and a start-up IPI (through its x2APIC ICR), then runs the
    /// partition's real-mode trampoline into 64-bit code and counts. CPUID's core-level count
    /// is the partition's two cores, leaf 0xB EDX is each vCPU's own x2APIC ID (0 and 1;
    /// Bochs `ryzen`'s hardware answers 0 on both), and OSXSAVE reflects the guest's CR4 (not the
    /// hypervisor's, which has it set): clear, then set once the guest sets CR4.OSXSAVE.
    fn smp_partition_brings_up_second_vcpu(emulator) {
        Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-smp.toml")
            .expect("partition smp: vcpu on cpu 1 waits for INIT/SIPI from the partition")
            .expect("partition smp: starting on cpu 0 at 0x100000")
            .expect("partition smp: vcpu on cpu 1 starts at 0x10000 (start-up IPI)")
            .expect("[cpu1 INFO ] [smp] smp: second vcpu running, cpuid x2apic id 1")
            .expect("[smp] smp: second vcpu counts")
            .expect("[smp] smp: cpuid: level type 2 counts 2, x2apic id 0, osxsave=false")
            .expect("[smp] smp: cpuid after CR4.OSXSAVE: xsetbv ok=true, osxsave=true")
            .expect("partition smp: reports PASS")
            .forbid(": fault #")
            .execute()
            .assert_passed();
    }
}

/// A partition on the boot CPU with interrupts enabled takes its own x2APIC timer and
/// nothing else: the BIOS leaves the BSP's LINT0 in ExtINT mode, and before the 8259 was
/// masked and LINT0 quiesced, the PIT's legacy interrupt reached the guest as vector 8.
/// 10M instructions at 1 kHz (50 MHz emulated clock) are about 200 ticks. With the x2APIC
/// passed through (VT-x) none of them exits (only the switch to x2APIC mode does); with it emulated (SVM, Bochs `ryzen`) each
/// EOI is one MSR exit, plus the timer's few set-up writes, and nothing else exits. Bochs
/// only: the tick count relies on its instruction-counting clock.
fn boot_cpu_partition_gets_only_its_own_timer(emulator: Emulator) {
    let report = Run::new(emulator)
        .cpus(2)
        .config("tests/configs/bochs-bench.toml")
        .switch("bench:case=timer")
        .expect("[cpu0 INFO ] [bench] bench: timer_ticks=")
        .expect("partition bench: reports PASS")
        .forbid(": fault #")
        .execute();
    report.assert_passed();
    let text: Vec<String> = report.lines.iter().map(|l| l.to_string()).collect();
    let ticks: u64 =
        text.iter().find_map(|l| l.split_once("bench: timer_ticks=").and_then(|(_, v)| v.trim().parse().ok())).unwrap();
    assert!((190..=210).contains(&ticks), "expected about 200 timer ticks, got {ticks}");
    let exits = text.iter().find(|l| l.contains("partition bench: exits:")).unwrap();
    assert!(exits.ends_with("cpuid 0, other 0"), "the timer caused exits: {exits}");
    let msr: u64 = exits.split("msr ").nth(1).and_then(|rest| rest.split(',').next()).unwrap().parse().unwrap();
    // The guest's switch to x2APIC mode (partitions start in xAPIC mode) is three MSR exits
    // of set-up: RDMSR and WRMSR of IA32_APIC_BASE, and one RDMSR more when the timer starts.
    const MODE_SWITCH: u64 = 3;
    if emulator.has_x2apic() {
        assert!(msr <= MODE_SWITCH, "the timer caused exits: {exits}");
    } else {
        assert!((ticks..=ticks + 20).contains(&msr), "expected one EOI exit per tick ({ticks}): {exits}");
    }
}

#[test]
fn vmx_boot_cpu_partition_gets_only_its_own_timer() {
    boot_cpu_partition_gets_only_its_own_timer(Emulator::Bochs);
}

#[test]
fn svm_bochs_ryzen_boot_cpu_partition_gets_only_its_own_timer() {
    boot_cpu_partition_gets_only_its_own_timer(Emulator::BochsRyzen);
}

every_backend! {
    /// A 32-bit ELF with a multiboot1 header starts in 32-bit protected mode with EAX =
    /// 0x2BADB002 and EBX pointing at an information structure that has a memory map.
    fn multiboot1_payload_starts_in_protected_mode(emulator) {
        Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-mb1.toml")
            .expect("partition mb1: starting on cpu 0 at 0x10000c")
            .expect("[cpu0 INFO ] [mb1] multiboot1: protected mode, magic ok, memory map present")
            .expect("partition mb1: reports PASS")
            .forbid(": fault #")
            .execute()
            .assert_passed();
    }
}

every_backend! {
    /// Fault containment across cores: the "smp" partition's second vCPU (cpu 2) triple-faults
    /// while its first (cpu 1) computes without ever leaving its guest. The hypervisor must
    /// take cpu 1 out of its guest (an NMI) and park it before the restart zeroes the memory;
    /// after the restart both vCPUs run again, the second fault uses up `max_restarts = 1` and
    /// halts the partition, and the witness on cpu 0 runs on untouched to its PASS.
    fn fault_on_one_vcpu_stops_the_whole_partition(emulator) {
        // Long enough for both runs of "smp" (QEMU runs the witness far faster).
        let cycles: u64 = if emulator.is_qemu() { 400_000_000 } else { 12_000_000 };
        let report = Run::new(emulator)
            .cpus(3)
            .scenario("tests/configs/bochs-smp-fault.toml")
            .switch(format!("witness:cycles={cycles}"))
            .expect("[cpu1 INFO ] [smp] smp: first vcpu computes until the partition is stopped")
            .expect("[cpu2 INFO ] [smp] smp: second vcpu triple-faulting")
            .expect("partition smp: fault #1: triple fault on cpu 2 at guest rip")
            .expect("partition smp: vcpu on cpu 1 stopped by NMI at guest rip")
            .expect("partition smp: all 1 other vcpus stopped")
            .expect("partition smp: restart 1 of 1 (memory zeroed, payload reloaded)")
            .expect("partition smp: fault #2: triple fault on cpu 2 at guest rip")
            .expect("partition smp: halted (restart limit reached); other partitions keep running")
            .expect(format!("[witness] witness: alive, cycle {cycles}, canary intact"))
            .expect("partition witness: reports PASS")
            .forbid("fault #3")
            .forbid("while the partition is already stopping")
            .forbid("did not stop within")
            .allow_errors()
            .execute();
        report.assert_passed();
        let text: Vec<String> = report.lines.iter().map(|l| l.to_string()).collect();
        let position = |needle: &str| text.iter().position(|l| l.contains(needle));
        let count = |needle: &str| text.iter().filter(|l| l.contains(needle)).count();
        // Each run: the first vCPU was computing in its guest and left it only by the NMI,
        // after the fault and before the policy.
        assert_eq!(count("smp: first vcpu computes until the partition is stopped"), 2, "{}", report.diagnostic());
        assert_eq!(count("partition smp: vcpu on cpu 1 stopped by NMI"), 2, "{}", report.diagnostic());
        assert_eq!(count("[smp] smp: second vcpu running"), 2, "{}", report.diagnostic());
        let fault = position("partition smp: fault #1").unwrap();
        let parked = position("partition smp: vcpu on cpu 1 stopped by NMI").unwrap();
        let restart = position("partition smp: restart 1 of 1").unwrap();
        let reload = text.iter().rposition(|l| l.contains("partition smp: starting on cpu 1")).unwrap();
        assert!(fault < parked && parked < restart && restart < reload, "wrong order:\n{}", report.diagnostic());
    }
}

every_backend! {
    /// A flat binary is copied to its configured `entry` and started there in 64-bit mode,
    /// with its command line (configured words plus `flat:` words from the hypervisor's
    /// command line) in RDI.
    fn flat_payload_starts_at_its_entry(emulator) {
        Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-flat.toml")
            .switch("flat:and-the-board")
            .expect("partition flat: starting on cpu 0 at 0x200000")
            .expect("[cpu0 INFO ] [flat] flat: 64-bit mode at its entry, command line: hello from the config and-the-board")
            .expect("partition flat: reports PASS")
            .forbid(": fault #")
            .execute()
            .assert_passed();
    }
}
