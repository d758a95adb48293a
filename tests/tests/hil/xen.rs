//! Xen's HVM interface (docs/xen.md) on every backend: a partition with `interface = "xen"`
//! beside a Hyper-V one; each sees its own interface and nothing of the other's.

use bulkhead_tests::{Run, every_backend};

every_backend! {
    /// The Xen partition ("xen", partition id 1) sees exactly Xen's CPUID block
    /// ("XenVMMXenVMM", version 4.17, the hypercall page MSR 0x40000000, vCPU id 0 and domain
    /// id 1, the upcall vector offered), zeros up to 0x400000FF and no "Microsoft Hv" at any
    /// 0x100 step; the hypercall page MSR reads 0, refuses a page index other than 0 and a page outside its memory
    /// with #GP and fills the page with 128 stubs (VMCALL on VT-x, VMMCALL on SVM; stub 23,
    /// the PV-only iret, UD2 as on Xen);
    /// xen_version answers through the page and directly, extraversion ".0-bulkhead",
    /// features 0x105 (writable page tables, auto-translated physmap, the callback
    /// vector), page size 4096; console_io writes reach its console as its own lines;
    /// unknown calls and commands are -ENOSYS, a buffer outside its memory or in a
    /// shared region -EFAULT,
    /// an over-long console write -EINVAL, the Hyper-V MSRs #GP, a call from ring 3
    /// -EPERM; sched_op yield and block return 0. SCHEDOP_shutdown(reboot) then faults the
    /// partition (reason guest-shutdown) and its policy restarts it; the second life finds
    /// the first one's verdict in a shared page and reports. The Hyper-V partition beside
    /// it sees "Microsoft Hv" and no Xen signature anywhere.
    fn xen_interface_calls_errnos_and_shutdown(emulator) {
        let stub_17 = if emulator.is_vmx() { "[b8, 11, 00, 00, 00, 0f, 01, c1, c3]" } else { "[b8, 11, 00, 00, 00, 0f, 01, d9, c3]" };
        let instruction = if emulator.is_vmx() { "vmcall" } else { "vmmcall" };
        let mut run = Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-xen.toml")
            // The shutdown fault is logged as an error.
            .allow_errors()
            .expect("[hyperv] hyperv-side: Microsoft Hv and Hv#1=true, XenVMMXenVMM at 0x40000000..=0x4000ff00 step 0x100: 0 times")
            .expect("[hyperv] hyperv-side: leaves 0x40000100..=0x400001ff zero=true")
            .expect("[xen] xen: cpuid 0x40000000: 0x40000004 0x566e6558 0x65584d4d 0x4d4d566e")
            .expect("[xen] xen: cpuid 0x40000001: 0x40011 0x0 0x0 0x0")
            .expect("[xen] xen: cpuid 0x40000002: 0x1 0x40000000 0x0 0x0")
            .expect("[xen] xen: cpuid 0x40000003: 0x0 0x0 0x0 0x0")
            .expect("[xen] xen: cpuid 0x40000004: 0x58 0x0 0x1 0x0")
            .expect("[xen] xen: cpuid block exact=true (domain id 1), leaves 0x40000005..=0x400000ff zero=true")
            .expect("[xen] xen: cpuid 0x40000000..=0x4000ff00 step 0x100: Microsoft Hv 0 times, XenVMMXenVMM beyond the base 0 times")
            .expect("[xen] xen: hypercall page msr: page index 1 refused with #GP=true, page outside memory refused with #GP=true")
            .expect("[xen] xen: hypercall page msr reads Ok(0) before and Ok(0) after; untouched by the refused writes=true")
            .expect(format!("[xen] xen: hypercall page: 127 stubs as abi::xen writes them ({instruction})=true, stub 23 (iret) starts with ud2=true, stub 17 {stub_17}"))
            .expect(format!("[xen] xen: xen_version 0x40011 through the page, 0x40011 by {instruction} (before the page 0x40011)"))
            .expect("[xen] xen: version Ok((4, 17)), extraversion Some(\".0-bulkhead\") terminated=true, features submap 0 Ok(261) submap 1 Ok(0), page size Ok(4096)")
            // console_io text, line by line with the partition's prefix, like its UART's.
            .expect("[xen] xen: hello through console_io")
            .expect("[xen] xen: second console_io line")
            .expect("[xen] xen: console_io write -> Ok(())");
        for (call, errno) in [
            ("memory_op 99", "-ENOSYS"),
            ("set_timer_op", "-ENOSYS"),
            ("grant_table_op", "-ENOSYS"),
            ("vcpu_op 99", "-ENOSYS"),
            ("event_channel_op 99", "-ENOSYS"),
            ("hvm_op 99", "-ENOSYS"),
            ("call 0", "-ENOSYS"),
            ("call 99", "-ENOSYS"),
            ("call 0x7fffffff", "-ENOSYS"),
            ("xen_version cmd 99", "-ENOSYS"),
            ("console_io read", "-ENOSYS"),
            ("sched_op poll outside memory", "-EFAULT"),
            ("sched_op 99", "-ENOSYS"),
            ("extraversion outside memory", "-EFAULT"),
            ("get_features outside memory", "-EFAULT"),
            ("console_io write outside memory", "-EFAULT"),
            ("sched_op shutdown outside memory", "-EFAULT"),
            ("console_io write from a shared page", "-EFAULT"),
            ("console_io write of 4097 bytes", "-EINVAL"),
            ("sched_op yield", "0x0"),
            ("sched_op block", "0x0"),
        ] {
            run = run.expect(format!("[xen] xen: {call} -> {errno}"));
        }
        run.expect("[xen] xen: refused calls answered as documented=true (20 calls)")
            .expect("[xen] xen: Hyper-V MSRs: 10 of 10 reads and 3 of 3 writes refused with #GP")
            .expect("[xen] xen: xen_version from CPL 3 through the page -> -EPERM")
            .expect("[xen] xen: xen_version from CPL 3 by direct call -> -EPERM")
            .expect("[xen] xen: first life passed=true; SCHEDOP_shutdown(reboot)")
            .expect("partition xen: fault #1: Xen shutdown (reason reboot)")
            .expect("partition xen: restart 1 of 1 (memory zeroed, payload reloaded)")
            .expect("[xen] xen: second life after SCHEDOP_shutdown(reboot): first life passed=true, hypercall page again, version Ok((4, 17))")
            .expect("partition xen: reports PASS")
            .forbid(" wanted ")
            .forbid("still running")
            .forbid("partition hyperv: fault")
            .forbid("fault #2")
            .execute()
            .assert_passed();
    }
}

