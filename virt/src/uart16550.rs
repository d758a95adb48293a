//! The partition's virtual console UART: the registers of a 16550A (National
//! Semiconductor PC16550D data sheet, "Registers") as a device that is always ready to send,
//! receives what the hypervisor hands it ([`Uart16550::receive`]: the console's keyboard
//! input for the partition the system file names), and whose interrupt line is connected
//! to nothing: its interrupt logic shows only in IIR, which a driver polls.
//!
//! The receiver is a 16-byte FIFO (one byte, the receiver buffer register, with the FIFOs
//! off, as on a 16450). A byte that arrives when it is full is lost and sets LSR.OE
//! (overrun), which a read of LSR clears; the bytes already in the FIFO are kept (data
//! sheet, LSR bit 1). Received data shows in LSR.DR and, with IER.ERBFI, in IIR as
//! "received data available" at or above the FIFO trigger level and as "character
//! timeout" below it: bytes are handed over only when the driver looks, long after they
//! arrived, so the four character times of the timeout have always passed.
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
/// LSR bit 0: data ready (a byte in RBR or the receive FIFO).
pub const LSR_DR: u8 = 0x01;
/// LSR bit 1: overrun error (a byte arrived with no room for it).
pub const LSR_OE: u8 = 0x02;
/// IIR bits 3:0 for "receiver line status" (priority 1: an overrun here).
pub const IIR_RLS: u8 = 0x06;
/// IIR bits 3:0 for "received data available" (priority 2).
pub const IIR_RDA: u8 = 0x04;
/// IIR bits 3:0 for "character timeout" (priority 2).
pub const IIR_TIMEOUT: u8 = 0x0C;
/// IER bit 0: enable the received data available interrupt (and the timeout).
pub const IER_RDA: u8 = 0x01;
/// IER bit 2: enable the receiver line status interrupt.
pub const IER_RLS: u8 = 0x04;
/// The 16550A's receive FIFO depth.
pub const RX_FIFO: usize = 16;
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
    /// The receive FIFO as a ring: `rx_len` bytes from `rx_head`.
    rx: [u8; RX_FIFO],
    rx_head: u8,
    rx_len: u8,
    /// FCR bits 7:6: the receive trigger level (1, 4, 8 or 14 bytes).
    rx_trigger: u8,
    /// LSR's receiver bits: DR while the FIFO holds a byte, OE from an overrun until LSR
    /// is read. Kept as they change, so an LSR read (a driver's most frequent access:
    /// before every byte it sends) costs no more than a load and a store.
    rx_status: u8,
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
        Uart16550 {
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            dll: 1,
            dlm: 0,
            fifos: false,
            thre: false,
            rx: [0; RX_FIFO],
            rx_head: 0,
            rx_len: 0,
            rx_trigger: 1,
            rx_status: 0,
        }
    }

    /// How many bytes the receiver holds: the FIFO's 16, or RBR's one with the FIFOs off.
    fn rx_capacity(&self) -> usize {
        if self.fifos { RX_FIFO } else { 1 }
    }

    /// Bytes waiting to be read.
    pub fn rx_pending(&self) -> usize {
        usize::from(self.rx_len)
    }

    /// A byte arriving at the receiver. Returns `false` when there was no room: the byte
    /// is lost and LSR.OE is set, as on the 16550A. In loopback mode the receiver is cut
    /// off from its input (data sheet, MCR bit 4) and the byte is dropped.
    pub fn receive(&mut self, byte: u8) -> bool {
        if self.mcr & MCR_LOOP != 0 {
            return true;
        }
        if self.rx_pending() >= self.rx_capacity() {
            self.rx_status |= LSR_OE;
            return false;
        }
        let tail = (usize::from(self.rx_head) + self.rx_pending()) % RX_FIFO;
        self.rx[tail] = byte;
        self.rx_len += 1;
        self.rx_status |= LSR_DR;
        true
    }

    /// Bytes the receiver has room for now (the hypervisor leaves the rest where they
    /// are, in the physical UART's FIFO, until the driver has read some).
    pub fn rx_room(&self) -> usize {
        self.rx_capacity().saturating_sub(self.rx_pending())
    }

    /// A byte was lost before it reached this receiver (the physical UART behind it
    /// overran): LSR.OE, as if it had been lost here.
    pub fn note_overrun(&mut self) {
        if self.mcr & MCR_LOOP == 0 {
            self.rx_status |= LSR_OE;
        }
    }

    /// Whether a read at `offset` looks at the receiver (RBR, IIR or LSR), the moment to
    /// hand the UART bytes that have arrived.
    pub fn read_polls_receiver(&self, offset: u16) -> bool {
        match offset {
            reg::DATA => !self.dlab(),
            reg::IIR_FCR | reg::LSR => true,
            _ => false,
        }
    }

    fn pop_rx(&mut self) -> u8 {
        if self.rx_len == 0 {
            // An empty RBR reads its last value on hardware; 0 here.
            return 0;
        }
        let byte = self.rx[usize::from(self.rx_head)];
        self.rx_head = ((usize::from(self.rx_head) + 1) % RX_FIFO) as u8;
        self.rx_len -= 1;
        if self.rx_len == 0 {
            self.rx_status &= !LSR_DR;
        }
        byte
    }

    fn clear_rx(&mut self) {
        self.rx_head = 0;
        self.rx_len = 0;
        self.rx_status &= !LSR_DR;
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    /// A read of the register at `offset` (0..=7; others read 0xFF, no register). Reading
    /// IIR acknowledges a THRE interrupt it reports.
    pub fn read(&mut self, offset: u16) -> u8 {
        match offset {
            reg::DATA if self.dlab() => self.dll,
            reg::DATA => self.pop_rx(),
            reg::IER if self.dlab() => self.dlm,
            // Bits 7:4 are always 0 on a 16550.
            reg::IER => self.ier & 0x0F,
            // In priority order (data sheet, Table IV): receiver line status, received
            // data (or its timeout), THRE; the modem lines never change.
            reg::IIR_FCR => {
                let fifos = if self.fifos { IIR_FIFOS_ENABLED } else { 0 };
                if self.rx_status & LSR_OE != 0 && self.ier & IER_RLS != 0 {
                    IIR_RLS | fifos
                } else if self.rx_len > 0 && self.ier & IER_RDA != 0 {
                    let level = if self.fifos { self.rx_trigger } else { 1 };
                    // Below the trigger level the timeout has always passed (module docs).
                    (if self.rx_len >= level { IIR_RDA } else { IIR_TIMEOUT }) | fifos
                } else if self.thre && self.ier & IER_THRE != 0 {
                    self.thre = false;
                    IIR_THRE | fifos
                } else {
                    IIR_NO_INTERRUPT | fifos
                }
            }
            reg::LCR => self.lcr,
            reg::MCR => self.mcr & 0x1F,
            // Reading LSR clears its error bits.
            reg::LSR => {
                let status = LSR_IDLE | self.rx_status;
                self.rx_status &= !LSR_OE;
                status
            }
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
            // FCR bit 0 enables the FIFOs (changing it empties them), bit 1 empties the
            // receive FIFO, bit 2 the transmit FIFO (always empty here); bits 7:6 set the
            // receive trigger level. The reset bits clear themselves.
            reg::IIR_FCR => {
                let fifos = value & 0x01 != 0;
                if fifos != self.fifos || value & 0x02 != 0 {
                    self.clear_rx();
                }
                self.fifos = fifos;
                self.rx_trigger = [1, 4, 8, 14][usize::from(value >> 6)];
            }
            reg::LCR => self.lcr = value,
            reg::MCR => self.mcr = value & 0x1F,
            reg::SCR => self.scr = value,
            // LSR and MSR are read-only (writes to them are factory tests).
            _ => {}
        }
        None
    }
}

