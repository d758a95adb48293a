//! A Xen partition's hypercalls: VMCALL (Intel) or VMMCALL (AMD), executed directly or
//! through the hypercall page. RAX = the call's number; arguments in RDI, RSI, RDX, R10, R8
//! (64-bit) or EBX, ECX, EDX, ESI, EDI (32-bit); the result in RAX, a negative errno on
//! failure (`xen/arch/x86/hvm/hypercall.c`). Guest pointers are linear addresses, walked
//! through the guest's paging, and must lead to the partition's own RAM (else -EFAULT).
//!
//! Offered (docs/xen.md): `xen_version`, `console_io` write, `sched_op` (yield, block,
//! poll, shutdown), `memory_op` for shared_info, `vcpu_op` for vcpu_info, `hvm_op` for the
//! upcall vector, and `event_channel_op` (`event_channel`). Every other call and command
//! is -ENOSYS, logged (rate-limited) so a guest's needs show in the log.

use super::event_channel;
use crate::backend::Backend;
use crate::exits::Action;
use crate::log::warn;
use crate::partition::{Fault, Partition};
use bulkhead_abi::xen::errno::ENOSYS;
use bulkhead_abi::xen::{
    HYPERCALL_PAGE_MSR, HYPERCALL_STUB_BYTES, VERSION_MAJOR, VERSION_MINOR, call, console, errno, evtchn, failure,
    feature, hvm, hypercall_stub, memory, sched, vcpu, version,
};
use bulkhead_virt::guest_state::ExecutionMode;
use bulkhead_virt::guest_walk::{PagingState, translate};

const PAGE: u64 = 0x1000;
/// The longest console write one call takes (Xen's own limit is larger; a page keeps the
/// exit short).
const CONSOLE_WRITE_MAX: u64 = 4096;
/// `__HYPERVISOR_iret`: a PV-only call whose stub is `ud2` in an HVM guest's page.
const IRET: u32 = 23;
/// The most ports one `SCHEDOP_poll` names (Xen's limit).
const POLL_MAX_PORTS: u32 = 128;
/// What `XENVER_extraversion` reports after the version.
const EXTRAVERSION: &[u8] = b".0-bulkhead";

/// Handles the hypercall the guest just made: answered in RAX (the instruction skipped),
/// #UD from real mode, or a fault (a shutdown request).
pub fn handle<B: Backend>(partition: &Partition, backend: &mut B) -> Action {
    let mode = backend.execution_mode();
    let regs = backend.registers();
    let (number, args, cpl, wide) = match mode {
        ExecutionMode::Bits64 { cpl } => (regs.rax, [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8], cpl, true),
        ExecutionMode::Bits32 { cpl } => {
            let low = |v: u64| v & 0xffff_ffff;
            (low(regs.rax), [low(regs.rbx), low(regs.rcx), low(regs.rdx), low(regs.rsi), low(regs.rdi)], cpl, false)
        }
        ExecutionMode::Real => return Action::InjectUd,
    };
    let result = if cpl != 0 {
        failure(errno::EPERM)
    } else {
        match call_with(partition, backend, number, args, wide) {
            Ok(value) => value,
            Err(Stop::Errno(e)) => {
                if e == ENOSYS {
                    unsupported(partition, backend, number, args[0]);
                }
                failure(e)
            }
            Err(Stop::Shutdown(reason)) => return Action::Fault(Fault::XenShutdown { reason }),
        }
    };
    let regs = backend.registers();
    regs.rax = if wide { result } else { result & 0xffff_ffff };
    Action::Resume { skip: true }
}

/// Why a call did not return a value.
enum Stop {
    /// A failure: RAX gets the negated errno.
    Errno(i64),
    /// `sched_op` shutdown with this reason: the partition stops, its fault policy applies.
    Shutdown(u32),
}

impl From<i64> for Stop {
    fn from(errno: i64) -> Self {
        Stop::Errno(errno)
    }
}

