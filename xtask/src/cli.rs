//! The command line of `cargo xtask`: one usage text per command (`cargo xtask help
//! COMMAND`, `cargo xtask COMMAND --help`), parsing into a [`Task`], and the nearest command
//! suggested for a misspelt one.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use bulkhead_tests::Emulator;

/// One command: its name, its synopsis and what it does.
#[derive(Debug, PartialEq, Eq)]
pub struct Command {
    pub name: &'static str,
    pub synopsis: &'static str,
    pub help: &'static str,
}

pub const COMMANDS: &[Command] = &[
    Command {
        name: "run",
        synopsis: "run [--emulator qemu|bochs|bochs-ryzen] [--uefi] [--cpus N] [--timeout SECS] \
                   [--config PATH | --image PATH] [-- SWITCH...]",
        help: "\
Builds the hypervisor and its boot image, boots it in an emulator and shows the decoded
console live; exits 0 only if the run ended in success.

  --emulator E   qemu (default: QEMU q35 TCG, AMD SVM backend), bochs (Bochs
                 corei7_skylake_x, Intel VT-x backend) or bochs-ryzen (Bochs ryzen, SVM)
  --uefi         boot QEMU with OVMF (UEFI) instead of SeaBIOS
  --cpus N       CPUs of the emulated machine (default 2, or the CPUs of the system's
                 board if it has more)
  --timeout S    seconds before the run is stopped as timed out (default 60; none for an
                 interactive run)
  --config PATH  the system file to build (default board/systems/demo.toml, with Bochs
                 board/systems/demo-bochs.toml)
  --image PATH   boot this image (ISO or disk, from `cargo xtask image`) unchanged
                 instead of building one; its manifest names the kernel that decodes the
                 console. The image's kernel has no `exit=emulator`, as on a board, so the
                 run is judged from the console and the emulator is stopped once the
                 kernel printed its run-end line
  -- SWITCH...   extra kernel command-line words, e.g. `-- test=ud` (not with --image)

Keyboard: when the system names a `console_input` partition, standard input is a
terminal and the emulator is QEMU, what you type goes to that partition (its virtual
UART at COM1), e.g. a Linux shell: `cargo xtask run --config
board/systems/linux-shell.toml`. Ctrl-A X quits, Ctrl-A Ctrl-A sends Ctrl-A; Ctrl-C
goes to the partition. Other runs read no keys and end at their verdict as before.",
    },
    Command {
        name: "test",
        synopsis: "test [FILTER]",
        help: "\
Runs the host unit tests and the hardware-in-the-loop tests (`cargo test FILTER` at the
workspace root) after building the default system once; ends with one line of totals.",
    },
    Command {
        name: "lint",
        synopsis: "lint",
        help: "\
`cargo fmt --check`, and clippy with -D warnings on the host crates, and on the kernel, the
guests and the unikernel runtime for their target (the kernel also with its `profile`
feature).",
    },
    Command {
        name: "build",
        synopsis: "build [--config PATH]",
        help: "\
Builds the guests and the hypervisor with a system configuration compiled in (default
board/systems/demo.toml). `BULKHEAD_CONFIG=PATH` does the same for a plain cargo build.",
    },
    Command {
        name: "check",
        synopsis: "check PATH",
        help: "\
Validates a system file: every problem as `file:line:col: [rule] message` with a hint, and
a warning for what this version of the hypervisor accepts but cannot honour yet; or a
summary of partitions, cores, memory and connections, and the hypervisor's memory budget
(text, stacks, tables, state), which must fit in reserved_memory (rule hypervisor-memory).",
    },
    Command {
        name: "bench",
        synopsis: "bench [--linux | --unikernel | --memory | --profile CASE] [--json]",
        help: "\
Deterministic benchmarks in Bochs (guest RDTSC = instruction count), VT-x and SVM:
hypervisor instructions per CPUID, I/O-port and MSR exit round trip; VM exits per million
guest instructions of a compute loop under a 1 kHz local APIC timer; Hyper-V messaging:
call round trips, ping-pong latency, throughput, receiver exits; unikernel partitions (a
Rust std program): the runtime's start to main, a console line, sleep wake-up lateness over
10 000 periods of 1 ms. With --unikernel, only the unikernel cases. With --linux, instead:
Debian's kernel to /init in instructions, in a partition on Bochs VT-x against the same
kernel booted directly on the same machine, and their ratio (minutes of wall time).
With --profile CASE (cpuid-exit, io-exit, msr-exit, null-hypercall, hv-signal-event,
hv-post-message-240, or all): a hypervisor built with per-exit TSC stamps breaks that
case's round trip down by phase (guest, transition, dispatch, handler, return) on both
backends. With --memory (the memory-footprint case): builds the demo systems and a
4-core, 3-partition one and reports the hypervisor's text, data, bss, tables and stacks
from each ELF, against the estimate `check` prints and a 2 MiB target for systems of at
most 4 CPUs and 3 partitions; exits non-zero when one is missed. Figures and method:
docs/performance.md.",
    },
    Command {
        name: "image",
        synopsis: "image [--format disk|iso] [--out PATH] [--config PATH]",
        help: "\
Writes a bootable image of the hypervisor and every partition payload, and beside it a
manifest (PATH.manifest.json: version, commit, config files, SHA-256 of every file and of
the image). Two disk images of one commit and configuration are identical bytes
(timestamps from SOURCE_DATE_EPOCH, else the commit's time); an ISO is not, since
grub-mkrescue stamps it with the current time.

  --format disk  a raw GPT disk image to flash onto a board's boot medium: boots UEFI
                 (EFI System Partition) and legacy BIOS (BIOS boot partition); the default,
                 written to out/bulkhead.img
  --format iso   a hybrid GRUB ISO (CD or USB stick, BIOS and UEFI), out/bulkhead.iso;
                 not byte-reproducible
  --out PATH     where to write the image
  --config PATH  the system file to build (default board/systems/demo.toml)",
    },
    Command {
        name: "flash",
        synopsis: "flash --image PATH --device DEV [--yes] [--allow-file]",
        help: "\
Writes an image onto a disk and verifies it: shows the target's model, size and serial and
asks before writing; refuses (writing nothing) a device with a mounted partition, the
device holding / or /boot, one smaller than the image, a regular file unless
--allow-file, and an image whose manifest hashes do not match. Writes with progress,
flushes, reads the written range back and compares its SHA-256 with the manifest.

  --image PATH   the image (its manifest PATH.manifest.json must be beside it)
  --device DEV   the target disk, e.g. /dev/sdb (a whole disk, not a partition)
  --yes          do not ask (the checks still apply)
  --allow-file   allow a regular file as the target (for tests and image copies)",
    },
    Command {
        name: "console",
        synopsis: "console [--port DEV [--baud N] | --file CAPTURE] [--image PATH | --elf PATH]",
        help: "\
Decodes a board's serial console: live from a serial port, or from a capture file. Prints
the same lines as `cargo xtask run`; firmware and GRUB text before the hypervisor's
stream pass through as `[console] ...`, what does not decode is noted as `[decoder] ...`,
and a line of totals ends the output (on stderr). A text-format console
(`console_format = \"text\"`) needs no kernel ELF; a defmt console needs the ELF of the
kernel the board runs, looked for once its stream begins.

  --port DEV     the serial port, e.g. /dev/ttyUSB0, read raw at 8N1 without flow control
                 until Ctrl-C or until the port hangs up
  --baud N       its speed (default 115200, what GRUB and the hypervisor use)
  --file PATH    a capture of the console's raw bytes (a run's serial.bin, a logger's file)
  --image PATH   the image the board runs, whose manifest names the kernel ELF (default
                 out/bulkhead.img, else out/bulkhead.iso); the kernel is taken out of
                 the image and checked against the manifest's SHA-256
  --elf PATH     the kernel ELF itself",
    },
    Command {
        name: "linux-assets",
        synopsis: "linux-assets",
        help: "\
Obtains Debian's Linux for Linux partitions through apt, the machine's package source:
the kernel image package `linux-image-amd64` depends on, its `linux-headers` (with the
`-common` part and `linux-kbuild`, for building a module) and `busybox-static`; unpacks
them into target/linux-assets/<kernel package version>/ (vmlinuz, config, System.map,
busybox, headers/), builds the initramfs there (initramfs.cpio: busybox, /init, a shell on
the console) and prints the paths and versions. A later call reuses the cache while apt
offers the same versions; after `apt-get update` brings a newer kernel, the next call
fetches it. Needs apt's package lists (`apt-get update`, as root, once). See
docs/testing.md.",
    },
    Command { name: "help", synopsis: "help [COMMAND]", help: "Shows the commands, or one command's options." },
];

