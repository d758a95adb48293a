//! Control registers as a partition sees them: which CR0 and CR4 bits the hypervisor must
//! own (VT-x fixes some of them while a guest runs), and how a guest's MOV to CR0 or CR4
//! that exits is answered, as the processor would answer it.
//!
//! VT-x (SDM Vol. 3C 24.6.6, 25.3 and Appendix A.7/A.8): in VMX operation the bits set in
//! IA32_VMX_CR0_FIXED0 / CR4_FIXED0 must be 1 and those clear in the FIXED1 MSRs must be 0
//! (with "unrestricted guest", CR0.PE and CR0.PG are free). The guest/host mask hands each
//! such bit to the hypervisor, and the read shadow gives the guest its own value: it reads
//! what it wrote, and a write that changes an owned bit exits to [`cr0_write`] /
//! [`cr4_write`]. Every other bit is the guest's and never exits.
//!
//! SVM fixes no CR0/CR4 bit (APM Vol. 2 15.5.1 checks only combinations a CPU would refuse
//! anyway), so no control register write exits there. SVM does intercept EFER, whose SVME
//! bit VMRUN needs in the guest's copy; a partition's EFER write is answered by
//! [`efer_write`].

/// CR0 bits (SDM Vol. 3A 2.5).
pub mod cr0 {
    /// Protection enable.
    pub const PE: u64 = 1 << 0;
    /// Numeric error (native x87 error reporting).
    pub const NE: u64 = 1 << 5;
    /// Not write-through.
    pub const NW: u64 = 1 << 29;
    /// Cache disable.
    pub const CD: u64 = 1 << 30;
    /// Paging.
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits (SDM Vol. 3A 2.5).
pub mod cr4 {
    /// Physical address extension.
    pub const PAE: u64 = 1 << 5;
    /// Performance-monitoring counter enable (RDPMC at any privilege level).
    pub const PCE: u64 = 1 << 8;
    /// VMX enable: CPUID hides VMX from partitions, so setting it is refused with #GP, as
    /// on a processor without VMX.
    pub const VMXE: u64 = 1 << 13;
}

/// EFER bits (SDM Vol. 3A 2.2.1, APM Vol. 2 3.1.7).
pub mod efer {
    /// System call extensions (SYSCALL/SYSRET).
    pub const SCE: u64 = 1 << 0;
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// Long mode active.
    pub const LMA: u64 = 1 << 10;
    /// No-execute enable.
    pub const NXE: u64 = 1 << 11;
}

/// The CR0 or CR4 bits the hypervisor owns on VT-x: the must-be-one bits of `fixed0` and
/// the must-be-zero bits of `fixed1` among the architectural low 32 (the upper half is
/// reserved and the processor refuses it itself). With "unrestricted guest" PE and PG are
/// the guest's even where FIXED0 lists them (SDM 25.6.6, A.7).
pub fn owned_bits(fixed0: u64, fixed1: u64, unrestricted: bool, is_cr0: bool) -> u64 {
    let free = if is_cr0 && unrestricted { cr0::PE | cr0::PG } else { 0 };
    ((fixed0 & !free) | !fixed1) & 0xffff_ffff
}

/// The value the hardware register holds for a guest value: owned must-be-one bits set,
/// must-be-zero bits clear.
pub fn hardware_value(guest: u64, fixed0: u64, fixed1: u64, owned: u64) -> u64 {
    (guest | (fixed0 & owned)) & (fixed1 | !owned)
}

/// A MOV to CR0 the processor accepts, with what it changes beyond CR0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cr0Change {
    /// The new CR0 as the guest sees it.
    pub value: u64,
    /// EFER.LMA after the write: paging turned on with EFER.LME set enters IA-32e mode,
    /// paging turned off leaves it (SDM Vol. 3A 10.8.5).
    pub long_mode_active: bool,
}

