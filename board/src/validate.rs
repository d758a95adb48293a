//! Cross-checks between the system file and the board, host memory placement, and the
//! resolution of everything into a [`System`].
//!
//! Each check reports with its own rule and carries on, so one run lists every problem.
//! A [`System`] is only built when no problem at all was reported (in either file), which is
//! what lets code generation assume a sound configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::board::{RangeExt, RawBoard, show_range, show_size};
use crate::codegen::access_text;
use crate::diag::{Loc, Sink, rule};
use crate::model::{Board, Connection, Device, IommuScope, Partition, Payload, SharedMemory, System, Watchdog};
use crate::payload;
use crate::system::{At, RWX, RawKind, RawSystem};
use crate::tables::{
    Access, ConnectionKind, DeviceId, DmaProtection, EVENT_FLAG_COUNT, GUEST_PHYS_LIMIT, GuestInterface,
    HypervisorConfig, Interrupt, MAX_CONNECTIONS, MAX_MEMORY_REGIONS_PER_PARTITION, MAX_PARTITIONS, MAX_QUEUE_DEPTH,
    MAX_SHARED_MEMORY, MemoryRegion, PartitionId, PayloadKind, PhysRange, SINT_COUNT, SLAT_TABLES_PER_PARTITION,
    Sharer,
};
use crate::value::MIB;
use bulkhead_abi::xen::ring as xen_ring;
use bulkhead_virt::bzimage::{RamRegion, Range};
use bulkhead_virt::slat::{ArrayPool, Attributes, Encoding, Ept, MapError, MemoryType, Npt, Slat};

/// Alignment of host blocks the tool places itself (large pages are then always possible).
pub const ALLOCATION_ALIGN: u64 = 2 * MIB;

/// The board as validation sees it: `None` when it could not be read at all.
pub(crate) struct BoardInput {
    pub raw: RawBoard,
    /// The board file had problems: skip checks against its RAM (they would only echo them).
    pub broken: bool,
}

pub(crate) struct Inputs<'a> {
    pub system_file: &'a Path,
    pub guest_dir: Option<&'a Path>,
    pub linux_dir: Option<&'a Path>,
    pub app_dir: Option<&'a Path>,
    pub default_name: String,
}

impl Inputs<'_> {
    fn dirs(&self) -> payload::PayloadDirs<'_> {
        payload::PayloadDirs { guest: self.guest_dir, linux: self.linux_dir, apps: self.app_dir }
    }
}

/// A host placement to check or to make.
struct Placement {
    what: String,
    size: u64,
    /// Given in the file, with the place of `host_base`.
    fixed: Option<At<u64>>,
    /// Where to report "does not fit".
    size_at: Loc,
    /// Resolved host base.
    host_base: Option<u64>,
}

