//! Stopping a partition on every one of its cores when one of them faults.
//!
//! A fault is seen on one core, the *leader*; the partition's other vCPUs (its siblings) may
//! be running guest code on other cores at that moment. The policy must not be applied
//! while they do: a restart zeroes the partition's memory and reloads the payload, and a
//! halted partition must really stop. So the leader raises the partition's stop flag and
//! sends each sibling an NMI. Both backends intercept NMIs, so the sibling's vCPU exits;
//! the sibling sees the flag before it would enter its guest again and parks in the
//! hypervisor. Only when every sibling is parked does the leader apply the policy and
//! release them with the outcome (restart: wait for the partition's INIT/SIPI again, or
//! halt).
//!
//! Why NMIs and why repeat them: an NMI is the one interrupt a guest cannot mask or
//! redirect (the partition owns its local APIC and its interrupt flag). On VT-x an NMI
//! that arrives while the sibling is in the hypervisor, between two guest entries, goes to
//! the hypervisor's own NMI handler instead of causing an exit; the sibling still checks the
//! flag before its next entry, but if it had checked just before the NMI it enters the
//! guest once more. The leader therefore repeats the NMI every millisecond until the
//! sibling reports parked. (On SVM the hypervisor runs with GIF clear, so such an NMI stays
//! pending and causes an exit right after the next VMRUN; an intercepted NMI stays pending
//! too, so after an NMI exit the backend briefly sets GIF to let the host handler take it.)

use crate::cpu::percpu::PerCpu;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// How long the leader waits for all siblings before it gives up on a restart.
pub const STOP_TIMEOUT_MS: u64 = 100;

/// What happens to a stopped partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every core starts the partition again (its first core reloads the payload).
    Restart,
    /// The partition stays stopped.
    Halt,
}

/// The stop protocol's state for one partition.
pub struct Containment {
    /// A stop is in progress: no core of the partition may enter its guest.
    stopping: AtomicBool,
    /// CPU indices (bit per CPU) of the siblings parked in the current stop.
    parked: AtomicU32,
    /// Counts completed stops; parked siblings wait for it to change.
    generation: AtomicU32,
    /// The outcome of the last completed stop.
    restart: AtomicBool,
    /// Resumes of the halted partition by its supervisor so far, and the count when it was
    /// last halted: its cores wait while the two are equal ([`wait_while_halted`](Self::wait_while_halted)).
    resumes: AtomicU32,
    halt_mark: AtomicU32,
}

const _: () = assert!(crate::cpu::percpu::MAX_CPUS <= 32, "the parked set is a 32-bit mask");

impl Containment {
    pub const fn new() -> Self {
        Containment {
            stopping: AtomicBool::new(false),
            parked: AtomicU32::new(0),
            generation: AtomicU32::new(0),
            restart: AtomicBool::new(false),
            resumes: AtomicU32::new(0),
            halt_mark: AtomicU32::new(0),
        }
    }

    /// The leader halts the partition (before it releases the siblings): from now on its
    /// cores wait for a [`resume`](Self::resume).
    pub fn mark_halt(&self) {
        self.halt_mark.store(self.resumes.load(Ordering::Acquire), Ordering::Release);
    }

    /// A core of the halted partition: waits in the hypervisor until the supervisor
    /// restarts the partition. It spins rather than halts: on SVM the hypervisor runs with
    /// GIF clear, where no NMI could wake a halted core.
    pub fn wait_while_halted(&self) {
        let mark = self.halt_mark.load(Ordering::Acquire);
        while self.resumes.load(Ordering::Acquire) == mark {
            core::hint::spin_loop();
        }
    }

    /// The supervisor restarts the halted partition: its waiting cores start it again.
    pub fn resume(&self) {
        self.resumes.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether the partition is being stopped. Each sibling's vCPU loop sees the stop in its
    /// core's attention word instead (`PerCpu::request_stop`), one load per exit.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Claims the leader's role for a fault on this core; false when another core of the
    /// partition already leads a stop (this core then parks like any sibling).
    pub fn lead(&self) -> bool {
        self.stopping.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// The leader: signals every sibling until all are parked. Returns the index of a CPU
    /// that did not stop within [`STOP_TIMEOUT_MS`].
    pub fn stop_siblings(&self, siblings: &[&'static PerCpu]) -> Result<(), u32> {
        let all: u32 = siblings.iter().fold(0, |mask, cpu| mask | 1 << cpu.index());
        // Before the first NMI: a sibling that takes it checks its attention word next.
        for cpu in siblings {
            cpu.request_stop();
        }
        for _ in 0..STOP_TIMEOUT_MS {
            let parked = self.parked.load(Ordering::Acquire);
            if parked & all == all {
                return Ok(());
            }
            for cpu in siblings.iter().filter(|cpu| parked & (1 << cpu.index()) == 0) {
                crate::cpu::nmi_signal::signal_sent(cpu.index());
                crate::cpu::apic::send_nmi(cpu.apic_id());
            }
            crate::cpu::time::wait_until(1, || self.parked.load(Ordering::Acquire) & all == all);
        }
        let parked = self.parked.load(Ordering::Acquire);
        match siblings.iter().find(|cpu| parked & (1 << cpu.index()) == 0) {
            Some(cpu) => Err(cpu.index()),
            None => Ok(()),
        }
    }

    /// The leader, once the policy is applied: lets the parked siblings go on with `outcome`.
    /// Their stop requests end first, so none finds its own still set when it runs on.
    pub fn release(&self, outcome: Outcome, siblings: &[&'static PerCpu]) {
        for cpu in siblings {
            cpu.end_stop();
        }
        self.restart.store(outcome == Outcome::Restart, Ordering::Relaxed);
        self.parked.store(0, Ordering::Relaxed);
        self.stopping.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// A sibling: parks this core in the hypervisor until the leader releases it.
    pub fn park(&self, cpu: &PerCpu) -> Outcome {
        // Read before announcing the park: the leader releases (and bumps the generation)
        // only after it saw this core parked.
        let generation = self.generation.load(Ordering::Acquire);
        // Whatever INIT/SIPI the partition sent before the stop belongs to the old run.
        cpu.clear_startup();
        self.parked.fetch_or(1 << cpu.index(), Ordering::AcqRel);
        while self.generation.load(Ordering::Acquire) == generation {
            core::hint::spin_loop();
        }
        if self.restart.load(Ordering::Relaxed) { Outcome::Restart } else { Outcome::Halt }
    }
}
