//! VM-exit decoding: the basic exit reason and the exit-information fields of the VMCS
//! turned into the neutral [`Exit`] (SDM Vol. 3C Appendix C for the reasons, 28.2.1 and
//! Table 28-1 to 28-5 for the qualifications, 25.9.2 for the interruption information).
//!
//! A pure function of the reason, the guest registers and the fields it asks for through
//! [`ExitFields`], so the host tests cover every reason. The VMCS implements `ExitFields`
//! with VMREAD, and each field is read only by the exits that use it (a CPUID, MSR or
//! hypercall exit reads no field at all).

use bulkhead_virt::exit::{AccessKind, Exit, PortAccess};
use bulkhead_virt::guest_state::GuestRegisters;

/// Basic exit reasons (SDM Vol. 3C Table C-1), the ones this backend names.
pub mod reason {
    pub const EXCEPTION_OR_NMI: u32 = 0;
    pub const TRIPLE_FAULT: u32 = 2;
    pub const INIT: u32 = 3;
    pub const STARTUP_IPI: u32 = 4;
    pub const CPUID: u32 = 10;
    pub const HLT: u32 = 12;
    pub const INVD: u32 = 13;
    pub const RDPMC: u32 = 15;
    pub const VMCALL: u32 = 18;
    /// VMCLEAR, VMLAUNCH, VMPTRLD, VMPTRST, VMREAD, VMRESUME, VMWRITE, VMXOFF, VMXON.
    pub const VMCLEAR_TO_VMXON: core::ops::RangeInclusive<u32> = 19..=27;
    pub const CONTROL_REGISTER_ACCESS: u32 = 28;
    pub const IO_INSTRUCTION: u32 = 30;
    pub const RDMSR: u32 = 31;
    pub const WRMSR: u32 = 32;
    pub const MWAIT: u32 = 36;
    pub const MONITOR: u32 = 39;
    pub const EPT_VIOLATION: u32 = 48;
    pub const INVEPT: u32 = 50;
    pub const INVVPID: u32 = 53;
    pub const WBINVD: u32 = 54;
    pub const XSETBV: u32 = 55;
    pub const VMFUNC: u32 = 59;
}

/// The exit-information fields a decode may read besides the exit reason.
pub trait ExitFields {
    /// Exit qualification.
    fn qualification(&self) -> u64;
    /// VM-exit interruption information.
    fn interruption_info(&self) -> u64;
    /// VM-exit interruption error code.
    fn interruption_error_code(&self) -> u64;
    /// Guest-physical address (EPT violations).
    fn guest_physical_address(&self) -> u64;
    /// The guest's RSP, which the VMCS holds (the other registers are in `GuestRegisters`).
    fn guest_rsp(&self) -> u64;
}

