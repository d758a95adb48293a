//! Futex wait and wake with hermit-abi 0.5.2's semantics (`sys_futex_wait`,
//! `sys_futex_wake`), as rules over the [`Scheduler`]; the hardware glue reads the futex
//! word and calls these with the scheduler lock held, so a wake can never slip between a
//! waiter's check of the word and its blocking (no lost wake-up).
//!
//! - `futex_wait(address, expected, timeout, flags)`: -EINVAL for a null address, a
//!   negative timeout or unknown flags; -EAGAIN if the word is not `expected`; else blocks
//!   until a wake (0) or until the timeout (-ETIMEDOUT). A null timeout waits for ever; a
//!   timeout is an absolute CLOCK_MONOTONIC time, or relative to now with
//!   `FUTEX_RELATIVE_TIMEOUT` (std always passes it).
//! - `futex_wake(address, count)`: wakes up to `count` waiters on `address` (all of them
//!   for `i32::MAX`), first come first woken; returns how many; -EINVAL for a null address
//!   or a negative count.

use super::scheduler::{Kicks, Nanos, Scheduler};

pub use hermit_abi::FUTEX_RELATIVE_TIMEOUT;
/// The errno values these calls return (negated).
pub use hermit_abi::errno;

/// A futex call's refusal, as its negative errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FutexError {
    /// -EINVAL.
    Invalid,
    /// -EAGAIN: the word no longer holds the expected value.
    Again,
}

impl FutexError {
    /// The value the `sys_` call returns.
    pub const fn errno(self) -> i32 {
        match self {
            FutexError::Invalid => -errno::EINVAL,
            FutexError::Again => -errno::EAGAIN,
        }
    }
}

/// hermit-abi's `timespec` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: i32,
}

/// A timeout's length in nanoseconds, or `None` for a negative or malformed one.
/// Saturates: a timeout too long to count is for ever in practice (584 years).
pub fn timespec_nanos(t: Timespec) -> Option<Nanos> {
    if t.sec < 0 || !(0..1_000_000_000).contains(&t.nsec) {
        return None;
    }
    Some((t.sec as u64).saturating_mul(1_000_000_000).saturating_add(t.nsec as u64))
}

/// The deadline of a futex wait: `None` waits for ever.
pub fn wait_deadline(timeout: Option<Timespec>, flags: u32, now: Nanos) -> Result<Option<Nanos>, FutexError> {
    if flags & !FUTEX_RELATIVE_TIMEOUT != 0 {
        return Err(FutexError::Invalid);
    }
    let Some(timeout) = timeout else { return Ok(None) };
    let nanos = timespec_nanos(timeout).ok_or(FutexError::Invalid)?;
    Ok(Some(if flags & FUTEX_RELATIVE_TIMEOUT != 0 { now.saturating_add(nanos) } else { nanos }))
}

impl Scheduler {
    /// `cpu`'s thread waits on the futex at `address`, whose word holds `value` (read by
    /// the caller under the scheduler lock). On `Ok` the thread is blocked: the caller
    /// schedules away and, once run again, returns 0 or -ETIMEDOUT by
    /// [`Scheduler::wake_reason`]. A deadline already past times out at once on the next
    /// `expire`.
    pub fn futex_wait(
        &mut self,
        cpu: usize,
        address: usize,
        value: u32,
        expected: u32,
        deadline: Option<Nanos>,
    ) -> Result<(), FutexError> {
        if address == 0 {
            return Err(FutexError::Invalid);
        }
        if value != expected {
            return Err(FutexError::Again);
        }
        self.block_on_futex(cpu, address, deadline);
        Ok(())
    }

    /// Wakes up to `count` threads waiting on `address`; returns how many (and the idle
    /// CPUs to kick).
    pub fn futex_wake(&mut self, address: usize, count: i32) -> Result<(i32, Kicks), FutexError> {
        if address == 0 || count < 0 {
            return Err(FutexError::Invalid);
        }
        let (woken, kicks) = self.wake_futex(address, count as usize);
        // At most MAX_THREADS woken: fits an i32.
        Ok((woken as i32, kicks))
    }
}

