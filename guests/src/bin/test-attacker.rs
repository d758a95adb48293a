//! Test payload "attacker": tries one thing it must not be able to do, chosen by its
//! command line (`attack=NAME target=ADDRESS`), and prints the answer it got. Attacks that
//! fault end this partition (the hypervisor applies its fault policy); the others print
//! what they saw and idle. The run's verdict comes from the witness partition.
#![no_std]
#![no_main]

use bulkhead_guests::{arg, cmdline, gp, idle, inb, lapic, outb, parse_u64, println};
use core::ptr::{read_volatile, write_volatile};

const IA32_FEATURE_CONTROL: u32 = 0x3a;
const IA32_VMX_BASIC: u32 = 0x480;
const IA32_APIC_BASE: u32 = 0x1b;
const X2APIC_ICR: u32 = 0x830;
const EFER: u32 = 0xc000_0080;
/// The multiboot2 magic at the start of the hypervisor image (host 2 MiB).
const HYPERVISOR_MAGIC: u32 = 0xe852_50d6;

fn answer<T>(result: Result<T, gp::GeneralProtection>) -> &'static str {
    match result {
        Ok(_) => "allowed",
        Err(gp::GeneralProtection) => "#GP",
    }
}

fn executed(instruction: gp::VirtualizationInstruction) -> &'static str {
    match gp::execute(instruction) {
        Ok(()) => "EXECUTED",
        Err(gp::InvalidOpcode) => "#UD",
    }
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    let attack = arg(args, "attack").unwrap_or("none");
    let target = arg(args, "target").and_then(parse_u64).unwrap_or(0);
    gp::install();
    println!("attacker: attack {} target {:#x}", attack, target);
    match attack {
        "read-memory" => {
            // SAFETY: deliberately reads memory outside this partition.
            let value = unsafe { read_volatile(target as *const u64) };
            println!("attacker: read {:#x} returned {:#x}: NOT BLOCKED", target, value);
        }
        "write-memory" => {
            // SAFETY: deliberately writes memory outside this partition.
            unsafe { write_volatile(target as *mut u64, 0xbad0_bad0_bad0_bad0) };
            println!("attacker: write to {:#x}: NOT BLOCKED", target);
        }
        "hypervisor-memory" => {
            // The hypervisor's physical address names this partition's own memory here.
            // SAFETY: within this partition's memory.
            let seen = unsafe { read_volatile(target as *const u32) };
            // SAFETY: as above; overwrites only this partition's own page.
            unsafe { write_volatile(target as *mut u32, 0xdead_beef) };
            println!(
                "attacker: at {:#x} read {:#x} ({}), wrote own memory",
                target,
                seen,
                if seen == HYPERVISOR_MAGIC { "HYPERVISOR VISIBLE" } else { "hypervisor image not visible" }
            );
        }
        "port" => {
            let port = target as u16;
            let value = inb(port);
            outb(port, 0x55);
            println!("attacker: port {:#x} read {:#x}, write done", port, value);
        }
        "msr" => {
            println!(
                "attacker: feature-control read {:x?}, write {}; vmx-basic read {}; apic-base relocation {}",
                gp::rdmsr(IA32_FEATURE_CONTROL),
                answer(gp::wrmsr(IA32_FEATURE_CONTROL, 0x5)),
                answer(gp::rdmsr(IA32_VMX_BASIC)),
                answer(
                    gp::rdmsr(IA32_APIC_BASE).and_then(|base| gp::wrmsr(IA32_APIC_BASE, (base & 0xfff) | 0xfe00_0000))
                ),
            );
        }
        "ipi" => {
            lapic::enter_x2apic_mode();
            let destination = target << 32;
            println!(
                "attacker: fixed IPI to apic {} {}; INIT to apic {} {}",
                target,
                answer(gp::wrmsr(X2APIC_ICR, destination | 0x40)),
                target,
                answer(gp::wrmsr(X2APIC_ICR, destination | 0x4500)),
            );
            // Also to its own core (apic 1): NMI and LINT0 in NMI mode are the hypervisor's;
            // a masked LINT0 is the partition's own business. The "all excluding self"
            // broadcasts (fixed, INIT) are taken but reach only the partition's own other
            // cores, here none: the witness would fault or stop if they leaked.
            println!(
                "attacker: NMI to own core {}; broadcast {}; broadcast INIT {}; LINT0 NMI mode {}; LINT0 masked {}",
                answer(gp::wrmsr(X2APIC_ICR, (1 << 32) | 0x4400)),
                answer(gp::wrmsr(X2APIC_ICR, (0b11 << 18) | 0x40)),
                answer(gp::wrmsr(X2APIC_ICR, (0b11 << 18) | 0x4500)),
                answer(gp::wrmsr(0x835, 0x400)),
                answer(gp::wrmsr(0x835, 1 << 16)),
            );
        }
        "xsetbv" => {
            println!(
                "attacker: xsetbv x87+SSE {}; AVX without SSE {}; unknown component {}",
                answer(gp::xsetbv(0b11)),
                answer(gp::xsetbv(0b101)),
                answer(gp::xsetbv(1 | (1 << 40))),
            );
        }
        "efer" => {
            // EFER as a CPU without SVM shows it: long mode on, no SVME; only the
            // architectural bits may change, and LME not while paging is on.
            const SCE: u64 = 1;
            const LME: u64 = 1 << 8;
            const SVME: u64 = 1 << 12;
            let efer = gp::rdmsr(EFER).unwrap_or(0);
            println!(
                "attacker: efer lme={} svme={}; set SVME {}; clear LME {}; reserved bit 20 {}",
                efer & LME != 0,
                efer & SVME != 0,
                answer(gp::wrmsr(EFER, efer | SVME)),
                answer(gp::wrmsr(EFER, efer & !LME)),
                answer(gp::wrmsr(EFER, efer | (1 << 20))),
            );
            let toggled = gp::wrmsr(EFER, efer ^ SCE).and_then(|()| gp::rdmsr(EFER));
            let restored = gp::wrmsr(EFER, efer).and_then(|()| gp::rdmsr(EFER));
            println!(
                "attacker: efer toggle SCE {}, reads back {}; restore {}",
                answer(toggled),
                toggled == Ok(efer ^ SCE),
                restored == Ok(efer),
            );
        }
        "virtualization" => {
            use gp::VirtualizationInstruction::*;
            println!(
                "attacker: vmrun {}; clgi {}; stgi {}; vmlaunch {}; vmxoff {}",
                executed(Vmrun),
                executed(Clgi),
                executed(Stgi),
                executed(Vmlaunch),
                executed(Vmxoff),
            );
        }
        "xapic" => {
            // The xAPIC page works (the vCPU starts in xAPIC mode), but its ICR reaches only
            // this partition's cores: a fixed IPI and an INIT to the target are dropped.
            let id = lapic::xapic_read(0x20) >> 24;
            lapic::xapic_write(0x310, (target as u32) << 24);
            lapic::xapic_write(0x300, 0x40);
            lapic::xapic_write(0x300, 0x4500);
            println!("attacker: xAPIC id {}; fixed IPI and INIT to apic {} through the xAPIC ICR written", id, target);
        }
        "triple-fault" => {
            // Memory outside the payload must come back zeroed after a restart.
            const MARKER_GPA: u64 = 0x30_0000;
            const MARKER: u64 = 0x1e57_ab1e_0000_0001;
            // SAFETY: this partition's own memory, outside the loaded payload.
            let found = unsafe { read_volatile(MARKER_GPA as *const u64) };
            println!("attacker: memory {}", if found == MARKER { "NOT zeroed since the last run" } else { "fresh" });
            // SAFETY: as above.
            unsafe { write_volatile(MARKER_GPA as *mut u64, MARKER) };
            println!("attacker: triple-faulting");
            let null_idt: [u16; 5] = [0; 5];
            // SAFETY: deliberately destroys this partition's CPU state.
            unsafe { core::arch::asm!("lidt [{}]", "int3", in(reg) &null_idt) };
        }
        "console" => {
            // Tries to forge a hypervisor line on the console: a line end, then the kernel's
            // success line; then terminal control (clear screen, bell, NUL, carriage return).
            println!("attacker: forging\r\n[cpu0 INFO ] run ended: success");
            println!("attacker: control \x1b[2J\x07\0\rover");
        }
        "verdict" => {
            // Tries to end the whole run with a failing verdict on the verdict port, which
            // only the system's `verdict_partition` may use.
            outb(bulkhead_guests::REPORT_PORT, 1);
            println!("attacker: failing verdict written");
        }
        other => println!("attacker: unknown attack {}", other),
    }
    idle()
}
