//! Test payload "sweep": tries every MSR, port and privileged instruction a partition can
//! name, and random hypercalls, and records what each got (a value, #GP, #UD...). The
//! hypervisor must stay up through all of it; the HIL tests (`tests/tests/hil/sweep.rs`)
//! run it next to the witness partition, whose counter and canary must stay intact.
//!
//! Command line: `range=NAME` picks the part (`msr-low` 0..0x2000, `msr-high`
//! 0xC000_0000..0xC000_2000, `msr-hyperv` 0x4000_0000..0x4000_0200, `ports`,
//! `instructions`, `hypercalls`: first each code of Bulkhead's own range once, then the
//! random ones); `cr4=supported` toggles only the CR4 bits CPUID
//! reports (for QEMU, see [`cr4_supported`]); `seed=N` the hypercall fuzzer's seed (printed, so a
//! failure can be replayed); `count=N` the number of hypercalls (default 100 000);
//! `ports=FIRST-LAST` a port range (default all).
//!
//! Its own IDT has a handler for every vector: an exception is recorded and the probe
//! resumes at the address it registered (past the faulting instruction, or at the
//! instruction that restores the state it changed); an interrupt is counted and, through
//! the x2APIC, acknowledged. Interrupts stay disabled, so only NMIs and exceptions arrive
//! in practice.
//!
//! Values written to each MSR: 0, all ones, the high half only, the low half only, and the
//! value read (if it could be read); for the MSRs that can be read, also each bit alone.
//! That is the documented subset: 64 values for each of the 16 896 MSRs would keep Bochs
//! busy for many minutes, and an MSR that cannot even be read is refused whatever is
//! written. After each write that was taken, the value read before is written back, so
//! the guest's own live state (EFER, PAT, FS/GS base, LSTAR, SYSENTER, APIC timer, TPR,
//! SVR...) is restored. Skipped, and printed as such: writes that would legitimately end
//! or reset this guest (INIT or start-up IPIs in the ICR).
#![no_std]
#![no_main]

use bulkhead_abi::hyperv::{HvStatus, HypercallResult};
use bulkhead_guests::{arg, cmdline, outb, parse_u64, println};
use core::sync::atomic::{AtomicU64, Ordering};

/// No exception since the probe began.
const NONE: u64 = u64::MAX;

/// Where a faulting probe resumes; after three faults in one probe, [`RESUME_FINAL`] (a
/// restore that faults cannot loop).
#[unsafe(no_mangle)]
static RESUME: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static RESUME_FINAL: AtomicU64 = AtomicU64::new(0);
static PROBE_FAULTS: AtomicU64 = AtomicU64::new(0);
/// The first exception vector of the current probe.
static VECTOR: AtomicU64 = AtomicU64::new(NONE);
static INTERRUPTS: AtomicU64 = AtomicU64::new(0);
static NMIS: AtomicU64 = AtomicU64::new(0);

// One 16-byte stub per vector: a dummy error code where the CPU pushes none (SDM Vol. 3
// Table 6-1: 8, 10-14, 17, 21, 29, 30 push one), the vector, then the common path, which
// saves the caller-saved registers and calls `sweep_vector` with the frame.
core::arch::global_asm!(
    r#"
    .section .text
    .balign 16
    .global sweep_stubs
sweep_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp sweep_common
    .set vec, vec + 1
    .endr

sweep_common:
    push %rax
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    mov %rsp, %rdi
    cld
    call sweep_vector
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rax
    add $16, %rsp
    iretq
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static sweep_stubs: u8;
}

