//! The hypervisor's own page tables: identity mapping of RAM and the 32-bit MMIO hole,
//! with the kernel image split by section so no page is both writable and executable,
//! the null page and every stack guard page unmapped, and anything that is not RAM
//! uncached. Entry formats: Intel SDM Vol. 3 4.5 (4-level paging).

use crate::boot::bootinfo::BootInfo;
use crate::cpu::percpu::{self, MAX_CPUS};
use crate::log::{info, warn};
use core::cell::UnsafeCell;
use x86_64::PhysAddr;
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::paging::PhysFrame;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const HUGE: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;

const KIB4: u64 = 4096;
const MIB2: u64 = 2 << 20;
const GIB1: u64 = 1 << 30;
/// One PDPT covers 512 GiB; boards we target have far less.
const MAX_MAPPED: u64 = 512 * GIB1;

/// Tables: PML4, PDPT, 4 PDs for the low 4 GiB, one more PD per GiB of the board's RAM
/// above 4 GiB (used when the CPU lacks 1 GiB pages), and 8 PTs for the 2 MiB regions
/// split into 4 KiB pages: sized by the configuration (board/src/footprint.rs). RAM the
/// machine has beyond the board's is left unmapped (logged): no partition owns it.
const POOL_TABLES: usize = crate::config::BOOT_PAGE_TABLES;

#[repr(C, align(4096))]
struct Table([u64; 512]);

struct Pool {
    tables: UnsafeCell<[Table; POOL_TABLES]>,
}
// SAFETY: only the BSP writes the pool, once, in `install` before the APs exist.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool { tables: UnsafeCell::new([const { Table([0; 512]) }; POOL_TABLES]) };

unsafe extern "C" {
    static __kernel_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __kernel_end: u8;
}

/// Where the linker put the hypervisor image (`kernel/linker.ld`).
pub fn kernel_image() -> bulkhead_board::tables::PhysRange {
    let start = (&raw const __kernel_start) as u64;
    bulkhead_board::tables::PhysRange { base: start, size: (&raw const __kernel_end) as u64 - start }
}

struct Layout {
    start: u64,
    text_end: u64,
    rodata_end: u64,
    end: u64,
    guards: [u64; 4 * MAX_CPUS],
}

impl Layout {
    fn read() -> Self {
        let mut guards = [0; 4 * MAX_CPUS];
        for cpu in 0..MAX_CPUS {
            guards[cpu * 4..cpu * 4 + 4].copy_from_slice(&percpu::stacks(cpu).guard_pages());
        }
        Layout {
            start: kernel_image().base,
            text_end: (&raw const __text_end) as u64,
            rodata_end: (&raw const __rodata_end) as u64,
            end: kernel_image().end(),
            guards,
        }
    }

    /// Whether the 2 MiB region at `base` needs 4 KiB granularity.
    fn needs_split(&self, base: u64) -> bool {
        base == 0 || (base < self.end && self.start < base + MIB2)
    }

    /// Leaf entry for the 4 KiB page at `page`; `other` is used outside the kernel image.
    fn page_entry(&self, page: u64, other: u64) -> u64 {
        if page == 0 || self.guards.contains(&page) {
            0
        } else if page < self.start || page >= self.end {
            page | other
        } else if page < self.text_end {
            page | PRESENT
        } else if page < self.rodata_end {
            page | PRESENT | NO_EXECUTE
        } else {
            page | PRESENT | WRITABLE | NO_EXECUTE
        }
    }
}

struct Builder {
    next: usize,
    no_execute: u64,
}

impl Builder {
    fn alloc(&mut self) -> Option<&'static mut [u64; 512]> {
        if self.next == POOL_TABLES {
            return None;
        }
        // SAFETY: each table is handed out once, to the single writer (see `Pool`).
        let table = unsafe { &mut (*POOL.tables.get())[self.next].0 };
        self.next += 1;
        Some(table)
    }
}

fn table_address(table: &[u64; 512]) -> u64 {
    table.as_ptr() as u64
}

