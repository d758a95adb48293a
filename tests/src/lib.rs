//! Bulkhead's hardware-in-the-loop harness.
//!
//! A test describes a boot with [`Run`]: which [`Emulator`], how many CPUs, which kernel
//! switches, what the console must and must not show. [`Run::execute`] builds a GRUB ISO
//! for it (or takes a prebuilt image, [`Run::image`]), boots it in a fresh folder, decodes
//! the kernel's console (defmt frames or text lines) while the emulator runs, and returns a
//! [`Report`] whose [`Outcome`] is decided from what the kernel printed (see [`outcome`]).
//! `docs/testing.md` explains the whole flow.
//!
//! The modules below the runner are plain logic with host unit tests: [`console`]
//! (the serial stream decoder), [`outcome`] (the verdict), [`emulator`] (command lines
//! and configs), [`host`] (the host packages the harness needs); [`image`] writes the image
//! and manifest `cargo xtask image` writes.
//!
//! For Linux partitions: [`linux_assets`] obtains Debian's kernel, headers and busybox
//! through apt and caches them under `target/linux-assets/`, [`initramfs`] builds the
//! initramfs (newc cpio), and [`direct`] boots a kernel directly in QEMU, without the
//! hypervisor (the baseline, and the check that the assets work).

pub mod apps;
pub mod bochs_linux;
pub mod console;
pub mod direct;
pub mod emulator;
pub mod host;
pub mod image;
pub mod initramfs;
pub mod kernel;
pub mod linux_assets;
pub mod linux_msg;
pub mod linux_system;
pub mod outcome;
pub mod run;
pub mod tsc_init;

pub use console::{Level, Line};
pub use emulator::{Emulator, Exit};
pub use outcome::{Expectations, Outcome};
pub use run::{HarnessError, Report, Run};

/// Defines one HIL scenario and a test of it per backend and CPU: VT-x in Bochs
/// `corei7_skylake_x` (`vmx_bochs`), SVM in QEMU TCG `-cpu max` (`svm_qemu_max`) and
/// `-cpu EPYC` (`svm_qemu_epyc`), and SVM in Bochs `ryzen` (`svm_bochs_ryzen`: NRIPS and
/// flush-by-ASID present, which QEMU lacks). The body gets the emulator and builds its run with
/// [`Run::scenario`], so the same configuration, guests and expectations apply to all.
#[macro_export]
macro_rules! every_backend {
    ($(#[$meta:meta])* fn $name:ident($emulator:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn scenario($emulator: $crate::Emulator) $body

            #[test]
            fn vmx_bochs() {
                scenario($crate::Emulator::Bochs)
            }

            #[test]
            fn svm_qemu_max() {
                scenario($crate::Emulator::QemuBios)
            }

            #[test]
            fn svm_qemu_epyc() {
                scenario($crate::Emulator::QemuEpyc)
            }

            #[test]
            fn svm_bochs_ryzen() {
                scenario($crate::Emulator::BochsRyzen)
            }
        }
    };
}
