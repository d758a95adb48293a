//! Keyboard input from the hypervisor's console to a Linux shell: the system
//! `board/systems/linux-shell.toml` (Debian's kernel on two vCPUs with the shell
//! initramfs, `console_input = "linux"`, a witness on core 2 listening on its own UART)
//! boots; the harness types commands into the emulated machine's COM1, the hypervisor's
//! console; Linux's polled 8250 driver reads them from its virtual UART, the shell runs
//! them, and their output comes back as `[linux] ...` lines. The witness, not named
//! `console_input`, receives none of it.

use std::time::Duration;

use bulkhead_tests::initramfs::INIT_MARKER;
use bulkhead_tests::{Emulator, Run};

const SYSTEM: &str = "board/systems/linux-shell.toml";

/// A command whose output is not in the command itself: only a shell that read the
/// typed line and ran it prints `42`. Longer than the 16-byte receive FIFO, so the driver
/// drains it several times.
const ARITHMETIC: &str = "echo $((6*7)); echo typed-input-reached-the-shell\n";

/// Job control: a job started in the background is listed by the shell's `jobs`, which
/// works only with a controlling terminal (`setsid cttyhack sh`).
const JOB: &str = "sleep 300 &\njobs\n";

/// The verdict, given by a typed command: pass (0) through the verdict port 0xF4.
const VERDICT: &str = "echo -ne '\\0' | dd of=/dev/port bs=1 seek=244 count=1\n";

#[test]
fn linux_console_qemu_keyboard_input_reaches_the_linux_shell_only() {
    let report = Run::new(Emulator::QemuBios)
        .cpus(3)
        .config(SYSTEM)
        // TCG on a shared two-core host: Linux takes tens of seconds to its /init.
        .timeout(Duration::from_secs(400))
        // Typed once the shell's /init announced itself (the tty buffers what arrives
        // before the shell reads), each command after the previous one's output.
        .type_after(INIT_MARKER, ARITHMETIC)
        .type_after("[linux] typed-input-reached-the-shell", JOB)
        // The verdict once `jobs` printed (Linux's 8250 driver sends a program's output
        // from a timer, so a verdict typed earlier can end the run before that line is
        // out) and the witness has looked at its UART after the input arrived.
        .type_after("sleep 300", "")
        .type_after("Running", "")
        .type_after("[witness] witness: uart: looked", VERDICT)
        .forbid("witness: uart received byte")
        .execute();
    eprintln!("{}: verdict after {:.1} s", report.name, report.elapsed.as_secs_f64());
    let console = report.partition_console("linux");
    // The shell's output: the arithmetic's result on a line of its own (the echoed
    // command line has `$((6*7))`, not `42`) and the background job.
    for wanted in ["42", "typed-input-reached-the-shell"] {
        assert!(
            console.iter().any(|l| l == wanted),
            "no line {wanted:?} from the shell; Linux's console:\n  {}\n{}",
            console.join("\n  "),
            report.diagnostic()
        );
    }
    assert!(
        console.iter().any(|l| l.starts_with("[1]") && l.contains("Running") && l.contains("sleep 300")),
        "`jobs` listed no running job\n{}",
        report.diagnostic()
    );
    // The echo of what was typed (the terminal echoes each byte back) came back whole.
    assert!(
        console.iter().any(|l| l.ends_with(ARITHMETIC.trim_end())),
        "the typed command was not echoed whole\n{}",
        report.diagnostic()
    );
    // The witness listened on its UART throughout, also after the input arrived, and
    // received nothing.
    let lines: Vec<String> = report.lines.iter().map(|l| l.to_string()).collect();
    let answered = lines.iter().position(|l| l.ends_with("[linux] 42")).expect("checked above");
    let witness: Vec<&String> = lines.iter().filter(|l| l.contains("[witness] witness: uart: looked")).collect();
    assert!(
        lines[answered..].iter().any(|l| l.contains("[witness] witness: uart: looked")),
        "the witness did not look at its UART after the input arrived\n{}",
        report.diagnostic()
    );
    assert!(
        witness.iter().all(|l| l.ends_with(", 0 bytes received")),
        "the witness received input: {witness:?}\n{}",
        report.diagnostic()
    );
    // The verdict the typed command gave ended the run.
    report.assert_passed();
}

/// The Linux demo, `board/systems/linux-demo.toml`, as a user drives it: Linux boots to its
/// shell with the messaging module loaded (the shell initramfs's boot step, since the
/// partition has connections), and the commands the README shows, typed at the shell,
/// round-trip a message and a signal through the control partition on its own core, whose
/// periodic timer keeps ticking.
#[test]
fn linux_demo_qemu_shell_pings_the_control_partition() {
    const DEMO: &str = "board/systems/linux-demo.toml";
    const PING: &str = "bulkhead-msg ping control && bulkhead-msg event-ping control\n";
    let report = Run::new(Emulator::QemuBios)
        .cpus(3)
        .config(DEMO)
        .timeout(Duration::from_secs(400))
        .type_after(INIT_MARKER, PING)
        // The verdict after control's next status line (every 5 s), which counts them.
        .type_after("[linux] event-ping control: ", "")
        .type_after("[control] tick ", VERDICT)
        .execute();
    eprintln!("{}: verdict after {:.1} s", report.name, report.elapsed.as_secs_f64());
    let console = report.partition_console("linux");
    let has = |prefix: &str| console.iter().any(|l| l.starts_with(prefix));
    for wanted in [
        "bulkhead-msg: module loaded, devices in /dev/bulkhead",
        "ping control: 1 pings answered, ",
        "event-ping control: 1 signals answered, ",
    ] {
        assert!(has(wanted), "no line {wanted:?} from Linux\n{}", report.diagnostic());
    }
    // The control partition's status lines (one every 5000 ticks of its 1 ms timer): its
    // timer kept ticking while Linux booted and ran, and it answered the ping and the
    // signal.
    let control = report.partition_console("control");
    // The first status line comes at the first tick at or past 5000: a loaded emulator can
    // wake the partition a tick or two late.
    let first_status =
        |l: &String| l.strip_prefix("tick ").and_then(|r| r.split(':').next()).and_then(|n| n.parse::<u64>().ok());
    assert!(
        control.iter().filter_map(first_status).any(|n| (5000..10_000).contains(&n)),
        "no status line from control\n{}",
        report.diagnostic()
    );
    assert!(
        control.iter().any(|l| l.starts_with("tick ") && l.contains("(1 pings), 1 signals answered")),
        "control did not count the ping and the signal\n{}",
        report.diagnostic()
    );
    report.assert_passed();
}
