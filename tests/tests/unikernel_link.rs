//! The unikernel link check: every `sys_*` function (and C memory function) that std for
//! `x86_64-unknown-hermit` may call is one the Bulkhead runtime exports, and the runtime
//! exports nothing else. A new nightly whose std calls a function the runtime lacks fails
//! here, by name, instead of as an undefined symbol when some app first uses it.
//!
//! It builds the apps (their std, with the pinned nightly) and the runtime object exactly
//! as an app's build script links it.

use std::collections::BTreeSet;
use std::path::Path;

use bulkhead_tests::apps;
use object::read::archive::ArchiveFile;
use object::{Object, ObjectSymbol};

/// The symbols of an ELF object: (defined global names, undefined names).
fn symbols(data: &[u8], defined: &mut BTreeSet<String>, undefined: &mut BTreeSet<String>) {
    let Ok(file) = object::File::parse(data) else { return };
    for symbol in file.symbols() {
        let Ok(name) = symbol.name() else { continue };
        if symbol.is_undefined() {
            undefined.insert(name.to_owned());
        } else if symbol.is_global() {
            defined.insert(name.to_owned());
        }
    }
}

/// Every member of the archive (an rlib) at `path`.
fn archive_symbols(path: &Path, defined: &mut BTreeSet<String>, undefined: &mut BTreeSet<String>) {
    let data = std::fs::read(path).unwrap();
    let archive = ArchiveFile::parse(&*data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for member in archive.members() {
        let member = member.unwrap();
        symbols(member.data(&*data).unwrap(), defined, undefined);
    }
}

/// What std calls of the system interface: `sys_*`, and the C functions the runtime
/// provides instead of a libc.
fn is_system_call(name: &str) -> bool {
    name.starts_with("sys_") || ["memcpy", "memmove", "memset", "memcmp", "bcmp", "strlen"].contains(&name)
}

/// Bulkhead's own calls the runtime exports: for the messaging crate (apps/messaging), and
/// the TSC at `_start` for the benchmarks (apps/bench).
const BULKHEAD_CALLS: &[&str] = &[
    "bulkhead_connection",
    "bulkhead_message_post",
    "bulkhead_message_receive",
    "bulkhead_event_signal",
    "bulkhead_event_wait",
    "bulkhead_start_tsc",
];

#[test]
fn unikernel_link_std_calls_only_what_the_runtime_exports() {
    apps::build_apps(true).unwrap();
    // std and every library it is built from, as the apps' build left them.
    let deps = bulkhead_tests::kernel::target_dir().join("apps").join(apps::APPS_TARGET).join("release/deps");
    let (mut std_defined, mut std_needs) = (BTreeSet::new(), BTreeSet::new());
    let mut libraries = 0;
    for entry in std::fs::read_dir(&deps).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".rlib") {
            archive_symbols(&entry.path(), &mut std_defined, &mut std_needs);
            libraries += 1;
        }
    }
    assert!(
        std_defined.iter().any(|s| s == "runtime_entry"),
        "std's rlib not found among {libraries} in {}",
        deps.display()
    );
    let std_needs: BTreeSet<String> =
        std_needs.into_iter().filter(|s| is_system_call(s) && !std_defined.contains(s)).collect();
    assert!(std_needs.len() >= 40, "std calls only {} system functions? {std_needs:?}", std_needs.len());

    // The runtime object, made as `bulkhead_runtime_build::link` makes it.
    let root = bulkhead_runtime_build::workspace_root();
    let library = bulkhead_runtime_build::build_runtime(&root).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let object = dir.path().join("bulkhead-runtime.o");
    let host = std::env::var("HOST").unwrap_or_else(|_| "x86_64-unknown-linux-gnu".into());
    bulkhead_runtime_build::export_only(&root, &host, &library, &object).unwrap();
    let (mut exported, mut runtime_needs) = (BTreeSet::new(), BTreeSet::new());
    symbols(&std::fs::read(&object).unwrap(), &mut exported, &mut runtime_needs);

    let missing: Vec<&String> = std_needs.iter().filter(|s| !exported.contains(*s)).collect();
    assert!(missing.is_empty(), "std for the Hermit target calls functions the runtime does not export: {missing:?}");
    // Nothing but the interface is global: the runtime's own core, intrinsics and panic
    // handler stay local, so they cannot clash with the app's.
    let extra: Vec<&String> = exported
        .iter()
        .filter(|s| !is_system_call(s) && *s != "_start" && !BULKHEAD_CALLS.contains(&s.as_str()))
        .collect();
    assert!(extra.is_empty(), "the runtime object exports more than the interface: {extra:?}");
    // Bulkhead's own calls, which apps/messaging and apps/bench declare, survive the
    // localisation.
    let lost: Vec<&&str> = BULKHEAD_CALLS.iter().filter(|s| !exported.contains(**s)).collect();
    assert!(lost.is_empty(), "the runtime object does not export Bulkhead's calls {lost:?}");
    // What the runtime needs from the link is std's entry and the ELF header the linker
    // defines (`__ehdr_start`, where the runtime finds the program headers), nothing else.
    let needs: Vec<&String> = runtime_needs.iter().filter(|s| !s.is_empty()).collect();
    assert_eq!(needs, ["__ehdr_start", "runtime_entry"], "the runtime object needs more than std's entry");
}
