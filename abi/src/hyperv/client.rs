//! The guest side of the interface as a safe client: enable the hypercall page, set up the
//! SynIC (SIMP, SIEFP, SCONTROL, SINTs), post messages, signal events, receive messages
//! with the TLFS end-of-message protocol and take event flags.
//!
//! The privileged steps (RDMSR/WRMSR, calling the hypercall page, knowing a page's
//! guest-physical address) sit behind the [`Cpu`] trait, which is `unsafe` to implement:
//! an implementation vouches that it runs at CPL 0 under a hypervisor offering this
//! interface. [`X64`] is the implementation for identity-mapped x86-64 guests; the host
//! tests use a simulated one. Everything else is safe code.
//!
//! The pages the hypervisor writes ([`Pages`]) are arrays of `AtomicU64`, so the guest
//! reading them while the hypervisor writes is defined behaviour without `unsafe`.
//!
//! Receiving follows TLFS "SynIC Message Flags" as Linux's `vmbus_signal_eom` does: copy
//! the slot, set its type to `MESSAGE_TYPE_NONE` to free it (here one atomic
//! read-modify-write, which is also the full barrier), then write EOM only if the slot's
//! MessagePending flag was set (the hypervisor then delivers the next waiting message). Event flags are taken with an atomic test-and-clear, so a signal that arrives
//! meanwhile is never lost.

use super::hypercall::{CONSOLE_WRITE_MAX, code};
use super::message::{
    EVENT_FLAGS_PER_SLOT, EVENT_FLAGS_SLOT_SIZE, MAX_PAYLOAD, MESSAGE_FLAG_PENDING, MESSAGE_TYPE_NONE, MessageHeader,
};
use super::msr::{self, SINT_COUNT};
use super::{
    HvStatus, HypercallInput, HypercallMsr, HypercallResult, Message, MessagePage, PageMsr, Scontrol, SignalEventInput,
    Sint,
};
use crate::supervision::{ControlAction, PartitionStatus};
use core::sync::atomic::{AtomicU64, Ordering, fence};

const PAGE_BYTES: usize = 4096;
const PAGE_WORDS: usize = PAGE_BYTES / 8;

/// A 4 KiB page shared with the hypervisor, as 512 atomic words.
#[repr(C, align(4096))]
pub struct Page([AtomicU64; PAGE_WORDS]);

impl Page {
    pub const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; PAGE_WORDS])
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        &self.0[index]
    }

    /// Copies `bytes` into the page from byte `offset` on, as one `memcpy` (a string move
    /// where a word loop would be five instructions a word: a 240-byte payload is most of
    /// a post's guest side, `cargo xtask bench` `hv-post-message-240`). Panics if they do
    /// not fit.
    fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        assert!(offset <= PAGE_BYTES && bytes.len() <= PAGE_BYTES - offset, "write past the page");
        let start = self.0.as_ptr().cast::<u8>().cast_mut();
        // SAFETY: in bounds (checked above) of the page's words, whose `UnsafeCell`s allow
        // writes through a shared reference; no other thread accesses this VP's input page
        // (the hypervisor reads it only while this VP is in the hypercall that follows).
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), start.add(offset), bytes.len()) };
    }
}

impl Default for Page {
    fn default() -> Self {
        Self::new()
    }
}

/// The four pages one virtual processor's client uses. Give each VP its own `Pages`
/// (a `static`), in memory the partition owns: the hypervisor refuses pages elsewhere.
#[repr(C, align(4096))]
pub struct Pages {
    /// The hypervisor fills it with its call sequence (`vmcall; ret` or `vmmcall; ret`):
    /// it must be executable.
    pub hypercall: Page,
    /// The memory-form input block (HvCallPostMessage, the console write).
    pub input: Page,
    /// The SynIC message page (SIMP): slot n belongs to SINTn.
    pub messages: Page,
    /// The SynIC event-flag page (SIEFP): 2048 flags per SINT.
    pub event_flags: Page,
}

const _: () = assert!(size_of::<Pages>() == 4 * 4096);

impl Pages {
    pub const fn new() -> Self {
        Self { hypercall: Page::new(), input: Page::new(), messages: Page::new(), event_flags: Page::new() }
    }
}

impl Default for Pages {
    fn default() -> Self {
        Self::new()
    }
}