/// Builds the final page tables and switches to them; returns the new CR3 value.
/// BSP only, once; the APs load the same CR3 on start-up.
pub fn install(boot: &BootInfo, nx: bool, page_1gb: bool) -> u64 {
    let layout = Layout::read();
    let mut b = Builder { next: 0, no_execute: if nx { NO_EXECUTE } else { 0 } };
    let nx_bits = b.no_execute;
    let strip_nx = |entry: u64| if nx { entry } else { entry & !NO_EXECUTE };
    let pml4 = b.alloc().expect("page-table pool holds the PML4");
    let pdpt = b.alloc().expect("page-table pool holds the PDPT");
    pml4[0] = table_address(pdpt) | PRESENT | WRITABLE;

    let top = boot.ram_end().max(4 * GIB1).div_ceil(GIB1).min(MAX_MAPPED / GIB1) * GIB1;
    let cache = |start: u64, len: u64| {
        if boot.overlaps_ram(start, start + len) { 0 } else { WRITE_THROUGH | CACHE_DISABLE }
    };
    let mut mapped = 0;
    for gib in 0..top / GIB1 {
        let base = gib * GIB1;
        if base >= 4 * GIB1 && page_1gb {
            pdpt[gib as usize] = base | PRESENT | WRITABLE | HUGE | nx_bits | cache(base, GIB1);
            mapped = base + GIB1;
            continue;
        }
        let Some(pd) = b.alloc() else {
            warn!("paging: out of page tables, memory above {=u64:#x} is not mapped", base);
            break;
        };
        pdpt[gib as usize] = table_address(pd) | PRESENT | WRITABLE;
        for (j, pde) in pd.iter_mut().enumerate() {
            let region = base + j as u64 * MIB2;
            let other = PRESENT | WRITABLE | nx_bits | cache(region, MIB2);
            if layout.needs_split(region) {
                let pt = b.alloc().expect("page-table pool covers the kernel image");
                for (k, pte) in pt.iter_mut().enumerate() {
                    *pte = strip_nx(layout.page_entry(region + k as u64 * KIB4, other));
                }
                *pde = table_address(pt) | PRESENT | WRITABLE;
            } else {
                *pde = region | HUGE | other;
            }
        }
        mapped = base + GIB1;
    }

    if nx {
        // SAFETY: turning on NX only changes how the NX bit in our own tables is read.
        unsafe { Efer::update(|f| f.insert(EferFlags::NO_EXECUTE_ENABLE)) };
    }
    let root = table_address(pml4);
    // SAFETY: the new tables identity-map everything the kernel touches (its image,
    // stacks, boot information, ACPI tables, APIC/UART MMIO and ports are not memory).
    unsafe {
        Cr3::write(
            PhysFrame::from_start_address(PhysAddr::new(root)).expect("tables are page aligned"),
            Cr3Flags::empty(),
        )
    };
    info!(
        "paging: identity map up to {=u64:#x}, kernel [{=u64:#x}, {=u64:#x}) text RX / data NX, {=usize} tables",
        mapped, layout.start, layout.end, b.next
    );
    root
}

/// Leaf mappings found by [`audit`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Audit {
    pub leaves: u64,
    pub writable_executable: u64,
    /// First writable+executable address found, for the error message.
    pub first_bad: Option<u64>,
}

/// Walks the live tables under `root` and counts leaf mappings that are both writable and
/// executable (there must be none when NX is available).
pub fn audit(root: u64) -> Audit {
    fn walk(table: u64, level: u8, base: u64, inherited_x: bool, inherited_w: bool, out: &mut Audit) {
        // SAFETY: page tables are identity-mapped static memory built by `install`.
        let entries = unsafe { &*(table as *const [u64; 512]) };
        let span = 1u64 << (12 + 9 * (level as u32 - 1));
        for (i, &e) in entries.iter().enumerate() {
            if e & PRESENT == 0 {
                continue;
            }
            let va = base + i as u64 * span;
            let w = inherited_w && e & WRITABLE != 0;
            let x = inherited_x && e & NO_EXECUTE == 0;
            let leaf = level == 1 || (level <= 3 && e & HUGE != 0);
            if leaf {
                out.leaves += 1;
                if w && x {
                    out.writable_executable += 1;
                    out.first_bad.get_or_insert(va);
                }
            } else {
                walk(e & 0x000f_ffff_ffff_f000, level - 1, va, x, w, out);
            }
        }
    }
    let mut out = Audit::default();
    walk(root, 4, 0, true, true, &mut out);
    out
}
