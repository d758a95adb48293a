//! A raw GPT disk image that boots on UEFI and on legacy BIOS, to flash onto a board's boot
//! medium.
//!
//! Layout (512-byte sectors, every partition aligned to 1 MiB for flash media):
//!
//! | LBA | what |
//! |---|---|
//! | 0 | protective MBR (UEFI spec, "Protective MBR"), its first 440 bytes GRUB's `boot.img` |
//! | 1-33 | primary GPT header and partition entries |
//! | 2048 | partition 1: BIOS boot partition, GRUB's i386-pc `core.img` |
//! | after it | partition 2: EFI System Partition, FAT32, label [`ESP_LABEL`] |
//! | last 33 | backup partition entries and GPT header |
//!
//! The ESP holds everything GRUB loads, at the same paths as on the ISO: `/boot/grub/grub.cfg`
//! ([`crate::grub_cfg`]), the hypervisor at [`crate::KERNEL_ISO_PATH`], the modules under
//! [`crate::MODULES_ISO_DIR`], and GRUB for UEFI at `/EFI/BOOT/BOOTX64.EFI`, the removable-media
//! boot path UEFI firmware looks for (UEFI spec, "Removable Media Boot Behavior").
//!
//! Both GRUBs are `grub-mkimage` core images with every module the boot needs built in (no
//! module files on the disk) and the same early config: find the ESP by its FAT volume ID with
//! `search --fs-uuid`, whatever the firmware numbers the disk, and set `prefix` to its
//! `/boot/grub`, from where GRUB's normal mode reads `grub.cfg`.
//!
//! Legacy BIOS boot is what `grub-install` sets up on a GPT disk, done here on the image
//! (the fields are those GRUB's `util/setup.c` patches; offsets from GRUB's
//! `include/grub/i386/pc/boot.h` and `grub-core/boot/i386/pc/{boot,diskboot}.S`):
//! the BIOS runs `boot.img` from the MBR, which loads the first sector of `core.img`
//! (`diskboot.img`) from the LBA patched into it; that sector loads the rest of `core.img`
//! from the block list patched into its end. As with `grub-install --no-rs-codes`, no
//! Reed-Solomon codes are added after `core.img`: they only repair an embedding area that
//! other software overwrote, and the BIOS boot partition is GRUB's alone.
//!
//! Reproducible: every timestamp is [`BuildOptions::source_date_epoch`], the disk and
//! partition GUIDs and the FAT volume ID are derived from a SHA-256 of the inputs, files are
//! written in a fixed order, and `grub-mkimage` output depends only on its inputs (checked by
//! a test). The image size is a multiple of [`DISK_SIZE_ALIGN`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Cursor, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};
use gpt::disk::LogicalBlockSize;
use gpt::mbr::ProtectiveMBR;
use gpt::partition::Partition;
use sha2::{Digest, Sha256};

use crate::{BuildOptions, Disk, Error, KERNEL_ISO_PATH, check_input, module_iso_path, run_tool};

/// Bytes per logical sector: what GRUB's i386-pc boot code, the GPT and the FAT use.
pub(crate) const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;

/// One cylinder of the CHS geometry BIOSes (and Bochs, see docs/testing.md) give an LBA disk:
/// 16 heads × 63 sectors per track × 512 bytes.
pub const CYLINDER_BYTES: u64 = 16 * 63 * SECTOR;
/// The image size is a multiple of this: of 1 MiB (partition alignment for flash media) and of
/// [`CYLINDER_BYTES`], so an emulator can map the whole image onto a whole number of
/// cylinders (Bochs 2.7 ignores any remainder of a flat image: the backup GPT at its very end
/// would be lost). The least common multiple of 2^20 and 2^13 × 63 is 63 MiB.
pub const DISK_SIZE_ALIGN: u64 = 63 * MIB;

/// GPT partition type of the EFI System Partition (UEFI spec, "GPT Partition Entry Array",
/// table "Defined GPT Partition Entry - Partition Type GUIDs").
pub const ESP_PARTITION_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// GPT partition type of a BIOS boot partition: where `grub-install` puts `core.img` on a GPT
/// disk (GRUB manual, "BIOS installation"; the GUID spells "Hah!IdontNeedEFI").
pub const BIOS_BOOT_PARTITION_TYPE: &str = "21686148-6449-6E6F-744E-656564454649";
/// The GPT partition names (informational; nothing looks partitions up by name).
pub const BIOS_BOOT_PARTITION_NAME: &str = "BIOS boot partition";
pub const ESP_PARTITION_NAME: &str = "EFI System Partition";
/// The ESP's FAT volume label (11 bytes, space padded).
pub const ESP_LABEL: &[u8; 11] = b"BULKHEAD   ";

/// Where UEFI firmware looks for the boot loader of a removable or otherwise unconfigured
/// x86-64 disk (UEFI spec, "Removable Media Boot Behavior").
pub(crate) const EFI_LOADER_PATH: &str = "/EFI/BOOT/BOOTX64.EFI";
/// Where GRUB reads its configuration, on the ESP as on the ISO.
pub(crate) const GRUB_CFG_PATH: &str = "/boot/grub/grub.cfg";

/// `boot.img` and the core images' module folders (Debian packages grub-pc-bin and
/// grub-efi-amd64-bin, as [`crate::GRUB_PLATFORMS`]).
const GRUB_PC_DIR: &str = "/usr/lib/grub/i386-pc";
const GRUB_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";

