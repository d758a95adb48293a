//! Supervision: partition states, the counters the hypervisor keeps for each partition, and
//! the layouts of Bulkhead's supervision hypercalls (docs/supervision.md).
//!
//! Three calls in Bulkhead's own range of call codes (`hyperv::hypercall::code`,
//! `0x8000..=0x80FF`, above everything the TLFS defines):
//!
//! - [`code::BULKHEAD_WATCHDOG_CHECK_IN`](crate::hyperv::hypercall::code::BULKHEAD_WATCHDOG_CHECK_IN):
//!   a partition with a watchdog checks in; every partition may make it.
//! - [`code::BULKHEAD_PARTITION_STATUS`](crate::hyperv::hypercall::code::BULKHEAD_PARTITION_STATUS):
//!   reads a partition's [`PartitionStatus`]: a partition's own, or, for the supervisor,
//!   that of a partition it supervises.
//! - [`code::BULKHEAD_PARTITION_CONTROL`](crate::hyperv::hypercall::code::BULKHEAD_PARTITION_CONTROL):
//!   the supervisor restarts or halts a partition it supervises.
//!
//! What each call answers, in the order the hypervisor checks:
//!
//! - Every call: INVALID_HYPERCALL_INPUT for a rep count, a variable header or a reserved
//!   bit of the input value.
//! - `BULKHEAD_WATCHDOG_CHECK_IN` (fast form only: the memory form is
//!   INVALID_HYPERCALL_CODE): INVALID_PARAMETER when RDX or R8 is not 0;
//!   INVALID_PARTITION_STATE for a partition without a watchdog; else SUCCESS.
//! - `BULKHEAD_PARTITION_STATUS` (memory form only): the input block as for every
//!   memory-form call (INVALID_ALIGNMENT); INVALID_PARAMETER for reserved bytes not 0;
//!   ACCESS_DENIED when the caller neither is the partition (its id, or [`PARTITION_SELF`])
//!   nor supervises it (for the
//!   supervisor, INVALID_PARTITION_ID first for an id no partition has); INVALID_ALIGNMENT
//!   for an output block that is misaligned, crosses a page, or is not the caller's
//!   writable memory.
//! - `BULKHEAD_PARTITION_CONTROL` (fast form only: the memory form is
//!   INVALID_HYPERCALL_CODE; RDX = the partition id, R8 = a [`ControlAction`]):
//!   ACCESS_DENIED for a caller that supervises nobody; INVALID_PARTITION_ID for an id no
//!   partition has; ACCESS_DENIED for a partition it does not supervise; INVALID_PARAMETER
//!   for an unknown action; INVALID_PARTITION_STATE while the partition is being stopped,
//!   or to halt a halted one; else SUCCESS: the request is carried out within milliseconds
//!   (the partition's state shows when).
//!
//! Version 1. Every multi-byte field is little-endian.

/// The layout version of [`PartitionStatus`] (its `version` field).
pub const STATUS_VERSION: u8 = 1;

/// What a partition is doing (docs/supervision.md, "States").
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartitionState {
    /// Being loaded, or started but not yet known to be well: a partition with a watchdog
    /// until its first check-in, any other until its first core entered its guest.
    Starting = 0,
    /// Running its guest (and, with a watchdog, checking in in time).
    Running = 1,
    /// It faulted; its cores are being stopped and its fault policy applied.
    Faulted = 2,
    /// Stopped and about to start again (fault policy `restart`, or the supervisor's request).
    Restarting = 3,
    /// Stopped for good, until the supervisor restarts it.
    Halted = 4,
}

impl PartitionState {
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::Starting,
            1 => Self::Running,
            2 => Self::Faulted,
            3 => Self::Restarting,
            4 => Self::Halted,
            _ => return None,
        })
    }

    /// The state's name as the hypervisor's log and `bulkhead-msg status` print it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Faulted => "faulted",
            Self::Restarting => "restarting",
            Self::Halted => "halted",
        }
    }
}

