//! The hypervisor's memory, sized by the configuration.
//!
//! The kernel keeps no heap: every stack, page table and queue is a static array. Their
//! lengths come from the compiled configuration ([`Footprint`], emitted by
//! [`crate::codegen`] as `CPUS`, `PARTITIONS`, `SLAT_TABLES`, ...), not from the build-time
//! maxima in [`crate::tables`], which stay the validation limits. From the same counts
//! [`Budget`] estimates the image before it is linked: the configuration-sized statics
//! exactly (their unit sizes are constants the kernel asserts against), plus fixed
//! allowances for code, constant data and the small state the configuration scales. The
//! `memory-footprint` bench case (xtask/src/bench.rs) builds the demo systems and checks
//! that the linked image never exceeds this estimate.

use crate::model::System;
use crate::tables::{
    Access, BACKEND_PAGES_PER_CPU, BACKEND_PAGES_PER_PARTITION, ConnectionKind, MAX_DEVICES, PAGE_BYTES,
    STACK_BYTES_PER_CPU,
};
use crate::validate::{Mapping, build_tables};
use bulkhead_virt::slat::{Ept, Npt};

/// Page tables of the hypervisor's own address space besides its page directories
/// (kernel/src/boot/paging.rs): the PML4, the PDPT and 8 page tables for the 2 MiB regions
/// it splits into 4 KiB pages (the kernel image, the stack guard pages, the null page).
pub const BOOT_FIXED_TABLES: usize = 2 + 8;
/// Page directories for at most this many GiB (one PDPT, 2 MiB pages where the CPU has no
/// 1 GiB pages).
pub const BOOT_MAX_GIB: u64 = 16;
const GIB: u64 = 1 << 30;
/// VT-d units the kernel drives and context tables it keeps, when the board has an IOMMU
/// (`MAX_UNITS`, `CONTEXT_TABLES`, kernel/src/devices/iommu.rs).
pub const IOMMU_FIXED_TABLES: u64 = 4 + 8;
/// Second-level tables of one DMA domain (kernel/src/devices/iommu.rs `DOMAIN_TABLES`).
pub const IOMMU_TABLES_PER_DOMAIN: u64 = crate::tables::SLAT_TABLES_PER_PARTITION as u64;
/// Most DMA domains (kernel/src/devices/iommu.rs `MAX_DOMAINS`).
pub const MAX_IOMMU_DOMAINS: usize = 4;
/// One queued Hyper-V message: its 256 bytes and its arrival stamp (hyperv/synic.rs `Ring`).
pub const MESSAGE_SLOT_BYTES: u64 = 256 + 8;

/// Code, constant data and the statics no configuration count scales (IDT, console,
/// boot information, ...): measured on the demo systems (`cargo xtask bench
/// memory-footprint` prints the linked figures) with room for growth. The bench case fails
/// when a linked image exceeds its estimate, which is the signal to raise this.
pub const IMAGE_ALLOWANCE: u64 = 416 * 1024;
/// Small per-CPU state besides the stacks and VMCS/VMCB pages (per-CPU block, virtual
/// local APIC, SynIC registers, Xen vCPU info, console line).
pub const STATE_PER_CPU: u64 = 4 * 1024;
/// Small per-partition state besides its tables (partition block, Xen state, SynIC queues).
pub const STATE_PER_PARTITION: u64 = 8 * 1024;
/// Per board device (its PCI configuration view).
pub const STATE_PER_DEVICE: u64 = 1024;
/// Per connection besides its message slots (ring head, locks, Xen port binding).
pub const STATE_PER_CONNECTION: u64 = 128;

