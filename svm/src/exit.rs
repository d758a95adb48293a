//! #VMEXIT decoding: the exit code and EXITINFO fields of the VMCB control area turned
//! into the neutral [`Exit`] (APM Vol. 2, Appendix C for the codes, 15.7 to 15.13 and 15.25
//! for the EXITINFO formats), and the RIP after an exiting instruction.
//!
//! Both are pure functions of the control area and the guest registers, so the host tests
//! cover them.

use crate::vmcb::ControlArea;
use bulkhead_virt::exit::{AccessKind, Exit, PortAccess};
use bulkhead_virt::guest_state::GuestRegisters;

/// SVM exit codes (Appendix C, Table C-1), the ones this backend names.
pub mod code {
    /// 0x40 + vector: an intercepted exception.
    pub const EXCEPTION_FIRST: u64 = 0x40;
    pub const EXCEPTION_LAST: u64 = 0x5f;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const SMI: u64 = 0x62;
    pub const INIT: u64 = 0x63;
    pub const RDPMC: u64 = 0x6f;
    pub const CPUID: u64 = 0x72;
    pub const INVD: u64 = 0x76;
    pub const HLT: u64 = 0x78;
    pub const INVLPGA: u64 = 0x7a;
    pub const IOIO: u64 = 0x7b;
    /// RDMSR or WRMSR (EXITINFO1 says which).
    pub const MSR: u64 = 0x7c;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const RDTSCP: u64 = 0x87;
    pub const WBINVD: u64 = 0x89;
    pub const MONITOR: u64 = 0x8a;
    pub const MWAIT: u64 = 0x8b;
    /// MWAIT with the monitor hardware armed.
    pub const MWAIT_CONDITIONAL: u64 = 0x8c;
    pub const XSETBV: u64 = 0x8d;
    /// Nested page fault.
    pub const NPF: u64 = 0x400;
    /// VMRUN found an illegal guest state (15.5.1); the guest never ran.
    pub const INVALID: u64 = u64::MAX;
}

/// IOIO EXITINFO1 (15.10.2): bit 0 IN, bit 2 string, bits 6:4 operand size (one-hot 8, 16,
/// 32 bits), bits 31:16 the port.
const IOIO_IN: u64 = 1 << 0;
const IOIO_STRING: u64 = 1 << 2;
/// NPF EXITINFO1 (15.25.6): the #PF error-code bits of the faulting access.
const NPF_WRITE: u64 = 1 << 1;
const NPF_EXECUTE: u64 = 1 << 4;
/// MSR EXITINFO1 (15.11): 0 RDMSR, 1 WRMSR.
/// EXITINFO1 of an MSR exit for WRMSR (0 for RDMSR).
pub const MSR_WRITE: u64 = 1;

/// Exception vectors that push an error code (APM Vol. 2, 8.2): #DF, #TS, #NP, #SS, #GP,
/// #PF, #AC, #CP, #VC, #SX.
const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

/// The port access of an IOIO exit's EXITINFO1 (APM 15.10.2), `None` for a size bit pattern
/// the processor never reports.
#[inline(always)]
pub fn io(info1: u64) -> Option<PortAccess> {
    let size = match (info1 >> 4) & 0b111 {
        0b001 => 1,
        0b010 => 2,
        0b100 => 4,
        _ => return None,
    };
    Some(PortAccess { port: (info1 >> 16) as u16, size, write: info1 & IOIO_IN == 0, string: info1 & IOIO_STRING != 0 })
}

