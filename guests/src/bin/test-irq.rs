//! Test payload "irq": a partition that owns COM2 (the second 16550, GSI 3) and takes its
//! interrupts through the IOAPIC, programmed through the virtual IOAPIC page at 0xFEC00000
//! (docs/devices.md, "Interrupts"). In x2APIC mode; EOI through the x2APIC EOI MSR.
//!
//! The UART runs in loopback with OUT2 and the receive interrupt enabled: each byte
//! written to its transmit register arrives in its receive buffer at once and raises the
//! line until the handler reads the byte (16550 datasheet, MCR bit 4). So one byte is one
//! interrupt, deterministically, on every emulator.
//!
//! `role=irq` (default): reads the IOAPIC's ID and version; checks that a pin it does not
//! own (GSI 4) reads masked and ignores a write; that NMI, SMI, INIT and ExtINT entries and
//! a vector below 0x20 leave its pin masked; that a destination of another partition's core
//! (`foreign=APIC_ID`, default 0), a logical destination and lowest-priority delivery come
//! back as fixed, physical, to its own core. Then `count=N` bytes (default 200) edge-
//! triggered and N level-triggered, each of which must give exactly one interrupt; in the
//! level phase it reads Remote IRR inside the handler (before EOI) and after it; with
//! `redeliver=1` (an IOAPIC that models Remote IRR, QEMU) a handler that EOIs without
//! reading the byte must be interrupted again (the line is still asserted); a byte sent
//! while the pin is masked must arrive once it is unmasked. Every other vector counts as a
//! stray interrupt, which fails the test. It prints what it saw, the number of its own
//! accesses to the IOAPIC page (each one exit), and reports its verdict.
//!
//! `role=neighbour`: takes every vector 0x20-0xFE with interrupts enabled and prints a
//! FAIL line for any interrupt it receives; never ends.
//!
//! `case=bench` / `case=bench-setup` (`cargo xtask bench`, device-interrupt-exits): the
//! same set-up, then `count` (default 1000) edge-triggered interrupts, or none; the bench
//! takes the difference of the two runs' exit counts.
#![no_std]
#![no_main]

use bulkhead_guests::{arg, cmdline, gp, inb, outb, parse_u64, println, report};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const IOAPIC: u64 = 0xfec0_0000;
const COM2: u16 = 0x2f8;
const RBR: u16 = COM2;
const IER: u16 = COM2 + 1;
const FCR: u16 = COM2 + 2;
const IIR: u16 = COM2 + 2;
const LCR: u16 = COM2 + 3;
const MCR: u16 = COM2 + 4;
const LSR: u16 = COM2 + 5;

const PIN: u8 = 3;
const FOREIGN_PIN: u8 = 4;
const EDGE_VECTOR: u8 = 0x50;
const LEVEL_VECTOR: u8 = 0x51;

const MASK: u64 = 1 << 16;
const LEVEL: u64 = 1 << 15;
const REMOTE_IRR: u64 = 1 << 14;
const LOGICAL: u64 = 1 << 11;

static IRQS: AtomicU64 = AtomicU64::new(0);
static MMIO: AtomicU64 = AtomicU64::new(0);
/// The next interrupt leaves the byte unread (the line stays asserted).
static LAZY: AtomicBool = AtomicBool::new(false);
/// The next interrupt samples its entry (Remote IRR) before EOI.
static SAMPLE: AtomicBool = AtomicBool::new(false);
static SAMPLED: AtomicU64 = AtomicU64::new(u64::MAX);
static OK: AtomicBool = AtomicBool::new(true);

core::arch::global_asm!(
    r#"
    .section .text
    .global irq_entry
irq_entry:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    call irq_interrupt
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    iretq
    .global stray_entry
stray_entry:
    lock inc qword ptr [rip + IRQ_STRAY]
    jmp guest_eoi_and_return
    "#
);

#[unsafe(no_mangle)]
static IRQ_STRAY: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" {
    fn irq_entry();
    fn stray_entry();
}

fn eoi() {
    // SAFETY: the x2APIC EOI register (the partition's own local APIC).
    unsafe { core::arch::asm!("wrmsr", in("ecx") 0x80bu32, in("eax") 0u32, in("edx") 0u32, options(nostack)) };
}

#[unsafe(no_mangle)]
extern "C" fn irq_interrupt() {
    IRQS.fetch_add(1, Ordering::SeqCst);
    if SAMPLE.swap(false, Ordering::SeqCst) {
        SAMPLED.store(entry(PIN), Ordering::SeqCst);
    }
    if !LAZY.swap(false, Ordering::SeqCst) {
        inb(RBR);
    }
    eoi();
}

fn ioapic_write_raw(offset: u64, value: u32) {
    MMIO.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the virtual IOAPIC page (identity-mapped by the boot page tables); each
    // access exits to the hypervisor. A plain MOV (see `ioapic_read_raw`).
    unsafe {
        core::arch::asm!("mov dword ptr [{a}], {v:e}", a = in(reg) IOAPIC + offset, v = in(reg) value, options(nostack))
    };
}

