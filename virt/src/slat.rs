//! Second-level address translation (SLAT): guest-physical → host-physical page tables.
//!
//! Intel's EPT and AMD's NPT are both 4-level radix trees of 512 eight-byte entries per
//! 4 KiB table, indexed by guest-physical address bits 47:39, 38:30, 29:21 and 20:12, with
//! 1 GiB leaves possible in the PDPT (level 3) and 2 MiB leaves in the PD (level 2), marked
//! by bit 7 in both. Only the entry *encoding* differs, so the walk, the page-size choice and
//! the overlap rules live once in [`Slat`] and the encodings are the two small
//! [`Encoding`] implementations [`Ept`] and [`Npt`].
//!
//! # EPT (Intel SDM Vol. 3C §29.3.2 "EPT Translation Mechanism", Tables 29-1 to 29-6; §29.3.7 "EPT and Memory Typing")
//! * bit 0 read, bit 1 write, bit 2 execute (supervisor-mode execute when mode-based
//!   execute control is on; we never enable it). An entry with bits 2:0 all zero is not
//!   present. Non-leaf entries are written R|W|X so that only leaves restrict access.
//! * Leaf entries: bits 5:3 EPT memory type (0 = UC, 6 = WB), bit 6 "ignore PAT" (IPAT),
//!   bit 7 = page (in PDPTE and PDE only; it is reserved in the PML4E and ignored in PTEs).
//! * We leave IPAT = 0: the effective type is the combination of the EPT type and the
//!   guest's PAT type (SDM §29.3.7.2). For UC leaves (device MMIO) that is always UC; for WB
//!   RAM the guest can still choose UC/WC for its own mappings, as on bare metal.
//! * Write without read is an EPT misconfiguration (§29.3.3.1), so [`Ept`] refuses it;
//!   execute-only leaves are encoded, but they require `IA32_VMX_EPT_VPID_CAP` bit 0, which
//!   the VT-x backend has to check.
//! * The EPT pointer ([`Slat::eptp`]): bits 2:0 paging-structure memory type (WB = 6), bits
//!   5:3 page-walk length minus one (3), bits 51:12 the PML4 address (SDM §25.6.11).
//!
//! # NPT (AMD APM Vol. 2 §15.25 "Nested Paging")
//! * Ordinary long-mode entries (APM §5.3): bit 0 P, bit 1 R/W, bit 2 U/S, bit 3 PWT,
//!   bit 4 PCD, bit 7 PS (in PDPTE/PDE), bit 63 NX.
//! * Nested walks are treated as user-mode accesses (APM §15.25.5), so U/S must be set on
//!   every level; non-leaf entries are P|RW|U.
//! * There is no "not readable": P means readable, so [`Npt`] refuses `read: false`.
//!   Execute permission is NX = 0; NX requires the host to run with `EFER.NXE = 1`
//!   (the kernel's own page tables already use NX).
//! * Memory type comes from the host PAT through the PAT index (PAT, PCD, PWT): with the
//!   power-on PAT value, index 0 (none set) is WB and index 3 (PCD|PWT) is UC. The PAT bit
//!   (bit 7 in PTEs, bit 12 in large leaves) is never set, so large-leaf addresses are
//!   masked from bit 21 / bit 30 upwards.
//!
//! # Page-size choice and overlap
//! [`Slat::map`] walks the range from low to high and at each step uses the largest page
//! (1 GiB, 2 MiB, else 4 KiB) for which the current GPA and HPA are both aligned, the rest of
//! the range is at least that large, large pages are allowed, and the slot is still empty.
//! Existing large pages are never split: before writing anything the whole range is checked,
//! and mapping over any existing mapping fails with [`MapError::AlreadyMapped`] carrying the
//! lowest conflicting GPA, leaving the tables unchanged. Running out of tables
//! ([`MapError::OutOfTables`]) can leave the range partly mapped; the pool is sized at build
//! time, so that is a sizing bug to be reported, not recovered from.

use core::marker::PhantomData;

/// Bytes in one page table (and in the smallest page).
pub const TABLE_BYTES: u64 = 4096;
/// Entries in one page table.
pub const ENTRIES: usize = 512;
/// Guest-physical addresses are limited to 48 bits (4-level tables).
pub const GUEST_PHYS_LIMIT: u64 = 1 << 48;
/// Host-physical addresses are limited to 52 bits (the architectural maximum).
pub const HOST_PHYS_LIMIT: u64 = 1 << 52;

/// Physical-address bits 51:12 of an entry.
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// Bit 7: the entry maps a page (PDPTE, PDE) — the same in EPT and NPT.
const LARGE: u64 = 1 << 7;

/// Cacheability of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryType {
    /// Write-back: RAM.
    WriteBack,
    /// Uncacheable: device memory (MMIO).
    Uncacheable,
}

/// Access rights and memory type of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    /// The guest may read.
    pub read: bool,
    /// The guest may write.
    pub write: bool,
    /// The guest may execute.
    pub execute: bool,
    /// Cacheability.
    pub memory_type: MemoryType,
}

impl Attributes {
    /// Read, write, execute; write-back (ordinary partition RAM).
    pub const RWX: Self = Self { read: true, write: true, execute: true, memory_type: MemoryType::WriteBack };
    /// Read, write; write-back (shared data memory).
    pub const RW: Self = Self { read: true, write: true, execute: false, memory_type: MemoryType::WriteBack };
    /// Read, execute; write-back.
    pub const RX: Self = Self { read: true, write: false, execute: true, memory_type: MemoryType::WriteBack };
    /// Read only; write-back.
    pub const R: Self = Self { read: true, write: false, execute: false, memory_type: MemoryType::WriteBack };
    /// Read, write; uncacheable (assigned device MMIO).
    pub const MMIO: Self = Self { read: true, write: true, execute: false, memory_type: MemoryType::Uncacheable };
}