/// What the guest did, from the control area after a #VMEXIT and the guest registers
/// (with RAX already copied from the save area: CPUID, WRMSR and XSETBV take operands
/// from it).
///
/// The SVM instructions (VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA) come out as
/// [`Exit::VirtualizationInstruction`]. A failed VMRUN (`VMEXIT_INVALID`)
/// comes out as `Unhandled { reason: u32::MAX, .. }`, as a failed VM entry does on VMX.
#[inline(always)]
pub fn decode(control: &ControlArea, registers: &GuestRegisters) -> Exit {
    let (exit_code, info1, info2) = (control.exit_code, control.exit_info1, control.exit_info2);
    let unhandled = Exit::Unhandled { reason: exit_code as u32, qualification: info1 };
    let edx_eax = (registers.rdx << 32) | (registers.rax & 0xffff_ffff);
    match exit_code {
        code::EXCEPTION_FIRST..=code::EXCEPTION_LAST => {
            let vector = (exit_code - code::EXCEPTION_FIRST) as u8;
            Exit::Exception { vector, error_code: has_error_code(vector).then_some(info1 as u32) }
        }
        code::NMI => Exit::Nmi,
        code::INIT => Exit::Init,
        code::CPUID => Exit::Cpuid { leaf: registers.rax as u32, subleaf: registers.rcx as u32 },
        code::HLT => Exit::Hlt,
        code::INVD => Exit::Invd,
        code::WBINVD => Exit::Wbinvd,
        code::RDPMC => Exit::Rdpmc { counter: registers.rcx as u32 },
        code::MONITOR => Exit::Monitor,
        code::MWAIT | code::MWAIT_CONDITIONAL => Exit::Mwait,
        code::IOIO => io(info1).map_or(unhandled, Exit::Io),
        code::MSR if info1 == MSR_WRITE => Exit::MsrWrite { msr: registers.rcx as u32, value: edx_eax },
        code::MSR if info1 == 0 => Exit::MsrRead { msr: registers.rcx as u32 },
        code::SHUTDOWN => Exit::TripleFault,
        code::VMMCALL => Exit::Hypercall,
        code::XSETBV => Exit::Xsetbv { xcr: registers.rcx as u32, value: edx_eax },
        code::NPF => {
            let write = info1 & NPF_WRITE != 0;
            let execute = info1 & NPF_EXECUTE != 0;
            Exit::NestedPageFault { gpa: info2, access: AccessKind { read: !write && !execute, write, execute } }
        }
        code::INVALID => Exit::Unhandled { reason: u32::MAX, qualification: info1 },
        // VMMCALL (0x81, inside this range) is matched above as the hypercall.
        code::INVLPGA | code::VMRUN..=code::SKINIT => Exit::VirtualizationInstruction,
        _ => unhandled,
    }
}

/// Length of the instructions whose exits the kernel skips, when the CPU does not save the
/// next RIP (no NRIPS, e.g. QEMU 7.2 TCG, which has neither NRIPS nor DecodeAssists and so
/// no way to learn the length from the VMCB). These have no operand bytes; a guest that
/// puts a redundant prefix in front of one would be resumed inside it.
pub const fn instruction_length(exit_code: u64) -> Option<u64> {
    match exit_code {
        code::CPUID => Some(2),   // 0F A2
        code::MSR => Some(2),     // RDMSR 0F 32, WRMSR 0F 30
        code::HLT => Some(1),     // F4
        code::INVD => Some(2),    // 0F 08
        code::WBINVD => Some(2),  // 0F 09 (WBNOINVD, F3 0F 09, is taken for WBINVD's length)
        code::RDPMC => Some(2),   // 0F 33
        code::XSETBV => Some(3),  // 0F 01 D1
        code::VMMCALL => Some(3), // 0F 01 D9
        _ => None,
    }
}

