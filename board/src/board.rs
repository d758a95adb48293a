//! The board file: what the machine has (CPUs, RAM, reserved ranges, devices, IOMMUs, the
//! console UART), independent of how it is partitioned.
//!
//! Reading checks the shape of every entry and the rules that concern the board alone
//! (one boot CPU, unique core numbers and APIC IDs, disjoint RAM, devices that do not share
//! resources). What a system does with the board is checked in [`crate::validate`].

use crate::diag::{Loc, rule};
use crate::model::{Board, BoardWatchdog, BoardWatchdogKind, Device, IoApic, Iommu, IommuScope, ResetRecord};
use crate::tables::{
    Bar, BoardCpu, DeviceId, HOST_PHYS_LIMIT, Interrupt, IoPortRange, MAX_CPUS, MAX_DEVICES, PciAddress, PciEcam,
    PhysRange, RESET_RECORD_BYTES, X2APIC_BROADCAST, XAPIC_MAX_APIC_ID,
};
use crate::value::{Cx, KIB, Table, Value, check_name};

/// A range read from `{ base = ..., size = ... }`, with where its parts were written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawRange {
    pub range: PhysRange,
    pub base_at: Loc,
    pub size_at: Loc,
}

/// Reads `base` and `size` of `table`, checking size > 0, no overflow and `align`.
pub(crate) fn read_range(cx: &mut Cx<'_>, table: &Table<'_, '_>, align: u64) -> Option<RawRange> {
    let base_value = table.required(cx, "base");
    let size_value = table.required(cx, "size");
    let base = base_value.and_then(|v| cx.uint(v, "base", u64::MAX));
    let size = size_value.and_then(|v| cx.size(v, "size"));
    let (base_value, size_value, base, size) = (base_value?, size_value?, base?, size?);
    check_range(cx, base_value, size_value, base, size, align, table.what)
}

/// The checks shared by every `base`/`size` pair.
pub(crate) fn check_range(
    cx: &mut Cx<'_>,
    base_value: &Value<'_>,
    size_value: &Value<'_>,
    base: u64,
    size: u64,
    align: u64,
    what: &str,
) -> Option<RawRange> {
    let mut ok = true;
    if size == 0 {
        cx.error(&size_value.span(), rule::MEMORY_ZERO_SIZE, format!("{what} has size 0"));
        ok = false;
    }
    if base.checked_add(size).is_none() {
        cx.error(
            &size_value.span(),
            rule::ADDRESS_OVERFLOW,
            format!("{what} [{base:#x} + {size:#x}) runs past the end of the 64-bit address space"),
        );
        ok = false;
    }
    if align > 1 {
        if !base.is_multiple_of(align) {
            cx.error_hint(
                &base_value.span(),
                rule::MEMORY_MISALIGNED,
                format!("{what} base {base:#x} is not {} aligned", show_size(align)),
                format!("use a multiple of {align:#x}"),
            );
            ok = false;
        }
        if !size.is_multiple_of(align) {
            cx.error_hint(
                &size_value.span(),
                rule::MEMORY_MISALIGNED,
                format!("{what} size {size:#x} is not a multiple of {}", show_size(align)),
                format!("use a multiple of {align:#x}"),
            );
            ok = false;
        }
    }
    ok.then(|| RawRange { range: PhysRange { base, size }, base_at: cx.at(base_value), size_at: cx.at(size_value) })
}

/// "16 MiB", "4 KiB", "0x1234 bytes": sizes as people write them.
pub(crate) fn show_size(size: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (KIB, "KiB")];
    for (scale, unit) in UNITS {
        if size >= scale && size.is_multiple_of(scale) {
            return format!("{} {unit}", size / scale);
        }
    }
    format!("{size:#x} bytes")
}

/// A board as read (what could be read; problems are in the sink).
pub(crate) struct RawBoard {
    pub board: Board,
    /// Where `[watchdog]` is, when the board has one (the monitor needs a core for it).
    pub watchdog_at: Option<Loc>,
}

