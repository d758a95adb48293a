//! Supervision (docs/supervision.md): each partition's state and counters (`health`), its
//! watchdog and the monitor that enforces it (`monitor`), the supervision hypercalls
//! (`calls`), and the board's own watchdog (`board_watchdog`) with the record of why the
//! board was last reset (`reset_record`).

// The monitor that calls `kick` and records watchdog resets lands next.
#![allow(dead_code)]

pub mod board_watchdog;
pub mod reset_record;
pub mod test_hang;
