//! Demo partition "control": the real-time side. A periodic loop driven by its own core's
//! local APIC timer (x2APIC; where it is passed through, neither the interrupt nor the
//! EOI exits to the hypervisor) that measures its own timer jitter and reports to
//! telemetry through the Hyper-V interface (`bulkhead_guests::demo` has the protocol):
//!
//! - every 100 ticks it posts a [`Report`] (tick count, worst jitter) with
//!   HvCallPostMessage on connection 1. A full queue (INSUFFICIENT_BUFFERS) is counted and
//!   carried in the next report: the refused one is not retried, the next carries newer
//!   figures. A post before telemetry has enabled its SynIC (INVALID_SYNIC_STATE) is
//!   retried at the next report; any other status is a fault in the system's
//!   configuration and ends the demo with FAIL;
//! - telemetry's event (SINT 3 interrupt) tells it to read the "status" shared page
//!   (`status=ADDRESS` on its command line) and print what telemetry acknowledged.
//!
//! Jitter: the TSC at each tick, taken as the loop wakes from HLT; the worst deviation of
//! one interval between consecutive ticks from the expected period, which is the mean of
//! the intervals measured (the APIC timer's frequency is not something the interface
//! reports). The TSC frequency comes from the reference TSC
//! page's scale where the hypervisor offers the page (CPUID 0x4000_0003 EAX bit 9); without
//! it the jitter is reported in TSC cycles.
#![no_std]
#![no_main]

use bulkhead_abi::hyperv::HvStatus;
use bulkhead_abi::hyperv::cpuid::{LEAF_FEATURES, privileges_eax};
use bulkhead_abi::hyperv::reference_tsc::tsc_hz;
use bulkhead_guests::demo::{ACK_FLAG, ACK_SINT, Jitter, REPORT_CONNECTION, REPORT_TYPE, Report, StatusPage};
use bulkhead_guests::hyperv::sint_interrupts::{self, EVENT_VECTOR, halt_unless_busy};
use bulkhead_guests::hyperv::{client_with_hypercalls, enable_reference_tsc_page, reference_tsc_scale};
use bulkhead_guests::{arg, cmdline, cpuid, gp, parse_u64, println, rdtsc, report};

/// Timer period in APIC timer ticks (divide by 1).
const PERIOD: u32 = 50_000;
/// Ticks between two reports.
const REPORT_EVERY: u64 = 100;

/// A tick: the tick count and the TSC when the loop saw it.
#[derive(Clone, Copy)]
struct Stamp {
    tick: u64,
    tsc: u64,
}

/// Intervals between two consecutive ticks: the shortest, the longest and their mean (the
/// expected period). An interval counts only when the loop saw both of its ticks as they
/// happened (woke from HLT with the count one higher): a tick that arrived while it was
/// busy has no usable time, nor has the interval after it. The mean is taken over these
/// intervals, not over the tick count since the start: ticks that fall due while the
/// vCPU cannot take them (in a VM exit, or descheduled by the host) merge in the APIC and
/// are never counted.
#[derive(Default)]
struct JitterMeter {
    /// The previous tick, if its time is usable.
    previous: Option<Stamp>,
    intervals: u64,
    sum: u64,
    shortest: u64,
    longest: u64,
}

impl JitterMeter {
    fn seen(&mut self, stamp: Stamp) {
        if let Some(previous) = self.previous
            && stamp.tick == previous.tick + 1
        {
            let interval = stamp.tsc.wrapping_sub(previous.tsc);
            self.shortest = if self.intervals == 0 { interval } else { self.shortest.min(interval) };
            self.longest = self.longest.max(interval);
            self.sum = self.sum.saturating_add(interval);
            self.intervals += 1;
        }
        self.previous = Some(stamp);
    }

    /// Ticks passed without a usable time.
    fn missed(&mut self) {
        self.previous = None;
    }

