//! The MSRs a partition may touch beyond those its MSR bitmap passes through.
//!
//! Passed through without exits (see `address_space.rs`): the syscall and segment-base
//! MSRs, TSC_AUX, PAT/EFER/SYSENTER (switched by the VMCS / VMCB; EFER exits on SVM, see
//! [`efer_write`]), IA32_TSC for reading,
//! and, where the CPU has an x2APIC, the partition's own local APIC registers (timer, TSC
//! deadline, EOI, TPR, SVR, ESR, SELF IPI), whose reserved bits the hardware checks; ICR
//! writes and the LVTs with a delivery mode (and LVT error) exit and are checked here
//! against the register map (`bulkhead_virt::x2apic`). Without an x2APIC every x2APIC MSR
//! exits and `apic_access.rs` performs it on the xAPIC, after the same checks. Everything
//! else exits here and is answered from this explicit list; anything not on it is refused
//! with #GP.
//!
//! An MSR on the list is forwarded to the hardware only if this CPU has it: the MTRRs
//! against MTRRCAP (variable pairs below VCNT, the fixed ones with FIX), MISC_ENABLE on
//! Intel only, TSC_DEADLINE with its CPUID bit. And every access the hypervisor makes on
//! a partition's behalf runs through `fixup.rs`, so one the hardware refuses anyway
//! becomes a #GP for the partition rather than an exception in the hypervisor.

use crate::lapic::access as apic_access;
use crate::partition::Partition;
use bulkhead_virt::apic_base::Mode;

const IA32_MTRR_FIX64K: u32 = 0x250;
const IA32_MTRR_FIX16K: [u32; 2] = [0x258, 0x259];
const IA32_MTRR_FIX4K: core::ops::RangeInclusive<u32> = 0x268..=0x26f;

const IA32_APIC_BASE: u32 = 0x1b;
const IA32_FEATURE_CONTROL: u32 = 0x3a;
const IA32_MTRRCAP: u32 = 0xfe;
const IA32_MISC_ENABLE: u32 = 0x1a0;
const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
const IA32_MTRR_FIRST: u32 = 0x200;
const IA32_MTRR_LAST: u32 = 0x26f;
/// Extended feature enable register (APM Vol. 2 3.1.7, SDM Vol. 3 2.2.1).
pub const EFER: u32 = 0xc000_0080;

/// MSRs the guest reads directly (writes exit: a partition must not move the TSC of the
/// core it shares with the hypervisor; its TSC write becomes its vCPU's TSC offset,
/// `tsc.rs`).
pub const READ_ONLY: &[u32] = &[
    0x10, // IA32_TSC
];

/// MSRs the guest reads and writes directly (MSR bitmap clear).
pub const PASS_THROUGH: &[u32] = &[
    0x174, // SYSENTER_CS
    0x175, // SYSENTER_ESP
    0x176, // SYSENTER_EIP
    0x277, // PAT
    EFER,
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0xc000_0100, // FS_BASE
    0xc000_0101, // GS_BASE
    0xc000_0102, // KERNEL_GS_BASE
    0xc000_0103, // TSC_AUX
];

/// x2APIC registers (SDM Table 11-6) a partition reads directly: ID through self-IPI (the
/// x2APIC hardware answers a register it lacks with #GP in the partition).
pub const X2APIC_READ: core::ops::RangeInclusive<u32> = 0x802..=0x83f;
/// x2APIC registers a partition writes directly (`bulkhead_virt::x2apic`), and the TSC
/// deadline.
pub const X2APIC_WRITE: &[u32] = &{
    const N: usize = bulkhead_virt::x2apic::WRITES_WITHOUT_EXIT.len();
    let mut msrs = [apic_access::TSC_DEADLINE; N + 1];
    let mut i = 0;
    while i < N {
        msrs[i] = bulkhead_virt::x2apic::WRITES_WITHOUT_EXIT[i];
        i += 1;
    }
    msrs
};

/// RDMSR of an MSR the partition may read, checked to exist; `None` (#GP) if the hardware
/// refuses it all the same.
fn hardware_safe(msr: u32) -> Option<u64> {
    // SAFETY: reading these MSRs has no side effect.
    unsafe { crate::cpu::fixup::read_msr_safe(msr) }.ok()
}