pub(crate) const BOARD_KEYS: &[&str] = &[
    "name",
    "description",
    "console_port",
    "x2apic",
    "cpu",
    "ram",
    "reserved",
    "device",
    "iommu",
    "ioapic",
    "pci_ecam",
    "watchdog",
    "reset_record",
];
pub(crate) const WATCHDOG_KEYS: &[&str] = &["kind", "device", "timeout_ms"];
pub(crate) const RESET_RECORD_KEYS: &[&str] = &["kind", "offset"];
/// `[watchdog] timeout_ms` when the board file leaves it out: long enough that a loaded
/// emulator, whose monitor core may be descheduled for a while, does not reset the board by
/// accident; short enough that a hung system is reset within about a second.
pub const DEFAULT_BOARD_WATCHDOG_TIMEOUT_MS: u32 = 1000;
/// The longest `[watchdog] timeout_ms`: 10 minutes.
pub const MAX_BOARD_WATCHDOG_TIMEOUT_MS: u32 = 600_000;
/// CMOS RAM the reset record may use: 0x00-0x0D are the clock and its status registers A-D
/// (MC146818A data sheet, "Address Map"), 0x7F the last byte of the standard 128-byte bank
/// that every PC RTC has.
pub const CMOS_RECORD_FIRST: u8 = 0x0e;
pub const CMOS_RECORD_LAST: u8 = 0x7f;
pub(crate) const CPU_KEYS: &[&str] = &["core", "apic_id", "boot"];
pub(crate) const RANGE_KEYS: &[&str] = &["base", "size", "comment"];
pub(crate) const DEVICE_KEYS: &[&str] =
    &["name", "description", "pci", "bars", "io_ports", "mmio", "interrupts", "hide_capabilities"];
pub(crate) const PCI_KEYS: &[&str] = &["segment", "bus", "device", "function"];
pub(crate) const BAR_KEYS: &[&str] = &["index", "base", "size", "kind"];
pub(crate) const PORT_KEYS: &[&str] = &["base", "count"];
pub(crate) const IOMMU_KEYS: &[&str] = &["name", "base", "size", "devices", "include_all"];
pub(crate) const IOAPIC_KEYS: &[&str] = &["name", "id", "base", "gsi_base", "pins"];
pub(crate) const MSI_KEYS: &[&str] = &["msi"];
/// PCI capability IDs by the names `hide_capabilities` accepts (PCI Code and ID Assignment
/// Specification 1.11, 2).
pub(crate) const CAPABILITY_NAMES: &[(&str, u8)] = &[
    ("pm", 0x01),
    ("agp", 0x02),
    ("vpd", 0x03),
    ("slot-id", 0x04),
    ("msi", 0x05),
    ("hot-swap", 0x06),
    ("pci-x", 0x07),
    ("hypertransport", 0x08),
    ("vendor", 0x09),
    ("debug-port", 0x0a),
    ("bridge-subsystem", 0x0d),
    ("pcie", 0x10),
    ("msix", 0x11),
    ("sata", 0x12),
    ("af", 0x13),
];

