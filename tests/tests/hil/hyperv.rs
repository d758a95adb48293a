//! The Hyper-V hypercall interface (TLFS) on every backend: discovery as Linux checks it,
//! the hypercall page, and each failure status with its exact RAX value.

use bulkhead_tests::{Run, every_backend};

every_backend! {
    /// A partition with no connections: "Microsoft Hv" with the HYPERCALL and VP_INDEX
    /// privileges Linux requires and no hypercall privilege (EBX 0, never CpuManagement);
    /// VP_INDEX 0; TIME_REF_COUNT advances and the reference TSC page agrees with it; the
    /// hypercall page enables; both calls are ACCESS_DENIED, an unknown call code is
    /// INVALID_HYPERCALL_CODE, and calling the hypercall page from ring 3 raises #UD at its
    /// first instruction (logged by the hypervisor). Synthetic MSR writes the TLFS refuses
    /// (a reserved bit of SCONTROL, SINT0, VP_ASSIST_PAGE, SIMP or HYPERCALL, a SINT vector
    /// below 16, a VP assist page or SIEFP outside the partition, a read-only register) each
    /// get #GP and change nothing; legal values are accepted and read back.
    fn hyperv_discovery_and_access_denied_without_connections(emulator) {
        Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-hyperv-alone.toml")
            .expect("[alone] hyperv: vendor microsoft=true max leaf 0x40000006 interface 0x31237648 privileges eax 0xa66 ebx 0x0")
            .expect("[alone] hyperv: vp index 0 hypercall page enabled=true")
            .expect("[alone] hyperv: reference time page valid=true between the MSR reads=true")
            .expect("[alone] hyperv: unknown call code status 0x2")
            .expect("[alone] hyperv: post message without connections status 0x6")
            .expect("[alone] hyperv: signal event without connections status 0x6")
            .expect("[alone] hyperv: hypercall from CPL 3 raised #UD at the hypercall page")
            .expect("[alone] hyperv: synthetic MSR writes refused with #GP=true (11 cases), registers unchanged=true, legal values accepted=true")
            .expect("partition alone: hypercall refused (#UD)")
            .expect("partition alone: reports PASS")
            .forbid(": fault #")
            .execute()
            .assert_passed();
    }
}

every_backend! {
    /// One hypercall per failure status, each asserted with its exact value (TLFS status
    /// codes; reference §3.3, §4.1, §4.2): the receiver never enables its SynIC.
    fn hyperv_hypercall_failures_get_their_status(emulator) {
        Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-hyperv.toml")
            .expect("[sender] hyperv: unknown call code status 0x2")
            .expect("[sender] hyperv: reserved input bit status 0x3")
            .expect("[sender] hyperv: misaligned input status 0x4")
            .expect("[sender] hyperv: page-crossing input status 0x4")
            .expect("[sender] hyperv: input outside memory status 0x4")
            .expect("[sender] hyperv: payload of 241 bytes status 0x5")
            .expect("[sender] hyperv: message type 0 status 0x5")
            .expect("[sender] hyperv: unknown connection status 0x12")
            .expect("[sender] hyperv: connection of another partition status 0x6")
            .expect("[sender] hyperv: message on an event connection status 0x11")
            .expect("[sender] hyperv: flag number 1 status 0x5")
            .expect("[sender] hyperv: post to a disabled SynIC status 0x18")
            .expect("[sender] hyperv: signal to a disabled SynIC status 0x18")
            .expect("[sender] hyperv: memory-form flag number 1 status 0x5")
            .expect("[sender] hyperv: memory-form signal to a disabled SynIC status 0x18")
            .expect("partition sender: reports PASS")
            .forbid(": fault #")
            .execute()
            .assert_passed();
    }
}

/// A run of the messaging system with scenario `case` on both partitions; it passes when
/// ping reports PASS having received pong's passing verdict.
fn messaging(emulator: bulkhead_tests::Emulator, case: &str) -> Run {
    Run::new(emulator)
        .cpus(2)
        .scenario("tests/configs/bochs-messaging.toml")
        .switch(format!("ping:case={case}"))
        .switch(format!("pong:case={case}"))
        .forbid("messaging: unknown case")
        .expect("[ping] messaging: pong's verdict pass")
        .expect("partition ping: reports PASS")
}

