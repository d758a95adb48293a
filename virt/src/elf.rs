//! Loading partition payloads: ELF64 and ELF32 executables, and the multiboot1 header.
//!
//! Parsing uses the `elf` crate (`ElfBytes`, default features off): it is zero-copy, needs
//! no `alloc`, reads both ELF classes, and bounds-checks every table it locates (offsets
//! are added with overflow checks and sliced with `get`). It parses the section-header table
//! location as well, so an image whose section headers point outside the file is rejected
//! even though loading only needs program headers; linkers never produce such images.
//!
//! What this module adds is the loader policy (System V gABI "Program Loading"):
//! * the header must be `ELFCLASS64`/`ELFCLASS32`, little-endian (`ElfBytes<LittleEndian>`
//!   rejects big-endian images), `EM_X86_64`/`EM_386`, `ET_EXEC`;
//! * every `PT_LOAD` segment is copied to its **physical** address `p_paddr` (the partition
//!   runs identity-mapped at entry, like a kernel loaded by a bootloader): `p_filesz` bytes
//!   from `p_offset`, then zeros up to `p_memsz`;
//! * all segments are validated (file range inside the image, `p_filesz <= p_memsz`, no
//!   address overflow, ELF32 segments below 4 GiB) before anything is written; a segment
//!   that does not fit guest memory fails with its index.
//!
//! [`multiboot1_header`] finds the Multiboot 0.6.96 §3.1 header: a 4-byte aligned `u32`
//! magic `0x1BADB002` within the first 8192 bytes, with `magic + flags + checksum == 0`;
//! when flag bit 16 is set, the a.out-kludge address fields follow (§3.1.3).

use crate::memory::{GuestMemory, MemoryError};
use ::elf::ElfBytes;
use ::elf::abi::{EM_386, EM_X86_64, ET_EXEC, PT_LOAD};
use ::elf::endian::LittleEndian;
use ::elf::file::Class;

/// What [`load_elf64`] / [`load_elf32`] loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedImage {
    /// `e_entry` as written in the header.
    pub entry: u64,
    /// The entry translated to a physical address through the `PT_LOAD` segment whose
    /// virtual range contains it (`p_paddr + (e_entry - p_vaddr)`); `entry` if none does.
    /// This is where to start an identity-mapped guest.
    pub entry_gpa: u64,
    /// Lowest guest-physical address written.
    pub lowest: u64,
    /// Highest guest-physical address written (inclusive).
    pub highest: u64,
}

impl LoadedImage {
    /// One past the highest loaded address.
    pub const fn end_gpa(&self) -> u64 {
        self.highest.saturating_add(1)
    }
}

/// Why an image could not be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadError {
    /// Not an ELF file, or its header or program-header table is truncated or inconsistent.
    Malformed,
    /// `e_ident[EI_CLASS]` is not the class the loader expects.
    WrongClass,
    /// Big-endian image.
    WrongEndianness,
    /// `e_machine` is not `EM_X86_64` (ELF64) / `EM_386` (ELF32).
    WrongMachine {
        /// The image's `e_machine`.
        machine: u16,
    },
    /// `e_type` is not `ET_EXEC`.
    NotExecutable {
        /// The image's `e_type`.
        e_type: u16,
    },
    /// No `PT_LOAD` segment with a non-zero `p_memsz`.
    NoLoadableSegments,
    /// A `PT_LOAD` segment is inconsistent: file range outside the image, `p_filesz >
    /// p_memsz`, or its address range overflows (ELF32: ends above 4 GiB).
    BadSegment {
        /// Index of the program header.
        index: usize,
    },
    /// A segment does not fit guest memory.
    SegmentOutsideMemory {
        /// Index of the program header.
        index: usize,
        /// Its `p_paddr`.
        paddr: u64,
        /// Its `p_memsz`.
        memsz: u64,
        /// The access that failed.
        error: MemoryError,
    },
}

/// Loads an x86-64 ELF64 executable into `mem`. See the module notes for the rules.
pub fn load_elf64(image: &[u8], mem: &mut impl GuestMemory) -> Result<LoadedImage, LoadError> {
    load(image, mem, Class::ELF64, EM_X86_64)
}

/// Loads an i386 ELF32 executable into `mem` (multiboot1 kernels). See the module notes.
pub fn load_elf32(image: &[u8], mem: &mut impl GuestMemory) -> Result<LoadedImage, LoadError> {
    load(image, mem, Class::ELF32, EM_386)
}

