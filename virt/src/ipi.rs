//! Which IPIs a partition may send through its local APIC's ICR, and to whom: the policy,
//! the same in xAPIC and x2APIC mode (the ICR in x2APIC format: destination in bits
//! 63:32, SDM Vol. 3A 11.12.9; the xAPIC page converts its two halves to it).
//!
//! - Delivery modes: fixed, INIT and start-up. NMI, SMI, lowest priority and ExtINT are
//!   refused: NMIs are the hypervisor's signal, SMIs the firmware's, and lowest priority
//!   needs arbitration across cores the partition may not own.
//! - Destination mode: physical only. Logical destinations are refused: with one vCPU per
//!   core no partition needs them, and flat/cluster matching against the partition's LDRs
//!   would add per-vCPU state for nothing.
//! - No shorthand: the destination must be one of the partition's cores.
//! - Shorthands (SDM Table "Valid Combinations for the Pentium 4 and Intel Xeon
//!   Processors' Local xAPIC Interrupt Command Register"): "self" with fixed delivery
//!   only; "all including self" fixed only; "all excluding self" fixed, INIT or start-up.
//!   Both "all" shorthands mean the partition's own cores: the kernel sends one IPI to
//!   each; they never reach another partition.
//! - INIT level de-assert (delivery mode INIT, level 0) is accepted and does nothing: only
//!   Pentium and P6 processors act on it (11.6.1), and Linux still sends it.

/// What an accepted ICR write delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A fixed interrupt with this vector (and the ICR's trigger and level bits).
    Fixed,
    /// INIT: the target resets and waits for a start-up IPI.
    Init,
    /// A start-up IPI with this vector (the target starts at `vector << 12`).
    Startup(u8),
    /// Nothing (INIT level de-assert).
    Nothing,
}

/// Who receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targets {
    /// The core with this APIC ID (one of the partition's, checked).
    One(u32),
    /// The sender itself.
    Sender,
    /// Every core of the partition, the sender too or not.
    AllOwn {
        /// Whether the sender is included ("all including self").
        including_sender: bool,
    },
}

/// Why an ICR write is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// NMI, SMI, lowest priority, ExtINT or a reserved delivery mode.
    DeliveryMode,
    /// Logical destination mode.
    LogicalDestination,
    /// A physical destination that is not one of the partition's cores.
    NotOwnCore,
    /// INIT or start-up with the "self" or "all including self" shorthand.
    IncludesSender,
}

impl Refusal {
    /// The reason as the kernel's log line gives it.
    pub const fn describe(self) -> &'static str {
        match self {
            Refusal::DeliveryMode => "delivery mode reserved for the hypervisor",
            Refusal::LogicalDestination => "logical destination mode is not supported",
            Refusal::NotOwnCore => "not one of its cores",
            Refusal::IncludesSender => "INIT and start-up IPIs cannot include the sender",
        }
    }
}

/// The ICR's delivery-mode field (bits 10:8).
pub const fn delivery_mode(icr: u64) -> u64 {
    (icr >> 8) & 0b111
}

/// The ICR's destination-shorthand field (bits 19:18).
pub const fn shorthand(icr: u64) -> u64 {
    (icr >> 18) & 0b11
}

/// Decides an ICR write; `own_core(apic_id)` says whether a physical destination is one of
/// the partition's cores.
pub fn plan(icr: u64, own_core: impl Fn(u32) -> bool) -> Result<(Delivery, Targets), Refusal> {
    const LOGICAL: u64 = 1 << 11;
    const LEVEL_ASSERT: u64 = 1 << 14;
    let delivery = match delivery_mode(icr) {
        0 => Delivery::Fixed,
        5 if icr & LEVEL_ASSERT == 0 => return Ok((Delivery::Nothing, Targets::Sender)),
        5 => Delivery::Init,
        6 => Delivery::Startup(icr as u8),
        _ => return Err(Refusal::DeliveryMode),
    };
    let targets = match shorthand(icr) {
        0 if icr & LOGICAL != 0 => return Err(Refusal::LogicalDestination),
        0 => {
            let destination = (icr >> 32) as u32;
            if !own_core(destination) {
                return Err(Refusal::NotOwnCore);
            }
            Targets::One(destination)
        }
        1 | 2 if delivery != Delivery::Fixed => return Err(Refusal::IncludesSender),
        1 => Targets::Sender,
        2 => Targets::AllOwn { including_sender: true },
        _ => Targets::AllOwn { including_sender: false },
    };
    Ok((delivery, targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: [u32; 2] = [1, 2];

    fn decide(icr: u64) -> Result<(Delivery, Targets), Refusal> {
        plan(icr, |id| OWN.contains(&id))
    }

    #[test]
    fn physical_ipis_to_own_cores_only() {
        assert_eq!(decide((2 << 32) | 0x40), Ok((Delivery::Fixed, Targets::One(2))));
        assert_eq!(decide((2 << 32) | 0x4500), Ok((Delivery::Init, Targets::One(2))));
        assert_eq!(decide((2 << 32) | 0x4610), Ok((Delivery::Startup(0x10), Targets::One(2))));
        assert_eq!(decide(0x40), Err(Refusal::NotOwnCore));
        assert_eq!(decide((0xff << 32) | 0x40), Err(Refusal::NotOwnCore));
        assert_eq!(decide((1 << 32) | 0x840), Err(Refusal::LogicalDestination));
    }

    #[test]
    fn delivery_modes_of_the_hypervisor_are_refused() {
        for mode in [1u64, 2, 3, 4, 7] {
            assert_eq!(decide((2 << 32) | (mode << 8) | 0x40), Err(Refusal::DeliveryMode), "mode {mode}");
            assert_eq!(decide((0b11 << 18) | (mode << 8) | 0x40), Err(Refusal::DeliveryMode), "mode {mode}");
        }
    }

    #[test]
    fn shorthands_stay_within_the_partition() {
        assert_eq!(decide((0b01 << 18) | 0x41), Ok((Delivery::Fixed, Targets::Sender)));
        assert_eq!(decide((0b10 << 18) | 0x41), Ok((Delivery::Fixed, Targets::AllOwn { including_sender: true })));
        assert_eq!(decide((0b11 << 18) | 0x41), Ok((Delivery::Fixed, Targets::AllOwn { including_sender: false })));
        assert_eq!(decide((0b11 << 18) | 0x4500), Ok((Delivery::Init, Targets::AllOwn { including_sender: false })));
        assert_eq!(
            decide((0b11 << 18) | 0x4608),
            Ok((Delivery::Startup(8), Targets::AllOwn { including_sender: false }))
        );
        // The destination field is ignored with a shorthand (not checked against the cores).
        assert_eq!(
            decide((0x7f << 32) | (0b11 << 18) | 0x41),
            Ok((Delivery::Fixed, Targets::AllOwn { including_sender: false }))
        );
        for shorthand in [0b01u64, 0b10] {
            assert_eq!(decide((shorthand << 18) | 0x4500), Err(Refusal::IncludesSender));
            assert_eq!(decide((shorthand << 18) | 0x4608), Err(Refusal::IncludesSender));
        }
    }

    #[test]
    fn init_deassert_does_nothing() {
        assert_eq!(decide(0x8500), Ok((Delivery::Nothing, Targets::Sender)));
        assert_eq!(decide((0b11 << 18) | 0x8500), Ok((Delivery::Nothing, Targets::Sender)));
    }
}
