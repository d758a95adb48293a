//! Diagnostics: every problem found in a configuration, with its place in the file.
//!
//! Checks never stop at the first problem. They push into a `Sink` with a byte offset into
//! one of the loaded files; only when loading ends are offsets turned into `line:col`, the
//! list sorted by position and handed out as [`Diagnostics`]. Each problem carries a stable
//! rule name (see [`RULES`]) so tests, CI logs and the documentation can refer to it.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// Stable rule name, one of [`RULES`].
    pub rule: &'static str,
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}:{}:{}: [{}] {}", self.file.display(), self.line, self.col, self.rule, self.message)?;
        writeln!(f, "  hint: {}", self.hint)
    }
}

impl Diagnostic {
    /// The warning form: `file:line:col: warning: [rule] message` and the hint.
    pub fn warning(&self) -> String {
        format!(
            "{}:{}:{}: warning: [{}] {}\n  hint: {}\n",
            self.file.display(),
            self.line,
            self.col,
            self.rule,
            self.message,
            self.hint
        )
    }
}

/// Every problem found while loading a configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics {
    errors: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn errors(&self) -> &[Diagnostic] {
        &self.errors
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for error in &self.errors {
            write!(f, "{error}")?;
        }
        match self.errors.len() {
            1 => writeln!(f, "1 error"),
            n => writeln!(f, "{n} errors"),
        }
    }
}

impl std::error::Error for Diagnostics {}

/// A validation rule: its stable name, what triggers it and the default hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub name: &'static str,
    pub trigger: &'static str,
    pub hint: &'static str,
}

macro_rules! rules {
    ($($konst:ident = $name:literal: $trigger:literal, $hint:literal;)*) => {
        /// Rule names, as constants so checks cannot misspell them.
        pub mod rule {
            $(pub const $konst: &str = $name;)*
        }
        /// Every rule, in the order `docs/config.md` lists them.
        pub const RULES: &[Rule] = &[$(Rule { name: $name, trigger: $trigger, hint: $hint }),*];
    };
}

