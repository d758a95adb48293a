//! Test payload "messaging": two partitions, `role=ping` and `role=pong`, exchange Hyper-V
//! messages and events through the connections of `tests/configs/bochs-messaging.toml`
//! (1: ping → pong messages on SINT 2, 2: ping → pong event flag 5 on SINT 3, 3 and 4 the
//! same from pong to ping, flag 9). `case=NAME` picks the scenario; ping reports the
//! verdict, pong sends its own verdict to ping as a last message.
//!
//! * `pingpong`: message round trips with payloads of every length, then event round
//!   trips, both interrupt-driven; each side counts one interrupt per message and event.
//! * `load`: both send `count=` (default 100 000) numbered messages at once, polling their
//!   slot, retrying every INSUFFICIENT_BUFFERS and counting it; each checks it received
//!   all, in order, none twice, and ping that the retry path ran.
//! * `flow`: event coalescing (1000 signals while pong leaves the flag set: one interrupt,
//!   the flag seen once), then a full queue (the slot plus queue depth 4 accepted, the next
//!   post INSUFFICIENT_BUFFERS) drained in order with MessagePending and EOM.
//! * `restart`: pong queues messages for ping, ping fills pong's queue, pong faults and
//!   restarts: ping's posts get INSUFFICIENT_BUFFERS until the queue is drained, then
//!   INVALID_SYNIC_STATE until pong is back (nothing else), the first message pong sees
//!   after the restart is a new one, and pong's earlier messages to ping all arrive.
//! * `echo` (pong only; the ping side is the std program apps/test-messaging,
//!   tests/configs/bochs-hermit-messaging.toml): echoes every DATA message, checking that
//!   their sequence numbers (u64, then its complement) arrive in order, none missing;
//!   INSTRUCTION `n`: answers `n` events; DONE: sends its verdict on the order.
#![no_std]
#![no_main]

use bulkhead_abi::hyperv::client::{Client, PostError, X64};
use bulkhead_abi::hyperv::{HvStatus, Message};
use bulkhead_guests::hyperv::Endpoint;
use bulkhead_guests::hyperv::sint_interrupts::{self, wait_until};
use bulkhead_guests::{arg, cmdline, idle, parse_u64, println, report};

const MESSAGE_SINT: u8 = Endpoint::MESSAGE_SINT;

mod kind {
    pub const DATA: u32 = 1;
    pub const VERDICT: u32 = 2;
    pub const READY: u32 = 3;
    pub const DONE: u32 = 4;
    pub const INSTRUCTION: u32 = 5;
    pub const HELLO: u32 = 6;
}

/// One side: its endpoint and which role it plays.
struct Side {
    end: Endpoint,
    ping: bool,
}

impl Side {
    fn new(ping: bool, message_interrupts: bool) -> Side {
        let end =
            if ping { Endpoint::new(1, 2, 9, message_interrupts) } else { Endpoint::new(3, 4, 5, message_interrupts) };
        Side { end, ping }
    }

    /// Pong's last word: its verdict as a message to ping.
    fn send_verdict(&mut self, ok: bool) {
        if let Err(e) = self.post_retrying(kind::VERDICT, &[ok as u8]) {
            println!("messaging: verdict not sent: {:?}", e);
        }
    }

    /// Ping: waits for pong's verdict (anything else fails).
    fn peer_verdict(&mut self) -> bool {
        let message = self.wait_message();
        let ok = message.header.message_type == kind::VERDICT && message.payload() == [1];
        println!("messaging: pong's verdict {}", if ok { "pass" } else { "fail" });
        ok
    }
}

impl Side {
    /// Waits for the next message interrupt, then takes the message. (Waiting for the
    /// interrupt rather than the slot means each interrupt is taken before the peer can
    /// send the next: two would otherwise merge in the APIC and be counted once.)
    fn wait_message_interrupt(&mut self) -> Message {
        let seen = sint_interrupts::messages();
        wait_until(|| sint_interrupts::messages() > seen);
        self.wait_message()
    }

    /// Waits for the next event interrupt, then takes the flag (see above).
    fn wait_event_interrupt(&mut self) -> bool {
        let seen = sint_interrupts::events();
        wait_until(|| sint_interrupts::events() > seen);
        self.take_event()
    }
}

impl core::ops::Deref for Side {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.end
    }
}

impl core::ops::DerefMut for Side {
    fn deref_mut(&mut self) -> &mut Endpoint {
        &mut self.end
    }
}

fn is(error: PostError, status: HvStatus) -> bool {
    error.status_code() == Some(status.code())
}

