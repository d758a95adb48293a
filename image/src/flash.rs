//! Writes an image onto a disk (or, when asked, a file) without hurting the wrong one.
//!
//! [`flash`] does, in order, and stops at the first refusal without writing a byte:
//!
//! 1. checks the image: its size and SHA-256 against the values its manifest promises;
//! 2. inspects the target: follows symlinks (`/dev/disk/by-id/...`), accepts only a whole
//!    block device (or a regular file with [`Request::allow_file`]), and refuses a partition,
//!    the disk holding `/` or `/boot`, a disk with anything mounted, used as swap or held by
//!    device-mapper/md, a read-only disk and one smaller than the image ([`Host::check_disk`]);
//! 3. shows what will be destroyed (model, size, serial, partitions) and asks through the
//!    [`Ui`];
//! 4. opens a block device with `O_EXCL` (the kernel's own in-use check, held until the end),
//!    writes in 4 MiB blocks with progress, syncs, drops the device's cache (`BLKFLSBUF`) and
//!    reads the written range back, comparing its SHA-256 with the expected one;
//! 5. asks the kernel to re-read the partition table (`BLKRRPART`), best effort.
//!
//! The decisions read the machine through a [`Host`], so tests run them on fixture trees.

mod device;
mod host;
mod mounts;
pub mod term;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use indicatif::BinaryBytes;
use sha2::{Digest, Sha256};

pub use host::{DiskInfo, Host, PartitionInfo, SYSTEM_MOUNT_POINTS, dev_path};
pub use mounts::{DevId, Mount, Swap, parse_mountinfo, parse_swaps};
pub use term::TerminalUi;

/// Size of one read or write. Large enough that per-call overhead vanishes against a USB
/// stick's throughput, a multiple of every erase-block and sector size in use.
pub const BLOCK_SIZE: usize = 4 << 20;

/// Written data is synced after this many bytes, so the page cache never holds much more than
/// this: the progress shows the device's real rate, and Ctrl-C or a pulled stick does not
/// leave hundreds of megabytes in flight.
pub const SYNC_INTERVAL: u64 = 64 << 20;

/// What the image's manifest promises about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    pub size: u64,
    pub sha256: [u8; 32],
}

/// One flash: which image, what it must be, and where it goes.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub image: &'a Path,
    pub expected: Expected,
    /// A whole-disk block device, or a symlink to one (`/dev/disk/by-id/...`).
    pub target: &'a Path,
    /// Accept a regular file as the target, creating it if missing (but never under `/dev`).
    /// Like a disk, an existing file keeps whatever lies beyond the image's size.
    pub allow_file: bool,
}

/// The phases the [`Ui`] shows progress for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Hashing the image before anything is opened for writing.
    CheckImage,
    Write,
    /// Reading the written range back.
    Verify,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::CheckImage => "checking image",
            Stage::Write => "writing",
            Stage::Verify => "verifying",
        }
    }
}

/// The answer to [`Ui::confirm`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Yes,
    No,
    /// The question cannot be put (no terminal); the reason is shown to the user.
    CannotAsk(String),
}

/// How [`flash`] talks to the user; tests implement it to answer and observe.
pub trait Ui {
    /// Shows `plan` (what will be destroyed) and asks whether to go on. Called once, after
    /// every check has passed and before the target is opened.
    fn confirm(&mut self, plan: &Plan) -> Answer;
    /// A stage starts; `total` bytes will be processed.
    fn begin(&mut self, stage: Stage, total: u64);
    /// `done` bytes of the current stage are processed.
    fn progress(&mut self, done: u64);
    /// The current stage finished.
    fn end(&mut self, stage: Stage);
    /// Something worth telling that does not stop the flash.
    fn note(&mut self, text: &str);
    /// Polled between blocks while writing and verifying: true stops the flash (Ctrl-C).
    fn interrupted(&mut self) -> bool {
        false
    }
}

/// What a target path turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// A block device.
    Disk(DiskInfo),
    /// An existing regular file of `size` bytes.
    File { size: u64 },
    /// Nothing exists at the path.
    Missing,
    /// Anything else (a character device, a folder, a socket...).
    Other(&'static str),
}

