//! PCI configuration space, filtered per partition (docs/devices.md, "PCI configuration
//! space"; the rules are `bulkhead_virt::pci_config`).
//!
//! At boot ([`init`]) every PCI function the board assigns to a partition is checked: it
//! exists (vendor ID not 0xFFFF), has a type 0 header (bridges cannot be assigned), and the
//! firmware programmed its BARs at the board's declared bases (the board file is the
//! contract; BARs are never reprogrammed). A function that fails is refused with a log line
//! naming the board's and the hardware's values: its partition does not see it and its
//! BARs are not mapped. Every accepted function has memory and I/O decoding and bus
//! mastering switched off and MSI disabled until its partition enables them, and again
//! when the partition restarts ([`reset_partition`]).
//!
//! A partition that owns a PCI function reaches configuration space through its own
//! CONFIG_ADDRESS latch (port 0xCF8, 32-bit; one per partition, as its vCPUs share one
//! "chipset") and CONFIG_DATA (0xCFC-0xCFF, 1, 2 or 4 bytes), and through the board's ECAM
//! window, which is never mapped in its second-level tables so every access exits and is
//! emulated here ([`EcamRegion`]). Functions it does not own read all-ones (absent); its
//! writes to them are dropped. The extended space (0x100-0xFFF, ECAM only) of an owned
//! function reads from the hardware; writes to it are dropped. A partition without PCI
//! functions keeps the plain behaviour of unassigned ports (all-ones) and of unmapped
//! memory (a fault) for the ECAM window.

use crate::config::{DEVICES, PARTITIONS};
use crate::exits::mmio::MmioRegion;
use crate::log::{error, info, warn};
use crate::partition::Partition;
use crate::partition::counters::RateLimit;
use bulkhead_board::tables::{self, DeviceId, Interrupt, PartitionId};
use bulkhead_drivers::pci::{Bdf, Ecam, Ports};
use bulkhead_virt::msix::{self, TableHardware};
use bulkhead_virt::pci_config::{
    COMMAND_DECODE_AND_MASTER, DeclaredBar, Event, FunctionConfig, FunctionView, Hardware, MsixPlace,
};
use core::sync::atomic::{AtomicU32, Ordering};
use spin::mutex::TicketMutex;

/// CONFIG_ADDRESS and CONFIG_DATA.
pub const CONFIG_ADDRESS: u16 = bulkhead_drivers::pci::CONFIG_ADDRESS;
pub const CONFIG_DATA: u16 = bulkhead_drivers::pci::CONFIG_DATA;

/// The hypervisor's one user of ports 0xCF8-0xCFF (mechanism #1's address register is
/// global: one access at a time, all cores).
// SAFETY: the only instance; every use holds the lock.
static PORTS: TicketMutex<Ports> = TicketMutex::new(unsafe { Ports::new() });

/// Each partition's CONFIG_ADDRESS latch.
static LATCH: [AtomicU32; PARTITIONS] = [const { AtomicU32::new(0) }; PARTITIONS];

/// The view of each assigned function that passed the boot checks, by board device index.
static FUNCTIONS: [TicketMutex<Option<FunctionView>>; DEVICES] = [const { TicketMutex::new(None) }; DEVICES];

static REFUSED_LOG: [RateLimit; PARTITIONS] = [const { RateLimit::new() }; PARTITIONS];
static MSI_LOG: [RateLimit; PARTITIONS] = [const { RateLimit::new() }; PARTITIONS];

fn board() -> &'static tables::BoardConfig {
    &crate::config::SYSTEM.board
}

fn bdf_of(address: tables::PciAddress) -> Bdf {
    Bdf { bus: address.bus, device: address.device, function: address.function }
}

/// The hypervisor's page tables map the low 4 GiB, MMIO uncached (boot/paging.rs): a window
/// above that is not used (the ports reach the first 256 bytes of each function).
const MAPPED_MMIO_END: u64 = 1 << 32;

