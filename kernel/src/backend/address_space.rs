//! What a partition may reach, built once from the configuration for either backend: its
//! second-level page tables (EPT or NPT: the same builder with two encodings), the I/O
//! ports it owns and the MSRs it may touch without an exit. The backends only lay these out
//! in their own formats (VMX bitmaps, SVM permission maps).

use crate::log::{error, info, warn};
use crate::partition::Partition;
use bulkhead_board::tables::{Access, DmaProtection, MAX_PARTITIONS};
use bulkhead_virt::bitmap::{IoPermissions, MsrPermissions};
use bulkhead_virt::slat::{ArrayPool, Attributes, Encoding, MemoryType, Slat};
use core::cell::UnsafeCell;

fn attributes(access: Access, memory_type: MemoryType) -> Attributes {
    Attributes { read: access.read, write: access.write, execute: access.execute, memory_type }
}

/// Maps the partition's memory, the shared regions it takes part in and its devices' MMIO
/// into `tables`; returns the root and the I/O ports its devices own.
pub fn build<E: Encoding>(partition: &Partition, tables: &mut [[u64; 512]]) -> Result<(u64, IoPermissions), ()> {
    let mut pool = ArrayPool::new(tables);
    let mut slat = Slat::<E>::new(&mut pool).map_err(|_| ())?;
    let config = partition.config();
    let report =
        |e| error!("partition {=str}: second-level tables: {}", partition.name(), crate::log::Debug2Format(&e));
    for region in config.memory {
        slat.map(
            &mut pool,
            region.guest_base,
            region.host_base,
            region.size,
            attributes(region.access, MemoryType::WriteBack),
            region.large_pages,
        )
        .map_err(report)?;
    }
    for shared in crate::config::SYSTEM.shared_memory {
        for sharer in shared.sharers.iter().filter(|s| s.partition == config.id) {
            slat.map(
                &mut pool,
                sharer.guest_base,
                shared.host.base,
                shared.host.size,
                attributes(sharer.access, MemoryType::WriteBack),
                false,
            )
            .map_err(report)?;
        }
    }
    let mut io = IoPermissions::new();
    let mut mmio_count = 0;
    for device in config.devices.iter().map(|d| &crate::config::SYSTEM.board.devices[d.0 as usize]) {
        if device.pci.is_some() {
            // A PCI function can master the bus: without DMA remapping it could write any
            // memory. Until the IOMMU confines it, only a partition whose system file says
            // `dma = "unprotected"` gets one, with a warning at every start.
            if config.dma != DmaProtection::Unprotected {
                error!(
                    "partition {=str}: PCI device {=str} needs the IOMMU, which Bulkhead does not drive yet; not assigned",
                    partition.name(),
                    device.name
                );
                return Err(());
            }
            warn!(
                "partition {=str}: PCI device {=str} assigned with dma = \"unprotected\": its DMA reaches all memory",
                partition.name(),
                device.name
            );
        }
        for ports in device.io_ports {
            io.allow(ports.base, ports.count).map_err(|_| ())?;
        }
        for range in device.mmio.iter().chain(device.bars.iter().filter(|b| b.memory).map(|b| &b.range)) {
            let all = Access { read: true, write: true, execute: false };
            slat.map(&mut pool, range.base, range.base, range.size, attributes(all, MemoryType::Uncacheable), false)
                .map_err(report)?;
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

/// Builds each partition's tables exactly once, by whichever of its cores comes first; the
/// others wait and share the result (a root address, or the failure).
pub struct BuildOnce([spin::Once<Result<u64, ()>>; MAX_PARTITIONS]);

impl BuildOnce {
    pub const fn new() -> Self {
        BuildOnce([const { spin::Once::new() }; MAX_PARTITIONS])
    }

    /// The partition's root, running `build` if no core built it yet. `build` runs on one
    /// core only, which makes it the only writer of that partition's table pages.
    pub fn get(&self, partition: &Partition, build: impl FnOnce() -> Result<u64, ()>) -> Result<u64, ()> {
        *self.0[partition.config().id.0 as usize].call_once(build)
    }
}
