//! The emulators a run can use, and how each one is started.
//!
//! Every run gets its own folder; the emulator runs with that folder as its working
//! directory, so all the paths below are relative and parallel runs never share a file.

use std::fmt;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;
use std::time::Duration;

use bulkhead_abi::run::{BOCHS_DEBUGGER_CONTINUES, QEMU_DEBUG_EXIT_PORT, QEMU_STATUS_FAILURE, QEMU_STATUS_SUCCESS};

/// OVMF firmware image (Debian package `ovmf`): code and variable store in one file.
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
/// Bochs ROM BIOS (Debian package `bochsbios`).
pub const BOCHS_BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
/// Bochs VGA BIOS (a link into the Debian package `vgabios`).
pub const BOCHS_VGABIOS: &str = "/usr/share/bochs/VGABIOS-lgpl-latest";
/// Bochs CPU model for VT-x: EPT, unrestricted guest, VPID and APIC virtualization.
pub const BOCHS_CPU_MODEL: &str = "corei7_skylake_x";
/// Bochs CPU model for SVM: NPT with NRIPS and flush-by-ASID, no x2APIC.
pub const BOCHS_SVM_CPU_MODEL: &str = "ryzen";
/// Bochs instructions per emulated second. Lower boots faster (the BIOS and GRUB waits
/// cost fewer instructions) without slowing real work, see docs/testing.md.
pub const BOCHS_IPS: u64 = 50_000_000;
/// Guest memory in MiB, the same on every emulator.
pub const MEMORY_MIB: u32 = 256;

/// File names inside a run's folder.
pub const ISO_FILE: &str = "boot.iso";
pub const DISK_FILE: &str = "disk.img";
pub const SERIAL_FILE: &str = "serial.bin";
/// The FIFO a QEMU run's serial port reads its input from (the machine's COM1 receive
/// side): what the harness writes to it arrives at the UART as if typed on a terminal.
pub const SERIAL_INPUT_FILE: &str = "serial.in";
/// The name QEMU's `pipe` character device writes to: a link to [`SERIAL_FILE`].
pub const SERIAL_OUTPUT_LINK: &str = "serial.out";
pub const STDOUT_FILE: &str = "emulator.stdout";
pub const STDERR_FILE: &str = "emulator.stderr";
pub const BOCHS_CONFIG_FILE: &str = "bochsrc.txt";
pub const BOCHS_DEBUGGER_FILE: &str = "debugger.rc";
pub const BOCHS_LOG_FILE: &str = "bochs.log";
/// QEMU's own log (`-d cpu_reset -D`): every CPU reset with the state before it, and the
/// line `Triple fault` when a CPU outside any guest triple-faults (QEMU then exits, with
/// `-no-reboot`, as if the machine had shut down).
pub const QEMU_LOG_FILE: &str = "qemu.log";

/// What the emulated machine boots from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Medium {
    /// A GRUB ISO at [`ISO_FILE`], as a CD-ROM.
    Cdrom,
    /// A raw disk image of `bytes` bytes at [`DISK_FILE`], as the first hard disk.
    Disk { bytes: u64 },
}

/// Heads and sectors per track of the hard-disk geometry Bochs is given; the cylinders
/// follow from the image size (see [`bochs_cylinders`]).
pub const BOCHS_HEADS: u64 = 16;
pub const BOCHS_SECTORS_PER_TRACK: u64 = 63;

/// The cylinders of a flat disk image of `bytes` bytes with [`BOCHS_HEADS`] and
/// [`BOCHS_SECTORS_PER_TRACK`]. Bochs 2.7 (`iodev/harddrv.cc`) takes a flat image as
/// cylinders × heads × sectors per track of 512 bytes and ignores a remainder, so the size
/// must be a whole number of cylinders (`bulkhead_image::Disk` sizes its images so), and
/// ATA allows at most 65535 cylinders.
pub fn bochs_cylinders(bytes: u64) -> Result<u64, String> {
    let cylinder = BOCHS_HEADS * BOCHS_SECTORS_PER_TRACK * 512;
    if bytes == 0 || !bytes.is_multiple_of(cylinder) {
        return Err(format!(
            "a disk image of {bytes} bytes is not a whole number of {BOCHS_HEADS}x{BOCHS_SECTORS_PER_TRACK} cylinders ({cylinder} bytes), which Bochs needs"
        ));
    }
    match bytes / cylinder {
        c if c > 65535 => Err(format!("a disk image of {bytes} bytes has {c} cylinders; ATA allows 65535")),
        c => Ok(c),
    }
}

