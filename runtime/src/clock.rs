//! `sys_clock_gettime`: the partition's reference time from the Hyper-V reference TSC page
//! (TLFS "Partition Reference TSC Mechanism"), read without an exit: RDTSC scaled by the
//! page's scale and offset, between two reads of its sequence number.
//!
//! `CLOCK_MONOTONIC` is the reference time (100 ns resolution; it starts near 0 when the
//! partition starts). `CLOCK_REALTIME` is the same count from the Unix epoch: Bulkhead's
//! boards give partitions no wall clock, so a partition's "now" is 1970-01-01 plus the
//! time since it started (docs/unikernel.md).
//!
//! Where the page is not valid (the hypervisor marks it so), the TIME_REF_COUNT MSR gives
//! the same time with an exit per read.

use crate::clock_math::ticks_to_timespec;
use bulkhead_abi::hyperv::reference_tsc::reference_time;
use bulkhead_abi::hyperv::{PageMsr, msr};
use hermit_abi::{CLOCK_MONOTONIC, CLOCK_REALTIME, EFAULT, EINVAL, clockid_t, timespec};

#[repr(C, align(4096))]
struct Page([u8; 4096]);
/// Written by the hypervisor only.
static mut PAGE: Page = Page([0; 4096]);
/// Places the reference TSC page. The runtime starts only with the Hyper-V interface
/// (`crate::start`), so the page and the TIME_REF_COUNT MSR are always there.
pub fn init() {
    let gpa = &raw const PAGE as u64;
    crate::cpu::wrmsr(msr::REFERENCE_TSC, PageMsr::new(gpa >> 12).enabled(true).value());
}

/// The reference time in 100 ns ticks: from the page, or from the MSR (an exit) while the
/// hypervisor marks the page invalid.
pub fn now_ticks() -> u64 {
    from_page().unwrap_or_else(|| crate::cpu::rdmsr(msr::TIME_REF_COUNT))
}

fn from_page() -> Option<u64> {
    // SAFETY: the runtime's page, which the hypervisor keeps as the reference TSC page.
    unsafe {
        bulkhead_abi::hyperv::reference_tsc::read_consistent(&raw const PAGE as *const u8, |scale, offset| {
            reference_time(crate::cpu::rdtsc(), scale, offset)
        })
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_clock_gettime(clock: clockid_t, tp: *mut timespec) -> i32 {
    if tp.is_null() {
        return -EFAULT;
    }
    if clock != CLOCK_MONOTONIC && clock != CLOCK_REALTIME {
        return -EINVAL;
    }
    let (tv_sec, tv_nsec) = ticks_to_timespec(now_ticks());
    // SAFETY: std passes a writable timespec.
    unsafe { tp.write(timespec { tv_sec, tv_nsec }) };
    0
}
