//! What an exit handler tells the vCPU loop to do.

use crate::partition::Fault;

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
