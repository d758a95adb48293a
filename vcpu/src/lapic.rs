//! The local APIC's mode. Every vCPU starts in xAPIC mode, as after a hardware reset
//! (SDM Vol. 3A 11.12.5.1: IA32_APIC_BASE EN=1, EXTD=0); guests that use the x2APIC
//! registers (MSRs 0x800-0x8ff) switch to x2APIC mode first, as Linux does.

/// IA32_APIC_BASE.
pub const APIC_BASE: u32 = 0x1b;
/// IA32_APIC_BASE bits: BSP, x2APIC mode (EXTD), global enable (EN).
pub const BSP: u64 = 1 << 8;
pub const EXTD: u64 = 1 << 10;
pub const EN: u64 = 1 << 11;
/// The xAPIC register page (the default base).
pub const XAPIC_BASE: u64 = 0xfee0_0000;

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU.
    unsafe { core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack)) };
    u64::from(hi) << 32 | u64::from(lo)
}

/// IA32_APIC_BASE of this vCPU.
pub fn apic_base() -> u64 {
    rdmsr(APIC_BASE)
}

fn wrmsr(msr: u32, value: u64) {
    // SAFETY: a legal IA32_APIC_BASE transition (callers follow the SDM's state machine).
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
    };
}

/// Switches this vCPU's local APIC to x2APIC mode (from disabled through xAPIC mode,
/// the legal path: SDM 11.12.5); nothing if it is in x2APIC mode already.
pub fn enter_x2apic_mode() {
    let base = rdmsr(APIC_BASE);
    if base & EXTD != 0 {
        return;
    }
    if base & EN == 0 {
        wrmsr(APIC_BASE, base | EN);
    }
    wrmsr(APIC_BASE, base | EN | EXTD);
}

/// Reads the xAPIC register at `offset` of the xAPIC page.
pub fn xapic_read(offset: u32) -> u32 {
    // SAFETY: the local APIC's register page (identity-mapped by the loader's tables);
    // the hypervisor emulates it.
    unsafe { core::ptr::read_volatile((XAPIC_BASE + u64::from(offset)) as *const u32) }
}

/// Writes the xAPIC register at `offset` of the xAPIC page.
pub fn xapic_write(offset: u32, value: u32) {
    // SAFETY: as in `xapic_read`.
    unsafe { core::ptr::write_volatile((XAPIC_BASE + u64::from(offset)) as *mut u32, value) }
}