fn ecam() -> Option<Ecam> {
    board()
        .pci_ecam
        .filter(|w| w.base.checked_add(u64::from(w.buses) << 20).is_some_and(|end| end <= MAPPED_MMIO_END))
        // SAFETY: the board's window, inside the identity-mapped, uncached low 4 GiB.
        .map(|w| unsafe { Ecam::new(w.base, w.buses) })
}

/// One function's registers in hardware, through ECAM where the board has it, else through
/// the ports under their lock.
struct Function(Bdf);

impl Hardware for Function {
    fn read(&mut self, offset: u16, size: u8) -> u32 {
        match ecam().filter(|e| e.address(self.0, offset).is_some()) {
            Some(e) => e.read(self.0, offset, size),
            None => PORTS.lock().read(self.0, offset as u8, size),
        }
    }

    fn write(&mut self, offset: u16, size: u8, value: u32) {
        match ecam().filter(|e| e.address(self.0, offset).is_some()) {
            Some(e) => e.write(self.0, offset, size, value),
            None => PORTS.lock().write(self.0, offset as u8, size, value),
        }
    }
}

/// Whether board device `id` is a PCI function that passed the boot checks.
pub fn usable(id: DeviceId) -> bool {
    FUNCTIONS.get(usize::from(id.0)).is_some_and(|f| f.lock().is_some())
}

/// The board's BARs of `device` in the filter's terms.
fn declared_bars(device: &tables::Device, out: &mut [DeclaredBar; 6]) -> usize {
    let mut n = 0;
    for bar in device.bars.iter().take(6) {
        out[n] = DeclaredBar { index: bar.index, base: bar.range.base, size: bar.range.size };
        n += 1;
    }
    n
}

fn apic_ids(owner: PartitionId, out: &mut [u32; 16]) -> usize {
    let system = &crate::config::SYSTEM;
    let Some(partition) = system.partitions.get(usize::from(owner.0)) else { return 0 };
    let mut n = 0;
    for id in system.vcpu_apic_ids(partition).take(16) {
        out[n] = id;
        n += 1;
    }
    n
}

/// Checks the firmware's programming of `device` against the board; returns what differs.
fn check(device: &tables::Device, hw: &mut Function) -> Result<(), ()> {
    let vendor = hw.read(0, 2);
    if vendor == 0xffff {
        error!(
            "pci: {=str} at {=u8:02x}:{=u8:02x}.{=u8}: no function there (vendor ID reads 0xffff); not assigned",
            device.name, hw.0.bus, hw.0.device, hw.0.function
        );
        return Err(());
    }
    let header = hw.read(0x0e, 1) & 0x7f;
    if header != 0 {
        error!(
            "pci: {=str}: header type {=u32} (a bridge): only type 0 functions can be assigned; not assigned",
            device.name, header
        );
        return Err(());
    }
    for bar in device.bars {
        let offset = 0x10 + 4 * u16::from(bar.index);
        let raw = hw.read(offset, 4);
        let io = raw & 1 != 0;
        let mut actual = u64::from(raw & if io { !0x3 } else { !0xf });
        if !io && (raw >> 1) & 0b11 == 0b10 && bar.index < 5 {
            actual |= u64::from(hw.read(offset + 4, 4)) << 32;
        }
        if io == bar.memory || actual != bar.range.base {
            error!(
                "pci: {=str}: BAR{=u8} is {=str} at {=u64:#x} in hardware, the board file says {=str} at {=u64:#x}; not assigned (the board file must match the firmware's programming)",
                device.name,
                bar.index,
                if io { "I/O" } else { "memory" },
                actual,
                if bar.memory { "memory" } else { "I/O" },
                bar.range.base
            );
            return Err(());
        }
    }
    Ok(())
}