/// GRUB modules built into both core images: everything the early config and
/// [`crate::grub_cfg`] use, so GRUB never loads a module from the disk.
const GRUB_MODULES: &[&str] = &[
    "part_gpt",   // the partition table
    "fat",        // the ESP's file system
    "search",     // `search --fs-uuid` in the early config
    "normal",     // normal mode, which reads grub.cfg (its script syntax: `if`, `[ ]`)
    "configfile", // `configfile`, for a technician at the GRUB prompt
    "test",       // `[ "$grub_platform" = efi ]`
    "serial",     // `serial --unit=0 --speed=115200`
    "terminal",   // `terminal_input` / `terminal_output`
    "multiboot2", // `multiboot2` and `module2`
    "boot",       // `boot`
    "echo",       // the failure message
    "halt",       // `halt` after a failed boot
];
/// Added for BIOS: disk access through INT 13h.
const GRUB_PC_MODULES: &[&str] = &["biosdisk"];
/// Added for UEFI: the graphics output drivers [`crate::grub_cfg`] loads (without one GRUB
/// prints "no suitable video mode" instead of booting).
const GRUB_EFI_MODULES: &[&str] = &["efi_gop", "efi_uga"];

// GRUB's i386-pc boot sector, `boot.img` (`grub-core/boot/i386/pc/boot.S`; offsets are
// GRUB_BOOT_MACHINE_* in `include/grub/i386/pc/boot.h`).
/// 0x03..0x5A: room for a DOS BIOS parameter block, jumped over by the code at 0x00.
/// `grub-setup` copies the BPB of the sector it replaces; a new disk has none, so zeros.
const BOOT_BPB: std::ops::Range<usize> = 0x03..0x5A;
/// 0x5C, u64 LE: LBA of the first sector of `core.img`, which `boot.img` loads.
const BOOT_KERNEL_SECTOR: usize = 0x5C;
/// 0x64, u8: BIOS drive to load `core.img` from; 0xFF means the drive the BIOS booted
/// from (DL), which `grub-setup` always writes.
const BOOT_DRIVE: usize = 0x64;
/// 0x66: a 2-byte `jmp` over the check "is DL a hard disk (bit 7 set)? if not, use 0x80".
/// `grub-setup` replaces it by two NOPs when installing to a hard disk, for BIOSes that pass
/// a wrong boot drive.
const BOOT_DRIVE_CHECK: usize = 0x66;
/// 0x1B8 (GRUB_BOOT_MACHINE_WINDOWS_NT_MAGIC): from here on the sector is the MBR's disk
/// signature and partition table, so only the 440 bytes before it are boot code.
const BOOT_CODE_LEN: usize = 0x1B8;

// The first sector of `core.img` is `diskboot.img` (`grub-core/boot/i386/pc/diskboot.S`).
// It ends in block lists of 12 bytes each (`struct grub_pc_bios_boot_blocklist`: u64 start
// LBA, u16 sector count, u16 load segment), read from the end backwards until one with a
// count of 0.
/// 0x1F4: the first (last-in-sector) block list: the rest of `core.img`.
const BLOCKLIST: usize = 0x200 - 12;
/// The segment the first block list loads to: `core.img` is loaded at 0x8000 (segment
/// GRUB_BOOT_I386_PC_KERNEL_SEG 0x800) and the block list continues after its first sector.
const BLOCKLIST_SEGMENT: u16 = 0x800 + (SECTOR as u16 >> 4);
/// `core.img` is loaded from 0x8000 and must stay below 0x78000 (`grub-setup` refuses more).
const CORE_MAX_SECTORS: u64 = (0x78000 - 0x9000) / SECTOR;

/// The first partition starts at 1 MiB, as partitioning tools do.
const FIRST_LBA: u64 = MIB / SECTOR;
/// Sectors after the last partition: backup partition entries (128 × 128 bytes) and header.
const GPT_BACKUP_SECTORS: u64 = 32 + 1;
/// The smallest ESP formatted as FAT32 with 512-byte clusters: at least 65525 clusters (fewer
/// would make it FAT16; Microsoft's FAT specification, "FAT Type Determination"), plus the
/// two FATs and the reserved sectors, rounded up with room to spare. UEFI's file system is
/// FAT, and the UEFI spec (File System Format) asks for FAT32 on system partitions.
const ESP_MIN_BYTES: u64 = 34 * MIB;