/// Why a partition faulted: the kinds the hypervisor counts faults by.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultReason {
    /// Touched guest-physical memory it does not own.
    MemoryAccess = 0,
    TripleFault = 1,
    /// An exception the hypervisor had to take (one the guest could not handle).
    Exception = 2,
    /// String I/O to an intercepted port.
    StringIo = 3,
    /// An exit the hypervisor does not handle, or a failed VM entry.
    UnhandledExit = 4,
    /// The payload could not be loaded.
    Load = 5,
    /// The vCPU could not be set up.
    VcpuSetup = 6,
    /// An instruction on an emulated MMIO page the emulation does not perform.
    MmioInstruction = 7,
    /// The guest reported a crash (Hyper-V crash MSRs).
    GuestCrash = 8,
    /// It did not check in before its watchdog deadline.
    Watchdog = 9,
    /// It asked to be shut down (a Xen partition's `sched_op` shutdown: power-off, reboot,
    /// crash); its fault policy decides what follows.
    GuestShutdown = 10,
}

/// How many [`FaultReason`]s there are (the length of [`PartitionStatus::faults_by_reason`]
/// that counts).
pub const FAULT_REASONS: usize = 11;

impl FaultReason {
    pub const ALL: [FaultReason; FAULT_REASONS] = [
        Self::MemoryAccess,
        Self::TripleFault,
        Self::Exception,
        Self::StringIo,
        Self::UnhandledExit,
        Self::Load,
        Self::VcpuSetup,
        Self::MmioInstruction,
        Self::GuestCrash,
        Self::Watchdog,
        Self::GuestShutdown,
    ];

    pub const fn from_u8(value: u8) -> Option<Self> {
        if (value as usize) < FAULT_REASONS { Some(Self::ALL[value as usize]) } else { None }
    }

    /// The reason's name as the log and `bulkhead-msg status` print it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::MemoryAccess => "memory-access",
            Self::TripleFault => "triple-fault",
            Self::Exception => "exception",
            Self::StringIo => "string-io",
            Self::UnhandledExit => "unhandled-exit",
            Self::Load => "load",
            Self::VcpuSetup => "vcpu-setup",
            Self::MmioInstruction => "mmio-instruction",
            Self::GuestCrash => "guest-crash",
            Self::Watchdog => "watchdog",
            Self::GuestShutdown => "guest-shutdown",
        }
    }
}

/// What the supervisor asks of a partition (R8 of
/// [`code::BULKHEAD_PARTITION_CONTROL`](crate::hyperv::hypercall::code::BULKHEAD_PARTITION_CONTROL)).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlAction {
    /// Stop every core of the partition, zero its memory, reload its payload and start it
    /// again (also a halted partition). Not counted against `max_restarts`.
    Restart = 1,
    /// Stop every core of the partition for good (until a restart request).
    Halt = 2,
}

impl ControlAction {
    pub const fn from_u64(value: u64) -> Option<Self> {
        match value {
            1 => Some(Self::Restart),
            2 => Some(Self::Halt),
            _ => None,
        }
    }
}

/// The partition id that names the caller itself in `BULKHEAD_PARTITION_STATUS` (a
/// partition need not know its own id: the status it gets back carries it).
pub const PARTITION_SELF: u32 = u32::MAX;

/// The input block of `BULKHEAD_PARTITION_STATUS` (memory form; RDX = its GPA, 8-byte
/// aligned within one page): the partition to read, then 4 reserved bytes (0).
pub const STATUS_INPUT_SIZE: usize = 8;

/// Bits of [`PartitionStatus::flags`].
pub mod flags {
    /// The partition has a watchdog.
    pub const WATCHDOG: u8 = 1 << 0;
    /// The board watchdog is kicked only while this partition is healthy.
    pub const CRITICAL: u8 = 1 << 1;
    /// The partition supervises others.
    pub const SUPERVISOR: u8 = 1 << 2;
}

/// Fault policies as [`PartitionStatus::fault_policy`] encodes them.
pub mod policy {
    pub const HALT: u8 = 0;
    pub const RESTART: u8 = 1;
    pub const RESET_BOARD: u8 = 2;
}

/// The longest partition name a status carries (names are shorter: the configuration
/// limits them).
pub const NAME_BYTES: usize = 32;

