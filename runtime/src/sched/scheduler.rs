//! The scheduler's rules, free of hardware: the thread table, one run queue per CPU, the
//! thread states and every transition between them (spawn, yield, sleep, futex wait and
//! wake, join, exit, timeouts), the choice of the next thread for a CPU and the next timer
//! deadline. The hardware glue (`super::cpu`) holds one `Scheduler` behind a spin lock
//! with interrupts off, saves and restores register state, and sends the wake-up IPIs this
//! code asks for; everything here is unit-tested on the host.
//!
//! Scheduling is cooperative: a thread runs until it blocks, sleeps, yields or ends. A
//! blocked thread is never run (no spinning); a CPU with nothing to run halts until an
//! interrupt (a wake-up IPI or its timer) and then asks again.
//!
//! Fixed capacity (no heap): the runtime's heap belongs to the program, and the scheduler
//! must keep working when the program has exhausted it.

use heapless::Deque;

/// Threads that may exist at once (running, ready or blocked), the main thread included.
pub const MAX_THREADS: usize = 128;
/// CPUs the scheduler manages (a partition's vCPUs beyond this are left parked).
pub const MAX_CPUS: usize = 16;

/// A thread's ID as hermit-abi's `Tid`: never 0 (spawn's failure value), never reused.
pub type Tid = u32;

/// Time as the runtime's monotonic clock counts it, in nanoseconds.
pub type Nanos = u64;

/// Index of a thread's slot in the table (the hardware glue keeps its registers there).
pub type Slot = usize;

/// What a thread is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// In its CPU's run queue.
    Ready,
    /// On its CPU.
    Running,
    /// In `futex_wait` on `address`, until woken or until `deadline` passes.
    Futex { address: usize, deadline: Option<Nanos> },
    /// Sleeping until `deadline`.
    Sleeping { deadline: Nanos },
    /// Waiting for thread `target` to end.
    Joining { target: Tid },
    /// Ended; its CPU has not yet switched away from its stack (the slot is released by
    /// [`Scheduler::release`] once it has).
    Finished,
}

/// Why a blocked thread became ready again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A `futex_wake`, the end of the joined thread, or a sleep's own deadline.
    Woken,
    /// A futex wait's deadline passed first.
    TimedOut,
}

#[derive(Debug, Clone, Copy)]
struct Thread {
    /// 0: a free slot.
    id: Tid,
    state: State,
    /// The CPU whose run queue holds it, or that runs it.
    cpu: usize,
    /// Spawned for a given core: never moved to another CPU.
    pinned: bool,
    /// Order of arrival in a futex queue (first come, first woken).
    wait_order: u64,
    /// Why it last became ready.
    wake: Wake,
}

impl Thread {
    const FREE: Thread =
        Thread { id: 0, state: State::Finished, cpu: 0, pinned: false, wait_order: 0, wake: Wake::Woken };
}

#[derive(Debug)]
struct Cpu {
    queue: Deque<u16, MAX_THREADS>,
    /// The thread it runs; `None`: its idle loop (halted or about to halt).
    current: Option<Slot>,
    /// Online and taking threads.
    online: bool,
}

/// CPUs to interrupt (a bit per CPU index) because a thread became ready on their queue
/// while they were idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct Kicks(pub u32);

impl Kicks {
    /// The CPU indices to interrupt.
    pub fn cpus(self) -> impl Iterator<Item = usize> {
        (0..MAX_CPUS).filter(move |cpu| self.0 & (1 << cpu) != 0)
    }

    fn add(&mut self, other: Kicks) {
        self.0 |= other.0;
    }
}

/// Why `spawn` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnError {
    /// All [`MAX_THREADS`] slots are in use.
    TableFull,
    /// The requested core is not one of the partition's online CPUs.
    NoSuchCore,
}

/// What `join` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// The target has ended (or never existed: IDs are never reused): return at once.
    Done,
    /// The caller is blocked until the target ends.
    Blocked,
    /// A thread cannot join itself.
    SelfJoin,
}

/// The switch a CPU must perform: save `from` (if any, and if it still exists) and run
/// `to` (`None`: the CPU's idle loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub from: Option<Slot>,
    pub to: Option<Slot>,
}

