//! The validated configuration as the host sees it: plain owned data, every address resolved.
//!
//! [`System`] only exists once every rule passed, so code generation and the summary never
//! need to handle a broken configuration. Small value types are shared with [`crate::tables`]
//! so that the host model and the compiled tables cannot drift apart.

use std::path::PathBuf;

pub use crate::tables::Sharer;
use crate::tables::{
    Bar, BoardCpu, ConnectionKind, DeviceId, DmaProtection, FaultPolicy, HypervisorConfig, Interrupt, IoPortRange,
    MemoryRegion, PartitionId, PayloadKind, PciAddress, PciEcam, PhysRange,
};
pub use crate::tables::{BoardWatchdog, BoardWatchdogKind, GuestInterface, ResetRecord, Watchdog};

/// A validated system: board, hypervisor settings, partitions and their links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct System {
    /// `name` from the system file, else the file's stem.
    pub name: String,
    /// The system file as given to [`crate::load_system`].
    pub file: PathBuf,
    pub board: Board,
    pub hypervisor: HypervisorConfig,
    /// I/O port of the console UART (the board's unless `[hypervisor] console_port` says).
    pub console_port: u16,
    pub partitions: Vec<Partition>,
    pub connections: Vec<Connection>,
    pub shared_memory: Vec<SharedMemory>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    pub name: String,
    pub file: PathBuf,
    pub cpus: Vec<BoardCpu>,
    pub ram: Vec<PhysRange>,
    pub reserved: Vec<PhysRange>,
    pub devices: Vec<Device>,
    pub iommus: Vec<Iommu>,
    pub ioapics: Vec<IoApic>,
    /// The PCI Express configuration window (`pci_ecam`), if the board has one.
    pub pci_ecam: Option<PciEcam>,
    pub console_port: u16,
    /// The board's CPUs have an x2APIC (`x2apic = true`): APIC IDs above 0xFE are allowed.
    pub x2apic: bool,
    /// The board's hardware watchdog (`[watchdog]`).
    pub watchdog: Option<BoardWatchdog>,
    /// Where a board reset's reason is recorded (`[reset_record]`).
    pub reset_record: Option<ResetRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub pci: Option<PciAddress>,
    pub bars: Vec<Bar>,
    pub io_ports: Vec<IoPortRange>,
    pub mmio: Vec<PhysRange>,
    pub interrupts: Vec<Interrupt>,
    /// PCI capability IDs hidden from the owner (`hide_capabilities`).
    pub hidden_capabilities: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iommu {
    pub name: String,
    pub registers: PhysRange,
    pub scope: IommuScope,
}

/// Which PCI functions an IOMMU translates (resolved device indices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IommuScope {
    /// `include_all = true`: every PCI function of the segment.
    All,
    /// `devices = [...]`, as indices into [`Board::devices`].
    Devices(Vec<DeviceId>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoApic {
    pub name: String,
    pub id: u8,
    pub base: u64,
    pub gsi_base: u32,
    pub pins: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub cores: Vec<u32>,
    /// Host bases are all resolved (given or allocated).
    pub memory: Vec<MemoryRegion>,
    pub payload: Payload,
    pub devices: Vec<DeviceId>,
    pub dma: DmaProtection,
    pub fault_policy: FaultPolicy,
    pub watchdog: Option<Watchdog>,
    pub critical: bool,
    pub supervises: Vec<PartitionId>,
    pub interface: GuestInterface,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub kind: PayloadKind,
    /// The file, resolved (relative to the system file, or in the guest directory).
    pub path: PathBuf,
    /// `path` as written in the system file (for the summary).
    pub source: String,
    pub entry: Option<u64>,
    pub cmdline: String,
    pub initrd: Option<PathBuf>,
}

/// A connection ([`crate::tables::Connection`] with its name owned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The TLFS connection ID.
    pub id: u32,
    /// `name` from the system file, if given.
    pub name: Option<String>,
    pub from: PartitionId,
    pub to: PartitionId,
    pub sint: u8,
    pub kind: ConnectionKind,
    /// The host page of its Xen message ring (`ring = "REGION"`), if it has one.
    pub ring: Option<PhysRange>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMemory {
    pub name: String,
    pub host: PhysRange,
    pub sharers: Vec<Sharer>,
}
