//! The NMIs the hypervisor sends as signals (a containment stop, an INIT to a sibling vCPU),
//! counted per target CPU until the target takes one: how `partition/nmi.rs` tells a
//! signal from an unexpected NMI. Kept apart from that counting so the senders
//! (`partition/containment.rs`, `lapic/`) need nothing above the CPU layer.

use crate::cpu::percpu::MAX_CPUS;
use core::sync::atomic::{AtomicU32, Ordering};

/// Stop signals sent to each CPU and not yet taken (see `partition/nmi.rs`).
static CREDITS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// The containment leader (or an INIT's sender) is about to send CPU `index` a signal.
pub fn signal_sent(index: u32) {
    CREDITS[index as usize].fetch_add(1, Ordering::Relaxed);
}

/// Takes one credit of CPU `index`: true when a signal was sent to it and not yet taken.
#[inline]
pub fn take(index: usize) -> bool {
    CREDITS[index].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
}
