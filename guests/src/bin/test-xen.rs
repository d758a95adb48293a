//! Test payload "xen": Xen's HVM interface as a partition with `interface = "xen"` sees it
//! (docs/xen.md), chosen by its command line (`case=NAME`); prints every answer it gets and
//! reports whether each was the one docs/xen.md prescribes.
//!
//! `case=calls domid=N life=ADDRESS` (the Xen partition; `life` is a shared page only it
//! maps, which a restart does not zero): in its first life the CPUID block exactly, no
//! Hyper-V leaves, the hypercall page MSR (#GP for a bad value, stubs as `abi::xen` writes
//! them), `xen_version` through the page and directly, `console_io`, every refused call
//! family with its errno, #GP for the Hyper-V MSRs, -EPERM from ring 3 and `sched_op`
//! yield and block; then it stores its verdict in the life page and shuts down with reason
//! reboot. The fault policy restarts it; the second life installs the page again and
//! reports the first life's verdict on port 0xf4.
//!
//! `case=hyperv-side` (a Hyper-V partition beside it): "Microsoft Hv" at 0x4000_0000, no
//! "XenVMMXenVMM" at any 0x100 step up to 0x4000_FF00, the leaves from 0x4000_0100 zero;
//! prints, then idles (the Xen partition's verdict ends the run).
//!
//! `case=evtchn-refusals domid=N peer=ID in=CONNECTION out=CONNECTION` (the Xen partition):
//! every memory_op, vcpu_op, hvm_op and event_channel_op refusal with its errno, then
//! loopback, IPI and VIRQ ports, upcalls on its vector, masking, status and close.
//!
//! `case=pingpong role=ping|pong peer=ID n=N ev_out ev_in msg_out msg_in ring_out ring_in`
//! (a Xen partition): N event round trips, then N numbered message round trips through
//! the message rings, with a Hyper-V partition (`case=hyperv-pingpong n=N msg_out ev_out
//! flag_in`, the echo side through abi's Hyper-V client) or another Xen partition (pong).
#![no_std]
#![no_main]

use bulkhead_abi::hyperv::{Message, MessageHeader, cpuid as hv_cpuid, msr as hv_msr};
use bulkhead_abi::xen::{self, DOMID_SELF, call, console, errno, evtchn, hvm, hvm_cpuid, memory, sched, vcpu, version};
use bulkhead_abi::xen_client::{Channel, ChannelStatus, Client, Cpu, Errno, Port, SharedInfo, VcpuInfo, X64};
use bulkhead_abi::xen_ring::{Ring, RingError};
use bulkhead_guests::hyperv::Endpoint;
use bulkhead_guests::hyperv::sint_interrupts::wait_until;
use bulkhead_guests::{arg, cmdline, cpuid, gp, idle, parse_u64, println, rdtsc, report, user};
use core::sync::atomic::{AtomicU64, Ordering};

/// The hypercall page: this payload's own, executable memory (the identity tables map
/// it executable; ring 3 reaches it too after `user::install`).
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut HYPERCALL_PAGE: Page = Page([0; 4096]);

/// `__HYPERVISOR_iret`, whose stub is UD2 in an HVM guest's page.
const IRET: usize = 23;

/// A guest-physical address no partition RAM covers (the partitions have 16 MiB at 0).
const OUTSIDE: u64 = 0x8000_0000;

fn hypercall_page() -> u64 {
    (&raw const HYPERCALL_PAGE) as u64
}

/// The hypercall page as it is now (the hypervisor writes it during a WRMSR exit, which
/// the compiler does not see: hence the volatile read).
fn page_bytes() -> [u8; 4096] {
    // SAFETY: this payload's own static page; only the hypervisor writes it.
    unsafe { core::ptr::read_volatile(&raw const HYPERCALL_PAGE) }.0
}

fn client() -> Client<X64> {
    // SAFETY: payloads run at CPL 0, identity-mapped; this one only in a Xen partition.
    Client::new(unsafe { X64::new() })
}

/// A direct VMCALL/VMMCALL, without the page.
fn direct(number: u64, args: [u64; 5]) -> u64 {
    // SAFETY: as in `client`.
    unsafe { X64::new() }.hypercall(None, number, args)
}

fn uses_vmmcall() -> bool {
    // SAFETY: as in `client`.
    unsafe { X64::new() }.uses_vmmcall()
}

fn instruction() -> &'static str {
    if uses_vmmcall() { "vmmcall" } else { "vmcall" }
}

/// A result as Xen code reads it: `-NAME` for the errnos this test knows, else hex.
struct Shown(u64);

impl core::fmt::Display for Shown {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = match xen::errno_of(self.0) {
            Some(errno::EPERM) => "-EPERM",
            Some(errno::ENOENT) => "-ENOENT",
            Some(errno::EFAULT) => "-EFAULT",
            Some(errno::EINVAL) => "-EINVAL",
            Some(errno::ENOSYS) => "-ENOSYS",
            Some(errno::EAGAIN) => "-EAGAIN",
            Some(errno::EBUSY) => "-EBUSY",
            Some(errno::EEXIST) => "-EEXIST",
            Some(errno::ENOSPC) => "-ENOSPC",
            Some(errno::ENOTCONN) => "-ENOTCONN",
            Some(errno::ESRCH) => "-ESRCH",
            Some(other) => return write!(f, "-{}", other),
            None => return write!(f, "{:#x}", self.0),
        };
        f.write_str(name)
    }
}

/// Prints one answer and says whether it is the expected one.
fn expect(what: &str, got: u64, want: u64) -> bool {
    println!("xen: {} -> {}", what, Shown(got));
    if got != want {
        println!("xen: {} wanted {}", what, Shown(want));
    }
    got == want
}

fn signature(leaf: core::arch::x86_64::CpuidResult) -> [u32; 3] {
    [leaf.ebx, leaf.ecx, leaf.edx]
}

