//! The architecture-neutral VM exit: what the guest did, independent of how VT-x or SVM
//! reported it. The backends produce it; the kernel decides what each exit means for the
//! partition.

/// Direction and width of a port access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortAccess {
    /// The port number.
    pub port: u16,
    /// 1, 2 or 4 bytes.
    pub size: u8,
    /// OUT (true) or IN (false).
    pub write: bool,
    /// INS/OUTS (string form); the kernel does not emulate those, it faults the partition.
    pub string: bool,
}

/// Kind of access that faulted in the second-level tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccessKind {
    /// A data read.
    pub read: bool,
    /// A data write.
    pub write: bool,
    /// An instruction fetch.
    pub execute: bool,
}

/// Why the guest stopped running and the hypervisor got control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// CPUID with EAX = `leaf`, ECX = `subleaf`.
    Cpuid {
        /// EAX.
        leaf: u32,
        /// ECX.
        subleaf: u32,
    },
    /// RDMSR of an intercepted MSR.
    MsrRead {
        /// ECX.
        msr: u32,
    },
    /// WRMSR of an intercepted MSR.
    MsrWrite {
        /// ECX.
        msr: u32,
        /// EDX:EAX.
        value: u64,
    },
    /// IN/OUT to an intercepted port.
    Io(PortAccess),
    /// HLT (when intercepted).
    Hlt,
    /// XSETBV.
    Xsetbv {
        /// ECX.
        xcr: u32,
        /// EDX:EAX.
        value: u64,
    },
    /// VMCALL / VMMCALL.
    Hypercall,
    /// Another instruction of the virtualization extensions (VMX: VMXON, VMLAUNCH, VMREAD,
    /// INVEPT...; SVM: VMRUN, VMLOAD, STGI, INVLPGA...). Partitions cannot nest and CPUID
    /// hides the extensions, so the answer is #UD, as on a CPU without them.
    VirtualizationInstruction,
    /// An access to guest-physical memory the partition has no (such) mapping for.
    NestedPageFault {
        /// The guest-physical address.
        gpa: u64,
        /// What the access tried.
        access: AccessKind,
    },
    /// The guest triple-faulted (shutdown).
    TripleFault,
    /// A guest exception the backend was asked to intercept.
    Exception {
        /// The exception vector.
        vector: u8,
        /// Its error code, for the vectors that have one.
        error_code: Option<u32>,
    },
    /// INVD (VMX exits on it unconditionally; SVM intercepts it). Never executed as such:
    /// it would discard dirty cache lines of other partitions sharing the cache.
    Invd,
    /// WBINVD (or WBNOINVD), intercepted on both backends.
    Wbinvd,
    /// RDPMC with ECX = `counter`, intercepted on both backends.
    Rdpmc {
        /// ECX: the counter index.
        counter: u32,
    },
    /// MONITOR or MONITORX (intercepted; CPUID hides them).
    Monitor,
    /// MWAIT or MWAITX (intercepted; CPUID hides them).
    Mwait,
    /// MOV to a control register whose guest/host mask owns a bit the write changes (VMX:
    /// CR0 and CR4; SVM owns no control register bit).
    CrWrite {
        /// 0 or 4.
        cr: u8,
        /// The value the guest wrote.
        value: u64,
    },
    /// An NMI arrived while the guest ran (the hypervisor's signal to this core).
    Nmi,
    /// INIT signal to this vCPU.
    Init,
    /// Start-up IPI to this vCPU.
    StartupIpi {
        /// The start page number.
        vector: u8,
    },
    /// Any other hardware exit, by the backend's own reason code.
    Unhandled {
        /// The backend's exit reason (VMX basic reason, SVM exit code); `u32::MAX` when
        /// the VM entry itself failed.
        reason: u32,
        /// Exit qualification / EXITINFO, or the VM-instruction error of a failed entry.
        qualification: u64,
    },
}

/// What a backend hands each exit to, by kind, as soon as it has read the exit reason: the
/// hot exits (CPUID, port I/O, MSR access, the hypercall instruction) reach their handler
/// from the reason directly, with no [`Exit`] built and matched a second time; the rest
/// arrive decoded at [`other`](Self::other). `C` is the vCPU the backend passes along so
/// the handler can answer through it. Both backends call it (VT-x `Vcpu::run`, SVM
/// `Vcpu::run`).
pub trait ExitVisitor<C: ?Sized> {
    /// What each exit's handling gives the caller of the backend's `run`.
    type Output;
    /// CPUID with EAX = `leaf`, ECX = `subleaf`.
    fn cpuid(&mut self, vcpu: &mut C, leaf: u32, subleaf: u32) -> Self::Output;
    /// IN/OUT to an intercepted port.
    fn io(&mut self, vcpu: &mut C, access: PortAccess) -> Self::Output;
    /// RDMSR of an intercepted MSR (ECX).
    fn msr_read(&mut self, vcpu: &mut C, msr: u32) -> Self::Output;
    /// WRMSR of an intercepted MSR (ECX) with EDX:EAX.
    fn msr_write(&mut self, vcpu: &mut C, msr: u32, value: u64) -> Self::Output;
    /// VMCALL / VMMCALL.
    fn hypercall(&mut self, vcpu: &mut C) -> Self::Output;
    /// Every other exit.
    fn other(&mut self, vcpu: &mut C, exit: Exit) -> Self::Output;
}
