//! The guest side of Xen's HVM interface ([`crate::xen`], docs/xen.md) as a small safe
//! client: install the hypercall page, make hypercalls through it (or directly), ask the
//! version, extraversion, features and page size, write to the console and shut down; map
//! shared_info, register `vcpu_info`, set the upcall vector and HVM parameters, make every
//! event channel operation and `SCHEDOP_poll`. [`SharedInfo`] and [`VcpuInfo`] are the
//! 64-bit layouts with atomic fields, and [`SharedInfo::scan`] is the 2-level pending scan
//! an upcall handler runs. The message ring of a message connection is
//! [`crate::xen_ring::Ring`].
//!
//! The privileged steps (WRMSR, executing VMCALL/VMMCALL or the page's stubs, knowing a
//! buffer's guest-physical address) sit behind the [`Cpu`] trait, which is `unsafe` to
//! implement: an implementation vouches that it runs at CPL 0 under a hypervisor that
//! offers Xen's interface. [`X64`] is the implementation for identity-mapped x86-64 guests;
//! the host tests use a simulated one. Everything else is safe code.
//!
//! Calls that take a buffer pass its guest-physical address; the hypervisor reads or
//! writes it during the call, so the buffers here are locals of the calling function.

use crate::xen::{
    self, DOMID_SELF, HYPERCALL_PAGE_MSR, HYPERCALL_STUB_BYTES, call, console, evtchn, hvm, memory, sched, shared_info,
    vcpu, version,
};
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Stubs in the hypercall page (4096 / 32): calls numbered above go directly.
pub const HYPERCALL_STUBS: u64 = (4096 / HYPERCALL_STUB_BYTES) as u64;
/// The most bytes one `console_io` write carries (Bulkhead refuses more with -EINVAL);
/// [`Client::console_write`] splits longer text.
pub const CONSOLE_WRITE_MAX: usize = 4096;

/// The privileged operations the client needs.
///
/// # Safety
/// Implementations run at CPL 0 in a partition whose hypervisor reports Xen's interface
/// (CPUID "XenVMMXenVMM", the hypercall page MSR in leaf base+2); `guest_physical` returns
/// the true guest-physical address of a buffer (the hypervisor reads and writes there);
/// `hypercall` makes the call with Xen's 64-bit register convention (RAX = number, RDI,
/// RSI, RDX, R10, R8 = arguments, the result in RAX) and lets the hypervisor write the
/// buffers the arguments point at.
pub unsafe trait Cpu {
    fn write_msr(&mut self, msr: u32, value: u64);
    /// Guest-physical address of the byte at `address`.
    fn guest_physical(&self, address: *const u8) -> u64;
    /// Hypercall `number` with `args`: through the stub at `page + 32 * number` when a
    /// hypercall page is installed at (guest address) `page`, else by VMCALL or VMMCALL
    /// directly. Returns RAX.
    fn hypercall(&mut self, page: Option<u64>, number: u64, args: [u64; 5]) -> u64;
}

/// The [`Cpu`] of an x86-64 guest at CPL 0 whose virtual addresses are its
/// guest-physical addresses (identity-mapped, as Bulkhead starts 64-bit payloads).
#[cfg(target_arch = "x86_64")]
pub struct X64 {
    amd: bool,
}

#[cfg(target_arch = "x86_64")]
impl X64 {
    /// # Safety
    /// The caller runs at CPL 0, identity-mapped, in a partition whose hypervisor reports
    /// Xen's interface (see [`Cpu`]).
    pub unsafe fn new() -> Self {
        Self { amd: is_amd_vendor(core::arch::x86_64::__cpuid(0)) }
    }

    /// Whether direct calls use VMMCALL (AMD) rather than VMCALL (Intel): the CPU's own
    /// instruction, as CPUID leaf 0 names the vendor.
    pub fn uses_vmmcall(&self) -> bool {
        self.amd
    }
}

/// Whether CPUID leaf 0 names an AMD-architecture CPU ("AuthenticAMD" or "HygonGenuine"),
/// whose hypercall instruction is VMMCALL.
#[cfg(target_arch = "x86_64")]
pub fn is_amd_vendor(leaf0: core::arch::x86_64::CpuidResult) -> bool {
    let amd = (leaf0.ebx, leaf0.edx, leaf0.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
    let hygon = (leaf0.ebx, leaf0.edx, leaf0.ecx) == (0x6f67_7948, 0x6e65_476e, 0x656e_6975);
    amd || hygon
}

// SAFETY: `X64::new`'s caller vouched for CPL 0, identity mapping and the interface.
#[cfg(target_arch = "x86_64")]
unsafe impl Cpu for X64 {
    fn write_msr(&mut self, msr: u32, value: u64) {
        // SAFETY: the hypercall page MSR the interface reports (see `X64::new`); the client
        // writes only a page the caller gave it.
        unsafe {
            core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
                options(nostack))
        };
    }

    fn guest_physical(&self, address: *const u8) -> u64 {
        address as u64
    }

    fn hypercall(&mut self, page: Option<u64>, number: u64, args: [u64; 5]) -> u64 {
        let result: u64;
        match page {
            // SAFETY: the page was installed through the MSR, so the hypervisor filled it
            // with its stubs (`mov eax, N; vmcall|vmmcall; ret`); the calls write only the
            // buffers the arguments name. Xen's convention may clobber the argument
            // registers, so all are outputs; without `nomem`, the compiler assumes the
            // buffers changed.
            Some(page) if number < HYPERCALL_STUBS => unsafe {
                core::arch::asm!(
                    "call {stub}",
                    stub = in(reg) page + number * HYPERCALL_STUB_BYTES as u64,
                    inout("rax") number => result,
                    inout("rdi") args[0] => _,
                    inout("rsi") args[1] => _,
                    inout("rdx") args[2] => _,
                    inout("r10") args[3] => _,
                    inout("r8") args[4] => _,
                )
            },
            // SAFETY: as above; VMMCALL on AMD, VMCALL on Intel (the other is #UD there).
            _ if self.amd => unsafe {
                core::arch::asm!(
                    "vmmcall",
                    inout("rax") number => result,
                    inout("rdi") args[0] => _,
                    inout("rsi") args[1] => _,
                    inout("rdx") args[2] => _,
                    inout("r10") args[3] => _,
                    inout("r8") args[4] => _,
                    options(nostack),
                )
            },
            // SAFETY: as above.
            _ => unsafe {
                core::arch::asm!(
                    "vmcall",
                    inout("rax") number => result,
                    inout("rdi") args[0] => _,
                    inout("rsi") args[1] => _,
                    inout("rdx") args[2] => _,
                    inout("r10") args[3] => _,
                    inout("r8") args[4] => _,
                    options(nostack),
                )
            },
        }
        result
    }
}

/// A refused call: the positive errno of Xen's negative result ([`xen::errno`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i64);

impl Errno {
    pub const fn is(self, errno: i64) -> bool {
        self.0 == errno
    }
}

/// Why the client refused before calling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// The hypercall page's address is not 4 KiB aligned (its low 12 bits are the index).
    PageMisaligned(u64),
}

/// The `xen_version` string of `XENVER_extraversion` (at most 16 bytes, NUL-terminated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extraversion([u8; version::EXTRAVERSION_BYTES]);

impl Extraversion {
    /// The bytes before the first NUL (all 16 if there is none).
    pub fn as_bytes(&self) -> &[u8] {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        &self.0[..len]
    }

    /// The string, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        core::str::from_utf8(self.as_bytes()).ok()
    }

    /// Whether the hypervisor NUL-terminated it within its 16 bytes.
    pub fn is_terminated(&self) -> bool {
        self.0.contains(&0)
    }
}

/// `xen_feature_info`: `{u32 submap_idx; u32 submap}` (Xen's `version.h`).
#[repr(C)]
struct FeatureInfo {
    submap_index: u32,
    submap: u32,
}

/// `sched_shutdown`: `{u32 reason}` (Xen's `sched.h`).
#[repr(C)]
struct Shutdown {
    reason: u32,
}

/// An event channel port (1..[`evtchn::PORTS`] on Bulkhead; 0 is never a port).
pub type Port = u32;

/// Bits per word of shared_info's event arrays for a 64-bit guest (`xen_ulong_t`).
pub const WORD_BITS: usize = 64;
/// Ports a 64-bit guest's 2-level arrays describe (64 words of 64 bits).
pub const PORTS_2L: usize = WORD_BITS * WORD_BITS;

/// `struct vcpu_info` of a 64-bit guest (64 bytes): `evtchn_upcall_pending` at 0,
/// `evtchn_upcall_mask` at 1, `evtchn_pending_sel` at 8, then the arch part (cr2) and the
/// time info, which Bulkhead does not fill. Every field is atomic: the hypervisor writes
/// it from another core while the guest runs.
#[repr(C, align(64))]
pub struct VcpuInfo {
    upcall_pending: AtomicU8,
    upcall_mask: AtomicU8,
    _pad: [AtomicU8; 6],
    pending_sel: AtomicU64,
    _arch_and_time: [AtomicU64; 6],
}

