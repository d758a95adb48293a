//! What a partition may write to the Hyper-V synthetic MSRs (TLFS "Hypercall Interface",
//! "Timers", "Inter-Partition Communication"; layouts in `bulkhead_abi::hyperv::msr`).
//!
//! The TLFS marks the unused bits of these registers reserved ("RsvdP": software writes
//! back what it read). A register here reads back exactly what was accepted, and every
//! reserved bit is 0 at reset, so a guest that follows the rule never sets one; a write
//! that does set one is refused with #GP, as the processor refuses a reserved bit of an
//! architectural MSR (SDM Vol. 3A, 2.1 "reserved bits"; KVM stores such bits instead,
//! which would let a partition park state the hypervisor does not understand). The page
//! address checks (a page the partition owns) need the partition's memory map and stay
//! in the kernel.

use bulkhead_abi::hyperv::msr::{self, SINT_FIRST, SINT_LAST};
use bulkhead_abi::hyperv::{CrashCtl, HypercallMsr, PageMsr, Scontrol, Sint};

/// Why a WRMSR of a synthetic MSR is refused with #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// These reserved bits are set.
    ReservedBits(u64),
    /// A SINT vector below 16 while not masked (TLFS "SINTx Registers").
    InvalidVector(u8),
    /// VP_INDEX, TIME_REF_COUNT, TSC_FREQUENCY, APIC_FREQUENCY, SVERSION: read-only.
    ReadOnly,
    /// Not a synthetic MSR this hypervisor offers.
    NotOffered,
}

/// The reserved bits of synthetic MSR `msr` (`None`: not a writable MSR offered here).
pub fn reserved_mask(msr: u32) -> Option<u64> {
    Some(match msr {
        msr::GUEST_OS_ID | msr::EOM => 0,
        msr::HYPERCALL => HypercallMsr::RESERVED_MASK,
        msr::REFERENCE_TSC | msr::VP_ASSIST_PAGE | msr::SIEFP | msr::SIMP => PageMsr::RESERVED_MASK,
        msr::SCONTROL => Scontrol::RESERVED_MASK,
        SINT_FIRST..=SINT_LAST => Sint::RESERVED_MASK,
        // Crash parameters carry any value (an error code, an address, a length).
        msr::CRASH_P0..=msr::CRASH_P4 => 0,
        msr::CRASH_CTL => CrashCtl::RESERVED_MASK,
        _ => return None,
    })
}

