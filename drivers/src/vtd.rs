//! Intel VT-d DMA remapping hardware (one "DMAR unit", a DRHD of the ACPI DMAR table):
//! its register block, the root and context entries it reads from memory, and its fault
//! records. References: Intel Virtualization Technology for Directed I/O, Architecture
//! Specification (rev. 3.x / 4.x), cited below as "VT-d".
//!
//! Only legacy-mode translation is used (RTADDR_REG.TTM = 00b, VT-d 9.1 and 9.3): a
//! 4 KiB root table of 256 root entries (one per bus) points at 4 KiB context tables of
//! 256 context entries (one per device:function), each naming a domain and the root of its
//! second-level page tables. Requests carry no PASID here. The register layouts and the
//! entry encodings are pure functions with host tests; [`Registers`] is the thin MMIO layer.

/// Register offsets in the register block (VT-d 11.4, Table "Register Map").
pub mod reg {
    /// Version (32-bit).
    pub const VER: usize = 0x00;
    /// Capability (64-bit, VT-d 11.4.2).
    pub const CAP: usize = 0x08;
    /// Extended capability (64-bit, VT-d 11.4.3).
    pub const ECAP: usize = 0x10;
    /// Global command (32-bit, VT-d 11.4.4.1).
    pub const GCMD: usize = 0x18;
    /// Global status (32-bit, VT-d 11.4.4.2).
    pub const GSTS: usize = 0x1c;
    /// Root table address (64-bit, VT-d 11.4.5).
    pub const RTADDR: usize = 0x20;
    /// Context command (64-bit, VT-d 11.4.6.1).
    pub const CCMD: usize = 0x28;
    /// Fault status (32-bit, VT-d 11.4.9.1).
    pub const FSTS: usize = 0x34;
    /// Fault event control (32-bit, VT-d 11.4.9.2).
    pub const FECTL: usize = 0x38;
    /// Fault event data (32-bit, VT-d 11.4.9.3).
    pub const FEDATA: usize = 0x3c;
    /// Fault event address (32-bit, VT-d 11.4.9.4).
    pub const FEADDR: usize = 0x40;
    /// Fault event upper address (32-bit, VT-d 11.4.9.5).
    pub const FEUADDR: usize = 0x44;
    /// IOTLB invalidate register, relative to ECAP.IRO * 16 (VT-d 11.4.8.1).
    pub const IOTLB_FROM_IRO: usize = 0x08;
}

/// Global command / status bits (VT-d 11.4.4): the same positions in GCMD and GSTS.
pub mod gcmd {
    /// Translation enable (GCMD.TE / GSTS.TES).
    pub const TE: u32 = 1 << 31;
    /// Set root table pointer (one-shot; GSTS.RTPS).
    pub const SRTP: u32 = 1 << 30;
    /// Write buffer flush (one-shot; GSTS.WBFS).
    pub const WBF: u32 = 1 << 27;
    /// Interrupt remapping enable (GCMD.IRE / GSTS.IRES).
    pub const IRE: u32 = 1 << 25;
    /// The one-shot command bits (SRTP, SFL, WBF, SIRTP): a GCMD write built from GSTS
    /// must leave them out, or it would repeat their command (VT-d 11.4.4.1, the note on
    /// updating one bit at a time).
    pub const ONE_SHOT: u32 = (1 << 30) | (1 << 29) | (1 << 27) | (1 << 24);
}

/// The value to write to GCMD to set (`on`) or clear one persistent `bit`, or to issue one
/// one-shot command, given the current GSTS: the other persistent bits keep their state.
pub const fn gcmd_value(gsts: u32, bit: u32, on: bool) -> u32 {
    let keep = gsts & !gcmd::ONE_SHOT;
    if on { keep | bit } else { keep & !bit }
}

/// The capability register (VT-d 11.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability(pub u64);

