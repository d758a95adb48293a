//! CPUID 0x4000_0000..=0x4000_FFFF for a Xen partition: Xen's block at the base (Xen's own
//! placement without Viridian; `xen/include/public/arch-x86/cpuid.h`), zeros above it.

use crate::partition::Partition;
use bulkhead_abi::xen::{
    CPUID_BASE, CPUID_LAST, HYPERCALL_PAGE_MSR, SIGNATURE, VERSION_MAJOR, VERSION_MINOR, hvm_cpuid,
};
use core::arch::x86_64::CpuidResult;

/// The answer for hypervisor leaf `leaf` on this core's vCPU.
pub fn leaf(partition: &Partition, leaf: u32) -> CpuidResult {
    let zero = CpuidResult { eax: 0, ebx: 0, ecx: 0, edx: 0 };
    match leaf.wrapping_sub(CPUID_BASE) {
        // The largest Xen leaf and "XenVMMXenVMM".
        0 => CpuidResult { eax: CPUID_LAST, ebx: SIGNATURE[0], ecx: SIGNATURE[1], edx: SIGNATURE[2] },
        1 => CpuidResult { eax: VERSION_MAJOR << 16 | VERSION_MINOR, ..zero },
        // One hypercall page, installed through this MSR; no PV feature words.
        2 => CpuidResult { eax: 1, ebx: HYPERCALL_PAGE_MSR, ..zero },
        // TSC information: none offered (the TSC is the hardware's).
        3 => zero,
        // HVM features: the vCPU id and the domain id (the partition id) are given.
        4 => CpuidResult {
            eax: hvm_cpuid::VCPU_ID_PRESENT | hvm_cpuid::DOMID_PRESENT | hvm_cpuid::UPCALL_VECTOR,
            // The vCPU id is the VP index the Hyper-V interface would report.
            ebx: crate::hyperv::this_core().and_then(|core| crate::hyperv::vp_index(partition, core)).unwrap_or(0),
            ecx: u32::from(partition.config().id.0),
            edx: 0,
        },
        _ => zero,
    }
}
