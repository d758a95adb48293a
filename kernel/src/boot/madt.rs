//! CPU discovery from the ACPI MADT (through the `acpi` crate; the RSDP comes from the
//! multiboot2 boot information).

use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use bulkhead_board::tables::MAX_CPUS;
use core::ptr::NonNull;
use heapless::Vec;

/// All physical memory is identity-mapped, so "mapping" a table is taking its address.
#[derive(Clone, Copy)]
struct IdentityMapped;

impl AcpiHandler for IdentityMapped {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        let virt = NonNull::new(physical_address as *mut T).expect("ACPI table at physical address 0");
        // SAFETY: identity mapping: the physical range is readable at the same address.
        unsafe { PhysicalMapping::new(physical_address, virt, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// APIC IDs of the processors the firmware lists as enabled or online-capable, in MADT
/// order (which puts the boot CPU first on the boards we know, but callers must not rely
/// on it). More than the build-time limit [`MAX_CPUS`] are counted in `ignored`; which of
/// them the hypervisor starts is `boot/smp.rs`'s choice (the board's).
pub struct CpuList {
    pub apic_ids: Vec<u32, MAX_CPUS>,
    pub ignored: usize,
}

#[derive(Debug, Clone, Copy)]
#[cfg_attr(bulkhead_console = "defmt", derive(defmt::Format))]
pub enum MadtError {
    BadRsdp,
    NoMadt,
}

crate::log::derived_format!(MadtError);

/// # Safety
/// `rsdp` must be the address of an RSDP (or a copy of one) in identity-mapped memory.
pub unsafe fn processors(rsdp: u64) -> Result<CpuList, MadtError> {
    // SAFETY: per the caller's promise.
    let tables = unsafe { AcpiTables::from_rsdp(IdentityMapped, rsdp as usize) }.map_err(|_| MadtError::BadRsdp)?;
    let madt = tables.find_table::<Madt>().map_err(|_| MadtError::NoMadt)?;
    let mut list = CpuList { apic_ids: Vec::new(), ignored: 0 };
    // ACPI 6.5 5.2.12.2: flags bit 0 = enabled, bit 1 = online capable.
    const USABLE: u32 = 0b11;
    for entry in madt.get().entries() {
        let id = match entry {
            MadtEntry::LocalApic(e) if e.flags & USABLE != 0 => u32::from(e.apic_id),
            MadtEntry::LocalX2Apic(e) if e.flags & USABLE != 0 => e.x2apic_id,
            _ => continue,
        };
        if list.apic_ids.contains(&id) {
            continue;
        }
        if list.apic_ids.push(id).is_err() {
            list.ignored += 1;
        }
    }
    Ok(list)
}
