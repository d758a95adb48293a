//! `cargo xtask flash`: writes an image onto a disk through `bulkhead_image::flash`, asking on
//! the terminal, and turns the outcome into an exit status (see docs/flashing.md).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use bulkhead_image::flash::{Expected, Request, TerminalUi, hex};
use bulkhead_image::{Manifest, manifest_path};

/// Exit status when the flash stopped before writing: a refusal, a "no", a bad image. The
/// target is unchanged.
pub const EXIT_NOT_WRITTEN: u8 = 1;
/// Exit status when the flash failed after writing began: the target is partially written or
/// does not hold the image and must not be booted.
pub const EXIT_TARGET_DAMAGED: u8 = 3;

/// Flashes `image` onto `device`; `yes` skips the question (never the checks), `allow_file`
/// accepts a regular file as the target.
pub fn flash(image: &Path, device: &Path, yes: bool, allow_file: bool) -> Result<ExitCode> {
    let expected = expected_from_manifest(image)?;
    let request = Request { image, expected, target: device, allow_file };
    let mut ui = TerminalUi::new(yes);
    match bulkhead_image::flash::flash(&request, &mut ui) {
        Ok(report) => {
            println!(
                "wrote {} bytes to {} and read them back: sha256 {} matches the manifest",
                report.bytes,
                report.target.display(),
                hex(&report.sha256)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(if e.target_changed() { EXIT_TARGET_DAMAGED } else { EXIT_NOT_WRITTEN }))
        }
    }
}

/// The image's size and SHA-256 from its manifest (`IMAGE.manifest.json`, which `cargo
/// xtask image` writes beside it): what the flash checks the image against before writing
/// and the target against after.
pub fn expected_from_manifest(image: &Path) -> Result<Expected> {
    let manifest = Manifest::read_for(image).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n(`cargo xtask image` writes the manifest beside the image; flashing needs it to check the image)"
        )
    })?;
    let mut sha256 = [0u8; 32];
    ::hex::decode_to_slice(&manifest.image.sha256, &mut sha256).map_err(|e| {
        anyhow::anyhow!(
            "the manifest {} has a bad `image.sha256` {:?} ({e}): want 64 hex digits",
            manifest_path(image).display(),
            manifest.image.sha256
        )
    })?;
    Ok(Expected { size: manifest.image.size, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A real manifest (as `cargo xtask image` writes it) for a small image file.
    fn image_with_manifest(dir: &Path) -> (PathBuf, Vec<u8>) {
        let kernel = dir.join("kernel.elf");
        std::fs::write(&kernel, b"KERNEL").unwrap();
        let image = dir.join("bulkhead.img");
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&image, &bytes).unwrap();
        let system = dir.join("system.toml");
        std::fs::write(&system, "name = \"x\"").unwrap();
        let provenance = bulkhead_image::manifest::Provenance {
            bulkhead_version: "0.1.0".into(),
            git: None,
            system: bulkhead_image::manifest::ConfigFile::digest("system.toml", &system).unwrap(),
            board: bulkhead_image::manifest::ConfigFile::digest("system.toml", &system).unwrap(),
        };
        let manifest = bulkhead_image::Disk::new(&kernel)
            .manifest(&image, &provenance, &bulkhead_image::BuildOptions { source_date_epoch: 0 })
            .unwrap();
        manifest.write(&image).unwrap();
        (image, bytes)
    }

    #[test]
    fn expected_values_from_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let (image, bytes) = image_with_manifest(dir.path());
        let expected = expected_from_manifest(&image).unwrap();
        assert_eq!(expected.size, bytes.len() as u64);
        let digest = bulkhead_image::manifest::Digest256::of_bytes(&bytes);
        assert_eq!(hex(&expected.sha256), digest.sha256);
    }

    #[test]
    fn bad_manifests_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = expected_from_manifest(&dir.path().join("none.img")).unwrap_err();
        assert!(format!("{missing:#}").contains("none.img.manifest.json"), "{missing:#}");
        let image = dir.path().join("broken.img");
        std::fs::write(manifest_path(&image), "{").unwrap();
        let err = format!("{:#}", expected_from_manifest(&image).unwrap_err());
        assert!(err.contains("broken.img.manifest.json"), "{err}");
        let (image, _) = image_with_manifest(dir.path());
        let text = std::fs::read_to_string(manifest_path(&image)).unwrap();
        let manifest: Manifest = serde_json::from_str(&text).unwrap();
        let bad = text.replace(&manifest.image.sha256, "abcd");
        std::fs::write(manifest_path(&image), bad).unwrap();
        let err = format!("{:#}", expected_from_manifest(&image).unwrap_err());
        assert!(err.contains("64 hex digits"), "{err}");
    }
}
