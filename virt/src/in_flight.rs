//! A count of operations in flight, for a lock-free path that a rarer reset must wait out:
//! the hypervisor's HvCallSignalEvent against its receiver's restart
//! (`kernel/src/hyperv/synic.rs`).
//!
//! The operation counts itself ([`InFlight::run`]) before it reads the state that says
//! whether it may act (for the signal: where the receiver's event flags are), and leaves
//! when it is done. The reset first changes that state so that a new operation refuses,
//! then calls [`InFlight::wait_idle`]: an operation that counted itself after the wait
//! looked sees the new state; one that counted itself before is waited for. So once
//! `wait_idle` returns, no operation acts on the old state any more.
//!
//! Why it holds (C++20 [atomics.order] as Rust uses it): the count's increment is a SeqCst
//! read-modify-write and the state's read a SeqCst load; the reset's stores are followed by
//! a SeqCst fence before its SeqCst load of the count. If that load does not see an
//! increment, the increment follows the fence in the single total order, and so does the
//! operation's read of the state, which therefore sees the reset's store.

use core::sync::atomic::{AtomicU32, Ordering, fence};

/// Operations in flight (see the module).
#[derive(Debug, Default)]
pub struct InFlight(AtomicU32);

impl InFlight {
    /// None in flight.
    pub const fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    /// Runs `operation` counted in flight. Its reads of the state a reset changes must be
    /// SeqCst loads.
    #[inline(always)]
    pub fn run<R>(&self, operation: impl FnOnce() -> R) -> R {
        self.0.fetch_add(1, Ordering::SeqCst);
        let result = operation();
        self.0.fetch_sub(1, Ordering::Release);
        result
    }

    /// After the caller's stores that make new operations refuse: returns once no
    /// operation that may have read the state before them is in flight. Spins: the
    /// operations are short and never wait themselves.
    pub fn wait_idle(&self) {
        fence(Ordering::SeqCst);
        while self.0.load(Ordering::SeqCst) != 0 {
            core::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use core::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use std::time::Duration;

    /// The receiver: whether an operation may act (the signal's event-flag page), and what
    /// the operations did (the flags in its memory).
    #[derive(Default)]
    struct Receiver {
        in_flight: InFlight,
        enabled: AtomicU64,
        writes: AtomicU64,
        entered: AtomicU64,
    }

    /// An operation that acts slowly: it reads the state, waits, then writes.
    fn slow_operation(receiver: &Receiver) {
        receiver.in_flight.run(|| {
            if receiver.enabled.load(Ordering::SeqCst) != 0 {
                receiver.entered.store(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
                receiver.writes.fetch_add(1, Ordering::SeqCst);
            }
        });
    }

    #[test]
    fn no_write_lands_after_the_wait() {
        let receiver = Arc::new(Receiver { enabled: AtomicU64::new(1), ..Default::default() });
        let operation = {
            let receiver = Arc::clone(&receiver);
            std::thread::spawn(move || slow_operation(&receiver))
        };
        // The operation has read the old state and is about to write.
        while receiver.entered.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        receiver.enabled.store(0, Ordering::SeqCst);
        receiver.in_flight.wait_idle();
        // What the reset sees now is final: the restart would zero the memory here.
        let at_reset = receiver.writes.load(Ordering::SeqCst);
        operation.join().unwrap();
        assert_eq!(at_reset, 1, "the operation in flight was waited for");
        assert_eq!(receiver.writes.load(Ordering::SeqCst), at_reset, "no write after the wait");
    }

    #[test]
    fn an_operation_after_the_reset_refuses() {
        let receiver = Receiver { enabled: AtomicU64::new(1), ..Default::default() };
        receiver.enabled.store(0, Ordering::SeqCst);
        receiver.in_flight.wait_idle();
        slow_operation(&receiver);
        assert_eq!(receiver.writes.load(Ordering::SeqCst), 0);
        assert_eq!(receiver.in_flight.0.load(Ordering::SeqCst), 0, "left the count as it found it");
    }

    #[test]
    fn many_operations_and_resets() {
        // Operations and resets racing: after each wait no operation writes until the
        // state is enabled again.
        let receiver = Arc::new(Receiver::default());
        let stop = Arc::new(AtomicU64::new(0));
        let workers: std::vec::Vec<_> = (0..2)
            .map(|_| {
                let (receiver, stop) = (Arc::clone(&receiver), Arc::clone(&stop));
                std::thread::spawn(move || {
                    while stop.load(Ordering::SeqCst) == 0 {
                        receiver.in_flight.run(|| {
                            if receiver.enabled.load(Ordering::SeqCst) != 0 {
                                receiver.writes.fetch_add(1, Ordering::SeqCst);
                            }
                        });
                    }
                })
            })
            .collect();
        for _ in 0..2000 {
            receiver.enabled.store(1, Ordering::SeqCst);
            std::thread::yield_now();
            receiver.enabled.store(0, Ordering::SeqCst);
            receiver.in_flight.wait_idle();
            let at_reset = receiver.writes.load(Ordering::SeqCst);
            for _ in 0..50 {
                core::hint::spin_loop();
            }
            assert_eq!(receiver.writes.load(Ordering::SeqCst), at_reset);
        }
        stop.store(1, Ordering::SeqCst);
        for worker in workers {
            worker.join().unwrap();
        }
    }
}
