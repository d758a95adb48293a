//! Builds bootable images of the Bulkhead hypervisor, describes them, and reads them back.
//!
//! Two formats, both booting on BIOS and UEFI machines with GRUB, which loads the hypervisor
//! ELF with `multiboot2` and each partition payload with `module2` and talks over COM1 at
//! 115200 baud so the whole boot can be watched on a serial line; both boot the same
//! [`grub_cfg`], with the hypervisor at [`KERNEL_ISO_PATH`] and the modules under
//! [`MODULES_ISO_DIR`]:
//!
//! - [`Disk`]: a raw GPT disk image to flash onto a board's boot medium. An EFI System
//!   Partition holds GRUB for UEFI and every file GRUB loads; a BIOS boot partition holds
//!   GRUB's i386-pc core image, started by GRUB's boot sector in the protective MBR. Its
//!   bytes depend only on its inputs and [`BuildOptions`] (byte-reproducible).
//! - [`Iso`]: a GRUB rescue ISO (`grub-mkrescue`): a hybrid image with El Torito BIOS boot,
//!   an EFI system partition image, and an MBR for USB sticks. Not byte-reproducible (see
//!   [`Iso::build_with`]).
//!
//! Beside each image goes a [`Manifest`] (`<image>.manifest.json`, see [`manifest`]) naming
//! what is in it with sizes and SHA-256s; [`read_file`] gets a file back out of either format.
//!
//! ```no_run
//! use bulkhead_image::{BuildOptions, Disk};
//! Disk::new("target/x86_64-unknown-none/release/bulkhead-kernel")
//!     .module("guests/demo.elf", "demo partition=0")
//!     .build("out/bulkhead.img".as_ref(), &BuildOptions { source_date_epoch: 1_700_000_000 })?;
//! # Ok::<(), bulkhead_image::Error>(())
//! ```

mod disk;
pub mod flash;
pub mod manifest;
mod read;

pub use disk::{
    BIOS_BOOT_PARTITION_NAME, BIOS_BOOT_PARTITION_TYPE, CYLINDER_BYTES, DISK_SIZE_ALIGN, ESP_LABEL, ESP_PARTITION_NAME,
    ESP_PARTITION_TYPE,
};
pub use manifest::{Manifest, Mismatch, manifest_path};
pub use read::{Format, read_file};

use std::error::Error as StdError;
use std::fmt::{self, Write as _};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the hypervisor ELF lives inside the ISO.
pub const KERNEL_ISO_PATH: &str = "/boot/bulkhead.elf";
/// Folder inside the ISO that holds the multiboot2 modules.
pub const MODULES_ISO_DIR: &str = "/boot/modules";

/// A GRUB platform folder an image needs, and the Debian package that provides it. Without
/// one of them `grub-mkrescue` silently builds an ISO that does not boot on that firmware,
/// so [`Iso::build`] refuses to run instead ([`Disk::build`] too: it takes `boot.img` and
/// the modules of its core images from them).
pub const GRUB_PLATFORMS: [(&str, &str); 2] =
    [("/usr/lib/grub/i386-pc", "grub-pc-bin"), ("/usr/lib/grub/x86_64-efi", "grub-efi-amd64-bin")];

/// A multiboot2 module: a file GRUB loads next to the hypervisor, and the string GRUB
/// passes with it (its "command line"; Bulkhead uses it to name the payload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub path: PathBuf,
    pub string: String,
}

