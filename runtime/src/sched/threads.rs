//! The scheduler on the hardware: one [`Scheduler`] for the partition behind a spin lock
//! taken with interrupts off, each thread's stack and TLS block, the switch between
//! threads, and each CPU's idle loop.
//!
//! Lock hand-over: a CPU keeps the lock across [`context::switch`], and whatever runs next
//! on it (the incoming thread or the idle loop) releases it in [`finish_switch`]. So no
//! other CPU can pick a thread whose registers are still being saved, and a wake-up can
//! never fall between a thread deciding to block and its blocking.
//!
//! Interrupt handlers never take the lock from a thread that holds it on the same CPU:
//! the lock is only held with interrupts off.

use core::sync::atomic::{AtomicU32, Ordering};

use spin::mutex::TicketMutex;

use crate::cpu::{interrupts_off, restore_interrupts};

use super::context;
use super::futex::{FutexError, Timespec, errno, wait_deadline};
use super::platform;
use super::scheduler::{Join, Kicks, MAX_CPUS, MAX_THREADS, Nanos, Scheduler, Slot, State, Tid, Wake};
use super::timer;

/// A thread's hardware resources while it exists.
#[derive(Clone, Copy)]
struct Thread {
    /// Stack pointer while not running (see `context`).
    rsp: u64,
    /// Its TLS thread pointer.
    fs_base: u64,
    /// Its stack and TLS block, freed once it has ended and its CPU left its stack
    /// (`None` for the main thread, which runs on the boot stack and never ends that way).
    stack: Option<platform::Block>,
    tls: Option<platform::Block>,
}

impl Thread {
    const NONE: Thread = Thread { rsp: 0, fs_base: 0, stack: None, tls: None };
}

struct Threads {
    rules: Scheduler,
    threads: [Thread; MAX_THREADS],
    /// Each CPU's idle loop while it runs a thread.
    idle_rsp: [u64; MAX_CPUS],
    /// The thread each CPU last switched away from: freed in `finish_switch` if it ended.
    previous: [Option<Slot>; MAX_CPUS],
    /// x2APIC ID of each CPU (for wake-up IPIs).
    apic_ids: [u32; MAX_CPUS],
}

static THREADS: TicketMutex<Threads> = TicketMutex::new(Threads {
    rules: Scheduler::new(),
    threads: [Thread::NONE; MAX_THREADS],
    idle_rsp: [0; MAX_CPUS],
    previous: [None; MAX_CPUS],
    apic_ids: [0; MAX_CPUS],
});

/// Smallest stack a thread gets (std asks for 1 MiB unless told otherwise).
const MIN_STACK: usize = 16 * 1024;
/// Stack of each CPU's idle loop.
pub const IDLE_STACK: usize = 16 * 1024;

/// IA32_GS_BASE (SDM Vol. 4, Table 2-2).
const IA32_GS_BASE: u32 = 0xC000_0101;

type Guard = spin::mutex::TicketMutexGuard<'static, Threads>;

fn lock() -> Guard {
    THREADS.lock()
}

// Per-CPU index through GS: each CPU's GS base points at its entry of CPU_INDEX, so
// `gs:[0]` is its index without an exit or a lock.
static CPU_INDEX: [usize; MAX_CPUS] = {
    let mut table = [0; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        table[i] = i;
        i += 1;
    }
    table
};

fn set_cpu_index(index: usize) {
    // IA32_GS_BASE passes through for partitions; the runtime uses GS for nothing else.
    crate::cpu::wrmsr(IA32_GS_BASE, &CPU_INDEX[index] as *const usize as u64);
}

/// This CPU's index (its VP index: its position in the partition's cores).
pub fn cpu_index() -> usize {
    let index: usize;
    // SAFETY: GS points at this CPU's entry of CPU_INDEX (set before any thread runs).
    unsafe { core::arch::asm!("mov {}, gs:[0]", out(reg) index, options(nostack, readonly, preserves_flags)) };
    index
}

fn send_kicks(t: &Threads, kicks: Kicks) {
    let me = cpu_index();
    for cpu in kicks.cpus().filter(|&c| c != me) {
        timer::send_wake(t.apic_ids[cpu]);
    }
}

/// Lets `cpu` run its next thread (or its idle loop) after its current one yielded,
/// blocked or ended, with `g` held and interrupts off. Returns, with the lock released and
/// interrupts still off, once the calling context runs again (perhaps on another CPU).
fn reschedule(mut g: Guard, cpu: usize) {
    let kicks = g.rules.expire(platform::now_ns());
    send_kicks(&g, kicks);
    let switch = g.rules.schedule(cpu);
    if switch.from == switch.to {
        return;
    }
    let t = &mut *g;
    let save: *mut u64 = match switch.from {
        Some(slot) => &mut t.threads[slot].rsp,
        None => &mut t.idle_rsp[cpu],
    };
    let load = match switch.to {
        Some(slot) => {
            crate::tls::set_thread_pointer(t.threads[slot].fs_base);
            t.threads[slot].rsp
        }
        None => t.idle_rsp[cpu],
    };
    t.previous[cpu] = switch.from;
    // The lock passes to whatever runs next on this CPU (`finish_switch`).
    core::mem::forget(g);
    // SAFETY: `load` is the saved or initial stack of a thread no CPU runs (the scheduler
    // made it `Running` here only), and `save` lies in the static table.
    unsafe { context::switch(save, load) };
    finish_switch();
}

