//! Demo partition "telemetry": the general-purpose side. Prints what it sees of the
//! platform, a few status lines, then reports that the demo ran.
#![no_std]
#![no_main]

use bulkhead_guests::{cpuid, println, report};

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start() -> ! {
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
    report(hypervisor && !vmx)
}