/// When the partition that takes the console's input next looks at the physical UART:
/// at the first read of its receiver registers at least `interval` TSC ticks after the
/// last look, so a driver that polls LSR in a loop (for every byte it sends) costs one
/// physical UART read per interval, not per exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReceivePoll {
    next: u64,
}

impl ReceivePoll {
    /// A look is due at once.
    pub const fn new() -> Self {
        ReceivePoll { next: 0 }
    }

    /// Whether to look now (time `now`); if so, the next look is due `interval` later.
    pub fn due(&mut self, now: u64, interval: u64) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now.saturating_add(interval);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator for the randomized test (no crate needed for this).
    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn received_bytes_show_in_lsr_and_read_from_rbr_in_order() {
        let mut u = Uart16550::new();
        u.write(reg::IIR_FCR, 0x01);
        assert_eq!(u.read(reg::LSR) & LSR_DR, 0);
        assert!(u.receive(b'l'));
        assert!(u.receive(b's'));
        assert_eq!(u.read(reg::LSR), LSR_IDLE | LSR_DR);
        assert_eq!(u.read(reg::DATA), b'l');
        assert_eq!(u.read(reg::LSR), LSR_IDLE | LSR_DR);
        assert_eq!(u.read(reg::DATA), b's');
        assert_eq!(u.read(reg::LSR), LSR_IDLE, "drained");
        // With DLAB, offset 0 is the divisor latch and leaves the FIFO alone.
        u.receive(b'x');
        u.write(reg::LCR, LCR_DLAB);
        assert!(!u.read_polls_receiver(reg::DATA));
        assert_eq!(u.read(reg::DATA), 1);
        u.write(reg::LCR, 0x03);
        assert!(u.read_polls_receiver(reg::DATA));
        assert_eq!(u.read(reg::DATA), b'x');
    }

