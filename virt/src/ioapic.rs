//! A partition's view of an IOAPIC: which of its registers it reads, and what a write to a
//! redirection entry of one of its own pins becomes on the physical IOAPIC.
//!
//! Register layout: Intel 82093AA I/O APIC datasheet (order 290566), 3.0 "Register
//! Descriptions": IOREGSEL at +0x00 (the index of the register IOWIN reaches, bits 7:0),
//! IOWIN at +0x10; register 0x00 IOAPICID (ID in bits 27:24; 8 bits wide on the ICH9),
//! 0x01 IOAPICVER (version in bits 7:0, maximum redirection entry in bits 23:16), 0x02
//! IOAPICARB, and the redirection table at 0x10 + 2n (low dword) and 0x11 + 2n (high
//! dword) for pin n. The ICH9 I/O APIC (version 0x20, Intel I/O Controller Hub 9 datasheet,
//! 13.5) adds the EOI register at +0x40: writing a vector clears Remote IRR of every
//! level-triggered entry with that vector.
//!
//! A redirection entry (82093AA 3.2.4, Figure 4):
//!
//! | bits | field |
//! |---|---|
//! | 7:0 | vector |
//! | 10:8 | delivery mode: 000 fixed, 001 lowest priority, 010 SMI, 100 NMI, 101 INIT, 111 ExtINT |
//! | 11 | destination mode: 0 physical, 1 logical |
//! | 12 | delivery status (read-only) |
//! | 13 | pin polarity: 0 active high, 1 active low |
//! | 14 | Remote IRR (read-only, level-triggered only) |
//! | 15 | trigger mode: 0 edge, 1 level |
//! | 16 | mask |
//! | 63:56 | destination (an APIC ID in physical mode) |
//!
//! The policy ([`program`]): fixed delivery (lowest priority becomes fixed: the partition
//! has no say over other partitions' cores), a vector 0x20..=0xFE, physical destination
//! mode to one of the partition's own cores' APIC IDs (anything else goes to its first
//! core), trigger mode and polarity as asked. NMI, SMI, INIT, ExtINT and the reserved modes
//! are refused: the pin stays masked. A masked entry is kept as asked but with its
//! destination and mode made safe, so that unmasking it later goes through the same check.

/// Offset of IOREGSEL in the register window.
pub const IOREGSEL: u64 = 0x00;
/// Offset of IOWIN in the register window.
pub const IOWIN: u64 = 0x10;
/// Offset of the EOI register (version 0x20 and later).
pub const EOI: u64 = 0x40;
/// Size of the register window a partition sees (one page, never mapped).
pub const WINDOW: u64 = 0x1000;

/// The identification register.
pub const REG_ID: u8 = 0x00;
/// The version register.
pub const REG_VERSION: u8 = 0x01;
/// The arbitration register (82093AA).
pub const REG_ARBITRATION: u8 = 0x02;
/// The first redirection-table register (pin 0, low dword).
pub const REG_TABLE: u8 = 0x10;

/// The first IOAPIC version with the EOI register (ICH9).
pub const VERSION_WITH_EOI: u8 = 0x20;

/// Lowest vector a partition may give a pin (0-0x1F are exceptions).
pub const FIRST_VECTOR: u8 = 0x20;
/// Highest vector a partition may give a pin (0xFF is the spurious vector).
pub const LAST_VECTOR: u8 = 0xFE;

/// Redirection-entry bits (see the module table).
pub mod bits {
    /// Vector, bits 7:0.
    pub const VECTOR: u64 = 0xff;
    /// Delivery mode, bits 10:8.
    pub const DELIVERY_MODE: u64 = 0b111 << 8;
    /// Destination mode (1: logical).
    pub const LOGICAL: u64 = 1 << 11;
    /// Delivery status (read-only).
    pub const DELIVERY_STATUS: u64 = 1 << 12;
    /// Pin polarity (1: active low).
    pub const ACTIVE_LOW: u64 = 1 << 13;
    /// Remote IRR (read-only).
    pub const REMOTE_IRR: u64 = 1 << 14;
    /// Trigger mode (1: level).
    pub const LEVEL: u64 = 1 << 15;
    /// Interrupt mask.
    pub const MASK: u64 = 1 << 16;
    /// Destination field, bits 63:56.
    pub const DESTINATION_SHIFT: u32 = 56;
    /// The bits software writes (everything but the read-only status bits and reserved
    /// bits 55:17).
    pub const WRITABLE: u64 = VECTOR | DELIVERY_MODE | LOGICAL | ACTIVE_LOW | LEVEL | MASK | (0xff << 56);
    /// The read-only bits the hardware reports.
    pub const STATUS: u64 = DELIVERY_STATUS | REMOTE_IRR;
}

