//! Debian's Linux for Linux partitions, obtained through apt (the machine's package source)
//! and nothing else, and cached under `target/linux-assets/`.
//!
//! [`fetch`] asks apt which kernel `linux-image-amd64` stands for now (`apt-cache show`),
//! with the headers of the same build (`linux-headers-R`, its `-common` part and the
//! `linux-kbuild` tools it needs, for building a module) and `busybox-static`; downloads
//! the packages with `apt-get download` (no root needed); and unpacks what Linux partitions
//! need into `target/linux-assets/<kernel package version>/`:
//!
//! - `vmlinuz`, `config`, `System.map` (Debian ships a stub; the real one is in the `-dbg`
//!   package): streamed out of the image package, whose ~400 MB of modules are skipped;
//! - `modules/NAME.ko`: the kernel modules of [`MODULES`] and every module they depend on,
//!   from the same stream of the image package. The package has no `modules.dep` (Debian's
//!   `depmod` writes it at installation), so the dependencies are read where `depmod`
//!   reads them: the `depends=` entry of each module's `.modinfo` section;
//! - `busybox`: the static busybox the initramfs is built from ([`crate::initramfs`]);
//! - `headers/`: the three header packages unpacked into one tree, so their relative links
//!   resolve; [`LinuxAssets::kbuild_dir`] is the folder to build a module against
//!   (`make -C KBUILD_DIR M=$PWD modules`);
//! - `assets.txt`: the packages and versions, written last. A later call whose packages
//!   and versions match reuses the folder without downloading anything.
//!
//! Packages are unpacked with `dpkg-deb` (part of every Debian system, like apt): it
//! handles every compression a `.deb` may use, and `--fsys-tarfile` streams the files so
//! the `tar` crate can pick the few wanted ones out of the image package.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use crate::initramfs::Initramfs;
use crate::kernel;

/// The package that names Debian's current amd64 kernel.
pub const IMAGE_META_PACKAGE: &str = "linux-image-amd64";
/// The package with the static busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// The cache folder, under cargo's target folder.
pub const CACHE_DIR: &str = "linux-assets";
/// The list of packages and versions in a cached folder, written once it is complete.
pub const MANIFEST_FILE: &str = "assets.txt";
/// A link in the cache folder to the folder last fetched or used: a fixed path for system
/// files and scripts (`target/linux-assets/current/vmlinuz`).
pub const CURRENT_LINK: &str = "current";
/// The base initramfs [`LinuxAssets::base_initramfs`] writes into the cached folder.
pub const INITRAMFS_FILE: &str = "initramfs.cpio";
/// The kernel modules the cache holds, with every module they depend on (Debian builds
/// them as modules, `CONFIG_NAME=m`): `e1000e`, the driver of the Intel 82574 NIC that
/// QEMU models (an assigned PCI function in a Linux partition); `watchdog`, the watchdog
/// core, which `bulkhead_msg`'s watchdog device needs loaded first (docs/linux.md,
/// "Supervision"); `xen-evtchn`, `/dev/xen/evtchn`, through which a Linux partition with
/// the Xen interface binds its event connections (docs/linux.md, "Linux as a Xen guest").
pub const MODULES: &[&str] = &["e1000e", "watchdog", "xen-evtchn"];
/// The cache's folder of kernel modules, `NAME.ko` each.
pub const MODULES_DIR: &str = "modules";

/// A problem obtaining the assets, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetError(pub String);

impl fmt::Display for AssetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Linux assets: {}", self.0)
    }
}

impl std::error::Error for AssetError {}

fn err<T>(message: impl Into<String>) -> Result<T, AssetError> {
    Err(AssetError(message.into()))
}

/// One Debian package at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// The `.deb`'s size in bytes (from apt's lists; 0 when read from a cached manifest).
    pub size: u64,
}

impl fmt::Display for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

/// The packages that make up one set of assets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The kernel release, e.g. `6.1.0-57-amd64` (`uname -r`, the `/lib/modules` folder).
    pub release: String,
    pub image: Package,
    pub headers: Package,
    pub headers_common: Package,
    pub kbuild: Package,
    pub busybox: Package,
}

impl Selection {
    pub fn packages(&self) -> [&Package; 5] {
        [&self.image, &self.headers, &self.headers_common, &self.kbuild, &self.busybox]
    }

    /// The cache folder's name: the kernel package's version, made safe for a path.
    pub fn folder_name(&self) -> String {
        safe_file_name(&self.image.version)
    }

    /// The manifest text: the release, then one `package version` line each.
    pub fn manifest(&self) -> String {
        let mut text = format!("release {}\n", self.release);
        for p in self.packages() {
            text.push_str(&format!("{} {}\n", p.name, p.version));
        }
        text
    }

    /// Reads a manifest back (sizes are unknown there).
    pub fn from_manifest(text: &str) -> Option<Selection> {
        let mut lines = text.lines().map(|l| l.split_once(' '));
        let release = match lines.next()?? {
            ("release", r) => r.to_string(),
            _ => return None,
        };
        let mut next = || lines.next().flatten().map(|(n, v)| Package { name: n.into(), version: v.into(), size: 0 });
        let selection = Selection {
            release,
            image: next()?,
            headers: next()?,
            headers_common: next()?,
            kbuild: next()?,
            busybox: next()?,
        };
        Some(selection)
    }
}

