//! The reference TSC page, placed with the REFERENCE_TSC MSR: lets a guest compute the
//! partition reference time (100 ns units, the same clock as the TIME_REF_COUNT MSR) from
//! RDTSC without an exit (TLFS "Timers"; reference §2.2).
//!
//! Reader: read the sequence; if it is invalid use the MSR; read TSC, scale and offset; read
//! the sequence again and retry if it changed. Writer (KVM's order): store sequence 0, then
//! scale and offset, then a new valid sequence from [`next_sequence`].

use core::mem::{align_of, offset_of};

/// Reference time ticks per second (100 ns units).
pub const TICKS_PER_SECOND: u64 = 10_000_000;
/// Sequence value telling readers the page is unusable (TLFS).
pub const SEQUENCE_INVALID: u32 = 0;
/// Older TLFS versions used this as "invalid" and kvm-unit-tests rejects it too, so a writer
/// never stores it (reference §2.2).
pub const SEQUENCE_INVALID_LEGACY: u32 = u32::MAX;

#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReferenceTscPage {
    pub tsc_sequence: u32,
    pub reserved: u32,
    /// 64.64 fixed-point multiplier from TSC ticks to 100 ns ticks, see [`scale_for`].
    pub tsc_scale: u64,
    pub tsc_offset: i64,
    pub reserved_tail: [u8; 4096 - 24],
}

const _: () = {
    assert!(size_of::<ReferenceTscPage>() == 4096);
    assert!(align_of::<ReferenceTscPage>() == 4096);
    assert!(offset_of!(ReferenceTscPage, tsc_sequence) == 0);
    assert!(offset_of!(ReferenceTscPage, reserved) == 4);
    assert!(offset_of!(ReferenceTscPage, tsc_scale) == 8);
    assert!(offset_of!(ReferenceTscPage, tsc_offset) == 16);
    assert!(offset_of!(ReferenceTscPage, reserved_tail) == 24);
};

impl ReferenceTscPage {
    /// All zero: sequence invalid, so readers fall back to the MSR.
    pub const DISABLED: Self = Self::new(SEQUENCE_INVALID, 0, 0);

    pub const fn new(tsc_sequence: u32, tsc_scale: u64, tsc_offset: i64) -> Self {
        Self { tsc_sequence, reserved: 0, tsc_scale, tsc_offset, reserved_tail: [0; 4096 - 24] }
    }

    /// Whether readers may use the page (neither invalid sequence value).
    pub const fn is_valid(&self) -> bool {
        self.tsc_sequence != SEQUENCE_INVALID && self.tsc_sequence != SEQUENCE_INVALID_LEGACY
    }

    /// Reference time at TSC value `tsc` with this page's parameters.
    pub const fn reference_time(&self, tsc: u64) -> u64 {
        reference_time(tsc, self.tsc_scale, self.tsc_offset)
    }
}

/// Runs `with(scale, offset)` on the parameters of the reference TSC page at `page`
/// between two reads of its sequence, again until the sequence stayed the same (the
/// hypervisor rewrote the page meanwhile): the TLFS reader protocol. `None` if the
/// sequence says the page is invalid (readers then use the TIME_REF_COUNT MSR).
///
/// # Safety
/// `page` is readable for 24 bytes, 8-byte aligned, for the whole call: a guest's page that
/// the hypervisor keeps as the reference TSC page (or zeroes).
pub unsafe fn read_consistent<T>(page: *const u8, mut with: impl FnMut(u64, i64) -> T) -> Option<T> {
    loop {
        // SAFETY: as the caller promises; the sequence, scale and offset fields (offsets 0,
        // 8, 16) are written by the hypervisor behind the compiler's back, so read volatile,
        // the sequence around the others.
        let (before, scale, offset) = unsafe {
            (
                core::ptr::read_volatile(page as *const u32),
                core::ptr::read_volatile(page.add(8) as *const u64),
                core::ptr::read_volatile(page.add(16) as *const i64),
            )
        };
        if before == SEQUENCE_INVALID || before == SEQUENCE_INVALID_LEGACY {
            return None;
        }
        let result = with(scale, offset);
        // SAFETY: as above.
        if unsafe { core::ptr::read_volatile(page as *const u32) } == before {
            return Some(result);
        }
    }
}

/// `((tsc * scale) >> 64) + offset`: the high half of the 128-bit product plus the signed
/// offset, wrapping like the guests' u64 arithmetic (TLFS "Timers"; Linux `hv_read_tsc_page`).
pub const fn reference_time(tsc: u64, scale: u64, offset: i64) -> u64 {
    let scaled = ((tsc as u128 * scale as u128) >> 64) as u64;
    scaled.wrapping_add_signed(offset)
}

