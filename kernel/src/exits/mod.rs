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
use bulkhead_virt::exit::{Exit, ExitVisitor, PortAccess};
use core::sync::atomic::Ordering;

/// Why the vCPU loop must leave its guest after an exit (what the handler did not
/// finish). A byte, so that the exit path's result travels in a register; a fault's
/// details wait in [`ExitHandler::fault`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stopping {
    /// The partition faulted ([`ExitHandler::fault`] says how): apply its policy.
    Fault,
    /// The partition reported a test verdict through its report port.
    Report { pass: bool },
}

/// The vCPU loop's [`ExitVisitor`]: each exit handled to the end (the answer, the exit's
/// count, the handler's [`Action`]: RIP moved past the instruction, or an exception
/// queued); `Err` only when the loop must leave the guest.
///
/// The backend calls the hot exits' methods straight from its exit reason, and each
/// finishes its action itself, so after inlining a CPUID exit goes from the VMREAD of the
/// reason to the VMCS writes in one straight line: no [`Exit`] value, no second dispatch,
/// no [`Action`] in memory (issue 19, docs/performance.md "Profile").
pub struct ExitHandler<'a> {
    pub partition: &'a Partition,
    /// This core: its liveness count turns odd as each exit's handling begins (the
    /// monitor's hang check reads it, `PerCpu::step_liveness`), and it holds the vCPU's
    /// CPUID answers.
    pub cpu: &'a crate::cpu::percpu::PerCpu,
    /// The fault of the last exit that returned [`Stopping::Fault`].
    pub fault: Option<Fault>,
    /// The guest RIP of the last NMI exit and the liveness count it had (odd, the exit's):
    /// the loop's stop line says where the NMI took the vCPU out of its guest if that was
    /// the last exit ([`ExitHandler::last_exit_nmi_rip`]). Kept with its count rather than
    /// cleared before every entry: one store less per exit.
    pub nmi_rip: Option<(u64, u32)>,
}

impl<B: Backend> ExitVisitor<B> for ExitHandler<'_> {
    type Output = Result<(), Stopping>;

    #[inline(always)]
    fn cpuid(&mut self, vcpu: &mut B, leaf: u32, subleaf: u32) -> Self::Output {
        self.cpu.step_liveness();
        self.answer_cpuid(vcpu, leaf, subleaf)
    }

    #[inline(always)]
    fn io(&mut self, vcpu: &mut B, access: PortAccess) -> Self::Output {
        self.cpu.step_liveness();
        self.answer_io(vcpu, access)
    }

    #[inline(always)]
    fn msr_read(&mut self, vcpu: &mut B, msr: u32) -> Self::Output {
        self.cpu.step_liveness();
        self.answer_msr_read(vcpu, msr)
    }

    #[inline(always)]
    fn msr_write(&mut self, vcpu: &mut B, msr: u32, value: u64) -> Self::Output {
        self.cpu.step_liveness();
        self.answer_msr_write(vcpu, msr, value)
    }

    #[inline(always)]
    fn hypercall(&mut self, vcpu: &mut B) -> Self::Output {
        self.cpu.step_liveness();
        self.answer_hypercall(vcpu)
    }

    #[inline(always)]
    fn other(&mut self, vcpu: &mut B, exit: Exit) -> Self::Output {
        self.cpu.step_liveness();
        match exit {
            // The backends hand these to their own methods; the same handling if one came
            // here decoded.
            Exit::Cpuid { leaf, subleaf } => self.answer_cpuid(vcpu, leaf, subleaf),
            Exit::Io(access) => self.answer_io(vcpu, access),
            Exit::MsrRead { msr } => self.answer_msr_read(vcpu, msr),
            Exit::MsrWrite { msr, value } => self.answer_msr_write(vcpu, msr, value),
            Exit::Hypercall => self.answer_hypercall(vcpu),
            exit => {
                self.partition.exits.other.fetch_add(1, Ordering::Relaxed);
                let action = other(self.partition, self.cpu, vcpu, exit, &mut self.nmi_rip);
                self.apply(vcpu, action)
            }
        }
    }
}

