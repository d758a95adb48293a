//! A Xen partition's hypercalls: VMCALL (Intel) or VMMCALL (AMD), executed directly or
//! through the hypercall page. RAX = the call's number; arguments in RDI, RSI, RDX, R10, R8
//! (64-bit) or EBX, ECX, EDX, ESI, EDI (32-bit); the result in RAX, a negative errno on
//! failure (`xen/arch/x86/hvm/hypercall.c`). Guest pointers are linear addresses, walked
//! through the guest's paging, and must lead to the partition's own RAM (else -EFAULT).
//!
//! Offered so far (docs/xen.md): `xen_version`, `console_io` write, `sched_op` yield,
//! block and shutdown. Every other call, event channels and memory_op among them, is
//! -ENOSYS.

use crate::backend::Backend;
use crate::exits::Action;
use crate::partition::{Fault, Partition};
use bulkhead_abi::xen::{
    HYPERCALL_PAGE_MSR, HYPERCALL_STUB_BYTES, VERSION_MAJOR, VERSION_MINOR, call, console, errno, failure,
    hypercall_stub, sched, version,
};
use bulkhead_virt::guest_state::ExecutionMode;
use bulkhead_virt::guest_walk::{PagingState, translate};

const PAGE: u64 = 0x1000;
/// The longest console write one call takes (Xen's own limit is larger; a page keeps the
/// exit short).
const CONSOLE_WRITE_MAX: u64 = 4096;
/// `__HYPERVISOR_iret`: a PV-only call whose stub is `ud2` in an HVM guest's page.
const IRET: u32 = 23;
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
        match call_with(partition, backend, number, args) {
            Ok(value) => value,
            Err(Stop::Errno(e)) => failure(e),
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

fn call_with<B: Backend>(partition: &Partition, backend: &mut B, number: u64, args: [u64; 5]) -> Result<u64, Stop> {
    match number {
        call::XEN_VERSION => xen_version(partition, backend, args[0], args[1]),
        call::CONSOLE_IO => console_io(partition, backend, args[0], args[1], args[2]),
        call::SCHED_OP => sched_op(partition, backend, args[0], args[1]),
        _ => Err(errno::ENOSYS.into()),
    }
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
            // xen_feature_info: the submap index in, the submap out. No feature is offered
            // yet (event channel upcalls come with the adapter).
            let mut submap_idx = [0u8; 4];
            copy_from_guest(partition, backend, arg, &mut submap_idx)?;
            copy_to_guest(partition, backend, arg + 4, &0u32.to_le_bytes())?;
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
