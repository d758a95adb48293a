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
    /// `HVMOP_set_evtchn_upcall_vector` is offered: events arrive on a per-vCPU vector
    /// through the local APIC, and the guest EOIs it (`XEN_HVM_CPUID_UPCALL_VECTOR`).
    pub const UPCALL_VECTOR: u32 = 1 << 6;
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

/// `DOMID_SELF`: "the calling domain" wherever a call takes a domain id.
pub const DOMID_SELF: u16 = 0x7FF0;
/// A vCPU id's limit in shared_info (`XEN_LEGACY_MAX_VCPUS`): vCPUs below it have a
/// `vcpu_info` slot in shared_info; others must register one.
pub const LEGACY_MAX_VCPUS: u32 = 32;

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

/// Feature bits of submap 0 (`XENFEAT_*`), as bit numbers.
pub mod feature {
    /// Page tables are the guest's own (true of every HVM guest).
    pub const WRITABLE_PAGE_TABLES: u32 = 0;
    /// Guest-physical addresses are translated by the hypervisor (true of every HVM guest).
    pub const AUTO_TRANSLATED_PHYSMAP: u32 = 2;
    /// An HVM guest may take event channel upcalls on a vector (`XENFEAT_hvm_callback_vector`).
    pub const HVM_CALLBACK_VECTOR: u32 = 8;
    /// Xen's PV clock is safe for HVM guests (`XENFEAT_hvm_safe_pvclock`). Not offered: a
    /// partition keeps its native TSC and local APIC timer.
    pub const HVM_SAFE_PVCLOCK: u32 = 9;
}

/// `memory_op` commands (`XENMEM_*`) and `struct xen_add_to_physmap`.
pub mod memory {
    /// `XENMEM_add_to_physmap`: arg points at `struct xen_add_to_physmap`.
    pub const ADD_TO_PHYSMAP: u64 = 7;
    /// `XENMAPSPACE_shared_info`: `idx` 0 maps the shared_info page at `gpfn`.
    pub const SPACE_SHARED_INFO: u32 = 0;
    /// `XENMAPSPACE_grant_table`: not offered.
    pub const SPACE_GRANT_TABLE: u32 = 1;
    /// `struct xen_add_to_physmap` (24 bytes): `u16 domid`, `u16 size`, `u32 space`,
    /// `u64 idx`, `u64 gpfn`.
    pub const ADD_TO_PHYSMAP_BYTES: usize = 24;
    pub const OFF_DOMID: usize = 0;
    pub const OFF_SPACE: usize = 4;
    pub const OFF_IDX: usize = 8;
    pub const OFF_GPFN: usize = 16;
}

/// `vcpu_op` commands (`VCPUOP_*`; arguments: command, vCPU id, pointer).
pub mod vcpu {
    /// `VCPUOP_is_up`: 1 for a running vCPU.
    pub const IS_UP: u64 = 3;
    /// `VCPUOP_register_vcpu_info`: arg points at `{u64 mfn; u32 offset; u32 rsvd}`; the
    /// 64-byte `vcpu_info` at (mfn << 12) + offset must not cross a page.
    pub const REGISTER_VCPU_INFO: u64 = 10;
    pub const REGISTER_VCPU_INFO_BYTES: usize = 16;
}

