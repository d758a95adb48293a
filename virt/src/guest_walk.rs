//! Translating a guest-linear address through the guest's own page tables, for the
//! hypervisor to read the instruction that caused an exit (the xAPIC page emulation).
//!
//! The four paging modes (Intel SDM Vol. 3A 5.1.1, Table "Properties of Different Paging
//! Modes"; AMD APM Vol. 2 5.1): none (CR0.PG clear), 32-bit (4-byte entries, 4 MiB pages
//! with CR4.PSE), PAE (CR4.PAE, four PDPTEs at CR3[31:5]) and 4-/5-level (EFER.LMA,
//! CR4.LA57). Only the present bit and the page-size bit matter here: the processor has
//! just fetched the instruction, so the access rights allowed it.

use crate::memory::GuestMemory;

/// The control registers that select the paging mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagingState {
    /// CR0 (PG, bit 31).
    pub cr0: u64,
    /// CR3 (the root table's address).
    pub cr3: u64,
    /// CR4 (PSE bit 4, PAE bit 5, LA57 bit 12).
    pub cr4: u64,
    /// EFER (LMA, bit 10).
    pub efer: u64,
}

const PRESENT: u64 = 1;
const PAGE_SIZE_BIT: u64 = 1 << 7;
/// Physical-address bits 51:12 of an 8-byte entry.
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The guest-physical address `linear` maps to, or `None` when a table entry on the way is
/// not present or not in guest memory.
pub fn translate(memory: &impl GuestMemory, paging: PagingState, linear: u64) -> Option<u64> {
    const CR0_PG: u64 = 1 << 31;
    const CR4_PSE: u64 = 1 << 4;
    const CR4_PAE: u64 = 1 << 5;
    const CR4_LA57: u64 = 1 << 12;
    const EFER_LMA: u64 = 1 << 10;
    if paging.cr0 & CR0_PG == 0 {
        return Some(linear & 0xffff_ffff);
    }
    if paging.efer & EFER_LMA != 0 {
        let levels = if paging.cr4 & CR4_LA57 != 0 { 5 } else { 4 };
        return walk64(memory, paging.cr3 & ADDRESS_MASK, linear, levels);
    }
    let linear = linear & 0xffff_ffff;
    if paging.cr4 & CR4_PAE != 0 {
        let pdpte = memory.read_u64((paging.cr3 & 0xffff_ffe0) + ((linear >> 30) & 3) * 8).ok()?;
        if pdpte & PRESENT == 0 {
            return None;
        }
        return walk64(memory, pdpte & ADDRESS_MASK, linear, 2);
    }
    let pde = u64::from(memory.read_u32((paging.cr3 & 0xffff_f000) + ((linear >> 22) & 0x3ff) * 4).ok()?);
    if pde & PRESENT == 0 {
        return None;
    }
    if pde & PAGE_SIZE_BIT != 0 && paging.cr4 & CR4_PSE != 0 {
        // 4 MiB page: bits 31:22 from the PDE, 39:32 from PDE bits 20:13 (PSE-36).
        return Some((pde & 0xffc0_0000) | ((pde >> 13) & 0xff) << 32 | (linear & 0x3f_ffff));
    }
    let pte = u64::from(memory.read_u32((pde & 0xffff_f000) + ((linear >> 12) & 0x3ff) * 4).ok()?);
    (pte & PRESENT != 0).then_some((pte & 0xffff_f000) | (linear & 0xfff))
}

