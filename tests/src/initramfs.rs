//! The initramfs a Linux partition boots: a newc cpio archive built here, in Rust, from
//! Debian's static busybox (see [`crate::linux_assets`]), with room for more files (a kernel
//! module, a command).
//!
//! The archive is written with the `cpio` crate: it reads and writes the newc format the
//! kernel unpacks (`init/initramfs.c`), device-node numbers included (the kernel needs
//! `/dev/console` before `/init` runs), has no dependencies of its own, and its reader lets
//! the unit tests parse every archive back.
//!
//! It is not compressed: Debian's kernel would unpack gzip, xz or zstd (`CONFIG_RD_*`), but
//! needs none of them (`CONFIG_BLK_DEV_INITRD` unpacks a plain cpio), and an uncompressed
//! archive costs the emulated CPU no decompression, which matters in Bochs. Every entry has
//! owner 0, time 0 and an inode number from its place in the archive, so one set of inputs
//! always gives the same bytes.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The line `/init` prints on the console once userspace runs (followed by the kernel
/// release and the number of online CPUs).
pub const INIT_MARKER: &str = "bulkhead-initramfs: /init reached";
/// The shell's prompt on the console (`PS1`).
pub const SHELL_PROMPT: &str = "bulkhead-initramfs# ";

/// The busybox applets linked into `/bin`: what `/init` needs, a working shell, and the
/// tools for loading a kernel module and looking around.
pub const APPLETS: &[&str] = &[
    "[", "cat", "chmod", "cp", "cttyhack", "date", "dd", "dmesg", "echo", "env", "false", "grep", "head", "hexdump",
    "insmod", "kill", "ln", "ls", "lsmod", "mkdir", "mknod", "mount", "mv", "nproc", "poweroff", "ps", "reboot", "rm",
    "rmmod", "sed", "setsid", "sh", "sleep", "stty", "sync", "tail", "test", "true", "umount", "uname", "wc",
];

/// `/init`, run by busybox's shell: mounts the kernel's file systems, prints
/// [`INIT_MARKER`], then keeps a login-free shell on the console. `cttyhack` opens the
/// console's real device (`/dev/ttyS0`, from `/sys/class/tty/console/active`) so the shell
/// gets a controlling terminal and job control; the loop starts a new shell if one exits,
/// since the kernel panics when init ends.
pub fn init_script() -> String {
    format!("#!/bin/sh\n# /init of the Bulkhead test initramfs (tests/src/initramfs.rs).\n{INIT_SETUP}{}", init_shell())
}

/// The first lines of every `/init` built here: the command path and the kernel's file
/// systems (proc, sysfs, devtmpfs).
pub const INIT_SETUP: &str = "export PATH=/bin\n\
                              mount -t proc proc /proc\n\
                              mount -t sysfs sysfs /sys\n\
                              mount -t devtmpfs devtmpfs /dev\n";

/// The shell function `step` of an `/init` that runs commands as a test: it runs its
/// arguments as a command, writes each of the command's output lines and then its exit
/// status into the kernel log (`/dev/kmsg`, so they reach the console) after `prefix`, and
/// sets `fail=1` when the command fails.
pub fn step_function(prefix: &str) -> String {
    format!(
        "step() {{\n\
           out=\"$(\"$@\" 2>&1)\"; rc=$?\n\
           echo \"$out\" | while read -r line; do [ -z \"$line\" ] || echo \"{prefix} $line\" > /dev/kmsg; done\n\
           echo \"{prefix} $1 $2: exit $rc\" > /dev/kmsg\n\
           [ $rc = 0 ] || fail=1\n\
         }}\n"
    )
}

