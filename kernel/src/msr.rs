//! The MSRs a partition may touch beyond those its MSR bitmap passes through.
//!
//! Passed through without exits (see `address_space.rs`): the syscall and segment-base
//! MSRs, TSC_AUX, PAT/EFER/SYSENTER (switched by the VMCS / VMCB; EFER exits on SVM, see
//! [`efer_write`]), IA32_TSC for reading,
//! and, where the CPU has an x2APIC, the partition's own local APIC registers (timer, TSC
//! deadline, EOI, TPR, LVTs...) except ICR writes and the LVTs with a delivery mode, which
//! are checked here. Without an x2APIC every x2APIC MSR exits and `apic_access.rs` performs
//! it on the xAPIC. Everything else exits here and is answered from this explicit list;
//! anything not on it is refused with #GP.

use crate::apic_access;
use crate::log::warn;
use crate::partition::Partition;
use bulkhead_virt::apic_base::Mode;
use x86_64::registers::model_specific::Msr;

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
/// core it shares with the hypervisor).
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

/// x2APIC registers (SDM Table 11-6) a partition reads directly: ID through self-IPI.
pub const X2APIC_READ: core::ops::RangeInclusive<u32> = 0x802..=0x83f;
/// x2APIC registers a partition writes directly: everything writable except the ICR.
pub const X2APIC_WRITE: &[u32] = &[
    0x808, // TPR
    0x80b, // EOI
    0x80f, // spurious vector
    0x828, // ESR
    0x832, // LVT timer (no delivery-mode field)
    0x838, // timer initial count
    0x83e, // timer divide configuration
    0x83f, // self IPI
    0x6e0, // IA32_TSC_DEADLINE
];

fn hardware(msr: u32) -> u64 {
    // SAFETY: only called for architectural MSRs present on every VMX-capable CPU.
    unsafe { Msr::new(msr).read() }
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
        apic_access::TSC_DEADLINE if crate::capabilities::has_tsc_deadline() => Some(hardware(msr)),
        // Locked, VMX disabled: partitions cannot nest.
        IA32_FEATURE_CONTROL => Some(1),
        IA32_MTRRCAP | IA32_MTRR_DEF_TYPE | IA32_MTRR_FIRST..=IA32_MTRR_LAST | IA32_MISC_ENABLE => Some(hardware(msr)),
        _ => None,
    }
}

const X2APIC_ICR: u32 = apic_access::ICR;

/// LVT registers with a delivery-mode field (CMCI, thermal, performance, LINT0, LINT1,
/// error): written through `lvt_write`, never directly.
const X2APIC_LVT_WITH_MODE: [u32; 6] = [0x82f, 0x833, 0x834, 0x835, 0x836, 0x837];

/// Answers an intercepted WRMSR; false means #GP. (IA32_APIC_BASE is written through
/// `lapic::write_base`, which switches the vCPU's MSR bitmap.)
pub fn write(partition: &Partition, msr: u32, value: u64) -> bool {
    match msr {
        // The x2APIC registers exist as MSRs in x2APIC mode only (SDM 11.12.2).
        msr if apic_access::X2APIC_MSRS.contains(&msr) => {
            crate::lapic::mode() == Mode::X2Apic && apic_register_write(partition, msr, value)
        }
        apic_access::TSC_DEADLINE if crate::capabilities::has_tsc_deadline() => {
            // SAFETY: the TSC deadline of this core's APIC timer, which the partition owns.
            unsafe { Msr::new(msr).write(value) };
            true
        }
        // Cache attributes stay as the firmware set them for the whole board.
        IA32_MTRR_DEF_TYPE | IA32_MTRR_FIRST..=IA32_MTRR_LAST => true,
        _ => false,
    }
}

/// A write to one of the partition's local APIC registers, by its x2APIC MSR number, in
/// either mode (the xAPIC page emulation converts to this form): the ICR and the LVTs with
/// a delivery mode are checked; false means refused.
pub fn apic_register_write(partition: &Partition, msr: u32, value: u64) -> bool {
    match msr {
        X2APIC_ICR => send_ipi(partition, value),
        msr if X2APIC_LVT_WITH_MODE.contains(&msr) => lvt_write(partition, msr, value),
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
    let nxe = if crate::capabilities::has_nx() { NXE } else { 0 };
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
    if !valid || value & !supported != 0 || !crate::capabilities::host_xsave_enabled() {
        return false;
    }
    // SAFETY: a value the rules above accept; CR4.OSXSAVE is set on every core at boot.
    unsafe { core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32, in("edx") (value >> 32) as u32) };
    true
}

/// An ICR write in either mode, in x2APIC format (SDM 11.12.9): the destination,
/// shorthand and delivery policy is `lapic::send_ipi`'s. False means refused.
fn send_ipi(partition: &Partition, icr: u64) -> bool {
    crate::lapic::send_ipi(partition, icr)
}

/// An LVT write (SDM 11.5.1): only fixed delivery (mode 000) or masked entries. NMI, SMI,
/// INIT and ExtINT would reach the hypervisor or the firmware, which the partition does
/// not own.
fn lvt_write(partition: &Partition, msr: u32, value: u64) -> bool {
    const MASKED: u64 = 1 << 16;
    let mode = (value >> 8) & 0b111;
    if mode != 0 && value & MASKED == 0 {
        if partition.counters.msr.hit().is_some() {
            warn!(
                "partition {=str}: LVT {=u32:#x} <- {=u64:#x} refused (#GP): delivery mode {=u64} is reserved for the hypervisor",
                partition.name(),
                msr,
                value,
                mode
            );
        }
        return false;
    }
    apic_access::write(msr, value)
}

/// Returns this core's partition-visible state to its power-on shape before a partition
/// (re)starts on it: the local APIC (passed through) with every LVT masked, the timer and
/// TSC deadline stopped and nothing left in service, and XCR0 back to x87 only. A restarted
/// partition must not take its previous run's timer into the fresh payload.
pub fn reset_core_state() {
    reset_local_apic();
    if crate::capabilities::host_xsave_enabled() {
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
    if crate::capabilities::has_tsc_deadline() {
        // SAFETY: this core's TSC deadline, which the partition on it owns.
        unsafe { Msr::new(apic_access::TSC_DEADLINE).write(0) };
    }
    // One EOI per in-service vector (ISR, 0x810..=0x817).
    let in_service: u32 = (0x810..=0x817).map(|r| (apic_access::read(r).unwrap_or(0) as u32).count_ones()).sum();
    for _ in 0..in_service {
        apic_access::write(apic_access::EOI, 0);
    }
}
