//! Loading a partition's payload into its memory, and how its first vCPU starts.
//!
//! The payload's pristine copy is the boot module GRUB loaded into the hypervisor's
//! reserved memory, so a restart reloads from it.
//!
//! Guest boot area (first memory region, guest-physical), written at every start and
//! restart:
//!
//! | address | contents |
//! |---|---|
//! | 0x1000 | flat GDT (32 bytes) |
//! | 0x2000 | identity page tables for 4 GiB (24 KiB, up to 0x8000) |
//! | 0x9000 | the command line, NUL-terminated (at most 4 KiB; its address in RDI) |
//! | 0xA000 | the boot information, `bulkhead_abi::boot_info` (at most 8 KiB, up to 0xC000; its address in RSI) |
//! | 0xC000..0x80000 | the stack (464 KiB), growing down from 0x80000 |
//!
//! Payloads load at 0x80000 and above. 32-bit multiboot1 payloads get their information
//! structure at 0x2000 instead of page tables, and no boot information.
//!
//! Linux bzImages are loaded by the boot protocol instead ([`super::linux`]), with their
//! own boot area.
//!
//! A partition's command line is its configured `cmdline` followed by every word of the
//! hypervisor's command line written `NAME:word` for that partition, so a board's GRUB
//! entry can pass options to one partition without rebuilding. A Linux kernel in a Xen
//! partition gets `tsc_early_khz=N` after its `cmdline` (`crate::xen::linux_tsc_word`).

use super::Partition;
use crate::boot::bootinfo::{BootInfo, Module};
use crate::config::SYSTEM;
use crate::log::{error, info};
use bulkhead_abi::boot_info::Connection;
use bulkhead_board::tables::{self, PayloadKind};
use bulkhead_virt::guest_state::{EntryMode, GuestEntry, LongModeSelectors};
use bulkhead_virt::memory::{GuestMemory, RegionMemory};

pub const GDT_GPA: u64 = 0x1000;
pub const PAGE_TABLES_GPA: u64 = 0x2000;
pub const CMDLINE_GPA: u64 = 0x9000;
/// Multiboot1 information structure (32-bit payloads; their page-table area is unused).
pub const MULTIBOOT1_INFO_GPA: u64 = 0x2000;
pub(super) const CMDLINE_MAX: usize = 4095;
pub const STACK_TOP_GPA: u64 = 0x80000;
/// The boot information of 64-bit payloads (`bulkhead_abi::boot_info`): after the command
/// line, below the stack.
pub const BOOT_INFO_GPA: u64 = bulkhead_abi::boot_info::BOOT_INFO_GPA;
const BOOT_INFO_END: u64 = BOOT_INFO_GPA + bulkhead_abi::boot_info::BOOT_INFO_MAX as u64;
// The boot area's parts do not overlap: GDT, page tables, command line (and its NUL), boot
// information, then the stack, which has the rest up to STACK_TOP_GPA.
const _: () = assert!(GDT_GPA + 32 <= PAGE_TABLES_GPA);
const _: () = assert!(CMDLINE_GPA + (CMDLINE_MAX as u64) < BOOT_INFO_GPA);
const _: () = assert!(BOOT_INFO_END + 0x10000 <= STACK_TOP_GPA && STACK_TOP_GPA <= BOOT_AREA_END);
pub use bulkhead_board::tables::BOOT_AREA_END;
/// Guest-physical space the identity page tables cover for 64-bit payloads: the whole
/// 32-bit space, so accesses outside the partition's memory (MMIO, the xAPIC page) reach
/// the second-level tables and get the hypervisor's answer rather than a guest #PF.
const IDENTITY_MAP_BYTES: u64 = 4 << 30;

