//! Partitions at run time: loading the payload into partition memory, the per-core vCPU
//! loop, the virtual console, and fault containment with the configured policy.
//!
//! Each partition's memory is reached by the hypervisor through its identity-mapped host
//! range. The payload's pristine copy is the boot module GRUB loaded into the hypervisor's
//! reserved memory, so a restart reloads from it.
//!
//! Guest boot area (first memory region, guest-physical): 0x1000 flat GDT, 0x2000 identity
//! page tables for 4 GiB (24 KiB), 0x9000 the command line (NUL-terminated; its address in RDI), stack below
//! 0x80000; payloads load at 0x80000 and above. 32-bit multiboot1 payloads get their
//! information structure at 0x2000 instead of page tables.
//!
//! A partition's command line is its configured `cmdline` followed by every word of the
//! hypervisor's command line written `NAME:word` for that partition, so a board's GRUB
//! entry can pass options to one partition without rebuilding.

pub mod containment;
pub mod nmi;

use crate::boot::bootinfo::{BootInfo, Module};
use crate::config::SYSTEM;
use crate::exits::{self, Action, RateLimit};
use crate::log::{error, info, warn};
use crate::partition::containment::{Containment, Outcome};
use bulkhead_board::tables::{self, FaultPolicy, MAX_PARTITIONS, PartitionId, PayloadKind};
use bulkhead_virt::console_rate::{LineBudget, Verdict};
use bulkhead_virt::exit::Exit;
use bulkhead_virt::guest_state::{EntryMode, GuestEntry};
use bulkhead_virt::memory::{GuestMemory, RegionMemory};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering};
use spin::mutex::TicketMutex;

pub const GDT_GPA: u64 = 0x1000;
pub const PAGE_TABLES_GPA: u64 = 0x2000;
pub const CMDLINE_GPA: u64 = 0x9000;
/// Multiboot1 information structure (32-bit payloads; their page-table area is unused).
pub const MULTIBOOT1_INFO_GPA: u64 = 0x2000;
const CMDLINE_MAX: usize = 4095;
pub const STACK_TOP_GPA: u64 = 0x80000;
pub use bulkhead_board::tables::BOOT_AREA_END;
/// Guest-physical space the identity page tables cover for 64-bit payloads: the whole
/// 32-bit space, so accesses outside the partition's memory (MMIO, the xAPIC page) reach
/// the second-level tables and get the hypervisor's answer rather than a guest #PF.
const IDENTITY_MAP_BYTES: u64 = 4 << 30;

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
    /// An instruction touched the xAPIC page that the emulation does not perform (not one
    /// of the 32-bit MOV forms `bulkhead_virt::mmio_decode` takes, or unreadable).
    XapicInstruction {
        gpa: u64,
        /// The first eight instruction bytes in order, the first the most significant (as
        /// far as they could be read; zeroes otherwise).
        bytes: u64,
    },
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
        Fault::XapicInstruction { gpa, bytes } => crate::log::write!(
            f,
            "xAPIC page access at {=u64:#x} by an instruction the emulation does not perform (bytes {=u64:#018x}); only 32-bit MOV loads and stores are emulated",
            gpa,
            bytes
        ),
    }
});

/// Event counters used for rate-limited logging.
pub struct Counters {
    pub port: RateLimit,
    pub msr: RateLimit,
    pub ipi: RateLimit,
    /// Instructions answered with #UD (virtualization instructions, hypercalls).
    pub undefined: RateLimit,
}

/// VM exits of a partition by kind, for the end-of-run report (and the benchmarks).
#[derive(Default)]
pub struct ExitCounts {
    pub io: AtomicU32,
    pub msr: AtomicU32,
    pub cpuid: AtomicU32,
    pub other: AtomicU32,
}

impl ExitCounts {
    const fn new() -> Self {
        ExitCounts { io: AtomicU32::new(0), msr: AtomicU32::new(0), cpuid: AtomicU32::new(0), other: AtomicU32::new(0) }
    }

