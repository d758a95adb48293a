//! The synthetic MSRs 0x4000_0000..=0x4000_01FF (TLFS "Hypercall Interface", "Timers",
//! "Inter-Partition Communication", "Guest Crash Enlightenment"; numbers and layouts in
//! `bulkhead_abi::hyperv::msr`).
//! Pages a partition names here (hypercall page, reference TSC page, VP assist page, SIMP,
//! SIEFP) must lie in its own writable memory; any other address is refused with #GP, as
//! an address outside the guest-physical space is on Hyper-V (the VP assist page too,
//! although the hypervisor never touches it: a partition gets the same answer for every
//! page it names). A set reserved bit, a SINT vector below 16 while unmasked, and a write
//! to a read-only or unknown MSR are refused with #GP before anything changes
//! (`bulkhead_virt::hyperv_msr::check_write`). The per-VP registers are this CPU's own
//! (`this_vp`), never another CPU's.

use super::{PartitionRegisters, partition_registers, private_memory, synic, this_core, this_vp, vp_index};
use crate::partition::Partition;
use bulkhead_abi::hyperv::msr::{self, SINT_FIRST, SINT_LAST, SYNIC_VERSION};
use bulkhead_abi::hyperv::reference_tsc::{SEQUENCE_INVALID, next_sequence, scale_for};
use bulkhead_abi::hyperv::{CrashCtl, HypercallMsr, PageMsr, Scontrol};
use bulkhead_virt::hyperv_clock;
use core::sync::atomic::Ordering;

/// The synthetic range this module answers (TLFS "Synthetic MSRs").
pub const FIRST: u32 = 0x4000_0000;
pub const LAST: u32 = 0x4000_01ff;

/// TIME_REF_COUNT: 100 ns ticks since the partition's start, on the hardware TSC (the
/// same for every vCPU whatever TSC offset its guest set).
fn time_ref_count(registers: &PartitionRegisters) -> u64 {
    let scale = scale_for(crate::cpu::time::tsc_hz());
    hyperv_clock::time_since(registers.start_tsc.load(Ordering::Acquire), crate::cpu::time::rdtsc(), scale)
}

/// Answers RDMSR of a synthetic MSR; `None` is #GP.
pub fn read(partition: &Partition, msr: u32) -> Option<u64> {
    let registers = partition_registers(partition);
    let vp = this_vp();
    Some(match msr {
        msr::GUEST_OS_ID => registers.guest_os_id.load(Ordering::Acquire),
        msr::HYPERCALL => registers.hypercall.load(Ordering::Acquire),
        msr::VP_INDEX => u64::from(vp_index(partition, this_core()?)?),
        msr::TIME_REF_COUNT => time_ref_count(registers),
        msr::REFERENCE_TSC => registers.reference_tsc.load(Ordering::Acquire),
        msr::TSC_FREQUENCY => crate::cpu::time::tsc_hz(),
        msr::APIC_FREQUENCY => crate::cpu::time::apic_timer_hz(),
        msr::CRASH_P0..=msr::CRASH_P4 => registers.crash[(msr - msr::CRASH_P0) as usize].load(Ordering::Acquire),
        msr::CRASH_CTL => CrashCtl::CAPABILITIES.value(),
        msr::VP_ASSIST_PAGE => vp.vp_assist_page.load(Ordering::Acquire),
        msr::SCONTROL => vp.scontrol.load(Ordering::Acquire),
        msr::SVERSION => SYNIC_VERSION,
        msr::SIEFP => vp.siefp.load(Ordering::Acquire),
        msr::SIMP => vp.simp.load(Ordering::Acquire),
        msr::EOM => 0,
        SINT_FIRST..=SINT_LAST => vp.sints[(msr - SINT_FIRST) as usize].load(Ordering::Acquire),
        _ => return None,
    })
}

/// Performs WRMSR of a synthetic MSR; false is #GP.
pub fn write(partition: &Partition, msr: u32, value: u64) -> bool {
    if bulkhead_virt::hyperv_msr::check_write(msr, value).is_err() {
        return false;
    }
    let registers = partition_registers(partition);
    let vp = this_vp();
    match msr {
        msr::GUEST_OS_ID => {
            registers.guest_os_id.store(value, Ordering::Release);
            if value == 0 {
                // No guest OS identity, no hypercall page (TLFS "Hypercall Interface").
                let hypercall = HypercallMsr::decode(registers.hypercall.load(Ordering::Acquire));
                registers.hypercall.store(hypercall.enabled(false).value(), Ordering::Release);
            }
            true
        }
        msr::HYPERCALL => write_hypercall(partition, registers, value),
        msr::REFERENCE_TSC => {
            let page = PageMsr::decode(value);
            if page.is_enabled() && private_memory(partition, page.gpa(), 4096, true).is_none() {
                return false;
            }
            let mut sequence = registers.reference_tsc_page.lock();
            registers.reference_tsc.store(value, Ordering::Release);
            fill_reference_tsc_page(partition, registers, &mut sequence);
            true
        }
        msr::CRASH_P0..=msr::CRASH_P4 => {
            registers.crash[(msr - msr::CRASH_P0) as usize].store(value, Ordering::Release);
            true
        }
        // A report (CrashNotify) is taken before this (`crash::notify`); anything else
        // written here has no effect, and reads return the capabilities.
        msr::CRASH_CTL => true,
        // Linux writes it unconditionally; the page serves enlightenments not offered here,
        // so the hypervisor never writes it, but it must be the partition's own.
        msr::VP_ASSIST_PAGE => {
            let page = PageMsr::decode(value);
            if page.is_enabled() && private_memory(partition, page.gpa(), 4096, true).is_none() {
                return false;
            }
            vp.vp_assist_page.store(value, Ordering::Release);
            true
        }
        msr::SCONTROL => {
            vp.scontrol.store(Scontrol::decode(value).value(), Ordering::Release);
            vp.refresh_pages(partition);
            true
        }
        msr::SIEFP | msr::SIMP => {
            let page = PageMsr::decode(value);
            if page.is_enabled() {
                let Some(host) = private_memory(partition, page.gpa(), 4096, true) else { return false };
                // A fresh page starts empty (as KVM does): no stale message or flag.
                // SAFETY: a page of the partition's own RAM, identity-mapped; the
                // partition's own vCPU is in the hypervisor, and senders write it only
                // through the SynIC, whose state this write replaces.
                unsafe { core::ptr::write_bytes(host as *mut u8, 0, 4096) };
            }
            let register = if msr == msr::SIMP { &vp.simp } else { &vp.siefp };
            register.store(value, Ordering::Release);
            vp.refresh_pages(partition);
            true
        }
        msr::EOM => {
            synic::end_of_message(partition);
            true
        }
        // Vector and reserved bits checked above.
        SINT_FIRST..=SINT_LAST => {
            vp.sints[(msr - SINT_FIRST) as usize].store(value, Ordering::Release);
            true
        }
        // Read-only: VP_INDEX, TIME_REF_COUNT, the frequencies, SVERSION; anything else is
        // not offered.
        _ => false,
    }
}

