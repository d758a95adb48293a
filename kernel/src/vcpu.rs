//! The vCPU loop: each core runs its partition's vCPU here, from the start (or a start-up
//! IPI) through every exit to a fault, an INIT or the partition's halt. The top of the
//! partition code: it calls the backend, the exit handlers (`exits/`), the Hyper-V state
//! and the partition's fault policy, and nothing below calls back into it.

use crate::backend::{Backend, VirtCore};
use crate::boot::bootinfo::BootInfo;
use crate::cpu::percpu::Attention;
use crate::exits::Stopping;
use crate::log::info;
use crate::partition::containment::Outcome;
use crate::partition::{Fault, Partition};
use crate::supervision::health::Request;
use bulkhead_virt::guest_state::{EntryMode, GuestEntry};
use core::sync::atomic::Ordering;

/// Logs every partition's VM exits by kind.
pub fn log_exit_counts() {
    for p in crate::partition::all() {
        let e = &p.exits;
        let total = [&e.io, &e.msr, &e.cpuid, &e.other].iter().map(|c| c.load(Ordering::Relaxed)).sum::<u32>();
        info!(
            "partition {=str}: exits: total {=u32}, io {=u32}, msr {=u32}, cpuid {=u32}, other {=u32}",
            p.name(),
            total,
            e.io.load(Ordering::Relaxed),
            e.msr.load(Ordering::Relaxed),
            e.cpuid.load(Ordering::Relaxed),
            e.other.load(Ordering::Relaxed)
        );
        let dropped = p.console_lines_dropped();
        if dropped > 0 {
            info!("partition {=str}: console: {=u64} lines dropped (rate limit) in total", p.name(), dropped);
        }
        let s = crate::supervision::calls::status_of(p);
        info!(
            "partition {=str}: health: state {=str}, restarts {=u32}, faults {=u32}, watchdog misses {=u32}, check-ins {=u32}, messages sent {=u32} received {=u32} refused {=u32}, events sent {=u32} received {=u32} refused {=u32}",
            p.name(),
            p.health.state().name(),
            s.restarts,
            s.faults,
            s.watchdog_misses,
            s.check_ins,
            s.messages_sent,
            s.messages_received,
            s.messages_refused,
            s.events_sent,
            s.events_received,
            s.events_refused
        );
        let (signals, unexpected) = crate::partition::nmi::counts(p);
        info!("partition {=str}: nmis: stop signals {=u32}, unexpected {=u32}", p.name(), signals, unexpected);
        if crate::devices::iommu::any_enabled() {
            let (events, faults) =
                (crate::partition::nmi::dma_fault_events(p), crate::partition::counters::dma_faults(p.config().id));
            info!(
                "partition {=str}: iommu: DMA faults {=u32} (fault event NMIs on its cores {=u32})",
                p.name(),
                faults,
                events
            );
        }
    }
    if crate::devices::iommu::any_enabled() && crate::devices::iommu::unowned_faults() > 0 {
        info!("iommu: DMA faults of functions no partition owns: {=u32}", crate::devices::iommu::unowned_faults());
    }
}

/// Real-mode start at `vector:0000` (INIT-SIPI-SIPI, SDM 9.4.4).
fn startup_entry(vector: u8) -> GuestEntry {
    GuestEntry {
        mode: EntryMode::Real { segment: u16::from(vector) << 8 },
        rip: 0,
        rsp: 0,
        gdt_base: 0,
        gdt_limit: 0,
        rax: 0,
        rbx: 0,
        rdi: 0,
        rsi: 0,
    }
}

/// Partitions whose first core has started them (or refused to) since boot.
static SETTLED: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Why this core's vCPU stopped running its guest.
enum Stop {
    /// It faulted: this core leads the partition's stop.
    Fault(Fault, u64),
    /// Another core of the partition faulted and stops the partition; the guest RIP where
    /// the hypervisor's NMI took the vCPU out of its guest, if that is how it left.
    Signalled(Option<u64>),
    /// The partition sent this vCPU an INIT: it resets and waits for a start-up IPI.
    Init,
    /// The monitor or the supervisor asked for the partition to be stopped
    /// (`supervision/health.rs`); the guest RIP where it left its guest.
    Requested(Request, u64),
}

