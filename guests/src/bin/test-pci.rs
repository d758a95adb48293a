//! Test payload "pci": what a partition sees of PCI configuration space
//! (tests/tests/hil/pci.rs, docs/devices.md "PCI configuration space").
//!
//! `role=other`: scans bus 0 through ports 0xCF8/0xCFC and prints how many functions
//! answered (a partition without PCI functions must see none), then idles (with
//! `verdict=1`: reports PASS if it saw none).
//!
//! `role=owner` (owns QEMU's edu device): scans bus 0 through the ports and through the
//! ECAM window (0xB0000000, also with 8- and 16-bit loads) and prints every function found;
//! enables memory decoding and bus mastering; reads edu's ID register through BAR0; sizes
//! BAR0 (all-ones write); tries to move BAR0 and the expansion ROM; walks the capability
//! list; programs MSI with its own APIC ID and a vector and makes edu raise an interrupt
//! (register 0x60, acknowledged at 0x64), then aims the message at `other_apic` and raises
//! again. Each step prints one line the test compares; at the end it waits a little (for
//! `other` to finish) and reports the verdict: PASS when every step saw what it should.
#![no_std]
#![no_main]

use bulkhead_guests::{arg, cmdline, gp, parse_u64, println, report};
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const ECAM: u64 = 0xb000_0000;
const EDU: (u8, u8) = (4, 0);
const EDU_ID: u32 = 0x1234 | (0x11e8 << 16);
const MSI_VECTOR: u8 = 0x50;
const RETARGET_VECTOR: u8 = 0x51;

#[unsafe(no_mangle)]
static PCI_MSI_OWN: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static PCI_MSI_RETARGETED: AtomicU64 = AtomicU64::new(0);
static OK: AtomicBool = AtomicBool::new(true);

core::arch::global_asm!(
    r#"
    .section .text
    .global pci_msi_own_handler
pci_msi_own_handler:
    lock inc qword ptr [rip + PCI_MSI_OWN]
    jmp guest_eoi_and_return
    .global pci_msi_retargeted_handler
pci_msi_retargeted_handler:
    lock inc qword ptr [rip + PCI_MSI_RETARGETED]
    jmp guest_eoi_and_return
    "#
);

unsafe extern "C" {
    fn pci_msi_own_handler();
    fn pci_msi_retargeted_handler();
}

fn check(what: &str, good: bool) {
    if !good {
        println!("pci: FAIL {}", what);
        OK.store(false, Ordering::SeqCst);
    }
}

fn outl(port: u16, value: u32) {
    // SAFETY: port output; the hypervisor decides what it does.
    unsafe { core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack)) };
}

fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as in `outl`.
    unsafe { core::arch::asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, nostack)) };
    value
}

fn outw(port: u16, value: u16) {
    // SAFETY: as in `outl`.
    unsafe { core::arch::asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack)) };
}

fn address(device: u8, function: u8, offset: u8) -> u32 {
    (1 << 31) | u32::from(device) << 11 | u32::from(function) << 8 | u32::from(offset & 0xfc)
}

/// Configuration mechanism #1 on bus 0.
fn config_read(device: u8, function: u8, offset: u8) -> u32 {
    outl(0xcf8, address(device, function, offset));
    inl(0xcfc)
}

fn config_write(device: u8, function: u8, offset: u8, value: u32) {
    outl(0xcf8, address(device, function, offset));
    outl(0xcfc, value);
}

fn ecam(device: u8, function: u8, offset: u16) -> u64 {
    ECAM | u64::from(device) << 15 | u64::from(function) << 12 | u64::from(offset)
}

fn ecam_read(device: u8, function: u8, offset: u16) -> u32 {
    // SAFETY: the ECAM window, which the hypervisor emulates for this partition.
    unsafe { read_volatile(ecam(device, function, offset) as *const u32) }
}

/// Prints the functions on bus 0 that answer through `read` (vendor ID not 0xFFFF).
fn scan(how: &str, read: impl Fn(u8, u8) -> u32) -> (u32, u32) {
    let (mut count, mut edu_id) = (0, 0);
    for device in 0..32 {
        for function in 0..8 {
            let id = read(device, function);
            if id & 0xffff != 0xffff {
                println!("pci: {} scan: 00:{:02x}.{} id {:#010x}", how, device, function, id);
                count += 1;
                if (device, function) == EDU {
                    edu_id = id;
                }
            }
        }
    }
    println!("pci: {} scan: {} function(s)", how, count);
    (count, edu_id)
}

