//! Message rings: how a `message` connection with a Xen end carries its messages
//! (docs/xen.md, "Message rings"; layout `bulkhead_abi::xen::ring`). The ring is the
//! connection's `ring` shared region, which every Xen end maps; slots hold messages laid
//! out as in a SynIC message slot (HV_MESSAGE).
//!
//! * Hyper-V sender → Xen receiver: HvCallPostMessage writes the next slot, publishes
//!   `produced`, and raises the port the receiver bound to the connection. The ring is the
//!   queue: `capacity` (queue_depth + 1) messages may be outstanding, beyond that the
//!   sender gets INSUFFICIENT_BUFFERS and retries, as for a full SynIC queue.
//! * Xen sender → Hyper-V receiver: the guest writes slots and publishes `produced`, then
//!   sends on its port; the hypervisor posts each message, oldest first, into the
//!   receiver's SynIC (HvCallPostMessage's checks and queue) and publishes `consumed`
//!   after each one taken. A full receiver queue stops it: -EAGAIN, and the rest stays in
//!   the ring for the next send. Nothing is dropped; order is kept.
//! * Xen → Xen: both guests see the ring and keep the counters; a send raises the other's
//!   port.
//!
//! The hypervisor's own counter (`produced` when it writes, `consumed` when it reads) is
//! kept here, not read back from the page, so a guest scribbling on the header can only
//! confuse its own connection. Each ring has a lock, taken by both directions' paths and by
//! a restart of a Xen end (which starts the ring empty).

use super::speaks_xen;
use crate::hyperv::synic::{self, PostedMessage};
use crate::partition::{self, Partition};
use bulkhead_abi::hyperv::message::{MAX_PAYLOAD, MESSAGE_TYPE_NONE};
use bulkhead_abi::hyperv::{HvStatus, MessageHeader};
use bulkhead_abi::xen::{errno, ring};
use bulkhead_board::tables::{Connection, ConnectionKind, MAX_CONNECTIONS};
use core::sync::atomic::{AtomicU32, Ordering};
use spin::mutex::TicketMutex;

/// By connection index: the hypervisor's counter for its ring.
static COUNTERS: [TicketMutex<u32>; MAX_CONNECTIONS] = [const { TicketMutex::new(0) }; MAX_CONNECTIONS];

fn field(page: u64, offset: usize) -> &'static AtomicU32 {
    // SAFETY: an aligned u32 of the ring's header, in the connection's ring page (a shared
    // region the build placed in RAM and the hypervisor identity-maps).
    unsafe { &*((page + offset as u64) as *const AtomicU32) }
}

fn slot(page: u64, n: u32) -> u64 {
    page + (ring::SLOTS_OFFSET + (n % ring::SLOTS) as usize * ring::SLOT_BYTES) as u64
}

/// Messages that may be outstanding: the receiver's slot plus its queue, as for a SynIC
/// receiver, at most the ring's slots (the build checks `queue_depth` <= 14).
fn capacity(connection: &Connection) -> u32 {
    match connection.kind {
        ConnectionKind::Message { queue_depth } => queue_depth.saturating_add(1).min(ring::SLOTS),
        ConnectionKind::Event { .. } => 0,
    }
}

/// Starts connection `index`'s ring empty (a Xen end (re)starts).
pub fn reset(index: usize, connection: &Connection) {
    let Some(page) = connection.ring.map(|r| r.base) else { return };
    let mut counter = COUNTERS[index].lock();
    *counter = 0;
    field(page, ring::OFF_MAGIC).store(0, Ordering::Release);
    field(page, ring::OFF_PRODUCED).store(0, Ordering::Relaxed);
    field(page, ring::OFF_CONSUMED).store(0, Ordering::Relaxed);
    field(page, ring::OFF_VERSION).store(ring::VERSION, Ordering::Relaxed);
    field(page, ring::OFF_SLOTS).store(ring::SLOTS, Ordering::Relaxed);
    field(page, ring::OFF_CAPACITY).store(capacity(connection), Ordering::Relaxed);
    field(page, ring::OFF_MAGIC).store(ring::MAGIC, Ordering::Release);
}

