//! Synthetic MSRs and the layouts of the values written to them (reference §2, §2.3).
//!
//! The wrappers do not reject reserved bits. The TLFS marks them RsvdP (software preserves
//! them on read-modify-write); Bulkhead's registers reset them to 0 and read back what was
//! accepted, and refuse a write that sets one with #GP (`bulkhead_virt::hyperv_msr`).
//! `reserved_bits()` and `RESERVED_MASK` expose them.
//!
//! Bool setters take the field's name (`enabled`), getters are `is_`.

/// Guest OS identity; must be non-zero before the hypercall page can be enabled, and writing 0
/// disables the hypercall page (TLFS "Hypercall Interface").
pub const GUEST_OS_ID: u32 = 0x4000_0000;
/// Hypercall page control, see [`HypercallMsr`].
pub const HYPERCALL: u32 = 0x4000_0001;
/// Read-only index (0..N-1) of the reading virtual processor; Linux reads it on every CPU.
pub const VP_INDEX: u32 = 0x4000_0002;
/// 100 ns ticks since partition creation, monotonic across VPs; writes → #GP (TLFS timers).
pub const TIME_REF_COUNT: u32 = 0x4000_0020;
/// Reference TSC page control, see [`PageMsr`] and `reference_tsc::ReferenceTscPage`.
pub const REFERENCE_TSC: u32 = 0x4000_0021;
/// The TSC frequency in Hz; read-only (TLFS "Feature Discovery", `HV_ACCESS_FREQUENCY_MSRS`).
/// Linux takes it as the TSC frequency instead of calibrating (`hv_get_tsc_khz`).
pub const TSC_FREQUENCY: u32 = 0x4000_0022;
/// The local APIC timer's input frequency in Hz (before its divider); read-only. Linux
/// divides it by HZ for `lapic_timer_period` instead of calibrating the APIC timer.
pub const APIC_FREQUENCY: u32 = 0x4000_0023;
/// Guest crash parameters P0..P4 (TLFS "Guest Crash Enlightenment"); partition-wide, any
/// value. With [`CrashCtl::NOTIFY_MSG`] Linux puts the GPA of a page holding the panic text
/// in P3 and its length in P4.
pub const CRASH_P0: u32 = 0x4000_0100;
pub const CRASH_P4: u32 = 0x4000_0104;
/// Guest crash control, see [`CrashCtl`].
pub const CRASH_CTL: u32 = 0x4000_0105;
/// VP assist page, a [`PageMsr`]; Linux writes it without checking any CPUID bit (§1.4).
pub const VP_ASSIST_PAGE: u32 = 0x4000_0073;
/// SynIC control, see [`Scontrol`].
pub const SCONTROL: u32 = 0x4000_0080;
/// Read-only SynIC version ([`SYNIC_VERSION`]); writes → #GP.
pub const SVERSION: u32 = 0x4000_0081;
/// Event flags page, a [`PageMsr`].
pub const SIEFP: u32 = 0x4000_0082;
/// Message page, a [`PageMsr`].
pub const SIMP: u32 = 0x4000_0083;
/// End of message: a write makes the hypervisor redeliver a pending message; reads return 0.
pub const EOM: u32 = 0x4000_0084;
/// SINT0..SINT15, see [`sint`] and [`Sint`].
pub const SINT_FIRST: u32 = 0x4000_0090;
pub const SINT_LAST: u32 = 0x4000_009F;
/// Number of synthetic interrupt sources per virtual processor.
pub const SINT_COUNT: u8 = 16;
const _: () = assert!(SINT_LAST - SINT_FIRST + 1 == SINT_COUNT as u32);

/// Value of [`SVERSION`] (KVM's HV_SYNIC_VERSION_1).
pub const SYNIC_VERSION: u64 = 1;

/// MSR number of SINT`n`. Panics if `n` is 16 or more (a compile error in const context).
pub const fn sint(n: u8) -> u32 {
    assert!(n < SINT_COUNT, "SINT index out of range");
    SINT_FIRST + n as u32
}