/// The counts the kernel sizes its statics by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    /// Per-CPU slots: the board's CPUs, and at least one past its highest core number
    /// (some state is indexed by core number).
    pub cpus: usize,
    pub partitions: usize,
    /// Board devices (per-device state is indexed by device id).
    pub devices: usize,
    /// Connections, at least 1 (arrays indexed by connection).
    pub connections: usize,
    /// Message slots per connection: the deepest message queue, at least 1.
    pub queue_depth: usize,
    /// Second-level (EPT/NPT) tables of each partition: exactly what the kernel's builder
    /// takes for its address space, the larger of the two encodings.
    pub slat_tables: Vec<usize>,
    /// DMA domains the IOMMU code keeps tables for (0 without an IOMMU or PCI functions).
    pub iommu_domains: usize,
    /// Whether the board has an IOMMU (its fixed root and context tables are kept).
    pub iommu: bool,
    /// Tables of the hypervisor's own identity map: [`BOOT_FIXED_TABLES`] and a page
    /// directory per GiB up to the end of the board's RAM (at least the low 4 GiB, where
    /// MMIO and firmware tables lie; at most [`BOOT_MAX_GIB`]).
    pub boot_page_tables: usize,
}

impl Footprint {
    /// The counts for `system`.
    pub fn of(system: &System) -> Self {
        let max_core = system.board.cpus.iter().map(|c| c.core as usize + 1).max().unwrap_or(1);
        let queue_depth = system
            .connections
            .iter()
            .filter_map(|c| match c.kind {
                ConnectionKind::Message { queue_depth } => Some(queue_depth as usize),
                ConnectionKind::Event { .. } => None,
            })
            .max()
            .unwrap_or(1)
            .max(1);
        let iommu = !system.board.iommus.is_empty();
        let pci_owners = system
            .partitions
            .iter()
            .filter(|p| {
                p.devices.iter().any(|d| system.board.devices.get(usize::from(d.0)).is_some_and(|d| d.pci.is_some()))
            })
            .count();
        Footprint {
            cpus: system.board.cpus.len().max(max_core).max(1),
            partitions: system.partitions.len(),
            devices: system.board.devices.len().min(MAX_DEVICES),
            connections: system.connections.len().max(1),
            queue_depth,
            slat_tables: (0..system.partitions.len()).map(|p| slat_tables(system, p)).collect(),
            iommu_domains: if iommu { pci_owners.min(MAX_IOMMU_DOMAINS) } else { 0 },
            iommu,
            boot_page_tables: BOOT_FIXED_TABLES + boot_directories(system) as usize,
        }
    }

    /// Every partition's second-level tables together (one pool in the kernel).
    pub fn slat_tables_total(&self) -> usize {
        self.slat_tables.iter().sum()
    }

    /// The estimate of the hypervisor's memory for these counts.
    pub fn budget(&self) -> Budget {
        let cpus = self.cpus as u64;
        let partitions = self.partitions as u64;
        let iommu_tables =
            if self.iommu { IOMMU_FIXED_TABLES + self.iommu_domains as u64 * IOMMU_TABLES_PER_DOMAIN } else { 0 };
        let tables = PAGE_BYTES
            * (self.boot_page_tables as u64
                + self.slat_tables_total() as u64
                + partitions * BACKEND_PAGES_PER_PARTITION as u64
                + cpus * BACKEND_PAGES_PER_CPU as u64
                + iommu_tables);
        let connections = self.connections as u64;
        let state = cpus * STATE_PER_CPU
            + partitions * STATE_PER_PARTITION
            + self.devices as u64 * STATE_PER_DEVICE
            + connections * (STATE_PER_CONNECTION + self.queue_depth as u64 * MESSAGE_SLOT_BYTES);
        Budget { image: IMAGE_ALLOWANCE, stacks: cpus * STACK_BYTES_PER_CPU as u64, tables, state }
    }
}

/// The hypervisor's memory for one configuration, by kind (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Code, constant data and fixed statics ([`IMAGE_ALLOWANCE`]).
    pub image: u64,
    /// Every CPU's kernel and interrupt stacks with their guard pages.
    pub stacks: u64,
    /// Page tables and hardware pages: the hypervisor's own, each partition's EPT/NPT,
    /// VMCS/VMCB and intercept bitmaps, DMA remapping tables.
    pub tables: u64,
    /// Per-CPU, per-partition, per-device and per-connection state, message slots.
    pub state: u64,
}