/// `hvm_op` commands (`HVMOP_*`) and parameters (`HVM_PARAM_*`).
pub mod hvm {
    /// `HVMOP_set_param` / `HVMOP_get_param`: arg points at
    /// `struct xen_hvm_param {u16 domid; u16 pad; u32 index; u64 value}` (16 bytes).
    pub const SET_PARAM: u64 = 0;
    pub const GET_PARAM: u64 = 1;
    pub const PARAM_BYTES: usize = 16;
    pub const PARAM_OFF_DOMID: usize = 0;
    pub const PARAM_OFF_INDEX: usize = 4;
    pub const PARAM_OFF_VALUE: usize = 8;
    /// `HVMOP_set_evtchn_upcall_vector`: arg points at `{u32 vcpu; u8 vector}` (8 bytes).
    pub const SET_EVTCHN_UPCALL_VECTOR: u64 = 23;
    pub const UPCALL_VECTOR_BYTES: usize = 8;
    /// `HVM_PARAM_CALLBACK_IRQ`: how the domain-wide event upcall is delivered; type in
    /// bits 63:56 (`HVM_PARAM_CALLBACK_TYPE_VECTOR` = 2 with the vector in bits 7:0).
    pub const PARAM_CALLBACK_IRQ: u32 = 0;
    pub const CALLBACK_TYPE_SHIFT: u32 = 56;
    pub const CALLBACK_TYPE_VECTOR: u64 = 2;
    /// `HVM_PARAM_STORE_PFN`, `HVM_PARAM_STORE_EVTCHN`: no xenstore (read as 0).
    pub const PARAM_STORE_PFN: u32 = 1;
    pub const PARAM_STORE_EVTCHN: u32 = 2;
    /// `HVM_PARAM_CONSOLE_PFN`, `HVM_PARAM_CONSOLE_EVTCHN`: no ring console (read as 0).
    pub const PARAM_CONSOLE_PFN: u32 = 17;
    pub const PARAM_CONSOLE_EVTCHN: u32 = 18;
    /// `HVM_NR_PARAMS`: indexes at or above it are -EINVAL.
    pub const NR_PARAMS: u32 = 39;
    /// The lowest vector an upcall may use (0..15 are exceptions; Xen refuses them).
    pub const MIN_UPCALL_VECTOR: u8 = 0x10;
}

/// `event_channel_op` commands (`EVTCHNOP_*`; arguments: command, pointer) and their
/// argument layouts (`xen/include/public/event_channel.h`). Ports are `u32`; domain ids
/// `u16` (`DOMID_SELF` for the caller).
pub mod evtchn {
    /// `{u16 remote_dom; u16 pad; u32 remote_port; OUT u32 local_port}` (12 bytes).
    /// Bulkhead: `remote_dom` is the peer partition's id, `remote_port` the connection's
    /// id (docs/xen.md, "Event channels").
    pub const BIND_INTERDOMAIN: u64 = 0;
    /// `{u32 virq; u32 vcpu; OUT u32 port}` (12 bytes).
    pub const BIND_VIRQ: u64 = 1;
    pub const BIND_PIRQ: u64 = 2;
    /// `{u32 port}`.
    pub const CLOSE: u64 = 3;
    /// `{u32 port}`.
    pub const SEND: u64 = 4;
    /// `{u16 dom; u16 pad; u32 port; OUT u32 status; OUT u32 vcpu; OUT union u}` (24 bytes):
    /// `u.unbound.dom` (u16 at 16), `u.interdomain.{dom (u16 at 16), port (u32 at 20)}`,
    /// `u.virq` (u32 at 16).
    pub const STATUS: u64 = 5;
    /// `{u16 dom; u16 remote_dom; OUT u32 port}` (8 bytes).
    pub const ALLOC_UNBOUND: u64 = 6;
    /// `{u32 vcpu; OUT u32 port}` (8 bytes).
    pub const BIND_IPI: u64 = 7;
    /// `{u32 port; u32 vcpu}` (8 bytes).
    pub const BIND_VCPU: u64 = 8;
    /// `{u32 port}`.
    pub const UNMASK: u64 = 9;
    pub const RESET: u64 = 10;
    /// FIFO ABI (`EVTCHNOP_init_control`, `expand_array`, `set_priority`): not offered;
    /// -ENOSYS makes Linux fall back to the 2-level ABI.
    pub const INIT_CONTROL: u64 = 11;
    pub const EXPAND_ARRAY: u64 = 12;
    pub const SET_PRIORITY: u64 = 13;

    /// `EVTCHNSTAT_*` (`evtchn_status.status`).
    pub const STAT_CLOSED: u32 = 0;
    pub const STAT_UNBOUND: u32 = 1;
    pub const STAT_INTERDOMAIN: u32 = 2;
    pub const STAT_PIRQ: u32 = 3;
    pub const STAT_VIRQ: u32 = 4;
    pub const STAT_IPI: u32 = 5;

    /// Virtual IRQs a guest may bind (`VIRQ_*`); none of them ever fires here (no Xen
    /// timer, console or debug key), but Linux binds some on every vCPU.
    pub const VIRQ_TIMER: u32 = 0;
    pub const VIRQ_DEBUG: u32 = 1;
    pub const VIRQ_CONSOLE: u32 = 2;
    /// `NR_VIRQS`: a larger number is -EINVAL.
    pub const NR_VIRQS: u32 = 24;