impl Capability {
    /// Domain ID bits: ND (2:0) gives 2^(4 + 2·ND) domains.
    pub const fn domains(self) -> u32 {
        1 << (4 + 2 * (self.0 & 7) as u32)
    }
    /// RWBF (bit 4): software must flush the write buffer after changing tables.
    pub const fn required_write_buffer_flush(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// CM (bit 7): caching mode (not-present entries may be cached; domain 0 reserved).
    pub const fn caching_mode(self) -> bool {
        self.0 & (1 << 7) != 0
    }
    /// SAGAW (12:8): supported adjusted guest address widths; bit 1 = 39-bit (3-level),
    /// bit 2 = 48-bit (4-level), bit 3 = 57-bit (5-level).
    pub const fn sagaw(self) -> u8 {
        ((self.0 >> 8) & 0x1f) as u8
    }
    /// MGAW (21:16) plus one: the maximum guest address width in bits.
    pub const fn max_guest_address_width(self) -> u8 {
        ((self.0 >> 16) & 0x3f) as u8 + 1
    }
    /// FRO (33:24): offset of the first fault-recording register, in bytes (the field
    /// counts 16-byte units).
    pub const fn fault_recording_offset(self) -> usize {
        (((self.0 >> 24) & 0x3ff) as usize) * 16
    }
    /// SLLPS (37:34): second-level large pages; bit 0 = 2 MiB, bit 1 = 1 GiB.
    pub const fn large_pages(self) -> u8 {
        ((self.0 >> 34) & 0xf) as u8
    }
    /// NFR (47:40) plus one: how many fault-recording registers there are.
    pub const fn fault_records(self) -> usize {
        ((self.0 >> 40) & 0xff) as usize + 1
    }
}

/// The extended capability register (VT-d 11.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedCapability(pub u64);

impl ExtendedCapability {
    /// C (bit 0): the hardware snoops the processor caches when it walks tables; without
    /// it software writes tables back from the caches itself.
    pub const fn coherent(self) -> bool {
        self.0 & 1 != 0
    }
    /// IRO (17:8): offset of the IOTLB registers, in bytes (the field counts 16-byte units).
    pub const fn iotlb_offset(self) -> usize {
        (((self.0 >> 8) & 0x3ff) as usize) * 16
    }
}

/// Paging depth of a domain's second-level tables and the context entry's AW field for it
/// (VT-d 9.3, "AW": 001b = 39-bit, 3 levels; 010b = 48-bit, 4 levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Levels {
    /// 39-bit guest address width, walk starts at the PDPT level.
    Three,
    /// 48-bit guest address width, walk starts at the PML4 level.
    Four,
}

impl Levels {
    /// The deepest walk the unit supports of the ones this driver builds: 4 levels when
    /// SAGAW bit 2 is set, else 3 levels (SAGAW bit 1), else none.
    pub const fn choose(cap: Capability) -> Option<Levels> {
        if cap.sagaw() & (1 << 2) != 0 {
            Some(Levels::Four)
        } else if cap.sagaw() & (1 << 1) != 0 {
            Some(Levels::Three)
        } else {
            None
        }
    }
    /// The context entry's AW value.
    pub const fn aw(self) -> u64 {
        match self {
            Levels::Three => 1,
            Levels::Four => 2,
        }
    }
    /// The guest address width in bits: DMA addresses must lie below 2^bits.
    pub const fn bits(self) -> u32 {
        match self {
            Levels::Three => 39,
            Levels::Four => 48,
        }
    }
}

/// A root entry (VT-d 9.1, legacy mode): present (bit 0) and the context-table pointer
/// (bits 63:12) in the low quadword; the high quadword is reserved (zero).
pub const fn root_entry(context_table: u64) -> [u64; 2] {
    [(context_table & !0xfff) | 1, 0]
}

/// A context entry (VT-d 9.3, legacy mode) for translation type 00b ("untranslated
/// requests are translated through the second-level tables; translated and translation
/// requests are blocked"), fault processing on (FPD = 0):
/// low quadword: P (bit 0), TT (3:2) = 0, SLPTPTR (63:12); high quadword: AW (2:0),
/// DID (23:8).
pub const fn context_entry(second_level_root: u64, levels: Levels, domain: u16) -> [u64; 2] {
    [(second_level_root & !0xfff) | 1, levels.aw() | ((domain as u64) << 8)]
}

