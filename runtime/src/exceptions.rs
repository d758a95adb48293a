//! The interrupt descriptor table: a handler for each of the 32 exception vectors that
//! reports the exception (name, vector, error code, RIP, CR2, RSP) through the fault
//! policy ([`crate::fault`]); [`set_gate`] installs other vectors (a scheduler's timer, a
//! SynIC interrupt).
//!
//! IDT gate layout: SDM Vol. 3A §6.14.1 (64-bit interrupt gate, type 0xE); the CPU pushes
//! an error code for vectors 8, 10-14, 17, 21, 29 and 30 (§6.15), the stubs push 0 for
//! the others so one frame layout serves all.

use crate::fault::{self, Kind};

const ENTRIES: usize = 256;

/// The interrupt vectors the runtime assigns beyond the exceptions, so its parts do not
/// collide: a scheduler installs its handlers with [`set_gate`] before it enables them.
#[allow(dead_code, reason = "the interface for the scheduler (sched/) and the messaging crate")]
pub mod vectors {
    /// The local APIC timer (LVT timer), the scheduler's tick and sleep deadlines.
    pub const TIMER: u8 = 0x30;
    /// The IPI one vCPU sends another to reschedule (a woken thread, a new one).
    pub const RESCHEDULE: u8 = 0x31;
    /// SynIC SINTs that carry messages, and event flags (the values the other Bulkhead
    /// payloads use).
    pub const SINT_MESSAGE: u8 = 0x50;
    pub const SINT_EVENT: u8 = 0x51;
    /// The local APIC's spurious-interrupt vector (bits 3:0 all ones, SDM Vol. 3A §11.9).
    pub const SPURIOUS: u8 = 0xFF;
}

#[repr(C, align(16))]
struct Idt([u64; ENTRIES * 2]);
static mut IDT: Idt = Idt([0; ENTRIES * 2]);

/// What the stubs leave on the stack, lowest address first.
#[repr(C)]
struct Frame {
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

core::arch::global_asm!(
    ".pushsection .text.bulkhead_exceptions, \"ax\"",
    ".irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    "bulkhead_exception_\\v:",
    ".if (\\v == 8) || (\\v == 10) || (\\v == 11) || (\\v == 12) || (\\v == 13) || (\\v == 14) || (\\v == 17) || (\\v == 21) || (\\v == 29) || (\\v == 30)",
    ".else",
    "push 0",
    ".endif",
    "push \\v",
    "jmp bulkhead_exception_common",
    ".endr",
    "bulkhead_exception_common:",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {handler}",
    "ud2",
    ".popsection",
    ".pushsection .rodata.bulkhead_exceptions, \"a\"",
    ".balign 8",
    "bulkhead_exception_table:",
    ".irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    ".quad bulkhead_exception_\\v",
    ".endr",
    ".popsection",
    handler = sym exception,
);

unsafe extern "C" {
    /// The stubs' addresses, by vector.
    static bulkhead_exception_table: [u64; 32];
}

const NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved (15)",
    "#MF x87 floating point",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD floating point",
    "#VE virtualization",
    "#CP control protection",
    "reserved (22)",
    "reserved (23)",
    "reserved (24)",
    "reserved (25)",
    "reserved (26)",
    "reserved (27)",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved (31)",
];

extern "C" fn exception(frame: &Frame) -> ! {
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    let vector = (frame.vector & 31) as u8;
    fault::report(Kind::Exception(vector), frame.error_code, frame.rip, |text| {
        write!(
            text,
            "exception {} (vector {}), error code {:#x}, RIP {:#x}, CR2 {:#x}, RSP {:#x}, RFLAGS {:#x}",
            NAMES[usize::from(vector)],
            frame.vector,
            frame.error_code,
            frame.rip,
            cr2,
            frame.rsp,
            frame.rflags
        )
    })
}

/// Points `vector` at `handler` (an interrupt gate: interrupts off on entry).
pub fn set_gate(vector: u8, handler: u64) {
    let cs: u16;
    // SAFETY: reading CS has no side effects.
    unsafe { core::arch::asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack)) };
    let low = (handler & 0xFFFF) | u64::from(cs) << 16 | 0x8E00u64 << 32 | (handler >> 16 & 0xFFFF) << 48;
    let high = handler >> 32;
    let at = usize::from(vector) * 2;
    // SAFETY: one 16-byte gate of the IDT; a gate is written before its vector is used
    // (exceptions at start, other vectors before they are enabled).
    unsafe {
        core::ptr::write_volatile(&raw mut IDT.0[at], low);
        core::ptr::write_volatile(&raw mut IDT.0[at + 1], high);
    }
}

/// Fills the exception gates and loads the IDT (on this vCPU; another loads it with
/// [`load`]).
pub fn install() {
    for vector in 0..32u8 {
        // SAFETY: the table the assembly above defines, 32 addresses.
        let stub = unsafe { bulkhead_exception_table[usize::from(vector)] };
        set_gate(vector, stub);
    }
    load();
}

/// Loads the IDT on this vCPU.
pub fn load() {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let pointer = Pointer { limit: (ENTRIES * 16 - 1) as u16, base: &raw const IDT as u64 };
    // SAFETY: the IDT is static and its exception gates are filled.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack)) };
}
