//! Test payload "witness": the partition an attacker must not disturb. It counts, keeps a
//! canary in its own memory and checks it; after `cycles=N` (default 8M) it reports PASS
//! if the canary never changed.
//!
//! With `uart=listen` it also listens on its console UART as a driver polling for input
//! would (FIFOs on, the receive interrupt enabled, LSR and IIR read every 2^20 cycles,
//! RBR while LSR.DR is set), and every 2^26 cycles prints how often it looked and how
//! many bytes it received: a partition not named `console_input` must receive none.
#![no_std]
#![no_main]

use bulkhead_guests::{arg, cmdline, inb, outb, parse_u64, println, report};
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
    let listen = arg(args, "uart") == Some("listen");
    if listen {
        // FCR: FIFOs on; IER: received data available (16550A registers at 0x3F8).
        outb(0x3fa, 0x01);
        outb(0x3f9, 0x01);
    }
    let (mut looks, mut received) = (0u64, 0u64);
    let mut intact = true;
    for cycle in 1..=cycles {
        if listen && cycle.is_multiple_of(1 << 20) {
            looks += 1;
            let _iir = inb(0x3fa);
            while inb(0x3fd) & 0x01 != 0 && received < u64::MAX {
                let byte = inb(0x3f8);
                received += 1;
                println!("witness: uart received byte {:#04x}", byte);
            }
            if cycle.is_multiple_of(1 << 26) {
                println!("witness: uart: looked {} times, {} bytes received", looks, received);
            }
        }
        if cycle.is_multiple_of(cycles / 4) {
            // SAFETY: reading our own static; volatile so the check is real.
            intact &= unsafe { read_volatile(addr_of!(CANARY)) } == CANARY_VALUE;
            println!("witness: alive, cycle {}, canary {}", cycle, if intact { "intact" } else { "CHANGED" });
        }
        core::hint::black_box(cycle);
    }
    report(intact)
}
