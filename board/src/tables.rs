//! The compiled configuration: plain `const`-constructible types that `codegen` fills and
//! the kernel reads. No parsing happens at run time.
//!
//! Every bound here is a build-time limit; the validator rejects configurations that
//! exceed one (rule `limit-exceeded`). The kernel sizes its static state from the compiled
//! system instead (`crate::footprint`, the generated `CPUS`, `PARTITIONS`, ... consts),
//! which these bound.

/// Most CPUs a board may list, and the bound on their core numbers (`0..MAX_CPUS`): the
/// kernel sizes its per-CPU state by the board's CPUs (`config::CPUS`, at most this) and
/// indexes per-core state (the SynIC registers in kernel/src/hyperv/mod.rs) by core number.
pub const MAX_CPUS: usize = 16;
/// Partitions are [`PartitionId`]s (a `u8`) and index the kernel's per-partition arrays.
pub const MAX_PARTITIONS: usize = 8;
/// Regions of one partition (the multiboot1 memory map the kernel writes holds this many).
pub const MAX_MEMORY_REGIONS_PER_PARTITION: usize = 8;
/// Devices of a board ([`DeviceId`] is a `u8`).
pub const MAX_DEVICES: usize = 32;
/// Connections; the kernel keeps one message queue per connection, indexed by its position.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest connection `name`: short enough for a device name on any guest.
pub const MAX_CONNECTION_NAME: usize = 32;
/// Deepest message queue a connection may ask for.
pub const MAX_QUEUE_DEPTH: u32 = 64;
pub const MAX_SHARED_MEMORY: usize = 16;
/// SynIC: SINT numbers are `0..SINT_COUNT` (TLFS 11.10), the ABI's definition.
pub const SINT_COUNT: u8 = bulkhead_abi::hyperv::msr::SINT_COUNT;
/// SynIC: event flags per SINT are `0..EVENT_FLAG_COUNT` (TLFS 11.10), the ABI's definition.
pub const EVENT_FLAG_COUNT: u16 = bulkhead_abi::hyperv::message::EVENT_FLAGS_PER_SLOT;
/// Longest configured command line: the kernel builds a partition's command line (this
/// plus `NAME:word`s of its own) in a buffer of this many bytes and writes it with a NUL
/// into one 4 KiB page of the boot area.
pub const MAX_CMDLINE_BYTES: usize = 4095;
/// Most boot modules the kernel takes from the bootloader: each partition's payload and
/// its initrd, if any.
pub const MAX_BOOT_MODULES: usize = 16;
/// Most second-level (EPT/NPT) page tables one partition's address space may take: the
/// root and every table its memory, shared regions and device MMIO need. Validation builds
/// each address space with the kernel's builder and refuses a layout that needs more; the
/// kernel holds exactly what each partition takes (`config::SLAT_TABLES`,
/// kernel/src/backend/address_space.rs).
pub const SLAT_TABLES_PER_PARTITION: usize = 32;
/// A page (and a page table) of the hypervisor's memory.
pub const PAGE_BYTES: u64 = 4096;
/// One CPU's stacks with their guard pages (kernel/src/cpu/percpu.rs `CpuStacks`, which
/// asserts its size): the hypervisor's stacks take this times `config::CPUS`.
pub const STACK_BYTES_PER_CPU: usize = 160 * 1024;
/// Hardware pages of one partition besides its EPT/NPT (intercept bitmaps: the larger of
/// VT-x's 5 and SVM's 9; kernel/src/backend.rs asserts it). Only one backend runs on a
/// board, so both carve them from the same storage.
pub const BACKEND_PAGES_PER_PARTITION: usize = 9;
/// Hardware pages of one CPU (VMXON region + VMCS, or host save area + two VMCBs).
pub const BACKEND_PAGES_PER_CPU: usize = 3;
/// Guest-physical ranges end at or below 2^48: what 4-level EPT/NPT tables map (SDM Vol. 3C
/// 29.3, APM 15.25). The table builder's own bound, which refuses anything above.
pub const GUEST_PHYS_LIMIT: u64 = bulkhead_virt::slat::GUEST_PHYS_LIMIT;
/// Host-physical ranges end at or below 2^52, the architectural MAXPHYADDR limit (SDM
/// 4.1.4). The table builder's own bound.
pub const HOST_PHYS_LIMIT: u64 = bulkhead_virt::slat::HOST_PHYS_LIMIT;
/// Highest APIC ID an xAPIC can be sent an IPI at: its destination field is 8 bits and
/// 0xFF means every CPU (SDM 11.6.1, "Destination Field"). Higher IDs need an x2APIC.
pub const XAPIC_MAX_APIC_ID: u32 = 0xFE;
/// The x2APIC broadcast destination (SDM 11.12.9), never a CPU's APIC ID; the kernel also
/// uses it to mean "no CPU".
pub const X2APIC_BROADCAST: u32 = u32::MAX;