/// A partition's state and counters: the output block of `BULKHEAD_PARTITION_STATUS`
/// (R8 = its GPA: 8-byte aligned, [`PartitionStatus::SIZE`] bytes within one page, in the
/// caller's own writable memory; it may share the input block's page without overlapping
/// it). Counters count since the hypervisor booted, across the partition's restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PartitionStatus {
    /// Offset 0: [`STATUS_VERSION`].
    pub version: u8,
    /// 1: the partition's id (its index in the system file).
    pub id: u8,
    /// 2: a [`PartitionState`].
    pub state: u8,
    /// 3: [`flags`].
    pub flags: u8,
    /// 4: the last fault's [`FaultReason`], or 0xFF before the first fault.
    pub last_fault: u8,
    /// 5: its fault policy ([`policy`]).
    pub fault_policy: u8,
    /// 6..8: reserved, 0.
    /// 8: the partition's name, NUL-padded.
    pub name: [u8; NAME_BYTES],
    /// 40: its watchdog period in milliseconds (0: none).
    pub watchdog_ms: u32,
    /// 44: restarts (by its policy and on request).
    pub restarts: u32,
    /// 48: the policy's restart limit (`max_restarts`; 0 unless it restarts).
    pub max_restarts: u32,
    /// 52: faults, all reasons.
    pub faults: u32,
    /// 56: watchdog deadlines missed.
    pub watchdog_misses: u32,
    /// 60: watchdog check-ins.
    pub check_ins: u32,
    /// 64: console lines its rate limit dropped.
    pub console_lines_dropped: u64,
    /// 72: VM exits by kind: port I/O, MSR, CPUID, every other kind.
    pub exits_io: u32,
    pub exits_msr: u32,
    pub exits_cpuid: u32,
    pub exits_other: u32,
    /// 88: messages it posted that were accepted, messages delivered to it, its posts that
    /// were refused (any status but SUCCESS).
    pub messages_sent: u32,
    pub messages_received: u32,
    pub messages_refused: u32,
    /// 100: events it signalled, events signalled to it, its signals that were refused.
    pub events_sent: u32,
    pub events_received: u32,
    pub events_refused: u32,
    /// 112: faults by [`FaultReason`] (index = reason; the last one is reserved, 0).
    pub faults_by_reason: [u32; 12],
    /// 160: milliseconds since the partition last started (0 while it is not running).
    pub uptime_ms: u64,
    // 168..256: reserved, 0.
}

impl PartitionStatus {
    /// Bytes of the output block.
    pub const SIZE: usize = 256;

    /// The name as text (up to its first NUL).
    pub fn name(&self) -> &str {
        let len = self.name.iter().position(|&b| b == 0).unwrap_or(NAME_BYTES);
        core::str::from_utf8(&self.name[..len]).unwrap_or("?")
    }

    /// The state, if it is one this version defines.
    pub fn state(&self) -> Option<PartitionState> {
        PartitionState::from_u8(self.state)
    }

