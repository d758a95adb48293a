//! Loading: read the system file, find and read its board, run every check.
//!
//! This is the only place that touches the file system for configuration files. Files are
//! read only if they are regular and small, and bytes that are not UTF-8 are a reported
//! problem, not an error path that could be skipped; so no input can crash or hang the tool.

use std::path::{Path, PathBuf};

use toml::de::DeTable;

use crate::board::{BOARD_KEYS, read_board};
use crate::diag::{Diagnostic, Diagnostics, FileId, Loc, Sink, Sources, rule};
use crate::model::System;
use crate::system::{SYSTEM_KEYS, read_system};
use crate::validate::{BoardInput, Inputs, validate};
use crate::value::{Cx, Table};

/// How to resolve what the system file refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Where `@guests/NAME` payloads live (the guest build directory).
    pub guest_dir: Option<PathBuf>,
    /// Where `@linux/NAME` payloads live (the Linux asset folder the tools fill,
    /// `target/linux-assets/current`).
    pub linux_dir: Option<PathBuf>,
    /// Where `@apps/NAME` payloads live (`target/apps/x86_64-unknown-hermit/release`, the
    /// apps workspace's build directory).
    pub app_dir: Option<PathBuf>,
}

/// The outcome of [`load_system`].
#[derive(Debug)]
pub struct Loaded {
    /// Every file the load looked at, found or not (for `cargo:rerun-if-changed`).
    pub files_read: Vec<PathBuf>,
    pub result: Result<System, Diagnostics>,
    /// Settings this version accepts but cannot honour yet (rule `not-yet`), in file
    /// order; they never stop a build. `cargo xtask check` and the kernel build print them.
    pub warnings: Vec<Diagnostic>,
}

/// Largest configuration file accepted; real ones are a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Directory of the shipped board files.
pub fn boards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("boards")
}

/// Reads, checks and resolves a system file and its board.
pub fn load_system(system_file: &Path, options: &LoadOptions) -> Loaded {
    let mut sources = Sources::default();
    let mut sink = Sink::default();
    let mut files_read = vec![system_file.to_owned()];
    let system = load_inner(system_file, options, &mut sources, &mut sink, &mut files_read);
    let clean = sink.is_empty();
    let (diagnostics, warnings) = sink.finish(&sources);
    let result = match system {
        Some(system) if clean => Ok(system),
        _ if diagnostics.is_empty() => {
            // Unreachable by construction (no System without an error means an error was
            // reported); still, never hand out an empty failure.
            let mut sink = Sink::default();
            sink.error(Loc { file: 0, offset: 0 }, rule::INVALID_VALUE, "the configuration could not be resolved");
            Err(sink.finish(&sources).0)
        }
        _ => Err(diagnostics),
    };
    Loaded { files_read, result, warnings }
}

fn load_inner(
    system_file: &Path,
    options: &LoadOptions,
    sources: &mut Sources,
    sink: &mut Sink,
    files_read: &mut Vec<PathBuf>,
) -> Option<System> {
    let (file, text) = read_config(system_file, sources, sink, None)?;
    let (root, errors) = DeTable::parse_recoverable(&text);
    if !errors.is_empty() {
        report_syntax(sink, file, &text, &errors);
        return None;
    }
    let mut cx = Cx { file, sink };
    let table = Table::new(&mut cx, root.get_ref(), root.span(), "the system file", SYSTEM_KEYS);
    let raw = read_system(&mut cx, &table);

    let board = raw.board.as_ref().and_then(|name| {
        let path = board_path(&name.v, system_file)?;
        files_read.push(path.clone());
        Some((path, name.at))
    });
    let board = match (board, &raw.board) {
        (Some((path, at)), _) => load_board(&path, at, sources, sink),
        (None, Some(name)) => {
            sink.error_hint(name.at, rule::BOARD_NOT_FOUND, format!("{:?} is not a board name", name.v), board_hint());
            None
        }
        (None, None) => None,
    };

    let default_name =
        system_file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "system".into());
    let inputs = Inputs {
        system_file,
        guest_dir: options.guest_dir.as_deref(),
        linux_dir: options.linux_dir.as_deref(),
        app_dir: options.app_dir.as_deref(),
        default_name,
    };
    validate(sink, files_read, raw, board, &inputs)
}

