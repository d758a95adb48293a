//! What a command needs on this machine before it can build or boot anything, installed
//! when it can be and named exactly when it cannot:
//!
//! - the Rust pieces: the `x86_64-unknown-none` standard library of the active toolchain
//!   (every build of the kernel and the guests), `rustfmt` and `clippy` (`lint`). rustup
//!   does not always apply `rust-toolchain.toml`'s `targets` and `components` (not when the
//!   pinned toolchain is already present, for instance linked to another one), so this
//!   checks the toolchain's sysroot itself and runs `rustup target add` / `rustup component
//!   add` for what is missing;
//! - the apps' toolchain (`bulkhead_tests::apps::APPS_TOOLCHAIN`, a dated nightly) with
//!   `rust-src`, for the unikernel apps in apps/ (`-Zbuild-std` for the Hermit target);
//! - the Debian packages of the emulators and the image tools (`bulkhead_tests::host`),
//!   installed with apt-get when running as root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use bulkhead_tests::host::{self, Purpose};
use bulkhead_tests::kernel::KERNEL_TARGET;

use crate::{root, status};

/// A Rust component a command needs besides the host compiler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rust {
    /// The bare-metal standard library (`core`, `alloc`) for the kernel and the guests.
    KernelTarget,
    Rustfmt,
    Clippy,
}

impl Rust {
    /// What every build needs.
    pub const BUILD: &'static [Rust] = &[Rust::KernelTarget];
    /// What `cargo xtask lint` needs.
    pub const LINT: &'static [Rust] = &[Rust::KernelTarget, Rust::Rustfmt, Rust::Clippy];

    fn what(self) -> String {
        match self {
            Rust::KernelTarget => format!("the {KERNEL_TARGET} standard library"),
            Rust::Rustfmt => "rustfmt".into(),
            Rust::Clippy => "clippy".into(),
        }
    }

    /// The rustup arguments that install it into `toolchain`.
    fn rustup_args(self, toolchain: &str) -> Vec<String> {
        let (verb, item) = match self {
            Rust::KernelTarget => ("target", KERNEL_TARGET),
            Rust::Rustfmt => ("component", "rustfmt"),
            Rust::Clippy => ("component", "clippy"),
        };
        ["rustup", verb, "add", "--toolchain", toolchain, item].iter().map(|s| s.to_string()).collect()
    }

    /// The command to show a user who has to install it by hand.
    fn manual_command(self) -> String {
        match self {
            Rust::KernelTarget => format!("rustup target add {KERNEL_TARGET}"),
            Rust::Rustfmt => "rustup component add rustfmt".into(),
            Rust::Clippy => "rustup component add clippy".into(),
        }
    }

    /// Whether the toolchain whose sysroot is `sysroot` has it.
    pub fn present_in(self, sysroot: &Path) -> bool {
        match self {
            Rust::KernelTarget => has_core_library(&sysroot.join("lib/rustlib").join(KERNEL_TARGET).join("lib")),
            Rust::Rustfmt => sysroot.join("bin/rustfmt").is_file(),
            Rust::Clippy => sysroot.join("bin/cargo-clippy").is_file(),
        }
    }
}

/// Whether `dir` holds a compiled `core` (`libcore-<hash>.rlib`).
fn has_core_library(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libcore-") && name.ends_with(".rlib")
        })
    })
}

/// The rustc that cargo builds with here: `$RUSTC` if set, else `rustc` on PATH, run from
/// the workspace root so rustup applies `rust-toolchain.toml`.
fn rustc() -> Command {
    let mut cmd = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()));
    cmd.current_dir(root());
    cmd
}