const _: () = {
    assert!(core::mem::size_of::<VcpuInfo>() == shared_info::VCPU_INFO_BYTES);
    assert!(core::mem::offset_of!(VcpuInfo, upcall_pending) == shared_info::UPCALL_PENDING);
    assert!(core::mem::offset_of!(VcpuInfo, upcall_mask) == shared_info::UPCALL_MASK);
    assert!(core::mem::offset_of!(VcpuInfo, pending_sel) == shared_info::pending_sel_offset(WORD_BITS));
};

impl VcpuInfo {
    /// All zero, as the hypervisor leaves a fresh one.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self {
            upcall_pending: AtomicU8::new(0),
            upcall_mask: AtomicU8::new(0),
            _pad: [const { AtomicU8::new(0) }; 6],
            pending_sel: AtomicU64::new(0),
            _arch_and_time: [const { AtomicU64::new(0) }; 6],
        }
    }

    /// `evtchn_upcall_pending`: some selector bit was set since the last scan.
    pub fn upcall_pending(&self) -> bool {
        self.upcall_pending.load(Ordering::Acquire) != 0
    }

    /// `evtchn_upcall_mask` (Xen's "interrupts off" for PV guests; kept, not used for
    /// delivery by Bulkhead).
    pub fn upcall_mask(&self) -> bool {
        self.upcall_mask.load(Ordering::Acquire) != 0
    }

    /// `evtchn_pending_sel`: which words of the pending array have news.
    pub fn pending_selector(&self) -> u64 {
        self.pending_sel.load(Ordering::Acquire)
    }
}

/// The shared_info page of a 64-bit guest (2-level event ABI): 32 `vcpu_info` slots, then
/// `evtchn_pending[64]` and `evtchn_mask[64]` (u64 words), then the wallclock fields,
/// which Bulkhead does not fill. A guest keeps one in a `static` (its own RAM) and hands
/// it to [`Client::map_shared_info`]; from then on the hypervisor writes it.
#[repr(C, align(4096))]
pub struct SharedInfo {
    vcpu_info: [VcpuInfo; 32],
    pending: [AtomicU64; WORD_BITS],
    mask: [AtomicU64; WORD_BITS],
    _rest: [AtomicU64; 128],
}

const _: () = {
    assert!(core::mem::size_of::<SharedInfo>() == 4096);
    assert!(core::mem::offset_of!(SharedInfo, pending) == shared_info::PENDING_OFFSET);
    assert!(core::mem::offset_of!(SharedInfo, mask) == shared_info::mask_offset(WORD_BITS));
};

fn word_and_bit(port: Port) -> Option<(usize, u64)> {
    let port = port as usize;
    (port < PORTS_2L).then(|| (port / WORD_BITS, 1u64 << (port % WORD_BITS)))
}

impl SharedInfo {
    /// All zero: every port clear and unmasked, as the hypervisor leaves a fresh one.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self {
            vcpu_info: [const { VcpuInfo::new() }; 32],
            pending: [const { AtomicU64::new(0) }; WORD_BITS],
            mask: [const { AtomicU64::new(0) }; WORD_BITS],
            _rest: [const { AtomicU64::new(0) }; 128],
        }
    }

    /// The `vcpu_info` slot of vCPU `vcpu` (only the first [`xen::LEGACY_MAX_VCPUS`] have
    /// one here; a registered `vcpu_info` replaces it).
    pub fn vcpu_info(&self, vcpu: u32) -> Option<&VcpuInfo> {
        self.vcpu_info.get(vcpu as usize)
    }

    /// Whether `port`'s pending bit is set (false for a port beyond the arrays).
    pub fn is_pending(&self, port: Port) -> bool {
        word_and_bit(port).is_some_and(|(word, bit)| self.pending[word].load(Ordering::Acquire) & bit != 0)
    }

    /// Whether `port` is masked (true for a port beyond the arrays: it can never fire).
    pub fn is_masked(&self, port: Port) -> bool {
        word_and_bit(port).is_none_or(|(word, bit)| self.mask[word].load(Ordering::Acquire) & bit != 0)
    }

    /// Masks `port`: its raising sets the pending bit but no selector bit and no upcall.
    pub fn mask(&self, port: Port) {
        if let Some((word, bit)) = word_and_bit(port) {
            self.mask[word].fetch_or(bit, Ordering::AcqRel);
        }
    }

    /// Clears `port`'s pending bit; whether it was set.
    pub fn clear_pending(&self, port: Port) -> bool {
        word_and_bit(port).is_some_and(|(word, bit)| self.pending[word].fetch_and(!bit, Ordering::AcqRel) & bit != 0)
    }

    /// The hypervisor's half (Xen's `evtchn_2l_set_pending`), for the hypervisor and for
    /// simulations: sets `port`'s pending bit; if it was clear and the port is unmasked,
    /// sets its word's bit in `vcpu`'s selector; if that was clear, sets
    /// `evtchn_upcall_pending`. Returns whether that last flag went from 0 to 1: then the
    /// vCPU needs an upcall. A port beyond the arrays does nothing.
    pub fn raise(&self, port: Port, vcpu: &VcpuInfo) -> bool {
        let Some((word, bit)) = word_and_bit(port) else { return false };
        if self.pending[word].fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            return false;
        }
        if self.mask[word].load(Ordering::Acquire) & bit != 0 {
            return false;
        }
        let selector_bit = 1u64 << word;
        if vcpu.pending_sel.fetch_or(selector_bit, Ordering::AcqRel) & selector_bit != 0 {
            return false;
        }
        vcpu.upcall_pending.swap(1, Ordering::AcqRel) == 0
    }

    /// The guest's half of Xen's `evtchn_2l_unmask` without the hypercall: clears the
    /// mask bit and, if the port is pending, sets the selector and upcall flags as a
    /// raise would. Returns whether that needs an upcall the guest must then take itself
    /// (Bulkhead's EVTCHNOP_unmask does this and sends it; see [`Client::unmask`]).
    pub fn unmask_local(&self, port: Port, vcpu: &VcpuInfo) -> bool {
        let Some((word, bit)) = word_and_bit(port) else { return false };
        self.mask[word].fetch_and(!bit, Ordering::AcqRel);
        if self.pending[word].load(Ordering::Acquire) & bit == 0 {
            return false;
        }
        let selector_bit = 1u64 << word;
        if vcpu.pending_sel.fetch_or(selector_bit, Ordering::AcqRel) & selector_bit != 0 {
            return false;
        }
        vcpu.upcall_pending.swap(1, Ordering::AcqRel) == 0
    }

    /// The scan an upcall handler runs for `vcpu` (Linux's `evtchn_2l_handle_events`):
    /// clears `evtchn_upcall_pending`, exchanges the selector with 0, and walks the
    /// selected words' pending & !mask bits in order, clearing each pending bit as it
    /// yields its port. A port raised again during the scan is either yielded by it or
    /// sets the selector (and the upcall flag) anew, so nothing is lost; a port raised
    /// twice before the scan is yielded once (events coalesce, as on Xen).
    pub fn scan<'a>(&'a self, vcpu: &'a VcpuInfo) -> PendingPorts<'a> {
        vcpu.upcall_pending.store(0, Ordering::Release);
        let selector = vcpu.pending_sel.swap(0, Ordering::AcqRel);
        PendingPorts { shared: self, selector, word: 0, bits: 0 }
    }
}

/// The ports a [`SharedInfo::scan`] finds pending, in order.
pub struct PendingPorts<'a> {
    shared: &'a SharedInfo,
    selector: u64,
    word: usize,
    bits: u64,
}

impl Iterator for PendingPorts<'_> {
    type Item = Port;

    fn next(&mut self) -> Option<Port> {
        loop {
            while self.bits != 0 {
                let bit = self.bits.trailing_zeros() as usize;
                self.bits &= self.bits - 1;
                let port = (self.word * WORD_BITS + bit) as Port;
                // Only a port whose bit this scan clears counts: another scan (another
                // vCPU) may have taken it meanwhile.
                if self.shared.clear_pending(port) {
                    return Some(port);
                }
            }
            if self.selector == 0 {
                return None;
            }
            self.word = self.selector.trailing_zeros() as usize;
            self.selector &= self.selector - 1;
            self.bits = self.shared.pending[self.word].load(Ordering::Acquire)
                & !self.shared.mask[self.word].load(Ordering::Acquire);
        }
    }
}

