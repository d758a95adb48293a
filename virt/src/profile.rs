//! The exit profile of `cargo xtask bench --profile` (docs/performance.md, "Profile"): TSC
//! stamps at the phase boundaries of each VM exit, summed per kind of exit.
//!
//! Under Bochs with `clock: sync=none` the TSC counts instructions, so the differences of
//! the stamps are the instructions of each phase. The kernel takes them only when built
//! with its `profile` feature (off by default: without it no stamp exists). Per exit:
//!
//! - `entry` (backend, just before the world switch) and `landed` (just after it returned
//!   to Rust): between them the guest and the transition (the world-switch assembly and
//!   the VM exit and entry);
//! - `before_handler` (the vCPU loop, after the decode and its bookkeeping) and
//!   `after_handler` (the handler's [`Action`](crate::exit) came back);
//! - `resumed` (the action done: skip or inject), then the next exit's `entry` after the
//!   loop's attention check and liveness count.
//!
//! Dispatch is `landed..before_handler` plus the previous exit's `resumed..entry`; the
//! handler `before_handler..after_handler`; return `after_handler..resumed`. Each interval
//! holds one stamp's own cost (measured by two back-to-back stamps), which is subtracted.
//!
//! A bench loop makes the same exit many times in a row: [`Profile`] keeps, per key, the
//! longest run of consecutive exits with that key, each at most [`OUTSIDE_MAX`] guest
//! instructions after the last, so the sums describe the loop alone (and not the same kind
//! of exit elsewhere in the run, e.g. a console's port writes).

/// Phase sums over a run of exits (instructions, stamp costs already subtracted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    /// Exits in the run.
    pub exits: u64,
    /// Exits whose `entry..landed` interval is in `outside`: all but the run's first, whose
    /// guest part is whatever the guest did before its loop.
    pub outside_exits: u64,
    /// Guest and transition: `entry..landed`.
    pub outside: u64,
    /// Exit landed in Rust to the handler, and the loop's check before the next entry.
    pub dispatch: u64,
    /// The handler.
    pub handler: u64,
    /// The handler's action to the loop's top: skip or inject.
    pub ret: u64,
}

/// One exit's stamps (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
#[allow(missing_docs)]
pub struct Stamps {
    pub entry: u64,
    pub landed: u64,
    pub before_handler: u64,
    pub after_handler: u64,
    pub resumed: u64,
}

/// The longest guest part between two rounds of a loop: an exit of the same kind after
/// more than this (a retry after the guest waited for a full queue, a message of a
/// ping-pong after the guest waited for the answer) begins a new run. The bench loops'
/// guest parts are at most about 400 (the 240-byte post's, world switch included); a
/// ping-pong's wait for the answer is about 650 and more since issue 19.
pub const OUTSIDE_MAX: u64 = 512;

/// Kinds of exit tracked at once (the bench runs make a handful).
pub const KEYS: usize = 16;

/// One CPU's profile: the run in progress and the longest run seen per key.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    stamp_cost: u64,
    /// `resumed` of the previous exit, re-stamped after its recording (0: none yet).
    previous: u64,
    key: u32,
    run: Sums,
    best: [(u32, Sums); KEYS],
}

impl Profile {
    /// No exit yet.
    pub const fn new() -> Profile {
        Profile { stamp_cost: 0, previous: 0, key: u32::MAX, run: Self::EMPTY, best: [(u32::MAX, Self::EMPTY); KEYS] }
    }

    const EMPTY: Sums = Sums { exits: 0, outside_exits: 0, outside: 0, dispatch: 0, handler: 0, ret: 0 };

    /// The stamp cost subtracted from each interval.
    pub fn stamp_cost(&self) -> u64 {
        self.stamp_cost
    }

    /// Sets the stamp cost (`stamp_cost` of the backend).
    pub fn set_stamp_cost(&mut self, cost: u64) {
        self.stamp_cost = cost;
    }

    /// Adds one exit with `key`; `now` is a stamp taken after everything else this
    /// recording does, where the next exit's dispatch begins.
    pub fn record(&mut self, key: u32, s: &Stamps, now: impl FnOnce() -> u64) {
        let c = self.stamp_cost;
        let d = |from: u64, to: u64| to.saturating_sub(from).saturating_sub(c);
        let outside = d(s.entry, s.landed);
        if key != self.key || outside > OUTSIDE_MAX {
            self.finish_run();
            self.key = key;
        }
        let first = self.run.exits == 0;
        let r = &mut self.run;
        r.exits += 1;
        if !first {
            r.outside_exits += 1;
            r.outside += outside;
        }
        let before = if self.previous == 0 { 0 } else { d(self.previous, s.entry) };
        r.dispatch += before + d(s.landed, s.before_handler);
        r.handler += d(s.before_handler, s.after_handler);
        r.ret += d(s.after_handler, s.resumed);
        self.previous = now();
    }

