//! DMA remapping with the board's VT-d units (`[[iommu]]`, docs/devices.md "DMA and the
//! IOMMU"). At boot, before any partition runs, each unit gets a root table whose context
//! entries put every function in its scope that a partition owns into that partition's
//! domain; functions nobody owns get no context entry, so their DMA is blocked (fault
//! reason 1 or 2). A domain's second-level tables map exactly the partition's memory
//! regions and its shared regions with their access rights, built with the same builder
//! and the same loop as its EPT/NPT (`backend/address_space.rs::map_memory`), so both
//! views agree by construction; device MMIO is left out (no peer-to-peer DMA). The tables
//! never change after boot: a restarted partition keeps its domain (its memory is zeroed
//! anyway). Interrupt remapping is not used (MSI messages are checked where the partition
//! writes them, in configuration space).
//!
//! Faults: each unit's fault event is an NMI to a core that runs a partition (the first
//! core of the first partition with a function in its scope). NMIs always leave the guest;
//! `partition/nmi.rs` asks [`nmi_is_fault_event`] before it calls an NMI unexpected, and
//! the vCPU loop drains the fault records ([`drain`]) at that exit or, for an NMI taken
//! in the hypervisor, before the next guest entry (`Attention::DMA_FAULT`). The end of the
//! run drains once more. Each fault is logged rate-limited and counted for the owner of
//! the requester (`partition/counters.rs`).

use crate::config::PARTITIONS;
use crate::log::{error, info, warn};
use bulkhead_board::tables::{DeviceId, DmaProtection, Iommu, IommuScope, PartitionId};
use bulkhead_drivers::vtd::{self, FaultRecord, Levels, Registers, fsts, gcmd, reg};
use bulkhead_virt::slat::{ArrayPool, PageSize, Slat};
use bulkhead_virt::vtd_slat::{VtdSecondLevel, three_level_root};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Most VT-d units the kernel drives.
const MAX_UNITS: usize = 4;
/// Partitions with a DMA domain: those owning a PCI function, at most 4 (the
/// configuration's `IOMMU_DOMAINS`, board/src/footprint.rs). Each domain takes up to
/// `SLAT_TABLES_PER_PARTITION` tables of [`TABLES`].
const MAX_DOMAINS: usize = crate::config::IOMMU_DOMAINS;
/// Context tables for all units together: one per bus that holds an assigned function.
const CONTEXT_TABLES: usize = 8;
const DOMAIN_TABLES: usize = MAX_DOMAINS * bulkhead_board::tables::SLAT_TABLES_PER_PARTITION;
/// Root tables, context tables, then the domains' second-level tables.
const TABLE_COUNT: usize = MAX_UNITS + CONTEXT_TABLES + DOMAIN_TABLES;
/// Register polls before a command counts as not completed (each poll is an uncached
/// read, about a microsecond on hardware: a second at most).
const POLLS: u32 = 1_000_000;

#[repr(C, align(4096))]
struct Tables(UnsafeCell<[[u64; 512]; TABLE_COUNT]>);
// SAFETY: only the boot CPU writes the tables, in `init`, before any other CPU runs a
// partition; afterwards only the IOMMU hardware reads them.
unsafe impl Sync for Tables {}
static TABLES: Tables = Tables(UnsafeCell::new([[0; 512]; TABLE_COUNT]));

/// Per unit: DMA remapping is on.
static ENABLED: [AtomicBool; MAX_UNITS] = [const { AtomicBool::new(false) }; MAX_UNITS];
/// Per unit: the fault event is an NMI to this APIC ID (`u32::MAX`: none, polled only).
static NMI_TARGET: [AtomicU32; MAX_UNITS] = [const { AtomicU32::new(u32::MAX) }; MAX_UNITS];
/// Per unit: fault-recording register offset and count (from CAP), once enabled.
static RECORDS: [AtomicU32; MAX_UNITS] = [const { AtomicU32::new(0) }; MAX_UNITS];
/// Per unit: one CPU drains its records at a time.
static DRAINING: [spin::Mutex<()>; MAX_UNITS] = [const { spin::Mutex::new(()) }; MAX_UNITS];
/// Per unit: faults lost because every record was full (FSTS.PFO seen).
static OVERFLOWS: [AtomicU32; MAX_UNITS] = [const { AtomicU32::new(0) }; MAX_UNITS];
/// Faults by requesters no partition owns.
static UNOWNED_FAULTS: AtomicU32 = AtomicU32::new(0);
static UNOWNED_LOG: crate::partition::counters::RateLimit = crate::partition::counters::RateLimit::new();

