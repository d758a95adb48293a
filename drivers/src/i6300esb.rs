//! The Intel 6300ESB watchdog timer (WDT): PCI function 8086:25AB, a board watchdog that
//! QEMU models as `-device i6300esb`. Register facts from the Intel 6300ESB I/O Controller
//! Hub datasheet (document 300641), its watchdog timer chapter.
//!
//! Two places hold its registers:
//! - PCI configuration space: WDT configuration (0x60, 16-bit: output enable, prescaler,
//!   stage-1 interrupt type) and the lock register (0x68, 8-bit: watchdog or free-running
//!   mode, enable, lock).
//! - A 16-byte memory BAR (BAR0): preload value 1 (0x00) and 2 (0x04), 20 bits each, the
//!   general interrupt status (0x08) and the reload register (0x0C). Every write to a
//!   preload or the reload register must directly follow the unlock sequence: 0x80, then
//!   0x86, written to the reload register; the unlock covers one write.
//!
//! The timer counts down in two stages. Stage 1 starts from preload 1; when it runs out the
//! WDT raises its stage-1 interrupt (which this driver switches off: nothing would handle
//! it) and stage 2 starts from preload 2; when that runs out the WDT drives its timeout
//! output, which resets the board (unless the output is disabled in the configuration
//! register), and sets the timeout flag in the reload register, which survives the reset.
//! A reload (bit 8 of the reload register) starts stage 1 again. So a board watchdog of
//! `timeout_ms` is the two stages together: [`Timing::for_timeout_ms`].
//!
//! The prescaler divides the 33 MHz PCI clock: with the "1 kHz" setting used here the
//! 20-bit preload value is the top 20 bits of a 35-bit down-counter, so one preload unit
//! is 2^15 clocks = 32768 / 33 MHz, about 0.993 ms (the "1 MHz" setting would make it 2^5
//! clocks). Range per stage: 1 to 0xF_FFFF units.
//!
//! Register access goes through [`ConfigSpace`] and [`MemoryRegisters`] so that the
//! sequences have host tests; the kernel supplies the real accesses.

/// PCI vendor and device ID of the 6300ESB watchdog function.
pub const VENDOR_ID: u16 = 0x8086;
pub const DEVICE_ID: u16 = 0x25ab;

/// PCI configuration registers.
pub mod config {
    /// PCI command register (memory space enable is bit 1).
    pub const COMMAND: u16 = 0x04;
    pub const COMMAND_MEMORY_SPACE: u32 = 1 << 1;
    /// BAR0: the memory registers.
    pub const BAR0: u16 = 0x10;
    /// WDT configuration register (16-bit).
    pub const WDT_CONFIG: u16 = 0x60;
    /// Bit 5: 1 = the WDT timeout output is not driven, so the timer never resets the
    /// board. Kept 0.
    pub const OUTPUT_DISABLE: u16 = 1 << 5;
    /// Bit 2: prescaler select, 0 = 1 kHz (one preload unit is 2^15 PCI clocks), 1 = 1 MHz
    /// (2^5 clocks).
    pub const PRESCALER_1MHZ: u16 = 1 << 2;
    /// Bits 1:0: what stage 1's expiry raises: 0 IRQ, 2 SMI, 3 nothing.
    pub const INTERRUPT_NONE: u16 = 0b11;
    /// WDT lock register (8-bit).
    pub const WDT_LOCK: u16 = 0x68;
    /// Bit 2: 1 = free-running mode (no reset, the stages just repeat); 0 = watchdog mode.
    pub const LOCK_FREE_RUNNING: u8 = 1 << 2;
    /// Bit 1: the timer counts.
    pub const LOCK_ENABLE: u8 = 1 << 1;
    /// Bit 0: the lock register (and so the enable) cannot change again until a reset.
    pub const LOCK_LOCKED: u8 = 1 << 0;
}