every_backend! {
    /// Event channels inside the Xen partition ("xen", id 1, beside "hyperv", id 0, whose
    /// SynIC stays off): every memory_op, vcpu_op, hvm_op and event_channel_op refusal
    /// with its Xen errno (docs/xen.md), unknown commands -ENOSYS, arguments outside its
    /// memory -EFAULT; then what works: shared_info and vcpu_info, the callback parameter
    /// read back, the upcall vector; ports from 1 up (the lowest free first), a loopback
    /// pair from alloc_unbound, an IPI and a VIRQ port, each send raising its peer port
    /// with an upcall on the vector and the 2-level scan finding it; a masked port stays
    /// pending without an upcall until EVTCHNOP_unmask; status of every port kind; close.
    fn xen_event_channel_refusals_and_loopback(emulator) {
        let mut run = Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-xen-refusals.toml")
            .forbid(" wanted ")
            .forbid(": fault #");
        for (call, answer) in [
            ("bind_ipi before shared_info", "-EINVAL"),
            ("memory_op add_to_physmap grant_table", "-EINVAL"),
            ("memory_op add_to_physmap shared_info idx 1", "-EINVAL"),
            ("memory_op add_to_physmap for another domain", "-EPERM"),
            ("memory_op add_to_physmap argument outside memory", "-EFAULT"),
            ("memory_op 99", "-ENOSYS"),
            ("memory_op add_to_physmap shared_info", "0x0"),
            ("memory_op add_to_physmap shared_info again, own domain id", "0x0"),
            ("vcpu_op is_up vcpu 0", "0x1"),
            ("vcpu_op is_up vcpu 1", "-ENOENT"),
            ("vcpu_op register_vcpu_info vcpu 1", "-ENOENT"),
            ("vcpu_op register_vcpu_info across a page", "-EINVAL"),
            ("vcpu_op register_vcpu_info", "0x0"),
            ("vcpu_op register_vcpu_info again", "-EINVAL"),
            ("vcpu_op 99", "-ENOSYS"),
            ("hvm_op set_param callback_irq", "0x0"),
            ("hvm_op get_param callback_irq", "Ok(2000000000000f3)"),
            ("hvm_op set_param store_pfn", "-EPERM"),
            ("hvm_op get_param console_evtchn", "Ok(0)"),
            ("hvm_op get_param 39", "-EINVAL"),
            ("hvm_op set_param 39", "-EINVAL"),
            ("hvm_op set_param for another domain", "-EPERM"),
            ("hvm_op set_evtchn_upcall_vector 0x0f", "-EINVAL"),
            ("hvm_op set_evtchn_upcall_vector vcpu 1", "-ENOENT"),
            ("hvm_op 99", "-ENOSYS"),
            ("hvm_op set_evtchn_upcall_vector", "0x0"),
            ("bind_interdomain unknown connection", "-EINVAL"),
            ("bind_interdomain to no partition", "-ESRCH"),
            ("bind_interdomain of the connection's id to this domain", "-EINVAL"),
            ("bind_interdomain incoming connection", "port 1"),
            ("bind_interdomain incoming connection again", "-EINVAL"),
            ("bind_interdomain outgoing connection", "port 2"),
            ("send on the receiving end of an event connection", "-EPERM"),
            ("send to a Hyper-V partition whose SynIC is off", "-ENOTCONN"),
            ("alloc_unbound for another domain", "-EPERM"),
            ("alloc_unbound for no partition", "-ESRCH"),
            ("status for another domain", "-EPERM"),
            ("bind_virq 24", "-EINVAL"),
            ("bind_virq vcpu 1", "-ENOENT"),
            ("bind_ipi vcpu 1", "-ENOENT"),
            ("bind_vcpu to vcpu 1", "-ENOENT"),
            ("bind_vcpu of a closed port", "-EINVAL"),
            ("send on a closed port", "-EINVAL"),
            ("close of a closed port", "-EINVAL"),
            ("unmask of port 256", "-EINVAL"),
            ("status of port 256", "-EINVAL"),
            ("bind_interdomain argument outside memory", "-EFAULT"),
            ("event_channel_op bind_pirq", "-ENOSYS"),
            ("event_channel_op reset", "-ENOSYS"),
            ("event_channel_op init_control", "-ENOSYS"),
            ("event_channel_op expand_array", "-ENOSYS"),
            ("event_channel_op set_priority", "-ENOSYS"),
            ("event_channel_op 99", "-ENOSYS"),
            ("sched_op poll", "0x0"),
            ("sched_op poll of port 256", "-EINVAL"),
            ("sched_op poll outside memory", "-EFAULT"),
            ("alloc_unbound", "port 3"),
            ("bind_interdomain to the unbound port", "port 4"),
            ("bind_ipi", "port 5"),
            ("bind_virq console", "port 6"),
            ("bind_virq console again", "-EEXIST"),
            ("bind_virq console on vcpu 1", "-ENOENT"),
            ("bind_virq timer", "port 7"),
            ("bind_vcpu of the global virq port to vcpu 0", "0x0"),
            ("bind_vcpu of the per-vcpu virq port", "-EINVAL"),
            ("bind_vcpu of the ipi port", "-EINVAL"),
            ("send on the virq port", "-EINVAL"),
            ("close of the loopback port 4", "0x0"),
            ("close of port 4 again", "-EINVAL"),
            ("send on the closed port 4", "-EINVAL"),
            ("send on the unbound port 3", "0x0"),
            ("close of the ipi port", "0x0"),
            ("bind_ipi after close (the lowest free port)", "port 4"),
        ] {
            run = run.expect(format!("[xen] xen: {call} -> {answer}"));
        }
        for (port, status) in [
            ("the unbound port", "unbound for domain 1 (vcpu 0)"),
            ("the loopback port 3", "interdomain to domain 1 port 4 (vcpu 0)"),
            ("the loopback port 4", "interdomain to domain 1 port 3 (vcpu 0)"),
            ("the ipi port", "ipi (vcpu 0)"),
            ("the virq port", "virq 2 (vcpu 0)"),
            ("the incoming port", "interdomain to domain 0 port 1 (vcpu 0)"),
            ("the outgoing port", "interdomain to domain 0 port 2 (vcpu 0)"),
            ("port 8", "closed"),
            ("port 3 after its peer closed", "unbound for domain 1 (vcpu 0)"),
            ("port 4 after close", "closed"),
        ] {
            run = run.expect(format!("[xen] xen: status of {port} -> {status}"));
        }
        run.expect("[xen] xen: the upcall pending since register_vcpu_info arrived on the vector=true, ports pending 0")
            .expect("[xen] xen: evtchn refusals answered as documented=true")
            .expect("[xen] xen: send on loopback 4 -> 3: Ok(()), upcall on vector 0xf3=true, port 3 pending=true")
            .expect("[xen] xen: send on loopback 3 -> 4: Ok(()), upcall on vector 0xf3=true, port 4 pending=true")
            .expect("[xen] xen: send on ipi: Ok(()), upcall on vector 0xf3=true, port 5 pending=true")
            .expect("[xen] xen: masked port 3: send Ok(()), upcall while masked=false, pending=true; unmask Ok(()), upcall=true, found=true")
            .expect("[xen] xen: event channels work as documented=true (upcalls 5)")
            .expect("partition xen: reports PASS")
            .execute()
            .assert_passed();
    }
}

