//! Intel VT-x backend: turns VMX on per core, programs one VMCS per vCPU, enters the guest
//! and decodes VM exits into the architecture-neutral `bulkhead_virt::exit::Exit`.
//!
//! It holds no partition policy: what an exit *means* is decided by the kernel. Field
//! encodings and control bits come from the `x86` crate; section numbers refer to the
//! Intel SDM Vol. 3C (VMX chapters 24-29 and Appendix A/B).
#![no_std]

pub mod controls;
pub mod exit;
pub mod vmcs;
pub mod vmxon;
pub mod world_switch;

/// A 4 KiB-aligned page, for the VMXON region, VMCS and bitmaps.
pub use bulkhead_virt::pages::Page;

/// A TSC stamp for the exit profile (`cargo xtask bench --profile`, kernel feature
/// `profile`); under Bochs `clock: sync=none` the TSC counts instructions.
#[cfg(feature = "profile")]
#[inline(always)]
pub fn profile_stamp() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC reads a counter and changes nothing else. Not `nomem`: the compiler
    // keeps memory accesses on their side of the stamp.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nostack, preserves_flags)) };
    u64::from(hi) << 32 | u64::from(lo)
}
