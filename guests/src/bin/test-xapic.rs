//! Test payload "xapic": a two-vCPU partition that drives its local APIC the way an
//! unmodified operating system does after a hardware reset: in xAPIC mode, through the
//! register page at 0xFEE00000, then through the IA32_APIC_BASE state machine.
//!
//! The first vCPU: reads IA32_APIC_BASE (xAPIC mode, BSP) and its ID and version through
//! the page; checks that x2APIC MSRs get #GP in xAPIC mode; takes periodic APIC timer
//! ticks (EOI through the page, a `mov m32, imm32`); sends itself an IPI (self shorthand);
//! starts the second vCPU with INIT, INIT de-assert and start-up IPIs through the xAPIC ICR
//! with the "all excluding self" shorthand; resets the running second vCPU with another
//! INIT and starts it again (it switched to x2APIC mode in between, which INIT keeps);
//! then walks IA32_APIC_BASE through its legal and illegal transitions. Each result is
//! printed; any mismatch prints `xapic: FAIL ...`. At the end it prints `xapic: all checks
//! passed` (or `xapic: FAILED`) and idles: the witness partition gives the verdict.
#![no_std]
#![no_main]

use bulkhead_guests::lapic::{self, APIC_BASE, BSP, EN, EXTD, xapic_read, xapic_write};
use bulkhead_guests::smp::{TRAMPOLINE, delay, prepare_ap};
use bulkhead_guests::{gp, idle, println};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const TIMER_VECTOR: u8 = 0x40;
const SELF_IPI_VECTOR: u8 = 0x41;
const SPURIOUS_VECTOR: u8 = 0xff;
const BASE: u64 = 0xfee0_0000;

// xAPIC register offsets (SDM Vol. 3A Table "Local APIC Register Address Map").
const ID: u32 = 0x20;
const VERSION: u32 = 0x30;
const SVR: u32 = 0xf0;
const ICR_LOW: u32 = 0x300;
const ICR_HIGH: u32 = 0x310;
const LVT_TIMER: u32 = 0x320;
const TIMER_INITIAL: u32 = 0x380;
const TIMER_DIVIDE: u32 = 0x3e0;

const ALL_EXCLUDING_SELF: u32 = 0b11 << 18;
const SELF: u32 = 0b01 << 18;

#[unsafe(no_mangle)]
static XAPIC_TIMER_TICKS: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static XAPIC_SELF_IPIS: AtomicU64 = AtomicU64::new(0);

static AP_STARTS: AtomicU64 = AtomicU64::new(0);
static AP_COUNTER: AtomicU64 = AtomicU64::new(0);
static AP_BASE: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static AP_X2APIC_ID: AtomicU64 = AtomicU64::new(u64::MAX);
static OK: AtomicBool = AtomicBool::new(true);

core::arch::global_asm!(
    r#"
    .section .text
    .global xapic_timer_handler
xapic_timer_handler:
    lock inc qword ptr [rip + XAPIC_TIMER_TICKS]
    jmp xapic_eoi
    .global xapic_self_ipi_handler
xapic_self_ipi_handler:
    lock inc qword ptr [rip + XAPIC_SELF_IPIS]
xapic_eoi:
    // EOI through the xAPIC page: mov dword ptr [rax], 0 (C7 /0 id).
    push rax
    mov eax, 0xfee000b0
    mov dword ptr [rax], 0
    pop rax
    iretq
    .global xapic_spurious_handler
xapic_spurious_handler:
    iretq
    "#
);

unsafe extern "C" {
    fn xapic_timer_handler();
    fn xapic_self_ipi_handler();
    fn xapic_spurious_handler();
}

fn check(what: &str, good: bool) {
    if !good {
        println!("xapic: FAIL {}", what);
        OK.store(false, Ordering::SeqCst);
    }
}

/// Waits (bounded) until `done`; false if it never happened.
fn wait(done: impl Fn() -> bool) -> bool {
    for _ in 0..200_000_000u64 {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    done()
}

fn answer<T>(result: Result<T, gp::GeneralProtection>) -> &'static str {
    if result.is_ok() { "ok" } else { "#GP" }
}

#[repr(C, align(16))]
struct Stack([u8; 16384]);
static mut AP_STACK: Stack = Stack([0; 16384]);

