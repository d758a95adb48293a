//! The local APIC, in xAPIC (MMIO) or x2APIC (MSR) mode.
//!
//! The hypervisor uses its own local APIC only to start and signal CPUs. x2APIC is used
//! where the CPU has it; QEMU 7.2 TCG has none, so xAPIC MMIO stays a first-class path.
//! Register offsets: Intel SDM Vol. 3 Table 11-1 (xAPIC) and Table 11-6 (x2APIC MSR =
//! 0x800 + offset / 16). ICR layout: SDM Vol. 3 Figure 11-12.

use x86_64::registers::model_specific::Msr;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

const REG_ID: u32 = 0x20;
const REG_EOI: u32 = 0xb0;
const REG_SVR: u32 = 0xf0;
const REG_ESR: u32 = 0x280;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;

const SVR_SOFTWARE_ENABLE: u32 = 1 << 8;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;

/// Vector the APIC uses for spurious interrupts; its IDT entry just returns.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// Interrupt delivery modes (ICR bits 10:8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed = 0b000,
    Nmi = 0b100,
    Init = 0b101,
    Startup = 0b110,
}

/// One inter-processor interrupt, independent of the APIC mode that sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipi {
    pub mode: DeliveryMode,
    /// Vector (fixed), or start page number (startup); ignored for INIT and NMI.
    pub vector: u8,
    /// Physical APIC ID of the target.
    pub destination: u32,
}

impl Ipi {
    pub fn init(destination: u32) -> Self {
        Self { mode: DeliveryMode::Init, vector: 0, destination }
    }

    /// Start-up IPI: the target starts in real mode at `page * 4096`.
    pub fn startup(destination: u32, page: u8) -> Self {
        Self { mode: DeliveryMode::Startup, vector: page, destination }
    }

    /// A fixed interrupt with `vector` (16..=255).
    #[inline]
    pub fn fixed(destination: u32, vector: u8) -> Self {
        Self { mode: DeliveryMode::Fixed, vector, destination }
    }

    pub fn nmi(destination: u32) -> Self {
        Self { mode: DeliveryMode::Nmi, vector: 0, destination }
    }

    /// Low 32 bits of the ICR: vector, delivery mode, level assert (bit 14), physical
    /// destination, edge trigger, no shorthand.
    #[inline]
    pub fn icr_low(&self) -> u32 {
        const LEVEL_ASSERT: u32 = 1 << 14;
        u32::from(self.vector) | (self.mode as u32) << 8 | LEVEL_ASSERT
    }

    /// The 64-bit ICR value of x2APIC mode (destination in bits 63:32).
    #[inline]
    pub fn x2apic_icr(&self) -> u64 {
        u64::from(self.destination) << 32 | u64::from(self.icr_low())
    }

    /// The xAPIC ICR high word (8-bit destination in bits 31:24).
    #[inline]
    pub fn xapic_icr_high(&self) -> u32 {
        (self.destination & 0xff) << 24
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Registers in the 4 KiB page at this physical (identity-mapped) address.
    XApic {
        base: u64,
    },
    X2Apic,
}

/// This CPU's local APIC.
#[derive(Debug, Clone, Copy)]
pub struct LocalApic {
    mode: Mode,
}

impl LocalApic {
    /// Enables this CPU's local APIC, in x2APIC mode when `use_x2apic`, and software-enables
    /// it with the spurious vector.
    ///
    /// # Safety
    /// Must run at CPL 0 with the xAPIC page identity-mapped uncached; changes this CPU's APIC.
    pub unsafe fn enable(use_x2apic: bool) -> Self {
        let mut base_msr = Msr::new(IA32_APIC_BASE);
        // SAFETY: IA32_APIC_BASE exists on every CPU with a local APIC (all x86-64 CPUs).
        let base = unsafe { base_msr.read() };
        let mode = if use_x2apic {
            // SDM 11.12.5: xAPIC must be enabled before x2APIC; both bits may be set at once
            // from the enabled state.
            // SAFETY: setting the enable bits is the documented way to enter x2APIC mode.
            unsafe { base_msr.write(base | APIC_BASE_ENABLE | APIC_BASE_X2APIC) };
            Mode::X2Apic
        } else {
            if base & APIC_BASE_ENABLE == 0 {
                // SAFETY: enabling the xAPIC at its current base.
                unsafe { base_msr.write(base | APIC_BASE_ENABLE) };
            }
            Mode::XApic { base: base & APIC_BASE_ADDR_MASK }
        };
        let apic = Self { mode };
        let svr = apic.read(REG_SVR);
        apic.write(REG_SVR, svr | SVR_SOFTWARE_ENABLE | u32::from(SPURIOUS_VECTOR));
        apic
    }

