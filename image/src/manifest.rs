//! The manifest written beside every image: what is in it, where it came from, and the
//! SHA-256 of each part and of the whole image, as `<image>.manifest.json`.
//!
//! It lets a board's image be checked before it is flashed or booted
//! ([`Manifest::verify_image`]), and the kernel ELF whose defmt table decodes a board's
//! console be taken from the very image the board runs ([`Manifest::read_kernel`]).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{BuildOptions, Error, Format, KERNEL_ISO_PATH, Module, module_iso_path};

/// Appended to an image's path to name its manifest.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// The version of the manifest's own layout; readers refuse others.
pub const MANIFEST_VERSION: u32 = 1;

/// The manifest of `image`: `out/bulkhead.img` → `out/bulkhead.img.manifest.json`.
pub fn manifest_path(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_os_string();
    name.push(MANIFEST_SUFFIX);
    PathBuf::from(name)
}

/// What an image holds and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub manifest_version: u32,
    /// The Bulkhead version that built the image.
    pub bulkhead_version: String,
    /// The commit the image was built from, if built in a git checkout.
    pub git: Option<GitState>,
    pub format: Format,
    /// The time all timestamps in the image were set to (seconds since the Unix epoch).
    pub source_date_epoch: u64,
    /// The system configuration compiled into the kernel.
    pub system: ConfigFile,
    /// The board file that system names.
    pub board: ConfigFile,
    pub kernel: Kernel,
    /// The partition payloads, as multiboot2 modules in boot order.
    pub payloads: Vec<Payload>,
    /// The image file itself.
    pub image: Digest256,
}

/// A git commit and whether the working tree differed from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitState {
    pub commit: String,
    /// Whether `git status --porcelain` listed anything (changes or untracked files): the
    /// image may then hold what no commit has.
    pub dirty: bool,
}

impl GitState {
    /// The checkout `dir` is in: `git rev-parse HEAD` and `git status --porcelain`. `None`
    /// outside a git checkout, or without git.
    pub fn of(dir: &Path) -> Option<GitState> {
        let commit = git(dir, &["rev-parse", "HEAD"])?;
        let status = git(dir, &["status", "--porcelain"])?;
        Some(GitState { commit: commit.trim().to_string(), dirty: !status.trim().is_empty() })
    }
}

/// The committer time of HEAD of the checkout `dir` is in (seconds since the Unix epoch),
/// the conventional `SOURCE_DATE_EPOCH` of a build; `None` outside a git checkout.
pub fn commit_time(dir: &Path) -> Option<u64> {
    git(dir, &["log", "-1", "--format=%ct"])?.trim().parse().ok()
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output =
        Command::new("git").arg("-C").arg(dir).args(args).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A configuration file by name (as the builder gave it, e.g. relative to the workspace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub name: String,
    pub sha256: String,
}

impl ConfigFile {
    /// `name` with the SHA-256 of the file at `path`.
    pub fn digest(name: impl Into<String>, path: &Path) -> Result<ConfigFile, Error> {
        Ok(ConfigFile { name: name.into(), sha256: Digest256::of_file(path)?.sha256 })
    }
}

/// The hypervisor inside the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// Its path inside the image.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// Its command line, as GRUB passes it.
    pub cmdline: String,
}

/// One multiboot2 module inside the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// The module's string (Bulkhead: the partition it belongs to).
    pub string: String,
    /// Its path inside the image.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// A size and a SHA-256 (lower-case hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digest256 {
    pub size: u64,
    pub sha256: String,
}

impl Digest256 {
    pub fn of_bytes(bytes: &[u8]) -> Digest256 {
        Digest256 { size: bytes.len() as u64, sha256: hex::encode(Sha256::digest(bytes)) }
    }

    /// Reads the file in 1 MiB pieces (images are tens of MiB).
    pub fn of_file(path: &Path) -> Result<Digest256, Error> {
        let io = |source| Error::Io { action: format!("cannot read {}", path.display()), source };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hash.update(&buf[..n]);
                    size += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(Digest256 { size, sha256: hex::encode(hash.finalize()) })
    }
}

/// Where an image came from, as the caller knows it (the image builders do not read
/// configurations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    pub bulkhead_version: String,
    pub git: Option<GitState>,
    pub system: ConfigFile,
    pub board: ConfigFile,
}

