//! Test payload "supervision": the watchdog and the supervision hypercalls
//! (`bulkhead_abi::supervision`, docs/supervision.md), by its command line (`case=NAME`).
//!
//! - `case=watched period_ms=P checkins=N after=M`: checks in every P/4 ms. In its first
//!   life it stops after N check-ins and spins without a single exit, so its watchdog must
//!   fire and its policy (restart) bring it back; in its second life it checks in M times,
//!   then reads its own status (one restart, one watchdog miss, one fault of reason
//!   watchdog, running) and reports.
//! - `case=steady period_ms=P`: checks in every P/4 ms for good; prints every 10th.
//! - `case=supervisor target=T other=O`: reads its own and T's status, is refused for O and
//!   for ids no partition has, restarts T, halts it, restarts it from halted, checking T's
//!   state and restart count after each, then prints T's counters (which the test compares
//!   with the hypervisor's end-of-run report) and reports.
//! - `case=supervised`: as a partition that supervises nobody: reads its own status, is
//!   refused everything else with the documented statuses, then idles (no exits).

#![no_std]
#![no_main]

use bulkhead_abi::hyperv::hypercall::code;
use bulkhead_abi::hyperv::{HypercallInput, msr};
use bulkhead_abi::supervision::{ControlAction, FaultReason, PARTITION_SELF, PartitionState, PartitionStatus, flags};
use bulkhead_guests::hyperv::{client_with_hypercalls, rdmsr, status};
use bulkhead_guests::{arg, cmdline, idle, parse_u64, println, rdtsc, report};

type Hv = bulkhead_abi::hyperv::client::Client<bulkhead_abi::hyperv::client::X64>;

/// TSC ticks per millisecond, from the hypervisor's TSC frequency MSR.
fn ticks_per_ms() -> u64 {
    (rdmsr(msr::TSC_FREQUENCY) / 1000).max(1)
}

