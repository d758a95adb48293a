//! Demo partition "control": the real-time side. Counts control cycles and prints a line
//! every so often. (The periodic LAPIC-timer loop comes with interrupt delivery.)
#![no_std]
#![no_main]

use bulkhead_guests::println;

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start() -> ! {
    println!("started");
    let mut cycle: u64 = 0;
    loop {
        cycle += 1;
        if cycle.is_multiple_of(2_000_000) {
            println!("cycle {}", cycle);
        }
        core::hint::black_box(cycle);
    }
}
