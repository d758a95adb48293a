//! VT-d second-level page-table entries (Intel VT-d specification 9.8, "Second-Level
//! Paging Entries"): the [`Encoding`] that lets [`Slat`](crate::slat::Slat) build a DMA
//! domain's tables with the same walk, page-size choice and overlap rules as the
//! partition's EPT/NPT, from the same regions, so both views agree by construction.
//!
//! * bit 0 R (read), bit 1 W (write); an entry with both clear is not present. Bit 2 (X)
//!   only matters with execute requests, which legacy-mode translation does not take; it
//!   stays 0, so [`VtdSecondLevel`] maps no execute right (DMA never executes).
//! * bit 7 PS in the PDPTE (1 GiB) and PDE (2 MiB) makes the entry a leaf; large leaves
//!   need CAP.SLLPS, which the kernel checks before it allows them.
//! * bits 6:3 (EMT, IPAT) and bit 11 (SNP) are left 0: EMT is used only with extended
//!   memory types (ECAP.EMTS, not used), and QEMU treats bit 11 as reserved without
//!   snoop control. Non-leaf entries are R|W so only leaves restrict access.
//! * Memory type: every leaf is the same (DMA snoops or not as the platform decides), so
//!   the builder's memory type is not encoded; the kernel maps RAM only (no device MMIO,
//!   so no peer-to-peer DMA).
//! * Three-level tables (39-bit AGAW, QEMU's default) are the same tree one level down:
//!   [`three_level_root`] gives the PDPT that the 4-level root's entry 0 points at.

use crate::slat::{Attributes, Encoding, FramePool, MemoryType, PageSize, Slat};

/// Physical-address bits 51:12 of an entry.
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// The VT-d second-level entry encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VtdSecondLevel;

impl VtdSecondLevel {
    /// Read (bit 0).
    pub const READ: u64 = 1 << 0;
    /// Write (bit 1).
    pub const WRITE: u64 = 1 << 1;
    /// Page size (bit 7) in a PDPTE/PDE.
    pub const LARGE: u64 = 1 << 7;
}

impl Encoding for VtdSecondLevel {
    const NAME: &'static str = "VT-d second-level";

    fn table_entry(phys: u64) -> u64 {
        (phys & ADDR_MASK) | Self::READ | Self::WRITE
    }

    fn leaf_entry(hpa: u64, attrs: Attributes, size: PageSize) -> Option<u64> {
        // Write without read is allowed by VT-d, but nothing in a partition's view has it;
        // no access at all would be a non-present entry.
        if !attrs.read {
            return None;
        }
        let mut e = (hpa & ADDR_MASK & !(size.bytes() - 1)) | Self::READ;
        if attrs.write {
            e |= Self::WRITE;
        }
        if size != PageSize::Size4K {
            e |= Self::LARGE;
        }
        Some(e)
    }

    fn is_present(entry: u64) -> bool {
        entry & (Self::READ | Self::WRITE) != 0
    }

    fn decode_leaf(entry: u64, size: PageSize) -> Option<(u64, Attributes)> {
        let attrs = Attributes {
            read: entry & Self::READ != 0,
            write: entry & Self::WRITE != 0,
            execute: false,
            memory_type: MemoryType::WriteBack,
        };
        Some((entry & ADDR_MASK & !(size.bytes() - 1), attrs))
    }
}

/// The root of the 3-level view of `slat` (39-bit guest address width): the PDPT its
/// PML4 entry 0 points at, or `None` when nothing is mapped below 512 GiB or something is
/// mapped above (a 3-level walk cannot reach it).
pub fn three_level_root(slat: &Slat<VtdSecondLevel>, pool: &mut impl FramePool) -> Option<u64> {
    let root = *pool.table(slat.root())?;
    if root[1..].iter().any(|&e| VtdSecondLevel::is_present(e)) || !VtdSecondLevel::is_present(root[0]) {
        return None;
    }
    Some(VtdSecondLevel::table_address(root[0]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slat::ArrayPool;
    use std::vec;

    const BASE: u64 = 0x7700_0000;

    #[test]
    fn encodes_read_write_and_page_size_only() {
        let rw = Attributes::RWX;
        assert_eq!(VtdSecondLevel::leaf_entry(0x1234_5000, rw, PageSize::Size4K), Some(0x1234_5003));
        assert_eq!(VtdSecondLevel::leaf_entry(0x4020_0000, Attributes::R, PageSize::Size2M), Some(0x4020_0081));
        assert_eq!(VtdSecondLevel::leaf_entry(0x4000_0000, Attributes::MMIO, PageSize::Size1G), Some(0x4000_0083));
        assert_eq!(VtdSecondLevel::table_entry(0x9000), 0x9003);
        let write_only = Attributes { read: false, write: true, execute: false, memory_type: MemoryType::WriteBack };
        assert_eq!(VtdSecondLevel::leaf_entry(0, write_only, PageSize::Size4K), None);
        // Execute (bit 2), memory type (6:3) and snoop (11) never set.
        let e = VtdSecondLevel::leaf_entry(0xfff_f000, rw, PageSize::Size4K).unwrap();
        assert_eq!(e & 0x87c, 0);
    }

    #[test]
    fn builds_the_partition_view_and_nothing_else() {
        let mut tables = vec![[0u64; 512]; 16];
        let mut pool = ArrayPool::with_base(&mut tables, BASE);
        let mut slat = Slat::<VtdSecondLevel>::new(&mut pool).unwrap();
        slat.map(&mut pool, 0, 0x100_0000, 0x40_0000, Attributes::RWX, true).unwrap();
        slat.map(&mut pool, 0x80_0000, 0x300_0000, 0x1000, Attributes::R, false).unwrap();
        let t = slat.translate(&mut pool, 0x20_1234).unwrap();
        assert_eq!((t.hpa, t.attrs.write, t.page_size), (0x120_1234, true, PageSize::Size2M));
        assert!(!slat.translate(&mut pool, 0x80_0000).unwrap().attrs.write);
        assert_eq!(slat.translate(&mut pool, 0x40_0000), None);
        assert_eq!(slat.translate(&mut pool, 0x210_2000), None);
        let pdpt = three_level_root(&slat, &mut pool).unwrap();
        assert_eq!(pdpt, BASE + 0x1000);
    }

    #[test]
    fn three_level_root_needs_everything_below_512_gib() {
        let mut tables = vec![[0u64; 512]; 16];
        let mut pool = ArrayPool::with_base(&mut tables, BASE);
        let mut slat = Slat::<VtdSecondLevel>::new(&mut pool).unwrap();
        assert_eq!(three_level_root(&slat, &mut pool), None);
        slat.map(&mut pool, 0, 0x100_0000, 0x1000, Attributes::RW, false).unwrap();
        assert!(three_level_root(&slat, &mut pool).is_some());
        slat.map(&mut pool, 1 << 39, 0x100_0000, 0x1000, Attributes::RW, false).unwrap();
        assert_eq!(three_level_root(&slat, &mut pool), None);
    }
}
