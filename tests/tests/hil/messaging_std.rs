//! Messaging for std programs: apps/test-messaging (through bulkhead-messaging) and a
//! bare-metal partition (guests test-messaging, `case=echo`) exchange messages and events.

use bulkhead_tests::{Run, every_backend};

every_backend! {
    /// The std program opens its four connections by name; a receive and an event wait
    /// with a timeout time out (not early) before the peer sends anything; 10 000
    /// numbered messages go to the peer, which checks their order and echoes each, and a
    /// second thread of the program receives the echoes (blocked until the SynIC
    /// interrupt wakes it) and checks them in order, none lost (the sender retries when
    /// the peer's queue is full, INSUFFICIENT_BUFFERS); 100 event round trips; the
    /// peer's verdict on the order it saw. (`app:drop=N` on the command line leaves a
    /// message out, `app:swap=N` swaps two: both checks fail, docs/unikernel.md,
    /// "Messaging".)
    fn messaging_std_program_and_bare_metal_exchange_10000_messages(emulator) {
        Run::new(emulator)
            .cpus(2)
            .scenario("tests/configs/bochs-hermit-messaging.toml")
            .expect("[app] messaging: opened requests (id 1), replies (id 3, sint 2), kick (id 2), ack (id 4, flag 9)")
            .expect("[app] messaging: receive timed out after ")
            .expect("[app] messaging: 10000 messages sent and echoed, 0 out of order or missing, queue full ")
            .expect("[app] messaging: 100 of 100 event round trips")
            .expect("[pong] messaging: echoed up to message 10000, in order true")
            .expect("[app] messaging: the peer saw them in order: true")
            .expect("[app] messaging: all checks passed")
            .expect("partition app: reports PASS")
            .forbid(": fault #")
            .forbid("[app] panic")
            .execute()
            .assert_passed();
    }
}

every_backend! {
    /// The same with the program on two vCPUs (its threads receive on either, the SynIC
    /// interrupt arrives at the first), 1000 messages: emulated IPIs and timers on three
    /// CPUs make each message about four times as slow under QEMU.
    fn messaging_std_program_on_two_vcpus_receives_on_either(emulator) {
        Run::new(emulator)
            .cpus(3)
            .scenario("tests/configs/bochs-hermit-messaging-smp.toml")
            .switch("app:count=1000")
            .expect("[app] bulkhead runtime: 2 vcpu(s)")
            .expect("[app] messaging: receive timed out after ")
            .expect("[app] messaging: 1000 messages sent and echoed, 0 out of order or missing, queue full ")
            .expect("[app] messaging: 100 of 100 event round trips")
            .expect("[pong] messaging: echoed up to message 1000, in order true")
            .expect("[app] messaging: all checks passed")
            .expect("partition app: reports PASS")
            .forbid(": fault #")
            .forbid("[app] panic")
            .execute()
            .assert_passed();
    }
}