/// What a masked pin of another partition (or of no one) reads as: masked, everything
/// else zero (the 82093AA's reset value, 3.2.4).
pub const MASKED_ENTRY: u64 = bits::MASK;

/// A delivery mode of a redirection entry (bits 10:8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// 000.
    Fixed,
    /// 001.
    LowestPriority,
    /// 010.
    Smi,
    /// 100.
    Nmi,
    /// 101.
    Init,
    /// 111.
    ExtInt,
    /// 011 or 110.
    Reserved(u8),
}

impl DeliveryMode {
    /// The mode in an entry.
    pub fn of(entry: u64) -> Self {
        match ((entry & bits::DELIVERY_MODE) >> 8) as u8 {
            0b000 => DeliveryMode::Fixed,
            0b001 => DeliveryMode::LowestPriority,
            0b010 => DeliveryMode::Smi,
            0b100 => DeliveryMode::Nmi,
            0b101 => DeliveryMode::Init,
            0b111 => DeliveryMode::ExtInt,
            other => DeliveryMode::Reserved(other),
        }
    }

    /// Its name for log lines.
    pub fn name(self) -> &'static str {
        match self {
            DeliveryMode::Fixed => "fixed",
            DeliveryMode::LowestPriority => "lowest priority",
            DeliveryMode::Smi => "SMI",
            DeliveryMode::Nmi => "NMI",
            DeliveryMode::Init => "INIT",
            DeliveryMode::ExtInt => "ExtINT",
            DeliveryMode::Reserved(_) => "reserved",
        }
    }
}

/// The fields of a redirection entry, for building one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The vector delivered.
    pub vector: u8,
    /// Level-triggered (else edge).
    pub level: bool,
    /// Active low (else active high).
    pub active_low: bool,
    /// Masked.
    pub masked: bool,
    /// Physical destination APIC ID.
    pub destination: u8,
}

impl Entry {
    /// The 64-bit entry: fixed delivery, physical destination mode.
    pub fn encode(self) -> u64 {
        u64::from(self.vector)
            | if self.active_low { bits::ACTIVE_LOW } else { 0 }
            | if self.level { bits::LEVEL } else { 0 }
            | if self.masked { bits::MASK } else { 0 }
            | u64::from(self.destination) << bits::DESTINATION_SHIFT
    }

    /// The fields of a 64-bit entry (delivery and destination modes aside).
    pub fn decode(entry: u64) -> Self {
        Entry {
            vector: (entry & bits::VECTOR) as u8,
            level: entry & bits::LEVEL != 0,
            active_low: entry & bits::ACTIVE_LOW != 0,
            masked: entry & bits::MASK != 0,
            destination: (entry >> bits::DESTINATION_SHIFT) as u8,
        }
    }
}

/// Why an entry was refused (the pin is left masked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// NMI, SMI, INIT, ExtINT or a reserved delivery mode.
    DeliveryMode(DeliveryMode),
    /// A vector outside 0x20..=0xFE on an unmasked entry.
    Vector(u8),
}

/// What a write to a pin's entry became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Programmed {
    /// The entry to write to the physical IOAPIC (status bits clear).
    pub entry: u64,
    /// The destination the partition asked for, when it was not one of its cores (or was
    /// in logical mode) and the entry now targets its first core.
    pub retargeted_from: Option<Destination>,
    /// The partition asked for lowest-priority delivery, which became fixed.
    pub lowest_priority: bool,
    /// The partition's entry was refused; `entry` is masked.
    pub refused: Option<Refusal>,
}

/// A destination as the partition wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    /// The destination field (bits 63:56).
    pub id: u8,
    /// Logical destination mode.
    pub logical: bool,
}

/// Checks the entry a partition wrote (`requested`, both halves) for one of its own pins,
/// whose cores have the APIC IDs `cores` (the first starts the partition), and returns
/// what the physical entry becomes. `cores` must not be empty (every partition has one).
pub fn program(requested: u64, cores: &[u32]) -> Programmed {
    let first = cores.first().copied().unwrap_or(0);
    let destination =
        Destination { id: (requested >> bits::DESTINATION_SHIFT) as u8, logical: requested & bits::LOGICAL != 0 };
    let own = !destination.logical && cores.contains(&u32::from(destination.id));
    let target = if own { destination.id } else { first as u8 };
    let mut asked = Entry::decode(requested);
    asked.destination = target;
    let mode = DeliveryMode::of(requested);
    let refused = match mode {
        DeliveryMode::Fixed | DeliveryMode::LowestPriority => None,
        other => Some(Refusal::DeliveryMode(other)),
    };
    let refused = refused.or_else(|| {
        let vector = asked.vector;
        (!asked.masked && !(FIRST_VECTOR..=LAST_VECTOR).contains(&vector)).then_some(Refusal::Vector(vector))
    });
    if refused.is_some() {
        asked.masked = true;
    }
    Programmed {
        entry: asked.encode(),
        retargeted_from: (!own).then_some(destination),
        lowest_priority: mode == DeliveryMode::LowestPriority,
        refused,
    }
}

