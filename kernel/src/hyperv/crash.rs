//! The guest crash MSRs (TLFS "Guest Crash Enlightenment"; Linux `hyperv_report_panic`,
//! `hv_kmsg_dump`): a partition stores P0..P4, then writes CRASH_CTL with CrashNotify. The
//! hypervisor logs the report as `[name] panic: ...` lines (the five parameters; with
//! CrashMessage also the text at P3, P4 bytes long, read from the partition's own RAM
//! only) and then treats it as a fault: the partition's fault policy applies.
//!
//! Bounds: the text is cut to `crash_text::MAX_BYTES` and `crash_text::MAX_LINES` lines,
//! taken from its start (the first lines of a panic say what happened). No further rate
//! limit is needed: a report ends the partition's run, so it gets one per start, and its
//! restart limit bounds the starts.

use super::{partition_registers, private_memory};
use crate::log::error;
use crate::partition::Partition;
use bulkhead_abi::hyperv::CrashCtl;
use bulkhead_virt::crash_text;
use core::sync::atomic::Ordering;

/// A WRMSR of CRASH_CTL with `value`: whether it reports a crash (CrashNotify set and no
/// reserved bit, which the MSR write refuses with #GP). If so the report is logged and the
/// caller applies the partition's fault policy.
pub fn notify(partition: &Partition, value: u64) -> bool {
    let ctl = CrashCtl::decode(value);
    if !ctl.is_notify() || value & CrashCtl::RESERVED_MASK != 0 {
        return false;
    }
    let name = partition.name();
    let p = partition_registers(partition).crash.each_ref().map(|r| r.load(Ordering::Acquire));
    error!(
        "[{=str}] panic: crash reported, P0 {=u64:#x} P1 {=u64:#x} P2 {=u64:#x} P3 {=u64:#x} P4 {=u64:#x}",
        name, p[0], p[1], p[2], p[3], p[4]
    );
    if ctl.has_message() {
        log_message(partition, p[3], p[4]);
    }
    true
}

/// Logs the crash text at guest-physical `gpa`, `len` bytes (at most `MAX_BYTES` read).
fn log_message(partition: &Partition, gpa: u64, len: u64) {
    let name = partition.name();
    let read = len.min(crash_text::MAX_BYTES);
    let Some(host) = private_memory(partition, gpa, read, false) else {
        error!(
            "[{=str}] panic: message of {=u64} bytes at {=u64:#x} is not in the partition's own memory",
            name, len, gpa
        );
        return;
    };
    let mut copy = [0u8; crash_text::MAX_BYTES as usize];
    let copy = &mut copy[..read as usize];
    for (i, byte) in copy.iter_mut().enumerate() {
        // SAFETY: within the `read` bytes of the partition's own RAM (identity-mapped)
        // checked above. Another vCPU of the partition may still be writing them (it is
        // stopped only by the fault that follows): volatile byte reads, any value is fine.
        *byte = unsafe { core::ptr::read_volatile((host + i as u64) as *const u8) };
    }
    let mut lines = crash_text::lines(copy);
    for line in lines.by_ref() {
        error!("[{=str}] panic: {=str}", name, line.as_str());
    }
    if lines.truncated() || len > read {
        error!("[{=str}] panic: (message cut: {=u64} bytes given, the first lines shown)", name, len);
    }
}