/// Size of a leaf page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PageSize {
    /// 4 KiB, a PTE (level 1).
    Size4K,
    /// 2 MiB, a PDE with bit 7 (level 2).
    Size2M,
    /// 1 GiB, a PDPTE with bit 7 (level 3).
    Size1G,
}

impl PageSize {
    /// Size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size4K => 1 << 12,
            Self::Size2M => 1 << 21,
            Self::Size1G => 1 << 30,
        }
    }

    /// The table level (1 = PT … 4 = PML4) whose entries map pages of this size.
    pub const fn level(self) -> u8 {
        match self {
            Self::Size4K => 1,
            Self::Size2M => 2,
            Self::Size1G => 3,
        }
    }

    const fn for_level(level: u8) -> Option<Self> {
        match level {
            1 => Some(Self::Size4K),
            2 => Some(Self::Size2M),
            3 => Some(Self::Size1G),
            _ => None,
        }
    }
}

/// Bytes covered by one entry of a table at `level` (1..=4).
const fn entry_span(level: u8) -> u64 {
    1 << (12 + 9 * (level as u32 - 1))
}

/// Index into the table at `level` for `gpa`.
const fn index(gpa: u64, level: u8) -> usize {
    ((gpa >> (12 + 9 * (level as u32 - 1))) & 0x1FF) as usize
}

/// One SLAT entry encoding (EPT or NPT).
pub trait Encoding {
    /// Short name for diagnostics ("EPT", "NPT").
    const NAME: &'static str;

    /// A non-leaf entry pointing at the next-level table at `phys`.
    fn table_entry(phys: u64) -> u64;
    /// A leaf entry mapping `hpa` (aligned to `size`) with `attrs`, or `None` if the
    /// encoding cannot express `attrs`.
    fn leaf_entry(hpa: u64, attrs: Attributes, size: PageSize) -> Option<u64>;
    /// Whether `entry` is present (maps a page or a table).
    fn is_present(entry: u64) -> bool;
    /// Whether a present `entry` at `level` (1..=4) maps a page rather than a table.
    fn is_leaf(entry: u64, level: u8) -> bool {
        match level {
            1 => true,
            2 | 3 => entry & LARGE != 0,
            _ => false,
        }
    }
    /// Address of the table a non-leaf entry points at.
    fn table_address(entry: u64) -> u64 {
        entry & ADDR_MASK
    }
    /// Host-physical base and attributes of a leaf entry of `size`, or `None` if the entry
    /// holds a memory type this crate does not produce.
    fn decode_leaf(entry: u64, size: PageSize) -> Option<(u64, Attributes)>;
}

/// Physical-address mask of a leaf of `size`.
const fn leaf_mask(size: PageSize) -> u64 {
    ADDR_MASK & !(size.bytes() - 1)
}

/// Intel EPT entry encoding (SDM Vol. 3C §29.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ept;

impl Ept {
    /// Read access (bit 0).
    pub const READ: u64 = 1 << 0;
    /// Write access (bit 1).
    pub const WRITE: u64 = 1 << 1;
    /// Execute access (bit 2).
    pub const EXECUTE: u64 = 1 << 2;
    /// Shift of the leaf memory-type field (bits 5:3).
    pub const MEMORY_TYPE_SHIFT: u32 = 3;
    /// EPT memory type UC.
    pub const MEMORY_TYPE_UC: u64 = 0;
    /// EPT memory type WB.
    pub const MEMORY_TYPE_WB: u64 = 6;
    /// Ignore guest PAT (bit 6); never set by this crate (see the module notes).
    pub const IGNORE_PAT: u64 = 1 << 6;
    /// Leaf in a PDPTE/PDE (bit 7).
    pub const LARGE: u64 = LARGE;
}

impl Encoding for Ept {
    const NAME: &'static str = "EPT";

    fn table_entry(phys: u64) -> u64 {
        (phys & ADDR_MASK) | Self::READ | Self::WRITE | Self::EXECUTE
    }

    fn leaf_entry(hpa: u64, attrs: Attributes, size: PageSize) -> Option<u64> {
        if !attrs.read && (attrs.write || !attrs.execute) {
            return None;
        }
        let mut e = hpa & leaf_mask(size);
        if attrs.read {
            e |= Self::READ;
        }
        if attrs.write {
            e |= Self::WRITE;
        }
        if attrs.execute {
            e |= Self::EXECUTE;
        }
        let mt = match attrs.memory_type {
            MemoryType::WriteBack => Self::MEMORY_TYPE_WB,
            MemoryType::Uncacheable => Self::MEMORY_TYPE_UC,
        };
        e |= mt << Self::MEMORY_TYPE_SHIFT;
        if size != PageSize::Size4K {
            e |= Self::LARGE;
        }
        Some(e)
    }

    fn is_present(entry: u64) -> bool {
        entry & (Self::READ | Self::WRITE | Self::EXECUTE) != 0
    }

