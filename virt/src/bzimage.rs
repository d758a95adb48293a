//! The Linux/x86 boot protocol for a bzImage entered at its 64-bit entry point: reading
//! the setup header, checking that the image can be booted that way, placing the kernel,
//! initrd, zero page and command line in a partition's memory, and filling the zero page.
//!
//! References are to the kernel's `Documentation/arch/x86/boot.rst` ("boot.rst") and
//! `Documentation/arch/x86/zero-page.rst` ("zero-page.rst"). The build (`bulkhead-board`)
//! and the hypervisor's loader share this module, so an image the build accepts is one the
//! loader places the same way.
//!
//! # What a 64-bit boot needs (boot.rst "64-bit Boot Protocol")
//!
//! - A zero page (`struct boot_params`, 4 KiB), all zero except the setup header copied from
//!   the image at 0x1F1 and the fields the loader writes ([`write_zero_page`]).
//! - The protected-mode kernel (the file from `(setup_sects + 1) × 512` on) loaded at an
//!   address from which the kernel runs: boot.rst "init_size" defines the runtime start as
//!   `align_up(load, kernel_alignment)` for a relocatable kernel, else `pref_address`.
//!   Linux's decompressor never runs below `pref_address` (`LOAD_PHYSICAL_ADDR`; see
//!   `startup_64` in arch/x86/boot/compressed/head_64.S, which also copies itself to the
//!   end of the `init_size` buffer before decompressing), so
//!   [`Layout::plan`] loads at the first aligned address at or above it where `init_size`
//!   bytes of usable RAM follow: then the load address *is* the runtime start and all the
//!   kernel touches before reading its memory map is `[kernel, kernel + init_size)`.
//! - Entry at `kernel + 0x200` in 64-bit mode with RSI = the zero page; the `init_size`
//!   range, the zero page and the command line identity-mapped; a GDT with flat
//!   `__BOOT_CS` = 0x10 (code) and `__BOOT_DS` = 0x18 (data) ([`BOOT_CS`], [`BOOT_DS`]).
//!   [`Layout::identity_map_end`] says how far the identity map must reach.
//!
//! # Where things go in the partition (guest-physical)
//!
//! | range | contents |
//! |---|---|
//! | `[0x1000, ZERO_PAGE_GPA)` | left to the loader: its GDT and identity page tables |
//! | [`ZERO_PAGE_GPA`] | the zero page, 4 KiB |
//! | [`CMDLINE_GPA`] | the command line, NUL-terminated, at most [`CMDLINE_MAX`] bytes + NUL |
//! | `[kernel, kernel + init_size)` | the protected-mode kernel and its decompression buffer |
//! | the highest page-aligned place that fits | the initrd (boot.rst: as high as allowed) |
//!
//! The partition must have usable RAM (readable, writable and executable) over
//! `[0, LOW_MEMORY_END)`: the boot data above sits there, Linux's decompressor copies a
//! two-page trampoline just below 0x9F000 (arch/x86/boot/compressed/pgtable_64.c,
//! `find_trampoline_placement`, after reading the BIOS data area at 0x40E and 0x413, which
//! read as zero) and the kernel allocates its SMP trampoline below 1 MiB (`reserve_real_mode`).
//!
//! # The memory map (zero-page.rst `e820_table`)
//!
//! [`E820Table::build`]: the partition's usable RAM as type 1 except `[LOW_MEMORY_END,
//! 1 MiB)` (the legacy video and ROM hole, reserved as on a PC), its other memory
//! (read-only or not executable) and its shared regions as reserved (type 2), and any
//! extra ranges (ACPI tables) with their own type carved out of RAM.

/// Offset of the setup header in the image and in the zero page (boot.rst "The Real-Mode
/// Kernel Header").
pub const SETUP_HEADER_OFFSET: usize = 0x1F1;
/// Bytes of the image [`SetupHeader::read`] needs: through `handover_offset` (0x264/4).
pub const HEADER_BYTES: usize = 0x268;
/// "HdrS" at 0x202 (boot.rst `header`).
pub const MAGIC: [u8; 4] = *b"HdrS";
/// Oldest protocol booted: 2.12 added `xloadflags`, whose bit 0 says the 64-bit entry exists.
pub const MIN_VERSION: u16 = 0x020C;
/// `boot_flag` (boot.rst): 0xAA55.
pub const BOOT_FLAG: u16 = 0xAA55;
/// `loadflags` bit 0, LOADED_HIGH: the protected-mode code loads at 1 MiB or above (bzImage).
pub const LOADED_HIGH: u8 = 1 << 0;
/// `xloadflags` bit 0, XLF_KERNEL_64: the 64-bit entry point at load address + 0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// `xloadflags` bit 1, XLF_CAN_BE_LOADED_ABOVE_4G: kernel, zero page, command line and
/// initrd may lie above 4 GiB.
pub const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;
/// The 64-bit entry, relative to the protected-mode kernel's load address.
pub const ENTRY_64_OFFSET: u64 = 0x200;
/// boot.rst: "The real-mode code can total up to 32K" (boot sector and setup).
pub const MAX_REAL_MODE_BYTES: u64 = 0x8000;
/// `type_of_loader` for a loader without an assigned ID (boot.rst `type_of_loader`).
pub const TYPE_OF_LOADER_UNDEFINED: u8 = 0xFF;
/// GDT selectors the 64-bit protocol requires: flat code and flat data.
pub const BOOT_CS: u16 = 0x10;
/// See [`BOOT_CS`].
pub const BOOT_DS: u16 = 0x18;

