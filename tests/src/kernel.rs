//! Finding (or building) the hypervisor ELF and reading its defmt table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use defmt_decoder::Table;

/// The kernel's package and target.
pub const KERNEL_PACKAGE: &str = "bulkhead-kernel";
pub const GUESTS_PACKAGE: &str = "bulkhead-guests";
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// The workspace root (the folder holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).to_path_buf()
}

/// Cargo's target folder: `CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// Where `@linux/NAME` payloads live: `target/linux-assets/current` (see
/// [`crate::linux_system`]).
pub fn linux_dir() -> PathBuf {
    target_dir().join(bulkhead_board::LINUX_DIR)
}

/// How the tools resolve a system file's payload names: `@guests/NAME` in
/// [`binaries_dir`], `@linux/NAME` in [`linux_dir`], `@apps/NAME` in
/// [`crate::apps::app_dir`].
pub fn load_options() -> bulkhead_board::LoadOptions {
    bulkhead_board::LoadOptions {
        guest_dir: Some(binaries_dir()),
        linux_dir: Some(linux_dir()),
        app_dir: Some(crate::apps::app_dir()),
    }
}

/// Where `cargo build` puts the bare-metal binaries (kernel and guests).
pub fn binaries_dir() -> PathBuf {
    target_dir().join(KERNEL_TARGET).join("release")
}

/// The default system configuration (`board/systems/demo.toml`).
pub fn default_config() -> PathBuf {
    workspace_root().join(bulkhead_board::DEFAULT_SYSTEM)
}

/// A bootable hypervisor: the kernel ELF compiled for one system configuration, and the
/// boot modules (partition payloads) that configuration names.
#[derive(Debug, Clone)]
pub struct KernelImage {
    pub config: PathBuf,
    pub elf: PathBuf,
    /// (file, multiboot2 module string) in the order GRUB should load them.
    pub modules: Vec<(PathBuf, String)>,
}

fn cargo_build(package: &str, config: Option<&Path>, features: &[&str]) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", package, "--target", KERNEL_TARGET, "--release"]).current_dir(workspace_root());
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    if let Some(config) = config {
        cmd.env("BULKHEAD_CONFIG", config)
            .env("BULKHEAD_GUEST_DIR", binaries_dir())
            .env("BULKHEAD_LINUX_DIR", linux_dir())
            .env("BULKHEAD_APP_DIR", crate::apps::app_dir());
    }
    cmd
}

/// The command that builds the guests (the partition payloads).
pub fn cargo_build_guests() -> Command {
    cargo_build(GUESTS_PACKAGE, None, &[])
}

/// The commands that build the guests and then the kernel for `config`, for display.
pub fn build_commands(config: &Path) -> [Command; 2] {
    build_commands_with(config, &[])
}

/// [`build_commands`] with the kernel's cargo `features` (e.g. `profile`).
pub fn build_commands_with(config: &Path, features: &[&str]) -> [Command; 2] {
    [cargo_build(GUESTS_PACKAGE, None, &[]), cargo_build(KERNEL_PACKAGE, Some(config), features)]
}

/// Runs a cargo build; with `quiet`, its output is returned only on failure.
pub(crate) fn run_build(mut cmd: Command, quiet: bool) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let result = if quiet {
        cmd.stdin(Stdio::null()).output().map(|o| (o.status, o.stderr))
    } else {
        cmd.status().map(|s| (s, Vec::new()))
    };
    match result {
        Err(e) => Err(format!("cannot run `{shown}`: {e}")),
        Ok((status, stderr)) if !status.success() => {
            Err(format!("build failed ({status}): {shown}\n{}", String::from_utf8_lossy(&stderr)))
        }
        Ok(_) => Ok(()),
    }
}

/// Builds the guests, then the kernel for `config`, and copies the ELF to a file of its
/// own (`target/bulkhead-kernels/<config>.elf`) so kernels of different configurations
/// can be used side by side. With `quiet`, cargo's output is returned only on failure.
pub fn build_kernel(config: &Path, quiet: bool) -> Result<KernelImage, String> {
    build_kernel_with(config, quiet, &[])
}

