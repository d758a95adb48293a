//! The partition's virtual console UART: the registers of a 16550A (National
//! Semiconductor PC16550D data sheet, "Registers") as a device that is always ready to send
//! and never receives, and whose interrupt line is connected to nothing: its interrupt
//! logic shows only in IIR, which a driver polls.
//!
//! A driver that probes the UART before using it (Linux's 8250 driver: `autoconfig` in
//! drivers/tty/serial/8250/8250_port.c) must find the registers it expects: IER bits 3:0
//! read back what was written (else "no UART here"), the scratch register holds its value,
//! FCR bit 0 turns the FIFOs on, which IIR bits 7:6 report (11b: a 16550A), LCR and MCR
//! read back, and with DLAB (LCR bit 7) set, offsets 0 and 1 are the divisor latch. Bytes
//! written to the transmitter go to the partition's console line, except in loopback mode
//! (MCR bit 4), where a real 16550 does not drive its output either.

/// Offsets from the UART's base port.
pub mod reg {
    /// Receiver buffer (read) / transmitter holding (write); divisor latch low with DLAB.
    pub const DATA: u16 = 0;
    /// Interrupt enable; divisor latch high with DLAB.
    pub const IER: u16 = 1;
    /// Interrupt identification (read) / FIFO control (write).
    pub const IIR_FCR: u16 = 2;
    /// Line control.
    pub const LCR: u16 = 3;
    /// Modem control.
    pub const MCR: u16 = 4;
    /// Line status.
    pub const LSR: u16 = 5;
    /// Modem status.
    pub const MSR: u16 = 6;
    /// Scratch.
    pub const SCR: u16 = 7;
}

/// LCR bit 7: divisor latch access.
pub const LCR_DLAB: u8 = 0x80;
/// MCR bit 4: loopback.
pub const MCR_LOOP: u8 = 0x10;
/// LSR: transmitter holding register empty (bit 5) and transmitter empty (bit 6); no data
/// received (bit 0 clear), no errors.
pub const LSR_IDLE: u8 = 0x60;
/// IIR bit 0: no interrupt pending.
pub const IIR_NO_INTERRUPT: u8 = 0x01;
/// IIR bits 3:0 for "transmitter holding register empty" (priority 3).
pub const IIR_THRE: u8 = 0x02;
/// IER bit 1: enable the transmitter holding register empty interrupt.
pub const IER_THRE: u8 = 0x02;
/// IIR bits 7:6 with the FIFOs enabled.
pub const IIR_FIFOS_ENABLED: u8 = 0xC0;
/// MSR with the modem lines of a connected terminal: DCD (bit 7), DSR (bit 5) and CTS
/// (bit 4) asserted, no change since the last read.
pub const MSR_CONNECTED: u8 = 0xB0;

/// Register state of one 16550A.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uart16550 {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fifos: bool,
    /// The THRE interrupt condition (data sheet, Table II): set when the transmitter
    /// holding register becomes empty (at once after every byte here) and when ETBEI is
    /// enabled while it is empty; cleared by reading IIR when it is the source, or by
    /// writing THR.
    thre: bool,
}

