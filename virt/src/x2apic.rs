//! The x2APIC register map as a partition sees it: which registers exist, which can be
//! read or written, and which bits a write may set (Intel SDM Vol. 3, 11.12.1.2 and Table
//! 11-6 for the map; 11.5.1 Figure 11-8 for the LVTs; 11.12.9 for the ICR; 11.9 Figure
//! 11-23 for the spurious-interrupt vector register; 11.8.3.1 for the TPR; 11.5.4 for the
//! timer; 11.5.3 for the ESR; 11.12.11 for SELF IPI).
//!
//! In x2APIC mode the hardware answers a WRMSR that sets a reserved bit, a write to a
//! read-only register and any access to a register that does not exist with #GP
//! (11.12.1.2), and so does the hypervisor: where it performs the access itself (the
//! checked registers, and every register where it emulates the x2APIC on an xAPIC) it
//! applies this map first, so nothing a partition writes reaches the APIC unless real
//! x2APIC hardware would have taken it, and nothing reaches the host CPU that could fault
//! there.
//!
//! On top of the architecture, one policy of the hypervisor's: an LVT entry may use only
//! the fixed delivery mode unless it is masked. NMI, SMI, INIT and ExtINT deliveries are
//! the hypervisor's and the firmware's, not a partition's; the modes the SDM marks
//! reserved are refused even masked, as hardware may refuse them.

/// What this local APIC has, beyond the registers every x2APIC has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// Index of the last LVT entry (version register bits 23:16, 11.4.8): 5 means timer to
    /// error, 6 adds CMCI.
    pub max_lvt: u8,
    /// EOI-broadcast suppression may be enabled in the SVR (version register bit 24).
    pub directed_eoi: bool,
    /// The timer has TSC-deadline mode (CPUID.1:ECX[24], 11.5.4.1).
    pub tsc_deadline: bool,
}

impl Features {
    /// From the APIC version register and CPUID's TSC-deadline bit.
    #[inline]
    pub const fn new(version: u32, tsc_deadline: bool) -> Self {
        Features { max_lvt: (version >> 16) as u8, directed_eoi: version & (1 << 24) != 0, tsc_deadline }
    }
}

/// An x2APIC register (MSR `0x800 + offset`, Table 11-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Register {
    /// 0x802, read-only in x2APIC mode.
    Id,
    /// 0x803.
    Version,
    /// 0x808, task priority.
    Tpr,
    /// 0x80A, processor priority (read-only).
    Ppr,
    /// 0x80B, write-only.
    Eoi,
    /// 0x80D, logical destination (read-only in x2APIC mode).
    Ldr,
    /// 0x80F, spurious-interrupt vector.
    Svr,
    /// 0x810-0x817, in-service (read-only).
    Isr,
    /// 0x818-0x81F, trigger mode (read-only).
    Tmr,
    /// 0x820-0x827, interrupt request (read-only).
    Irr,
    /// 0x828, error status.
    Esr,
    /// 0x82F, LVT corrected machine-check interrupt (only with [`Features::max_lvt`] >= 6).
    LvtCmci,
    /// 0x830, interrupt command (one 64-bit register in x2APIC mode).
    Icr,
    /// 0x832.
    LvtTimer,
    /// 0x833.
    LvtThermal,
    /// 0x834.
    LvtPerformance,
    /// 0x835.
    LvtLint0,
    /// 0x836.
    LvtLint1,
    /// 0x837.
    LvtError,
    /// 0x838.
    InitialCount,
    /// 0x839 (read-only).
    CurrentCount,
    /// 0x83E.
    DivideConfiguration,
    /// 0x83F, write-only.
    SelfIpi,
}

/// Why a write is refused (the partition gets #GP for each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such register on this APIC.
    Missing,
    /// The register cannot be written.
    ReadOnly,
    /// These bits are reserved (must be 0 in x2APIC mode).
    ReservedBits(u64),
    /// An unmasked LVT entry with a delivery mode other than fixed, or a reserved mode.
    DeliveryMode(u8),
    /// The timer mode is reserved (0b11) or TSC-deadline without that feature.
    TimerMode(u8),
}

