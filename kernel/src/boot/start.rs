//! Entry from GRUB: the multiboot2 header and the 32-bit start-up code that reaches long
//! mode and calls [`crate::bsp_entry`], plus the protected-mode half of AP start-up (see
//! `boot/smp.rs` for the real-mode half).
//!
//! Multiboot2 hands over in 32-bit protected mode with paging off, EAX = magic and EBX =
//! the boot information's physical address (Multiboot2 spec 3.3). The boot page tables
//! built here identity-map the first 4 GiB with 2 MiB pages; `boot/paging.rs` replaces them
//! with the final tables as soon as Rust runs.

use crate::cpu::percpu::{CPU_STACKS, CpuStacks};
use core::mem::offset_of;

/// Boot GDT, shared by the BSP's and the APs' way into long mode.
pub const SEL_CODE32: u16 = 0x08;
pub const SEL_DATA: u16 = 0x10;
pub const SEL_CODE64: u16 = 0x18;

core::arch::global_asm!(
    r#"
    .section .multiboot2, "a"
    .balign 8
mb2_header:
    .long 0xe85250d6                       /* magic */
    .long 0                                /* architecture: i386 protected mode */
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (0xe85250d6 + (mb2_header_end - mb2_header))
    .balign 8
    .word 0, 0                             /* end tag */
    .long 8
mb2_header_end:

    .section .rodata
    .balign 16
    .global boot_gdt
boot_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff               /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff               /* 0x10: data */
    .quad 0x00af9a000000ffff               /* 0x18: 64-bit code */
boot_gdt_end:
    .global boot_gdtr
boot_gdtr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .bss.boot_tables, "aw", @nobits
    .balign 4096
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd:   .skip 4096 * 4

    .section .text.boot, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov %eax, %ebp                         /* multiboot2 magic */
    mov %ebx, %esi                         /* boot information address */

    /* Zero .bss (holds the boot tables and every stack). */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    /* PD entries: 2048 x 2 MiB, present + writable + large. */
    mov $boot_pd, %edi
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, (%edi,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 1b
    /* PDPT entries 0..3 -> the four PDs. */
    mov $boot_pdpt, %edi
    mov $boot_pd + 3, %eax
    mov %eax, 0(%edi)
    add $4096, %eax
    mov %eax, 8(%edi)
    add $4096, %eax
    mov %eax, 16(%edi)
    add $4096, %eax
    mov %eax, 24(%edi)
    movl $boot_pdpt + 3, boot_pml4

    mov $boot_pml4, %eax
    jmp enter_long_mode_from_32

    /* Shared by the BSP and the APs: EAX = PML4, ESI/EBP preserved. */
enter_long_mode_from_32:
    mov %eax, %cr3
    mov %cr4, %eax
    or $(1 << 5), %eax                     /* PAE */
    mov %eax, %cr4
    mov $0xc0000080, %ecx                  /* IA32_EFER */
    rdmsr
    or $(1 << 8), %eax                     /* LME */
    or ap_boot_efer_extra, %eax            /* NXE for APs once the BSP uses NX */
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax                   /* PG | WP | PE */
    mov %eax, %cr0
    lgdt boot_gdtr
    ljmp ${sel_code64}, $long_mode_entry

    /* APs arrive here from the real-mode trampoline, with the boot GDT loaded. */
    .global ap_start32
ap_start32:
    mov ${sel_data}, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $1, %ebp                           /* marks an AP for long_mode_entry */
    mov ap_boot_cr3, %eax
    jmp enter_long_mode_from_32

    .code64
long_mode_entry:
    xor %eax, %eax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    cmp $1, %ebp
    je 2f
    /* BSP: CPU 0's kernel stack, then bsp_entry(magic, boot_info). */
    lea {stacks}+{bsp_stack_top}(%rip), %rsp
    mov %ebp, %edi
    mov %esi, %esi
    call bsp_entry
    ud2
2:  /* AP: the stack and CPU index the BSP left for it. */
    mov ap_boot_stack(%rip), %rsp
    mov ap_boot_cpu(%rip), %edi
    call ap_entry
    ud2
    "#,
    sel_code64 = const SEL_CODE64,
    sel_data = const SEL_DATA,
    stacks = sym CPU_STACKS,
    bsp_stack_top = const offset_of!(CpuStacks, kernel) + CpuStacks::KERNEL_STACK_TOP,
    options(att_syntax)
);
