//! Messaging for programs: the partition's Hyper-V connections (the boot information lists
//! them by name), HvCallPostMessage, HvCallSignalEvent, and receiving and waiting with
//! interrupts that wake the blocked thread. The std-side crate `bulkhead-messaging`
//! (apps/messaging) calls the `bulkhead_*` functions below; docs/unikernel.md,
//! "Messaging", is the guide.
//!
//! The runtime owns the SynIC. It is per vCPU, and Bulkhead delivers every message and
//! event of a partition to its VP 0 (its first core: kernel/src/hyperv/synic.rs), so the
//! boot vCPU's SIMP and SIEFP pages (those of `crate::hypercall`) take them, and only it
//! may free a message slot with EOM. At start ([`init`]) every SINT an incoming connection
//! uses is unmasked (vector `SINT_MESSAGE`, or `SINT_EVENT` for SINTs that only carry
//! events) and the SynIC enabled, so senders are never refused for a SynIC the program
//! has not opened yet.
//!
//! The interrupt handler (boot vCPU) moves messages from the slots into each SINT's
//! [`Inbox`] (writing EOM when more wait), bumps [`SIGNALS`] and wakes every thread
//! waiting on it through the scheduler. It does not allocate or print (the heap and
//! console locks do not disable interrupts) and takes only locks held with interrupts off.
//! A thread on any vCPU takes its message from the inbox; when that made room and the slot
//! holds another, it has the boot vCPU take it (directly, or by sending it the message
//! vector as an IPI). A message that arrives before anyone waits stays in the inbox, the
//! slot or the hypervisor's queue until received: nothing is lost, and a sender whose
//! queue is full is told (INSUFFICIENT_BUFFERS).
//!
//! Event flags are taken with an atomic test-and-clear from any vCPU.

use crate::cpu::{interrupts_off, rdmsr, restore_interrupts, wrmsr};
use crate::exceptions::{set_gate, vectors};
use crate::inbox::Inbox;
use bulkhead_abi::boot_info::{Connection, ConnectionKind};
use bulkhead_abi::hyperv::client::{Client, PostError, X64};
use bulkhead_abi::hyperv::message::MAX_PAYLOAD;
use bulkhead_abi::hyperv::msr::SINT_COUNT;
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use hermit_abi::errno;
use spin::Mutex;

const SINTS: usize = SINT_COUNT as usize;

// x2APIC MSRs (SDM Vol. 3A Table 11-6).
const X2APIC_ID: u32 = 0x802;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_ICR: u32 = 0x830;

/// Whether [`init`] set up the SynIC.
static READY: AtomicBool = AtomicBool::new(false);
/// The SINTs that incoming message connections use (bit n: SINTn).
static MESSAGE_SINTS: AtomicU16 = AtomicU16::new(0);
/// The boot vCPU's x2APIC ID.
static BOOT_APIC_ID: AtomicU32 = AtomicU32::new(0);
/// Bumped by every SynIC interrupt (and every refill); the futex word receivers and event
/// waiters block on. One word for all: a wake-up makes each waiter look at its own inbox
/// or flag again.
static SIGNALS: AtomicU32 = AtomicU32::new(0);
/// Each SINT's messages taken from its slot. Locked with interrupts off only.
static INBOXES: [Mutex<Inbox>; SINTS] = [const { Mutex::new(Inbox::new()) }; SINTS];

/// A client over the boot vCPU's pages, for the slot and the flags (no locks: receiving
/// touches only the message page and EOM, taking a flag one atomic word).
fn synic() -> Client<X64> {
    // SAFETY: CPL 0, identity-mapped, and `init` found the Hyper-V interface.
    Client::new(unsafe { X64::new() }, crate::hypercall::pages())
}

/// Sets up the SynIC for the partition's incoming connections, on the boot vCPU, once the
/// scheduler runs (the handler wakes threads through it).
pub fn init() {
    let Some(info) = crate::boot::boot_info() else { return };
    let (mut message_sints, mut event_sints) = (0u16, 0u16);
    for c in info.connection_list().filter(|c| c.incoming && u32::from(c.sint) < u32::from(SINT_COUNT)) {
        match c.kind {
            ConnectionKind::Message { .. } => message_sints |= 1 << c.sint,
            ConnectionKind::Event { .. } => event_sints |= 1 << c.sint,
        }
    }
    BOOT_APIC_ID.store(rdmsr(X2APIC_ID) as u32, Ordering::Relaxed);
    MESSAGE_SINTS.store(message_sints, Ordering::Release);
    set_gate(vectors::SINT_MESSAGE, bulkhead_messaging_interrupt as *const () as u64);
    set_gate(vectors::SINT_EVENT, bulkhead_messaging_interrupt as *const () as u64);
    let ready = crate::hypercall::with_client(|client| {
        // SINTs before the SynIC: once a sender's post is accepted, it raises the vector.
        for sint in 0..SINT_COUNT {
            let vector = if message_sints & 1 << sint != 0 {
                vectors::SINT_MESSAGE
            } else if event_sints & 1 << sint != 0 {
                vectors::SINT_EVENT
            } else {
                continue;
            };
            client.enable_sint(sint, vector).expect("SINT below 16, vector above 15");
        }
        client.enable_synic();
    });
    READY.store(ready.is_some(), Ordering::Release);
}

