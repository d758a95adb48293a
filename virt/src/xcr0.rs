//! XCR0 as a partition may set it with XSETBV (SDM Vol. 1 13.3, Vol. 2B XSETBV): the
//! hypervisor executes XSETBV on the partition's behalf, so every value the processor would
//! refuse with #GP must be refused before, or the #GP would hit the hypervisor.

/// x87 state: always enabled.
pub const X87: u64 = 1 << 0;
/// SSE state.
pub const SSE: u64 = 1 << 1;
/// AVX state (the upper halves of the YMM registers).
pub const AVX: u64 = 1 << 2;
/// MPX state: BNDREGS and BNDCSR.
pub const MPX: u64 = 0b11 << 3;
/// AVX-512 state: opmask, ZMM_Hi256 and Hi16_ZMM.
pub const AVX512: u64 = 0b111 << 5;
/// AMX state: XTILECFG and XTILEDATA.
pub const AMX: u64 = 0b11 << 17;

/// Whether XSETBV of `value` to XCR number `xcr` is one the processor accepts, given the
/// XCR0 bits it `supported`s (CPUID.(EAX=0xD,ECX=0):EDX:EAX): XCR0 only; x87 always on;
/// AVX needs SSE; the three AVX-512 components all or none, and only with AVX; MPX's two
/// components together; AMX's two together; nothing the processor lacks.
pub fn xsetbv_allowed(xcr: u32, value: u64, supported: u64) -> bool {
    let all_or_none = |bits: u64| value & bits == 0 || value & bits == bits;
    xcr == 0
        && value & X87 != 0
        && (value & AVX == 0 || value & SSE != 0)
        && all_or_none(AVX512)
        && (value & AVX512 == 0 || value & AVX != 0)
        && all_or_none(MPX)
        && all_or_none(AMX)
        && value & !supported == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A processor with everything above (Sapphire Rapids: x87..AVX-512, AMX; no MPX).
    const ALL: u64 = X87 | SSE | AVX | MPX | AVX512 | AMX;

    #[test]
    fn x87_is_required_and_only_xcr0_exists() {
        assert!(xsetbv_allowed(0, X87, ALL));
        assert!(xsetbv_allowed(0, X87 | SSE | AVX, ALL));
        assert!(!xsetbv_allowed(0, 0, ALL));
        assert!(!xsetbv_allowed(0, SSE, ALL));
        assert!(!xsetbv_allowed(1, X87, ALL));
    }

    #[test]
    fn avx_needs_sse_and_avx512_needs_avx_and_all_three() {
        assert!(!xsetbv_allowed(0, X87 | AVX, ALL));
        assert!(xsetbv_allowed(0, X87 | SSE | AVX | AVX512, ALL));
        assert!(!xsetbv_allowed(0, X87 | SSE | AVX512, ALL));
        assert!(!xsetbv_allowed(0, X87 | SSE | AVX | (1 << 5), ALL));
        assert!(!xsetbv_allowed(0, X87 | SSE | AVX | (0b11 << 6), ALL));
    }

    #[test]
    fn mpx_and_amx_come_in_pairs() {
        assert!(xsetbv_allowed(0, X87 | MPX, ALL));
        assert!(!xsetbv_allowed(0, X87 | (1 << 3), ALL));
        assert!(xsetbv_allowed(0, X87 | SSE | AMX, ALL));
        assert!(!xsetbv_allowed(0, X87 | (1 << 18), ALL));
    }

    #[test]
    fn nothing_the_processor_lacks() {
        let skylake = X87 | SSE | AVX;
        assert!(xsetbv_allowed(0, X87 | SSE | AVX, skylake));
        assert!(!xsetbv_allowed(0, X87 | SSE | AVX | AVX512, skylake));
        assert!(!xsetbv_allowed(0, X87 | (1 << 9), ALL));
    }
}
