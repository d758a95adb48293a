//! The board's hardware watchdog (`[watchdog]` in the board file): armed at boot, kicked
//! by the monitor (`supervision/monitor.rs`) while the system is healthy; if the kicks stop
//! for `timeout_ms`, the watchdog resets the board (docs/supervision.md, "Board watchdog").
//!
//! The one kind so far is the Intel 6300ESB WDT (`bulkhead_drivers::i6300esb`): a PCI
//! function no partition owns, whose configuration space the hypervisor programs once at
//! boot and whose memory BAR it writes to reload the timer. The function must be where the
//! board file says, with its BAR as the firmware programmed it (checked as assigned
//! functions are, `devices::pci::hypervisor_function`). A board watchdog that cannot be
//! armed is an error in the log, never a silent gap: the boot goes on, unprotected.
//!
//! [`kick`] runs every tick of the monitor (1 ms) and reloads the hardware only every
//! quarter of the timeout: a TSC read and a compare otherwise, and no lock ever.

use crate::cpu::time;
use crate::log::{error, info, warn};
use bulkhead_board::tables::{self, BoardWatchdogKind};
use bulkhead_drivers::i6300esb::{self, ConfigSpace, MemoryRegisters, StartError, Timing};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Whether a watchdog was armed (then `BASE` and `RELOAD_TICKS` are set).
static ARMED: AtomicBool = AtomicBool::new(false);
/// Physical (identity-mapped) base of the i6300esb's memory BAR.
static BASE: AtomicU64 = AtomicU64::new(0);
/// TSC ticks between two hardware reloads (a quarter of the timeout).
static RELOAD_TICKS: AtomicU64 = AtomicU64::new(0);
/// TSC at the last hardware reload.
static LAST_RELOAD: AtomicU64 = AtomicU64::new(0);

/// The hypervisor's page tables map the low 4 GiB, MMIO uncached (boot/paging.rs).
const MAPPED_MMIO_END: u64 = 1 << 32;
/// Bytes of the i6300esb's register BAR.
const BAR_BYTES: u64 = 16;

/// The configuration space of the watchdog function.
struct Config(crate::devices::pci::HypervisorFunction);

impl ConfigSpace for Config {
    fn read(&mut self, offset: u16, size: u8) -> u32 {
        self.0.read(offset, size)
    }

    fn write(&mut self, offset: u16, size: u8, value: u32) {
        self.0.write(offset, size, value)
    }
}

/// The registers in the watchdog's memory BAR at a physical address.
struct Registers(u64);

impl MemoryRegisters for Registers {
    fn read(&mut self, offset: u16, size: u8) -> u32 {
        let at = self.0 + u64::from(offset);
        // SAFETY: `self.0` is the watchdog's BAR, which the boot check found where the board
        // file puts it, inside the identity-mapped uncached low 4 GiB; the access is
        // naturally aligned and touches the device's registers only.
        unsafe {
            match size {
                1 => u32::from(core::ptr::read_volatile(at as *const u8)),
                2 => u32::from(core::ptr::read_volatile(at as *const u16)),
                _ => core::ptr::read_volatile(at as *const u32),
            }
        }
    }

    fn write(&mut self, offset: u16, size: u8, value: u32) {
        let at = self.0 + u64::from(offset);
        // SAFETY: as in `read`.
        unsafe {
            match size {
                1 => core::ptr::write_volatile(at as *mut u8, value as u8),
                2 => core::ptr::write_volatile(at as *mut u16, value as u16),
                _ => core::ptr::write_volatile(at as *mut u32, value),
            }
        }
    }
}

/// Arms the board's watchdog, if the board has one (boot CPU, after PCI init, before
/// partitions start).
pub fn arm() {
    let board = &crate::config::SYSTEM.board;
    let Some(watchdog) = board.watchdog else { return };
    let Some(device) = board.devices.get(usize::from(watchdog.device.0)) else {
        error!("board watchdog: device {=u8} is not on the board: the board is not protected", watchdog.device.0);
        return;
    };
    match watchdog.kind {
        BoardWatchdogKind::I6300esb => arm_i6300esb(device, watchdog.timeout_ms),
    }
}

