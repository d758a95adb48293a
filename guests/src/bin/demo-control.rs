//! Demo partition "control": the real-time side. A periodic loop driven by its own core's
//! local APIC timer (x2APIC, passed through: neither the interrupt nor the EOI exits to
//! the hypervisor); it halts between ticks and reports every 100th. Its tick count is
//! published in the shared memory named by its command line (`status=ADDRESS`, the demo's
//! "status" region), which telemetry reads.
#![no_std]
#![no_main]

use bulkhead_guests::{arg, cmdline, demo_status, gp, parse_u64, println};

/// Timer period in APIC timer ticks (divide by 1).
const PERIOD: u32 = 50_000;

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    let status = arg(args, "status").and_then(parse_u64);
    gp::install();
    println!("started; periodic x2APIC timer, vector {:#x}", gp::TIMER_VECTOR);
    gp::start_timer(PERIOD);
    let mut reported = 0;
    loop {
        // SAFETY: waits for the next interrupt; the timer is running.
        unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
        let ticks = gp::ticks();
        if ticks / 100 > reported {
            reported = ticks / 100;
            println!("timer tick {}", ticks);
            if let Some(page) = status {
                demo_status::publish(page, ticks);
            }
        }
    }
}