/// Registers in the memory BAR.
pub mod mem {
    pub const PRELOAD_1: u16 = 0x00;
    pub const PRELOAD_2: u16 = 0x04;
    pub const INTERRUPT_STATUS: u16 = 0x08;
    /// Reload register (16-bit writes; the unlock bytes go here too).
    pub const RELOAD: u16 = 0x0c;
    /// Reload bit 8: restart stage 1 from preload 1.
    pub const RELOAD_TIMER: u16 = 1 << 8;
    /// Reload bit 9: the timer ran out (set by hardware, kept across the reset it caused;
    /// writing 1 clears it).
    pub const RELOAD_TIMEOUT: u16 = 1 << 9;
    pub const UNLOCK_1: u8 = 0x80;
    pub const UNLOCK_2: u8 = 0x86;
}

/// The largest preload value (20 bits).
pub const PRELOAD_MAX: u32 = 0xf_ffff;

/// PCI clock cycles per preload unit with the 1 kHz prescaler, and the PCI clock in kHz.
const CLOCKS_PER_UNIT: u64 = 1 << 15;
const PCI_CLOCK_KHZ: u64 = 33_000;

/// The function's configuration space (offset, size 1, 2 or 4, naturally aligned).
pub trait ConfigSpace {
    fn read(&mut self, offset: u16, size: u8) -> u32;
    fn write(&mut self, offset: u16, size: u8, value: u32);
}

/// The registers in the function's memory BAR (offset from the BAR's base).
pub trait MemoryRegisters {
    fn read(&mut self, offset: u16, size: u8) -> u32;
    fn write(&mut self, offset: u16, size: u8, value: u32);
}

/// The two preload values of a timeout (1 kHz prescaler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub preload_1: u32,
    pub preload_2: u32,
}

/// A timeout the timer cannot count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutError {
    Zero,
    /// Above [`Timing::MAX_TIMEOUT_MS`].
    TooLong,
}

impl Timing {
    /// The longest timeout both stages together count (2 * 0xF_FFFF units, about 34.7
    /// minutes).
    pub const MAX_TIMEOUT_MS: u32 = (2 * PRELOAD_MAX as u64 * CLOCKS_PER_UNIT / PCI_CLOCK_KHZ) as u32;

    /// The preloads for a board reset `timeout_ms` after the last reload, never earlier:
    /// the units are rounded up (the reset comes at most one unit, under 1 ms, late) and
    /// split between the stages, stage 1 taking the odd unit.
    pub fn for_timeout_ms(timeout_ms: u32) -> Result<Timing, TimeoutError> {
        if timeout_ms == 0 {
            return Err(TimeoutError::Zero);
        }
        if timeout_ms > Self::MAX_TIMEOUT_MS {
            return Err(TimeoutError::TooLong);
        }
        let units = (u64::from(timeout_ms) * PCI_CLOCK_KHZ).div_ceil(CLOCKS_PER_UNIT);
        // At least 2 units (1 ms gives 2): each stage counts at least one.
        let units = units.max(2);
        let preload_2 = (units / 2) as u32;
        let preload_1 = (units - units / 2) as u32;
        Ok(Timing { preload_1, preload_2 })
    }

    /// The time from a reload to the reset, in microseconds (rounded down).
    pub fn timeout_us(&self) -> u64 {
        (u64::from(self.preload_1) + u64::from(self.preload_2)) * CLOCKS_PER_UNIT * 1000 / PCI_CLOCK_KHZ
    }
}

/// What [`start`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// The timeout flag was set: this WDT reset the board last time.
    pub caused_last_reset: bool,
}

/// Why [`start`] could not program the timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartError {
    /// The function at that address is something else.
    NotAnI6300esb { vendor: u16, device: u16 },
    /// Someone (firmware) locked the lock register: the mode and enable cannot be set.
    Locked { lock: u8 },
}