/// Walks `levels` levels of 8-byte, 512-entry tables from `table`; large pages at the
/// PDPT (1 GiB) and PD (2 MiB) levels.
fn walk64(memory: &impl GuestMemory, mut table: u64, linear: u64, levels: u32) -> Option<u64> {
    for level in (1..=levels).rev() {
        let shift = 12 + 9 * (level - 1);
        let entry = memory.read_u64(table + ((linear >> shift) & 0x1ff) * 8).ok()?;
        if entry & PRESENT == 0 {
            return None;
        }
        if level == 1 || ((level == 2 || level == 3) && entry & PAGE_SIZE_BIT != 0) {
            let offset_mask = (1u64 << shift) - 1;
            return Some((entry & ADDRESS_MASK & !offset_mask) | (linear & offset_mask));
        }
        table = entry & ADDRESS_MASK;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::RegionMemory;
    use std::vec;

    const PG: u64 = 1 << 31;

    #[test]
    fn no_paging_is_identity() {
        let mut bytes = vec![0u8; 4096];
        let memory = RegionMemory::new().with(0, &mut bytes).unwrap();
        let paging = PagingState { cr0: 1, cr3: 0, cr4: 0, efer: 0 };
        assert_eq!(translate(&memory, paging, 0x1234), Some(0x1234));
    }

    #[test]
    fn identity_tables_of_the_loader_translate() {
        let mut bytes = vec![0u8; 0x10000];
        let mut memory = RegionMemory::new().with(0, &mut bytes).unwrap();
        let cr3 = crate::guest_paging::write_identity_tables(&mut memory, 0x2000, 4 << 30).unwrap();
        let paging = PagingState { cr0: PG | 1, cr3, cr4: 1 << 5, efer: 0x500 };
        assert_eq!(translate(&memory, paging, 0xfee0_0020), Some(0xfee0_0020));
        assert_eq!(translate(&memory, paging, 0x80123), Some(0x80123));
        assert_eq!(translate(&memory, paging, 5 << 30), None);
    }

    #[test]
    fn four_kib_pages_in_long_and_pae_mode() {
        let mut bytes = vec![0u8; 0x10000];
        let mut memory = RegionMemory::new().with(0, &mut bytes).unwrap();
        // 4-level: PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000; linear 0x40_1000
        // (PD entry 2, PT entry 1) maps to 0x9000.
        memory.write(0x1000, &(0x2000u64 | 3).to_le_bytes()).unwrap();
        memory.write(0x2000, &(0x3000u64 | 3).to_le_bytes()).unwrap();
        memory.write(0x3000 + 2 * 8, &(0x4000u64 | 3).to_le_bytes()).unwrap();
        memory.write(0x4000 + 8, &(0x9000u64 | 3).to_le_bytes()).unwrap();
        let long = PagingState { cr0: PG | 1, cr3: 0x1000, cr4: 1 << 5, efer: 0x500 };
        assert_eq!(translate(&memory, long, 0x40_1abc), Some(0x9abc));
        assert_eq!(translate(&memory, long, 0x40_2abc), None);
        // PAE: PDPTE 0 at CR3 0x5000 -> the same PD.
        memory.write(0x5000, &(0x3000u64 | 1).to_le_bytes()).unwrap();
        let pae = PagingState { cr0: PG | 1, cr3: 0x5000, cr4: 1 << 5, efer: 0 };
        assert_eq!(translate(&memory, pae, 0x40_1abc), Some(0x9abc));
    }

    #[test]
    fn thirty_two_bit_paging_with_4mib_pages() {
        let mut bytes = vec![0u8; 0x10000];
        let mut memory = RegionMemory::new().with(0, &mut bytes).unwrap();
        // PDE 0x3fb (0xfec00000) is a 4 MiB page at 0xfec00000; PDE 0 points at a PT.
        memory.write(0x1000 + 0x3fb * 4, &(0xfec0_0083u32).to_le_bytes()).unwrap();
        memory.write(0x1000, &(0x2003u32).to_le_bytes()).unwrap();
        memory.write(0x2000 + 4 * 5, &(0x7003u32).to_le_bytes()).unwrap();
        let paging = PagingState { cr0: PG | 1, cr3: 0x1000, cr4: 1 << 4, efer: 0 };
        assert_eq!(translate(&memory, paging, 0xfee0_0020), Some(0xfee0_0020));
        assert_eq!(translate(&memory, paging, 0x5010), Some(0x7010));
        assert_eq!(translate(&memory, paging, 0x6010), None);
    }
}
