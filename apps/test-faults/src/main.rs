//! HIL test app: one failure per run, chosen by its argument (the partition's command
//! line), and what each must become:
//!
//! - `file`: `std::fs::File::open` returns an error (a partition has no file system),
//!   printed; then exit 0, PASS;
//! - `heap`: allocations until the heap is exhausted: std's allocation-error handler
//!   prints the failed size and aborts, the runtime reports the crash with the heap's use;
//! - `panic`: a panic, which (panic=abort) std prints and aborts: the crash report repeats
//!   the message;
//! - `page-fault`: a read above the 4 GiB the partition's page tables map: the runtime's
//!   exception handler reports #PF with the address (CR2).

fn main() {
    let case = std::env::args().nth(1).unwrap_or_default();
    println!("faults: case {case}");
    match case.as_str() {
        "file" => match std::fs::File::open("/etc/hostname") {
            Ok(_) => {
                println!("faults: File::open succeeded, which it cannot here");
                std::process::exit(1);
            }
            Err(e) => println!("faults: File::open(\"/etc/hostname\") failed: {e}"),
        },
        "heap" => {
            let mut kept: Vec<Vec<u8>> = Vec::new();
            loop {
                // Capacity only: nothing is written, so exhausting the heap is quick;
                // kept and behind `black_box`, so the compiler cannot drop the allocation.
                kept.push(std::hint::black_box(Vec::with_capacity(1 << 20)));
                if kept.len() % 4 == 0 {
                    println!("faults: {} MiB allocated", kept.len());
                }
            }
        }
        "panic" => panic!("deliberate panic for the fault test"),
        "page-fault" => {
            // SAFETY: none: this read faults on purpose (64 GiB is outside the 4 GiB the
            // loader's identity page tables map).
            let value = unsafe { std::ptr::read_volatile(0x10_0000_0000 as *const u64) };
            println!("faults: read {value:#x} where nothing is mapped");
        }
        other => {
            println!("faults: unknown case {other:?}");
            std::process::exit(1);
        }
    }
}