    /// One atomic add per exit (this runs on every exit); the total is their sum.
    fn count(&self, exit: &Exit) {
        let kind = match exit {
            Exit::Io(_) => &self.io,
            Exit::MsrRead { .. } | Exit::MsrWrite { .. } => &self.msr,
            Exit::Cpuid { .. } => &self.cpuid,
            _ => &self.other,
        };
        kind.fetch_add(1, Ordering::Relaxed);
    }
}

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
    restarts: AtomicU32,
    faults: AtomicU32,
    /// One line buffer per CPU: each vCPU assembles its own lines, so two vCPUs printing
    /// at once give two whole lines, never one interleaved one.
    console: [UnsafeCell<ConsoleLine>; crate::cpu::percpu::MAX_CPUS],
    /// The partition's console rate limit and its dropped-line count (its vCPUs share it).
    console_budget: TicketMutex<LineBudget>,
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
            },
            exits: ExitCounts::new(),
            containment: Containment::new(),
            restarts: AtomicU32::new(0),
            faults: AtomicU32::new(0),
            console: [const { UnsafeCell::new(ConsoleLine { bytes: [0; LINE], len: 0 }) };
                crate::cpu::percpu::MAX_CPUS],
            console_budget: TicketMutex::new(LineBudget::new()),
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
            None => crate::run::emulator_exit(),
        }
    }

    pub fn config(&self) -> &'static tables::Partition {
        self.config
    }

    /// A byte the vCPU on this CPU wrote to its virtual UART: collected into lines, each
    /// logged with the partition's name so the partitions' outputs stay apart on the one
    /// physical console, within the partition's rate limit ([`CONSOLE_LINES_PER_SECOND`]).
    pub fn console_write(&self, byte: u8) {
        let cpu = crate::cpu::percpu::current_index() as usize;
        // SAFETY: this CPU's own entry (see the `Sync` impl).
        let line = unsafe { &mut *self.console[cpu].get() };
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

    /// Console lines dropped by the rate limit since boot.
    pub fn console_lines_dropped(&self) -> u64 {
        self.console_budget.lock().dropped()
    }

    /// The partition's memory as the hypervisor reaches it.
    fn memory(&self) -> RegionMemory<'static> {
        let mut memory = RegionMemory::new();
        for region in self.config.memory {
            // SAFETY: the configuration gives this host range to this partition alone; it
            // is identity-mapped RAM (checked at boot) and only this partition's boot core
            // writes it, while no vCPU of the partition runs.
            let bytes = unsafe { core::slice::from_raw_parts_mut(region.host_base as *mut u8, region.size as usize) };
            memory.add(region.guest_base, bytes).expect("configuration limits regions per partition");
        }
        memory
    }

    /// Zeroes the partition's memory and loads its payload; returns how its first vCPU
    /// starts.
    pub fn load(&self, boot: &BootInfo) -> Result<GuestEntry, ()> {
        let payload = self.config.payload;
        let Some(module) = boot.modules.iter().find(|m| m.name == payload.module) else {
            error!("partition {=str}: boot module {=str} missing", self.name(), payload.module);
            return Err(());
        };
        let image = module_bytes(module);
        crate::hyperv::reset_partition(self);
        let mut memory = self.memory();
        for region in self.config.memory {
            if memory.fill(region.guest_base, region.size, 0).is_err() {
                return Err(());
            }
        }
        const ELFCLASS32: u8 = 1;
        match payload.kind {
            PayloadKind::Elf if image.get(4) == Some(&ELFCLASS32) => self.load_multiboot1(boot, image, &mut memory),
            PayloadKind::Elf | PayloadKind::Hermit => {
                let loaded = bulkhead_virt::elf::load_elf64(image, &mut memory).map_err(|e| {
                    error!("partition {=str}: cannot load ELF payload: {}", self.name(), crate::log::Debug2Format(&e));
                })?;
                self.check_above_boot_area(loaded.lowest)?;
                self.long_mode_entry(boot, &mut memory, payload.entry.unwrap_or(loaded.entry_gpa))
            }
            PayloadKind::Flat => {
                // No header: the build checked that `entry` is given and the file fits there.
                let Some(entry) = payload.entry else {
                    error!("partition {=str}: flat payload without an entry address", self.name());
                    return Err(());
                };
                self.check_above_boot_area(entry)?;
                memory.write(entry, image).map_err(|_| {
                    error!(
                        "partition {=str}: flat payload of {=usize} bytes does not fit at {=u64:#x}",
                        self.name(),
                        image.len(),
                        entry
                    )
                })?;
                self.long_mode_entry(boot, &mut memory, entry)
            }
            PayloadKind::BzImage => {
                error!("partition {=str}: payload kind not supported yet", self.name());
                Err(())
            }
        }
    }

    fn check_above_boot_area(&self, lowest: u64) -> Result<(), ()> {
        if lowest < BOOT_AREA_END {
            error!(
                "partition {=str}: payload loads at {=u64:#x}, inside the boot area below {=u64:#x}",
                self.name(),
                lowest,
                BOOT_AREA_END
            );
            return Err(());
        }
        Ok(())
    }

    /// The 64-bit start (ELF64, Hermit, flat): flat GDT, command line, identity page tables
    /// for the low 4 GiB, RDI = the command line.
    fn long_mode_entry(&self, boot: &BootInfo, memory: &mut RegionMemory<'_>, rip: u64) -> Result<GuestEntry, ()> {
        self.write_gdt(memory)?;
        self.write_cmdline(boot, memory)?;
        const _: () = assert!(
            PAGE_TABLES_GPA + bulkhead_virt::guest_paging::identity_tables_size(IDENTITY_MAP_BYTES) <= CMDLINE_GPA
        );
        let cr3 = bulkhead_virt::guest_paging::write_identity_tables(memory, PAGE_TABLES_GPA, IDENTITY_MAP_BYTES)
            .map_err(|_| ())?;
        Ok(GuestEntry {
            mode: EntryMode::Long64 { cr3 },
            rip,
            rsp: STACK_TOP_GPA,
            gdt_base: GDT_GPA,
            gdt_limit: 31,
            rax: 0,
            rbx: 0,
            rdi: CMDLINE_GPA,
        })
    }

    /// A 32-bit ELF with a multiboot1 header (Multiboot 0.6.96): loaded by its program
    /// headers and entered in 32-bit protected mode, paging off, flat segments, with EAX =
    /// 0x2BADB002 and EBX = the information structure (memory map = the partition's
    /// memory, command line as for every payload).
    fn load_multiboot1(&self, boot: &BootInfo, image: &[u8], memory: &mut RegionMemory<'_>) -> Result<GuestEntry, ()> {
        use bulkhead_virt::elf::{MB1_FLAG_MEMORY_INFO, MB1_FLAG_PAGE_ALIGN, load_elf32, multiboot1_header};
        let Some(header) = multiboot1_header(image) else {
            error!("partition {=str}: 32-bit ELF payload without a multiboot1 header", self.name());
            return Err(());
        };
        let unsupported = header.unsupported_required_flags(MB1_FLAG_PAGE_ALIGN | MB1_FLAG_MEMORY_INFO);
        if unsupported != 0 {
            error!(
                "partition {=str}: multiboot1 header requires flags {=u32:#x} Bulkhead does not provide",
                self.name(),
                unsupported
            );
            return Err(());
        }
        let loaded = load_elf32(image, memory).map_err(|e| {
            error!("partition {=str}: cannot load ELF32 payload: {}", self.name(), crate::log::Debug2Format(&e));
        })?;
        self.check_above_boot_area(loaded.lowest)?;
        self.write_gdt(memory)?;
        let cmdline = self.cmdline(boot)?;
        let mut regions: heapless::Vec<(u64, u64), 8> = heapless::Vec::new();
        for region in self.config.memory {
            regions.push((region.guest_base, region.size)).map_err(|_| ())?;
        }
        let info =
            bulkhead_virt::multiboot1::write_info(memory, MULTIBOOT1_INFO_GPA, &regions, &cmdline).map_err(|e| {
                error!("partition {=str}: multiboot1 information: {}", self.name(), crate::log::Debug2Format(&e))
            })?;
        Ok(GuestEntry {
            mode: EntryMode::Protected32,
            rip: self.config.payload.entry.unwrap_or(loaded.entry_gpa),
            rsp: STACK_TOP_GPA,
            gdt_base: GDT_GPA,
            gdt_limit: 31,
            rax: u64::from(bulkhead_virt::multiboot1::BOOTLOADER_MAGIC),
            rbx: u64::from(info),
            rdi: 0,
        })
    }

    fn write_gdt(&self, memory: &mut RegionMemory<'_>) -> Result<(), ()> {
        let gdt = bulkhead_virt::guest_paging::flat_gdt();
        let mut bytes = [0u8; 32];
        for (i, d) in gdt.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&d.to_le_bytes());
        }
        memory.write(GDT_GPA, &bytes).map_err(|_| ())
    }

    /// Writes the partition's command line (see the module docs) into its boot area.
    fn write_cmdline(&self, boot: &BootInfo, memory: &mut RegionMemory<'_>) -> Result<(), ()> {
        let line = self.cmdline(boot)?;
        memory.write(CMDLINE_GPA, line.as_bytes()).map_err(|_| ())?;
        memory.write(CMDLINE_GPA + line.len() as u64, &[0]).map_err(|_| ())?;
        Ok(())
    }

    /// The partition's command line: its configured `cmdline`, then every `NAME:word` of
    /// the hypervisor's command line.
    fn cmdline(&self, boot: &BootInfo) -> Result<heapless::String<CMDLINE_MAX>, ()> {
        let mut line: heapless::String<CMDLINE_MAX> = heapless::String::new();
        let extra = boot
            .command_line
            .split_ascii_whitespace()
            .filter_map(|w| w.strip_prefix(self.name()).and_then(|rest| rest.strip_prefix(':')));
        for word in self.config.payload.cmdline.split_ascii_whitespace().chain(extra) {
            if (!line.is_empty() && line.push(' ').is_err()) || line.push_str(word).is_err() {
                error!("partition {=str}: command line longer than {=usize} bytes", self.name(), CMDLINE_MAX);
                return Err(());
            }
        }
        if !line.is_empty() {
            info!("partition {=str}: command line: {=str}", self.name(), line.as_str());
        }
        Ok(line)
    }

    /// A fault on this core: stops the partition's other cores, then applies the policy.
    fn contain(&self, fault: Fault, rip: u64) -> Outcome {
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
        self.containment.release(outcome);
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
                crate::run::reset_board()
            }
        }
    }

    fn halt(&self, why: &str) {
        error!("partition {=str}: halted ({=str}); other partitions keep running", self.name(), why);
    }
}