/// Assets ready on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxAssets {
    /// `target/linux-assets/<version>/`.
    pub dir: PathBuf,
    pub selection: Selection,
    /// Whether this call downloaded them (false: taken from the cache).
    pub fetched: bool,
}

impl LinuxAssets {
    /// The kernel (a bzImage).
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    /// The kernel's build configuration.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config")
    }

    /// `System.map` as the package ships it (Debian's is a one-line stub).
    pub fn system_map(&self) -> PathBuf {
        self.dir.join("System.map")
    }

    /// Debian's static busybox.
    pub fn busybox(&self) -> PathBuf {
        self.dir.join("busybox")
    }

    /// A cached kernel module (`-` and `_` are the same in module names; the file has `_`).
    pub fn module_file(&self, name: &str) -> PathBuf {
        self.dir.join(MODULES_DIR).join(format!("{}.ko", module_name(name)))
    }

    /// The cached modules `names` and every module they depend on, in an order `insmod`
    /// can load them (each after its dependencies): (module name, the `.ko` file's bytes).
    /// A module not in the cache (not named in [`MODULES`]) is an error.
    pub fn modules(&self, names: &[&str]) -> Result<Vec<(String, Vec<u8>)>, AssetError> {
        let mut files = std::collections::BTreeMap::new();
        let order = load_order(names, |name| {
            let path = self.module_file(name);
            let bytes = std::fs::read(&path).map_err(|e| {
                AssetError(format!("no module {name} in the cache ({}: {e}); is it in MODULES?", path.display()))
            })?;
            let depends = module_depends(&bytes).map_err(|e| AssetError(format!("{}: {e}", path.display())))?;
            files.insert(module_name(name), bytes);
            Ok(depends)
        })?;
        Ok(order.into_iter().map(|name| (name.clone(), files.remove(&name).unwrap_or_default())).collect())
    }

    /// The root of the unpacked header packages.
    pub fn headers_root(&self) -> PathBuf {
        self.dir.join("headers")
    }

    /// The folder to build an out-of-tree module in: `make -C <this> M=<module dir> modules`
    /// (needs the host's `gcc-12` and `make`, as the `linux-headers` package does).
    pub fn kbuild_dir(&self) -> PathBuf {
        self.headers_root().join("usr/src").join(format!("linux-headers-{}", self.selection.release))
    }

    /// Whether the kernel configuration has `CONFIG_name=y`.
    pub fn config_enabled(&self, name: &str) -> Result<bool, AssetError> {
        let text = std::fs::read_to_string(self.config())
            .map_err(|e| AssetError(format!("cannot read {}: {e}", self.config().display())))?;
        Ok(config_has(&text, name))
    }

    /// The base initramfs (busybox, its applets, `/init`), to add files to.
    pub fn initramfs(&self) -> Result<Initramfs, AssetError> {
        let busybox = std::fs::read(self.busybox())
            .map_err(|e| AssetError(format!("cannot read {}: {e}", self.busybox().display())))?;
        Ok(Initramfs::with_busybox(busybox))
    }

    /// Writes the base initramfs to `<dir>/initramfs.cpio` (every time: it takes
    /// milliseconds, and the folder may be shared by parallel runs, so it is replaced
    /// atomically) and returns its path.
    pub fn base_initramfs(&self) -> Result<PathBuf, AssetError> {
        let path = self.dir.join(INITRAMFS_FILE);
        self.initramfs()?.write(&path).map_err(|e| AssetError(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }

    /// Checks the kernel can boot the initramfs as built (uncompressed cpio).
    pub fn check_initramfs_support(&self) -> Result<(), AssetError> {
        for option in ["BLK_DEV_INITRD", "DEVTMPFS", "SERIAL_8250_CONSOLE"] {
            if !self.config_enabled(option)? {
                return err(format!(
                    "{} is built without CONFIG_{option}=y, which the initramfs and console need",
                    self.selection.image
                ));
            }
        }
        Ok(())
    }

    /// The files a complete cached folder holds.
    fn required_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.vmlinuz(), self.config(), self.busybox(), self.kbuild_dir().join("Makefile")];
        files.extend(MODULES.iter().map(|m| self.module_file(m)));
        files
    }
}

/// `target/linux-assets/`.
pub fn cache_root() -> PathBuf {
    kernel::target_dir().join(CACHE_DIR)
}

/// [`fetch`] once per process, with progress on stderr: for tests, which may ask from
/// several threads.
pub fn shared() -> Result<&'static LinuxAssets, AssetError> {
    static ASSETS: OnceLock<Result<LinuxAssets, AssetError>> = OnceLock::new();
    ASSETS.get_or_init(|| fetch(&cache_root(), &mut |line| eprintln!("{line}"))).as_ref().map_err(Clone::clone)
}

