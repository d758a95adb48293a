//! What the demo's control and telemetry partitions (`board/systems/demo.toml`, and
//! `unikernel-demo.toml` with control as a Rust std program) say to each other, defined
//! once for every side:
//!
//! - control posts a [`Report`] every 100 timer ticks with HvCallPostMessage on message
//!   connection [`REPORT_CONNECTION`]; it arrives in telemetry's SINT [`REPORT_SINT`] slot;
//! - telemetry writes the number of each report it has handled in the "status" shared page
//!   ([`StatusPage`]), then signals event connection [`ACK_CONNECTION`] (flag [`ACK_FLAG`]
//!   of control's SINT [`ACK_SINT`]). The event says "look"; the page says what was
//!   acknowledged, so coalesced signals lose nothing.

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

/// control -> telemetry, kind `message` (demo.toml `[[connection]] id = 1`).
pub const REPORT_CONNECTION: u32 = 1;
/// Telemetry's SINT for reports (`sint = 2`).
pub const REPORT_SINT: u8 = 2;
/// telemetry -> control, kind `event` (`[[connection]] id = 2`).
pub const ACK_CONNECTION: u32 = 2;
/// Control's SINT for acknowledgements (`sint = 3`).
pub const ACK_SINT: u8 = 3;
/// The connection's event flag (`flag = 0`).
pub const ACK_FLAG: u16 = 0;

/// The message type of a [`Report`]. The TLFS leaves types below 0x8000_0000 to the
/// partitions (the hypervisor refuses 0 and the others).
pub const REPORT_TYPE: u32 = 1;

/// Control's telemetry report: the payload of a message of type [`REPORT_TYPE`].
///
/// Layout, 32 bytes, little-endian:
///
/// | offset | type | field |
/// |---|---|---|
/// | 0 | u32 | `sequence`: 1 for the first report the hypervisor accepted, then +1 for each |
/// | 4 | u32 | `acknowledged`: the highest report number telemetry had acknowledged when control sent this one (0: none yet) |
/// | 8 | u64 | `tick`: control's timer ticks when it sent the report |
/// | 16 | u64 | `worst_jitter`: the worst deviation of one timer interval from the expected period, in the unit at offset 24 |
/// | 24 | u32 | unit of `worst_jitter`: 0 nanoseconds, 1 TSC cycles |
/// | 28 | u32 | `refused`: reports refused so far because telemetry's queue was full (INSUFFICIENT_BUFFERS) |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    pub sequence: u32,
    pub acknowledged: u32,
    pub tick: u64,
    pub worst_jitter: Jitter,
    pub refused: u32,
}

/// A timer jitter with its unit: nanoseconds where the partition knows its TSC frequency
/// (the Hyper-V reference TSC page), TSC cycles otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    Nanoseconds(u64),
    TscCycles(u64),
}

impl Report {
    pub const SIZE: usize = 32;

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let (jitter, unit) = match self.worst_jitter {
            Jitter::Nanoseconds(ns) => (ns, 0u32),
            Jitter::TscCycles(cycles) => (cycles, 1),
        };
        let mut bytes = [0; Self::SIZE];
        bytes[0..4].copy_from_slice(&self.sequence.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.acknowledged.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.tick.to_le_bytes());
        bytes[16..24].copy_from_slice(&jitter.to_le_bytes());
        bytes[24..28].copy_from_slice(&unit.to_le_bytes());
        bytes[28..32].copy_from_slice(&self.refused.to_le_bytes());
        bytes
    }

    /// The report in a message's payload; `None` if the payload is not one (wrong length,
    /// unknown unit).
    pub fn from_bytes(bytes: &[u8]) -> Option<Report> {
        let bytes: &[u8; Self::SIZE] = bytes.try_into().ok()?;
        let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let u64_at = |at: usize| u64::from(u32_at(at)) | u64::from(u32_at(at + 4)) << 32;
        let worst_jitter = match u32_at(24) {
            0 => Jitter::Nanoseconds(u64_at(16)),
            1 => Jitter::TscCycles(u64_at(16)),
            _ => return None,
        };
        Some(Report {
            sequence: u32_at(0),
            acknowledged: u32_at(4),
            tick: u64_at(8),
            worst_jitter,
            refused: u32_at(28),
        })
    }
}

/// `12.3 us` (tenths of a microsecond) or `4567 TSC cycles`.
impl fmt::Display for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Jitter::Nanoseconds(ns) => write!(f, "{}.{} us", ns / 1000, ns % 1000 / 100),
            Jitter::TscCycles(cycles) => write!(f, "{} TSC cycles", cycles),
        }
    }
}

/// The demo's "status" shared page, at the guest address both partitions get on their
/// command line (`status=ADDRESS`): the number of the last report telemetry acknowledged,
/// a u32 at offset 0. Telemetry (mapped read-write) writes it before each signal; control
/// (mapped read-only) reads it only after taking the event, so it never sees what the
/// page held before telemetry first wrote it.
pub struct StatusPage(&'static AtomicU32);

impl StatusPage {
    /// # Safety
    /// `address` is where the configuration maps the "status" shared page into this
    /// partition (its command line's `status=`): 4 KiB aligned and readable; writable if
    /// this partition calls [`StatusPage::acknowledge`].
    pub unsafe fn at(address: u64) -> StatusPage {
        // SAFETY: per the caller, a mapped, aligned page no Rust object occupies; the other
        // partition accesses it only atomically too.
        StatusPage(unsafe { &*(address as *const AtomicU32) })
    }

    /// Telemetry: report `sequence` is handled. Release: a reader that sees the number
    /// also sees everything written before it.
    pub fn acknowledge(&self, sequence: u32) {
        self.0.store(sequence, Ordering::Release);
    }

    /// Control: the last report telemetry acknowledged.
    pub fn acknowledged(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }
}
