//! Shared runtime of the partition payloads.
//!
//! The payloads are built now so the configuration pipeline validates and packs real ELF
//! files; the hypervisor starts partitions once the VT-x/SVM backends exist, and the
//! payloads gain their behaviour (console output, counters, PASS/FAIL reports) then.
#![no_std]

/// Parks the CPU. Interrupts stay as the hypervisor delivers them.
pub fn idle() -> ! {
    loop {
        // SAFETY: HLT only waits for the next interrupt.
        unsafe { core::arch::asm!("hlt", options(nomem, nostack, preserves_flags)) };
    }
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    idle()
}
