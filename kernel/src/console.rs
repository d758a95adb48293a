//! The hypervisor's console: COM1 behind one lock that never interleaves two CPUs' output,
//! carrying defmt frames or text lines as the configuration's `console_format` says (see
//! `log.rs` for how log calls reach it, `bulkhead_abi::run` for the protocol).
//!
//! The lock is a spin lock that knows its owner: a CPU that faults (or takes an NMI)
//! while it holds the lock must still be able to report, so a nested acquire on the owning
//! CPU ends the interrupted output and starts afresh: a defmt frame is ended with a
//! terminator (the host decoder drops it as malformed), a text line with its line end (it
//! stays visible, cut short, just above the report). A CPU that died holding the lock is
//! waited for only a bounded time.

#[cfg(bulkhead_console = "defmt")]
use bulkhead_abi::run::CONSOLE_SYNC as SYNC;
#[cfg(bulkhead_console = "text")]
use bulkhead_abi::run::TEXT_CONSOLE_SYNC as SYNC;
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
    #[cfg(bulkhead_console = "defmt")]
    encoder: defmt::Encoder,
    /// A text line was started and not yet ended.
    #[cfg(bulkhead_console = "text")]
    line_open: bool,
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
        #[cfg(bulkhead_console = "defmt")]
        encoder: defmt::Encoder::new(),
        #[cfg(bulkhead_console = "text")]
        line_open: false,
        depth: 0,
        interrupts_were_enabled: false,
    }),
};

/// Programs the UART and announces the start of the log stream with the marker of its
/// format. BSP, before any log.
pub fn init() {
    // SAFETY: no CPU logs before this returns, so nobody else touches the state.
    let state = unsafe { &mut *CONSOLE.state.get() };
    state.uart.init(BAUD);
    state.uart.write_all_bytes(SYNC);
}

/// Takes the console for this CPU; returns the state to use.
fn lock() -> &'static mut ConsoleState {
    let interrupts = x86_64::instructions::interrupts::are_enabled();
    x86_64::instructions::interrupts::disable();
    let me = crate::percpu::current_index();
    // SAFETY (for every `state` access below): we are, or are about to be, the owner.
    let state = unsafe { &mut *CONSOLE.state.get() };
    if CONSOLE.owner.load(Ordering::Relaxed) == me {
        // Nested on the owning CPU (an exception or NMI while logging): end the broken
        // output so the host can resynchronise.
        end_broken_output(state);
        state.depth += 1;
        return state;
    }
    let mut spins = 0u32;
    while CONSOLE.owner.compare_exchange_weak(NO_OWNER, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
        spins += 1;
        if spins == LOCK_SPIN_LIMIT {
            // The holder stopped (crashed or parked with the lock): take over.
            CONSOLE.owner.swap(me, Ordering::Acquire);
            end_broken_output(state);
            break;
        }
        core::hint::spin_loop();
    }
    state.depth = 1;
    state.interrupts_were_enabled = interrupts;
    state
}

/// Closes a frame cut short (the decoder drops it) and starts a fresh encoder.
#[cfg(bulkhead_console = "defmt")]
fn end_broken_output(state: &mut ConsoleState) {
    state.uart.write_byte(0);
    state.encoder = defmt::Encoder::new();
}

/// Ends a line cut short, so what follows starts a line of its own.
#[cfg(bulkhead_console = "text")]
fn end_broken_output(state: &mut ConsoleState) {
    if state.line_open {
        state.uart.write_all_bytes(b"\r\n");
        state.line_open = false;
    }
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

#[cfg(bulkhead_console = "defmt")]
fn owned_state() -> &'static mut ConsoleState {
    // SAFETY: only called between acquire and release, by the owning CPU.
    unsafe { &mut *CONSOLE.state.get() }
}

#[cfg(bulkhead_console = "defmt")]
#[defmt::global_logger]
struct Logger;

// SAFETY: acquire/release bracket every frame and exclude other CPUs (see module docs).
#[cfg(bulkhead_console = "defmt")]
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

#[cfg(bulkhead_console = "defmt")]
defmt::timestamp!("cpu{=u32}", crate::percpu::current_index());

/// Prints one log line, `[cpu0 INFO ] message` and CR LF, as the host prints a decoded
/// defmt frame (the CPU stands where defmt's timestamp would). The message is formatted
/// straight to the UART while the lock is held, so lines of two CPUs never mix; control
/// characters in it are escaped (`bulkhead_abi::run::write_escaped`).
#[cfg(bulkhead_console = "text")]
pub fn write_line(level: bulkhead_board::tables::LogLevel, args: core::fmt::Arguments<'_>) {
    use bulkhead_board::tables::LogLevel;
    use core::fmt::Write;

    let state = lock();
    state.line_open = true;
    let tag = match level {
        LogLevel::Error => "ERROR",
        LogLevel::Warn => "WARN ",
        LogLevel::Info => "INFO ",
        LogLevel::Debug => "DEBUG",
        LogLevel::Trace => "TRACE",
    };
    let mut out = Escaped(&mut state.uart);
    // Writing to the UART cannot fail; a Display impl that fails only ends the message.
    let _ = core::write!(out, "[cpu{} {tag}] ", crate::percpu::current_index());
    let _ = out.write_fmt(args);
    state.uart.write_all_bytes(b"\r\n");
    state.line_open = false;
    unlock(state);
}

/// The UART as a `fmt::Write` that escapes control characters.
#[cfg(bulkhead_console = "text")]
struct Escaped<'a>(&'a mut Uart16550<IoPorts>);

#[cfg(bulkhead_console = "text")]
impl core::fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        bulkhead_abi::run::write_escaped(&mut Raw(self.0), s)
    }
}

/// The UART as a plain `fmt::Write`.
#[cfg(bulkhead_console = "text")]
struct Raw<'a>(&'a mut Uart16550<IoPorts>);

#[cfg(bulkhead_console = "text")]
impl core::fmt::Write for Raw<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.write_all_bytes(s.as_bytes());
        Ok(())
    }
}
