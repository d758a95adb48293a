//! Event channels (`event_channel_op`, Xen `event_channel.h`), 2-level ABI only, and the
//! adapter between them and Bulkhead's connections (docs/xen.md, "Event channels").
//!
//! A partition's ports are 1..[`PORTS`]; each is free, unbound (`EVTCHNOP_alloc_unbound`
//! for the partition itself), a loopback pair inside the partition, an IPI or a VIRQ of
//! one of its vCPUs, or bound to a configured connection. Connections are static, so an
//! interdomain channel is not set up between two guests as on Xen: each end binds the
//! connection by itself with `EVTCHNOP_bind_interdomain {remote_dom = the peer partition's
//! id, remote_port = the connection's id}` and gets a local port (the lowest free one).
//! Sending on it delivers over the connection: to a Hyper-V receiver as HvCallSignalEvent
//! would (its SIEF flag and SINT), to a Xen receiver by raising the port it bound; and
//! HvCallSignalEvent from a Hyper-V sender raises the Xen receiver's port. A receiver that
//! has not bound the connection is not ready: the sender is told so (-ENOTCONN, or
//! INVALID_SYNIC_STATE for a Hyper-V sender, as for a receiver whose SynIC is off).

use super::shared_info;
use super::{XenState, is_self, speaks_xen};
use crate::config::CONNECTIONS;
use crate::partition::{self, Partition};
use bulkhead_abi::hyperv::HvStatus;
use bulkhead_abi::xen::{errno, evtchn};
use bulkhead_board::tables::{Connection, ConnectionKind};
use core::sync::atomic::Ordering;

pub const PORTS: u32 = evtchn::PORTS;

/// What a port is bound to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Binding {
    Free,
    /// `EVTCHNOP_alloc_unbound` with the partition itself as the remote: waits for its own
    /// `EVTCHNOP_bind_interdomain`.
    Unbound,
    /// One end of a channel inside the partition; `peer` is the other end's port.
    Loopback {
        peer: u16,
    },
    /// One end of configured connection `index` (into the system's connection table).
    Connection {
        index: u16,
    },
    /// An IPI of the port's vCPU (`EVTCHNOP_bind_ipi`).
    Ipi,
    /// A virtual IRQ of the port's vCPU (`EVTCHNOP_bind_virq`); none of them ever fires.
    Virq {
        virq: u8,
    },
}

#[derive(Clone, Copy)]
struct Port {
    binding: Binding,
    /// The vCPU its events are announced to (`notify_vcpu_id` on Xen).
    vcpu: u8,
}

/// A Xen partition's ports.
pub struct Ports {
    table: [Port; PORTS as usize],
    /// By connection index: the local port bound to it, 0 for none.
    by_connection: [u16; CONNECTIONS],
}

impl Ports {
    pub const fn new() -> Self {
        Self { table: [Port { binding: Binding::Free, vcpu: 0 }; PORTS as usize], by_connection: [0; CONNECTIONS] }
    }

    /// The lowest free port, bound to `binding` for `vcpu`. A port needs shared_info, where
    /// it is raised: before the guest maps it, binding is refused (-EINVAL).
    fn allocate(state: &mut XenState, binding: Binding, vcpu: u8) -> Result<u32, i64> {
        if state.shared_info == 0 {
            return Err(errno::EINVAL);
        }
        let port = (1..PORTS).find(|&p| state.ports.table[p as usize].binding == Binding::Free).ok_or(errno::ENOSPC)?;
        state.ports.table[port as usize] = Port { binding, vcpu };
        shared_info::clear_pending(state, port);
        Ok(port)
    }

    /// Port `port`, if it is below [`PORTS`] (port 0 and free ports are returned, free).
    fn get(&self, port: u32) -> Result<Port, i64> {
        self.table.get(port as usize).copied().ok_or(errno::EINVAL)
    }

    /// The local port bound to connection `index`, if any.
    pub fn bound_to(&self, index: usize) -> Option<u16> {
        Some(self.by_connection[index]).filter(|&p| p != 0)
    }

    /// Port `port` when it is bound to something.
    fn bound(&self, port: u32) -> Result<Port, i64> {
        self.get(port).and_then(|p| if p.binding == Binding::Free { Err(errno::EINVAL) } else { Ok(p) })
    }
}

