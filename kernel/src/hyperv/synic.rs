//! SynIC delivery (TLFS "Inter-Partition Communication"): messages into the receiver's
//! message page (SIMP) slot of the connection's SINT, event flags into its event-flag page
//! (SIEFP), and the SINT's vector as a real fixed IPI to the receiver's core, so receiving
//! costs the receiver no VM exit (its local APIC is its own; only EOM exits).
//!
//! One message slot per SINT. When the slot is busy, or older messages for that SINT are
//! still queued, a message waits in its connection's queue (up to the configured depth;
//! beyond it the sender gets INSUFFICIENT_BUFFERS) and the slot's MessagePending flag is
//! set; the receiver's EOM write delivers the oldest waiting message. The pending flag is
//! set *before* the slot is checked again, which closes the race with a receiver that
//! frees the slot and then looks at the flag (it sees the flag and writes EOM, or the
//! sender sees the free slot and delivers). Messages on one connection arrive in order;
//! across connections to one SINT, oldest first.
//!
//! Locking: each receiver SINT (receiving partition, SINT) has its own queue lock, taken
//! by every post to that SINT, by the receiver's EOM and by its restart (a signal takes no
//! lock: it sets one atomic bit, and a restart waits for the signals in flight instead). So a
//! sender only ever waits for traffic to the same receiver SINT (the same queue), never
//! for an unrelated pair, and a 240-byte copy is never made under a lock another pair
//! needs. Each connection's ring has a lock of its own too, but it is only ever taken
//! with its receiver SINT's lock held (never contended; it only lets the rings be plain
//! statics without `unsafe`). The locks are `spin`'s ticket mutex: first come, first
//! served, so a sender in a tight loop cannot starve another sender to the same SINT.
//! The hypervisor runs with interrupts off and holds a lock for at most one message
//! copy, so waiting is short.

use super::{this_vp, vp_of_core};
use crate::config::{CONNECTIONS, PARTITIONS, QUEUE_DEPTH};
use crate::partition::Partition;
use bulkhead_abi::hyperv::MessageHeader;
use bulkhead_abi::hyperv::message::{MAX_PAYLOAD, MESSAGE_FLAG_PENDING, MESSAGE_SIZE, MESSAGE_TYPE_NONE};
use bulkhead_abi::hyperv::msr::SINT_COUNT;
use bulkhead_abi::hyperv::{EventFlagsPage, HvStatus, MessagePage, Sint};
use bulkhead_board::tables::Connection;
use bulkhead_virt::in_flight::InFlight;
use core::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};
use spin::mutex::TicketMutex;

/// Slots per ring: the system's deepest message queue (`config::QUEUE_DEPTH`).
const DEPTH: usize = QUEUE_DEPTH;
const SINTS: usize = SINT_COUNT as usize;

/// The messages waiting on one connection, oldest first.
struct Ring {
    head: usize,
    len: usize,
    /// Arrival order across the connections to one receiver SINT (oldest delivered first).
    stamps: [u64; DEPTH],
    messages: [[u8; MESSAGE_SIZE]; DEPTH],
}

/// One receiver SINT's queue state (its messages wait in its connections' rings).
struct SintQueue {
    next_stamp: u64,
    /// Messages waiting for this SINT (the sum of its connections' ring lengths), so "does
    /// anything wait" is one load on the post and EOM paths.
    waiting: u16,
}

// Every queue of one receiver's SINT full at once still fits a `waiting` count.
const _: () = assert!(CONNECTIONS * DEPTH <= u16::MAX as usize);

/// Indexed by receiving partition, then SINT.
static SINT_QUEUES: [[TicketMutex<SintQueue>; SINTS]; PARTITIONS] =
    [const { [const { TicketMutex::new(SintQueue { next_stamp: 0, waiting: 0 }) }; SINTS] }; PARTITIONS];

/// Indexed by connection; a ring is locked only under its receiver SINT's lock.
static RINGS: [TicketMutex<Ring>; CONNECTIONS] =
    [const { TicketMutex::new(Ring { head: 0, len: 0, stamps: [0; DEPTH], messages: [[0; MESSAGE_SIZE]; DEPTH] }) };
        CONNECTIONS];

