//! What a partition may reach, built once from the configuration for either backend: its
//! second-level page tables (EPT or NPT: the same builder with two encodings), the I/O
//! ports it owns and the MSRs it may touch without an exit. The backends only lay these out
//! in their own formats (VMX bitmaps, SVM permission maps).

use crate::config::{PARTITIONS, SLAT_TABLE_FIRST, SLAT_TABLES, SLAT_TABLES_TOTAL};
use crate::cpu::percpu::MAX_CPUS;
use crate::log::{error, info};
use crate::partition::Partition;
use bulkhead_board::tables::{
    Access, BACKEND_PAGES_PER_CPU, BACKEND_PAGES_PER_PARTITION, DeviceId, DmaProtection, PAGE_BYTES,
};
use bulkhead_virt::bitmap::{IoPermissions, MsrPermissions};
use bulkhead_virt::slat::{ArrayPool, Attributes, Encoding, MemoryType, Slat};
use core::cell::UnsafeCell;
use core::mem::{ManuallyDrop, size_of};

fn attributes(access: Access, memory_type: MemoryType) -> Attributes {
    Attributes { read: access.read, write: access.write, execute: access.execute, memory_type }
}

/// Maps the partition's memory regions and the shared regions it takes part in, with their
/// access rights: its RAM view, which its EPT/NPT and its DMA domain (`devices/iommu.rs`)
/// both start from. Large pages only where the region asks for them and `large` allows.
pub fn map_memory<E: Encoding>(
    partition: &Partition,
    slat: &mut Slat<E>,
    pool: &mut ArrayPool,
    large: bool,
) -> Result<(), ()> {
    let config = partition.config();
    let report =
        |e| error!("partition {=str}: {=str} tables: {}", partition.name(), E::NAME, crate::log::Debug2Format(&e));
    for region in config.memory {
        slat.map(
            pool,
            region.guest_base,
            region.host_base,
            region.size,
            attributes(region.access, MemoryType::WriteBack),
            region.large_pages && large,
        )
        .map_err(report)?;
    }
    for shared in crate::config::SYSTEM.shared_memory {
        for sharer in shared.sharers.iter().filter(|s| s.partition == config.id) {
            slat.map(
                pool,
                sharer.guest_base,
                shared.host.base,
                shared.host.size,
                attributes(sharer.access, MemoryType::WriteBack),
                false,
            )
            .map_err(report)?;
        }
    }
    Ok(())
}

/// Maps the partition's memory, the shared regions it takes part in and its devices' MMIO
/// into `tables`; returns the root and the I/O ports its devices own.
pub fn build<E: Encoding>(partition: &Partition, tables: &mut [[u64; 512]]) -> Result<(u64, IoPermissions), ()> {
    let mut pool = ArrayPool::new(tables);
    let mut slat = Slat::<E>::new(&mut pool).map_err(|_| ())?;
    let config = partition.config();
    let report =
        |e| error!("partition {=str}: second-level tables: {}", partition.name(), crate::log::Debug2Format(&e));
    map_memory(partition, &mut slat, &mut pool, true)?;
    let mut io = IoPermissions::new();
    let mut mmio_count = 0;
    for &id in config.devices {
        let device = &crate::config::SYSTEM.board.devices[id.0 as usize];
        if device.pci.is_some() && !pci_function_allowed(partition, id) {
            return Err(());
        }
        for ports in device.io_ports {
            io.allow(ports.base, ports.count).map_err(|_| ())?;
        }
        // The pages holding a function's MSI-X table stay unmapped: every access to them
        // exits and is emulated (`devices::pci::MsixRegion`).
        let hole = crate::devices::pci::msix_hole(id);
        for range in device.mmio.iter().chain(device.bars.iter().filter(|b| b.memory).map(|b| &b.range)) {
            let all = Access { read: true, write: true, execute: false };
            let end = range.base + range.size;
            let mut map = |base: u64, end: u64| {
                if end <= base {
                    return Ok(());
                }
                slat.map(&mut pool, base, base, end - base, attributes(all, MemoryType::Uncacheable), false)
                    .map_err(report)
            };
            match hole.filter(|&(start, stop)| start >= range.base && stop <= end) {
                Some((start, stop)) => {
                    map(range.base, start)?;
                    map(stop, end)?;
                }
                None => map(range.base, end)?,
            }
            mmio_count += 1;
        }
    }
    let root = slat.root();
    info!(
        "partition {=str}: {=str} root {=u64:#x}, {=usize} regions, {=usize} device MMIO ranges",
        partition.name(),
        E::NAME,
        root,
        config.memory.len(),
        mmio_count
    );
    Ok((root, io))
}