/// The privileged operations the client needs.
///
/// # Safety
/// Implementations run at CPL 0 in a partition whose hypervisor reports the Hyper-V
/// interface (CPUID 0x4000_0000 "Microsoft Hv", 0x4000_0001 "Hv#1") with the hypercall and
/// SynIC MSRs, so the MSR accesses below exist; `guest_physical` returns the true
/// guest-physical address of a page (the hypervisor writes there); and `hypercall` calls
/// the hypercall page with the TLFS register convention.
pub unsafe trait Cpu {
    fn read_msr(&mut self, msr: u32) -> u64;
    fn write_msr(&mut self, msr: u32, value: u64);
    /// Guest-physical address of `page`.
    fn guest_physical(&self, page: &Page) -> u64;
    /// Calls the hypercall page `page`: RCX = `input_value`, RDX = `input`, R8 = `output`;
    /// returns RAX.
    fn hypercall(&mut self, page: &Page, input_value: u64, input: u64, output: u64) -> u64;
}

/// The [`Cpu`] of an x86-64 guest at CPL 0 whose virtual addresses are its
/// guest-physical addresses (identity-mapped, as Bulkhead starts 64-bit payloads).
#[cfg(target_arch = "x86_64")]
pub struct X64(());

#[cfg(target_arch = "x86_64")]
impl X64 {
    /// # Safety
    /// The caller runs at CPL 0, identity-mapped, in a partition whose hypervisor reports
    /// the Hyper-V interface with the hypercall and SynIC MSRs (see [`Cpu`]).
    pub unsafe fn new() -> Self {
        Self(())
    }
}

// SAFETY: `X64::new`'s caller vouched for CPL 0, identity mapping and the interface.
#[cfg(target_arch = "x86_64")]
unsafe impl Cpu for X64 {
    fn read_msr(&mut self, msr: u32) -> u64 {
        let (low, high): (u32, u32);
        // SAFETY: a synthetic MSR the hypervisor reports (see `X64::new`).
        unsafe { core::arch::asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nostack)) };
        u64::from(high) << 32 | u64::from(low)
    }

    fn write_msr(&mut self, msr: u32, value: u64) {
        // SAFETY: as in `read_msr`; the values the client writes point only at its pages.
        unsafe {
            core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
                options(nostack))
        };
    }

    fn guest_physical(&self, page: &Page) -> u64 {
        page as *const Page as u64
    }

    fn hypercall(&mut self, page: &Page, input_value: u64, input: u64, output: u64) -> u64 {
        let result: u64;
        // SAFETY: the client calls only a page the hypervisor filled (HYPERCALL enabled and
        // read back); the TLFS convention clobbers RAX, and Linux's adds R9-R11.
        unsafe {
            core::arch::asm!(
                "call {page}",
                page = in(reg) page as *const Page as u64,
                in("rcx") input_value,
                in("rdx") input,
                in("r8") output,
                lateout("rax") result,
                lateout("r9") _,
                lateout("r10") _,
                lateout("r11") _,
            )
        };
        result
    }
}

/// A hypercall's status other than success (the raw HV_STATUS; [`HvStatus`] names the
/// ones this interface defines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HypercallError(pub u16);

impl From<HypercallError> for u16 {
    fn from(error: HypercallError) -> u16 {
        error.0
    }
}

impl HypercallError {
    pub const fn status(self) -> Option<HvStatus> {
        HvStatus::from_code(self.0)
    }

    pub const fn is(self, status: HvStatus) -> bool {
        self.0 == status.code()
    }
}

/// Why a set-up step was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// The HYPERCALL MSR did not read back enabled (GUEST_OS_ID 0, or no hypercall page).
    HypercallPageNotEnabled,
    /// SINT number 16 or above.
    NoSuchSint(u8),
    /// Vectors below 16 are reserved for exceptions (TLFS: the write would #GP).
    VectorReserved(u8),
    /// The payload is longer than a message carries ([`MAX_PAYLOAD`]).
    PayloadTooLong(usize),
}

/// One VP's Hyper-V client; see the module notes.
pub struct Client<C: Cpu> {
    cpu: C,
    pages: &'static Pages,
    end_of_messages: u64,
}

impl<C: Cpu> Client<C> {
    pub fn new(cpu: C, pages: &'static Pages) -> Self {
        Self { cpu, pages, end_of_messages: 0 }
    }

