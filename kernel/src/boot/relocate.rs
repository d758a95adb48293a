//! Moving what the bootloader left in partition memory into the hypervisor's own.
//!
//! GRUB chooses where the boot modules (the pristine payloads) and the boot information
//! go. Under UEFI it may pick memory that the configuration gives to a partition, which
//! the partition's start would zero. Before anything touches partition memory, the BSP
//! copies such pieces into free, usable memory inside the hypervisor's reserved region.

use crate::boot::bootinfo::BootInfo;
use crate::config::SYSTEM;
use crate::log::{error, info};
use bulkhead_board::tables::PhysRange;

const PAGE: u64 = 4096;

/// Whether `[base, base + size)` lies in memory some partition or shared region owns.
pub fn in_guest_memory(base: u64, size: u64) -> bool {
    let range = PhysRange { base, size };
    SYSTEM
        .partitions
        .iter()
        .flat_map(|p| p.memory.iter())
        .any(|m| range.overlaps(&PhysRange { base: m.host_base, size: m.size }))
        || SYSTEM.shared_memory.iter().any(|s| range.overlaps(&s.host))
}

/// Finds `size` bytes of free, usable memory in the reserved region, avoiding the kernel
/// image and everything in `busy`.
fn free_space(boot: &BootInfo, size: u64, busy: &[PhysRange]) -> Option<u64> {
    let reserved = SYSTEM.hypervisor.reserved;
    let size = size.div_ceil(PAGE) * PAGE;
    let mut candidate = reserved.base.div_ceil(PAGE) * PAGE;
    while candidate + size <= reserved.end() {
        let range = PhysRange { base: candidate, size };
        let blocker = core::iter::once(crate::boot::paging::kernel_image())
            .chain(busy.iter().copied())
            .find(|b| b.overlaps(&range));
        match blocker {
            Some(b) => candidate = b.end().div_ceil(PAGE) * PAGE,
            None if !boot.is_usable(range.base, range.end()) => candidate += PAGE,
            None => return Some(candidate),
        }
    }
    None
}

fn occupied(boot: &BootInfo, extra: &[PhysRange]) -> heapless::Vec<PhysRange, 40> {
    let mut busy = heapless::Vec::new();
    let _ = busy.push(PhysRange { base: boot.info_start, size: boot.info_end - boot.info_start });
    for m in &boot.modules {
        let _ = busy.push(PhysRange { base: m.start, size: m.end - m.start });
    }
    for &e in extra {
        let _ = busy.push(e);
    }
    busy
}

/// Copies `size` bytes from `from` to `to` (identity-mapped physical memory).
fn copy(from: u64, to: u64, size: u64) {
    // SAFETY: both ranges are identity-mapped RAM; `to` is free reserved memory chosen by
    // `free_space`, and `ptr::copy` tolerates overlap.
    unsafe { core::ptr::copy(from as *const u8, to as *mut u8, size as usize) };
}

/// If the boot information lies in partition memory, copies it to reserved memory and
/// returns its new address (to be parsed again); otherwise `None`.
pub fn boot_info(boot: &BootInfo) -> Option<u32> {
    let size = boot.info_end - boot.info_start;
    if !in_guest_memory(boot.info_start, size) {
        return None;
    }
    let Some(to) = free_space(boot, size, &occupied(boot, &[])) else {
        error!("relocate: no room in the hypervisor's reserved memory for the boot information");
        return None;
    };
    copy(boot.info_start, to, size);
    info!(
        "relocate: boot information moved from {=u64:#x} to {=u64:#x} (it lay in partition memory)",
        boot.info_start, to
    );
    u32::try_from(to).ok()
}

/// Moves every boot module that lies in partition memory into reserved memory.
pub fn modules(boot: &mut BootInfo) {
    let mut placed: heapless::Vec<PhysRange, 16> = heapless::Vec::new();
    for i in 0..boot.modules.len() {
        let m = boot.modules[i];
        let size = m.end - m.start;
        if !in_guest_memory(m.start, size) {
            continue;
        }
        let Some(to) = free_space(boot, size, &occupied(boot, &placed)) else {
            error!("relocate: no room in the hypervisor's reserved memory for boot module {=str}", m.name);
            continue;
        };
        copy(m.start, to, size);
        info!(
            "relocate: boot module {=str} moved from [{=u64:#x}, {=u64:#x}) to {=u64:#x} (it lay in partition memory)",
            m.name, m.start, m.end, to
        );
        let _ = placed.push(PhysRange { base: to, size });
        boot.modules[i].start = to;
        boot.modules[i].end = to + size;
    }
}
