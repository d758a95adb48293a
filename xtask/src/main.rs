//! `cargo xtask`: the developer commands of the Bulkhead workspace.
//!
//! ```text
//! cargo xtask run [--emulator qemu|bochs] [--uefi] [--cpus N] [--timeout SECS] [--config PATH] [-- SWITCH...]
//! cargo xtask test [FILTER]
//! cargo xtask lint
//! cargo xtask build [--config PATH]
//! cargo xtask check PATH
//! cargo xtask bench [--json]
//! cargo xtask image [--out PATH] [--config PATH]
//! ```
//! Every command that boots or builds an image first checks the host programs it needs and,
//! when run as root, installs the missing Debian packages itself.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bulkhead_tests::host::{self, Purpose};
use bulkhead_tests::{Emulator, Run, kernel};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  run [--emulator qemu|bochs] [--uefi] [--cpus N] [--timeout SECS] [--config PATH] [-- SWITCH...]
        build the hypervisor and its image, boot it with live console output;
        exits 0 only if the run ended in success (default: qemu, BIOS, 2 cpus, 60 s,
        board/systems/demo.toml; with bochs: board/systems/demo-bochs.toml).
        SWITCHes are extra kernel command-line words, e.g. `-- test=ud`
  test [FILTER]
        run the host unit tests and the hardware-in-the-loop tests (cargo test FILTER)
  lint  cargo fmt --check, and clippy with -D warnings on the host crates, the kernel
        and the guests
  build [--config PATH]
        build the guests and the hypervisor for a system configuration
  check PATH
        validate a system configuration: every problem as file:line:col, or a summary
  bench [--json]
        deterministic benchmarks in Bochs (guest RDTSC = instruction count): hypervisor
        instructions per CPUID, I/O-port and MSR exit round trip; VM exits per million
        guest instructions of a compute loop under a 1 kHz local APIC timer; Hyper-V
        messaging: call round trips, ping-pong latency, throughput, receiver exits
  image [--out PATH] [--config PATH]
        write the bootable ISO (BIOS + UEFI) to PATH (default: out/bulkhead.iso)
  help  show this text
";

#[derive(Debug, PartialEq, Eq)]
enum Task {
    Run(RunArgs),
    Test { filter: Option<String> },
    Lint,
    Build { config: Option<PathBuf> },
    Check { config: PathBuf },
    Bench { json: bool },
    Image { out: Option<PathBuf>, config: Option<PathBuf> },
    Help,
}

#[derive(Debug, PartialEq, Eq)]
struct RunArgs {
    emulator: Emulator,
    cpus: u8,
    timeout: Duration,
    config: Option<PathBuf>,
    switches: Vec<String>,
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            emulator: Emulator::QemuBios,
            cpus: 2,
            timeout: Duration::from_secs(60),
            config: None,
            switches: Vec::new(),
        }
    }
}

