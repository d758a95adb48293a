//! The board's hardware watchdog (`[watchdog]` in the board file): armed at boot, kicked
//! by the monitor (`supervision/monitor.rs`) while the system is healthy.
//!
//! Placeholder interface until the driver lands: a board without a watchdog has nothing to
//! arm or kick.

/// Arms the board's watchdog, if the board has one (boot CPU, before partitions start).
pub fn arm() {}

/// Reloads the board watchdog's timer (called by the monitor every tick while healthy).
pub fn kick() {}

/// Whether a board watchdog is armed.
pub fn armed() -> bool {
    false
}
