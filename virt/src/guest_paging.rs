//! Page tables and descriptors for guests that are entered directly in long mode or in
//! protected mode, without a bootloader of their own.
//!
//! [`write_identity_tables`] writes 4-level long-mode page tables (Intel SDM Vol. 3A §5.5
//! "4-Level Paging", AMD APM Vol. 2 §5.3) into guest memory that identity-map
//! `[0, map_bytes)` with 2 MiB pages, present + writable + executable (NX clear), memory
//! type from the guest PAT's default entry (PWT = PCD = 0: write-back; the SLAT memory type
//! still makes device ranges UC). The mapping is rounded up to whole 1 GiB units, one
//! page directory each. Layout from `at_gpa` (4 KiB aligned), all 4 KiB pages:
//!
//! | page | contents |
//! |---|---|
//! | 0 | PML4 (its entries i < P point at PDPT i) |
//! | 1 ..= P | P = max(1, ⌈G / 512⌉) PDPTs, entry g points at PD g |
//! | P + 1 ..= P + G | G = ⌈map_bytes / 1 GiB⌉ PDs of 512 × 2 MiB pages |
//!
//! so the tables use `1 + P + G` pages ([`identity_tables_size`]); e.g. 4 GiB takes 6 pages
//! (24 KiB). The CR3 value returned is `at_gpa` (PWT = PCD = 0). A guest that enables long
//! mode itself from 32-bit code can only load a CR3 below 4 GiB.
//!
//! [`flat_gdt`] gives flat descriptors (base 0, limit 4 GiB, DPL 0) for a 64-bit code, a
//! data and a 32-bit code segment, with the accessed bit preset: the CPU then never writes
//! to the GDT, and VMX guest-state checks require accessed code/stack segments (SDM Vol. 3C
//! §27.3.1.2). [`Segment`] splits a descriptor into the hidden parts that VMCS and VMCB
//! hold.

use crate::memory::{GuestMemory, MemoryError};

const PAGE: u64 = 4096;
const GIB: u64 = 1 << 30;
const MIB2: u64 = 1 << 21;
/// Present.
const P: u64 = 1 << 0;
/// Writable.
const RW: u64 = 1 << 1;
/// Page size (2 MiB page in a PDE).
const PS: u64 = 1 << 7;

/// The most [`write_identity_tables`] maps: the 48-bit address space of 4-level paging.
pub const MAX_IDENTITY_BYTES: u64 = 1 << 48;

fn counts(map_bytes: u64) -> (u64, u64) {
    let pds = map_bytes.div_ceil(GIB);
    let pdpts = pds.div_ceil(512).max(1);
    (pdpts, pds)
}

/// Bytes of guest memory [`write_identity_tables`] uses for `map_bytes`:
/// `(1 + max(1, ⌈G / 512⌉) + G) × 4096` with `G = ⌈map_bytes / 1 GiB⌉`.
pub const fn identity_tables_size(map_bytes: u64) -> u64 {
    let pds = map_bytes.div_ceil(GIB);
    let pdpts = if pds.div_ceil(512) == 0 { 1 } else { pds.div_ceil(512) };
    (1 + pdpts + pds) * PAGE
}

/// Writes one 4 KiB table whose entry `i` is `entry(i)`, in 512-byte chunks.
fn write_table(mem: &mut impl GuestMemory, gpa: u64, entry: impl Fn(u64) -> u64) -> Result<(), MemoryError> {
    let mut chunk = [0u8; 512];
    for c in 0..8u64 {
        for (j, slot) in chunk.chunks_exact_mut(8).enumerate() {
            slot.copy_from_slice(&entry(c * 64 + j as u64).to_le_bytes());
        }
        mem.write(gpa + c * 512, &chunk)?;
    }
    Ok(())
}

/// Writes identity-mapping long-mode page tables for `[0, map_bytes)` (rounded up to
/// 1 GiB) at `at_gpa` and returns the CR3 value. Layout in the module notes.
///
/// Errors: `at_gpa` not 4 KiB aligned ([`MemoryError::Misaligned`]), `map_bytes` above
/// [`MAX_IDENTITY_BYTES`] ([`MemoryError::InvalidArgument`]), or the tables do not fit
/// guest memory ([`MemoryError::OutOfRange`]). The whole table area is zeroed first with one
/// [`GuestMemory::fill`], so with an all-or-nothing memory a range that does not fit fails
/// before anything is written.
pub fn write_identity_tables(mem: &mut impl GuestMemory, at_gpa: u64, map_bytes: u64) -> Result<u64, MemoryError> {
    if !at_gpa.is_multiple_of(PAGE) {
        return Err(MemoryError::Misaligned { gpa: at_gpa });
    }
    if map_bytes > MAX_IDENTITY_BYTES {
        return Err(MemoryError::InvalidArgument);
    }
    let size = identity_tables_size(map_bytes);
    mem.fill(at_gpa, size, 0)?;
    let (pdpts, pds) = counts(map_bytes);
    let pdpt_base = at_gpa + PAGE;
    let pd_base = pdpt_base + pdpts * PAGE;

    write_table(mem, at_gpa, |i| if i < pdpts { (pdpt_base + i * PAGE) | P | RW } else { 0 })?;
    for t in 0..pdpts {
        write_table(mem, pdpt_base + t * PAGE, |i| {
            let g = t * 512 + i;
            if g < pds { (pd_base + g * PAGE) | P | RW } else { 0 }
        })?;
    }
    for g in 0..pds {
        write_table(mem, pd_base + g * PAGE, |i| (g * GIB + i * MIB2) | P | RW | PS)?;
    }
    Ok(at_gpa)
}

