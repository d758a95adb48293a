//! The time stamp counter as a partition sees it: the hardware's TSC plus a per-vCPU
//! offset (VMCS TSC offset with "use TSC offsetting", VMCB TSC_OFFSET), so that reads stay
//! exit-free (RDTSC, RDTSCP and RDMSR of IA32_TSC add the offset in hardware) while a
//! write moves only the partition's own view.
//!
//! - WRMSR IA32_TSC (SDM Vol. 3B 18.17): the offset becomes `value - TSC`, so the guest
//!   reads back what it wrote plus the time elapsed since.
//! - IA32_TSC_ADJUST (18.17.3), where CPUID leaf 7 EBX bit 1 reports it: the guest's
//!   adjust value *is* its offset (both start at 0 at every vCPU start): a TSC write
//!   changes it by the same amount, and writing it moves the TSC by the difference, as on
//!   hardware.
//! - IA32_TSC_DEADLINE (11.5.4.1): the local APIC compares it with the hardware's TSC, so
//!   while the offset is nonzero the backend makes its accesses exit and they are
//!   converted here (a deadline already past in the hardware's terms fires at once).
//!
//! The hardware TSC itself is never written: the hypervisor's own time and the other
//! partitions' are unaffected.

use crate::backend::Backend;
use bulkhead_virt::tsc::{deadline_to_guest, deadline_to_hardware};

pub const IA32_TSC: u32 = 0x10;
pub const IA32_TSC_ADJUST: u32 = 0x3b;
const TSC_DEADLINE: u32 = crate::lapic::access::TSC_DEADLINE;

fn has_tsc_adjust() -> bool {
    core::arch::x86_64::__cpuid_count(7, 0).ebx & (1 << 1) != 0
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects (CR4.TSD is clear in the hypervisor).
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn read_deadline() -> u64 {
    // SAFETY: IA32_TSC_DEADLINE exists (checked by the caller) and is this core's, which
    // the partition owns.
    unsafe { x86_64::registers::model_specific::Msr::new(TSC_DEADLINE).read() }
}

fn write_deadline(value: u64) {
    // SAFETY: as in `read_deadline`.
    unsafe { x86_64::registers::model_specific::Msr::new(TSC_DEADLINE).write(value) }
}

/// An intercepted RDMSR of IA32_TSC, IA32_TSC_ADJUST or IA32_TSC_DEADLINE; `None` is #GP.
pub fn read<B: Backend>(backend: &mut B, msr: u32) -> Option<u64> {
    let offset = backend.tsc_offset();
    match msr {
        IA32_TSC => Some(rdtsc().wrapping_add(offset)),
        IA32_TSC_ADJUST if has_tsc_adjust() => Some(offset),
        TSC_DEADLINE if crate::cpu::capabilities::has_tsc_deadline() => {
            Some(deadline_to_guest(read_deadline(), offset))
        }
        _ => None,
    }
}

/// An intercepted WRMSR of IA32_TSC, IA32_TSC_ADJUST or IA32_TSC_DEADLINE; false is #GP.
pub fn write<B: Backend>(backend: &mut B, msr: u32, value: u64) -> bool {
    match msr {
        IA32_TSC => backend.set_tsc_offset(value.wrapping_sub(rdtsc())),
        IA32_TSC_ADJUST if has_tsc_adjust() => backend.set_tsc_offset(value),
        TSC_DEADLINE if crate::cpu::capabilities::has_tsc_deadline() => {
            write_deadline(deadline_to_hardware(value, backend.tsc_offset()))
        }
        _ => return false,
    }
    true
}
