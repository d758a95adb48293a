//! Shared test support: payload fixtures, made at test time so the repository holds no
//! binaries. Each is the smallest file its kind check accepts (or rejects).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A 64-byte ELF64 header: magic, class 64, little-endian, version 1, the rest zero.
pub fn fake_elf() -> Vec<u8> {
    let mut elf = vec![0u8; 64];
    elf[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    elf
}

/// The first 0x206 bytes of a bzImage: the "HdrS" signature at 0x202.
pub fn fake_bzimage() -> Vec<u8> {
    let mut image = vec![0u8; 0x240];
    image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image
}

/// The directory that `@guests/NAME` resolves to in tests, filled once per test binary.
pub fn guest_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir("guests");
        let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
        write("elf", &fake_elf());
        write("hermit", &fake_elf());
        write("demo-control", &fake_elf());
        write("demo-telemetry", &fake_elf());
        write("bzimage", &fake_bzimage());
        write("flat", b"\xfa\xf4\xeb\xfd");
        write("empty", b"");
        write("initrd", b"070701 fake cpio");
        std::fs::create_dir_all(dir.join("dir")).unwrap();
        dir
    })
}

/// A fresh directory under cargo's per-target scratch space, named after the test binary
/// (so reruns reuse it instead of piling up).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bulkhead-board-{}-{name}", env!("CARGO_CRATE_NAME")));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `board/tests/config/...`.
pub fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config")
}

pub fn options() -> bulkhead_board::LoadOptions {
    bulkhead_board::LoadOptions { guest_dir: Some(guest_dir().to_owned()) }
}
