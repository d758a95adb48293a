//! MSI-X for an assigned PCI function (PCI Local Bus 3.0 6.8.2): the capability's layout
//! and the partition's view of the MSI-X table.
//!
//! The table lives in one of the function's memory BARs. The hypervisor leaves the 4 KiB
//! page(s) holding it out of the owner's EPT/NPT, so every access to them exits and comes
//! here. Each 16-byte entry (message address, upper address, data, vector control; PCI
//! 3.0 Figure 6-11) is kept in a shadow that the partition's reads return; the hardware
//! entry gets the message sanitized by the MSI rules ([`sanitize_msi`]): physical
//! destination, one of the partition's cores (else its first core), fixed delivery,
//! vectors 0x20..=0xFE. A refused message leaves the hardware entry masked
//! ([`Event::MsiRefused`]). The vector-control mask bit is the partition's otherwise.
//! While the hardware entry is rewritten it is masked, so the function never sends a
//! half-written message.
//!
//! Entries beyond [`MAX_ENTRIES`] stay masked in hardware: their reads return a masked,
//! empty entry and their writes are dropped ([`Event::WriteDropped`]).

use crate::pci_config::{Event, sanitize_msi};

/// Message Control, at this offset from the capability (PCI 3.0 Figure 6-10).
pub const CONTROL: u16 = 2;
/// Table Offset/BIR.
pub const TABLE: u16 = 4;
/// PBA Offset/BIR.
pub const PBA: u16 = 8;
/// Message Control: MSI-X Enable (bit 15) and Function Mask (bit 14) are the only bits a
/// partition writes; the table size (10:0) is read-only.
pub const CONTROL_WRITABLE: u16 = (1 << 15) | (1 << 14);
/// Vector control: bit 0 masks the entry (PCI 3.0 6.8.2.9).
pub const VECTOR_MASKED: u32 = 1;
/// Bytes per table entry.
pub const ENTRY: u64 = 16;
/// Table entries the hypervisor keeps a shadow of (Linux's e1000e uses 3 to 5; a shadow
/// of the full 2048 would cost 32 KiB per function).
pub const MAX_ENTRIES: usize = 32;

/// Where the capability says the table and the PBA are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The capability's offset in configuration space.
    pub offset: u16,
    /// Table entries (Table Size + 1).
    pub entries: u16,
    /// BAR index of the table.
    pub table_bir: u8,
    /// The table's offset in that BAR.
    pub table_offset: u32,
    /// BAR index of the PBA.
    pub pba_bir: u8,
    /// The PBA's offset in that BAR.
    pub pba_offset: u32,
}

impl Layout {
    /// The layout from the capability's Message Control, Table Offset/BIR and PBA
    /// Offset/BIR registers (PCI 3.0 6.8.2.2-6.8.2.4).
    pub fn parse(offset: u16, control: u16, table: u32, pba: u32) -> Self {
        Layout {
            offset,
            entries: (control & 0x7ff) + 1,
            table_bir: (table & 7) as u8,
            table_offset: table & !7,
            pba_bir: (pba & 7) as u8,
            pba_offset: pba & !7,
        }
    }

    /// The table's length in bytes.
    pub fn table_len(&self) -> u64 {
        u64::from(self.entries) * ENTRY
    }
}

/// One table entry as the partition wrote it: address, upper address, data, vector control.
type Entry = [u32; 4];

/// The partition's MSI-X table (see the module documentation).
#[derive(Debug, Clone)]
pub struct Table {
    entries: [Entry; MAX_ENTRIES],
    count: usize,
    apic_ids: [u8; 16],
    apic_count: usize,
    /// MSI messages the board gives the function (0: none, every entry is refused).
    board_messages: u8,
}

/// The hardware table, at byte offsets from its start (dword accesses).
pub trait TableHardware {
    /// Writes the dword at `offset`.
    fn write(&mut self, offset: u64, value: u32);
}

impl Table {
    /// A table of `entries` entries in their reset state (masked, PCI 3.0 6.8.2.9), whose
    /// messages may go to `apic_ids`. The caller masks the hardware's entries too.
    pub fn new(entries: u16, apic_ids: &[u8], board_messages: u8) -> Self {
        let mut table = Table {
            entries: [[0, 0, 0, VECTOR_MASKED]; MAX_ENTRIES],
            count: usize::from(entries).min(MAX_ENTRIES),
            apic_ids: [0; 16],
            apic_count: apic_ids.len().min(16),
            board_messages,
        };
        table.apic_ids[..table.apic_count].copy_from_slice(&apic_ids[..table.apic_count]);
        table
    }

    /// Masks every hardware entry (at boot and when the partition restarts), the shadowed
    /// ones and those beyond [`MAX_ENTRIES`] alike.
    pub fn mask_hardware(layout: &Layout, hw: &mut impl TableHardware) {
        for i in 0..u64::from(layout.entries) {
            hw.write(i * ENTRY + 12, VECTOR_MASKED);
        }
    }

