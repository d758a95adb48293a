//! The multiboot1 information structure for guests booted like a multiboot1 kernel.
//!
//! A multiboot1 kernel is entered in 32-bit protected mode with paging off, EAX =
//! [`BOOTLOADER_MAGIC`] and EBX = the physical address of the information structure
//! (Multiboot 0.6.96 §3.2 "Machine state"). [`write_info`] builds that structure
//! (§3.3 "Boot information format") in guest memory. Layout, from `info_gpa` (which must be
//! 8-byte aligned and, with everything after it, lie below 4 GiB, since every field is
//! 32-bit):
//!
//! | offset | size | contents |
//! |---|---|---|
//! | 0 | [`INFO_SIZE`] (116) | the information structure; all 0.6.96 fields, unused ones zero |
//! | 120 | 24 × regions | the memory map (`mmap_addr`), one entry per region |
//! | 120 + 24 × regions | `cmdline.len() + 1` | the command line, NUL-terminated (`cmdline`) |
//!
//! [`info_size`] gives the total. `flags` has bit 0 (`mem_lower`/`mem_upper`), bit 2
//! (`cmdline`) and bit 6 (`mmap_*`) set. Each memory-map entry is `size` (u32, = 20, not
//! counting itself), `base_addr` (u64), `length` (u64), `type` (u32, 1 = available RAM);
//! `mmap_length` is the total size of the entries in bytes. `mem_lower` is the KiB of RAM
//! contiguous from address 0 (at most 640), `mem_upper` the KiB contiguous from 1 MiB,
//! both computed from `regions` (which may be unsorted; adjacent regions are joined).

use crate::memory::{GuestMemory, MemoryError};

/// EAX at entry of a multiboot1 kernel.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

/// Size of the information structure with all Multiboot 0.6.96 fields (through the
/// framebuffer colour info).
pub const INFO_SIZE: u64 = 116;
/// Offset of the memory map from the start of the structure (`INFO_SIZE` rounded up to 8).
pub const MMAP_OFFSET: u64 = 120;
/// Bytes per memory-map entry, including its `size` field.
pub const MMAP_ENTRY_SIZE: u64 = 24;

/// `flags` bit 0: `mem_lower` and `mem_upper` are valid.
pub const INFO_MEMORY: u32 = 1 << 0;
/// `flags` bit 2: `cmdline` is valid.
pub const INFO_CMDLINE: u32 = 1 << 2;
/// `flags` bit 6: `mmap_length` and `mmap_addr` are valid.
pub const INFO_MMAP: u32 = 1 << 6;

/// Memory-map entry type of usable RAM.
pub const MMAP_AVAILABLE: u32 = 1;

/// Field offsets inside the information structure (§3.3).
mod offset {
    pub const FLAGS: usize = 0;
    pub const MEM_LOWER: usize = 4;
    pub const MEM_UPPER: usize = 8;
    pub const CMDLINE: usize = 16;
    pub const MMAP_LENGTH: usize = 44;
    pub const MMAP_ADDR: usize = 48;
}

/// Total bytes [`write_info`] writes for `region_count` regions and a command line of
/// `cmdline_len` bytes (without its NUL).
pub const fn info_size(region_count: usize, cmdline_len: usize) -> u64 {
    MMAP_OFFSET + MMAP_ENTRY_SIZE * region_count as u64 + cmdline_len as u64 + 1
}

/// Bytes of RAM contiguous from `start` through `regions` (adjacent regions joined).
fn contiguous_from(regions: &[(u64, u64)], start: u64) -> u64 {
    let mut cur = start;
    // Each step passes one region, so regions.len() steps suffice.
    for _ in 0..regions.len() {
        match regions.iter().find(|&&(base, size)| base <= cur && cur < base.saturating_add(size)) {
            Some(&(base, size)) => cur = base.saturating_add(size),
            None => break,
        }
    }
    cur - start
}