pub(crate) fn validate(
    sink: &mut Sink,
    files_read: &mut Vec<PathBuf>,
    raw: RawSystem,
    board: Option<BoardInput>,
    inputs: &Inputs<'_>,
) -> Option<System> {
    let system_dir = inputs.system_file.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);

    // --- Partitions: names, limits, cores, guest memory, devices, payloads ---------------
    let names: Vec<Option<&str>> = raw.partitions.iter().map(|p| p.name.as_ref().map(|n| n.v.as_str())).collect();
    let all_named = names.iter().all(Option::is_some);
    let name_at: Vec<Loc> = raw.partitions.iter().map(|p| p.name.as_ref().map_or(p.at, |n| n.at)).collect();
    {
        let mut cx_names = Vec::new();
        let mut cx_at = Vec::new();
        for (n, at) in names.iter().zip(&name_at) {
            if let Some(n) = n {
                cx_names.push(*n);
                cx_at.push(*at);
            }
        }
        unique(sink, &cx_names, &cx_at, "partition");
    }
    let partition_id = |name: &str| -> Option<PartitionId> {
        names.iter().position(|n| *n == Some(name)).and_then(|i| u8::try_from(i).ok()).map(PartitionId)
    };
    if raw.partitions.len() > MAX_PARTITIONS {
        let at = raw.partitions.get(MAX_PARTITIONS).map_or(raw.partitions_at, |p| p.at);
        sink.error(
            at,
            rule::LIMIT_EXCEEDED,
            format!("{} partitions; the limit is MAX_PARTITIONS = {MAX_PARTITIONS}", raw.partitions.len()),
        );
    }

    let board_ref = board.as_ref().map(|b| &b.raw.board);
    let mut core_owner: BTreeMap<u32, &str> = BTreeMap::new();
    let mut device_owner: BTreeMap<String, &str> = BTreeMap::new();
    let mut gsi_owner: BTreeMap<u32, (&str, String)> = BTreeMap::new();
    let console_port = raw.console_port.or(board_ref.map(|b| b.console_port)).unwrap_or(0);

    for (pi, p) in raw.partitions.iter().enumerate() {
        let pname = names.get(pi).copied().flatten().unwrap_or("?");
        // Cores.
        if let Some(cores) = &p.cores {
            if cores.v.is_empty() {
                sink.error(cores.at, rule::PARTITION_NO_CORES, format!("partition `{pname}` has no cores"));
            }
            for core in &cores.v {
                if let Some(board) = board_ref
                    && !board.cpus.iter().any(|c| c.core == core.v)
                {
                    let known: Vec<String> = board.cpus.iter().map(|c| c.core.to_string()).collect();
                    sink.error_hint(
                        core.at,
                        rule::CPU_UNKNOWN,
                        format!("board `{}` has no core {}", board.name, core.v),
                        format!("the board's cores are: {}", known.join(", ")),
                    );
                    continue;
                }
                match core_owner.get(&core.v) {
                    Some(other) => sink.error(
                        core.at,
                        rule::CPU_DUPLICATE,
                        format!("core {} is already given to partition `{other}`", core.v),
                    ),
                    None => {
                        core_owner.insert(core.v, pname);
                    }
                }
            }
        }
        // Guest memory.
        if p.memory_entries == 0 {
            sink.error(p.at, rule::PARTITION_NO_MEMORY, format!("partition `{pname}` has no memory"));
        }
        if p.memory.len() > MAX_MEMORY_REGIONS_PER_PARTITION {
            let at = p.memory.get(MAX_MEMORY_REGIONS_PER_PARTITION).map_or(p.at, |r| r.guest.base_at);
            sink.error(
                at,
                rule::LIMIT_EXCEEDED,
                format!(
                    "partition `{pname}` has {} memory regions; the limit is MAX_MEMORY_REGIONS_PER_PARTITION = {MAX_MEMORY_REGIONS_PER_PARTITION}",
                    p.memory.len()
                ),
            );
        }
        for (i, r) in p.memory.iter().enumerate() {
            if r.guest.range.end_checked() > u128::from(GUEST_PHYS_LIMIT) {
                sink.error(
                    r.guest.base_at,
                    rule::ADDRESS_RANGE,
                    format!(
                        "guest range {} of partition `{pname}` ends above 2^48, the most its EPT/NPT tables map",
                        show_range(&r.guest.range)
                    ),
                );
            }
            if let Some(other) = p.memory.iter().take(i).find(|o| o.guest.range.overlaps_checked(&r.guest.range)) {
                sink.error(
                    r.guest.base_at,
                    rule::MEMORY_OVERLAP_GUEST,
                    format!(
                        "guest range {} of partition `{pname}` overlaps its region {}",
                        show_range(&r.guest.range),
                        show_range(&other.guest.range)
                    ),
                );
            }
        }
        // Devices.
        for dev in &p.devices {
            if let Some(board) = board_ref {
                let Some(device) = find_device(board, &dev.v).and_then(|i| board.devices.get(i)) else {
                    if parse_bdf(&dev.v).is_some() {
                        sink.error_hint(
                            dev.at,
                            rule::PCI_FUNCTION,
                            format!("board `{}` lists no PCI function at {}", board.name, dev.v),
                            "name a function the board lists in a [[device]] with a `pci` address",
                        );
                        continue;
                    }
                    let known: Vec<&str> = board.devices.iter().map(|d| d.name.as_str()).collect();
                    let hint = if known.is_empty() {
                        format!("board `{}` lists no devices", board.name)
                    } else {
                        format!("the board's devices are: {}", known.join(", "))
                    };
                    sink.error_hint(
                        dev.at,
                        rule::DEVICE_UNKNOWN,
                        format!("board `{}` has no device `{}`", board.name, dev.v),
                        hint,
                    );
                    continue;
                };
                check_device_interrupts(sink, board, p, dev, device);
                if let Some(pci) = device.pci {
                    let index = find_device(board, &dev.v).unwrap_or(usize::MAX);
                    let covered = board.iommus.iter().any(|i| match &i.scope {
                        IommuScope::All => true,
                        IommuScope::Devices(ids) => ids.iter().any(|id| usize::from(id.0) == index),
                    });
                    if !covered && p.dma != DmaProtection::Unprotected {
                        let why = if board.iommus.is_empty() {
                            format!("board `{}` has no IOMMU", board.name)
                        } else {
                            format!("no [[iommu]] of board `{}` lists it", board.name)
                        };
                        sink.error(
                            dev.at,
                            rule::IOMMU_SCOPE,
                            format!(
                                "device `{}` ({}) is a PCI function, which can master the bus, and {why}: its DMA would reach all memory",
                                device.name,
                                crate::board::show_bdf(&pci)
                            ),
                        );
                    }
                }
                let mmio = device.mmio.iter().chain(device.bars.iter().filter(|b| b.memory).map(|b| &b.range));
                if let Some(high) = mmio.into_iter().find(|r| r.end_checked() > u128::from(GUEST_PHYS_LIMIT)) {
                    sink.error(
                        dev.at,
                        rule::ADDRESS_RANGE,
                        format!(
                            "device `{}` has MMIO at {}, above 2^48: a partition sees device MMIO at its host address, and its EPT/NPT tables map guest-physical addresses below 2^48 only",
                            dev.v,
                            show_range(high)
                        ),
                    );
                }
                let index = find_device(board, &dev.v);
                if let Some(watchdog) = board.watchdog
                    && index == Some(usize::from(watchdog.device.0))
                {
                    sink.error_hint(
                        dev.at,
                        rule::BOARD_WATCHDOG,
                        format!(
                            "device `{}` is the watchdog of board `{}`: the board watchdog belongs to the hypervisor",
                            dev.v, board.name
                        ),
                        "the hypervisor arms and kicks the board watchdog itself (docs/supervision.md); remove the device from `devices`",
                    );
                }
                if board.reset_record.is_some()
                    && let Some(port) = CMOS_PORTS.iter().find(|&&port| device_has_port(device, port))
                {
                    sink.error_hint(
                        dev.at,
                        rule::RESET_RECORD,
                        format!(
                            "device `{}` holds port {port:#x} of the RTC, and board `{}` records the reason for a reset in the RTC's CMOS RAM",
                            dev.v, board.name
                        ),
                        "the hypervisor writes the reset record through ports 0x70/0x71, which a partition must not share: remove the device from `devices`, or drop `[reset_record]` from the board",
                    );
                }
                let console_inside = device.io_ports.iter().any(|r| {
                    u32::from(r.base) <= u32::from(console_port)
                        && u32::from(console_port) < u32::from(r.base) + u32::from(r.count)
                });
                if console_inside {
                    sink.error(
                        dev.at,
                        rule::CONSOLE_ASSIGNED,
                        format!("device `{}` holds the hypervisor's console UART (port {console_port:#x})", dev.v),
                    );
                }
            }
            let key = board_ref
                .and_then(|b| find_device(b, &dev.v).and_then(|i| b.devices.get(i)))
                .map_or_else(|| dev.v.clone(), |d| d.name.clone());
            let duplicate = device_owner.contains_key(key.as_str());
            match device_owner.get(key.as_str()) {
                Some(other) => sink.error(
                    dev.at,
                    rule::DEVICE_DUPLICATE,
                    format!("device `{}` is already assigned to partition `{other}`", dev.v),
                ),
                None => {
                    device_owner.insert(key, pname);
                }
            }
            let lines = board_ref
                .filter(|_| !duplicate)
                .and_then(|b| find_device(b, &dev.v).and_then(|i| b.devices.get(i)))
                .map(|d| d.interrupts.iter().filter_map(|i| if let Interrupt::Line(g) = i { Some(*g) } else { None }))
                .into_iter()
                .flatten();
            for gsi in lines {
                match gsi_owner.get(&gsi) {
                    Some((other, other_dev)) if *other != pname => sink.error_hint(
                        dev.at,
                        rule::GSI_SHARED,
                        format!(
                            "device `{}` interrupts on GSI {gsi}, which device `{other_dev}` of partition `{other}` also uses",
                            dev.v
                        ),
                        "a line interrupts one partition only: assign both devices to the same partition",
                    ),
                    Some(_) => {}
                    None => {
                        gsi_owner.insert(gsi, (pname, dev.v.clone()));
                    }
                }
            }
        }
        // The register page of each IOAPIC the partition has pins on is its virtual IOAPIC
        // (emulated, never mapped): its memory must leave the page free.
        if let Some(board) = board_ref {
            for (name, page) in ioapic_windows(board, p) {
                for r in p.memory.iter().filter(|r| r.guest.range.overlaps_checked(&page)) {
                    sink.error(
                        r.guest.base_at,
                        rule::MEMORY_OVERLAP_GUEST,
                        format!(
                            "guest range {} of partition `{pname}` covers the register page {} of IOAPIC `{name}`, where the partition, which owns GSIs there, sees its virtual IOAPIC",
                            show_range(&r.guest.range),
                            show_range(&page)
                        ),
                    );
                }
            }
        }
        // Payload files.
        if let Some(pl) = &p.payload {
            let mut image = None;
            if let Some(path) = &pl.path {
                let resolved = payload::resolve(sink, path.at, &path.v, &system_dir, inputs.dirs());
                if let Some(resolved) = resolved {
                    files_read.push(resolved.clone());
                    image = payload::check_file(sink, path.at, &path.v, &resolved, pl.kind);
                    if let (Some(PayloadKind::Flat), Some(facts)) = (pl.kind, &image) {
                        let regions: Vec<PhysRange> = p.memory.iter().map(|r| r.guest.range).collect();
                        payload::check_flat(sink, pl.at, pl.entry.as_ref(), facts.len, &regions);
                    }
                }
            }
            let mut initrd_len = None;
            let mut initrd_readable = true;
            if let Some(initrd) = &pl.initrd {
                let resolved = payload::resolve(sink, initrd.at, &initrd.v, &system_dir, inputs.dirs());
                initrd_len = resolved.and_then(|resolved| {
                    files_read.push(resolved.clone());
                    payload::check_file(sink, initrd.at, &initrd.v, &resolved, None).map(|f| f.len)
                });
                initrd_readable = initrd_len.is_some();
            }
            // A Linux kernel: its setup header, and whether it fits the partition. Only
            // with every memory region of the partition readable (else the layout would be
            // judged on part of the memory).
            if let (Some(PayloadKind::BzImage), Some(facts), Some(path)) = (pl.kind, &image, &pl.path)
                && initrd_readable
                && p.memory.len() == p.memory_entries
            {
                let regions: Vec<RamRegion> = p
                    .memory
                    .iter()
                    .map(|r| RamRegion {
                        range: Range { base: r.guest.range.base, size: r.guest.range.size },
                        usable: r.access == RWX,
                    })
                    .collect();
                payload::check_linux(
                    sink,
                    &payload::LinuxPayload {
                        partition: pname,
                        image: facts,
                        path_at: path.at,
                        kind_at: pl.kind_at.unwrap_or(pl.at),
                        regions: &regions,
                        initrd: initrd_len.zip(pl.initrd.as_ref().map(|i| i.at)),
                        cmdline: pl.cmdline_at.map(|at| (pl.cmdline.len() as u64, at)),
                    },
                );
            }
        }
    }

    // --- Supervision: who supervises whom, and the monitor's core -------------------------
    let supervises = check_supervises(sink, &raw, &names, all_named);
    let board_watchdog_at = board.as_ref().and_then(|b| b.raw.watchdog_at);
    let monitor_core = board_ref.and_then(|board| {
        let (at, what) = monitor_reason(&raw, &names, board_watchdog_at)?;
        let core = free_core(board.cpus.iter().map(|c| c.core), |core| core_owner.contains_key(&core));
        if core.is_none() {
            sink.error_hint(
                at,
                rule::SUPERVISION,
                format!(
                    "{what} needs the hypervisor's monitor, and every core of board `{}` belongs to a partition: the hypervisor checks watchdogs on a core no partition owns",
                    board.name
                ),
                "leave one core to the hypervisor (remove a core from a partition's `cores`), or drop the setting",
            );
        }
        core
    });

    // --- Connections ---------------------------------------------------------------------
    if raw.connections.len() > MAX_CONNECTIONS {
        let at = raw.connections.get(MAX_CONNECTIONS).map_or(raw.connections_at, |c| c.at);
        sink.error(
            at,
            rule::LIMIT_EXCEEDED,
            format!("{} connections; the limit is MAX_CONNECTIONS = {MAX_CONNECTIONS}", raw.connections.len()),
        );
    }
    // The partition whose verdict ends the run.
    let verdict_partition = raw.verdict_partition.as_ref().and_then(|name| {
        let id = partition_id(&name.v);
        if id.is_none() && all_named {
            sink.error_hint(
                name.at,
                rule::INVALID_VALUE,
                format!("verdict_partition `{}`: no such partition", name.v),
                partition_list_hint(&names),
            );
        }
        id
    });
    // The partition that gets the console's input, on the receive side of its virtual
    // UART at COM1. A partition given the real UART at 0x3F8 as a device has no virtual
    // one there: the input would reach nothing it reads.
    let console_input = raw.console_input.as_ref().and_then(|name| {
        let id = partition_id(&name.v);
        if id.is_none() && all_named {
            sink.error_hint(
                name.at,
                rule::INVALID_VALUE,
                format!("console_input `{}`: no such partition", name.v),
                partition_list_hint(&names),
            );
        }
        let p = raw.partitions.get(usize::from(id?.0))?;
        let board = board_ref?;
        let real_com1 = p.devices.iter().find(|dev| {
            board.devices.iter().find(|d| d.name == dev.v).is_some_and(|d| {
                d.io_ports.iter().any(|r| {
                    let (base, end) = (u32::from(r.base), u32::from(r.base) + u32::from(r.count));
                    base < u32::from(VIRTUAL_UART_PORT) + 8 && u32::from(VIRTUAL_UART_PORT) < end
                })
            })
        });
        if let Some(dev) = real_com1 {
            sink.error_hint(
                name.at,
                rule::INVALID_VALUE,
                format!(
                    "console_input `{}`: the partition drives device `{}` at the COM1 ports itself, so it has no virtual UART at {VIRTUAL_UART_PORT:#x} to receive the console's input",
                    name.v, dev.v
                ),
                "name a partition that uses its virtual console UART, or leave console_input out",
            );
            return None;
        }
        id
    });
    {
        let mut n = Vec::new();
        let mut at = Vec::new();
        for c in &raw.connections {
            if let Some(name) = &c.name {
                n.push(name.v.as_str());
                at.push(name.at);
            }
        }
        unique(sink, &n, &at, "connection");
    }
    let mut connections = Vec::new();
    // Per connection in `connections`: its index in the file (`raw.connections`).
    let mut connection_rows: Vec<usize> = Vec::new();
    // Per connection in the file: its ends, where they name partitions.
    let mut connection_ends: Vec<[Option<PartitionId>; 2]> = Vec::new();
    let mut ids: BTreeMap<u32, ()> = BTreeMap::new();
    for (ci, c) in raw.connections.iter().enumerate() {
        let mut lookup = |end: &Option<At<String>>, which: &str| -> Option<PartitionId> {
            let end = end.as_ref()?;
            let id = partition_id(&end.v);
            if id.is_none() && all_named {
                sink.error_hint(
                    end.at,
                    rule::CONNECTION_UNKNOWN_PARTITION,
                    format!("connection {which} `{}`: no such partition", end.v),
                    partition_list_hint(&names),
                );
            }
            id
        };
        let from = lookup(&c.from, "from");
        let to = lookup(&c.to, "to");
        connection_ends.push([from, to]);
        let xen_end = [from, to].into_iter().flatten().find(|&id| is_xen(&raw, id));
        if let (Some(f), Some(t), Some(to_at)) = (from, to, c.to.as_ref())
            && f == t
        {
            sink.error(to_at.at, rule::CONNECTION_SELF, format!("connection from `{}` to itself", to_at.v));
        }
        if let Some(id) = &c.id
            && ids.insert(id.v, ()).is_some()
        {
            sink.error(id.at, rule::CONNECTION_DUPLICATE_ID, format!("another connection already has id {}", id.v));
        }
        let sint = c.sint.as_ref().and_then(|s| {
            let v = u8::try_from(s.v).ok().filter(|&v| v < SINT_COUNT);
            if v.is_none() {
                sink.error(s.at, rule::CONNECTION_SINT_RANGE, format!("sint {} is not in 0..={}", s.v, SINT_COUNT - 1));
            }
            v
        });
        let kind = match c.kind {
            Some(RawKind::Message) => c.queue_depth.as_ref().and_then(|q| {
                let v = u32::try_from(q.v).ok().filter(|&v| (1..=MAX_QUEUE_DEPTH).contains(&v));
                if v.is_none() {
                    sink.error(
                        q.at,
                        rule::CONNECTION_QUEUE_DEPTH,
                        format!("queue_depth {} is not in 1..={MAX_QUEUE_DEPTH}", q.v),
                    );
                } else if let (Some(depth), Some(xen)) = (v, xen_end)
                    && depth > XEN_RING_MAX_QUEUE_DEPTH
                {
                    sink.error_hint(
                        q.at,
                        rule::CONNECTION_QUEUE_DEPTH,
                        format!(
                            "queue_depth {depth} is more than a connection with a Xen end can hold: `{}` speaks Xen and receives or sends through the connection's ring, which has {} slots, one for the message being received and {XEN_RING_MAX_QUEUE_DEPTH} waiting",
                            names.get(usize::from(xen.0)).copied().flatten().unwrap_or("?"),
                            xen_ring::SLOTS
                        ),
                        format!("use a queue_depth between 1 and {XEN_RING_MAX_QUEUE_DEPTH} for a connection with a Xen end"),
                    );
                }
                v.map(|queue_depth| ConnectionKind::Message { queue_depth })
            }),
            Some(RawKind::Event) => c.flag.as_ref().and_then(|f| {
                let v = u16::try_from(f.v).ok().filter(|&v| v < EVENT_FLAG_COUNT);
                if v.is_none() {
                    sink.error(
                        f.at,
                        rule::CONNECTION_FLAG_RANGE,
                        format!("flag {} is not in 0..={}", f.v, EVENT_FLAG_COUNT - 1),
                    );
                }
                v.map(|flag| ConnectionKind::Event { flag })
            }),
            None => None,
        };
        if let (Some(id), Some(from), Some(to), Some(sint), Some(kind)) = (&c.id, from, to, sint, kind) {
            connections.push(Connection {
                id: id.v,
                name: c.name.as_ref().map(|n| n.v.clone()),
                from,
                to,
                sint,
                kind,
                ring: None,
            });
            connection_rows.push(ci);
        }
    }

    // --- Shared memory: names, sharers, guest-side overlaps ------------------------------
    if raw.shared.len() > MAX_SHARED_MEMORY {
        let at = raw.shared.get(MAX_SHARED_MEMORY).map_or(raw.shared_at, |s| s.at);
        sink.error(
            at,
            rule::LIMIT_EXCEEDED,
            format!("{} shared memory regions; the limit is MAX_SHARED_MEMORY = {MAX_SHARED_MEMORY}", raw.shared.len()),
        );
    }
    {
        let mut n = Vec::new();
        let mut at = Vec::new();
        for s in &raw.shared {
            if let Some(name) = &s.name {
                n.push(name.v.as_str());
                at.push(name.at);
            }
        }
        unique(sink, &n, &at, "shared memory region");
    }
    // Guest ranges of shared memory already mapped, per partition.
    let mut mapped: Vec<(PartitionId, PhysRange, String)> = Vec::new();
    let mut shared_sharers: Vec<Vec<Sharer>> = Vec::new();
    for s in &raw.shared {
        let sname = s.name.as_ref().map_or("?", |n| n.v.as_str());
        let mut sharers: Vec<Sharer> = Vec::new();
        for sh in &s.sharers {
            let Some(pid) = partition_id(&sh.partition.v) else {
                if all_named {
                    sink.error_hint(
                        sh.partition.at,
                        rule::SHARED_MEMORY_UNKNOWN_SHARER,
                        format!("shared memory `{sname}`: no partition `{}`", sh.partition.v),
                        partition_list_hint(&names),
                    );
                }
                continue;
            };
            if sharers.iter().any(|o| o.partition == pid) {
                sink.error(
                    sh.partition.at,
                    rule::DUPLICATE_NAME,
                    format!("partition `{}` is listed twice as a sharer of `{sname}`", sh.partition.v),
                );
                continue;
            }
            sharers.push(Sharer { partition: pid, guest_base: sh.guest_base.v, access: sh.access });
            let Some(size) = &s.size else { continue };
            let guest = PhysRange { base: sh.guest_base.v, size: size.v };
            if guest.base.checked_add(guest.size).is_none() {
                sink.error(
                    sh.guest_base.at,
                    rule::ADDRESS_OVERFLOW,
                    format!(
                        "shared memory `{sname}` at guest {:#x} + {} runs past 2^64",
                        guest.base,
                        show_size(guest.size)
                    ),
                );
                continue;
            }
            if guest.end_checked() > u128::from(GUEST_PHYS_LIMIT) {
                sink.error(
                    sh.guest_base.at,
                    rule::ADDRESS_RANGE,
                    format!(
                        "shared memory `{sname}` at guest {} in partition `{}` ends above 2^48, the most its EPT/NPT tables map",
                        show_range(&guest),
                        sh.partition.v
                    ),
                );
            }
            let own = raw
                .partitions
                .get(usize::from(pid.0))
                .and_then(|p| p.memory.iter().find(|r| r.guest.range.overlaps_checked(&guest)));
            if let Some(own) = own {
                sink.error(
                    sh.guest_base.at,
                    rule::SHARED_MEMORY_OVERLAP,
                    format!(
                        "shared memory `{sname}` at guest {} overlaps memory {} of partition `{}`",
                        show_range(&guest),
                        show_range(&own.guest.range),
                        sh.partition.v
                    ),
                );
            }
            let ioapic = board_ref
                .zip(raw.partitions.get(usize::from(pid.0)))
                .and_then(|(b, p)| ioapic_windows(b, p).into_iter().find(|(_, page)| page.overlaps_checked(&guest)));
            if let Some((name, page)) = ioapic {
                sink.error(
                    sh.guest_base.at,
                    rule::MEMORY_OVERLAP_GUEST,
                    format!(
                        "shared memory `{sname}` at guest {} covers the register page {} of IOAPIC `{name}` in partition `{}`, which owns GSIs there and sees its virtual IOAPIC there",
                        show_range(&guest),
                        show_range(&page),
                        sh.partition.v
                    ),
                );
            }
            if let Some((_, other, oname)) = mapped.iter().find(|(p, r, _)| *p == pid && r.overlaps_checked(&guest)) {
                sink.error(
                    sh.guest_base.at,
                    rule::SHARED_MEMORY_OVERLAP,
                    format!(
                        "shared memory `{sname}` at guest {} overlaps shared memory `{oname}` {} in partition `{}`",
                        show_range(&guest),
                        show_range(other),
                        sh.partition.v
                    ),
                );
            }
            mapped.push((pid, guest, sname.to_owned()));
        }
        shared_sharers.push(sharers);
    }
    let rings = check_rings(sink, &raw, &names, &connection_ends, &shared_sharers);

    // --- Host memory: fixed placements, then first-fit allocation -------------------------
    let mut placements: Vec<Placement> = Vec::new();
    for (pi, p) in raw.partitions.iter().enumerate() {
        let pname = names.get(pi).copied().flatten().unwrap_or("?");
        for (ri, r) in p.memory.iter().enumerate() {
            placements.push(Placement {
                what: format!("memory region {ri} of partition `{pname}`"),
                size: r.guest.range.size,
                fixed: r.host_base.clone(),
                size_at: r.guest.size_at,
                host_base: None,
            });
        }
    }
    for s in &raw.shared {
        if let Some(size) = &s.size {
            let sname = s.name.as_ref().map_or("?", |n| n.v.as_str());
            placements.push(Placement {
                what: format!("shared memory `{sname}`"),
                size: size.v,
                fixed: s.host_base.clone(),
                size_at: size.at,
                host_base: None,
            });
        }
    }
    let hv = raw.reserved;
    let ram_checks = board.as_ref().is_some_and(|b| !b.broken);
    for i in 0..placements.len() {
        let Some(p) = placements.get(i) else { break };
        let Some(fixed) = &p.fixed else { continue };
        let host = PhysRange { base: fixed.v, size: p.size };
        if host.base.checked_add(host.size).is_none() {
            sink.error(
                fixed.at,
                rule::ADDRESS_OVERFLOW,
                format!("{} at host {:#x} + {} runs past 2^64", p.what, host.base, show_size(host.size)),
            );
            continue;
        }
        if host.overlaps_checked(&hv) {
            sink.error(
                fixed.at,
                rule::MEMORY_OVERLAP_HYPERVISOR,
                format!(
                    "{} at host {} overlaps the hypervisor's reserved memory {}",
                    p.what,
                    show_range(&host),
                    show_range(&hv)
                ),
            );
        }
        if let (true, Some(board)) = (ram_checks, board_ref) {
            if !inside_ram(&board.ram, &host) {
                let ram: Vec<String> = board.ram.iter().map(show_range).collect();
                sink.error_hint(
                    fixed.at,
                    rule::MEMORY_OUTSIDE_RAM,
                    format!("{} at host {} is not in board RAM", p.what, show_range(&host)),
                    format!("board `{}` RAM: {}", board.name, ram.join(", ")),
                );
            }
            if let Some(res) = board.reserved.iter().find(|r| r.overlaps_checked(&host)) {
                sink.error(
                    fixed.at,
                    rule::MEMORY_IN_RESERVED,
                    format!(
                        "{} at host {} overlaps the board's reserved range {}",
                        p.what,
                        show_range(&host),
                        show_range(res)
                    ),
                );
            }
        }
        let earlier = placements
            .iter()
            .take(i)
            .find(|o| o.fixed.as_ref().is_some_and(|f| PhysRange { base: f.v, size: o.size }.overlaps_checked(&host)));
        if let Some(o) = earlier {
            sink.error(
                fixed.at,
                rule::MEMORY_OVERLAP_PARTITIONS,
                format!("{} at host {} overlaps {}", p.what, show_range(&host), o.what),
            );
        }
        if let Some(p) = placements.get_mut(i) {
            p.host_base = Some(host.base);
        }
    }
    if let (true, Some(board)) = (ram_checks, board_ref) {
        allocate(sink, board, &hv, &mut placements);
    }

    // --- Second-level page tables: build every address space as the kernel will ----------
    if sink.is_empty()
        && let Some(board) = board_ref
    {
        let hosts: Vec<Option<u64>> = placements.iter().map(|p| p.host_base).collect();
        check_address_spaces(sink, &raw, board, &hosts, &names);
    }

    // --- Build the System, only if nothing at all was wrong ------------------------------
    if !sink.is_empty() {
        return None;
    }
    let board = board?.raw.board;
    let mut next = placements.iter().map(|p| p.host_base);
    let mut partitions = Vec::new();
    for (pi, p) in raw.partitions.into_iter().enumerate() {
        let pl = p.payload?;
        let path_text = pl.path?.v;
        let path = resolve_quiet(&path_text, &system_dir, inputs.dirs())?;
        let initrd = match pl.initrd {
            Some(i) => Some(resolve_quiet(&i.v, &system_dir, inputs.dirs())?),
            None => None,
        };
        let mut memory = Vec::new();
        for r in &p.memory {
            memory.push(MemoryRegion {
                guest_base: r.guest.range.base,
                host_base: next.next()??,
                size: r.guest.range.size,
                access: r.access,
                large_pages: r.large_pages,
            });
        }
        let devices = p
            .devices
            .iter()
            .map(|d| find_device(&board, &d.v).and_then(|i| u8::try_from(i).ok()).map(DeviceId))
            .collect::<Option<Vec<_>>>()?;
        partitions.push(Partition {
            name: p.name?.v,
            cores: p.cores?.v.into_iter().map(|c| c.v).collect(),
            memory,
            payload: Payload {
                kind: pl.kind?,
                path,
                source: path_text,
                entry: pl.entry.map(|e| e.v),
                cmdline: pl.cmdline,
                initrd,
            },
            devices,
            dma: p.dma,
            fault_policy: p.fault_policy,
            watchdog: p.watchdog_ms.map(|w| Watchdog { period_ms: w.v, grace_ms: p.watchdog_grace_ms }),
            critical: p.critical.is_some(),
            supervises: supervises.get(pi).cloned().unwrap_or_default(),
            interface: p.interface,
        });
    }
    let mut shared_memory = Vec::new();
    for (s, sharers) in raw.shared.into_iter().zip(shared_sharers) {
        shared_memory.push(SharedMemory {
            name: s.name?.v,
            host: PhysRange { base: next.next()??, size: s.size?.v },
            sharers,
        });
    }
    // A ring is the first page of its region (`bulkhead_abi::xen::ring::BYTES`).
    for (c, &ci) in connections.iter_mut().zip(&connection_rows) {
        c.ring = rings
            .get(ci)
            .copied()
            .flatten()
            .and_then(|si| shared_memory.get(si))
            .map(|s: &SharedMemory| PhysRange { base: s.host.base, size: XEN_RING_BYTES });
    }
    let reserved_at = raw.reserved_at;
    let system = System {
        name: raw.name.unwrap_or_else(|| inputs.default_name.clone()),
        file: inputs.system_file.to_owned(),
        hypervisor: HypervisorConfig {
            reserved: hv,
            log_level: raw.log_level,
            console_format: raw.console_format,
            verdict_partition,
            console_input,
            monitor_core,
        },
        console_port,
        board,
        partitions,
        connections,
        shared_memory,
    };
    check_budget(sink, &system, reserved_at);
    Some(system)
}

