//! Every index the kernel derives from the compiled tables is in range.
//!
//! A property test generates valid configurations within the build-time bounds (random CPUs
//! with random core numbers and APIC IDs, partitions with random cores and memory regions up
//! to the top of the guest-physical space, connections, shared memory, devices, command
//! lines), writes them as board and system files, and builds them the way the kernel's
//! build script does (`load_system`, then `generate_tables`). Each must pass, and every index
//! the kernel takes from the result must be in range: core numbers below `MAX_CPUS` (the
//! per-core SynIC registers), partition ids below `MAX_PARTITIONS` and the partition count,
//! connection endpoints that exist, SINTs and event flags within the SynIC, queue depths
//! within the queues, device ids within the board, unique and addressable APIC IDs, guest
//! ranges the EPT/NPT builder can map, command lines that fit the kernel's buffer.
//!
//! A second property takes such a configuration and pushes exactly one thing just past its
//! bound: validation must refuse it with that bound's rule (and nothing unrelated).
//!
//! The seed is fixed so CI is reproducible; `PROPTEST_RNG_SEED` and `PROPTEST_CASES`
//! explore further.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use bulkhead_board::tables::{
    ConnectionKind, EVENT_FLAG_COUNT, GUEST_PHYS_LIMIT, HOST_PHYS_LIMIT, MAX_BOOT_MODULES, MAX_CMDLINE_BYTES,
    MAX_CONNECTIONS, MAX_CPUS, MAX_DEVICES, MAX_MEMORY_REGIONS_PER_PARTITION, MAX_PARTITIONS, MAX_QUEUE_DEPTH,
    MAX_SHARED_MEMORY, SINT_COUNT, SLAT_TABLES_PER_PARTITION, X2APIC_BROADCAST, XAPIC_MAX_APIC_ID,
};
use bulkhead_board::{System, boot_modules, generate_tables, load_system, rule};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};

const KIB4: u64 = 4096;
const MIB: u64 = 1 << 20;
/// Guest-physical slots for memory regions: slot `k` starts at `k * SLOT` (2 MiB apart, so
/// a region needs at most one page table of its own and every layout fits the kernel's
/// SLAT_TABLES_PER_PARTITION), except the last, placed to end exactly at
/// `GUEST_PHYS_LIMIT`. Shared memory is mapped from `SHARED_BASE` on, above every slot.
const SLOTS: u64 = 64;
const SLOT: u64 = 2 * MIB;
const SHARED_BASE: u64 = 1 << 30;
/// Largest shared region, in 4 KiB pages.
const MAX_SHARED_PAGES: u64 = 4;
/// Which kind of range may end exactly at 2^48 in one configuration (one at a time, so they
/// cannot overlap there): the last region slot, the first shared region, or the devices.
const TOP_REGION: u8 = 0;
const TOP_SHARED: u8 = 1;
const TOP_DEVICES: u8 = 2;
/// Largest generated region: 2 MiB.
const MAX_REGION_PAGES: u64 = 512;

fn config(cases: u32) -> Config {
    let mut config = Config { failure_persistence: Some(Box::new(FileFailurePersistence::Off)), ..Config::default() };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0xb0_u64 << 32 | 0x0d5);
    }
    config
}

#[derive(Debug, Clone)]
struct Cpu {
    core: u64,
    apic_id: u64,
}

#[derive(Debug, Clone)]
struct Region {
    guest_base: u64,
    pages: u64,
}

#[derive(Debug, Clone)]
struct Part {
    /// Indices into `Spec::cpus`.
    cpus: Vec<usize>,
    regions: Vec<Region>,
    cmdline: String,
}

#[derive(Debug, Clone)]
enum Kind {
    Message(u64),
    Event(u64),
}

#[derive(Debug, Clone)]
struct Conn {
    id: u64,
    from: usize,
    to: usize,
    sint: u64,
    kind: Kind,
}

#[derive(Debug, Clone)]
struct Shared {
    pages: u64,
    /// (partition, guest base)
    sharers: Vec<(usize, u64)>,
}

