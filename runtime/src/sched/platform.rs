//! What the scheduler uses of the rest of the runtime, in one place: the clock, the heap,
//! TLS blocks, the IDT, SSE/AVX set-up and the console.

use core::alloc::Layout;

/// A heap block (a thread's stack or TLS block).
#[derive(Clone, Copy, Debug)]
pub struct Block {
    pub ptr: *mut u8,
    pub size: usize,
    pub align: usize,
}

// SAFETY: a block is owned by exactly one thread record; moving the record between CPUs
// moves the ownership.
unsafe impl Send for Block {}

/// The monotonic clock in nanoseconds (the partition's reference time, 100 ns ticks).
pub fn now_ns() -> u64 {
    crate::clock::now_ticks().saturating_mul(100)
}

/// `size` bytes aligned to `align` from the heap, or `None` when it is exhausted.
pub fn alloc(size: usize, align: usize) -> Option<Block> {
    let layout = Layout::from_size_align(size, align).ok()?;
    let ptr = crate::heap::allocate(layout);
    (!ptr.is_null()).then_some(Block { ptr, size, align })
}

/// Returns a block to the heap.
pub fn free(block: Block) {
    let layout = Layout::from_size_align(block.size, block.align).expect("made by `alloc`");
    // SAFETY: the block came from `alloc` with this layout and its thread is gone.
    unsafe { crate::heap::deallocate(block.ptr, layout) };
}

/// A new thread's TLS block (a fresh copy of the program's TLS image) and its thread
/// pointer (the FS base).
pub fn new_tls() -> Option<(Block, u64)> {
    let (ptr, layout, tp) = crate::tls::create()?;
    Some((Block { ptr, size: layout.size(), align: layout.align() }, tp))
}

/// Prepares an AP like the boot CPU before the scheduler: SSE/AVX as the boot CPU has
/// them, and the runtime's IDT.
pub fn init_ap_cpu() {
    crate::start::init_secondary_cpu();
}

/// Points the interrupt vector `vector` at `handler`.
pub fn set_interrupt_handler(vector: u8, handler: unsafe extern "C" fn()) {
    crate::exceptions::set_gate(vector, handler as *const () as u64);
}

/// A line of the runtime's own on the console.
pub fn warn(args: core::fmt::Arguments<'_>) {
    crate::console::write_line(format_args!("runtime: {args}"));
}
