//! Benchmark payload (`cargo xtask bench`). Under Bochs with `clock: sync=none` the TSC
//! advances once per executed instruction, so RDTSC deltas are instruction counts: guest
//! and hypervisor together, deterministic run to run.
//!
//! `case=exits`: the round trip of a CPUID, an I/O-port read (the virtual UART's line
//! status), an intercepted RDMSR (MTRRCAP) and a null hypercall (a Hyper-V hypercall with
//! an unknown call code, answered INVALID_HYPERCALL_CODE), each minus the same loop
//! without the exiting instruction. `case=timer`: a compute loop of 10M instructions with the local
//! APIC timer at 1 kHz (calibrated against the TSC); the hypervisor's exit counts for the
//! partition then show what the timer interrupts and EOIs cost (every exit but the
//! console's port writes). `case=timer-setup`: the same without the loop, so that the
//! set-up's own exits (the calibration, the switch to x2APIC mode, starting the timer) can
//! be subtracted: the run is deterministic, so the difference is the loop's exits.
//!
//! `case=supervision` (tests/configs/bochs-bench-supervision.toml: a watchdog, fault
//! policy restart): the round trip of a watchdog check-in; then the TSC just before a
//! deliberate triple fault, and in the restarted partition the TSC at its first
//! instruction: the difference is what a fault costs until the partition runs again
//! (stopping it, zeroing its memory, reloading its payload).
//!
//! `case=ticker`: the real-time partition beside Linux (the Linux boot test and bench).
//! The same 1 kHz timer, then a loop that never ends: every `every=N` ticks (default 1000)
//! it prints the tick count and the TSC, so the log shows the timer ticking throughout the
//! neighbour's boot, and the hypervisor's exit count for the partition at the run's end
//! shows what the ticks cost (its console output aside). It spins instead of halting:
//! HLT is an exit.
#![no_std]
#![no_main]

use bulkhead_guests::{arg, cmdline, gp, inb, println, rdtsc};

const ROUNDS: u64 = 2_000;

/// The null hypercall's call code: one no Hyper-V interface defines.
const NULL_CALL_CODE: u16 = 0;
/// HV_STATUS_INVALID_HYPERCALL_CODE.
const INVALID_HYPERCALL_CODE: u16 = bulkhead_abi::hyperv::hypercall::HvStatus::InvalidHypercallCode as u16;

fn per_round(mut body: impl FnMut()) -> u64 {
    let start = rdtsc();
    for _ in 0..ROUNDS {
        body();
    }
    (rdtsc() - start) / ROUNDS
}

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: an MSR the hypervisor answers (MTRRCAP).
    unsafe { core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack)) };
    u64::from(hi) << 32 | u64::from(lo)
}

fn exits() {
    let baseline = per_round(|| {
        core::hint::black_box(0u32);
    });
    let cpuid = per_round(|| {
        core::hint::black_box(bulkhead_guests::cpuid(0, 0));
    });
    let io = per_round(|| {
        core::hint::black_box(inb(0x3fd));
    });
    let msr = per_round(|| {
        core::hint::black_box(rdmsr(0xfe));
    });
    // A Hyper-V hypercall with a call code no hypervisor defines (0, fast form): answered
    // INVALID_HYPERCALL_CODE, the like-for-like of an unknown VMCALL elsewhere.
    let mut hv = bulkhead_guests::hyperv::client_with_hypercalls();
    let null_input = bulkhead_abi::hyperv::hypercall::HypercallInput::new(NULL_CALL_CODE).fast(true).value();
    let mut wrong = 0u64;
    let null = per_round(|| {
        let result = hv.raw_hypercall(null_input, 0, 0);
        wrong += u64::from(result & 0xffff != u64::from(INVALID_HYPERCALL_CODE));
    });
    if wrong != 0 {
        println!("bench: null hypercall: {} answers other than INVALID_HYPERCALL_CODE", wrong);
        bulkhead_guests::report(false)
    }
    println!("bench: cpuid_exit_round_trip={}", cpuid.saturating_sub(baseline));
    println!("bench: null_hypercall_round_trip={}", null.saturating_sub(baseline));
    println!("bench: io_exit_round_trip={}", io.saturating_sub(baseline));
    println!("bench: msr_exit_round_trip={}", msr.saturating_sub(baseline));
    println!("bench: loop_baseline={}", baseline);
}

