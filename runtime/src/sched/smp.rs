//! Starting the partition's other vCPUs (APs): INIT and start-up IPIs through the shared
//! trampoline of `bulkhead_vcpu::smp`, one at a time, each on a stack of its own; each
//! then enables SSE/AVX, loads the runtime's IDT and enters the scheduler's idle loop.
//! Which vCPUs there are and their APIC IDs come from the boot information
//! (`bulkhead_abi::boot_info`, VP index order).

use core::sync::atomic::{AtomicUsize, Ordering};

use super::platform;
use super::scheduler::MAX_CPUS;
use super::threads;

/// The VP index the AP being started takes (one start at a time).
static STARTING: AtomicUsize = AtomicUsize::new(0);
/// APs that reached the scheduler.
static STARTED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn ap_main() -> ! {
    let index = STARTING.load(Ordering::SeqCst);
    platform::init_ap_cpu();
    threads::register_ap(index);
    // Counted once it takes threads, so `available_parallelism` counts it from `main` on.
    STARTED.fetch_add(1, Ordering::SeqCst);
    threads::idle_loop()
}

/// Starts the APs whose APIC IDs `apic_ids` lists in VP index order (index 0 is this
/// CPU, already running). An AP that does not answer within `timeout_ns` is reported and
/// left out, and no later one is started.
pub fn start_aps(apic_ids: impl Iterator<Item = u32>, timeout_ns: u64) {
    for (index, apic_id) in apic_ids.enumerate().skip(1) {
        if index >= MAX_CPUS {
            platform::warn(format_args!("vCPU {index} (APIC ID {apic_id}) left parked: at most {MAX_CPUS} CPUs"));
            break;
        }
        let Some(stack) = platform::alloc(threads::IDLE_STACK, 16) else {
            platform::warn(format_args!("vCPU {index}: no memory for its stack"));
            break;
        };
        let before = STARTED.load(Ordering::SeqCst);
        STARTING.store(index, Ordering::SeqCst);
        let top = stack.ptr as u64 + stack.size as u64;
        bulkhead_vcpu::smp::start_ap(apic_id, ap_main, top);
        let deadline = platform::now_ns().saturating_add(timeout_ns);
        while STARTED.load(Ordering::SeqCst) == before && platform::now_ns() < deadline {
            core::hint::spin_loop();
        }
        if STARTED.load(Ordering::SeqCst) == before {
            // The stack stays allocated: the vCPU might still start and use it. No further
            // vCPU is started: a late one would read the next one's index.
            platform::warn(format_args!("vCPU {index} (APIC ID {apic_id}) did not start"));
            break;
        }
    }
}
