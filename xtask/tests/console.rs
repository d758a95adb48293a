//! `cargo xtask console` on real captures: the demo is booted through the harness, the raw
//! serial bytes of that very run are handed to the xtask binary (as a file, or through a
//! pseudo-terminal as a serial port), and what it prints must be the lines the harness
//! decoded, which are the lines `cargo xtask run` prints.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bulkhead_tests::{Emulator, Report, Run, kernel};

/// A run of the demo (defmt console) and its kernel ELF; booted once per test binary.
fn defmt_run() -> &'static (Report, PathBuf) {
    static RUN: OnceLock<(Report, PathBuf)> = OnceLock::new();
    RUN.get_or_init(|| {
        let image = kernel::kernel_image(&kernel::default_config()).unwrap_or_else(|e| panic!("{e}"));
        let elf = image.elf.clone();
        let report = Run::new(Emulator::QemuBios).name("xtask-console-defmt").cpus(2).kernel(image).execute();
        report.assert_passed();
        (report, elf)
    })
}

/// A run of the demo with a text console.
fn text_run() -> &'static Report {
    static RUN: OnceLock<Report> = OnceLock::new();
    RUN.get_or_init(|| {
        let report = Run::new(Emulator::QemuBios)
            .name("xtask-console-text")
            .cpus(2)
            .scenario("tests/configs/text-console.toml")
            .execute();
        report.assert_passed();
        report
    })
}

fn capture(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    file
}

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).stdin(Stdio::null()).output().expect("run xtask")
}

fn stdout_lines(output: &Output) -> Vec<String> {
    String::from_utf8(output.stdout.clone()).unwrap().lines().map(str::to_owned).collect()
}

