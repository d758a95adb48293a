//! Architecture-neutral description of how a vCPU starts: the CPU mode and registers the
//! payload loader decided on. Both backends turn it into their own guest-state format.

/// Selectors of the flat GDT the loader writes into guest memory for protected and long
/// mode starts ([`crate::guest_paging::flat_gdt`]).
pub use crate::guest_paging::{CODE32_SELECTOR, CODE64_SELECTOR, DATA_SELECTOR};

/// The CPU mode a vCPU starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 16-bit real mode at `segment:ip` (INIT/SIPI start of an AP, or a real-mode payload).
    Real {
        /// CS selector (base = selector * 16).
        segment: u16,
    },
    /// 32-bit protected mode, paging off (multiboot1 payloads).
    Protected32,
    /// 64-bit long mode with identity page tables at `cr3`.
    Long64 {
        /// Guest-physical address of the PML4.
        cr3: u64,
        /// The selectors CS and the data segments hold.
        selectors: LongModeSelectors,
    },
}

/// The selectors of a long-mode start. The GDT at [`GuestEntry::gdt_base`] holds
/// [`CODE64_DESCRIPTOR`](crate::guest_paging::CODE64_DESCRIPTOR) at `code` and
/// [`DATA_DESCRIPTOR`](crate::guest_paging::DATA_DESCRIPTOR) at `data`, so a reload of
/// either selector gives the hidden state the backend loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongModeSelectors {
    /// CS.
    pub code: u16,
    /// DS, ES, SS, FS and GS.
    pub data: u16,
}

impl LongModeSelectors {
    /// The flat GDT's ([`crate::guest_paging::flat_gdt`]).
    pub const FLAT: LongModeSelectors = LongModeSelectors { code: CODE64_SELECTOR, data: DATA_SELECTOR };
    /// Linux's `__BOOT_CS` and `__BOOT_DS` (boot.rst "64-bit Boot Protocol"), in the GDT
    /// [`crate::bzimage::boot_gdt`] describes.
    pub const LINUX_BOOT: LongModeSelectors =
        LongModeSelectors { code: crate::bzimage::BOOT_CS, data: crate::bzimage::BOOT_DS };
}

/// Where and how a vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestEntry {
    /// CPU mode.
    pub mode: EntryMode,
    /// First instruction (offset into CS in real mode).
    pub rip: u64,
    /// Initial stack pointer.
    pub rsp: u64,
    /// Guest-physical address and limit of the flat GDT (protected and long mode).
    pub gdt_base: u64,
    /// GDT limit (size - 1).
    pub gdt_limit: u16,
    /// Initial RAX and RBX (multiboot1: magic and information address).
    pub rax: u64,
    /// Initial RBX.
    pub rbx: u64,
    /// Initial RDI (64-bit payloads: address of the command line).
    pub rdi: u64,
    /// Initial RSI (Linux: the zero page).
    pub rsi: u64,
}

/// The guest's general registers as the backends' entry/exit code saves them (the field
/// order is the layout their assembly uses). RSP, RIP and RFLAGS (and RAX on SVM) live in
/// the VMCS / VMCB.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the architectural register names say it all
pub struct GuestRegisters {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

/// The assembly both backends' world switch (`vmx/src/world_switch.rs`,
/// `svm/src/world_switch.rs`) uses to load a guest's general registers from a
/// [`GuestRegisters`] block at RDI just before entering the guest: RBX, RCX, RDX, RSI, RBP
/// and R8-R15, then RDI itself (last, as it holds the block's address). RAX is the
/// backend's: VT-x loads it before this, SVM's lives in the VMCB. The `global_asm!` using
/// it names each field's offset as an operand (`rbx = const offset_of!(GuestRegisters,
/// rbx)`, ...), so a wrong or missing offset does not compile.
#[macro_export]
macro_rules! load_guest_registers {
    () => {
        "
    mov rbx, [rdi + {rbx}]
    mov rcx, [rdi + {rcx}]
    mov rdx, [rdi + {rdx}]
    mov rsi, [rdi + {rsi}]
    mov rbp, [rdi + {rbp}]
    mov r8,  [rdi + {r8}]
    mov r9,  [rdi + {r9}]
    mov r10, [rdi + {r10}]
    mov r11, [rdi + {r11}]
    mov r12, [rdi + {r12}]
    mov r13, [rdi + {r13}]
    mov r14, [rdi + {r14}]
    mov r15, [rdi + {r15}]
    mov rdi, [rdi + {rdi}]
"
    };
}

/// After the exit, the counterpart of [`load_guest_registers!`]: stores RBX, RCX, RDX,
/// RSI, RBP and R8-R15 into the block at RDI. The guest's RDI (which the world switch
/// parked on the stack to load the block's address) and RAX are the backend's to store.
#[macro_export]
macro_rules! store_guest_registers {
    () => {
        "
    mov [rdi + {rbx}], rbx
    mov [rdi + {rcx}], rcx
    mov [rdi + {rdx}], rdx
    mov [rdi + {rsi}], rsi
    mov [rdi + {rbp}], rbp
    mov [rdi + {r8}], r8
    mov [rdi + {r9}], r9
    mov [rdi + {r10}], r10
    mov [rdi + {r11}], r11
    mov [rdi + {r12}], r12
    mov [rdi + {r13}], r13
    mov [rdi + {r14}], r14
    mov [rdi + {r15}], r15
"
    };
}

/// Instructions a guest may use only when the backend enabled them (VT-x: secondary
/// processor-based controls "enable RDTSCP", "enable INVPCID", "enable XSAVES/XRSTORS";
/// without them the instruction raises #UD in the guest). CPUID must not advertise one
/// that is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalInstructions {
    /// RDTSCP (CPUID 0x8000_0001 EDX bit 27).
    pub rdtscp: bool,
    /// INVPCID (CPUID 7.0 EBX bit 10).
    pub invpcid: bool,
    /// XSAVES/XRSTORS (CPUID 0xD.1 EAX bit 3).
    pub xsaves: bool,
}

