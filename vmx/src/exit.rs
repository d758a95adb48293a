//! The architecture-neutral VM exit: what the guest did, independent of how VT-x or SVM
//! reported it. The kernel decides what each exit means for the partition.

/// Direction and width of a port access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortAccess {
    pub port: u16,
    /// 1, 2 or 4 bytes.
    pub size: u8,
    pub write: bool,
    /// INS/OUTS (string form); the kernel does not emulate those, it faults the partition.
    pub string: bool,
}

/// Kind of access that faulted in the second-level tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccessKind {
    pub read: bool,
    pub write: bool,
    pub execute: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Cpuid {
        leaf: u32,
        subleaf: u32,
    },
    MsrRead {
        msr: u32,
    },
    MsrWrite {
        msr: u32,
        value: u64,
    },
    Io(PortAccess),
    Hlt,
    /// XSETBV with ECX = `xcr` and EDX:EAX = `value`.
    Xsetbv {
        xcr: u32,
        value: u64,
    },
    /// VMCALL / VMMCALL.
    Hypercall,
    /// An access to guest-physical memory the partition has no (such) mapping for.
    NestedPageFault {
        gpa: u64,
        access: AccessKind,
    },
    TripleFault,
    /// A guest exception the backend was asked to intercept.
    Exception {
        vector: u8,
        error_code: Option<u32>,
    },
    /// An NMI arrived while the guest ran (the hypervisor's signal to this core).
    Nmi,
    /// INIT signal to this vCPU (the partition's own AP start-up).
    Init,
    /// Start-up IPI with its vector (start page).
    StartupIpi {
        vector: u8,
    },
    /// Any other hardware exit, by the backend's own reason code.
    Unhandled {
        reason: u32,
        qualification: u64,
    },
}
