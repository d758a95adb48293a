//! Whole flashes onto regular files (`allow_file`), and the refusals that files can show.

use std::fs;
use std::os::unix::fs::{FileExt, symlink};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{Event, Snapshot, TestUi, image, pattern};
use crate::flash::{Answer, BLOCK_SIZE, Error, Expected, Host, Request, Stage, TargetKind, flash, flash_on, hex};

/// More than one block, not a multiple of any sector size.
const MULTI_BLOCK: usize = BLOCK_SIZE + 4321;

fn request<'a>(image: &'a Path, expected: Expected, target: &'a Path, allow_file: bool) -> Request<'a> {
    Request { image, expected, target, allow_file }
}

#[test]
fn flash_to_new_file_writes_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (img, expected, bytes) = image(dir.path(), MULTI_BLOCK);
    let target = dir.path().join("copy.img");
    let mut ui = TestUi::yes();
    let report = flash(&request(&img, expected, &target, true), &mut ui).unwrap();
    assert_eq!(fs::read(&target).unwrap(), bytes);
    assert_eq!(report.bytes, MULTI_BLOCK as u64);
    assert_eq!(report.sha256, expected.sha256);
    assert_eq!(report.target, target);
    assert_eq!(ui.plans.len(), 1);
    assert_eq!(ui.plans[0].target.kind, TargetKind::Missing);
    assert_eq!(ui.stages(), vec![Stage::CheckImage, Stage::Write, Stage::Verify]);
    assert!(ui.events.contains(&Event::Begin(Stage::Write, MULTI_BLOCK as u64)));
    ui.assert_progress_complete();
    assert!(ui.notes.is_empty(), "{:?}", ui.notes);
}

/// Like a disk, a longer file keeps what lies beyond the image; a symlink is followed.
#[test]
fn flash_over_existing_file_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let (img, expected, bytes) = image(dir.path(), 10_000);
    let disk = dir.path().join("disk.raw");
    let old = pattern(50_000, 7);
    fs::write(&disk, &old).unwrap();
    let link = dir.path().join("by-id-link");
    symlink(&disk, &link).unwrap();
    let mut ui = TestUi::yes();
    let report = flash(&request(&img, expected, &link, true), &mut ui).unwrap();
    assert_eq!(report.target, fs::canonicalize(&disk).unwrap());
    let now = fs::read(&disk).unwrap();
    assert_eq!(now.len(), old.len());
    assert_eq!(&now[..bytes.len()], &bytes[..]);
    assert_eq!(&now[bytes.len()..], &old[bytes.len()..]);
    let plan = &ui.plans[0];
    assert_eq!(plan.target.given, link);
    assert_eq!(plan.target.kind, TargetKind::File { size: 50_000 });
    let text = plan.to_string();
    assert!(text.contains(&hex(&expected.sha256)) && text.contains("given as"), "{text}");
}

#[test]
fn regular_file_refused_without_allow_file() {
    let dir = tempfile::tempdir().unwrap();
    let (img, expected, _) = image(dir.path(), 10_000);
    let target = dir.path().join("precious.txt");
    fs::write(&target, b"years of notes").unwrap();
    let before = Snapshot::of(&target);
    let mut ui = TestUi::yes();
    let err = flash(&request(&img, expected, &target, false), &mut ui).unwrap_err();
    assert!(matches!(err, Error::RegularFile { .. }), "{err:?}");
    assert!(err.to_string().contains("--allow-file"), "{err}");
    assert!(!err.target_changed());
    assert_eq!(Snapshot::of(&target), before);
    assert!(ui.plans.is_empty(), "asked about a refused target");
}

