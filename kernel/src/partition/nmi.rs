//! Counting NMIs. The hypervisor uses NMIs for two things, both signals to a sibling core
//! to take its vCPU out of its guest: the containment leader's stop (`partition/containment.rs`) and
//! an INIT from a vCPU of the same partition (`lapic/`). An NMI is *expected* (counted
//! as a stop signal) when such a sender sent one to this CPU that has not been taken yet (it may
//! arrive after the stop ended: on SVM a signal held pending by GIF exits right after the
//! next VMRUN) or the core's partition is being stopped, and *unexpected* otherwise (a
//! board NMI source, a watchdog). Signals sent while one is already pending merge into
//! one NMI (SDM Vol. 3A 6.7.1), so a leftover credit can at worst count one later
//! unexpected NMI as a signal. Both backends
//! intercept NMIs while a guest runs (an NMI exit); on VT-x one that arrives while the
//! core is in the hypervisor goes to the host IDT's NMI handler (`idt.rs`) instead. Every
//! one is counted here, per partition and per CPU; unexpected ones are logged at a
//! limited rate (from the vCPU loop: the NMI handler itself must not take the log's lock)
//! and all appear in the end-of-run exit counts.
//!
//! A third kind is neither: an IOMMU's fault event, which `devices/iommu.rs` sends as an
//! NMI to a core running a partition. Before an NMI is called unexpected, the IOMMU is
//! asked whether a fault is pending for this core ([`crate::devices::iommu::nmi_is_fault_event`]);
//! if so it is counted as a fault event and the records are drained at this exit, or,
//! taken in the hypervisor, before the next guest entry (`Attention::DMA_FAULT`). An event
//! whose records another CPU already drained (the end of the run) can still count as
//! unexpected; the DMA fault counts themselves are exact.

use crate::config::PARTITIONS;
use crate::cpu::percpu::MAX_CPUS;
use crate::log::warn;
use crate::partition::Partition;
use crate::partition::counters::RateLimit;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// NMIs by partition: stop signals (expected) and unexpected ones, exits and in the
/// hypervisor together.
static SIGNALS: [AtomicU32; PARTITIONS] = [const { AtomicU32::new(0) }; PARTITIONS];
static UNEXPECTED: [AtomicU32; PARTITIONS] = [const { AtomicU32::new(0) }; PARTITIONS];
/// IOMMU fault events (NMIs) taken on the partition's cores.
static DMA_FAULT_EVENTS: [AtomicU32; PARTITIONS] = [const { AtomicU32::new(0) }; PARTITIONS];
static LOG_LIMIT: [RateLimit; PARTITIONS] = [const { RateLimit::new() }; PARTITIONS];
/// Unexpected NMIs taken by the host handler on each CPU, and how many of them the CPU's
/// vCPU loop has logged.
static UNEXPECTED_IN_HYPERVISOR: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static REPORTED_IN_HYPERVISOR: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Set by the handler once any CPU took an unexpected NMI: until then the check on every
/// exit ([`report_taken_in_hypervisor`]) is one load of this flag.
static ANY_UNEXPECTED_IN_HYPERVISOR: AtomicBool = AtomicBool::new(false);
/// The CPU is handing the host handler an NMI that already caused an NMI exit (SVM leaves
/// it pending; see [`drain`]): the handler must not count it twice.
static DRAINING: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

fn slot(partition: &Partition) -> usize {
    partition.config().id.0 as usize
}

/// Whether an NMI this CPU takes now is a stop signal: one the leader sent and this CPU
/// has not taken yet (its credit is used up), or one during a stop of `partition`.
fn is_signal(index: usize, partition: &Partition) -> bool {
    crate::cpu::nmi_signal::take(index) || partition.containment.stopping()
}