/// Resolves the packages through apt and returns the cached assets, downloading and
/// unpacking them first if the cache does not hold these versions. `progress` gets one line
/// per step. Parallel callers (processes too) wait for each other on a lock file.
pub fn fetch(root: &Path, progress: &mut dyn FnMut(&str)) -> Result<LinuxAssets, AssetError> {
    for (tool, package) in [("apt-cache", "apt"), ("apt-get", "apt"), ("dpkg-deb", "dpkg")] {
        if !program_exists(tool) {
            return err(format!(
                "`{tool}` is not installed; the kernel, headers and busybox come from Debian's packages \
                 through apt, so this needs a Debian system with the `{package}` package"
            ));
        }
    }
    std::fs::create_dir_all(root).map_err(|e| AssetError(format!("cannot create {}: {e}", root.display())))?;
    let _lock = Lock::take(&root.join(".lock"), progress)?;
    let selection = match resolve() {
        Ok(selection) => selection,
        Err(e) => {
            // apt cannot say what is current (no package lists); a cached set still serves.
            let Some(cached) = newest_cached(root) else { return Err(e) };
            progress(&format!("{e}\nusing the cached {} instead", cached.dir.display()));
            return Ok(cached);
        }
    };
    let assets = LinuxAssets { dir: root.join(selection.folder_name()), selection, fetched: false };
    let assets = if is_complete(&assets) {
        progress(&format!(
            "Linux assets: cached in {} ({}, {})",
            assets.dir.display(),
            assets.selection.image,
            assets.selection.busybox
        ));
        assets
    } else {
        download_and_unpack(root, assets, progress)?
    };
    point_current(root, &assets)?;
    Ok(assets)
}

