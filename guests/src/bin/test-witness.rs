//! Test payload "witness": the partition an attacker must not disturb. It counts, keeps a
//! canary in its own memory and checks it; after `cycles=N` (default 8M) it reports PASS
//! if the canary never changed.
#![no_std]
#![no_main]

use bulkhead_guests::{arg, cmdline, parse_u64, println, report};
use core::ptr::{addr_of, read_volatile};

const CANARY_VALUE: u64 = 0x5afe_cafe_d00d_f00d;
static CANARY: u64 = CANARY_VALUE;

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    let cycles = arg(args, "cycles").and_then(parse_u64).unwrap_or(8_000_000);
    println!("witness: canary at {:#x}, running {} cycles", addr_of!(CANARY) as u64, cycles);
    let mut intact = true;
    for cycle in 1..=cycles {
        if cycle.is_multiple_of(cycles / 4) {
            // SAFETY: reading our own static; volatile so the check is real.
            intact &= unsafe { read_volatile(addr_of!(CANARY)) } == CANARY_VALUE;
            println!("witness: alive, cycle {}, canary {}", cycle, if intact { "intact" } else { "CHANGED" });
        }
        core::hint::black_box(cycle);
    }
    report(intact)
}
