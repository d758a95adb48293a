//! The guest side of the Hyper-V interface (TLFS) for the payloads, demo and tests: the
//! safe client from `bulkhead_abi::hyperv::client` on this payload's pages, the SINT interrupt
//! handlers, and the few raw steps tests need to send malformed input on purpose.

use bulkhead_abi::hyperv::client::{Client, Pages, PostError, X64};
use bulkhead_abi::hyperv::hypercall::code;
use bulkhead_abi::hyperv::reference_tsc::reference_time;
use bulkhead_abi::hyperv::{
    HvStatus, HypercallInput, HypercallResult, Message, PageMsr, PostMessageInput, SignalEventInput, msr,
};
use core::sync::atomic::{AtomicU64, Ordering};

/// A page-aligned page of this payload's memory (guest-virtual = guest-physical here).
#[repr(C, align(4096))]
pub struct Page(pub [u8; 4096]);

/// The client's pages (this payload runs on one VP).
static PAGES: Pages = Pages::new();
static mut REFERENCE_TSC_PAGE: Page = Page([0; 4096]);
/// Two pages: a test's input block goes at an offset it chooses (misaligned or across the
/// boundary on purpose).
static mut INPUT_PAGES: [Page; 2] = [Page([0; 4096]), Page([0; 4096])];

/// An open-source guest OS id (TLFS "Reporting the Guest OS Identity": bit 63 set).
pub const GUEST_OS_ID: u64 = 1 << 63 | 0x42 << 48;

/// The Hyper-V client on this payload's pages.
pub fn client() -> Client<X64> {
    // SAFETY: payloads run at CPL 0, identity-mapped, and only call this in partitions
    // whose hypervisor is Bulkhead (which reports the interface with these MSRs).
    Client::new(unsafe { X64::new() }, &PAGES)
}

/// The client with GUEST_OS_ID set and the hypercall page enabled (panics if it is not).
pub fn client_with_hypercalls() -> Client<X64> {
    let mut hv = client();
    hv.enable_hypercalls(GUEST_OS_ID).expect("hypercall page enabled");
    hv
}

pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: synthetic MSRs the hypervisor answers (CPUID says which).
    unsafe { core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack)) };
    u64::from(hi) << 32 | u64::from(lo)
}

pub fn wrmsr(msr: u32, value: u64) {
    // SAFETY: as in `rdmsr`.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
    };
}

/// The status of a raw hypercall result.
pub fn status(result: u64) -> u16 {
    HypercallResult::decode(result).status_code()
}

/// The guest-physical address of the input area at `offset` into the two input pages.
pub fn input_area(offset: usize) -> u64 {
    &raw const INPUT_PAGES as u64 + offset as u64
}

/// HvCallPostMessage with the input block at `offset` into the input pages (which need
/// not be a legal place for it); returns the status.
pub fn post_message_at(hv: &mut Client<X64>, offset: usize, input: &PostMessageInput) -> u16 {
    let bytes = input.to_bytes();
    let base = &raw mut INPUT_PAGES as *mut u8;
    // SAFETY: within the two input pages (offset < 4096 + 256 by the callers).
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(offset), bytes.len()) };
    post_message_gpa(hv, input_area(offset))
}

/// HvCallSignalEvent, memory form, with the input block at the start of the input pages.
pub fn signal_event_memory(hv: &mut Client<X64>, input: &SignalEventInput) -> u16 {
    let bytes = input.to_bytes();
    let base = &raw mut INPUT_PAGES as *mut u8;
    // SAFETY: the first 8 bytes of the input pages.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), base, bytes.len()) };
    status(hv.raw_hypercall(HypercallInput::new(code::SIGNAL_EVENT).value(), input_area(0), 0))
}

/// Bulkhead's console write with an input block of its own making at `offset` into the
/// input pages: `len` and `reserved` as given (not checked here), then `text`; returns
/// the status.
pub fn console_write_at(hv: &mut Client<X64>, offset: usize, len: u32, reserved: u32, text: &[u8]) -> u16 {
    let base = &raw mut INPUT_PAGES as *mut u8;
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&len.to_le_bytes());
    header[4..].copy_from_slice(&reserved.to_le_bytes());
    assert!(offset + 8 + text.len() <= 2 * 4096, "within the input pages");
    // SAFETY: within the two input pages (checked above).
    unsafe {
        core::ptr::copy_nonoverlapping(header.as_ptr(), base.add(offset), 8);
        core::ptr::copy_nonoverlapping(text.as_ptr(), base.add(offset + 8), text.len());
    }
    status(hv.raw_hypercall(HypercallInput::new(code::BULKHEAD_CONSOLE_WRITE).value(), input_area(offset), 0))
}

