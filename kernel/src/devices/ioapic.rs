//! The board's IOAPICs (`BoardConfig::ioapics`), owned by the hypervisor; each partition
//! that owns a device with a line interrupt (GSI) programs its own pins through a virtual
//! IOAPIC page (docs/devices.md, "Interrupts").
//!
//! - At boot every redirection entry of every IOAPIC is masked ([`init`]), and a
//!   partition's pins are masked again whenever it starts ([`reset_partition`]).
//! - A partition that owns a GSI sees a register window at the board IOAPIC's address,
//!   never mapped in its EPT/NPT (the configuration refuses memory there, rule
//!   `memory-overlap-guest`), so each access exits and is performed here ([`access`]):
//!   its own IOREGSEL; the ID and version registers as the hardware has them; the entries
//!   of its own pins, written through `bulkhead_virt::ioapic::program` (fixed delivery to
//!   one of its cores' APIC IDs in physical mode, vectors 0x20-0xFE; NMI, SMI, INIT and
//!   ExtINT refused, the pin left masked) and read back from the hardware (Remote IRR and
//!   delivery status live); every other pin reads masked and ignores writes (logged at a
//!   limited rate). The EOI register (version 0x20) is forwarded for a vector of the
//!   partition's own pins that no other pin uses.
//! - Delivery costs no exit: the interrupt goes from the IOAPIC to the owner's core, where
//!   external interrupts are the guest's on both backends. A level-triggered line's Remote
//!   IRR is cleared by the EOI the partition writes to its local APIC, which the hardware
//!   broadcasts to the IOAPICs (the x2APIC EOI passes through where the x2APIC does;
//!   elsewhere `lapic/` performs it on the xAPIC, which broadcasts the same way).
//!
//! IOREGSEL/IOWIN is a two-step access shared by every partition and the hypervisor: one
//! lock per IOAPIC covers each step pair.

use crate::backend::Backend;
use crate::config::PARTITIONS;
use crate::config::SYSTEM;
use crate::exits::action::Action;
use crate::exits::mmio::{self, MmioRegion};
use crate::log::{info, warn};
use crate::partition::Partition;
use crate::partition::counters::RateLimit;
use bulkhead_board::tables::{Interrupt, IoApic as BoardIoApic};
use bulkhead_drivers::ioapic::{IoApic, Mmio};
use bulkhead_virt::exit::AccessKind;
use bulkhead_virt::ioapic::{self as policy, Register};
use core::sync::atomic::{AtomicU8, Ordering};
use spin::mutex::TicketMutex;

/// Most IOAPICs a board may have here (boards list one or two).
const MAX_IOAPICS: usize = 8;

/// One lock per IOAPIC around its IOREGSEL/IOWIN pairs.
static LOCKS: [TicketMutex<()>; MAX_IOAPICS] = [const { TicketMutex::new(()) }; MAX_IOAPICS];
/// Each partition's IOREGSEL of each IOAPIC (its own: the physical one is the hypervisor's).
static SELECT: [[AtomicU8; MAX_IOAPICS]; PARTITIONS] =
    [const { [const { AtomicU8::new(0) }; MAX_IOAPICS] }; PARTITIONS];
/// Refused or ignored accesses, per partition.
static REFUSED: [RateLimit; PARTITIONS] = [const { RateLimit::new() }; PARTITIONS];
/// Entries changed on the way to the hardware (retargeted, lowest priority), per partition.
static ADJUSTED: [RateLimit; PARTITIONS] = [const { RateLimit::new() }; PARTITIONS];

fn ioapics() -> impl Iterator<Item = (usize, &'static BoardIoApic)> {
    SYSTEM.board.ioapics.iter().take(MAX_IOAPICS).enumerate()
}

/// Runs `f` on IOAPIC `index` under its lock.
fn with<R>(index: usize, f: impl FnOnce(&mut IoApic<Mmio>) -> R) -> R {
    let _guard = LOCKS[index].lock();
    // SAFETY: the board's IOAPIC register window (the 32-bit MMIO hole is identity-mapped
    // uncached, `boot/paging.rs`); only reached here, under this IOAPIC's lock.
    let mut apic = IoApic::new(unsafe { Mmio::new(SYSTEM.board.ioapics[index].base) });
    f(&mut apic)
}

/// Pins the hardware has and the board file describes (the fewer of the two).
fn pins(index: usize, board: &BoardIoApic) -> u8 {
    let (_, max_entry) = with(index, |a| a.version());
    board.pins.min(max_entry.saturating_add(1))
}