/// A target path and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetInfo {
    /// The path as given.
    pub given: PathBuf,
    /// With symlinks resolved (`/dev/disk/by-id/usb-...` -> `/dev/sdb`).
    pub path: PathBuf,
    pub kind: TargetKind,
}

/// Everything the user confirms: the image and exactly what it will overwrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub image: PathBuf,
    pub expected: Expected,
    pub target: TargetInfo,
}

/// A finished flash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The target written, symlinks resolved.
    pub target: PathBuf,
    pub bytes: u64,
    /// SHA-256 of the bytes read back from the target (equal to the expected one).
    pub sha256: [u8; 32],
}

/// Why a flash stopped. The first group stops before the target is opened for writing (the
/// target is unchanged); from [`Error::Write`] on, the target has been written to:
/// [`Error::target_changed`] tells them apart.
#[derive(Debug)]
pub enum Error {
    /// The image cannot be opened or read.
    ImageRead { path: PathBuf, source: io::Error },
    /// The image's size is not the manifest's.
    ImageSize { path: PathBuf, expected: u64, actual: u64 },
    /// The image's SHA-256 is not the manifest's.
    ImageHash { path: PathBuf, expected: [u8; 32], actual: [u8; 32] },
    /// Nothing exists at the target path (and creating a file was not allowed).
    TargetNotFound { path: PathBuf },
    /// The target or the machine's tables could not be inspected.
    Inspect { path: PathBuf, detail: String },
    /// The target is neither a block device nor a regular file.
    NotADisk { path: PathBuf, kind: &'static str },
    /// The target is a regular file and files were not allowed.
    RegularFile { path: PathBuf },
    /// The target is the image itself.
    SameFile { path: PathBuf },
    /// The target is a partition; `disk` is the whole disk.
    Partition { path: PathBuf, partition: String, disk: PathBuf },
    /// The target holds `/` or `/boot`.
    SystemDisk { path: PathBuf, mount_point: PathBuf, device: String },
    /// The target or one of its partitions is mounted.
    Mounted { path: PathBuf, device: PathBuf, mount_point: PathBuf },
    /// The target or one of its partitions is active swap.
    Swap { path: PathBuf, device: PathBuf },
    /// The target or one of its partitions is held by device-mapper/md (LVM, RAID, crypt).
    Held { path: PathBuf, device: PathBuf, holders: Vec<String> },
    /// The target is read-only (e.g. an SD card's lock switch).
    ReadOnly { path: PathBuf },
    /// The target is smaller than the image.
    TooSmall { path: PathBuf, size: u64, image_size: u64 },
    /// The user said no.
    Declined { path: PathBuf },
    /// The question could not be asked.
    CannotAsk { reason: String },
    /// The kernel refused the exclusive open: something else uses the device.
    Busy { path: PathBuf },
    /// The target could not be opened for writing.
    Open { path: PathBuf, source: io::Error },
    /// The path names another device or file than the one checked (replugged meanwhile?).
    TargetChanged { path: PathBuf },
    /// Writing failed at `offset`.
    Write { path: PathBuf, offset: u64, source: io::Error },
    /// The image changed while it was being written (it no longer reads as checked).
    ImageChanged { path: PathBuf, image: PathBuf, detail: String },
    /// Ctrl-C. `verifying`: the image was fully written, the read-back was cut short.
    Interrupted { path: PathBuf, written: u64, total: u64, verifying: bool },
    /// Flushing the written data to the device failed.
    Flush { path: PathBuf, source: io::Error },
    /// Reading the written range back failed.
    ReadBack { path: PathBuf, source: io::Error },
    /// The target does not hold the image: the read-back's SHA-256 differs.
    Mismatch { path: PathBuf, expected: [u8; 32], actual: [u8; 32] },
}

impl Error {
    /// Whether the target may have been changed: true once writing has started.
    pub fn target_changed(&self) -> bool {
        matches!(
            self,
            Error::Write { .. }
                | Error::ImageChanged { .. }
                | Error::Interrupted { .. }
                | Error::Flush { .. }
                | Error::ReadBack { .. }
                | Error::Mismatch { .. }
        )
    }
}

/// Lowercase hex, as `sha256sum` prints it.
pub fn hex(hash: &[u8; 32]) -> String {
    ::hex::encode(hash)
}

fn size_text(bytes: u64) -> String {
    format!("{} ({bytes} bytes)", BinaryBytes(bytes))
}

const NOT_WRITTEN: &str = "nothing was written";
const DO_NOT_BOOT: &str = "do not boot from it; flash it again";

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ImageRead { path, source } => write!(f, "cannot read the image {}: {source}", path.display()),
            Error::ImageSize { path, expected, actual } => write!(
                f,
                "the image {} is {actual} bytes but its manifest says {expected}: it is not the image the \
                 manifest describes (rebuild it with `cargo xtask image`); {NOT_WRITTEN}",
                path.display()
            ),
            Error::ImageHash { path, expected, actual } => write!(
                f,
                "the image {} does not match its manifest: SHA-256 {} expected, {} found (a damaged or \
                 different image; rebuild it with `cargo xtask image`); {NOT_WRITTEN}",
                path.display(),
                hex(expected),
                hex(actual)
            ),
            Error::TargetNotFound { path } if path.starts_with("/dev") => {
                write!(f, "there is no {} (not plugged in? `lsblk` lists the disks); {NOT_WRITTEN}", path.display())
            }
            Error::TargetNotFound { path } => write!(
                f,
                "{} does not exist; give an existing disk such as /dev/sdb (`lsblk` lists them), or \
                 --allow-file to write a new file",
                path.display()
            ),
            Error::Inspect { path, detail } => {
                write!(f, "cannot check {}: {detail}; {NOT_WRITTEN}", path.display())
            }
            Error::NotADisk { path, kind } => write!(
                f,
                "{} is a {kind}, not a disk: give a whole-disk block device such as /dev/sdb; {NOT_WRITTEN}",
                path.display()
            ),
            Error::RegularFile { path } => write!(
                f,
                "{} is a regular file, not a disk; pass --allow-file to write the image into a file; \
                 {NOT_WRITTEN}",
                path.display()
            ),
            Error::SameFile { path } => {
                write!(f, "{} is the image itself; {NOT_WRITTEN}", path.display())
            }
            Error::Partition { path, partition, disk } => write!(
                f,
                "{} is the partition {partition}, not a whole disk: the image carries its own partition \
                 table and must go onto the whole disk, {} (--device {}); {NOT_WRITTEN}",
                path.display(),
                disk.display(),
                disk.display()
            ),
            Error::SystemDisk { path, mount_point, device } => write!(
                f,
                "{} holds this machine's {} (mounted from {device}): refusing to overwrite the running \
                 system; {NOT_WRITTEN}",
                path.display(),
                mount_point.display()
            ),
            Error::Mounted { path, device, mount_point } => write!(
                f,
                "{} is in use: {} is mounted on {}; unmount it first (umount {}) if this really is the \
                 disk to overwrite; {NOT_WRITTEN}",
                path.display(),
                device.display(),
                mount_point.display(),
                device.display()
            ),
            Error::Swap { path, device } => write!(
                f,
                "{} is in use: {} is active swap (swapoff {} first if this really is the disk to \
                 overwrite); {NOT_WRITTEN}",
                path.display(),
                device.display(),
                device.display()
            ),
            Error::Held { path, device, holders } => write!(
                f,
                "{} is in use: {} is held by {} (LVM, RAID or encryption); {NOT_WRITTEN}",
                path.display(),
                device.display(),
                holders.iter().map(|h| format!("/dev/{h}")).collect::<Vec<_>>().join(", ")
            ),
            Error::ReadOnly { path } => {
                write!(f, "{} is read-only (an SD card's lock switch?); {NOT_WRITTEN}", path.display())
            }
            Error::TooSmall { path, size, image_size } => write!(
                f,
                "{} is too small: {} for an image of {}; {NOT_WRITTEN}",
                path.display(),
                size_text(*size),
                size_text(*image_size)
            ),
            Error::Declined { path } => write!(f, "not confirmed; {} was not touched", path.display()),
            Error::CannotAsk { reason } => write!(f, "{reason}; {NOT_WRITTEN}"),
            Error::Busy { path } => write!(
                f,
                "{} is busy: the kernel refused exclusive access (mounted, or opened by another program); \
                 {NOT_WRITTEN}",
                path.display()
            ),
            Error::Open { path, source } => {
                write!(f, "cannot open {} for writing: {source}", path.display())?;
                if source.kind() == io::ErrorKind::PermissionDenied {
                    write!(f, " (writing a disk needs root: run the command with sudo)")?;
                }
                write!(f, "; {NOT_WRITTEN}")
            }
            Error::TargetChanged { path } => write!(
                f,
                "{} changed between the checks and opening it (was the disk replugged?); {NOT_WRITTEN}",
                path.display()
            ),
            Error::Write { path, offset, source } => write!(
                f,
                "writing {} failed at byte {offset}: {source}; it is now partially written: {DO_NOT_BOOT}",
                path.display()
            ),
            Error::ImageChanged { path, image, detail } => write!(
                f,
                "the image {} changed while it was written ({detail}); {} is now partially written: \
                 {DO_NOT_BOOT}",
                image.display(),
                path.display()
            ),
            Error::Interrupted { path, written, total, verifying: false } => write!(
                f,
                "interrupted after writing {} of {}: {} is now partially written and will not boot; \
                 flash it again",
                size_text(*written),
                size_text(*total),
                path.display()
            ),
            Error::Interrupted { path, total, .. } => write!(
                f,
                "interrupted while verifying: all {} were written to {} but not read back; flash it again \
                 (or verify by hand, see docs/flashing.md) before booting from it",
                size_text(*total),
                path.display()
            ),
            Error::Flush { path, source } => {
                write!(f, "flushing {} failed: {source}; it may be partially written: {DO_NOT_BOOT}", path.display())
            }
            Error::ReadBack { path, source } => write!(
                f,
                "reading {} back failed: {source}; the image was written but could not be verified: \
                 {DO_NOT_BOOT}",
                path.display()
            ),
            Error::Mismatch { path, expected, actual } => write!(
                f,
                "verification failed: {} does not hold the image: SHA-256 {} expected, {} read back \
                 (a failing or fake-capacity medium?); {DO_NOT_BOOT}",
                path.display(),
                hex(expected),
                hex(actual)
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ImageRead { source, .. }
            | Error::Open { source, .. }
            | Error::Write { source, .. }
            | Error::Flush { source, .. }
            | Error::ReadBack { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = &self.target;
        writeln!(f, "image:  {}", self.image.display())?;
        writeln!(f, "        {}, sha256 {}", size_text(self.expected.size), hex(&self.expected.sha256))?;
        write!(f, "target: {}", target.path.display())?;
        if target.given != target.path {
            write!(f, " (given as {})", target.given.display())?;
        }
        writeln!(f)?;
        match &target.kind {
            TargetKind::Disk(disk) => {
                let name = [disk.vendor.as_deref(), disk.model.as_deref()].into_iter().flatten().collect::<Vec<_>>();
                let mut facts = Vec::new();
                facts.push(if name.is_empty() { "unknown model".to_string() } else { name.join(" ") });
                facts.push(size_text(disk.size));
                facts.push(match &disk.serial {
                    Some(serial) => format!("serial {serial}"),
                    None => "no serial number".into(),
                });
                facts.push(if disk.removable { "removable" } else { "NOT removable" }.into());
                writeln!(f, "        {}", facts.join(", "))?;
                if let Some(backing) = &disk.backing_file {
                    writeln!(f, "        loop device backed by {}", backing.display())?;
                }
                if disk.partitions.is_empty() {
                    writeln!(f, "        no partitions")?;
                } else {
                    let parts: Vec<String> =
                        disk.partitions.iter().map(|p| format!("{} ({})", p.name, BinaryBytes(p.size))).collect();
                    writeln!(f, "        partitions: {}", parts.join(", "))?;
                }
                write!(f, "EVERYTHING on {} will be destroyed.", target.path.display())
            }
            TargetKind::File { size } => write!(
                f,
                "        regular file of {}: its first {} will be replaced",
                size_text(*size),
                size_text(self.expected.size)
            ),
            TargetKind::Missing => write!(f, "        a new file will be created"),
            TargetKind::Other(kind) => write!(f, "        a {kind}"),
        }
    }
}

fn file_kind(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "folder"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_fifo() {
        "named pipe"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Describes the target path on this machine, judging nothing.
pub fn inspect(target: &Path) -> Result<TargetInfo, Error> {
    inspect_on(&Host::live(), target)
}

/// Describes `target` with `host`'s sysfs, judging nothing.
pub fn inspect_on(host: &Host, target: &Path) -> Result<TargetInfo, Error> {
    let (path, meta) = match std::fs::canonicalize(target) {
        Ok(path) => match std::fs::metadata(&path) {
            Ok(meta) => (path, meta),
            Err(e) => return Err(Error::Inspect { path: target.to_path_buf(), detail: e.to_string() }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(TargetInfo {
                given: target.to_path_buf(),
                path: target.to_path_buf(),
                kind: TargetKind::Missing,
            });
        }
        Err(e) => return Err(Error::Inspect { path: target.to_path_buf(), detail: e.to_string() }),
    };
    let kind = if meta.file_type().is_block_device() {
        let dev = DevId::from_raw(meta.rdev());
        TargetKind::Disk(host.disk_info(dev).ok_or_else(|| Error::Inspect {
            path: path.clone(),
            detail: format!("block device {dev} has no entry in {}", host.sys.join("dev/block").display()),
        })?)
    } else if meta.is_file() {
        TargetKind::File { size: meta.len() }
    } else {
        TargetKind::Other(file_kind(meta.file_type()))
    };
    Ok(TargetInfo { given: target.to_path_buf(), path, kind })
}

/// Flashes on this machine. See the module documentation.
pub fn flash(request: &Request, ui: &mut dyn Ui) -> Result<Report, Error> {
    flash_on(&Host::live(), request, ui)
}

/// Flashes, judging block devices with `host`'s view of the machine.
pub fn flash_on(host: &Host, request: &Request, ui: &mut dyn Ui) -> Result<Report, Error> {
    let mut image = check_image(request, ui)?;
    let image_meta = image.metadata().map_err(|source| Error::ImageRead { path: request.image.into(), source })?;
    let target = check_target(host, request, &image_meta)?;

    let plan = Plan { image: request.image.to_path_buf(), expected: request.expected, target };
    match ui.confirm(&plan) {
        Answer::Yes => {}
        Answer::No => return Err(Error::Declined { path: plan.target.path }),
        Answer::CannotAsk(reason) => return Err(Error::CannotAsk { reason }),
    }
    let target = plan.target;
    let path = target.path.clone();
    let (mut out, is_disk) = open_target(&target, request.expected.size)?;

    write_image(&mut image, &mut out, request, &path, ui)?;
    out.sync_all().map_err(|source| Error::Flush { path: path.clone(), source })?;
    let sha256 = read_back(&out, is_disk, request.expected, &path, ui)?;
    if is_disk && let Err(e) = device::reread_partitions(&out) {
        // EINVAL: the kernel keeps no partitions for this device at all (a loop device
        // attached without --partscan); there is nothing stale to worry about.
        if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) {
            ui.note(&format!("{} does not carry partitions in the kernel; not re-read", path.display()));
        } else {
            ui.note(&format!(
                "the kernel did not re-read the partition table of {} ({e}); unplug and replug the disk \
                 (or run `partprobe {}`) before using its partitions here",
                path.display(),
                path.display()
            ));
        }
    }
    Ok(Report { target: path, bytes: request.expected.size, sha256 })
}

/// Opens the image and checks its size and SHA-256 against the manifest. The handle is kept
/// for the write, so a file renamed over the image afterwards cannot slip in (a change to the
/// file itself is caught by hashing again while writing).
fn check_image(request: &Request, ui: &mut dyn Ui) -> Result<File, Error> {
    let path = request.image;
    let read_err = |source| Error::ImageRead { path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(io::Error::other("not a regular file")));
    }
    let expected = request.expected;
    if meta.len() != expected.size {
        return Err(Error::ImageSize { path: path.to_path_buf(), expected: expected.size, actual: meta.len() });
    }
    ui.begin(Stage::CheckImage, expected.size);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BLOCK_SIZE];
    let mut done = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        ui.progress(done);
    }
    ui.end(Stage::CheckImage);
    if done != expected.size {
        return Err(Error::ImageSize { path: path.to_path_buf(), expected: expected.size, actual: done });
    }
    let actual: [u8; 32] = hasher.finalize().into();
    if actual != expected.sha256 {
        return Err(Error::ImageHash { path: path.to_path_buf(), expected: expected.sha256, actual });
    }
    Ok(file)
}