impl Default for Uart16550 {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart16550 {
    /// The state after a master reset (data sheet, Table IV): everything 0; the divisor
    /// latch is undefined after reset, here 1 (115 200 baud from the PC's 1.8432 MHz clock).
    pub const fn new() -> Self {
        Uart16550 { ier: 0, lcr: 0, mcr: 0, scr: 0, dll: 1, dlm: 0, fifos: false, thre: false }
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    /// A read of the register at `offset` (0..=7; others read 0xFF, no register). Reading
    /// IIR acknowledges a THRE interrupt it reports.
    pub fn read(&mut self, offset: u16) -> u8 {
        match offset {
            reg::DATA if self.dlab() => self.dll,
            // Nothing is ever received.
            reg::DATA => 0,
            reg::IER if self.dlab() => self.dlm,
            // Bits 7:4 are always 0 on a 16550.
            reg::IER => self.ier & 0x0F,
            // Nothing is received and the modem lines never change, so THRE is the only
            // interrupt there can be.
            reg::IIR_FCR => {
                let fifos = if self.fifos { IIR_FIFOS_ENABLED } else { 0 };
                if self.thre && self.ier & IER_THRE != 0 {
                    self.thre = false;
                    IIR_THRE | fifos
                } else {
                    IIR_NO_INTERRUPT | fifos
                }
            }
            reg::LCR => self.lcr,
            reg::MCR => self.mcr & 0x1F,
            reg::LSR => LSR_IDLE,
            // In loopback the modem inputs follow the outputs: CTS = RTS, DSR = DTR,
            // RI = OUT1, DCD = OUT2 (data sheet, MCR bit 4).
            reg::MSR if self.mcr & MCR_LOOP != 0 => {
                let m = self.mcr;
                ((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
            }
            reg::MSR => MSR_CONNECTED,
            reg::SCR => self.scr,
            _ => 0xFF,
        }
    }

    /// A write of `value` to the register at `offset`; returns the byte to send to the
    /// console, if the write sent one.
    pub fn write(&mut self, offset: u16, value: u8) -> Option<u8> {
        match offset {
            reg::DATA if self.dlab() => self.dll = value,
            // The byte leaves THR at once: THR is empty again.
            reg::DATA if self.mcr & MCR_LOOP != 0 => self.thre = true,
            reg::DATA => {
                self.thre = true;
                return Some(value);
            }
            reg::IER if self.dlab() => self.dlm = value,
            reg::IER => {
                if self.ier & IER_THRE == 0 && value & IER_THRE != 0 {
                    self.thre = true;
                }
                self.ier = value & 0x0F;
            }
            // FCR bit 0 enables the FIFOs; bits 1 and 2 (reset the FIFOs) clear themselves
            // and there is nothing in them.
            reg::IIR_FCR => self.fifos = value & 0x01 != 0,
            reg::LCR => self.lcr = value,
            reg::MCR => self.mcr = value & 0x1F,
            reg::SCR => self.scr = value,
            // LSR and MSR are read-only (writes to them are factory tests).
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_state() {
        let mut u = Uart16550::new();
        assert_eq!(u.read(reg::IER), 0);
        assert_eq!(u.read(reg::IIR_FCR), IIR_NO_INTERRUPT);
        assert_eq!(u.read(reg::LSR), LSR_IDLE);
        assert_eq!(u.read(reg::MSR), MSR_CONNECTED);
        assert_eq!(u.read(8), 0xFF);
    }

    #[test]
    fn transmitter_sends_bytes_except_with_dlab_or_in_loopback() {
        let mut u = Uart16550::new();
        assert_eq!(u.write(reg::DATA, b'A'), Some(b'A'));
        u.write(reg::LCR, LCR_DLAB | 0x03);
        assert_eq!(u.write(reg::DATA, 1), None);
        assert_eq!(u.write(reg::IER, 0), None);
        assert_eq!((u.read(reg::DATA), u.read(reg::IER)), (1, 0));
        u.write(reg::LCR, 0x03);
        u.write(reg::MCR, MCR_LOOP);
        assert_eq!(u.write(reg::DATA, b'B'), None);
        u.write(reg::MCR, 0x0B);
        assert_eq!(u.write(reg::DATA, b'C'), Some(b'C'));
    }

    /// The checks of Linux's 8250 `autoconfig` (drivers/tty/serial/8250/8250_port.c), in
    /// its order, find a 16550A.
    #[test]
    fn linux_8250_autoconfig_finds_a_16550a() {
        let mut u = Uart16550::new();
        // IER test: 0 reads 0, 0x0F reads 0x0F.
        u.write(reg::IER, 0);
        assert_eq!(u.read(reg::IER) & 0x0F, 0);
        u.write(reg::IER, 0x0F);
        assert_eq!(u.read(reg::IER) & 0x0F, 0x0F);
        u.write(reg::IER, 0);
        // EFR probe with LCR 0xBF, then the FIFO type from IIR bits 7:6.
        u.write(reg::LCR, 0xBF);
        u.write(reg::IIR_FCR, 0);
        u.write(reg::LCR, 0);
        u.write(reg::IIR_FCR, 0x01);
        assert_eq!(u.read(reg::IIR_FCR) >> 6, 3, "16550A");
        // No EFR (offset 2 with DLAB reads IIR, not 0): not a ST16C650 or 16650.
        u.write(reg::LCR, 0x80);
        assert_ne!(u.read(reg::IIR_FCR), 0);
        u.write(reg::LCR, 0xBF);
        assert_ne!(u.read(reg::IIR_FCR), 0);
        // Not a 16750: IIR bit 5 stays clear with the 64-byte FIFO bit, DLAB or not.
        u.write(reg::LCR, 0);
        u.write(reg::IIR_FCR, 0x21);
        assert_eq!(u.read(reg::IIR_FCR) >> 5, 6);
        u.write(reg::LCR, LCR_DLAB);
        u.write(reg::IIR_FCR, 0x21);
        assert_eq!(u.read(reg::IIR_FCR) >> 5, 6);
        u.write(reg::LCR, 0);
        // IER bit 6 (XScale UUE) does not stick.
        u.write(reg::IER, 0x40);
        assert_eq!(u.read(reg::IER) & 0x40, 0);
        // The scratch register holds a value (8250/16450 check).
        u.write(reg::SCR, 0xA5);
        assert_eq!(u.read(reg::SCR), 0xA5);
        u.write(reg::SCR, 0x5A);
        assert_eq!(u.read(reg::SCR), 0x5A);
    }

    #[test]
    fn loopback_modem_lines_follow_the_outputs() {
        let mut u = Uart16550::new();
        u.write(reg::MCR, MCR_LOOP | 0x0F);
        assert_eq!(u.read(reg::MSR), 0xF0);
        u.write(reg::MCR, MCR_LOOP | 0x02);
        assert_eq!(u.read(reg::MSR), 0x10);
        u.write(reg::MCR, 0);
        assert_eq!(u.read(reg::MSR), MSR_CONNECTED);
    }

    /// Linux's 8250 driver on a port without an IRQ polls IIR from a timer and sends only
    /// while IIR reports an interrupt (`serial8250_handle_irq`): THRE must be reported
    /// while it wants to send (IER.ETBEI set), once per emptied THR.
    #[test]
    fn thre_interrupt_shows_in_iir_while_enabled() {
        let mut u = Uart16550::new();
        u.write(reg::IIR_FCR, 0x01);
        assert_eq!(u.read(reg::IIR_FCR), 0xC1, "ETBEI off: nothing pending");
        u.write(reg::IER, IER_THRE);
        assert_eq!(u.read(reg::IIR_FCR), 0xC2, "enabling ETBEI with THR empty");
        assert_eq!(u.read(reg::IIR_FCR), 0xC1, "acknowledged by the read");
        assert_eq!(u.write(reg::DATA, b'x'), Some(b'x'));
        assert_eq!(u.read(reg::IIR_FCR), 0xC2, "THR empty again after the byte");
        u.write(reg::DATA, b'y');
        u.write(reg::IER, 0);
        assert_eq!(u.read(reg::IIR_FCR), 0xC1, "ETBEI off masks it");
        u.write(reg::IER, IER_THRE);
        assert_eq!(u.read(reg::IIR_FCR), 0xC2);
    }
}
