//! I/O and MSR intercept bitmaps, generated from what a partition may access directly.
//!
//! The configuration says which ports and MSRs a guest *may* touch; everything else must
//! exit to the hypervisor (fail closed). Both vendors use "bit set = intercept", so each
//! generator fills its bitmap with ones and clears exactly the allowed bits.
//!
//! # VMX (Intel SDM Vol. 3C)
//! * I/O bitmaps A and B (§25.6.4): one bit per port; A covers ports 0x0000–0x7FFF, B
//!   0x8000–0xFFFF; port `p` is bit `p % 8` of byte `p / 8` of its page. An access of
//!   several bytes exits if the bit of any byte it touches is set, and always exits if it
//!   wraps past 0xFFFF (§26.1.3, with "use I/O bitmaps" = 1).
//! * MSR bitmap (§25.6.9): one 4 KiB page of four 1 KiB bitmaps: read-low (MSRs
//!   0x0000_0000–0x0000_1FFF) at byte 0, read-high (0xC000_0000–0xC000_1FFF) at 1024,
//!   write-low at 2048, write-high at 3072; MSR `m` is bit `m % 8` of byte `m / 8` of its
//!   bitmap (offset from the range start). MSRs outside both ranges always exit.
//!
//! # SVM (AMD APM Vol. 2)
//! * IOPM (§15.10.1): 12 KiB, one bit per port from port 0; the third 4 KiB page exists
//!   for multi-byte accesses at the top ports, whose later bytes fall on bits 0x10000+.
//!   Those bits stay set, so an access crossing 0xFFFF is intercepted as on VMX.
//! * MSRPM (§15.11): 8 KiB, two bits per MSR (read at even bit `2n`, write at `2n + 1`) in
//!   three 2 KiB vectors: MSRs 0x0000_0000–0x0000_1FFF at byte 0x000, 0xC000_0000–0xC000_1FFF
//!   at 0x800, 0xC001_0000–0xC001_1FFF at 0x1000; 0x1800–0x1FFF is reserved (left all ones).
//!   MSRs outside these ranges are always intercepted.
//!
//! An MSR in the AMD-only range 0xC001_0000–0xC001_1FFF can be allowed; on VMX it simply
//! keeps exiting (fail closed). MSRs that neither bitmap can describe (e.g. the Hyper-V
//! synthetic MSRs at 0x4000_0000) are rejected when allowed, so the configuration cannot
//! promise direct access that the hardware would not give.

/// Most port ranges an [`IoPermissions`] holds.
pub const MAX_IO_RANGES: usize = 32;
/// Most MSRs each of the read and write sets of an [`MsrPermissions`] holds.
pub const MAX_MSRS: usize = 128;

/// Why a permission could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitmapError {
    /// [`MAX_IO_RANGES`] ranges already held.
    TooManyRanges,
    /// A port range that is empty or runs past port 0xFFFF.
    BadRange {
        /// First port.
        base: u16,
        /// Number of ports.
        count: u16,
    },
    /// [`MAX_MSRS`] MSRs already in the set.
    TooManyMsrs,
    /// Neither the VMX nor the SVM bitmap has a bit for this MSR.
    MsrNotInBitmap {
        /// The MSR index.
        msr: u32,
    },
}

/// Sets every bit of `bytes`, then clears bit `i` for each `i` that `allowed` yields and
/// that lies inside.
fn clear_bit(bytes: &mut [u8], bit: usize) {
    if let Some(b) = bytes.get_mut(bit / 8) {
        *b &= !(1 << (bit % 8));
    }
}

/// The I/O ports a guest may access directly; all others are intercepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoPermissions {
    ranges: [(u16, u16); MAX_IO_RANGES],
    len: usize,
}

impl Default for IoPermissions {
    fn default() -> Self {
        Self::new()
    }
}

impl IoPermissions {
    /// No port allowed.
    pub const fn new() -> Self {
        Self { ranges: [(0, 0); MAX_IO_RANGES], len: 0 }
    }

