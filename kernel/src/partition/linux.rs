//! Starting a Linux kernel (payload kind `linux`, a bzImage) through the 64-bit boot
//! protocol (Linux's `Documentation/arch/x86/boot.rst`, "64-bit Boot Protocol"), at every
//! start and restart of the partition. The placement is `bulkhead_virt::bzimage`'s, the
//! same the build checked; this module only writes it into the partition's memory.
//!
//! Boot area (guest-physical, all below the zero page, where the planner places nothing):
//!
//! | address | contents |
//! |---|---|
//! | [`GDT_GPA`] | GDT: `__BOOT_CS` 0x10 (64-bit code), `__BOOT_DS` 0x18 (data) |
//! | [`PAGE_TABLES_GPA`] | identity page tables (2 MiB pages) up to [`identity_map_end`] |
//! | [`ACPI_GPA`] | ACPI tables (RSDP, XSDT, FADT, DSDT, MADT, MCFG, BHCN), an ACPI range in the e820 map |
//! | `ZERO_PAGE_GPA`, `CMDLINE_GPA` | zero page and command line (`bulkhead_virt::bzimage`) |
//!
//! [`identity_map_end`]: bulkhead_virt::bzimage::Layout::identity_map_end

use super::Partition;
use super::loader::{CMDLINE_MAX, module_bytes};
use crate::boot::bootinfo::BootInfo;
use crate::config::SYSTEM;
use crate::log::{Debug2Format, error, info};
use bulkhead_virt::acpi::{MAX_TABLES_SIZE, PartitionPlatform, PciSegment};
use bulkhead_virt::bzimage::{
    self, BootParams, E820_ACPI, E820Table, Layout, RamRegion, Range, SetupHeader, ZERO_PAGE_GPA, ZERO_PAGE_SIZE,
};
use bulkhead_virt::guest_paging::{identity_tables_size, write_identity_tables};
use bulkhead_virt::guest_state::{EntryMode, GuestEntry, LongModeSelectors};
use bulkhead_virt::memory::{GuestMemory, RegionMemory};

pub const GDT_GPA: u64 = 0x1000;
pub const PAGE_TABLES_GPA: u64 = 0x2000;
/// The ACPI tables: 16-byte aligned (the RSDP), below the zero page.
pub const ACPI_GPA: u64 = 0x6_0000;
/// The identity map covers at least the 32-bit space, so that an access to MMIO (the
/// xAPIC page) before Linux has its own page tables reaches the second-level tables and
/// gets the hypervisor's answer rather than a guest #PF.
const IDENTITY_MAP_MIN: u64 = 4 << 30;
/// The most page tables the boot area holds: up to [`ACPI_GPA`].
const PAGE_TABLES_MAX: u64 = ACPI_GPA - PAGE_TABLES_GPA;
const _: () = assert!(ACPI_GPA + MAX_TABLES_SIZE as u64 <= ZERO_PAGE_GPA);
const _: () = assert!(GDT_GPA + 32 <= PAGE_TABLES_GPA);

