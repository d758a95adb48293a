//! What a VM exit means for a partition: the one place that decides, for every backend.
//!
//! The backend decodes hardware exits into [`Exit`]; this module answers them from the
//! partition's configuration: CPUID as the partition should see it, MSRs from an explicit
//! allowlist, the virtual console, unassigned ports, and faults.

pub mod control;
pub mod msr;
pub mod tsc;
pub mod xapic_page;

use crate::backend::Backend;
use crate::log::warn;
use crate::partition::{Fault, Partition};
use bulkhead_virt::exit::{Exit, PortAccess};
use bulkhead_virt::guest_state::GuestRegisters;
use core::sync::atomic::{AtomicU32, Ordering};

/// What the vCPU loop does after an exit.
pub enum Action {
    /// Re-enter the guest; `skip` moves RIP past the exiting instruction first.
    Resume { skip: bool },
    /// Resume with a #GP(0) injected (no RIP advance: the instruction faults).
    InjectGp,
    /// Resume with #UD injected.
    InjectUd,
    /// The partition faulted: apply its policy.
    Fault(Fault),
    /// The partition reported a test verdict through its report port.
    Report { pass: bool },
}

/// The virtual 16550 every partition has at the PC's COM1 address.
pub const CONSOLE_BASE: u16 = 0x3f8;
/// Port a test payload writes its verdict to (see `guests/`).
pub const REPORT_PORT: u16 = bulkhead_abi::run::QEMU_DEBUG_EXIT_PORT;
const LSR_OFFSET: u16 = 5;
/// Line status: transmitter holding register and shift register empty.
const LSR_IDLE: u64 = 0x60;

/// Logs the first occurrences of a kind of event, then only every power of two, so a
/// guest hammering a port or MSR cannot flood the console.
pub struct RateLimit(AtomicU32);

impl RateLimit {
    pub const fn new() -> Self {
        RateLimit(AtomicU32::new(0))
    }

    /// Counts one event; returns the count when this one should be logged.
    pub fn hit(&self) -> Option<u32> {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        (n <= 8 || n.is_power_of_two()).then_some(n)
    }
}