rules! {
    TOML_SYNTAX = "toml-syntax":
        "the file is not valid TOML (including duplicate keys and non-UTF-8 bytes)",
        "fix the TOML syntax at this position";
    FILE_UNREADABLE = "file-unreadable":
        "the system file or the board file exists but cannot be read (a directory, a special file, too large, no permission)",
        "check that the path names a regular, readable file";
    UNKNOWN_KEY = "unknown-key":
        "a key that the schema does not define at that place",
        "remove the key or fix its spelling (see docs/config.md)";
    TYPE_MISMATCH = "type-mismatch":
        "a value of the wrong TOML type (a string where an integer belongs, a table where an array belongs, ...)",
        "see docs/config.md for the type of this key";
    MISSING_KEY = "missing-key":
        "a required key is absent",
        "add the key (see docs/config.md)";
    INVALID_VALUE = "invalid-value":
        "a value of the right type that is not allowed: an unknown enum word, a number out of range, a malformed size or name, an option that does not apply",
        "see docs/config.md for the allowed values";
    BOARD_NOT_FOUND = "board-not-found":
        "`board` names no file in board/boards/ (or the `.toml` path does not exist)",
        "use the name of a file in board/boards/ without `.toml`, or a path ending in `.toml` relative to the system file";
    DUPLICATE_NAME = "duplicate-name":
        "two partitions, devices, IOMMUs, shared memory regions or connections share a name, or a partition is listed twice as a sharer or twice in one `supervises`",
        "give every item a unique name";
    LIMIT_EXCEEDED = "limit-exceeded":
        "more CPUs, partitions, memory regions, devices, connections or shared regions than the build-time limits in board/src/tables.rs, a `cmdline` longer than MAX_CMDLINE_BYTES, or a partition whose address space needs more than SLAT_TABLES_PER_PARTITION second-level page tables",
        "reduce the count, or raise the limit in board/src/tables.rs and rebuild";
    CPU_UNKNOWN = "cpu-unknown":
        "a partition names a core that the board does not list",
        "use a `core` number from the board's [[cpu]] entries";
    CPU_DUPLICATE = "cpu-duplicate":
        "a core is given to two partitions (or twice to one), or the board lists a core number or APIC ID twice",
        "each core belongs to at most one partition; each board CPU needs its own core number and APIC ID";
    CPU_NO_BOOT = "cpu-no-boot":
        "the board marks no CPU, or more than one, with `boot = true`",
        "mark exactly one CPU (the one firmware starts on) with `boot = true`";
    CPU_CORE_RANGE = "cpu-core-range":
        "a board CPU's `core` is MAX_CPUS or more (the hypervisor keeps per-core state in arrays of MAX_CPUS, indexed by core number)",
        "number the board's cores from 0 to MAX_CPUS - 1 (board/src/tables.rs)";
    CPU_APIC_ID_RANGE = "cpu-apic-id-range":
        "a board CPU's `apic_id` cannot be sent an interrupt: above 0xFE on a board without `x2apic = true` (an xAPIC's destination is 8 bits and 0xFF means every CPU), or 0xFFFFFFFF (the x2APIC broadcast)",
        "use the APIC IDs the firmware's MADT reports; a board whose CPUs have APIC IDs above 0xFE has x2APICs: say `x2apic = true`";
    PARTITION_NO_CORES = "partition-no-cores":
        "a partition's `cores` is empty",
        "give the partition at least one core";
    PARTITION_NO_MEMORY = "partition-no-memory":
        "a partition has no [[partition.memory]] region",
        "add a [[partition.memory]] region for the payload to run in";
    MEMORY_ZERO_SIZE = "memory-zero-size":
        "a memory region, shared region or board range of size 0",
        "give the region a non-zero size";
    MEMORY_MISALIGNED = "memory-misaligned":
        "a base or size that is not a multiple of 4 KiB, or of 2 MiB where `large_pages = true`",
        "round the value to the required alignment";
    ADDRESS_OVERFLOW = "address-overflow":
        "`base + size` does not fit in 64 bits (16 for I/O ports)",
        "check base and size";
    ADDRESS_RANGE = "address-range":
        "a guest-physical range (a memory region, a shared region where a sharer maps it, the MMIO of an assigned device) ends above 2^48, the most 4-level EPT/NPT tables map; or a board RAM or reserved range ends above 2^52, the most a physical address has",
        "move the range below 2^48 (guest-physical) or 2^52 (board ranges)";
    MEMORY_OVERLAP_PARTITIONS = "memory-overlap-partitions":
        "two fixed host placements (regions of any partitions, or shared memory) overlap",
        "move one `host_base`, or leave it out to let the tool place the region";
    MEMORY_OVERLAP_HYPERVISOR = "memory-overlap-hypervisor":
        "a fixed host placement overlaps [hypervisor] reserved_memory",
        "place the region outside the hypervisor's reserved memory, or leave out `host_base`";
    HYPERVISOR_MEMORY = "hypervisor-memory":
        "[hypervisor] reserved_memory, from the kernel's link address (2 MiB) to its end, cannot hold the hypervisor's memory budget for this system (text, data, stacks, page tables and queues, all sized by the configuration; `cargo xtask check` prints it)",
        "make reserved_memory larger (it must also hold the boot modules GRUB places after the image), or use fewer CPUs, partitions, connections or smaller queues";
    MEMORY_OVERLAP_GUEST = "memory-overlap-guest":
        "two regions of one partition overlap in guest-physical space, an assigned device's MMIO overlaps the partition's memory or shared regions, or they cover the register page of an IOAPIC on which the partition owns a GSI",
        "give the regions disjoint `guest_base` ranges";
    MEMORY_OUTSIDE_RAM = "memory-outside-ram":
        "a fixed host placement is not entirely inside the board's RAM ranges",
        "choose a `host_base` inside the board's `ram`, or leave it out";
    MEMORY_IN_RESERVED = "memory-in-reserved":
        "a fixed host placement overlaps one of the board's reserved ranges",
        "choose a `host_base` outside the board's `reserved` ranges, or leave it out";
    MEMORY_NO_FIT = "memory-no-fit":
        "a region without `host_base` finds no free 2 MiB-aligned block in board RAM",
        "shrink the regions, or check the board's RAM and the hypervisor's reserved memory";
    BOARD_RANGE_OVERLAP = "board-range-overlap":
        "two `ram` ranges of the board overlap",
        "merge the ranges or make them disjoint";
    DEVICE_RESOURCE_OVERLAP = "device-resource-overlap":
        "two board devices claim overlapping I/O ports, MMIO ranges or BARs",
        "a resource belongs to one device; fix the board description";
    DEVICE_UNKNOWN = "device-unknown":
        "a partition assigns a device that the board does not list",
        "use a `name` from the board's [[device]] entries";
    DEVICE_DUPLICATE = "device-duplicate":
        "a device is assigned to two partitions, or twice to one",
        "assign each device to exactly one partition";
    PCI_FUNCTION = "pci-function":
        "a partition names a PCI function (`BB:DD.F`) that the board does not list, or the board lists one PCI address twice",
        "assign PCI functions by the board's device name or by an address the board lists, once each";
    GSI_SHARED = "gsi-shared":
        "one GSI (IOAPIC line) belongs to devices of two partitions, or an assigned device's GSI is on none of the board's IOAPICs",
        "a line can only interrupt one partition: assign both devices to one partition, or describe the IOAPIC that has the line";
    IOMMU_SCOPE = "iommu-scope":
        "a PCI function (it can master the bus) is assigned to a partition, no IOMMU of the board translates it, and the partition does not say `dma = \"unprotected\"`",
        "add the function to an [[iommu]]'s `devices` (as the firmware's DMAR table says), or accept unconfined DMA with `dma = \"unprotected\"`";
    MSI_VECTORS = "msi-vectors":
        "a device's MSI message count is not a power of two up to 32, or a partition's devices ask for more MSI vectors than its vCPUs can receive",
        "each vCPU receives vectors 0x20-0xFE (223); give fewer messages or more cores";
    CONSOLE_ASSIGNED = "console-assigned":
        "the hypervisor's console UART lies in the I/O ports of a device assigned to a partition",
        "assign another device, or move the console with [hypervisor] console_port";
    BOARD_WATCHDOG = "board-watchdog":
        "the board's `[watchdog]` names a device that is not a PCI function with a memory BAR, or a partition is assigned the watchdog's device (the board watchdog belongs to the hypervisor)",
        "describe the watchdog as a [[device]] with `pci` and a memory BAR, and assign it to no partition";
    RESET_RECORD = "reset-record":
        "the board records resets in CMOS (`[reset_record] kind = \"cmos\"`) and a partition is assigned a device whose I/O ports include the RTC's index or data port (0x70, 0x71)",
        "the hypervisor writes the reset record through ports 0x70/0x71: assign the RTC to no partition, or drop `[reset_record]` from the board";
    CONNECTION_UNKNOWN_PARTITION = "connection-unknown-partition":
        "a connection's `from` or `to` names no partition",
        "use the `name` of a [[partition]]";
    CONNECTION_SELF = "connection-self":
        "a connection goes from a partition to itself",
        "connections join two different partitions";
    CONNECTION_DUPLICATE_ID = "connection-duplicate-id":
        "two connections share an `id`",
        "give every connection its own id";
    CONNECTION_SINT_RANGE = "connection-sint-range":
        "`sint` is not in 0..=15",
        "the SynIC has SINTs 0 to 15";
    CONNECTION_QUEUE_DEPTH = "connection-queue-depth":
        "a message connection's `queue_depth` is 0 or above MAX_QUEUE_DEPTH",
        "use a depth between 1 and MAX_QUEUE_DEPTH (board/src/tables.rs)";
    CONNECTION_FLAG_RANGE = "connection-flag-range":
        "an event connection's `flag` is not in 0..=2047",
        "the SynIC has event flags 0 to 2047 per SINT";
    SHARED_MEMORY_UNKNOWN_SHARER = "shared-memory-unknown-sharer":
        "a sharer names no partition",
        "use the `name` of a [[partition]]";
    SHARED_MEMORY_OVERLAP = "shared-memory-overlap":
        "a shared region's guest range overlaps the sharer's own memory or another shared region it maps",
        "choose a `guest_base` outside the partition's memory regions";
    SUPERVISION = "supervision":
        "a partition `supervises` itself, or a second partition supervises (at most one per system), or the system needs the hypervisor's monitor (a `watchdog_ms`, a `critical` partition or a board `[watchdog]`) and every board core belongs to a partition",
        "one partition supervises the others; the monitor runs on a core no partition owns";
    PAYLOAD_MISSING = "payload-missing":
        "a payload or initrd file does not exist",
        "check the path (relative to the system file)";
    PAYLOAD_UNREADABLE = "payload-unreadable":
        "a payload or initrd exists but cannot be read (a directory, a special file, no permission)",
        "check that the path names a regular, readable file";
    PAYLOAD_KIND = "payload-kind":
        "the payload is not of its declared `kind` (ELF magic for elf and hermit, a boot-protocol header with \"HdrS\" at 0x202 for linux, non-empty for flat)",
        "fix `kind`, or point `path` at the right file";
    FLAT_ENTRY = "flat-entry":
        "a flat payload has no `entry`, or it lies in the boot area, or the binary does not fit in one memory region from there",
        "give `entry` (load and start address) at or above 0x80000 inside one of the partition's memory regions";
    LINUX_IMAGE = "linux-image":
        "a `linux` payload cannot be booted through the 64-bit boot protocol: no 0xAA55 boot flag, protocol older than 2.12, no 64-bit entry (xloadflags bit 0), not loaded high (loadflags bit 0), more than 32 KiB of setup code, a file shorter than its header says, a kernel_alignment that is not a power of two, an init_size of 0 or smaller than the kernel, a pref_address below 1 MiB",
        "use a 64-bit bzImage of Linux 3.8 or later (arch/x86/boot/bzImage, or a distribution's /boot/vmlinuz-*)";
    LINUX_MEMORY = "linux-memory":
        "a `linux` partition lacks usable memory (access \"rwx\") over guest [0, 0xA0000), or room for the kernel: init_size bytes at an address aligned to kernel_alignment at or above pref_address (below 4 GiB unless the kernel may be loaded above)",
        "give the partition a region from guest 0 and enough memory above the kernel's pref_address (16 MiB for a distribution kernel) for its init_size";
    LINUX_INITRD = "linux-initrd":
        "a `linux` payload's initrd finds no room in the partition's usable memory above 1 MiB beside the kernel, below the header's initrd_addr_max (unless the kernel accepts an initrd above 4 GiB)",
        "give the partition more memory, or use a smaller initrd";
    LINUX_CMDLINE = "linux-cmdline":
        "a `linux` payload's `cmdline` is longer than the kernel accepts (cmdline_size in its setup header)",
        "shorten the command line; Linux would truncate it";
    XEN_RING = "xen-ring":
        "a message connection with an end whose partition has `interface = \"xen\"` has no `ring`, or its `ring` names no shared region, one smaller than 4 KiB, one a Xen end does not map \"rw\", or one that is already another connection's ring",
        "give the connection `ring = \"REGION\"`: a [[shared_memory]] region of its own, at least 4 KiB, that every Xen end maps \"rw\"";
    NOT_YET = "not-yet":
        "(a warning, not an error) a setting this version of the hypervisor accepts but cannot honour yet: an assigned device's interrupts, PCI function or DMA",
        "the image builds, but the setting has no effect (or the partition is refused at boot, as a Linux payload is); see docs/config.md";
    DEPRECATED = "deprecated":
        "(a warning, not an error) a setting still accepted under an old name: `kind = \"bzimage\"` is now `kind = \"linux\"`",
        "write the new name; the old one may be refused in a later version";
}

