//! ACPI tables that describe a partition's virtual platform to an operating system that
//! finds its processors through ACPI (Linux without Jailhouse or ACRN guest support runs on
//! one CPU unless a MADT or an MP table lists the others).
//!
//! [`write_tables`] lays out, in a caller-provided buffer that the partition will see at a
//! given guest-physical address, a legacy-free, hardware-reduced ACPI platform:
//!
//! | table | what it says |
//! |---|---|
//! | RSDP (rev. 2) | where the XSDT is; no RSDT |
//! | XSDT | the FADT, the MADT and, when PCI segments are given, the MCFG |
//! | FADT (6.4) | hardware-reduced ACPI: no PM timer, no SCI, no GPEs, no FACS; physical APIC destination mode only; no 8042, no VGA, no CMOS RTC; optionally a reset register |
//! | DSDT | the header; with [`PartitionPlatform::polled_uart`], a 16550 without an interrupt ([`polled_uart_aml`]) |
//! | MADT | local APIC at 0xFEE00000, not PC-AT compatible (no 8259 pair); one entry per vCPU; I/O APICs only when given |
//! | MCFG | only when PCI segments are given |
//! | BHCN | Bulkhead's own table: the partition's Hyper-V connections ([`Connection`]), only when it has some |
//!
//! Section numbers are those of the ACPI Specification 6.4; the MCFG is defined by the PCI
//! Firmware Specification 3.2, 4.1.2. What the tables say and why: docs/linux.md.
//!
//! Why written here rather than with a crate: `acpi` and `aml` (rust-osdev) only parse
//! tables; rust-vmm's `acpi_tables` writes them but needs `alloc` (its MADT is a vector of
//! boxed structures, and the hypervisor has no heap) and has no Processor Local x2APIC
//! structure. The `acpi` crate parses this module's output in `virt/tests/acpi_tables.rs`.

use core::fmt;

/// The local APIC's guest-physical address, as every vCPU sees it (SDM Vol. 3A 11.4.1: the
/// power-up default of IA32_APIC_BASE).
pub const LOCAL_APIC_ADDRESS: u32 = 0xFEE0_0000;

/// The most vCPUs a table set describes: the ACPI Processor UID of a Processor Local APIC
/// entry is one byte, and each vCPU's UID is its index.
pub const MAX_VCPUS: usize = 256;

/// The most I/O APICs and PCI segments a table set describes (the kernel's device model
/// will need one or two of each; the bound keeps the tables' size small and known).
pub const MAX_IO_APICS: usize = 8;
/// See [`MAX_IO_APICS`].
pub const MAX_PCI_SEGMENTS: usize = 8;

/// The alignment [`write_tables`] needs of `base_gpa`, and gives every table: an RSDP
/// found by scanning memory must be on a 16-byte boundary (5.2.5.1).
pub const ALIGNMENT: u64 = 16;

/// An I/O APIC the partition owns or has emulated (a MADT I/O APIC entry, 5.2.12.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoApic {
    /// Its I/O APIC ID.
    pub id: u8,
    /// The guest-physical address of its register window.
    pub address: u32,
    /// The global system interrupt number of its first input.
    pub gsi_base: u32,
}

/// A PCI segment group with memory-mapped configuration space (ECAM) the partition sees
/// (an MCFG allocation, PCI Firmware Specification 3.2, Table 4-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciSegment {
    /// Guest-physical address of the ECAM window (of bus 0, even if `start_bus` is not 0).
    pub ecam_base: u64,
    /// The PCI segment group number.
    pub segment: u16,
    /// First bus decoded by this window.
    pub start_bus: u8,
    /// Last bus decoded by this window (at least `start_bus`).
    pub end_bus: u8,
}

/// Bytes of ECAM configuration space per bus: 32 devices x 8 functions x 4 KiB (PCI
/// Express Base 6.0, 7.2.2).
pub const ECAM_BUS_SIZE: u64 = 1 << 20;

impl PciSegment {
    /// The allocation a partition gets in a board's ECAM window at `ecam_base` (`buses`
    /// buses from bus 0) for its PCI functions of `segment` on `function_buses`: buses 0
    /// to the last of them, and at least bus 1. `None` when it has no function or the
    /// window has no bus.
    ///
    /// Why at least bus 1: without an ACPI PCI host bridge in the DSDT, Linux finds bus 0
    /// through its peer-bus scan (arch/x86/pci/legacy.c, `pcibios_fixup_peer_bridges`),
    /// which covers buses 0 to the MCFG's last bus of segment 0 (`pcibios_last_bus`) and
    /// does nothing when that is bus 0. Why no wider: the scan reads 32 vendor IDs a bus.
    pub fn for_functions(
        ecam_base: u64,
        buses: u16,
        segment: u16,
        function_buses: impl IntoIterator<Item = u8>,
    ) -> Option<PciSegment> {
        let last_bus = u8::try_from(buses.checked_sub(1)?).unwrap_or(u8::MAX);
        let end_bus = function_buses.into_iter().max()?.max(1).min(last_bus);
        Some(PciSegment { ecam_base, segment, start_bus: 0, end_bus })
    }

    /// The guest-physical range the allocation decodes: (base, size), from `start_bus` to
    /// `end_bus`, which the e820 map must reserve (Linux ignores an MCFG window the
    /// firmware does not reserve: `pci_mmcfg_check_reserved`).
    pub fn window(&self) -> (u64, u64) {
        let buses = u64::from(self.end_bus.saturating_sub(self.start_bus)) + 1;
        (self.ecam_base + u64::from(self.start_bus) * ECAM_BUS_SIZE, buses * ECAM_BUS_SIZE)
    }
}

/// A reset register in I/O space: writing `value` to `port` restarts the partition
/// (FADT RESET_REG and RESET_VALUE, 5.2.9; also defined in hardware-reduced mode, 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetRegister {
    /// The I/O port.
    pub port: u16,
    /// The byte to write.
    pub value: u8,
}

/// The most connections a BHCN table lists (the system's `MAX_CONNECTIONS`).
pub const MAX_CONNECTIONS: usize = bulkhead_abi::boot_info::MAX_CONNECTIONS;
/// The longest connection name a BHCN entry holds (the system's `MAX_CONNECTION_NAME`).
pub const MAX_CONNECTION_NAME: usize = bulkhead_abi::boot_info::MAX_NAME;

/// Signature of Bulkhead's connection table, an OEM-defined table (ACPI 6.4 5.2.6: any
/// signature not reserved by the specification; Linux installs every table the XSDT lists,
/// so a driver finds it with `acpi_get_table("BHCN", ...)`).
pub const BHCN_SIGNATURE: [u8; 4] = *b"BHCN";
/// Revision of the BHCN layout ([`Connection`]); a reader refuses another.
pub const BHCN_REVISION: u8 = 1;
/// Bytes of one BHCN entry: after the 36-byte table header, one
/// `bulkhead_abi::boot_info::Connection` per connection, the same encoding a 64-bit
/// payload finds in its boot information (its doc has the layout).
pub const BHCN_ENTRY_LEN: usize = bulkhead_abi::boot_info::CONNECTION_ENTRY_LEN;

pub use bulkhead_abi::boot_info::{Connection, ConnectionKind};

