//! The system file: which board, the hypervisor's own settings, the partitions, their
//! connections and shared memory.
//!
//! Reading checks shapes and single values (types, enum words, names, alignment) and keeps
//! the places where each value was written, so that the cross-checks in
//! [`crate::validate`] can point at the exact key. An entry with a broken value is kept
//! where later checks can still use its other values, and dropped otherwise.

use crate::board::{RawRange, check_range, read_range};
use crate::diag::{Loc, rule};
use crate::tables::{
    Access, ConsoleFormat, DmaProtection, FaultPolicy, GuestInterface, LogLevel, MAX_CMDLINE_BYTES,
    MAX_CONNECTION_NAME, PayloadKind, PhysRange,
};
use crate::value::{Cx, KIB, MIB, Table, Value, check_name};

/// A value and where it was written.
#[derive(Debug, Clone)]
pub(crate) struct At<T> {
    pub v: T,
    pub at: Loc,
}

pub(crate) struct RawSystem {
    pub name: Option<String>,
    pub board: Option<At<String>>,
    pub reserved: PhysRange,
    /// Where `reserved_memory` is written (`None`: the default applies).
    pub reserved_at: Option<Loc>,
    pub console_port: Option<u16>,
    pub log_level: LogLevel,
    pub console_format: ConsoleFormat,
    pub verdict_partition: Option<At<String>>,
    pub console_input: Option<At<String>>,
    pub partitions: Vec<RawPartition>,
    pub partitions_at: Loc,
    pub connections: Vec<RawConnection>,
    pub connections_at: Loc,
    pub shared: Vec<RawShared>,
    pub shared_at: Loc,
}

pub(crate) struct RawPartition {
    pub at: Loc,
    pub name: Option<At<String>>,
    /// `None` when `cores` is missing or not an array (already reported).
    pub cores: Option<At<Vec<At<u32>>>>,
    pub memory: Vec<RawRegion>,
    /// Number of `[[partition.memory]]` entries written, readable or not.
    pub memory_entries: usize,
    pub payload: Option<RawPayload>,
    pub devices: Vec<At<String>>,
    pub dma: DmaProtection,
    pub fault_policy: FaultPolicy,
    /// `watchdog_ms`, when it was written and valid.
    pub watchdog_ms: Option<At<u32>>,
    /// `watchdog_grace_ms` (0 when absent).
    pub watchdog_grace_ms: u32,
    /// `critical = true`, with where it was written.
    pub critical: Option<Loc>,
    /// `supervises`: the names as written, and where the key is.
    pub supervises: Vec<At<String>>,
    pub supervises_at: Option<Loc>,
    /// `interface`.
    pub interface: GuestInterface,
}

pub(crate) struct RawRegion {
    pub guest: RawRange,
    pub host_base: Option<At<u64>>,
    pub access: Access,
    pub large_pages: bool,
}