/// The hypervisor's image lies from its link address to the end of `reserved_memory`
/// (GRUB loads it there and the boot modules after it); its budget for this system
/// ([`crate::footprint`]) must fit.
fn check_budget(sink: &mut Sink, system: &System, reserved_at: Option<Loc>) {
    let footprint = crate::footprint::Footprint::of(system);
    let budget = footprint.budget();
    let reserved = system.hypervisor.reserved;
    let room = reserved.end().saturating_sub(crate::system::KERNEL_LINK_ADDRESS);
    if budget.total() > room {
        sink.error_hint(
            reserved_at.unwrap_or(Loc { file: 0, offset: 0 }),
            rule::HYPERVISOR_MEMORY,
            format!(
                "reserved_memory {} leaves {} KiB from the kernel's link address {:#x}, but the hypervisor needs about {} KiB for this system (text and data {} KiB, stacks {} KiB, tables {} KiB, state {} KiB)",
                show_range(&reserved),
                room / 1024,
                crate::system::KERNEL_LINK_ADDRESS,
                budget.total().div_ceil(1024),
                budget.image.div_ceil(1024),
                budget.stacks.div_ceil(1024),
                budget.tables.div_ceil(1024),
                budget.state.div_ceil(1024),
            ),
            "make reserved_memory larger (it also holds the boot modules GRUB places after the image), or use fewer CPUs, partitions, connections or shallower queues",
        );
    }
}