/// x2APIC register writes that pass through the MSR bitmap where the CPU has an x2APIC:
/// those without a delivery-mode field, whose reserved bits the x2APIC hardware itself
/// refuses with #GP in the guest (SDM 11.12.1.2). TPR, EOI, SVR, ESR, the LVT timer,
/// timer initial count and divide configuration, SELF IPI. Everything else (ICR, the LVTs
/// with a delivery mode, LVT error) exits and is checked against this map; on a CPU
/// without an x2APIC every write exits and is checked.
pub const WRITES_WITHOUT_EXIT: [u32; 8] = [0x808, 0x80b, 0x80f, 0x828, 0x832, 0x838, 0x83e, 0x83f];

const VECTOR: u64 = 0xff;
const DELIVERY_MODE: u64 = 0b111 << 8;
/// Read-only bits a read-modify-write may carry back: LVT delivery status (bit 12) and the
/// LINTs' remote IRR (bit 14) are ignored on write.
const DELIVERY_STATUS: u64 = 1 << 12;
const POLARITY_REMOTE_IRR_TRIGGER: u64 = 0b111 << 13;
const MASK: u64 = 1 << 16;
const TIMER_MODE: u64 = 0b11 << 17;

impl Register {
    /// The register at `msr`, if this APIC has one there.
    #[inline]
    pub const fn at(msr: u32, features: &Features) -> Option<Register> {
        Some(match msr {
            0x802 => Register::Id,
            0x803 => Register::Version,
            0x808 => Register::Tpr,
            0x80a => Register::Ppr,
            0x80b => Register::Eoi,
            0x80d => Register::Ldr,
            0x80f => Register::Svr,
            0x810..=0x817 => Register::Isr,
            0x818..=0x81f => Register::Tmr,
            0x820..=0x827 => Register::Irr,
            0x828 => Register::Esr,
            0x82f if features.max_lvt >= 6 => Register::LvtCmci,
            0x830 => Register::Icr,
            0x832 => Register::LvtTimer,
            0x833 => Register::LvtThermal,
            0x834 => Register::LvtPerformance,
            0x835 => Register::LvtLint0,
            0x836 => Register::LvtLint1,
            0x837 => Register::LvtError,
            0x838 => Register::InitialCount,
            0x839 => Register::CurrentCount,
            0x83e => Register::DivideConfiguration,
            0x83f => Register::SelfIpi,
            _ => return None,
        })
    }

    /// Whether RDMSR of the register is allowed (EOI and SELF IPI are write-only).
    #[inline]
    pub const fn readable(self) -> bool {
        !matches!(self, Register::Eoi | Register::SelfIpi)
    }

    /// The bits a write may set, or `None` for a read-only register.
    #[inline]
    pub const fn writable_bits(self, features: &Features) -> Option<u64> {
        let lvt = VECTOR | DELIVERY_MODE | DELIVERY_STATUS | MASK;
        Some(match self {
            Register::Id
            | Register::Version
            | Register::Ppr
            | Register::Ldr
            | Register::Isr
            | Register::Tmr
            | Register::Irr
            | Register::CurrentCount => return None,
            // Priority class and subclass (11.8.3.1).
            Register::Tpr => 0xff,
            // "WRMSR to the EOI register with a non-zero value causes #GP" (11.12.1.2), and
            // the same for the ESR (11.5.3).
            Register::Eoi | Register::Esr => 0,
            // Vector, APIC enable, focus processor checking (bit 9, on the processors that
            // have it; KVM and Bochs accept it too); EOI-broadcast suppression where the
            // version register offers it (Figure 11-23).
            Register::Svr => 0x3ff | if features.directed_eoi { 1 << 12 } else { 0 },
            Register::LvtCmci | Register::LvtThermal | Register::LvtPerformance => lvt,
            Register::LvtLint0 | Register::LvtLint1 => lvt | POLARITY_REMOTE_IRR_TRIGGER,
            // No delivery-mode field: bits 10:8 are reserved (Figure 11-8).
            Register::LvtTimer => VECTOR | DELIVERY_STATUS | MASK | TIMER_MODE,
            Register::LvtError => VECTOR | DELIVERY_STATUS | MASK,
            // Vector, delivery mode, destination mode, level, trigger mode, shorthand, and the
            // 32-bit destination; bit 12 (delivery status) is gone in x2APIC mode (11.12.9).
            Register::Icr => 0xffff_ffff_000c_cfff,
            Register::InitialCount => 0xffff_ffff,
            // Bits 0, 1 and 3 (Figure 11-10).
            Register::DivideConfiguration => 0b1011,
            Register::SelfIpi => VECTOR,
        })
    }