/// Points `root/current` at the assets' folder (a relative link, replaced atomically).
fn point_current(root: &Path, assets: &LinuxAssets) -> Result<(), AssetError> {
    let link = root.join(CURRENT_LINK);
    let tmp = root.join(format!(".{CURRENT_LINK}-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(assets.selection.folder_name(), &tmp)
        .and_then(|()| std::fs::rename(&tmp, &link))
        .map_err(|e| AssetError(format!("cannot point {} at {}: {e}", link.display(), assets.dir.display())))
}

fn is_complete(assets: &LinuxAssets) -> bool {
    let manifest = std::fs::read_to_string(assets.dir.join(MANIFEST_FILE)).unwrap_or_default();
    manifest == assets.selection.manifest() && assets.required_files().iter().all(|f| f.is_file())
}

/// The most recently written complete cached folder, if any.
fn newest_cached(root: &Path) -> Option<LinuxAssets> {
    let mut best: Option<(std::time::SystemTime, LinuxAssets)> = None;
    // Folders only: `current` is a link to one of them.
    for entry in std::fs::read_dir(root).ok()?.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
        let manifest = entry.path().join(MANIFEST_FILE);
        let Some(selection) = std::fs::read_to_string(&manifest).ok().and_then(|t| Selection::from_manifest(&t)) else {
            continue;
        };
        let assets = LinuxAssets { dir: entry.path(), selection, fetched: false };
        let time = std::fs::metadata(&manifest).and_then(|m| m.modified()).ok()?;
        if is_complete(&assets) && best.as_ref().is_none_or(|(t, _)| time > *t) {
            best = Some((time, assets));
        }
    }
    best.map(|(_, a)| a)
}

/// Asks apt for the packages (its candidate versions). Three `apt-cache` calls, since each
/// reads all of apt's lists (about half a second).
pub fn resolve() -> Result<Selection, AssetError> {
    let [meta, busybox] = apt_show([IMAGE_META_PACKAGE, BUSYBOX_PACKAGE])?;
    let depends = meta.field("Depends").unwrap_or("");
    let Some(image_dep) = parse_depends(depends).into_iter().flatten().find(|d| d.name.starts_with("linux-image-"))
    else {
        return err(format!("{IMAGE_META_PACKAGE} depends on no linux-image-* package: `Depends: {depends}`"));
    };
    let Some(release) =
        image_dep.name.strip_prefix("linux-image-").map(|r| r.trim_end_matches("-unsigned").to_string())
    else {
        return err(format!("unexpected kernel package name {}", image_dep.name));
    };
    let [image, headers_stanza] = apt_show([image_dep.name.as_str(), &format!("linux-headers-{release}")])?;
    let image = image.package()?;
    let headers = headers_stanza.package()?;
    let deps: Vec<Dependency> =
        parse_depends(headers_stanza.field("Depends").unwrap_or("")).into_iter().flatten().collect();
    let find =
        |prefix: &str, suffix: &str| match deps.iter().find(|d| d.name.starts_with(prefix) && d.name.ends_with(suffix))
        {
            Some(d) => Ok(d.name.clone()),
            None => err(format!("{} depends on no {prefix}*{suffix} package", headers.name)),
        };
    let [headers_common, kbuild] =
        apt_show([find("linux-headers-", "-common")?.as_str(), &find("linux-kbuild-", "")?])?;
    let (headers_common, kbuild, busybox) = (headers_common.package()?, kbuild.package()?, busybox.package()?);
    // One kernel build: the headers must be of the image's version, or a module built
    // against them will not load.
    for p in [&headers, &headers_common, &kbuild] {
        if p.version != image.version {
            return err(format!(
                "apt offers {} but {}: the headers must be of the kernel's version; \
                 run `apt-get update` and try again",
                image, p
            ));
        }
    }
    Ok(Selection { release, image, headers, headers_common, kbuild, busybox })
}

/// One package stanza of `apt-cache show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza(Vec<(String, String)>);

impl Stanza {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn package(&self) -> Result<Package, AssetError> {
        let get = |f: &str| self.field(f).ok_or_else(|| AssetError(format!("apt-cache gave no `{f}` field")));
        let size = get("Size")?.parse().map_err(|_| AssetError(format!("bad Size {:?}", self.field("Size"))))?;
        Ok(Package { name: get("Package")?.to_string(), version: get("Version")?.to_string(), size })
    }
}

/// Parses Debian control-file stanzas (`Field: value`, continuation lines begin with
/// white space, stanzas are separated by blank lines).
pub fn parse_stanzas(text: &str) -> Vec<Stanza> {
    let mut out = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !fields.is_empty() {
                out.push(Stanza(std::mem::take(&mut fields)));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
        } else if let Some((key, value)) = line.split_once(':') {
            fields.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    if !fields.is_empty() {
        out.push(Stanza(fields));
    }
    out
}

/// One alternative of a `Depends` field: `name (op version)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    /// (`=`, `>=`, ..., version)
    pub version: Option<(String, String)>,
}

/// Parses a `Depends` field: a list (`,`) of alternatives (`|`).
pub fn parse_depends(field: &str) -> Vec<Vec<Dependency>> {
    field
        .split(',')
        .filter(|g| !g.trim().is_empty())
        .map(|group| {
            group
                .split('|')
                .map(|alt| {
                    let alt = alt.trim();
                    let (name, rest) = alt.split_once('(').unwrap_or((alt, ""));
                    // `name:any` names the architecture; `[arch]` lists restrict it.
                    let name = name.split([':', '[']).next().unwrap_or("").trim().to_string();
                    let version = rest.trim_end_matches(')').trim().split_once(' ').map(|(op, v)| {
                        let op = op.trim().to_string();
                        (op, v.trim().to_string())
                    });
                    Dependency { name, version }
                })
                .collect()
        })
        .collect()
}

/// `apt-cache show --no-all-versions PACKAGE...`: the candidate versions' stanzas, in the
/// order asked.
fn apt_show<const N: usize>(packages: [&str; N]) -> Result<[Stanza; N], AssetError> {
    let output = Command::new("apt-cache")
        .args(["show", "--no-all-versions"])
        .args(packages)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| AssetError(format!("cannot run apt-cache: {e}")))?;
    let stanzas = parse_stanzas(&String::from_utf8_lossy(&output.stdout));
    let mut out = Vec::new();
    for package in packages {
        match stanzas.iter().find(|s| s.field("Package") == Some(package)) {
            Some(stanza) => out.push(stanza.clone()),
            None => {
                return err(format!(
                    "apt knows no package `{package}` ({}): its package lists are missing or stale; \
                     run `apt-get update` (as root) and try again",
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
        }
    }
    Ok(out.try_into().unwrap_or_else(|_| unreachable!("one stanza per package")))
}

/// The name apt gives the downloaded file: `name_version_arch.deb`, with the version's `:`
/// written as `%3a`.
pub fn deb_file_prefix(package: &Package) -> String {
    format!("{}_{}_", package.name, package.version.replace(':', "%3a"))
}

fn safe_file_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.+~".contains(c) { c } else { '_' }).collect()
}

fn download_and_unpack(
    root: &Path,
    mut assets: LinuxAssets,
    progress: &mut dyn FnMut(&str),
) -> Result<LinuxAssets, AssetError> {
    let debs = root.join("debs");
    let partial = root.join(format!(".partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    for dir in [&debs, &partial] {
        std::fs::create_dir_all(dir).map_err(|e| AssetError(format!("cannot create {}: {e}", dir.display())))?;
    }
    let selection = assets.selection.clone();
    let total: u64 = selection.packages().iter().map(|p| p.size).sum();
    progress(&format!(
        "Linux assets: fetching {} packages through apt ({}) into {}",
        selection.packages().len(),
        mib(total),
        debs.display()
    ));
    let started = Instant::now();
    let files = download(&selection.packages(), &debs, progress)?;
    progress(&format!("Linux assets: downloaded in {:.1} s; unpacking", started.elapsed().as_secs_f64()));

    let unpacking = Instant::now();
    let release = &selection.release;
    extract_files(
        &files[0],
        &[
            (format!("boot/vmlinuz-{release}"), partial.join("vmlinuz"), true),
            (format!("boot/config-{release}"), partial.join("config"), true),
            (format!("boot/System.map-{release}"), partial.join("System.map"), false),
        ],
    )?;
    extract_modules(&files[0], release, MODULES, &partial.join(MODULES_DIR))?;
    extract_files(&files[4], &[("bin/busybox".to_string(), partial.join("busybox"), true)])?;
    let headers = partial.join("headers");
    for deb in &files[1..4] {
        run_quiet(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&headers))?;
    }
    fix_headers_makefile(&headers, &selection)?;
    std::fs::write(partial.join(MANIFEST_FILE), selection.manifest())
        .map_err(|e| AssetError(format!("cannot write the manifest: {e}")))?;

    let _ = std::fs::remove_dir_all(&assets.dir);
    std::fs::rename(&partial, &assets.dir)
        .map_err(|e| AssetError(format!("cannot move {} to {}: {e}", partial.display(), assets.dir.display())))?;
    // The unpacked files are the cache; the packages are not needed again.
    for file in &files {
        let _ = std::fs::remove_file(file);
    }
    progress(&format!(
        "Linux assets: unpacked in {:.1} s into {}",
        unpacking.elapsed().as_secs_f64(),
        assets.dir.display()
    ));
    assets.fetched = true;
    Ok(assets)
}

/// The downloaded file of `package` in `dir`, if it is there.
fn deb_in(dir: &Path, package: &Package) -> Option<PathBuf> {
    let prefix = deb_file_prefix(package);
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb")))
}

/// `apt-get download NAME=VERSION...` into `dir` for the packages not already there (one
/// call: apt fetches them in parallel), with apt's `Get:` lines as progress; returns the
/// files in the order of `packages`.
fn download(packages: &[&Package], dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<Vec<PathBuf>, AssetError> {
    let missing: Vec<String> =
        packages.iter().filter(|p| deb_in(dir, p).is_none()).map(|p| format!("{}={}", p.name, p.version)).collect();
    if !missing.is_empty() {
        let shown = format!("apt-get download {}", missing.join(" "));
        progress(&format!("  $ {shown}"));
        let mut child = Command::new("apt-get")
            .args(["download", "-q"])
            .args(&missing)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| AssetError(format!("cannot run apt-get: {e}")))?;
        // stderr is read on a thread so a chatty apt cannot block on a full pipe.
        let mut stderr = child.stderr.take().expect("piped");
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        if let Some(stdout) = child.stdout.take() {
            use std::io::BufRead;
            for line in io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("Get:") || line.starts_with("Fetched") {
                    progress(&format!("  {line}"));
                }
            }
        }
        let status = child.wait().map_err(|e| AssetError(format!("cannot wait for apt-get: {e}")))?;
        let errors = errors.join().unwrap_or_default();
        if !status.success() {
            return err(format!(
                "`{shown}` failed ({status}):\n{}\nIf apt cannot find a package or reach its source, \
                 run `apt-get update` (as root) and try again.",
                errors.trim()
            ));
        }
    }
    packages
        .iter()
        .map(|p| match deb_in(dir, p) {
            Some(file) => Ok(file),
            None => err(format!("apt-get downloaded {p} but no {}*.deb is in {}", deb_file_prefix(p), dir.display())),
        })
        .collect()
}

/// Streams the files of `deb` (`dpkg-deb --fsys-tarfile`) and writes each wanted one
/// (archive path without `./`, destination, required) to its destination; stops reading
/// once all are found. A required file that is missing is an error.
fn extract_files(deb: &Path, wanted: &[(String, PathBuf, bool)]) -> Result<(), AssetError> {
    let mut found = vec![false; wanted.len()];
    stream_files(deb, &mut |path| {
        let i = wanted.iter().position(|(p, _, _)| p == path)?;
        found[i] = true;
        Some((wanted[i].1.clone(), found.iter().all(|f| *f)))
    })?;
    for ((path, _, required), found) in wanted.iter().zip(&found) {
        if *required && !found {
            return err(format!("{} has no ./{path}", deb.display()));
        }
    }
    Ok(())
}

/// Streams the files of `deb` (`dpkg-deb --fsys-tarfile`); `pick` gets each path (without
/// `./`) and says where to write that file and whether it is the last one wanted (the
/// stream stops there), or `None` to skip it. Modes are kept.
fn stream_files(deb: &Path, pick: &mut dyn FnMut(&str) -> Option<(PathBuf, bool)>) -> Result<(), AssetError> {
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| AssetError(format!("cannot run dpkg-deb: {e}")))?;
    let stdout = child.stdout.take().expect("piped");
    let mut done = false;
    let result = (|| -> io::Result<()> {
        let mut archive = tar::Archive::new(stdout);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.to_string_lossy().trim_start_matches("./").to_string();
            if let Some((dest, last)) = pick(&path) {
                let mut out = File::create(&dest)?;
                io::copy(&mut entry, &mut out)?;
                if let Ok(mode) = entry.header().mode() {
                    use std::os::unix::fs::PermissionsExt;
                    out.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))?;
                }
                if last {
                    done = true;
                    return Ok(());
                }
            }
        }
        Ok(())
    })();
    // Stop dpkg-deb if it is still streaming what is not needed.
    let _ = child.kill();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let _ = child.wait();
    // A read error after everything wanted was found is dpkg-deb being stopped.
    match result {
        Err(e) if !done => err(format!("cannot read {} with dpkg-deb: {e} {}", deb.display(), stderr.trim())),
        _ => Ok(()),
    }
}