#[derive(Debug, Clone)]
struct Dev {
    mmio_base: u64,
    /// Index of the partition it is assigned to.
    owner: Option<usize>,
}

/// A configuration as the generator builds it, rendered to TOML by [`Spec::render`].
#[derive(Debug, Clone)]
struct Spec {
    x2apic: bool,
    cpus: Vec<Cpu>,
    /// Extra board RAM range `(base, size)`.
    extra_ram: Option<(u64, u64)>,
    devices: Vec<Dev>,
    partitions: Vec<Part>,
    connections: Vec<Conn>,
    shared: Vec<Shared>,
    verdict: Option<usize>,
}

impl Spec {
    fn render(&self) -> (String, String) {
        let mut b = String::new();
        let _ = writeln!(b, "name = \"generated\"\nconsole_port = 0x3f8\nx2apic = {}", self.x2apic);
        let extra =
            self.extra_ram.map_or(String::new(), |(base, size)| format!(", {{ base = {base:#x}, size = {size:#x} }}"));
        let _ = writeln!(b, "ram = [{{ base = 0x100000, size = \"1023 MiB\" }}{extra}]");
        for (i, c) in self.cpus.iter().enumerate() {
            let _ = writeln!(b, "[[cpu]]\ncore = {}\napic_id = {:#x}\nboot = {}", c.core, c.apic_id, i == 0);
        }
        for (i, d) in self.devices.iter().enumerate() {
            let _ = writeln!(
                b,
                "[[device]]\nname = \"dev{i}\"\nio_ports = [{{ base = {:#x}, count = 8 }}]\nmmio = [{{ base = {:#x}, size = 0x1000 }}]",
                0x100 + 0x10 * i,
                d.mmio_base
            );
        }
        let mut s = String::new();
        let _ = writeln!(s, "board = \"board.toml\"");
        if let Some(v) = self.verdict {
            let _ = writeln!(s, "[hypervisor]\nverdict_partition = \"p{v}\"");
        }
        for (pi, p) in self.partitions.iter().enumerate() {
            let cores: Vec<String> =
                p.cpus.iter().map(|&c| self.cpus.get(c).map_or(u64::MAX, |c| c.core).to_string()).collect();
            let devices: Vec<String> = self
                .devices
                .iter()
                .enumerate()
                .filter(|(_, d)| d.owner == Some(pi))
                .map(|(i, _)| format!("\"dev{i}\""))
                .collect();
            let _ = writeln!(
                s,
                "[[partition]]\nname = \"p{pi}\"\ncores = [{}]\ndevices = [{}]",
                cores.join(", "),
                devices.join(", ")
            );
            for r in &p.regions {
                let _ =
                    writeln!(s, "[[partition.memory]]\nguest_base = {:#x}\nsize = {:#x}", r.guest_base, r.pages * KIB4);
            }
            let _ =
                writeln!(s, "[partition.payload]\nkind = \"elf\"\npath = \"@guests/elf\"\ncmdline = {:?}", p.cmdline);
        }
        for c in &self.connections {
            let kind = match c.kind {
                Kind::Message(depth) => format!("kind = \"message\"\nqueue_depth = {depth}"),
                Kind::Event(flag) => format!("kind = \"event\"\nflag = {flag}"),
            };
            let _ = writeln!(
                s,
                "[[connection]]\nid = {}\nfrom = \"p{}\"\nto = \"p{}\"\nsint = {}\n{kind}",
                c.id, c.from, c.to, c.sint
            );
        }
        for (i, sh) in self.shared.iter().enumerate() {
            let sharers: Vec<String> = sh
                .sharers
                .iter()
                .map(|(p, base)| format!("{{ partition = \"p{p}\", guest_base = {base:#x} }}"))
                .collect();
            let _ = writeln!(
                s,
                "[[shared_memory]]\nname = \"s{i}\"\nsize = {:#x}\nsharers = [{}]",
                sh.pages * KIB4,
                sharers.join(", ")
            );
        }
        (b, s)
    }

