//! Running code at CPL 3, for tests of what user mode may not do: a GDT with user
//! segments and a TSS (whose RSP0 the CPU loads when an exception leaves ring 3), the
//! payload's first 16 MiB made user-accessible, and a #UD handler that returns to the
//! kernel when the fault came from ring 3 (other #UDs go to `gp`'s handler).
//!
//! Selectors: 0x08 kernel code and 0x10 kernel data (as the hypervisor's boot GDT has
//! them), 0x1b user data, 0x23 user code, 0x28 the TSS (Intel SDM Vol. 3A §3.4.5, §8.2.3).

use core::sync::atomic::{AtomicU64, Ordering};

const KERNEL_DATA: u16 = 0x10;
const TSS_SELECTOR: u16 = 0x28;

#[repr(C, align(16))]
struct Gdt([u64; 7]);

static mut GDT: Gdt = Gdt([
    0,
    0x00af_9b00_0000_ffff, // 0x08: 64-bit code, DPL 0, accessed
    0x00cf_9300_0000_ffff, // 0x10: data, DPL 0, accessed
    0x00cf_f300_0000_ffff, // 0x18: data, DPL 3
    0x00af_fb00_0000_ffff, // 0x20: 64-bit code, DPL 3
    0,                     // 0x28: TSS, low half (written at set-up)
    0,                     // TSS, high half
]);

/// The 64-bit TSS (104 bytes; RSP0 at byte 4, I/O map base at byte 102 = no map).
#[repr(C, align(16))]
struct Tss([u32; 26]);
static mut TSS: Tss = Tss([0; 26]);

#[repr(C, align(16))]
struct Stack([u8; 8192]);
static mut KERNEL_STACK: Stack = Stack([0; 8192]);
static mut USER_STACK: Stack = Stack([0; 8192]);

/// The kernel RSP to return to from ring 3, and the RIP of the #UD that got us back.
#[unsafe(no_mangle)]
static GUEST_USER_RETURN_RSP: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static GUEST_USER_UD_RIP: AtomicU64 = AtomicU64::new(0);

core::arch::global_asm!(
    r#"
    .section .text
    // guest_user_call(rip = rdi, rsp = rsi, rax_value = rdx): enters ring 3 at `rip` with
    // `rsp`, RAX = rdx and interrupts off; comes back here (returning the faulting RIP)
    // when ring 3 raises #UD.
    .global guest_user_call
guest_user_call:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov qword ptr [rip + GUEST_USER_RETURN_RSP], rsp
    mov rax, rdx
    push 0x1b
    push rsi
    push 0x2
    push 0x23
    push rdi
    iretq

    // #UD: from ring 3, record the RIP and unwind to guest_user_call's caller; from ring
    // 0, the usual skip-and-count handler.
    .global guest_user_ud_handler
guest_user_ud_handler:
    test qword ptr [rsp + 8], 3
    jz guest_ud_handler
    mov rax, qword ptr [rsp]
    mov qword ptr [rip + GUEST_USER_UD_RIP], rax
    mov rsp, qword ptr [rip + GUEST_USER_RETURN_RSP]
    mov cx, 0x10
    mov ss, cx
    mov ds, cx
    mov es, cx
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
    "#
);

unsafe extern "C" {
    fn guest_user_call(rip: u64, rsp: u64, rax: u64) -> u64;
    fn guest_user_ud_handler();
}

