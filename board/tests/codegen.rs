//! Generated tables: byte-for-byte golden files, and proof that they compile against
//! `bulkhead_board::tables` (the golden files are `include!`d below exactly as the kernel
//! includes its generated file) and hold what the configuration says.
//!
//! After an intended change to the output, regenerate with
//! `BLESS=1 cargo test -p bulkhead-board --test codegen` and review the diff.

mod common;

use std::path::{Path, PathBuf};

use bulkhead_board::{System, generate_tables, load_system};

mod demo {
    use bulkhead_board::tables::*;
    include!("golden/demo.rs");
}

mod full {
    use bulkhead_board::tables::*;
    include!("golden/full.rs");
}

fn manifest(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn load(path: &str) -> System {
    load_system(&manifest(path), &common::options()).result.unwrap_or_else(|d| panic!("{path}:\n{d}"))
}

fn check_golden(system: &str, golden: &str) {
    let source = generate_tables(&load(system));
    let golden = manifest(golden);
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&golden, &source).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_default();
    assert!(source == expected, "{} is stale; rerun with BLESS=1 and review. Generated:\n{source}", golden.display());
}

#[test]
fn demo_tables_match_golden() {
    check_golden("systems/demo.toml", "tests/golden/demo.rs");
}

#[test]
fn full_tables_match_golden() {
    check_golden("tests/config/valid/full.toml", "tests/golden/full.rs");
}

#[test]
fn generation_is_deterministic() {
    let a = generate_tables(&load("tests/config/valid/full.toml"));
    let b = generate_tables(&load("tests/config/valid/full.toml"));
    assert_eq!(a, b);
}

#[test]
fn compiled_demo_holds_the_configuration() {
    use bulkhead_board::tables::*;
    let s = &demo::SYSTEM;
    assert_eq!(s.name, "demo");
    assert_eq!(s.board.name, "qemu-q35");
    assert_eq!(s.board.console_port, 0x3f8);
    assert_eq!(s.hypervisor.reserved, PhysRange { base: 0x10_0000, size: 0xf0_0000 });
    assert_eq!(s.hypervisor.console_format, ConsoleFormat::Defmt, "defmt unless the file says otherwise");
    let [control, telemetry] = s.partitions else { panic!("two partitions") };
    assert_eq!((control.name, control.cores), ("control", &[1][..]));
    assert_eq!(telemetry.cores, &[0]);
    assert_eq!(control.fault_policy, FaultPolicy::Restart { max_restarts: 3 });
    assert_eq!(control.watchdog, None);
    assert_eq!(s.hypervisor.verdict_partition, Some(telemetry.id));
    assert_eq!(control.payload.module, "control");
    assert_eq!(control.payload.kind, PayloadKind::Elf);
    for p in s.partitions {
        let [m] = p.memory else { panic!("one region") };
        assert_eq!((m.guest_base, m.size, m.large_pages), (0, 16 << 20, true));
        assert_eq!(m.host_base % (2 << 20), 0);
        assert!(!m.host_base_range().overlaps(&s.hypervisor.reserved));
    }
    assert!(!control.memory[0].host_base_range().overlaps(&telemetry.memory[0].host_base_range()));
    assert_eq!(s.connections[0].kind, ConnectionKind::Message { queue_depth: 16 });
    assert_eq!((s.connections[0].from, s.connections[0].to), (PartitionId(0), PartitionId(1)));
    assert_eq!(s.connections[1].kind, ConnectionKind::Event { flag: 0 });
    assert_eq!(s.connections[1].sint, 3);
    let status = &s.shared_memory[0];
    assert_eq!(status.host.size, 0x1000);
    // Telemetry writes the acknowledgements, control only reads them.
    assert!(!status.sharers[0].access.write && status.sharers[1].access.write);
    // core_map is ordered like the board's CPUs.
    assert_eq!(s.core_map[0].partition, Some(PartitionId(1)));
    assert_eq!(s.core_map[1].partition, Some(PartitionId(0)));
    // What the kernel's statics are sized by: two CPUs, two partitions, two connections,
    // 16 message slots each, 16 MiB in 2 MiB pages plus the shared page (4 tables each).
    assert_eq!((demo::CPUS, demo::PARTITIONS, demo::CONNECTIONS, demo::QUEUE_DEPTH), (2, 2, 2, 16));
    assert_eq!(demo::DEVICES, s.board.devices.len());
    assert_eq!((demo::SLAT_TABLES, demo::SLAT_TABLE_FIRST, demo::SLAT_TABLES_TOTAL), ([4, 4], [0, 4], 8));
    assert_eq!((demo::BOOT_PAGE_TABLES, demo::IOMMU_DOMAINS), (14, 0));
    const { assert!(demo::MEMORY_BUDGET < 2 << 20) };
}

