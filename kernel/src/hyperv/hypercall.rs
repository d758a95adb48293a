//! Hypercalls (TLFS "Hypercall Interface"): VMCALL / VMMCALL from the hypercall page,
//! decoded and answered with an HV_STATUS in RAX. HvCallPostMessage and HvCallSignalEvent
//! exist, against the compiled connection table, and Bulkhead's own console write
//! (`code::BULKHEAD_CONSOLE_WRITE`, which every partition may make); every other call code,
//! the rest of Bulkhead's range 0x8000..=0x80FF included, is INVALID_HYPERCALL_CODE.
//!
//! Checks, in this order (the TLFS leaves the precedence open but wants ACCESS_DENIED to
//! win over answers that reveal something): CPL 0 and not real mode, else #UD; the
//! hypercall page enabled, else #UD (as on a CPU whose hypervisor offers none); a known
//! call code; the caller's privilege for it (ACCESS_DENIED: a partition that sends on no
//! connection of that kind); the input value (INVALID_HYPERCALL_INPUT); the input block
//! (8-byte aligned, within one page, in the caller's own memory: INVALID_ALIGNMENT for
//! each, as the TLFS says); its fields; the connection (INVALID_CONNECTION_ID if no
//! connection has the id, ACCESS_DENIED if the caller is not its sender,
//! INVALID_PORT_ID if it is of the other kind); then the delivery (`synic`).

use super::{partition_registers, synic};
use crate::partition::Partition;
use bulkhead_abi::hyperv::cpuid::privileges_ebx;
use bulkhead_abi::hyperv::hypercall::{CONSOLE_WRITE_MAX, code};
use bulkhead_abi::hyperv::{
    HvStatus, HypercallInput, HypercallMsr, HypercallResult, PostMessageHeader, PostMessageInput, SignalEventInput,
    input_gpa_ok,
};
use bulkhead_board::tables::{Connection, ConnectionKind};
use bulkhead_virt::guest_state::{ExecutionMode, GuestRegisters};
use core::sync::atomic::Ordering;

/// What the exit handler does with a hypercall exit.
pub enum Outcome {
    /// Answered: RAX (or EDX:EAX) holds the result; skip the instruction.
    Answered,
    /// Not a legal hypercall here: inject #UD (the instruction does not exist for it).
    Undefined,
}

/// HvCallSignalEvent's fast form and HvCallPostMessage's memory form with every other
/// control bit clear (no rep count, no variable header: TLFS "Hypercall Inputs"): the
/// control values [`handle`] answers before any decoding.
const FAST_SIGNAL_EVENT: u64 = code::SIGNAL_EVENT as u64 | 1 << 16;
const POST_MESSAGE: u64 = code::POST_MESSAGE as u64;

/// The answer to a call [`handle`] or [`handle_call`] matched by its control value, from
/// a 64-bit caller at CPL 0: #UD without the hypercall page, ACCESS_DENIED without
/// `$privilege`, else `$call`'s status in RAX, counted; returns from the enclosing
/// function. A macro rather than a function taking the call as a closure: that cost the
/// signal's path 12 instructions (`cargo xtask bench` `hv-signal-event`).
macro_rules! answer_matched {
    ($partition:expr, $regs:expr, $code:expr, $privilege:expr, $call:expr) => {{
        let registers = partition_registers($partition);
        if !HypercallMsr::decode(registers.hypercall.load(Ordering::Acquire)).is_enabled() {
            return Outcome::Undefined;
        }
        let privileges = registers.hypercall_privileges.load(Ordering::Acquire);
        let result = if privileges & $privilege != 0 { $call } else { Err(HvStatus::AccessDenied) };
        count($partition, $code, result.is_ok());
        $regs.rax = HypercallResult::new(result.err().unwrap_or(HvStatus::Success), 0).value();
        return Outcome::Answered;
    }};
}

/// Handles the hypercall the guest just made in `mode` with `regs`.
///
/// The calls partitions make most, from a 64-bit caller: the fast HvCallSignalEvent (an
/// event per I/O completion) here and HvCallPostMessage first in [`handle_call`], are
/// matched first, each as one compare of its control value, and go straight to
/// [`signal_event`] and [`post_message`]: the same checks in the same order as the
/// general path, without the input decoding the other calls need (issue 19,
/// docs/performance.md "Profile"). The post is not inlined here: its copy and queue code
/// would cost the signal's path registers (measured: 15 to 20 instructions on
/// `hv-signal-event`).
#[inline(always)]
pub fn handle(partition: &Partition, mode: ExecutionMode, regs: &mut GuestRegisters) -> Outcome {
    if regs.rcx == FAST_SIGNAL_EVENT && matches!(mode, ExecutionMode::Bits64 { cpl: 0 }) {
        answer_matched!(partition, regs, code::SIGNAL_EVENT, privileges_ebx::SIGNAL_EVENTS, {
            signal_event(partition, SignalEventInput::from_fast(regs.rdx))
        });
    }
    handle_call(partition, mode, regs)
}

