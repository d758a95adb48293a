//! The partition's local APIC registers, reached the same way whatever the CPU has.
//!
//! Partitions always see an x2APIC (CPUID.1:ECX[21] set, IA32_APIC_BASE with EXTD set,
//! registers as MSRs 0x800-0x8ff): one interface on every board and backend. Where the
//! CPU has an x2APIC, the hypervisor runs it in x2APIC mode and the registers that need no
//! check pass straight through the MSR bitmap. Where it has only an xAPIC (QEMU 7.2 TCG,
//! Bochs `ryzen`), every x2APIC MSR exits and is performed here on the xAPIC's MMIO page,
//! at offset `(msr - 0x800) << 4` (SDM Vol. 3 11.12.1.2, Table 11-6), with the few
//! registers whose format differs converted: the ID (8 bits in bits 31:24 vs. 32 bits),
//! the logical destination (derived from the ID in x2APIC mode), the ICR (one 64-bit MSR
//! vs. two 32-bit registers) and SELF IPI (x2APIC only: an ICR write with the "self"
//! shorthand). The checks on ICR and LVT writes (`msr.rs`) apply to both paths alike.

use crate::log::warn;
use x86_64::registers::model_specific::Msr;

/// First and last x2APIC register MSR.
pub const X2APIC_MSRS: core::ops::RangeInclusive<u32> = 0x800..=0x8ff;
pub const ID: u32 = 0x802;
pub const EOI: u32 = 0x80b;
pub const LDR: u32 = 0x80d;
pub const ESR: u32 = 0x828;
pub const ICR: u32 = 0x830;
pub const SELF_IPI: u32 = 0x83f;
/// IA32_TSC_DEADLINE: an MSR in both modes (SDM 11.5.4.1).
pub const TSC_DEADLINE: u32 = 0x6e0;

/// x2APIC registers that exist and can be read (SDM Table 11-6): ID, version, TPR, PPR,
/// LDR, SVR, ISR/TMR/IRR, ESR, LVT CMCI, ICR, LVTs, timer counts and divide.
fn readable(msr: u32) -> bool {
    matches!(msr, 0x802 | 0x803 | 0x808 | 0x80a | 0x80d | 0x80f | 0x810..=0x828 | 0x82f..=0x839 | 0x83e)
}

/// x2APIC registers that can be written: TPR, EOI, SVR, ESR, LVTs, ICR, timer initial
/// count and divide, SELF IPI.
fn writable(msr: u32) -> bool {
    matches!(msr, 0x808 | 0x80b | 0x80f | 0x828 | 0x82f..=0x838 | 0x83e | 0x83f)
}

/// Whether the x2APIC MSRs are emulated on an xAPIC (the CPU has no x2APIC).
pub fn emulated() -> bool {
    !crate::smp::x2apic()
}

fn mmio(msr: u32) -> *mut u32 {
    (crate::smp::xapic_base() + (u64::from(msr - 0x800) << 4)) as *mut u32
}

fn mmio_read(msr: u32) -> u32 {
    // SAFETY: an existing xAPIC register of this core (callers check `readable`); the page
    // is identity-mapped uncached.
    unsafe { core::ptr::read_volatile(mmio(msr)) }
}

fn mmio_write(msr: u32, value: u32) {
    // SAFETY: an existing, writable xAPIC register of this core (callers check); the page
    // is identity-mapped uncached.
    unsafe { core::ptr::write_volatile(mmio(msr), value) }
}

/// Reads an x2APIC register of this core for the partition; `None` means #GP (a register
/// that does not exist or is write-only).
pub fn read(msr: u32) -> Option<u64> {
    if !readable(msr) {
        return None;
    }
    if !emulated() {
        // SAFETY: an existing x2APIC register; this core's APIC is in x2APIC mode.
        return Some(unsafe { Msr::new(msr).read() });
    }
    Some(match msr {
        ID => u64::from(mmio_read(ID) >> 24),
        // x2APIC logical ID: cluster (ID[19:4]) in bits 31:16, bit (ID[3:0]) in 15:0
        // (SDM 11.12.10.2).
        LDR => {
            let id = mmio_read(ID) >> 24;
            u64::from(((id >> 4) << 16) | (1 << (id & 0xf)))
        }
        ICR => u64::from(mmio_read(ICR)) | (u64::from(mmio_read(ICR + 1) >> 24) << 32),
        _ => u64::from(mmio_read(msr)),
    })
}

/// Writes an x2APIC register of this core for the partition, after `msr.rs` checked what
/// needs checking (ICR, LVTs). Returns false for #GP: a register that cannot be written,
/// reserved bits in EOI/ESR (must be 0 in x2APIC mode), or an ICR destination an xAPIC
/// cannot address.
pub fn write(msr: u32, value: u64) -> bool {
    if !writable(msr) || (matches!(msr, EOI | ESR) && value != 0) {
        return false;
    }
    if !emulated() {
        // SAFETY: a writable x2APIC register of this core, value checked by the caller.
        unsafe { Msr::new(msr).write(value) };
        return true;
    }
    match msr {
        ICR => {
            let destination = (value >> 32) as u32;
            if destination > 0xff {
                warn!("x2APIC emulation: ICR destination {=u32:#x} does not fit an xAPIC", destination);
                return false;
            }
            // The high half first: writing the low half sends (SDM 11.6.1).
            mmio_write(ICR + 1, destination << 24);
            mmio_write(ICR, value as u32);
        }
        SELF_IPI => {
            const SHORTHAND_SELF: u32 = 0b01 << 18;
            mmio_write(ICR, SHORTHAND_SELF | (value as u32 & 0xff));
        }
        _ => mmio_write(msr, value as u32),
    }
    true
}