    /// Ends the run in progress: it replaces its key's best run if longer.
    pub fn finish_run(&mut self) {
        if self.run.exits > 0 {
            let key = self.key;
            let slot = self.best.iter().position(|(k, _)| *k == key).or_else(|| {
                // A free slot, else the shortest run kept.
                self.best.iter().position(|(k, _)| *k == u32::MAX).or_else(|| {
                    (0..KEYS).min_by_key(|&i| self.best[i].1.exits).filter(|&i| self.best[i].1.exits < self.run.exits)
                })
            });
            if let Some(i) = slot
                && (self.best[i].0 != key || self.best[i].1.exits < self.run.exits)
            {
                self.best[i] = (key, self.run);
            }
        }
        self.run = Self::EMPTY;
    }

    /// The longest run per key (after [`finish_run`](Self::finish_run)).
    pub fn runs(&self) -> impl Iterator<Item = (u32, &Sums)> {
        self.best.iter().filter(|(k, _)| *k != u32::MAX).map(|(k, s)| (*k, s))
    }
}

impl Default for Profile {
    fn default() -> Self {
        Profile::new()
    }
}

/// Profile keys: one per kind of exit, hypercalls by call code.
#[allow(missing_docs)]
pub mod key {
    pub const CPUID: u32 = 1;
    pub const IO_READ: u32 = 2;
    pub const IO_WRITE: u32 = 3;
    pub const MSR_READ: u32 = 4;
    pub const MSR_WRITE: u32 = 5;
    pub const HLT: u32 = 6;
    pub const OTHER: u32 = 7;
    /// A hypercall: this plus its call code (bits 15:0 of the input value).
    pub const HYPERCALL: u32 = 0x1_0000;
}

/// The profile key of `exit`; `hypercall_input` gives a hypercall's input value.
pub fn key_of(exit: &crate::exit::Exit, hypercall_input: impl FnOnce() -> u64) -> u32 {
    use crate::exit::Exit;
    match exit {
        Exit::Cpuid { .. } => key::CPUID,
        Exit::Io(a) if a.write => key::IO_WRITE,
        Exit::Io(_) => key::IO_READ,
        Exit::MsrRead { .. } => key::MSR_READ,
        Exit::MsrWrite { .. } => key::MSR_WRITE,
        Exit::Hlt => key::HLT,
        Exit::Hypercall => key::HYPERCALL | (hypercall_input() & 0xffff) as u32,
        _ => key::OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamps(base: u64) -> Stamps {
        // 10 outside, 3 dispatch, 20 handler, 4 return; the stamps cost 1 each.
        Stamps {
            entry: base,
            landed: base + 11,
            before_handler: base + 15,
            after_handler: base + 36,
            resumed: base + 41,
        }
    }

    #[test]
    fn a_run_sums_its_phases_without_the_stamps() {
        let mut p = Profile::new();
        p.set_stamp_cost(1);
        for i in 0..5 {
            let base = 100 * (i + 1);
            // Re-stamped at 42: the next entry (100 later) is 57 of dispatch after it.
            p.record(key::CPUID, &stamps(base), || base + 42);
        }
        p.finish_run();
        let (k, s) = p.runs().next().unwrap();
        assert_eq!(k, key::CPUID);
        assert_eq!(s.exits, 5);
        assert_eq!(s.outside_exits, 4);
        assert_eq!(s.outside, 40);
        assert_eq!(s.handler, 100);
        assert_eq!(s.ret, 20);
        // 3 per exit after the landing, and the gap to the next entry (100 - 42 = 58 minus
        // the stamp) for all but the first.
        assert_eq!(s.dispatch, 15 + 4 * 57);
    }

    #[test]
    fn the_longest_run_per_key_is_kept() {
        let mut p = Profile::new();
        for (key, n) in [(key::IO_READ, 3), (key::IO_WRITE, 10), (key::IO_READ, 7), (key::IO_WRITE, 1)] {
            for _ in 0..n {
                p.record(key, &Stamps::default(), || 1);
            }
        }
        p.finish_run();
        let runs: std::vec::Vec<(u32, u64)> = p.runs().map(|(k, s)| (k, s.exits)).collect();
        assert_eq!(runs, [(key::IO_READ, 7), (key::IO_WRITE, 10)]);
    }

    #[test]
    fn a_long_guest_part_begins_a_new_run() {
        let mut p = Profile::new();
        let mut t = 0;
        for gap in [10, 10, 10, 5000, 10, 10] {
            t += 100;
            let s =
                Stamps { entry: t, landed: t + gap, before_handler: t + gap, after_handler: t + gap, resumed: t + gap };
            t += gap;
            p.record(key::MSR_READ, &s, || t);
        }
        p.finish_run();
        let (_, s) = p.runs().next().unwrap();
        assert_eq!((s.exits, s.outside_exits, s.outside), (3, 2, 20));
    }

    #[test]
    fn hypercalls_are_keyed_by_call_code() {
        assert_eq!(key_of(&crate::exit::Exit::Hypercall, || 1 << 16 | 0x5d), key::HYPERCALL | 0x5d);
        assert_eq!(key_of(&crate::exit::Exit::Hlt, || unreachable!()), key::HLT);
    }
}