/// What went wrong while building an image.
#[derive(Debug)]
pub enum Error {
    /// A command line or module string GRUB could not pass on unchanged.
    InvalidCommandLine { text: String, reason: String },
    /// An input file (the kernel or a module) could not be read.
    Input { path: PathBuf, source: io::Error },
    /// A GRUB platform folder is missing, so an image would not boot on that firmware.
    MissingPlatform { dir: &'static str, package: &'static str },
    /// A tool could not be started at all.
    ToolNotFound { tool: &'static str, package: &'static str, source: io::Error },
    /// A tool ran and failed.
    ToolFailed { tool: &'static str, command: String, status: String, stderr: String },
    /// Any other file-system error, with what we were doing at the time.
    Io { action: String, source: io::Error },
    /// The image cannot be laid out (an input too large for it), or an image being read is
    /// not what it should be (no partition table, no EFI System Partition, a damaged file
    /// system).
    Image { image: PathBuf, reason: String },
    /// The file asked for is not in the image.
    NotInImage { image: PathBuf, path: String, reason: String },
    /// A manifest is missing, unreadable or malformed.
    Manifest { path: PathBuf, reason: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidCommandLine { text, reason } => {
                write!(f, "invalid command line {text:?}: {reason}")
            }
            Error::Input { path, source } => {
                write!(f, "cannot read image input {}: {source}", path.display())
            }
            Error::MissingPlatform { dir, package } => write!(
                f,
                "{dir} is missing, so the image would not boot there; install the Debian package \
                 `{package}` (sudo apt-get install {package})"
            ),
            Error::ToolNotFound { tool, package, source } => write!(
                f,
                "cannot run `{tool}` ({source}); install the Debian package `{package}` \
                 (sudo apt-get install {package})"
            ),
            Error::ToolFailed { tool, command, status, stderr } => {
                write!(f, "`{tool}` failed ({status})\n  command: {command}")?;
                if stderr.trim().is_empty() {
                    write!(f, "\n  (it wrote nothing to stderr)")
                } else {
                    write!(f, "\n  its stderr:")?;
                    for line in stderr.trim_end().lines() {
                        write!(f, "\n    {line}")?;
                    }
                    Ok(())
                }
            }
            Error::Io { action, source } => write!(f, "{action}: {source}"),
            Error::Image { image, reason } => write!(f, "image {}: {reason}", image.display()),
            Error::NotInImage { image, path, reason } => {
                write!(f, "{path} is not in the image {}: {reason}", image.display())
            }
            Error::Manifest { path, reason } => write!(f, "manifest {}: {reason}", path.display()),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Input { source, .. } | Error::ToolNotFound { source, .. } | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What a build takes besides its inputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// The time every timestamp in the image is set to, in seconds since the Unix epoch (the
    /// `SOURCE_DATE_EPOCH` convention of reproducible builds; `cargo xtask image` passes the
    /// environment variable, else the commit's time).
    pub source_date_epoch: u64,
}

/// What a boot image holds, whatever its format: the hypervisor ELF, its command line and
/// its multiboot2 modules. [`Iso`] and [`Disk`] are this with their format's `build`.
#[derive(Clone, Debug)]
pub struct BootImage<F> {
    kernel: PathBuf,
    cmdline: String,
    modules: Vec<Module>,
    format: std::marker::PhantomData<F>,
}

/// An image format, as a type: [`IsoFormat`] or [`DiskFormat`].
pub trait ImageFormat {
    /// The format as its manifest names it.
    const FORMAT: Format;
}

/// The GRUB rescue ISO format ([`Iso`]).
#[derive(Clone, Copy, Debug)]
pub struct IsoFormat;

impl ImageFormat for IsoFormat {
    const FORMAT: Format = Format::Iso;
}

/// The raw GPT disk image format ([`Disk`]).
#[derive(Clone, Copy, Debug)]
pub struct DiskFormat;

impl ImageFormat for DiskFormat {
    const FORMAT: Format = Format::Disk;
}

/// A GRUB rescue ISO to build.
pub type Iso = BootImage<IsoFormat>;

/// A raw GPT disk image to build (see [`Disk::build`] for what it holds).
pub type Disk = BootImage<DiskFormat>;

impl<F> BootImage<F> {
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        BootImage { kernel: kernel.into(), cmdline: String::new(), modules: Vec::new(), format: Default::default() }
    }

    /// The hypervisor's command line: whitespace-separated words (see [`grub_cfg`]).
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.cmdline = cmdline.into();
        self
    }

    /// Adds a multiboot2 module; modules reach the kernel in the order they were added.
    pub fn module(mut self, path: impl Into<PathBuf>, string: impl Into<String>) -> Self {
        self.modules.push(Module { path: path.into(), string: string.into() });
        self
    }

    pub fn kernel(&self) -> &Path {
        &self.kernel
    }

    pub fn kernel_cmdline(&self) -> &str {
        &self.cmdline
    }

    pub fn modules(&self) -> &[Module] {
        &self.modules
    }

    /// The `grub.cfg` this image boots with (the same for every format).
    pub fn grub_cfg(&self) -> Result<String, Error> {
        grub_cfg(&self.cmdline, &self.modules)
    }
}

