//! `cargo xtask console`: decodes a board's serial console, live from a serial port or
//! from a capture file, into the lines `cargo xtask run` prints.
//!
//! The bytes go through the harness's decoder (`bulkhead_tests::console`): firmware and
//! GRUB text before the kernel's marker come out as `[console] ...`, then defmt frames or
//! text log lines as `[cpu0 INFO ] ...`, and whatever does not decode as a `[decoder]`
//! note. A text console needs nothing from the kernel. A defmt console needs the kernel
//! ELF's `.defmt` table, which is looked for only once the defmt marker arrives: from
//! `--elf`, or from the image the board runs (`--image`, default `out/bulkhead.img`, then
//! `out/bulkhead.iso`).
//!
//! The serial port is set up with termios through `rustix` rather than the `serialport`
//! crate: the console only reads, and `serialport` (4.7 and later) refuses pseudo-terminals
//! at open (ENOTTY while it sets DTR, serialport-rs issue #262), which are what the tests
//! and `socat`-bridged boards use.

use std::cell::OnceCell;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use bulkhead_tests::console::{ConsoleDecoder, StreamFormat};
use bulkhead_tests::{Line, kernel};

use crate::cli::{ConsoleSource, KernelSource};

/// Images looked for when neither `--elf` nor `--image` is given, in this order
/// (relative to the workspace root): what `cargo xtask image` writes.
const DEFAULT_IMAGES: [&str; 2] = ["out/bulkhead.img", "out/bulkhead.iso"];

pub fn console(source: ConsoleSource, kernel: KernelSource) -> Result<ExitCode> {
    // An --elf that cannot be read is an error before anything is shown; one without a
    // .defmt section (a text-console kernel) only if the console turns out to need it.
    let given = match &kernel {
        KernelSource::Elf(path) => kernel::optional_defmt_table(path).map_err(anyhow::Error::msg)?,
        _ => None,
    };
    let (mut input, is_file): (Box<dyn Read>, bool) = match &source {
        ConsoleSource::File(path) => {
            let file = File::open(path).with_context(|| format!("cannot open the capture {}", path.display()))?;
            (Box::new(file), true)
        }
        ConsoleSource::Port { path, baud } => {
            let port = serial::open(path, *baud)?;
            eprintln!("console: reading {} at {baud} baud (8N1, raw); Ctrl-C ends", path.display());
            (Box::new(port), false)
        }
    };

    // Outlives the decoder, which borrows the table once it is found.
    let table = OnceCell::new();
    let mut decoder = ConsoleDecoder::with_table_later();
    let mut out = Vec::new();
    let mut counts = Counts::default();
    if let Some(given) = given {
        decoder.set_table(table.get_or_init(|| given), &mut out);
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // A serial port that hangs up (a USB adapter unplugged, the far end of a
            // pseudo-terminal closed) ends the stream like the end of a file.
            Err(e) if !is_file && e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => break,
            Err(e) => return Err(e).context("reading the console"),
        };
        decoder.feed(&buf[..n], &mut out);
        print_lines(&mut out, &mut counts);
        if decoder.needs_table() {
            let elf = defmt_elf(&kernel)?;
            let found = kernel::optional_defmt_table(&elf).map_err(anyhow::Error::msg)?;
            let Some(found) = found else {
                bail!(
                    "the console carries defmt frames, but the kernel ELF {} has no .defmt section (a kernel \
                     built with console_format = \"text\"?): give the ELF of the kernel the board runs with --elf",
                    elf.display()
                );
            };
            decoder.set_table(table.get_or_init(|| found), &mut out);
            print_lines(&mut out, &mut counts);
        }
    }
    decoder.finish(&mut out);
    print_lines(&mut out, &mut counts);
    let format = match decoder.format() {
        Some(StreamFormat::Defmt) => "defmt",
        Some(StreamFormat::Text) => "text",
        None => "no kernel marker",
    };
    eprintln!(
        "console: {} lines ({} log lines, {} before the marker), {} malformed frames or lines skipped; {format} {}",
        counts.lines,
        counts.log,
        counts.console,
        decoder.malformed_frames(),
        if is_file { "capture" } else { "stream" }
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Default)]
struct Counts {
    lines: usize,
    log: usize,
    console: usize,
}

/// Prints (and counts) the decoded lines, as `cargo xtask run` does.
fn print_lines(lines: &mut Vec<Line>, counts: &mut Counts) {
    for line in lines.drain(..) {
        println!("{line}");
        counts.lines += 1;
        match line {
            Line::Log { .. } => counts.log += 1,
            Line::Console(_) => counts.console += 1,
            Line::Decoder(_) => {}
        }
    }
}

