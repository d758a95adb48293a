//! The unikernel cases of `cargo xtask bench` (docs/performance.md, "Unikernel
//! partitions"), each printed as `bench: KEY=VALUE` for the bench to collect:
//!
//! - `unikernel_start_to_main`: TSC ticks from the program's `_start` (the runtime's
//!   `bulkhead_start_tsc`) to the first line of `main`: the runtime's whole start sequence
//!   and std's `runtime_entry`;
//! - `unikernel_console_line`: TSC ticks per `println!` of a typical 64-character line,
//!   the average of [`CONSOLE_LINES`] lines (within the console's burst, so none is
//!   dropped); `unikernel_console_line_dropped`: the median of as many lines over the
//!   console's rate limit, which the hypervisor drops (the line's cost without the UART);
//! - `unikernel_sleep_late_*`: a periodic loop of `periods=N` periods (default 10 000) of
//!   1 ms, each sleeping with `std::thread::sleep` until an absolute deadline (the start
//!   plus N periods, so lateness does not accumulate); the lateness of each wake-up against
//!   the deadline in the reference time (`Instant`, 100 ns resolution), its mean and worst
//!   in microseconds and in TSC ticks (converted at the TSC rate measured over the loop).
//!
//! In Bochs with `clock: sync=none` a TSC tick is one instruction slot. Exit status 0 when
//! every figure was measured and no sleep ended early.

use std::time::{Duration, Instant};

unsafe extern "C" {
    /// The TSC as `_start` began (runtime/src/start.rs).
    fn bulkhead_start_tsc() -> u64;
}

/// Lines timed for the console cases.
const CONSOLE_LINES: u64 = 100;
/// Lines between the two console cases: with the 100 timed ones and the few before, more
/// than the console's burst of 200 (docs/platform.md, "Rate limit").
const FILLER: u64 = 150;
/// The sleep loop's period.
const PERIOD: Duration = Duration::from_millis(1);

fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads the time-stamp counter; it has no other effect.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn main() {
    let main_tsc = rdtsc();
    // SAFETY: a plain read of a value the runtime wrote before `main`.
    let start_tsc = unsafe { bulkhead_start_tsc() };
    let mut ok = start_tsc != 0 && main_tsc > start_tsc;
    println!("bench: unikernel_start_to_main={}", main_tsc.wrapping_sub(start_tsc));

    let periods: u64 = std::env::args().find_map(|a| a.strip_prefix("periods=")?.parse().ok()).unwrap_or(10_000);

    // A typical line: 64 characters and the newline, formatted from numbers.
    let before = rdtsc();
    for i in 0..CONSOLE_LINES {
        println!("console: period {i:5} late mean {:4}.{} us worst {:5} us n {:5}", 12 + i % 7, i % 10, 40 + i, 1000);
    }
    let per_line = (rdtsc() - before) / CONSOLE_LINES;
    println!("bench: unikernel_console_line={per_line}");
    // Lines over the console's rate limit: FILLER more lines spend the rest of the burst,
    // then each of CONSOLE_LINES lines is timed; the hypervisor drops them (at most one
    // passes each 100 ms), so the median is what a line costs without the UART. Its
    // figure goes out after the sleep loop, when the limit lets lines through again.
    for i in 0..FILLER {
        println!("console: filler {i:5} spending the console's burst of lines before the rate limit");
    }
    let mut dropped: Vec<u64> = (0..CONSOLE_LINES)
        .map(|i| {
            let before = rdtsc();
            println!(
                "console: period {i:5} late mean {:4}.{} us worst {:5} us n {:5}",
                12 + i % 7,
                i % 10,
                40 + i,
                1000
            );
            rdtsc() - before
        })
        .collect();
    dropped.sort_unstable();
    let dropped_line = dropped[dropped.len() / 2];

    let (late, early) = sleep_loop(periods);
    ok &= early == 0 && late.count == periods;
    println!(
        "sleep: {} periods of {} us, {} early, lateness mean {} ns worst {} ns ({} ticks a microsecond)",
        late.count,
        PERIOD.as_micros(),
        early,
        late.mean_ns(),
        late.worst_ns,
        late.ticks_per_us
    );
    println!("bench: unikernel_console_line_dropped={dropped_line}");
    println!("bench: unikernel_sleep_late_mean_us={}", late.mean_ns().div_ceil(1000));
    println!("bench: unikernel_sleep_late_worst_us={}", late.worst_ns.div_ceil(1000));
    println!("bench: unikernel_sleep_late_mean_ticks={}", late.mean_ns() * late.ticks_per_us / 1000);
    println!("bench: unikernel_sleep_late_worst_ticks={}", late.worst_ns * late.ticks_per_us / 1000);
    std::process::exit(if ok { 0 } else { 1 });
}

/// The lateness of a run of wake-ups.
struct Lateness {
    count: u64,
    total_ns: u64,
    worst_ns: u64,
    ticks_per_us: u64,
}

impl Lateness {
    fn mean_ns(&self) -> u64 {
        self.total_ns / self.count.max(1)
    }
}

/// `periods` sleeps to absolute deadlines `PERIOD` apart: the lateness of each wake-up,
/// and how many woke before their deadline (never, if sleep is right).
fn sleep_loop(periods: u64) -> (Lateness, u64) {
    let (t0, tsc0) = (Instant::now(), rdtsc());
    let mut late = Lateness { count: 0, total_ns: 0, worst_ns: 0, ticks_per_us: 0 };
    let mut early = 0;
    for n in 1..=periods {
        let deadline = t0 + PERIOD * n as u32;
        let now = Instant::now();
        if let Some(left) = deadline.checked_duration_since(now) {
            std::thread::sleep(left);
        }
        let woke = Instant::now();
        match woke.checked_duration_since(deadline) {
            Some(by) => {
                let ns = by.as_nanos() as u64;
                late.total_ns += ns;
                late.worst_ns = late.worst_ns.max(ns);
            }
            None => early += 1,
        }
        late.count += 1;
    }
    let elapsed_ns = t0.elapsed().as_nanos() as u64;
    late.ticks_per_us = (rdtsc() - tsc0) * 1000 / elapsed_ns.max(1);
    (late, early)
}
