//! CPUID features a partition must not see: those whose MSRs the hypervisor refuses
//! (#GP), whose instructions it answers with #UD, or which belong to the whole board.
//! A feature CPUID reports must work as the SDM / APM describe it; anything Bulkhead does
//! not give a partition is hidden here, so that a guest that believes CPUID never meets
//! a refusal. docs/platform.md ("CPUID") lists each bit and why.
//!
//! Bit positions: SDM Vol. 2A, CPUID; AMD APM Vol. 3, Appendix E.

/// EAX, EBX, ECX, EDX of one CPUID answer.
pub type Registers = [u32; 4];

/// Leaf 1 ECX bits hidden: DTES64 (2) and DS-CPL (4) (IA32_DS_AREA refused), MONITOR (3)
/// (MONITOR/MWAIT get #UD), VMX (5), SMX (6), EIST (7, IA32_PERF_CTL), TM2 (8), SDBG (11,
/// IA32_DEBUG_INTERFACE), xTPR update control (14, a MISC_ENABLE write), PDCM (15,
/// IA32_PERF_CAPABILITIES), DCA (18).
pub const LEAF1_ECX_HIDDEN: u32 =
    1 << 2 | 1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 11 | 1 << 14 | 1 << 15 | 1 << 18;
/// Leaf 1 EDX bits hidden: MCE (7) and MCA (14) (IA32_MCG_* and the bank MSRs refused),
/// DS (21), ACPI thermal control (22, IA32_THERM_*), TM (29), PBE (31).
pub const LEAF1_EDX_HIDDEN: u32 = 1 << 7 | 1 << 14 | 1 << 21 | 1 << 22 | 1 << 29 | 1 << 31;
/// Leaf 7.0 EBX bits hidden: SGX (2), RDT monitoring (12) and allocation (15)
/// (IA32_PQR_ASSOC: the class of service is the board's), MPX (14, IA32_BNDCFGS), Intel
/// PT (25, IA32_RTIT_*).
pub const LEAF7_EBX_HIDDEN: u32 = 1 << 2 | 1 << 12 | 1 << 14 | 1 << 15 | 1 << 25;
/// Leaf 7.0 ECX bits hidden: WAITPKG (5, UMWAIT/TPAUSE are not enabled: #UD), CET shadow
/// stacks (7, IA32_U_CET/S_CET), TME (13), SGX launch control (30).
pub const LEAF7_ECX_HIDDEN: u32 = 1 << 5 | 1 << 7 | 1 << 13 | 1 << 30;
/// Leaf 7.0 EDX bits hidden: TSX force abort (13, MSR 0x10f), PCONFIG (18), CET IBT (20),
/// IBRS/IBPB (26, IA32_SPEC_CTRL and IA32_PRED_CMD), STIBP (27), L1D_FLUSH (28,
/// IA32_FLUSH_CMD), ARCH_CAPABILITIES (29), CORE_CAPABILITIES (30), SSBD (31).
pub const LEAF7_EDX_HIDDEN: u32 =
    1 << 13 | 1 << 18 | 1 << 20 | 1 << 26 | 1 << 27 | 1 << 28 | 1 << 29 | 1 << 30 | 1 << 31;
/// Leaf 6 EAX: only ARAT (2), the APIC timer running in deep C-states, a property of the
/// hardware with no MSR; thermal sensors, turbo, HWP and energy bias all need MSRs.
pub const LEAF6_EAX_KEPT: u32 = 1 << 2;
/// Leaf 0x8000_0001 ECX bits hidden (AMD): SVM (2), OSVW (9), IBS (10), SKINIT (12), WDT
/// (13), LWP (15), PerfCtrExtCore (23), PerfCtrExtNB (24), DataBreakpointExtension (26),
/// PerfTsc (27), PerfCtrExtLLC (28), MONITORX (29).
pub const EXT1_ECX_HIDDEN: u32 =
    1 << 2 | 1 << 9 | 1 << 10 | 1 << 12 | 1 << 13 | 1 << 15 | 1 << 23 | 1 << 24 | 1 << 26 | 1 << 27 | 1 << 28 | 1 << 29;
/// Leaf 0x8000_0001 EDX bits hidden (AMD mirrors of leaf 1): MCE (7), MCA (14).
pub const EXT1_EDX_HIDDEN: u32 = 1 << 7 | 1 << 14;
/// Leaf 0x8000_0007 EDX: only the invariant TSC (8); the power-management bits describe
/// P-state and frequency MSRs a partition cannot reach.
pub const EXT7_EDX_KEPT: u32 = 1 << 8;
/// Leaf 0x8000_0008 EBX bits hidden (AMD): RDPRU (4, reads APERF/MPERF), IBPB (12), IBRS
/// (14), STIBP (15), SSBD (24), VIRT_SSBD (25): their MSRs are refused.
pub const EXT8_EBX_HIDDEN: u32 = 1 << 4 | 1 << 12 | 1 << 14 | 1 << 15 | 1 << 24 | 1 << 25;