// Bounds that hold by construction, checked here so raising one limit cannot break them.
const _: () = assert!(MAX_PARTITIONS <= u8::MAX as usize + 1, "PartitionId is a u8");
const _: () = assert!(MAX_DEVICES <= u8::MAX as usize + 1, "DeviceId is a u8");
const _: () = assert!(MAX_CPUS <= u32::MAX as usize, "core numbers are u32");
const _: () = assert!(2 * MAX_PARTITIONS <= MAX_BOOT_MODULES, "every payload and initrd is a boot module");
const _: () = assert!(BOOT_AREA_END <= GUEST_PHYS_LIMIT);

/// End of the boot area the hypervisor writes into every partition (flat GDT, page tables,
/// command line, stack; docs/architecture.md): payloads load at or above it.
pub const BOOT_AREA_END: u64 = 0x80000;

/// Index of a partition in [`SystemConfig::partitions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u8);

/// Index of a device in [`BoardConfig::devices`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub u8);

/// A physical address range `[base, base + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhysRange {
    pub base: u64,
    pub size: u64,
}

impl PhysRange {
    pub const fn end(&self) -> u64 {
        self.base + self.size
    }

    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        self.base < other.end() && other.base < self.end()
    }
}

/// A CPU of the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardCpu {
    /// Logical core number used by the system file (`cores = [...]`).
    pub core: u32,
    pub apic_id: u32,
    pub boot: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciAddress {
    pub segment: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoPortRange {
    pub base: u16,
    pub count: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// A legacy/IOAPIC line (GSI).
    Line(u32),
    /// The PCI function signals with MSI, using at most `messages` vectors (a power of
    /// two, at most 32: PCI Local Bus 3.0, 6.8.1.3 "Multiple Message Capable").
    Msi { messages: u8 },
}

/// An IOAPIC of the board (its register window and the GSIs its pins carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoApic {
    pub name: &'static str,
    /// The IOAPIC ID the firmware's MADT reports.
    pub id: u8,
    /// Physical address of the register window (IOREGSEL at +0, IOWIN at +0x10).
    pub base: u64,
    /// GSI of pin 0.
    pub gsi_base: u32,
    /// Redirection entries (pins): GSIs `gsi_base..gsi_base + pins`.
    pub pins: u8,
}

/// The PCI Express enhanced configuration window (ECAM, "MMCONFIG"): bus `b`, device
/// `d`, function `f` at `base + (b << 20 | d << 15 | f << 12)` (PCIe 5.0, 7.2.2), buses
/// `0..buses` of segment 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciEcam {
    pub base: u64,
    pub buses: u16,
}

/// Which PCI functions an IOMMU translates (the DRHD scope of the firmware's DMAR table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IommuScope {
    /// Every PCI function of its segment (DMAR INCLUDE_PCI_ALL).
    All,
    /// The listed board devices.
    Devices(&'static [DeviceId]),
}