/// The SINT index of an MSR number, if it is one of SINT0..SINT15.
pub const fn sint_index(msr: u32) -> Option<u8> {
    if msr >= SINT_FIRST && msr <= SINT_LAST { Some((msr - SINT_FIRST) as u8) } else { None }
}

const ENABLE: u64 = 1 << 0;
const PAGE_SHIFT: u32 = 12;

/// The accessors every page-placing register shares (enable bit 0, GPFN in 63:12).
macro_rules! page_register {
    () => {
        pub const fn decode(raw: u64) -> Self {
            Self(raw)
        }

        pub const fn value(self) -> u64 {
            self.0
        }

        pub const fn enabled(self, enabled: bool) -> Self {
            Self(if enabled { self.0 | ENABLE } else { self.0 & !ENABLE })
        }

        pub const fn is_enabled(self) -> bool {
            self.0 & ENABLE != 0
        }

        pub const fn gpfn(self) -> u64 {
            self.0 >> PAGE_SHIFT
        }

        /// Guest-physical address of the page.
        pub const fn gpa(self) -> u64 {
            self.gpfn() << PAGE_SHIFT
        }

        pub const fn reserved_bits(self) -> u64 {
            self.0 & Self::RESERVED_MASK
        }
    };
}

/// Value of [`HYPERCALL`]: bit 0 enable, bit 1 locked (sticky until partition reset), 11:2
/// RsvdP, 63:12 GPFN of the hypercall page. Enable stays 0 while GUEST_OS_ID is 0; a GPFN
/// outside the partition → #GP (TLFS "Hypercall Interface"; reference §2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HypercallMsr(u64);

impl HypercallMsr {
    const LOCKED: u64 = 1 << 1;
    /// The RsvdP bits 11:2.
    pub const RESERVED_MASK: u64 = 0xFFC;

    /// Disabled and unlocked, pointing at `gpfn` (bits above the 52-bit field are dropped).
    pub const fn new(gpfn: u64) -> Self {
        Self(gpfn << PAGE_SHIFT)
    }

    page_register!();

    pub const fn locked(self, locked: bool) -> Self {
        Self(if locked { self.0 | Self::LOCKED } else { self.0 & !Self::LOCKED })
    }

    pub const fn is_locked(self) -> bool {
        self.0 & Self::LOCKED != 0
    }
}

/// Value of an MSR that places one guest page: [`SIMP`], [`SIEFP`], [`REFERENCE_TSC`],
/// [`VP_ASSIST_PAGE`]. Bit 0 enable, 11:1 RsvdP, 63:12 GPFN; reset value 0 (reference §2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PageMsr(u64);

impl PageMsr {
    /// The RsvdP bits 11:1.
    pub const RESERVED_MASK: u64 = 0xFFE;
    pub const RESET: Self = Self(0);

    /// Disabled, pointing at `gpfn` (bits above the 52-bit field are dropped).
    pub const fn new(gpfn: u64) -> Self {
        Self(gpfn << PAGE_SHIFT)
    }

    page_register!();
}

/// Value of [`CRASH_CTL`] (Linux `union hv_crash_ctl_msr`): bit 63 CrashNotify (a write
/// with it reports the crash described by P0..P4), bit 62 CrashMessage (P3/P4 name a text
/// message), 61:0 reserved. A read returns the capabilities: the bits the hypervisor
/// accepts. Linux reads it once and hands over the panic text only if bit 62 is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CrashCtl(u64);

impl CrashCtl {
    pub const NOTIFY: u64 = 1 << 63;
    pub const NOTIFY_MSG: u64 = 1 << 62;
    /// Bits 61:0.
    pub const RESERVED_MASK: u64 = !(Self::NOTIFY | Self::NOTIFY_MSG);
    /// What a read returns: both capabilities.
    pub const CAPABILITIES: Self = Self(Self::NOTIFY | Self::NOTIFY_MSG);