    #[test]
    fn a_full_fifo_keeps_its_bytes_and_flags_the_overrun_once() {
        let mut u = Uart16550::new();
        u.write(reg::IIR_FCR, 0x01);
        for b in 0..RX_FIFO as u8 {
            assert!(u.receive(b));
        }
        assert!(!u.receive(0xAA), "no room");
        assert!(!u.receive(0xBB));
        assert_eq!(u.read(reg::LSR), LSR_IDLE | LSR_DR | LSR_OE);
        assert_eq!(u.read(reg::LSR), LSR_IDLE | LSR_DR, "reading LSR clears OE");
        for b in 0..RX_FIFO as u8 {
            assert_eq!(u.read(reg::DATA), b);
        }
        assert_eq!(u.read(reg::LSR), LSR_IDLE);
    }

    #[test]
    fn without_fifos_the_receiver_holds_one_byte() {
        let mut u = Uart16550::new();
        assert!(u.receive(1));
        assert!(!u.receive(2));
        assert_eq!(u.read(reg::LSR), LSR_IDLE | LSR_DR | LSR_OE);
        assert_eq!(u.read(reg::DATA), 1);
        assert_eq!(u.read(reg::LSR), LSR_IDLE);
    }

    #[test]
    fn fcr_resets_empty_the_receive_fifo() {
        let mut u = Uart16550::new();
        u.write(reg::IIR_FCR, 0x01);
        u.receive(1);
        u.write(reg::IIR_FCR, 0x01 | 0x04);
        assert_eq!(u.rx_pending(), 1, "a transmit FIFO reset keeps received bytes");
        u.write(reg::IIR_FCR, 0x01 | 0x02);
        assert_eq!(u.rx_pending(), 0);
        u.receive(1);
        u.write(reg::IIR_FCR, 0);
        assert_eq!(u.rx_pending(), 0, "turning the FIFOs off empties them");
    }

    #[test]
    fn receive_poll_looks_once_per_interval() {
        let mut p = ReceivePoll::new();
        assert!(p.due(5, 100), "the first look is due at once");
        assert!(!p.due(6, 100));
        assert!(!p.due(104, 100));
        assert!(p.due(105, 100));
        assert!(!p.due(200, 100));
        assert!(p.due(u64::MAX, 100));
        assert!(p.due(u64::MAX, 100), "saturates rather than wrapping to the past");
    }

