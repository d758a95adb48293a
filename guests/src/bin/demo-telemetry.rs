//! Demo partition "telemetry": the general-purpose side. Prints what it sees of the
//! platform and a few status lines; given `status=ADDRESS` (the demo's "status" shared
//! memory), waits until control has published 200 timer ticks there; then reports that
//! the demo ran.
#![no_std]
#![no_main]

use bulkhead_guests::{arg, cmdline, cpuid, demo_status, parse_u64, println, rdtsc, report};

/// Control must show its ticks within this many TSC ticks (seconds on any emulator).
const CONTROL_DEADLINE: u64 = 10_000_000_000;

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    let status = arg(args, "status").and_then(parse_u64);
    let leaf1 = cpuid(1, 0);
    let hypervisor = leaf1.ecx & (1 << 31) != 0;
    let vmx = leaf1.ecx & (1 << 5) != 0;
    println!("started; cpuid hypervisor={} vmx={}", hypervisor, vmx);
    for status in 1..=3u32 {
        let mut spin = 0u64;
        while spin < 3_000_000 {
            spin = core::hint::black_box(spin + 1);
        }
        println!("status {} ok", status);
    }
    let control = match status {
        Some(page) => {
            let start = rdtsc();
            let seen = loop {
                match demo_status::read(page) {
                    Some(ticks) if ticks >= 200 => break Some(ticks),
                    _ if rdtsc() - start > CONTROL_DEADLINE => break None,
                    _ => core::hint::spin_loop(),
                }
            };
            match seen {
                Some(ticks) => println!("control alive: {} timer ticks in shared memory", ticks),
                None => println!("control published no 200 timer ticks in shared memory"),
            }
            seen.is_some()
        }
        None => true,
    };
    report(hypervisor && !vmx && control)
}
