//! The monitor: the hypervisor's own loop on a core no partition owns
//! (`HypervisorConfig::monitor_core`), ticking every millisecond. Each tick it
//!
//! - checks every watchdog deadline: a partition that did not check in by its deadline
//!   faults with reason `watchdog` (its first core is asked, by an NMI, to stop it; its
//!   policy applies);
//! - checks the hypervisor's own cores: a core that has been handling one VM exit for more
//!   than [`HANG_MS`] is hung (each core's liveness count, `PerCpu::step_liveness`);
//! - kicks the board watchdog while no core is hung and every critical partition is
//!   healthy (starting or running). Otherwise it records why (`reset_record`) and stops
//!   kicking: unless the system recovers within the board watchdog's timeout, the board
//!   resets.
//!
//! Why a core of its own: enforcement must cost the watched partitions nothing, neither
//! exits beyond their check-ins nor timer interrupts on their cores.

use crate::config::PARTITIONS;
use crate::config::SYSTEM;
use crate::cpu::percpu::MAX_CPUS;
use crate::log::{error, info, warn};
use crate::partition::Partition;
use crate::supervision::health::Request;
use crate::supervision::reset_record::{ResetReason, WatchdogCause};
use crate::supervision::{board_watchdog, calls, reset_record};
use bulkhead_abi::supervision::PartitionState;
use core::sync::atomic::Ordering;

/// How long one VM exit may keep a core in the hypervisor before the monitor calls the
/// core hung. Above the longest exit that is working as it should: a console write
/// hypercall of 4 KiB keeps its core waiting for the 115 200-baud UART for about 355 ms, and
/// longer while other cores' lines go out first. Waits that are not exits (a partition's
/// stop, its payload's reload) do not count.
pub const HANG_MS: u64 = 2000;

/// What the monitor last saw of one core.
#[derive(Clone, Copy)]
struct CoreWatch {
    liveness: u32,
    since: u64,
}

/// Runs the monitor on this core for good.
pub fn run() -> ! {
    let cpu = crate::cpu::percpu::current();
    let watched = crate::partition::all().filter(|p| p.config().watchdog.is_some()).count();
    let critical = crate::partition::all().filter(|p| p.config().critical).count();
    info!(
        "monitor: on cpu {=u32}: {=usize} partition watchdogs, {=usize} critical partitions, board watchdog {=str}",
        cpu.index(),
        watched,
        critical,
        if board_watchdog::armed() { "armed" } else { "none" }
    );
    let ticks = crate::cpu::time::apic_timer_hz() / 1000;
    if ticks > 0 {
        crate::cpu::apic::start_periodic_timer(crate::idt::MONITOR_TICK_VECTOR, ticks as u32);
    }
    let mut cores = [CoreWatch { liveness: 0, since: 0 }; MAX_CPUS];
    // Each partition's fault count at the last tick: a critical partition that faulted
    // and was already restarted between two ticks still pauses the kicks for one tick.
    let mut faults_seen = [0u32; PARTITIONS];
    let mut kicking = true;
    loop {
        if ticks > 0 {
            // SAFETY: the monitor's core runs no guest; its only interrupt source is its
            // own APIC timer, whose handler just ends the interrupt (`idt.rs`).
            unsafe { core::arch::asm!("sti; hlt; cli", options(nomem, nostack)) };
        } else {
            crate::cpu::time::wait_until(1, || false);
        }
        if crate::run_end::ended() {
            // The run is over on purpose: the board stays as it is.
            board_watchdog::kick();
            continue;
        }
        let now = crate::cpu::time::rdtsc();
        for p in crate::partition::all() {
            check_deadline(p, now);
        }
        let mut unhealthy = None;
        for p in crate::partition::all().filter(|p| p.config().critical) {
            let seen = &mut faults_seen[usize::from(p.config().id.0)];
            let faults = p.faults();
            let faulted = faults != *seen;
            *seen = faults;
            if unhealthy.is_none() && (faulted || !healthy(p)) {
                unhealthy = Some((p, if faulted { "faulted" } else { p.health.state().name() }));
            }
        }
        let trouble = hung_core(&mut cores, now)
            .map(WatchdogCause::CoreHung)
            .or(unhealthy.map(|(p, _)| WatchdogCause::PartitionUnhealthy(p.config().id)));
        match trouble {
            None => {
                if !kicking {
                    info!("monitor: healthy again: the board watchdog is kicked again");
                    reset_record::clear();
                    kicking = true;
                }
                board_watchdog::kick();
            }
            Some(cause) if kicking => {
                kicking = false;
                match cause {
                    WatchdogCause::CoreHung(index) => error!(
                        "monitor: cpu {=u32} has been in the hypervisor for over {=u64} ms: hung",
                        index, HANG_MS
                    ),
                    WatchdogCause::PartitionUnhealthy(id) => {
                        let how = unhealthy.map_or("unhealthy", |(_, how)| how);
                        error!("monitor: critical partition {=str} is {=str}", crate::partition::get(id).name(), how)
                    }
                }
                if board_watchdog::armed() {
                    error!("monitor: the board watchdog is no longer kicked: the board resets unless this clears");
                    reset_record::record(ResetReason::BoardWatchdog { cause });
                }
            }
            Some(_) => {}
        }
    }
}

/// A critical partition is healthy while it starts or runs.
fn healthy(p: &Partition) -> bool {
    matches!(p.health.state(), PartitionState::Starting | PartitionState::Running)
}

/// Checks `p`'s watchdog deadline at TSC `now`; a miss asks its first core to fault it.
fn check_deadline(p: &'static Partition, now: u64) {
    let deadline = p.health.deadline();
    if deadline == 0 || now < deadline || !p.health.expire(deadline) {
        return;
    }
    let misses = p.health.watchdog_misses.fetch_add(1, Ordering::Relaxed) + 1;
    let late_ms = (now - deadline) / crate::cpu::time::ticks_per_ms().max(1);
    error!(
        "partition {=str}: watchdog: no check-in by its deadline ({=u64} ms ago), miss #{=u32}",
        p.name(),
        late_ms,
        misses
    );
    if calls::request(p, Request::WatchdogFault).is_err() {
        warn!("partition {=str}: watchdog: already being stopped", p.name());
    }
}

/// The index of a core that has been handling one exit for over [`HANG_MS`], if any.
fn hung_core(cores: &mut [CoreWatch; MAX_CPUS], now: u64) -> Option<u32> {
    let limit = HANG_MS * crate::cpu::time::ticks_per_ms();
    let mut hung = None;
    for assignment in SYSTEM.core_map.iter().filter(|c| c.partition.is_some()) {
        let Some(cpu) = crate::cpu::percpu::by_apic_id(assignment.apic_id) else { continue };
        let seen = &mut cores[cpu.index() as usize];
        let liveness = cpu.liveness();
        if liveness != seen.liveness || seen.since == 0 {
            *seen = CoreWatch { liveness, since: now };
        } else if liveness & 1 == 1 && now - seen.since > limit && hung.is_none() {
            hung = Some(cpu.index());
        }
    }
    hung
}
