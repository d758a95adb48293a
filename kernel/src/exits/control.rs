//! Instructions and CPU state a partition reaches through an exit: MOV to CR0/CR4 where
//! VT-x owns a bit, INVD and WBINVD, RDPMC, MONITOR and MWAIT. Each gets the answer the
//! processor would give a guest that believes its CPUID (docs/platform.md, "Control
//! registers and caches" and "Instructions"), and a rate-limited log line where it is a
//! refusal or costs other partitions something.

use crate::backend::Backend;
use crate::exits::action::Action;
use crate::log::{info, warn};
use crate::partition::Partition;
use crate::partition::counters::RateLimit;
use bulkhead_board::tables::MAX_PARTITIONS;
use bulkhead_virt::control_registers::{self, efer};
use bulkhead_virt::guest_state::ExecutionMode;

static CR_REFUSED: [RateLimit; MAX_PARTITIONS] = [const { RateLimit::new() }; MAX_PARTITIONS];
static CACHE_FLUSHES: [RateLimit; MAX_PARTITIONS] = [const { RateLimit::new() }; MAX_PARTITIONS];
static RDPMC_REFUSED: [RateLimit; MAX_PARTITIONS] = [const { RateLimit::new() }; MAX_PARTITIONS];

fn slot(partition: &Partition) -> usize {
    partition.config().id.0 as usize
}

/// A MOV to CR0 or CR4 that exited (VT-x: it changes a bit the hypervisor owns, CR0.NE or
/// CR4.VMXE): performed as the processor would, or refused with #GP(0).
pub fn control_register_write<B: Backend>(partition: &Partition, backend: &mut B, cr: u8, value: u64) -> Action {
    let efer_value = backend.guest_efer();
    let long_mode_active = efer_value & efer::LMA != 0;
    let result = match cr {
        0 => {
            let (current, cr4) = (backend.guest_cr0(), backend.guest_cr4());
            let code64 = matches!(backend.execution_mode(), ExecutionMode::Bits64 { .. });
            control_registers::cr0_write(current, value, efer_value, cr4, code64)
                .map(|change| backend.set_guest_cr0(change.value, change.long_mode_active))
        }
        4 => control_registers::cr4_write(value, long_mode_active).map(|value| backend.set_guest_cr4(value)),
        _ => None,
    };
    if result.is_some() {
        return Action::Resume { skip: true };
    }
    if let Some(n) = CR_REFUSED[slot(partition)].hit() {
        warn!(
            "partition {=str}: mov cr{=u8} <- {=u64:#x} refused (#GP), rip {=u64:#x} (#{=u32})",
            partition.name(),
            cr,
            value,
            backend.rip(),
            n
        );
    }
    Action::InjectGp
}

/// WBINVD, and INVD answered as WBINVD: the partition's core writes back and invalidates
/// its caches, as the guest asked. INVD is never executed as such: on a cache shared with
/// other partitions it would throw away their dirty lines (SDM Vol. 2A INVD: "data ...
/// will be lost"); writing them back first is what INVD permits a processor to do
/// anyway. Both are the guest's right, but flushing a shared cache costs the other
/// partitions on it latency, so each is logged at a limited rate.
pub fn cache_flush<B: Backend>(partition: &Partition, backend: &mut B, invd: bool) -> Action {
    // SAFETY: WBINVD only writes back and invalidates caches; memory contents stay.
    unsafe { core::arch::asm!("wbinvd", options(nostack, preserves_flags)) };
    if let Some(n) = CACHE_FLUSHES[slot(partition)].hit() {
        info!(
            "partition {=str}: {=str} executed as WBINVD on its core (shared caches flushed), rip {=u64:#x} (#{=u32})",
            partition.name(),
            if invd { "INVD" } else { "WBINVD" },
            backend.rip(),
            n
        );
    }
    Action::Resume { skip: true }
}

/// RDPMC: CPUID reports no performance counters (leaf 0xA zeroed, PerfCtrExtCore clear), so
/// every counter index is invalid and the answer is #GP(0), as on a processor without
/// them (SDM Vol. 2B RDPMC). The #GP for CPL > 0 with CR4.PCE clear comes first in
/// hardware, and is the same answer.
pub fn rdpmc<B: Backend>(partition: &Partition, backend: &mut B, counter: u32) -> Action {
    if let Some(n) = RDPMC_REFUSED[slot(partition)].hit() {
        warn!(
            "partition {=str}: rdpmc {=u32:#x} refused (#GP: no counters), rip {=u64:#x} (#{=u32})",
            partition.name(),
            counter,
            backend.rip(),
            n
        );
    }
    Action::InjectGp
}
