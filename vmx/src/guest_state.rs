//! Architecture-neutral description of how a vCPU starts: the CPU mode and registers the
//! payload loader decided on. Both backends turn it into their own guest-state format.

/// Selectors of the flat GDT the loader writes into guest memory for protected and long
/// mode starts (null, 64-bit code, data, 32-bit code).
pub const SELECTOR_CODE64: u16 = 0x08;
pub const SELECTOR_DATA: u16 = 0x10;
pub const SELECTOR_CODE32: u16 = 0x18;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 16-bit real mode at `segment:ip` (INIT/SIPI start of an AP, or a real-mode payload).
    Real { segment: u16 },
    /// 32-bit protected mode, paging off (multiboot1 payloads).
    Protected32,
    /// 64-bit long mode with identity page tables at `cr3`.
    Long64 { cr3: u64 },
}

/// Where and how a vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestEntry {
    pub mode: EntryMode,
    pub rip: u64,
    pub rsp: u64,
    /// Guest-physical address and limit of the flat GDT (protected and long mode).
    pub gdt_base: u64,
    pub gdt_limit: u16,
    /// Initial RAX and RBX (multiboot1: magic and information address).
    pub rax: u64,
    pub rbx: u64,
    /// Initial RDI (64-bit payloads: address of the command line).
    pub rdi: u64,
}
