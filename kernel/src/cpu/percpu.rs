//! Per-CPU state and stacks.
//!
//! Every CPU finds its own [`PerCpu`] through the GS base, so the CPU number is one load
//! (`gs:[0]`) on every log line and exception. Stacks sit behind unmapped guard pages
//! (see `boot/paging.rs`): an overflow faults instead of corrupting a neighbour.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use x86_64::VirtAddr;
use x86_64::registers::model_specific::GsBase;
use x86_64::structures::gdt::GlobalDescriptorTable;
use x86_64::structures::tss::TaskStateSegment;

/// CPUs this build supports: the compiled board's (`config::CPUS`, at most the build-time
/// limit `bulkhead_board::tables::MAX_CPUS`). Per-CPU state and stacks are sized by it;
/// a CPU the board does not list is never started (`boot/smp.rs`).
pub const MAX_CPUS: usize = crate::config::CPUS;
const _: () = assert!(MAX_CPUS <= bulkhead_board::tables::MAX_CPUS);
pub const PAGE_SIZE: usize = 4096;
/// 96 KiB: a partition's (re)load runs on its first core's stack and reached 62 856 bytes
/// of the former 64 KiB in the stack-use log over 112 runs (`Partition::load` and
/// `long_mode_entry` keep about 40 KiB of frames), too close to the guard page.
pub const KERNEL_STACK_SIZE: usize = 96 * 1024;
pub const IST_STACK_SIZE: usize = 16 * 1024;

/// A stack with an unmapped guard page below it.
#[repr(C, align(4096))]
pub struct GuardedStack<const N: usize> {
    guard: [u8; PAGE_SIZE],
    bytes: [u8; N],
}

impl<const N: usize> GuardedStack<N> {
    /// Offset of the stack's top (first byte above it) from the start of the struct.
    pub const TOP: usize = PAGE_SIZE + N;

    const fn new() -> Self {
        Self { guard: [0; PAGE_SIZE], bytes: [0; N] }
    }

    pub fn guard_page(&self) -> u64 {
        self.guard.as_ptr() as u64
    }

    pub fn top(&self) -> u64 {
        self as *const Self as u64 + Self::TOP as u64
    }

    /// The deepest this stack has been used so far, in bytes from its top: stacks start
    /// zeroed (.bss) and grow down, so everything below the lowest non-zero word is still
    /// untouched (a frame that wrote only zeroes there is missed: a low-water mark).
    fn used(&self) -> usize {
        let words = self.bytes.as_ptr().cast::<u64>();
        for i in 0..N / 8 {
            // SAFETY: within `bytes`, 8-byte aligned (the struct is page aligned); a
            // volatile read because the owning CPU may be writing its stack meanwhile, and
            // any value read is fine for a mark.
            if unsafe { core::ptr::read_volatile(words.add(i)) } != 0 {
                return N - i * 8;
            }
        }
        0
    }
}

/// The stacks of one CPU: normal kernel stack plus one interrupt stack (IST) each for
/// NMI, double fault and machine check, which must never run on a possibly broken stack.
#[repr(C)]
pub struct CpuStacks {
    pub kernel: GuardedStack<KERNEL_STACK_SIZE>,
    pub nmi: GuardedStack<IST_STACK_SIZE>,
    pub double_fault: GuardedStack<IST_STACK_SIZE>,
    pub machine_check: GuardedStack<IST_STACK_SIZE>,
}

// The memory budget (`cargo xtask check`, board/src/footprint.rs) counts this per CPU.
const _: () = assert!(core::mem::size_of::<CpuStacks>() == bulkhead_board::tables::STACK_BYTES_PER_CPU);

impl CpuStacks {
    pub const KERNEL_STACK_TOP: usize = GuardedStack::<KERNEL_STACK_SIZE>::TOP;

    const fn new() -> Self {
        Self {
            kernel: GuardedStack::new(),
            nmi: GuardedStack::new(),
            double_fault: GuardedStack::new(),
            machine_check: GuardedStack::new(),
        }
    }

    /// The deepest use of the kernel, NMI, double-fault and machine-check stacks (bytes).
    fn used(&self) -> [usize; 4] {
        [self.kernel.used(), self.nmi.used(), self.double_fault.used(), self.machine_check.used()]
    }

    pub fn guard_pages(&self) -> [u64; 4] {
        [
            self.kernel.guard_page(),
            self.nmi.guard_page(),
            self.double_fault.guard_page(),
            self.machine_check.guard_page(),
        ]
    }
}