/// A call or command that is not offered: a rate-limited log line.
fn unsupported<B: Backend>(partition: &Partition, backend: &mut B, number: u64, command: u64) {
    if let Some(n) = partition.counters.xen_unsupported.hit() {
        warn!(
            "partition {=str}: Xen hypercall {=u64} command {=u64} not offered (-ENOSYS), rip {=u64:#x} (#{=u32})",
            partition.name(),
            number,
            command,
            backend.rip(),
            n
        );
    }
}

fn call_with<B: Backend>(
    partition: &Partition,
    backend: &mut B,
    number: u64,
    args: [u64; 5],
    wide: bool,
) -> Result<u64, Stop> {
    match number {
        call::XEN_VERSION => xen_version(partition, backend, args[0], args[1]),
        call::CONSOLE_IO => console_io(partition, backend, args[0], args[1], args[2]),
        call::SCHED_OP => sched_op(partition, backend, args[0], args[1]),
        call::MEMORY_OP => memory_op(partition, backend, args[0], args[1], wide),
        call::VCPU_OP => vcpu_op(partition, backend, args[0], args[1], args[2]),
        call::HVM_OP => hvm_op(partition, backend, args[0], args[1]),
        call::EVENT_CHANNEL_OP => event_channel_op(partition, backend, args[0], args[1]),
        _ => Err(errno::ENOSYS.into()),
    }
}

/// The features of submap 0 (`XENVER_get_features`): what every HVM guest has, and event
/// upcalls on a vector. No PV clock (`XENFEAT_hvm_safe_pvclock`): a partition keeps its
/// native TSC and local APIC timer.
const FEATURES: u32 =
    1 << feature::WRITABLE_PAGE_TABLES | 1 << feature::AUTO_TRANSLATED_PHYSMAP | 1 << feature::HVM_CALLBACK_VECTOR;

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from(u32_at(bytes, at)) | u64::from(u32_at(bytes, at + 4)) << 32
}

/// `memory_op`: `XENMEM_add_to_physmap` for the shared_info page only.
fn memory_op<B: Backend>(partition: &Partition, backend: &mut B, cmd: u64, arg: u64, wide: bool) -> Result<u64, Stop> {
    if cmd != memory::ADD_TO_PHYSMAP {
        return Err(errno::ENOSYS.into());
    }
    let mut xatp = [0u8; memory::ADD_TO_PHYSMAP_BYTES];
    copy_from_guest(partition, backend, arg, &mut xatp)?;
    if !super::is_self(partition, u16_at(&xatp, memory::OFF_DOMID)) {
        return Err(errno::EPERM.into());
    }
    if u32_at(&xatp, memory::OFF_SPACE) != memory::SPACE_SHARED_INFO || u64_at(&xatp, memory::OFF_IDX) != 0 {
        return Err(errno::EINVAL.into());
    }
    let mut state = super::state(partition).lock();
    super::shared_info::map(partition, &mut state, u64_at(&xatp, memory::OFF_GPFN), wide)?;
    Ok(0)
}

/// `vcpu_op`: `VCPUOP_register_vcpu_info` and `VCPUOP_is_up`.
fn vcpu_op<B: Backend>(partition: &Partition, backend: &mut B, cmd: u64, id: u64, arg: u64) -> Result<u64, Stop> {
    let vcpus = partition.config().cores.len() as u64;
    match cmd {
        vcpu::IS_UP => {
            if id < vcpus {
                Ok(1)
            } else {
                Err(errno::ENOENT.into())
            }
        }
        vcpu::REGISTER_VCPU_INFO => {
            if id >= vcpus {
                return Err(errno::ENOENT.into());
            }
            let mut info = [0u8; vcpu::REGISTER_VCPU_INFO_BYTES];
            copy_from_guest(partition, backend, arg, &mut info)?;
            let mut state = super::state(partition).lock();
            let upcall = super::shared_info::register_vcpu_info(
                partition,
                &mut state,
                id as usize,
                u64_at(&info, 0),
                u32_at(&info, 8),
            )?;
            drop(state);
            if let Some(upcall) = upcall {
                upcall.send();
            }
            Ok(0)
        }
        _ => Err(errno::ENOSYS.into()),
    }
}