/// The GDT a 64-bit boot starts with: null, unused, then 64-bit flat code at [`BOOT_CS`]
/// and flat data at [`BOOT_DS`] (the descriptors of
/// [`crate::guest_paging::flat_gdt`], at Linux's indices).
pub const fn boot_gdt() -> [u64; 4] {
    use crate::guest_paging::{CODE64_DESCRIPTOR, DATA_DESCRIPTOR};
    const _: () = assert!(BOOT_CS == 2 << 3 && BOOT_DS == 3 << 3);
    [0, 0, CODE64_DESCRIPTOR, DATA_DESCRIPTOR]
}
/// Size of the zero page (`struct boot_params`).
pub const ZERO_PAGE_SIZE: usize = 4096;
/// Where the zero page goes.
pub const ZERO_PAGE_GPA: u64 = 0x7_0000;
/// Where the command line goes, one page after the zero page.
pub const CMDLINE_GPA: u64 = 0x7_1000;
/// Longest command line written (without the NUL): one page holds it and its NUL.
pub const CMDLINE_MAX: u64 = 4095;
/// The partition's usable RAM must cover `[0, LOW_MEMORY_END)` (module notes).
pub const LOW_MEMORY_END: u64 = 0xA_0000;
/// Nothing but the boot data goes below 1 MiB; the legacy hole `[LOW_MEMORY_END, 1 MiB)`
/// is reserved in the memory map.
pub const HIGH_MEMORY: u64 = 0x10_0000;
/// Most e820 entries the zero page holds (zero-page.rst: 0x2D0/0xA00, 20 bytes each).
pub const E820_MAX: usize = 128;
/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;
/// e820 type: ACPI tables, reclaimable once read.
pub const E820_ACPI: u32 = 3;

const PAGE: u64 = 4096;
const FOUR_GIB: u64 = 1 << 32;

/// Field offsets inside the image / zero page (boot.rst header table, zero-page.rst).
mod off {
    pub const SETUP_SECTS: usize = 0x1F1;
    pub const SYSSIZE: usize = 0x1F4;
    pub const BOOT_FLAG: usize = 0x1FE;
    pub const JUMP: usize = 0x200;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21C;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const INITRD_ADDR_MAX: usize = 0x22C;
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    pub const MIN_ALIGNMENT: usize = 0x235;
    pub const XLOADFLAGS: usize = 0x236;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const PREF_ADDRESS: usize = 0x258;
    pub const INIT_SIZE: usize = 0x260;
    pub const HANDOVER_OFFSET: usize = 0x264;
    // zero-page.rst
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    pub const EXT_RAMDISK_IMAGE: usize = 0x0C0;
    pub const EXT_RAMDISK_SIZE: usize = 0x0C4;
    pub const EXT_CMD_LINE_PTR: usize = 0x0C8;
    pub const E820_ENTRIES: usize = 0x1E8;
    /// End of the setup header's room in `boot_params` (`edd_mbr_sig_buffer` follows).
    pub const SETUP_HEADER_ROOM_END: usize = 0x290;
    pub const E820_TABLE: usize = 0x2D0;
}

fn u8_at(b: &[u8], o: usize) -> u8 {
    b.get(o).copied().unwrap_or(0)
}

fn bytes<const N: usize>(b: &[u8], o: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(s) = b.get(o..o + N) {
        out.copy_from_slice(s);
    }
    out
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(bytes(b, o))
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(bytes(b, o))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(bytes(b, o))
}

fn put(b: &mut [u8], o: usize, value: &[u8]) {
    if let Some(s) = b.get_mut(o..o + value.len()) {
        s.copy_from_slice(value);
    }
}

/// Why [`SetupHeader::read`] found no boot-protocol header at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The image is shorter than [`HEADER_BYTES`].
    TooShort,
    /// No "HdrS" at 0x202: not a bzImage (or a pre-2.00 zImage).
    NoMagic,
}

/// The setup header fields a 64-bit loader reads (boot.rst "Details of Header Fields").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupHeader {
    /// Setup sectors after the boot sector (0 already read as 4).
    pub setup_sects: u8,
    /// Protected-mode code size in 16-byte paragraphs.
    pub syssize: u32,
    /// 0xAA55 in a kernel image.
    pub boot_flag: u16,
    /// Protocol version, `major << 8 | minor`.
    pub version: u16,
    /// `loadflags` ([`LOADED_HIGH`]).
    pub loadflags: u8,
    /// Highest byte address the initrd may occupy.
    pub initrd_addr_max: u32,
    /// Alignment the kernel must run at (if relocatable).
    pub kernel_alignment: u32,
    /// Whether the protected-mode kernel may be loaded elsewhere than `pref_address`.
    pub relocatable_kernel: bool,
    /// Least alignment, as a power of two (2.10+).
    pub min_alignment: u8,
    /// `xloadflags` ([`XLF_KERNEL_64`], [`XLF_CAN_BE_LOADED_ABOVE_4G`]).
    pub xloadflags: u16,
    /// Longest command line, without its NUL.
    pub cmdline_size: u32,
    /// Preferred (for a non-relocatable kernel: the only) load address.
    pub pref_address: u64,
    /// Bytes from the runtime start the kernel needs before it reads its memory map.
    pub init_size: u32,
    /// EFI handover entry offset (unused here; read for completeness of the check).
    pub handover_offset: u32,
    /// End of the setup header in the image: 0x202 + the byte at 0x201 (boot.rst
    /// "64-bit Boot Protocol"), clamped to the header's room in the zero page.
    pub header_end: usize,
}

/// One reason an image with a header cannot be booted through the 64-bit entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// `boot_flag` is not 0xAA55.
    BootFlag,
    /// Protocol older than 2.12 ([`MIN_VERSION`]).
    Version,
    /// `xloadflags` lacks [`XLF_KERNEL_64`]: no 64-bit entry.
    NoKernel64,
    /// `loadflags` lacks [`LOADED_HIGH`]: a zImage, loaded low.
    NotLoadedHigh,
    /// The real-mode part (`setup_sects + 1` sectors) is larger than 32 KiB.
    SetupSects,
    /// The file is shorter than its real-mode part plus `syssize` paragraphs.
    Truncated,
    /// `kernel_alignment` is not a power of two.
    Alignment,
    /// `init_size` is zero or smaller than the protected-mode code.
    InitSize,
    /// `pref_address` is below 1 MiB, or for a non-relocatable kernel not page-aligned.
    PrefAddress,
}

