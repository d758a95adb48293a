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

/// XSETBV on behalf of the guest: XCR0 only, and only values the SDM allows (Vol. 1 13.3):
/// x87 always on; AVX needs SSE; the three AVX-512 components all or none, and only with
/// AVX; MPX's two components together; AMX's two together; nothing the CPU lacks. Any
/// value the hardware would refuse must be refused here, or the #GP would hit the
/// hypervisor.
fn xsetbv(xcr: u32, value: u64) -> bool {
    const X87: u64 = 1 << 0;
    const SSE: u64 = 1 << 1;
    const AVX: u64 = 1 << 2;
    const MPX: u64 = 0b11 << 3;
    const AVX512: u64 = 0b111 << 5;
    const AMX: u64 = 0b11 << 17;
    let all_or_none = |bits: u64| value & bits == 0 || value & bits == bits;
    let valid = xcr == 0
        && value & X87 != 0
        && (value & AVX == 0 || value & SSE != 0)
        && all_or_none(AVX512)
        && (value & AVX512 == 0 || value & AVX != 0)
        && all_or_none(MPX)
        && all_or_none(AMX);
    let leaf = core::arch::x86_64::__cpuid_count(0xd, 0);
    let supported = u64::from(leaf.eax) | (u64::from(leaf.edx) << 32);
    if !valid || value & !supported != 0 || !crate::cpu::capabilities::host_xsave_enabled() {
        return false;
    }
    // SAFETY: a value the rules above accept; CR4.OSXSAVE is set on every core at boot; a
    // #GP (a rule this CPU adds) is recovered and refused.
    unsafe { crate::cpu::fixup::xsetbv_safe(0, value) }.is_ok()
}
