//! Threads of a Rust std program (apps/threads) on the unikernel runtime, in a partition
//! with two vCPUs.

use bulkhead_tests::{Run, every_backend};

every_backend! {
    /// apps/threads on a 2-vCPU partition: two threads that each spin until the other has
    /// started finish (so they ran at once, on two CPUs, whose APIC IDs differ); Mutex (4
    /// threads x 2000 increments), Condvar (100 turns in alternation), mpsc (3 producers
    /// in order, a rendezvous channel), thread_local! (a fresh initialised copy per
    /// thread, destructors at thread exit), Barrier (4 threads x 5 rounds, one leader
    /// each), sleeps of 1, 10 and 50 ms never early and at most 250 ms late against the
    /// reference time, two sleepers waking in deadline order, a Condvar wait and a
    /// `recv_timeout` timing out, joining an ended thread, and 200 short threads through
    /// a 128-slot table. The program panics on any failed check (a partition fault).
    fn threads_std_program_on_two_cpus(emulator) {
        let report = Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-threads.toml")
            .expect("[threads] threads: 2 cpus, main on APIC ID ")
            .expect("[threads] threads: spawn/join ran in parallel on cpus with APIC IDs {")
            .expect("[threads] threads: mutex 4 x 2000 increments = 8000")
            .expect("[threads] threads: condvar 100 turns in alternation")
            .expect("[threads] threads: mpsc 3 x 200 messages in order, rendezvous 50")
            .expect("[threads] threads: thread_local! per thread, 4 destructors run")
            .expect("[threads] threads: barrier 4 threads x 5 rounds")
            .expect("[threads] threads: sleep 50 ms took ")
            .expect("[threads] threads: condvar timeout 20 ms took ")
            .expect("[threads] threads: join of an ended thread, 200 short threads")
            .expect("[threads] threads: all checks passed")
            .expect("partition threads: reports PASS")
            .forbid(": fault #")
            .execute();
        report.assert_passed();
    }
}
