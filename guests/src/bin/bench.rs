//! Benchmark payload (`cargo xtask bench`). Under Bochs with `clock: sync=none` the TSC
//! advances once per executed instruction, so RDTSC deltas are instruction counts: guest
//! and hypervisor together, deterministic run to run.
//!
//! `case=exits`: the round trip of a CPUID, an I/O-port read (the virtual UART's line
//! status) and an intercepted RDMSR (MTRRCAP), each minus the same loop without the
//! exiting instruction.
#![no_std]
#![no_main]

use bulkhead_guests::{arg, cmdline, inb, println, rdtsc};

const ROUNDS: u64 = 2_000;

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
    println!("bench: cpuid_exit_round_trip={}", cpuid.saturating_sub(baseline));
    println!("bench: io_exit_round_trip={}", io.saturating_sub(baseline));
    println!("bench: msr_exit_round_trip={}", msr.saturating_sub(baseline));
    println!("bench: loop_baseline={}", baseline);
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    match arg(args, "case") {
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