fn module_bytes(module: &Module) -> &'static [u8] {
    // SAFETY: boot modules lie in the hypervisor's reserved memory (checked at boot), are
    // identity-mapped and never written: they are the pristine payload copies.
    unsafe { core::slice::from_raw_parts(module.start as *const u8, (module.end - module.start) as usize) }
}

static PARTITIONS: [Partition; MAX_PARTITIONS] = {
    let mut all = [const { Partition::new(&PLACEHOLDER) }; MAX_PARTITIONS];
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
    fault_policy: FaultPolicy::Halt,
    watchdog_ms: None,
};

pub fn get(id: PartitionId) -> &'static Partition {
    &PARTITIONS[id.0 as usize]
}

/// Logs every partition's VM exits by kind.
pub fn log_exit_counts() {
    for p in PARTITIONS.iter().take(SYSTEM.partitions.len()) {
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
        let (signals, unexpected) = crate::partition::nmi::counts(p);
        info!("partition {=str}: nmis: stop signals {=u32}, unexpected {=u32}", p.name(), signals, unexpected);
    }
}

/// The partition configured for the core with this APIC ID, and whether this core is the
/// one that starts it (its first core).
pub fn for_apic_id(apic_id: u32) -> Option<(&'static Partition, bool)> {
    let assignment = SYSTEM.core_map.iter().find(|c| c.apic_id == apic_id)?;
    let partition = get(assignment.partition?);
    Some((partition, partition.config.cores.first() == Some(&assignment.core)))
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
    }
}

