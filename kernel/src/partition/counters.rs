//! What a partition's exits are counted in: the rate limits of its log lines and its exit
//! counts by kind.

use core::sync::atomic::{AtomicU32, Ordering};

/// Logs the first occurrences of a kind of event, then only every power of two, so a
/// guest hammering a port or MSR cannot flood the console.
pub struct RateLimit(AtomicU32);

impl RateLimit {
    pub const fn new() -> Self {
        RateLimit(AtomicU32::new(0))
    }

    /// Counts one event; returns the count when this one should be logged.
    pub fn hit(&self) -> Option<u32> {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        (n <= 8 || n.is_power_of_two()).then_some(n)
    }

    /// Events counted so far.
    pub fn count(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Event counters used for rate-limited logging.
pub struct Counters {
    pub port: RateLimit,
    pub msr: RateLimit,
    pub ipi: RateLimit,
    /// Instructions answered with #UD (virtualization instructions, hypercalls).
    pub undefined: RateLimit,
    /// Xen hypercalls answered -ENOSYS (a call or command not offered).
    pub xen_unsupported: RateLimit,
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
    pub const fn new() -> Self {
        ExitCounts { io: AtomicU32::new(0), msr: AtomicU32::new(0), cpuid: AtomicU32::new(0), other: AtomicU32::new(0) }
    }
}

/// DMA faults the IOMMU recorded for each partition's functions (`devices/iommu.rs`), and
/// the rate limit of their log lines; the end-of-run report prints the counts.
static DMA_FAULTS: [RateLimit; crate::config::PARTITIONS] = [const { RateLimit::new() }; crate::config::PARTITIONS];

/// Counts one DMA fault of `partition`'s function; returns the count when it should be
/// logged.
pub fn dma_fault(partition: bulkhead_board::tables::PartitionId) -> Option<u32> {
    DMA_FAULTS[partition.0 as usize].hit()
}

/// `partition`'s DMA faults so far.
pub fn dma_faults(partition: bulkhead_board::tables::PartitionId) -> u32 {
    DMA_FAULTS[partition.0 as usize].count()
}
