//! Model-specific MSRs that general-purpose kernels read on every CPU of a vendor and that a
//! partition sees as fixed values: the hardware behind them (microcode, the memory
//! controller's configuration, the core's hardware configuration) belongs to the board,
//! not to a partition, so the hypervisor never reads or writes the real register for it.
//!
//! Linux, for one, reads these with plain RDMSR where the CPU must have them (an AMD CPU of
//! family 0Fh or later with MTRRs has SYSCFG: `k8_check_syscfg_dram_mod_en`), so a #GP
//! there is an "unchecked MSR access error" with a call trace in its log on every boot.
//! The values are those a CPU with nothing enabled reports, and the same on every core,
//! so that a partition learns nothing about the board from them.

/// IA32_BIOS_SIGN_ID on Intel (SDM Vol. 4 Table 2-2: the microcode update signature,
/// loaded into bits 63:32 by CPUID after software writes 0); MSR0000_008B, the patch level,
/// on AMD (read-only).
pub const MICROCODE_REVISION: u32 = 0x8b;
/// AMD SYSCFG (APM Vol. 2 7.9.1, MSR C001_0010h): MTRR fixed-range DRAM extensions, TOM2,
/// memory encryption. Read as 0: none of them enabled.
pub const AMD_SYSCFG: u32 = 0xc001_0010;
/// AMD HWCR (MSR C001_0015h, BKDG/PPR for families 10h and later).
pub const AMD_HWCR: u32 = 0xc001_0015;
/// AMD interrupt pending message (MSR C001_0055h, BKDG for families 0Fh-16h): C1E on
/// halt, SMI on halt. Read as 0: none enabled (Linux reads it with plain RDMSR).
pub const AMD_INT_PENDING: u32 = 0xc001_0055;

/// HWCR bit 24, TscFreqSel: the TSC counts at the P0 frequency. Read-only 1 on every
/// family since 10h; Linux warns "TSC doesn't count with P0 frequency!" without it.
pub const HWCR_TSC_FREQ_SEL: u64 = 1 << 24;

/// The value a partition reads from `msr`, or `None` when the MSR is not one of these
/// (or does not exist on this vendor's CPUs: #GP, as on the hardware).
pub fn read(msr: u32, amd: bool) -> Option<u64> {
    match msr {
        // Revision 0: no update loaded. A partition cannot load microcode, and Linux skips
        // its microcode checks under a hypervisor (CPUID.1:ECX[31]).
        MICROCODE_REVISION => Some(0),
        AMD_SYSCFG | AMD_INT_PENDING if amd => Some(0),
        AMD_HWCR if amd => Some(HWCR_TSC_FREQ_SEL),
        _ => None,
    }
}

/// Whether a partition's write of `value` to `msr` is accepted (and dropped, so the
/// register keeps reading as [`read`] says); false is #GP.
pub fn write_accepted(msr: u32, value: u64, amd: bool) -> bool {
    match msr {
        // Software writes IA32_BIOS_SIGN_ID (any value, 0 by convention) before the CPUID
        // that loads the signature (SDM Vol. 3 10.11.7.1); the patch level on AMD is
        // read-only.
        MICROCODE_REVISION => !amd,
        // SYSCFG and HWCR configure the board's memory controller and the core: not the
        // partition's (a write that changes nothing is accepted, as the hardware would).
        AMD_SYSCFG | AMD_HWCR | AMD_INT_PENDING if amd => read(msr, amd) == Some(value),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intel_has_the_microcode_signature_only() {
        assert_eq!(read(MICROCODE_REVISION, false), Some(0));
        assert_eq!(read(AMD_SYSCFG, false), None);
        assert_eq!(read(AMD_HWCR, false), None);
        assert!(write_accepted(MICROCODE_REVISION, 0, false));
        assert!(write_accepted(MICROCODE_REVISION, 0x1234_5678, false));
        assert!(!write_accepted(AMD_SYSCFG, 0, false));
    }

    #[test]
    fn amd_reads_the_patch_level_syscfg_and_hwcr() {
        assert_eq!(read(MICROCODE_REVISION, true), Some(0));
        assert_eq!(read(AMD_SYSCFG, true), Some(0));
        assert_eq!(read(AMD_HWCR, true), Some(1 << 24));
        assert!(!write_accepted(MICROCODE_REVISION, 0, true), "the patch level is read-only");
        assert!(write_accepted(AMD_SYSCFG, 0, true));
        assert!(!write_accepted(AMD_SYSCFG, 1 << 18, true), "MtrrFixDramEn stays off");
        assert!(write_accepted(AMD_HWCR, 1 << 24, true));
        assert!(!write_accepted(AMD_HWCR, (1 << 24) | 1, true), "SMM lock is the firmware's");
        assert_eq!(read(AMD_INT_PENDING, true), Some(0));
        assert_eq!(read(AMD_INT_PENDING, false), None);
        assert!(!write_accepted(AMD_INT_PENDING, 1 << 28, true), "C1E stays off");
    }

    #[test]
    fn other_msrs_are_not_answered_here() {
        for msr in [0x8a, 0x8c, 0xc001_0011, 0xc001_0014, 0xc001_1029] {
            assert_eq!(read(msr, true), None, "{msr:#x}");
            assert!(!write_accepted(msr, 0, true), "{msr:#x}");
        }
    }
}
