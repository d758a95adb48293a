//! Payload files: where they are and whether they are what the system file says.
//!
//! Only the first bytes are read (enough for the ELF magic and the bzImage header), so a
//! large kernel costs nothing, and only regular files are opened, so a path naming a FIFO or
//! a device cannot hang the build.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::diag::{Loc, Sink, rule};
use crate::system::At;
use crate::tables::{BOOT_AREA_END, PayloadKind, PhysRange};

/// The prefix of payload paths that live in the guest build directory.
pub const GUESTS_PREFIX: &str = "@guests/";

const BUILD_GUESTS_HINT: &str =
    "build the guests with `cargo xtask build` (payloads named `@guests/NAME` come from the guest build directory)";

/// Resolves a payload or initrd path as written: `@guests/NAME` in the guest directory,
/// anything else relative to the system file's directory. `None` (after reporting) when a
/// guest path cannot be resolved.
pub(crate) fn resolve(
    sink: &mut Sink,
    at: Loc,
    written: &str,
    system_dir: &Path,
    guest_dir: Option<&Path>,
) -> Option<PathBuf> {
    match written.strip_prefix(GUESTS_PREFIX) {
        Some(name) => {
            let plain = !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != "..";
            if !plain {
                sink.error_hint(
                    at,
                    rule::INVALID_VALUE,
                    format!("{written:?} does not name a guest"),
                    "write `@guests/NAME` with a plain file name",
                );
                return None;
            }
            match guest_dir {
                Some(dir) => Some(dir.join(name)),
                None => {
                    sink.error_hint(
                        at,
                        rule::PAYLOAD_MISSING,
                        format!("payload {written:?}: no guest directory is known"),
                        BUILD_GUESTS_HINT,
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

/// Checks that `path` exists, is readable, and (when `kind` is given) is of that kind.
/// Returns the file's length when it could be read.
pub(crate) fn check_file(
    sink: &mut Sink,
    at: Loc,
    written: &str,
    path: &Path,
    kind: Option<PayloadKind>,
) -> Option<u64> {
    let guest = written.starts_with(GUESTS_PREFIX);
    let head = match read_head(path) {
        Ok(head) => head,
        Err(Problem::Missing) => {
            let hint = if guest {
                BUILD_GUESTS_HINT.to_owned()
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
    std::fs::metadata(path).ok().map(|m| m.len())
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
        PayloadKind::BzImage => "a Linux bzImage",
        PayloadKind::Flat => "a flat binary",
    }
}

/// Offset of the "HdrS" signature in a bzImage (Linux boot protocol, `header`).
const BZIMAGE_MAGIC_OFFSET: usize = 0x202;
const HEAD_LEN: usize = BZIMAGE_MAGIC_OFFSET + 4;

/// Why the first bytes do not fit `kind`, if they do not.
pub(crate) fn kind_mismatch(kind: PayloadKind, head: &[u8]) -> Option<&'static str> {
    match kind {
        PayloadKind::Elf | PayloadKind::Hermit => {
            (!head.starts_with(b"\x7fELF")).then_some("no ELF magic (7f 45 4c 46) at offset 0")
        }
        PayloadKind::BzImage => (head.get(BZIMAGE_MAGIC_OFFSET..HEAD_LEN) != Some(b"HdrS"))
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
    fn kinds() {
        let elf = b"\x7fELF\x02\x01\x01";
        assert_eq!(kind_mismatch(PayloadKind::Elf, elf), None);
        assert_eq!(kind_mismatch(PayloadKind::Hermit, elf), None);
        assert!(kind_mismatch(PayloadKind::Elf, b"MZ").is_some());
        assert!(kind_mismatch(PayloadKind::BzImage, elf).is_some());
        let mut bz = vec![0u8; HEAD_LEN];
        bz[BZIMAGE_MAGIC_OFFSET..].copy_from_slice(b"HdrS");
        assert_eq!(kind_mismatch(PayloadKind::BzImage, &bz), None);
        assert!(kind_mismatch(PayloadKind::BzImage, &bz[..HEAD_LEN - 1]).is_some());
        assert_eq!(kind_mismatch(PayloadKind::Flat, b"x"), None);
        assert!(kind_mismatch(PayloadKind::Flat, b"").is_some());
    }
}
