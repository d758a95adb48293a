//! What a partition's access to the configuration space of a PCI function it owns does
//! (type 0 header, PCI Local Bus 3.0 chapter 6). The hypervisor calls [`FunctionView`] for
//! every access of an owned function (through ports 0xCF8/0xCFC or the ECAM window); a
//! function the partition does not own reads all-ones and takes no writes (absent, as an
//! empty slot answers: PCI 3.0 6.1), which the caller decides before coming here.
//!
//! The rules, by register (offsets of the type 0 header, PCI 3.0 Figure 6-1):
//!
//! | offset | register | read | write |
//! |---|---|---|---|
//! | 0x00 | vendor / device ID | hardware | dropped |
//! | 0x04 | command | hardware | only I/O space, memory space, bus master, parity error response, SERR# enable, interrupt disable (bits 0, 1, 2, 6, 8, 10) reach the hardware; the others keep the hardware's value |
//! | 0x06 | status | hardware, "capabilities list" (bit 4) set only while a capability is visible | only the write-1-to-clear error bits (8, 11-15) |
//! | 0x08 | revision / class | hardware | dropped |
//! | 0x0C | cache line size, latency timer | hardware | passed |
//! | 0x0E | header type, BIST | hardware | dropped |
//! | 0x10-0x24 | BARs | the board's declared base with the hardware's flag bits; after an all-ones write, the size mask (sizing); 0 for a BAR the board does not declare | the declared base: accepted (the hardware already holds it); all-ones: sizing; anything else: refused ([`Event::BarRelocationRefused`]) — the hardware's BARs are never written |
//! | 0x28, 0x2C | CardBus CIS, subsystem IDs | hardware | dropped |
//! | 0x30 | expansion ROM BAR | 0 (no ROM) | dropped |
//! | 0x34 | capabilities pointer | the first visible capability | dropped |
//! | 0x38 | reserved | 0 | dropped |
//! | 0x3C | interrupt line | hardware | passed (a scratch register for software) |
//! | 0x3D-0x3F | interrupt pin, min grant, max latency | hardware | dropped |
//! | 0x40-0xFF | capabilities and device-specific registers | see below | see below |
//!
//! **Capabilities** (PCI 3.0 6.7). The list is walked once, when the view is made. Hidden
//! capabilities — the board's `hide_capabilities`, and MSI-X (ID 0x11) when its table is
//! not in a declared memory BAR the hypervisor can reach (it could not check the messages)
//! — are unlinked: each visible capability's next pointer skips them, and the
//! status bit clears if none is left. The bytes from a hidden capability's offset up to the
//! next capability (or 0x100) read 0 and take no writes. Bytes of a visible capability
//! and device-specific bytes before the first capability pass through, except:
//!
//! **MSI-X** (ID 0x11, PCI 3.0 6.8.2). Message Control reads from the hardware; of its
//! writes only MSI-X Enable and Function Mask reach it; Table Offset/BIR and PBA
//! Offset/BIR are read-only. MSI-X starts disabled. The table itself is emulated
//! ([`FunctionView::msix_read`], [`FunctionView::msix_write`], rules in [`msix`]).
//!
//! **MSI** (ID 0x05, PCI 3.0 6.8.1). Message control, address and data are kept in a shadow
//! that reads return; the hardware gets a sanitized message ([`sanitize_msi`]): physical
//! destination mode, the requested APIC ID if it is one of the partition's cores' (else the
//! partition's first core, [`Event::MsiRetargeted`]), fixed delivery (lowest priority
//! becomes fixed; SMI, NMI, INIT, ExtINT and reserved modes are refused), vectors
//! 0x20..=0xFE, and at most the board's message count ("Multiple Message Capable" reads
//! no more than it). A refused message leaves MSI disabled in the hardware
//! ([`Event::MsiRefused`]) while the shadow says what the partition wrote. The mask bits
//! pass through; the pending bits read from the hardware.
//!
//! Not covered: the extended configuration space (0x100-0xFFF),
//! which the caller reads from the hardware through ECAM where the board has it and whose
//! writes it drops; bridges (header type 1), which cannot be assigned.

use crate::msix;

/// A function's configuration registers in hardware, at naturally aligned offsets below
/// 0x100 and sizes 1, 2 or 4.
pub trait Hardware {
    /// Reads `size` bytes at `offset`.
    fn read(&mut self, offset: u16, size: u8) -> u32;
    /// Writes the low `size` bytes of `value` at `offset`.
    fn write(&mut self, offset: u16, size: u8, value: u32);
}

/// A BAR the board file declares for the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeclaredBar {
    /// BAR index (0-5).
    pub index: u8,
    /// Base address (memory) or port (I/O).
    pub base: u64,
    /// Size in bytes (a power of two).
    pub size: u64,
}

/// What the board says about one function.
#[derive(Debug, Clone, Copy)]
pub struct FunctionConfig<'a> {
    /// Its declared BARs.
    pub bars: &'a [DeclaredBar],
    /// Capability IDs its owner does not see.
    pub hidden_capabilities: &'a [u8],
    /// MSI vectors it may use (0: the board gives it no MSI; MSI enables are refused).
    pub msi_messages: u8,
    /// Physical APIC IDs of the owner's cores; the first one takes retargeted messages.
    pub apic_ids: &'a [u32],
    /// Where the hypervisor can reach MMIO: an MSI-X table in a BAR that ends above this
    /// cannot be trapped, so its capability is hidden.
    pub mmio_reachable_end: u64,
}

/// An MSI-X capability the partition sees, and where its table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixPlace {
    /// The capability's registers.
    pub layout: msix::Layout,
    /// The table's physical address (its BAR's declared base plus the table offset).
    pub table: u64,
    /// The table's BAR: its declared base.
    pub bar_base: u64,
    /// The table's BAR: its size.
    pub bar_size: u64,
}

/// Something the caller logs (rate-limited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A BAR write that is neither the declared base nor all-ones.
    BarRelocationRefused {
        /// BAR index.
        index: u8,
        /// The value written.
        value: u32,
        /// The value the BAR keeps.
        declared: u32,
    },
    /// An MSI message aimed elsewhere, sent to the partition's first core instead.
    MsiRetargeted {
        /// The destination the partition asked for.
        requested: u8,
        /// Where the message goes.
        to: u8,
    },
    /// The MSI message cannot be delivered: MSI stays disabled in the hardware.
    MsiRefused(MsiRefusal),
    /// A write to a hidden capability or another read-only register, dropped.
    WriteDropped {
        /// Configuration offset.
        offset: u16,
    },
}

