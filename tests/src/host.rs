//! The host programs and files the harness needs, and the Debian packages that provide
//! them. `cargo xtask` checks these before it builds an image or starts an emulator.

use std::path::Path;

use crate::emulator::{BOCHS_BIOS, BOCHS_VGABIOS, Emulator, OVMF};

/// What a requirement is needed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Building an image (disk or ISO), or reading a file back out of an ISO.
    Image,
    /// Running QEMU (either firmware).
    Qemu,
    /// Running QEMU with UEFI firmware.
    QemuUefi,
    /// Running Bochs.
    Bochs,
    /// Building a Linux kernel module against Debian's headers
    /// ([`crate::linux_assets::LinuxAssets::kbuild_dir`]): make, and the compiler Debian
    /// built its kernel with; and the static C library for the `bulkhead-msg` command
    /// ([`crate::linux_msg`]).
    LinuxModule,
}

impl Purpose {
    /// What running `emulator` needs (the image included).
    pub fn for_emulator(emulator: Emulator) -> &'static [Purpose] {
        match emulator {
            Emulator::QemuBios | Emulator::QemuEpyc => &[Purpose::Image, Purpose::Qemu],
            Emulator::QemuUefi => &[Purpose::Image, Purpose::Qemu, Purpose::QemuUefi],
            Emulator::Bochs | Emulator::BochsRyzen => &[Purpose::Image, Purpose::Bochs],
        }
    }

    /// Everything (`cargo xtask test`).
    pub const ALL: &'static [Purpose] =
        &[Purpose::Image, Purpose::Qemu, Purpose::QemuUefi, Purpose::Bochs, Purpose::LinuxModule];
}

/// A program on `PATH` or a file or folder that must exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    Program(&'static str),
    Path(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub check: Check,
    /// The Debian package that provides it.
    pub package: &'static str,
    pub purpose: Purpose,
}

impl Requirement {
    pub fn is_met(&self) -> bool {
        match self.check {
            Check::Program(name) => find_program(name),
            // `exists` follows links: the Bochs VGA BIOS is a link into another package.
            Check::Path(path) => Path::new(path).exists(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self.check {
            Check::Program(name) | Check::Path(name) => name,
        }
    }
}

const fn req(check: Check, package: &'static str, purpose: Purpose) -> Requirement {
    Requirement { check, package, purpose }
}

/// Every host requirement, in install order.
pub const REQUIREMENTS: &[Requirement] = &[
    req(Check::Program("grub-mkrescue"), "grub-common", Purpose::Image),
    req(Check::Program("grub-mkimage"), "grub-common", Purpose::Image),
    req(Check::Program("xorriso"), "xorriso", Purpose::Image),
    req(Check::Program("mformat"), "mtools", Purpose::Image),
    req(Check::Path(bulkhead_image::GRUB_PLATFORMS[0].0), bulkhead_image::GRUB_PLATFORMS[0].1, Purpose::Image),
    req(Check::Path(bulkhead_image::GRUB_PLATFORMS[1].0), bulkhead_image::GRUB_PLATFORMS[1].1, Purpose::Image),
    req(Check::Program("qemu-system-x86_64"), "qemu-system-x86", Purpose::Qemu),
    req(Check::Path(OVMF), "ovmf", Purpose::QemuUefi),
    req(Check::Program("bochs-bin"), "bochs", Purpose::Bochs),
    req(Check::Path(BOCHS_BIOS), "bochsbios", Purpose::Bochs),
    req(Check::Path(BOCHS_VGABIOS), "vgabios", Purpose::Bochs),
    req(Check::Program("make"), "make", Purpose::LinuxModule),
    req(Check::Program("gcc-12"), "gcc-12", Purpose::LinuxModule),
    // objtool, from `linux-kbuild`, runs on every object of a module and links libelf.
    req(Check::Path("/usr/lib/x86_64-linux-gnu/libelf.so.1"), "libelf1", Purpose::LinuxModule),
    // The static C library, for the `bulkhead-msg` command the Linux initramfs carries
    // (`-C target-feature=+crt-static`, `crate::linux_msg::build_tool`).
    req(Check::Path("/usr/lib/x86_64-linux-gnu/libc.a"), "libc6-dev", Purpose::LinuxModule),
];

/// The requirements for `purposes` that this host does not meet.
pub fn missing(purposes: &[Purpose]) -> Vec<Requirement> {
    REQUIREMENTS.iter().filter(|r| purposes.contains(&r.purpose) && !r.is_met()).copied().collect()
}

/// The packages that provide `requirements`, each once, in order.
pub fn packages(requirements: &[Requirement]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in requirements {
        if !out.contains(&r.package) {
            out.push(r.package);
        }
    }
    out
}

/// Every package the harness can need.
pub fn all_packages() -> Vec<&'static str> {
    packages(REQUIREMENTS)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `name` is an executable file in a folder of `PATH`.
pub fn find_program(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path)
        .any(|dir| std::fs::metadata(dir.join(name)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_purpose_has_requirements_and_packages_are_unique() {
        for purpose in Purpose::ALL {
            assert!(REQUIREMENTS.iter().any(|r| r.purpose == *purpose));
        }
        let all = all_packages();
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len());
        assert!(all.contains(&"grub-efi-amd64-bin") && all.contains(&"grub-pc-bin"));
    }

    #[test]
    fn program_lookup_uses_path() {
        assert!(find_program("sh"));
        assert!(!find_program("surely-no-such-program-bulkhead"));
        let fake = Requirement { check: Check::Path("/surely/not/here"), package: "x", purpose: Purpose::Image };
        assert!(!fake.is_met());
    }

    #[test]
    fn uefi_needs_more_than_bios() {
        assert!(Purpose::for_emulator(Emulator::QemuUefi).contains(&Purpose::QemuUefi));
        assert!(!Purpose::for_emulator(Emulator::QemuBios).contains(&Purpose::QemuUefi));
        assert!(Purpose::for_emulator(Emulator::Bochs).contains(&Purpose::Bochs));
    }
}
