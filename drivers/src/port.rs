//! Access to x86 I/O ports behind a trait, so drivers built on ports can be tested on the
//! host with a fake.

/// A bank of byte-wide registers reached by offset from a base (a UART's 8 ports, say).
pub trait ByteRegisters {
    fn read(&mut self, offset: u16) -> u8;
    fn write(&mut self, offset: u16, value: u8);
}

/// Registers reached through real I/O ports at `base + offset`.
#[derive(Debug, Clone, Copy)]
pub struct IoPorts {
    base: u16,
}

impl IoPorts {
    /// # Safety
    /// The caller must own the device at `base`: accesses to these ports have side effects.
    pub const unsafe fn new(base: u16) -> Self {
        Self { base }
    }
}

impl ByteRegisters for IoPorts {
    fn read(&mut self, offset: u16) -> u8 {
        // SAFETY: `new` made the caller promise the ports belong to this device.
        unsafe { inb(self.base + offset) }
    }

    fn write(&mut self, offset: u16, value: u8) {
        // SAFETY: as in `read`.
        unsafe { outb(self.base + offset, value) }
    }
}

/// Reads one byte from an I/O port.
///
/// # Safety
/// Port reads can have side effects on the device behind the port.
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    // SAFETY: the caller vouches for the port; `in` touches no memory.
    unsafe { x86_64::instructions::port::PortReadOnly::<u8>::new(port).read() }
}

/// Writes one byte to an I/O port.
///
/// # Safety
/// Port writes can have arbitrary side effects on the device behind the port.
#[inline]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the port; `out` touches no memory.
    unsafe { x86_64::instructions::port::PortWriteOnly::<u8>::new(port).write(value) }
}

#[cfg(test)]
pub(crate) mod fake {
    use super::ByteRegisters;

    /// Records writes and answers reads from a closure; enough to check register sequences.
    pub struct FakeRegisters<F: FnMut(u16) -> u8> {
        pub writes: [(u16, u8); 64],
        pub count: usize,
        pub reader: F,
    }

    impl<F: FnMut(u16) -> u8> FakeRegisters<F> {
        pub fn new(reader: F) -> Self {
            Self { writes: [(0, 0); 64], count: 0, reader }
        }

        pub fn written(&self) -> &[(u16, u8)] {
            &self.writes[..self.count]
        }
    }

    impl<F: FnMut(u16) -> u8> ByteRegisters for FakeRegisters<F> {
        fn read(&mut self, offset: u16) -> u8 {
            (self.reader)(offset)
        }
        fn write(&mut self, offset: u16, value: u8) {
            self.writes[self.count] = (offset, value);
            self.count += 1;
        }
    }
}