/// Every refusal about the target; reads only.
fn check_target(host: &Host, request: &Request, image: &std::fs::Metadata) -> Result<TargetInfo, Error> {
    let mut info = inspect_on(host, request.target)?;
    match &info.kind {
        TargetKind::Disk(disk) => {
            let disk = host.check_disk(&info.path, disk.dev, request.expected.size)?;
            info.kind = TargetKind::Disk(disk);
        }
        TargetKind::File { .. } | TargetKind::Missing if !request.allow_file => {
            return Err(if info.kind == TargetKind::Missing {
                Error::TargetNotFound { path: info.given }
            } else {
                Error::RegularFile { path: info.path }
            });
        }
        TargetKind::File { .. } => {
            let meta = std::fs::metadata(&info.path)
                .map_err(|e| Error::Inspect { path: info.path.clone(), detail: e.to_string() })?;
            if meta.dev() == image.dev() && meta.ino() == image.ino() {
                return Err(Error::SameFile { path: info.path });
            }
        }
        // A missing /dev/sdc is an unplugged disk or a typo; a file created there would
        // live in RAM (devtmpfs) and the image seem written.
        TargetKind::Missing if info.given.starts_with("/dev") => {
            return Err(Error::TargetNotFound { path: info.given });
        }
        TargetKind::Missing => {}
        TargetKind::Other(kind) => return Err(Error::NotADisk { path: info.path, kind }),
    }
    Ok(info)
}

