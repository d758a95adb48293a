//! An I/O APIC's registers (Intel 82093AA datasheet, 3.0; ICH9 datasheet 13.5).
//!
//! Every register but the EOI register is reached in two steps: the index goes to IOREGSEL
//! (+0x00), then the register is read or written through IOWIN (+0x10). The two steps must
//! not interleave with another CPU's, so the caller holds one lock per IOAPIC around every
//! method here (`&mut self`). The register window is reached through [`Window`], so the
//! sequences have host tests with a fake.

/// Offset of IOREGSEL.
const IOREGSEL: u64 = 0x00;
/// Offset of IOWIN.
const IOWIN: u64 = 0x10;
/// Offset of the EOI register (version 0x20 and later).
const EOI: u64 = 0x40;
/// The first redirection-table register.
const TABLE: u8 = 0x10;
const REG_VERSION: u8 = 0x01;
/// Mask bit of an entry's low dword.
const MASK: u32 = 1 << 16;

/// 32-bit registers at offsets from an IOAPIC's base.
pub trait Window {
    fn read32(&mut self, offset: u64) -> u32;
    fn write32(&mut self, offset: u64, value: u32);
}

/// The register window at a physical address, identity-mapped uncached.
pub struct Mmio {
    base: u64,
}

impl Mmio {
    /// # Safety
    /// `base` must be the register window of an IOAPIC the caller owns, identity-mapped
    /// uncached, and only reached through this value (under the caller's lock).
    pub const unsafe fn new(base: u64) -> Self {
        Mmio { base }
    }
}

impl Window for Mmio {
    fn read32(&mut self, offset: u64) -> u32 {
        // SAFETY: `new`'s contract: an IOAPIC register, 32-bit aligned, mapped uncached.
        unsafe { core::ptr::read_volatile((self.base + offset) as *const u32) }
    }

    fn write32(&mut self, offset: u64, value: u32) {
        // SAFETY: as in `read32`.
        unsafe { core::ptr::write_volatile((self.base + offset) as *mut u32, value) }
    }
}

/// One IOAPIC.
pub struct IoApic<W: Window> {
    window: W,
}

impl<W: Window> IoApic<W> {
    pub const fn new(window: W) -> Self {
        IoApic { window }
    }

    /// Reads register `index` (IOREGSEL, then IOWIN).
    pub fn read(&mut self, index: u8) -> u32 {
        self.window.write32(IOREGSEL, u32::from(index));
        self.window.read32(IOWIN)
    }

    /// Writes register `index`.
    pub fn write(&mut self, index: u8, value: u32) {
        self.window.write32(IOREGSEL, u32::from(index));
        self.window.write32(IOWIN, value);
    }

    /// The version register: (version, maximum redirection entry).
    pub fn version(&mut self) -> (u8, u8) {
        let v = self.read(REG_VERSION);
        (v as u8, (v >> 16) as u8)
    }

    /// Pin `pin`'s redirection entry (both dwords).
    pub fn entry(&mut self, pin: u8) -> u64 {
        let low = self.read(TABLE + 2 * pin);
        let high = self.read(TABLE + 2 * pin + 1);
        u64::from(high) << 32 | u64::from(low)
    }

    /// Writes one dword of pin `pin`'s entry (`high`: bits 63:32).
    pub fn write_half(&mut self, pin: u8, high: bool, value: u32) {
        self.write(TABLE + 2 * pin + u8::from(high), value);
    }

    /// Replaces pin `pin`'s entry with `entry`, never delivering a mix of the old and new
    /// entries: the pin is masked first, then the destination and the low dword written.
    pub fn set_entry(&mut self, pin: u8, entry: u64) {
        let old_low = self.read(TABLE + 2 * pin);
        if old_low & MASK == 0 {
            self.write(TABLE + 2 * pin, old_low | MASK);
        }
        self.write(TABLE + 2 * pin + 1, (entry >> 32) as u32);
        self.write(TABLE + 2 * pin, entry as u32);
    }