/// The thread table and run queues of one partition.
#[derive(Debug)]
pub struct Scheduler {
    threads: [Thread; MAX_THREADS],
    cpus: [Cpu; MAX_CPUS],
    next_id: Tid,
    next_wait_order: u64,
    /// Where the last unpinned spawn went (spawns spread round-robin among equals).
    last_placed: usize,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self::new()
    }
}

impl Scheduler {
    /// An empty scheduler with no CPU online.
    pub const fn new() -> Self {
        const CPU: Cpu = Cpu { queue: Deque::new(), current: None, online: false };
        Scheduler {
            threads: [Thread::FREE; MAX_THREADS],
            cpus: [CPU; MAX_CPUS],
            next_id: 1,
            next_wait_order: 0,
            last_placed: 0,
        }
    }

    /// Brings `cpu` online: it takes threads from now on (unpinned spawns, stolen work).
    pub fn cpu_online(&mut self, cpu: usize) {
        self.cpus[cpu].online = true;
    }

    /// Online CPUs.
    pub fn online_cpus(&self) -> usize {
        self.cpus.iter().filter(|c| c.online).count()
    }

    /// Registers the thread already running on `cpu` (the program's main thread, on its
    /// boot stack) and returns its ID. It may move to another CPU like any unpinned thread.
    pub fn adopt_running(&mut self, cpu: usize) -> Result<(Tid, Slot), SpawnError> {
        let slot = self.allocate(cpu, false)?;
        self.threads[slot].state = State::Running;
        self.cpus[cpu].current = Some(slot);
        Ok((self.threads[slot].id, slot))
    }

    /// Creates a ready thread: on `core` if given (pinned there), else on the least busy
    /// online CPU. The caller prepares its registers for the returned slot before it
    /// releases the lock, and then sends the kicks.
    pub fn spawn(&mut self, core: Option<usize>) -> Result<(Tid, Slot, Kicks), SpawnError> {
        let (cpu, pinned) = match core {
            Some(core) if core < MAX_CPUS && self.cpus[core].online => (core, true),
            Some(_) => return Err(SpawnError::NoSuchCore),
            None => (self.least_busy_cpu(), false),
        };
        let slot = self.allocate(cpu, pinned)?;
        let kicks = self.make_ready(slot);
        Ok((self.threads[slot].id, slot, kicks))
    }

    fn allocate(&mut self, cpu: usize, pinned: bool) -> Result<Slot, SpawnError> {
        let slot = self.threads.iter().position(|t| t.id == 0).ok_or(SpawnError::TableFull)?;
        let id = self.next_id;
        // IDs are never reused, so a join on an ended thread's ID is unambiguous; 2^32
        // spawns would be needed to wrap (skipping 0, spawn's failure value).
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.threads[slot] = Thread { id, state: State::Ready, cpu, pinned, wait_order: 0, wake: Wake::Woken };
        Ok(slot)
    }

    /// Threads assigned to `cpu`: its queue plus the one it runs.
    fn load(&self, cpu: usize) -> usize {
        self.cpus[cpu].queue.len() + usize::from(self.cpus[cpu].current.is_some())
    }

    /// The online CPU with the fewest threads; among equals, the next after the last one
    /// chosen (so a burst of spawns spreads over every CPU).
    fn least_busy_cpu(&mut self) -> usize {
        let online = |cpu: &usize| self.cpus[*cpu].online;
        let start = self.last_placed + 1;
        let chosen =
            (start..start + MAX_CPUS).map(|c| c % MAX_CPUS).filter(online).min_by_key(|&c| self.load(c)).unwrap_or(0);
        self.last_placed = chosen;
        chosen
    }

    /// Puts `slot` in a run queue. An unpinned thread whose CPU is busy moves to an idle
    /// CPU if there is one (it would wait behind the running thread otherwise). Asks for
    /// a kick of the chosen CPU if it is idle.
    fn make_ready(&mut self, slot: Slot) -> Kicks {
        let thread = &mut self.threads[slot];
        thread.state = State::Ready;
        let home = thread.cpu;
        let cpu = if self.cpus[home].current.is_some() && !thread.pinned {
            (0..MAX_CPUS)
                .find(|&c| self.cpus[c].online && self.cpus[c].current.is_none() && self.cpus[c].queue.is_empty())
                .unwrap_or(home)
        } else {
            home
        };
        self.threads[slot].cpu = cpu;
        // Cannot fail: each queue has room for every slot and a slot is queued at most once.
        let _ = self.cpus[cpu].queue.push_back(slot as u16);
        if self.cpus[cpu].current.is_none() { Kicks(1 << cpu) } else { Kicks::default() }
    }

