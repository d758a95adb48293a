//! 16550-compatible UART (the PC's COM ports): polled transmit, no interrupts.
//!
//! Register map: PC16550D data sheet, section 8.
//! No crate fitted: `uart_16550` hard-wires port I/O and offers no embedded-io `Write`, and
//! our logger needs the register logic testable on the host.

use crate::port::ByteRegisters;
use core::convert::Infallible;

const THR: u16 = 0; // transmit holding (write), DLAB=0
const DLL: u16 = 0; // divisor latch low, DLAB=1
const IER: u16 = 1; // interrupt enable, DLAB=0
const DLM: u16 = 1; // divisor latch high, DLAB=1
const FCR: u16 = 2; // FIFO control (write)
const LCR: u16 = 3; // line control
const MCR: u16 = 4; // modem control
const LSR: u16 = 5; // line status

const LCR_DLAB: u8 = 1 << 7;
const LCR_8N1: u8 = 0b11;
const FCR_ENABLE_CLEAR: u8 = 0b111; // enable FIFOs, clear RX and TX
const MCR_DTR_RTS_OUT2: u8 = 0b1011;
const RBR: u16 = 0; // receive buffer (read), DLAB=0
const LSR_DATA_READY: u8 = 1 << 0;
const LSR_OVERRUN: u8 = 1 << 1;
const LSR_THR_EMPTY: u8 = 1 << 5;
const LSR_TRANSMITTER_EMPTY: u8 = 1 << 6;

/// The UART's input clock divided by 16: the highest baud rate.
pub const BASE_BAUD: u32 = 115_200;

/// Polls per byte before giving up on a transmitter that never empties (a UART that is not
/// there reads all-ones, which looks empty, so this only guards against stuck hardware).
const TX_SPIN_LIMIT: u32 = 100_000;

/// A 16550 reached through `R`.
pub struct Uart16550<R: ByteRegisters> {
    regs: R,
}

impl<R: ByteRegisters> Uart16550<R> {
    pub const fn new(regs: R) -> Self {
        Self { regs }
    }

    /// Programs 8N1 at `baud` with FIFOs on and interrupts off.
    pub fn init(&mut self, baud: u32) {
        let divisor = (BASE_BAUD / baud.clamp(1, BASE_BAUD)) as u16;
        self.regs.write(IER, 0);
        self.regs.write(LCR, LCR_DLAB);
        self.regs.write(DLL, divisor as u8);
        self.regs.write(DLM, (divisor >> 8) as u8);
        self.regs.write(LCR, LCR_8N1);
        self.regs.write(FCR, FCR_ENABLE_CLEAR);
        self.regs.write(MCR, MCR_DTR_RTS_OUT2);
    }

    /// Sends one byte, waiting (bounded) for room in the transmitter.
    pub fn write_byte(&mut self, byte: u8) {
        let mut spins = 0;
        while self.regs.read(LSR) & LSR_THR_EMPTY == 0 && spins < TX_SPIN_LIMIT {
            spins += 1;
            core::hint::spin_loop();
        }
        self.regs.write(THR, byte);
    }

    /// Waits (bounded) until every byte has left the transmitter, FIFO and shift register
    /// both: before the machine stops, or the last bytes are lost.
    pub fn drain(&mut self) {
        let mut spins = 0;
        while self.regs.read(LSR) & LSR_TRANSMITTER_EMPTY == 0 && spins < TX_SPIN_LIMIT * 16 {
            spins += 1;
            core::hint::spin_loop();
        }
    }

    /// Takes up to `max` received bytes without waiting, handing each to `sink`; returns
    /// whether the UART reported an overrun (a byte lost before this call) on the way.
    /// A UART that is not there reads all-ones, which looks like data with an overrun:
    /// so does a stuck one, which `max` keeps from holding the caller.
    pub fn receive(&mut self, max: usize, mut sink: impl FnMut(u8)) -> bool {
        let mut overrun = false;
        for _ in 0..max {
            let lsr = self.regs.read(LSR);
            overrun |= lsr & LSR_OVERRUN != 0;
            if lsr & LSR_DATA_READY == 0 {
                break;
            }
            sink(self.regs.read(RBR));
        }
        overrun
    }