    /// This CPU's local APIC, already enabled (by [`LocalApic::enable`]) in `mode`.
    ///
    /// # Safety
    /// As for `enable`: CPL 0, the xAPIC page identity-mapped uncached, and the APIC really
    /// in `mode`.
    #[inline]
    pub unsafe fn enabled(mode: Mode) -> Self {
        Self { mode }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// This CPU's APIC ID (full 32 bits in x2APIC mode, 8 bits in xAPIC mode).
    pub fn id(&self) -> u32 {
        match self.mode {
            Mode::X2Apic => self.read(REG_ID),
            Mode::XApic { .. } => self.read(REG_ID) >> 24,
        }
    }

    /// Counts the APIC timer's input clock (divide by 1, SDM Vol. 3A 11.5.4) while `wait`
    /// runs: a one-shot count from the maximum with the timer's LVT masked, so nothing is
    /// delivered, then stopped again. Returns the ticks counted (saturating at 2^32 - 1).
    pub fn timer_ticks_during(&self, wait: impl FnOnce()) -> u32 {
        const REG_LVT_TIMER: u32 = 0x320;
        const REG_INITIAL_COUNT: u32 = 0x380;
        const REG_CURRENT_COUNT: u32 = 0x390;
        const REG_DIVIDE: u32 = 0x3e0;
        const LVT_MASKED: u32 = 1 << 16;
        const DIVIDE_BY_1: u32 = 0b1011;
        self.write(REG_LVT_TIMER, LVT_MASKED);
        self.write(REG_DIVIDE, DIVIDE_BY_1);
        self.write(REG_INITIAL_COUNT, u32::MAX);
        wait();
        let current = self.read(REG_CURRENT_COUNT);
        self.write(REG_INITIAL_COUNT, 0);
        u32::MAX - current
    }

    /// Starts the APIC timer in periodic mode (SDM Vol. 3A 11.5.4: LVT timer bit 17), input
    /// clock divided by 1: an interrupt with `vector` every `ticks` input clocks.
    pub fn start_periodic_timer(&self, vector: u8, ticks: u32) {
        const REG_LVT_TIMER: u32 = 0x320;
        const REG_INITIAL_COUNT: u32 = 0x380;
        const REG_DIVIDE: u32 = 0x3e0;
        const LVT_PERIODIC: u32 = 1 << 17;
        const DIVIDE_BY_1: u32 = 0b1011;
        self.write(REG_DIVIDE, DIVIDE_BY_1);
        self.write(REG_LVT_TIMER, LVT_PERIODIC | u32::from(vector));
        self.write(REG_INITIAL_COUNT, ticks.max(1));
    }

    pub fn end_of_interrupt(&self) {
        self.write(REG_EOI, 0);
    }

    /// Sends an IPI and waits (bounded) until the xAPIC has accepted it.
    pub fn send(&self, ipi: Ipi) {
        // Clear stale errors so a failed delivery is not blamed on this IPI (SDM 11.5.3).
        self.write(REG_ESR, 0);
        self.send_unchecked(ipi);
    }

    /// [`send`](Self::send) without clearing the error status first: for the IPIs whose
    /// delivery nobody checks (a fixed interrupt to a running core), where the ESR write
    /// would be a second WRMSR per IPI for nothing.
    #[inline(always)]
    pub fn send_unchecked(&self, ipi: Ipi) {
        match self.mode {
            Mode::X2Apic => {
                // SAFETY: the x2APIC ICR MSR; writing it sends the IPI.
                unsafe { Msr::new(0x830).write(ipi.x2apic_icr()) };
            }
            Mode::XApic { .. } => {
                self.write(REG_ICR_HIGH, ipi.xapic_icr_high());
                self.write(REG_ICR_LOW, ipi.icr_low());
                let mut spins = 0u32;
                while self.read(REG_ICR_LOW) & ICR_DELIVERY_PENDING != 0 && spins < 1_000_000 {
                    spins += 1;
                    core::hint::spin_loop();
                }
            }
        }
    }

    #[inline]
    fn read(&self, reg: u32) -> u32 {
        match self.mode {
            // SAFETY: x2APIC register MSRs exist in x2APIC mode; reads have no side effects
            // for the registers this driver reads.
            Mode::X2Apic => unsafe { Msr::new(0x800 + (reg >> 4)).read() as u32 },
            // SAFETY: `enable` required the APIC page to be mapped; registers are 32-bit
            // aligned.
            Mode::XApic { base } => unsafe { core::ptr::read_volatile((base + u64::from(reg)) as *const u32) },
        }
    }

    #[inline]
    fn write(&self, reg: u32, value: u32) {
        match self.mode {
            // SAFETY: as in `read`.
            Mode::X2Apic => unsafe { Msr::new(0x800 + (reg >> 4)).write(u64::from(value)) },
            // SAFETY: as in `read`.
            Mode::XApic { base } => unsafe { core::ptr::write_volatile((base + u64::from(reg)) as *mut u32, value) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_ipi_encoding() {
        let ipi = Ipi::init(3);
        assert_eq!(ipi.icr_low(), 0x0000_4500);
        assert_eq!(ipi.xapic_icr_high(), 0x0300_0000);
        assert_eq!(ipi.x2apic_icr(), 0x0000_0003_0000_4500);
    }

    #[test]
    fn startup_ipi_carries_page_number() {
        let ipi = Ipi::startup(1, 0x08);
        assert_eq!(ipi.icr_low(), 0x0000_4608);
        assert_eq!(ipi.x2apic_icr() >> 32, 1);
    }

    #[test]
    fn nmi_and_wide_x2apic_destination() {
        let ipi = Ipi::nmi(0x1_0002);
        assert_eq!(ipi.icr_low(), 0x0000_4400);
        assert_eq!(ipi.x2apic_icr(), 0x0001_0002_0000_4400);
    }
}
