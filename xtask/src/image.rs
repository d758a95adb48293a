//! `cargo xtask image` (write a bootable image and its manifest) and `cargo xtask run
//! --image` (boot a built image unchanged).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use bulkhead_abi::run::CMDLINE_EMULATOR_EXIT;
use bulkhead_image::{Format, Manifest};
use bulkhead_tests::host::Purpose;
use bulkhead_tests::image::{EpochSource, source_date_epoch, write_image};
use bulkhead_tests::{Outcome, Run};

use crate::cli::{ImageFormat, RunArgs};
use crate::setup::ensure_host;

/// Builds the kernel for `config` and writes its image in `format` to `out` (default
/// `out/bulkhead.img` or `out/bulkhead.iso`) with its manifest beside it.
pub fn image(format: ImageFormat, out: Option<PathBuf>, config: Option<PathBuf>) -> Result<ExitCode> {
    ensure_host(&[Purpose::Image])?;
    let (format, default) = match format {
        ImageFormat::Disk => (Format::Disk, "out/bulkhead.img"),
        ImageFormat::Iso => (Format::Iso, "out/bulkhead.iso"),
    };
    // Checked before the build, so a bad value costs nothing.
    let (epoch, epoch_source) = source_date_epoch().map_err(anyhow::Error::msg)?;
    let out = match out {
        Some(path) => std::path::absolute(&path).unwrap_or(path),
        None => crate::root().join(default),
    };
    let kernel = crate::build(config)?;
    let from = match epoch_source {
        EpochSource::Environment => "SOURCE_DATE_EPOCH",
        EpochSource::Commit => "the commit's time",
        EpochSource::Fallback => {
            eprintln!(
                "warning: SOURCE_DATE_EPOCH is not set and {} is not a git checkout: the image's timestamps \
                 are 1980-01-01 (the earliest FAT date) and its manifest says source_date_epoch 0",
                crate::root().display()
            );
            "neither SOURCE_DATE_EPOCH nor a commit"
        }
    };
    eprintln!("writing the {format} image {} (timestamps {epoch}, from {from})", crate::display_path(&out));
    let (manifest, manifest_path) = write_image(&kernel, format, &out, epoch).map_err(anyhow::Error::msg)?;
    println!("{}", summary(&out, &manifest, &manifest_path));
    Ok(ExitCode::SUCCESS)
}

/// One line: what was written, its size and SHA-256, what it is for, and the manifest.
fn summary(out: &Path, manifest: &Manifest, manifest_path: &Path) -> String {
    let what = match manifest.format {
        Format::Disk => "raw GPT disk image, boots UEFI and legacy BIOS; write it to the board's boot medium",
        Format::Iso => "hybrid ISO, boots BIOS and UEFI from a CD or USB stick (not byte-reproducible)",
    };
    format!(
        "wrote {} ({:.1} MiB, SHA-256 {}): {what}; manifest {}",
        crate::display_path(out),
        manifest.image.size as f64 / (1024.0 * 1024.0),
        manifest.image.sha256,
        crate::display_path(manifest_path)
    )
}

/// Boots the image `args.image` unchanged (after checking it against its manifest) with the
/// live console, as `cargo xtask run` does.
pub fn run_image(args: RunArgs) -> Result<ExitCode> {
    let image = args.image.clone().context("`run_image` needs `--image PATH`")?;
    ensure_host(Purpose::for_emulator(args.emulator))?;
    let manifest = Manifest::read_for(&image)?;
    let ends_emulator = manifest.kernel.cmdline.split_whitespace().any(|w| w == CMDLINE_EMULATOR_EXIT);
    eprintln!(
        "booting {} ({} image of {}, kernel command line `{}`) on {} with {} cpu(s), timeout {} s",
        crate::display_path(&image),
        manifest.format,
        manifest.system.name,
        manifest.kernel.cmdline,
        args.emulator,
        args.cpus,
        args.timeout.as_secs()
    );
    let report = Run::new(args.emulator)
        .name("xtask-run-image")
        .cpus(args.cpus)
        .timeout(args.timeout)
        .image(&image)
        .on_line(|line| println!("{line}"))
        .try_execute()?;
    eprint!("\n{}", report.summary());
    if report.outcome == Outcome::TimedOut && !ends_emulator && !report.lines.iter().any(|l| l.is_run_end()) {
        eprintln!(
            "note: this image's kernel does not end the emulator (no `{CMDLINE_EMULATOR_EXIT}`, as on a board) \
             and printed no run-end line: on a board the hypervisor runs until power-off unless it fails, \
             or a partition named by `[hypervisor] verdict_partition` in the system file gives its verdict"
        );
    }
    Ok(if report.outcome.is_passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_image::manifest::{ConfigFile, Digest256, Kernel};

    #[test]
    fn summary_names_size_hash_and_manifest() {
        let manifest = Manifest {
            manifest_version: 1,
            bulkhead_version: "0.1.0".into(),
            git: None,
            format: Format::Disk,
            source_date_epoch: 0,
            system: ConfigFile { name: "board/systems/demo.toml".into(), sha256: "aa".into() },
            board: ConfigFile { name: "board/boards/qemu-q35.toml".into(), sha256: "bb".into() },
            kernel: Kernel { path: "/boot/bulkhead.elf".into(), size: 1, sha256: "cc".into(), cmdline: String::new() },
            payloads: Vec::new(),
            image: Digest256 { size: 63 << 20, sha256: "dd".repeat(32) },
        };
        let root = crate::root();
        let line = summary(&root.join("out/bulkhead.img"), &manifest, &root.join("out/bulkhead.img.manifest.json"));
        assert!(line.starts_with("wrote out/bulkhead.img (63.0 MiB, SHA-256 dddd"), "{line}");
        assert!(line.ends_with("; manifest out/bulkhead.img.manifest.json") && !line.contains('\n'), "{line}");
    }
}