/// `hvm_op`: parameters and the per-vCPU upcall vector.
fn hvm_op<B: Backend>(partition: &Partition, backend: &mut B, op: u64, arg: u64) -> Result<u64, Stop> {
    match op {
        hvm::SET_PARAM | hvm::GET_PARAM => {
            let mut param = [0u8; hvm::PARAM_BYTES];
            copy_from_guest(partition, backend, arg, &mut param)?;
            let set = op == hvm::SET_PARAM;
            let value = super::upcall::param(
                partition,
                set,
                u16_at(&param, hvm::PARAM_OFF_DOMID),
                u32_at(&param, hvm::PARAM_OFF_INDEX),
                u64_at(&param, hvm::PARAM_OFF_VALUE),
            )?;
            if !set {
                copy_to_guest(partition, backend, arg + hvm::PARAM_OFF_VALUE as u64, &value.to_le_bytes())?;
            }
            Ok(0)
        }
        hvm::SET_EVTCHN_UPCALL_VECTOR => {
            let mut op = [0u8; hvm::UPCALL_VECTOR_BYTES];
            copy_from_guest(partition, backend, arg, &mut op)?;
            if let Some(upcall) = super::upcall::set_vector(partition, u32_at(&op, 0), op[4])? {
                upcall.send();
            }
            Ok(0)
        }
        _ => Err(errno::ENOSYS.into()),
    }
}

/// `event_channel_op`: reads the command's argument, runs it (`event_channel`), writes
/// its results back.
fn event_channel_op<B: Backend>(partition: &Partition, backend: &mut B, cmd: u64, arg: u64) -> Result<u64, Stop> {
    let mut a = [0u8; 24];
    let len = match cmd {
        evtchn::BIND_INTERDOMAIN | evtchn::BIND_VIRQ => 12,
        evtchn::CLOSE | evtchn::SEND | evtchn::UNMASK => 4,
        evtchn::STATUS => 24,
        evtchn::ALLOC_UNBOUND | evtchn::BIND_IPI | evtchn::BIND_VCPU => 8,
        _ => return Err(errno::ENOSYS.into()),
    };
    copy_from_guest(partition, backend, arg, &mut a[..len])?;
    // An output port goes back at this offset.
    let (port, at) = match cmd {
        evtchn::BIND_INTERDOMAIN => (event_channel::bind_interdomain(partition, u16_at(&a, 0), u32_at(&a, 4))?, 8),
        evtchn::BIND_VIRQ => (event_channel::bind_virq(partition, u32_at(&a, 0), u32_at(&a, 4))?, 8),
        evtchn::ALLOC_UNBOUND => (event_channel::alloc_unbound(partition, u16_at(&a, 0), u16_at(&a, 2))?, 4),
        evtchn::BIND_IPI => (event_channel::bind_ipi(partition, u32_at(&a, 0))?, 4),
        evtchn::CLOSE => return Ok(event_channel::close(partition, u32_at(&a, 0)).map(|()| 0)?),
        evtchn::SEND => return Ok(event_channel::send(partition, u32_at(&a, 0)).map(|()| 0)?),
        evtchn::UNMASK => return Ok(event_channel::unmask(partition, u32_at(&a, 0)).map(|()| 0)?),
        evtchn::BIND_VCPU => {
            return Ok(event_channel::bind_vcpu(partition, u32_at(&a, 0), u32_at(&a, 4)).map(|()| 0)?);
        }
        _ => {
            let status = event_channel::status(partition, u16_at(&a, 0), u32_at(&a, 4))?;
            let mut out = [0u8; 16];
            out[0..4].copy_from_slice(&status.status.to_le_bytes());
            out[4..8].copy_from_slice(&status.vcpu.to_le_bytes());
            out[8..12].copy_from_slice(&status.dom_or_virq.to_le_bytes());
            out[12..16].copy_from_slice(&status.port.to_le_bytes());
            copy_to_guest(partition, backend, arg + 8, &out)?;
            return Ok(0);
        }
    };
    copy_to_guest(partition, backend, arg + at, &port.to_le_bytes())?;
    Ok(0)
}

