//! The mode of each vCPU's local APIC as its partition sees it: IA32_APIC_BASE and the few
//! registers that exist only in xAPIC mode's view.
//!
//! The physical APIC stays as the hypervisor runs it (x2APIC mode where the CPU has one,
//! xAPIC otherwise); the partition's mode is virtual state, one per core (one vCPU per
//! core), following the SDM's state machine (`bulkhead_virt::apic_base`):
//!
//! - after a partition's start (power-on) every vCPU is in xAPIC mode, as after RESET (SDM
//!   Vol. 3A 11.12.5.1: EN=1, EXTD=0), with BSP set on the partition's first core;
//! - INIT keeps the mode (11.12.5.1) and resets the other registers (11.4.7.3);
//! - in xAPIC mode the registers are reached through the emulated xAPIC page
//!   (`exits/xapic_page.rs`) and the x2APIC MSRs get #GP (11.12.2); in x2APIC mode the MSRs
//!   work (passed through where the hardware allows, `exits/msr.rs`) and the page reads as in
//!   the disabled state; in the disabled state neither works and the LVTs stay masked.
//!
//! The x2APIC MSRs pass through the MSR bitmap only while the vCPU is in x2APIC mode: a
//! mode change switches the vCPU between its partition's two bitmaps.

pub mod access;

use crate::cpu::percpu::MAX_CPUS;
use crate::log::warn;
use crate::partition::Partition;
use bulkhead_virt::apic_base::{self, Mode};
use bulkhead_virt::ipi::{self, Delivery, Targets};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// IA32_APIC_BASE MSR number.
pub const IA32_APIC_BASE: u32 = 0x1b;
/// The spurious-interrupt vector register (x2APIC MSR number).
const SVR: u32 = 0x80f;
/// xAPIC-mode DFR after RESET/INIT: flat model (SDM 11.6.2.2).
const DFR_RESET: u32 = 0xffff_ffff;

/// One core's virtual local APIC state. Only the core itself touches its entry (its vCPU's
/// exits), so relaxed atomics suffice; they are atomics only to be shareable statics.
struct VirtualApic {
    base: AtomicU64,
    /// xAPIC-mode logical destination and destination format (writable in xAPIC mode only;
    /// the x2APIC LDR is derived from the ID, 11.12.10.2).
    ldr: AtomicU32,
    dfr: AtomicU32,
    /// The xAPIC ICR's two halves as last written (the high half holds the destination).
    icr_low: AtomicU32,
    icr_high: AtomicU32,
}

static APICS: [VirtualApic; MAX_CPUS] = [const {
    VirtualApic {
        base: AtomicU64::new(apic_base::reset(false)),
        ldr: AtomicU32::new(0),
        dfr: AtomicU32::new(DFR_RESET),
        icr_low: AtomicU32::new(0),
        icr_high: AtomicU32::new(0),
    }
}; MAX_CPUS];

fn this() -> &'static VirtualApic {
    &APICS[crate::cpu::percpu::current_index() as usize]
}

/// This core's vCPU at RESET (its partition starts or restarts): xAPIC mode, BSP on the
/// partition's first core.
pub fn reset(bsp: bool) {
    let apic = this();
    apic.base.store(apic_base::reset(bsp), Ordering::Relaxed);
    init();
}

/// This core's vCPU receives INIT: the mode stays, the xAPIC-only registers return to
/// their reset values (the caller resets the hardware registers, `vcpu::reset_core_state`).
#[inline]
pub fn init() {
    let apic = this();
    apic.ldr.store(0, Ordering::Relaxed);
    apic.dfr.store(DFR_RESET, Ordering::Relaxed);
    apic.icr_low.store(0, Ordering::Relaxed);
    apic.icr_high.store(0, Ordering::Relaxed);
}

/// The mode of this core's vCPU's local APIC.
#[inline]
pub fn mode() -> Mode {
    apic_base::mode(base())
}

/// IA32_APIC_BASE as this core's vCPU reads it.
#[inline]
pub fn base() -> u64 {
    this().base.load(Ordering::Relaxed)
}

