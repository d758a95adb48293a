//! What the machine says about a block device: sysfs for the device itself, its partitions,
//! its holders and the disks under `/` and `/boot`; the mount and swap tables for what is in
//! use. Every path comes from a [`Host`], so the decisions run on fixture trees in tests.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::Error;
use super::mounts::{DevId, Mount, parse_mountinfo, parse_swaps};

/// Mount points whose disk is never a flash target: the running system and what it boots from.
pub const SYSTEM_MOUNT_POINTS: [&str; 2] = ["/", "/boot"];

/// Where the checks read the machine's state.
#[derive(Clone, Debug)]
pub struct Host {
    /// The sysfs mount point (`/sys`).
    pub sys: PathBuf,
    /// The mount table (`/proc/self/mountinfo`).
    pub mountinfo: PathBuf,
    /// The active swap areas (`/proc/swaps`).
    pub swaps: PathBuf,
    /// Whether these tables describe this machine, so paths they name (`/`, `/boot`,
    /// `/dev/sda2`) may also be `stat`ed. False for fixtures, which describe another machine.
    pub live: bool,
}

impl Host {
    /// This machine.
    pub fn live() -> Self {
        Host { sys: "/sys".into(), mountinfo: "/proc/self/mountinfo".into(), swaps: "/proc/swaps".into(), live: true }
    }

    /// Another machine's sysfs tree and tables, e.g. fixtures in tests.
    pub fn fixture(sys: impl Into<PathBuf>, mountinfo: impl Into<PathBuf>, swaps: impl Into<PathBuf>) -> Self {
        Host { sys: sys.into(), mountinfo: mountinfo.into(), swaps: swaps.into(), live: false }
    }
}

/// A partition of a disk, for the confirmation text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Kernel name, e.g. `sdb1`.
    pub name: String,
    pub size: u64,
}

/// What sysfs tells about a block device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    /// Kernel name, e.g. `sdb`, `nvme0n1`, `loop3`.
    pub name: String,
    pub dev: DevId,
    /// Bytes (sysfs counts 512-byte sectors whatever the device's block size).
    pub size: u64,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub removable: bool,
    pub read_only: bool,
    /// For a loop device: the file behind it.
    pub backing_file: Option<PathBuf>,
    /// Set when this device is a partition: the whole disk's kernel name.
    pub whole_disk: Option<String>,
    /// The device's partitions (empty for a partition).
    pub partitions: Vec<PartitionInfo>,
}

impl DiskInfo {
    /// `/dev/NAME`.
    pub fn dev_path(&self) -> PathBuf {
        dev_path(&self.name)
    }
}

/// The `/dev` path of a kernel block device name (sysfs writes `/` in names as `!`).
pub fn dev_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/{}", name.replace('!', "/")))
}

/// A block device's sysfs folder (canonical, so the parent of a partition is its disk).
#[derive(Clone, Debug)]
struct Block {
    dir: PathBuf,
    name: String,
    dev: DevId,
}

fn attr(dir: &Path, name: &str) -> Option<String> {
    let text = fs::read_to_string(dir.join(name)).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut list: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(read) => read.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    list.sort();
    list
}

impl Host {
    fn block_at(&self, link: &Path) -> Option<Block> {
        let dir = fs::canonicalize(link).ok()?;
        let name = dir.file_name()?.to_string_lossy().into_owned();
        let dev = DevId::parse(&attr(&dir, "dev")?)?;
        Some(Block { dir, name, dev })
    }

    fn block(&self, dev: DevId) -> Option<Block> {
        self.block_at(&self.sys.join("dev/block").join(dev.to_string()))
    }

    fn block_by_name(&self, name: &str) -> Option<Block> {
        self.block_at(&self.sys.join("class/block").join(name.replace('/', "!")))
    }

    /// The disk a partition belongs to; None for a whole device.
    fn parent_disk(&self, block: &Block) -> Option<Block> {
        if !block.dir.join("partition").exists() {
            return None;
        }
        self.block_at(block.dir.parent()?)
    }

    fn partitions(&self, disk: &Block) -> Vec<Block> {
        entries(&disk.dir).iter().filter(|p| p.join("partition").exists()).filter_map(|p| self.block_at(p)).collect()
    }