    /// Allows the `count` ports from `base` (the configuration's `base`/`count` form).
    /// Fails for `count == 0`, for a range past 0xFFFF, or when [`MAX_IO_RANGES`] ranges
    /// are already held.
    pub fn allow(&mut self, base: u16, count: u16) -> Result<(), BitmapError> {
        let bad = BitmapError::BadRange { base, count };
        let last = count.checked_sub(1).and_then(|c| base.checked_add(c)).ok_or(bad)?;
        self.allow_inclusive(base, last)
    }

    /// Allows ports `first..=last` (this form can also express all 65536 ports).
    pub fn allow_inclusive(&mut self, first: u16, last: u16) -> Result<(), BitmapError> {
        if last < first {
            return Err(BitmapError::BadRange { base: first, count: 0 });
        }
        let slot = self.ranges.get_mut(self.len).ok_or(BitmapError::TooManyRanges)?;
        *slot = (first, last);
        self.len += 1;
        Ok(())
    }

    /// Builder form of [`allow`](Self::allow).
    pub fn with(mut self, base: u16, count: u16) -> Result<Self, BitmapError> {
        self.allow(base, count)?;
        Ok(self)
    }

    /// The allowed ranges (inclusive), in insertion order.
    pub fn ranges(&self) -> &[(u16, u16)] {
        self.ranges.get(..self.len).unwrap_or(&[])
    }

    /// Whether `port` is allowed.
    pub fn allows(&self, port: u16) -> bool {
        self.ranges().iter().any(|&(f, l)| f <= port && port <= l)
    }

    fn allowed_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ranges().iter().flat_map(|&(f, l)| f..=l)
    }

    /// Fills VMX I/O bitmaps A (ports 0x0000–0x7FFF) and B (0x8000–0xFFFF).
    pub fn vmx_bitmaps(&self, a: &mut [u8; 4096], b: &mut [u8; 4096]) {
        a.fill(0xFF);
        b.fill(0xFF);
        for port in self.allowed_ports() {
            let p = usize::from(port);
            if p < 0x8000 { clear_bit(a, p) } else { clear_bit(b, p - 0x8000) }
        }
    }

    /// Fills the SVM I/O permission map (12 KiB).
    pub fn svm_iopm(&self, iopm: &mut [u8; 12288]) {
        iopm.fill(0xFF);
        for port in self.allowed_ports() {
            clear_bit(iopm, usize::from(port));
        }
    }
}

/// Byte offset of the VMX read bitmap for `msr` and the MSR's bit within it.
fn vmx_msr_slot(msr: u32) -> Option<(usize, usize)> {
    match msr {
        0..=0x1FFF => Some((0, msr as usize)),
        0xC000_0000..=0xC000_1FFF => Some((1024, (msr - 0xC000_0000) as usize)),
        _ => None,
    }
}

/// Byte offset of the SVM MSRPM vector for `msr` and the MSR's index within it.
fn svm_msr_slot(msr: u32) -> Option<(usize, usize)> {
    match msr {
        0..=0x1FFF => Some((0, msr as usize)),
        0xC000_0000..=0xC000_1FFF => Some((0x800, (msr - 0xC000_0000) as usize)),
        0xC001_0000..=0xC001_1FFF => Some((0x1000, (msr - 0xC001_0000) as usize)),
        _ => None,
    }
}

/// A small set of MSR indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MsrSet {
    msrs: [u32; MAX_MSRS],
    len: usize,
}

impl MsrSet {
    const fn new() -> Self {
        Self { msrs: [0; MAX_MSRS], len: 0 }
    }

    fn as_slice(&self) -> &[u32] {
        self.msrs.get(..self.len).unwrap_or(&[])
    }

    fn insert(&mut self, msr: u32) -> Result<(), BitmapError> {
        if svm_msr_slot(msr).is_none() {
            return Err(BitmapError::MsrNotInBitmap { msr });
        }
        if self.as_slice().contains(&msr) {
            return Ok(());
        }
        let slot = self.msrs.get_mut(self.len).ok_or(BitmapError::TooManyMsrs)?;
        *slot = msr;
        self.len += 1;
        Ok(())
    }
}