/// How the guest executes at an exit, as far as a hypercall needs it (TLFS "Legal
/// Hypercall Environments": CPL 0 only, never real mode; 64-bit callers pass the input in
/// RCX/RDX/R8, 32-bit callers in EDX:EAX, EBX:ECX, EDI:ESI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionMode {
    /// Real mode (CR0.PE clear).
    Real,
    /// Protected mode, compatibility mode or virtual-8086 mode (which counts as CPL 3).
    Bits32 {
        /// Current privilege level, 0..=3.
        cpl: u8,
    },
    /// 64-bit mode (EFER.LMA and CS.L).
    Bits64 {
        /// Current privilege level, 0..=3.
        cpl: u8,
    },
}

impl ExecutionMode {
    /// Decodes the mode from the architectural state: CR0.PE, RFLAGS.VM, EFER.LMA, CS.L
    /// and the CPL (SS.DPL on VT-x, the VMCB's CPL on SVM).
    pub const fn decode(cr0: u64, rflags: u64, efer: u64, cs_long: bool, cpl: u8) -> Self {
        const CR0_PE: u64 = 1;
        const RFLAGS_VM: u64 = 1 << 17;
        const EFER_LMA: u64 = 1 << 10;
        if cr0 & CR0_PE == 0 {
            ExecutionMode::Real
        } else if rflags & RFLAGS_VM != 0 {
            ExecutionMode::Bits32 { cpl: 3 }
        } else if efer & EFER_LMA != 0 && cs_long {
            ExecutionMode::Bits64 { cpl }
        } else {
            ExecutionMode::Bits32 { cpl }
        }
    }
}

impl ExecutionMode {
    /// [`decode`](Self::decode), reading CR0 and RFLAGS (`cr0_rflags`) only when the mode
    /// is not 64-bit: with EFER.LMA and CS.L the processor is in 64-bit mode whatever they
    /// hold, as IA-32e mode needs CR0.PE and excludes RFLAGS.VM (SDM Vol. 3 2.5, 9.8.5).
    /// Every 64-bit hypercall saves the two reads (two VMREADs on VT-x).
    #[inline(always)]
    pub fn decode_lazily(efer: u64, cs_long: bool, cpl: u8, cr0_rflags: impl FnOnce() -> (u64, u64)) -> Self {
        const EFER_LMA: u64 = 1 << 10;
        if efer & EFER_LMA != 0 && cs_long {
            return ExecutionMode::Bits64 { cpl };
        }
        let (cr0, rflags) = cr0_rflags();
        Self::decode(cr0, rflags, efer, cs_long, cpl)
    }
}

#[cfg(test)]
mod execution_mode_tests {
    use super::ExecutionMode;

    #[test]
    fn modes_follow_pe_vm_lma_and_cs_l() {
        assert_eq!(ExecutionMode::decode(0x10, 0x2, 0, false, 0), ExecutionMode::Real);
        assert_eq!(ExecutionMode::decode(0x11, 0x2, 0, false, 0), ExecutionMode::Bits32 { cpl: 0 });
        assert_eq!(ExecutionMode::decode(0x11, 0x2 | 1 << 17, 0, false, 0), ExecutionMode::Bits32 { cpl: 3 });
        assert_eq!(ExecutionMode::decode(0x8000_0011, 0x2, 0x500, true, 3), ExecutionMode::Bits64 { cpl: 3 });
        // Compatibility mode: LMA without CS.L.
        assert_eq!(ExecutionMode::decode(0x8000_0011, 0x2, 0x500, false, 0), ExecutionMode::Bits32 { cpl: 0 });
    }

    #[test]
    fn lazy_decode_agrees_wherever_the_state_is_architectural() {
        for pe in [0u64, 1] {
            for vm in [0u64, 1 << 17] {
                for lma in [0u64, 1 << 10] {
                    // IA-32e mode needs CR0.PE and excludes RFLAGS.VM.
                    if lma != 0 && (pe == 0 || vm != 0) {
                        continue;
                    }
                    for cs_long in [false, true] {
                        for cpl in 0..4u8 {
                            let (cr0, rflags, efer) = (0x8000_0010 | pe, 0x2 | vm, 0x100 | lma);
                            let mut read = false;
                            let lazy = ExecutionMode::decode_lazily(efer, cs_long, cpl, || {
                                read = true;
                                (cr0, rflags)
                            });
                            assert_eq!(lazy, ExecutionMode::decode(cr0, rflags, efer, cs_long, cpl));
                            assert_eq!(read, !(lma != 0 && cs_long), "CR0 and RFLAGS read only outside 64-bit mode");
                        }
                    }
                }
            }
        }
    }
}
