//! Clock arithmetic: the partition reference time (100 ns ticks, from the Hyper-V reference
//! TSC page) as the `timespec` std asks for, and deadlines back.

use bulkhead_abi::hyperv::reference_tsc::TICKS_PER_SECOND;

const NANOS_PER_TICK: u64 = 1_000_000_000 / TICKS_PER_SECOND;

/// Seconds and nanoseconds of `ticks` reference-time ticks.
pub const fn ticks_to_timespec(ticks: u64) -> (i64, i32) {
    let secs = ticks / TICKS_PER_SECOND;
    let nanos = (ticks % TICKS_PER_SECOND) * NANOS_PER_TICK;
    (secs as i64, nanos as i32)
}

/// The reference time of a `timespec` (rounded up to the next tick, so a deadline is never
/// early); `None` for a negative or malformed one.
pub const fn timespec_to_ticks(secs: i64, nanos: i64) -> Option<u64> {
    if secs < 0 || nanos < 0 || nanos >= 1_000_000_000 {
        return None;
    }
    let whole = (secs as u64).saturating_mul(TICKS_PER_SECOND);
    Some(whole.saturating_add((nanos as u64).div_ceil(NANOS_PER_TICK)))
}

/// Ticks in `micros` microseconds.
pub const fn micros_to_ticks(micros: u64) -> u64 {
    micros.saturating_mul(TICKS_PER_SECOND / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_100_ns() {
        assert_eq!(ticks_to_timespec(0), (0, 0));
        assert_eq!(ticks_to_timespec(12_345_678), (1, 234_567_800));
        assert_eq!(ticks_to_timespec(u64::MAX).0, (u64::MAX / 10_000_000) as i64);
    }

    #[test]
    fn deadlines_round_up_and_reject_malformed_times() {
        assert_eq!(timespec_to_ticks(1, 234_567_800), Some(12_345_678));
        assert_eq!(timespec_to_ticks(0, 1), Some(1));
        assert_eq!(timespec_to_ticks(0, 101), Some(2));
        assert_eq!(timespec_to_ticks(-1, 0), None);
        assert_eq!(timespec_to_ticks(0, 1_000_000_000), None);
        assert_eq!(timespec_to_ticks(i64::MAX, 0), Some(u64::MAX));
        assert_eq!(micros_to_ticks(1_500), 15_000);
    }
}