/// Why this core's vCPU stopped running its guest.
enum Stop {
    /// It faulted: this core leads the partition's stop.
    Fault(Fault, u64),
    /// Another core of the partition faulted and stops the partition; the guest RIP where
    /// the hypervisor's NMI took the vCPU out of its guest, if that is how it left.
    Signalled(Option<u64>),
    /// The partition sent this vCPU an INIT: it resets and waits for a start-up IPI.
    Init,
}

/// Runs this core's vCPU until the partition halts for good. The first core loads the
/// payload and starts at its entry; every other core waits for the partition's INIT/SIPI.
/// A fault on any core stops all of the partition's cores (see `containment.rs`) before
/// the policy is applied.
pub fn run_core<B: crate::backend::Backend>(
    partition: &'static Partition,
    boot: &BootInfo,
    backend: &mut B,
    first_core: bool,
) {
    let cpu = crate::cpu::percpu::current();
    // RESET (the partition starts) or INIT (a sibling reset this vCPU, SDM 9.4, 11.4.7.3):
    // both reset the registers; INIT keeps the APIC mode and waits for a start-up IPI,
    // even on the partition's first core.
    let mut reset = true;
    loop {
        crate::exits::msr::reset_core_state();
        if reset {
            crate::lapic::reset(first_core);
        } else {
            crate::lapic::init();
        }
        let stop = match start_vcpu(partition, boot, backend, first_core && reset) {
            Ok(true) => run_vcpu(partition, backend),
            Ok(false) => Stop::Signalled(None),
            Err(fault) => Stop::Fault(fault, 0),
        };
        reset = true;
        let outcome = match stop {
            Stop::Init => {
                info!("partition {=str}: vcpu on cpu {=u32} got INIT: reset", partition.name(), cpu.index());
                reset = false;
                continue;
            }
            Stop::Fault(fault, rip) => partition.contain(fault, rip),
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
            return;
        }
    }
}

