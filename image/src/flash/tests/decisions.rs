//! The refusals that need a real machine's state, decided on fixture machines.

use std::path::{Path, PathBuf};

use super::fixture::FakeMachine;
use crate::flash::{DevId, Error, Host};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const NO_SWAPS: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
const SATA: &str = "pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0";
const USB_HUB: &str = "pci0000:00/0000:00:14.0/usb1/1-1";
const USB: &str = "pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0";

/// The office PC that writes sticks: its system on a SATA SSD (ESP sda1, root sda2), a
/// SanDisk stick with one partition plugged in, not mounted.
fn workstation() -> FakeMachine {
    let m = FakeMachine::new();
    m.disk("sda", (8, 0), 256 * GIB, Some(SATA))
        .partition("sda", "sda1", (8, 1), 512 * MIB)
        .partition("sda", "sda2", (8, 2), 255 * GIB)
        .attr("sda", "device/vendor", "ATA     ")
        .attr("sda", "device/model", "Samsung SSD 860 ")
        .attr("sda", "device/wwid", "t10.ATA     Samsung SSD 860 S3Z9NB0K123456");
    m.disk("sdb", (8, 16), 16 * GIB, Some(USB))
        .partition("sdb", "sdb1", (8, 17), 16 * GIB - MIB)
        .attr("sdb", "device/vendor", "SanDisk")
        .attr("sdb", "device/model", "Cruzer Blade")
        .attr("sdb", "removable", "1")
        .sys_file(&format!("devices/{USB_HUB}/serial"), "4C530001230915117093");
    m
}

const ROOT_ON_SDA2: &str = "\
22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
23 27 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
27 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro
29 27 8:1 / /boot/efi rw,relatime shared:3 - vfat /dev/sda1 rw,fmask=0077,dmask=0077
31 27 0:26 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=1627000k,mode=755
";

fn check(host: &Host, name: &str, dev: (u32, u32), image_size: u64) -> Result<crate::flash::DiskInfo, Error> {
    host.check_disk(&PathBuf::from(format!("/dev/{name}")), DevId::new(dev.0, dev.1), image_size)
}

#[test]
fn root_disk_refused_other_disk_allowed() {
    let m = workstation();
    let host = m.host(ROOT_ON_SDA2, NO_SWAPS);
    match check(&host, "sda", (8, 0), MIB) {
        Err(Error::SystemDisk { mount_point, device, .. }) => {
            assert_eq!(mount_point, Path::new("/"));
            assert_eq!(device, "/dev/sda2");
        }
        other => panic!("sda: {other:?}"),
    }
    let sdb = check(&host, "sdb", (8, 16), MIB).expect("sdb is free");
    assert_eq!(sdb.name, "sdb");
    assert_eq!(sdb.size, 16 * GIB);
    assert_eq!(sdb.vendor.as_deref(), Some("SanDisk"));
    assert_eq!(sdb.model.as_deref(), Some("Cruzer Blade"));
    // USB sticks keep their serial on the USB device, above the SCSI device.
    assert_eq!(sdb.serial.as_deref(), Some("4C530001230915117093"));
    assert!(sdb.removable && !sdb.read_only);
    assert_eq!(sdb.partitions.len(), 1);
    assert_eq!(sdb.partitions[0].name, "sdb1");
    assert_eq!(sdb.partitions[0].size, 16 * GIB - MIB);
    assert_eq!(sdb.whole_disk, None);
}

#[test]
fn boot_on_its_own_disk_is_refused_too() {
    let m = workstation();
    m.disk("sdc", (8, 32), 8 * GIB, None).partition("sdc", "sdc1", (8, 33), GIB);
    let mountinfo = format!("{ROOT_ON_SDA2}40 27 8:33 / /boot rw,relatime shared:20 - ext2 /dev/sdc1 rw\n");
    let host = m.host(&mountinfo, NO_SWAPS);
    match check(&host, "sdc", (8, 32), MIB) {
        Err(Error::SystemDisk { mount_point, .. }) => assert_eq!(mount_point, Path::new("/boot")),
        other => panic!("{other:?}"),
    }
    assert!(check(&host, "sdb", (8, 16), MIB).is_ok());
}