pub fn command(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// The overview: every command's synopsis.
pub fn usage() -> String {
    let mut text = String::from(
        "usage: cargo xtask <command> [options]   (cargo xtask help <command> for details)\n\ncommands:\n",
    );
    for c in COMMANDS {
        text.push_str("  ");
        text.push_str(c.synopsis);
        text.push('\n');
    }
    text
}

/// One command's full text.
pub fn command_usage(c: &Command) -> String {
    format!("usage: cargo xtask {}\n\n{}\n", c.synopsis, c.help)
}

/// The image formats `cargo xtask image` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Disk,
    Iso,
}

/// Where the console bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsoleSource {
    Port { path: PathBuf, baud: u32 },
    File(PathBuf),
}

/// What decodes the console's defmt frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelSource {
    /// The default: the image in `out/`.
    Default,
    Image(PathBuf),
    Elf(PathBuf),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Task {
    Run(RunArgs),
    Test {
        filter: Option<String>,
    },
    Lint,
    Build {
        config: Option<PathBuf>,
    },
    Check {
        config: PathBuf,
    },
    Bench {
        json: bool,
        /// The Linux boot group instead of the exit and messaging cases.
        linux: bool,
        /// Only the unikernel cases.
        unikernel: bool,
        /// The phase breakdown of one case (`--profile CASE`) instead.
        profile: Option<String>,
        /// The memory-footprint case (`--memory`) instead.
        memory: bool,
    },
    Image {
        format: ImageFormat,
        out: Option<PathBuf>,
        config: Option<PathBuf>,
    },
    Flash {
        image: PathBuf,
        device: PathBuf,
        yes: bool,
        allow_file: bool,
    },
    Console {
        source: ConsoleSource,
        kernel: KernelSource,
    },
    LinuxAssets,
    /// `help`, or a command's `--help` (None: the overview).
    Help(Option<&'static Command>),
}

#[derive(Debug, PartialEq, Eq)]
pub struct RunArgs {
    pub emulator: Emulator,
    pub cpus: u8,
    pub timeout: Duration,
    /// `--timeout` was given (an interactive run has no deadline otherwise).
    pub timeout_given: bool,
    pub config: Option<PathBuf>,
    pub image: Option<PathBuf>,
    pub switches: Vec<String>,
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            emulator: Emulator::QemuBios,
            cpus: 2,
            timeout: Duration::from_secs(60),
            timeout_given: false,
            config: None,
            image: None,
            switches: Vec::new(),
        }
    }
}

