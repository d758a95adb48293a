//! Hyper-V discovery leaves (TLFS "Feature Discovery"; reference §1).
//!
//! A guest first sees CPUID.1:ECX bit 31 ("hypervisor present"), then reads the vendor leaf
//! and the privilege mask. Linux treats the platform as Hyper-V only if the vendor string
//! matches and [`privileges_eax::HYPERCALL_MSRS`] and [`privileges_eax::VP_INDEX`] are both
//! set (reference §1.4); everything else is optional and has a native fallback.

/// CPUID.1:ECX bit 31: a hypervisor is present; guests look at 0x4000_0000 only if it is set.
pub const LEAF1_ECX_HYPERVISOR_PRESENT: u32 = 1 << 31;

/// EAX: highest hypervisor leaf; EBX, ECX, EDX: the vendor string.
pub const LEAF_VENDOR_AND_MAX: u32 = 0x4000_0000;
/// EAX: interface signature ([`INTERFACE_SIGNATURE`]); EBX..EDX reserved.
pub const LEAF_INTERFACE: u32 = 0x4000_0001;
/// Hypervisor build and version numbers.
pub const LEAF_VERSION: u32 = 0x4000_0002;
/// EAX/EBX: partition privilege mask (bits 31:0 / 63:32); ECX misc; EDX feature bits.
pub const LEAF_FEATURES: u32 = 0x4000_0003;
/// EAX: implementation recommendations; EBX: spinlock retry count; ECX: physical address bits.
pub const LEAF_RECOMMENDATIONS: u32 = 0x4000_0004;
/// EAX/EBX/ECX: implementation limits (max VPs, LPs, interrupt-remapping vectors; 0 = not reported).
pub const LEAF_LIMITS: u32 = 0x4000_0005;
/// EAX: hardware features the hypervisor itself uses.
pub const LEAF_HARDWARE_FEATURES: u32 = 0x4000_0006;
/// First and last leaf of this interface: what 0x4000_0000 EAX reports. Linux requires at least
/// 0x4000_0005 there (`HYPERV_CPUID_MIN`, reference §1.4).
pub const LEAF_FIRST: u32 = LEAF_VENDOR_AND_MAX;
pub const LEAF_LAST: u32 = LEAF_HARDWARE_FEATURES;
const _: () = assert!(LEAF_LAST >= 0x4000_0005);

/// "Microsoft Hv" as returned in EBX, ECX, EDX of leaf 0x4000_0000 (little-endian bytes).
pub const VENDOR_EBX: u32 = 0x7263_694D;
pub const VENDOR_ECX: u32 = 0x666F_736F;
pub const VENDOR_EDX: u32 = 0x7648_2074;

/// "Hv#1" in EAX of leaf 0x4000_0001. Linux does not check it, but the TLFS tells software to
/// base compatibility on it, so it must be reported (reference §1.4 item 5).
pub const INTERFACE_SIGNATURE: u32 = 0x3123_7648;

/// Whether EBX, ECX, EDX of leaf 0x4000_0000 spell the Microsoft vendor string.
pub const fn is_microsoft_vendor(ebx: u32, ecx: u32, edx: u32) -> bool {
    ebx == VENDOR_EBX && ecx == VENDOR_ECX && edx == VENDOR_EDX
}

/// Leaf 0x4000_0003 EAX: privilege mask bits 31:0, access to synthetic MSRs
/// (TLFS datatypes/hv_partition_privilege_mask; reference §1.2).
pub mod privileges_eax {
    /// VP_RUNTIME MSR 0x4000_0010.
    pub const VP_RUNTIME: u32 = 1 << 0;
    /// TIME_REF_COUNT MSR 0x4000_0020.
    pub const TIME_REF_COUNT: u32 = 1 << 1;
    /// SynIC MSRs 0x4000_0080..=0x4000_009F.
    pub const SYNIC: u32 = 1 << 2;
    /// Synthetic timer MSRs 0x4000_00B0..=0x4000_00B7.
    pub const SYNTIMER: u32 = 1 << 3;
    /// APIC access MSRs 0x4000_0070..=0x4000_0072.
    pub const APIC_ACCESS: u32 = 1 << 4;
    /// GUEST_OS_ID and HYPERCALL MSRs; Linux ignores Hyper-V entirely without it.
    pub const HYPERCALL_MSRS: u32 = 1 << 5;
    /// VP_INDEX MSR; Linux ignores Hyper-V entirely without it.
    pub const VP_INDEX: u32 = 1 << 6;
    /// RESET MSR 0x4000_0003.
    pub const RESET: u32 = 1 << 7;
    /// REFERENCE_TSC MSR and the reference TSC page.
    pub const REFERENCE_TSC: u32 = 1 << 9;
    /// TSC_FREQUENCY and APIC_FREQUENCY MSRs 0x4000_0022/0x4000_0023 (Linux
    /// `HV_ACCESS_FREQUENCY_MSRS`); Linux reads them instead of calibrating only when
    /// [`super::features_edx::FREQUENCY_MSRS_AVAILABLE`] is set too.
    pub const ACCESS_FREQUENCY_MSRS: u32 = 1 << 11;
    /// TSC_INVARIANT_CONTROL MSR 0x4000_0118 (Linux `HV_ACCESS_TSC_INVARIANT`): Linux then
    /// trusts the plain TSC and ranks it above the reference TSC page. Bulkhead does not
    /// offer it (docs/hyperv.md, "Time").
    pub const TSC_INVARIANT: u32 = 1 << 15;

