//! The runtime's own panic handler (a bug in the runtime; the app's panics go through
//! std and `sys_abort`): reported through the fault policy with its message.

use crate::fault::{self, Kind};

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fault::report(Kind::RuntimePanic, 0, 0, |text| write!(text, "Bulkhead runtime panic: {info}"))
}
