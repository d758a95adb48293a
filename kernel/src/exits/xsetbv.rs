//! XSETBV exits: the partition sets XCR0 through the hypervisor, which executes XSETBV on
//! the partition's core only with a value the SDM allows.

use crate::exits::action::Action;
use crate::log::warn;
use crate::partition::Partition;

/// An XSETBV exit: performed, or #GP and a rate-limited log line.
#[inline(always)]
pub fn exit(partition: &Partition, xcr: u32, value: u64) -> Action {
    if xsetbv(xcr, value) {
        Action::Resume { skip: true }
    } else {
        if partition.counters.msr.hit().is_some() {
            warn!("partition {=str}: xsetbv xcr{=u32} <- {=u64:#x} invalid (#GP)", partition.name(), xcr, value);
        }
        Action::InjectGp
    }
}

/// XSETBV on behalf of the guest, with a value `bulkhead_virt::xcr0` allows on this CPU.
fn xsetbv(xcr: u32, value: u64) -> bool {
    let leaf = core::arch::x86_64::__cpuid_count(0xd, 0);
    let supported = u64::from(leaf.eax) | (u64::from(leaf.edx) << 32);
    if !bulkhead_virt::xcr0::xsetbv_allowed(xcr, value, supported) || !crate::cpu::capabilities::host_xsave_enabled() {
        return false;
    }
    // SAFETY: a value the rules accept; CR4.OSXSAVE is set on every core at boot; a #GP (a
    // rule this CPU adds) is recovered and refused.
    unsafe { crate::cpu::fixup::xsetbv_safe(0, value) }.is_ok()
}
