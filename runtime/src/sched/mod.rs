//! Threads: the scheduler of the runtime and the hermit-abi calls about threads, futexes
//! and sleeping (`sys_spawn2`, `sys_join`, `sys_yield`, `sys_futex_wait`,
//! `sys_futex_wake`, `sys_usleep`, `sys_nanosleep`, `sys_available_parallelism`).
//!
//! - [`scheduler`] and [`futex`]: the rules (thread states, run queues, futex queues,
//!   deadlines), pure and unit-tested on the host.
//! - `threads`: those rules on the hardware (lock, stacks, TLS, switches, idle loop).
//! - `context`: the register switch. `timer`: each CPU's local APIC timer and wake-up
//!   IPI. `smp`: starting the partition's other vCPUs. `syscalls`: the exported calls.
//!
//! Threads run on every vCPU of the partition, cooperatively: a thread keeps its CPU
//! until it blocks, sleeps, yields or ends; a CPU with nothing to run halts until its
//! timer or a wake-up IPI. docs/unikernel.md describes the behaviour for programs.

pub mod futex;
pub mod scheduler;

#[cfg(target_os = "none")]
mod context;
#[cfg(target_os = "none")]
mod platform;
#[cfg(target_os = "none")]
mod smp;
#[cfg(target_os = "none")]
mod syscalls;
#[cfg(target_os = "none")]
mod threads;
#[cfg(target_os = "none")]
mod timer;

/// How long the boot CPU waits for each other vCPU to reach the scheduler.
#[cfg(target_os = "none")]
const AP_START_TIMEOUT_NS: u64 = 1_000_000_000;

/// Sets up threads on the boot CPU before `main` runs: the running code becomes the main
/// thread, and the partition's other vCPUs (the boot information block lists them) start
/// and wait for threads. Enables interrupts. vCPUs that do not start are reported on the
/// console and left out.
#[cfg(target_os = "none")]
pub fn init() {
    timer::install_handlers();
    let idle_stack = platform::alloc(threads::IDLE_STACK, 16).expect("heap room for the idle loop's stack");
    threads::init_boot_cpu(idle_stack);
    if let Some(info) = crate::boot::boot_info() {
        smp::start_aps((0..info.vcpu_count()).filter_map(|i| info.apic_id(i)), AP_START_TIMEOUT_NS);
    }
    // SAFETY: the IDT handles the scheduler's vectors (installed above).
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
}

/// For the runtime's own waits (messaging): blocks the calling thread while `word` holds
/// `expected`, until a [`wake_all`] on it or the monotonic clock reads `deadline_ns`
/// (`None`: no deadline). 0 when woken, -EAGAIN when the word differs, -ETIMEDOUT.
#[cfg(target_os = "none")]
pub fn wait_on(word: &core::sync::atomic::AtomicU32, expected: u32, deadline_ns: Option<u64>) -> i32 {
    let deadline = deadline_ns.map(|ns| futex::Timespec {
        sec: (ns / 1_000_000_000).min(i64::MAX as u64) as i64,
        nsec: (ns % 1_000_000_000) as i32,
    });
    threads::futex_wait(word.as_ptr(), expected, deadline, 0)
}

/// Wakes every thread in [`wait_on`] on `word`. Safe in an interrupt handler: the
/// scheduler's lock is only ever held with interrupts off, and nothing here allocates or
/// prints.
#[cfg(target_os = "none")]
pub fn wake_all(word: &core::sync::atomic::AtomicU32) {
    threads::futex_wake(word.as_ptr(), i32::MAX);
}

/// The calling CPU's VP index (0: the boot vCPU).
#[cfg(target_os = "none")]
pub fn cpu_index() -> usize {
    threads::cpu_index()
}