/// Leaves answered with zeros: MONITOR/MWAIT (5), the architectural PMU (0xA, 0x23), RDT
/// monitoring and allocation (0xF, 0x10), SGX (0x12), Intel PT (0x14), PCONFIG (0x1B), SVM
/// features (0x8000_000A), IBS (0x8000_001B) and AMD PerfMonV2 (0x8000_0022).
pub const ZEROED_LEAVES: [u32; 11] =
    [0x5, 0xa, 0xf, 0x10, 0x12, 0x14, 0x1b, 0x23, 0x8000_000a, 0x8000_001b, 0x8000_0022];

/// Basic leaves (bit n: leaf n) and extended leaves (bit n: leaf 0x8000_0000 + n) that
/// [`hide_unavailable`] changes; any other leaf passes untouched after one test.
const BASIC_FILTERED: u64 =
    1 << 1 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 0xa | 1 << 0xf | 1 << 0x10 | 1 << 0x12 | 1 << 0x14 | 1 << 0x1b | 1 << 0x23;
const EXTENDED_FILTERED: u64 = 1 << 1 | 1 << 7 | 1 << 8 | 1 << 0xa | 1 << 0x1b | 1 << 0x22;

/// Removes from the hardware's answer `r` to `leaf`/`subleaf` every feature a partition
/// cannot use (see the constants above). The caller adds what the hypervisor provides
/// (hypervisor bit, x2APIC, OSXSAVE, topology, the Hyper-V leaves).
///
/// On the CPUID exit path: a leaf it does not change costs one bit test.
#[inline]
pub fn hide_unavailable(leaf: u32, subleaf: u32, r: Registers) -> Registers {
    if changes(leaf) { filter(leaf, subleaf, r) } else { r }
}

/// Whether [`hide_unavailable`] changes anything in `leaf`: one bit test.
#[inline]
pub const fn changes(leaf: u32) -> bool {
    let (mask, index) =
        if leaf < 0x8000_0000 { (BASIC_FILTERED, leaf) } else { (EXTENDED_FILTERED, leaf.wrapping_sub(0x8000_0000)) };
    index < 64 && mask & (1 << index) != 0
}

/// [`hide_unavailable`] for a leaf it [`changes`].
#[inline]
pub fn filter(leaf: u32, subleaf: u32, r: Registers) -> Registers {
    let [eax, ebx, ecx, edx] = r;
    // One match (a few compares, on the CPUID exit path), not a search of ZEROED_LEAVES;
    // the test `zeroed_leaves_match_the_list` keeps the two in step.
    match leaf {
        0x5 | 0xa | 0xf | 0x10 | 0x12 | 0x14 | 0x1b | 0x23 | 0x8000_000a | 0x8000_001b | 0x8000_0022 => [0; 4],
        1 => [eax, ebx, ecx & !LEAF1_ECX_HIDDEN, edx & !LEAF1_EDX_HIDDEN],
        6 => [eax & LEAF6_EAX_KEPT, 0, 0, 0],
        7 if subleaf == 0 => [eax, ebx & !LEAF7_EBX_HIDDEN, ecx & !LEAF7_ECX_HIDDEN, edx & !LEAF7_EDX_HIDDEN],
        0x8000_0001 => [eax, ebx, ecx & !EXT1_ECX_HIDDEN, edx & !EXT1_EDX_HIDDEN],
        // EBX: RAS capabilities of the machine-check architecture, hidden with it.
        0x8000_0007 => [eax, 0, ecx, edx & EXT7_EDX_KEPT],
        0x8000_0008 => [eax, ebx & !EXT8_EBX_HIDDEN, ecx, edx],
        _ => r,
    }
}

