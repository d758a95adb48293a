//! The hypervisor's console: COM1 behind one lock that never interleaves two CPUs' output,
//! carrying defmt frames or text lines as the configuration's `console_format` says (see
//! `log.rs` for how log calls reach it, `bulkhead_abi::run` for the protocol).
//!
//! The lock is a ticket lock (first come, first served) that knows its owner:
//!
//! - Fair: a CPU that logs line after line (a partition's console output, see
//!   `Partition::console_write`) cannot keep another CPU's line (a fault report) waiting
//!   for more than one line of each CPU queued before it.
//! - Nested: a CPU that faults (or takes an NMI) while it holds the lock must still be
//!   able to report, so a nested acquire on the owning CPU ends the interrupted output and
//!   starts afresh: a defmt frame is ended with a terminator (the host decoder drops it as
//!   malformed), a text line with its line end (it stays visible, cut short, just above
//!   the report).
//! - Never taken from a live holder: the holder counts every chunk it writes
//!   (`progress`). Only the next CPU in line, and only when the holder has written nothing
//!   for [`TAKEOVER_MS`] (a line takes at most about 20 ms at 115 200 baud), takes the
//!   console over: that holder stopped (died, or hangs with interrupts off), and waiting
//!   for it would silence the whole hypervisor. The takeover is logged as an error line
//!   naming both CPUs, so it is never silent. A CPU whose turn was taken over while it
//!   could not run (an NMI on it while it waited) queues again.
//!
//! Input: when the system file names a `console_input` partition, the bytes arriving at
//! the console UART go to that partition's virtual UART ([`receive_input`]). Nothing polls
//! for them: the partition's vCPU looks at the physical receiver when its driver reads
//! its own receiver registers (Linux's 8250 driver polls them from a timer), at most once
//! per [`INPUT_POLL_US`], and takes only as many bytes as its receive FIFO has room for,
//! leaving the rest in the physical UART's FIFO. The receive side needs no part of the
//! output lock: it reads only LSR and RBR, which the output path never changes (its LSR
//! polls may clear a physical overrun flag first, which only hides that overrun).
//!
//! Why a lock of our own rather than `spin`'s ticket mutex (which `hyperv/synic.rs`
//! uses): nesting on the owning CPU and the takeover from a dead holder need the owner and
//! the progress count next to the tickets, which no crate lock offers.

#[cfg(bulkhead_console = "defmt")]
use bulkhead_abi::run::CONSOLE_SYNC as SYNC;
#[cfg(bulkhead_console = "text")]
use bulkhead_abi::run::TEXT_CONSOLE_SYNC as SYNC;
use bulkhead_drivers::port::IoPorts;
use bulkhead_drivers::uart16550::Uart16550;
use bulkhead_virt::uart16550::{ReceivePoll, Uart16550 as VirtualUart};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering};
use spin::mutex::TicketMutex;

const BAUD: u32 = 115_200;
const NO_OWNER: u32 = u32::MAX;
/// How long the holder may write nothing before the next CPU in line presumes it dead.
pub const TAKEOVER_MS: u64 = 2000;

struct ConsoleState {
    uart: Uart16550<IoPorts>,
    #[cfg(bulkhead_console = "defmt")]
    encoder: defmt::Encoder,
    /// A text line was started and not yet ended.
    #[cfg(bulkhead_console = "text")]
    line_open: bool,
    depth: u32,
    interrupts_were_enabled: bool,
    /// The CPU this one took the console from, to be logged once the lock is released.
    took_over_from: Option<u32>,
}

struct Console {
    /// The next ticket to hand out.
    next: AtomicU32,
    /// The ticket whose CPU holds (or is about to hold) the console.
    serving: AtomicU32,
    /// The CPU holding the console, or `NO_OWNER`.
    owner: AtomicU32,
    /// Chunks written by the holder: a waiting CPU watches it to tell a live holder from
    /// a dead one.
    progress: AtomicU32,
    state: UnsafeCell<ConsoleState>,
}

// SAFETY: `state` is only touched by the CPU recorded in `owner`.
unsafe impl Sync for Console {}

static CONSOLE: Console = Console {
    next: AtomicU32::new(0),
    serving: AtomicU32::new(0),
    owner: AtomicU32::new(NO_OWNER),
    progress: AtomicU32::new(0),
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
        took_over_from: None,
    }),
};

/// How often, at most, the input partition's vCPUs look at the physical receiver: a byte
/// takes 87 µs at 115 200 baud and the 16550's FIFO holds 16 (1.4 ms), so the pause adds
/// little to when a byte is seen, while a driver polling LSR for every byte it sends
/// costs one physical read per 50 µs instead of one per exit.
pub const INPUT_POLL_US: u64 = 50;

/// The receive side of the console UART and when to look at it next.
struct Input {
    uart: Uart16550<IoPorts>,
    poll: ReceivePoll,
}

static INPUT: TicketMutex<Input> = TicketMutex::new(Input {
    // SAFETY: the console UART (see `CONSOLE`); this handle only reads LSR and RBR, which
    // the output path leaves alone.
    uart: Uart16550::new(unsafe { IoPorts::new(crate::config::SYSTEM.board.console_port) }),
    poll: ReceivePoll::new(),
});