#[repr(C)]
struct Frame {
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rax: u64,
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

#[unsafe(no_mangle)]
extern "C" fn sweep_vector(frame: &mut Frame) {
    const NMI: u64 = 2;
    const SPURIOUS: u64 = 0xff;
    match frame.vector {
        NMI => {
            NMIS.fetch_add(1, Ordering::SeqCst);
        }
        vector if vector < 32 => {
            let _ = VECTOR.compare_exchange(NONE, vector, Ordering::SeqCst, Ordering::SeqCst);
            let faults = PROBE_FAULTS.fetch_add(1, Ordering::SeqCst);
            let resume = if faults < 3 { &RESUME } else { &RESUME_FINAL }.load(Ordering::SeqCst);
            if resume == 0 {
                println!(
                    "sweep: FAIL: unexpected exception {} (error code {:#x}) at rip {:#x}",
                    vector, frame.error_code, frame.rip
                );
                bulkhead_guests::idle();
            }
            frame.rip = resume;
        }
        vector => {
            INTERRUPTS.fetch_add(1, Ordering::SeqCst);
            if vector != SPURIOUS {
                // x2APIC EOI; a #GP here (APIC not in x2APIC mode) is not expected.
                // SAFETY: the guest's own local APIC.
                unsafe { core::arch::asm!("wrmsr", in("ecx") 0x80bu32, in("eax") 0u32, in("edx") 0u32) };
            }
        }
    }
}

#[repr(C, align(16))]
struct Idt([u64; 512]);
static mut IDT: Idt = Idt([0; 512]);

fn install_idt() {
    // The stubs above, 16 bytes apart.
    let base = &raw const sweep_stubs as u64;
    for vector in 0..256u64 {
        let handler = base + vector * 16;
        let low = (handler & 0xffff) | (0x08 << 16) | (0x8e00 << 32) | ((handler >> 16) & 0xffff) << 48;
        // SAFETY: single-threaded set-up of this payload's own IDT.
        unsafe {
            let idt = &raw mut IDT;
            (*idt).0[vector as usize * 2] = low;
            (*idt).0[vector as usize * 2 + 1] = handler >> 32;
        }
    }
    let idt = &raw const IDT as u64;
    let pointer: [u16; 5] = [4095, idt as u16, (idt >> 16) as u16, (idt >> 32) as u16, (idt >> 48) as u16];
    // SAFETY: the table is filled; interrupts stay disabled.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &pointer, options(nostack)) };
}

/// What a probe got: completed (with a value where it has one) or an exception.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Ok(u64),
    Fault(u64),
}

const GP: u64 = 13;
const UD: u64 = 6;
/// #DB: the answer to a MOV DR after DR7.GD was set (SDM Vol. 3 18.2.4), the restore.
const DB: u64 = 1;

fn begin() {
    VECTOR.store(NONE, Ordering::SeqCst);
    PROBE_FAULTS.store(0, Ordering::SeqCst);
}

fn end(value: u64) -> Outcome {
    RESUME.store(0, Ordering::SeqCst);
    RESUME_FINAL.store(0, Ordering::SeqCst);
    match VECTOR.load(Ordering::SeqCst) {
        NONE => Outcome::Ok(value),
        vector => Outcome::Fault(vector),
    }
}

fn rdmsr(msr: u32) -> Outcome {
    begin();
    let (lo, hi): (u32, u32);
    // SAFETY: a fault resumes at label 2 (the handler); RDMSR changes nothing else.
    unsafe {
        core::arch::asm!(
            "lea {t}, [rip + 2f]",
            "mov qword ptr [rip + {resume}], {t}",
            "mov qword ptr [rip + {final}], {t}",
            "rdmsr",
            "2:",
            t = out(reg) _,
            resume = sym RESUME,
            final = sym RESUME_FINAL,
            in("ecx") msr,
            inout("eax") 0u32 => lo,
            inout("edx") 0u32 => hi,
            options(nostack),
        )
    };
    end(u64::from(hi) << 32 | u64::from(lo))
}

fn wrmsr(msr: u32, value: u64) -> Outcome {
    begin();
    // SAFETY: as in `rdmsr`; the caller restores what a taken write changed.
    unsafe {
        core::arch::asm!(
            "lea {t}, [rip + 2f]",
            "mov qword ptr [rip + {resume}], {t}",
            "mov qword ptr [rip + {final}], {t}",
            "wrmsr",
            "2:",
            t = out(reg) _,
            resume = sym RESUME,
            final = sym RESUME_FINAL,
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack),
        )
    };
    end(0)
}

/// Counts of outcomes.
#[derive(Default, Clone, Copy)]
struct Tally {
    ok: u64,
    gp: u64,
    ud: u64,
    db: u64,
    other: u64,
    skipped: u64,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok(_) => self.ok += 1,
            Outcome::Fault(GP) => self.gp += 1,
            Outcome::Fault(UD) => self.ud += 1,
            Outcome::Fault(DB) => self.db += 1,
            Outcome::Fault(_) => self.other += 1,
        }
    }
}

impl core::fmt::Display for Tally {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ok={} gp={} ud={} other={}", self.ok, self.gp, self.ud, self.other)?;
        if self.db != 0 {
            write!(f, " db={}", self.db)?;
        }
        if self.skipped != 0 {
            write!(f, " skipped={}", self.skipped)?;
        }
        Ok(())
    }
}

fn name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ok(_) => "ok",
        Outcome::Fault(GP) => "#GP",
        Outcome::Fault(UD) => "#UD",
        Outcome::Fault(_) => "other exception",
    }
}

