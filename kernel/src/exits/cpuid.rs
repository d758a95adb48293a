//! CPUID exits: the leaves as a partition sees them.

use crate::backend::Backend;
use crate::cpu::percpu::{self, CpuidAnswers};
use crate::partition::Partition;

/// CPUID as a partition sees it: the hardware's answer without the features whose MSRs or
/// instructions a partition cannot use (`bulkhead_virt::cpuid`: the virtualization
/// extensions, the performance counters, machine check, MONITOR/MWAIT, speculation
/// controls...), with the hypervisor-present bit set, OSXSAVE mirroring
/// the guest's own CR4 (the hardware reports the hypervisor's), instructions the backend
/// did not enable hidden, and the topology counts of the partition's cores.
///
/// Topology: a partition's vCPUs keep their physical APIC IDs (the x2APIC is theirs), so
/// the fields that describe the APIC ID *layout* (leaf 1 EBX[23:16], leaf 4 EAX[31:26])
/// stay as the hardware says; leaf 0xB/0x1F EDX is the core's APIC ID (the vCPU's x2APIC
/// ID), set on every CPU since AMD's hardware answer may be 0; the processor counts give
/// the partition's cores, one thread per core (see [`extended_topology`]).
///
/// The leaves in [`CACHED`] come from this core's table (`PerCpu::cpuid_answers`), filled by [`fill_cache`] when
/// the vCPU starts: the same answer, without the hardware CPUID and the filters on every
/// exit (issue 19's fast path).
#[inline(always)]
pub fn answer<B: Backend>(partition: &Partition, backend: &mut B, cache: &CpuidAnswers, leaf: u32, subleaf: u32) {
    if leaf < 32 && CACHED & (1 << leaf) != 0 {
        let [eax, ebx, mut ecx, edx] = cache.0[leaf as usize];
        if leaf == 1 && backend.guest_cr4() & CR4_OSXSAVE != 0 {
            ecx |= LEAF1_ECX_OSXSAVE;
        }
        let regs = backend.registers();
        regs.rax = eax.into();
        regs.rbx = ebx.into();
        regs.rcx = ecx.into();
        regs.rdx = edx.into();
        return;
    }
    let r = compute(partition, backend, leaf, subleaf);
    let regs = backend.registers();
    regs.rax = r.eax.into();
    regs.rbx = r.ebx.into();
    regs.rcx = r.ecx.into();
    regs.rdx = r.edx.into();
}

const CR4_OSXSAVE: u64 = 1 << 18;
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;

/// Basic leaves whose answer depends neither on the subleaf nor on the vCPU's state, but
/// for leaf 1's OSXSAVE (patched at each exit from the guest's CR4): 0 (vendor, highest
/// leaf), 1 (features, this core's APIC ID), 2 and 3 (caches, serial number), 5, 6 (power
/// management), 8, 9, 0xA (zeroed or hardware-fixed), 0x15 and 0x16 (TSC and frequency).
/// Every leaf that takes a subleaf (4, 7, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x17, 0x18,
/// 0x1A, 0x1B, 0x1D-0x1F) is computed at each exit.
const CACHED: u32 = (1 << 0)
    | (1 << 1)
    | (1 << 2)
    | (1 << 3)
    | (1 << 5)
    | (1 << 6)
    | (1 << 8)
    | (1 << 9)
    | (1 << 0xa)
    | (1 << 0x15)
    | (1 << 0x16);

/// Fills this core's answers (`PerCpu::cpuid_answers`) for the partition's vCPU that is about to enter (at every start:
/// the answers depend on the partition and on the backend's enabled instructions).
pub fn fill_cache<B: Backend>(partition: &Partition, backend: &mut B) {
    let mut answers = [[0u32; 4]; 32];
    for (leaf, answer) in answers.iter_mut().enumerate().filter(|(leaf, _)| CACHED & (1 << leaf) != 0) {
        let r = compute(partition, backend, leaf as u32, 0);
        *answer = [r.eax, r.ebx, r.ecx & !LEAF1_ECX_OSXSAVE, r.edx];
    }
    // SAFETY: this CPU, before its vCPU's exit loop (which holds the answers) starts.
    unsafe { percpu::current().set_cpuid_answers(CpuidAnswers(answers)) };
}

/// The answer to `leaf`/`subleaf` for this partition and core (see [`answer`]).
fn compute<B: Backend>(
    partition: &Partition,
    backend: &mut B,
    leaf: u32,
    subleaf: u32,
) -> core::arch::x86_64::CpuidResult {
    const HYPERVISOR_BASE: u32 = 0x4000_0000;
    let cores = partition.config().cores.len() as u32;
    // The hypervisor leaves are answered from the partition alone: no hardware CPUID for
    // them (it would only be thrown away). A partition sees one interface's block at the
    // base, Hyper-V's or Xen's, and zeros everywhere else up to 0x4000_FFFF (where Linux
    // looks for Xen's signature).
    let mut r = if (HYPERVISOR_BASE..0x4001_0000).contains(&leaf) {
        if crate::xen::speaks_xen(partition) {
            crate::xen::discovery::leaf(partition, leaf)
        } else if leaf < 0x4000_0100 {
            crate::hyperv::discovery::leaf(partition, leaf)
        } else {
            core::arch::x86_64::CpuidResult { eax: 0, ebx: 0, ecx: 0, edx: 0 }
        }
    } else {
        core::arch::x86_64::__cpuid_count(leaf, subleaf)
    };
    if bulkhead_virt::cpuid::changes(leaf) {
        [r.eax, r.ebx, r.ecx, r.edx] = bulkhead_virt::cpuid::filter(leaf, subleaf, [r.eax, r.ebx, r.ecx, r.edx]);
    }
    match leaf {
        1 => {
            r.ecx |= 1 << 31; // hypervisor present
            r.ecx |= 1 << 21; // x2APIC: real or emulated (apic_access.rs)
            r.ecx &= !LEAF1_ECX_OSXSAVE;
            if backend.guest_cr4() & CR4_OSXSAVE != 0 {
                r.ecx |= LEAF1_ECX_OSXSAVE;
            }
        }
        7 if subleaf == 0 && !backend.optional_instructions().invpcid => r.ebx &= !(1 << 10),
        0xb => extended_topology(&mut r, subleaf, cores),
        0x1f if core::arch::x86_64::__cpuid(0).eax >= 0x1f => extended_topology(&mut r, subleaf, cores),
        0xd if subleaf == 1 && !backend.optional_instructions().xsaves => r.eax &= !(1 << 3),
        0x8000_0001 if !backend.optional_instructions().rdtscp => r.edx &= !(1 << 27),
        0x8000_0008 if crate::cpu::capabilities::is_amd() => r.ecx = (r.ecx & !0xff) | (cores - 1),
        // The Hyper-V compatible leaves (`hyperv::discovery`).
        _ => {}
    }
    r
}

/// CPUID leaf 0xB (and 0x1F) for a partition: `bulkhead_virt::cpuid::extended_topology`,
/// with the board's largest APIC ID and this core's APIC ID (the vCPU's x2APIC ID) in EDX.
fn extended_topology(r: &mut core::arch::x86_64::CpuidResult, subleaf: u32, cores: u32) {
    let max_apic_id = crate::config::SYSTEM.board.cpus.iter().map(|c| c.apic_id).max().unwrap_or(0);
    let apic_id = crate::cpu::percpu::current().apic_id();
    [r.eax, r.ebx, r.ecx, r.edx] = bulkhead_virt::cpuid::extended_topology(subleaf, cores, max_apic_id, apic_id);
}
