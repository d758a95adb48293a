//! A partition's run-time state, shared by everything that acts for it: its configuration,
//! its counters, its stop protocol ([`containment`]), its virtual console lines. The
//! payload loader ([`loader`]) and the fault policy ([`policy`]) add to it here; the vCPU
//! loop that runs it (`vcpu.rs`) and the exit handlers (`exits/`) sit above it.
//!
//! Each partition's memory is reached by the hypervisor through its identity-mapped host
//! range.

pub mod containment;
pub mod counters;
pub mod linux;
pub mod loader;
pub mod nmi;
pub mod policy;

use crate::config::SYSTEM;
use crate::log::info;
use crate::partition::containment::Containment;
use crate::partition::counters::{Counters, ExitCounts, RateLimit};
use crate::supervision::health::Health;
use bulkhead_abi::supervision::FaultReason;
use bulkhead_board::tables::{self, FaultPolicy, PartitionId, PayloadKind};
use bulkhead_virt::console_rate::{LineBudget, Verdict};
use bulkhead_virt::uart16550::Uart16550;
use core::cell::UnsafeCell;
use core::sync::atomic::AtomicU32;
use spin::mutex::TicketMutex;

/// Why a partition stopped running.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Touched guest-physical memory it does not own (or not with that access).
    MemoryAccess {
        gpa: u64,
        write: bool,
        execute: bool,
    },
    /// The guest triple-faulted (shutdown).
    TripleFaulted,
    Exception {
        vector: u8,
    },
    /// String I/O (INS/OUTS) to an intercepted port, which is not emulated.
    StringIo {
        port: u16,
    },
    /// A hardware exit the hypervisor does not handle (backend reason code).
    Unhandled {
        reason: u32,
        qualification: u64,
    },
    /// The payload could not be loaded.
    Load,
    /// The backend could not set up the vCPU.
    VcpuSetup,
    /// An instruction touched an emulated MMIO page (the xAPIC page, `exits/mmio.rs`) that
    /// the emulation does not perform (not one of the MOV forms `bulkhead_virt::mmio_decode`
    /// takes, or unreadable).
    MmioInstruction {
        gpa: u64,
        /// The first eight instruction bytes in order, the first the most significant (as
        /// far as they could be read; zeroes otherwise).
        bytes: u64,
    },
    /// The guest reported a crash through the Hyper-V crash MSRs (CRASH_CTL with
    /// CrashNotify); its report was logged (`hyperv/crash.rs`).
    GuestCrash,
    /// It did not check in before its watchdog deadline (`supervision/monitor.rs`).
    Watchdog {
        period_ms: u32,
    },
    /// A Xen partition asked to be shut down (`sched_op` SCHEDOP_shutdown, `xen/hypercall.rs`).
    XenShutdown {
        reason: u32,
    },
}

impl Fault {
    /// The kind of fault, as the health counters count it.
    pub fn reason(&self) -> FaultReason {
        match self {
            Fault::MemoryAccess { .. } => FaultReason::MemoryAccess,
            Fault::TripleFaulted => FaultReason::TripleFault,
            Fault::Exception { .. } => FaultReason::Exception,
            Fault::StringIo { .. } => FaultReason::StringIo,
            Fault::Unhandled { .. } => FaultReason::UnhandledExit,
            Fault::Load => FaultReason::Load,
            Fault::VcpuSetup => FaultReason::VcpuSetup,
            Fault::MmioInstruction { .. } => FaultReason::MmioInstruction,
            Fault::GuestCrash => FaultReason::GuestCrash,
            Fault::Watchdog { .. } => FaultReason::Watchdog,
            Fault::XenShutdown { .. } => FaultReason::GuestShutdown,
        }
    }
}

crate::log::impl_format!(Fault, |fault, f| {
    match *fault {
        Fault::MemoryAccess { gpa, write, execute } => crate::log::write!(
            f,
            "{=str} at guest-physical {=u64:#x}, which the partition does not own",
            if execute {
                "instruction fetch"
            } else if write {
                "write"
            } else {
                "read"
            },
            gpa
        ),
        Fault::TripleFaulted => crate::log::write!(f, "triple fault"),
        Fault::Exception { vector } => crate::log::write!(f, "unexpected exception, vector {=u8}", vector),
        Fault::StringIo { port } => crate::log::write!(f, "string I/O to port {=u16:#x} (not emulated)", port),
        Fault::Unhandled { reason: u32::MAX, qualification } => {
            crate::log::write!(f, "VM entry failed, VM-instruction error {=u64}", qualification)
        }
        Fault::Unhandled { reason, qualification } => {
            crate::log::write!(f, "unhandled exit, reason {=u32} qualification {=u64:#x}", reason, qualification)
        }
        Fault::Load => crate::log::write!(f, "payload could not be loaded"),
        Fault::VcpuSetup => crate::log::write!(f, "the vCPU could not be set up"),
        Fault::MmioInstruction { gpa, bytes } => crate::log::write!(
            f,
            "emulated MMIO access at {=u64:#x} by an instruction the emulation does not perform (bytes {=u64:#018x}); only MOV loads and stores are emulated",
            gpa,
            bytes
        ),
        Fault::GuestCrash => crate::log::write!(f, "the guest reported a crash (Hyper-V crash MSRs)"),
        Fault::XenShutdown { reason } => crate::log::write!(
            f,
            "Xen shutdown (reason {=str})",
            match reason {
                0 => "poweroff",
                1 => "reboot",
                2 => "suspend",
                3 => "crash",
                4 => "watchdog",
                _ => "unknown",
            }
        ),
        Fault::Watchdog { period_ms } => {
            crate::log::write!(f, "watchdog: no check-in within its deadline (period {=u32} ms)", period_ms)
        }
    }
});

