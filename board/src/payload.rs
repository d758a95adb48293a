//! Payload files: where they are and whether they are what the system file says.
//!
//! Only the first bytes are read (enough for the ELF magic and a Linux setup header), so a
//! large kernel costs nothing, and only regular files are opened, so a path naming a FIFO or
//! a device cannot hang the build.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use bulkhead_virt::bzimage::{self, Layout, Problem as ImageProblem, RamRegion, ReadError, SetupHeader};

use crate::board::show_size;
use crate::diag::{Loc, Sink, rule};
use crate::system::At;
use crate::tables::{BOOT_AREA_END, PayloadKind, PhysRange};

/// The prefix of payload paths that live in the guest build directory.
pub const GUESTS_PREFIX: &str = "@guests/";

/// The prefix of payload paths that name a unikernel app: `@apps/NAME` is the program
/// `apps/NAME/` builds (a Rust std program linked with the Bulkhead runtime, `kind =
/// "hermit"`), found in the apps' build directory.
pub const APPS_PREFIX: &str = "@apps/";

/// The apps' build directory under the workspace's `target/`: the apps workspace's own
/// target folder, its Hermit target, release profile.
pub const APPS_DIR: &str = "apps/x86_64-unknown-hermit/release";

/// The prefix of payload paths that name the distribution's Linux assets, which the
/// tools fetch and build (`bulkhead_tests::linux_system`): `@linux/NAME`, one of
/// [`LINUX_ASSETS`].
pub const LINUX_PREFIX: &str = "@linux/";

/// The Linux asset folder under the workspace's `target/` (a link to the folder of the
/// current package versions).
pub const LINUX_DIR: &str = "linux-assets/current";

/// The names `@linux/NAME` may use, and the file each is in the Linux asset folder.
pub const LINUX_ASSETS: &[(&str, &str)] = &[
    // Debian's kernel image (the `linux-image-amd64` package's bzImage).
    ("vmlinuz", "vmlinuz"),
    // The initramfs the tools build from Debian's static busybox: a login-free shell on
    // ttyS0 with job control.
    ("shell-initramfs", "shell-initramfs.cpio"),
];

const FETCH_LINUX_HINT: &str = "the Linux assets come from Debian's packages through apt; `cargo xtask build`, `check` and `run` fetch them and build the initramfs (into target/linux-assets/current/)";

const BUILD_APPS_HINT: &str = "build the apps with `cargo xtask build` (payloads named `@apps/NAME` are the programs of apps/NAME/, built into target/apps/)";

/// Where the names with a prefix resolve: `@guests/`, `@linux/`, `@apps/`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PayloadDirs<'a> {
    pub guest: Option<&'a Path>,
    pub linux: Option<&'a Path>,
    pub apps: Option<&'a Path>,
}

const BUILD_GUESTS_HINT: &str =
    "build the guests with `cargo xtask build` (payloads named `@guests/NAME` come from the guest build directory)";

/// Resolves a payload or initrd path as written: `@guests/NAME` in the guest directory,
/// `@apps/NAME` in the apps' build directory, `@linux/NAME` in the Linux asset folder,
/// anything else relative to the system file's directory. `None` (after reporting) when a
/// guest, app or Linux path cannot be resolved.
pub(crate) fn resolve(
    sink: &mut Sink,
    at: Loc,
    written: &str,
    system_dir: &Path,
    dirs: PayloadDirs<'_>,
) -> Option<PathBuf> {
    let linux_dir = dirs.linux;
    if let Some(name) = written.strip_prefix(LINUX_PREFIX) {
        let Some((_, file)) = LINUX_ASSETS.iter().find(|(n, _)| *n == name) else {
            let known: Vec<String> = LINUX_ASSETS.iter().map(|(n, _)| format!("{LINUX_PREFIX}{n}")).collect();
            sink.error_hint(
                at,
                rule::INVALID_VALUE,
                format!("{written:?} names no Linux asset"),
                format!("the Linux assets are {}", known.join(", ")),
            );
            return None;
        };
        return match linux_dir {
            Some(dir) => Some(dir.join(file)),
            None => {
                sink.error_hint(
                    at,
                    rule::PAYLOAD_MISSING,
                    format!("payload {written:?}: no Linux asset folder is known"),
                    FETCH_LINUX_HINT,
                );
                None
            }
        };
    }
    let named = [
        (GUESTS_PREFIX, "a guest", dirs.guest, "guest directory", BUILD_GUESTS_HINT),
        (APPS_PREFIX, "an app", dirs.apps, "apps' build directory", BUILD_APPS_HINT),
    ]
    .into_iter()
    .find_map(|(prefix, what, dir, dir_name, hint)| {
        Some((prefix, written.strip_prefix(prefix)?, what, dir, dir_name, hint))
    });
    match named {
        Some((prefix, name, what, dir, dir_name, hint)) => {
            let plain = !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != "..";
            if !plain {
                sink.error_hint(
                    at,
                    rule::INVALID_VALUE,
                    format!("{written:?} does not name {what}"),
                    format!("write `{prefix}NAME` with a plain file name"),
                );
                return None;
            }
            match dir {
                Some(dir) => Some(dir.join(name)),
                None => {
                    sink.error_hint(
                        at,
                        rule::PAYLOAD_MISSING,
                        format!("payload {written:?}: no {dir_name} is known"),
                        hint,
                    );
                    None
                }
            }
        }
        None if written.is_empty() => {
            sink.error(at, rule::INVALID_VALUE, "the path is empty");
            None
        }
        None => Some(system_dir.join(written)),
    }
}

