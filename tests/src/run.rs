//! One boot of the hypervisor in an emulator: [`Run`] describes it, [`Run::execute`]
//! performs it and returns a [`Report`]. A run boots an ISO built for it, or a prebuilt
//! image unchanged ([`Run::image`]).

use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulkhead_abi::run::CMDLINE_EMULATOR_EXIT;
use bulkhead_image::{Format, Manifest, Mismatch};

use crate::console::{ConsoleDecoder, Line};
use crate::emulator::{
    DISK_FILE, Emulator, Exit, ISO_FILE, Medium, SERIAL_FILE, SERIAL_INPUT_FILE, STDERR_FILE, STDOUT_FILE,
};
use crate::kernel;
use crate::outcome::{Ending, Expectations, Outcome, decide};

/// How long the emulator may keep running after the kernel printed its run-end line.
pub const EXIT_GRACE: Duration = Duration::from_secs(10);
/// How often the serial file is polled.
const POLL: Duration = Duration::from_millis(20);
/// Lines quoted in a failure diagnostic.
pub const DIAGNOSTIC_LINES: usize = 50;
/// Set to keep the logs of every run, not just the ones that did not pass.
pub const KEEP_LOGS_ENV: &str = "BULKHEAD_KEEP_LOGS";
/// The kernel ELF taken out of a prebuilt image, in the run's folder.
pub const KERNEL_FILE: &str = "kernel.elf";

type LineCallback = Box<dyn FnMut(&Line) + Send>;

/// Bytes to type into the machine's serial port once a decoded line contains `after`
/// (see [`Run::type_after`]).
struct Typing {
    after: String,
    bytes: Vec<u8>,
}

/// A harness-level failure: the run could not be carried out at all (no kernel, no ISO,
/// no emulator). This is never a verdict on the kernel.
#[derive(Debug)]
pub struct HarnessError(pub String);

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HIL harness error: {}", self.0)
    }
}

impl std::error::Error for HarnessError {}

/// A boot of the hypervisor to perform. Build one, then [`execute`](Run::execute) it:
///
/// ```no_run
/// use bulkhead_tests::{Emulator, Run};
/// Run::new(Emulator::QemuBios)
///     .cpus(2)
///     .expect("smp: 2 of 2 cpus online")
///     .execute()
///     .assert_passed();
/// ```
pub struct Run {
    emulator: Emulator,
    name: String,
    cpus: u8,
    timeout: Duration,
    switches: Vec<String>,
    modules: Vec<(PathBuf, String)>,
    expectations: Expectations,
    config: PathBuf,
    kernel: Option<kernel::KernelImage>,
    image: Option<PathBuf>,
    on_line: Option<LineCallback>,
    typing: Vec<Typing>,
    input: Option<std::sync::mpsc::Receiver<Vec<u8>>>,
    qemu_args: Vec<String>,
    bochs_lines: Vec<String>,
    collect: Vec<String>,
}

impl Run {
    /// A run on `emulator` with one CPU and the emulator's default timeout, named after
    /// the current test (the thread name).
    pub fn new(emulator: Emulator) -> Self {
        let name = std::thread::current().name().filter(|n| *n != "main").unwrap_or("run").to_string();
        Run {
            emulator,
            name,
            cpus: 1,
            timeout: emulator.default_timeout(),
            switches: Vec::new(),
            modules: Vec::new(),
            expectations: Expectations::default(),
            config: kernel::workspace_root().join(emulator.default_config()),
            kernel: None,
            image: None,
            on_line: None,
            typing: Vec::new(),
            input: None,
            qemu_args: Vec::new(),
            bochs_lines: Vec::new(),
            collect: Vec::new(),
        }
    }

    /// Extra QEMU arguments (devices such as `-device edu`), appended to the machine's;
    /// ignored on Bochs.
    pub fn qemu_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.qemu_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// A file the emulator writes in the run's folder (its working directory), such as a
    /// packet capture of `-object filter-dump,...,file=NAME`: read into the report when the
    /// run ends ([`Report::collected`]), before the folder is removed.
    pub fn collect(mut self, file_name: impl Into<String>) -> Self {
        self.collect.push(file_name.into());
        self
    }

    /// An extra bochsrc line (such as `com2: enabled=1, mode=file, dev=com2.out`), appended
    /// to the generated configuration; ignored on QEMU.
    pub fn bochs_line(mut self, line: impl Into<String>) -> Self {
        self.bochs_lines.push(line.into());
        self
    }

