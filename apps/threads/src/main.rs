//! Threads in a Bulkhead partition with two vCPUs, through plain `std`: each check prints
//! one `threads: ...` line and panics (a partition fault, so a failed run) when the
//! runtime gets it wrong. The HIL test `unikernel_threads` (tests/tests/hil/unikernel.rs)
//! runs it on every backend.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Longest a check waits for another thread before it fails (instead of hanging).
const PATIENCE: Duration = Duration::from_secs(20);
/// How late a sleep may end: generous, for emulators; the exact latency is measured by
/// `cargo xtask bench`, not here.
const SLEEP_BOUND: Duration = Duration::from_millis(250);

/// The initial APIC ID of the CPU running the caller (CPUID leaf 1, EBX[31:24]; SDM Vol.
/// 2A CPUID): each vCPU keeps its core's. Eight bits, enough for the test boards. Leaf
/// 0xB's x2APIC ID is not used: where the hardware has no x2APIC (Bochs `ryzen`) it
/// reads 0 on every vCPU.
fn apic_id() -> u32 {
    core::arch::x86_64::__cpuid(1).ebx >> 24
}

/// Two threads that each spin (never blocking or yielding) until the other has started:
/// both finish only if they run at the same time, on two CPUs.
fn parallel_on_two_cpus() {
    let started = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
    let handles: Vec<_> = (0..2)
        .map(|me| {
            let started = started.clone();
            thread::spawn(move || {
                started[me].store(true, Ordering::SeqCst);
                let begin = Instant::now();
                while !started[1 - me].load(Ordering::SeqCst) {
                    assert!(begin.elapsed() < PATIENCE, "thread {me}: the other thread never ran beside it");
                    std::hint::spin_loop();
                }
                apic_id()
            })
        })
        .collect();
    let ids: BTreeSet<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(ids.len(), 2, "both spinning threads ran on one CPU: {ids:?}");
    println!("threads: spawn/join ran in parallel on cpus with APIC IDs {ids:?}");
}

fn mutex() {
    let counter = Arc::new(Mutex::new(0u64));
    let mut cpus = BTreeSet::new();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let counter = counter.clone();
            thread::spawn(move || {
                let mut seen = BTreeSet::new();
                for i in 0..2000 {
                    *counter.lock().unwrap() += 1;
                    if i % 100 == 0 {
                        seen.insert(apic_id());
                        thread::yield_now();
                    }
                }
                seen
            })
        })
        .collect();
    for h in handles {
        cpus.extend(h.join().unwrap());
    }
    assert_eq!(*counter.lock().unwrap(), 8000);
    println!("threads: mutex 4 x 2000 increments = 8000 on cpus {cpus:?}");
}

fn condvar() {
    // Ping-pong: each side waits for its turn; 100 turns in strict alternation.
    let state = Arc::new((Mutex::new(0u32), Condvar::new()));
    let other = state.clone();
    let ponger = thread::spawn(move || {
        let (turn, cv) = &*other;
        for round in 0..50 {
            let mut t = cv.wait_while(turn.lock().unwrap(), |t| *t % 2 == 0).unwrap();
            assert_eq!(*t, 2 * round + 1);
            *t += 1;
            cv.notify_all();
        }
    });
    let (turn, cv) = &*state;
    for round in 0..50 {
        let mut t = cv.wait_while(turn.lock().unwrap(), |t| *t % 2 == 1).unwrap();
        assert_eq!(*t, 2 * round);
        *t += 1;
        cv.notify_all();
    }
    ponger.join().unwrap();
    let t = *cv.wait_while(turn.lock().unwrap(), |t| *t < 100).unwrap();
    assert_eq!(t, 100);
    println!("threads: condvar 100 turns in alternation");
}

