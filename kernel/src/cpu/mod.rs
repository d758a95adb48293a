//! The physical CPU as the hypervisor runs on it: per-CPU state, descriptor tables,
//! capabilities, time, and recoverable instructions.

pub mod capabilities;
pub mod fixup;
pub mod gdt;
pub mod idt;
pub mod percpu;
pub mod time;
