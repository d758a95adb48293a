//! Where the heap goes: the largest stretch of the partition's memory above the program
//! (below it are the boot area and the program itself).

use bulkhead_abi::boot_info::MemoryRegion;

/// The heap's (base, size): the largest part of `regions` at or above `above`; `None` if
/// no memory lies there.
pub fn heap_range(regions: &[MemoryRegion], above: u64) -> Option<(u64, u64)> {
    regions
        .iter()
        .filter_map(|r| {
            let end = r.base.checked_add(r.size)?;
            let base = r.base.max(above);
            (end > base).then_some((base, end - base))
        })
        .max_by_key(|&(_, size)| size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(base: u64, size: u64) -> MemoryRegion {
        MemoryRegion { base, size }
    }

    #[test]
    fn the_largest_stretch_above_the_program() {
        // 16 MiB from 0 with the program ending at 2 MiB, and a 4 MiB region higher up.
        let regions = [region(0, 16 << 20), region(64 << 20, 4 << 20)];
        assert_eq!(heap_range(&regions, 2 << 20), Some((2 << 20, 14 << 20)));
        // Above 13 MiB the second region is the larger.
        assert_eq!(heap_range(&regions, 13 << 20), Some((64 << 20, 4 << 20)));
    }

    #[test]
    fn no_memory_above_the_program_is_none() {
        assert_eq!(heap_range(&[region(0, 1 << 20)], 1 << 20), None);
        assert_eq!(heap_range(&[], 0), None);
        assert_eq!(heap_range(&[region(u64::MAX - 1, 16)], 0), None, "a region past the address space");
    }
}
