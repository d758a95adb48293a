//! The hypervisor's console: COM1 carrying defmt frames, behind one global logger that
//! never interleaves two CPUs' frames.
//!
//! The logger lock is a spin lock that knows its owner: a CPU that faults (or takes an
//! NMI) while it holds the lock must still be able to report, so a nested acquire on the
//! owning CPU ends the interrupted frame with a terminator (the host decoder drops it as
//! malformed) and starts afresh. A CPU that died holding the lock is waited for only a
//! bounded time.

use bulkhead_abi::run::CONSOLE_SYNC;
use bulkhead_drivers::port::IoPorts;
use bulkhead_drivers::uart16550::Uart16550;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering};

const BAUD: u32 = 115_200;
const NO_OWNER: u32 = u32::MAX;
/// Spins before a waiting CPU takes the lock from a holder presumed dead.
const LOCK_SPIN_LIMIT: u32 = 20_000_000;

struct ConsoleState {
    uart: Uart16550<IoPorts>,
    encoder: defmt::Encoder,
    depth: u32,
    interrupts_were_enabled: bool,
}

struct Console {
    owner: AtomicU32,
    state: UnsafeCell<ConsoleState>,
}

// SAFETY: `state` is only touched by the CPU recorded in `owner`.
unsafe impl Sync for Console {}

static CONSOLE: Console = Console {
    owner: AtomicU32::new(NO_OWNER),
    state: UnsafeCell::new(ConsoleState {
        // SAFETY: the board file names this UART as the console, and the configuration
        // rules keep it out of every partition (rule `console-assigned`).
        uart: Uart16550::new(unsafe { IoPorts::new(crate::config::SYSTEM.board.console_port) }),
        encoder: defmt::Encoder::new(),
        depth: 0,
        interrupts_were_enabled: false,
    }),
};

/// Programs the UART and announces the start of the defmt stream. BSP, before any log.
pub fn init() {
    // SAFETY: no CPU logs before this returns, so nobody else touches the state.
    let state = unsafe { &mut *CONSOLE.state.get() };
    state.uart.init(BAUD);
    state.uart.write_all_bytes(CONSOLE_SYNC);
}

/// Takes the console for this CPU; returns the state to use.
fn lock() -> &'static mut ConsoleState {
    let interrupts = x86_64::instructions::interrupts::are_enabled();
    x86_64::instructions::interrupts::disable();
    let me = crate::percpu::current_index();
    // SAFETY (for every `state` access below): we are, or are about to be, the owner.
    let state = unsafe { &mut *CONSOLE.state.get() };
    if CONSOLE.owner.load(Ordering::Relaxed) == me {
        // Nested on the owning CPU (an exception or NMI while logging): close the broken
        // frame so the decoder can resynchronise, and start a fresh encoder.
        state.uart.write_byte(0);
        state.encoder = defmt::Encoder::new();
        state.depth += 1;
        return state;
    }
    let mut spins = 0u32;
    while CONSOLE.owner.compare_exchange_weak(NO_OWNER, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
        spins += 1;
        if spins == LOCK_SPIN_LIMIT {
            // The holder stopped (crashed or parked with the lock): take over.
            CONSOLE.owner.swap(me, Ordering::Acquire);
            state.uart.write_byte(0);
            state.encoder = defmt::Encoder::new();
            break;
        }
        core::hint::spin_loop();
    }
    state.depth = 1;
    state.interrupts_were_enabled = interrupts;
    state
}

fn unlock(state: &mut ConsoleState) {
    state.depth -= 1;
    if state.depth == 0 {
        let restore = state.interrupts_were_enabled;
        CONSOLE.owner.store(NO_OWNER, Ordering::Release);
        if restore {
            x86_64::instructions::interrupts::enable();
        }
    }
}

/// Waits until everything logged so far has left the UART (before the machine stops).
pub fn drain() {
    let state = lock();
    state.uart.drain();
    unlock(state);
}

fn owned_state() -> &'static mut ConsoleState {
    // SAFETY: only called between acquire and release, by the owning CPU.
    unsafe { &mut *CONSOLE.state.get() }
}

#[defmt::global_logger]
struct Logger;

// SAFETY: acquire/release bracket every frame and exclude other CPUs (see module docs).
unsafe impl defmt::Logger for Logger {
    fn acquire() {
        let state = lock();
        let ConsoleState { uart, encoder, .. } = state;
        encoder.start_frame(|bytes| uart.write_all_bytes(bytes));
    }

    unsafe fn flush() {}

    unsafe fn release() {
        let state = owned_state();
        let ConsoleState { uart, encoder, .. } = &mut *state;
        encoder.end_frame(|bytes| uart.write_all_bytes(bytes));
        unlock(state);
    }

    unsafe fn write(bytes: &[u8]) {
        let ConsoleState { uart, encoder, .. } = owned_state();
        encoder.write(bytes, |out| uart.write_all_bytes(out));
    }
}

defmt::timestamp!("cpu{=u32}", crate::percpu::current_index());
