//! Ending the partition through its fault policy, with a text that says why: the Hyper-V
//! guest crash MSRs (TLFS "Guest Crash Enlightenment"), the way Linux reports a panic. The
//! hypervisor logs P0..P4 and the text as `[name] panic: ...` lines, then applies the
//! partition's `fault_policy` (stop, restart, ...). P0 says what happened ([`Kind`]),
//! P1 and P2 an exception's error code and RIP, P3 and P4 the text.
//!
//! Without the crash MSRs (CPUID 0x4000_0003 EDX bit 10 clear: not a Bulkhead partition)
//! the text goes to the console and the verdict port says FAIL.

use crate::cpu::{cpuid, hyperv_present, wrmsr};
use bulkhead_abi::hyperv::cpuid::features_edx;
use bulkhead_abi::hyperv::{CrashCtl, msr};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

/// What P0 of a crash report says.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A CPU exception, P0 = its vector (0..=31).
    Exception(u8),
    /// `sys_abort`: std panicked (panic=abort) or aborted, P0 = 0x100.
    Abort,
    /// The runtime refused to start (a missing CPU feature), P0 = 0x101.
    Refused,
    /// The runtime itself panicked, P0 = 0x102.
    RuntimePanic,
}

impl Kind {
    fn code(self) -> u64 {
        match self {
            Kind::Exception(vector) => u64::from(vector),
            Kind::Abort => 0x100,
            Kind::Refused => 0x101,
            Kind::RuntimePanic => 0x102,
        }
    }
}

/// The crash text: a page, what the hypervisor reads at most.
const TEXT_MAX: usize = 4096;

struct Text {
    bytes: [u8; TEXT_MAX],
    len: usize,
}

impl Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let take = s.len().min(TEXT_MAX - self.len);
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// The one crash text; written once (a second fault while reporting goes straight to the
/// halt, see [`REPORTING`]).
static mut TEXT: Text = Text { bytes: [0; TEXT_MAX], len: 0 };
/// Set by the first report: a fault inside the report must not recurse.
static REPORTING: AtomicBool = AtomicBool::new(false);

/// Reports `kind` with the text `message` writes, then ends the partition through its
/// fault policy; never returns.
pub fn report(kind: Kind, error_code: u64, rip: u64, message: impl FnOnce(&mut dyn Write) -> fmt::Result) -> ! {
    if REPORTING.swap(true, Ordering::SeqCst) {
        crate::cpu::halt_forever();
    }
    crate::console::flush_for_crash();
    let pointer = &raw mut TEXT;
    // SAFETY: REPORTING makes this the only access, once.
    let text = unsafe { &mut *pointer };
    let _ = message(text);
    if crash_msrs_available() {
        wrmsr(msr::CRASH_P0, kind.code());
        wrmsr(msr::CRASH_P0 + 1, error_code);
        wrmsr(msr::CRASH_P0 + 2, rip);
        wrmsr(msr::CRASH_P0 + 3, text.bytes.as_ptr() as u64);
        wrmsr(msr::CRASH_P4, text.len as u64);
        wrmsr(msr::CRASH_CTL, CrashCtl::NOTIFY | CrashCtl::NOTIFY_MSG);
    } else {
        crate::console::write_raw(&text.bytes[..text.len]);
        crate::console::write_raw(b"\n");
        crate::exit::verdict(false);
    }
    // The fault policy stops or restarts the partition; nothing runs after the report.
    crate::cpu::halt_forever()
}

fn crash_msrs_available() -> bool {
    hyperv_present() && cpuid(0x4000_0003, 0).edx & features_edx::GUEST_CRASH_MSRS_AVAILABLE != 0
}