/// What the tables describe: the partition's virtual platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionPlatform<'a> {
    /// The APIC ID of each vCPU as the partition sees it, in vCPU index order (index 0 is
    /// the bootstrap processor; each index becomes the ACPI Processor UID).
    pub vcpu_apic_ids: &'a [u32],
    /// I/O APICs (none: the partition has no legacy IRQs, and Linux runs with the local
    /// APICs only).
    pub io_apics: &'a [IoApic],
    /// PCI segments with ECAM (none: no MCFG).
    pub pci_segments: &'a [PciSegment],
    /// Whether the partition has user-visible devices on an ISA bus, such as a UART at a
    /// legacy port (IA-PC boot architecture flag LEGACY_DEVICES, 5.2.9.3).
    pub isa_devices: bool,
    /// A reset register, if the hypervisor restarts the partition through one.
    pub reset_register: Option<ResetRegister>,
    /// The I/O base of a 16550 UART without an interrupt, described in the DSDT (see
    /// [`polled_uart_aml`]).
    pub polled_uart: Option<u16>,
    /// The partition's Hyper-V connections, listed in a BHCN table when not empty.
    pub connections: &'a [Connection],
}

impl<'a> PartitionPlatform<'a> {
    /// A platform of these vCPUs and nothing else.
    pub const fn new(vcpu_apic_ids: &'a [u32]) -> Self {
        Self {
            vcpu_apic_ids,
            io_apics: &[],
            pci_segments: &[],
            isa_devices: false,
            reset_register: None,
            polled_uart: None,
            connections: &[],
        }
    }
}

/// Bytes of [`polled_uart_aml`].
pub const POLLED_UART_AML_LEN: usize = 42;