/// The guest's MOV to CR0 of `value` with its current CR0 (`current`, as the guest sees
/// it), EFER, CR4 and whether it runs 64-bit code: the new state, or `None` for #GP(0), as
/// the SDM's MOV to CR0 prescribes (Vol. 2B "MOV—Move to/from Control Registers",
/// Vol. 3A 2.5 and 10.8.5): reserved bits 63:32 set, NW without CD, PG without PE,
/// paging turned on for long mode without CR4.PAE, or paging turned off in 64-bit code.
pub fn cr0_write(current: u64, value: u64, efer_value: u64, cr4_value: u64, code64: bool) -> Option<Cr0Change> {
    if value >> 32 != 0
        || (value & cr0::NW != 0 && value & cr0::CD == 0)
        || (value & cr0::PG != 0 && value & cr0::PE == 0)
    {
        return None;
    }
    let paging_on = current & cr0::PG == 0 && value & cr0::PG != 0;
    let paging_off = current & cr0::PG != 0 && value & cr0::PG == 0;
    if paging_on && efer_value & efer::LME != 0 && cr4_value & cr4::PAE == 0 {
        return None;
    }
    if paging_off && code64 {
        return None;
    }
    let long_mode_active = value & cr0::PG != 0 && efer_value & efer::LME != 0;
    Some(Cr0Change { value, long_mode_active })
}

/// The guest's MOV to CR4 of `value` that exited: `None` for #GP(0) when it sets VMXE
/// (CPUID hides VMX, SDM Vol. 3C 24.1: CR4.VMXE is reserved without it) or, in IA-32e
/// mode, clears PAE (Vol. 3A 10.8.5); otherwise the value the guest now sees.
pub fn cr4_write(value: u64, long_mode_active: bool) -> Option<u64> {
    if value & cr4::VMXE != 0 || (long_mode_active && value & cr4::PAE == 0) {
        return None;
    }
    Some(value)
}