impl Iso {
    /// Writes the ISO to `out` (replacing it), staging its files in a temporary folder next
    /// to `out`. Takes a fraction of a second: the hypervisor is hard-linked when it can be,
    /// and no locales, fonts or themes are put on the image.
    pub fn build(&self, out: &Path) -> Result<(), Error> {
        self.build_inner(out, None)
    }

    /// [`Iso::build`] with `SOURCE_DATE_EPOCH` set for `grub-mkrescue` and the tools it runs,
    /// so xorriso dates the files it writes from `options.source_date_epoch`.
    ///
    /// The ISO is still **not byte-reproducible**, and cannot be made so without replacing
    /// `grub-mkrescue` (GRUB 2.06): it stamps the volume with the current time
    /// (`time(NULL)`, ignoring `SOURCE_DATE_EPOCH`), passes that to xorriso as
    /// `--modification-date`, and embeds the same string in both GRUB core images' early
    /// config (`search --fs-uuid`) to find the ISO again at boot; and `mformat` gives the
    /// EFI boot image a fresh volume serial number. Two builds therefore differ in those
    /// bytes and the partition-table checksums over them. Use [`Disk`] where identical
    /// bytes matter.
    pub fn build_with(&self, out: &Path, options: &BuildOptions) -> Result<(), Error> {
        self.build_inner(out, Some(options))
    }

    fn build_inner(&self, out: &Path, options: Option<&BuildOptions>) -> Result<(), Error> {
        let cfg = self.grub_cfg()?;
        for (dir, package) in GRUB_PLATFORMS {
            if !Path::new(dir).is_dir() {
                return Err(Error::MissingPlatform { dir, package });
            }
        }
        check_input(&self.kernel)?;
        for module in &self.modules {
            check_input(&module.path)?;
        }

        let stage = stage_beside(out, ".bulkhead-iso-")?;
        let root = stage.path().join("root");
        let grub_dir = root.join("boot/grub");
        let modules_dir = root.join(MODULES_ISO_DIR.trim_start_matches('/'));
        for dir in [&grub_dir, &modules_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|source| Error::Io { action: format!("cannot create {}", dir.display()), source })?;
        }
        std::fs::write(grub_dir.join("grub.cfg"), cfg)
            .map_err(|source| Error::Io { action: "cannot write grub.cfg".into(), source })?;
        link_or_copy(&self.kernel, &root.join(KERNEL_ISO_PATH.trim_start_matches('/')))?;
        for (index, module) in self.modules.iter().enumerate() {
            let iso_path = module_iso_path(index, &module.path);
            link_or_copy(&module.path, &root.join(iso_path.trim_start_matches('/')))?;
        }

        // grub-mkrescue writes its intermediate files to TMPDIR; keep them in our stage.
        let mut cmd = Command::new("grub-mkrescue");
        cmd.arg("-o").arg(out).args(["--locales=", "--fonts=", "--themes="]).arg(&root).env("TMPDIR", stage.path());
        if let Some(options) = options {
            cmd.env("SOURCE_DATE_EPOCH", options.source_date_epoch.to_string());
        }
        run_tool(cmd, "grub-mkrescue", "grub-common")?;

        match std::fs::metadata(out) {
            Ok(meta) if meta.len() > 0 => Ok(()),
            Ok(_) => Err(Error::ToolFailed {
                tool: "grub-mkrescue",
                command: format!("grub-mkrescue -o {} ...", out.display()),
                status: "exited successfully but wrote an empty ISO".into(),
                stderr: String::new(),
            }),
            Err(source) => Err(Error::Io { action: format!("grub-mkrescue did not write {}", out.display()), source }),
        }
    }
}

/// Where a directly booted Linux kernel lives inside the ISO ([`LinuxIso`]).
pub const LINUX_ISO_PATH: &str = "/boot/vmlinuz";
/// Where its initramfs lives inside the ISO.
pub const INITRD_ISO_PATH: &str = "/boot/initrd";
/// What GRUB prints, followed by the TSC (hex, from `rdmsr`), right before it starts a
/// directly booted Linux kernel.
pub const LINUX_BOOT_TSC_LINE: &str = "bulkhead-image: GRUB starts Linux at tsc ";

