//! Time from the TSC, calibrated once against the PIT at boot.

use crate::log::{info, warn};
use core::sync::atomic::{AtomicU64, Ordering};

/// Used when calibration is impossible; deliberately high so waits err on the long side.
const FALLBACK_TSC_HZ: u64 = 4_000_000_000;

static TSC_HZ: AtomicU64 = AtomicU64::new(FALLBACK_TSC_HZ);

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; CR4.TSD is clear at CPL 0 anyway.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Calibration attempts before falling back: an interval that ended before it could be
/// timed (this CPU held up longer than it: an SMI on a board, an emulator's CPU thread
/// descheduled on a busy host) is measured again; a missing PIT fails every attempt.
const CALIBRATION_ATTEMPTS: u32 = 5;

/// Measures the TSC frequency. BSP, once, before any timed wait.
pub fn calibrate() {
    use bulkhead_drivers::pit::{CalibrationError, calibrate_tsc};
    for _ in 0..CALIBRATION_ATTEMPTS {
        // SAFETY: nothing else uses the PIT.
        match unsafe { calibrate_tsc(10, rdtsc) } {
            Ok(hz) if hz > 1_000_000 => {
                TSC_HZ.store(hz, Ordering::Relaxed);
                info!("tsc: {=u64} kHz (calibrated against the PIT)", hz / 1000);
                return;
            }
            Err(CalibrationError::EndedAtOnce) => continue,
            Ok(_) | Err(CalibrationError::NoSignal) => break,
        }
    }
    warn!("tsc: no PIT to calibrate against, assuming {=u64} MHz", FALLBACK_TSC_HZ / 1_000_000);
}

pub fn ticks_per_ms() -> u64 {
    TSC_HZ.load(Ordering::Relaxed) / 1000
}

/// Busy-waits at least `us` microseconds.
pub fn delay_us(us: u64) {
    let end = rdtsc() + TSC_HZ.load(Ordering::Relaxed) / 1_000_000 * us;
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// Polls `done` until it returns true or `ms` milliseconds pass; returns whether it did.
pub fn wait_until(ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = rdtsc() + ticks_per_ms() * ms;
    loop {
        if done() {
            return true;
        }
        if rdtsc() >= end {
            return done();
        }
        core::hint::spin_loop();
    }
}

/// The local APIC timer's input frequency in Hz, measured at boot ([`measure_apic_timer`]);
/// 0 until then or if it could not be measured.
static APIC_TIMER_HZ: AtomicU64 = AtomicU64::new(0);

/// How long the APIC timer is counted against the TSC.
const APIC_MEASURE_US: u64 = 10_000;

/// Measures the local APIC timer's input frequency (divide by 1) against the TSC, on the
/// BSP after its APIC is enabled. Every core's APIC timer runs from the same clock, and a
/// partition's timer is its core's (passed through, or its x2APIC registers performed on
/// the xAPIC), so this is the frequency a partition's APIC timer counts at: what the
/// Hyper-V APIC_FREQUENCY MSR reports. Rounded to the kHz, past the measurement's noise.
pub fn measure_apic_timer(apic: &bulkhead_drivers::lapic::LocalApic) {
    let mut tsc_delta = 0;
    let ticks = apic.timer_ticks_during(|| {
        let start = rdtsc();
        delay_us(APIC_MEASURE_US);
        tsc_delta = rdtsc() - start;
    });
    let hz = bulkhead_virt::hyperv_clock::frequency_from(u64::from(ticks), tsc_delta, tsc_hz());
    let hz = bulkhead_virt::hyperv_clock::round_to(hz, 1000);
    APIC_TIMER_HZ.store(hz, Ordering::Relaxed);
    info!("apic timer: {=u64} kHz (measured against the tsc)", hz / 1000);
}

/// The local APIC timer's input frequency in Hz (0 if not measured).
pub fn apic_timer_hz() -> u64 {
    APIC_TIMER_HZ.load(Ordering::Relaxed)
}

/// The TSC frequency in Hz (calibrated at boot, or the fallback).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}
