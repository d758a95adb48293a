//! IA32_APIC_BASE (MSR 0x1B) of a partition's virtual local APIC: its state machine.
//!
//! Layout (Intel SDM Vol. 3A 11.4.4, Figure "IA32_APIC_BASE MSR"; 11.12.1): bit 8 BSP
//! (read-only here), bit 10 EXTD (x2APIC mode), bit 11 EN (APIC global enable), bits 12 and
//! up the base's page frame up to MAXPHYADDR; bits 0-7, 9 and those above MAXPHYADDR are
//! reserved.
//!
//! States and transitions (SDM Vol. 3A 11.12.5, Figure "Local x2APIC State Transitions
//! with IA32_APIC_BASE, INIT, and RESET"; the same rules Linux's KVM applies):
//!
//! | from \ to | disabled (EN=0) | xAPIC (EN=1, EXTD=0) | x2APIC (EN=1, EXTD=1) |
//! |---|---|---|---|
//! | disabled | yes | yes | #GP |
//! | xAPIC | yes | yes | yes |
//! | x2APIC | yes | #GP | yes |
//!
//! EN=0 with EXTD=1 is invalid and always #GP. After RESET: EN=1, EXTD=0 (xAPIC), base
//! 0xFEE00000, BSP set on the boot processor only. INIT keeps the register as it is: "An
//! INIT in this state keeps the x2APIC in the x2APIC mode" (11.12.5.1, x2APIC Transitions
//! From x2APIC Mode), and likewise for the xAPIC and disabled states.
//!
//! Relocation: the base stays at 0xFEE00000. A write that moves it gets #GP (hardware
//! would move the xAPIC page; no partition operating system needs that, and the
//! second-level tables leave exactly that one page unmapped for the emulation).

/// Bit 8: this is the bootstrap processor (read-only).
pub const BSP: u64 = 1 << 8;
/// Bit 10: x2APIC mode.
pub const EXTD: u64 = 1 << 10;
/// Bit 11: the local APIC is (globally) enabled.
pub const EN: u64 = 1 << 11;
/// The architectural default base of the xAPIC register page (SDM 11.4.1), the only one
/// partitions get.
pub const DEFAULT_BASE: u64 = 0xfee0_0000;

/// The three valid states of a local APIC (SDM 11.12.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// EN=0: the APIC's registers are unreachable and its LVTs masked.
    Disabled,
    /// EN=1, EXTD=0: registers through the MMIO page at the base.
    XApic,
    /// EN=1, EXTD=1: registers as MSRs 0x800-0x8ff, the MMIO page unavailable.
    X2Apic,
}

/// Why a WRMSR to IA32_APIC_BASE gets #GP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A reserved bit is set (0-7, 9, or above MAXPHYADDR).
    Reserved,
    /// The base differs from [`DEFAULT_BASE`] (relocation is not supported).
    Relocation,
    /// EXTD=1 with EN=0: the invalid state.
    Invalid,
    /// x2APIC -> xAPIC directly (the APIC must be disabled in between).
    X2ApicToXApic,
    /// disabled -> x2APIC directly (the APIC must be enabled in xAPIC mode first).
    DisabledToX2Apic,
}

/// The register's value after RESET (and at a partition's start): enabled, xAPIC mode, the
/// default base, BSP on the partition's first core.
pub const fn reset(bsp: bool) -> u64 {
    DEFAULT_BASE | EN | if bsp { BSP } else { 0 }
}

/// The state a register value describes (`Disabled` for the invalid EN=0, EXTD=1, which
/// [`write`] never lets in).
pub const fn mode(value: u64) -> Mode {
    match (value & EN != 0, value & EXTD != 0) {
        (false, _) => Mode::Disabled,
        (true, false) => Mode::XApic,
        (true, true) => Mode::X2Apic,
    }
}

/// A WRMSR of `value` while the register holds `current`, on a CPU with `max_phys_bits`
/// physical address bits (CPUID 0x80000008 EAX[7:0]): the new register value, or why the
/// write gets #GP. The BSP bit is read-only: whatever is written, it keeps its value.
pub fn write(current: u64, value: u64, max_phys_bits: u8) -> Result<u64, Refusal> {
    let phys_bits = u32::from(max_phys_bits.clamp(32, 52));
    let reserved = 0xff | (1 << 9) | (u64::MAX << phys_bits);
    if value & reserved != 0 {
        return Err(Refusal::Reserved);
    }
    if value & !0xfff != DEFAULT_BASE {
        return Err(Refusal::Relocation);
    }
    if value & EXTD != 0 && value & EN == 0 {
        return Err(Refusal::Invalid);
    }
    match (mode(current), mode(value)) {
        (Mode::X2Apic, Mode::XApic) => Err(Refusal::X2ApicToXApic),
        (Mode::Disabled, Mode::X2Apic) => Err(Refusal::DisabledToX2Apic),
        _ => Ok((value & !BSP) | (current & BSP)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XAPIC: u64 = DEFAULT_BASE | EN;
    const X2APIC: u64 = DEFAULT_BASE | EN | EXTD;
    const DISABLED: u64 = DEFAULT_BASE;

    #[test]
    fn reset_state_is_xapic_with_bsp_on_first_core_only() {
        assert_eq!(reset(true), 0xfee0_0900);
        assert_eq!(reset(false), 0xfee0_0800);
        assert_eq!(mode(reset(true)), Mode::XApic);
    }

    #[test]
    fn legal_transitions_are_taken() {
        for (from, to) in [
            (XAPIC, X2APIC),
            (XAPIC, DISABLED),
            (XAPIC, XAPIC),
            (X2APIC, DISABLED),
            (X2APIC, X2APIC),
            (DISABLED, XAPIC),
            (DISABLED, DISABLED),
        ] {
            assert_eq!(write(from, to, 39), Ok(to), "{from:#x} -> {to:#x}");
        }
    }

    #[test]
    fn illegal_transitions_get_gp() {
        assert_eq!(write(X2APIC, XAPIC, 39), Err(Refusal::X2ApicToXApic));
        assert_eq!(write(DISABLED, X2APIC, 39), Err(Refusal::DisabledToX2Apic));
        for from in [XAPIC, X2APIC, DISABLED] {
            assert_eq!(write(from, DEFAULT_BASE | EXTD, 39), Err(Refusal::Invalid));
        }
    }

    #[test]
    fn reserved_bits_and_relocation_get_gp() {
        for bit in (0..8).chain([9]) {
            assert_eq!(write(XAPIC, XAPIC | 1 << bit, 39), Err(Refusal::Reserved), "bit {bit}");
        }
        assert_eq!(write(XAPIC, XAPIC | 1 << 39, 39), Err(Refusal::Reserved));
        assert_eq!(write(XAPIC, XAPIC | 1 << 63, 52), Err(Refusal::Reserved));
        assert_eq!(write(XAPIC, 0xfe00_0000 | EN, 39), Err(Refusal::Relocation));
        assert_eq!(write(XAPIC, (1 << 38) | XAPIC, 39), Err(Refusal::Relocation));
    }

    #[test]
    fn bsp_bit_is_read_only() {
        assert_eq!(write(XAPIC | BSP, X2APIC, 39), Ok(X2APIC | BSP));
        assert_eq!(write(XAPIC, XAPIC | BSP, 39), Ok(XAPIC));
    }

    #[test]
    fn invalid_state_reads_as_disabled() {
        assert_eq!(mode(DEFAULT_BASE | EXTD), Mode::Disabled);
    }
}
