//! The MSRs a partition may touch beyond those its MSR bitmap passes through.
//!
//! Passed through without exits (`bulkhead_virt::msr_map`, laid out by `backend/address_space.rs`): the syscall and segment-base
//! MSRs, TSC_AUX, PAT/EFER/SYSENTER (switched by the VMCS / VMCB; EFER exits on SVM, see
//! `bulkhead_virt::control_registers::efer_write`), IA32_TSC for reading,
//! and, where the CPU has an x2APIC, the partition's own local APIC registers (timer, TSC
//! deadline, EOI, TPR, SVR, ESR, SELF IPI), whose reserved bits the hardware checks; ICR
//! writes and the LVTs with a delivery mode (and LVT error) exit and are checked here
//! against the register map (`bulkhead_virt::x2apic`). Without an x2APIC every x2APIC MSR
//! exits and `lapic/access.rs` performs it on the xAPIC, after the same checks. Everything
//! else exits here and is answered from this explicit list; anything not on it is refused
//! with #GP.
//!
//! An MSR on the list is forwarded to the hardware only if this CPU has it: the MTRRs
//! against MTRRCAP (variable pairs below VCNT, the fixed ones with FIX; CPUID.1:EDX.MTRR
//! and MTRRCAP are recorded at boot, `bulkhead_virt::mtrr`, and MTRRCAP itself is answered
//! from that record, as it is read-only), TSC_DEADLINE with its CPUID bit. MISC_ENABLE
//! exists on Intel only and is always answered there (`bulkhead_virt::misc_enable`). And every access the hypervisor makes on
//! a partition's behalf runs through `cpu/fixup.rs`, so one the hardware refuses anyway
//! becomes a #GP for the partition rather than an exception in the hypervisor.

use crate::backend::Backend;
use crate::exits::action::Action;
use crate::lapic::access as apic_access;
use crate::log::warn;
use crate::partition::Partition;
use bulkhead_virt::apic_base::Mode;
use bulkhead_virt::model_msr;
use bulkhead_virt::msr_map::EFER;
use bulkhead_virt::mtrr;

const IA32_APIC_BASE: u32 = 0x1b;
const IA32_FEATURE_CONTROL: u32 = 0x3a;
const IA32_MISC_ENABLE: u32 = 0x1a0;

/// RDMSR of an MSR the partition may read, checked to exist; `None` (#GP) if the hardware
/// refuses it all the same.
fn hardware_safe(msr: u32) -> Option<u64> {
    // SAFETY: reading these MSRs has no side effect.
    unsafe { crate::cpu::fixup::read_msr_safe(msr) }.ok()
}

/// Answers an intercepted RDMSR; `None` means #GP.
#[inline(always)]
fn allowed_read(msr: u32) -> Option<u64> {
    match msr {
        // The vCPU's own local APIC base and mode (`lapic/`).
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
        // Read-only: the value recorded at boot (`bulkhead_virt::mtrr`).
        mtrr::MTRRCAP => crate::cpu::capabilities::mtrrs().cap(),
        mtrr::DEF_TYPE | mtrr::VARIABLE_FIRST..=mtrr::LAST if crate::cpu::capabilities::mtrrs().exists(msr) => {
            hardware_safe(msr)
        }
        // An Intel MSR every Intel 64 CPU has (SDM Vol. 4 Table 2-2), so answered even where
        // the CPU (an emulator) refuses it (`bulkhead_virt::misc_enable`); AMD CPUs have none.
        IA32_MISC_ENABLE if !crate::cpu::capabilities::is_amd() => {
            Some(bulkhead_virt::misc_enable::partition_value(hardware_safe(msr)))
        }
        // Fixed values for the microcode revision and AMD's SYSCFG and HWCR; the real
        // registers are the board's (`bulkhead_virt::model_msr`).
        msr => model_msr::read(msr, crate::cpu::capabilities::is_amd()),
    }
}

/// Answers an intercepted WRMSR; false means #GP. (IA32_APIC_BASE is written through
/// `lapic::write_base`, which switches the vCPU's MSR bitmap.)
#[inline(always)]
fn allowed_write(partition: &Partition, msr: u32, value: u64) -> bool {
    match msr {
        // EOI, the end of every interrupt where the x2APIC is emulated on an xAPIC (SVM
        // here): the register map's one rule for it, a zero value (SDM 11.12.1.3), checked
        // in line; any other value goes the general way below and is refused there.
        apic_access::EOI if value == 0 && crate::lapic::mode() == Mode::X2Apic => {
            apic_access::perform_write(apic_access::EOI, 0)
        }
        // The x2APIC registers exist as MSRs in x2APIC mode only (SDM 11.12.2).
        msr if apic_access::X2APIC_MSRS.contains(&msr) => {
            crate::lapic::mode() == Mode::X2Apic && crate::lapic::apic_register_write(partition, msr, value)
        }
        apic_access::TSC_DEADLINE if crate::cpu::capabilities::has_tsc_deadline() => {
            // SAFETY: the TSC deadline of this core's APIC timer, which the partition owns; a
            // #GP is recovered.
            unsafe { crate::cpu::fixup::write_msr_safe(msr, value) }.is_ok()
        }
        // Cache attributes stay as the firmware set them for the whole board: a write to an
        // MTRR this CPU has is dropped.
        mtrr::DEF_TYPE | mtrr::VARIABLE_FIRST..=mtrr::LAST => crate::cpu::capabilities::mtrrs().exists(msr),
        // Dropped where the hardware would take them and nothing changes
        // (`bulkhead_virt::model_msr`).
        msr => model_msr::write_accepted(msr, value, crate::cpu::capabilities::is_amd()),
    }
}

