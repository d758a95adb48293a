//! The ACPI tables of `bulkhead_virt::acpi`, read back by an independent parser: the `acpi`
//! crate (rust-osdev), given "physical memory" that is the generated buffer at its
//! guest-physical address. It validates the RSDP and every table it maps (signature,
//! header fields, checksum), so a wrong length, pointer or checksum fails these tests.

use acpi::address::AddressSpace;
use acpi::fadt::Fadt;
use acpi::madt::{Madt, MadtEntry};
use acpi::mcfg::Mcfg;
use acpi::{AcpiError, AcpiHandler, AcpiTables, PhysicalMapping};
use bulkhead_virt::acpi::{
    AcpiLayout, IoApic, PartitionPlatform, PciSegment, ResetRegister, tables_size, write_tables,
};
use std::ptr::NonNull;

/// Guest-physical memory `[base, base + len)`, backed by a page-aligned allocation that is
/// leaked: the parser's mappings are raw pointers into it, which must stay valid.
#[derive(Clone, Copy, Debug)]
struct GuestMemory {
    base: usize,
    bytes: &'static [u8],
}

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Page([u8; 4096]);

impl GuestMemory {
    /// `len` bytes (rounded up to pages) at `base`, filled by `fill`.
    fn new(base: usize, len: usize, fill: impl FnOnce(&mut [u8])) -> Self {
        let pages: &'static mut [Page] = Vec::leak(vec![Page([0; 4096]); len.div_ceil(4096)]);
        let len = pages.len() * 4096;
        // SAFETY: `Page` is plain bytes without padding; the slice covers exactly the pages.
        let bytes = unsafe { std::slice::from_raw_parts_mut(pages.as_mut_ptr().cast::<u8>(), len) };
        fill(bytes);
        Self { base, bytes }
    }
}

