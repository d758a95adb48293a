//! Built images boot unchanged, through the code path `cargo xtask run --image` uses
//! (`Run::image`): the demo system's disk image, written as `cargo xtask image` writes it,
//! on QEMU with SeaBIOS and with OVMF and on Bochs; its ISO on QEMU. An image whose bytes
//! no longer match its manifest is refused before anything boots, and two builds of the
//! demo's disk image are byte-identical.
//!
//! Such an image's kernel has no `exit=emulator`, as on a board. The demo names `telemetry`
//! as its `verdict_partition`, so its verdict ends the run there too: the hypervisor prints
//! `run ended: success` and halts the core instead of ending the emulator, and the harness
//! stops the emulator at that line.

use std::path::{Path, PathBuf};

use bulkhead_image::{Format, Manifest, manifest_path};
use bulkhead_tests::{Emulator, Run, image, kernel};

/// A build time for the images (2023-11-14 22:13:20 UTC).
const EPOCH: u64 = 1_700_000_000;

/// The demo system's image for `emulator`'s board (demo.toml for QEMU, demo-bochs.toml for
/// Bochs) in `format`, written into `dir` as `cargo xtask image` writes it.
fn demo_image(emulator: Emulator, format: Format, dir: &Path) -> PathBuf {
    let config = kernel::workspace_root().join(emulator.default_config());
    let kernel = kernel::kernel_image(&config).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.join(match format {
        Format::Disk => "bulkhead.img",
        Format::Iso => "bulkhead.iso",
    });
    let (manifest, _) = image::write_image(&kernel, format, &out, EPOCH).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(manifest.kernel.cmdline, "", "a board image ends no emulator");
    out
}

/// Boots `format` of the demo on `emulator` from the built image, up to the demo's verdict.
fn boots(emulator: Emulator, format: Format) {
    let dir = tempfile::tempdir().unwrap();
    let image = demo_image(emulator, format, dir.path());
    let before = std::fs::read(&image).unwrap();
    let report = Run::new(emulator)
        .cpus(2)
        .image(&image)
        .expect("command line: ")
        .expect("board check: ok")
        .expect("partition control: starting on cpu 1")
        .expect("partition telemetry: starting on cpu 0")
        .expect("[telemetry] PASS")
        .expect("INFO ] run ended: success")
        .execute();
    report.assert_passed();
    assert_eq!(report.cmdline, "", "booted with the image's own command line");
    assert!(report.exit.is_none(), "the harness stopped the emulator:\n{}", report.diagnostic());
    assert!(std::fs::read(&image).unwrap() == before, "booting changed the image");
    Manifest::read_for(&image).unwrap().verify_image(&image).unwrap();
}

#[test]
fn disk_image_boots_on_qemu_bios() {
    boots(Emulator::QemuBios, Format::Disk);
}

#[test]
fn disk_image_boots_on_qemu_uefi() {
    boots(Emulator::QemuUefi, Format::Disk);
}

#[test]
fn disk_image_boots_on_bochs() {
    boots(Emulator::Bochs, Format::Disk);
}

#[test]
fn iso_image_boots_on_qemu_bios() {
    boots(Emulator::QemuBios, Format::Iso);
}

#[test]
fn image_that_does_not_match_its_manifest_is_refused_before_booting() {
    let dir = tempfile::tempdir().unwrap();
    let image = demo_image(Emulator::QemuBios, Format::Disk, dir.path());
    let expected = Manifest::read_for(&image).unwrap().image.sha256;
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[5 << 20] ^= 0x80;
    std::fs::write(&image, &bytes).unwrap();
    let actual = bulkhead_image::manifest::Digest256::of_bytes(&bytes).sha256;

    let err = match Run::new(Emulator::QemuBios).image(&image).try_execute() {
        Ok(report) => panic!("a changed image was booted:\n{}", report.diagnostic()),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("refusing to boot") && err.contains("does not match its manifest"), "{err}");
    assert!(err.contains(&expected) && err.contains(&actual), "both hashes are named: {err}");

    // Without its manifest, nothing is booted either.
    std::fs::remove_file(manifest_path(&image)).unwrap();
    let err = Run::new(Emulator::QemuBios).image(&image).try_execute().expect_err("booted without a manifest");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn demo_disk_image_is_byte_identical_across_builds() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = Manifest::read_for(&demo_image(Emulator::QemuBios, Format::Disk, a.path())).unwrap();
    let second = Manifest::read_for(&demo_image(Emulator::QemuBios, Format::Disk, b.path())).unwrap();
    assert_eq!(first.image, second.image, "two builds of the same inputs differ");
    assert_eq!(first, second);
}