/// Runs this core's vCPU until the partition halts for good. The first core loads the
/// payload and starts at its entry; every other core waits for the partition's INIT/SIPI.
/// A fault on any core stops all of the partition's cores (see `partition/containment.rs`) before
/// the policy is applied.
pub fn core_loop<C: VirtCore>(partition: &'static Partition, boot: &BootInfo, core: &mut C, first_core: bool) {
    let cpu = crate::cpu::percpu::current();
    // RESET (the partition starts) or INIT (a sibling reset this vCPU, SDM 9.4, 11.4.7.3):
    // both reset the registers; INIT keeps the APIC mode and waits for a start-up IPI,
    // even on the partition's first core.
    let mut reset = true;
    let mut settled = false;
    loop {
        reset_core_state();
        if reset {
            crate::lapic::reset(first_core);
        } else {
            crate::lapic::init();
        }
        let started = start_vcpu(partition, boot, core, first_core && reset);
        if first_core && !settled {
            // Started, or refused for good (a failed set-up stops here): a verdict may end
            // the run from now on without cutting this partition's start short.
            SETTLED.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
            settled = true;
        }
        let stop = match started {
            Ok(Some(vcpu)) => exit_loop(partition, vcpu),
            Ok(None) => Stop::Signalled(None),
            Err(fault) => Stop::Fault(fault, 0),
        };
        // Whatever follows (a stop, a restart) is not an exit the monitor should time.
        cpu.exit_ends();
        reset = true;
        let outcome = match stop {
            Stop::Init => {
                info!("partition {=str}: vcpu on cpu {=u32} got INIT: reset", partition.name(), cpu.index());
                reset = false;
                continue;
            }
            Stop::Fault(fault, rip) => partition.contain(fault, rip),
            Stop::Requested(Request::WatchdogFault, rip) => {
                let period_ms = partition.config().watchdog.map_or(0, |w| w.period_ms);
                partition.contain(Fault::Watchdog { period_ms }, rip)
            }
            Stop::Requested(Request::Restart { by }, _) => partition.contain_request(true, supervisor_name(by)),
            Stop::Requested(Request::Halt { by }, _) => partition.contain_request(false, supervisor_name(by)),
            Stop::Signalled(nmi_rip) => {
                match nmi_rip {
                    Some(rip) => info!(
                        "partition {=str}: vcpu on cpu {=u32} stopped by NMI at guest rip {=u64:#x}; parked",
                        partition.name(),
                        cpu.index(),
                        rip
                    ),
                    None => {
                        info!("partition {=str}: vcpu on cpu {=u32} stopped; parked", partition.name(), cpu.index())
                    }
                }
                partition.containment.park(cpu)
            }
        };
        if outcome == Outcome::Halt {
            if !partition.restartable() {
                return;
            }
            // Its supervisor may start it again: wait for that here.
            partition.containment.wait_while_halted();
            info!("partition {=str}: vcpu on cpu {=u32} resumes: restart", partition.name(), cpu.index());
        }
    }
}

fn supervisor_name(id: u8) -> &'static str {
    crate::config::SYSTEM.partitions.get(usize::from(id)).map_or("?", |p| p.name)
}

/// Starts this core's vCPU: the first core at the freshly loaded payload, the others at
/// the partition's start-up IPI; the started vCPU. `Ok(None)`: the partition is stopping
/// meanwhile.
fn start_vcpu<'c, C: VirtCore>(
    partition: &'static Partition,
    boot: &BootInfo,
    core: &'c mut C,
    first_core: bool,
) -> Result<Option<&'c mut C::Vcpu>, Fault> {
    let cpu = crate::cpu::percpu::current();
    let entry = if first_core {
        partition.set_state(bulkhead_abi::supervision::PartitionState::Starting, "loading its payload");
        // A fresh start: the partition's Hyper-V state (SynIC, hypercall page, reference
        // time) goes back to its power-on values along with its memory.
        crate::hyperv::reset_partition(partition);
        crate::xen::reset_partition(partition);
        let entry = partition.load(boot).map_err(|()| Fault::Load)?;
        // The TSC of the start: with Bochs's instruction clock, where a benchmark's count of
        // the partition's boot begins (docs/performance.md).
        info!(
            "partition {=str}: starting on cpu {=u32} at {=u64:#x}, tsc {=u64}",
            partition.name(),
            cpu.index(),
            entry.rip,
            crate::cpu::time::rdtsc()
        );
        entry
    } else {
        info!(
            "partition {=str}: vcpu on cpu {=u32} waits for INIT/SIPI from the partition",
            partition.name(),
            cpu.index()
        );
        let Some(vector) = cpu.wait_for_startup(|| partition.containment.stopping()) else {
            return Ok(None);
        };
        info!(
            "partition {=str}: vcpu on cpu {=u32} starts at {=u64:#x} (start-up IPI)",
            partition.name(),
            cpu.index(),
            u64::from(vector) << 12
        );
        startup_entry(vector)
    };
    let vcpu = core.start(partition, &entry).map_err(|()| Fault::VcpuSetup)?;
    // The MSR bitmap for the mode the vCPU's local APIC has now.
    vcpu.set_x2apic_passthrough(crate::lapic::mode() == bulkhead_virt::apic_base::Mode::X2Apic);
    crate::exits::cpuid::fill_cache(partition, vcpu);
    if first_core {
        partition.guest_started();
    }
    Ok(Some(vcpu))
}