fn parse(args: &[String]) -> Result<Task> {
    let Some((command, rest)) = args.split_first() else {
        return Ok(Task::Help);
    };
    let mut rest = rest.iter();
    let task = match command.as_str() {
        "run" => {
            let mut run = RunArgs::default();
            let mut bochs = None;
            let mut uefi = false;
            while let Some(arg) = rest.next() {
                let (flag, inline) = match arg.split_once('=') {
                    Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                    _ => (arg.as_str(), None),
                };
                let mut value = || -> Result<String> {
                    match inline.clone().or_else(|| rest.next().cloned()) {
                        Some(v) => Ok(v),
                        None => bail!("`{flag}` needs a value"),
                    }
                };
                match flag {
                    "--emulator" => match value()?.as_str() {
                        "qemu" => bochs = None,
                        "bochs" => bochs = Some(Emulator::Bochs),
                        "bochs-ryzen" => bochs = Some(Emulator::BochsRyzen),
                        other => bail!("unknown emulator `{other}`: use qemu, bochs or bochs-ryzen"),
                    },
                    "--uefi" => uefi = true,
                    "--config" => run.config = Some(PathBuf::from(value()?)),
                    "--cpus" => {
                        let v = value()?;
                        run.cpus = match v.parse::<u8>() {
                            Ok(n) if (1..=64).contains(&n) => n,
                            _ => bail!("`--cpus {v}`: give a number from 1 to 64"),
                        };
                    }
                    "--timeout" => {
                        let v = value()?;
                        run.timeout = match v.parse::<u64>() {
                            Ok(s) if s > 0 => Duration::from_secs(s),
                            _ => bail!("`--timeout {v}`: give a whole number of seconds"),
                        };
                    }
                    "--" => {
                        run.switches.extend(rest.by_ref().cloned());
                    }
                    other => bail!("unknown option `{other}` for `run`"),
                }
            }
            run.emulator = match (bochs, uefi) {
                (None, false) => Emulator::QemuBios,
                (None, true) => Emulator::QemuUefi,
                (Some(bochs), false) => bochs,
                (Some(_), true) => bail!("`--uefi` works with QEMU only (Bochs boots its BIOS)"),
            };
            Task::Run(run)
        }
        "test" => {
            let filter = rest.next().cloned();
            if let Some(extra) = rest.next() {
                bail!("`test` takes one filter, got another: `{extra}`");
            }
            Task::Test { filter }
        }
        "lint" => Task::Lint,
        "bench" => match rest.next().map(String::as_str) {
            None => Task::Bench { json: false },
            Some("--json") => Task::Bench { json: true },
            Some(other) => bail!("unknown option `{other}` for `bench`"),
        },
        "check" => match rest.next() {
            Some(path) => Task::Check { config: PathBuf::from(path) },
            None => bail!("`check` needs the path of a system file"),
        },
        "image" | "build" => {
            let mut out = None;
            let mut config = None;
            while let Some(arg) = rest.next() {
                let (flag, inline) = match arg.split_once('=') {
                    Some((f, v)) if f.starts_with("--") => (f, Some(PathBuf::from(v))),
                    _ => (arg.as_str(), None),
                };
                let value = match inline.or_else(|| rest.next().map(PathBuf::from)) {
                    Some(v) => v,
                    None => bail!("`{flag}` needs a path"),
                };
                match flag {
                    "--out" if command == "image" => out = Some(value),
                    "--config" => config = Some(value),
                    other => bail!("unknown option `{other}` for `{command}`"),
                }
            }
            if command == "image" { Task::Image { out, config } } else { Task::Build { config } }
        }
        "help" | "--help" | "-h" => Task::Help,
        other => bail!("unknown command `{other}`"),
    };
    if let Some(extra) = rest.next() {
        bail!("unexpected argument `{extra}`");
    }
    Ok(task)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = match parse(&args) {
        Ok(task) => task,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match execute(task) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(task: Task) -> Result<ExitCode> {
    match task {
        Task::Help => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Task::Run(args) => run(args),
        Task::Test { filter } => test(filter),
        Task::Lint => lint(),
        Task::Build { config } => build(config).map(|_| ExitCode::SUCCESS),
        Task::Check { config } => check(&config),
        Task::Bench { json } => bench(json),
        Task::Image { out, config } => image(out, config),
    }
}

fn root() -> PathBuf {
    kernel::workspace_root()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs a command with inherited output; Ok(true) if it succeeded.
fn status(mut cmd: Command) -> Result<bool> {
    eprintln!("$ {}", show(&cmd));
    let status = cmd.status().with_context(|| format!("cannot start `{}`", show(&cmd)))?;
    Ok(status.success())
}

/// The command for messages; the program by its file name (`$CARGO` is a long path).
fn show(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    std::iter::once(program.file_name().unwrap_or(program.as_os_str()))
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Makes sure the host has what `purposes` need: installs the missing Debian packages when
/// running as root, otherwise says exactly what to install.
fn ensure_host(purposes: &[Purpose]) -> Result<()> {
    let missing = host::missing(purposes);
    if missing.is_empty() {
        return Ok(());
    }
    let packages = host::packages(&missing);
    let what: Vec<&str> = missing.iter().map(|r| r.name()).collect();
    let install = format!("apt-get install -y --no-install-recommends {}", packages.join(" "));
    if !host::is_root() {
        bail!(
            "missing on this machine: {}\ninstall them with:\n    sudo apt-get update && sudo {install}",
            what.join(", ")
        );
    }
    eprintln!("missing on this machine: {}; installing {}", what.join(", "), packages.join(" "));
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    if !status(apt(&["update"]))? {
        bail!("`apt-get update` failed; fix the apt sources, then retry");
    }
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&packages);
    if !status(apt(&args))? {
        bail!("`{install}` failed");
    }
    let still: Vec<&str> = host::missing(purposes).iter().map(|r| r.name()).collect();
    if !still.is_empty() {
        bail!(
            "still missing after installing {}: {}\n(if a package is installed but its files are gone: \
             apt-get install --reinstall {})",
            packages.join(" "),
            still.join(", "),
            packages.join(" ")
        );
    }
    Ok(())
}

/// A user-given config path: relative to the current directory, like any command-line path.
fn config_path(config: Option<PathBuf>, emulator: Emulator) -> PathBuf {
    match config {
        Some(path) => std::path::absolute(&path).unwrap_or(path),
        None => root().join(emulator.default_config()),
    }
}

/// Builds the guests and the kernel for `config` (default: the QEMU demo system).
fn build(config: Option<PathBuf>) -> Result<kernel::KernelImage> {
    build_for(&config_path(config, Emulator::QemuBios))
}

fn build_for(config: &Path) -> Result<kernel::KernelImage> {
    for cmd in kernel::build_commands(config) {
        eprintln!("$ {}", show(&cmd));
    }
    eprintln!("  (system configuration: {})", display_path(config));
    kernel::build_kernel(config, false).map_err(anyhow::Error::msg)
}

/// Validates a system file without building anything that needs it.
fn check(config: &Path) -> Result<ExitCode> {
    if !status(kernel::cargo_build_guests())? {
        bail!("building the guests failed; payloads named @guests/NAME cannot be checked");
    }
    let loaded =
        bulkhead_board::load_system(config, &bulkhead_board::LoadOptions { guest_dir: Some(kernel::binaries_dir()) });
    match loaded.result {
        Ok(system) => {
            print!("{}", bulkhead_board::summary(&system));
            Ok(ExitCode::SUCCESS)
        }
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A benchmark case: its stable name after the backend's prefix (`vmx/cpuid-exit`, cited
/// by docs/performance.md), the key the bench figures are found under, the unit, and the
/// target the figure should meet (if it has one on that backend).
struct BenchCase {
    name: &'static str,
    key: &'static str,
    unit: &'static str,
    target_max: fn(&BenchBackend) -> Option<u64>,
}

/// A backend the benchmarks run on: the case-name prefix, the emulated CPU, and whether
/// partitions' x2APIC passes through there (otherwise the hypervisor emulates it on the
/// xAPIC, and each EOI is an exit).
struct BenchBackend {
    prefix: &'static str,
    emulator: Emulator,
    cpu: &'static str,
}

const BENCH_BACKENDS: &[BenchBackend] = &[
    BenchBackend { prefix: "vmx", emulator: Emulator::Bochs, cpu: "bochs corei7_skylake_x" },
    BenchBackend { prefix: "svm", emulator: Emulator::BochsRyzen, cpu: "bochs ryzen" },
];

const BENCH_CASES: &[BenchCase] = &[
    BenchCase { name: "cpuid-exit", key: "cpuid_exit_round_trip", unit: "instructions", target_max: |_| Some(300) },
    BenchCase { name: "io-exit", key: "io_exit_round_trip", unit: "instructions", target_max: |_| Some(300) },
    BenchCase { name: "msr-exit", key: "msr_exit_round_trip", unit: "instructions", target_max: |_| Some(300) },
    // Zero where the x2APIC passes through; with an emulated x2APIC each EOI exits.
    BenchCase {
        name: "timer-1khz-exits",
        key: "timer_exits_per_million",
        unit: "exits/M instr",
        target_max: |b| b.emulator.has_x2apic().then_some(0),
    },
    BenchCase {
        name: "timer-exits-per-interrupt",
        key: "timer_exits_per_thousand_ticks",
        unit: "exits/1000 ticks",
        target_max: |b| b.emulator.has_x2apic().then_some(0),
    },
    // Hyper-V messaging (guests/src/bin/bench-messaging.rs).
    BenchCase {
        name: "hv-signal-event",
        key: "hv_signal_event_round_trip",
        unit: "instructions",
        target_max: |_| Some(250),
    },
    BenchCase {
        name: "hv-post-message-240",
        key: "hv_post_message_240_round_trip",
        unit: "instructions",
        target_max: |_| Some(600),
    },
    BenchCase { name: "hv-message-ping-pong", key: "hv_message_ping_pong", unit: "instructions", target_max: |_| None },
    BenchCase { name: "hv-event-ping-pong", key: "hv_event_ping_pong", unit: "instructions", target_max: |_| None },
    BenchCase {
        name: "hv-messages-per-million",
        key: "hv_messages_per_million",
        unit: "msgs/M instr",
        target_max: |_| None,
    },
    // Zero where the x2APIC passes through (its EOIs do not exit); EOM writes aside.
    BenchCase {
        name: "hv-receiver-exits",
        key: "hv_receiver_exits_per_thousand",
        unit: "exits/1000 msgs",
        target_max: |b| b.emulator.has_x2apic().then_some(0),
    },
    BenchCase {
        name: "hv-receiver-eoms",
        key: "hv_receiver_eoms_per_thousand",
        unit: "EOMs/1000 msgs",
        target_max: |_| None,
    },
];

/// Runs the bench partition on each backend (Bochs, both CPU vendors) and reports each
/// case. Figures are instruction counts (Bochs `clock: sync=none`), so they repeat exactly
/// for the same build.
fn bench(json: bool) -> Result<ExitCode> {
    ensure_host(Purpose::for_emulator(Emulator::Bochs))?;
    let image = build_for(&root().join("tests/configs/bochs-bench.toml"))?;
    let messaging = build_for(&root().join("tests/configs/bochs-bench-messaging.toml"))?;
    let mut results = Vec::new();
    for backend in BENCH_BACKENDS {
        let values = bench_backend(backend, &image, &messaging)?;
        let mut rows = Vec::new();
        for case in BENCH_CASES {
            let Some(&(_, value)) = values.iter().find(|(k, _)| k.as_str() == case.key) else {
                bail!("the {} bench printed no `{}`", backend.prefix, case.key);
            };
            rows.push((case, value, (case.target_max)(backend)));
        }
        results.push((backend, rows));
    }
    if json {
        let backends: Vec<String> = results
            .iter()
            .map(|(b, rows)| {
                let cases: Vec<String> = rows
                    .iter()
                    .map(|(c, v, target)| {
                        let (target, met) = match target {
                            Some(t) => (t.to_string(), (v <= t).to_string()),
                            None => ("null".into(), "null".into()),
                        };
                        format!(
                            "{{\"case\":\"{}/{}\",\"value\":{v},\"unit\":\"{}\",\"target_max\":{target},\"met\":{met}}}",
                            b.prefix, c.name, c.unit
                        )
                    })
                    .collect();
                format!("{{\"backend\":\"{}\",\"emulator\":\"{}\",\"cases\":[{}]}}", b.prefix, b.cpu, cases.join(","))
            })
            .collect();
        println!("{{\"backends\":[{}]}}", backends.join(","));
    } else {
        println!("{:<30} {:>8}  {:<17} target", "case", "value", "unit");
        for (b, rows) in &results {
            for (c, v, target) in rows {
                let name = format!("{}/{}", b.prefix, c.name);
                match target {
                    Some(t) => {
                        let verdict = if v <= t { "met" } else { "MISSED" };
                        println!("{name:<30} {v:>8}  {:<17} <= {t} ({verdict})", c.unit);
                    }
                    None => println!("{name:<30} {v:>8}  {:<17} -", c.unit),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One bench run: the figures every partition printed (`bench: KEY=VALUE`) and, per
/// partition, its exits other than console output (`non_console_exits_<partition>`).
fn bench_run(
    backend: &BenchBackend,
    image: &kernel::KernelImage,
    case: &str,
    partitions: &[&str],
) -> Result<Vec<(String, u64)>> {
    let mut run = Run::new(backend.emulator)
        .name(format!("xtask-bench-{}-{case}", backend.prefix))
        .cpus(2)
        .timeout(std::time::Duration::from_secs(600))
        .kernel(image.clone());
    for partition in partitions {
        run = run.switch(format!("{partition}:case={case}"));
    }
    let report = run.try_execute()?;
    if !report.outcome.is_passed() {
        eprint!("{}", report.diagnostic());
        bail!("the {} bench run `{case}` failed", backend.prefix);
    }
    let mut values = Vec::new();
    for text in report.lines.iter().map(|l| l.to_string()) {
        if let Some((key, value)) = text.split_once("] bench: ").and_then(|(_, kv)| kv.split_once('='))
            && let Ok(value) = value.trim().parse()
        {
            values.push((key.to_string(), value));
        }
        // The hypervisor's end-of-run count: every exit but console output.
        if let Some((partition, counts)) =
            text.split_once("partition ").and_then(|(_, rest)| rest.split_once(": exits: "))
        {
            let field = |name: &str| -> u64 {
                counts.split(", ").find_map(|f| f.trim().strip_prefix(name)?.trim().parse().ok()).unwrap_or(0)
            };
            values.push((format!("non_console_exits_{partition}"), field("msr") + field("cpuid") + field("other")));
        }
    }
    Ok(values)
}

fn value(values: &[(String, u64)], key: &str) -> Option<u64> {
    values.iter().find(|(k, _)| k == key).map(|&(_, v)| v)
}

/// The bench runs on one backend (`exits` and `timer` on the one-partition system, `calls`
/// and `receive` on the messaging system): every figure by key.
fn bench_backend(
    backend: &BenchBackend,
    image: &kernel::KernelImage,
    messaging: &kernel::KernelImage,
) -> Result<Vec<(String, u64)>> {
    let mut values = bench_run(backend, image, "exits", &["bench"])?;
    let timer = bench_run(backend, image, "timer", &["bench"])?;
    match (
        value(&timer, "timer_ticks"),
        value(&timer, "timer_loop_instructions"),
        value(&timer, "non_console_exits_bench"),
    ) {
        (Some(ticks), Some(instructions), Some(exits)) if ticks > 0 && instructions > 0 => {
            values.push(("timer_exits_per_million".into(), exits * 1_000_000 / instructions));
            values.push(("timer_exits_per_thousand_ticks".into(), exits * 1000 / ticks));
            values.push(("timer_ticks".into(), ticks));
        }
        _ => bail!("the {} timer case printed no ticks, loop length or exit count: {timer:?}", backend.prefix),
    }
    values.extend(bench_run(backend, messaging, "calls", &["bench", "peer"])?);
    let receive = bench_run(backend, messaging, "receive", &["bench", "peer"])?;
    match (
        value(&receive, "hv_receiver_messages"),
        value(&receive, "hv_receiver_end_of_messages"),
        value(&receive, "non_console_exits_peer"),
    ) {
        (Some(messages), Some(eoms), Some(exits)) if messages > 0 => {
            // Rounded to the nearest: the receiver's ~10 set-up exits are in the count.
            let per_thousand = |n: u64| (n * 1000 + messages / 2) / messages;
            values.push(("hv_receiver_exits_per_thousand".into(), per_thousand(exits.saturating_sub(eoms))));
            values.push(("hv_receiver_eoms_per_thousand".into(), per_thousand(eoms)));
        }
        _ => bail!("the {} receive case printed no message, EOM or exit count: {receive:?}", backend.prefix),
    }
    values.extend(receive);
    Ok(values)
}

fn run(args: RunArgs) -> Result<ExitCode> {
    ensure_host(Purpose::for_emulator(args.emulator))?;
    let image = build_for(&config_path(args.config.clone(), args.emulator))?;
    let mut run = Run::new(args.emulator)
        .name("xtask-run")
        .cpus(args.cpus)
        .timeout(args.timeout)
        .kernel(image)
        .on_line(|line| println!("{line}"));
    for switch in &args.switches {
        run = run.switch(switch);
    }
    eprintln!(
        "booting on {} with {} cpu(s), kernel command line `{}`, timeout {} s",
        args.emulator,
        args.cpus,
        run.cmdline(),
        args.timeout.as_secs()
    );
    let report = run.try_execute()?;
    eprint!("\n{}", report.summary());
    Ok(if report.outcome.is_passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn test(filter: Option<String>) -> Result<ExitCode> {
    ensure_host(Purpose::ALL)?;
    // Build the default system once in the open, so a build error shows here with cargo's
    // own output; the HIL tests then reuse it and build other systems as they need them.
    build(None)?;
    let mut cmd = cargo();
    cmd.arg("test");
    if let Some(filter) = filter {
        cmd.arg(filter);
    }
    eprintln!("$ {}", show(&cmd));
    // cargo's test output goes through us (unchanged, live) so the run can end with one
    // line of totals over every test binary.
    let mut child =
        cmd.stdout(std::process::Stdio::piped()).spawn().with_context(|| format!("cannot start `{}`", show(&cmd)))?;
    let mut totals = TestTotals::default();
    if let Some(stdout) = child.stdout.take() {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            totals.add(&line);
        }
    }
    let ok = child.wait().context("waiting for cargo test")?.success();
    println!("\ntests: {} passed, {} failed", totals.passed, totals.failed);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Sums cargo's `test result: ok. N passed; M failed; ...` lines.
#[derive(Debug, Default, PartialEq, Eq)]
struct TestTotals {
    passed: u64,
    failed: u64,
}

impl TestTotals {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else { return };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(count)) = (words.next(), words.next()) else { continue };
            match (kind, count.parse::<u64>()) {
                ("passed", Ok(n)) => self.passed += n,
                ("failed", Ok(n)) => self.failed += n,
                _ => {}
            }
        }
    }
}

fn lint() -> Result<ExitCode> {
    let steps: [&[&str]; 3] = [
        &["fmt", "--all", "--check"],
        &["clippy", "--all-targets", "--", "-D", "warnings"],
        &[
            "clippy",
            "-p",
            kernel::GUESTS_PACKAGE,
            "-p",
            kernel::KERNEL_PACKAGE,
            "--target",
            kernel::KERNEL_TARGET,
            "--release",
            "--",
            "-D",
            "warnings",
        ],
    ];
    // The kernel's build script validates the default system, whose payloads are guests.
    if !status(kernel::cargo_build_guests())? {
        bail!("building the guests failed");
    }
    let mut failed = Vec::new();
    for step in steps {
        let mut cmd = cargo();
        cmd.args(step);
        if !status(cmd)? {
            failed.push(format!("cargo {}", step.join(" ")));
        }
    }
    if failed.is_empty() {
        eprintln!("lint: clean");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("lint failed: {}", failed.join("; "));
        Ok(ExitCode::FAILURE)
    }
}

fn image(out: Option<PathBuf>, config: Option<PathBuf>) -> Result<ExitCode> {
    ensure_host(&[Purpose::Image])?;
    let image = build(config)?;
    let out = out.unwrap_or_else(|| root().join("out/bulkhead.iso"));
    let mut iso = bulkhead_image::Iso::new(&image.elf);
    for (path, name) in &image.modules {
        iso = iso.module(path, name);
    }
    iso.build(&out).with_context(|| format!("cannot build {}", out.display()))?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({:.1} MiB): boots on BIOS and UEFI; write it to a USB stick or CD",
        display_path(&out),
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(ExitCode::SUCCESS)
}

fn display_path(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn run_defaults_to_qemu_bios_two_cpus_sixty_seconds() {
        assert_eq!(parse(&args("run")).unwrap(), Task::Run(RunArgs::default()));
        let RunArgs { emulator, cpus, timeout, .. } = RunArgs::default();
        assert_eq!((emulator, cpus, timeout), (Emulator::QemuBios, 2, Duration::from_secs(60)));
    }

    #[test]
    fn run_options() {
        assert_eq!(
            parse(&args("run --emulator bochs --cpus 4 --timeout=30 -- test=ud x")).unwrap(),
            Task::Run(RunArgs {
                emulator: Emulator::Bochs,
                cpus: 4,
                timeout: Duration::from_secs(30),
                config: None,
                switches: vec!["test=ud".into(), "x".into()],
            })
        );
        let Task::Run(r) = parse(&args("run --uefi --emulator=qemu")).unwrap() else { panic!() };
        assert_eq!(r.emulator, Emulator::QemuUefi);
    }

    #[test]
    fn bad_arguments_are_explained() {
        for (line, needle) in [
            ("run --emulator vbox", "unknown emulator `vbox`"),
            ("run --uefi --emulator bochs", "QEMU only"),
            ("run --cpus 0", "1 to 64"),
            ("run --cpus", "needs a value"),
            ("run --timeout soon", "whole number"),
            ("run --fast", "unknown option `--fast`"),
            ("test a b", "one filter"),
            ("image --out", "needs a path"),
            ("build --out x", "unknown option `--out` for `build`"),
            ("check", "needs the path"),
            ("lint extra", "unexpected argument"),
            ("frobnicate", "unknown command"),
        ] {
            let err = parse(&args(line)).unwrap_err().to_string();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn other_commands() {
        assert_eq!(parse(&args("test smp")).unwrap(), Task::Test { filter: Some("smp".into()) });
        assert_eq!(parse(&args("test")).unwrap(), Task::Test { filter: None });
        assert_eq!(parse(&args("lint")).unwrap(), Task::Lint);
        assert_eq!(
            parse(&args("image --out /tmp/x.iso")).unwrap(),
            Task::Image { out: Some("/tmp/x.iso".into()), config: None }
        );
        assert_eq!(parse(&args("build --config a.toml")).unwrap(), Task::Build { config: Some("a.toml".into()) });
        assert_eq!(parse(&args("check a.toml")).unwrap(), Task::Check { config: "a.toml".into() });
        assert_eq!(parse(&args("bench --json")).unwrap(), Task::Bench { json: true });
        assert!(parse(&args("bench --csv")).unwrap_err().to_string().contains("unknown option"));
        assert_eq!(parse(&[]).unwrap(), Task::Help);
    }

    #[test]
    fn test_totals_sum_cargo_result_lines() {
        let mut t = TestTotals::default();
        t.add("test result: ok. 25 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 65.27s");
        t.add("test result: FAILED. 3 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1s");
        t.add("running 25 tests");
        assert_eq!(t, TestTotals { passed: 28, failed: 2 });
    }

    /// CI installs the packages itself before calling xtask; keep its list complete.
    #[test]
    fn ci_script_installs_every_host_package() {
        let script = std::fs::read_to_string(root().join(".ci/run")).unwrap();
        for package in host::all_packages() {
            assert!(script.split_whitespace().any(|w| w == package), ".ci/run does not install {package}");
        }
    }
}