/// Reads a board file's root table. Returns what could be read even when some of it is
/// broken; the problems are in the sink.
pub(crate) fn read_board(cx: &mut Cx<'_>, root: &Table<'_, '_>, file: &std::path::Path) -> RawBoard {
    let name = root.required(cx, "name").and_then(|v| cx.string(v, "name")).unwrap_or_default().to_owned();
    if let Some(v) = root.get("description") {
        cx.string(v, "description");
    }
    let console_port = root
        .required(cx, "console_port")
        .and_then(|v| cx.uint(v, "console_port", u64::from(u16::MAX)))
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or(0);

    let x2apic_value = root.get("x2apic");
    let x2apic = x2apic_value.and_then(|v| cx.boolean(v, "x2apic")).unwrap_or(false);

    let mut cpus = Vec::new();
    let mut cpu_at = Vec::new();
    for table in root.tables(cx, "cpu", "[[cpu]]", CPU_KEYS) {
        let core = table.required(cx, "core");
        let apic = table.required(cx, "apic_id");
        let core_n = core.and_then(|v| cx.uint(v, "core", u64::from(u32::MAX)));
        let apic_n = apic.and_then(|v| cx.uint(v, "apic_id", u64::from(u32::MAX)));
        let boot = table.get("boot").and_then(|v| cx.boolean(v, "boot")).unwrap_or(false);
        if let (Some(v), Some(n)) = (core, core_n)
            && n >= MAX_CPUS as u64
        {
            cx.error(
                &v.span(),
                rule::CPU_CORE_RANGE,
                format!(
                    "core {n} is not below MAX_CPUS = {MAX_CPUS}: the hypervisor indexes per-core state by core number"
                ),
            );
        }
        if let (Some(v), Some(n)) = (apic, apic_n) {
            check_apic_id(cx, v, n, x2apic, x2apic_value.is_some());
        }
        if let (Some(core), Some(core_n), Some(apic_n)) = (core, core_n, apic_n) {
            cpus.push(BoardCpu {
                core: u32::try_from(core_n).unwrap_or(u32::MAX),
                apic_id: u32::try_from(apic_n).unwrap_or(u32::MAX),
                boot,
            });
            cpu_at.push(cx.at(core));
        }
    }
    check_cpus(cx, root, &cpus, &cpu_at);

    let ram = read_ranges(cx, root, "ram", "RAM range");
    let reserved = read_ranges(cx, root, "reserved", "reserved range");
    for r in ram.iter().chain(&reserved) {
        if r.range.end_checked() > u128::from(HOST_PHYS_LIMIT) {
            cx.sink.error(
                r.base_at,
                rule::ADDRESS_RANGE,
                format!("board range {} ends above 2^52, the most a physical address has", show_range(&r.range)),
            );
        }
    }
    for (i, a) in ram.iter().enumerate() {
        for b in ram.iter().skip(i + 1) {
            if a.range.overlaps_checked(&b.range) {
                cx.sink.error(
                    b.base_at,
                    rule::BOARD_RANGE_OVERLAP,
                    format!("RAM range {} overlaps RAM range {}", show_range(&b.range), show_range(&a.range)),
                );
            }
        }
    }

    let mut devices = Vec::new();
    let mut device_at = Vec::new();
    let mut resources: Vec<(Resource, Loc, usize)> = Vec::new();
    // Names by entry, including entries dropped for a bad name (for messages only).
    let mut entry_names: Vec<String> = Vec::new();
    for (index, table) in root.tables(cx, "device", "[[device]]", DEVICE_KEYS).iter().enumerate() {
        let name = table.required(cx, "name").and_then(|v| check_name(cx, v, "name").map(|n| (n, cx.at(v))));
        let device = read_device(cx, table, &mut resources, index);
        entry_names.push(name.as_ref().map_or_else(|| "?".to_owned(), |(n, _)| n.clone()));
        if let Some((name, at)) = name {
            devices.push(Device { name, ..device });
            device_at.push(at);
        }
    }
    check_device_resources(cx, &resources, &entry_names);
    check_unique(cx, devices.iter().map(|d| d.name.as_str()), &device_at, "device");
    if devices.len() > MAX_DEVICES {
        let at = device_at.get(MAX_DEVICES).copied().unwrap_or(cx.loc(&root.span));
        cx.sink.error(
            at,
            rule::LIMIT_EXCEEDED,
            format!("the board lists {} devices; the limit is MAX_DEVICES = {MAX_DEVICES}", devices.len()),
        );
    }

    let mut iommus = Vec::new();
    let mut iommu_at = Vec::new();
    for table in root.tables(cx, "iommu", "[[iommu]]", IOMMU_KEYS) {
        let name = table.required(cx, "name").and_then(|v| check_name(cx, v, "name").map(|n| (n, cx.at(v))));
        let range = read_range(cx, &table, 4 * KIB);
        let scope = read_iommu_scope(cx, &table, &devices);
        if let (Some((name, at)), Some(range), Some(scope)) = (name, range, scope) {
            iommus.push(Iommu { name, registers: range.range, scope });
            iommu_at.push(at);
        }
    }
    check_unique(cx, iommus.iter().map(|d| d.name.as_str()), &iommu_at, "IOMMU");

    let mut ioapics = Vec::new();
    let mut ioapic_at = Vec::new();
    for table in root.tables(cx, "ioapic", "[[ioapic]]", IOAPIC_KEYS) {
        let name = table.required(cx, "name").and_then(|v| check_name(cx, v, "name").map(|n| (n, cx.at(v))));
        let id = table.required(cx, "id").and_then(|v| cx.uint(v, "id", 0xff));
        let base_v = table.required(cx, "base");
        let base = base_v.and_then(|v| cx.uint(v, "base", u64::MAX));
        if let (Some(v), Some(b)) = (base_v, base)
            && (b % (4 * KIB) != 0
                || b.checked_add(4 * KIB).is_none_or(|e| u128::from(e) > u128::from(HOST_PHYS_LIMIT)))
        {
            cx.error(
                &v.span(),
                rule::MEMORY_MISALIGNED,
                format!("IOAPIC base {b:#x} is not a 4 KiB-aligned physical address"),
            );
        }
        let gsi_base = table.get("gsi_base").map_or(Some(0), |v| cx.uint(v, "gsi_base", u64::from(u32::MAX)));
        let pins = table.get("pins").map_or(Some(24), |v| cx.uint(v, "pins", 240));
        if let (Some((name, at)), Some(id), Some(base), Some(gsi_base), Some(pins)) = (name, id, base, gsi_base, pins) {
            ioapics.push(IoApic {
                name,
                id: u8::try_from(id).unwrap_or(0),
                base,
                gsi_base: u32::try_from(gsi_base).unwrap_or(0),
                pins: u8::try_from(pins).unwrap_or(0),
            });
            ioapic_at.push(at);
        }
    }
    check_unique(cx, ioapics.iter().map(|d| d.name.as_str()), &ioapic_at, "IOAPIC");
    for (i, a) in ioapics.iter().enumerate() {
        for b in ioapics.iter().skip(i + 1) {
            let (a_end, b_end) = (u64::from(a.gsi_base) + u64::from(a.pins), u64::from(b.gsi_base) + u64::from(b.pins));
            if u64::from(a.gsi_base) < b_end && u64::from(b.gsi_base) < a_end {
                let at = ioapic_at.get(i + 1).copied().unwrap_or(cx.loc(&root.span));
                cx.sink.error(
                    at,
                    rule::DEVICE_RESOURCE_OVERLAP,
                    format!("IOAPICs `{}` and `{}` claim overlapping GSIs", a.name, b.name),
                );
            }
        }
    }

    let pci_ecam = root.get("pci_ecam").and_then(|v| cx.table(v, "pci_ecam", "pci_ecam", RANGE_KEYS)).and_then(|t| {
        let range = read_range(cx, &t, crate::value::MIB)?;
        let buses = range.range.size >> 20;
        if !(1..=256).contains(&buses) {
            cx.sink.error(
                range.size_at,
                rule::INVALID_VALUE,
                format!("an ECAM window of {:#x} bytes is not 1 to 256 buses of 1 MiB", range.range.size),
            );
            return None;
        }
        Some(PciEcam { base: range.range.base, buses: u16::try_from(buses).unwrap_or(256) })
    });
    check_pci_functions(cx, &devices, &device_at);

    let watchdog_at = root.get("watchdog").map(|_| cx.loc(&root.key_span("watchdog")));
    let watchdog = root
        .get("watchdog")
        .and_then(|v| cx.table(v, "watchdog", "[watchdog]", WATCHDOG_KEYS))
        .and_then(|t| read_watchdog(cx, &t, &devices));
    let reset_record = root
        .get("reset_record")
        .and_then(|v| cx.table(v, "reset_record", "[reset_record]", RESET_RECORD_KEYS))
        .and_then(|t| read_reset_record(cx, &t));

    RawBoard {
        board: Board {
            name,
            file: file.to_owned(),
            cpus,
            ram: ram.iter().map(|r| r.range).collect(),
            reserved: reserved.iter().map(|r| r.range).collect(),
            devices,
            iommus,
            ioapics,
            pci_ecam,
            console_port,
            x2apic,
            watchdog,
            reset_record,
        },
        watchdog_at,
    }
}

