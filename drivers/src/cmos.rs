//! The RTC's battery-backed CMOS RAM, and the reset record the hypervisor keeps in it.
//!
//! CMOS RAM is reached through an index port (0x70) and a data port (0x71): write the
//! byte's offset to the index port, then read or write the data port (MC146818 and every
//! PC chipset since; Intel ICH9 datasheet 13.6 "Real Time Clock Registers"). Offsets
//! 0x00-0x0D are the clock's own registers; 0x0E-0x7F are RAM that survives a reset (and,
//! on a board, power-off while the battery lasts). Bit 7 of the index port is not part of
//! the offset: on PC chipsets it is NMI_EN's inverse ("NMI disable", ICH9 13.7.1), so every
//! index written here keeps it 0 and NMIs stay enabled.
//!
//! Index and data are two accesses, so users must not interleave: the kernel keeps one
//! writer at a time, and no partition may own ports 0x70-0x71 on a board with a record.

use crate::port::ByteRegisters;

/// The index and data ports of the standard bank.
pub const INDEX_PORT: u16 = 0x70;
pub const DATA_PORT: u16 = 0x71;
/// The first offset that is RAM (below are the clock's registers).
pub const FIRST_RAM_OFFSET: u8 = 0x0e;
/// One past the last offset of the standard bank.
pub const BANK_END: u16 = 0x80;
/// NMI disable, bit 7 of the index port: always written 0.
const NMI_DISABLE: u8 = 1 << 7;

/// CMOS RAM behind an index/data register pair (`ByteRegisters` offset 0: index, 1: data).
pub struct Cmos<R: ByteRegisters> {
    registers: R,
}

impl<R: ByteRegisters> Cmos<R> {
    pub const fn new(registers: R) -> Self {
        Cmos { registers }
    }

    pub fn read(&mut self, offset: u8) -> u8 {
        self.registers.write(0, offset & !NMI_DISABLE);
        self.registers.read(1)
    }

    pub fn write(&mut self, offset: u8, value: u8) {
        self.registers.write(0, offset & !NMI_DISABLE);
        self.registers.write(1, value);
    }

    /// Reads `out.len()` bytes from `offset` on.
    pub fn read_bytes(&mut self, offset: u8, out: &mut [u8]) {
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = self.read(offset.wrapping_add(i as u8));
        }
    }

    pub fn write_bytes(&mut self, offset: u8, bytes: &[u8]) {
        for (i, &byte) in bytes.iter().enumerate() {
            self.write(offset.wrapping_add(i as u8), byte);
        }
    }
}

/// Whether `len` bytes at `offset` lie in the RAM of the standard bank.
pub const fn ram_range_ok(offset: u8, len: u8) -> bool {
    offset >= FIRST_RAM_OFFSET && offset as u16 + len as u16 <= BANK_END
}

/// The reset record: why the hypervisor last reset the board, in 8 bytes of CMOS RAM.
///
/// | byte | meaning |
/// |---|---|
/// | 0 | magic [`record::MAGIC`] |
/// | 1 | version [`record::VERSION`] |
/// | 2 | reason ([`record::Reason`]'s code; 0: none) |
/// | 3 | detail: the partition ID or the CPU index the reason names, else 0 |
/// | 4-5 | boot count (little-endian): boots that found a record here, wrapping |
/// | 6 | 0 (reserved) |
/// | 7 | CRC-8 (polynomial 0x07, initial value 0) of bytes 0-6 |
pub mod record {
    pub const LEN: usize = 8;
    pub const MAGIC: u8 = 0xb5;
    pub const VERSION: u8 = 1;