impl Disk {
    /// Writes the image to `out`, replacing it only once the whole image is written (it is
    /// built in a temporary file beside `out`, so a failed build leaves `out` as it was).
    /// Runs `grub-mkimage` twice; takes about a second.
    pub fn build(&self, out: &Path, options: &BuildOptions) -> Result<(), Error> {
        let cfg = self.grub_cfg()?;
        for (dir, package) in crate::GRUB_PLATFORMS {
            if !Path::new(dir).is_dir() {
                return Err(Error::MissingPlatform { dir, package });
            }
        }
        let mut files = vec![(GRUB_CFG_PATH.to_string(), cfg.into_bytes())];
        files.push((KERNEL_ISO_PATH.to_string(), read_input(&self.kernel)?));
        for (index, module) in self.modules.iter().enumerate() {
            files.push((module_iso_path(index, &module.path), read_input(&module.path)?));
        }
        let ids = Ids::derive(&files, options);

        let stage = crate::stage_beside(out, ".bulkhead-disk-")?;
        let early = early_config(ids.volume_id);
        let boot_img = read_input(&Path::new(GRUB_PC_DIR).join("boot.img"))?;
        let core_img = grub_mkimage(stage.path(), "i386-pc", GRUB_PC_DIR, GRUB_PC_MODULES, &early)?;
        let efi_img = grub_mkimage(stage.path(), "x86_64-efi", GRUB_EFI_DIR, GRUB_EFI_MODULES, &early)?;
        files.insert(0, (EFI_LOADER_PATH.to_string(), efi_img));

        let layout = Layout::new(core_img.len() as u64, &files)
            .map_err(|reason| Error::Image { image: out.to_path_buf(), reason })?;
        let esp = fat_volume(&files, layout.esp.sectors * SECTOR, layout.esp.first, ids.volume_id, options)
            .map_err(|source| Error::Io { action: "cannot write the EFI System Partition's FAT".into(), source })?;

        // In the staging folder beside `out`: one file system, so the final rename is atomic.
        let temp = tempfile::Builder::new().suffix(".img.part").tempfile_in(stage.path()).map_err(|source| {
            Error::Io { action: format!("cannot create a file in {}", stage.path().display()), source }
        })?;
        let write_err = |source| Error::Io { action: format!("cannot write {}", temp.path().display()), source };
        let mut file = temp.as_file().try_clone().map_err(write_err)?;
        file.set_len(layout.total_sectors * SECTOR).map_err(write_err)?;
        write_gpt(&mut file, &layout, &ids).map_err(|reason| Error::Image { image: out.to_path_buf(), reason })?;
        let mbr = protective_mbr(&boot_img, layout.bios.first, layout.total_sectors)
            .map_err(|reason| Error::Image { image: out.to_path_buf(), reason })?;
        write_at(&mut file, 0, &mbr).map_err(write_err)?;
        write_at(&mut file, layout.bios.first * SECTOR, &patch_core_img(core_img, layout.bios.first))
            .map_err(write_err)?;
        write_at(&mut file, layout.esp.first * SECTOR, &esp).map_err(write_err)?;
        // Readable by all, as a file written with the usual umask (temporary files are 0600).
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644)).map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        drop(file);
        temp.persist(out)
            .map_err(|e| Error::Io { action: format!("cannot write {}", out.display()), source: e.error })?;
        Ok(())
    }
}

fn read_input(path: &Path) -> Result<Vec<u8>, Error> {
    check_input(path)?;
    std::fs::read(path).map_err(|source| Error::Input { path: path.to_path_buf(), source })
}

fn write_at(file: &mut File, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)
}

/// GRUB's early config, built into both core images: find the ESP by its FAT volume ID
/// (GRUB shows a FAT volume ID as `xxxx-xxxx`, `grub-core/fs/fat.c`), make it the root and
/// the prefix, and show any error on COM1 as well, where a board's console is. GRUB then
/// enters normal mode, which reads `$prefix/grub.cfg`. Written for GRUB's rescue parser:
/// plain commands, no `if`.
fn early_config(volume_id: u32) -> String {
    format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         search --no-floppy --fs-uuid --set=root {}\n\
         set prefix=($root)/boot/grub\n",
        fat_uuid(volume_id)
    )
}

/// How GRUB (and blkid) write a FAT volume ID.
pub(crate) fn fat_uuid(volume_id: u32) -> String {
    format!("{:04x}-{:04x}", volume_id >> 16, volume_id & 0xffff)
}

/// Runs `grub-mkimage` for `format` with the early config built in, and returns the image.
fn grub_mkimage(stage: &Path, format: &str, dir: &str, extra: &[&str], early: &str) -> Result<Vec<u8>, Error> {
    let config = stage.join(format!("early-{format}.cfg"));
    std::fs::write(&config, early)
        .map_err(|source| Error::Io { action: format!("cannot write {}", config.display()), source })?;
    let out = stage.join(format!("core-{format}.img"));
    let mut cmd = Command::new("grub-mkimage");
    cmd.args(["-O", format, "-d", dir, "-p", "/boot/grub", "-c"])
        .arg(&config)
        .arg("-o")
        .arg(&out)
        .args(GRUB_MODULES)
        .args(extra);
    run_tool(cmd, "grub-mkimage", "grub-common")?;
    std::fs::read(&out)
        .map_err(|source| Error::Io { action: format!("grub-mkimage did not write {}", out.display()), source })
}

/// The GUIDs and the FAT volume ID: derived from a SHA-256 of everything the image holds
/// (paths, contents, the build time), so they are the same for the same inputs and differ
/// between images of different builds (two disks of different builds attached to one
/// machine still have distinct IDs, which `search --fs-uuid` relies on).
struct Ids {
    disk: uuid::Uuid,
    bios: uuid::Uuid,
    esp: uuid::Uuid,
    volume_id: u32,
}