    /// The ports a partition may hold: 1..PORTS (port 0 is never valid, as on Xen).
    /// Bulkhead's limit, far below the 2-level ABI's 4096 (64-bit) or 1024 (32-bit).
    pub const PORTS: u32 = 256;
}

/// The shared_info page (`struct shared_info`, 2-level event ABI). Its word size is the
/// guest's: 64-bit (`xen_ulong_t` = u64) for a guest that maps it from 64-bit mode, 32-bit
/// otherwise (Xen latches it the same way).
pub mod shared_info {
    /// `vcpu_info[32]`, 64 bytes each, at offset 0.
    pub const VCPU_INFO_BYTES: usize = 64;
    /// `evtchn_pending[]` starts after the 32 `vcpu_info` slots.
    pub const PENDING_OFFSET: usize = 32 * VCPU_INFO_BYTES;
    /// `evtchn_mask[]` follows `evtchn_pending[]`: `word_bits` words of `word_bits` bits.
    pub const fn mask_offset(word_bits: usize) -> usize {
        PENDING_OFFSET + word_bits * word_bits / 8
    }
    /// In a `vcpu_info`: `u8 evtchn_upcall_pending` at 0, `u8 evtchn_upcall_mask` at 1,
    /// `xen_ulong_t evtchn_pending_sel` at 4 (32-bit) or 8 (64-bit).
    pub const UPCALL_PENDING: usize = 0;
    pub const UPCALL_MASK: usize = 1;
    pub const fn pending_sel_offset(word_bits: usize) -> usize {
        word_bits / 8
    }
}

/// Bulkhead's message ring: how a `message` connection with a Xen end carries messages
/// (docs/xen.md, "Message rings"). One 4 KiB page per connection, the connection's
/// `ring` shared region, seen by its Xen end(s): a header, then [`ring::SLOTS`] slots of
/// 256 bytes, each laid out as a Hyper-V message (`HV_MESSAGE`: the 16-byte header with the
/// type, the payload size and the sender's connection id, then up to 240 bytes), so a
/// message reads the same in a ring as in a SynIC slot. `produced` and `consumed` (u64)
/// count messages since the ring was (re)started; slot `n % SLOTS` holds message `n`.
pub mod ring {
    /// "BHMR" in the header's first word once the hypervisor has initialised the ring.
    pub const MAGIC: u32 = 0x524D_4842;
    pub const VERSION: u32 = 1;
    /// Header fields (u32 each).
    pub const OFF_MAGIC: usize = 0;
    pub const OFF_VERSION: usize = 4;
    /// How many slots the ring has ([`SLOTS`]).
    pub const OFF_SLOTS: usize = 8;
    /// How many messages may be outstanding (written, not yet consumed): the connection's
    /// `queue_depth` + 1 (its receiver's slot plus its queue), at most [`SLOTS`].
    pub const OFF_CAPACITY: usize = 12;
    /// Written only by the producer: messages written so far (u64: it never wraps in
    /// practice, so `n % SLOTS` stays a sequence; 2^32 is not a multiple of 15).
    pub const OFF_PRODUCED: usize = 64;
    /// Written only by the consumer: messages consumed so far (u64).
    pub const OFF_CONSUMED: usize = 128;
    /// The first slot.
    pub const SLOTS_OFFSET: usize = 256;
    pub const SLOT_BYTES: usize = 256;
    /// 15 slots fill the page after the header.
    pub const SLOTS: u32 = ((4096 - SLOTS_OFFSET) / SLOT_BYTES) as u32;
    /// The page.
    pub const BYTES: usize = 4096;
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
    /// Argument: a pointer to `struct sched_poll {u64 ports (a pointer to u32 ports);
    /// u32 nr_ports; u32 pad; u64 timeout}` (24 bytes).
    pub const POLL: u64 = 3;
    pub const POLL_BYTES: usize = 24;
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
    pub const ESRCH: i64 = 3;
    pub const EAGAIN: i64 = 11;
    pub const EACCES: i64 = 13;
    pub const EFAULT: i64 = 14;
    pub const EBUSY: i64 = 16;
    pub const EEXIST: i64 = 17;
    pub const EINVAL: i64 = 22;
    pub const ENOSPC: i64 = 28;
    pub const ENOSYS: i64 = 38;
    pub const ENOTCONN: i64 = 107;
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
