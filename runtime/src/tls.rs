//! Thread-local storage: a block per thread laid out by [`crate::tls_layout`] from the
//! ELF's PT_TLS segment, its thread pointer in FS base. [`create`] makes a block (the main
//! thread's at start; a scheduler makes one per thread it spawns), [`set_thread_pointer`]
//! switches to one.

use crate::tls_layout::TlsTemplate;
use core::alloc::Layout;

/// The program's TLS template (an empty one if it has no thread-locals).
pub fn template() -> TlsTemplate {
    match crate::boot::tls_segment() {
        Some(s) => TlsTemplate {
            image: s.vaddr,
            file_size: s.file_size as usize,
            mem_size: s.mem_size as usize,
            align: s.align as usize,
        },
        None => TlsTemplate { image: 0, file_size: 0, mem_size: 0, align: 1 },
    }
}

/// A thread's TLS block, allocated on the heap: (block address, its layout, the thread
/// pointer). `None` if the heap has no room or the segment is malformed.
pub fn create() -> Option<(*mut u8, Layout, u64)> {
    let template = template();
    let layout = template.layout()?;
    let alloc = Layout::from_size_align(layout.size, layout.align).ok()?;
    let block = crate::heap::allocate(alloc);
    if block.is_null() {
        return None;
    }
    // SAFETY: `block` is `layout.size` fresh bytes; the image is the ELF's loaded .tdata.
    let tp = unsafe {
        let bytes = core::slice::from_raw_parts_mut(block, layout.size);
        let image = core::slice::from_raw_parts(template.image as *const u8, template.file_size);
        layout.fill(bytes, block as u64, image)
    };
    Some((block, alloc, tp))
}

/// Makes `tp` this vCPU's thread pointer (IA32_FS_BASE).
pub fn set_thread_pointer(tp: u64) {
    crate::cpu::wrmsr(crate::cpu::IA32_FS_BASE, tp);
}