fn regs(leaf: u32) -> [u32; 4] {
    let r = cpuid(leaf, 0);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Leaves `xen::CPUID_BASE..=CPUID_LAST` exactly, the rest of the block zero, and no
/// Hyper-V (or second Xen) signature at any 0x100 step.
fn cpuid_block(domid: u32) -> bool {
    let base = xen::CPUID_BASE;
    let [s0, s1, s2] = xen::SIGNATURE;
    let want: [[u32; 4]; 5] = [
        [xen::CPUID_LAST, s0, s1, s2],
        [xen::VERSION_MAJOR << 16 | xen::VERSION_MINOR, 0, 0, 0],
        [1, xen::HYPERCALL_PAGE_MSR, 0, 0],
        [0, 0, 0, 0],
        [hvm_cpuid::VCPU_ID_PRESENT | hvm_cpuid::DOMID_PRESENT | hvm_cpuid::UPCALL_VECTOR, 0, domid, 0],
    ];
    let mut exact = true;
    for (i, want) in want.iter().enumerate() {
        let leaf = base + i as u32;
        let got = regs(leaf);
        println!("xen: cpuid {:#x}: {:#x} {:#x} {:#x} {:#x}", leaf, got[0], got[1], got[2], got[3]);
        if got != *want {
            println!("xen: cpuid {:#x} wanted {:#x} {:#x} {:#x} {:#x}", leaf, want[0], want[1], want[2], want[3]);
            exact = false;
        }
    }
    let rest_zero = (base + 5..=base + 0xff).all(|leaf| regs(leaf) == [0; 4]);
    let mut hyperv = 0;
    let mut xen_elsewhere = 0;
    for step in 0..=0xffu32 {
        let r = cpuid(base + step * 0x100, 0);
        hyperv += u32::from(hv_cpuid::is_microsoft_vendor(r.ebx, r.ecx, r.edx));
        xen_elsewhere += u32::from(step != 0 && signature(r) == xen::SIGNATURE);
    }
    println!(
        "xen: cpuid block exact={} (domain id {}), leaves 0x40000005..=0x400000ff zero={}",
        exact, domid, rest_zero
    );
    println!(
        "xen: cpuid 0x40000000..=0x4000ff00 step 0x100: Microsoft Hv {} times, XenVMMXenVMM beyond the base {} times",
        hyperv, xen_elsewhere
    );
    exact && rest_zero && hyperv == 0 && xen_elsewhere == 0
}

/// The hypercall page MSR: reads 0; a page index other than 0 and a page outside the
/// partition's memory get #GP; installing fills the page with 128 stubs (stub 23: UD2).
fn hypercall_page_msr(xen: &mut Client<X64>) -> bool {
    let page = hypercall_page();
    let read_before = gp::rdmsr(xen::HYPERCALL_PAGE_MSR);
    let index_1 = gp::wrmsr(xen::HYPERCALL_PAGE_MSR, page | 1).is_err();
    let outside = gp::wrmsr(xen::HYPERCALL_PAGE_MSR, OUTSIDE).is_err();
    println!(
        "xen: hypercall page msr: page index 1 refused with #GP={}, page outside memory refused with #GP={}",
        index_1, outside
    );
    let untouched = page_bytes().iter().all(|&b| b == 0);
    let installed = xen.install_hypercall_page(page).is_ok();
    let read_after = gp::rdmsr(xen::HYPERCALL_PAGE_MSR);
    let amd = uses_vmmcall();
    let bytes = page_bytes();
    // Stub 23 (`iret`, a PV-only call) starts with UD2, as Xen writes it for HVM guests
    // (`xen/arch/x86/hvm/vmx/vmx.c` and `svm/svm.c`, `*_init_hypercall_page`).
    let stub = |n: usize| &bytes[n * xen::HYPERCALL_STUB_BYTES..][..xen::HYPERCALL_STUB_BYTES];
    let stubs_ok = (0..128).filter(|&n| n != IRET).all(|n| stub(n) == xen::hypercall_stub(n as u32, amd));
    let iret_ud2 = stub(IRET)[..2] == [0x0f, 0x0b];
    println!(
        "xen: hypercall page msr reads {:?} before and {:?} after; untouched by the refused writes={}",
        read_before, read_after, untouched
    );
    println!(
        "xen: hypercall page: 127 stubs as abi::xen writes them ({})={}, stub 23 (iret) starts with ud2={}, stub 17 {:02x?}",
        instruction(),
        stubs_ok,
        iret_ud2,
        &stub(17)[..9]
    );
    index_1 && outside && untouched && installed && read_before == Ok(0) && read_after == Ok(0) && stubs_ok && iret_ud2
}

/// Every Hyper-V synthetic MSR a Hyper-V guest would touch first: #GP here.
fn hyperv_msrs_absent() -> bool {
    let msrs = [
        hv_msr::HYPERCALL,
        hv_msr::VP_INDEX,
        hv_msr::TIME_REF_COUNT,
        hv_msr::REFERENCE_TSC,
        hv_msr::TSC_FREQUENCY,
        hv_msr::VP_ASSIST_PAGE,
        hv_msr::SCONTROL,
        hv_msr::SIMP,
        hv_msr::sint(0),
        hv_msr::CRASH_CTL,
    ];
    let reads = msrs.iter().filter(|&&m| gp::rdmsr(m).is_err()).count();
    let writes = [(hv_msr::HYPERCALL, hypercall_page() | 1), (hv_msr::SCONTROL, 1), (hv_msr::CRASH_CTL, 1 << 63)]
        .iter()
        .filter(|&&(m, v)| gp::wrmsr(m, v).is_err())
        .count();
    println!("xen: Hyper-V MSRs: {} of {} reads and {} of 3 writes refused with #GP", reads, msrs.len(), writes);
    reads == msrs.len() && writes == 3
}

/// What ring 3's call left in RAX (a sentinel until it stores it).
#[unsafe(no_mangle)]
static XEN_USER_RESULT: AtomicU64 = AtomicU64::new(0);
const NOT_STORED: u64 = 0x5afe;

core::arch::global_asm!(
    r#"
    .section .text
    // Called at CPL 3 by `user::call_at_cpl3` with RCX = the address of stub 17
    // (xen_version): XENVER_version through the page, the result stored for ring 0.
    .global xen_user_via_page
xen_user_via_page:
    xor edi, edi
    call rcx
    mov qword ptr [rip + XEN_USER_RESULT], rax
    ret

    .global xen_user_vmcall
xen_user_vmcall:
    mov eax, 17
    xor edi, edi
    vmcall
    mov qword ptr [rip + XEN_USER_RESULT], rax
    ret

    .global xen_user_vmmcall
xen_user_vmmcall:
    mov eax, 17
    xor edi, edi
    vmmcall
    mov qword ptr [rip + XEN_USER_RESULT], rax
    ret
    "#
);

unsafe extern "C" {
    fn xen_user_via_page();
    fn xen_user_vmcall();
    fn xen_user_vmmcall();
}

/// `xen_version` from ring 3, through the page and directly: -EPERM, and the call returns
/// (no exception).
fn cpl3_gets_eperm() -> bool {
    user::install();
    let stub_17 = hypercall_page() + 17 * xen::HYPERCALL_STUB_BYTES as u64;
    let direct = if uses_vmmcall() { xen_user_vmmcall as *const () } else { xen_user_vmcall as *const () };
    let mut ok = true;
    for (how, target) in
        [("through the page", xen_user_via_page as *const () as u64), ("by direct call", direct as u64)]
    {
        XEN_USER_RESULT.store(NOT_STORED, Ordering::SeqCst);
        let rip = user::call_at_cpl3(target, stub_17, 0, 0);
        let returned = rip == user::stub_ud2_address();
        let result = XEN_USER_RESULT.load(Ordering::SeqCst);
        if returned && result != NOT_STORED {
            println!("xen: xen_version from CPL 3 {} -> {}", how, Shown(result));
        } else {
            println!("xen: xen_version from CPL 3 {} did not return (exception at {:#x})", how, rip);
        }
        ok &= returned && result == xen::failure(errno::EPERM);
    }
    ok
}

/// `SCHEDOP_block` with the local APIC timer running, so that it returns whether the
/// hypervisor returns at once or waits for an interrupt.
fn block_returns() -> bool {
    gp::start_timer(1_000_000);
    let result = client().hypercall(call::SCHED_OP, [sched::BLOCK, 0, 0, 0, 0]);
    // Stop the timer again: mask LVT timer, count 0, interrupts off.
    let _ = gp::wrmsr(0x832, 1 << 16);
    let _ = gp::wrmsr(0x838, 0);
    // SAFETY: only masks interrupts on this vCPU.
    unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
    expect("sched_op block", result, 0)
}

fn first_life(domid: u32, life: u64) -> bool {
    gp::install();
    let cpuid_ok = cpuid_block(domid);
    let mut xen = client();
    // Before the page: xen_version directly.
    let early = direct(call::XEN_VERSION, [version::VERSION, 0, 0, 0, 0]);
    let page_ok = hypercall_page_msr(&mut xen);
    let through_page = xen.hypercall(call::XEN_VERSION, [version::VERSION, 0, 0, 0, 0]);
    let raw = direct(call::XEN_VERSION, [version::VERSION, 0, 0, 0, 0]);
    let want_version = u64::from(xen::VERSION_MAJOR << 16 | xen::VERSION_MINOR);
    println!(
        "xen: xen_version {:#x} through the page, {:#x} by {} (before the page {:#x})",
        through_page,
        raw,
        instruction(),
        early
    );
    let version_ok = through_page == want_version && raw == want_version && early == want_version;
    let decoded = xen.version();
    let extra = xen.extraversion();
    let features = [xen.features(0), xen.features(1)];
    let page_size = xen.page_size();
    println!(
        "xen: version {:?}, extraversion {:?} terminated={}, features submap 0 {:?} submap 1 {:?}, page size {:?}",
        decoded,
        extra.as_ref().ok().and_then(|e| e.as_str()),
        extra.is_ok_and(|e| e.is_terminated()),
        features[0],
        features[1],
        page_size
    );
    let queries_ok = decoded == Ok((4, 17))
        && extra.is_ok_and(|e| e.as_bytes() == b".0-bulkhead" && e.is_terminated())
        && features == [Ok(1 << 0 | 1 << 2 | 1 << 8), Ok(0)]
        && page_size == Ok(4096);
    let written = xen.console_write(b"xen: hello through console_io\nxen: second console_io line\n");
    println!("xen: console_io write -> {:?}", written);

    let nosys = xen::failure(errno::ENOSYS);
    let fault = xen::failure(errno::EFAULT);
    let calls = [
        ("memory_op 99", call::MEMORY_OP, [99, 0, 0, 0, 0], nosys),
        ("set_timer_op", call::SET_TIMER_OP, [0; 5], nosys),
        ("grant_table_op", call::GRANT_TABLE_OP, [0; 5], nosys),
        ("vcpu_op 99", call::VCPU_OP, [99, 0, 0, 0, 0], nosys),
        ("event_channel_op 99", call::EVENT_CHANNEL_OP, [99, 0, 0, 0, 0], nosys),
        ("hvm_op 99", call::HVM_OP, [99, 0, 0, 0, 0], nosys),
        ("call 0", 0, [0; 5], nosys),
        ("call 99", 99, [0; 5], nosys),
        ("xen_version cmd 99", call::XEN_VERSION, [99, 0, 0, 0, 0], nosys),
        ("console_io read", call::CONSOLE_IO, [console::READ, 16, 0, 0, 0], nosys),
        ("sched_op poll outside memory", call::SCHED_OP, [sched::POLL, OUTSIDE, 0, 0, 0], fault),
        ("sched_op 99", call::SCHED_OP, [99, 0, 0, 0, 0], nosys),
        ("extraversion outside memory", call::XEN_VERSION, [version::EXTRAVERSION, OUTSIDE, 0, 0, 0], fault),
        ("get_features outside memory", call::XEN_VERSION, [version::GET_FEATURES, OUTSIDE, 0, 0, 0], fault),
        ("console_io write outside memory", call::CONSOLE_IO, [console::WRITE, 8, OUTSIDE, 0, 0], fault),
        ("sched_op shutdown outside memory", call::SCHED_OP, [sched::SHUTDOWN, OUTSIDE, 0, 0, 0], fault),
        // Only the partition's own RAM: not a shared region (the life page here).
        ("console_io write from a shared page", call::CONSOLE_IO, [console::WRITE, 8, life, 0, 0], fault),
        ("sched_op yield", call::SCHED_OP, [sched::YIELD, 0, 0, 0, 0], 0),
    ]
    .map(|(what, number, args, want)| expect(what, xen.hypercall(number, args), want));
    // Past the page's 128 stubs: directly.
    let beyond = expect("call 0x7fffffff", xen.hypercall(0x7fff_ffff, [0; 5]), nosys);
    let text = [b'x'; 4097];
    let too_long = expect(
        "console_io write of 4097 bytes",
        xen.hypercall(call::CONSOLE_IO, [console::WRITE, 4097, text.as_ptr() as u64, 0, 0]),
        xen::failure(errno::EINVAL),
    );
    let refused_ok = calls.iter().all(|&ok| ok) && beyond && too_long;
    println!("xen: refused calls answered as documented={} ({} calls)", refused_ok, calls.len() + 2);

    let msrs_ok = hyperv_msrs_absent();
    let cpl3_ok = cpl3_gets_eperm();
    let block_ok = block_returns();
    println!(
        "xen: first life: cpuid={} page={} version={} queries={} console={} refused={} msrs={} cpl3={} block={}",
        cpuid_ok,
        page_ok,
        version_ok,
        queries_ok,
        written.is_ok(),
        refused_ok,
        msrs_ok,
        cpl3_ok,
        block_ok
    );
    cpuid_ok && page_ok && version_ok && queries_ok && written.is_ok() && refused_ok && msrs_ok && cpl3_ok && block_ok
}

/// Words of the life page.
const LIVES: usize = 0;
const FIRST_VERDICT: usize = 1;
const PASSED: u64 = 1;
const FAILED: u64 = 2;

fn calls(domid: u32, life: u64) -> bool {
    // SAFETY: the shared page the system file maps at `life`, this partition's only.
    let words = unsafe { &*(life as *const [AtomicU64; 2]) };
    match words[LIVES].fetch_add(1, Ordering::SeqCst) {
        0 => {
            let passed = first_life(domid, life);
            words[FIRST_VERDICT].store(if passed { PASSED } else { FAILED }, Ordering::SeqCst);
            println!("xen: first life passed={}; SCHEDOP_shutdown(reboot)", passed);
            let result = client().shutdown(sched::SHUTDOWN_REBOOT);
            println!("xen: SCHEDOP_shutdown returned {:?}: still running", result.map_err(|Errno(e)| -e));
            false
        }
        1 => {
            gp::install();
            // A restart zeroes memory and reloads the payload: the page must be installed
            // again, and it works as before.
            let mut xen = client();
            let installed = xen.install_hypercall_page(hypercall_page()).is_ok();
            let version = xen.version();
            let first = words[FIRST_VERDICT].load(Ordering::SeqCst);
            println!(
                "xen: second life after SCHEDOP_shutdown(reboot): first life passed={}, hypercall page again, version {:?}",
                first == PASSED,
                version
            );
            installed && version == Ok((4, 17)) && first == PASSED
        }
        lives => {
            println!("xen: life {}: one restart was expected", lives);
            false
        }
    }
}

/// The Hyper-V partition's view: its own leaves, and nothing of Xen's.
fn hyperv_side() {
    let vendor = cpuid(hv_cpuid::LEAF_VENDOR_AND_MAX, 0);
    let interface = cpuid(hv_cpuid::LEAF_INTERFACE, 0);
    let microsoft = hv_cpuid::is_microsoft_vendor(vendor.ebx, vendor.ecx, vendor.edx)
        && interface.eax == hv_cpuid::INTERFACE_SIGNATURE;
    let xen_signatures =
        (0..=0xffu32).filter(|step| signature(cpuid(xen::CPUID_BASE + step * 0x100, 0)) == xen::SIGNATURE).count();
    let xen_block_zero = (0x4000_0100..=0x4000_01ffu32).all(|leaf| regs(leaf) == [0; 4]);
    println!(
        "hyperv-side: Microsoft Hv and Hv#1={}, XenVMMXenVMM at 0x40000000..=0x4000ff00 step 0x100: {} times",
        microsoft, xen_signatures
    );
    println!("hyperv-side: leaves 0x40000100..=0x400001ff zero={}", xen_block_zero);
}

// ---------------------------------------------------------------------------------------
// Event channels (docs/xen.md "Event channels"): shared_info, the upcall vector, ports.

/// This partition's shared_info and vCPU 0's registered vcpu_info (its own RAM).
static SHARED_INFO: SharedInfo = SharedInfo::new();
static VCPU_INFO: VcpuInfo = VcpuInfo::new();
/// A scratch page for refused calls that name a page (nothing is expected to land there).
static mut SCRATCH: Page = Page([0; 4096]);

/// The per-vCPU upcall vector (above the timer's 0x40 and the SINT vectors).
const UPCALL_VECTOR: u8 = 0xf3;

/// Upcalls taken (the handler counts and EOIs; the main loop runs the scan).
#[unsafe(no_mangle)]
static XEN_UPCALLS: AtomicU64 = AtomicU64::new(0);

core::arch::global_asm!(
    r#"
    .section .text
    // The upcall vector's handler: count, then EOI through the x2APIC EOI register and
    // return (the guests' shared tail: the partition owns its local APIC; Bulkhead
    // delivers upcalls as fixed interrupts).
    .global xen_upcall_handler
xen_upcall_handler:
    lock inc qword ptr [rip + XEN_UPCALLS]
    jmp guest_eoi_and_return
    "#
);

unsafe extern "C" {
    fn xen_upcall_handler();
}

fn upcalls() -> u64 {
    XEN_UPCALLS.load(Ordering::SeqCst)
}

fn code(result: Result<(), Errno>) -> u64 {
    match result {
        Ok(()) => 0,
        Err(Errno(e)) => xen::failure(e),
    }
}

fn code_of<T>(result: Result<T, Errno>) -> u64 {
    code(result.map(|_| ()))
}

/// Ports the scans have found and the test has not taken yet (ports 0..256).
struct Events {
    seen: [u64; 4],
}

impl Events {
    /// The IDT with the upcall gate, the local APIC on, shared_info mapped, vCPU 0's
    /// vcpu_info registered, the callback parameter and vCPU 0's upcall vector set.
    /// Interrupts stay disabled (they are taken in `wait_until` and `upcall_arrives`).
    fn setup(xen: &mut Client<X64>) -> Result<Events, Errno> {
        gp::install();
        gp::set_gate(UPCALL_VECTOR, xen_upcall_handler as *const () as u64);
        gp::enable_local_apic();
        xen.map_shared_info(&SHARED_INFO)?;
        xen.register_vcpu_info(0, &VCPU_INFO)?;
        xen.set_callback_vector(UPCALL_VECTOR)?;
        xen.set_upcall_vector(0, UPCALL_VECTOR)?;
        Ok(Events { seen: [0; 4] })
    }

    /// Runs the 2-level scan, remembering what it finds.
    fn collect(&mut self) {
        for port in SHARED_INFO.scan(&VCPU_INFO) {
            if let Some(word) = self.seen.get_mut(port as usize / 64) {
                *word |= 1 << (port % 64);
            }
        }
    }

    /// Whether `port` was raised (since it was last taken); takes it.
    fn take(&mut self, port: Port) -> bool {
        self.collect();
        let (word, bit) = (port as usize / 64, 1u64 << (port % 64));
        let raised = self.seen.get(word).is_some_and(|w| w & bit != 0);
        if raised {
            self.seen[word] &= !bit;
        }
        raised
    }

    /// Waits, halted, until `port` is raised.
    fn wait(&mut self, port: Port) {
        wait_until(|| self.take(port));
    }
}

/// Whether an upcall arrives (interrupts enabled for a while) after `before` were counted.
fn upcall_arrives(before: u64) -> bool {
    // SAFETY: the IDT handles the upcall vector (`Events::setup`).
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    for _ in 0..2_000_000 {
        if upcalls() > before {
            break;
        }
        core::hint::spin_loop();
    }
    // SAFETY: only masks interrupts on this vCPU.
    unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
    upcalls() > before
}

fn status_text(status: Result<ChannelStatus, Errno>) -> StatusShown {
    StatusShown(status)
}

/// An `EVTCHNOP_status` answer as the test prints it.
struct StatusShown(Result<ChannelStatus, Errno>);

impl core::fmt::Display for StatusShown {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Err(Errno(e)) => write!(f, "{}", Shown(xen::failure(e))),
            Ok(ChannelStatus { channel, vcpu }) => match channel {
                Channel::Closed => write!(f, "closed"),
                Channel::Unbound { remote_dom } => write!(f, "unbound for domain {} (vcpu {})", remote_dom, vcpu),
                Channel::Interdomain { dom, port } => {
                    write!(f, "interdomain to domain {} port {} (vcpu {})", dom, port, vcpu)
                }
                Channel::Virq(virq) => write!(f, "virq {} (vcpu {})", virq, vcpu),
                Channel::Ipi => write!(f, "ipi (vcpu {})", vcpu),
                Channel::Pirq(pirq) => write!(f, "pirq {}", pirq),
                Channel::Other(other) => write!(f, "status {}", other),
            },
        }
    }
}

