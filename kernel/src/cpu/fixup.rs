//! Exception fixups: the few hypervisor instructions whose operand a partition chooses
//! (RDMSR, WRMSR, XSETBV on its behalf) run here, at known addresses. Should one raise #GP
//! anyway (a check in `exits/msr.rs` missed something this CPU lacks, or an emulator differs
//! from the manual), the #GP handler (`idt.rs`) finds the faulting address in
//! the table `fixup_table` and resumes at the entry's recovery address instead of ending the run; the
//! function then returns [`Fault`] and the caller answers the partition with #GP. The
//! checks stay the first line of defence: this is the second.
//!
//! Written here rather than taken from a crate: the table must name the exact addresses
//! of these instructions, which only the assembly below knows. Linux keeps the same idea
//! in its `__ex_table` section; one table of three entries needs no linker section.

/// The instruction raised #GP: the MSR does not exist, or the value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault;

// Each function returns 0 in EAX when the instruction completed, 1 when it faulted (the
// recovery label sets it). System V: first argument in EDI, second in RSI.
core::arch::global_asm!(
    r#"
    .section .text
    .global fixup_rdmsr
    .global fixup_wrmsr
    .global fixup_xsetbv
    .balign 16
fixup_rdmsr:
    mov ecx, edi
fixup_rdmsr_insn:
    rdmsr
    shl rdx, 32
    mov eax, eax
    or rax, rdx
    mov qword ptr [rsi], rax
    xor eax, eax
    ret
fixup_rdmsr_recover:
    mov eax, 1
    ret

    .balign 16
fixup_wrmsr:
    mov ecx, edi
    mov rax, rsi
    mov rdx, rsi
    shr rdx, 32
fixup_wrmsr_insn:
    wrmsr
    xor eax, eax
    ret
fixup_wrmsr_recover:
    mov eax, 1
    ret

    .balign 16
fixup_xsetbv:
    mov ecx, edi
    mov rax, rsi
    mov rdx, rsi
    shr rdx, 32
fixup_xsetbv_insn:
    xsetbv
    xor eax, eax
    ret
fixup_xsetbv_recover:
    mov eax, 1
    ret

    .section .rodata
    .balign 8
    .global fixup_table
fixup_table:
    .quad fixup_rdmsr_insn, fixup_rdmsr_recover
    .quad fixup_wrmsr_insn, fixup_wrmsr_recover
    .quad fixup_xsetbv_insn, fixup_xsetbv_recover
    "#
);

unsafe extern "C" {
    /// (faulting instruction, recovery address) pairs.
    static fixup_table: [[u64; 2]; 3];
    fn fixup_rdmsr(msr: u32, value: *mut u64) -> u32;
    fn fixup_wrmsr(msr: u32, value: u64) -> u32;
    fn fixup_xsetbv(xcr: u32, value: u64) -> u32;
}

/// Where to resume after a #GP at `rip` in the hypervisor, if `rip` is one of the fixed-up
/// instructions. Called by the #GP handler only.
pub fn recovery(rip: u64) -> Option<u64> {
    // SAFETY: static data emitted above (addresses relocated with the kernel image).
    let table = unsafe { &fixup_table };
    table.iter().find(|entry| entry[0] == rip).map(|entry| entry[1])
}

/// RDMSR that turns a #GP into [`Fault`].
///
/// # Safety
/// Reading `msr` must have no effect the hypervisor relies on not happening (true of
/// every MSR a partition may read: reads have no side effects beyond the value).
pub unsafe fn read_msr_safe(msr: u32) -> Result<u64, Fault> {
    let mut value = 0u64;
    // SAFETY: per the caller; a #GP is recovered by the handler through `fixup_table`.
    match unsafe { fixup_rdmsr(msr, &mut value) } {
        0 => Ok(value),
        _ => Err(Fault),
    }
}

/// WRMSR that turns a #GP into [`Fault`].
///
/// # Safety
/// The write, when the CPU takes it, must be one the partition may make (callers check
/// ownership: its own core's register, never the hypervisor's).
pub unsafe fn write_msr_safe(msr: u32, value: u64) -> Result<(), Fault> {
    // SAFETY: per the caller; a #GP is recovered by the handler through `fixup_table`.
    match unsafe { fixup_wrmsr(msr, value) } {
        0 => Ok(()),
        _ => Err(Fault),
    }
}

/// XSETBV that turns a #GP into [`Fault`].
///
/// # Safety
/// CR4.OSXSAVE must be set (else XSETBV is #UD, which is not fixed up); the value must
/// be the partition's own XCR0 for the core it runs on.
pub unsafe fn xsetbv_safe(xcr: u32, value: u64) -> Result<(), Fault> {
    // SAFETY: per the caller; a #GP is recovered by the handler through `fixup_table`.
    match unsafe { fixup_xsetbv(xcr, value) } {
        0 => Ok(()),
        _ => Err(Fault),
    }
}