/// Every hypercall but the fast HvCallSignalEvent of a 64-bit caller; HvCallPostMessage
/// from a 64-bit caller first.
#[inline(never)]
fn handle_call(partition: &Partition, mode: ExecutionMode, regs: &mut GuestRegisters) -> Outcome {
    if regs.rcx == POST_MESSAGE && matches!(mode, ExecutionMode::Bits64 { cpl: 0 }) {
        answer_matched!(partition, regs, code::POST_MESSAGE, privileges_ebx::POST_MESSAGES, {
            post_message(partition, regs.rdx)
        });
    }
    let (control, parameter, output) = match mode {
        ExecutionMode::Bits64 { cpl: 0 } => (regs.rcx, regs.rdx, regs.r8),
        // 32-bit callers: input value in EDX:EAX, input GPA in EBX:ECX, output GPA in
        // EDI:ESI.
        ExecutionMode::Bits32 { cpl: 0 } => {
            (join(regs.rdx, regs.rax), join(regs.rbx, regs.rcx), join(regs.rdi, regs.rsi))
        }
        _ => return Outcome::Undefined,
    };
    let page = HypercallMsr::decode(partition_registers(partition).hypercall.load(Ordering::Acquire));
    if !page.is_enabled() {
        return Outcome::Undefined;
    }
    let input = HypercallInput::decode(control);
    let result = if crate::supervision::calls::is_supervision_call(input.code()) {
        crate::supervision::calls::handle(partition, input, parameter, output)
    } else {
        call(partition, input, parameter)
    };
    count(partition, input.code(), result.is_ok());
    let status = match result {
        Ok(()) => HvStatus::Success,
        Err(status) => status,
    };
    let result = HypercallResult::new(status, 0).value();
    match mode {
        ExecutionMode::Bits64 { .. } => regs.rax = result,
        _ => {
            regs.rax = result & 0xffff_ffff;
            regs.rdx = result >> 32;
        }
    }
    Outcome::Answered
}