fn xen_version<B: Backend>(partition: &Partition, backend: &mut B, cmd: u64, arg: u64) -> Result<u64, Stop> {
    match cmd {
        version::VERSION => Ok(u64::from(VERSION_MAJOR << 16 | VERSION_MINOR)),
        version::EXTRAVERSION => {
            let mut text = [0u8; version::EXTRAVERSION_BYTES];
            text[..EXTRAVERSION.len()].copy_from_slice(EXTRAVERSION);
            copy_to_guest(partition, backend, arg, &text)?;
            Ok(0)
        }
        version::GET_FEATURES => {
            // xen_feature_info: the submap index in, the submap out (only submap 0 has bits).
            let mut submap_idx = [0u8; 4];
            copy_from_guest(partition, backend, arg, &mut submap_idx)?;
            let submap = if u32::from_le_bytes(submap_idx) == 0 { FEATURES } else { 0 };
            copy_to_guest(partition, backend, arg + 4, &submap.to_le_bytes())?;
            Ok(0)
        }
        version::PAGESIZE => Ok(PAGE),
        _ => Err(errno::ENOSYS.into()),
    }
}

fn console_io<B: Backend>(
    partition: &Partition,
    backend: &mut B,
    cmd: u64,
    count: u64,
    buffer: u64,
) -> Result<u64, Stop> {
    if cmd != console::WRITE {
        return Err(errno::ENOSYS.into());
    }
    if count > CONSOLE_WRITE_MAX {
        return Err(errno::EINVAL.into());
    }
    let mut chunk = [0u8; 256];
    let mut done = 0;
    while done < count {
        let n = (count - done).min(chunk.len() as u64) as usize;
        copy_from_guest(partition, backend, buffer + done, &mut chunk[..n])?;
        for &byte in &chunk[..n] {
            partition.console_write(byte);
        }
        done += n as u64;
    }
    Ok(0)
}

fn sched_op<B: Backend>(partition: &Partition, backend: &mut B, cmd: u64, arg: u64) -> Result<u64, Stop> {
    match cmd {
        // One vCPU per core: there is nothing else to run, and a blocked vCPU would only
        // wait for its next interrupt, which the guest's own HLT does too.
        sched::YIELD | sched::BLOCK => Ok(0),
        sched::SHUTDOWN => {
            let mut reason = [0u8; 4];
            copy_from_guest(partition, backend, arg, &mut reason)?;
            Err(Stop::Shutdown(u32::from_le_bytes(reason)))
        }
        // Returns at once: Xen's poll may wake spuriously and its callers check again (a
        // vCPU owns its core; there is nothing to yield it to). The ports are checked.
        sched::POLL => {
            let mut poll = [0u8; sched::POLL_BYTES];
            copy_from_guest(partition, backend, arg, &mut poll)?;
            let (ports, count) = (u64_at(&poll, 0), u32_at(&poll, 8));
            if count > POLL_MAX_PORTS {
                return Err(errno::EINVAL.into());
            }
            let mut list = [0u32; POLL_MAX_PORTS as usize];
            for (i, port) in list.iter_mut().take(count as usize).enumerate() {
                let mut bytes = [0u8; 4];
                copy_from_guest(partition, backend, ports + 4 * i as u64, &mut bytes)?;
                *port = u32::from_le_bytes(bytes);
            }
            event_channel::any_pending(partition, list.iter().take(count as usize).copied())?;
            Ok(0)
        }
        _ => Err(errno::ENOSYS.into()),
    }
}

