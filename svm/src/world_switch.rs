//! Entering the guest and coming back, and the global interrupt flag: the only assembly
//! of the backend.
//!
//! VMRUN switches only part of the processor state (APM Vol. 2, 15.5.1): it saves the
//! host's segment registers ES/CS/SS/DS, GDTR/IDTR, control registers, EFER, RFLAGS, RSP
//! and RIP in the host save area and restores them at #VMEXIT. FS, GS (with their bases),
//! TR, LDTR, KernelGsBase, STAR/LSTAR/CSTAR/SFMASK and SYSENTER_CS/ESP/EIP are not
//! switched; VMSAVE and VMLOAD move exactly those (15.5.2). The kernel finds its per-CPU
//! data through GS base and its stacks through TR, so around VMRUN:
//!
//! 1. VMLOAD guest VMCB: the guest's FS/GS/TR/LDTR and syscall MSRs.
//! 2. VMRUN guest VMCB, until #VMEXIT (which also clears GIF).
//! 3. VMSAVE guest VMCB: the guest's values, including what it wrote to those MSRs.
//! 4. VMLOAD host VMCB: the host's.
//!
//! The host's values never change once the core is up (its GS base, TR and syscall MSRs
//! are set at boot), so the host VMCB is saved once, when the vCPU is set up
//! ([`save_host`]), not before every VMRUN (issue 19: two instructions per exit).
//!
//! Between 1 and 4 the host runs with the guest's GS base; that is safe only because the
//! host runs with GIF = 0 (see the crate documentation): no NMI or interrupt handler can
//! run there, and the instructions touch nothing but the stack and the register block.
//!
//! RAX is not in the register block's transfer: VMRUN loads the guest's RAX from the VMCB
//! and #VMEXIT stores it there, and RAX holds the VMCB's physical address for VMRUN,
//! VMLOAD and VMSAVE.

use crate::vmcb::Vmcb;
use core::mem::offset_of;

pub use bulkhead_virt::guest_state::GuestRegisters;

core::arch::global_asm!(
    r#"
    .section .text
    .global bulkhead_svm_run
bulkhead_svm_run:
    /* rdi: register block, rsi: guest VMCB, rdx: host VMCB (physical = virtual). */
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdi
    push rdx
    push rsi
    mov rax, rsi
    vmload rax
    "#,
    bulkhead_virt::load_guest_registers!(),
    r#"
    vmrun rax
    /* #VMEXIT: RSP, RIP and RFLAGS are the host's again, GIF = 0; every other general
       register holds the guest's value. Stack: guest VMCB, host VMCB, register block. */
    push rdi
    mov rdi, [rsp + 24]
    "#,
    bulkhead_virt::store_guest_registers!(),
    r#"
    pop rax
    mov [rdi + {rdi}], rax
    pop rax
    vmsave rax
    pop rax
    vmload rax
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
    "#,
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
    fn bulkhead_svm_run(registers: *mut GuestRegisters, guest: *mut Vmcb, host: *mut Vmcb);
}

/// Runs the guest of `guest` until its next #VMEXIT; the exit is described in the guest
/// VMCB's control area. `registers` holds every general register but RAX (which lives in
/// the VMCB) on entry and on return.
///
/// # Safety
/// SVM must be enabled on this core with a host save area and GIF = 0
/// ([`enable`](crate::enable::enable)); `guest` must be a fully set-up VMCB (every address
/// in it valid), `host` this core's host VMSAVE area; both identity-mapped.
#[inline(always)]
pub unsafe fn vmrun(registers: &mut GuestRegisters, guest: *mut Vmcb, host: *mut Vmcb) {
    // SAFETY: per the caller; the assembly preserves the host's callee-saved registers, and
    // VMRUN restores RSP, RFLAGS and the segment and control registers at #VMEXIT.
    unsafe { bulkhead_svm_run(registers, guest, host) }
}

/// Saves the host's FS/GS/TR/LDTR and syscall MSRs into `host` (VMSAVE), once per vCPU
/// set-up: [`vmrun`] only loads them back after each #VMEXIT.
///
/// # Safety
/// SVM must be enabled on this core; `host` is this core's host VMCB, identity-mapped.
pub unsafe fn save_host(host: *mut Vmcb) {
    // SAFETY: per the caller; VMSAVE writes only the VMCB's save-area fields it names.
    unsafe { core::arch::asm!("vmsave rax", in("rax") host, options(nostack, preserves_flags)) }
}

/// Clears the global interrupt flag: NMIs, SMIs, INIT and interrupts are held pending
/// (15.17).
///
/// # Safety
/// EFER.SVME must be set (CLGI raises #UD otherwise).
pub unsafe fn clgi() {
    // SAFETY: per the caller. No `nomem`: it must stay ordered with the code around it.
    unsafe { core::arch::asm!("clgi", options(nostack, preserves_flags)) }
}

/// Sets the global interrupt flag: the host takes NMIs (and, with RFLAGS.IF set,
/// interrupts) again (15.17).
///
/// # Safety
/// EFER.SVME must be set, and the host's IDT ready for what GIF now lets in.
pub unsafe fn stgi() {
    // SAFETY: per the caller. No `nomem`: it must stay ordered with the code around it.
    unsafe { core::arch::asm!("stgi", options(nostack, preserves_flags)) }
}

/// Lets the host take an NMI that is pending after an NMI exit, then clears GIF again.
///
/// An intercepted NMI is not consumed by the #VMEXIT: it stays pending, held by GIF = 0
/// (QEMU's TCG keeps the request set; KVM relies on the same behaviour of AMD hardware when
/// it executes STGI after an NMI exit to have the host handle it). Left pending, it would
/// be recognised again right after the next VMRUN and exit again, forever. Opening GIF for
/// a moment delivers it to the host's NMI handler (vector 2 of the host IDT, with the
/// host's GS base restored by then). The NOP gives it an instruction boundary inside the
/// window. With RFLAGS.IF clear in the host, no maskable interrupt can come in.
///
/// # Safety
/// EFER.SVME must be set, the host's state loaded (after [`vmrun`] returned), RFLAGS.IF
/// clear, and the host's NMI handler ready to run.
pub unsafe fn take_pending_nmi() {
    // SAFETY: per the caller; an NMI handler interrupting here returns with IRET.
    unsafe { core::arch::asm!("stgi", "nop", "clgi", options(preserves_flags)) }
}
