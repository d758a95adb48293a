//! `_start`, where the partition loader enters the program (64-bit mode, identity page
//! tables, RDI = the command line, RSI = the boot information block), and the start
//! sequence up to std's `runtime_entry`:
//!
//! 1. the main stack (the runtime's own, [`MAIN_STACK_SIZE`]);
//! 2. SSE/AVX ([`crate::simd`]) before any code that may use them;
//! 3. the IDT, so every later fault is reported ([`crate::exceptions`]);
//! 4. the hypercall page, the console, the command line and boot information (required),
//!    the reference TSC page;
//! 5. the heap over the free memory, the CPU's random number generator (required), the
//!    main thread's TLS block;
//! 6. threads ([`crate::sched`]): the main thread, the partition's other vCPUs;
//! 7. `runtime_entry(argc, argv, env)`, which runs `main` and calls `sys_exit`.

use crate::fault::{self, Kind};
use core::ffi::c_char;

/// Bytes of the main thread's stack.
pub const MAIN_STACK_SIZE: usize = 1 << 20;

#[repr(C, align(16))]
struct Stack([u8; MAIN_STACK_SIZE]);
static mut MAIN_STACK: Stack = Stack([0; MAIN_STACK_SIZE]);

unsafe extern "C" {
    /// std's entry (library/std/src/sys/pal/hermit/mod.rs): runs `main`, the TLS
    /// destructors, then `sys_exit`.
    fn runtime_entry(argc: i32, argv: *const *const c_char, env: *const *const c_char) -> !;
}

core::arch::global_asm!(
    ".pushsection .text._start, \"ax\"",
    ".global _start",
    "_start:",
    "cli",
    "cld",
    // The TSC at the program's first instructions, for `bulkhead_start_tsc`.
    "rdtsc",
    "shl rdx, 32",
    "or rax, rdx",
    "mov [rip + {start_tsc}], rax",
    "lea rsp, [rip + {stack} + {size}]",
    "xor ebp, ebp",
    // RDI and RSI pass on unchanged: the command line and the boot information.
    "call {start}",
    "ud2",
    ".popsection",
    stack = sym MAIN_STACK,
    size = const MAIN_STACK_SIZE,
    start = sym start,
    start_tsc = sym START_TSC,
);

/// The TSC as `_start` began ([`bulkhead_start_tsc`]).
static mut START_TSC: u64 = 0;

/// The time-stamp counter as the program's `_start` began, before the runtime's start
/// sequence: a program that reads the TSC at the top of `main` has the runtime's start-up
/// cost (`cargo xtask bench`, `unikernel-start-to-main`, docs/performance.md). Bulkhead's
/// own export beside the hermit-abi interface; a program declares it
/// `unsafe extern "C" { fn bulkhead_start_tsc() -> u64; }`.
#[unsafe(no_mangle)]
pub extern "C" fn bulkhead_start_tsc() -> u64 {
    // SAFETY: written once by `_start` before anything else runs, only read after.
    unsafe { (&raw const START_TSC).read() }
}

/// What each further vCPU runs first, once a scheduler's start-up code has it in 64-bit
/// mode on a stack of its own: the vector state (CR0/CR4/XCR0 are per CPU) and the IDT.
/// Then it makes its thread's TLS block current ([`crate::tls`]) and runs threads.
#[allow(dead_code, reason = "the interface for the scheduler (sched/)")]
pub fn init_secondary_cpu() -> crate::simd::Enabled {
    let simd = crate::simd::enable();
    crate::exceptions::load();
    simd
}

extern "C" fn start(cmdline: u64, boot_info: u64) -> ! {
    let simd = crate::simd::enable();
    crate::exceptions::install();
    let hypercalls = crate::hypercall::init();
    let console_hypercall = crate::console::init(hypercalls);
    // The clocks, messaging and the console need the Hyper-V interface every Bulkhead
    // partition has: without it this is not a Bulkhead partition.
    if !hypercalls {
        fault::report(Kind::Refused, 0, 0, |text| {
            write!(
                text,
                "Bulkhead runtime: no Hyper-V interface (CPUID 0x40000000) or its hypercall page was refused; \
                 it refuses to start"
            )
        });
    }
    // SAFETY: the loader's registers: 0 or the command line at 0x9000 and the boot
    // information at 0xA000, in the boot area nothing else uses.
    let boot = match unsafe { crate::boot::read(cmdline, boot_info) } {
        Ok(boot) => boot,
        Err(e) => fault::report(Kind::Refused, 0, 0, |text| {
            write!(
                text,
                "Bulkhead runtime: no valid boot information at {boot_info:#x} ({e:?}); without it the runtime \
                 does not know its memory or vCPUs, so it refuses to start"
            )
        }),
    };
    crate::clock::init();
    let image_end = crate::boot::image_end();
    let Some((heap_base, heap_size)) = crate::boot::heap_range(&boot, image_end.next_multiple_of(4096)) else {
        fault::report(Kind::Refused, 0, 0, |text| {
            write!(text, "Bulkhead runtime: no free memory above the program (it ends at {image_end:#x})")
        });
    };
    // SAFETY: the partition's memory above the program, which nothing else uses.
    unsafe { crate::heap::init(heap_base, heap_size) };
    let Some(generator) = crate::entropy::check() else {
        fault::report(Kind::Refused, 0, 0, |text| {
            write!(
                text,
                "Bulkhead runtime: the CPU has neither RDRAND nor RDSEED; std needs random numbers \
                 (hash map keys) and the runtime has no other source it trusts, so it refuses to start"
            )
        });
    };
    let Some((_, _, tp)) = crate::tls::create() else {
        fault::report(Kind::Refused, 0, 0, |text| write!(text, "Bulkhead runtime: no room for the main thread's TLS"));
    };
    crate::tls::set_thread_pointer(tp);
    crate::sched::init();
    crate::messaging::init();
    let name = boot.name.unwrap_or("app");
    if crate::command_line::option(boot.cmdline, "verbose").is_some() {
        crate::console::write_line(format_args!(
            "bulkhead runtime: {} vcpu(s), heap {heap_size:#x} bytes at {heap_base:#x}, xcr0 {:#x}, entropy {generator}, \
             console {}, partition {}",
            boot.vcpus,
            simd.xcr0,
            if console_hypercall { "hypercall" } else { "uart" },
            boot.name.unwrap_or(""),
        ));
    }
    let (argc, argv, env) = crate::process::args(name, boot.cmdline);
    // SAFETY: std's entry, called once with a NULL-terminated argv and environment.
    unsafe { runtime_entry(argc, argv, env) }
}
