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
use crate::lapic;
use crate::lapic::access as apic_access;
use crate::partition::{Fault, Partition};
use bulkhead_board::tables;
use bulkhead_virt::apic_base::{DEFAULT_BASE, Mode};
use bulkhead_virt::exit::AccessKind;
use bulkhead_virt::guest_state::{ExecutionMode, GuestRegisters};
use bulkhead_virt::guest_walk::{PagingState, translate};
use bulkhead_virt::memory::{GuestMemory, MemoryError};
use bulkhead_virt::mmio_decode::{Access, CodeSize, Source, decode};

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
    if kind.execute {
        return Action::Fault(Fault::MemoryAccess { gpa, write: false, execute: true });
    }
    let code = match backend.execution_mode() {
        ExecutionMode::Real => CodeSize::Bits16,
        ExecutionMode::Bits32 { .. } => CodeSize::Bits32,
        ExecutionMode::Bits64 { .. } => CodeSize::Bits64,
    };
    let mut bytes = [0u8; 15];
    let fetched = fetch(partition, backend, code, &mut bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    let unsupported = Action::Fault(Fault::XapicInstruction { gpa, bytes: u64::from_be_bytes(first) });
    let Ok(instruction) = decode(&bytes[..fetched], code) else {
        return unsupported;
    };
    let offset = (gpa - DEFAULT_BASE) as u32;
    match instruction.access {
        Access::Load { register } => {
            let value = read(offset);
            let Some(slot) = register_slot(backend.registers(), register) else { return unsupported };
            *slot = u64::from(value);
        }
        Access::Store { source } => {
            let value = match source {
                Source::Immediate(value) => value,
                Source::Register(register) => match register_slot(backend.registers(), register) {
                    Some(slot) => *slot as u32,
                    None => return unsupported,
                },
            };
            write(partition, offset, value);
        }
    }
    backend.advance_rip(instruction.length.into());
    Action::Resume { skip: false }
}

/// A general register by its encoding; RSP (4) lives in the VMCS / VMCB and is not taken
/// (no compiler addresses MMIO through a MOV to or from RSP).
fn register_slot(regs: &mut GuestRegisters, encoding: u8) -> Option<&mut u64> {
    Some(match encoding {
        0 => &mut regs.rax,
        1 => &mut regs.rcx,
        2 => &mut regs.rdx,
        3 => &mut regs.rbx,
        5 => &mut regs.rbp,
        6 => &mut regs.rsi,
        7 => &mut regs.rdi,
        8 => &mut regs.r8,
        9 => &mut regs.r9,
        10 => &mut regs.r10,
        11 => &mut regs.r11,
        12 => &mut regs.r12,
        13 => &mut regs.r13,
        14 => &mut regs.r14,
        15 => &mut regs.r15,
        _ => return None,
    })
}

/// Reads up to 15 instruction bytes at the guest's CS:RIP through its paging; returns how
/// many could be read (a page that does not translate ends them).
fn fetch<B: Backend>(partition: &Partition, backend: &mut B, code: CodeSize, bytes: &mut [u8; 15]) -> usize {
    let rip = backend.rip();
    let (cr3, cs_base) = backend.guest_cr3_and_cs_base();
    let linear = if code == CodeSize::Bits64 { rip } else { cs_base.wrapping_add(rip) & 0xffff_ffff };
    let paging = PagingState { cr0: backend.guest_cr0(), cr3, cr4: backend.guest_cr4(), efer: backend.guest_efer() };
    let memory = PartitionRam(partition.config());
    let mut done = 0;
    while done < bytes.len() {
        let at = linear.wrapping_add(done as u64);
        let in_page = ((PAGE - (at & (PAGE - 1))) as usize).min(bytes.len() - done);
        let Some(gpa) = translate(&memory, paging, at) else { break };
        if memory.read(gpa, &mut bytes[done..done + in_page]).is_err() {
            break;
        }
        done += in_page;
    }
    done
}

/// The partition's RAM for reading only, through the hypervisor's identity map of its host
/// ranges (other vCPUs of the partition may be running: volatile byte reads, no references
/// into their memory).
struct PartitionRam(&'static tables::Partition);

impl GuestMemory for PartitionRam {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        let region = self
            .0
            .memory
            .iter()
            .find(|r| gpa >= r.guest_base && gpa.checked_add(len).is_some_and(|end| end <= r.guest_base + r.size))
            .ok_or(MemoryError::OutOfRange { gpa, len })?;
        let host = region.host_base + (gpa - region.guest_base);
        for (i, byte) in buf.iter_mut().enumerate() {
            // SAFETY: inside a host range the configuration gives this partition, which is
            // identity-mapped RAM (checked at boot); a byte read cannot tear.
            *byte = unsafe { core::ptr::read_volatile((host + i as u64) as *const u8) };
        }
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        Err(MemoryError::OutOfRange { gpa, len: data.len() as u64 })
    }

    fn fill(&mut self, gpa: u64, len: u64, _byte: u8) -> Result<(), MemoryError> {
        Err(MemoryError::OutOfRange { gpa, len })
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