/// A parse error that names the command, so the caller can show that command's usage.
#[derive(Debug)]
pub struct UsageError {
    pub command: Option<&'static Command>,
    pub message: String,
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UsageError {}

/// Options of one command, read one at a time: `--flag`, `--flag VALUE`, `--flag=VALUE`.
struct Options<'a> {
    command: &'static str,
    args: std::slice::Iter<'a, String>,
}

enum Arg {
    /// `--name` with its inline value, if written as `--name=value`.
    Flag(String, Option<String>),
    /// `--` and everything after it.
    Rest(Vec<String>),
    Positional(String),
}

impl<'a> Options<'a> {
    fn next(&mut self) -> Option<Arg> {
        let arg = self.args.next()?;
        if arg == "--" {
            return Some(Arg::Rest(self.args.by_ref().cloned().collect()));
        }
        if arg.starts_with('-') && arg.len() > 1 {
            return Some(match arg.split_once('=') {
                Some((flag, value)) => Arg::Flag(flag.to_string(), Some(value.to_string())),
                None => Arg::Flag(arg.clone(), None),
            });
        }
        Some(Arg::Positional(arg.clone()))
    }

    fn value(&mut self, flag: &str, inline: Option<String>) -> Result<String> {
        match inline.or_else(|| self.args.next().cloned()) {
            Some(v) => Ok(v),
            None => bail!("`{flag}` needs a value"),
        }
    }