impl Partition {
    /// Places the bzImage `image`, its initrd, command line, memory map, ACPI tables and
    /// zero page in `memory` (already zeroed), and returns the 64-bit entry: RSI = the
    /// zero page, interrupts off, Linux's boot selectors.
    pub(super) fn load_linux(
        &self,
        boot: &BootInfo,
        image: &[u8],
        memory: &mut RegionMemory<'_>,
    ) -> Result<GuestEntry, ()> {
        let name = self.name();
        let header = SetupHeader::read(image).map_err(|e| {
            error!("partition {=str}: not a bzImage: {}", name, Debug2Format(&e));
        })?;
        let problems = header.problems(image.len() as u64);
        if !problems.is_empty() {
            // The build refuses such an image; a module that changed after the build gets
            // here.
            error!("partition {=str}: the bzImage cannot be booted: {}", name, Debug2Format(&problems));
            return Err(());
        }
        let initrd = match self.config.payload.initrd_module {
            None => None,
            Some(module_name) => {
                let Some(module) = boot.modules.iter().find(|m| m.name == module_name) else {
                    error!("partition {=str}: boot module {=str} (the initrd) missing", name, module_name);
                    return Err(());
                };
                Some(module_bytes(module))
            }
        };
        let cmdline = self.cmdline(boot)?;
        // The configured part was checked by the build; the `NAME:word` switches of the
        // hypervisor's command line were not.
        if cmdline.len() as u64 > u64::from(header.cmdline_size).min(CMDLINE_MAX as u64) {
            error!(
                "partition {=str}: command line of {=usize} bytes; the kernel takes at most {=u32}",
                name,
                cmdline.len(),
                header.cmdline_size
            );
            return Err(());
        }

        let mut regions: heapless::Vec<RamRegion, { bzimage::MAX_REGIONS }> = heapless::Vec::new();
        for r in self.config.memory {
            let a = r.access;
            let usable = a.read && a.write && a.execute;
            regions.push(RamRegion { range: Range { base: r.guest_base, size: r.size }, usable }).map_err(|_| ())?;
        }
        let layout =
            Layout::plan(&header, &regions, initrd.map(|i| i.len() as u64), cmdline.len() as u64).map_err(|e| {
                error!("partition {=str}: the kernel does not fit its memory: {}", name, Debug2Format(&e));
            })?;

        // The protected-mode kernel, then the initrd where the planner put it.
        let kernel = image.get(header.setup_bytes() as usize..).ok_or(())?;
        memory.write(layout.kernel, kernel).map_err(|_| ())?;
        if let (Some(bytes), Some(range)) = (initrd, layout.initrd) {
            memory.write(range.base, bytes).map_err(|_| ())?;
        }
        memory.write(layout.cmdline, cmdline.as_bytes()).map_err(|_| ())?;
        memory.write(layout.cmdline + cmdline.len() as u64, &[0]).map_err(|_| ())?;

        // ACPI tables describing the partition's vCPUs with the APIC IDs it sees (its
        // cores', in vCPU order).
        let apic_ids = self.vcpu_apic_ids();
        let mut tables = [0u8; MAX_TABLES_SIZE];
        // The virtual console UART is described as a device without an interrupt, so
        // Linux polls it (`bulkhead_virt::acpi::polled_uart_aml`).
        // Its Hyper-V connections, in a BHCN table, for the messaging driver
        // (docs/linux.md, "Messaging with the real-time partition").
        let connections = self.connections();
        // Part of the board's ECAM window in an MCFG when the partition owns PCI functions,
        // so Linux finds them (docs/linux.md, "Assigned PCI functions").
        let ecam = self.pci_ecam();
        let pci_segments = ecam.map(|(segment, _)| [segment]);
        let platform = PartitionPlatform {
            polled_uart: Some(crate::exits::ports::CONSOLE_BASE),
            connections: &connections,
            pci_segments: pci_segments.as_ref().map_or(&[], |s| s.as_slice()),
            ..PartitionPlatform::new(&apic_ids)
        };
        let acpi = bulkhead_virt::acpi::write_tables(&mut tables, ACPI_GPA, &platform)
            .map_err(|e| error!("partition {=str}: ACPI tables: {}", name, Debug2Format(&e)))?;
        let tables = tables.get(..acpi.size).ok_or(())?;
        memory.write(ACPI_GPA, tables).map_err(|_| ())?;

        // The memory map: the partition's RAM, its shared memory and the ECAM window
        // reserved (Linux uses MMCONFIG only where the e820 map reserves it:
        // `pci_mmcfg_check_reserved`), the ACPI tables carved out.
        let mut reserved: heapless::Vec<Range, 17> = heapless::Vec::new();
        for s in SYSTEM.shared_memory {
            for sharer in s.sharers.iter().filter(|sh| sh.partition == self.config.id) {
                reserved.push(Range { base: sharer.guest_base, size: s.host.size }).map_err(|_| ())?;
            }
        }
        if let Some((_, window)) = ecam {
            reserved.push(window).map_err(|_| ())?;
        }
        let acpi_range = Range { base: ACPI_GPA, size: tables.len() as u64 };
        let e820 = E820Table::build(&regions, &reserved, &[(acpi_range, E820_ACPI)]).map_err(|_| {
            error!("partition {=str}: memory map longer than {=usize} entries", name, bzimage::E820_MAX);
        })?;
        let mut zero_page = [0u8; ZERO_PAGE_SIZE];
        bzimage::write_zero_page(
            &mut zero_page,
            image,
            &header,
            &BootParams { layout: &layout, e820: &e820, acpi_rsdp: acpi.rsdp },
        );
        memory.write(layout.zero_page, &zero_page).map_err(|_| ())?;

        // GDT and identity page tables.
        let gdt = bzimage::boot_gdt();
        let mut bytes = [0u8; 32];
        for (i, d) in gdt.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&d.to_le_bytes());
        }
        memory.write(GDT_GPA, &bytes).map_err(|_| ())?;
        let map_end = layout.identity_map_end().max(IDENTITY_MAP_MIN);
        if identity_tables_size(map_end) > PAGE_TABLES_MAX {
            error!("partition {=str}: the kernel lies too high for the boot page tables", name);
            return Err(());
        }
        let cr3 = write_identity_tables(memory, PAGE_TABLES_GPA, map_end).map_err(|_| ())?;

        info!(
            "partition {=str}: Linux (boot protocol {=u16:#x}) at {=u64:#x}, init_size {=u32:#x}, initrd {=u64:#x} bytes at {=u64:#x}, {=usize} vCPUs in the MADT",
            name,
            header.version,
            layout.kernel,
            header.init_size,
            layout.initrd.map_or(0, |r| r.size),
            layout.initrd.map_or(0, |r| r.base),
            apic_ids.len()
        );
        Ok(GuestEntry {
            mode: EntryMode::Long64 { cr3, selectors: LongModeSelectors::LINUX_BOOT },
            rip: layout.entry,
            // Linux sets up its own stack before using one (startup_64).
            rsp: 0,
            gdt_base: GDT_GPA,
            gdt_limit: 31,
            rax: 0,
            rbx: 0,
            rdi: 0,
            rsi: layout.zero_page,
        })
    }

    /// The part of the board's ECAM window the partition needs, as an MCFG allocation
    /// (`PciSegment::for_functions`: buses 0 to its last function's bus, at least 1), and
    /// the guest-physical range it decodes; `None` when the partition owns no PCI function
    /// or the board has no window.
    fn pci_ecam(&self) -> Option<(PciSegment, Range)> {
        let board = &SYSTEM.board;
        let ecam = board.pci_ecam?;
        let functions = || self.config.devices.iter().filter_map(|d| board.devices.get(d.0 as usize)?.pci);
        let segment = functions().next()?.segment;
        let allocation = PciSegment::for_functions(ecam.base, ecam.buses, segment, functions().map(|f| f.bus))?;
        let (base, size) = allocation.window();
        Some((allocation, Range { base, size }))
    }
}