#[test]
fn missing_target_is_created_only_with_allow_file() {
    let dir = tempfile::tempdir().unwrap();
    let (img, expected, _) = image(dir.path(), 10_000);
    let target = dir.path().join("sdbb");
    let err = flash(&request(&img, expected, &target, false), &mut TestUi::yes()).unwrap_err();
    assert!(matches!(err, Error::TargetNotFound { .. }), "{err:?}");
    assert!(!target.exists());
    // Never a new file in /dev, where `--device /dev/sdc` with the stick unplugged would
    // quietly land in RAM.
    let absent = Path::new("/dev/bulkhead-flash-test-absent");
    let err = flash(&request(&img, expected, absent, true), &mut TestUi::yes()).unwrap_err();
    assert!(matches!(err, Error::TargetNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("not plugged in"), "{err}");
    assert!(!absent.exists());
}

#[test]
fn char_device_and_folder_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (img, expected, _) = image(dir.path(), 10_000);
    let before = fs::read_dir(dir.path()).unwrap().count();
    for (target, kind) in [(Path::new("/dev/null"), "character device"), (dir.path(), "folder")] {
        let mut ui = TestUi::yes();
        match flash(&request(&img, expected, target, true), &mut ui) {
            Err(Error::NotADisk { kind: found, .. }) => assert_eq!(found, kind),
            other => panic!("{}: {other:?}", target.display()),
        }
        assert!(ui.plans.is_empty());
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), before);
}