/// The ping-pong's round trips each way: the acceptance figure.
const ROUND_TRIPS: u64 = 100_000;

every_backend! {
    /// The adapter between a Xen partition ("xen", id 1) and a Hyper-V one ("hyperv", id
    /// 0): 100 000 event round trips (EVTCHNOP_send -> the SynIC event flag, HvCallSignalEvent
    /// -> the Xen port and an upcall), then 100 000 message round trips (the Xen side's ring
    /// -> EVTCHNOP_send -> the Hyper-V SynIC slot; HvCallPostMessage -> the Xen side's ring
    /// and port), each numbered message arriving in order on both sides, none lost. Then
    /// the queue rules: with the Hyper-V side holding off, 5 messages fill its SynIC slot
    /// and queue (queue_depth 4), 5 more stay in the ring (send -EAGAIN), the ring is full;
    /// once it drains, sending again delivers the rest, all 10 in order. The Hyper-V
    /// side's verdict comes back as a last message. The figures (TSC ticks per
    /// round trip: instructions in Bochs) are printed, not judged.
    fn xen_hyperv_pingpong_events_and_messages(emulator) {
        let n = ROUND_TRIPS;
        Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-xen-pingpong.toml")
            .switch(format!("xen:n={n}"))
            .switch(format!("hyperv:n={n}"))
            // About 20 to 40 s on each backend here; generous for a loaded machine.
            .timeout(std::time::Duration::from_secs(300))
            .expect("[xen] xen: bound connections 2 4 1 3 to ports (Ok(1), Ok(2), Ok(3), Ok(4))")
            .expect("[xen] xen: rings ready=true (capacity Ok(5)) and true (capacity Ok(5))")
            .expect(format!("[xen] xen: {n} event round trips of {n} answered; "))
            .expect(format!("[hyperv] hyperv-pingpong: {n} events answered"))
            .expect(format!("[hyperv] hyperv-pingpong: {n} messages echoed, in order=true"))
            .expect(format!("[xen] xen: {n} message round trips of {n}: in order=true, none lost=true; "))
            // Queue depth and no loss: the receiver's slot and queue (5), then the ring (5).
            .expect("[xen] xen: flow: 5 messages, send Ok(()); 5 more, send Err(Errno(11)) with Ok(5) left in the ring, one more push Err(Full)")
            .expect("[xen] xen: flow: receiver told Ok(()), the rest sent Ok(()) (")
            .expect("[hyperv] hyperv-pingpong: flow: 10 messages drained in order=true")
            .expect("[xen] xen: peer's verdict pass=true; consumed notice Ok(())")
            .expect("partition xen: reports PASS")
            .forbid("ping-pong stopped")
            .forbid(": fault #")
            .execute()
            .assert_passed();
    }
}

