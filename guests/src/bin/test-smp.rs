//! Test payload "smp": a partition with two vCPUs. The first starts the second with
//! INIT/SIPI (`ap=APIC_ID`, default 1), waits until it counts, and reports PASS.
//!
//! `fault=ap`: the second vCPU triple-faults once it has counted a while, and the first
//! keeps computing in its guest without ever leaving it, so only the hypervisor's signal
//! can stop it (fault containment test).
#![no_std]
#![no_main]

use bulkhead_guests::{arg, cmdline, gp, parse_u64, println, report, smp};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static AP_COUNTER: AtomicU64 = AtomicU64::new(0);
static AP_FAULTS: AtomicBool = AtomicBool::new(false);
/// Set by the first vCPU once it is about to compute without exits: the second faults
/// only then, so the fault always finds the first one inside its guest.
static COMPUTING: AtomicBool = AtomicBool::new(false);

#[repr(C, align(16))]
struct Stack([u8; 16384]);
static mut AP_STACK: Stack = Stack([0; 16384]);

extern "C" fn ap_main() -> ! {
    // CPUID leaf 0xB EDX: this vCPU's x2APIC ID (SDM Vol. 2A, CPUID leaf 0BH).
    println!("smp: second vcpu running, cpuid x2apic id {}", bulkhead_guests::cpuid(0xb, 0).edx);
    loop {
        let n = AP_COUNTER.fetch_add(1, Ordering::SeqCst);
        if n >= 100_000 && AP_FAULTS.load(Ordering::SeqCst) && COMPUTING.load(Ordering::SeqCst) {
            println!("smp: second vcpu triple-faulting");
            let null_idt: [u16; 5] = [0; 5];
            // SAFETY: deliberately destroys this vCPU's state: the test's fault.
            unsafe { core::arch::asm!("lidt [{}]", "int3", in(reg) &null_idt) };
        }
    }
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    let ap = arg(args, "ap").and_then(parse_u64).unwrap_or(1) as u32;
    let fault = arg(args, "fault") == Some("ap");
    AP_FAULTS.store(fault, Ordering::SeqCst);
    gp::install();
    println!("smp: first vcpu starts apic {}", ap);
    let stack_top = (&raw const AP_STACK) as u64 + 16384;
    smp::start_ap(ap, ap_main, stack_top);
    let mut waited = 0u64;
    while AP_COUNTER.load(Ordering::SeqCst) < 1000 {
        waited += 1;
        if waited > 50_000_000 {
            println!("smp: second vcpu never counted");
            report(false);
        }
    }
    println!("smp: second vcpu counts ({} so far)", AP_COUNTER.load(Ordering::SeqCst));
    // CPUID as the partition sees it: the core-level count is the partition's, and
    // OSXSAVE follows this guest's CR4 (it never set CR4.OSXSAVE).
    let core_level = bulkhead_guests::cpuid(0xb, 1);
    println!(
        "smp: cpuid: level type {} counts {}, x2apic id {}, osxsave={}",
        (core_level.ecx >> 8) & 0xff,
        core_level.ebx & 0xffff,
        core_level.edx,
        bulkhead_guests::cpuid(1, 0).ecx & (1 << 27) != 0
    );
    // Once the guest sets CR4.OSXSAVE (XSETBV of x87 only does), leaf 1 says so: the
    // hypervisor answers leaf 1 from a per-core table, with OSXSAVE taken from the guest's
    // CR4 at each exit.
    let xsetbv = gp::xsetbv(1);
    println!(
        "smp: cpuid after CR4.OSXSAVE: xsetbv ok={}, osxsave={}",
        xsetbv.is_ok(),
        bulkhead_guests::cpuid(1, 0).ecx & (1 << 27) != 0
    );
    if fault {
        println!("smp: first vcpu computes until the partition is stopped");
        COMPUTING.store(true, Ordering::SeqCst);
        let mut x = 1u64;
        loop {
            x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    report(gp::count() == 0)
}