impl Problem {
    const ALL: [Problem; 9] = [
        Problem::BootFlag,
        Problem::Version,
        Problem::NoKernel64,
        Problem::NotLoadedHigh,
        Problem::SetupSects,
        Problem::Truncated,
        Problem::Alignment,
        Problem::InitSize,
        Problem::PrefAddress,
    ];

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of [`Problem`]s, every one an image has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Problems(u16);

impl Problems {
    /// No problem.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// Whether `p` is in the set.
    pub fn contains(&self, p: Problem) -> bool {
        self.0 & p.bit() != 0
    }

    fn add(&mut self, p: Problem, when: bool) {
        if when {
            self.0 |= p.bit();
        }
    }

    /// The problems, in a fixed order.
    pub fn iter(self) -> impl Iterator<Item = Problem> {
        Problem::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

impl SetupHeader {
    /// Reads the header from the start of an image (at least [`HEADER_BYTES`] of it).
    /// Fields a protocol older than theirs does not have read as whatever the bytes hold;
    /// [`SetupHeader::problems`] refuses such old protocols.
    pub fn read(image: &[u8]) -> Result<SetupHeader, ReadError> {
        if image.len() < HEADER_BYTES {
            return Err(ReadError::TooShort);
        }
        if bytes::<4>(image, off::HEADER) != MAGIC {
            return Err(ReadError::NoMagic);
        }
        // boot.rst `setup_sects`: "If this field is 0, the real value is 4."
        let setup_sects = match u8_at(image, off::SETUP_SECTS) {
            0 => 4,
            n => n,
        };
        let header_end = (off::HEADER + usize::from(u8_at(image, off::JUMP + 1))).min(off::SETUP_HEADER_ROOM_END);
        Ok(SetupHeader {
            setup_sects,
            syssize: u32_at(image, off::SYSSIZE),
            boot_flag: u16_at(image, off::BOOT_FLAG),
            version: u16_at(image, off::VERSION),
            loadflags: u8_at(image, off::LOADFLAGS),
            initrd_addr_max: u32_at(image, off::INITRD_ADDR_MAX),
            kernel_alignment: u32_at(image, off::KERNEL_ALIGNMENT),
            relocatable_kernel: u8_at(image, off::RELOCATABLE_KERNEL) != 0,
            min_alignment: u8_at(image, off::MIN_ALIGNMENT),
            xloadflags: u16_at(image, off::XLOADFLAGS),
            cmdline_size: u32_at(image, off::CMDLINE_SIZE),
            pref_address: u64_at(image, off::PREF_ADDRESS),
            init_size: u32_at(image, off::INIT_SIZE),
            handover_offset: u32_at(image, off::HANDOVER_OFFSET),
            header_end,
        })
    }

    /// Bytes of the real-mode part: the boot sector and the setup sectors. The
    /// protected-mode kernel starts at this offset in the file (boot.rst "Loading The
    /// Rest of The Kernel").
    pub fn setup_bytes(&self) -> u64 {
        (u64::from(self.setup_sects) + 1) * 512
    }

    /// Bytes of protected-mode code the header announces (`syssize` paragraphs).
    pub fn protected_mode_bytes(&self) -> u64 {
        u64::from(self.syssize) * 16
    }

    /// Whether kernel, zero page, command line and initrd may lie above 4 GiB.
    pub fn above_4g(&self) -> bool {
        self.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G != 0
    }

    /// Everything that keeps this image, `image_len` bytes long, from a 64-bit boot.
    pub fn problems(&self, image_len: u64) -> Problems {
        let mut p = Problems::default();
        p.add(Problem::BootFlag, self.boot_flag != BOOT_FLAG);
        p.add(Problem::Version, self.version < MIN_VERSION);
        p.add(Problem::NoKernel64, self.xloadflags & XLF_KERNEL_64 == 0);
        p.add(Problem::NotLoadedHigh, self.loadflags & LOADED_HIGH == 0);
        p.add(Problem::SetupSects, self.setup_bytes() > MAX_REAL_MODE_BYTES);
        p.add(Problem::Truncated, image_len < self.setup_bytes() + self.protected_mode_bytes());
        p.add(Problem::Alignment, !self.kernel_alignment.is_power_of_two());
        p.add(Problem::InitSize, self.init_size == 0 || u64::from(self.init_size) < self.protected_mode_bytes());
        p.add(
            Problem::PrefAddress,
            self.pref_address < HIGH_MEMORY || (!self.relocatable_kernel && !self.pref_address.is_multiple_of(PAGE)),
        );
        p
    }
}

/// A guest-physical range `[base, base + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Range {
    /// One past the last byte (saturating).
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.base < other.end() && other.base < self.end()
    }
}

/// One memory region of the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRegion {
    /// Where it lies in guest-physical space.
    pub range: Range,
    /// Readable, writable and executable: Linux may use it for anything. Other memory
    /// is described as reserved and never used for the boot.
    pub usable: bool,
}

/// Most memory regions a layout takes (more than any configuration allows).
pub const MAX_REGIONS: usize = 32;

/// The partition's usable RAM as sorted spans, adjacent regions joined.
#[derive(Debug, Clone, Copy)]
struct Spans {
    spans: [Range; MAX_REGIONS],
    len: usize,
}

impl Spans {
    fn new(regions: &[RamRegion]) -> Spans {
        let mut s = Spans { spans: [Range::default(); MAX_REGIONS], len: 0 };
        for r in regions.iter().filter(|r| r.usable && r.range.size != 0).take(MAX_REGIONS) {
            if let Some(slot) = s.spans.get_mut(s.len) {
                *slot = r.range;
                s.len += 1;
            }
        }
        let used = s.spans.get_mut(..s.len).unwrap_or_default();
        used.sort_unstable_by_key(|r| r.base);
        // Join adjacent (or overlapping) spans in place.
        let mut out = 0usize;
        for i in 0..s.len {
            let Some(&r) = s.spans.get(i) else { break };
            match out.checked_sub(1).and_then(|last| s.spans.get_mut(last)) {
                Some(last) if r.base <= last.end() => {
                    let end = last.end().max(r.end());
                    last.size = end - last.base;
                }
                _ => {
                    if let Some(slot) = s.spans.get_mut(out) {
                        *slot = r;
                    }
                    out += 1;
                }
            }
        }
        s.len = out;
        s
    }