/// CPUID leaf 0xB (and 0x1F) for a partition (SDM Vol. 2A, CPUID "Extended Topology
/// Enumeration Leaf"), synthesized rather than filtered: the hardware's own levels
/// describe the whole board (and Bochs leaves the level types out). Level 0 is SMT with
/// one thread per core; level 1 is the core level with the partition's `cores` and a
/// shift wide enough for every APIC ID of the board (`max_apic_id`); higher levels are
/// invalid (EAX = EBX = 0, ECX = the level number). EDX is the x2APIC ID of the
/// vCPU asking (`apic_id`: a vCPU keeps its core's APIC ID) at every level, as the SDM
/// requires ("EDX: x2APIC ID the current logical processor"); it is set here rather than
/// kept from the hardware because not every CPU reports it (AMD's leaf 0xB answers 0 in
/// EDX where there is no x2APIC, e.g. Bochs `ryzen`).
pub fn extended_topology(subleaf: u32, cores: u32, max_apic_id: u32, apic_id: u32) -> Registers {
    const LEVEL_SMT: u32 = 1 << 8;
    const LEVEL_CORE: u32 = 2 << 8;
    let core_shift = u32::BITS - max_apic_id.leading_zeros();
    let level = subleaf & 0xff;
    let (eax, ebx, ecx) = match level {
        0 => (0, 1, LEVEL_SMT),
        1 => (core_shift, cores, LEVEL_CORE | 1),
        _ => (0, 0, level),
    };
    [eax, ebx, ecx, apic_id]
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Registers = [u32::MAX; 4];

    #[test]
    fn the_fast_test_covers_every_filtered_leaf() {
        for leaf in (0..0x40u32).chain(0x8000_0000..0x8000_0040) {
            let fast = hide_unavailable(leaf, 0, ALL);
            assert_eq!(fast, filter(leaf, 0, ALL), "leaf {leaf:#x}");
        }
        assert_eq!(hide_unavailable(0x4000_0001, 0, ALL), ALL);
        assert_eq!(hide_unavailable(0xffff_ffff, 0, ALL), ALL);
    }

    #[test]
    fn zeroed_leaves_match_the_list() {
        for leaf in 0..0x30u32 {
            assert_eq!(hide_unavailable(leaf, 0, ALL) == [0; 4], ZEROED_LEAVES.contains(&leaf), "leaf {leaf:#x}");
        }
        for leaf in 0x8000_0000..0x8000_0030u32 {
            assert_eq!(hide_unavailable(leaf, 0, ALL) == [0; 4], ZEROED_LEAVES.contains(&leaf), "leaf {leaf:#x}");
        }
    }

    #[test]
    fn pmu_is_hidden() {
        assert_eq!(hide_unavailable(0xa, 0, ALL), [0; 4]);
        assert_eq!(hide_unavailable(0x8000_0022, 0, ALL), [0; 4]);
        assert_eq!(hide_unavailable(1, 0, ALL)[2] & (1 << 15), 0, "PDCM");
        assert_eq!(hide_unavailable(0x8000_0001, 0, ALL)[2] & (1 << 23), 0, "PerfCtrExtCore");
    }

    #[test]
    fn refused_msrs_and_instructions_are_hidden() {
        let leaf1 = hide_unavailable(1, 0, ALL);
        for bit in [2, 3, 4, 5, 6, 7, 8, 11, 14, 15, 18] {
            assert_eq!(leaf1[2] & (1 << bit), 0, "leaf 1 ECX bit {bit}");
        }
        for bit in [7, 14, 21, 22, 29, 31] {
            assert_eq!(leaf1[3] & (1 << bit), 0, "leaf 1 EDX bit {bit}");
        }
        let leaf7 = hide_unavailable(7, 0, ALL);
        for bit in [26, 27, 28, 29, 31] {
            assert_eq!(leaf7[3] & (1 << bit), 0, "leaf 7 EDX bit {bit}");
        }
        assert_eq!(hide_unavailable(5, 0, ALL), [0; 4]);
        assert_eq!(hide_unavailable(0x8000_0001, 0, ALL)[2] & (1 << 29 | 1 << 2), 0);
    }

    #[test]
    fn what_partitions_have_stays() {
        let leaf1 = hide_unavailable(1, 0, ALL);
        // SSE3, PCID, x2APIC, TSC deadline, XSAVE, AVX, hypervisor; FPU, TSC, MSR, APIC, MTRR.
        for bit in [0, 17, 21, 24, 26, 28, 31] {
            assert_ne!(leaf1[2] & (1 << bit), 0, "leaf 1 ECX bit {bit}");
        }
        for bit in [0, 4, 5, 9, 12] {
            assert_ne!(leaf1[3] & (1 << bit), 0, "leaf 1 EDX bit {bit}");
        }
        // TSC_ADJUST (leaf 7 EBX bit 1) is virtualised with the TSC offset.
        assert_ne!(hide_unavailable(7, 0, ALL)[1] & (1 << 1), 0);
        // Subleaves other than 0 of leaf 7 and unrelated leaves pass unchanged.
        assert_eq!(hide_unavailable(7, 1, ALL), ALL);
        assert_eq!(hide_unavailable(0xd, 0, ALL), ALL);
        assert_eq!(hide_unavailable(6, 0, ALL), [1 << 2, 0, 0, 0]);
        assert_eq!(hide_unavailable(0x8000_0007, 0, ALL)[3], 1 << 8);
    }

    #[test]
    fn extended_topology_reports_the_vcpus_x2apic_id_at_every_level() {
        // A 4-core partition on a board whose APIC IDs go up to 5, asked on APIC ID 3.
        assert_eq!(extended_topology(0, 4, 5, 3), [0, 1, 1 << 8, 3]);
        assert_eq!(extended_topology(1, 4, 5, 3), [3, 4, 2 << 8 | 1, 3]);
        assert_eq!(extended_topology(2, 4, 5, 3), [0, 0, 2, 3]);
        // The ECX level number is the subleaf's low byte; EDX is the asker's ID, not 0.
        assert_eq!(extended_topology(0x1_02, 2, 1, 1), [0, 0, 2, 1]);
        assert_eq!(extended_topology(0, 1, 0, 0)[3], 0);
        assert_eq!(extended_topology(1, 1, 0, 0)[0], 0);
        assert_eq!(extended_topology(1, 2, 255, 200)[0], 8);
    }
}