/// Whether PCI function `id` may start with its partition: it passed the boot checks
/// (`devices::pci::init`) and its DMA is confined or explicitly allowed to be unconfined
/// (`dma = "unprotected"`, warned about at boot). The ECAM window is never mapped: it is
/// emulated (`devices::pci::EcamRegion`).
fn pci_function_allowed(partition: &Partition, id: DeviceId) -> bool {
    let device = &crate::config::SYSTEM.board.devices[id.0 as usize];
    if !crate::devices::pci::usable(id) {
        error!(
            "partition {=str}: PCI device {=str} failed its boot checks (see above); not assigned",
            partition.name(),
            device.name
        );
        return false;
    }
    // A PCI function can master the bus: it is assigned only when an enabled IOMMU
    // confines its DMA to this partition's memory, or the system file says
    // `dma = "unprotected"` (warned at boot).
    if crate::devices::iommu::confines(id) || partition.config().dma == DmaProtection::Unprotected {
        return true;
    }
    error!(
        "partition {=str}: PCI device {=str}: no enabled IOMMU confines its DMA (see the iommu lines above); not assigned",
        partition.name(),
        device.name
    );
    false
}

/// The MSRs every partition reads or writes without an exit; `exclude` are intercepted
/// anyway (EFER on SVM; the TSC deadline while the guest's TSC is offset, `exits/tsc.rs`). The
/// x2APIC registers pass through only with `x2apic` (the bitmap of vCPUs whose local APIC
/// is in x2APIC mode: in xAPIC or disabled mode they must exit and get #GP, see `lapic/`)
/// and where the hypervisor's APIC is in x2APIC mode; otherwise `lapic/access.rs` performs
/// them on the xAPIC. Each partition has three bitmaps (x2APIC mode, x2APIC mode with the
/// TSC offset, and the trap bitmap of xAPIC or disabled mode); the backend switches a vCPU
/// between them on an IA32_APIC_BASE write or a TSC offset change, so the common case costs
/// no more exits than before.
pub fn msr_permissions(exclude: &[u32], x2apic: bool) -> Result<MsrPermissions, ()> {
    let mut msrs = MsrPermissions::new();
    for &msr in bulkhead_virt::msr_map::PASS_THROUGH.iter().filter(|m| !exclude.contains(m)) {
        msrs.allow_read(msr).map_err(|_| ())?;
        msrs.allow_write(msr).map_err(|_| ())?;
    }
    for &msr in bulkhead_virt::msr_map::READ_ONLY {
        msrs.allow_read(msr).map_err(|_| ())?;
    }
    if x2apic && !crate::lapic::access::emulated() {
        let reads = bulkhead_virt::msr_map::X2APIC_READ.chain(core::iter::once(crate::lapic::access::TSC_DEADLINE));
        for msr in reads.filter(|m| !exclude.contains(m)) {
            msrs.allow_read(msr).map_err(|_| ())?;
        }
        for &msr in bulkhead_virt::msr_map::X2APIC_WRITE.iter().filter(|m| !exclude.contains(m)) {
            msrs.allow_write(msr).map_err(|_| ())?;
        }
    }
    Ok(msrs)
}

/// Static hardware pages with one owner each: a core's pages used by that core only, a
/// partition's written by the one core [`BuildOnce`] lets build them and afterwards only
/// read by the hardware. The backends keep their VMCS/VMCB and tables in these.
pub struct Owned<T, const N: usize>(pub UnsafeCell<[T; N]>);
// SAFETY: see the type's documentation: every entry has a single writer.
unsafe impl<T, const N: usize> Sync for Owned<T, N> {}