core::arch::global_asm!(
    r#"
    .pushsection .text.bulkhead_messaging_interrupt, "ax"
    // SINT_MESSAGE and SINT_EVENT: save what the System V ABI lets a call clobber (the
    // runtime is built without SSE, so no vector registers), align the stack, call Rust.
bulkhead_messaging_interrupt:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    push rbp
    mov rbp, rsp
    and rsp, -16
    cld
    call {handler}
    mov rsp, rbp
    pop rbp
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    iretq
    .popsection
    "#,
    handler = sym on_interrupt,
);

unsafe extern "C" {
    fn bulkhead_messaging_interrupt();
}

extern "C" fn on_interrupt() {
    take_from_slots();
    // EOI last (x2APIC EOI register): a new message meanwhile raises the vector again.
    wrmsr(X2APIC_EOI, 0);
}

/// Moves messages from the message slots into the inboxes while they have room (EOM
/// delivers the next waiting message into the slot at once), then wakes every waiter.
/// On the boot vCPU with interrupts off.
fn take_from_slots() {
    let mut client = synic();
    let sints = MESSAGE_SINTS.load(Ordering::Acquire);
    for sint in (0..SINT_COUNT).filter(|s| sints & 1 << s != 0) {
        let mut inbox = INBOXES[usize::from(sint)].lock();
        while !inbox.is_full() {
            let Some(message) = client.receive(sint) else { break };
            let pushed = inbox.push(message);
            debug_assert!(pushed, "room checked above");
        }
    }
    SIGNALS.fetch_add(1, Ordering::SeqCst);
    crate::sched::wake_all(&SIGNALS);
}

/// After a receiver made room in `sint`'s inbox: if the slot holds a message, the boot
/// vCPU takes it (at once when this is the boot vCPU, else through an IPI of the message
/// vector, whose handler does it).
fn refill(sint: u8) {
    if !synic().has_message(sint) {
        return;
    }
    let was = interrupts_off();
    if crate::sched::cpu_index() == 0 {
        take_from_slots();
    } else {
        // Fixed delivery, physical destination (ICR layout SDM Vol. 3A 11.12.9).
        wrmsr(X2APIC_ICR, u64::from(BOOT_APIC_ID.load(Ordering::Relaxed)) << 32 | u64::from(vectors::SINT_MESSAGE));
    }
    restore_interrupts(was);
}

/// What the std side learns about a connection (`bulkhead_connection`).
#[repr(C)]
pub struct BulkheadConnection {
    /// The TLFS connection ID.
    pub id: u32,
    /// 0 messages, 1 events.
    pub kind: u8,
    /// 1 when the partition receives on it, 0 when it sends.
    pub incoming: u8,
    /// The receiver's SINT.
    pub sint: u8,
    pub reserved: u8,
    /// The event flag (events), else 0.
    pub flag: u16,
    /// The queue depth (messages), else 0.
    pub queue_depth: u16,
}

fn connection_by_id(id: u32, kind_event: bool, incoming: bool) -> Result<Connection, i32> {
    if !READY.load(Ordering::Acquire) {
        return Err(-errno::ENOSYS);
    }
    let info = crate::boot::boot_info().ok_or(-errno::ENOSYS)?;
    let c = info.connection_list().find(|c| c.id == id).ok_or(-errno::ENOENT)?;
    let is_event = matches!(c.kind, ConnectionKind::Event { .. });
    if is_event != kind_event || c.incoming != incoming || u32::from(c.sint) >= u32::from(SINT_COUNT) {
        return Err(-errno::EINVAL);
    }
    Ok(c)
}

/// An absolute deadline in the monotonic clock `timeout_ns` from now; `u64::MAX`: none.
fn deadline(timeout_ns: u64) -> Option<u64> {
    (timeout_ns != u64::MAX).then(|| crate::clock::now_ticks().saturating_mul(100).saturating_add(timeout_ns))
}

/// Finds the connection named `name` (`len` bytes of UTF-8) and fills `out`; 0, -ENOENT
/// when the partition has none of that name, -ENOSYS without boot information or SynIC.
#[unsafe(no_mangle)]
pub extern "C" fn bulkhead_connection(name: *const u8, len: usize, out: *mut BulkheadConnection) -> i32 {
    if name.is_null() || out.is_null() {
        return -errno::EINVAL;
    }
    if !READY.load(Ordering::Acquire) {
        return -errno::ENOSYS;
    }
    // SAFETY: the caller passes `len` readable bytes.
    let name = unsafe { core::slice::from_raw_parts(name, len) };
    let Ok(name) = core::str::from_utf8(name) else { return -errno::ENOENT };
    let Some(c) = crate::boot::boot_info().and_then(|info| info.connection(name)) else { return -errno::ENOENT };
    let (kind, flag, queue_depth) = match c.kind {
        ConnectionKind::Message { queue_depth } => (0, 0, queue_depth),
        ConnectionKind::Event { flag } => (1, flag, 0),
    };
    let entry = BulkheadConnection {
        id: c.id,
        kind,
        incoming: u8::from(c.incoming),
        sint: c.sint,
        reserved: 0,
        flag,
        queue_depth,
    };
    // SAFETY: the caller passes a writable BulkheadConnection.
    unsafe { out.write(entry) };
    0
}

