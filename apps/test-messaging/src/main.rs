//! A std program and a bare-metal partition (guests/src/bin/test-messaging.rs, `case=echo`)
//! exchange messages and events through `bulkhead-messaging`
//! (tests/configs/bochs-hermit-messaging.toml, tests/tests/hil/messaging_std.rs):
//!
//! 1. a receive and an event wait with a timeout, before the peer sends anything, time out;
//! 2. `count=` (default 10 000) numbered messages go to the peer, which checks their order
//!    and echoes each; a second thread receives the echoes (blocking, woken by the SynIC
//!    interrupt) and checks that every number comes back once, in order;
//! 3. `events=` (default 100) event round trips: signal, wait for the answer;
//! 4. the peer's verdict on the order it saw.
//!
//! `drop=N` leaves out message N, `swap=N` sends N+1 before N: the peer and the echo check
//! must both notice (how the test is shown to catch a lost or reordered message). Exit status 0 only if every check passed.

use bulkhead_messaging::{Error, EventReceiver, EventSender, HvStatus, Receiver, Sender};
use std::time::{Duration, Instant};

mod kind {
    pub const DATA: u32 = 1;
    pub const VERDICT: u32 = 2;
    pub const DONE: u32 = 4;
    pub const INSTRUCTION: u32 = 5;
}

const PATIENCE: Duration = Duration::from_secs(30);

fn arg(name: &str) -> Option<u64> {
    std::env::args().skip(1).find_map(|a| a.strip_prefix(&format!("{name}=")).and_then(|v| v.parse().ok()))
}

/// The running vCPU's initial APIC ID (CPUID.1:EBX[31:24]; the program runs at CPL 0).
fn apic_id() -> u32 {
    core::arch::x86_64::__cpuid(1).ebx >> 24
}

fn payload(seq: u64) -> [u8; 16] {
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&seq.to_le_bytes());
    bytes[8..].copy_from_slice(&(!seq).to_le_bytes());
    bytes
}

fn main() {
    let count = arg("count").unwrap_or(10_000);
    let events = arg("events").unwrap_or(100);
    let dropped = arg("drop");
    let requests = Sender::open("requests").expect("connection requests");
    let replies = Receiver::open("replies").expect("connection replies");
    let kick = EventSender::open("kick").expect("connection kick");
    let ack = EventReceiver::open("ack").expect("connection ack");
    println!(
        "messaging: opened requests (id {}), replies (id {}, sint {}), kick (id {}), ack (id {}, flag {})",
        requests.connection().id,
        replies.connection().id,
        replies.connection().sint,
        kick.connection().id,
        ack.connection().id,
        ack.connection().flag
    );
    assert_eq!(Sender::open("replies").unwrap_err(), Error::WrongKind, "replies is incoming");
    assert_eq!(Receiver::open("nonesuch").unwrap_err(), Error::NotFound);

    // 1. Timeouts: the peer sends nothing unasked.
    let start = Instant::now();
    let timed_out = replies.recv_timeout(Duration::from_millis(20));
    let took = start.elapsed();
    assert_eq!(timed_out.unwrap_err(), Error::Timeout, "nothing to receive yet");
    assert!(took >= Duration::from_millis(20), "the receive timed out early: {took:?}");
    let start = Instant::now();
    assert_eq!(ack.wait_timeout(Duration::from_millis(10)), Err(Error::Timeout), "no event yet");
    assert!(start.elapsed() >= Duration::from_millis(10));
    assert!(replies.try_recv().unwrap().is_none());
    println!("messaging: receive timed out after {} ms, event wait too", took.as_millis());

    // 2. Messages, both directions, a second thread receiving the echoes (on the second
    // vCPU where there is one: the scheduler places a new thread on the least busy).
    let main_cpu = apic_id();
    let start = Instant::now();
    let echoes = std::thread::spawn(move || {
        let first_cpu = apic_id();
        let mut expected = 0u64;
        let mut wrong = 0u64;
        while expected < count {
            match replies.recv_timeout(PATIENCE) {
                Ok(m) if m.message_type == kind::DATA && m.payload().len() == 16 => {
                    let seq = u64::from_le_bytes(m.payload()[..8].try_into().unwrap());
                    if m.payload() != payload(seq) || seq != expected {
                        if wrong < 5 {
                            println!("messaging: echo {expected}: got {seq}");
                        }
                        wrong += 1;
                    }
                    // A late message (reordered) does not move the expectation back.
                    if seq >= expected {
                        expected = seq + 1;
                    }
                }
                Ok(m) => {
                    println!("messaging: unexpected {m:?}");
                    wrong += 1;
                }
                Err(e) => {
                    println!("messaging: echo {expected} not received: {e}");
                    return (expected, wrong + 1);
                }
            }
        }
        println!(
            "messaging: the echo thread received on APIC ID {first_cpu} (main on {}), ended on {}",
            main_cpu,
            apic_id()
        );
        (expected, wrong)
    });
    let mut full = 0u64;
    let swapped = arg("swap");
    for index in 0..count {
        if Some(index) == dropped {
            continue;
        }
        // `swap=N`: N+1 goes before N.
        let seq = match swapped {
            Some(n) if index == n && n + 1 < count => n + 1,
            Some(n) if index == n + 1 => n,
            _ => index,
        };
        loop {
            match requests.send(kind::DATA, &payload(seq)) {
                Ok(()) => break,
                // The peer may not have started yet (its SynIC is not ready).
                Err(e) if e.status() == Some(HvStatus::InvalidSynicState) => {
                    std::thread::sleep(Duration::from_micros(100))
                }
                Err(e) if e.is_queue_full() => {
                    // The peer is behind: give it (and the echo thread) time rather than
                    // an exit per retry.
                    full += 1;
                    std::thread::sleep(Duration::from_micros(10));
                }
                Err(e) => panic!("message {seq} not sent: {e}"),
            }
        }
    }
    let (echoed, wrong) = echoes.join().unwrap();
    println!(
        "messaging: {echoed} messages sent and echoed, {wrong} out of order or missing, queue full {full} times, in {} ms",
        start.elapsed().as_millis()
    );

    // 3. Events.
    let rounds = events.to_le_bytes();
    requests.send_retrying(kind::INSTRUCTION, &rounds, PATIENCE).expect("event instruction");
    let mut answered = 0;
    for _ in 0..events {
        kick.signal().expect("signal");
        match ack.wait_timeout(PATIENCE) {
            Ok(()) => answered += 1,
            Err(e) => {
                println!("messaging: event round {answered}: {e}");
                break;
            }
        }
    }
    println!("messaging: {answered} of {events} event round trips");

    // 4. The peer's verdict.
    requests.send_retrying(kind::DONE, &[], PATIENCE).expect("done");
    let verdict = replies.recv_timeout(PATIENCE).expect("the peer's verdict");
    let peer_ok = verdict.message_type == kind::VERDICT && verdict.payload() == [1];
    println!("messaging: the peer saw them in order: {peer_ok}");
    let ok = echoed == count && wrong == 0 && answered == events && peer_ok;
    println!("messaging: {}", if ok { "all checks passed" } else { "FAILED" });
    std::process::exit(if ok { 0 } else { 1 });
}