/// Whether `dom` is some partition's id.
fn exists(dom: u16) -> bool {
    crate::config::SYSTEM.partitions.iter().any(|p| u16::from(p.id.0) == dom)
}

/// A domain id that is not the caller: -EPERM for another partition (connections are
/// static), -ESRCH for no partition at all.
fn other_domain(dom: u16) -> i64 {
    if exists(dom) { errno::EPERM } else { errno::ESRCH }
}

fn vcpu_index(partition: &Partition, vcpu: u32) -> Result<u8, i64> {
    if (vcpu as usize) < partition.config().cores.len() { Ok(vcpu as u8) } else { Err(errno::ENOENT) }
}

/// `EVTCHNOP_bind_interdomain`: a configured connection (`remote_port` = its id) between
/// the caller and partition `remote_dom`, or, with the caller itself as `remote_dom`, a
/// port it got from `EVTCHNOP_alloc_unbound` (a loopback pair). Returns the local port.
pub fn bind_interdomain(partition: &Partition, remote_dom: u16, remote_port: u32) -> Result<u32, i64> {
    let mut state = super::state(partition).lock();
    if is_self(partition, remote_dom) {
        let remote = state.ports.get(remote_port)?;
        if remote.binding != Binding::Unbound {
            return Err(errno::EINVAL);
        }
        let port = Ports::allocate(&mut state, Binding::Loopback { peer: remote_port as u16 }, 0)?;
        state.ports.table[remote_port as usize].binding = Binding::Loopback { peer: port as u16 };
        return Ok(port);
    }
    if !exists(remote_dom) {
        return Err(errno::ESRCH);
    }
    let me = partition.config().id;
    let (index, _) = crate::config::SYSTEM
        .connections
        .iter()
        .enumerate()
        .find(|(_, c)| {
            c.id == remote_port
                && ((c.from == me && u16::from(c.to.0) == remote_dom)
                    || (c.to == me && u16::from(c.from.0) == remote_dom))
        })
        .ok_or(errno::EINVAL)?;
    // Each end binds its connection once, as a Xen port is bound once.
    if state.ports.by_connection[index] != 0 {
        return Err(errno::EINVAL);
    }
    let port = Ports::allocate(&mut state, Binding::Connection { index: index as u16 }, 0)?;
    state.ports.by_connection[index] = port as u16;
    Ok(port)
}

/// `EVTCHNOP_alloc_unbound {dom, remote_dom}`: only the caller itself, for itself.
pub fn alloc_unbound(partition: &Partition, dom: u16, remote_dom: u16) -> Result<u32, i64> {
    if !is_self(partition, dom) {
        return Err(other_domain(dom));
    }
    if !is_self(partition, remote_dom) {
        return Err(other_domain(remote_dom));
    }
    Ports::allocate(&mut super::state(partition).lock(), Binding::Unbound, 0)
}

/// `EVTCHNOP_bind_ipi {vcpu}`.
pub fn bind_ipi(partition: &Partition, vcpu: u32) -> Result<u32, i64> {
    let vcpu = vcpu_index(partition, vcpu)?;
    Ports::allocate(&mut super::state(partition).lock(), Binding::Ipi, vcpu)
}

/// Virtual IRQs bound per vCPU on Xen (`virq_is_global` is false for them); the others
/// are global and bound on vCPU 0.
fn virq_is_per_vcpu(virq: u32) -> bool {
    matches!(virq, evtchn::VIRQ_TIMER | evtchn::VIRQ_DEBUG | 7 | 13)
}

/// `EVTCHNOP_bind_virq {virq, vcpu}`: once per virq and vCPU. No virtual IRQ fires here
/// (no Xen timer, console or debug key), but Linux binds some on every vCPU.
pub fn bind_virq(partition: &Partition, virq: u32, vcpu: u32) -> Result<u32, i64> {
    if virq >= evtchn::NR_VIRQS {
        return Err(errno::EINVAL);
    }
    let vcpu = vcpu_index(partition, vcpu)?;
    if !virq_is_per_vcpu(virq) && vcpu != 0 {
        return Err(errno::EINVAL);
    }
    let mut state = super::state(partition).lock();
    let binding = Binding::Virq { virq: virq as u8 };
    if state.ports.table.iter().any(|p| p.binding == binding && p.vcpu == vcpu) {
        return Err(errno::EEXIST);
    }
    Ports::allocate(&mut state, binding, vcpu)
}