/// Each exit's handling once its liveness step is done (the visitor's methods above step
/// the count exactly once per exit, so its parity says where the core is).
impl ExitHandler<'_> {
    /// Where the NMI took the vCPU out of its guest, if the last exit was an NMI exit (its
    /// liveness count is still the current one: no entry since).
    pub fn last_exit_nmi_rip(&self) -> Option<u64> {
        self.nmi_rip.filter(|&(_, count)| count == self.cpu.liveness()).map(|(rip, _)| rip)
    }

    #[inline(always)]
    fn answer_cpuid<B: Backend>(&mut self, vcpu: &mut B, leaf: u32, subleaf: u32) -> Result<(), Stopping> {
        self.partition.exits.cpuid.fetch_add(1, Ordering::Relaxed);
        cpuid::answer(self.partition, vcpu, self.cpu.cpuid_answers(), leaf, subleaf);
        vcpu.skip_instruction();
        Ok(())
    }

    #[inline(always)]
    fn answer_io<B: Backend>(&mut self, vcpu: &mut B, access: PortAccess) -> Result<(), Stopping> {
        self.partition.exits.io.fetch_add(1, Ordering::Relaxed);
        let action = ports::access(self.partition, vcpu.registers(), access);
        self.apply(vcpu, action)
    }

    #[inline(always)]
    fn answer_msr_read<B: Backend>(&mut self, vcpu: &mut B, msr: u32) -> Result<(), Stopping> {
        self.partition.exits.msr.fetch_add(1, Ordering::Relaxed);
        let action = msr::read_exit(self.partition, vcpu, msr);
        self.apply(vcpu, action)
    }

    #[inline(always)]
    fn answer_msr_write<B: Backend>(&mut self, vcpu: &mut B, msr: u32, value: u64) -> Result<(), Stopping> {
        self.partition.exits.msr.fetch_add(1, Ordering::Relaxed);
        let action = msr::write_exit(self.partition, vcpu, msr, value);
        self.apply(vcpu, action)
    }

    #[inline(always)]
    fn answer_hypercall<B: Backend>(&mut self, vcpu: &mut B) -> Result<(), Stopping> {
        self.partition.exits.other.fetch_add(1, Ordering::Relaxed);
        if crate::xen::speaks_xen(self.partition) {
            let action = crate::xen::hypercall::handle(self.partition, vcpu);
            return self.apply(vcpu, action);
        }
        // The answered hypercall skips its instruction here rather than through an
        // `Action`, which the paths above would merge into one more dispatch.
        let mode = vcpu.execution_mode();
        match crate::hyperv::hypercall::handle(self.partition, mode, vcpu.registers()) {
            crate::hyperv::hypercall::Outcome::Answered => {
                vcpu.skip_instruction();
                Ok(())
            }
            crate::hyperv::hypercall::Outcome::Undefined => {
                let action = undefined(self.partition, vcpu, "hypercall");
                self.apply(vcpu, action)
            }
        }
    }
}