    /// Writes the files and loads them as the kernel's build does.
    fn load(&self, name: &str) -> bulkhead_board::Loaded {
        let dir = scratch(name);
        let (board, system) = self.render();
        std::fs::write(dir.join("board.toml"), board).unwrap();
        let file = dir.join("system.toml");
        std::fs::write(&file, system).unwrap();
        load_system(&file, &common::options())
    }

    /// A core number no CPU has yet (below `MAX_CPUS`), and an APIC ID no CPU has.
    fn add_cpu(&mut self) -> usize {
        let core = (0..MAX_CPUS as u64).find(|n| self.cpus.iter().all(|c| c.core != *n)).expect("a free core");
        let apic_id = (0..=u64::from(XAPIC_MAX_APIC_ID)).find(|n| self.cpus.iter().all(|c| c.apic_id != *n)).unwrap();
        self.cpus.push(Cpu { core, apic_id });
        self.cpus.len() - 1
    }

    /// A new partition on a CPU of its own, with one 4 KiB region.
    fn add_partition(&mut self) -> usize {
        let assigned: usize = self.partitions.iter().map(|p| p.cpus.len()).sum();
        if assigned + 1 > MAX_CPUS {
            // Leave every partition its first core only.
            for p in &mut self.partitions {
                p.cpus.truncate(1);
            }
        }
        let used: BTreeSet<usize> = self.partitions.iter().flat_map(|p| p.cpus.iter().copied()).collect();
        let cpu = match (0..self.cpus.len()).find(|c| !used.contains(c)) {
            Some(c) => c,
            None => self.add_cpu(),
        };
        self.partitions.push(Part {
            cpus: vec![cpu],
            regions: vec![Region { guest_base: 0, pages: 1 }],
            cmdline: String::new(),
        });
        self.partitions.len() - 1
    }

    /// A message connection from partition 0 to partition 1 (made if needed).
    fn add_connection(&mut self) -> usize {
        while self.partitions.len() < 2 {
            self.add_partition();
        }
        let id = (0..).find(|n| self.connections.iter().all(|c| c.id != *n)).unwrap();
        self.connections.push(Conn { id, from: 0, to: 1, sint: 0, kind: Kind::Message(1) });
        self.connections.len() - 1
    }
}

fn scratch(name: &str) -> PathBuf {
    use std::sync::OnceLock;
    static DIRS: OnceLock<std::sync::Mutex<BTreeSet<String>>> = OnceLock::new();
    let made = DIRS.get_or_init(Default::default);
    let mut made = made.lock().unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bulkhead-board-bounds-{name}"));
    if made.insert(name.to_owned()) {
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
    }
    path
}

/// `ids` made unique (a repeat moves up to the next free value), with 0 first when
/// `ends & 1` and `max` last when `ends & 2`: both ends of the range are taken often.
fn distinct(mut ids: Vec<u64>, max: u64, ends: u8) -> Vec<u64> {
    let n = ids.len();
    if ends & 1 != 0 {
        ids[0] = 0;
    }
    if ends & 2 != 0 && n > 1 {
        ids[n - 1] = max;
    }
    let mut seen = BTreeSet::new();
    for id in &mut ids {
        while !seen.insert(*id) {
            *id = if *id == max { 0 } else { *id + 1 };
        }
    }
    ids
}

fn shared_base(i: usize) -> u64 {
    SHARED_BASE + i as u64 * MAX_SHARED_PAGES * KIB4
}

fn region(slot: u64, pages: u64) -> Region {
    let size = pages * KIB4;
    let guest_base = if slot == SLOTS - 1 { GUEST_PHYS_LIMIT - size } else { slot * SLOT };
    Region { guest_base, pages }
}

