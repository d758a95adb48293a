//! Partition "control" beside a Linux partition: the real-time side of Linux messaging
//! (docs/linux.md, "Messaging with the real-time partition"). A periodic loop on its own
//! core's local APIC timer that answers what Linux's `bulkhead_msg` driver sends:
//!
//! - every message on its incoming message connection (SINT `msg_sint`) goes back on its
//!   outgoing message connection `msg_out`, in order: a payload starting with `ping` is
//!   answered with `pong` and the rest of the payload, any other is echoed unchanged
//!   (`bulkhead-msg ping` and `bulkhead-msg flood` rely on both). While Linux's queue is
//!   full (INSUFFICIENT_BUFFERS) or its SynIC is not enabled yet (INVALID_SYNIC_STATE) the
//!   answer waits and is posted again at the next wake-up (a timer tick or a SINT
//!   interrupt), and no further message is taken from the slot meanwhile: the hypervisor's
//!   queue then fills and Linux's sender sees the back-pressure, nothing is dropped;
//! - every signal on its incoming event connection (SINT `event_sint`, flag `event_flag`)
//!   is answered with a signal on its outgoing event connection `event_out`.
//!
//! Command line (all optional; the defaults are those of the Linux messaging systems):
//! `msg_out=ID msg_sint=N event_out=ID event_sint=N event_flag=N status_every=TICKS`.
//!
//! The timer ticks every millisecond where the hypervisor reports the APIC timer's
//! frequency (Hyper-V APIC_FREQUENCY MSR), else every 50 000 APIC timer counts. Every
//! `status_every` ticks (default 5000) it prints one line: ticks, messages answered,
//! pings, signals answered, and how often Linux's queue was full. Any other hypercall
//! failure is printed and counted; the partition never gives a verdict (Linux does).
#![no_std]
#![no_main]

use bulkhead_abi::hyperv::cpuid::{LEAF_FEATURES, privileges_eax};
use bulkhead_abi::hyperv::message::MAX_PAYLOAD;
use bulkhead_abi::hyperv::{HvStatus, msr};
use bulkhead_guests::hyperv::sint_interrupts::{self, EVENT_VECTOR, MESSAGE_VECTOR, halt_unless_busy};
use bulkhead_guests::hyperv::{client_with_hypercalls, rdmsr};
use bulkhead_guests::{arg, cmdline, cpuid, gp, parse_u64, println};

/// Default outgoing message connection (control → Linux).
const MSG_OUT: u32 = 21;
/// Default SINT of the incoming message connection (Linux → control).
const MSG_SINT: u8 = 2;
/// Default outgoing event connection (control → Linux).
const EVENT_OUT: u32 = 23;
/// Default SINT and flag of the incoming event connection (Linux → control).
const EVENT_SINT: u8 = 3;
const EVENT_FLAG: u16 = 0;
/// Timer period in APIC timer counts when the hypervisor does not report the frequency.
const DEFAULT_PERIOD: u32 = 50_000;
/// The message type of the answers (Linux's driver ignores the type).
const ANSWER_TYPE: u32 = 1;

/// An answer waiting for room in Linux's queue.
struct Answer {
    bytes: [u8; MAX_PAYLOAD],
    len: usize,
}

fn number(args: &str, key: &str, default: u64) -> u64 {
    arg(args, key).and_then(parse_u64).unwrap_or(default)
}

/// APIC timer counts per millisecond, if the hypervisor reports the APIC timer frequency.
fn period() -> u32 {
    if cpuid(LEAF_FEATURES, 0).eax & privileges_eax::ACCESS_FREQUENCY_MSRS == 0 {
        return DEFAULT_PERIOD;
    }
    match u32::try_from(rdmsr(msr::APIC_FREQUENCY) / 1000) {
        Ok(p) if p > 0 => p,
        _ => DEFAULT_PERIOD,
    }
}

/// The answer to `payload`: `pong` + the rest for a `ping`, else the payload itself.
fn answer(payload: &[u8]) -> Answer {
    let mut bytes = [0u8; MAX_PAYLOAD];
    let len = payload.len().min(MAX_PAYLOAD);
    bytes[..len].copy_from_slice(&payload[..len]);
    if payload.starts_with(b"ping") {
        bytes[..4].copy_from_slice(b"pong");
    }
    Answer { bytes, len }
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    let msg_out = number(args, "msg_out", MSG_OUT.into()) as u32;
    let msg_sint = number(args, "msg_sint", MSG_SINT.into()) as u8;
    let event_out = number(args, "event_out", EVENT_OUT.into()) as u32;
    let event_sint = number(args, "event_sint", EVENT_SINT.into()) as u8;
    let event_flag = number(args, "event_flag", EVENT_FLAG.into()) as u16;
    let status_every = number(args, "status_every", 5000).max(1);

    sint_interrupts::install();
    let mut hv = client_with_hypercalls();
    // The SINTs before the SynIC: once Linux's first post is accepted, it interrupts.
    hv.enable_sint(msg_sint, MESSAGE_VECTOR).expect("message SINT");
    if event_sint != msg_sint {
        hv.enable_sint(event_sint, EVENT_VECTOR).expect("event SINT");
    }
    hv.enable_synic();
    let period = period();
    println!(
        "started; answering messages on SINT {} through connection {}, signals on SINT {} flag {} through connection {}; timer period {} APIC counts",
        msg_sint, msg_out, event_sint, event_flag, event_out, period
    );
    gp::start_timer(period);

    let mut waiting: Option<Answer> = None;
    let mut signal_owed = false;
    let (mut answered, mut pings, mut signals, mut full, mut failures) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut next_status = status_every;
    loop {
        halt_unless_busy(|| {
            // Work: a message to take (unless an answer still waits), a signal, or the
            // status line. An answer or signal that waits for Linux is retried at the
            // next interrupt, not in a busy loop.
            if hv.take_event(event_sint, event_flag) {
                signal_owed = true;
                return true;
            }
            (waiting.is_none() && hv.has_message(msg_sint)) || gp::ticks() >= next_status
        });
        if signal_owed {
            match hv.signal_event(event_out, 0) {
                Ok(()) => {
                    signal_owed = false;
                    signals += 1;
                }
                Err(e) if u16::from(e) == HvStatus::InvalidSynicState.code() => {}
                Err(e) => {
                    signal_owed = false;
                    failures += 1;
                    println!("signal on connection {} failed: status {:#x}", event_out, u16::from(e));
                }
            }
        }
        loop {
            if waiting.is_none() {
                let Some(message) = hv.receive(msg_sint) else { break };
                if message.payload().starts_with(b"ping") {
                    pings += 1;
                }
                waiting = Some(answer(message.payload()));
            }
            let Some(a) = &waiting else { break };
            match hv.post_message(msg_out, ANSWER_TYPE, &a.bytes[..a.len]) {
                Ok(()) => {
                    waiting = None;
                    answered += 1;
                }
                Err(e) if e.is_queue_full() => {
                    full += 1;
                    break;
                }
                Err(e) if e.status_code() == Some(HvStatus::InvalidSynicState.code()) => break,
                Err(e) => {
                    waiting = None;
                    failures += 1;
                    println!("answer on connection {} failed: {:?}", msg_out, e);
                }
            }
        }
        let tick = gp::ticks();
        if tick >= next_status {
            next_status = tick - tick % status_every + status_every;
            println!(
                "tick {}: {} messages answered ({} pings), {} signals answered, Linux's queue full {} times, {} failures",
                tick, answered, pings, signals, full, failures
            );
        }
    }
}
