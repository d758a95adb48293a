//! The configuration corpus: every file in `config/invalid/` must fail with exactly the
//! problems its `# expect:` header lists (rule and line, and the file when it is not the
//! system file itself), and every file in `config/valid/` must pass.
//!
//! Header lines: `# expect: RULE line N [col C] [in PATH]`, PATH relative to the file. A
//! valid file lists the warnings it must produce (settings accepted but not honoured yet,
//! or written under an old name) the same way as `# warn: RULE line N`; a valid file
//! without such lines must produce none.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bulkhead_board::{RULES, load_system, rule};
use common::{config_dir, options};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Expect {
    file: PathBuf,
    rule: String,
    line: usize,
    col: Option<usize>,
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn expectations(file: &Path) -> Vec<Expect> {
    headers(file, "# expect: ")
}

fn headers(file: &Path, prefix: &str) -> Vec<Expect> {
    let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
    let dir = file.parent().unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|spec| {
            let words: Vec<&str> = spec.split_whitespace().collect();
            let bad = || -> ! { panic!("{}: bad expect line {spec:?}", file.display()) };
            let Some((rule, rest)) = words.split_first() else { bad() };
            let mut e = Expect { file: canonical(file), rule: (*rule).to_owned(), line: 0, col: None };
            let mut it = rest.iter();
            while let Some(word) = it.next() {
                let Some(value) = it.next() else { bad() };
                match *word {
                    "line" => e.line = value.parse().unwrap_or_else(|_| bad()),
                    "col" => e.col = Some(value.parse().unwrap_or_else(|_| bad())),
                    "in" => e.file = canonical(&dir.join(value)),
                    _ => bad(),
                }
            }
            assert!(e.line > 0, "{}: {prefix}without line", file.display());
            e
        })
        .collect()
}

