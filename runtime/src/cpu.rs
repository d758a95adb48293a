//! The few privileged instructions the runtime uses, each in one small function. The app
//! runs at CPL 0 in its partition, identity-mapped; what it may touch is what the
//! hypervisor gives it (an access it does not own gets the architectural answer).

use core::arch::x86_64::{__cpuid_count, CpuidResult};

pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    __cpuid_count(leaf, subleaf)
}

pub fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: callers read only MSRs the partition has (architectural or reported by CPUID).
    unsafe { core::arch::asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nostack)) };
    u64::from(high) << 32 | u64::from(low)
}

pub fn wrmsr(msr: u32, value: u64) {
    // SAFETY: callers write only MSRs the partition has, with values that point at
    // memory the runtime owns.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
    };
}

pub fn outb(port: u16, value: u8) {
    // SAFETY: port output has no memory effects; the hypervisor decides what it does.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Stops this vCPU for good: interrupts off, HLT for ever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI and HLT only stop this vCPU.
        unsafe { core::arch::asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// IA32_FS_BASE (SDM Vol. 4, Table 2-2).
pub const IA32_FS_BASE: u32 = 0xC000_0100;

/// The Hyper-V interface is there: CPUID 0x4000_0000 says "Microsoft Hv" (TLFS
/// "Hypervisor Discovery").
pub fn hyperv_present() -> bool {
    // CPUID.1:ECX bit 31: a hypervisor is present.
    if cpuid(1, 0).ecx & (1 << 31) == 0 {
        return false;
    }
    let r = cpuid(0x4000_0000, 0);
    r.ebx == u32::from_le_bytes(*b"Micr")
        && r.ecx == u32::from_le_bytes(*b"osof")
        && r.edx == u32::from_le_bytes(*b"t Hv")
}

/// Disables interrupts; returns whether they were enabled.
pub fn interrupts_off() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS and clears IF; no memory effects.
    unsafe { core::arch::asm!("pushfq", "pop {}", "cli", out(reg) flags, options(nomem)) };
    flags & (1 << 9) != 0
}

/// Enables interrupts again if `enabled`.
pub fn restore_interrupts(enabled: bool) {
    if enabled {
        // SAFETY: the IDT handles every vector this CPU can receive.
        unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    }
}