/// Selector of the 64-bit code segment in [`flat_gdt`].
pub const CODE64_SELECTOR: u16 = 0x08;
/// Selector of the data segment in [`flat_gdt`] (DS, ES, SS, FS, GS).
pub const DATA_SELECTOR: u16 = 0x10;
/// Selector of the 32-bit code segment in [`flat_gdt`].
pub const CODE32_SELECTOR: u16 = 0x18;

/// 64-bit code: base 0, limit 0xFFFFF × 4 KiB, G, L, P, DPL 0, execute/read, accessed.
pub const CODE64_DESCRIPTOR: u64 = 0x00AF_9B00_0000_FFFF;
/// Data: base 0, 4 GiB, G, D/B, P, DPL 0, read/write, accessed.
pub const DATA_DESCRIPTOR: u64 = 0x00CF_9300_0000_FFFF;
/// 32-bit code: base 0, 4 GiB, G, D, P, DPL 0, execute/read, accessed.
pub const CODE32_DESCRIPTOR: u64 = 0x00CF_9B00_0000_FFFF;

/// Null, 64-bit code, data, 32-bit code descriptors (indices match the selector constants).
pub const fn flat_gdt() -> [u64; 4] {
    [0, CODE64_DESCRIPTOR, DATA_DESCRIPTOR, CODE32_DESCRIPTOR]
}

/// A segment register's visible selector and hidden parts, decoded from a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Base address (32 bits from a code/data descriptor).
    pub base: u64,
    /// Limit in bytes minus one, expanded by the granularity bit.
    pub limit: u32,
    /// Descriptor bits 47:40 in bits 7:0 and bits 55:52 in bits 15:12 (type, S, DPL, P,
    /// AVL, L, D/B, G), the VMX access-rights layout.
    pub access: u16,
}

impl Segment {
    /// Decodes a code/data descriptor loaded with `selector`.
    pub const fn from_descriptor(selector: u16, descriptor: u64) -> Self {
        let base = ((descriptor >> 16) & 0xFF_FFFF) | (((descriptor >> 56) & 0xFF) << 24);
        let raw_limit = ((descriptor & 0xFFFF) | ((descriptor >> 32) & 0xF_0000)) as u32;
        let access = ((descriptor >> 40) & 0xF0FF) as u16;
        let limit = if access & (1 << 15) != 0 { (raw_limit << 12) | 0xFFF } else { raw_limit };
        Self { selector, base, limit, access }
    }

    /// The segment for a selector of [`flat_gdt`]; the null segment for any other.
    pub const fn flat(selector: u16) -> Self {
        let gdt = flat_gdt();
        let index = (selector >> 3) as usize;
        if index < gdt.len() { Self::from_descriptor(selector, gdt[index]) } else { Self::from_descriptor(0, 0) }
    }

    /// VMCS guest access-rights field (SDM Vol. 3C §25.4.1, "Format of Access Rights"):
    /// bit 16 "unusable" for a null selector.
    pub const fn vmx_access_rights(&self) -> u32 {
        if self.selector & !3 == 0 { 1 << 16 } else { self.access as u32 }
    }