/// Prints a status and whether it is the expected one.
fn expect_status(what: &str, got: Result<ChannelStatus, Errno>, want: Channel) -> bool {
    println!("xen: status of {} -> {}", what, status_text(got));
    let ok = got.is_ok_and(|s| s.channel == want);
    if !ok {
        println!("xen: status of {} wanted {:?}", what, want);
    }
    ok
}

/// Prints a port a bind returned and whether it is the expected one.
fn expect_port(what: &str, got: Result<Port, Errno>, want: Port) -> bool {
    match got {
        Ok(port) => println!("xen: {} -> port {}", what, port),
        Err(Errno(e)) => println!("xen: {} -> {}", what, Shown(xen::failure(e))),
    }
    if got != Ok(want) {
        println!("xen: {} wanted port {}", what, want);
    }
    got == Ok(want)
}

/// `case=evtchn-refusals domid=N peer=ID in=CONNECTION out=CONNECTION`: every refusal of
/// memory_op, vcpu_op, hvm_op and event_channel_op with its errno, unknown commands, then
/// what works: loopback, IPI, masking and unmasking with upcalls on the vector, status of
/// every port kind, close. `in` is an event connection from the Hyper-V partition `peer`
/// (whose SynIC stays off), `out` one to it.
fn evtchn_refusals(domid: u16, peer: u16, conn_in: u32, conn_out: u32) -> bool {
    gp::install();
    let mut xen = client();
    if xen.install_hypercall_page(hypercall_page()).is_err() {
        return false;
    }
    let nosys = xen::failure(errno::ENOSYS);
    let inval = xen::failure(errno::EINVAL);
    let perm = xen::failure(errno::EPERM);
    let noent = xen::failure(errno::ENOENT);
    let fault = xen::failure(errno::EFAULT);
    let shared_gpfn = (&raw const SHARED_INFO) as u64 >> 12;
    let scratch = (&raw const SCRATCH) as u64;
    let mut ok = true;

    // A port needs shared_info.
    ok &= expect("bind_ipi before shared_info", code_of(xen.bind_ipi(0)), inval);
    // memory_op: only XENMEM_add_to_physmap of shared_info for this domain.
    let grant = xen.add_to_physmap(DOMID_SELF, memory::SPACE_GRANT_TABLE, 0, shared_gpfn);
    ok &= expect("memory_op add_to_physmap grant_table", code(grant), inval);
    let idx1 = xen.add_to_physmap(DOMID_SELF, memory::SPACE_SHARED_INFO, 1, shared_gpfn);
    ok &= expect("memory_op add_to_physmap shared_info idx 1", code(idx1), inval);
    let other = xen.add_to_physmap(peer, memory::SPACE_SHARED_INFO, 0, shared_gpfn);
    ok &= expect("memory_op add_to_physmap for another domain", code(other), perm);
    let outside = xen.hypercall(call::MEMORY_OP, [memory::ADD_TO_PHYSMAP, OUTSIDE, 0, 0, 0]);
    ok &= expect("memory_op add_to_physmap argument outside memory", outside, fault);
    ok &= expect("memory_op 99", xen.hypercall(call::MEMORY_OP, [99, 0, 0, 0, 0]), nosys);
    ok &= expect("memory_op add_to_physmap shared_info", code(xen.map_shared_info(&SHARED_INFO)), 0);
    let own_id = xen.add_to_physmap(domid, memory::SPACE_SHARED_INFO, 0, shared_gpfn);
    ok &= expect("memory_op add_to_physmap shared_info again, own domain id", code(own_id), 0);

    // vcpu_op: one vCPU here.
    ok &= expect("vcpu_op is_up vcpu 0", xen.hypercall(call::VCPU_OP, [vcpu::IS_UP, 0, 0, 0, 0]), 1);
    ok &= expect("vcpu_op is_up vcpu 1", xen.hypercall(call::VCPU_OP, [vcpu::IS_UP, 1, 0, 0, 0]), noent);
    ok &= expect("vcpu_op register_vcpu_info vcpu 1", code(xen.register_vcpu_info_at(1, scratch)), noent);
    ok &=
        expect("vcpu_op register_vcpu_info across a page", code(xen.register_vcpu_info_at(0, scratch + 0xfe0)), inval);
    ok &= expect("vcpu_op register_vcpu_info", code(xen.register_vcpu_info(0, &VCPU_INFO)), 0);
    ok &= expect("vcpu_op register_vcpu_info again", code(xen.register_vcpu_info_at(0, scratch)), inval);
    ok &= expect("vcpu_op 99", xen.hypercall(call::VCPU_OP, [99, 0, 0, 0, 0]), nosys);

    // hvm_op: the callback parameter, the upcall vector, other parameters read as 0.
    ok &= expect("hvm_op set_param callback_irq", code(xen.set_callback_vector(UPCALL_VECTOR)), 0);
    let callback = xen.hvm_get_param(DOMID_SELF, hvm::PARAM_CALLBACK_IRQ);
    let want_callback = hvm::CALLBACK_TYPE_VECTOR << hvm::CALLBACK_TYPE_SHIFT | u64::from(UPCALL_VECTOR);
    println!("xen: hvm_op get_param callback_irq -> {:x?}", callback.map_err(|Errno(e)| -e));
    ok &= callback == Ok(want_callback);
    ok &= expect("hvm_op set_param store_pfn", code(xen.hvm_set_param(DOMID_SELF, hvm::PARAM_STORE_PFN, 1)), perm);
    let console_evtchn = xen.hvm_get_param(domid, hvm::PARAM_CONSOLE_EVTCHN);
    println!("xen: hvm_op get_param console_evtchn -> {:x?}", console_evtchn.map_err(|Errno(e)| -e));
    ok &= console_evtchn == Ok(0);
    ok &= expect("hvm_op get_param 39", code_of(xen.hvm_get_param(DOMID_SELF, hvm::NR_PARAMS)), inval);
    ok &= expect("hvm_op set_param 39", code(xen.hvm_set_param(DOMID_SELF, hvm::NR_PARAMS, 0)), inval);
    let other = xen.hvm_set_param(peer, hvm::PARAM_CALLBACK_IRQ, want_callback);
    ok &= expect("hvm_op set_param for another domain", code(other), perm);
    ok &= expect("hvm_op set_evtchn_upcall_vector 0x0f", code(xen.set_upcall_vector(0, 0x0f)), inval);
    ok &= expect("hvm_op set_evtchn_upcall_vector vcpu 1", code(xen.set_upcall_vector(1, UPCALL_VECTOR)), noent);
    ok &= expect("hvm_op 99", xen.hypercall(call::HVM_OP, [99, 0, 0, 0, 0]), nosys);
    // The upcall path: IDT gate, local APIC, then the vector.
    gp::set_gate(UPCALL_VECTOR, xen_upcall_handler as *const () as u64);
    gp::enable_local_apic();
    // The registration marked every selector bit and the upcall pending (so nothing raised
    // meanwhile is lost); setting the vector sends that upcall now.
    let before = upcalls();
    ok &= expect("hvm_op set_evtchn_upcall_vector", code(xen.set_upcall_vector(0, UPCALL_VECTOR)), 0);
    let pending_upcall = upcall_arrives(before);
    let spurious: usize = SHARED_INFO.scan(&VCPU_INFO).count();
    println!(
        "xen: the upcall pending since register_vcpu_info arrived on the vector={}, ports pending {}",
        pending_upcall, spurious
    );
    ok &= pending_upcall && spurious == 0;

    // event_channel_op refusals.
    ok &= expect("bind_interdomain unknown connection", code_of(xen.bind_interdomain(peer, 99)), inval);
    ok &= expect(
        "bind_interdomain to no partition",
        code_of(xen.bind_interdomain(7, conn_in)),
        xen::failure(errno::ESRCH),
    );
    ok &= expect(
        "bind_interdomain of the connection's id to this domain",
        code_of(xen.bind_interdomain(domid, conn_in)),
        inval,
    );
    ok &= expect_port("bind_interdomain incoming connection", xen.bind_interdomain(peer, conn_in), 1);
    ok &= expect("bind_interdomain incoming connection again", code_of(xen.bind_interdomain(peer, conn_in)), inval);
    ok &= expect_port("bind_interdomain outgoing connection", xen.bind_interdomain(peer, conn_out), 2);
    ok &= expect("send on the receiving end of an event connection", code(xen.send(1)), perm);
    ok &= expect("send to a Hyper-V partition whose SynIC is off", code(xen.send(2)), xen::failure(errno::ENOTCONN));
    ok &= expect("alloc_unbound for another domain", code_of(xen.alloc_unbound(DOMID_SELF, peer)), perm);
    ok &=
        expect("alloc_unbound for no partition", code_of(xen.alloc_unbound(DOMID_SELF, 7)), xen::failure(errno::ESRCH));
    ok &= expect("status for another domain", code_of(xen.status(peer, 1)), perm);
    ok &= expect("bind_virq 24", code_of(xen.bind_virq(evtchn::NR_VIRQS, 0)), inval);
    ok &= expect("bind_virq vcpu 1", code_of(xen.bind_virq(evtchn::VIRQ_TIMER, 1)), noent);
    ok &= expect("bind_ipi vcpu 1", code_of(xen.bind_ipi(1)), noent);
    ok &= expect("bind_vcpu to vcpu 1", code(xen.bind_vcpu(1, 1)), noent);
    ok &= expect("bind_vcpu of a closed port", code(xen.bind_vcpu(200, 0)), inval);
    ok &= expect("send on a closed port", code(xen.send(200)), inval);
    ok &= expect("close of a closed port", code(xen.close(200)), inval);
    ok &= expect("unmask of port 256", code(xen.unmask(evtchn::PORTS)), inval);
    ok &= expect("status of port 256", code_of(xen.status(DOMID_SELF, evtchn::PORTS)), inval);
    let outside = xen.hypercall(call::EVENT_CHANNEL_OP, [evtchn::BIND_INTERDOMAIN, OUTSIDE, 0, 0, 0]);
    ok &= expect("bind_interdomain argument outside memory", outside, fault);
    for (what, command) in [
        ("event_channel_op bind_pirq", evtchn::BIND_PIRQ),
        ("event_channel_op reset", evtchn::RESET),
        ("event_channel_op init_control", evtchn::INIT_CONTROL),
        ("event_channel_op expand_array", evtchn::EXPAND_ARRAY),
        ("event_channel_op set_priority", evtchn::SET_PRIORITY),
        ("event_channel_op 99", 99),
    ] {
        ok &= expect(what, xen.hypercall(call::EVENT_CHANNEL_OP, [command, scratch, 0, 0, 0]), nosys);
    }
    ok &= expect("sched_op poll", code(xen.poll(&[1, 2], 0)), 0);
    ok &= expect("sched_op poll of port 256", code(xen.poll(&[1, evtchn::PORTS], 0)), inval);
    ok &= expect("sched_op poll outside memory", xen.hypercall(call::SCHED_OP, [sched::POLL, OUTSIDE, 0, 0, 0]), fault);
    println!("xen: evtchn refusals answered as documented={}", ok);

    // What works: a loopback pair, an IPI port, a VIRQ port.
    let mut events = Events { seen: [0; 4] };
    let mut works = true;
    works &= expect_port("alloc_unbound", xen.alloc_unbound(DOMID_SELF, DOMID_SELF), 3);
    works &= expect_status("the unbound port", xen.status(DOMID_SELF, 3), Channel::Unbound { remote_dom: domid });
    works &= expect_port("bind_interdomain to the unbound port", xen.bind_interdomain(DOMID_SELF, 3), 4);
    works &=
        expect_status("the loopback port 3", xen.status(DOMID_SELF, 3), Channel::Interdomain { dom: domid, port: 4 });
    works &=
        expect_status("the loopback port 4", xen.status(DOMID_SELF, 4), Channel::Interdomain { dom: domid, port: 3 });
    works &= expect_port("bind_ipi", xen.bind_ipi(0), 5);
    works &= expect_status("the ipi port", xen.status(DOMID_SELF, 5), Channel::Ipi);
    works &= expect_port("bind_virq console", xen.bind_virq(evtchn::VIRQ_CONSOLE, 0), 6);
    works &= expect_status("the virq port", xen.status(DOMID_SELF, 6), Channel::Virq(evtchn::VIRQ_CONSOLE));
    let again = xen.bind_virq(evtchn::VIRQ_CONSOLE, 0);
    works &= expect("bind_virq console again", code_of(again), xen::failure(errno::EEXIST));
    works &= expect("bind_virq console on vcpu 1", code_of(xen.bind_virq(evtchn::VIRQ_CONSOLE, 1)), noent);
    works &= expect_port("bind_virq timer", xen.bind_virq(evtchn::VIRQ_TIMER, 0), 7);
    works &= expect_status(
        "the incoming port",
        xen.status(DOMID_SELF, 1),
        Channel::Interdomain { dom: peer, port: conn_in },
    );
    works &= expect_status(
        "the outgoing port",
        xen.status(DOMID_SELF, 2),
        Channel::Interdomain { dom: peer, port: conn_out },
    );
    works &= expect_status("port 8", xen.status(DOMID_SELF, 8), Channel::Closed);
    works &= expect("bind_vcpu of the global virq port to vcpu 0", code(xen.bind_vcpu(6, 0)), 0);
    works &= expect("bind_vcpu of the per-vcpu virq port", code(xen.bind_vcpu(7, 0)), inval);
    works &= expect("bind_vcpu of the ipi port", code(xen.bind_vcpu(5, 0)), inval);
    works &= expect("send on the virq port", code(xen.send(6)), inval);

    // Each send raises the peer port: an upcall on the vector, the scan finds the port.
    for (what, send, raised) in [("loopback 4 -> 3", 4, 3), ("loopback 3 -> 4", 3, 4), ("ipi", 5, 5)] {
        let before = upcalls();
        let sent = xen.send(send);
        let arrived = upcall_arrives(before);
        let found = events.take(raised);
        println!(
            "xen: send on {}: {:?}, upcall on vector {:#x}={}, port {} pending={}",
            what, sent, UPCALL_VECTOR, arrived, raised, found
        );
        works &= sent.is_ok() && arrived && found;
    }
    // Masked: pending but no upcall; EVTCHNOP_unmask delivers it.
    SHARED_INFO.mask(3);
    let before = upcalls();
    let sent = xen.send(4);
    let early = upcall_arrives(before);
    let pending = SHARED_INFO.is_pending(3);
    let unmasked = xen.unmask(3);
    let arrived = upcall_arrives(before);
    let found = events.take(3);
    println!(
        "xen: masked port 3: send {:?}, upcall while masked={}, pending={}; unmask {:?}, upcall={}, found={}",
        sent, early, pending, unmasked, arrived, found
    );
    works &= sent.is_ok() && !early && pending && unmasked.is_ok() && arrived && found && !SHARED_INFO.is_masked(3);
    // Close one end: the other is unbound again, and sends on it go nowhere.
    works &= expect("close of the loopback port 4", code(xen.close(4)), 0);
    works &= expect_status(
        "port 3 after its peer closed",
        xen.status(DOMID_SELF, 3),
        Channel::Unbound { remote_dom: domid },
    );
    works &= expect_status("port 4 after close", xen.status(DOMID_SELF, 4), Channel::Closed);
    works &= expect("close of port 4 again", code(xen.close(4)), inval);
    works &= expect("send on the closed port 4", code(xen.send(4)), inval);
    works &= expect("send on the unbound port 3", code(xen.send(3)), 0);
    works &= expect("close of the ipi port", code(xen.close(5)), 0);
    works &= expect_port("bind_ipi after close (the lowest free port)", xen.bind_ipi(0), 4);
    println!("xen: event channels work as documented={} (upcalls {})", works, upcalls());
    ok && works
}