#[test]
fn image_size_or_hash_mismatch_is_refused_before_the_target_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let (img, expected, _) = image(dir.path(), 10_000);
    let target = dir.path().join("disk.raw");
    fs::write(&target, pattern(20_000, 3)).unwrap();
    let before = Snapshot::of(&target);

    let wrong_size = Expected { size: expected.size + 1, ..expected };
    let err = flash(&request(&img, wrong_size, &target, true), &mut TestUi::yes()).unwrap_err();
    match &err {
        Error::ImageSize { expected: e, actual, .. } => assert_eq!((*e, *actual), (10_001, 10_000)),
        other => panic!("{other:?}"),
    }

    let mut wrong_hash = expected;
    wrong_hash.sha256[31] ^= 1;
    let mut ui = TestUi::yes();
    let err = flash(&request(&img, wrong_hash, &target, true), &mut ui).unwrap_err();
    match &err {
        Error::ImageHash { expected: e, actual, .. } => {
            assert_eq!((*e, *actual), (wrong_hash.sha256, expected.sha256));
            let text = err.to_string();
            assert!(text.contains(&hex(&wrong_hash.sha256)) && text.contains(&hex(&expected.sha256)), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert!(ui.plans.is_empty());
    assert_eq!(ui.stages(), vec![Stage::CheckImage]);

    let err = flash(&request(&dir.path().join("no.img"), expected, &target, true), &mut TestUi::yes()).unwrap_err();
    assert!(matches!(err, Error::ImageRead { .. }), "{err:?}");
    assert_eq!(Snapshot::of(&target), before);
}

#[test]
fn the_image_itself_is_refused_as_target() {
    let dir = tempfile::tempdir().unwrap();
    let (img, expected, _) = image(dir.path(), 10_000);
    let before = Snapshot::of(&img);
    let err = flash(&request(&img, expected, &img, true), &mut TestUi::yes()).unwrap_err();
    assert!(matches!(err, Error::SameFile { .. }), "{err:?}");
    assert_eq!(Snapshot::of(&img), before);
}

#[test]
fn declined_or_unaskable_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (img, expected, _) = image(dir.path(), 10_000);
    let target = dir.path().join("disk.raw");
    fs::write(&target, pattern(20_000, 3)).unwrap();
    let before = Snapshot::of(&target);
    let err = flash(&request(&img, expected, &target, true), &mut TestUi::answering(Answer::No)).unwrap_err();
    assert!(matches!(err, Error::Declined { .. }), "{err:?}");
    let err =
        flash(&request(&img, expected, &target, true), &mut TestUi::answering(Answer::CannotAsk("no tty".into())))
            .unwrap_err();
    assert!(matches!(err, Error::CannotAsk { .. }) && err.to_string().contains("no tty"), "{err:?}");
    assert_eq!(Snapshot::of(&target), before);
    let fresh = dir.path().join("new.img");
    let _ = flash(&request(&img, expected, &fresh, true), &mut TestUi::answering(Answer::No)).unwrap_err();
    assert!(!fresh.exists());
}

/// A byte changed on the medium after the write is caught by the read-back, which names both
/// hashes.
#[test]
fn corrupted_byte_in_target_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (img, expected, bytes) = image(dir.path(), MULTI_BLOCK);
    let target = dir.path().join("disk.raw");
    let mut ui = TestUi::yes();
    let corrupt = target.clone();
    ui.on_begin = Some(Box::new(move |stage| {
        if stage == Stage::Verify {
            let file = fs::OpenOptions::new().write(true).open(&corrupt).unwrap();
            file.write_all_at(&[bytes[BLOCK_SIZE + 7] ^ 0x20], (BLOCK_SIZE + 7) as u64).unwrap();
        }
    }));
    let err = flash(&request(&img, expected, &target, true), &mut ui).unwrap_err();
    match &err {
        Error::Mismatch { expected: e, actual, .. } => {
            assert_eq!(*e, expected.sha256);
            let on_disk: [u8; 32] = Sha256::digest(fs::read(&target).unwrap()).into();
            assert_eq!(*actual, on_disk);
            assert_ne!(*actual, *e);
            let text = err.to_string();
            assert!(text.contains(&hex(e)) && text.contains(&hex(actual)), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.target_changed());
}

#[test]
fn ctrl_c_while_writing_says_partially_written() {
    let dir = tempfile::tempdir().unwrap();
    let (img, expected, bytes) = image(dir.path(), MULTI_BLOCK);
    let target = dir.path().join("disk.raw");
    let mut ui = TestUi::yes();
    ui.interrupt_in = Some(Stage::Write);
    let err = flash(&request(&img, expected, &target, true), &mut ui).unwrap_err();
    match &err {
        Error::Interrupted { written, total, verifying: false, .. } => {
            assert_eq!((*written, *total), (BLOCK_SIZE as u64, MULTI_BLOCK as u64))
        }
        other => panic!("{other:?}"),
    }
    assert!(err.target_changed());
    assert!(err.to_string().contains("partially written"), "{err}");
    assert_eq!(fs::read(&target).unwrap(), &bytes[..BLOCK_SIZE]);
    assert!(!ui.stages().contains(&Stage::Verify));

    let mut ui = TestUi::yes();
    ui.interrupt_in = Some(Stage::Verify);
    let err = flash(&request(&img, expected, &dir.path().join("second.raw"), true), &mut ui).unwrap_err();
    assert!(matches!(err, Error::Interrupted { verifying: true, .. }), "{err:?}");
    assert!(err.to_string().contains("not read back"), "{err}");
}

/// The image is hashed again while it is written: a change after the check is caught.
#[test]
fn image_changed_after_the_check_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (img, expected, _) = image(dir.path(), MULTI_BLOCK);
    let target = dir.path().join("disk.raw");
    let mut ui = TestUi::yes();
    let image_path = img.clone();
    ui.on_begin = Some(Box::new(move |stage| {
        if stage == Stage::Write {
            let file = fs::OpenOptions::new().write(true).open(&image_path).unwrap();
            file.write_all_at(b"X", 100).unwrap();
        }
    }));
    let err = flash(&request(&img, expected, &target, true), &mut ui).unwrap_err();
    assert!(matches!(err, Error::ImageChanged { .. }), "{err:?}");
    assert!(err.target_changed());
}

/// The decisions for block devices never apply to files: a fixture host claiming everything
/// is mounted does not stop a file flash.
#[test]
fn files_do_not_consult_the_block_device_tables() {
    let dir = tempfile::tempdir().unwrap();
    let (img, expected, bytes) = image(dir.path(), 1000);
    let host = Host::fixture(dir.path().join("no-sys"), dir.path().join("no-mountinfo"), dir.path().join("no-swaps"));
    let target = dir.path().join("out.img");
    flash_on(&host, &request(&img, expected, &target, true), &mut TestUi::yes()).unwrap();
    assert_eq!(fs::read(&target).unwrap(), bytes);
}

#[test]
fn permission_denied_suggests_root() {
    let err =
        Error::Open { path: "/dev/sdb".into(), source: std::io::Error::from(std::io::ErrorKind::PermissionDenied) };
    let text = err.to_string();
    assert!(text.contains("sudo") && text.contains("nothing was written"), "{text}");
    assert!(!err.target_changed());
}
