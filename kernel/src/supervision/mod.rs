//! Supervision (docs/supervision.md): each partition's state and counters (`health`), its
//! watchdog and the monitor that enforces it (`monitor`), the supervision hypercalls
//! (`calls`), and the board's own watchdog (`board_watchdog`) with the record of why the
//! board was last reset (`reset_record`).

pub mod board_watchdog;
pub mod calls;
pub mod health;
pub mod monitor;
pub mod reset_record;
pub mod test_hang;
