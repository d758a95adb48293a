//! Bulkhead's supervision hypercalls (`bulkhead_abi::supervision`): the watchdog check-in,
//! a partition's status, and the supervisor's restart and halt requests. Dispatched from
//! `hyperv/hypercall.rs` after its common checks (CPL, the hypercall page); the statuses
//! and their order are those the ABI module documents.

use crate::config::SYSTEM;
use crate::partition::Partition;
use crate::supervision::health::Request;
use bulkhead_abi::hyperv::hypercall::code;
use bulkhead_abi::hyperv::{HvStatus, HypercallInput, input_gpa_ok};
use bulkhead_abi::supervision::{
    ControlAction, NAME_BYTES, PARTITION_SELF, PartitionState, PartitionStatus, STATUS_INPUT_SIZE, STATUS_VERSION,
    flags, policy,
};
use bulkhead_board::tables::{FaultPolicy, PartitionId};
use core::sync::atomic::Ordering;

/// Whether `code` is one of the supervision calls.
pub fn is_supervision_call(code: u16) -> bool {
    matches!(
        code,
        code::BULKHEAD_WATCHDOG_CHECK_IN | code::BULKHEAD_PARTITION_STATUS | code::BULKHEAD_PARTITION_CONTROL
    )
}

/// Handles supervision call `input` from `caller`: `parameter` is RDX (the input block's
/// GPA, or the first fast input), `output` R8 (the output block's GPA, or the second).
pub fn handle(caller: &Partition, input: HypercallInput, parameter: u64, output: u64) -> Result<(), HvStatus> {
    input.check_simple_call()?;
    match input.code() {
        code::BULKHEAD_WATCHDOG_CHECK_IN => {
            if !input.is_fast() {
                return Err(HvStatus::InvalidHypercallCode);
            }
            if parameter != 0 || output != 0 {
                return Err(HvStatus::InvalidParameter);
            }
            if caller.check_in() { Ok(()) } else { Err(HvStatus::InvalidPartitionState) }
        }
        code::BULKHEAD_PARTITION_STATUS => {
            if input.is_fast() {
                return Err(HvStatus::InvalidHypercallCode);
            }
            input_gpa_ok(parameter, STATUS_INPUT_SIZE as u64)?;
            let host = crate::hyperv::private_memory(caller, parameter, STATUS_INPUT_SIZE as u64, false)
                .ok_or(HvStatus::InvalidAlignment)?;
            let mut block = [0u8; STATUS_INPUT_SIZE];
            // SAFETY: 8 bytes of the caller's own RAM, checked just above.
            unsafe { core::ptr::copy_nonoverlapping(host as *const u8, block.as_mut_ptr(), STATUS_INPUT_SIZE) };
            let id = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
            if block[4..].iter().any(|&b| b != 0) {
                return Err(HvStatus::InvalidParameter);
            }
            let target = readable(caller, id)?;
            input_gpa_ok(output, PartitionStatus::SIZE as u64)?;
            let out = crate::hyperv::private_memory(caller, output, PartitionStatus::SIZE as u64, true)
                .ok_or(HvStatus::InvalidAlignment)?;
            let bytes = status_of(target).to_bytes();
            // SAFETY: the output block, checked above to be in the caller's own writable
            // RAM, 8-byte aligned, within one page; its vCPU waits in this exit.
            unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), out as *mut u8, bytes.len()) };
            Ok(())
        }
        _ => {
            if !input.is_fast() {
                return Err(HvStatus::InvalidHypercallCode);
            }
            let target = supervised(caller, parameter)?;
            let action = ControlAction::from_u64(output).ok_or(HvStatus::InvalidParameter)?;
            control(caller, target, action)
        }
    }
}

/// The partition `id` whose status `caller` may read: its own, or one it supervises.
fn readable(caller: &Partition, id: u32) -> Result<&'static Partition, HvStatus> {
    let own = caller.config().id;
    if id == u32::from(own.0) || id == PARTITION_SELF {
        return Ok(crate::partition::get(own));
    }
    supervised(caller, u64::from(id))
}

