//! `cargo xtask flash`: writes an image onto a disk through `bulkhead_image::flash`, asking on
//! the terminal, and turns the outcome into an exit status (see docs/flashing.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use bulkhead_image::flash::{Expected, Request, TerminalUi, hex};

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

/// `IMAGE.manifest.json`, beside the image.
pub fn manifest_path(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_owned();
    name.push(".manifest.json");
    PathBuf::from(name)
}

/// The image's size and SHA-256 from its manifest (`image.size`, `image.sha256`).
///
/// Read as an untyped JSON value until the typed manifest (`bulkhead_image::manifest`) is
/// merged; only these two fields matter here.
pub fn expected_from_manifest(image: &Path) -> Result<Expected> {
    let path = manifest_path(image);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read the image's manifest {} (`cargo xtask image` writes it beside the image; flashing \
             needs it to check the image)",
            path.display()
        )
    })?;
    let manifest: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("the manifest {} is not valid JSON", path.display()))?;
    let Some(size) = manifest.pointer("/image/size").and_then(serde_json::Value::as_u64) else {
        bail!("the manifest {} has no `image.size` (a whole number of bytes)", path.display());
    };
    let Some(digest) = manifest.pointer("/image/sha256").and_then(serde_json::Value::as_str) else {
        bail!("the manifest {} has no `image.sha256` (a hex string)", path.display());
    };
    let mut sha256 = [0u8; 32];
    ::hex::decode_to_slice(digest, &mut sha256).map_err(|e| {
        anyhow::anyhow!("the manifest {} has a bad `image.sha256` {digest:?} ({e}): want 64 hex digits", path.display())
    })?;
    Ok(Expected { size, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &Path, json: &str) -> PathBuf {
        let image = dir.join("bulkhead.img");
        std::fs::write(manifest_path(&image), json).unwrap();
        image
    }

    #[test]
    fn manifest_beside_the_image() {
        assert_eq!(manifest_path(Path::new("out/bulkhead.img")), Path::new("out/bulkhead.img.manifest.json"));
    }

    #[test]
    fn expected_values_from_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let image = manifest(
            dir.path(),
            &format!(r#"{{"version": "0.1.0", "image": {{"size": 67108864, "sha256": "{digest}"}}, "files": []}}"#),
        );
        let expected = expected_from_manifest(&image).unwrap();
        assert_eq!(expected.size, 64 << 20);
        assert_eq!(hex(&expected.sha256), digest);
        // Upper-case hex is still hex.
        let image =
            manifest(dir.path(), &format!(r#"{{"image": {{"size": 1, "sha256": "{}"}}}}"#, digest.to_uppercase()));
        assert_eq!(hex(&expected_from_manifest(&image).unwrap().sha256), digest);
    }

    #[test]
    fn bad_manifests_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = expected_from_manifest(&dir.path().join("none.img")).unwrap_err();
        assert!(format!("{missing:#}").contains("none.img.manifest.json"), "{missing:#}");
        for (json, needle) in [
            ("{", "not valid JSON"),
            (r#"{"image": {"sha256": "00"}}"#, "no `image.size`"),
            (r#"{"image": {"size": -1, "sha256": "00"}}"#, "no `image.size`"),
            (r#"{"image": {"size": 1}}"#, "no `image.sha256`"),
            (r#"{"image": {"size": 1, "sha256": "abcd"}}"#, "64 hex digits"),
            (&format!(r#"{{"image": {{"size": 1, "sha256": "{}"}}}}"#, "zz".repeat(32)), "64 hex digits"),
        ] {
            let image = manifest(dir.path(), json);
            let err = format!("{:#}", expected_from_manifest(&image).unwrap_err());
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
