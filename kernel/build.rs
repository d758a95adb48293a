//! Build script of the hypervisor kernel:
//! 1. validates the system configuration (board + system TOML) and compiles it into
//!    `$OUT_DIR/config.rs`, which `src/config.rs` includes; a bad configuration fails the
//!    build with every problem listed;
//! 2. links the kernel at its fixed physical address (bare-metal target only).
//!
//! The system file is `$BULKHEAD_CONFIG` when set (`cargo xtask ... --config PATH` sets
//! it), else `board/systems/demo.toml`. Payloads named `@guests/NAME` resolve to
//! `$BULKHEAD_GUEST_DIR`, else to the directory this build's binaries go to (where
//! `cargo xtask` builds the guests).

use std::path::{Path, PathBuf};

fn main() {
    link();
    compile_config();
}

fn link() {
    println!("cargo:rerun-if-changed=linker.ld");
    if std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-none") {
        let dir = env("CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
        // defmt's interned-string section (INFO, not loaded).
        println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
        println!("cargo:rustc-link-arg-bins=-znoexecstack");
        println!("cargo:rustc-link-arg-bins=--no-pie");
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name}"))
}

fn compile_config() {
    println!("cargo:rerun-if-env-changed=BULKHEAD_CONFIG");
    println!("cargo:rerun-if-env-changed=BULKHEAD_GUEST_DIR");
    let workspace = Path::new(&env("CARGO_MANIFEST_DIR")).parent().expect("kernel/ sits in the workspace").to_owned();
    let system = match std::env::var_os("BULKHEAD_CONFIG") {
        Some(path) => workspace.join(path),
        None => workspace.join(bulkhead_board::DEFAULT_SYSTEM),
    };
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let guest_dir = std::env::var_os("BULKHEAD_GUEST_DIR").map(PathBuf::from).or_else(|| binaries_dir(&out_dir));
    let loaded = bulkhead_board::load_system(&system, &bulkhead_board::LoadOptions { guest_dir: guest_dir.clone() });
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
    // defmt filters at compile time: the configured log level becomes this crate's
    // DEFMT_LOG, read by the defmt macros while the kernel compiles.
    let level = match config.hypervisor.log_level {
        bulkhead_board::tables::LogLevel::Error => "error",
        bulkhead_board::tables::LogLevel::Warn => "warn",
        bulkhead_board::tables::LogLevel::Info => "info",
        bulkhead_board::tables::LogLevel::Debug => "debug",
        bulkhead_board::tables::LogLevel::Trace => "trace",
    };
    println!("cargo:rustc-env=DEFMT_LOG={level}");
    let source = bulkhead_board::generate_tables(&config);
    std::fs::write(out_dir.join("config.rs"), source).expect("write config.rs to OUT_DIR");
}

/// `<target>/<triple>/<profile>` from `<target>/<triple>/<profile>/build/<pkg>-<hash>/out`.
fn binaries_dir(out_dir: &Path) -> Option<PathBuf> {
    out_dir.ancestors().nth(3).map(Path::to_owned)
}