// ---------------------------------------------------------------------------------------
// Ping-pong through the adapter.

/// Message types of the ping-pong.
const DATA: u32 = 1;
const VERDICT: u32 = 2;
/// The flow phase's messages, and its last one.
const FLOW: u32 = 3;
const FLOW_LAST: u32 = 4;

/// A ping-pong message: sequence number, then its complement.
fn data(seq: u64) -> Message {
    let mut message = Message::EMPTY;
    message.header =
        MessageHeader { message_type: DATA, payload_size: 16, message_flags: 0, reserved: 0, origination_id: 0 };
    message.payload[..8].copy_from_slice(&seq.to_le_bytes());
    message.payload[8..16].copy_from_slice(&(!seq).to_le_bytes());
    message
}

/// The sequence number of an intact DATA payload.
fn sequence(message_type: u32, payload: &[u8]) -> Option<u64> {
    let seq = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let check = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    (message_type == DATA && payload.len() == 16 && check == !seq).then_some(seq)
}

/// A Xen end's connections (ports once bound) and rings.
struct XenEnd {
    xen: Client<X64>,
    events: Events,
    ev_out: Port,
    ev_in: Port,
    msg_out: Port,
    msg_in: Port,
    ring_out: Ring,
    ring_in: Ring,
    /// -ENOTCONN and -EAGAIN answers retried.
    retries: u64,
}