/// The MSRs a guest may read or write directly; all other accesses are intercepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsrPermissions {
    read: MsrSet,
    write: MsrSet,
}

impl Default for MsrPermissions {
    fn default() -> Self {
        Self::new()
    }
}

impl MsrPermissions {
    /// No MSR allowed.
    pub const fn new() -> Self {
        Self { read: MsrSet::new(), write: MsrSet::new() }
    }

    /// Allows reading `msr` (allowing it twice is harmless).
    pub fn allow_read(&mut self, msr: u32) -> Result<(), BitmapError> {
        self.read.insert(msr)
    }

    /// Allows writing `msr`.
    pub fn allow_write(&mut self, msr: u32) -> Result<(), BitmapError> {
        self.write.insert(msr)
    }

    /// Allows reading and writing `msr`.
    pub fn allow_read_write(&mut self, msr: u32) -> Result<(), BitmapError> {
        self.allow_read(msr)?;
        self.allow_write(msr)
    }

    /// MSRs the guest may read.
    pub fn readable(&self) -> &[u32] {
        self.read.as_slice()
    }

    /// MSRs the guest may write.
    pub fn writable(&self) -> &[u32] {
        self.write.as_slice()
    }

    /// Fills the VMX MSR bitmap page.
    pub fn vmx_bitmap(&self, page: &mut [u8; 4096]) {
        page.fill(0xFF);
        for (set, write_offset) in [(&self.read, 0), (&self.write, 2048)] {
            for &msr in set.as_slice() {
                if let Some((base, index)) = vmx_msr_slot(msr) {
                    clear_bit(page, (base + write_offset) * 8 + index);
                }
            }
        }
    }