    pub const fn decode(raw: u64) -> Self {
        Self(raw)
    }

    pub const fn value(self) -> u64 {
        self.0
    }

    /// The write reports a crash.
    pub const fn is_notify(self) -> bool {
        self.0 & Self::NOTIFY != 0
    }

    /// P3 holds the GPA of the crash text, P4 its length in bytes.
    pub const fn has_message(self) -> bool {
        self.0 & Self::NOTIFY_MSG != 0
    }
}

/// Value of a SINTx MSR (reference §2.3): 7:0 vector, 15:8 RsvdP, 16 masked, 17 AutoEOI,
/// 18 polling, 63:19 RsvdP (Linux gives bits 19/20 paravisor meanings that do not apply here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sint(u64);

impl Sint {
    const VECTOR_MASK: u64 = 0xFF;
    const MASKED: u64 = 1 << 16;
    const AUTO_EOI: u64 = 1 << 17;
    const POLLING: u64 = 1 << 18;
    /// The RsvdP bits 15:8 and 63:19.
    pub const RESERVED_MASK: u64 = !(Self::VECTOR_MASK | Self::MASKED | Self::AUTO_EOI | Self::POLLING);
    /// Value at VP creation and reset: masked, vector 0.
    pub const RESET: Self = Self(0x1_0000);
    /// Lowest vector a SINT may deliver; 0..=15 are reserved by the x86 architecture.
    pub const MIN_VECTOR: u8 = 16;

    /// Unmasked, no AutoEOI, no polling, delivering `vector`.
    pub const fn new(vector: u8) -> Self {
        Self(vector as u64)
    }

    pub const fn decode(raw: u64) -> Self {
        Self(raw)
    }

    pub const fn value(self) -> u64 {
        self.0
    }

    pub const fn masked(self, masked: bool) -> Self {
        Self(if masked { self.0 | Self::MASKED } else { self.0 & !Self::MASKED })
    }

    pub const fn auto_eoi(self, auto_eoi: bool) -> Self {
        Self(if auto_eoi { self.0 | Self::AUTO_EOI } else { self.0 & !Self::AUTO_EOI })
    }

    pub const fn polling(self, polling: bool) -> Self {
        Self(if polling { self.0 | Self::POLLING } else { self.0 & !Self::POLLING })
    }

    pub const fn vector(self) -> u8 {
        (self.0 & Self::VECTOR_MASK) as u8
    }

    pub const fn is_masked(self) -> bool {
        self.0 & Self::MASKED != 0
    }

    /// The hypervisor performs the EOI itself; the guest must not.
    pub const fn is_auto_eoi(self) -> bool {
        self.0 & Self::AUTO_EOI != 0
    }

    pub const fn is_polling(self) -> bool {
        self.0 & Self::POLLING != 0
    }

    pub const fn reserved_bits(self) -> u64 {
        self.0 & Self::RESERVED_MASK
    }

    /// Whether the vector is in 16..=255; the TLFS answers a write with another vector by #GP.
    pub const fn vector_valid(self) -> bool {
        self.vector() >= Self::MIN_VECTOR
    }

    /// Whether a WRMSR of this value must be accepted: a valid vector, or any vector while
    /// masked. The second case follows KVM (`synic_set_sint`): guests write back the reset
    /// value 0x10000, whose vector is 0, and must not take a #GP for it (reference §2.3).
    pub const fn write_allowed(self) -> bool {
        self.vector_valid() || self.is_masked()
    }
}

impl Default for Sint {
    fn default() -> Self {
        Self::RESET
    }
}

/// Value of [`SCONTROL`]: bit 0 enables the SynIC of this VP; 63:1 RsvdP; reset 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scontrol(u64);

impl Scontrol {
    /// The RsvdP bits 63:1.
    pub const RESERVED_MASK: u64 = !ENABLE;
    pub const RESET: Self = Self(0);