/// Starts this core's vCPU: the first core at the freshly loaded payload, the others at
/// the partition's start-up IPI. `Ok(false)`: the partition is stopping meanwhile.
fn start_vcpu<B: crate::backend::Backend>(
    partition: &'static Partition,
    boot: &BootInfo,
    backend: &mut B,
    first_core: bool,
) -> Result<bool, Fault> {
    let cpu = crate::cpu::percpu::current();
    let entry = if first_core {
        let entry = partition.load(boot).map_err(|()| Fault::Load)?;
        info!("partition {=str}: starting on cpu {=u32} at {=u64:#x}", partition.name(), cpu.index(), entry.rip);
        entry
    } else {
        info!(
            "partition {=str}: vcpu on cpu {=u32} waits for INIT/SIPI from the partition",
            partition.name(),
            cpu.index()
        );
        let Some(vector) = cpu.wait_for_startup(|| partition.containment.stopping()) else {
            return Ok(false);
        };
        info!(
            "partition {=str}: vcpu on cpu {=u32} starts at {=u64:#x} (start-up IPI)",
            partition.name(),
            cpu.index(),
            u64::from(vector) << 12
        );
        startup_entry(vector)
    };
    backend.start(partition, &entry).map_err(|()| Fault::VcpuSetup)?;
    crate::lapic::apply_mode(backend);
    Ok(true)
}

/// Runs the guest until it faults or its partition is stopped from another core.
fn run_vcpu<B: crate::backend::Backend>(partition: &'static Partition, backend: &mut B) -> Stop {
    let mut nmi_rip = None;
    let cpu = crate::cpu::percpu::current();
    loop {
        if partition.containment.stopping() {
            return Stop::Signalled(nmi_rip);
        }
        if cpu.init_pending() {
            return Stop::Init;
        }
        let exit = backend.run();
        nmi_rip = matches!(exit, Exit::Nmi).then(|| backend.rip());
        partition.exits.count(&exit);
        match exits::handle(partition, backend, exit) {
            Action::Resume { skip } => {
                if skip {
                    backend.skip_instruction();
                }
            }
            Action::InjectGp => backend.inject_exception(13, Some(0)),
            Action::InjectUd => backend.inject_exception(6, None),
            Action::Report { pass } => {
                info!("partition {=str}: reports {=str}", partition.name(), if pass { "PASS" } else { "FAIL" });
                log_exit_counts();
                if pass { crate::run::succeed() } else { crate::run::fail("a partition reported a failed test") }
            }
            Action::Fault(fault) => return Stop::Fault(fault, backend.rip()),
        }
    }
}