/// An image file that does not match its manifest (or could not be read to check).
#[derive(Debug)]
pub enum Mismatch {
    Unreadable { image: PathBuf, error: String },
    Differs { image: PathBuf, expected: Digest256, actual: Digest256 },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Unreadable { image, error } => {
                write!(f, "cannot check {} against its manifest: {error}", image.display())
            }
            Mismatch::Differs { image, expected, actual } => {
                write!(f, "{} does not match its manifest {}: ", image.display(), manifest_path(image).display())?;
                if expected.size != actual.size {
                    write!(f, "{} bytes, the manifest says {}; ", actual.size, expected.size)?;
                }
                write!(f, "SHA-256 {}, the manifest says {}", actual.sha256, expected.sha256)
            }
        }
    }
}

impl std::error::Error for Mismatch {}

impl Manifest {
    /// Describes the image just written at `image` from `kernel` (booted with `cmdline`) and
    /// `modules`, hashing each of them and the image.
    pub fn describe(
        format: Format,
        image: &Path,
        kernel: &Path,
        cmdline: &str,
        modules: &[Module],
        provenance: &Provenance,
        options: &BuildOptions,
    ) -> Result<Manifest, Error> {
        let k = Digest256::of_file(kernel)?;
        let mut payloads = Vec::with_capacity(modules.len());
        for (index, module) in modules.iter().enumerate() {
            let d = Digest256::of_file(&module.path)?;
            payloads.push(Payload {
                string: module.string.clone(),
                path: module_iso_path(index, &module.path),
                size: d.size,
                sha256: d.sha256,
            });
        }
        Ok(Manifest {
            manifest_version: MANIFEST_VERSION,
            bulkhead_version: provenance.bulkhead_version.clone(),
            git: provenance.git.clone(),
            format,
            source_date_epoch: options.source_date_epoch,
            system: provenance.system.clone(),
            board: provenance.board.clone(),
            kernel: Kernel {
                path: KERNEL_ISO_PATH.to_string(),
                size: k.size,
                sha256: k.sha256,
                cmdline: cmdline.to_string(),
            },
            payloads,
            image: Digest256::of_file(image)?,
        })
    }

    /// Writes the manifest beside `image` (replacing the file atomically).
    pub fn write(&self, image: &Path) -> Result<PathBuf, Error> {
        let path = manifest_path(image);
        let io = |source| Error::Io { action: format!("cannot write {}", path.display()), source };
        let mut text = serde_json::to_string_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        text.push('\n');
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let temp = tempfile::Builder::new().prefix(".bulkhead-manifest-").tempfile_in(dir).map_err(io)?;
        std::fs::write(temp.path(), text).map_err(io)?;
        // Readable by all, as a file written with the usual umask (temporary files are 0600).
        temp.as_file().set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644)).map_err(io)?;
        temp.persist(&path).map_err(|e| io(e.error))?;
        Ok(path)
    }

    /// The manifest beside `image`; a clear error if there is none or it is not one.
    pub fn read_for(image: &Path) -> Result<Manifest, Error> {
        let path = manifest_path(image);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Manifest {
                    reason: format!(
                        "missing: an image is used with the manifest written beside it when it was built \
                         (`cargo xtask image` writes both); {} has none",
                        image.display()
                    ),
                    path,
                });
            }
            Err(e) => return Err(Error::Manifest { path, reason: format!("cannot read it: {e}") }),
        };
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::Manifest { path: path.clone(), reason: format!("malformed: {e}") })?;
        if manifest.manifest_version != MANIFEST_VERSION {
            return Err(Error::Manifest {
                path,
                reason: format!(
                    "manifest version {}, this Bulkhead reads version {MANIFEST_VERSION}",
                    manifest.manifest_version
                ),
            });
        }
        Ok(manifest)
    }

    /// Whether the file at `image` is the image this manifest describes: same size and
    /// SHA-256.
    pub fn verify_image(&self, image: &Path) -> Result<(), Mismatch> {
        let actual = Digest256::of_file(image)
            .map_err(|e| Mismatch::Unreadable { image: image.to_path_buf(), error: e.to_string() })?;
        if actual == self.image {
            Ok(())
        } else {
            Err(Mismatch::Differs { image: image.to_path_buf(), expected: self.image.clone(), actual })
        }
    }

    /// The kernel ELF out of `image`, checked against this manifest's size and SHA-256.
    pub fn read_kernel(&self, image: &Path) -> Result<Vec<u8>, Error> {
        let bytes = crate::read_file(image, &self.kernel.path)?;
        let actual = Digest256::of_bytes(&bytes);
        if actual.size != self.kernel.size || actual.sha256 != self.kernel.sha256 {
            return Err(Error::Image {
                image: image.to_path_buf(),
                reason: format!(
                    "its {} ({} bytes, SHA-256 {}) is not the kernel its manifest names ({} bytes, SHA-256 {})",
                    self.kernel.path, actual.size, actual.sha256, self.kernel.size, self.kernel.sha256
                ),
            });
        }
        Ok(bytes)
    }
}