fn spec() -> impl Strategy<Value = Spec> {
    let cpus = (1..=MAX_CPUS, any::<bool>()).prop_flat_map(|(n, x2apic)| {
        let max_apic = if x2apic { u64::from(X2APIC_BROADCAST) - 1 } else { u64::from(XAPIC_MAX_APIC_ID) };
        (
            Just(x2apic),
            proptest::sample::subsequence((0..MAX_CPUS as u64).collect::<Vec<_>>(), n).prop_shuffle(),
            (prop::collection::vec(0..=max_apic, n), any::<u8>())
                .prop_map(move |(ids, ends)| distinct(ids, max_apic, ends)),
        )
    });
    cpus.prop_flat_map(|(x2apic, cores, apics)| {
        let cpus: Vec<Cpu> = cores.iter().zip(&apics).map(|(&core, &apic_id)| Cpu { core, apic_id }).collect();
        let n_cpus = cpus.len();
        let n_parts = 1..=n_cpus.min(MAX_PARTITIONS);
        (Just(x2apic), Just(cpus), n_parts, any::<u64>(), 0..3u8)
    })
    .prop_flat_map(|(x2apic, cpus, n_parts, salt, top)| {
        let n_cpus = cpus.len();
        // Each partition gets a first core of its own; the rest are spread or left idle.
        let owners = prop::collection::vec(prop::option::of(0..n_parts), n_cpus - n_parts);
        let regions = prop::collection::vec(
            prop::collection::btree_set(
                (0..SLOTS).prop_filter("kept for others", move |s| *s != SLOTS - 1 || top == TOP_REGION),
                1..=MAX_MEMORY_REGIONS_PER_PARTITION,
            )
            .prop_flat_map(|slots| {
                let n = slots.len();
                (Just(slots), prop::collection::vec(1..=MAX_REGION_PAGES, n))
            })
            .prop_map(|(slots, pages)| slots.into_iter().zip(pages).map(|(s, p)| region(s, p)).collect::<Vec<_>>()),
            n_parts,
        );
        let cmdline = prop_oneof![Just(0usize), 0..64usize, (MAX_CMDLINE_BYTES - 8)..=MAX_CMDLINE_BYTES]
            .prop_map(|len| "k=v ".repeat(len / 4 + 1).chars().take(len).collect::<String>());
        let cmdlines = prop::collection::vec(cmdline, n_parts);
        let connection = (
            0..n_parts,
            0..n_parts,
            0..u64::from(SINT_COUNT),
            any::<bool>(),
            1..=u64::from(MAX_QUEUE_DEPTH),
            0..u64::from(EVENT_FLAG_COUNT),
        );
        let connections = prop::collection::vec(connection, if n_parts > 1 { 0..=MAX_CONNECTIONS } else { 0..=0 });
        let shared = prop::collection::vec(
            (1..=MAX_SHARED_PAGES, proptest::sample::subsequence((0..n_parts).collect::<Vec<_>>(), 1..=n_parts)),
            0..=MAX_SHARED_MEMORY,
        );
        let devices = prop::collection::vec(prop::option::of(0..n_parts), 0..=4);
        let verdict = prop::option::of(0..n_parts);
        (Just((x2apic, cpus, n_parts, salt, top)), owners, regions, cmdlines, connections, shared, devices, verdict)
    })
    .prop_map(
        |((x2apic, cpus, n_parts, salt, top), owners, regions, cmdlines, connections, shared, devices, verdict)| {
            let mut partitions: Vec<Part> = (0..n_parts)
                .zip(regions)
                .zip(cmdlines)
                .map(|((i, regions), cmdline)| Part { cpus: vec![i], regions, cmdline })
                .collect();
            for (extra, owner) in owners.into_iter().enumerate() {
                if let Some(p) = owner {
                    partitions[p].cpus.push(n_parts + extra);
                }
            }
            // Unique ids anywhere in the 24-bit space.
            let base = salt % ((1 << 24) - MAX_CONNECTIONS as u64);
            let connections = connections
                .into_iter()
                .enumerate()
                .map(|(i, (from, to, sint, message, depth, flag))| Conn {
                    id: base + i as u64,
                    from,
                    to: if to == from { (from + 1) % n_parts } else { to },
                    sint,
                    kind: if message { Kind::Message(depth) } else { Kind::Event(flag) },
                })
                .collect();
            let shared = shared
                .into_iter()
                .enumerate()
                .map(|(i, (pages, sharers))| {
                    // Above every region; or the first ends at 2^48.
                    let base =
                        if top == TOP_SHARED && i == 0 { GUEST_PHYS_LIMIT - pages * KIB4 } else { shared_base(i) };
                    Shared { pages, sharers: sharers.into_iter().map(|p| (p, base)).collect() }
                })
                .collect();
            let devices = devices
                .into_iter()
                .enumerate()
                .map(|(i, owner)| Dev {
                    // Low, or the last pages below 2^48 (seen by the guest at that address).
                    mmio_base: if top == TOP_DEVICES {
                        GUEST_PHYS_LIMIT - (i as u64 + 1) * KIB4
                    } else {
                        0xfe00_0000 + i as u64 * KIB4
                    },
                    owner,
                })
                .collect();
            Spec { x2apic, cpus, extra_ram: None, devices, partitions, connections, shared, verdict }
        },
    )
}

