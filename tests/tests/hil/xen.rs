//! Xen's HVM interface (docs/xen.md) on every backend: a partition with `interface = "xen"`
//! beside a Hyper-V one; each sees its own interface and nothing of the other's.

use bulkhead_tests::{Run, every_backend};

every_backend! {
    /// The Xen partition ("xen", partition id 1) sees exactly Xen's CPUID block
    /// ("XenVMMXenVMM", version 4.17, the hypercall page MSR 0x40000000, vCPU id 0 and domain
    /// id 1), zeros up to 0x400000FF and no "Microsoft Hv" at any 0x100 step; the hypercall
    /// page MSR reads 0, refuses a page index other than 0 and a page outside its memory
    /// with #GP and fills the page with 128 stubs (VMCALL on VT-x, VMMCALL on SVM; stub 23,
    /// the PV-only iret, UD2 as on Xen);
    /// xen_version answers through the page and directly, extraversion ".0-bulkhead",
    /// no feature bits yet, page size 4096; console_io writes reach its console as its
    /// own lines; every other call family is -ENOSYS, a buffer outside its memory or in a
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
            .expect("[xen] xen: cpuid 0x40000004: 0x18 0x0 0x1 0x0")
            .expect("[xen] xen: cpuid block exact=true (domain id 1), leaves 0x40000005..=0x400000ff zero=true")
            .expect("[xen] xen: cpuid 0x40000000..=0x4000ff00 step 0x100: Microsoft Hv 0 times, XenVMMXenVMM beyond the base 0 times")
            .expect("[xen] xen: hypercall page msr: page index 1 refused with #GP=true, page outside memory refused with #GP=true")
            .expect("[xen] xen: hypercall page msr reads Ok(0) before and Ok(0) after; untouched by the refused writes=true")
            .expect(format!("[xen] xen: hypercall page: 127 stubs as abi::xen writes them ({instruction})=true, stub 23 (iret) starts with ud2=true, stub 17 {stub_17}"))
            .expect(format!("[xen] xen: xen_version 0x40011 through the page, 0x40011 by {instruction} (before the page 0x40011)"))
            .expect("[xen] xen: version Ok((4, 17)), extraversion Some(\".0-bulkhead\") terminated=true, features submap 0 Ok(0) submap 1 Ok(0), page size Ok(4096)")
            // console_io text, line by line with the partition's prefix, like its UART's.
            .expect("[xen] xen: hello through console_io")
            .expect("[xen] xen: second console_io line")
            .expect("[xen] xen: console_io write -> Ok(())");
        for (call, errno) in [
            ("memory_op", "-ENOSYS"),
            ("set_timer_op", "-ENOSYS"),
            ("grant_table_op", "-ENOSYS"),
            ("vcpu_op", "-ENOSYS"),
            ("event_channel_op", "-ENOSYS"),
            ("hvm_op", "-ENOSYS"),
            ("call 0", "-ENOSYS"),
            ("call 99", "-ENOSYS"),
            ("call 0x7fffffff", "-ENOSYS"),
            ("xen_version cmd 99", "-ENOSYS"),
            ("console_io read", "-ENOSYS"),
            ("sched_op poll", "-ENOSYS"),
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