/// A GRUB rescue ISO that boots a Linux kernel directly, without the hypervisor (GRUB's
/// `linux` and `initrd` commands): the baseline the Linux partition benchmark compares
/// with (`cargo xtask bench`). Right before `boot` GRUB reads the TSC (`rdmsr`, IA32_TSC)
/// and prints it after [`LINUX_BOOT_TSC_LINE`], so a run on an instruction-counting
/// emulator knows when the kernel started. `grub-mkrescue` puts every GRUB module on the
/// ISO, `linux` and `rdmsr` among them.
#[derive(Clone, Debug)]
pub struct LinuxIso {
    kernel: PathBuf,
    initrd: PathBuf,
    cmdline: String,
}

impl LinuxIso {
    pub fn new(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>, cmdline: impl Into<String>) -> Self {
        LinuxIso { kernel: kernel.into(), initrd: initrd.into(), cmdline: cmdline.into() }
    }

    /// The `grub.cfg` ([`grub_cfg_linux`]).
    pub fn grub_cfg(&self) -> Result<String, Error> {
        grub_cfg_linux(&self.cmdline)
    }

    /// Writes the ISO to `out` (replacing it), as [`Iso::build`] does.
    pub fn build(&self, out: &Path) -> Result<(), Error> {
        let cfg = self.grub_cfg()?;
        let platform = GRUB_PLATFORMS[0];
        if !Path::new(platform.0).is_dir() {
            return Err(Error::MissingPlatform { dir: platform.0, package: platform.1 });
        }
        check_input(&self.kernel)?;
        check_input(&self.initrd)?;
        let stage = stage_beside(out, ".bulkhead-iso-")?;
        let root = stage.path().join("root");
        let grub_dir = root.join("boot/grub");
        std::fs::create_dir_all(&grub_dir)
            .map_err(|source| Error::Io { action: format!("cannot create {}", grub_dir.display()), source })?;
        std::fs::write(grub_dir.join("grub.cfg"), cfg)
            .map_err(|source| Error::Io { action: "cannot write grub.cfg".into(), source })?;
        link_or_copy(&self.kernel, &root.join(LINUX_ISO_PATH.trim_start_matches('/')))?;
        link_or_copy(&self.initrd, &root.join(INITRD_ISO_PATH.trim_start_matches('/')))?;
        let mut cmd = Command::new("grub-mkrescue");
        cmd.arg("-o").arg(out).args(["--locales=", "--fonts=", "--themes="]).arg(&root).env("TMPDIR", stage.path());
        run_tool(cmd, "grub-mkrescue", "grub-common")?;
        match std::fs::metadata(out) {
            Ok(meta) if meta.len() > 0 => Ok(()),
            _ => Err(Error::Io {
                action: format!("grub-mkrescue did not write {}", out.display()),
                source: io::Error::other("no ISO"),
            }),
        }
    }
}

/// The `grub.cfg` that boots the Linux kernel at [`LINUX_ISO_PATH`] with the initramfs at
/// [`INITRD_ISO_PATH`] and `cmdline`: at once, on COM1 like [`grub_cfg`], printing the TSC
/// right before `boot` ([`LINUX_BOOT_TSC_LINE`]).
pub fn grub_cfg_linux(cmdline: &str) -> Result<String, Error> {
    let mut cfg = String::from(
        "# Generated by bulkhead-image; changes are lost on the next build.\n\
         set timeout=0\n\
         set default=0\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial\n\
         terminal_output serial\n",
    );
    let mut line = format!("linux {LINUX_ISO_PATH}");
    for word in cmdline_words(cmdline)? {
        line.push(' ');
        line.push_str(&word);
    }
    let _ = writeln!(cfg, "{line}");
    let _ = writeln!(cfg, "initrd {INITRD_ISO_PATH}");
    // IA32_TSC (SDM Vol. 4, MSR 0x10), into $tsc.
    cfg.push_str("rdmsr -v tsc 0x10\n");
    let _ = writeln!(cfg, "echo \"{LINUX_BOOT_TSC_LINE}$tsc\"");
    cfg.push_str(
        "boot\n\
         echo 'bulkhead-image: GRUB could not boot Linux (see the errors above); halting'\n\
         halt\n",
    );
    Ok(cfg)
}

/// A temporary staging folder next to `out` (created with its parent folder), so the final
/// rename or write stays on one file system; removed when dropped.
pub(crate) fn stage_beside(out: &Path, prefix: &str) -> Result<tempfile::TempDir, Error> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|source| Error::Io {
        action: format!("cannot create the output folder {}", parent.display()),
        source,
    })?;
    tempfile::Builder::new().prefix(prefix).tempdir_in(&parent).map_err(|source| Error::Io {
        action: format!("cannot create a staging folder in {}", parent.display()),
        source,
    })
}

