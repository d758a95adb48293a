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
//! The ring's protocol is `bulkhead_abi::xen_ring::Ring`, the same code the guests use; it
//! checks the counters against the capacity before it touches a slot, so a guest
//! scribbling on the header can only confuse its own connection (its sender or receiver is
//! refused). Each ring has a lock here, taken by both directions' paths and by a restart of
//! a Xen end, so the hypervisor is one producer or one consumer however many vCPUs call.

use super::speaks_xen;
use crate::config::CONNECTIONS;
use crate::hyperv::synic::{self, PostedMessage};
use crate::partition::{self, Partition};
use bulkhead_abi::hyperv::message::{MAX_PAYLOAD, MESSAGE_TYPE_NONE};
use bulkhead_abi::hyperv::{HvStatus, MessageHeader};
use bulkhead_abi::xen::{errno, ring};
use bulkhead_abi::xen_ring::{Ring, RingError};
use bulkhead_board::tables::{Connection, ConnectionKind};
use core::sync::atomic::Ordering;
use spin::mutex::TicketMutex;

/// By connection index: held while the hypervisor produces into, consumes from or resets
/// the connection's ring.
static LOCKS: [TicketMutex<()>; CONNECTIONS] = [const { TicketMutex::new(()) }; CONNECTIONS];

/// The ring of `connection`, if it has one.
fn ring_of(connection: &Connection) -> Option<Ring> {
    // SAFETY: the build placed the ring page in RAM as a shared region (4 KiB, page
    // aligned), which the hypervisor identity-maps for its whole run; guests touch it only
    // through the same protocol (atomic counters, volatile slots).
    connection.ring.map(|r| unsafe { Ring::new(r.base as *mut u8) })
}

/// Messages that may be outstanding: the receiver's slot plus its queue, as for a SynIC
/// receiver, at most the ring's slots (the build checks `queue_depth` <= 14).
fn capacity(connection: &Connection) -> u32 {
    match connection.kind {
        ConnectionKind::Message { queue_depth } => queue_depth.saturating_add(1).min(ring::SLOTS),
        ConnectionKind::Event { .. } => 0,
    }
}

/// Starts connection `index`'s ring empty: at boot, before any partition runs, and when a
/// Xen end restarts.
pub fn reset(index: usize, connection: &Connection) {
    let Some(ring) = ring_of(connection) else { return };
    let _lock = LOCKS[index].lock();
    ring.init(capacity(connection));
}

/// Every ring starts empty, once, before any partition runs (a restart resets its own).
pub fn init_all() {
    for (index, connection) in crate::config::SYSTEM.connections.iter().enumerate() {
        reset(index, connection);
    }
}

/// HvCallPostMessage on connection `index` whose receiver speaks Xen.
pub fn post_from_hyperv(index: usize, connection: &Connection, message: &PostedMessage) -> HvStatus {
    let receiver = partition::get(connection.to);
    let Some(ring) = ring_of(connection) else { return HvStatus::InvalidSynicState };
    // Lock order: a ring, then its receiver's event state (never the other way round).
    let lock = LOCKS[index].lock();
    let state = super::state(receiver).lock();
    if state.ports.bound_to(index).is_none() {
        return HvStatus::InvalidSynicState;
    }
    match ring.push(&message.to_message()) {
        Ok(_) => {}
        Err(RingError::Full) => return HvStatus::InsufficientBuffers,
        // The receiver damaged the header: it is not in a state to receive.
        Err(_) => return HvStatus::InvalidSynicState,
    }
    let upcall = super::event_channel::raise_bound(receiver, &state, index);
    drop(state);
    drop(lock);
    if let Ok(Some(upcall)) = upcall {
        upcall.send();
    }
    receiver.health.messages_received.fetch_add(1, Ordering::Relaxed);
    HvStatus::Success
}

/// EVTCHNOP_send by the Xen sender of message connection `index` to `receiver`.
pub fn send(sender: &Partition, index: usize, connection: &Connection, receiver: &Partition) -> Result<(), i64> {
    let Some(ring) = ring_of(connection) else { return Err(errno::EINVAL) };
    if speaks_xen(receiver) {
        return super::event_channel::raise_connection(receiver, index).map_err(|()| errno::ENOTCONN);
    }
    let h = &sender.health;
    let refused = |e: i64| {
        h.messages_refused.fetch_add(1, Ordering::Relaxed);
        Err(e)
    };
    let _lock = LOCKS[index].lock();
    loop {
        let message = match ring.peek() {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(()),
            // The sender's counters are not a ring's: its own header is damaged.
            Err(_) => return refused(errno::EINVAL),
        };
        let (message_type, size) = (message.header.message_type, message.header.payload_size);
        if message_type == MESSAGE_TYPE_NONE || message_type & 0x8000_0000 != 0 || usize::from(size) > MAX_PAYLOAD {
            return refused(errno::EINVAL);
        }
        let header = MessageHeader {
            message_type,
            payload_size: size,
            message_flags: 0,
            reserved: 0,
            origination_id: u64::from(connection.id),
        };
        // SAFETY: the payload is this function's copy of the slot (`message`, alive until
        // the post returns); `size` is at most 240.
        let posted = unsafe { PostedMessage::new(header, message.payload.as_ptr() as u64, usize::from(size)) };
        match synic::post(crate::partition::get(connection.to), index, connection, &posted) {
            HvStatus::Success => {
                let _ = ring.discard();
                h.messages_sent.fetch_add(1, Ordering::Relaxed);
            }
            HvStatus::InsufficientBuffers => return refused(errno::EAGAIN),
            HvStatus::InvalidSynicState => return refused(errno::ENOTCONN),
            _ => return refused(errno::EINVAL),
        }
    }
}