/// A payload file that could be read: its length and its first [`HEAD_LEN`] bytes.
pub(crate) struct FileFacts {
    pub len: u64,
    pub head: Vec<u8>,
}

/// Checks that `path` exists, is readable, and (when `kind` is given) is of that kind.
/// Returns the file's length and first bytes when it could be read.
pub(crate) fn check_file(
    sink: &mut Sink,
    at: Loc,
    written: &str,
    path: &Path,
    kind: Option<PayloadKind>,
) -> Option<FileFacts> {
    let guest = written.starts_with(GUESTS_PREFIX);
    let app = written.starts_with(APPS_PREFIX);
    let head = match read_head(path) {
        Ok(head) => head,
        Err(Problem::Missing) => {
            let hint = if guest {
                BUILD_GUESTS_HINT.to_owned()
            } else if app {
                BUILD_APPS_HINT.to_owned()
            } else {
                format!("no file at {}; paths are relative to the system file", path.display())
            };
            sink.error_hint(
                at,
                rule::PAYLOAD_MISSING,
                format!("{written:?} does not exist ({})", path.display()),
                hint,
            );
            return None;
        }
        Err(Problem::Unreadable(why)) => {
            sink.error(at, rule::PAYLOAD_UNREADABLE, format!("cannot read {written:?} ({}): {why}", path.display()));
            return None;
        }
    };
    if let Some(kind) = kind
        && let Some(why) = kind_mismatch(kind, &head)
    {
        sink.error(at, rule::PAYLOAD_KIND, format!("{written:?} is not {}: {why}", kind_article(kind)));
        return None;
    }
    std::fs::metadata(path).ok().map(|m| FileFacts { len: m.len(), head })
}

/// What [`check_linux`] checks: the bzImage, and the partition it is to boot in.
pub(crate) struct LinuxPayload<'a> {
    pub partition: &'a str,
    /// The image's first bytes and its length.
    pub image: &'a FileFacts,
    pub path_at: Loc,
    pub kind_at: Loc,
    pub regions: &'a [RamRegion],
    /// The initrd's length and where `initrd` was written.
    pub initrd: Option<(u64, Loc)>,
    /// The configured command line's length and where `cmdline` was written.
    pub cmdline: Option<(u64, Loc)>,
}

