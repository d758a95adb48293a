//! The Hyper-V hypercall interface (Microsoft TLFS) as partitions see it: discovery
//! ([`discovery`]), the synthetic MSRs ([`synthetic_msr`]), the SynIC message and
//! event-flag delivery ([`synic`]) and the hypercalls themselves ([`hypercall`]).
//! Encodings and layouts live in `bulkhead_abi::hyperv`, shared with the guests.
//!
//! State is kept per partition (GUEST_OS_ID, HYPERCALL, REFERENCE_TSC, the time base)
//! and per virtual processor, one per CPU (the SynIC registers), indexed by the CPU's
//! per-CPU index, which is below `MAX_CPUS` by construction: a board core number is never
//! used as an index, and a CPU never falls back to another CPU's registers (a core that is
//! not online has no SynIC a sender could reach). A virtual processor's index is the
//! position of its core in the partition's `cores` list; connections deliver to the
//! receiver's VP 0 (its first core). All of it is atomics: senders on other cores read a
//! receiver's SynIC registers while it runs.

pub mod crash;
pub mod discovery;
pub mod hypercall;
pub mod synic;
pub mod synthetic_msr;

use crate::config::SYSTEM;
use crate::cpu::percpu::MAX_CPUS;
use crate::partition::Partition;
use bulkhead_board::tables::MAX_PARTITIONS;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Partition-wide synthetic registers (TLFS "Hypercall Interface", "Timers").
pub struct PartitionRegisters {
    pub guest_os_id: AtomicU64,
    pub hypercall: AtomicU64,
    pub reference_tsc: AtomicU64,
    /// TSC value at the partition's (re)start: TIME_REF_COUNT counts from here.
    pub start_tsc: AtomicU64,
    /// Its hypercall privileges (CPUID 0x4000_0003 EBX), from the connection table once
    /// per start rather than on every hypercall.
    pub hypercall_privileges: AtomicU32,
    /// CRASH_P0..CRASH_P4 (TLFS "Guest Crash Enlightenment").
    pub crash: [AtomicU64; 5],
    /// Serializes writers of the reference TSC page (a REFERENCE_TSC write and a TSC
    /// offset change on another of the partition's cores) and holds the last sequence
    /// number written. Kept here rather than read back from the page, so that a page
    /// invalidated and made valid again never repeats a sequence a reader may have seen
    /// before (that reader would take mixed parameters as consistent).
    pub reference_tsc_page: spin::Mutex<u32>,
}

/// One virtual processor's SynIC registers (TLFS "Inter-Partition Communication").
pub struct VpRegisters {
    pub scontrol: AtomicU64,
    pub simp: AtomicU64,
    pub siefp: AtomicU64,
    pub sints: [AtomicU64; 16],
    pub vp_assist_page: AtomicU64,
    /// The vCPU's TSC offset (what its guest reads minus the hardware TSC), mirrored from
    /// the backend whenever it changes, so that the partition's reference TSC page can be
    /// computed from any of its cores (`synthetic_msr::refresh_reference_tsc_page`).
    pub tsc_offset: AtomicU64,
    /// Where senders deliver, derived from SCONTROL, SIMP and SIEFP whenever one of them
    /// is written ([`VpRegisters::refresh_pages`]): the host address of the message page
    /// and of the event-flag page, 0 while the SynIC or that page is disabled. Senders
    /// read one word instead of three registers and a memory-map search per hypercall.
    pub message_page: AtomicU64,
    pub event_flags_page: AtomicU64,
    /// The core's APIC ID, for the SINT interrupt (set when its partition starts).
    pub apic_id: AtomicU32,
}

impl VpRegisters {
    const fn new() -> Self {
        Self {
            scontrol: AtomicU64::new(0),
            simp: AtomicU64::new(0),
            siefp: AtomicU64::new(0),
            sints: [const { AtomicU64::new(bulkhead_abi::hyperv::Sint::RESET.value()) }; 16],
            vp_assist_page: AtomicU64::new(0),
            tsc_offset: AtomicU64::new(0),
            message_page: AtomicU64::new(0),
            event_flags_page: AtomicU64::new(0),
            apic_id: AtomicU32::new(u32::MAX),
        }
    }

    /// Recomputes `message_page` and `event_flags_page` after a write to SCONTROL, SIMP
    /// or SIEFP (pages were checked to lie in `partition`'s own memory when written).
    pub fn refresh_pages(&self, partition: &Partition) {
        let enabled = bulkhead_abi::hyperv::Scontrol::decode(self.scontrol.load(Ordering::Acquire)).is_enabled();
        let host = |register: &AtomicU64| {
            let page = bulkhead_abi::hyperv::PageMsr::decode(register.load(Ordering::Acquire));
            (enabled && page.is_enabled())
                .then(|| private_memory(partition, page.gpa(), 4096, true))
                .flatten()
                .unwrap_or(0)
        };
        self.message_page.store(host(&self.simp), Ordering::Release);
        self.event_flags_page.store(host(&self.siefp), Ordering::Release);
    }

    fn reset(&self, apic_id: u32) {
        self.scontrol.store(0, Ordering::Release);
        self.simp.store(0, Ordering::Release);
        self.siefp.store(0, Ordering::Release);
        for sint in &self.sints {
            sint.store(bulkhead_abi::hyperv::Sint::RESET.value(), Ordering::Release);
        }
        self.vp_assist_page.store(0, Ordering::Release);
        // Every vCPU starts with TSC offset 0 (`exits/tsc.rs`).
        self.tsc_offset.store(0, Ordering::Release);
        self.message_page.store(0, Ordering::Release);
        self.event_flags_page.store(0, Ordering::Release);
        self.apic_id.store(apic_id, Ordering::Release);
    }
}