const IA32_APIC_BASE: u32 = 0x1b;
const X2APIC_ICR: u32 = 0x830;

/// Writes that would end or reset this guest, which a sweep cannot survive by design:
/// INIT (delivery mode 5) and start-up (6) IPIs, which the ICR could aim at this core, and
/// a Hyper-V crash report (CRASH_CTL with CrashNotify and no reserved bit), after which
/// the partition's fault policy applies.
fn ends_the_guest(msr: u32, value: u64) -> bool {
    use bulkhead_abi::hyperv::{CrashCtl, msr::CRASH_CTL};
    (msr == X2APIC_ICR && matches!((value >> 8) & 0b111, 5 | 6))
        || (msr == CRASH_CTL && CrashCtl::decode(value).is_notify() && value & CrashCtl::RESERVED_MASK == 0)
}

/// Writes `original` back after a write that was taken. IA32_APIC_BASE may need two steps
/// (a disabled APIC reaches x2APIC mode through xAPIC mode, SDM 11.12.5).
fn restore(msr: u32, original: u64) {
    if wrmsr(msr, original) != Outcome::Ok(0) && msr == IA32_APIC_BASE {
        let _ = wrmsr(msr, original & !(1 << 10));
        let _ = wrmsr(msr, original);
    }
}

fn sweep_msrs(first: u32, count: u32) -> bool {
    let (mut reads, mut writes) = (Tally::default(), Tally::default());
    let mut skipped_list = 0;
    for msr in first..first + count {
        let read = rdmsr(msr);
        reads.add(read);
        let mut values = [0, u64::MAX, 0xffff_ffff_0000_0000, 0x0000_0000_ffff_ffff, 0];
        let mut fixed = 4;
        if let Outcome::Ok(value) = read {
            values[4] = value;
            fixed = 5;
        }
        let single_bits = if matches!(read, Outcome::Ok(_)) { 0..64 } else { 0..0 };
        let all = values[..fixed].iter().copied().chain(single_bits.map(|bit| 1u64 << bit));
        for value in all {
            if ends_the_guest(msr, value) {
                writes.skipped += 1;
                if skipped_list < 8 {
                    println!(
                        "sweep: skipped wrmsr {:#x} <- {:#x} (an INIT/start-up IPI or a crash report would end this guest)",
                        msr, value
                    );
                }
                skipped_list += 1;
                continue;
            }
            let outcome = wrmsr(msr, value);
            writes.add(outcome);
            // CRASH_CTL reads back its capabilities, which written would report a crash.
            if let (Outcome::Ok(_), Outcome::Ok(original)) = (outcome, read)
                && !ends_the_guest(msr, original)
            {
                restore(msr, original);
            }
        }
    }
    println!("sweep: msr {:#x}-{:#x}: rdmsr {}; wrmsr {}", first, first + count - 1, reads, writes);
    reads.other == 0 && writes.other == 0
}

/// The answers the hypervisor once got wrong (each crashed it): a write to 0x831 (no such
/// x2APIC register), a masked LINT0 with reserved bits, an ICR with reserved bits, an
/// LVT without a delivery-mode field given one, and an MTRR beyond MTRRCAP.VCNT.
fn known_cases() {
    let vcnt = match rdmsr(0xfe) {
        Outcome::Ok(cap) => cap & 0xff,
        Outcome::Fault(_) => 0,
    };
    let beyond_vcnt = 0x200 + 2 * vcnt as u32;
    println!(
        "sweep: check: wrmsr 0x831 {}; LINT0 masked with bit 20 {}; ICR bit 13 {}; LVT error NMI mode {}; rdmsr MTRR beyond VCNT {}",
        name(wrmsr(0x831, 0)),
        name(wrmsr(0x835, (1 << 16) | (1 << 20))),
        name(wrmsr(X2APIC_ICR, (1 << 32) | (1 << 13) | 0x40)),
        name(wrmsr(0x837, (0b100 << 8) | 0x40)),
        name(rdmsr(beyond_vcnt)),
    );
    // The LVT timer has no delivery-mode field. Where the x2APIC is emulated the
    // hypervisor refuses the bits; a real x2APIC answers the write itself.
    let timer = rdmsr(0x832);
    println!("sweep: check: LVT timer SMI mode {}", name(wrmsr(0x832, (1 << 16) | (0b010 << 8) | 0x40)));
    if let Outcome::Ok(value) = timer {
        let _ = wrmsr(0x832, value);
    }
}