impl Ids {
    fn derive(files: &[(String, Vec<u8>)], options: &BuildOptions) -> Ids {
        let mut inputs = Sha256::new();
        inputs.update(b"bulkhead disk image v1\0");
        inputs.update(options.source_date_epoch.to_le_bytes());
        for (path, bytes) in files {
            inputs.update((path.len() as u64).to_le_bytes());
            inputs.update(path.as_bytes());
            inputs.update((bytes.len() as u64).to_le_bytes());
            inputs.update(bytes);
        }
        let inputs = inputs.finalize();
        let derive = |what: &str| {
            let mut h = Sha256::new();
            h.update(inputs);
            h.update(what.as_bytes());
            let h = h.finalize();
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&h[..16]);
            bytes
        };
        // RFC 9562 version 8 ("custom") UUIDs: the variant and version bits are set, the
        // rest is the hash.
        let guid = |what: &str| uuid::Builder::from_custom_bytes(derive(what)).into_uuid();
        let volume = derive("fat volume id");
        Ids {
            disk: guid("disk guid"),
            bios: guid("bios boot partition guid"),
            esp: guid("esp partition guid"),
            volume_id: u32::from_le_bytes([volume[0], volume[1], volume[2], volume[3]]),
        }
    }
}

/// A run of sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Extent {
    first: u64,
    sectors: u64,
}

impl Extent {
    fn end(&self) -> u64 {
        self.first + self.sectors
    }
}

/// Where everything goes.
#[derive(Debug)]
struct Layout {
    bios: Extent,
    esp: Extent,
    total_sectors: u64,
}

impl Layout {
    fn new(core_img_bytes: u64, files: &[(String, Vec<u8>)]) -> Result<Layout, String> {
        let core_sectors = core_img_bytes.div_ceil(SECTOR);
        if core_sectors > CORE_MAX_SECTORS {
            return Err(format!(
                "GRUB's BIOS core image is {core_img_bytes} bytes; GRUB's boot code loads at most \
                 {} bytes",
                CORE_MAX_SECTORS * SECTOR
            ));
        }
        // The BIOS boot partition: 1 MiB, as the GRUB manual suggests (ample for core.img).
        let bios = Extent { first: FIRST_LBA, sectors: round_up(core_sectors * SECTOR, MIB) / SECTOR };
        // The ESP: its files in 512-byte clusters, plus room for directories, plus a quarter
        // and a MiB of slack (for a technician adding a file on the board), at least the
        // FAT32 minimum, in whole MiB.
        let content: u64 = files.iter().map(|(_, bytes)| round_up(bytes.len() as u64, SECTOR)).sum::<u64>() + 64 * 1024;
        let esp_bytes = round_up((content + content / 4 + MIB).max(ESP_MIN_BYTES), MIB);
        let esp = Extent { first: round_up(bios.end() * SECTOR, MIB) / SECTOR, sectors: esp_bytes / SECTOR };
        let total_sectors = round_up((esp.end() + GPT_BACKUP_SECTORS) * SECTOR, DISK_SIZE_ALIGN) / SECTOR;
        Ok(Layout { bios, esp, total_sectors })
    }
}

fn round_up(value: u64, to: u64) -> u64 {
    value.div_ceil(to) * to
}