/// `[watchdog]`: the board's hardware watchdog, one of the board's `[[device]]`s: a PCI
/// function whose registers the hypervisor reaches through a memory BAR (the 6300ESB
/// watchdog's registers are memory-mapped through BAR 0 of its PCI function).
fn read_watchdog(cx: &mut Cx<'_>, table: &Table<'_, '_>, devices: &[Device]) -> Option<BoardWatchdog> {
    let kind = table.required(cx, "kind").and_then(|v| match cx.string(v, "kind")? {
        "i6300esb" => Some(BoardWatchdogKind::I6300esb),
        other => {
            cx.error_hint(
                &v.span(),
                rule::INVALID_VALUE,
                format!("unknown watchdog kind {other:?}"),
                "the board watchdog's kind is \"i6300esb\" (the Intel 6300ESB watchdog timer; QEMU `-device i6300esb`)",
            );
            None
        }
    });
    let device = table.required(cx, "device").and_then(|v| {
        let name = cx.string(v, "device")?;
        let Some(index) = devices.iter().position(|d| d.name == name) else {
            let known: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
            cx.error_hint(
                &v.span(),
                rule::DEVICE_UNKNOWN,
                format!("the board has no device `{name}` for its watchdog"),
                if known.is_empty() {
                    "describe the watchdog as a [[device]] with its `pci` address and memory BAR".to_owned()
                } else {
                    format!("the board's devices are: {}", known.join(", "))
                },
            );
            return None;
        };
        let device = devices.get(index)?;
        let why = match (device.pci, device.bars.iter().any(|b| b.memory)) {
            (None, _) => Some("is not a PCI function (it has no `pci` address)"),
            (Some(_), false) => Some("has no memory BAR"),
            (Some(_), true) => None,
        };
        if let Some(why) = why {
            cx.error_hint(
                &v.span(),
                rule::BOARD_WATCHDOG,
                format!("watchdog device `{name}` {why}: the hypervisor drives the watchdog through its memory BAR"),
                "give the device its `pci` address and its memory BAR as the firmware programmed it (`bars = [{ index = 0, base = ..., size = \"4 KiB\" }]`)",
            );
            return None;
        }
        u8::try_from(index).ok().map(DeviceId)
    });
    let timeout_ms = match table.get("timeout_ms") {
        None => Some(DEFAULT_BOARD_WATCHDOG_TIMEOUT_MS),
        Some(v) => {
            let n = cx.uint(v, "timeout_ms", u64::from(MAX_BOARD_WATCHDOG_TIMEOUT_MS))?;
            if n == 0 {
                cx.error_hint(
                    &v.span(),
                    rule::INVALID_VALUE,
                    "timeout_ms = 0 would reset the board at once",
                    format!("give the watchdog's timeout in milliseconds, 1 to {MAX_BOARD_WATCHDOG_TIMEOUT_MS}"),
                );
                return None;
            }
            u32::try_from(n).ok()
        }
    };
    Some(BoardWatchdog { kind: kind?, device: device?, timeout_ms: timeout_ms? })
}