/// Switches this core's local APIC to x2APIC mode (from xAPIC mode, or staying there).
fn x2apic_mode() {
    if let Outcome::Ok(base) = rdmsr(IA32_APIC_BASE) {
        println!("sweep: x2APIC mode: {}", name(wrmsr(IA32_APIC_BASE, base | (1 << 10) | (1 << 11))));
    }
}

fn port_in(port: u16, size: u8) -> Outcome {
    begin();
    // SAFETY: a fault resumes after the instruction; IN changes only EAX.
    unsafe {
        match size {
            1 => {
                core::arch::asm!("lea {t}, [rip + 2f]", "mov qword ptr [rip + {r}], {t}", "mov qword ptr [rip + {f}], {t}", "in al, dx", "2:",
                t = out(reg) _, r = sym RESUME, f = sym RESUME_FINAL, in("dx") port, out("al") _, options(nostack))
            }
            2 => {
                core::arch::asm!("lea {t}, [rip + 2f]", "mov qword ptr [rip + {r}], {t}", "mov qword ptr [rip + {f}], {t}", "in ax, dx", "2:",
                t = out(reg) _, r = sym RESUME, f = sym RESUME_FINAL, in("dx") port, out("ax") _, options(nostack))
            }
            _ => {
                core::arch::asm!("lea {t}, [rip + 2f]", "mov qword ptr [rip + {r}], {t}", "mov qword ptr [rip + {f}], {t}", "in eax, dx", "2:",
                t = out(reg) _, r = sym RESUME, f = sym RESUME_FINAL, in("dx") port, out("eax") _, options(nostack))
            }
        }
    }
    end(0)
}

fn port_out(port: u16, size: u8, value: u32) -> Outcome {
    begin();
    // SAFETY: as in `port_in`.
    unsafe {
        match size {
            1 => {
                core::arch::asm!("lea {t}, [rip + 2f]", "mov qword ptr [rip + {r}], {t}", "mov qword ptr [rip + {f}], {t}", "out dx, al", "2:",
                t = out(reg) _, r = sym RESUME, f = sym RESUME_FINAL, in("dx") port, in("al") value as u8, options(nostack))
            }
            2 => {
                core::arch::asm!("lea {t}, [rip + 2f]", "mov qword ptr [rip + {r}], {t}", "mov qword ptr [rip + {f}], {t}", "out dx, ax", "2:",
                t = out(reg) _, r = sym RESUME, f = sym RESUME_FINAL, in("dx") port, in("ax") value as u16, options(nostack))
            }
            _ => {
                core::arch::asm!("lea {t}, [rip + 2f]", "mov qword ptr [rip + {r}], {t}", "mov qword ptr [rip + {f}], {t}", "out dx, eax", "2:",
                t = out(reg) _, r = sym RESUME, f = sym RESUME_FINAL, in("dx") port, in("eax") value, options(nostack))
            }
        }
    }
    end(0)
}

/// The partition's own console data register: writes print, so the sweep leaves it out.
const CONSOLE_DATA: u16 = 0x3f8;

fn sweep_ports(first: u16, last: u16) -> bool {
    let (mut reads, mut writes) = (Tally::default(), Tally::default());
    for port in first..=last {
        for size in [1, 2, 4] {
            reads.add(port_in(port, size));
            if port == CONSOLE_DATA {
                writes.skipped += 1;
                continue;
            }
            writes.add(port_out(port, size, 0xffff_ffff));
        }
    }
    // The sweep wrote all-ones to the console UART's other registers, as to every port:
    // the divisor latch is now selected (LCR bit 7) and the UART loops back (MCR bit 4),
    // so, as on a real 16550A, nothing printed would reach the line. Program it again
    // as a driver would: 8 data bits, no parity, 1 stop bit; DTR and RTS; no interrupts.
    outb(CONSOLE_DATA + 3, 0x03);
    outb(CONSOLE_DATA + 4, 0x03);
    outb(CONSOLE_DATA + 1, 0x00);
    println!("sweep: ports {:#x}-{:#x} (console data 0x3f8 not written): in {}; out {}", first, last, reads, writes);
    reads.other == 0 && writes.other == 0
}

/// `mov crN, value` then, at the resume point, `mov crN, original`.
macro_rules! write_then_restore {
    ($write:literal, $restore:literal, $value:expr, $original:expr) => {{
        begin();
        // SAFETY: a fault resumes at the restore (label 2), or past it after three faults;
        // the register is written back before anything else runs.
        unsafe {
            core::arch::asm!(
                "lea {t}, [rip + 2f]",
                "mov qword ptr [rip + {r}], {t}",
                "lea {t}, [rip + 3f]",
                "mov qword ptr [rip + {f}], {t}",
                $write,
                "2:",
                $restore,
                "3:",
                t = out(reg) _,
                r = sym RESUME,
                f = sym RESUME_FINAL,
                v = in(reg) $value,
                o = in(reg) $original,
                options(nostack),
            )
        };
        end(0)
    }};
}

