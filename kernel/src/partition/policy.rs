//! A fault on one of a partition's cores: stop its other cores (`partition/containment.rs`), then apply
//! its configured policy (halt, restart, reset the board).

use super::{Fault, Partition};
use crate::config::SYSTEM;
use crate::log::{error, info, warn};
use crate::partition::containment::Outcome;
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
        let mut siblings: heapless::Vec<&'static crate::cpu::percpu::PerCpu, { crate::cpu::percpu::MAX_CPUS }> =
            heapless::Vec::new();
        for &core in self.config.cores {
            let apic_id = SYSTEM.board.cpus.iter().find(|c| c.core == core).map(|c| c.apic_id);
            if let Some(other) = apic_id.and_then(crate::cpu::percpu::by_apic_id).filter(|c| c.index() != cpu.index()) {
                let _ = siblings.push(other);
            }
        }
        let outcome = match self.containment.stop_siblings(&siblings) {
            Ok(()) => {
                if !siblings.is_empty() {
                    info!("partition {=str}: all {=usize} other vcpus stopped", self.name(), siblings.len());
                }
                if self.apply_policy() { Outcome::Restart } else { Outcome::Halt }
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
                // past the limit.
                match self
                    .restarts
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max_restarts).then_some(n + 1))
                {
                    Ok(previous) => {
                        warn!(
                            "partition {=str}: restart {=u32} of {=u32} (memory zeroed, payload reloaded)",
                            self.name(),
                            previous + 1,
                            max_restarts
                        );
                        crate::devices::pci::reset_partition(self.config);
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

    fn halt(&self, why: &str) {
        error!("partition {=str}: halted ({=str}); other partitions keep running", self.name(), why);
    }
}