/// The RIP after the instruction that caused the exit in `control`, for the exits that can
/// be skipped (IOIO and those of [`instruction_length`]); `None` for any other exit.
///
/// IOIO always saves the next RIP in EXITINFO2 (15.10.2). The other exits use the VMCB's
/// nRIP when the CPU has NRIPS (CPUID 0x8000_000A EDX bit 3, 15.7.1), else the fixed length.
#[inline]
pub fn next_rip(control: &ControlArea, rip: u64, nrip_save: bool) -> Option<u64> {
    if control.exit_code == code::IOIO {
        return Some(control.exit_info2);
    }
    let length = instruction_length(control.exit_code)?;
    Some(if nrip_save { control.next_rip } else { rip.wrapping_add(length) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(exit_code: u64, info1: u64, info2: u64) -> ControlArea {
        let mut c = ControlArea::zeroed();
        (c.exit_code, c.exit_info1, c.exit_info2) = (exit_code, info1, info2);
        c
    }

    fn decode_with(exit_code: u64, info1: u64, info2: u64, registers: &GuestRegisters) -> Exit {
        decode(&control(exit_code, info1, info2), registers)
    }

    fn no_registers(exit_code: u64, info1: u64, info2: u64) -> Exit {
        decode_with(exit_code, info1, info2, &GuestRegisters::default())
    }

    #[test]
    fn exceptions() {
        assert_eq!(no_registers(0x40 + 13, 0x18, 0), Exit::Exception { vector: 13, error_code: Some(0x18) });
        assert_eq!(no_registers(0x40 + 14, 2, 0xdead_b000), Exit::Exception { vector: 14, error_code: Some(2) });
        assert_eq!(no_registers(0x40 + 6, 0x55, 0), Exit::Exception { vector: 6, error_code: None });
        assert_eq!(no_registers(0x5f, 0, 0), Exit::Exception { vector: 31, error_code: None });
        assert_eq!(no_registers(0x40 + 8, 0, 0), Exit::Exception { vector: 8, error_code: Some(0) });
    }

    #[test]
    fn signals_and_simple_exits() {
        assert_eq!(no_registers(code::NMI, 0, 0), Exit::Nmi);
        assert_eq!(no_registers(code::INIT, 0, 0), Exit::Init);
        assert_eq!(no_registers(code::HLT, 0, 0), Exit::Hlt);
        assert_eq!(no_registers(code::SHUTDOWN, 0, 0), Exit::TripleFault);
        assert_eq!(no_registers(code::VMMCALL, 0, 0), Exit::Hypercall);
    }

    #[test]
    fn cache_and_monitoring_instructions() {
        assert_eq!(no_registers(code::INVD, 0, 0), Exit::Invd);
        assert_eq!(no_registers(code::WBINVD, 0, 0), Exit::Wbinvd);
        let r = GuestRegisters { rcx: 0xffff_ffff_4000_0001, ..Default::default() };
        assert_eq!(decode_with(code::RDPMC, 0, 0, &r), Exit::Rdpmc { counter: 0x4000_0001 });
        assert_eq!(no_registers(code::MONITOR, 0, 0), Exit::Monitor);
        assert_eq!(no_registers(code::MWAIT, 0, 0), Exit::Mwait);
        assert_eq!(no_registers(code::MWAIT_CONDITIONAL, 0, 0), Exit::Mwait);
    }

    #[test]
    fn cpuid_takes_rax_and_rcx() {
        let r = GuestRegisters { rax: 0xffff_ffff_0000_0007, rcx: 1, ..Default::default() };
        assert_eq!(decode_with(code::CPUID, 0, 0, &r), Exit::Cpuid { leaf: 7, subleaf: 1 });
    }

    #[test]
    fn port_io() {
        // OUT DX, AL to 0x3f8: size 8, not IN.
        let out = (0x3f8 << 16) | (1 << 4);
        assert_eq!(
            no_registers(code::IOIO, out, 0x1002),
            Exit::Io(PortAccess { port: 0x3f8, size: 1, write: true, string: false })
        );
        // IN EAX, DX from 0xcfc.
        let inl = (0xcfc << 16) | (1 << 6) | 1;
        assert_eq!(
            no_registers(code::IOIO, inl, 0),
            Exit::Io(PortAccess { port: 0xcfc, size: 4, write: false, string: false })
        );
        // REP OUTSW to 0x1f0 (string, rep, 16-bit, 64-bit address size).
        let outs = (0x1f0 << 16) | (1 << 9) | (1 << 5) | (1 << 3) | (1 << 2);
        assert_eq!(
            no_registers(code::IOIO, outs, 0),
            Exit::Io(PortAccess { port: 0x1f0, size: 2, write: true, string: true })
        );
        // No size bit: not a valid IOIO exit, reported as is.
        assert_eq!(
            no_registers(code::IOIO, 0x80 << 16, 0),
            Exit::Unhandled { reason: 0x7b, qualification: 0x80 << 16 }
        );
    }

    #[test]
    fn msrs() {
        let r = GuestRegisters { rax: 0xaaaa_aaaa_1234_5678, rcx: 0xc000_0080, rdx: 0x9abc_def0, ..Default::default() };
        assert_eq!(decode_with(code::MSR, 0, 0, &r), Exit::MsrRead { msr: 0xc000_0080 });
        assert_eq!(decode_with(code::MSR, 1, 0, &r), Exit::MsrWrite { msr: 0xc000_0080, value: 0x9abc_def0_1234_5678 });
        assert_eq!(decode_with(code::MSR, 2, 0, &r), Exit::Unhandled { reason: 0x7c, qualification: 2 });
    }

    #[test]
    fn xsetbv() {
        let r = GuestRegisters { rax: 7, rcx: 0, rdx: 0, ..Default::default() };
        assert_eq!(decode_with(code::XSETBV, 0, 0, &r), Exit::Xsetbv { xcr: 0, value: 7 });
    }

    #[test]
    fn nested_page_faults() {
        let gpa = 0xfee0_0030;
        let read = AccessKind { read: true, write: false, execute: false };
        let write = AccessKind { read: false, write: true, execute: false };
        let fetch = AccessKind { read: false, write: false, execute: true };
        // Not present, read; final translation (bit 32).
        assert_eq!(no_registers(code::NPF, 1 << 32, gpa), Exit::NestedPageFault { gpa, access: read });
        // Present, write, user.
        assert_eq!(no_registers(code::NPF, 0b111 | (1 << 32), gpa), Exit::NestedPageFault { gpa, access: write });
        // Instruction fetch.
        assert_eq!(no_registers(code::NPF, (1 << 4) | 1, gpa), Exit::NestedPageFault { gpa, access: fetch });
    }

    #[test]
    fn svm_instructions_are_virtualization_instructions_and_failures_unhandled() {
        for c in [code::VMRUN, code::VMLOAD, code::VMSAVE, code::STGI, code::CLGI, code::SKINIT, code::INVLPGA] {
            assert_eq!(no_registers(c, 0, 0), Exit::VirtualizationInstruction, "code {c:#x}");
        }
        assert_eq!(no_registers(code::VMMCALL, 0, 0), Exit::Hypercall);
        assert_eq!(no_registers(code::INVALID, 0, 0), Exit::Unhandled { reason: u32::MAX, qualification: 0 });
        assert_eq!(no_registers(0x6e, 0, 0), Exit::Unhandled { reason: 0x6e, qualification: 0 });
    }

    #[test]
    fn instruction_lengths() {
        assert_eq!(instruction_length(code::CPUID), Some(2));
        assert_eq!(instruction_length(code::MSR), Some(2));
        assert_eq!(instruction_length(code::HLT), Some(1));
        assert_eq!(instruction_length(code::XSETBV), Some(3));
        assert_eq!(instruction_length(code::VMMCALL), Some(3));
        assert_eq!(instruction_length(code::INVD), Some(2));
        assert_eq!(instruction_length(code::WBINVD), Some(2));
        assert_eq!(instruction_length(code::RDPMC), Some(2));
        // Answered with #UD: never skipped.
        assert_eq!(instruction_length(code::MONITOR), None);
        assert_eq!(instruction_length(code::MWAIT), None);
        assert_eq!(instruction_length(code::NPF), None);
        assert_eq!(instruction_length(code::IOIO), None);
    }

    #[test]
    fn next_rips() {
        let rip = 0x1000;
        // IOIO: EXITINFO2, with or without NRIPS.
        let io = control(code::IOIO, (0x3f8 << 16) | (1 << 4), 0x1001);
        assert_eq!(next_rip(&io, rip, false), Some(0x1001));
        assert_eq!(next_rip(&io, rip, true), Some(0x1001));
        // CPUID without NRIPS: the table; with NRIPS: the VMCB's nRIP.
        let mut cpuid = control(code::CPUID, 0, 0);
        assert_eq!(next_rip(&cpuid, rip, false), Some(0x1002));
        cpuid.next_rip = 0x1003;
        assert_eq!(next_rip(&cpuid, rip, true), Some(0x1003));
        assert_eq!(next_rip(&control(code::XSETBV, 0, 0), rip, false), Some(0x1003));
        // Not an exit that is skipped.
        assert_eq!(next_rip(&control(code::NPF, 0, 0), rip, false), None);
        assert_eq!(next_rip(&control(code::NPF, 0, 0), rip, true), None);
    }
}