/// The DSDT's AML for a 16550 UART at I/O `base` without an interrupt:
///
/// ```text
/// Device (\_SB.COM1) {
///     Name (_HID, EisaId ("PNP0501"))   // 16550A-compatible COM port
///     Name (_CRS, ResourceTemplate () { IO (Decode16, base, base, 1, 8) })
/// }
/// ```
///
/// A UART with no interrupt resource is one Linux's 8250 driver polls (`8250_pnp` gives
/// the port IRQ 0, and a port with IRQ 0 is driven by a timer), where the legacy COM1
/// entry it otherwise uses names IRQ 4, which does not exist on a platform without an I/O
/// APIC, so that opening the tty fails. Encoding: ACPI 6.4 20.2 (AML grammar: DeviceOp
/// 0x5B 0x82, NameOp 0x08, BufferOp 0x11, DualNamePath 0x2E, DWordPrefix 0x0C,
/// BytePrefix 0x0A) and 6.4.2.5 (I/O port descriptor), 6.4.2.9 (end tag).
pub fn polled_uart_aml(base: u16) -> [u8; POLLED_UART_AML_LEN] {
    let [lo, hi] = base.to_le_bytes();
    // "PNP0501" compressed (5.2.x EISA ID: three 5-bit letters, then the product number),
    // stored most significant byte first.
    const PNP0501: [u8; 4] = [0x41, 0xD0, 0x05, 0x01];
    let mut aml = [0u8; POLLED_UART_AML_LEN];
    let parts: [&[u8]; 9] = [
        // DeviceOp, PkgLength 40 (itself, the name and the two Names).
        &[0x5B, 0x82, 40],
        // \_SB_.COM1
        &[b'\\', 0x2E],
        b"_SB_COM1",
        // Name (_HID, DWord EISA ID)
        &[0x08],
        b"_HID",
        &[0x0C, PNP0501[0], PNP0501[1], PNP0501[2], PNP0501[3]],
        // Name (_CRS, Buffer (10) { I/O descriptor, end tag })
        &[0x08, b'_', b'C', b'R', b'S', 0x11, 13, 0x0A, 10],
        // I/O port descriptor: 16-bit decode, min = max = base, alignment 1, 8 ports.
        &[0x47, 0x01, lo, hi, lo, hi, 0x01, 0x08],
        // End tag, checksum 0 ("treated as correct").
        &[0x79, 0x00],
    ];
    let mut at = 0;
    for part in parts {
        aml[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    debug_assert_eq!(at, POLLED_UART_AML_LEN);
    aml
}

/// Where [`write_tables`] put the tables (guest-physical addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcpiLayout {
    /// The RSDP: what the Linux zero page's `acpi_rsdp_addr` gets. It is `base_gpa`.
    pub rsdp: u64,
    /// The XSDT.
    pub xsdt: u64,
    /// The FADT.
    pub fadt: u64,
    /// The DSDT.
    pub dsdt: u64,
    /// The MADT.
    pub madt: u64,
    /// The MCFG, if PCI segments were given.
    pub mcfg: Option<u64>,
    /// The BHCN, if connections were given.
    pub bhcn: Option<u64>,
    /// Bytes written from the start of the buffer (all tables, with the padding between
    /// them). The partition must not see this range as usable RAM.
    pub size: usize,
}

/// Why no tables were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiError {
    /// The platform has no vCPU.
    NoVcpus,
    /// More vCPUs than [`MAX_VCPUS`].
    TooManyVcpus(usize),
    /// More I/O APICs than [`MAX_IO_APICS`] or PCI segments than [`MAX_PCI_SEGMENTS`].
    TooManyDevices,
    /// More connections than [`MAX_CONNECTIONS`].
    TooManyConnections(usize),
    /// APIC ID 0xFFFFFFFF: the x2APIC broadcast destination, never a processor's ID (Linux
    /// skips an x2APIC entry with it).
    InvalidApicId(u32),
    /// Two vCPUs with the same APIC ID.
    DuplicateApicId(u32),
    /// A PCI segment whose end bus precedes its start bus.
    InvalidPciSegment,
    /// `base_gpa` is not a multiple of [`ALIGNMENT`].
    MisalignedBase(u64),
    /// The tables would extend past the end of the guest-physical address space.
    AddressOverflow,
    /// The buffer holds fewer bytes than the tables need.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AcpiError::NoVcpus => write!(f, "the partition has no vCPU"),
            AcpiError::TooManyVcpus(n) => write!(f, "{n} vCPUs, at most {MAX_VCPUS} can be described"),
            AcpiError::TooManyDevices => {
                write!(f, "at most {MAX_IO_APICS} I/O APICs and {MAX_PCI_SEGMENTS} PCI segments can be described")
            }
            AcpiError::TooManyConnections(n) => {
                write!(f, "{n} connections, at most {MAX_CONNECTIONS} can be described")
            }
            AcpiError::InvalidApicId(id) => write!(f, "APIC ID {id:#x} is the broadcast ID"),
            AcpiError::DuplicateApicId(id) => write!(f, "APIC ID {id:#x} is given to two vCPUs"),
            AcpiError::InvalidPciSegment => write!(f, "a PCI segment ends before its start bus"),
            AcpiError::MisalignedBase(gpa) => write!(f, "ACPI tables at {gpa:#x}: not {ALIGNMENT}-byte aligned"),
            AcpiError::AddressOverflow => write!(f, "ACPI tables would end past the guest-physical address space"),
            AcpiError::BufferTooSmall { needed, available } => {
                write!(f, "ACPI tables need {needed} bytes, {available} given")
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Identification common to all tables.

/// OEMID of the RSDP and of every table header (5.2.5.3, 5.2.6): six characters.
pub const OEM_ID: [u8; 6] = *b"BULKHD";
/// OEM Table ID of every table header (5.2.6): eight characters.
pub const OEM_TABLE_ID: [u8; 8] = *b"BULKHEAD";
/// OEM Revision and Creator Revision of every table header.
const REVISION_OF_GENERATOR: u32 = 1;
/// Creator ID of every table header (5.2.6): four characters naming the tool that wrote it.
const CREATOR_ID: [u8; 4] = *b"BLKH";

// ---------------------------------------------------------------------------------------
// Sizes and revisions.

/// RSDP, ACPI 2.0+ form (5.2.5.3): 36 bytes.
const RSDP_LEN: usize = 36;
/// System description table header (5.2.6): 36 bytes.
const HEADER_LEN: usize = 36;
/// FADT of ACPI 6.x (5.2.9): through the Hypervisor Vendor Identity, 276 bytes.
const FADT_LEN: usize = 276;
/// MADT fixed part (5.2.12): header, Local Interrupt Controller Address, Flags.
const MADT_FIXED_LEN: usize = HEADER_LEN + 8;
/// Processor Local APIC structure (5.2.12.2).
const LOCAL_APIC_LEN: usize = 8;
/// Processor Local x2APIC structure (5.2.12.12).
const LOCAL_X2APIC_LEN: usize = 16;
/// I/O APIC structure (5.2.12.3).
const IO_APIC_LEN: usize = 12;
/// MCFG fixed part: header and 8 reserved bytes (PCI Firmware Spec. 3.2, Table 4-2).
const MCFG_FIXED_LEN: usize = HEADER_LEN + 8;
/// MCFG configuration space base address allocation structure (Table 4-3).
const MCFG_ALLOCATION_LEN: usize = 16;

/// The RSDP revision of ACPI 2.0 and later (5.2.5.3: "2" for ACPI versions 2.0 and up).
const RSDP_REVISION: u8 = 2;
/// XSDT revision (5.2.8: 1).
const XSDT_REVISION: u8 = 1;
/// FADT Major Version and FADT Minor Version of ACPI 6.4 (5.2.9: Revision 6, offset 131 = 4).
const FADT_REVISION: u8 = 6;
const FADT_MINOR_REVISION: u8 = 4;
/// MADT revision of ACPI 6.4 (5.2.12: 5).
const MADT_REVISION: u8 = 5;
/// DSDT revision 2: integers in its AML are 64-bit (5.2.11.1).
const DSDT_REVISION: u8 = 2;
/// MCFG revision (PCI Firmware Spec. 3.2, Table 4-2: 1).
const MCFG_REVISION: u8 = 1;

/// The largest APIC ID a Processor Local APIC entry carries. ACPI 6.4 5.2.12.12: logical
/// processors with APIC IDs of 255 and above must use the Processor Local x2APIC
/// structure, and (compatibility note) those below 255 the Processor Local APIC structure.
/// Linux (acpi_parse_x2apic) ignores an x2APIC entry below 255 when the MADT has Local APIC
/// entries too.
pub const MAX_XAPIC_ENTRY_ID: u32 = 254;

// ---------------------------------------------------------------------------------------
// Field values.

/// MADT Local APIC / x2APIC flags (5.2.12.2): bit 0 Enabled.
const PROCESSOR_ENABLED: u32 = 1 << 0;

/// FADT fixed feature flags (5.2.9).
mod fadt_flags {
    /// WBINVD works: the hypervisor executes a partition's WBINVD (and INVD) as WBINVD.
    pub const WBINVD: u32 = 1 << 0;
    /// No fixed-feature power button (the partition has no power button at all).
    pub const PWR_BUTTON: u32 = 1 << 4;
    /// No fixed-feature sleep button.
    pub const SLP_BUTTON: u32 = 1 << 5;
    /// No RTC wake status in the fixed register space (there is no RTC).
    pub const FIX_RTC: u32 = 1 << 6;
    /// RESET_REG describes a reset register.
    pub const RESET_REG_SUP: u32 = 1 << 10;
    /// No monitor, keyboard or mouse to detect.
    pub const HEADLESS: u32 = 1 << 12;
    /// Local APICs must be used in physical destination mode: the hypervisor delivers IPIs
    /// with physical destinations only (`ipi` module), so Linux must pick "physical flat"
    /// or "physical x2apic" rather than a logical mode.
    pub const FORCE_APIC_PHYSICAL_DESTINATION_MODE: u32 = 1 << 19;
    /// Hardware-reduced ACPI (4.1): no fixed hardware (PM1 blocks, PM timer, GPE blocks,
    /// SCI), no FACS needed (5.2.10).
    pub const HW_REDUCED_ACPI: u32 = 1 << 20;
}

/// FADT IA-PC boot architecture flags (5.2.9.3). Bits not set: 8042 (bit 1:
/// no keyboard controller at ports 0x60/0x64), MSI not supported (bit 3: nothing says MSI
/// would not work), PCIe ASPM controls (bit 4).
mod iapc_boot_arch {
    /// User-visible devices on the LPC or ISA bus.
    pub const LEGACY_DEVICES: u16 = 1 << 0;
    /// VGA not present: the operating system must not probe for it.
    pub const VGA_NOT_PRESENT: u16 = 1 << 2;
    /// CMOS RTC not present.
    pub const CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
}

/// C2 and C3 worst-case latencies that mean "not supported" (5.2.9: P_LVL2_LAT > 100,
/// P_LVL3_LAT > 1000).
const P_LVL2_LAT_NONE: u16 = 101;
const P_LVL3_LAT_NONE: u16 = 1001;

/// Generic Address Structure (5.2.3.2): address space System I/O, byte access.
const GAS_SYSTEM_IO: u8 = 1;
const GAS_ACCESS_BYTE: u8 = 1;

// ---------------------------------------------------------------------------------------
// Layout.

const fn align_up(n: usize) -> usize {
    let a = ALIGNMENT as usize;
    n.div_ceil(a) * a
}

/// Byte offsets of the tables from the start of the buffer.
struct Offsets {
    xsdt: usize,
    xsdt_len: usize,
    fadt: usize,
    dsdt: usize,
    dsdt_len: usize,
    madt: usize,
    madt_len: usize,
    mcfg: Option<usize>,
    mcfg_len: usize,
    bhcn: Option<usize>,
    bhcn_len: usize,
    end: usize,
}

fn offsets(platform: &PartitionPlatform<'_>) -> Offsets {
    let has_mcfg = !platform.pci_segments.is_empty();
    let has_bhcn = !platform.connections.is_empty();
    let xsdt_entries = 2 + usize::from(has_mcfg) + usize::from(has_bhcn);
    let xsdt = align_up(RSDP_LEN);
    let xsdt_len = HEADER_LEN + 8 * xsdt_entries;
    let fadt = align_up(xsdt + xsdt_len);
    let dsdt = align_up(fadt + FADT_LEN);
    let dsdt_len = HEADER_LEN + if platform.polled_uart.is_some() { POLLED_UART_AML_LEN } else { 0 };
    let madt = align_up(dsdt + dsdt_len);
    let madt_len = MADT_FIXED_LEN
        + platform.vcpu_apic_ids.iter().map(|&id| processor_entry_len(id)).sum::<usize>()
        + IO_APIC_LEN * platform.io_apics.len();
    let mut end = madt + madt_len;
    let mcfg_len = MCFG_FIXED_LEN + MCFG_ALLOCATION_LEN * platform.pci_segments.len();
    let mcfg = has_mcfg.then(|| {
        let at = align_up(end);
        end = at + mcfg_len;
        at
    });
    let bhcn_len = HEADER_LEN + BHCN_ENTRY_LEN * platform.connections.len();
    let bhcn = has_bhcn.then(|| {
        let at = align_up(end);
        end = at + bhcn_len;
        at
    });
    Offsets { xsdt, xsdt_len, fadt, dsdt, dsdt_len, madt, madt_len, mcfg, mcfg_len, bhcn, bhcn_len, end }
}

const fn processor_entry_len(apic_id: u32) -> usize {
    if apic_id <= MAX_XAPIC_ENTRY_ID { LOCAL_APIC_LEN } else { LOCAL_X2APIC_LEN }
}

fn check(platform: &PartitionPlatform<'_>) -> Result<(), AcpiError> {
    let ids = platform.vcpu_apic_ids;
    if ids.is_empty() {
        return Err(AcpiError::NoVcpus);
    }
    if ids.len() > MAX_VCPUS {
        return Err(AcpiError::TooManyVcpus(ids.len()));
    }
    if platform.io_apics.len() > MAX_IO_APICS || platform.pci_segments.len() > MAX_PCI_SEGMENTS {
        return Err(AcpiError::TooManyDevices);
    }
    if platform.connections.len() > MAX_CONNECTIONS {
        return Err(AcpiError::TooManyConnections(platform.connections.len()));
    }
    for (i, &id) in ids.iter().enumerate() {
        if id == u32::MAX {
            return Err(AcpiError::InvalidApicId(id));
        }
        if ids[..i].contains(&id) {
            return Err(AcpiError::DuplicateApicId(id));
        }
    }
    if platform.pci_segments.iter().any(|s| s.end_bus < s.start_bus) {
        return Err(AcpiError::InvalidPciSegment);
    }
    Ok(())
}

/// The most bytes [`write_tables`] needs for any platform it accepts ([`MAX_VCPUS`] vCPUs
/// with x2APIC entries, [`MAX_IO_APICS`], [`MAX_PCI_SEGMENTS`], [`MAX_CONNECTIONS`]): a
/// fixed reservation that always fits (8020 bytes).
pub const MAX_TABLES_SIZE: usize = align_up(RSDP_LEN)
    + align_up(HEADER_LEN + 8 * 4)
    + align_up(FADT_LEN)
    + align_up(HEADER_LEN + POLLED_UART_AML_LEN)
    + align_up(MADT_FIXED_LEN + LOCAL_X2APIC_LEN * MAX_VCPUS + IO_APIC_LEN * MAX_IO_APICS)
    + align_up(MCFG_FIXED_LEN + MCFG_ALLOCATION_LEN * MAX_PCI_SEGMENTS)
    + HEADER_LEN
    + BHCN_ENTRY_LEN * MAX_CONNECTIONS;

/// The number of bytes [`write_tables`] needs for `platform`: what the caller reserves.
pub fn tables_size(platform: &PartitionPlatform<'_>) -> Result<usize, AcpiError> {
    check(platform)?;
    Ok(offsets(platform).end)
}

/// Writes the ACPI tables describing `platform` at the start of `buf`, which the partition
/// sees at guest-physical address `base_gpa`; the RSDP comes first, at `base_gpa`. Bytes of
/// `buf` past [`AcpiLayout::size`] are left as they were. On error nothing is written.
pub fn write_tables(buf: &mut [u8], base_gpa: u64, platform: &PartitionPlatform<'_>) -> Result<AcpiLayout, AcpiError> {
    check(platform)?;
    if !base_gpa.is_multiple_of(ALIGNMENT) {
        return Err(AcpiError::MisalignedBase(base_gpa));
    }
    let o = offsets(platform);
    if base_gpa.checked_add(o.end as u64).is_none() {
        return Err(AcpiError::AddressOverflow);
    }
    let Some(out) = buf.get_mut(..o.end) else {
        return Err(AcpiError::BufferTooSmall { needed: o.end, available: buf.len() });
    };
    out.fill(0);
    let gpa = |offset: usize| base_gpa + offset as u64;

    let mut w = Writer { buf: out };
    write_fadt(&mut w, o.fadt, gpa(o.dsdt), platform);
    write_header(&mut w, o.dsdt, *b"DSDT", o.dsdt_len, DSDT_REVISION);
    if let Some(base) = platform.polled_uart {
        w.buf[o.dsdt + HEADER_LEN..o.dsdt_len + o.dsdt].copy_from_slice(&polled_uart_aml(base));
    }
    write_madt(&mut w, o.madt, o.madt_len, platform);
    if let Some(mcfg) = o.mcfg {
        write_mcfg(&mut w, mcfg, o.mcfg_len, platform.pci_segments);
    }
    if let Some(bhcn) = o.bhcn {
        write_bhcn(&mut w, bhcn, o.bhcn_len, platform.connections);
    }
    write_header(&mut w, o.xsdt, *b"XSDT", o.xsdt_len, XSDT_REVISION);
    // 5.2.8: an array of 64-bit physical addresses of the other description tables.
    let mut entry = o.xsdt + HEADER_LEN;
    for table in [Some(o.fadt), Some(o.madt), o.mcfg, o.bhcn].into_iter().flatten() {
        w.u64(entry, gpa(table));
        entry += 8;
    }
    for (at, len) in [(o.fadt, FADT_LEN), (o.dsdt, o.dsdt_len), (o.madt, o.madt_len), (o.xsdt, o.xsdt_len)] {
        w.set_table_checksum(at, len);
    }
    if let Some(mcfg) = o.mcfg {
        w.set_table_checksum(mcfg, o.mcfg_len);
    }
    if let Some(bhcn) = o.bhcn {
        w.set_table_checksum(bhcn, o.bhcn_len);
    }
    write_rsdp(&mut w, gpa(o.xsdt));

    Ok(AcpiLayout {
        rsdp: base_gpa,
        xsdt: gpa(o.xsdt),
        fadt: gpa(o.fadt),
        dsdt: gpa(o.dsdt),
        madt: gpa(o.madt),
        mcfg: o.mcfg.map(gpa),
        bhcn: o.bhcn.map(gpa),
        size: o.end,
    })
}

/// Little-endian stores into the buffer, whose length the layout was checked against.
struct Writer<'b> {
    buf: &'b mut [u8],
}

impl Writer<'_> {
    fn bytes(&mut self, at: usize, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }
    fn u8(&mut self, at: usize, v: u8) {
        self.bytes(at, &[v]);
    }
    fn u16(&mut self, at: usize, v: u16) {
        self.bytes(at, &v.to_le_bytes());
    }
    fn u32(&mut self, at: usize, v: u32) {
        self.bytes(at, &v.to_le_bytes());
    }
    fn u64(&mut self, at: usize, v: u64) {
        self.bytes(at, &v.to_le_bytes());
    }
    /// Sets the byte at `at + checksum_at` so that the `len` bytes from `at` sum to zero.
    fn set_checksum(&mut self, at: usize, len: usize, checksum_at: usize) {
        self.u8(at + checksum_at, 0);
        let sum = self.buf.get(at..at + len).map_or(0, checksum);
        self.u8(at + checksum_at, 0u8.wrapping_sub(sum));
    }
    /// 5.2.6: the table header's Checksum (offset 9) makes the entire table sum to zero.
    fn set_table_checksum(&mut self, at: usize, len: usize) {
        self.set_checksum(at, len, 9);
    }
}

