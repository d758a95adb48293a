//! Test payload "dma": drives QEMU's `edu` PCI device (hw/misc/edu.c: BAR0 registers 0x80
//! DMA source, 0x88 destination, 0x90 count, 0x98 command with bit 0 start and bit 1
//! direction, 0 = RAM to the device's buffer, 1 = buffer to RAM; the buffer is 4 KiB at
//! device address 0x40000, of which a transfer may use less than all; RAM addresses are clamped to the 28-bit DMA mask) and checks
//! that the IOMMU confines its DMA to this partition's memory:
//!
//! 1. a round trip RAM -> edu -> RAM within its own memory must arrive intact;
//! 2. a write from the device to `neighbour=ADDRESS` (a host address in another
//!    partition: its canary) and to `hypervisor=ADDRESS` (the hypervisor image) must not
//!    land: the hypervisor logs the fault, the neighbour checks its canary.
//!
//! With `offset=N` the device addresses of step 1 are guest-physical + N: an unconfined
//! function (`dma = "unprotected"`) sees host-physical addresses, so the test passes the
//! host base of the partition's memory.
//!
//! The function is `pci=BB:DD.F` (default 00:04.0), reached through ports 0xCF8/0xCFC,
//! which the test board gives this partition directly (configuration mechanism #1, PCI
//! Local Bus 3.0 3.2.2.3.2): the payload sets the command register's memory-space and
//! bus-master bits itself. It prints each step and idles; another partition gives the
//! verdict.
#![no_std]
#![no_main]

use bulkhead_guests::{arg, cmdline, idle, parse_u64, println, rdtsc};
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

const EDU_ID: u32 = 0x11e8_1234;
const BUFFER: u64 = 0x40000;
const PAGE: usize = 4096;
/// Bytes per round trip: less than the 4 KiB buffer, since QEMU 7.2's range check
/// (`edu_check_range`) wrongly refuses a transfer that ends exactly at the buffer's end
/// (and a refused range stops the emulator).
const LENGTH: usize = 2048;

#[repr(C, align(4096))]
struct Page([u8; PAGE]);

static mut SOURCE: Page = Page([0; PAGE]);
static mut DESTINATION: Page = Page([0; PAGE]);

fn outl(port: u16, value: u32) {
    // SAFETY: configuration mechanism #1, which the hypervisor filters to the partition's own function.
    unsafe { core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack)) };
}

fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as in `outl`.
    unsafe { core::arch::asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack)) };
    value
}

fn config_read(bdf: u32, offset: u32) -> u32 {
    outl(0xcf8, 0x8000_0000 | (bdf << 8) | (offset & 0xfc));
    inl(0xcfc)
}

fn config_write(bdf: u32, offset: u32, value: u32) {
    outl(0xcf8, 0x8000_0000 | (bdf << 8) | (offset & 0xfc));
    outl(0xcfc, value);
}

struct Edu(u64);

impl Edu {
    fn read(&self, offset: u64) -> u64 {
        // SAFETY: BAR0 of the partition's own function, mapped by the hypervisor.
        unsafe { read_volatile((self.0 + offset) as *const u64) }
    }

    fn read32(&self, offset: u64) -> u32 {
        // SAFETY: as in `read`.
        unsafe { read_volatile((self.0 + offset) as *const u32) }
    }

    fn write(&self, offset: u64, value: u64) {
        // SAFETY: as in `read`.
        unsafe { write_volatile((self.0 + offset) as *mut u64, value) }
    }

    /// One DMA of `count` bytes; `to_ram`: from the device buffer to RAM. Returns false
    /// when the device did not finish within about `patience` TSC ticks.
    fn dma(&self, source: u64, destination: u64, count: u64, to_ram: bool, patience: u64) -> bool {
        self.write(0x80, source);
        self.write(0x88, destination);
        self.write(0x90, count);
        self.write(0x98, 1 | if to_ram { 2 } else { 0 });
        let start = rdtsc();
        while self.read(0x98) & 1 != 0 {
            if rdtsc().wrapping_sub(start) > patience {
                return false;
            }
            core::hint::spin_loop();
        }
        true
    }
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    let bdf = arg(args, "pci").and_then(parse_bdf).unwrap_or(4 << 3);
    let neighbour = arg(args, "neighbour").and_then(parse_u64);
    let hypervisor = arg(args, "hypervisor").and_then(parse_u64);
    // Generous: QEMU's edu finishes a DMA 100 ms (virtual time) after the command.
    let offset = arg(args, "offset").and_then(parse_u64).unwrap_or(0);
    let patience = arg(args, "patience").and_then(parse_u64).unwrap_or(40_000_000_000);

    let id = config_read(bdf, 0);
    if id != EDU_ID {
        println!("dma: no edu at function {:#x} (id {:#010x})", bdf, id);
        idle()
    }
    let bar = u64::from(config_read(bdf, 0x10) & !0xf);
    // Command register: memory space (bit 1) and bus master (bit 2).
    let command = config_read(bdf, 4);
    config_write(bdf, 4, (command & 0xffff) | 0x6);
    let edu = Edu(bar);
    println!("dma: edu at BAR0 {:#x}, id register {:#010x}", bar, edu.read32(0));

    // 1. Round trip within the partition's own memory (guest-physical = device address).
    let source = addr_of_mut!(SOURCE) as u64;
    let destination = addr_of_mut!(DESTINATION) as u64;
    for i in 0..LENGTH {
        // SAFETY: our own statics; volatile so the device sees the bytes.
        unsafe { write_volatile((source as *mut u8).add(i), (i as u8) ^ 0xa5) };
    }
    let sent = edu.dma(source + offset, BUFFER, LENGTH as u64, false, patience);
    let back = sent && edu.dma(BUFFER, destination + offset, LENGTH as u64, true, patience);
    // SAFETY: our own statics, read after the device finished.
    let same = back
        && (0..LENGTH)
            .all(|i| unsafe { read_volatile(addr_of!(DESTINATION.0).cast::<u8>().add(i)) } == (i as u8) ^ 0xa5);
    if same {
        println!("dma: round trip ok ({} bytes via {:#x} and {:#x})", LENGTH, source, destination);
    } else {
        println!("dma: round trip FAILED (sent {}, back {})", sent, back);
    }

    // 2. Writes out of the partition's memory: the device buffer now holds the pattern.
    for (what, target) in [("neighbour", neighbour), ("hypervisor", hypervisor)] {
        if let Some(address) = target {
            let done = edu.dma(BUFFER, address, 8, true, patience);
            println!(
                "dma: write to {} at {:#x} issued ({})",
                what,
                address,
                if done { "device done" } else { "device TIMEOUT" }
            );
        }
    }
    println!("dma: done");
    idle()
}

/// `BB:DD.F` (hex) as bus << 8 | device << 3 | function.
fn parse_bdf(text: &str) -> Option<u32> {
    let (bus, rest) = text.split_once(':')?;
    let (device, function) = rest.split_once('.')?;
    let bus = u32::from_str_radix(bus, 16).ok()?;
    let device = u32::from_str_radix(device, 16).ok()?;
    let function = u32::from_str_radix(function, 16).ok()?;
    (bus < 256 && device < 32 && function < 8).then_some((bus << 8) | (device << 3) | function)
}