    fn wake(&mut self, slot: Slot, why: Wake) -> Kicks {
        self.threads[slot].wake = why;
        self.make_ready(slot)
    }

    /// The thread `cpu` runs.
    pub fn current(&self, cpu: usize) -> Option<Slot> {
        self.cpus[cpu].current
    }

    /// The ID of the thread in `slot`.
    pub fn id(&self, slot: Slot) -> Tid {
        self.threads[slot].id
    }

    /// The state of the thread in `slot`.
    pub fn state(&self, slot: Slot) -> State {
        self.threads[slot].state
    }

    /// The CPU the thread in `slot` runs on or is queued for.
    pub fn cpu_of(&self, slot: Slot) -> usize {
        self.threads[slot].cpu
    }

    /// Why the thread in `slot` last became ready.
    pub fn wake_reason(&self, slot: Slot) -> Wake {
        self.threads[slot].wake
    }

    fn running(&self, cpu: usize) -> Slot {
        self.cpus[cpu].current.expect("scheduler call from a CPU's idle loop")
    }

    /// `cpu`'s thread yields: it goes to the back of its queue.
    pub fn yield_current(&mut self, cpu: usize) {
        let slot = self.running(cpu);
        self.threads[slot].state = State::Ready;
        let _ = self.cpus[cpu].queue.push_back(slot as u16);
    }

    /// `cpu`'s thread sleeps until `deadline`.
    pub fn sleep_current(&mut self, cpu: usize, deadline: Nanos) {
        let slot = self.running(cpu);
        self.threads[slot].state = State::Sleeping { deadline };
    }

    /// `cpu`'s thread joins `target`.
    pub fn join(&mut self, cpu: usize, target: Tid) -> Join {
        let slot = self.running(cpu);
        if self.threads[slot].id == target {
            return Join::SelfJoin;
        }
        let alive = self.threads.iter().any(|t| t.id == target && t.state != State::Finished);
        if !alive {
            return Join::Done;
        }
        self.threads[slot].state = State::Joining { target };
        Join::Blocked
    }

    /// `cpu`'s thread ends: its joiners become ready. Its slot stays taken until the CPU
    /// has switched away from its stack and calls [`Scheduler::release`].
    pub fn exit_current(&mut self, cpu: usize) -> Kicks {
        let slot = self.running(cpu);
        let id = self.threads[slot].id;
        self.threads[slot].state = State::Finished;
        let mut kicks = Kicks::default();
        for joiner in 0..MAX_THREADS {
            if self.threads[joiner].id != 0 && self.threads[joiner].state == (State::Joining { target: id }) {
                kicks.add(self.wake(joiner, Wake::Woken));
            }
        }
        kicks
    }

    /// Frees the slot of a thread that has ended, once no CPU runs on its stack.
    pub fn release(&mut self, slot: Slot) {
        debug_assert_eq!(self.threads[slot].state, State::Finished);
        self.threads[slot] = Thread::FREE;
    }

    /// Chooses what `cpu` runs next, after its current thread (if any) has yielded,
    /// blocked or ended: the head of its own queue, else a thread stolen from the back of
    /// the busiest other queue (never a pinned one), else its idle loop. The caller then
    /// switches from `from` to `to` (nothing to do if they are equal).
    pub fn schedule(&mut self, cpu: usize) -> Switch {
        let from = self.cpus[cpu].current.take();
        let to = self.cpus[cpu].queue.pop_front().map(usize::from).or_else(|| self.steal(cpu));
        if let Some(slot) = to {
            self.threads[slot].state = State::Running;
            self.threads[slot].cpu = cpu;
        }
        self.cpus[cpu].current = to;
        Switch { from, to }
    }