/// What `EVTCHNOP_status` says a port is (`EVTCHNSTAT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Closed,
    /// Allocated, waiting for `remote_dom` to bind it.
    Unbound {
        remote_dom: u16,
    },
    /// Bound to `port` of domain `dom` (on Bulkhead: a connection's other end, or a
    /// loopback port of this domain).
    Interdomain {
        dom: u16,
        port: Port,
    },
    Pirq(u32),
    Virq(u32),
    Ipi,
    /// A status this client does not know.
    Other(u32),
}

/// `EVTCHNOP_status`: the port's kind and the vCPU it notifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelStatus {
    pub channel: Channel,
    pub vcpu: u32,
}

// Argument blocks of the calls (Xen's public headers; offsets in `abi::xen`).

#[repr(C)]
struct AddToPhysmap {
    domid: u16,
    size: u16,
    space: u32,
    idx: u64,
    gpfn: u64,
}

#[repr(C)]
struct RegisterVcpuInfo {
    mfn: u64,
    offset: u32,
    reserved: u32,
}

#[repr(C)]
struct HvmParam {
    domid: u16,
    pad: u16,
    index: u32,
    value: u64,
}

#[repr(C)]
struct UpcallVector {
    vcpu: u32,
    vector: u8,
    pad: [u8; 3],
}

#[repr(C)]
struct BindInterdomain {
    remote_dom: u16,
    pad: u16,
    remote_port: u32,
    local_port: u32,
}

#[repr(C)]
struct BindVirq {
    virq: u32,
    vcpu: u32,
    port: u32,
}

#[repr(C)]
struct AllocUnbound {
    dom: u16,
    remote_dom: u16,
    port: u32,
}

#[repr(C)]
struct BindIpi {
    vcpu: u32,
    port: u32,
}

#[repr(C)]
struct BindVcpu {
    port: u32,
    vcpu: u32,
}

#[repr(C)]
struct PortArg {
    port: u32,
}

#[repr(C)]
struct Status {
    dom: u16,
    pad: u16,
    port: u32,
    status: u32,
    vcpu: u32,
    u: [u32; 2],
}

#[repr(C)]
struct SchedPoll {
    ports: u64,
    nr_ports: u32,
    pad: u32,
    timeout: u64,
}

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<AddToPhysmap>() == memory::ADD_TO_PHYSMAP_BYTES);
    assert!(size_of::<RegisterVcpuInfo>() == vcpu::REGISTER_VCPU_INFO_BYTES);
    assert!(size_of::<HvmParam>() == hvm::PARAM_BYTES);
    assert!(size_of::<UpcallVector>() == hvm::UPCALL_VECTOR_BYTES);
    assert!(size_of::<BindInterdomain>() == 12);
    assert!(size_of::<Status>() == 24);
    assert!(size_of::<SchedPoll>() == sched::POLL_BYTES);
};

/// One vCPU's Xen client; see the module notes.
pub struct Client<C: Cpu> {
    cpu: C,
    page: Option<u64>,
}

impl<C: Cpu> Client<C> {
    /// A client without a hypercall page: calls go directly until
    /// [`Client::install_hypercall_page`].
    pub fn new(cpu: C) -> Self {
        Self { cpu, page: None }
    }

    /// The hypercall page in use (its guest address), if any.
    pub fn hypercall_page(&self) -> Option<u64> {
        self.page
    }

    /// Asks the hypervisor to fill the 4 KiB page at guest-physical `gpa` (page index 0
    /// in bits 11:0 of the MSR value) with its stubs; later calls go through it. The page
    /// must be in the partition's own memory and executable; the hypervisor answers a page
    /// elsewhere with #GP.
    pub fn install_hypercall_page(&mut self, gpa: u64) -> Result<(), SetupError> {
        if gpa & 0xfff != 0 {
            return Err(SetupError::PageMisaligned(gpa));
        }
        self.cpu.write_msr(HYPERCALL_PAGE_MSR, gpa);
        self.page = Some(gpa);
        Ok(())
    }

    /// Any hypercall, arguments as given (RDI, RSI, RDX, R10, R8); returns RAX. For
    /// callers that build their own arguments (and tests that send bad ones on purpose).
    pub fn hypercall(&mut self, number: u64, args: [u64; 5]) -> u64 {
        self.cpu.hypercall(self.page, number, args)
    }

    /// A hypercall's value, or its errno.
    pub fn call(&mut self, number: u64, args: [u64; 5]) -> Result<u64, Errno> {
        let result = self.hypercall(number, args);
        match xen::errno_of(result) {
            Some(errno) => Err(Errno(errno)),
            None => Ok(result),
        }
    }

    /// `XENVER_version`: (major, minor).
    pub fn version(&mut self) -> Result<(u16, u16), Errno> {
        let value = self.call(call::XEN_VERSION, [version::VERSION, 0, 0, 0, 0])?;
        Ok(((value >> 16) as u16, value as u16))
    }

    /// `XENVER_extraversion`: the text after the version (".0-bulkhead" on Bulkhead).
    pub fn extraversion(&mut self) -> Result<Extraversion, Errno> {
        let mut bytes = [0u8; version::EXTRAVERSION_BYTES];
        let gpa = self.cpu.guest_physical(bytes.as_mut_ptr());
        self.call(call::XEN_VERSION, [version::EXTRAVERSION, gpa, 0, 0, 0])?;
        Ok(Extraversion(bytes))
    }

    /// `XENVER_get_features`: feature submap `submap` (bits [`xen::feature`]).
    pub fn features(&mut self, submap: u32) -> Result<u32, Errno> {
        // The hypervisor fills `submap`; a value it leaves alone shows as all ones.
        let mut info = FeatureInfo { submap_index: submap, submap: u32::MAX };
        let gpa = self.cpu.guest_physical((&raw mut info).cast::<u8>());
        self.call(call::XEN_VERSION, [version::GET_FEATURES, gpa, 0, 0, 0])?;
        Ok(info.submap)
    }

    /// `XENVER_pagesize`.
    pub fn page_size(&mut self) -> Result<u64, Errno> {
        self.call(call::XEN_VERSION, [version::PAGESIZE, 0, 0, 0, 0])
    }

    /// `CONSOLEIO_write`: `text` to the partition's console, in calls of at most
    /// [`CONSOLE_WRITE_MAX`] bytes. Stops at the first refusal.
    pub fn console_write(&mut self, text: &[u8]) -> Result<(), Errno> {
        for chunk in text.chunks(CONSOLE_WRITE_MAX) {
            let gpa = self.cpu.guest_physical(chunk.as_ptr());
            self.call(call::CONSOLE_IO, [console::WRITE, chunk.len() as u64, gpa, 0, 0])?;
        }
        Ok(())
    }

    /// `SCHEDOP_yield`.
    pub fn yield_now(&mut self) -> Result<(), Errno> {
        self.call(call::SCHED_OP, [sched::YIELD, 0, 0, 0, 0]).map(|_| ())
    }

    /// `SCHEDOP_shutdown` with `reason` ([`sched`]`::SHUTDOWN_*`). On Bulkhead the
    /// partition's fault policy applies and the call does not return; it returns when the
    /// hypervisor refused it, or (`Ok`) let this vCPU run on.
    pub fn shutdown(&mut self, reason: u32) -> Result<(), Errno> {
        let mut shutdown = Shutdown { reason };
        let gpa = self.cpu.guest_physical((&raw mut shutdown).cast::<u8>());
        self.call(call::SCHED_OP, [sched::SHUTDOWN, gpa, 0, 0, 0]).map(|_| ())
    }

    fn with_arg<T>(&mut self, number: u64, command: u64, arg: &mut T) -> Result<u64, Errno> {
        let gpa = self.cpu.guest_physical((arg as *mut T).cast::<u8>());
        self.call(number, [command, gpa, 0, 0, 0])
    }

    /// `XENMEM_add_to_physmap` as given (for callers that send other spaces or domains).
    pub fn add_to_physmap(&mut self, domid: u16, space: u32, idx: u64, gpfn: u64) -> Result<(), Errno> {
        let mut arg = AddToPhysmap { domid, size: 0, space, idx, gpfn };
        self.with_arg(call::MEMORY_OP, memory::ADD_TO_PHYSMAP, &mut arg).map(|_| ())
    }

    /// `XENMEM_add_to_physmap(DOMID_SELF, XENMAPSPACE_shared_info, 0, gpfn of page)`: the
    /// hypervisor keeps `page` as this domain's shared_info from now on (zeroed the first
    /// time, its contents moved along when it is mapped again elsewhere).
    pub fn map_shared_info(&mut self, page: &'static SharedInfo) -> Result<(), Errno> {
        let gpfn = self.cpu.guest_physical((page as *const SharedInfo).cast::<u8>()) >> 12;
        self.add_to_physmap(DOMID_SELF, memory::SPACE_SHARED_INFO, 0, gpfn)
    }