/// Why an MSI message is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsiRefusal {
    /// The address is not in the interrupt range 0xFEExxxxx (SDM Vol. 3A 11.11.1).
    NotInterruptAddress,
    /// Delivery mode SMI, NMI, INIT, ExtINT or reserved (the mode's 3-bit code).
    DeliveryMode(u8),
    /// A vector outside 0x20..=0xFE (or a block of vectors reaching beyond it).
    Vector(u8),
    /// The partition's cores cannot be addressed by a message (APIC ID above 0xFF).
    NoDestination,
    /// The board gives the function no MSI.
    NotAllowed,
}

impl MsiRefusal {
    /// For the log line.
    pub fn describe(self) -> &'static str {
        match self {
            MsiRefusal::NotInterruptAddress => "address outside 0xFEExxxxx",
            MsiRefusal::DeliveryMode(_) => "delivery mode SMI/NMI/INIT/ExtINT or reserved",
            MsiRefusal::Vector(_) => "vector outside 0x20..=0xFE",
            MsiRefusal::NoDestination => "the partition's APIC IDs do not fit a message",
            MsiRefusal::NotAllowed => "the board file gives this function no MSI",
        }
    }
}

/// The capability ID of MSI (PCI Code and ID Assignment 1.11, 2).
pub const CAP_MSI: u8 = 0x05;
/// The capability ID of MSI-X.
pub const CAP_MSIX: u8 = 0x11;

const COMMAND: u16 = 0x04;
const STATUS: u16 = 0x06;
const BAR0: u16 = 0x10;
const ROM_BAR: u16 = 0x30;
const CAP_POINTER: u16 = 0x34;
const INTERRUPT_LINE: u16 = 0x3c;
/// Command bits the partition controls: I/O space, memory space, bus master, parity error
/// response, SERR# enable, interrupt disable (PCI 3.0 6.2.2).
pub const COMMAND_ALLOWED: u16 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 6) | (1 << 8) | (1 << 10);
/// Command bits that let the function decode its BARs or master the bus.
pub const COMMAND_DECODE_AND_MASTER: u16 = 0b111;
/// Status bits that are write-1-to-clear error flags (PCI 3.0 6.2.3).
const STATUS_W1C: u16 = (1 << 8) | (0b11111 << 11);
const STATUS_CAPABILITIES: u16 = 1 << 4;
/// Most capabilities a list can hold in 0x40..0x100 (4-byte aligned, 4 bytes each).
const MAX_CAPS: usize = 48;

/// How a BAR slot (0-5) reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Not declared by the board: reads 0 (not implemented).
    Absent,
    /// The low dword of a declared BAR: its value and the low half of its size mask.
    Low { base: u32, mask: u32, flags: u32 },
    /// The upper dword of a declared 64-bit memory BAR.
    High { base: u32, mask: u32 },
}

/// The MSI capability as the partition programmed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MsiShadow {
    control: u16,
    address: u32,
    address_high: u32,
    data: u16,
}

/// One function's configuration space as its owner sees it (see the module documentation).
#[derive(Debug, Clone)]
pub struct FunctionView {
    slots: [Slot; 6],
    sizing: [bool; 6],
    /// Capabilities in list order: (offset, ID).
    caps: [(u8, u8); MAX_CAPS],
    cap_count: usize,
    hidden: [bool; MAX_CAPS],
    msi: Option<MsiLayout>,
    shadow: MsiShadow,
    msi_messages: u8,
    apic_ids: [u8; 16],
    apic_count: usize,
    msix: Option<MsixPlace>,
    msix_table: msix::Table,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MsiLayout {
    offset: u16,
    is_64: bool,
    maskable: bool,
    /// The hardware's read-only control bits (capable count, 64-bit, per-vector masking),
    /// capable count lowered to the board's.
    control_ro: u16,
}

impl MsiLayout {
    fn data_offset(&self) -> u16 {
        self.offset + if self.is_64 { 0x0c } else { 0x08 }
    }
    fn mask_offset(&self) -> u16 {
        self.data_offset() + 4
    }
}

/// log2 of a message count, rounded up (the 3-bit MMC/MME encoding, PCI 3.0 6.8.1.3).
fn log2(n: u8) -> u16 {
    match n {
        0 | 1 => 0,
        2 => 1,
        3 | 4 => 2,
        5..=8 => 3,
        9..=16 => 4,
        _ => 5,
    }
}

impl FunctionView {
    /// Reads the function's BAR flag bits and capability list from `hw` and makes its view.
    pub fn new(hw: &mut impl Hardware, config: &FunctionConfig<'_>) -> Self {
        let mut slots = [Slot::Absent; 6];
        for bar in config.bars.iter().filter(|b| b.index < 6) {
            let i = usize::from(bar.index);
            let raw = hw.read(BAR0 + 4 * u16::from(bar.index), 4);
            let io = raw & 1 != 0;
            let flags = if io { raw & 0x3 } else { raw & 0xf };
            // The smallest BARs: 16 bytes of memory, 4 ports (PCI 3.0 6.2.5.1).
            let mask64 = !(bar.size.max(if io { 4 } else { 16 }).wrapping_sub(1));
            let low_mask = if io { (mask64 as u32) & !0x3 } else { (mask64 as u32) & !0xf };
            slots[i] = Slot::Low { base: (bar.base as u32) & low_mask, mask: low_mask, flags };
            // Memory type 10b: 64-bit, the next BAR holds the upper half (PCI 3.0 6.2.5.1).
            if !io && (raw >> 1) & 0b11 == 0b10 && i + 1 < 6 {
                slots[i + 1] = Slot::High { base: (bar.base >> 32) as u32, mask: (mask64 >> 32) as u32 };
            }
        }
        let mut view = FunctionView {
            slots,
            sizing: [false; 6],
            caps: [(0, 0); MAX_CAPS],
            cap_count: 0,
            hidden: [false; MAX_CAPS],
            msi: None,
            shadow: MsiShadow::default(),
            msi_messages: config.msi_messages,
            apic_ids: [0; 16],
            apic_count: 0,
            msix: None,
            msix_table: msix::Table::new(0, &[], 0),
        };
        for &id in config.apic_ids.iter().take(16) {
            if let Ok(id) = u8::try_from(id) {
                view.apic_ids[view.apic_count] = id;
                view.apic_count += 1;
            }
        }
        if hw.read(STATUS, 2) as u16 & STATUS_CAPABILITIES != 0 {
            let mut next = (hw.read(CAP_POINTER, 1) as u8) & 0xfc;
            while next >= 0x40 && view.cap_count < MAX_CAPS {
                // A looping list ends where it comes back.
                if view.caps[..view.cap_count].iter().any(|(o, _)| *o == next) {
                    break;
                }
                let header = hw.read(u16::from(next), 2);
                let id = header as u8;
                let mut hidden = config.hidden_capabilities.contains(&id);
                if id == CAP_MSIX && !hidden {
                    // Visible only with a table the hypervisor can trap (one capability).
                    let place = view.msix.is_none().then(|| msix_place(hw, config, u16::from(next))).flatten();
                    hidden = place.is_none();
                    view.msix = view.msix.or(place);
                }
                view.caps[view.cap_count] = (next, id);
                view.hidden[view.cap_count] = hidden;
                view.cap_count += 1;
                if id == CAP_MSI && !hidden && view.msi.is_none() {
                    let offset = u16::from(next);
                    let control = hw.read(offset + 2, 2) as u16;
                    let capable = (control >> 1) & 0b111;
                    let allowed = capable.min(log2(config.msi_messages));
                    view.msi = Some(MsiLayout {
                        offset,
                        is_64: control & (1 << 7) != 0,
                        maskable: control & (1 << 8) != 0,
                        control_ro: (control & ((1 << 7) | (1 << 8))) | (allowed << 1),
                    });
                    // MSI starts disabled whatever the firmware left (the shadow is clear).
                    hw.write(offset + 2, 2, u32::from(control & !1));
                }
                next = ((header >> 8) as u8) & 0xfc;
            }
        }
        if let Some(place) = view.msix {
            view.msix_table =
                msix::Table::new(place.layout.entries, &view.apic_ids[..view.apic_count], config.msi_messages);
            // MSI-X starts disabled whatever the firmware left; the caller masks the table.
            let control_at = place.layout.offset + msix::CONTROL;
            let control = hw.read(control_at, 2) as u16;
            hw.write(control_at, 2, u32::from(control & !msix::CONTROL_WRITABLE));
        }
        view
    }

