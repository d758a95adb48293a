//! The copies of the demo system cannot drift from `board/systems/demo.toml`:
//! docs/config.md's worked example shows the file as it is and the summary `cargo xtask
//! check board/systems/demo.toml` prints for it (after changing the file, paste both into
//! the section), and `demo-bochs.toml` is the same system on the Bochs board.

mod common;

use std::path::Path;

const DOC: &str = include_str!("../../docs/config.md");
const DEMO: &str = include_str!("../systems/demo.toml");
const DEMO_BOCHS: &str = include_str!("../systems/demo-bochs.toml");
const SECTION: &str = "## Worked example: two partitions";

/// The worked example: from its heading to the next second-level heading.
fn worked_example() -> &'static str {
    let start = DOC.find(SECTION).unwrap_or_else(|| panic!("docs/config.md has no `{SECTION}`"));
    let rest = &DOC[start + SECTION.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The fenced blocks of `text` as (info string, body); the body ends with its last newline.
fn fenced_blocks(text: &str) -> Vec<(&str, &str)> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let Some(eol) = after.find('\n') else { break };
        let info = &after[..eol];
        let body = &after[eol + 1..];
        let Some(close) = body.find("\n```") else { panic!("unclosed ``` block in the worked example") };
        blocks.push((info, &body[..close + 1]));
        rest = &body[close + 4..];
    }
    blocks
}

#[test]
fn worked_example_shows_the_demo_file_as_it_is() {
    let toml: Vec<&str> =
        fenced_blocks(worked_example()).into_iter().filter(|(info, _)| *info == "toml").map(|(_, b)| b).collect();
    assert_eq!(toml.len(), 1, "the worked example should show one TOML block, the demo file");
    assert!(
        toml[0] == DEMO,
        "docs/config.md's worked example differs from board/systems/demo.toml; paste the file into it:\n{DEMO}"
    );
}

#[test]
fn worked_example_shows_what_check_prints() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("systems/demo.toml");
    let system = bulkhead_board::load_system(&file, &common::options()).result.unwrap_or_else(|d| panic!("{d}"));
    // `cargo xtask check` runs at the workspace root and names the file as given there.
    let printed =
        bulkhead_board::summary(&system).replacen(&file.display().to_string(), bulkhead_board::DEFAULT_SYSTEM, 1);
    let plain: Vec<&str> =
        fenced_blocks(worked_example()).into_iter().filter(|(info, _)| info.is_empty()).map(|(_, b)| b).collect();
    assert_eq!(plain.len(), 1, "the worked example should show one plain block, the summary");
    assert!(
        plain[0] == printed,
        "docs/config.md's worked example shows another summary than `cargo xtask check` prints; paste it:\n{printed}"
    );
}

#[test]
fn demo_bochs_differs_only_in_its_board() {
    // Before `[hypervisor]`: comments, `name` and `board`; from there on, the same text.
    let tail = |file: &'static str| &file[file.find("\n[hypervisor]\n").expect("a [hypervisor] table")..];
    assert!(tail(DEMO_BOCHS) == tail(DEMO), "demo-bochs.toml is no longer demo.toml on another board");
    assert!(DEMO.contains("\nboard = \"qemu-q35\"\n") && DEMO_BOCHS.contains("\nboard = \"bochs-pc\"\n"));
}