fn read_cr(which: u8) -> u64 {
    let value: u64;
    // SAFETY: reading a control register has no effect.
    unsafe {
        match which {
            0 => core::arch::asm!("mov {}, cr0", out(reg) value, options(nomem, nostack)),
            4 => core::arch::asm!("mov {}, cr4", out(reg) value, options(nomem, nostack)),
            _ => core::arch::asm!("mov {}, cr8", out(reg) value, options(nomem, nostack)),
        }
    }
    value
}

fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called with CR4.OSXSAVE set.
    unsafe { core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    u64::from(hi) << 32 | u64::from(lo)
}

fn xsetbv_then_restore(value: u64, original: u64) -> Outcome {
    begin();
    // SAFETY: as in `write_then_restore`.
    unsafe {
        core::arch::asm!(
            "lea {t}, [rip + 2f]",
            "mov qword ptr [rip + {r}], {t}",
            "lea {t}, [rip + 3f]",
            "mov qword ptr [rip + {f}], {t}",
            "mov eax, {vl:e}",
            "mov edx, {vh:e}",
            "xor ecx, ecx",
            "xsetbv",
            "2:",
            "mov eax, {ol:e}",
            "mov edx, {oh:e}",
            "xor ecx, ecx",
            "xsetbv",
            "3:",
            t = out(reg) _,
            r = sym RESUME,
            f = sym RESUME_FINAL,
            vl = in(reg) value as u32,
            vh = in(reg) (value >> 32) as u32,
            ol = in(reg) original as u32,
            oh = in(reg) (original >> 32) as u32,
            out("eax") _,
            out("edx") _,
            out("ecx") _,
            options(nostack),
        )
    };
    end(0)
}

/// One instruction with no operands to restore, resuming past it on a fault.
macro_rules! instruction {
    ($($asm:literal),+ ; $($operands:tt)*) => {{
        begin();
        // SAFETY: a fault resumes past the instruction (label 2).
        unsafe {
            core::arch::asm!(
                "lea {t}, [rip + 2f]",
                "mov qword ptr [rip + {r}], {t}",
                "mov qword ptr [rip + {r2}], {t}",
                $($asm),+,
                "2:",
                t = out(reg) _,
                r = sym RESUME,
                r2 = sym RESUME_FINAL,
                $($operands)*
            )
        };
        end(0)
    }};
}

/// CR0.PE and CR0.PG, CR4.PAE: clearing them in 64-bit mode is #GP on hardware (SDM Vol.
/// 3 9.8.5.4, APM Vol. 2 14.7), answered by the CPU without an exit to the hypervisor;
/// QEMU 7.2 TCG takes them and leaves long mode under the guest, which ends it. So they
/// are not tried.
const LEAVES_LONG_MODE_CR0: [u32; 2] = [0, 31];
const LEAVES_LONG_MODE_CR4: [u32; 1] = [5];

/// The CR4 bits whose feature CPUID reports (SDM Vol. 3 2.5, Figure 2-8), for
/// `cr4=supported`: QEMU 7.2 TCG answers a guest's write of any other CR4 bit under SVM
/// with #VMEXIT(INVALID) instead of #GP (not what a CPU does), which ends the guest.
fn cr4_supported() -> u64 {
    let leaf1 = bulkhead_guests::cpuid(1, 0);
    let leaf7 = bulkhead_guests::cpuid(7, 0);
    let has = |reg: u32, bit: u32| reg & (1 << bit) != 0;
    let bits: [(u32, bool); 22] = [
        (0, has(leaf1.edx, 1)),
        (1, has(leaf1.edx, 1)),
        (2, has(leaf1.edx, 4)),
        (3, has(leaf1.edx, 2)),
        (4, has(leaf1.edx, 3)),
        (5, has(leaf1.edx, 6)),
        (6, has(leaf1.edx, 7)),
        (7, has(leaf1.edx, 13)),
        (8, true),
        (9, has(leaf1.edx, 24)),
        (10, has(leaf1.edx, 25)),
        (11, has(leaf7.ecx, 2)),
        (12, has(leaf7.ecx, 16)),
        (13, has(leaf1.ecx, 5)),
        (14, has(leaf1.ecx, 6)),
        (16, has(leaf7.ebx, 0)),
        (17, has(leaf1.ecx, 17)),
        (18, has(leaf1.ecx, 26)),
        (20, has(leaf7.ebx, 7)),
        (21, has(leaf7.ebx, 20)),
        (22, has(leaf7.ecx, 3)),
        (23, has(leaf7.ecx, 7)),
    ];
    bits.iter().filter(|(_, present)| *present).fold(0, |mask, (bit, _)| mask | 1 << bit)
}