fn sleep_ms(ms: u64) {
    let end = rdtsc() + ms * ticks_per_ms();
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// A call's status code (0 for success).
fn code_of(result: Result<(), bulkhead_abi::hyperv::client::HypercallError>) -> u16 {
    result.err().map_or(0, |e| e.0)
}

fn expect(what: &str, got: u16, want: u16) -> bool {
    println!("supervision: {} status {:#x}", what, got);
    if got != want {
        println!("supervision: FAIL: {} wanted {:#x}", what, want);
    }
    got == want
}

fn own_status(hv: &mut Hv) -> PartitionStatus {
    hv.partition_status(PARTITION_SELF).expect("own status")
}

fn watched(hv: &mut Hv, args: &str) -> ! {
    let period = arg(args, "period_ms").and_then(parse_u64).unwrap_or(100);
    let checkins = arg(args, "checkins").and_then(parse_u64).unwrap_or(20);
    let after = arg(args, "after").and_then(parse_u64).unwrap_or(20);
    let me = own_status(hv);
    println!(
        "watched: life {} (state {}, restarts {}), watchdog {} ms",
        me.restarts + 1,
        me.state().map_or("?", PartitionState::name),
        me.restarts,
        me.watchdog_ms
    );
    let first_life = me.restarts == 0;
    let count = if first_life { checkins } else { after };
    for n in 1..=count {
        if hv.watchdog_check_in().is_err() {
            println!("watched: FAIL: check-in {} refused", n);
            report(false);
        }
        sleep_ms(period / 4);
    }
    if first_life {
        println!("watched: {} check-ins done; stops checking in", count);
        // No exit from here on: only the monitor can notice.
        loop {
            core::hint::spin_loop();
        }
    }
    let s = own_status(hv);
    let watchdog_faults = s.faults_by_reason[FaultReason::Watchdog as usize];
    println!(
        "watched: back: state {}, restarts {}, faults {} (watchdog {}), misses {}, check-ins {}, last fault {}",
        s.state().map_or("?", PartitionState::name),
        s.restarts,
        s.faults,
        watchdog_faults,
        s.watchdog_misses,
        s.check_ins,
        FaultReason::from_u8(s.last_fault).map_or("none", FaultReason::name)
    );
    report(
        s.state() == Some(PartitionState::Running)
            && s.restarts == 1
            && s.faults == 1
            && watchdog_faults == 1
            && s.watchdog_misses == 1
            && s.check_ins == (checkins + after) as u32
            && s.last_fault == FaultReason::Watchdog as u8,
    )
}

fn steady(hv: &mut Hv, args: &str) -> ! {
    let period = arg(args, "period_ms").and_then(parse_u64).unwrap_or(100);
    let mut n = 0u64;
    loop {
        if hv.watchdog_check_in().is_err() {
            println!("steady: FAIL: check-in refused");
        }
        n += 1;
        if n.is_multiple_of(10) {
            println!("steady: {} check-ins", n);
        }
        sleep_ms(period / 4);
    }
}

/// Polls `target`'s status until `done` holds (at most 5 s); the last status read.
fn wait_for(hv: &mut Hv, target: u32, done: impl Fn(&PartitionStatus) -> bool) -> Option<PartitionStatus> {
    let end = rdtsc() + 5000 * ticks_per_ms();
    while rdtsc() < end {
        if let Ok(s) = hv.partition_status(target)
            && done(&s)
        {
            return Some(s);
        }
        sleep_ms(5);
    }
    None
}

fn supervisor(hv: &mut Hv, args: &str) -> ! {
    let target = arg(args, "target").and_then(parse_u64).unwrap_or(1) as u32;
    let other = arg(args, "other").and_then(parse_u64).unwrap_or(2) as u32;
    let me = own_status(hv);
    println!("supervisor: I am partition {} ({}), supervisor {}", me.id, me.name(), me.flags & flags::SUPERVISOR != 0);
    let mut ok = me.flags & flags::SUPERVISOR != 0;
    // The target runs (it printed its checks and idles).
    let Some(t) = wait_for(hv, target, |s| s.state() == Some(PartitionState::Running)) else {
        println!("supervisor: FAIL: target never running");
        report(false)
    };
    println!(
        "supervisor: target {} is {} ({} restarts)",
        t.name(),
        t.state().map_or("?", PartitionState::name),
        t.restarts
    );
    let restart = ControlAction::Restart;
    ok &= expect("status of a partition not supervised", hv.partition_status(other).err().map_or(0, |e| e.0), 0x6);
    ok &= expect("status of partition 99", hv.partition_status(99).err().map_or(0, |e| e.0), 0xD);
    ok &= expect("restart of a partition not supervised", code_of(hv.control_partition(other as u8, restart)), 0x6);
    ok &= expect("restart of partition 99", code_of(hv.control_partition(99, restart)), 0xD);
    let raw =
        hv.raw_hypercall(HypercallInput::new(code::BULKHEAD_PARTITION_CONTROL).fast(true).value(), target.into(), 7);
    ok &= expect("unknown action", status(raw), 0x5);
    let raw = hv.raw_hypercall(HypercallInput::new(code::BULKHEAD_PARTITION_CONTROL).value(), 0, 0);
    ok &= expect("control in the memory form", status(raw), 0x2);
    let raw = hv.raw_hypercall(HypercallInput::new(0x80fe).fast(true).value(), 0, 0);
    ok &= expect("an undefined Bulkhead call code", status(raw), 0x2);

    ok &= expect("restart", code_of(hv.control_partition(target as u8, restart)), 0);
    let back = wait_for(hv, target, |s| s.restarts == 1 && s.state() == Some(PartitionState::Running));
    println!("supervisor: after the restart: {}", back.map_or("FAIL: not back", |_| "running, 1 restart"));
    ok &= back.is_some();
    ok &= expect("halt", code_of(hv.control_partition(target as u8, ControlAction::Halt)), 0);
    let halted = wait_for(hv, target, |s| s.state() == Some(PartitionState::Halted));
    println!("supervisor: after the halt: {}", halted.map_or("FAIL: not halted", |_| "halted"));
    ok &= halted.is_some();
    ok &= expect("halt of a halted partition", code_of(hv.control_partition(target as u8, ControlAction::Halt)), 0x7);
    ok &= expect("restart from halted", code_of(hv.control_partition(target as u8, restart)), 0);
    let back = wait_for(hv, target, |s| s.restarts == 2 && s.state() == Some(PartitionState::Running));
    println!("supervisor: after the restart from halted: {}", back.map_or("FAIL: not back", |_| "running, 2 restarts"));
    ok &= back.is_some();
    // Let the target print its checks and idle, then read its counters, which stay as they
    // are from then on (it idles without exits) for the test to compare with the
    // hypervisor's end-of-run report.
    sleep_ms(300);
    match hv.partition_status(target) {
        Ok(s) => println!(
            "supervisor: target counters: state {}, restarts {}, faults {}, exits io {} msr {} cpuid {} other {}, check-ins {}",
            s.state().map_or("?", PartitionState::name),
            s.restarts,
            s.faults,
            s.exits_io,
            s.exits_msr,
            s.exits_cpuid,
            s.exits_other,
            s.check_ins
        ),
        Err(e) => {
            println!("supervisor: FAIL: status {:#x}", e.0);
            ok = false;
        }
    }
    report(ok)
}

fn supervised(hv: &mut Hv) -> ! {
    let me = own_status(hv);
    let mut ok = me.flags & flags::SUPERVISOR == 0 && me.state() == Some(PartitionState::Running);
    let by_id = hv.partition_status(u32::from(me.id)).map(|s| s.id == me.id).unwrap_or(false);
    ok &= by_id;
    let other = u32::from(me.id == 0);
    ok &=
        expect("non-supervisor: status of another partition", hv.partition_status(other).err().map_or(0, |e| e.0), 0x6);
    ok &= expect("non-supervisor: restart", code_of(hv.control_partition(other as u8, ControlAction::Restart)), 0x6);
    ok &= expect("non-supervisor: check-in without a watchdog", code_of(hv.watchdog_check_in()), 0x7);
    let raw = hv.raw_hypercall(HypercallInput::new(code::BULKHEAD_WATCHDOG_CHECK_IN).value(), 0, 0);
    ok &= expect("check-in in the memory form", status(raw), 0x2);
    println!(
        "supervised: partition {} ({}), life {}: refusals {}",
        me.id,
        me.name(),
        me.restarts + 1,
        if ok { "as documented" } else { "WRONG" }
    );
    idle()
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    let mut hv = client_with_hypercalls();
    match arg(args, "case") {
        Some("watched") => watched(&mut hv, args),
        Some("steady") => steady(&mut hv, args),
        Some("supervisor") => supervisor(&mut hv, args),
        Some("supervised") => supervised(&mut hv),
        other => {
            println!("supervision: unknown case {:?}", other);
            report(false)
        }
    }
}