/// The 8-bit sum of `bytes`: zero for a table (or RSDP part) whose checksum is right.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b))
}

/// RSDP (5.2.5.3). RsdtAddress stays 0: there is no RSDT, and an OS that reads
/// a revision 2 RSDP uses the XSDT (5.2.5.3: "XsdtAddress ... used by OSPM").
fn write_rsdp(w: &mut Writer<'_>, xsdt_gpa: u64) {
    w.bytes(0, b"RSD PTR ");
    w.bytes(9, &OEM_ID);
    w.u8(15, RSDP_REVISION);
    w.u32(20, RSDP_LEN as u32); // Length of the whole RSDP.
    w.u64(24, xsdt_gpa);
    // Checksum (offset 8) covers the first 20 bytes (the ACPI 1.0 part); Extended Checksum
    // (offset 32) the whole structure, the first checksum included.
    w.set_checksum(0, 20, 8);
    w.set_checksum(0, RSDP_LEN, 32);
}

/// System description table header (5.2.6); the checksum is set last.
fn write_header(w: &mut Writer<'_>, at: usize, signature: [u8; 4], len: usize, revision: u8) {
    w.bytes(at, &signature);
    w.u32(at + 4, len as u32);
    w.u8(at + 8, revision);
    w.bytes(at + 10, &OEM_ID);
    w.bytes(at + 16, &OEM_TABLE_ID);
    w.u32(at + 24, REVISION_OF_GENERATOR);
    w.bytes(at + 28, &CREATOR_ID);
    w.u32(at + 32, REVISION_OF_GENERATOR);
}