    fn gpfn(&self, page: &Page) -> u64 {
        self.cpu.guest_physical(page) >> 12
    }

    /// Identifies the guest OS (GUEST_OS_ID, which must be non-zero) and enables the
    /// hypercall page.
    pub fn enable_hypercalls(&mut self, guest_os_id: u64) -> Result<(), SetupError> {
        self.cpu.write_msr(msr::GUEST_OS_ID, guest_os_id);
        let page = HypercallMsr::new(self.gpfn(&self.pages.hypercall)).enabled(true);
        self.cpu.write_msr(msr::HYPERCALL, page.value());
        if HypercallMsr::decode(self.cpu.read_msr(msr::HYPERCALL)).is_enabled() {
            Ok(())
        } else {
            Err(SetupError::HypercallPageNotEnabled)
        }
    }

    /// Places the message and event-flag pages and enables the SynIC. SINTs stay as they
    /// are (masked after reset): see [`Client::enable_sint`].
    pub fn enable_synic(&mut self) {
        let simp = PageMsr::new(self.gpfn(&self.pages.messages)).enabled(true);
        let siefp = PageMsr::new(self.gpfn(&self.pages.event_flags)).enabled(true);
        self.cpu.write_msr(msr::SIMP, simp.value());
        self.cpu.write_msr(msr::SIEFP, siefp.value());
        self.cpu.write_msr(msr::SCONTROL, Scontrol::new(true).value());
    }

    /// Unmasks SINT `sint` with interrupt vector `vector` (no AutoEOI: deprecated, as
    /// CPUID recommends).
    pub fn enable_sint(&mut self, sint: u8, vector: u8) -> Result<(), SetupError> {
        self.write_sint(sint, Sint::new(vector).masked(false))
    }

    /// Masks SINT `sint`: no interrupts; messages still arrive in its slot.
    pub fn mask_sint(&mut self, sint: u8) -> Result<(), SetupError> {
        let current = Sint::decode(self.cpu.read_msr(msr::sint(Self::sint_number(sint)?)));
        self.write_sint(sint, current.masked(true))
    }

    fn sint_number(sint: u8) -> Result<u8, SetupError> {
        if sint < SINT_COUNT { Ok(sint) } else { Err(SetupError::NoSuchSint(sint)) }
    }

    fn write_sint(&mut self, sint: u8, value: Sint) -> Result<(), SetupError> {
        let sint = Self::sint_number(sint)?;
        if !value.vector_valid() {
            return Err(SetupError::VectorReserved(value.vector()));
        }
        self.cpu.write_msr(msr::sint(sint), value.value());
        Ok(())
    }