/// Counts the caller's messages and events sent or refused (`supervision/health.rs`).
fn count(partition: &Partition, code: u16, ok: bool) {
    let h = &partition.health;
    let counter = match (code, ok) {
        (code::POST_MESSAGE, true) => &h.messages_sent,
        (code::POST_MESSAGE, false) => &h.messages_refused,
        (code::SIGNAL_EVENT, true) => &h.events_sent,
        (code::SIGNAL_EVENT, false) => &h.events_refused,
        _ => return,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

fn join(high: u64, low: u64) -> u64 {
    (high << 32) | (low & 0xffff_ffff)
}

fn call(partition: &Partition, input: HypercallInput, parameter: u64) -> Result<(), HvStatus> {
    if input.code() == code::BULKHEAD_CONSOLE_WRITE {
        return console_write(partition, input, parameter);
    }
    let privilege = match input.code() {
        code::POST_MESSAGE => privileges_ebx::POST_MESSAGES,
        code::SIGNAL_EVENT => privileges_ebx::SIGNAL_EVENTS,
        _ => return Err(HvStatus::InvalidHypercallCode),
    };
    if partition_registers(partition).hypercall_privileges.load(Ordering::Acquire) & privilege == 0 {
        return Err(HvStatus::AccessDenied);
    }
    input.check_simple_call()?;
    match input.code() {
        code::POST_MESSAGE => {
            // Memory form only (QEMU answers the fast form the same way).
            if input.is_fast() {
                return Err(HvStatus::InvalidHypercallCode);
            }
            post_message(partition, parameter)
        }
        _ => {
            let event = if input.is_fast() {
                SignalEventInput::from_fast(parameter)
            } else {
                SignalEventInput::from_bytes(&read_input(partition, parameter, SignalEventInput::SIZE)?.1)
            };
            signal_event(partition, event)
        }
    }
}

/// HvCallPostMessage (memory form) once the call and the caller's privilege for it are
/// checked: the input block at `gpa`, its header, the connection, the delivery.
#[inline(always)]
fn post_message(partition: &Partition, gpa: u64) -> Result<(), HvStatus> {
    let (host, header) = read_input::<{ PostMessageHeader::SIZE }>(partition, gpa, PostMessageInput::SIZE)?;
    let header = PostMessageHeader::from_bytes(&header);
    header.check()?;
    let (index, connection) = connection(partition, header.connection_id, true)?;
    // SAFETY: the payload follows the 16-byte header inside the 256-byte input block
    // `read_input` checked in the caller's own RAM; its size was checked (at most 240).
    let message = unsafe {
        synic::PostedMessage::new(
            header.message_header(u64::from(connection.id)),
            host + PostMessageHeader::SIZE as u64,
            header.payload_size as usize,
        )
    };
    let receiver = crate::partition::get(connection.to);
    if crate::xen::speaks_xen(receiver) {
        return status(crate::xen::ring::post_from_hyperv(index, connection, &message));
    }
    status(synic::post(receiver, index, connection, &message))
}

/// HvCallSignalEvent once the call and the caller's privilege for it are checked: the
/// input, the connection, the delivery.
#[inline(always)]
fn signal_event(partition: &Partition, event: SignalEventInput) -> Result<(), HvStatus> {
    event.check()?;
    let (index, connection) = connection(partition, event.connection_id, false)?;
    // The port behind an event connection has one flag: FlagNumber 0 is it.
    let ConnectionKind::Event { flag } = connection.kind else { return Err(HvStatus::InvalidPortId) };
    if event.flag_number != 0 {
        return Err(HvStatus::InvalidParameter);
    }
    let receiver = crate::partition::get(connection.to);
    if crate::xen::speaks_xen(receiver) {
        return status(crate::xen::event_channel::signal_from_hyperv(index, connection));
    }
    status(synic::signal(receiver, connection, flag))
}

/// Bulkhead's console write: the text goes to the partition's console through the same
/// path as the bytes it writes to its virtual UART's THR (`Partition::console_write`: line
/// assembly, `[name]` prefix, rate limit, dropped-line count), all of it in this one exit.
/// No privilege: every partition has a console. Input checks as for the TLFS calls: the
/// input value, memory form only (the fast form is INVALID_HYPERCALL_CODE, as for
/// HvCallPostMessage), the 8-byte header placed like any input block, its fields
/// (INVALID_PARAMETER), then the whole block (header and text: one page, own memory).
fn console_write(partition: &Partition, input: HypercallInput, parameter: u64) -> Result<(), HvStatus> {
    input.check_simple_call()?;
    if input.is_fast() {
        return Err(HvStatus::InvalidHypercallCode);
    }
    const HEADER: usize = 8;
    let (_, header) = read_input::<HEADER>(partition, parameter, HEADER)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let reserved = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > CONSOLE_WRITE_MAX || reserved != 0 {
        return Err(HvStatus::InvalidParameter);
    }
    let (host, _) = read_input::<0>(partition, parameter, HEADER + len)?;
    let mut chunk = [0u8; 128];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(chunk.len());
        // SAFETY: `n` bytes of the text within the block `read_input` checked in the
        // caller's own RAM; its other vCPUs may change them meanwhile, which only changes
        // what it prints.
        unsafe { core::ptr::copy_nonoverlapping((host + (HEADER + at) as u64) as *const u8, chunk.as_mut_ptr(), n) };
        partition.console_write_all(&chunk[..n]);
        at += n;
    }
    Ok(())
}

fn status(status: HvStatus) -> Result<(), HvStatus> {
    match status {
        HvStatus::Success => Ok(()),
        other => Err(other),
    }
}

/// The connection `id` the caller sends on, of the kind the call needs.
fn connection(partition: &Partition, id: u32, message: bool) -> Result<(usize, &'static Connection), HvStatus> {
    let (index, connection) = crate::config::SYSTEM
        .connections
        .iter()
        .enumerate()
        .find(|(_, c)| c.id == id)
        .ok_or(HvStatus::InvalidConnectionId)?;
    if connection.from != partition.config().id {
        return Err(HvStatus::AccessDenied);
    }
    if matches!(connection.kind, ConnectionKind::Message { .. }) != message {
        return Err(HvStatus::InvalidPortId);
    }
    Ok((index, connection))
}

/// Checks an input block of `len` bytes at guest-physical `gpa` (8-byte aligned, within
/// one page, in the caller's own RAM) and copies its first `N` bytes; returns its host
/// address too.
fn read_input<const N: usize>(partition: &Partition, gpa: u64, len: usize) -> Result<(u64, [u8; N]), HvStatus> {
    input_gpa_ok(gpa, len as u64)?;
    let host = super::private_memory(partition, gpa, len as u64, false).ok_or(HvStatus::InvalidAlignment)?;
    let mut bytes = [0; N];
    // SAFETY: `N` <= `len` bytes of the partition's own RAM (identity-mapped, checked
    // above); the caller's vCPU is in the hypervisor, its other vCPUs may change them
    // meanwhile, which only changes what it sends.
    unsafe { core::ptr::copy_nonoverlapping(host as *const u8, bytes.as_mut_ptr(), N.min(len)) };
    Ok((host, bytes))
}