/// The payload of round `round`: 1 to 240 bytes, each derived from the round.
fn payload(round: u64, buffer: &mut [u8; 240]) -> &[u8] {
    let len = (round % 240) as usize + 1;
    for (i, byte) in buffer[..len].iter_mut().enumerate() {
        *byte = (round as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    &buffer[..len]
}

fn spin(iterations: u64) {
    for _ in 0..iterations {
        core::hint::spin_loop();
    }
}

const ROUNDS: u64 = 200;

fn pingpong(mut side: Side) -> bool {
    let mut buffer = [0; 240];
    let mut intact = true;
    for round in 0..ROUNDS {
        let expected = payload(round, &mut buffer);
        if side.ping
            && let Err(e) = side.post_retrying(kind::DATA, expected)
        {
            println!("messaging: post {} failed: {:?}", round, e);
            return false;
        }
        let message = side.wait_message_interrupt();
        intact &= message.header.message_type == kind::DATA && message.payload() == expected;
        if !side.ping && side.post(kind::DATA, message.payload()).is_err() {
            println!("messaging: echo {} failed", round);
            return false;
        }
    }
    // Counted per phase: pong's verdict, a message, may arrive during the event phase.
    let messages = sint_interrupts::messages();
    println!("messaging: {} message round trips, payloads intact={}, message interrupts {}", ROUNDS, intact, messages);
    let mut signals_ok = true;
    for _ in 0..ROUNDS {
        if side.ping {
            signals_ok &= side.signal().is_ok();
        }
        signals_ok &= side.wait_event_interrupt();
        if !side.ping {
            signals_ok &= side.signal().is_ok();
        }
    }
    let events = sint_interrupts::events();
    println!(
        "messaging: {} event round trips, flags set and signals accepted={}, event interrupts {}",
        ROUNDS, signals_ok, events
    );
    // One interrupt per message and per signal: none lost, none extra.
    let ok = intact && signals_ok && messages == ROUNDS && events == ROUNDS;
    if side.ping {
        ok && side.peer_verdict()
    } else {
        side.send_verdict(ok);
        idle()
    }
}

/// What one side of the load test has received.
#[derive(Default)]
struct Tally {
    received: u64,
    out_of_order: u64,
    /// Pong's verdict and its INSUFFICIENT_BUFFERS count (ping only).
    verdict: Option<(bool, u64)>,
}

impl Tally {
    /// Takes the messages that have arrived, at most a queue's worth (the slot and the
    /// queue), so that the peer's posts can go on and then ours do.
    fn take_arrived(&mut self, hv: &mut Client<X64>) {
        for _ in 0..=QUEUE_DEPTH {
            let Some(message) = hv.receive(MESSAGE_SINT) else { return };
            match message.header.message_type {
                kind::DATA => {
                    let bytes = message.payload();
                    let seq = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8]));
                    let check = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or([0; 8]));
                    if seq != self.received || check != !seq {
                        self.out_of_order += 1;
                    }
                    self.received += 1;
                }
                kind::VERDICT => {
                    let bytes = message.payload();
                    let full = bytes.get(1..9).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes);
                    self.verdict = Some((bytes.first() == Some(&1), full));
                }
                _ => self.out_of_order += 1,
            }
        }
    }
}

/// Both sides at once: `count` numbered messages each way.
fn load(mut side: Side, count: u64) -> bool {
    let (mut sent, mut full, mut not_ready) = (0u64, 0u64, 0u64);
    let mut tally = Tally::default();
    while sent < count {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&sent.to_le_bytes());
        bytes[8..].copy_from_slice(&(!sent).to_le_bytes());
        match side.post(kind::DATA, &bytes) {
            Ok(()) => sent += 1,
            // Receive only when the peer cannot take more: both queues fill, so both
            // sides' retry paths run.
            Err(e) if e.is_queue_full() => {
                full += 1;
                tally.take_arrived(&mut side.hv);
            }
            Err(e) if is(e, HvStatus::InvalidSynicState) => not_ready += 1,
            Err(e) => {
                println!("messaging: post {} failed: {:?}", sent, e);
                return false;
            }
        }
    }
    while tally.received < count {
        tally.take_arrived(&mut side.hv);
    }
    println!(
        "messaging: sent {} ({} INSUFFICIENT_BUFFERS retried, {} before the peer was ready); received {}, {} out of order",
        sent, full, not_ready, tally.received, tally.out_of_order
    );
    let ok = tally.received == count && tally.out_of_order == 0;
    if side.ping {
        while tally.verdict.is_none() {
            tally.take_arrived(&mut side.hv);
        }
        let (pong_ok, pong_full) = tally.verdict.unwrap_or((false, 0));
        println!("messaging: pong's verdict {}", if pong_ok { "pass" } else { "fail" });
        // The retry path must have run: on both sides under Bochs, on at least one
        // wherever scheduling lets one side always find room.
        println!("messaging: INSUFFICIENT_BUFFERS retried on both sides together: {}", full + pong_full);
        ok && pong_ok && full + pong_full > 0
    } else {
        let mut verdict = [0u8; 9];
        verdict[0] = ok as u8;
        verdict[1..].copy_from_slice(&full.to_le_bytes());
        let _ = side.post_retrying(kind::VERDICT, &verdict);
        idle()
    }
}