/// The build-time half of booting Linux: the setup header allows a 64-bit boot
/// (rule `linux-image`, every problem at `path`), and kernel, initrd, zero page and command
/// line fit the partition as the loader will place them ([`bzimage::Layout::plan`]):
/// `linux-memory` (at `kind` for the low memory, at `path` for the kernel), `linux-initrd`
/// at `initrd`, `linux-cmdline` at `cmdline`.
pub(crate) fn check_linux(sink: &mut Sink, p: &LinuxPayload<'_>) {
    let header = match SetupHeader::read(&p.image.head) {
        Ok(header) => header,
        Err(ReadError::TooShort) => {
            sink.error(
                p.path_at,
                rule::LINUX_IMAGE,
                format!(
                    "the file ends inside the setup header ({} bytes; the header runs to {:#x})",
                    p.image.len,
                    bzimage::HEADER_BYTES
                ),
            );
            return;
        }
        // Reported as `payload-kind` already.
        Err(ReadError::NoMagic) => return,
    };
    let h = &header;
    let problems = h.problems(p.image.len);
    for problem in problems.iter() {
        let message = match problem {
            ImageProblem::BootFlag => format!("no boot flag 0xaa55 at 0x1fe (found {:#06x})", h.boot_flag),
            ImageProblem::Version => format!(
                "boot protocol {}.{:02} is older than 2.12, the first that says whether a 64-bit entry exists",
                h.version >> 8,
                h.version & 0xff
            ),
            ImageProblem::NoKernel64 => format!(
                "xloadflags {:#x} lacks bit 0 (XLF_KERNEL_64): the kernel has no 64-bit entry point",
                h.xloadflags
            ),
            ImageProblem::NotLoadedHigh => {
                format!("loadflags {:#x} lacks bit 0 (LOADED_HIGH): a zImage, not a bzImage", h.loadflags)
            }
            ImageProblem::SetupSects => format!(
                "setup_sects = {} gives {} bytes of real-mode code; the boot protocol allows at most 32 KiB",
                h.setup_sects,
                h.setup_bytes()
            ),
            ImageProblem::Truncated => format!(
                "the file has {} bytes, but its header announces {} ({} of setup code and syssize {:#x} paragraphs)",
                p.image.len,
                h.setup_bytes() + h.protected_mode_bytes(),
                h.setup_bytes(),
                h.syssize
            ),
            ImageProblem::Alignment => format!("kernel_alignment {:#x} is not a power of two", h.kernel_alignment),
            ImageProblem::InitSize => format!(
                "init_size {:#x} is zero or smaller than the protected-mode kernel ({:#x} bytes)",
                h.init_size,
                h.protected_mode_bytes()
            ),
            ImageProblem::PrefAddress => format!(
                "pref_address {:#x} lies below 1 MiB{}",
                h.pref_address,
                if h.relocatable_kernel { "" } else { " or is not 4 KiB aligned (the kernel is not relocatable)" }
            ),
        };
        sink.error(p.path_at, rule::LINUX_IMAGE, message);
    }
    if !problems.is_empty() {
        return;
    }
    let initrd = p.initrd.map(|(len, _)| len);
    let cmdline = p.cmdline.map_or(0, |(len, _)| len);
    let Err(e) = Layout::plan(h, p.regions, initrd, cmdline) else { return };
    if e.low_memory {
        sink.error(
            p.kind_at,
            rule::LINUX_MEMORY,
            format!(
                "partition `{}` has no usable memory (access \"rwx\") over all of guest [0, {:#x}): Linux's boot data, its decompressor's trampoline (below 0x9f000) and its SMP trampoline live there",
                p.partition,
                bzimage::LOW_MEMORY_END
            ),
        );
    }
    if let Some(size) = e.kernel {
        let where_ = if h.relocatable_kernel {
            format!(
                "at a {}-aligned address at or above {:#x}",
                show_size(u64::from(h.kernel_alignment)),
                h.pref_address
            )
        } else {
            format!("at {:#x} (the kernel is not relocatable)", h.pref_address)
        };
        sink.error(
            p.path_at,
            rule::LINUX_MEMORY,
            format!(
                "partition `{}` has no room for the kernel: it needs {} (init_size) of usable memory {where_}{}",
                p.partition,
                show_size(size),
                if h.above_4g() { "" } else { ", below 4 GiB" }
            ),
        );
    }
    if let (Some(i), Some((_, at))) = (e.initrd, p.initrd) {
        let below = if i.ceiling == u64::MAX { String::new() } else { format!(" below {:#x}", i.ceiling) };
        sink.error(
            at,
            rule::LINUX_INITRD,
            format!(
                "the initrd ({} bytes) does not fit in partition `{}`: the largest free block above 1 MiB beside the kernel{below} has {} bytes",
                i.size, p.partition, i.largest
            ),
        );
    }
    if let (Some(c), Some((_, at))) = (e.cmdline, p.cmdline) {
        sink.error(
            at,
            rule::LINUX_CMDLINE,
            format!(
                "cmdline is {} bytes; this kernel takes at most {} (cmdline_size in its setup header)",
                c.len, c.max
            ),
        );
    }
}

/// A flat binary has no header: it is loaded at `entry` and started there, so `entry` must
/// be given, lie above the boot area, and the whole file must fit in one memory region.
/// Problems point at `entry`, or at the payload table (`payload_at`) when it is missing.
pub(crate) fn check_flat(sink: &mut Sink, payload_at: Loc, entry: Option<&At<u64>>, len: u64, regions: &[PhysRange]) {
    let Some(&At { v: entry, at }) = entry else {
        sink.error(
            payload_at,
            rule::FLAT_ENTRY,
            "a flat binary has no header: give `entry`, the guest-physical address it is loaded at and started from"
                .to_owned(),
        );
        return;
    };
    if entry < BOOT_AREA_END {
        sink.error(
            at,
            rule::FLAT_ENTRY,
            format!("`entry` {entry:#x} lies in the boot area below {BOOT_AREA_END:#x} (GDT, page tables, command line, stack)"),
        );
        return;
    }
    let fits = regions.iter().any(|r| r.base <= entry && entry.checked_add(len).is_some_and(|end| end <= r.end()));
    if !fits {
        sink.error(
            at,
            rule::FLAT_ENTRY,
            format!("the {len}-byte binary loaded at `entry` {entry:#x} does not fit in one of the partition's memory regions"),
        );
    }
}

