//! Checks of the kernel's own sources (`kernel/src/`), on the host, whichever console
//! format the default system uses:
//!
//! - no kernel code emits defmt frames except through the facade (`log.rs`): a defmt
//!   frame on a text console would be garbage on the technician's terminal, and a text
//!   build that used defmt would not even link (it has no global logger);
//! - every log call's format string is one the text console can print exactly as the
//!   host decoder would (see `translate.rs`), with as many arguments as it names.
//!
//! The files are read as Rust tokens (comments and doc text are not tokens), and macro
//! calls are found at any depth, also inside other macros' arguments.

use std::path::{Path, PathBuf};

use proc_macro2::{Delimiter, TokenStream, TokenTree};
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, LitStr, Token};

use crate::translate::translate;

/// The facade's log macros (`info!`, or `crate::log::info!`).
const LOG_MACROS: &[&str] = &["trace", "debug", "info", "warn", "error"];

/// defmt macros a file other than the facade may name: `console.rs` defines defmt's
/// timestamp (in a defmt build only). None of them emits a frame.
fn allowed_defmt_macros(file: &str) -> &'static [&'static str] {
    match file {
        "console.rs" => &["timestamp"],
        _ => &[],
    }
}

/// A problem found, as `file: what`.
#[derive(Debug, Default)]
struct Report {
    problems: Vec<String>,
    /// Log calls whose format string was checked.
    calls: usize,
}

fn check_file(name: &str, source: &str, report: &mut Report) {
    let tokens: TokenStream = match source.parse() {
        Ok(tokens) => tokens,
        Err(e) => return report.problems.push(format!("{name}: not Rust tokens: {e}")),
    };
    // The facade itself names defmt's macros, and its macro bodies hold `$arg`s.
    if name == "log.rs" {
        return;
    }
    scan(name, &tokens.into_iter().collect::<Vec<_>>(), report);
}

fn scan(name: &str, trees: &[TokenTree], report: &mut Report) {
    for (i, tree) in trees.iter().enumerate() {
        match tree {
            TokenTree::Group(group) => scan(name, &group.stream().into_iter().collect::<Vec<_>>(), report),
            TokenTree::Ident(ident) if ident == "use" => check_use(name, &trees[i + 1..], report),
            TokenTree::Ident(ident) => {
                let is_call = matches!(trees.get(i + 1), Some(TokenTree::Punct(p)) if p.as_char() == '!')
                    && matches!(trees.get(i + 2), Some(TokenTree::Group(_)));
                if !is_call {
                    continue;
                }
                let Some(TokenTree::Group(args)) = trees.get(i + 2) else { continue };
                let path = path_before(trees, i);
                let macro_name = ident.to_string();
                if path.first().map(String::as_str) == Some("defmt") {
                    if !allowed_defmt_macros(name).contains(&macro_name.as_str()) {
                        report.problems.push(format!(
                            "{name}: `defmt::{macro_name}!` emits defmt frames directly; use the facade (`crate::log::{macro_name}!`)"
                        ));
                    }
                    continue;
                }
                let facade = path.is_empty() || path == ["crate", "log"] || path == ["log"];
                if facade && LOG_MACROS.contains(&macro_name.as_str()) {
                    check_call(name, &macro_name, args.stream(), false, report);
                } else if path == ["crate", "log"] && macro_name == "write" {
                    check_call(name, &macro_name, args.stream(), true, report);
                }
            }
            _ => {}
        }
    }
}

/// The `a::b::` before the identifier at `i`, as `["a", "b"]` (a leading `::` dropped).
fn path_before(trees: &[TokenTree], i: usize) -> Vec<String> {
    let mut path = Vec::new();
    let mut at = i;
    while at >= 3 {
        let colons = matches!((&trees[at - 1], &trees[at - 2]),
            (TokenTree::Punct(a), TokenTree::Punct(b)) if a.as_char() == ':' && b.as_char() == ':');
        match (&trees[at - 3], colons) {
            (TokenTree::Ident(segment), true) => {
                path.insert(0, segment.to_string());
                at -= 3;
            }
            _ => break,
        }
    }
    path
}

/// `use defmt::...;` importing one of defmt's macros (the import would let a bare
/// `info!` be defmt's instead of the facade's).
fn check_use(name: &str, rest: &[TokenTree], report: &mut Report) {
    let mut tokens = Vec::new();
    for tree in rest {
        if matches!(tree, TokenTree::Punct(p) if p.as_char() == ';') {
            break;
        }
        tokens.push(tree.clone());
    }
    let mut idents = Vec::new();
    collect_idents(&tokens, &mut idents);
    let from_defmt = idents.iter().any(|i| i == "defmt");
    let macro_like = |i: &String| i.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && i != "defmt";
    if from_defmt && idents.iter().any(macro_like) {
        report.problems.push(format!("{name}: `use` of defmt's macros ({}); use the facade's", idents.join(" ")));
    }
}

