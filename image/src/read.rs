//! Reading a file back out of a built image of either format.

use std::fmt;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

use gpt::disk::LogicalBlockSize;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::disk::SECTOR;

/// The two image formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A raw GPT disk image ([`crate::Disk`]).
    Disk,
    /// A GRUB rescue ISO ([`crate::Iso`]).
    Iso,
}

impl Format {
    /// The format of the image at `image`, from its bytes: an ISO 9660 primary volume
    /// descriptor (`CD001` at byte 0x8001, ECMA-119 8.4) makes an ISO, even a hybrid one that
    /// also carries a GPT; otherwise a GPT header signature (`EFI PART` at LBA 1, UEFI spec
    /// "GPT Header") makes a disk image.
    pub fn detect(image: &Path) -> Result<Format, Error> {
        let io = |source| Error::Io { action: format!("cannot read the image {}", image.display()), source };
        let mut file = std::fs::File::open(image).map_err(io)?;
        let mut head = vec![0u8; 0x8006];
        let mut read = 0;
        while read < head.len() {
            match file.read(&mut head[read..]).map_err(io)? {
                0 => break,
                n => read += n,
            }
        }
        head.truncate(read);
        if head.get(0x8001..0x8006) == Some(b"CD001") {
            Ok(Format::Iso)
        } else if head.get(512..520) == Some(b"EFI PART") {
            Ok(Format::Disk)
        } else {
            Err(Error::Image {
                image: image.to_path_buf(),
                reason: "neither an ISO 9660 image nor a GPT disk image".into(),
            })
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Disk => "disk",
            Format::Iso => "iso",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The bytes of the file at `path` (absolute inside the image, such as
/// [`crate::KERNEL_ISO_PATH`]) in the image at `image`, of either format: on a disk image,
/// from the FAT file system of its EFI System Partition; on an ISO, through xorriso.
pub fn read_file(image: &Path, path: &str) -> Result<Vec<u8>, Error> {
    match Format::detect(image)? {
        Format::Disk => read_from_disk(image, path),
        Format::Iso => read_from_iso(image, path),
    }
}

fn read_from_disk(image: &Path, path: &str) -> Result<Vec<u8>, Error> {
    let bad = |reason: String| Error::Image { image: image.to_path_buf(), reason };
    let io = |source| Error::Io { action: format!("cannot read the image {}", image.display()), source };
    let file = std::fs::File::open(image).map_err(io)?;
    let disk = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(LogicalBlockSize::Lb512)
        .open_from_device(file)
        .map_err(|e| bad(format!("cannot read its GPT: {e}")))?;
    let esp = disk
        .partitions()
        .values()
        .find(|p| p.part_type_guid == gpt::partition_types::EFI)
        .ok_or_else(|| bad("its GPT has no EFI System Partition".into()))?;
    let (first, last) = (esp.first_lba, esp.last_lba);
    let mut file = disk.take_device();
    let len =
        (last + 1).checked_sub(first).map(|n| n * SECTOR).ok_or_else(|| bad("its ESP ends before it starts".into()))?;
    let mut volume = vec![0u8; usize::try_from(len).map_err(|_| bad("its ESP is too large".into()))?];
    file.seek(SeekFrom::Start(first * SECTOR)).map_err(io)?;
    file.read_exact(&mut volume).map_err(|e| bad(format!("its ESP runs past the end of the file ({e})")))?;
    let fs = fatfs::FileSystem::new(Cursor::new(volume), fatfs::FsOptions::new().update_accessed_date(false))
        .map_err(|e| bad(format!("its ESP holds no readable FAT file system: {e}")))?;
    let mut file = fs.root_dir().open_file(path.trim_start_matches('/')).map_err(|e| Error::NotInImage {
        image: image.to_path_buf(),
        path: path.to_string(),
        reason: format!("not on its EFI System Partition ({e})"),
    })?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| bad(format!("cannot read {path} from its ESP: {e}")))?;
    Ok(bytes)
}

/// xorriso (already needed to build the ISO) reads Rock Ridge names as grub-mkrescue wrote
/// them; an ISO 9660 crate would have to handle those extensions as well.
fn read_from_iso(image: &Path, path: &str) -> Result<Vec<u8>, Error> {
    let dir = tempfile::Builder::new()
        .prefix("bulkhead-iso-read-")
        .tempdir()
        .map_err(|source| Error::Io { action: "cannot create a temporary folder".into(), source })?;
    let out = dir.path().join("file");
    let mut cmd = Command::new("xorriso");
    cmd.args(["-osirrox", "on", "-indev"]).arg(image).args(["-extract", path]).arg(&out);
    let command = format!("{cmd:?}");
    let output = cmd.stdin(std::process::Stdio::null()).output().map_err(|source| Error::ToolNotFound {
        tool: "xorriso",
        package: "xorriso",
        source,
    })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || !out.is_file() {
        // xorriso 1.5: "FAILURE : Cannot determine attributes of (ISO) source file '/x' : No
        // such file or directory".
        if stderr.contains("No such file or directory") || out.is_dir() {
            return Err(Error::NotInImage {
                image: image.to_path_buf(),
                path: path.to_string(),
                reason: if out.is_dir() {
                    "a folder, not a file".into()
                } else {
                    "not on its ISO 9660 file system".into()
                },
            });
        }
        return Err(Error::ToolFailed {
            tool: "xorriso",
            command,
            status: output.status.to_string(),
            stderr: stderr.into_owned(),
        });
    }
    std::fs::read(&out).map_err(|source| Error::Io { action: format!("cannot read {}", out.display()), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::tests::Inputs;
    use crate::{Iso, KERNEL_ISO_PATH, module_iso_path};

    #[test]
    fn reads_files_back_out_of_a_disk_image() {
        let inputs = Inputs::new();
        let image = inputs.build("disk.img", 1_700_000_000);
        assert_eq!(Format::detect(&image).unwrap(), Format::Disk);
        assert!(read_file(&image, KERNEL_ISO_PATH).unwrap() == inputs.kernel_bytes);
        let (path, bytes, _) = &inputs.modules[0];
        assert!(read_file(&image, &module_iso_path(0, path)).unwrap() == *bytes);
        let cfg = read_file(&image, "/boot/grub/grub.cfg").unwrap();
        assert_eq!(cfg, inputs.disk().grub_cfg().unwrap().into_bytes());
        let err = read_file(&image, "/boot/missing.elf").unwrap_err();
        assert!(matches!(err, Error::NotInImage { .. }), "{err}");
        assert!(err.to_string().contains("/boot/missing.elf"), "{err}");
    }

    #[test]
    fn reads_files_back_out_of_an_iso() {
        let inputs = Inputs::new();
        let image = inputs.dir.path().join("boot.iso");
        let mut iso = Iso::new(&inputs.kernel);
        for (path, _, string) in &inputs.modules {
            iso = iso.module(path, *string);
        }
        iso.build(&image).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Format::detect(&image).unwrap(), Format::Iso, "a hybrid ISO also has a GPT");
        assert!(read_file(&image, KERNEL_ISO_PATH).unwrap() == inputs.kernel_bytes);
        let (path, bytes, _) = &inputs.modules[1];
        assert!(read_file(&image, &module_iso_path(1, path)).unwrap() == *bytes);
        for missing in ["/boot/missing.elf", "/boot/modules"] {
            let err = read_file(&image, missing).unwrap_err();
            assert!(matches!(err, Error::NotInImage { .. }), "{missing}: {err}");
        }
    }

    #[test]
    fn what_is_not_an_image_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.img");
        std::fs::write(&junk, vec![0x5a; 70_000]).unwrap();
        let err = read_file(&junk, KERNEL_ISO_PATH).unwrap_err();
        assert!(err.to_string().contains("neither an ISO 9660 image nor a GPT disk image"), "{err}");
        let err = read_file(&dir.path().join("none.img"), KERNEL_ISO_PATH).unwrap_err();
        assert!(err.to_string().contains("none.img"), "{err}");

        // A disk image whose ESP lost its file system.
        let inputs = Inputs::new();
        let image = inputs.build("disk.img", 0);
        let esp_first = 4096 * SECTOR;
        let mut bytes = std::fs::read(&image).unwrap();
        bytes[esp_first as usize..esp_first as usize + 512].fill(0);
        std::fs::write(&image, bytes).unwrap();
        let err = read_file(&image, KERNEL_ISO_PATH).unwrap_err();
        assert!(err.to_string().contains("no readable FAT file system"), "{err}");
    }
}
