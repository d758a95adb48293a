//! Test payload "bootinfo": what a 64-bit payload gets from the hypervisor at start, and
//! Bulkhead's console-write hypercall, chosen by its command line (`case=NAME`).
//!
//! `case=info` (with `life=ADDRESS`, a shared page that survives restarts): parses the
//! boot information at the address in RSI (`BootInfo::parse`) and prints what it says
//! (name, vCPUs and their APIC IDs, memory, connections) for the test to compare with the
//! system file (tests/configs/bochs-bootinfo.toml); it is right when RSI holds
//! `BOOT_INFO_GPA`, the block parses, VP 0's APIC ID is the one this CPU reports (CPUID
//! leaf 1), the running code and stack lie in the listed memory, and the named connection
//! `to-peer` is found. In its first life it then overwrites the block and triple-faults;
//! the restart (memory zeroed) must write it again, and the second life checks it anew
//! and reports. `case=console`: writes lines through the hypercall (one
//! line split over two calls, two lines in one call) between lines written to the
//! virtual UART, then the refusals (a length above the maximum, a reserved field not 0,
//! the fast form, an input block crossing its page, a code of Bulkhead's range that does
//! not exist). Without a case the partition idles.
#![no_std]
#![no_main]

use bulkhead_abi::boot_info::{BOOT_INFO_GPA, BOOT_INFO_MAX, BootInfo, ConnectionKind};
use bulkhead_abi::hyperv::HypercallInput;
use bulkhead_abi::hyperv::hypercall::{CONSOLE_WRITE_MAX, code};
use bulkhead_guests::hyperv::{GUEST_OS_ID, client, console_write_at, status};
use bulkhead_guests::{Console, arg, cmdline, cpuid, idle, parse_u64, println, report};
use core::fmt::Write;

fn info(address: u64, life: u64) -> bool {
    // SAFETY: a word of the shared page the system file maps at `life`, this partition's only.
    let lives = unsafe { &*(life as *const core::sync::atomic::AtomicU64) };
    let this = lives.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
    println!("bootinfo: life {}", this);
    let right = check(address);
    if this == 0 && right {
        // SAFETY: the boot information in the partition's own boot area, no longer read.
        unsafe { core::ptr::write_bytes(BOOT_INFO_GPA as *mut u8, 0xEE, BOOT_INFO_MAX) };
        println!("bootinfo: block overwritten, faulting to be restarted");
        triple_fault()
    }
    right
}

fn triple_fault() -> ! {
    let empty: [u16; 5] = [0; 5];
    // SAFETY: deliberately fatal; the partition's fault policy restarts it.
    unsafe { core::arch::asm!("lidt [{}]", "ud2", in(reg) &empty, options(noreturn)) }
}

fn check(address: u64) -> bool {
    println!("bootinfo: RSI {:#x}", address);
    // SAFETY: the boot area lies in the partition's own memory, identity-mapped; the
    // block is at most BOOT_INFO_MAX bytes (whatever RSI holds, 0 included, these bytes
    // are the partition's own RAM in the boot area).
    let bytes = unsafe { core::slice::from_raw_parts(BOOT_INFO_GPA as *const u8, BOOT_INFO_MAX) };
    let info = match BootInfo::parse(bytes) {
        Ok(info) => info,
        Err(e) => {
            println!("bootinfo: not parsed: {:?}", e);
            return false;
        }
    };
    let own_apic_id = cpuid(1, 0).ebx >> 24;
    let mut out = Console;
    let _ = write!(out, "bootinfo: name {}, {} vCPUs, APIC IDs [", info.name(), info.vcpu_count());
    for vp in 0..info.vcpu_count() {
        let _ = write!(out, "{}{}", if vp == 0 { "" } else { ", " }, info.apic_id(vp).unwrap_or(u32::MAX));
    }
    let _ = writeln!(out, "], own APIC ID {}", own_apic_id);
    let _ = write!(out, "bootinfo: memory");
    for region in info.memory() {
        let _ = write!(out, " {:#x}+{:#x}", region.base, region.size);
    }
    let _ = writeln!(out);
    for c in info.connection_list() {
        let _ = write!(out, "bootinfo: connection {} id {} ", c.name().unwrap_or("(no name)"), c.id);
        let _ = match c.kind {
            ConnectionKind::Message { queue_depth } => write!(out, "message depth {}", queue_depth),
            ConnectionKind::Event { flag } => write!(out, "event flag {}", flag),
        };
        let _ = writeln!(out, " {} sint {}", if c.incoming { "incoming" } else { "outgoing" }, c.sint);
    }
    let here = _start as *const () as u64;
    let stack = &raw const out as u64;
    let inside = |a: u64| info.memory().any(|r| r.base <= a && a < r.base + r.size);
    let named = info.connection("to-peer").is_some_and(|c| !c.incoming);
    println!(
        "bootinfo: code and stack in the listed memory={}, VP 0 is this CPU={}, to-peer found={}",
        inside(here) && inside(stack),
        info.apic_id(0) == Some(own_apic_id),
        named
    );
    address == BOOT_INFO_GPA
        && !info.name().is_empty()
        && inside(here)
        && inside(stack)
        && info.apic_id(0) == Some(own_apic_id)
        && named
}

fn console() -> bool {
    let mut hv = client();
    hv.enable_hypercalls(GUEST_OS_ID).expect("hypercall page");
    println!("console: a line through the UART");
    let written = [
        hv.console_write(b"console: one line, written in ").is_ok(),
        hv.console_write(b"two calls\n").is_ok(),
        hv.console_write(b"console: two lines\nconsole: in one call\n").is_ok(),
    ];
    println!("console: another line through the UART");
    let expect = |what: &str, got: u16, want: u16| {
        println!("console: {} status {:#x}", what, got);
        got == want
    };
    let too_long = CONSOLE_WRITE_MAX as u32 + 1;
    let fast = HypercallInput::new(code::BULKHEAD_CONSOLE_WRITE).fast(true).value();
    let refused = [
        expect("length above the maximum", console_write_at(&mut hv, 0, too_long, 0, b"x"), 0x5),
        expect("reserved field not 0", console_write_at(&mut hv, 0, 1, 1, b"x"), 0x5),
        expect("fast form", status(hv.raw_hypercall(fast, 0, 0)), 0x2),
        expect("input crossing its page", console_write_at(&mut hv, 4096 - 16, 16, 0, b"0123456789abcdef"), 0x4),
        expect(
            "code 0x8002",
            status(hv.raw_hypercall(HypercallInput::new(code::BULKHEAD_CONSOLE_WRITE + 1).value(), 0, 0)),
            0x2,
        ),
    ];
    // Nothing of the refused calls' text may have reached the console (the test forbids it).
    println!("console: calls accepted={}", written.iter().all(|&ok| ok));
    written.iter().chain(&refused).all(|&ok| ok)
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8, boot_info: u64) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    match arg(args, "case") {
        Some("info") => match arg(args, "life").and_then(parse_u64) {
            Some(life) => report(info(boot_info, life)),
            None => report(false),
        },
        Some("console") => report(console()),
        _ => idle(),
    }
}