/// The exit with the full exit reason `exit_reason` (basic reason in bits 15:0), the guest
/// registers at the exit, and the fields `fields` gives when asked.
#[inline(always)]
pub fn decode<F: ExitFields>(exit_reason: u32, fields: &F, r: &GuestRegisters) -> Exit {
    match exit_reason & 0xffff {
        reason::EXCEPTION_OR_NMI => {
            let info = fields.interruption_info();
            let vector = info as u8;
            // Interruption type 2: NMI (Table 25-19).
            if (info >> 8) & 7 == 2 {
                Exit::Nmi
            } else {
                let error_code = (info & (1 << 11) != 0).then(|| fields.interruption_error_code() as u32);
                Exit::Exception { vector, error_code }
            }
        }
        reason::TRIPLE_FAULT => Exit::TripleFault,
        reason::INIT => Exit::Init,
        reason::STARTUP_IPI => Exit::StartupIpi { vector: fields.qualification() as u8 },
        reason::CPUID => Exit::Cpuid { leaf: r.rax as u32, subleaf: r.rcx as u32 },
        reason::HLT => Exit::Hlt,
        reason::INVD => Exit::Invd,
        reason::RDPMC => Exit::Rdpmc { counter: r.rcx as u32 },
        reason::VMCALL => Exit::Hypercall,
        19..=27 | reason::INVEPT | reason::INVVPID | reason::VMFUNC => Exit::VirtualizationInstruction,
        reason::CONTROL_REGISTER_ACCESS => control_register_access(fields.qualification(), r, || fields.guest_rsp()),
        reason::MWAIT => Exit::Mwait,
        reason::MONITOR => Exit::Monitor,
        reason::WBINVD => Exit::Wbinvd,
        reason::IO_INSTRUCTION => Exit::Io(port_access(fields.qualification())),
        reason::RDMSR => Exit::MsrRead { msr: r.rcx as u32 },
        reason::WRMSR => Exit::MsrWrite { msr: r.rcx as u32, value: (r.rdx << 32) | (r.rax & 0xffff_ffff) },
        reason::EPT_VIOLATION => {
            // Table 28-7: bits 0-2 say whether the access was a read, a write, a fetch.
            let qualification = fields.qualification();
            Exit::NestedPageFault {
                gpa: fields.guest_physical_address(),
                access: AccessKind {
                    read: qualification & 1 != 0,
                    write: qualification & 2 != 0,
                    execute: qualification & 4 != 0,
                },
            }
        }
        reason::XSETBV => Exit::Xsetbv { xcr: r.rcx as u32, value: (r.rdx << 32) | (r.rax & 0xffff_ffff) },
        _ => Exit::Unhandled { reason: exit_reason, qualification: fields.qualification() },
    }
}

/// The port access an I/O-instruction exit's qualification describes (SDM Table 28-5:
/// size - 1 in bits 2:0, direction (1 = IN) bit 3, string bit 4, port in bits 31:16).
#[inline(always)]
pub fn port_access(qualification: u64) -> PortAccess {
    PortAccess {
        port: (qualification >> 16) as u16,
        size: (qualification & 7) as u8 + 1,
        write: qualification & (1 << 3) == 0,
        string: qualification & (1 << 4) != 0,
    }
}