    /// The MSI-X capability the partition sees, if any, and where its table is.
    pub fn msix(&self) -> Option<MsixPlace> {
        self.msix
    }

    /// A partition's read of `size` bytes at `offset` from the start of the MSI-X table:
    /// the shadow (module [`msix`]).
    pub fn msix_read(&self, offset: u64, size: u8) -> u64 {
        self.msix_table.read(offset, size)
    }

    /// A partition's write to the MSI-X table; the hardware entries follow sanitized.
    pub fn msix_write(
        &mut self,
        hw: &mut impl msix::TableHardware,
        offset: u64,
        size: u8,
        value: u64,
    ) -> Option<Event> {
        self.msix_table.write(hw, offset, size, value)
    }

    /// The offsets of the capabilities the partition sees, in list order.
    pub fn visible_capabilities(&self) -> impl Iterator<Item = (u8, u8)> + '_ {
        self.caps[..self.cap_count].iter().zip(self.hidden.iter()).filter(|(_, h)| !**h).map(|(c, _)| *c)
    }

    /// The capability whose bytes contain `offset` (the one starting at or below it,
    /// nearest), as an index into `caps`.
    fn cap_at(&self, offset: u16) -> Option<usize> {
        (0..self.cap_count).filter(|&i| u16::from(self.caps[i].0) <= offset).max_by_key(|&i| self.caps[i].0)
    }

    /// The next visible capability after list position `i` (0 when none).
    fn next_visible(&self, after: Option<usize>) -> u8 {
        let start = after.map_or(0, |i| i + 1);
        (start..self.cap_count).find(|&j| !self.hidden[j]).map_or(0, |j| self.caps[j].0)
    }

    /// A partition's read of `size` bytes (1, 2, 4; naturally aligned) at `offset` < 0x100.
    pub fn read(&mut self, hw: &mut impl Hardware, offset: u16, size: u8) -> u32 {
        // The bytes of one aligned access share a dword: the hardware is read once.
        let mut hw = OneDword { hw, dword: None };
        let mut value = 0u32;
        for k in 0..u16::from(size) {
            value |= u32::from(self.read_byte(&mut hw, offset + k)) << (8 * k);
        }
        value
    }

    /// One byte of the partition's view; hardware registers are read as their whole dword.
    fn read_byte(&mut self, hw: &mut impl Hardware, offset: u16) -> u8 {
        let dword = offset & !3;
        let shift = 8 * u32::from(offset & 3);
        let byte = |v: u32| (v >> shift) as u8;
        match dword {
            0x00 | 0x08 | 0x0c | 0x28 | 0x2c | 0x3c => byte(hw.read(dword, 4)),
            COMMAND => {
                let mut v = hw.read(COMMAND, 4);
                v &= !(u32::from(STATUS_CAPABILITIES) << 16);
                if self.next_visible(None) != 0 {
                    v |= u32::from(STATUS_CAPABILITIES) << 16;
                }
                byte(v)
            }
            0x10..=0x24 => byte(self.bar_value(usize::from((dword - BAR0) / 4))),
            ROM_BAR | 0x38 => 0,
            CAP_POINTER => byte(u32::from(self.next_visible(None))),
            _ => self.read_device_byte(hw, offset),
        }
    }

    fn bar_value(&self, i: usize) -> u32 {
        match self.slots[i] {
            Slot::Absent => 0,
            Slot::Low { base, mask, flags } => (if self.sizing[i] { mask } else { base }) | flags,
            Slot::High { base, mask } => {
                if self.sizing[i] {
                    mask
                } else {
                    base
                }
            }
        }
    }

    fn read_device_byte(&mut self, hw: &mut impl Hardware, offset: u16) -> u8 {
        let cap = self.cap_at(offset);
        if let Some(i) = cap {
            if self.hidden[i] {
                return 0;
            }
            let start = u16::from(self.caps[i].0);
            if offset == start + 1 {
                return self.next_visible(Some(i));
            }
            if let Some(v) = self.msi.filter(|m| m.offset == start).and_then(|msi| self.msi_shadow_byte(&msi, offset)) {
                return v;
            }
        }
        (hw.read(offset & !3, 4) >> (8 * u32::from(offset & 3))) as u8
    }

    fn msi_shadow_byte(&self, msi: &MsiLayout, offset: u16) -> Option<u8> {
        let rel = offset - msi.offset;
        let s = &self.shadow;
        let control = msi.control_ro | (s.control & (1 | (0b111 << 4)));
        let value = match rel {
            2 | 3 => (u32::from(control) << 16) >> (8 * (rel & 3)),
            4..=7 => s.address >> (8 * (rel & 3)),
            _ if msi.is_64 && (8..=11).contains(&rel) => s.address_high >> (8 * (rel & 3)),
            _ if offset >= msi.data_offset() && offset < msi.data_offset() + 2 => {
                u32::from(s.data) >> (8 * (offset - msi.data_offset()))
            }
            _ if offset >= msi.data_offset() + 2 && offset < msi.data_offset() + 4 => 0,
            _ => return None,
        };
        Some(value as u8)
    }