pub(crate) struct RawPayload {
    /// Where the `[partition.payload]` table is (for problems with a key it lacks).
    pub at: Loc,
    pub kind: Option<PayloadKind>,
    /// Where `kind` was written (for problems of the kind as a whole).
    pub kind_at: Option<Loc>,
    pub path: Option<At<String>>,
    pub entry: Option<At<u64>>,
    pub cmdline: String,
    /// Where `cmdline` was written, if it was.
    pub cmdline_at: Option<Loc>,
    pub initrd: Option<At<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawKind {
    Message,
    Event,
}

pub(crate) struct RawConnection {
    pub at: Loc,
    pub id: Option<At<u32>>,
    pub name: Option<At<String>>,
    pub from: Option<At<String>>,
    pub to: Option<At<String>>,
    pub sint: Option<At<i128>>,
    pub kind: Option<RawKind>,
    pub queue_depth: Option<At<i128>>,
    pub flag: Option<At<i128>>,
    /// `ring`: the shared region that carries a message connection with a Xen end.
    pub ring: Option<At<String>>,
}

pub(crate) struct RawShared {
    pub at: Loc,
    pub name: Option<At<String>>,
    pub size: Option<At<u64>>,
    pub host_base: Option<At<u64>>,
    pub sharers: Vec<RawSharer>,
}

pub(crate) struct RawSharer {
    pub partition: At<String>,
    pub guest_base: At<u64>,
    pub access: Access,
}

/// Where the hypervisor image is linked (`KERNEL_BASE` in kernel/linker.ld); its reserved
/// memory must contain it.
pub const KERNEL_LINK_ADDRESS: u64 = 2 * MIB;

/// The hypervisor's default reserved memory: [1 MiB, 16 MiB), which covers the kernel image
/// (linked at 2 MiB) and the boot modules GRUB places right after it.
pub const DEFAULT_RESERVED: PhysRange = PhysRange { base: MIB, size: 15 * MIB };

pub(crate) const SYSTEM_KEYS: &[&str] =
    &["name", "description", "board", "hypervisor", "partition", "connection", "shared_memory"];
pub(crate) const HYPERVISOR_KEYS: &[&str] =
    &["reserved_memory", "console_port", "console_format", "log_level", "verdict_partition", "console_input"];
pub(crate) const RESERVED_KEYS: &[&str] = &["base", "size"];
pub(crate) const PARTITION_KEYS: &[&str] = &[
    "name",
    "cores",
    "memory",
    "payload",
    "devices",
    "dma",
    "fault_policy",
    "max_restarts",
    "watchdog_ms",
    "watchdog_grace_ms",
    "critical",
    "supervises",
    "interface",
];
pub(crate) const MEMORY_KEYS: &[&str] = &["guest_base", "size", "host_base", "access", "large_pages"];
pub(crate) const PAYLOAD_KEYS: &[&str] = &["kind", "path", "entry", "cmdline", "initrd"];
pub(crate) const CONNECTION_KEYS: &[&str] =
    &["id", "name", "from", "to", "kind", "sint", "queue_depth", "flag", "ring"];
/// Connection names the Linux module uses for its own devices (docs/linux.md).
pub(crate) const RESERVED_CONNECTION_NAMES: &[&str] = &["self", "supervisor"];
pub(crate) const SHARED_KEYS: &[&str] = &["name", "size", "host_base", "sharers"];
pub(crate) const SHARER_KEYS: &[&str] = &["partition", "guest_base", "access"];

/// Reads a system file's root table (made with [`SYSTEM_KEYS`]).
pub(crate) fn read_system(cx: &mut Cx<'_>, root: &Table<'_, '_>) -> RawSystem {
    let name = root.get("name").and_then(|v| check_name(cx, v, "name"));
    if let Some(v) = root.get("description") {
        cx.string(v, "description");
    }
    let board =
        root.required(cx, "board").and_then(|v| cx.string(v, "board").map(|s| At { v: s.to_owned(), at: cx.at(v) }));

    let mut reserved = DEFAULT_RESERVED;
    let mut reserved_at = None;
    let mut console_port = None;
    let mut log_level = LogLevel::Info;
    let mut console_format = ConsoleFormat::Defmt;
    let mut verdict_partition = None;
    let mut console_input = None;
    if let Some(hv) = root.get("hypervisor").and_then(|v| cx.table(v, "hypervisor", "[hypervisor]", HYPERVISOR_KEYS)) {
        if let Some(v) = hv.get("reserved_memory")
            && let Some(t) = cx.table(v, "reserved_memory", "reserved_memory", RESERVED_KEYS)
            && let Some(range) = read_range(cx, &t, 4 * KIB)
        {
            if range.range.base <= KERNEL_LINK_ADDRESS
                && KERNEL_LINK_ADDRESS < range.range.base.saturating_add(range.range.size)
            {
                reserved = range.range;
                reserved_at = Some(cx.at(v));
            } else {
                cx.sink.error_hint(
                    range.base_at,
                    rule::INVALID_VALUE,
                    format!("reserved_memory {} does not hold the kernel image at {KERNEL_LINK_ADDRESS:#x}", crate::board::show_range(&range.range)),
                    "the hypervisor is linked at 2 MiB (kernel/linker.ld) and GRUB loads the payloads after it; start reserved_memory at or below 0x200000 and make it cover the image and the boot modules",
                );
            }
        }
        if let Some(v) = hv.get("console_port") {
            console_port = cx.uint(v, "console_port", u64::from(u16::MAX)).and_then(|n| u16::try_from(n).ok());
        }
        if let Some(v) = hv.get("log_level") {
            log_level = match cx.string(v, "log_level") {
                Some("error") => LogLevel::Error,
                Some("warn") => LogLevel::Warn,
                Some("info") => LogLevel::Info,
                Some("debug") => LogLevel::Debug,
                Some("trace") => LogLevel::Trace,
                Some(other) => {
                    cx.error_hint(
                        &v.span(),
                        rule::INVALID_VALUE,
                        format!("unknown log level {other:?}"),
                        "log_level is one of \"error\", \"warn\", \"info\", \"debug\", \"trace\"",
                    );
                    LogLevel::Info
                }
                None => LogLevel::Info,
            };
        }
        if let Some(v) = hv.get("console_format") {
            console_format = match cx.string(v, "console_format") {
                Some("defmt") => ConsoleFormat::Defmt,
                Some("text") => ConsoleFormat::Text,
                Some(other) => {
                    cx.error_hint(
                        &v.span(),
                        rule::INVALID_VALUE,
                        format!("unknown console format {other:?}"),
                        "console_format is \"defmt\" (compact frames, decoded on a host with the kernel ELF) or \"text\" (plain lines any serial terminal shows)",
                    );
                    ConsoleFormat::Defmt
                }
                None => ConsoleFormat::Defmt,
            };
        }
        if let Some(v) = hv.get("verdict_partition") {
            verdict_partition = cx.string(v, "verdict_partition").map(|s| At { v: s.to_owned(), at: cx.at(v) });
        }
        if let Some(v) = hv.get("console_input") {
            console_input = cx.string(v, "console_input").map(|s| At { v: s.to_owned(), at: cx.at(v) });
        }
    }

    let partitions_at = cx.loc(&root.key_span("partition"));
    let partitions =
        root.tables(cx, "partition", "[[partition]]", PARTITION_KEYS).iter().map(|t| read_partition(cx, t)).collect();
    let connections_at = cx.loc(&root.key_span("connection"));
    let connections = root
        .tables(cx, "connection", "[[connection]]", CONNECTION_KEYS)
        .iter()
        .map(|t| read_connection(cx, t))
        .collect();
    let shared_at = cx.loc(&root.key_span("shared_memory"));
    let shared =
        root.tables(cx, "shared_memory", "[[shared_memory]]", SHARED_KEYS).iter().map(|t| read_shared(cx, t)).collect();

    RawSystem {
        name,
        board,
        reserved,
        reserved_at,
        console_port,
        log_level,
        console_format,
        verdict_partition,
        console_input,
        partitions,
        partitions_at,
        connections,
        connections_at,
        shared,
        shared_at,
    }
}

fn at_string(cx: &mut Cx<'_>, value: &Value<'_>, key: &str) -> Option<At<String>> {
    cx.string(value, key).map(|s| At { v: s.to_owned(), at: cx.at(value) })
}

fn at_int(cx: &mut Cx<'_>, value: &Value<'_>, key: &str) -> Option<At<i128>> {
    cx.int(value, key).map(|v| At { v, at: cx.at(value) })
}

/// "r", "rw", "rx", "rwx" (any order, each letter once, `r` required).
pub(crate) fn read_access(cx: &mut Cx<'_>, value: Option<&Value<'_>>, default: Access) -> Access {
    let Some(value) = value else {
        return default;
    };
    let Some(text) = cx.string(value, "access") else {
        return default;
    };
    let mut access = Access::default();
    let mut ok = !text.is_empty();
    for c in text.chars() {
        let flag = match c {
            'r' => &mut access.read,
            'w' => &mut access.write,
            'x' => &mut access.execute,
            _ => {
                ok = false;
                break;
            }
        };
        if *flag {
            ok = false;
        }
        *flag = true;
    }
    if ok && !access.read {
        cx.error_hint(
            &value.span(),
            rule::INVALID_VALUE,
            format!("access {text:?} does not include read"),
            "EPT/NPT cannot map memory writable or executable but not readable; add `r`",
        );
        return default;
    }
    if !ok {
        cx.error_hint(
            &value.span(),
            rule::INVALID_VALUE,
            format!("access {text:?} is not a set of r, w, x"),
            "write access as \"r\", \"rw\", \"rx\" or \"rwx\"",
        );
        return default;
    }
    access
}

pub(crate) const RWX: Access = Access { read: true, write: true, execute: true };
pub(crate) const RW: Access = Access { read: true, write: true, execute: false };

fn read_partition(cx: &mut Cx<'_>, table: &Table<'_, '_>) -> RawPartition {
    let at = cx.loc(&table.span);
    let name = table.required(cx, "name").and_then(|v| check_name(cx, v, "name").map(|n| At { v: n, at: cx.at(v) }));
    let cores = table.required(cx, "cores").and_then(|v| {
        let items = cx.array(v, "cores")?;
        let cores = items
            .iter()
            .filter_map(|item| {
                cx.uint(item, "cores", u64::from(u32::MAX))
                    .map(|n| At { v: u32::try_from(n).unwrap_or(u32::MAX), at: cx.at(item) })
            })
            .collect();
        Some(At { v: cores, at: cx.at(v) })
    });

    let memory_tables = table.tables(cx, "memory", "[[partition.memory]]", MEMORY_KEYS);
    let memory_entries = match table.get("memory") {
        Some(v) => match v.get_ref() {
            toml::de::DeValue::Array(a) => a.len(),
            _ => 1,
        },
        None => 0,
    };
    let memory = memory_tables.iter().filter_map(|t| read_region(cx, t)).collect();

    let payload = table
        .required(cx, "payload")
        .and_then(|v| cx.table(v, "payload", "[partition.payload]", PAYLOAD_KEYS))
        .map(|t| read_payload(cx, &t));

    let devices = table
        .get("devices")
        .and_then(|v| cx.array(v, "devices"))
        .map(|items| items.iter().filter_map(|item| at_string(cx, item, "devices")).collect())
        .unwrap_or_default();

    let dma = match table.get("dma") {
        None => DmaProtection::Iommu,
        Some(v) => match cx.string(v, "dma") {
            Some("iommu") | None => DmaProtection::Iommu,
            Some("unprotected") => DmaProtection::Unprotected,
            Some(other) => {
                cx.error_hint(
                    &v.span(),
                    rule::INVALID_VALUE,
                    format!("unknown DMA protection {other:?}"),
                    "dma is \"iommu\" (the default: the board's IOMMU confines the partition's PCI functions) or \"unprotected\"",
                );
                DmaProtection::Iommu
            }
        },
    };

    let max_restarts = table.get("max_restarts");
    let fault_policy = match table.get("fault_policy") {
        None => FaultPolicy::Halt,
        Some(v) => match cx.string(v, "fault_policy") {
            Some("halt") => FaultPolicy::Halt,
            Some("reset-board") => FaultPolicy::ResetBoard,
            Some("restart") => {
                let n = match max_restarts {
                    Some(m) => cx.uint(m, "max_restarts", u64::from(u32::MAX)),
                    None => {
                        cx.error_hint(
                            &v.span(),
                            rule::MISSING_KEY,
                            "fault_policy \"restart\" needs `max_restarts`",
                            "add `max_restarts = N`: how often the partition may restart before it is halted",
                        );
                        None
                    }
                };
                FaultPolicy::Restart { max_restarts: n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0) }
            }
            Some(other) => {
                cx.error_hint(
                    &v.span(),
                    rule::INVALID_VALUE,
                    format!("unknown fault policy {other:?}"),
                    "fault_policy is \"halt\", \"restart\" (with max_restarts) or \"reset-board\"",
                );
                FaultPolicy::Halt
            }
            None => FaultPolicy::Halt,
        },
    };
    if max_restarts.is_some() && !matches!(fault_policy, FaultPolicy::Restart { .. }) {
        cx.error_hint(
            &table.key_span("max_restarts"),
            rule::INVALID_VALUE,
            "`max_restarts` only applies to fault_policy = \"restart\"",
            "remove `max_restarts`, or set fault_policy = \"restart\"",
        );
    }