    fn no_value(&self, flag: &str, inline: &Option<String>) -> Result<()> {
        if inline.is_some() {
            bail!("`{flag}` takes no value");
        }
        Ok(())
    }

    fn unknown(&self, flag: &str) -> anyhow::Error {
        anyhow::anyhow!("unknown option `{flag}` for `{}`", self.command)
    }
}

pub fn parse(args: &[String]) -> std::result::Result<Task, UsageError> {
    let Some((name, rest)) = args.split_first() else {
        return Ok(Task::Help(None));
    };
    if matches!(name.as_str(), "help" | "--help" | "-h") {
        return match rest.first() {
            None => Ok(Task::Help(None)),
            Some(topic) => match command(topic) {
                Some(c) => Ok(Task::Help(Some(c))),
                None => Err(UsageError { command: None, message: unknown_command(topic) }),
            },
        };
    }
    let Some(cmd) = command(name) else {
        return Err(UsageError { command: None, message: unknown_command(name) });
    };
    if rest.iter().take_while(|a| *a != "--").any(|a| a == "--help" || a == "-h") {
        return Ok(Task::Help(Some(cmd)));
    }
    let mut options = Options { command: cmd.name, args: rest.iter() };
    parse_command(cmd.name, &mut options).map_err(|e| UsageError { command: Some(cmd), message: e.to_string() })
}