    /// HvCallPostMessage on `connection_id` (memory form, input block in the input page).
    pub fn post_message(&mut self, connection_id: u32, message_type: u32, payload: &[u8]) -> Result<(), PostError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(PostError::Setup(SetupError::PayloadTooLong(payload.len())));
        }
        // The PostMessageInput layout: the header, then only the payload's bytes (the
        // hypervisor reads no further).
        let input = &self.pages.input;
        input.word(0).store(u64::from(connection_id), Ordering::Relaxed);
        input.word(1).store(u64::from(message_type) | (payload.len() as u64) << 32, Ordering::Relaxed);
        input.write_bytes(16, payload);
        let gpa = self.cpu.guest_physical(input);
        self.call(HypercallInput::new(code::POST_MESSAGE), gpa, 0).map_err(PostError::Hypercall)
    }

    /// HvCallSignalEvent on `connection_id`, fast form (no input block).
    pub fn signal_event(&mut self, connection_id: u32, flag_number: u16) -> Result<(), HypercallError> {
        let input = SignalEventInput::new(connection_id, flag_number).fast_value();
        self.call(HypercallInput::new(code::SIGNAL_EVENT).fast(true), input, 0)
    }

    /// Bulkhead's console write ([`code::BULKHEAD_CONSOLE_WRITE`], memory form, input
    /// block in the input page): `text` goes to the partition's console as if written to
    /// its virtual UART, in one exit per [`CONSOLE_WRITE_MAX`] bytes instead of one per
    /// byte. Stops at the first refusal.
    pub fn console_write(&mut self, text: &[u8]) -> Result<(), HypercallError> {
        for chunk in text.chunks(CONSOLE_WRITE_MAX) {
            let input = &self.pages.input;
            // ConsoleWriteInput: len, reserved 0, then the text word by word.
            input.word(0).store(chunk.len() as u64, Ordering::Relaxed);
            for (index, word) in chunk.chunks(8).enumerate() {
                let mut bytes = [0; 8];
                bytes[..word.len()].copy_from_slice(word);
                input.word(1 + index).store(u64::from_le_bytes(bytes), Ordering::Relaxed);
            }
            let gpa = self.cpu.guest_physical(input);
            self.call(HypercallInput::new(code::BULKHEAD_CONSOLE_WRITE), gpa, 0)?;
        }
        Ok(())
    }

    /// Bulkhead's watchdog check-in ([`code::BULKHEAD_WATCHDOG_CHECK_IN`], fast form): the
    /// partition's watchdog deadline moves to one period from now.
    pub fn watchdog_check_in(&mut self) -> Result<(), HypercallError> {
        self.call(HypercallInput::new(code::BULKHEAD_WATCHDOG_CHECK_IN).fast(true), 0, 0)
    }

    /// Bulkhead's partition status ([`code::BULKHEAD_PARTITION_STATUS`], memory form): the
    /// state and counters of `partition` (this partition's own, or one it supervises;
    /// [`crate::supervision::PARTITION_SELF`] for its own).
    /// The input block is the first 8 bytes of the input page, the output block its second
    /// half.
    pub fn partition_status(&mut self, partition: u32) -> Result<PartitionStatus, HypercallError> {
        const OUTPUT_WORD: usize = 256;
        let input = &self.pages.input;
        input.word(0).store(u64::from(partition), Ordering::Relaxed);
        let gpa = self.cpu.guest_physical(input);
        self.call(HypercallInput::new(code::BULKHEAD_PARTITION_STATUS), gpa, gpa + OUTPUT_WORD as u64 * 8)?;
        let mut bytes = [0u8; PartitionStatus::SIZE];
        for (i, chunk) in bytes.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&input.word(OUTPUT_WORD + i).load(Ordering::Acquire).to_le_bytes());
        }
        Ok(PartitionStatus::from_bytes(&bytes))
    }

    /// Bulkhead's partition control ([`code::BULKHEAD_PARTITION_CONTROL`], fast form): the
    /// supervisor restarts or halts `partition`.
    pub fn control_partition(&mut self, partition: u8, action: ControlAction) -> Result<(), HypercallError> {
        self.call(HypercallInput::new(code::BULKHEAD_PARTITION_CONTROL).fast(true), u64::from(partition), action as u64)
    }

    fn call(&mut self, input_value: HypercallInput, input: u64, output: u64) -> Result<(), HypercallError> {
        let result = HypercallResult::decode(self.raw_hypercall(input_value.value(), input, output));
        if result.is_success() { Ok(()) } else { Err(HypercallError(result.status_code())) }
    }

    /// Any hypercall, registers as given; returns RAX. For callers that build their own
    /// input (and tests that send malformed ones on purpose).
    pub fn raw_hypercall(&mut self, input_value: u64, input: u64, output: u64) -> u64 {
        // Full barrier: the input block's stores come before the call.
        fence(Ordering::SeqCst);
        self.cpu.hypercall(&self.pages.hypercall, input_value, input, output)
    }

    fn slot_word(&self, sint: u8, word: usize) -> &AtomicU64 {
        self.pages.messages.word((MessagePage::slot_offset(sint) + word * 8) / 8)
    }

    /// Whether SINT `sint`'s message slot holds a message.
    pub fn has_message(&self, sint: u8) -> bool {
        sint < SINT_COUNT && self.slot_word(sint, 0).load(Ordering::Acquire) as u32 != MESSAGE_TYPE_NONE
    }

    /// Takes the message in SINT `sint`'s slot, if any: copies it, frees the slot and,
    /// if more messages wait, writes EOM so the hypervisor delivers the next one.
    pub fn receive(&mut self, sint: u8) -> Option<Message> {
        if !self.has_message(sint) {
            return None;
        }
        // The header's two words, then only the words the payload fills: a 16-byte
        // message is four loads, not the slot's 32 (`cargo xtask bench`
        // `hv-message-ping-pong`). Bytes past the payload come back zero.
        let mut header = [0u8; MessageHeader::SIZE];
        header[..8].copy_from_slice(&self.slot_word(sint, 0).load(Ordering::Acquire).to_le_bytes());
        header[8..].copy_from_slice(&self.slot_word(sint, 1).load(Ordering::Acquire).to_le_bytes());
        let mut message = Message { header: MessageHeader::from_bytes(&header), ..Message::EMPTY };
        let words = usize::from(message.header.payload_size).min(MAX_PAYLOAD).div_ceil(8);
        for (index, chunk) in message.payload.chunks_exact_mut(8).take(words).enumerate() {
            chunk.copy_from_slice(&self.slot_word(sint, 2 + index).load(Ordering::Acquire).to_le_bytes());
        }
        // Free the slot by clearing only the type (the low half of word 0): the flags byte
        // keeps a MessagePending the hypervisor sets meanwhile. The atomic RMW orders
        // against the hypervisor's own (it sets the flag, then re-checks the slot): either
        // it sees the slot free and delivers itself, or the flag shows here.
        let before = self.slot_word(sint, 0).fetch_and(!0xffff_ffff, Ordering::AcqRel);
        let pending = (before >> 40) as u8 & MESSAGE_FLAG_PENDING != 0;
        if pending {
            self.cpu.write_msr(msr::EOM, 0);
            self.end_of_messages += 1;
        }
        Some(message)
    }

    /// EOM writes so far (each is one exit to the hypervisor).
    pub fn end_of_messages(&self) -> u64 {
        self.end_of_messages
    }

    /// Takes flag `flag` of SINT `sint`'s event flags: clears it atomically and says
    /// whether it was set.
    pub fn take_event(&mut self, sint: u8, flag: u16) -> bool {
        if sint >= SINT_COUNT || flag >= EVENT_FLAGS_PER_SLOT {
            return false;
        }
        let word = (sint as usize * EVENT_FLAGS_SLOT_SIZE) / 8 + usize::from(flag / 64);
        let bit = 1u64 << (flag % 64);
        self.pages.event_flags.word(word).fetch_and(!bit, Ordering::AcqRel) & bit != 0
    }
}

