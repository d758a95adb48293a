//! Build script of the hypervisor kernel:
//! 1. validates the system configuration (board + system TOML) and compiles it into
//!    `$OUT_DIR/config.rs`, which `src/config.rs` includes; a bad configuration fails the
//!    build with every problem listed;
//! 2. selects the console format (`--cfg bulkhead_console="defmt"` or `"text"`, see
//!    `src/log.rs`) and the log level;
//! 3. links the kernel at its fixed physical address (bare-metal target only), with
//!    defmt's linker script for a defmt console.
//!
//! The system file is `$BULKHEAD_CONFIG` when set (`cargo xtask ... --config PATH` sets
//! it), else `board/systems/demo.toml`. Payloads named `@guests/NAME` resolve to
//! `$BULKHEAD_GUEST_DIR`, else to the directory this build's binaries go to (where
//! `cargo xtask` builds the guests); `@linux/NAME` to `$BULKHEAD_LINUX_DIR`, else to
//! `target/linux-assets/current` (which `cargo xtask` fills).

use std::path::{Path, PathBuf};

use bulkhead_board::tables::{ConsoleFormat, LogLevel};

fn main() {
    let format = compile_config();
    link(format);
}

fn link(format: ConsoleFormat) {
    println!("cargo:rerun-if-changed=linker.ld");
    if std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-none") {
        let dir = env("CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
        if format == ConsoleFormat::Defmt {
            // defmt's interned-string section (INFO, not loaded). A text console uses no
            // defmt at all, so its kernel has neither the section nor a global logger.
            println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
        }
        println!("cargo:rustc-link-arg-bins=-znoexecstack");
        println!("cargo:rustc-link-arg-bins=--no-pie");
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name}"))
}

/// Validates and compiles the configuration; returns its console format.
fn compile_config() -> ConsoleFormat {
    println!("cargo:rerun-if-env-changed=BULKHEAD_CONFIG");
    println!("cargo:rerun-if-env-changed=BULKHEAD_GUEST_DIR");
    println!("cargo:rerun-if-env-changed=BULKHEAD_LINUX_DIR");
    println!("cargo:rerun-if-env-changed=BULKHEAD_APP_DIR");
    let workspace = Path::new(&env("CARGO_MANIFEST_DIR")).parent().expect("kernel/ sits in the workspace").to_owned();
    let system = match std::env::var_os("BULKHEAD_CONFIG") {
        Some(path) => workspace.join(path),
        None => workspace.join(bulkhead_board::DEFAULT_SYSTEM),
    };
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let guest_dir = std::env::var_os("BULKHEAD_GUEST_DIR").map(PathBuf::from).or_else(|| binaries_dir(&out_dir));
    let linux_dir = std::env::var_os("BULKHEAD_LINUX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target").join(bulkhead_board::LINUX_DIR));
    let app_dir = std::env::var_os("BULKHEAD_APP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target").join(bulkhead_board::APPS_DIR));
    let loaded = bulkhead_board::load_system(
        &system,
        &bulkhead_board::LoadOptions {
            guest_dir: guest_dir.clone(),
            linux_dir: Some(linux_dir),
            app_dir: Some(app_dir),
        },
    );
    for file in &loaded.files_read {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!("cargo:rerun-if-changed={}", system.display());
    // Settings accepted but not honoured yet: say so at every build (rule `not-yet`).
    for warning in &loaded.warnings {
        let text = warning.warning();
        let mut lines = text.lines();
        if let Some(head) = lines.next() {
            println!("cargo:warning={}", head.replacen(" warning: ", " ", 1));
        }
        for line in lines {
            println!("cargo:warning={line}");
        }
    }
    let config = match loaded.result {
        Ok(config) => config,
        Err(diagnostics) => {
            eprintln!("\nerror: invalid Bulkhead configuration {}\n\n{diagnostics}", system.display());
            std::process::exit(1);
        }
    };
    // Payloads are boot modules, not part of the kernel; rebuild when they change anyway,
    // so the image and the tables never disagree.
    for module in bulkhead_board::boot_modules(&config) {
        println!("cargo:rerun-if-changed={}", module.path.display());
    }
    // Both consoles filter at compile time. defmt reads DEFMT_LOG while the kernel
    // compiles; the text console reads the level from the compiled configuration.
    let level = match config.hypervisor.log_level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    };
    println!("cargo:rustc-env=DEFMT_LOG={level}");
    let format = config.hypervisor.console_format;
    println!("cargo::rustc-check-cfg=cfg(bulkhead_console, values(\"defmt\", \"text\"))");
    let cfg = match format {
        ConsoleFormat::Defmt => "defmt",
        ConsoleFormat::Text => "text",
    };
    println!("cargo::rustc-cfg=bulkhead_console=\"{cfg}\"");
    let source = bulkhead_board::generate_tables(&config);
    std::fs::write(out_dir.join("config.rs"), source).expect("write config.rs to OUT_DIR");
    format
}

/// `<target>/<triple>/<profile>` from `<target>/<triple>/<profile>/build/<pkg>-<hash>/out`.
fn binaries_dir(out_dir: &Path) -> Option<PathBuf> {
    out_dir.ancestors().nth(3).map(Path::to_owned)
}