/// APIC timer ticks per TSC tick, measured over `span` TSC ticks (x2APIC current count).
fn apic_per_tsc(span: u64) -> (u64, u64) {
    bulkhead_guests::lapic::enter_x2apic_mode();
    // SAFETY: x2APIC timer registers passed through to the partition.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") 0x83eu32, in("eax") 0b1011u32, in("edx") 0u32, options(nostack));
        core::arch::asm!("wrmsr", in("ecx") 0x838u32, in("eax") u32::MAX, in("edx") 0u32, options(nostack));
    }
    let start = rdtsc();
    while rdtsc() - start < span {}
    let current: u32;
    // SAFETY: as above.
    unsafe { core::arch::asm!("rdmsr", in("ecx") 0x839u32, out("eax") current, out("edx") _, options(nostack)) };
    // SAFETY: stop the one-shot count.
    unsafe { core::arch::asm!("wrmsr", in("ecx") 0x838u32, in("eax") 0u32, in("edx") 0u32, options(nostack)) };
    (u64::from(u32::MAX - current), span)
}

/// The timer case with a compute loop of `loop_instructions` (0: the set-up alone).
fn timer(tsc_hz: u64, loop_instructions: u64) {
    let (apic_ticks, tsc_ticks) = apic_per_tsc(1_000_000);
    let period = (apic_ticks * tsc_hz / tsc_ticks / 1000).max(1) as u32;
    gp::install();
    gp::start_timer(period);
    let start = rdtsc();
    let mut x = 0u64;
    while rdtsc() - start < loop_instructions {
        x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    let instructions = rdtsc() - start;
    println!("bench: timer_ticks={}", gp::ticks());
    println!("bench: timer_loop_instructions={}", instructions);
    println!("bench: timer_period={}", period);
}

/// The `ticker` case: the timer at 1 kHz and a report every `every` ticks, forever.
fn ticker(tsc_hz: u64, every: u64) -> ! {
    let (apic_ticks, tsc_ticks) = apic_per_tsc(1_000_000);
    let period = (apic_ticks * tsc_hz / tsc_ticks / 1000).max(1) as u32;
    gp::install();
    gp::start_timer(period);
    println!("ticker: 1 kHz timer started (period {}), a report every {} ticks", period, every);
    let mut next = every;
    loop {
        let ticks = gp::ticks();
        if ticks >= next {
            println!("ticker: ticks={} tsc={}", ticks, rdtsc());
            next += every;
        }
        core::hint::spin_loop();
    }
}

fn supervision(first_tsc: u64) -> ! {
    use bulkhead_abi::supervision::PARTITION_SELF;
    let mut hv = bulkhead_guests::hyperv::client_with_hypercalls();
    let me = hv.partition_status(PARTITION_SELF).expect("own status");
    if me.restarts > 0 {
        println!("bench: restart_tsc={}", first_tsc);
        bulkhead_guests::report(true)
    }
    let baseline = per_round(|| {
        core::hint::black_box(0u32);
    });
    let check_in = per_round(|| {
        core::hint::black_box(hv.watchdog_check_in().is_ok());
    });
    println!("bench: watchdog_check_in_round_trip={}", check_in.saturating_sub(baseline));
    println!("bench: fault_tsc={}", rdtsc());
    // An empty IDT, then an exception: the CPU cannot deliver it and shuts down (a triple
    // fault), which the fault policy answers with a restart.
    let empty = [0u16; 5];
    // SAFETY: on purpose: the exception that follows cannot be delivered.
    unsafe { core::arch::asm!("lidt [{0}]", "int3", in(reg) empty.as_ptr(), options(nostack)) };
    unreachable!()
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    let first_tsc = rdtsc();
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    match arg(args, "case") {
        Some("supervision") => supervision(first_tsc),
        Some(case @ ("timer" | "timer-setup")) => {
            let tsc_hz = arg(args, "tsc_hz").and_then(bulkhead_guests::parse_u64).unwrap_or(50_000_000);
            timer(tsc_hz, if case == "timer" { 10_000_000 } else { 0 });
            bulkhead_guests::report(true)
        }
        Some("ticker") => {
            let tsc_hz = arg(args, "tsc_hz").and_then(bulkhead_guests::parse_u64).unwrap_or(50_000_000);
            let every = arg(args, "every").and_then(bulkhead_guests::parse_u64).unwrap_or(1000).max(1);
            ticker(tsc_hz, every)
        }
        Some("exits") | None => {
            exits();
            bulkhead_guests::report(true)
        }
        Some(other) => {
            println!("bench: unknown case {}", other);
            bulkhead_guests::report(false)
        }
    }
}
