//! Why the hypervisor reset the board, kept where it survives the reset (`[reset_record]`
//! in the board file) and printed at the next boot (docs/supervision.md, "Reset record").
//!
//! The record is 8 bytes of the RTC's CMOS RAM at the board's offset, in the format of
//! `bulkhead_drivers::cmos::record` (magic, version, reason, detail, boot count, CRC-8).
//! At boot [`report_at_boot`] prints what the last boot recorded and leaves a cleared
//! record (reason none, the boot count one higher); [`record`] writes the reason when the
//! hypervisor decides to reset the board (the monitor before it stops kicking the board
//! watchdog, the `reset-board` policy, a panic). A record that does not decode (first
//! boot, a battery loss, bytes damaged) counts as none.
//!
//! [`record`] runs on panic paths: it takes no lock (a panicking CPU may hold any of them)
//! and logs nothing. Only the first reason of a boot is written (it is the one that
//! started the reset) until [`clear`] withdraws it; a flag held for the few port writes
//! keeps two CPUs' index and data writes from interleaving.

use crate::log::{error, info, warn};
use bulkhead_board::tables::{self, PartitionId, RESET_RECORD_BYTES};
use bulkhead_drivers::cmos::{self, Cmos, record as format};
use bulkhead_drivers::port::IoPorts;
use core::sync::atomic::{AtomicBool, AtomicU16, Ordering};

/// Why the board watchdog was left to expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogCause {
    /// A critical partition was not healthy.
    PartitionUnhealthy(PartitionId),
    /// A hypervisor core stayed in the hypervisor too long (its CPU index).
    CoreHung(u32),
}

/// Why the board is reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    BoardWatchdog {
        cause: WatchdogCause,
    },
    /// A partition's fault policy `reset-board`.
    Policy {
        partition: PartitionId,
    },
    Panic,
}

const _: () = assert!(RESET_RECORD_BYTES as usize == format::LEN);
const _: () = assert!(tables::MAX_CPUS <= u8::MAX as usize, "a CPU index fits the detail byte");

/// Set by the first [`record`] of this boot, until [`clear`].
static RECORDED: AtomicBool = AtomicBool::new(false);
/// Held while a CPU writes the record: two CPUs' index and data port writes must not
/// interleave. Held for a few port writes, by code that cannot fail in between.
static WRITING: AtomicBool = AtomicBool::new(false);
/// This boot's count, written back with every record.
static BOOTS: AtomicU16 = AtomicU16::new(0);

/// The record's CMOS offset, if the board keeps one there and it lies in CMOS RAM.
fn offset() -> Option<u8> {
    match crate::config::SYSTEM.board.reset_record {
        Some(tables::ResetRecord::Cmos { offset }) if cmos::ram_range_ok(offset, RESET_RECORD_BYTES) => Some(offset),
        _ => None,
    }
}

fn cmos_ram() -> Cmos<IoPorts> {
    // SAFETY: the RTC's index and data ports, which no partition owns on a board that keeps
    // a reset record (the configuration check); index writes keep NMIs enabled.
    Cmos::new(unsafe { IoPorts::new(cmos::INDEX_PORT) })
}

fn to_format(reason: ResetReason) -> format::Reason {
    match reason {
        ResetReason::BoardWatchdog { cause: WatchdogCause::PartitionUnhealthy(p) } => {
            format::Reason::WatchdogPartition(p.0)
        }
        ResetReason::BoardWatchdog { cause: WatchdogCause::CoreHung(cpu) } => {
            format::Reason::WatchdogCore(cpu.min(u32::from(u8::MAX)) as u8)
        }
        ResetReason::Policy { partition } => format::Reason::Policy(partition.0),
        ResetReason::Panic => format::Reason::Panic,
    }
}

/// Writes the record with `reason`, unless another CPU is writing it for over 2 ms (it
/// then stopped in the middle: nothing sensible is left to do).
fn write(offset: u8, reason: format::Reason) {
    let free = || WRITING.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok();
    if !crate::cpu::time::wait_until(2, free) {
        return;
    }
    let bytes = format::encode(format::Record { reason, boots: BOOTS.load(Ordering::Relaxed) });
    cmos_ram().write_bytes(offset, &bytes);
    WRITING.store(false, Ordering::Release);
}

/// Records `reason` for the next boot. Silent and without a lock a panicking CPU could hold
/// (see the module docs); does nothing on a board without a record, and while an earlier
/// reason of this boot stands (the first one is what started the reset).
pub fn record(reason: ResetReason) {
    let Some(offset) = offset() else { return };
    if RECORDED.swap(true, Ordering::AcqRel) {
        return;
    }
    write(offset, to_format(reason));
}

/// Forgets a recorded reason: what led to it cleared before the board reset (the monitor
/// kicks the board watchdog again).
pub fn clear() {
    let Some(offset) = offset() else { return };
    if RECORDED.load(Ordering::Acquire) {
        write(offset, format::Reason::None);
        RECORDED.store(false, Ordering::Release);
    }
}

/// A partition's name for the report (the record may come from another build).
fn partition_name(id: u8) -> &'static str {
    crate::config::SYSTEM.partitions.get(usize::from(id)).map_or("(unknown)", |p| p.name)
}

/// Prints the last reset's recorded reason at boot, then clears it. Boot CPU, before any
/// partition starts. Also decides whether the test switch `hang_cpu` applies.
pub fn report_at_boot() {
    let Some(tables::ResetRecord::Cmos { offset: at }) = crate::config::SYSTEM.board.reset_record else {
        info!("reset record: not kept on this board");
        super::test_hang::configure(Err("the board keeps no reset record"));
        return;
    };
    let Some(offset) = offset() else {
        error!(
            "reset record: CMOS offset {=u8:#x} + {=u8} bytes is not CMOS RAM (0x0e-0x7f): not kept",
            at, RESET_RECORD_BYTES
        );
        super::test_hang::configure(Err("the board keeps no reset record"));
        return;
    };
    let mut cmos = cmos_ram();
    let mut bytes = [0u8; format::LEN];
    cmos.read_bytes(offset, &mut bytes);
    let (reason, boots) = match format::decode(&bytes) {
        Ok(record) => (record.reason, record.boots),
        Err(format::DecodeError::NoMagic) => (format::Reason::None, 0),
        Err(e) => {
            warn!(
                "reset record: CMOS {=u8:#x}-{=u8:#x} hold a damaged record ({}); taken as none",
                offset,
                offset + RESET_RECORD_BYTES - 1,
                crate::log::Debug2Format(&e)
            );
            (format::Reason::None, 0)
        }
    };
    let boots = boots.wrapping_add(1);
    match reason {
        format::Reason::None => info!("reset record: none (boot {=u16})", boots),
        format::Reason::WatchdogCore(cpu) => {
            warn!("reset record: the last reset was the board watchdog (cpu {=u8} hung in the hypervisor)", cpu)
        }
        format::Reason::WatchdogPartition(p) => {
            warn!("reset record: the last reset was the board watchdog (partition {=str} unhealthy)", partition_name(p))
        }
        format::Reason::Policy(p) => {
            warn!("reset record: the last reset was fault policy reset-board of partition {=str}", partition_name(p))
        }
        format::Reason::Panic => warn!("reset record: the last reset was a hypervisor panic"),
    }
    BOOTS.store(boots, Ordering::Relaxed);
    cmos.write_bytes(offset, &format::encode(format::Record { reason: format::Reason::None, boots }));
    super::test_hang::configure(match reason {
        format::Reason::None => Ok(()),
        _ => Err("this boot follows a recorded reset"),
    });
}