    /// Names the run (used for the log folder `target/hil-logs/<name>/`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn cpus(mut self, cpus: u8) -> Self {
        assert!(cpus >= 1, "a run needs at least one CPU");
        self.cpus = cpus;
        self
    }

    /// Deadline for the emulator, counted from its start.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds a kernel command-line switch such as `test=ud`. `exit=emulator` is always there.
    pub fn switch(mut self, switch: impl Into<String>) -> Self {
        self.switches.push(switch.into());
        self
    }

    /// Adds a multiboot2 module with its string.
    pub fn module(mut self, path: impl Into<PathBuf>, string: impl Into<String>) -> Self {
        self.modules.push((path.into(), string.into()));
        self
    }

    /// A substring that must appear in some decoded line (`[cpu0 INFO ] message`).
    pub fn expect(mut self, text: impl Into<String>) -> Self {
        self.expectations.expected.push(text.into());
        self
    }

    /// A substring that must not appear in any decoded line.
    pub fn forbid(mut self, text: impl Into<String>) -> Self {
        self.expectations.forbidden.push(text.into());
        self
    }

    /// Lets ERROR-level lines through (they fail the run by default).
    pub fn allow_errors(mut self) -> Self {
        self.expectations.allow_errors = true;
        self
    }

    /// Boots the kernel compiled for this system configuration (a path relative to the
    /// workspace root, or absolute) instead of the emulator's default one.
    pub fn config(mut self, path: impl AsRef<Path>) -> Self {
        self.config = kernel::workspace_root().join(path);
        self
    }

    /// Boots the system in `path` (relative to the workspace root) on this run's emulator,
    /// whichever board family the file names: the board is swapped for the same-shaped one
    /// of the emulator's family (`bochs-pc` <-> `qemu-q35`, and the test boards
    /// `boards/bochs-pc-Ncpu.toml` <-> `boards/qemu-q35-Ncpu.toml`). One scenario thus runs
    /// on every backend: VT-x in Bochs, SVM in QEMU.
    pub fn scenario(mut self, path: impl AsRef<Path>) -> Self {
        let source = kernel::workspace_root().join(path);
        self.config = match adapt_to_emulator(&source, self.emulator) {
            Ok(adapted) => adapted,
            Err(e) => panic!("HIL harness error: cannot adapt {} to {}: {e}", source.display(), self.emulator),
        };
        self
    }

    /// Uses this already built kernel image instead of building one for the configuration.
    pub fn kernel(mut self, image: kernel::KernelImage) -> Self {
        self.kernel = Some(image);
        self
    }

    /// Boots this prebuilt image (`cargo xtask image`) unchanged instead of building an ISO:
    /// a disk image as the first hard disk, an ISO as a CD-ROM (the format its manifest
    /// names). Before booting, the image's size and SHA-256 must match the manifest beside
    /// it; the emulator boots a copy in the run's folder, so it cannot change the image; the
    /// kernel ELF that decodes the console is read out of the image and checked against the
    /// manifest. The kernel command line is the one the image was built with. Without
    /// `exit=emulator` in it (as on a board) the kernel halts after its run-end line, and the
    /// harness stops the emulator there (see [`crate::outcome`]); such a run ends only if a
    /// partition may give the run's verdict on a board (`[hypervisor] verdict_partition`).
    /// Cannot be combined with [`Run::switch`], [`Run::module`] or [`Run::kernel`].
    pub fn image(mut self, path: impl Into<PathBuf>) -> Self {
        self.image = Some(path.into());
        self
    }

    /// Calls `f` with every line as soon as it is decoded (live output).
    pub fn on_line(mut self, f: impl FnMut(&Line) + Send + 'static) -> Self {
        self.on_line = Some(Box::new(f));
        self
    }

    /// Types `bytes` into the machine's serial port (COM1's receive side, the
    /// hypervisor's console) as soon as a decoded line contains `after`, and after the
    /// bytes of every earlier `type_after` went in: a script of prompts and answers, as
    /// `expect` would type them. QEMU only ([`crate::emulator::has_serial_input`]).
    pub fn type_after(mut self, after: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        self.typing.push(Typing { after: after.into(), bytes: bytes.into() });
        self
    }

    /// Types whatever arrives on `input` into the machine's serial port as it arrives (a
    /// terminal's keystrokes, for `cargo xtask run`); when its sender is gone the harness
    /// stops the emulator and the run ends as it stands (without a verdict, a failure).
    /// QEMU only.
    pub fn input(mut self, input: std::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        self.input = Some(input);
        self
    }

    /// The kernel command line this run boots with.
    pub fn cmdline(&self) -> String {
        let mut words = vec![CMDLINE_EMULATOR_EXIT.to_string()];
        words.extend(self.switches.iter().cloned());
        words.join(" ")
    }

    /// Performs the run; panics on a harness error (see [`Run::try_execute`]).
    pub fn execute(self) -> Report {
        match self.try_execute() {
            Ok(report) => report,
            Err(e) => panic!("{e}"),
        }
    }

    /// Builds the ISO (or takes the prebuilt image) in a fresh folder, starts the emulator,
    /// decodes its console while it runs, kills it (its whole process group) at the deadline,
    /// and judges the run.
    pub fn try_execute(mut self) -> Result<Report, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("bulkhead-hil-{}-", sanitize(&self.name)))
            .tempdir()
            .map_err(|e| HarnessError(format!("cannot create a run folder: {e}")))?;
        let (elf, cmdline, medium) = match self.image.clone() {
            Some(image) => {
                if !self.switches.is_empty() || !self.modules.is_empty() || self.kernel.is_some() {
                    return Err(HarnessError(format!(
                        "{} is booted unchanged: its kernel, command line and modules cannot be changed",
                        image.display()
                    )));
                }
                let booted = prepare_image(&image, dir.path())?;
                (booted.kernel, booted.cmdline, booted.medium)
            }
            None => {
                let cmdline = self.cmdline();
                (self.build_iso(&cmdline, dir.path())?, cmdline, Medium::Cdrom)
            }
        };
        // A text-console kernel has no table and needs none; a defmt stream without one is
        // reported by the decoder, never silently lost.
        let table = kernel::optional_defmt_table(&elf).map_err(HarnessError)?;
        // A kernel that does not end the emulator halts after its run-end line.
        let stop_at_run_end = !cmdline.split_whitespace().any(|w| w == CMDLINE_EMULATOR_EXIT);

        let mut cmd = self
            .emulator
            .command(self.cpus, dir.path(), medium)
            .map_err(|e| HarnessError(format!("cannot write the emulator config: {e}")))?;
        if self.emulator.is_qemu() {
            cmd.args(&self.qemu_args);
        } else if !self.bochs_lines.is_empty() {
            let path = dir.path().join(crate::emulator::BOCHS_CONFIG_FILE);
            let extended = std::fs::read_to_string(&path).map(|config| config + &self.bochs_lines.join("\n") + "\n");
            extended
                .and_then(|config| std::fs::write(&path, config))
                .map_err(|e| HarnessError(format!("cannot extend {}: {e}", path.display())))?;
        }
        let mut serial_input = self.open_serial_input(dir.path())?;
        let (mut child, command_line, started) = spawn_in(cmd, dir.path())?;
        let mut typing = std::mem::take(&mut self.typing).into_iter().peekable();
        let mut typed: Vec<(String, Duration)> = Vec::new();

        let mut decoder = ConsoleDecoder::new(table.as_deref());
        let mut raw = Vec::new();
        let mut lines: Vec<Line> = Vec::new();
        let mut fresh: Vec<Line> = Vec::new();
        let mut serial: Option<File> = None;
        let mut buf = vec![0u8; 64 * 1024];
        let mut run_end_at: Option<Instant> = None;
        let deadline = started + self.timeout;

        let ending = loop {
            let exited = child.0.try_wait().map_err(|e| HarnessError(format!("cannot wait for the emulator: {e}")))?;
            // Read after checking for exit, so nothing written before the exit is missed.
            read_serial(dir.path(), &mut serial, &mut buf, &mut raw, &mut decoder, &mut fresh);
            for line in fresh.drain(..) {
                if line.is_run_end() && run_end_at.is_none() {
                    run_end_at = Some(Instant::now());
                }
                if let Some(f) = self.on_line.as_mut() {
                    f(&line);
                }
                if let Some(input) = serial_input.as_mut()
                    && typing.peek().is_some_and(|t| line.to_string().contains(&t.after))
                    && let Some(t) = typing.next()
                {
                    type_into(input, &t.bytes)?;
                    typed.push((t.after, started.elapsed()));
                }
                lines.push(line);
            }
            let mut input_closed = false;
            if let (Some(input), Some(keys)) = (serial_input.as_mut(), self.input.as_ref()) {
                loop {
                    match keys.try_recv() {
                        Ok(bytes) => type_into(input, &bytes)?,
                        Err(std::sync::mpsc::TryRecvError::Empty) => break,
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                            input_closed = true;
                            break;
                        }
                    }
                }
            }
            if let Some(status) = exited {
                break Ending::Exited(Exit::from(status));
            }
            // The keyboard was closed (Ctrl-A X in `cargo xtask run`): the run is over.
            if input_closed && exited.is_none() {
                child.kill();
                break Ending::Stopped;
            }
            if stop_at_run_end && run_end_at.is_some() {
                child.kill();
                break Ending::Stopped;
            }
            let now = Instant::now();
            if now >= deadline {
                child.kill();
                break Ending::TimedOut;
            }
            if run_end_at.is_some_and(|t| now.duration_since(t) >= EXIT_GRACE) {
                child.kill();
                break Ending::Lingered(EXIT_GRACE);
            }
            std::thread::sleep(POLL);
        };
        let elapsed = started.elapsed();
        // What a killed emulator wrote between the last poll and its end.
        read_serial(dir.path(), &mut serial, &mut buf, &mut raw, &mut decoder, &mut fresh);
        decoder.finish(&mut fresh);
        for line in fresh.drain(..) {
            if let Some(f) = self.on_line.as_mut() {
                f(&line);
            }
            lines.push(line);
        }

        let outcome = decide(self.emulator, &lines, &self.expectations, ending);
        let exit = match ending {
            Ending::Exited(exit) => Some(exit),
            _ => None,
        };
        let mut report = Report {
            name: self.name,
            emulator: self.emulator,
            cpus: self.cpus,
            cmdline,
            outcome,
            lines,
            command_line,
            exit,
            elapsed,
            timeout: self.timeout,
            malformed_frames: decoder.malformed_frames(),
            serial: raw,
            log_dir: None,
            log_files: Vec::new(),
            typed,
            not_typed: typing.map(|t| t.after).collect(),
            collected: self
                .collect
                .iter()
                .filter_map(|n| Some((n.clone(), std::fs::read(dir.path().join(n)).ok()?)))
                .collect(),
        };
        report.keep_logs(dir.path());
        Ok(report)
    }
}