/// Runs the guest until it faults or its partition is stopped from another core.
fn exit_loop<B: Backend>(partition: &'static Partition, vcpu: &mut B) -> Stop {
    let cpu = crate::cpu::percpu::current();
    // The liveness count (`PerCpu::step_liveness`): odd here in the hypervisor, even while
    // the guest runs, odd again from each exit on.
    cpu.exit_begins();
    let mut handler = crate::exits::ExitHandler { partition, cpu, fault: None, nmi_rip: None };
    loop {
        // One load for every reason to leave the guest: a stop of the partition (before an
        // INIT, which a restart would discard anyway) or an INIT.
        let attention = cpu.attention();
        if attention != 0 {
            if attention & Attention::STOP != 0 {
                return Stop::Signalled(handler.last_exit_nmi_rip());
            }
            if attention & Attention::INIT != 0 {
                return Stop::Init;
            }
            if attention & Attention::REQUEST != 0
                && cpu.take_partition_stop()
                && let Some(request) = partition.health.take_request()
            {
                return Stop::Requested(request, vcpu.rip());
            }
            if attention & Attention::TEST_HANG != 0 {
                crate::supervision::test_hang::hang_if_due(cpu);
            }
            // An IOMMU fault event taken in the hypervisor: drain, then enter.
            if cpu.take_dma_fault_drain() {
                crate::devices::iommu::drain();
            }
        }
        cpu.step_liveness();
        // The guest runs, exits, and the exit is handled (`exits::ExitHandler`) in this one
        // call.
        #[cfg(not(feature = "profile"))]
        let handled = vcpu.run(&mut handler);
        #[cfg(feature = "profile")]
        let handled = vcpu.run(&mut crate::profile::Profiled(&mut handler));
        match handled {
            Ok(()) => {}
            Err(Stopping::Fault) => {
                // Set with the error (`ExitHandler::apply`); the fallback never happens.
                let fault = handler.fault.take().unwrap_or(Fault::Unhandled { reason: u32::MAX, qualification: 0 });
                return Stop::Fault(fault, vcpu.rip());
            }
            Err(Stopping::Report { pass }) => {
                info!("partition {=str}: reports {=str}", partition.name(), if pass { "PASS" } else { "FAIL" });
                // The other partitions' first cores may still be on their way (a loaded
                // emulator schedules its CPUs late): the run ends once each has started its
                // partition or given up on it, or after 2 s.
                let partitions = crate::config::SYSTEM.partitions.len();
                crate::cpu::time::wait_until(2000, || SETTLED.load(core::sync::atomic::Ordering::SeqCst) >= partitions);
                // DMA faults recorded since the last fault event are reported before the counts.
                crate::devices::iommu::drain();
                log_exit_counts();
                #[cfg(feature = "profile")]
                crate::profile::log();
                if pass {
                    crate::run_end::succeed()
                } else {
                    crate::run_end::fail("a partition reported a failed test")
                }
            }
        }
    }
}

/// Returns this core's partition-visible state to its power-on shape before a partition
/// (re)starts on it: the local APIC (passed through) with every LVT masked, the timer and
/// TSC deadline stopped and nothing left in service, and XCR0 back to x87 only. A restarted
/// partition must not take its previous run's timer into the fresh payload.
fn reset_core_state() {
    crate::lapic::reset_local_apic();
    if crate::cpu::capabilities::host_xsave_enabled() {
        // SAFETY: x87 only is always a valid XCR0.
        unsafe { core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") 1u32, in("edx") 0u32) };
    }
}
