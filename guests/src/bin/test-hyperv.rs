//! Test payload "hyperv": the Hyper-V interface as a partition sees it, chosen by its
//! command line (`case=NAME`); prints every answer it gets and reports whether each was
//! the one the TLFS prescribes.
//!
//! `case=alone` (a partition with no connections): discovery leaves, VP_INDEX, the
//! reference time (TIME_REF_COUNT and the reference TSC page agree), the hypercall page,
//! ACCESS_DENIED for both calls, #UD for a call from ring 3, and #GP for every synthetic
//! MSR write the TLFS refuses (reserved bits, a page outside the partition). `case=sender` (sends on message
//! connection 1 and event connection 2 to a receiver that never enables its SynIC;
//! connection 3 belongs to the receiver): one call per failure status. `case=idle`: the
//! receiver, which does nothing. `case=clock`: the CPUID bits and MSRs Linux uses for its
//! clock (the frequency MSRs against its own measurements, the reference TSC page against
//! TIME_REF_COUNT, many page reads, a TSC write the page follows). `case=crash` (with
//! `life=ADDRESS`, a shared page that survives restarts): the guest crash MSRs, one report
//! with a message per life until the third, which checks the registers were reset.
#![no_std]
#![no_main]

use bulkhead_abi::hyperv::cpuid;
use bulkhead_abi::hyperv::hypercall::code;
use bulkhead_abi::hyperv::{CrashCtl, HypercallInput, HypercallMsr, PostMessageInput, SignalEventInput, msr};
use bulkhead_guests::hyperv::{
    GUEST_OS_ID, client, enable_reference_tsc_page, hypercall_page_address, input_area, post_message_at,
    post_message_gpa, rdmsr, reference_time_from_page, signal_event_memory, status,
};
use bulkhead_guests::{arg, cmdline, cpuid as cpuid_leaf, gp, idle, parse_u64, println, rdtsc, report, user};

/// Prints one status and says whether it is the expected one.
fn expect(what: &str, got: u16, want: u16) -> bool {
    println!("hyperv: {} status {:#x}", what, got);
    got == want
}

fn alone() -> bool {
    let vendor = cpuid_leaf(cpuid::LEAF_VENDOR_AND_MAX, 0);
    let interface = cpuid_leaf(cpuid::LEAF_INTERFACE, 0);
    let features = cpuid_leaf(cpuid::LEAF_FEATURES, 0);
    let microsoft = cpuid::is_microsoft_vendor(vendor.ebx, vendor.ecx, vendor.edx);
    println!(
        "hyperv: vendor microsoft={} max leaf {:#x} interface {:#x} privileges eax {:#x} ebx {:#x}",
        microsoft, vendor.eax, interface.eax, features.eax, features.ebx
    );
    let vp_index = rdmsr(msr::VP_INDEX);
    let mut hv = client();
    let enabled = hv.enable_hypercalls(GUEST_OS_ID).is_ok();
    let page = HypercallMsr::decode(rdmsr(msr::HYPERCALL));
    println!("hyperv: vp index {} hypercall page enabled={}", vp_index, page.is_enabled());
    // Reference time: TIME_REF_COUNT advances, and the page (read between two MSR reads)
    // agrees with it.
    let before = rdmsr(msr::TIME_REF_COUNT);
    enable_reference_tsc_page();
    let from_page = reference_time_from_page();
    let after = rdmsr(msr::TIME_REF_COUNT);
    let time_ok = from_page.is_some_and(|t| before <= t && t <= after) && before < after;
    println!("hyperv: reference time page valid={} between the MSR reads={}", from_page.is_some(), time_ok);
    let message = PostMessageInput::new(1, 1, b"hello").unwrap();
    let ok = [
        time_ok,
        expect("unknown call code", status(hv.raw_hypercall(HypercallInput::new(0x99).value(), 0, 0)), 0x2),
        expect("post message without connections", post_message_at(&mut hv, 0, &message), 0x6),
        expect("signal event without connections", hv.signal_event(2, 0).err().map_or(0, u16::from), 0x6),
        cpl3_hypercall_gets_ud(),
        synthetic_msr_writes_refused(),
    ];
    microsoft
        && vendor.eax >= 0x4000_0005
        && features.eax & cpuid::privileges_eax::REQUIRED_BY_LINUX == cpuid::privileges_eax::REQUIRED_BY_LINUX
        && features.ebx == 0
        && vp_index == 0
        && enabled
        && page.is_enabled()
        && ok.iter().all(|&ok| ok)
}