/// Completes a switch on this CPU: frees the thread it left if that one ended, and
/// releases the lock handed over by `reschedule`.
fn finish_switch() {
    let cpu = cpu_index();
    // SAFETY: this CPU holds the lock (handed over by `reschedule`), so nothing else
    // touches the table until the `force_unlock` below.
    let t = unsafe { &mut *THREADS.as_mut_ptr() };
    let mut freed = (None, None);
    if let Some(slot) = t.previous[cpu].take()
        && t.rules.state(slot) == State::Finished
    {
        freed = (t.threads[slot].stack.take(), t.threads[slot].tls.take());
        t.threads[slot] = Thread::NONE;
        t.rules.release(slot);
    }
    // SAFETY: this CPU holds the lock (see above).
    unsafe { THREADS.force_unlock() };
    for block in [freed.0, freed.1].into_iter().flatten() {
        platform::free(block);
    }
}

/// The scheduler's set-up on the boot CPU, before `main`: this CPU is index 0 with the
/// given x2APIC ID, and the running code becomes the main thread.
pub fn init_boot_cpu(idle_stack: platform::Block) {
    set_cpu_index(0);
    timer::init_frequencies();
    let apic_id = timer::init_cpu();
    let was = interrupts_off();
    let mut g = lock();
    g.apic_ids[0] = apic_id;
    g.rules.cpu_online(0);
    let (_, main) = g.rules.adopt_running(0).expect("an empty table has room");
    g.threads[main].fs_base = crate::cpu::rdmsr(crate::cpu::IA32_FS_BASE);
    // SAFETY: the idle stack is this CPU's own, unused until the first switch to it.
    g.idle_rsp[0] = unsafe { context::new_stack(idle_stack.ptr, idle_stack.size, idle_entry, 0, 0) };
    drop(g);
    restore_interrupts(was);
}

/// Registers the calling AP as CPU `index` (its VP index): it takes threads from now on.
/// Interrupts stay off; the AP then enters [`idle_loop`].
pub fn register_ap(index: usize) {
    set_cpu_index(index);
    let apic_id = timer::init_cpu();
    interrupts_off();
    let mut g = lock();
    g.apic_ids[index] = apic_id;
    g.rules.cpu_online(index);
}

/// Online CPUs (what `available_parallelism` reports).
pub fn online_cpus() -> usize {
    let was = interrupts_off();
    let n = lock().rules.online_cpus();
    restore_interrupts(was);
    n.max(1)
}

extern "C" fn idle_entry(_: usize, _: usize) -> ! {
    finish_switch();
    idle_loop()
}

/// A CPU with nothing to run: times out expired sleepers and waiters, runs whatever is
/// ready, else arms its timer for the next deadline and halts until an interrupt (its
/// timer, or a wake-up IPI from a CPU that made a thread ready here).
pub fn idle_loop() -> ! {
    loop {
        interrupts_off();
        let cpu = cpu_index();
        let g = lock();
        // `reschedule` runs a ready thread if there is one, and returns here once this CPU
        // is idle again; the deadline is then taken afresh.
        reschedule(g, cpu);
        let g = lock();
        let now = platform::now_ns();
        let next = g.rules.next_deadline();
        let ready = g.rules.has_ready(cpu);
        drop(g);
        if ready || next.is_some_and(|d| d <= now) {
            continue;
        }
        timer::arm(next.map(|d| d - now));
        // SAFETY: STI takes effect after HLT begins (SDM Vol. 2B, STI: the interrupt
        // shadow), so a wake-up IPI sent since the check above ends the HLT at once
        // instead of being lost.
        unsafe { core::arch::asm!("sti", "hlt", options(nomem, nostack)) };
    }
}

/// The first code of a new thread: completes the switch to it, enables interrupts, runs
/// `func(arg)` and ends the thread.
extern "C" fn thread_entry(func: usize, arg: usize) -> ! {
    finish_switch();
    restore_interrupts(true);
    // SAFETY: `spawn` stored an `extern "C" fn(usize)` here.
    let func: extern "C" fn(usize) = unsafe { core::mem::transmute::<usize, extern "C" fn(usize)>(func) };
    func(arg);
    exit_thread()
}

fn exit_thread() -> ! {
    interrupts_off();
    let cpu = cpu_index();
    let mut g = lock();
    let kicks = g.rules.exit_current(cpu);
    send_kicks(&g, kicks);
    reschedule(g, cpu);
    unreachable!("an ended thread is never run again")
}

