//! The physical CPU as the hypervisor runs on it: per-CPU state, descriptor tables,
//! capabilities, time, and recoverable instructions.

pub mod apic;
pub mod capabilities;
pub mod fixup;
pub mod gdt;
pub mod nmi_signal;
pub mod percpu;
pub mod time;
