//! The guest side of Xen's HVM interface ([`crate::xen`], docs/xen.md) as a small safe
//! client: install the hypercall page, make hypercalls through it (or directly), ask the
//! version, extraversion, features and page size, write to the console and shut down.
//!
//! The privileged steps (WRMSR, executing VMCALL/VMMCALL or the page's stubs, knowing a
//! buffer's guest-physical address) sit behind the [`Cpu`] trait, which is `unsafe` to
//! implement: an implementation vouches that it runs at CPL 0 under a hypervisor that
//! offers Xen's interface. [`X64`] is the implementation for identity-mapped x86-64 guests;
//! the host tests use a simulated one. Everything else is safe code.
//!
//! Calls that take a buffer pass its guest-physical address; the hypervisor reads or
//! writes it during the call, so the buffers here are locals of the calling function.

use crate::xen::{self, HYPERCALL_PAGE_MSR, HYPERCALL_STUB_BYTES, call, console, sched, version};

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
        assert_eq!(xen.call(call::HVM_OP, [0; 5]), Err(Errno(errno::ENOSYS)));
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