/// A Xen message ring's page: the first 4 KiB of its region (layout `bulkhead_abi::xen::ring`).
const XEN_RING_BYTES: u64 = xen_ring::BYTES as u64;
/// Deepest queue of a connection with a Xen end: its ring holds `queue_depth + 1` messages
/// (the one being received and those waiting) in [`xen_ring::SLOTS`] slots.
const XEN_RING_MAX_QUEUE_DEPTH: u32 = xen_ring::SLOTS - 1;

/// Whether partition `id` speaks Xen's interface.
fn is_xen(raw: &RawSystem, id: PartitionId) -> bool {
    raw.partitions.get(usize::from(id.0)).is_some_and(|p| p.interface == GuestInterface::Xen)
}

/// How problems name a connection: by its name when it has one, else by its id.
fn connection_label(c: &crate::system::RawConnection) -> String {
    match (&c.name, &c.id) {
        (Some(name), _) => format!("connection `{}`", name.v),
        (None, Some(id)) => format!("connection {}", id.v),
        (None, None) => "connection".to_owned(),
    }
}

/// `ring` of every message connection (docs/config.md, `[[connection]]`): a connection
/// with a Xen end carries its messages in a page both sides see (docs/xen.md), so it must
/// name a shared region (rule `xen-ring`) of at least one page, that every Xen end maps
/// readable and writable (a Xen end writes the counters, and the slots when it sends), and
/// that is no other connection's ring (two connections' counters would clash). A ring on a
/// connection without a Xen end is `invalid-value`: the hypervisor would never read it.
/// Returns, per connection of the file, the index of its ring's shared region.
fn check_rings(
    sink: &mut Sink,
    raw: &RawSystem,
    names: &[Option<&str>],
    ends: &[[Option<PartitionId>; 2]],
    shared_sharers: &[Vec<Sharer>],
) -> Vec<Option<usize>> {
    let mut rings: Vec<Option<usize>> = vec![None; raw.connections.len()];
    let region_names: Vec<&str> = raw.shared.iter().filter_map(|s| s.name.as_ref().map(|n| n.v.as_str())).collect();
    let all_regions_named = region_names.len() == raw.shared.len();
    let pname = |id: PartitionId| names.get(usize::from(id.0)).copied().flatten().unwrap_or("?");
    for (ci, (c, ends)) in raw.connections.iter().zip(ends).enumerate() {
        if c.kind != Some(RawKind::Message) {
            // An event connection's `ring` was refused where it was read.
            continue;
        }
        let xen_ends: Vec<PartitionId> = ends.iter().flatten().copied().filter(|&id| is_xen(raw, id)).collect();
        let label = connection_label(c);
        let Some(ring) = &c.ring else {
            if let Some(&xen) = xen_ends.first() {
                sink.error_hint(
                    c.at,
                    rule::XEN_RING,
                    format!("message {label} has no `ring`, but its end `{}` speaks Xen", pname(xen)),
                    "add `ring = \"REGION\"`: a [[shared_memory]] region of at least 4 KiB that every Xen end of the connection maps \"rw\"; its first page carries the messages (docs/xen.md)",
                );
            }
            continue;
        };
        if xen_ends.is_empty() {
            // Only when both ends are known to speak Hyper-V (an unknown end is reported).
            if let [Some(from), Some(to)] = *ends {
                sink.error_hint(
                    ring.at,
                    rule::INVALID_VALUE,
                    format!(
                        "`ring` only applies to a message connection with a Xen end, and both ends of {label}, `{}` and `{}`, speak Hyper-V",
                        pname(from),
                        pname(to)
                    ),
                    "remove `ring`: Hyper-V partitions receive messages in their SynIC message page",
                );
            }
            continue;
        }
        let Some(si) = raw.shared.iter().position(|s| s.name.as_ref().is_some_and(|n| n.v == ring.v)) else {
            if all_regions_named {
                let hint = if region_names.is_empty() {
                    "the system has no [[shared_memory]] regions: add one of at least 4 KiB that every Xen end maps \"rw\"".to_owned()
                } else {
                    format!("shared memory regions are: {}", region_names.join(", "))
                };
                sink.error_hint(
                    ring.at,
                    rule::XEN_RING,
                    format!("ring `{}` of {label}: no shared memory region of that name", ring.v),
                    hint,
                );
            }
            continue;
        };
        if let Some(other) = rings.iter().position(|r| *r == Some(si)).and_then(|o| raw.connections.get(o)) {
            sink.error_hint(
                ring.at,
                rule::XEN_RING,
                format!("shared memory `{}` is already the ring of {}", ring.v, connection_label(other)),
                "give each message connection with a Xen end a region of its own: the ring's counters belong to one connection",
            );
            continue;
        }
        let region = raw.shared.get(si);
        // Sizes are non-zero multiples of 4 KiB (or already refused), so this holds unless
        // the ring's page size changes.
        if let Some(size) = region.and_then(|s| s.size.as_ref())
            && size.v < XEN_RING_BYTES
        {
            sink.error_hint(
                ring.at,
                rule::XEN_RING,
                format!("ring `{}` of {label} has {} bytes; a ring takes {XEN_RING_BYTES}", ring.v, size.v),
                format!("make `{}` at least 4 KiB", ring.v),
            );
        }
        for &xen in &xen_ends {
            match shared_sharers.get(si).and_then(|sh| sh.iter().find(|s| s.partition == xen)) {
                None => sink.error_hint(
                    ring.at,
                    rule::XEN_RING,
                    format!(
                        "ring `{}` of {label}: its Xen end `{}` does not map the region",
                        ring.v,
                        pname(xen)
                    ),
                    format!(
                        "add `{{ partition = \"{}\", guest_base = ADDRESS, access = \"rw\" }}` to the sharers of `{}`",
                        pname(xen),
                        ring.v
                    ),
                ),
                Some(s) if !(s.access.read && s.access.write) => sink.error_hint(
                    ring.at,
                    rule::XEN_RING,
                    format!(
                        "ring `{}` of {label}: its Xen end `{}` maps the region {:?}, not \"rw\"",
                        ring.v,
                        pname(xen),
                        access_text(&s.access)
                    ),
                    format!(
                        "give `{}` access \"rw\" to `{}`: a Xen end writes the ring's counters, and its slots when it sends",
                        pname(xen),
                        ring.v
                    ),
                ),
                Some(_) => {}
            }
        }
        if let Some(r) = rings.get_mut(ci) {
            *r = Some(si);
        }
    }
    rings
}