    fn decode_leaf(entry: u64, size: PageSize) -> Option<(u64, Attributes)> {
        let memory_type = match (entry >> Self::MEMORY_TYPE_SHIFT) & 7 {
            Self::MEMORY_TYPE_WB => MemoryType::WriteBack,
            Self::MEMORY_TYPE_UC => MemoryType::Uncacheable,
            _ => return None,
        };
        let attrs = Attributes {
            read: entry & Self::READ != 0,
            write: entry & Self::WRITE != 0,
            execute: entry & Self::EXECUTE != 0,
            memory_type,
        };
        Some((entry & leaf_mask(size), attrs))
    }
}

/// AMD NPT entry encoding (APM Vol. 2 §15.25, long-mode entries of §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Npt;

impl Npt {
    /// Present (bit 0).
    pub const PRESENT: u64 = 1 << 0;
    /// Writable (bit 1).
    pub const WRITABLE: u64 = 1 << 1;
    /// User (bit 2); required on every level.
    pub const USER: u64 = 1 << 2;
    /// Page write-through (bit 3), PAT index bit 0.
    pub const PWT: u64 = 1 << 3;
    /// Page cache disable (bit 4), PAT index bit 1.
    pub const PCD: u64 = 1 << 4;
    /// Page size (bit 7) in a PDPTE/PDE.
    pub const LARGE: u64 = LARGE;
    /// No execute (bit 63).
    pub const NO_EXECUTE: u64 = 1 << 63;
}

impl Encoding for Npt {
    const NAME: &'static str = "NPT";

    fn table_entry(phys: u64) -> u64 {
        (phys & ADDR_MASK) | Self::PRESENT | Self::WRITABLE | Self::USER
    }

    fn leaf_entry(hpa: u64, attrs: Attributes, size: PageSize) -> Option<u64> {
        if !attrs.read {
            return None;
        }
        let mut e = (hpa & leaf_mask(size)) | Self::PRESENT | Self::USER;
        if attrs.write {
            e |= Self::WRITABLE;
        }
        if !attrs.execute {
            e |= Self::NO_EXECUTE;
        }
        if attrs.memory_type == MemoryType::Uncacheable {
            e |= Self::PCD | Self::PWT;
        }
        if size != PageSize::Size4K {
            e |= Self::LARGE;
        }
        Some(e)
    }

    fn is_present(entry: u64) -> bool {
        entry & Self::PRESENT != 0
    }

    fn decode_leaf(entry: u64, size: PageSize) -> Option<(u64, Attributes)> {
        let memory_type = match entry & (Self::PCD | Self::PWT) {
            0 => MemoryType::WriteBack,
            x if x == Self::PCD | Self::PWT => MemoryType::Uncacheable,
            _ => return None,
        };
        let attrs = Attributes {
            read: true,
            write: entry & Self::WRITABLE != 0,
            execute: entry & Self::NO_EXECUTE == 0,
            memory_type,
        };
        Some((entry & leaf_mask(size), attrs))
    }
}

/// Where page tables come from.
///
/// The kernel backs it with static, 4 KiB-aligned arrays whose physical address equals
/// their virtual address ([`ArrayPool::new`]); host tests use [`ArrayPool::with_base`]
/// with a made-up base address.
pub trait FramePool {
    /// A fresh table and its physical address (4 KiB aligned, below 2^52). Its contents
    /// need not be zero: [`Slat`] clears it.
    fn alloc(&mut self) -> Option<(u64, &mut [u64; 512])>;
    /// The table at physical address `phys`, if this pool handed it out.
    fn table(&mut self, phys: u64) -> Option<&mut [u64; 512]>;
}

/// A [`FramePool`] over a slice of tables that lie at consecutive 4 KiB physical addresses
/// starting at `base`.
#[derive(Debug)]
pub struct ArrayPool<'a> {
    tables: &'a mut [[u64; 512]],
    base: u64,
    used: usize,
}

impl<'a> ArrayPool<'a> {
    /// A pool over tables that are identity-mapped (physical address == virtual address),
    /// as in the hypervisor. The slice must start 4 KiB aligned (put the static array in a
    /// `#[repr(align(4096))]` struct), or every mapping fails with [`MapError::PoolAddress`].
    pub fn new(tables: &'a mut [[u64; 512]]) -> Self {
        let base = tables.as_ptr() as u64;
        Self::with_base(tables, base)
    }

    /// A pool whose table `i` has physical address `base + i * 4096` (host tests, or tables
    /// not identity-mapped). `base` must be 4 KiB aligned, or every mapping fails with
    /// [`MapError::PoolAddress`].
    pub fn with_base(tables: &'a mut [[u64; 512]], base: u64) -> Self {
        Self { tables, base, used: 0 }
    }

    /// Tables handed out so far.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Tables still available.
    pub fn remaining(&self) -> usize {
        self.tables.len() - self.used
    }
}

impl FramePool for ArrayPool<'_> {
    fn alloc(&mut self) -> Option<(u64, &mut [u64; 512])> {
        let i = self.used;
        let phys = self.base.checked_add((i as u64).checked_mul(TABLE_BYTES)?)?;
        let table = self.tables.get_mut(i)?;
        self.used = i + 1;
        Some((phys, table))
    }

    fn table(&mut self, phys: u64) -> Option<&mut [u64; 512]> {
        let off = phys.checked_sub(self.base)?;
        if !off.is_multiple_of(TABLE_BYTES) {
            return None;
        }
        let i = usize::try_from(off / TABLE_BYTES).ok()?;
        if i >= self.used {
            return None;
        }
        self.tables.get_mut(i)
    }
}