/// btrfs reports an anonymous device number; the mount's source names the partition.
#[test]
fn btrfs_root_found_through_its_source() {
    let m = workstation();
    m.disk("nvme0n1", (259, 0), 512 * GIB, Some("pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0"))
        .partition("nvme0n1", "nvme0n1p1", (259, 1), 512 * MIB)
        .partition("nvme0n1", "nvme0n1p2", (259, 2), 511 * GIB)
        .attr("nvme0n1", "wwid", "eui.0025385b71b0ab12")
        .attr("nvme0n1", "device/serial", "S4EWNX0R123456");
    let host = m.host("27 1 0:31 /@ / rw,relatime shared:1 - btrfs /dev/nvme0n1p2 rw,ssd\n", NO_SWAPS);
    match check(&host, "nvme0n1", (259, 0), MIB) {
        Err(Error::SystemDisk { device, .. }) => assert_eq!(device, "/dev/nvme0n1p2"),
        other => panic!("{other:?}"),
    }
    // Here sda holds nothing of the system.
    let sda = check(&host, "sda", (8, 0), MIB).expect("sda is not the system disk here");
    assert_eq!(sda.serial.as_deref(), Some("t10.ATA     Samsung SSD 860 S3Z9NB0K123456"));
    assert_eq!(sda.vendor.as_deref(), Some("ATA"));
}

/// Root on LVM: `/` is dm-0, built on sda2; the physical disk sda must be protected.
#[test]
fn root_on_lvm_protects_the_disk_underneath() {
    let m = workstation();
    m.disk("dm-0", (253, 0), 200 * GIB, None).attr("dm-0", "dm/name", "vg-root").stack("dm-0", "sda2");
    let lvm = "27 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw\n";
    let host = m.host(lvm, NO_SWAPS);
    assert!(matches!(check(&host, "sda", (8, 0), MIB), Err(Error::SystemDisk { .. })));
    assert!(matches!(check(&host, "dm-0", (253, 0), MIB), Err(Error::SystemDisk { .. })));
    // The same with an anonymous device number: found by the /dev/mapper name.
    let host = m.host("27 1 0:40 /@ / rw - btrfs /dev/mapper/vg-root rw\n", NO_SWAPS);
    assert!(matches!(check(&host, "sda", (8, 0), MIB), Err(Error::SystemDisk { .. })));
    assert!(check(&host, "sdb", (8, 16), MIB).is_ok());
}

