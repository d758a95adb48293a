//! Xen's HVM guest interface, the part a partition with `interface = "xen"` sees
//! (docs/xen.md). Numbers from Xen's public headers (`xen/include/public/xen.h`,
//! `arch-x86/cpuid.h`, `version.h`, `features.h`, `sched.h`), as Linux uses them.
//!
//! Discovery: CPUID leaves from [`CPUID_BASE`] with the signature "XenVMMXenVMM"; leaf
//! base+2 names the MSR that installs the hypercall page. A hypercall is VMCALL (Intel) or
//! VMMCALL (AMD), from the page or executed directly: RAX = the call's number, arguments in
//! RDI, RSI, RDX, R10, R8 (64-bit) or EBX, ECX, EDX, ESI, EDI (32-bit); the result in RAX,
//! a negative errno on failure.

/// The first Xen leaf. A Xen partition has no Hyper-V leaves, so Xen's block starts where
/// Xen itself puts it without Viridian.
pub const CPUID_BASE: u32 = 0x4000_0000;
/// The last Xen leaf offered (base + 4: HVM features).
pub const CPUID_LAST: u32 = CPUID_BASE + 4;
/// "XenVMMXenVMM" in EBX, ECX, EDX of leaf base+0.
pub const SIGNATURE: [u32; 3] = [0x566e_6558, 0x6558_4d4d, 0x4d4d_566e];
/// The Xen version reported (leaf base+1 EAX and XENVER_version): 4.17.
pub const VERSION_MAJOR: u32 = 4;
pub const VERSION_MINOR: u32 = 17;
/// The MSR that installs the hypercall page (leaf base+2 EBX): write the page's
/// guest-physical address (4 KiB aligned) with the page index (0) in bits 11:0.
pub const HYPERCALL_PAGE_MSR: u32 = 0x4000_0000;
/// Bytes per stub in the hypercall page: stub N calls hypercall N.
pub const HYPERCALL_STUB_BYTES: usize = 32;

/// Leaf base+4 EAX bits (`XEN_HVM_CPUID_*`).
pub mod hvm_cpuid {
    /// EBX holds the vCPU id.
    pub const VCPU_ID_PRESENT: u32 = 1 << 3;
    /// ECX holds the domain id.
    pub const DOMID_PRESENT: u32 = 1 << 4;
}

/// Hypercall numbers (`__HYPERVISOR_*`).
pub mod call {
    pub const MEMORY_OP: u64 = 12;
    pub const SET_TIMER_OP: u64 = 15;
    pub const XEN_VERSION: u64 = 17;
    pub const CONSOLE_IO: u64 = 18;
    pub const GRANT_TABLE_OP: u64 = 20;
    pub const VCPU_OP: u64 = 24;
    pub const SCHED_OP: u64 = 29;
    pub const EVENT_CHANNEL_OP: u64 = 32;
    pub const HVM_OP: u64 = 34;
}

/// `xen_version` commands (`XENVER_*`).
pub mod version {
    /// Returns major << 16 | minor.
    pub const VERSION: u64 = 0;
    /// Writes a 16-byte NUL-terminated string (`xen_extraversion_t`).
    pub const EXTRAVERSION: u64 = 1;
    /// Fills `{u32 submap_idx; u32 submap}` (`xen_feature_info`).
    pub const GET_FEATURES: u64 = 6;
    /// Returns the page size.
    pub const PAGESIZE: u64 = 7;
    /// Bytes of the extraversion string.
    pub const EXTRAVERSION_BYTES: usize = 16;
}

/// Feature bits of submap 0 (`XENFEAT_*`) this interface reports.
pub mod feature {
    /// An HVM guest may take event channel upcalls on a vector (`XENFEAT_hvm_callback_vector`).
    pub const HVM_CALLBACK_VECTOR: u32 = 8;
}

/// `console_io` commands.
pub mod console {
    /// `CONSOLEIO_write`: (count, buffer) to the partition's console.
    pub const WRITE: u64 = 0;
    /// `CONSOLEIO_read`.
    pub const READ: u64 = 1;
}

/// `sched_op` commands (`SCHEDOP_*`) and shutdown reasons (`SHUTDOWN_*`).
pub mod sched {
    pub const YIELD: u64 = 0;
    pub const BLOCK: u64 = 1;
    /// Argument: a pointer to `{u32 reason}`.
    pub const SHUTDOWN: u64 = 2;
    pub const POLL: u64 = 3;
    pub const SHUTDOWN_POWEROFF: u32 = 0;
    pub const SHUTDOWN_REBOOT: u32 = 1;
    pub const SHUTDOWN_SUSPEND: u32 = 2;
    pub const SHUTDOWN_CRASH: u32 = 3;
    pub const SHUTDOWN_WATCHDOG: u32 = 4;
}

/// The errno values Xen returns, negated, in RAX (Xen's `errno.h`, the Linux values).
pub mod errno {
    pub const EPERM: i64 = 1;
    pub const ENOENT: i64 = 2;
    pub const EFAULT: i64 = 14;
    pub const EINVAL: i64 = 22;
    pub const ENOSYS: i64 = 38;
}

/// The value RAX returns for a failure with `errno` (a positive errno).
pub const fn failure(errno: i64) -> u64 {
    (-errno) as u64
}

/// The errno of a hypercall result, if it is a failure (Xen's results are negative errnos
/// from -1 to -4095; everything else is a value).
pub const fn errno_of(rax: u64) -> Option<i64> {
    let value = rax as i64;
    if value < 0 && value >= -4095 { Some(-value) } else { None }
}

/// One hypercall page stub (`vmcall` on Intel, `vmmcall` on AMD): `mov eax, number;
/// vmcall|vmmcall; ret`, padded with `int3`.
pub fn hypercall_stub(number: u32, amd: bool) -> [u8; HYPERCALL_STUB_BYTES] {
    let mut stub = [0xCC; HYPERCALL_STUB_BYTES];
    stub[0] = 0xB8;
    stub[1..5].copy_from_slice(&number.to_le_bytes());
    stub[5..8].copy_from_slice(if amd { &[0x0F, 0x01, 0xD9] } else { &[0x0F, 0x01, 0xC1] });
    stub[8] = 0xC3;
    stub
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_spells_xen() {
        let mut bytes = [0u8; 12];
        for (i, word) in SIGNATURE.iter().enumerate() {
            bytes[4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
        }
        assert_eq!(&bytes, b"XenVMMXenVMM");
    }

    #[test]
    fn stubs_load_the_number_then_call_and_return() {
        let intel = hypercall_stub(17, false);
        assert_eq!(&intel[..9], &[0xB8, 17, 0, 0, 0, 0x0F, 0x01, 0xC1, 0xC3]);
        let amd = hypercall_stub(0x22, true);
        assert_eq!(&amd[..9], &[0xB8, 0x22, 0, 0, 0, 0x0F, 0x01, 0xD9, 0xC3]);
        assert!(amd[9..].iter().all(|&b| b == 0xCC));
    }

    #[test]
    fn errnos_are_negative_results() {
        assert_eq!(failure(errno::ENOSYS), (-38i64) as u64);
        assert_eq!(errno_of(failure(errno::ENOSYS)), Some(38));
        assert_eq!(errno_of(0x0004_0011), None);
        assert_eq!(errno_of(0), None);
        assert_eq!(errno_of((-4096i64) as u64), None);
    }
}