/// `[reset_record]`: where the reason for a board reset survives it.
fn read_reset_record(cx: &mut Cx<'_>, table: &Table<'_, '_>) -> Option<ResetRecord> {
    let kind = table.required(cx, "kind").and_then(|v| match cx.string(v, "kind")? {
        "cmos" => Some(()),
        other => {
            cx.error_hint(
                &v.span(),
                rule::INVALID_VALUE,
                format!("unknown reset record kind {other:?}"),
                "the reset record's kind is \"cmos\" (bytes of the RTC's battery-backed CMOS RAM)",
            );
            None
        }
    });
    let offset = table.required(cx, "offset").and_then(|v| {
        let n = cx.uint(v, "offset", u64::from(u8::MAX))?;
        let last = n + u64::from(RESET_RECORD_BYTES) - 1;
        if n < u64::from(CMOS_RECORD_FIRST) || last > u64::from(CMOS_RECORD_LAST) {
            cx.error_hint(
                &v.span(),
                rule::INVALID_VALUE,
                format!(
                    "a reset record at CMOS offset {n:#04x} takes bytes {n:#04x}..={last:#04x}, outside {CMOS_RECORD_FIRST:#04x}..={CMOS_RECORD_LAST:#04x}"
                ),
                format!(
                    "0x00-0x0d are the clock and its status registers and the standard CMOS bank ends at 0x7f: give an offset from {CMOS_RECORD_FIRST:#04x} to {:#04x} that the firmware does not use",
                    CMOS_RECORD_LAST - RESET_RECORD_BYTES + 1
                ),
            );
            return None;
        }
        u8::try_from(n).ok()
    });
    kind?;
    Some(ResetRecord::Cmos { offset: offset? })
}

/// An APIC ID the hypervisor can send interrupts to (INIT/SIPI at start-up, IPIs between
/// cores): [`XAPIC_MAX_APIC_ID`] at most on an xAPIC, anything but the broadcast on an x2APIC.
fn check_apic_id(cx: &mut Cx<'_>, value: &Value<'_>, apic_id: u64, x2apic: bool, x2apic_given: bool) {
    if x2apic && apic_id == u64::from(X2APIC_BROADCAST) {
        cx.error_hint(
            &value.span(),
            rule::CPU_APIC_ID_RANGE,
            format!("APIC ID {apic_id:#x} is the x2APIC broadcast destination, not a CPU"),
            "use the APIC IDs the firmware's MADT reports",
        );
    } else if !x2apic && apic_id > u64::from(XAPIC_MAX_APIC_ID) {
        let why =
            if x2apic_given { "the board says `x2apic = false`" } else { "the board does not say `x2apic = true`" };
        cx.error_hint(
            &value.span(),
            rule::CPU_APIC_ID_RANGE,
            format!(
                "APIC ID {apic_id:#x} is above {XAPIC_MAX_APIC_ID:#x} and {why}: an xAPIC cannot be sent an interrupt at it (8-bit destination, 0xff = every CPU)"
            ),
            "if the board's CPUs have an x2APIC (they must, to have this ID), add `x2apic = true` to the board file",
        );
    }
}

fn check_cpus(cx: &mut Cx<'_>, root: &Table<'_, '_>, cpus: &[BoardCpu], cpu_at: &[Loc]) {
    let root_at = cx.loc(&root.key_span("cpu"));
    for (i, cpu) in cpus.iter().enumerate() {
        let at = cpu_at.get(i).copied().unwrap_or(root_at);
        if let Some(first) = cpus.iter().take(i).find(|c| c.core == cpu.core) {
            cx.sink.error_hint(
                at,
                rule::CPU_DUPLICATE,
                format!("the board lists core {} twice", first.core),
                "each [[cpu]] needs its own `core` number",
            );
        }
        if let Some(first) = cpus.iter().take(i).find(|c| c.apic_id == cpu.apic_id) {
            cx.sink.error_hint(
                at,
                rule::CPU_DUPLICATE,
                format!("the board lists APIC ID {} twice", first.apic_id),
                "each [[cpu]] needs its own `apic_id`",
            );
        }
    }
    let boots: Vec<Loc> = cpus.iter().zip(cpu_at).filter(|(c, _)| c.boot).map(|(_, at)| *at).collect();
    match boots.as_slice() {
        [_] => {}
        [] => cx.sink.error(root_at, rule::CPU_NO_BOOT, "no [[cpu]] has `boot = true`"),
        [_, more @ ..] => {
            for at in more {
                cx.sink.error(*at, rule::CPU_NO_BOOT, "more than one [[cpu]] has `boot = true`");
            }
        }
    }
    if cpus.len() > MAX_CPUS {
        let at = cpu_at.get(MAX_CPUS).copied().unwrap_or(root_at);
        cx.sink.error(
            at,
            rule::LIMIT_EXCEEDED,
            format!("the board lists {} CPUs; the limit is MAX_CPUS = {MAX_CPUS}", cpus.len()),
        );
    }
}

