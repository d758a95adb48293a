//! `cargo run -p bulkhead-board --example check -- [--tables] SYSTEM.toml [GUEST_DIR]`:
//! validates a system file and prints its summary (or, with `--tables`, the generated Rust),
//! or every problem with exit status 1. The same as `cargo xtask check`, without the
//! workspace around it.
use std::path::PathBuf;

fn main() {
    let mut args: Vec<_> = std::env::args_os().skip(1).collect();
    let tables = args.first().is_some_and(|a| a == "--tables");
    if tables {
        args.remove(0);
    }
    let mut args = args.into_iter();
    let Some(system) = args.next() else {
        eprintln!("usage: check [--tables] SYSTEM.toml [GUEST_DIR]");
        std::process::exit(2);
    };
    let options =
        bulkhead_board::LoadOptions { guest_dir: args.next().map(PathBuf::from), linux_dir: None, app_dir: None };
    let loaded = bulkhead_board::load_system(PathBuf::from(system).as_path(), &options);
    match loaded.result {
        Ok(system) if tables => print!("{}", bulkhead_board::generate_tables(&system)),
        Ok(system) => print!("{}", bulkhead_board::summary(&system)),
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            std::process::exit(1);
        }
    }
}
