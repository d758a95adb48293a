//! Page-aligned buffers the hardware reads by physical address: VMXON region, VMCS, host
//! save area, I/O and MSR bitmaps (both backends use the same type, at their own sizes).

/// `BYTES` bytes (a multiple of 4 KiB), 4 KiB aligned and physically contiguous in an
/// identity-mapped hypervisor.
#[repr(C, align(4096))]
pub struct Pages<const BYTES: usize>(pub [u8; BYTES]);

/// One 4 KiB page.
pub type Page = Pages<4096>;

impl<const BYTES: usize> Pages<BYTES> {
    /// All zero.
    pub const fn zeroed() -> Self {
        Pages([0; BYTES])
    }

    /// Physical address (the hypervisor runs identity-mapped).
    pub fn address(&self) -> u64 {
        self.0.as_ptr() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_alignment() {
        assert_eq!(core::mem::size_of::<Page>(), 4096);
        assert_eq!(core::mem::align_of::<Pages<12288>>(), 4096);
        assert_eq!(core::mem::size_of::<Pages<8192>>(), 8192);
    }
}