/// HvCallPostMessage on connection `index` whose receiver speaks Xen.
pub fn post_from_hyperv(index: usize, connection: &Connection, message: &PostedMessage) -> HvStatus {
    let receiver = partition::get(connection.to);
    let Some(page) = connection.ring.map(|r| r.base) else { return HvStatus::InvalidSynicState };
    let mut produced = COUNTERS[index].lock();
    if super::state(receiver).lock().ports.bound_to(index).is_none() {
        return HvStatus::InvalidSynicState;
    }
    let consumed = field(page, ring::OFF_CONSUMED).load(Ordering::Acquire);
    if produced.wrapping_sub(consumed) >= capacity(connection) {
        return HvStatus::InsufficientBuffers;
    }
    let at = slot(page, *produced);
    // SAFETY: a 256-byte slot of the ring page; the receiver reads it only after `produced`
    // says it is written (the store below, Release).
    unsafe {
        core::ptr::copy_nonoverlapping(message.message_type().to_le_bytes().as_ptr(), at as *mut u8, 4);
        message.copy_after_type(at as *mut u8);
    }
    *produced = produced.wrapping_add(1);
    field(page, ring::OFF_PRODUCED).store(*produced, Ordering::Release);
    drop(produced);
    receiver.health.messages_received.fetch_add(1, Ordering::Relaxed);
    // Unbound meanwhile (closed or restarting): the message waits in the ring.
    let _ = super::event_channel::raise_connection(receiver, index);
    HvStatus::Success
}

/// EVTCHNOP_send by the Xen sender of message connection `index` to `receiver`.
pub fn send(sender: &Partition, index: usize, connection: &Connection, receiver: &Partition) -> Result<(), i64> {
    let Some(page) = connection.ring.map(|r| r.base) else { return Err(errno::EINVAL) };
    if speaks_xen(receiver) {
        return super::event_channel::raise_connection(receiver, index).map_err(|()| errno::ENOTCONN);
    }
    let h = &sender.health;
    let mut consumed = COUNTERS[index].lock();
    let produced = field(page, ring::OFF_PRODUCED).load(Ordering::Acquire);
    if produced.wrapping_sub(*consumed) > ring::SLOTS {
        // Not a count this ring can hold: the guest's header is damaged.
        h.messages_refused.fetch_add(1, Ordering::Relaxed);
        return Err(errno::EINVAL);
    }
    while *consumed != produced {
        let at = slot(page, *consumed);
        let mut bytes = [0u8; MessageHeader::SIZE];
        // SAFETY: the slot's 16-byte header in the ring page (the guest may change it
        // meanwhile, which only changes what it sends: the checks run on this copy).
        unsafe { core::ptr::copy_nonoverlapping(at as *const u8, bytes.as_mut_ptr(), bytes.len()) };
        let message_type = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let size = bytes[4];
        if message_type == MESSAGE_TYPE_NONE || message_type & 0x8000_0000 != 0 || usize::from(size) > MAX_PAYLOAD {
            h.messages_refused.fetch_add(1, Ordering::Relaxed);
            return Err(errno::EINVAL);
        }
        let header = MessageHeader {
            message_type,
            payload_size: size,
            message_flags: 0,
            reserved: 0,
            origination_id: u64::from(connection.id),
        };
        // SAFETY: the payload follows the header in the same 256-byte slot of the ring
        // page, which the sender maps; `size` is at most 240.
        let message = unsafe { PostedMessage::new(header, at + MessageHeader::SIZE as u64, usize::from(size)) };
        match synic::post(index, connection, &message) {
            HvStatus::Success => {
                *consumed = consumed.wrapping_add(1);
                field(page, ring::OFF_CONSUMED).store(*consumed, Ordering::Release);
                h.messages_sent.fetch_add(1, Ordering::Relaxed);
            }
            status => {
                h.messages_refused.fetch_add(1, Ordering::Relaxed);
                return Err(match status {
                    HvStatus::InsufficientBuffers => errno::EAGAIN,
                    HvStatus::InvalidSynicState => errno::ENOTCONN,
                    _ => errno::EINVAL,
                });
            }
        }
    }
    Ok(())
}
