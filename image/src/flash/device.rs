//! The few block-device operations std has no wrapper for.

use std::fs::File;
use std::io;
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::ioctl::{NoArg, ioctl, opcode};

/// Opens a block device for reading and writing with `O_EXCL`: for block devices Linux then
/// refuses (EBUSY) while the device or one of its partitions is mounted, used as swap, held
/// by device-mapper/md or opened exclusively by another program, and keeps others from
/// claiming it while we hold it. It is what closes the gap between our checks and the write.
pub fn open_exclusive(path: &Path) -> io::Result<File> {
    let fd = rustix::fs::open(path, OFlags::RDWR | OFlags::EXCL | OFlags::CLOEXEC, Mode::empty())?;
    Ok(File::from(fd))
}

/// `BLKFLSBUF`: writes back the device's dirty buffers and drops its page cache, so the next
/// read comes from the device rather than from memory.
pub fn flush_buffers(device: &File) -> io::Result<()> {
    // SAFETY: BLKFLSBUF is `_IO(0x12, 97)` in <linux/fs.h>: no argument, no memory access;
    // `device` is an open file descriptor for the whole call.
    unsafe { ioctl(device, NoArg::<{ opcode::none(0x12, 97) }>::new()) }.map_err(io::Error::from)
}

/// `BLKRRPART`: asks the kernel to re-read the partition table, so the new partitions appear
/// without unplugging the disk.
pub fn reread_partitions(device: &File) -> io::Result<()> {
    // SAFETY: BLKRRPART is `_IO(0x12, 95)` in <linux/fs.h>: no argument, no memory access;
    // `device` is an open file descriptor for the whole call.
    unsafe { ioctl(device, NoArg::<{ opcode::none(0x12, 95) }>::new()) }.map_err(io::Error::from)
}

/// Drops the clean cached pages of a file, so a read-back after `fsync` reads the disk.
pub fn drop_cache(file: &File) -> io::Result<()> {
    rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed).map_err(io::Error::from)
}
