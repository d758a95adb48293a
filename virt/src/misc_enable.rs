//! IA32_MISC_ENABLE (MSR 0x1A0) as a partition on an Intel CPU reads it.
//!
//! Every Intel 64 processor has it (SDM Vol. 4, Table 2-2, architectural since family 0F),
//! and software relies on that: Linux's `verify_cpu`, run at the start of the decompressed
//! kernel before any exception handler exists, reads it unguarded on Intel CPUs to clear XD
//! Disable, so a #GP there is a triple fault. An emulator may lack it all the same (Bochs
//! 2.7's `corei7_skylake_x`), so the answer never depends on the hardware having it.
//!
//! The partition sees the hardware's value where there is one, else fast strings enabled
//! (bit 0, as firmware leaves it), with what the partition is not offered marked so:
//! performance monitoring (bit 7) clear, BTS and PEBS unavailable (bits 11 and 12), since
//! every performance-monitoring MSR is #GP for a partition; and XD Disable (bit 34) clear,
//! since the write that would clear it is #GP.

/// Bit 0: fast-strings enable.
pub const FAST_STRINGS: u64 = 1 << 0;
/// Bit 7: performance monitoring available (read-only).
pub const PERFORMANCE_MONITORING_AVAILABLE: u64 = 1 << 7;
/// Bit 11: branch trace storage unavailable (read-only).
pub const BTS_UNAVAILABLE: u64 = 1 << 11;
/// Bit 12: processor event-based sampling unavailable (read-only).
pub const PEBS_UNAVAILABLE: u64 = 1 << 12;
/// Bit 34: XD bit disable. Always read clear: Linux's `verify_cpu` writes MISC_ENABLE to
/// clear it when set, before it has exception handlers, and a partition's write is #GP,
/// so a set bit would be a triple fault. Whether the partition has NX is what CPUID
/// 0x8000_0001 EDX[20] says, which the hardware reports with XD disabled as absent.
pub const XD_DISABLE: u64 = 1 << 34;

/// The value a partition reads, from the hardware's (`None`: the CPU refused the read).
pub fn partition_value(hardware: Option<u64>) -> u64 {
    (hardware.unwrap_or(FAST_STRINGS) & !(PERFORMANCE_MONITORING_AVAILABLE | XD_DISABLE))
        | BTS_UNAVAILABLE
        | PEBS_UNAVAILABLE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_without_the_msr_still_answers_a_value_with_xd_enabled() {
        let value = partition_value(None);
        assert_eq!(value, FAST_STRINGS | BTS_UNAVAILABLE | PEBS_UNAVAILABLE);
        // Bit 34, XD Disable: clear, so Linux's verify_cpu writes nothing.
        assert_eq!(value & (1 << 34), 0);
    }

    #[test]
    fn the_hardware_value_loses_performance_monitoring() {
        // A typical firmware value: fast strings, auto TCC, perf monitoring, EIST.
        let hardware = 0x0085_0089;
        let value = partition_value(Some(hardware));
        assert_eq!(value & PERFORMANCE_MONITORING_AVAILABLE, 0);
        assert_eq!(value & (BTS_UNAVAILABLE | PEBS_UNAVAILABLE), BTS_UNAVAILABLE | PEBS_UNAVAILABLE);
        assert_eq!(value & 0x0085_0009, 0x0085_0009);
    }

    #[test]
    fn xd_disable_set_by_firmware_reads_clear() {
        // verify_cpu would write the MSR to clear it, and that write is #GP.
        let value = partition_value(Some(0x0085_0089 | XD_DISABLE));
        assert_eq!(value & XD_DISABLE, 0);
    }
}