/// Why HvCallPostMessage failed: refused before the call, or the hypervisor's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostError {
    Setup(SetupError),
    Hypercall(HypercallError),
}

impl PostError {
    /// The hypervisor's status, if the call was made.
    pub const fn status_code(self) -> Option<u16> {
        match self {
            Self::Hypercall(e) => Some(e.0),
            Self::Setup(_) => None,
        }
    }

    /// Whether the hypervisor answered INSUFFICIENT_BUFFERS (the receiver's queue is full:
    /// try again once it has taken messages).
    pub const fn is_queue_full(self) -> bool {
        matches!(self, Self::Hypercall(e) if e.is(HvStatus::InsufficientBuffers))
    }
}

#[cfg(test)]
mod tests {
    //! The client against a simulated hypervisor that records MSR writes and hypercalls and
    //! delivers into the pages as Bulkhead's SynIC does.
    extern crate std;
    use super::*;
    use crate::hyperv::PostMessageInput;
    use std::boxed::Box;
    use std::vec::Vec;

    const BASE: u64 = 0x20_0000;

    #[derive(Default)]
    struct Simulated {
        msrs: std::collections::BTreeMap<u32, u64>,
        writes: Vec<(u32, u64)>,
        calls: Vec<(u64, u64, [u8; 256])>,
        /// The text of each console write, as its input block gave it.
        console: Vec<Vec<u8>>,
        pages: Option<&'static Pages>,
        answer: u64,
    }

