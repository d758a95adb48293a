//! Interrupt descriptor table and CPU exception reporting.
//!
//! Written here rather than with `x86_64::structures::idt`: that table is built around the
//! `x86-interrupt` calling convention, which stable Rust lacks, so the entry stubs are
//! assembly and the table only needs their addresses. Gate layout: Intel SDM Vol. 3
//! 6.14.1 (64-bit IDT gate descriptors).
//!
//! Every exception in the hypervisor is a failure of the run: it is logged with vector,
//! error code, RIP and CPU, then the run ends. The one exception is the NMI, which is the
//! hypervisor's own signal to a core (see `partition/containment.rs`): one that arrives while the
//! core is in the hypervisor rather than in its guest is counted (`partition/nmi.rs`: a stop signal
//! or unexpected) and returns; the core looks at why it was signalled before it next
//! enters the guest. And a #GP at one of the instructions `cpu/fixup.rs` executes for a
//! partition (RDMSR, WRMSR, XSETBV) resumes at its recovery address, which reports the
//! fault to the caller.

use crate::cpu::gdt::{IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI};
use crate::log::error;
use crate::run_end;
use bulkhead_drivers::lapic::SPURIOUS_VECTOR;
use core::cell::UnsafeCell;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, Segment};
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;

/// Register state pushed by the stubs below, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// One stub per exception vector 0..31. Vectors where the CPU pushes an error code
// (8, 10-14, 17, 21, 29, 30: SDM Vol. 3 Table 6-1) skip the dummy push, so every frame
// has the same shape.
core::arch::global_asm!(
    r#"
    .section .text
    .macro EXC_STUB vec, has_error
    .balign 16
exc_stub_\vec:
    .if \has_error == 0
    push $0
    .endif
    push $\vec
    jmp exc_common
    .endm

    EXC_STUB 0, 0
    EXC_STUB 1, 0
    EXC_STUB 2, 0
    EXC_STUB 3, 0
    EXC_STUB 4, 0
    EXC_STUB 5, 0
    EXC_STUB 6, 0
    EXC_STUB 7, 0
    EXC_STUB 8, 1
    EXC_STUB 9, 0
    EXC_STUB 10, 1
    EXC_STUB 11, 1
    EXC_STUB 12, 1
    EXC_STUB 13, 1
    EXC_STUB 14, 1
    EXC_STUB 15, 0
    EXC_STUB 16, 0
    EXC_STUB 17, 1
    EXC_STUB 18, 0
    EXC_STUB 19, 0
    EXC_STUB 20, 0
    EXC_STUB 21, 1
    EXC_STUB 22, 0
    EXC_STUB 23, 0
    EXC_STUB 24, 0
    EXC_STUB 25, 0
    EXC_STUB 26, 0
    EXC_STUB 27, 0
    EXC_STUB 28, 0
    EXC_STUB 29, 1
    EXC_STUB 30, 1
    EXC_STUB 31, 0

exc_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    cld
    call exception_entry
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq

    /* The APIC's spurious vector needs no EOI (SDM Vol. 3 11.9). */
    .balign 16
spurious_stub:
    iretq

    /* The monitor's timer tick (supervision/monitor.rs): only wakes the monitor from HLT.
       Saves the registers a Rust call may clobber: nine pushes on the CPU's five-word frame
       leave RSP 16-byte aligned at the call. */
    .balign 16
monitor_tick_stub:
    push %rax
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    cld
    call monitor_tick_entry
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rax
    iretq

    .section .rodata
    .balign 8
    .global exception_stubs
exception_stubs:
    .irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exc_stub_\vec
    .endr
    .global spurious_stub_address
spurious_stub_address:
    .quad spurious_stub
    .global monitor_tick_stub_address
monitor_tick_stub_address:
    .quad monitor_tick_stub
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static exception_stubs: [u64; 32];
    static spurious_stub_address: u64;
    static monitor_tick_stub_address: u64;
}

/// The vector of the monitor's timer tick (`supervision/monitor.rs`), on the monitor's core
/// only, which runs no partition.
pub const MONITOR_TICK_VECTOR: u8 = 0x40;