fn check_input(path: &Path) -> Result<(), Error> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(Error::Input { path: path.to_path_buf(), source: io::Error::other("not a regular file") }),
        Err(source) => Err(Error::Input { path: path.to_path_buf(), source }),
    }
}

fn link_or_copy(from: &Path, to: &Path) -> Result<(), Error> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|source| Error::Io { action: format!("cannot copy {} to {}", from.display(), to.display()), source })
}

fn run_tool(mut cmd: Command, tool: &'static str, package: &'static str) -> Result<(), Error> {
    let command = format!("{cmd:?}");
    let output = cmd.stdin(std::process::Stdio::null()).output().map_err(|source| Error::ToolNotFound {
        tool,
        package,
        source,
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::ToolFailed {
            tool,
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// Where module number `index` lives inside the ISO: its file name, made safe for GRUB and
/// ISO 9660, prefixed by its index so two modules with the same name do not collide.
pub fn module_iso_path(index: usize, path: &Path) -> String {
    let name: String = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    let name = if name.is_empty() { "module".into() } else { name };
    format!("{MODULES_ISO_DIR}/{index}-{name}")
}

/// Characters a GRUB script word may contain without quoting.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '=' | ',' | '.' | '/' | ':' | '@')
}

/// Quotes one word for a GRUB script so GRUB passes it on literally: no variable expansion
/// (`$`), no command separators (`;`, `|`, `&`), no comments (`#`), no brace blocks. Plain
/// words stay bare for readability; anything else is single-quoted, and a single quote
/// becomes `'\''` as in sh.
pub fn grub_quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(is_plain) {
        return word.to_string();
    }
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('\'');
    for c in word.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// Splits a command line into the words GRUB will pass on. Runs of whitespace separate
/// words (so the kernel sees single spaces); control characters are refused, because GRUB
/// scripts cannot carry them. GRUB itself puts a backslash before `\`, `'` and `"` in the
/// multiboot2 command line it builds, so the kernel sees `it\'s` for the word `it's`.
fn cmdline_words(text: &str) -> Result<Vec<String>, Error> {
    if let Some(c) = text.chars().find(|c| c.is_control() && !c.is_whitespace()) {
        return Err(Error::InvalidCommandLine {
            text: text.to_string(),
            reason: format!("control character {c:?} cannot be passed through grub.cfg"),
        });
    }
    Ok(text.split_whitespace().map(grub_quote).collect())
}

/// The `grub.cfg` that boots `cmdline` with `modules` (stored as [`module_iso_path`] names).
///
/// Boots at once (no menu), uses COM1 at 115200 baud for both input and output, and if GRUB
/// cannot boot the hypervisor it says so and halts instead of waiting at a prompt, so a
/// broken image fails fast under the test harness.
pub fn grub_cfg(cmdline: &str, modules: &[Module]) -> Result<String, Error> {
    let mut cfg = String::new();
    cfg.push_str(
        "# Generated by bulkhead-image; changes are lost on the next build.\n\
         set timeout=0\n\
         set default=0\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial\n\
         terminal_output serial\n\
         # UEFI has no text mode; without a GOP driver GRUB prints \"no suitable video mode\".\n\
         if [ \"$grub_platform\" = efi ]; then insmod efi_gop; insmod efi_uga; fi\n",
    );
    let mut line = format!("multiboot2 {KERNEL_ISO_PATH}");
    for word in cmdline_words(cmdline)? {
        line.push(' ');
        line.push_str(&word);
    }
    cfg.push_str(&line);
    cfg.push('\n');
    for (index, module) in modules.iter().enumerate() {
        let mut line = format!("module2 {}", module_iso_path(index, &module.path));
        for word in cmdline_words(&module.string)? {
            line.push(' ');
            line.push_str(&word);
        }
        let _ = writeln!(cfg, "{line}");
    }
    cfg.push_str(
        "boot\n\
         echo 'bulkhead-image: GRUB could not boot the hypervisor (see the errors above); halting'\n\
         halt\n",
    );
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot_line(cfg: &str) -> &str {
        cfg.lines().find(|l| l.starts_with("multiboot2 ")).expect("no multiboot2 line")
    }

    #[test]
    fn cfg_boots_at_once_on_serial() {
        let cfg = grub_cfg("exit=emulator", &[]).unwrap();
        let lines: Vec<&str> = cfg.lines().collect();
        for wanted in [
            "set timeout=0",
            "serial --unit=0 --speed=115200",
            "terminal_input serial",
            "terminal_output serial",
            "multiboot2 /boot/bulkhead.elf exit=emulator",
            "boot",
        ] {
            assert!(lines.contains(&wanted), "missing {wanted:?} in:\n{cfg}");
        }
        // The serial setup must come before anything GRUB prints while booting.
        let serial = lines.iter().position(|l| l.starts_with("serial")).unwrap();
        let boot = lines.iter().position(|l| *l == "boot").unwrap();
        let mb = lines.iter().position(|l| l.starts_with("multiboot2")).unwrap();
        assert!(serial < mb && mb < boot);
        assert!(!cfg.contains("module2"));
    }

    #[test]
    fn empty_cmdline_gives_bare_multiboot2() {
        let cfg = grub_cfg("", &[]).unwrap();
        assert_eq!(boot_line(&cfg), "multiboot2 /boot/bulkhead.elf");
        let cfg = grub_cfg("   \t ", &[]).unwrap();
        assert_eq!(boot_line(&cfg), "multiboot2 /boot/bulkhead.elf");
    }

    #[test]
    fn plain_words_stay_bare_and_whitespace_collapses() {
        let cfg = grub_cfg("  exit=emulator   test=skip-ap\tlog=a.b/c:d,e+f@g ", &[]).unwrap();
        assert_eq!(boot_line(&cfg), "multiboot2 /boot/bulkhead.elf exit=emulator test=skip-ap log=a.b/c:d,e+f@g");
    }

    #[test]
    fn grub_metacharacters_are_single_quoted() {
        assert_eq!(grub_quote("a$b"), "'a$b'");
        assert_eq!(grub_quote("${root}"), "'${root}'");
        assert_eq!(grub_quote("x;reboot"), "'x;reboot'");
        assert_eq!(grub_quote("#comment"), "'#comment'");
        assert_eq!(grub_quote("a|b&c"), "'a|b&c'");
        assert_eq!(grub_quote("{x}"), "'{x}'");
        assert_eq!(grub_quote(r"back\slash"), r"'back\slash'");
        assert_eq!(grub_quote("say=\"hi\""), "'say=\"hi\"'");
        assert_eq!(grub_quote("<in>out"), "'<in>out'");
        assert_eq!(grub_quote("ünïcode"), "'ünïcode'");
    }

    #[test]
    fn single_quote_is_closed_escaped_and_reopened() {
        assert_eq!(grub_quote("it's"), r"'it'\''s'");
        assert_eq!(grub_quote("'"), r"''\'''");
        let cfg = grub_cfg("name=it's $x", &[]).unwrap();
        assert_eq!(boot_line(&cfg), r"multiboot2 /boot/bulkhead.elf 'name=it'\''s' '$x'");
    }

    #[test]
    fn control_characters_are_refused() {
        for bad in ["a\u{0}b", "a\u{1b}[0m", "a\u{7f}"] {
            let err = grub_cfg(bad, &[]).unwrap_err();
            assert!(matches!(err, Error::InvalidCommandLine { .. }), "{bad:?}: {err}");
        }
        let err = grub_cfg("", &[Module { path: "m".into(), string: "\u{7}".into() }]).unwrap_err();
        assert!(err.to_string().contains("control character"));
        // Newlines and tabs are whitespace: they separate words, they cannot start a new
        // GRUB command.
        let cfg = grub_cfg("a\nreboot", &[]).unwrap();
        assert_eq!(boot_line(&cfg), "multiboot2 /boot/bulkhead.elf a reboot");
        assert!(!cfg.lines().any(|l| l == "reboot"));
    }

    #[test]
    fn linux_cfg_boots_the_kernel_with_its_initrd_after_printing_the_tsc() {
        let cfg = grub_cfg_linux("console=ttyS0 mem=130M  panic=-1").unwrap();
        let lines: Vec<&str> = cfg.lines().collect();
        let at = |prefix: &str| lines.iter().position(|l| l.starts_with(prefix)).expect(prefix);
        assert_eq!(lines[at("linux ")], "linux /boot/vmlinuz console=ttyS0 mem=130M panic=-1");
        assert_eq!(lines[at("initrd ")], "initrd /boot/initrd");
        assert_eq!(lines[at("rdmsr ")], "rdmsr -v tsc 0x10");
        assert_eq!(lines[at("echo \"bulkhead")], "echo \"bulkhead-image: GRUB starts Linux at tsc $tsc\"");
        assert!(at("linux ") < at("initrd ") && at("initrd ") < at("rdmsr ") && at("rdmsr ") < at("boot"));
        assert!(!cfg.contains("multiboot2"));
        assert!(grub_cfg_linux("a\u{1}b").is_err());
    }

    #[test]
    fn modules_follow_the_kernel_in_order_with_their_strings() {
        let modules = [
            Module { path: "/x/guests/demo.elf".into(), string: "demo partition=0".into() },
            Module { path: "other/demo.elf".into(), string: String::new() },
            Module { path: "weird name$.bin".into(), string: "$HOME".into() },
        ];
        let cfg = grub_cfg("exit=emulator", &modules).unwrap();
        let lines: Vec<&str> = cfg.lines().collect();
        let mb = lines.iter().position(|l| l.starts_with("multiboot2")).unwrap();
        assert_eq!(
            &lines[mb + 1..mb + 4],
            &[
                "module2 /boot/modules/0-demo.elf demo partition=0",
                "module2 /boot/modules/1-demo.elf",
                "module2 /boot/modules/2-weird_name_.bin '$HOME'",
            ]
        );
        assert_eq!(lines[mb + 4], "boot");
    }

    #[test]
    fn missing_inputs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = Iso::new(dir.path().join("no-such-kernel")).build(&dir.path().join("x.iso")).unwrap_err();
        let text = err.to_string();
        // On a machine without the GRUB platforms the platform check comes first.
        assert!(text.contains("no-such-kernel") || text.contains("/usr/lib/grub/"), "{text}");
    }

    #[test]
    fn tool_failure_names_tool_and_stderr() {
        let err = Error::ToolFailed {
            tool: "grub-mkrescue",
            command: "grub-mkrescue -o x.iso root".into(),
            status: "exit status: 1".into(),
            stderr: "xorriso: not found\n".into(),
        };
        let text = err.to_string();
        assert!(text.contains("`grub-mkrescue` failed"));
        assert!(text.contains("xorriso: not found"));
    }

    /// Builds a real ISO (needs grub-mkrescue, xorriso, mtools and both GRUB platforms, which
    /// `cargo xtask test` installs) and checks the files GRUB will read are on it.
    #[test]
    fn builds_hybrid_iso_with_kernel_cfg_and_modules() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("kernel.elf");
        let kernel_bytes: Vec<u8> = b"BULKHEAD-TEST-KERNEL-".iter().copied().cycle().take(64 * 1024).collect();
        std::fs::write(&kernel, &kernel_bytes).unwrap();
        let module = dir.path().join("guest.bin");
        std::fs::write(&module, b"BULKHEAD-TEST-MODULE-CONTENT").unwrap();
        let out = dir.path().join("sub/dir/test.iso");
        let iso = Iso::new(&kernel).cmdline("exit=emulator test=$odd").module(&module, "guest one");
        iso.build(&out).unwrap_or_else(|e| panic!("{e}"));

        let bytes = std::fs::read(&out).unwrap();
        assert!(bytes.len() > 1024 * 1024, "ISO is only {} bytes", bytes.len());
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        // ISO 9660 primary volume descriptor, an MBR boot signature (hybrid, USB-bootable),
        // the EFI boot image and GRUB's BIOS El Torito image name.
        assert_eq!(&bytes[0x8001..0x8006], b"CD001");
        assert_eq!(&bytes[510..512], &[0x55, 0xaa]);
        assert!(has(b"EFI"), "no EFI boot image");
        // Uncompressed files sit verbatim in the image.
        assert!(has(iso.grub_cfg().unwrap().as_bytes()), "grub.cfg missing");
        assert!(has(&kernel_bytes[..4096]), "kernel missing");
        assert!(has(b"BULKHEAD-TEST-MODULE-CONTENT"), "module missing");
        // The staging folder is gone.
        let leftovers: Vec<_> =
            std::fs::read_dir(out.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("test.iso")]);
    }
}
