//! No input may panic or hang the configuration tool (Hubris' rule for app.toml tooling).
//!
//! A bounded property test that runs in the normal `cargo test`: random bytes, mutations of
//! every corpus file (syntax and value damage, huge numbers, hostile paths), deep nesting,
//! and damaged board files. For each input, loading must return: either a `System` that
//! also generates tables and a summary, or diagnostics that all have a position, a rule and
//! a hint. The seed is fixed so CI is reproducible; `PROPTEST_RNG_SEED` and
//! `PROPTEST_CASES` explore further.

mod common;

use std::path::{Path, PathBuf};

use bulkhead_board::{LoadOptions, RULES, load_system};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};

fn config(cases: u32) -> Config {
    let mut config = Config { failure_persistence: Some(Box::new(FileFailurePersistence::Off)), ..Config::default() };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0xb01d_4ead);
    }
    config
}

/// Loads `system` and checks that whatever comes back is well formed.
fn check(system: &Path, options: &LoadOptions) {
    let loaded = load_system(system, options);
    assert!(loaded.files_read.iter().any(|f| f == system));
    match loaded.result {
        Ok(system) => {
            assert!(!bulkhead_board::generate_tables(&system).is_empty());
            assert!(!bulkhead_board::summary(&system).is_empty());
            let _ = bulkhead_board::boot_modules(&system);
        }
        Err(diagnostics) => {
            assert!(!diagnostics.is_empty());
            for d in diagnostics.errors() {
                assert!(d.line >= 1 && d.col >= 1, "{d}");
                assert!(RULES.iter().any(|r| r.name == d.rule), "{d}");
                assert!(!d.hint.is_empty(), "{d}");
            }
            assert!(diagnostics.to_string().contains("error"));
        }
    }
}

/// A per-test file next to the corpus boards (so `../boards/test.toml` still resolves).
fn scratch(name: &str) -> (PathBuf, PathBuf) {
    let dir = common::scratch_dir(name);
    let boards = dir.join("boards");
    std::fs::create_dir_all(&boards).unwrap();
    std::fs::copy(common::config_dir().join("boards/test.toml"), boards.join("test.toml")).unwrap();
    let sys = dir.join("sys");
    std::fs::create_dir_all(&sys).unwrap();
    (sys.join("system.toml"), boards)
}

/// Every corpus file and shipped system: starting points for mutation.
fn seeds() -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    for dir in [
        common::config_dir().join("valid"),
        common::config_dir().join("invalid"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systems"),
    ] {
        for entry in std::fs::read_dir(dir).unwrap() {
            files.push(std::fs::read(entry.unwrap().path()).unwrap());
        }
    }
    files.sort();
    files
}

/// Fragments that stress the parser and the checks when spliced in anywhere.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    "\"",
    "'",
    ",",
    ".",
    "\n",
    "#",
    "\\",
    "\u{0}",
    "\u{feff}",
    "é",
    "0x",
    "-",
    "-1",
    "0",
    "16",
    "2048",
    "65",
    "1e400",
    "nan",
    "-inf",
    "1.5",
    "true",
    "1979-05-27T07:32:00Z",
    "99999999999999999999999999999999999999999",
    "0xffffffffffffffff",
    "0xfffffffffffff000",
    "0o777",
    "0b101",
    "\"64 MiB\"",
    "\"18446744073709551615 TiB\"",
    "\"0x\"",
    "\"\"",
    "[[partition]]\n",
    "[[partition.memory]]\n",
    "[partition.payload]\n",
    "[[connection]]\n",
    "[[shared_memory]]\n",
    "[hypervisor]\n",
    "[[cpu]]\n",
    "[[device]]\n",
    "name = \"a\"\n",
    "name = \"b\"\n",
    "cores = [0, 0, 9]\n",
    "cores = []\n",
    "host_base = 0xfffffffffffff000\n",
    "guest_base = 0xffffffffffffffff\n",
    "size = 0\n",
    "size = \"16 EiB\"\n",
    "access = \"\"\n",
    "access = \"rwxrwx\"\n",
    "large_pages = true\n",
    "path = \"@guests/\"\n",
    "path = \"@guests/..\"\n",
    "path = \"/dev/zero\"\n",
    "path = \"/\"\n",
    "initrd = \"/dev/null\"\n",
    "board = \"/dev/zero.toml\"\n",
    "board = \"../../../../../../etc/passwd.toml\"\n",
    "board = \"\"\n",
    "kind = \"event\"\n",
    "kind = \"message\"\n",
    "sint = -1\n",
    "flag = 70000\n",
    "queue_depth = 4294967296\n",
    "id = 16777216\n",
    "devices = [\"com1\", \"com1\", \"nic\"]\n",
    "fault_policy = \"restart\"\n",
    "max_restarts = -3\n",
    "watchdog_ms = 0\n",
    "sharers = [{ partition = \"a\", guest_base = 0 }]\n",
    "a.b.c.d.e.f = 1\n",
    "x2apic = true\n",
    "apic_id = 0xffffffff\n",
    "core = 16\n",
    "large_pages = false\nsize = \"1 GiB\"\n",
];

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, usize),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
    FlipByte(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, t)| Edit::Insert(at, t)),
        2 => (any::<usize>(), 1usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        1 => (any::<usize>(), 1usize..200).prop_map(|(at, n)| Edit::Duplicate(at, n)),
        1 => any::<usize>().prop_map(Edit::Truncate),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::FlipByte(at, b)),
    ]
}

