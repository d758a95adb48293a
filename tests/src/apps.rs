//! The unikernel apps (`apps/NAME/`): Rust std programs for `x86_64-unknown-hermit` linked
//! with the Bulkhead runtime (docs/unikernel.md). They are a cargo workspace of their own,
//! built with the dated nightly [`APPS_TOOLCHAIN`] (the Hermit target is tier 3: std is
//! built from source with `-Zbuild-std`) into `target/apps/`; a system file names one as
//! `path = "@apps/NAME"`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::kernel::{target_dir, workspace_root};

/// The toolchain the apps build with: apps/rust-toolchain.toml names it too (a unit test
/// keeps them equal), and `cargo xtask` installs it with `rust-src`.
pub const APPS_TOOLCHAIN: &str = "nightly-2026-05-19";
/// The target of the apps.
pub const APPS_TARGET: &str = "x86_64-unknown-hermit";

/// The apps workspace (`apps/`).
pub fn apps_root() -> PathBuf {
    workspace_root().join("apps")
}

/// Where the built apps are: what `@apps/NAME` resolves to.
pub fn app_dir() -> PathBuf {
    target_dir().join(bulkhead_board::APPS_DIR)
}

/// Whether a system file's text names an `@apps/` payload.
pub fn names_apps(system_text: &str) -> bool {
    system_text.contains(bulkhead_board::APPS_PREFIX)
}

/// The command that builds every app (release): the apps' own toolchain, their target
/// folder under the workspace's.
pub fn cargo_build_apps() -> Command {
    let mut cmd = bulkhead_runtime_build::toolchain_neutral_command(&apps_root(), "cargo");
    cmd.arg(format!("+{APPS_TOOLCHAIN}")).args(["build", "--release", "--target-dir"]).arg(target_dir().join("apps"));
    cmd
}

/// Builds every app; with `quiet`, cargo's output is returned only on failure.
pub fn build_apps(quiet: bool) -> Result<(), String> {
    // One build at a time: parallel HIL tests share the apps' target folder.
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    crate::kernel::run_build(cargo_build_apps(), quiet).map_err(|e| {
        format!("{e}\n(the apps need the toolchain {APPS_TOOLCHAIN} with rust-src: `cargo xtask build` installs it)")
    })
}

/// Builds the apps if the system file `config` names one.
pub fn prepare(config: &Path, quiet: bool) -> Result<(), String> {
    let text = std::fs::read_to_string(config).unwrap_or_default();
    if names_apps(&text) { build_apps(quiet) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apps_toolchain_file_names_the_pinned_nightly_with_rust_src() {
        let text = std::fs::read_to_string(apps_root().join("rust-toolchain.toml")).unwrap();
        assert!(text.contains(&format!("channel = \"{APPS_TOOLCHAIN}\"")), "{text}");
        assert!(text.contains("rust-src"), "{text}");
        let config = std::fs::read_to_string(apps_root().join(".cargo/config.toml")).unwrap();
        assert!(config.contains(&format!("target = \"{APPS_TARGET}\"")), "{config}");
        assert!(bulkhead_board::APPS_DIR.contains(APPS_TARGET));
    }

    #[test]
    fn systems_naming_apps_are_recognised() {
        assert!(names_apps("path = \"@apps/hello\""));
        assert!(!names_apps("path = \"@guests/test-cpu\""));
    }
}