    /// `VCPUOP_register_vcpu_info` for vCPU `vcpu` at guest-physical `gpa` (frame and
    /// offset), as given.
    pub fn register_vcpu_info_at(&mut self, vcpu_id: u32, gpa: u64) -> Result<(), Errno> {
        let mut arg = RegisterVcpuInfo { mfn: gpa >> 12, offset: (gpa & 0xfff) as u32, reserved: 0 };
        let arg_gpa = self.cpu.guest_physical((&raw mut arg).cast::<u8>());
        self.call(call::VCPU_OP, [vcpu::REGISTER_VCPU_INFO, u64::from(vcpu_id), arg_gpa, 0, 0]).map(|_| ())
    }

    /// `VCPUOP_register_vcpu_info`: vCPU `vcpu_id`'s `vcpu_info` lives in `info` from now
    /// on (64 bytes, 64-byte aligned, so it never crosses a page).
    pub fn register_vcpu_info(&mut self, vcpu_id: u32, info: &'static VcpuInfo) -> Result<(), Errno> {
        let gpa = self.cpu.guest_physical((info as *const VcpuInfo).cast::<u8>());
        self.register_vcpu_info_at(vcpu_id, gpa)
    }

    /// `VCPUOP_is_up`.
    pub fn vcpu_is_up(&mut self, vcpu_id: u32) -> Result<bool, Errno> {
        self.call(call::VCPU_OP, [vcpu::IS_UP, u64::from(vcpu_id), 0, 0, 0]).map(|up| up != 0)
    }

    /// `HVMOP_set_param` for domain `domid`.
    pub fn hvm_set_param(&mut self, domid: u16, index: u32, value: u64) -> Result<(), Errno> {
        let mut arg = HvmParam { domid, pad: 0, index, value };
        self.with_arg(call::HVM_OP, hvm::SET_PARAM, &mut arg).map(|_| ())
    }

    /// `HVMOP_get_param` for domain `domid`.
    pub fn hvm_get_param(&mut self, domid: u16, index: u32) -> Result<u64, Errno> {
        // The hypervisor fills `value`; one it leaves alone shows as all ones.
        let mut arg = HvmParam { domid, pad: 0, index, value: u64::MAX };
        self.with_arg(call::HVM_OP, hvm::GET_PARAM, &mut arg)?;
        Ok(arg.value)
    }

    /// `HVM_PARAM_CALLBACK_IRQ` = vector `vector` (type 2): the domain-wide callback
    /// (stored, not used for delivery on Bulkhead; per-vCPU vectors are).
    pub fn set_callback_vector(&mut self, vector: u8) -> Result<(), Errno> {
        let value = hvm::CALLBACK_TYPE_VECTOR << hvm::CALLBACK_TYPE_SHIFT | u64::from(vector);
        self.hvm_set_param(DOMID_SELF, hvm::PARAM_CALLBACK_IRQ, value)
    }

    /// `HVMOP_set_evtchn_upcall_vector`: events for vCPU `vcpu_id` arrive as interrupt
    /// `vector` through its local APIC (the handler EOIs it).
    pub fn set_upcall_vector(&mut self, vcpu_id: u32, vector: u8) -> Result<(), Errno> {
        let mut arg = UpcallVector { vcpu: vcpu_id, vector, pad: [0; 3] };
        self.with_arg(call::HVM_OP, hvm::SET_EVTCHN_UPCALL_VECTOR, &mut arg).map(|_| ())
    }

    /// `EVTCHNOP_bind_interdomain`: on Bulkhead `remote_dom` is the peer partition's id and
    /// `remote_port` the connection's id (or, with this domain's id or `DOMID_SELF`, a port
    /// from [`alloc_unbound`](Self::alloc_unbound): a loopback pair). Returns the new port.
    pub fn bind_interdomain(&mut self, remote_dom: u16, remote_port: u32) -> Result<Port, Errno> {
        let mut arg = BindInterdomain { remote_dom, pad: 0, remote_port, local_port: 0 };
        self.with_arg(call::EVENT_CHANNEL_OP, evtchn::BIND_INTERDOMAIN, &mut arg)?;
        Ok(arg.local_port)
    }

    /// `EVTCHNOP_alloc_unbound` for domain `dom`, bindable by `remote_dom`.
    pub fn alloc_unbound(&mut self, dom: u16, remote_dom: u16) -> Result<Port, Errno> {
        let mut arg = AllocUnbound { dom, remote_dom, port: 0 };
        self.with_arg(call::EVENT_CHANNEL_OP, evtchn::ALLOC_UNBOUND, &mut arg)?;
        Ok(arg.port)
    }

    /// `EVTCHNOP_bind_ipi`: a port whose send raises it on vCPU `vcpu_id`.
    pub fn bind_ipi(&mut self, vcpu_id: u32) -> Result<Port, Errno> {
        let mut arg = BindIpi { vcpu: vcpu_id, port: 0 };
        self.with_arg(call::EVENT_CHANNEL_OP, evtchn::BIND_IPI, &mut arg)?;
        Ok(arg.port)
    }

    /// `EVTCHNOP_bind_virq` (no VIRQ ever fires on Bulkhead).
    pub fn bind_virq(&mut self, virq: u32, vcpu_id: u32) -> Result<Port, Errno> {
        let mut arg = BindVirq { virq, vcpu: vcpu_id, port: 0 };
        self.with_arg(call::EVENT_CHANNEL_OP, evtchn::BIND_VIRQ, &mut arg)?;
        Ok(arg.port)
    }

    /// `EVTCHNOP_bind_vcpu`: `port` notifies vCPU `vcpu_id` from now on.
    pub fn bind_vcpu(&mut self, port: Port, vcpu_id: u32) -> Result<(), Errno> {
        let mut arg = BindVcpu { port, vcpu: vcpu_id };
        self.with_arg(call::EVENT_CHANNEL_OP, evtchn::BIND_VCPU, &mut arg).map(|_| ())
    }

    fn port_op(&mut self, command: u64, port: Port) -> Result<(), Errno> {
        let mut arg = PortArg { port };
        self.with_arg(call::EVENT_CHANNEL_OP, command, &mut arg).map(|_| ())
    }

    /// `EVTCHNOP_send`. On a message connection, the sender's send after writing the ring
    /// hands its messages on (-EAGAIN: the Hyper-V receiver's queue is full, the rest
    /// stays in the ring; send again later), the receiver's is its "consumed" notice.
    pub fn send(&mut self, port: Port) -> Result<(), Errno> {
        self.port_op(evtchn::SEND, port)
    }

    /// `EVTCHNOP_close`.
    pub fn close(&mut self, port: Port) -> Result<(), Errno> {
        self.port_op(evtchn::CLOSE, port)
    }

    /// `EVTCHNOP_unmask`: clears the mask bit and, if the port is pending, raises the
    /// upcall it missed.
    pub fn unmask(&mut self, port: Port) -> Result<(), Errno> {
        self.port_op(evtchn::UNMASK, port)
    }

    /// `EVTCHNOP_status` of `port` of domain `dom` (`DOMID_SELF` for this one).
    pub fn status(&mut self, dom: u16, port: Port) -> Result<ChannelStatus, Errno> {
        let mut arg = Status { dom, pad: 0, port, status: u32::MAX, vcpu: u32::MAX, u: [0; 2] };
        self.with_arg(call::EVENT_CHANNEL_OP, evtchn::STATUS, &mut arg)?;
        let channel = match arg.status {
            evtchn::STAT_CLOSED => Channel::Closed,
            evtchn::STAT_UNBOUND => Channel::Unbound { remote_dom: arg.u[0] as u16 },
            evtchn::STAT_INTERDOMAIN => Channel::Interdomain { dom: arg.u[0] as u16, port: arg.u[1] },
            evtchn::STAT_PIRQ => Channel::Pirq(arg.u[0]),
            evtchn::STAT_VIRQ => Channel::Virq(arg.u[0]),
            evtchn::STAT_IPI => Channel::Ipi,
            other => Channel::Other(other),
        };
        Ok(ChannelStatus { channel, vcpu: arg.vcpu })
    }