pub struct AllStacks(UnsafeCell<[CpuStacks; MAX_CPUS]>);
// SAFETY: each CPU only ever uses its own entry; the BSP reads addresses, never contents.
unsafe impl Sync for AllStacks {}

/// Every CPU's stacks; the boot code points the BSP's RSP into entry 0 by symbol name.
#[unsafe(no_mangle)]
pub static CPU_STACKS: AllStacks = AllStacks(UnsafeCell::new([const { CpuStacks::new() }; MAX_CPUS]));

/// The stacks of CPU `index`.
pub fn stacks(index: usize) -> &'static CpuStacks {
    // SAFETY: only addresses are taken from other CPUs' entries; contents are touched by
    // the owning CPU through its stack pointer, never through this reference.
    unsafe { &(*CPU_STACKS.0.get())[index] }
}

/// Logs the deepest use of each kind of stack over all CPUs so far, against its size: how
/// much of [`KERNEL_STACK_SIZE`] and [`IST_STACK_SIZE`] the hypervisor needs (the run's end
/// logs it, `run_end.rs`).
pub fn log_stack_use() {
    let mut deepest = [(0, 0); 4];
    for index in 0..MAX_CPUS {
        for (kind, used) in stacks(index).used().into_iter().enumerate() {
            if used > deepest[kind].0 {
                deepest[kind] = (used, index);
            }
        }
    }
    crate::log::info!(
        "stacks: deepest use: kernel {=usize} of {=usize} bytes (cpu {=usize}), nmi {=usize}, double fault {=usize}, machine check {=usize} of {=usize}",
        deepest[0].0,
        KERNEL_STACK_SIZE,
        deepest[0].1,
        deepest[1].0,
        deepest[2].0,
        deepest[3].0,
        IST_STACK_SIZE
    );
}

/// The reasons a running vCPU leaves its guest at its next exit ([`PerCpu::attention`]).
pub struct Attention;

impl Attention {
    /// Its partition is being stopped (`partition/containment.rs`): park.
    pub const STOP: u32 = 1 << 0;
    /// The partition sent it an INIT: reset and wait for a start-up IPI.
    pub const INIT: u32 = 1 << 1;
    /// An IOMMU's fault event (an NMI) arrived while the core was in the hypervisor: drain
    /// the fault records (`devices/iommu.rs`) and go on running the guest.
    pub const DMA_FAULT: u32 = 1 << 2;
    /// The monitor or the supervisor asks the partition's first core to stop the partition
    /// (`supervision/`): a missed watchdog deadline, a restart or halt request.
    pub const REQUEST: u32 = 1 << 3;
    /// Test only (`hang_cpu`, `supervision/test_hang.rs`): hang in the hypervisor once due.
    pub const TEST_HANG: u32 = 1 << 4;
}

/// State of one CPU. `index` must stay the first field: `current_index` reads `gs:[0]`.
#[repr(C)]
pub struct PerCpu {
    index: u32,
    apic_id: AtomicU32,
    online: AtomicBool,
    /// INIT/SIPI mailbox of the vCPU on this core (see `lapic::send_ipi`).
    startup: AtomicU32,
    /// Why the running vCPU must leave its guest before its next entry, one bit per reason
    /// ([`Attention`]): one load on every exit (`vcpu::exit_loop`) for all of them.
    attention: AtomicU32,
    /// Counts the vCPU's VM exits and entries: odd while it handles an exit, even while its
    /// guest runs or the core waits. Written by this CPU only (two plain stores per exit);
    /// the monitor (`supervision/monitor.rs`) reads it to find a core stuck in the hypervisor.
    liveness: AtomicU32,
    tss: UnsafeCell<TaskStateSegment>,
    gdt: UnsafeCell<GlobalDescriptorTable<8>>,
    /// The CPUID answers of the vCPU on this core (`exits/cpuid.rs`), here so that the exit
    /// path reaches them from the per-CPU pointer it already holds.
    cpuid: UnsafeCell<CpuidAnswers>,
}

/// A vCPU's answers to the CPUID leaves `exits/cpuid.rs` keeps per core, by leaf (EAX,
/// EBX, ECX, EDX).
pub struct CpuidAnswers(pub [[u32; 4]; 32]);

// SAFETY: `tss` and `gdt` are written only by the owning CPU while it sets itself up
// (`cpu/gdt.rs`), before anything else can look at them; `cpuid` only by the owning CPU
// between two runs of its vCPU (`set_cpuid_answers`); the rest is atomic.
unsafe impl Sync for PerCpu {}