impl XenEnd {
    /// Sends on `port`, again while the peer is not ready (-ENOTCONN) or, for a message
    /// connection to a Hyper-V partition, its queue is full (-EAGAIN).
    fn send(&mut self, port: Port) -> Result<(), Errno> {
        loop {
            match self.xen.send(port) {
                Err(e) if e.is(errno::ENOTCONN) || e.is(errno::EAGAIN) => {
                    self.retries += 1;
                    core::hint::spin_loop();
                }
                other => return other,
            }
        }
    }

    /// Writes `message` into the outgoing ring and sends its notice.
    fn post(&mut self, message: &Message) -> Result<(), &'static str> {
        loop {
            match self.ring_out.push(message) {
                Ok(_) => break,
                Err(RingError::Full) => {
                    self.retries += 1;
                    core::hint::spin_loop();
                }
                Err(_) => return Err("outgoing ring not ready or corrupt"),
            }
        }
        self.send(self.msg_out).map_err(|_| "send refused")
    }

    /// Waits (halted) for the next message in the incoming ring and takes it.
    fn receive(&mut self) -> Result<Message, RingError> {
        let ring = self.ring_in;
        let events = &mut self.events;
        let msg_in = self.msg_in;
        wait_until(|| {
            events.take(msg_in);
            ring.outstanding() != Ok(0)
        });
        ring.pop()?.ok_or(RingError::NotReady)
    }
}

