//! The Hyper-V hypercall page of the boot vCPU, through the client in `bulkhead_abi`: set up
//! once at start, then shared by the console (and later callers) under a lock.

use bulkhead_abi::hyperv::client::{Client, Pages, X64};
use spin::Mutex;

/// An open-source guest OS identity (TLFS "Reporting the Guest OS Identity": bit 63 set),
/// vendor 0x42 as the other Bulkhead payloads, OS type 0x5 for this runtime.
const GUEST_OS_ID: u64 = 1 << 63 | 0x42 << 48 | 0x5 << 40;

/// The client's pages (hypercall, input, SynIC message and event pages) of the boot vCPU.
static PAGES: Pages = Pages::new();
static CLIENT: Mutex<Option<Client<X64>>> = Mutex::new(None);

/// Enables the hypercall page; false where the partition has no Hyper-V interface or the
/// hypervisor refused it.
pub fn init() -> bool {
    if !crate::cpu::hyperv_present() {
        return false;
    }
    // SAFETY: CPL 0, identity-mapped (how Bulkhead starts a 64-bit payload), and the
    // hypervisor reports the Hyper-V interface (checked above).
    let mut client = Client::new(unsafe { X64::new() }, &PAGES);
    if client.enable_hypercalls(GUEST_OS_ID).is_err() {
        return false;
    }
    *CLIENT.lock() = Some(client);
    true
}

/// The boot vCPU's client pages (its SIMP and SIEFP take the partition's messages and
/// events: `crate::messaging`).
pub fn pages() -> &'static Pages {
    &PAGES
}

/// Runs `f` with the client (under its lock; interrupts stay as they are, so never from an
/// interrupt handler); `None` without a hypercall page.
pub fn with_client<R>(f: impl FnOnce(&mut Client<X64>) -> R) -> Option<R> {
    CLIENT.lock().as_mut().map(f)
}

/// A memory-form hypercall with the input block at guest-physical `input`; the raw
/// result (RAX), or `None` without a hypercall page.
pub fn call(input_value: u64, input: u64) -> Option<u64> {
    CLIENT.lock().as_mut().map(|client| client.raw_hypercall(input_value, input, 0))
}