fn parse_command(name: &str, o: &mut Options<'_>) -> Result<Task> {
    let mut positional = Vec::new();
    let task = match name {
        "run" => {
            let mut run = RunArgs::default();
            let mut bochs = None;
            let mut uefi = false;
            while let Some(arg) = o.next() {
                match arg {
                    Arg::Flag(flag, inline) => match flag.as_str() {
                        "--emulator" => match o.value(&flag, inline)?.as_str() {
                            "qemu" => bochs = None,
                            "bochs" => bochs = Some(Emulator::Bochs),
                            "bochs-ryzen" => bochs = Some(Emulator::BochsRyzen),
                            other => bail!("unknown emulator `{other}`: use qemu, bochs or bochs-ryzen"),
                        },
                        "--uefi" => {
                            o.no_value(&flag, &inline)?;
                            uefi = true
                        }
                        "--config" => run.config = Some(PathBuf::from(o.value(&flag, inline)?)),
                        "--image" => run.image = Some(PathBuf::from(o.value(&flag, inline)?)),
                        "--cpus" => {
                            let v = o.value(&flag, inline)?;
                            run.cpus = match v.parse::<u8>() {
                                Ok(n) if (1..=64).contains(&n) => n,
                                _ => bail!("`--cpus {v}`: give a number from 1 to 64"),
                            };
                        }
                        "--timeout" => {
                            let v = o.value(&flag, inline)?;
                            run.timeout_given = true;
                            run.timeout = match v.parse::<u64>() {
                                Ok(s) if s > 0 => Duration::from_secs(s),
                                _ => bail!("`--timeout {v}`: give a whole number of seconds"),
                            };
                        }
                        _ => return Err(o.unknown(&flag)),
                    },
                    Arg::Rest(words) => run.switches.extend(words),
                    Arg::Positional(p) => positional.push(p),
                }
            }
            run.emulator = match (bochs, uefi) {
                (None, false) => Emulator::QemuBios,
                (None, true) => Emulator::QemuUefi,
                (Some(bochs), false) => bochs,
                (Some(_), true) => bail!("`--uefi` works with QEMU only (Bochs boots its BIOS)"),
            };
            if run.image.is_some() && run.config.is_some() {
                bail!("`--image` boots a built image; its configuration is already in it, so drop `--config`");
            }
            if run.image.is_some() && !run.switches.is_empty() {
                bail!(
                    "`--image` boots the image unchanged, with the kernel command line it was built with; \
                     switches after `--` cannot be added"
                );
            }
            Task::Run(run)
        }
        "test" => {
            let mut filter = None;
            while let Some(arg) = o.next() {
                match arg {
                    Arg::Positional(p) if filter.is_none() => filter = Some(p),
                    Arg::Positional(p) => bail!("`test` takes one filter, got another: `{p}`"),
                    Arg::Flag(flag, _) => return Err(o.unknown(&flag)),
                    Arg::Rest(words) => positional.extend(words),
                }
            }
            Task::Test { filter }
        }
        "lint" => {
            collect_positional(o, &mut positional)?;
            Task::Lint
        }
        "linux-assets" => {
            collect_positional(o, &mut positional)?;
            Task::LinuxAssets
        }
        "bench" => {
            let (mut json, mut linux, mut unikernel, mut profile, mut memory) = (false, false, false, None, false);
            while let Some(arg) = o.next() {
                match arg {
                    Arg::Flag(flag, inline) if flag == "--json" => {
                        o.no_value(&flag, &inline)?;
                        json = true
                    }
                    Arg::Flag(flag, inline) if flag == "--linux" => {
                        o.no_value(&flag, &inline)?;
                        linux = true
                    }
                    Arg::Flag(flag, inline) if flag == "--unikernel" => {
                        o.no_value(&flag, &inline)?;
                        unikernel = true
                    }
                    Arg::Flag(flag, inline) if flag == "--profile" => profile = Some(o.value(&flag, inline)?),
                    Arg::Flag(flag, inline) if flag == "--memory" => {
                        o.no_value(&flag, &inline)?;
                        memory = true
                    }
                    Arg::Flag(flag, _) => return Err(o.unknown(&flag)),
                    Arg::Positional(p) => positional.push(p),
                    Arg::Rest(words) => positional.extend(words),
                }
            }
            if u8::from(linux) + u8::from(unikernel) + u8::from(memory) + u8::from(profile.is_some()) > 1 {
                bail!("bench: --linux, --unikernel, --memory and --profile are separate groups; give one");
            }
            Task::Bench { json, linux, unikernel, profile, memory }
        }
        "check" => {
            collect_positional(o, &mut positional)?;
            if positional.is_empty() {
                bail!("`check` needs the path of a system file");
            }
            Task::Check { config: PathBuf::from(positional.remove(0)) }
        }
        "build" | "image" => {
            let mut out = None;
            let mut config = None;
            let mut format = ImageFormat::Disk;
            while let Some(arg) = o.next() {
                match arg {
                    Arg::Flag(flag, inline) => match flag.as_str() {
                        "--config" => config = Some(PathBuf::from(o.value(&flag, inline)?)),
                        "--out" if name == "image" => out = Some(PathBuf::from(o.value(&flag, inline)?)),
                        "--format" if name == "image" => {
                            format = match o.value(&flag, inline)?.as_str() {
                                "disk" => ImageFormat::Disk,
                                "iso" => ImageFormat::Iso,
                                other => bail!("unknown image format `{other}`: use disk or iso"),
                            }
                        }
                        _ => return Err(o.unknown(&flag)),
                    },
                    Arg::Positional(p) => positional.push(p),
                    Arg::Rest(words) => positional.extend(words),
                }
            }
            if name == "image" { Task::Image { format, out, config } } else { Task::Build { config } }
        }
        "flash" => {
            let (mut image, mut device, mut yes, mut allow_file) = (None, None, false, false);
            while let Some(arg) = o.next() {
                match arg {
                    Arg::Flag(flag, inline) => match flag.as_str() {
                        "--image" => image = Some(PathBuf::from(o.value(&flag, inline)?)),
                        "--device" => device = Some(PathBuf::from(o.value(&flag, inline)?)),
                        "--yes" | "-y" => {
                            o.no_value(&flag, &inline)?;
                            yes = true
                        }
                        "--allow-file" => {
                            o.no_value(&flag, &inline)?;
                            allow_file = true
                        }
                        _ => return Err(o.unknown(&flag)),
                    },
                    Arg::Positional(p) => positional.push(p),
                    Arg::Rest(words) => positional.extend(words),
                }
            }
            let Some(image) = image else { bail!("`flash` needs `--image PATH` (from `cargo xtask image`)") };
            let Some(device) = device else {
                bail!("`flash` needs `--device DEV`, the whole disk to write, e.g. /dev/sdb")
            };
            Task::Flash { image, device, yes, allow_file }
        }
        "console" => {
            let (mut port, mut baud, mut file, mut kernel) = (None, None, None, KernelSource::Default);
            while let Some(arg) = o.next() {
                match arg {
                    Arg::Flag(flag, inline) => match flag.as_str() {
                        "--port" => port = Some(PathBuf::from(o.value(&flag, inline)?)),
                        "--baud" => {
                            let v = o.value(&flag, inline)?;
                            baud = match v.parse::<u32>() {
                                Ok(b) if b > 0 => Some(b),
                                _ => bail!("`--baud {v}`: give the speed in bits per second, e.g. 115200"),
                            }
                        }
                        "--file" => file = Some(PathBuf::from(o.value(&flag, inline)?)),
                        "--image" | "--elf" if kernel != KernelSource::Default => {
                            bail!("give either `--image` or `--elf`, once")
                        }
                        "--image" => kernel = KernelSource::Image(PathBuf::from(o.value(&flag, inline)?)),
                        "--elf" => kernel = KernelSource::Elf(PathBuf::from(o.value(&flag, inline)?)),
                        _ => return Err(o.unknown(&flag)),
                    },
                    Arg::Positional(p) => positional.push(p),
                    Arg::Rest(words) => positional.extend(words),
                }
            }
            let source = match (port, file) {
                (Some(path), None) => ConsoleSource::Port { path, baud: baud.unwrap_or(115_200) },
                (None, Some(path)) if baud.is_none() => ConsoleSource::File(path),
                (None, Some(_)) => bail!("`--baud` applies to `--port`, not to a capture file"),
                (Some(_), Some(_)) => bail!("give either `--port` or `--file`, not both"),
                (None, None) => bail!("`console` needs `--port DEV` (a serial port) or `--file CAPTURE`"),
            };
            Task::Console { source, kernel }
        }
        other => unreachable!("command `{other}` has no parser"),
    };
    if let Some(extra) = positional.first() {
        bail!("unexpected argument `{extra}`");
    }
    Ok(task)
}