    /// Masks pin `pin` with a clean entry (vector 0, fixed, physical, edge, active high,
    /// destination 0): nothing of an earlier owner's programming remains.
    pub fn mask(&mut self, pin: u8) {
        self.write(TABLE + 2 * pin, MASK);
        self.write(TABLE + 2 * pin + 1, 0);
    }

    /// Writes the EOI register (version 0x20 and later only: the caller checks): clears
    /// Remote IRR of the level-triggered entries with `vector`.
    pub fn eoi(&mut self, vector: u8) {
        self.window.write32(EOI, u32::from(vector));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records accesses; models IOREGSEL/IOWIN over a register file.
    struct Fake {
        select: u32,
        registers: [u32; 0x40],
        log: [(bool, u64, u32); 32],
        count: usize,
    }

    impl Fake {
        fn new() -> Self {
            Fake { select: 0, registers: [0; 0x40], log: [(false, 0, 0); 32], count: 0 }
        }
        fn writes(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
            self.log[..self.count].iter().filter(|a| a.0).map(|a| (a.1, a.2))
        }
    }

    impl Window for Fake {
        fn read32(&mut self, offset: u64) -> u32 {
            let v = if offset == IOWIN { self.registers[self.select as usize] } else { self.select };
            self.log[self.count] = (false, offset, v);
            self.count += 1;
            v
        }
        fn write32(&mut self, offset: u64, value: u32) {
            match offset {
                IOREGSEL => self.select = value,
                IOWIN => self.registers[self.select as usize] = value,
                _ => {}
            }
            self.log[self.count] = (true, offset, value);
            self.count += 1;
        }
    }

    #[test]
    fn registers_go_through_ioregsel_and_iowin() {
        let mut apic = IoApic::new(Fake::new());
        apic.window.registers[1] = 0x0017_0020;
        assert_eq!(apic.version(), (0x20, 23));
        apic.write(0x12, 0xabcd);
        assert_eq!(apic.window.registers[0x12], 0xabcd);
        assert_eq!(apic.window.select, 0x12);
    }

    #[test]
    fn entries_are_two_dwords() {
        let mut apic = IoApic::new(Fake::new());
        apic.window.registers[0x16] = 0x0001_8050;
        apic.window.registers[0x17] = 0x0100_0000;
        assert_eq!(apic.entry(3), 0x0100_0000_0001_8050);
        apic.write_half(3, true, 0x0200_0000);
        assert_eq!(apic.window.registers[0x17], 0x0200_0000);
    }

    #[test]
    fn set_entry_masks_an_unmasked_pin_first() {
        let mut apic = IoApic::new(Fake::new());
        apic.window.registers[0x16] = 0x50; // unmasked
        apic.set_entry(3, 0x0100_0000_0000_8060);
        let mut writes = apic.window.writes().filter(|w| w.0 == IOWIN).map(|w| w.1);
        assert_eq!([writes.next(), writes.next(), writes.next()], [Some(0x1_0050), Some(0x0100_0000), Some(0x8060)]);
        assert_eq!(writes.next(), None);
        drop(writes);
        assert_eq!(apic.entry(3), 0x0100_0000_0000_8060);
    }

    #[test]
    fn mask_writes_a_clean_entry() {
        let mut apic = IoApic::new(Fake::new());
        apic.window.registers[0x10] = 0x0000_a7ff;
        apic.window.registers[0x11] = 0xff00_0000;
        apic.mask(0);
        assert_eq!(apic.entry(0), 0x1_0000);
    }

    #[test]
    fn eoi_is_one_write_at_0x40() {
        let mut apic = IoApic::new(Fake::new());
        apic.eoi(0x61);
        let mut writes = apic.window.writes();
        assert_eq!((writes.next(), writes.next()), (Some((EOI, 0x61)), None));
    }
}
