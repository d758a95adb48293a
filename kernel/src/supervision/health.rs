//! A partition's health: its state (`bulkhead_abi::supervision::PartitionState`), its
//! watchdog deadline, the counters the supervision calls report, and what the monitor or
//! the supervisor asked of it. Every state change is logged with its reason.

use crate::log::info;
use crate::partition::Partition;
use bulkhead_abi::supervision::{FAULT_REASONS, FaultReason, PartitionState};
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

/// What the monitor or the supervisor asked the partition's first core to do
/// ([`Health::request`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Its watchdog deadline passed: fault with reason `watchdog` (the policy applies).
    WatchdogFault,
    /// The supervisor (a partition id) asks for a restart.
    Restart { by: u8 },
    /// The supervisor asks for a halt.
    Halt { by: u8 },
}

const NO_REQUEST: u8 = 0;
const WATCHDOG_FAULT: u8 = 1;
const RESTART: u8 = 2;
const HALT: u8 = 3;

impl Request {
    fn encode(self) -> u16 {
        match self {
            Request::WatchdogFault => u16::from(WATCHDOG_FAULT),
            Request::Restart { by } => u16::from(RESTART) | u16::from(by) << 8,
            Request::Halt { by } => u16::from(HALT) | u16::from(by) << 8,
        }
    }

    fn decode(value: u16) -> Option<Self> {
        let by = (value >> 8) as u8;
        match value as u8 {
            WATCHDOG_FAULT => Some(Request::WatchdogFault),
            RESTART => Some(Request::Restart { by }),
            HALT => Some(Request::Halt { by }),
            _ => None,
        }
    }
}

/// Health state and counters of one partition.
pub struct Health {
    state: AtomicU8,
    /// The last fault's reason (0xFF before the first).
    last_fault: AtomicU8,
    /// TSC of the last start (0 while not running).
    started_tsc: AtomicU64,
    /// TSC by which the next check-in is due; 0: no deadline runs (no watchdog, or the
    /// partition is not running).
    deadline_tsc: AtomicU64,
    /// A pending [`Request`] (encoded; 0: none).
    request: core::sync::atomic::AtomicU16,
    pub faults_by_reason: [AtomicU32; FAULT_REASONS],
    pub watchdog_misses: AtomicU32,
    pub check_ins: AtomicU32,
    pub messages_sent: AtomicU32,
    pub messages_received: AtomicU32,
    pub messages_refused: AtomicU32,
    pub events_sent: AtomicU32,
    pub events_received: AtomicU32,
    pub events_refused: AtomicU32,
}

impl Health {
    pub const fn new() -> Self {
        Health {
            state: AtomicU8::new(PartitionState::Starting as u8),
            last_fault: AtomicU8::new(0xFF),
            started_tsc: AtomicU64::new(0),
            deadline_tsc: AtomicU64::new(0),
            request: core::sync::atomic::AtomicU16::new(0),
            faults_by_reason: [const { AtomicU32::new(0) }; FAULT_REASONS],
            watchdog_misses: AtomicU32::new(0),
            check_ins: AtomicU32::new(0),
            messages_sent: AtomicU32::new(0),
            messages_received: AtomicU32::new(0),
            messages_refused: AtomicU32::new(0),
            events_sent: AtomicU32::new(0),
            events_received: AtomicU32::new(0),
            events_refused: AtomicU32::new(0),
        }
    }

    pub fn state(&self) -> PartitionState {
        PartitionState::from_u8(self.state.load(Ordering::Acquire)).unwrap_or(PartitionState::Starting)
    }

    pub fn last_fault(&self) -> u8 {
        self.last_fault.load(Ordering::Relaxed)
    }

    /// Milliseconds since the last start (0 while the partition is not running).
    pub fn uptime_ms(&self) -> u64 {
        let started = self.started_tsc.load(Ordering::Relaxed);
        if started == 0 {
            return 0;
        }
        crate::cpu::time::rdtsc().saturating_sub(started) / crate::cpu::time::ticks_per_ms().max(1)
    }

    /// The TSC by which the next check-in is due (0: none).
    pub fn deadline(&self) -> u64 {
        self.deadline_tsc.load(Ordering::Acquire)
    }

    /// Stops the deadline (the partition stops).
    pub fn disarm(&self) {
        self.deadline_tsc.store(0, Ordering::Release);
    }

    /// The monitor saw the deadline `seen` pass: stops it, unless a check-in moved it
    /// meanwhile. True when it was still `seen` (a miss).
    pub fn expire(&self, seen: u64) -> bool {
        self.deadline_tsc.compare_exchange(seen, 0, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Posts `request` unless another one is pending; true when posted.
    pub fn post_request(&self, request: Request) -> bool {
        self.request.compare_exchange(0, request.encode(), Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Takes the pending request, if any.
    pub fn take_request(&self) -> Option<Request> {
        Request::decode(self.request.swap(0, Ordering::AcqRel))
    }

    /// Whether a request is pending.
    pub fn request_pending(&self) -> bool {
        self.request.load(Ordering::Acquire) != NO_REQUEST.into()
    }

    /// Counts a fault of `reason`.
    pub fn count_fault(&self, reason: FaultReason) {
        self.faults_by_reason[reason as usize].fetch_add(1, Ordering::Relaxed);
        self.last_fault.store(reason as u8, Ordering::Relaxed);
    }
}

impl Partition {
    /// Moves the partition to `to`, logging the change and `why`.
    pub fn set_state(&self, to: PartitionState, why: &str) {
        let from = self.health.state.swap(to as u8, Ordering::AcqRel);
        let from = PartitionState::from_u8(from).unwrap_or(PartitionState::Starting);
        match to {
            PartitionState::Running => {}
            PartitionState::Starting => {
                self.health.started_tsc.store(crate::cpu::time::rdtsc(), Ordering::Relaxed);
                self.arm_watchdog(true);
            }
            _ => {
                self.health.started_tsc.store(0, Ordering::Relaxed);
                self.health.disarm();
            }
        }
        if from != to {
            info!("partition {=str}: state {=str} -> {=str} ({=str})", self.name(), from.name(), to.name(), why);
        }
    }

    /// Sets the watchdog's next deadline: one period from now, plus the grace time at a
    /// start. No watchdog: nothing.
    fn arm_watchdog(&self, start: bool) {
        if let Some(w) = self.config().watchdog {
            let ms = u64::from(w.period_ms) + if start { u64::from(w.grace_ms) } else { 0 };
            let deadline = crate::cpu::time::rdtsc() + ms * crate::cpu::time::ticks_per_ms();
            self.health.deadline_tsc.store(deadline, Ordering::Release);
        }
    }

    /// A watchdog check-in (`supervision/calls.rs`): the next deadline is one period from
    /// now; the first check-in after a start makes the partition running. False when the
    /// partition has no watchdog.
    pub fn check_in(&self) -> bool {
        if self.config().watchdog.is_none() {
            return false;
        }
        self.health.check_ins.fetch_add(1, Ordering::Relaxed);
        match self.health.state() {
            PartitionState::Starting => {
                self.arm_watchdog(false);
                self.set_state(PartitionState::Running, "first watchdog check-in");
            }
            PartitionState::Running => self.arm_watchdog(false),
            // Being stopped: the deadline stays off until the next start.
            _ => {}
        }
        true
    }

    /// The partition's first core entered its guest: without a watchdog it is running now;
    /// with one it stays starting until its first check-in.
    pub fn guest_started(&self) {
        if self.config().watchdog.is_none() {
            self.set_state(PartitionState::Running, "guest started");
        }
    }
}
