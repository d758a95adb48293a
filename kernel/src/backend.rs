//! The one interface between the arch-neutral partition code and a virtualization backend
//! (VT-x today; SVM next). A backend runs one vCPU on the current core.

use crate::partition::Partition;
use bulkhead_virt::exit::Exit;
use bulkhead_virt::guest_state::GuestRegisters;
use bulkhead_virt::guest_state::{GuestEntry, OptionalInstructions};

pub trait Backend {
    /// (Re)starts the vCPU of `partition` on this core at `entry`.
    fn start(&mut self, partition: &'static Partition, entry: &GuestEntry) -> Result<(), ()>;
    /// Runs the guest to its next exit.
    fn run(&mut self) -> Exit;
    /// The guest RIP at the last exit (read only when a log line or fault needs it: the
    /// common exits do not).
    fn rip(&mut self) -> u64;
    fn registers(&mut self) -> &mut GuestRegisters;
    fn skip_instruction(&mut self);
    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>);
    /// The guest's CR4 as the guest sees it (for CPUID's OSXSAVE bit).
    fn guest_cr4(&mut self) -> u64;
    /// The optional instructions the guest may execute (CPUID hides the others).
    fn optional_instructions(&mut self) -> OptionalInstructions;
}