/// Writes the information structure, its memory map and the command line at `info_gpa`
/// (layout in the module notes) and returns the EBX value.
///
/// Errors: `info_gpa` not 8-byte aligned ([`MemoryError::Misaligned`]); the structure
/// would reach above 4 GiB ([`MemoryError::OutOfRange`]); `cmdline` contains a NUL byte
/// ([`MemoryError::InvalidArgument`]); guest memory does not back the range.
pub fn write_info(
    mem: &mut impl GuestMemory,
    info_gpa: u64,
    regions: &[(u64, u64)],
    cmdline: &str,
) -> Result<u32, MemoryError> {
    if !info_gpa.is_multiple_of(8) {
        return Err(MemoryError::Misaligned { gpa: info_gpa });
    }
    if cmdline.as_bytes().contains(&0) {
        return Err(MemoryError::InvalidArgument);
    }
    let total = info_size(regions.len(), cmdline.len());
    let range_err = MemoryError::OutOfRange { gpa: info_gpa, len: total };
    let end = info_gpa.checked_add(total).ok_or(range_err)?;
    if end > 1 << 32 {
        return Err(range_err);
    }
    let mmap = info_gpa + MMAP_OFFSET;
    let mmap_len = MMAP_ENTRY_SIZE * regions.len() as u64;
    let cmdline_gpa = mmap + mmap_len;

    for (i, &(base, length)) in regions.iter().enumerate() {
        let mut e = [0u8; MMAP_ENTRY_SIZE as usize];
        e[0..4].copy_from_slice(&20u32.to_le_bytes());
        e[4..12].copy_from_slice(&base.to_le_bytes());
        e[12..20].copy_from_slice(&length.to_le_bytes());
        e[20..24].copy_from_slice(&MMAP_AVAILABLE.to_le_bytes());
        mem.write(mmap + MMAP_ENTRY_SIZE * i as u64, &e)?;
    }
    mem.write(cmdline_gpa, cmdline.as_bytes())?;
    mem.write(cmdline_gpa + cmdline.len() as u64, &[0])?;

    let lower_kib = contiguous_from(regions, 0).min(640 * 1024) / 1024;
    let upper_kib = (contiguous_from(regions, 1 << 20) / 1024).min(u64::from(u32::MAX));
    let mut info = [0u8; INFO_SIZE as usize];
    let mut put = |off: usize, v: u32| info[off..off + 4].copy_from_slice(&v.to_le_bytes());
    // All values below are < 4 GiB: checked against `end` above, or clamped.
    put(offset::FLAGS, INFO_MEMORY | INFO_CMDLINE | INFO_MMAP);
    put(offset::MEM_LOWER, lower_kib as u32);
    put(offset::MEM_UPPER, upper_kib as u32);
    put(offset::CMDLINE, cmdline_gpa as u32);
    put(offset::MMAP_LENGTH, mmap_len as u32);
    put(offset::MMAP_ADDR, mmap as u32);
    mem.write(info_gpa, &info)?;
    Ok(info_gpa as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::RegionMemory;
    use std::vec;

    #[test]
    fn writes_documented_layout() {
        let mut low = vec![0xEEu8; 0x9_FC00];
        let mut high = vec![0u8; 0x10_0000];
        let mut mem = RegionMemory::new().with(0, &mut low).unwrap().with(0x10_0000, &mut high).unwrap();
        let regions = [(0x10_0000, 0x7F0_0000), (0, 0x9_FC00)];
        let ebx = write_info(&mut mem, 0x9000, &regions, "console=ttyS0").unwrap();
        assert_eq!(ebx, 0x9000);
        assert_eq!(mem.read_u32(0x9000).unwrap(), 0b100_0101);
        assert_eq!(mem.read_u32(0x9004).unwrap(), 639);
        assert_eq!(mem.read_u32(0x9008).unwrap(), 0x7F0_0000 / 1024);
        assert_eq!(mem.read_u32(0x900C).unwrap(), 0); // boot_device
        assert_eq!(mem.read_u32(0x9010).unwrap(), 0x9000 + 120 + 48);
        assert_eq!(mem.read_u32(0x9014).unwrap(), 0); // mods_count
        assert_eq!(mem.read_u32(0x902C).unwrap(), 48);
        assert_eq!(mem.read_u32(0x9030).unwrap(), 0x9000 + 120);
        for off in (0x34..116).step_by(4) {
            assert_eq!(mem.read_u32(0x9000 + off).unwrap(), 0, "offset {off}");
        }
        let e = 0x9000 + 120;
        assert_eq!(mem.read_u32(e).unwrap(), 20);
        assert_eq!(mem.read_u64(e + 4).unwrap(), 0x10_0000);
        assert_eq!(mem.read_u64(e + 12).unwrap(), 0x7F0_0000);
        assert_eq!(mem.read_u32(e + 20).unwrap(), 1);
        assert_eq!(mem.read_u64(e + 24 + 4).unwrap(), 0);
        assert_eq!(mem.read_u64(e + 24 + 12).unwrap(), 0x9_FC00);
        let mut s = [0u8; 14];
        mem.read(e + 48, &mut s).unwrap();
        assert_eq!(&s, b"console=ttyS0\0");
        assert_eq!(info_size(2, 13), 120 + 48 + 14);
        let mut after = [0u8; 1];
        mem.read(0x9000 + info_size(2, 13), &mut after).unwrap();
        assert_eq!(after, [0xEE]);
    }

    #[test]
    fn memory_sizes_join_adjacent_regions() {
        assert_eq!(contiguous_from(&[(0, 0x1000), (0x1000, 0x1000)], 0), 0x2000);
        assert_eq!(contiguous_from(&[(0x2000, 0x1000)], 0), 0);
        assert_eq!(
            contiguous_from(&[(0x10_0000, 0x10_0000), (0x20_0000, 0x1000), (0x30_0000, 0x1000)], 0x10_0000),
            0x10_1000
        );
        assert_eq!(contiguous_from(&[(0, u64::MAX), (u64::MAX, 5)], 0), u64::MAX);
        let mut ram = vec![0u8; 0x1000];
        let mut mem = RegionMemory::new().with(0, &mut ram).unwrap();
        // 1 MiB of RAM at 0: lower is capped at 640 KiB, upper is what lies from 1 MiB.
        write_info(&mut mem, 0, &[(0, 0x20_0000)], "").unwrap();
        assert_eq!(mem.read_u32(4).unwrap(), 640);
        assert_eq!(mem.read_u32(8).unwrap(), 1024);
    }

    #[test]
    fn errors() {
        let mut ram = vec![0u8; 0x1000];
        let mut mem = RegionMemory::new().with(0, &mut ram).unwrap();
        assert_eq!(write_info(&mut mem, 4, &[], ""), Err(MemoryError::Misaligned { gpa: 4 }));
        assert_eq!(write_info(&mut mem, 0, &[], "a\0b"), Err(MemoryError::InvalidArgument));
        assert_eq!(
            write_info(&mut mem, 0xFFFF_FFC0, &[], "x"),
            Err(MemoryError::OutOfRange { gpa: 0xFFFF_FFC0, len: 122 })
        );
        assert!(matches!(write_info(&mut mem, 0xF00, &[(0, 1); 8], ""), Err(MemoryError::OutOfRange { .. })));
        assert!(matches!(write_info(&mut mem, !7, &[], ""), Err(MemoryError::OutOfRange { .. })));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(at in prop_oneof![0u64..0x2000, any::<u64>()],
                            regions in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..6),
                            cmdline in ".{0,40}") {
                let mut ram = std::vec![0u8; 0x1000];
                let mut mem = RegionMemory::new().with(0x800, &mut ram).unwrap();
                if let Ok(ebx) = write_info(&mut mem, at, &regions, &cmdline) {
                    prop_assert_eq!(u64::from(ebx), at);
                    prop_assert_eq!(mem.read_u32(at).unwrap(), 0x45);
                }
            }
        }
    }
}
