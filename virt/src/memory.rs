//! Guest-physical memory access.
//!
//! Loaders and table writers in this crate never touch memory directly; they go through
//! [`GuestMemory`], addressed by guest-physical address (GPA). In the hypervisor the kernel
//! implements it with [`RegionMemory`] over byte slices it builds from the identity-mapped
//! host-physical memory of a partition (one slice per configured RAM region); host tests
//! use the same type over ordinary arrays.
//!
//! Accesses are all-or-nothing: [`RegionMemory`] checks that the whole range
//! `[gpa, gpa + len)` is backed (possibly by several adjacent regions) before it reads or
//! writes a single byte, so a failed write leaves guest memory untouched.

/// Why a guest-memory access (or a writer built on it) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryError {
    /// Some byte of `[gpa, gpa + len)` is not backed by guest memory (or the range wraps
    /// around the 64-bit address space, or does not fit a 32-bit structure).
    OutOfRange {
        /// First guest-physical address of the access.
        gpa: u64,
        /// Length of the access in bytes.
        len: u64,
    },
    /// An address is not aligned as the writer requires (documented per function).
    Misaligned {
        /// The offending address.
        gpa: u64,
    },
    /// [`RegionMemory`] already holds [`MAX_REGIONS`] regions.
    TooManyRegions,
    /// A region added to [`RegionMemory`] overlaps one it already holds, or wraps around
    /// the address space.
    RegionOverlap {
        /// Guest base of the rejected region.
        guest_base: u64,
    },
    /// An argument is outside what the writer supports (documented per function).
    InvalidArgument,
}

/// Byte-granular access to a guest's physical memory.
///
/// Implementations must be all-or-nothing: on error nothing was written.
pub trait GuestMemory {
    /// Reads `buf.len()` bytes starting at `gpa`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError>;
    /// Writes `data` starting at `gpa`.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError>;
    /// Sets `len` bytes starting at `gpa` to `byte`.
    fn fill(&mut self, gpa: u64, len: u64, byte: u8) -> Result<(), MemoryError>;

    /// Reads a little-endian `u32` at `gpa`.
    fn read_u32(&self, gpa: u64) -> Result<u32, MemoryError> {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    /// Reads a little-endian `u64` at `gpa`.
    fn read_u64(&self, gpa: u64) -> Result<u64, MemoryError> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// Writes a little-endian `u32` at `gpa`.
    fn write_u32(&mut self, gpa: u64, value: u32) -> Result<(), MemoryError> {
        self.write(gpa, &value.to_le_bytes())
    }
    /// Writes a little-endian `u64` at `gpa`.
    fn write_u64(&mut self, gpa: u64, value: u64) -> Result<(), MemoryError> {
        self.write(gpa, &value.to_le_bytes())
    }
}

impl<T: GuestMemory + ?Sized> GuestMemory for &mut T {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        (**self).read(gpa, buf)
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        (**self).write(gpa, data)
    }
    fn fill(&mut self, gpa: u64, len: u64, byte: u8) -> Result<(), MemoryError> {
        (**self).fill(gpa, len, byte)
    }
}

/// Most regions one [`RegionMemory`] holds (a partition has few RAM regions; the bound keeps
/// the type heap-free).
pub const MAX_REGIONS: usize = 8;

/// One contiguous piece of guest memory: guest-physical `guest_base` is `bytes[0]`.
#[derive(Debug)]
pub struct Region<'a> {
    /// Guest-physical address of `bytes[0]`.
    pub guest_base: u64,
    /// The memory itself.
    pub bytes: &'a mut [u8],
}

impl Region<'_> {
    /// One past the last guest-physical address (the constructor guarantees no overflow).
    fn end(&self) -> u64 {
        self.guest_base.saturating_add(self.bytes.len() as u64)
    }
}

/// [`GuestMemory`] over up to [`MAX_REGIONS`] non-overlapping byte slices.
///
/// Accesses may span regions that are adjacent in guest-physical space.
#[derive(Debug)]
pub struct RegionMemory<'a> {
    regions: [Option<Region<'a>>; MAX_REGIONS],
}

