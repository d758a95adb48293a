//! Each CPU's local APIC: the timer that wakes an idle CPU at the next sleep or futex
//! deadline, and the wake-up IPI one CPU sends another when it made a thread ready there.
//!
//! x2APIC registers only: Bulkhead gives every partition an x2APIC, passed through where
//! the CPU has one and emulated on the xAPIC where it has not (QEMU TCG, Bochs `ryzen`:
//! each access is then an exit; docs/architecture.md, "Local APIC"). The timer runs in
//! TSC-deadline mode where CPUID.1:ECX[24] offers it (no exit to arm it with the x2APIC
//! passed through), else in one-shot mode counting at the APIC frequency the hypervisor
//! reports (Hyper-V APIC_FREQUENCY MSR). Both need no calibration: the TSC frequency
//! comes from the TSC_FREQUENCY MSR (docs/hyperv.md, "Time").

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bulkhead_abi::hyperv::msr;

use crate::cpu::{rdmsr, wrmsr};
use crate::exceptions::vectors;

/// Interrupt vectors: the timer, and the wake-up IPI. Their handlers only signal EOI: all
/// the work happens in the interrupted CPU's idle loop, after its HLT.
/// (The runtime's vector plan: `crate::exceptions::vectors`.)
pub const TIMER_VECTOR: u8 = vectors::TIMER;
pub const WAKE_VECTOR: u8 = vectors::RESCHEDULE;
const SPURIOUS_VECTOR: u8 = vectors::SPURIOUS;

// x2APIC MSRs (SDM Vol. 3A Table 11-6) and IA32_TSC_DEADLINE (11.5.4.1).
const X2APIC_ID: u32 = 0x802;
const X2APIC_SVR: u32 = 0x80f;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_ICR: u32 = 0x830;
const X2APIC_LVT_TIMER: u32 = 0x832;
const X2APIC_INITIAL_COUNT: u32 = 0x838;
const X2APIC_DIVIDE: u32 = 0x83e;
const TSC_DEADLINE: u32 = 0x6e0;
/// LVT timer mode field (bits 18:17): 00 one-shot, 10 TSC-deadline (11.5.4).
const LVT_TSC_DEADLINE: u64 = 0b10 << 17;
/// Divide configuration 1011b: divide by 1 (11.5.4, Figure 11-10).
const DIVIDE_BY_1: u64 = 0b1011;

static TSC_DEADLINE_MODE: AtomicBool = AtomicBool::new(false);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static APIC_HZ: AtomicU64 = AtomicU64::new(0);

/// Reads the frequencies once, on the boot CPU before any other starts.
pub fn init_frequencies() {
    let leaf1 = core::arch::x86_64::__cpuid(1);
    TSC_DEADLINE_MODE.store(leaf1.ecx & (1 << 24) != 0, Ordering::Relaxed);
    TSC_HZ.store(rdmsr(msr::TSC_FREQUENCY), Ordering::Relaxed);
    APIC_HZ.store(rdmsr(msr::APIC_FREQUENCY), Ordering::Relaxed);
}

/// Sets up this CPU's local APIC: x2APIC mode, software-enabled, the timer stopped in
/// the mode chosen by [`init_frequencies`]. Returns this CPU's x2APIC ID.
pub fn init_cpu() -> u32 {
    bulkhead_vcpu::lapic::enter_x2apic_mode();
    wrmsr(X2APIC_SVR, 0x100 | u64::from(SPURIOUS_VECTOR));
    wrmsr(X2APIC_DIVIDE, DIVIDE_BY_1);
    let mode = if TSC_DEADLINE_MODE.load(Ordering::Relaxed) { LVT_TSC_DEADLINE } else { 0 };
    wrmsr(X2APIC_LVT_TIMER, mode | u64::from(TIMER_VECTOR));
    rdmsr(X2APIC_ID) as u32
}

/// Arms this CPU's timer to fire `delay_ns` from now, or stops it (`None`). A delay
/// longer than the one-shot counter holds fires early; the idle loop then arms again.
pub fn arm(delay_ns: Option<u64>) {
    let tsc_mode = TSC_DEADLINE_MODE.load(Ordering::Relaxed);
    let Some(delay) = delay_ns else {
        // Writing 0 disarms both (11.5.4.1; an initial count of 0 stops the timer).
        wrmsr(if tsc_mode { TSC_DEADLINE } else { X2APIC_INITIAL_COUNT }, 0);
        return;
    };
    if tsc_mode {
        let ticks = ticks_for(delay, TSC_HZ.load(Ordering::Relaxed)).max(1);
        // SAFETY: RDTSC has no side effects.
        let now = unsafe { core::arch::x86_64::_rdtsc() };
        wrmsr(TSC_DEADLINE, now.saturating_add(ticks));
    } else {
        let count = ticks_for(delay, APIC_HZ.load(Ordering::Relaxed)).clamp(1, u64::from(u32::MAX));
        wrmsr(X2APIC_INITIAL_COUNT, count);
    }
}

/// Clock ticks at `hz` in `ns` nanoseconds, rounded up (a timer never fires early).
fn ticks_for(ns: u64, hz: u64) -> u64 {
    let ticks = (u128::from(ns) * u128::from(hz)).div_ceil(1_000_000_000);
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// Sends the wake-up IPI to the CPU with x2APIC ID `apic_id` (fixed delivery, physical
/// destination: ICR layout SDM Vol. 3A 11.12.9).
pub fn send_wake(apic_id: u32) {
    wrmsr(X2APIC_ICR, u64::from(apic_id) << 32 | u64::from(WAKE_VECTOR));
}

core::arch::global_asm!(
    r#"
    .pushsection .text.bulkhead_sched_interrupt, "ax"
    // The timer and the wake-up IPI: nothing to do but EOI (x2APIC EOI register, 0x80B)
    // and return; the halted idle loop resumes after its HLT and looks at the run queues.
    .global bulkhead_sched_interrupt
bulkhead_sched_interrupt:
    push rdx
    push rcx
    push rax
    xor eax, eax
    xor edx, edx
    mov ecx, {eoi}
    wrmsr
    pop rax
    pop rcx
    pop rdx
    iretq

    // The spurious vector takes no EOI (SDM Vol. 3A 11.9).
    .global bulkhead_sched_spurious
bulkhead_sched_spurious:
    iretq
    .popsection
    "#,
    eoi = const X2APIC_EOI,
);

unsafe extern "C" {
    fn bulkhead_sched_interrupt();
    fn bulkhead_sched_spurious();
}

/// Installs the handlers of the timer, wake-up and spurious vectors (once: the IDT is
/// shared by all CPUs).
pub fn install_handlers() {
    super::platform::set_interrupt_handler(TIMER_VECTOR, bulkhead_sched_interrupt);
    super::platform::set_interrupt_handler(WAKE_VECTOR, bulkhead_sched_interrupt);
    super::platform::set_interrupt_handler(SPURIOUS_VECTOR, bulkhead_sched_spurious);
}