/// Every partition's EPT/NPT tables, one pool sized by the configuration: partition `i`
/// owns `SLAT_TABLES[i]` tables from `SLAT_TABLE_FIRST[i]`, exactly what the build counted
/// for its address space (board/src/footprint.rs, with this module's mapping order).
#[repr(C, align(4096))]
struct SlatPool(UnsafeCell<[[u64; 512]; SLAT_TABLES_TOTAL]>);
// SAFETY: each partition's range has one writer, the core [`BuildOnce`] lets build it;
// afterwards only the hardware reads it.
unsafe impl Sync for SlatPool {}
static SLAT_POOL: SlatPool = SlatPool(UnsafeCell::new([[0; 512]; SLAT_TABLES_TOTAL]));

/// Partition `id`'s second-level tables.
///
/// # Safety
/// Only the partition's builder (inside [`BuildOnce::get`]) may call this, once.
#[allow(clippy::mut_from_ref)]
pub unsafe fn slat_tables(id: usize) -> &'static mut [[u64; 512]] {
    let range = SLAT_TABLE_FIRST[id]..SLAT_TABLE_FIRST[id] + SLAT_TABLES[id];
    // SAFETY: the ranges of different partitions are disjoint; the caller is the one writer.
    unsafe { &mut (&mut *SLAT_POOL.0.get())[range] }
}

/// A partition's hardware pages besides its tables. Only one backend runs on a board, so
/// the VT-x and SVM layouts share one storage instead of both being reserved.
#[repr(C, align(4096))]
pub(super) union PartitionPages {
    pub(super) vmx: ManuallyDrop<super::vmx::PartitionPages>,
    pub(super) svm: ManuallyDrop<super::svm::PartitionPages>,
}

/// A core's hardware pages (VMXON region and VMCS, or host save area and VMCBs), shared
/// the same way.
#[repr(C, align(4096))]
pub(super) union CorePages {
    pub(super) vmx: ManuallyDrop<super::vmx::CorePages>,
    pub(super) svm: ManuallyDrop<super::svm::CorePages>,
}

// The memory budget (board/src/footprint.rs) counts these pages; SVM's are the larger, so
// the zeroed SVM value below initialises every byte.
const _: () = assert!(size_of::<PartitionPages>() == BACKEND_PAGES_PER_PARTITION * PAGE_BYTES as usize);
const _: () = assert!(size_of::<super::svm::PartitionPages>() == size_of::<PartitionPages>());
const _: () = assert!(size_of::<CorePages>() == BACKEND_PAGES_PER_CPU * PAGE_BYTES as usize);
const _: () = assert!(size_of::<super::svm::CorePages>() == size_of::<CorePages>());

pub(super) static PARTITION_PAGES: Owned<PartitionPages, PARTITIONS> = Owned(UnsafeCell::new(
    [const { PartitionPages { svm: ManuallyDrop::new(super::svm::PartitionPages::ZERO) } }; PARTITIONS],
));
pub(super) static CORE_PAGES: Owned<CorePages, MAX_CPUS> =
    Owned(UnsafeCell::new([const { CorePages { svm: ManuallyDrop::new(super::svm::CorePages::ZERO) } }; MAX_CPUS]));

/// Builds each partition's tables exactly once, by whichever of its cores comes first; the
/// others wait and share the result (a root address, or the failure).
pub struct BuildOnce([spin::Once<Result<u64, ()>>; PARTITIONS]);

impl BuildOnce {
    pub const fn new() -> Self {
        BuildOnce([const { spin::Once::new() }; PARTITIONS])
    }

    /// The partition's root, running `build` if no core built it yet. `build` runs on one
    /// core only, which makes it the only writer of that partition's table pages.
    pub fn get(&self, partition: &Partition, build: impl FnOnce() -> Result<u64, ()>) -> Result<u64, ()> {
        *self.0[partition.config().id.0 as usize].call_once(build)
    }
}