#[cfg(test)]
mod tests {
    use super::super::scheduler::{Slot, State, Switch, Wake};
    use super::*;

    const A: usize = 0x2000;

    /// Main on CPU 0 and `n` more threads pinned to CPU 0 (so nothing is stolen), each
    /// run once and blocked on `A`: returns main's slot and the waiters' in wait order.
    fn waiters(n: usize) -> (Scheduler, Slot, heapless::Vec<Slot, 8>) {
        let mut s = Scheduler::new();
        s.cpu_online(0);
        s.cpu_online(1);
        let (_, main) = s.adopt_running(0).unwrap();
        let mut slots = heapless::Vec::new();
        for _ in 0..n {
            let (_, slot, _) = s.spawn(Some(0)).unwrap();
            slots.push(slot).unwrap();
        }
        s.yield_current(0);
        for &slot in &slots {
            assert_eq!(s.schedule(0).to, Some(slot));
            s.futex_wait(0, A, 7, 7, None).unwrap();
        }
        assert_eq!(s.schedule(0).to, Some(main));
        (s, main, slots)
    }

    #[test]
    fn a_waiter_is_woken_once() {
        let (mut s, _, w) = waiters(1);
        assert_eq!(s.state(w[0]), State::Futex { address: A, deadline: None });
        assert_eq!(s.futex_wake(A, 1).unwrap().0, 1);
        assert_eq!(s.state(w[0]), State::Ready);
        assert_eq!(s.wake_reason(w[0]), Wake::Woken);
        // A second wake finds no waiter: the first was woken exactly once.
        assert_eq!(s.futex_wake(A, 1).unwrap().0, 0);
        assert_eq!(s.futex_wake(A, i32::MAX).unwrap().0, 0);
    }

    #[test]
    fn wake_of_n_wakes_n_in_arrival_order() {
        let (mut s, _, w) = waiters(4);
        assert_eq!(s.futex_wake(A, 2).unwrap().0, 2);
        assert_eq!(s.state(w[0]), State::Ready);
        assert_eq!(s.state(w[1]), State::Ready);
        assert!(matches!(s.state(w[2]), State::Futex { .. }));
        assert!(matches!(s.state(w[3]), State::Futex { .. }));
        assert_eq!(s.futex_wake(A, i32::MAX).unwrap().0, 2);
        assert!(w.iter().all(|&slot| s.state(slot) == State::Ready));
    }

    #[test]
    fn wake_touches_only_its_address() {
        let (mut s, _, w) = waiters(1);
        assert_eq!(s.futex_wake(A + 4, i32::MAX).unwrap().0, 0);
        assert!(matches!(s.state(w[0]), State::Futex { .. }));
    }

    #[test]
    fn a_timeout_fires_and_reports_timed_out() {
        let mut s = Scheduler::new();
        s.cpu_online(0);
        let (_, main) = s.adopt_running(0).unwrap();
        let deadline = wait_deadline(Some(Timespec { sec: 0, nsec: 500 }), FUTEX_RELATIVE_TIMEOUT, 1_000).unwrap();
        assert_eq!(deadline, Some(1_500));
        s.futex_wait(0, A, 0, 0, deadline).unwrap();
        assert_eq!(s.schedule(0), Switch { from: Some(main), to: None });
        assert_eq!(s.next_deadline(), Some(1_500));
        let _ = s.expire(1_499);
        assert!(matches!(s.state(main), State::Futex { .. }));
        assert_eq!(s.expire(1_500), Kicks(1));
        assert_eq!(s.wake_reason(main), Wake::TimedOut);
        // Gone from the futex: a later wake finds nobody.
        assert_eq!(s.futex_wake(A, 1).unwrap().0, 0);
    }