    /// The bits Linux's `ms_hyperv_platform()` requires before it treats the platform as Hyper-V.
    pub const REQUIRED_BY_LINUX: u32 = HYPERCALL_MSRS | VP_INDEX;
}

/// Leaf 0x4000_0003 EBX: privilege mask bits 63:32, access to hypercalls (reference §1.2).
pub mod privileges_ebx {
    /// HvCallPostMessage; without it the call fails with ACCESS_DENIED.
    pub const POST_MESSAGES: u32 = 1 << 4;
    /// HvCallSignalEvent; without it the call fails with ACCESS_DENIED.
    pub const SIGNAL_EVENTS: u32 = 1 << 5;
    /// CpuManagement. Linux takes it (without Isolation, bit 22) to mean "I am the root
    /// partition" and then expects to manage the hypervisor, so a guest partition must never
    /// see it set (reference §1.4).
    pub const CPU_MANAGEMENT: u32 = 1 << 12;
}

/// Leaf 0x4000_0003 EDX: feature bits (TLFS "Feature Discovery"; Linux `HV_FEATURE_*`).
pub mod features_edx {
    /// The frequency MSRs are available (Linux `HV_FEATURE_FREQUENCY_MSRS_AVAILABLE`).
    pub const FREQUENCY_MSRS_AVAILABLE: u32 = 1 << 8;
    /// The guest crash MSRs 0x4000_0100..=0x4000_0105 are available (Linux
    /// `HV_FEATURE_GUEST_CRASH_MSR_AVAILABLE`).
    pub const GUEST_CRASH_MSRS_AVAILABLE: u32 = 1 << 10;
}

/// Leaf 0x4000_0004 EAX: implementation recommendations (reference §1.3).
pub mod recommendations_eax {
    /// Guests should not use AutoEOI on SINTs but EOI themselves. Lets the hypervisor keep
    /// hardware-delivered (APICv) interrupts, which would bypass an emulated AutoEOI (§4.5).
    pub const DEPRECATE_AUTO_EOI: u32 = 1 << 9;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(words: &[u32]) -> [u8; 12] {
        let mut out = [0; 12];
        for (chunk, word) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    #[test]
    fn vendor_words_spell_microsoft_hv() {
        assert_eq!(&bytes(&[VENDOR_EBX, VENDOR_ECX, VENDOR_EDX]), b"Microsoft Hv");
        assert!(is_microsoft_vendor(VENDOR_EBX, VENDOR_ECX, VENDOR_EDX));
        assert!(!is_microsoft_vendor(VENDOR_ECX, VENDOR_EBX, VENDOR_EDX));
    }

    #[test]
    fn interface_signature_spells_hv1() {
        assert_eq!(&INTERFACE_SIGNATURE.to_le_bytes(), b"Hv#1");
    }

    #[test]
    fn leaves_are_contiguous() {
        assert_eq!(LEAF_FIRST, 0x4000_0000);
        assert_eq!(LEAF_LAST - LEAF_FIRST, 6);
        let leaves = [
            LEAF_VENDOR_AND_MAX,
            LEAF_INTERFACE,
            LEAF_VERSION,
            LEAF_FEATURES,
            LEAF_RECOMMENDATIONS,
            LEAF_LIMITS,
            LEAF_HARDWARE_FEATURES,
        ];
        for (i, leaf) in leaves.iter().enumerate() {
            assert_eq!(*leaf, LEAF_FIRST + i as u32);
        }
    }

    #[test]
    fn bit_positions() {
        use privileges_eax::*;
        let eax = [VP_RUNTIME, TIME_REF_COUNT, SYNIC, SYNTIMER, APIC_ACCESS, HYPERCALL_MSRS, VP_INDEX, RESET];
        for (bit, mask) in eax.iter().enumerate() {
            assert_eq!(*mask, 1 << bit);
        }
        assert_eq!(REFERENCE_TSC, 0x200);
        assert_eq!(ACCESS_FREQUENCY_MSRS, 0x800);
        assert_eq!(TSC_INVARIANT, 0x8000);
        assert_eq!(features_edx::FREQUENCY_MSRS_AVAILABLE, 0x100);
        assert_eq!(features_edx::GUEST_CRASH_MSRS_AVAILABLE, 0x400);
        assert_eq!(REQUIRED_BY_LINUX, 0x60);
        assert_eq!(privileges_ebx::POST_MESSAGES, 0x10);
        assert_eq!(privileges_ebx::SIGNAL_EVENTS, 0x20);
        assert_eq!(privileges_ebx::CPU_MANAGEMENT, 0x1000);
        assert_eq!(recommendations_eax::DEPRECATE_AUTO_EOI, 0x200);
        assert_eq!(LEAF1_ECX_HYPERVISOR_PRESENT, 0x8000_0000);
    }
}