/// The last lines of an `/init` that ends in a shell: the console's kernel log level
/// lowered to emergencies only, [`INIT_MARKER`] with the release and the number of CPUs,
/// then a login-free shell with job control on the console, started again whenever it
/// exits (the kernel panics when init ends).
///
/// The kernel writes its messages to the serial console synchronously, between any two
/// characters a program is sending: a warning printed from another CPU while the shell
/// echoes a line would cut that line in two (and the marker a harness waits for with it).
/// `dmesg -n 1` keeps the shell's console to the shell; `dmesg` still shows every message.
pub fn init_shell() -> String {
    format!(
        "dmesg -n 1\n\
         echo \"{INIT_MARKER} (kernel $(uname -r), $(nproc) cpus)\"\n\
         export PS1='{SHELL_PROMPT}'\n\
         while true; do\n\
         \tsetsid cttyhack sh\n\
         \tsleep 1\n\
         done\n"
    )
}

/// Where [`Initramfs::modules`] puts module `name` of kernel `release` (no leading `/`).
pub fn module_path(release: &str, name: &str) -> String {
    format!("lib/modules/{release}/{name}.ko")
}

/// Shell lines that load `modules` (names, in load order) from where
/// [`Initramfs::modules`] put them, each `insmod` reported into the kernel log with its exit
/// status (`bulkhead-initramfs: insmod NAME: exit N`); a failure sets `fail=1`. busybox's
/// `insmod` loads one file without resolving dependencies, hence the order.
pub fn insmod_lines(release: &str, modules: &[String]) -> String {
    modules
        .iter()
        .map(|name| {
            format!(
                "insmod /{path}; rc=$?
                 echo \"bulkhead-initramfs: insmod {name}: exit $rc\" > /dev/kmsg
                 [ $rc = 0 ] || fail=1
",
                path = module_path(release, name)
            )
        })
        .collect()
}

/// What one archive entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    /// A symbolic link to this target (relative or absolute).
    Symlink(String),
    CharDevice {
        major: u32,
        minor: u32,
    },
}

/// One entry: its kind and permission bits (the file-type bits come from the kind).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub mode: u32,
}

impl Entry {
    /// The full `st_mode`: file type and permissions.
    pub fn st_mode(&self) -> u32 {
        let file_type = match self.kind {
            Kind::Dir => 0o040000,
            Kind::File(_) => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDevice { .. } => 0o020000,
        };
        file_type | (self.mode & 0o7777)
    }
}