/// Checks every assigned PCI function and makes its partition's view (see the module
/// documentation). Runs once on the boot CPU before any partition starts.
pub fn init() {
    for (index, device) in board().devices.iter().enumerate() {
        let (Some(address), Some(owner)) = (device.pci, device.owner) else { continue };
        let mut hw = Function(bdf_of(address));
        if address.segment != 0 || check(device, &mut hw).is_err() {
            if address.segment != 0 {
                error!(
                    "pci: {=str}: segment {=u16}: only segment 0 is reachable; not assigned",
                    device.name, address.segment
                );
            }
            continue;
        }
        let partition = &crate::config::SYSTEM.partitions[usize::from(owner.0)];
        let view = make_view(device, owner, &mut hw);
        info!(
            "pci: {=str} ({=u8:02x}:{=u8:02x}.{=u8}, {=u32:#010x}) assigned to {=str}; decoding and bus mastering off until it enables them",
            device.name,
            address.bus,
            address.device,
            address.function,
            hw.read(0, 4),
            partition.name
        );
        if let Some(place) = view.msix() {
            let (start, end) = place.trapped_pages();
            info!(
                "pci: {=str}: MSI-X table at {=u64:#x} ({=u16} entries) emulated, pages {=u64:#x}-{=u64:#x} trapped; every entry masked",
                device.name,
                place.table,
                place.layout.entries,
                start,
                end - 1
            );
        }
        *FUNCTIONS[index].lock() = Some(view);
    }
}

/// The configuration space of a board PCI function that no partition owns and the
/// hypervisor drives itself (the board watchdog), checked first as [`init`] checks an
/// assigned one: present, type 0, BARs where the board file says. `None` (the check logs
/// why) when it fails or is not on segment 0.
pub fn hypervisor_function(device: &tables::Device) -> Option<HypervisorFunction> {
    let address = device.pci.filter(|a| a.segment == 0)?;
    let mut hw = Function(bdf_of(address));
    check(device, &mut hw).ok()?;
    Some(HypervisorFunction(hw))
}

/// A function the hypervisor drives itself ([`hypervisor_function`]): its configuration
/// registers, through ECAM or the ports under their lock.
pub struct HypervisorFunction(Function);

impl HypervisorFunction {
    pub fn read(&mut self, offset: u16, size: u8) -> u32 {
        self.0.read(offset, size)
    }

    pub fn write(&mut self, offset: u16, size: u8, value: u32) {
        self.0.write(offset, size, value)
    }
}

/// Switches decoding and bus mastering off and makes a fresh view (MSI disabled, no BAR
/// being sized).
fn make_view(device: &tables::Device, owner: PartitionId, hw: &mut Function) -> FunctionView {
    let command = hw.read(0x04, 2);
    hw.write(0x04, 2, command & !u32::from(COMMAND_DECODE_AND_MASTER));
    let mut bars = [DeclaredBar { index: 0, base: 0, size: 0 }; 6];
    let bar_count = declared_bars(device, &mut bars);
    let mut ids = [0u32; 16];
    let id_count = apic_ids(owner, &mut ids);
    let msi_messages = device
        .interrupts
        .iter()
        .find_map(|i| match i {
            Interrupt::Msi { messages } => Some(*messages),
            Interrupt::Line(_) => None,
        })
        .unwrap_or(0);
    let config = FunctionConfig {
        bars: &bars[..bar_count],
        hidden_capabilities: device.hidden_capabilities,
        msi_messages,
        apic_ids: &ids[..id_count],
        mmio_reachable_end: MAPPED_MMIO_END,
    };
    let view = FunctionView::new(hw, &config);
    if let Some(place) = view.msix() {
        // Every hardware entry masked, whatever the firmware or the last run left: the
        // table is memory in a BAR, reachable only while memory decoding is on (bus
        // mastering and MSI-X stay off meanwhile, so nothing is sent).
        let command = hw.read(0x04, 2) as u16;
        hw.write(0x04, 2, u32::from(command | 0b10));
        msix::Table::mask_hardware(&place.layout, &mut HardwareTable(place.table));
        hw.write(0x04, 2, u32::from(command));
    }
    view
}