const SIGNALS: u32 = 1000;
const QUEUE_DEPTH: u64 = 4;

fn flow(mut side: Side) -> bool {
    if side.ping {
        // Coalescing: pong has its SINT unmasked and leaves the flag set.
        let ready = side.wait_message();
        let accepted = (0..SIGNALS).filter(|_| side.signal().is_ok()).count();
        let done = side.post_retrying(kind::DONE, &SIGNALS.to_le_bytes()).is_ok();
        println!("messaging: {} signals accepted of {}", accepted, SIGNALS);
        let coalesced = side.wait_message();
        let coalesce_ok = ready.header.message_type == kind::READY
            && accepted == SIGNALS as usize
            && done
            && coalesced.header.message_type == kind::VERDICT
            && coalesced.payload() == [1];
        // A full queue: pong takes nothing until the event.
        let mut accepted = 0u64;
        let status = loop {
            match side.post(kind::DATA, &accepted.to_le_bytes()) {
                Ok(()) => accepted += 1,
                Err(e) => break e.status_code().unwrap_or(0),
            }
        };
        println!("messaging: {} messages accepted, then status {:#x}", accepted, status);
        let signalled = side.signal().is_ok();
        coalesce_ok
            && accepted == QUEUE_DEPTH + 1
            && status == HvStatus::InsufficientBuffers.code()
            && signalled
            && side.peer_verdict()
    } else {
        let _ = side.post_retrying(kind::READY, &[]);
        let done = side.wait_message();
        // Every signal came before DONE; give a late interrupt time to arrive.
        wait_until(|| sint_interrupts::events() > 0);
        spin(100_000);
        let interrupts = sint_interrupts::events();
        let (first, second) = (side.take_event(), side.take_event());
        println!(
            "messaging: after {} signals: {} event interrupt(s), flag set={}, set again after taking={}",
            u32::from_le_bytes(done.payload().try_into().unwrap_or([0; 4])),
            interrupts,
            first,
            second
        );
        let coalesced = done.header.message_type == kind::DONE && interrupts == 1 && first && !second;
        let _ = side.post_retrying(kind::VERDICT, &[coalesced as u8]);
        // Full queue: wait for the event, then drain.
        side.wait_event();
        let mut order_ok = true;
        let mut pending = [false; QUEUE_DEPTH as usize + 1];
        for (i, flag) in pending.iter_mut().enumerate() {
            let message = side.hv.receive(MESSAGE_SINT);
            let seq = message.map(|m| u64::from_le_bytes(m.payload().try_into().unwrap_or([0xff; 8])));
            order_ok &= seq == Some(i as u64);
            *flag = message.is_some_and(|m| m.header.is_message_pending());
        }
        let empty_after = side.hv.receive(MESSAGE_SINT).is_none();
        println!(
            "messaging: drained {} queued messages in order={}, MessagePending {:?}, nothing more={}",
            pending.len(),
            order_ok,
            pending,
            empty_after
        );
        // The slot's message had the rest waiting behind it; the last had none.
        let ok = coalesced && order_ok && empty_after && pending == [true, true, true, true, false];
        side.send_verdict(ok);
        idle()
    }
}

const EARLIER: u64 = 3;