    /// Devices a stacked device (device-mapper, md) is built from.
    fn slaves(&self, block: &Block) -> Vec<Block> {
        entries(&block.dir.join("slaves")).iter().filter_map(|p| self.block_at(p)).collect()
    }

    fn holders(&self, block: &Block) -> Vec<String> {
        entries(&block.dir.join("holders"))
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    }

    /// The device a path such as `/dev/sda2` or `/dev/mapper/vg-root` names. On this machine
    /// the node itself is `stat`ed; otherwise (and as a fallback) the name is looked up in sysfs.
    fn device_named(&self, path: &Path) -> Option<DevId> {
        // Mount sources such as `proc` or `tmpfs` name no device (and must not be looked up
        // relative to the current folder).
        if !path.starts_with("/dev") {
            return None;
        }
        if self.live
            && let Ok(meta) = fs::metadata(path)
            && meta.file_type().is_block_device()
        {
            return Some(DevId::from_raw(meta.rdev()));
        }
        let name = path.strip_prefix("/dev").ok()?.to_str()?;
        if let Some(dm_name) = name.strip_prefix("mapper/") {
            return entries(&self.sys.join("class/block"))
                .iter()
                .find(|p| attr(p, "dm/name").as_deref() == Some(dm_name))
                .and_then(|p| self.block_at(p))
                .map(|b| b.dev);
        }
        self.block_by_name(name).map(|b| b.dev)
    }

    /// The whole disks a device lives on: its own disk, and through device-mapper or md
    /// (`slaves/`) the disks underneath, so root on LVM still protects the physical disk.
    fn disks_under(&self, block: &Block, seen: &mut HashSet<PathBuf>, out: &mut Vec<Block>) {
        let disk = self.parent_disk(block).unwrap_or_else(|| block.clone());
        if !seen.insert(disk.dir.clone()) {
            return;
        }
        for slave in self.slaves(&disk) {
            self.disks_under(&slave, seen, out);
        }
        out.push(disk);
    }

    fn mounts(&self) -> Result<Vec<Mount>, Error> {
        let text = fs::read_to_string(&self.mountinfo).map_err(|e| Error::Inspect {
            path: self.mountinfo.clone(),
            detail: format!("cannot read the mount table: {e}"),
        })?;
        Ok(parse_mountinfo(&text))
    }

    /// The disks holding [`SYSTEM_MOUNT_POINTS`], each with its mount point and the device
    /// mounted there. The visible mount is the last one listed for a mount point; on this
    /// machine the mount point's `st_dev` counts too.
    fn system_disks(&self, mounts: &[Mount]) -> Vec<(PathBuf, String, Block)> {
        let mut found = Vec::new();
        for mount_point in SYSTEM_MOUNT_POINTS {
            let mut devices: Vec<(DevId, String)> = Vec::new();
            if let Some(m) = mounts.iter().rev().find(|m| m.mount_point == Path::new(mount_point)) {
                devices.push((m.dev, m.source.clone()));
                if let Some(dev) = self.device_named(Path::new(&m.source)) {
                    devices.push((dev, m.source.clone()));
                }
            }
            if self.live
                && let Ok(meta) = fs::metadata(mount_point)
            {
                let dev = DevId::from_raw(meta.dev());
                devices.push((dev, format!("device {dev}")));
            }
            let mut seen = HashSet::new();
            for (dev, source) in devices {
                let Some(block) = self.block(dev) else { continue };
                let mut disks = Vec::new();
                self.disks_under(&block, &mut seen, &mut disks);
                for disk in disks {
                    found.push((PathBuf::from(mount_point), source.clone(), disk));
                }
            }
        }
        found
    }

