//! The MSR map: which MSRs a partition reads or writes without an exit. The backends lay it
//! out in their MSR bitmaps (`bitmap`); every other MSR exits and the kernel answers it
//! from its allowlist (`exits/msr.rs`) or with #GP.
//!
//! Passed through: the syscall and segment-base MSRs, TSC_AUX, PAT/EFER/SYSENTER (switched
//! by the VMCS / VMCB; EFER exits on SVM, see `control_registers::efer_write`), IA32_TSC
//! for reading, and, where the CPU has an x2APIC and the vCPU is in x2APIC mode, the
//! partition's own local APIC registers that carry no delivery mode, and the TSC deadline.

/// IA32_TSC_DEADLINE (SDM 11.5.4.1).
pub const TSC_DEADLINE: u32 = 0x6e0;

/// Extended feature enable register (APM Vol. 2 3.1.7, SDM Vol. 3 2.2.1).
pub const EFER: u32 = 0xc000_0080;

/// MSRs the guest reads directly (writes exit: a partition must not move the TSC of the
/// core it shares with the hypervisor; its TSC write becomes its vCPU's TSC offset,
/// the kernel's `exits/tsc.rs`).
pub const READ_ONLY: &[u32] = &[
    0x10, // IA32_TSC
];

/// MSRs the guest reads and writes directly (MSR bitmap clear).
pub const PASS_THROUGH: &[u32] = &[
    0x174, // SYSENTER_CS
    0x175, // SYSENTER_ESP
    0x176, // SYSENTER_EIP
    0x277, // PAT
    EFER,
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0xc000_0100, // FS_BASE
    0xc000_0101, // GS_BASE
    0xc000_0102, // KERNEL_GS_BASE
    0xc000_0103, // TSC_AUX
];

/// x2APIC registers (SDM Table 11-6) a partition reads directly: ID through self-IPI (the
/// x2APIC hardware answers a register it lacks with #GP in the partition).
pub const X2APIC_READ: core::ops::RangeInclusive<u32> = 0x802..=0x83f;
/// x2APIC registers a partition writes directly (`bulkhead_virt::x2apic`), and the TSC
/// deadline.
pub const X2APIC_WRITE: &[u32] = &{
    const N: usize = crate::x2apic::WRITES_WITHOUT_EXIT.len();
    let mut msrs = [TSC_DEADLINE; N + 1];
    let mut i = 0;
    while i < N {
        msrs[i] = crate::x2apic::WRITES_WITHOUT_EXIT[i];
        i += 1;
    }
    msrs
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_msr_is_both_read_only_and_passed_through() {
        for msr in READ_ONLY {
            assert!(!PASS_THROUGH.contains(msr) && !X2APIC_WRITE.contains(msr), "{msr:#x}");
        }
    }

    #[test]
    fn x2apic_writes_are_x2apic_registers_the_map_lets_through_and_the_deadline() {
        let (deadline, registers) = X2APIC_WRITE.split_last().expect("not empty");
        assert_eq!(*deadline, TSC_DEADLINE);
        assert_eq!(registers, &crate::x2apic::WRITES_WITHOUT_EXIT);
        // The ICR (0x830) and the LVTs with a delivery mode always exit.
        for msr in [0x830, 0x82f, 0x833, 0x834, 0x835, 0x836, 0x837] {
            assert!(!X2APIC_WRITE.contains(&msr), "{msr:#x}");
        }
        assert!(registers.iter().all(|msr| X2APIC_READ.contains(msr)));
    }

    #[test]
    fn efer_is_passed_through_and_nothing_else_of_the_apic_or_tsc() {
        assert!(PASS_THROUGH.contains(&EFER));
        for msr in [0x10, 0x1b, TSC_DEADLINE, 0x3a, 0x1a0] {
            assert!(!PASS_THROUGH.contains(&msr), "{msr:#x}");
        }
    }
}