    /// Whether the register is an LVT entry with a delivery-mode field.
    #[inline]
    pub const fn has_delivery_mode(self) -> bool {
        matches!(
            self,
            Register::LvtCmci
                | Register::LvtThermal
                | Register::LvtPerformance
                | Register::LvtLint0
                | Register::LvtLint1
        )
    }

    /// Checks a partition's WRMSR of `value` to this register.
    #[inline]
    pub const fn check_write(self, value: u64, features: &Features) -> Result<(), Refusal> {
        let Some(allowed) = self.writable_bits(features) else { return Err(Refusal::ReadOnly) };
        if value & !allowed != 0 {
            return Err(Refusal::ReservedBits(value & !allowed));
        }
        if self.has_delivery_mode() {
            let mode = ((value & DELIVERY_MODE) >> 8) as u8;
            // 001, 011 and 110 are reserved (Figure 11-8); the rest only masked.
            let reserved = matches!(mode, 0b001 | 0b011 | 0b110);
            if reserved || (mode != 0 && value & MASK == 0) {
                return Err(Refusal::DeliveryMode(mode));
            }
        }
        if let Register::LvtTimer = self {
            let mode = ((value & TIMER_MODE) >> 17) as u8;
            if mode == 0b11 || (mode == 0b10 && !features.tsc_deadline) {
                return Err(Refusal::TimerMode(mode));
            }
        }
        Ok(())
    }
}

/// Checks a partition's WRMSR of `value` to x2APIC register MSR `msr`.
#[inline]
pub const fn check_write(msr: u32, value: u64, features: &Features) -> Result<Register, Refusal> {
    let Some(register) = Register::at(msr, features) else { return Err(Refusal::Missing) };
    match register.check_write(value, features) {
        Ok(()) => Ok(register),
        Err(refusal) => Err(refusal),
    }
}