every_backend! {
    /// Message and event ping-pong, interrupt-driven on both sides: 200 message round
    /// trips with payloads of 1 to 200 bytes arriving intact, then 200 event round trips;
    /// each side takes exactly one SINT interrupt per message and per signal.
    fn hyperv_message_and_event_ping_pong(emulator) {
        messaging(emulator, "pingpong")
            .expect("[ping] messaging: 200 message round trips, payloads intact=true, message interrupts 200")
            .expect("[pong] messaging: 200 message round trips, payloads intact=true, message interrupts 200")
            .expect("[ping] messaging: 200 event round trips, flags set and signals accepted=true, event interrupts 200")
            .expect("[pong] messaging: 200 event round trips, flags set and signals accepted=true, event interrupts 200")
            .forbid(": fault #")
            .execute()
            .assert_passed();
    }
}

every_backend! {
    /// Load: both partitions send 100 000 numbered messages at once (16-byte payloads,
    /// polling their slots); every INSUFFICIENT_BUFFERS is retried and counted (there are
    /// some: queues hold 4), and each side receives all 100 000 in order, none twice.
    fn hyperv_load_100000_messages_each_way(emulator) {
        messaging(emulator, "load")
            .timeout(std::time::Duration::from_secs(600))
            // Each side's verdict requires all received in order, none twice; ping's also
            // that INSUFFICIENT_BUFFERS was retried (on both sides in Bochs; under QEMU's
            // free-running vCPUs one side may always find room).
            .expect("[ping] messaging: sent 100000 (")
            .expect("[pong] messaging: sent 100000 (")
            .expect("[ping] messaging: INSUFFICIENT_BUFFERS retried on both sides together: ")
            .forbid("together: 0")
            .forbid(": fault #")
            .execute()
            .assert_passed();
    }
}

every_backend! {
    /// Event coalescing: 1000 signals while pong leaves the flag set raise one interrupt
    /// and set the flag once. Then a full queue: the slot and the connection's queue depth
    /// (4) accept 5 messages, the sixth gets INSUFFICIENT_BUFFERS (0x13); pong drains them
    /// in order, MessagePending set while more wait, each delivered on its EOM.
    fn hyperv_events_coalesce_and_full_queue_refuses(emulator) {
        messaging(emulator, "flow")
            .expect("[ping] messaging: 1000 signals accepted of 1000")
            .expect("[pong] messaging: after 1000 signals: 1 event interrupt(s), flag set=true, set again after taking=false")
            .expect("[ping] messaging: 5 messages accepted, then status 0x13")
            .expect("[pong] messaging: drained 5 queued messages in order=true, MessagePending [true, true, true, true, false], nothing more=true")
            .forbid(": fault #")
            .execute()
            .assert_passed();
    }
}

every_backend! {
    /// Restart safety: pong queues 3 messages for ping, ping fills pong's queue, pong
    /// faults and restarts. Ping's posts get INSUFFICIENT_BUFFERS until the queue is
    /// drained, then INVALID_SYNIC_STATE until pong enables its SynIC again (how many
    /// depends on timing; no other status may appear); the first
    /// message pong sees afterwards is the new one, and ping still gets pong's 3 earlier
    /// messages, in order.
    fn hyperv_restart_drains_queues_to_the_partition_only(emulator) {
        messaging(emulator, "restart")
            .allow_errors()
            .expect("[pong] messaging: pong faults now")
            .expect("partition pong: fault #1: triple fault on cpu 1")
            .forbid("partition ping: fault")
            .expect("partition pong: restart 1 of 1 (memory zeroed, payload reloaded)")
            .expect("[pong] messaging: after the restart, first message type 6 (HELLO is 6), then nothing")
            // Ping's verdict also requires that no status but these two was seen.
            .expect("[ping] messaging: 5 messages queued for pong (then 0x13); while it restarted:")
            .expect("[ping] messaging: pong's messages from before its restart: [100, 101, 102]")
            .execute()
            .assert_passed();
    }
}

/// "partition NAME: exits: total A, io B, msr C, cpuid D, other E": the count of `kind`.
fn exit_count(report: &bulkhead_tests::Report, partition: &str, kind: &str) -> Option<u64> {
    let text = format!("partition {partition}: exits: ");
    let line = report.lines.iter().map(|l| l.message()).find(|l| l.starts_with(&text))?;
    line.split(&format!("{kind} ")).nth(1)?.split(',').next()?.trim().parse().ok()
}

