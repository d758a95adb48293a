//! The counts the kernel sizes its statics by (`bulkhead_board::footprint`), and the
//! `hypervisor-memory` rule at its boundary.

mod common;

use std::path::{Path, PathBuf};

use bulkhead_board::footprint::BOOT_FIXED_TABLES;
use bulkhead_board::tables::{BACKEND_PAGES_PER_CPU, PAGE_BYTES, STACK_BYTES_PER_CPU};
use bulkhead_board::{Footprint, load_system, rule};
use common::{config_dir, options};

/// Writes `text` as a system file next to nothing else (its board named by absolute path).
fn system_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bulkhead-footprint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn board() -> String {
    config_dir().join("boards/test.toml").display().to_string()
}

/// One partition on core 0 with `memory` (TOML `[[partition.memory]]` tables) and
/// `extra` appended.
fn one_partition(reserved: &str, memory: &str, extra: &str) -> String {
    format!(
        "board = {:?}\n{reserved}\n[[partition]]\nname = \"a\"\ncores = [0]\n{memory}\n[partition.payload]\nkind = \"elf\"\npath = \"@guests/elf\"\n{extra}",
        board()
    )
}

fn footprint_of(path: &Path) -> Footprint {
    let system = load_system(path, &options()).result.unwrap_or_else(|d| panic!("{}:\n{d}", path.display()));
    Footprint::of(&system)
}

fn tables_for(name: &str, memory: &str) -> Vec<usize> {
    footprint_of(&system_file(name, &one_partition("", memory, ""))).slat_tables
}

#[test]
fn the_demo_system_counts() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("systems/demo.toml");
    let f = footprint_of(&demo);
    assert_eq!((f.cpus, f.partitions, f.connections, f.queue_depth), (2, 2, 2, 16));
    // 16 MiB in 2 MiB pages (PML4, PDPT, PD) and the shared 4 KiB page at 16 MiB (a PT).
    assert_eq!(f.slat_tables, vec![4, 4]);
    assert_eq!(f.slat_tables_total(), 8);
    assert_eq!(f.iommu_domains, 0);
    // The board's RAM ends below 4 GiB: PML4, PDPT, 8 PTs and the 4 low PDs.
    assert_eq!(f.boot_page_tables, BOOT_FIXED_TABLES + 4);
}

#[test]
fn second_level_tables_are_counted_exactly() {
    // 2 MiB in one large page: PML4, PDPT, PD.
    let large = "[[partition.memory]]\nguest_base = 0\nsize = \"2 MiB\"\nlarge_pages = true\n";
    assert_eq!(tables_for("large", large), vec![3]);
    // 4 MiB in 4 KiB pages: two PTs more.
    let small = "[[partition.memory]]\nguest_base = 0\nsize = \"4 MiB\"\n";
    assert_eq!(tables_for("small", small), vec![5]);
    // A second region in another GiB: its own PD and PT.
    let apart = format!("{small}[[partition.memory]]\nguest_base = 0x40000000\nsize = \"2 MiB\"\n");
    assert_eq!(tables_for("apart", &apart), vec![7]);
}

#[test]
fn the_budget_grows_by_each_cpu() {
    let one = footprint_of(&config_dir().join("valid/minimal.toml"));
    let mut two = one.clone();
    two.cpus += 1;
    let grown = two.budget().total() - one.budget().total();
    let state = two.budget().state - one.budget().state;
    assert_eq!(grown, STACK_BYTES_PER_CPU as u64 + BACKEND_PAGES_PER_CPU as u64 * PAGE_BYTES + state);
    assert!(state > 0);
}

#[test]
fn reserved_memory_holds_the_budget_exactly_or_is_refused() {
    let memory = "[[partition.memory]]\nguest_base = 0\nsize = \"2 MiB\"\n";
    let budget = footprint_of(&system_file("budget", &one_partition("", memory, ""))).budget().total();
    // From the kernel's link address (2 MiB) to the end of reserved_memory (from 1 MiB).
    let fits = (1 << 20) + budget.div_ceil(4096) * 4096;
    let reserved = |size: u64| format!("[hypervisor]\nreserved_memory = {{ base = 0x100000, size = {size:#x} }}\n");
    let ok = system_file("fits", &one_partition(&reserved(fits), memory, ""));
    if let Err(d) = load_system(&ok, &options()).result {
        panic!("a reserved_memory that holds the budget is refused:\n{d}");
    }
    let short = system_file("short", &one_partition(&reserved(fits - 4096), memory, ""));
    let d = load_system(&short, &options()).result.expect_err("4 KiB short must be refused");
    let rules: Vec<&str> = d.errors().iter().map(|e| e.rule).collect();
    assert_eq!(rules, vec![rule::HYPERVISOR_MEMORY], "{d}");
    let e = &d.errors()[0];
    assert_eq!((e.line, e.col), (3, 19), "{d}");
    assert!(e.message.contains("KiB"), "{}", e.message);
}