/// Every value in the generated source that follows `prefix` (a decimal number).
fn numbers_after(source: &str, prefix: &str) -> Vec<u64> {
    source
        .match_indices(prefix)
        .filter_map(|(at, _)| {
            let rest = &source[at + prefix.len()..];
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
        .collect()
}

/// The indices the kernel derives from a compiled system, each checked against what it
/// indexes.
fn check_indices(system: &System, source: &str) {
    let board = &system.board;
    // Per-core state (`VPS[core]`, per-CPU arrays) and the MADT list: MAX_CPUS entries.
    assert!(board.cpus.len() <= MAX_CPUS);
    let mut apics = BTreeSet::new();
    let mut cores = BTreeSet::new();
    for cpu in &board.cpus {
        assert!((cpu.core as usize) < MAX_CPUS, "core {} indexes past MAX_CPUS", cpu.core);
        assert!(cores.insert(cpu.core), "core {} twice", cpu.core);
        assert!(apics.insert(cpu.apic_id), "APIC ID {} twice", cpu.apic_id);
        assert_ne!(cpu.apic_id, X2APIC_BROADCAST);
        if !board.x2apic {
            assert!(cpu.apic_id <= XAPIC_MAX_APIC_ID, "APIC ID {:#x} on an xAPIC", cpu.apic_id);
        }
    }
    assert_eq!(board.cpus.iter().filter(|c| c.boot).count(), 1);
    // Partitions: `PARTITIONS[id]` and friends, MAX_PARTITIONS long.
    assert!(system.partitions.len() <= MAX_PARTITIONS);
    let mut owned = BTreeSet::new();
    for p in &system.partitions {
        assert!(!p.cores.is_empty(), "`cores[0]` is the partition's first vCPU");
        for core in &p.cores {
            assert!((*core as usize) < MAX_CPUS);
            assert!(board.cpus.iter().any(|c| c.core == *core), "core {core} is not on the board");
            assert!(owned.insert(*core), "core {core} in two partitions");
        }
        assert!(!p.memory.is_empty() && p.memory.len() <= MAX_MEMORY_REGIONS_PER_PARTITION);
        for m in &p.memory {
            assert!(m.guest_base.checked_add(m.size).is_some_and(|end| end <= GUEST_PHYS_LIMIT));
            assert!(m.host_base.checked_add(m.size).is_some_and(|end| end <= HOST_PHYS_LIMIT));
        }
        for d in &p.devices {
            let device = board.devices.get(usize::from(d.0)).expect("device id within the board");
            for r in &device.mmio {
                assert!(r.base + r.size <= GUEST_PHYS_LIMIT);
            }
        }
        assert!(p.payload.cmdline.len() <= MAX_CMDLINE_BYTES);
    }
    assert!(board.devices.len() <= MAX_DEVICES);
    if let Some(v) = system.hypervisor.verdict_partition {
        assert!(usize::from(v.0) < system.partitions.len());
    }
    // Connections: `rings[index]`, `waiting[partition][sint]`, the receiver's `cores[0]`.
    assert!(system.connections.len() <= MAX_CONNECTIONS);
    let mut ids = BTreeSet::new();
    for c in &system.connections {
        assert!(usize::from(c.from.0) < system.partitions.len() && usize::from(c.to.0) < system.partitions.len());
        assert_ne!(c.from, c.to);
        assert!(c.sint < SINT_COUNT);
        assert!(c.id < 1 << 24 && ids.insert(c.id));
        match c.kind {
            ConnectionKind::Message { queue_depth } => assert!((1..=MAX_QUEUE_DEPTH).contains(&queue_depth)),
            ConnectionKind::Event { flag } => assert!(flag < EVENT_FLAG_COUNT),
        }
    }
    assert!(system.shared_memory.len() <= MAX_SHARED_MEMORY);
    for s in &system.shared_memory {
        for sh in &s.sharers {
            assert!(usize::from(sh.partition.0) < system.partitions.len());
            assert!(sh.guest_base + s.host.size <= GUEST_PHYS_LIMIT);
        }
    }
    assert!(boot_modules(system).len() <= MAX_BOOT_MODULES);

    // The same in the generated source the kernel compiles.
    for id in numbers_after(source, "PartitionId(") {
        assert!((id as usize) < system.partitions.len() && (id as usize) < MAX_PARTITIONS, "PartitionId({id})");
    }
    for id in numbers_after(source, "DeviceId(") {
        assert!((id as usize) < board.devices.len(), "DeviceId({id})");
    }
    let core_numbers = numbers_after(source, "core: ");
    assert_eq!(core_numbers.len(), 2 * board.cpus.len(), "a BoardCpu and a CoreAssignment per CPU");
    assert!(core_numbers.iter().all(|&c| (c as usize) < MAX_CPUS));
    for apic_id in numbers_after(source, "apic_id: ") {
        assert!(apic_id < u64::from(X2APIC_BROADCAST));
        assert!(board.x2apic || apic_id <= u64::from(XAPIC_MAX_APIC_ID));
    }
    for (at, _) in source.match_indices("cores: &[") {
        let list = &source[at + "cores: &[".len()..];
        let list = &list[..list.find(']').unwrap()];
        for core in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            assert!(core.parse::<usize>().unwrap() < MAX_CPUS, "cores: &[{list}]");
        }
    }
    let sints = numbers_after(source, "sint: ");
    assert_eq!(sints.len(), system.connections.len());
    assert!(sints.iter().all(|&s| s < u64::from(SINT_COUNT)));
}

proptest! {
    #![proptest_config(config(200))]

    #[test]
    fn valid_configurations_compile_to_tables_whose_indices_are_in_range(spec in spec()) {
        let loaded = spec.load("valid");
        let system = loaded.result.unwrap_or_else(|d| {
            let (board, system) = spec.render();
            panic!("a configuration within the bounds was refused:\n{d}\nboard:\n{board}\nsystem:\n{system}")
        });
        let source = generate_tables(&system);
        check_indices(&system, &source);
    }
}

/// One step just past one bound.
#[derive(Debug, Clone, Copy)]
enum Past {
    CoreNumber,
    XapicId,
    X2apicBroadcast,
    Cpus,
    Partitions,
    Regions,
    GuestRegionEnd,
    SharedGuestEnd,
    DeviceMmioEnd,
    BoardRangeEnd,
    Cmdline,
    Connections,
    Sint,
    QueueDepthZero,
    QueueDepth,
    Flag,
    SharedRegions,
    Devices,
    PageTables,
}

const ALL_PAST: [Past; 19] = [
    Past::CoreNumber,
    Past::XapicId,
    Past::X2apicBroadcast,
    Past::Cpus,
    Past::Partitions,
    Past::Regions,
    Past::GuestRegionEnd,
    Past::SharedGuestEnd,
    Past::DeviceMmioEnd,
    Past::BoardRangeEnd,
    Past::Cmdline,
    Past::Connections,
    Past::Sint,
    Past::QueueDepthZero,
    Past::QueueDepth,
    Past::Flag,
    Past::SharedRegions,
    Past::Devices,
    Past::PageTables,
];

impl Past {
    /// Applies the step; returns the rule that must refuse it, and any other rule the same
    /// step necessarily breaks.
    fn apply(self, spec: &mut Spec) -> (&'static str, &'static [&'static str]) {
        match self {
            Past::CoreNumber => {
                let last = spec.cpus.len() - 1;
                spec.cpus[last].core = MAX_CPUS as u64;
                (rule::CPU_CORE_RANGE, &[])
            }
            Past::XapicId | Past::X2apicBroadcast => {
                for (i, c) in spec.cpus.iter_mut().enumerate() {
                    c.apic_id = i as u64;
                }
                let last = spec.cpus.len() - 1;
                let x2apic = matches!(self, Past::X2apicBroadcast);
                spec.x2apic = x2apic;
                spec.cpus[last].apic_id =
                    if x2apic { u64::from(X2APIC_BROADCAST) } else { u64::from(XAPIC_MAX_APIC_ID) + 1 };
                (rule::CPU_APIC_ID_RANGE, &[])
            }
            Past::Cpus => {
                while spec.cpus.len() < MAX_CPUS {
                    spec.add_cpu();
                }
                // The 17th CPU needs a 17th core number: that one is out of range too.
                let apic_id = (0..).find(|n| spec.cpus.iter().all(|c| c.apic_id != *n)).unwrap();
                spec.cpus.push(Cpu { core: MAX_CPUS as u64, apic_id });
                (rule::LIMIT_EXCEEDED, &[rule::CPU_CORE_RANGE])
            }
            Past::Partitions => {
                while spec.partitions.len() <= MAX_PARTITIONS {
                    spec.add_partition();
                }
                (rule::LIMIT_EXCEEDED, &[])
            }
            Past::Regions => {
                spec.partitions[0].regions =
                    (0..=MAX_MEMORY_REGIONS_PER_PARTITION as u64).map(|slot| region(slot, 1)).collect();
                (rule::LIMIT_EXCEEDED, &[])
            }
            Past::GuestRegionEnd => {
                // Starts where every other range ends at the latest: overlaps nothing.
                let regions = &mut spec.partitions[0].regions;
                regions.truncate(MAX_MEMORY_REGIONS_PER_PARTITION - 1);
                regions.push(Region { guest_base: GUEST_PHYS_LIMIT, pages: 1 });
                (rule::ADDRESS_RANGE, &[])
            }
            Past::SharedGuestEnd => {
                spec.shared.truncate(MAX_SHARED_MEMORY - 1);
                spec.shared.push(Shared { pages: 1, sharers: vec![(0, GUEST_PHYS_LIMIT)] });
                (rule::ADDRESS_RANGE, &[])
            }
            Past::DeviceMmioEnd => {
                spec.devices.push(Dev { mmio_base: GUEST_PHYS_LIMIT, owner: Some(0) });
                (rule::ADDRESS_RANGE, &[])
            }
            Past::BoardRangeEnd => {
                spec.extra_ram = Some((HOST_PHYS_LIMIT - KIB4, 2 * KIB4));
                (rule::ADDRESS_RANGE, &[])
            }
            Past::Cmdline => {
                spec.partitions[0].cmdline = "x".repeat(MAX_CMDLINE_BYTES + 1);
                (rule::LIMIT_EXCEEDED, &[])
            }
            Past::Connections => {
                while spec.connections.len() <= MAX_CONNECTIONS {
                    spec.add_connection();
                }
                (rule::LIMIT_EXCEEDED, &[])
            }
            Past::Sint => {
                let c = spec.add_connection();
                spec.connections[c].sint = u64::from(SINT_COUNT);
                (rule::CONNECTION_SINT_RANGE, &[])
            }
            Past::QueueDepthZero | Past::QueueDepth => {
                let c = spec.add_connection();
                let depth = if matches!(self, Past::QueueDepth) { u64::from(MAX_QUEUE_DEPTH) + 1 } else { 0 };
                spec.connections[c].kind = Kind::Message(depth);
                (rule::CONNECTION_QUEUE_DEPTH, &[])
            }
            Past::Flag => {
                let c = spec.add_connection();
                spec.connections[c].kind = Kind::Event(u64::from(EVENT_FLAG_COUNT));
                (rule::CONNECTION_FLAG_RANGE, &[])
            }
            Past::SharedRegions => {
                while spec.shared.len() <= MAX_SHARED_MEMORY {
                    let base = shared_base(spec.shared.len());
                    spec.shared.push(Shared { pages: 1, sharers: vec![(0, base)] });
                }
                // Keep them all below 2^48 (the generator may have put one at the top).
                for (i, s) in spec.shared.iter_mut().enumerate() {
                    for sharer in &mut s.sharers {
                        sharer.1 = shared_base(i);
                    }
                }
                (rule::LIMIT_EXCEEDED, &[])
            }
            Past::PageTables => {
                // 30 page tables for 60 MiB of 4 KiB pages, the PD, the PDPT and the root:
                // one more than SLAT_TABLES_PER_PARTITION (see the exact bound below).
                spec.partitions[0].regions = vec![region(0, 30 * 512)];
                (rule::LIMIT_EXCEEDED, &[])
            }
            Past::Devices => {
                while spec.devices.len() <= MAX_DEVICES {
                    let i = spec.devices.len() as u64;
                    spec.devices.push(Dev { mmio_base: 0xfe00_0000 + i * KIB4, owner: None });
                }
                (rule::LIMIT_EXCEEDED, &[])
            }
        }
    }
}

proptest! {
    #![proptest_config(config(200))]

    #[test]
    fn configurations_just_past_a_bound_are_refused_with_its_rule(
        spec in spec(),
        past in proptest::sample::select(ALL_PAST.to_vec()),
    ) {
        let mut spec = spec;
        let (expected, also) = past.apply(&mut spec);
        let loaded = spec.load("past");
        let (board, system) = spec.render();
        let diagnostics = match loaded.result {
            Ok(_) => panic!("{past:?} passed validation\nboard:\n{board}\nsystem:\n{system}"),
            Err(d) => d,
        };
        let rules: BTreeSet<&str> = diagnostics.errors().iter().map(|d| d.rule).collect();
        prop_assert!(rules.contains(expected), "{past:?}: no {expected}:\n{diagnostics}");
        for r in &rules {
            prop_assert!(*r == expected || also.contains(r), "{past:?}: unrelated {r}:\n{diagnostics}\nsystem:\n{system}");
        }
    }
}

/// Every step is taken in the property above, on the fixed seed too.
#[test]
fn every_bound_is_stepped_past() {
    let spec = Spec {
        x2apic: false,
        cpus: vec![Cpu { core: 3, apic_id: 0 }],
        extra_ram: None,
        devices: Vec::new(),
        partitions: vec![Part { cpus: vec![0], regions: vec![region(0, 1)], cmdline: String::new() }],
        connections: Vec::new(),
        shared: Vec::new(),
        verdict: None,
    };
    assert!(spec.load("smallest").result.is_ok());
    // Exactly SLAT_TABLES_PER_PARTITION second-level tables: 29 page tables, PD, PDPT, root.
    assert_eq!(SLAT_TABLES_PER_PARTITION, 32);
    let mut full = spec.clone();
    full.partitions[0].regions = vec![region(0, 29 * 512)];
    if let Err(d) = full.load("smallest-full").result {
        panic!("exactly {SLAT_TABLES_PER_PARTITION} tables refused:\n{d}");
    }
    for past in ALL_PAST {
        let mut spec = spec.clone();
        let (expected, _) = past.apply(&mut spec);
        let Err(diagnostics) = spec.load("smallest-past").result else { panic!("{past:?} passed validation") };
        assert!(diagnostics.errors().iter().any(|d| d.rule == expected), "{past:?}:\n{diagnostics}");
    }
}