/// The entry after a partition wrote one dword of it: `high` selects bits 63:32, `value`
/// the dword; `current` is the physical entry (the other half stays as it is there).
pub fn merge_half(current: u64, high: bool, value: u32) -> u64 {
    if high { (current & 0xffff_ffff) | u64::from(value) << 32 } else { (current & !0xffff_ffff) | u64::from(value) }
}

/// Which register an IOWIN access reaches for the IOREGSEL value `select`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// IOAPICID.
    Id,
    /// IOAPICVER.
    Version,
    /// IOAPICARB.
    Arbitration,
    /// One half of pin `pin`'s redirection entry.
    Entry {
        /// The pin (0-based on this IOAPIC).
        pin: u8,
        /// The high dword (destination).
        high: bool,
    },
    /// No register (reads 0, writes are dropped).
    None,
}

impl Register {
    /// The register `select` names on an IOAPIC with `pins` redirection entries.
    pub fn selected(select: u8, pins: u8) -> Self {
        match select {
            REG_ID => Register::Id,
            REG_VERSION => Register::Version,
            REG_ARBITRATION => Register::Arbitration,
            s if s >= REG_TABLE && u16::from(s - REG_TABLE) < 2 * u16::from(pins) => {
                Register::Entry { pin: (s - REG_TABLE) / 2, high: (s - REG_TABLE) % 2 == 1 }
            }
            _ => Register::None,
        }
    }
}

/// The version register's fields: (version, maximum redirection entry).
pub fn version_fields(register: u32) -> (u8, u8) {
    (register as u8, (register >> 16) as u8)
}

/// What a partition reads of an entry: its own pin's entry as the hardware holds it (with
/// Remote IRR and delivery status), or [`MASKED_ENTRY`] for a pin it does not own.
pub fn visible_entry(physical: u64, owned: bool) -> u64 {
    if owned { physical } else { MASKED_ENTRY }
}

