//! `bulkhead-msg status`, `restart` and `halt`: the partition's supervision through the
//! `bulkhead_msg` module's devices (docs/supervision.md, "From Linux"):
//!
//! - `/dev/bulkhead/self` (every partition on a hypervisor with supervision): the status
//!   ioctl only;
//! - `/dev/bulkhead/supervisor` (only in the supervisor): the status ioctl for every
//!   partition it supervises too, and the control ioctl.
//!
//! The status block is the hypervisor's, passed through unchanged and decoded with
//! [`bulkhead_abi::supervision::PartitionStatus`].

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use bulkhead_abi::supervision::{ControlAction, FaultReason, PARTITION_SELF, PartitionState, PartitionStatus, flags};

use crate::{Failure, Result};

pub const SELF_DEVICE: &str = "/dev/bulkhead/self";
pub const SUPERVISOR_DEVICE: &str = "/dev/bulkhead/supervisor";

/// The status ioctl's argument (`struct bh_status_arg` of linux/bulkhead-msg): the id,
/// 4 reserved bytes, the status block.
#[repr(C)]
struct StatusArg {
    id: u32,
    reserved: u32,
    status: [u8; PartitionStatus::SIZE],
}

/// The control ioctl's argument (`struct bh_control_arg`).
#[repr(C)]
struct ControlArg {
    id: u32,
    action: u32,
}

/// Linux's `_IOC(dir, type, nr, size)` (include/uapi/asm-generic/ioctl.h): nr in bits
/// 0..8, type 8..16, size 16..30, direction 30..32 (1 write, 2 read).
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    dir << 30 | (size as u64) << 16 | IOC_MAGIC << 8 | nr
}
const IOC_MAGIC: u64 = 0xb4;
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;
/// `BH_IOC_STATUS`, `_IOWR(0xb4, 1, struct bh_status_arg)`.
pub const IOC_STATUS: u64 = ioc(IOC_READ | IOC_WRITE, 1, size_of::<StatusArg>());
/// `BH_IOC_CONTROL`, `_IOW(0xb4, 2, struct bh_control_arg)`.
pub const IOC_CONTROL: u64 = ioc(IOC_WRITE, 2, size_of::<ControlArg>());

unsafe extern "C" {
    /// The C library's ioctl(2).
    fn ioctl(fd: i32, request: u64, ...) -> i32;
}

