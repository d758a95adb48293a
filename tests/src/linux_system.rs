//! The Linux assets a checked-in system file names as `@linux/NAME`
//! (`bulkhead_board::LINUX_ASSETS`): Debian's kernel from the asset cache
//! ([`crate::linux_assets`]) and an initramfs built here, in
//! `target/linux-assets/current/` ([`crate::kernel::linux_dir`]). The board crate only
//! resolves the names; [`prepare`] makes the files exist before a build needs them.
//!
//! `@linux/shell-initramfs` is Debian's static busybox with an `/init` that mounts the
//! kernel's file systems, runs the boot steps in `/etc/init.d/` in name order, prints
//! [`crate::initramfs::INIT_MARKER`] and keeps a login-free shell with job control on the console (ttyS0).
//! More files join it through [`SHELL_EXTRAS`].

use std::path::{Path, PathBuf};

use crate::initramfs::{INIT_SETUP, Initramfs, init_shell};
use crate::linux_assets::{self, AssetError, LinuxAssets};

/// The file `@linux/shell-initramfs` names in the asset folder.
pub const SHELL_INITRAMFS_FILE: &str = "shell-initramfs.cpio";

/// Where the shell initramfs's `/init` looks for boot steps: every executable file in it,
/// in name order, runs before the shell starts (a `10-load-module` that runs `insmod`).
pub const INIT_STEPS_DIR: &str = "etc/init.d";

/// An addition to the shell initramfs: given the assets and the archive so far, returns
/// the archive with its files added (a kernel module under `/lib/modules`, a command in
/// `/bin`) and, for something to run at boot, an executable script in [`INIT_STEPS_DIR`].
pub type ShellExtra = fn(&LinuxAssets, Initramfs) -> Result<Initramfs, AssetError>;

/// The additions built into `@linux/shell-initramfs`, in order: the Hyper-V messaging
/// module and the `bulkhead-msg` command, the module loaded at boot when the partition has
/// connections ([`crate::linux_msg::shell_extra`]); Debian's `xen-evtchn`, loaded at boot
/// in a Xen partition ([`crate::linux_msg::xen_shell_extra`]).
pub const SHELL_EXTRAS: &[ShellExtra] = &[crate::linux_msg::shell_extra, crate::linux_msg::xen_shell_extra];

/// `/init` of the shell initramfs. `cttyhack` opens the console's real device
/// (`/dev/ttyS0`, from `/sys/class/tty/console/active`) and `setsid` makes the shell a
/// session leader, so it gets a controlling terminal and job control (Ctrl-C, Ctrl-Z,
/// `fg`); the loop starts a new shell when one exits, since the kernel panics when init
/// ends.
pub fn shell_init_script() -> String {
    format!(
        "#!/bin/sh\n\
         # /init of @linux/shell-initramfs (tests/src/linux_system.rs).\n\
         {INIT_SETUP}\
         for step in /{INIT_STEPS_DIR}/*; do\n\
         \t[ -x \"$step\" ] && \"$step\"\n\
         done\n\
         {}",
        init_shell()
    )
}

/// The shell initramfs: the base system with [`shell_init_script`] as `/init`, an empty
/// [`INIT_STEPS_DIR`] and every one of [`SHELL_EXTRAS`].
pub fn shell_initramfs(assets: &LinuxAssets) -> Result<Initramfs, AssetError> {
    let mut fs = assets
        .initramfs()?
        .file("init", shell_init_script().into_bytes(), 0o755)
        .dir("etc", 0o755)
        .dir(INIT_STEPS_DIR, 0o755);
    for extra in SHELL_EXTRAS {
        fs = extra(assets, fs)?;
    }
    Ok(fs)
}

/// Writes `fs` to `path` unless the file already holds exactly these bytes: a rewrite
/// would make every build of a kernel that names it (a boot module) start over.
fn write_if_changed(fs: &Initramfs, path: &Path) -> Result<(), AssetError> {
    let bytes = fs.to_bytes().map_err(|e| AssetError(format!("cannot build {}: {e}", path.display())))?;
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    fs.write(path).map(|_| ()).map_err(|e| AssetError(format!("cannot write {}: {e}", path.display())))
}