/// Why [`Slat::new`] or [`Slat::map`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// `gpa`, `hpa` or `size` is not a multiple of 4 KiB.
    Misaligned {
        /// Guest-physical start.
        gpa: u64,
        /// Host-physical start.
        hpa: u64,
        /// Length.
        size: u64,
    },
    /// Part of the range is mapped already; `gpa` is the lowest such address.
    AlreadyMapped {
        /// Lowest guest-physical address already mapped.
        gpa: u64,
    },
    /// The frame pool is empty.
    OutOfTables,
    /// The guest range ends above 2^48 or the host range above 2^52.
    AddressTooLarge {
        /// Guest-physical start of the rejected range.
        gpa: u64,
    },
    /// The encoding cannot express these attributes (EPT: write without read, or no access
    /// at all; NPT: not readable).
    UnsupportedAttributes,
    /// The pool handed out a table at an unusable physical address (not 4 KiB aligned or
    /// above 2^52).
    PoolAddress {
        /// The address it handed out.
        phys: u64,
    },
    /// An entry points at a table the pool does not know (the tables were built with a
    /// different pool, or corrupted).
    UnknownTable {
        /// The table address found in an entry.
        phys: u64,
    },
}

/// Result of [`Slat::translate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Host-physical address the guest-physical address maps to.
    pub hpa: u64,
    /// Attributes of the leaf.
    pub attrs: Attributes,
    /// Size of the leaf page.
    pub page_size: PageSize,
}

/// One leaf mapping, as reported by [`Slat::for_each_mapping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// Guest-physical base of the page.
    pub gpa: u64,
    /// Host-physical base of the page.
    pub hpa: u64,
    /// Page size.
    pub size: PageSize,
    /// Attributes.
    pub attrs: Attributes,
}

/// A second-level page-table tree with encoding `E`, rooted at a PML4 from a [`FramePool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slat<E: Encoding> {
    root: u64,
    encoding: PhantomData<fn() -> E>,
}

/// Allocates and clears one table.
fn alloc_table(pool: &mut impl FramePool) -> Result<u64, MapError> {
    let (phys, table) = pool.alloc().ok_or(MapError::OutOfTables)?;
    if !phys.is_multiple_of(TABLE_BYTES) || phys >= HOST_PHYS_LIMIT {
        return Err(MapError::PoolAddress { phys });
    }
    table.fill(0);
    Ok(phys)
}

fn read_entry(pool: &mut impl FramePool, table: u64, idx: usize) -> Result<u64, MapError> {
    let t = pool.table(table).ok_or(MapError::UnknownTable { phys: table })?;
    t.get(idx).copied().ok_or(MapError::UnknownTable { phys: table })
}

fn write_entry(pool: &mut impl FramePool, table: u64, idx: usize, value: u64) -> Result<(), MapError> {
    let t = pool.table(table).ok_or(MapError::UnknownTable { phys: table })?;
    let slot = t.get_mut(idx).ok_or(MapError::UnknownTable { phys: table })?;
    *slot = value;
    Ok(())
}

impl<E: Encoding> Slat<E> {
    /// An empty tree: allocates the root (PML4) table from `pool`.
    pub fn new(pool: &mut impl FramePool) -> Result<Self, MapError> {
        Ok(Self::from_root(alloc_table(pool)?))
    }

    /// A handle to an existing tree rooted at `root` (built earlier with the same pool).
    pub const fn from_root(root: u64) -> Self {
        Self { root, encoding: PhantomData }
    }

    /// Physical address of the root (PML4) table.
    pub const fn root(&self) -> u64 {
        self.root
    }

    /// Maps `[gpa, gpa + size)` to `[hpa, hpa + size)` with `attrs`, using 1 GiB and 2 MiB
    /// pages where alignment allows and `allow_large` is set, 4 KiB pages otherwise.
    ///
    /// A zero `size` maps nothing. See the module notes for the page-size choice and the
    /// overlap rule.
    pub fn map(
        &mut self,
        pool: &mut impl FramePool,
        gpa: u64,
        hpa: u64,
        size: u64,
        attrs: Attributes,
        allow_large: bool,
    ) -> Result<(), MapError> {
        if !(gpa | hpa | size).is_multiple_of(TABLE_BYTES) {
            return Err(MapError::Misaligned { gpa, hpa, size });
        }
        let too_large = MapError::AddressTooLarge { gpa };
        let end = gpa.checked_add(size).filter(|&e| e <= GUEST_PHYS_LIMIT).ok_or(too_large)?;
        hpa.checked_add(size).filter(|&e| e <= HOST_PHYS_LIMIT).ok_or(too_large)?;
        if size == 0 {
            return Ok(());
        }
        E::leaf_entry(hpa, attrs, PageSize::Size4K).ok_or(MapError::UnsupportedAttributes)?;
        if let Some(conflict) = self.first_mapped(pool, self.root, 4, 0, gpa, end)? {
            return Err(MapError::AlreadyMapped { gpa: conflict });
        }

        let mut cur = gpa;
        while cur < end {
            let host = hpa + (cur - gpa);
            let remaining = end - cur;
            let mut table = self.root;
            let mut level: u8 = 4;
            let step = loop {
                let idx = index(cur, level);
                let entry = read_entry(pool, table, idx)?;
                let present = E::is_present(entry);
                if let Some(ps) = PageSize::for_level(level) {
                    let bytes = ps.bytes();
                    let eligible = ps == PageSize::Size4K
                        || (allow_large
                            && cur.is_multiple_of(bytes)
                            && host.is_multiple_of(bytes)
                            && remaining >= bytes);
                    if eligible && !present {
                        let leaf = E::leaf_entry(host, attrs, ps).ok_or(MapError::UnsupportedAttributes)?;
                        write_entry(pool, table, idx, leaf)?;
                        break bytes;
                    }
                }
                if level == 1 || (present && E::is_leaf(entry, level)) {
                    // Unreachable after the overlap check, kept so that a corrupted tree
                    // is never silently overwritten.
                    return Err(MapError::AlreadyMapped { gpa: cur });
                }
                table = if present {
                    E::table_address(entry)
                } else {
                    let new = alloc_table(pool)?;
                    write_entry(pool, table, idx, E::table_entry(new))?;
                    new
                };
                level -= 1;
            };
            cur += step;
        }
        Ok(())
    }