/// The RTC's index and data ports, through which the hypervisor writes a CMOS reset record.
const CMOS_PORTS: [u16; 2] = [0x70, 0x71];

/// Whether `port` is one of the device's I/O ports (legacy ranges or I/O BARs).
fn device_has_port(device: &Device, port: u16) -> bool {
    let port = u64::from(port);
    device.io_ports.iter().any(|r| u64::from(r.base) <= port && port < u64::from(r.base) + u64::from(r.count))
        || device.bars.iter().filter(|b| !b.memory).any(|b| b.range.base <= port && port - b.range.base < b.range.size)
}

/// `supervises` of every partition, resolved to partition ids in the order written: each
/// name must be another partition, once; only one partition may supervise.
fn check_supervises(
    sink: &mut Sink,
    raw: &RawSystem,
    names: &[Option<&str>],
    all_named: bool,
) -> Vec<Vec<PartitionId>> {
    let mut supervisor: Option<&str> = None;
    let mut resolved = Vec::new();
    for (pi, p) in raw.partitions.iter().enumerate() {
        let pname = names.get(pi).copied().flatten().unwrap_or("?");
        let mut ids: Vec<PartitionId> = Vec::new();
        if !p.supervises.is_empty()
            && let Some(at) = p.supervises_at
        {
            match supervisor {
                Some(first) => sink.error_hint(
                    at,
                    rule::SUPERVISION,
                    format!("partitions `{first}` and `{pname}` both supervise: a system has at most one supervisor"),
                    format!(
                        "let `{first}` supervise every partition that needs it, and remove `supervises` from `{pname}`"
                    ),
                ),
                None => supervisor = Some(pname),
            }
        }
        for entry in &p.supervises {
            let Some(id) = names.iter().position(|n| *n == Some(entry.v.as_str())) else {
                if all_named {
                    sink.error_hint(
                        entry.at,
                        rule::INVALID_VALUE,
                        format!("supervises `{}`: no such partition", entry.v),
                        partition_list_hint(names),
                    );
                }
                continue;
            };
            if id == pi {
                sink.error_hint(
                    entry.at,
                    rule::SUPERVISION,
                    format!("partition `{pname}` supervises itself"),
                    "a supervisor watches and restarts other partitions; its own watchdog and fault policy cover itself",
                );
                continue;
            }
            let Some(id) = u8::try_from(id).ok().map(PartitionId) else { continue };
            if ids.contains(&id) {
                sink.error(
                    entry.at,
                    rule::DUPLICATE_NAME,
                    format!("partition `{}` is listed twice in `supervises` of `{pname}`", entry.v),
                );
                continue;
            }
            ids.push(id);
        }
        resolved.push(ids);
    }
    resolved
}