impl<F: crate::ImageFormat> crate::BootImage<F> {
    /// The manifest of this image, built at `image` with `options`.
    pub fn manifest(&self, image: &Path, provenance: &Provenance, options: &BuildOptions) -> Result<Manifest, Error> {
        Manifest::describe(F::FORMAT, image, self.kernel(), self.kernel_cmdline(), self.modules(), provenance, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::tests::Inputs;

    const EPOCH: u64 = 1_700_000_000;

    fn provenance(dir: &Path) -> Provenance {
        let system = dir.join("demo.toml");
        let board = dir.join("qemu-q35.toml");
        std::fs::write(&system, "name = \"demo\"\nboard = \"qemu-q35\"\n").unwrap();
        std::fs::write(&board, "name = \"qemu-q35\"\n").unwrap();
        Provenance {
            bulkhead_version: "0.1.0".into(),
            git: Some(GitState { commit: "0123456789abcdef0123456789abcdef01234567".into(), dirty: true }),
            system: ConfigFile::digest("board/systems/demo.toml", &system).unwrap(),
            board: ConfigFile::digest("board/boards/qemu-q35.toml", &board).unwrap(),
        }
    }

    /// A built disk image and its manifest, written beside it.
    fn built() -> (Inputs, PathBuf, Manifest) {
        let inputs = Inputs::new();
        let image = inputs.build("disk.img", EPOCH);
        let manifest = inputs
            .disk()
            .manifest(&image, &provenance(inputs.dir.path()), &BuildOptions { source_date_epoch: EPOCH })
            .unwrap();
        assert_eq!(manifest.write(&image).unwrap(), inputs.dir.path().join("disk.img.manifest.json"));
        (inputs, image, manifest)
    }

    #[test]
    fn manifest_names_every_part_with_its_hash() {
        let (inputs, image, m) = built();
        assert_eq!((m.format, m.source_date_epoch, m.manifest_version), (Format::Disk, EPOCH, MANIFEST_VERSION));
        assert_eq!(m.system.name, "board/systems/demo.toml");
        assert_eq!(m.system.sha256, hex::encode(Sha256::digest(b"name = \"demo\"\nboard = \"qemu-q35\"\n")));
        assert_eq!(m.kernel.path, KERNEL_ISO_PATH);
        assert_eq!(m.kernel.cmdline, "log=info");
        assert_eq!(m.kernel.size, inputs.kernel_bytes.len() as u64);
        assert_eq!(m.kernel.sha256, hex::encode(Sha256::digest(&inputs.kernel_bytes)));
        assert_eq!(m.payloads.len(), 2);
        for (index, (payload, (path, bytes, string))) in m.payloads.iter().zip(&inputs.modules).enumerate() {
            assert_eq!(payload.string, *string);
            assert_eq!(payload.path, module_iso_path(index, path));
            assert_eq!(
                (payload.size, payload.sha256.clone()),
                (bytes.len() as u64, hex::encode(Sha256::digest(bytes)))
            );
            // The path is where the payload really is.
            assert!(crate::read_file(&image, &payload.path).unwrap() == *bytes);
        }
        let image_bytes = std::fs::read(&image).unwrap();
        assert_eq!(m.image, Digest256::of_bytes(&image_bytes));
        assert!(m.read_kernel(&image).unwrap() == inputs.kernel_bytes);
    }

    #[test]
    fn manifest_round_trips_through_its_file() {
        let (_inputs, image, manifest) = built();
        let text = std::fs::read_to_string(manifest_path(&image)).unwrap();
        assert!(text.contains("\"format\": \"disk\"") && text.ends_with("}\n"), "{text}");
        assert_eq!(Manifest::read_for(&image).unwrap(), manifest);
        manifest.verify_image(&image).unwrap();
    }

    #[test]
    fn verify_image_detects_a_flipped_byte_and_a_size_change() {
        let (_inputs, image, manifest) = built();
        let original = std::fs::read(&image).unwrap();
        let mut flipped = original.clone();
        flipped[3 << 20] ^= 0x01;
        std::fs::write(&image, &flipped).unwrap();
        let err = manifest.verify_image(&image).unwrap_err();
        let actual = hex::encode(Sha256::digest(&flipped));
        let text = err.to_string();
        assert!(text.contains(&manifest.image.sha256) && text.contains(&actual), "both hashes named: {text}");
        assert!(!text.contains("bytes, the manifest says"), "same size: {text}");

        let mut longer = original.clone();
        longer.push(0);
        std::fs::write(&image, &longer).unwrap();
        let text = manifest.verify_image(&image).unwrap_err().to_string();
        assert!(
            text.contains(&format!("{} bytes, the manifest says {}", original.len() + 1, original.len())),
            "{text}"
        );

        std::fs::write(&image, &original).unwrap();
        manifest.verify_image(&image).unwrap();
        std::fs::remove_file(&image).unwrap();
        assert!(matches!(manifest.verify_image(&image), Err(Mismatch::Unreadable { .. })));
    }

    #[test]
    fn a_kernel_that_does_not_match_the_manifest_is_refused() {
        let (_inputs, image, mut manifest) = built();
        manifest.kernel.sha256 = "00".repeat(32);
        let err = manifest.read_kernel(&image).unwrap_err().to_string();
        assert!(err.contains("is not the kernel its manifest names") && err.contains(&"00".repeat(32)), "{err}");
    }

    #[test]
    fn missing_or_malformed_manifests_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("x.img");
        let err = Manifest::read_for(&image).unwrap_err().to_string();
        assert!(err.contains("x.img.manifest.json") && err.contains("missing"), "{err}");
        std::fs::write(manifest_path(&image), "{\"manifest_version\": 1").unwrap();
        let err = Manifest::read_for(&image).unwrap_err().to_string();
        assert!(err.contains("malformed"), "{err}");

        let (_inputs, image, manifest) = built();
        let text =
            serde_json::to_string(&manifest).unwrap().replace("\"manifest_version\":1", "\"manifest_version\":9");
        std::fs::write(manifest_path(&image), text).unwrap();
        let err = Manifest::read_for(&image).unwrap_err().to_string();
        assert!(err.contains("manifest version 9"), "{err}");
    }

    #[test]
    fn manifest_path_appends_the_suffix() {
        assert_eq!(manifest_path(Path::new("out/bulkhead.img")), Path::new("out/bulkhead.img.manifest.json"));
        assert_eq!(manifest_path(Path::new("b.iso")), Path::new("b.iso.manifest.json"));
    }

    #[test]
    fn git_state_and_commit_time_come_from_the_checkout_or_are_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(GitState::of(dir.path()), None);
        assert_eq!(commit_time(dir.path()), None);

        let git = |args: &[&str]| {
            let status = Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(args)
                .env("GIT_COMMITTER_DATE", "@1600000000 +0000")
                .env("GIT_AUTHOR_DATE", "@1600000000 +0000")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "git {args:?}");
        };
        git(&["init", "-q"]);
        std::fs::write(dir.path().join("a"), "a").unwrap();
        git(&["add", "a"]);
        git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a"]);
        let state = GitState::of(dir.path()).unwrap();
        assert_eq!(state.commit.len(), 40, "{state:?}");
        assert!(!state.dirty);
        assert_eq!(commit_time(dir.path()), Some(1_600_000_000));
        std::fs::write(dir.path().join("b"), "b").unwrap();
        assert!(GitState::of(dir.path()).unwrap().dirty);
    }
}