/// A partition's write of `value` to EFER, where the backend intercepts it (SVM): the new
/// EFER, or `None` for #GP, as WRMSR decides on a CPU without SVM (APM Vol. 2 3.1.7):
/// only SCE, LME, LMA and NXE (where the CPU has NX, `nx`) may be set; SVME is refused
/// because CPUID does not offer SVM to partitions. LME cannot change while paging is on
/// (CR0.PG in `cr0_value`); LMA is read-only and keeps its value, whatever is written.
pub fn efer_write(current: u64, value: u64, cr0_value: u64, nx: bool) -> Option<u64> {
    let nxe = if nx { efer::NXE } else { 0 };
    if value & !(efer::SCE | efer::LME | efer::LMA | nxe) != 0 {
        return None;
    }
    if cr0_value & cr0::PG != 0 && (value ^ current) & efer::LME != 0 {
        return None;
    }
    Some((value & !efer::LMA) | (current & efer::LMA))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Bochs corei7_skylake_x and typical hardware: CR0 FIXED0 = PE | NE | PG, FIXED1 all
    // ones in the low half; CR4 FIXED0 = VMXE, FIXED1 = the supported bits.
    const CR0_FIXED0: u64 = 0x8000_0021;
    const CR0_FIXED1: u64 = 0xffff_ffff;
    const CR4_FIXED0: u64 = 0x2000;
    const CR4_FIXED1: u64 = 0x0037_67ff;

    #[test]
    fn owned_bits_are_the_fixed_ones() {
        assert_eq!(owned_bits(CR0_FIXED0, CR0_FIXED1, true, true), cr0::NE);
        assert_eq!(owned_bits(CR0_FIXED0, CR0_FIXED1, false, true), cr0::PE | cr0::NE | cr0::PG);
        let cr4_owned = owned_bits(CR4_FIXED0, CR4_FIXED1, true, false);
        assert_ne!(cr4_owned & cr4::VMXE, 0);
        // Supported bits stay the guest's.
        assert_eq!(cr4_owned & (cr4::PAE | cr4::PCE | (1 << 18)), 0);
    }

    #[test]
    fn hardware_value_keeps_fixed_bits() {
        let owned = owned_bits(CR0_FIXED0, CR0_FIXED1, true, true);
        // The guest clears NE: the hardware keeps it, PE/PG follow the guest.
        assert_eq!(hardware_value(cr0::PE | cr0::PG, CR0_FIXED0, CR0_FIXED1, owned), cr0::PE | cr0::PG | cr0::NE);
        assert_eq!(hardware_value(0x10, CR0_FIXED0, CR0_FIXED1, owned), 0x30);
        let owned4 = owned_bits(CR4_FIXED0, CR4_FIXED1, true, false);
        assert_eq!(hardware_value(cr4::PAE, CR4_FIXED0, CR4_FIXED1, owned4), cr4::PAE | cr4::VMXE);
    }

    #[test]
    fn cr0_writes_the_processor_accepts() {
        let long = cr0::PE | cr0::PG | cr0::NE | 0x10 | (1 << 16);
        let efer_long = efer::LME | efer::LMA;
        // Clearing and setting NE in 64-bit mode.
        assert_eq!(
            cr0_write(long, long & !cr0::NE, efer_long, cr4::PAE, true),
            Some(Cr0Change { value: long & !cr0::NE, long_mode_active: true })
        );
        assert_eq!(cr0_write(long & !cr0::NE, long, efer_long, cr4::PAE, true).map(|c| c.value), Some(long));
        // Caches off: CD with NW, CD alone.
        assert!(cr0_write(long, long | cr0::CD | cr0::NW, efer_long, cr4::PAE, true).is_some());
        assert!(cr0_write(long, long | cr0::CD, efer_long, cr4::PAE, true).is_some());
        // Entering long mode: LMA follows.
        assert_eq!(
            cr0_write(cr0::PE | cr0::NE, cr0::PE | cr0::NE | cr0::PG, efer::LME, cr4::PAE, false)
                .map(|c| c.long_mode_active),
            Some(true)
        );
        // Leaving paging from compatibility/protected code clears LMA.
        assert_eq!(
            cr0_write(long, cr0::PE | cr0::NE, efer_long, cr4::PAE, false).map(|c| c.long_mode_active),
            Some(false)
        );
    }

    #[test]
    fn cr0_writes_the_processor_refuses() {
        let long = cr0::PE | cr0::PG | cr0::NE;
        let efer_long = efer::LME | efer::LMA;
        assert_eq!(cr0_write(long, long | (1 << 32), efer_long, cr4::PAE, true), None);
        assert_eq!(cr0_write(long, long | cr0::NW, efer_long, cr4::PAE, true), None);
        assert_eq!(cr0_write(cr0::NE, cr0::NE | cr0::PG, 0, 0, false), None);
        assert_eq!(cr0_write(cr0::PE, cr0::PE | cr0::PG, efer::LME, 0, false), None);
        assert_eq!(cr0_write(long, cr0::PE, efer_long, cr4::PAE, true), None);
    }

    #[test]
    fn cr4_writes() {
        assert_eq!(cr4_write(cr4::PAE | cr4::VMXE, true), None);
        assert_eq!(cr4_write(cr4::VMXE, false), None);
        assert_eq!(cr4_write(0, true), None);
        assert_eq!(cr4_write(cr4::PAE | cr4::PCE, true), Some(cr4::PAE | cr4::PCE));
    }

    #[test]
    fn efer_write_takes_only_what_a_cpu_without_svm_has() {
        const SVME: u64 = 1 << 12;
        let long = efer::LME | efer::LMA;
        // SCE and NXE come and go; NXE only where the CPU has NX.
        assert_eq!(efer_write(long, long | efer::SCE | efer::NXE, cr0::PG, true), Some(long | efer::SCE | efer::NXE));
        assert_eq!(efer_write(long, long | efer::NXE, cr0::PG, false), None);
        // SVME and every other bit is #GP.
        assert_eq!(efer_write(long, long | SVME, cr0::PG, true), None);
        assert_eq!(efer_write(0, 1 << 1, 0, true), None);
        assert_eq!(efer_write(0, 1 << 63, 0, true), None);
    }

    #[test]
    fn efer_write_keeps_lme_while_paging_and_lma_read_only() {
        // LME may change with paging off, not with paging on.
        assert_eq!(efer_write(0, efer::LME, cr0::PE, true), Some(efer::LME));
        assert_eq!(efer_write(0, efer::LME, cr0::PE | cr0::PG, true), None);
        assert_eq!(efer_write(efer::LME | efer::LMA, 0, cr0::PG, true), None);
        // LMA keeps its value, whatever is written.
        assert_eq!(efer_write(efer::LME, efer::LME | efer::LMA, 0, true), Some(efer::LME));
        assert_eq!(efer_write(efer::LME | efer::LMA, efer::LME, cr0::PG, true), Some(efer::LME | efer::LMA));
    }
}