/// One ioctl with a pointer argument.
fn call<T>(file: &File, request: u64, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is a live, exclusively borrowed value of the layout the module's
    // ioctl `request` reads and writes (StatusArg or ControlArg, mirrored from its C).
    let rc = unsafe { ioctl(file.as_raw_fd(), request, core::ptr::from_mut(arg)) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// The device: the supervisor's when there is one, else the partition's own.
pub fn open_device() -> Result<File> {
    let path = if Path::new(SUPERVISOR_DEVICE).exists() { SUPERVISOR_DEVICE } else { SELF_DEVICE };
    File::open(path)
        .map_err(|e| Failure::Usage(format!("{path}: {e} (is bulkhead_msg loaded, on a hypervisor with supervision?)")))
}

/// A partition's status (`None`: the partition's own).
pub fn status(file: &File, id: Option<u32>) -> io::Result<PartitionStatus> {
    let mut arg = StatusArg { id: id.unwrap_or(PARTITION_SELF), reserved: 0, status: [0; PartitionStatus::SIZE] };
    call(file, IOC_STATUS, &mut arg)?;
    Ok(PartitionStatus::from_bytes(&arg.status))
}

/// The statuses this partition may read: its own, then, in the supervisor, every
/// partition's it supervises (ids from 0 until the hypervisor says there is no such
/// partition; the ones it does not supervise refused with EACCES), in id order.
pub fn readable(file: &File) -> Result<Vec<PartitionStatus>> {
    let own = status(file, None).map_err(|e| Failure::Usage(format!("own status: {}", describe(&e))))?;
    if own.flags & flags::SUPERVISOR == 0 {
        return Ok(vec![own]);
    }
    let mut all = Vec::new();
    for id in 0..=u32::from(u8::MAX) {
        match status(file, Some(id)) {
            Ok(s) => all.push(s),
            Err(e) if e.raw_os_error() == Some(EACCES) => {}
            Err(e) if e.raw_os_error() == Some(ENOENT) => break,
            Err(e) => return Err(Failure::Usage(format!("status of partition {id}: {}", describe(&e)))),
        }
    }
    Ok(all)
}

const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const EACCES: i32 = 13;
const EBUSY: i32 = 16;
const EINVAL: i32 = 22;
const ENOTTY: i32 = 25;
const EOPNOTSUPP: i32 = 95;

/// An error with its errno's name first, as the tests and the documentation quote it:
/// `EACCES: the hypervisor refused (not a partition this one supervises)`.
pub fn describe(e: &io::Error) -> String {
    let (name, meaning) = match e.raw_os_error() {
        Some(EACCES) => ("EACCES", "the hypervisor refused (not a partition this one supervises)"),
        Some(EPERM) => ("EPERM", "not the supervisor's device"),
        Some(ENOENT) => ("ENOENT", "no such partition"),
        Some(EBUSY) => ("EBUSY", "not now: the partition is being stopped, or already halted"),
        Some(EINVAL) => ("EINVAL", "invalid request"),
        Some(ENOTTY) => ("ENOTTY", "not a bulkhead_msg supervision device"),
        Some(EOPNOTSUPP) => ("EOPNOTSUPP", "the hypervisor has no such call"),
        _ => return e.to_string(),
    };
    format!("{name}: {meaning}")
}

/// The table's header.
pub const HEADER: [&str; 10] = [
    "ID",
    "NAME",
    "STATE",
    "RESTARTS",
    "FAULTS",
    "LAST-FAULT",
    "WATCHDOG",
    "EXITS",
    "MSGS(sent/recv/refused)",
    "EVENTS(sent/recv/refused)",
];

/// A partition's row: its id, name, state, restarts, faults, last fault's reason, its
/// watchdog as `PERIODms/MISSES` (`-` without one), its VM exits, its messages and events.
pub fn row(s: &PartitionStatus) -> [String; 10] {
    let state = s.state().map_or_else(|| format!("state-{}", s.state), |st: PartitionState| st.name().to_string());
    let last_fault = FaultReason::from_u8(s.last_fault).map_or("-", FaultReason::name);
    let watchdog = if s.flags & flags::WATCHDOG != 0 {
        format!("{}ms/{}", s.watchdog_ms, s.watchdog_misses)
    } else {
        "-".to_string()
    };
    [
        s.id.to_string(),
        s.name().to_string(),
        state,
        s.restarts.to_string(),
        s.faults.to_string(),
        last_fault.to_string(),
        watchdog,
        s.exits_total().to_string(),
        format!("{}/{}/{}", s.messages_sent, s.messages_received, s.messages_refused),
        format!("{}/{}/{}", s.events_sent, s.events_received, s.events_refused),
    ]
}

/// The table: columns left-aligned, two spaces apart, no trailing blanks.
pub fn table(statuses: &[PartitionStatus]) -> String {
    let rows: Vec<[String; 10]> = std::iter::once(HEADER.map(String::from)).chain(statuses.iter().map(row)).collect();
    let mut widths = [0; 10];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (cell, w) in r.iter().zip(widths) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The partition `target` names: a number is an id, anything else a name among the
/// partitions this one may read.
pub fn resolve(target: &str, readable: &[PartitionStatus]) -> Result<u32> {
    if let Ok(id) = target.parse::<u32>() {
        return Ok(id);
    }
    match readable.iter().find(|s| s.name() == target) {
        Some(s) => Ok(u32::from(s.id)),
        None => Err(Failure::Check(format!(
            "{target}: no partition of that name among those this one may read (use its id)"
        ))),
    }
}

/// `bulkhead-msg status`.
pub fn print_status() -> Result<()> {
    let file = open_device()?;
    print!("{}", table(&readable(&file)?));
    Ok(())
}

/// `bulkhead-msg restart|halt NAME|ID`.
pub fn control(action: ControlAction, target: &str) -> Result<()> {
    let file = open_device()?;
    let id = resolve(target, &readable(&file)?)?;
    let verb = match action {
        ControlAction::Restart => "restart",
        ControlAction::Halt => "halt",
    };
    let mut arg = ControlArg { id, action: action as u32 };
    match call(&file, IOC_CONTROL, &mut arg) {
        Ok(()) => {
            println!("{verb} {target} (partition {id}): requested");
            Ok(())
        }
        Err(e) => Err(Failure::Check(format!("{verb} {target} (partition {id}): {}", describe(&e)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: u8, name: &str, state: PartitionState) -> PartitionStatus {
        let mut s = PartitionStatus { id, state: state as u8, last_fault: 0xFF, ..Default::default() };
        s.name[..name.len()].copy_from_slice(name.as_bytes());
        s
    }

    #[test]
    fn ioctl_numbers_are_those_of_the_module() {
        // _IOWR(0xb4, 1, 264 bytes) and _IOW(0xb4, 2, 8 bytes), as the C compiler gives them.
        assert_eq!(size_of::<StatusArg>(), 264);
        assert_eq!(IOC_STATUS, 0xC108_B401);
        assert_eq!(IOC_CONTROL, 0x4008_B402);
    }

    #[test]
    fn table_shows_a_row_per_partition_aligned() {
        let mut witness = status(1, "witness", PartitionState::Running);
        witness.flags = flags::WATCHDOG;
        witness.watchdog_ms = 500;
        witness.watchdog_misses = 2;
        witness.restarts = 3;
        witness.faults = 2;
        witness.last_fault = FaultReason::Watchdog as u8;
        witness.exits_io = 10;
        witness.exits_cpuid = 5;
        witness.messages_sent = 7;
        witness.events_received = 4;
        let linux = status(0, "linux", PartitionState::Starting);
        let text = table(&[linux, witness]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID  NAME     STATE     RESTARTS  FAULTS  LAST-FAULT  WATCHDOG  EXITS"), "{text}");
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["0", "linux", "starting", "0", "0", "-", "-", "0", "0/0/0", "0/0/0"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["1", "witness", "running", "3", "2", "watchdog", "500ms/2", "15", "7/0/0", "0/4/0"]
        );
        // Columns line up: every row's state starts where the header's STATE does.
        let at = lines[0].find("STATE").unwrap();
        assert_eq!(&lines[2][at..at + 7], "running");
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn unknown_state_and_reason_still_print() {
        let mut s = status(2, "x", PartitionState::Halted);
        s.state = 9;
        s.last_fault = 42;
        let r = row(&s);
        assert_eq!(r[2], "state-9");
        assert_eq!(r[5], "-");
    }

    #[test]
    fn targets_are_ids_or_readable_names() {
        let all = [status(0, "linux", PartitionState::Running), status(3, "witness", PartitionState::Running)];
        assert_eq!(resolve("witness", &all).ok(), Some(3));
        assert_eq!(resolve("7", &all).ok(), Some(7));
        assert!(matches!(resolve("nobody", &all), Err(Failure::Check(_))));
    }

    #[test]
    fn errors_name_their_errno() {
        let e = io::Error::from_raw_os_error(EACCES);
        assert!(describe(&e).starts_with("EACCES: "));
        assert!(describe(&io::Error::from_raw_os_error(ENOENT)).starts_with("ENOENT: "));
    }
}