    /// `SCHEDOP_poll`: waits until one of `ports` is pending or `timeout` (absolute system
    /// time in ns, 0: none) passes. Bulkhead returns at once (Xen allows spurious
    /// wake-ups): the caller checks the ports again.
    pub fn poll(&mut self, ports: &[Port], timeout: u64) -> Result<(), Errno> {
        let ports_address = self.cpu.guest_physical(ports.as_ptr().cast::<u8>());
        let mut arg = SchedPoll { ports: ports_address, nr_ports: ports.len() as u32, pad: 0, timeout };
        self.with_arg(call::SCHED_OP, sched::POLL, &mut arg).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    //! The client against a simulated Xen hypervisor that records MSR writes and calls and
    //! answers as docs/xen.md says (but reports a feature bit, to see the submap read
    //! back), reading and writing the buffers at the addresses the client passes (host
    //! addresses stand for guest-physical ones).
    extern crate std;
    use super::*;
    use crate::xen::errno;
    use std::vec::Vec;

    #[derive(Default)]
    struct Simulated {
        msr_writes: Vec<(u32, u64)>,
        /// (page, number, args) of every call.
        calls: Vec<(Option<u64>, u64, [u64; 5])>,
        console: Vec<Vec<u8>>,
        shutdowns: Vec<u32>,
        /// What the next call returns instead of the simulated answer.
        answer: Option<u64>,
        /// The event channel model (shared_info, vcpu_info, ports, upcalls).
        events: Events,
    }

    /// A port of the model.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    enum Bound {
        #[default]
        Free,
        Unbound,
        /// An end of configured connection `id` whose other end is partition `peer`.
        Connection {
            id: u32,
            peer: u16,
        },
        /// Loopback to this domain's port `peer`.
        Loopback {
            peer: Port,
        },
        Ipi,
        Virq(u32),
    }

    /// A small model of the hypervisor's event channels for one domain (id [`DOMID`]) with
    /// two vCPUs, answering as docs/xen.md says: shared_info and vcpu_info addresses,
    /// upcall vectors, the ports (lowest free first, 1..PORTS), and connections from
    /// [`CONNECTIONS`] (id, peer, whether this end sends).
    struct Events {
        shared_info: Option<u64>,
        vcpu_info: [Option<u64>; 2],
        upcall_vector: [Option<u8>; 2],
        callback_irq: u64,
        ports: Vec<(Bound, u32)>,
        /// Upcalls sent: (vCPU, vector).
        upcalls: Vec<(u32, u8)>,
        /// Connection ids a send went out on.
        sent: Vec<u32>,
        polls: Vec<Vec<Port>>,
    }

    impl Default for Events {
        fn default() -> Self {
            Events {
                shared_info: None,
                vcpu_info: [None; 2],
                upcall_vector: [None; 2],
                callback_irq: 0,
                ports: std::vec![(Bound::Free, 0); evtchn::PORTS as usize],
                upcalls: Vec::new(),
                sent: Vec::new(),
                polls: Vec::new(),
            }
        }
    }

    const DOMID: u16 = 1;
    /// (connection id, peer partition, this end sends).
    const CONNECTIONS: [(u32, u16, bool); 2] = [(7, 2, true), (8, 2, false)];

    fn is_self(dom: u16) -> bool {
        dom == DOMID_SELF || dom == DOMID
    }

    fn read_u16(gpa: u64) -> u16 {
        u16::from_le_bytes(read_guest(gpa, 2).try_into().unwrap())
    }

    fn read_u32(gpa: u64) -> u32 {
        u32::from_le_bytes(read_guest(gpa, 4).try_into().unwrap())
    }

    fn read_u64(gpa: u64) -> u64 {
        u64::from_le_bytes(read_guest(gpa, 8).try_into().unwrap())
    }

    fn failure(errno: i64) -> u64 {
        xen::failure(errno)
    }

    impl Events {
        fn shared(&self) -> Option<&'static SharedInfo> {
            // SAFETY: the address the client mapped: a leaked `SharedInfo` of the test.
            self.shared_info.map(|gpa| unsafe { &*core::ptr::with_exposed_provenance::<SharedInfo>(gpa as usize) })
        }