/// HYPERCALL (TLFS "Hypercall Interface"): enabling needs a guest OS identity (the enable bit stays clear
/// otherwise) and fills the page at GPFN with the call sequence of this CPU's vendor:
/// `vmcall; ret` (Intel) or `vmmcall; ret` (AMD), as the guest calls offset 0. Once locked
/// the register ignores writes.
fn write_hypercall(partition: &Partition, registers: &PartitionRegisters, value: u64) -> bool {
    const VMCALL_RET: [u8; 4] = [0x0f, 0x01, 0xc1, 0xc3];
    const VMMCALL_RET: [u8; 4] = [0x0f, 0x01, 0xd9, 0xc3];
    let current = HypercallMsr::decode(registers.hypercall.load(Ordering::Acquire));
    if current.is_locked() {
        return true;
    }
    let mut requested = HypercallMsr::decode(value);
    if registers.guest_os_id.load(Ordering::Acquire) == 0 {
        requested = requested.enabled(false);
    }
    if requested.is_enabled() {
        let Some(host) = private_memory(partition, requested.gpa(), 4096, true) else { return false };
        let code = if crate::cpu::capabilities::is_amd() { VMMCALL_RET } else { VMCALL_RET };
        // SAFETY: the first bytes of a page of the partition's own RAM (identity-mapped);
        // its vCPU is in the hypervisor.
        unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), host as *mut u8, code.len()) };
    }
    registers.hypercall.store(requested.value(), Ordering::Release);
    true
}

/// After the TSC offset of this core's vCPU changed (a guest write of IA32_TSC or
/// IA32_TSC_ADJUST, `exits/tsc.rs`): record it and rewrite the partition's reference TSC
/// page, which must follow the TSC its guests read.
pub fn tsc_offset_changed(partition: &Partition, offset: u64) {
    this_vp().tsc_offset.store(offset, Ordering::Release);
    let registers = partition_registers(partition);
    let mut sequence = registers.reference_tsc_page.lock();
    fill_reference_tsc_page(partition, registers, &mut sequence);
}

/// Writes the reference TSC page the REFERENCE_TSC MSR enables, if it does (TLFS
/// "Partition Reference TSC Mechanism"): invalidate the sequence, write scale and offset,
/// then a new valid sequence, so a reader never combines old and new values. `sequence`
/// is the last one written, from the `reference_tsc_page` lock the caller holds.
///
/// One page serves all of the partition's vCPUs, but each vCPU reads its own TSC (the
/// hardware's plus its offset). While they all have the same offset (always, unless a
/// guest wrote its TSC on one vCPU only) the page carries that offset
/// (`hyperv_clock::page_offset`); otherwise no single page is right for all of them and it
/// stays invalid (sequence 0), so readers fall back to TIME_REF_COUNT, as the TLFS tells
/// them to, until the offsets agree again.
fn fill_reference_tsc_page(partition: &Partition, registers: &PartitionRegisters, sequence: &mut u32) {
    let page = PageMsr::decode(registers.reference_tsc.load(Ordering::Acquire));
    if !page.is_enabled() {
        return;
    }
    // Checked when the MSR was written; the memory map does not change.
    let Some(host) = private_memory(partition, page.gpa(), 4096, true) else { return };
    let mut offsets = super::partition_vps(partition).map(|vp| vp.tsc_offset.load(Ordering::Acquire));
    let first = offsets.next().unwrap_or(0);
    let agreed = offsets.all(|offset| offset == first).then_some(first);
    let scale = scale_for(crate::cpu::time::tsc_hz());
    let offset = agreed.map(|vcpu| hyperv_clock::page_offset(registers.start_tsc.load(Ordering::Acquire), vcpu, scale));
    // SAFETY: the page's sequence, scale and offset fields (offsets 0, 8, 16), in the
    // partition's own RAM (identity-mapped); writers are serialized by the caller's lock.
    unsafe {
        let field = host as *mut u32;
        core::ptr::write_volatile(field, SEQUENCE_INVALID);
        core::sync::atomic::fence(Ordering::SeqCst);
        if let Some(offset) = offset {
            core::ptr::write_volatile((host + 8) as *mut u64, scale);
            core::ptr::write_volatile((host + 16) as *mut i64, offset);
            core::sync::atomic::fence(Ordering::SeqCst);
            *sequence = next_sequence(*sequence);
            core::ptr::write_volatile(field, *sequence);
        }
    }
}