/// Sets up ring 3 (GDT, TSS, user-accessible first 16 MiB, #UD gate). Call after
/// `gp::install`.
pub fn install() {
    // SAFETY: single-threaded set-up of this module's statics; the new GDT keeps the
    // selectors in use (0x08, 0x10) with the same meaning.
    unsafe {
        let tss = &raw mut TSS;
        let rsp0 = (&raw const KERNEL_STACK as u64) + 8192;
        (*tss).0[1] = rsp0 as u32;
        (*tss).0[2] = (rsp0 >> 32) as u32;
        (*tss).0[25] = 104 << 16; // I/O map base beyond the limit: no I/O bitmap
        let base = tss as u64;
        let gdt = &raw mut GDT;
        // Available 64-bit TSS (type 9), present, limit 103 (SDM Vol. 3A §8.2.3).
        (*gdt).0[5] = 103 | (base & 0xff_ffff) << 16 | 0x89 << 40 | ((base >> 24) & 0xff) << 56;
        (*gdt).0[6] = base >> 32;
        let pointer: [u16; 5] = {
            let base = gdt as u64;
            [7 * 8 - 1, base as u16, (base >> 16) as u16, (base >> 32) as u16, (base >> 48) as u16]
        };
        core::arch::asm!("lgdt [{}]", in(reg) &pointer, options(nostack));
        core::arch::asm!("mov ss, {0:x}", "mov ds, {0:x}", "mov es, {0:x}", in(reg) KERNEL_DATA, options(nostack));
        core::arch::asm!("ltr {0:x}", in(reg) TSS_SELECTOR, options(nostack));
    }
    allow_user_access(16 << 20);
    crate::gp::set_gate(6, guest_user_ud_handler as *const () as u64);
}

/// Sets the U/S bit on the identity tables' entries for `[0, bytes)` (2 MiB pages, the
/// hypervisor's layout) and clears CR4.SMEP/SMAP so the kernel may still run there.
fn allow_user_access(bytes: u64) {
    const USER: u64 = 1 << 2;
    const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
    // SAFETY: the payload's own page tables (identity-mapped, in its memory); setting U/S
    // widens access for this test payload only; CR3 is reloaded to flush the TLB.
    unsafe {
        let cr3: u64;
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nostack));
        let pml4 = (cr3 & ADDRESS) as *mut u64;
        *pml4 |= USER;
        let pdpt = (*pml4 & ADDRESS) as *mut u64;
        *pdpt |= USER;
        let pd = (*pdpt & ADDRESS) as *mut u64;
        for i in 0..bytes.div_ceil(2 << 20) as usize {
            *pd.add(i) |= USER;
        }
        core::arch::asm!("mov {t}, cr4", "and {t}, {mask}", "mov cr4, {t}", t = out(reg) _,
            mask = in(reg) !(3u64 << 20), options(nostack));
        core::arch::asm!("mov cr3, {}", in(reg) cr3, options(nostack));
    }
}

/// Calls `target` at CPL 3 with RCX, RDX, R8 as a hypercall takes them (the stub loads
/// them, calls `target`, then executes UD2). Returns the RIP of the #UD that ended it:
/// `target`'s own address if its first instruction faulted, the stub's UD2 if `target`
/// returned.
pub fn call_at_cpl3(target: u64, rcx: u64, rdx: u64, r8: u64) -> u64 {
    ARGUMENTS[0].store(rcx, Ordering::SeqCst);
    ARGUMENTS[1].store(rdx, Ordering::SeqCst);
    ARGUMENTS[2].store(r8, Ordering::SeqCst);
    let stack = (&raw const USER_STACK as u64) + 8192 - 8;
    // SAFETY: `install` set up ring 3; the stub only reads `ARGUMENTS` and calls `target`
    // (RAX), then faults back to ring 0 at the latest with UD2.
    unsafe { guest_user_call(guest_user_stub as *const () as u64, stack, target) };
    GUEST_USER_UD_RIP.load(Ordering::SeqCst)
}

#[unsafe(no_mangle)]
static GUEST_USER_ARGUMENTS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
use GUEST_USER_ARGUMENTS as ARGUMENTS;

core::arch::global_asm!(
    r#"
    .section .text
    .global guest_user_stub
    .global guest_user_stub_ud2
guest_user_stub:
    mov rcx, qword ptr [rip + GUEST_USER_ARGUMENTS]
    mov rdx, qword ptr [rip + GUEST_USER_ARGUMENTS + 8]
    mov r8, qword ptr [rip + GUEST_USER_ARGUMENTS + 16]
    call rax
guest_user_stub_ud2:
    ud2
    "#
);

unsafe extern "C" {
    fn guest_user_stub();
    fn guest_user_stub_ud2();
}

/// The address of the stub's UD2 (reached only when the call returned).
pub fn stub_ud2_address() -> u64 {
    guest_user_stub_ud2 as *const () as u64
}