/// The monitor's tick: nothing to do but end the interrupt (the monitor wakes from HLT).
#[unsafe(no_mangle)]
extern "C" fn monitor_tick_entry() {
    crate::cpu::apic::end_of_interrupt();
}

/// A 64-bit interrupt gate.
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    /// Bits 2:0 IST index (1-based, 0 = none); bits 15:8 type 0xE (interrupt gate), DPL 0, present.
    options: u16,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const MISSING: Gate = Gate { offset_low: 0, selector: 0, options: 0, offset_mid: 0, offset_high: 0, reserved: 0 };

    fn interrupt(handler: u64, selector: u16, ist: Option<u16>) -> Self {
        const PRESENT_INTERRUPT_GATE: u16 = 0x8e00;
        Gate {
            offset_low: handler as u16,
            selector,
            options: PRESENT_INTERRUPT_GATE | ist.map_or(0, |slot| slot + 1),
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt(UnsafeCell<[Gate; 256]>);
// SAFETY: written once by the BSP in `init` before any other CPU starts; read-only after.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([Gate::MISSING; 256]));

/// Fills the IDT. BSP only, before the APs start.
pub fn init() {
    let selector = CS::get_reg().0;
    // SAFETY: single writer before any reader exists (see `Idt`); the stub table is
    // static data emitted above.
    let (gates, stubs, spurious, tick) =
        unsafe { (&mut *IDT.0.get(), &exception_stubs, spurious_stub_address, monitor_tick_stub_address) };
    for (vector, &stub) in stubs.iter().enumerate() {
        let ist = match vector {
            2 => Some(IST_NMI),
            8 => Some(IST_DOUBLE_FAULT),
            18 => Some(IST_MACHINE_CHECK),
            _ => None,
        };
        gates[vector] = Gate::interrupt(stub, selector, ist);
    }
    gates[SPURIOUS_VECTOR as usize] = Gate::interrupt(spurious, selector, None);
    gates[MONITOR_TICK_VECTOR as usize] = Gate::interrupt(tick, selector, None);
}

/// Loads the IDT on this CPU.
pub fn load() {
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<[Gate; 256]>() - 1) as u16,
        base: VirtAddr::from_ptr(IDT.0.get()),
    };
    // SAFETY: the IDT is static and was filled by `init`.
    unsafe { lidt(&pointer) };
}

/// Mnemonic of an exception vector (SDM Vol. 3 Table 6-1).
pub fn exception_name(vector: u64) -> &'static str {
    match vector {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        9 => "coprocessor segment overrun",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        20 => "#VE",
        21 => "#CP",
        28 => "#HV",
        29 => "#VC",
        30 => "#SX",
        _ => "reserved",
    }
}

#[unsafe(no_mangle)]
extern "C" fn exception_entry(frame: &mut ExceptionFrame) {
    const NMI: u64 = 2;
    const GENERAL_PROTECTION: u64 = 13;
    if frame.vector == NMI {
        // Counted (a stop signal or unexpected); the core looks at why it was signalled
        // before it next enters its guest.
        crate::partition::nmi::taken_in_hypervisor();
        return;
    }
    if frame.vector == GENERAL_PROTECTION
        && let Some(resume) = crate::cpu::fixup::recovery(frame.rip)
    {
        frame.rip = resume;
        return;
    }
    let cpu = crate::cpu::percpu::current_index();
    error!(
        "exception {=str} (vector {=u64}) on cpu {=u32}: error_code={=u64:#x} rip={=u64:#x} rsp={=u64:#x} rflags={=u64:#x} cs={=u64:#x}",
        exception_name(frame.vector),
        frame.vector,
        cpu,
        frame.error_code,
        frame.rip,
        frame.rsp,
        frame.rflags,
        frame.cs
    );
    if frame.vector == 14 {
        let address = x86_64::registers::control::Cr2::read_raw();
        error!("page fault at address {=u64:#x}", address);
    }
    error!(
        "registers: rax={=u64:#x} rbx={=u64:#x} rcx={=u64:#x} rdx={=u64:#x} rsi={=u64:#x} rdi={=u64:#x} rbp={=u64:#x}",
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp
    );
    run_end::fail("cpu exception");
}