/// Index of a loaded file in [`Sources`].
pub(crate) type FileId = usize;

/// A place in a loaded file: a byte offset, turned into `line:col` at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub file: FileId,
    pub offset: usize,
}

/// The files read so far, kept for turning offsets into lines and columns.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    files: Vec<(PathBuf, String)>,
}

impl Sources {
    /// Registers a file (its text may be empty when it could not be read).
    pub fn add(&mut self, path: &Path, text: String) -> FileId {
        self.files.push((path.to_owned(), text));
        self.files.len() - 1
    }

    pub fn text(&self, file: FileId) -> &str {
        self.files.get(file).map_or("", |(_, text)| text.as_str())
    }

    pub fn path(&self, file: FileId) -> &Path {
        self.files.get(file).map_or(Path::new("<unknown>"), |(path, _)| path.as_path())
    }
}

/// 1-based line and character column of a byte offset (clamped into the text).
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = text.get(..end).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[derive(Debug)]
struct Pending {
    loc: Loc,
    rule: &'static str,
    message: String,
    hint: Option<String>,
}

/// Collects problems (and warnings) while loading.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    pending: Vec<Pending>,
    warnings: Vec<Pending>,
}

impl Sink {
    /// Reports a problem with the rule's default hint.
    pub fn error(&mut self, loc: Loc, rule: &'static str, message: impl Into<String>) {
        self.pending.push(Pending { loc, rule, message: message.into(), hint: None });
    }