/// The protective MBR (UEFI spec, "Protective MBR": one partition of type 0xEE from LBA 1
/// over the whole disk, or 0xFFFFFFFF sectors if larger, not bootable) with `boot.img` as
/// its boot code, patched to load `core.img` from `core_lba`.
fn protective_mbr(boot_img: &[u8], core_lba: u64, total_sectors: u64) -> Result<[u8; 512], String> {
    if boot_img.len() != SECTOR as usize || boot_img[510..512] != [0x55, 0xAA] {
        return Err(format!("{GRUB_PC_DIR}/boot.img is not a 512-byte boot sector"));
    }
    let mut code = [0u8; BOOT_CODE_LEN];
    code.copy_from_slice(&boot_img[..BOOT_CODE_LEN]);
    if code[BOOT_DRIVE_CHECK] != 0xEB {
        return Err(format!(
            "{GRUB_PC_DIR}/boot.img has no short jmp at {BOOT_DRIVE_CHECK:#x}: not the GRUB 2 boot.img layout this \
             builder knows"
        ));
    }
    code[BOOT_BPB].fill(0);
    code[BOOT_KERNEL_SECTOR..BOOT_KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    code[BOOT_DRIVE] = 0xFF;
    code[BOOT_DRIVE_CHECK..BOOT_DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
    let mut mbr = ProtectiveMBR::with_lb_size(u32::try_from(total_sectors - 1).unwrap_or(u32::MAX));
    mbr.set_bootcode(code);
    Ok(mbr.to_bytes())
}

/// `core.img` with its block list pointing at the sectors after its first one, where it
/// lies contiguously from `core_lba` (`grub-setup`'s embedding, `util/setup.c`): one list
/// of every remaining sector loaded to segment 0x820, and an all-zero list before it as the
/// terminator.
fn patch_core_img(mut core: Vec<u8>, core_lba: u64) -> Vec<u8> {
    let rest = core.len().div_ceil(SECTOR as usize) as u64 - 1;
    core.resize(((rest + 1) * SECTOR) as usize, 0);
    let list = &mut core[BLOCKLIST..BLOCKLIST + 12];
    list[0..8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    list[8..10].copy_from_slice(&(rest as u16).to_le_bytes());
    list[10..12].copy_from_slice(&BLOCKLIST_SEGMENT.to_le_bytes());
    core[BLOCKLIST - 12..BLOCKLIST].fill(0);
    core
}

fn write_gpt(file: &mut File, layout: &Layout, ids: &Ids) -> Result<(), String> {
    let err = |e: gpt::GptError| format!("cannot write the GPT: {e}");
    let device = file.try_clone().map_err(|e| format!("cannot write the GPT: {e}"))?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(device, Some(ids.disk))
        .map_err(err)?;
    let partition = |part_type_guid, part_guid, extent: Extent, name: &str| Partition {
        part_type_guid,
        part_guid,
        first_lba: extent.first,
        last_lba: extent.end() - 1,
        flags: 0,
        name: name.to_string(),
    };
    let partitions = BTreeMap::from([
        (1, partition(gpt::partition_types::BIOS, ids.bios, layout.bios, BIOS_BOOT_PARTITION_NAME)),
        (2, partition(gpt::partition_types::EFI, ids.esp, layout.esp, ESP_PARTITION_NAME)),
    ]);
    disk.update_partitions(partitions).map_err(err)?;
    disk.write().map_err(err)?;
    Ok(())
}

/// A FAT32 volume of `bytes` holding `files`, in memory. Its BPB's hidden-sectors field
/// gives the partition's first LBA, as the FAT specification asks (fatfs leaves it 0).
fn fat_volume(
    files: &[(String, Vec<u8>)],
    bytes: u64,
    first_lba: u64,
    volume_id: u32,
    options: &BuildOptions,
) -> std::io::Result<Vec<u8>> {
    let mut volume = Cursor::new(vec![0u8; bytes as usize]);
    fatfs::format_volume(
        &mut volume,
        FormatVolumeOptions::new()
            .fat_type(FatType::Fat32)
            .bytes_per_cluster(SECTOR as u32)
            .volume_id(volume_id)
            .volume_label(*ESP_LABEL),
    )?;
    let fs_options =
        FsOptions::new().update_accessed_date(false).time_provider(time_provider(options.source_date_epoch));
    let fs = FileSystem::new(&mut volume, fs_options)?;
    write_files(&fs, files)?;
    fs.unmount()?;
    let mut volume = volume.into_inner();
    // Microsoft FAT specification, BPB: BPB_HiddSec (u32 at 28) in the boot sector and in
    // its backup, whose sector BPB_BkBootSec (u16 at 50) gives.
    let hidden = u32::try_from(first_lba).unwrap_or(u32::MAX).to_le_bytes();
    let backup = u16::from_le_bytes([volume[50], volume[51]]) as usize * SECTOR as usize;
    for sector in [0, backup] {
        volume[sector + 28..sector + 32].copy_from_slice(&hidden);
    }
    Ok(volume)
}

/// Writes `files` in their order, each folder created before its first file.
fn write_files<T: fatfs::ReadWriteSeek>(fs: &FileSystem<T>, files: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    let root = fs.root_dir();
    for (path, bytes) in files {
        let mut parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let name = parts.pop().unwrap_or_default();
        let mut dir = root.clone();
        for part in parts {
            // Opens the folder if it exists.
            dir = dir.create_dir(part)?;
        }
        let mut file = dir.create_file(name)?;
        file.truncate()?;
        file.write_all(bytes)?;
        file.flush()?;
    }
    Ok(())
}

/// The clock the FAT's timestamps come from: always the build time.
#[derive(Debug)]
struct BuildTime(fatfs::DateTime);

impl fatfs::TimeProvider for BuildTime {
    fn get_current_date(&self) -> fatfs::Date {
        self.0.date
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.0
    }
}

/// fatfs 0.3 takes its time provider as `&'static`; one is made (and kept) per distinct
/// build time in this process.
fn time_provider(epoch: u64) -> &'static BuildTime {
    static PROVIDERS: Mutex<BTreeMap<u64, &'static BuildTime>> = Mutex::new(BTreeMap::new());
    let mut providers = PROVIDERS.lock().unwrap_or_else(|e| e.into_inner());
    providers.entry(epoch).or_insert_with(|| Box::leak(Box::new(BuildTime(fat_date_time(epoch)))))
}

/// `epoch` as a FAT timestamp (UTC), clamped to what FAT can hold: 1980-01-01 00:00:00 to
/// 2107-12-31 23:59:58 (two-second resolution).
pub(crate) fn fat_date_time(epoch: u64) -> fatfs::DateTime {
    const FAT_FIRST: i64 = 315_532_800; // 1980-01-01T00:00:00Z
    const FAT_LAST: i64 = 4_354_819_198; // 2107-12-31T23:59:58Z
    let seconds = i64::try_from(epoch).unwrap_or(i64::MAX).clamp(FAT_FIRST, FAT_LAST);
    let t = time::OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    fatfs::DateTime {
        date: fatfs::Date { year: t.year() as u16, month: u8::from(t.month()) as u16, day: t.day() as u16 },
        time: fatfs::Time { hour: t.hour() as u16, min: t.minute() as u16, sec: t.second() as u16 & !1, millis: 0 },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Read;
    use std::path::PathBuf;

    use super::*;

    /// Inputs for a disk image: a kernel and two modules with recognisable bytes.
    pub(crate) struct Inputs {
        pub dir: tempfile::TempDir,
        pub kernel: PathBuf,
        pub kernel_bytes: Vec<u8>,
        pub modules: Vec<(PathBuf, Vec<u8>, &'static str)>,
    }

    impl Inputs {
        pub fn new() -> Inputs {
            let dir = tempfile::tempdir().unwrap();
            let kernel = dir.path().join("kernel.elf");
            let kernel_bytes: Vec<u8> = b"BULKHEAD-TEST-KERNEL-".iter().copied().cycle().take(300 * 1024 + 7).collect();
            std::fs::write(&kernel, &kernel_bytes).unwrap();
            let mut modules = Vec::new();
            for (name, string, len) in [("demo-control", "control", 5000), ("weird name$.bin", "telemetry x=1", 1)] {
                let path = dir.path().join(name);
                let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + name.len()) as u8).collect();
                std::fs::write(&path, &bytes).unwrap();
                modules.push((path, bytes, string));
            }
            Inputs { dir, kernel, kernel_bytes, modules }
        }

        pub fn disk(&self) -> Disk {
            let mut disk = Disk::new(&self.kernel).cmdline("log=info");
            for (path, _, string) in &self.modules {
                disk = disk.module(path, *string);
            }
            disk
        }

        pub fn build(&self, name: &str, epoch: u64) -> PathBuf {
            let out = self.dir.path().join(name);
            self.disk().build(&out, &BuildOptions { source_date_epoch: epoch }).unwrap_or_else(|e| panic!("{e}"));
            out
        }
    }

    fn sha256(path: &Path) -> String {
        hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
    }

    fn open_gpt(image: &Path) -> gpt::GptDisk<File> {
        gpt::GptConfig::new()
            .writable(false)
            .logical_block_size(LogicalBlockSize::Lb512)
            .open(image)
            .unwrap_or_else(|e| panic!("the GPT does not parse back: {e}"))
    }

    fn sectors(image: &Path, first: u64, count: u64) -> Vec<u8> {
        let mut file = File::open(image).unwrap();
        file.seek(SeekFrom::Start(first * SECTOR)).unwrap();
        let mut bytes = vec![0u8; (count * SECTOR) as usize];
        file.read_exact(&mut bytes).unwrap();
        bytes
    }

    /// Every file on a FAT volume, by absolute path.
    fn fat_files(volume: Vec<u8>) -> (BTreeMap<String, Vec<u8>>, u32, String, FatType) {
        let fs = FileSystem::new(Cursor::new(volume), FsOptions::new()).unwrap();
        let mut files = BTreeMap::new();
        let mut stack = vec![(String::new(), fs.root_dir())];
        while let Some((prefix, dir)) = stack.pop() {
            for entry in dir.iter() {
                let entry = entry.unwrap();
                let name = entry.file_name();
                if name == "." || name == ".." {
                    continue;
                }
                let path = format!("{prefix}/{name}");
                // Every entry carries the build time (1700000000 = 2023-11-14 22:13:20 UTC).
                let modified = entry.modified();
                assert_eq!((modified.date.year, modified.date.month, modified.date.day), (2023, 11, 14), "{path}");
                assert_eq!((modified.time.hour, modified.time.min, modified.time.sec), (22, 13, 20), "{path}");
                assert_eq!(entry.created().date, modified.date, "{path}");
                if entry.is_dir() {
                    stack.push((path, entry.to_dir()));
                } else {
                    let mut bytes = Vec::new();
                    entry.to_file().read_to_end(&mut bytes).unwrap();
                    files.insert(path, bytes);
                }
            }
        }
        let label = String::from_utf8_lossy(fs.volume_label_as_bytes()).into_owned();
        (files, fs.volume_id(), label, fs.fat_type())
    }

    #[test]
    fn gpt_parses_back_with_a_bios_boot_partition_and_an_esp() {
        let inputs = Inputs::new();
        let image = inputs.build("disk.img", 1_700_000_000);
        let size = std::fs::metadata(&image).unwrap().len();
        assert_eq!(size % DISK_SIZE_ALIGN, 0, "{size} is not a multiple of 63 MiB");
        assert_eq!(size % CYLINDER_BYTES, 0);

        let disk = open_gpt(&image);
        let primary = disk.primary_header().expect("primary GPT header");
        let backup = disk.backup_header().expect("backup GPT header");
        assert_eq!(backup.current_lba, size / SECTOR - 1, "backup header in the last sector");
        assert_eq!(primary.disk_guid, backup.disk_guid);
        let parts: Vec<_> = disk.partitions().iter().filter(|(_, p)| p.is_used()).collect();
        assert_eq!(parts.len(), 2, "{parts:?}");
        let (bios, esp) = (&disk.partitions()[&1], &disk.partitions()[&2]);
        assert_eq!(bios.part_type_guid.guid.to_string().to_uppercase(), BIOS_BOOT_PARTITION_TYPE);
        assert_eq!(esp.part_type_guid.guid.to_string().to_uppercase(), ESP_PARTITION_TYPE);
        assert_eq!((bios.name.as_str(), esp.name.as_str()), (BIOS_BOOT_PARTITION_NAME, ESP_PARTITION_NAME));
        // 1 MiB aligned, the BIOS boot partition first, the ESP after it, room for the
        // backup table after the ESP.
        assert_eq!(bios.first_lba, 2048);
        assert_eq!(esp.first_lba % 2048, 0);
        assert!(esp.first_lba > bios.last_lba);
        assert!(esp.last_lba < size / SECTOR - GPT_BACKUP_SECTORS);
        assert!((esp.last_lba + 1 - esp.first_lba) * SECTOR >= ESP_MIN_BYTES);

        // The GUIDs are ours: derived, not random (v4), and distinct.
        let guids = [*disk.guid(), bios.part_guid, esp.part_guid];
        for guid in guids {
            assert_eq!(guid.get_version_num(), 8, "{guid}");
            assert_eq!(guid.get_variant(), uuid::Variant::RFC4122);
        }
        assert!(guids[0] != guids[1] && guids[1] != guids[2] && guids[0] != guids[2]);
    }

    #[test]
    fn protective_mbr_carries_grub_boot_code_patched_to_load_core_img() {
        let inputs = Inputs::new();
        let image = inputs.build("disk.img", 1_700_000_000);
        let size = std::fs::metadata(&image).unwrap().len();
        let mbr = sectors(&image, 0, 1);
        let boot_img = std::fs::read(Path::new(GRUB_PC_DIR).join("boot.img")).unwrap();

        assert_eq!(&mbr[510..512], &[0x55, 0xAA]);
        // The GRUB code, unchanged outside the patched fields.
        assert_eq!(&mbr[..3], &boot_img[..3], "the jmp over the BPB");
        assert!(mbr[BOOT_BPB].iter().all(|b| *b == 0), "the BPB area is empty");
        assert_eq!(&mbr[0x5A..BOOT_KERNEL_SECTOR], &boot_img[0x5A..BOOT_KERNEL_SECTOR]);
        assert_eq!(&mbr[0x68..BOOT_CODE_LEN], &boot_img[0x68..BOOT_CODE_LEN]);
        // The patched fields.
        let kernel_sector = u64::from_le_bytes(mbr[BOOT_KERNEL_SECTOR..BOOT_KERNEL_SECTOR + 8].try_into().unwrap());
        assert_eq!(kernel_sector, open_gpt(&image).partitions()[&1].first_lba, "boot.img loads core.img");
        assert_eq!(mbr[BOOT_DRIVE], 0xFF, "the drive the BIOS booted from");
        assert_eq!(&mbr[BOOT_DRIVE_CHECK..BOOT_DRIVE_CHECK + 2], &[0x90, 0x90], "hard-disk drive check on");
        assert_eq!(&boot_img[BOOT_DRIVE_CHECK..BOOT_DRIVE_CHECK + 1], &[0xEB], "GRUB ships a jmp there");
        // The protective partition: type 0xEE from LBA 1 over the rest of the disk.
        let record = &mbr[446..462];
        assert_eq!(record[0], 0, "not bootable (UEFI spec)");
        assert_eq!(record[4], 0xEE);
        assert_eq!(u32::from_le_bytes(record[8..12].try_into().unwrap()), 1);
        assert_eq!(u64::from(u32::from_le_bytes(record[12..16].try_into().unwrap())), size / SECTOR - 1);
        assert!(mbr[462..510].iter().all(|b| *b == 0), "one partition record only");
    }

    #[test]
    fn core_img_lies_in_the_bios_boot_partition_with_its_block_list() {
        let inputs = Inputs::new();
        let image = inputs.build("disk.img", 1_700_000_000);
        let bios = open_gpt(&image).partitions()[&1].clone();
        let part = sectors(&image, bios.first_lba, bios.last_lba + 1 - bios.first_lba);
        let diskboot = std::fs::read(Path::new(GRUB_PC_DIR).join("diskboot.img")).unwrap();
        // The first sector is diskboot.img with only its block lists changed.
        assert_eq!(&part[..BLOCKLIST - 12], &diskboot[..BLOCKLIST - 12]);
        let list = &part[BLOCKLIST..BLOCKLIST + 12];
        let start = u64::from_le_bytes(list[0..8].try_into().unwrap());
        let count = u64::from(u16::from_le_bytes(list[8..10].try_into().unwrap()));
        let segment = u16::from_le_bytes(list[10..12].try_into().unwrap());
        assert_eq!(start, bios.first_lba + 1, "the rest follows the first sector");
        assert_eq!(segment, 0x820, "loaded right after the first sector at 0x8000");
        assert!(part[BLOCKLIST - 12..BLOCKLIST].iter().all(|b| *b == 0), "terminator");
        // The block list covers exactly the rest of core.img: its last sector holds data,
        // everything after it in the partition is zero.
        let end = ((count + 1) * SECTOR) as usize;
        assert!(count > 0 && part[end - SECTOR as usize..end].iter().any(|b| *b != 0));
        assert!(part[end..].iter().all(|b| *b == 0));
        assert!(count < CORE_MAX_SECTORS);
    }

    #[test]
    fn esp_holds_exactly_the_expected_files() {
        let inputs = Inputs::new();
        let image = inputs.build("disk.img", 1_700_000_000);
        let esp = open_gpt(&image).partitions()[&2].clone();
        let volume = sectors(&image, esp.first_lba, esp.last_lba + 1 - esp.first_lba);
        // The BPB says where the partition starts.
        assert_eq!(u64::from(u32::from_le_bytes(volume[28..32].try_into().unwrap())), esp.first_lba);
        let (mut files, volume_id, label, fat_type) = fat_files(volume);
        assert_eq!(fat_type, FatType::Fat32);
        assert_eq!(label.as_bytes(), ESP_LABEL.trim_ascii_end());

        let efi = files.remove(EFI_LOADER_PATH).expect("BOOTX64.EFI");
        assert_eq!(&efi[..2], b"MZ", "a PE image");
        // GRUB finds this very volume: its early config names the volume ID.
        let search = format!("--fs-uuid --set=root {}", fat_uuid(volume_id));
        assert!(efi.windows(search.len()).any(|w| w == search.as_bytes()), "no `{search}` in BOOTX64.EFI");
        let mut expected = BTreeMap::from([
            (GRUB_CFG_PATH.to_string(), inputs.disk().grub_cfg().unwrap().into_bytes()),
            (KERNEL_ISO_PATH.to_string(), inputs.kernel_bytes.clone()),
        ]);
        for (index, (path, bytes, _)) in inputs.modules.iter().enumerate() {
            expected.insert(module_iso_path(index, path), bytes.clone());
        }
        assert_eq!(files.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
        for (path, bytes) in &expected {
            assert!(files[path] == *bytes, "{path} differs");
        }
        let cfg = String::from_utf8(files[GRUB_CFG_PATH].clone()).unwrap();
        assert!(cfg.contains("multiboot2 /boot/bulkhead.elf log=info\n"), "{cfg}");
        assert!(cfg.contains("module2 /boot/modules/1-weird_name_.bin telemetry x=1\n"), "{cfg}");
    }

    #[test]
    fn same_inputs_give_identical_bytes_and_any_change_changes_them() {
        let inputs = Inputs::new();
        let first = sha256(&inputs.build("a.img", 1_700_000_000));
        let second = sha256(&inputs.build("b.img", 1_700_000_000));
        assert_eq!(first, second, "two builds of the same inputs differ");

        let later = sha256(&inputs.build("c.img", 1_700_000_002));
        assert_ne!(first, later, "the build time is not in the image");
        let out = inputs.dir.path().join("d.img");
        let options = BuildOptions { source_date_epoch: 1_700_000_000 };
        inputs.disk().cmdline("log=debug").build(&out, &options).unwrap();
        assert_ne!(first, sha256(&out), "the command line is not in the image");
        let mut kernel = inputs.kernel_bytes.clone();
        kernel[1000] ^= 1;
        std::fs::write(&inputs.kernel, kernel).unwrap();
        inputs.disk().build(&out, &options).unwrap();
        assert_ne!(first, sha256(&out), "the kernel is not in the image");
    }

    #[test]
    fn grub_mkimage_output_is_deterministic() {
        let stage = tempfile::tempdir().unwrap();
        let early = early_config(0x1234_abcd);
        let formats = [("i386-pc", GRUB_PC_DIR, GRUB_PC_MODULES), ("x86_64-efi", GRUB_EFI_DIR, GRUB_EFI_MODULES)];
        let build = || -> Vec<Vec<u8>> {
            formats
                .iter()
                .map(|(format, dir, extra)| grub_mkimage(stage.path(), format, dir, extra, &early).unwrap())
                .collect()
        };
        let first = build();
        // A second later, so a timestamp in the output would show.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        for ((format, ..), (a, b)) in formats.iter().zip(first.iter().zip(build())) {
            assert!(*a == b, "grub-mkimage -O {format} gave different bytes for the same inputs");
        }
    }

    #[test]
    fn a_failed_build_leaves_the_old_image_and_no_temporary_files() {
        let inputs = Inputs::new();
        let out = inputs.dir.path().join("out/disk.img");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        std::fs::write(&out, b"old image").unwrap();
        let err = inputs
            .disk()
            .module(inputs.dir.path().join("missing.elf"), "x")
            .build(&out, &BuildOptions::default())
            .unwrap_err();
        assert!(err.to_string().contains("missing.elf"), "{err}");
        assert_eq!(std::fs::read(&out).unwrap(), b"old image");
        let names: Vec<_> = std::fs::read_dir(out.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("disk.img")]);
        // A bad command line is refused before anything is written, too.
        let err = inputs.disk().cmdline("a\u{1b}b").build(&out, &BuildOptions::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidCommandLine { .. }), "{err}");
    }

    #[test]
    fn the_esp_grows_with_its_content_and_the_image_with_the_esp() {
        let small = Layout::new(150_000, &[("/k".into(), vec![0; 5 << 20])]).unwrap();
        assert_eq!(small.bios, Extent { first: 2048, sectors: 2048 });
        assert_eq!(small.esp, Extent { first: 4096, sectors: ESP_MIN_BYTES / SECTOR });
        assert_eq!(small.total_sectors * SECTOR, DISK_SIZE_ALIGN);
        let big = Layout::new(150_000, &[("/k".into(), vec![0; 100 << 20])]).unwrap();
        assert!(big.esp.sectors * SECTOR >= 125 << 20, "{big:?}");
        assert_eq!(big.total_sectors * SECTOR % DISK_SIZE_ALIGN, 0);
        assert!(big.total_sectors >= big.esp.end() + GPT_BACKUP_SECTORS);
        let err = Layout::new(CORE_MAX_SECTORS * SECTOR + 1, &[]).unwrap_err();
        assert!(err.contains("GRUB's BIOS core image"), "{err}");
    }

    #[test]
    fn fat_times_come_from_the_build_time_and_are_clamped() {
        let t = fat_date_time(1_700_000_000);
        assert_eq!(
            (t.date.year, t.date.month, t.date.day, t.time.hour, t.time.min, t.time.sec),
            (2023, 11, 14, 22, 13, 20)
        );
        let t = fat_date_time(0);
        assert_eq!((t.date.year, t.date.month, t.date.day, t.time.hour), (1980, 1, 1, 0));
        let t = fat_date_time(u64::MAX);
        assert_eq!((t.date.year, t.date.month, t.date.day, t.time.sec), (2107, 12, 31, 58));
        assert_eq!(fat_uuid(0x1234_abcd), "1234-abcd");
    }
}