    pub fn write_all_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_byte(b);
        }
    }
}

impl<R: ByteRegisters> embedded_io::ErrorType for Uart16550<R> {
    type Error = Infallible;
}

impl<R: ByteRegisters> embedded_io::Write for Uart16550<R> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        self.write_all_bytes(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        self.drain();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::fake::FakeRegisters;
    use embedded_io::Write;

    #[test]
    fn init_programs_divisor_and_8n1() {
        let mut uart = Uart16550::new(FakeRegisters::new(|_| 0xff));
        uart.init(115_200);
        assert_eq!(uart.regs.written(), &[(IER, 0), (LCR, 0x80), (DLL, 1), (DLM, 0), (LCR, 3), (FCR, 7), (MCR, 0x0b)]);
        let mut slow = Uart16550::new(FakeRegisters::new(|_| 0xff));
        slow.init(9600);
        assert_eq!(slow.regs.written()[2], (DLL, 12));
    }

    #[test]
    fn write_waits_for_transmitter_empty() {
        let mut polls = 0;
        let regs = FakeRegisters::new(move |off| {
            assert_eq!(off, LSR);
            polls += 1;
            if polls % 3 == 0 { LSR_THR_EMPTY } else { 0 }
        });
        let mut uart = Uart16550::new(regs);
        assert_eq!(uart.write(b"ok").unwrap(), 2);
        assert_eq!(uart.regs.written(), &[(THR, b'o'), (THR, b'k')]);
    }

    #[test]
    fn flush_waits_for_shift_register() {
        let mut polls = 0;
        let regs = FakeRegisters::new(move |_| {
            polls += 1;
            if polls > 5 { LSR_TRANSMITTER_EMPTY | LSR_THR_EMPTY } else { LSR_THR_EMPTY }
        });
        let mut uart = Uart16550::new(regs);
        uart.flush().unwrap();
        assert_eq!((uart.regs.reader)(LSR) & LSR_TRANSMITTER_EMPTY, LSR_TRANSMITTER_EMPTY);
    }

    #[test]
    fn receive_takes_what_is_ready_and_reports_overruns() {
        let fifo = [b'a', b'b', b'c'];
        let mut next = 0;
        let mut overrun = true;
        let regs = FakeRegisters::new(move |off| match off {
            LSR => {
                let lsr = (u8::from(next < fifo.len()) * LSR_DATA_READY) | (u8::from(overrun) * LSR_OVERRUN);
                overrun = false;
                lsr
            }
            RBR => {
                next += 1;
                fifo[next - 1]
            }
            _ => unreachable!(),
        });
        let mut uart = Uart16550::new(regs);
        let mut got = [0u8; 3];
        let mut n = 0;
        assert!(uart.receive(2, |b| {
            got[n] = b;
            n += 1;
        }));
        assert_eq!(&got[..n], b"ab", "at most `max`");
        assert!(!uart.receive(16, |b| {
            got[n] = b;
            n += 1;
        }));
        assert_eq!(&got[..n], b"abc");
        // A UART that is not there (all-ones) is bounded by `max`.
        let mut absent = Uart16550::new(FakeRegisters::new(|_| 0xff));
        let mut count = 0;
        assert!(absent.receive(16, |_| count += 1));
        assert_eq!(count, 16);
    }

    #[test]
    fn stuck_transmitter_does_not_hang() {
        let mut uart = Uart16550::new(FakeRegisters::new(|_| 0));
        uart.write_byte(b'x');
        assert_eq!(uart.regs.written(), &[(THR, b'x')]);
    }
}
