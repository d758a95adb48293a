//! The rate limit on a partition's console lines: a token bucket counted in time-stamp
//! counter ticks, with the count of lines it dropped.
//!
//! Every partition line goes out over the one polled UART the hypervisor logs to, which
//! at 115 200 baud carries about 11 500 characters a second: a 100-character line takes
//! about 9 ms. A partition that prints without pause would otherwise hold the console
//! for its whole output and push the hypervisor's own lines (faults, errors) and every
//! other partition's lines behind it. The bucket lets a partition print `burst` lines at
//! once (a boot banner, a test report) and then `per_second` lines a second; the rest are
//! dropped and counted, and the count is reported at most once a second while lines are
//! dropped, and in total at the end of a run.

/// What to do with one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Print it; `dropped` lines were dropped since the last report, to be reported first
    /// (0: nothing to report).
    Print {
        /// Lines dropped since the last report.
        dropped: u64,
    },
    /// Drop it (counted).
    Drop,
}

/// One partition's console line budget.
#[derive(Clone, Copy, Debug)]
pub struct LineBudget {
    /// Credit in ticks; a line costs `ticks_per_line`.
    credit: u64,
    /// When the credit was last brought up to date (ticks; 0: never).
    last: u64,
    /// When the dropped count was last reported.
    last_report: u64,
    /// Dropped since the last report.
    unreported: u64,
    /// Dropped in total.
    dropped: u64,
}

impl Default for LineBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBudget {
    /// A full bucket (it fills up on its first use).
    pub const fn new() -> Self {
        LineBudget { credit: u64::MAX, last: 0, last_report: 0, unreported: 0, dropped: 0 }
    }

    /// Decides for a line at time `now` (ticks, `ticks_per_second` of them a second):
    /// `burst` lines at once, `per_second` lines a second after that.
    pub fn line(&mut self, now: u64, ticks_per_second: u64, per_second: u32, burst: u32) -> Verdict {
        let ticks_per_line = (ticks_per_second / u64::from(per_second.max(1))).max(1);
        let capacity = ticks_per_line.saturating_mul(u64::from(burst.max(1)));
        // A counter that went backwards (another core's TSC) earns nothing.
        let earned = now.saturating_sub(self.last);
        self.credit = self.credit.saturating_add(earned).min(capacity);
        self.last = self.last.max(now);
        if self.credit < ticks_per_line {
            self.dropped += 1;
            self.unreported += 1;
            return Verdict::Drop;
        }
        self.credit -= ticks_per_line;
        let mut dropped = 0;
        if self.unreported > 0 && now.saturating_sub(self.last_report) >= ticks_per_second {
            dropped = core::mem::take(&mut self.unreported);
            self.last_report = now;
        }
        Verdict::Print { dropped }
    }

    /// Lines dropped in total.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 1_000_000;

    fn printed(budget: &mut LineBudget, now: u64, lines: u32) -> u32 {
        (0..lines).filter(|_| matches!(budget.line(now, HZ, 10, 50), Verdict::Print { .. })).count() as u32
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut budget = LineBudget::new();
        assert_eq!(printed(&mut budget, 5 * HZ, 1000), 50);
        assert_eq!(budget.dropped(), 950);
        // One second later: 10 more lines.
        assert_eq!(printed(&mut budget, 6 * HZ, 1000), 10);
        // Half a second: 5.
        assert_eq!(printed(&mut budget, 6 * HZ + HZ / 2, 1000), 5);
        // A long pause refills the burst, no more.
        assert_eq!(printed(&mut budget, 100 * HZ, 1000), 50);
        assert_eq!(budget.dropped(), 4000 - 115);
    }

    #[test]
    fn a_quiet_partition_is_never_limited() {
        let mut budget = LineBudget::new();
        for second in 1..100 {
            assert_eq!(printed(&mut budget, second * HZ, 10), 10);
        }
        assert_eq!(budget.dropped(), 0);
    }

    #[test]
    fn drops_are_reported_at_most_once_a_second_and_all_counted() {
        let mut budget = LineBudget::new();
        let mut reported = 0;
        let mut reports = 0;
        // 100 lines a second for 10 s, in steps of 10 ms.
        for step in 0..1000u64 {
            let now = 10 * HZ + step * HZ / 100;
            if let Verdict::Print { dropped } = budget.line(now, HZ, 10, 50)
                && dropped > 0
            {
                reports += 1;
                reported += dropped;
            }
        }
        assert!(reports <= 10, "{reports} reports");
        assert!(reports >= 8, "{reports} reports");
        assert!(budget.dropped() > 0);
        // What is not reported yet is reported later; never more than was dropped.
        assert!(reported <= budget.dropped());
        assert!(budget.dropped() - reported < 100);
    }

    #[test]
    fn a_clock_going_backwards_earns_nothing() {
        let mut budget = LineBudget::new();
        assert_eq!(printed(&mut budget, 10 * HZ, 100), 50);
        assert_eq!(printed(&mut budget, HZ, 100), 0);
        assert_eq!(printed(&mut budget, 10 * HZ + HZ / 10, 100), 1);
    }
}
