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

/// The TSC frequency in Hz (calibrated at boot, or the fallback).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}