/// An initramfs under construction: entries by path (relative to `/`, no leading slash).
/// Paths are kept sorted, so every directory comes before what it holds, as the kernel's
/// unpacker needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    /// An archive with nothing in it.
    pub fn empty() -> Self {
        Initramfs::default()
    }

    /// The base system: `/bin/busybox` (the bytes of Debian's static busybox) with a link
    /// per [`APPLETS`], `/init` ([`init_script`]), `/dev/console` and the mount points.
    pub fn with_busybox(busybox: Vec<u8>) -> Self {
        let mut fs = Initramfs::empty();
        for dir in ["bin", "dev", "proc", "sys", "tmp", "root", "etc", "lib/modules"] {
            fs = fs.dir(dir, 0o755);
        }
        fs = fs.file("bin/busybox", busybox, 0o755);
        for applet in APPLETS {
            fs = fs.symlink(&format!("bin/{applet}"), "busybox");
        }
        // The kernel opens /dev/console for init's standard streams before /init runs
        // (`console_on_rootfs`), before devtmpfs can be mounted: the node must be in the
        // archive. 5:1 is the console (Documentation/admin-guide/devices.txt).
        fs.char_device("dev/console", 0o600, 5, 1).file("init", init_script().into_bytes(), 0o755)
    }

    /// Adds (or replaces) a directory, and any missing parents.
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let path = normalize(path);
        self.insert(path, Entry { kind: Kind::Dir, mode });
        self
    }

    /// Adds (or replaces) a regular file with these bytes and permission bits, and any
    /// missing parent directories (0755).
    pub fn file(mut self, path: &str, bytes: Vec<u8>, mode: u32) -> Self {
        let path = normalize(path);
        self.insert(path, Entry { kind: Kind::File(bytes), mode });
        self
    }

    /// Adds (or replaces) a symbolic link `path` -> `target`.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let path = normalize(path);
        self.insert(path, Entry { kind: Kind::Symlink(target.to_string()), mode: 0o777 });
        self
    }

    /// Adds (or replaces) a character device node.
    pub fn char_device(mut self, path: &str, mode: u32, major: u32, minor: u32) -> Self {
        let path = normalize(path);
        self.insert(path, Entry { kind: Kind::CharDevice { major, minor }, mode });
        self
    }

    /// Adds files given as (path, bytes, mode), e.g. a kernel module and the commands that
    /// use it.
    pub fn files<'a>(mut self, files: impl IntoIterator<Item = (&'a str, Vec<u8>, u32)>) -> Self {
        for (path, bytes, mode) in files {
            self = self.file(path, bytes, mode);
        }
        self
    }

    /// Adds kernel modules of kernel `release`, given as (module name, `.ko` bytes) in load
    /// order ([`crate::linux_assets::LinuxAssets::modules`]), as
    /// `/lib/modules/RELEASE/NAME.ko` ([`module_path`]); [`insmod_lines`] loads them.
    pub fn modules(mut self, release: &str, modules: &[(String, Vec<u8>)]) -> Self {
        for (name, bytes) in modules {
            self = self.file(&module_path(release, name), bytes.clone(), 0o644);
        }
        self
    }

    /// The entries, in archive order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(&normalize(path))
    }

    fn insert(&mut self, path: String, entry: Entry) {
        let mut parent = path.as_str();
        while let Some((up, _)) = parent.rsplit_once('/') {
            self.entries.entry(up.to_string()).or_insert(Entry { kind: Kind::Dir, mode: 0o755 });
            parent = up;
        }
        self.entries.insert(path, entry);
    }

    /// The archive: newc cpio, entries in path order, then the trailer.
    pub fn to_bytes(&self) -> io::Result<Vec<u8>> {
        let mut out = Cursor::new(Vec::new());
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let mut header = cpio::NewcBuilder::new(path)
                .ino(ino as u32 + 1)
                .mode(entry.st_mode())
                .nlink(if entry.kind == Kind::Dir { 2 } else { 1 });
            if let Kind::CharDevice { major, minor } = entry.kind {
                header = header.rdev_major(major).rdev_minor(minor);
            }
            let data: &[u8] = match &entry.kind {
                Kind::File(bytes) => bytes,
                // A link's data is its target, without a terminating NUL.
                Kind::Symlink(target) => target.as_bytes(),
                Kind::Dir | Kind::CharDevice { .. } => &[],
            };
            let size = u32::try_from(data.len())
                .map_err(|_| io::Error::other(format!("{path}: {} bytes is too large for cpio", data.len())))?;
            let mut writer = header.write(out, size);
            writer.write_all(data)?;
            out = writer.finish()?;
        }
        Ok(cpio::newc::trailer(out)?.into_inner())
    }

    /// Writes the archive to `path` (replacing it atomically, so parallel runs reading it
    /// never see a partial file).
    pub fn write(&self, path: &Path) -> io::Result<u64> {
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let bytes = self.to_bytes()?;
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("partial-{}-{n}", std::process::id()));
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(bytes.len() as u64)
    }
}

/// `/a//b/` -> `a/b`. Panics on `..`, `.` or an empty path: entry paths come from code, and
/// such a path is a bug there.
fn normalize(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    assert!(
        !parts.is_empty() && parts.iter().all(|p| *p != ".." && *p != "."),
        "initramfs path {path:?} must name something below / without . or .."
    );
    parts.join("/")
}

/// One entry read back from an archive (see [`parse`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedEntry {
    pub path: String,
    pub st_mode: u32,
    pub nlink: u32,
    pub ino: u32,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