#[test]
fn invalid_configs_report_exactly_their_expected_problems() {
    let files = toml_files(&config_dir().join("invalid"));
    assert!(files.len() >= 25, "only {} invalid configs", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let expected: BTreeSet<Expect> = expectations(file).into_iter().collect();
        assert!(!expected.is_empty(), "{}: no `# expect:` line", file.display());
        let loaded = load_system(file, &options());
        let diagnostics = match loaded.result {
            Ok(_) => {
                failures.push(format!("{}: passed validation", file.display()));
                continue;
            }
            Err(d) => d,
        };
        let actual: BTreeSet<Expect> = diagnostics
            .errors()
            .iter()
            .map(|d| {
                let col =
                    expected.iter().any(|e| e.rule == d.rule && e.line == d.line && e.col.is_some()).then_some(d.col);
                Expect { file: canonical(&d.file), rule: d.rule.to_owned(), line: d.line, col }
            })
            .collect();
        if actual != expected {
            failures.push(format!(
                "{}:\n  expected {:?}\n  got\n{diagnostics}",
                file.display(),
                expected.iter().map(|e| format!("{} line {}", e.rule, e.line)).collect::<Vec<_>>()
            ));
        }
        // The rendered form: one `file:line:col: [rule] message` and one hint per problem.
        let text = diagnostics.to_string();
        for d in diagnostics.errors() {
            let head = format!("{}:{}:{}: [{}] ", d.file.display(), d.line, d.col, d.rule);
            assert!(text.contains(&head), "{text}");
            assert!(!d.hint.is_empty() && !d.message.is_empty());
        }
        assert_eq!(text.matches("\n  hint: ").count(), diagnostics.len(), "{text}");
        let n = diagnostics.len();
        assert!(text.ends_with(&format!("\n{n} error{}\n", if n == 1 { "" } else { "s" })), "{text}");
        // The system file was read, whatever happened after.
        assert!(loaded.files_read.iter().any(|f| f == file));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_rule_has_an_invalid_config() {
    let mut covered = BTreeSet::new();
    for file in toml_files(&config_dir().join("invalid")) {
        for e in expectations(&file) {
            assert!(RULES.iter().any(|r| r.name == e.rule), "{}: unknown rule {}", file.display(), e.rule);
            covered.insert(e.rule);
        }
    }
    // Warnings are not errors: the valid corpus carries them (`# warn:`).
    let valid = toml_files(&config_dir().join("valid"));
    for warning in [rule::NOT_YET, rule::DEPRECATED] {
        assert!(valid.iter().any(|f| headers(f, "# warn: ").iter().any(|w| w.rule == warning)), "{warning}");
    }
    for r in RULES {
        // A file the tool cannot read cannot carry its own expectation; see below.
        if r.name != rule::FILE_UNREADABLE && r.name != rule::NOT_YET && r.name != rule::DEPRECATED {
            assert!(covered.contains(r.name), "no invalid config covers {}", r.name);
        }
    }
}

#[test]
fn unreadable_system_files_are_reported() {
    for path in [config_dir().join("no-such-system.toml"), config_dir()] {
        let loaded = load_system(&path, &options());
        let diagnostics = loaded.result.unwrap_err();
        assert_eq!(diagnostics.len(), 1, "{diagnostics}");
        let d = &diagnostics.errors()[0];
        assert_eq!((d.rule, d.line, d.col), (rule::FILE_UNREADABLE, 1, 1));
        assert_eq!(loaded.files_read, vec![path.clone()]);
    }
}

#[test]
fn guest_payloads_without_a_guest_dir_say_how_to_build_them() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("systems/demo.toml");
    let loaded = load_system(&file, &bulkhead_board::LoadOptions::default());
    let diagnostics = loaded.result.unwrap_err();
    assert_eq!(diagnostics.len(), 2, "{diagnostics}");
    for d in diagnostics.errors() {
        assert_eq!(d.rule, rule::PAYLOAD_MISSING);
        assert!(d.hint.contains("cargo xtask build"), "{}", d.hint);
    }
    // An empty guest directory: the same rule and hint.
    let empty = common::scratch_dir("empty-guests");
    let loaded =
        load_system(&file, &bulkhead_board::LoadOptions { guest_dir: Some(empty), linux_dir: None, app_dir: None });
    let diagnostics = loaded.result.unwrap_err();
    assert_eq!(diagnostics.len(), 2, "{diagnostics}");
    assert!(
        diagnostics.errors().iter().all(|d| d.rule == rule::PAYLOAD_MISSING && d.hint.contains("cargo xtask build"))
    );
}

#[test]
fn valid_configs_pass() {
    let mut files = toml_files(&config_dir().join("valid"));
    let systems = Path::new(env!("CARGO_MANIFEST_DIR")).join("systems");
    files.extend(toml_files(&systems));
    assert!(files.len() >= 4);
    for file in files {
        let loaded = load_system(&file, &options());
        let expected_warnings: BTreeSet<Expect> = headers(&file, "# warn: ").into_iter().collect();
        let warnings: BTreeSet<Expect> = loaded
            .warnings
            .iter()
            .map(|d| Expect { file: canonical(&d.file), rule: d.rule.to_owned(), line: d.line, col: None })
            .collect();
        assert_eq!(
            warnings,
            expected_warnings,
            "{}: warnings differ:\n{}",
            file.display(),
            loaded.warnings.iter().map(|w| w.warning()).collect::<String>()
        );
        for w in &loaded.warnings {
            assert!(w.rule == rule::NOT_YET || w.rule == rule::DEPRECATED, "{}", w.warning());
            assert!(w.warning().starts_with(&format!(
                "{}:{}:{}: warning: [{}] ",
                w.file.display(),
                w.line,
                w.col,
                w.rule
            )));
        }
        let system = loaded.result.unwrap_or_else(|d| panic!("{} should pass:\n{d}", file.display()));
        let source = bulkhead_board::generate_tables(&system);
        assert!(source.contains("pub static SYSTEM: SystemConfig = SystemConfig {"));
        let summary = bulkhead_board::summary(&system);
        for p in &system.partitions {
            assert!(summary.contains(&p.name));
            assert!(source.contains(&"// partition".to_string()));
        }
        // Every payload and initrd is a boot module, and was read.
        for m in bulkhead_board::boot_modules(&system) {
            assert!(loaded.files_read.contains(&m.path), "{}", m.path.display());
            assert!(source.contains(&format!("{:?}", m.name)));
        }
    }
}

#[test]
fn a_bad_console_format_names_the_value_and_the_choices() {
    let file = config_dir().join("invalid/invalid-value-console-format.toml");
    let diagnostics = load_system(&file, &options()).result.unwrap_err();
    let [d] = diagnostics.errors() else { panic!("one problem expected:\n{diagnostics}") };
    assert!(d.message.contains("\"ascii\""), "{}", d.message);
    assert!(d.hint.contains("\"defmt\"") && d.hint.contains("\"text\""), "{}", d.hint);
}