/// Calls the hypercall page from ring 3 (HvCallSignalEvent, fast): the hypervisor must
/// answer with #UD at the page's first instruction, not run the call.
fn cpl3_hypercall_gets_ud() -> bool {
    gp::install();
    user::install();
    let page = hypercall_page_address();
    let input = HypercallInput::new(code::SIGNAL_EVENT).fast(true).value();
    let rip = user::call_at_cpl3(page, input, SignalEventInput::new(2, 0).fast_value(), 0);
    let at = if rip == page {
        "the hypercall page"
    } else if rip == user::stub_ud2_address() {
        "the instruction after the call (the call returned)"
    } else {
        "an unexpected address"
    };
    println!("hyperv: hypercall from CPL 3 raised #UD at {}", at);
    rip == page
}

/// Synthetic MSR writes with a reserved bit set, a SINT vector below 16, a page the
/// partition does not own, or to a read-only register: each gets #GP and changes nothing;
/// the same registers with legal values are accepted.
fn synthetic_msr_writes_refused() -> bool {
    gp::install();
    // A page of this payload's own memory, and one far outside it (16 MiB partition).
    let own = input_area(0) & !0xfff;
    let outside = 0x8000_0000u64;
    let refused = [
        ("SCONTROL bit 1", msr::SCONTROL, 1 << 1 | 1),
        ("SCONTROL bit 63", msr::SCONTROL, 1 << 63),
        ("SINT0 bit 8", msr::sint(0), 0x50 | 1 << 8),
        ("SINT0 bit 19", msr::sint(0), 0x50 | 1 << 19),
        ("SINT0 vector 15", msr::sint(0), 15),
        ("VP_ASSIST_PAGE bit 1", msr::VP_ASSIST_PAGE, own | 1 << 1 | 1),
        ("VP_ASSIST_PAGE outside memory", msr::VP_ASSIST_PAGE, outside | 1),
        ("SIMP bit 11", msr::SIMP, own | 1 << 11 | 1),
        ("SIEFP outside memory", msr::SIEFP, outside | 1),
        ("HYPERCALL bit 2", msr::HYPERCALL, rdmsr(msr::HYPERCALL) | 1 << 2),
        ("VP_INDEX (read-only)", msr::VP_INDEX, 0),
    ];
    let before = [msr::SCONTROL, msr::sint(0), msr::VP_ASSIST_PAGE, msr::SIMP, msr::SIEFP].map(rdmsr);
    let mut all_gp = true;
    for (what, number, value) in refused {
        let gp = gp::wrmsr(number, value).is_err();
        all_gp &= gp;
        if !gp {
            println!("hyperv: {} accepted (wanted #GP)", what);
        }
    }
    let unchanged = before == [msr::SCONTROL, msr::sint(0), msr::VP_ASSIST_PAGE, msr::SIMP, msr::SIEFP].map(rdmsr);
    let accepted = [
        (msr::SCONTROL, 1),
        (msr::sint(0), 0x50 | 1 << 16 | 1 << 17),
        (msr::VP_ASSIST_PAGE, own | 1),
        (msr::VP_ASSIST_PAGE, 0),
        (msr::SCONTROL, 0),
        (msr::sint(0), 0x1_0000),
    ]
    .iter()
    .all(|&(number, value)| gp::wrmsr(number, value).is_ok() && rdmsr(number) == value);
    println!(
        "hyperv: synthetic MSR writes refused with #GP={} ({} cases), registers unchanged={}, legal values accepted={}",
        all_gp,
        refused.len(),
        unchanged,
        accepted
    );
    all_gp && unchanged && accepted
}