/// `qemu-q35` → board/boards/qemu-q35.toml; `x.toml` → relative to the system file.
fn board_path(name: &str, system_file: &Path) -> Option<PathBuf> {
    if name.ends_with(".toml") {
        let dir = system_file.parent().unwrap_or(Path::new("."));
        return Some(dir.join(name));
    }
    let plain = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.');
    plain.then(|| boards_dir().join(format!("{name}.toml")))
}

fn board_hint() -> String {
    let mut names: Vec<String> = std::fs::read_dir(boards_dir())
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let path = e.path();
                    (path.extension()? == "toml").then(|| path.file_stem()?.to_str().map(str::to_owned)).flatten()
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    format!("shipped boards: {}; or give a path ending in `.toml`, relative to the system file", names.join(", "))
}

fn load_board(path: &Path, at: Loc, sources: &mut Sources, sink: &mut Sink) -> Option<BoardInput> {
    let before = sink.count();
    let (file, text) = read_config(path, sources, sink, Some(at))?;
    let (root, errors) = DeTable::parse_recoverable(&text);
    if !errors.is_empty() {
        report_syntax(sink, file, &text, &errors);
        return None;
    }
    let mut cx = Cx { file, sink };
    let table = Table::new(&mut cx, root.get_ref(), root.span(), "the board file", BOARD_KEYS);
    let raw = read_board(&mut cx, &table, path);
    let broken = sink.count() > before;
    Some(BoardInput { raw, broken })
}

fn report_syntax(sink: &mut Sink, file: FileId, text: &str, errors: &[toml::de::Error]) {
    // Found only when needed: it tokenizes the file a second time.
    let mut deep: Option<std::vec::IntoIter<DottedKey>> = None;
    for e in errors {
        let message = e.message().trim();
        match e.span() {
            Some(span) => sink.error(Loc { file, offset: span.start }, rule::TOML_SYNTAX, message.to_owned()),
            None if message == TOML_DEEP_KEY_MESSAGE => {
                let keys = deep.get_or_insert_with(|| deep_keys(text).into_iter());
                let key = keys.next().unwrap_or(DottedKey { offset: 0, parts: 0 });
                sink.error_hint(
                    Loc { file, offset: key.offset },
                    rule::TOML_SYNTAX,
                    format!("a dotted key of {} parts; the TOML reader takes at most {TOML_MAX_KEY_PARTS}", key.parts),
                    "no configuration key is nested that deep: write the key with fewer parts",
                );
            }
            None => sink.error(Loc { file, offset: 0 }, rule::TOML_SYNTAX, message.to_owned()),
        }
    }
}

/// `toml` refuses a dotted key (`a.b.c = 1`, `[a.b.c]`) of more parts than this (its
/// recursion limit), and reports it with [`TOML_DEEP_KEY_MESSAGE`] but without a span.
const TOML_MAX_KEY_PARTS: usize = 80;
const TOML_DEEP_KEY_MESSAGE: &str = "recursion limit";

/// A dotted key: where its first part starts, and how many parts it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DottedKey {
    offset: usize,
    parts: usize,
}