/// `EVTCHNOP_bind_vcpu {port, vcpu}`: where the port's events are announced from now on.
pub fn bind_vcpu(partition: &Partition, port: u32, vcpu: u32) -> Result<(), i64> {
    let vcpu = vcpu_index(partition, vcpu)?;
    let mut state = super::state(partition).lock();
    let entry = state.ports.bound(port)?;
    match entry.binding {
        Binding::Unbound | Binding::Loopback { .. } | Binding::Connection { .. } => {}
        Binding::Virq { virq } if !virq_is_per_vcpu(u32::from(virq)) => {}
        _ => return Err(errno::EINVAL),
    }
    state.ports.table[port as usize].vcpu = vcpu;
    Ok(())
}

/// `EVTCHNOP_close {port}`: the port is free again (and not pending); a loopback peer goes
/// back to unbound, as on Xen; a connection's end is unbound (its peer's sends are
/// refused until it binds again).
pub fn close(partition: &Partition, port: u32) -> Result<(), i64> {
    let mut state = super::state(partition).lock();
    match state.ports.bound(port)?.binding {
        Binding::Loopback { peer } => state.ports.table[peer as usize].binding = Binding::Unbound,
        Binding::Connection { index } => state.ports.by_connection[index as usize] = 0,
        _ => {}
    }
    state.ports.table[port as usize] = Port { binding: Binding::Free, vcpu: 0 };
    shared_info::clear_pending(&state, port);
    Ok(())
}

/// What `EVTCHNOP_status` reports: `status`, `vcpu`, then the union's first two fields
/// (`dom` as u16 at 16 and `port` as u32 at 20 for unbound and interdomain; `virq` as u32
/// at 16).
pub struct Status {
    pub status: u32,
    pub vcpu: u32,
    pub dom_or_virq: u32,
    pub port: u32,
}

/// `EVTCHNOP_status {dom, port}` of one of the caller's ports. An interdomain port bound to
/// a connection reports the peer partition and the connection's id (what it was bound
/// with); a loopback port the caller and its peer port.
pub fn status(partition: &Partition, dom: u16, port: u32) -> Result<Status, i64> {
    if !is_self(partition, dom) {
        return Err(other_domain(dom));
    }
    let state = super::state(partition).lock();
    let entry = state.ports.get(port)?;
    let me = u32::from(partition.config().id.0);
    let (status, dom_or_virq, remote) = match entry.binding {
        Binding::Free => (evtchn::STAT_CLOSED, 0, 0),
        Binding::Unbound => (evtchn::STAT_UNBOUND, me, 0),
        Binding::Loopback { peer } => (evtchn::STAT_INTERDOMAIN, me, u32::from(peer)),
        Binding::Connection { index } => {
            let c = &crate::config::SYSTEM.connections[index as usize];
            let peer = if u32::from(c.from.0) == me { c.to } else { c.from };
            (evtchn::STAT_INTERDOMAIN, u32::from(peer.0), c.id)
        }
        Binding::Ipi => (evtchn::STAT_IPI, 0, 0),
        Binding::Virq { virq } => (evtchn::STAT_VIRQ, u32::from(virq), 0),
    };
    Ok(Status { status, vcpu: u32::from(entry.vcpu), dom_or_virq, port: remote })
}

/// `EVTCHNOP_unmask {port}`.
pub fn unmask(partition: &Partition, port: u32) -> Result<(), i64> {
    let state = super::state(partition).lock();
    let entry = state.ports.get(port)?;
    let upcall = shared_info::unmask(partition, &state, port, usize::from(entry.vcpu));
    drop(state);
    if let Some(upcall) = upcall {
        upcall.send();
    }
    Ok(())
}

/// Whether any of `ports` is pending (`SCHEDOP_poll`); -EINVAL for a port out of range.
pub fn any_pending(partition: &Partition, ports: impl Iterator<Item = u32>) -> Result<bool, i64> {
    let state = super::state(partition).lock();
    let mut any = false;
    for port in ports {
        state.ports.get(port)?;
        any |= shared_info::is_pending(&state, port);
    }
    Ok(any)
}

