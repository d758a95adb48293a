//! Linux's side of messaging with another partition, built for the cached kernel: the
//! `bulkhead_msg` kernel module (linux/bulkhead-msg, built against the cached Debian
//! headers with `make`) and the static `bulkhead-msg` command (linux/msg-tool), for a
//! Linux partition's initramfs (the HIL test `linux_msg`, the Linux demo).
//!
//! Both are built under `target/linux-msg/`: the module in a copy of its sources per
//! kernel release (kbuild writes its objects next to the sources, which stay clean), the
//! command by cargo for `x86_64-unknown-linux-gnu` with the C library linked statically
//! (busybox's initramfs has no dynamic loader).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::initramfs::Initramfs;
use crate::kernel::{target_dir, workspace_root};
use crate::linux_assets::{AssetError, LinuxAssets};

/// Where the module's sources are, in the repository.
pub const MODULE_SOURCES: &str = "linux/bulkhead-msg";
/// The module's file name.
pub const MODULE_FILE: &str = "bulkhead_msg.ko";
/// The command's package (and binary) name.
pub const TOOL_PACKAGE: &str = "bulkhead-msg";
/// The target the command is built for (the host's own, no extra rustup target).
pub const TOOL_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Where an initramfs built by [`add_to_initramfs`] has the module and the command.
pub const INITRAMFS_MODULE: &str = "lib/modules/bulkhead_msg.ko";
pub const INITRAMFS_TOOL: &str = "bin/bulkhead-msg";

