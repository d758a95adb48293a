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
#![no_std]
#![no_main]

use bulkhead_abi::hyperv::{cpuid as hv_cpuid, msr as hv_msr};
use bulkhead_abi::xen::{self, call, console, errno, hvm_cpuid, sched, version};
use bulkhead_abi::xen_client::{Client, Cpu, Errno, X64};
use bulkhead_guests::{arg, cmdline, cpuid, gp, idle, parse_u64, println, report, user};
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
        [hvm_cpuid::VCPU_ID_PRESENT | hvm_cpuid::DOMID_PRESENT, 0, domid, 0],
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
        && features == [Ok(0), Ok(0)]
        && page_size == Ok(4096);
    let written = xen.console_write(b"xen: hello through console_io\nxen: second console_io line\n");
    println!("xen: console_io write -> {:?}", written);

    let nosys = xen::failure(errno::ENOSYS);
    let fault = xen::failure(errno::EFAULT);
    let calls = [
        ("memory_op", call::MEMORY_OP, [0; 5], nosys),
        ("set_timer_op", call::SET_TIMER_OP, [0; 5], nosys),
        ("grant_table_op", call::GRANT_TABLE_OP, [0; 5], nosys),
        ("vcpu_op", call::VCPU_OP, [0; 5], nosys),
        ("event_channel_op", call::EVENT_CHANNEL_OP, [0; 5], nosys),
        ("hvm_op", call::HVM_OP, [0; 5], nosys),
        ("call 0", 0, [0; 5], nosys),
        ("call 99", 99, [0; 5], nosys),
        ("xen_version cmd 99", call::XEN_VERSION, [99, 0, 0, 0, 0], nosys),
        ("console_io read", call::CONSOLE_IO, [console::READ, 16, 0, 0, 0], nosys),
        ("sched_op poll", call::SCHED_OP, [sched::POLL, 0, 0, 0, 0], nosys),
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
        _ => {
            println!("xen: unknown case");
            report(false)
        }
    }
}