    /// Why the board was reset, as recorded.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Reason {
        /// Nothing recorded since the last boot read the record.
        None,
        /// The board watchdog ran out because this partition (ID) was not healthy.
        WatchdogPartition(u8),
        /// The board watchdog ran out because this CPU (index) hung in the hypervisor.
        WatchdogCore(u8),
        /// This partition's (ID) fault policy `reset-board`.
        Policy(u8),
        /// The hypervisor panicked.
        Panic,
    }

    impl Reason {
        const fn code(self) -> (u8, u8) {
            match self {
                Reason::None => (0, 0),
                Reason::WatchdogPartition(p) => (1, p),
                Reason::WatchdogCore(c) => (2, c),
                Reason::Policy(p) => (3, p),
                Reason::Panic => (4, 0),
            }
        }

        const fn from_code(code: u8, detail: u8) -> Option<Reason> {
            Some(match code {
                0 => Reason::None,
                1 => Reason::WatchdogPartition(detail),
                2 => Reason::WatchdogCore(detail),
                3 => Reason::Policy(detail),
                4 => Reason::Panic,
                _ => return None,
            })
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Record {
        pub reason: Reason,
        pub boots: u16,
    }

    /// Why bytes are not a record.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum DecodeError {
        /// Not written by the hypervisor (first boot, battery loss, someone else's bytes).
        NoMagic,
        /// A version this build does not read.
        Version(u8),
        /// Written, then damaged (or a write cut short by the reset itself).
        Checksum { stored: u8, computed: u8 },
        /// A reason code this build does not know.
        Reason(u8),
    }

    /// CRC-8 with polynomial x^8 + x^2 + x + 1 (0x07), initial value 0, no reflection.
    pub const fn crc8(bytes: &[u8]) -> u8 {
        let mut crc = 0u8;
        let mut i = 0;
        while i < bytes.len() {
            crc ^= bytes[i];
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 0x80 != 0 { (crc << 1) ^ 0x07 } else { crc << 1 };
                bit += 1;
            }
            i += 1;
        }
        crc
    }

    pub const fn encode(record: Record) -> [u8; LEN] {
        let (code, detail) = record.reason.code();
        let boots = record.boots.to_le_bytes();
        let body = [MAGIC, VERSION, code, detail, boots[0], boots[1], 0];
        let crc = crc8(&body);
        [body[0], body[1], body[2], body[3], body[4], body[5], body[6], crc]
    }

    pub fn decode(bytes: &[u8; LEN]) -> Result<Record, DecodeError> {
        if bytes[0] != MAGIC {
            return Err(DecodeError::NoMagic);
        }
        if bytes[1] != VERSION {
            return Err(DecodeError::Version(bytes[1]));
        }
        let computed = crc8(&bytes[..LEN - 1]);
        if computed != bytes[LEN - 1] {
            return Err(DecodeError::Checksum { stored: bytes[LEN - 1], computed });
        }
        let reason = Reason::from_code(bytes[2], bytes[3]).ok_or(DecodeError::Reason(bytes[2]))?;
        Ok(Record { reason, boots: u16::from_le_bytes([bytes[4], bytes[5]]) })
    }
}

#[cfg(test)]
mod tests {
    use super::record::{DecodeError, Reason, Record, decode, encode};
    use super::*;
    use crate::port::fake::FakeRegisters;

    #[test]
    fn index_keeps_nmis_enabled() {
        let mut cmos = Cmos::new(FakeRegisters::new(|offset| if offset == 1 { 0x5a } else { 0 }));
        assert_eq!(cmos.read(0x40), 0x5a);
        cmos.write(0xc1, 0x33); // bit 7 is not part of the offset: never written as 1
        cmos.write_bytes(0x7e, &[1, 2]);
        assert_eq!(cmos.registers.written(), &[(0, 0x40), (0, 0x41), (1, 0x33), (0, 0x7e), (1, 1), (0, 0x7f), (1, 2)]);
    }

    #[test]
    fn ram_range() {
        assert!(ram_range_ok(0x0e, 8));
        assert!(ram_range_ok(0x78, 8));
        assert!(!ram_range_ok(0x79, 8));
        assert!(!ram_range_ok(0x0d, 8), "0x0D is register D of the clock");
        assert!(!ram_range_ok(0xf8, 8));
    }

    #[test]
    fn crc8_check_value() {
        // The catalogued check value of CRC-8 (poly 0x07, init 0, no reflection, no xorout).
        assert_eq!(record::crc8(b"123456789"), 0xf4);
        assert_eq!(record::crc8(&[]), 0);
    }

    #[test]
    fn records_round_trip() {
        for reason in
            [Reason::None, Reason::WatchdogPartition(3), Reason::WatchdogCore(1), Reason::Policy(7), Reason::Panic]
        {
            for boots in [0, 1, 0x1234, u16::MAX] {
                let record = Record { reason, boots };
                let bytes = encode(record);
                assert_eq!(decode(&bytes), Ok(record));
            }
        }
        let bytes = encode(Record { reason: Reason::WatchdogCore(1), boots: 0x0102 });
        assert_eq!(bytes[..7], [0xb5, 1, 2, 1, 0x02, 0x01, 0]);
    }

    #[test]
    fn damaged_or_foreign_bytes_are_no_record() {
        let good = encode(Record { reason: Reason::Policy(2), boots: 9 });
        assert_eq!(decode(&[0; 8]), Err(DecodeError::NoMagic));
        assert_eq!(decode(&[0xff; 8]), Err(DecodeError::NoMagic));
        let mut newer = good;
        newer[1] = 2;
        assert_eq!(decode(&newer), Err(DecodeError::Version(2)));
        // Every single-bit error in bytes 2-7 is caught by the CRC.
        for byte in 2..8 {
            for bit in 0..8 {
                let mut bad = good;
                bad[byte] ^= 1 << bit;
                assert!(matches!(decode(&bad), Err(DecodeError::Checksum { .. })), "byte {byte} bit {bit}");
            }
        }
        let mut unknown = good;
        unknown[2] = 9;
        unknown[7] = record::crc8(&unknown[..7]);
        assert_eq!(decode(&unknown), Err(DecodeError::Reason(9)));
    }
}
