//! SINGLE-THREAD STAND-INS, replaced by the scheduler (`sched/`): threads, futexes and
//! sleep for a runtime that runs only the main thread on the boot vCPU.
//!
//! - `sys_spawn2` creates no thread: it returns 0, which std reports as "Unable to create
//!   thread!" (an `io::Error`, no crash);
//! - `sys_futex_wait` with a value that differs returns -EAGAIN at once; with the expected
//!   value no other thread can wake it, so it waits out its timeout (-ETIMEDOUT), and
//!   without a timeout it is a deadlock, reported through the fault policy;
//! - `sys_futex_wake` wakes nobody (0);
//! - `sys_usleep` and `sys_nanosleep` busy-wait on the reference time.

use crate::clock::now_ticks;
use crate::clock_math::{micros_to_ticks, timespec_to_ticks};
use crate::fault::{self, Kind};
use hermit_abi::{EAGAIN, EINVAL, ESRCH, ETIMEDOUT, FUTEX_RELATIVE_TIMEOUT, Tid, timespec};

fn wait_until(deadline: u64) {
    while now_ticks() < deadline {
        core::hint::spin_loop();
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_usleep(usecs: u64) {
    wait_until(now_ticks().saturating_add(micros_to_ticks(usecs)));
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_nanosleep(req: *const timespec) -> i32 {
    if req.is_null() {
        return -EINVAL;
    }
    // SAFETY: std passes a readable timespec.
    let req = unsafe { req.read() };
    match timespec_to_ticks(req.tv_sec, i64::from(req.tv_nsec)) {
        Some(ticks) => {
            wait_until(now_ticks().saturating_add(ticks));
            0
        }
        None => -EINVAL,
    }
}

/// # Safety
/// `address` points at a readable `u32`, `timeout` is null or a readable timespec.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sys_futex_wait(address: *mut u32, expected: u32, timeout: *const timespec, flags: u32) -> i32 {
    if address.is_null() || flags & !FUTEX_RELATIVE_TIMEOUT != 0 {
        return -EINVAL;
    }
    // SAFETY: as the caller promises.
    let value = unsafe { core::ptr::read_volatile(address) };
    if value != expected {
        return -EAGAIN;
    }
    if timeout.is_null() {
        fault::report(Kind::Abort, 0, 0, |text| {
            write!(text, "deadlock: the only thread waits on the futex at {address:p} without a timeout")
        });
    }
    // SAFETY: as the caller promises.
    let t = unsafe { timeout.read() };
    let Some(ticks) = timespec_to_ticks(t.tv_sec, i64::from(t.tv_nsec)) else {
        return -EINVAL;
    };
    let deadline = if flags & FUTEX_RELATIVE_TIMEOUT != 0 { now_ticks().saturating_add(ticks) } else { ticks };
    wait_until(deadline);
    -ETIMEDOUT
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_futex_wake(address: *mut u32, count: i32) -> i32 {
    if address.is_null() || count < 0 {
        return -EINVAL;
    }
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_spawn2(
    _func: extern "C" fn(usize),
    _arg: usize,
    _prio: u8,
    _stack_size: usize,
    _core_id: isize,
) -> Tid {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_spawn(
    _id: *mut Tid,
    _func: extern "C" fn(usize),
    _arg: usize,
    _prio: u8,
    _core_id: isize,
) -> i32 {
    -EAGAIN
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_join(_id: Tid) -> i32 {
    -ESRCH
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_yield() {}

#[unsafe(no_mangle)]
pub extern "C" fn sys_available_parallelism() -> usize {
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_get_processor_count() -> usize {
    1
}