const LINE: usize = 160;

/// How many console lines a partition may print a second, after a burst of
/// [`CONSOLE_BURST`] at once; the rest are dropped and counted. At 115 200 baud the UART
/// carries about 11 500 characters a second, so 10 lines of up to 160 characters (plus the
/// partition's name) use at most about a sixth of it: a partition that prints without
/// pause leaves the console to the hypervisor's own lines and to the other partitions.
pub const CONSOLE_LINES_PER_SECOND: u32 = 10;
/// How many lines a partition may print at once (a boot banner, a test's report).
pub const CONSOLE_BURST: u32 = 200;

/// A line the vCPU on one CPU is writing to its virtual UART.
struct ConsoleLine {
    bytes: [u8; LINE],
    len: usize,
}

/// Run-time state of one partition.
pub struct Partition {
    config: &'static tables::Partition,
    pub counters: Counters,
    pub exits: ExitCounts,
    pub containment: Containment,
    /// Its state, watchdog deadline and supervision counters (`supervision/health.rs`).
    pub health: Health,
    /// Restarts and faults so far (the fault policy's counts, `partition/policy.rs`).
    restarts: AtomicU32,
    faults: AtomicU32,
    /// Restarts by the fault policy (what `max_restarts` limits).
    policy_restarts: AtomicU32,
    /// One line buffer per CPU: each vCPU assembles its own lines, so two vCPUs printing
    /// at once give two whole lines, never one interleaved one.
    console: [UnsafeCell<ConsoleLine>; crate::cpu::percpu::MAX_CPUS],
    /// The partition's console rate limit and its dropped-line count (its vCPUs share it).
    console_budget: TicketMutex<LineBudget>,
    /// The registers of the partition's virtual UART (its vCPUs share one UART).
    uart: TicketMutex<Uart16550>,
}

// SAFETY: each `console` entry is only touched by the CPU with that index (running this
// partition's vCPU); the rest is atomic or immutable.
unsafe impl Sync for Partition {}

impl Partition {
    const fn new(config: &'static tables::Partition) -> Self {
        Partition {
            config,
            counters: Counters {
                port: RateLimit::new(),
                msr: RateLimit::new(),
                ipi: RateLimit::new(),
                undefined: RateLimit::new(),
                xen_unsupported: RateLimit::new(),
            },
            exits: ExitCounts::new(),
            containment: Containment::new(),
            health: Health::new(),
            restarts: AtomicU32::new(0),
            faults: AtomicU32::new(0),
            policy_restarts: AtomicU32::new(0),
            console: [const { UnsafeCell::new(ConsoleLine { bytes: [0; LINE], len: 0 }) };
                crate::cpu::percpu::MAX_CPUS],
            console_budget: TicketMutex::new(LineBudget::new()),
            uart: TicketMutex::new(Uart16550::new()),
        }
    }

