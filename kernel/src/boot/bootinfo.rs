//! What GRUB tells us: command line, memory map, modules and the ACPI RSDP, taken from
//! the multiboot2 boot information into fixed-size tables (the hypervisor has no heap).

use crate::log::{info, warn};
use heapless::Vec;
use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};

pub const MAX_MEMORY_REGIONS: usize = 128;
pub const MAX_MODULES: usize = 16;

/// Kind of a physical memory region, as the firmware reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(bulkhead_console = "defmt", derive(defmt::Format))]
pub enum RegionKind {
    /// Free RAM.
    Usable,
    /// RAM holding ACPI tables, usable once they are consumed.
    AcpiReclaimable,
    /// RAM the firmware keeps (ACPI NVS).
    AcpiNvs,
    /// RAM reported defective.
    Defective,
    /// Anything else: firmware, MMIO, holes.
    Reserved,
}

impl RegionKind {
    /// Backed by RAM (cacheable), whether or not we may use it.
    pub fn is_ram(self) -> bool {
        matches!(self, RegionKind::Usable | RegionKind::AcpiReclaimable | RegionKind::AcpiNvs)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct MemoryRegion {
    pub start: u64,
    pub end: u64,
    pub kind: RegionKind,
}

#[derive(Debug, Clone, Copy)]
pub struct Module {
    pub start: u64,
    pub end: u64,
    pub name: &'static str,
}

pub struct BootInfo {
    pub command_line: &'static str,
    pub bootloader: &'static str,
    pub memory: Vec<MemoryRegion, MAX_MEMORY_REGIONS>,
    pub modules: Vec<Module, MAX_MODULES>,
    /// Address of a copy of the RSDP inside the boot information.
    pub rsdp: Option<u64>,
    /// Where the boot information itself lies (must not be overwritten).
    pub info_start: u64,
    pub info_end: u64,
}

#[derive(Debug, Clone, Copy)]
#[cfg_attr(bulkhead_console = "defmt", derive(defmt::Format))]
// A text build shows the magic through Debug, which dead-code analysis does not count.
#[cfg_attr(bulkhead_console = "text", allow(dead_code))]
pub enum BootInfoError {
    WrongMagic(u32),
    Unreadable,
    NoMemoryMap,
}

crate::log::derived_format!(RegionKind, BootInfoError);

impl BootInfo {
    /// Reads the multiboot2 boot information at `address`.
    ///
    /// # Safety
    /// `address` must be what the bootloader passed in EBX, still intact.
    pub unsafe fn parse(magic: u32, address: u32) -> Result<Self, BootInfoError> {
        if magic != multiboot2::MAGIC {
            return Err(BootInfoError::WrongMagic(magic));
        }
        // SAFETY: the caller guarantees the structure; it is identity-mapped and never freed.
        let boot = unsafe { BootInformation::load(address as *const BootInformationHeader) }
            .map_err(|_| BootInfoError::Unreadable)?;
        let mut info = BootInfo {
            command_line: forever(boot.command_line_tag().and_then(|t| t.cmdline().ok()).unwrap_or("")),
            bootloader: forever(boot.boot_loader_name_tag().and_then(|t| t.name().ok()).unwrap_or("unknown")),
            memory: Vec::new(),
            modules: Vec::new(),
            rsdp: None,
            info_start: boot.start_address() as u64,
            info_end: boot.end_address() as u64,
        };
        let map = boot.memory_map_tag().ok_or(BootInfoError::NoMemoryMap)?;
        for area in map.memory_areas() {
            let kind = region_kind(area.typ());
            let region = MemoryRegion { start: area.start_address(), end: area.end_address(), kind };
            if info.memory.push(region).is_err() {
                warn!("memory map: more than {=usize} regions, ignoring the rest", MAX_MEMORY_REGIONS);
                break;
            }
        }
        for module in boot.module_tags() {
            let m = Module {
                start: u64::from(module.start_address()),
                end: u64::from(module.end_address()),
                name: forever(module.cmdline().unwrap_or("")),
            };
            if info.modules.push(m).is_err() {
                warn!("more than {=usize} boot modules, ignoring the rest", MAX_MODULES);
                break;
            }
        }
        // The RSDP copy follows the 8-byte tag header (multiboot2 spec 3.6.16/3.6.17).
        const TAG_HEADER: u64 = 8;
        info.rsdp = boot
            .rsdp_v2_tag()
            .map(|t| t as *const _ as *const u8 as u64 + TAG_HEADER)
            .or_else(|| boot.rsdp_v1_tag().map(|t| t as *const _ as *const u8 as u64 + TAG_HEADER));
        Ok(info)
    }

    /// Usable RAM in bytes.
    pub fn usable_bytes(&self) -> u64 {
        self.memory.iter().filter(|r| r.kind == RegionKind::Usable).map(|r| r.end - r.start).sum()
    }

    /// Whether `[start, end)` touches RAM of any kind.
    pub fn overlaps_ram(&self, start: u64, end: u64) -> bool {
        self.memory.iter().any(|r| r.kind.is_ram() && r.start < end && start < r.end)
    }

    /// Whether `[start, end)` is covered by usable regions (firmware often splits one
    /// stretch of RAM into adjacent entries).
    pub fn is_usable(&self, start: u64, end: u64) -> bool {
        let mut covered = start;
        while covered < end {
            match self.memory.iter().find(|r| r.kind == RegionKind::Usable && r.start <= covered && covered < r.end) {
                Some(r) => covered = r.end,
                None => return false,
            }
        }
        true
    }

    /// Highest address of any RAM region.
    pub fn ram_end(&self) -> u64 {
        self.memory.iter().filter(|r| r.kind.is_ram()).map(|r| r.end).max().unwrap_or(0)
    }

    pub fn log(&self) {
        info!("bootloader: {=str}", self.bootloader);
        info!("command line: {=str}", self.command_line);
        info!(
            "memory map: {=usize} regions, {=u64} MiB usable, RAM ends at {=u64:#x}",
            self.memory.len(),
            self.usable_bytes() >> 20,
            self.ram_end()
        );
        for r in &self.memory {
            crate::log::debug!("  [{=u64:#012x}, {=u64:#012x}) {}", r.start, r.end, r.kind);
        }
        info!("modules: {=usize}", self.modules.len());
        for m in &self.modules {
            info!("  module [{=u64:#x}, {=u64:#x}) {=str}", m.start, m.end, m.name);
        }
    }
}

/// Strings in the boot information stay valid for the whole run: nothing reuses that memory
/// (the trampoline and later loaders avoid it).
fn forever(s: &str) -> &'static str {
    // SAFETY: see above; the string's bytes are never written or freed.
    unsafe { &*(s as *const str) }
}

fn region_kind(typ: MemoryAreaType) -> RegionKind {
    match typ {
        MemoryAreaType::Available => RegionKind::Usable,
        MemoryAreaType::AcpiAvailable => RegionKind::AcpiReclaimable,
        MemoryAreaType::ReservedHibernate => RegionKind::AcpiNvs,
        MemoryAreaType::Defective => RegionKind::Defective,
        _ => RegionKind::Reserved,
    }
}

struct Published(core::cell::UnsafeCell<Option<BootInfo>>);
// SAFETY: written once by the BSP before `PUBLISHED` is set, read-only afterwards.
unsafe impl Sync for Published {}
static BOOT: Published = Published(core::cell::UnsafeCell::new(None));
static PUBLISHED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Makes the boot information available to every CPU. BSP, once.
pub fn publish(info: BootInfo) -> &'static BootInfo {
    assert!(!PUBLISHED.load(core::sync::atomic::Ordering::Acquire), "boot information published twice");
    // SAFETY: single writer before publication (see `Published`).
    let slot = unsafe { &mut *BOOT.0.get() };
    let info = slot.insert(info);
    PUBLISHED.store(true, core::sync::atomic::Ordering::Release);
    info
}

/// The boot information, once the BSP published it.
pub fn get() -> Option<&'static BootInfo> {
    // SAFETY: read-only after publication.
    PUBLISHED.load(core::sync::atomic::Ordering::Acquire).then(|| unsafe { (*BOOT.0.get()).as_ref() }).flatten()
}
