//! The local APIC as hardware offers it, on every backend: a two-vCPU partition starts in
//! xAPIC mode and drives its APIC through the emulated xAPIC page (timer, EOI, ID, version,
//! self IPI, INIT/SIPI with the "all excluding self" shorthand, INIT to its running second
//! vCPU) and through IA32_APIC_BASE's state machine; the witness partition beside it runs
//! to its PASS untouched. The guest (`guests/src/bin/test-xapic.rs`) prints what it saw;
//! the expectations below are the architectural answers (SDM Vol. 3A 11.4, 11.12.5).

use bulkhead_tests::{Run, every_backend};

every_backend! {
    fn xapic_mode_partition_drives_its_apic_like_hardware(emulator) {
        // Long enough for the xapic partition to finish first (QEMU runs the witness far
        // faster, relative to the rest).
        let cycles: u64 = if emulator.is_qemu() { 400_000_000 } else { 12_000_000 };
        Run::new(emulator)
            .cpus(3)
            .scenario("tests/configs/bochs-xapic.toml")
            .switch(format!("witness:cycles={cycles}"))
            // An integrated APIC's version is 0x10-0x15 (the guest checks the range).
            .expect("[xapic] xapic: apic_base 0xfee00900; id 1; x2APIC ID MSR #GP; version 0x1")
            .expect("[xapic] xapic: timer ticks taken; self IPI taken; ICR reads 0x40041")
            .expect("partition xapic: vcpu on cpu 2 starts at 0x10000 (start-up IPI)")
            .expect("[xapic] xapic: second vcpu start 1: apic_base 0xfee00800, x2APIC id 2")
            .expect("partition xapic: vcpu on cpu 2 got INIT: reset")
            .expect("[xapic] xapic: second vcpu start 2 after INIT: apic_base 0xfee00c00")
            .expect("[xapic] xapic: to disabled ok: 0xfee00100, page 0xffffffff, x2APIC MSR #GP; disabled->x2APIC #GP")
            // Disabling reset the registers: the timer LVT (unmasked before) is masked with
            // vector 0, the APIC software-disabled.
            .expect("[xapic] xapic: to xAPIC ok: lvt timer 0x10000, svr 0xff")
            .expect("[xapic] xapic: to x2APIC ok: 0xfee00d00, id Ok(1), page 0xffffffff; x2APIC->xAPIC #GP")
            .expect(
                "[xapic] xapic: reserved bit #GP; relocation #GP; to disabled ok; EXTD without EN #GP; to xAPIC ok",
            )
            .expect("[xapic] xapic: all checks passed")
            .expect(format!("[witness] witness: alive, cycle {cycles}, canary intact"))
            .expect("partition witness: reports PASS")
            .forbid("xapic: FAIL")
            .forbid(": fault #")
            .forbid("IPI refused")
            // The refused IA32_APIC_BASE writes log warnings; nothing may be an error.
            .execute()
            .assert_passed();
    }
}