    #[test]
    fn room_and_a_physical_overrun() {
        let mut u = Uart16550::new();
        assert_eq!(u.rx_room(), 1);
        u.write(reg::IIR_FCR, 0x01);
        u.receive(1);
        assert_eq!(u.rx_room(), RX_FIFO - 1);
        u.note_overrun();
        assert_eq!(u.read(reg::LSR), LSR_IDLE | LSR_DR | LSR_OE);
        assert_eq!(u.read(reg::LSR), LSR_IDLE | LSR_DR);
    }

    #[test]
    fn loopback_cuts_the_receiver_off() {
        let mut u = Uart16550::new();
        u.write(reg::MCR, MCR_LOOP);
        assert!(u.receive(b'a'));
        assert_eq!(u.read(reg::LSR), LSR_IDLE);
    }

    /// Linux's 8250 driver on a port without an IRQ (`serial8250_timeout` ->
    /// `serial8250_handle_irq`) reads IIR and looks at the receiver only when IIR reports
    /// an interrupt: received data must show there while IER.ERBFI is set, above the
    /// receive-status and below nothing else.
    #[test]
    fn received_data_shows_in_iir_by_priority_and_trigger_level() {
        let mut u = Uart16550::new();
        // Linux's 16550A setup: FIFOs on, receive trigger at 8 bytes.
        u.write(reg::IIR_FCR, 0x81);
        u.receive(b'a');
        assert_eq!(u.read(reg::IIR_FCR), 0xC1, "ERBFI off: nothing pending");
        u.write(reg::IER, IER_RDA | IER_RLS | IER_THRE);
        assert_eq!(u.read(reg::IIR_FCR), 0xC0 | IIR_TIMEOUT, "below the trigger level");
        for b in 0..7 {
            u.receive(b);
        }
        assert_eq!(u.read(reg::IIR_FCR), 0xC0 | IIR_RDA, "at the trigger level");
        for _ in 0..RX_FIFO {
            u.receive(0);
        }
        assert_eq!(u.read(reg::IIR_FCR), 0xC0 | IIR_RLS, "an overrun comes first");
        assert_eq!(u.read(reg::LSR) & LSR_OE, LSR_OE);
        while u.read(reg::LSR) & LSR_DR != 0 {
            u.read(reg::DATA);
        }
        assert_eq!(u.read(reg::IIR_FCR), 0xC0 | IIR_THRE, "then THRE, still pending");
        assert_eq!(u.read(reg::IIR_FCR), 0xC1);
    }

    /// Random arrivals and reads against a plain queue model: every byte is either read
    /// in order or counted as an overrun, and the FIFO never holds more than 16.
    #[test]
    fn randomized_arrivals_match_a_bounded_queue() {
        let mut seed = 0x1234_5678_9ABC_DEF1u64;
        for _ in 0..200 {
            let mut u = Uart16550::new();
            u.write(reg::IIR_FCR, 0x01);
            let mut model = std::collections::VecDeque::new();
            let mut lost = 0u32;
            let mut seen_oe = 0u32;
            for step in 0..500u32 {
                match next(&mut seed) % 3 {
                    0 => {
                        let byte = step as u8;
                        if model.len() < RX_FIFO {
                            model.push_back(byte);
                            assert!(u.receive(byte));
                        } else {
                            lost += 1;
                            assert!(!u.receive(byte));
                        }
                    }
                    1 => {
                        let lsr = u.read(reg::LSR);
                        seen_oe += u32::from(lsr & LSR_OE != 0);
                        assert_eq!(lsr & LSR_DR != 0, !model.is_empty());
                    }
                    _ => {
                        if let Some(b) = model.pop_front() {
                            assert_eq!(u.read(reg::DATA), b);
                        }
                    }
                }
                assert!(u.rx_pending() <= RX_FIFO);
            }
            assert_eq!(lost > 0, seen_oe > 0 || u.read(reg::LSR) & LSR_OE != 0);
        }
    }

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
