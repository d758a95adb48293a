//! `sys_exit` and `sys_abort`: the program's end as the partition's verdict or fault.
//!
//! Exit status 0 is PASS, anything else FAIL, written to the verdict port as every
//! Bulkhead payload reports (the hypervisor logs `partition NAME: reports PASS`); the vCPU
//! then stops. An abort (std's panic=abort, `std::process::abort`, a failed allocation)
//! ends the partition through its fault policy with the crash MSRs ([`crate::fault`]).

use crate::fault::{self, Kind};
use bulkhead_abi::run::QEMU_DEBUG_EXIT_PORT;

/// The verdict port: 0 pass, anything else fail.
const VERDICT_PORT: u16 = QEMU_DEBUG_EXIT_PORT;

/// Writes the verdict.
pub fn verdict(pass: bool) {
    crate::cpu::outb(VERDICT_PORT, if pass { 0 } else { 1 });
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_exit(status: i32) -> ! {
    crate::console::flush();
    if status != 0 {
        crate::console::write_line(format_args!("exit status {status}"));
    }
    verdict(status == 0);
    crate::cpu::halt_forever()
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_abort() -> ! {
    fault::report(Kind::Abort, 0, 0, |text| {
        write!(text, "the program aborted")?;
        if let Some(failure) = crate::heap::last_failure() {
            write!(
                text,
                "\nheap exhausted: {} bytes (align {}) requested, {} of {} heap bytes in use",
                failure.size, failure.align, failure.used, failure.total
            )?;
        }
        crate::console::with_stderr_tail(|tail| {
            if !tail.is_empty() {
                let _ = write!(
                    text,
                    "; its last standard error output:\n{}",
                    core::str::from_utf8(tail).unwrap_or("(not UTF-8)")
                );
            }
        });
        Ok(())
    })
}