/// A copy of each receiver SINT's `waiting` count, written under its lock, read without
/// it by EOM to skip the SINTs nothing waits for. A poster raises it before it sets the
/// slot's MessagePending flag, and a receiver writes EOM only after it saw that flag, so
/// an EOM that matters never reads 0.
static WAITING_HINT: [[AtomicU16; SINTS]; PARTITIONS] = [const { [const { AtomicU16::new(0) }; SINTS] }; PARTITIONS];

fn sint_queue(receiver: &Partition, sint: u8) -> &'static TicketMutex<SintQueue> {
    &SINT_QUEUES[receiver.config().id.0 as usize][sint as usize]
}

fn waiting_hint(receiver: &Partition, sint: u8) -> &'static AtomicU16 {
    &WAITING_HINT[receiver.config().id.0 as usize][sint as usize]
}

/// Where a receiver's SINT delivers: its VP 0's registers and that SINT's register.
struct Target {
    vp: &'static super::VpRegisters,
    sint: u8,
    sint_register: Sint,
}

impl Target {
    /// `None` when the receiver's first core is not online (no SynIC to deliver to).
    #[inline(always)]
    fn of(receiver: &Partition, sint: u8) -> Option<Target> {
        let vp = vp_of_core(*receiver.config().cores.first()?)?;
        let sint_register = Sint::decode(vp.sints[sint as usize].load(Ordering::Acquire));
        Some(Target { vp, sint, sint_register })
    }

    /// The host address of the receiver's message page, if its SynIC and SIMP are enabled.
    fn message_page(&self) -> Option<u64> {
        Some(self.vp.message_page.load(Ordering::Acquire)).filter(|&page| page != 0)
    }

    /// The host address of the receiver's event-flag page, if its SynIC and SIEFP are
    /// enabled.
    fn event_flags_page(&self) -> Option<u64> {
        // SeqCst: ordered after the signal's in-flight count, against `reset` (see `signal`).
        Some(self.vp.event_flags_page.load(Ordering::SeqCst)).filter(|&page| page != 0)
    }
}

/// The SINT's interrupt, as a fixed IPI to the receiver's core (none while masked: the
/// TLFS drops it; messages stay in their slot or queue).
fn interrupt(target: &Target) {
    if !target.sint_register.is_masked() {
        send_sint(target);
    }
}

/// The unmasked SINT's fixed IPI to the receiver's core, if the core has started.
#[inline(always)]
fn send_sint(target: &Target) {
    let apic_id = target.vp.apic_id.load(Ordering::Relaxed);
    if apic_id != u32::MAX {
        crate::cpu::apic::send_fixed_ipi(apic_id, target.sint_register.vector());
    }
}

fn slot_type(page: u64, sint: u8) -> &'static AtomicU32 {
    // SAFETY: `page` is a message page in the receiver's own RAM (identity-mapped, checked
    // by `private_memory`); each slot starts 256-byte aligned with its u32 type.
    unsafe { &*((page + MessagePage::slot_offset(sint) as u64) as *const AtomicU32) }
}

fn slot_flags(page: u64, sint: u8) -> &'static AtomicU8 {
    // SAFETY: as in `slot_type`; MessageFlags is byte 5 of the slot.
    unsafe { &*((page + MessagePage::slot_offset(sint) as u64 + 5) as *const AtomicU8) }
}

/// A message HvCallPostMessage delivers: its header (HV_MESSAGE_HEADER) and its payload
/// where the sender's input block holds it, so the payload is copied once, straight into
/// the receiver's slot (or, when the slot is busy, into the connection's queue).
pub struct PostedMessage {
    header: [u8; MessageHeader::SIZE],
    /// Host address of `len` (at most 240) payload bytes in the sender's own RAM.
    payload: u64,
    len: usize,
}