    /// The total of the exit counts.
    pub fn exits_total(&self) -> u64 {
        [self.exits_io, self.exits_msr, self.exits_cpuid, self.exits_other].iter().map(|&n| u64::from(n)).sum()
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0] = self.version;
        b[1] = self.id;
        b[2] = self.state;
        b[3] = self.flags;
        b[4] = self.last_fault;
        b[5] = self.fault_policy;
        b[8..40].copy_from_slice(&self.name);
        let words =
            [self.watchdog_ms, self.restarts, self.max_restarts, self.faults, self.watchdog_misses, self.check_ins];
        put_u32s(&mut b, 40, &words);
        b[64..72].copy_from_slice(&self.console_lines_dropped.to_le_bytes());
        let counts = [
            self.exits_io,
            self.exits_msr,
            self.exits_cpuid,
            self.exits_other,
            self.messages_sent,
            self.messages_received,
            self.messages_refused,
            self.events_sent,
            self.events_received,
            self.events_refused,
        ];
        put_u32s(&mut b, 72, &counts);
        put_u32s(&mut b, 112, &self.faults_by_reason);
        b[160..168].copy_from_slice(&self.uptime_ms.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| u64::from(u32_at(at)) | u64::from(u32_at(at + 4)) << 32;
        let mut name = [0; NAME_BYTES];
        name.copy_from_slice(&b[8..40]);
        let mut faults_by_reason = [0; 12];
        for (i, n) in faults_by_reason.iter_mut().enumerate() {
            *n = u32_at(112 + 4 * i);
        }
        PartitionStatus {
            version: b[0],
            id: b[1],
            state: b[2],
            flags: b[3],
            last_fault: b[4],
            fault_policy: b[5],
            name,
            watchdog_ms: u32_at(40),
            restarts: u32_at(44),
            max_restarts: u32_at(48),
            faults: u32_at(52),
            watchdog_misses: u32_at(56),
            check_ins: u32_at(60),
            console_lines_dropped: u64_at(64),
            exits_io: u32_at(72),
            exits_msr: u32_at(76),
            exits_cpuid: u32_at(80),
            exits_other: u32_at(84),
            messages_sent: u32_at(88),
            messages_received: u32_at(92),
            messages_refused: u32_at(96),
            events_sent: u32_at(100),
            events_received: u32_at(104),
            events_refused: u32_at(108),
            faults_by_reason,
            uptime_ms: u64_at(160),
        }
    }
}

fn put_u32s(b: &mut [u8], at: usize, words: &[u32]) {
    for (i, w) in words.iter().enumerate() {
        b[at + 4 * i..at + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_its_bytes() {
        let mut name = [0; NAME_BYTES];
        name[..7].copy_from_slice(b"control");
        let mut faults_by_reason = [0; 12];
        faults_by_reason[FaultReason::Watchdog as usize] = 3;
        faults_by_reason[FaultReason::TripleFault as usize] = 1;
        let status = PartitionStatus {
            version: STATUS_VERSION,
            id: 2,
            state: PartitionState::Restarting as u8,
            flags: flags::WATCHDOG | flags::CRITICAL,
            last_fault: FaultReason::Watchdog as u8,
            fault_policy: policy::RESTART,
            name,
            watchdog_ms: 100,
            restarts: 4,
            max_restarts: 5,
            faults: 4,
            watchdog_misses: 3,
            check_ins: 77,
            console_lines_dropped: 1 << 40,
            exits_io: 1,
            exits_msr: 2,
            exits_cpuid: 3,
            exits_other: 4,
            messages_sent: 5,
            messages_received: 6,
            messages_refused: 7,
            events_sent: 8,
            events_received: 9,
            events_refused: 10,
            faults_by_reason,
            uptime_ms: 123_456,
        };
        let bytes = status.to_bytes();
        assert_eq!(PartitionStatus::from_bytes(&bytes), status);
        assert_eq!(status.name(), "control");
        assert_eq!(status.exits_total(), 10);
        // Fixed offsets, as documented.
        assert_eq!(bytes[1], 2);
        assert_eq!(&bytes[8..15], b"control");
        assert_eq!(u32::from_le_bytes(bytes[56..60].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(bytes[64..72].try_into().unwrap()), 1 << 40);
        assert_eq!(u32::from_le_bytes(bytes[108..112].try_into().unwrap()), 10);
        assert_eq!(u32::from_le_bytes(bytes[112 + 4 * 9..112 + 40].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(bytes[160..168].try_into().unwrap()), 123_456);
        assert!(bytes[168..].iter().all(|&b| b == 0));
    }

    #[test]
    fn states_and_reasons_decode_only_their_values() {
        for s in 0..=4 {
            assert_eq!(PartitionState::from_u8(s).unwrap() as u8, s);
        }
        assert_eq!(PartitionState::from_u8(5), None);
        for (i, r) in FaultReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert_eq!(FaultReason::from_u8(i as u8), Some(*r));
        }
        assert_eq!(FaultReason::from_u8(FAULT_REASONS as u8), None);
        assert_eq!(ControlAction::from_u64(0), None);
        assert_eq!(ControlAction::from_u64(1), Some(ControlAction::Restart));
        assert_eq!(ControlAction::from_u64(3), None);
    }
}