fn wait(done: impl Fn() -> bool) -> bool {
    for _ in 0..100_000_000u64 {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    done()
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    if arg(args, "role") != Some("owner") {
        let (count, _) = scan("cf8", |d, f| config_read(d, f, 0));
        println!("pci: other sees {} function(s)", count);
        if arg(args, "verdict") == Some("1") {
            report(count == 0);
        }
        bulkhead_guests::idle();
    }
    let other_apic = arg(args, "other_apic").and_then(parse_u64).unwrap_or(0) as u8;

    let (count, id) = scan("cf8", |d, f| config_read(d, f, 0));
    check("cf8 scan: exactly edu", count == 1 && id == EDU_ID);
    let (count, id) = scan("ecam", |d, f| ecam_read(d, f, 0));
    check("ecam scan: exactly edu", count == 1 && id == EDU_ID);
    // 8- and 16-bit loads through ECAM (what Linux's mmio_config_readb/readw do).
    // SAFETY: the ECAM window, as above.
    let (vendor, header) = unsafe {
        (read_volatile(ecam(EDU.0, EDU.1, 0) as *const u16), read_volatile(ecam(EDU.0, EDU.1, 0x0e) as *const u8))
    };
    println!("pci: ecam narrow reads: vendor {:#06x}, header type {:#04x}", vendor, header);
    check("narrow ECAM reads", vendor == 0x1234 && header == 0);

    // Memory space + bus master, a 16-bit write to the command register.
    outl(0xcf8, address(EDU.0, EDU.1, 0x04));
    outw(0xcfc, 0x0006);
    let bar0 = config_read(EDU.0, EDU.1, 0x10);
    let base = u64::from(bar0 & !0xf);
    // SAFETY: edu's BAR0, mapped into this partition by the hypervisor.
    let edu_id = unsafe { read_volatile(base as *const u32) };
    println!("pci: BAR0 {:#x}, edu ID register {:#010x}", bar0, edu_id);
    check("edu ID through BAR0", edu_id == 0x0100_00ed);

    config_write(EDU.0, EDU.1, 0x10, 0xffff_ffff);
    let sized = config_read(EDU.0, EDU.1, 0x10);
    config_write(EDU.0, EDU.1, 0x10, bar0);
    let size = (!(sized & !0xf)).wrapping_add(1);
    println!("pci: BAR0 size {:#x}, restored {:#x}", size, config_read(EDU.0, EDU.1, 0x10));
    check("BAR0 sizing", size == 0x10_0000);

    config_write(EDU.0, EDU.1, 0x10, 0xe000_0000);
    let after = config_read(EDU.0, EDU.1, 0x10);
    println!("pci: BAR0 relocation to 0xe0000000: reads {:#x}", after);
    check("relocation refused", after == bar0);
    // SAFETY: as above; the device still answers at its base.
    check("edu still at its base", unsafe { read_volatile(base as *const u32) } == 0x0100_00ed);

    config_write(EDU.0, EDU.1, 0x30, 0xffff_f801);
    let rom = config_read(EDU.0, EDU.1, 0x30);
    println!("pci: ROM BAR reads {:#x}", rom);
    check("ROM BAR", rom == 0);

    let mut msi = None;
    let status = config_read(EDU.0, EDU.1, 0x04) >> 16;
    let mut list = [0u8; 16];
    let mut n = 0;
    if status & 0x10 != 0 {
        let mut next = config_read(EDU.0, EDU.1, 0x34) as u8 & 0xfc;
        while next != 0 && n < list.len() {
            let header = config_read(EDU.0, EDU.1, next);
            list[n] = header as u8;
            n += 1;
            if header as u8 == 0x05 {
                msi = Some(next);
            }
            next = (header >> 8) as u8 & 0xfc;
        }
    }
    println!("pci: capabilities {:x?} (status bit {})", &list[..n], (status >> 4) & 1);

    let Some(cap) = msi else {
        println!("pci: no MSI capability");
        finish(args)
    };
    gp::install();
    gp::set_gate(MSI_VECTOR, pci_msi_own_handler as *const () as u64);
    gp::set_gate(RETARGET_VECTOR, pci_msi_retargeted_handler as *const () as u64);
    gp::enable_local_apic();
    let own_apic = gp::rdmsr(0x802).unwrap_or(0) as u32;
    // SAFETY: the handlers above take the two vectors.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    let control = config_read(EDU.0, EDU.1, cap) >> 16;
    let data_offset = if control & (1 << 7) != 0 { cap + 0x0c } else { cap + 0x08 };
    let program = |apic: u32, vector: u8| {
        config_write(EDU.0, EDU.1, cap + 4, 0xfee0_0000 | apic << 12);
        if control & (1 << 7) != 0 {
            config_write(EDU.0, EDU.1, cap + 8, 0);
        }
        config_write(EDU.0, EDU.1, data_offset, u32::from(vector));
        // Enable, one message (MME 0).
        config_write(EDU.0, EDU.1, cap, (control | 1) << 16);
    };
    let raise = || {
        // SAFETY: edu's interrupt raise and acknowledge registers in its BAR0.
        unsafe { write_volatile((base + 0x60) as *mut u32, 1) };
    };
    let acknowledge = || {
        // SAFETY: as above.
        unsafe { write_volatile((base + 0x64) as *mut u32, 1) };
    };

    program(own_apic, MSI_VECTOR);
    let shadow = config_read(EDU.0, EDU.1, cap + 4);
    raise();
    let arrived = wait(|| PCI_MSI_OWN.load(Ordering::SeqCst) > 0);
    acknowledge();
    println!(
        "pci: MSI to own APIC ID {} vector {:#x}: {} (address reads {:#x})",
        own_apic,
        MSI_VECTOR,
        if arrived { "arrived" } else { "MISSING" },
        shadow
    );
    check("own MSI", arrived && shadow == 0xfee0_0000 | own_apic << 12);

    program(u32::from(other_apic), RETARGET_VECTOR);
    let shadow = config_read(EDU.0, EDU.1, cap + 4);
    raise();
    let arrived = wait(|| PCI_MSI_RETARGETED.load(Ordering::SeqCst) > 0);
    acknowledge();
    println!(
        "pci: MSI aimed at APIC ID {} vector {:#x}: {} here (address reads {:#x})",
        other_apic,
        RETARGET_VECTOR,
        if arrived { "arrived" } else { "MISSING" },
        shadow
    );
    check("retargeted MSI", arrived && shadow == 0xfee0_0000 | u32::from(other_apic) << 12);
    finish(args)
}

fn finish(args: &str) -> ! {
    // Give `other` time to print its scan before the verdict ends the run.
    let wait = arg(args, "wait").and_then(parse_u64).unwrap_or(500_000_000);
    for i in 0..wait {
        core::hint::black_box(i);
    }
    let ok = OK.load(Ordering::SeqCst);
    println!("pci: {}", if ok { "all checks passed" } else { "FAILED" });
    report(ok)
}