impl AcpiHandler for GuestMemory {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        let offset = physical_address.checked_sub(self.base).expect("parser read below the tables' memory");
        assert!(offset + size <= self.bytes.len(), "parser read past the tables' memory: {physical_address:#x}+{size}");
        let ptr = NonNull::from(&self.bytes[offset]).cast::<T>();
        // SAFETY: the range is inside `bytes`, which lives for the rest of the program and is
        // never written again.
        unsafe { PhysicalMapping::new(physical_address, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// The tables for `platform` written at guest-physical `base`, and the parser's view of them.
fn parse(base: usize, platform: &PartitionPlatform<'_>) -> (AcpiLayout, AcpiTables<GuestMemory>, GuestMemory) {
    let size = tables_size(platform).unwrap();
    let mut layout = None;
    let memory = GuestMemory::new(base, size, |bytes| {
        layout = Some(write_tables(bytes, base as u64, platform).unwrap());
    });
    let layout = layout.unwrap();
    // SAFETY: `layout.rsdp` lies in `memory`, which the handler maps.
    let tables = unsafe { AcpiTables::from_rsdp(memory, layout.rsdp as usize) }.expect("RSDP and XSDT valid");
    (layout, tables, memory)
}

/// (APIC ID, ACPI Processor UID, flags) of every processor entry, in MADT order, and the
/// types of the other entries.
fn processors(tables: &AcpiTables<GuestMemory>) -> (Vec<(u32, u32, u32)>, Vec<u8>) {
    let madt = tables.find_table::<Madt>().expect("MADT valid");
    let mut cpus = Vec::new();
    let mut others = Vec::new();
    for entry in madt.get().entries() {
        match entry {
            // ACPI 6.4 5.2.12.12: APIC IDs below 255 in Local APIC entries, the others in
            // Local x2APIC entries (Linux ignores an x2APIC entry below 255 when the MADT
            // has Local APIC entries too).
            MadtEntry::LocalApic(e) => {
                assert_ne!(e.apic_id, 0xFF, "APIC ID 255 in a Local APIC entry");
                cpus.push((u32::from(e.apic_id), u32::from(e.processor_id), { e.flags }))
            }
            MadtEntry::LocalX2Apic(e) => {
                assert!({ e.x2apic_id } >= 0xFF, "APIC ID {} in a Local x2APIC entry", { e.x2apic_id });
                cpus.push(({ e.x2apic_id }, { e.processor_uid }, { e.flags }))
            }
            MadtEntry::IoApic(e) => others.push(e.header.entry_type),
            MadtEntry::InterruptSourceOverride(e) => others.push(e.header.entry_type),
            MadtEntry::LocalApicNmi(e) => others.push(e.header.entry_type),
            other => panic!("unexpected MADT entry {other:?}"),
        }
    }
    (cpus, others)
}

#[test]
fn the_parser_finds_every_vcpu_and_a_platform_without_legacy_devices() {
    let ids = [0, 1, 4, 254, 255, 0x200];
    let (layout, tables, _) = parse(0x7FF_0000, &PartitionPlatform::new(&ids));
    assert_eq!(tables.revision(), 2, "ACPI 2.0+ RSDP: the XSDT is used");

    let signatures: Vec<String> = tables.headers().map(|h| h.signature.as_str().to_owned()).collect();
    assert_eq!(signatures, ["FACP", "APIC"], "no MCFG, no other table");

    let (cpus, others) = processors(&tables);
    let expected: Vec<(u32, u32, u32)> = ids.iter().enumerate().map(|(uid, &id)| (id, uid as u32, 1)).collect();
    assert_eq!(cpus, expected, "(APIC ID, UID, enabled) per vCPU, in vCPU order");
    assert!(others.is_empty(), "no I/O APIC, no overrides, no NMI entries: {others:?}");

    let madt = tables.find_table::<Madt>().unwrap();
    assert!(!madt.get().supports_8259(), "PCAT_COMPAT clear: no 8259 pair");
    assert_eq!({ madt.get().local_apic_address }, 0xFEE0_0000);
    assert_eq!(madt.physical_start() as u64, layout.madt);

    let fadt = tables.find_table::<Fadt>().expect("FADT valid");
    let flags = fadt.flags;
    assert!(flags.system_is_hw_reduced_acpi());
    assert!(flags.local_xapics_must_use_physical_destination_mode());
    assert!(!flags.lapics_must_use_cluster_model_for_logical_mode());
    assert!(!flags.supports_system_reset_via_fadt());
    assert!(flags.system_is_headless());
    let boot_arch = fadt.iapc_boot_arch;
    assert!(!boot_arch.legacy_devices_are_accessible());
    assert!(!boot_arch.motherboard_implements_8042());
    assert!(boot_arch.dont_probe_vga());
    assert!(!boot_arch.dont_enable_msi());
    assert!(boot_arch.use_time_and_alarm_namespace_for_rtc(), "no CMOS RTC");
    assert!(matches!(fadt.facs_address(), Err(AcpiError::InvalidFacsAddress)), "no FACS");
    assert!(fadt.pm_timer_block().unwrap().is_none(), "no PM timer");
    assert!(fadt.gpe0_block().unwrap().is_none() && fadt.gpe1_block().unwrap().is_none(), "no GPEs");
    assert!(fadt.pm1b_event_block().unwrap().is_none());
    let sleep_registers = [fadt.sleep_control_register(), fadt.sleep_status_register()];
    assert!(sleep_registers.iter().all(|r| r.as_ref().unwrap().is_none_or(|r| r.address == 0)), "no sleep registers");
    assert_eq!({ fadt.sci_interrupt }, 0, "no SCI");
    assert_eq!({ fadt.smi_cmd_port }, 0, "no SMI command port");
    assert_eq!(fadt.dsdt_address().unwrap() as u64, layout.dsdt);

    let dsdt = tables.dsdt().expect("DSDT valid");
    assert_eq!(dsdt.length, 0, "an empty definition block");
    assert!(matches!(tables.find_table::<Mcfg>(), Err(AcpiError::TableMissing(_))), "no MCFG");
}

#[test]
fn devices_given_to_the_partition_are_described() {
    let io_apics = [IoApic { id: 2, address: 0xFEC0_0000, gsi_base: 0 }];
    let segments = [PciSegment { ecam_base: 0xE000_0000, segment: 0, start_bus: 0, end_bus: 7 }];
    let platform = PartitionPlatform {
        io_apics: &io_apics,
        pci_segments: &segments,
        isa_devices: true,
        reset_register: Some(ResetRegister { port: 0xCF9, value: 6 }),
        ..PartitionPlatform::new(&[3, 2])
    };
    let (layout, tables, _) = parse(0x10_0000, &platform);

    let (cpus, others) = processors(&tables);
    assert_eq!(cpus, [(3, 0, 1), (2, 1, 1)]);
    assert_eq!(others, [1], "one I/O APIC");

    let fadt = tables.find_table::<Fadt>().unwrap();
    assert!({ fadt.iapc_boot_arch }.legacy_devices_are_accessible());
    assert!({ fadt.flags }.supports_system_reset_via_fadt());
    let reset = fadt.reset_register().unwrap();
    assert_eq!(reset.address_space, AddressSpace::SystemIo);
    assert_eq!((reset.address, reset.bit_width), (0xCF9, 8));
    assert_eq!(fadt.reset_value, 6);

    let mcfg = tables.find_table::<Mcfg>().expect("MCFG valid");
    assert_eq!(mcfg.physical_start() as u64, layout.mcfg.unwrap());
    let entries = mcfg.entries();
    assert_eq!(entries.len(), 1);
    let e = entries[0];
    assert_eq!(
        ({ e.base_address }, { e.pci_segment_group }, e.bus_number_start, e.bus_number_end),
        (0xE000_0000, 0, 0, 7)
    );
}

/// Placed in the BIOS area, the RSDP is found the way Linux finds it when the zero page
/// names none: by scanning 0xE0000-0xFFFFF on 16-byte boundaries for a valid RSDP.
#[test]
fn in_the_bios_area_the_rsdp_is_found_by_scanning() {
    let platform = PartitionPlatform::new(&[0, 1]);
    // The parser reads an RSDP's length past the end of the area, hence the extra page.
    let memory = GuestMemory::new(0, 0x10_1000, |low_memory| {
        write_tables(&mut low_memory[0xE_0000..], 0xE_0000, &platform).unwrap();
    });
    // SAFETY: the handler maps the whole first MiB.
    let tables = unsafe { AcpiTables::search_for_rsdp_bios(memory) }.expect("RSDP found in the BIOS area");
    assert_eq!(processors(&tables).0, [(0, 0, 1), (1, 1, 1)]);
}

/// The parser is not lenient: a table whose checksum is off by one is not found.
#[test]
fn a_corrupted_table_is_refused() {
    let platform = PartitionPlatform::new(&[0, 1]);
    let base = 0x20_0000;
    let size = tables_size(&platform).unwrap();
    let memory = GuestMemory::new(base, size, |bytes| {
        let layout = write_tables(bytes, base as u64, &platform).unwrap();
        bytes[(layout.madt - layout.rsdp) as usize + 44 + 3] ^= 1; // the first entry's APIC ID
    });
    // SAFETY: the RSDP is at the start of `memory`.
    let tables = unsafe { AcpiTables::from_rsdp(memory, base) }.unwrap();
    assert!(tables.find_table::<Fadt>().is_ok());
    assert!(tables.find_table::<Madt>().is_err(), "MADT with a wrong checksum accepted");
}