/// Whether a system file's text names any `@linux/` asset.
pub fn names_linux_assets(system_text: &str) -> bool {
    system_text.contains(bulkhead_board::LINUX_PREFIX)
}

/// Makes the `@linux/` assets exist for the system file `config` if it names any: fetches
/// Debian's packages through apt when the cache lacks them
/// ([`linux_assets::shared`]) and builds the shell initramfs. Returns the asset folder
/// (`None` when the file names no Linux asset). An unknown `@linux/` name is left to the
/// configuration check, which reports it with its place in the file.
pub fn prepare(config: &Path) -> Result<Option<PathBuf>, String> {
    let text = std::fs::read_to_string(config).map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    if !names_linux_assets(&text) {
        return Ok(None);
    }
    let assets = linux_assets::shared().map_err(|e| e.to_string())?;
    write_if_changed(&shell_initramfs(assets).map_err(|e| e.to_string())?, &assets.dir.join(SHELL_INITRAMFS_FILE))
        .map_err(|e| e.to_string())?;
    Ok(Some(assets.dir.clone()))
}

/// The Linux command line of the HIL tests: the serial console from the first message, and
/// a panic ends in a reboot (the partition's fault) rather than a hang.
pub const TEST_CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1";

/// The `[[partition]]` table of a Linux partition as the HIL tests' generated system files
/// write it: `name` on `cores` (TOML array text, `"[0, 1]"`), `keys` (more partition keys,
/// each a line), 2 MiB of low memory and 128 MiB at 2 MiB, Debian's kernel `vmlinuz` with
/// `initrd` and the kernel command line `cmdline` ([`TEST_CMDLINE`] in most tests).
pub fn linux_partition_toml(
    name: &str,
    cores: &str,
    keys: &str,
    vmlinuz: &Path,
    initrd: &Path,
    cmdline: &str,
) -> String {
    format!(
        "[[partition]]\n\
         name = \"{name}\"\n\
         cores = {cores}\n\
         {keys}\
         [[partition.memory]]\n\
         guest_base = 0x0\n\
         size = \"2 MiB\"\n\
         [[partition.memory]]\n\
         guest_base = 0x200000\n\
         size = \"128 MiB\"\n\
         large_pages = true\n\
         [partition.payload]\n\
         kind = \"linux\"\n\
         path = {vmlinuz:?}\n\
         initrd = {initrd:?}\n\
         cmdline = {cmdline:?}\n",
        vmlinuz = vmlinuz.display().to_string(),
        initrd = initrd.display().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initramfs::{APPLETS, INIT_MARKER};

    #[test]
    fn every_board_linux_asset_is_a_file_the_tools_make() {
        let names: Vec<&str> = bulkhead_board::LINUX_ASSETS.iter().map(|(_, file)| *file).collect();
        assert_eq!(names, ["vmlinuz", SHELL_INITRAMFS_FILE]);
    }

    #[test]
    fn the_shell_init_runs_its_steps_then_a_shell_with_a_controlling_terminal() {
        let script = shell_init_script();
        let steps = script.find("for step in /etc/init.d/*").unwrap();
        let marker = script.find(INIT_MARKER).unwrap();
        let shell = script.find("setsid cttyhack sh").unwrap();
        assert!(steps < marker && marker < shell, "{script}");
        for command in ["mount", "setsid", "cttyhack", "sh", "sleep", "uname", "nproc", "echo"] {
            assert!(APPLETS.contains(&command), "{command}");
        }
    }

    #[test]
    fn names_are_found_in_the_text() {
        assert!(names_linux_assets("path = \"@linux/vmlinuz\""));
        assert!(!names_linux_assets("path = \"@guests/test-witness\""));
    }

    #[test]
    fn an_unchanged_archive_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.cpio");
        let fs = Initramfs::with_busybox(b"fake".to_vec());
        write_if_changed(&fs, &path).unwrap();
        let first = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_if_changed(&fs, &path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), first);
        write_if_changed(&fs.clone().file("x", vec![1], 0o644), &path).unwrap();
        assert!(crate::initramfs::parse(&std::fs::read(&path).unwrap()).unwrap().iter().any(|e| e.path == "x"));
    }
}