        fn vcpu(&self, vcpu: u32) -> Option<&'static VcpuInfo> {
            let shared = self.shared()?;
            match self.vcpu_info[vcpu as usize] {
                // SAFETY: the address the client registered: a leaked `VcpuInfo`.
                Some(gpa) => Some(unsafe { &*core::ptr::with_exposed_provenance::<VcpuInfo>(gpa as usize) }),
                None => shared.vcpu_info(vcpu),
            }
        }

        /// Raises `port` as the hypervisor does; an upcall if the flags say so and the
        /// vCPU has a vector.
        fn raise(&mut self, port: Port) {
            let vcpu = self.ports[port as usize].1;
            let (Some(shared), Some(info)) = (self.shared(), self.vcpu(vcpu)) else { return };
            if shared.raise(port, info) {
                self.upcall(vcpu);
            }
        }

        /// The upcall vector IPI, if the vCPU has a vector.
        fn upcall(&mut self, vcpu: u32) {
            if let Some(vector) = self.upcall_vector[vcpu as usize] {
                self.upcalls.push((vcpu, vector));
            }
        }

        /// The peer signals connection `id`: raises the port bound to it, if any.
        fn deliver(&mut self, id: u32) -> bool {
            let port = self.ports.iter().position(|&(b, _)| matches!(b, Bound::Connection { id: c, .. } if c == id));
            port.inspect(|&port| self.raise(port as Port)).is_some()
        }

        fn allocate(&mut self, bound: Bound, vcpu: u32) -> Result<Port, i64> {
            let port = (1..self.ports.len()).find(|&p| self.ports[p].0 == Bound::Free).ok_or(errno::ENOSPC)?;
            self.ports[port] = (bound, vcpu);
            Ok(port as Port)
        }

        fn port(&self, port: u32) -> Result<Bound, i64> {
            match self.ports.get(port as usize) {
                Some(&(bound, _)) if port != 0 && bound != Bound::Free => Ok(bound),
                _ => Err(errno::EINVAL),
            }
        }

        fn valid_vcpu(vcpu: u32) -> Result<(), i64> {
            if vcpu < 2 { Ok(()) } else { Err(errno::ENOENT) }
        }

        /// `event_channel_op(command, arg)`: the value, or a positive errno.
        fn evtchn(&mut self, command: u64, arg: u64) -> Result<u64, i64> {
            match command {
                evtchn::BIND_INTERDOMAIN => {
                    let (dom, remote) = (read_u16(arg), read_u32(arg + 4));
                    let port = if is_self(dom) {
                        if self.port(remote)? != Bound::Unbound {
                            return Err(errno::EINVAL);
                        }
                        let port = self.allocate(Bound::Loopback { peer: remote }, 0)?;
                        self.ports[remote as usize].0 = Bound::Loopback { peer: port };
                        port
                    } else {
                        let &(id, peer, _) = CONNECTIONS
                            .iter()
                            .find(|&&(id, peer, _)| id == remote && peer == dom)
                            .ok_or(errno::EINVAL)?;
                        if self.ports.iter().any(|&(b, _)| matches!(b, Bound::Connection { id: c, .. } if c == id)) {
                            return Err(errno::EBUSY);
                        }
                        self.allocate(Bound::Connection { id, peer }, 0)?
                    };
                    write_guest(arg + 8, &port.to_le_bytes());
                    Ok(0)
                }
                evtchn::ALLOC_UNBOUND => {
                    let (dom, remote) = (read_u16(arg), read_u16(arg + 2));
                    if !is_self(dom) || !is_self(remote) {
                        return Err(errno::EPERM);
                    }
                    let port = self.allocate(Bound::Unbound, 0)?;
                    write_guest(arg + 4, &port.to_le_bytes());
                    Ok(0)
                }
                evtchn::BIND_IPI => {
                    let vcpu = read_u32(arg);
                    Self::valid_vcpu(vcpu)?;
                    let port = self.allocate(Bound::Ipi, vcpu)?;
                    write_guest(arg + 4, &port.to_le_bytes());
                    Ok(0)
                }
                evtchn::BIND_VIRQ => {
                    let (virq, vcpu) = (read_u32(arg), read_u32(arg + 4));
                    if virq >= evtchn::NR_VIRQS {
                        return Err(errno::EINVAL);
                    }
                    Self::valid_vcpu(vcpu)?;
                    let port = self.allocate(Bound::Virq(virq), vcpu)?;
                    write_guest(arg + 8, &port.to_le_bytes());
                    Ok(0)
                }
                evtchn::BIND_VCPU => {
                    let (port, vcpu) = (read_u32(arg), read_u32(arg + 4));
                    self.port(port)?;
                    Self::valid_vcpu(vcpu)?;
                    self.ports[port as usize].1 = vcpu;
                    Ok(0)
                }
                evtchn::SEND => {
                    let port = read_u32(arg);
                    match self.port(port)? {
                        Bound::Connection { id, .. } => {
                            let sends = CONNECTIONS.iter().any(|&(c, _, sends)| c == id && sends);
                            if !sends {
                                return Err(errno::EPERM);
                            }
                            self.sent.push(id);
                        }
                        Bound::Loopback { peer } => self.raise(peer),
                        Bound::Ipi => self.raise(port),
                        _ => return Err(errno::EINVAL),
                    }
                    Ok(0)
                }
                evtchn::CLOSE => {
                    let port = read_u32(arg);
                    if let Bound::Loopback { peer } = self.port(port)? {
                        self.ports[peer as usize].0 = Bound::Unbound;
                    }
                    self.ports[port as usize] = (Bound::Free, 0);
                    if let Some(shared) = self.shared() {
                        shared.clear_pending(port);
                    }
                    Ok(0)
                }
                evtchn::UNMASK => {
                    let port = read_u32(arg);
                    self.port(port)?;
                    let vcpu = self.ports[port as usize].1;
                    if let (Some(shared), Some(info)) = (self.shared(), self.vcpu(vcpu))
                        && shared.unmask_local(port, info)
                    {
                        self.upcall(vcpu);
                    }
                    Ok(0)
                }
                evtchn::STATUS => {
                    let (dom, port) = (read_u16(arg), read_u32(arg + 4));
                    if !is_self(dom) {
                        return Err(errno::EPERM);
                    }
                    if port == 0 || port >= evtchn::PORTS {
                        return Err(errno::EINVAL);
                    }
                    let (bound, vcpu) = self.ports[port as usize];
                    let (status, u0, u1) = match bound {
                        Bound::Free => (evtchn::STAT_CLOSED, 0, 0),
                        Bound::Unbound => (evtchn::STAT_UNBOUND, u32::from(DOMID), 0),
                        Bound::Connection { id, peer } => (evtchn::STAT_INTERDOMAIN, u32::from(peer), id),
                        Bound::Loopback { peer } => (evtchn::STAT_INTERDOMAIN, u32::from(DOMID), peer),
                        Bound::Ipi => (evtchn::STAT_IPI, 0, 0),
                        Bound::Virq(virq) => (evtchn::STAT_VIRQ, virq, 0),
                    };
                    write_guest(arg + 8, &status.to_le_bytes());
                    write_guest(arg + 12, &vcpu.to_le_bytes());
                    write_guest(arg + 16, &u0.to_le_bytes());
                    write_guest(arg + 20, &u1.to_le_bytes());
                    Ok(0)
                }
                _ => Err(errno::ENOSYS),
            }
        }

        fn memory(&mut self, command: u64, arg: u64) -> Result<u64, i64> {
            if command != memory::ADD_TO_PHYSMAP {
                return Err(errno::ENOSYS);
            }
            let (dom, space, idx, gpfn) = (read_u16(arg), read_u32(arg + 4), read_u64(arg + 8), read_u64(arg + 16));
            if !is_self(dom) {
                return Err(errno::EPERM);
            }
            if space != memory::SPACE_SHARED_INFO || idx != 0 {
                return Err(errno::EINVAL);
            }
            self.shared_info = Some(gpfn << 12);
            Ok(0)
        }

        fn vcpu_op(&mut self, command: u64, vcpu: u64, arg: u64) -> Result<u64, i64> {
            if vcpu >= 2 {
                return Err(errno::ENOENT);
            }
            match command {
                vcpu::IS_UP => Ok(1),
                vcpu::REGISTER_VCPU_INFO => {
                    let gpa = (read_u64(arg) << 12) + u64::from(read_u32(arg + 8));
                    if self.vcpu_info[vcpu as usize].is_some() {
                        return Err(errno::EINVAL);
                    }
                    if gpa % 4096 + 64 > 4096 {
                        return Err(errno::EINVAL);
                    }
                    self.vcpu_info[vcpu as usize] = Some(gpa);
                    Ok(0)
                }
                _ => Err(errno::ENOSYS),
            }
        }

        fn hvm(&mut self, command: u64, arg: u64) -> Result<u64, i64> {
            match command {
                hvm::SET_PARAM | hvm::GET_PARAM => {
                    let (dom, index, value) = (read_u16(arg), read_u32(arg + 4), read_u64(arg + 8));
                    if !is_self(dom) {
                        return Err(errno::EPERM);
                    }
                    if index >= hvm::NR_PARAMS {
                        return Err(errno::EINVAL);
                    }
                    match (command, index) {
                        (hvm::SET_PARAM, hvm::PARAM_CALLBACK_IRQ) => self.callback_irq = value,
                        (hvm::SET_PARAM, _) => return Err(errno::EPERM),
                        (_, hvm::PARAM_CALLBACK_IRQ) => write_guest(arg + 8, &self.callback_irq.to_le_bytes()),
                        _ => write_guest(arg + 8, &0u64.to_le_bytes()),
                    }
                    Ok(0)
                }
                hvm::SET_EVTCHN_UPCALL_VECTOR => {
                    let (vcpu, vector) = (read_u32(arg), read_guest(arg + 4, 1)[0]);
                    if vector < hvm::MIN_UPCALL_VECTOR {
                        return Err(errno::EINVAL);
                    }
                    Self::valid_vcpu(vcpu)?;
                    self.upcall_vector[vcpu as usize] = Some(vector);
                    Ok(0)
                }
                _ => Err(errno::ENOSYS),
            }
        }
    }

    fn write_guest(gpa: u64, bytes: &[u8]) {
        let address = core::ptr::with_exposed_provenance_mut::<u8>(gpa as usize);
        // SAFETY: `gpa` is the address of a live buffer of the client, exposed by
        // `guest_physical`, at least `bytes.len()` long (the layout of each call).
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), address, bytes.len()) };
    }

    fn read_guest(gpa: u64, len: usize) -> Vec<u8> {
        let address = core::ptr::with_exposed_provenance::<u8>(gpa as usize);
        // SAFETY: as in `write_guest`.
        unsafe { core::slice::from_raw_parts(address, len) }.to_vec()
    }

    unsafe impl Cpu for &mut Simulated {
        fn write_msr(&mut self, msr: u32, value: u64) {
            self.msr_writes.push((msr, value));
        }

        fn guest_physical(&self, address: *const u8) -> u64 {
            address.expose_provenance() as u64
        }

        fn hypercall(&mut self, page: Option<u64>, number: u64, args: [u64; 5]) -> u64 {
            self.calls.push((page, number, args));
            if let Some(answer) = self.answer.take() {
                return answer;
            }
            let [cmd, a1, a2, ..] = args;
            match (number, cmd) {
                (call::XEN_VERSION, version::VERSION) => 4 << 16 | 17,
                (call::XEN_VERSION, version::EXTRAVERSION) => {
                    write_guest(a1, b".0-bulkhead\0\0\0\0\0");
                    0
                }
                (call::XEN_VERSION, version::GET_FEATURES) => {
                    let index = u32::from_le_bytes(read_guest(a1, 4).try_into().unwrap());
                    let submap: u32 = if index == 0 { 1 << 8 } else { 0 };
                    write_guest(a1 + 4, &submap.to_le_bytes());
                    0
                }
                (call::XEN_VERSION, version::PAGESIZE) => 4096,
                (call::CONSOLE_IO, console::WRITE) if a1 as usize > CONSOLE_WRITE_MAX => xen::failure(errno::EINVAL),
                (call::CONSOLE_IO, console::WRITE) => {
                    self.console.push(read_guest(a2, a1 as usize));
                    0
                }
                (call::SCHED_OP, sched::YIELD) => 0,
                (call::SCHED_OP, sched::SHUTDOWN) => {
                    self.shutdowns.push(u32::from_le_bytes(read_guest(a1, 4).try_into().unwrap()));
                    0
                }
                (call::SCHED_OP, sched::POLL) => {
                    let (ports, count) = (read_u64(a1), read_u32(a1 + 8));
                    let ports = (0..u64::from(count)).map(|i| read_u32(ports + 4 * i)).collect();
                    self.events.polls.push(ports);
                    0
                }
                (call::EVENT_CHANNEL_OP, _) => self.events.evtchn(cmd, a1).unwrap_or_else(failure),
                (call::MEMORY_OP, _) => self.events.memory(cmd, a1).unwrap_or_else(failure),
                (call::VCPU_OP, _) => self.events.vcpu_op(cmd, a1, a2).unwrap_or_else(failure),
                (call::HVM_OP, _) => self.events.hvm(cmd, a1).unwrap_or_else(failure),
                _ => xen::failure(errno::ENOSYS),
            }
        }
    }

    #[test]
    fn installing_the_page_writes_the_msr_with_index_0_and_routes_calls_through_it() {
        let mut sim = Simulated::default();
        let mut xen = Client::new(&mut sim);
        assert_eq!(xen.hypercall_page(), None);
        assert_eq!(xen.version(), Ok((4, 17)));
        assert_eq!(xen.install_hypercall_page(0x20_1000), Ok(()));
        assert_eq!(xen.install_hypercall_page(0x20_1001), Err(SetupError::PageMisaligned(0x20_1001)));
        assert_eq!(xen.hypercall_page(), Some(0x20_1000));
        assert_eq!(xen.version(), Ok((4, 17)));
        assert_eq!(sim.msr_writes, [(HYPERCALL_PAGE_MSR, 0x20_1000)]);
        // Before the page: directly; after it: through it.
        assert_eq!(sim.calls[0], (None, call::XEN_VERSION, [0; 5]));
        assert_eq!(sim.calls[1], (Some(0x20_1000), call::XEN_VERSION, [0; 5]));
    }

    #[test]
    fn version_queries_decode_their_answers() {
        let mut sim = Simulated::default();
        let mut xen = Client::new(&mut sim);
        let extra = xen.extraversion().unwrap();
        assert_eq!(extra.as_str(), Some(".0-bulkhead"));
        assert!(extra.is_terminated());
        assert_eq!(xen.features(0), Ok(1 << 8));
        assert_eq!(xen.features(1), Ok(0));
        assert_eq!(xen.page_size(), Ok(4096));
        // The feature call names the submap in the structure the hypervisor fills.
        let (_, number, args) = sim.calls[1];
        assert_eq!((number, args[0]), (call::XEN_VERSION, version::GET_FEATURES));
        assert_ne!(args[1], 0);
    }

    #[test]
    fn an_unterminated_extraversion_is_all_16_bytes() {
        let extra = Extraversion(*b"0123456789abcdef");
        assert_eq!(extra.as_bytes().len(), 16);
        assert!(!extra.is_terminated());
        assert_eq!(Extraversion([0xff; 16]).as_str(), None);
    }

    #[test]
    fn failures_are_errnos() {
        let mut sim = Simulated::default();
        let mut xen = Client::new(&mut sim);
        assert_eq!(xen.call(call::HVM_OP, [99, 0, 0, 0, 0]), Err(Errno(errno::ENOSYS)));
        assert!(xen.call(99, [0; 5]).unwrap_err().is(errno::ENOSYS));
        sim.answer = Some(xen::failure(errno::EFAULT));
        let mut xen = Client::new(&mut sim);
        assert_eq!(xen.extraversion(), Err(Errno(errno::EFAULT)));
        sim.answer = Some(xen::failure(errno::EPERM));
        let mut xen = Client::new(&mut sim);
        assert_eq!(xen.version(), Err(Errno(errno::EPERM)));
        // A large value is a value, not an errno.
        sim.answer = Some(0xffff_f000_0000_0000);
        let mut xen = Client::new(&mut sim);
        assert_eq!(xen.call(call::XEN_VERSION, [0; 5]), Ok(0xffff_f000_0000_0000));
    }

    #[test]
    fn console_writes_pass_count_and_buffer_and_split_long_text() {
        let mut sim = Simulated::default();
        let mut xen = Client::new(&mut sim);
        assert_eq!(xen.console_write(b"hello from xen\n"), Ok(()));
        let long: Vec<u8> = (0..CONSOLE_WRITE_MAX + 10).map(|i| b'a' + (i % 26) as u8).collect();
        assert_eq!(xen.console_write(&long), Ok(()));
        assert_eq!(xen.console_write(b""), Ok(()));
        assert_eq!(sim.console.len(), 3);
        assert_eq!(sim.console[0], b"hello from xen\n");
        assert_eq!(sim.console[1].len(), CONSOLE_WRITE_MAX);
        assert_eq!([&sim.console[1][..], &sim.console[2][..]].concat(), long);
        assert!(sim.calls.iter().all(|&(_, number, args)| number == call::CONSOLE_IO && args[0] == console::WRITE));
    }

    #[test]
    fn a_refused_console_chunk_stops_the_write() {
        let mut sim = Simulated { answer: Some(xen::failure(errno::EFAULT)), ..Default::default() };
        let mut xen = Client::new(&mut sim);
        let long = [b'x'; CONSOLE_WRITE_MAX * 2];
        assert_eq!(xen.console_write(&long), Err(Errno(errno::EFAULT)));
        assert_eq!(sim.calls.len(), 1);
    }

    #[test]
    fn shutdown_passes_its_reason_in_memory() {
        let mut sim = Simulated::default();
        let mut xen = Client::new(&mut sim);
        assert_eq!(xen.yield_now(), Ok(()));
        assert_eq!(xen.shutdown(sched::SHUTDOWN_REBOOT), Ok(()));
        assert_eq!(xen.shutdown(sched::SHUTDOWN_CRASH), Ok(()));
        assert_eq!(sim.shutdowns, [sched::SHUTDOWN_REBOOT, sched::SHUTDOWN_CRASH]);
        assert_eq!(sim.calls[1].1, call::SCHED_OP);
        assert_eq!(sim.calls[1].2[0], sched::SHUTDOWN);
    }

    #[test]
    fn every_call_names_the_page_and_the_cpu_picks_the_way() {
        let mut sim = Simulated::default();
        let mut xen = Client::new(&mut sim);
        xen.install_hypercall_page(0x1000).unwrap();
        let _ = xen.hypercall(0x7fff_ffff, [1, 2, 3, 4, 5]);
        // The client passes the page; the CPU decides (X64 calls directly past stub 127).
        assert_eq!(sim.calls[0], (Some(0x1000), 0x7fff_ffff, [1, 2, 3, 4, 5]));
        assert_eq!(HYPERCALL_STUBS, 128);
    }

    fn leak<T>(value: T) -> &'static T {
        std::boxed::Box::leak(std::boxed::Box::new(value))
    }

    fn scan(shared: &SharedInfo, vcpu: &VcpuInfo) -> Vec<Port> {
        shared.scan(vcpu).collect()
    }

    #[test]
    fn shared_info_and_vcpu_info_are_passed_by_frame_and_offset() {
        let mut sim = Simulated::default();
        let mut xen = Client::new(&mut sim);
        let shared = leak(SharedInfo::new());
        let info = leak(VcpuInfo::new());
        assert_eq!(xen.map_shared_info(shared), Ok(()));
        assert_eq!(xen.register_vcpu_info(0, info), Ok(()));
        assert_eq!(xen.register_vcpu_info(0, info), Err(Errno(errno::EINVAL)));
        assert_eq!(xen.register_vcpu_info(2, info), Err(Errno(errno::ENOENT)));
        assert_eq!(xen.add_to_physmap(5, memory::SPACE_SHARED_INFO, 0, 1), Err(Errno(errno::EPERM)));
        assert_eq!(xen.add_to_physmap(DOMID_SELF, memory::SPACE_GRANT_TABLE, 0, 1), Err(Errno(errno::EINVAL)));
        assert_eq!(xen.vcpu_is_up(1), Ok(true));
        assert_eq!(sim.events.shared_info, Some(shared as *const SharedInfo as u64));
        assert_eq!(sim.events.vcpu_info[0], Some(info as *const VcpuInfo as u64));
        // The argument blocks: domid, space, idx, gpfn; vcpu id in the second argument.
        let (_, number, args) = sim.calls[0];
        assert_eq!((number, args[0]), (call::MEMORY_OP, memory::ADD_TO_PHYSMAP));
        let (_, number, args) = sim.calls[1];
        assert_eq!((number, args[0], args[1]), (call::VCPU_OP, vcpu::REGISTER_VCPU_INFO, 0));
    }

    #[test]
    fn hvm_params_and_upcall_vectors() {
        let mut sim = Simulated::default();
        let mut xen = Client::new(&mut sim);
        assert_eq!(xen.set_callback_vector(0xf3), Ok(()));
        assert_eq!(xen.hvm_get_param(DOMID_SELF, hvm::PARAM_CALLBACK_IRQ), Ok(2 << 56 | 0xf3));
        assert_eq!(xen.hvm_get_param(1, hvm::PARAM_STORE_PFN), Ok(0));
        assert_eq!(xen.hvm_set_param(DOMID_SELF, hvm::PARAM_STORE_PFN, 1), Err(Errno(errno::EPERM)));
        assert_eq!(xen.hvm_get_param(DOMID_SELF, hvm::NR_PARAMS), Err(Errno(errno::EINVAL)));
        assert_eq!(xen.hvm_get_param(3, 0), Err(Errno(errno::EPERM)));
        assert_eq!(xen.set_upcall_vector(0, 0x0f), Err(Errno(errno::EINVAL)));
        assert_eq!(xen.set_upcall_vector(2, 0x30), Err(Errno(errno::ENOENT)));
        assert_eq!(xen.set_upcall_vector(1, 0x30), Ok(()));
        assert_eq!(sim.events.upcall_vector, [None, Some(0x30)]);
    }

    #[test]
    fn every_event_channel_op_and_its_status() {
        let mut sim = Simulated::default();
        let mut xen = Client::new(&mut sim);
        let shared = leak(SharedInfo::new());
        xen.map_shared_info(shared).unwrap();
        // Connections: lowest free port first; once per end; wrong domain or id -EINVAL.
        assert_eq!(xen.bind_interdomain(2, 7), Ok(1));
        assert_eq!(xen.bind_interdomain(2, 7), Err(Errno(errno::EBUSY)));
        assert_eq!(xen.bind_interdomain(3, 8), Err(Errno(errno::EINVAL)));
        assert_eq!(xen.bind_interdomain(2, 99), Err(Errno(errno::EINVAL)));
        assert_eq!(xen.bind_interdomain(2, 8), Ok(2));
        // Loopback: alloc_unbound, then bind_interdomain to it.
        assert_eq!(xen.alloc_unbound(DOMID_SELF, 2), Err(Errno(errno::EPERM)));
        assert_eq!(xen.alloc_unbound(DOMID_SELF, DOMID_SELF), Ok(3));
        assert_eq!(xen.status(DOMID_SELF, 3).map(|s| s.channel), Ok(Channel::Unbound { remote_dom: 1 }));
        assert_eq!(xen.bind_interdomain(DOMID_SELF, 3), Ok(4));
        assert_eq!(xen.bind_ipi(1), Ok(5));
        assert_eq!(xen.bind_ipi(2), Err(Errno(errno::ENOENT)));
        assert_eq!(xen.bind_virq(evtchn::VIRQ_TIMER, 0), Ok(6));
        assert_eq!(xen.bind_virq(evtchn::NR_VIRQS, 0), Err(Errno(errno::EINVAL)));
        let status = |xen: &mut Client<&mut Simulated>, port| xen.status(DOMID_SELF, port).unwrap();
        assert_eq!(status(&mut xen, 1), ChannelStatus { channel: Channel::Interdomain { dom: 2, port: 7 }, vcpu: 0 });
        assert_eq!(status(&mut xen, 3).channel, Channel::Interdomain { dom: 1, port: 4 });
        assert_eq!(status(&mut xen, 4).channel, Channel::Interdomain { dom: 1, port: 3 });
        assert_eq!(status(&mut xen, 5), ChannelStatus { channel: Channel::Ipi, vcpu: 1 });
        assert_eq!(status(&mut xen, 6).channel, Channel::Virq(evtchn::VIRQ_TIMER));
        assert_eq!(status(&mut xen, 7).channel, Channel::Closed);
        assert_eq!(xen.status(DOMID_SELF, 0), Err(Errno(errno::EINVAL)));
        assert_eq!(xen.bind_vcpu(6, 1), Ok(()));
        assert_eq!(status(&mut xen, 6).vcpu, 1);
        assert_eq!(xen.bind_vcpu(60, 1), Err(Errno(errno::EINVAL)));
        // Send: the sending end of a connection goes out; the receiving end -EPERM.
        assert_eq!(xen.send(1), Ok(()));
        assert_eq!(xen.send(2), Err(Errno(errno::EPERM)));
        assert_eq!(xen.send(99), Err(Errno(errno::EINVAL)));
        assert_eq!(xen.close(4), Ok(()));
        assert_eq!(status(&mut xen, 4).channel, Channel::Closed);
        assert_eq!(status(&mut xen, 3).channel, Channel::Unbound { remote_dom: 1 });
        assert_eq!(xen.close(4), Err(Errno(errno::EINVAL)));
        assert_eq!(xen.poll(&[1, 5], 0), Ok(()));
        assert_eq!(sim.events.sent, [7]);
        assert_eq!(sim.events.polls, [std::vec![1, 5]]);
        let unknown = [evtchn::BIND_PIRQ, evtchn::RESET, evtchn::INIT_CONTROL, evtchn::EXPAND_ARRAY, 99];
        let mut xen = Client::new(&mut sim);
        for command in unknown {
            let mut word = 0u32;
            let gpa = (&raw mut word).expose_provenance() as u64;
            assert_eq!(xen.call(call::EVENT_CHANNEL_OP, [command, gpa, 0, 0, 0]), Err(Errno(errno::ENOSYS)));
        }
    }

    #[test]
    fn a_raised_port_sets_pending_selector_and_upcall_once_and_the_scan_takes_it() {
        let mut sim = Simulated::default();
        let mut xen = Client::new(&mut sim);
        let shared = leak(SharedInfo::new());
        let info = leak(VcpuInfo::new());
        xen.map_shared_info(shared).unwrap();
        xen.register_vcpu_info(0, info).unwrap();
        xen.set_upcall_vector(0, 0xf3).unwrap();
        let from_peer = xen.bind_interdomain(2, 8).unwrap();
        let ipi = xen.bind_ipi(0).unwrap();
        // Two raises before the scan: one upcall, one port.
        assert!(sim.events.deliver(8));
        assert!(sim.events.deliver(8));
        assert_eq!(sim.events.upcalls, [(0, 0xf3)]);
        assert!(info.upcall_pending());
        assert_eq!(info.pending_selector(), 1);
        assert!(shared.is_pending(from_peer));
        assert_eq!(scan(shared, info), [from_peer]);
        assert!(!info.upcall_pending() && info.pending_selector() == 0 && !shared.is_pending(from_peer));
        assert_eq!(scan(shared, info), []);
        // The IPI port through the client's send, the connection again: both, in order.
        let mut xen = Client::new(&mut sim);
        xen.send(ipi).unwrap();
        assert!(sim.events.deliver(8));
        assert_eq!(sim.events.upcalls.len(), 2);
        assert_eq!(scan(shared, info), [from_peer, ipi]);
        // The registered vcpu_info is used, not shared_info's slot.
        assert!(!shared.vcpu_info(0).unwrap().upcall_pending());
    }

    #[test]
    fn masked_ports_stay_pending_and_unmask_raises_the_missed_upcall() {
        let mut sim = Simulated::default();
        let mut xen = Client::new(&mut sim);
        let shared = leak(SharedInfo::new());
        xen.map_shared_info(shared).unwrap();
        xen.set_upcall_vector(0, 0xf3).unwrap();
        let port = xen.bind_interdomain(2, 8).unwrap();
        let info = shared.vcpu_info(0).unwrap();
        shared.mask(port);
        assert!(shared.is_masked(port));
        sim.events.deliver(8);
        assert!(shared.is_pending(port));
        assert!(!info.upcall_pending());
        assert_eq!(sim.events.upcalls, []);
        assert_eq!(scan(shared, info), []);
        let mut xen = Client::new(&mut sim);
        assert_eq!(xen.unmask(port), Ok(()));
        assert!(!shared.is_masked(port));
        assert_eq!(sim.events.upcalls, [(0, 0xf3)]);
        assert_eq!(scan(shared, info), [port]);
        // Without an upcall vector the state stays pending, no upcall.
        let mut sim = Simulated::default();
        let mut xen = Client::new(&mut sim);
        let shared = leak(SharedInfo::new());
        xen.map_shared_info(shared).unwrap();
        let port = xen.bind_interdomain(2, 8).unwrap();
        sim.events.deliver(8);
        assert_eq!(sim.events.upcalls, []);
        assert!(shared.vcpu_info(0).unwrap().upcall_pending());
        assert_eq!(scan(shared, shared.vcpu_info(0).unwrap()), [port]);
    }

    #[test]
    fn the_scan_walks_selected_words_in_order_and_skips_masked_bits() {
        let shared = leak(SharedInfo::new());
        let info = leak(VcpuInfo::new());
        let ports = [3, 64, 130, 255, 4095];
        for &port in ports.iter().rev() {
            shared.raise(port, info);
        }
        assert_eq!(info.pending_selector(), 1 | 1 << 1 | 1 << 2 | 1 << 3 | 1 << 63);
        shared.mask(130);
        // 130 was raised before the mask: pending and selected, but the scan skips it.
        assert_eq!(scan(shared, info), [3, 64, 255, 4095]);
        assert!(shared.is_pending(130));
        // Beyond the arrays: nothing.
        assert!(!shared.raise(4096, info));
        assert!(shared.is_masked(4096) && !shared.is_pending(4096));
        // A port raised while the scan walks its word is either yielded or selected anew.
        shared.raise(5, info);
        let mut walk = shared.scan(info);
        assert_eq!(walk.next(), Some(5));
        assert!(shared.raise(6, info));
        assert_eq!(walk.next(), None);
        assert_eq!(scan(shared, info), [6]);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn amd_and_hygon_use_vmmcall() {
        let leaf = |ebx, edx, ecx| core::arch::x86_64::CpuidResult { eax: 0x10, ebx, ecx, edx };
        let name = |text: &[u8; 12]| {
            let word = |i: usize| u32::from_le_bytes(text[i..i + 4].try_into().unwrap());
            leaf(word(0), word(4), word(8))
        };
        assert!(is_amd_vendor(name(b"AuthenticAMD")));
        assert!(is_amd_vendor(name(b"HygonGenuine")));
        assert!(!is_amd_vendor(name(b"GenuineIntel")));
    }
}