/// Opens the checked target for writing and makes sure it is still what was checked.
/// Returns the file and whether it is a block device.
fn open_target(target: &TargetInfo, image_size: u64) -> Result<(File, bool), Error> {
    let path = &target.path;
    let open_err = |source| Error::Open { path: path.clone(), source };
    match &target.kind {
        TargetKind::Disk(disk) => {
            let file = device::open_exclusive(path).map_err(|e| {
                if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) {
                    Error::Busy { path: path.clone() }
                } else {
                    open_err(e)
                }
            })?;
            let meta = file.metadata().map_err(open_err)?;
            if !meta.file_type().is_block_device() || DevId::from_raw(meta.rdev()) != disk.dev {
                return Err(Error::TargetChanged { path: path.clone() });
            }
            // The size sysfs reported, confirmed on the open device itself.
            let size = (&file).seek(SeekFrom::End(0)).map_err(open_err)?;
            if size < image_size {
                return Err(Error::TooSmall { path: path.clone(), size, image_size });
            }
            Ok((file, true))
        }
        TargetKind::File { .. } => {
            let file = OpenOptions::new().read(true).write(true).open(path).map_err(open_err)?;
            if !file.metadata().map_err(open_err)?.is_file() {
                return Err(Error::TargetChanged { path: path.clone() });
            }
            Ok((file, false))
        }
        // `create_new`: if something appeared at the path since it was checked, stop.
        TargetKind::Missing => {
            let file = OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Error::TargetChanged { path: path.clone() }
                } else {
                    open_err(e)
                }
            })?;
            Ok((file, false))
        }
        TargetKind::Other(kind) => Err(Error::NotADisk { path: path.clone(), kind }),
    }
}