/// The first setting that needs the hypervisor's monitor, with where it is and what it is:
/// a partition's `watchdog_ms` or `critical = true` in file order, else the board's
/// `[watchdog]` (at `board_watchdog`). `None`: the system needs no monitor.
fn monitor_reason(raw: &RawSystem, names: &[Option<&str>], board_watchdog: Option<Loc>) -> Option<(Loc, String)> {
    let mut settings: Vec<(Loc, String)> = Vec::new();
    for (pi, p) in raw.partitions.iter().enumerate() {
        let pname = names.get(pi).copied().flatten().unwrap_or("?");
        if let Some(w) = &p.watchdog_ms {
            settings.push((w.at, format!("the watchdog of partition `{pname}`")));
        }
        if let Some(at) = p.critical {
            settings.push((at, format!("critical partition `{pname}`")));
        }
    }
    settings
        .into_iter()
        .min_by_key(|(at, _)| at.offset)
        .or_else(|| board_watchdog.map(|at| (at, "the board's `[watchdog]`".to_owned())))
}

/// The monitor's core: the lowest-numbered board core that no partition owns.
fn free_core(board_cores: impl Iterator<Item = u32>, owned: impl Fn(u32) -> bool) -> Option<u32> {
    board_cores.filter(|&core| !owned(core)).min()
}

/// One mapping of a partition's address space, in the order the kernel makes them.
pub(crate) struct Mapping {
    pub what: String,
    pub at: Loc,
    pub guest: u64,
    pub host: u64,
    pub size: u64,
    pub access: Access,
    pub uncached: bool,
    pub large_pages: bool,
}

