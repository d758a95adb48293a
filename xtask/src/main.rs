//! `cargo xtask`: the developer commands of the Bulkhead workspace (`cargo xtask help`
//! lists them, `cargo xtask help COMMAND` shows one; the texts are in `cli.rs`).
//!
//! Every command that builds or boots first makes sure the machine has what it needs
//! (`setup.rs`): the Rust target and tools through rustup, the Debian packages through
//! apt-get when run as root; otherwise it names the exact commands to run.

mod bench;
mod cli;
mod console;
mod flash;
mod image;
mod keys;
mod linux;
mod memory;
mod setup;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use bulkhead_tests::host::Purpose;
use bulkhead_tests::{Emulator, Run, kernel};

use cli::{RunArgs, Task};
use setup::{Rust, ensure_apps_toolchain, ensure_host, ensure_rust};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = match cli::parse(&args) {
        Ok(task) => task,
        Err(e) => {
            match e.command {
                Some(c) => eprintln!("error: {e}\n\n{}", cli::command_usage(c)),
                None => eprintln!("error: {e}\n\n{}", cli::usage()),
            }
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
        Task::Help(None) => {
            print!("{}", cli::usage());
            Ok(ExitCode::SUCCESS)
        }
        Task::Help(Some(c)) => {
            print!("{}", cli::command_usage(c));
            Ok(ExitCode::SUCCESS)
        }
        Task::Run(args) => run(args),
        Task::Test { filter } => test(filter),
        Task::Lint => lint(),
        Task::Build { config } => build(config).map(|_| ExitCode::SUCCESS),
        Task::Check { config } => check(&config),
        Task::Bench { json, profile: Some(case), .. } => bench::profile(json, &case),
        Task::Bench { json, memory: true, .. } => memory::memory_bench(json),
        Task::Bench { json, linux: false, unikernel, .. } => bench::bench(json, unikernel),
        Task::Bench { json, linux: true, .. } => bench::linux_bench(json),
        Task::Image { format, out, config } => image::image(format, out, config),
        Task::Flash { image, device, yes, allow_file } => flash::flash(&image, &device, yes, allow_file),
        Task::Console { source, kernel } => console::console(source, kernel),
        Task::LinuxAssets => linux::linux_assets(),
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

/// A user-given config path: relative to the current directory, like any command-line
/// path. It must exist: checked here, so a typo is one clear line instead of a failed
/// build script.
fn config_path(config: Option<PathBuf>, emulator: Emulator) -> Result<PathBuf> {
    let path = match config {
        Some(path) => std::path::absolute(&path).unwrap_or(path),
        None => root().join(emulator.default_config()),
    };
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(path),
        Ok(_) => bail!("the system file {} is not a file", path.display()),
        Err(e) => bail!("cannot read the system file {}: {e}", path.display()),
    }
}

/// Builds the guests and the kernel for `config` (default: the QEMU demo system).
fn build(config: Option<PathBuf>) -> Result<kernel::KernelImage> {
    build_for(&config_path(config, Emulator::QemuBios)?)
}

fn build_for(config: &Path) -> Result<kernel::KernelImage> {
    build_for_with(config, &[])
}

/// [`build_for`] with the kernel's cargo `features` (`profile` for `bench --profile`).
fn build_for_with(config: &Path, features: &[&str]) -> Result<kernel::KernelImage> {
    ensure_rust(Rust::BUILD)?;
    ensure_linux_host(config)?;
    let apps = ensure_apps(config)?;
    if apps {
        eprintln!("building the unikernel apps (apps/) for {}", display_path(config));
        eprintln!("$ (in apps/) {}", show(&bulkhead_tests::apps::cargo_build_apps()));
        bulkhead_tests::apps::build_apps(false).map_err(anyhow::Error::msg)?;
    }
    eprintln!("building the guests and the hypervisor for {}", display_path(config));
    for cmd in kernel::build_commands_with(config, features) {
        eprintln!("$ {}", show(&cmd));
    }
    kernel::build_kernel_with(config, false, features).map_err(anyhow::Error::msg)
}

/// What building the `@linux/` assets of a system file needs on the host (the shell
/// initramfs carries a kernel module built against Debian's headers and a static
/// command): installed or requested, as for the emulators.
fn ensure_linux_host(config: &Path) -> Result<()> {
    let text = std::fs::read_to_string(config).unwrap_or_default();
    if bulkhead_tests::linux_system::names_linux_assets(&text) {
        ensure_host(&[Purpose::LinuxModule])?;
    }
    Ok(())
}

/// The apps' toolchain, installed if `config` names an `@apps/` payload; whether it does.
fn ensure_apps(config: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(config).unwrap_or_default();
    let apps = bulkhead_tests::apps::names_apps(&text);
    if apps {
        ensure_apps_toolchain()?;
    }
    Ok(apps)
}

/// Validates a system file without building anything that needs it.
fn check(config: &Path) -> Result<ExitCode> {
    ensure_rust(Rust::BUILD)?;
    if !status(kernel::cargo_build_guests())? {
        bail!("building the guests failed; payloads named @guests/NAME cannot be checked");
    }
    // `@linux/` payloads: fetched through apt and built, so the check sees the real files.
    ensure_linux_host(config)?;
    bulkhead_tests::linux_system::prepare(config).map_err(anyhow::Error::msg)?;
    // `@apps/` payloads: built, so the check sees the real programs.
    if ensure_apps(config)? {
        bulkhead_tests::apps::build_apps(false).map_err(anyhow::Error::msg)?;
    }
    let loaded = bulkhead_board::load_system(config, &kernel::load_options());
    for warning in &loaded.warnings {
        eprint!("{}", warning.warning());
    }
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

/// How long an interactive `cargo xtask run` may last without `--timeout`: a session
/// at a shell ends with Ctrl-A X, not at a deadline.
const INTERACTIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn run(args: RunArgs) -> Result<ExitCode> {
    if args.image.is_some() {
        return image::run_image(args);
    }
    ensure_host(Purpose::for_emulator(args.emulator))?;
    let image = build_for(&config_path(args.config.clone(), args.emulator)?)?;
    let system = bulkhead_board::load_system(&image.config, &kernel::load_options())
        .result
        .map_err(|d| anyhow::anyhow!("invalid configuration {}:\n{d}", image.config.display()))?;
    // The emulated machine has at least the CPUs the system's board lists.
    let cpus = args.cpus.max(u8::try_from(system.board.cpus.len()).unwrap_or(u8::MAX));
    // Keystrokes go to the `console_input` partition when there is one and a terminal to
    // read them from; such a run lasts until its verdict or Ctrl-A X, unless `--timeout`
    // says otherwise.
    let input_partition = system.hypervisor.console_input.map(|id| system.partitions[usize::from(id.0)].name.clone());
    let raw = match &input_partition {
        Some(_) if bulkhead_tests::emulator::has_serial_input(args.emulator) => keys::RawInput::enter(),
        _ => None,
    };
    let timeout = match (&raw, args.timeout_given) {
        (Some(_), false) => INTERACTIVE_TIMEOUT,
        _ => args.timeout,
    };
    let mut run = Run::new(args.emulator)
        .name("xtask-run")
        .cpus(cpus)
        .timeout(timeout)
        .kernel(image)
        .on_line(|line| println!("{line}"));
    for switch in &args.switches {
        run = run.switch(switch);
    }
    eprintln!(
        "booting on {} with {} cpu(s), kernel command line `{}`, timeout {} s",
        args.emulator,
        cpus,
        run.cmdline(),
        timeout.as_secs()
    );
    match (&input_partition, &raw) {
        (Some(name), Some(_)) => {
            eprintln!(
                "keyboard: what you type goes to partition `{name}` ({}; its lines appear when complete)",
                keys::HELP
            );
            run = run.input(keys::forward());
        }
        (Some(name), None) => {
            eprintln!(
                "keyboard: not forwarded to partition `{name}` (standard input is not a terminal, or the emulator takes no serial input)"
            )
        }
        (None, _) => {}
    }
    let report = run.try_execute();
    drop(raw);
    let report = report?;
    if keys::quit_requested() {
        eprintln!("\nquit from the keyboard (Ctrl-A X) before the run's verdict");
    }
    eprint!("\n{}", report.summary());
    Ok(if report.outcome.is_passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn test(filter: Option<String>) -> Result<ExitCode> {
    ensure_host(Purpose::ALL)?;
    // The HIL tests boot unikernel apps too, and the link test builds std for them.
    ensure_apps_toolchain()?;
    // Build the default system once in the open, so a build error shows here with cargo's
    // own output; the HIL tests then reuse it and build other systems as they need them.
    build(None)?;
    let mut cmd = cargo();
    cmd.arg("test");
    if let Some(filter) = filter {
        cmd.arg(filter);
    }
    eprintln!("$ {}", show(&cmd));
    eprintln!(
        "  (each test binary prints its tests as they finish; the HIL tests build the kernels of \
         their systems first, then boot in parallel, one emulator per core)"
    );
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
    ensure_rust(Rust::LINT)?;
    let kernel_clippy: &[&str] = &[
        "clippy",
        "-p",
        kernel::GUESTS_PACKAGE,
        "-p",
        kernel::KERNEL_PACKAGE,
        "-p",
        bulkhead_runtime_build::RUNTIME_PACKAGE,
        "--target",
        kernel::KERNEL_TARGET,
        "--release",
        "--",
        "-D",
        "warnings",
    ];
    // The kernel compiles differently per console format (defmt macros, or the text
    // logger), so it is linted in both: the default system, and a text-console one.
    let text_config = root().join("tests/configs/text-console.toml");
    // The exit profile's stamps (`bench --profile`) exist only with the kernel's feature.
    let kernel_profile_clippy: &[&str] = &[
        "clippy",
        "-p",
        kernel::KERNEL_PACKAGE,
        "--features",
        "bulkhead-kernel/profile",
        "--target",
        kernel::KERNEL_TARGET,
        "--release",
        "--",
        "-D",
        "warnings",
    ];
    let steps: [(&[&str], Option<&Path>); 5] = [
        (&["fmt", "--all", "--check"], None),
        (&["clippy", "--all-targets", "--", "-D", "warnings"], None),
        (kernel_clippy, None),
        (kernel_clippy, Some(&text_config)),
        (kernel_profile_clippy, None),
    ];
    // The kernel's build script validates the default system, whose payloads are guests.
    if !status(kernel::cargo_build_guests())? {
        bail!("building the guests failed");
    }
    let mut failed = Vec::new();
    for (step, config) in steps {
        let mut cmd = cargo();
        cmd.args(step);
        if let Some(config) = config {
            eprintln!("  (kernel with the system {}: text console)", display_path(config));
            cmd.env("BULKHEAD_CONFIG", config).env("BULKHEAD_GUEST_DIR", kernel::binaries_dir());
        }
        if !status(cmd)? {
            let with = config.map(|c| format!("BULKHEAD_CONFIG={} ", display_path(c))).unwrap_or_default();
            failed.push(format!("{with}cargo {}", step.join(" ")));
        }
    }
    // The apps are a workspace of their own (nightly, Hermit target): `cargo fmt --all`
    // does not reach them, the workspace's rustfmt (and rustfmt.toml) checks their files.
    let mut rustfmt = Command::new("rustfmt");
    rustfmt.current_dir(root()).args(["--edition", "2024", "--check"]).args(app_sources(&root().join("apps")));
    if !status(rustfmt)? {
        failed.push("rustfmt --check on apps/".into());
    }
    if failed.is_empty() {
        eprintln!("lint: clean");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("lint failed: {}", failed.join("; "));
        Ok(ExitCode::FAILURE)
    }
}

/// The Rust files of the apps (`apps/*/build.rs`, `apps/*/src/**.rs`), sorted.
fn app_sources(apps: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() && name != "target" && !name.to_string_lossy().starts_with('.') {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(apps, &mut files);
    files.sort();
    files
}

fn display_path(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for package in bulkhead_tests::host::all_packages() {
            assert!(script.split_whitespace().any(|w| w == package), ".ci/run does not install {package}");
        }
    }

    /// CI must prove the fresh-machine path: it removes the kernel target before it runs the
    /// README commands, so a build that no longer installs it fails CI.
    #[test]
    fn ci_script_starts_without_the_kernel_target() {
        let script = std::fs::read_to_string(root().join(".ci/run")).unwrap();
        let remove = script.find("rustup target remove x86_64-unknown-none").expect(".ci/run removes the target");
        let test = script.find("cargo xtask test").expect(".ci/run runs the README's test command");
        assert!(remove < test);
    }

    /// The Linux assets come through apt, whose lists CI updates first; CI fetches them
    /// before the tests that boot Linux.
    #[test]
    fn ci_script_fetches_the_linux_assets_before_the_tests() {
        let script = std::fs::read_to_string(root().join(".ci/run")).unwrap();
        let update = script.find("apt-get update").expect(".ci/run updates apt's lists");
        let fetch = script.find("cargo xtask linux-assets").expect(".ci/run fetches the Linux assets");
        let test = script.find("cargo xtask test").expect(".ci/run runs the tests");
        assert!(update < fetch && fetch < test);
    }

    #[test]
    fn lint_finds_the_apps_sources() {
        let files = app_sources(&root().join("apps"));
        assert!(files.contains(&root().join("apps/hello/src/main.rs")), "{files:?}");
        assert!(files.contains(&root().join("apps/hello/build.rs")), "{files:?}");
    }

    #[test]
    fn a_missing_config_is_one_clear_error() {
        let err = config_path(Some("no/such/system.toml".into()), Emulator::QemuBios).unwrap_err().to_string();
        assert!(err.contains("cannot read the system file") && err.contains("no/such/system.toml"), "{err}");
        assert!(config_path(None, Emulator::Bochs).unwrap().ends_with("board/systems/demo-bochs.toml"));
    }
}
