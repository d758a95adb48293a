//! What a VM exit means for a partition: the one place that decides, for every backend.
//!
//! The backend decodes hardware exits into [`Exit`]; [`handle`] hands each kind to its file
//! here, which answers it from the partition's configuration: CPUID as the partition should
//! see it ([`cpuid`]), MSRs from an explicit allowlist ([`msr`], the TSC in [`tsc`]), XSETBV
//! ([`xsetbv`]), the virtual console and unassigned ports ([`ports`]), control registers,
//! cache and counter instructions ([`control`]), the xAPIC page ([`xapic_page`]), and
//! faults. Every handler returns an [`Action`] for the vCPU loop (`vcpu.rs`).

pub mod action;
pub mod control;
pub mod cpuid;
pub mod mmio;
pub mod msr;
pub mod ports;
pub mod tsc;
pub mod xapic_page;
pub mod xsetbv;

use crate::backend::Backend;
use crate::log::warn;
use crate::partition::{Fault, Partition};

pub use action::Action;
use bulkhead_virt::exit::Exit;

#[inline(always)]
pub fn handle<B: Backend>(partition: &Partition, backend: &mut B, exit: Exit) -> Action {
    match exit {
        Exit::Cpuid { leaf, subleaf } => {
            cpuid::answer(partition, backend, leaf, subleaf);
            Action::Resume { skip: true }
        }
        Exit::Io(access) => ports::access(partition, backend.registers(), access),
        Exit::MsrRead { msr } => msr::read_exit(partition, backend, msr),
        Exit::MsrWrite { msr, value } => msr::write_exit(partition, backend, msr, value),
        Exit::Xsetbv { xcr, value } => xsetbv::exit(partition, xcr, value),
        Exit::Hypercall if crate::xen::speaks_xen(partition) => crate::xen::hypercall::handle(partition, backend),
        Exit::Hypercall => {
            let mode = backend.execution_mode();
            match crate::hyperv::hypercall::handle(partition, mode, backend.registers()) {
                crate::hyperv::hypercall::Outcome::Answered => Action::Resume { skip: true },
                crate::hyperv::hypercall::Outcome::Undefined => undefined(partition, backend, "hypercall"),
            }
        }
        Exit::VirtualizationInstruction => undefined(partition, backend, "virtualization instruction"),
        Exit::Hlt => Action::Resume { skip: true },
        Exit::CrWrite { cr, value } => control::control_register_write(partition, backend, cr, value),
        Exit::Invd => control::cache_flush(partition, backend, true),
        Exit::Wbinvd => control::cache_flush(partition, backend, false),
        Exit::Rdpmc { counter } => control::rdpmc(partition, backend, counter),
        // CPUID hides MONITOR/MWAIT (and MONITORX/MWAITX): #UD, as where MISC_ENABLE
        // disables them. A partition's core must not enter C-states the hypervisor did
        // not choose (a deep one delays its wake-up and can take the package down).
        Exit::Monitor => undefined(partition, backend, "MONITOR"),
        Exit::Mwait => undefined(partition, backend, "MWAIT"),
        Exit::NestedPageFault { gpa, access } if xapic_page::contains(gpa) => {
            xapic_page::access(partition, backend, gpa, access)
        }
        Exit::NestedPageFault { gpa, access } if crate::devices::pci::ecam_contains(partition, gpa) => {
            mmio::emulate(partition, backend, gpa, access, &mut crate::devices::pci::EcamRegion)
        }
        Exit::NestedPageFault { gpa, access } if crate::devices::pci::msix_contains(partition, gpa) => {
            mmio::emulate(partition, backend, gpa, access, &mut crate::devices::pci::MsixRegion)
        }
        Exit::NestedPageFault { gpa, access } if crate::devices::ioapic::contains(partition, gpa) => {
            crate::devices::ioapic::access(partition, backend, gpa, access)
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
        // (see `lapic::send_ipi`); a stray one from elsewhere is ignored.
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