/// HvCallPostMessage with the input block at guest-physical `gpa`, wherever that is.
pub fn post_message_gpa(hv: &mut Client<X64>, gpa: u64) -> u16 {
    status(hv.raw_hypercall(HypercallInput::new(code::POST_MESSAGE).value(), gpa, 0))
}

/// Enables the reference TSC page (TLFS "Partition Reference TSC Mechanism").
pub fn enable_reference_tsc_page() {
    let page = &raw const REFERENCE_TSC_PAGE as u64;
    wrmsr(msr::REFERENCE_TSC, PageMsr::new(page >> 12).enabled(true).value());
}

/// The partition's reference time (100 ns units) read from the page with the TLFS reader
/// protocol; `None` while its sequence says the page is invalid.
pub fn reference_time_from_page() -> Option<u64> {
    read_reference_tsc_page(|scale, offset| reference_time(crate::rdtsc(), scale, offset))
}

/// The page's scale, from which the TSC frequency follows
/// (`bulkhead_abi::hyperv::reference_tsc::tsc_hz`); `None` while the page is invalid.
pub fn reference_tsc_scale() -> Option<u64> {
    read_reference_tsc_page(|scale, _| scale)
}

/// Runs `with(scale, offset)` on the page's parameters between two reads of its sequence,
/// again until the sequence stayed the same (the hypervisor rewrote the page meanwhile);
/// `None` if the sequence says the page is invalid.
fn read_reference_tsc_page<T>(with: impl FnMut(u64, i64) -> T) -> Option<T> {
    // SAFETY: our page, which the hypervisor keeps as the reference TSC page.
    unsafe { bulkhead_abi::hyperv::reference_tsc::read_consistent(&raw const REFERENCE_TSC_PAGE as *const u8, with) }
}

/// Interrupt vectors the test payloads give their SINTs, and what each handler counts.
pub mod sint_interrupts {
    use super::*;

    /// The vector for message SINTs.
    pub const MESSAGE_VECTOR: u8 = 0x50;
    /// The vector for event SINTs.
    pub const EVENT_VECTOR: u8 = 0x51;

    #[unsafe(no_mangle)]
    static SINT_MESSAGE_INTERRUPTS: AtomicU64 = AtomicU64::new(0);
    #[unsafe(no_mangle)]
    static SINT_EVENT_INTERRUPTS: AtomicU64 = AtomicU64::new(0);

    // Each handler counts and signals EOI (x2APIC EOI register); the main loop does the
    // work. With the x2APIC passed through (VT-x), neither exits.
    core::arch::global_asm!(
        r#"
        .section .text
        .global guest_sint_message_handler
    guest_sint_message_handler:
        lock inc qword ptr [rip + SINT_MESSAGE_INTERRUPTS]
        jmp guest_eoi_and_return
        .global guest_sint_event_handler
    guest_sint_event_handler:
        lock inc qword ptr [rip + SINT_EVENT_INTERRUPTS]
        jmp guest_eoi_and_return
        "#
    );

    unsafe extern "C" {
        fn guest_sint_message_handler();
        fn guest_sint_event_handler();
    }

    /// Installs the IDT with both handlers and software-enables the local APIC.
    /// Interrupts stay disabled: see [`wait_until`].
    pub fn install() {
        crate::gp::install();
        crate::gp::set_gate(MESSAGE_VECTOR, guest_sint_message_handler as *const () as u64);
        crate::gp::set_gate(EVENT_VECTOR, guest_sint_event_handler as *const () as u64);
        crate::gp::enable_local_apic();
    }

    /// Message-SINT interrupts taken so far.
    pub fn messages() -> u64 {
        SINT_MESSAGE_INTERRUPTS.load(Ordering::SeqCst)
    }

    /// Event-SINT interrupts taken so far.
    pub fn events() -> u64 {
        SINT_EVENT_INTERRUPTS.load(Ordering::SeqCst)
    }

    /// One step of an interrupt-driven loop that keeps interrupts enabled: runs `busy`
    /// with interrupts disabled and, unless it says there is work, halts until the next
    /// interrupt (an interrupt that arrives after `busy` looked still ends the HLT: STI's
    /// one-instruction shadow covers the gap). Returns with interrupts enabled, and
    /// whether it halted.
    pub fn halt_unless_busy(busy: impl FnOnce() -> bool) -> bool {
        // Not `nomem`: the asm is a compiler barrier, so `busy`'s reads stay between
        // CLI and STI.
        // SAFETY: CLI only masks interrupts for this vCPU.
        unsafe { core::arch::asm!("cli", options(nostack)) };
        let halt = !busy();
        if halt {
            // SAFETY: the caller has installed handlers for the vectors it enabled.
            unsafe { core::arch::asm!("sti; hlt", options(nostack)) };
        } else {
            // SAFETY: as above.
            unsafe { core::arch::asm!("sti", options(nostack)) };
        }
        halt
    }

