//! CPUID 0x4000_0000..=0x4000_00FF: the hypervisor leaves a partition sees (TLFS "Feature
//! Discovery"). Bulkhead presents itself as a Hyper-V compatible hypervisor offering
//! exactly what it implements, so that Linux's `ms_hyperv_platform()` accepts it (it
//! needs the "Microsoft Hv" vendor, a maximum leaf of at least 0x4000_0005 and the
//! HYPERCALL and VP_INDEX MSR privileges) and never takes it for the root partition.

use crate::partition::Partition;
use bulkhead_abi::hyperv::cpuid::{self, features_edx, privileges_eax, privileges_ebx, recommendations_eax};
use bulkhead_board::tables::ConnectionKind;
use core::arch::x86_64::CpuidResult;
use core::sync::atomic::Ordering;

/// The synthetic MSRs every partition may use (0x4000_0003 EAX). Not TSC_INVARIANT:
/// Linux would then prefer the plain TSC to the reference TSC page and trust it as
/// reliable across vCPUs, which per-vCPU TSC offsets do not promise (docs/hyperv.md,
/// "Time"); the page reads without exits all the same.
const PRIVILEGES_EAX: u32 = privileges_eax::HYPERCALL_MSRS
    | privileges_eax::VP_INDEX
    | privileges_eax::SYNIC
    | privileges_eax::TIME_REF_COUNT
    | privileges_eax::REFERENCE_TSC;

/// The feature bits (0x4000_0003 EDX): the guest crash MSRs.
const FEATURES_EDX: u32 = features_edx::GUEST_CRASH_MSRS_AVAILABLE;

/// The frequency MSRs, offered once both frequencies are known (the APIC timer's is
/// measured at boot): Linux then takes them instead of calibrating against the PIT
/// (`ms_hyperv_init_platform`), and a 0 would become its `lapic_timer_period`.
fn frequency_bits() -> (u32, u32) {
    if crate::cpu::time::apic_timer_hz() != 0 && crate::cpu::time::tsc_hz() != 0 {
        (privileges_eax::ACCESS_FREQUENCY_MSRS, features_edx::FREQUENCY_MSRS_AVAILABLE)
    } else {
        (0, 0)
    }
}

/// Hypercall privileges (0x4000_0003 EBX): PostMessages to a partition that sends on a
/// message connection, SignalEvents to one that sends on an event connection. Never
/// CpuManagement: Linux would take itself for the root partition. Computed when the
/// partition starts (`PartitionRegisters::hypercall_privileges`).
pub fn hypercall_privileges(partition: &Partition) -> u32 {
    let id = partition.config().id;
    let mut ebx = 0;
    for connection in crate::config::SYSTEM.connections.iter().filter(|c| c.from == id) {
        ebx |= match connection.kind {
            ConnectionKind::Message { .. } => privileges_ebx::POST_MESSAGES,
            ConnectionKind::Event { .. } => privileges_ebx::SIGNAL_EVENTS,
        };
    }
    ebx
}

/// The answer for hypervisor leaf `leaf` (0x4000_0000..=0x4000_00FF).
pub fn leaf(partition: &Partition, leaf: u32) -> CpuidResult {
    let zero = CpuidResult { eax: 0, ebx: 0, ecx: 0, edx: 0 };
    match leaf {
        cpuid::LEAF_VENDOR_AND_MAX => CpuidResult {
            eax: cpuid::LEAF_LAST,
            ebx: cpuid::VENDOR_EBX,
            ecx: cpuid::VENDOR_ECX,
            edx: cpuid::VENDOR_EDX,
        },
        cpuid::LEAF_INTERFACE => CpuidResult { eax: cpuid::INTERFACE_SIGNATURE, ..zero },
        // Build number, then major.minor of this hypervisor's version.
        cpuid::LEAF_VERSION => CpuidResult { eax: 1, ebx: 1, ..zero },
        cpuid::LEAF_FEATURES => {
            let ebx = super::partition_registers(partition).hypercall_privileges.load(Ordering::Acquire);
            let (frequency_eax, frequency_edx) = frequency_bits();
            CpuidResult { eax: PRIVILEGES_EAX | frequency_eax, ebx, ecx: 0, edx: FEATURES_EDX | frequency_edx }
        }
        // Partitions EOI their own local APIC: AutoEOI would need an exit per interrupt.
        // No spinlock notification (EBX all ones).
        cpuid::LEAF_RECOMMENDATIONS => {
            CpuidResult { eax: recommendations_eax::DEPRECATE_AUTO_EOI, ebx: u32::MAX, ..zero }
        }
        cpuid::LEAF_LIMITS => {
            let vps = partition.config().cores.len() as u32;
            CpuidResult { eax: vps, ebx: vps, ..zero }
        }
        _ => zero,
    }
}