fn sender() -> bool {
    let mut hv = client();
    hv.enable_hypercalls(GUEST_OS_ID).expect("hypercall page");
    let message = PostMessageInput::new(1, 1, b"hello").unwrap();
    let reserved_bit = HypercallInput::new(code::SIGNAL_EVENT).fast(true).value() | 1 << 30;
    let mut too_long = message;
    too_long.payload_size = 241;
    let mut type_zero = message;
    type_zero.message_type = 0;
    let other = |id| PostMessageInput::new(id, 1, b"x").unwrap();
    let ok = [
        expect("unknown call code", status(hv.raw_hypercall(HypercallInput::new(0x99).value(), 0, 0)), 0x2),
        expect("reserved input bit", status(hv.raw_hypercall(reserved_bit, 2, 0)), 0x3),
        expect("misaligned input", post_message_at(&mut hv, 4, &message), 0x4),
        expect("page-crossing input", post_message_at(&mut hv, 4096 - 128, &message), 0x4),
        expect("input outside memory", post_message_gpa(&mut hv, 0xf000_0000), 0x4),
        expect("payload of 241 bytes", post_message_at(&mut hv, 0, &too_long), 0x5),
        expect("message type 0", post_message_at(&mut hv, 0, &type_zero), 0x5),
        expect("unknown connection", post_message_at(&mut hv, 0, &other(77)), 0x12),
        expect("connection of another partition", post_message_at(&mut hv, 0, &other(3)), 0x6),
        expect("message on an event connection", post_message_at(&mut hv, 0, &other(2)), 0x11),
        expect("flag number 1", hv.signal_event(2, 1).err().map_or(0, u16::from), 0x5),
        expect("post to a disabled SynIC", post_message_at(&mut hv, 0, &message), 0x18),
        expect("signal to a disabled SynIC", hv.signal_event(2, 0).err().map_or(0, u16::from), 0x18),
        expect("memory-form flag number 1", signal_event_memory(&mut hv, &SignalEventInput::new(2, 1)), 0x5),
        expect(
            "memory-form signal to a disabled SynIC",
            signal_event_memory(&mut hv, &SignalEventInput::new(2, 0)),
            0x18,
        ),
    ];
    println!("hyperv: input area at {:#x}", input_area(0));
    ok.iter().all(|&ok| ok)
}

/// Whether `value` is within `percent` % of `reference`.
fn close(value: u64, reference: u64, percent: u64) -> bool {
    value.abs_diff(reference) * 100 <= reference * percent
}

/// The clock interface Linux uses (its `ms_hyperv_init_platform` and `hyperv_timer.c`).
fn clock() -> bool {
    use cpuid::{features_edx, privileges_eax};
    gp::install();
    let features = cpuid_leaf(cpuid::LEAF_FEATURES, 0);
    let bits_ok = features.eax & privileges_eax::TIME_REF_COUNT != 0
        && features.eax & privileges_eax::REFERENCE_TSC != 0
        && features.eax & privileges_eax::ACCESS_FREQUENCY_MSRS != 0
        && features.eax & privileges_eax::TSC_INVARIANT == 0
        && features.edx & features_edx::FREQUENCY_MSRS_AVAILABLE != 0
        && features.edx & features_edx::GUEST_CRASH_MSRS_AVAILABLE != 0;
    println!(
        "hvclock: cpuid 0x40000003 eax {:#x} edx {:#x}: frequency msrs, reference tsc, crash msrs, no invariant tsc={}",
        features.eax, features.edx, bits_ok
    );

    // The TSC frequency against this vCPU's own count of TSC ticks over about 20 ms
    // (timed with the TSC at the reported frequency, so that only two MSR reads exit), in
    // reference time (TIME_REF_COUNT); the APIC timer's against its own count (divide by
    // 1, masked, one-shot) over 10 ms of TSC at the reported frequency.
    let tsc_hz = rdmsr(msr::TSC_FREQUENCY);
    let apic_hz = rdmsr(msr::APIC_FREQUENCY);
    let (ref0, tsc0) = (rdmsr(msr::TIME_REF_COUNT), rdtsc());
    while rdtsc() - tsc0 < tsc_hz / 50 {}
    let (ref1, tsc1) = (rdmsr(msr::TIME_REF_COUNT), rdtsc());
    let tsc_measured = ((tsc1 - tsc0) as u128 * 10_000_000 / u128::from((ref1 - ref0).max(1))) as u64;
    bulkhead_guests::lapic::enter_x2apic_mode();
    let apic = |number: u32, value: u64| gp::wrmsr(number, value).is_ok();
    let armed = apic(0x83e, 0b1011) && apic(0x832, 1 << 16) && apic(0x838, u64::from(u32::MAX));
    let start = rdtsc();
    while rdtsc() - start < tsc_hz / 100 {}
    let (count, elapsed) = (rdmsr(0x839), rdtsc() - start);
    let _ = apic(0x838, 0);
    let apic_measured = ((u64::from(u32::MAX) - count) as u128 * u128::from(tsc_hz) / u128::from(elapsed)) as u64;
    let tsc_ok = tsc_hz > 0 && close(tsc_measured, tsc_hz, 10);
    let apic_ok = armed && apic_hz > 0 && close(apic_measured, apic_hz, 10);
    println!("hvclock: tsc frequency {} Hz, measured {} Hz, within 10%={}", tsc_hz, tsc_measured, tsc_ok);
    println!("hvclock: apic frequency {} Hz, measured {} Hz, within 10%={}", apic_hz, apic_measured, apic_ok);
    let read_only = gp::wrmsr(msr::TSC_FREQUENCY, tsc_hz).is_err() && gp::wrmsr(msr::APIC_FREQUENCY, 0).is_err();
    println!("hvclock: frequency msr writes refused with #GP={}", read_only);

    // The reference TSC page: many reads between two MSR reads, never going back,
    // advancing, and within the MSR reads (the page's time is the MSR's).
    const READS: u32 = 20_000;
    enable_reference_tsc_page();
    let before = rdmsr(msr::TIME_REF_COUNT);
    let mut first = None;
    let mut last = 0;
    let mut monotonic = true;
    for _ in 0..READS {
        let Some(now) = reference_time_from_page() else {
            monotonic = false;
            break;
        };
        monotonic &= now >= last;
        first.get_or_insert(now);
        last = now;
    }
    let after = rdmsr(msr::TIME_REF_COUNT);
    let within = first.is_some_and(|first| before <= first && last <= after);
    let advanced = first.is_some_and(|first| last > first);
    println!(
        "hvclock: reference tsc page: {} reads, monotonic={} advanced={} between the MSR reads={}",
        READS, monotonic, advanced, within
    );

    // A TSC write moves this vCPU's TSC 10 s ahead; the page must follow it (the
    // hypervisor rewrites it for the new offset), so its time stays the MSR's (within the
    // one tick the separate rounding of the offset may add).
    let moved = gp::wrmsr(0x10, rdtsc().wrapping_add(tsc_hz.saturating_mul(10))).is_ok();
    let before = rdmsr(msr::TIME_REF_COUNT);
    let page = reference_time_from_page();
    let after = rdmsr(msr::TIME_REF_COUNT);
    let follows = moved && page.is_some_and(|t| before <= t + 1 && t <= after + 1);
    println!("hvclock: after a tsc write the page still agrees with the MSR={}", follows);

    bits_ok && tsc_ok && apic_ok && read_only && monotonic && advanced && within && follows
}