    // Enforced by the hypervisor's monitor (docs/supervision.md).
    let watchdog_ms = table.get("watchdog_ms").and_then(|v| {
        let n = cx.uint(v, "watchdog_ms", u64::from(u32::MAX))?;
        if n == 0 {
            cx.error_hint(
                &v.span(),
                rule::INVALID_VALUE,
                "watchdog_ms = 0 would fire at once",
                "give a period in milliseconds, or leave `watchdog_ms` out for no watchdog",
            );
            return None;
        }
        Some(At { v: u32::try_from(n).ok()?, at: cx.at(v) })
    });
    let watchdog_grace_ms = table
        .get("watchdog_grace_ms")
        .and_then(|v| {
            let n = cx.uint(v, "watchdog_grace_ms", u64::from(u32::MAX))?;
            if table.get("watchdog_ms").is_none() {
                cx.error_hint(
                    &v.span(),
                    rule::INVALID_VALUE,
                    "`watchdog_grace_ms` only applies to a partition with a watchdog",
                    "add `watchdog_ms = PERIOD` (the grace delays its first deadline after each start), or remove `watchdog_grace_ms`",
                );
                return None;
            }
            u32::try_from(n).ok()
        })
        .unwrap_or(0);
    let critical = table.get("critical").and_then(|v| cx.boolean(v, "critical").filter(|&c| c).map(|_| cx.at(v)));
    let supervises_at = table.get("supervises").map(|_| cx.loc(&table.key_span("supervises")));
    let supervises = table
        .get("supervises")
        .and_then(|v| cx.array(v, "supervises"))
        .map(|items| items.iter().filter_map(|item| at_string(cx, item, "supervises")).collect())
        .unwrap_or_default();
    let interface = match table.get("interface") {
        None => GuestInterface::HyperV,
        Some(v) => match cx.string(v, "interface") {
            Some("hyperv") | None => GuestInterface::HyperV,
            Some("xen") => GuestInterface::Xen,
            Some(other) => {
                cx.error_hint(
                    &v.span(),
                    rule::INVALID_VALUE,
                    format!("unknown hypervisor interface {other:?}"),
                    "interface is \"hyperv\" (the default: Microsoft's Hyper-V interface) or \"xen\" (Xen's HVM interface)",
                );
                GuestInterface::HyperV
            }
        },
    };

