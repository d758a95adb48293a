//! What the partition is given at start: the command line (RDI) and the boot information
//! block (RSI, `bulkhead_abi::boot_info`), and from them and the ELF's own program
//! headers, the free memory the heap takes.

use bulkhead_abi::boot_info::{BOOT_INFO_MAX, BootInfo, BootInfoError, MAX_MEMORY_REGIONS, MemoryRegion};
use core::ffi::CStr;
use core::sync::atomic::{AtomicU64, Ordering};

// The ELF header of the program, placed by the linker in its first loaded segment.
unsafe extern "C" {
    static __ehdr_start: [u8; 64];
}

const PT_LOAD: u32 = 1;
const PT_TLS: u32 = 7;

/// One program header's fields the runtime uses.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub kind: u32,
    pub vaddr: u64,
    pub file_size: u64,
    pub mem_size: u64,
    pub align: u64,
}

/// The program headers of the running ELF.
pub fn segments() -> impl Iterator<Item = Segment> {
    let ehdr = &raw const __ehdr_start as *const u8;
    // SAFETY: the ELF header and program headers lie in the first loaded segment (lld
    // places them there for a non-PIE executable and defines `__ehdr_start` at the
    // header); fields read at their ELF64 offsets (System V gABI "ELF Header").
    let (phoff, phentsize, phnum) = unsafe {
        (
            core::ptr::read_unaligned(ehdr.add(32) as *const u64),
            core::ptr::read_unaligned(ehdr.add(54) as *const u16),
            core::ptr::read_unaligned(ehdr.add(56) as *const u16),
        )
    };
    (0..usize::from(phnum)).map(move |i| {
        // SAFETY: within the program header table described by the header above.
        unsafe {
            let ph = ehdr.add(phoff as usize + i * usize::from(phentsize));
            Segment {
                kind: core::ptr::read_unaligned(ph as *const u32),
                vaddr: core::ptr::read_unaligned(ph.add(16) as *const u64),
                file_size: core::ptr::read_unaligned(ph.add(32) as *const u64),
                mem_size: core::ptr::read_unaligned(ph.add(40) as *const u64),
                align: core::ptr::read_unaligned(ph.add(48) as *const u64),
            }
        }
    })
}

/// The TLS segment, if the program has thread-locals.
pub fn tls_segment() -> Option<Segment> {
    segments().find(|s| s.kind == PT_TLS)
}

/// The first byte after the loaded program.
pub fn image_end() -> u64 {
    segments().filter(|s| s.kind == PT_LOAD).map(|s| s.vaddr + s.mem_size).max().unwrap_or(0)
}

/// The boot information block, once [`read`] found a valid one.
static BOOT_INFO: AtomicU64 = AtomicU64::new(0);

/// The boot information block (vCPUs' APIC IDs, memory, connections), if the partition
/// was given one.
#[allow(dead_code, reason = "the interface for the scheduler (sched/): the vCPUs' APIC IDs")]
pub fn boot_info() -> Option<BootInfo<'static>> {
    let address = BOOT_INFO.load(Ordering::Acquire);
    if address == 0 {
        return None;
    }
    // SAFETY: `read` checked a valid block at this address, which stays untouched.
    BootInfo::parse(unsafe { core::slice::from_raw_parts(address as *const u8, BOOT_INFO_MAX) }).ok()
}

/// What the partition starts with.
pub struct Start {
    /// The command line, as text (empty if absent or not UTF-8).
    pub cmdline: &'static str,
    /// The partition's name, when the boot information gives it.
    pub name: Option<&'static str>,
    /// Its vCPUs.
    pub vcpus: usize,
    /// The memory regions.
    pub memory: [MemoryRegion; MAX_MEMORY_REGIONS],
    pub regions: usize,
}

/// Reads the command line at `cmdline` and the block at `boot_info` (0 if none).
///
/// # Safety
/// `cmdline` is 0 or a NUL-terminated string, `boot_info` 0 or the block's address, both
/// in the partition's memory and left alone for good.
pub unsafe fn read(cmdline: u64, boot_info: u64) -> Result<Start, BootInfoError> {
    let cmdline = if cmdline == 0 {
        ""
    } else {
        // SAFETY: as the caller promises.
        unsafe { CStr::from_ptr(cmdline as *const core::ffi::c_char) }.to_str().unwrap_or("")
    };
    // Every Bulkhead that starts a 64-bit payload writes the block: one missing means this
    // is not a Bulkhead partition (or its loader is broken), and guessing the memory
    // would hand the heap memory the partition may not own.
    if boot_info == 0 {
        return Err(BootInfoError::BadMagic);
    }
    // SAFETY: as the caller promises; the block is at most BOOT_INFO_MAX bytes.
    let bytes = unsafe { core::slice::from_raw_parts(boot_info as *const u8, BOOT_INFO_MAX) };
    let info = BootInfo::parse(bytes)?;
    BOOT_INFO.store(boot_info, Ordering::Release);
    let mut start = Start {
        cmdline,
        name: Some(info.name()).filter(|n| !n.is_empty()),
        vcpus: info.vcpu_count().max(1),
        memory: [MemoryRegion { base: 0, size: 0 }; MAX_MEMORY_REGIONS],
        regions: 0,
    };
    for (slot, region) in start.memory.iter_mut().zip(info.memory()) {
        *slot = region;
        start.regions += 1;
    }
    Ok(start)
}

/// The heap's range above `above` ([`crate::heap_range`]).
pub fn heap_range(start: &Start, above: u64) -> Option<(u64, u64)> {
    crate::heap_range::heap_range(&start.memory[..start.regions], above)
}