/// An emulated machine to boot the image on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Emulator {
    /// QEMU q35 with TCG and SeaBIOS: AMD SVM with NPT, fast.
    QemuBios,
    /// QEMU q35 with TCG and OVMF (UEFI).
    QemuUefi,
    /// QEMU q35 with TCG and SeaBIOS, CPU model `EPYC`: AMD SVM with NPT as a named
    /// server part offers it (no VGIF), the second SVM configuration every scenario runs on.
    QemuEpyc,
    /// Bochs 2.7, `corei7_skylake_x`: Intel VT-x with EPT.
    Bochs,
    /// Bochs 2.7, `ryzen`: AMD SVM with NPT, NRIPS and flush-by-ASID (which QEMU 7.2 TCG
    /// lacks) and no x2APIC, the cross-check of the SVM backend.
    BochsRyzen,
}

impl Emulator {
    pub const ALL: [Emulator; 5] =
        [Emulator::QemuBios, Emulator::QemuUefi, Emulator::QemuEpyc, Emulator::Bochs, Emulator::BochsRyzen];

    /// Whether this is one of the QEMU machines.
    pub fn is_qemu(self) -> bool {
        matches!(self, Emulator::QemuBios | Emulator::QemuUefi | Emulator::QemuEpyc)
    }

    /// Whether the emulated CPU is Intel's, so the hypervisor runs its VT-x backend
    /// (otherwise AMD's, with the SVM backend).
    pub fn is_vmx(self) -> bool {
        self == Emulator::Bochs
    }

    /// Whether the emulated CPU has an x2APIC (only Bochs `corei7_skylake_x`); elsewhere the
    /// hypervisor emulates the partitions' x2APIC on the xAPIC.
    pub fn has_x2apic(self) -> bool {
        self == Emulator::Bochs
    }

