//! The thread-local storage block of one thread, x86-64 TLS variant II (ELF Handling for
//! Thread-Local Storage, Drepper, §3.4.6; the System V x86-64 psABI): the TLS image
//! (the ELF's PT_TLS segment: `.tdata` copied, `.tbss` zeroed) ends where the thread
//! pointer (FS base) points, and the thread control block starts there, its first word
//! pointing at itself (`mov rax, fs:0` gives code the thread pointer as an address).
//!
//! The linker computes each variable's offset as its offset in the segment minus the
//! segment's size rounded up to its alignment (lld `getTlsTpOffset`, x86-64), so the image
//! begins exactly that far below the thread pointer.

/// The TLS segment as the ELF describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsTemplate {
    /// Address of the initialized data (`p_vaddr`).
    pub image: u64,
    /// Bytes to copy (`p_filesz`).
    pub file_size: usize,
    /// Bytes of the whole segment, data and zeroed part (`p_memsz`).
    pub mem_size: usize,
    /// `p_align` (0 and 1 both mean none).
    pub align: usize,
}

/// Bytes of the thread control block: its self pointer.
pub const TCB_SIZE: usize = 8;

/// Where the parts of one thread's block lie, as offsets from the block's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsLayout {
    /// Bytes to allocate.
    pub size: usize,
    /// Alignment of the block (and so of the thread pointer).
    pub align: usize,
    /// Offset of the TLS image: the block's start, `tp` less the rounded segment size
    /// (the data is copied here, the rest up to `tp` is zeroed).
    pub image_offset: usize,
    /// Offset of the thread pointer: the FS base, and the TCB's self pointer lives there.
    pub tp_offset: usize,
}

impl TlsTemplate {
    /// The block layout, or `None` for an alignment that is not a power of two or sizes
    /// that do not fit (`file_size` above `mem_size`).
    pub fn layout(&self) -> Option<TlsLayout> {
        let align = self.align.max(1);
        if !align.is_power_of_two() || self.file_size > self.mem_size {
            return None;
        }
        let rounded = self.mem_size.checked_add(align - 1)? & !(align - 1);
        // The block itself is aligned for both the image and the TCB's pointer.
        let block_align = align.max(core::mem::align_of::<u64>());
        Some(TlsLayout {
            size: rounded.checked_add(TCB_SIZE)?,
            align: block_align,
            image_offset: 0,
            tp_offset: rounded,
        })
    }
}

impl TlsLayout {
    /// Fills a block at `block` (`self.size` bytes, aligned to `self.align`): image copied
    /// from `image` (its `file_size` bytes), the rest zeroed, the TCB's self pointer set.
    /// Returns the thread pointer.
    pub fn fill(&self, block: &mut [u8], block_addr: u64, image: &[u8]) -> u64 {
        block[..self.size].fill(0);
        let start = self.image_offset;
        block[start..start + image.len()].copy_from_slice(image);
        let tp = block_addr + self.tp_offset as u64;
        block[self.tp_offset..self.tp_offset + TCB_SIZE].copy_from_slice(&tp.to_le_bytes());
        tp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_ends_at_the_thread_pointer_rounded_to_its_alignment() {
        let t = TlsTemplate { image: 0x1000, file_size: 5, mem_size: 20, align: 16 };
        let l = t.layout().unwrap();
        // 20 rounded to 16 is 32: a variable at segment offset x lives at tp - 32 + x.
        assert_eq!(l, TlsLayout { size: 40, align: 16, image_offset: 0, tp_offset: 32 });
        let mut block = vec![0xAAu8; l.size];
        let tp = l.fill(&mut block, 0x8000, b"hello");
        assert_eq!(tp, 0x8020);
        assert_eq!(&block[..5], b"hello");
        assert!(block[5..32].iter().all(|&b| b == 0), ".tbss and padding zeroed");
        assert_eq!(u64::from_le_bytes(block[32..40].try_into().unwrap()), 0x8020, "TCB points at itself");
    }

    #[test]
    fn small_or_absent_alignment_still_aligns_the_tcb() {
        let l = TlsTemplate { image: 0, file_size: 0, mem_size: 3, align: 0 }.layout().unwrap();
        assert_eq!((l.size, l.align, l.tp_offset), (3 + TCB_SIZE, 8, 3));
        let empty = TlsTemplate { image: 0, file_size: 0, mem_size: 0, align: 1 }.layout().unwrap();
        assert_eq!((empty.size, empty.tp_offset), (TCB_SIZE, 0));
    }

    #[test]
    fn malformed_segments_are_refused() {
        assert_eq!(TlsTemplate { image: 0, file_size: 0, mem_size: 8, align: 12 }.layout(), None);
        assert_eq!(TlsTemplate { image: 0, file_size: 9, mem_size: 8, align: 8 }.layout(), None);
        assert_eq!(TlsTemplate { image: 0, file_size: 0, mem_size: usize::MAX, align: 16 }.layout(), None);
    }
}