    RawPartition {
        at,
        name,
        cores,
        memory,
        memory_entries,
        payload,
        devices,
        dma,
        fault_policy,
        watchdog_ms,
        watchdog_grace_ms,
        critical,
        supervises,
        supervises_at,
        interface,
    }
}

fn read_region(cx: &mut Cx<'_>, table: &Table<'_, '_>) -> Option<RawRegion> {
    let large_pages = table.get("large_pages").and_then(|v| cx.boolean(v, "large_pages")).unwrap_or(false);
    let align = if large_pages { 2 * MIB } else { 4 * KIB };
    let access = read_access(cx, table.get("access"), RWX);
    let base_v = table.required(cx, "guest_base");
    let size_v = table.required(cx, "size");
    let base = base_v.and_then(|v| cx.uint(v, "guest_base", u64::MAX));
    let size = size_v.and_then(|v| cx.size(v, "size"));
    let host_base = table.get("host_base").and_then(|v| {
        let n = cx.uint(v, "host_base", u64::MAX)?;
        if n % align != 0 {
            cx.error_hint(
                &v.span(),
                rule::MEMORY_MISALIGNED,
                format!(
                    "host_base {n:#x} is not {} aligned{}",
                    crate::board::show_size(align),
                    if large_pages { " (large_pages = true)" } else { "" }
                ),
                format!("use a multiple of {align:#x}"),
            );
            return None;
        }
        Some(At { v: n, at: cx.at(v) })
    });
    let guest = check_range(cx, base_v?, size_v?, base?, size?, align, "memory region")?;
    Some(RawRegion { guest, host_base, access, large_pages })
}