/// Hands the bytes that arrived at the console UART to `uart`, the virtual UART of the
/// `console_input` partition (the caller checks that it is), when a look is due. Never
/// waits: a vCPU of the same partition already looking makes this one skip.
pub fn receive_input(uart: &mut VirtualUart) {
    let Some(mut input) = INPUT.try_lock() else {
        return;
    };
    let room = uart.rx_room();
    if room == 0 || !input.poll.due(crate::cpu::time::rdtsc(), crate::cpu::time::ticks_per_ms() * INPUT_POLL_US / 1000)
    {
        return;
    }
    if input.uart.receive(room, |byte| {
        uart.receive(byte);
    }) {
        uart.note_overrun();
    }
}

/// Writes bytes as the holder, counting the progress waiting CPUs watch.
fn put(uart: &mut Uart16550<IoPorts>, bytes: &[u8]) {
    uart.write_all_bytes(bytes);
    CONSOLE.progress.fetch_add(1, Ordering::Relaxed);
}

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
    let me = crate::cpu::percpu::current_index();
    // SAFETY (for every `state` access below): we are, or are about to be, the owner.
    let state = unsafe { &mut *CONSOLE.state.get() };
    if CONSOLE.owner.load(Ordering::Relaxed) == me {
        // Nested on the owning CPU (an exception or NMI while logging): end the broken
        // output so the host can resynchronise.
        end_broken_output(state);
        state.depth += 1;
        return state;
    }
    let took_over_from = wait_for_turn();
    CONSOLE.owner.store(me, Ordering::Relaxed);
    if took_over_from.is_some() {
        end_broken_output(state);
    }
    state.took_over_from = took_over_from;
    state.depth = 1;
    state.interrupts_were_enabled = interrupts;
    state
}

/// Waits for this CPU's turn; returns the CPU it took the console from, if the holder
/// had stopped (see the module docs).
fn wait_for_turn() -> Option<u32> {
    let mut ticket = CONSOLE.next.fetch_add(1, Ordering::Relaxed);
    let mut watched = (CONSOLE.serving.load(Ordering::Relaxed), CONSOLE.progress.load(Ordering::Relaxed));
    let mut since = crate::cpu::time::rdtsc();
    loop {
        let serving = CONSOLE.serving.load(Ordering::Acquire);
        if serving == ticket {
            return None;
        }
        if (serving.wrapping_sub(ticket) as i32) > 0 {
            // Our turn passed while this CPU could not take it (taken over): queue again.
            ticket = CONSOLE.next.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let now = (serving, CONSOLE.progress.load(Ordering::Relaxed));
        if now != watched {
            watched = now;
            since = crate::cpu::time::rdtsc();
        } else if ticket == serving.wrapping_add(1)
            && crate::cpu::time::rdtsc().wrapping_sub(since) > crate::cpu::time::ticks_per_ms() * TAKEOVER_MS
            && CONSOLE.serving.compare_exchange(serving, ticket, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            return Some(CONSOLE.owner.load(Ordering::Relaxed));
        }
        core::hint::spin_loop();
    }
}

/// Closes a frame cut short (the decoder drops it) and starts a fresh encoder.
#[cfg(bulkhead_console = "defmt")]
fn end_broken_output(state: &mut ConsoleState) {
    put(&mut state.uart, &[0]);
    state.encoder = defmt::Encoder::new();
}

/// Ends a line cut short, so what follows starts a line of its own.
#[cfg(bulkhead_console = "text")]
fn end_broken_output(state: &mut ConsoleState) {
    if state.line_open {
        put(&mut state.uart, b"\r\n");
        state.line_open = false;
    }
}

fn unlock(state: &mut ConsoleState) {
    state.depth -= 1;
    if state.depth == 0 {
        let restore = state.interrupts_were_enabled;
        let took_over_from = state.took_over_from.take();
        CONSOLE.owner.store(NO_OWNER, Ordering::Relaxed);
        CONSOLE.serving.fetch_add(1, Ordering::Release);
        if let Some(cpu) = took_over_from {
            crate::log::error!(
                "console: cpu {=u32} took the console over from cpu {=u32}, which had written nothing for {=u64} ms while holding it (stopped or hung)",
                crate::cpu::percpu::current_index(),
                cpu,
                TAKEOVER_MS
            );
        }
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
        encoder.start_frame(|bytes| put(uart, bytes));
    }

    unsafe fn flush() {}

    unsafe fn release() {
        let state = owned_state();
        let ConsoleState { uart, encoder, .. } = &mut *state;
        encoder.end_frame(|bytes| put(uart, bytes));
        unlock(state);
    }

    unsafe fn write(bytes: &[u8]) {
        let ConsoleState { uart, encoder, .. } = owned_state();
        encoder.write(bytes, |out| put(uart, out));
    }
}

#[cfg(bulkhead_console = "defmt")]
defmt::timestamp!("cpu{=u32}", crate::cpu::percpu::current_index());

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
    let _ = core::write!(out, "[cpu{} {tag}] ", crate::cpu::percpu::current_index());
    let _ = out.write_fmt(args);
    put(&mut state.uart, b"\r\n");
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
        put(self.0, s.as_bytes());
        Ok(())
    }
}