impl Run {
    /// Opens the machine's serial input in the run folder `dir` (made by
    /// [`Emulator::command`]) when this run types anything; before the emulator starts, so
    /// no byte can be missed. A FIFO opened read-write never waits for a reader.
    fn open_serial_input(&self, dir: &Path) -> Result<Option<File>, HarnessError> {
        if self.typing.is_empty() && self.input.is_none() {
            return Ok(None);
        }
        if !crate::emulator::has_serial_input(self.emulator) {
            return Err(HarnessError(format!("{} takes no serial input from the harness", self.emulator)));
        }
        let path = dir.join(SERIAL_INPUT_FILE);
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map(Some)
            .map_err(|e| HarnessError(format!("cannot open the serial input {}: {e}", path.display())))
    }

    /// Builds the ISO for this run in `dir` and returns the kernel ELF it boots.
    fn build_iso(&mut self, cmdline: &str, dir: &Path) -> Result<PathBuf, HarnessError> {
        let image = match self.kernel.take() {
            Some(image) => image,
            None => kernel::kernel_image(&self.config).map_err(HarnessError)?,
        };
        self.modules.splice(0..0, image.modules.iter().cloned());
        let mut iso = bulkhead_image::Iso::new(&image.elf).cmdline(cmdline);
        for (path, string) in &self.modules {
            iso = iso.module(path, string);
        }
        iso.build(&dir.join(ISO_FILE)).map_err(|e| HarnessError(format!("cannot build the ISO: {e}")))?;
        if let Ok(cfg) = iso.grub_cfg() {
            let _ = std::fs::write(dir.join("grub.cfg"), cfg);
        }
        Ok(image.elf)
    }
}