fn read_payload(cx: &mut Cx<'_>, table: &Table<'_, '_>) -> RawPayload {
    let kind_value = table.required(cx, "kind");
    let kind = kind_value.and_then(|v| match cx.string(v, "kind")? {
        "elf" => Some(PayloadKind::Elf),
        "flat" => Some(PayloadKind::Flat),
        word @ ("linux" | "bzimage") => {
            if word == "bzimage" {
                let at = cx.at(v);
                cx.sink.warn(
                    at,
                    rule::DEPRECATED,
                    "payload kind \"bzimage\" is now called \"linux\"",
                    "write kind = \"linux\"; it means the same (a Linux bzImage)",
                );
            }
            Some(PayloadKind::BzImage)
        }
        // A unikernel: a Rust std program (x86_64-unknown-hermit) linked with the Bulkhead
        // runtime, which provides the hermit-abi system interface (docs/unikernel.md).
        "hermit" => Some(PayloadKind::Hermit),
        other => {
            cx.error_hint(
                &v.span(),
                rule::INVALID_VALUE,
                format!("unknown payload kind {other:?}"),
                "payload kind is \"elf\", \"flat\", \"linux\" or \"hermit\"",
            );
            None
        }
    });
    let kind_at = kind_value.map(|v| cx.at(v));
    let path = table.required(cx, "path").and_then(|v| at_string(cx, v, "path"));
    let entry = table.get("entry").and_then(|v| cx.uint(v, "entry", u64::MAX).map(|n| At { v: n, at: cx.at(v) }));
    let cmdline_at = table.get("cmdline").map(|v| cx.at(v));
    let cmdline = table
        .get("cmdline")
        .and_then(|v| {
            let s = cx.string(v, "cmdline")?;
            if s.len() > MAX_CMDLINE_BYTES {
                cx.error_hint(
                    &v.span(),
                    rule::LIMIT_EXCEEDED,
                    format!("cmdline is {} bytes; the limit is MAX_CMDLINE_BYTES = {MAX_CMDLINE_BYTES}", s.len()),
                    "the hypervisor hands a partition its command line in one 4 KiB page with a NUL; shorten it",
                );
                return None;
            }
            if s.contains(|c: char| c.is_control()) {
                cx.error_hint(
                    &v.span(),
                    rule::INVALID_VALUE,
                    "cmdline holds control characters",
                    "keep the command line to one line of printable text",
                );
                return None;
            }
            Some(s.to_owned())
        })
        .unwrap_or_default();
    let initrd = table.get("initrd").and_then(|v| {
        let initrd = at_string(cx, v, "initrd")?;
        if kind.is_some_and(|k| k != PayloadKind::BzImage) {
            cx.error_hint(
                &v.span(),
                rule::INVALID_VALUE,
                "`initrd` only applies to a `linux` payload",
                "remove `initrd`, or set kind = \"linux\"",
            );
            return None;
        }
        Some(initrd)
    });
    RawPayload { at: cx.loc(&table.span), kind, kind_at, path, entry, cmdline, cmdline_at, initrd }
}