pub fn handle<B: Backend>(partition: &Partition, backend: &mut B, exit: Exit) -> Action {
    match exit {
        Exit::Cpuid { leaf, subleaf } => {
            cpuid(partition, backend, leaf, subleaf);
            Action::Resume { skip: true }
        }
        Exit::Io(access) => port_access(partition, backend.registers(), access),
        Exit::MsrRead { msr } => match read_msr(partition, backend, msr) {
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
        },
        Exit::MsrWrite { msr, value } => {
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
        Exit::Xsetbv { xcr, value } => {
            if crate::exits::msr::xsetbv(xcr, value) {
                Action::Resume { skip: true }
            } else {
                if partition.counters.msr.hit().is_some() {
                    warn!(
                        "partition {=str}: xsetbv xcr{=u32} <- {=u64:#x} invalid (#GP)",
                        partition.name(),
                        xcr,
                        value
                    );
                }
                Action::InjectGp
            }
        }
        Exit::Hypercall => {
            let mode = backend.execution_mode();
            match crate::hyperv::hypercall::handle(partition, mode, backend.registers()) {
                crate::hyperv::hypercall::Outcome::Answered => Action::Resume { skip: true },
                crate::hyperv::hypercall::Outcome::Undefined => undefined(partition, backend, "hypercall"),
            }
        }
        Exit::VirtualizationInstruction => undefined(partition, backend, "virtualization instruction"),
        Exit::Hlt => Action::Resume { skip: true },
        Exit::CrWrite { cr, value } => crate::exits::control::control_register_write(partition, backend, cr, value),
        Exit::Invd => crate::exits::control::cache_flush(partition, backend, true),
        Exit::Wbinvd => crate::exits::control::cache_flush(partition, backend, false),
        Exit::Rdpmc { counter } => crate::exits::control::rdpmc(partition, backend, counter),
        // CPUID hides MONITOR/MWAIT (and MONITORX/MWAITX): #UD, as where MISC_ENABLE
        // disables them. A partition's core must not enter C-states the hypervisor did
        // not choose (a deep one delays its wake-up and can take the package down).
        Exit::Monitor => undefined(partition, backend, "MONITOR"),
        Exit::Mwait => undefined(partition, backend, "MWAIT"),
        Exit::NestedPageFault { gpa, access } if crate::exits::xapic_page::contains(gpa) => {
            crate::exits::xapic_page::access(partition, backend, gpa, access)
        }
        Exit::NestedPageFault { gpa, access } => {
            Action::Fault(Fault::MemoryAccess { gpa, write: access.write, execute: access.execute })
        }
        Exit::TripleFault => Action::Fault(Fault::TripleFaulted),
        Exit::Exception { vector, .. } => Action::Fault(Fault::Exception { vector }),
        Exit::Nmi => {
            crate::partition::nmi::report_taken_in_hypervisor(partition);
            crate::partition::nmi::exit(partition, || backend.rip());
            Action::Resume { skip: false }
        }
        // INIT and start-up IPIs between a partition's own cores never reach the hardware
        // (see `msr::send_ipi`); a stray one from elsewhere is ignored.
        Exit::Init | Exit::StartupIpi { .. } => Action::Resume { skip: false },
        Exit::Unhandled { reason, qualification } => Action::Fault(Fault::Unhandled { reason, qualification }),
    }
}

/// An instruction the partition may not execute: #UD, and a rate-limited log line.
fn undefined<B: Backend>(partition: &Partition, backend: &mut B, what: &str) -> Action {
    if let Some(n) = partition.counters.undefined.hit() {
        warn!(
            "partition {=str}: {=str} refused (#UD), rip {=u64:#x} (#{=u32})",
            partition.name(),
            what,
            backend.rip(),
            n
        );
    }
    Action::InjectUd
}

/// An intercepted RDMSR: EFER from the backend (intercepted on SVM only), the synthetic
/// Hyper-V MSRs, then the allowlist. `None` is #GP.
fn read_msr<B: Backend>(partition: &Partition, backend: &mut B, msr: u32) -> Option<u64> {
    match msr {
        crate::exits::msr::EFER => Some(backend.guest_efer()),
        msr if crate::exits::tsc::handles(msr) => crate::exits::tsc::read(backend, msr),
        msr if crate::hyperv::synthetic_msr::is_synthetic(msr) => crate::hyperv::synthetic_msr::read(partition, msr),
        msr => crate::exits::msr::read(msr),
    }
}

/// An intercepted WRMSR, dispatched as [`read_msr`]. False is #GP.
fn write_msr<B: Backend>(partition: &Partition, backend: &mut B, msr: u32, value: u64) -> bool {
    match msr {
        crate::exits::msr::EFER => {
            let (current, cr0) = (backend.guest_efer(), backend.guest_cr0());
            crate::exits::msr::efer_write(current, value, cr0).map(|efer| backend.set_guest_efer(efer)).is_some()
        }
        msr if crate::exits::tsc::handles(msr) => crate::exits::tsc::write(backend, msr, value),
        msr if crate::hyperv::synthetic_msr::is_synthetic(msr) => {
            crate::hyperv::synthetic_msr::write(partition, msr, value)
        }
        crate::lapic::IA32_APIC_BASE => crate::lapic::write_base(backend, value),
        msr => crate::exits::msr::write(partition, msr, value),
    }
}

/// CPUID as a partition sees it: the hardware's answer without the features whose MSRs or
/// instructions a partition cannot use (`bulkhead_virt::cpuid`: the virtualization
/// extensions, the performance counters, machine check, MONITOR/MWAIT, speculation
/// controls...), with the hypervisor-present bit set, OSXSAVE mirroring
/// the guest's own CR4 (the hardware reports the hypervisor's), instructions the backend
/// did not enable hidden, and the topology counts of the partition's cores.
///
/// Topology: a partition's vCPUs keep their physical APIC IDs (the x2APIC is theirs), so
/// the fields that describe the APIC ID *layout* (leaf 1 EBX[23:16], leaf 4 EAX[31:26],
/// the x2APIC ID in leaf 0xB/0x1F EDX) stay as the hardware says; the processor counts
/// give the partition's cores, one thread per core (see [`extended_topology`]).
fn cpuid<B: Backend>(partition: &Partition, backend: &mut B, leaf: u32, subleaf: u32) {
    const HYPERVISOR_BASE: u32 = 0x4000_0000;
    const CR4_OSXSAVE: u64 = 1 << 18;
    let cores = partition.config().cores.len() as u32;
    let mut r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    if bulkhead_virt::cpuid::changes(leaf) {
        [r.eax, r.ebx, r.ecx, r.edx] = bulkhead_virt::cpuid::filter(leaf, subleaf, [r.eax, r.ebx, r.ecx, r.edx]);
    }
    match leaf {
        1 => {
            r.ecx |= 1 << 31; // hypervisor present
            r.ecx |= 1 << 21; // x2APIC: real or emulated (apic_access.rs)
            r.ecx &= !(1 << 27);
            if backend.guest_cr4() & CR4_OSXSAVE != 0 {
                r.ecx |= 1 << 27;
            }
        }
        7 if subleaf == 0 && !backend.optional_instructions().invpcid => r.ebx &= !(1 << 10),
        0xb => extended_topology(&mut r, subleaf, cores),
        0x1f if core::arch::x86_64::__cpuid(0).eax >= 0x1f => extended_topology(&mut r, subleaf, cores),
        0xd if subleaf == 1 && !backend.optional_instructions().xsaves => r.eax &= !(1 << 3),
        0x8000_0001 if !backend.optional_instructions().rdtscp => r.edx &= !(1 << 27),
        0x8000_0008 if crate::cpu::capabilities::is_amd() => r.ecx = (r.ecx & !0xff) | (cores - 1),
        // The Hyper-V compatible leaves (`hyperv::discovery`).
        l if (HYPERVISOR_BASE..0x4000_0100).contains(&l) => r = crate::hyperv::discovery::leaf(partition, l),
        _ => {}
    }
    let regs = backend.registers();
    regs.rax = r.eax.into();
    regs.rbx = r.ebx.into();
    regs.rcx = r.ecx.into();
    regs.rdx = r.edx.into();
}

/// CPUID leaf 0xB (and 0x1F) for a partition (SDM Vol. 2A, CPUID "Extended Topology
/// Enumeration Leaf"): level 0 is SMT with one thread per core, level 1 is the core level
/// with the partition's core count and a shift wide enough for every APIC ID of the
/// board, higher levels are invalid. Synthesized rather than filtered: the hardware's own
/// levels describe the whole board (and Bochs leaves the level types out).
fn extended_topology(r: &mut core::arch::x86_64::CpuidResult, subleaf: u32, cores: u32) {
    const LEVEL_SMT: u32 = 1 << 8;
    const LEVEL_CORE: u32 = 2 << 8;
    let max_apic_id = crate::config::SYSTEM.board.cpus.iter().map(|c| c.apic_id).max().unwrap_or(0);
    let core_shift = u32::BITS - max_apic_id.leading_zeros();
    let level = subleaf & 0xff;
    (r.eax, r.ebx, r.ecx) = match level {
        0 => (0, 1, LEVEL_SMT),
        1 => (core_shift, cores, LEVEL_CORE | 1),
        _ => (0, 0, level),
    };
    // EDX: this core's x2APIC ID, as the hardware reports it.
}

fn port_access(partition: &Partition, regs: &mut GuestRegisters, access: PortAccess) -> Action {
    if access.string {
        return Action::Fault(Fault::StringIo { port: access.port });
    }
    let width_mask: u64 = match access.size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    };
    let value = regs.rax & width_mask;
    match (access.port, access.write) {
        (CONSOLE_BASE, true) => {
            partition.console_write(value as u8);
            return Action::Resume { skip: true };
        }
        (p, false) if p == CONSOLE_BASE + LSR_OFFSET => {
            set_in_result(regs, access.size, LSR_IDLE);
            return Action::Resume { skip: true };
        }
        (p, write) if (CONSOLE_BASE..CONSOLE_BASE + 8).contains(&p) => {
            // The other UART registers: reads 0, writes ignored (a polled, always-ready UART).
            if !write {
                set_in_result(regs, access.size, 0);
            }
            return Action::Resume { skip: true };
        }
        (REPORT_PORT, true) if partition.gives_verdict() => return Action::Report { pass: value == 0 },
        _ => {}
    }
    if let Some(n) = partition.counters.port.hit() {
        warn!(
            "partition {=str}: {=str} unassigned port {=u16:#x} ({=u8} bytes): {=str} (#{=u32})",
            partition.name(),
            if access.write { "write to" } else { "read from" },
            access.port,
            access.size,
            if access.write { "dropped" } else { "reads all-ones" },
            n
        );
    }
    if !access.write {
        set_in_result(regs, access.size, u64::MAX);
    }
    Action::Resume { skip: true }
}

/// Puts the result of an IN into RAX as the hardware would: AL and AX keep the rest of
/// RAX, a 32-bit IN writes EAX, which zero-extends into RAX.
fn set_in_result(regs: &mut GuestRegisters, size: u8, value: u64) {
    regs.rax = match size {
        1 => (regs.rax & !0xff) | (value & 0xff),
        2 => (regs.rax & !0xffff) | (value & 0xffff),
        _ => value & 0xffff_ffff,
    };
}