    /// Lowest GPA in `[start, end)` that the subtree `table` (at `level`, covering GPAs from
    /// `base`) already maps.
    fn first_mapped(
        &self,
        pool: &mut impl FramePool,
        table: u64,
        level: u8,
        base: u64,
        start: u64,
        end: u64,
    ) -> Result<Option<u64>, MapError> {
        let span = entry_span(level);
        let lo = core::cmp::max(start, base);
        let hi = core::cmp::min(end, base.saturating_add(span * ENTRIES as u64));
        if lo >= hi {
            return Ok(None);
        }
        let first = ((lo - base) / span) as usize;
        let last = ((hi - 1 - base) / span) as usize;
        for idx in first..=last {
            let entry = read_entry(pool, table, idx)?;
            if !E::is_present(entry) {
                continue;
            }
            let entry_base = base + idx as u64 * span;
            if E::is_leaf(entry, level) {
                return Ok(Some(core::cmp::max(entry_base, start)));
            }
            if level > 1 {
                let sub = self.first_mapped(pool, E::table_address(entry), level - 1, entry_base, start, end)?;
                if sub.is_some() {
                    return Ok(sub);
                }
            }
        }
        Ok(None)
    }

    /// What `gpa` maps to, or `None` if it is not mapped (or above 2^48).
    pub fn translate(&self, pool: &mut impl FramePool, gpa: u64) -> Option<Translation> {
        if gpa >= GUEST_PHYS_LIMIT {
            return None;
        }
        let mut table = self.root;
        for level in (1..=4u8).rev() {
            let entry = read_entry(pool, table, index(gpa, level)).ok()?;
            if !E::is_present(entry) {
                return None;
            }
            if E::is_leaf(entry, level) {
                let page_size = PageSize::for_level(level)?;
                let (base, attrs) = E::decode_leaf(entry, page_size)?;
                return Some(Translation { hpa: base | (gpa & (page_size.bytes() - 1)), attrs, page_size });
            }
            table = E::table_address(entry);
        }
        None
    }

    /// Calls `f` for every leaf mapping in ascending GPA order (leaves with a memory type
    /// this crate does not produce are skipped).
    pub fn for_each_mapping(&self, pool: &mut impl FramePool, mut f: impl FnMut(Mapping)) -> Result<(), MapError> {
        self.visit(pool, self.root, 4, 0, &mut f)
    }

    fn visit(
        &self,
        pool: &mut impl FramePool,
        table: u64,
        level: u8,
        base: u64,
        f: &mut impl FnMut(Mapping),
    ) -> Result<(), MapError> {
        let span = entry_span(level);
        for idx in 0..ENTRIES {
            let entry = read_entry(pool, table, idx)?;
            if !E::is_present(entry) {
                continue;
            }
            let gpa = base + idx as u64 * span;
            if E::is_leaf(entry, level) {
                if let Some(size) = PageSize::for_level(level)
                    && let Some((hpa, attrs)) = E::decode_leaf(entry, size)
                {
                    f(Mapping { gpa, hpa, size, attrs });
                }
            } else if level > 1 {
                self.visit(pool, E::table_address(entry), level - 1, gpa, f)?;
            }
        }
        Ok(())
    }
}

impl Slat<Ept> {
    /// The EPT pointer for the VMCS: root | page-walk length 4 (3 << 3) | WB paging-structure
    /// memory type (6). Accessed/dirty flags (bit 6) stay off. SDM Vol. 3C §25.6.11.
    pub const fn eptp(&self) -> u64 {
        self.root | (3 << 3) | 6
    }
}