/// A prebuilt image ready to boot from a run's folder.
struct PreparedImage {
    kernel: PathBuf,
    cmdline: String,
    medium: Medium,
}

/// Copies `image` into `dir` as the boot medium its manifest names, checks the copy against
/// the manifest (refusing an image whose bytes changed since it was built), and takes the
/// kernel ELF out of it.
fn prepare_image(image: &Path, dir: &Path) -> Result<PreparedImage, HarnessError> {
    let manifest =
        Manifest::read_for(image).map_err(|e| HarnessError(format!("cannot boot {}: {e}", image.display())))?;
    let (name, medium) = match manifest.format {
        Format::Disk => (DISK_FILE, Medium::Disk { bytes: manifest.image.size }),
        Format::Iso => (ISO_FILE, Medium::Cdrom),
    };
    let copy = dir.join(name);
    std::fs::copy(image, &copy)
        .map_err(|e| HarnessError(format!("cannot copy {} to {}: {e}", image.display(), copy.display())))?;
    manifest.verify_image(&copy).map_err(|mismatch| {
        let mismatch = match mismatch {
            Mismatch::Differs { expected, actual, .. } => {
                Mismatch::Differs { image: image.to_path_buf(), expected, actual }
            }
            other => other,
        };
        HarnessError(format!("refusing to boot it: {mismatch}"))
    })?;
    let elf = manifest.read_kernel(&copy).map_err(|e| {
        HarnessError(format!("cannot take the kernel out of {} to decode its console: {e}", image.display()))
    })?;
    let kernel = dir.join(KERNEL_FILE);
    std::fs::write(&kernel, elf).map_err(|e| HarnessError(format!("cannot write {}: {e}", kernel.display())))?;
    Ok(PreparedImage { kernel, cmdline: manifest.kernel.cmdline, medium })
}