/// How a partition's DMA-capable (PCI) functions are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaProtection {
    /// By an IOMMU whose scope covers each function (the default; the build refuses
    /// otherwise).
    Iommu,
    /// Not at all: the system file says `dma = "unprotected"`; the boot log warns.
    Unprotected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    pub index: u8,
    pub range: PhysRange,
    /// true: memory BAR, false: I/O BAR (then `range` holds the port range).
    pub memory: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    pub name: &'static str,
    pub pci: Option<PciAddress>,
    pub bars: &'static [Bar],
    pub io_ports: &'static [IoPortRange],
    pub mmio: &'static [PhysRange],
    pub interrupts: &'static [Interrupt],
    /// PCI capability IDs the owner's view of the configuration space skips.
    pub hidden_capabilities: &'static [u8],
    /// Which partition owns the device, if any.
    pub owner: Option<PartitionId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iommu {
    pub name: &'static str,
    /// Register block.
    pub registers: PhysRange,
    pub scope: IommuScope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardConfig {
    pub name: &'static str,
    pub cpus: &'static [BoardCpu],
    pub ram: &'static [PhysRange],
    pub reserved: &'static [PhysRange],
    pub devices: &'static [Device],
    pub iommus: &'static [Iommu],
    pub ioapics: &'static [IoApic],
    pub pci_ecam: Option<PciEcam>,
    /// I/O port of the console's 16550 UART.
    pub console_port: u16,
    /// The board's hardware watchdog (`[watchdog]`), which the hypervisor arms and kicks
    /// while the system is healthy (docs/supervision.md).
    pub watchdog: Option<BoardWatchdog>,
    /// Where the reason for a board reset survives the reset (`[reset_record]`).
    pub reset_record: Option<ResetRecord>,
}

/// Which watchdog device a board has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoardWatchdogKind {
    /// The Intel 6300ESB watchdog timer (a PCI function with one 16-byte memory BAR;
    /// QEMU `-device i6300esb`).
    I6300esb,
}

/// The board's hardware watchdog: a board device (`device`) the hypervisor keeps for itself.
/// Unless it is kicked within `timeout_ms`, it resets the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardWatchdog {
    pub kind: BoardWatchdogKind,
    /// The board device (its PCI function and BAR) that is the watchdog; no partition owns it.
    pub device: DeviceId,
    pub timeout_ms: u32,
}

/// Where the hypervisor records why it reset the board, so that the next boot can print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetRecord {
    /// Bytes `offset..offset + RESET_RECORD_BYTES` of the RTC's battery-backed CMOS RAM
    /// (index port 0x70, data port 0x71), which survive a reset.
    Cmos { offset: u8 },
}