fn harness_lines(report: &Report) -> Vec<String> {
    report.lines.iter().map(ToString::to_string).collect()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn decodes_a_defmt_capture_with_the_kernel_elf() {
    let (report, elf) = defmt_run();
    let file = capture(&report.serial);
    let output = xtask(&["console", "--file", path(file.path()), "--elf", path(elf)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout_lines(&output), harness_lines(report));
    assert!(stdout_lines(&output).iter().any(|l| l == "[cpu0 INFO ] run ended: success"));
    let summary = format!("console: {} lines (", report.lines.len());
    assert!(
        stderr.contains(&summary) && stderr.contains(", 0 malformed frames or lines skipped; defmt capture"),
        "{stderr}"
    );
}

#[test]
fn a_damaged_defmt_capture_is_noted_not_lost() {
    let (report, elf) = defmt_run();
    // Damage one frame in the middle: its first byte goes missing on the line. A frame is
    // rzCOBS-encoded and ended by a zero; the decoder (defmt-decoder's stream/rzcobs.rs)
    // reads it backwards from its last byte, each control byte followed, backwards, by the
    // data bytes it announces, so the first group of the frame comes last. When that group
    // carries data, its first data byte is the frame's first byte, and without it the
    // group runs out of bytes: always malformed, whatever the frame's other bytes are. A
    // first group without data (seven zero bytes) is the single control byte 0x7f; every
    // other first byte is data. A byte missing elsewhere may leave a frame that still
    // decodes (to other words), and then there is no note to test: the byte two before a
    // frame's end did so for 7 of the 63 frames of one demo capture.
    let mut bytes = report.serial.clone();
    let zeros: Vec<usize> = bytes.iter().enumerate().filter(|(_, b)| **b == 0).map(|(i, _)| i).collect();
    let first = zeros[zeros.len() / 2..]
        .windows(2)
        .map(|w| w[0] + 1..w[1])
        .find(|frame| frame.len() >= 2 && bytes[frame.start] != 0x7f)
        .expect("a frame after the middle of the capture whose first group carries data")
        .start;
    bytes.remove(first);
    let file = capture(&bytes);
    let output = xtask(&["console", "--file", path(file.path()), "--elf", path(elf)]);
    assert!(output.status.success());
    let lines = stdout_lines(&output);
    let note = lines.iter().position(|l| l.starts_with("[decoder] malformed defmt frame skipped"));
    // Decoding went on past the damage, to the run-end line (another core may still print
    // after it, QEMU's vCPUs run in parallel, so it need not be the last line).
    let end = lines.iter().position(|l| l == "[cpu0 INFO ] run ended: success");
    assert!(matches!((note, end), (Some(n), Some(e)) if n < e), "{lines:#?}");
    assert_eq!(lines.len(), report.lines.len(), "one note in place of the damaged frame");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(", 1 malformed frames or lines skipped"), "{stderr}");
}

#[test]
fn decodes_a_text_capture_without_an_elf() {
    let report = text_run();
    let file = capture(&report.serial);
    let output = xtask(&["console", "--file", path(file.path())]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout_lines(&output), harness_lines(report));
    assert!(stderr.contains("text capture"), "{stderr}");
}

#[test]
fn a_defmt_capture_without_its_elf_is_a_clear_error() {
    let (report, _) = defmt_run();
    let file = capture(&report.serial);
    let missing = tempfile::tempdir().unwrap().path().join("bulkhead.img");
    let output = xtask(&["console", "--file", path(file.path()), "--image", path(&missing)]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not exist") && stderr.contains("kernel ELF"), "{stderr}");
    // The ELF of a text-console kernel has no defmt table.
    let text_elf = kernel::kernel_image(&kernel::workspace_root().join("tests/configs/text-console.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .elf;
    let output = xtask(&["console", "--file", path(file.path()), "--elf", path(&text_elf)]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has no .defmt section") && stderr.contains("--elf"), "{stderr}");
    // What came before the marker was shown all the same.
    assert!(stdout_lines(&output).iter().all(|l| l.starts_with("[console] ")));
}

/// `--port` on the slave of a pseudo-terminal: the capture goes into the master as a
/// board would send it; closing the master hangs the port up, which ends the console.
#[test]
fn decodes_a_serial_port() {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

    let report = text_run();
    // Close-on-exec: xtask must not hold the master too, or closing ours would not hang up.
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).expect("a pseudo-terminal");
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let slave = ptsname(&master, Vec::new()).unwrap().into_string().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["console", "--port", &slave, "--baud", "115200"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Send only once the port is in raw mode (before, the terminal would cook the bytes).
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.starts_with(&format!("console: reading {slave} at 115200 baud")), "{first}");
    let want = harness_lines(report);
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stdout.lines() {
            lines_tx.send(line.unwrap()).unwrap();
        }
    });
    let mut master = std::fs::File::from(master);
    for chunk in report.serial.chunks(997) {
        master.write_all(chunk).unwrap();
    }
    // Every line arrives; then the board goes away.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < want.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => got.push(line),
            Err(_) => panic!("only {} of {} lines arrived: {got:#?}", got.len(), want.len()),
        }
    }
    drop(master);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert_eq!(got, want);
    assert!(rest.contains(&format!("console: {} lines", want.len())) && rest.contains("text stream"), "{rest}");
}

/// The board path: a disk image as `cargo xtask image` writes it, booted unchanged; its
/// capture is decoded with the kernel taken out of the image through its manifest
/// (`--image`), and prints the harness's lines, `run ended: success` among them.
#[test]
fn decodes_a_capture_with_the_kernel_of_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = kernel::kernel_image(&kernel::default_config()).unwrap_or_else(|e| panic!("{e}"));
    let image = dir.path().join("bulkhead.img");
    bulkhead_tests::image::write_image(&kernel, bulkhead_image::Format::Disk, &image, 1_700_000_000)
        .unwrap_or_else(|e| panic!("{e}"));
    let report = Run::new(Emulator::QemuBios).name("xtask-console-image").cpus(2).image(&image).execute();
    report.assert_passed();
    let file = capture(&report.serial);
    let output = xtask(&["console", "--file", path(file.path()), "--image", path(&image)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("decoding with the kernel of"), "{stderr}");
    assert_eq!(stdout_lines(&output), harness_lines(&report));
    // On a board kernel the other cores' partitions run on after the run-end line, so it
    // need not be the last one.
    assert!(stdout_lines(&output).iter().any(|l| l == "[cpu0 INFO ] run ended: success"));
}