    /// Waits, halted with interrupts enabled, until `done` holds; returns with interrupts
    /// disabled. `done` runs with interrupts disabled, so an interrupt that makes it true
    /// after it looked is taken by the HLT (STI's one-instruction shadow covers the gap).
    pub fn wait_until(mut done: impl FnMut() -> bool) {
        loop {
            // SAFETY: CLI only masks interrupts for this vCPU.
            unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
            if done() {
                return;
            }
            // SAFETY: the IDT handles the vectors this payload's SINTs use (`install`).
            unsafe { core::arch::asm!("sti; hlt", options(nomem, nostack)) };
        }
    }
}

/// The address of this payload's hypercall page (for calling it from ring 3).
pub fn hypercall_page_address() -> u64 {
    &PAGES.hypercall as *const _ as u64
}

/// One partition's end of the two-partition test systems (`bochs-messaging.toml`, the
/// messaging bench): messages arrive on SINT 2, events on SINT 3; it sends on one message
/// and one event connection and receives one event flag.
pub struct Endpoint {
    pub hv: Client<X64>,
    message_interrupts: bool,
    messages_out: u32,
    events_out: u32,
    flag_in: u16,
}

impl Endpoint {
    pub const MESSAGE_SINT: u8 = 2;
    pub const EVENT_SINT: u8 = 3;

    /// Hypercalls and SynIC on; the event SINT always raises its vector, the message SINT
    /// only if `message_interrupts` (otherwise its slot is polled). Interrupts are taken
    /// only inside [`sint_interrupts::wait_until`].
    pub fn new(messages_out: u32, events_out: u32, flag_in: u16, message_interrupts: bool) -> Endpoint {
        use sint_interrupts::{EVENT_VECTOR, MESSAGE_VECTOR};
        let mut hv = client_with_hypercalls();
        sint_interrupts::install();
        // SINTs before the SynIC: once a peer's post is accepted, it raises the interrupt.
        hv.enable_sint(Self::EVENT_SINT, EVENT_VECTOR).expect("event SINT");
        if message_interrupts {
            hv.enable_sint(Self::MESSAGE_SINT, MESSAGE_VECTOR).expect("message SINT");
        }
        hv.enable_synic();
        Endpoint { hv, message_interrupts, messages_out, events_out, flag_in }
    }

    pub fn post(&mut self, message_type: u32, payload: &[u8]) -> Result<(), PostError> {
        self.hv.post_message(self.messages_out, message_type, payload)
    }

    /// Posts, retrying while the peer's SynIC is not enabled yet (INVALID_SYNIC_STATE) or
    /// its queue is full; `Err` with any other status. Returns the retries.
    pub fn post_retrying(&mut self, message_type: u32, payload: &[u8]) -> Result<u64, PostError> {
        let mut retries = 0;
        loop {
            match self.post(message_type, payload) {
                Ok(()) => return Ok(retries),
                Err(e) if e.is_queue_full() || e.status_code() == Some(HvStatus::InvalidSynicState.code()) => {
                    retries += 1
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn signal(&mut self) -> Result<(), u16> {
        self.hv.signal_event(self.events_out, 0).map_err(u16::from)
    }

    /// [`signal`](Self::signal), again while the receiver's SynIC is not ready yet
    /// (INVALID_SYNIC_STATE: its partition has not started or not enabled its SINT, as
    /// when a busy host starts its vCPU late).
    pub fn signal_retrying(&mut self) -> Result<(), u16> {
        loop {
            match self.signal() {
                Err(code) if code == HvStatus::InvalidSynicState.code() => core::hint::spin_loop(),
                other => return other,
            }
        }
    }

    /// Takes the incoming event flag; whether it was set.
    pub fn take_event(&mut self) -> bool {
        self.hv.take_event(Self::EVENT_SINT, self.flag_in)
    }

    /// Waits for the next message: halted if its SINT interrupts, else polling.
    pub fn wait_message(&mut self) -> Message {
        loop {
            if self.message_interrupts {
                // Returns with interrupts disabled, so the message is taken before the
                // next SINT interrupt, as it would be inside the condition; taken here, the
                // 256-byte message is built once in the caller's place instead of moved
                // through an `Option` the closure captures (three copies: about 150
                // instructions a message, `cargo xtask bench` `hv-message-ping-pong`).
                sint_interrupts::wait_until(|| self.hv.has_message(Self::MESSAGE_SINT));
            }
            if let Some(message) = self.hv.receive(Self::MESSAGE_SINT) {
                return message;
            }
        }
    }

    /// Waits (halted) for the event flag, and takes it.
    pub fn wait_event(&mut self) {
        sint_interrupts::wait_until(|| self.take_event());
    }
}