fn ioapic_read_raw(offset: u64) -> u32 {
    MMIO.fetch_add(1, Ordering::SeqCst);
    let value: u32;
    // SAFETY: as in `ioapic_write_raw`. A plain MOV, as a driver's register read is: the
    // compiler may fold a volatile load into another instruction, which the hypervisor's
    // MMIO emulation does not perform.
    unsafe {
        core::arch::asm!("mov {v:e}, dword ptr [{a}]", a = in(reg) IOAPIC + offset, v = out(reg) value, options(nostack, readonly))
    };
    value
}

fn read(register: u8) -> u32 {
    ioapic_write_raw(0, u32::from(register));
    ioapic_read_raw(0x10)
}

fn write(register: u8, value: u32) {
    ioapic_write_raw(0, u32::from(register));
    ioapic_write_raw(0x10, value);
}

fn entry(pin: u8) -> u64 {
    let low = read(0x10 + 2 * pin);
    let high = read(0x11 + 2 * pin);
    u64::from(high) << 32 | u64::from(low)
}

/// Writes an entry as an operating system does: destination first, then the low dword.
fn set_entry(pin: u8, value: u64) {
    write(0x11 + 2 * pin, (value >> 32) as u32);
    write(0x10 + 2 * pin, value as u32);
}

fn fixed(vector: u8, destination: u32) -> u64 {
    u64::from(vector) | u64::from(destination) << 56
}

fn check(what: &str, good: bool) {
    if !good {
        println!("irq: FAIL {}", what);
        OK.store(false, Ordering::SeqCst);
    }
}

