//! The hypervisor's own use of the physical local APICs: which mode every CPU runs them in,
//! and the IPIs the hypervisor sends (the NMI that takes a core out of its guest, a SynIC
//! interrupt). Set up once by SMP bring-up (`boot/smp.rs`); below everything that sends.

use bulkhead_drivers::lapic::{Ipi, LocalApic, Mode};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static USE_X2APIC: AtomicBool = AtomicBool::new(false);

/// Whether every CPU (the BSP too) runs its local APIC in x2APIC mode.
pub fn set_x2apic(enabled: bool) {
    USE_X2APIC.store(enabled, Ordering::Relaxed);
}

pub fn x2apic() -> bool {
    USE_X2APIC.load(Ordering::Relaxed)
}

/// Physical base of the xAPIC page (every CPU's is the same; unused in x2APIC mode).
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0);

pub fn remember_apic(apic: &LocalApic) {
    if let Mode::XApic { base } = apic.mode() {
        XAPIC_BASE.store(base, Ordering::Relaxed);
    }
}

/// Physical base of the xAPIC page (meaningful in xAPIC mode only).
pub fn xapic_base() -> u64 {
    XAPIC_BASE.load(Ordering::Relaxed)
}

/// This CPU's local APIC, enabled at start-up.
#[inline(always)]
fn this_apic() -> LocalApic {
    let mode = if x2apic() { Mode::X2Apic } else { Mode::XApic { base: XAPIC_BASE.load(Ordering::Relaxed) } };
    // SAFETY: every CPU enabled its APIC in this mode at start-up (`bsp_entry`, `ap_entry`),
    // and the xAPIC page stays identity-mapped uncached.
    unsafe { LocalApic::enabled(mode) }
}

/// Signals the end of the interrupt in service on this CPU (the monitor's timer tick).
pub fn end_of_interrupt() {
    this_apic().end_of_interrupt();
}

/// Starts this CPU's APIC timer: an interrupt with `vector` every `ticks` timer input clocks.
pub fn start_periodic_timer(vector: u8, ticks: u32) {
    this_apic().start_periodic_timer(vector, ticks);
}

/// Sends an NMI to the CPU with this APIC ID: the hypervisor's signal that takes a core out
/// of its guest (NMIs always cause a VM exit, see the backends).
#[inline]
pub fn send_nmi(apic_id: u32) {
    this_apic().send(Ipi::nmi(apic_id));
}

/// Sends a fixed interrupt with `vector` to the CPU with this APIC ID (a SynIC interrupt
/// for the partition running there: its guest takes it without a VM exit). Nothing reads
/// the error status back for these, so it is not cleared first (one WRMSR in x2APIC mode).
#[inline(always)]
pub fn send_fixed_ipi(apic_id: u32, vector: u8) {
    this_apic().send_unchecked(Ipi::fixed(apic_id, vector));
}