    unsafe impl Cpu for &mut Simulated {
        fn read_msr(&mut self, msr: u32) -> u64 {
            self.msrs.get(&msr).copied().unwrap_or(if msr::sint_index(msr).is_some() { 0x1_0000 } else { 0 })
        }
        fn write_msr(&mut self, msr: u32, value: u64) {
            self.writes.push((msr, value));
            // The hypercall page enables only with a guest OS id (TLFS).
            let value = if msr == msr::HYPERCALL && self.msrs.get(&msr::GUEST_OS_ID).copied().unwrap_or(0) == 0 {
                value & !1
            } else {
                value
            };
            self.msrs.insert(msr, value);
        }
        fn guest_physical(&self, page: &Page) -> u64 {
            let pages = self.pages.unwrap();
            BASE + (page as *const Page as u64 - pages as *const Pages as u64)
        }
        fn hypercall(&mut self, page: &Page, input_value: u64, input: u64, _output: u64) -> u64 {
            let pages = self.pages.unwrap();
            assert!(core::ptr::eq(page, &pages.hypercall));
            let mut block = [0u8; 256];
            for (i, chunk) in block.chunks_exact_mut(8).enumerate() {
                chunk.copy_from_slice(&pages.input.word(i).load(Ordering::Relaxed).to_le_bytes());
            }
            self.calls.push((input_value, input, block));
            if input_value == u64::from(code::BULKHEAD_CONSOLE_WRITE) {
                let mut page = Vec::new();
                for i in 0..PAGE_WORDS {
                    page.extend_from_slice(&pages.input.word(i).load(Ordering::Relaxed).to_le_bytes());
                }
                let len = u32::from_le_bytes(page[0..4].try_into().unwrap()) as usize;
                assert_eq!(&page[4..8], &[0; 4], "reserved");
                self.console.push(page[8..8 + len].to_vec());
            }
            self.answer
        }
    }