impl PostedMessage {
    /// # Safety
    /// `payload` is the host address of `len` bytes in the sender's own RAM
    /// (identity-mapped); `len` is capped at the 240 a message carries.
    pub unsafe fn new(header: MessageHeader, payload: u64, len: usize) -> Self {
        Self { header: header.to_bytes(), payload, len: len.min(MAX_PAYLOAD) }
    }

    /// Writes bytes 4.. of the message (the header after its type, then the payload) to
    /// `slot`.
    ///
    /// # Safety
    /// `slot` is valid for `16 + len` bytes of writes (a slot or a queue entry).
    unsafe fn copy_after_type(&self, slot: *mut u8) {
        // SAFETY: per the caller for `slot`; the payload lies in the sender's own RAM
        // (checked by the hypercall); its other vCPUs may change it meanwhile, which only
        // changes what it sends.
        unsafe {
            core::ptr::copy_nonoverlapping(self.header[4..].as_ptr(), slot.add(4), MessageHeader::SIZE - 4);
            core::ptr::copy_nonoverlapping(self.payload as *const u8, slot.add(MessageHeader::SIZE), self.len);
        }
    }

    /// The whole message, copied (for a ring, which takes a `Message`).
    pub fn to_message(&self) -> bulkhead_abi::hyperv::Message {
        let mut message = bulkhead_abi::hyperv::Message::EMPTY;
        message.header = MessageHeader::from_bytes(&self.header);
        // SAFETY: `len` (at most 240) bytes in the sender's own RAM (see `copy_after_type`)
        // into the 240-byte payload.
        unsafe { core::ptr::copy_nonoverlapping(self.payload as *const u8, message.payload.as_mut_ptr(), self.len) };
        message
    }

    pub fn message_type(&self) -> u32 {
        u32::from_le_bytes([self.header[0], self.header[1], self.header[2], self.header[3]])
    }
}

/// Fills the free slot: `fill` writes everything after the type, then the flags and last
/// the type, so the receiver never sees a half-written message. (Bytes past the payload
/// keep what they held: the receiver reads `payload_size` bytes.)
fn write_slot(page: u64, sint: u8, message_type: u32, pending: bool, fill: impl FnOnce(*mut u8)) {
    let slot = page + MessagePage::slot_offset(sint) as u64;
    fill(slot as *mut u8);
    slot_flags(page, sint).store(if pending { MESSAGE_FLAG_PENDING } else { 0 }, Ordering::Relaxed);
    slot_type(page, sint).store(message_type, Ordering::Release);
}

/// Connections (by index) that deliver to `receiver`'s `sint`.
fn connections_to(receiver: &Partition, sint: u8) -> impl Iterator<Item = (usize, &'static Connection)> {
    let id = receiver.config().id;
    crate::config::SYSTEM.connections.iter().enumerate().filter(move |(_, c)| c.to == id && c.sint == sint)
}

/// Moves the oldest waiting message for the target's SINT into its slot if the slot is
/// free; keeps MessagePending set while more wait. Called with the SINT's queue lock held
/// (`queue`). Returns whether one was delivered.
fn deliver_oldest(queue: &mut SintQueue, receiver: &Partition, target: &Target, page: u64) -> bool {
    if queue.waiting == 0 || slot_type(page, target.sint).load(Ordering::Acquire) != MESSAGE_TYPE_NONE {
        return false;
    }
    // The connection whose oldest message is the oldest of all (each ring lock is free:
    // rings of this SINT are only locked under `queue`'s lock, which this caller holds).
    let oldest = connections_to(receiver, target.sint)
        .filter_map(|(i, _)| {
            let ring = RINGS[i].lock();
            (ring.len > 0).then(|| (i, ring.stamps[ring.head]))
        })
        .min_by_key(|&(_, stamp)| stamp);
    let Some((index, _)) = oldest else { return false };
    let mut ring = RINGS[index].lock();
    let head = ring.head;
    ring.head = (ring.head + 1) % DEPTH;
    ring.len -= 1;
    queue.waiting -= 1;
    waiting_hint(receiver, target.sint).store(queue.waiting, Ordering::SeqCst);
    let more = queue.waiting > 0;
    let message = &ring.messages[head];
    let len = (MessageHeader::SIZE + usize::from(message[4])).min(MESSAGE_SIZE);
    let message_type = u32::from_le_bytes([message[0], message[1], message[2], message[3]]);
    write_slot(page, target.sint, message_type, more, |slot| {
        // SAFETY: bytes 4..len of the slot, in the receiver's own RAM (see `slot_type`);
        // the receiver reads none of them before the type, which is stored after them.
        unsafe { core::ptr::copy_nonoverlapping(message[4..].as_ptr(), slot.add(4), len - 4) }
    });
    drop(ring);
    interrupt(target);
    true
}

