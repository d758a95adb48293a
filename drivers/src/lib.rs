//! Device drivers of the Bulkhead hypervisor.
//!
//! Each file is one hardware concept. Register layouts are kept apart from the way the
//! registers are reached (I/O ports, MMIO, MSRs) so the logic has host unit tests; only
//! the thin access layers touch hardware.
#![no_std]

pub mod cmos;
pub mod cpu_features;
pub mod i6300esb;
pub mod ioapic;
pub mod lapic;
pub mod pci;
pub mod pit;
pub mod port;
pub mod uart16550;
pub mod vtd;
