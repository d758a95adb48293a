//! AMD SVM backend: turns SVM on per core (EFER.SVME, host save area), programs one VMCB
//! per vCPU, enters the guest with VMRUN and decodes #VMEXITs into the
//! architecture-neutral `bulkhead_virt::exit::Exit`.
//!
//! It holds no partition policy: what an exit *means* is decided by the kernel. Section
//! numbers refer to the AMD64 Architecture Programmer's Manual Vol. 2 (APM): chapter 15
//! (Secure Virtual Machine), Appendix B (VMCB layout) and Appendix C (exit codes).
//!
//! | module | what it does |
//! |---|---|
//! | [`enable`] | CPUID / VM_CR checks, the [`Features`](enable::Features) of this CPU, EFER.SVME, VM_HSAVE_PA, CLGI |
//! | [`vmcb`] | the VMCB layout, its field bits, segment attribute compression |
//! | [`start`] | a VMCB save area from the neutral [`GuestEntry`](bulkhead_virt::guest_state::GuestEntry) |
//! | [`exit`] | exit codes, their decoding into `Exit`, the next RIP of a skipped instruction |
//! | [`world_switch`] | VMLOAD / VMRUN / VMSAVE and GIF: the only assembly |
//! | [`vcpu`] | one vCPU: set up, reset, run, skip, inject |
//!
//! # GIF and the hypervisor's NMI signal
//!
//! The host runs with the global interrupt flag clear (APM 15.17): [`enable`](enable::enable)
//! executes CLGI once, #VMEXIT clears GIF, and VMRUN sets it only for the time the guest
//! runs. An NMI sent to a core while it is in the host is therefore held pending and, the
//! NMI intercept being set, causes an NMI exit right after the next VMRUN: no signal is
//! lost between "checked the stop flag" and "entered the guest". An intercepted NMI itself
//! stays pending after the exit (the intercept does not consume it), so after an NMI exit
//! the kernel (`backend/svm.rs`) lets the host's NMI handler take it (STGI, CLGI);
//! otherwise every later VMRUN would exit again at once. See
//! [`world_switch::take_pending_nmi`].
#![no_std]

pub mod enable;
pub mod exit;
pub mod start;
pub mod vcpu;
pub mod vmcb;
pub mod world_switch;

/// A 4 KiB-aligned page: the per-core host save area (VM_HSAVE_PA, APM 15.30.4).
pub use bulkhead_virt::pages::Page;

/// The I/O permissions map: 12 KiB, physically contiguous and 4 KiB aligned, one bit per
/// port, a set bit intercepts (APM 15.10.1; the last bits cover accesses that wrap past
/// port 0xFFFF). Fill it with `bulkhead_virt::bitmap::IoPermissions::svm_iopm`.
pub type IoPermissionMap = bulkhead_virt::pages::Pages<{ 3 * 4096 }>;

/// The MSR permissions map: 8 KiB, physically contiguous and 4 KiB aligned, two bits (read,
/// write) per MSR of three ranges, a set bit intercepts (APM 15.11). Fill it with
/// `bulkhead_virt::bitmap::MsrPermissions::svm_msrpm`.
pub type MsrPermissionMap = bulkhead_virt::pages::Pages<{ 2 * 4096 }>;

const _: () = {
    assert!(core::mem::size_of::<Page>() == 4096 && core::mem::align_of::<Page>() == 4096);
    assert!(core::mem::size_of::<IoPermissionMap>() == 12288 && core::mem::align_of::<IoPermissionMap>() == 4096);
    assert!(core::mem::size_of::<MsrPermissionMap>() == 8192 && core::mem::align_of::<MsrPermissionMap>() == 4096);
};

/// A TSC stamp for the exit profile (`cargo xtask bench --profile`, kernel feature
/// `profile`); under Bochs `clock: sync=none` the TSC counts instructions.
#[cfg(feature = "profile")]
#[inline(always)]
pub fn profile_stamp() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC reads a counter and changes nothing else. Not `nomem`: the compiler
    // keeps memory accesses on their side of the stamp.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nostack, preserves_flags)) };
    u64::from(hi) << 32 | u64::from(lo)
}