/// The host IDT's NMI handler: counts the NMI for the partition of this core. Lock-free:
/// it may interrupt anything, including a log line.
pub fn taken_in_hypervisor() {
    let cpu = crate::cpu::percpu::current();
    let index = cpu.index() as usize;
    if DRAINING[index].load(Ordering::Relaxed) {
        return;
    }
    let partition = crate::partition::for_apic_id(cpu.apic_id()).map(|(p, _)| p);
    match partition {
        Some(p) if is_signal(index, p) => {
            SIGNALS[slot(p)].fetch_add(1, Ordering::Relaxed);
        }
        Some(p) if crate::devices::iommu::nmi_is_fault_event(cpu.apic_id()) => {
            DMA_FAULT_EVENTS[slot(p)].fetch_add(1, Ordering::Relaxed);
            cpu.request_dma_fault_drain();
        }
        _ => {
            if let Some(p) = partition {
                UNEXPECTED[slot(p)].fetch_add(1, Ordering::Relaxed);
            }
            UNEXPECTED_IN_HYPERVISOR[index].fetch_add(1, Ordering::Relaxed);
            ANY_UNEXPECTED_IN_HYPERVISOR.store(true, Ordering::Relaxed);
        }
    }
}

/// Runs `take` (which lets the host handler take an NMI an NMI exit left pending) without
/// the handler counting that NMI again.
#[inline]
pub fn drain(take: impl FnOnce()) {
    let index = crate::cpu::percpu::current_index() as usize;
    DRAINING[index].store(true, Ordering::Relaxed);
    take();
    DRAINING[index].store(false, Ordering::Relaxed);
}

/// An NMI exit of `partition`'s vCPU at guest `rip`: counted, and logged when unexpected.
pub fn exit(partition: &Partition, rip: impl FnOnce() -> u64) {
    if is_signal(crate::cpu::percpu::current_index() as usize, partition) {
        SIGNALS[slot(partition)].fetch_add(1, Ordering::Relaxed);
        return;
    }
    if crate::devices::iommu::nmi_is_fault_event(crate::cpu::percpu::current().apic_id()) {
        DMA_FAULT_EVENTS[slot(partition)].fetch_add(1, Ordering::Relaxed);
        crate::devices::iommu::drain();
        return;
    }
    UNEXPECTED[slot(partition)].fetch_add(1, Ordering::Relaxed);
    if let Some(n) = LOG_LIMIT[slot(partition)].hit() {
        warn!(
            "partition {=str}: unexpected NMI on cpu {=u32} at guest rip {=u64:#x} (not a stop signal); resumed (#{=u32})",
            partition.name(),
            crate::cpu::percpu::current_index(),
            rip(),
            n
        );
    }
}

/// From the vCPU loop at an NMI exit (not on every exit: that costs the common exits):
/// logs the unexpected NMIs this CPU's host handler took since the last call. They are in
/// the end-of-run counts in any case.
#[inline]
pub fn report_taken_in_hypervisor(partition: &Partition) {
    if ANY_UNEXPECTED_IN_HYPERVISOR.load(Ordering::Relaxed) {
        report_on_this_cpu(partition);
    }
}

#[cold]
fn report_on_this_cpu(partition: &Partition) {
    let index = crate::cpu::percpu::current_index() as usize;
    let taken = UNEXPECTED_IN_HYPERVISOR[index].load(Ordering::Relaxed);
    let reported = REPORTED_IN_HYPERVISOR[index].load(Ordering::Relaxed);
    if taken == reported {
        return;
    }
    REPORTED_IN_HYPERVISOR[index].store(taken, Ordering::Relaxed);
    if let Some(n) = LOG_LIMIT[slot(partition)].hit() {
        warn!(
            "partition {=str}: {=u32} unexpected NMI(s) taken in the hypervisor on cpu {=u32} (not a stop signal) (#{=u32})",
            partition.name(),
            taken - reported,
            index as u32,
            n
        );
    }
}

/// IOMMU fault events taken on `partition`'s cores, for the end-of-run report.
pub fn dma_fault_events(partition: &Partition) -> u32 {
    DMA_FAULT_EVENTS[slot(partition)].load(Ordering::Relaxed)
}

/// `partition`'s NMI counts for the end-of-run report: (stop signals, unexpected).
pub fn counts(partition: &Partition) -> (u32, u32) {
    (SIGNALS[slot(partition)].load(Ordering::Relaxed), UNEXPECTED[slot(partition)].load(Ordering::Relaxed))
}