/// A dword read of the window at `offset` from the register value `value` of its 32-bit
/// slot, for an access of `size` bytes: the bytes of the slot from `offset`.
pub fn read_bytes(value: u32, offset: u64, size: u8) -> u64 {
    let shifted = u64::from(value) >> (8 * (offset & 3));
    match size {
        1 => shifted & 0xff,
        2 => shifted & 0xffff,
        _ => shifted & 0xffff_ffff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORES: &[u32] = &[1, 2];

    fn entry(vector: u8, mode: u64, destination: u8) -> u64 {
        u64::from(vector) | mode << 8 | u64::from(destination) << 56
    }

    #[test]
    fn encoding_follows_the_datasheet() {
        let e = Entry { vector: 0x51, level: true, active_low: true, masked: true, destination: 3 };
        assert_eq!(e.encode(), 0x0300_0000_0001_a051);
        assert_eq!(Entry::decode(e.encode()), e);
        assert_eq!(MASKED_ENTRY, 0x1_0000);
        assert_eq!(bits::WRITABLE & bits::STATUS, 0);
        for (mode, expected) in [
            (0, DeliveryMode::Fixed),
            (1, DeliveryMode::LowestPriority),
            (2, DeliveryMode::Smi),
            (3, DeliveryMode::Reserved(3)),
            (4, DeliveryMode::Nmi),
            (5, DeliveryMode::Init),
            (6, DeliveryMode::Reserved(6)),
            (7, DeliveryMode::ExtInt),
        ] {
            assert_eq!(DeliveryMode::of(mode << 8), expected);
        }
    }

    #[test]
    fn own_fixed_entry_passes_unchanged() {
        let requested = entry(0x50, 0, 2) | bits::LEVEL | bits::ACTIVE_LOW;
        let p = program(requested, CORES);
        assert_eq!(p.entry, requested);
        assert_eq!((p.retargeted_from, p.lowest_priority, p.refused), (None, false, None));
    }

    #[test]
    fn status_and_reserved_bits_are_never_written() {
        let requested = entry(0x50, 0, 1) | bits::STATUS | (0xff_ffff << 17 & !(0xff << 56));
        assert_eq!(program(requested, CORES).entry, entry(0x50, 0, 1));
    }

    #[test]
    fn lowest_priority_becomes_fixed() {
        let p = program(entry(0x60, 1, 1), CORES);
        assert_eq!(p.entry, entry(0x60, 0, 1));
        assert!(p.lowest_priority);
        assert_eq!(p.refused, None);
    }

    #[test]
    fn foreign_destination_goes_to_the_first_core() {
        let p = program(entry(0x60, 0, 0), CORES);
        assert_eq!(p.entry, entry(0x60, 0, 1));
        assert_eq!(p.retargeted_from, Some(Destination { id: 0, logical: false }));
        let broadcast = program(entry(0x60, 0, 0xff), CORES);
        assert_eq!(broadcast.entry, entry(0x60, 0, 1));
    }

    #[test]
    fn logical_mode_goes_physical_to_the_first_core() {
        // Logical destination 2 would name core 2 in physical mode: still retargeted, as
        // the logical meaning depends on every APIC's LDR.
        let p = program(entry(0x60, 0, 2) | bits::LOGICAL, CORES);
        assert_eq!(p.entry, entry(0x60, 0, 1));
        assert_eq!(p.retargeted_from, Some(Destination { id: 2, logical: true }));
    }

    #[test]
    fn nmi_smi_init_extint_and_reserved_are_refused_masked() {
        for mode in [2u64, 3, 4, 5, 6, 7] {
            let p = program(entry(0x60, mode, 1), CORES);
            assert_eq!(p.entry, entry(0x60, 0, 1) | bits::MASK, "mode {mode}");
            assert!(matches!(p.refused, Some(Refusal::DeliveryMode(_))));
        }
        // Refused even while masked: unmasking later re-checks, but the mode never reaches
        // the hardware.
        let masked = program(entry(0, 4, 1) | bits::MASK, CORES);
        assert_eq!(masked.entry, entry(0, 0, 1) | bits::MASK);
        assert_eq!(masked.refused, Some(Refusal::DeliveryMode(DeliveryMode::Nmi)));
    }

    #[test]
    fn vectors_outside_the_device_range_are_refused_unless_masked() {
        for vector in [0u8, 0x10, 0x1f, 0xff] {
            let p = program(entry(vector, 0, 1), CORES);
            assert_eq!(p.refused, Some(Refusal::Vector(vector)));
            assert_ne!(p.entry & bits::MASK, 0);
        }
        for vector in [0x20u8, 0xfe] {
            assert_eq!(program(entry(vector, 0, 1), CORES).refused, None);
        }
        // Firmware and Linux write masked entries with vector 0: accepted, stays masked.
        let masked = program(entry(0, 0, 1) | bits::MASK, CORES);
        assert_eq!((masked.entry, masked.refused), (entry(0, 0, 1) | bits::MASK, None));
    }

    #[test]
    fn halves_merge_with_the_current_entry() {
        let current = entry(0x50, 0, 1) | bits::MASK;
        assert_eq!(merge_half(current, true, 0x0200_0000), entry(0x50, 0, 2) | bits::MASK);
        assert_eq!(merge_half(current, false, 0x8061), entry(0x61, 0, 1) | bits::LEVEL);
    }

    #[test]
    fn registers_by_index() {
        assert_eq!(Register::selected(0, 24), Register::Id);
        assert_eq!(Register::selected(1, 24), Register::Version);
        assert_eq!(Register::selected(2, 24), Register::Arbitration);
        assert_eq!(Register::selected(3, 24), Register::None);
        assert_eq!(Register::selected(0x0f, 24), Register::None);
        assert_eq!(Register::selected(0x10, 24), Register::Entry { pin: 0, high: false });
        assert_eq!(Register::selected(0x17, 24), Register::Entry { pin: 3, high: true });
        assert_eq!(Register::selected(0x3f, 24), Register::Entry { pin: 23, high: true });
        assert_eq!(Register::selected(0x40, 24), Register::None);
        assert_eq!(Register::selected(0xff, 24), Register::None);
        assert_eq!(Register::selected(0x20, 8), Register::None);
        assert_eq!(Register::selected(0xff, 240), Register::Entry { pin: 119, high: true });
    }

    #[test]
    fn foreign_pins_read_masked() {
        let physical = entry(0x50, 0, 0) | bits::REMOTE_IRR;
        assert_eq!(visible_entry(physical, true), physical);
        assert_eq!(visible_entry(physical, false), MASKED_ENTRY);
    }

    #[test]
    fn version_register_fields() {
        // Bochs's 82093AA model: version 0x11, 24 pins; QEMU q35: 0x20.
        assert_eq!(version_fields(0x0017_0011), (0x11, 23));
        assert_eq!(version_fields(0x0017_0020), (0x20, 23));
    }

    #[test]
    fn partial_reads_take_the_bytes_at_the_offset() {
        assert_eq!(read_bytes(0x1234_5678, 0, 4), 0x1234_5678);
        assert_eq!(read_bytes(0x1234_5678, 1, 1), 0x56);
        assert_eq!(read_bytes(0x1234_5678, 2, 2), 0x1234);
    }
}