    fn describe(&self, block: &Block) -> DiskInfo {
        let device = block.dir.join("device");
        let size = attr(&block.dir, "size").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0).saturating_mul(512);
        let whole_disk = self.parent_disk(block).map(|d| d.name);
        let partitions = if whole_disk.is_some() {
            Vec::new()
        } else {
            self.partitions(block)
                .into_iter()
                .map(|p| PartitionInfo {
                    size: attr(&p.dir, "size").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0).saturating_mul(512),
                    name: p.name,
                })
                .collect()
        };
        DiskInfo {
            name: block.name.clone(),
            dev: block.dev,
            size,
            vendor: attr(&device, "vendor"),
            // SCSI/ATA/USB disks have `model`; SD and eMMC cards have `name`.
            model: attr(&device, "model").or_else(|| attr(&device, "name")),
            serial: self.serial(block),
            removable: attr(&block.dir, "removable").as_deref() == Some("1"),
            read_only: attr(&block.dir, "ro").as_deref() == Some("1"),
            backing_file: attr(&block.dir, "loop/backing_file").map(PathBuf::from),
            whole_disk,
            partitions,
        }
    }

    /// Serial numbers live in different places per bus: `device/serial` (NVMe controllers,
    /// SD/eMMC cards), `wwid` (NVMe namespaces, SCSI), and for USB storage on the USB device
    /// a few folders above the SCSI device, which is where udev's usb_id reads it too.
    fn serial(&self, block: &Block) -> Option<String> {
        let device = block.dir.join("device");
        for (dir, name) in [(&device, "serial"), (&block.dir, "wwid"), (&device, "wwid")] {
            if let Some(serial) = attr(dir, name) {
                return Some(serial);
            }
        }
        let devices_root = fs::canonicalize(self.sys.join("devices")).ok()?;
        let mut dir = fs::canonicalize(&device).ok()?;
        for _ in 0..8 {
            if !dir.starts_with(&devices_root) || dir == devices_root {
                break;
            }
            if let Some(serial) = attr(&dir, "serial") {
                return Some(serial);
            }
            dir = dir.parent()?.to_path_buf();
        }
        None
    }

    /// Describes block device `dev` without judging it.
    pub fn disk_info(&self, dev: DevId) -> Option<DiskInfo> {
        self.block(dev).map(|b| self.describe(&b))
    }

    /// Decides whether block device `dev` (named `path` to the user) may be overwritten by an
    /// image of `image_size` bytes; on success, describes it. Refuses a partition, the disk
    /// of `/` or `/boot`, a device with anything mounted, used as swap or held by
    /// device-mapper/md, a read-only device and one smaller than the image. Reads only.
    pub fn check_disk(&self, path: &Path, dev: DevId, image_size: u64) -> Result<DiskInfo, Error> {
        let block = self.block(dev).ok_or_else(|| Error::Inspect {
            path: path.to_path_buf(),
            detail: format!(
                "block device {dev} has no entry in {} (is sysfs mounted?)",
                self.sys.join("dev/block").display()
            ),
        })?;
        if let Some(disk) = self.parent_disk(&block) {
            return Err(Error::Partition {
                path: path.to_path_buf(),
                partition: block.name.clone(),
                disk: dev_path(&disk.name),
            });
        }

        let mounts = self.mounts()?;
        for (mount_point, device, disk) in self.system_disks(&mounts) {
            if disk.dir == block.dir {
                return Err(Error::SystemDisk { path: path.to_path_buf(), mount_point, device });
            }
        }

        // The device and each of its partitions: none may be in use.
        let mut family = vec![block.clone()];
        family.extend(self.partitions(&block));
        let member = |dev: DevId| family.iter().find(|b| b.dev == dev);
        for mount in &mounts {
            let by_source = self.device_named(Path::new(&mount.source));
            if let Some(b) = member(mount.dev).or_else(|| by_source.and_then(member)) {
                return Err(Error::Mounted {
                    path: path.to_path_buf(),
                    device: dev_path(&b.name),
                    mount_point: mount.mount_point.clone(),
                });
            }
        }
        let swaps = match fs::read_to_string(&self.swaps) {
            Ok(text) => parse_swaps(&text),
            // A kernel without swap support has no /proc/swaps.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(Error::Inspect {
                    path: self.swaps.clone(),
                    detail: format!("cannot read the swap table: {e}"),
                });
            }
        };
        for swap in swaps {
            if let Some(b) = self.device_named(&swap.path).and_then(member) {
                return Err(Error::Swap { path: path.to_path_buf(), device: dev_path(&b.name) });
            }
        }
        for b in &family {
            let holders = self.holders(b);
            if !holders.is_empty() {
                return Err(Error::Held { path: path.to_path_buf(), device: dev_path(&b.name), holders });
            }
        }

        let info = self.describe(&block);
        if info.read_only {
            return Err(Error::ReadOnly { path: path.to_path_buf() });
        }
        if info.size < image_size {
            return Err(Error::TooSmall { path: path.to_path_buf(), size: info.size, image_size });
        }
        Ok(info)
    }
}