    /// VMCB segment `attrib` field (APM Vol. 2 §15.5.1): descriptor bits 47:40 in 7:0 and
    /// 55:52 in 11:8.
    pub const fn svm_attrib(&self) -> u16 {
        (self.access & 0xFF) | ((self.access >> 4) & 0xF00)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::RegionMemory;
    use std::vec;

    #[test]
    fn sizes() {
        assert_eq!(identity_tables_size(0), 2 * PAGE);
        assert_eq!(identity_tables_size(1), 3 * PAGE);
        assert_eq!(identity_tables_size(GIB), 3 * PAGE);
        assert_eq!(identity_tables_size(4 * GIB), 6 * PAGE);
        assert_eq!(identity_tables_size(4 * GIB + 1), 7 * PAGE);
        assert_eq!(identity_tables_size(512 * GIB), (2 + 512) * PAGE);
        assert_eq!(identity_tables_size(513 * GIB), (3 + 513) * PAGE);
        assert_eq!(identity_tables_size(u64::MAX), (1 + (1 << 25) + (1 << 34)) * PAGE);
    }

    #[test]
    fn identity_tables_translate_like_hardware() {
        let at = 0x7000;
        let mut ram = vec![0xAAu8; 0x10_0000];
        let mut mem = RegionMemory::new().with(0, &mut ram).unwrap();
        let cr3 = write_identity_tables(&mut mem, at, 2 * GIB + 5).unwrap();
        assert_eq!(cr3, at);
        assert_eq!(mem.read_u64(at).unwrap(), (at + PAGE) | 3);
        assert_eq!(mem.read_u64(at + 8).unwrap(), 0);
        assert_eq!(mem.read_u64(at + PAGE).unwrap(), (at + 2 * PAGE) | 3);
        assert_eq!(mem.read_u64(at + PAGE + 16).unwrap(), (at + 4 * PAGE) | 3);
        assert_eq!(mem.read_u64(at + PAGE + 24).unwrap(), 0);
        assert_eq!(mem.read_u64(at + 2 * PAGE).unwrap(), 0x83);
        assert_eq!(mem.read_u64(at + 4 * PAGE + 511 * 8).unwrap(), (3 * GIB - MIB2) | 0x83);
        // Walk like the CPU for a few addresses.
        for va in [0u64, 0x1234_5678, GIB + MIB2 + 17, 3 * GIB - 1] {
            let pml4e = mem.read_u64(cr3 + ((va >> 39) & 511) * 8).unwrap();
            let pdpte = mem.read_u64((pml4e & !0xFFF) + ((va >> 30) & 511) * 8).unwrap();
            let pde = mem.read_u64((pdpte & !0xFFF) + ((va >> 21) & 511) * 8).unwrap();
            assert_eq!(pde & 0x83, 0x83);
            assert_eq!(pde & (1 << 63), 0);
            assert_eq!((pde & !0x1F_FFFF & 0x000F_FFFF_FFFF_F000) | (va & 0x1F_FFFF), va);
        }
        // Nothing written past the documented size.
        let end = at + identity_tables_size(2 * GIB + 5);
        assert_eq!(mem.read_u64(end).unwrap(), 0xAAAA_AAAA_AAAA_AAAA);
        assert_eq!(mem.read_u64(at - 8).unwrap(), 0xAAAA_AAAA_AAAA_AAAA);
    }

    #[test]
    fn more_than_512_gib_uses_two_pdpts() {
        let mut ram = vec![0u8; identity_tables_size(513 * GIB) as usize];
        let mut mem = RegionMemory::new().with(0, &mut ram).unwrap();
        write_identity_tables(&mut mem, 0, 513 * GIB).unwrap();
        assert_eq!(mem.read_u64(8).unwrap(), (2 * PAGE) | 3);
        assert_eq!(mem.read_u64(16).unwrap(), 0);
        // PDPT 1 entry 0 → PD 512, whose first page is 512 GiB.
        let pd512 = mem.read_u64(2 * PAGE).unwrap() & !0xFFF;
        assert_eq!(pd512, (3 + 512) * PAGE);
        assert_eq!(mem.read_u64(pd512).unwrap(), (512 * GIB) | 0x83);
    }

    #[test]
    fn errors() {
        let mut ram = vec![0u8; 0x2000];
        let mut mem = RegionMemory::new().with(0, &mut ram).unwrap();
        assert_eq!(write_identity_tables(&mut mem, 0x10, GIB), Err(MemoryError::Misaligned { gpa: 0x10 }));
        assert_eq!(write_identity_tables(&mut mem, 0, MAX_IDENTITY_BYTES + 1), Err(MemoryError::InvalidArgument));
        assert!(matches!(write_identity_tables(&mut mem, 0, GIB), Err(MemoryError::OutOfRange { .. })));
        assert!(matches!(write_identity_tables(&mut mem, !0xFFF, GIB), Err(MemoryError::OutOfRange { .. })));
    }

    #[test]
    fn gdt_and_segments() {
        let gdt = flat_gdt();
        assert_eq!(gdt[usize::from(CODE64_SELECTOR >> 3)], CODE64_DESCRIPTOR);
        assert_eq!(gdt[usize::from(DATA_SELECTOR >> 3)], DATA_DESCRIPTOR);
        assert_eq!(gdt[usize::from(CODE32_SELECTOR >> 3)], CODE32_DESCRIPTOR);
        let cs = Segment::flat(CODE64_SELECTOR);
        assert_eq!((cs.base, cs.limit, cs.access), (0, 0xFFFF_FFFF, 0xA09B));
        assert_eq!(cs.vmx_access_rights(), 0xA09B);
        assert_eq!(cs.svm_attrib(), 0xA9B);
        let ds = Segment::flat(DATA_SELECTOR);
        assert_eq!((ds.access, ds.svm_attrib()), (0xC093, 0xC93));
        let cs32 = Segment::flat(CODE32_SELECTOR);
        assert_eq!((cs32.access, cs32.limit), (0xC09B, 0xFFFF_FFFF));
        assert_eq!(Segment::flat(0).vmx_access_rights(), 1 << 16);
        assert_eq!(Segment::flat(0x40).selector, 0);
        let odd = Segment::from_descriptor(0x28, 0x1200_9A34_5678_0FFF);
        assert_eq!((odd.base, odd.limit, odd.access), (0x1234_5678, 0xFFF, 0x009A));
    }
}
