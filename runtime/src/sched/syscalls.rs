//! The hermit-abi 0.5.2 calls about threads and time, exported under the names std links
//! against (`sys_*`, C ABI, the signatures of hermit-abi's declarations). Each is a thin
//! conversion onto `threads`; docs/unikernel.md maps them one by one.

use hermit_abi::{Tid, timespec};

use super::futex::{Timespec, timespec_nanos};
use super::{platform, threads};

fn timespec_of(t: &timespec) -> Timespec {
    Timespec { sec: t.tv_sec, nsec: t.tv_nsec }
}

/// Waits while `*address == expected` until woken or the timeout (hermit-abi
/// `futex_wait`; std passes a relative timeout).
#[unsafe(no_mangle)]
pub extern "C" fn sys_futex_wait(address: *mut u32, expected: u32, timeout: *const timespec, flags: u32) -> i32 {
    // SAFETY: a non-null timeout points at a timespec (hermit-abi's contract).
    let timeout = unsafe { timeout.as_ref() }.map(timespec_of);
    threads::futex_wait(address, expected, timeout, flags)
}

/// Wakes up to `count` waiters on `address` (all for `i32::MAX`); how many were woken.
#[unsafe(no_mangle)]
pub extern "C" fn sys_futex_wake(address: *mut u32, count: i32) -> i32 {
    threads::futex_wake(address, count)
}

/// A new thread running `func(arg)`, on `core_id` (a VP index) or any core (negative);
/// its ID, or 0 when it cannot be created (no free slot, no memory, no such core). The
/// priority is ignored: threads of a CPU take turns in arrival order.
#[unsafe(no_mangle)]
pub extern "C" fn sys_spawn2(
    func: extern "C" fn(usize),
    arg: usize,
    _prio: u8,
    stack_size: usize,
    core_id: isize,
) -> Tid {
    threads::spawn(func, arg, stack_size, core_id)
}

/// `sys_spawn2` with the default stack (std's 1 MiB); 0, or -1 when the thread could not
/// be created.
#[unsafe(no_mangle)]
pub extern "C" fn sys_spawn(id: *mut Tid, func: extern "C" fn(usize), arg: usize, prio: u8, core_id: isize) -> i32 {
    let tid = sys_spawn2(func, arg, prio, 1 << 20, core_id);
    if tid == 0 {
        return -1;
    }
    // SAFETY: a non-null `id` points at a Tid (hermit-abi's contract).
    if let Some(id) = unsafe { id.as_mut() } {
        *id = tid;
    }
    0
}

/// Waits until thread `id` has ended (at once if it has); 0.
#[unsafe(no_mangle)]
pub extern "C" fn sys_join(id: Tid) -> i32 {
    threads::join(id)
}

/// Lets the other ready threads of this CPU run first.
#[unsafe(no_mangle)]
pub extern "C" fn sys_yield() {
    threads::yield_now()
}

/// Sleeps at least `usecs` microseconds (0: yields).
#[unsafe(no_mangle)]
pub extern "C" fn sys_usleep(usecs: u64) {
    if usecs == 0 {
        return threads::yield_now();
    }
    threads::sleep_until(platform::now_ns().saturating_add(usecs.saturating_mul(1000)));
}

/// Sleeps at least the given time; 0, or -EINVAL for a null or malformed one.
#[unsafe(no_mangle)]
pub extern "C" fn sys_nanosleep(request: *const timespec) -> i32 {
    // SAFETY: a non-null request points at a timespec (hermit-abi's contract).
    let Some(nanos) = unsafe { request.as_ref() }.map(timespec_of).and_then(timespec_nanos) else {
        return -super::futex::errno::EINVAL;
    };
    threads::sleep_until(platform::now_ns().saturating_add(nanos));
    0
}

/// CPUs threads run on.
#[unsafe(no_mangle)]
pub extern "C" fn sys_available_parallelism() -> usize {
    threads::online_cpus()
}

/// CPUs threads run on (the older name of the same call).
#[unsafe(no_mangle)]
pub extern "C" fn sys_get_processor_count() -> usize {
    threads::online_cpus()
}