/// Scale for a TSC of `tsc_hz`: `floor(2^64 * 10^7 / tsc_hz)` (reference §2.2).
///
/// The scale is a fraction below 1, so it cannot express a TSC of 10 MHz or slower: for those
/// (and for 0 Hz) this returns `u64::MAX`, the largest scale, rather than wrapping. Real TSCs
/// run far above 10 MHz.
pub const fn scale_for(tsc_hz: u64) -> u64 {
    if tsc_hz == 0 {
        return u64::MAX;
    }
    let scale = ((TICKS_PER_SECOND as u128) << 64) / tsc_hz as u128;
    if scale > u64::MAX as u128 { u64::MAX } else { scale as u64 }
}

/// The TSC frequency in Hz that a page's `scale` stands for: the inverse of [`scale_for`],
/// so a guest learns the TSC frequency from the page without calibrating (0 for scale 0,
/// which no valid page holds). Exact to the hertz for TSCs between 10 MHz and 10 THz:
/// `scale_for` floors, this floors again, and the two roundings stay below 1 Hz there.
pub const fn tsc_hz(scale: u64) -> u64 {
    if scale == 0 {
        return 0;
    }
    (((TICKS_PER_SECOND as u128) << 64) / scale as u128) as u64
}

/// The sequence to store after `current`: the next value, skipping both invalid values.
pub const fn next_sequence(current: u32) -> u32 {
    let mut next = current.wrapping_add(1);
    while next == SEQUENCE_INVALID || next == SEQUENCE_INVALID_LEGACY {
        next = next.wrapping_add(1);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_hand_computed() {
        // 2^64 * 10^7 / 2.5e9 = 2^64 / 250 = 73786976294838206.464
        assert_eq!(scale_for(2_500_000_000), 73_786_976_294_838_206);
        // 2^64 / 300 = 61489146912365172.05
        assert_eq!(scale_for(3_000_000_000), 61_489_146_912_365_172);
        // 20 MHz is exactly one half.
        assert_eq!(scale_for(20_000_000), 1 << 63);
    }

    #[test]
    fn scale_saturates_at_and_below_10_mhz() {
        // 2^64 * 10^7 / 10^7 = 2^64 does not fit.
        assert_eq!(scale_for(10_000_000), u64::MAX);
        assert_eq!(scale_for(1), u64::MAX);
        assert_eq!(scale_for(0), u64::MAX);
        assert_eq!(scale_for(10_000_001), 18_446_742_229_035_328_712);
    }

    #[test]
    fn reference_time_hand_computed() {
        // One half of 1000 ticks, minus 100.
        assert_eq!(reference_time(1000, 1 << 63, -100), 400);
        assert_eq!(reference_time(1000, 1 << 63, 7), 507);
        // One second of a 2.5 GHz TSC: the floored scale loses a fraction of a tick.
        let scale = scale_for(2_500_000_000);
        assert_eq!(reference_time(2_500_000_000, scale, 0), 9_999_999);
        assert_eq!(reference_time(2_500_000_000, scale, 5), 10_000_004);
        assert_eq!(reference_time(2_500_000_000, scale, -9_999_999), 0);
        // Full-width product: (2^64-1)^2 >> 64 = 2^64 - 2.
        assert_eq!(reference_time(u64::MAX, u64::MAX, 0), u64::MAX - 1);
        assert_eq!(reference_time(0, u64::MAX, -1), u64::MAX);
    }

    #[test]
    fn tsc_hz_inverts_scale() {
        // 2^64 * 10^7 / 73786976294838206 = 2.5e9 + 1.6e-8
        assert_eq!(tsc_hz(scale_for(2_500_000_000)), 2_500_000_000);
        assert_eq!(tsc_hz(1 << 63), 20_000_000);
        for hz in [10_000_001, 1_000_000_007, 2_598_059_000, 3_000_000_000, 4_999_999_999, 10_000_000_000_000] {
            assert_eq!(tsc_hz(scale_for(hz)), hz, "{hz} Hz");
        }
        assert_eq!(tsc_hz(0), 0);
    }

    #[test]
    fn page() {
        let page = ReferenceTscPage::new(3, 1 << 63, -100);
        assert!(page.is_valid());
        assert_eq!(page.reference_time(1000), 400);
        assert!(!ReferenceTscPage::DISABLED.is_valid());
        assert_eq!(ReferenceTscPage::DISABLED.tsc_scale, 0);
        assert!(!ReferenceTscPage::new(u32::MAX, 1, 0).is_valid());
    }

    #[test]
    fn sequence_skips_invalid_values() {
        assert_eq!(next_sequence(0), 1);
        assert_eq!(next_sequence(1), 2);
        assert_eq!(next_sequence(0xFFFF_FFFD), 0xFFFF_FFFE);
        assert_eq!(next_sequence(0xFFFF_FFFE), 1);
        assert_eq!(next_sequence(0xFFFF_FFFF), 1);
    }
}
