//! Entering VMX operation on one core (SDM 24.7, 24.8).

use crate::Page;
use x86_64::registers::control::{Cr0, Cr4, Cr4Flags};
use x86_64::registers::model_specific::Msr;

const IA32_FEATURE_CONTROL: u32 = 0x3a;
const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;
pub const IA32_VMX_BASIC: u32 = 0x480;
pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmxonError {
    /// The firmware locked IA32_FEATURE_CONTROL with VMX disabled.
    DisabledByFirmware,
    /// VMXON itself failed (the core was already in VMX operation, or bad state).
    VmxonFailed,
}

fn rdmsr(msr: u32) -> u64 {
    // SAFETY: the VMX capability MSRs and IA32_FEATURE_CONTROL exist when CPUID reports
    // VMX, which the caller of `enable` checked.
    unsafe { Msr::new(msr).read() }
}

/// The VMCS revision identifier (IA32_VMX_BASIC bits 30:0), written at the start of the
/// VMXON region and of every VMCS.
pub fn revision_id() -> u32 {
    rdmsr(IA32_VMX_BASIC) as u32 & 0x7fff_ffff
}

/// Turns VMX on for this core with `region` as its VMXON region.
///
/// # Safety
/// CPUID must report VMX; `region` must stay reserved for this core while VMX is on.
pub unsafe fn enable(region: &mut Page) -> Result<(), VmxonError> {
    let control = rdmsr(IA32_FEATURE_CONTROL);
    if control & FEATURE_CONTROL_LOCK != 0 {
        if control & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
            return Err(VmxonError::DisabledByFirmware);
        }
    } else {
        // SAFETY: unlocked, so writable; enabling VMX and locking is the firmware's job
        // that it left to us (SDM 24.7).
        unsafe {
            Msr::new(IA32_FEATURE_CONTROL).write(control | FEATURE_CONTROL_LOCK | FEATURE_CONTROL_VMX_OUTSIDE_SMX)
        };
    }
    // CR0/CR4 must satisfy the fixed bits in VMX operation (SDM A.7, A.8).
    let cr0 = (Cr0::read_raw() | rdmsr(IA32_VMX_CR0_FIXED0)) & rdmsr(IA32_VMX_CR0_FIXED1);
    let cr4 = (Cr4::read_raw() | rdmsr(IA32_VMX_CR4_FIXED0) | Cr4Flags::VIRTUAL_MACHINE_EXTENSIONS.bits())
        & rdmsr(IA32_VMX_CR4_FIXED1);
    // SAFETY: only bits VMX requires are set; the kernel relies on none of them being clear.
    unsafe {
        Cr0::write_raw(cr0);
        Cr4::write_raw(cr4);
    }
    region.0[..4].copy_from_slice(&revision_id().to_le_bytes());
    // SAFETY: the region is 4 KiB aligned, holds the revision id and belongs to this core.
    unsafe { x86::bits64::vmx::vmxon(region.address()) }.map_err(|_| VmxonError::VmxonFailed)
}