    /// The worst deviation of one interval from the mean, in TSC cycles (0 until there is
    /// an interval).
    fn worst_cycles(&self) -> u64 {
        if self.intervals == 0 {
            return 0;
        }
        let mean = self.sum / self.intervals;
        (self.longest - mean).max(mean - self.shortest)
    }

    fn worst(&self, tsc_hz: Option<u64>) -> Jitter {
        let cycles = self.worst_cycles();
        match tsc_hz {
            Some(hz) => Jitter::Nanoseconds((u128::from(cycles) * 1_000_000_000 / u128::from(hz)) as u64),
            None => Jitter::TscCycles(cycles),
        }
    }
}

/// The TSC frequency the hypervisor reports through the reference TSC page, if it offers
/// the page.
fn tsc_frequency() -> Option<u64> {
    if cpuid(LEAF_FEATURES, 0).eax & privileges_eax::REFERENCE_TSC == 0 {
        return None;
    }
    enable_reference_tsc_page();
    reference_tsc_scale().map(tsc_hz).filter(|&hz| hz > 0)
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
    // SAFETY: demo.toml maps the "status" shared page (read-only here) at the address it
    // puts on this partition's command line.
    let status = unsafe { StatusPage::at(address) };
    sint_interrupts::install();
    let mut hv = client_with_hypercalls();
    // The SINT before the SynIC: once telemetry's signal is accepted, it interrupts.
    hv.enable_sint(ACK_SINT, EVENT_VECTOR).expect("acknowledgement SINT");
    hv.enable_synic();
    let hz = tsc_frequency();
    match hz {
        Some(hz) => println!(
            "started; periodic x2APIC timer, vector {:#x}; TSC {} kHz (reference TSC page); reporting every {} ticks",
            gp::TIMER_VECTOR,
            hz / 1000,
            REPORT_EVERY
        ),
        None => println!(
            "started; periodic x2APIC timer, vector {:#x}; no reference TSC page, jitter in TSC cycles; reporting every {} ticks",
            gp::TIMER_VECTOR,
            REPORT_EVERY
        ),
    }
    gp::start_timer(PERIOD);
    let mut meter = JitterMeter::default();
    let mut next_report = REPORT_EVERY;
    let (mut sent, mut refused, mut acknowledged) = (0u32, 0u32, 0u32);
    loop {
        let (mut before, mut event) = (0, false);
        let halted = halt_unless_busy(|| {
            before = gp::ticks();
            event = hv.take_event(ACK_SINT, ACK_FLAG);
            event || before >= next_report
        });
        let tsc = rdtsc();
        let tick = gp::ticks();
        // Woken from HLT by one tick: its time is now (plus the wake-up path, which is
        // part of the jitter the loop sees).
        if halted && tick == before + 1 {
            meter.seen(Stamp { tick, tsc });
        } else if tick != before {
            meter.missed();
        }
        if event {
            let number = status.acknowledged();
            if number > acknowledged {
                acknowledged = number;
                println!("telemetry acknowledged report {}", number);
            }
        }
        if tick >= next_report {
            // The next multiple of REPORT_EVERY: a late report does not make a burst.
            next_report = tick - tick % REPORT_EVERY + REPORT_EVERY;
            let outgoing = Report { sequence: sent + 1, acknowledged, tick, worst_jitter: meter.worst(hz), refused };
            match hv.post_message(REPORT_CONNECTION, REPORT_TYPE, &outgoing.to_bytes()) {
                Ok(()) => sent += 1,
                // Numbers go to accepted reports only, so these name the tick instead.
                Err(e) if e.is_queue_full() => {
                    refused += 1;
                    println!("report at tick {} refused: telemetry's queue is full ({} so far)", tick, refused);
                }
                Err(e) if e.status_code() == Some(HvStatus::InvalidSynicState.code()) => {
                    println!("report at tick {} not sent: telemetry's SynIC is not enabled yet", tick)
                }
                Err(e) => {
                    println!("report at tick {} failed: {:?}", tick, e);
                    report(false)
                }
            }
        }
    }
}
