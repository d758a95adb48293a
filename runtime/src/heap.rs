//! The heap: `sys_malloc`, `sys_realloc`, `sys_free` (and the other allocation calls of
//! hermit-abi) over the partition's free memory, with `linked_list_allocator`'s first-fit
//! free list behind a lock.
//!
//! Exhaustion returns null, as std's allocator interface expects: `try_reserve` and
//! friends see the error, and everything else goes to std's allocation-error handler,
//! which prints `memory allocation of N bytes failed` and aborts. The failure is recorded
//! here, so the abort's crash report says how much was asked and how much was in use.

use core::alloc::Layout;
use core::ptr::{NonNull, null_mut};
use linked_list_allocator::Heap;
use spin::Mutex;

static HEAP: Mutex<Heap> = Mutex::new(Heap::empty());
static LAST_FAILURE: Mutex<Option<Failure>> = Mutex::new(None);

/// The allocation that last found no room.
#[derive(Clone, Copy, Debug)]
pub struct Failure {
    pub size: usize,
    pub align: usize,
    pub used: usize,
    pub total: usize,
}

/// Hands `[base, base + size)` to the heap.
///
/// # Safety
/// The range is memory of the partition that nothing else uses, for good.
pub unsafe fn init(base: u64, size: u64) {
    // SAFETY: the caller gives the range to the heap alone.
    unsafe { HEAP.lock().init(base as *mut u8, size as usize) };
}

pub fn last_failure() -> Option<Failure> {
    *LAST_FAILURE.try_lock()?
}

/// Allocates `layout`; null if the heap has no room (recorded for the crash report).
pub fn allocate(layout: Layout) -> *mut u8 {
    let mut heap = HEAP.lock();
    match heap.allocate_first_fit(layout) {
        Ok(p) => p.as_ptr(),
        Err(()) => {
            let failure = Failure { size: layout.size(), align: layout.align(), used: heap.used(), total: heap.size() };
            drop(heap);
            *LAST_FAILURE.lock() = Some(failure);
            null_mut()
        }
    }
}

/// Frees what [`allocate`] returned for `layout`.
///
/// # Safety
/// `ptr` came from [`allocate`] with this `layout` and is not used after.
pub unsafe fn deallocate(ptr: *mut u8, layout: Layout) {
    if let Some(p) = NonNull::new(ptr) {
        // SAFETY: as the caller promises.
        unsafe { HEAP.lock().deallocate(p, layout) };
    }
}

/// A layout of std's (size, align), `None` if malformed. Zero sizes get one byte, so each
/// allocation has an address of its own.
fn layout(size: usize, align: usize) -> Option<Layout> {
    Layout::from_size_align(size.max(1), align).ok()
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_malloc(size: usize, align: usize) -> *mut u8 {
    layout(size, align).map_or(null_mut(), allocate)
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_alloc(size: usize, align: usize) -> *mut u8 {
    sys_malloc(size, align)
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    let p = sys_malloc(size, align);
    if !p.is_null() {
        // SAFETY: `size` bytes were just allocated at `p`.
        unsafe { core::ptr::write_bytes(p, 0, size) };
    }
    p
}

/// # Safety
/// As `GlobalAlloc::dealloc`: `ptr` came from this heap with this size and alignment.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sys_free(ptr: *mut u8, size: usize, align: usize) {
    if let Some(layout) = layout(size, align) {
        // SAFETY: as the caller promises.
        unsafe { deallocate(ptr, layout) };
    }
}

/// # Safety
/// As [`sys_free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sys_dealloc(ptr: *mut u8, size: usize, align: usize) {
    // SAFETY: as the caller promises.
    unsafe { sys_free(ptr, size, align) }
}

/// Allocates the new size, copies, frees the old; the old block stays valid on failure.
///
/// # Safety
/// As `GlobalAlloc::realloc`: `ptr` came from this heap with `size` and `align`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sys_realloc(ptr: *mut u8, size: usize, align: usize, new_size: usize) -> *mut u8 {
    let (Some(old), Some(new)) = (layout(size, align), layout(new_size, align)) else {
        return null_mut();
    };
    let p = allocate(new);
    if !p.is_null() && !ptr.is_null() {
        // SAFETY: both blocks are ours, distinct, and at least the copied length long.
        unsafe {
            core::ptr::copy_nonoverlapping(ptr, p, size.min(new_size));
            deallocate(ptr, old);
        }
    }
    p
}
