//! `ring` on a message connection with a Xen end: the tables hold the first page of its
//! region, `cargo xtask check` shows it with the connection, and the refusals say why.

mod common;

use std::path::{Path, PathBuf};

use bulkhead_board::tables::{ConnectionKind, PhysRange};
use bulkhead_board::{Diagnostics, load_system, rule};
use common::{config_dir, options, scratch_dir};

fn errors(file: &Path) -> Diagnostics {
    load_system(file, &options()).result.expect_err("the configuration should fail")
}

/// Two Xen partitions and a Hyper-V one; `extra` is appended (connections, regions).
fn system(dir: &Path, extra: &str) -> PathBuf {
    let board = config_dir().join("boards/test.toml");
    let mut text = format!("board = {board:?}\n");
    for (core, (name, xen)) in [("hv", false), ("xa", true), ("xb", true)].into_iter().enumerate() {
        text.push_str(&format!(
            "[[partition]]\nname = \"{name}\"\ncores = [{core}]\n{}\n[[partition.memory]]\nguest_base = 0\nsize = \"2 MiB\"\n\n[partition.payload]\nkind = \"elf\"\npath = \"@guests/elf\"\n\n",
            if xen { "interface = \"xen\"\n" } else { "" }
        ));
    }
    text.push_str(extra);
    let file = dir.join("system.toml");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn the_ring_is_the_first_page_of_its_region_in_the_tables_and_the_summary() {
    let s = load_system(&config_dir().join("valid/full.toml"), &options()).result.unwrap_or_else(|d| panic!("{d}"));
    let mailbox = s.shared_memory.iter().find(|r| r.name == "mailbox").unwrap().host;
    let rings: Vec<Option<PhysRange>> = s.connections.iter().map(|c| c.ring).collect();
    // Only the message connection with a Xen end ("bare") has one; the event connection of
    // "bare" is an event channel and needs none.
    assert_eq!(rings, [None, None, None, Some(PhysRange { base: mailbox.base, size: 0x1000 })]);
    let summary = bulkhead_board::summary(&s);
    let line = summary.lines().find(|l| l.contains("to-bare")).unwrap();
    assert!(line.ends_with("queue depth 14, ring `mailbox` host 0x380_0000..0x380_1000"), "{line}\nin:\n{summary}");

    // A larger region, between two Xen partitions, that the Hyper-V partition maps too:
    // the ring is its first 4 KiB.
    let dir = scratch_dir("xen-ring-large");
    let file = system(
        &dir,
        "[[connection]]\nid = 7\nfrom = \"xa\"\nto = \"xb\"\nkind = \"message\"\nsint = 1\nqueue_depth = 1\nring = \"big\"\n\n\
         [[shared_memory]]\nname = \"big\"\nsize = \"16 KiB\"\nsharers = [\n\
         { partition = \"xa\", guest_base = 0x400000 },\n\
         { partition = \"xb\", guest_base = 0x800000, access = \"rwx\" },\n\
         { partition = \"hv\", guest_base = 0x400000, access = \"r\" },\n]\n",
    );
    let s = load_system(&file, &options()).result.unwrap_or_else(|d| panic!("{d}"));
    let big = s.shared_memory[0].host;
    assert_eq!(big.size, 0x4000);
    let [c] = s.connections.as_slice() else { panic!("one connection") };
    assert_eq!(c.kind, ConnectionKind::Message { queue_depth: 1 });
    assert_eq!(c.ring, Some(PhysRange { base: big.base, size: 0x1000 }));
    let source = bulkhead_board::generate_tables(&s);
    let ring = source.lines().find(|l| l.contains("ring: Some(")).unwrap_or_else(|| panic!("{source}"));
    assert!(ring.ends_with(", size: 0x1000 }),"), "{ring}");
}

#[test]
fn refusals_name_the_xen_end_and_the_reason() {
    let d = errors(&config_dir().join("invalid/xen-ring.toml"));
    let messages: Vec<&str> = d.errors().iter().map(|e| e.message.as_str()).collect();
    let [missing, unknown, read_only, unmapped, twice] = messages.as_slice() else { panic!("five problems:\n{d}") };
    assert!(missing.contains("no `ring`") && missing.contains("`x` speaks Xen"), "{missing}");
    assert!(unknown.contains("`nowhere`") && unknown.contains("no shared memory region"), "{unknown}");
    assert!(read_only.contains("`x` maps the region \"r\", not \"rw\""), "{read_only}");
    assert!(unmapped.contains("`y` does not map the region"), "{unmapped}");
    assert!(twice.contains("already the ring of connection 5"), "{twice}");
    let unknown_hint = &d.errors()[1].hint;
    assert!(unknown_hint.contains("read-only, x-only, both"), "{unknown_hint}");

    let d = errors(&config_dir().join("invalid/connection-queue-depth-xen.toml"));
    let [e] = d.errors() else { panic!("one problem:\n{d}") };
    assert_eq!(e.rule, rule::CONNECTION_QUEUE_DEPTH);
    assert!(e.message.contains("15 slots") && e.message.contains("`x` speaks Xen"), "{}", e.message);
    assert!(e.hint.contains("between 1 and 14"), "{}", e.hint);
}

#[test]
fn a_ring_needs_a_xen_end_and_a_message_connection() {
    let d = errors(&config_dir().join("invalid/invalid-value-ring.toml"));
    let [event, hyperv] = d.errors() else { panic!("two problems:\n{d}") };
    assert!(event.message.contains("only applies to message connections"), "{}", event.message);
    assert!(hyperv.message.contains("`a` and `b`, speak Hyper-V"), "{}", hyperv.message);
}