impl Budget {
    pub fn total(&self) -> u64 {
        self.image + self.stacks + self.tables + self.state
    }

    /// The short table `cargo xtask check` prints.
    pub fn table(&self, footprint: &Footprint) -> String {
        let kib = |n: u64| format!("{:>6} KiB", n.div_ceil(1024));
        let f = footprint;
        let rows = [
            ("text + data", self.image, "allowance for code, constant data and fixed statics".to_owned()),
            ("stacks", self.stacks, format!("{} CPUs x {} KiB", f.cpus, STACK_BYTES_PER_CPU / 1024)),
            (
                "tables",
                self.tables,
                format!(
                    "{} EPT/NPT tables ({}), {} partition and {} CPU pages, {} boot tables{}",
                    f.slat_tables_total(),
                    f.slat_tables.iter().map(usize::to_string).collect::<Vec<_>>().join("+"),
                    f.partitions * BACKEND_PAGES_PER_PARTITION,
                    f.cpus * BACKEND_PAGES_PER_CPU,
                    f.boot_page_tables,
                    if f.iommu { format!(", DMA remapping for {} domains", f.iommu_domains) } else { String::new() }
                ),
            ),
            (
                "state",
                self.state,
                format!(
                    "{} connections x {} message slots, per-CPU/partition/device state",
                    f.connections, f.queue_depth
                ),
            ),
        ];
        let mut out = String::new();
        for (what, bytes, how) in rows {
            out.push_str(&format!("  {what:<12}{}  {how}\n", kib(bytes)));
        }
        out.push_str(&format!("  {:<12}{}\n", "total", kib(self.total())));
        out
    }
}

/// Page directories of the hypervisor's identity map: one per GiB up to the end of the
/// board's RAM, at least 4 and at most [`BOOT_MAX_GIB`].
fn boot_directories(system: &System) -> u64 {
    let end = system.board.ram.iter().map(|r| r.base.saturating_add(r.size)).max().unwrap_or(0);
    end.div_ceil(GIB).clamp(4, BOOT_MAX_GIB)
}

/// Second-level tables partition `p`'s address space takes: its memory regions, the shared
/// regions it takes part in, its devices' MMIO ranges and memory BARs, mapped in the
/// kernel's order (kernel/src/backend/address_space.rs) by the kernel's builder; the larger
/// count of the two encodings (each decides its own large pages).
pub fn slat_tables(system: &System, p: usize) -> usize {
    let Some(partition) = system.partitions.get(p) else { return 0 };
    let map = |guest, host, size, access, uncached, large_pages| Mapping {
        what: String::new(),
        at: crate::diag::Loc { file: 0, offset: 0 },
        guest,
        host,
        size,
        access,
        uncached,
        large_pages,
    };
    let mut maps = Vec::new();
    for r in &partition.memory {
        maps.push(map(r.guest_base, r.host_base, r.size, r.access, false, r.large_pages));
    }
    for s in &system.shared_memory {
        for sh in s.sharers.iter().filter(|sh| usize::from(sh.partition.0) == p) {
            maps.push(map(sh.guest_base, s.host.base, s.host.size, sh.access, false, false));
        }
    }
    let rw = Access { read: true, write: true, execute: false };
    for id in &partition.devices {
        let Some(device) = system.board.devices.get(usize::from(id.0)) else { continue };
        for range in device.mmio.iter().chain(device.bars.iter().filter(|b| b.memory).map(|b| &b.range)) {
            maps.push(map(range.base, range.base, range.size, rw, true, false));
        }
    }
    // Validation built the same tree and refused it if it did not fit; fall back to the
    // limit if it somehow does not.
    let limit = crate::tables::SLAT_TABLES_PER_PARTITION;
    let ept = build_tables::<Ept>(&maps).unwrap_or(limit);
    let npt = build_tables::<Npt>(&maps).unwrap_or(limit);
    ept.max(npt)
}