/// Index of a bus's root entry and a device:function's context entry.
pub const fn devfn(device: u8, function: u8) -> usize {
    ((device as usize & 0x1f) << 3) | (function as usize & 7)
}

/// Context command: globally invalidate the context cache (VT-d 11.4.6.1: ICC bit 63,
/// CIRG 62:61 = 01b global).
pub const CCMD_GLOBAL_INVALIDATE: u64 = (1 << 63) | (1 << 61);
/// CCMD.ICC: set while the invalidation is in progress.
pub const CCMD_BUSY: u64 = 1 << 63;
/// IOTLB invalidate: globally (VT-d 11.4.8.1: IVT bit 63, IIRG 61:60 = 01b global), with
/// the write buffers drained (DR bit 49, DW bit 48).
pub const IOTLB_GLOBAL_INVALIDATE: u64 = (1 << 63) | (1 << 60) | (1 << 49) | (1 << 48);
/// IOTLB_REG.IVT: set while the invalidation is in progress.
pub const IOTLB_BUSY: u64 = 1 << 63;

/// Fault status bits (VT-d 11.4.9.1).
pub mod fsts {
    /// Primary fault overflow (RW1C): a fault was dropped because every record was full.
    pub const PFO: u32 = 1 << 0;
    /// Primary pending fault (RO): at least one fault record holds a fault.
    pub const PPF: u32 = 1 << 1;
    /// Fault record index (15:8): the first record holding a fault when PPF is set.
    pub const fn fault_record_index(fsts: u32) -> usize {
        ((fsts >> 8) & 0xff) as usize
    }
}

/// FECTL.IM (bit 31): fault events masked. FECTL.IP (bit 30): an event is pending.
pub const FECTL_IM: u32 = 1 << 31;

/// The fault event message (FEDATA/FEADDR, VT-d 5.1.6 and 11.4.9.3-4; the MSI format of
/// SDM Vol. 3A 11.11): an NMI (delivery mode 100b in data bits 10:8) to the local APIC
/// with `apic_id` in physical destination mode (address bit 2 = 0, redirection hint 0).
/// The vector of an NMI is ignored; 2 is written for clarity. Returns (data, address).
pub const fn nmi_message(apic_id: u8) -> (u32, u32) {
    (2 | (0b100 << 8), 0xfee0_0000 | ((apic_id as u32) << 12))
}

/// One decoded fault record (VT-d 10.4.14 / 11.4.11.1, "Fault Recording Registers"):
/// bits 63:12 fault info (the page address), 79:64 source ID, 103:96 fault reason,
/// bit 126 type (1 = read, 0 = write), bit 127 fault (F).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRecord {
    /// Requester ID: bus (15:8), device (7:3), function (2:0).
    pub source_id: u16,
    /// The page address of the faulting request (bits 11:0 are not recorded).
    pub address: u64,
    /// A write request (false: read).
    pub write: bool,
    /// The fault reason code (VT-d Appendix A).
    pub reason: u8,
}

impl FaultRecord {
    /// Decodes a 128-bit record given as (low, high) quadwords; `None` when F is clear.
    pub const fn decode(low: u64, high: u64) -> Option<FaultRecord> {
        if high & (1 << 63) == 0 {
            return None;
        }
        Some(FaultRecord {
            source_id: high as u16,
            address: low & !0xfff,
            write: high & (1 << 62) == 0,
            reason: (high >> 32) as u8,
        })
    }

    /// Bus, device, function of the requester.
    pub const fn bdf(self) -> (u8, u8, u8) {
        ((self.source_id >> 8) as u8, ((self.source_id >> 3) & 0x1f) as u8, (self.source_id & 7) as u8)
    }
}

/// The F bit's position in the record's high quadword (written as 1 to clear the record).
pub const FAULT_RECORD_F: u64 = 1 << 63;