/// FADT (5.2.9). Every field not written stays zero, which in hardware-reduced
/// mode means absent: FIRMWARE_CTRL and X_FIRMWARE_CTRL (no FACS, 5.2.10), SCI_INT,
/// SMI_CMD and the ACPI enable values (nothing to hand over), the PM1/PM2/PM timer/GPE
/// blocks and their X_ forms (Linux reads no PM timer port), the sleep registers (no
/// sleep states), Preferred_PM_Profile (unspecified) and the 32-bit DSDT field (X_DSDT
/// is used instead; 5.2.9 lets only one of the two be non-zero).
fn write_fadt(w: &mut Writer<'_>, at: usize, dsdt_gpa: u64, platform: &PartitionPlatform<'_>) {
    write_header(w, at, *b"FACP", FADT_LEN, FADT_REVISION);
    w.u16(at + 96, P_LVL2_LAT_NONE);
    w.u16(at + 98, P_LVL3_LAT_NONE);
    let mut boot_arch = iapc_boot_arch::VGA_NOT_PRESENT | iapc_boot_arch::CMOS_RTC_NOT_PRESENT;
    if platform.isa_devices {
        boot_arch |= iapc_boot_arch::LEGACY_DEVICES;
    }
    w.u16(at + 109, boot_arch);
    let mut flags = fadt_flags::WBINVD
        | fadt_flags::PWR_BUTTON
        | fadt_flags::SLP_BUTTON
        | fadt_flags::FIX_RTC
        | fadt_flags::HEADLESS
        | fadt_flags::FORCE_APIC_PHYSICAL_DESTINATION_MODE
        | fadt_flags::HW_REDUCED_ACPI;
    if let Some(reset) = platform.reset_register {
        flags |= fadt_flags::RESET_REG_SUP;
        // RESET_REG (offset 116): a GAS (5.2.3.2) for one byte in System I/O space.
        w.u8(at + 116, GAS_SYSTEM_IO);
        w.u8(at + 117, 8); // Register Bit Width
        w.u8(at + 118, 0); // Register Bit Offset
        w.u8(at + 119, GAS_ACCESS_BYTE);
        w.u64(at + 120, u64::from(reset.port));
        w.u8(at + 128, reset.value); // RESET_VALUE
    }
    w.u32(at + 112, flags);
    w.u8(at + 131, FADT_MINOR_REVISION);
    w.u64(at + 140, dsdt_gpa); // X_DSDT
}

/// MADT (5.2.12): Local Interrupt Controller Address, Flags = 0 (PCAT_COMPAT
/// clear: no dual 8259 to disable), then one processor entry per vCPU and the I/O APICs.
/// No Local APIC NMI entries (5.2.12.7): Linux only checks that such an entry names LINT1
/// (acpi_parse_lapic_nmi) and programs LINT1 as NMI on the boot CPU regardless.
fn write_madt(w: &mut Writer<'_>, at: usize, len: usize, platform: &PartitionPlatform<'_>) {
    write_header(w, at, *b"APIC", len, MADT_REVISION);
    w.u32(at + 36, LOCAL_APIC_ADDRESS);
    w.u32(at + 40, 0);
    let mut entry = at + MADT_FIXED_LEN;
    for (index, &apic_id) in platform.vcpu_apic_ids.iter().enumerate() {
        if let (Ok(id), Ok(uid)) = (u8::try_from(apic_id), u8::try_from(index))
            && apic_id <= MAX_XAPIC_ENTRY_ID
        {
            // Processor Local APIC (5.2.12.2): Type 0, Length 8, ACPI
            // Processor UID, APIC ID, Flags.
            w.u8(entry, 0);
            w.u8(entry + 1, LOCAL_APIC_LEN as u8);
            w.u8(entry + 2, uid);
            w.u8(entry + 3, id);
            w.u32(entry + 4, PROCESSOR_ENABLED);
            entry += LOCAL_APIC_LEN;
        } else {
            // Processor Local x2APIC (5.2.12.12): Type 9, Length 16, 2 reserved
            // bytes, X2APIC ID, Flags, ACPI Processor UID.
            w.u8(entry, 9);
            w.u8(entry + 1, LOCAL_X2APIC_LEN as u8);
            w.u32(entry + 4, apic_id);
            w.u32(entry + 8, PROCESSOR_ENABLED);
            w.u32(entry + 12, index as u32);
            entry += LOCAL_X2APIC_LEN;
        }
    }
    for io_apic in platform.io_apics {
        // I/O APIC (5.2.12.3): Type 1, Length 12, I/O APIC ID, reserved,
        // I/O APIC Address, Global System Interrupt Base.
        w.u8(entry, 1);
        w.u8(entry + 1, IO_APIC_LEN as u8);
        w.u8(entry + 2, io_apic.id);
        w.u32(entry + 4, io_apic.address);
        w.u32(entry + 8, io_apic.gsi_base);
        entry += IO_APIC_LEN;
    }
}

/// MCFG (PCI Firmware Specification 3.2, 4.1.2, Tables 4-2 and 4-3): header, 8 reserved
/// bytes, then per segment: base address, segment group, start bus, end bus, 4 reserved.
fn write_mcfg(w: &mut Writer<'_>, at: usize, len: usize, segments: &[PciSegment]) {
    write_header(w, at, *b"MCFG", len, MCFG_REVISION);
    let mut entry = at + MCFG_FIXED_LEN;
    for s in segments {
        w.u64(entry, s.ecam_base);
        w.u16(entry + 8, s.segment);
        w.u8(entry + 10, s.start_bus);
        w.u8(entry + 11, s.end_bus);
        entry += MCFG_ALLOCATION_LEN;
    }
}

