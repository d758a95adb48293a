//! Entering the guest and coming back: the only assembly of the backend.
//!
//! `vmx_resume` and `vmx_launch` save the host's callee-saved registers and the
//! register-block pointer on the stack, record that stack in HOST_RSP, load the guest's
//! general registers and execute VMRESUME or VMLAUNCH. A VM exit lands on `vmx_exit`
//! (HOST_RIP) with RSP back at that stack, stores the guest registers, restores the
//! host's and returns 0 to the caller. A failed VM entry falls through and returns 1.
//!
//! Two entry points rather than one with a launched flag: every exit but a vCPU's first
//! resumes, so the loop calls `vmx_resume` and only a VMRESUME refused for a VMCS not yet
//! launched goes on to `vmx_launch` ([`crate::vmcs::Vcpu::run`]): no flag is loaded,
//! tested or stored per exit (issue 19).

pub use bulkhead_virt::guest_state::GuestRegisters;
use core::mem::offset_of;

/// The entry sequence up to the VM-entry instruction: host registers and the block's
/// address on the stack, HOST_RSP, the guest's registers.
macro_rules! entry_prologue {
    () => {
        r#"
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdi
    mov rax, {host_rsp}
    vmwrite rax, rsp
    mov rax, [rdi + {rax}]
    "#
    };
}

core::arch::global_asm!(
    r#"
    .section .text
    .global vmx_resume
vmx_resume:
    "#,
    entry_prologue!(),
    bulkhead_virt::load_guest_registers!(),
    r#"
    vmresume
    jmp 3f

    .global vmx_launch
vmx_launch:
    "#,
    entry_prologue!(),
    bulkhead_virt::load_guest_registers!(),
    r#"
    vmlaunch
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
    mov [rdi + {rax}], rax
    "#,
    bulkhead_virt::store_guest_registers!(),
    r#"
    pop rax
    mov [rdi + {rdi}], rax
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
    rax = const offset_of!(GuestRegisters, rax),
    rbx = const offset_of!(GuestRegisters, rbx),
    rcx = const offset_of!(GuestRegisters, rcx),
    rdx = const offset_of!(GuestRegisters, rdx),
    rsi = const offset_of!(GuestRegisters, rsi),
    rdi = const offset_of!(GuestRegisters, rdi),
    rbp = const offset_of!(GuestRegisters, rbp),
    r8 = const offset_of!(GuestRegisters, r8),
    r9 = const offset_of!(GuestRegisters, r9),
    r10 = const offset_of!(GuestRegisters, r10),
    r11 = const offset_of!(GuestRegisters, r11),
    r12 = const offset_of!(GuestRegisters, r12),
    r13 = const offset_of!(GuestRegisters, r13),
    r14 = const offset_of!(GuestRegisters, r14),
    r15 = const offset_of!(GuestRegisters, r15),
);

unsafe extern "C" {
    fn vmx_resume(registers: *mut GuestRegisters) -> u64;
    fn vmx_launch(registers: *mut GuestRegisters) -> u64;
    fn vmx_exit();
}

/// Address for HOST_RIP.
pub fn exit_handler_address() -> u64 {
    vmx_exit as *const () as u64
}

/// Runs the guest of the current, launched VMCS (VMRESUME) until its next exit. Returns
/// false when the VM entry itself failed (VMfail; the VM-instruction error field says
/// why: for a VMCS not launched yet, [`launch`] is the entry).
///
/// # Safety
/// The current VMCS must be fully set up, with HOST_RIP = [`exit_handler_address`].
#[inline]
pub unsafe fn resume(registers: &mut GuestRegisters) -> bool {
    // SAFETY: per the caller; the assembly preserves the host's callee-saved registers.
    unsafe { vmx_resume(registers) == 0 }
}

/// [`resume`] for the first entry of a clear VMCS (VMLAUNCH).
///
/// # Safety
/// As for [`resume`].
pub unsafe fn launch(registers: &mut GuestRegisters) -> bool {
    // SAFETY: per the caller; the assembly preserves the host's callee-saved registers.
    unsafe { vmx_launch(registers) == 0 }
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