impl Partition {
    /// The partition's memory as the hypervisor reaches it.
    fn memory(&self) -> RegionMemory<'static> {
        let mut memory = RegionMemory::new();
        for region in self.config.memory {
            // SAFETY: the configuration gives this host range to this partition alone; it
            // is identity-mapped RAM (checked at boot) and only this partition's boot core
            // writes it, while no vCPU of the partition runs.
            let bytes = unsafe { core::slice::from_raw_parts_mut(region.host_base as *mut u8, region.size as usize) };
            memory.add(region.guest_base, bytes).expect("configuration limits regions per partition");
        }
        memory
    }

    /// Zeroes the partition's memory and loads its payload; returns how its first vCPU
    /// starts.
    pub fn load(&self, boot: &BootInfo) -> Result<GuestEntry, ()> {
        let payload = self.config.payload;
        let Some(module) = boot.modules.iter().find(|m| m.name == payload.module) else {
            error!("partition {=str}: boot module {=str} missing", self.name(), payload.module);
            return Err(());
        };
        let image = module_bytes(module);
        self.uart_reset();
        crate::devices::ioapic::reset_partition(self);
        let mut memory = self.memory();
        for region in self.config.memory {
            if memory.fill(region.guest_base, region.size, 0).is_err() {
                return Err(());
            }
        }
        const ELFCLASS32: u8 = 1;
        match payload.kind {
            PayloadKind::Elf if image.get(4) == Some(&ELFCLASS32) => self.load_multiboot1(boot, image, &mut memory),
            PayloadKind::Elf | PayloadKind::Hermit => {
                let loaded = bulkhead_virt::elf::load_elf64(image, &mut memory).map_err(|e| {
                    error!("partition {=str}: cannot load ELF payload: {}", self.name(), crate::log::Debug2Format(&e));
                })?;
                self.check_above_boot_area(loaded.lowest)?;
                self.long_mode_entry(boot, &mut memory, payload.entry.unwrap_or(loaded.entry_gpa))
            }
            PayloadKind::Flat => {
                // No header: the build checked that `entry` is given and the file fits there.
                let Some(entry) = payload.entry else {
                    error!("partition {=str}: flat payload without an entry address", self.name());
                    return Err(());
                };
                self.check_above_boot_area(entry)?;
                memory.write(entry, image).map_err(|_| {
                    error!(
                        "partition {=str}: flat payload of {=usize} bytes does not fit at {=u64:#x}",
                        self.name(),
                        image.len(),
                        entry
                    )
                })?;
                self.long_mode_entry(boot, &mut memory, entry)
            }
            PayloadKind::BzImage => self.load_linux(boot, image, &mut memory),
        }
    }

    fn check_above_boot_area(&self, lowest: u64) -> Result<(), ()> {
        if lowest < BOOT_AREA_END {
            error!(
                "partition {=str}: payload loads at {=u64:#x}, inside the boot area below {=u64:#x}",
                self.name(),
                lowest,
                BOOT_AREA_END
            );
            return Err(());
        }
        Ok(())
    }

    /// The 64-bit start (ELF64, Hermit, flat): flat GDT, command line, boot information,
    /// identity page tables for the low 4 GiB, RDI = the command line, RSI = the boot
    /// information.
    fn long_mode_entry(&self, boot: &BootInfo, memory: &mut RegionMemory<'_>, rip: u64) -> Result<GuestEntry, ()> {
        self.write_gdt(memory)?;
        self.write_cmdline(boot, memory)?;
        self.write_boot_info(memory)?;
        const _: () = assert!(
            PAGE_TABLES_GPA + bulkhead_virt::guest_paging::identity_tables_size(IDENTITY_MAP_BYTES) <= CMDLINE_GPA
        );
        let cr3 = bulkhead_virt::guest_paging::write_identity_tables(memory, PAGE_TABLES_GPA, IDENTITY_MAP_BYTES)
            .map_err(|_| ())?;
        Ok(GuestEntry {
            mode: EntryMode::Long64 { cr3, selectors: LongModeSelectors::FLAT },
            rip,
            rsp: STACK_TOP_GPA,
            gdt_base: GDT_GPA,
            gdt_limit: 31,
            rax: 0,
            rbx: 0,
            rdi: CMDLINE_GPA,
            rsi: BOOT_INFO_GPA,
        })
    }

    /// A 32-bit ELF with a multiboot1 header (Multiboot 0.6.96): loaded by its program
    /// headers and entered in 32-bit protected mode, paging off, flat segments, with EAX =
    /// 0x2BADB002 and EBX = the information structure (memory map = the partition's
    /// memory, command line as for every payload).
    fn load_multiboot1(&self, boot: &BootInfo, image: &[u8], memory: &mut RegionMemory<'_>) -> Result<GuestEntry, ()> {
        use bulkhead_virt::elf::{MB1_FLAG_MEMORY_INFO, MB1_FLAG_PAGE_ALIGN, load_elf32, multiboot1_header};
        let Some(header) = multiboot1_header(image) else {
            error!("partition {=str}: 32-bit ELF payload without a multiboot1 header", self.name());
            return Err(());
        };
        let unsupported = header.unsupported_required_flags(MB1_FLAG_PAGE_ALIGN | MB1_FLAG_MEMORY_INFO);
        if unsupported != 0 {
            error!(
                "partition {=str}: multiboot1 header requires flags {=u32:#x} Bulkhead does not provide",
                self.name(),
                unsupported
            );
            return Err(());
        }
        let loaded = load_elf32(image, memory).map_err(|e| {
            error!("partition {=str}: cannot load ELF32 payload: {}", self.name(), crate::log::Debug2Format(&e));
        })?;
        self.check_above_boot_area(loaded.lowest)?;
        self.write_gdt(memory)?;
        let cmdline = self.cmdline(boot)?;
        let mut regions: heapless::Vec<(u64, u64), 8> = heapless::Vec::new();
        for region in self.config.memory {
            regions.push((region.guest_base, region.size)).map_err(|_| ())?;
        }
        let info =
            bulkhead_virt::multiboot1::write_info(memory, MULTIBOOT1_INFO_GPA, &regions, &cmdline).map_err(|e| {
                error!("partition {=str}: multiboot1 information: {}", self.name(), crate::log::Debug2Format(&e))
            })?;
        Ok(GuestEntry {
            mode: EntryMode::Protected32,
            rip: self.config.payload.entry.unwrap_or(loaded.entry_gpa),
            rsp: STACK_TOP_GPA,
            gdt_base: GDT_GPA,
            gdt_limit: 31,
            rax: u64::from(bulkhead_virt::multiboot1::BOOTLOADER_MAGIC),
            rbx: u64::from(info),
            rdi: 0,
            rsi: 0,
        })
    }

    fn write_gdt(&self, memory: &mut RegionMemory<'_>) -> Result<(), ()> {
        let gdt = bulkhead_virt::guest_paging::flat_gdt();
        let mut bytes = [0u8; 32];
        for (i, d) in gdt.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&d.to_le_bytes());
        }
        memory.write(GDT_GPA, &bytes).map_err(|_| ())
    }

    /// Writes the boot information (`bulkhead_abi::boot_info`) at [`BOOT_INFO_GPA`]: the
    /// partition's name, its vCPUs' APIC IDs in VP index order and its connections as its
    /// MADT and BHCN table would list them, its RAM regions in ascending order.
    fn write_boot_info(&self, memory: &mut RegionMemory<'_>) -> Result<(), ()> {
        use bulkhead_abi::boot_info::{self, MemoryRegion};
        let mut regions: heapless::Vec<MemoryRegion, { tables::MAX_MEMORY_REGIONS_PER_PARTITION }> =
            self.config.ram_regions().collect();
        regions.sort_unstable_by_key(|r| r.base);
        let mut bytes = [0u8; boot_info::BOOT_INFO_MAX];
        // The system's limits fit the encoding's (board/src/tables.rs), so this fails only
        // on a build that broke that.
        let len = boot_info::encode(&mut bytes, self.name(), &self.vcpu_apic_ids(), &regions, &self.connections())
            .map_err(|e| error!("partition {=str}: boot information: {}", self.name(), crate::log::Debug2Format(&e)))?;
        memory.write(BOOT_INFO_GPA, &bytes[..len]).map_err(|_| ())
    }

    /// The APIC ID of each vCPU as the partition sees it, in VP index order (its MADT lists
    /// the same).
    pub(super) fn vcpu_apic_ids(&self) -> heapless::Vec<u32, { crate::cpu::percpu::MAX_CPUS }> {
        SYSTEM.vcpu_apic_ids(self.config).collect()
    }

    /// The connections the partition sends or receives on, as its boot information and
    /// its BHCN table list them.
    pub(super) fn connections(&self) -> heapless::Vec<Connection, { tables::MAX_CONNECTIONS }> {
        SYSTEM.connections_of(self.config.id).collect()
    }

    /// Writes the partition's command line (see the module docs) into its boot area.
    fn write_cmdline(&self, boot: &BootInfo, memory: &mut RegionMemory<'_>) -> Result<(), ()> {
        let line = self.cmdline(boot)?;
        memory.write(CMDLINE_GPA, line.as_bytes()).map_err(|_| ())?;
        memory.write(CMDLINE_GPA + line.len() as u64, &[0]).map_err(|_| ())?;
        Ok(())
    }

    /// The partition's command line: its configured `cmdline`, then every `NAME:word` of
    /// the hypervisor's command line.
    pub(super) fn cmdline(&self, boot: &BootInfo) -> Result<heapless::String<CMDLINE_MAX>, ()> {
        let mut line: heapless::String<CMDLINE_MAX> = heapless::String::new();
        let extra = boot
            .command_line
            .split_ascii_whitespace()
            .filter_map(|w| w.strip_prefix(self.name()).and_then(|rest| rest.strip_prefix(':')));
        // A Linux kernel in a Xen partition gets its TSC frequency this way (xen::linux_tsc_word).
        let tsc = crate::xen::linux_tsc_word(self, self.config.payload.cmdline);
        for word in self.config.payload.cmdline.split_ascii_whitespace().chain(tsc.as_deref()).chain(extra) {
            if (!line.is_empty() && line.push(' ').is_err()) || line.push_str(word).is_err() {
                error!("partition {=str}: command line longer than {=usize} bytes", self.name(), CMDLINE_MAX);
                return Err(());
            }
        }
        if !line.is_empty() {
            info!("partition {=str}: command line: {=str}", self.name(), line.as_str());
        }
        Ok(line)
    }
}

pub(super) fn module_bytes(module: &Module) -> &'static [u8] {
    // SAFETY: boot modules lie in the hypervisor's reserved memory (checked at boot), are
    // identity-mapped and never written: they are the pristine payload copies.
    unsafe { core::slice::from_raw_parts(module.start as *const u8, (module.end - module.start) as usize) }
}