    fn steal(&mut self, cpu: usize) -> Option<Slot> {
        let mut victims: heapless::Vec<usize, MAX_CPUS> = (0..MAX_CPUS).filter(|&c| c != cpu).collect();
        victims.sort_unstable_by_key(|&c| core::cmp::Reverse(self.cpus[c].queue.len()));
        for victim in victims {
            let queue = &mut self.cpus[victim].queue;
            let position = queue.iter().rposition(|&s| !self.threads[usize::from(s)].pinned);
            if let Some(position) = position {
                // Rotate the chosen entry to the back and take it; the order of the others
                // is kept.
                let len = queue.len();
                let mut kept: heapless::Vec<u16, MAX_THREADS> = heapless::Vec::new();
                let mut stolen = None;
                for i in 0..len {
                    let s = queue.pop_front().expect("length checked");
                    if i == position {
                        stolen = Some(usize::from(s));
                    } else {
                        let _ = kept.push(s);
                    }
                }
                for s in kept {
                    let _ = queue.push_back(s);
                }
                return stolen;
            }
        }
        None
    }

    /// Whether `cpu` would find a thread to run: its own queue, or an unpinned thread
    /// queued on another CPU.
    pub fn has_ready(&self, cpu: usize) -> bool {
        !self.cpus[cpu].queue.is_empty()
            || (0..MAX_CPUS)
                .filter(|&c| c != cpu)
                .any(|c| self.cpus[c].queue.iter().any(|&s| !self.threads[usize::from(s)].pinned))
    }

    /// The online CPUs in their idle loops (to kick when the next deadline moves earlier,
    /// so they arm their timers for it).
    pub fn idle_cpus(&self) -> Kicks {
        Kicks(
            (0..MAX_CPUS)
                .filter(|&c| self.cpus[c].online && self.cpus[c].current.is_none())
                .fold(0, |bits, c| bits | 1 << c),
        )
    }