/// A WRMSR to IA32_APIC_BASE; false is #GP. A mode change switches the vCPU's MSR bitmap
/// (`x2apic_passthrough`, the backend's `set_x2apic_passthrough`); entering the disabled
/// state resets the APIC's registers (LVTs masked, timer stopped, software-disabled: SDM
/// 11.4.3, the state a re-enabled APIC starts from).
#[inline]
pub fn write_base(value: u64, x2apic_passthrough: impl FnOnce(bool)) -> bool {
    let current = base();
    // A refusal is logged (rate-limited) by the caller with the other refused WRMSRs.
    let Ok(new) = apic_base::write(current, value, max_phys_bits()) else {
        return false;
    };
    this().base.store(new, Ordering::Relaxed);
    let (old_mode, new_mode) = (apic_base::mode(current), apic_base::mode(new));
    if old_mode != new_mode {
        if new_mode == Mode::Disabled {
            reset_local_apic();
            // Software-disabled, spurious vector 0xFF: the power-up value (SDM 11.4.7.1).
            crate::lapic::access::write(SVR, 0xff);
            init();
        }
        x2apic_passthrough(new_mode == Mode::X2Apic);
    }
    true
}

/// The xAPIC-mode LDR and DFR (their values as written; logical destinations are refused,
/// see `bulkhead_virt::ipi`, so nothing else reads them).
#[inline]
pub fn xapic_ldr() -> u32 {
    this().ldr.load(Ordering::Relaxed)
}

#[inline]
pub fn set_xapic_ldr(value: u32) {
    // Only the logical APIC ID (bits 31:24) is writable (SDM 11.6.2.2).
    this().ldr.store(value & 0xff00_0000, Ordering::Relaxed)
}

#[inline]
pub fn xapic_dfr() -> u32 {
    this().dfr.load(Ordering::Relaxed)
}

#[inline]
pub fn set_xapic_dfr(value: u32) {
    // Only the model (bits 31:28) is writable; the rest reads as ones (SDM 11.6.2.2).
    this().dfr.store(value | 0x0fff_ffff, Ordering::Relaxed)
}

/// The xAPIC ICR's halves as last written (delivery status always idle: IPIs are sent by
/// the time the write returns).
pub fn xapic_icr() -> (u32, u32) {
    let apic = this();
    (apic.icr_low.load(Ordering::Relaxed) & !(1 << 12), apic.icr_high.load(Ordering::Relaxed))
}

#[inline]
pub fn set_xapic_icr_high(value: u32) {
    this().icr_high.store(value & 0xff00_0000, Ordering::Relaxed)
}

#[inline]
pub fn set_xapic_icr_low(value: u32) {
    this().icr_low.store(value, Ordering::Relaxed)
}

/// MAXPHYADDR (CPUID 0x80000008 EAX[7:0], 36 where the leaf is missing: SDM Vol. 3A
/// 4.1.4), for the reserved bits of IA32_APIC_BASE.
fn max_phys_bits() -> u8 {
    if core::arch::x86_64::__cpuid(0x8000_0000).eax >= 0x8000_0008 {
        core::arch::x86_64::__cpuid(0x8000_0008).eax as u8
    } else {
        36
    }
}

/// How often (1 ms apart) an INIT's sender signals a running sibling before going on: the
/// NMI that takes the sibling out of its guest can land while it is in the hypervisor
/// (see `partition/containment.rs`), so it is repeated until the sibling took the INIT.
const INIT_KICKS: u32 = 5;

/// The APIC IDs of the partition's cores.
fn own_apic_ids(partition: &Partition) -> impl Iterator<Item = u32> + '_ {
    let cores = partition.config().cores;
    crate::config::SYSTEM.board.cpus.iter().filter(move |c| cores.contains(&c.core)).map(|c| c.apic_id)
}