fn kind_article(kind: PayloadKind) -> &'static str {
    match kind {
        PayloadKind::Elf => "an ELF file",
        PayloadKind::Hermit => "a Hermit unikernel (an ELF file)",
        PayloadKind::BzImage => "a Linux bzImage (kind \"linux\")",
        PayloadKind::Flat => "a flat binary",
    }
}

/// Offset of the "HdrS" signature in a bzImage (Linux boot protocol, `header`).
const BZIMAGE_MAGIC_OFFSET: usize = 0x202;
/// Bytes read from the start of a payload: a Linux setup header's worth.
const HEAD_LEN: usize = bzimage::HEADER_BYTES;

/// Why the first bytes do not fit `kind`, if they do not.
pub(crate) fn kind_mismatch(kind: PayloadKind, head: &[u8]) -> Option<&'static str> {
    match kind {
        PayloadKind::Elf | PayloadKind::Hermit => {
            (!head.starts_with(b"\x7fELF")).then_some("no ELF magic (7f 45 4c 46) at offset 0")
        }
        PayloadKind::BzImage => (head.get(BZIMAGE_MAGIC_OFFSET..BZIMAGE_MAGIC_OFFSET + 4) != Some(b"HdrS"))
            .then_some("no \"HdrS\" boot header at offset 0x202"),
        PayloadKind::Flat => head.is_empty().then_some("the file is empty"),
    }
}

enum Problem {
    Missing,
    Unreadable(String),
}

/// The first [`HEAD_LEN`] bytes of a regular file.
fn read_head(path: &Path) -> Result<Vec<u8>, Problem> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Problem::Missing,
        _ => Problem::Unreadable(e.to_string()),
    })?;
    if !meta.is_file() {
        return Err(Problem::Unreadable("not a regular file".into()));
    }
    let file = File::open(path).map_err(|e| Problem::Unreadable(e.to_string()))?;
    let mut head = Vec::with_capacity(HEAD_LEN);
    file.take(HEAD_LEN as u64).read_to_end(&mut head).map_err(|e| Problem::Unreadable(e.to_string()))?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_names_resolve_in_the_linux_folder_and_unknown_ones_are_reported() {
        let mut sink = Sink::default();
        let at = Loc { file: 0, offset: 0 };
        let linux = Path::new("/t/linux-assets/current");
        let resolve = |sink: &mut Sink, written: &str, dir: Option<&Path>| {
            let dirs = PayloadDirs { guest: Some(Path::new("/g")), linux: dir, apps: Some(Path::new("/a")) };
            super::resolve(sink, at, written, Path::new("/sys"), dirs)
        };
        assert_eq!(resolve(&mut sink, "@linux/vmlinuz", Some(linux)), Some(linux.join("vmlinuz")));
        assert_eq!(resolve(&mut sink, "@linux/shell-initramfs", Some(linux)), Some(linux.join("shell-initramfs.cpio")));
        assert_eq!(resolve(&mut sink, "@guests/x", Some(linux)), Some(PathBuf::from("/g/x")));
        assert_eq!(resolve(&mut sink, "@apps/hello", Some(linux)), Some(PathBuf::from("/a/hello")));
        assert!(sink.is_empty());
        assert_eq!(resolve(&mut sink, "@apps/../x", Some(linux)), None);
        assert_eq!(resolve(&mut sink, "@linux/bzImage", Some(linux)), None);
        assert_eq!(resolve(&mut sink, "@linux/vmlinuz", None), None);
        assert!(!sink.is_empty());
    }

    #[test]
    fn kinds() {
        let elf = b"\x7fELF\x02\x01\x01";
        assert_eq!(kind_mismatch(PayloadKind::Elf, elf), None);
        assert_eq!(kind_mismatch(PayloadKind::Hermit, elf), None);
        assert!(kind_mismatch(PayloadKind::Elf, b"MZ").is_some());
        assert!(kind_mismatch(PayloadKind::BzImage, elf).is_some());
        let mut bz = vec![0u8; HEAD_LEN];
        bz[BZIMAGE_MAGIC_OFFSET..BZIMAGE_MAGIC_OFFSET + 4].copy_from_slice(b"HdrS");
        assert_eq!(kind_mismatch(PayloadKind::BzImage, &bz), None);
        assert!(kind_mismatch(PayloadKind::BzImage, &bz[..BZIMAGE_MAGIC_OFFSET + 3]).is_some());
        assert_eq!(kind_mismatch(PayloadKind::Flat, b"x"), None);
        assert!(kind_mismatch(PayloadKind::Flat, b"").is_some());
    }
}