fn read_ranges(cx: &mut Cx<'_>, root: &Table<'_, '_>, key: &str, what: &'static str) -> Vec<RawRange> {
    let mut out = Vec::new();
    for table in root.tables(cx, key, what, RANGE_KEYS) {
        if let Some(v) = table.get("comment") {
            cx.string(v, "comment");
        }
        if let Some(range) = read_range(cx, &table, 4 * KIB) {
            out.push(range);
        }
    }
    out
}

/// One resource a device claims, for the overlap check.
#[derive(Debug, Clone, Copy)]
enum Resource {
    Ports(u32, u32),
    Memory(PhysRange),
}

fn read_device(
    cx: &mut Cx<'_>,
    table: &Table<'_, '_>,
    resources: &mut Vec<(Resource, Loc, usize)>,
    index: usize,
) -> Device {
    if let Some(v) = table.get("description") {
        cx.string(v, "description");
    }
    let pci = table.get("pci").and_then(|v| cx.table(v, "pci", "pci", PCI_KEYS)).and_then(|t| {
        let segment = t.get("segment").map_or(Some(0), |v| cx.uint(v, "segment", 0xffff));
        let bus = t.required(cx, "bus").and_then(|v| cx.uint(v, "bus", 0xff));
        let device = t.required(cx, "device").and_then(|v| cx.uint(v, "device", 31));
        let function = t.required(cx, "function").and_then(|v| cx.uint(v, "function", 7));
        Some(PciAddress {
            segment: u16::try_from(segment?).ok()?,
            bus: u8::try_from(bus?).ok()?,
            device: u8::try_from(device?).ok()?,
            function: u8::try_from(function?).ok()?,
        })
    });

    let mut bars = Vec::new();
    for bar in table.tables(cx, "bars", "BAR", BAR_KEYS) {
        let index_n = bar.required(cx, "index").and_then(|v| cx.uint(v, "index", 5));
        let memory = match bar.get("kind") {
            None => Some(true),
            Some(v) => match cx.string(v, "kind") {
                Some("memory") => Some(true),
                Some("io") => Some(false),
                Some(other) => {
                    cx.error_hint(
                        &v.span(),
                        rule::INVALID_VALUE,
                        format!("unknown BAR kind {other:?}"),
                        "a BAR `kind` is \"memory\" or \"io\"",
                    );
                    None
                }
                None => None,
            },
        };
        let align = if memory == Some(false) { 1 } else { 4 * KIB };
        let range = read_range(cx, &bar, align);
        if let (Some(index_n), Some(memory), Some(range)) = (index_n, memory, range) {
            let resource = if memory {
                Some(Resource::Memory(range.range))
            } else {
                port_span(cx, range.range.base, range.range.size, range.size_at).map(|(a, b)| Resource::Ports(a, b))
            };
            if let Some(resource) = resource {
                resources.push((resource, range.base_at, index));
                bars.push(Bar { index: u8::try_from(index_n).unwrap_or(0), range: range.range, memory });
            }
        }
    }

    let mut io_ports = Vec::new();
    for ports in table.tables(cx, "io_ports", "I/O port range", PORT_KEYS) {
        let base_v = ports.required(cx, "base");
        let count_v = ports.required(cx, "count");
        let base = base_v.and_then(|v| cx.uint(v, "base", 0xffff));
        let count = count_v.and_then(|v| cx.uint(v, "count", 0x1_0000));
        if let (Some(base_v), Some(count_v), Some(base), Some(count)) = (base_v, count_v, base, count) {
            if count == 0 {
                cx.error(&count_v.span(), rule::MEMORY_ZERO_SIZE, "I/O port range has count 0");
            } else if let Some((start, end)) = port_span(cx, base, count, cx.at(count_v)) {
                resources.push((Resource::Ports(start, end), cx.at(base_v), index));
                io_ports.push(IoPortRange {
                    base: u16::try_from(base).unwrap_or(0),
                    count: u16::try_from(count).unwrap_or(u16::MAX),
                });
            }
        }
    }

    let mut mmio = Vec::new();
    for range_table in table.tables(cx, "mmio", "MMIO range", RANGE_KEYS) {
        if let Some(range) = read_range(cx, &range_table, 4 * KIB) {
            resources.push((Resource::Memory(range.range), range.base_at, index));
            mmio.push(range.range);
        }
    }

    let mut interrupts = Vec::new();
    if let Some(list) = table.get("interrupts").and_then(|v| cx.array(v, "interrupts")) {
        for item in list {
            match item.get_ref() {
                toml::de::DeValue::String(s) if s.as_ref() == "msi" => interrupts.push(Interrupt::Msi { messages: 1 }),
                toml::de::DeValue::Table(_) => {
                    let messages = cx
                        .table(item, "interrupts", "MSI interrupt", MSI_KEYS)
                        .and_then(|t| t.required(cx, "msi"))
                        .and_then(|v| cx.uint(v, "msi", 32).map(|n| (n, v)));
                    if let Some((n, v)) = messages {
                        if n.is_power_of_two() {
                            interrupts.push(Interrupt::Msi { messages: u8::try_from(n).unwrap_or(1) });
                        } else {
                            cx.error_hint(
                                &v.span(),
                                rule::MSI_VECTORS,
                                format!("{n} MSI messages: MSI grants 1, 2, 4, 8, 16 or 32"),
                                "PCI Local Bus 3.0, 6.8.1.3: Multiple Message Capable is a power of two up to 32",
                            );
                        }
                    }
                }
                toml::de::DeValue::String(s) => cx.error_hint(
                    &item.span(),
                    rule::INVALID_VALUE,
                    format!("unknown interrupt {s:?}"),
                    "an interrupt is a GSI number (IOAPIC line), \"msi\" or { msi = MESSAGES }",
                ),
                _ => {
                    if let Some(line) = cx.uint(item, "interrupts", 255) {
                        interrupts.push(Interrupt::Line(u32::try_from(line).unwrap_or(0)));
                    }
                }
            }
        }
    }
    let mut hidden_capabilities = Vec::new();
    if let Some(list) = table.get("hide_capabilities").and_then(|v| cx.array(v, "hide_capabilities")) {
        for item in list {
            match item.get_ref() {
                toml::de::DeValue::String(s) => match CAPABILITY_NAMES.iter().find(|(n, _)| *n == s.as_ref()) {
                    Some((_, id)) => hidden_capabilities.push(*id),
                    None => {
                        let names: Vec<&str> = CAPABILITY_NAMES.iter().map(|(n, _)| *n).collect();
                        cx.error_hint(
                            &item.span(),
                            rule::INVALID_VALUE,
                            format!("unknown PCI capability {s:?}"),
                            format!("name one of {} or give its ID as a number", names.join(", ")),
                        );
                    }
                },
                _ => {
                    if let Some(id) = cx.uint(item, "hide_capabilities", 0xff) {
                        hidden_capabilities.push(u8::try_from(id).unwrap_or(0));
                    }
                }
            }
        }
        if pci.is_none() && !hidden_capabilities.is_empty() {
            cx.error(
                &table.key_span("hide_capabilities"),
                rule::INVALID_VALUE,
                "`hide_capabilities` applies to PCI functions only; this device has no `pci` address",
            );
        }
    }
    if pci.is_none() && interrupts.iter().any(|i| matches!(i, Interrupt::Msi { .. })) {
        cx.error(
            &table.key_span("interrupts"),
            rule::INVALID_VALUE,
            "MSI needs a PCI function; this device has no `pci` address",
        );
    }
    Device { name: String::new(), pci, bars, io_ports, mmio, interrupts, hidden_capabilities }
}

