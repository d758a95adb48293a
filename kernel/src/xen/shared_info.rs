//! The 2-level event ABI's memory (Xen `xen.h`, `struct shared_info` and `struct
//! vcpu_info`): the shared_info page the guest maps with `XENMEM_add_to_physmap`, each
//! vCPU's `vcpu_info` (its slot in shared_info, or the area it registers with
//! `VCPUOP_register_vcpu_info`), and the bit operations that raise and unmask a port, as
//! Xen's `evtchn_2l_set_pending` and `evtchn_2l_unmask` do them.
//!
//! The pages are the partition's own RAM (checked when mapped or registered, never a
//! shared region or a device), written by its vCPUs at the same time, so every access is
//! an atomic operation on a naturally aligned word of the guest's width.

use super::{XenState, XenVcpu};
use crate::partition::Partition;
use bulkhead_abi::xen::{LEGACY_MAX_VCPUS, errno, shared_info as layout};
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

const PAGE: u64 = 0x1000;

/// A bitmap of `word_bits`-bit words at host address `base` in the partition's own RAM.
#[derive(Clone, Copy)]
struct Bitmap {
    base: u64,
    word_bits: u32,
}

impl Bitmap {
    /// The word holding `bit`, and the bit's mask in it.
    fn word(self, bit: u32) -> (u64, u64) {
        let word = u64::from(bit / self.word_bits);
        (self.base + word * u64::from(self.word_bits / 8), 1 << (bit % self.word_bits))
    }

    /// Sets `bit`; returns whether it was set already.
    fn test_and_set(self, bit: u32) -> bool {
        let (address, mask) = self.word(bit);
        // SAFETY: an aligned word inside a page of the partition's own RAM (see the
        // module comment: checked when the page was mapped or registered).
        unsafe {
            if self.word_bits == 64 {
                (*(address as *const AtomicU64)).fetch_or(mask, Ordering::SeqCst) & mask != 0
            } else {
                u64::from((*(address as *const AtomicU32)).fetch_or(mask as u32, Ordering::SeqCst)) & mask != 0
            }
        }
    }

    /// Clears `bit`; returns whether it was set.
    fn test_and_clear(self, bit: u32) -> bool {
        let (address, mask) = self.word(bit);
        // SAFETY: as in `test_and_set`.
        unsafe {
            if self.word_bits == 64 {
                (*(address as *const AtomicU64)).fetch_and(!mask, Ordering::SeqCst) & mask != 0
            } else {
                u64::from((*(address as *const AtomicU32)).fetch_and(!(mask as u32), Ordering::SeqCst)) & mask != 0
            }
        }
    }

    fn test(self, bit: u32) -> bool {
        let (address, mask) = self.word(bit);
        // SAFETY: as in `test_and_set`.
        unsafe {
            if self.word_bits == 64 {
                (*(address as *const AtomicU64)).load(Ordering::SeqCst) & mask != 0
            } else {
                u64::from((*(address as *const AtomicU32)).load(Ordering::SeqCst)) & mask != 0
            }
        }
    }

    /// Sets every bit of the first word.
    fn fill_first_word(self) {
        // SAFETY: as in `test_and_set`.
        unsafe {
            if self.word_bits == 64 {
                (*(self.base as *const AtomicU64)).store(u64::MAX, Ordering::SeqCst)
            } else {
                (*(self.base as *const AtomicU32)).store(u32::MAX, Ordering::SeqCst)
            }
        }
    }
}

/// Where an upcall interrupt goes: the vCPU's core and its upcall vector.
#[derive(Clone, Copy)]
pub struct Upcall {
    pub apic_id: u32,
    pub vector: u8,
}

impl Upcall {
    /// Sends it: a fixed IPI to the vCPU's core. The partition owns its local APIC, so the
    /// interrupt reaches the guest without an exit and the guest EOIs it (Linux does in its
    /// per-vCPU upcall mode).
    pub fn send(self) {
        crate::cpu::apic::send_fixed_ipi(self.apic_id, self.vector);
    }
}

fn pending(state: &XenState) -> Bitmap {
    Bitmap { base: state.shared_info + layout::PENDING_OFFSET as u64, word_bits: state.word_bits }
}

fn mask(state: &XenState) -> Bitmap {
    Bitmap {
        base: state.shared_info + layout::mask_offset(state.word_bits as usize) as u64,
        word_bits: state.word_bits,
    }
}

/// Host address of vCPU `vcpu`'s `vcpu_info`: the registered one, else its slot in
/// shared_info (vCPUs below 32), else none.
fn vcpu_info(state: &XenState, vcpu: usize) -> Option<u64> {
    let registered = state.vcpus.get(vcpu)?.vcpu_info;
    if registered != 0 {
        Some(registered)
    } else if state.shared_info != 0 && (vcpu as u32) < LEGACY_MAX_VCPUS {
        Some(state.shared_info + (vcpu * layout::VCPU_INFO_BYTES) as u64)
    } else {
        None
    }
}

fn selector(state: &XenState, info: u64) -> Bitmap {
    Bitmap { base: info + layout::pending_sel_offset(state.word_bits as usize) as u64, word_bits: state.word_bits }
}

fn upcall_pending(info: u64) -> &'static AtomicU8 {
    // SAFETY: byte 0 of a `vcpu_info` in the partition's own RAM.
    unsafe { &*((info + layout::UPCALL_PENDING as u64) as *const AtomicU8) }
}

/// The upcall of `vcpu`, if it has a vector and its core is on the board.
pub fn upcall_of(partition: &Partition, vcpu: &XenVcpu, index: usize) -> Option<Upcall> {
    if vcpu.upcall_vector == 0 {
        return None;
    }
    let core = *partition.config().cores.get(index)?;
    let apic_id = crate::hyperv::apic_id_of_core(core)?;
    Some(Upcall { apic_id, vector: vcpu.upcall_vector })
}