/// `case=pingpong role=ping|pong peer=ID n=N ev_out=C ev_in=C msg_out=C msg_in=C
/// ring_out=ADDRESS ring_in=ADDRESS`: the Xen side of the ping-pong. Ping sends N events,
/// each after the previous answer, then N numbered messages through the ring, each after
/// the previous echo, checking order and that none is lost; then takes the peer's verdict
/// message and reports. Pong (Xen <-> Xen) answers each event and echoes each message,
/// then sends its verdict.
fn xen_pingpong(args: &str) -> bool {
    let number = |key| arg(args, key).and_then(parse_u64);
    let (Some(peer), Some(ev_out), Some(ev_in), Some(msg_out), Some(msg_in), Some(ring_out), Some(ring_in)) = (
        number("peer"),
        number("ev_out"),
        number("ev_in"),
        number("msg_out"),
        number("msg_in"),
        number("ring_out"),
        number("ring_in"),
    ) else {
        println!("xen: case=pingpong needs peer ev_out ev_in msg_out msg_in ring_out ring_in");
        return false;
    };
    let n = number("n").unwrap_or(100_000);
    let ping = arg(args, "role") == Some("ping");
    let peer = peer as u16;
    let mut xen = client();
    if xen.install_hypercall_page(hypercall_page()).is_err() {
        return false;
    }
    let events = match Events::setup(&mut xen) {
        Ok(events) => events,
        Err(e) => {
            println!("xen: event set-up refused: {:?}", e);
            return false;
        }
    };
    let mut bind = |connection: u64| xen.bind_interdomain(peer, connection as u32);
    let ports = (bind(ev_out), bind(ev_in), bind(msg_out), bind(msg_in));
    println!("xen: bound connections {} {} {} {} to ports {:?}", ev_out, ev_in, msg_out, msg_in, ports);
    let (Ok(p_ev_out), Ok(p_ev_in), Ok(p_msg_out), Ok(p_msg_in)) = ports else { return false };
    // SAFETY: the system file maps each ring region (4 KiB, rw) at these addresses, and
    // only the peer and the hypervisor share them.
    let rings = unsafe { (Ring::new(ring_out as *mut u8), Ring::new(ring_in as *mut u8)) };
    println!(
        "xen: rings ready={} (capacity {:?}) and {} (capacity {:?})",
        rings.0.is_ready(),
        rings.0.capacity(),
        rings.1.is_ready(),
        rings.1.capacity()
    );
    let mut end = XenEnd {
        xen,
        events,
        ev_out: p_ev_out,
        ev_in: p_ev_in,
        msg_out: p_msg_out,
        msg_in: p_msg_in,
        ring_out: rings.0,
        ring_in: rings.1,
        retries: 0,
    };
    let flow = arg(args, "flow") == Some("1");
    let bench = arg(args, "bench") == Some("1");
    if ping { pingpong_ping(&mut end, n, flow, bench) } else { pingpong_pong(&mut end, n) }
}