    fn iter(&self) -> impl DoubleEndedIterator<Item = Range> + '_ {
        self.spans.iter().take(self.len).copied()
    }

    fn covers(&self, range: Range) -> bool {
        self.iter().any(|s| s.base <= range.base && range.end() <= s.end())
    }
}

/// Why the initrd found no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdError {
    /// Its size.
    pub size: u64,
    /// The largest page-aligned block it could have had (below its ceiling, outside the
    /// kernel and the first MiB).
    pub largest: u64,
    /// The highest address it may end at (`initrd_addr_max + 1`, or none above 4 GiB).
    pub ceiling: u64,
}

/// Why the command line does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmdlineError {
    /// Its length without NUL.
    pub len: u64,
    /// The most it may have: the header's `cmdline_size`, at most [`CMDLINE_MAX`].
    pub max: u64,
}

/// Everything wrong with a layout, every problem at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayoutErrors {
    /// The usable RAM does not cover `[0, LOW_MEMORY_END)`.
    pub low_memory: bool,
    /// No place for `init_size` bytes at an aligned address at or above `pref_address`
    /// (below 4 GiB unless the kernel may be loaded above): how many bytes were needed.
    pub kernel: Option<u64>,
    /// The initrd does not fit.
    pub initrd: Option<InitrdError>,
    /// The command line is too long.
    pub cmdline: Option<CmdlineError>,
}

/// Where a 64-bit boot puts everything in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Load address of the protected-mode kernel, which is also its runtime start.
    pub kernel: u64,
    /// `[kernel, kernel + init_size)`: what the kernel uses before it reads the memory map.
    pub kernel_range: Range,
    /// The 64-bit entry point: `kernel + 0x200`.
    pub entry: u64,
    /// The zero page ([`ZERO_PAGE_GPA`]).
    pub zero_page: u64,
    /// The command line ([`CMDLINE_GPA`]).
    pub cmdline: u64,
    /// The initrd, if any.
    pub initrd: Option<Range>,
}

impl Layout {
    /// Places kernel, initrd, zero page and command line for `header` in a partition with
    /// memory `regions`, an initrd of `initrd_size` bytes (if any) and a command line of
    /// `cmdline_len` bytes (without NUL). Reports every problem, not only the first.
    pub fn plan(
        header: &SetupHeader,
        regions: &[RamRegion],
        initrd_size: Option<u64>,
        cmdline_len: u64,
    ) -> Result<Layout, LayoutErrors> {
        let spans = Spans::new(regions);
        let mut errors = LayoutErrors {
            low_memory: !spans.covers(Range { base: 0, size: LOW_MEMORY_END }),
            ..LayoutErrors::default()
        };

        let max = u64::from(header.cmdline_size).min(CMDLINE_MAX);
        if cmdline_len > max {
            errors.cmdline = Some(CmdlineError { len: cmdline_len, max });
        }

        let limit = if header.above_4g() { u64::MAX } else { FOUR_GIB };
        let kernel = place_kernel(header, &spans, limit);
        if kernel.is_none() {
            errors.kernel = Some(u64::from(header.init_size));
        }
        let kernel_range = kernel.map(|base| Range { base, size: u64::from(header.init_size) });

        let initrd = match initrd_size {
            None => None,
            Some(size) => {
                let ceiling =
                    if header.above_4g() { u64::MAX } else { (u64::from(header.initrd_addr_max) + 1).min(FOUR_GIB) };
                match place_initrd(&spans, kernel_range, size, ceiling) {
                    Ok(r) => Some(r),
                    Err(largest) => {
                        errors.initrd = Some(InitrdError { size, largest, ceiling });
                        None
                    }
                }
            }
        };

        match kernel_range {
            Some(kernel_range) if errors == LayoutErrors::default() => Ok(Layout {
                kernel: kernel_range.base,
                kernel_range,
                entry: kernel_range.base + ENTRY_64_OFFSET,
                zero_page: ZERO_PAGE_GPA,
                cmdline: CMDLINE_GPA,
                initrd,
            }),
            _ => Err(errors),
        }
    }

    /// The end of what the 64-bit entry needs identity-mapped: the kernel's `init_size`
    /// range, the zero page and the command line (boot.rst "64-bit Boot Protocol").
    pub fn identity_map_end(&self) -> u64 {
        self.kernel_range.end().max(CMDLINE_GPA + CMDLINE_MAX + 1)
    }
}

fn align_up(n: u64, align: u64) -> Option<u64> {
    let mask = align.checked_sub(1)?;
    n.checked_add(mask).map(|v| v & !mask)
}

/// The lowest address at or above `pref_address`, aligned to `kernel_alignment` (or
/// exactly `pref_address` for a non-relocatable kernel), where `init_size` bytes of usable
/// RAM follow, ending at or below `limit`.
fn place_kernel(header: &SetupHeader, spans: &Spans, limit: u64) -> Option<u64> {
    let size = u64::from(header.init_size);
    if size == 0 || header.pref_address < HIGH_MEMORY {
        return None;
    }
    let fits = |base: u64| {
        let r = Range { base, size };
        base.checked_add(size).is_some_and(|end| end <= limit) && spans.covers(r)
    };
    if !header.relocatable_kernel {
        return fits(header.pref_address).then_some(header.pref_address);
    }
    let align = u64::from(header.kernel_alignment).max(PAGE);
    if !align.is_power_of_two() {
        return None;
    }
    spans.iter().find_map(|s| {
        let base = align_up(s.base.max(header.pref_address), align)?;
        fits(base).then_some(base)
    })
}

