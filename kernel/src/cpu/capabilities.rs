//! Reads what the CPU offers a hypervisor and reports it in one structured log line.

use bulkhead_drivers::cpu_features::{Capabilities, RawCpuid, Vendor, VmxMsrs, msr};
use core::arch::x86_64::__cpuid;
use x86_64::registers::model_specific::Msr;

pub struct CpuReport {
    pub vendor: Vendor,
    pub caps: Capabilities,
}

fn read_msr(index: u32) -> u64 {
    // SAFETY: only called for VMX capability MSRs after CPUID reported VMX.
    unsafe { Msr::new(index).read() }
}

/// Collects CPUID leaves and, when VMX exists, its capability MSRs.
pub fn probe() -> CpuReport {
    let leaf0 = __cpuid(0);
    let leaf1 = __cpuid(1);
    let max_ext = __cpuid(0x8000_0000).eax;
    let mut raw = RawCpuid { vendor: [leaf0.ebx, leaf0.edx, leaf0.ecx], leaf1_ecx: leaf1.ecx, ..Default::default() };
    if max_ext >= 0x8000_0001 {
        let ext1 = __cpuid(0x8000_0001);
        raw.ext1_ecx = ext1.ecx;
        raw.ext1_edx = ext1.edx;
    }
    if max_ext >= 0x8000_000a {
        let svm = __cpuid(0x8000_000a);
        raw.svm_ebx = svm.ebx;
        raw.svm_edx = svm.edx;
    }
    let vmx = if raw.leaf1_ecx & (1 << 5) != 0 {
        let basic = read_msr(msr::IA32_VMX_BASIC);
        let truec = VmxMsrs::has_true_controls(basic);
        let procbased = read_msr(if truec { msr::IA32_VMX_TRUE_PROCBASED_CTLS } else { msr::IA32_VMX_PROCBASED_CTLS });
        Some(VmxMsrs {
            basic,
            pinbased: read_msr(if truec { msr::IA32_VMX_TRUE_PINBASED_CTLS } else { msr::IA32_VMX_PINBASED_CTLS }),
            procbased,
            procbased2: if procbased >> 63 != 0 { read_msr(msr::IA32_VMX_PROCBASED_CTLS2) } else { 0 },
        })
    } else {
        None
    };
    let vendor = Vendor::from_leaf0(raw.vendor[0], raw.vendor[1], raw.vendor[2]);
    AMD.store(vendor == Vendor::Amd, core::sync::atomic::Ordering::Relaxed);
    TSC_DEADLINE.store(raw.leaf1_ecx & (1 << 24) != 0, core::sync::atomic::Ordering::Relaxed);
    NX.store(raw.ext1_edx & (1 << 20) != 0, core::sync::atomic::Ordering::Relaxed);
    record_mtrrs(leaf1.edx);
    CpuReport { vendor, caps: Capabilities::decode(&raw, vmx.as_ref()) }
}

impl CpuReport {
    pub fn log(&self) {
        let c = &self.caps;
        crate::log::info!(
            "capabilities: vendor={=str} vmx={=bool} svm={=bool} ept_npt={=bool} unrestricted_guest={=bool} vpid={=bool} apic_register_virtualization={=bool} virtual_interrupt_delivery={=bool} posted_interrupts={=bool} x2apic={=bool} nrips={=bool} asids={=u32} nx={=bool} page_1gb={=bool}",
            self.vendor.name(),
            c.vmx,
            c.svm,
            c.second_level_paging,
            c.unrestricted_guest,
            c.vpid,
            c.apic_register_virtualization,
            c.virtual_interrupt_delivery,
            c.posted_interrupts,
            c.x2apic,
            c.nrips,
            c.asid_count,
            c.nx,
            c.page_1gb
        );
    }
}

static HOST_XSAVE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Enables XSAVE for this core (CR4.OSXSAVE) when the CPU has it, so the hypervisor can
/// execute XSETBV on a partition's behalf. Every core, before entering VMX.
pub fn enable_host_xsave() {
    use x86_64::registers::control::{Cr4, Cr4Flags};
    if __cpuid(1).ecx & (1 << 26) != 0 {
        // SAFETY: XSAVE exists (CPUID.1:ECX[26]); the hypervisor itself saves no extended state.
        unsafe { Cr4::update(|f| f.insert(Cr4Flags::OSXSAVE)) };
        HOST_XSAVE.store(true, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Turns this core's caches on (CR0.CD and NW clear) before it runs partitions. A core
/// started by INIT-SIPI comes up with both set (SDM Vol. 3A Table 10-1), and VM entry does
/// not load CR0.CD/NW from the guest state but keeps the host's (SDM Vol. 3C 28.3.2.1):
/// left set, the hypervisor and every VT-x partition on the core would run uncached.
pub fn enable_caches() {
    use x86_64::registers::control::{Cr0, Cr0Flags};
    let cr0 = Cr0::read();
    let off = Cr0Flags::CACHE_DISABLE | Cr0Flags::NOT_WRITE_THROUGH;
    if cr0.intersects(off) {
        // SAFETY: clearing CD and NW only enables caching (SDM Vol. 3A 13.5.1, Table 13-5:
        // normal cache mode); memory types stay as the MTRRs and PAT give them.
        unsafe { Cr0::write(cr0 - off) };
    }
}

pub fn host_xsave_enabled() -> bool {
    HOST_XSAVE.load(core::sync::atomic::Ordering::Relaxed)
}

static AMD: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
static TSC_DEADLINE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
static NX: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether this is an AMD CPU (recorded by [`probe`], so exit handlers need no CPUID).
pub fn is_amd() -> bool {
    AMD.load(core::sync::atomic::Ordering::Relaxed)
}

/// Whether the local APIC timer has TSC-deadline mode (CPUID.1:ECX[24], recorded by
/// [`probe`]).
pub fn has_tsc_deadline() -> bool {
    TSC_DEADLINE.load(core::sync::atomic::Ordering::Relaxed)
}

/// Whether the CPU has no-execute pages (CPUID.8000_0001:EDX[20], recorded by [`probe`]).
pub fn has_nx() -> bool {
    NX.load(core::sync::atomic::Ordering::Relaxed)
}

static MTRR_PRESENT: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
static MTRRCAP: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Records CPUID.1:EDX.MTRR and IA32_MTRRCAP (read-only, the same on every core of the
/// board) so that a partition's MTRR access is checked without CPUID or RDMSR.
fn record_mtrrs(leaf1_edx: u32) {
    const CPUID_EDX_MTRR: u32 = 1 << 12;
    let present = leaf1_edx & CPUID_EDX_MTRR != 0;
    // SAFETY: MTRRCAP exists where CPUID.1:EDX.MTRR is set; a #GP all the same is recovered.
    let cap =
        if present { unsafe { crate::cpu::fixup::read_msr_safe(bulkhead_virt::mtrr::MTRRCAP) }.ok() } else { None };
    MTRR_PRESENT.store(cap.is_some(), core::sync::atomic::Ordering::Relaxed);
    MTRRCAP.store(cap.unwrap_or(0), core::sync::atomic::Ordering::Relaxed);
}

/// This CPU's MTRRs (recorded by [`probe`]).
#[inline]
pub fn mtrrs() -> bulkhead_virt::mtrr::Mtrrs {
    bulkhead_virt::mtrr::Mtrrs::new(
        MTRR_PRESENT.load(core::sync::atomic::Ordering::Relaxed),
        MTRRCAP.load(core::sync::atomic::Ordering::Relaxed),
    )
}
