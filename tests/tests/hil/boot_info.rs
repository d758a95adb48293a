//! What a 64-bit payload gets from the hypervisor at start (the boot information in RSI)
//! and Bulkhead's console-write hypercall, on every backend
//! (tests/configs/bochs-bootinfo.toml, guests/src/bin/test-bootinfo.rs).

use bulkhead_tests::{Run, every_backend};

fn run(emulator: bulkhead_tests::Emulator, switch: &str) -> Run {
    Run::new(emulator).cpus(3).scenario("tests/configs/bochs-bootinfo.toml").switch(switch)
}

every_backend! {
    /// The boot information says what the system file says: the partition's name, its
    /// two vCPUs' APIC IDs in VP index order (cores 2, 1), its RAM regions in ascending
    /// order (not the read-only one), and both of its connections with their names,
    /// kinds, directions and SINTs (its shared page is not RAM). The guest also checks
    /// that RSI points at it, that VP 0 is the CPU it runs on, and that its code and stack
    /// lie in the listed memory. Then it overwrites the block and faults: after the
    /// restart (memory zeroed) it finds the block written again, the same.
    fn boot_info_describes_the_partition(emulator) {
        let report = run(emulator, "info:case=info")
            // The guest's deliberate triple fault is logged as an error.
            .allow_errors()
            .expect("[info] bootinfo: life 0")
            .expect("[info] bootinfo: block overwritten, faulting to be restarted")
            .expect("partition info: fault #1: triple fault")
            .expect("partition info: restart 1 of 1 (memory zeroed, payload reloaded)")
            .expect("[info] bootinfo: life 1")
            .forbid("fault #2")
            .expect("[info] bootinfo: RSI 0xa000")
            .expect("[info] bootinfo: name info, 2 vCPUs, APIC IDs [2, 1], own APIC ID 2")
            .expect("[info] bootinfo: memory 0x0+0x1000000 0x4000000+0x200000")
            .expect("[info] bootinfo: connection to-peer id 1 message depth 4 outgoing sint 2")
            .expect("[info] bootinfo: connection from-peer id 2 event flag 5 incoming sint 3")
            .expect("[info] bootinfo: code and stack in the listed memory=true, VP 0 is this CPU=true, to-peer found=true")
            .expect("partition info: reports PASS")
            .execute();
        report.assert_passed();
        let console = report.partition_console("info");
        let memory = console.iter().filter(|l| *l == "bootinfo: memory 0x0+0x1000000 0x4000000+0x200000").count();
        assert_eq!(memory, 2, "exactly the two RAM regions, ascending, in both lives: {console:?}");
        let found = console.iter().filter(|l| l.ends_with("VP 0 is this CPU=true, to-peer found=true")).count();
        assert_eq!(found, 2, "the block right in both lives: {console:?}");
    }
}

every_backend! {
    /// Lines written through the console-write hypercall come out as the partition's
    /// console lines, in order with those written to its UART: one line split over two
    /// calls, two lines in one call. A length above the maximum and a reserved field not 0
    /// are INVALID_PARAMETER, the fast form and the next code of Bulkhead's range
    /// INVALID_HYPERCALL_CODE, an input block crossing its page INVALID_ALIGNMENT, and
    /// none of their text reaches the console.
    fn console_write_hypercall_prints_lines_in_order(emulator) {
        let report = run(emulator, "peer:case=console")
            .forbid(": fault #")
            .expect("[peer] console: length above the maximum status 0x5")
            .expect("[peer] console: reserved field not 0 status 0x5")
            .expect("[peer] console: fast form status 0x2")
            .expect("[peer] console: input crossing its page status 0x4")
            .expect("[peer] console: code 0x8002 status 0x2")
            .expect("[peer] console: calls accepted=true")
            .expect("partition peer: reports PASS")
            .execute();
        report.assert_passed();
        let console = report.partition_console("peer");
        assert_eq!(
            console[..5],
            [
                "console: a line through the UART",
                "console: one line, written in two calls",
                "console: two lines",
                "console: in one call",
                "console: another line through the UART",
            ],
            "the hypercall's lines, whole and in order with the UART's"
        );
    }
}