/// Whether a partition's RDMSR of x2APIC register MSR `msr` is allowed.
#[inline]
pub const fn readable(msr: u32, features: &Features) -> bool {
    match Register::at(msr, features) {
        Some(register) => register.readable(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bochs `corei7_skylake_x`: version 0x14, six LVT entries (no CMCI), TSC deadline.
    const SKYLAKE: Features = Features { max_lvt: 5, directed_eoi: false, tsc_deadline: true };
    /// A recent Intel CPU: seven LVT entries, directed EOI.
    const CMCI: Features = Features::new(0x0106_0015, true);
    /// An AMD xAPIC without TSC deadline.
    const AMD: Features = Features::new(0x8005_0010, false);

    #[test]
    fn features_decode_the_version_register() {
        assert_eq!(CMCI, Features { max_lvt: 6, directed_eoi: true, tsc_deadline: true });
        assert_eq!(AMD, Features { max_lvt: 5, directed_eoi: false, tsc_deadline: false });
    }

    #[test]
    fn only_the_registers_of_table_11_6_exist() {
        let existing: std::vec::Vec<u32> = (0x800..=0x8ff).filter(|&m| Register::at(m, &CMCI).is_some()).collect();
        let mut expected = std::vec![0x802, 0x803, 0x808, 0x80a, 0x80b, 0x80d, 0x80f];
        expected.extend(0x810..=0x828);
        expected.extend([0x82f, 0x830, 0x832, 0x833, 0x834, 0x835, 0x836, 0x837, 0x838, 0x839, 0x83e, 0x83f]);
        assert_eq!(existing, expected);
        // 0x831 (the xAPIC's ICR high half) is not an x2APIC register; CMCI only with 7 LVTs.
        assert_eq!(check_write(0x831, 0, &CMCI), Err(Refusal::Missing));
        assert_eq!(check_write(0x82f, MASK, &SKYLAKE), Err(Refusal::Missing));
        assert_eq!(check_write(0x82f, MASK, &CMCI), Ok(Register::LvtCmci));
        assert!(!readable(0x82f, &SKYLAKE) && readable(0x82f, &CMCI));
        assert!(!readable(0x804, &CMCI) && !readable(0x840, &CMCI) && !readable(0x7ff, &CMCI));
    }

    #[test]
    fn write_only_and_read_only_registers() {
        assert!(!readable(0x80b, &CMCI) && !readable(0x83f, &CMCI));
        for msr in [0x802, 0x803, 0x80a, 0x80d, 0x810, 0x81f, 0x827, 0x839] {
            assert!(readable(msr, &CMCI), "{msr:#x}");
            assert_eq!(check_write(msr, 0, &CMCI), Err(Refusal::ReadOnly), "{msr:#x}");
        }
    }

    #[test]
    fn reserved_bits_are_refused() {
        assert_eq!(check_write(0x808, 0xff, &SKYLAKE), Ok(Register::Tpr));
        assert_eq!(check_write(0x808, 0x100, &SKYLAKE), Err(Refusal::ReservedBits(0x100)));
        assert_eq!(check_write(0x80b, 0, &SKYLAKE), Ok(Register::Eoi));
        assert_eq!(check_write(0x80b, 1, &SKYLAKE), Err(Refusal::ReservedBits(1)));
        assert_eq!(check_write(0x828, 0, &SKYLAKE), Ok(Register::Esr));
        assert_eq!(check_write(0x828, 4, &SKYLAKE), Err(Refusal::ReservedBits(4)));
        assert_eq!(check_write(0x80f, 0x1ff, &SKYLAKE), Ok(Register::Svr));
        assert_eq!(check_write(0x80f, 0x11ff, &SKYLAKE), Err(Refusal::ReservedBits(0x1000)));
        assert_eq!(check_write(0x80f, 0x11ff, &CMCI), Ok(Register::Svr));
        assert_eq!(check_write(0x838, u64::from(u32::MAX), &SKYLAKE), Ok(Register::InitialCount));
        assert_eq!(check_write(0x838, 1 << 32, &SKYLAKE), Err(Refusal::ReservedBits(1 << 32)));
        assert_eq!(check_write(0x83e, 0b1011, &SKYLAKE), Ok(Register::DivideConfiguration));
        assert_eq!(check_write(0x83e, 0b0100, &SKYLAKE), Err(Refusal::ReservedBits(0b0100)));
        assert_eq!(check_write(0x83f, 0x40, &SKYLAKE), Ok(Register::SelfIpi));
        assert_eq!(check_write(0x83f, 0x140, &SKYLAKE), Err(Refusal::ReservedBits(0x100)));
        // Every register: any bit of 63:32 but the ICR's destination is reserved.
        for msr in 0x800..=0x8ff {
            if let Ok(register) = check_write(msr, 0, &CMCI) {
                let high = check_write(msr, 1 << 40, &CMCI);
                assert_eq!(high.is_ok(), register == Register::Icr, "{msr:#x}");
            }
        }
    }

    #[test]
    fn lvt_delivery_modes() {
        // Fixed, unmasked: allowed; NMI unmasked: refused; NMI masked: allowed.
        assert_eq!(check_write(0x835, 0x40, &SKYLAKE), Ok(Register::LvtLint0));
        assert_eq!(check_write(0x835, 0x400, &SKYLAKE), Err(Refusal::DeliveryMode(4)));
        assert_eq!(check_write(0x835, 0x400 | MASK, &SKYLAKE), Ok(Register::LvtLint0));
        assert_eq!(check_write(0x836, 0x700, &SKYLAKE), Err(Refusal::DeliveryMode(7)));
        assert_eq!(check_write(0x833, 0x200, &SKYLAKE), Err(Refusal::DeliveryMode(2)));
        // Reserved modes even masked.
        for mode in [1u64, 3, 6] {
            assert_eq!(check_write(0x834, (mode << 8) | MASK, &SKYLAKE), Err(Refusal::DeliveryMode(mode as u8)));
        }
        // A masked LINT0 with reserved high bits (the observed host #GP) is refused.
        assert_eq!(check_write(0x835, MASK | (1 << 20), &SKYLAKE), Err(Refusal::ReservedBits(1 << 20)));
        assert_eq!(check_write(0x835, MASK | (1 << 32), &SKYLAKE), Err(Refusal::ReservedBits(1 << 32)));
        // LINT polarity, remote IRR, trigger; not on the other LVTs.
        assert_eq!(check_write(0x836, 0xe000 | 0x30, &SKYLAKE), Ok(Register::LvtLint1));
        assert_eq!(check_write(0x833, 0x8000 | 0x30, &SKYLAKE), Err(Refusal::ReservedBits(0x8000)));
        // Delivery status is read-only but may be written back.
        assert_eq!(check_write(0x837, DELIVERY_STATUS | MASK | 0x30, &SKYLAKE), Ok(Register::LvtError));
    }

    #[test]
    fn lvt_timer_and_error_have_no_delivery_mode() {
        for msr in [0x832, 0x837] {
            for mode in 1..8u64 {
                let value = (mode << 8) | 0x40;
                assert_eq!(check_write(msr, value, &SKYLAKE), Err(Refusal::ReservedBits(mode << 8)), "{msr:#x}");
                assert!(check_write(msr, value | MASK, &SKYLAKE).is_err(), "{msr:#x}");
            }
        }
        // Periodic and one-shot; TSC deadline only with the feature; mode 3 reserved.
        assert_eq!(check_write(0x832, (1 << 17) | 0x40, &AMD), Ok(Register::LvtTimer));
        assert_eq!(check_write(0x832, (2 << 17) | 0x40, &SKYLAKE), Ok(Register::LvtTimer));
        assert_eq!(check_write(0x832, (2 << 17) | 0x40, &AMD), Err(Refusal::TimerMode(2)));
        assert_eq!(check_write(0x832, (3 << 17) | MASK, &SKYLAKE), Err(Refusal::TimerMode(3)));
    }

    #[test]
    fn icr_reserved_bits() {
        assert_eq!(check_write(0x830, (1 << 32) | 0x4500, &SKYLAKE), Ok(Register::Icr));
        assert_eq!(check_write(0x830, (3 << 18) | 0xc0ff, &SKYLAKE), Ok(Register::Icr));
        for bit in [12, 13, 16, 17, 20, 31] {
            assert_eq!(check_write(0x830, 1 << bit, &SKYLAKE), Err(Refusal::ReservedBits(1 << bit)), "bit {bit}");
        }
    }

    #[test]
    fn writes_without_exit_are_writable_registers_without_a_delivery_mode() {
        for msr in WRITES_WITHOUT_EXIT {
            let register = Register::at(msr, &AMD).expect("exists on every x2APIC");
            assert!(register.writable_bits(&AMD).is_some() && !register.has_delivery_mode(), "{msr:#x}");
            assert_ne!(register, Register::Icr);
        }
    }
}
