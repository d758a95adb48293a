//! The kernel's tables of what is in use: `/proc/self/mountinfo` and `/proc/swaps`.
//!
//! Parsed from text so the decisions built on them can be tested on fixtures.

use std::fmt;
use std::path::PathBuf;

/// A block device number (`major:minor`), as in `st_rdev`, mountinfo and sysfs `dev` files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevId {
    pub major: u32,
    pub minor: u32,
}

impl DevId {
    pub fn new(major: u32, minor: u32) -> Self {
        DevId { major, minor }
    }

    /// From a `st_dev`/`st_rdev` value.
    pub fn from_raw(raw: u64) -> Self {
        DevId { major: rustix::fs::major(raw), minor: rustix::fs::minor(raw) }
    }

    /// Parses `8:2` (sysfs `dev` files, mountinfo's third field).
    pub fn parse(text: &str) -> Option<Self> {
        let (major, minor) = text.trim().split_once(':')?;
        Some(DevId { major: major.parse().ok()?, minor: minor.parse().ok()? })
    }
}

impl fmt::Display for DevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The device the kernel reports for the mount. For btrfs and some network or virtual
    /// file systems this is an anonymous `0:N`, so [`Mount::source`] is checked as well.
    pub dev: DevId,
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// What was mounted, e.g. `/dev/sda2` (or `none`, `tmpfs`, ...).
    pub source: String,
}

/// Parses mountinfo text (proc(5)): `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE
/// SOURCE SUPEROPTIONS`. Lines that do not have this shape are skipped: a line we cannot read
/// cannot name a device, and the exclusive open is the last line of defence anyway.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let mut fields = line.split(' ');
    let _id = fields.next()?;
    let _parent = fields.next()?;
    let dev = DevId::parse(fields.next()?)?;
    let _root = fields.next()?;
    let mount_point = PathBuf::from(unescape(fields.next()?));
    // Options, then any number of optional fields up to the lone "-".
    fields.by_ref().find(|f| *f == "-")?;
    let fs_type = unescape(fields.next()?);
    let source = unescape(fields.next()?);
    Some(Mount { dev, mount_point, fs_type, source })
}

/// One active swap area from `/proc/swaps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swap {
    pub path: PathBuf,
    /// `partition` or `file`.
    pub kind: String,
}

/// Parses `/proc/swaps`: a header line, then `FILENAME TYPE SIZE USED PRIORITY` per area.
pub fn parse_swaps(text: &str) -> Vec<Swap> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let path = PathBuf::from(unescape(fields.next()?));
            let kind = fields.next()?.to_string();
            Some(Swap { path, kind })
        })
        .collect()
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\011` tab, `\012` newline, `\134`
/// backslash) in mountinfo and swaps fields, so mount points with spaces match.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value =
                (bytes[i + 1] - b'0') as u32 * 64 + (bytes[i + 2] - b'0') as u32 * 8 + (bytes[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    // From a Debian machine: / on sda2, /boot/efi on sda1, a USB stick with a space in its
    // label mounted by the desktop, btrfs on nvme with its anonymous device number.
    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime shared:12 - proc proc rw
27 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro
29 27 8:1 / /boot/efi rw,relatime shared:3 - vfat /dev/sda1 rw,fmask=0077,dmask=0077
61 27 8:17 / /media/user/MY\\040STICK rw,nosuid,nodev,relatime shared:40 master:2 - vfat /dev/sdb1 rw,uid=1000
62 27 0:45 /@home /home rw,relatime shared:41 - btrfs /dev/nvme0n1p3 rw,space_cache=v2
this line is garbage
";

    #[test]
    fn mountinfo_fields_and_escapes() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 5);
        assert_eq!(
            mounts[1],
            Mount {
                dev: DevId::new(8, 2),
                mount_point: "/".into(),
                fs_type: "ext4".into(),
                source: "/dev/sda2".into()
            }
        );
        // Two optional fields before the separator; an escaped space in the mount point.
        assert_eq!(mounts[3].mount_point, PathBuf::from("/media/user/MY STICK"));
        assert_eq!(mounts[3].source, "/dev/sdb1");
        assert_eq!(mounts[3].dev, DevId::new(8, 17));
        assert_eq!(mounts[4].dev, DevId::new(0, 45));
        assert_eq!(mounts[4].source, "/dev/nvme0n1p3");
    }

    #[test]
    fn swaps_skip_the_header() {
        let swaps = parse_swaps(
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
             /dev/sdc2                               partition\t8388604\t\t0\t\t-2\n\
             /swap\\040file                           file\t\t1048572\t\t0\t\t-3\n",
        );
        assert_eq!(
            swaps,
            vec![
                Swap { path: "/dev/sdc2".into(), kind: "partition".into() },
                Swap { path: "/swap file".into(), kind: "file".into() },
            ]
        );
        assert!(parse_swaps("Filename Type Size Used Priority\n").is_empty());
    }

    #[test]
    fn dev_ids() {
        assert_eq!(DevId::parse("259:3\n"), Some(DevId::new(259, 3)));
        assert_eq!(DevId::parse("8"), None);
        assert_eq!(DevId::parse("a:b"), None);
        assert_eq!(DevId::new(7, 1).to_string(), "7:1");
        assert_eq!(DevId::from_raw(rustix::fs::makedev(259, 70000)), DevId::new(259, 70000));
    }

    #[test]
    fn unescape_leaves_other_backslashes() {
        assert_eq!(unescape(r"a\040b\134c"), r"a b\c");
        assert_eq!(unescape(r"a\9b\04"), r"a\9b\04");
    }
}