fn units() -> &'static [Iommu] {
    let all = crate::config::SYSTEM.board.iommus;
    &all[..all.len().min(MAX_UNITS)]
}

fn registers(unit: &Iommu) -> Registers {
    // SAFETY: the board declares a VT-d register block there; the hypervisor's page
    // tables map the 32-bit MMIO hole identity, uncached (`boot/paging.rs`), and
    // validation keeps it out of RAM.
    unsafe { Registers::new(unit.registers.base) }
}

/// Whether `device` is in `unit`'s scope.
fn in_scope(unit: &Iommu, device: DeviceId) -> bool {
    match unit.scope {
        IommuScope::All => true,
        IommuScope::Devices(list) => list.contains(&device),
    }
}

/// The PCI functions `unit` translates for a partition, with their owner.
fn assigned(unit: &Iommu) -> impl Iterator<Item = (DeviceId, &'static bulkhead_board::tables::Device, PartitionId)> {
    let devices = crate::config::SYSTEM.board.devices;
    devices.iter().enumerate().filter_map(move |(i, d)| {
        let id = DeviceId(i as u8);
        (d.pci.is_some() && in_scope(unit, id)).then_some(())?;
        Some((id, d, d.owner?))
    })
}

/// Whether an enabled IOMMU confines `device`'s DMA to its owner's domain.
pub fn confines(device: DeviceId) -> bool {
    units().iter().enumerate().any(|(i, u)| ENABLED[i].load(Ordering::Acquire) && in_scope(u, device))
}

/// Why a unit could not be enabled (logged; its functions are then refused).
enum Refusal {
    NoUnit,
    AddressWidth,
    Domains,
    TooManyTables,
    LargePages,
    Timeout(&'static str),
}

impl Refusal {
    fn text(&self) -> &'static str {
        match self {
            Refusal::NoUnit => "no VT-d unit answers at this address (is -device intel-iommu given?)",
            Refusal::AddressWidth => "supports neither 39-bit (3-level) nor 48-bit (4-level) second-level tables",
            Refusal::Domains => "has fewer domain IDs than partitions",
            Refusal::TooManyTables => "more buses, domains or table pages than the kernel holds",
            Refusal::LargePages => "a domain needs a page size the unit lacks, or an address it cannot translate",
            Refusal::Timeout(what) => what,
        }
    }
}

/// The table pool over [`TABLES`].
struct Pool {
    next_context: usize,
    /// Per partition: the second-level root (4-level tree) and its 3-level PDPT root.
    domains: [Option<(u64, Option<u64>)>; PARTITIONS],
    domain_count: usize,
}

fn tables() -> &'static mut [[u64; 512]; TABLE_COUNT] {
    // SAFETY: see `Tables`: only `init` on the boot CPU calls this, before other CPUs run
    // partitions; the returned borrows do not overlap in time.
    unsafe { &mut *TABLES.0.get() }
}

/// Builds (once) `partition`'s domain: its memory and shared regions, 4 levels, large
/// pages where the unit has them. Returns (4-level root, 3-level root if it exists).
fn domain(pool: &mut Pool, partition: PartitionId, large: u8) -> Result<(u64, Option<u64>), Refusal> {
    if let Some(d) = pool.domains[partition.0 as usize] {
        return Ok(d);
    }
    if pool.domain_count == MAX_DOMAINS {
        return Err(Refusal::TooManyTables);
    }
    // A domain maps part of what the partition's EPT/NPT maps (no device MMIO) with the
    // same builder, so it fits in the tables validation sized for those, unless the unit
    // lacks 2 MiB pages (then the build here fails and says so).
    let per = bulkhead_board::tables::SLAT_TABLES_PER_PARTITION;
    let start = MAX_UNITS + CONTEXT_TABLES + pool.domain_count * per;
    let slice = &mut tables()[start..start + per];
    let mut frames = ArrayPool::new(slice);
    let p = crate::partition::get(partition);
    let mut slat = Slat::<VtdSecondLevel>::new(&mut frames).map_err(|_| Refusal::TooManyTables)?;
    crate::backend::address_space::map_memory(p, &mut slat, &mut frames, large & 1 != 0)
        .map_err(|()| Refusal::TooManyTables)?;
    // A 1 GiB leaf needs SLLPS bit 1; the builder picks one only for 1 GiB-aligned regions.
    let mut unsupported = false;
    slat.for_each_mapping(&mut frames, |m| unsupported |= m.size == PageSize::Size1G && large & 2 == 0)
        .map_err(|_| Refusal::TooManyTables)?;
    if unsupported {
        return Err(Refusal::LargePages);
    }
    let three = three_level_root(&slat, &mut frames);
    pool.domain_count += 1;
    let d = (slat.root(), three);
    pool.domains[partition.0 as usize] = Some(d);
    info!(
        "iommu: partition {=str}: DMA domain {=u8}, {=usize} table pages, the same memory view as its second-level tables",
        p.name(),
        partition.0 + 1,
        frames.used()
    );
    Ok(d)
}

