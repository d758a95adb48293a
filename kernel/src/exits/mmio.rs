//! Emulated MMIO: a page the second-level tables never map, so that every access exits as
//! a nested page fault and the hypervisor performs it (the xAPIC page, [`super::xapic_page`];
//! further emulated register windows implement [`MmioRegion`] the same way).
//!
//! The hypervisor reads the faulting instruction through the guest's own paging
//! (`bulkhead_virt::guest_walk`), decodes it (`bulkhead_virt::mmio_decode`: the MOV loads
//! and stores compilers emit for a device register; anything else faults the partition
//! with a log line naming the bytes), hands the access to the region and moves RIP past
//! the instruction.

use crate::backend::Backend;
use crate::exits::action::Action;
use crate::partition::{Fault, Partition};
use bulkhead_board::tables;
use bulkhead_virt::exit::AccessKind;
use bulkhead_virt::guest_state::{ExecutionMode, GuestRegisters};
use bulkhead_virt::guest_walk::{PagingState, translate};
use bulkhead_virt::memory::{GuestMemory, MemoryError};
use bulkhead_virt::mmio_decode::{Access, CodeSize, Source, decode};

const PAGE: u64 = 0x1000;

/// A register window the hypervisor emulates for a partition.
pub trait MmioRegion {
    /// A read of `size` bytes (1, 2, 4 or 8) at `gpa`; the value in the low `size` bytes.
    fn read(&mut self, partition: &Partition, gpa: u64, size: u8) -> u64;
    /// A write of the low `size` bytes of `value` at `gpa`.
    fn write(&mut self, partition: &Partition, gpa: u64, size: u8, value: u64);
}

/// A nested page fault at `gpa` inside `region`: performs the access for the partition.
pub fn emulate<B: Backend>(
    partition: &Partition,
    backend: &mut B,
    gpa: u64,
    kind: AccessKind,
    region: &mut impl MmioRegion,
) -> Action {
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
    let unsupported = Action::Fault(Fault::MmioInstruction { gpa, bytes: u64::from_be_bytes(first) });
    let Ok(instruction) = decode(&bytes[..fetched], code) else {
        return unsupported;
    };
    let size = instruction.size;
    let mask = if size >= 8 { u64::MAX } else { (1u64 << (8 * u32::from(size))) - 1 };
    match instruction.access {
        Access::Load { register, zero_extend } => {
            let value = region.read(partition, gpa, size) & mask;
            let Some(slot) = register_slot(backend.registers(), register) else { return unsupported };
            // A 32-bit load and MOVZX zero-extend into the 64-bit register; 8- and 16-bit
            // MOVs keep the upper bits.
            *slot = if zero_extend { value } else { (*slot & !mask) | value };
        }
        Access::Store { source } => {
            let value = match source {
                Source::Immediate(value) => u64::from(value),
                Source::Register(register) => match register_slot(backend.registers(), register) {
                    Some(slot) => *slot,
                    None => return unsupported,
                },
            };
            region.write(partition, gpa, size, value & mask);
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
pub(crate) struct PartitionRam(pub(crate) &'static tables::Partition);

impl PartitionRam {
    /// A little-endian value of `size` (4 or 8) bytes at `gpa`: a page table entry, read
    /// whole with one aligned load as the processor's page walk reads it (the guest may
    /// change it meanwhile); byte by byte where it is not aligned.
    fn read_entry(&self, gpa: u64, size: usize) -> Result<u64, MemoryError> {
        let host = self.host(gpa, size as u64)?;
        if !host.is_multiple_of(size as u64) {
            let mut bytes = [0; 8];
            self.read(gpa, &mut bytes[..size])?;
            return Ok(u64::from_le_bytes(bytes));
        }
        // SAFETY: an aligned value inside the partition's RAM (`host`), identity-mapped.
        Ok(unsafe {
            if size == 8 {
                core::ptr::read_volatile(host as *const u64)
            } else {
                u64::from(core::ptr::read_volatile(host as *const u32))
            }
        })
    }

    /// The host address of `len` bytes at `gpa`, if they lie in one of the partition's
    /// memory regions.
    fn host(&self, gpa: u64, len: u64) -> Result<u64, MemoryError> {
        let region = self
            .0
            .memory
            .iter()
            .find(|r| gpa >= r.guest_base && gpa.checked_add(len).is_some_and(|end| end <= r.guest_base + r.size))
            .ok_or(MemoryError::OutOfRange { gpa, len })?;
        Ok(region.host_base + (gpa - region.guest_base))
    }
}

/// Reads for the instruction fetch and the page walk of an emulated MMIO access (the
/// xAPIC page's EOI on a CPU without x2APIC is the common one: every interrupt). A page
/// table entry is one aligned load and the instruction bytes one copy, where a byte loop
/// cost a hundred-odd instructions per access (`cargo xtask bench` `svm/hv-event-ping-pong`).
impl GuestMemory for PartitionRam {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let host = self.host(gpa, buf.len() as u64)?;
        // SAFETY: inside a host range the configuration gives this partition, which is
        // identity-mapped RAM (checked at boot). Its other vCPUs may change the bytes
        // meanwhile, which only changes what the emulation sees, as on hardware.
        unsafe { core::ptr::copy_nonoverlapping(host as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn read_u64(&self, gpa: u64) -> Result<u64, MemoryError> {
        self.read_entry(gpa, 8)
    }

    fn read_u32(&self, gpa: u64) -> Result<u32, MemoryError> {
        self.read_entry(gpa, 4).map(|value| value as u32)
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        Err(MemoryError::OutOfRange { gpa, len: data.len() as u64 })
    }

    fn fill(&mut self, gpa: u64, len: u64, _byte: u8) -> Result<(), MemoryError> {
        Err(MemoryError::OutOfRange { gpa, len })
    }
}