/// How many bytes a reset record takes.
pub const RESET_RECORD_BYTES: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// What the hypervisor writes to its console UART after the firmware's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleFormat {
    /// defmt frames: compact and cheap on the CPU, but only a host with the kernel ELF
    /// (its `.defmt` table) can read them.
    Defmt,
    /// Plain text lines (`[cpu0 INFO ] message`) that any serial terminal shows.
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HypervisorConfig {
    /// Memory only the hypervisor may use (its image, stacks, tables, boot modules).
    pub reserved: PhysRange,
    pub log_level: LogLevel,
    pub console_format: ConsoleFormat,
    /// The partition whose verdict (a byte written to port 0xF4, 0 = pass) ends the run:
    /// the hypervisor logs the run's end and then exits the emulator (`exit=emulator`) or
    /// stops on a board. `None`: the verdict port is open to every partition under
    /// `exit=emulator` (test runs) and to none on a board.
    pub verdict_partition: Option<PartitionId>,
    /// The partition that receives the bytes typed on the hypervisor's console UART, on
    /// the receive side of its virtual UART at COM1. `None`: input is not read.
    pub console_input: Option<PartitionId>,
    /// The core (owned by no partition) on which the hypervisor's monitor runs: it checks
    /// the partitions' watchdog deadlines and the hypervisor's own cores, and kicks the
    /// board watchdog. `None` when the system needs no monitor (no watchdog, no critical
    /// partition, no board watchdog); the configuration refuses a system that needs one
    /// and has no free core.
    pub monitor_core: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access {
    pub read: bool,
    pub write: bool,
    pub execute: bool,
}

/// One region of a partition's guest-physical memory, backed by host memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    pub guest_base: u64,
    /// Chosen by the configuration tool when the system file gives none.
    pub host_base: u64,
    pub size: u64,
    pub access: Access,
    /// Map with 2 MiB (or 1 GiB) pages; validated 2 MiB-aligned on both sides.
    pub large_pages: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    Elf,
    Flat,
    /// A Linux kernel in the bzImage format (`kind = "linux"` in the system file), booted
    /// through its 64-bit entry (`bulkhead_virt::bzimage`).
    BzImage,
    Hermit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    pub kind: PayloadKind,
    /// Name of the boot module (multiboot2 `module2` string) that carries the payload.
    pub module: &'static str,
    pub entry: Option<u64>,
    pub cmdline: &'static str,
    /// Boot module carrying the initrd, if any.
    pub initrd_module: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPolicy {
    Halt,
    Restart { max_restarts: u32 },
    ResetBoard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub id: PartitionId,
    pub name: &'static str,
    /// Logical core numbers ([`BoardCpu::core`]); the first one starts the partition.
    pub cores: &'static [u32],
    pub memory: &'static [MemoryRegion],
    pub payload: Payload,
    pub devices: &'static [DeviceId],
    pub dma: DmaProtection,
    pub fault_policy: FaultPolicy,
    /// The partition's watchdog, if the system file gives it one (`watchdog_ms`).
    pub watchdog: Option<Watchdog>,
    /// The board watchdog is kicked only while this partition is healthy (`critical`).
    pub critical: bool,
    /// The partitions this one may supervise (`supervises`): read their state and counters,
    /// restart or halt them. At most one partition of a system supervises.
    pub supervises: &'static [PartitionId],
    /// The hypervisor interface the partition sees (`interface`): exactly one.
    pub interface: GuestInterface,
}

/// Which hypervisor interface a partition speaks (docs/xen.md): its CPUID leaves, its
/// hypercall page and how its VMCALL/VMMCALL is decoded. A guest sees exactly one: Linux
/// keeps only one hypervisor interface, and prefers Xen when both are there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestInterface {
    /// Microsoft's Hyper-V interface (TLFS): "Microsoft Hv", SynIC, HvPostMessage (default).
    HyperV,
    /// Xen's HVM guest interface: "XenVMMXenVMM", Xen hypercalls.
    Xen,
}

/// A partition's watchdog: it must check in (`BULKHEAD_WATCHDOG_CHECK_IN`) at least every
/// `period_ms`; its first deadline is `grace_ms + period_ms` after each start (a Linux
/// partition needs seconds before its watchdog daemon runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchdog {
    pub period_ms: u32,
    pub grace_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    Message { queue_depth: u32 },
    Event { flag: u16 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    /// The TLFS connection ID the sender names in HvPostMessage / HvSignalEvent.
    pub id: u32,
    /// The connection's name from the system file (`[a-z0-9_-]`, at most
    /// [`MAX_CONNECTION_NAME`] bytes, unique in the system): what a partition's driver may
    /// call the device the connection appears as.
    pub name: Option<&'static str>,
    pub from: PartitionId,
    pub to: PartitionId,
    /// SINT of the receiver the message or event arrives on.
    pub sint: u8,
    pub kind: ConnectionKind,
    /// The host page of the message ring that carries a `message` connection with a Xen
    /// end (its `ring` shared region, layout `bulkhead_abi::xen::ring`); `None` otherwise.
    pub ring: Option<PhysRange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sharer {
    pub partition: PartitionId,
    pub guest_base: u64,
    pub access: Access,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedMemory {
    pub name: &'static str,
    pub host: PhysRange,
    pub sharers: &'static [Sharer],
}

/// Core `core` runs partition `partition` (or stays with the hypervisor when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreAssignment {
    pub core: u32,
    pub apic_id: u32,
    pub partition: Option<PartitionId>,
}

/// The whole compiled configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemConfig {
    /// The system file's name (for the boot summary).
    pub name: &'static str,
    pub board: BoardConfig,
    pub hypervisor: HypervisorConfig,
    pub partitions: &'static [Partition],
    pub core_map: &'static [CoreAssignment],
    pub connections: &'static [Connection],
    pub shared_memory: &'static [SharedMemory],
}