    /// A short name for file names and messages.
    pub fn slug(self) -> &'static str {
        match self {
            Emulator::QemuBios => "qemu-bios",
            Emulator::QemuUefi => "qemu-uefi",
            Emulator::QemuEpyc => "qemu-epyc",
            Emulator::Bochs => "bochs",
            Emulator::BochsRyzen => "bochs-ryzen",
        }
    }

    /// A generous default deadline for a whole run (boot included) on a slow, busy machine.
    pub fn default_timeout(self) -> Duration {
        match self {
            Emulator::QemuBios | Emulator::QemuEpyc => Duration::from_secs(60),
            Emulator::QemuUefi => Duration::from_secs(90),
            Emulator::Bochs | Emulator::BochsRyzen => Duration::from_secs(120),
        }
    }

    /// The system configuration whose board file describes this emulator as the harness
    /// runs it (QEMU q35 or the Bochs PC), relative to the workspace root.
    pub fn default_config(self) -> &'static str {
        match self {
            Emulator::QemuBios | Emulator::QemuUefi | Emulator::QemuEpyc => bulkhead_board::DEFAULT_SYSTEM,
            Emulator::Bochs | Emulator::BochsRyzen => "board/systems/demo-bochs.toml",
        }
    }

    /// How the emulator exits when the kernel ends a run (with `exit=emulator`).
    pub fn expected_exit(self, success: bool) -> Exit {
        match (self, success) {
            (Emulator::QemuBios | Emulator::QemuUefi | Emulator::QemuEpyc, true) => Exit::Code(QEMU_STATUS_SUCCESS),
            (Emulator::QemuBios | Emulator::QemuUefi | Emulator::QemuEpyc, false) => Exit::Code(QEMU_STATUS_FAILURE),
            // Magic breakpoint, then the debugger script's `q`.
            (Emulator::Bochs | Emulator::BochsRyzen, true) => Exit::Code(0),
            // "Shutdown" written to the Bochs shutdown port.
            (Emulator::Bochs | Emulator::BochsRyzen, false) => Exit::Code(1),
        }
    }

    /// Writes the emulator's configuration into `dir` and returns the command to start it
    /// there, booting from `medium` (at `dir/`[`ISO_FILE`] or `dir/`[`DISK_FILE`]).
    pub fn command(self, cpus: u8, dir: &Path, medium: Medium) -> std::io::Result<Command> {
        match self {
            Emulator::QemuBios | Emulator::QemuUefi | Emulator::QemuEpyc => {
                make_serial_pipe(dir)?;
                let mut cmd = Command::new("qemu-system-x86_64");
                let model = if self == Emulator::QemuEpyc { "EPYC" } else { "max" };
                cmd.args(qemu_args(self == Emulator::QemuUefi, model, cpus, medium));
                Ok(cmd)
            }
            Emulator::Bochs | Emulator::BochsRyzen => {
                let model = if self == Emulator::Bochs { BOCHS_CPU_MODEL } else { BOCHS_SVM_CPU_MODEL };
                let config = bochs_config(model, cpus, medium).map_err(std::io::Error::other)?;
                std::fs::write(dir.join(BOCHS_CONFIG_FILE), config)?;
                std::fs::write(dir.join(BOCHS_DEBUGGER_FILE), bochs_debugger_script())?;
                let mut cmd = match bochs_isolation() {
                    Some(flags) => {
                        let mut cmd = Command::new("unshare");
                        cmd.args(flags).arg("bochs-bin");
                        cmd
                    }
                    None => Command::new("bochs-bin"),
                };
                cmd.args(["-q", "-f", BOCHS_CONFIG_FILE, "-rc", BOCHS_DEBUGGER_FILE]);
                Ok(cmd)
            }
        }
    }
}

impl fmt::Display for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Emulator::QemuBios => "QEMU (q35, TCG, SeaBIOS)",
            Emulator::QemuUefi => "QEMU (q35, TCG, OVMF UEFI)",
            Emulator::QemuEpyc => "QEMU (q35, TCG, SeaBIOS, EPYC)",
            Emulator::Bochs => "Bochs (corei7_skylake_x)",
            Emulator::BochsRyzen => "Bochs (ryzen)",
        })
    }
}

