//! Which MTRR-range MSRs a CPU has (SDM Vol. 3A 12.11.1, 12.11.2.2, 12.11.2.3), decided
//! once from CPUID.1:EDX.MTRR and IA32_MTRRCAP instead of on every intercepted access.
//!
//! MTRRCAP is a read-only capability register, so its value read at boot is the value any
//! later read returns; the kernel answers a partition's RDMSR of it from [`Mtrrs::cap`].

/// IA32_MTRRCAP (SDM Vol. 4 Table 2-2): VCNT in bits 7:0, FIX in bit 8, WC in bit 10.
pub const MTRRCAP: u32 = 0xfe;
/// IA32_MTRR_DEF_TYPE.
pub const DEF_TYPE: u32 = 0x2ff;
/// The first variable-range pair (IA32_MTRR_PHYSBASE0); pair n is at 0x200 + 2n.
pub const VARIABLE_FIRST: u32 = 0x200;
/// IA32_MTRR_FIX64K_00000.
pub const FIX64K: u32 = 0x250;
/// IA32_MTRR_FIX16K_80000 and IA32_MTRR_FIX16K_A0000.
pub const FIX16K: [u32; 2] = [0x258, 0x259];
/// IA32_MTRR_FIX4K_C0000 to IA32_MTRR_FIX4K_F8000.
pub const FIX4K: core::ops::RangeInclusive<u32> = 0x268..=0x26f;
/// The last MTRR-range MSR (IA32_MTRR_FIX4K_F8000): the variable pairs and the
/// fixed-range MTRRs lie in `VARIABLE_FIRST..=LAST`.
pub const LAST: u32 = 0x26f;

/// The MTRRs of this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mtrrs {
    /// CPUID.1:EDX.MTRR: without it no MTRR MSR exists, MTRRCAP included.
    present: bool,
    /// IA32_MTRRCAP as read at boot (0 when `present` is false).
    cap: u64,
}

impl Mtrrs {
    /// A CPU without MTRRs.
    pub const NONE: Mtrrs = Mtrrs { present: false, cap: 0 };

    /// The MTRRs of a CPU whose CPUID.1:EDX.MTRR is `present` and whose MTRRCAP reads `cap`.
    pub const fn new(present: bool, cap: u64) -> Self {
        Mtrrs { present, cap: if present { cap } else { 0 } }
    }

    /// IA32_MTRRCAP, `None` where the CPU has no MTRRs (#GP).
    #[inline]
    pub const fn cap(&self) -> Option<u64> {
        if self.present { Some(self.cap) } else { None }
    }

    /// Whether MTRR-range MSR `msr` exists: MTRRCAP and MTRR_DEF_TYPE with CPUID.1:EDX.MTRR;
    /// the variable pairs PHYSBASE/PHYSMASK n at 0x200 + 2n for n < MTRRCAP.VCNT; the eleven
    /// fixed-range MTRRs only with MTRRCAP.FIX. Anything else in 0x200-0x26F does not exist.
    #[inline]
    pub const fn exists(&self, msr: u32) -> bool {
        if !self.present {
            return false;
        }
        let variable = self.cap as u8 as u32;
        let fixed = self.cap & (1 << 8) != 0;
        match msr {
            MTRRCAP | DEF_TYPE => true,
            FIX64K => fixed,
            0x258 | 0x259 => fixed,
            0x268..=0x26f => fixed,
            0x200..=0x26f => (msr - VARIABLE_FIRST) / 2 < variable,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_exists_without_cpuid_mtrr() {
        let m = Mtrrs::new(false, 0x50a);
        assert_eq!(m.cap(), None);
        for msr in [MTRRCAP, DEF_TYPE, 0x200, 0x201, FIX64K, 0x258, 0x26f] {
            assert!(!m.exists(msr), "{msr:#x}");
        }
        assert_eq!(m, Mtrrs::NONE);
    }

    #[test]
    fn variable_pairs_below_vcnt_only() {
        // VCNT 8, FIX, WC: a typical Intel core.
        let m = Mtrrs::new(true, 0x508);
        assert_eq!(m.cap(), Some(0x508));
        assert!(m.exists(MTRRCAP) && m.exists(DEF_TYPE));
        assert!(m.exists(0x200) && m.exists(0x201));
        assert!(m.exists(0x20e) && m.exists(0x20f));
        assert!(!m.exists(0x210) && !m.exists(0x211) && !m.exists(0x24f));
        // VCNT 2.
        let m = Mtrrs::new(true, 0x102);
        assert!(m.exists(0x203));
        assert!(!m.exists(0x204));
    }

    #[test]
    fn fixed_ranges_only_with_fix() {
        let with = Mtrrs::new(true, 0x108);
        let without = Mtrrs::new(true, 0x008);
        let fixed = [FIX64K].into_iter().chain(FIX16K).chain(FIX4K);
        assert_eq!(fixed.clone().count(), 11);
        for msr in fixed {
            assert!(with.exists(msr), "{msr:#x}");
            assert!(!without.exists(msr), "{msr:#x}");
        }
        // The gaps between the fixed-range MSRs do not exist either way.
        for msr in [0x251, 0x257, 0x25a, 0x267] {
            assert!(!with.exists(msr), "{msr:#x}");
        }
    }

    #[test]
    fn outside_the_range_is_not_an_mtrr() {
        let m = Mtrrs::new(true, 0x5ff);
        assert!(!m.exists(0x1ff) && !m.exists(0x270) && !m.exists(0x277));
    }
}