/// `EVTCHNOP_send {port}`.
/// * IPI: raises it on its vCPU. Loopback: raises the peer port. Unbound: nothing (Xen
///   drops it silently). VIRQ: -EINVAL.
/// * A connection the caller sends on: delivered to the receiver (an event connection),
///   or the messages written to its ring since the last send (a message connection,
///   `ring::send`). Receiver not ready: -ENOTCONN.
/// * A connection the caller receives on: -EPERM for an event connection (it carries
///   nothing the other way); on a message connection it says "I consumed" and raises the
///   sender's port when the sender speaks Xen (so a sender waiting for room wakes), 0.
pub fn send(partition: &Partition, port: u32) -> Result<(), i64> {
    let state = super::state(partition).lock();
    let entry = state.ports.bound(port)?;
    let upcall = match entry.binding {
        Binding::Ipi => shared_info::set_pending(partition, &state, port, usize::from(entry.vcpu)),
        Binding::Loopback { peer } => {
            let vcpu = state.ports.table[peer as usize].vcpu;
            shared_info::set_pending(partition, &state, u32::from(peer), usize::from(vcpu))
        }
        Binding::Unbound => None,
        Binding::Virq { .. } | Binding::Free => return Err(errno::EINVAL),
        Binding::Connection { index } => {
            drop(state);
            return send_on_connection(partition, usize::from(index));
        }
    };
    drop(state);
    if let Some(upcall) = upcall {
        upcall.send();
    }
    Ok(())
}

fn send_on_connection(partition: &Partition, index: usize) -> Result<(), i64> {
    let connection = &crate::config::SYSTEM.connections[index];
    let sending = connection.from == partition.config().id;
    let peer = partition::get(if sending { connection.to } else { connection.from });
    let h = &partition.health;
    match (connection.kind, sending) {
        (ConnectionKind::Event { flag }, true) => {
            let result = if speaks_xen(peer) {
                raise_connection(peer, index).map_err(|()| errno::ENOTCONN)
            } else {
                match crate::hyperv::synic::signal(peer, connection, flag) {
                    HvStatus::Success => Ok(()),
                    HvStatus::InvalidSynicState => Err(errno::ENOTCONN),
                    _ => Err(errno::EINVAL),
                }
            };
            let counter = if result.is_ok() { &h.events_sent } else { &h.events_refused };
            counter.fetch_add(1, Ordering::Relaxed);
            result
        }
        (ConnectionKind::Event { .. }, false) => Err(errno::EPERM),
        (ConnectionKind::Message { .. }, true) => super::ring::send(partition, index, connection, peer),
        (ConnectionKind::Message { .. }, false) => {
            if speaks_xen(peer) {
                // Not ready yet: nothing waits for room.
                let _ = raise_connection(peer, index);
            }
            Ok(())
        }
    }
}

/// Raises the port `receiver` bound to connection `index`; `Err` when it has not bound it
/// (not ready). Counts an event received for an event connection.
pub fn raise_connection(receiver: &Partition, index: usize) -> Result<(), ()> {
    let state = super::state(receiver).lock();
    let upcall = raise_bound(receiver, &state, index)?;
    drop(state);
    if let Some(upcall) = upcall {
        upcall.send();
    }
    if matches!(crate::config::SYSTEM.connections[index].kind, ConnectionKind::Event { .. }) {
        receiver.health.events_received.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Raises the port `receiver` bound to connection `index`, its state locked (`state`);
/// `Err` when it has not bound it. Returns the upcall to send once the lock is dropped.
pub fn raise_bound(receiver: &Partition, state: &XenState, index: usize) -> Result<Option<shared_info::Upcall>, ()> {
    let port = state.ports.bound_to(index).ok_or(())?;
    let vcpu = state.ports.table[usize::from(port)].vcpu;
    Ok(shared_info::set_pending(receiver, state, u32::from(port), usize::from(vcpu)))
}

/// HvCallSignalEvent on event connection `index` whose receiver speaks Xen: raises the
/// receiver's port (INVALID_SYNIC_STATE while it has not bound the connection).
pub fn signal_from_hyperv(index: usize, connection: &Connection) -> HvStatus {
    match raise_connection(partition::get(connection.to), index) {
        Ok(()) => HvStatus::Success,
        Err(()) => HvStatus::InvalidSynicState,
    }
}