/// The vendor and device ID at the function, if they are the 6300ESB WDT's.
pub fn identify(config: &mut impl ConfigSpace) -> Result<(), StartError> {
    let vendor = config.read(0x00, 2) as u16;
    let device = config.read(0x02, 2) as u16;
    if (vendor, device) == (VENDOR_ID, DEVICE_ID) { Ok(()) } else { Err(StartError::NotAnI6300esb { vendor, device }) }
}

/// One write to a preload or the reload register, after the unlock sequence.
fn unlocked_write(memory: &mut impl MemoryRegisters, offset: u16, size: u8, value: u32) {
    memory.write(mem::RELOAD, 1, u32::from(mem::UNLOCK_1));
    memory.write(mem::RELOAD, 1, u32::from(mem::UNLOCK_2));
    memory.write(offset, size, value);
}

/// Programs and starts the timer in watchdog mode: the BAR decoding on, the stage-1
/// interrupt off, the reset output on, the 1 kHz prescaler, both preloads, a reload that
/// also clears the timeout flag, then enable and lock (so nothing can stop it until the
/// board resets). The timer is stopped while it is programmed.
pub fn start(
    config: &mut impl ConfigSpace,
    memory: &mut impl MemoryRegisters,
    timing: Timing,
) -> Result<Started, StartError> {
    identify(config)?;
    let lock = config.read(config::WDT_LOCK, 1) as u8;
    if lock & config::LOCK_LOCKED != 0 {
        return Err(StartError::Locked { lock });
    }
    let command = config.read(config::COMMAND, 2);
    if command & config::COMMAND_MEMORY_SPACE == 0 {
        config.write(config::COMMAND, 2, command | config::COMMAND_MEMORY_SPACE);
    }
    // Stopped (and in watchdog mode) while the preloads change.
    config.write(config::WDT_LOCK, 1, 0);
    config.write(config::WDT_CONFIG, 2, u32::from(config::INTERRUPT_NONE));
    let caused_last_reset = memory.read(mem::RELOAD, 2) as u16 & mem::RELOAD_TIMEOUT != 0;
    unlocked_write(memory, mem::PRELOAD_1, 4, timing.preload_1 & PRELOAD_MAX);
    unlocked_write(memory, mem::PRELOAD_2, 4, timing.preload_2 & PRELOAD_MAX);
    unlocked_write(memory, mem::RELOAD, 2, u32::from(mem::RELOAD_TIMER | mem::RELOAD_TIMEOUT));
    config.write(config::WDT_LOCK, 1, u32::from(config::LOCK_ENABLE | config::LOCK_LOCKED));
    Ok(Started { caused_last_reset })
}