/// The kernel ELF whose defmt table decodes the console, from the command line's choice.
fn defmt_elf(kernel: &KernelSource) -> Result<PathBuf> {
    match kernel {
        KernelSource::Elf(path) => Ok(path.clone()),
        KernelSource::Image(image) => {
            if !image.is_file() {
                bail!("the image {} does not exist; the defmt console needs its kernel ELF", image.display());
            }
            kernel_elf_for_image(image)
        }
        KernelSource::Default => match default_image(&kernel::workspace_root()) {
            Some(image) => kernel_elf_for_image(&image),
            None => bail!(
                "the console carries defmt frames, which only the kernel ELF can decode: give --elf PATH (the \
                 kernel the board runs) or --image PATH (its image); there is no {} or {}",
                DEFAULT_IMAGES[0],
                DEFAULT_IMAGES[1]
            ),
        },
    }
}

/// The first of [`DEFAULT_IMAGES`] under `root` that exists.
fn default_image(root: &Path) -> Option<PathBuf> {
    DEFAULT_IMAGES.iter().map(|p| root.join(p)).find(|p| p.is_file())
}

/// The kernel ELF inside `image`, found through the image's manifest (the kernel's path
/// inside the image and its SHA-256), checked against it and written to
/// `target/bulkhead-kernels/image-<sha256 prefix>.elf` for the decoder.
pub fn kernel_elf_for_image(image: &Path) -> Result<PathBuf> {
    let manifest = bulkhead_image::Manifest::read_for(image).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n(the console needs the manifest `cargo xtask image` writes beside the image, or --elf PATH)"
        )
    })?;
    let bytes = manifest.read_kernel(image).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = kernel::target_dir().join("bulkhead-kernels");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let elf = dir.join(format!("image-{}.elf", &manifest.kernel.sha256[..16.min(manifest.kernel.sha256.len())]));
    std::fs::write(&elf, bytes).with_context(|| format!("cannot write {}", elf.display()))?;
    eprintln!("console: decoding with the kernel of {} ({})", image.display(), elf.display());
    Ok(elf)
}

/// A serial port opened for reading raw bytes.
mod serial {
    use std::fs::File;
    use std::path::Path;

    use anyhow::{Context, Result};
    use rustix::fs::{Mode, OFlags};
    use rustix::termios::{self, ControlModes, InputModes, OptionalActions, SpecialCodeIndex};

    /// Opens `path` for reading in raw mode: `baud` baud, 8 data bits, no parity, one stop
    /// bit, no flow control (hardware or XON/XOFF), the modem lines ignored, and a read
    /// that waits for at least one byte.
    pub fn open(path: &Path, baud: u32) -> Result<File> {
        // Not the controlling terminal: a hang-up must end the read, not this process.
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty())
            .with_context(|| format!("cannot open the serial port {}", path.display()))?;
        let mut settings =
            termios::tcgetattr(&fd).with_context(|| format!("{} is not a serial port (a terminal)", path.display()))?;
        settings.make_raw();
        settings.set_speed(baud).with_context(|| format!("{} cannot run at {baud} baud", path.display()))?;
        settings.control_modes -= ControlModes::CSIZE | ControlModes::PARENB | ControlModes::CSTOPB;
        settings.control_modes -= ControlModes::CRTSCTS;
        settings.control_modes |= ControlModes::CS8 | ControlModes::CREAD | ControlModes::CLOCAL;
        settings.input_modes -= InputModes::IXON | InputModes::IXOFF | InputModes::IXANY;
        settings.special_codes[SpecialCodeIndex::VMIN] = 1;
        settings.special_codes[SpecialCodeIndex::VTIME] = 0;
        termios::tcsetattr(&fd, OptionalActions::Now, &settings)
            .with_context(|| format!("cannot set up the serial port {}", path.display()))?;
        Ok(File::from(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_image_is_the_disk_image_then_the_iso() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(default_image(root.path()), None);
        std::fs::create_dir(root.path().join("out")).unwrap();
        std::fs::write(root.path().join("out/bulkhead.iso"), b"iso").unwrap();
        assert_eq!(default_image(root.path()), Some(root.path().join("out/bulkhead.iso")));
        std::fs::write(root.path().join("out/bulkhead.img"), b"img").unwrap();
        assert_eq!(default_image(root.path()), Some(root.path().join("out/bulkhead.img")));
    }

    #[test]
    fn the_elf_comes_from_elf_or_says_what_to_give() {
        assert_eq!(defmt_elf(&KernelSource::Elf("k.elf".into())).unwrap(), PathBuf::from("k.elf"));
        let err = defmt_elf(&KernelSource::Image("/no/such/image.img".into())).unwrap_err().to_string();
        assert!(err.contains("/no/such/image.img") && err.contains("does not exist"), "{err}");
        let image = tempfile::NamedTempFile::new().unwrap();
        let err = defmt_elf(&KernelSource::Image(image.path().into())).unwrap_err().to_string();
        assert!(err.contains("manifest") && err.contains("--elf"), "{err}");
    }

    #[test]
    fn a_port_that_is_not_a_terminal_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = serial::open(file.path(), 115_200).unwrap_err().to_string();
        assert!(err.contains("is not a serial port"), "{err}");
        let err = serial::open(Path::new("/no/such/tty"), 115_200).unwrap_err().to_string();
        assert!(err.contains("cannot open the serial port /no/such/tty"), "{err}");
    }
}