impl Default for RegionMemory<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> RegionMemory<'a> {
    /// Memory with no regions (every access fails until regions are added).
    pub const fn new() -> Self {
        Self { regions: [const { None }; MAX_REGIONS] }
    }

    /// Adds a region with guest-physical base `guest_base`.
    ///
    /// Fails if [`MAX_REGIONS`] are already held, or if the region overlaps another or
    /// wraps around the 64-bit address space. Empty regions are accepted and ignored.
    pub fn add(&mut self, guest_base: u64, bytes: &'a mut [u8]) -> Result<(), MemoryError> {
        let len = bytes.len() as u64;
        let Some(end) = guest_base.checked_add(len) else {
            return Err(MemoryError::RegionOverlap { guest_base });
        };
        if len == 0 {
            return Ok(());
        }
        if self.regions.iter().flatten().any(|r| guest_base < r.end() && r.guest_base < end) {
            return Err(MemoryError::RegionOverlap { guest_base });
        }
        let slot = self.regions.iter_mut().find(|r| r.is_none()).ok_or(MemoryError::TooManyRegions)?;
        *slot = Some(Region { guest_base, bytes });
        Ok(())
    }

    /// Builder form of [`add`](Self::add).
    pub fn with(mut self, guest_base: u64, bytes: &'a mut [u8]) -> Result<Self, MemoryError> {
        self.add(guest_base, bytes)?;
        Ok(self)
    }

    /// The regions held, in insertion order.
    pub fn regions(&self) -> impl Iterator<Item = &Region<'a>> {
        self.regions.iter().flatten()
    }

    /// Index of the region containing `gpa`.
    fn find(&self, gpa: u64) -> Option<usize> {
        self.regions.iter().position(|r| r.as_ref().is_some_and(|r| r.guest_base <= gpa && gpa < r.end()))
    }

    /// Checks that `[gpa, gpa + len)` is entirely backed.
    fn check(&self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        let err = MemoryError::OutOfRange { gpa, len };
        let end = gpa.checked_add(len).ok_or(err)?;
        let mut cur = gpa;
        // Each step moves past one whole region, so MAX_REGIONS steps always suffice.
        for _ in 0..=MAX_REGIONS {
            if cur >= end {
                return Ok(());
            }
            let i = self.find(cur).ok_or(err)?;
            cur = self.regions[i].as_ref().map_or(end, Region::end);
        }
        if cur >= end { Ok(()) } else { Err(err) }
    }

    /// Calls `f(region_slice, offset_in_access)` for each piece of the (already checked)
    /// range `[gpa, gpa + len)`.
    fn for_each_piece(&mut self, gpa: u64, len: u64, mut f: impl FnMut(&mut [u8], usize)) -> Result<(), MemoryError> {
        self.check(gpa, len)?;
        let err = MemoryError::OutOfRange { gpa, len };
        let mut done: u64 = 0;
        while done < len {
            let cur = gpa + done;
            let i = self.find(cur).ok_or(err)?;
            let r = self.regions[i].as_mut().ok_or(err)?;
            let start = usize::try_from(cur - r.guest_base).map_err(|_| err)?;
            let n = core::cmp::min(len - done, r.end() - cur);
            let n_usize = usize::try_from(n).map_err(|_| err)?;
            let piece = r.bytes.get_mut(start..start + n_usize).ok_or(err)?;
            f(piece, usize::try_from(done).map_err(|_| err)?);
            done += n;
        }
        Ok(())
    }
}