/// BHCN: the header, then one [`Connection`] per connection (its doc has the layout).
fn write_bhcn(w: &mut Writer<'_>, at: usize, len: usize, connections: &[Connection]) {
    write_header(w, at, BHCN_SIGNATURE, len, BHCN_REVISION);
    let mut entry = at + HEADER_LEN;
    for c in connections {
        let mut bytes = [0u8; BHCN_ENTRY_LEN];
        c.encode(&mut bytes);
        w.bytes(entry, &bytes);
        entry += BHCN_ENTRY_LEN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_abi::boot_info::name_field;
    use std::vec;
    use std::vec::Vec;

    const BASE: u64 = 0xE_0000;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// Writes the tables into a buffer of garbage and returns it with the layout.
    fn write(platform: &PartitionPlatform<'_>) -> (Vec<u8>, AcpiLayout) {
        let mut buf = vec![0xA5u8; 0x4000];
        let layout = write_tables(&mut buf, BASE, platform).unwrap();
        (buf, layout)
    }

    /// The table at `gpa`: checks its signature, that its checksum is right and that its
    /// length fits; returns its bytes.
    fn table<'b>(buf: &'b [u8], gpa: u64, signature: &[u8; 4]) -> &'b [u8] {
        let at = (gpa - BASE) as usize;
        assert_eq!(&buf[at..at + 4], signature);
        let len = u32_at(buf, at + 4) as usize;
        let t = &buf[at..at + len];
        assert_eq!(checksum(t), 0, "{} checksum", std::str::from_utf8(signature).unwrap());
        assert_eq!(&t[10..16], b"BULKHD");
        assert_eq!(&t[16..24], b"BULKHEAD");
        t
    }

    /// The MADT's interrupt controller structures as (type, bytes).
    fn madt_entries(madt: &[u8]) -> Vec<(u8, &[u8])> {
        let mut entries = Vec::new();
        let mut at = MADT_FIXED_LEN;
        while at < madt.len() {
            let len = madt[at + 1] as usize;
            assert!(len >= 2 && at + len <= madt.len(), "entry overruns the MADT");
            entries.push((madt[at], &madt[at..at + len]));
            at += len;
        }
        entries
    }

    #[test]
    fn a_partition_gets_buses_0_to_its_last_functions_bus_and_at_least_bus_1() {
        let seg = |buses: u16, on: &[u8]| PciSegment::for_functions(0xb000_0000, buses, 0, on.iter().copied());
        let bus_range = |buses: u16, on: &[u8]| seg(buses, on).map(|s| (s.start_bus, s.end_bus));
        assert_eq!(bus_range(256, &[0]), Some((0, 1)), "bus 0 alone still gets bus 1 for Linux's scan");
        assert_eq!(bus_range(256, &[0, 3, 2]), Some((0, 3)));
        assert_eq!(bus_range(1, &[0]), Some((0, 0)), "a one-bus window");
        assert_eq!(bus_range(4, &[9]), Some((0, 3)), "never past the window");
        assert_eq!(bus_range(256, &[]), None, "no function");
        assert_eq!(bus_range(0, &[0]), None, "no bus");
        assert_eq!(seg(256, &[0]).unwrap().window(), (0xb000_0000, 2 << 20));
        let s = PciSegment { ecam_base: 0xe000_0000, segment: 1, start_bus: 2, end_bus: 4 };
        assert_eq!(s.window(), (0xe020_0000, 3 << 20));
    }

    #[test]
    fn rsdp_points_to_an_xsdt_listing_fadt_and_madt() {
        let (buf, layout) = write(&PartitionPlatform::new(&[0, 1]));
        assert_eq!(layout.rsdp, BASE);
        let rsdp = &buf[..RSDP_LEN];
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(checksum(&rsdp[..20]), 0, "ACPI 1.0 checksum");
        assert_eq!(checksum(rsdp), 0, "extended checksum");
        assert_eq!(rsdp[15], 2, "revision");
        assert_eq!(u32_at(rsdp, 16), 0, "no RSDT");
        assert_eq!(u32_at(rsdp, 20), 36, "length");
        assert_eq!(u64_at(rsdp, 24), layout.xsdt);

        let xsdt = table(&buf, layout.xsdt, b"XSDT");
        assert_eq!(xsdt.len(), HEADER_LEN + 16);
        assert_eq!(u64_at(xsdt, 36), layout.fadt);
        assert_eq!(u64_at(xsdt, 44), layout.madt);
        assert_eq!(layout.mcfg, None);

        for gpa in [layout.rsdp, layout.xsdt, layout.fadt, layout.dsdt, layout.madt] {
            assert_eq!(gpa % ALIGNMENT, 0);
        }
        let madt_len = table(&buf, layout.madt, b"APIC").len();
        assert_eq!(layout.size, (layout.madt - BASE) as usize + madt_len);
    }

    #[test]
    fn madt_has_one_enabled_entry_per_vcpu_x2apic_from_255() {
        let ids = [0, 7, 254, 255, 0x1_0000];
        let (buf, layout) = write(&PartitionPlatform::new(&ids));
        let madt = table(&buf, layout.madt, b"APIC");
        assert_eq!(madt[8], MADT_REVISION);
        assert_eq!(u32_at(madt, 36), 0xFEE0_0000, "local APIC address");
        assert_eq!(u32_at(madt, 40), 0, "no PCAT_COMPAT: no 8259");
        let entries = madt_entries(madt);
        assert_eq!(entries.len(), ids.len(), "no I/O APIC, no NMI entries");
        for (index, ((kind, e), &id)) in entries.iter().zip(&ids).enumerate() {
            if id <= 254 {
                assert_eq!((*kind, e.len()), (0, 8), "Processor Local APIC for {id}");
                assert_eq!(e[2] as usize, index, "UID");
                assert_eq!(u32::from(e[3]), id);
                assert_eq!(u32_at(e, 4), 1, "enabled");
            } else {
                assert_eq!((*kind, e.len()), (9, 16), "Processor Local x2APIC for {id}");
                assert_eq!(u16_at(e, 2), 0, "reserved");
                assert_eq!(u32_at(e, 4), id);
                assert_eq!(u32_at(e, 8), 1, "enabled");
                assert_eq!(u32_at(e, 12) as usize, index, "UID");
            }
        }
    }

    #[test]
    fn fadt_is_hardware_reduced_and_says_what_is_absent() {
        let (buf, layout) = write(&PartitionPlatform::new(&[0]));
        let fadt = table(&buf, layout.fadt, b"FACP");
        assert_eq!(fadt.len(), 276);
        assert_eq!((fadt[8], fadt[131]), (6, 4), "FADT 6.4");
        let flags = u32_at(fadt, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 19), 0, "FORCE_APIC_PHYSICAL_DESTINATION_MODE");
        assert_eq!(flags & (1 << 18), 0, "not the cluster model");
        assert_eq!(flags & (1 << 10), 0, "no reset register");
        let boot_arch = u16_at(fadt, 109);
        assert_eq!(boot_arch & (1 << 0), 0, "no ISA devices");
        assert_eq!(boot_arch & (1 << 1), 0, "no 8042");
        assert_ne!(boot_arch & (1 << 2), 0, "VGA not present");
        assert_eq!(boot_arch & (1 << 3), 0, "MSI not declared unsupported");
        assert_ne!(boot_arch & (1 << 5), 0, "CMOS RTC not present");
        assert_eq!(u32_at(fadt, 36), 0, "no FACS");
        assert_eq!(u64_at(fadt, 132), 0, "no X_FACS");
        assert_eq!(u32_at(fadt, 40), 0, "32-bit DSDT unused");
        assert_eq!(u64_at(fadt, 140), layout.dsdt, "X_DSDT");
        assert_eq!(u16_at(fadt, 46), 0, "no SCI");
        assert_eq!(u32_at(fadt, 48), 0, "no SMI command port");
        assert!(fadt[56..96].iter().all(|&b| b == 0), "no PM1, PM2, PM timer or GPE blocks");
        assert!(fadt[148..268].iter().all(|&b| b == 0), "no X_ blocks or sleep registers");
        assert!(u16_at(fadt, 96) > 100 && u16_at(fadt, 98) > 1000, "no C2, no C3");
    }

    #[test]
    fn dsdt_is_an_empty_definition_block() {
        let (buf, layout) = write(&PartitionPlatform::new(&[0]));
        let dsdt = table(&buf, layout.dsdt, b"DSDT");
        assert_eq!(dsdt.len(), HEADER_LEN);
        assert_eq!(dsdt[8], 2, "64-bit AML integers");
    }

    #[test]
    fn isa_devices_reset_register_io_apics_and_mcfg_when_given() {
        let io_apics = [IoApic { id: 3, address: 0xFEC0_0000, gsi_base: 0 }];
        let segments = [
            PciSegment { ecam_base: 0xB000_0000, segment: 0, start_bus: 0, end_bus: 0xFF },
            PciSegment { ecam_base: 0x1_0000_0000, segment: 1, start_bus: 2, end_bus: 3 },
        ];
        let platform = PartitionPlatform {
            io_apics: &io_apics,
            pci_segments: &segments,
            isa_devices: true,
            reset_register: Some(ResetRegister { port: 0xCF9, value: 0x06 }),
            ..PartitionPlatform::new(&[1, 0])
        };
        let (buf, layout) = write(&platform);

        let fadt = table(&buf, layout.fadt, b"FACP");
        assert_ne!(u16_at(fadt, 109) & 1, 0, "LEGACY_DEVICES");
        assert_ne!(u32_at(fadt, 112) & (1 << 10), 0, "RESET_REG_SUP");
        assert_eq!(&fadt[116..120], &[1, 8, 0, 1], "System I/O, 8 bits, byte access");
        assert_eq!(u64_at(fadt, 120), 0xCF9);
        assert_eq!(fadt[128], 0x06);

        let madt = table(&buf, layout.madt, b"APIC");
        let entries = madt_entries(madt);
        assert_eq!(entries.len(), 3);
        let (kind, e) = entries[2];
        assert_eq!((kind, e.len(), e[2]), (1, 12, 3));
        assert_eq!((u32_at(e, 4), u32_at(e, 8)), (0xFEC0_0000, 0));

        let mcfg_gpa = layout.mcfg.unwrap();
        let xsdt = table(&buf, layout.xsdt, b"XSDT");
        assert_eq!(xsdt.len(), HEADER_LEN + 24);
        assert_eq!(u64_at(xsdt, 52), mcfg_gpa);
        let mcfg = table(&buf, mcfg_gpa, b"MCFG");
        assert_eq!(mcfg.len(), 44 + 32);
        assert_eq!(u64_at(mcfg, 44 + 16), 0x1_0000_0000);
        assert_eq!((u16_at(mcfg, 44 + 24), mcfg[44 + 26], mcfg[44 + 27]), (1, 2, 3));
        assert_eq!(layout.size, (mcfg_gpa - BASE) as usize + mcfg.len());
    }

    #[test]
    fn bhcn_lists_the_connections_and_only_when_there_are_some() {
        let (buf, layout) = write(&PartitionPlatform::new(&[0]));
        assert_eq!(layout.bhcn, None);
        let xsdt = table(&buf, layout.xsdt, b"XSDT");
        assert_eq!(xsdt.len(), 36 + 16, "FADT and MADT only");
        let connections = [
            Connection {
                id: 0x12_3456,
                name: name_field("to-control"),
                kind: ConnectionKind::Message { queue_depth: 8 },
                incoming: false,
                sint: 2,
            },
            Connection { id: 7, name: [0; 32], kind: ConnectionKind::Event { flag: 300 }, incoming: true, sint: 3 },
        ];
        let platform = PartitionPlatform { connections: &connections, ..PartitionPlatform::new(&[0, 1]) };
        let (buf, layout) = write(&platform);
        let bhcn_gpa = layout.bhcn.unwrap();
        let xsdt = table(&buf, layout.xsdt, b"XSDT");
        assert_eq!(u64_at(xsdt, 36 + 16), bhcn_gpa, "the XSDT lists it last");
        let bhcn = table(&buf, bhcn_gpa, b"BHCN");
        assert_eq!(bhcn[8], BHCN_REVISION);
        assert_eq!(bhcn.len(), 36 + 2 * BHCN_ENTRY_LEN);
        let e = &bhcn[36..36 + BHCN_ENTRY_LEN];
        assert_eq!((u32_at(e, 0), e[4], e[5], e[6], e[7]), (0x12_3456, 0, 0, 2, 0));
        assert_eq!((u16_at(e, 8), u16_at(e, 10), u32_at(e, 12)), (0, 8, 0));
        assert_eq!(&e[16..26], b"to-control");
        assert!(e[26..48].iter().all(|&b| b == 0));
        let e = &bhcn[36 + BHCN_ENTRY_LEN..];
        assert_eq!((u32_at(e, 0), e[4], e[5], e[6]), (7, 1, 1, 3));
        assert_eq!((u16_at(e, 8), u16_at(e, 10)), (300, 0));
        assert!(e[16..48].iter().all(|&b| b == 0), "no name");
        assert_eq!(layout.size, (bhcn_gpa - BASE) as usize + bhcn.len());
    }

    #[test]
    fn writes_only_its_own_bytes_and_tables_size_says_how_many() {
        let platform = PartitionPlatform::new(&[0, 1, 2]);
        let (buf, layout) = write(&platform);
        assert_eq!(tables_size(&platform), Ok(layout.size));
        assert!(buf[layout.size..].iter().all(|&b| b == 0xA5));
        let mut exact = vec![0u8; layout.size];
        assert_eq!(write_tables(&mut exact, BASE, &platform), Ok(layout));
        assert_eq!(&exact[..], &buf[..layout.size], "the same bytes whatever the buffer held");
    }

    #[test]
    fn refuses_what_cannot_be_described() {
        let mut buf = vec![0u8; 0x4000];
        let mut refuse = |base: u64, p: PartitionPlatform<'_>| {
            buf.fill(0x5A);
            let e = write_tables(&mut buf, base, &p).unwrap_err();
            assert!(buf.iter().all(|&b| b == 0x5A), "nothing written on {e:?}");
            e
        };
        assert_eq!(refuse(BASE, PartitionPlatform::new(&[])), AcpiError::NoVcpus);
        let many: Vec<u32> = (0..=MAX_VCPUS as u32).collect();
        assert_eq!(refuse(BASE, PartitionPlatform::new(&many)), AcpiError::TooManyVcpus(MAX_VCPUS + 1));
        assert_eq!(refuse(BASE, PartitionPlatform::new(&[0, u32::MAX])), AcpiError::InvalidApicId(u32::MAX));
        assert_eq!(refuse(BASE, PartitionPlatform::new(&[4, 5, 4])), AcpiError::DuplicateApicId(4));
        assert_eq!(refuse(BASE + 8, PartitionPlatform::new(&[0])), AcpiError::MisalignedBase(BASE + 8));
        assert_eq!(refuse(u64::MAX - 15, PartitionPlatform::new(&[0])), AcpiError::AddressOverflow);
        let bad_segment = [PciSegment { ecam_base: 0, segment: 0, start_bus: 1, end_bus: 0 }];
        let p = PartitionPlatform { pci_segments: &bad_segment, ..PartitionPlatform::new(&[0]) };
        assert_eq!(refuse(BASE, p), AcpiError::InvalidPciSegment);
        let io_apics = [IoApic { id: 0, address: 0, gsi_base: 0 }; MAX_IO_APICS + 1];
        let p = PartitionPlatform { io_apics: &io_apics, ..PartitionPlatform::new(&[0]) };
        assert_eq!(refuse(BASE, p), AcpiError::TooManyDevices);
        let connections =
            [Connection { id: 1, name: [0; 32], kind: ConnectionKind::Event { flag: 0 }, incoming: false, sint: 0 };
                MAX_CONNECTIONS + 1];
        let p = PartitionPlatform { connections: &connections, ..PartitionPlatform::new(&[0]) };
        assert_eq!(refuse(BASE, p), AcpiError::TooManyConnections(MAX_CONNECTIONS + 1));

        let platform = PartitionPlatform::new(&[0, 1]);
        let needed = tables_size(&platform).unwrap();
        let mut small = vec![0x5Au8; needed - 1];
        assert_eq!(
            write_tables(&mut small, BASE, &platform),
            Err(AcpiError::BufferTooSmall { needed, available: needed - 1 })
        );
        assert!(small.iter().all(|&b| b == 0x5A));
        // The largest platform: every vCPU with an x2APIC entry, every I/O APIC and segment.
        let most: Vec<u32> = (1000..1000 + MAX_VCPUS as u32).collect();
        let io_apics = [IoApic { id: 0, address: 0, gsi_base: 0 }; MAX_IO_APICS];
        let segments = [PciSegment { ecam_base: 0, segment: 0, start_bus: 0, end_bus: 0 }; MAX_PCI_SEGMENTS];
        let connections = [Connection {
            id: 0xFF_FFFF,
            name: name_field("a-connection-name-of-32-bytes-xx"),
            kind: ConnectionKind::Message { queue_depth: 64 },
            incoming: true,
            sint: 15,
        }; MAX_CONNECTIONS];
        let largest = PartitionPlatform {
            io_apics: &io_apics,
            pci_segments: &segments,
            polled_uart: Some(0x3F8),
            connections: &connections,
            ..PartitionPlatform::new(&most)
        };
        assert_eq!(tables_size(&largest), Ok(MAX_TABLES_SIZE));
        let mut buf = vec![0u8; MAX_TABLES_SIZE];
        assert_eq!(write_tables(&mut buf, BASE, &largest).map(|l| l.size), Ok(MAX_TABLES_SIZE));
        const { assert!(MAX_TABLES_SIZE <= 8020, "under 8 KiB") };
    }

    mod randomized {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_valid_platform_gives_consistent_tables(
                ids in proptest::collection::hash_set(prop_oneof![0u32..300, 0u32..u32::MAX], 1..=MAX_VCPUS),
                page in 0u64..0x1_0000_0000,
            ) {
                let ids: Vec<u32> = ids.into_iter().collect();
                let base = page * ALIGNMENT;
                let platform = PartitionPlatform::new(&ids);
                let mut buf = vec![0u8; 0x2000];
                let layout = write_tables(&mut buf, base, &platform).unwrap();
                prop_assert!(layout.size <= MAX_TABLES_SIZE);
                prop_assert_eq!(checksum(&buf[..20]), 0);
                prop_assert_eq!(checksum(&buf[..36]), 0);
                for gpa in [layout.xsdt, layout.fadt, layout.dsdt, layout.madt] {
                    let at = (gpa - base) as usize;
                    let len = u32_at(&buf, at + 4) as usize;
                    prop_assert_eq!(checksum(&buf[at..at + len]), 0);
                }
                let at = (layout.madt - base) as usize;
                let madt = &buf[at..at + u32_at(&buf, at + 4) as usize];
                let listed: Vec<u32> = madt_entries(madt)
                    .iter()
                    .map(|(kind, e)| if *kind == 0 { u32::from(e[3]) } else { u32_at(e, 4) })
                    .collect();
                prop_assert_eq!(listed, ids);
            }

            #[test]
            fn never_panics(ids in proptest::collection::vec(any::<u32>(), 0..300),
                            base in any::<u64>(), len in 0usize..0x1000) {
                let mut buf = vec![0u8; len];
                let _ = write_tables(&mut buf, base, &PartitionPlatform::new(&ids));
            }
        }
    }

    #[test]
    fn polled_uart_in_the_dsdt() {
        let aml = polled_uart_aml(0x3F8);
        // DeviceOp, then a one-byte PkgLength covering the rest.
        assert_eq!(&aml[..2], &[0x5B, 0x82]);
        assert_eq!(usize::from(aml[2]), aml.len() - 2);
        assert_eq!(&aml[3..13], b"\\\x2E_SB_COM1");
        // _HID: EISA ID "PNP0501" decoded as ACPICA does (three 5-bit letters + 0x40).
        assert_eq!(&aml[13..18], &[0x08, b'_', b'H', b'I', b'D']);
        let id = u32::from_be_bytes([aml[19], aml[20], aml[21], aml[22]]);
        let letter = |shift: u32| char::from(((id >> shift) & 0x1F) as u8 + 0x40);
        assert_eq!((letter(26), letter(21), letter(16), id & 0xFFFF), ('P', 'N', 'P', 0x0501));
        // _CRS: a 10-byte buffer, PkgLength covering it, ending in the end tag.
        assert_eq!(&aml[23..28], b"\x08_CRS");
        assert_eq!((aml[28], usize::from(aml[29]), aml[30], aml[31]), (0x11, aml.len() - 29, 0x0A, 10));
        assert_eq!(&aml[32..], &[0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08, 0x79, 0x00]);

        let ids = [0, 1];
        let platform = PartitionPlatform { polled_uart: Some(0x3F8), ..PartitionPlatform::new(&ids) };
        let mut buf = vec![0u8; MAX_TABLES_SIZE];
        let layout = write_tables(&mut buf, 0xE0000, &platform).unwrap();
        let dsdt = table(&buf, layout.dsdt, b"DSDT");
        assert_eq!(dsdt.len(), HEADER_LEN + POLLED_UART_AML_LEN);
        assert_eq!(&dsdt[HEADER_LEN..], &aml);
        assert_eq!(dsdt.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0, "checksum");
        assert!(layout.size <= MAX_TABLES_SIZE);
    }
}
