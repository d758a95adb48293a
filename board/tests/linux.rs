//! Linux payloads at build time: every problem of a bzImage's setup header is reported on
//! its own, and the layout checks name what does not fit, with the kernel's own numbers.

mod common;

use std::path::{Path, PathBuf};

use bulkhead_board::{Diagnostics, load_system, rule};
use common::{FakeLinux, config_dir, options, scratch_dir};

fn errors(file: &Path) -> Diagnostics {
    load_system(file, &options()).result.expect_err("the configuration should fail")
}

/// A system file with one Linux partition of `size` at guest 0, writing `image` next to it.
fn linux_system(dir: &Path, image: &FakeLinux, size: &str, extra: &str) -> PathBuf {
    std::fs::write(dir.join("vmlinuz"), image.image()).unwrap();
    let board = config_dir().join("boards/test.toml");
    let text = format!(
        "board = {board:?}\n[[partition]]\nname = \"linux\"\ncores = [0]\n\n[[partition.memory]]\nguest_base = 0\nsize = \"{size}\"\nlarge_pages = true\n\n[partition.payload]\nkind = \"linux\"\npath = \"vmlinuz\"\n{extra}"
    );
    let file = dir.join("system.toml");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn every_header_problem_is_its_own_error_at_path() {
    let d = errors(&config_dir().join("invalid/linux-image.toml"));
    assert!(d.errors().iter().all(|e| e.rule == rule::LINUX_IMAGE && (e.line, e.col) == (18, 8)), "{d}");
    let text = d.to_string();
    for part in [
        "boot flag 0xaa55",
        "boot protocol 2.06",
        "XLF_KERNEL_64",
        "LOADED_HIGH",
        "setup_sects = 64",
        "its header announces",
        "kernel_alignment 0x300000",
        "init_size 0x0",
        "pref_address 0x10000",
    ] {
        assert!(text.contains(part), "no `{part}` in:\n{text}");
    }
    assert_eq!(d.len(), 9, "{d}");
}

#[test]
fn layout_problems_carry_the_numbers() {
    let d = errors(&config_dir().join("invalid/linux-initrd.toml"));
    let [e] = d.errors() else { panic!("one problem:\n{d}") };
    assert!(e.message.contains(&format!("{} bytes", 64 << 20)), "{}", e.message);
    let d = errors(&config_dir().join("invalid/linux-cmdline.toml"));
    let [e] = d.errors() else { panic!("one problem:\n{d}") };
    assert!(e.message.contains("2048") && e.message.contains("2047"), "{}", e.message);
    let d = errors(&config_dir().join("invalid/linux-memory.toml"));
    let [low, small] = d.errors() else { panic!("two problems:\n{d}") };
    assert!(low.message.contains("`low`") && low.message.contains("0xa0000"), "{}", low.message);
    assert!(small.message.contains("`small`") && small.message.contains("4 MiB (init_size)"), "{}", small.message);
}

/// A kernel with the numbers of Debian 6.1's (pref_address 16 MiB, init_size 0x3f98000,
/// 2 MiB alignment) fits 128 MiB from guest 0, but not 64 MiB; its initrd fits beside it
/// up to what is left above the kernel.
#[test]
fn a_distribution_sized_kernel_needs_its_init_size_above_16_mib() {
    let dir = scratch_dir("linux-sizes");
    let debian = FakeLinux { pref_address: 0x100_0000, init_size: 0x3f9_8000, ..FakeLinux::GOOD };
    let ok = linux_system(&dir, &debian, "128 MiB", "");
    load_system(&ok, &options()).result.unwrap_or_else(|d| panic!("{d}"));
    let small = linux_system(&dir, &debian, "64 MiB", "");
    let d = errors(&small);
    let [e] = d.errors() else { panic!("one problem:\n{d}") };
    assert_eq!((e.rule, e.line), (rule::LINUX_MEMORY, 13), "{d}");
    // 128 MiB - (16 MiB + init_size) = 48.4 MiB above the kernel, 15 MiB below it.
    let above = (128 << 20) - (0x100_0000 + 0x3f9_8000);
    std::fs::File::create(dir.join("initrd")).unwrap().set_len(above).unwrap();
    let fits = linux_system(&dir, &debian, "128 MiB", "initrd = \"initrd\"\n");
    load_system(&fits, &options()).result.unwrap_or_else(|d| panic!("{d}"));
    std::fs::File::create(dir.join("initrd")).unwrap().set_len(above + 0x1000).unwrap();
    let d = errors(&fits);
    let [e] = d.errors() else { panic!("one problem:\n{d}") };
    assert_eq!((e.rule, e.line, e.col), (rule::LINUX_INITRD, 14, 10), "{d}");
    assert!(e.message.contains(&format!("has {above} bytes")), "{}", e.message);
}

#[test]
fn connection_names_reach_the_tables() {
    let system = load_system(&config_dir().join("valid/full.toml"), &options()).result.unwrap();
    let names: Vec<Option<&str>> = system.connections.iter().map(|c| c.name.as_deref()).collect();
    assert_eq!(names, [Some("telemetry"), Some("wake-0"), None, Some("to-bare")]);
    let source = bulkhead_board::generate_tables(&system);
    assert!(source.contains("name: Some(\"telemetry\"),") && source.contains("name: None,"));
    assert!(bulkhead_board::summary(&system).contains("wake-0"));
}