fn collect_idents(trees: &[TokenTree], out: &mut Vec<String>) {
    for tree in trees {
        match tree {
            TokenTree::Ident(i) => out.push(i.to_string()),
            TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => {
                collect_idents(&g.stream().into_iter().collect::<Vec<_>>(), out)
            }
            _ => {}
        }
    }
}

/// Parses `"format", args...` (after a formatter for `write!`) and translates the string.
fn check_call(name: &str, macro_name: &str, args: TokenStream, has_formatter: bool, report: &mut Report) {
    let parse = |input: ParseStream<'_>| {
        if has_formatter {
            input.parse::<Expr>()?;
            input.parse::<Token![,]>()?;
        }
        let format: LitStr = input.parse()?;
        let count = if input.is_empty() {
            0
        } else {
            input.parse::<Token![,]>()?;
            Punctuated::<Expr, Token![,]>::parse_terminated(input)?.len()
        };
        Ok((format, count))
    };
    let (format, count) = match parse.parse2(args) {
        Ok(parsed) => parsed,
        Err(e) => return report.problems.push(format!("{name}: `{macro_name}!` call not understood: {e}")),
    };
    report.calls += 1;
    match translate(&format.value()) {
        Ok(t) if t.args.len() == count => {}
        Ok(t) => report.problems.push(format!(
            "{name}: {:?} names {} arguments, the call gives {count}",
            format.value(),
            t.args.len()
        )),
        Err(e) => report.problems.push(format!("{name}: {:?}: {e}", format.value())),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn check(source: &str) -> Report {
    let mut report = Report::default();
    check_file("test.rs", source, &mut report);
    report
}

#[test]
fn the_kernel_logs_only_through_the_facade_with_strings_the_text_console_prints() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.iter().any(|f| f.ends_with("log.rs")), "the facade is in {}", src.display());
    let mut report = Report::default();
    for file in &files {
        let name = file.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        check_file(&name, &std::fs::read_to_string(file).unwrap(), &mut report);
    }
    assert!(report.problems.is_empty(), "\n{}", report.problems.join("\n"));
    // The scan sees the kernel's calls (well over a hundred), so it checks something.
    assert!(report.calls > 100, "only {} log calls found", report.calls);
}

#[test]
fn direct_defmt_logging_is_found_at_any_depth() {
    let r = check("fn f() { defmt::info!(\"x\"); }");
    assert!(r.problems[0].contains("`defmt::info!` emits defmt frames directly"), "{:?}", r.problems);
    let r = check("fn f() { if a { let g = || ::defmt::println!(\"x\"); } }");
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    let r = check("fn f() { matches!(x, Some(_) if { defmt::error!(\"e\"); true }); }");
    assert_eq!(r.problems.len(), 1, "inside another macro: {:?}", r.problems);
    let r = check("use defmt::{info, warn};");
    assert!(r.problems[0].contains("`use` of defmt's macros"), "{:?}", r.problems);
    let r = check("use defmt::info;");
    assert_eq!(r.problems.len(), 1);
    // defmt's types are fine; so is the timestamp in console.rs, and only there.
    assert!(check("fn f(e: defmt::Encoder) {} #[cfg(x)] use defmt::Format;").problems.is_empty());
    let mut r = Report::default();
    check_file("console.rs", "defmt::timestamp!(\"cpu{=u32}\", 0);", &mut r);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(check("defmt::timestamp!(\"cpu{=u32}\", 0);").problems.len(), 1);
}

#[test]
fn format_strings_and_argument_counts_are_checked() {
    let r = check("fn f() { info!(\"a {=u8} b {=u64:#x}\", 1, 2); crate::log::warn!(\"w\",); }");
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.calls, 2);
    let r = check("fn f() { error!(\"{=f32}\", 1.0); }");
    assert!(r.problems[0].contains("floating-point"), "{:?}", r.problems);
    let r = check("fn f() { crate::log::debug!(\"{=u8} {=u8}\", 1); }");
    assert!(r.problems[0].contains("names 2 arguments, the call gives 1"), "{:?}", r.problems);
    let r = check("fn f() { crate::log::write!(f, \"{=u8:us}\", 1) }");
    assert!(r.problems[0].contains("Seconds"), "{:?}", r.problems);
    // core's write! is not the facade's.
    assert!(check("fn f() { write!(f, \"{:?}\", x) }").problems.is_empty());
}
