//! Xen's HVM guest interface, for partitions whose system file says `interface = "xen"`
//! (docs/xen.md; numbers in `bulkhead_abi::xen`). Such a partition sees Xen's CPUID leaves
//! and hypercall page MSR instead of Hyper-V's (`discovery`), and its VMCALL/VMMCALL is a
//! Xen hypercall (`hypercall`). The exits stay handled once in `exits/`: they ask
//! [`speaks_xen`] and pick the interface's answer.

pub mod discovery;
pub mod hypercall;

use crate::partition::Partition;
use bulkhead_board::tables::GuestInterface;

/// Whether `partition` speaks Xen's interface (and so has none of Hyper-V's).
#[inline]
pub fn speaks_xen(partition: &Partition) -> bool {
    partition.config().interface == GuestInterface::Xen
}