/// Whether this CPU has MTRR-range MSR `msr` (SDM Vol. 3 12.11.1, 12.11.2.2, 12.11.2.3):
/// MTRRCAP and MTRR_DEF_TYPE with CPUID.1:EDX.MTRR; the variable pairs
/// PHYSBASE/PHYSMASK n at 0x200 + 2n for n < MTRRCAP.VCNT; the eleven fixed-range MTRRs
/// only with MTRRCAP.FIX. Anything else in 0x200-0x26F does not exist (#GP).
fn mtrr_exists(msr: u32) -> bool {
    const CPUID_EDX_MTRR: u32 = 1 << 12;
    if core::arch::x86_64::__cpuid(1).edx & CPUID_EDX_MTRR == 0 {
        return false;
    }
    if matches!(msr, IA32_MTRRCAP | IA32_MTRR_DEF_TYPE) {
        return true;
    }
    let Some(cap) = hardware_safe(IA32_MTRRCAP) else { return false };
    let variable = u32::from(cap as u8);
    let fixed = cap & (1 << 8) != 0;
    match msr {
        IA32_MTRR_FIX64K => fixed,
        msr if IA32_MTRR_FIX16K.contains(&msr) || IA32_MTRR_FIX4K.contains(&msr) => fixed,
        msr @ IA32_MTRR_FIRST..=IA32_MTRR_LAST => (msr - IA32_MTRR_FIRST) / 2 < variable,
        _ => false,
    }
}

/// Answers an intercepted RDMSR; `None` means #GP.
pub fn read(msr: u32) -> Option<u64> {
    match msr {
        // The vCPU's own local APIC base and mode (`lapic.rs`).
        IA32_APIC_BASE => Some(crate::lapic::base()),
        // The x2APIC registers exist as MSRs in x2APIC mode only (SDM 11.12.2).
        msr if apic_access::X2APIC_MSRS.contains(&msr) => {
            if crate::lapic::mode() != Mode::X2Apic {
                return None;
            }
            apic_access::read(msr)
        }
        apic_access::TSC_DEADLINE if crate::cpu::capabilities::has_tsc_deadline() => hardware_safe(msr),
        // Locked, VMX disabled: partitions cannot nest.
        IA32_FEATURE_CONTROL => Some(1),
        IA32_MTRRCAP | IA32_MTRR_DEF_TYPE | IA32_MTRR_FIRST..=IA32_MTRR_LAST if mtrr_exists(msr) => hardware_safe(msr),
        // An Intel MSR (SDM Vol. 4 Table 2-2); AMD CPUs have none at 0x1A0.
        IA32_MISC_ENABLE if !crate::cpu::capabilities::is_amd() => hardware_safe(msr),
        _ => None,
    }
}

const X2APIC_ICR: u32 = apic_access::ICR;

/// Answers an intercepted WRMSR; false means #GP. (IA32_APIC_BASE is written through
/// `lapic::write_base`, which switches the vCPU's MSR bitmap.)
pub fn write(partition: &Partition, msr: u32, value: u64) -> bool {
    match msr {
        // The x2APIC registers exist as MSRs in x2APIC mode only (SDM 11.12.2).
        msr if apic_access::X2APIC_MSRS.contains(&msr) => {
            crate::lapic::mode() == Mode::X2Apic && apic_register_write(partition, msr, value)
        }
        apic_access::TSC_DEADLINE if crate::cpu::capabilities::has_tsc_deadline() => {
            // SAFETY: the TSC deadline of this core's APIC timer, which the partition owns; a
            // #GP is recovered.
            unsafe { crate::cpu::fixup::write_msr_safe(msr, value) }.is_ok()
        }
        // Cache attributes stay as the firmware set them for the whole board: a write to an
        // MTRR this CPU has is dropped.
        IA32_MTRR_DEF_TYPE | IA32_MTRR_FIRST..=IA32_MTRR_LAST => mtrr_exists(msr),
        _ => false,
    }
}

/// A write to one of the partition's local APIC registers, by its x2APIC MSR number, in
/// either mode (the xAPIC page emulation converts to this form): the ICR and the LVTs with
/// a delivery mode are checked; false means refused.
pub fn apic_register_write(partition: &Partition, msr: u32, value: u64) -> bool {
    // The register map first (existence, reserved bits, LVT modes), for both paths.
    if !apic_access::check_write(partition, msr, value) {
        return false;
    }
    match msr {
        X2APIC_ICR => send_ipi(partition, value),
        msr => apic_access::write(msr, value),
    }
}

