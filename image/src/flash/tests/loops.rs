//! Whole flashes onto real block devices: loop devices over temporary files. They need root
//! and `/dev/loop-control`; without them each test says why and returns.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Snapshot, TestUi, image, pattern};
use crate::flash::{BLOCK_SIZE, Error, Expected, Host, Request, Stage, TargetKind, device, flash, flash_on, inspect};

const MIB: usize = 1 << 20;

fn loops_unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root, so loop devices cannot be attached".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control on this machine".into());
    }
    match Command::new("losetup").arg("--version").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("`losetup --version` failed: {}", String::from_utf8_lossy(&out.stderr))),
        Err(e) => Some(format!("cannot run losetup: {e}")),
    }
}

/// Returns early from a test, saying why, where loop devices cannot be used.
macro_rules! require_loop_devices {
    () => {
        if let Some(why) = loops_unavailable() {
            eprintln!("skipping this loop-device test: {why}");
            return;
        }
    };
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!("{program} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// An attached loop device; detached when dropped, also when the test fails.
struct Loop {
    dev: PathBuf,
}

impl Loop {
    fn attach(backing: &Path, options: &[&str]) -> Loop {
        let mut args = vec!["--find", "--show"];
        args.extend_from_slice(options);
        args.push(backing.to_str().unwrap());
        let dev = run("losetup", &args).unwrap_or_else(|e| panic!("{e}"));
        Loop { dev: PathBuf::from(dev) }
    }

    fn name(&self) -> String {
        self.dev.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// `/dev/loopNpK`, and whether the kernel found it by itself. Kernels built without
    /// partition table parsers (like some VM kernels) find none; then `partx` reads the table
    /// and adds the partitions explicitly (BLKPG). Err says why neither worked.
    fn partition(&self, number: u32) -> Result<(PathBuf, bool), String> {
        let path = PathBuf::from(format!("{}p{number}", self.dev.display()));
        let appears = || {
            (0..50).any(|_| {
                let found = path.exists();
                if !found {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                found
            })
        };
        if appears() {
            return Ok((path, true));
        }
        run("partx", &["--add", self.dev.to_str().unwrap()])?;
        if appears() { Ok((path, false)) } else { Err(format!("{} did not appear", path.display())) }
    }

    /// The size of partition `number` in sectors, None if the kernel has no such partition.
    fn partition_sectors(&self, number: u32) -> Option<u64> {
        let name = self.name();
        let size = fs::read_to_string(format!("/sys/class/block/{name}/{name}p{number}/size")).ok()?;
        size.trim().parse().ok()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Err(e) = run("losetup", &["--detach", self.dev.to_str().unwrap()]) {
            eprintln!("warning: {e}");
        }
    }
}

/// A mounted file system; unmounted when dropped.
struct Mounted {
    dir: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = run("umount", &[self.dir.to_str().unwrap()]) {
            eprintln!("warning: {e}");
        }
    }
}

/// Makes an ext4 file system on `dev` and mounts it read-only at `dir` (read-only so the
/// file system itself writes nothing and the "nothing written" comparison stays exact).
/// Err says why this machine cannot.
fn mount_ext4(dev: &Path, dir: &Path) -> Result<Mounted, String> {
    run("mkfs.ext4", &["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev.to_str().unwrap()])?;
    fs::create_dir_all(dir).unwrap();
    run("mount", &["-o", "ro", dev.to_str().unwrap(), dir.to_str().unwrap()])?;
    Ok(Mounted { dir: dir.to_path_buf() })
}

/// A classic MBR with one Linux partition per (first sector, sectors).
fn mbr(partitions: &[(u32, u32)]) -> [u8; 512] {
    let mut sector = [0u8; 512];
    for (i, &(start, count)) in partitions.iter().enumerate() {
        let entry = &mut sector[446 + 16 * i..446 + 16 * (i + 1)];
        entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
        entry[4] = 0x83;
        entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        entry[8..12].copy_from_slice(&start.to_le_bytes());
        entry[12..16].copy_from_slice(&count.to_le_bytes());
    }
    sector[510..].copy_from_slice(&[0x55, 0xaa]);
    sector
}

/// A backing file of `len` bytes: patterned, with an MBR when `partitions` is not empty.
fn backing(dir: &Path, name: &str, len: usize, partitions: &[(u32, u32)]) -> PathBuf {
    let mut bytes = pattern(len, 9);
    if !partitions.is_empty() {
        bytes[..512].copy_from_slice(&mbr(partitions));
    }
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

fn request<'a>(image: &'a Path, expected: Expected, target: &'a Path) -> Request<'a> {
    Request { image, expected, target, allow_file: false }
}

#[test]
fn loop_flash_writes_verifies_and_rereads_the_partition_table() {
    require_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let disk = backing(dir.path(), "disk", 16 * MIB, &[(2048, 8192)]);
    let lo = Loop::attach(&disk, &["--partscan"]);
    let kernel_parses = match lo.partition(1) {
        Ok((_, by_kernel)) => Some(by_kernel),
        Err(why) => {
            eprintln!("note: no partitions on the loop device ({why}); the re-read is not checked");
            None
        }
    };
    if kernel_parses.is_some() {
        assert_eq!(lo.partition_sectors(1), Some(8192));
    }

    // The image brings its own partition table: partition 1 is now 4096 sectors.
    let (img, _, _) = image(dir.path(), 6 * MIB + 1536);
    let mut bytes = fs::read(&img).unwrap();
    bytes[..512].copy_from_slice(&mbr(&[(2048, 4096)]));
    fs::write(&img, &bytes).unwrap();
    let expected = Expected { size: bytes.len() as u64, sha256: crate::flash::sha256_file(&img).unwrap() };
    let old = fs::read(&disk).unwrap();

    let mut ui = TestUi::yes();
    let report = flash(&request(&img, expected, &lo.dev), &mut ui).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.target, lo.dev);
    assert_eq!(report.sha256, expected.sha256);
    let now = fs::read(&disk).unwrap();
    assert_eq!(&now[..bytes.len()], &bytes[..]);
    assert_eq!(&now[bytes.len()..], &old[bytes.len()..], "bytes beyond the image changed");
    ui.assert_progress_complete();
    assert_eq!(ui.stages(), vec![Stage::CheckImage, Stage::Write, Stage::Verify]);
    assert!(ui.notes.is_empty(), "{:?}", ui.notes);
    // BLKRRPART replaced the old 8192-sector partition: by the image's 4096-sector one where
    // the kernel parses MBRs, by nothing where it has no parser.
    match kernel_parses {
        Some(true) => assert_eq!(lo.partition_sectors(1), Some(4096), "the partition table was not re-read"),
        Some(false) => assert_eq!(lo.partition_sectors(1), None, "the partition table was not re-read"),
        None => {}
    }

    let TargetKind::Disk(info) = &ui.plans[0].target.kind else { panic!("{:?}", ui.plans[0]) };
    assert_eq!(info.size, 16 * MIB as u64);
    assert_eq!(info.backing_file.as_deref(), Some(fs::canonicalize(&disk).unwrap().as_path()));
    if kernel_parses.is_some() {
        assert_eq!(info.partitions.len(), 1);
        assert_eq!(info.partitions[0].name, format!("{}p1", lo.name()));
        assert_eq!(info.partitions[0].size, 8192 * 512);
    }
    let text = ui.plans[0].to_string();
    assert!(text.contains("loop device backed by") && text.contains("16.00 MiB"), "{text}");
}

#[test]
fn loop_smaller_than_the_image_is_refused() {
    require_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let disk = backing(dir.path(), "disk", MIB, &[]);
    let lo = Loop::attach(&disk, &[]);
    let (img, expected, _) = image(dir.path(), 2 * MIB);
    let before = Snapshot::of(&disk);
    let mut ui = TestUi::yes();
    match flash(&request(&img, expected, &lo.dev), &mut ui) {
        Err(Error::TooSmall { size, image_size, .. }) => assert_eq!((size, image_size), (MIB as u64, 2 * MIB as u64)),
        other => panic!("{other:?}"),
    }
    assert!(ui.plans.is_empty());
    assert_eq!(Snapshot::of(&disk), before);
}

#[test]
fn read_only_loop_is_refused() {
    require_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let disk = backing(dir.path(), "disk", 4 * MIB, &[]);
    let lo = Loop::attach(&disk, &["--read-only"]);
    let (img, expected, _) = image(dir.path(), MIB);
    let before = Snapshot::of(&disk);
    let err = flash(&request(&img, expected, &lo.dev), &mut TestUi::yes()).unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err:?}");
    assert_eq!(Snapshot::of(&disk), before);
}

#[test]
fn mounted_loop_and_its_partition_are_refused() {
    require_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let (img, expected, _) = image(dir.path(), MIB);

    // A file system on the whole device, no partition table.
    let whole = backing(dir.path(), "whole", 8 * MIB, &[]);
    let lo = Loop::attach(&whole, &[]);
    let _mounted = match mount_ext4(&lo.dev, &dir.path().join("mnt")) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipping the mounted-device cases: {why}");
            return;
        }
    };
    let before = Snapshot::of(&whole);
    let mut ui = TestUi::yes();
    match flash(&request(&img, expected, &lo.dev), &mut ui) {
        Err(Error::Mounted { device, mount_point, .. }) => {
            assert_eq!(device, lo.dev);
            assert_eq!(mount_point, dir.path().join("mnt"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(Snapshot::of(&whole), before);

    // A partitioned device with its partition mounted.
    let disk = backing(dir.path(), "disk", 16 * MIB, &[(2048, 16 * 2048 - 2048)]);
    let lo2 = Loop::attach(&disk, &["--partscan"]);
    let part = match lo2.partition(1) {
        Ok((part, _)) => part,
        Err(why) => {
            eprintln!("skipping the mounted-partition case: {why}");
            return;
        }
    };
    let mount_point = dir.path().join("mnt2");
    let _mounted2 = mount_ext4(&part, &mount_point).unwrap();
    let before = Snapshot::of(&disk);
    match flash(&request(&img, expected, &lo2.dev), &mut ui) {
        Err(Error::Mounted { device, mount_point: at, .. }) => {
            assert_eq!(device, part);
            assert_eq!(at, mount_point);
        }
        other => panic!("{other:?}"),
    }
    match flash(&request(&img, expected, &part), &mut ui) {
        Err(Error::Partition { disk, .. }) => assert_eq!(disk, lo2.dev),
        other => panic!("{other:?}"),
    }
    assert!(ui.plans.is_empty());
    assert_eq!(Snapshot::of(&disk), before);
}

/// The real device, judged with tables that say it holds `/` or is swap: the whole flash path
/// refuses before writing.
#[test]
fn loop_holding_root_or_swap_is_refused() {
    require_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let disk = backing(dir.path(), "disk", 4 * MIB, &[]);
    let lo = Loop::attach(&disk, &[]);
    let (img, expected, _) = image(dir.path(), MIB);
    let dev = fs::read_to_string(format!("/sys/class/block/{}/dev", lo.name())).unwrap();
    let tables = |mountinfo: &str, swaps: &str| {
        fs::write(dir.path().join("mountinfo"), mountinfo).unwrap();
        fs::write(dir.path().join("swaps"), swaps).unwrap();
        Host::fixture("/sys", dir.path().join("mountinfo"), dir.path().join("swaps"))
    };
    let header = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
    let before = Snapshot::of(&disk);

    let root = format!("27 1 {} / / rw,relatime shared:1 - ext4 {} rw\n", dev.trim(), lo.dev.display());
    let mut ui = TestUi::yes();
    let err = flash_on(&tables(&root, header), &request(&img, expected, &lo.dev), &mut ui).unwrap_err();
    assert!(matches!(err, Error::SystemDisk { .. }), "{err:?}");
    let boot = format!("27 1 254:0 / / rw - ext4 /dev/vda rw\n28 27 {} / /boot rw - ext2 /dev/x rw\n", dev.trim());
    let err = flash_on(&tables(&boot, header), &request(&img, expected, &lo.dev), &mut ui).unwrap_err();
    assert!(matches!(err, Error::SystemDisk { .. }), "{err:?}");
    let swaps = format!("{header}{}  partition  4092  0  -2\n", lo.dev.display());
    let err = flash_on(&tables("", &swaps), &request(&img, expected, &lo.dev), &mut ui).unwrap_err();
    assert!(matches!(err, Error::Swap { .. }), "{err:?}");
    assert!(ui.plans.is_empty());
    assert_eq!(Snapshot::of(&disk), before);
}

/// Something the tables do not show holds the device: the exclusive open refuses.
#[test]
fn loop_opened_exclusively_elsewhere_is_refused_by_the_kernel() {
    require_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let disk = backing(dir.path(), "disk", 4 * MIB, &[]);
    let lo = Loop::attach(&disk, &[]);
    let (img, expected, _) = image(dir.path(), MIB);
    let before = Snapshot::of(&disk);
    let holder = device::open_exclusive(&lo.dev).unwrap();
    let mut ui = TestUi::yes();
    let err = flash(&request(&img, expected, &lo.dev), &mut ui).unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err:?}");
    assert!(!err.target_changed());
    assert_eq!(ui.plans.len(), 1, "the checks passed; the open refused");
    drop(holder);
    assert_eq!(Snapshot::of(&disk), before);
}

#[test]
fn corrupted_byte_on_loop_device_is_detected() {
    require_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let disk = backing(dir.path(), "disk", 8 * MIB, &[]);
    let lo = Loop::attach(&disk, &[]);
    let (img, expected, bytes) = image(dir.path(), BLOCK_SIZE + 512);
    let mut ui = TestUi::yes();
    let backing_path = disk.clone();
    ui.on_begin = Some(Box::new(move |stage| {
        if stage == Stage::Verify {
            use std::os::unix::fs::FileExt;
            let file = fs::OpenOptions::new().write(true).open(&backing_path).unwrap();
            file.write_all_at(&[bytes[4097] ^ 1], 4097).unwrap();
        }
    }));
    let err = flash(&request(&img, expected, &lo.dev), &mut ui).unwrap_err();
    match &err {
        Error::Mismatch { expected: e, actual, .. } => {
            assert_eq!(*e, expected.sha256);
            assert_ne!(actual, e);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.target_changed());
}

#[test]
fn inspect_shows_loop_size_and_backing_file_through_a_symlink() {
    require_loop_devices!();
    let dir = tempfile::tempdir().unwrap();
    let disk = backing(dir.path(), "disk", 3 * MIB, &[]);
    let lo = Loop::attach(&disk, &[]);
    let link = dir.path().join("usb-Fake_Stick-0:0");
    std::os::unix::fs::symlink(&lo.dev, &link).unwrap();
    let info = inspect(&link).unwrap();
    assert_eq!(info.given, link);
    assert_eq!(info.path, lo.dev);
    let TargetKind::Disk(disk_info) = info.kind else { panic!("{info:?}") };
    assert_eq!(disk_info.size, 3 * MIB as u64);
    assert_eq!(disk_info.name, lo.name());
    assert_eq!(disk_info.backing_file, Some(fs::canonicalize(&disk).unwrap()));
    assert_eq!(disk_info.whole_disk, None);
}