#[test]
fn compiled_full_holds_devices_and_owners() {
    use bulkhead_board::tables::*;
    let s = &full::SYSTEM;
    assert_eq!(s.board.console_port, 0x2f8);
    assert_eq!(s.hypervisor.log_level, LogLevel::Debug);
    assert_eq!(s.hypervisor.console_format, ConsoleFormat::Text);
    assert_eq!(s.hypervisor.console_input, Some(PartitionId(2)), "bare");
    let nic = s.board.devices.iter().find(|d| d.name == "nic").unwrap();
    assert_eq!(nic.owner, Some(PartitionId(0)));
    assert_eq!(nic.pci.map(|p| p.device), Some(2));
    assert_eq!(nic.interrupts, &[Interrupt::Msi { messages: 1 }]);
    assert_eq!(nic.bars.len(), 2);
    let uart2 = s.board.devices.iter().find(|d| d.name == "uart2").unwrap();
    assert_eq!(uart2.owner, None);
    let linux = &s.partitions[1];
    assert_eq!(linux.payload.kind, PayloadKind::BzImage);
    assert_eq!(linux.payload.initrd_module, Some("linux.initrd"));
    assert_eq!(linux.payload.cmdline, "console=ttyS0 quiet");
    assert_eq!(linux.fault_policy, FaultPolicy::ResetBoard);
    assert_eq!(s.partitions[2].payload.entry, Some(0x10_0000));
    assert_eq!(s.partitions[0].memory[0].host_base, 0x800_0000);
    assert_eq!(s.shared_memory[0].host.base, 0x880_0000);
    assert_eq!(s.shared_memory[0].sharers.len(), 3);
    assert_eq!(s.board.iommus.len(), 1);
    // Five board CPUs, the deepest queue 64, one partition owning a PCI function (a DMA
    // domain); each partition's tables in turn from one pool.
    assert_eq!((full::CPUS, full::PARTITIONS, full::DEVICES, full::QUEUE_DEPTH), (5, 3, 6, 64));
    assert_eq!(full::CONNECTIONS, s.connections.len());
    assert_eq!(full::IOMMU_DOMAINS, 1);
    let mut first = 0;
    for (p, n) in full::SLAT_TABLES.iter().enumerate() {
        assert_eq!(full::SLAT_TABLE_FIRST[p], first);
        first += n;
    }
    assert_eq!(full::SLAT_TABLES_TOTAL, first);
    const { assert!(full::BOOT_PAGE_TABLES >= 14 && full::MEMORY_BUDGET > demo::MEMORY_BUDGET) };
    // Every device a partition lists points back at it.
    for p in s.partitions {
        for d in p.devices {
            assert_eq!(s.board.devices[usize::from(d.0)].owner, Some(p.id));
        }
    }
}

#[test]
fn boot_modules_name_what_the_tables_name() {
    let system = load("tests/config/valid/full.toml");
    let modules = bulkhead_board::boot_modules(&system);
    let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["rt-control", "linux", "linux.initrd", "bare"]);
    assert!(modules.iter().all(|m| m.path.is_file()));
}

trait HostRange {
    fn host_base_range(&self) -> bulkhead_board::tables::PhysRange;
}

impl HostRange for bulkhead_board::tables::MemoryRegion {
    fn host_base_range(&self) -> bulkhead_board::tables::PhysRange {
        bulkhead_board::tables::PhysRange { base: self.host_base, size: self.size }
    }
}