/// An RDMSR exit: the value in EDX:EAX, or #GP and a rate-limited log line.
#[inline(always)]
pub fn read_exit<B: Backend>(partition: &Partition, backend: &mut B, msr: u32) -> Action {
    match read_msr(partition, backend, msr) {
        Some(value) => {
            let regs = backend.registers();
            regs.rax = value & 0xffff_ffff;
            regs.rdx = value >> 32;
            Action::Resume { skip: true }
        }
        None => {
            if let Some(n) = partition.counters.msr.hit() {
                warn!(
                    "partition {=str}: rdmsr {=u32:#x} refused (#GP), rip {=u64:#x} (#{=u32})",
                    partition.name(),
                    msr,
                    backend.rip(),
                    n
                );
            }
            Action::InjectGp
        }
    }
}

/// A WRMSR exit: performed, or #GP and a rate-limited log line.
#[inline(always)]
pub fn write_exit<B: Backend>(partition: &Partition, backend: &mut B, msr: u32, value: u64) -> Action {
    // A crash report (Hyper-V CRASH_CTL with CrashNotify) is logged, then handled as a fault.
    if msr == bulkhead_abi::hyperv::msr::CRASH_CTL
        && !crate::xen::speaks_xen(partition)
        && crate::hyperv::crash::notify(partition, value)
    {
        return Action::Fault(crate::partition::Fault::GuestCrash);
    }
    if write_msr(partition, backend, msr, value) {
        Action::Resume { skip: true }
    } else {
        if let Some(n) = partition.counters.msr.hit() {
            warn!(
                "partition {=str}: wrmsr {=u32:#x} <- {=u64:#x} refused (#GP), rip {=u64:#x} (#{=u32})",
                partition.name(),
                msr,
                value,
                backend.rip(),
                n
            );
        }
        Action::InjectGp
    }
}

/// An intercepted RDMSR: EFER from the backend (intercepted on SVM only), the TSC MSRs,
/// the synthetic Hyper-V MSRs, then the allowlist. `None` is #GP.
///
/// One `match` on the number, the allowlist's arms inlined into it, so that the compiler
/// turns it into a search on the number rather than one test after another (issue 19,
/// `cargo xtask bench` `msr-exit`).
#[inline(always)]
fn read_msr<B: Backend>(partition: &Partition, backend: &mut B, msr: u32) -> Option<u64> {
    match msr {
        EFER => Some(backend.guest_efer()),
        super::tsc::IA32_TSC | super::tsc::IA32_TSC_ADJUST | apic_access::TSC_DEADLINE => {
            super::tsc::read(backend, msr)
        }
        crate::hyperv::synthetic_msr::FIRST..=crate::hyperv::synthetic_msr::LAST => {
            if crate::xen::speaks_xen(partition) {
                crate::xen::hypercall::read_msr(msr)
            } else {
                crate::hyperv::synthetic_msr::read(partition, msr)
            }
        }
        msr => allowed_read(msr),
    }
}

/// An intercepted WRMSR, dispatched as [`read_msr`] (one `match`). False is #GP.
#[inline(always)]
fn write_msr<B: Backend>(partition: &Partition, backend: &mut B, msr: u32, value: u64) -> bool {
    match msr {
        EFER => {
            let (current, cr0) = (backend.guest_efer(), backend.guest_cr0());
            bulkhead_virt::control_registers::efer_write(current, value, cr0, crate::cpu::capabilities::has_nx())
                .map(|efer| backend.set_guest_efer(efer))
                .is_some()
        }
        super::tsc::IA32_TSC | super::tsc::IA32_TSC_ADJUST | apic_access::TSC_DEADLINE => {
            let before = backend.tsc_offset();
            let done = super::tsc::write(backend, msr, value);
            if done && backend.tsc_offset() != before {
                crate::hyperv::synthetic_msr::tsc_offset_changed(partition, backend.tsc_offset());
            }
            done
        }
        crate::hyperv::synthetic_msr::FIRST..=crate::hyperv::synthetic_msr::LAST => {
            if crate::xen::speaks_xen(partition) {
                crate::xen::hypercall::write_page_msr(partition, msr, value)
            } else {
                crate::hyperv::synthetic_msr::write(partition, msr, value)
            }
        }
        crate::lapic::IA32_APIC_BASE => crate::lapic::write_base(value, |on| backend.set_x2apic_passthrough(on)),
        msr => allowed_write(partition, msr, value),
    }
}