/// Waits (bounded) until `done`.
fn wait(done: impl Fn() -> bool) -> bool {
    for _ in 0..2_000_000u64 {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    done()
}

fn delay(spins: u64) {
    for _ in 0..spins {
        core::hint::spin_loop();
    }
}

/// COM2 in loopback with OUT2, 8N1, FIFOs off, the receive interrupt enabled; drained.
fn uart_loopback() {
    outb(LCR, 0x03);
    outb(FCR, 0x00);
    outb(MCR, 0x18);
    outb(IER, 0x01);
    while inb(LSR) & 1 != 0 {
        inb(RBR);
    }
    inb(IIR);
}

/// Sends `n` bytes, each after the previous one's interrupt; the interrupts taken.
fn send(n: u64) -> u64 {
    let start = IRQS.load(Ordering::SeqCst);
    for i in 0..n {
        outb(COM2, i as u8);
        if !wait(|| IRQS.load(Ordering::SeqCst) > start + i) {
            break;
        }
    }
    // No late or repeated interrupt: the count stays.
    delay(20_000);
    IRQS.load(Ordering::SeqCst) - start
}

fn apic_id() -> u32 {
    gp::rdmsr(0x802).unwrap_or(u64::MAX) as u32
}

fn setup_idt(own: bool) {
    gp::install();
    for vector in 0x20..=0xfeu8 {
        gp::set_gate(vector, stray_entry as *const () as u64);
    }
    if own {
        gp::set_gate(EDGE_VECTOR, irq_entry as *const () as u64);
        gp::set_gate(LEVEL_VECTOR, irq_entry as *const () as u64);
    }
    gp::enable_local_apic();
}

fn neighbour() -> ! {
    setup_idt(false);
    // SAFETY: every device vector has a handler.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    println!("neighbour: listening on every vector 0x20-0xfe");
    let mut seen = 0;
    loop {
        let now = IRQ_STRAY.load(Ordering::SeqCst);
        if now != seen {
            println!("neighbour: FAIL {} interrupt(s) received", now);
            seen = now;
        }
        core::hint::spin_loop();
    }
}

fn bench(count: u64) -> ! {
    setup_idt(true);
    let me = apic_id();
    uart_loopback();
    set_entry(PIN, fixed(EDGE_VECTOR, me));
    // SAFETY: the IDT handles every vector.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    let taken = send(count);
    set_entry(PIN, fixed(EDGE_VECTOR, me) | MASK);
    println!("bench: device_interrupts={}", taken);
    println!("bench: device_interrupt_ioapic_accesses={}", MMIO.load(Ordering::SeqCst));
    report(taken == count && IRQ_STRAY.load(Ordering::SeqCst) == 0)
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    let count = arg(args, "count").and_then(parse_u64);
    match arg(args, "case") {
        Some("bench") => bench(count.unwrap_or(1000)),
        Some("bench-setup") => bench(0),
        _ => {}
    }
    if arg(args, "role") == Some("neighbour") {
        neighbour();
    }
    let count = count.unwrap_or(200);
    let foreign = arg(args, "foreign").and_then(parse_u64).unwrap_or(0) as u32;
    let redeliver = arg(args, "redeliver") == Some("1");
    setup_idt(true);
    let me = apic_id();
    // Let the neighbour get ready.
    delay(200_000);

    // The IOAPIC as the hardware has it.
    let id = read(0x00);
    let version = read(0x01);
    println!(
        "irq: ioapic id {} version {:#x} entries {}; my apic id {}",
        id >> 24,
        version & 0xff,
        ((version >> 16) & 0xff) + 1,
        me
    );

    // A pin it does not own.
    let before = entry(FOREIGN_PIN);
    set_entry(FOREIGN_PIN, fixed(EDGE_VECTOR, me));
    let after = entry(FOREIGN_PIN);
    println!("irq: foreign pin {} reads {:#x}, after a write {:#x}", FOREIGN_PIN, before, after);
    check("foreign pin masked", before == MASK && after == MASK);

    // Refusals on its own pin: the pin stays masked, fixed.
    let mut refused = true;
    for (mode, name) in [(2u64, "SMI"), (4, "NMI"), (5, "INIT"), (7, "ExtINT")] {
        set_entry(PIN, fixed(EDGE_VECTOR, me) | mode << 8);
        let e = entry(PIN);
        if e & MASK == 0 || e & (0b111 << 8) != 0 {
            println!("irq: FAIL {} entry reads {:#x}", name, e);
            refused = false;
        }
    }
    set_entry(PIN, fixed(0x10, me));
    let low_vector = entry(PIN);
    println!("irq: SMI, NMI, INIT, ExtINT refused: {}; vector 0x10 refused: {}", refused, low_vector & MASK != 0);
    check("delivery modes refused", refused);
    check("vector 0x10 refused", low_vector & MASK != 0);

    // Retargets.
    set_entry(PIN, fixed(EDGE_VECTOR, foreign) | MASK);
    let retargeted = (entry(PIN) >> 56) as u32;
    set_entry(PIN, fixed(EDGE_VECTOR, 0x01) | LOGICAL | MASK);
    let logical = entry(PIN);
    set_entry(PIN, fixed(EDGE_VECTOR, me) | 1 << 8 | MASK);
    let lowest = entry(PIN);
    println!(
        "irq: destination {} -> {}; logical 0x1 -> {} ({}); lowest priority -> {}",
        foreign,
        retargeted,
        logical >> 56,
        if logical & LOGICAL == 0 { "physical" } else { "logical" },
        if lowest & (0b111 << 8) == 0 { "fixed" } else { "lowest priority" }
    );
    check("retargeted", retargeted == me);
    check("logical", logical & LOGICAL == 0 && (logical >> 56) as u32 == me);
    check("lowest priority", lowest & (0b111 << 8) == 0);

    // Edge-triggered.
    uart_loopback();
    set_entry(PIN, fixed(EDGE_VECTOR, foreign));
    // SAFETY: the IDT handles every vector.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    let edge = send(count);
    println!("irq: edge: {} interrupts for {} bytes", edge, count);
    check("edge count", edge == count);

    // Level-triggered.
    set_entry(PIN, fixed(LEVEL_VECTOR, me) | LEVEL);
    SAMPLE.store(true, Ordering::SeqCst);
    let level = send(count);
    let in_handler = SAMPLED.load(Ordering::SeqCst);
    let after_eoi = entry(PIN);
    println!(
        "irq: level: {} interrupts for {} bytes; remote IRR in the handler {}, after EOI {}",
        level,
        count,
        u8::from(in_handler & REMOTE_IRR != 0),
        u8::from(after_eoi & REMOTE_IRR != 0)
    );
    check("level count", level == count);
    check("remote IRR clear after EOI", after_eoi & REMOTE_IRR == 0);
    if redeliver {
        check("remote IRR set before EOI", in_handler & REMOTE_IRR != 0);
        LAZY.store(true, Ordering::SeqCst);
        let again = send(1);
        println!("irq: level: EOI with the line still asserted: {} interrupts for 1 byte", again);
        check("redelivered while asserted", again == 2);
    }
    // Masked while asserted: delivered on unmask, once.
    set_entry(PIN, fixed(LEVEL_VECTOR, me) | LEVEL | MASK);
    let start = IRQS.load(Ordering::SeqCst);
    outb(COM2, 0x55);
    delay(20_000);
    let while_masked = IRQS.load(Ordering::SeqCst) - start;
    set_entry(PIN, fixed(LEVEL_VECTOR, me) | LEVEL);
    wait(|| IRQS.load(Ordering::SeqCst) > start);
    delay(20_000);
    let on_unmask = IRQS.load(Ordering::SeqCst) - start;
    println!("irq: level: masked {} interrupts, after unmasking {}", while_masked, on_unmask);
    check("masked then unmasked", while_masked == 0 && on_unmask == 1);

    set_entry(PIN, fixed(LEVEL_VECTOR, me) | MASK);
    outb(IER, 0);
    let stray = IRQ_STRAY.load(Ordering::SeqCst);
    println!(
        "irq: interrupts {}, stray {}, ioapic accesses {}",
        IRQS.load(Ordering::SeqCst),
        stray,
        MMIO.load(Ordering::SeqCst)
    );
    check("no stray interrupts", stray == 0);
    let pass = OK.load(Ordering::SeqCst);
    println!("irq: {}", if pass { "all checks passed" } else { "FAILED" });
    report(pass)
}