/// The highest page-aligned place for `size` bytes in usable RAM above 1 MiB, outside the
/// kernel, ending at or below `ceiling`; else the largest such block there is.
fn place_initrd(spans: &Spans, kernel: Option<Range>, size: u64, ceiling: u64) -> Result<Range, u64> {
    let mut largest = 0u64;
    // Free pieces: each span above 1 MiB and below the ceiling, split around the kernel.
    for s in spans.iter().rev() {
        let lo = s.base.max(HIGH_MEMORY);
        let hi = s.end().min(ceiling);
        if lo >= hi {
            continue;
        }
        let (upper, lower) = match kernel {
            Some(k) if k.overlaps(&Range { base: lo, size: hi - lo }) => {
                (Range { base: k.end().max(lo), size: hi.saturating_sub(k.end().max(lo)) }, {
                    let top = k.base.min(hi);
                    Range { base: lo, size: top.saturating_sub(lo) }
                })
            }
            _ => (Range { base: lo, size: hi - lo }, Range::default()),
        };
        for piece in [upper, lower] {
            let start_page = align_up(piece.base, PAGE).unwrap_or(u64::MAX);
            let room = piece.end().saturating_sub(start_page);
            largest = largest.max(room);
            if room >= size {
                let base = (piece.end() - size) & !(PAGE - 1);
                return Ok(Range { base, size });
            }
        }
    }
    Err(largest)
}

/// One e820 entry (zero-page.rst `e820_table`: u64 addr, u64 size, u32 type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length.
    pub size: u64,
    /// [`E820_RAM`], [`E820_RESERVED`] or [`E820_ACPI`].
    pub kind: u32,
}

/// The memory map handed to Linux, sorted by address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Table {
    entries: [E820Entry; E820_MAX],
    len: usize,
}

/// The memory map needs more than [`E820_MAX`] entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Full;

impl E820Table {
    /// The entries, in address order.
    pub fn entries(&self) -> &[E820Entry] {
        self.entries.get(..self.len).unwrap_or_default()
    }

    fn push(&mut self, addr: u64, size: u64, kind: u32) -> Result<(), E820Full> {
        if size == 0 {
            return Ok(());
        }
        let slot = self.entries.get_mut(self.len).ok_or(E820Full)?;
        *slot = E820Entry { addr, size, kind };
        self.len += 1;
        Ok(())
    }

    /// Pushes `range` as `kind`, with every `carve` range inside it split out with its
    /// own type (and `[LOW_MEMORY_END, 1 MiB)` as reserved when `kind` is RAM).
    fn push_carved(&mut self, range: Range, kind: u32, carves: &[(Range, u32)]) -> Result<(), E820Full> {
        let hole = (Range { base: LOW_MEMORY_END, size: HIGH_MEMORY - LOW_MEMORY_END }, E820_RESERVED);
        let mut cursor = range.base;
        while cursor < range.end() {
            // The next carve-out (or the hole) starting at or after the cursor.
            let next = carves
                .iter()
                .chain(core::iter::once(&hole).filter(|_| kind == E820_RAM))
                .filter(|(r, _)| r.size != 0 && r.overlaps(&range) && r.end() > cursor)
                .min_by_key(|(r, _)| r.base.max(cursor));
            let Some(&(r, carve_kind)) = next else { break };
            let start = r.base.max(cursor);
            self.push(cursor, start - cursor, kind)?;
            let end = r.end().min(range.end());
            self.push(start, end - start, carve_kind)?;
            cursor = end;
        }
        self.push(cursor, range.end().saturating_sub(cursor), kind)
    }

    /// The partition's memory map: usable `regions` as RAM, other regions and `reserved`
    /// (its shared regions) as reserved, and each `(range, type)` in `carves` (e.g. the
    /// ACPI tables, [`E820_ACPI`]) split out of whatever region holds it.
    pub fn build(regions: &[RamRegion], reserved: &[Range], carves: &[(Range, u32)]) -> Result<E820Table, E820Full> {
        let mut t = E820Table { entries: [E820Entry::default(); E820_MAX], len: 0 };
        for r in regions {
            t.push_carved(r.range, if r.usable { E820_RAM } else { E820_RESERVED }, carves)?;
        }
        for r in reserved {
            t.push(r.base, r.size, E820_RESERVED)?;
        }
        t.entries.get_mut(..t.len).unwrap_or_default().sort_unstable_by_key(|e| e.addr);
        Ok(t)
    }
}

/// What goes into the zero page besides the image's setup header.
#[derive(Debug, Clone, Copy)]
pub struct BootParams<'a> {
    /// Where everything was placed.
    pub layout: &'a Layout,
    /// The memory map.
    pub e820: &'a E820Table,
    /// Guest-physical address of the ACPI RSDP (0: none).
    pub acpi_rsdp: u64,
}