/// Copies the image onto the target from offset 0, hashing what it copies.
fn write_image(image: &mut File, out: &mut File, request: &Request, path: &Path, ui: &mut dyn Ui) -> Result<(), Error> {
    let expected = request.expected;
    let changed =
        |detail: String| Error::ImageChanged { path: path.to_path_buf(), image: request.image.into(), detail };
    image.seek(SeekFrom::Start(0)).map_err(|e| changed(e.to_string()))?;
    out.seek(SeekFrom::Start(0)).map_err(|source| Error::Write { path: path.to_path_buf(), offset: 0, source })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BLOCK_SIZE];
    let mut done = 0u64;
    let mut unsynced = 0u64;
    ui.begin(Stage::Write, expected.size);
    while done < expected.size {
        let len = (expected.size - done).min(BLOCK_SIZE as u64) as usize;
        image.read_exact(&mut buf[..len]).map_err(|e| changed(format!("reading it at byte {done}: {e}")))?;
        hasher.update(&buf[..len]);
        out.write_all(&buf[..len]).map_err(|source| Error::Write { path: path.to_path_buf(), offset: done, source })?;
        done += len as u64;
        unsynced += len as u64;
        if unsynced >= SYNC_INTERVAL {
            out.sync_data().map_err(|source| Error::Flush { path: path.to_path_buf(), source })?;
            unsynced = 0;
        }
        ui.progress(done);
        if ui.interrupted() && done < expected.size {
            // Best effort: what was written reaches the medium, so "partially written" is all
            // that is wrong with it.
            let _ = out.sync_data();
            return Err(Error::Interrupted {
                path: path.to_path_buf(),
                written: done,
                total: expected.size,
                verifying: false,
            });
        }
    }
    ui.end(Stage::Write);
    let written: [u8; 32] = hasher.finalize().into();
    if written != expected.sha256 {
        return Err(changed(format!("its SHA-256 is now {}", hex(&written))));
    }
    Ok(())
}