/// HvCallPostMessage's delivery, the connection already checked: the message goes to the
/// receiver's slot, or waits in the connection's queue.
#[inline(always)]
pub fn post(
    receiver: &Partition,
    connection_index: usize,
    connection: &Connection,
    message: &PostedMessage,
) -> HvStatus {
    let depth = match connection.kind {
        bulkhead_board::tables::ConnectionKind::Message { queue_depth } => (queue_depth as usize).min(DEPTH),
        bulkhead_board::tables::ConnectionKind::Event { .. } => return HvStatus::InvalidPortId,
    };
    let mut queue = sint_queue(receiver, connection.sint).lock();
    // The receiver's SynIC is looked at under the lock: a restart resets it and drains
    // the queues under the same lock, so a message is either drained or refused.
    let Some(target) = Target::of(receiver, connection.sint) else { return HvStatus::InvalidSynicState };
    let Some(page) = target.message_page() else { return HvStatus::InvalidSynicState };
    if queue.waiting == 0 && slot_type(page, connection.sint).load(Ordering::Acquire) == MESSAGE_TYPE_NONE {
        // SAFETY: the slot is 256 bytes, `16 + len` at most that (len <= 240).
        write_slot(page, connection.sint, message.message_type(), false, |slot| unsafe {
            message.copy_after_type(slot)
        });
        interrupt(&target);
        receiver.health.messages_received.fetch_add(1, Ordering::Relaxed);
        return HvStatus::Success;
    }
    let mut ring = RINGS[connection_index].lock();
    if ring.len >= depth {
        return HvStatus::InsufficientBuffers;
    }
    let tail = (ring.head + ring.len) % DEPTH;
    let entry = &mut ring.messages[tail];
    entry[..4].copy_from_slice(&message.header[..4]);
    // SAFETY: a 256-byte queue entry; `16 + len` bytes at most that.
    unsafe { message.copy_after_type(entry.as_mut_ptr()) };
    ring.stamps[tail] = queue.next_stamp;
    ring.len += 1;
    drop(ring);
    queue.next_stamp += 1;
    queue.waiting += 1;
    waiting_hint(receiver, connection.sint).store(queue.waiting, Ordering::SeqCst);
    // Flag first, then look at the slot again (see the module comment).
    slot_flags(page, connection.sint).fetch_or(MESSAGE_FLAG_PENDING, Ordering::SeqCst);
    deliver_oldest(&mut queue, receiver, &target, page);
    receiver.health.messages_received.fetch_add(1, Ordering::Relaxed);
    HvStatus::Success
}

/// The receiver wrote EOM on this CPU: deliver what waits for its free slots (only its VP
/// 0 receives messages).
pub fn end_of_message(receiver: &Partition) {
    let Some(vp0) = receiver.config().cores.first().and_then(|&core| vp_of_core(core)) else { return };
    if !core::ptr::eq(vp0, this_vp()) {
        return;
    }
    for sint in 0..SINT_COUNT {
        if waiting_hint(receiver, sint).load(Ordering::SeqCst) == 0 {
            continue;
        }
        let mut queue = sint_queue(receiver, sint).lock();
        if queue.waiting == 0 {
            continue;
        }
        // The message page is the VP's, the same for every SINT; read under the lock, as
        // a restart clears it under the same lock.
        let Some(target) = Target::of(receiver, sint) else { return };
        let Some(page) = target.message_page() else { return };
        deliver_oldest(&mut queue, receiver, &target, page);
    }
}

