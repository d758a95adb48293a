//! A Rust std program in a Bulkhead partition: the console, the heap, the clock, sleep and
//! the command line, each checked; exit status 0 is the partition's PASS verdict.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

thread_local! {
    /// Initialised data (`.tdata`), which the runtime copies into the main thread's block.
    static VISITS: Cell<u32> = const { Cell::new(40) };
}

fn main() {
    println!("hello from std");
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("arguments after the program name: {}", args.join(" "));

    let boxed = *Box::new(41u64) + 1;
    let squares: Vec<u64> = (1..=1000).map(|i| i * i).collect();
    let sum: u64 = squares.iter().sum();
    println!("heap: box {boxed}, vec of {} squares summing to {sum}", squares.len());

    let mut map = HashMap::new();
    for word in ["one", "two", "three", "two"] {
        *map.entry(word).or_insert(0) += 1;
    }
    println!("hash map: two seen {} times", map["two"]);

    VISITS.with(|v| v.set(v.get() + 2));
    let visits = VISITS.with(Cell::get);
    println!("thread_local: {visits}");

    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(20));
    let slept = start.elapsed();
    println!("sleep: asked 20 ms, slept at least 20 ms: {}", slept >= Duration::from_millis(20));

    let ok = boxed == 42 && sum == 333_833_500 && map["two"] == 2 && visits == 42 && slept >= Duration::from_millis(20);
    std::process::exit(if ok { 0 } else { 1 });
}
