//! A fault on one of a partition's cores, or a request from the monitor or the supervisor:
//! stop its other cores (`partition/containment.rs`), then apply its configured policy
//! (halt, restart, reset the board) or what was requested.

use super::{Fault, Partition};
use crate::config::SYSTEM;
use crate::log::{error, info, warn};
use crate::partition::containment::Outcome;
use bulkhead_abi::supervision::PartitionState;
use bulkhead_board::tables::FaultPolicy;
use core::sync::atomic::Ordering;

impl Partition {
    /// A fault on this core: stops the partition's other cores, then applies the policy.
    pub fn contain(&self, fault: Fault, rip: u64) -> Outcome {
        let cpu = crate::cpu::percpu::current();
        if !self.containment.lead() {
            error!(
                "partition {=str}: {} on cpu {=u32} at guest rip {=u64:#x} while the partition is already stopping",
                self.name(),
                fault,
                cpu.index(),
                rip
            );
            return self.containment.park(cpu);
        }
        let count = self.faults.fetch_add(1, Ordering::Relaxed) + 1;
        error!(
            "partition {=str}: fault #{=u32}: {} on cpu {=u32} at guest rip {=u64:#x}",
            self.name(),
            count,
            fault,
            cpu.index(),
            rip
        );
        let reason = fault.reason();
        self.health.count_fault(reason);
        self.set_state(PartitionState::Faulted, reason.name());
        self.stop_then(|p| p.apply_policy())
    }

    /// The supervisor (partition `by`) asked for a restart (`restart`) or a halt, and this
    /// core (the partition's first) took the request: stops the partition's other cores,
    /// then does it. No fault is counted and the restart limit does not apply.
    pub fn contain_request(&self, restart: bool, by: &str) -> Outcome {
        let cpu = crate::cpu::percpu::current();
        if !self.containment.lead() {
            // A fault on another core leads the stop already: its policy wins.
            return self.containment.park(cpu);
        }
        warn!(
            "partition {=str}: {=str} requested by supervisor {=str}",
            self.name(),
            if restart { "restart" } else { "halt" },
            by
        );
        self.stop_then(|p| {
            if restart {
                p.restart("requested by the supervisor");
                true
            } else {
                p.halt_requested();
                false
            }
        })
    }

    /// The leader: stops every other core of the partition, then lets `decide` (true:
    /// restart) act on the stopped partition and releases the other cores with its outcome.
    fn stop_then(&self, decide: impl FnOnce(&Self) -> bool) -> Outcome {
        let cpu = crate::cpu::percpu::current();
        let mut siblings: heapless::Vec<&'static crate::cpu::percpu::PerCpu, { crate::cpu::percpu::MAX_CPUS }> =
            heapless::Vec::new();
        for &core in self.config.cores {
            if let Some(other) = super::cpu_of_core(core).filter(|c| c.index() != cpu.index()) {
                let _ = siblings.push(other);
            }
        }
        let outcome = match self.containment.stop_siblings(&siblings) {
            Ok(()) => {
                if !siblings.is_empty() {
                    info!("partition {=str}: all {=usize} other vcpus stopped", self.name(), siblings.len());
                }
                if decide(self) { Outcome::Restart } else { Outcome::Halt }
            }
            Err(stuck) => {
                error!(
                    "partition {=str}: cpu {=u32} did not stop within {=u64} ms: no restart while it may still run",
                    self.name(),
                    stuck,
                    crate::partition::containment::STOP_TIMEOUT_MS
                );
                self.halt("a core did not stop");
                Outcome::Halt
            }
        };
        cpu.clear_startup();
        self.containment.release(outcome, &siblings);
        outcome
    }

    /// Applies the fault policy once every core of the partition is stopped. Returns true
    /// when the partition should be started again.
    fn apply_policy(&self) -> bool {
        match self.config.fault_policy {
            FaultPolicy::Halt => {
                self.halt("policy halt");
                false
            }
            FaultPolicy::Restart { max_restarts } => {
                // One atomic step: two faulting cores of one partition cannot both restart
                // past the limit. Restarts on request count here too, but only faults are
                // held to the limit: the check is against the policy's own restarts.
                match self
                    .policy_restarts
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max_restarts).then_some(n + 1))
                {
                    Ok(previous) => {
                        warn!(
                            "partition {=str}: restart {=u32} of {=u32} (memory zeroed, payload reloaded)",
                            self.name(),
                            previous + 1,
                            max_restarts
                        );
                        self.restart("policy restart");
                        true
                    }
                    Err(_) => {
                        self.halt("restart limit reached");
                        false
                    }
                }
            }
            FaultPolicy::ResetBoard => {
                error!("partition {=str}: policy reset-board: resetting the board", self.name());
                crate::supervision::reset_record::record(crate::supervision::reset_record::ResetReason::Policy {
                    partition: self.config.id,
                });
                crate::run_end::reset_board()
            }
        }
    }

    /// The stopped partition will start again.
    fn restart(&self, why: &str) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        crate::devices::pci::reset_partition(self.config);
        self.set_state(PartitionState::Restarting, why);
    }

    /// The supervisor restarts the halted partition: its waiting cores start it again.
    pub fn restart_halted(&self) {
        self.restart("requested by the supervisor");
        self.containment.resume();
    }

    /// The supervisor's halt: what it asked for, so no error.
    fn halt_requested(&self) {
        warn!("partition {=str}: halted (requested by the supervisor); other partitions keep running", self.name());
        self.containment.mark_halt();
        self.set_state(PartitionState::Halted, "requested by the supervisor");
    }

    fn halt(&self, why: &str) {
        error!("partition {=str}: halted ({=str}); other partitions keep running", self.name(), why);
        self.containment.mark_halt();
        self.set_state(PartitionState::Halted, why);
    }

    /// Whether a halted partition may be started again: some partition supervises it.
    pub fn restartable(&self) -> bool {
        SYSTEM.partitions.iter().any(|p| p.supervises.contains(&self.config.id))
    }
}