    pub fn name(&self) -> &'static str {
        self.config.name
    }

    /// Whether this partition's write to the verdict port ends the run: only the system
    /// file's `verdict_partition` where it names one, else any partition under
    /// `exit=emulator` (a test run) and none on a board.
    pub fn gives_verdict(&self) -> bool {
        match SYSTEM.hypervisor.verdict_partition {
            Some(id) => id == self.config.id,
            None => crate::run_end::emulator_exit(),
        }
    }

    pub fn config(&self) -> &'static tables::Partition {
        self.config
    }

    /// A byte the vCPU on this CPU wrote to its virtual UART: collected into lines, each
    /// logged with the partition's name so the partitions' outputs stay apart on the one
    /// physical console, within the partition's rate limit ([`CONSOLE_LINES_PER_SECOND`]).
    pub fn console_write(&self, byte: u8) {
        self.console_write_all(&[byte]);
    }

    /// [`console_write`](Self::console_write) of each byte of `bytes` in turn (a console
    /// write hypercall's text), this CPU's line found once for all of them.
    #[inline]
    pub fn console_write_all(&self, bytes: &[u8]) {
        let cpu = crate::cpu::percpu::current_index() as usize;
        // SAFETY: this CPU's own entry (see the `Sync` impl).
        let line = unsafe { &mut *self.console[cpu].get() };
        for &byte in bytes {
            self.collect(line, byte);
        }
    }

    #[inline(always)]
    fn collect(&self, line: &mut ConsoleLine, byte: u8) {
        match byte {
            b'\n' => {
                self.flush_line(line);
            }
            b'\r' => {}
            _ => {
                line.bytes[line.len] = if byte.is_ascii_graphic() || byte == b' ' { byte } else { b'?' };
                line.len += 1;
                if line.len == LINE {
                    self.flush_line(line);
                }
            }
        }
    }

    /// Logs a finished line, or drops and counts it when the partition is over its rate
    /// limit. A line that goes out takes the console for as long as the UART needs for it
    /// (the vCPU waits, in its own time); lines the limit drops cost the partition one
    /// exit and no console time at all. While lines are dropped, the count is reported at
    /// most once a second (and in total with the exit counts at the end of a run).
    fn flush_line(&self, line: &mut ConsoleLine) {
        let verdict = self.console_budget.lock().line(
            crate::cpu::time::rdtsc(),
            crate::cpu::time::tsc_hz(),
            CONSOLE_LINES_PER_SECOND,
            CONSOLE_BURST,
        );
        if let Verdict::Print { dropped } = verdict {
            if dropped > 0 {
                info!("partition {=str}: console: {=u64} lines dropped (rate limit)", self.name(), dropped);
            }
            let text = core::str::from_utf8(&line.bytes[..line.len]).unwrap_or("<invalid>");
            info!("[{=str}] {=str}", self.name(), text);
        }
        line.len = 0;
    }

    /// A read of the virtual UART's register at `offset` from its base port. The
    /// `console_input` partition's reads of its receiver registers first take in what was
    /// typed on the hypervisor's console (`console::receive_input`).
    #[inline]
    pub fn uart_read(&self, offset: u16) -> u8 {
        let mut uart = self.uart.lock();
        if uart.read_polls_receiver(offset) && SYSTEM.hypervisor.console_input == Some(self.config.id) {
            crate::console::receive_input(&mut uart);
        }
        uart.read(offset)
    }

    /// A write to the virtual UART's register at `offset`; the byte to send to the
    /// console, if it sent one.
    #[inline]
    pub fn uart_write(&self, offset: u16, value: u8) -> Option<u8> {
        self.uart.lock().write(offset, value)
    }

    /// The virtual UART as after a reset (at every start of the partition).
    pub fn uart_reset(&self) {
        *self.uart.lock() = Uart16550::new();
    }

    /// The CPU of the partition's first core (the one that starts it and takes the
    /// monitor's and the supervisor's requests).
    pub fn first_cpu(&self) -> Option<&'static crate::cpu::percpu::PerCpu> {
        cpu_of_core(*self.config.cores.first()?)
    }

    /// Restarts so far (by the policy and on request).
    pub fn restarts(&self) -> u32 {
        self.restarts.load(core::sync::atomic::Ordering::Relaxed)
    }

    /// Faults so far.
    pub fn faults(&self) -> u32 {
        self.faults.load(core::sync::atomic::Ordering::Relaxed)
    }

    /// Console lines dropped by the rate limit since boot.
    pub fn console_lines_dropped(&self) -> u64 {
        self.console_budget.lock().dropped()
    }
}

static PARTITIONS: [Partition; crate::config::PARTITIONS] = {
    let mut all = [const { Partition::new(&PLACEHOLDER) }; crate::config::PARTITIONS];
    let mut i = 0;
    while i < SYSTEM.partitions.len() {
        all[i] = Partition::new(&SYSTEM.partitions[i]);
        i += 1;
    }
    all
};

/// Stands in for unused slots of the fixed-size partition array; never started.
static PLACEHOLDER: tables::Partition = tables::Partition {
    id: PartitionId(u8::MAX),
    name: "",
    cores: &[],
    memory: &[],
    payload: tables::Payload { kind: PayloadKind::Flat, module: "", entry: None, cmdline: "", initrd_module: None },
    devices: &[],
    dma: tables::DmaProtection::Iommu,
    fault_policy: FaultPolicy::Halt,
    watchdog: None,
    critical: false,
    supervises: &[],
    interface: tables::GuestInterface::HyperV,
};

/// The CPU of board core `core`, if it is online.
pub fn cpu_of_core(core: u32) -> Option<&'static crate::cpu::percpu::PerCpu> {
    crate::hyperv::apic_id_of_core(core).and_then(crate::cpu::percpu::by_apic_id)
}

/// Every configured partition.
pub fn all() -> impl Iterator<Item = &'static Partition> {
    PARTITIONS.iter().take(SYSTEM.partitions.len())
}

pub fn get(id: PartitionId) -> &'static Partition {
    &PARTITIONS[id.0 as usize]
}

/// The partition configured for the core with this APIC ID, and whether this core is the
/// one that starts it (its first core).
pub fn for_apic_id(apic_id: u32) -> Option<(&'static Partition, bool)> {
    let assignment = SYSTEM.core_map.iter().find(|c| c.apic_id == apic_id)?;
    let partition = get(assignment.partition?);
    Some((partition, partition.config.cores.first() == Some(&assignment.core)))
}