/// A validated `PT_LOAD` segment.
#[derive(Clone, Copy)]
struct Segment<'a> {
    paddr: u64,
    memsz: u64,
    data: &'a [u8],
}

/// Checks one program header; `Ok(None)` for segments that load nothing.
fn validate_segment<'a>(
    image: &'a [u8],
    index: usize,
    ph: &::elf::segment::ProgramHeader,
    addr_limit: u64,
) -> Result<Option<Segment<'a>>, LoadError> {
    if ph.p_type != PT_LOAD || ph.p_memsz == 0 {
        return Ok(None);
    }
    let bad = LoadError::BadSegment { index };
    if ph.p_filesz > ph.p_memsz {
        return Err(bad);
    }
    let end = ph.p_paddr.checked_add(ph.p_memsz).ok_or(bad)?;
    if end > addr_limit {
        return Err(bad);
    }
    let off = usize::try_from(ph.p_offset).map_err(|_| bad)?;
    let len = usize::try_from(ph.p_filesz).map_err(|_| bad)?;
    let data = image.get(off..off.checked_add(len).ok_or(bad)?).ok_or(bad)?;
    Ok(Some(Segment { paddr: ph.p_paddr, memsz: ph.p_memsz, data }))
}

fn load(image: &[u8], mem: &mut impl GuestMemory, class: Class, machine: u16) -> Result<LoadedImage, LoadError> {
    let file = ElfBytes::<LittleEndian>::minimal_parse(image).map_err(|e| match e {
        ::elf::ParseError::UnsupportedElfEndianness(_) => LoadError::WrongEndianness,
        _ => LoadError::Malformed,
    })?;
    let ehdr = &file.ehdr;
    if ehdr.class != class {
        return Err(LoadError::WrongClass);
    }
    if ehdr.e_machine != machine {
        return Err(LoadError::WrongMachine { machine: ehdr.e_machine });
    }
    if ehdr.e_type != ET_EXEC {
        return Err(LoadError::NotExecutable { e_type: ehdr.e_type });
    }
    let segments = file.segments().ok_or(LoadError::NoLoadableSegments)?;
    let addr_limit: u64 = if class == Class::ELF32 { 1 << 32 } else { u64::MAX };

    // Pass 1: validate every PT_LOAD and compute the extent and the entry's GPA.
    let mut lowest = u64::MAX;
    let mut end = 0u64;
    let mut entry_gpa = None;
    let mut any = false;
    for (index, ph) in segments.iter().enumerate() {
        let Some(seg) = validate_segment(image, index, &ph, addr_limit)? else { continue };
        any = true;
        lowest = lowest.min(seg.paddr);
        end = end.max(seg.paddr + seg.memsz);
        if entry_gpa.is_none()
            && let Some(delta) = ehdr.e_entry.checked_sub(ph.p_vaddr)
            && delta < ph.p_memsz
        {
            entry_gpa = Some(seg.paddr + delta);
        }
    }
    if !any {
        return Err(LoadError::NoLoadableSegments);
    }

    // Pass 2: copy and zero.
    for (index, ph) in segments.iter().enumerate() {
        let Some(seg) = validate_segment(image, index, &ph, addr_limit)? else { continue };
        let fail = |error| LoadError::SegmentOutsideMemory { index, paddr: seg.paddr, memsz: seg.memsz, error };
        mem.write(seg.paddr, seg.data).map_err(fail)?;
        let filesz = seg.data.len() as u64;
        mem.fill(seg.paddr + filesz, seg.memsz - filesz, 0).map_err(fail)?;
    }

    Ok(LoadedImage { entry: ehdr.e_entry, entry_gpa: entry_gpa.unwrap_or(ehdr.e_entry), lowest, highest: end - 1 })
}

/// Multiboot1 header magic (in the image).
pub const MULTIBOOT1_HEADER_MAGIC: u32 = 0x1BAD_B002;
/// The header must lie entirely within this many bytes from the start of the image.
pub const MULTIBOOT1_SEARCH_BYTES: usize = 8192;
/// Flag bit 0: align boot modules on 4 KiB boundaries.
pub const MB1_FLAG_PAGE_ALIGN: u32 = 1 << 0;
/// Flag bit 1: the kernel needs `mem_*` (and the memory map) in the information structure.
pub const MB1_FLAG_MEMORY_INFO: u32 = 1 << 1;
/// Flag bit 2: the kernel asks for a video mode (fields at offsets 32..48).
pub const MB1_FLAG_VIDEO_MODE: u32 = 1 << 2;
/// Flag bit 16: the a.out-kludge address fields (offsets 12..32) are valid.
pub const MB1_FLAG_AOUT_KLUDGE: u32 = 1 << 16;

