//! Why the hypervisor reset the board, kept where it survives the reset (`[reset_record]`
//! in the board file) and printed at the next boot.
//!
//! Placeholder interface until the CMOS record lands.

use bulkhead_board::tables::PartitionId;

/// Why the board watchdog was left to expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogCause {
    /// A critical partition was not healthy.
    PartitionUnhealthy(PartitionId),
    /// A hypervisor core stayed in the hypervisor too long (its CPU index).
    CoreHung(u32),
}

/// Why the board is reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    BoardWatchdog {
        cause: WatchdogCause,
    },
    /// A partition's fault policy `reset-board`.
    Policy {
        partition: PartitionId,
    },
    Panic,
}

/// Records `reason` for the next boot.
pub fn record(_reason: ResetReason) {}

/// Forgets a recorded reason: what led to it cleared before the board reset.
pub fn clear() {}

/// Prints the last reset's recorded reason at boot, then clears it.
pub fn report_at_boot() {}