/// Writes the modules `names` of kernel `release` and every module they depend on from
/// the image package `deb` into `dest` as `NAME.ko`: one pass over the package for the
/// modules named, then one more for each round of dependencies not yet there (none, for
/// `e1000e`: its PTP and PPS dependencies are built into Debian's kernel).
fn extract_modules(deb: &Path, release: &str, names: &[&str], dest: &Path) -> Result<(), AssetError> {
    std::fs::create_dir_all(dest).map_err(|e| AssetError(format!("cannot create {}: {e}", dest.display())))?;
    let prefix = format!("lib/modules/{release}/");
    let mut wanted: Vec<String> = names.iter().map(|n| module_name(n)).collect();
    while !wanted.is_empty() {
        let mut missing = wanted.clone();
        stream_files(deb, &mut |path| {
            let stem = path.strip_prefix(&prefix)?.rsplit('/').next()?.strip_suffix(".ko")?;
            let i = missing.iter().position(|m| *m == module_name(stem))?;
            let name = missing.swap_remove(i);
            Some((dest.join(format!("{name}.ko")), missing.is_empty()))
        })?;
        if !missing.is_empty() {
            return err(format!("{} has no module {} under ./{prefix}", deb.display(), missing.join(", ")));
        }
        let mut next = Vec::new();
        for name in &wanted {
            let path = dest.join(format!("{name}.ko"));
            let bytes = std::fs::read(&path).map_err(|e| AssetError(format!("cannot read {}: {e}", path.display())))?;
            for dep in module_depends(&bytes).map_err(|e| AssetError(format!("{}: {e}", path.display())))? {
                if !dest.join(format!("{dep}.ko")).is_file() && !next.contains(&dep) {
                    next.push(dep);
                }
            }
        }
        wanted = next;
    }
    Ok(())
}