impl GuestMemory for RegionMemory<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        self.check(gpa, len)?;
        let err = MemoryError::OutOfRange { gpa, len };
        let mut done: usize = 0;
        while done < buf.len() {
            let cur = gpa + done as u64;
            let r = self.find(cur).and_then(|i| self.regions[i].as_ref()).ok_or(err)?;
            let start = usize::try_from(cur - r.guest_base).map_err(|_| err)?;
            let avail = r.bytes.len() - start;
            let n = core::cmp::min(buf.len() - done, avail);
            let src = r.bytes.get(start..start + n).ok_or(err)?;
            buf.get_mut(done..done + n).ok_or(err)?.copy_from_slice(src);
            done += n;
        }
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.for_each_piece(gpa, data.len() as u64, |piece, off| {
            if let Some(src) = data.get(off..off + piece.len()) {
                piece.copy_from_slice(src);
            }
        })
    }

    fn fill(&mut self, gpa: u64, len: u64, byte: u8) -> Result<(), MemoryError> {
        self.for_each_piece(gpa, len, |piece, _| piece.fill(byte))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_region_read_write_fill() {
        let mut a = [0u8; 64];
        let mut m = RegionMemory::new().with(0x1000, &mut a).unwrap();
        m.write(0x1010, &[1, 2, 3]).unwrap();
        m.fill(0x1020, 4, 0xAA).unwrap();
        let mut b = [0u8; 3];
        m.read(0x1010, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3]);
        assert_eq!(m.read_u32(0x1020).unwrap(), 0xAAAA_AAAA);
        m.write_u64(0x1038, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(m.read_u64(0x1038).unwrap(), 0x1122_3344_5566_7788);
        assert_eq!(&a[0x10..0x13], &[1, 2, 3]);
    }

    #[test]
    fn spans_adjacent_regions_in_any_order() {
        let mut lo = [0u8; 16];
        let mut hi = [0u8; 16];
        // Added high first: lookup must not depend on insertion order.
        let mut m = RegionMemory::new().with(0x2010, &mut hi).unwrap().with(0x2000, &mut lo).unwrap();
        let data: [u8; 20] = core::array::from_fn(|i| i as u8 + 1);
        m.write(0x2006, &data).unwrap();
        let mut back = [0u8; 20];
        m.read(0x2006, &mut back).unwrap();
        assert_eq!(back, data);
        m.fill(0x2000, 32, 7).unwrap();
        assert!(lo.iter().chain(hi.iter()).all(|&b| b == 7));
    }

    #[test]
    fn out_of_range_is_all_or_nothing() {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        // Gap between 0x10 and 0x20.
        let mut m = RegionMemory::new().with(0, &mut a).unwrap().with(0x20, &mut b).unwrap();
        assert_eq!(m.write(0x8, &[9; 0x20]), Err(MemoryError::OutOfRange { gpa: 0x8, len: 0x20 }));
        assert_eq!(m.fill(0x18, 4, 1), Err(MemoryError::OutOfRange { gpa: 0x18, len: 4 }));
        assert_eq!(m.fill(0x2F, 2, 1), Err(MemoryError::OutOfRange { gpa: 0x2F, len: 2 }));
        assert_eq!(m.fill(u64::MAX, 2, 1), Err(MemoryError::OutOfRange { gpa: u64::MAX, len: 2 }));
        let mut buf = [0u8; 4];
        assert!(m.read(0x0E, &mut buf).is_err());
        // Zero-length accesses succeed anywhere.
        m.write(0x1234_5678, &[]).unwrap();
        assert!(a.iter().chain(b.iter()).all(|&x| x == 0));
    }

    #[test]
    fn rejects_overlap_and_too_many() {
        let mut bufs = [[0u8; 4]; 12];
        let mut it = bufs.iter_mut();
        let mut m = RegionMemory::new();
        m.add(0x100, it.next().unwrap()).unwrap();
        assert_eq!(m.add(0x102, it.next().unwrap()), Err(MemoryError::RegionOverlap { guest_base: 0x102 }));
        assert_eq!(
            m.add(u64::MAX - 1, it.next().unwrap()),
            Err(MemoryError::RegionOverlap { guest_base: u64::MAX - 1 })
        );
        for i in 1..MAX_REGIONS as u64 {
            m.add(0x100 + i * 0x10, it.next().unwrap()).unwrap();
        }
        assert_eq!(m.add(0x1000, it.next().unwrap()), Err(MemoryError::TooManyRegions));
        assert_eq!(m.regions().count(), MAX_REGIONS);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Random accesses agree with a flat model of two adjacent regions and a gap.
            #[test]
            fn accesses_match_model(ops in proptest::collection::vec((0u64..0x60, 0u64..0x40, any::<u8>(), any::<bool>()), 1..40),
                                    wild in any::<u64>()) {
                let mut a = [0u8; 0x20];
                let mut b = [0u8; 0x10];
                let mut model = [0u8; 0x30]; // 0x10..0x40 backed (a at 0x10, b at 0x30)
                let mut m = RegionMemory::new().with(0x30, &mut b).unwrap().with(0x10, &mut a).unwrap();
                for (gpa, len, byte, fill) in ops {
                    let inside = gpa >= 0x10 && gpa + len <= 0x40;
                    let r = if fill {
                        m.fill(gpa, len, byte)
                    } else {
                        m.write(gpa, &[byte; 0x40][..len as usize])
                    };
                    prop_assert_eq!(r.is_ok(), inside || len == 0);
                    if inside {
                        model[(gpa - 0x10) as usize..(gpa - 0x10 + len) as usize].fill(byte);
                    }
                    let mut back = [0u8; 0x30];
                    m.read(0x10, &mut back).unwrap();
                    prop_assert_eq!(back, model);
                }
                let mut buf = [0u8; 3];
                let _ = m.read(wild, &mut buf);
                let _ = m.fill(wild, wild, 0);
            }
        }
    }
}