every_backend! {
    /// Two Xen partitions ("xen-a", id 0, ping; "xen-b", id 1, pong): 100 000 event round
    /// trips (each send raises the other's port), then 100 000 message round trips through
    /// the two rings both map (the hypervisor only raises the receiver's port), in order,
    /// none lost; pong's verdict comes back through the ring.
    fn xen_xen_pingpong_events_and_messages(emulator) {
        let n = ROUND_TRIPS;
        Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-xen-xen.toml")
            .switch(format!("xen-a:n={n}"))
            .switch(format!("xen-b:n={n}"))
            // About 20 to 40 s on each backend here; generous for a loaded machine.
            .timeout(std::time::Duration::from_secs(300))
            .expect("[xen-a] xen: bound connections 2 4 1 3 to ports (Ok(1), Ok(2), Ok(3), Ok(4))")
            .expect("[xen-b] xen: bound connections 4 2 3 1 to ports (Ok(1), Ok(2), Ok(3), Ok(4))")
            .expect("[xen-a] xen: rings ready=true (capacity Ok(5)) and true (capacity Ok(5))")
            .expect(format!("[xen-a] xen: {n} event round trips of {n} answered; "))
            .expect(format!("[xen-b] xen: {n} events answered"))
            .expect(format!("[xen-b] xen: {n} messages echoed, in order=true"))
            .expect(format!("[xen-a] xen: {n} message round trips of {n}: in order=true, none lost=true; "))
            .expect("[xen-a] xen: peer's verdict pass=true; consumed notice Ok(())")
            .expect("partition xen-a: reports PASS")
            .forbid("ping-pong stopped")
            .forbid(": fault #")
            .execute()
            .assert_passed();
    }
}

every_backend! {
    /// A hostile Xen guest: every hypercall number 0..=63 and 99, 0x7fff, 0x8000_0000 and
    /// u64::MAX, each with commands 0..=40 and three argument sets (its own zeroed page, an
    /// address outside its memory, vCPU id 1 with its page), 8358 calls by VMCALL/VMMCALL
    /// directly (SCHEDOP_shutdown and CONSOLEIO_write left out). Every answer is 0, a
    /// documented errno or xen_version's value; the hypervisor stays up, logs the -ENOSYS
    /// calls rate-limited, and the guest still gets its version afterwards.
    fn xen_hypercall_sweep(emulator) {
        Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-xen-sweep.toml")
            // The same on every backend: one interface, one kernel.
            .expect("[xen] xen: sweep: 8358 calls, 0 12 times, a version value 6 times, -ENOSYS 8292, -EINVAL 14, -EFAULT 16, -EPERM 8, -ENOENT 7, others 3; 0 wrong")
            .expect("[xen] xen: sweep: afterwards version Ok((4, 17))")
            .expect("not offered (-ENOSYS)")
            .expect("partition xen: reports PASS")
            .forbid(": fault #")
            .forbid("not a documented answer")
            .execute()
            .assert_passed();
    }
}