    fn pages() -> &'static Pages {
        Box::leak(Box::new(Pages::new()))
    }

    fn deliver(pages: &Pages, sint: u8, message: &Message, pending: bool) {
        let mut bytes = message.to_bytes();
        bytes[5] = if pending { MESSAGE_FLAG_PENDING } else { 0 };
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            let word = (MessagePage::slot_offset(sint) + i * 8) / 8;
            pages.messages.word(word).store(u64::from_le_bytes(chunk.try_into().unwrap()), Ordering::Release);
        }
    }

    #[test]
    fn enabling_writes_the_guest_id_then_the_page_and_checks_it() {
        let pages = pages();
        let mut sim = Simulated { pages: Some(pages), ..Default::default() };
        let mut client = Client::new(&mut sim, pages);
        assert_eq!(client.enable_hypercalls(0), Err(SetupError::HypercallPageNotEnabled));
        assert_eq!(client.enable_hypercalls(1 << 63), Ok(()));
        assert_eq!(sim.writes[2], (msr::GUEST_OS_ID, 1 << 63));
        assert_eq!(sim.writes[3], (msr::HYPERCALL, BASE | 1));
    }

    #[test]
    fn synic_pages_and_sints_get_the_tlfs_values() {
        let pages = pages();
        let mut sim = Simulated { pages: Some(pages), ..Default::default() };
        let mut client = Client::new(&mut sim, pages);
        client.enable_synic();
        assert_eq!(client.enable_sint(2, 0x50), Ok(()));
        assert_eq!(client.enable_sint(16, 0x50), Err(SetupError::NoSuchSint(16)));
        assert_eq!(client.enable_sint(3, 15), Err(SetupError::VectorReserved(15)));
        assert_eq!(client.mask_sint(2), Ok(()));
        assert_eq!(
            sim.writes,
            [
                (msr::SIMP, (BASE + 2 * 4096) | 1),
                (msr::SIEFP, (BASE + 3 * 4096) | 1),
                (msr::SCONTROL, 1),
                (msr::sint(2), 0x50),
                (msr::sint(2), 0x1_0050),
            ]
        );
    }

    #[test]
    fn post_message_writes_the_input_block_and_passes_its_address() {
        let pages = pages();
        let mut sim = Simulated { pages: Some(pages), answer: 0x13, ..Default::default() };
        let mut client = Client::new(&mut sim, pages);
        let sent = client.post_message(7, 1, b"ping");
        assert_eq!(sent, Err(PostError::Hypercall(HypercallError(0x13))));
        assert!(sent.unwrap_err().is_queue_full());
        assert_eq!(client.post_message(7, 1, &[0; 241]), Err(PostError::Setup(SetupError::PayloadTooLong(241))));
        // A payload of whole words and one with a partial last word.
        for len in [16, 240, 13] {
            let payload: Vec<u8> = (0..len as u8).collect();
            let _ = client.post_message(7, 2, &payload);
            let mut block = [0u8; 256];
            for (i, chunk) in block.chunks_exact_mut(8).enumerate() {
                chunk.copy_from_slice(&pages.input.word(i).load(Ordering::Relaxed).to_le_bytes());
            }
            assert_eq!(PostMessageInput::from_bytes(&block).payload(), &payload[..]);
        }
        assert_eq!(sim.calls.len(), 4);
        let (input_value, gpa, block) = sim.calls[0];
        assert_eq!(input_value, 0x5c);
        assert_eq!(gpa, BASE + 4096);
        let input = PostMessageInput::from_bytes(&block);
        assert_eq!(input.check(), Ok(()));
        assert_eq!((input.connection_id, input.message_type, input.payload()), (7, 1, &b"ping"[..]));
    }

    #[test]
    fn console_write_splits_into_input_blocks_of_at_most_the_maximum() {
        let pages = pages();
        let mut sim = Simulated { pages: Some(pages), ..Default::default() };
        let mut client = Client::new(&mut sim, pages);
        assert_eq!(client.console_write(b"hello\n"), Ok(()));
        let long: Vec<u8> = (0..2 * CONSOLE_WRITE_MAX + 13).map(|i| b'a' + (i % 26) as u8).collect();
        assert_eq!(client.console_write(&long), Ok(()));
        assert_eq!(client.console_write(b""), Ok(()));
        assert_eq!(sim.calls.len(), 4, "one call for the line, three for the long text, none for nothing");
        assert!(sim.calls.iter().all(|&(value, gpa, _)| value == 0x8001 && gpa == BASE + 4096));
        assert_eq!(sim.console[0], b"hello\n");
        assert_eq!(
            sim.console[1..].iter().map(Vec::len).collect::<Vec<_>>(),
            [CONSOLE_WRITE_MAX, CONSOLE_WRITE_MAX, 13]
        );
        assert_eq!(sim.console[1..].concat(), long);
    }

    #[test]
    fn console_write_stops_at_the_first_refusal() {
        let pages = pages();
        let mut sim = Simulated { pages: Some(pages), answer: 0x5, ..Default::default() };
        let mut client = Client::new(&mut sim, pages);
        let long = [b'x'; CONSOLE_WRITE_MAX + 1];
        assert_eq!(client.console_write(&long), Err(HypercallError(0x5)));
        assert_eq!(sim.calls.len(), 1);
    }

    #[test]
    fn signal_event_uses_the_fast_form() {
        let pages = pages();
        let mut sim = Simulated { pages: Some(pages), ..Default::default() };
        let mut client = Client::new(&mut sim, pages);
        assert_eq!(client.signal_event(9, 0), Ok(()));
        assert_eq!(sim.calls[0].0, 0x5d | 1 << 16);
        assert_eq!(sim.calls[0].1, 9);
    }

    #[test]
    fn receive_frees_the_slot_and_writes_eom_only_when_more_wait() {
        let pages = pages();
        let mut sim = Simulated { pages: Some(pages), ..Default::default() };
        let mut client = Client::new(&mut sim, pages);
        assert_eq!(client.receive(2), None);
        let message = Message::from_post(&PostMessageInput::new(1, 3, b"first").unwrap(), 1);
        deliver(pages, 2, &message, false);
        let got = client.receive(2).unwrap();
        assert_eq!((got.header.message_type, got.payload()), (3, &b"first"[..]));
        assert!(!client.has_message(2));
        deliver(pages, 2, &message, true);
        assert!(client.receive(2).unwrap().header.is_message_pending());
        assert!(!client.has_message(2));
        assert_eq!(client.receive(16), None);
        assert_eq!(client.end_of_messages(), 1);
        assert_eq!(sim.writes, [(msr::EOM, 0)]);
    }

    #[test]
    fn take_event_clears_exactly_its_flag() {
        let pages = pages();
        let mut sim = Simulated { pages: Some(pages), ..Default::default() };
        let mut client = Client::new(&mut sim, pages);
        // SINT 3, flags 5 and 70 set, as the hypervisor's byte-wise `fetch_or` sets them.
        let slot = 3 * EVENT_FLAGS_SLOT_SIZE / 8;
        pages.event_flags.word(slot).fetch_or(1 << 5, Ordering::SeqCst);
        pages.event_flags.word(slot + 1).fetch_or(1 << 6, Ordering::SeqCst);
        assert!(client.take_event(3, 5));
        assert!(!client.take_event(3, 5));
        assert!(!client.take_event(2, 70));
        assert!(client.take_event(3, 70));
        assert!(!client.take_event(3, EVENT_FLAGS_PER_SLOT));
        assert!(pages.event_flags.0.iter().all(|w| w.load(Ordering::SeqCst) == 0));
    }
}