/// Every exit but CPUID, port I/O, MSR access and the hypercall instruction.
#[inline(never)]
fn other<B: Backend>(
    partition: &Partition,
    cpu: &crate::cpu::percpu::PerCpu,
    vcpu: &mut B,
    exit: Exit,
    nmi_rip: &mut Option<(u64, u32)>,
) -> Action {
    match exit {
        Exit::Xsetbv { xcr, value } => xsetbv::exit(partition, xcr, value),
        Exit::VirtualizationInstruction => undefined(partition, vcpu, "virtualization instruction"),
        Exit::Hlt => Action::Resume { skip: true },
        Exit::CrWrite { cr, value } => control::control_register_write(partition, vcpu, cr, value),
        Exit::Invd => control::cache_flush(partition, vcpu, true),
        Exit::Wbinvd => control::cache_flush(partition, vcpu, false),
        Exit::Rdpmc { counter } => control::rdpmc(partition, vcpu, counter),
        // CPUID hides MONITOR/MWAIT (and MONITORX/MWAITX): #UD, as where MISC_ENABLE
        // disables them. A partition's core must not enter C-states the hypervisor did
        // not choose (a deep one delays its wake-up and can take the package down).
        Exit::Monitor => undefined(partition, vcpu, "MONITOR"),
        Exit::Mwait => undefined(partition, vcpu, "MWAIT"),
        Exit::NestedPageFault { gpa, access } if xapic_page::contains(gpa) => {
            xapic_page::access(partition, vcpu, gpa, access)
        }
        Exit::NestedPageFault { gpa, access } if crate::devices::pci::ecam_contains(partition, gpa) => {
            mmio::emulate(partition, vcpu, gpa, access, &mut crate::devices::pci::EcamRegion)
        }
        Exit::NestedPageFault { gpa, access } if crate::devices::pci::msix_contains(partition, gpa) => {
            mmio::emulate(partition, vcpu, gpa, access, &mut crate::devices::pci::MsixRegion)
        }
        Exit::NestedPageFault { gpa, access } if crate::devices::ioapic::contains(partition, gpa) => {
            crate::devices::ioapic::access(partition, vcpu, gpa, access)
        }
        Exit::NestedPageFault { gpa, access } => {
            Action::Fault(Fault::MemoryAccess { gpa, write: access.write, execute: access.execute })
        }
        Exit::TripleFault => Action::Fault(Fault::TripleFaulted),
        Exit::Exception { vector, .. } => Action::Fault(Fault::Exception { vector }),
        Exit::Nmi => {
            *nmi_rip = Some((vcpu.rip(), cpu.liveness()));
            crate::partition::nmi::report_taken_in_hypervisor(partition);
            crate::partition::nmi::exit(partition, || vcpu.rip());
            Action::Resume { skip: false }
        }
        // INIT and start-up IPIs between a partition's own cores never reach the hardware
        // (see `lapic::send_ipi`); a stray one from elsewhere is ignored.
        Exit::Init | Exit::StartupIpi { .. } => Action::Resume { skip: false },
        Exit::Unhandled { reason, qualification } => Action::Fault(Fault::Unhandled { reason, qualification }),
        // `ExitHandler::other` answers these before it calls here; were one to arrive,
        // resuming without a skip re-executes the instruction, whose next exit goes there.
        Exit::Cpuid { .. } | Exit::Io(_) | Exit::MsrRead { .. } | Exit::MsrWrite { .. } | Exit::Hypercall => {
            Action::Resume { skip: false }
        }
    }
}

impl ExitHandler<'_> {
    /// Carries out a handler's [`Action`] on the vCPU.
    #[inline(always)]
    fn apply<B: Backend>(&mut self, vcpu: &mut B, action: Action) -> Result<(), Stopping> {
        match action {
            Action::Resume { skip } => {
                if skip {
                    vcpu.skip_instruction();
                }
                Ok(())
            }
            Action::InjectGp => {
                vcpu.inject_exception(13, Some(0));
                Ok(())
            }
            Action::InjectUd => {
                vcpu.inject_exception(6, None);
                Ok(())
            }
            Action::Fault(fault) => {
                self.fault = Some(fault);
                Err(Stopping::Fault)
            }
            Action::Report { pass } => Err(Stopping::Report { pass }),
        }
    }
}

/// An instruction the partition may not execute: #UD, and a rate-limited log line.
fn undefined<B: Backend>(partition: &Partition, vcpu: &mut B, what: &str) -> Action {
    if let Some(n) = partition.counters.undefined.hit() {
        warn!("partition {=str}: {=str} refused (#UD), rip {=u64:#x} (#{=u32})", partition.name(), what, vcpu.rip(), n);
    }
    Action::InjectUd
}
