//! Demo partition "telemetry": the general-purpose side. Receives control's reports
//! through its SynIC (`bulkhead_guests::demo` has the protocol): each arrives in SINT 2's
//! message slot and raises an interrupt; telemetry takes it with the client's `receive`
//! (which writes EOM when more wait), prints it, writes its number in the "status" shared
//! page (`status=ADDRESS` on its command line) and answers with HvCallSignalEvent on
//! connection 2.
//!
//! It ends the demo once a report says control has seen the acknowledgement of report
//! [`ACKNOWLEDGED_TO_END`] (so reports went one way and acknowledgements the other),
//! with PASS if it runs under a hypervisor without VMX showing, every report arrived in
//! order (numbers 1, 2, 3, ... with rising ticks) and every signal was accepted; with FAIL
//! at the first report that breaks that.
//!
//! `stall_ms=N` on its command line (a test's switch, `telemetry:stall_ms=N`; the demo
//! system does not set it) makes it take no messages after report 2 for N milliseconds of
//! the partition's reference time, so that control's reports fill the queue and control
//! meets INSUFFICIENT_BUFFERS.
#![no_std]
#![no_main]

use bulkhead_abi::hyperv::reference_tsc::TICKS_PER_SECOND;
use bulkhead_guests::demo::{ACK_CONNECTION, ACK_FLAG, REPORT_SINT, REPORT_TYPE, Report, StatusPage};
use bulkhead_guests::hyperv::sint_interrupts::{self, MESSAGE_VECTOR, wait_until};
use bulkhead_guests::hyperv::{client_with_hypercalls, enable_reference_tsc_page, reference_time_from_page};
use bulkhead_guests::{arg, cmdline, cpuid, parse_u64, println, report};

/// The demo ends once a report says control has seen the acknowledgement of this report.
const ACKNOWLEDGED_TO_END: u32 = 5;

/// Takes no messages for `ms` milliseconds of reference time (read from the reference TSC
/// page: no exit per read); at once if the page is not valid.
fn stall(ms: u64) {
    println!("stalling: taking no reports for {} ms", ms);
    enable_reference_tsc_page();
    let Some(start) = reference_time_from_page() else { return };
    let until = start + ms * (TICKS_PER_SECOND / 1000);
    while reference_time_from_page().is_some_and(|now| now < until) {
        core::hint::spin_loop();
    }
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(args: *const u8) -> ! {
    // SAFETY: the hypervisor passes the command line's address in RDI.
    let args = unsafe { cmdline(args) };
    let Some(address) = arg(args, "status").and_then(parse_u64) else {
        println!("no status=ADDRESS on the command line");
        report(false)
    };
    // SAFETY: demo.toml maps the "status" shared page read-write at the address it puts
    // on this partition's command line.
    let status = unsafe { StatusPage::at(address) };
    let stall_ms = arg(args, "stall_ms").and_then(parse_u64);
    let leaf1 = cpuid(1, 0);
    let hypervisor = leaf1.ecx & (1 << 31) != 0;
    let vmx = leaf1.ecx & (1 << 5) != 0;
    sint_interrupts::install();
    let mut hv = client_with_hypercalls();
    // The SINT before the SynIC: once control's post is accepted, it interrupts.
    hv.enable_sint(REPORT_SINT, MESSAGE_VECTOR).expect("report SINT");
    hv.enable_synic();
    println!(
        "started; cpuid hypervisor={} vmx={}; waiting for control's reports on SINT {}",
        hypervisor, vmx, REPORT_SINT
    );
    let mut last_tick = 0;
    let mut received = 0u32;
    let flowed = loop {
        // Halts until the slot holds a message; the slot is checked, not interrupts
        // counted, so two interrupts merged into one lose nothing.
        let mut message = None;
        wait_until(|| {
            message = hv.receive(REPORT_SINT);
            message.is_some()
        });
        let Some(message) = message else { continue };
        let Some(r) =
            (message.header.message_type == REPORT_TYPE).then(|| Report::from_bytes(message.payload())).flatten()
        else {
            println!("unexpected message: type {}, {} bytes", message.header.message_type, message.payload().len());
            break false;
        };
        let (sequence, tick, jitter) = (r.sequence, r.tick, r.worst_jitter);
        match r.refused {
            0 => println!("report {} from control: tick {}, worst jitter {}", sequence, tick, jitter),
            n => println!(
                "report {} from control: tick {}, worst jitter {}; {} refused so far (queue full)",
                sequence, tick, jitter, n
            ),
        }
        if r.sequence != received + 1 || r.tick <= last_tick {
            println!("report {} out of order: expected report {} after tick {}", r.sequence, received + 1, last_tick);
            break false;
        }
        received = r.sequence;
        last_tick = r.tick;
        status.acknowledge(r.sequence);
        if let Err(e) = hv.signal_event(ACK_CONNECTION, ACK_FLAG) {
            println!("acknowledgement of report {} refused: status {:#x}", r.sequence, e.0);
            break false;
        }
        if let (2, Some(ms)) = (r.sequence, stall_ms) {
            stall(ms);
        }
        if r.acknowledged >= ACKNOWLEDGED_TO_END {
            println!(
                "control has seen acknowledgements up to report {}: {} reports received in order, each acknowledged",
                r.acknowledged, received
            );
            break true;
        }
    };
    report(hypervisor && !vmx && flowed)
}