fn restart(mut side: Side) -> bool {
    if side.ping {
        let instructed = side.post_retrying(kind::INSTRUCTION, &[]).is_ok();
        // Pong's messages for us wait in our slot and queue until the end.
        side.wait_event();
        let mut accepted = 0u8;
        let status = loop {
            match side.post(kind::DATA, &[accepted]) {
                Ok(()) => accepted += 1,
                Err(e) => break e.status_code().unwrap_or(0),
            }
        };
        let signalled = side.signal().is_ok();
        let (mut full, mut not_ready, mut other) = (0u64, 0u64, 0u64);
        loop {
            match side.post(kind::HELLO, &[]) {
                Ok(()) => break,
                Err(e) if e.is_queue_full() => full += 1,
                Err(e) if is(e, HvStatus::InvalidSynicState) => not_ready += 1,
                Err(_) => other += 1,
            }
        }
        println!(
            "messaging: {} messages queued for pong (then {:#x}); while it restarted: {} INSUFFICIENT_BUFFERS, {} INVALID_SYNIC_STATE, {} other, then accepted",
            accepted, status, full, not_ready, other
        );
        let mut earlier = [0u64; EARLIER as usize];
        for seq in earlier.iter_mut() {
            let message = side.hv.receive(MESSAGE_SINT);
            *seq = message.map_or(u64::MAX, |m| u64::from(m.payload().first().copied().unwrap_or(0xff)));
        }
        println!("messaging: pong's messages from before its restart: {:?}", earlier);
        instructed
            && u64::from(accepted) == QUEUE_DEPTH + 1
            && status == HvStatus::InsufficientBuffers.code()
            && signalled
            // How many INVALID_SYNIC_STATE ping sees depends on how long pong takes to
            // come back (none if ping's vCPU is descheduled meanwhile); any status other
            // than the two defined ones fails.
            && other == 0
            && earlier == [100, 101, 102]
            && side.peer_verdict()
    } else {
        let first = side.wait_message();
        match first.header.message_type {
            kind::INSTRUCTION => {
                for seq in 100..100 + EARLIER as u8 {
                    let _ = side.post_retrying(kind::DATA, &[seq]);
                }
                let _ = side.signal();
                side.wait_event();
                println!("messaging: pong faults now");
                triple_fault()
            }
            other => {
                // After the restart: nothing from before it may arrive.
                spin(200_000);
                let stale = side.hv.receive(MESSAGE_SINT);
                println!(
                    "messaging: after the restart, first message type {} (HELLO is {}), then {}",
                    other,
                    kind::HELLO,
                    if stale.is_some() { "another" } else { "nothing" }
                );
                side.send_verdict(other == kind::HELLO && stale.is_none());
                idle()
            }
        }
    }
}

/// Pong as the std program's peer (`case=echo`): see the module notes.
fn echo(mut side: Side) -> ! {
    let mut expected = 0u64;
    let mut in_order = true;
    loop {
        let message = side.wait_message();
        match message.header.message_type {
            kind::DATA => {
                let payload = message.payload();
                let seq = payload.get(..8).map_or(u64::MAX, |b| u64::from_le_bytes(b.try_into().unwrap()));
                let intact = payload.len() == 16 && payload[8..] == (!seq).to_le_bytes();
                if (seq != expected || !intact) && in_order {
                    println!("messaging: expected message {}, got {} (intact {})", expected, seq, intact);
                    in_order = false;
                }
                expected = seq.wrapping_add(1);
                if let Err(e) = side.post_retrying(kind::DATA, payload) {
                    println!("messaging: echo of {} not sent: {:?}", seq, e);
                    in_order = false;
                }
            }
            kind::INSTRUCTION => {
                let rounds = message.payload().get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
                for _ in 0..rounds {
                    side.wait_event();
                    let _ = side.signal_retrying();
                }
            }
            kind::DONE => {
                println!("messaging: echoed up to message {}, in order {}", expected, in_order);
                side.send_verdict(in_order);
                idle()
            }
            other => {
                println!("messaging: unexpected message type {}", other);
                in_order = false;
            }
        }
    }
}

/// An exception with no usable IDT: the CPU shuts down, the hypervisor contains it.
fn triple_fault() -> ! {
    let empty: [u16; 5] = [0; 5];
    // SAFETY: deliberately fatal; the partition's fault policy restarts it.
    unsafe { core::arch::asm!("lidt [{}]", "ud2", in(reg) &empty, options(noreturn)) }
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    let ping = arg(args, "role") == Some("ping");
    let verdict = match arg(args, "case") {
        Some("pingpong") => pingpong(Side::new(ping, true)),
        Some("load") => {
            let count = arg(args, "count").and_then(parse_u64).unwrap_or(100_000);
            load(Side::new(ping, false), count)
        }
        Some("flow") => flow(Side::new(ping, true)),
        Some("restart") => restart(Side::new(ping, false)),
        Some("echo") if !ping => echo(Side::new(false, true)),
        other => {
            println!("messaging: unknown case {:?}", other);
            false
        }
    };
    report(verdict)
}