fn run(mut cmd: Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let output = cmd.output().map_err(|e| format!("cannot run {shown}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{shown} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Builds `bulkhead_msg.ko` against the headers of `assets`' kernel and returns its path
/// (`target/linux-msg/<release>/module/bulkhead_msg.ko`). Needs `make` and the compiler
/// Debian built the kernel with (`crate::host::Purpose::LinuxModule`).
pub fn build_module(assets: &LinuxAssets) -> Result<PathBuf, String> {
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let dir = target_dir().join("linux-msg").join(&assets.selection.release).join("module");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let sources = workspace_root().join(MODULE_SOURCES);
    for file in ["bulkhead_msg.c", "Kbuild"] {
        let (from, to) = (sources.join(file), dir.join(file));
        // Copied only when changed, so that make sees an unchanged source as up to date.
        let new = std::fs::read(&from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
        if std::fs::read(&to).ok().as_ref() != Some(&new) {
            std::fs::write(&to, new).map_err(|e| format!("cannot write {}: {e}", to.display()))?;
        }
    }
    let mut make = Command::new("make");
    make.arg("-C").arg(assets.kbuild_dir()).arg(format!("M={}", dir.display())).arg("modules");
    run(make)?;
    Ok(dir.join(MODULE_FILE))
}

/// Builds the `bulkhead-msg` command as a static executable and returns its path
/// (`target/linux-msg/tool/x86_64-unknown-linux-gnu/release/bulkhead-msg`; a target folder
/// of its own, so the static flag does not rebuild the workspace's host crates).
pub fn build_tool() -> Result<PathBuf, String> {
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let target = target_dir().join("linux-msg/tool");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", TOOL_PACKAGE, "--release", "--target", TOOL_TARGET])
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        // Small: the initramfs is copied into the partition at every start.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true");
    run(cmd)?;
    let tool = target.join(TOOL_TARGET).join("release").join(TOOL_PACKAGE);
    check_static(&tool)?;
    Ok(tool)
}

/// Refuses an executable with a program interpreter (PT_INTERP): the initramfs has no
/// dynamic loader, so such a binary would fail there with a puzzling "not found".
fn check_static(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let u16_at = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |at: usize| bytes.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return Err(format!("{}: not an ELF64 file", path.display()));
    };
    const PT_INTERP: u32 = 3;
    for i in 0..usize::from(phnum) {
        if u32_at(phoff as usize + i * usize::from(phentsize)) == Some(PT_INTERP) {
            return Err(format!("{}: linked dynamically (is libc6-dev installed?)", path.display()));
        }
    }
    Ok(())
}

/// Adds the module ([`INITRAMFS_MODULE`]) and the command ([`INITRAMFS_TOOL`]), built
/// for `assets`' kernel, to `initramfs`.
pub fn add_to_initramfs(assets: &LinuxAssets, initramfs: Initramfs) -> Result<Initramfs, String> {
    let module = build_module(assets)?;
    let tool = build_tool()?;
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    Ok(initramfs.file(INITRAMFS_MODULE, read(&module)?, 0o644).file(INITRAMFS_TOOL, read(&tool)?, 0o755))
}

/// The boot step the shell initramfs runs ([`crate::linux_system::INIT_STEPS_DIR`]): loads
/// the module when the hypervisor describes connections for this partition (its ACPI
/// BHCN table, which Linux lists under `/sys/firmware/acpi/tables/`); a partition without
/// connections boots without it.
pub const LOAD_STEP: &str = "etc/init.d/10-bulkhead-msg";

/// The script of [`LOAD_STEP`].
pub fn load_step_script() -> String {
    format!(
        "#!/bin/sh\n\
         # Loads the Hyper-V messaging module when the partition has connections\n\
         # (tests/src/linux_msg.rs, docs/linux.md).\n\
         # A Xen partition has the table too, but no Hyper-V interface: xen-evtchn instead.\n\
         if [ -e /sys/firmware/acpi/tables/BHCN ] && [ \"$(cat /sys/hypervisor/type 2>/dev/null)\" != xen ]; then\n\
         \tinsmod /{INITRAMFS_MODULE} && echo \"bulkhead-msg: module loaded, devices in /dev/bulkhead\"\n\
         fi\n"
    )
}

/// The shell initramfs's messaging addition ([`crate::linux_system::SHELL_EXTRAS`]): the
/// module, the command and [`LOAD_STEP`].
pub fn shell_extra(assets: &LinuxAssets, initramfs: Initramfs) -> Result<Initramfs, AssetError> {
    Ok(add_to_initramfs(assets, initramfs).map_err(AssetError)?.file(LOAD_STEP, load_step_script().into_bytes(), 0o755))
}

/// The boot step that loads Debian's `xen-evtchn` module in a partition with the Xen
/// interface (Linux's `/sys/hypervisor/type` says `xen`), for `bulkhead-msg xen-event-ping`
/// (docs/linux.md, "Linux as a Xen guest").
pub const XEN_LOAD_STEP: &str = "etc/init.d/20-xen-evtchn";

/// The script of [`XEN_LOAD_STEP`]; `insmod` is the line [`crate::initramfs::insmod_lines`]
/// would run for each module.
pub fn xen_load_step_script(release: &str, modules: &[String]) -> String {
    let mut script = String::from(
        "#!/bin/sh\n\
         # Loads xen-evtchn in a Xen partition (tests/src/linux_msg.rs, docs/linux.md).\n\
         [ \"$(cat /sys/hypervisor/type 2>/dev/null)\" = xen ] || exit 0\n",
    );
    for name in modules {
        script.push_str(&format!("insmod /{} || exit 1\n", crate::initramfs::module_path(release, name)));
    }
    script.push_str("echo \"xen-evtchn: module loaded, /dev/xen/evtchn\"\n");
    script
}

/// The shell initramfs's Xen addition ([`crate::linux_system::SHELL_EXTRAS`]): Debian's
/// `xen-evtchn` module and [`XEN_LOAD_STEP`] (the command comes with [`shell_extra`]).
pub fn xen_shell_extra(assets: &LinuxAssets, initramfs: Initramfs) -> Result<Initramfs, AssetError> {
    let release = &assets.selection.release;
    let modules = assets.modules(&["xen-evtchn"])?;
    let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
    Ok(initramfs.modules(release, &modules).file(
        XEN_LOAD_STEP,
        xen_load_step_script(release, &names).into_bytes(),
        0o755,
    ))
}
