//! The hypervisor's own access to PCI configuration space: configuration mechanism #1
//! (ports 0xCF8/0xCFC, PCI Local Bus 3.0 3.2.2.3.2) for offsets below 0x100, and the PCI
//! Express enhanced configuration window (ECAM, PCIe 5.0 7.2.2) for the whole 4 KiB of a
//! function where the board has one.
//!
//! Mechanism #1 is two steps through one global address register (CONFIG_ADDRESS at
//! 0xCF8), so [`Ports`] takes `&mut self`: the caller keeps the one instance behind a lock
//! shared by every core. ECAM accesses are single MMIO reads and writes and need none.

use x86_64::instructions::port::Port;

/// CONFIG_ADDRESS (32-bit), CONFIG_DATA (0xCFC-0xCFF).
pub const CONFIG_ADDRESS: u16 = 0xcf8;
pub const CONFIG_DATA: u16 = 0xcfc;

/// A function on segment 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bdf {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl Bdf {
    /// The CONFIG_ADDRESS value selecting `offset`'s dword of this function: enable bit 31,
    /// bus 23:16, device 15:11, function 10:8, register 7:2 (PCI 3.0 Figure 3-2).
    pub const fn config_address(self, offset: u8) -> u32 {
        (1 << 31)
            | (self.bus as u32) << 16
            | ((self.device & 0x1f) as u32) << 11
            | ((self.function & 7) as u32) << 8
            | (offset & 0xfc) as u32
    }

    /// The function CONFIG_ADDRESS `value` selects, and the register's offset; `None` when
    /// the enable bit is clear (the data port then does not reach configuration space).
    pub const fn from_config_address(value: u32) -> Option<(Bdf, u8)> {
        if value & (1 << 31) == 0 {
            return None;
        }
        let bdf =
            Bdf { bus: (value >> 16) as u8, device: ((value >> 11) & 0x1f) as u8, function: ((value >> 8) & 7) as u8 };
        Some((bdf, (value & 0xfc) as u8))
    }

    /// The offset of this function's 4 KiB in an ECAM window.
    pub const fn ecam_offset(self) -> u64 {
        (self.bus as u64) << 20 | ((self.device & 0x1f) as u64) << 15 | ((self.function & 7) as u64) << 12
    }
}

/// Configuration mechanism #1. Accesses are naturally aligned: `size` 1, 2 or 4 at an
/// `offset` that is a multiple of it.
pub struct Ports(());

impl Ports {
    /// # Safety
    /// One instance only, used under a lock: the address register is shared by all cores,
    /// and nothing else may use ports 0xCF8-0xCFF.
    pub const unsafe fn new() -> Self {
        Ports(())
    }

    pub fn read(&mut self, bdf: Bdf, offset: u8, size: u8) -> u32 {
        let data = CONFIG_DATA + u16::from(offset & 3);
        // SAFETY: `new`'s contract makes this the only user of ports 0xCF8-0xCFF; reading
        // configuration registers has no side effects on the hypervisor's memory.
        unsafe {
            Port::<u32>::new(CONFIG_ADDRESS).write(bdf.config_address(offset));
            match size {
                1 => u32::from(Port::<u8>::new(data).read()),
                2 => u32::from(Port::<u16>::new(data).read()),
                _ => Port::<u32>::new(CONFIG_DATA).read(),
            }
        }
    }

    pub fn write(&mut self, bdf: Bdf, offset: u8, size: u8, value: u32) {
        let data = CONFIG_DATA + u16::from(offset & 3);
        // SAFETY: as in `read`; the caller decides which registers it writes.
        unsafe {
            Port::<u32>::new(CONFIG_ADDRESS).write(bdf.config_address(offset));
            match size {
                1 => Port::<u8>::new(data).write(value as u8),
                2 => Port::<u16>::new(data).write(value as u16),
                _ => Port::<u32>::new(CONFIG_DATA).write(value),
            }
        }
    }
}

/// The ECAM window: `base` (identity-mapped, uncached, in the hypervisor's page tables)
/// covering buses `0..buses`.
#[derive(Debug, Clone, Copy)]
pub struct Ecam {
    base: u64,
    buses: u16,
}

impl Ecam {
    /// # Safety
    /// `base..base + buses MiB` must be the board's ECAM window, mapped uncached at its
    /// physical address.
    pub const unsafe fn new(base: u64, buses: u16) -> Self {
        Ecam { base, buses }
    }

    /// The address of `offset` (< 0x1000) of `bdf`, if the window covers its bus.
    pub fn address(&self, bdf: Bdf, offset: u16) -> Option<u64> {
        (u16::from(bdf.bus) < self.buses && offset < 0x1000).then(|| self.base + bdf.ecam_offset() + u64::from(offset))
    }

    /// Reads `size` bytes (naturally aligned); all-ones outside the window.
    pub fn read(&self, bdf: Bdf, offset: u16, size: u8) -> u32 {
        let Some(at) = self.address(bdf, offset) else { return u32::MAX };
        // SAFETY: inside the window `new` vouched for; an aligned access of the register's
        // own size, as PCIe requires of ECAM accesses.
        unsafe {
            match size {
                1 => u32::from(core::ptr::read_volatile(at as *const u8)),
                2 => u32::from(core::ptr::read_volatile(at as *const u16)),
                _ => core::ptr::read_volatile(at as *const u32),
            }
        }
    }

    /// Writes `size` bytes (naturally aligned); nothing outside the window.
    pub fn write(&self, bdf: Bdf, offset: u16, size: u8, value: u32) {
        let Some(at) = self.address(bdf, offset) else { return };
        // SAFETY: as in `read`.
        unsafe {
            match size {
                1 => core::ptr::write_volatile(at as *mut u8, value as u8),
                2 => core::ptr::write_volatile(at as *mut u16, value as u16),
                _ => core::ptr::write_volatile(at as *mut u32, value),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_address_layout() {
        let bdf = Bdf { bus: 0x12, device: 0x1f, function: 7 };
        assert_eq!(bdf.config_address(0x3d), 0x8012_ff3c);
        assert_eq!(Bdf::from_config_address(0x8012_ff3c), Some((bdf, 0x3c)));
        assert_eq!(Bdf::from_config_address(0x0012_ff3c), None);
        assert_eq!(Bdf { bus: 0, device: 4, function: 0 }.config_address(0), 0x8000_2000);
    }

    #[test]
    fn ecam_addresses() {
        // SAFETY: never dereferenced in this test.
        let ecam = unsafe { Ecam::new(0xb000_0000, 2) };
        assert_eq!(ecam.address(Bdf { bus: 1, device: 4, function: 2 }, 0x104), Some(0xb012_2104));
        assert_eq!(ecam.address(Bdf { bus: 2, device: 0, function: 0 }, 0), None);
        assert_eq!(ecam.address(Bdf { bus: 0, device: 0, function: 0 }, 0x1000), None);
    }
}
