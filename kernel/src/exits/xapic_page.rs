//! The xAPIC register page (SDM Vol. 3A 11.4.1, Table "Local APIC Register Address Map"),
//! emulated for a partition whose vCPU is in xAPIC mode.
//!
//! The page at the APIC base (0xFEE00000, `bulkhead_virt::apic_base`) is never mapped in
//! the second-level tables, so every access exits as a nested page fault, on both
//! backends alike. The hypervisor reads the faulting instruction through the guest's own
//! paging (`bulkhead_virt::guest_walk`), decodes it (`bulkhead_virt::mmio_decode`: the
//! 32-bit MOV loads and stores compilers emit; anything else faults the partition with a
//! log line naming the bytes), performs it and moves RIP past it.
//!
//! A register at offset `o` is the x2APIC register MSR `0x800 + (o >> 4)` (11.12.1.2) and
//! goes through the same rules as the MSR path (`lapic::apic_register_write`: the ICR and
//! LVT checks), with the xAPIC-format differences: the ID in bits 31:24; LDR and DFR
//! writable (kept per vCPU, `lapic/`); the ICR as two 32-bit halves, where writing the
//! low half sends (11.6.1); no SELF IPI register. Bits a register does not define are
//! dropped before the value reaches the physical APIC (in x2APIC mode they would be #GP
//! there; an xAPIC ignores them). A refused IPI or LVT value is dropped (an MMIO store
//! cannot fault) with the same log line as on the MSR path. Offsets inside a register's
//! 16-byte slot other than its first 4 bytes read 0 and ignore writes.
//!
//! In x2APIC or disabled mode the page behaves as a globally disabled xAPIC (11.12.2): reads
//! return all ones, writes are dropped.

use crate::backend::Backend;
use crate::exits::action::Action;
use crate::exits::mmio::{self, MmioRegion};
use crate::lapic;
use crate::lapic::access as apic_access;
use crate::partition::Partition;
use bulkhead_virt::apic_base::{DEFAULT_BASE, Mode};
use bulkhead_virt::exit::AccessKind;

const PAGE: u64 = 0x1000;
const ID: u32 = 0x802;
const EOI: u32 = 0x80b;
const LDR: u32 = 0x80d;
const DFR: u32 = 0x80e;
const ESR: u32 = 0x828;
const ICR_LOW: u32 = 0x830;
const ICR_HIGH: u32 = 0x831;
const SELF_IPI: u32 = 0x83f;

/// Whether a guest-physical address lies in the xAPIC page.
pub fn contains(gpa: u64) -> bool {
    (DEFAULT_BASE..DEFAULT_BASE + PAGE).contains(&gpa)
}

/// A nested page fault in the xAPIC page: performs the access for the partition.
pub fn access<B: Backend>(partition: &Partition, backend: &mut B, gpa: u64, kind: AccessKind) -> Action {
    mmio::emulate(partition, backend, gpa, kind, &mut XapicPage)
}

/// The page's registers: 32-bit accesses only, as the decoder takes them.
struct XapicPage;

impl MmioRegion for XapicPage {
    fn read(&mut self, _partition: &Partition, gpa: u64, _size: u8) -> u64 {
        u64::from(read((gpa - DEFAULT_BASE) as u32))
    }

    fn write(&mut self, partition: &Partition, gpa: u64, _size: u8, value: u64) {
        write(partition, (gpa - DEFAULT_BASE) as u32, value as u32);
    }
}

/// The x2APIC MSR of a register's first four bytes at `offset`, if `offset` is one.
fn register(offset: u32) -> Option<u32> {
    (offset & 0xf == 0).then_some(0x800 + (offset >> 4))
}

/// A 32-bit read of the page at `offset`.
fn read(offset: u32) -> u32 {
    if lapic::mode() != Mode::XApic {
        return u32::MAX;
    }
    let Some(msr) = register(offset) else { return 0 };
    match msr {
        // The 8-bit xAPIC ID (the x2APIC ID's low byte) in bits 31:24 (11.12.5.1).
        ID => (apic_access::read(ID).unwrap_or(0) as u32 & 0xff) << 24,
        LDR => lapic::xapic_ldr(),
        DFR => lapic::xapic_dfr(),
        ICR_LOW => lapic::xapic_icr().0,
        ICR_HIGH => lapic::xapic_icr().1,
        SELF_IPI => 0,
        msr => apic_access::read(msr).unwrap_or(0) as u32,
    }
}

/// A 32-bit write of `value` to the page at `offset`.
fn write(partition: &Partition, offset: u32, value: u32) {
    if lapic::mode() != Mode::XApic {
        return;
    }
    let Some(msr) = register(offset) else { return };
    match msr {
        LDR => lapic::set_xapic_ldr(value),
        DFR => lapic::set_xapic_dfr(value),
        ICR_HIGH => lapic::set_xapic_icr_high(value),
        ICR_LOW => {
            lapic::set_xapic_icr_low(value);
            let destination = lapic::xapic_icr().1 >> 24;
            // Delivery status (bit 12) is read-only.
            let icr = u64::from(value & !(1 << 12)) | (u64::from(destination) << 32);
            crate::lapic::apic_register_write(partition, apic_access::ICR, icr);
        }
        // Any value signals EOI / re-arms the ESR in xAPIC mode; x2APIC wants 0 (11.12.1.3).
        EOI | ESR => {
            crate::lapic::apic_register_write(partition, msr, 0);
        }
        msr => {
            if let Some(bits) = defined_bits(msr) {
                crate::lapic::apic_register_write(partition, msr, u64::from(value & bits));
            }
        }
    }
}

/// The bits software may write in a register (SDM 11.5.1 Figure "Local Vector Table",
/// 11.5.4, 11.8.3.1, 11.9); `None` for read-only or absent registers (writes dropped).
fn defined_bits(msr: u32) -> Option<u32> {
    const VECTOR_MODE_MASK: u32 = 0x107ff; // vector, delivery mode, mask
    Some(match msr {
        0x808 => 0xff,                                             // TPR
        0x80f => 0x1ff,                                            // SVR: vector, software enable
        0x82f | 0x833 | 0x834 => VECTOR_MODE_MASK,                 // CMCI, thermal, performance
        0x835 | 0x836 => VECTOR_MODE_MASK | (1 << 13) | (1 << 15), // LINT0/1: polarity, trigger
        0x837 => 0x100ff,                                          // error: vector, mask
        0x832 => {
            // Timer: vector, mask, mode (TSC-deadline only where the CPU has it).
            let tsc_deadline = if crate::cpu::capabilities::has_tsc_deadline() { 1 << 18 } else { 0 };
            0x300ff | tsc_deadline
        }
        0x838 => u32::MAX, // timer initial count
        0x83e => 0b1011,   // divide configuration
        _ => return None,
    })
}