/// A partition's write of `value` to EFER, where the backend intercepts it (SVM): the new
/// EFER, or `None` for #GP, as WRMSR decides on a CPU without SVM (APM Vol. 2 3.1.7):
/// only SCE, LME, LMA and NXE (where the CPU has NX) may be set; SVME is refused because
/// CPUID does not offer SVM to partitions. LME cannot change while paging is on (CR0.PG);
/// LMA is read-only and keeps its value, whatever is written.
pub fn efer_write(current: u64, value: u64, cr0: u64) -> Option<u64> {
    const SCE: u64 = 1 << 0;
    const LME: u64 = 1 << 8;
    const LMA: u64 = 1 << 10;
    const NXE: u64 = 1 << 11;
    const CR0_PG: u64 = 1 << 31;
    let nxe = if crate::cpu::capabilities::has_nx() { NXE } else { 0 };
    if value & !(SCE | LME | LMA | nxe) != 0 {
        return None;
    }
    if cr0 & CR0_PG != 0 && (value ^ current) & LME != 0 {
        return None;
    }
    Some((value & !LMA) | (current & LMA))
}

/// XSETBV on behalf of the guest: XCR0 only, and only values the SDM allows (Vol. 1 13.3):
/// x87 always on; AVX needs SSE; the three AVX-512 components all or none, and only with
/// AVX; MPX's two components together; AMX's two together; nothing the CPU lacks. Any
/// value the hardware would refuse must be refused here, or the #GP would hit the
/// hypervisor.
pub fn xsetbv(xcr: u32, value: u64) -> bool {
    const X87: u64 = 1 << 0;
    const SSE: u64 = 1 << 1;
    const AVX: u64 = 1 << 2;
    const MPX: u64 = 0b11 << 3;
    const AVX512: u64 = 0b111 << 5;
    const AMX: u64 = 0b11 << 17;
    let all_or_none = |bits: u64| value & bits == 0 || value & bits == bits;
    let valid = xcr == 0
        && value & X87 != 0
        && (value & AVX == 0 || value & SSE != 0)
        && all_or_none(AVX512)
        && (value & AVX512 == 0 || value & AVX != 0)
        && all_or_none(MPX)
        && all_or_none(AMX);
    let leaf = core::arch::x86_64::__cpuid_count(0xd, 0);
    let supported = u64::from(leaf.eax) | (u64::from(leaf.edx) << 32);
    if !valid || value & !supported != 0 || !crate::cpu::capabilities::host_xsave_enabled() {
        return false;
    }
    // SAFETY: a value the rules above accept; CR4.OSXSAVE is set on every core at boot; a
    // #GP (a rule this CPU adds) is recovered and refused.
    unsafe { crate::cpu::fixup::xsetbv_safe(0, value) }.is_ok()
}

/// An ICR write in either mode, in x2APIC format (SDM 11.12.9): the destination,
/// shorthand and delivery policy is `lapic::send_ipi`'s. False means refused.
fn send_ipi(partition: &Partition, icr: u64) -> bool {
    crate::lapic::send_ipi(partition, icr)
}

/// Returns this core's partition-visible state to its power-on shape before a partition
/// (re)starts on it: the local APIC (passed through) with every LVT masked, the timer and
/// TSC deadline stopped and nothing left in service, and XCR0 back to x87 only. A restarted
/// partition must not take its previous run's timer into the fresh payload.
pub fn reset_core_state() {
    reset_local_apic();
    if crate::cpu::capabilities::host_xsave_enabled() {
        // SAFETY: x87 only is always a valid XCR0.
        unsafe { core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") 1u32, in("edx") 0u32) };
    }
}

/// The partition's local APIC registers back to their power-on shape (SDM 11.4.7.1): every
/// LVT masked, the timer and TSC deadline stopped, nothing left in service. Also when the
/// partition disables its APIC through IA32_APIC_BASE (`lapic.rs`), which then must not
/// deliver anything.
pub fn reset_local_apic() {
    const MASKED: u64 = 1 << 16;
    for lvt in [0x82f, 0x832, 0x833, 0x834, 0x835, 0x836, 0x837] {
        apic_access::write(lvt, MASKED);
    }
    apic_access::write(0x838, 0); // timer initial count
    if crate::cpu::capabilities::has_tsc_deadline() {
        // SAFETY: this core's TSC deadline, which the partition on it owns.
        let _ = unsafe { crate::cpu::fixup::write_msr_safe(apic_access::TSC_DEADLINE, 0) };
    }
    // One EOI per in-service vector (ISR, 0x810..=0x817).
    let in_service: u32 = (0x810..=0x817).map(|r| (apic_access::read(r).unwrap_or(0) as u32).count_ones()).sum();
    for _ in 0..in_service {
        apic_access::write(apic_access::EOI, 0);
    }
}
