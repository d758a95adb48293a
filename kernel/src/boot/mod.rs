//! Booting the hypervisor: the 32-bit entry, boot information, page tables, SMP bring-up.

pub mod board_check;
pub mod bootinfo;
pub mod cmdline;
pub mod madt;
pub mod paging;
pub mod relocate;
pub mod smp;
pub mod start;