/// A short text for a fault reason code (VT-d Appendix A, non-recoverable faults of
/// legacy-mode translation).
pub const fn reason_text(reason: u8) -> &'static str {
    match reason {
        0x1 => "root entry not present",
        0x2 => "context entry not present",
        0x3 => "invalid context entry",
        0x4 => "address beyond the guest address width",
        0x5 => "write not allowed by the second-level tables",
        0x6 => "read not allowed by the second-level tables",
        0x7 => "second-level table address invalid",
        0x8 => "root table address invalid",
        0x9 => "context table address invalid",
        0xa => "reserved bit in a root entry",
        0xb => "reserved bit in a context entry",
        0xc => "reserved bit in a second-level entry",
        0xd => "translation type blocked by the context entry",
        _ => "other",
    }
}

/// The register block of one DMAR unit, reached by MMIO at `base` (identity-mapped,
/// uncached).
#[derive(Debug, Clone, Copy)]
pub struct Registers {
    base: u64,
}

impl Registers {
    /// # Safety
    /// `base` must be the physical address of a VT-d register block, identity-mapped
    /// uncached for the hypervisor, and 4 KiB large at least.
    pub const unsafe fn new(base: u64) -> Self {
        Registers { base }
    }

    /// The block's base address.
    pub const fn base(&self) -> u64 {
        self.base
    }

    /// Reads the 32-bit register at `offset`.
    pub fn read32(&self, offset: usize) -> u32 {
        // SAFETY: `new`'s contract: the block is mapped; registers are naturally aligned.
        unsafe { core::ptr::read_volatile((self.base + offset as u64) as *const u32) }
    }

    /// Writes the 32-bit register at `offset`.
    pub fn write32(&self, offset: usize, value: u32) {
        // SAFETY: as in `read32`.
        unsafe { core::ptr::write_volatile((self.base + offset as u64) as *mut u32, value) }
    }

    /// Reads the 64-bit register at `offset` (as two 32-bit reads, low first: VT-d 10.2
    /// allows either, and QEMU and hardware accept both).
    pub fn read64(&self, offset: usize) -> u64 {
        u64::from(self.read32(offset)) | (u64::from(self.read32(offset + 4)) << 32)
    }

    /// Writes the 64-bit register at `offset` with one 64-bit access: command registers
    /// (CCMD, IOTLB) act on the write of their upper half, which must then hold the
    /// whole command.
    pub fn write64(&self, offset: usize, value: u64) {
        // SAFETY: as in `read32`.
        unsafe { core::ptr::write_volatile((self.base + offset as u64) as *mut u64, value) }
    }

    /// Capability register.
    pub fn capability(&self) -> Capability {
        Capability(self.read64(reg::CAP))
    }