/// Signals under way to each partition (indexed by receiving partition): how a restart
/// waits for them without a lock on the event path ([`signal`], [`reset`];
/// `bulkhead_virt::in_flight` says why it holds, and tests it).
static SIGNALS_IN_FLIGHT: [InFlight; PARTITIONS] = [const { InFlight::new() }; PARTITIONS];

/// HvCallSignalEvent's delivery to `receiver` (the connection's): sets the connection's
/// flag in the receiver's event-flag page atomically; only a flag that was clear raises
/// the SINT (signals coalesce).
///
/// No lock: a flag is one atomic bit, so signals need no order among themselves. Against
/// a restart of the receiver, the signal counts itself in flight before it reads where
/// the flags are, and [`reset`] disables the SynIC and then waits until no signal is in
/// flight: a signal either lands before the reset returns (in memory the restart then
/// zeroes) or sees the SynIC disabled, never in the reloaded memory.
#[inline(always)]
pub fn signal(receiver: &Partition, connection: &Connection, flag: u16) -> HvStatus {
    SIGNALS_IN_FLIGHT[receiver.config().id.0 as usize].run(|| deliver_signal(receiver, connection, flag))
}

#[inline(always)]
fn deliver_signal(receiver: &Partition, connection: &Connection, flag: u16) -> HvStatus {
    let Some(target) = Target::of(receiver, connection.sint) else { return HvStatus::InvalidSynicState };
    let Some(page) = target.event_flags_page() else { return HvStatus::InvalidSynicState };
    if target.sint_register.is_masked() {
        return HvStatus::InvalidSynicState;
    }
    if flag >= bulkhead_abi::hyperv::message::EVENT_FLAGS_PER_SLOT {
        return HvStatus::InvalidParameter;
    }
    // The flag as a bit of a 64-bit word of the SINT's slot (the slot is 256-byte aligned;
    // the bits are numbered as `EventFlagsPage::bit` and x86 BTS number them), so setting
    // it and learning whether it was clear is one locked BTS.
    let word = page + (EventFlagsPage::slot_offset(connection.sint) + usize::from(flag / 64) * 8) as u64;
    let mask = 1u64 << (flag % 64);
    // SAFETY: an aligned word of the receiver's event-flag page, in its own RAM
    // (`private_memory`).
    let flags = unsafe { &*(word as *const AtomicU64) };
    // Masked was refused above.
    if flags.fetch_or(mask, Ordering::SeqCst) & mask == 0 {
        send_sint(&target);
    }
    receiver.health.events_received.fetch_add(1, Ordering::Relaxed);
    HvStatus::Success
}

/// A partition (re)starts: its VPs' SynIC registers go back to their reset values
/// (`reset_registers`) and the messages waiting for it are dropped, with every one of its
/// SINT queue locks held (taken in SINT order, the only place more than one is held), so
/// a concurrent post is either done before (and drained here, or lands in memory the
/// restart zeroes) or refused afterwards with INVALID_SYNIC_STATE (until the partition
/// enables its SynIC again); a concurrent signal the same, by waiting here until none is
/// in flight (see [`signal`]). Messages it queued for others stay queued.
pub fn reset(receiver: &Partition, reset_registers: impl FnOnce()) {
    let id = receiver.config().id;
    let mut queues: [_; SINTS] = core::array::from_fn(|sint| SINT_QUEUES[id.0 as usize][sint].lock());
    reset_registers();
    // The pages are 0 now: a signal that counts itself from here on refuses, one that
    // counted itself before is waited for.
    SIGNALS_IN_FLIGHT[id.0 as usize].wait_idle();
    for (i, _) in crate::config::SYSTEM.connections.iter().enumerate().filter(|(_, c)| c.to == id) {
        let mut ring = RINGS[i].lock();
        ring.len = 0;
        ring.head = 0;
    }
    for (queue, hint) in queues.iter_mut().zip(&WAITING_HINT[id.0 as usize]) {
        queue.waiting = 0;
        hint.store(0, Ordering::SeqCst);
    }
}