/// How an emulator process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl From<ExitStatus> for Exit {
    fn from(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Code(-1),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit status {code}"),
            Exit::Signal(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// The machine every QEMU run uses (q35, TCG, no display, monitor or network, the serial
/// port to the run folder's serial file), with `cpus` CPUs of `cpu_model`.
pub fn qemu_machine_args(cpu_model: &str, cpus: u8) -> Vec<String> {
    [
        "-M",
        "q35",
        "-accel",
        "tcg",
        "-cpu",
        cpu_model,
        "-smp",
        &cpus.to_string(),
        "-m",
        &MEMORY_MIB.to_string(),
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-d",
        "cpu_reset",
        "-D",
        QEMU_LOG_FILE,
        "-nic",
        "none",
        "-serial",
        &format!("file:{SERIAL_FILE}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Whether the emulator's serial port takes input from the harness
/// ([`SERIAL_INPUT_FILE`]). Bochs 2.7's COM1 writes to a file (`mode=file`) and reads
/// nothing; its other modes need a terminal or a TCP socket, which its network namespace
/// shuts off.
pub fn has_serial_input(emulator: Emulator) -> bool {
    emulator.is_qemu()
}

/// Makes the files of a QEMU run's serial port in `dir`: the console output file
/// [`SERIAL_FILE`] (empty), the link [`SERIAL_OUTPUT_LINK`] to it and the input FIFO
/// [`SERIAL_INPUT_FILE`]. QEMU's `pipe` character device opens `PATH.in` and `PATH.out`
/// read-write, so neither open waits for the other side (a FIFO opened read-write has
/// both), and the output stays a plain file that the harness reads as it grows, as with
/// `-serial file:`.
pub fn make_serial_pipe(dir: &Path) -> std::io::Result<()> {
    std::fs::File::create(dir.join(SERIAL_FILE))?;
    let link = dir.join(SERIAL_OUTPUT_LINK);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(SERIAL_FILE, &link)?;
    let fifo = dir.join(SERIAL_INPUT_FILE);
    let _ = std::fs::remove_file(&fifo);
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: `c_path` is a NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// QEMU arguments (after the program name). The serial port is QEMU's `pipe` character
/// device on the run folder's `serial.in` / `serial.out` ([`make_serial_pipe`]), so the
/// harness can type into the machine's COM1.
pub fn qemu_args(uefi: bool, cpu_model: &str, cpus: u8, medium: Medium) -> Vec<String> {
    let mut args = qemu_machine_args(cpu_model, cpus);
    let serial = args.iter().position(|a| a == "-serial").expect("qemu_machine_args names the serial port");
    args.splice(
        serial..serial + 2,
        [
            "-chardev".to_string(),
            "pipe,id=com1,path=serial".to_string(),
            "-serial".to_string(),
            "chardev:com1".to_string(),
        ],
    );
    args.extend(["-device".to_string(), format!("isa-debug-exit,iobase={QEMU_DEBUG_EXIT_PORT:#x},iosize=1")]);
    if uefi {
        args.extend(["-bios".to_string(), OVMF.to_string()]);
    }
    match medium {
        Medium::Cdrom => args.extend(["-cdrom".to_string(), ISO_FILE.to_string()]),
        // The first disk on q35's AHCI controller, which SeaBIOS and OVMF both boot from.
        Medium::Disk { .. } => {
            args.extend(["-drive".to_string(), format!("file={DISK_FILE},format=raw,if=ide,index=0,media=disk")])
        }
    }
    args
}

/// The bochsrc for a run with `cpus` processors of CPU model `model` (headless, quiet,
/// exits on triple fault).
///
/// Under SVM, Bochs 2.7 raises its "3rd exception with no resolution" panic *before* it
/// checks the guest's SHUTDOWN intercept, so with `panic: action=fatal` a partition's
/// triple fault would end the whole emulator instead of exiting to the hypervisor. For the
/// SVM model the CPUs' panics are therefore only reported: Bochs then takes the SHUTDOWN
/// intercept as a real AMD CPU does. A triple fault of the hypervisor itself still ends
/// the run, as a time-out (the CPU stays in shutdown) rather than at once. Bochs also
/// enters its debugger at each such triple fault, see [`bochs_debugger_script`].
///
/// `ignore_bad_msrs=0`: an MSR the model does not implement raises #GP, as on hardware
/// (with 1, Bochs reads it as 0 and drops writes, which hides a hypervisor that forwards a
/// partition's access to an MSR the CPU lacks).
///
/// A disk image is a flat image with the geometry [`bochs_cylinders`] gives.
pub fn bochs_config(model: &str, cpus: u8, medium: Medium) -> Result<String, String> {
    let panic = if model == BOCHS_SVM_CPU_MODEL {
        let cpus: Vec<String> = (0..cpus).map(|n| format!(", cpu{n}=report")).collect();
        format!("action=fatal{}", cpus.concat())
    } else {
        "action=fatal".to_string()
    };
    let (drive, boot) = match medium {
        Medium::Cdrom => (format!("type=cdrom, path={ISO_FILE}, status=inserted"), "cdrom"),
        Medium::Disk { bytes } => (
            format!(
                "type=disk, path={DISK_FILE}, mode=flat, cylinders={}, heads={BOCHS_HEADS}, \
                 spt={BOCHS_SECTORS_PER_TRACK}",
                bochs_cylinders(bytes)?
            ),
            "disk",
        ),
    };
    Ok(format!(
        "# Written by bulkhead-tests for one run.\n\
         megs: {MEMORY_MIB}\n\
         romimage: file={BOCHS_BIOS}, options=fastboot\n\
         vgaromimage: file={BOCHS_VGABIOS}\n\
         display_library: rfb, options=\"timeout=0\"\n\
         cpu: model={model}, count={cpus}, ips={BOCHS_IPS}, reset_on_triple_fault=0, ignore_bad_msrs=0\n\
         ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14\n\
         ata0-master: {drive}\n\
         boot: {boot}\n\
         com1: enabled=1, mode=file, dev={SERIAL_FILE}\n\
         port_e9_hack: enabled=1\n\
         magic_break: enabled=1\n\
         speaker: enabled=0\n\
         sound: driver=dummy\n\
         log: {BOCHS_LOG_FILE}\n\
         panic: {panic}\n\
         error: action=report\n\
         info: action=report\n\
         debug: action=ignore\n\
         clock: sync=none, time0=local\n"
    ))
}

/// The Bochs debugger script: continue at the start and after each break, quit (status 0)
/// once the continues are used up. Breaks come from the kernel's magic breakpoint at the
/// end of a successful run (repeated more often than the script continues, see
/// `BOCHS_MAGIC_BREAKS`) and, under SVM, from partitions' triple faults (see
/// [`bochs_config`]).
pub fn bochs_debugger_script() -> String {
    let mut script = "c\n".repeat(BOCHS_DEBUGGER_CONTINUES as usize);
    script.push_str("q\n");
    script
}

/// Bochs has no headless display in Debian's build, so it runs the `rfb` (VNC) display,
/// which always listens on TCP port 5900 and, when that is taken, tries the next ports up
/// to 5949; its only option is `timeout`, there is no way to choose the port. To keep
/// parallel runs from racing for ports (and to expose no VNC server on the host), each
/// Bochs runs in a network namespace of its own when `unshare` can make one: as root with
/// `unshare --net`, otherwise with an unprivileged user namespace. Where neither works,
/// Bochs runs unisolated and its own port probing keeps parallel runs apart.
pub fn bochs_isolation() -> Option<&'static [&'static str]> {
    static FLAGS: OnceLock<Option<&'static [&'static str]>> = OnceLock::new();
    *FLAGS.get_or_init(|| {
        const AS_ROOT: &[&str] = &["--net"];
        const AS_USER: &[&str] = &["--net", "--map-root-user"];
        let flags = if crate::host::is_root() { AS_ROOT } else { AS_USER };
        let works = Command::new("unshare")
            .args(flags)
            .arg("true")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        works.then_some(flags)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg_after<'a>(args: &'a [String], flag: &str) -> &'a str {
        let i = args.iter().position(|a| a == flag).expect(flag);
        &args[i + 1]
    }

    #[test]
    fn qemu_bios_command_line() {
        let args = qemu_args(false, "max", 4, Medium::Cdrom);
        assert_eq!(arg_after(&args, "-M"), "q35");
        assert_eq!(arg_after(&args, "-accel"), "tcg");
        assert_eq!(arg_after(&args, "-cpu"), "max");
        assert_eq!(arg_after(&args, "-smp"), "4");
        assert_eq!(arg_after(&args, "-serial"), "chardev:com1");
        assert_eq!(arg_after(&args, "-chardev"), "pipe,id=com1,path=serial");
        assert_eq!(args.iter().filter(|a| *a == "-serial").count(), 1);
        assert_eq!(arg_after(&args, "-device"), "isa-debug-exit,iobase=0xf4,iosize=1");
        assert_eq!(arg_after(&args, "-cdrom"), ISO_FILE);
        assert!(args.iter().any(|a| a == "-no-reboot"));
        assert!(!args.iter().any(|a| a == "-bios"));
    }

    #[test]
    fn serial_pipe_files_join_qemus_output_to_the_serial_file() {
        let dir = tempfile::tempdir().unwrap();
        make_serial_pipe(dir.path()).unwrap();
        make_serial_pipe(dir.path()).unwrap();
        use std::os::unix::fs::FileTypeExt;
        let fifo = std::fs::metadata(dir.path().join(SERIAL_INPUT_FILE)).unwrap();
        assert!(fifo.file_type().is_fifo());
        std::fs::write(dir.path().join(SERIAL_OUTPUT_LINK), b"out").unwrap();
        assert_eq!(std::fs::read(dir.path().join(SERIAL_FILE)).unwrap(), b"out");
    }

    #[test]
    fn qemu_uefi_uses_ovmf() {
        let args = qemu_args(true, "max", 1, Medium::Cdrom);
        assert_eq!(arg_after(&args, "-bios"), OVMF);
        assert_eq!(arg_after(&args, "-smp"), "1");
    }

    #[test]
    fn qemu_boots_a_disk_image_as_its_first_hard_disk() {
        for uefi in [false, true] {
            let args = qemu_args(uefi, "max", 2, Medium::Disk { bytes: 63 << 20 });
            assert_eq!(arg_after(&args, "-drive"), "file=disk.img,format=raw,if=ide,index=0,media=disk");
            assert!(!args.iter().any(|a| a == "-cdrom"), "{args:?}");
        }
    }

    #[test]
    fn bochs_boots_a_disk_image_as_a_flat_disk_of_whole_cylinders() {
        let cfg = bochs_config(BOCHS_CPU_MODEL, 2, Medium::Disk { bytes: 63 << 20 }).unwrap();
        assert!(
            cfg.contains("ata0-master: type=disk, path=disk.img, mode=flat, cylinders=128, heads=16, spt=63\n"),
            "{cfg}"
        );
        assert!(cfg.contains("boot: disk\n") && !cfg.contains("cdrom"), "{cfg}");
        assert_eq!(bochs_cylinders(126 << 20), Ok(256));
        let err = bochs_config(BOCHS_CPU_MODEL, 2, Medium::Disk { bytes: 64 << 20 }).unwrap_err();
        assert!(err.contains("whole number of 16x63 cylinders"), "{err}");
        assert!(bochs_cylinders(0).is_err());
        assert!(bochs_cylinders(65536 * 16 * 63 * 512).unwrap_err().contains("65535"));
    }

    #[test]
    fn bochs_config_is_headless_quiet_and_fatal_on_triple_fault() {
        let cfg = bochs_config(BOCHS_CPU_MODEL, 2, Medium::Cdrom).unwrap();
        for wanted in [
            "display_library: rfb, options=\"timeout=0\"",
            "cpu: model=corei7_skylake_x, count=2, ips=50000000, reset_on_triple_fault=0, ignore_bad_msrs=0\n",
            "com1: enabled=1, mode=file, dev=serial.bin",
            "magic_break: enabled=1",
            "port_e9_hack: enabled=1",
            "panic: action=fatal",
            "clock: sync=none",
            "sound: driver=dummy",
            "speaker: enabled=0",
            "ata0-master: type=cdrom, path=boot.iso",
            "boot: cdrom",
        ] {
            assert!(cfg.contains(wanted), "missing {wanted:?} in\n{cfg}");
        }
        assert!(bochs_config(BOCHS_SVM_CPU_MODEL, 3, Medium::Cdrom).unwrap().contains("cpu: model=ryzen, count=3, "));
    }

    #[test]
    fn expected_exits_follow_the_run_protocol() {
        assert_eq!(Emulator::QemuBios.expected_exit(true), Exit::Code(33));
        assert_eq!(Emulator::QemuUefi.expected_exit(false), Exit::Code(35));
        assert_eq!(Emulator::Bochs.expected_exit(true), Exit::Code(0));
        assert_eq!(Emulator::Bochs.expected_exit(false), Exit::Code(1));
        assert_eq!(Emulator::BochsRyzen.expected_exit(true), Exit::Code(0));
    }
}