fn read_connection(cx: &mut Cx<'_>, table: &Table<'_, '_>) -> RawConnection {
    let at = cx.loc(&table.span);
    let id = table.required(cx, "id").and_then(|v| {
        let n = cx.int(v, "id")?;
        match u32::try_from(n) {
            Ok(id) if id < 1 << 24 => Some(At { v: id, at: cx.at(v) }),
            _ => {
                cx.error_hint(
                    &v.span(),
                    rule::INVALID_VALUE,
                    format!("connection id {n} is out of range"),
                    "TLFS connection ids are 24 bits: 0 to 0xffffff",
                );
                None
            }
        }
    });
    let name = table.get("name").and_then(|v| {
        let name = cx.string(v, "name")?;
        let ok = !name.is_empty()
            && name.len() <= MAX_CONNECTION_NAME
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok {
            cx.error_hint(
                &v.span(),
                rule::INVALID_VALUE,
                format!("connection name {name:?} is not a valid device name"),
                format!(
                    "a connection name starts with a-z or 0-9 and uses only a-z, 0-9, '-' and '_' (at most {MAX_CONNECTION_NAME} characters): partitions name a device after it"
                ),
            );
            return None;
        }
        // A Linux partition's module names its supervision devices /dev/bulkhead/self and
        // /dev/bulkhead/supervisor, beside one per connection.
        if RESERVED_CONNECTION_NAMES.contains(&name) {
            cx.error_hint(
                &v.span(),
                rule::INVALID_VALUE,
                format!("connection name {name:?} is reserved"),
                "`self` and `supervisor` are the names of a Linux partition's supervision devices (/dev/bulkhead/NAME): choose another name",
            );
            return None;
        }
        Some(At { v: name.to_owned(), at: cx.at(v) })
    });
    let from = table.required(cx, "from").and_then(|v| at_string(cx, v, "from"));
    let to = table.required(cx, "to").and_then(|v| at_string(cx, v, "to"));
    let sint = table.required(cx, "sint").and_then(|v| at_int(cx, v, "sint"));
    let kind = table.required(cx, "kind").and_then(|v| match cx.string(v, "kind")? {
        "message" => Some(RawKind::Message),
        "event" => Some(RawKind::Event),
        other => {
            cx.error_hint(
                &v.span(),
                rule::INVALID_VALUE,
                format!("unknown connection kind {other:?}"),
                "a connection's kind is \"message\" or \"event\"",
            );
            None
        }
    });
    let mut queue_depth = None;
    let mut flag = None;
    let mut ring = None;
    match kind {
        Some(RawKind::Message) => {
            queue_depth = table.required(cx, "queue_depth").and_then(|v| at_int(cx, v, "queue_depth"));
            // Whether a ring belongs here depends on the ends' interfaces: validate.rs.
            ring = table.get("ring").and_then(|v| at_string(cx, v, "ring"));
            if table.get("flag").is_some() {
                cx.error_hint(
                    &table.key_span("flag"),
                    rule::INVALID_VALUE,
                    "`flag` only applies to event connections",
                    "remove `flag`, or set kind = \"event\"",
                );
            }
        }
        Some(RawKind::Event) => {
            flag = table.required(cx, "flag").and_then(|v| at_int(cx, v, "flag"));
            if table.get("queue_depth").is_some() {
                cx.error_hint(
                    &table.key_span("queue_depth"),
                    rule::INVALID_VALUE,
                    "`queue_depth` only applies to message connections",
                    "remove `queue_depth`, or set kind = \"message\"",
                );
            }
            if table.get("ring").is_some() {
                cx.error_hint(
                    &table.key_span("ring"),
                    rule::INVALID_VALUE,
                    "`ring` only applies to message connections",
                    "an event connection needs no ring (a Xen end sees it as an event channel): remove `ring`, or set kind = \"message\"",
                );
            }
        }
        None => {}
    }
    RawConnection { at, id, name, from, to, sint, kind, queue_depth, flag, ring }
}