/// The a.out-kludge load addresses of a multiboot1 header (flag bit 16), Multiboot 0.6.96 §3.1.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AoutKludge {
    /// Physical address at which the header itself is loaded.
    pub header_addr: u32,
    /// Physical address of the start of the text segment (file offset `header_offset -
    /// (header_addr - load_addr)`).
    pub load_addr: u32,
    /// End of the data segment; 0 = the text and data fill the rest of the file.
    pub load_end_addr: u32,
    /// End of the bss segment (zeroed); 0 = no bss.
    pub bss_end_addr: u32,
    /// Entry point.
    pub entry_addr: u32,
}

/// The video-mode request of a multiboot1 header (flag bit 2), Multiboot 0.6.96 §3.1.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoMode {
    /// 0 = linear graphics, 1 = EGA text.
    pub mode_type: u32,
    /// Columns (pixels or characters); 0 = no preference.
    pub width: u32,
    /// Rows; 0 = no preference.
    pub height: u32,
    /// Bits per pixel; 0 = no preference.
    pub depth: u32,
}

/// A valid multiboot1 header found by [`multiboot1_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Multiboot1Header {
    /// File offset of the header (of its magic).
    pub offset: usize,
    /// The `flags` field. Bits 0–15 are requirements: a loader must refuse the image if it
    /// cannot satisfy one (see [`Multiboot1Header::unsupported_required_flags`]).
    pub flags: u32,
    /// The a.out-kludge addresses, when flag bit 16 is set.
    pub aout: Option<AoutKludge>,
    /// The video-mode request, when flag bit 2 is set.
    pub video: Option<VideoMode>,
}

impl Multiboot1Header {
    /// The requirement bits (0–15) of `flags` not in `supported` (e.g. pass
    /// `MB1_FLAG_PAGE_ALIGN | MB1_FLAG_MEMORY_INFO`); non-zero means the image must not be
    /// booted.
    pub const fn unsupported_required_flags(&self, supported: u32) -> u32 {
        self.flags & 0xFFFF & !supported
    }
}

fn u32_at(image: &[u8], off: usize) -> Option<u32> {
    let b = image.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Finds the multiboot1 header in `image`; `None` if there is no valid one.
///
/// A candidate whose magic and checksum match but whose required fields (for flags 16 and
/// 2) run past the image or past the first 8192 bytes is skipped, and the search goes on.
pub fn multiboot1_header(image: &[u8]) -> Option<Multiboot1Header> {
    let window = image.get(..MULTIBOOT1_SEARCH_BYTES).unwrap_or(image);
    (0..window.len()).step_by(4).find_map(|offset| parse_header(window, offset))
}

fn parse_header(window: &[u8], offset: usize) -> Option<Multiboot1Header> {
    if u32_at(window, offset)? != MULTIBOOT1_HEADER_MAGIC {
        return None;
    }
    let flags = u32_at(window, offset + 4)?;
    let checksum = u32_at(window, offset + 8)?;
    if MULTIBOOT1_HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) != 0 {
        return None;
    }
    let field = |n: usize| u32_at(window, offset + 12 + 4 * n);
    let aout = if flags & MB1_FLAG_AOUT_KLUDGE != 0 {
        Some(AoutKludge {
            header_addr: field(0)?,
            load_addr: field(1)?,
            load_end_addr: field(2)?,
            bss_end_addr: field(3)?,
            entry_addr: field(4)?,
        })
    } else {
        None
    };
    let video = if flags & MB1_FLAG_VIDEO_MODE != 0 {
        Some(VideoMode { mode_type: field(5)?, width: field(6)?, height: field(7)?, depth: field(8)? })
    } else {
        None
    };
    Some(Multiboot1Header { offset, flags, aout, video })
}