    /// A partition's write of the low `size` bytes of `value` (1, 2, 4; naturally aligned)
    /// at `offset` < 0x100. Returns what the caller should log.
    pub fn write(&mut self, hw: &mut impl Hardware, offset: u16, size: u8, value: u32) -> Option<Event> {
        let dword = offset & !3;
        let shift = 8 * u32::from(offset & 3);
        let bytes: u32 = if size >= 4 { u32::MAX } else { ((1u32 << (8 * u32::from(size))) - 1) << shift };
        let value = (value << shift) & bytes;
        match dword {
            COMMAND => {
                if bytes & 0xffff != 0 {
                    let current = hw.read(COMMAND, 2) as u16;
                    let written = ((u32::from(current) & !bytes) | value) as u16;
                    let command = (current & !COMMAND_ALLOWED) | (written & COMMAND_ALLOWED);
                    hw.write(COMMAND, 2, u32::from(command));
                }
                if bytes & 0xffff_0000 != 0 {
                    let clear = ((value & bytes) >> 16) as u16 & STATUS_W1C;
                    if clear != 0 {
                        hw.write(STATUS, 2, u32::from(clear));
                    }
                }
                None
            }
            0x0c => {
                // Cache line size and latency timer only.
                for k in 0..2u16 {
                    if bytes & (0xff << (8 * k)) != 0 {
                        hw.write(0x0c + k, 1, (value >> (8 * k)) & 0xff);
                    }
                }
                None
            }
            INTERRUPT_LINE => {
                if bytes & 0xff != 0 {
                    hw.write(INTERRUPT_LINE, 1, value & 0xff);
                }
                None
            }
            0x10..=0x24 => self.write_bar(usize::from((dword - BAR0) / 4), bytes, value),
            0x00..=0x3f => None,
            _ => self.write_device(hw, offset, size, value >> shift),
        }
    }

    fn write_bar(&mut self, i: usize, bytes: u32, value: u32) -> Option<Event> {
        let current = self.bar_value(i);
        let written = (current & !bytes) | value;
        self.sizing[i] = false;
        let (base, mask) = match self.slots[i] {
            Slot::Absent => return None,
            Slot::Low { base, mask, .. } => (base, mask),
            Slot::High { base, mask } => (base, mask),
        };
        if written & mask == mask {
            // All-ones in the address bits: sizing (PCI 3.0 6.2.5.1).
            self.sizing[i] = true;
            return None;
        }
        if written & mask == base {
            return None;
        }
        Some(Event::BarRelocationRefused { index: i as u8, value: written, declared: base })
    }

    fn write_device(&mut self, hw: &mut impl Hardware, offset: u16, size: u8, value: u32) -> Option<Event> {
        let Some(i) = self.cap_at(offset) else {
            // Device-specific registers before the first capability.
            hw.write(offset, size, value);
            return None;
        };
        if self.hidden[i] {
            return Some(Event::WriteDropped { offset });
        }
        let start = u16::from(self.caps[i].0);
        if offset < start + 2 {
            // The capability ID and next pointer are read-only; a wider write may reach
            // the register after them.
            if size == 4 {
                return self.write_device(hw, start + 2, 2, value >> 16);
            }
            return None;
        }
        if self.msix.is_some_and(|m| m.layout.offset == start) {
            // Message Control: only MSI-X Enable and Function Mask; the table and PBA
            // registers are read-only (PCI 3.0 6.8.2.3).
            let control_at = start + msix::CONTROL;
            let (mut mask, mut bits) = (0u16, 0u16);
            for k in 0..u16::from(size) {
                let at = offset + k;
                if at == control_at || at == control_at + 1 {
                    let pos = at - control_at;
                    mask |= 0xff << (8 * pos);
                    bits |= (((value >> (8 * k)) & 0xff) as u16) << (8 * pos);
                }
            }
            let mask = mask & msix::CONTROL_WRITABLE;
            if mask != 0 {
                let current = hw.read(control_at, 2) as u16;
                hw.write(control_at, 2, u32::from((current & !mask) | (bits & mask)));
            }
            return None;
        }
        match self.msi.filter(|m| m.offset == start) {
            Some(msi) if offset < msi.mask_offset() => self.write_msi(hw, &msi, offset, size, value),
            _ => {
                hw.write(offset, size, value);
                None
            }
        }
    }

    fn write_msi(
        &mut self,
        hw: &mut impl Hardware,
        msi: &MsiLayout,
        offset: u16,
        size: u8,
        value: u32,
    ) -> Option<Event> {
        for k in 0..u16::from(size) {
            let b = (value >> (8 * k)) as u8;
            let at = offset + k;
            let rel = at - msi.offset;
            let set = |word: &mut u32, pos: u16| {
                *word = (*word & !(0xff << (8 * pos))) | (u32::from(b) << (8 * pos));
            };
            let s = &mut self.shadow;
            match rel {
                2 | 3 => {
                    let mut c = u32::from(s.control);
                    set(&mut c, rel - 2);
                    s.control = c as u16 & (1 | (0b111 << 4));
                }
                4..=7 => set(&mut s.address, rel - 4),
                _ if msi.is_64 && (8..=11).contains(&rel) => set(&mut s.address_high, rel - 8),
                _ if at >= msi.data_offset() && at < msi.data_offset() + 2 => {
                    let mut d = u32::from(s.data);
                    set(&mut d, at - msi.data_offset());
                    s.data = d as u16;
                }
                _ => {}
            }
        }
        self.program_msi(hw, msi)
    }

    /// Brings the hardware's MSI capability in line with the shadow: disabled while
    /// re-programmed, enabled only with a sanitized message.
    fn program_msi(&mut self, hw: &mut impl Hardware, msi: &MsiLayout) -> Option<Event> {
        let control_hw = hw.read(msi.offset + 2, 2) as u16;
        let disabled = control_hw & !(1 | (0b111 << 4));
        hw.write(msi.offset + 2, 2, u32::from(disabled));
        if self.shadow.control & 1 == 0 {
            return None;
        }
        let requested_mme = (self.shadow.control >> 4) & 0b111;
        let mme = requested_mme.min((msi.control_ro >> 1) & 0b111);
        let (message, event) = match sanitize_msi(
            self.shadow.address,
            if msi.is_64 { self.shadow.address_high } else { 0 },
            self.shadow.data,
            1 << mme,
            self.msi_messages,
            &self.apic_ids[..self.apic_count],
        ) {
            Ok(ok) => ok,
            Err(refusal) => return Some(Event::MsiRefused(refusal)),
        };
        hw.write(msi.offset + 4, 4, message.address);
        if msi.is_64 {
            hw.write(msi.offset + 8, 4, 0);
        }
        hw.write(msi.data_offset(), 2, u32::from(message.data));
        hw.write(msi.offset + 2, 2, u32::from(disabled | (mme << 4) | 1));
        event
    }
}

impl MsixPlace {
    /// The page-aligned range `[start, end)` holding the table, within its BAR: the pages
    /// the owner's EPT/NPT leave unmapped so that every access to them is emulated.
    pub fn trapped_pages(&self) -> (u64, u64) {
        let start = self.table & !0xfff;
        let end = (self.table + self.layout.table_len() + 0xfff) & !0xfff;
        (start, end.min(self.bar_base + self.bar_size))
    }