#[test]
fn mounted_partition_is_refused_with_its_mount_point() {
    let m = workstation();
    let mountinfo = format!(
        "{ROOT_ON_SDA2}61 27 8:17 / /media/user/MY\\040STICK rw,nosuid,nodev shared:40 - vfat /dev/sdb1 rw,uid=1000\n"
    );
    let host = m.host(&mountinfo, NO_SWAPS);
    match check(&host, "sdb", (8, 16), MIB) {
        Err(e @ Error::Mounted { .. }) => {
            let Error::Mounted { device, mount_point, .. } = &e else { unreachable!() };
            assert_eq!(device, Path::new("/dev/sdb1"));
            assert_eq!(mount_point, Path::new("/media/user/MY STICK"));
            let text = e.to_string();
            assert!(text.contains("umount /dev/sdb1") && text.contains("nothing was written"), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

/// A stick formatted without a partition table ("superfloppy") is mounted as the disk itself.
#[test]
fn mounted_whole_disk_is_refused() {
    let m = workstation();
    let mountinfo = format!("{ROOT_ON_SDA2}61 27 8:16 / /mnt rw - vfat /dev/sdb rw\n");
    let host = m.host(&mountinfo, NO_SWAPS);
    match check(&host, "sdb", (8, 16), MIB) {
        Err(Error::Mounted { device, .. }) => assert_eq!(device, Path::new("/dev/sdb")),
        other => panic!("{other:?}"),
    }
}

/// A btrfs partition on the stick: anonymous device number, found by source.
#[test]
fn mounted_btrfs_partition_found_by_source() {
    let m = workstation();
    let mountinfo = format!("{ROOT_ON_SDA2}61 27 0:52 / /srv rw - btrfs /dev/sdb1 rw\n");
    let host = m.host(&mountinfo, NO_SWAPS);
    assert!(matches!(check(&host, "sdb", (8, 16), MIB), Err(Error::Mounted { .. })));
}

#[test]
fn swap_partition_is_refused() {
    let m = workstation();
    m.disk("sdc", (8, 32), 8 * GIB, None).partition("sdc", "sdc1", (8, 33), GIB).partition(
        "sdc",
        "sdc2",
        (8, 34),
        4 * GIB,
    );
    let swaps = format!("{NO_SWAPS}/dev/sdc2                               partition\t4194300\t\t0\t\t-2\n");
    let host = m.host(ROOT_ON_SDA2, &swaps);
    match check(&host, "sdc", (8, 32), MIB) {
        Err(Error::Swap { device, .. }) => assert_eq!(device, Path::new("/dev/sdc2")),
        other => panic!("{other:?}"),
    }
    // A swap file lives on a mounted file system; it does not concern sdc.
    let host = m.host(ROOT_ON_SDA2, &format!("{NO_SWAPS}/swapfile  file  1048572  0  -3\n"));
    assert!(check(&host, "sdc", (8, 32), MIB).is_ok());
}

#[test]
fn raid_member_is_refused() {
    let m = workstation();
    m.disk("sdd", (8, 48), 8 * GIB, None).partition("sdd", "sdd1", (8, 49), 8 * GIB - MIB);
    m.disk("md127", (9, 127), 8 * GIB, None).stack("md127", "sdd1");
    let host = m.host(ROOT_ON_SDA2, NO_SWAPS);
    match check(&host, "sdd", (8, 48), MIB) {
        Err(Error::Held { device, holders, .. }) => {
            assert_eq!(device, Path::new("/dev/sdd1"));
            assert_eq!(holders, vec!["md127".to_string()]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn partition_refused_naming_the_whole_disk() {
    let m = workstation();
    m.disk("mmcblk0", (179, 0), 32 * GIB, Some("platform/soc/mmc0/mmc0:aaaa"))
        .partition("mmcblk0", "mmcblk0p1", (179, 1), GIB)
        .attr("mmcblk0", "device/name", "SC32G")
        .attr("mmcblk0", "device/serial", "0x1234abcd");
    let host = m.host(ROOT_ON_SDA2, NO_SWAPS);
    match check(&host, "sdb1", (8, 17), MIB) {
        Err(e @ Error::Partition { .. }) => {
            let Error::Partition { partition, disk, .. } = &e else { unreachable!() };
            assert_eq!(partition, "sdb1");
            assert_eq!(disk, Path::new("/dev/sdb"));
            assert!(e.to_string().contains("--device /dev/sdb"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    match check(&host, "mmcblk0p1", (179, 1), MIB) {
        Err(Error::Partition { disk, .. }) => assert_eq!(disk, Path::new("/dev/mmcblk0")),
        other => panic!("{other:?}"),
    }
    // SD cards name their model in `name`.
    let card = check(&host, "mmcblk0", (179, 0), MIB).unwrap();
    assert_eq!(card.model.as_deref(), Some("SC32G"));
    assert_eq!(card.serial.as_deref(), Some("0x1234abcd"));
}

#[test]
fn too_small_and_read_only_are_refused() {
    let m = workstation();
    let host = m.host(ROOT_ON_SDA2, NO_SWAPS);
    assert!(check(&host, "sdb", (8, 16), 16 * GIB).is_ok(), "exactly the image's size fits");
    match check(&host, "sdb", (8, 16), 16 * GIB + 1) {
        Err(Error::TooSmall { size, image_size, .. }) => assert_eq!((size, image_size), (16 * GIB, 16 * GIB + 1)),
        other => panic!("{other:?}"),
    }
    m.attr("sdb", "ro", "1");
    assert!(matches!(check(&host, "sdb", (8, 16), MIB), Err(Error::ReadOnly { .. })));
}

/// Fail closed: without the tables there is no way to know what is in use.
#[test]
fn unreadable_tables_refuse() {
    let m = workstation();
    let host = Host::fixture(m.sys(), m.path().join("no-mountinfo"), m.path().join("no-swaps"));
    assert!(matches!(check(&host, "sdb", (8, 16), MIB), Err(Error::Inspect { .. })));
    // A kernel without swap support has no /proc/swaps: that alone is fine.
    let host = m.host(ROOT_ON_SDA2, NO_SWAPS);
    let host = Host { swaps: m.path().join("no-swaps"), ..host };
    assert!(check(&host, "sdb", (8, 16), MIB).is_ok());
    // A device sysfs does not know.
    assert!(matches!(check(&host, "sdz", (8, 240), MIB), Err(Error::Inspect { .. })));
}

#[test]
fn loop_device_shows_its_backing_file() {
    let m = workstation();
    m.disk("loop3", (7, 3), 64 * MIB, None).attr("loop3", "loop/backing_file", "/var/tmp/disk.img");
    let host = m.host(ROOT_ON_SDA2, NO_SWAPS);
    let info = check(&host, "loop3", (7, 3), MIB).unwrap();
    assert_eq!(info.backing_file.as_deref(), Some(Path::new("/var/tmp/disk.img")));
    assert_eq!((info.model, info.serial, info.size), (None, None, 64 * MIB));
}