fn channels() {
    let (tx, rx) = mpsc::channel::<(usize, u32)>();
    let producers: Vec<_> = (0..3)
        .map(|p| {
            let tx = tx.clone();
            thread::spawn(move || {
                for n in 0..200 {
                    tx.send((p, n)).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut next = [0u32; 3];
    for (p, n) in rx.iter() {
        assert_eq!(n, next[p], "producer {p}'s messages out of order");
        next[p] += 1;
    }
    for h in producers {
        h.join().unwrap();
    }
    assert_eq!(next, [200; 3]);

    // A rendezvous channel: every send waits for its receive.
    let (tx, rx) = mpsc::sync_channel::<u32>(0);
    let sender = thread::spawn(move || (0..50).for_each(|n| tx.send(n).unwrap()));
    assert_eq!(rx.iter().sum::<u32>(), (0..50).sum());
    sender.join().unwrap();
    println!("threads: mpsc 3 x 200 messages in order, rendezvous 50");
}

static DESTRUCTORS: AtomicUsize = AtomicUsize::new(0);

struct CountsDrop;
impl Drop for CountsDrop {
    fn drop(&mut self) {
        DESTRUCTORS.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    /// Initialised data: each thread's block is a fresh copy of the TLS image.
    static VALUE: Cell<u64> = const { Cell::new(0x5eed) };
    static GUARD: RefCell<Option<CountsDrop>> = const { RefCell::new(None) };
}

fn thread_locals() {
    VALUE.set(1);
    let handles: Vec<_> = (2..6u64)
        .map(|me| {
            thread::spawn(move || {
                assert_eq!(VALUE.get(), 0x5eed, "a new thread's thread-local does not start from its initial value");
                VALUE.set(me);
                GUARD.with(|g| *g.borrow_mut() = Some(CountsDrop));
                // Let the others run (and set theirs) on this CPU and the other.
                for _ in 0..5 {
                    thread::sleep(Duration::from_millis(1));
                    assert_eq!(VALUE.get(), me, "thread {me}'s thread-local changed under it");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(VALUE.get(), 1, "the main thread's thread-local changed");
    assert_eq!(DESTRUCTORS.load(Ordering::SeqCst), 4, "thread-local destructors did not run at thread exit");
    println!("threads: thread_local! per thread, 4 destructors run");
}

fn barrier() {
    const N: usize = 4;
    let barrier = Arc::new(Barrier::new(N));
    let arrived = Arc::new(AtomicUsize::new(0));
    let leaders = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..N)
        .map(|_| {
            let (barrier, arrived, leaders) = (barrier.clone(), arrived.clone(), leaders.clone());
            thread::spawn(move || {
                for round in 0..5 {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    if barrier.wait().is_leader() {
                        leaders.fetch_add(1, Ordering::SeqCst);
                    }
                    assert!(arrived.load(Ordering::SeqCst) >= N * (round + 1), "left the barrier early");
                    barrier.wait();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(leaders.load(Ordering::SeqCst), 5, "one leader per round");
    println!("threads: barrier {N} threads x 5 rounds");
}

fn sleeps_and_timeouts() {
    for ms in [1u64, 10, 50] {
        let asked = Duration::from_millis(ms);
        let begin = Instant::now();
        thread::sleep(asked);
        let took = begin.elapsed();
        assert!(took >= asked, "sleep({asked:?}) returned early, after {took:?}");
        assert!(took <= asked + SLEEP_BOUND, "sleep({asked:?}) took {took:?}");
        println!("threads: sleep {ms} ms took {} us", took.as_micros());
    }
    // Two sleepers on two CPUs wake in deadline order.
    let order = Arc::new(Mutex::new(Vec::new()));
    let sleepers: Vec<_> = [30u64, 10]
        .into_iter()
        .map(|ms| {
            let order = order.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(ms));
                order.lock().unwrap().push(ms);
            })
        })
        .collect();
    sleepers.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(*order.lock().unwrap(), [10, 30]);

    // A futex wait that times out.
    let pair = (Mutex::new(()), Condvar::new());
    let begin = Instant::now();
    let (_guard, result) = pair.1.wait_timeout(pair.0.lock().unwrap(), Duration::from_millis(20)).unwrap();
    let took = begin.elapsed();
    assert!(result.timed_out(), "nobody notified, yet the wait did not time out");
    assert!(took >= Duration::from_millis(20) && took <= Duration::from_millis(20) + SLEEP_BOUND, "took {took:?}");
    let (_tx, rx) = mpsc::channel::<()>();
    assert_eq!(rx.recv_timeout(Duration::from_millis(10)), Err(mpsc::RecvTimeoutError::Timeout));
    println!("threads: condvar timeout 20 ms took {} us, recv_timeout ok", took.as_micros());
}

fn join_and_reuse() {
    // Joining a thread that has already ended returns its value.
    let early = thread::spawn(|| 42);
    thread::sleep(Duration::from_millis(5));
    assert_eq!(early.join().unwrap(), 42);
    // More threads over time than the table holds at once: ended threads free their slots
    // and stacks (small stacks: 200 x 64 KiB is more than the heap).
    let mut total = 0;
    for batch in 0..10 {
        let handles: Vec<_> = (0..20)
            .map(|i| thread::Builder::new().stack_size(64 * 1024).spawn(move || batch * 20 + i).unwrap())
            .collect();
        total += handles.into_iter().map(|h| h.join().unwrap()).sum::<usize>();
    }
    assert_eq!(total, (0..200).sum());
    println!("threads: join of an ended thread, 200 short threads");
}

fn main() {
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    println!("threads: {cpus} cpus, main on APIC ID {}", apic_id());
    assert!(cpus >= 2, "threads need two CPUs for this test");
    parallel_on_two_cpus();
    mutex();
    condvar();
    channels();
    thread_locals();
    barrier();
    sleeps_and_timeouts();
    join_and_reuse();
    println!("threads: all checks passed");
}
