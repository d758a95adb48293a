//! `sys_read_entropy`: random bytes from the CPU's generator, RDRAND (CPUID.1:ECX bit 30)
//! or else RDSEED (CPUID.(EAX=7,ECX=0):EBX bit 18) (SDM Vol. 1 §7.3.17). A CPU with
//! neither has no source the runtime trusts: it refuses to start ([`check`]) rather than
//! hand std a fixed seed.

use crate::cpu::cpuid;
use core::sync::atomic::{AtomicU8, Ordering};

const NONE: u8 = 0;
const RDRAND: u8 = 1;
const RDSEED: u8 = 2;
static SOURCE: AtomicU8 = AtomicU8::new(NONE);
/// Retries before a generator counts as failed (Intel's DRNG guide suggests 10 for
/// RDRAND; RDSEED may need more while its entropy refills).
const RETRIES: u32 = 100;

/// Picks the generator; the name of the one chosen, or `None` where the CPU has neither.
pub fn check() -> Option<&'static str> {
    if cpuid(1, 0).ecx & (1 << 30) != 0 {
        SOURCE.store(RDRAND, Ordering::Relaxed);
        return Some("rdrand");
    }
    if cpuid(0, 0).eax >= 7 && cpuid(7, 0).ebx & (1 << 18) != 0 {
        SOURCE.store(RDSEED, Ordering::Relaxed);
        return Some("rdseed");
    }
    None
}

fn random_u64() -> Option<u64> {
    let source = SOURCE.load(Ordering::Relaxed);
    for _ in 0..RETRIES {
        let (value, ok): (u64, u8);
        // SAFETY: RDRAND/RDSEED only write their destination and CF; CPUID said the CPU has
        // the instruction chosen.
        unsafe {
            match source {
                RDRAND => {
                    core::arch::asm!("rdrand {}", "setc {}", out(reg) value, out(reg_byte) ok, options(nomem, nostack))
                }
                RDSEED => {
                    core::arch::asm!("rdseed {}", "setc {}", out(reg) value, out(reg_byte) ok, options(nomem, nostack))
                }
                _ => return None,
            }
        }
        if ok != 0 {
            return Some(value);
        }
        core::hint::spin_loop();
    }
    None
}

/// `read_entropy(buf, len, flags)`: fills the whole buffer and returns `len`. std treats
/// -1 as fatal; a generator that keeps failing is reported through the fault policy
/// instead, with its reason.
#[unsafe(no_mangle)]
pub extern "C" fn sys_read_entropy(buf: *mut u8, len: usize, _flags: u32) -> isize {
    if buf.is_null() {
        return -(hermit_abi::EFAULT as isize);
    }
    // SAFETY: std passes `len` writable bytes.
    let out = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    for chunk in out.chunks_mut(8) {
        let Some(value) = random_u64() else {
            crate::fault::report(crate::fault::Kind::Refused, 0, 0, |text| {
                write!(text, "the CPU's random number generator failed {RETRIES} times in a row")
            });
        };
        chunk.copy_from_slice(&value.to_le_bytes()[..chunk.len()]);
    }
    len as isize
}