/// `devices = [...]` or `include_all = true` of an `[[iommu]]` (exactly one of them).
fn read_iommu_scope(cx: &mut Cx<'_>, table: &Table<'_, '_>, devices: &[Device]) -> Option<IommuScope> {
    let all = table.get("include_all").and_then(|v| cx.boolean(v, "include_all"));
    let listed = table.get("devices").and_then(|v| cx.array(v, "devices"));
    match (all, listed) {
        (Some(true), None) => Some(IommuScope::All),
        (Some(true), Some(_)) => {
            cx.error(
                &table.key_span("devices"),
                rule::INVALID_VALUE,
                "give `devices` or `include_all = true`, not both",
            );
            None
        }
        (_, Some(items)) => {
            let mut ids = Vec::new();
            for item in items {
                let Some(name) = cx.string(item, "devices") else { continue };
                match devices.iter().position(|d| d.name == name) {
                    Some(i) if devices.get(i).is_some_and(|d| d.pci.is_some()) => {
                        ids.push(DeviceId(u8::try_from(i).unwrap_or(u8::MAX)))
                    }
                    Some(_) => cx.error(
                        &item.span(),
                        rule::INVALID_VALUE,
                        format!("device `{name}` is not a PCI function; an IOMMU translates PCI functions' DMA"),
                    ),
                    None => cx.error(&item.span(), rule::DEVICE_UNKNOWN, format!("the board has no device `{name}`")),
                }
            }
            Some(IommuScope::Devices(ids))
        }
        (_, None) => {
            cx.error_hint(
                &table.span,
                rule::MISSING_KEY,
                "[[iommu]] says neither which devices it translates (`devices`) nor `include_all = true`",
                "copy the scope from the firmware's DMAR table (DRHD device scope, or INCLUDE_PCI_ALL)",
            );
            None
        }
    }
}

