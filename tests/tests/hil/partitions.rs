//! Partitions run, each on its own cores, each with its own console: under VT-x (Bochs
//! `corei7_skylake_x`) and, for the scenarios defined with `every_backend!`, under SVM
//! (QEMU `-cpu max` and `EPYC`) too.

use bulkhead_tests::{Emulator, Run, every_backend};

/// The demo on each backend: "control" on core 1 and "telemetry" on core 0 both run their
/// payloads; control runs a periodic x2APIC timer loop whose interrupts reach it without VM
/// exits; telemetry sees the hypervisor bit and no VMX in CPUID, waits until control has
/// published 200 ticks in their shared memory, and reports PASS.
///
/// VT-x (Bochs) has an x2APIC, passed through: control's only exits are console output.
/// QEMU 7.2 TCG has none, so under SVM the hypervisor performs the partition's x2APIC MSRs
/// on the xAPIC: each tick's EOI is an MSR exit there (at least 100 before the first tick
/// report), and nothing else changes.
fn demo_runs(emulator: Emulator) {
    let (backend, ticks) = match emulator {
        Emulator::Bochs => ("backend: vmx (Intel VT-x, EPT)", "[cpu1 INFO ] [control] timer tick 200"),
        // Reported every 100 ticks; the count printed depends on the emulator's timing.
        _ => (
            "backend: svm (AMD-V, NPT) (partitions' x2APIC emulated on the xAPIC)",
            "[cpu1 INFO ] [control] timer tick ",
        ),
    };
    let report = Run::new(emulator)
        .cpus(2)
        .expect(backend)
        .expect("partition control: starting on cpu 1 at 0x100000")
        .expect("partition telemetry: starting on cpu 0 at 0x100000")
        .expect("[cpu1 INFO ] [control] started; periodic x2APIC timer, vector 0x40")
        .expect(ticks)
        .expect("[cpu0 INFO ] [telemetry] started; cpuid hypervisor=true vmx=false")
        .expect("[cpu0 INFO ] [telemetry] status 3 ok")
        .expect("[cpu0 INFO ] [telemetry] control alive: ")
        .expect("partition telemetry: reports PASS")
        .expect("partition control: exits: total")
        .forbid(": fault #")
        .execute();
    report.assert_passed();
    let control = report.lines.iter().map(|l| l.to_string()).find(|l| l.contains("partition control: exits:")).unwrap();
    assert!(control.ends_with("cpuid 0, other 0"), "unexpected exits: {control}");
    let msr: u32 = control.split("msr ").nth(1).and_then(|rest| rest.split(',').next()).unwrap().parse().unwrap();
    if emulator.has_x2apic() {
        assert_eq!(msr, 0, "timer or EOI caused exits: {control}");
    } else {
        assert!(msr >= 100, "the emulated x2APIC's EOIs should exit: {control}");
    }
}

#[test]
fn vmx_two_partitions_run_and_print() {
    demo_runs(Emulator::Bochs);
}

#[test]
fn svm_two_partitions_run_and_print() {
    demo_runs(Emulator::QemuBios);
}

#[test]
fn svm_bochs_ryzen_two_partitions_run_and_print() {
    demo_runs(Emulator::BochsRyzen);
}

every_backend! {
    /// An SMP partition: its first vCPU starts, the second waits in the hypervisor until the
    /// partition sends it INIT and a start-up IPI (through its x2APIC ICR), then runs the
    /// partition's real-mode trampoline into 64-bit code and counts. CPUID's core-level count
    /// is the partition's two cores, and OSXSAVE reflects the guest's CR4 (not the
    /// hypervisor's, which has it set).
    fn smp_partition_brings_up_second_vcpu(emulator) {
        Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-smp.toml")
            .expect("partition smp: vcpu on cpu 1 waits for INIT/SIPI from the partition")
            .expect("partition smp: starting on cpu 0 at 0x100000")
            .expect("partition smp: vcpu on cpu 1 starts at 0x10000 (start-up IPI)")
            .expect("[cpu1 INFO ] [smp] smp: second vcpu running")
            .expect("[smp] smp: second vcpu counts")
            .expect("[smp] smp: cpuid: level type 2 counts 2, osxsave=false")
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
/// passed through (VT-x) none of them exits; with it emulated (SVM, Bochs `ryzen`) each
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
    if emulator.has_x2apic() {
        assert_eq!(msr, 0, "the timer caused exits: {exits}");
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