fn sweep_instructions(cr4_reserved: bool) -> bool {
    let mut all = Tally::default();
    let mut tally = |label: &str, probe: &mut dyn FnMut(u32) -> Outcome, bits: u32, skip: &[u32]| {
        let mut t = Tally::default();
        for bit in 0..bits {
            if skip.contains(&bit) {
                t.skipped += 1;
                continue;
            }
            t.add(probe(bit));
        }
        println!("sweep: {}: {}", label, t);
        if !skip.is_empty() {
            let mask = skip.iter().fold(0u64, |mask, bit| mask | 1 << bit);
            println!("sweep: {}: skipped bits {:#x}", label, mask);
        }
        all.ok += t.ok;
        all.gp += t.gp;
        all.ud += t.ud;
        all.db += t.db;
        all.other += t.other;
    };
    let cr0 = read_cr(0);
    tally(
        "cr0 each bit toggled",
        &mut |bit| write_then_restore!("mov cr0, {v}", "mov cr0, {o}", cr0 ^ (1u64 << bit), cr0),
        64,
        &LEAVES_LONG_MODE_CR0,
    );
    let cr4 = read_cr(4);
    let mut cr4_skip = [LEAVES_LONG_MODE_CR4[0]; 64];
    let mut cr4_skipped = 1;
    if !cr4_reserved {
        let supported = cr4_supported();
        for bit in (0..64).filter(|&bit| bit != 5 && supported & (1 << bit) == 0) {
            cr4_skip[cr4_skipped] = bit;
            cr4_skipped += 1;
        }
        println!("sweep: cr4: only the bits CPUID reports ({:#x})", supported);
    }
    tally(
        "cr4 each bit toggled",
        &mut |bit| write_then_restore!("mov cr4, {v}", "mov cr4, {o}", cr4 ^ (1u64 << bit), cr4),
        64,
        &cr4_skip[..cr4_skipped],
    );
    let cr8 = read_cr(8);
    tally(
        "cr8 each bit alone",
        &mut |bit| write_then_restore!("mov cr8, {v}", "mov cr8, {o}", 1u64 << bit, cr8),
        64,
        &[],
    );
    let dr7: u64 = 0x400;
    tally(
        "dr7 each bit alone",
        &mut |bit| write_then_restore!("mov dr7, {v}", "mov dr7, {o}", (1u64 << bit) | 0x400, dr7),
        64,
        &[],
    );
    // XSETBV needs CR4.OSXSAVE (CPUID.1:ECX[26] says XSAVE exists).
    if bulkhead_guests::cpuid(1, 0).ecx & (1 << 26) != 0 {
        // SAFETY: enabling XSAVE in this partition's own CR4.
        unsafe { core::arch::asm!("mov {t}, cr4", "bts {t}, 18", "mov cr4, {t}", t = out(reg) _, options(nostack)) };
        let xcr0 = xgetbv0();
        tally("xsetbv xcr0 each bit alone", &mut |bit| xsetbv_then_restore(1u64 << bit, xcr0), 64, &[]);
        tally(
            "xsetbv xcr0 all ones, zero",
            &mut |n| xsetbv_then_restore(if n == 0 { u64::MAX } else { 0 }, xcr0),
            2,
            &[],
        );
    } else {
        println!("sweep: xsetbv: no XSAVE");
    }
    let page = &raw const RESUME as u64;
    let others = [
        ("invd", instruction!("invd"; options(nostack))),
        ("wbinvd", instruction!("wbinvd"; options(nostack))),
        ("mwait (not armed)", instruction!("mwait"; in("eax") 0u32, in("ecx") 0u32, options(nostack))),
        ("monitor", instruction!("monitor"; in("rax") page, in("ecx") 0u32, in("edx") 0u32, options(nostack))),
        ("rdpmc 0", instruction!("rdpmc"; in("ecx") 0u32, out("eax") _, out("edx") _, options(nostack))),
        (
            "rdpmc 0x40000000",
            instruction!("rdpmc"; in("ecx") 0x4000_0000u32, out("eax") _, out("edx") _, options(nostack)),
        ),
        (
            "rdpmc 0xffffffff",
            instruction!("rdpmc"; in("ecx") 0xffff_ffffu32, out("eax") _, out("edx") _, options(nostack)),
        ),
    ];
    for (label, outcome) in others {
        println!("sweep: {}: {}", label, name(outcome));
        all.add(outcome);
    }
    println!("sweep: instructions: {}", all);
    all.other == 0
}

