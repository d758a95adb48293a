//! Xen's HVM guest interface, for partitions whose system file says `interface = "xen"`
//! (docs/xen.md; numbers in `bulkhead_abi::xen`). Such a partition sees Xen's CPUID leaves
//! and hypercall page MSR instead of Hyper-V's (`discovery`), and its VMCALL/VMMCALL is a
//! Xen hypercall (`hypercall`). The exits stay handled once in `exits/`: they ask
//! [`speaks_xen`] and pick the interface's answer.
//!
//! Event channels are the adapter: a Xen partition's interdomain channel is a configured
//! connection (`event_channel`), raised in the 2-level ABI's bitmaps (`shared_info`) and
//! announced on the vCPU's upcall vector (`upcall`); a message connection with a Xen end
//! is carried by a ring (`ring`). The Hyper-V side of a connection never learns which
//! interface its peer speaks.
//!
//! All of a Xen partition's event state sits behind one lock ([`state`]): its own calls
//! and every sender that raises one of its ports take it, and a restart clears the state
//! under it, so a raise lands either before the restart (in memory the restart zeroes) or
//! after it (on a port that is no longer bound: refused).

pub mod discovery;
pub mod event_channel;
pub mod hypercall;
pub mod ring;
pub mod shared_info;
pub mod upcall;

use crate::config::{CONNECTIONS, PARTITIONS};
use crate::cpu::percpu::MAX_CPUS;
use crate::partition::Partition;
use bulkhead_board::tables::{GuestInterface, PayloadKind};
use core::sync::atomic::{AtomicBool, Ordering};
use spin::mutex::TicketMutex;

/// Whether `partition` speaks Xen's interface (and so has none of Hyper-V's).
#[inline]
pub fn speaks_xen(partition: &Partition) -> bool {
    partition.config().interface == GuestInterface::Xen
}

/// The word the hypervisor adds to the command line of a `linux` payload in a Xen
/// partition: `tsc_early_khz=N`, the TSC frequency it calibrated at boot, in kHz.
///
/// Linux learns the TSC frequency from Xen only through pvclock (`XENFEAT_hvm_safe_pvclock`,
/// which would also make it take Xen's timers and VIRQ_TIMER), so without it Debian's
/// kernel calibrates against the PIT, HPET or ACPI PM timer, finds none in a partition,
/// marks the TSC unusable and then waits for ever in its LAPIC timer calibration (which
/// counts TSC or jiffies, and no timer ticks yet). Its `tsc_early_khz=` parameter
/// (Documentation/admin-guide/kernel-parameters.txt) gives the frequency directly, as
/// Hyper-V's TSC_FREQUENCY MSR does for a Hyper-V partition; the LAPIC timer is then
/// calibrated against the TSC. `None` for other partitions, when the configured command
/// line already sets it, or when the frequency is unknown.
pub fn linux_tsc_word(partition: &Partition, configured: &str) -> Option<heapless::String<32>> {
    let config = partition.config();
    if config.interface != GuestInterface::Xen || config.payload.kind != PayloadKind::BzImage {
        return None;
    }
    if configured.split_ascii_whitespace().any(|w| w.starts_with("tsc_early_khz=")) {
        return None;
    }
    let khz = crate::cpu::time::tsc_hz() / 1000;
    if khz == 0 || khz > u64::from(u32::MAX) {
        return None;
    }
    let mut word = heapless::String::new();
    core::fmt::Write::write_fmt(&mut word, format_args!("tsc_early_khz={khz}")).ok()?;
    Some(word)
}

/// Whether a call's domain id names the caller: `DOMID_SELF` or its own partition id.
pub fn is_self(partition: &Partition, domid: u16) -> bool {
    domid == bulkhead_abi::xen::DOMID_SELF || domid == u16::from(partition.config().id.0)
}

/// One vCPU's event delivery state.
#[derive(Clone, Copy)]
pub struct XenVcpu {
    /// Host address of the `vcpu_info` the guest registered (`VCPUOP_register_vcpu_info`),
    /// 0 while it uses its slot in shared_info.
    pub vcpu_info: u64,
    /// Its upcall vector (`HVMOP_set_evtchn_upcall_vector`), 0 while none is set.
    pub upcall_vector: u8,
}

/// A Xen partition's event state.
pub struct XenState {
    /// Host address of its shared_info page, 0 until `XENMEM_add_to_physmap` maps it.
    pub shared_info: u64,
    /// Bits per event word: 64 when shared_info was mapped from 64-bit mode, else 32.
    pub word_bits: u32,
    /// `HVM_PARAM_CALLBACK_IRQ` as last set (stored and read back; delivery uses the
    /// per-vCPU upcall vectors).
    pub callback_via: u64,
    /// Indexed by vCPU id (the position of its core in the partition's `cores`).
    pub vcpus: [XenVcpu; MAX_CPUS],
    pub ports: event_channel::Ports,
}

impl XenState {
    const fn new() -> Self {
        Self {
            shared_info: 0,
            word_bits: 64,
            callback_via: 0,
            vcpus: [XenVcpu { vcpu_info: 0, upcall_vector: 0 }; MAX_CPUS],
            ports: event_channel::Ports::new(),
        }
    }
}

static STATE: [TicketMutex<XenState>; PARTITIONS] = [const { TicketMutex::new(XenState::new()) }; PARTITIONS];

/// The event state of `partition` (every partition has one; only Xen partitions use it).
pub fn state(partition: &Partition) -> &'static TicketMutex<XenState> {
    &STATE[partition.config().id.0 as usize]
}

/// A partition (re)starts: back to no shared_info, no vcpu_info, no upcall vector and no
/// bound port, and on a restart the rings of its message connections start empty. Called
/// before any of its vCPUs runs, for every partition (a Hyper-V one has nothing to reset).
pub fn reset_partition(partition: &Partition) {
    if !speaks_xen(partition) {
        return;
    }
    let mut state = state(partition).lock();
    *state = XenState::new();
    drop(state);
    // The first start finds its rings as `ring::init_all` left them at boot, with what a
    // peer that started earlier has written already; a restart starts them empty.
    let id = partition.config().id;
    if STARTED[usize::from(id.0)].swap(true, Ordering::AcqRel) {
        for (index, connection) in crate::config::SYSTEM.connections.iter().enumerate() {
            if connection.from == id || connection.to == id {
                ring::reset(index, connection);
            }
        }
    }
}

/// Whether each partition has started once.
static STARTED: [AtomicBool; PARTITIONS] = [const { AtomicBool::new(false) }; PARTITIONS];

// A connection's index fits the port table's `u16` reverse map.
const _: () = assert!(CONNECTIONS <= u16::MAX as usize);