/// Builds each partition's second-level tables with the kernel's own builder
/// (`bulkhead_virt::slat`) from a pool of [`SLAT_TABLES_PER_PARTITION`] tables, mapping what
/// kernel/src/backend/address_space.rs maps, in its order: the partition's memory regions, the
/// shared regions it takes part in, its devices' MMIO ranges and memory BARs. A layout that
/// needs more tables (`limit-exceeded`) or maps a device over memory (`memory-overlap-guest`)
/// is refused here instead of failing when the partition starts. `hosts` are the resolved
/// host bases of every placement: partition regions in order, then shared regions.
fn check_address_spaces(
    sink: &mut Sink,
    raw: &RawSystem,
    board: &Board,
    hosts: &[Option<u64>],
    names: &[Option<&str>],
) {
    let mut host = hosts.iter().copied();
    let mut region_hosts: Vec<Vec<Option<u64>>> = Vec::new();
    for p in &raw.partitions {
        region_hosts.push(p.memory.iter().map(|_| host.next().flatten()).collect());
    }
    let shared_hosts: Vec<Option<u64>> =
        raw.shared.iter().filter(|s| s.size.is_some()).map(|_| host.next().flatten()).collect();
    for (pi, p) in raw.partitions.iter().enumerate() {
        let pname = names.get(pi).copied().flatten().unwrap_or("?");
        let mut maps = Vec::new();
        for (r, h) in p.memory.iter().zip(region_hosts.get(pi).into_iter().flatten()) {
            let Some(h) = h else { return };
            maps.push(Mapping {
                what: format!("memory {}", show_range(&r.guest.range)),
                at: r.guest.base_at,
                guest: r.guest.range.base,
                host: *h,
                size: r.guest.range.size,
                access: r.access,
                uncached: false,
                large_pages: r.large_pages,
            });
        }
        for (s, h) in raw.shared.iter().filter(|s| s.size.is_some()).zip(&shared_hosts) {
            let (Some(size), Some(h)) = (&s.size, h) else { return };
            for sh in s.sharers.iter().filter(|sh| sh.partition.v == pname) {
                maps.push(Mapping {
                    what: format!("shared memory `{}`", s.name.as_ref().map_or("?", |n| n.v.as_str())),
                    at: sh.guest_base.at,
                    guest: sh.guest_base.v,
                    host: *h,
                    size: size.v,
                    access: sh.access,
                    uncached: false,
                    large_pages: false,
                });
            }
        }
        for dev in &p.devices {
            let Some(device) = find_device(board, &dev.v).and_then(|i| board.devices.get(i)) else { return };
            let ranges = device.mmio.iter().chain(device.bars.iter().filter(|b| b.memory).map(|b| &b.range));
            for range in ranges {
                maps.push(Mapping {
                    what: format!("the MMIO {} of device `{}`", show_range(range), dev.v),
                    at: dev.at,
                    guest: range.base,
                    host: range.base,
                    size: range.size,
                    access: Access { read: true, write: true, execute: false },
                    uncached: true,
                    large_pages: false,
                });
            }
        }
        // Both encodings: the same tree shape, but each decides its own large pages.
        let problem = build_tables::<Ept>(&maps).and_then(|_| build_tables::<Npt>(&maps));
        match problem.err() {
            None => {}
            Some((i, MapError::AlreadyMapped { gpa })) => {
                let (what, at) = maps.get(i).map_or(("?".to_owned(), p.at), |m| (m.what.clone(), m.at));
                let other = maps
                    .iter()
                    .take(i)
                    .find(|m| m.guest <= gpa && gpa - m.guest < m.size)
                    .map_or("?", |m| m.what.as_str());
                sink.error(
                    at,
                    rule::MEMORY_OVERLAP_GUEST,
                    format!("{what} overlaps {other} in the guest-physical space of partition `{pname}` (at {gpa:#x})"),
                );
            }
            Some((i, MapError::OutOfTables)) => {
                let what = maps.get(i).map_or("?", |m| m.what.as_str());
                sink.error_hint(
                    p.at,
                    rule::LIMIT_EXCEEDED,
                    format!(
                        "partition `{pname}` needs more than SLAT_TABLES_PER_PARTITION = {SLAT_TABLES_PER_PARTITION} second-level page tables (they ran out mapping {what})"
                    ),
                    "map large regions with `large_pages = true` (a 2 MiB page needs no page table of its own), or use fewer regions, closer together",
                );
            }
            Some((i, e)) => {
                let (what, at) = maps.get(i).map_or(("?".to_owned(), p.at), |m| (m.what.clone(), m.at));
                sink.error(at, rule::INVALID_VALUE, format!("{what} cannot be mapped into partition `{pname}`: {e:?}"));
            }
        }
    }
}

/// Maps `maps` in order into a fresh tree from a pool of [`SLAT_TABLES_PER_PARTITION`]
/// tables (the validation limit); how many tables it took, or the index of the first
/// mapping that fails, and why. The kernel gives each partition exactly the tables this
/// counts (`crate::footprint`), so the count must follow the kernel's own mapping order.
pub(crate) fn build_tables<E: Encoding>(maps: &[Mapping]) -> Result<usize, (usize, MapError)> {
    let mut tables = vec![[0u64; 512]; SLAT_TABLES_PER_PARTITION];
    // Any 4 KiB-aligned address below 2^52 will do: the tables are only counted.
    let mut pool = ArrayPool::with_base(&mut tables, 1 << 32);
    let mut slat = Slat::<E>::new(&mut pool).map_err(|e| (0, e))?;
    for (i, m) in maps.iter().enumerate() {
        let attributes = Attributes {
            read: m.access.read,
            write: m.access.write,
            execute: m.access.execute,
            memory_type: if m.uncached { MemoryType::Uncacheable } else { MemoryType::WriteBack },
        };
        slat.map(&mut pool, m.guest, m.host, m.size, attributes, m.large_pages).map_err(|e| (i, e))?;
    }
    Ok(pool.used())
}

fn unique(sink: &mut Sink, names: &[&str], at: &[Loc], what: &str) {
    for (i, name) in names.iter().enumerate() {
        if names.iter().take(i).any(|n| n == name)
            && let Some(loc) = at.get(i)
        {
            sink.error(*loc, rule::DUPLICATE_NAME, format!("there is already a {what} named `{name}`"));
        }
    }
}

/// The port of the virtual 16550 every partition has at the PC's COM1 address (the
/// kernel's `exits::ports::CONSOLE_BASE`).
const VIRTUAL_UART_PORT: u16 = 0x3f8;

fn partition_list_hint(names: &[Option<&str>]) -> String {
    let list: Vec<&str> = names.iter().flatten().copied().collect();
    if list.is_empty() {
        "the system has no partitions".to_owned()
    } else {
        format!("partitions are: {}", list.join(", "))
    }
}

fn resolve_quiet(written: &str, system_dir: &Path, dirs: payload::PayloadDirs<'_>) -> Option<PathBuf> {
    let mut sink = Sink::default();
    let at = Loc { file: 0, offset: 0 };
    payload::resolve(&mut sink, at, written, system_dir, dirs)
}

/// Whether `range` lies inside the union of the (possibly adjacent) RAM ranges.
fn inside_ram(ram: &[PhysRange], range: &PhysRange) -> bool {
    let mut cursor = u128::from(range.base);
    let end = range.end_checked();
    // Walk forward through RAM ranges that cover the cursor; bounded by the number of ranges.
    for _ in 0..=ram.len() {
        if cursor >= end {
            return true;
        }
        match ram.iter().find(|r| u128::from(r.base) <= cursor && cursor < r.end_checked()) {
            Some(r) => cursor = r.end_checked(),
            None => return false,
        }
    }
    cursor >= end
}

/// Free host memory as `[start, end)` pairs (u128 so that ends never overflow).
fn free_ranges(board: &Board, hv: &PhysRange, fixed: &[PhysRange]) -> Vec<(u128, u128)> {
    let mut free: Vec<(u128, u128)> = board.ram.iter().map(|r| (u128::from(r.base), r.end_checked())).collect();
    free.sort_unstable();
    let holes = board.reserved.iter().chain(std::iter::once(hv)).chain(fixed);
    for hole in holes {
        free = subtract(&free, (u128::from(hole.base), hole.end_checked()));
    }
    free
}

fn subtract(free: &[(u128, u128)], (s, e): (u128, u128)) -> Vec<(u128, u128)> {
    let mut out = Vec::with_capacity(free.len() + 1);
    for &(a, b) in free {
        if e <= a || s >= b {
            out.push((a, b));
            continue;
        }
        if a < s {
            out.push((a, s));
        }
        if e < b {
            out.push((e, b));
        }
    }
    out
}

/// First fit, in file order, 2 MiB-aligned, in RAM minus reserved ranges, the hypervisor
/// and every fixed placement.
fn allocate(sink: &mut Sink, board: &Board, hv: &PhysRange, placements: &mut [Placement]) {
    let fixed: Vec<PhysRange> =
        placements.iter().filter_map(|p| p.fixed.as_ref().map(|f| PhysRange { base: f.v, size: p.size })).collect();
    let mut free = free_ranges(board, hv, &fixed);
    let align = u128::from(ALLOCATION_ALIGN);
    for p in placements.iter_mut().filter(|p| p.fixed.is_none()) {
        let size = u128::from(p.size);
        let slot = free.iter().find_map(|&(a, b)| {
            let start = a.div_ceil(align) * align;
            (start + size <= b).then_some(start)
        });
        let host = slot.and_then(|s| u64::try_from(s).ok());
        match host {
            Some(base) => {
                p.host_base = Some(base);
                free = subtract(&free, (u128::from(base), u128::from(base) + size));
            }
            None => {
                let largest = free.iter().map(|&(a, b)| b.saturating_sub(a.div_ceil(align) * align)).max().unwrap_or(0);
                let largest = u64::try_from(largest).unwrap_or(u64::MAX);
                sink.error_hint(
                    p.size_at,
                    rule::MEMORY_NO_FIT,
                    format!(
                        "{} ({}) does not fit in the free RAM of board `{}`",
                        p.what,
                        show_size(p.size),
                        board.name
                    ),
                    format!(
                        "the largest free 2 MiB-aligned block left is {}; shrink the regions or free RAM",
                        show_size(largest)
                    ),
                );
            }
        }
    }
}

