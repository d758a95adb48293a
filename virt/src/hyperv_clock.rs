//! The partition reference time (TLFS "Timers": 100 ns ticks since the partition started)
//! as the reference TSC page expresses it, and the frequencies the Hyper-V frequency MSRs
//! report (TSC_FREQUENCY, APIC_FREQUENCY).
//!
//! The hypervisor keeps the reference time on the hardware TSC:
//! `((tsc - start) * scale) >> 64` with `scale = 2^64 * 10^7 / tsc_hz`
//! (`bulkhead_abi::hyperv::reference_tsc`).
//! A guest computes it from the TSC *it* reads, which is the hardware's plus its vCPU's
//! TSC offset (the platform applies a guest's TSC writes as an offset, `exits/tsc.rs`),
//! so the page's offset folds in both the start and the vCPU offset. One page serves
//! every vCPU of a partition, so it is valid only while they all have the same offset.

use bulkhead_abi::hyperv::reference_tsc::reference_time;

/// The page's `tsc_offset` for a partition that started at hardware TSC `start` and whose
/// vCPUs read the hardware TSC plus `vcpu_offset` (two's complement), with `scale`.
///
/// The guest computes `((guest_tsc * scale) >> 64) + offset`. With `guest_tsc = hw +
/// vcpu_offset`, taking `offset = -(start * scale >> 64) - (vcpu_offset * scale >> 64)`
/// (the second product signed) gives the hypervisor's reference time exactly when
/// `vcpu_offset` is 0 (always, unless the guest wrote its TSC) and within one tick
/// otherwise (the two floors round separately).
pub fn page_offset(start: u64, vcpu_offset: u64, scale: u64) -> i64 {
    let start_ticks = reference_time(start, scale, 0) as i64;
    let vcpu_ticks = ((i128::from(vcpu_offset as i64) * i128::from(scale)) >> 64) as i64;
    start_ticks.wrapping_add(vcpu_ticks).wrapping_neg()
}

/// The reference time at hardware TSC `tsc` for a partition that started at `start`
/// (what TIME_REF_COUNT reads).
pub fn time_since(start: u64, tsc: u64, scale: u64) -> u64 {
    reference_time(tsc, scale, page_offset(start, 0, scale))
}

/// A timer's input frequency from a measurement: it counted `ticks` while the TSC
/// (running at `tsc_hz`) advanced `tsc_delta`. 0 when nothing was measured.
pub fn frequency_from(ticks: u64, tsc_delta: u64, tsc_hz: u64) -> u64 {
    if tsc_delta == 0 {
        return 0;
    }
    (u128::from(ticks) * u128::from(tsc_hz) / u128::from(tsc_delta)) as u64
}

/// Rounds a measured frequency to the nearest multiple of `step` Hz (a measurement over a
/// few milliseconds is exact to well under a kilohertz; reporting it to the hertz would
/// only report the noise).
pub fn round_to(hz: u64, step: u64) -> u64 {
    if step == 0 {
        return hz;
    }
    (hz + step / 2) / step * step
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_abi::hyperv::reference_tsc::scale_for;

    const HZ: u64 = 2_500_000_000;

    #[test]
    fn no_vcpu_offset_is_exact() {
        let scale = scale_for(HZ);
        let start = 123_456_789_000;
        for tsc in [start, start + 1, start + HZ, start + 3 * HZ + 17, start + 1000 * HZ] {
            let guest = reference_time(tsc, scale, page_offset(start, 0, scale));
            assert_eq!(guest, time_since(start, tsc, scale));
        }
        // One second after the start reads 10^7 ticks (minus the floored fraction).
        assert!((9_999_998..=10_000_000).contains(&time_since(start, start + HZ, scale)));
        assert_eq!(time_since(start, start, scale), 0);
    }

    #[test]
    fn vcpu_offset_is_folded_into_the_page() {
        let scale = scale_for(HZ);
        let start = 50 * HZ + 12345;
        // The guest moved its TSC forward by 7 s, and backward by 3 s (two's complement).
        for vcpu_offset in [7 * HZ, 0u64.wrapping_sub(3 * HZ), 1, u64::MAX] {
            let offset = page_offset(start, vcpu_offset, scale);
            for elapsed in [0, 1, HZ / 3, 5 * HZ, 1000 * HZ] {
                let hw = start + 3 * HZ + elapsed;
                let guest = reference_time(hw.wrapping_add(vcpu_offset), scale, offset);
                let truth = time_since(start, hw, scale);
                assert!(guest.abs_diff(truth) <= 1, "offset {vcpu_offset:#x}: {guest} vs {truth}");
            }
        }
    }

    #[test]
    fn measured_frequencies() {
        // 10 ms of a 2.5 GHz TSC during which a 100 MHz timer counted 1 000 000.
        assert_eq!(frequency_from(1_000_000, HZ / 100, HZ), 100_000_000);
        assert_eq!(frequency_from(5, 0, HZ), 0);
        assert_eq!(round_to(99_999_613, 1000), 100_000_000);
        assert_eq!(round_to(1_000_499, 1000), 1_000_000);
        assert_eq!(round_to(1_000_500, 1000), 1_001_000);
        assert_eq!(round_to(7, 0), 7);
    }
}
