//! How events reach a Xen partition's vCPUs: `hvm_op` (Xen `hvm_op.h`, `params.h`).
//!
//! Each vCPU takes its events on the vector it names with
//! `HVMOP_set_evtchn_upcall_vector` (offered in CPUID leaf base+4, `UPCALL_VECTOR`): the
//! hypervisor sends that vector as a fixed IPI to the vCPU's core, through the local APIC
//! the partition owns, and the guest EOIs it. Linux 6.0 and later use this mode when it is
//! offered. `HVM_PARAM_CALLBACK_IRQ` is accepted and read back (Linux still sets it), but
//! delivery never uses it: Xen injects the domain-wide vector past the local APIC (no EOI),
//! which a partition whose local APIC is its own cannot be given without an exit on every
//! event.

use super::shared_info::{Upcall, pending_upcall};
use crate::partition::Partition;
use bulkhead_abi::xen::{errno, hvm};

/// `HVMOP_set_param` (`set`) or `HVMOP_get_param` on `{domid, index, value}`; returns the
/// value to write back for a get.
pub fn param(partition: &Partition, set: bool, domid: u16, index: u32, value: u64) -> Result<u64, i64> {
    if !super::is_self(partition, domid) {
        return Err(errno::EPERM);
    }
    if index >= hvm::NR_PARAMS {
        return Err(errno::EINVAL);
    }
    let mut state = super::state(partition).lock();
    match (set, index) {
        (true, hvm::PARAM_CALLBACK_IRQ) => {
            state.callback_via = value;
            Ok(value)
        }
        // The other parameters belong to the toolstack on Xen; a guest may not set them.
        (true, _) => Err(errno::EPERM),
        (false, hvm::PARAM_CALLBACK_IRQ) => Ok(state.callback_via),
        // Unset parameters read 0 on Xen: no xenstore, no ring console, nothing else.
        (false, _) => Ok(0),
    }
}

/// `HVMOP_set_evtchn_upcall_vector {vcpu, vector}`. A vCPU that already has an upcall
/// pending (raised before it had a vector) gets it now.
pub fn set_vector(partition: &Partition, vcpu: u32, vector: u8) -> Result<Option<Upcall>, i64> {
    if vector < hvm::MIN_UPCALL_VECTOR {
        return Err(errno::EINVAL);
    }
    let index = vcpu as usize;
    if index >= partition.config().cores.len() {
        return Err(errno::ENOENT);
    }
    let mut state = super::state(partition).lock();
    state.vcpus[index].upcall_vector = vector;
    Ok(pending_upcall(partition, &state, index))
}
