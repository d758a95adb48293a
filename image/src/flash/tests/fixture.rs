//! A fake machine for the decisions: a sysfs tree shaped like the kernel's (canonical device
//! folders under `devices/`, symlinks under `dev/block/` and `class/block/`, partitions as
//! subfolders of their disk) plus mountinfo and swaps text.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::flash::{DevId, Host};

pub struct FakeMachine {
    dir: tempfile::TempDir,
}

impl FakeMachine {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["sys/devices/virtual/block", "sys/dev/block", "sys/class/block"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        FakeMachine { dir }
    }

    pub fn sys(&self) -> PathBuf {
        self.dir.path().join("sys")
    }

    fn register(&self, name: &str, dev: DevId, block_dir: &Path, sectors: u64) {
        for sub in ["holders", "slaves"] {
            fs::create_dir_all(block_dir.join(sub)).unwrap();
        }
        fs::write(block_dir.join("dev"), format!("{dev}\n")).unwrap();
        fs::write(block_dir.join("size"), format!("{sectors}\n")).unwrap();
        fs::write(block_dir.join("ro"), "0\n").unwrap();
        symlink(block_dir, self.sys().join("dev/block").join(dev.to_string())).unwrap();
        symlink(block_dir, self.sys().join("class/block").join(name)).unwrap();
    }

    /// A whole disk. `device`: its hardware device folder under `devices/` (where `model`,
    /// `vendor` live); None for a virtual device (loop, dm).
    pub fn disk(&self, name: &str, dev: (u32, u32), bytes: u64, device: Option<&str>) -> &Self {
        let dev = DevId::new(dev.0, dev.1);
        let block_dir = match device {
            Some(hw) => {
                let hw_dir = self.sys().join("devices").join(hw);
                fs::create_dir_all(hw_dir.join("block").join(name)).unwrap();
                symlink(&hw_dir, hw_dir.join("block").join(name).join("device")).unwrap();
                hw_dir.join("block").join(name)
            }
            None => {
                let dir = self.sys().join("devices/virtual/block").join(name);
                fs::create_dir_all(&dir).unwrap();
                dir
            }
        };
        self.register(name, dev, &block_dir, bytes / 512);
        fs::write(block_dir.join("removable"), "0\n").unwrap();
        self
    }

    pub fn partition(&self, disk: &str, name: &str, dev: (u32, u32), bytes: u64) -> &Self {
        let disk_dir = fs::canonicalize(self.sys().join("class/block").join(disk)).unwrap();
        let dir = disk_dir.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("partition"), format!("{}\n", name.chars().last().unwrap())).unwrap();
        self.register(name, DevId::new(dev.0, dev.1), &dir, bytes / 512);
        self
    }

    /// Writes a sysfs attribute of block device `name` (`rel` may go through `device/`).
    pub fn attr(&self, name: &str, rel: &str, value: &str) -> &Self {
        let path = self.sys().join("class/block").join(name).join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, format!("{value}\n")).unwrap();
        self
    }

    /// Writes a file anywhere under `sys/` (e.g. a USB device's `serial`).
    pub fn sys_file(&self, rel: &str, value: &str) -> &Self {
        let path = self.sys().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, format!("{value}\n")).unwrap();
        self
    }

    /// `upper` (dm-N, mdN) is built on `lower`: `lower/holders/upper` and `upper/slaves/lower`.
    pub fn stack(&self, upper: &str, lower: &str) -> &Self {
        let class = self.sys().join("class/block");
        let upper_dir = fs::canonicalize(class.join(upper)).unwrap();
        let lower_dir = fs::canonicalize(class.join(lower)).unwrap();
        symlink(&upper_dir, lower_dir.join("holders").join(upper)).unwrap();
        symlink(&lower_dir, upper_dir.join("slaves").join(lower)).unwrap();
        self
    }

    pub fn host(&self, mountinfo: &str, swaps: &str) -> Host {
        let mountinfo_path = self.dir.path().join("mountinfo");
        let swaps_path = self.dir.path().join("swaps");
        fs::write(&mountinfo_path, mountinfo).unwrap();
        fs::write(&swaps_path, swaps).unwrap();
        Host::fixture(self.sys(), mountinfo_path, swaps_path)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