impl Slat<Npt> {
    /// The nested CR3 for the VMCB (`N_CR3`): the root's physical address. APM §15.25.3.
    pub const fn ncr3(&self) -> u64 {
        self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    const KIB4: u64 = 1 << 12;
    const MIB2: u64 = 1 << 21;
    const GIB1: u64 = 1 << 30;
    const BASE: u64 = 0x7700_0000;

    fn tables(n: usize) -> Vec<[u64; 512]> {
        vec![[0xDEAD_BEEF_u64; 512]; n] // garbage: the builder must clear what it allocates
    }

    fn mappings<E: Encoding>(s: &Slat<E>, pool: &mut ArrayPool<'_>) -> Vec<Mapping> {
        let mut v = Vec::new();
        s.for_each_mapping(pool, |m| v.push(m)).unwrap();
        v
    }

    /// Entries along the walk for `gpa`: PML4E, PDPTE, PDE, PTE (as far as they go).
    fn walk_entries<E: Encoding>(s: &Slat<E>, pool: &mut ArrayPool<'_>, gpa: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut t = s.root();
        for level in (1..=4u8).rev() {
            let e = pool.table(t).unwrap()[index(gpa, level)];
            out.push(e);
            if !E::is_present(e) || E::is_leaf(e, level) {
                break;
            }
            t = E::table_address(e);
        }
        out
    }

    fn mixed<E: Encoding>() {
        let mut t = tables(16);
        let mut pool = ArrayPool::with_base(&mut t, BASE);
        let mut s = Slat::<E>::new(&mut pool).unwrap();
        let off = 0x1_0000_0000; // HPA = GPA + 4 GiB keeps alignments equal
        let (start, end) = (0x3FFF_E000u64, 0x8020_3000u64);
        s.map(&mut pool, start, start + off, end - start, Attributes::RWX, true).unwrap();
        let got: Vec<(u64, PageSize)> = mappings(&s, &mut pool).iter().map(|m| (m.gpa, m.size)).collect();
        assert_eq!(
            got,
            vec![
                (0x3FFF_E000, PageSize::Size4K),
                (0x3FFF_F000, PageSize::Size4K),
                (0x4000_0000, PageSize::Size1G),
                (0x8000_0000, PageSize::Size2M),
                (0x8020_0000, PageSize::Size4K),
                (0x8020_1000, PageSize::Size4K),
                (0x8020_2000, PageSize::Size4K),
            ]
        );
        // Every page boundary: first and last byte map, neighbours outside do not.
        for m in mappings(&s, &mut pool) {
            for gpa in [m.gpa, m.gpa + m.size.bytes() - 1, m.gpa + m.size.bytes() / 2] {
                let tr = s.translate(&mut pool, gpa).unwrap();
                assert_eq!(tr.hpa, gpa + off, "{} gpa {gpa:#x}", E::NAME);
                assert_eq!(tr.page_size, m.size);
                assert_eq!(tr.attrs, Attributes::RWX);
            }
        }
        assert_eq!(s.translate(&mut pool, start - 1), None);
        assert_eq!(s.translate(&mut pool, end), None);
        assert_eq!(s.translate(&mut pool, 0), None);
        assert_eq!(s.translate(&mut pool, u64::MAX), None);
        // PML4, PDPT, PD(0-1G), PT(0x3FE00000), PD(2-3G), PT(0x80200000)
        assert_eq!(pool.used(), 6);
    }

    #[test]
    fn ept_mixed_page_sizes() {
        mixed::<Ept>();
    }

    #[test]
    fn npt_mixed_page_sizes() {
        mixed::<Npt>();
    }

    #[test]
    fn large_pages_need_alignment_of_both_addresses_and_permission() {
        let mut t = tables(8);
        let mut pool = ArrayPool::with_base(&mut t, BASE);
        let mut s = Slat::<Ept>::new(&mut pool).unwrap();
        // GPA 2 MiB aligned, HPA only 4 KiB aligned: 4 KiB pages only.
        s.map(&mut pool, 0x20_0000, 0x1_0000_1000, MIB2, Attributes::RW, true).unwrap();
        // Aligned but large pages not allowed.
        s.map(&mut pool, 0x40_0000, 0x40_0000, MIB2, Attributes::RW, false).unwrap();
        let m = mappings(&s, &mut pool);
        assert_eq!(m.len(), 1024);
        assert!(m.iter().all(|m| m.size == PageSize::Size4K));
        assert_eq!(s.translate(&mut pool, 0x3F_FFFF).unwrap().hpa, 0x1_0020_0FFF);
    }

    #[test]
    fn ept_exact_entry_bits() {
        let mut t = tables(8);
        let mut pool = ArrayPool::with_base(&mut t, BASE);
        let mut s = Slat::<Ept>::new(&mut pool).unwrap();
        assert_eq!(s.root(), BASE);
        assert_eq!(s.eptp(), BASE | 0x1E);
        s.map(&mut pool, 0x1000, 0x20_0000, KIB4, Attributes::RWX, true).unwrap();
        s.map(&mut pool, 0x40_0000, 0xFEC0_0000, MIB2, Attributes { execute: true, ..Attributes::MMIO }, true).unwrap();
        let rx_uc = Attributes { read: true, write: false, execute: true, memory_type: MemoryType::Uncacheable };
        s.map(&mut pool, 0x60_0000, 0x20_0000, MIB2, rx_uc, true).unwrap();
        s.map(&mut pool, GIB1, 0x1_4000_0000, GIB1, Attributes::RW, true).unwrap();
        // Tables: PML4 @BASE, PDPT @+1, PD @+2, PT @+3.
        let (pdpt, pd, pt) = (BASE + 0x1000, BASE + 0x2000, BASE + 0x3000);
        assert_eq!(walk_entries(&s, &mut pool, 0x1000), vec![pdpt | 7, pd | 7, pt | 7, 0x20_0000 | 0x37]);
        assert_eq!(walk_entries(&s, &mut pool, 0x40_0000)[2], 0xFEC0_0000 | 0x80 | 0x7);
        assert_eq!(walk_entries(&s, &mut pool, 0x60_0000)[2], 0x20_0000 | 0x80 | 0x5);
        assert_eq!(walk_entries(&s, &mut pool, GIB1), vec![pdpt | 7, 0x1_4000_0000 | 0x80 | 0x30 | 0x3]);
        assert_eq!(s.translate(&mut pool, 0x60_0123).unwrap().attrs, rx_uc);
    }

    #[test]
    fn npt_exact_entry_bits() {
        let mut t = tables(8);
        let mut pool = ArrayPool::with_base(&mut t, BASE);
        let mut s = Slat::<Npt>::new(&mut pool).unwrap();
        assert_eq!(s.ncr3(), BASE);
        s.map(&mut pool, 0x1000, 0x20_0000, KIB4, Attributes::RWX, true).unwrap();
        s.map(&mut pool, 0x40_0000, 0xFEC0_0000, MIB2, Attributes::MMIO, true).unwrap();
        s.map(&mut pool, GIB1, 0x1_4000_0000, GIB1, Attributes::RX, true).unwrap();
        s.map(&mut pool, 0x2000, 0x30_0000, KIB4, Attributes::R, true).unwrap();
        let (pdpt, pd, pt) = (BASE + 0x1000, BASE + 0x2000, BASE + 0x3000);
        assert_eq!(walk_entries(&s, &mut pool, 0x1000), vec![pdpt | 7, pd | 7, pt | 7, 0x20_0000 | 0x7]);
        assert_eq!(walk_entries(&s, &mut pool, 0x2000)[3], 0x30_0000 | 0x5 | (1 << 63));
        assert_eq!(walk_entries(&s, &mut pool, 0x40_0000)[2], 0xFEC0_0000 | (1 << 63) | 0x80 | 0x18 | 0x7);
        assert_eq!(walk_entries(&s, &mut pool, GIB1), vec![pdpt | 7, 0x1_4000_0000 | 0x80 | 0x5]);
        assert_eq!(s.translate(&mut pool, 0x40_0000).unwrap().attrs, Attributes::MMIO);
        assert_eq!(s.translate(&mut pool, 0x2000).unwrap().attrs, Attributes::R);
    }

    #[test]
    fn pool_exhaustion() {
        let mut t = tables(3);
        let mut pool = ArrayPool::with_base(&mut t, BASE);
        let mut s = Slat::<Ept>::new(&mut pool).unwrap();
        // PDPT + PD fit; the PT for a 4 KiB page does not.
        assert_eq!(s.map(&mut pool, 0, 0, KIB4, Attributes::RWX, true), Err(MapError::OutOfTables));
        // A 2 MiB page still fits into the (empty) PD left behind.
        s.map(&mut pool, MIB2, MIB2, MIB2, Attributes::RWX, true).unwrap();
        assert_eq!(pool.remaining(), 0);
        let mut none: [[u64; 512]; 0] = [];
        assert_eq!(Slat::<Npt>::new(&mut ArrayPool::with_base(&mut none, BASE)), Err(MapError::OutOfTables));
    }

    #[test]
    fn empty_table_left_by_exhaustion_is_reused_with_smaller_pages() {
        let mut t = tables(3);
        let mut pool = ArrayPool::with_base(&mut t, BASE);
        let mut s = Slat::<Npt>::new(&mut pool).unwrap();
        // PDPT and PD allocated, the PT is not: the PD at GPA 0 stays behind, empty.
        assert_eq!(s.map(&mut pool, 0, 0, KIB4, Attributes::RWX, true), Err(MapError::OutOfTables));
        // The 1 GiB slot holds that table, so the mapping falls back to 2 MiB pages in it.
        s.map(&mut pool, 0, 0, GIB1, Attributes::RWX, true).unwrap();
        let m = mappings(&s, &mut pool);
        assert_eq!(m.len(), 512);
        assert!(m.iter().all(|m| m.size == PageSize::Size2M));
    }

    #[test]
    fn overlap_is_rejected_without_changes() {
        let mut t = tables(8);
        let mut pool = ArrayPool::with_base(&mut t, BASE);
        let mut s = Slat::<Ept>::new(&mut pool).unwrap();
        s.map(&mut pool, 0x5000, 0x5000, KIB4, Attributes::RWX, true).unwrap();
        assert_eq!(s.map(&mut pool, 0, 0, MIB2, Attributes::RWX, true), Err(MapError::AlreadyMapped { gpa: 0x5000 }));
        assert_eq!(s.translate(&mut pool, 0), None);
        s.map(&mut pool, GIB1, GIB1, GIB1, Attributes::RWX, true).unwrap();
        assert_eq!(
            s.map(&mut pool, GIB1 + MIB2, 0, KIB4, Attributes::RWX, true),
            Err(MapError::AlreadyMapped { gpa: GIB1 + MIB2 })
        );
        assert_eq!(
            s.map(&mut pool, GIB1 - KIB4, 0, 2 * KIB4, Attributes::RWX, true),
            Err(MapError::AlreadyMapped { gpa: GIB1 })
        );
        assert_eq!(s.translate(&mut pool, GIB1 - KIB4), None);
        // Adjacent ranges are fine.
        s.map(&mut pool, 0x4000, 0x4000, KIB4, Attributes::RWX, true).unwrap();
        s.map(&mut pool, 0x6000, 0x6000, KIB4, Attributes::RWX, true).unwrap();
    }

    #[test]
    fn argument_errors() {
        let mut t = tables(8);
        let mut pool = ArrayPool::with_base(&mut t, BASE);
        let mut s = Slat::<Ept>::new(&mut pool).unwrap();
        let a = Attributes::RWX;
        assert_eq!(
            s.map(&mut pool, 0x800, 0, KIB4, a, true),
            Err(MapError::Misaligned { gpa: 0x800, hpa: 0, size: KIB4 })
        );
        assert!(matches!(s.map(&mut pool, 0, 0x10, KIB4, a, true), Err(MapError::Misaligned { .. })));
        assert!(matches!(s.map(&mut pool, 0, 0, 100, a, true), Err(MapError::Misaligned { .. })));
        assert_eq!(
            s.map(&mut pool, GUEST_PHYS_LIMIT, 0, KIB4, a, true),
            Err(MapError::AddressTooLarge { gpa: 1 << 48 })
        );
        assert_eq!(s.map(&mut pool, !0xFFF, 0, KIB4, a, true), Err(MapError::AddressTooLarge { gpa: !0xFFF }));
        assert!(matches!(s.map(&mut pool, 0, HOST_PHYS_LIMIT, KIB4, a, true), Err(MapError::AddressTooLarge { .. })));
        let write_only = Attributes { read: false, write: true, execute: false, memory_type: MemoryType::WriteBack };
        assert_eq!(s.map(&mut pool, 0, 0, KIB4, write_only, true), Err(MapError::UnsupportedAttributes));
        let nothing = Attributes { write: false, ..write_only };
        assert_eq!(s.map(&mut pool, 0, 0, KIB4, nothing, true), Err(MapError::UnsupportedAttributes));
        // Top page of the 48-bit space works.
        s.map(&mut pool, GUEST_PHYS_LIMIT - KIB4, 0x1000, KIB4, a, true).unwrap();
        assert_eq!(s.translate(&mut pool, GUEST_PHYS_LIMIT - 1).unwrap().hpa, 0x1FFF);
        s.map(&mut pool, 0x9000, 0, 0, a, true).unwrap();

        let mut t2 = tables(4);
        let mut p2 = ArrayPool::with_base(&mut t2, BASE);
        let mut n = Slat::<Npt>::new(&mut p2).unwrap();
        let exec_only = Attributes { read: false, write: false, execute: true, memory_type: MemoryType::WriteBack };
        assert_eq!(n.map(&mut p2, 0, 0, KIB4, exec_only, true), Err(MapError::UnsupportedAttributes));
        let mut t3 = tables(2);
        let mut p3 = ArrayPool::with_base(&mut t3, 0x1234);
        assert_eq!(Slat::<Ept>::new(&mut p3), Err(MapError::PoolAddress { phys: 0x1234 }));
    }

    #[test]
    fn pool_lookup() {
        let mut t = tables(2);
        let mut pool = ArrayPool::with_base(&mut t, BASE);
        assert!(pool.table(BASE).is_none()); // not handed out yet
        let (p, _) = pool.alloc().unwrap();
        assert_eq!(p, BASE);
        assert!(pool.table(BASE).is_some());
        assert!(pool.table(BASE + 8).is_none());
        assert!(pool.table(BASE - 0x1000).is_none());
        assert!(pool.table(BASE + 0x1000).is_none());
        let mut t2 = tables(1);
        let mut ident = ArrayPool::new(&mut t2);
        let expected = ident.tables.as_ptr() as u64;
        assert_eq!(ident.remaining(), 1);
        assert_eq!(ident.alloc().map(|(p, _)| p), Some(expected));
    }

    /// Random sequences of mappings against a simple model: successful mappings translate
    /// exactly, `AlreadyMapped` happens only on real overlap, nothing panics.
    mod model {
        use super::*;
        use proptest::prelude::*;

        fn op() -> impl Strategy<Value = (u64, u64, u64, bool, bool)> {
            let addr = prop_oneof![
                (0u64..1024).prop_map(|p| p * KIB4),
                (0u64..4).prop_map(|g| g * GIB1),
                (0u64..600).prop_map(|m| m * MIB2),
                Just(GUEST_PHYS_LIMIT - MIB2),
                any::<u64>(),
            ];
            let size = prop_oneof![
                (0u64..8).prop_map(|p| p * KIB4),
                (1u64..3).prop_map(|m| m * MIB2),
                Just(GIB1),
                Just(GIB1 + MIB2 + KIB4),
                any::<u64>(),
            ];
            (addr.clone(), addr, size, any::<bool>(), any::<bool>())
        }

        fn check<E: Encoding>(ops: &[(u64, u64, u64, bool, bool)]) {
            let mut t = tables(12);
            let mut pool = ArrayPool::with_base(&mut t, BASE);
            let mut s = Slat::<E>::new(&mut pool).unwrap();
            let mut model: Vec<(u64, u64, u64)> = Vec::new();
            for &(gpa, hpa, size, large, rw) in ops {
                let attrs = if rw { Attributes::RW } else { Attributes::RX };
                match s.map(&mut pool, gpa, hpa, size, attrs, large) {
                    Ok(()) => {
                        if size > 0 {
                            model.push((gpa, hpa, size))
                        }
                    }
                    Err(MapError::AlreadyMapped { gpa: at }) => {
                        assert!(at >= gpa && at < gpa + size);
                        assert!(model.iter().any(|&(g, _, n)| g <= at && at < g + n), "{at:#x}");
                    }
                    Err(MapError::OutOfTables) => return, // may leave a partial mapping
                    Err(_) => {}
                }
            }
            for &(g, h, n) in &model {
                for probe in [g, g + n - 1, g + n / 2, g + ((n / 3) & !0xFFF)] {
                    assert_eq!(s.translate(&mut pool, probe).map(|t| t.hpa), Some(h + (probe - g)));
                }
            }
            let maps = mappings(&s, &mut pool);
            let total: u64 = maps.iter().map(|m| m.size.bytes()).sum();
            assert_eq!(total, model.iter().map(|m| m.2).sum::<u64>());
            assert!(maps.windows(2).all(|w| w[0].gpa + w[0].size.bytes() <= w[1].gpa));
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

            #[test]
            fn ept(ops in proptest::collection::vec(op(), 1..8)) {
                check::<Ept>(&ops);
            }

            #[test]
            fn npt(ops in proptest::collection::vec(op(), 1..8)) {
                check::<Npt>(&ops);
            }
        }
    }
}