/// With `bench`, the round trips are also printed as `cargo xtask bench` figures
/// (`xen-event-ping-pong`, `xen-message-ping-pong`: TSC ticks, instructions under Bochs).
fn pingpong_ping(end: &mut XenEnd, n: u64, flow: bool, bench: bool) -> bool {
    let start = rdtsc();
    let mut sent = 0;
    for _ in 0..n {
        if end.send(end.ev_out).is_err() {
            break;
        }
        end.events.wait(end.ev_in);
        sent += 1;
    }
    let events_done = rdtsc();
    println!(
        "xen: {} event round trips of {} answered; {} TSC ticks, {} per round trip",
        sent,
        n,
        events_done - start,
        (events_done - start) / n.max(1)
    );
    if bench {
        println!("bench: xen_event_ping_pong={}", (events_done - start) / n.max(1));
    }
    let mut in_order = true;
    let mut received = 0;
    let mut failure = None;
    for seq in 0..n {
        if let Err(e) = end.post(&data(seq)) {
            failure = Some(e);
            break;
        }
        match end.receive() {
            Ok(message) => {
                in_order &= sequence(message.header.message_type, message.payload()) == Some(seq);
                received += 1;
            }
            Err(_) => {
                failure = Some("incoming ring not ready or corrupt");
                break;
            }
        }
    }
    let messages_done = rdtsc();
    println!(
        "xen: {} message round trips of {}: in order={}, none lost={}; {} TSC ticks, {} per round trip",
        received,
        n,
        in_order,
        received == n,
        messages_done - events_done,
        (messages_done - events_done) / n.max(1)
    );
    if bench {
        println!("bench: xen_message_ping_pong={}", (messages_done - events_done) / n.max(1));
    }
    if let Some(failure) = failure {
        println!("xen: ping-pong stopped: {}", failure);
    }
    let flow_ok = !flow || flow_to_hyperv(end);
    let verdict = end.receive();
    let peer_passed = verdict.is_ok_and(|m| m.header.message_type == VERDICT && m.payload() == [1]);
    // The receiver's send on a message connection is its "consumed" notice: accepted.
    let notice = end.xen.send(end.msg_in);
    println!(
        "xen: peer's verdict pass={}; consumed notice {:?}; -ENOTCONN/-EAGAIN/full retries {}",
        peer_passed, notice, end.retries
    );
    sent == n && received == n && in_order && failure.is_none() && flow_ok && peer_passed && notice.is_ok()
}

/// The flow phase with a Hyper-V receiver that holds off until told: `capacity` messages
/// fill its SynIC slot and queue (the connection's queue_depth + 1, the ring's capacity
/// too); `capacity` more stay in the ring, the send answering -EAGAIN, and the ring is full.
/// Then an event tells the receiver to drain, and the sender sends again until the ring
/// is empty: all `2 * capacity` arrive, in order.
fn flow_to_hyperv(end: &mut XenEnd) -> bool {
    let capacity = end.ring_out.capacity().unwrap_or(0);
    let count = 2 * u64::from(capacity);
    let message = |seq: u64| {
        let mut m = data(seq);
        m.header.message_type = if seq + 1 == count { FLOW_LAST } else { FLOW };
        m
    };
    let first_pushed = (0..u64::from(capacity)).filter(|&seq| end.ring_out.push(&message(seq)).is_ok()).count();
    let first = end.xen.send(end.msg_out);
    let second_pushed = (u64::from(capacity)..count).filter(|&seq| end.ring_out.push(&message(seq)).is_ok()).count();
    let second = end.xen.send(end.msg_out);
    let left = end.ring_out.outstanding();
    let full = end.ring_out.push(&message(count));
    let told = end.send(end.ev_out);
    let mut resends = 0u64;
    let last = loop {
        match end.xen.send(end.msg_out) {
            Err(e) if e.is(errno::EAGAIN) => resends += 1,
            other => break other,
        }
    };
    println!(
        "xen: flow: {} messages, send {:?}; {} more, send {:?} with {:?} left in the ring, one more push {:?}",
        first_pushed, first, second_pushed, second, left, full
    );
    println!("xen: flow: receiver told {:?}, the rest sent {:?} ({} resends)", told, last, resends);
    first_pushed as u32 == capacity
        && first.is_ok()
        && second_pushed as u32 == capacity
        && second == Err(Errno(errno::EAGAIN))
        && left == Ok(capacity)
        && full == Err(RingError::Full)
        && told.is_ok()
        && last.is_ok()
        && end.ring_out.outstanding() == Ok(0)
}

fn pingpong_pong(end: &mut XenEnd, n: u64) -> bool {
    let mut answered = 0;
    for _ in 0..n {
        end.events.wait(end.ev_in);
        if end.send(end.ev_out).is_err() {
            break;
        }
        answered += 1;
    }
    println!("xen: {} events answered", answered);
    let mut in_order = true;
    let mut echoed = 0;
    for seq in 0..n {
        let Ok(message) = end.receive() else { break };
        in_order &= sequence(message.header.message_type, message.payload()) == Some(seq);
        if end.post(&message).is_err() {
            break;
        }
        echoed += 1;
    }
    let ok = answered == n && echoed == n && in_order;
    println!("xen: {} messages echoed, in order={}", echoed, in_order);
    let mut verdict = Message::EMPTY;
    verdict.header.message_type = VERDICT;
    verdict.header.payload_size = 1;
    verdict.payload[0] = ok as u8;
    let sent = end.post(&verdict);
    println!("xen: verdict sent {:?}", sent);
    ok
}