every_backend! {
    /// The clock interface Linux uses (reference §1.4, guests.md B.2/B.3): CPUID 0x4000_0003
    /// offers the frequency MSRs (EAX bit 11, EDX bit 8), the reference TSC page (EAX bit
    /// 9) and the crash MSRs (EDX bit 10), not invariant TSC (EAX bit 15); TSC_FREQUENCY
    /// agrees with the guest's own TSC count against TIME_REF_COUNT and APIC_FREQUENCY
    /// with its own APIC timer count (each within 10%), both are read-only; 20 000 reads
    /// of the reference TSC page never go back, advance and stay between two MSR reads,
    /// and cost no exits (the partition's MSR exits stay far below the reads); after a
    /// write of IA32_TSC the page still agrees with TIME_REF_COUNT.
    fn hyperv_clock_frequency_msrs_and_reference_tsc_page(emulator) {
        let report = Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-hyperv-clock.toml")
            .expect("[alone] hvclock: cpuid 0x40000003 eax 0xa66 edx 0x500: frequency msrs, reference tsc, crash msrs, no invariant tsc=true")
            .expect("[alone] hvclock: tsc frequency ")
            .expect("[alone] hvclock: apic frequency ")
            .forbid("within 10%=false")
            .expect("[alone] hvclock: frequency msr writes refused with #GP=true")
            .expect("[alone] hvclock: reference tsc page: 20000 reads, monotonic=true advanced=true between the MSR reads=true")
            .expect("[alone] hvclock: after a tsc write the page still agrees with the MSR=true")
            .expect("partition alone: reports PASS")
            .forbid(": fault #")
            .execute();
        report.assert_passed();
        let msr = exit_count(&report, "alone", "msr").expect("no exit counts for partition alone");
        assert!(msr < 1_000, "reading the reference TSC page caused exits: {msr} MSR exits for 20000 reads:\n{}", report.diagnostic());
    }
}

every_backend! {
    /// Guest crash MSRs (TLFS "Guest Crash Enlightenment", Linux `hv_kmsg_dump`): a
    /// report with a message logs P0..P4 and the text as `[crash] panic: ` lines (cleaned
    /// as the console cleans, empty lines skipped, nothing after the NUL), then the fault
    /// policy restarts the partition; the second life reports a message outside its
    /// memory, which gets a log line instead; the third finds the registers reset and
    /// passes. CRASH_CTL reads back both capabilities and refuses a reserved bit with #GP.
    fn hyperv_crash_msrs_log_the_panic_and_apply_the_fault_policy(emulator) {
        let report = Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-hyperv-crash.toml")
            .allow_errors()
            .expect("[crash] hvcrash: life 0, CRASH_CTL reads 0xc000000000000000, parameters [0, 0, 0, 0, 0]")
            .expect("[crash] hvcrash: CRASH_CTL with a reserved bit refused with #GP=true")
            .expect("[crash] panic: crash reported, P0 0x11 P1 0x22 P2 0x33 P3 0x")
            .expect("[crash] panic: Kernel panic - not syncing: bulkhead test crash")
            .expect("[crash] panic: second line?with a tab")
            .expect("[crash] panic: ?[0mend")
            .expect("partition crash: fault #1: the guest reported a crash (Hyper-V crash MSRs)")
            .expect("partition crash: restart 1 of 2 (memory zeroed, payload reloaded)")
            .expect("[crash] hvcrash: life 1, CRASH_CTL reads 0xc000000000000000, parameters [0, 0, 0, 0, 0]")
            .expect("[crash] panic: crash reported, P0 0x11 P1 0x22 P2 0x33 P3 0xf0000000 P4 0x40")
            .expect("[crash] panic: message of 64 bytes at 0xf0000000 is not in the partition's own memory")
            .expect("partition crash: restart 2 of 2 (memory zeroed, payload reloaded)")
            .expect("[crash] hvcrash: third life, crash registers reset=true")
            .expect("partition crash: reports PASS")
            .forbid("filler")
            .forbid("still running after the crash report")
            .execute();
        report.assert_passed();
        let panic_lines = report.lines.iter().filter(|l| l.message().starts_with("[crash] panic: ")).count();
        assert_eq!(panic_lines, 6, "a report line and 3 of text, then a report line and the bad-address line:\n{}", report.diagnostic());
    }
}
