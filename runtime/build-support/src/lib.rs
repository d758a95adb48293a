//! Links a Rust `std` program for `x86_64-unknown-hermit` with the Bulkhead runtime, so
//! it runs in a Bulkhead partition. The program's build script is one call:
//!
//! ```text
//! // build.rs
//! fn main() {
//!     bulkhead_runtime_build::link();
//! }
//! ```
//!
//! What it does (docs/unikernel.md, "How an app is linked"):
//!
//! 1. builds the runtime (`runtime/`, package `bulkhead-runtime`) with the workspace's
//!    pinned stable toolchain for `x86_64-unknown-none`, as a static library: it needs no
//!    `-Zbuild-std`, and the program's nightly never compiles it;
//! 2. merges that library into one relocatable object (`rust-lld -r`) and makes every
//!    symbol in it local except what the program's std calls ([`EXPORTS`]): the runtime's
//!    own copy of `core`, its compiler intrinsics and its panic handler cannot clash with
//!    the program's (`rust-objcopy --keep-global-symbol`). Both tools come with every Rust
//!    toolchain, so the host needs nothing else;
//! 3. links that object into the program, non-PIE at the partition's load address
//!    [`IMAGE_BASE`], entered at `_start` (without an entry the linker's section garbage
//!    collection keeps nothing: an empty program, silently);
//! 4. asks cargo to run it again when the runtime's sources or library change, so a
//!    changed runtime relinks every program.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The symbols the runtime exports to the program: the hermit-abi calls, the C memory
/// functions std calls, the entry point, Bulkhead's own `bulkhead_start_tsc` (the TSC at
/// `_start`, for benchmarks) and its calls for the messaging crate
/// (docs/unikernel.md, "Messaging"; named one by one: the runtime's assembly has other
/// `bulkhead_` symbols, which stay local). Everything else in the runtime is local.
pub const EXPORTS: &[&str] = &[
    "sys_*",
    "_start",
    "memcpy",
    "memmove",
    "memset",
    "memcmp",
    "bcmp",
    "strlen",
    "bulkhead_connection",
    "bulkhead_message_post",
    "bulkhead_message_receive",
    "bulkhead_event_signal",
    "bulkhead_event_wait",
    "bulkhead_start_tsc",
];

/// Where the program is linked: guest-physical 1 MiB, above the partition's boot area,
/// where the other Bulkhead payloads load too.
pub const IMAGE_BASE: u64 = 0x10_0000;

/// The runtime's package and the target it is built for.
pub const RUNTIME_PACKAGE: &str = "bulkhead-runtime";
pub const RUNTIME_TARGET: &str = "x86_64-unknown-none";

/// The call for a build script: links the runtime into the package's binaries; on
/// failure, stops the build with the reason.
pub fn link() {
    if let Err(e) = try_link() {
        eprintln!("error: linking the Bulkhead runtime: {e}");
        std::process::exit(1);
    }
}

/// The Bulkhead workspace this crate belongs to.
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).unwrap_or(here).to_path_buf()
}

/// The workspace's target folder (`CARGO_TARGET_DIR` relative to the workspace, or
/// `target/`), as the other Bulkhead tools find it.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// The runtime's static library, as [`build_runtime`] leaves it.
pub fn runtime_library(root: &Path) -> PathBuf {
    target_dir(root).join(RUNTIME_TARGET).join("release").join("libbulkhead_runtime.a")
}

/// Steps 1 to 4 above; the reason on failure.
pub fn try_link() -> Result<(), String> {
    let root = workspace_root();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set: call this from a build script")?);
    let host = std::env::var("HOST").map_err(|_| "HOST is not set: call this from a build script")?;
    let library = build_runtime(&root)?;
    let object = out.join("bulkhead-runtime.o");
    export_only(&root, &host, &library, &object)?;
    println!("cargo:rustc-link-arg={}", object.display());
    println!("cargo:rustc-link-arg=--entry=_start");
    println!("cargo:rustc-link-arg=--no-pie");
    println!("cargo:rustc-link-arg=--image-base={IMAGE_BASE:#x}");
    for input in ["runtime/src", "runtime/Cargo.toml", "abi/src", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }
    println!("cargo:rerun-if-changed={}", library.display());
    Ok(())
}