/// xorshift64* (Vigna): small, deterministic, good enough to pick test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[repr(C, align(4096))]
struct Pages([u8; 8192]);
static mut BLOCKS: Pages = Pages([0; 8192]);

/// A guest-physical address for a parameter block: in this payload's own pages (aligned
/// or not), anywhere in the partition, just past it, in the neighbour's memory or the
/// hypervisor's, or anywhere at all.
fn gpa(rng: &mut Rng) -> u64 {
    let own = &raw const BLOCKS as u64;
    match rng.below(8) {
        0 => 0,
        1 | 2 => own + (rng.below(512) * 8),
        3 => own + rng.below(8192),
        4 => rng.below(16 << 20),
        5 => (16 << 20) + rng.below(16 << 20),
        6 => 0x100_0000_0000 + rng.below(1 << 20) * 8,
        _ => rng.next(),
    }
}

/// Bulkhead's own call codes, 0x8000..=0x80FF, each once in the memory form with a legal
/// empty console-write block (which is also a legal status input: this partition, id 0)
/// and an output block in this payload's second page: the memory-form calls answer (the
/// console write 0x8001 and the partition status 0x8003, SUCCESS); every other code of the
/// range (the fast-only 0x8002 and 0x8004 among them) is INVALID_HYPERCALL_CODE.
fn bulkhead_range(hv: &mut bulkhead_abi::hyperv::client::Client<bulkhead_abi::hyperv::client::X64>) -> bool {
    use bulkhead_abi::hyperv::hypercall::code;
    let block = &raw mut BLOCKS as u64;
    // SAFETY: the first 8 bytes of this payload's block pages: length 0, reserved 0.
    unsafe { (block as *mut u64).write(0) };
    let mut console_write = 0xffff;
    let mut partition_status = 0xffff;
    let mut others_unknown = 0;
    for c in code::BULKHEAD_FIRST..=code::BULKHEAD_LAST {
        let status = HypercallResult::decode(hv.raw_hypercall(u64::from(c), block, block + 4096)).status_code();
        if c == code::BULKHEAD_CONSOLE_WRITE {
            console_write = status;
        } else if c == code::BULKHEAD_PARTITION_STATUS {
            partition_status = status;
        } else if status == HvStatus::InvalidHypercallCode.code() {
            others_unknown += 1;
        }
    }
    let others = code::BULKHEAD_LAST - code::BULKHEAD_FIRST - 1;
    println!(
        "sweep: hypercalls: bulkhead range: 0x8001 status {:#x}, 0x8003 status {:#x}, INVALID_HYPERCALL_CODE for {} of the {} others",
        console_write, partition_status, others_unknown, others
    );
    console_write == HvStatus::Success.code()
        && partition_status == HvStatus::Success.code()
        && others_unknown == others
}