    /// A read of `size` bytes at `offset` from the table's start: the shadow.
    pub fn read(&self, offset: u64, size: u8) -> u64 {
        (0..u64::from(size)).fold(0, |v, k| v | u64::from(self.byte(offset + k)) << (8 * k))
    }

    fn byte(&self, offset: u64) -> u8 {
        let index = (offset / ENTRY) as usize;
        let word = ((offset % ENTRY) / 4) as usize;
        let value = match self.entries.get(index).filter(|_| index < self.count) {
            Some(entry) => entry[word],
            None if word == 3 => VECTOR_MASKED,
            None => 0,
        };
        (value >> (8 * (offset % 4))) as u8
    }

    /// A write of the low `size` bytes of `value` at `offset` from the table's start. Every
    /// entry it touches is reprogrammed in `hw`; returns what the caller should log.
    pub fn write(&mut self, hw: &mut impl TableHardware, offset: u64, size: u8, value: u64) -> Option<Event> {
        let mut event = None;
        let mut touched = [usize::MAX; 2];
        for k in 0..u64::from(size) {
            let at = offset + k;
            let index = (at / ENTRY) as usize;
            if index >= self.count {
                event = event.or(Some(Event::WriteDropped { offset: (at & 0xffff) as u16 }));
                continue;
            }
            let word = &mut self.entries[index][((at % ENTRY) / 4) as usize];
            let shift = 8 * (at % 4);
            *word = (*word & !(0xff << shift)) | (((value >> (8 * k)) as u32 & 0xff) << shift);
            if !touched.contains(&index) {
                let slot = if touched[0] == usize::MAX { 0 } else { 1 };
                touched[slot] = index;
            }
        }
        for index in touched.into_iter().filter(|&i| i != usize::MAX) {
            event = self.program(hw, index).or(event);
        }
        event
    }

    /// Brings hardware entry `index` in line with its shadow: masked while its message is
    /// written, unmasked only with a sanitized message the partition left unmasked.
    fn program(&self, hw: &mut impl TableHardware, index: usize) -> Option<Event> {
        let [address, address_high, data, control] = self.entries[index];
        let base = index as u64 * ENTRY;
        hw.write(base + 12, VECTOR_MASKED);
        let sanitized =
            sanitize_msi(address, address_high, data as u16, 1, self.board_messages, &self.apic_ids[..self.apic_count]);
        let masked = control & VECTOR_MASKED != 0;
        match sanitized {
            Ok((message, event)) => {
                hw.write(base, message.address);
                hw.write(base + 4, 0);
                hw.write(base + 8, u32::from(message.data));
                if masked {
                    return None;
                }
                hw.write(base + 12, control & VECTOR_MASKED);
                event
            }
            // A masked entry may hold anything (Linux writes the message while masked):
            // it is refused only once the partition unmasks it.
            Err(_) if masked => None,
            Err(refusal) => Some(Event::MsiRefused(refusal)),
        }
    }

    /// The entries the shadow holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the shadow holds no entry.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci_config::MsiRefusal;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    #[derive(Default)]
    struct Fake {
        words: BTreeMap<u64, u32>,
        writes: Vec<(u64, u32)>,
    }

    impl TableHardware for Fake {
        fn write(&mut self, offset: u64, value: u32) {
            self.words.insert(offset, value);
            self.writes.push((offset, value));
        }
    }

    fn table() -> Table {
        Table::new(5, &[2, 3], 1)
    }

    #[test]
    fn layout_parses_the_capability() {
        let l = Layout::parse(0xa0, 0x0004, 0x0000_0003, 0x0000_2003);
        assert_eq!(
            l,
            Layout { offset: 0xa0, entries: 5, table_bir: 3, table_offset: 0, pba_bir: 3, pba_offset: 0x2000 }
        );
        assert_eq!(l.table_len(), 80);
    }

    #[test]
    fn reset_state_is_masked_and_mask_hardware_masks_every_entry() {
        let t = table();
        assert_eq!(t.read(12, 4), 1);
        assert_eq!(t.read(0, 8), 0);
        let mut hw = Fake::default();
        Table::mask_hardware(&Layout::parse(0, 4, 0, 0), &mut hw);
        assert_eq!(hw.writes, [(12, 1), (28, 1), (44, 1), (60, 1), (76, 1)]);
    }

    #[test]
    fn entry_is_shadowed_and_programmed_sanitized() {
        let (mut t, mut hw) = (table(), Fake::default());
        // Linux: address, upper address, data while masked, then unmask.
        assert_eq!(t.write(&mut hw, 16, 4, 0xfee0_3000), None);
        assert_eq!(t.write(&mut hw, 20, 4, 0), None);
        assert_eq!(t.write(&mut hw, 24, 4, 0x0141), None);
        assert_eq!(hw.words[&28], 1, "masked while the partition keeps it masked");
        assert_eq!(t.write(&mut hw, 28, 4, 0), None);
        assert_eq!(hw.words[&16], 0xfee0_3000);
        assert_eq!(hw.words[&20], 0);
        assert_eq!(hw.words[&24], 0x41, "lowest priority delivered as fixed");
        assert_eq!(hw.words[&28], 0, "unmasked");
        // Reads return what the partition wrote.
        assert_eq!(t.read(24, 4), 0x0141);
        assert_eq!(t.read(16, 8), 0xfee0_3000);
        // The entry is masked in hardware while it is rewritten.
        hw.writes.clear();
        t.write(&mut hw, 24, 4, 0x42);
        assert_eq!(hw.writes.first(), Some(&(28, 1)));
        assert_eq!(hw.writes.last(), Some(&(28, 0)));
        assert_eq!(hw.words[&24], 0x42);
    }