/// [`build_kernel`] with the kernel's cargo `features` (e.g. `profile`, for `cargo xtask
/// bench --profile`); the ELF's name ends in them (`<config>-profile.elf`).
pub fn build_kernel_with(config: &Path, quiet: bool, features: &[&str]) -> Result<KernelImage, String> {
    // One cargo build at a time: each rewrites the same kernel output file.
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let config = std::path::absolute(config).map_err(|e| format!("bad config path {}: {e}", config.display()))?;
    // `@linux/` payloads: fetched and built before the kernel's build checks them.
    crate::linux_system::prepare(&config)?;
    // `@apps/` payloads: the unikernel apps, built with their nightly before the kernel's
    // build checks them.
    crate::apps::prepare(&config, quiet)?;
    let [guests, kernel] = build_commands_with(&config, features);
    run_build(guests, quiet)?;
    run_build(kernel, quiet)?;
    let built = binaries_dir().join(KERNEL_PACKAGE);
    let name = config.strip_prefix(workspace_root()).unwrap_or(&config).to_string_lossy().replace(['/', '\\'], "_");
    let dir = target_dir().join("bulkhead-kernels");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let suffix: String = features.iter().map(|f| format!("-{f}")).collect();
    let elf = dir.join(format!("{}{suffix}.elf", name.trim_end_matches(".toml")));
    std::fs::copy(&built, &elf).map_err(|e| format!("cannot copy {} to {}: {e}", built.display(), elf.display()))?;
    let modules = boot_modules(&config)?;
    Ok(KernelImage { config, elf, modules })
}

/// The payload files `config` names, as multiboot2 modules.
pub fn boot_modules(config: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let loaded = bulkhead_board::load_system(config, &load_options());
    let system = loaded.result.map_err(|d| format!("invalid configuration {}:\n{d}", config.display()))?;
    Ok(bulkhead_board::boot_modules(&system).into_iter().map(|m| (m.path, m.name)).collect())
}

/// The kernel image for `config`, built once per process and configuration (callers for
/// the same configuration wait and share the result, failures included).
pub fn kernel_image(config: &Path) -> Result<KernelImage, String> {
    type Cell = Arc<OnceLock<Result<KernelImage, String>>>;
    static IMAGES: OnceLock<Mutex<HashMap<PathBuf, Cell>>> = OnceLock::new();
    let key = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    let cell =
        IMAGES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().clone();
    cell.get_or_init(|| {
        // Straight to the stderr handle, not `eprintln!`: the test harness captures the
        // print macros until a test ends, and a first build of every system takes minutes
        // that should not pass in silence.
        let shown = config.strip_prefix(workspace_root()).unwrap_or(config).display().to_string();
        progress(&format!("hil: building the kernel for {shown}"));
        let started = std::time::Instant::now();
        let result = build_kernel(config, true);
        let verdict = if result.is_ok() { "built" } else { "FAILED to build" };
        progress(&format!("hil: {verdict} the kernel for {shown} in {:.1} s", started.elapsed().as_secs_f64()));
        result
    })
    .clone()
}

/// One line of progress on stderr, past the test harness's output capture.
pub fn progress(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The defmt table of the ELF at `path`, or `None` if it has no `.defmt` section (a kernel
/// built with `console_format = "text"`, whose console needs none); parsed once per
/// process and file version.
pub fn optional_defmt_table(path: &Path) -> Result<Option<Arc<Table>>, String> {
    type Key = (PathBuf, Option<SystemTime>, u64);
    static CACHE: OnceLock<Mutex<HashMap<Key, Option<Arc<Table>>>>> = OnceLock::new();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read kernel ELF {}: {e}", path.display()))?;
    let key = (path.to_path_buf(), meta.modified().ok(), meta.len());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(table) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(table.clone());
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read kernel ELF {}: {e}", path.display()))?;
    let table = match Table::parse(&bytes) {
        Ok(table) => table.map(Arc::new),
        Err(e) => return Err(format!("cannot read the defmt table of {}: {e:#}", path.display())),
    };
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, table.clone());
    Ok(table)
}