    #[test]
    fn a_wake_before_the_deadline_wins_over_the_timeout() {
        let mut s = Scheduler::new();
        s.cpu_online(0);
        let (_, main) = s.adopt_running(0).unwrap();
        s.futex_wait(0, A, 0, 0, Some(100)).unwrap();
        let _ = s.schedule(0);
        assert_eq!(s.futex_wake(A, 1).unwrap().0, 1);
        let _ = s.expire(200);
        assert_eq!(s.wake_reason(main), Wake::Woken);
        assert_eq!(s.state(main), State::Ready);
    }

    #[test]
    fn no_lost_wakeup_when_wake_races_wait() {
        // The waiter's step (read the word, compare, block) and the waker's steps (store
        // the new value, then wake) are each atomic under the scheduler lock. In every
        // interleaving the waiter ends up either not blocked (it saw the new value) or
        // woken: never blocked with the word changed.
        for waker_first in 0..=2 {
            let mut s = Scheduler::new();
            s.cpu_online(0);
            s.cpu_online(1);
            let (_, waiter) = s.adopt_running(0).unwrap();
            let mut word = 0u32;
            let mut waiter_blocked = false;
            let mut waker_step = 0;
            let waker_run = |s: &mut Scheduler, word: &mut u32, step: &mut i32| {
                match *step {
                    0 => *word = 1,
                    _ => {
                        let _ = s.futex_wake(A, 1).unwrap();
                    }
                }
                *step += 1;
            };
            for _ in 0..waker_first {
                waker_run(&mut s, &mut word, &mut waker_step);
            }
            match s.futex_wait(0, A, word, 0, None) {
                Ok(()) => waiter_blocked = true,
                Err(e) => assert_eq!(e, FutexError::Again),
            }
            while waker_step < 2 {
                waker_run(&mut s, &mut word, &mut waker_step);
            }
            if waiter_blocked {
                assert_eq!(s.state(waiter), State::Ready, "order {waker_first}: the waiter must have been woken");
            } else {
                assert!(waker_first >= 1, "the waiter only returns early once the word changed");
            }
        }
    }

    #[test]
    fn wait_refuses_a_changed_word_null_address_and_bad_arguments() {
        let mut s = Scheduler::new();
        s.cpu_online(0);
        let (_, main) = s.adopt_running(0).unwrap();
        assert_eq!(s.futex_wait(0, A, 1, 2, None), Err(FutexError::Again));
        assert_eq!(s.futex_wait(0, 0, 0, 0, None), Err(FutexError::Invalid));
        assert_eq!(s.state(main), State::Running);
        assert_eq!(s.futex_wake(0, 1).map(|r| r.0), Err(FutexError::Invalid));
        assert_eq!(s.futex_wake(A, -1).map(|r| r.0), Err(FutexError::Invalid));
        assert_eq!(wait_deadline(None, 2, 0), Err(FutexError::Invalid));
        assert_eq!(wait_deadline(Some(Timespec { sec: -1, nsec: 0 }), 1, 0), Err(FutexError::Invalid));
        assert_eq!(wait_deadline(Some(Timespec { sec: 0, nsec: 1_000_000_000 }), 1, 0), Err(FutexError::Invalid));
        assert_eq!(FutexError::Again.errno(), -11);
    }

    #[test]
    fn absolute_and_relative_deadlines() {
        let t = Some(Timespec { sec: 2, nsec: 5 });
        assert_eq!(wait_deadline(t, 0, 1_000), Ok(Some(2_000_000_005)));
        assert_eq!(wait_deadline(t, FUTEX_RELATIVE_TIMEOUT, 1_000), Ok(Some(2_000_001_005)));
        assert_eq!(wait_deadline(None, FUTEX_RELATIVE_TIMEOUT, 1_000), Ok(None));
        assert_eq!(wait_deadline(Some(Timespec { sec: i64::MAX, nsec: 0 }), 1, 5), Ok(Some(u64::MAX)));
    }
}