/// Checks the value of a WRMSR to synthetic MSR `msr` before it has any effect: `Err` is
/// #GP. (Whether a page the value enables lies in the partition's own memory is checked
/// by the caller.)
pub fn check_write(msr: u32, value: u64) -> Result<(), Refusal> {
    let Some(reserved) = reserved_mask(msr) else {
        return Err(match msr {
            msr::VP_INDEX | msr::TIME_REF_COUNT | msr::TSC_FREQUENCY | msr::APIC_FREQUENCY | msr::SVERSION => {
                Refusal::ReadOnly
            }
            _ => Refusal::NotOffered,
        });
    };
    if value & reserved != 0 {
        return Err(Refusal::ReservedBits(value & reserved));
    }
    if msr::sint_index(msr).is_some() {
        let sint = Sint::decode(value);
        if !sint.write_allowed() {
            return Err(Refusal::InvalidVector(sint.vector()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_bits_are_refused() {
        assert_eq!(check_write(msr::SCONTROL, 1), Ok(()));
        assert_eq!(check_write(msr::SCONTROL, 0), Ok(()));
        assert_eq!(check_write(msr::SCONTROL, 1 << 1 | 1), Err(Refusal::ReservedBits(2)));
        assert_eq!(check_write(msr::SCONTROL, 1 << 63), Err(Refusal::ReservedBits(1 << 63)));
        for page_msr in [msr::VP_ASSIST_PAGE, msr::SIMP, msr::SIEFP, msr::REFERENCE_TSC] {
            assert_eq!(check_write(page_msr, 0x5000 | 1), Ok(()));
            assert_eq!(check_write(page_msr, 0x5000 | 1 << 1 | 1), Err(Refusal::ReservedBits(2)));
            assert_eq!(check_write(page_msr, 0x5000 | 0x800), Err(Refusal::ReservedBits(0x800)));
        }
        // HYPERCALL: bit 1 is the lock bit, 11:2 reserved.
        assert_eq!(check_write(msr::HYPERCALL, 0x5000 | 3), Ok(()));
        assert_eq!(check_write(msr::HYPERCALL, 0x5000 | 4 | 1), Err(Refusal::ReservedBits(4)));
    }

    #[test]
    fn sints_take_vector_mask_auto_eoi_and_polling_only() {
        let sint0 = msr::sint(0);
        assert_eq!(check_write(sint0, Sint::new(0x50).value()), Ok(()));
        assert_eq!(check_write(sint0, Sint::new(0x50).masked(true).auto_eoi(true).polling(true).value()), Ok(()));
        assert_eq!(check_write(msr::sint(15), Sint::RESET.value()), Ok(()));
        assert_eq!(check_write(sint0, 0x50 | 1 << 8), Err(Refusal::ReservedBits(1 << 8)));
        assert_eq!(check_write(sint0, 0x50 | 1 << 19), Err(Refusal::ReservedBits(1 << 19)));
        assert_eq!(check_write(sint0, 0x50 | 1 << 63), Err(Refusal::ReservedBits(1 << 63)));
        assert_eq!(check_write(sint0, 15), Err(Refusal::InvalidVector(15)));
    }

    #[test]
    fn every_bit_of_every_offered_msr_is_either_meaningful_or_refused() {
        let writable = [msr::GUEST_OS_ID, msr::HYPERCALL, msr::REFERENCE_TSC, msr::VP_ASSIST_PAGE, msr::SCONTROL]
            .into_iter()
            .chain([msr::SIEFP, msr::SIMP, msr::EOM, msr::CRASH_CTL])
            .chain(msr::CRASH_P0..=msr::CRASH_P4)
            .chain(SINT_FIRST..=SINT_LAST);
        for m in writable {
            let reserved = reserved_mask(m).unwrap();
            for bit in 0..64 {
                let value = 1u64 << bit | if msr::sint_index(m).is_some() { 0x50 } else { 0 };
                assert_eq!(check_write(m, value).is_err(), reserved & 1 << bit != 0, "msr {m:#x} bit {bit}");
            }
        }
    }

    #[test]
    fn read_only_and_unknown_msrs_are_refused() {
        for m in [msr::VP_INDEX, msr::TIME_REF_COUNT, msr::TSC_FREQUENCY, msr::APIC_FREQUENCY, msr::SVERSION] {
            assert_eq!(check_write(m, 0), Err(Refusal::ReadOnly));
        }
        assert_eq!(check_write(0x4000_0070, 0), Err(Refusal::NotOffered));
        assert_eq!(check_write(0x4000_00ff, 0), Err(Refusal::NotOffered));
        assert_eq!(check_write(0x4000_0106, 0), Err(Refusal::NotOffered));
        assert_eq!(check_write(0x4000_0118, 1), Err(Refusal::NotOffered));
    }

    #[test]
    fn crash_msrs() {
        for m in msr::CRASH_P0..=msr::CRASH_P4 {
            assert_eq!(check_write(m, u64::MAX), Ok(()));
        }
        assert_eq!(check_write(msr::CRASH_CTL, 1 << 63 | 1 << 62), Ok(()));
        assert_eq!(check_write(msr::CRASH_CTL, 1 << 63), Ok(()));
        assert_eq!(check_write(msr::CRASH_CTL, 0), Ok(()));
        assert_eq!(check_write(msr::CRASH_CTL, 1 << 63 | 1), Err(Refusal::ReservedBits(1)));
        assert_eq!(check_write(msr::CRASH_CTL, 1 << 61), Err(Refusal::ReservedBits(1 << 61)));
    }
}