static PARTITIONS: [PartitionRegisters; MAX_PARTITIONS] = [const {
    PartitionRegisters {
        guest_os_id: AtomicU64::new(0),
        hypercall: AtomicU64::new(0),
        reference_tsc: AtomicU64::new(0),
        start_tsc: AtomicU64::new(0),
        hypercall_privileges: AtomicU32::new(0),
        crash: [const { AtomicU64::new(0) }; 5],
        reference_tsc_page: spin::Mutex::new(0),
    }
}; MAX_PARTITIONS];

/// Indexed by per-CPU index (`percpu::current_index`, below `MAX_CPUS`).
static VPS: [VpRegisters; MAX_CPUS] = [const { VpRegisters::new() }; MAX_CPUS];

pub fn partition_registers(partition: &Partition) -> &'static PartitionRegisters {
    &PARTITIONS[partition.config().id.0 as usize]
}

/// The SynIC registers of the virtual processor on this CPU.
pub fn this_vp() -> &'static VpRegisters {
    &VPS[crate::cpu::percpu::current_index() as usize]
}

/// The SynIC registers of the virtual processor on the board core `core`, if that core
/// is online (a core that is not has no running VP: nothing can be delivered to it).
/// The per-CPU index of the CPU found for it is kept (a CPU that came online stays
/// online), so a signal or post finds its receiver without searching the CPUs.
#[inline(always)]
pub fn vp_of_core(core: u32) -> Option<&'static VpRegisters> {
    let index = match CPU_OF_CORE.get(core as usize).map_or(0, |s| s.load(Ordering::Relaxed)) {
        0 => find_cpu_of_core(core)?,
        known => known - 1,
    };
    VPS.get(index as usize)
}

/// [`vp_of_core`]'s first lookup of `core`: its CPU by APIC ID, kept if it is online.
#[cold]
#[inline(never)]
fn find_cpu_of_core(core: u32) -> Option<u32> {
    let cpu = apic_id_of_core(core).and_then(crate::cpu::percpu::by_apic_id)?;
    if let Some(slot) = CPU_OF_CORE.get(core as usize) {
        slot.store(cpu.index() + 1, Ordering::Relaxed);
    }
    Some(cpu.index())
}

/// Per board core below `MAX_CPUS`: the per-CPU index of its CPU plus one, once
/// [`vp_of_core`] found it online; 0 until then.
static CPU_OF_CORE: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// The board core number of the CPU with this APIC ID.
pub fn core_of_apic_id(apic_id: u32) -> Option<u32> {
    SYSTEM.board.cpus.iter().find(|c| c.apic_id == apic_id).map(|c| c.core)
}

/// The APIC ID of a board core.
pub fn apic_id_of_core(core: u32) -> Option<u32> {
    SYSTEM.board.cpus.iter().find(|c| c.core == core).map(|c| c.apic_id)
}

/// This CPU's board core number (`None` on a CPU the board does not list, which runs no
/// partition).
pub fn this_core() -> Option<u32> {
    core_of_apic_id(crate::cpu::percpu::current().apic_id())
}

/// The VP index of `core` in `partition` (its position in the `cores` list).
pub fn vp_index(partition: &Partition, core: u32) -> Option<u32> {
    partition.config().cores.iter().position(|&c| c == core).map(|i| i as u32)
}

/// Back to the reset state when a partition (re)starts, before any of its vCPUs runs:
/// the partition's registers, its cores' SynICs and the queues of messages addressed to
/// it (their senders then get INVALID_SYNIC_STATE until the partition enables its SynIC
/// again). Messages it had queued for others stay queued.
pub fn reset_partition(partition: &Partition) {
    let registers = partition_registers(partition);
    registers.guest_os_id.store(0, Ordering::Release);
    registers.hypercall.store(0, Ordering::Release);
    registers.reference_tsc.store(0, Ordering::Release);
    for parameter in &registers.crash {
        parameter.store(0, Ordering::Release);
    }
    registers.start_tsc.store(crate::cpu::time::rdtsc(), Ordering::Release);
    registers.hypercall_privileges.store(discovery::hypercall_privileges(partition), Ordering::Release);
    synic::reset(partition, || {
        for &core in partition.config().cores {
            if let Some(cpu) = apic_id_of_core(core).and_then(crate::cpu::percpu::by_apic_id) {
                VPS[cpu.index() as usize].reset(cpu.apic_id());
            }
        }
    });
}

/// The VP registers of every online core of `partition`.
pub fn partition_vps(partition: &Partition) -> impl Iterator<Item = &'static VpRegisters> {
    partition
        .config()
        .cores
        .iter()
        .filter_map(|&core| apic_id_of_core(core).and_then(crate::cpu::percpu::by_apic_id))
        .map(|cpu| &VPS[cpu.index() as usize])
}

/// The host address of `len` bytes at guest-physical `gpa` when they lie in one region of
/// the partition's own memory (never a shared region or a device), writable if `write`.
/// The hypervisor identity-maps RAM, so the address can be dereferenced directly.
pub fn private_memory(partition: &Partition, gpa: u64, len: u64, write: bool) -> Option<u64> {
    let end = gpa.checked_add(len)?;
    partition
        .config()
        .memory
        .iter()
        .find(|r| r.guest_base <= gpa && end <= r.guest_base + r.size && r.access.read && (!write || r.access.write))
        .map(|r| r.host_base + (gpa - r.guest_base))
}