// The boot information and the BHCN table hold every connection and name the system may
// have, and every region of a partition.
const _: () = assert!(MAX_CONNECTIONS <= bulkhead_abi::boot_info::MAX_CONNECTIONS);
const _: () = assert!(MAX_CONNECTION_NAME <= bulkhead_abi::boot_info::MAX_NAME);
const _: () = assert!(MAX_MEMORY_REGIONS_PER_PARTITION <= bulkhead_abi::boot_info::MAX_MEMORY_REGIONS);
const _: () = assert!(MAX_CPUS <= bulkhead_abi::boot_info::MAX_VCPUS);

impl SystemConfig {
    /// The APIC ID of each of `partition`'s vCPUs as the partition sees it, in VP index
    /// order (the order of its `cores`; index 0 starts first): each vCPU runs pinned on its
    /// core and sees that core's APIC ID. What its MADT and its boot information list.
    pub fn vcpu_apic_ids<'a>(&'a self, partition: &'a Partition) -> impl Iterator<Item = u32> + 'a {
        partition.cores.iter().filter_map(|core| self.board.cpus.iter().find(|c| c.core == *core).map(|c| c.apic_id))
    }

    /// The connections partition `id` sends or receives on, in the system file's order,
    /// as its guest learns them (the boot information of a 64-bit payload, the BHCN ACPI
    /// table of a Linux partition; one encoding, `bulkhead_abi::boot_info::Connection`).
    pub fn connections_of(&self, id: PartitionId) -> impl Iterator<Item = bulkhead_abi::boot_info::Connection> + '_ {
        use bulkhead_abi::boot_info;
        self.connections.iter().filter(move |c| c.from == id || c.to == id).map(move |c| boot_info::Connection {
            id: c.id,
            kind: match c.kind {
                // The validator keeps depths at or below MAX_QUEUE_DEPTH.
                ConnectionKind::Message { queue_depth } => {
                    boot_info::ConnectionKind::Message { queue_depth: u16::try_from(queue_depth).unwrap_or(u16::MAX) }
                }
                ConnectionKind::Event { flag } => boot_info::ConnectionKind::Event { flag },
            },
            incoming: c.to == id,
            sint: c.sint,
            name: c.name.map_or([0; boot_info::MAX_NAME], boot_info::name_field),
        })
    }
}