    #[test]
    fn foreign_destination_is_retargeted() {
        let (mut t, mut hw) = (table(), Fake::default());
        t.write(&mut hw, 0, 4, 0xfee0_1000);
        t.write(&mut hw, 8, 4, 0x50);
        assert_eq!(t.write(&mut hw, 12, 4, 0), Some(Event::MsiRetargeted { requested: 1, to: 2 }));
        assert_eq!(hw.words[&0], 0xfee0_2000);
        assert_eq!(t.read(0, 4), 0xfee0_1000, "the shadow keeps the request");
        // Logical mode too.
        assert_eq!(t.write(&mut hw, 0, 4, 0xfee0_300c), Some(Event::MsiRetargeted { requested: 3, to: 2 }));
        assert_eq!(hw.words[&0], 0xfee0_2000);
    }

    #[test]
    fn refused_messages_stay_masked() {
        let (mut t, mut hw) = (table(), Fake::default());
        t.write(&mut hw, 0, 4, 0xfee0_2000);
        t.write(&mut hw, 8, 4, 0x0450);
        assert_eq!(t.write(&mut hw, 12, 4, 0), Some(Event::MsiRefused(MsiRefusal::DeliveryMode(4))), "NMI");
        assert_eq!(hw.words[&12], 1);
        assert_eq!(t.read(12, 4), 0, "the shadow says unmasked");
        for (data, why) in [
            (0x0250, MsiRefusal::DeliveryMode(2)),
            (0x0550, MsiRefusal::DeliveryMode(5)),
            (0x0750, MsiRefusal::DeliveryMode(7)),
            (0x10, MsiRefusal::Vector(0x10)),
            (0xff, MsiRefusal::Vector(0xff)),
        ] {
            assert_eq!(t.write(&mut hw, 8, 4, data), Some(Event::MsiRefused(why)));
            assert_eq!(hw.words[&12], 1);
        }
        assert_eq!(t.write(&mut hw, 8, 4, 0x50), None);
        assert_eq!(hw.words[&12], 0);
        assert_eq!(t.write(&mut hw, 0, 4, 0xfec0_0000), Some(Event::MsiRefused(MsiRefusal::NotInterruptAddress)));
        assert_eq!(hw.words[&12], 1);
        assert_eq!(t.write(&mut hw, 0, 4, 0xfee0_2000), None);
        assert_eq!(t.write(&mut hw, 4, 4, 1), Some(Event::MsiRefused(MsiRefusal::NotInterruptAddress)));
        assert_eq!(hw.words[&12], 1);
        // A board without MSI: every unmasked entry refused.
        let (mut t, mut hw) = (Table::new(1, &[2], 0), Fake::default());
        t.write(&mut hw, 0, 4, 0xfee0_2000);
        t.write(&mut hw, 8, 4, 0x50);
        assert_eq!(t.write(&mut hw, 12, 4, 0), Some(Event::MsiRefused(MsiRefusal::NotAllowed)));
        assert_eq!(hw.words[&12], 1);
    }

    #[test]
    fn entries_beyond_the_table_or_the_shadow_are_dropped() {
        let (mut t, mut hw) = (table(), Fake::default());
        assert_eq!(t.write(&mut hw, 5 * 16 + 12, 4, 0), Some(Event::WriteDropped { offset: 92 }));
        assert!(hw.writes.is_empty());
        assert_eq!(t.read(5 * 16 + 12, 4), 1);
        let big = Table::new(2048, &[2], 1);
        assert_eq!(big.len(), MAX_ENTRIES);
    }

    #[test]
    fn arbitrary_writes_never_unmask_a_bad_message() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let (mut t, mut hw) = (table(), Fake::default());
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let size = [1u8, 2, 4, 8][(state % 4) as usize];
            let offset = ((state >> 8) % 96) & !(u64::from(size) - 1);
            let value = if state & (1 << 50) != 0 { 0xfee0_0000 | (state >> 20) & 0x3fff } else { state >> 16 };
            t.write(&mut hw, offset, size, value);
            for e in 0..5u64 {
                if hw.words.get(&(e * 16 + 12)).is_some_and(|c| c & 1 == 0) {
                    let (a, h, d) = (hw.words[&(e * 16)], hw.words[&(e * 16 + 4)], hw.words[&(e * 16 + 8)]);
                    assert_eq!(h, 0);
                    assert!(a == 0xfee0_2000 || a == 0xfee0_3000, "{a:#x}");
                    assert!((0x20..=0xfe).contains(&d), "{d:#x}");
                }
            }
        }
    }
}