/// Reads the written range back from the medium and returns its SHA-256, which must be the
/// expected one. The cache is dropped first, otherwise the read would return the very pages
/// just written from memory and prove nothing about the medium.
fn read_back(out: &File, is_disk: bool, expected: Expected, path: &Path, ui: &mut dyn Ui) -> Result<[u8; 32], Error> {
    ui.begin(Stage::Verify, expected.size);
    let dropped = if is_disk {
        device::flush_buffers(out).or_else(|e| {
            ui.note(&format!("BLKFLSBUF failed ({e}); dropping the cache with posix_fadvise instead"));
            device::drop_cache(out)
        })
    } else {
        device::drop_cache(out)
    };
    if let Err(e) = dropped {
        ui.note(&format!(
            "could not drop the cached copy of {} ({e}); the read-back may come from memory",
            path.display()
        ));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BLOCK_SIZE];
    let mut done = 0u64;
    while done < expected.size {
        if ui.interrupted() {
            return Err(Error::Interrupted {
                path: path.to_path_buf(),
                written: expected.size,
                total: expected.size,
                verifying: true,
            });
        }
        let len = (expected.size - done).min(BLOCK_SIZE as u64) as usize;
        out.read_exact_at(&mut buf[..len], done)
            .map_err(|source| Error::ReadBack { path: path.to_path_buf(), source })?;
        hasher.update(&buf[..len]);
        done += len as u64;
        ui.progress(done);
    }
    ui.end(Stage::Verify);
    let actual: [u8; 32] = hasher.finalize().into();
    if actual != expected.sha256 {
        return Err(Error::Mismatch { path: path.to_path_buf(), expected: expected.sha256, actual });
    }
    Ok(actual)
}

/// The SHA-256 of a whole file, e.g. to fill an [`Expected`] for an image without a manifest.
pub fn sha256_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BLOCK_SIZE];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(hasher.finalize().into()),
            n => hasher.update(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests;