/// HvCallPostMessage on outgoing message connection `id`: 0, the hypervisor's status
/// (positive, e.g. 0x13 INSUFFICIENT_BUFFERS when the receiver's queue is full), or
/// -EINVAL (no such outgoing message connection, a payload over 240 bytes), -ENOSYS.
#[unsafe(no_mangle)]
pub extern "C" fn bulkhead_message_post(id: u32, message_type: u32, payload: *const u8, len: usize) -> i32 {
    if let Err(e) = connection_by_id(id, false, false) {
        return e;
    }
    if len > MAX_PAYLOAD || (payload.is_null() && len != 0) {
        return -errno::EINVAL;
    }
    // SAFETY: the caller passes `len` readable bytes.
    let payload = if len == 0 { &[][..] } else { unsafe { core::slice::from_raw_parts(payload, len) } };
    match crate::hypercall::with_client(|client| client.post_message(id, message_type, payload)) {
        None => -errno::ENOSYS,
        Some(Ok(())) => 0,
        Some(Err(PostError::Hypercall(e))) => i32::from(e.0),
        Some(Err(PostError::Setup(_))) => -errno::EINVAL,
    }
}

/// Receives the next message of incoming message connection `id`, waiting up to
/// `timeout_ns` (`u64::MAX`: for ever, 0: not at all): writes its type to `message_type`
/// and its payload to `payload` (room for 240 bytes); returns the payload's length,
/// -ETIMEDOUT, or -EINVAL / -ENOENT / -ENOSYS as `bulkhead_message_post`.
#[unsafe(no_mangle)]
pub extern "C" fn bulkhead_message_receive(id: u32, message_type: *mut u32, payload: *mut u8, timeout_ns: u64) -> i32 {
    let c = match connection_by_id(id, false, true) {
        Ok(c) => c,
        Err(e) => return e,
    };
    if message_type.is_null() || payload.is_null() {
        return -errno::EINVAL;
    }
    let deadline = deadline(timeout_ns);
    let mut timed_out = false;
    loop {
        let seen = SIGNALS.load(Ordering::SeqCst);
        let was = interrupts_off();
        let message = INBOXES[usize::from(c.sint)].lock().take(id);
        restore_interrupts(was);
        if let Some(message) = message {
            refill(c.sint);
            let bytes = message.payload();
            // SAFETY: the caller passes room for a u32 and for 240 payload bytes.
            unsafe {
                message_type.write(message.header.message_type);
                core::ptr::copy_nonoverlapping(bytes.as_ptr(), payload, bytes.len());
            }
            return bytes.len() as i32;
        }
        if timed_out {
            return -errno::ETIMEDOUT;
        }
        // A message left in the slot while the inbox was full (other connections'
        // messages filled it, and have been taken since).
        refill(c.sint);
        if crate::sched::wait_on(&SIGNALS, seen, deadline) == -errno::ETIMEDOUT {
            timed_out = true; // one last look
        }
    }
}

/// HvCallSignalEvent on outgoing event connection `id` (its flag): 0, the hypervisor's
/// status (positive), or -EINVAL / -ENOENT / -ENOSYS.
#[unsafe(no_mangle)]
pub extern "C" fn bulkhead_event_signal(id: u32) -> i32 {
    let c = match connection_by_id(id, true, false) {
        Ok(c) => c,
        Err(e) => return e,
    };
    if !matches!(c.kind, ConnectionKind::Event { .. }) {
        return -errno::EINVAL;
    }
    // The flag number is relative to the connection's own flag (TLFS HvCallSignalEvent;
    // Bulkhead connections have one flag): 0.
    match crate::hypercall::with_client(|client| client.signal_event(id, 0)) {
        None => -errno::ENOSYS,
        Some(Ok(())) => 0,
        Some(Err(e)) => i32::from(e.0),
    }
}

/// Waits up to `timeout_ns` (`u64::MAX`: for ever, 0: not at all) for incoming event
/// connection `id`'s flag and takes it (clears it): 0, -ETIMEDOUT, or -EINVAL / -ENOENT /
/// -ENOSYS. Signals that arrive while the flag is set coalesce (TLFS).
#[unsafe(no_mangle)]
pub extern "C" fn bulkhead_event_wait(id: u32, timeout_ns: u64) -> i32 {
    let c = match connection_by_id(id, true, true) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let ConnectionKind::Event { flag } = c.kind else { return -errno::EINVAL };
    let deadline = deadline(timeout_ns);
    let mut timed_out = false;
    loop {
        let seen = SIGNALS.load(Ordering::SeqCst);
        if synic().take_event(c.sint, flag) {
            return 0;
        }
        if timed_out {
            return -errno::ETIMEDOUT;
        }
        if crate::sched::wait_on(&SIGNALS, seen, deadline) == -errno::ETIMEDOUT {
            timed_out = true;
        }
    }
}
