//! Partitions run under VT-x (Bochs `corei7_skylake_x`), each on its own core, each with
//! its own console.

use bulkhead_tests::{Emulator, Run};

/// The Bochs demo: "control" on core 1 and "telemetry" on core 0 both run their payloads
/// under EPT; control runs a periodic x2APIC timer loop without VM exits for the timer;
/// telemetry sees the hypervisor bit and no VMX in CPUID, and reports PASS.
#[test]
fn vmx_two_partitions_run_and_print() {
    let report = Run::new(Emulator::Bochs)
        .cpus(2)
        .expect("partition control: starting on cpu 1 at 0x100000")
        .expect("partition telemetry: starting on cpu 0 at 0x100000")
        .expect("[cpu1 INFO ] [control] started; periodic x2APIC timer, vector 0x40")
        .expect("[cpu1 INFO ] [control] timer tick 200")
        .expect("[cpu0 INFO ] [telemetry] started; cpuid hypervisor=true vmx=false")
        .expect("[cpu0 INFO ] [telemetry] status 3 ok")
        .expect("partition telemetry: reports PASS")
        .expect("partition control: exits: total")
        .forbid(": fault #")
        .execute();
    report.assert_passed();
    // The control loop's timer interrupts and EOIs never exit: its only exits are console
    // output (port writes).
    let control = report.lines.iter().map(|l| l.to_string()).find(|l| l.contains("partition control: exits:")).unwrap();
    assert!(control.ends_with("msr 0, cpuid 0, other 0"), "timer or EOI caused exits: {control}");
}

/// An SMP partition: its first vCPU starts, the second waits in the hypervisor until the
/// partition sends it INIT and a start-up IPI (through its x2APIC ICR), then runs the
/// partition's real-mode trampoline into 64-bit code and counts.
#[test]
fn vmx_smp_partition_brings_up_second_vcpu() {
    Run::new(Emulator::Bochs)
        .cpus(2)
        .config("tests/configs/bochs-smp.toml")
        .expect("partition smp: vcpu on cpu 1 waits for INIT/SIPI from the partition")
        .expect("partition smp: starting on cpu 0 at 0x100000")
        .expect("partition smp: vcpu on cpu 1 starts at 0x10000 (start-up IPI)")
        .expect("[cpu1 INFO ] [smp] smp: second vcpu running")
        .expect("[smp] smp: second vcpu counts")
        .expect("partition smp: reports PASS")
        .forbid(": fault #")
        .execute()
        .assert_passed();
}

/// A partition on the boot CPU with interrupts enabled takes its own x2APIC timer and
/// nothing else: the BIOS leaves the BSP's LINT0 in ExtINT mode, and before the 8259 was
/// masked and LINT0 quiesced, the PIT's legacy interrupt reached the guest as vector 8.
/// 10M instructions at 1 kHz (50 MHz emulated clock) are about 200 ticks, none exiting.
#[test]
fn vmx_boot_cpu_partition_gets_only_its_own_timer() {
    let report = Run::new(Emulator::Bochs)
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
    assert!(exits.ends_with("msr 0, cpuid 0, other 0"), "the timer caused exits: {exits}");
}

/// A 32-bit ELF with a multiboot1 header starts in 32-bit protected mode with EAX =
/// 0x2BADB002 and EBX pointing at an information structure that has a memory map.
#[test]
fn vmx_multiboot1_payload_starts_in_protected_mode() {
    Run::new(Emulator::Bochs)
        .cpus(2)
        .config("tests/configs/bochs-mb1.toml")
        .expect("partition mb1: starting on cpu 0 at 0x10000c")
        .expect("[cpu0 INFO ] [mb1] multiboot1: protected mode, magic ok, memory map present")
        .expect("partition mb1: reports PASS")
        .forbid(": fault #")
        .execute()
        .assert_passed();
}