    /// Makes ready every sleeper and futex waiter whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Nanos) -> Kicks {
        let mut kicks = Kicks::default();
        for slot in 0..MAX_THREADS {
            if self.threads[slot].id == 0 {
                continue;
            }
            match self.threads[slot].state {
                State::Sleeping { deadline } if deadline <= now => kicks.add(self.wake(slot, Wake::Woken)),
                State::Futex { deadline: Some(deadline), .. } if deadline <= now => {
                    kicks.add(self.wake(slot, Wake::TimedOut))
                }
                _ => {}
            }
        }
        kicks
    }

    /// The earliest pending deadline of any thread: an idle CPU arms its timer for it (any
    /// CPU may expire any thread, and an expired unpinned thread goes to an idle CPU).
    pub fn next_deadline(&self) -> Option<Nanos> {
        self.threads
            .iter()
            .filter(|t| t.id != 0)
            .filter_map(|t| match t.state {
                State::Sleeping { deadline } | State::Futex { deadline: Some(deadline), .. } => Some(deadline),
                _ => None,
            })
            .min()
    }

    // Futex queues (used by `super::futex`).

    pub(super) fn block_on_futex(&mut self, cpu: usize, address: usize, deadline: Option<Nanos>) {
        let slot = self.running(cpu);
        self.threads[slot].state = State::Futex { address, deadline };
        self.threads[slot].wait_order = self.next_wait_order;
        self.next_wait_order += 1;
    }

    /// Wakes up to `count` waiters on `address`, first come first woken; returns how many.
    pub(super) fn wake_futex(&mut self, address: usize, count: usize) -> (usize, Kicks) {
        let mut kicks = Kicks::default();
        let mut woken = 0;
        while woken < count {
            let first = (0..MAX_THREADS)
                .filter(|&s| self.threads[s].id != 0)
                .filter(|&s| matches!(self.threads[s].state, State::Futex { address: a, .. } if a == address))
                .min_by_key(|&s| self.threads[s].wait_order);
            let Some(slot) = first else { break };
            kicks.add(self.wake(slot, Wake::Woken));
            woken += 1;
        }
        (woken, kicks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_cpus() -> (Scheduler, Slot) {
        let mut s = Scheduler::new();
        s.cpu_online(0);
        s.cpu_online(1);
        let (_, main) = s.adopt_running(0).unwrap();
        (s, main)
    }

    #[test]
    fn ids_start_at_one_and_are_never_reused() {
        let (mut s, main) = two_cpus();
        assert_eq!(s.id(main), 1);
        let (a, slot, _) = s.spawn(Some(0)).unwrap();
        assert_eq!(a, 2);
        // Run it and end it; its slot is reused but not its ID.
        s.yield_current(0);
        assert_eq!(s.schedule(0), Switch { from: Some(main), to: Some(slot) });
        let _ = s.exit_current(0);
        let _ = s.schedule(0);
        s.release(slot);
        let (b, again, _) = s.spawn(Some(0)).unwrap();
        assert_eq!(again, slot);
        assert_eq!(b, 3);
    }

    #[test]
    fn unpinned_spawns_spread_over_cpus_and_kick_the_idle_one() {
        let (mut s, _) = two_cpus();
        // CPU 0 runs main, CPU 1 is idle: the first spawn goes to CPU 1 and kicks it.
        let (_, a, kicks) = s.spawn(None).unwrap();
        assert_eq!(s.cpu_of(a), 1);
        assert_eq!(kicks.cpus().collect::<heapless::Vec<_, 4>>(), [1]);
        // CPU 1 has one queued thread, CPU 0 one running: the next goes round-robin.
        let (_, b, _) = s.spawn(None).unwrap();
        assert_eq!(s.cpu_of(b), 0);
    }

    #[test]
    fn pinned_spawn_stays_and_unknown_core_fails() {
        let (mut s, _) = two_cpus();
        let (_, a, kicks) = s.spawn(Some(0)).unwrap();
        assert_eq!(s.cpu_of(a), 0);
        assert_eq!(kicks, Kicks::default(), "CPU 0 is busy: no kick");
        // CPU 1 idle does not steal a pinned thread.
        assert_eq!(s.schedule(1), Switch { from: None, to: None });
        assert_eq!(s.spawn(Some(2)), Err(SpawnError::NoSuchCore));
        assert_eq!(s.spawn(Some(MAX_CPUS + 5)), Err(SpawnError::NoSuchCore));
    }

    #[test]
    fn table_full_fails_spawn() {
        let (mut s, _) = two_cpus();
        for _ in 1..MAX_THREADS {
            let _ = s.spawn(Some(0)).unwrap();
        }
        assert_eq!(s.spawn(None), Err(SpawnError::TableFull));
    }

    #[test]
    fn yield_round_robins_on_one_cpu() {
        let (mut s, main) = two_cpus();
        let (_, a, _) = s.spawn(Some(0)).unwrap();
        let (_, b, _) = s.spawn(Some(0)).unwrap();
        s.yield_current(0);
        assert_eq!(s.schedule(0).to, Some(a));
        s.yield_current(0);
        assert_eq!(s.schedule(0).to, Some(b));
        s.yield_current(0);
        assert_eq!(s.schedule(0), Switch { from: Some(b), to: Some(main) });
    }

    #[test]
    fn yield_alone_keeps_running() {
        let (mut s, main) = two_cpus();
        s.yield_current(0);
        assert_eq!(s.schedule(0), Switch { from: Some(main), to: Some(main) });
        assert_eq!(s.state(main), State::Running);
    }

    #[test]
    fn idle_cpu_steals_unpinned_work_from_a_busy_one() {
        let mut s = Scheduler::new();
        s.cpu_online(0);
        let (_, _main) = s.adopt_running(0).unwrap();
        let (_, a, _) = s.spawn(None).unwrap();
        assert_eq!(s.cpu_of(a), 0, "only CPU 0 is online");
        s.cpu_online(1);
        assert_eq!(s.schedule(1), Switch { from: None, to: Some(a) });
        assert_eq!(s.cpu_of(a), 1);
        assert_eq!(s.state(a), State::Running);
    }

    #[test]
    fn sleeper_wakes_at_its_deadline_not_before() {
        let (mut s, main) = two_cpus();
        s.sleep_current(0, 1_000);
        assert_eq!(s.schedule(0), Switch { from: Some(main), to: None });
        assert_eq!(s.next_deadline(), Some(1_000));
        assert_eq!(s.expire(999), Kicks::default());
        assert_eq!(s.state(main), State::Sleeping { deadline: 1_000 });
        let kicks = s.expire(1_000);
        assert_eq!(s.state(main), State::Ready);
        assert_eq!(s.wake_reason(main), Wake::Woken);
        // Its CPU (and the other) are idle: one of them is kicked and runs it.
        let cpu = s.cpu_of(main);
        assert_eq!(kicks, Kicks(1 << cpu));
        assert_eq!(s.schedule(cpu).to, Some(main));
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn has_ready_sees_own_queue_and_stealable_work_only() {
        let (mut s, _) = two_cpus();
        assert!(!s.has_ready(1));
        let _ = s.spawn(Some(0)).unwrap();
        assert!(!s.has_ready(1), "a thread pinned to CPU 0 is not CPU 1's");
        assert!(s.has_ready(0));
        assert_eq!(s.idle_cpus(), Kicks(1 << 1));
        let _ = s.spawn(None).unwrap();
        assert!(s.has_ready(1));
    }

    #[test]
    fn next_deadline_is_the_earliest() {
        let (mut s, _) = two_cpus();
        let (_, a, _) = s.spawn(Some(1)).unwrap();
        assert_eq!(s.schedule(1).to, Some(a));
        s.sleep_current(0, 5_000);
        let _ = s.schedule(0);
        s.block_on_futex(1, 0x1000, Some(3_000));
        let _ = s.schedule(1);
        assert_eq!(s.next_deadline(), Some(3_000));
        let _ = s.expire(3_000);
        assert_eq!(s.next_deadline(), Some(5_000));
    }

    #[test]
    fn join_of_a_finished_or_unknown_thread_returns_at_once() {
        let (mut s, main) = two_cpus();
        let (a_id, a, _) = s.spawn(Some(1)).unwrap();
        assert_eq!(s.schedule(1).to, Some(a));
        let _ = s.exit_current(1);
        // Finished but not yet released, and released: both done.
        assert_eq!(s.join(0, a_id), Join::Done);
        let _ = s.schedule(1);
        s.release(a);
        assert_eq!(s.join(0, a_id), Join::Done);
        assert_eq!(s.join(0, 999), Join::Done);
        assert_eq!(s.join(0, s.id(main)), Join::SelfJoin);
        assert_eq!(s.state(main), State::Running);
    }

    #[test]
    fn join_blocks_until_the_target_ends() {
        let (mut s, main) = two_cpus();
        let (a_id, a, _) = s.spawn(Some(1)).unwrap();
        assert_eq!(s.schedule(1).to, Some(a));
        assert_eq!(s.join(0, a_id), Join::Blocked);
        assert_eq!(s.schedule(0), Switch { from: Some(main), to: None });
        let kicks = s.exit_current(1);
        assert_eq!(s.state(main), State::Ready);
        assert_eq!(kicks, Kicks(1 << 0), "main's CPU is idle");
        assert_eq!(s.schedule(0).to, Some(main));
    }

    #[test]
    fn several_joiners_all_wake() {
        let (mut s, _) = two_cpus();
        let (a_id, a, _) = s.spawn(Some(1)).unwrap();
        let (_, b, _) = s.spawn(Some(0)).unwrap();
        assert_eq!(s.schedule(1).to, Some(a));
        assert_eq!(s.join(0, a_id), Join::Blocked);
        assert_eq!(s.schedule(0).to, Some(b));
        assert_eq!(s.join(0, a_id), Join::Blocked);
        let _ = s.schedule(0);
        let _ = s.exit_current(1);
        assert_eq!(s.threads.iter().filter(|t| t.state == State::Ready).count(), 2);
    }

    #[test]
    fn woken_thread_moves_to_an_idle_cpu_unless_pinned() {
        let (mut s, main) = two_cpus();
        // An unpinned thread blocks on CPU 1 and is woken while CPU 0 runs main.
        let (_, a, _) = s.spawn(None).unwrap();
        assert_eq!(s.cpu_of(a), 1);
        assert_eq!(s.schedule(1).to, Some(a));
        s.block_on_futex(1, 0x10, None);
        let _ = s.schedule(1);
        // CPU 1 is idle, CPU 0 busy with main: the wake targets CPU 1 and kicks it.
        let (n, kicks) = s.wake_futex(0x10, 1);
        assert_eq!((n, kicks), (1, Kicks(1 << 1)));
        assert_eq!(s.cpu_of(a), 1);
        assert_eq!(s.current(0), Some(main));
    }

    /// Every used slot is in exactly one place that matches its state: a ready thread in
    /// one run queue (its CPU's), a running one the current thread of one CPU (its own),
    /// any other in neither; free slots nowhere; pinned threads on their core.
    fn check_invariants(s: &Scheduler, pinned_to: &[Option<usize>; MAX_THREADS]) {
        for (slot, (t, pinned)) in s.threads.iter().zip(pinned_to).enumerate() {
            let queued: heapless::Vec<usize, MAX_CPUS> =
                (0..MAX_CPUS).filter(|&c| s.cpus[c].queue.iter().any(|&q| usize::from(q) == slot)).collect();
            let in_queues: usize =
                (0..MAX_CPUS).map(|c| s.cpus[c].queue.iter().filter(|&&q| usize::from(q) == slot).count()).sum();
            let running_on: heapless::Vec<usize, MAX_CPUS> =
                (0..MAX_CPUS).filter(|&c| s.cpus[c].current == Some(slot)).collect();
            if t.id == 0 {
                assert!(in_queues == 0 && running_on.is_empty(), "free slot {slot} is scheduled");
                continue;
            }
            match t.state {
                State::Ready => {
                    assert_eq!(in_queues, 1, "ready slot {slot} queued {in_queues} times");
                    assert_eq!(queued[0], t.cpu, "ready slot {slot} queued off its CPU");
                    assert!(running_on.is_empty());
                }
                State::Running => {
                    assert_eq!(in_queues, 0, "running slot {slot} is also queued");
                    assert_eq!(running_on.as_slice(), [t.cpu], "running slot {slot} on the wrong CPUs");
                }
                _ => {
                    assert!(in_queues == 0 && running_on.is_empty(), "blocked slot {slot} ({:?}) is scheduled", t.state)
                }
            }
            if let Some(core) = *pinned {
                assert_eq!(t.cpu, core, "pinned slot {slot} moved");
            }
        }
    }

    #[test]
    fn random_operations_keep_every_thread_in_exactly_one_place() {
        const CPUS: usize = 3;
        let mut s = Scheduler::new();
        (0..CPUS).for_each(|c| s.cpu_online(c));
        let _ = s.adopt_running(0).unwrap();
        let mut pinned_to = [None; MAX_THREADS];
        // xorshift64: deterministic, so a failure replays.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut now = 0;
        let mut ran_threads = 0;
        for _ in 0..20_000 {
            let cpu = rand(CPUS as u64) as usize;
            let address = 0x1000 * (1 + rand(3) as usize);
            let running = s.current(cpu).is_some();
            match rand(10) {
                0 => {
                    let core = (rand(2) == 0).then(|| rand(CPUS as u64) as usize);
                    if let Ok((_, slot, _)) = s.spawn(core) {
                        pinned_to[slot] = core;
                    }
                }
                1 if running => {
                    s.yield_current(cpu);
                    let _ = s.schedule(cpu);
                }
                2 if running => {
                    let deadline = (rand(2) == 0).then(|| now + rand(100));
                    s.futex_wait(cpu, address, 0, 0, deadline).unwrap();
                    let _ = s.schedule(cpu);
                }
                3 => {
                    let _ = s.futex_wake(address, rand(3) as i32).unwrap();
                }
                4 if running => {
                    s.sleep_current(cpu, now + rand(50));
                    let _ = s.schedule(cpu);
                }
                5 if running => {
                    let _ = s.exit_current(cpu);
                    let switch = s.schedule(cpu);
                    let ended = switch.from.unwrap();
                    s.release(ended);
                    pinned_to[ended] = None;
                }
                6 if running => {
                    let target = 1 + rand(u64::from(s.next_id)) as Tid;
                    if s.join(cpu, target) == Join::Blocked {
                        let _ = s.schedule(cpu);
                    }
                }
                7 => {
                    now += rand(20);
                    let _ = s.expire(now);
                }
                _ if !running && s.schedule(cpu).to.is_some() => ran_threads += 1,
                _ => {}
            }
            check_invariants(&s, &pinned_to);
        }
        assert!(ran_threads > 200, "the sequence hardly ran anything ({ran_threads} switches to a thread)");
    }
}