fn apply(mut text: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = text.len().max(1);
        match *e {
            Edit::Insert(at, t) => {
                let at = at % (text.len() + 1);
                text.splice(at..at, TOKENS[t].bytes());
            }
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(text.len());
                if at < end {
                    text.drain(at..end);
                }
            }
            Edit::Duplicate(at, n) => {
                let at = at % len;
                let end = (at + n).min(text.len());
                if at < end {
                    let copy: Vec<u8> = text[at..end].to_vec();
                    text.splice(end..end, copy);
                }
            }
            Edit::Truncate(at) => text.truncate(at % len),
            Edit::FlipByte(at, b) => {
                if let Some(byte) = text.get_mut(at % len) {
                    *byte = b;
                }
            }
        }
    }
    text
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let (file, _) = scratch("random-bytes");
        std::fs::write(&file, &bytes).unwrap();
        check(&file, &common::options());
    }
}

proptest! {
    #![proptest_config(config(700))]

    #[test]
    fn mutated_configs_never_panic(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..8),
    ) {
        let seeds = seeds();
        let text = apply(seed.get(&seeds).clone(), &edits);
        let (file, _) = scratch("mutated");
        std::fs::write(&file, &text).unwrap();
        check(&file, &common::options());
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn mutated_boards_never_panic(
        edits in prop::collection::vec(edit(), 1..8),
        base in 0usize..3,
    ) {
        let (file, boards) = scratch("boards");
        let source = match base {
            0 => common::config_dir().join("boards/test.toml"),
            1 => Path::new(env!("CARGO_MANIFEST_DIR")).join("boards/qemu-q35.toml"),
            _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("boards/bochs-pc.toml"),
        };
        let text = apply(std::fs::read(source).unwrap(), &edits);
        std::fs::write(boards.join("fuzz.toml"), &text).unwrap();
        let system = std::fs::read_to_string(common::config_dir().join("valid/full.toml"))
            .unwrap()
            .replace("../boards/test.toml", "../boards/fuzz.toml");
        std::fs::write(&file, system).unwrap();
        check(&file, &common::options());
    }
}

proptest! {
    #![proptest_config(config(40))]

    #[test]
    fn deep_nesting_never_overflows(depth in 1usize..20_000, shape in 0usize..5) {
        let text = match shape {
            0 => format!("board = {}{}", "[".repeat(depth), "]".repeat(depth)),
            1 => format!("board = {}1{}", "{ a = ".repeat(depth), " }".repeat(depth)),
            2 => format!("{} = 1", vec!["a"; depth].join(".")),
            3 => format!("[{}]\nx = 1", vec!["partition"; depth].join(".")),
            _ => format!("x = [{}]", "[1], ".repeat(depth)),
        };
        let (file, _) = scratch("nesting");
        std::fs::write(&file, text).unwrap();
        check(&file, &common::options());
    }
}

#[test]
fn oversized_files_are_refused_not_read() {
    let (file, _) = scratch("oversized");
    let line = "# padding padding padding padding padding padding padding padding\n";
    let text = line.repeat((bulkhead_board::MAX_CONFIG_BYTES as usize / line.len()) + 2);
    std::fs::write(&file, text).unwrap();
    let diagnostics = load_system(&file, &common::options()).result.unwrap_err();
    assert_eq!(diagnostics.errors()[0].rule, "file-unreadable");
}
