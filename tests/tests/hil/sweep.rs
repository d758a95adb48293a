//! The sweep, on every backend: a partition tries every MSR in the architectural, the
//! AMD/long-mode and the Hyper-V ranges with several values, every I/O port at every size,
//! the privileged instructions with reserved bits, and random hypercalls (see
//! guests/src/bin/test-sweep.rs). Each part is one test, chosen on the command line. The
//! hypervisor must stay up (no exception of its own, no partition fault), every hypercall
//! must return a defined status, and the witness partition on the other core, which gives
//! the verdict, must keep counting with its canary intact.

use bulkhead_tests::{Emulator, Report, Run, every_backend};

const SWEEP: &str = "tests/configs/sweep.toml";

/// Witness cycles: enough that the sweep is over before the witness reports, which ends
/// the run (the witness is the verdict partition). On Bochs, which interleaves its CPUs by
/// instruction count, every sweep but the ports was over before the witness's first
/// quarter (the ports before its second) with these counts. QEMU runs its vCPUs in
/// parallel threads and the witness loop far faster, relative to the sweep's exits; there
/// the sweeps were over within a quarter of these counts, the ports and the hypercalls,
/// whose exits cost QEMU most, within a quarter and a sixth.
fn witness_cycles(emulator: Emulator, range: &str) -> u64 {
    let bochs = if range == "ports" { 40_000_000 } else { 16_000_000 };
    let qemu_factor = if matches!(range, "ports" | "hypercalls") { 60 } else { 25 };
    if emulator.is_qemu() { bochs * qemu_factor } else { bochs }
}

fn sweep(emulator: Emulator, range: &str, extra: &[&str]) -> Run {
    let cycles = witness_cycles(emulator, range);
    let mut run = Run::new(emulator)
        .cpus(2)
        .scenario(SWEEP)
        .timeout(std::time::Duration::from_secs(if emulator.is_qemu() { 120 } else { 240 }))
        .switch(format!("witness:cycles={cycles}"))
        .switch(format!("sweep:range={range}"));
    for word in extra {
        run = run.switch(format!("sweep:{word}"));
    }
    // Refused accesses are logged as warnings; a partition fault would be an error.
    run.allow_errors()
        .expect(format!("[sweep] sweep: range {range}"))
        .expect(format!("[witness] witness: alive, cycle {cycles}, canary intact"))
        .expect("partition witness: reports PASS")
        .forbid("FAIL")
        .forbid("partition sweep: fault")
        .forbid("witness: fault")
        .forbid("exception #")
        .forbid("panicked")
}

fn passed(run: Run) -> Report {
    let report = run.execute();
    report.assert_passed();
    report
}

every_backend! {
    /// MSRs 0..0x2000, x2APIC included (the guest switches its APIC to x2APIC mode first),
    /// and the cases that once raised #GP in the hypervisor itself. The LVT timer (no
    /// delivery-mode field) passes through to a real x2APIC, which answers for itself
    /// (Bochs takes the bits); where the x2APIC is emulated the hypervisor refuses them.
    fn sweep_msrs_architectural(emulator) {
        let run = sweep(emulator, "msr-low", &[])
            .expect("[sweep] sweep: check: wrmsr 0x831 #GP; LINT0 masked with bit 20 #GP; ICR bit 13 #GP; LVT error NMI mode #GP; rdmsr MTRR beyond VCNT #GP")
            .expect("[sweep] sweep: msr 0x0-0x1fff: rdmsr ok=")
            .expect("[sweep] sweep: done (interrupts");
        let run = if emulator.has_x2apic() { run } else { run.expect("[sweep] sweep: check: LVT timer SMI mode #GP") };
        passed(run);
    }
}

every_backend! {
    fn sweep_msrs_extended(emulator) {
        passed(
            sweep(emulator, "msr-high", &[])
                .expect("[sweep] sweep: msr 0xc0000000-0xc0001fff: rdmsr ok=")
                .expect("[sweep] sweep: done (interrupts"),
        );
    }
}

every_backend! {
    fn sweep_msrs_hyperv(emulator) {
        passed(
            sweep(emulator, "msr-hyperv", &[])
                .expect("[sweep] sweep: msr 0x40000000-0x400001ff: rdmsr ok=")
                .expect("[sweep] sweep: done (interrupts"),
        );
    }
}

every_backend! {
    /// Every port, IN and OUT at 1, 2 and 4 bytes: reads all-ones, writes dropped.
    fn sweep_ports(emulator) {
        passed(
            sweep(emulator, "ports", &[])
                .expect("[sweep] sweep: ports 0x0-0xffff (console data 0x3f8 not written): in ok=196608 gp=0 ud=0 other=0; out ok=196605 gp=0 ud=0 other=0 skipped=3")
                .expect("[sweep] sweep: done (interrupts"),
        );
    }
}

every_backend! {
    /// CR0/CR4 toggled bit by bit, CR8 and DR7 each bit alone, XSETBV each XCR0 bit,
    /// INVD, WBINVD, MONITOR, MWAIT and RDPMC: a fault or success, never a hypervisor fault.
    /// QEMU 7.2 TCG answers a CR4 bit its CPU model lacks with #VMEXIT(INVALID) where a CPU
    /// raises #GP (which would end the guest, not the hypervisor): there only the CR4 bits
    /// CPUID reports are toggled.
    fn sweep_instructions(emulator) {
        let extra: &[&str] = if emulator.is_qemu() { &["cr4=supported"] } else { &[] };
        passed(
            sweep(emulator, "instructions", extra)
                .expect("[sweep] sweep: cr0 each bit toggled: ok=")
                .expect("[sweep] sweep: instructions: ok=")
                .expect("[sweep] sweep: done (interrupts"),
        );
    }
}

every_backend! {
    /// Bulkhead's own call codes 0x8000..=0x80FF once each in the memory form: the console
    /// write (0x8001) and the partition status (0x8003, its own) answer SUCCESS, the other
    /// 254 INVALID_HYPERCALL_CODE (0x8002 and 0x8004 exist in the fast form only). Then
    /// 100 000 random hypercalls (fixed seed, printed; `sweep:seed=N` replays one) each
    /// answered with a status the interface defines; the undefined codes of Bulkhead's range
    /// with INVALID_HYPERCALL_CODE, the defined calls in their form never with it.
    fn sweep_hypercalls(emulator) {
        passed(
            sweep(emulator, "hypercalls", &[])
                .expect("[sweep] sweep: hypercalls: bulkhead range: 0x8001 status 0x0, 0x8003 status 0x0, INVALID_HYPERCALL_CODE for 254 of the 254 others")
                .expect("[sweep] sweep: hypercalls: 100000 with seed=")
                .expect("[sweep] sweep: hypercalls: undefined 0")
                .expect("[sweep] sweep: hypercalls: wrong status for the code 0")
                .expect("[sweep] sweep: done (interrupts"),
        );
    }
}
