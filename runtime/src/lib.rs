//! The Bulkhead unikernel runtime: the system interface (hermit-abi 0.5.2) that the Rust
//! standard library calls on the `x86_64-unknown-hermit` target, implemented on what a
//! Bulkhead partition has: its memory, its vCPU, the Hyper-V interface of the hypervisor.
//! An app (a normal `std` program) and this runtime link into one ELF that the partition
//! loader starts at [`_start`](start); docs/unikernel.md is the guide and maps every call.
//!
//! On `x86_64-unknown-none` this is the runtime itself (`no_std`). On the host only the
//! pure parts build, for their unit tests: [`line_buffer`], [`tls_layout`],
//! [`clock_math`], [`command_line`], [`heap_range`], [`inbox`], the scheduler's rules ([`sched`]).
#![cfg_attr(target_os = "none", no_std)]

pub mod clock_math;
pub mod command_line;
pub mod heap_range;
pub mod inbox;
pub mod line_buffer;
pub mod sched;
pub mod tls_layout;

#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod clock;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod cpu;
#[cfg(target_os = "none")]
mod entropy;
#[cfg(target_os = "none")]
mod exceptions;
#[cfg(target_os = "none")]
mod exit;
#[cfg(target_os = "none")]
mod fault;
#[cfg(target_os = "none")]
mod heap;
#[cfg(target_os = "none")]
mod hypercall;
#[cfg(target_os = "none")]
mod mem;
#[cfg(target_os = "none")]
mod messaging;
#[cfg(target_os = "none")]
mod panic;
#[cfg(target_os = "none")]
mod process;
#[cfg(target_os = "none")]
mod simd;
#[cfg(target_os = "none")]
mod start;
#[cfg(target_os = "none")]
mod tls;
#[cfg(target_os = "none")]
mod unsupported;