    /// For an access at physical `address` in the trapped pages: its offset in the table
    /// (emulated, [`FunctionView::msix_read`] and [`FunctionView::msix_write`]), or `None`
    /// for the rest of those pages (the PBA, other registers), which the caller passes to
    /// the hardware with the access's size.
    pub fn table_offset(&self, address: u64) -> Option<u64> {
        address.checked_sub(self.table).filter(|&offset| offset < self.layout.table_len())
    }
}

/// Where the MSI-X capability at `offset` puts its table, if the hypervisor can trap it: the
/// table's BAR is a declared memory BAR, the table lies inside it, and the BAR lies below
/// `config.mmio_reachable_end`.
fn msix_place(hw: &mut impl Hardware, config: &FunctionConfig<'_>, offset: u16) -> Option<MsixPlace> {
    let control = hw.read(offset + msix::CONTROL, 2) as u16;
    let layout = msix::Layout::parse(offset, control, hw.read(offset + msix::TABLE, 4), hw.read(offset + msix::PBA, 4));
    let bar = config.bars.iter().find(|b| b.index == layout.table_bir)?;
    let raw = hw.read(BAR0 + 4 * u16::from(bar.index), 4);
    let end = bar.base.checked_add(bar.size)?;
    let table_end = u64::from(layout.table_offset) + layout.table_len();
    if raw & 1 != 0 || table_end > bar.size || end > config.mmio_reachable_end {
        return None;
    }
    Some(MsixPlace { layout, table: bar.base + u64::from(layout.table_offset), bar_base: bar.base, bar_size: bar.size })
}

/// Reads of whole dwords through `hw`, the last one remembered.
struct OneDword<'a, H> {
    hw: &'a mut H,
    dword: Option<(u16, u32)>,
}

impl<H: Hardware> Hardware for OneDword<'_, H> {
    fn read(&mut self, offset: u16, size: u8) -> u32 {
        if size != 4 {
            return self.hw.read(offset, size);
        }
        match self.dword {
            Some((at, value)) if at == offset => value,
            _ => {
                let value = self.hw.read(offset, 4);
                self.dword = Some((offset, value));
                value
            }
        }
    }

    fn write(&mut self, offset: u16, size: u8, value: u32) {
        self.dword = None;
        self.hw.write(offset, size, value);
    }
}

/// A message as the hardware sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    /// Message address (low 32 bits; the upper half is 0).
    pub address: u32,
    /// Message data.
    pub data: u16,
}