impl Partition {
    /// The partition's memory a payload may use as RAM (readable and writable regions),
    /// guest-physical, in the order of the system file (the boot information sorts them).
    pub fn ram_regions(&self) -> impl Iterator<Item = bulkhead_abi::boot_info::MemoryRegion> + '_ {
        self.memory
            .iter()
            .filter(|r| r.access.read && r.access.write)
            .map(|r| bulkhead_abi::boot_info::MemoryRegion { base: r.guest_base, size: r.size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_abi::boot_info;

    const fn cpu(core: u32, apic_id: u32) -> BoardCpu {
        BoardCpu { core, apic_id, boot: core == 0 }
    }

    const fn region(guest_base: u64, size: u64, write: bool) -> MemoryRegion {
        MemoryRegion {
            guest_base,
            host_base: 0x100_0000 + guest_base,
            size,
            access: Access { read: true, write, execute: true },
            large_pages: false,
        }
    }

    const PAYLOAD: Payload =
        Payload { kind: PayloadKind::Elf, module: "m", entry: None, cmdline: "", initrd_module: None };
    const PARTITION: Partition = Partition {
        id: PartitionId(1),
        name: "control",
        cores: &[3, 1],
        memory: &[region(0x400_0000, 0x20_0000, true), region(0, 0x100_0000, true), region(0x800_0000, 0x1000, false)],
        payload: PAYLOAD,
        devices: &[],
        dma: DmaProtection::Iommu,
        fault_policy: FaultPolicy::Halt,
        watchdog: None,
        critical: false,
        supervises: &[],
        interface: GuestInterface::HyperV,
    };

    const CPUS: &[BoardCpu] = &[cpu(0, 0), cpu(1, 2), cpu(2, 4), cpu(3, 6)];

    fn system() -> SystemConfig {
        SystemConfig {
            name: "s",
            board: BoardConfig {
                name: "b",
                cpus: CPUS,
                ram: &[],
                reserved: &[],
                devices: &[],
                iommus: &[],
                ioapics: &[],
                pci_ecam: None,
                console_port: 0x3f8,
                watchdog: None,
                reset_record: None,
            },
            hypervisor: HypervisorConfig {
                reserved: PhysRange { base: 0, size: 0 },
                log_level: LogLevel::Info,
                console_format: ConsoleFormat::Text,
                verdict_partition: None,
                console_input: None,
                monitor_core: None,
            },
            partitions: &[PARTITION],
            core_map: &[],
            connections: &[
                Connection {
                    id: 5,
                    name: Some("telemetry"),
                    from: PartitionId(1),
                    to: PartitionId(0),
                    sint: 2,
                    kind: ConnectionKind::Message { queue_depth: 16 },
                    ring: None,
                },
                Connection {
                    id: 6,
                    name: None,
                    from: PartitionId(0),
                    to: PartitionId(2),
                    sint: 2,
                    kind: ConnectionKind::Event { flag: 1 },
                    ring: None,
                },
                Connection {
                    id: 7,
                    name: None,
                    from: PartitionId(0),
                    to: PartitionId(1),
                    sint: 3,
                    kind: ConnectionKind::Event { flag: 9 },
                    ring: None,
                },
            ],
            shared_memory: &[],
        }
    }

    #[test]
    fn vcpu_apic_ids_follow_the_cores_order() {
        let system = system();
        let ids: std::vec::Vec<u32> = system.vcpu_apic_ids(&PARTITION).collect();
        assert_eq!(ids, [6, 2], "VP 0 is core 3, VP 1 core 1");
    }

    #[test]
    fn connections_of_a_partition_are_its_own_with_their_direction() {
        let system = system();
        let list: std::vec::Vec<boot_info::Connection> = system.connections_of(PartitionId(1)).collect();
        assert_eq!(list.len(), 2, "not connection 6 between two others");
        assert_eq!(list[0].name(), Some("telemetry"));
        assert_eq!(
            (list[0].id, list[0].kind, list[0].incoming, list[0].sint),
            (5, boot_info::ConnectionKind::Message { queue_depth: 16 }, false, 2)
        );
        assert_eq!(list[1].name(), None);
        assert_eq!(
            (list[1].id, list[1].kind, list[1].incoming, list[1].sint),
            (7, boot_info::ConnectionKind::Event { flag: 9 }, true, 3)
        );
    }

    #[test]
    fn ram_regions_are_the_writable_ones() {
        let regions: std::vec::Vec<boot_info::MemoryRegion> = PARTITION.ram_regions().collect();
        assert_eq!(
            regions,
            [
                boot_info::MemoryRegion { base: 0x400_0000, size: 0x20_0000 },
                boot_info::MemoryRegion { base: 0, size: 0x100_0000 }
            ]
        );
    }
}
