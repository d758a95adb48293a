//! The 8254 programmable interval timer, used once at boot to measure the TSC frequency.
//!
//! Channel 2 is gated through port 0x61 and its output can be read there, so it can time a
//! fixed interval by polling, with interrupts off (the method Linux' `pit_calibrate_tsc`
//! uses). Ports and modes: Intel 8254 data sheet; port 0x61 bits: IBM PC/AT reference.

use crate::port::{inb, outb};

/// Input clock of the PIT in Hz.
pub const PIT_HZ: u64 = 1_193_182;

const PORT_CH2_DATA: u16 = 0x42;
const PORT_COMMAND: u16 = 0x43;
const PORT_GATE: u16 = 0x61;
const GATE_CH2: u8 = 1 << 0;
const SPEAKER: u8 = 1 << 1;
const OUT_CH2: u8 = 1 << 5;
/// Channel 2, low then high byte, mode 0 (interrupt on terminal count), binary.
const CMD_CH2_MODE0: u8 = 0b1011_0000;

/// TSC frequency from a measured interval: `tsc_delta` TSC ticks during `pit_ticks` PIT ticks.
pub fn tsc_hz(tsc_delta: u64, pit_ticks: u64) -> u64 {
    if pit_ticks == 0 {
        return 0;
    }
    (u128::from(tsc_delta) * u128::from(PIT_HZ) / u128::from(pit_ticks)) as u64
}

/// Why a calibration attempt gave no frequency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalibrationError {
    /// The PIT never signalled the end of the interval (no PIT, as on some UEFI-only
    /// boards): trying again cannot help.
    NoSignal,
    /// The interval was over before it could be timed: either there is no PIT (port 0x61
    /// reads all ones), or this CPU was held up for longer than the interval (an SMI on a
    /// board; an emulator's CPU thread not scheduled on a busy host). Worth another try.
    EndedAtOnce,
}

/// Measures the TSC frequency over `ms` milliseconds (at most 50).
///
/// # Safety
/// Touches the PIT and port 0x61; nothing else may use PIT channel 2 meanwhile.
pub unsafe fn calibrate_tsc(ms: u32, rdtsc: impl Fn() -> u64) -> Result<u64, CalibrationError> {
    let ticks = (PIT_HZ * u64::from(ms.clamp(1, 50)) / 1000) as u16;
    // SAFETY: the caller gave us the PIT; the sequence is the 8254 mode-0 programming.
    unsafe {
        let gate = inb(PORT_GATE);
        outb(PORT_GATE, (gate & !SPEAKER) | GATE_CH2);
        outb(PORT_COMMAND, CMD_CH2_MODE0);
        outb(PORT_CH2_DATA, ticks as u8);
        outb(PORT_CH2_DATA, (ticks >> 8) as u8);
    }
    let start = rdtsc();
    // Bounded: a missing PIT reads 0xff (OUT set at once) or never sets OUT.
    let mut polls: u64 = 0;
    // SAFETY: reading port 0x61 has no side effects.
    while unsafe { inb(PORT_GATE) } & OUT_CH2 == 0 {
        polls += 1;
        if polls > 50_000_000 {
            return Err(CalibrationError::NoSignal);
        }
    }
    let end = rdtsc();
    // Fewer than a handful of polls means OUT was already high: the PIT is not there.
    if polls < 4 {
        return Err(CalibrationError::EndedAtOnce);
    }
    Ok(tsc_hz(end - start, u64::from(ticks)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequency_from_interval() {
        // 10 ms of a 2 GHz TSC.
        assert_eq!(tsc_hz(20_000_000, PIT_HZ / 100), 2_000_137_457);
        assert_eq!(tsc_hz(3 * 11_931, 11_931), 3 * PIT_HZ);
        assert_eq!(tsc_hz(1, 0), 0);
    }
}
