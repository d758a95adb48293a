//! The Hyper-V hypercall interface (TLFS) on every backend: discovery as Linux checks it,
//! the hypercall page, and each failure status with its exact RAX value.

use bulkhead_tests::{Run, every_backend};

every_backend! {
    /// A partition with no connections: "Microsoft Hv" with the HYPERCALL and VP_INDEX
    /// privileges Linux requires and no hypercall privilege (EBX 0, never CpuManagement);
    /// VP_INDEX 0; TIME_REF_COUNT advances and the reference TSC page agrees with it; the
    /// hypercall page enables; both calls are ACCESS_DENIED and an
    /// unknown call code is INVALID_HYPERCALL_CODE.
    fn hyperv_discovery_and_access_denied_without_connections(emulator) {
        Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-hyperv-alone.toml")
            .expect("[alone] hyperv: vendor microsoft=true max leaf 0x40000006 interface 0x31237648 privileges eax 0x266 ebx 0x0")
            .expect("[alone] hyperv: vp index 0 hypercall page enabled=true")
            .expect("[alone] hyperv: reference time page valid=true between the MSR reads=true")
            .expect("[alone] hyperv: unknown call code status 0x2")
            .expect("[alone] hyperv: post message without connections status 0x6")
            .expect("[alone] hyperv: signal event without connections status 0x6")
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
            .expect("partition sender: reports PASS")
            .forbid(": fault #")
            .execute()
            .assert_passed();
    }
}
