//! Runtime of the partition payloads: entry glue, console output, and a way to report a
//! test verdict.
//!
//! Payloads are ELF64 images linked at guest-physical 1 MiB (`linker.ld`); the hypervisor
//! enters them in 64-bit mode with identity page tables and a stack (see
//! docs/architecture.md, "Partition boot area"). Console output goes to the partition's
//! virtual 16550 at 0x3F8; the hypervisor prefixes each line with the partition name.
#![no_std]

use core::fmt::{self, Write};

const CONSOLE: u16 = 0x3f8;
/// Writing here reports a verdict (0 = pass, anything else = fail). The hypervisor logs it
/// and, under an emulator (`exit=emulator`), ends the run with it.
pub const REPORT_PORT: u16 = 0xf4;

/// Writes one byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port output has no memory effects; the hypervisor decides what it does.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

/// Reads one byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as in `outb`.
    unsafe { core::arch::asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags)) };
    value
}

/// The partition's console.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            outb(CONSOLE, b);
        }
        Ok(())
    }
}

/// `println!` to the partition console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::Console, $($arg)*);
    }};
}

/// Reports the test verdict and parks the CPU.
pub fn report(pass: bool) -> ! {
    println!("{}", if pass { "PASS" } else { "FAIL" });
    outb(REPORT_PORT, if pass { 0 } else { 1 });
    idle()
}

/// Parks the CPU. Interrupts stay as the hypervisor delivers them.
pub fn idle() -> ! {
    loop {
        // SAFETY: HLT only waits for the next interrupt.
        unsafe { core::arch::asm!("hlt", options(nomem, nostack, preserves_flags)) };
    }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// CPUID as the partition sees it.
pub fn cpuid(leaf: u32, subleaf: u32) -> core::arch::x86_64::CpuidResult {
    core::arch::x86_64::__cpuid_count(leaf, subleaf)
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("panic: {}", info);
    report(false)
}
