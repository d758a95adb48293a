//! Entering the guest and coming back: the only assembly of the backend.
//!
//! `vmx_enter` saves the host's callee-saved registers and the register-block pointer on
//! the stack, records that stack in HOST_RSP, loads the guest's general registers and
//! executes VMLAUNCH or VMRESUME. A VM exit lands on `vmx_exit` (HOST_RIP) with RSP back
//! at that stack, stores the guest registers, restores the host's and returns 0 to the
//! caller of `vmx_enter`. A failed VM entry falls through and returns 1.

pub use bulkhead_virt::guest_state::GuestRegisters;

core::arch::global_asm!(
    r#"
    .section .text
    .global vmx_enter
vmx_enter:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdi
    mov rax, {host_rsp}
    vmwrite rax, rsp
    test rsi, rsi
    mov rax, [rdi + 0]
    mov rbx, [rdi + 8]
    mov rcx, [rdi + 16]
    mov rdx, [rdi + 24]
    mov rsi, [rdi + 32]
    mov rbp, [rdi + 48]
    mov r8,  [rdi + 56]
    mov r9,  [rdi + 64]
    mov r10, [rdi + 72]
    mov r11, [rdi + 80]
    mov r12, [rdi + 88]
    mov r13, [rdi + 96]
    mov r14, [rdi + 104]
    mov r15, [rdi + 112]
    mov rdi, [rdi + 40]
    jnz 2f
    vmlaunch
    jmp 3f
2:  vmresume
3:  /* VM entry failed: the host state was never left. */
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    mov eax, 1
    ret

    .global vmx_exit
vmx_exit:
    push rdi
    mov rdi, [rsp + 8]
    mov [rdi + 0], rax
    mov [rdi + 8], rbx
    mov [rdi + 16], rcx
    mov [rdi + 24], rdx
    mov [rdi + 32], rsi
    mov [rdi + 48], rbp
    mov [rdi + 56], r8
    mov [rdi + 64], r9
    mov [rdi + 72], r10
    mov [rdi + 80], r11
    mov [rdi + 88], r12
    mov [rdi + 96], r13
    mov [rdi + 104], r14
    mov [rdi + 112], r15
    pop rax
    mov [rdi + 40], rax
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    xor eax, eax
    ret
    "#,
    host_rsp = const x86::vmx::vmcs::host::RSP,
);

unsafe extern "C" {
    fn vmx_enter(registers: *mut GuestRegisters, launched: u64) -> u64;
    fn vmx_exit();
}

/// Address for HOST_RIP.
pub fn exit_handler_address() -> u64 {
    vmx_exit as *const () as u64
}

/// Runs the guest of the current VMCS until its next exit. Returns false when the VM entry
/// itself failed (VMfail; the VM-instruction error field says why).
///
/// # Safety
/// The current VMCS must be fully set up, with HOST_RIP = [`exit_handler_address`].
pub unsafe fn enter(registers: &mut GuestRegisters, launched: bool) -> bool {
    // SAFETY: per the caller; the assembly preserves the host's callee-saved registers.
    unsafe { vmx_enter(registers, u64::from(launched)) == 0 }
}

/// Ends the blocking of NMIs that a VM exit caused by an NMI leaves in effect (SDM 27.5.5
/// / 28.5.5 "Updating Non-Register State": NMIs stay blocked after such an exit until the
/// next IRET). Without it the hypervisor's next NMI to this core would stay pending while
/// the guest runs. An IRET to the next instruction, on the current stack, is the only way
/// to unblock them.
pub fn unblock_nmis() {
    use x86_64::instructions::segmentation::{CS, SS, Segment};
    // SAFETY: builds a complete 64-bit IRET frame (SS, RSP, RFLAGS, CS, RIP) for the
    // current privilege level and stack and returns to the instruction after it; no
    // register but the scratch one changes. The kernel has no red zone.
    unsafe {
        core::arch::asm!(
            "mov {t}, rsp",
            "push {ss}",
            "push {t}",
            "pushfq",
            "push {cs}",
            "lea {t}, [rip + 2f]",
            "push {t}",
            "iretq",
            "2:",
            t = out(reg) _,
            ss = in(reg) u64::from(SS::get_reg().0),
            cs = in(reg) u64::from(CS::get_reg().0),
        )
    };
}