/// Marks selector bit `word` in vCPU `vcpu`'s `vcpu_info` and its upcall pending; returns
/// the upcall to send when the upcall became pending just now.
fn mark(partition: &Partition, state: &XenState, vcpu: usize, word: u32) -> Option<Upcall> {
    let info = vcpu_info(state, vcpu)?;
    if selector(state, info).test_and_set(word) {
        return None;
    }
    if upcall_pending(info).swap(1, Ordering::SeqCst) != 0 {
        return None;
    }
    upcall_of(partition, &state.vcpus[vcpu], vcpu)
}

/// Raises `port` for vCPU `vcpu` (Xen's `evtchn_2l_set_pending`): its pending bit; if that
/// was clear and the port is unmasked, the selector bit and the upcall. Nothing while
/// shared_info is not mapped (there is nowhere to raise it; binding needs it mapped).
pub fn set_pending(partition: &Partition, state: &XenState, port: u32, vcpu: usize) -> Option<Upcall> {
    if state.shared_info == 0 || pending(state).test_and_set(port) || mask(state).test(port) {
        return None;
    }
    mark(partition, state, vcpu, port / state.word_bits)
}

/// `EVTCHNOP_unmask` (Xen's `evtchn_2l_unmask`): clears the mask bit; a port that was
/// masked and is pending raises its vCPU now.
pub fn unmask(partition: &Partition, state: &XenState, port: u32, vcpu: usize) -> Option<Upcall> {
    if state.shared_info == 0 {
        return None;
    }
    if mask(state).test_and_clear(port) && pending(state).test(port) {
        mark(partition, state, vcpu, port / state.word_bits)
    } else {
        None
    }
}

/// Whether `port` is pending (for `SCHEDOP_poll`).
pub fn is_pending(state: &XenState, port: u32) -> bool {
    state.shared_info != 0 && pending(state).test(port)
}

/// `XENMEM_add_to_physmap` with `XENMAPSPACE_shared_info`: the page at `gfn` of the
/// partition's own writable RAM becomes shared_info. The first mapping starts it zeroed
/// (no port pending or masked); a later one moves it, contents and all. `wide`: the caller
/// runs in 64-bit mode (64-bit event words), as Xen latches the guest's width.
pub fn map(partition: &Partition, state: &mut XenState, gfn: u64, wide: bool) -> Result<(), i64> {
    let gpa = gfn.checked_mul(PAGE).ok_or(errno::EINVAL)?;
    let host = crate::hyperv::private_memory(partition, gpa, PAGE, true).ok_or(errno::EINVAL)?;
    let old = state.shared_info;
    if old != host {
        // SAFETY: two pages of the partition's own writable RAM (`private_memory`), distinct.
        unsafe {
            if old == 0 {
                core::ptr::write_bytes(host as *mut u8, 0, PAGE as usize);
            } else {
                core::ptr::copy_nonoverlapping(old as *const u8, host as *mut u8, PAGE as usize);
            }
        }
    }
    state.shared_info = host;
    state.word_bits = if wide { 64 } else { 32 };
    Ok(())
}

/// `VCPUOP_register_vcpu_info`: vCPU `vcpu`'s `vcpu_info` moves to the 64 bytes at
/// `(mfn << 12) + offset` (own writable RAM, 8-byte aligned, inside one page). Once per
/// vCPU (-EINVAL after), as on Xen. Its old contents are copied, then every selector bit
/// and the upcall are marked pending so nothing raised meanwhile is lost (Xen does the
/// same: a spurious upcall the guest copes with); returns that upcall to send.
pub fn register_vcpu_info(
    partition: &Partition,
    state: &mut XenState,
    vcpu: usize,
    mfn: u64,
    offset: u32,
) -> Result<Option<Upcall>, i64> {
    if vcpu >= partition.config().cores.len() {
        return Err(errno::ENOENT);
    }
    let bytes = layout::VCPU_INFO_BYTES as u64;
    if u64::from(offset) > PAGE - bytes || !offset.is_multiple_of(8) || state.vcpus[vcpu].vcpu_info != 0 {
        return Err(errno::EINVAL);
    }
    let gpa = mfn.checked_mul(PAGE).ok_or(errno::EINVAL)? + u64::from(offset);
    let host = crate::hyperv::private_memory(partition, gpa, bytes, true).ok_or(errno::EINVAL)?;
    match vcpu_info(state, vcpu) {
        // SAFETY: 64 bytes each in the partition's own writable RAM; `copy` allows overlap.
        Some(old) => unsafe { core::ptr::copy(old as *const u8, host as *mut u8, bytes as usize) },
        // SAFETY: as above.
        None => unsafe { core::ptr::write_bytes(host as *mut u8, 0, bytes as usize) },
    }
    state.vcpus[vcpu].vcpu_info = host;
    selector(state, host).fill_first_word();
    upcall_pending(host).store(1, Ordering::SeqCst);
    Ok(upcall_of(partition, &state.vcpus[vcpu], vcpu))
}

/// The upcall to send when vCPU `vcpu` gets an upcall vector while an upcall is already
/// pending (raised before it had one).
pub fn pending_upcall(partition: &Partition, state: &XenState, vcpu: usize) -> Option<Upcall> {
    let info = vcpu_info(state, vcpu)?;
    (upcall_pending(info).load(Ordering::SeqCst) != 0).then(|| upcall_of(partition, &state.vcpus[vcpu], vcpu)).flatten()
}

/// Clears `port`'s pending bit (a closed port starts clean when bound again, as on Xen).
pub fn clear_pending(state: &XenState, port: u32) {
    if state.shared_info != 0 {
        pending(state).test_and_clear(port);
    }
}