/// A function's MSI-X table in hardware, at its physical address.
struct HardwareTable(u64);

impl TableHardware for HardwareTable {
    fn write(&mut self, offset: u64, value: u32) {
        mmio_write(self.0 + offset, 4, u64::from(value));
    }
}

/// A naturally aligned MMIO read of `size` bytes (1, 2, 4, 8) at physical `address`.
fn mmio_read(address: u64, size: u8) -> u64 {
    // SAFETY: callers pass an address in a BAR of an assigned function below
    // `MAPPED_MMIO_END` (checked when the view is made), which the hypervisor's page
    // tables map uncached; the read touches device registers only.
    unsafe {
        match size {
            1 => u64::from(core::ptr::read_volatile(address as *const u8)),
            2 => u64::from(core::ptr::read_volatile(address as *const u16)),
            4 => u64::from(core::ptr::read_volatile(address as *const u32)),
            _ => core::ptr::read_volatile(address as *const u64),
        }
    }
}

/// A naturally aligned MMIO write of the low `size` bytes of `value` at physical `address`.
fn mmio_write(address: u64, size: u8, value: u64) {
    // SAFETY: as in `mmio_read`; device registers only, never the hypervisor's memory.
    unsafe {
        match size {
            1 => core::ptr::write_volatile(address as *mut u8, value as u8),
            2 => core::ptr::write_volatile(address as *mut u16, value as u16),
            4 => core::ptr::write_volatile(address as *mut u32, value as u32),
            _ => core::ptr::write_volatile(address as *mut u64, value),
        }
    }
}

/// The partition restarts: its functions stop decoding and mastering and lose what it
/// programmed (MSI, BAR sizing) before its payload runs again.
pub fn reset_partition(partition: &tables::Partition) {
    for &id in partition.devices {
        let device = &board().devices[usize::from(id.0)];
        let mut slot = FUNCTIONS[usize::from(id.0)].lock();
        if let (Some(view), Some(address)) = (slot.as_mut(), device.pci) {
            *view = make_view(device, partition.id, &mut Function(bdf_of(address)));
        }
    }
    LATCH[usize::from(partition.id.0)].store(0, Ordering::Relaxed);
}

/// Whether `partition` owns a PCI function (it then gets filtered configuration space).
pub fn has_functions(partition: &Partition) -> bool {
    partition.config().devices.iter().any(|&id| board().devices[usize::from(id.0)].pci.is_some())
}

/// The board device index of `bdf` if `partition` owns it and it passed the boot checks.
fn owned(partition: &Partition, bdf: Bdf) -> Option<usize> {
    partition.config().devices.iter().map(|id| usize::from(id.0)).find(|&i| {
        board().devices[i].pci.is_some_and(|a| a.segment == 0 && bdf_of(a) == bdf) && FUNCTIONS[i].lock().is_some()
    })
}

/// A partition's configuration read of `size` bytes at `offset` of `bdf` (aligned).
fn read(partition: &Partition, bdf: Bdf, offset: u16, size: u8) -> u32 {
    let all_ones = if size >= 4 { u32::MAX } else { (1 << (8 * u32::from(size))) - 1 };
    let Some(index) = owned(partition, bdf) else { return all_ones };
    let mut hw = Function(bdf);
    if offset >= 0x100 {
        return hw.read(offset, size);
    }
    let mut slot = FUNCTIONS[index].lock();
    slot.as_mut().map_or(all_ones, |view| view.read(&mut hw, offset, size))
}

/// A partition's configuration write (aligned).
fn write(partition: &Partition, bdf: Bdf, offset: u16, size: u8, value: u32) {
    let Some(index) = owned(partition, bdf) else {
        return;
    };
    let name = board().devices[index].name;
    let event = if offset >= 0x100 {
        Some(Event::WriteDropped { offset })
    } else {
        let mut slot = FUNCTIONS[index].lock();
        slot.as_mut().and_then(|view| view.write(&mut Function(bdf), offset, size, value))
    };
    if let Some(event) = event {
        let what = if matches!(event, Event::WriteDropped { .. }) { "configuration" } else { "MSI" };
        log_event(partition, name, what, event);
    }
}