/// The board device a partition's `devices` entry names: by name, or a PCI function by
/// its address (`BB:DD.F` or `SSSS:BB:DD.F`, hexadecimal as lspci prints it).
pub(crate) fn find_device(board: &Board, entry: &str) -> Option<usize> {
    board.devices.iter().position(|d| d.name == entry).or_else(|| {
        let pci = parse_bdf(entry)?;
        board.devices.iter().position(|d| d.pci == Some(pci))
    })
}

/// `BB:DD.F` or `SSSS:BB:DD.F` (hexadecimal), else `None`.
pub(crate) fn parse_bdf(text: &str) -> Option<crate::tables::PciAddress> {
    let (rest, function) = text.rsplit_once('.')?;
    let parts: Vec<&str> = rest.split(':').collect();
    let (segment, bus, device) = match parts.as_slice() {
        [b, d] => ("0", *b, *d),
        [s, b, d] => (*s, *b, *d),
        _ => return None,
    };
    let hex = |t: &str, max: u32| u32::from_str_radix(t, 16).ok().filter(|&n| n <= max && !t.is_empty());
    Some(crate::tables::PciAddress {
        segment: u16::try_from(hex(segment, 0xffff)?).ok()?,
        bus: u8::try_from(hex(bus, 0xff)?).ok()?,
        device: u8::try_from(hex(device, 31)?).ok()?,
        function: u8::try_from(u32::from_str_radix(function, 8).ok().filter(|&f| f <= 7 && function.len() == 1)?)
            .ok()?,
    })
}

/// The register pages (4 KiB at `base`) of the IOAPICs on which partition `p`'s devices
/// have GSIs: the partition sees its virtual IOAPIC there (docs/devices.md, "Interrupts").
fn ioapic_windows(board: &Board, p: &crate::system::RawPartition) -> Vec<(String, PhysRange)> {
    let gsis: Vec<u32> = p
        .devices
        .iter()
        .filter_map(|d| find_device(board, &d.v).and_then(|i| board.devices.get(i)))
        .flat_map(|d| d.interrupts.iter())
        .filter_map(|i| if let Interrupt::Line(g) = i { Some(*g) } else { None })
        .collect();
    board
        .ioapics
        .iter()
        .filter(|a| gsis.iter().any(|&g| g >= a.gsi_base && u64::from(g - a.gsi_base) < u64::from(a.pins)))
        .map(|a| (a.name.clone(), PhysRange { base: a.base, size: 0x1000 }))
        .collect()
}

/// Vectors a vCPU can receive from a device: 0x20-0xFE (0-0x1F are exceptions, and an
/// xAPIC does not deliver vectors 0-15; 0xFF is left to the spurious vector).
pub const DEVICE_VECTORS_PER_VCPU: u32 = 0xFF - 0x20;

/// The interrupt rules of one assigned device: its GSIs are on an IOAPIC of the board and
/// no other partition's device has them; the partition's MSI messages fit its vectors.
fn check_device_interrupts(
    sink: &mut Sink,
    board: &Board,
    p: &crate::system::RawPartition,
    dev: &At<String>,
    device: &Device,
) {
    let linux = p.payload.as_ref().and_then(|pl| pl.kind) == Some(PayloadKind::BzImage);
    if linux
        && let Some(gsi) =
            device.interrupts.iter().find_map(|i| if let Interrupt::Line(g) = i { Some(*g) } else { None })
    {
        sink.warn(
            dev.at,
            rule::NOT_YET,
            format!(
                "device `{}` interrupts on GSI {gsi}, but a Linux partition's MADT lists no IOAPIC yet: Linux does not use the line",
                dev.v
            ),
            "drive the device by polling, or give the partition a PCI function with MSI",
        );
    }
    for irq in &device.interrupts {
        match irq {
            Interrupt::Line(gsi) => {
                let on_ioapic = board
                    .ioapics
                    .iter()
                    .any(|a| a.gsi_base <= *gsi && u64::from(*gsi) < u64::from(a.gsi_base) + u64::from(a.pins));
                if !on_ioapic {
                    sink.error_hint(
                        dev.at,
                        rule::GSI_SHARED,
                        format!("device `{}` interrupts on GSI {gsi}, which no [[ioapic]] of board `{}` has", dev.v, board.name),
                        "describe the board's IOAPICs ([[ioapic]] with gsi_base and pins, as the firmware's MADT lists them)",
                    );
                }
            }
            Interrupt::Msi { .. } => {}
        }
    }
    let msi: u32 = p
        .devices
        .iter()
        .filter_map(|d| find_device(board, &d.v).and_then(|i| board.devices.get(i)))
        .flat_map(|d| d.interrupts.iter())
        .map(|i| match i {
            Interrupt::Msi { messages } => u32::from(*messages),
            Interrupt::Line(_) => 1,
        })
        .sum();
    let cores = p.cores.as_ref().map_or(1, |c| u32::try_from(c.v.len()).unwrap_or(u32::MAX).max(1));
    let first = p.devices.first().is_some_and(|d| d.v == dev.v);
    if first && msi > DEVICE_VECTORS_PER_VCPU.saturating_mul(cores) {
        sink.error(
            dev.at,
            rule::MSI_VECTORS,
            format!(
                "the partition's devices need {msi} interrupt vectors; its {cores} vCPU(s) receive at most {} (0x20-0xFE each)",
                DEVICE_VECTORS_PER_VCPU.saturating_mul(cores)
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(base: u64, size: u64) -> PhysRange {
        PhysRange { base, size }
    }

    #[test]
    fn ram_union_covers_adjacent_ranges() {
        let ram = [r(0x1000, 0x1000), r(0x2000, 0x2000), r(0x10000, 0x1000)];
        assert!(inside_ram(&ram, &r(0x1000, 0x3000)));
        assert!(!inside_ram(&ram, &r(0x1000, 0x4000)));
        assert!(!inside_ram(&ram, &r(0x0, 0x1000)));
        assert!(inside_ram(&ram, &r(0x10000, 0x1000)));
        assert!(!inside_ram(&[r(u64::MAX - 0xfff, 0x1000)], &r(u64::MAX - 0xfff, 0x2000)));
    }

    #[test]
    fn the_monitor_takes_the_lowest_free_core() {
        let owned = [0u32, 1, 3];
        assert_eq!(free_core([3, 0, 2, 1, 5].into_iter(), |c| owned.contains(&c)), Some(2));
        // The board's order does not matter, only the core numbers.
        assert_eq!(free_core([7, 4, 6].into_iter(), |_| false), Some(4));
        assert_eq!(free_core([0, 1].into_iter(), |c| c < 2), None);
        assert_eq!(free_core(std::iter::empty(), |_| false), None);
    }

    #[test]
    fn cmos_ports_of_a_device() {
        let device = |io_ports: Vec<crate::tables::IoPortRange>, bars: Vec<crate::tables::Bar>| Device {
            name: "d".into(),
            pci: None,
            bars,
            io_ports,
            mmio: Vec::new(),
            interrupts: Vec::new(),
            hidden_capabilities: Vec::new(),
        };
        let ports = |base, count| crate::tables::IoPortRange { base, count };
        assert!(device_has_port(&device(vec![ports(0x70, 2)], vec![]), 0x71));
        assert!(device_has_port(&device(vec![ports(0x60, 0x11)], vec![]), 0x70));
        assert!(!device_has_port(&device(vec![ports(0x60, 0x10)], vec![]), 0x70));
        assert!(!device_has_port(&device(vec![ports(0x72, 2)], vec![]), 0x71));
        let io_bar = crate::tables::Bar { index: 0, range: r(0x70, 8), memory: false };
        assert!(device_has_port(&device(vec![], vec![io_bar]), 0x70));
        let memory_bar = crate::tables::Bar { index: 0, range: r(0x70, 0x1000), memory: true };
        assert!(!device_has_port(&device(vec![], vec![memory_bar]), 0x70));
    }

    #[test]
    fn subtraction_splits_and_trims() {
        let free = vec![(0u128, 100u128)];
        assert_eq!(subtract(&free, (10, 20)), vec![(0, 10), (20, 100)]);
        assert_eq!(subtract(&free, (0, 100)), vec![]);
        assert_eq!(subtract(&free, (50, 200)), vec![(0, 50)]);
        assert_eq!(subtract(&free, (200, 300)), vec![(0, 100)]);
    }
}