/// An ICR write in either mode, in x2APIC format (destination in bits 63:32; the xAPIC
/// page converts), SDM 11.6.1 and 11.12.9. The policy is `bulkhead_virt::ipi::plan`'s, the
/// same in both modes: fixed, INIT and start-up IPIs with a physical destination among the
/// partition's cores; "all" shorthands expanded to the partition's own cores, one IPI each,
/// so they never reach another partition; NMI, SMI, lowest priority, ExtINT and logical
/// destinations refused.
///
/// INIT and start-up IPIs never reach the hardware: the target core takes them in the
/// hypervisor (`cpu/percpu.rs` mailbox, `vcpu::core_loop`). A refusal is #GP for the
/// x2APIC MSR (an MMIO write cannot fault: the xAPIC page drops it) and a rate-limited
/// log line.
pub fn send_ipi(partition: &Partition, icr: u64) -> bool {
    let (delivery, targets) = match ipi::plan(icr, |id| own_apic_ids(partition).any(|own| own == id)) {
        Ok(plan) => plan,
        Err(why) => {
            if let Some(n) = partition.counters.ipi.hit() {
                warn!(
                    "partition {=str}: IPI refused (#GP): icr {=u64:#x} (mode {=u64}, shorthand {=u64}) to apic_id {=u32}: {=str} (#{=u32})",
                    partition.name(),
                    icr,
                    ipi::delivery_mode(icr),
                    ipi::shorthand(icr),
                    (icr >> 32) as u32,
                    why.describe(),
                    n
                );
            }
            return false;
        }
    };
    let me = crate::cpu::percpu::current().apic_id();
    let mut ids: heapless::Vec<u32, MAX_CPUS> = heapless::Vec::new();
    match targets {
        Targets::One(id) => {
            let _ = ids.push(id);
        }
        Targets::Sender => {
            let _ = ids.push(me);
        }
        Targets::AllOwn { including_sender } => {
            for id in own_apic_ids(partition).filter(|&id| including_sender || id != me) {
                let _ = ids.push(id);
            }
        }
    }
    for &target in &ids {
        match delivery {
            // Vector, delivery mode, level and trigger as written; physical, no shorthand.
            Delivery::Fixed => {
                if !crate::lapic::access::write(crate::lapic::access::ICR, (icr & 0xc7ff) | (u64::from(target) << 32)) {
                    return false;
                }
            }
            Delivery::Init => {
                if let Some(cpu) = crate::cpu::percpu::by_apic_id(target) {
                    deliver_init(cpu);
                }
            }
            Delivery::Startup(vector) => {
                if let Some(cpu) = crate::cpu::percpu::by_apic_id(target) {
                    cpu.deliver_startup(vector);
                }
            }
            Delivery::Nothing => {}
        }
    }
    true
}

/// INIT to a core of the partition (SDM 9.4, 11.4.7.3): the target's vCPU leaves its guest,
/// its state is reset and it waits for a start-up IPI in the hypervisor. A running target
/// is signalled with the hypervisor's NMI; a target waiting for SIPI already is in that state.
fn deliver_init(cpu: &'static crate::cpu::percpu::PerCpu) {
    cpu.deliver_init();
    if cpu.index() == crate::cpu::percpu::current_index() {
        return; // This core resets before its next guest entry.
    }
    for _ in 0..INIT_KICKS {
        if !cpu.init_pending() {
            return;
        }
        crate::cpu::nmi_signal::signal_sent(cpu.index());
        crate::cpu::apic::send_nmi(cpu.apic_id());
        crate::cpu::time::wait_until(1, || !cpu.init_pending());
    }
}

/// A write to one of the partition's local APIC registers, by its x2APIC MSR number, in
/// either mode (the xAPIC page emulation converts to this form): the ICR and the LVTs with
/// a delivery mode are checked; false means refused.
#[inline]
pub fn apic_register_write(partition: &Partition, msr: u32, value: u64) -> bool {
    // The register map first (existence, reserved bits, LVT modes), for both paths.
    if !access::check_write(partition, msr, value) {
        return false;
    }
    match msr {
        access::ICR => send_ipi(partition, value),
        msr => access::perform_write(msr, value),
    }
}

/// The partition's local APIC registers back to their power-on shape (SDM 11.4.7.1): every
/// LVT masked, the timer and TSC deadline stopped, nothing left in service. Also when the
/// partition disables its APIC through IA32_APIC_BASE (`lapic/`), which then must not
/// deliver anything.
pub fn reset_local_apic() {
    const MASKED: u64 = 1 << 16;
    for lvt in [0x82f, 0x832, 0x833, 0x834, 0x835, 0x836, 0x837] {
        access::write(lvt, MASKED);
    }
    access::write(0x838, 0); // timer initial count
    if crate::cpu::capabilities::has_tsc_deadline() {
        // SAFETY: this core's TSC deadline, which the partition on it owns.
        let _ = unsafe { crate::cpu::fixup::write_msr_safe(access::TSC_DEADLINE, 0) };
    }
    // One EOI per in-service vector (ISR, 0x810..=0x817).
    let in_service: u32 = (0x810..=0x817).map(|r| (access::read(r).unwrap_or(0) as u32).count_ones()).sum();
    for _ in 0..in_service {
        access::write(access::EOI, 0);
    }
}