fn sweep_hypercalls(seed: u64, count: u64) -> bool {
    let mut hv = bulkhead_guests::hyperv::client_with_hypercalls();
    let range_ok = bulkhead_range(&mut hv);
    let mut rng = Rng(seed | 1);
    let mut by_status = [0u64; 0x19];
    let mut undefined = 0u64;
    // Bulkhead's range but the console write must keep answering INVALID_HYPERCALL_CODE,
    // and the console write in the memory form never may.
    let mut wrong_code_status = 0u64;
    for n in 0..count {
        let code = match rng.below(5) {
            0 => 0x5c + rng.below(2),
            1 => rng.below(0x100),
            2 => 0x8000 + rng.below(0x100),
            _ => rng.below(0x1_0000),
        };
        let mut input = code;
        if rng.below(2) == 0 {
            input |= 1 << 16; // fast
        }
        if rng.below(4) == 0 {
            input |= rng.below(0x400) << 17; // variable header size
        }
        if rng.below(4) == 0 {
            input |= rng.below(0x1000) << 32 | rng.below(0x1000) << 48; // rep count and start
        }
        if rng.below(8) == 0 {
            input |= rng.next() & 0xF000_F000_7800_0000; // RsvdZ bits
        }
        if rng.below(16) == 0 {
            input = rng.next();
        }
        // The parameters: anywhere; a block in this payload's pages gets random fields
        // around the values that lead further into the checks (connection ids 1 and 2 are
        // this partition's, see tests/configs/sweep.toml; a payload size around 240).
        let (mut parameter, mut output) = (gpa(&mut rng), gpa(&mut rng));
        let own = &raw const BLOCKS as u64;
        // A partition status call writes a 256-byte output block into this partition's
        // memory: keep it in the scratch pages (or outside the partition, where it is
        // refused), never over this payload's code or stack.
        if input & 0xffff == 0x8003 && output < (16 << 20) && !(own..own + 8192 - 256).contains(&output) {
            output = own + 4096;
        }
        if input & (1 << 16) != 0 && rng.below(2) == 0 {
            parameter = rng.below(4) | (rng.below(4) << 32) | (if rng.below(8) == 0 { rng.next() << 48 } else { 0 });
        }
        if (own..own + 8192 - 16).contains(&parameter) {
            let block = parameter as *mut u32;
            let words = [
                rng.below(4) as u32,
                if rng.below(4) == 0 { rng.next() as u32 } else { 0 },
                rng.next() as u32 >> rng.below(32),
                rng.below(260) as u32,
            ];
            for (i, word) in words.iter().enumerate() {
                // SAFETY: within this payload's two pages (checked above).
                unsafe { block.add(i).write_unaligned(*word) };
            }
        }
        let result = HypercallResult::decode(hv.raw_hypercall(input, parameter, output));
        let status = result.status_code();
        let reserved = result.value() & 0xfff0_0000_ffff_0000 != 0;
        let unknown = status == HvStatus::InvalidHypercallCode.code();
        let wrong = match input & 0xffff {
            // The memory form of the console write exists (the fast form is refused as
            // HvCallPostMessage's is: INVALID_HYPERCALL_CODE).
            0x8001 | 0x8003 => input & (1 << 16) == 0 && unknown,
            // The watchdog check-in and the partition control exist in the fast form.
            0x8002 | 0x8004 => input & (1 << 16) != 0 && unknown,
            0x8000..=0x80ff => !unknown,
            _ => false,
        };
        if wrong {
            wrong_code_status += 1;
            if wrong_code_status <= 8 {
                println!("sweep: FAIL: hypercall #{} input {:#x}: status {:#x}", n, input, status);
            }
        }
        match HvStatus::from_code(status) {
            Some(_) if !reserved => by_status[usize::from(status)] += 1,
            _ => {
                undefined += 1;
                if undefined <= 8 {
                    println!(
                        "sweep: FAIL: hypercall #{} input {:#x} gpa {:#x} output {:#x}: result {:#x} is not a defined status",
                        n,
                        input,
                        parameter,
                        output,
                        result.value()
                    );
                }
            }
        }
    }
    // The console writes among them may have left part of a line: end it, so the
    // summary lines start lines of their own.
    println!();
    println!("sweep: hypercalls: {} with seed={}", count, seed);
    for (status, &n) in by_status.iter().enumerate() {
        if n != 0 {
            println!("sweep: hypercalls: status {:#06x}: {}", status, n);
        }
    }
    println!("sweep: hypercalls: undefined {}", undefined);
    println!("sweep: hypercalls: wrong status for the code {}", wrong_code_status);
    range_ok && undefined == 0 && wrong_code_status == 0
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    install_idt();
    let range = arg(args, "range").unwrap_or("msr-low");
    let seed = arg(args, "seed").and_then(parse_u64).unwrap_or(0x5eed_b01d);
    println!("sweep: range {} seed={}", range, seed);
    let clean = match range {
        "msr-low" => {
            x2apic_mode();
            known_cases();
            sweep_msrs(0, 0x2000)
        }
        "msr-high" => sweep_msrs(0xc000_0000, 0x2000),
        "msr-hyperv" => sweep_msrs(0x4000_0000, 0x200),
        "ports" => {
            let (first, last) = arg(args, "ports")
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, b)| Some((parse_u64(a)? as u16, parse_u64(b)? as u16)))
                .unwrap_or((0, 0xffff));
            sweep_ports(first, last)
        }
        "instructions" => {
            x2apic_mode();
            sweep_instructions(arg(args, "cr4") != Some("supported"))
        }
        "hypercalls" => sweep_hypercalls(seed, arg(args, "count").and_then(parse_u64).unwrap_or(100_000)),
        other => {
            println!("sweep: FAIL: unknown range {}", other);
            false
        }
    };
    println!(
        "sweep: done{} (interrupts {}, NMIs {})",
        if clean { "" } else { ", FAIL: unexpected exceptions" },
        INTERRUPTS.load(Ordering::SeqCst),
        NMIS.load(Ordering::SeqCst)
    );
    bulkhead_guests::idle()
}