/// Masks every redirection entry of every IOAPIC (the boot CPU, before any partition runs):
/// whatever the firmware programmed (the timer's ExtINT, legacy lines) reaches no core.
pub fn init() {
    for (index, board) in ioapics() {
        let (version, max_entry) = with(index, |a| a.version());
        if u16::from(max_entry) + 1 != u16::from(board.pins) {
            warn!(
                "{=str}: the hardware has {=u16} redirection entries, the board file says {=u8}",
                board.name,
                u16::from(max_entry) + 1,
                board.pins
            );
        }
        let pins = pins(index, board);
        for pin in 0..pins {
            with(index, |a| a.mask(pin));
        }
        info!(
            "{=str}: version {=u8:#x} at {=u64:#x}, GSIs {=u32}-{=u32}, {=u8} pins masked",
            board.name,
            version,
            board.base,
            board.gsi_base,
            board.gsi_base + u32::from(pins.max(1)) - 1,
            pins
        );
    }
}

/// The GSIs of the partition's devices.
fn gsis(partition: &Partition) -> impl Iterator<Item = u32> {
    partition
        .config()
        .devices
        .iter()
        .flat_map(|d| SYSTEM.board.devices[d.0 as usize].interrupts.iter())
        .filter_map(|i| if let Interrupt::Line(gsi) = i { Some(*gsi) } else { None })
}

/// Whether the partition owns pin `pin` of IOAPIC `board`.
fn owns(partition: &Partition, board: &BoardIoApic, pin: u8) -> bool {
    let gsi = board.gsi_base + u32::from(pin);
    gsis(partition).any(|g| g == gsi)
}

/// Whether the partition owns a pin of IOAPIC `board`.
fn owns_any(partition: &Partition, board: &BoardIoApic) -> bool {
    gsis(partition).any(|g| g >= board.gsi_base && g - board.gsi_base < u32::from(board.pins))
}

/// Masks the partition's pins (at every start of the partition: what it programmed before
/// a restart must not deliver into the new run).
pub fn reset_partition(partition: &Partition) {
    for (index, board) in ioapics() {
        for gsi in gsis(partition).filter(|&g| g >= board.gsi_base && g - board.gsi_base < u32::from(board.pins)) {
            with(index, |a| a.mask((gsi - board.gsi_base) as u8));
        }
        SELECT[partition.config().id.0 as usize][index].store(0, Ordering::Relaxed);
    }
}

/// The IOAPIC whose register page holds `gpa`, if the partition owns a pin of it.
fn window(partition: &Partition, gpa: u64) -> Option<usize> {
    ioapics().find(|(_, b)| (b.base..b.base + policy::WINDOW).contains(&gpa) && owns_any(partition, b)).map(|(i, _)| i)
}

/// Whether `gpa` lies in the virtual IOAPIC page of an IOAPIC the partition has pins on.
pub fn contains(partition: &Partition, gpa: u64) -> bool {
    window(partition, gpa).is_some()
}

/// A nested page fault in a virtual IOAPIC page: performs the access for the partition.
pub fn access<B: Backend>(partition: &Partition, backend: &mut B, gpa: u64, kind: AccessKind) -> Action {
    let Some(index) = window(partition, gpa) else {
        return Action::Fault(crate::partition::Fault::MemoryAccess { gpa, write: kind.write, execute: kind.execute });
    };
    mmio::emulate(partition, backend, gpa, kind, &mut Window { index })
}

/// One IOAPIC's register page as a partition sees it.
struct Window {
    index: usize,
}

