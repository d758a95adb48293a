//! The one interface between the arch-neutral partition code and a virtualization backend
//! (VT-x and SVM). A backend runs one vCPU on the current core.

// The two implementations and the address-space builder they share, in `backend/`; this
// file is only the interface, below everything that programs against it.
pub mod address_space;
pub mod svm;
pub mod vmx;

use crate::partition::Partition;
use bulkhead_virt::exit::ExitVisitor;
use bulkhead_virt::guest_state::GuestRegisters;
use bulkhead_virt::guest_state::{ExecutionMode, GuestEntry, OptionalInstructions};

/// A core with its virtualization extension on: it holds the one vCPU this core runs.
pub trait VirtCore {
    /// The running vCPU, which the exit path drives through [`Backend`].
    type Vcpu: Backend;
    /// (Re)starts the vCPU of `partition` on this core at `entry`; the vCPU, ready to
    /// enter. Handing out the started vCPU itself (rather than keeping it behind an
    /// `Option` that every exit would test) is what lets the exit path reach it with no
    /// check: issue 19's fast path.
    fn start(&mut self, partition: &'static Partition, entry: &GuestEntry) -> Result<&mut Self::Vcpu, ()>;
}

/// A started vCPU: what the exit path asks of it.
pub trait Backend {
    /// Runs the guest to its next exit and hands it to `visitor`: the hot exits from the
    /// exit reason directly, the others decoded (see [`ExitVisitor`]).
    fn run<V: ExitVisitor<Self>>(&mut self, visitor: &mut V) -> V::Output
    where
        Self: Sized;
    /// The TSC just before the last world switch and just after it returned (the exit
    /// profile, `profile.rs`).
    #[cfg(feature = "profile")]
    fn profile_stamps(&mut self) -> (u64, u64);
    /// The guest RIP at the last exit (read only when a log line or fault needs it: the
    /// common exits do not).
    fn rip(&mut self) -> u64;
    fn registers(&mut self) -> &mut GuestRegisters;
    fn skip_instruction(&mut self);
    /// Moves RIP forward by `length` bytes, past an instruction the kernel decoded itself
    /// (the xAPIC page emulation: second-level faults report no instruction length).
    fn advance_rip(&mut self, length: u64);
    /// The guest's CR3 and CS base, to read its instruction bytes through its own paging.
    fn guest_cr3_and_cs_base(&mut self) -> (u64, u64);
    /// Selects the partition's MSR bitmap that passes the x2APIC registers through (`true`:
    /// this vCPU's local APIC is in x2APIC mode) or the one where they exit (xAPIC or
    /// disabled mode: they must get #GP, see `lapic/`).
    fn set_x2apic_passthrough(&mut self, on: bool);
    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>);
    /// The guest's CR0 and CR4 as the guest sees them (CR4 for CPUID's OSXSAVE bit, CR0
    /// for the paging check of an EFER write).
    fn guest_cr0(&mut self) -> u64;
    fn guest_cr4(&mut self) -> u64;
    /// Performs a guest MOV to CR0 / CR4 that exited (VT-x: it changed a bit the
    /// hypervisor owns) and that the kernel validated (`bulkhead_virt::control_registers`);
    /// EFER.LMA follows `long_mode_active`.
    fn set_guest_cr0(&mut self, value: u64, long_mode_active: bool);
    fn set_guest_cr4(&mut self, value: u64);
    /// The guest's TSC offset (added to every TSC read of the guest, without exits), and
    /// setting it (`exits/tsc.rs`).
    fn tsc_offset(&mut self) -> u64;
    fn set_tsc_offset(&mut self, offset: u64);
    /// The guest's EFER as the guest sees it, and setting it for an intercepted WRMSR the
    /// kernel has validated (`bulkhead_virt::control_registers::efer_write`). Only SVM intercepts EFER: VMRUN needs
    /// EFER.SVME in the guest's copy, which the partition must neither clear nor see.
    fn guest_efer(&mut self) -> u64;
    fn set_guest_efer(&mut self, value: u64);
    /// The guest's execution mode and privilege level (for hypercalls).
    fn execution_mode(&mut self) -> ExecutionMode;
    /// The optional instructions the guest may execute (CPUID hides the others).
    fn optional_instructions(&mut self) -> OptionalInstructions;
}