/// A control-register access exit (basic reason 28; qualification: SDM Table 28-3): a
/// MOV to CR0 or CR4 becomes [`Exit::CrWrite`] with the source register's value (RSP is
/// read from the VMCS only when it is the source); every other access, which the masks
/// never make exit, is reported as unhandled.
fn control_register_access(qualification: u64, r: &GuestRegisters, rsp: impl Fn() -> u64) -> Exit {
    let cr = (qualification & 0xf) as u8;
    let access_type = (qualification >> 4) & 0b11;
    let value = match (qualification >> 8) & 0xf {
        0 => r.rax,
        1 => r.rcx,
        2 => r.rdx,
        3 => r.rbx,
        4 => rsp(),
        5 => r.rbp,
        6 => r.rsi,
        7 => r.rdi,
        8 => r.r8,
        9 => r.r9,
        10 => r.r10,
        11 => r.r11,
        12 => r.r12,
        13 => r.r13,
        14 => r.r14,
        _ => r.r15,
    };
    match (cr, access_type) {
        (0 | 4, 0) => Exit::CrWrite { cr, value },
        _ => Exit::Unhandled { reason: reason::CONTROL_REGISTER_ACCESS, qualification },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    /// Exit-information fields with fixed values, counting which were read.
    #[derive(Default)]
    struct Fields {
        qualification: u64,
        interruption_info: u64,
        error_code: u64,
        gpa: u64,
        rsp: u64,
        reads: Cell<u32>,
    }

    impl Fields {
        fn read(&self, value: u64) -> u64 {
            self.reads.set(self.reads.get() + 1);
            value
        }
    }

    impl ExitFields for Fields {
        fn qualification(&self) -> u64 {
            self.read(self.qualification)
        }
        fn interruption_info(&self) -> u64 {
            self.read(self.interruption_info)
        }
        fn interruption_error_code(&self) -> u64 {
            self.read(self.error_code)
        }
        fn guest_physical_address(&self) -> u64 {
            self.read(self.gpa)
        }
        fn guest_rsp(&self) -> u64 {
            self.read(self.rsp)
        }
    }

    fn registers() -> GuestRegisters {
        GuestRegisters { rax: 0x1_0000_0004, rcx: 0x2_0000_0007, rdx: 0x89ab_cdef, ..Default::default() }
    }

    fn decode_with(exit_reason: u32, fields: &Fields) -> Exit {
        decode(exit_reason, fields, &registers())
    }

    #[test]
    fn register_exits_read_no_field() {
        let f = Fields::default();
        assert_eq!(decode_with(reason::CPUID, &f), Exit::Cpuid { leaf: 4, subleaf: 7 });
        assert_eq!(decode_with(reason::RDMSR, &f), Exit::MsrRead { msr: 7 });
        assert_eq!(decode_with(reason::WRMSR, &f), Exit::MsrWrite { msr: 7, value: 0x89ab_cdef_0000_0004 });
        assert_eq!(decode_with(reason::XSETBV, &f), Exit::Xsetbv { xcr: 7, value: 0x89ab_cdef_0000_0004 });
        assert_eq!(decode_with(reason::RDPMC, &f), Exit::Rdpmc { counter: 7 });
        assert_eq!(decode_with(reason::VMCALL, &f), Exit::Hypercall);
        assert_eq!(f.reads.get(), 0);
    }

    #[test]
    fn exits_without_operands() {
        let f = Fields::default();
        assert_eq!(decode_with(reason::TRIPLE_FAULT, &f), Exit::TripleFault);
        assert_eq!(decode_with(reason::INIT, &f), Exit::Init);
        assert_eq!(decode_with(reason::HLT, &f), Exit::Hlt);
        assert_eq!(decode_with(reason::INVD, &f), Exit::Invd);
        assert_eq!(decode_with(reason::WBINVD, &f), Exit::Wbinvd);
        assert_eq!(decode_with(reason::MWAIT, &f), Exit::Mwait);
        assert_eq!(decode_with(reason::MONITOR, &f), Exit::Monitor);
        assert_eq!(f.reads.get(), 0);
    }

    #[test]
    fn virtualization_instructions() {
        for reason in reason::VMCLEAR_TO_VMXON.chain([reason::INVEPT, reason::INVVPID, reason::VMFUNC]) {
            assert_eq!(decode_with(reason, &Fields::default()), Exit::VirtualizationInstruction, "{reason}");
        }
    }

    #[test]
    fn nmi_and_exceptions_from_the_interruption_information() {
        // Valid, type 2 (NMI), vector 2.
        let nmi = Fields { interruption_info: 0x8000_0202, ..Default::default() };
        assert_eq!(decode_with(reason::EXCEPTION_OR_NMI, &nmi), Exit::Nmi);
        // #GP (type 3, vector 13) with an error code (bit 11).
        let gp = Fields { interruption_info: 0x8000_0b0d, error_code: 0x18, ..Default::default() };
        assert_eq!(decode_with(reason::EXCEPTION_OR_NMI, &gp), Exit::Exception { vector: 13, error_code: Some(0x18) });
        // #UD (vector 6) without one: the error code field is not read.
        let ud = Fields { interruption_info: 0x8000_0306, ..Default::default() };
        assert_eq!(decode_with(reason::EXCEPTION_OR_NMI, &ud), Exit::Exception { vector: 6, error_code: None });
        assert_eq!(ud.reads.get(), 1);
    }

    #[test]
    fn startup_ipi_vector_from_the_qualification() {
        let f = Fields { qualification: 0x9a, ..Default::default() };
        assert_eq!(decode_with(reason::STARTUP_IPI, &f), Exit::StartupIpi { vector: 0x9a });
    }

    #[test]
    fn port_io_from_the_qualification() {
        // OUT DX, AL to 0x3f8: size 1, direction out.
        let out = Fields { qualification: 0x03f8_0000, ..Default::default() };
        let access = PortAccess { port: 0x3f8, size: 1, write: true, string: false };
        assert_eq!(decode_with(reason::IO_INSTRUCTION, &out), Exit::Io(access));
        // IN EAX, DX from 0xcfc: size 4, direction in.
        let input = Fields { qualification: 0x0cfc_000b, ..Default::default() };
        let access = PortAccess { port: 0xcfc, size: 4, write: false, string: false };
        assert_eq!(decode_with(reason::IO_INSTRUCTION, &input), Exit::Io(access));
        // OUTSW to 0x80: string.
        let string = Fields { qualification: 0x0080_0011, ..Default::default() };
        let access = PortAccess { port: 0x80, size: 2, write: true, string: true };
        assert_eq!(decode_with(reason::IO_INSTRUCTION, &string), Exit::Io(access));
    }

    #[test]
    fn ept_violation_address_and_access() {
        let write = Fields { qualification: 0b010, gpa: 0xfee0_0300, ..Default::default() };
        let access = AccessKind { read: false, write: true, execute: false };
        assert_eq!(decode_with(reason::EPT_VIOLATION, &write), Exit::NestedPageFault { gpa: 0xfee0_0300, access });
        let fetch = Fields { qualification: 0b101, gpa: 0x1000, ..Default::default() };
        let access = AccessKind { read: true, write: false, execute: true };
        assert_eq!(decode_with(reason::EPT_VIOLATION, &fetch), Exit::NestedPageFault { gpa: 0x1000, access });
    }

    #[test]
    fn control_register_writes() {
        let r = GuestRegisters { rax: 0x11, rcx: 0x22, r15: 0x33, ..Default::default() };
        // MOV CR0, RAX: CR 0, type 0, register 0.
        assert_eq!(control_register_access(0x000, &r, || 0), Exit::CrWrite { cr: 0, value: 0x11 });
        // MOV CR4, RCX.
        assert_eq!(control_register_access(0x104, &r, || 0), Exit::CrWrite { cr: 4, value: 0x22 });
        // MOV CR4, R15; MOV CR0, RSP (read from the VMCS).
        assert_eq!(control_register_access(0xf04, &r, || 0), Exit::CrWrite { cr: 4, value: 0x33 });
        assert_eq!(control_register_access(0x400, &r, || 0x44), Exit::CrWrite { cr: 0, value: 0x44 });
        // MOV from CR4 (type 1), CLTS (type 2), MOV to CR3: not a write of an owned bit.
        assert_eq!(control_register_access(0x14, &r, || 0), Exit::Unhandled { reason: 28, qualification: 0x14 });
        assert_eq!(control_register_access(0x20, &r, || 0), Exit::Unhandled { reason: 28, qualification: 0x20 });
        assert_eq!(control_register_access(0x03, &r, || 0), Exit::Unhandled { reason: 28, qualification: 0x03 });
        // Through decode: RSP comes from the fields.
        let f = Fields { qualification: 0x400, rsp: 0x7000, ..Default::default() };
        assert_eq!(decode_with(reason::CONTROL_REGISTER_ACCESS, &f), Exit::CrWrite { cr: 0, value: 0x7000 });
    }

    #[test]
    fn other_reasons_are_unhandled_with_the_full_reason() {
        // External interrupt (1), with bit 31 (entry failure) kept in the reported reason.
        let f = Fields { qualification: 0x55, ..Default::default() };
        assert_eq!(decode_with(1, &f), Exit::Unhandled { reason: 1, qualification: 0x55 });
        assert_eq!(decode_with(0x8000_0021, &f), Exit::Unhandled { reason: 0x8000_0021, qualification: 0x55 });
    }
}