/// Loads an image by its multiboot1 a.out-kludge addresses (flag bit 16), Multiboot 0.6.96
/// §3.1.3: the file from offset `header.offset - (header_addr - load_addr)` is copied to
/// `load_addr` up to `load_end_addr` (0: to the end of the file), then zeros up to
/// `bss_end_addr` (0: no bss). The entry is `entry_addr`.
pub fn load_multiboot1_kludge(
    image: &[u8],
    header: &Multiboot1Header,
    mem: &mut impl GuestMemory,
) -> Result<LoadedImage, LoadError> {
    let bad = LoadError::BadSegment { index: 0 };
    let k = header.aout.ok_or(bad)?;
    let back = usize::try_from(k.header_addr.checked_sub(k.load_addr).ok_or(bad)?).map_err(|_| bad)?;
    let file_start = header.offset.checked_sub(back).ok_or(bad)?;
    let available = image.len().checked_sub(file_start).ok_or(bad)? as u64;
    let load = u64::from(k.load_addr);
    let load_len =
        if k.load_end_addr == 0 { available } else { u64::from(k.load_end_addr.checked_sub(k.load_addr).ok_or(bad)?) };
    if load_len > available || load + load_len > 1 << 32 {
        return Err(bad);
    }
    let bss_end = if k.bss_end_addr == 0 { load + load_len } else { u64::from(k.bss_end_addr) };
    if bss_end < load + load_len {
        return Err(bad);
    }
    let memsz = bss_end - load;
    if memsz == 0 {
        return Err(LoadError::NoLoadableSegments);
    }
    let data = image.get(file_start..file_start + load_len as usize).ok_or(bad)?;
    let fail = |error| LoadError::SegmentOutsideMemory { index: 0, paddr: load, memsz, error };
    mem.write(load, data).map_err(fail)?;
    mem.fill(load + load_len, memsz - load_len, 0).map_err(fail)?;
    let entry = u64::from(k.entry_addr);
    Ok(LoadedImage { entry, entry_gpa: entry, lowest: load, highest: bss_end - 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::RegionMemory;
    use std::vec;
    use std::vec::Vec;

    /// One program header for the test builder: (type, offset, vaddr, paddr, filesz, memsz).
    type Ph = (u32, u64, u64, u64, u64, u64);

    /// Builds an ELF image with the given program headers (class 64 or 32), followed by
    /// `payload` at offset 0x1000.
    fn build(class64: bool, machine: u16, e_type: u16, entry: u64, phs: &[Ph], payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 0x1000];
        f[0..4].copy_from_slice(b"\x7FELF");
        f[4] = if class64 { 2 } else { 1 };
        f[5] = 1; // little-endian
        f[6] = 1; // EV_CURRENT
        let put16 = |f: &mut Vec<u8>, o: usize, v: u16| f[o..o + 2].copy_from_slice(&v.to_le_bytes());
        let put32 = |f: &mut Vec<u8>, o: usize, v: u32| f[o..o + 4].copy_from_slice(&v.to_le_bytes());
        let put64 = |f: &mut Vec<u8>, o: usize, v: u64| f[o..o + 8].copy_from_slice(&v.to_le_bytes());
        put16(&mut f, 16, e_type);
        put16(&mut f, 18, machine);
        put32(&mut f, 20, 1);
        if class64 {
            put64(&mut f, 24, entry);
            put64(&mut f, 32, 64); // e_phoff
            put64(&mut f, 40, 0); // e_shoff
            put16(&mut f, 52, 64); // e_ehsize
            put16(&mut f, 54, 56); // e_phentsize
            put16(&mut f, 56, phs.len() as u16);
            for (i, &(t, off, va, pa, fs, ms)) in phs.iter().enumerate() {
                let o = 64 + 56 * i;
                put32(&mut f, o, t);
                put32(&mut f, o + 4, 7);
                put64(&mut f, o + 8, off);
                put64(&mut f, o + 16, va);
                put64(&mut f, o + 24, pa);
                put64(&mut f, o + 32, fs);
                put64(&mut f, o + 40, ms);
                put64(&mut f, o + 48, 0x1000);
            }
        } else {
            put32(&mut f, 24, entry as u32);
            put32(&mut f, 28, 52); // e_phoff
            put32(&mut f, 32, 0); // e_shoff
            put16(&mut f, 40, 52); // e_ehsize
            put16(&mut f, 42, 32); // e_phentsize
            put16(&mut f, 44, phs.len() as u16);
            for (i, &(t, off, va, pa, fs, ms)) in phs.iter().enumerate() {
                let o = 52 + 32 * i;
                put32(&mut f, o, t);
                put32(&mut f, o + 4, off as u32);
                put32(&mut f, o + 8, va as u32);
                put32(&mut f, o + 12, pa as u32);
                put32(&mut f, o + 16, fs as u32);
                put32(&mut f, o + 20, ms as u32);
                put32(&mut f, o + 24, 7);
                put32(&mut f, o + 28, 0x1000);
            }
        }
        f.extend_from_slice(payload);
        f
    }

    fn payload() -> Vec<u8> {
        (0..0x300u32).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn loads_elf64_segments_and_zeroes_bss() {
        let p = payload();
        let img = build(
            true,
            EM_X86_64,
            ET_EXEC,
            0xFFFF_8000_0010_0010,
            &[
                (PT_LOAD, 0x1000, 0xFFFF_8000_0010_0000, 0x10_0000, 0x200, 0x200),
                (6, 0, 0, 0, 0, 0), // PT_PHDR: ignored
                (PT_LOAD, 0x1200, 0xFFFF_8000_0010_2000, 0x10_2000, 0x100, 0x800),
            ],
            &p,
        );
        let mut ram = vec![0xCCu8; 0x10000];
        let mut mem = RegionMemory::new().with(0x10_0000, &mut ram).unwrap();
        let li = load_elf64(&img, &mut mem).unwrap();
        assert_eq!(
            li,
            LoadedImage { entry: 0xFFFF_8000_0010_0010, entry_gpa: 0x10_0010, lowest: 0x10_0000, highest: 0x10_27FF }
        );
        assert_eq!(li.end_gpa(), 0x10_2800);
        assert_eq!(&ram[..0x200], &p[..0x200]);
        assert!(ram[0x200..0x2000].iter().all(|&b| b == 0xCC)); // gap untouched
        assert_eq!(&ram[0x2000..0x2100], &p[0x200..0x300]);
        assert!(ram[0x2100..0x2800].iter().all(|&b| b == 0));
        assert_eq!(ram[0x2800], 0xCC);
    }

    #[test]
    fn loads_elf32() {
        let p = payload();
        let img =
            build(false, EM_386, ET_EXEC, 0x10_000C, &[(PT_LOAD, 0x1000, 0x10_0000, 0x10_0000, 0x300, 0x1000)], &p);
        let mut ram = vec![0xCCu8; 0x2000];
        let mut mem = RegionMemory::new().with(0x10_0000, &mut ram).unwrap();
        let li = load_elf32(&img, &mut mem).unwrap();
        assert_eq!(li.entry, 0x10_000C);
        assert_eq!(li.entry_gpa, 0x10_000C);
        assert_eq!((li.lowest, li.highest), (0x10_0000, 0x10_0FFF));
        assert_eq!(&ram[..0x300], &p[..]);
        assert!(ram[0x300..0x1000].iter().all(|&b| b == 0));
    }

    #[test]
    fn header_checks() {
        let p = payload();
        let seg = [(PT_LOAD, 0x1000, 0x1000, 0x1000, 0x10, 0x10)];
        let mut ram = vec![0u8; 0x4000];
        let mut mem = RegionMemory::new().with(0, &mut ram).unwrap();
        let e64 = build(true, EM_X86_64, ET_EXEC, 0x1000, &seg, &p);
        let e32 = build(false, EM_386, ET_EXEC, 0x1000, &seg, &p);
        assert_eq!(load_elf32(&e64, &mut mem), Err(LoadError::WrongClass));
        assert_eq!(load_elf64(&e32, &mut mem), Err(LoadError::WrongClass));
        let wrong_machine = build(true, EM_386, ET_EXEC, 0x1000, &seg, &p);
        assert_eq!(load_elf64(&wrong_machine, &mut mem), Err(LoadError::WrongMachine { machine: EM_386 }));
        let dyn_ = build(true, EM_X86_64, 3, 0x1000, &seg, &p);
        assert_eq!(load_elf64(&dyn_, &mut mem), Err(LoadError::NotExecutable { e_type: 3 }));
        let mut be = e64.clone();
        be[5] = 2;
        assert_eq!(load_elf64(&be, &mut mem), Err(LoadError::WrongEndianness));
        let mut bad_magic = e64.clone();
        bad_magic[1] = b'X';
        assert_eq!(load_elf64(&bad_magic, &mut mem), Err(LoadError::Malformed));
        assert_eq!(load_elf64(&e64[..40], &mut mem), Err(LoadError::Malformed));
        let none = build(true, EM_X86_64, ET_EXEC, 0, &[(PT_LOAD, 0, 0, 0, 0, 0)], &p);
        assert_eq!(load_elf64(&none, &mut mem), Err(LoadError::NoLoadableSegments));
        assert_eq!(load_elf64(&e64, &mut mem).unwrap().lowest, 0x1000);
    }

    #[test]
    fn segment_checks_happen_before_any_write() {
        let p = payload();
        let mut ram = vec![0xCCu8; 0x4000];
        let mut mem = RegionMemory::new().with(0, &mut ram).unwrap();
        let ok = (PT_LOAD, 0x1000, 0, 0, 0x10, 0x10);
        for (i, bad) in [
            (PT_LOAD, 0x1000, 0, 0x100, 0x20, 0x10),            // filesz > memsz
            (PT_LOAD, 0x1000, 0, 0x100, 0x1000, 0x1000),        // past end of file
            (PT_LOAD, u64::MAX - 4, 0, 0x100, 0x10, 0x10),      // offset overflow
            (PT_LOAD, 0x1000, 0, u64::MAX - 0x10, 0x10, 0x100), // address overflow
        ]
        .into_iter()
        .enumerate()
        {
            let img = build(true, EM_X86_64, ET_EXEC, 0, &[ok, bad], &p);
            assert_eq!(load_elf64(&img, &mut mem), Err(LoadError::BadSegment { index: 1 }), "case {i}");
        }
        // ELF32 segment ending above 4 GiB.
        let img = build(false, EM_386, ET_EXEC, 0, &[(PT_LOAD, 0x1000, 0, 0xFFFF_F000, 0x10, 0x2000)], &p);
        assert_eq!(load_elf32(&img, &mut mem), Err(LoadError::BadSegment { index: 0 }));
        // Nothing was written by the rejected images (not even their valid segment 0).
        let mut all = vec![0u8; 0x4000];
        mem.read(0, &mut all).unwrap();
        assert!(all.iter().all(|&b| b == 0xCC));
        // Does not fit guest memory: error names the segment.
        let img = build(true, EM_X86_64, ET_EXEC, 0, &[ok, (PT_LOAD, 0x1000, 0, 0x3F00, 0x10, 0x200)], &p);
        assert_eq!(
            load_elf64(&img, &mut mem),
            Err(LoadError::SegmentOutsideMemory {
                index: 1,
                paddr: 0x3F00,
                memsz: 0x200,
                error: MemoryError::OutOfRange { gpa: 0x3F10, len: 0x1F0 }
            })
        );
    }

    fn mb1_image(flags: u32, at: usize, extra: &[u32]) -> Vec<u8> {
        let mut img = vec![0u8; 0x3000];
        let mut words =
            vec![MULTIBOOT1_HEADER_MAGIC, flags, 0u32.wrapping_sub(MULTIBOOT1_HEADER_MAGIC).wrapping_sub(flags)];
        words.extend_from_slice(extra);
        for (i, w) in words.iter().enumerate() {
            img[at + 4 * i..at + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        img
    }

    #[test]
    fn multiboot1_header_found_and_decoded() {
        let img = mb1_image(0x3, 0x40, &[]);
        assert_eq!(multiboot1_header(&img), Some(Multiboot1Header { offset: 0x40, flags: 3, aout: None, video: None }));
        let k = [0x10_0040, 0x10_0000, 0x10_2000, 0x10_8000, 0x10_0080];
        let img = mb1_image(MB1_FLAG_AOUT_KLUDGE | MB1_FLAG_PAGE_ALIGN, 0x40, &k);
        let h = multiboot1_header(&img).unwrap();
        assert_eq!(
            h.aout,
            Some(AoutKludge {
                header_addr: 0x10_0040,
                load_addr: 0x10_0000,
                load_end_addr: 0x10_2000,
                bss_end_addr: 0x10_8000,
                entry_addr: 0x10_0080
            })
        );
        assert_eq!(h.unsupported_required_flags(MB1_FLAG_PAGE_ALIGN | MB1_FLAG_MEMORY_INFO), 0);
        let v = mb1_image(MB1_FLAG_VIDEO_MODE, 0, &[0, 0, 0, 0, 0, 1, 80, 25, 0]);
        let h = multiboot1_header(&v).unwrap();
        assert_eq!(h.video, Some(VideoMode { mode_type: 1, width: 80, height: 25, depth: 0 }));
        assert_eq!(h.unsupported_required_flags(MB1_FLAG_MEMORY_INFO), MB1_FLAG_VIDEO_MODE);

        let mut ram = vec![0xCCu8; 0x8000];
        let mut mem = RegionMemory::new().with(0x10_0000, &mut ram).unwrap();
        let h = multiboot1_header(&img).unwrap();
        let li = load_multiboot1_kludge(&img, &h, &mut mem).unwrap();
        assert_eq!(li, LoadedImage { entry: 0x10_0080, entry_gpa: 0x10_0080, lowest: 0x10_0000, highest: 0x10_7FFF });
        assert_eq!(&ram[..0x2000], &img[..0x2000]);
        assert!(ram[0x2000..].iter().all(|&b| b == 0));
    }

    #[test]
    fn multiboot1_header_rejects() {
        // Bad checksum.
        let mut img = mb1_image(0, 0x40, &[]);
        img[0x48] ^= 1;
        assert_eq!(multiboot1_header(&img), None);
        // Not 4-byte aligned.
        let img = mb1_image(0, 0x42, &[]);
        assert_eq!(multiboot1_header(&img), None);
        // Beyond the first 8192 bytes.
        let img = mb1_image(0, 8192, &[]);
        assert_eq!(multiboot1_header(&img), None);
        // Flag 16 fields cut off by the 8 KiB window / the image end.
        let img = mb1_image(MB1_FLAG_AOUT_KLUDGE, 8192 - 16, &[1, 2, 3]);
        assert_eq!(multiboot1_header(&img), None);
        let img = mb1_image(MB1_FLAG_AOUT_KLUDGE, 0, &[]);
        assert_eq!(multiboot1_header(&img[..20]), None);
        assert_eq!(multiboot1_header(&[]), None);
        assert_eq!(multiboot1_header(&[0x02, 0xB0, 0xAD]), None);
        // A later valid header is still found after a broken candidate.
        let mut img = mb1_image(0, 0x100, &[]);
        img[0x10..0x14].copy_from_slice(&MULTIBOOT1_HEADER_MAGIC.to_le_bytes());
        assert_eq!(multiboot1_header(&img).map(|h| h.offset), Some(0x100));
    }

    /// Random bytes and randomly mutated valid images never panic any parser or loader.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn check_all(data: &[u8]) {
            let mut ram = vec![0u8; 0x4000];
            let mut mem = RegionMemory::new().with(0x1000, &mut ram).unwrap();
            let _ = load_elf64(data, &mut mem);
            let _ = load_elf32(data, &mut mem);
            if let Some(h) = multiboot1_header(data) {
                let _ = load_multiboot1_kludge(data, &h, &mut mem);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            #[test]
            fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
                check_all(&data);
            }

            #[test]
            fn mutated_elf(class64 in any::<bool>(), edits in proptest::collection::vec((0usize..0x1100, any::<u8>()), 1..12),
                           cut in 0usize..0x1400) {
                let p = payload();
                let phs = [(PT_LOAD, 0x1000, 0x1000, 0x1000, 0x100, 0x200), (PT_LOAD, 0x1100, 0x2000, 0x2000, 0x100, 0x100)];
                let (m, base) = if class64 { (EM_X86_64, 64) } else { (EM_386, 52) };
                let mut img = build(class64, m, ET_EXEC, 0x1000, &phs, &p);
                for (pos, b) in edits {
                    // Aim most edits at the headers, where the offsets and counts live.
                    let pos = if pos < 0x800 { pos % (base + 2 * 56) } else { pos };
                    if let Some(x) = img.get_mut(pos) { *x = b; }
                }
                img.truncate(cut.max(1));
                check_all(&img);
            }

            #[test]
            fn mutated_multiboot(flags in any::<u32>(), words in proptest::collection::vec(any::<u32>(), 0..9),
                                 at in 0usize..2100) {
                let img = mb1_image(flags | MB1_FLAG_AOUT_KLUDGE, at * 4, &words);
                check_all(&img);
                check_all(&img[..(at * 4 + 20).min(img.len())]);
            }
        }
    }
}
