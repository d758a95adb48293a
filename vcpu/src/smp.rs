//! Starting this partition's other vCPUs the way a PC operating system does: INIT and
//! start-up IPIs through the x2APIC ICR to a real-mode trampoline, which loads the
//! boot CPU's GDT and page tables and jumps to 64-bit code. One vCPU at a time: the
//! trampoline's stack and entry are single globals, read by the started vCPU.
use core::sync::atomic::{AtomicU64, Ordering};

/// Guest-physical page the trampoline is copied to (start-up vector 0x10).
pub const TRAMPOLINE: u64 = 0x10000;

#[unsafe(no_mangle)]
static GUEST_AP_STACK: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static GUEST_AP_MAIN: AtomicU64 = AtomicU64::new(0);

core::arch::global_asm!(
    r#"
    .section .rodata
    .global guest_ap_tramp_start
    .global guest_ap_tramp_end
    .global guest_ap_tramp_gdtr
    .global guest_ap_tramp_cr3
    .global guest_ap_tramp_far
    .code16
guest_ap_tramp_start:
    cli
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (guest_ap_tramp_gdtr - guest_ap_tramp_start)
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    movl (guest_ap_tramp_cr3 - guest_ap_tramp_start), %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax
    mov %eax, %cr0
    ljmpl *(guest_ap_tramp_far - guest_ap_tramp_start)
    .balign 8
guest_ap_tramp_gdtr:
    .word 0
    .long 0
    .balign 4
guest_ap_tramp_cr3:
    .long 0
guest_ap_tramp_far:
    .long 0
    .word 0x08
guest_ap_tramp_end:
    .code64

    .section .text
guest_ap_long:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov GUEST_AP_STACK(%rip), %rsp
    mov GUEST_AP_MAIN(%rip), %rax
    call *%rax
1:  hlt
    jmp 1b
    .global guest_ap_long_address
    .section .rodata
guest_ap_long_address:
    .quad guest_ap_long
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static guest_ap_tramp_start: u8;
    static guest_ap_tramp_end: u8;
    static guest_ap_tramp_gdtr: u8;
    static guest_ap_tramp_cr3: u8;
    static guest_ap_tramp_far: u8;
    static guest_ap_long_address: u64;
}

fn icr(value: u64) {
    // SAFETY: the x2APIC ICR; the hypervisor checks the destination is our own core.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") 0x830u32, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
    };
}

/// Starts the vCPU on the core with `apic_id` at `main` on the stack ending at
/// `stack_top`, with INIT and start-up IPIs through the x2APIC ICR (switching this vCPU
/// to x2APIC mode first). Returns once the IPIs are sent.
pub fn start_ap(apic_id: u32, main: extern "C" fn() -> !, stack_top: u64) {
    prepare_ap(main, stack_top);
    crate::lapic::enter_x2apic_mode();
    let destination = u64::from(apic_id) << 32;
    icr(destination | 0x4500); // INIT, level assert
    delay(100_000);
    let startup = destination | 0x4600 | (TRAMPOLINE >> 12);
    icr(startup);
    delay(10_000);
    icr(startup);
}

/// Waits a while between INIT and start-up IPIs (SDM 9.4.4.1 asks for 10 ms and 200 us;
/// the hypervisor's emulation needs none).
pub fn delay(iterations: u64) {
    for i in 0..iterations {
        core::hint::black_box(i);
    }
}

/// Puts the real-mode trampoline at [`TRAMPOLINE`] (start-up vector 0x10): a vCPU
/// started there loads this vCPU's GDT and page tables and calls `main` on the stack
/// ending at `stack_top`.
pub fn prepare_ap(main: extern "C" fn() -> !, stack_top: u64) {
    GUEST_AP_STACK.store(stack_top, Ordering::SeqCst);
    GUEST_AP_MAIN.store(main as *const () as u64, Ordering::SeqCst);
    // SAFETY: copies the static trampoline to a free page of our own memory and patches
    // its data fields with this CPU's GDT and page tables (identity-mapped).
    unsafe {
        let start = &raw const guest_ap_tramp_start;
        let len = (&raw const guest_ap_tramp_end) as usize - start as usize;
        let dest = TRAMPOLINE as *mut u8;
        core::ptr::copy_nonoverlapping(start, dest, len);
        let field = |symbol: *const u8| dest.add(symbol as usize - start as usize);
        let mut gdtr = [0u8; 10];
        core::arch::asm!("sgdt [{}]", in(reg) gdtr.as_mut_ptr(), options(nostack));
        core::ptr::copy_nonoverlapping(gdtr.as_ptr(), field(&raw const guest_ap_tramp_gdtr), 6);
        let cr3: u64;
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack));
        (field(&raw const guest_ap_tramp_cr3) as *mut u32).write_unaligned(cr3 as u32);
        (field(&raw const guest_ap_tramp_far) as *mut u32).write_unaligned(guest_ap_long_address as u32);
    }
}