/// The partition `id` that `caller` supervises (ACCESS_DENIED for a caller that supervises
/// nobody, before anything about the id is revealed).
fn supervised(caller: &Partition, id: u64) -> Result<&'static Partition, HvStatus> {
    let supervises = caller.config().supervises;
    if supervises.is_empty() {
        return Err(HvStatus::AccessDenied);
    }
    if id >= SYSTEM.partitions.len() as u64 {
        return Err(HvStatus::InvalidPartitionId);
    }
    let id = PartitionId(id as u8);
    if !supervises.contains(&id) {
        return Err(HvStatus::AccessDenied);
    }
    Ok(crate::partition::get(id))
}

/// Carries out `action` on `target` for `caller` (its supervisor).
fn control(caller: &Partition, target: &'static Partition, action: ControlAction) -> Result<(), HvStatus> {
    let by = caller.config().id.0;
    let state = target.health.state();
    if target.containment.stopping() || target.health.request_pending() {
        return Err(HvStatus::InvalidPartitionState);
    }
    match (action, state) {
        (ControlAction::Halt, PartitionState::Halted) => Err(HvStatus::InvalidPartitionState),
        (ControlAction::Restart, PartitionState::Halted) => {
            crate::log::warn!(
                "partition {=str}: restart requested by supervisor {=str} (it was halted)",
                target.name(),
                caller.name()
            );
            target.restart_halted();
            Ok(())
        }
        (ControlAction::Restart | ControlAction::Halt, PartitionState::Faulted | PartitionState::Restarting) => {
            Err(HvStatus::InvalidPartitionState)
        }
        (ControlAction::Restart, _) => request(target, Request::Restart { by }),
        (ControlAction::Halt, _) => request(target, Request::Halt { by }),
    }
}

/// Posts `request` to `target`'s first core and takes it out of its guest.
pub fn request(target: &'static Partition, request: Request) -> Result<(), HvStatus> {
    if !target.health.post_request(request) {
        return Err(HvStatus::InvalidPartitionState);
    }
    let Some(cpu) = target.first_cpu() else { return Err(HvStatus::InvalidPartitionState) };
    cpu.request_partition_stop();
    crate::cpu::nmi_signal::signal_sent(cpu.index());
    crate::cpu::apic::send_nmi(cpu.apic_id());
    Ok(())
}

/// The status block of `p`.
pub fn status_of(p: &Partition) -> PartitionStatus {
    let config = p.config();
    let h = &p.health;
    let mut name = [0u8; NAME_BYTES];
    let n = config.name.len().min(NAME_BYTES);
    name[..n].copy_from_slice(&config.name.as_bytes()[..n]);
    let mut flag_bits = 0;
    if config.watchdog.is_some() {
        flag_bits |= flags::WATCHDOG;
    }
    if config.critical {
        flag_bits |= flags::CRITICAL;
    }
    if !config.supervises.is_empty() {
        flag_bits |= flags::SUPERVISOR;
    }
    let (fault_policy, max_restarts) = match config.fault_policy {
        FaultPolicy::Halt => (policy::HALT, 0),
        FaultPolicy::Restart { max_restarts } => (policy::RESTART, max_restarts),
        FaultPolicy::ResetBoard => (policy::RESET_BOARD, 0),
    };
    let load = |c: &core::sync::atomic::AtomicU32| c.load(Ordering::Relaxed);
    let mut faults_by_reason = [0u32; 12];
    for (to, from) in faults_by_reason.iter_mut().zip(h.faults_by_reason.iter()) {
        *to = load(from);
    }
    PartitionStatus {
        version: STATUS_VERSION,
        id: config.id.0,
        state: h.state() as u8,
        flags: flag_bits,
        last_fault: h.last_fault(),
        fault_policy,
        name,
        watchdog_ms: config.watchdog.map_or(0, |w| w.period_ms),
        restarts: p.restarts(),
        max_restarts,
        faults: p.faults(),
        watchdog_misses: load(&h.watchdog_misses),
        check_ins: load(&h.check_ins),
        console_lines_dropped: p.console_lines_dropped(),
        exits_io: load(&p.exits.io),
        exits_msr: load(&p.exits.msr),
        exits_cpuid: load(&p.exits.cpuid),
        exits_other: load(&p.exits.other),
        messages_sent: load(&h.messages_sent),
        messages_received: load(&h.messages_received),
        messages_refused: load(&h.messages_refused),
        events_sent: load(&h.events_sent),
        events_received: load(&h.events_received),
        events_refused: load(&h.events_refused),
        faults_by_reason,
        uptime_ms: h.uptime_ms(),
    }
}