fn read_shared(cx: &mut Cx<'_>, table: &Table<'_, '_>) -> RawShared {
    let at = cx.loc(&table.span);
    let name = table.required(cx, "name").and_then(|v| check_name(cx, v, "name").map(|n| At { v: n, at: cx.at(v) }));
    let size = table.required(cx, "size").and_then(|v| {
        let n = cx.size(v, "size")?;
        let at = cx.at(v);
        if n == 0 {
            cx.error(&v.span(), rule::MEMORY_ZERO_SIZE, "shared memory has size 0");
            None
        } else if n % (4 * KIB) != 0 {
            cx.error_hint(
                &v.span(),
                rule::MEMORY_MISALIGNED,
                format!("shared memory size {n:#x} is not a multiple of 4 KiB"),
                "use a multiple of 0x1000",
            );
            None
        } else {
            Some(At { v: n, at })
        }
    });
    let host_base = table.get("host_base").and_then(|v| aligned_base(cx, v, "host_base"));
    let sharers = table
        .tables(cx, "sharers", "sharer", SHARER_KEYS)
        .iter()
        .filter_map(|t| {
            let partition = t.required(cx, "partition").and_then(|v| at_string(cx, v, "partition"));
            let guest_base = t.required(cx, "guest_base").and_then(|v| aligned_base(cx, v, "guest_base"));
            let access = read_access(cx, t.get("access"), RW);
            Some(RawSharer { partition: partition?, guest_base: guest_base?, access })
        })
        .collect::<Vec<_>>();
    if table.get("sharers").is_none() {
        table.required(cx, "sharers");
    } else if sharers.is_empty()
        && table.get("sharers").is_some_and(|v| v.get_ref().as_array().is_some_and(|a| a.is_empty()))
    {
        cx.error_hint(
            &table.key_span("sharers"),
            rule::INVALID_VALUE,
            "shared memory has no sharers",
            "list the partitions that map the region in `sharers`",
        );
    }
    RawShared { at, name, size, host_base, sharers }
}

/// A 4 KiB-aligned address.
fn aligned_base(cx: &mut Cx<'_>, value: &Value<'_>, key: &str) -> Option<At<u64>> {
    let n = cx.uint(value, key, u64::MAX)?;
    if n % (4 * KIB) != 0 {
        cx.error_hint(
            &value.span(),
            rule::MEMORY_MISALIGNED,
            format!("{key} {n:#x} is not 4 KiB aligned"),
            "use a multiple of 0x1000",
        );
        return None;
    }
    Some(At { v: n, at: cx.at(value) })
}