impl PerCpu {
    const fn new(index: u32) -> Self {
        Self {
            index,
            apic_id: AtomicU32::new(u32::MAX),
            online: AtomicBool::new(false),
            startup: AtomicU32::new(STARTUP_IDLE),
            attention: AtomicU32::new(0),
            liveness: AtomicU32::new(0),
            tss: UnsafeCell::new(TaskStateSegment::new()),
            gdt: UnsafeCell::new(GlobalDescriptorTable::empty()),
            cpuid: UnsafeCell::new(CpuidAnswers([[0; 4]; 32])),
        }
    }

    /// The CPUID answers of this core's vCPU.
    #[inline(always)]
    pub fn cpuid_answers(&self) -> &CpuidAnswers {
        // SAFETY: written only by `set_cpuid_answers` on this CPU, which its exit loop (the
        // only reader, on this CPU too) never runs at the same time as.
        unsafe { &*self.cpuid.get() }
    }

    /// Sets the CPUID answers for the vCPU about to start on this CPU.
    ///
    /// # Safety
    /// Only this CPU, while no reference from [`cpuid_answers`](Self::cpuid_answers) is held.
    pub unsafe fn set_cpuid_answers(&self, answers: CpuidAnswers) {
        // SAFETY: per the caller.
        unsafe { *self.cpuid.get() = answers };
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Relaxed)
    }

    pub fn set_apic_id(&self, id: u32) {
        self.apic_id.store(id, Ordering::Relaxed)
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    pub fn mark_online(&self) {
        self.online.store(true, Ordering::Release)
    }

    /// INIT from the partition: the vCPU on this core is (again) waiting for a SIPI; a
    /// running vCPU resets first (`init_pending`).
    pub fn deliver_init(&self) {
        self.startup.store(STARTUP_INIT, Ordering::Release);
        self.attention.fetch_or(Attention::INIT, Ordering::AcqRel);
    }

    /// Whether an INIT waits for the running vCPU to act on it.
    pub fn init_pending(&self) -> bool {
        self.attention() & Attention::INIT != 0
    }

    /// What the running vCPU must act on before its next guest entry ([`Attention`] bits;
    /// 0 on almost every exit).
    #[inline]
    pub fn attention(&self) -> u32 {
        self.attention.load(Ordering::Acquire)
    }

    /// An IOMMU fault event reached this core in the hypervisor (`partition/nmi.rs`):
    /// lock-free, the NMI handler calls it.
    pub fn request_dma_fault_drain(&self) {
        self.attention.fetch_or(Attention::DMA_FAULT, Ordering::AcqRel);
    }

    /// Takes a pending [`Attention::DMA_FAULT`]: true when there was one.
    pub fn take_dma_fault_drain(&self) -> bool {
        self.attention.fetch_and(!Attention::DMA_FAULT, Ordering::AcqRel) & Attention::DMA_FAULT != 0
    }

    /// The vCPU's partition is being stopped (`partition/containment.rs`): it must not
    /// enter its guest again until the stop is over ([`end_stop`](Self::end_stop)).
    pub fn request_stop(&self) {
        self.attention.fetch_or(Attention::STOP, Ordering::AcqRel);
    }

    /// The stop of the vCPU's partition is over (set by its leader before it releases the
    /// parked siblings).
    pub fn end_stop(&self) {
        self.attention.fetch_and(!Attention::STOP, Ordering::AcqRel);
    }

    /// The monitor or supervisor asks this core (its partition's first core) to stop the
    /// partition ([`Attention::REQUEST`]); an NMI follows to take it out of its guest.
    pub fn request_partition_stop(&self) {
        self.attention.fetch_or(Attention::REQUEST, Ordering::AcqRel);
    }

    /// Takes a pending [`Attention::REQUEST`]: true when there was one.
    pub fn take_partition_stop(&self) -> bool {
        self.attention.fetch_and(!Attention::REQUEST, Ordering::AcqRel) & Attention::REQUEST != 0
    }

    /// The test-only hang switch names this CPU ([`Attention::TEST_HANG`], never cleared).
    pub fn request_test_hang(&self) {
        self.attention.fetch_or(Attention::TEST_HANG, Ordering::AcqRel);
    }

    /// Steps the liveness count by one: the vCPU loop steps it as each exit's handling
    /// begins and again just before it enters its guest, so the count is odd while the
    /// core is in the hypervisor and even while its guest runs. Only this core writes it
    /// (the monitor reads it), so a load and a store suffice, which the compiler makes one
    /// increment in memory: no register holds the count across the world switch.
    #[inline(always)]
    pub fn step_liveness(&self) {
        let n = self.liveness.load(Ordering::Relaxed);
        self.liveness.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    /// Makes the liveness count odd (the core handles an exit, or is about to enter) if
    /// it is not: where the vCPU loop starts.
    #[inline]
    pub fn exit_begins(&self) {
        let n = self.liveness.load(Ordering::Relaxed);
        if n & 1 == 0 {
            self.liveness.store(n.wrapping_add(1), Ordering::Relaxed);
        }
    }

    /// The exit is handled: the vCPU enters its guest or the core goes to wait (the count
    /// turns even, one further than before the exit).
    #[inline]
    pub fn exit_ends(&self) {
        let n = self.liveness.load(Ordering::Relaxed);
        if n & 1 == 1 {
            self.liveness.store(n.wrapping_add(1), Ordering::Relaxed);
        }
    }

    /// The liveness count ([`step_liveness`](Self::step_liveness)).
    pub fn liveness(&self) -> u32 {
        self.liveness.load(Ordering::Relaxed)
    }

    /// A start-up IPI: counts only after INIT (SDM 9.4.4: SIPIs are ignored otherwise).
    /// Returns whether it was taken.
    pub fn deliver_startup(&self, vector: u8) -> bool {
        self.startup.compare_exchange(STARTUP_INIT, u32::from(vector), Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Forgets any INIT or start-up IPI: the vCPU's partition is stopping or restarting.
    pub fn clear_startup(&self) {
        self.startup.store(STARTUP_IDLE, Ordering::Release);
        self.attention.fetch_and(!Attention::INIT, Ordering::AcqRel);
    }

    /// Waits (on this core, in the hypervisor) until INIT and a start-up IPI arrived;
    /// returns the start-up vector, or `None` as soon as `cancelled` says to stop waiting.
    pub fn wait_for_startup(&self, cancelled: impl Fn() -> bool) -> Option<u8> {
        loop {
            if cancelled() {
                return None;
            }
            // Waiting for SIPI is the state an INIT puts the vCPU in: nothing left to act on.
            self.attention.fetch_and(!Attention::INIT, Ordering::AcqRel);
            let state = self.startup.load(Ordering::Acquire);
            // Consume only this vector: an INIT that raced in stays for the next wait.
            if state <= 0xff
                && self.startup.compare_exchange(state, STARTUP_IDLE, Ordering::AcqRel, Ordering::Relaxed).is_ok()
            {
                return Some(state as u8);
            }
            core::hint::spin_loop();
        }
    }

    /// Address of this CPU's TSS (the VMCS host TR base).
    pub fn tss_address(&self) -> u64 {
        self.tss.get() as u64
    }

    /// The TSS and GDT, for `cpu/gdt.rs` on the owning CPU during its set-up only.
    ///
    /// # Safety
    /// Only the CPU this entry belongs to may call this, once, before loading them.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn descriptor_tables(
        &'static self,
    ) -> (&'static mut TaskStateSegment, &'static mut GlobalDescriptorTable<8>) {
        // SAFETY: the caller is the single writer, as documented.
        unsafe { (&mut *self.tss.get(), &mut *self.gdt.get()) }
    }
}

const STARTUP_IDLE: u32 = u32::MAX;
const STARTUP_INIT: u32 = u32::MAX - 1;

static PER_CPU: [PerCpu; MAX_CPUS] = {
    let mut all = [const { PerCpu::new(0) }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        all[i] = PerCpu::new(i as u32);
        i += 1;
    }
    all
};

pub fn cpu(index: usize) -> &'static PerCpu {
    &PER_CPU[index]
}

/// Points this CPU's GS base at its per-CPU entry. First thing each CPU does in Rust.
pub fn install(index: usize) {
    let entry: *const PerCpu = &PER_CPU[index];
    // GS is used for nothing else in the hypervisor.
    GsBase::write(VirtAddr::from_ptr(entry));
}

/// Index of the CPU running this code (0 = boot CPU).
#[inline]
pub fn current_index() -> u32 {
    let index: u32;
    // SAFETY: `install` pointed GS at this CPU's `PerCpu`, whose first field is `index`.
    unsafe { core::arch::asm!("mov {0:e}, gs:[0]", out(reg) index, options(nostack, readonly, preserves_flags)) };
    index
}

/// The CPU with this APIC ID, if it came online.
pub fn by_apic_id(apic_id: u32) -> Option<&'static PerCpu> {
    PER_CPU.iter().find(|c| c.is_online() && c.apic_id() == apic_id)
}

pub fn current() -> &'static PerCpu {
    &PER_CPU[current_index() as usize]
}