impl Window {
    fn board(&self) -> &'static BoardIoApic {
        &SYSTEM.board.ioapics[self.index]
    }

    fn select(&self, partition: &Partition) -> &'static AtomicU8 {
        &SELECT[partition.config().id.0 as usize][self.index]
    }

    /// The 32-bit register at the slot of `offset` (a multiple of 0x10).
    fn read_slot(&self, partition: &Partition, slot: u64) -> u32 {
        match slot {
            policy::IOREGSEL => u32::from(self.select(partition).load(Ordering::Relaxed)),
            policy::IOWIN => {
                let board = self.board();
                match Register::selected(self.select(partition).load(Ordering::Relaxed), board.pins) {
                    Register::Id => with(self.index, |a| a.read(policy::REG_ID)),
                    Register::Version => with(self.index, |a| a.read(policy::REG_VERSION)),
                    Register::Arbitration => with(self.index, |a| a.read(policy::REG_ARBITRATION)),
                    Register::Entry { pin, high } => {
                        let entry = if owns(partition, board, pin) {
                            with(self.index, |a| a.entry(pin))
                        } else {
                            policy::MASKED_ENTRY
                        };
                        if high { (entry >> 32) as u32 } else { entry as u32 }
                    }
                    Register::None => 0,
                }
            }
            // The EOI register is write-only; the rest of the page is not decoded.
            _ => 0,
        }
    }

    fn write_slot(&self, partition: &Partition, slot: u64, value: u32) {
        match slot {
            policy::IOREGSEL => self.select(partition).store(value as u8, Ordering::Relaxed),
            policy::IOWIN => {
                let board = self.board();
                match Register::selected(self.select(partition).load(Ordering::Relaxed), board.pins) {
                    Register::Entry { pin, high } if owns(partition, board, pin) => {
                        self.write_entry(partition, pin, high, value)
                    }
                    Register::Entry { pin, .. } => {
                        self.refused(partition, "write to the entry of a pin it does not own", pin, value)
                    }
                    Register::Id => self.refused(partition, "write to the IOAPIC ID", 0, value),
                    // Read-only registers; writes to no register are dropped as by hardware.
                    Register::Version | Register::Arbitration | Register::None => {}
                }
            }
            policy::EOI => self.eoi(partition, value as u8),
            _ => {}
        }
    }

    /// One dword of an owned pin's entry: the whole entry checked, then written.
    fn write_entry(&self, partition: &Partition, pin: u8, high: bool, value: u32) {
        let cores: heapless::Vec<u32, { crate::cpu::percpu::MAX_CPUS }> =
            SYSTEM.vcpu_apic_ids(partition.config()).collect();
        let programmed = with(self.index, |a| {
            let requested = policy::merge_half(a.entry(pin), high, value);
            let programmed = policy::program(requested, &cores);
            a.set_entry(pin, programmed.entry);
            programmed
        });
        let gsi = self.board().gsi_base + u32::from(pin);
        if let Some(refusal) = programmed.refused
            && let Some(n) = REFUSED[partition.config().id.0 as usize].hit()
        {
            let (what, detail) = match refusal {
                policy::Refusal::DeliveryMode(mode) => (mode.name(), 0),
                policy::Refusal::Vector(vector) => ("vector", vector),
            };
            warn!(
                "partition {=str}: IOAPIC entry of GSI {=u32} refused ({=str} {=u8:#x}), the pin stays masked (#{=u32})",
                partition.name(),
                gsi,
                what,
                detail,
                n
            );
        }
        let adjusted = programmed.retargeted_from.is_some() || programmed.lowest_priority;
        if adjusted && let Some(n) = ADJUSTED[partition.config().id.0 as usize].hit() {
            let (asked, logical) = programmed.retargeted_from.map_or((0, false), |d| (d.id, d.logical));
            info!(
                "partition {=str}: IOAPIC entry of GSI {=u32}: {=str}{=str}destination {=u8:#x}{=str} -> APIC ID {=u8} (#{=u32})",
                partition.name(),
                gsi,
                if programmed.lowest_priority { "lowest priority -> fixed; " } else { "" },
                if programmed.retargeted_from.is_some() { "" } else { "kept " },
                asked,
                if logical { " (logical)" } else { "" },
                policy::Entry::decode(programmed.entry).destination,
                n
            );
        }
    }

    /// A write to the EOI register: forwarded where the IOAPIC has one, for a vector one
    /// of the partition's pins uses and no other pin does (it clears Remote IRR of every
    /// entry with the vector).
    fn eoi(&self, partition: &Partition, vector: u8) {
        let board = self.board();
        let forwarded = with(self.index, |a| {
            let (version, max_entry) = a.version();
            if version < policy::VERSION_WITH_EOI {
                return false;
            }
            let mut own = false;
            for pin in 0..board.pins.min(max_entry.saturating_add(1)) {
                let entry = a.entry(pin);
                if entry as u8 == vector && entry & policy::bits::LEVEL != 0 {
                    if !owns(partition, board, pin) {
                        return false;
                    }
                    own = true;
                }
            }
            if own {
                a.eoi(vector);
            }
            own
        });
        if !forwarded {
            self.refused(
                partition,
                "EOI register write for a vector of no level-triggered pin of its own",
                0,
                u32::from(vector),
            );
        }
    }

    fn refused(&self, partition: &Partition, what: &str, pin: u8, value: u32) {
        if let Some(n) = REFUSED[partition.config().id.0 as usize].hit() {
            warn!(
                "partition {=str}: {=str}: {=str} (pin {=u8}, value {=u32:#x}) ignored (#{=u32})",
                partition.name(),
                self.board().name,
                what,
                pin,
                value,
                n
            );
        }
    }
}

impl MmioRegion for Window {
    fn read(&mut self, partition: &Partition, gpa: u64, size: u8) -> u64 {
        let offset = gpa - self.board().base;
        if offset & 0xf >= 4 {
            return 0; // the rest of a register's 16-byte slot is not decoded
        }
        policy::read_bytes(self.read_slot(partition, offset & !0xf), offset & 0xf, size)
    }

    fn write(&mut self, partition: &Partition, gpa: u64, size: u8, value: u64) {
        let offset = gpa - self.board().base;
        // The registers take aligned dword writes; IOREGSEL also a byte (its index is 8 bits).
        let aligned = offset & 0xf == 0 && (size == 4 || (offset == policy::IOREGSEL && size >= 1));
        if aligned {
            self.write_slot(partition, offset, value as u32);
        }
    }
}
