//! Benchmark payload for Hyper-V messaging (`cargo xtask bench`), on both partitions of
//! `tests/configs/bochs-bench-messaging.toml`: `role=bench` measures, `role=peer`
//! answers. Under Bochs (`clock: sync=none`) RDTSC deltas are instruction counts.
//!
//! `case=calls`, in phases the peer follows (a NEXT message ends each):
//! 1. HvCallSignalEvent (fast) round trip while the peer takes the flag in a polling loop,
//!    so each signal finds it clear and sends the SINT interrupt;
//! 2. HvCallPostMessage with a 240-byte payload while the peer polls and takes messages;
//! 3. message ping-pong, both sides halted until their SINT interrupt;
//! 4. event ping-pong, the same with events.
//!
//! `case=receive`: the bench partition sends `RECEIVED` 16-byte messages as fast as it
//! can (retrying a full queue); the peer takes them interrupt-driven and prints its EOM
//! writes, so the hypervisor's exit count for it gives its exits per message.
#![no_std]
#![no_main]

use bulkhead_guests::hyperv::Endpoint;
use bulkhead_guests::{arg, cmdline, idle, println, rdtsc, report};

const ROUNDS: u64 = 2_000;
const RECEIVED: u64 = 50_000;

mod kind {
    pub const DATA: u32 = 1;
    pub const READY: u32 = 2;
    pub const NEXT: u32 = 3;
    pub const DONE: u32 = 4;
}

fn per_round(mut body: impl FnMut()) -> u64 {
    let start = rdtsc();
    for _ in 0..ROUNDS {
        body();
    }
    (rdtsc() - start) / ROUNDS
}

fn next(end: &mut Endpoint) {
    end.post_retrying(kind::NEXT, &[]).expect("NEXT accepted");
}

fn bench_calls(mut end: Endpoint) -> bool {
    let ready = end.wait_message().header.message_type == kind::READY;
    let baseline = per_round(|| {
        core::hint::black_box(0u32);
    });
    let mut failed = 0u64;
    let signal = per_round(|| failed += u64::from(end.signal().is_err()));
    next(&mut end);
    let payload = [0x5a; 240];
    let mut retries = 0u64;
    let post = per_round(|| match end.post_retrying(kind::DATA, &payload) {
        Ok(r) => retries += r,
        Err(_) => failed += 1,
    });
    next(&mut end);
    let message_ping_pong = per_round(|| {
        failed += u64::from(end.post_retrying(kind::DATA, &[1; 16]).is_err());
        end.wait_message();
    });
    next(&mut end);
    let event_ping_pong = per_round(|| {
        failed += u64::from(end.signal().is_err());
        end.wait_event();
    });
    println!("bench: hv_signal_event_round_trip={}", signal.saturating_sub(baseline));
    println!("bench: loop_baseline={}", baseline);
    println!("bench: hv_post_message_240_round_trip={}", post.saturating_sub(baseline));
    println!("bench: hv_post_message_240_retries={}", retries);
    println!("bench: hv_message_ping_pong={}", message_ping_pong.saturating_sub(baseline));
    println!("bench: hv_event_ping_pong={}", event_ping_pong.saturating_sub(baseline));
    println!("bench: hv_failed_calls={}", failed);
    ready && failed == 0
}

fn peer_calls(mut end: Endpoint) -> ! {
    let _ = end.post_retrying(kind::READY, &[]);
    // 1: take the flag until NEXT arrives (interrupts stay off: polling).
    while !end.hv.has_message(Endpoint::MESSAGE_SINT) {
        end.take_event();
    }
    end.hv.receive(Endpoint::MESSAGE_SINT);
    // 2: take messages until NEXT.
    loop {
        if let Some(message) = end.hv.receive(Endpoint::MESSAGE_SINT)
            && message.header.message_type == kind::NEXT
        {
            break;
        }
    }
    // 3: echo until NEXT.
    loop {
        let message = end.wait_message();
        if message.header.message_type == kind::NEXT {
            break;
        }
        let _ = end.post_retrying(kind::DATA, message.payload());
    }
    // 4: answer each event.
    for _ in 0..ROUNDS {
        end.wait_event();
        let _ = end.signal();
    }
    idle()
}

fn bench_receive(mut end: Endpoint) -> bool {
    let ready = end.wait_message().header.message_type == kind::READY;
    let start = rdtsc();
    let mut retries = 0u64;
    let mut failed = 0u64;
    for seq in 0..RECEIVED {
        match end.post_retrying(kind::DATA, &[seq as u8; 16]) {
            Ok(r) => retries += r,
            Err(_) => failed += 1,
        }
    }
    let done = end.wait_message().header.message_type == kind::DONE;
    let elapsed = rdtsc() - start;
    println!("bench: hv_messages_per_million={}", RECEIVED * 1_000_000 / elapsed.max(1));
    println!("bench: hv_receive_sender_retries={}", retries);
    ready && done && failed == 0
}

fn peer_receive(mut end: Endpoint) -> ! {
    let _ = end.post_retrying(kind::READY, &[]);
    let mut received = 0;
    while received < RECEIVED {
        end.wait_message();
        received += 1;
        while end.hv.receive(Endpoint::MESSAGE_SINT).is_some() {
            received += 1;
        }
    }
    println!("bench: hv_receiver_messages={}", received);
    println!("bench: hv_receiver_end_of_messages={}", end.hv.end_of_messages());
    println!("bench: hv_receiver_interrupts={}", bulkhead_guests::hyperv::sint_interrupts::messages());
    let _ = end.post_retrying(kind::DONE, &[]);
    idle()
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    let bench = arg(args, "role") == Some("bench");
    // Connections 1 (messages) and 2 (events, flag 5) go to the peer, 3 and 4 (flag 9) back.
    let end = if bench { Endpoint::new(1, 2, 9, true) } else { Endpoint::new(3, 4, 5, true) };
    match (arg(args, "case"), bench) {
        (Some("calls"), true) => report(bench_calls(end)),
        (Some("calls"), false) => peer_calls(end),
        (Some("receive"), true) => report(bench_receive(end)),
        (Some("receive"), false) => peer_receive(end),
        (other, _) => {
            println!("bench: unknown case {:?}", other);
            report(false)
        }
    }
}