    /// Reports a problem with a hint specific to it.
    pub fn error_hint(&mut self, loc: Loc, rule: &'static str, message: impl Into<String>, hint: impl Into<String>) {
        self.pending.push(Pending { loc, rule, message: message.into(), hint: Some(hint.into()) });
    }

    /// Reports something that does not stop the build: a setting the hypervisor accepts but
    /// cannot honour yet (rule `not-yet`).
    pub fn warn(&mut self, loc: Loc, rule: &'static str, message: impl Into<String>, hint: impl Into<String>) {
        self.warnings.push(Pending { loc, rule, message: message.into(), hint: Some(hint.into()) });
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Number of problems reported so far (to tell whether a step added any).
    pub fn count(&self) -> usize {
        self.pending.len()
    }

    /// Resolves positions, sorts by file and position, drops exact repeats: the errors, and
    /// the warnings.
    pub fn finish(self, sources: &Sources) -> (Diagnostics, Vec<Diagnostic>) {
        let warnings = resolve(self.warnings, sources);
        (Diagnostics { errors: resolve(self.pending, sources) }, warnings)
    }
}

fn resolve(mut pending: Vec<Pending>, sources: &Sources) -> Vec<Diagnostic> {
    pending.sort_by_key(|p| (p.loc.file, p.loc.offset));
    let mut out: Vec<Diagnostic> = Vec::with_capacity(pending.len());
    for p in pending {
        let (line, col) = line_col(sources.text(p.loc.file), p.loc.offset);
        let hint = p.hint.unwrap_or_else(|| default_hint(p.rule).to_owned());
        let diagnostic =
            Diagnostic { file: sources.path(p.loc.file).to_owned(), line, col, rule: p.rule, message: p.message, hint };
        if !out.contains(&diagnostic) {
            out.push(diagnostic);
        }
    }
    out
}

fn default_hint(rule: &str) -> &'static str {
    RULES.iter().find(|r| r.name == rule).map_or("see docs/config.md", |r| r.hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_lines_and_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_col(text, 9), (2, 3));
        // Past the end and inside a character: clamped, no panic.
        assert_eq!(line_col(text, 1000), (3, 1));
        assert_eq!(line_col(text, 8), (2, 2));
    }

    #[test]
    fn rule_names_are_unique_kebab_case() {
        for (i, r) in RULES.iter().enumerate() {
            assert!(r.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{}", r.name);
            assert!(RULES.iter().skip(i + 1).all(|o| o.name != r.name));
        }
    }

    #[test]
    fn display_has_position_rule_hint_and_count() {
        let mut sources = Sources::default();
        let file = sources.add(Path::new("s.toml"), "x = 1\ny = 2\n".into());
        let mut sink = Sink::default();
        sink.error(Loc { file, offset: 6 }, rule::UNKNOWN_KEY, "unknown key `y`");
        let text = sink.finish(&sources).0.to_string();
        assert_eq!(
            text,
            "s.toml:2:1: [unknown-key] unknown key `y`\n  hint: remove the key or fix its spelling (see docs/config.md)\n1 error\n"
        );
    }
}