/// Writes typed bytes to the serial input FIFO (its 64 KiB buffer takes far more than
/// anyone types, so this does not wait).
fn type_into(input: &mut File, bytes: &[u8]) -> Result<(), HarnessError> {
    use std::io::Write;
    input.write_all(bytes).map_err(|e| HarnessError(format!("cannot type into the serial input: {e}")))
}

/// Reads whatever the emulator has added to the serial file, keeps it in `raw` and
/// decodes it.
fn read_serial(
    dir: &Path,
    serial: &mut Option<File>,
    buf: &mut [u8],
    raw: &mut Vec<u8>,
    decoder: &mut ConsoleDecoder<'_>,
    out: &mut Vec<Line>,
) {
    if serial.is_none() {
        *serial = File::open(dir.join(SERIAL_FILE)).ok();
    }
    if let Some(file) = serial.as_mut() {
        while let Ok(n) = file.read(buf) {
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            decoder.feed(&buf[..n], out);
        }
    }
}

/// Starts an emulator in the run folder `dir`, its output to the folder's stdout and
/// stderr files, in a process group of its own, killed with the harness (Ctrl-C on
/// `cargo test`, a panicking test): the child, its command line (for the report) and when
/// it started.
pub(crate) fn spawn_in(mut cmd: Command, dir: &Path) -> Result<(KillOnDrop, String, Instant), HarnessError> {
    let open =
        |name: &str| File::create(dir.join(name)).map_err(|e| HarnessError(format!("cannot create {name}: {e}")));
    cmd.current_dir(dir).stdin(Stdio::null()).stdout(open(STDOUT_FILE)?).stderr(open(STDERR_FILE)?).process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // If the harness dies, take the emulator with it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let command_line = shell_words(&cmd);
    let started = Instant::now();
    let child = cmd.spawn().map_err(|e| {
        HarnessError(format!(
            "cannot start {} ({e}); is it installed? `cargo xtask test` installs it",
            cmd.get_program().to_string_lossy()
        ))
    })?;
    Ok((KillOnDrop(child), command_line, started))
}

/// The emulator process; killed with its whole process group unless it has exited.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl KillOnDrop {
    pub(crate) fn kill(&mut self) {
        let pid = self.0.id() as libc::pid_t;
        // SAFETY: kill has no memory-safety preconditions. The child leads its own process
        // group (process_group(0)) and has not been reaped yet, so the group id is ours.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.kill();
        }
    }
}