/// A write of the hypercall page MSR (`HYPERCALL_PAGE_MSR`): page index 0 at a page of the
/// partition's own writable RAM gets the stubs (Xen's layout: stub N at N * 32). False
/// (#GP) otherwise, as Xen refuses it.
pub fn write_page_msr(partition: &Partition, msr: u32, value: u64) -> bool {
    if msr != HYPERCALL_PAGE_MSR || value & (PAGE - 1) != 0 {
        return false;
    }
    let Some(host) = crate::hyperv::private_memory(partition, value, PAGE, true) else { return false };
    let amd = crate::cpu::capabilities::is_amd();
    for n in 0..(PAGE as usize / HYPERCALL_STUB_BYTES) {
        let mut stub = hypercall_stub(n as u32, amd);
        if n as u32 == IRET {
            stub = [0xCC; HYPERCALL_STUB_BYTES];
            stub[..2].copy_from_slice(&[0x0F, 0x0B]);
        }
        // SAFETY: 32 bytes inside the page checked above (the partition's own writable RAM,
        // identity-mapped); its other vCPUs may read them meanwhile, as on Xen.
        unsafe {
            core::ptr::copy_nonoverlapping(
                stub.as_ptr(),
                (host + (n * HYPERCALL_STUB_BYTES) as u64) as *mut u8,
                stub.len(),
            )
        };
    }
    true
}

/// A read of a synthetic MSR by a Xen partition: the hypercall page MSR reads 0 (as on
/// Xen); every other is #GP (`None`): a Xen partition has no Hyper-V MSRs.
pub fn read_msr(msr: u32) -> Option<u64> {
    (msr == HYPERCALL_PAGE_MSR).then_some(0)
}

/// The guest's paging, to walk its pointers.
fn paging<B: Backend>(backend: &mut B) -> PagingState {
    let (cr3, _) = backend.guest_cr3_and_cs_base();
    PagingState { cr0: backend.guest_cr0(), cr3, cr4: backend.guest_cr4(), efer: backend.guest_efer() }
}

/// The host address of `len` bytes (within one page) at guest linear address `linear`, in
/// the partition's own RAM, writable if `write`.
fn host_of<B: Backend>(
    partition: &Partition,
    backend: &mut B,
    linear: u64,
    len: u64,
    write: bool,
) -> Result<u64, Stop> {
    let memory = crate::exits::mmio::PartitionRam(partition.config());
    let gpa = translate(&memory, paging(backend), linear).ok_or(Stop::Errno(errno::EFAULT))?;
    crate::hyperv::private_memory(partition, gpa, len, write).ok_or(Stop::Errno(errno::EFAULT))
}

/// Copies `buf.len()` bytes from the guest's linear address `linear`, page by page.
fn copy_from_guest<B: Backend>(
    partition: &Partition,
    backend: &mut B,
    linear: u64,
    buf: &mut [u8],
) -> Result<(), Stop> {
    let mut done = 0;
    while done < buf.len() {
        let at = linear.wrapping_add(done as u64);
        let n = ((PAGE - (at & (PAGE - 1))) as usize).min(buf.len() - done);
        let host = host_of(partition, backend, at, n as u64, false)?;
        // SAFETY: `n` bytes of the partition's own RAM (checked by `host_of`); its other
        // vCPUs may change them meanwhile, which only changes what this call reads.
        unsafe { core::ptr::copy_nonoverlapping(host as *const u8, buf[done..].as_mut_ptr(), n) };
        done += n;
    }
    Ok(())
}

/// Copies `data` to the guest's linear address `linear`, page by page.
fn copy_to_guest<B: Backend>(partition: &Partition, backend: &mut B, linear: u64, data: &[u8]) -> Result<(), Stop> {
    let mut done = 0;
    while done < data.len() {
        let at = linear.wrapping_add(done as u64);
        let n = ((PAGE - (at & (PAGE - 1))) as usize).min(data.len() - done);
        let host = host_of(partition, backend, at, n as u64, true)?;
        // SAFETY: `n` bytes of the partition's own writable RAM (checked by `host_of`).
        unsafe { core::ptr::copy_nonoverlapping(data[done..].as_ptr(), host as *mut u8, n) };
        done += n;
    }
    Ok(())
}
