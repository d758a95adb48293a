//! A thread's register state while it is not running, and the switch between two threads
//! of one CPU.
//!
//! Threads only switch at a call of [`switch`] (scheduling is cooperative: a thread gives
//! up its CPU by blocking, sleeping, yielding or ending, never from an interrupt). At a
//! call boundary the System V x86-64 ABI (3.2.1, "Registers") leaves the vector registers
//! (XMM/YMM/ZMM, x87 stack, mask registers) caller-saved: the compiler has already saved
//! whatever it still needs before the call, so an XSAVE area per thread would only copy
//! dead values. What the callee must preserve, and so the switch saves on the thread's
//! stack, is RBX, RBP, R12-R15, RSP, the MXCSR control bits and the x87 control word. The
//! FS base (the thread's TLS) is set by the caller from the thread's record. A future
//! preemptive switch (from an interrupt) would need the full XSAVE area; see
//! docs/unikernel.md.

/// MXCSR at reset with every exception masked (SDM Vol. 1 10.2.3.1), and the x87 control
/// word FNINIT loads (8.1.5): what a new thread starts with.
const MXCSR_DEFAULT: u64 = 0x1f80;
const FCW_DEFAULT: u64 = 0x037f;

core::arch::global_asm!(
    r#"
    .pushsection .text.bulkhead_sched_switch, "ax"
    .global bulkhead_sched_switch
    // rdi: where to store the outgoing thread's stack pointer; rsi: the incoming one's.
bulkhead_sched_switch:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    sub rsp, 8
    stmxcsr [rsp]
    fnstcw [rsp + 4]
    mov [rdi], rsp
    mov rsp, rsi
    ldmxcsr [rsp]
    fldcw [rsp + 4]
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

    // A new thread's first return lands here, with the entry function in r14 and its two
    // arguments in r12 and r13 (see `new_stack`).
    .global bulkhead_sched_thread_start
bulkhead_sched_thread_start:
    mov rdi, r12
    mov rsi, r13
    call r14
    ud2
    .popsection
    "#
);

unsafe extern "C" {
    fn bulkhead_sched_switch(save_rsp: *mut u64, load_rsp: u64);
    fn bulkhead_sched_thread_start();
}

/// Saves the calling thread's callee-saved state on its stack, stores its stack pointer at
/// `save_rsp`, and continues the thread whose stack pointer is `load_rsp`. Returns when
/// some CPU switches back to the caller's saved stack pointer.
///
/// # Safety
/// `load_rsp` must come from a previous [`switch`] or from [`new_stack`], and nothing may
/// run on that stack meanwhile; `save_rsp` must stay valid until the switch back.
pub unsafe fn switch(save_rsp: *mut u64, load_rsp: u64) {
    // SAFETY: per the caller; the assembly follows the C calling convention.
    unsafe { bulkhead_sched_switch(save_rsp, load_rsp) }
}

/// Lays out a new thread's first frame at the top of the stack `[base, base + size)`
/// so that the first [`switch`] to the returned stack pointer calls `entry(a, b)` with
/// the default MXCSR and x87 control word and a 16-byte aligned stack (`entry` must not
/// return).
///
/// # Safety
/// The stack must be writable memory owned by the new thread, at least 128 bytes.
pub unsafe fn new_stack(
    base: *mut u8,
    size: usize,
    entry: extern "C" fn(usize, usize) -> !,
    a: usize,
    b: usize,
) -> u64 {
    let top = (base as usize + size) & !0xf;
    // From the top down (see the assembly): return address, rbp, rbx, r12, r13, r14,
    // r15, MXCSR and control word. After the `ret` RSP is `top`, 16-byte aligned, so
    // `entry` is called with the alignment the ABI requires.
    let frame: [u64; 8] = [
        MXCSR_DEFAULT | (FCW_DEFAULT << 32),
        0,                                               // r15
        entry as *const () as u64,                       // r14
        b as u64,                                        // r13
        a as u64,                                        // r12
        0,                                               // rbx
        0,                                               // rbp
        bulkhead_sched_thread_start as *const () as u64, // return address
    ];
    let rsp = top - frame.len() * 8;
    // SAFETY: per the caller, the 64 bytes below `top` are the new thread's stack.
    unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), rsp as *mut u64, frame.len()) };
    rsp as u64
}