/// `sys_spawn2`: a new thread running `func(arg)` with at least `stack_size` bytes of
/// stack, on core `core_id` or (negative) any; its ID, or 0 if it could not be created.
pub fn spawn(func: extern "C" fn(usize), arg: usize, stack_size: usize, core_id: isize) -> Tid {
    let core = usize::try_from(core_id).ok();
    let Some(stack) = platform::alloc(stack_size.max(MIN_STACK).next_multiple_of(16), 16) else { return 0 };
    let Some((tls, fs_base)) = platform::new_tls() else {
        platform::free(stack);
        return 0;
    };
    // SAFETY: the stack is freshly allocated for this thread alone.
    let rsp = unsafe { context::new_stack(stack.ptr, stack.size, thread_entry, func as usize, arg) };
    let was = interrupts_off();
    let mut g = lock();
    let result = g.rules.spawn(core);
    let tid = match result {
        Ok((tid, slot, kicks)) => {
            // Filled before the lock is released: no CPU can run it before.
            g.threads[slot] = Thread { rsp, fs_base, stack: Some(stack), tls: Some(tls) };
            send_kicks(&g, kicks);
            tid
        }
        Err(_) => 0,
    };
    drop(g);
    restore_interrupts(was);
    if tid == 0 {
        platform::free(stack);
        platform::free(tls);
    }
    tid
}

/// Blocks the calling thread (the scheduler already recorded why) and returns once it
/// runs again; returns why it was woken.
fn block(g: Guard, cpu: usize, was: bool) -> Wake {
    let slot = g.rules.current(cpu).expect("a thread is running");
    reschedule(g, cpu);
    let g = lock();
    let why = g.rules.wake_reason(slot);
    drop(g);
    restore_interrupts(was);
    why
}

/// `sys_join`: waits for thread `id` to end; 0, or -EDEADLK for the caller's own ID.
pub fn join(id: Tid) -> i32 {
    let was = interrupts_off();
    let cpu = cpu_index();
    let mut g = lock();
    match g.rules.join(cpu, id) {
        Join::Done => {
            drop(g);
            restore_interrupts(was);
            0
        }
        Join::SelfJoin => {
            drop(g);
            restore_interrupts(was);
            -errno::EDEADLK
        }
        Join::Blocked => {
            block(g, cpu, was);
            0
        }
    }
}

/// `sys_yield`.
pub fn yield_now() {
    let was = interrupts_off();
    let cpu = cpu_index();
    let mut g = lock();
    g.rules.yield_current(cpu);
    reschedule(g, cpu);
    restore_interrupts(was);
}

/// Sleeps until the monotonic clock reads `deadline` (nanoseconds).
pub fn sleep_until(deadline: Nanos) {
    let was = interrupts_off();
    let cpu = cpu_index();
    let mut g = lock();
    g.rules.sleep_current(cpu, deadline);
    // Idle CPUs re-arm their timers for this deadline if it is their earliest.
    let kicks = g.rules.idle_cpus();
    send_kicks(&g, kicks);
    block(g, cpu, was);
}

/// `sys_futex_wait`.
pub fn futex_wait(address: *mut u32, expected: u32, timeout: Option<Timespec>, flags: u32) -> i32 {
    let deadline = match wait_deadline(timeout, flags, platform::now_ns()) {
        Ok(deadline) => deadline,
        Err(e) => return e.errno(),
    };
    if address.is_null() {
        return FutexError::Invalid.errno();
    }
    let was = interrupts_off();
    let cpu = cpu_index();
    let mut g = lock();
    // Read under the lock: a waker changes the word before it calls `futex_wake`, which
    // takes the lock, so it either ran before this read (the value differs) or finds this
    // thread blocked.
    // SAFETY: std passes the address of a live AtomicU32.
    let value = unsafe { AtomicU32::from_ptr(address) }.load(Ordering::SeqCst);
    if let Err(e) = g.rules.futex_wait(cpu, address as usize, value, expected, deadline) {
        drop(g);
        restore_interrupts(was);
        return e.errno();
    }
    if deadline.is_some() {
        let kicks = g.rules.idle_cpus();
        send_kicks(&g, kicks);
    }
    match block(g, cpu, was) {
        Wake::Woken => 0,
        Wake::TimedOut => -errno::ETIMEDOUT,
    }
}

/// `sys_futex_wake`.
pub fn futex_wake(address: *mut u32, count: i32) -> i32 {
    let was = interrupts_off();
    let mut g = lock();
    let result = g.rules.futex_wake(address as usize, count);
    let woken = match result {
        Ok((woken, kicks)) => {
            send_kicks(&g, kicks);
            woken
        }
        Err(e) => e.errno(),
    };
    drop(g);
    restore_interrupts(was);
    woken
}
