//! Ending a run. On a board the hypervisor runs until power-off; under an emulator the
//! harness needs the run to end with a verdict it can read (see `bulkhead_abi::run`):
//! the last log frame says success or failure, then the emulator is told to exit.

use bulkhead_abi::run::{
    BOCHS_MAGIC_BREAKS, BOCHS_SHUTDOWN_MAGIC, BOCHS_SHUTDOWN_PORT, QEMU_DEBUG_EXIT_PORT, QEMU_EXIT_FAILURE,
    QEMU_EXIT_SUCCESS, RUN_END_FAILURE, RUN_END_SUCCESS,
};
use bulkhead_drivers::port::outb;
use core::sync::atomic::{AtomicBool, Ordering};

static EMULATOR_EXIT: AtomicBool = AtomicBool::new(false);
static ENDED: AtomicBool = AtomicBool::new(false);

/// Whether the run has ended (a verdict, or a failure of the hypervisor).
pub fn ended() -> bool {
    ENDED.load(Ordering::Acquire)
}

/// Whether the end of the run also ends the emulator (kernel switch `exit=emulator`).
pub fn set_emulator_exit(enabled: bool) {
    EMULATOR_EXIT.store(enabled, Ordering::Relaxed);
}

pub fn emulator_exit() -> bool {
    EMULATOR_EXIT.load(Ordering::Relaxed)
}

/// Resets the whole board (fault policy `reset-board`). Under an emulator the run ends
/// instead, as a failure, so the harness sees why.
pub fn reset_board() -> ! {
    if emulator_exit() {
        fail("board reset requested by a partition's fault policy");
    }
    crate::console::drain();
    // SAFETY: the PCI reset control register (0xCF9: full reset) and, failing that, the
    // keyboard controller's reset line; either restarts the machine.
    unsafe {
        outb(0xcf9, 0x02);
        outb(0xcf9, 0x06);
        outb(0x64, 0xfe);
    }
    halt_forever()
}

/// Ends the run as a success.
pub fn succeed() -> ! {
    if !ENDED.swap(true, Ordering::AcqRel) {
        crate::cpu::percpu::log_stack_use();
        crate::log::info!("{=str}", RUN_END_SUCCESS);
        exit_emulator(true);
    }
    halt_forever()
}

/// Ends the run as a failure with `cause`. Only the first CPU to end the run reports.
pub fn fail(cause: &str) -> ! {
    if !ENDED.swap(true, Ordering::AcqRel) {
        crate::log::error!("{=str}: {=str}", RUN_END_FAILURE, cause);
        exit_emulator(false);
    }
    halt_forever()
}

fn exit_emulator(success: bool) {
    crate::console::drain();
    if !EMULATOR_EXIT.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: only reached under an emulator (`exit=emulator`), where these ports are the
    // documented exit devices; each is unused by the other emulator.
    unsafe {
        outb(QEMU_DEBUG_EXIT_PORT, if success { QEMU_EXIT_SUCCESS } else { QEMU_EXIT_FAILURE });
        if success {
            // Bochs magic breakpoint; the harness's debugger script quits with status 0.
            // Repeated: see BOCHS_MAGIC_BREAKS.
            for _ in 0..BOCHS_MAGIC_BREAKS {
                core::arch::asm!("xchg bx, bx", options(nomem, nostack, preserves_flags));
            }
        }
        for &byte in BOCHS_SHUTDOWN_MAGIC {
            outb(BOCHS_SHUTDOWN_PORT, byte);
        }
    }
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    match info.location() {
        Some(location) => crate::log::error!(
            "panicked at {=str}:{=u32}:{=u32}: {}",
            location.file(),
            location.line(),
            location.column(),
            crate::log::Display2Format(&info.message())
        ),
        None => crate::log::error!("panicked: {}", crate::log::Display2Format(&info.message())),
    }
    crate::supervision::reset_record::record(crate::supervision::reset_record::ResetReason::Panic);
    fail("panic")
}

/// What defmt calls on its own panics (`defmt::panic!`, failed `defmt::unwrap!`); the
/// kernel uses none, but a defmt build must define it.
#[cfg(bulkhead_console = "defmt")]
#[defmt::panic_handler]
fn defmt_panic() -> ! {
    fail("defmt panic")
}