/// Logs what a configuration or MSI-X table write did (rate-limited per partition).
fn log_event(partition: &Partition, name: &str, what: &str, event: Event) {
    let slot = usize::from(partition.config().id.0);
    match event {
        Event::BarRelocationRefused { index: bar, value, declared } => {
            if let Some(n) = REFUSED_LOG[slot].hit() {
                warn!(
                    "partition {=str}: {=str} BAR{=u8} write {=u32:#x} refused: relocation outside the board's declared window (keeps {=u32:#x}) (#{=u32})",
                    partition.name(),
                    name,
                    bar,
                    value,
                    declared,
                    n
                );
            }
        }
        Event::WriteDropped { offset } => {
            if let Some(n) = REFUSED_LOG[slot].hit() {
                warn!(
                    "partition {=str}: {=str} {=str} write at {=u16:#x} dropped (hidden capability, extended space or unshadowed MSI-X entry) (#{=u32})",
                    partition.name(),
                    name,
                    what,
                    offset,
                    n
                );
            }
        }
        Event::MsiRetargeted { requested, to } => {
            if let Some(n) = MSI_LOG[slot].hit() {
                warn!(
                    "partition {=str}: {=str} {=str} to APIC ID {=u8} (not one of its cores, or logical mode) retargeted to APIC ID {=u8} (#{=u32})",
                    partition.name(),
                    name,
                    what,
                    requested,
                    to,
                    n
                );
            }
        }
        Event::MsiRefused(why) => {
            if let Some(n) = MSI_LOG[slot].hit() {
                warn!(
                    "partition {=str}: {=str} {=str} refused: {=str}; disabled (MSI) or masked (MSI-X) in hardware (#{=u32})",
                    partition.name(),
                    name,
                    what,
                    why.describe(),
                    n
                );
            }
        }
    }
}

fn aligned(offset: u16, size: u8) -> bool {
    matches!(size, 1 | 2 | 4) && offset & (u16::from(size) - 1) == 0
}

/// A port access to 0xCF8-0xCFF by a partition that owns a PCI function: `Some(value)` for
/// a read, `None` for a write (`value` written). Returns `false` when the access is not
/// configuration mechanism #1 (a byte or word access to 0xCF8-0xCFB: the chipset's other
/// registers there, such as the reset control at 0xCF9, which no partition gets).
pub fn port_access(partition: &Partition, port: u16, size: u8, write: Option<u32>) -> Option<u32> {
    let latch = &LATCH[usize::from(partition.config().id.0)];
    match port {
        CONFIG_ADDRESS if size == 4 => match write {
            // Bits 30:24 are reserved and read 0; bits 1:0 too (PCI 3.0 3.2.2.3.2).
            Some(value) => {
                latch.store(value & 0x80ff_fffc, Ordering::Relaxed);
                Some(0)
            }
            None => Some(latch.load(Ordering::Relaxed)),
        },
        p if (CONFIG_DATA..CONFIG_DATA + 4).contains(&p) => {
            let all_ones = if size >= 4 { u32::MAX } else { (1 << (8 * u32::from(size))) - 1 };
            let Some((bdf, register)) = Bdf::from_config_address(latch.load(Ordering::Relaxed)) else {
                return Some(all_ones);
            };
            let offset = u16::from(register) + (p - CONFIG_DATA);
            if !aligned(offset, size) {
                return Some(all_ones);
            }
            match write {
                Some(value) => {
                    self::write(partition, bdf, offset, size, value);
                    Some(0)
                }
                None => Some(read(partition, bdf, offset, size)),
            }
        }
        _ => None,
    }
}