/// A command that runs in `dir` with the toolchain that folder's `rust-toolchain.toml`
/// names: without the variables rustup and cargo set for the build that runs it (the
/// program's nightly build here, the workspace's stable one for the tools that build the
/// apps).
pub fn toolchain_neutral_command(dir: &Path, program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        let inherited_build_setting = (key_text.starts_with("CARGO") && key_text != "CARGO_HOME")
            || key_text.starts_with("RUSTC")
            || key_text.starts_with("RUSTDOC")
            || key_text.starts_with("RUSTFLAGS")
            || key_text.starts_with("__CARGO")
            || key_text == "RUSTUP_TOOLCHAIN"
            || key_text == "TARGET";
        if inherited_build_setting {
            cmd.env_remove(&key);
        }
    }
    // rustup may put the program's toolchain first on PATH; the workspace's must win.
    if let Some(path) = std::env::var_os("PATH") {
        let kept: Vec<PathBuf> =
            std::env::split_paths(&path).filter(|p| !p.to_string_lossy().contains("/toolchains/")).collect();
        if let Ok(joined) = std::env::join_paths(kept) {
            cmd.env("PATH", joined);
        }
    }
    cmd
}

fn run(mut cmd: Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    // Cargo reads a build script's standard output for its directives: the tools'
    // output goes to standard error.
    let status = cmd.stdout(Stdio::from(std::io::stderr())).status().map_err(|e| format!("cannot run {shown}: {e}"))?;
    if !status.success() {
        return Err(format!("{shown} failed ({status})"));
    }
    Ok(())
}

/// Builds the runtime library with the workspace's toolchain; returns its path.
pub fn build_runtime(root: &Path) -> Result<PathBuf, String> {
    let mut cmd = toolchain_neutral_command(root, "cargo");
    cmd.args(["build", "--release", "-p", RUNTIME_PACKAGE, "--target", RUNTIME_TARGET, "--target-dir"])
        .arg(target_dir(root));
    run(cmd)?;
    let library = runtime_library(root);
    if !library.is_file() {
        return Err(format!("the runtime build left no library at {}", library.display()));
    }
    Ok(library)
}

/// A command running the workspace toolchain's tool `name` (`rust-lld`, `rust-objcopy`),
/// which every Rust toolchain carries in its sysroot. They load the toolchain's LLVM
/// library from its `lib/` (rustc points them there the same way when it runs them).
fn toolchain_tool(root: &Path, host: &str, name: &str) -> Result<Command, String> {
    let out = toolchain_neutral_command(root, "rustc")
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    if !out.status.success() {
        return Err(format!("`rustc --print sysroot` failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let tool = sysroot.join("lib/rustlib").join(host).join("bin").join(name);
    if !tool.is_file() {
        return Err(format!("the toolchain at {} has no {name} (expected {})", sysroot.display(), tool.display()));
    }
    let mut library_path = vec![sysroot.join("lib")];
    if let Some(existing) = std::env::var_os("LD_LIBRARY_PATH") {
        library_path.extend(std::env::split_paths(&existing));
    }
    let mut cmd = Command::new(tool);
    if let Ok(joined) = std::env::join_paths(library_path) {
        cmd.env("LD_LIBRARY_PATH", joined);
    }
    Ok(cmd)
}

/// Merges `library` into one object at `object` whose only global symbols are
/// [`EXPORTS`] (and what it leaves undefined, such as std's `runtime_entry`).
pub fn export_only(root: &Path, host: &str, library: &Path, object: &Path) -> Result<(), String> {
    let merged = object.with_extension("merged.o");
    let mut lld = toolchain_tool(root, host, "rust-lld")?;
    lld.args(["-flavor", "gnu", "-r", "--whole-archive"]).arg(library).arg("-o").arg(&merged);
    run(lld)?;
    let mut objcopy = toolchain_tool(root, host, "rust-objcopy")?;
    objcopy.arg("--wildcard");
    for symbol in EXPORTS {
        objcopy.arg(OsString::from(format!("--keep-global-symbol={symbol}")));
    }
    objcopy.arg(&merged).arg(object);
    run(objcopy)?;
    let _ = std::fs::remove_file(&merged);
    Ok(())
}