    pub const fn new(enabled: bool) -> Self {
        Self(if enabled { ENABLE } else { 0 })
    }

    pub const fn decode(raw: u64) -> Self {
        Self(raw)
    }

    pub const fn value(self) -> u64 {
        self.0
    }

    pub const fn is_enabled(self) -> bool {
        self.0 & ENABLE != 0
    }

    pub const fn reserved_bits(self) -> u64 {
        self.0 & Self::RESERVED_MASK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_numbers() {
        assert_eq!(
            [GUEST_OS_ID, HYPERCALL, VP_INDEX, TIME_REF_COUNT, REFERENCE_TSC, VP_ASSIST_PAGE],
            [0x4000_0000, 0x4000_0001, 0x4000_0002, 0x4000_0020, 0x4000_0021, 0x4000_0073]
        );
        assert_eq!(
            [SCONTROL, SVERSION, SIEFP, SIMP, EOM],
            [0x4000_0080, 0x4000_0081, 0x4000_0082, 0x4000_0083, 0x4000_0084]
        );
        assert_eq!(SYNIC_VERSION, 1);
        assert_eq!([TSC_FREQUENCY, APIC_FREQUENCY], [0x4000_0022, 0x4000_0023]);
        assert_eq!([CRASH_P0, CRASH_P4, CRASH_CTL], [0x4000_0100, 0x4000_0104, 0x4000_0105]);
    }

    #[test]
    fn crash_ctl() {
        assert_eq!(CrashCtl::CAPABILITIES.value(), 0xC000_0000_0000_0000);
        let both = CrashCtl::decode(0xC000_0000_0000_0000);
        assert!(both.is_notify() && both.has_message());
        let notify = CrashCtl::decode(1 << 63);
        assert!(notify.is_notify() && !notify.has_message());
        assert_eq!(CrashCtl::RESERVED_MASK, (1 << 62) - 1);
    }

    #[test]
    fn sint_numbers() {
        assert_eq!(sint(0), SINT_FIRST);
        assert_eq!(sint(0), 0x4000_0090);
        assert_eq!(sint(2), 0x4000_0092);
        assert_eq!(sint(15), SINT_LAST);
        assert_eq!(SINT_LAST, 0x4000_009F);
        for n in 0..SINT_COUNT {
            assert_eq!(sint_index(sint(n)), Some(n));
        }
        assert_eq!(sint_index(SINT_FIRST - 1), None);
        assert_eq!(sint_index(SINT_LAST + 1), None);
        assert_eq!(sint_index(EOM), None);
    }

    #[test]
    #[should_panic(expected = "SINT index out of range")]
    fn sint_number_out_of_range_panics() {
        let n = core::hint::black_box(16);
        sint(n);
    }

    #[test]
    fn hypercall_msr_decode() {
        let msr = HypercallMsr::decode(0x0000_0000_0012_3003);
        assert!(msr.is_enabled() && msr.is_locked());
        assert_eq!(msr.gpfn(), 0x123);
        assert_eq!(msr.gpa(), 0x12_3000);
        assert_eq!(msr.reserved_bits(), 0);
        let zero = HypercallMsr::default();
        assert!(!zero.is_enabled() && !zero.is_locked());
        assert_eq!(zero.gpfn(), 0);
    }

    #[test]
    fn hypercall_msr_encode_round_trip() {
        let msr = HypercallMsr::new(0xF_FFFF_FFFF_FFFF).enabled(true).locked(true);
        assert_eq!(msr.value(), 0xFFFF_FFFF_FFFF_F003);
        assert_eq!(HypercallMsr::decode(msr.value()), msr);
        assert_eq!(msr.enabled(false).locked(false).value(), 0xFFFF_FFFF_FFFF_F000);
        assert_eq!(HypercallMsr::new(0x1234).enabled(true).value(), 0x123_4001);
    }

    #[test]
    fn hypercall_msr_reserved_bits() {
        for bit in 2..12 {
            let msr = HypercallMsr::decode(1 << bit | 1);
            assert_eq!(msr.reserved_bits(), 1 << bit);
            assert!(msr.is_enabled() && !msr.is_locked());
            assert_eq!(msr.gpfn(), 0);
        }
    }

    #[test]
    fn page_msr_round_trip() {
        let msr = PageMsr::new(0xABCDE).enabled(true);
        assert_eq!(msr.value(), 0xABCD_E001);
        let decoded = PageMsr::decode(msr.value());
        assert!(decoded.is_enabled());
        assert_eq!((decoded.gpfn(), decoded.gpa()), (0xABCDE, 0xABCD_E000));
        assert!(!decoded.enabled(false).is_enabled());
        assert_eq!(PageMsr::RESET.value(), 0);
        assert_eq!(PageMsr::default(), PageMsr::RESET);
    }

    #[test]
    fn page_msr_reserved_bits() {
        for bit in 1..12 {
            let msr = PageMsr::decode(0x5000 | 1 << bit);
            assert_eq!(msr.reserved_bits(), 1 << bit);
            assert!(!msr.is_enabled());
            assert_eq!(msr.gpa(), 0x5000);
        }
    }

    #[test]
    fn sint_decode() {
        let sint = Sint::decode(0x7_00F3);
        assert_eq!(sint.vector(), 0xF3);
        assert!(sint.is_masked() && sint.is_auto_eoi() && sint.is_polling());
        assert_eq!(sint.reserved_bits(), 0);
        let reset = Sint::RESET;
        assert_eq!(reset.value(), 0x10000);
        assert_eq!(Sint::default(), reset);
        assert!(reset.is_masked() && !reset.is_auto_eoi() && !reset.is_polling());
        assert_eq!(reset.vector(), 0);
    }

    #[test]
    fn sint_encode_round_trip() {
        let sint = Sint::new(0xF3).masked(true).auto_eoi(true).polling(true);
        assert_eq!(sint.value(), 0x7_00F3);
        assert_eq!(Sint::decode(sint.value()), sint);
        assert_eq!(sint.masked(false).auto_eoi(false).polling(false), Sint::new(0xF3));
        assert_eq!(Sint::new(0x20).auto_eoi(true).value(), 0x2_0020);
    }

    #[test]
    fn sint_reserved_bits() {
        for bit in (8..16).chain(19..64) {
            let sint = Sint::decode(0x30 | 1 << bit);
            assert_eq!(sint.reserved_bits(), 1 << bit, "bit {bit}");
            assert_eq!(sint.vector(), 0x30);
            assert!(!sint.is_masked() && !sint.is_auto_eoi() && !sint.is_polling());
        }
        assert_eq!(Sint::RESERVED_MASK.count_ones(), 64 - 11);
    }

    #[test]
    fn sint_vector_bounds() {
        assert!(!Sint::new(0).vector_valid());
        assert!(!Sint::new(15).vector_valid());
        assert!(Sint::new(16).vector_valid());
        assert!(Sint::new(255).vector_valid());
        assert!(!Sint::new(15).write_allowed());
        assert!(Sint::new(15).masked(true).write_allowed());
        assert!(Sint::RESET.write_allowed());
        assert!(Sint::new(16).write_allowed());
        assert!(Sint::new(255).masked(true).write_allowed());
    }

    #[test]
    fn scontrol() {
        assert!(!Scontrol::RESET.is_enabled());
        assert_eq!(Scontrol::default(), Scontrol::RESET);
        assert_eq!(Scontrol::new(true).value(), 1);
        assert_eq!(Scontrol::new(false).value(), 0);
        let with_reserved = Scontrol::decode(0x8000_0000_0000_0003);
        assert!(with_reserved.is_enabled());
        assert_eq!(with_reserved.reserved_bits(), 0x8000_0000_0000_0002);
        assert_eq!(Scontrol::decode(Scontrol::new(true).value()), Scontrol::new(true));
    }
}