    /// Fills the SVM MSR permission map (8 KiB).
    pub fn svm_msrpm(&self, pm: &mut [u8; 8192]) {
        pm.fill(0xFF);
        for (set, write_bit) in [(&self.read, 0), (&self.write, 1)] {
            for &msr in set.as_slice() {
                if let Some((base, index)) = svm_msr_slot(msr) {
                    clear_bit(pm, base * 8 + 2 * index + write_bit);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zero_bits(bytes: &[u8]) -> usize {
        bytes.iter().map(|b| b.count_zeros() as usize).sum()
    }

    #[test]
    fn io_vmx_exact_bits() {
        let io = IoPermissions::new().with(0x3F8, 8).unwrap().with(0x80, 1).unwrap().with(0xFFFF, 1).unwrap();
        let (mut a, mut b) = ([0u8; 4096], [0u8; 4096]);
        io.vmx_bitmaps(&mut a, &mut b);
        assert_eq!(a[0x3F8 / 8], 0x00); // 0x3F8..=0x3FF is exactly byte 0x7F
        assert_eq!(a[0x80 / 8], 0xFE); // port 0x80: byte 0x10, bit 0
        assert_eq!(b[0xFFF], 0x7F); // port 0xFFFF: bitmap B byte 0xFFF, bit 7
        assert_eq!(a[0x3F0 / 8], 0xFF); // 0x3F0..0x3F7 still exit
        assert_eq!(zero_bits(&a) + zero_bits(&b), 10);
        assert!(io.allows(0x3FA) && !io.allows(0x3F7) && !io.allows(0x81));
    }

    #[test]
    fn io_svm_exact_bits() {
        let io = IoPermissions::new().with(0x3F8, 1).unwrap().with(0x80, 1).unwrap().with(0xFFFF, 1).unwrap();
        let mut iopm = [0u8; 12288];
        io.svm_iopm(&mut iopm);
        assert_eq!(iopm[0x7F], 0xFE);
        assert_eq!(iopm[0x10], 0xFE);
        assert_eq!(iopm[0x1FFF], 0x7F);
        assert!(iopm[0x2000..].iter().all(|&b| b == 0xFF)); // crossing 0xFFFF intercepts
        assert_eq!(zero_bits(&iopm), 3);
    }

    #[test]
    fn io_full_range_and_limits() {
        let mut io = IoPermissions::new();
        io.allow_inclusive(0, 0xFFFF).unwrap();
        let (mut a, mut b) = ([0xAAu8; 4096], [0u8; 4096]);
        io.vmx_bitmaps(&mut a, &mut b);
        assert!(a.iter().chain(b.iter()).all(|&x| x == 0));
        let mut io = IoPermissions::new();
        assert_eq!(io.allow(5, 0), Err(BitmapError::BadRange { base: 5, count: 0 }));
        assert_eq!(io.allow(0xFFFF, 2), Err(BitmapError::BadRange { base: 0xFFFF, count: 2 }));
        assert_eq!(io.allow_inclusive(5, 4), Err(BitmapError::BadRange { base: 5, count: 0 }));
        io.allow(0xFFF0, 0x10).unwrap();
        assert_eq!(io.ranges(), &[(0xFFF0, 0xFFFF)]);
        for i in 1..MAX_IO_RANGES as u16 {
            io.allow(i * 2, 1).unwrap();
        }
        assert_eq!(io.allow(0x100, 1), Err(BitmapError::TooManyRanges));
        assert_eq!(io.ranges().len(), MAX_IO_RANGES);
        // Nothing allowed: everything intercepts.
        let mut iopm = [0u8; 12288];
        IoPermissions::new().svm_iopm(&mut iopm);
        assert!(iopm.iter().all(|&x| x == 0xFF));
    }

    fn sample() -> MsrPermissions {
        let mut m = MsrPermissions::new();
        m.allow_read(0x10).unwrap(); // TSC: read only
        m.allow_read_write(0x80B).unwrap(); // x2APIC EOI
        m.allow_write(0x830).unwrap(); // x2APIC ICR: write only
        m.allow_read_write(0xC000_0080).unwrap(); // EFER
        m
    }

    #[test]
    fn msr_vmx_exact_bits() {
        let mut page = [0u8; 4096];
        sample().vmx_bitmap(&mut page);
        assert_eq!(page[0x10 / 8], 0xFE); // read-low, MSR 0x10: byte 2 bit 0
        assert_eq!(page[2048 + 0x10 / 8], 0xFF); // TSC writes exit
        assert_eq!(page[0x80B / 8], !(1 << 3)); // byte 0x101 bit 3
        assert_eq!(page[2048 + 0x80B / 8], !(1 << 3));
        assert_eq!(page[0x830 / 8], 0xFF); // ICR reads exit
        assert_eq!(page[2048 + 0x106], 0xFE); // ICR writes pass: byte 0x106 bit 0
        assert_eq!(page[1024 + 0x10], 0xFE); // EFER read-high: byte 0x10 bit 0
        assert_eq!(page[3072 + 0x10], 0xFE); // EFER write-high
        assert_eq!(zero_bits(&page), 6);
    }

    #[test]
    fn msr_svm_exact_bits() {
        let mut pm = [0u8; 8192];
        sample().svm_msrpm(&mut pm);
        assert_eq!(pm[4], 0xFE); // MSR 0x10: bits 32 (read) / 33 (write) → byte 4
        assert_eq!(pm[0x202], 0x3F); // MSR 0x80B: bits 0x1016/0x1017 → byte 0x202 bits 6, 7
        assert_eq!(pm[0x20C], 0xFD); // MSR 0x830: write bit 0x1061 → byte 0x20C bit 1
        assert_eq!(pm[0x820], 0xFC); // EFER: vector 0x800, bits 0x100/0x101 → byte 0x820
        assert_eq!(zero_bits(&pm), 6);
    }

    #[test]
    fn msr_ranges_and_limits() {
        let mut m = MsrPermissions::new();
        assert_eq!(m.allow_read(0x4000_0000), Err(BitmapError::MsrNotInBitmap { msr: 0x4000_0000 }));
        assert_eq!(m.allow_write(0x2000), Err(BitmapError::MsrNotInBitmap { msr: 0x2000 }));
        m.allow_read_write(0xC001_0015).unwrap(); // AMD-only range: SVM bit, VMX keeps exiting
        m.allow_read(0xC000_1FFF).unwrap();
        m.allow_read(0x1FFF).unwrap();
        let mut page = [0u8; 4096];
        m.vmx_bitmap(&mut page);
        assert_eq!(page[1023], 0x7F);
        assert_eq!(page[2047], 0x7F);
        assert_eq!(zero_bits(&page), 2);
        let mut pm = [0u8; 8192];
        m.svm_msrpm(&mut pm);
        assert_eq!(pm[0x1000 + 0x15 * 2 / 8], !(0b11 << 2)); // 0xC0010015 bits 42/43 of vector 3
        assert_eq!(pm[0x7FF], 0xBF); // 0x1FFF read bit 0x3FFE → byte 0x7FF bit 6
        assert_eq!(pm[0xFFF], 0xBF);
        assert!(pm[0x1800..].iter().all(|&b| b == 0xFF));
        let mut m = MsrPermissions::new();
        for i in 0..MAX_MSRS as u32 {
            m.allow_read(i).unwrap();
            m.allow_read(i).unwrap(); // duplicates do not use slots
        }
        assert_eq!(m.allow_read(0x1000), Err(BitmapError::TooManyMsrs));
        m.allow_write(0x1000).unwrap();
        assert_eq!((m.readable().len(), m.writable().len()), (MAX_MSRS, 1));
    }
}

/// A vCPU's three MSR bitmaps (VMX) or permission maps (SVM), by physical address, and the
/// two facts that choose between them: whether its local APIC is in x2APIC mode (else the
/// x2APIC registers must exit and get #GP) and whether its TSC is offset (then the TSC
/// deadline must exit to be converted between guest and hardware time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsrBitmapChoice {
    /// x2APIC mode, TSC not offset: the x2APIC registers and TSC deadline pass through.
    pub x2apic: u64,
    /// x2APIC mode with an offset TSC: as `x2apic`, but the TSC deadline exits.
    pub x2apic_tsc_offset: u64,
    /// xAPIC mode or disabled: no x2APIC register and no TSC deadline passes through.
    pub apic_trap: u64,
    /// The vCPU's local APIC is in x2APIC mode.
    pub x2apic_mode: bool,
    /// The vCPU's TSC is offset.
    pub tsc_offset: bool,
}

impl MsrBitmapChoice {
    /// The three bitmaps, for a vCPU that starts as after reset: xAPIC mode, TSC not offset.
    pub const fn at_reset(x2apic: u64, x2apic_tsc_offset: u64, apic_trap: u64) -> Self {
        MsrBitmapChoice { x2apic, x2apic_tsc_offset, apic_trap, x2apic_mode: false, tsc_offset: false }
    }

    /// The bitmap for the current facts (the trap bitmap intercepts the TSC deadline too).
    pub const fn current(&self) -> u64 {
        match (self.x2apic_mode, self.tsc_offset) {
            (false, _) => self.apic_trap,
            (true, false) => self.x2apic,
            (true, true) => self.x2apic_tsc_offset,
        }
    }
}

#[cfg(test)]
mod choice_tests {
    use super::MsrBitmapChoice;

    #[test]
    fn the_apic_mode_and_the_tsc_offset_choose_the_bitmap() {
        let mut choice = MsrBitmapChoice::at_reset(0x1000, 0x2000, 0x3000);
        assert_eq!(choice.current(), 0x3000, "xAPIC mode at reset: the trap bitmap");
        choice.tsc_offset = true;
        assert_eq!(choice.current(), 0x3000, "the trap bitmap also intercepts the TSC deadline");
        choice.x2apic_mode = true;
        assert_eq!(choice.current(), 0x2000);
        choice.tsc_offset = false;
        assert_eq!(choice.current(), 0x1000);
    }
}
