//! SSE and, where the CPU has them, AVX and AVX-512, enabled before std runs: std and the
//! app are compiled for SSE2, and std picks wider code at run time from CPUID and XCR0.
//!
//! SDM Vol. 3A §13.1 (CR0.EM clear, CR0.MP set, CR4.OSFXSR and CR4.OSXMMEXCPT set for SSE),
//! §13.3 (CR4.OSXSAVE, then XSETBV XCR0 with the state components CPUID.(EAX=0DH,ECX=0):EAX
//! reports; x87 and SSE always, AVX needs SSE, the three AVX-512 components go together
//! and need AVX).

use crate::cpu::cpuid;

const CR0_MP: u64 = 1 << 1;
const CR0_EM: u64 = 1 << 2;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;

const XCR0_X87: u64 = 1 << 0;
const XCR0_SSE: u64 = 1 << 1;
const XCR0_AVX: u64 = 1 << 2;
/// Opmask, ZMM_Hi256, Hi16_ZMM.
const XCR0_AVX512: u64 = 0b111 << 5;

/// What was enabled, for the start line and for a scheduler saving vector state.
#[derive(Clone, Copy, Debug)]
pub struct Enabled {
    /// XCR0 as set, 0 without XSAVE (FXSAVE then holds the state).
    pub xcr0: u64,
}

/// The XCR0 to set, from what the CPU supports (CPUID.(EAX=0DH,ECX=0):EAX) and its
/// feature flags.
fn xcr0_for(supported: u64, avx: bool, avx512: bool) -> u64 {
    let mut xcr0 = XCR0_X87 | XCR0_SSE;
    if avx && supported & XCR0_AVX != 0 {
        xcr0 |= XCR0_AVX;
        if avx512 && supported & XCR0_AVX512 == XCR0_AVX512 {
            xcr0 |= XCR0_AVX512;
        }
    }
    xcr0
}

pub fn enable() -> Enabled {
    let leaf1 = cpuid(1, 0);
    let xsave = leaf1.ecx & (1 << 26) != 0;
    let avx = leaf1.ecx & (1 << 28) != 0;
    let avx512 = cpuid(0, 0).eax >= 7 && cpuid(7, 0).ebx & (1 << 16) != 0;
    // SAFETY: control-register writes that only enable FPU/SSE state handling for this
    // vCPU (SDM §13.1); no memory is touched.
    unsafe {
        let (mut cr0, mut cr4): (u64, u64);
        core::arch::asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack));
        core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
        cr0 = (cr0 & !CR0_EM) | CR0_MP;
        cr4 |= CR4_OSFXSR | CR4_OSXMMEXCPT;
        if xsave {
            cr4 |= CR4_OSXSAVE;
        }
        core::arch::asm!("mov cr0, {}", in(reg) cr0, options(nomem, nostack));
        core::arch::asm!("mov cr4, {}", in(reg) cr4, options(nomem, nostack));
        core::arch::asm!("fninit", options(nomem, nostack));
    }
    if !xsave {
        return Enabled { xcr0: 0 };
    }
    let leaf_d = cpuid(0xD, 0);
    let supported = u64::from(leaf_d.eax) | u64::from(leaf_d.edx) << 32;
    let xcr0 = xcr0_for(supported, avx, avx512);
    // SAFETY: XCR0 with only components CPUID reports, in the combinations the SDM allows
    // (§13.3); CR4.OSXSAVE is set above.
    unsafe {
        core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32,
            options(nomem, nostack))
    };
    Enabled { xcr0 }
}