extern "C" fn ap_main() -> ! {
    gp::install();
    let run = AP_STARTS.load(Ordering::SeqCst) as usize;
    AP_BASE[run.min(1)].store(lapic::apic_base(), Ordering::SeqCst);
    if run == 0 {
        // The first start: to x2APIC mode, which the INIT that follows must keep.
        lapic::enter_x2apic_mode();
        AP_X2APIC_ID.store(gp::rdmsr(0x802).unwrap_or(u64::MAX), Ordering::SeqCst);
    }
    AP_STARTS.fetch_add(1, Ordering::SeqCst);
    loop {
        AP_COUNTER.fetch_add(1, Ordering::SeqCst);
    }
}

/// INIT, INIT de-assert and two start-up IPIs to every other core of the partition through
/// the xAPIC ICR, as an MP operating system starts its APs (SDM 9.4.4.1).
fn start_others() {
    xapic_write(ICR_HIGH, 0);
    xapic_write(ICR_LOW, ALL_EXCLUDING_SELF | 0x4500); // INIT, level assert
    xapic_write(ICR_LOW, ALL_EXCLUDING_SELF | 0x8500); // INIT, level de-assert
    delay(10_000);
    let startup = ALL_EXCLUDING_SELF | 0x4600 | (TRAMPOLINE >> 12) as u32;
    xapic_write(ICR_LOW, startup);
    delay(10_000);
    xapic_write(ICR_LOW, startup);
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(_args: *const u8) -> ! {
    gp::install();

    // After reset: xAPIC mode, BSP, the default base; x2APIC MSRs are #GP.
    let base = gp::rdmsr(APIC_BASE).unwrap_or(0);
    let id = xapic_read(ID) >> 24;
    let version = xapic_read(VERSION);
    println!(
        "xapic: apic_base {:#x}; id {}; x2APIC ID MSR {}; version {:#x}",
        base,
        id,
        answer(gp::rdmsr(0x802)),
        version & 0xff
    );
    check("apic_base after reset", base == BASE | EN | BSP);
    check("version", (0x10..=0x15).contains(&(version & 0xff)));
    check("x2APIC MSR in xAPIC mode", gp::rdmsr(0x802).is_err());

    // Timer ticks and a self IPI through the page.
    gp::set_gate(TIMER_VECTOR, xapic_timer_handler as *const () as u64);
    gp::set_gate(SELF_IPI_VECTOR, xapic_self_ipi_handler as *const () as u64);
    gp::set_gate(SPURIOUS_VECTOR, xapic_spurious_handler as *const () as u64);
    xapic_write(SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    xapic_write(TIMER_DIVIDE, 0b1011); // divide by 1
    xapic_write(LVT_TIMER, (1 << 17) | u32::from(TIMER_VECTOR)); // periodic
    xapic_write(TIMER_INITIAL, 50_000);
    // SAFETY: the IDT handles the timer, self-IPI and spurious vectors.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    let ticked = wait(|| XAPIC_TIMER_TICKS.load(Ordering::SeqCst) >= 3);
    xapic_write(LVT_TIMER, 1 << 16);
    xapic_write(TIMER_INITIAL, 0);
    check("timer ticks", ticked);
    xapic_write(ICR_HIGH, 0);
    xapic_write(ICR_LOW, SELF | u32::from(SELF_IPI_VECTOR));
    let self_ipi = wait(|| XAPIC_SELF_IPIS.load(Ordering::SeqCst) == 1);
    check("self IPI", self_ipi);
    let icr = xapic_read(ICR_LOW);
    println!(
        "xapic: timer ticks {}; self IPI {}; ICR reads {:#x}",
        if ticked { "taken" } else { "MISSING" },
        if self_ipi { "taken" } else { "MISSING" },
        icr
    );
    check("ICR read-back", icr == SELF | u32::from(SELF_IPI_VECTOR));

    // The second vCPU: started, then reset by INIT while it runs and started again.
    let stack_top = (&raw const AP_STACK) as u64 + 16384;
    prepare_ap(ap_main, stack_top);
    start_others();
    let started = wait(|| AP_STARTS.load(Ordering::SeqCst) == 1 && AP_COUNTER.load(Ordering::SeqCst) > 1000);
    check("second vcpu started", started);
    println!(
        "xapic: second vcpu start 1: apic_base {:#x}, x2APIC id {}",
        AP_BASE[0].load(Ordering::SeqCst),
        AP_X2APIC_ID.load(Ordering::SeqCst)
    );
    check("second vcpu apic_base", AP_BASE[0].load(Ordering::SeqCst) == BASE | EN);
    start_others();
    let restarted = wait(|| AP_STARTS.load(Ordering::SeqCst) == 2);
    check("second vcpu reset by INIT and started again", restarted);
    println!(
        "xapic: second vcpu start 2 after INIT: apic_base {:#x}{}",
        AP_BASE[1].load(Ordering::SeqCst),
        if restarted { "" } else { " (NOT RESTARTED)" }
    );
    check("x2APIC mode kept across INIT", AP_BASE[1].load(Ordering::SeqCst) == BASE | EN | EXTD);

    // IA32_APIC_BASE transitions (SDM 11.12.5). An unmasked LVT before disabling must come
    // back masked.
    xapic_write(LVT_TIMER, u32::from(TIMER_VECTOR));
    let to_disabled = answer(gp::wrmsr(APIC_BASE, BASE | BSP));
    let disabled = gp::rdmsr(APIC_BASE).unwrap_or(0);
    let disabled_page = xapic_read(ID);
    let disabled_msr = answer(gp::rdmsr(0x802));
    let disabled_to_x2apic = answer(gp::wrmsr(APIC_BASE, BASE | BSP | EN | EXTD));
    let to_xapic = answer(gp::wrmsr(APIC_BASE, BASE | BSP | EN));
    let lvt = xapic_read(LVT_TIMER);
    let svr = xapic_read(SVR);
    println!(
        "xapic: to disabled {}: {:#x}, page {:#x}, x2APIC MSR {}; disabled->x2APIC {}",
        to_disabled, disabled, disabled_page, disabled_msr, disabled_to_x2apic
    );
    println!("xapic: to xAPIC {}: lvt timer {:#x}, svr {:#x}", to_xapic, lvt, svr);
    check("xAPIC -> disabled", to_disabled == "ok" && disabled == BASE | BSP);
    check("disabled page and MSR", disabled_page == u32::MAX && disabled_msr == "#GP");
    check("disabled -> x2APIC", disabled_to_x2apic == "#GP");
    check("disabled -> xAPIC resets the APIC", to_xapic == "ok" && lvt & (1 << 16) != 0 && svr == 0xff);

    let to_x2apic = answer(gp::wrmsr(APIC_BASE, BASE | BSP | EN | EXTD));
    let x2apic = gp::rdmsr(APIC_BASE).unwrap_or(0);
    let x2apic_id = gp::rdmsr(0x802);
    let x2apic_page = xapic_read(ID);
    let to_xapic_again = answer(gp::wrmsr(APIC_BASE, BASE | EN));
    let reserved = answer(gp::wrmsr(APIC_BASE, BASE | EN | EXTD | (1 << 9)));
    let relocation = answer(gp::wrmsr(APIC_BASE, 0xfed0_0000 | EN | EXTD));
    let back_to_disabled = answer(gp::wrmsr(APIC_BASE, BASE));
    let invalid = answer(gp::wrmsr(APIC_BASE, BASE | EXTD));
    let xapic_again = answer(gp::wrmsr(APIC_BASE, BASE | EN));
    println!(
        "xapic: to x2APIC {}: {:#x}, id {:?}, page {:#x}; x2APIC->xAPIC {}",
        to_x2apic, x2apic, x2apic_id, x2apic_page, to_xapic_again
    );
    println!(
        "xapic: reserved bit {}; relocation {}; to disabled {}; EXTD without EN {}; to xAPIC {}",
        reserved, relocation, back_to_disabled, invalid, xapic_again
    );
    check("xAPIC -> x2APIC", to_x2apic == "ok" && x2apic == BASE | BSP | EN | EXTD);
    check("x2APIC registers", x2apic_id == Ok(u64::from(id)) && x2apic_page == u32::MAX);
    check("x2APIC -> xAPIC", to_xapic_again == "#GP");
    check("reserved bit and relocation", reserved == "#GP" && relocation == "#GP");
    check("x2APIC -> disabled -> xAPIC", back_to_disabled == "ok" && xapic_again == "ok");
    check("EXTD without EN", invalid == "#GP");

    if OK.load(Ordering::SeqCst) {
        println!("xapic: all checks passed");
    } else {
        println!("xapic: FAILED");
    }
    idle()
}