fn collect_positional(o: &mut Options<'_>, positional: &mut Vec<String>) -> Result<()> {
    while let Some(arg) = o.next() {
        match arg {
            Arg::Flag(flag, _) => return Err(o.unknown(&flag)),
            Arg::Positional(p) => positional.push(p),
            Arg::Rest(words) => positional.extend(words),
        }
    }
    Ok(())
}

fn unknown_command(name: &str) -> String {
    match nearest_command(name) {
        Some(near) => format!("unknown command `{name}`; did you mean `{near}`?"),
        None => format!("unknown command `{name}`"),
    }
}

/// The command closest to `name` by edit distance, if it is close enough to be a typo
/// (at most a third of the longer name), or the command `name` begins or abbreviates.
pub fn nearest_command(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    if let Some(c) =
        COMMANDS.iter().find(|c| name.len() >= 2 && (c.name.starts_with(&name) || name.starts_with(c.name)))
    {
        return Some(c.name);
    }
    COMMANDS
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&name, c.name), c.name))
        .filter(|&(d, n)| d > 0 && d * 3 <= n.len().max(name.len()))
        .min()
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn parse_ok(s: &str) -> Task {
        parse(&args(s)).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn parse_err(s: &str) -> String {
        parse(&args(s)).unwrap_err().to_string()
    }

    #[test]
    fn run_defaults_to_qemu_bios_two_cpus_sixty_seconds() {
        assert_eq!(parse_ok("run"), Task::Run(RunArgs::default()));
        let RunArgs { emulator, cpus, timeout, .. } = RunArgs::default();
        assert_eq!((emulator, cpus, timeout), (Emulator::QemuBios, 2, Duration::from_secs(60)));
    }

    #[test]
    fn run_options() {
        assert_eq!(
            parse_ok("run --emulator bochs --cpus 4 --timeout=30 -- test=ud x"),
            Task::Run(RunArgs {
                emulator: Emulator::Bochs,
                cpus: 4,
                timeout: Duration::from_secs(30),
                timeout_given: true,
                switches: vec!["test=ud".into(), "x".into()],
                ..RunArgs::default()
            })
        );
        let Task::Run(r) = parse_ok("run --uefi --emulator=qemu") else { panic!() };
        assert_eq!(r.emulator, Emulator::QemuUefi);
        let Task::Run(r) = parse_ok("run --image out/bulkhead.img --emulator bochs-ryzen") else { panic!() };
        assert_eq!((r.image, r.emulator), (Some("out/bulkhead.img".into()), Emulator::BochsRyzen));
        // `--help` after `--` is a kernel switch, not a request for help.
        let Task::Run(r) = parse_ok("run -- --help") else { panic!() };
        assert_eq!(r.switches, vec!["--help".to_string()]);
    }

    #[test]
    fn bad_arguments_are_explained() {
        for (line, needle) in [
            ("run --emulator vbox", "unknown emulator `vbox`"),
            ("run --uefi --emulator bochs", "QEMU only"),
            ("run --uefi=yes", "takes no value"),
            ("run --cpus 0", "1 to 64"),
            ("run --cpus", "needs a value"),
            ("run --timeout soon", "whole number"),
            ("run --fast", "unknown option `--fast` for `run`"),
            ("run --image a.img --config b.toml", "drop `--config`"),
            ("run --image a.img -- test=ud", "unchanged"),
            ("run extra", "unexpected argument `extra`"),
            ("test a b", "one filter"),
            ("image --out", "needs a value"),
            ("image --format vhd", "unknown image format `vhd`"),
            ("build --out x", "unknown option `--out` for `build`"),
            ("check", "needs the path"),
            ("lint extra", "unexpected argument"),
            ("flash --device /dev/sdz", "needs `--image PATH`"),
            ("flash --image a.img", "needs `--device DEV`"),
            ("console", "needs `--port DEV`"),
            ("console --port /dev/ttyS0 --file x", "not both"),
            ("console --file x --baud 9600", "applies to `--port`"),
            ("console --file x --elf a --image b", "either `--image` or `--elf`"),
            ("console --port /dev/ttyS0 --baud fast", "bits per second"),
            ("frobnicate", "unknown command `frobnicate`"),
            ("help frobnicate", "unknown command"),
        ] {
            let err = parse_err(line);
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn errors_name_their_command_for_its_usage() {
        let err = parse(&args("run --fast")).unwrap_err();
        assert_eq!(err.command.map(|c| c.name), Some("run"));
        assert!(parse(&args("frobnicate")).unwrap_err().command.is_none());
    }

    #[test]
    fn other_commands() {
        assert_eq!(parse_ok("test smp"), Task::Test { filter: Some("smp".into()) });
        assert_eq!(parse_ok("test"), Task::Test { filter: None });
        assert_eq!(parse_ok("lint"), Task::Lint);
        assert_eq!(parse_ok("linux-assets"), Task::LinuxAssets);
        assert!(parse_err("linux-assets --fresh").contains("unknown option"));
        assert_eq!(
            parse_ok("image --out /tmp/x.iso --format iso"),
            Task::Image { format: ImageFormat::Iso, out: Some("/tmp/x.iso".into()), config: None }
        );
        assert_eq!(parse_ok("image"), Task::Image { format: ImageFormat::Disk, out: None, config: None });
        assert_eq!(parse_ok("build --config a.toml"), Task::Build { config: Some("a.toml".into()) });
        assert_eq!(parse_ok("check a.toml"), Task::Check { config: "a.toml".into() });
        assert_eq!(
            parse_ok("bench --json"),
            Task::Bench { json: true, linux: false, unikernel: false, profile: None, memory: false }
        );
        assert_eq!(
            parse_ok("bench --linux"),
            Task::Bench { json: false, linux: true, unikernel: false, profile: None, memory: false }
        );
        assert_eq!(
            parse_ok("bench --unikernel"),
            Task::Bench { json: false, linux: false, unikernel: true, profile: None, memory: false }
        );
        assert_eq!(
            parse_ok("bench --profile cpuid-exit"),
            Task::Bench {
                json: false,
                linux: false,
                unikernel: false,
                profile: Some("cpuid-exit".into()),
                memory: false
            }
        );
        assert_eq!(
            parse_ok("bench --memory --json"),
            Task::Bench { json: true, linux: false, unikernel: false, profile: None, memory: true }
        );
        assert!(parse_err("bench --memory --linux").contains("separate groups"));
        assert!(parse_err("bench --linux --unikernel").contains("separate groups"));
        assert!(parse_err("bench --unikernel --profile all").contains("separate groups"));
        assert!(parse_err("bench --csv").contains("unknown option"));
        assert_eq!(
            parse_ok("flash --image out/b.img --device /dev/sdz -y --allow-file"),
            Task::Flash { image: "out/b.img".into(), device: "/dev/sdz".into(), yes: true, allow_file: true }
        );
        assert_eq!(
            parse_ok("console --port /dev/ttyUSB0 --baud 9600 --elf k.elf"),
            Task::Console {
                source: ConsoleSource::Port { path: "/dev/ttyUSB0".into(), baud: 9600 },
                kernel: KernelSource::Elf("k.elf".into())
            }
        );
        assert_eq!(
            parse_ok("console --file cap.bin"),
            Task::Console { source: ConsoleSource::File("cap.bin".into()), kernel: KernelSource::Default }
        );
        assert_eq!(parse(&[]).unwrap(), Task::Help(None));
    }

    #[test]
    fn every_command_has_help_and_help_works_both_ways() {
        for c in COMMANDS {
            assert!(c.synopsis.starts_with(c.name), "{}", c.name);
            assert!(!c.help.is_empty());
            assert_eq!(parse_ok(&format!("help {}", c.name)), Task::Help(Some(c)));
            if c.name != "help" {
                assert_eq!(parse_ok(&format!("{} --help", c.name)), Task::Help(Some(c)));
                assert_eq!(parse_ok(&format!("{} -h", c.name)), Task::Help(Some(c)));
            }
            assert!(usage().contains(c.synopsis));
        }
        assert!(usage().contains("bochs-ryzen"));
    }

    #[test]
    fn misspelt_commands_get_the_nearest() {
        assert_eq!(nearest_command("tset"), Some("test"));
        assert_eq!(nearest_command("rnu"), Some("run"));
        assert_eq!(nearest_command("imag"), Some("image"));
        assert_eq!(nearest_command("flsah"), Some("flash"));
        assert_eq!(nearest_command("consol"), Some("console"));
        assert_eq!(nearest_command("chekc"), Some("check"));
        assert_eq!(nearest_command("benchmark"), Some("bench"));
        assert_eq!(nearest_command("linux"), Some("linux-assets"));
        assert_eq!(nearest_command("frobnicate"), None);
        assert!(parse_err("tets").contains("did you mean `test`?"));
    }
}