/// The crash message of the first life.
const CRASH_TEXT: &[u8] =
    b"Kernel panic - not syncing: bulkhead test crash\r\nsecond line\twith a tab\n\n\x1b[0mend\n\0filler";

#[repr(C, align(4096))]
struct MessagePage([u8; 4096]);
static mut CRASH_MESSAGE: MessagePage = MessagePage([0; 4096]);

/// One life of the crash test; `life` is a word of a shared page, which a restart keeps.
fn crash(life: u64) -> bool {
    // SAFETY: a word of the shared page the system file maps at `life`, this partition's only.
    let lives = unsafe { &*(life as *const core::sync::atomic::AtomicU64) };
    let this = lives.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
    gp::install();
    let ctl = rdmsr(msr::CRASH_CTL);
    let params: [u64; 5] = core::array::from_fn(|i| rdmsr(msr::CRASH_P0 + i as u32));
    println!("hvcrash: life {}, CRASH_CTL reads {:#x}, parameters {:?}", this, ctl, params);
    let reset = params == [0; 5] && ctl == CrashCtl::CAPABILITIES.value();
    let refused = gp::wrmsr(msr::CRASH_CTL, CrashCtl::NOTIFY | 1).is_err();
    println!("hvcrash: CRASH_CTL with a reserved bit refused with #GP={}", refused);
    let (text_gpa, len) = match this {
        0 => {
            let page = &raw mut CRASH_MESSAGE;
            // SAFETY: this payload's own static page, not otherwise in use; the text fits.
            unsafe { core::ptr::copy_nonoverlapping(CRASH_TEXT.as_ptr(), page.cast::<u8>(), CRASH_TEXT.len()) };
            (page as u64, CRASH_TEXT.len() as u64)
        }
        // Outside the partition's memory: the hypervisor logs that instead of the text.
        1 => (0xf000_0000, 64),
        _ => {
            println!("hvcrash: third life, crash registers reset={}", reset);
            return reset && refused;
        }
    };
    if !(reset && refused) {
        return false;
    }
    for (i, value) in [0x11, 0x22, 0x33, text_gpa, len].into_iter().enumerate() {
        let _ = gp::wrmsr(msr::CRASH_P0 + i as u32, value);
    }
    let _ = gp::wrmsr(msr::CRASH_CTL, CrashCtl::NOTIFY | CrashCtl::NOTIFY_MSG);
    println!("hvcrash: still running after the crash report");
    false
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    match arg(args, "case") {
        Some("alone") => report(alone()),
        Some("sender") => report(sender()),
        Some("clock") => report(clock()),
        Some("crash") => match arg(args, "life").and_then(parse_u64) {
            Some(life) => report(crash(life)),
            None => report(false),
        },
        _ => idle(),
    }
}