/// The message a partition asked for (`address`, `data`, `count` vectors), as the hardware
/// may send it (Intel SDM Vol. 3A 11.11.1-11.11.2, "Message Address Register Format" and
/// "Message Data Register Format"; AMD the same): physical destination mode, redirection
/// hint clear, the requested APIC ID if it is one of `apic_ids` (else the first, with
/// [`Event::MsiRetargeted`]), fixed delivery, edge triggered.
pub fn sanitize_msi(
    address: u32,
    address_high: u32,
    data: u16,
    count: u8,
    board_messages: u8,
    apic_ids: &[u8],
) -> Result<(MsiMessage, Option<Event>), MsiRefusal> {
    if board_messages == 0 {
        return Err(MsiRefusal::NotAllowed);
    }
    if address >> 20 != 0xfee || address_high != 0 {
        return Err(MsiRefusal::NotInterruptAddress);
    }
    let mode = ((data >> 8) & 0b111) as u8;
    // 000 fixed; 001 lowest priority, delivered as fixed to one core.
    if mode > 1 {
        return Err(MsiRefusal::DeliveryMode(mode));
    }
    let vector = data as u8;
    let last = u16::from(vector) | u16::from(count.max(1) - 1);
    if vector < 0x20 || last > 0xfe {
        return Err(MsiRefusal::Vector(vector));
    }
    let &first = apic_ids.first().ok_or(MsiRefusal::NoDestination)?;
    let requested = (address >> 12) as u8;
    let logical = address & (1 << 2) != 0;
    let (to, event) = if !logical && apic_ids.contains(&requested) {
        (requested, None)
    } else {
        (first, Some(Event::MsiRetargeted { requested, to: first }))
    };
    Ok((MsiMessage { address: 0xfee0_0000 | (u32::from(to) << 12), data: u16::from(vector) }, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A type 0 function in 256 bytes: reads and writes land in the array, with the BARs'
    /// read-only bits and the command/status rules of real hardware left out (the view
    /// never writes BARs; the tests check what reaches the array).
    struct Fake {
        space: [u8; 256],
        writes: std::vec::Vec<(u16, u8, u32)>,
    }

    impl Hardware for Fake {
        fn read(&mut self, offset: u16, size: u8) -> u32 {
            (0..u16::from(size)).fold(0, |v, k| v | u32::from(self.space[usize::from(offset + k)]) << (8 * k))
        }
        fn write(&mut self, offset: u16, size: u8, value: u32) {
            self.writes.push((offset, size, value));
            for k in 0..u16::from(size) {
                self.space[usize::from(offset + k)] = (value >> (8 * k)) as u8;
            }
        }
    }

    fn put(space: &mut [u8; 256], offset: usize, bytes: &[u8]) {
        space[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    /// edu-like: vendor 1234 device 11e8, BAR0 32-bit memory at 0xfea00000 (1 MiB), BAR2/3
    /// a 64-bit prefetchable BAR, BAR4 I/O; capabilities PM at 0x40, MSI (64-bit, maskable)
    /// at 0x50, MSI-X at 0x70, PCIe at 0x80.
    fn fake() -> Fake {
        let mut s = [0u8; 256];
        put(&mut s, 0x00, &[0x34, 0x12, 0xe8, 0x11]);
        put(&mut s, 0x04, &[0x07, 0x00, 0x10, 0x00]);
        put(&mut s, 0x08, &[0x10, 0x00, 0xff, 0x00]);
        put(&mut s, 0x10, &0xfea0_0000u32.to_le_bytes());
        put(&mut s, 0x18, &0x0000_000cu32.to_le_bytes());
        put(&mut s, 0x1c, &0x0000_0001u32.to_le_bytes());
        put(&mut s, 0x20, &0xc041u32.to_le_bytes());
        put(&mut s, 0x30, &0xfff0_0001u32.to_le_bytes());
        put(&mut s, 0x34, &[0x40]);
        put(&mut s, 0x3c, &[0x0a, 0x01]);
        put(&mut s, 0x40, &[0x01, 0x50, 0x03, 0x00]);
        // MSI: capable of 4 (MMC 2), 64-bit, per-vector masking; left enabled by firmware.
        put(&mut s, 0x50, &[0x05, 0x70, 0x85, 0x01]);
        put(&mut s, 0x70, &[0x11, 0x80, 0x00, 0x00]);
        put(&mut s, 0x80, &[0x10, 0x00, 0x02, 0x00]);
        Fake { space: s, writes: std::vec::Vec::new() }
    }

    const BARS: &[DeclaredBar] = &[
        DeclaredBar { index: 0, base: 0xfea0_0000, size: 0x10_0000 },
        DeclaredBar { index: 2, base: 0x1_0000_0000, size: 0x4000 },
        DeclaredBar { index: 4, base: 0xc040, size: 0x20 },
    ];

    fn config(hidden: &'static [u8]) -> FunctionConfig<'static> {
        FunctionConfig {
            bars: BARS,
            hidden_capabilities: hidden,
            msi_messages: 2,
            apic_ids: &[2, 3],
            mmio_reachable_end: 1 << 32,
        }
    }

    fn view(hidden: &'static [u8]) -> (Fake, FunctionView) {
        let mut hw = fake();
        let v = FunctionView::new(&mut hw, &config(hidden));
        hw.writes.clear();
        (hw, v)
    }

    #[test]
    fn identity_reads_from_hardware() {
        let (mut hw, mut v) = view(&[]);
        assert_eq!(v.read(&mut hw, 0, 4), 0x11e8_1234);
        assert_eq!(v.read(&mut hw, 2, 2), 0x11e8);
        assert_eq!(v.read(&mut hw, 0x0b, 1), 0x00);
        assert_eq!(v.read(&mut hw, 0x0a, 1), 0xff);
        assert_eq!(v.read(&mut hw, 0x3c, 2), 0x010a);
        v.write(&mut hw, 0, 4, 0);
        v.write(&mut hw, 0x08, 4, 0);
        assert!(hw.writes.is_empty());
    }

    #[test]
    fn bars_read_declared_base_and_size_by_all_ones() {
        let (mut hw, mut v) = view(&[]);
        assert_eq!(v.read(&mut hw, 0x10, 4), 0xfea0_0000);
        assert_eq!(v.write(&mut hw, 0x10, 4, 0xffff_ffff), None);
        assert_eq!(v.read(&mut hw, 0x10, 4), 0xfff0_0000, "1 MiB");
        assert_eq!(v.write(&mut hw, 0x10, 4, 0xfea0_0000), None);
        assert_eq!(v.read(&mut hw, 0x10, 4), 0xfea0_0000);
        // 64-bit BAR: flags kept, upper half virtualized as well.
        assert_eq!(v.read(&mut hw, 0x18, 4), 0x0000_000c);
        assert_eq!(v.read(&mut hw, 0x1c, 4), 0x1);
        v.write(&mut hw, 0x18, 4, 0xffff_ffff);
        v.write(&mut hw, 0x1c, 4, 0xffff_ffff);
        assert_eq!(v.read(&mut hw, 0x18, 4), 0xffff_c00c);
        assert_eq!(v.read(&mut hw, 0x1c, 4), 0xffff_ffff);
        v.write(&mut hw, 0x18, 4, 0xc);
        v.write(&mut hw, 0x1c, 4, 1);
        assert_eq!((v.read(&mut hw, 0x18, 4), v.read(&mut hw, 0x1c, 4)), (0xc, 1));
        // I/O BAR: flag bit 0.
        assert_eq!(v.read(&mut hw, 0x20, 4), 0xc041);
        v.write(&mut hw, 0x20, 4, 0xffff_ffff);
        assert_eq!(v.read(&mut hw, 0x20, 4), 0xffff_ffe1);
        // Undeclared BARs read 0 and take nothing.
        assert_eq!(v.read(&mut hw, 0x14, 4), 0);
        v.write(&mut hw, 0x14, 4, 0xffff_ffff);
        assert_eq!(v.read(&mut hw, 0x14, 4), 0);
        assert!(hw.writes.is_empty(), "the hardware's BARs are never written");
    }

    #[test]
    fn bar_relocation_is_refused() {
        let (mut hw, mut v) = view(&[]);
        assert_eq!(
            v.write(&mut hw, 0x10, 4, 0xe000_0000),
            Some(Event::BarRelocationRefused { index: 0, value: 0xe000_0000, declared: 0xfea0_0000 })
        );
        assert_eq!(v.read(&mut hw, 0x10, 4), 0xfea0_0000);
        assert!(v.write(&mut hw, 0x1c, 4, 2).is_some());
        assert_eq!(v.read(&mut hw, 0x1c, 4), 1);
        // A 16-bit write of the upper half of the base that keeps it is fine.
        assert_eq!(v.write(&mut hw, 0x12, 2, 0xfea0), None);
        assert!(hw.writes.is_empty());
    }

    #[test]
    fn one_access_reads_the_hardware_once() {
        struct Counting(Fake, usize);
        impl Hardware for Counting {
            fn read(&mut self, offset: u16, size: u8) -> u32 {
                self.1 += 1;
                self.0.read(offset, size)
            }
            fn write(&mut self, offset: u16, size: u8, value: u32) {
                self.0.write(offset, size, value);
            }
        }
        let (hw, mut v) = view(&[]);
        let mut hw = Counting(hw, 0);
        assert_eq!(v.read(&mut hw, 0x04, 4), 0x0010_0007);
        assert_eq!(v.read(&mut hw, 0x00, 4), 0x11e8_1234);
        assert_eq!(hw.1, 2);
    }

    #[test]
    fn rom_bar_reads_zero() {
        let (mut hw, mut v) = view(&[]);
        assert_eq!(v.read(&mut hw, 0x30, 4), 0);
        v.write(&mut hw, 0x30, 4, 0xffff_f801);
        assert_eq!(v.read(&mut hw, 0x30, 4), 0);
        assert!(hw.writes.is_empty());
    }

    #[test]
    fn command_passes_only_allowed_bits_and_status_only_clears_errors() {
        let (mut hw, mut v) = view(&[]);
        v.write(&mut hw, 0x04, 2, 0xffff);
        assert_eq!(hw.read(0x04, 2), u32::from(COMMAND_ALLOWED));
        v.write(&mut hw, 0x04, 2, 0);
        assert_eq!(hw.read(0x04, 2), 0);
        // A dword write: command, and status bits written 1 only where they are W1C.
        hw.writes.clear();
        v.write(&mut hw, 0x04, 4, 0xffff_0006);
        assert_eq!(hw.writes, [(0x04, 2, 0x6), (0x06, 2, u32::from(STATUS_W1C))]);
    }

    #[test]
    fn capability_list_skips_hidden_and_msix() {
        let (mut hw, mut v) = view(&[0x01, CAP_MSIX]);
        assert_eq!(v.read(&mut hw, 0x34, 1), 0x50, "PM hidden");
        assert_eq!(v.read(&mut hw, 0x50, 2), 0x8005, "MSI links to PCIe past MSI-X");
        assert_eq!(v.read(&mut hw, 0x80, 2), 0x0010);
        assert_eq!(v.read(&mut hw, 0x40, 4), 0, "a hidden capability's bytes read 0");
        assert_eq!(v.read(&mut hw, 0x70, 4), 0);
        assert_eq!(v.write(&mut hw, 0x72, 2, 0x8000), Some(Event::WriteDropped { offset: 0x72 }));
        assert_eq!(v.read(&mut hw, 0x06, 2) & 0x10, 0x10);
        let seen: std::vec::Vec<u8> = v.visible_capabilities().map(|(_, id)| id).collect();
        assert_eq!(seen, [CAP_MSI, 0x10]);
    }

    /// The fake's MSI-X capability with 5 entries: table at 0x2000 of BAR0, PBA at 0x3000.
    fn with_msix(table: u32) -> Fake {
        let mut hw = fake();
        put(&mut hw.space, 0x70, &[0x11, 0x80, 0x04, 0xc0]);
        put(&mut hw.space, 0x74, &table.to_le_bytes());
        put(&mut hw.space, 0x78, &0x3000u32.to_le_bytes());
        hw
    }

    #[test]
    fn msix_is_visible_with_a_trappable_table() {
        let mut hw = with_msix(0x2000);
        let mut v = FunctionView::new(&mut hw, &config(&[]));
        assert_eq!(hw.read(0x72, 2), 0x0004, "enable and function mask cleared at start");
        let place = v.msix().expect("MSI-X visible");
        assert_eq!(place.table, 0xfea0_2000);
        assert_eq!(place.layout.entries, 5);
        assert_eq!(place.layout.pba_offset, 0x3000);
        assert_eq!(v.read(&mut hw, 0x50, 2), 0x7005, "MSI links to MSI-X");
        assert_eq!(v.read(&mut hw, 0x70, 4), 0x0004_8011);
        assert_eq!(v.read(&mut hw, 0x74, 4), 0x2000);
        assert_eq!(v.read(&mut hw, 0x78, 4), 0x3000);
        // Enable and Function Mask pass; the table size and the BIR registers do not.
        hw.writes.clear();
        assert_eq!(v.write(&mut hw, 0x72, 2, 0xc7ff), None);
        assert_eq!(hw.read(0x72, 2), 0xc004);
        assert_eq!(v.write(&mut hw, 0x70, 4, 0x3fff_0000), None);
        assert_eq!(hw.read(0x72, 2), 0x0004);
        assert_eq!(v.write(&mut hw, 0x73, 1, 0x80), None);
        assert_eq!(hw.read(0x72, 2), 0x8004);
        v.write(&mut hw, 0x74, 4, 0x1234_5003);
        v.write(&mut hw, 0x78, 4, 0);
        assert_eq!((hw.read(0x74, 4), hw.read(0x78, 4)), (0x2000, 0x3000));
        // The table: shadowed through the view.
        let mut table = std::collections::BTreeMap::new();
        struct T<'a>(&'a mut std::collections::BTreeMap<u64, u32>);
        impl msix::TableHardware for T<'_> {
            fn write(&mut self, offset: u64, value: u32) {
                self.0.insert(offset, value);
            }
        }
        v.msix_write(&mut T(&mut table), 0, 4, 0xfee0_3000);
        v.msix_write(&mut T(&mut table), 8, 4, 0x61);
        v.msix_write(&mut T(&mut table), 12, 4, 0);
        assert_eq!(table[&0], 0xfee0_3000);
        assert_eq!(table[&12], 0);
        assert_eq!(v.msix_read(8, 4), 0x61);
    }

    #[test]
    fn msix_trapped_pages_and_what_passes_through() {
        // Table at 0x2000 (5 entries, 80 bytes) of BAR0: one page trapped; in it, only the
        // table is emulated.
        let mut hw = with_msix(0x2000);
        let place = FunctionView::new(&mut hw, &config(&[])).msix().unwrap();
        assert_eq!(place.trapped_pages(), (0xfea0_2000, 0xfea0_3000));
        assert_eq!(place.table_offset(0xfea0_2000), Some(0));
        assert_eq!(place.table_offset(0xfea0_204c), Some(0x4c));
        assert_eq!(place.table_offset(0xfea0_2050), None, "past the table: hardware");
        assert_eq!(place.table_offset(0xfea0_1ffc), None);
        // A PBA sharing the table's page passes through; a table across a page boundary
        // traps both pages; a table at the BAR's end does not reach past it.
        put(&mut hw.space, 0x78, &0x2040u32.to_le_bytes());
        let v = FunctionView::new(&mut hw, &config(&[]));
        let place = v.msix().unwrap();
        assert_eq!(place.layout.pba_offset, 0x2040);
        assert_eq!(place.table_offset(0xfea0_2040), Some(0x40), "the 5th entry, not the PBA");
        assert_eq!(place.table_offset(0xfea0_2058), None, "the PBA's second qword");
        assert_eq!(v.msix_read(0x4c, 4), 1, "entries read masked from the shadow");
        let mut hw = with_msix(0x2ff0);
        let place = FunctionView::new(&mut hw, &config(&[])).msix().unwrap();
        assert_eq!(place.trapped_pages(), (0xfea0_2000, 0xfea0_4000));
        let mut hw = with_msix(0xf_fff0 - 0x40);
        let place = FunctionView::new(&mut hw, &config(&[])).msix().unwrap();
        assert_eq!(place.trapped_pages(), (0xfeaf_f000, 0xfeb0_0000));
    }

    #[test]
    fn msix_is_hidden_when_its_table_cannot_be_trapped() {
        // Table in an undeclared BAR (BIR 1), beyond its BAR, in an I/O BAR, or above the
        // reachable MMIO; and hidden by the board.
        for (table, hidden) in
            [(0x2001u32, &[][..]), (0x10_0000, &[][..]), (0x0004, &[][..]), (0x2000, &[CAP_MSIX][..])]
        {
            let mut hw = with_msix(table);
            let v = FunctionView::new(&mut hw, &FunctionConfig { hidden_capabilities: hidden, ..config(&[]) });
            assert_eq!(v.msix(), None, "{table:#x}");
            assert!(v.visible_capabilities().all(|(_, id)| id != CAP_MSIX));
        }
        let mut hw = with_msix(0x2000);
        let v = FunctionView::new(&mut hw, &FunctionConfig { mmio_reachable_end: 0xfea0_0000, ..config(&[]) });
        assert_eq!(v.msix(), None);
    }

    #[test]
    fn status_bit_clears_when_every_capability_is_hidden() {
        let (mut hw, mut v) = view(&[0x01, 0x05, CAP_MSIX, 0x10]);
        assert_eq!(v.read(&mut hw, 0x34, 1), 0);
        assert_eq!(v.read(&mut hw, 0x06, 2) & 0x10, 0);
        assert_eq!(v.read(&mut hw, 0x04, 4) & 0x10_0000, 0);
    }

    #[test]
    fn msi_is_shadowed_and_programmed_sanitized() {
        let (mut hw, mut v) = view(&[]);
        assert_eq!(hw.read(0x52, 2) & 1, 0, "firmware's enable cleared at start");
        // Capable of 4, the board allows 2: MMC reads 1 (2 vectors).
        assert_eq!(v.read(&mut hw, 0x52, 2), 0x0182);
        v.write(&mut hw, 0x54, 4, 0xfee0_3000);
        v.write(&mut hw, 0x58, 4, 0);
        v.write(&mut hw, 0x5c, 2, 0x0140);
        assert_eq!(v.write(&mut hw, 0x52, 2, 0x0011), None);
        assert_eq!(hw.read(0x54, 4), 0xfee0_3000);
        assert_eq!(hw.read(0x5c, 2), 0x40, "lowest priority delivered as fixed");
        assert_eq!(hw.read(0x52, 2), 0x0195, "enabled with 2 vectors");
        assert_eq!(v.read(&mut hw, 0x5c, 2), 0x0140, "the shadow reads what was written");
        assert_eq!(v.read(&mut hw, 0x52, 2), 0x0193);
    }

    #[test]
    fn msi_to_another_core_is_retargeted_and_bad_messages_refused() {
        let (mut hw, mut v) = view(&[]);
        v.write(&mut hw, 0x54, 4, 0xfee0_1000);
        v.write(&mut hw, 0x5c, 2, 0x41);
        assert_eq!(v.write(&mut hw, 0x52, 2, 1), Some(Event::MsiRetargeted { requested: 1, to: 2 }));
        assert_eq!(hw.read(0x54, 4), 0xfee0_2000);
        assert_eq!(v.read(&mut hw, 0x54, 4), 0xfee0_1000);
        // NMI: refused, disabled in hardware, the shadow still says enabled.
        assert_eq!(v.write(&mut hw, 0x5c, 2, 0x0441), Some(Event::MsiRefused(MsiRefusal::DeliveryMode(4))));
        assert_eq!(hw.read(0x52, 2) & 1, 0);
        assert_eq!(v.read(&mut hw, 0x52, 2) & 1, 1);
        assert_eq!(v.write(&mut hw, 0x5c, 2, 0x10), Some(Event::MsiRefused(MsiRefusal::Vector(0x10))));
        assert_eq!(v.write(&mut hw, 0x5c, 2, 0x50), Some(Event::MsiRetargeted { requested: 1, to: 2 }));
        assert_eq!(hw.read(0x52, 2) & 1, 1);
        assert_eq!(v.write(&mut hw, 0x54, 4, 0xfec0_0000), Some(Event::MsiRefused(MsiRefusal::NotInterruptAddress)));
        assert_eq!(hw.read(0x52, 2) & 1, 0);
        // Disabling is always fine; mask bits pass through.
        assert_eq!(v.write(&mut hw, 0x52, 2, 0), None);
        v.write(&mut hw, 0x60, 4, 1);
        assert_eq!(hw.read(0x60, 4), 1);
    }

    #[test]
    fn msi_32_bit_layout_and_multiple_message_cap() {
        let mut hw = fake();
        // 32-bit MSI, capable of 1 message: data at +8.
        put(&mut hw.space, 0x52, &[0x00, 0x00]);
        let mut v = FunctionView::new(&mut hw, &config(&[]));
        v.write(&mut hw, 0x54, 4, 0xfee0_2000);
        v.write(&mut hw, 0x58, 2, 0x60);
        // MME 2 (4 messages) asked: capped to what the function (and the board) allow.
        assert_eq!(v.write(&mut hw, 0x52, 2, 0x21), None);
        assert_eq!(hw.read(0x58, 2), 0x60);
        assert_eq!(hw.read(0x52, 2), 0x01);
        assert_eq!(v.read(&mut hw, 0x58, 4), 0x60, "data, then 2 reserved bytes");
        assert_eq!(v.read(&mut hw, 0x52, 2), 0x21, "the shadow keeps what was written");
    }

    #[test]
    fn sanitize_rules() {
        let ids = [4u8, 6];
        let ok = |a, d, n| sanitize_msi(a, 0, d, n, 4, &ids);
        assert_eq!(ok(0xfee0_6000, 0x30, 1), Ok((MsiMessage { address: 0xfee0_6000, data: 0x30 }, None)));
        // Logical mode and redirection hint: retargeted to physical, first core.
        assert_eq!(
            ok(0xfee0_600c, 0x30, 1),
            Ok((MsiMessage { address: 0xfee0_4000, data: 0x30 }, Some(Event::MsiRetargeted { requested: 6, to: 4 })))
        );
        // Level-triggered bits dropped: MSI is edge.
        assert_eq!(ok(0xfee0_4000, 0xc030, 1).map(|m| m.0.data), Ok(0x30));
        for mode in [2u16, 3, 4, 5, 6, 7] {
            assert_eq!(ok(0xfee0_4000, (mode << 8) | 0x30, 1), Err(MsiRefusal::DeliveryMode(mode as u8)));
        }
        assert_eq!(ok(0xfee0_4000, 0xff, 1), Err(MsiRefusal::Vector(0xff)));
        assert_eq!(ok(0xfee0_4000, 0x1f, 1), Err(MsiRefusal::Vector(0x1f)));
        assert_eq!(ok(0xfee0_4000, 0xfc, 4), Err(MsiRefusal::Vector(0xfc)), "0xFF in the block");
        assert_eq!(sanitize_msi(0xfee0_4000, 1, 0x30, 1, 4, &ids), Err(MsiRefusal::NotInterruptAddress));
        assert_eq!(sanitize_msi(0xfee0_4000, 0, 0x30, 1, 0, &ids), Err(MsiRefusal::NotAllowed));
        assert_eq!(sanitize_msi(0xfee0_4000, 0, 0x30, 1, 1, &[]), Err(MsiRefusal::NoDestination));
    }

    #[test]
    fn arbitrary_accesses_never_panic_or_write_bars() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let (mut hw, mut v) = view(&[0x10]);
        for _ in 0..50_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let size = [1u8, 2, 4][(state % 3) as usize];
            let offset = ((state >> 8) as u16 & 0xff) & !(u16::from(size) - 1);
            if state & (1 << 40) != 0 {
                v.write(&mut hw, offset, size, (state >> 16) as u32);
            } else {
                v.read(&mut hw, offset, size);
            }
        }
        assert!(hw.writes.iter().all(|(o, _, _)| !(0x10..0x28).contains(o) && *o != 0x30 && *o >= 4));
    }
}
