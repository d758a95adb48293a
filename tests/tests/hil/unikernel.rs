//! Unikernel partitions: Rust std programs (apps/) on the Bulkhead runtime, on every
//! backend: a program runs and its exit status is the verdict; each way it can fail ends
//! in a defined answer (an `io::Error`) or in the fault policy with a report that says why.

use bulkhead_tests::{Emulator, Run, every_backend};

every_backend! {
    /// apps/hello: println, the command line as `std::env::args`, Box, Vec, a HashMap
    /// (random keys from RDRAND/RDSEED), an initialised `thread_local!` (the TLS block),
    /// Instant and sleep; exit status 0 is PASS.
    fn unikernel_hello_runs_a_std_program(emulator) {
        let report = Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-hermit-hello.toml")
            .expect("[hello] bulkhead runtime: 1 vcpu(s), heap ")
            .expect("[hello] hello from std")
            .expect("[hello] arguments after the program name: one two")
            .expect("[hello] heap: box 42, vec of 1000 squares summing to 333833500")
            .expect("[hello] hash map: two seen 2 times")
            .expect("[hello] thread_local: 42")
            .expect("[hello] sleep: asked 20 ms, slept at least 20 ms: true")
            .expect("partition hello: reports PASS")
            .forbid(": fault #")
            .forbid("[hello] panic:")
            .execute();
        report.assert_passed();
        // The boot information named the partition, and the console is the console-write
        // hypercall, not the UART.
        assert!(report.contains("console hypercall, partition hello"), "{}", report.diagnostic());
        // Seven lines printed, one exit each at most and none a port write: the one I/O
        // exit is the verdict (the UART would have taken one per byte).
        assert!(
            report.contains("partition hello: exits: total") && report.contains(", io 1, "),
            "the program's console output took port I/O exits\n{}",
            report.diagnostic()
        );
    }
}

/// apps/test-faults with `case`, beside a witness that ends the run.
fn faults(emulator: Emulator, case: &str) -> Run {
    Run::new(emulator)
        .cpus(2)
        .scenario("tests/configs/bochs-hermit-faults.toml")
        .switch(format!("faults:{case}"))
        .expect(format!("[faults] faults: case {case}"))
        .forbid("faults: unknown case")
}

/// The lines of a crash the fault policy takes: the crash MSRs' report, the halt.
fn crashed(run: Run) -> Run {
    run.allow_errors()
        .expect("[faults] panic: crash reported, P0 ")
        .expect("partition faults: fault #1: the guest reported a crash (Hyper-V crash MSRs)")
        .expect("partition faults: halted (policy halt); other partitions keep running")
        .expect("partition witness: reports PASS")
        .forbid("partition faults: reports")
}

every_backend! {
    /// `std::fs::File::open` gets ENOSYS (no file system), which std hands the program as
    /// an `io::Error` it prints; the program goes on and passes.
    fn unikernel_unsupported_call_returns_an_error(emulator) {
        faults(emulator, "file")
            .expect("[faults] faults: File::open(\"/etc/hostname\") failed: Function not implemented (os error 38)")
            .expect("partition faults: reports PASS")
            .forbid(": fault #")
            .execute()
            .assert_passed();
    }
}

every_backend! {
    /// Allocating until the heap is exhausted: std's allocation-error handler prints the
    /// failed size, aborts, and the crash report gives the heap's use.
    fn unikernel_heap_exhaustion_aborts_cleanly_with_a_message(emulator) {
        crashed(faults(emulator, "heap"))
            .expect("[faults] faults: 8 MiB allocated")
            .expect("[faults] memory allocation of 1048576 bytes failed")
            .expect("[faults] panic: crash reported, P0 0x100 ")
            .expect("[faults] panic: the program aborted")
            .expect("[faults] panic: heap exhausted: 1048576 bytes (align 1) requested, ")
            .execute()
            .assert_passed();
    }
}

every_backend! {
    /// A panic (panic=abort): std prints it, aborts, and the crash report repeats the
    /// message before the fault policy halts the partition.
    fn unikernel_panic_reaches_the_fault_policy(emulator) {
        crashed(faults(emulator, "panic"))
            .expect("[faults] thread 'main'")
            .expect("[faults] deliberate panic for the fault test")
            .expect("[faults] panic: crash reported, P0 0x100 ")
            .expect("[faults] panic: the program aborted; its last standard error output:")
            .expect("[faults] panic: deliberate panic for the fault test")
            .execute()
            .assert_passed();
    }
}

every_backend! {
    /// A CPU exception in the program: the runtime's IDT reports the vector, error code,
    /// RIP and the faulting address (CR2) through the crash MSRs.
    fn unikernel_exception_is_reported_with_the_faulting_address(emulator) {
        let report = crashed(faults(emulator, "page-fault"))
            .expect("[faults] panic: crash reported, P0 0xe P1 0x0 P2 0x")
            .expect("[faults] panic: exception #PF page fault (vector 14), error code 0x0, RIP 0x")
            .execute();
        report.assert_passed();
        // The address is in the middle of the report's line, which an expectation (a line
        // of the partition's, named by its prefix) cannot pin down.
        assert!(report.contains(", CR2 0x1000000000, RSP 0x"), "the report names the faulting address:\n{}", report.diagnostic());
    }
}