/// `case=hyperv-pingpong n=N msg_out=C ev_out=C flag_in=F` (a Hyper-V partition): the
/// echo side of the ping-pong with a Xen partition, through abi's Hyper-V client:
/// answers each event (SINT 3, flag `flag_in`) on `ev_out`, echoes each message (SINT 2)
/// on `msg_out` checking the order, then sends its verdict as a last message.
fn hyperv_pingpong(args: &str) -> bool {
    let number = |key| arg(args, key).and_then(parse_u64);
    let (Some(msg_out), Some(ev_out), Some(flag_in)) = (number("msg_out"), number("ev_out"), number("flag_in")) else {
        println!("hyperv-pingpong: needs msg_out ev_out flag_in");
        return false;
    };
    let n = number("n").unwrap_or(100_000);
    let mut end = Endpoint::new(msg_out as u32, ev_out as u32, flag_in as u16, true);
    let mut answered = 0;
    for _ in 0..n {
        end.wait_event();
        if end.signal_retrying().is_err() {
            break;
        }
        answered += 1;
    }
    println!("hyperv-pingpong: {} events answered", answered);
    let mut in_order = true;
    let mut echoed = 0;
    for seq in 0..n {
        let message = end.wait_message();
        in_order &= sequence(message.header.message_type, message.payload()) == Some(seq);
        if end.post_retrying(DATA, message.payload()).is_err() {
            break;
        }
        echoed += 1;
    }
    let mut ok = answered == n && echoed == n && in_order;
    println!("hyperv-pingpong: {} messages echoed, in order={}", echoed, in_order);
    if arg(args, "flow") == Some("1") {
        // Hold off until told (the sender fills this SynIC's slot and queue, then its
        // ring), then drain: every message, in order, up to the last.
        end.wait_event();
        let mut seq = 0u64;
        let mut flow_in_order = true;
        loop {
            let message = end.wait_message();
            let got = message.payload().get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0xff; 8])));
            let kind = message.header.message_type;
            flow_in_order &= (kind == FLOW || kind == FLOW_LAST) && got == Some(seq);
            seq += 1;
            if kind != FLOW {
                break;
            }
        }
        println!("hyperv-pingpong: flow: {} messages drained in order={}", seq, flow_in_order);
        ok &= flow_in_order;
    }
    let sent = end.post_retrying(VERDICT, &[ok as u8]);
    println!("hyperv-pingpong: verdict sent {:?}", sent.map(|_| ()));
    ok
}

/// A page the sweep's calls may read and write.
static mut SWEEP_SCRATCH: Page = Page([0; 4096]);

/// The errnos a call may answer (docs/xen.md): anything else, or a value from a call that
/// returns none, is a wrong answer.
const SWEEP_ERRNOS: [i64; 11] = [
    errno::EPERM,
    errno::ENOENT,
    errno::ESRCH,
    errno::EAGAIN,
    errno::EFAULT,
    errno::EEXIST,
    errno::EINVAL,
    errno::ENOSPC,
    errno::ENOSYS,
    errno::ENOTCONN,
    errno::EACCES,
];

/// `case=sweep` (a hostile guest): every hypercall number 0..=63 and a few beyond, each
/// with commands 0..=40 and three argument sets (pointers to a zeroed page of its own, to
/// nothing, and a vCPU id with a pointer), through VMCALL/VMMCALL directly. Each answer
/// must be 0, a documented errno, or a value from `xen_version`; the hypervisor must stay
/// up, and the partition must still get its version afterwards. Left out, as a sweep of
/// MSRs leaves out what ends the guest: `SCHEDOP_shutdown` (it would), `CONSOLE_IO` write
/// (it would print the scratch page).
fn sweep() -> bool {
    let mut xen = client();
    let scratch = (&raw mut SWEEP_SCRATCH) as u64;
    let numbers = (0u64..64).chain([99, 0x7fff, 0x8000_0000, u64::MAX]);
    let (mut calls, mut values, mut wrong) = (0u32, 0u32, 0u32);
    let mut counts = [0u32; 108];
    for number in numbers {
        for cmd in 0u64..=40 {
            if (number == call::SCHED_OP && cmd == sched::SHUTDOWN)
                || (number == call::CONSOLE_IO && cmd == console::WRITE)
            {
                continue;
            }
            for args in
                [[cmd, scratch, scratch, 0, 0], [cmd, OUTSIDE, OUTSIDE, OUTSIDE, OUTSIDE], [cmd, 1, scratch, 0, 0]]
            {
                // SAFETY: a page of the guest's own image, which nothing else uses.
                unsafe { core::ptr::write_bytes(scratch as *mut u8, 0, 4096) };
                // No hypercall page is installed: VMCALL/VMMCALL directly, any number.
                let rax = xen.hypercall(number, args);
                calls += 1;
                match xen::errno_of(rax) {
                    Some(e) if SWEEP_ERRNOS.contains(&e) => counts[e as usize] += 1,
                    None if rax == 0 => counts[0] += 1,
                    None if number == call::XEN_VERSION => values += 1,
                    _ => {
                        wrong += 1;
                        if wrong <= 8 {
                            println!(
                                "xen: sweep: call {:#x} cmd {} args {:#x?} -> {:#x}: not a documented answer",
                                number,
                                cmd,
                                &args[1..3],
                                rax
                            );
                        }
                    }
                }
            }
        }
    }
    let version = xen.version();
    println!(
        "xen: sweep: {} calls, 0 {} times, a version value {} times, -ENOSYS {}, -EINVAL {}, -EFAULT {}, -EPERM {}, -ENOENT {}, others {}; {} wrong",
        calls,
        counts[0],
        values,
        counts[errno::ENOSYS as usize],
        counts[errno::EINVAL as usize],
        counts[errno::EFAULT as usize],
        counts[errno::EPERM as usize],
        counts[errno::ENOENT as usize],
        calls
            - counts[0]
            - values
            - counts[errno::ENOSYS as usize]
            - counts[errno::EINVAL as usize]
            - counts[errno::EFAULT as usize]
            - counts[errno::EPERM as usize]
            - counts[errno::ENOENT as usize]
            - wrong,
        wrong
    );
    println!("xen: sweep: afterwards version {:?}", version);
    wrong == 0 && version == Ok((4, 17))
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    match arg(args, "case") {
        Some("calls") => {
            let domid = arg(args, "domid").and_then(parse_u64);
            let life = arg(args, "life").and_then(parse_u64);
            match (domid, life) {
                (Some(domid), Some(life)) => report(calls(domid as u32, life)),
                _ => {
                    println!("xen: case=calls needs domid=N life=ADDRESS");
                    report(false)
                }
            }
        }
        Some("hyperv-side") => {
            hyperv_side();
            idle()
        }
        Some("evtchn-refusals") => {
            let number = |key| arg(args, key).and_then(parse_u64);
            match (number("domid"), number("peer"), number("in"), number("out")) {
                (Some(domid), Some(peer), Some(conn_in), Some(conn_out)) => {
                    report(evtchn_refusals(domid as u16, peer as u16, conn_in as u32, conn_out as u32))
                }
                _ => {
                    println!("xen: case=evtchn-refusals needs domid=N peer=ID in=CONNECTION out=CONNECTION");
                    report(false)
                }
            }
        }
        Some("pingpong") => {
            let passed = xen_pingpong(args);
            if arg(args, "role") == Some("ping") {
                report(passed)
            }
            idle()
        }
        Some("hyperv-pingpong") => {
            hyperv_pingpong(args);
            idle()
        }
        Some("sweep") => report(sweep()),
        _ => {
            println!("xen: unknown case");
            report(false)
        }
    }
}