    /// Extended capability register.
    pub fn extended_capability(&self) -> ExtendedCapability {
        ExtendedCapability(self.read64(reg::ECAP))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 7.2's intel-iommu with default options (aw-bits=39), as hw/i386/intel_iommu.c
    /// composes it: ND=2 (256 domains), SAGAW bit 1, MGAW 38, FRO 0x22 (offset 0x220),
    /// SLLPS 2M+1G, NFR 0 (one record), PSI, MAMV 0x3f.
    const QEMU_CAP: u64 = 2 | (0b10 << 8) | (38 << 16) | (0x22 << 24) | (0b11 << 34) | (1 << 39) | (0x3f << 48);

    #[test]
    fn capability_fields() {
        let cap = Capability(QEMU_CAP);
        assert_eq!(cap.domains(), 256);
        assert_eq!(cap.sagaw(), 0b00010);
        assert_eq!(cap.max_guest_address_width(), 39);
        assert_eq!(cap.fault_recording_offset(), 0x220);
        assert_eq!(cap.large_pages(), 0b11);
        assert_eq!(cap.fault_records(), 1);
        assert!(!cap.required_write_buffer_flush());
        assert!(!cap.caching_mode());
        assert_eq!(Levels::choose(cap), Some(Levels::Three));
        assert_eq!(Levels::choose(Capability(QEMU_CAP | (0b110 << 8))), Some(Levels::Four));
        assert_eq!(Levels::choose(Capability(QEMU_CAP & !(0x1f << 8))), None);
        assert_eq!(Capability(0x7 | (3 << 40)).domains(), 1 << 18);
        assert_eq!(Capability(3 << 40).fault_records(), 4);
    }

    #[test]
    fn extended_capability_fields() {
        let ecap = ExtendedCapability(0x20 << 8 | 1);
        assert!(ecap.coherent());
        assert_eq!(ecap.iotlb_offset(), 0x200);
        assert!(!ExtendedCapability(0).coherent());
    }

    #[test]
    fn gcmd_keeps_persistent_bits_and_drops_one_shots() {
        let gsts = gcmd::TE | gcmd::SRTP | gcmd::IRE | gcmd::WBF;
        assert_eq!(gcmd_value(gsts, gcmd::SRTP, true), gcmd::TE | gcmd::IRE | gcmd::SRTP);
        assert_eq!(gcmd_value(gsts, gcmd::TE, false), gcmd::IRE);
        assert_eq!(gcmd_value(0, gcmd::TE, true), gcmd::TE);
    }

    #[test]
    fn entries() {
        assert_eq!(root_entry(0x12_3456_7000), [0x12_3456_7001, 0]);
        assert_eq!(root_entry(0x1fff), [0x1001, 0]);
        let ce = context_entry(0x40_1000, Levels::Three, 3);
        assert_eq!(ce, [0x40_1001, 0x301]);
        assert_eq!(context_entry(0x40_1000, Levels::Four, 0xffff), [0x40_1001, 0xff_ff02]);
        // TT (3:2) and FPD (1) stay clear: fault processing on, untranslated requests only.
        assert_eq!(ce[0] & 0xe, 0);
        assert_eq!(devfn(4, 0), 0x20);
        assert_eq!(devfn(0x1f, 7), 0xff);
    }

    #[test]
    fn invalidation_commands() {
        assert_eq!(CCMD_GLOBAL_INVALIDATE >> 59, 0b10100);
        assert_eq!(IOTLB_GLOBAL_INVALIDATE >> 57, 0b1001000);
        assert_eq!((IOTLB_GLOBAL_INVALIDATE >> 48) & 3, 3);
    }

    #[test]
    fn nmi_fault_event_message() {
        let (data, address) = nmi_message(2);
        assert_eq!((data >> 8) & 7, 0b100, "delivery mode NMI");
        assert_eq!(data & (1 << 15), 0, "edge");
        assert_eq!(address, 0xfee0_2000);
        assert_eq!(address & 0b1100, 0, "physical destination, no redirection hint");
    }

    #[test]
    fn fault_record_decoding() {
        // QEMU's record for a blocked write by 00:04.0 at 0x2102abc, reason 5.
        let low = 0x0210_2000;
        let high = (1u64 << 63) | (5u64 << 32) | 0x0020;
        let record = FaultRecord::decode(low, high).unwrap();
        assert_eq!(record, FaultRecord { source_id: 0x20, address: 0x210_2000, write: true, reason: 5 });
        assert_eq!(record.bdf(), (0, 4, 0));
        let read = FaultRecord::decode(0x1234_5678, (1 << 63) | (1 << 62) | (6 << 32) | 0xfd1b).unwrap();
        assert!(!read.write);
        assert_eq!(read.address, 0x1234_5000);
        assert_eq!(read.bdf(), (0xfd, 3, 3));
        assert_eq!(reason_text(read.reason), "read not allowed by the second-level tables");
        assert_eq!(FaultRecord::decode(low, high & !FAULT_RECORD_F), None);
        assert_eq!(reason_text(0x77), "other");
    }

    #[test]
    fn fault_status() {
        assert_eq!(fsts::fault_record_index(0x0302), 3);
        assert_eq!(fsts::PPF | fsts::PFO, 3);
    }
}