fn sysroot() -> Result<PathBuf> {
    let out = rustc().args(["--print", "sysroot"]).stderr(Stdio::inherit()).output().context("cannot run `rustc`")?;
    if !out.status.success() {
        bail!("`rustc --print sysroot` failed ({})", out.status);
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The toolchain rustup uses in the workspace (`1.95.0-x86_64-unknown-linux-gnu`), or None
/// without rustup.
fn rustup_toolchain() -> Option<String> {
    let out = Command::new("rustup").args(["show", "active-toolchain"]).current_dir(root()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().map(str::to_string)
}

/// Makes sure the active toolchain has `needs`: installs what is missing with rustup,
/// saying so in one line each; without rustup, stops with the exact commands to run.
pub fn ensure_rust(needs: &[Rust]) -> Result<()> {
    let sysroot = sysroot()?;
    let missing: Vec<Rust> = needs.iter().copied().filter(|r| !r.present_in(&sysroot)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let Some(toolchain) = rustup_toolchain() else {
        let commands: Vec<String> = missing.iter().map(|r| format!("    {}", r.manual_command())).collect();
        bail!(
            "the Rust toolchain at {} lacks {}, and rustup is not on PATH to install it.\n\
             Install rustup (https://rustup.rs) and run, in this folder:\n{}\n\
             (or add the same pieces to your toolchain by its own means)",
            sysroot.display(),
            missing.iter().map(|r| r.what()).collect::<Vec<_>>().join(", "),
            commands.join("\n")
        );
    };
    for need in &missing {
        let args = need.rustup_args(&toolchain);
        eprintln!("setup: toolchain {toolchain} lacks {}; installing it: {}", need.what(), args.join(" "));
        let out = Command::new(&args[0])
            .args(&args[1..])
            .current_dir(root())
            .stdin(Stdio::null())
            .output()
            .context("cannot run rustup")?;
        if !out.status.success() {
            bail!("`{}` failed ({}):\n{}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim_end());
        }
    }
    let sysroot = self::sysroot()?;
    let still: Vec<String> = missing.iter().filter(|r| !r.present_in(&sysroot)).map(|r| r.what()).collect();
    if !still.is_empty() {
        bail!("rustup reported success, but the toolchain at {} still lacks {}", sysroot.display(), still.join(", "));
    }
    Ok(())
}

/// The rustup arguments that install the apps' toolchain: minimal, with `rust-src` (std's
/// sources, which `-Zbuild-std` compiles for the Hermit target).
fn apps_toolchain_install_args(toolchain: &str) -> Vec<String> {
    ["toolchain", "install", toolchain, "--profile", "minimal", "--component", "rust-src"].map(String::from).to_vec()
}

/// Whether the toolchain whose sysroot is `sysroot` has std's sources.
fn has_rust_src(sysroot: &Path) -> bool {
    sysroot.join("lib/rustlib/src/rust/library/std/Cargo.toml").is_file()
}

/// Makes sure the apps' toolchain and its `rust-src` are installed (through rustup, as
/// for the kernel target); without rustup, stops with the command to run.
pub fn ensure_apps_toolchain() -> Result<()> {
    let toolchain = bulkhead_tests::apps::APPS_TOOLCHAIN;
    let sysroot = || {
        let out = Command::new("rustup").args(["run", toolchain, "rustc", "--print", "sysroot"]).output().ok()?;
        out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    };
    if sysroot().is_some_and(|s| has_rust_src(&s)) {
        return Ok(());
    }
    let args = apps_toolchain_install_args(toolchain);
    if rustup_toolchain().is_none() {
        bail!(
            "the unikernel apps need the Rust toolchain {toolchain} with rust-src, and rustup is not on PATH to \
             install it.\nInstall rustup (https://rustup.rs) and run:\n    rustup {}",
            args.join(" ")
        );
    }
    eprintln!(
        "setup: the apps' toolchain {toolchain} or its rust-src is missing; installing it: rustup {}",
        args.join(" ")
    );
    let out = Command::new("rustup").args(&args).stdin(Stdio::null()).output().context("cannot run rustup")?;
    if !out.status.success() {
        bail!(
            "`rustup {}` failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    if !sysroot().is_some_and(|s| has_rust_src(&s)) {
        bail!("rustup reported success, but the toolchain {toolchain} still lacks rust-src");
    }
    Ok(())
}

/// Makes sure the host has what `purposes` need: installs the missing Debian packages when
/// running as root, otherwise says exactly what to install.
pub fn ensure_host(purposes: &[Purpose]) -> Result<()> {
    let missing = host::missing(purposes);
    if missing.is_empty() {
        return Ok(());
    }
    let packages = host::packages(&missing);
    let what: Vec<&str> = missing.iter().map(|r| r.name()).collect();
    let install = format!("apt-get install -y --no-install-recommends {}", packages.join(" "));
    if !host::is_root() {
        bail!(
            "missing on this machine: {}\ninstall them with:\n    sudo apt-get update && sudo {install}",
            what.join(", ")
        );
    }
    eprintln!("setup: missing on this machine: {}; installing {}", what.join(", "), packages.join(" "));
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    if !status(apt(&["update"]))? {
        bail!("`apt-get update` failed; fix the apt sources, then retry");
    }
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&packages);
    if !status(apt(&args))? {
        bail!("`{install}` failed");
    }
    let still: Vec<&str> = host::missing(purposes).iter().map(|r| r.name()).collect();
    if !still.is_empty() {
        bail!(
            "still missing after installing {}: {}\n(if a package is installed but its files are gone: \
             apt-get install --reinstall {})",
            packages.join(" "),
            still.join(", "),
            packages.join(" ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_target_needs_a_compiled_core() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib/rustlib").join(KERNEL_TARGET).join("lib");
        assert!(!Rust::KernelTarget.present_in(dir.path()), "no folder at all");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("libcompiler_builtins-1234.rlib"), b"").unwrap();
        assert!(!Rust::KernelTarget.present_in(dir.path()), "a folder without core");
        std::fs::write(lib.join("libcore-0123abcd.rlib"), b"").unwrap();
        assert!(Rust::KernelTarget.present_in(dir.path()));
    }

    #[test]
    fn the_apps_toolchain_installs_minimal_with_rust_src() {
        assert_eq!(
            apps_toolchain_install_args("nightly-2026-05-19").join(" "),
            "toolchain install nightly-2026-05-19 --profile minimal --component rust-src"
        );
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_rust_src(dir.path()));
        let std = dir.path().join("lib/rustlib/src/rust/library/std");
        std::fs::create_dir_all(&std).unwrap();
        std::fs::write(std.join("Cargo.toml"), b"").unwrap();
        assert!(has_rust_src(dir.path()));
    }

    #[test]
    fn lint_tools_are_looked_up_in_the_sysroot() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!Rust::Rustfmt.present_in(dir.path()) && !Rust::Clippy.present_in(dir.path()));
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/rustfmt"), b"").unwrap();
        std::fs::write(dir.path().join("bin/cargo-clippy"), b"").unwrap();
        assert!(Rust::Rustfmt.present_in(dir.path()) && Rust::Clippy.present_in(dir.path()));
    }

    #[test]
    fn install_commands_name_the_toolchain() {
        assert_eq!(
            Rust::KernelTarget.rustup_args("1.95.0-x86_64-unknown-linux-gnu").join(" "),
            "rustup target add --toolchain 1.95.0-x86_64-unknown-linux-gnu x86_64-unknown-none"
        );
        assert_eq!(Rust::Clippy.rustup_args("t").join(" "), "rustup component add --toolchain t clippy");
        assert_eq!(Rust::KernelTarget.manual_command(), "rustup target add x86_64-unknown-none");
    }

    /// The toolchain this workspace builds with has what the README commands need (after
    /// `cargo xtask` installed it), and the check agrees with rustc's own sysroot.
    #[test]
    fn this_toolchain_has_the_kernel_target() {
        let sysroot = sysroot().unwrap();
        assert!(sysroot.join("lib/rustlib").is_dir(), "{}", sysroot.display());
        assert!(Rust::KernelTarget.present_in(&sysroot), "run `cargo xtask build` first: it installs the target");
    }
}