/// Whether `gpa` lies in the board's ECAM window and `partition` owns a PCI function (else
/// the window stays unmapped memory for it: an access faults as before).
pub fn ecam_contains(partition: &Partition, gpa: u64) -> bool {
    board().pci_ecam.is_some_and(|w| gpa >= w.base && gpa - w.base < u64::from(w.buses) << 20)
        && has_functions(partition)
}

/// The ECAM window as a partition sees it.
pub struct EcamRegion;

impl EcamRegion {
    fn decode(gpa: u64) -> Option<(Bdf, u16)> {
        let w = board().pci_ecam?;
        let rel = gpa.checked_sub(w.base)?;
        Some((
            Bdf { bus: (rel >> 20) as u8, device: ((rel >> 15) & 0x1f) as u8, function: ((rel >> 12) & 7) as u8 },
            (rel & 0xfff) as u16,
        ))
    }
}

impl MmioRegion for EcamRegion {
    fn read(&mut self, partition: &Partition, gpa: u64, size: u8) -> u64 {
        match Self::decode(gpa) {
            Some((bdf, offset)) if aligned(offset, size) => u64::from(read(partition, bdf, offset, size)),
            _ => u64::MAX,
        }
    }

    fn write(&mut self, partition: &Partition, gpa: u64, size: u8, value: u64) {
        if let Some((bdf, offset)) = Self::decode(gpa).filter(|(_, o)| aligned(*o, size)) {
            self::write(partition, bdf, offset, size, value as u32);
        }
    }
}

/// The page-aligned range `[start, end)` holding `id`'s MSI-X table, which its owner's
/// EPT/NPT leave unmapped so that every access is emulated ([`MsixRegion`]).
pub fn msix_hole(id: DeviceId) -> Option<(u64, u64)> {
    let place = FUNCTIONS.get(usize::from(id.0))?.lock().as_ref()?.msix()?;
    Some(place.trapped_pages())
}

/// The board device index of the function of `partition` whose MSI-X table pages hold
/// `gpa`, and where that table is.
fn msix_owner(partition: &Partition, gpa: u64) -> Option<(usize, MsixPlace)> {
    partition.config().devices.iter().map(|id| usize::from(id.0)).find_map(|i| {
        let place = FUNCTIONS.get(i)?.lock().as_ref()?.msix()?;
        let (start, end) = place.trapped_pages();
        (gpa >= start && gpa < end).then_some((i, place))
    })
}

/// Whether `gpa` lies in a page holding the MSI-X table of a function `partition` owns.
pub fn msix_contains(partition: &Partition, gpa: u64) -> bool {
    msix_owner(partition, gpa).is_some()
}

/// The pages holding an assigned function's MSI-X table: the table is emulated (the rules
/// are `bulkhead_virt::msix`); the rest of those pages (the PBA, other registers sharing
/// them) is passed to the hardware with the access's size.
pub struct MsixRegion;

impl MmioRegion for MsixRegion {
    fn read(&mut self, partition: &Partition, gpa: u64, size: u8) -> u64 {
        let Some((index, place)) = msix_owner(partition, gpa) else { return u64::MAX };
        if gpa & (u64::from(size) - 1) != 0 {
            return u64::MAX;
        }
        if let Some(offset) = place.table_offset(gpa) {
            return FUNCTIONS[index].lock().as_ref().map_or(u64::MAX, |v| v.msix_read(offset, size));
        }
        mmio_read(gpa, size)
    }

    fn write(&mut self, partition: &Partition, gpa: u64, size: u8, value: u64) {
        let Some((index, place)) = msix_owner(partition, gpa) else { return };
        if gpa & (u64::from(size) - 1) != 0 {
            return;
        }
        if let Some(offset) = place.table_offset(gpa) {
            let event = FUNCTIONS[index]
                .lock()
                .as_mut()
                .and_then(|v| v.msix_write(&mut HardwareTable(place.table), offset, size, value));
            if let Some(event) = event {
                log_event(partition, board().devices[index].name, "MSI-X table", event);
            }
            return;
        }
        mmio_write(gpa, size, value);
    }
}