/// Fills `zero_page` for a 64-bit boot of `image` (zero-page.rst, boot.rst "64-bit Boot
/// Protocol"): all zero, then the image's setup header at 0x1F1 (0x1F1 up to 0x202 + the
/// byte at 0x201), then `type_of_loader` = 0xFF, `cmd_line_ptr` (+ `ext_cmd_line_ptr`),
/// `ramdisk_image`/`ramdisk_size` (+ `ext_`), the e820 table at 0x2D0 with its count at
/// 0x1E8, and `acpi_rsdp_addr` at 0x070. `sentinel` (0x1EF) stays zero, which tells Linux
/// the loader cleared the page.
pub fn write_zero_page(
    zero_page: &mut [u8; ZERO_PAGE_SIZE],
    image: &[u8],
    header: &SetupHeader,
    params: &BootParams<'_>,
) {
    zero_page.fill(0);
    if let (Some(dst), Some(src)) =
        (zero_page.get_mut(SETUP_HEADER_OFFSET..header.header_end), image.get(SETUP_HEADER_OFFSET..header.header_end))
    {
        dst.copy_from_slice(src);
    }
    let zp = &mut zero_page[..];
    put(zp, off::TYPE_OF_LOADER, &[TYPE_OF_LOADER_UNDEFINED]);
    let cmdline = params.layout.cmdline;
    put(zp, off::CMD_LINE_PTR, &(cmdline as u32).to_le_bytes());
    put(zp, off::EXT_CMD_LINE_PTR, &((cmdline >> 32) as u32).to_le_bytes());
    let initrd = params.layout.initrd.unwrap_or_default();
    put(zp, off::RAMDISK_IMAGE, &(initrd.base as u32).to_le_bytes());
    put(zp, off::RAMDISK_SIZE, &(initrd.size as u32).to_le_bytes());
    put(zp, off::EXT_RAMDISK_IMAGE, &((initrd.base >> 32) as u32).to_le_bytes());
    put(zp, off::EXT_RAMDISK_SIZE, &((initrd.size >> 32) as u32).to_le_bytes());
    put(zp, off::ACPI_RSDP_ADDR, &params.acpi_rsdp.to_le_bytes());
    let entries = params.e820.entries();
    put(zp, off::E820_ENTRIES, &[entries.len().min(E820_MAX) as u8]);
    for (i, e) in entries.iter().enumerate() {
        let at = off::E820_TABLE + i * 20;
        put(zp, at, &e.addr.to_le_bytes());
        put(zp, at + 8, &e.size.to_le_bytes());
        put(zp, at + 16, &e.kind.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    const MIB: u64 = 1 << 20;

    /// A bzImage with a well-formed header: protocol 2.15, 64-bit entry, relocatable,
    /// 2 MiB alignment, pref 16 MiB, init_size 32 MiB, 8 KiB of protected-mode code.
    fn image() -> Vec<u8> {
        let mut b = vec![0u8; 0x1000 + 0x2000];
        b[off::SETUP_SECTS] = 7; // 8 sectors of real-mode code: 0x1000
        b[off::SYSSIZE..off::SYSSIZE + 4].copy_from_slice(&(0x2000u32 / 16).to_le_bytes());
        b[off::BOOT_FLAG..off::BOOT_FLAG + 2].copy_from_slice(&BOOT_FLAG.to_le_bytes());
        b[off::JUMP] = 0xEB;
        b[off::JUMP + 1] = 0x6A;
        b[off::HEADER..off::HEADER + 4].copy_from_slice(&MAGIC);
        b[off::VERSION..off::VERSION + 2].copy_from_slice(&0x020Fu16.to_le_bytes());
        b[off::LOADFLAGS] = LOADED_HIGH;
        b[off::INITRD_ADDR_MAX..off::INITRD_ADDR_MAX + 4].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
        b[off::KERNEL_ALIGNMENT..off::KERNEL_ALIGNMENT + 4].copy_from_slice(&0x20_0000u32.to_le_bytes());
        b[off::RELOCATABLE_KERNEL] = 1;
        b[off::MIN_ALIGNMENT] = 21;
        b[off::XLOADFLAGS..off::XLOADFLAGS + 2].copy_from_slice(&(XLF_KERNEL_64).to_le_bytes());
        b[off::CMDLINE_SIZE..off::CMDLINE_SIZE + 4].copy_from_slice(&0x7FFu32.to_le_bytes());
        b[off::PREF_ADDRESS..off::PREF_ADDRESS + 8].copy_from_slice(&0x100_0000u64.to_le_bytes());
        b[off::INIT_SIZE..off::INIT_SIZE + 4].copy_from_slice(&(32 * MIB as u32).to_le_bytes());
        b
    }

    fn header(b: &[u8]) -> SetupHeader {
        SetupHeader::read(b).unwrap()
    }

    fn ram(base: u64, size: u64) -> RamRegion {
        RamRegion { range: Range { base, size }, usable: true }
    }

    #[test]
    fn reads_the_fields() {
        let h = header(&image());
        assert_eq!(h.setup_sects, 7);
        assert_eq!(h.setup_bytes(), 0x1000);
        assert_eq!(h.protected_mode_bytes(), 0x2000);
        assert_eq!(h.version, 0x020F);
        assert_eq!(h.kernel_alignment, 0x20_0000);
        assert!(h.relocatable_kernel);
        assert_eq!(h.cmdline_size, 0x7FF);
        assert_eq!(h.pref_address, 0x100_0000);
        assert_eq!(h.init_size, 32 << 20);
        assert_eq!(h.header_end, 0x26C);
        assert!(h.problems(0x3000).is_empty());
    }

    #[test]
    fn setup_sects_zero_means_four() {
        let mut b = image();
        b[off::SETUP_SECTS] = 0;
        assert_eq!(header(&b).setup_sects, 4);
    }

    #[test]
    fn no_header() {
        assert_eq!(SetupHeader::read(&[0u8; 0x100]), Err(ReadError::TooShort));
        let mut b = image();
        b[off::HEADER] = b'X';
        assert_eq!(SetupHeader::read(&b), Err(ReadError::NoMagic));
    }

    #[test]
    fn every_problem_is_reported() {
        let mut b = image();
        b[off::BOOT_FLAG] = 0;
        b[off::VERSION..off::VERSION + 2].copy_from_slice(&0x020Bu16.to_le_bytes());
        b[off::XLOADFLAGS] = 0;
        b[off::LOADFLAGS] = 0;
        b[off::SETUP_SECTS] = 64;
        b[off::KERNEL_ALIGNMENT..off::KERNEL_ALIGNMENT + 4].copy_from_slice(&0x30_0000u32.to_le_bytes());
        b[off::INIT_SIZE..off::INIT_SIZE + 4].copy_from_slice(&0u32.to_le_bytes());
        b[off::PREF_ADDRESS..off::PREF_ADDRESS + 8].copy_from_slice(&0x1_0000u64.to_le_bytes());
        let p = header(&b).problems(b.len() as u64);
        let all: Vec<Problem> = p.iter().collect();
        assert_eq!(all, Problem::ALL.to_vec());
        // One at a time, each is found alone.
        let h = header(&image());
        assert_eq!(h.problems(0x2fff).iter().collect::<Vec<_>>(), [Problem::Truncated]);
        let small = SetupHeader { init_size: 0x1000, ..h };
        assert_eq!(small.problems(0x3000).iter().collect::<Vec<_>>(), [Problem::InitSize]);
        let fixed = SetupHeader { relocatable_kernel: false, pref_address: 0x100_0800, ..h };
        assert_eq!(fixed.problems(0x3000).iter().collect::<Vec<_>>(), [Problem::PrefAddress]);
    }

    #[test]
    fn lays_out_kernel_at_pref_and_initrd_at_the_top() {
        let h = header(&image());
        let l = Layout::plan(&h, &[ram(0, 128 * MIB)], Some(5 * MIB + 1), 100).unwrap();
        assert_eq!(l.kernel, 16 * MIB);
        assert_eq!(l.entry, 16 * MIB + 0x200);
        assert_eq!(l.kernel_range, Range { base: 16 * MIB, size: 32 * MIB });
        let initrd = l.initrd.unwrap();
        assert_eq!(initrd.base % PAGE, 0);
        assert!(initrd.end() <= 128 * MIB && initrd.end() > 128 * MIB - PAGE);
        assert_eq!(initrd.size, 5 * MIB + 1);
        assert_eq!((l.zero_page, l.cmdline), (ZERO_PAGE_GPA, CMDLINE_GPA));
        assert_eq!(l.identity_map_end(), 48 * MIB);
    }

    #[test]
    fn relocatable_kernel_moves_to_the_next_aligned_place_that_fits() {
        let h = header(&image());
        // Low RAM, then RAM from 17 MiB: the kernel goes to 18 MiB (2 MiB aligned).
        let regions = [ram(0, MIB), ram(17 * MIB, 64 * MIB)];
        let l = Layout::plan(&h, &regions, None, 0).unwrap();
        assert_eq!(l.kernel, 18 * MIB);
        // Adjacent regions are joined: the kernel may span both.
        let l = Layout::plan(&h, &[ram(0, 20 * MIB), ram(20 * MIB, 40 * MIB)], None, 0).unwrap();
        assert_eq!(l.kernel, 16 * MIB);
        // A non-relocatable kernel goes to pref_address or nowhere.
        let fixed = SetupHeader { relocatable_kernel: false, ..h };
        let e = Layout::plan(&fixed, &regions, None, 0).unwrap_err();
        assert_eq!(e.kernel, Some(32 * MIB));
    }

    #[test]
    fn the_kernel_stays_below_4g_unless_allowed() {
        let h = header(&image());
        let regions = [ram(0, MIB), ram(4 << 30, 64 * MIB)];
        assert_eq!(Layout::plan(&h, &regions, None, 0).unwrap_err().kernel, Some(32 * MIB));
        let high = SetupHeader { xloadflags: XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G, ..h };
        assert_eq!(Layout::plan(&high, &regions, None, 0).unwrap().kernel, 4 << 30);
    }

    #[test]
    fn every_layout_problem_is_reported() {
        let h = header(&image());
        // No low memory, too little for the kernel, a huge initrd, a long command line.
        let e = Layout::plan(&h, &[ram(MIB, 20 * MIB)], Some(64 * MIB), 0x800).unwrap_err();
        assert!(e.low_memory);
        assert_eq!(e.kernel, Some(32 * MIB));
        let initrd = e.initrd.unwrap();
        assert_eq!((initrd.size, initrd.largest, initrd.ceiling), (64 * MIB, 20 * MIB, 0x8000_0000));
        assert_eq!(e.cmdline, Some(CmdlineError { len: 0x800, max: 0x7FF }));
        // Exactly cmdline_size is fine.
        assert!(Layout::plan(&h, &[ram(0, 64 * MIB)], None, 0x7FF).is_ok());
        // Memory without execute permission is not usable.
        let ro = RamRegion { range: Range { base: 0, size: 64 * MIB }, usable: false };
        assert!(Layout::plan(&h, &[ro], None, 0).unwrap_err().low_memory);
    }

    #[test]
    fn initrd_avoids_the_kernel_and_respects_its_ceiling() {
        let h = header(&image());
        // 50 MiB of RAM: kernel [16, 48) MiB; 2 MiB above it, 15 MiB below (from 1 MiB).
        let regions = [ram(0, 50 * MIB)];
        let l = Layout::plan(&h, &regions, Some(2 * MIB), 0).unwrap();
        assert_eq!(l.initrd.unwrap().base, 48 * MIB);
        let l = Layout::plan(&h, &regions, Some(3 * MIB), 0).unwrap();
        assert_eq!(l.initrd.unwrap(), Range { base: 13 * MIB, size: 3 * MIB });
        let e = Layout::plan(&h, &regions, Some(16 * MIB), 0).unwrap_err();
        assert_eq!(e.initrd.unwrap().largest, 15 * MIB);
        // initrd_addr_max bounds it, unless the kernel takes it above 4 GiB.
        let low = SetupHeader { initrd_addr_max: 0x1FF_FFFF, ..h };
        let regions = [ram(0, 64 * MIB), ram(8 << 30, 64 * MIB)];
        let l = Layout::plan(&low, &regions, Some(MIB), 0).unwrap();
        assert_eq!(l.initrd.unwrap().end(), 15 * MIB + MIB);
        let high = SetupHeader { xloadflags: XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G, ..low };
        let l = Layout::plan(&high, &regions, Some(MIB), 0).unwrap();
        assert_eq!(l.initrd.unwrap().end(), (8 << 30) + 64 * MIB);
    }

    #[test]
    fn e820_describes_ram_holes_shared_and_acpi() {
        let regions =
            [ram(0, 64 * MIB), RamRegion { range: Range { base: 0x4000_0000, size: 0x1_0000 }, usable: false }];
        let shared = [Range { base: 0x1000_0000, size: 0x1_0000 }];
        let acpi =
            [(Range { base: 0xE_0000, size: 0x1000 }, E820_ACPI), (Range { base: 0x7_2000, size: 0x2000 }, E820_ACPI)];
        let t = E820Table::build(&regions, &shared, &acpi).unwrap();
        let got: Vec<(u64, u64, u32)> = t.entries().iter().map(|e| (e.addr, e.size, e.kind)).collect();
        assert_eq!(
            got,
            [
                (0, 0x7_2000, E820_RAM),
                (0x7_2000, 0x2000, E820_ACPI),
                (0x7_4000, 0xA_0000 - 0x7_4000, E820_RAM),
                (0xA_0000, 0x6_0000, E820_RESERVED),
                (0x10_0000, 64 * MIB - 0x10_0000, E820_RAM),
                (0x1000_0000, 0x1_0000, E820_RESERVED),
                (0x4000_0000, 0x1_0000, E820_RESERVED),
            ]
        );
        // The ACPI range at 0xE0000 lies in the legacy hole, which is reserved as a whole.
        // Entries never overlap.
        let mut end = 0;
        for e in t.entries() {
            assert!(e.addr >= end);
            end = e.addr + e.size;
        }
    }

    #[test]
    fn e820_full_is_an_error() {
        let regions: Vec<RamRegion> = (0..20).map(|i| ram(i * 0x20_0000 + 0x100_0000, 0x1000)).collect();
        let carves: Vec<(Range, u32)> =
            (0..200).map(|i| (Range { base: i * 0x2000, size: 0x1000 }, E820_ACPI)).collect();
        assert!(E820Table::build(&regions, &[], &carves).is_ok());
        let many: Vec<Range> = (0..200).map(|i| Range { base: (1 << 40) + i * 0x2000, size: 0x1000 }).collect();
        assert_eq!(E820Table::build(&regions, &many, &[]), Err(E820Full));
    }

    #[test]
    fn zero_page_holds_header_and_loader_fields() {
        let b = image();
        let h = header(&b);
        let l = Layout::plan(&h, &[ram(0, 128 * MIB)], Some(0x1234), 9).unwrap();
        let e820 = E820Table::build(&[ram(0, 128 * MIB)], &[], &[]).unwrap();
        let mut zp = [0xAAu8; ZERO_PAGE_SIZE];
        write_zero_page(&mut zp, &b, &h, &BootParams { layout: &l, e820: &e820, acpi_rsdp: 0xE_0000 });
        // The header, from 0x1F1 to its end, as in the image (except what the loader writes).
        assert_eq!(&zp[0x202..0x206], b"HdrS");
        assert_eq!(zp[off::SETUP_SECTS], 7);
        assert_eq!(&zp[off::INIT_SIZE..off::INIT_SIZE + 4], &b[off::INIT_SIZE..off::INIT_SIZE + 4]);
        assert!(zp[0x26C..0x290].iter().all(|&x| x == 0));
        assert_eq!(zp[off::TYPE_OF_LOADER], 0xFF);
        assert_eq!(u32_at(&zp, off::CMD_LINE_PTR), CMDLINE_GPA as u32);
        assert_eq!(u32_at(&zp, off::EXT_CMD_LINE_PTR), 0);
        let initrd = l.initrd.unwrap();
        assert_eq!(u32_at(&zp, off::RAMDISK_IMAGE), initrd.base as u32);
        assert_eq!(u32_at(&zp, off::RAMDISK_SIZE), 0x1234);
        assert_eq!(u64_at(&zp, off::ACPI_RSDP_ADDR), 0xE_0000);
        assert_eq!(zp[off::E820_ENTRIES], 3);
        assert_eq!(u64_at(&zp, off::E820_TABLE), 0);
        assert_eq!(u64_at(&zp, off::E820_TABLE + 8), 0xA_0000);
        assert_eq!(u32_at(&zp, off::E820_TABLE + 16), E820_RAM);
        assert_eq!(u64_at(&zp, off::E820_TABLE + 20), 0xA_0000);
        assert_eq!(u32_at(&zp, off::E820_TABLE + 36), E820_RESERVED);
        assert_eq!(u64_at(&zp, off::E820_TABLE + 2 * 20), 0x10_0000);
        // Everything the loader does not write is zero: the sentinel, screen_info, ...
        assert_eq!(zp[0x1EF], 0);
        assert!(zp[..0x70].iter().all(|&x| x == 0));
        assert!(zp[0x2D0 + 3 * 20..].iter().all(|&x| x == 0));
    }

    #[test]
    fn zero_page_64_bit_fields_above_4g() {
        let b = image();
        let h = SetupHeader { xloadflags: XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G, ..header(&b) };
        let regions = [ram(0, 64 * MIB), ram(5 << 30, 64 * MIB)];
        let l = Layout::plan(&h, &regions, Some(0x1000), 0).unwrap();
        let e820 = E820Table::build(&regions, &[], &[]).unwrap();
        let mut zp = [0u8; ZERO_PAGE_SIZE];
        write_zero_page(&mut zp, &b, &h, &BootParams { layout: &l, e820: &e820, acpi_rsdp: 0 });
        let initrd = l.initrd.unwrap();
        assert!(initrd.base >= 5 << 30);
        assert_eq!(u32_at(&zp, off::EXT_RAMDISK_IMAGE), (initrd.base >> 32) as u32);
        assert_eq!(u32_at(&zp, off::RAMDISK_IMAGE), initrd.base as u32);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..0x400), len in any::<u64>())| {
            let mut b = image();
            for (i, x) in bytes.iter().enumerate() {
                if let Some(slot) = b.get_mut(0x1F0 + i) { *slot = *x; }
            }
            b[off::HEADER..off::HEADER + 4].copy_from_slice(&MAGIC);
            let h = SetupHeader::read(&b).unwrap();
            let _ = h.problems(len);
            let _ = Layout::plan(&h, &[ram(0, 128 * MIB), ram(u64::MAX - 0xFFF, 0x1000)], Some(len), len);
            let mut zp = [0u8; ZERO_PAGE_SIZE];
            if let Ok(l) = Layout::plan(&h, &[ram(0, 1 << 40)], Some(len % (1 << 30)), 0) {
                let e820 = E820Table::build(&[ram(0, 1 << 40)], &[], &[]).unwrap();
                write_zero_page(&mut zp, &b, &h, &BootParams { layout: &l, e820: &e820, acpi_rsdp: 0 });
            }
        });
    }
}
