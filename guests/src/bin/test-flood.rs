//! Test payload "flood": one partition floods the hypervisor while two others measure
//! whether it slows them down (`tests/configs/bochs-flood.toml`; `role=` picks the part).
//!
//! * `role=flood`: waits for ping's start signal (event flag 5 on SINT 3), then, without
//!   pause, prints 150-character console lines, posts to pong on a connection whose queue
//!   is full (pong never reads SINT 4: INSUFFICIENT_BUFFERS after the slot and the queue
//!   are taken) and signals pong's event flag 7 (coalesced: pong never takes it). After
//!   `ready=` lines (more than the hypervisor's console burst) it pauses for 200 ms, prints
//!   how its posts and signals were answered, and signals ping (flag 9).
//! * `role=pong`: echoes every message ping sends.
//! * `role=ping`: the neighbour. A phase is `rounds=` iterations of one message round trip
//!   to pong followed by one 150-character console line (a partition that logs as it
//!   works), with its local APIC timer ticking. It runs a phase alone (the baseline), starts
//!   the flood, waits until the flooder is past its console burst, and runs the phase again.
//!   It passes when, during the flood, the phase takes at most `slowdown=` percent
//!   (default 150) of the baseline plus `extra_ms=` (default 20), no round trip takes more
//!   than `extra_ms=` longer than the longest baseline one, and the timer ticks at least
//!   `ticks=` percent (default 50) as often as in the baseline (the bounds
//!   docs/testing.md states). With `judge=no` (an emulator whose time is the host's, where
//!   the host's scheduling decides these figures) it prints them without judging and
//!   passes when both phases completed every round trip with the timer ticking.
#![no_std]
#![no_main]

use bulkhead_abi::hyperv::msr;
use bulkhead_guests::hyperv::{Endpoint, rdmsr};
use bulkhead_guests::{arg, cmdline, gp, idle, parse_u64, println, report};

mod kind {
    pub const DATA: u32 = 1;
}

/// 100 ns units of the partition's reference time (TIME_REF_COUNT).
fn now() -> u64 {
    rdmsr(msr::TIME_REF_COUNT)
}

fn enable_interrupts() {
    // SAFETY: the IDT handles every vector this payload enables (`Endpoint::new`, timer).
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
}

/// 130 characters after a prefix of at most 20, so a line is as long as the hypervisor
/// takes (160) and its UART time dominates ping's round trip.
const FILLER: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-abcd";
const _: () = assert!(FILLER.len() == 130);

/// What one phase of ping measured.
struct Phase {
    /// Reference time the whole phase took (100 ns).
    total: u64,
    /// The longest round trip (100 ns).
    longest: u64,
    ticks: u64,
}

fn phase(end: &mut Endpoint, name: &str, rounds: u64) -> Option<Phase> {
    let ticks = gp::ticks();
    let start = now();
    let mut longest = 0;
    for round in 0..rounds {
        let sent = now();
        if let Err(e) = end.post_retrying(kind::DATA, &round.to_le_bytes()) {
            println!("flood: {} post {} failed: {:?}", name, round, e);
            return None;
        }
        let reply = end.wait_message();
        enable_interrupts();
        longest = longest.max(now() - sent);
        if reply.payload() != round.to_le_bytes() {
            println!("flood: {} round {}: wrong reply", name, round);
            return None;
        }
        println!("flood: {} {:>4} {}", name, round, FILLER);
    }
    Some(Phase { total: now() - start, longest, ticks: gp::ticks() - ticks })
}

fn ping(args: &str) -> bool {
    let rounds = arg(args, "rounds").and_then(parse_u64).unwrap_or(40);
    let slowdown = arg(args, "slowdown").and_then(parse_u64).unwrap_or(150);
    // In reference time (100 ns).
    let extra = arg(args, "extra_ms").and_then(parse_u64).unwrap_or(20) * 10_000;
    let min_ticks = arg(args, "ticks").and_then(parse_u64).unwrap_or(50);
    let judge = arg(args, "judge") != Some("no");
    // Messages out on 1, events out (to the flooder) on 2, flag 9 in (from the flooder).
    let mut end = Endpoint::new(1, 2, 9, true);
    gp::start_timer(1_000_000);
    let Some(alone) = phase(&mut end, "alone", rounds) else { return false };
    // The flooder's vCPU may not have enabled its SynIC yet (a late start on a busy host).
    if end.signal_retrying().is_err() {
        println!("flood: cannot start the flood");
        return false;
    }
    end.wait_event();
    enable_interrupts();
    let Some(flooded) = phase(&mut end, "flooded", rounds) else { return false };
    // Microseconds, for the log.
    let us = |t: u64| t / 10;
    let total_ok = flooded.total <= alone.total * slowdown / 100 + extra;
    let longest_ok = flooded.longest <= alone.longest + extra;
    // Ticks per unit of time at least `min_ticks` percent of the baseline's.
    let ticks_ok = flooded.ticks * alone.total * 100 >= alone.ticks * flooded.total * min_ticks && flooded.ticks > 0;
    println!(
        "flood: alone: {} round trips and lines in {} us, longest round trip {} us, {} timer ticks",
        rounds,
        us(alone.total),
        us(alone.longest),
        alone.ticks
    );
    println!(
        "flood: flooded: {} round trips and lines in {} us, longest round trip {} us, {} timer ticks",
        rounds,
        us(flooded.total),
        us(flooded.longest),
        flooded.ticks
    );
    if !judge {
        println!("flood: bounds not judged on this emulator (host time)");
        return alone.ticks > 0 && flooded.ticks > 0;
    }
    println!("flood: within the bounds: phase time {}, round trip {}, timer ticks {}", total_ok, longest_ok, ticks_ok);
    total_ok && longest_ok && ticks_ok
}

fn pong() -> ! {
    // Messages out on 3; pong sends no events; flag 5 is not its own (never taken).
    let mut end = Endpoint::new(3, 0, 5, true);
    loop {
        let message = end.wait_message();
        if end.post_retrying(message.header.message_type, message.payload()).is_err() {
            println!("flood: pong cannot echo");
        }
    }
}

fn flood(args: &str) -> ! {
    let ready = arg(args, "ready").and_then(parse_u64).unwrap_or(400);
    // Messages out on 5 (to pong's SINT 4, never read), events out on 6 (pong's flag 7),
    // flag 5 in (ping's start signal).
    let mut end = Endpoint::new(5, 6, 5, false);
    end.wait_event();
    let (mut full, mut accepted, mut signals) = (0u64, 0u64, 0u64);
    for line in 0u64.. {
        println!("flood {:>8} {}", line, FILLER);
        match end.post(kind::DATA, &line.to_le_bytes()) {
            Ok(()) => accepted += 1,
            Err(e) if e.is_queue_full() => full += 1,
            Err(_) => {}
        }
        signals += u64::from(end.signal().is_ok());
        if line == ready {
            // A pause, so the rate limit lets this line through (10 lines a second).
            let until = now() + 2_000_000;
            while now() < until {}
            println!(
                "flood: past {} lines: {} posts accepted, {} refused as full, {} signals",
                line, accepted, full, signals
            );
            // Flag 9 of ping, on connection 4.
            if end.hv.signal_event(4, 0).is_err() {
                println!("flood: cannot tell ping");
            }
        }
    }
    idle()
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    match arg(args, "role") {
        Some("ping") => report(ping(args)),
        Some("pong") => pong(),
        Some("flood") => flood(args),
        other => {
            println!("flood: unknown role {:?}", other);
            report(false)
        }
    }
}