/// Restarts stage 1 from preload 1 (the "kick"): three byte-or-word MMIO writes.
pub fn reload(memory: &mut impl MemoryRegisters) {
    unlocked_write(memory, mem::RELOAD, 2, u32::from(mem::RELOAD_TIMER));
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::cell::RefCell;
    use std::vec::Vec;

    /// A model of the WDT's register behaviour as the datasheet gives it, enough to check
    /// the driver's sequences: the unlock state machine, sizes, lock.
    #[derive(Default)]
    struct Model {
        vendor: u16,
        device: u16,
        command: u16,
        wdt_config: u16,
        lock: u8,
        unlock: u8,
        preload_1: u32,
        preload_2: u32,
        reloads: u32,
        timeout_flag: bool,
        /// Writes that the hardware would ignore (wrong size, not unlocked).
        ignored: u32,
        log: Vec<(char, u16, u8, u32)>,
    }

    impl Model {
        fn new() -> Self {
            Model {
                vendor: VENDOR_ID,
                device: DEVICE_ID,
                preload_1: PRELOAD_MAX,
                preload_2: PRELOAD_MAX,
                ..Default::default()
            }
        }
    }

    /// The two views share one model, as the two register spaces share one function.
    struct Cfg<'a>(&'a RefCell<Model>);
    struct Mem<'a>(&'a RefCell<Model>);

    impl ConfigSpace for Cfg<'_> {
        fn read(&mut self, offset: u16, size: u8) -> u32 {
            let m = self.0.borrow();
            match (offset, size) {
                (0x00, 2) => u32::from(m.vendor),
                (0x02, 2) => u32::from(m.device),
                (config::COMMAND, 2) => u32::from(m.command),
                (config::WDT_CONFIG, 2) => u32::from(m.wdt_config),
                (config::WDT_LOCK, 1) => u32::from(m.lock),
                _ => panic!("unexpected config read {offset:#x}/{size}"),
            }
        }
        fn write(&mut self, offset: u16, size: u8, value: u32) {
            let mut m = self.0.borrow_mut();
            m.log.push(('c', offset, size, value));
            match (offset, size) {
                (config::COMMAND, 2) => m.command = value as u16,
                (config::WDT_CONFIG, 2) => m.wdt_config = value as u16,
                (config::WDT_LOCK, 1) if m.lock & config::LOCK_LOCKED == 0 => m.lock = value as u8,
                _ => m.ignored += 1,
            }
        }
    }

    impl MemoryRegisters for Mem<'_> {
        fn read(&mut self, offset: u16, size: u8) -> u32 {
            assert_eq!((offset, size), (mem::RELOAD, 2));
            if self.0.borrow().timeout_flag { u32::from(mem::RELOAD_TIMEOUT) } else { 0 }
        }
        fn write(&mut self, offset: u16, size: u8, value: u32) {
            let mut m = self.0.borrow_mut();
            m.log.push(('m', offset, size, value));
            if offset == mem::RELOAD && value == u32::from(mem::UNLOCK_1) {
                m.unlock = 1;
                return;
            }
            if offset == mem::RELOAD && value == u32::from(mem::UNLOCK_2) && m.unlock == 1 {
                m.unlock = 2;
                return;
            }
            let unlocked = m.unlock == 2;
            m.unlock = 0;
            match (offset, size, unlocked) {
                (mem::PRELOAD_1, 4, true) => m.preload_1 = value & PRELOAD_MAX,
                (mem::PRELOAD_2, 4, true) => m.preload_2 = value & PRELOAD_MAX,
                (mem::RELOAD, 2, true) => {
                    if value & u32::from(mem::RELOAD_TIMER) != 0 {
                        m.reloads += 1;
                    }
                    if value & u32::from(mem::RELOAD_TIMEOUT) != 0 {
                        m.timeout_flag = false;
                    }
                }
                _ => m.ignored += 1,
            }
        }
    }

    #[test]
    fn timeout_maps_to_two_stages_never_early() {
        // 1000 ms = 1007.08 units of 32768 / 33 MHz: 1008 units, 504 per stage.
        let t = Timing::for_timeout_ms(1000).unwrap();
        assert_eq!(t, Timing { preload_1: 504, preload_2: 504 });
        assert_eq!(t.timeout_us(), 1_000_913);
        // An odd count: stage 1 takes the extra unit.
        let t = Timing::for_timeout_ms(3).unwrap();
        assert_eq!(t, Timing { preload_1: 2, preload_2: 2 }); // 3.0 ms = 3.02 units -> 4
        let t = Timing::for_timeout_ms(2).unwrap(); // 2.01 units -> 3
        assert_eq!(t, Timing { preload_1: 2, preload_2: 1 });
        // The shortest: each stage counts at least one unit.
        assert_eq!(Timing::for_timeout_ms(1).unwrap(), Timing { preload_1: 1, preload_2: 1 });
        for ms in [1, 2, 7, 100, 999, 1000, 4000, 60_000, 600_000, Timing::MAX_TIMEOUT_MS] {
            let t = Timing::for_timeout_ms(ms).unwrap();
            let us = t.timeout_us();
            assert!(us >= u64::from(ms) * 1000, "{ms} ms counted as {us} us: early");
            assert!(us < u64::from(ms) * 1000 + 2 * 993, "{ms} ms counted as {us} us: over a unit late");
            assert!((1..=PRELOAD_MAX).contains(&t.preload_1) && (1..=PRELOAD_MAX).contains(&t.preload_2));
            assert!(t.preload_1 - t.preload_2 <= 1);
        }
    }

    #[test]
    fn timeout_range() {
        assert_eq!(Timing::for_timeout_ms(0), Err(TimeoutError::Zero));
        assert_eq!(Timing::MAX_TIMEOUT_MS, 2_082_406);
        assert_eq!(
            Timing::for_timeout_ms(Timing::MAX_TIMEOUT_MS).unwrap(),
            Timing { preload_1: PRELOAD_MAX, preload_2: PRELOAD_MAX }
        );
        assert_eq!(Timing::for_timeout_ms(Timing::MAX_TIMEOUT_MS + 1), Err(TimeoutError::TooLong));
    }

    fn start_on(model: Model, timing: Timing) -> (Result<Started, StartError>, Model) {
        let model = RefCell::new(model);
        let result = start(&mut Cfg(&model), &mut Mem(&model), timing);
        (result, model.into_inner())
    }

    #[test]
    fn start_programs_both_stages_then_enables_and_locks() {
        let (started, model) =
            start_on(Model { timeout_flag: true, ..Model::new() }, Timing::for_timeout_ms(1000).unwrap());
        assert_eq!(started, Ok(Started { caused_last_reset: true }));
        assert_eq!(model.ignored, 0, "every write reached its register: {:x?}", model.log);
        assert_eq!((model.preload_1, model.preload_2), (504, 504));
        assert_eq!(model.reloads, 1);
        assert!(!model.timeout_flag, "the timeout flag is cleared");
        assert_ne!(u32::from(model.command) & config::COMMAND_MEMORY_SPACE, 0);
        // Output on (bit 5 clear), 1 kHz, no stage-1 interrupt.
        assert_eq!(model.wdt_config, config::INTERRUPT_NONE);
        assert_eq!(model.lock, config::LOCK_ENABLE | config::LOCK_LOCKED);
        // Disabled before the preloads change, enabled last.
        let first_lock = model.log.iter().position(|w| w.0 == 'c' && w.1 == config::WDT_LOCK).unwrap();
        let first_preload = model.log.iter().position(|w| w.0 == 'm' && w.1 == mem::PRELOAD_1).unwrap();
        assert!(first_lock < first_preload);
        assert_eq!(model.log[first_lock].3, 0);
        assert_eq!(*model.log.last().unwrap(), ('c', config::WDT_LOCK, 1, 0b11));
    }

    #[test]
    fn start_refuses_other_functions_and_a_locked_timer() {
        let one = Timing { preload_1: 1, preload_2: 1 };
        let (result, model) = start_on(Model { vendor: 0x1234, device: 0x11e8, ..Model::new() }, one);
        assert_eq!(result, Err(StartError::NotAnI6300esb { vendor: 0x1234, device: 0x11e8 }));
        assert!(model.log.is_empty(), "nothing written to a foreign function");

        let (result, model) = start_on(Model { lock: config::LOCK_LOCKED, ..Model::new() }, one);
        assert_eq!(result, Err(StartError::Locked { lock: 1 }));
        assert!(model.log.is_empty());
    }

    #[test]
    fn reload_is_unlock_then_reload_bit() {
        let cell = RefCell::new(Model::new());
        reload(&mut Mem(&cell));
        reload(&mut Mem(&cell));
        Mem(&cell).write(mem::RELOAD, 2, 0x100);
        let model = cell.into_inner();
        assert_eq!(
            model.log[..3],
            [('m', mem::RELOAD, 1, 0x80), ('m', mem::RELOAD, 1, 0x86), ('m', mem::RELOAD, 2, 0x100)]
        );
        // The third write had no unlock: the hardware ignores it.
        assert_eq!((model.reloads, model.ignored), (2, 1));
    }
}