/// The dotted keys of `text` that `toml` refuses as too deep, in file order: the places of
/// its span-less "recursion limit" errors, which it reports in the same order. Should the
/// limit ever differ from [`TOML_MAX_KEY_PARTS`], the longest key is the best guess left.
fn deep_keys(text: &str) -> Vec<DottedKey> {
    use toml_parser::parser::{EventReceiver, RecursionGuard, parse_document};
    use toml_parser::{ErrorSink, Span};

    #[derive(Default)]
    struct Keys {
        current: Option<DottedKey>,
        after_dot: bool,
        all: Vec<DottedKey>,
    }
    impl Keys {
        fn end(&mut self) {
            self.all.extend(self.current.take());
            self.after_dot = false;
        }
    }
    impl EventReceiver for Keys {
        fn simple_key(&mut self, span: Span, _: Option<toml_parser::decoder::Encoding>, _: &mut dyn ErrorSink) {
            match &mut self.current {
                Some(key) if self.after_dot => key.parts += 1,
                _ => {
                    self.end();
                    self.current = Some(DottedKey { offset: span.start(), parts: 1 });
                }
            }
            self.after_dot = false;
        }
        fn key_sep(&mut self, _: Span, _: &mut dyn ErrorSink) {
            self.after_dot = true;
        }
        fn whitespace(&mut self, _: Span, _: &mut dyn ErrorSink) {}
        fn std_table_open(&mut self, _: Span, _: &mut dyn ErrorSink) {
            self.end();
        }
        fn std_table_close(&mut self, _: Span, _: &mut dyn ErrorSink) {
            self.end();
        }
        fn array_table_open(&mut self, _: Span, _: &mut dyn ErrorSink) {
            self.end();
        }
        fn array_table_close(&mut self, _: Span, _: &mut dyn ErrorSink) {
            self.end();
        }
        fn inline_table_open(&mut self, _: Span, _: &mut dyn ErrorSink) -> bool {
            self.end();
            true
        }
        fn inline_table_close(&mut self, _: Span, _: &mut dyn ErrorSink) {
            self.end();
        }
        fn array_open(&mut self, _: Span, _: &mut dyn ErrorSink) -> bool {
            self.end();
            true
        }
        fn array_close(&mut self, _: Span, _: &mut dyn ErrorSink) {
            self.end();
        }
        fn key_val_sep(&mut self, _: Span, _: &mut dyn ErrorSink) {
            self.end();
        }
        fn scalar(&mut self, _: Span, _: Option<toml_parser::decoder::Encoding>, _: &mut dyn ErrorSink) {
            self.end();
        }
        fn value_sep(&mut self, _: Span, _: &mut dyn ErrorSink) {
            self.end();
        }
        fn comment(&mut self, _: Span, _: &mut dyn ErrorSink) {
            self.end();
        }
        fn newline(&mut self, _: Span, _: &mut dyn ErrorSink) {
            self.end();
        }
        fn error(&mut self, _: Span, _: &mut dyn ErrorSink) {
            self.end();
        }
    }

    let source = toml_parser::Source::new(text);
    let tokens = source.lex().into_vec();
    let mut keys = Keys::default();
    {
        // The same nesting bound as `toml`, so deep arrays cannot exhaust the stack here.
        let mut guarded = RecursionGuard::new(&mut keys, TOML_MAX_KEY_PARTS as u32);
        parse_document(&tokens, &mut guarded, &mut ());
    }
    keys.end();
    let deep: Vec<DottedKey> = keys.all.iter().copied().filter(|k| k.parts > TOML_MAX_KEY_PARTS).collect();
    if deep.is_empty() {
        return keys.all.iter().copied().max_by_key(|k| k.parts).into_iter().collect();
    }
    deep
}

/// Reads a configuration file as UTF-8 text. `referenced_at` is where the file was named
/// (the `board` value), for problems with a file that cannot even be opened.
fn read_config(
    path: &Path,
    sources: &mut Sources,
    sink: &mut Sink,
    referenced_at: Option<Loc>,
) -> Option<(FileId, String)> {
    let meta = std::fs::metadata(path);
    let problem = match &meta {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some((
            if referenced_at.is_some() { rule::BOARD_NOT_FOUND } else { rule::FILE_UNREADABLE },
            "no such file".to_owned(),
        )),
        Err(e) => Some((rule::FILE_UNREADABLE, e.to_string())),
        Ok(m) if !m.is_file() => Some((rule::FILE_UNREADABLE, "not a regular file".to_owned())),
        Ok(m) if m.len() > MAX_CONFIG_BYTES => {
            Some((rule::FILE_UNREADABLE, format!("larger than {MAX_CONFIG_BYTES} bytes")))
        }
        Ok(_) => None,
    };
    let bytes = match problem {
        Some(p) => Err(p),
        None => std::fs::read(path).map_err(|e| (rule::FILE_UNREADABLE, e.to_string())),
    };
    let bytes = match bytes {
        Ok(bytes) => bytes,
        Err((rule, why)) => {
            let message = format!("cannot read {}: {why}", path.display());
            let (loc, hint) = match referenced_at {
                Some(loc) => (loc, board_hint()),
                None => {
                    let file = sources.add(path, String::new());
                    (Loc { file, offset: 0 }, "check the path of the system file".into())
                }
            };
            sink.error_hint(loc, rule, message, hint);
            return None;
        }
    };
    match String::from_utf8(bytes) {
        Ok(text) => {
            let file = sources.add(path, text.clone());
            Some((file, text))
        }
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(e.as_bytes().get(..valid).unwrap_or(&[])).into_owned();
            let file = sources.add(path, prefix);
            sink.error_hint(
                Loc { file, offset: valid },
                rule::TOML_SYNTAX,
                "the file is not valid UTF-8",
                "TOML files are UTF-8 text; remove or re-encode the bad bytes",
            );
            None
        }
    }
}
