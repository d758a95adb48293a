//! Port I/O exits: the virtual 16550 console at COM1, the test verdict port, PCI
//! configuration mechanism #1 (0xCF8/0xCFC, filtered by `devices::pci` for a partition that
//! owns a PCI function), and every other port the partition was not given (reads all-ones,
//! writes dropped, both logged at a limited rate).

use crate::devices::pci;
use crate::exits::action::Action;
use crate::log::warn;
use crate::partition::{Fault, Partition};
use bulkhead_virt::exit::PortAccess;
use bulkhead_virt::guest_state::GuestRegisters;

/// The virtual 16550 every partition has at the PC's COM1 address.
pub const CONSOLE_BASE: u16 = 0x3f8;
/// Port a test payload writes its verdict to (see `guests/`).
pub const REPORT_PORT: u16 = bulkhead_abi::run::QEMU_DEBUG_EXIT_PORT;
/// Ports of the virtual UART.
const CONSOLE_PORTS: core::ops::Range<u16> = CONSOLE_BASE..CONSOLE_BASE + 8;

/// A port access exit. The virtual UART's registers are answered inline, straight from
/// the exit (the console's polling reads are the hottest port exits); every other port
/// goes to [`other_port`].
#[inline(always)]
pub fn access(partition: &Partition, regs: &mut GuestRegisters, access: PortAccess) -> Action {
    // A 16550A's registers (`bulkhead_virt::uart16550`), one byte per port: a wider
    // access touches only the first (the UART sits on an 8-bit bus; the other bytes
    // read 0xFF as nothing drives them).
    let offset = access.port.wrapping_sub(CONSOLE_BASE);
    if offset < CONSOLE_PORTS.end - CONSOLE_BASE && !access.string {
        if access.write {
            if let Some(byte) = partition.uart_write(offset, regs.rax as u8) {
                partition.console_write(byte);
            }
        } else {
            let byte = u64::from(partition.uart_read(offset));
            set_in_result(regs, access.size, (u64::MAX << 8) | byte);
        }
        return Action::Resume { skip: true };
    }
    other_port(partition, regs, access)
}

/// Every port but the virtual UART's (and string I/O to it).
#[inline(never)]
fn other_port(partition: &Partition, regs: &mut GuestRegisters, access: PortAccess) -> Action {
    if access.string {
        return Action::Fault(Fault::StringIo { port: access.port });
    }
    let width_mask: u64 = match access.size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    };
    let value = regs.rax & width_mask;
    match (access.port, access.write) {
        (REPORT_PORT, true) if partition.gives_verdict() => return Action::Report { pass: value == 0 },
        // PCI configuration mechanism #1, filtered, for a partition that owns a PCI function
        // (`devices::pci`); for the others these ports are unassigned like any.
        (p, write) if (pci::CONFIG_ADDRESS..pci::CONFIG_DATA + 4).contains(&p) && pci::has_functions(partition) => {
            if let Some(read) = pci::port_access(partition, p, access.size, write.then_some(value as u32)) {
                if !write {
                    set_in_result(regs, access.size, u64::from(read));
                }
                return Action::Resume { skip: true };
            }
        }
        _ => {}
    }
    if let Some(n) = partition.counters.port.hit() {
        warn!(
            "partition {=str}: {=str} unassigned port {=u16:#x} ({=u8} bytes): {=str} (#{=u32})",
            partition.name(),
            if access.write { "write to" } else { "read from" },
            access.port,
            access.size,
            if access.write { "dropped" } else { "reads all-ones" },
            n
        );
    }
    if !access.write {
        set_in_result(regs, access.size, u64::MAX);
    }
    Action::Resume { skip: true }
}

/// Puts the result of an IN into RAX as the hardware would: AL and AX keep the rest of
/// RAX, a 32-bit IN writes EAX, which zero-extends into RAX.
fn set_in_result(regs: &mut GuestRegisters, size: u8, value: u64) {
    regs.rax = match size {
        1 => (regs.rax & !0xff) | (value & 0xff),
        2 => (regs.rax & !0xffff) | (value & 0xffff),
        _ => value & 0xffff_ffff,
    };
}