/// Two devices at one PCI address.
fn check_pci_functions(cx: &mut Cx<'_>, devices: &[Device], at: &[Loc]) {
    for (i, d) in devices.iter().enumerate() {
        let Some(pci) = d.pci else { continue };
        if let Some(first) = devices.iter().take(i).find(|e| e.pci == Some(pci))
            && let Some(loc) = at.get(i)
        {
            cx.sink.error(
                *loc,
                rule::PCI_FUNCTION,
                format!("devices `{}` and `{}` are both at PCI address {}", first.name, d.name, show_bdf(&pci)),
            );
        }
    }
}

/// `0000:00:04.0`, as lspci prints it.
pub(crate) fn show_bdf(pci: &PciAddress) -> String {
    format!("{:04x}:{:02x}:{:02x}.{}", pci.segment, pci.bus, pci.device, pci.function)
}

/// `[base, base + count)` of an I/O port range, if it stays below 0x10000.
fn port_span(cx: &mut Cx<'_>, base: u64, count: u64, at: Loc) -> Option<(u32, u32)> {
    let end = base.checked_add(count).filter(|&e| e <= 0x1_0000);
    if end.is_none() {
        cx.sink.error(at, rule::ADDRESS_OVERFLOW, format!("I/O ports {base:#x} + {count:#x} run past port 0xffff"));
    }
    let start = u32::try_from(base).ok()?;
    let end = u32::try_from(end?).ok()?;
    Some((start, end))
}

fn check_device_resources(cx: &mut Cx<'_>, resources: &[(Resource, Loc, usize)], names: &[String]) {
    let name = |i: usize| names.get(i).map_or("?", String::as_str);
    for (i, (a, _, da)) in resources.iter().enumerate() {
        for (b, at, db) in resources.iter().skip(i + 1) {
            if da == db {
                continue;
            }
            let clash = match (a, b) {
                (Resource::Ports(s1, e1), Resource::Ports(s2, e2)) => s1 < e2 && s2 < e1,
                (Resource::Memory(r1), Resource::Memory(r2)) => r1.overlaps_checked(r2),
                _ => false,
            };
            if clash {
                cx.sink.error(
                    *at,
                    rule::DEVICE_RESOURCE_OVERLAP,
                    format!("device `{}` claims resources that device `{}` also claims", name(*db), name(*da)),
                );
            }
        }
    }
}

/// Reports every name that repeats an earlier one.
pub(crate) fn check_unique<'n>(cx: &mut Cx<'_>, names: impl Iterator<Item = &'n str>, at: &[Loc], what: &str) {
    let names: Vec<&str> = names.collect();
    for (i, name) in names.iter().enumerate() {
        if names.iter().take(i).any(|n| n == name)
            && let Some(loc) = at.get(i)
        {
            cx.sink.error(*loc, rule::DUPLICATE_NAME, format!("there is already a {what} named `{name}`"));
        }
    }
}

/// `[0x100000, 0x800000)`.
pub(crate) fn show_range(range: &PhysRange) -> String {
    match range.base.checked_add(range.size) {
        Some(end) => format!("[{:#x}, {end:#x})", range.base),
        None => format!("[{:#x}, +{:#x})", range.base, range.size),
    }
}

/// Overlap tests that cannot overflow (the tables' `PhysRange::end` adds unchecked).
pub(crate) trait RangeExt {
    fn end_checked(&self) -> u128;
    fn overlaps_checked(&self, other: &PhysRange) -> bool;
}

impl RangeExt for PhysRange {
    fn end_checked(&self) -> u128 {
        u128::from(self.base) + u128::from(self.size)
    }

    fn overlaps_checked(&self, other: &PhysRange) -> bool {
        u128::from(self.base) < other.end_checked() && u128::from(other.base) < self.end_checked()
    }
}