/// The command as it could be pasted into a shell (run in the run's folder).
pub(crate) fn shell_words(cmd: &std::process::Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_=,.:/+@".contains(c)) {
                a.into_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn sanitize(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if s.is_empty() { "run".into() } else { s }
}

/// What happened in a run.
#[derive(Debug)]
pub struct Report {
    pub name: String,
    pub emulator: Emulator,
    pub cpus: u8,
    /// The kernel command line.
    pub cmdline: String,
    pub outcome: Outcome,
    /// Every decoded line, in order.
    pub lines: Vec<Line>,
    /// The exact emulator command line (run in the run's folder).
    pub command_line: String,
    /// How the emulator exited, if it exited by itself.
    pub exit: Option<Exit>,
    /// From the emulator's start to its end.
    pub elapsed: Duration,
    pub timeout: Duration,
    /// defmt frames and text log lines that did not decode.
    pub malformed_frames: usize,
    /// The raw console bytes, as the emulator wrote them (firmware text, the marker, then
    /// frames or text lines): what a capture of the board's serial port would hold.
    pub serial: Vec<u8>,
    /// Where the run's files were kept (only when the run did not pass, or with
    /// `BULKHEAD_KEEP_LOGS=1`).
    pub log_dir: Option<PathBuf>,
    pub log_files: Vec<PathBuf>,
    /// The [`Run::type_after`] steps that typed, with when (since the emulator started).
    pub typed: Vec<(String, Duration)>,
    /// The steps still waiting for their line when the run ended, in order.
    pub not_typed: Vec<String>,
    /// The files of [`Run::collect`] that the emulator wrote: (name, bytes).
    pub collected: Vec<(String, Vec<u8>)>,
}

impl Report {
    /// The bytes of a file [`Run::collect`] named, if the emulator wrote it.
    pub fn collected(&self, file_name: &str) -> Option<&[u8]> {
        self.collected.iter().find(|(n, _)| n == file_name).map(|(_, b)| b.as_slice())
    }

    /// Whether any decoded line contains `text`.
    pub fn contains(&self, text: &str) -> bool {
        self.lines.iter().any(|l| l.to_string().contains(text))
    }

    /// What partition `name` printed on its console, in order, without the `[name] `
    /// prefix the hypervisor puts before each of its lines.
    pub fn partition_console(&self, name: &str) -> Vec<String> {
        let prefix = format!("[{name}] ");
        self.lines
            .iter()
            .filter(|l| l.partition_console() == Some(name))
            .filter_map(|l| l.message().strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    /// The first line of partition `name`'s console that contains `text`; panics with the
    /// run's diagnostic when there is none (a test's "this must have been printed").
    pub fn console_line(&self, name: &str, text: &str) -> String {
        self.partition_console(name)
            .into_iter()
            .find(|l| l.contains(text))
            .unwrap_or_else(|| panic!("not on the {name} partition's console: {text}\n{}", self.diagnostic()))
    }

    /// The decoded lines, formatted, one per line.
    pub fn log_text(&self) -> String {
        self.lines.iter().fold(String::new(), |mut s, l| {
            let _ = writeln!(s, "{l}");
            s
        })
    }

    /// Everything needed to understand a run that did not pass: the verdict and its
    /// reasons, the exact emulator command line, where the logs are, and the last
    /// [`DIAGNOSTIC_LINES`] lines of the console.
    pub fn diagnostic(&self) -> String {
        let mut d = self.summary();
        let skip = self.lines.len().saturating_sub(DIAGNOSTIC_LINES);
        let _ = writeln!(d, "last {} of {} decoded lines:", self.lines.len() - skip, self.lines.len());
        for line in &self.lines[skip..] {
            let _ = writeln!(d, "  {line}");
        }
        d
    }

    /// [`Report::diagnostic`] without the console lines (for when they were shown live).
    pub fn summary(&self) -> String {
        let mut d = String::new();
        let _ = writeln!(
            d,
            "HIL run `{}` on {} with {} cpu(s): {}",
            self.name,
            self.emulator,
            self.cpus,
            match &self.outcome {
                Outcome::Passed => "passed".to_string(),
                Outcome::Failed(_) => "FAILED".to_string(),
                Outcome::TimedOut => format!("TIMED OUT after {:.1} s and was killed", self.timeout.as_secs_f32()),
            }
        );
        if let Outcome::Failed(reason) = &self.outcome {
            let _ = writeln!(d, "reasons:");
            for r in reason.lines() {
                let _ = writeln!(d, "  - {r}");
            }
        }
        let _ = writeln!(
            d,
            "emulator: {} after {:.1} s (timeout {:.0} s)",
            self.exit.map_or_else(|| "killed by the harness".to_string(), |e| e.to_string()),
            self.elapsed.as_secs_f32(),
            self.timeout.as_secs_f32()
        );
        let _ = writeln!(d, "kernel command line: {}", self.cmdline);
        let _ = writeln!(d, "emulator command line: {}", self.command_line);
        // Typing that never happened, or happened late, explains a shell that "did not
        // answer": the line it waited for never came whole.
        for (after, at) in &self.typed {
            let _ = writeln!(d, "typed after {after:?} at {:.1} s", at.as_secs_f32());
        }
        if let Some(first) = self.not_typed.first() {
            let _ = writeln!(
                d,
                "never typed: {} step(s), the first waiting for a line with {first:?}",
                self.not_typed.len()
            );
        }
        if self.malformed_frames > 0 {
            let _ = writeln!(d, "malformed frames or lines skipped: {}", self.malformed_frames);
        }
        if let Some(dir) = &self.log_dir
            && let Ok(log) = std::fs::read_to_string(dir.join(crate::emulator::QEMU_LOG_FILE))
            && log.lines().any(|l| l.trim() == "Triple fault")
        {
            // A triple fault outside any guest: the hypervisor (or the emulator under it)
            // lost the machine; QEMU exits as for a shutdown, so say which it was.
            let _ = writeln!(d, "qemu.log: Triple fault (a CPU outside any guest; QEMU then exits)");
        }
        match &self.log_dir {
            Some(dir) => {
                let _ = writeln!(d, "logs kept in {}:", dir.display());
                for f in &self.log_files {
                    let _ = writeln!(d, "  {}", f.display());
                }
            }
            None => {
                let _ = writeln!(d, "logs: not kept (set {KEEP_LOGS_ENV}=1 to keep them)");
            }
        }
        d
    }

    /// Panics with [`Report::diagnostic`] unless the run passed.
    #[track_caller]
    pub fn assert_passed(&self) {
        if !self.outcome.is_passed() {
            panic!("\n{}", self.diagnostic());
        }
    }

    /// Copies the run's files (without the image) to `target/hil-logs/<name>/` when the run
    /// did not pass; removes that folder's stale contents when it did.
    fn keep_logs(&mut self, run_dir: &Path) {
        let _ = std::fs::write(run_dir.join("decoded.log"), self.log_text());
        let _ = std::fs::write(run_dir.join("command.txt"), &self.command_line);
        let dest = kernel::target_dir().join("hil-logs").join(sanitize(&self.name));
        let _ = std::fs::remove_dir_all(&dest);
        let keep = !self.outcome.is_passed() || std::env::var_os(KEEP_LOGS_ENV).is_some();
        if !keep || std::fs::create_dir_all(&dest).is_err() {
            return;
        }
        let mut files = Vec::new();
        if let Ok(entries) = std::fs::read_dir(run_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                // Plain files only: not the serial input FIFO (a copy would wait for a
                // writer) nor the link QEMU writes its serial output through.
                if name == ISO_FILE || name == DISK_FILE || !entry.file_type().is_ok_and(|t| t.is_file()) {
                    continue;
                }
                let to = dest.join(&name);
                if std::fs::copy(entry.path(), &to).is_ok() {
                    files.push(to);
                }
            }
        }
        files.sort();
        self.log_dir = Some(dest);
        self.log_files = files;
    }
}

/// Writes `source` with its board swapped for the emulator's family (see [`Run::scenario`])
/// under `target/bulkhead-configs/`, and returns that file. Relative board paths become
/// absolute (the copy lives elsewhere); the payloads are `@guests/` names, which resolve
/// anywhere. The file is replaced atomically: parallel tests may adapt the same scenario.
fn adapt_to_emulator(source: &Path, emulator: Emulator) -> std::io::Result<PathBuf> {
    let (from, to) = if emulator.is_qemu() { ("bochs-pc", "qemu-q35") } else { ("qemu-q35", "bochs-pc") };
    let text = std::fs::read_to_string(source)?;
    let dir = source.parent().unwrap_or(Path::new("."));
    let mut adapted = String::new();
    for line in text.lines() {
        match line.strip_prefix("board = \"").and_then(|rest| rest.strip_suffix('"')) {
            Some(board) => {
                let board = board.replace(from, to);
                let board = if board.contains('/') { dir.join(&board).display().to_string() } else { board };
                adapted.push_str(&format!("board = {board:?}\n"));
            }
            None => {
                adapted.push_str(line);
                adapted.push('\n');
            }
        }
    }
    let out_dir = kernel::target_dir().join("bulkhead-configs");
    std::fs::create_dir_all(&out_dir)?;
    let stem = source.file_stem().and_then(|s| s.to_str()).unwrap_or("system");
    let family = if emulator.is_qemu() { "qemu" } else { "bochs" };
    let out = out_dir.join(format!("{stem}.{family}.toml"));
    static TEMPORARY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = TEMPORARY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = out_dir.join(format!("{stem}.{family}.{}-{unique}.tmp", std::process::id()));
    std::fs::write(&temporary, adapted)?;
    std::fs::rename(&temporary, &out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_always_has_emulator_exit_first() {
        let run = Run::new(Emulator::QemuBios).switch("test=ud").switch("x=1");
        assert_eq!(run.cmdline(), "exit=emulator test=ud x=1");
        assert_eq!(Run::new(Emulator::Bochs).cmdline(), "exit=emulator");
    }

    #[test]
    fn run_is_named_after_the_test() {
        let run = Run::new(Emulator::QemuBios);
        assert!(run.name.contains("run_is_named_after_the_test"), "{}", run.name);
        assert_eq!(sanitize("hil::boot::qemu"), "hil__boot__qemu");
    }

    #[test]
    fn shell_words_quote_what_needs_it() {
        let mut cmd = std::process::Command::new("qemu-system-x86_64");
        cmd.args(["-serial", "file:serial.bin", "a b", "it's"]);
        assert_eq!(shell_words(&cmd), r"qemu-system-x86_64 -serial file:serial.bin 'a b' 'it'\''s'");
    }

    fn report(outcome: Outcome, n: usize) -> Report {
        Report {
            name: "t".into(),
            emulator: Emulator::QemuBios,
            cpus: 2,
            cmdline: String::new(),
            outcome,
            lines: (0..n).map(|i| Line::log("cpu0", crate::console::Level::Info, format!("line {i}"))).collect(),
            command_line: "qemu-system-x86_64 -M q35".into(),
            exit: Some(Exit::Code(0)),
            elapsed: Duration::from_secs(1),
            timeout: Duration::from_secs(60),
            malformed_frames: 0,
            serial: Vec::new(),
            log_dir: Some("target/hil-logs/t".into()),
            log_files: vec!["target/hil-logs/t/serial.bin".into()],
            typed: vec![("login:".into(), Duration::from_millis(2500))],
            not_typed: vec!["$ ".into(), "# ".into()],
            collected: Vec::new(),
        }
    }

    #[test]
    fn diagnostic_has_reasons_last_lines_command_and_logs() {
        let r = report(Outcome::Failed("first\nsecond".into()), 80);
        let d = r.diagnostic();
        assert!(d.contains("  - first\n  - second\n"), "{d}");
        assert!(d.contains("last 50 of 80 decoded lines"), "{d}");
        assert!(d.contains("line 79") && d.contains("line 30") && !d.contains("line 29\n"));
        assert!(d.contains("emulator command line: qemu-system-x86_64 -M q35"));
        assert!(d.contains("target/hil-logs/t/serial.bin"));
        assert!(d.contains("typed after \"login:\" at 2.5 s\n"), "{d}");
        assert!(d.contains("never typed: 2 step(s), the first waiting for a line with \"$ \"\n"), "{d}");
    }

    #[test]
    fn diagnostic_names_a_triple_fault_from_qemus_log() {
        let dir = crate::kernel::target_dir().join("hil-logs-test-triple-fault");
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = report(Outcome::Failed("exited".into()), 3);
        r.log_dir = Some(dir.clone());
        std::fs::write(dir.join(crate::emulator::QEMU_LOG_FILE), "CPU Reset (CPU 0)\nEAX=0\n").unwrap();
        assert!(!r.diagnostic().contains("Triple fault"));
        std::fs::write(dir.join(crate::emulator::QEMU_LOG_FILE), "CPU Reset (CPU 0)\nTriple fault\n").unwrap();
        assert!(r.diagnostic().contains("qemu.log: Triple fault"), "{}", r.diagnostic());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn assert_passed_panics_unless_passed() {
        report(Outcome::Passed, 3).assert_passed();
        let failed = std::panic::catch_unwind(|| report(Outcome::TimedOut, 3).assert_passed());
        let msg = failed.unwrap_err();
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(msg.contains("TIMED OUT"), "{msg}");
    }

    #[test]
    fn scenario_board_follows_the_emulator() {
        let dir = crate::kernel::target_dir().join("bulkhead-configs-test");
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("scenario.toml");
        std::fs::write(&source, "name = \"s\"\nboard = \"bochs-pc\"\n[hypervisor]\n").unwrap();
        let qemu = std::fs::read_to_string(adapt_to_emulator(&source, Emulator::QemuBios).unwrap()).unwrap();
        assert!(qemu.contains("board = \"qemu-q35\"\n") && qemu.starts_with("name = \"s\"\n"), "{qemu}");
        std::fs::write(&source, "board = \"boards/qemu-q35-3cpu.toml\"\n").unwrap();
        let bochs = std::fs::read_to_string(adapt_to_emulator(&source, Emulator::Bochs).unwrap()).unwrap();
        let expected = format!("board = {:?}\n", dir.join("boards/bochs-pc-3cpu.toml").display().to_string());
        assert_eq!(bochs, expected);
    }
}
