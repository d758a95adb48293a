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
//! shorthand). Which registers exist and which bits a write may set is the register map
//! of `bulkhead_virt::x2apic` (SDM Table 11-6), applied by [`check_write`] to every write
//! the hypervisor performs, on both paths alike; the hardware applies the same rules
//! itself to the writes that pass through. The hardware accesses go through `cpu/fixup.rs`,
//! so even a register this map wrongly admits costs the partition a #GP, not the run.

use crate::cpu::percpu::MAX_CPUS;
use crate::log::warn;
use bulkhead_virt::x2apic::{self, Features, Refusal};
use core::sync::atomic::{AtomicU32, Ordering};

/// First and last x2APIC register MSR.
pub const X2APIC_MSRS: core::ops::RangeInclusive<u32> = 0x800..=0x8ff;
pub const ID: u32 = 0x802;
pub const VERSION: u32 = 0x803;
pub const EOI: u32 = 0x80b;
pub const LDR: u32 = 0x80d;
pub const ICR: u32 = 0x830;
pub const SELF_IPI: u32 = 0x83f;
/// IA32_TSC_DEADLINE: an MSR in both modes (SDM 11.5.4.1).
pub const TSC_DEADLINE: u32 = 0x6e0;

/// What this core's local APIC has (the version register, CPUID's TSC-deadline bit), for
/// the register map in `bulkhead_virt::x2apic`. The hardware's version register (0x803, or
/// offset 0x30 on an xAPIC) has the same layout in both modes (SDM 11.4.8) and is
/// read-only, so it is read once per core and kept: the register map is applied on every
/// emulated x2APIC write (each EOI without an x2APIC), and needs no APIC access for it.
#[inline]
pub fn features() -> Features {
    let slot = &VERSIONS[crate::cpu::percpu::current_index() as usize];
    let mut version = slot.load(Ordering::Relaxed);
    if version == 0 {
        version = hardware_version();
        slot.store(version, Ordering::Relaxed);
    }
    Features::new(version, crate::cpu::capabilities::has_tsc_deadline())
}

/// Each core's APIC version register once read (0: not yet; no APIC reads 0, its version
/// field is at least 0x10, SDM 11.4.8). Only the core itself touches its entry.
static VERSIONS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

#[cold]
fn hardware_version() -> u32 {
    if emulated() {
        mmio_read(VERSION)
    } else {
        // SAFETY: the version register exists on every x2APIC; reading has no effect.
        unsafe { crate::cpu::fixup::read_msr_safe(VERSION) }.unwrap_or(0) as u32
    }
}

/// Whether the x2APIC MSRs are emulated on an xAPIC (the CPU has no x2APIC).
#[inline]
pub fn emulated() -> bool {
    !crate::cpu::apic::x2apic()
}

#[inline]
fn mmio(msr: u32) -> *mut u32 {
    (crate::cpu::apic::xapic_base() + (u64::from(msr - 0x800) << 4)) as *mut u32
}

#[inline]
fn mmio_read(msr: u32) -> u32 {
    // SAFETY: an existing xAPIC register of this core (callers check `readable`); the page
    // is identity-mapped uncached.
    unsafe { core::ptr::read_volatile(mmio(msr)) }
}

#[inline]
fn mmio_write(msr: u32, value: u32) {
    // SAFETY: an existing, writable xAPIC register of this core (callers check); the page
    // is identity-mapped uncached.
    unsafe { core::ptr::write_volatile(mmio(msr), value) }
}

/// Reads an x2APIC register of this core for the partition; `None` means #GP (a register
/// that does not exist or is write-only).
pub fn read(msr: u32) -> Option<u64> {
    if !x2apic::readable(msr, &features()) {
        return None;
    }
    if !emulated() {
        // SAFETY: an existing x2APIC register; this core's APIC is in x2APIC mode.
        return unsafe { crate::cpu::fixup::read_msr_safe(msr) }.ok();
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

/// Checks a partition's write of `value` to x2APIC register `msr` against the register map
/// (existence, read-only, reserved bits, LVT delivery and timer modes). On refusal logs
/// the reason (rate-limited) and returns false: the partition gets #GP.
#[inline]
pub fn check_write(partition: &crate::partition::Partition, msr: u32, value: u64) -> bool {
    let Err(refusal) = x2apic::check_write(msr, value, &features()) else { return true };
    refused(partition, msr, value, refusal);
    false
}

/// Logs a refused write (rate-limited).
#[cold]
fn refused(partition: &crate::partition::Partition, msr: u32, value: u64, refusal: Refusal) {
    if partition.counters.msr.hit().is_some() {
        let name = partition.name();
        match refusal {
            Refusal::DeliveryMode(mode) => warn!(
                "partition {=str}: LVT {=u32:#x} <- {=u64:#x} refused (#GP): delivery mode {=u8} is reserved for the hypervisor",
                name, msr, value, mode
            ),
            Refusal::ReservedBits(bits) => warn!(
                "partition {=str}: x2APIC {=u32:#x} <- {=u64:#x} refused (#GP): reserved bits {=u64:#x}",
                name, msr, value, bits
            ),
            Refusal::TimerMode(mode) => warn!(
                "partition {=str}: LVT timer <- {=u64:#x} refused (#GP): timer mode {=u8} is not available",
                name, value, mode
            ),
            Refusal::Missing | Refusal::ReadOnly => warn!(
                "partition {=str}: x2APIC {=u32:#x} <- {=u64:#x} refused (#GP): {=str}",
                name,
                msr,
                value,
                if refusal == Refusal::Missing { "no such register" } else { "read-only register" }
            ),
        }
    }
}

/// Writes an x2APIC register of this core for the hypervisor's own reset. Returns false
/// for a register this APIC lacks or cannot write, or as [`perform_write`].
pub fn write(msr: u32, value: u64) -> bool {
    let features = features();
    if x2apic::Register::at(msr, &features).and_then(|r| r.writable_bits(&features)).is_none() {
        return false;
    }
    perform_write(msr, value)
}

/// Writes an x2APIC register of this core that [`check_write`] (for a partition) or
/// [`write`] admitted. Returns false for #GP: a write the hardware refused, or an ICR
/// destination an xAPIC cannot address.
#[inline]
pub fn perform_write(msr: u32, value: u64) -> bool {
    if !emulated() {
        // SAFETY: a writable x2APIC register of this core (its owner's); a #GP is recovered.
        return unsafe { crate::cpu::fixup::write_msr_safe(msr, value) }.is_ok();
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
