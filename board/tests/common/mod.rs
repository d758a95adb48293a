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

/// The fields of a Linux setup header a fake bzImage sets (Documentation/arch/x86/boot.rst,
/// "The Real-Mode Kernel Header").
#[derive(Debug, Clone, Copy)]
pub struct FakeLinux {
    pub setup_sects: u8,
    pub boot_flag: u16,
    /// Protected-mode code, in bytes (a multiple of 16; `syssize` is this / 16).
    pub kernel_bytes: u32,
    pub version: u16,
    pub loadflags: u8,
    pub initrd_addr_max: u32,
    pub kernel_alignment: u32,
    pub relocatable: bool,
    pub xloadflags: u16,
    pub cmdline_size: u32,
    pub pref_address: u64,
    pub init_size: u32,
    /// Bytes cut off the end of the file (a truncated image).
    pub truncate: usize,
}

impl FakeLinux {
    /// A small kernel that boots in 16 MiB: protocol 2.15, 64-bit entry, relocatable at
    /// 2 MiB alignment from pref_address 2 MiB, init_size 4 MiB, cmdline_size 2047.
    pub const GOOD: FakeLinux = FakeLinux {
        setup_sects: 1,
        boot_flag: 0xaa55,
        kernel_bytes: 0x1000,
        version: 0x020f,
        loadflags: 0x01,
        initrd_addr_max: 0x7fff_ffff,
        kernel_alignment: 0x20_0000,
        relocatable: true,
        xloadflags: 0x01,
        cmdline_size: 2047,
        pref_address: 0x20_0000,
        init_size: 0x40_0000,
        truncate: 0,
    };

    /// The image: boot sector, setup sectors and protected-mode code, all zero but the
    /// header.
    pub fn image(&self) -> Vec<u8> {
        // boot.rst: setup_sects 0 means 4.
        let setup = (usize::from(if self.setup_sects == 0 { 4 } else { self.setup_sects }) + 1) * 512;
        let mut b = vec![0u8; setup + self.kernel_bytes as usize];
        let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
        put(0x1f1, &[self.setup_sects]);
        put(0x1f4, &(self.kernel_bytes / 16).to_le_bytes());
        put(0x1fe, &self.boot_flag.to_le_bytes());
        put(0x200, &[0xeb, 0x6a]);
        put(0x202, b"HdrS");
        put(0x206, &self.version.to_le_bytes());
        put(0x211, &[self.loadflags]);
        put(0x22c, &self.initrd_addr_max.to_le_bytes());
        put(0x230, &self.kernel_alignment.to_le_bytes());
        put(0x234, &[u8::from(self.relocatable)]);
        put(0x236, &self.xloadflags.to_le_bytes());
        put(0x238, &self.cmdline_size.to_le_bytes());
        put(0x258, &self.pref_address.to_le_bytes());
        put(0x260, &self.init_size.to_le_bytes());
        b.truncate(b.len() - self.truncate);
        b
    }
}

/// A bzImage the build accepts ([`FakeLinux::GOOD`]).
pub fn fake_bzimage() -> Vec<u8> {
    FakeLinux::GOOD.image()
}

/// A bzImage with every header problem the build checks for, but with its "HdrS" magic.
pub fn fake_bad_bzimage() -> Vec<u8> {
    FakeLinux {
        setup_sects: 64,
        boot_flag: 0,
        version: 0x0206,
        loadflags: 0,
        kernel_alignment: 0x30_0000,
        xloadflags: 0,
        pref_address: 0x1_0000,
        init_size: 0,
        truncate: 16,
        ..FakeLinux::GOOD
    }
    .image()
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
        write("test-witness", &fake_elf());
        write("linux-control", &fake_elf());
        write("linux", &fake_bzimage());
        write("linux-bad", &fake_bad_bzimage());
        // 64 MiB, sparse: more than any test partition holds.
        std::fs::File::create(dir.join("initrd-huge")).unwrap().set_len(64 << 20).unwrap();
        write("flat", b"\xfa\xf4\xeb\xfd");
        write("empty", b"");
        write("initrd", b"070701 fake cpio");
        std::fs::create_dir_all(dir.join("dir")).unwrap();
        dir
    })
}

/// The directory that `@apps/NAME` resolves to in tests: a fake of the shipped app.
pub fn app_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir("apps");
        for app in ["hello", "control"] {
            std::fs::write(dir.join(app), fake_elf()).unwrap();
        }
        dir
    })
}

/// The directory that `@linux/NAME` resolves to in tests (fakes of the files
/// `bulkhead_board::LINUX_ASSETS` names), filled once per test binary.
pub fn linux_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir("linux");
        std::fs::write(dir.join("vmlinuz"), fake_bzimage()).unwrap();
        std::fs::write(dir.join("shell-initramfs.cpio"), b"070701 fake cpio").unwrap();
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
    bulkhead_board::LoadOptions {
        guest_dir: Some(guest_dir().to_owned()),
        linux_dir: Some(linux_dir().to_owned()),
        app_dir: Some(app_dir().to_owned()),
    }
}
