//! Writing the image `cargo xtask image` writes, for a system's kernel: shared by xtask and
//! the HIL tests, so the tests boot exactly what a user would flash.

use std::path::{Path, PathBuf};

use bulkhead_image::manifest::{ConfigFile, GitState, Provenance, commit_time};
use bulkhead_image::{BuildOptions, Disk, Format, Iso, Manifest};

use crate::kernel::{self, KernelImage};

/// Where a build's `SOURCE_DATE_EPOCH` came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochSource {
    /// The `SOURCE_DATE_EPOCH` environment variable.
    Environment,
    /// The committer time of the workspace's HEAD.
    Commit,
    /// Neither was there: 0 (1980-01-01 in the FAT, its earliest date).
    Fallback,
}

/// The build time of an image: `SOURCE_DATE_EPOCH` from the environment if set, else the
/// time of the workspace's HEAD commit, else 0. A `SOURCE_DATE_EPOCH` that is not a number
/// of seconds is an error.
pub fn source_date_epoch() -> Result<(u64, EpochSource), String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) => text.trim().parse().map(|s| (s, EpochSource::Environment)).map_err(|_| {
            format!("SOURCE_DATE_EPOCH={text:?} is not a number of seconds since 1970-01-01 00:00:00 UTC")
        }),
        Err(std::env::VarError::NotUnicode(text)) => Err(format!("SOURCE_DATE_EPOCH={text:?} is not a number")),
        Err(std::env::VarError::NotPresent) => Ok(match commit_time(&kernel::workspace_root()) {
            Some(seconds) => (seconds, EpochSource::Commit),
            None => (0, EpochSource::Fallback),
        }),
    }
}

/// A path for the manifest: relative to the workspace when inside it.
fn display_name(path: &Path) -> String {
    path.strip_prefix(kernel::workspace_root()).unwrap_or(path).display().to_string()
}

/// Where the image for `kernel` came from: this Bulkhead version, the workspace's commit,
/// the system file the kernel was built for and the board file it names.
pub fn provenance(kernel: &KernelImage) -> Result<Provenance, String> {
    let loaded = bulkhead_board::load_system(&kernel.config, &kernel::load_options());
    let system = loaded.result.map_err(|d| format!("invalid configuration {}:\n{d}", kernel.config.display()))?;
    let digest = |path: &Path| ConfigFile::digest(display_name(path), path).map_err(|e| e.to_string());
    Ok(Provenance {
        bulkhead_version: env!("CARGO_PKG_VERSION").to_string(),
        git: GitState::of(&kernel::workspace_root()),
        system: digest(&kernel.config)?,
        board: digest(&system.board.file)?,
    })
}

/// Writes the bootable image of `kernel` and its payloads at `out` in `format`, with no
/// kernel command line (as on a board: no `exit=emulator`), and its manifest beside it.
/// Returns the manifest and where it was written.
pub fn write_image(
    kernel: &KernelImage,
    format: Format,
    out: &Path,
    source_date_epoch: u64,
) -> Result<(Manifest, PathBuf), String> {
    let provenance = provenance(kernel)?;
    let options = BuildOptions { source_date_epoch };
    let failed = |e: bulkhead_image::Error| format!("cannot build {}: {e}", out.display());
    let manifest = match format {
        Format::Disk => {
            let mut disk = Disk::new(&kernel.elf);
            for (path, string) in &kernel.modules {
                disk = disk.module(path, string);
            }
            disk.build(out, &options).map_err(failed)?;
            disk.manifest(out, &provenance, &options).map_err(failed)?
        }
        Format::Iso => {
            let mut iso = Iso::new(&kernel.elf);
            for (path, string) in &kernel.modules {
                iso = iso.module(path, string);
            }
            iso.build_with(out, &options).map_err(failed)?;
            iso.manifest(out, &provenance, &options).map_err(failed)?
        }
    };
    let path = manifest.write(out).map_err(|e| e.to_string())?;
    Ok((manifest, path))
}