/// A module's name as the kernel spells it: `-` becomes `_` (`scripts/mod/modpost.c`).
pub fn module_name(name: &str) -> String {
    name.replace('-', "_")
}

/// The modules a `.ko` file depends on: its `.modinfo` section's `depends=` entry, a comma
/// list (empty when none), as `depmod` reads it.
pub fn module_depends(ko: &[u8]) -> Result<Vec<String>, String> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(ko).map_err(|e| format!("not an ELF module: {e}"))?;
    let section = file.section_by_name(".modinfo").ok_or("no .modinfo section")?;
    let data = section.data().map_err(|e| format!("cannot read .modinfo: {e}"))?;
    modinfo_depends(data).ok_or_else(|| "no depends= in .modinfo".to_string())
}

/// The `depends=` list of a `.modinfo` section (NUL-separated `key=value` strings).
pub fn modinfo_depends(modinfo: &[u8]) -> Option<Vec<String>> {
    let entry = modinfo.split(|&b| b == 0).find_map(|e| e.strip_prefix(b"depends="))?;
    let list = String::from_utf8_lossy(entry);
    Some(list.split(',').filter(|d| !d.is_empty()).map(module_name).collect())
}

/// The modules `names` and their dependencies (`depends` of each), each after what it
/// depends on and once. A dependency cycle is an error (the kernel refuses one too).
pub fn load_order(
    names: &[&str],
    mut depends: impl FnMut(&str) -> Result<Vec<String>, AssetError>,
) -> Result<Vec<String>, AssetError> {
    fn visit(
        name: String,
        depends: &mut dyn FnMut(&str) -> Result<Vec<String>, AssetError>,
        path: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<(), AssetError> {
        if order.contains(&name) {
            return Ok(());
        }
        if path.contains(&name) {
            return err(format!("modules depend on each other: {} -> {name}", path.join(" -> ")));
        }
        path.push(name.clone());
        for dep in depends(&name)? {
            visit(dep, depends, path, order)?;
        }
        path.pop();
        order.push(name);
        Ok(())
    }
    let mut order = Vec::new();
    for name in names {
        visit(module_name(name), &mut depends, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

/// Debian's `linux-headers-R` Makefile includes the `-common` tree by its installed path
/// (`include /usr/src/linux-headers-...-common/Makefile`). In the cache the trees lie side
/// by side elsewhere, so the include is made relative (make runs it from its own folder,
/// `make -C`), which also survives moving the target folder.
fn fix_headers_makefile(headers_root: &Path, selection: &Selection) -> Result<(), AssetError> {
    let makefile = headers_root.join("usr/src").join(format!("linux-headers-{}", selection.release)).join("Makefile");
    let text = std::fs::read_to_string(&makefile)
        .map_err(|e| AssetError(format!("{} has no {}: {e}", selection.headers, makefile.display())))?;
    let fixed = relative_includes(&text);
    std::fs::write(&makefile, fixed).map_err(|e| AssetError(format!("cannot write {}: {e}", makefile.display())))
}

/// `include /usr/src/X/Makefile` -> `include ../X/Makefile`.
pub fn relative_includes(makefile: &str) -> String {
    makefile
        .lines()
        .map(|line| match line.strip_prefix("include /usr/src/") {
            Some(rest) => format!("include ../{rest}\n"),
            None => format!("{line}\n"),
        })
        .collect()
}

/// Whether a kernel config text has `CONFIG_name=y`.
pub fn config_has(config: &str, name: &str) -> bool {
    let wanted = format!("CONFIG_{name}=y");
    config.lines().any(|l| l.trim() == wanted)
}

fn run_quiet(cmd: &mut Command) -> Result<(), AssetError> {
    let shown = format!("{cmd:?}");
    let output = cmd.stdin(Stdio::null()).output().map_err(|e| AssetError(format!("cannot run {shown}: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        err(format!("{shown} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim()))
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn program_exists(name: &str) -> bool {
    crate::host::find_program(name)
}

/// An exclusive `flock` on a file, released when dropped (or when the process ends).
struct Lock {
    _file: File,
}

impl Lock {
    fn take(path: &Path, progress: &mut dyn FnMut(&str)) -> Result<Lock, AssetError> {
        use std::os::fd::AsRawFd;
        let file = File::create(path).map_err(|e| AssetError(format!("cannot create {}: {e}", path.display())))?;
        // SAFETY: flock on a file descriptor this function owns; no memory is involved.
        let mut rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            progress(&format!("Linux assets: waiting for another process to finish with {}", path.display()));
            // SAFETY: as above.
            rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        }
        if rc != 0 {
            return err(format!("cannot lock {}: {}", path.display(), io::Error::last_os_error()));
        }
        Ok(Lock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = "\
Package: linux-image-amd64
Source: linux-signed-amd64 (6.1.192+3)
Version: 6.1.192-3
Installed-Size: 13
Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)
Description: Linux for 64-bit PCs (meta-package)
 This package depends on the latest Linux kernel and modules for use on PCs
 with AMD64, Intel 64 or VIA Nano processors.
Size: 1492

";

    #[test]
    fn stanzas_and_continuation_lines() {
        let stanzas = parse_stanzas(&format!("{META}Package: busybox-static\nVersion: 1:1.35.0-4\nSize: 928188\n"));
        assert_eq!(stanzas.len(), 2);
        assert_eq!(stanzas[0].field("version"), Some("6.1.192-3"));
        assert!(stanzas[0].field("Description").unwrap().contains("\nwith AMD64, Intel 64"));
        assert_eq!(
            stanzas[1].package().unwrap(),
            Package { name: "busybox-static".into(), version: "1:1.35.0-4".into(), size: 928188 }
        );
        assert!(parse_stanzas("\n\n").is_empty());
    }

    #[test]
    fn depends_with_versions_and_alternatives() {
        let deps = parse_depends(
            "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, libc6:any [amd64]",
        );
        assert_eq!(deps.len(), 4);
        assert_eq!(deps[0], vec![Dependency { name: "kmod".into(), version: None }]);
        assert_eq!(deps[1][0].version, Some((">=".into(), "4.3~".into())));
        assert_eq!(deps[2].len(), 2);
        assert_eq!(deps[2][1].name, "linux-initramfs-tool");
        assert_eq!(deps[3][0].name, "libc6");
        let meta = &parse_stanzas(META)[0];
        let image = &parse_depends(meta.field("Depends").unwrap())[0][0];
        assert_eq!(image.name, "linux-image-6.1.0-57-amd64");
        assert_eq!(image.version, Some(("=".into(), "6.1.192-3".into())));
    }

    fn selection() -> Selection {
        let p = |n: &str, v: &str| Package { name: n.into(), version: v.into(), size: 0 };
        Selection {
            release: "6.1.0-57-amd64".into(),
            image: p("linux-image-6.1.0-57-amd64", "6.1.192-3"),
            headers: p("linux-headers-6.1.0-57-amd64", "6.1.192-3"),
            headers_common: p("linux-headers-6.1.0-57-common", "6.1.192-3"),
            kbuild: p("linux-kbuild-6.1", "6.1.192-3"),
            busybox: p("busybox-static", "1:1.35.0-4+deb12u1+b1"),
        }
    }

    #[test]
    fn the_manifest_round_trips_and_names_every_package() {
        let s = selection();
        let text = s.manifest();
        assert!(text.starts_with("release 6.1.0-57-amd64\nlinux-image-6.1.0-57-amd64 6.1.192-3\n"));
        assert!(text.contains("busybox-static 1:1.35.0-4+deb12u1+b1\n"));
        assert_eq!(Selection::from_manifest(&text), Some(s));
        assert_eq!(Selection::from_manifest("release x\nonly one\n"), None);
        assert_eq!(Selection::from_manifest(""), None);
    }

    #[test]
    fn file_names_follow_apt() {
        let s = selection();
        assert_eq!(deb_file_prefix(&s.busybox), "busybox-static_1%3a1.35.0-4+deb12u1+b1_");
        assert_eq!(deb_file_prefix(&s.image), "linux-image-6.1.0-57-amd64_6.1.192-3_");
        assert_eq!(s.folder_name(), "6.1.192-3");
        assert_eq!(safe_file_name("1:2/3"), "1_2_3");
    }

    #[test]
    fn a_cached_folder_counts_only_when_complete_and_of_the_same_versions() {
        let root = tempfile::tempdir().unwrap();
        let assets = LinuxAssets { dir: root.path().join("6.1.192-3"), selection: selection(), fetched: false };
        assert!(!is_complete(&assets));
        std::fs::create_dir_all(assets.kbuild_dir()).unwrap();
        std::fs::create_dir_all(assets.dir.join(MODULES_DIR)).unwrap();
        for file in assets.required_files() {
            std::fs::write(file, b"x").unwrap();
        }
        assert!(!is_complete(&assets), "no manifest yet");
        std::fs::write(assets.dir.join(MANIFEST_FILE), assets.selection.manifest()).unwrap();
        assert!(is_complete(&assets));
        assert_eq!(newest_cached(root.path()).map(|a| a.dir), Some(assets.dir.clone()));
        // A newer busybox makes the folder stale.
        let mut newer = assets.clone();
        newer.selection.busybox.version = "1:1.36.0-1".into();
        assert!(!is_complete(&newer));
        std::fs::remove_file(assets.module_file(MODULES[0])).unwrap();
        assert!(!is_complete(&assets), "a module is missing (a cache from before it was wanted)");
        std::fs::write(assets.module_file(MODULES[0]), b"x").unwrap();
        assert!(is_complete(&assets));
        std::fs::remove_file(assets.busybox()).unwrap();
        assert!(!is_complete(&assets), "a file is missing");
        assert_eq!(newest_cached(root.path()), None);
    }

    #[test]
    fn current_points_at_the_folder_in_use() {
        let root = tempfile::tempdir().unwrap();
        let mut assets = LinuxAssets { dir: root.path().join("6.1.192-3"), selection: selection(), fetched: false };
        std::fs::create_dir_all(&assets.dir).unwrap();
        point_current(root.path(), &assets).unwrap();
        let link = root.path().join(CURRENT_LINK);
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("6.1.192-3"));
        assets.selection.image.version = "6.1.200-1".into();
        point_current(root.path(), &assets).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("6.1.200-1"));
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 2, "the folder and the link, no temporary");
    }

    #[test]
    fn the_headers_makefile_include_becomes_relative() {
        let text = "include /usr/src/linux-headers-6.1.0-57-common/Makefile\n";
        assert_eq!(relative_includes(text), "include ../linux-headers-6.1.0-57-common/Makefile\n");
        assert_eq!(relative_includes("all:\n\ttrue\n"), "all:\n\ttrue\n");
    }

    #[test]
    fn module_dependencies_come_from_modinfo_and_load_first() {
        let info = b"license=GPL v2\0depends=ptp,pps-core\0retpoline=Y\0name=e1000e\0";
        assert_eq!(modinfo_depends(info), Some(vec!["ptp".to_string(), "pps_core".to_string()]));
        assert_eq!(modinfo_depends(b"depends=\0name=e1000e\0"), Some(vec![]));
        assert_eq!(modinfo_depends(b"name=x\0"), None);
        assert!(module_depends(b"not an elf").is_err());

        let deps = |name: &str| -> Result<Vec<String>, AssetError> {
            Ok(match name {
                "e1000e" => vec!["ptp".into(), "pps_core".into()],
                "ptp" => vec!["pps_core".into()],
                "loop_a" => vec!["loop_b".into()],
                "loop_b" => vec!["loop_a".into()],
                _ => vec![],
            })
        };
        assert_eq!(load_order(&["e1000e"], deps).unwrap(), ["pps_core", "ptp", "e1000e"]);
        assert_eq!(load_order(&["pps-core", "e1000e"], deps).unwrap(), ["pps_core", "ptp", "e1000e"]);
        assert!(load_order(&["loop_a"], deps).unwrap_err().0.contains("loop_a -> loop_b -> loop_a"));
    }

    #[test]
    fn config_options_are_matched_whole() {
        let config = "CONFIG_BLK_DEV_INITRD=y\n# CONFIG_RD_LZ4 is not set\nCONFIG_HYPERV=m\n";
        assert!(config_has(config, "BLK_DEV_INITRD"));
        assert!(!config_has(config, "BLK_DEV"));
        assert!(!config_has(config, "RD_LZ4"));
        assert!(!config_has(config, "HYPERV"), "a module is not built in");
    }

    /// Builds a small package with `dpkg-deb --build` and picks files out of it.
    #[test]
    fn files_are_picked_out_of_a_package() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("pkg");
        std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
        std::fs::create_dir_all(pkg.join("bin")).unwrap();
        std::fs::create_dir_all(pkg.join("usr/share/doc/x")).unwrap();
        std::fs::write(
            pkg.join("DEBIAN/control"),
            "Package: x\nVersion: 1\nArchitecture: all\nMaintainer: x <x@x>\nDescription: x\n",
        )
        .unwrap();
        std::fs::write(pkg.join("bin/busybox"), b"busybox bytes").unwrap();
        std::fs::write(pkg.join("usr/share/doc/x/copyright"), b"c").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(pkg.join("bin/busybox"), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let deb = dir.path().join("x_1_all.deb");
        run_quiet(Command::new("dpkg-deb").args(["--build", "--root-owner-group"]).arg(&pkg).arg(&deb)).unwrap();

        let out = dir.path().join("busybox");
        extract_files(
            &deb,
            &[("bin/busybox".into(), out.clone(), true), ("boot/System.map-x".into(), dir.path().join("map"), false)],
        )
        .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"busybox bytes");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o755);
        assert!(!dir.path().join("map").exists(), "an optional file that is absent is skipped");

        let e = extract_files(&deb, &[("boot/vmlinuz-x".into(), dir.path().join("v"), true)]).unwrap_err();
        assert!(e.0.contains("has no ./boot/vmlinuz-x"), "{e}");
        let e = extract_files(&dir.path().join("none.deb"), &[("bin/busybox".into(), out, true)]).unwrap_err();
        assert!(e.0.contains("none.deb"), "{e}");
    }
}