fn arm_i6300esb(device: &tables::Device, timeout_ms: u32) {
    let Some(address) = device.pci else {
        error!("board watchdog: i6300esb {=str} has no PCI address: the board is not protected", device.name);
        return;
    };
    let (bus, dev, function) = (address.bus, address.device, address.function);
    let timing = match Timing::for_timeout_ms(timeout_ms) {
        Ok(timing) => timing,
        Err(_) => {
            error!(
                "board watchdog: i6300esb at {=u8:02x}:{=u8:02x}.{=u8}: timeout {=u32} ms is outside 1-{=u32} ms: the board is not protected",
                bus,
                dev,
                function,
                timeout_ms,
                Timing::MAX_TIMEOUT_MS
            );
            return;
        }
    };
    let bar = device.bars.iter().find(|b| b.index == 0 && b.memory);
    let Some(base) = bar
        .map(|b| b.range.base)
        .filter(|&base| base.checked_add(BAR_BYTES).is_some_and(|end| end <= MAPPED_MMIO_END) && base % BAR_BYTES == 0)
    else {
        error!(
            "board watchdog: i6300esb at {=u8:02x}:{=u8:02x}.{=u8}: the board file gives it no memory BAR0 below 4 GiB: the board is not protected",
            bus, dev, function
        );
        return;
    };
    let Some(function_config) = crate::devices::pci::hypervisor_function(device) else {
        error!(
            "board watchdog: i6300esb {=str} at {=u8:02x}:{=u8:02x}.{=u8} not found: the board is not protected",
            device.name, bus, dev, function
        );
        return;
    };
    match i6300esb::start(&mut Config(function_config), &mut Registers(base), timing) {
        Ok(started) => {
            BASE.store(base, Ordering::Relaxed);
            RELOAD_TICKS.store(time::ticks_per_ms() * u64::from(timeout_ms.div_ceil(4)), Ordering::Relaxed);
            LAST_RELOAD.store(time::rdtsc(), Ordering::Relaxed);
            ARMED.store(true, Ordering::Release);
            info!(
                "board watchdog: i6300esb at {=u8:02x}:{=u8:02x}.{=u8} armed, timeout {=u32} ms (the hardware counts {=u64} us), reloaded every {=u32} ms",
                bus,
                dev,
                function,
                timeout_ms,
                timing.timeout_us(),
                timeout_ms.div_ceil(4)
            );
            if started.caused_last_reset {
                warn!("board watchdog: the i6300esb's timeout flag was set: it reset the board last time");
            }
        }
        Err(StartError::NotAnI6300esb { vendor, device: id }) => error!(
            "board watchdog: i6300esb {=str} not found: {=u8:02x}:{=u8:02x}.{=u8} is {=u16:04x}:{=u16:04x}, not 8086:25ab: the board is not protected",
            device.name, bus, dev, function, vendor, id
        ),
        Err(StartError::Locked { lock }) => error!(
            "board watchdog: i6300esb at {=u8:02x}:{=u8:02x}.{=u8}: locked before the hypervisor ran (lock register {=u8:#04x}): the board is not protected",
            bus, dev, function, lock
        ),
    }
}

/// Reloads the board watchdog's timer (called by the monitor every tick while healthy);
/// touches the hardware at most every quarter of the timeout.
pub fn kick() {
    if !ARMED.load(Ordering::Acquire) {
        return;
    }
    let now = time::rdtsc();
    if now.wrapping_sub(LAST_RELOAD.load(Ordering::Relaxed)) < RELOAD_TICKS.load(Ordering::Relaxed) {
        return;
    }
    LAST_RELOAD.store(now, Ordering::Relaxed);
    i6300esb::reload(&mut Registers(BASE.load(Ordering::Relaxed)));
}

/// Whether a board watchdog is armed.
pub fn armed() -> bool {
    ARMED.load(Ordering::Acquire)
}