/// Reads a newc archive back with the `cpio` crate: every entry up to the trailer (not
/// included). An archive without a trailer is an error.
pub fn parse(bytes: &[u8]) -> io::Result<Vec<ParsedEntry>> {
    use std::io::Read;
    let mut input = Cursor::new(bytes);
    let mut out = Vec::new();
    loop {
        let mut reader = cpio::NewcReader::new(input)?;
        let e = reader.entry().clone();
        if e.is_trailer() {
            return Ok(out);
        }
        let mut data = Vec::new();
        reader.read_to_end(&mut data)?;
        out.push(ParsedEntry {
            path: e.name().to_string(),
            st_mode: e.mode(),
            nlink: e.nlink(),
            ino: e.ino(),
            rdev: (e.rdev_major(), e.rdev_minor()),
            data,
        });
        input = reader.finish()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Initramfs {
        Initramfs::with_busybox(b"\x7fELF fake busybox".to_vec())
    }

    #[test]
    fn the_base_archive_round_trips() {
        let fs = base();
        let bytes = fs.to_bytes().unwrap();
        assert_eq!(&bytes[..6], b"070701", "newc magic");
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed.len(), fs.entries().count());
        for ((path, entry), p) in fs.entries().zip(&parsed) {
            assert_eq!(p.path, path);
            assert_eq!(p.st_mode, entry.st_mode(), "{path}");
        }
        let get = |path: &str| parsed.iter().find(|p| p.path == path).unwrap_or_else(|| panic!("no {path}"));
        assert_eq!(get("bin/busybox").st_mode, 0o100755);
        assert_eq!(get("bin/busybox").data, b"\x7fELF fake busybox");
        assert_eq!(get("init").st_mode, 0o100755);
        assert_eq!(get("init").data, init_script().as_bytes());
        assert_eq!(get("dev/console").st_mode, 0o020600);
        assert_eq!(get("dev/console").rdev, (5, 1));
        for applet in APPLETS {
            let link = get(&format!("bin/{applet}"));
            assert_eq!(link.st_mode, 0o120777, "{applet}");
            assert_eq!(link.data, b"busybox", "{applet}");
        }
        for dir in ["bin", "dev", "proc", "sys", "lib", "lib/modules"] {
            assert_eq!(get(dir).st_mode, 0o040755, "{dir}");
            assert_eq!(get(dir).nlink, 2, "{dir}");
        }
        // Unique inode numbers: the kernel links entries with equal (ino, nlink > 1) as
        // hard links.
        let mut inos: Vec<u32> = parsed.iter().map(|p| p.ino).collect();
        inos.sort();
        inos.dedup();
        assert_eq!(inos.len(), parsed.len());
    }

    #[test]
    fn the_archive_ends_with_the_trailer_and_is_padded() {
        let bytes = base().to_bytes().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let trailer = b"TRAILER!!!\0";
        let at = bytes.windows(trailer.len()).rposition(|w| w == trailer).expect("a trailer");
        // The trailer's header is the last one: 110 bytes before its name.
        assert_eq!(&bytes[at - 110..at - 104], b"070701");
        assert!(bytes[at + trailer.len()..].iter().all(|&b| b == 0));
        // Without its trailer the archive does not parse.
        assert!(parse(&bytes[..at - 110]).is_err());
    }

    #[test]
    fn directories_come_before_their_contents() {
        let fs = base().file("/lib/modules/6.1.0-57-amd64/extra/bulkhead.ko", vec![1, 2, 3], 0o644);
        let parsed = parse(&fs.to_bytes().unwrap()).unwrap();
        let index = |p: &str| parsed.iter().position(|e| e.path == p).unwrap_or_else(|| panic!("no {p}"));
        assert!(index("lib") < index("lib/modules"));
        assert!(index("lib/modules/6.1.0-57-amd64") < index("lib/modules/6.1.0-57-amd64/extra"));
        assert!(index("lib/modules/6.1.0-57-amd64/extra") < index("lib/modules/6.1.0-57-amd64/extra/bulkhead.ko"));
        for (i, entry) in parsed.iter().enumerate() {
            if let Some((parent, _)) = entry.path.rsplit_once('/') {
                assert!(index(parent) < i, "{} before its folder", entry.path);
            }
        }
    }

    #[test]
    fn extra_files_are_added_and_replace_earlier_ones() {
        let fs = base()
            .files([("/bin/bulkhead-msg", b"#!/bin/sh\n".to_vec(), 0o755), ("etc/motd", b"hi\n".to_vec(), 0o644)])
            .file("init", b"#!/bin/sh\nexec sh\n".to_vec(), 0o700)
            .symlink("sbin/insmod", "../bin/busybox");
        let parsed = parse(&fs.to_bytes().unwrap()).unwrap();
        let get = |path: &str| parsed.iter().find(|p| p.path == path).unwrap();
        assert_eq!(get("bin/bulkhead-msg").st_mode, 0o100755);
        assert_eq!(get("etc/motd").st_mode, 0o100644);
        assert_eq!(get("etc/motd").data, b"hi\n");
        assert_eq!(get("init").data, b"#!/bin/sh\nexec sh\n");
        assert_eq!(get("init").st_mode, 0o100700);
        assert_eq!(get("sbin").st_mode, 0o040755, "a missing parent folder is made");
        assert_eq!(get("sbin/insmod").data, b"../bin/busybox");
        assert_eq!(parsed.iter().filter(|p| p.path == "init").count(), 1);
    }

    #[test]
    fn modules_go_under_the_release_and_load_in_order() {
        let modules = vec![("pps_core".to_string(), vec![1]), ("e1000e".to_string(), vec![2, 3])];
        let fs = base().modules("6.1.0-57-amd64", &modules);
        let parsed = parse(&fs.to_bytes().unwrap()).unwrap();
        let get = |path: &str| parsed.iter().find(|p| p.path == path).unwrap_or_else(|| panic!("no {path}"));
        assert_eq!(get("lib/modules/6.1.0-57-amd64/e1000e.ko").data, [2, 3]);
        assert_eq!(get("lib/modules/6.1.0-57-amd64/pps_core.ko").st_mode, 0o100644);
        let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
        let lines = insmod_lines("6.1.0-57-amd64", &names);
        let first = lines.find("insmod /lib/modules/6.1.0-57-amd64/pps_core.ko").unwrap();
        let second = lines.find("insmod /lib/modules/6.1.0-57-amd64/e1000e.ko").unwrap();
        assert!(first < second, "{lines}");
        assert!(lines.contains("bulkhead-initramfs: insmod e1000e: exit $rc") && lines.contains("fail=1"));
        assert!(APPLETS.contains(&"insmod"));
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        assert_eq!(base().to_bytes().unwrap(), base().to_bytes().unwrap());
        assert_ne!(base().to_bytes().unwrap(), Initramfs::with_busybox(b"other".to_vec()).to_bytes().unwrap());
    }

    #[test]
    fn init_mounts_prints_the_marker_and_starts_a_shell_on_the_console() {
        let init = init_script();
        assert!(init.starts_with("#!/bin/sh\n"));
        for line in [
            "mount -t proc proc /proc",
            "mount -t sysfs sysfs /sys",
            "mount -t devtmpfs devtmpfs /dev",
            "setsid cttyhack sh",
        ] {
            assert!(init.contains(line), "{line}");
        }
        assert!(init.contains(INIT_MARKER) && init.contains(SHELL_PROMPT));
        // Every command /init runs is an applet with a link.
        for command in ["mount", "echo", "uname", "nproc", "setsid", "cttyhack", "sh", "sleep", "true"] {
            assert!(APPLETS.contains(&command), "{command}");
        }
    }

    #[test]
    #[should_panic(expected = "without . or ..")]
    fn paths_leaving_the_root_are_refused() {
        let _ = Initramfs::empty().file("../etc/passwd", Vec::new(), 0o644);
    }

    #[test]
    fn write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initramfs.cpio");
        std::fs::write(&path, b"old").unwrap();
        let size = base().write(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(bytes, base().to_bytes().unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no partial file left");
    }
}