/// Polls `done` up to [`POLLS`] times.
fn wait(done: impl Fn() -> bool, what: &'static str) -> Result<(), Refusal> {
    for _ in 0..POLLS {
        if done() {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(Refusal::Timeout(what))
}

/// The APIC ID a unit's fault events go to: the first core of the first partition that
/// owns a function in its scope, else of any partition; none when no partition runs or
/// the ID does not fit an xAPIC MSI address (then the records are polled only).
fn nmi_target(unit: &Iommu) -> Option<u8> {
    let system = &crate::config::SYSTEM;
    let owner = assigned(unit).map(|(_, _, p)| p).next().or(system.partitions.first().map(|p| p.id))?;
    let core = *system.partitions[owner.0 as usize].cores.first()?;
    let apic = system.board.cpus.iter().find(|c| c.core == core)?.apic_id;
    u8::try_from(apic).ok().filter(|&a| a != 0xff)
}

/// Sets up and enables every board IOMMU. Called once on the boot CPU before the other
/// CPUs start partitions.
pub fn init() {
    let mut pool = Pool { next_context: 0, domains: [None; PARTITIONS], domain_count: 0 };
    for (i, unit) in units().iter().enumerate() {
        match enable(i, unit, &mut pool) {
            Ok(()) => ENABLED[i].store(true, Ordering::Release),
            Err(e) => error!(
                "iommu {=str} at {=u64:#x}: not enabled: {=str}; PCI functions in its scope are not assigned",
                unit.name,
                unit.registers.base,
                e.text()
            ),
        }
    }
    if crate::config::SYSTEM.board.iommus.len() > MAX_UNITS {
        error!("iommu: the board has more IOMMUs than the kernel drives ({=usize}); the rest stay off", MAX_UNITS);
    }
    warn_unprotected();
}

/// One boot warning per partition with `dma = "unprotected"` whose PCI functions no
/// enabled IOMMU confines: their DMA can reach any memory. (A function in an enabled
/// unit's scope is in its owner's domain whatever the partition says.)
fn warn_unprotected() {
    let system = &crate::config::SYSTEM;
    for p in system.partitions.iter().filter(|p| p.dma == DmaProtection::Unprotected) {
        let functions = p.devices.iter().filter(|&&d| system.board.devices[d.0 as usize].pci.is_some());
        let unconfined = functions.filter(|&&d| !confines(d)).count();
        if unconfined > 0 {
            warn!(
                "partition {=str}: dma = \"unprotected\": {=usize} PCI function(s) not confined by an IOMMU; their DMA can read and write all memory, the hypervisor's included",
                p.name, unconfined
            );
        }
    }
}

fn enable(index: usize, unit: &Iommu, pool: &mut Pool) -> Result<(), Refusal> {
    let regs = registers(unit);
    let version = regs.read32(reg::VER);
    let cap = regs.capability();
    let ecap = regs.extended_capability();
    if version == 0 || version == u32::MAX || cap.0 == 0 || cap.0 == u64::MAX {
        return Err(Refusal::NoUnit);
    }
    let levels = Levels::choose(cap).ok_or(Refusal::AddressWidth)?;
    let partitions = crate::config::SYSTEM.partitions.len() as u32;
    // Domain IDs are partition + 1: 0 is reserved under caching mode (VT-d 9.3, DID).
    if partitions + 1 > cap.domains() {
        return Err(Refusal::Domains);
    }
    // Start from translation off, whatever the firmware left.
    let gsts = regs.read32(reg::GSTS);
    if gsts & gcmd::TE != 0 {
        regs.write32(reg::GCMD, vtd::gcmd_value(gsts, gcmd::TE, false));
        wait(|| regs.read32(reg::GSTS) & gcmd::TE == 0, "translation did not turn off")?;
    }

    let root_phys = {
        let t = &mut tables()[index];
        t.fill(0);
        t.as_ptr() as u64
    };
    let mut buses: [(u8, usize); CONTEXT_TABLES] = [(0, usize::MAX); CONTEXT_TABLES];
    let mut functions = 0;
    for (_, device, owner) in assigned(unit) {
        let Some(pci) = device.pci else { continue };
        let (root4, root3) = domain(pool, owner, cap.large_pages())?;
        let sl_root = match levels {
            Levels::Four => root4,
            // An empty 3-level view (nothing below 512 GiB) or one above it: refuse.
            Levels::Three => root3.ok_or(Refusal::LargePages)?,
        };
        let slot = match buses.iter().position(|&(b, t)| t != usize::MAX && b == pci.bus) {
            Some(s) => buses[s].1,
            None => {
                if pool.next_context == CONTEXT_TABLES {
                    return Err(Refusal::TooManyTables);
                }
                let t = MAX_UNITS + pool.next_context;
                pool.next_context += 1;
                tables()[t].fill(0);
                let free = buses.iter().position(|&(_, t)| t == usize::MAX).ok_or(Refusal::TooManyTables)?;
                buses[free] = (pci.bus, t);
                let context_phys = tables()[t].as_ptr() as u64;
                let entry = vtd::root_entry(context_phys);
                let root = &mut tables()[index];
                root[2 * pci.bus as usize] = entry[0];
                root[2 * pci.bus as usize + 1] = entry[1];
                t
            }
        };
        let entry = vtd::context_entry(sl_root, levels, u16::from(owner.0) + 1);
        let at = 2 * vtd::devfn(pci.device, pci.function);
        let context = &mut tables()[slot];
        context[at + 1] = entry[1];
        context[at] = entry[0];
        functions += 1;
        info!(
            "iommu {=str}: {=u8:02x}:{=u8:02x}.{=u8} ({=str}) in the domain of partition {=str}",
            unit.name,
            pci.bus,
            pci.device,
            pci.function,
            device.name,
            crate::partition::get(owner).name()
        );
    }

    // Tables are written; make them visible to a unit that does not snoop caches (ECAP.C
    // = 0, VT-d 6.1) and drain its write buffer where it asks for that (CAP.RWBF).
    if !ecap.coherent() {
        // SAFETY: WBINVD writes back and invalidates caches; no memory is changed.
        unsafe { core::arch::asm!("wbinvd", options(nostack, preserves_flags)) };
    }
    if cap.required_write_buffer_flush() {
        regs.write32(reg::GCMD, vtd::gcmd_value(regs.read32(reg::GSTS), gcmd::WBF, true));
        wait(|| regs.read32(reg::GSTS) & gcmd::WBF == 0, "write buffer flush did not complete")?;
    }
    // Root table (legacy mode, TTM = 00b), then latch it (VT-d 10.4.5, 11.4.4.1 SRTP).
    regs.write64(reg::RTADDR, root_phys);
    regs.write32(reg::GCMD, vtd::gcmd_value(regs.read32(reg::GSTS), gcmd::SRTP, true));
    wait(|| regs.read32(reg::GSTS) & gcmd::SRTP != 0, "root table pointer not latched")?;
    // Global invalidation of the context cache, then the IOTLB (VT-d 6.5.1, register based).
    regs.write64(reg::CCMD, vtd::CCMD_GLOBAL_INVALIDATE);
    wait(|| regs.read64(reg::CCMD) & vtd::CCMD_BUSY == 0, "context-cache invalidation did not complete")?;
    let iotlb = ecap.iotlb_offset() + reg::IOTLB_FROM_IRO;
    regs.write64(iotlb, vtd::IOTLB_GLOBAL_INVALIDATE);
    wait(|| regs.read64(iotlb) & vtd::IOTLB_BUSY == 0, "IOTLB invalidation did not complete")?;

    // Faults: the records' place, stale records cleared, the event an NMI (or masked).
    let frcd = cap.fault_recording_offset() as u32;
    let count = cap.fault_records().min(256) as u32;
    RECORDS[index].store((frcd << 8) | (count - 1), Ordering::Relaxed);
    drain_unit(index, unit);
    let target = nmi_target(unit);
    match target {
        Some(apic) => {
            let (data, address) = vtd::nmi_message(apic);
            regs.write32(reg::FEDATA, data);
            regs.write32(reg::FEADDR, address);
            regs.write32(reg::FEUADDR, 0);
            NMI_TARGET[index].store(u32::from(apic), Ordering::Release);
            regs.write32(reg::FECTL, 0);
        }
        None => regs.write32(reg::FECTL, vtd::FECTL_IM),
    }

    regs.write32(reg::GCMD, vtd::gcmd_value(regs.read32(reg::GSTS), gcmd::TE, true));
    wait(|| regs.read32(reg::GSTS) & gcmd::TE != 0, "translation did not turn on")?;
    info!(
        "iommu {=str} at {=u64:#x}: DMA remapping on: {=u32}-bit ({=u8}-level) tables, {=usize} function(s) in domains, others blocked; {=usize} fault record(s), fault event NMI to apic {=u32}",
        unit.name,
        unit.registers.base,
        levels.bits(),
        if levels == Levels::Three { 3 } else { 4 },
        functions,
        count as usize,
        target.map_or(u32::MAX, u32::from)
    );
    Ok(())
}

/// Whether an NMI this CPU takes is (probably) a fault event of an IOMMU: it targets this
/// CPU and a fault is pending. Lock-free and short: the host NMI handler calls it.
pub fn nmi_is_fault_event(apic_id: u32) -> bool {
    units().iter().enumerate().any(|(i, u)| {
        NMI_TARGET[i].load(Ordering::Acquire) == apic_id
            && ENABLED[i].load(Ordering::Acquire)
            && registers(u).read32(reg::FSTS) & (fsts::PPF | fsts::PFO) != 0
    })
}

/// Drains every enabled unit's fault records: logs each fault, counts it for the owner of
/// the requester, clears it. From the vCPU loop (an NMI exit, a pending
/// `Attention::DMA_FAULT`) and at the end of the run; never from the NMI handler.
pub fn drain() {
    for (i, unit) in units().iter().enumerate() {
        if RECORDS[i].load(Ordering::Relaxed) != 0 || ENABLED[i].load(Ordering::Acquire) {
            drain_unit(i, unit);
        }
    }
}

fn drain_unit(index: usize, unit: &Iommu) {
    let Some(_guard) = DRAINING[index].try_lock() else {
        return; // another CPU drains this unit right now
    };
    let regs = registers(unit);
    let records = RECORDS[index].load(Ordering::Relaxed);
    let (offset, count) = ((records >> 8) as usize, (records & 0xff) as usize + 1);
    // Every record, not only from FRI on: a record filled while we drain is picked up by
    // the next round (PPF stays set until all are clear), bounded so a flood cannot hold
    // this CPU.
    for _ in 0..4 {
        let status = regs.read32(reg::FSTS);
        if status & fsts::PFO != 0 {
            regs.write32(reg::FSTS, fsts::PFO);
            OVERFLOWS[index].fetch_add(1, Ordering::Relaxed);
            warn!("iommu {=str}: DMA faults lost: every fault record was full", unit.name);
        }
        if status & fsts::PPF == 0 {
            return;
        }
        for r in 0..count {
            let at = offset + 16 * r;
            let high = regs.read64(at + 8);
            let Some(fault) = FaultRecord::decode(regs.read64(at), high) else { continue };
            // F is RW1C: writing its dword (bits 127:96) with F set clears the record.
            regs.write32(at + 12, (vtd::FAULT_RECORD_F >> 32) as u32);
            report(unit, fault);
        }
    }
}

/// Logs one fault (rate-limited per partition) and counts it.
fn report(unit: &Iommu, fault: FaultRecord) {
    let (bus, dev, func) = fault.bdf();
    let device = crate::config::SYSTEM
        .board
        .devices
        .iter()
        .find(|d| d.pci.is_some_and(|p| p.segment == 0 && p.bus == bus && p.device == dev && p.function == func));
    let owner = device.and_then(|d| d.owner);
    let (hit, partition) = match owner {
        Some(p) => (crate::partition::counters::dma_fault(p), crate::partition::get(p).name()),
        None => {
            UNOWNED_FAULTS.fetch_add(1, Ordering::Relaxed);
            (UNOWNED_LOG.hit(), "none")
        }
    };
    if let Some(n) = hit {
        warn!(
            "iommu {=str}: DMA fault: device {=u8:02x}:{=u8:02x}.{=u8} ({=str}, partition {=str}) {=str} at {=u64:#x} blocked: reason {=u8:#04x} ({=str}) (#{=u32})",
            unit.name,
            bus,
            dev,
            func,
            device.map_or("not on the board", |d| d.name),
            partition,
            if fault.write { "write" } else { "read" },
            fault.address,
            fault.reason,
            vtd::reason_text(fault.reason),
            n
        );
    }
}

/// Whether any IOMMU is enabled (the end-of-run report prints the DMA fault counts then).
pub fn any_enabled() -> bool {
    (0..units().len()).any(|i| ENABLED[i].load(Ordering::Acquire))
}

/// DMA faults of requesters no partition owns, for the end-of-run report.
pub fn unowned_faults() -> u32 {
    UNOWNED_FAULTS.load(Ordering::Relaxed)
}
