//! One vCPU: its VMCB set up from the partition's nested page table and permission maps
//! and from the neutral [`GuestEntry`], run, and its exits handed to an `ExitVisitor` (the rarer ones decoded into an `Exit`).

use crate::enable::{EFER_SVME, Features};
use crate::exit;
use crate::start::{self, CR0_PE, EFER_LMA};
use crate::vmcb::{INTERRUPT_SHADOW, NP_ENABLE, Vmcb, event, intercept, intercept2, tlb_control};
use crate::world_switch::{self, GuestRegisters};
use bulkhead_virt::bitmap::MsrBitmapChoice;
use bulkhead_virt::exit::ExitVisitor;
use bulkhead_virt::guest_state::{ExecutionMode, GuestEntry};

/// What exits: the VT-x backend's set. CPUID, port I/O and MSRs (through the maps),
/// shutdown, NMI (the hypervisor's signal), INIT (so that a stray INIT does not reset the
/// core), XSETBV, VMMCALL and the other SVM instructions, VMRUN's intercept being required
/// (15.5.1); INVD (never run as such: it would drop other partitions' dirty lines), WBINVD
/// (counted and logged), RDPMC (CPUID hides the counters: #GP), MONITOR and MWAIT (CPUID
/// hides them: #UD). Not HLT, not RDTSC/RDTSCP (the TSC offset does that), not external
/// interrupts (V_INTR_MASKING stays clear: the guest owns its local APIC and takes its
/// interrupts through its own IDT), no exceptions, no control registers (SVM fixes no
/// CR0/CR4 bit).
const INTERCEPT_MISC1: u32 = intercept::NMI
    | intercept::INIT
    | intercept::RDPMC
    | intercept::CPUID
    | intercept::INVD
    | intercept::INVLPGA
    | intercept::IOIO_PROT
    | intercept::MSR_PROT
    | intercept::SHUTDOWN;
const INTERCEPT_MISC2: u32 = intercept2::VMRUN
    | intercept2::VMMCALL
    | intercept2::VMLOAD
    | intercept2::VMSAVE
    | intercept2::STGI
    | intercept2::CLGI
    | intercept2::SKINIT
    | intercept2::WBINVD
    | intercept2::MONITOR
    | intercept2::MWAIT
    | intercept2::XSETBV;

/// Why a vCPU could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupError {
    /// The ASID is 0 (the host's) or not below the CPU's number of ASIDs.
    Asid { asid: u32, asids: u32 },
    /// A physical address in [`VcpuSetup`] is not 4 KiB aligned (the hardware ignores its
    /// low 12 bits and would use another page).
    Misaligned { field: &'static str, address: u64 },
}

/// What a vCPU gets from the partition: its address space, identity and intercept maps.
#[derive(Debug, Clone, Copy)]
pub struct VcpuSetup {
    /// Root (PML4) of the partition's nested page table, for N_CR3.
    pub npt_root: u64,
    /// Nonzero ASID below [`Features::asids`], one per partition.
    pub asid: u32,
    /// Physical address of the 12 KiB I/O permissions map ([`crate::IoPermissionMap`]).
    pub iopm: u64,
    /// Physical address of the 8 KiB MSR permissions map ([`crate::MsrPermissionMap`]).
    pub msrpm: u64,
    /// The same map with IA32_TSC_DEADLINE intercepted as well, used while the guest's TSC
    /// is offset (see [`Vcpu::set_tsc_offset`]).
    pub msrpm_tsc_offset: u64,
    /// The map of a vCPU whose local APIC is in xAPIC mode or disabled: no x2APIC register
    /// and no TSC deadline passes through (see [`Vcpu::set_x2apic_passthrough`]).
    pub msrpm_apic_trap: u64,
}

impl VcpuSetup {
    fn check(&self, features: &Features) -> Result<(), SetupError> {
        if self.asid == 0 || self.asid >= features.asids {
            return Err(SetupError::Asid { asid: self.asid, asids: features.asids });
        }
        for (field, address) in [
            ("npt_root", self.npt_root),
            ("iopm", self.iopm),
            ("msrpm", self.msrpm),
            ("msrpm_tsc_offset", self.msrpm_tsc_offset),
            ("msrpm_apic_trap", self.msrpm_apic_trap),
        ] {
            if address % 4096 != 0 {
                return Err(SetupError::Misaligned { field, address });
            }
        }
        Ok(())
    }
}

/// A virtual CPU backed by a VMCB, run on the current core.
pub struct Vcpu {
    vmcb: &'static mut Vmcb,
    /// The host's VMSAVE area: FS/GS/TR/LDTR and the syscall MSRs across VMRUN.
    host: &'static mut Vmcb,
    registers: GuestRegisters,
    features: Features,
    /// The MSR permission maps and which one the VMCB uses.
    msrpm: MsrBitmapChoice,
    /// The TSC just before the last world switch and just after it returned
    /// (`cargo xtask bench --profile`).
    #[cfg(feature = "profile")]
    profile_stamps: (u64, u64),
}

impl Vcpu {
    /// Initialises `vmcb` for a vCPU that starts at `entry`; `host` receives the host's
    /// VMSAVE state around every run.
    ///
    /// # Safety
    /// SVM must be on for this core ([`enable`](crate::enable::enable), whose `Features`
    /// these are); both VMCBs and every page `setup` points to must stay valid and
    /// identity-mapped while the vCPU exists; `host` belongs to this core.
    pub unsafe fn new(
        vmcb: &'static mut Vmcb,
        host: &'static mut Vmcb,
        setup: &VcpuSetup,
        features: &Features,
        entry: &GuestEntry,
    ) -> Result<Self, SetupError> {
        setup.check(features)?;
        *vmcb = Vmcb::zeroed();
        *host = Vmcb::zeroed();
        // SAFETY: SVM is on (the caller's contract) and `host` is this core's host VMCB.
        unsafe { world_switch::save_host(host) };
        let c = &mut vmcb.control;
        c.intercept_cr = 0;
        c.intercept_dr = 0;
        c.intercept_exceptions = 0;
        c.intercept_misc1 = INTERCEPT_MISC1;
        c.intercept_misc2 = INTERCEPT_MISC2;
        c.iopm_base_pa = setup.iopm;
        c.msrpm_base_pa = setup.msrpm_apic_trap; // xAPIC mode at start
        c.tsc_offset = 0;
        c.guest_asid = setup.asid;
        // V_INTR_MASKING clear, no virtual interrupt: physical interrupts are the guest's.
        c.interrupt_control = 0;
        c.nested_control = NP_ENABLE;
        c.nested_cr3 = setup.npt_root;
        // Everything dirty, always (QEMU has no clean bits; 15.15).
        c.clean_bits = 0;
        // Every vCPU starts with its local APIC in xAPIC mode and its TSC not offset.
        let msrpm = MsrBitmapChoice::at_reset(setup.msrpm, setup.msrpm_tsc_offset, setup.msrpm_apic_trap);
        let mut vcpu = Vcpu {
            vmcb,
            host,
            registers: GuestRegisters::default(),
            features: *features,
            msrpm,
            #[cfg(feature = "profile")]
            profile_stamps: (0, 0),
        };
        vcpu.reset(entry);
        Ok(vcpu)
    }

    /// Puts the vCPU in its start state (first start, partition restart, INIT-SIPI), and
    /// flushes the guest's TLB entries at the next VMRUN: this ASID's on a CPU with
    /// FlushByAsid, else the whole TLB (QEMU 7.2 TCG only knows that one).
    pub fn reset(&mut self, entry: &GuestEntry) {
        start::load(&mut self.vmcb.save, entry);
        self.registers =
            GuestRegisters { rax: entry.rax, rbx: entry.rbx, rdi: entry.rdi, rsi: entry.rsi, ..Default::default() };
        let c = &mut self.vmcb.control;
        c.event_injection = 0;
        c.interrupt_state = 0;
        c.tlb_control = if self.features.flush_by_asid { tlb_control::FLUSH_ASID } else { tlb_control::FLUSH_ALL };
        self.set_tsc_offset(0);
    }

    /// The value added to the TSC the guest reads (RDTSC, RDTSCP, RDMSR of IA32_TSC;
    /// 15.30.5).
    pub fn tsc_offset(&self) -> u64 {
        self.vmcb.control.tsc_offset
    }

    /// Sets the guest's TSC offset. While it is nonzero the guest's IA32_TSC_DEADLINE
    /// accesses exit too, so that the kernel converts between the guest's and the
    /// hardware's TSC (the local APIC compares the deadline with the unoffset TSC).
    pub fn set_tsc_offset(&mut self, offset: u64) {
        self.vmcb.control.tsc_offset = offset;
        self.msrpm.tsc_offset = offset != 0;
        self.vmcb.control.msrpm_base_pa = self.msrpm.current();
    }

    /// The guest's general registers. RAX is copied into the VMCB before every run and back
    /// after it, so it can be read and written here like the others.
    #[inline]
    pub fn registers(&mut self) -> &mut GuestRegisters {
        &mut self.registers
    }

    pub fn rip(&self) -> u64 {
        self.vmcb.save.rip
    }

    pub fn guest_cr0(&self) -> u64 {
        self.vmcb.save.cr0
    }

    pub fn guest_cr4(&self) -> u64 {
        self.vmcb.save.cr4
    }

    /// Sets CR0 for an emulated MOV to CR0 the kernel validated, with EFER.LMA as the
    /// processor would leave it. SVM intercepts no CR write, so only for completeness of
    /// the backend interface.
    pub fn set_guest_cr0(&mut self, value: u64, long_mode_active: bool) {
        let save = &mut self.vmcb.save;
        save.cr0 = value;
        save.efer = if long_mode_active { save.efer | EFER_LMA } else { save.efer & !EFER_LMA };
    }

    /// Sets CR4 for an emulated MOV to CR4 the kernel validated.
    pub fn set_guest_cr4(&mut self, value: u64) {
        self.vmcb.save.cr4 = value;
    }

    /// The guest's execution mode and CPL (the VMCB's CPL field; CS attribute bit 9 is L,
    /// APM Vol. 2 15.5.1 and Table B-2).
    #[inline]
    pub fn execution_mode(&self) -> ExecutionMode {
        const ATTRIB_LONG: u16 = 1 << 9;
        let save = &self.vmcb.save;
        ExecutionMode::decode_lazily(save.efer, save.cs.attrib & ATTRIB_LONG != 0, save.cpl, || (save.cr0, save.rflags))
    }

    /// The guest's EFER as the VMCB holds it: EFER.SVME is always set there (VMRUN requires
    /// it, 15.5.1), which is why the kernel intercepts the guest's EFER accesses.
    pub fn guest_efer(&self) -> u64 {
        self.vmcb.save.efer
    }

    /// Sets the guest's EFER for an emulated WRMSR: LMA stays as the processor has it (it
    /// follows CR0.PG), SVME stays set whatever `value` says, so a guest that writes EFER
    /// without SVME does not make the next VMRUN fail. The caller validates `value`
    /// (reserved bits, LME while paging) as WRMSR would.
    pub fn set_guest_efer(&mut self, value: u64) {
        let efer = &mut self.vmcb.save.efer;
        *efer = (value & !EFER_LMA) | (*efer & EFER_LMA) | EFER_SVME;
    }

    /// The VMCB, for diagnostics.
    pub fn vmcb(&self) -> &Vmcb {
        self.vmcb
    }

    /// Moves RIP past the instruction that caused the last exit. Only for the exits the
    /// kernel skips: CPUID, port I/O, RDMSR/WRMSR, XSETBV, HLT, VMMCALL, INVD, WBINVD, RDPMC
    /// ([`exit::next_rip`]); after any other exit RIP stays.
    #[inline]
    pub fn skip_instruction(&mut self) {
        let Some(next) = exit::next_rip(&self.vmcb.control, self.vmcb.save.rip, self.features.nrip_save) else {
            return;
        };
        self.vmcb.save.rip = next;
        // An instruction emulated by the hypervisor ends any STI / MOV SS shadow.
        self.vmcb.control.interrupt_state &= !INTERRUPT_SHADOW;
    }

    /// Moves RIP forward by `length` bytes: past an instruction the kernel decoded and
    /// emulated itself (a nested page fault has no next RIP, 15.7.1).
    pub fn advance_rip(&mut self, length: u64) {
        self.vmcb.save.rip += length;
        self.vmcb.control.interrupt_state &= !INTERRUPT_SHADOW;
    }

    /// The guest's CR3 and CS base (for reading the guest's instruction bytes).
    pub fn guest_cr3_and_cs_base(&self) -> (u64, u64) {
        (self.vmcb.save.cr3, self.vmcb.save.cs.base)
    }

    /// Whether the guest's x2APIC registers may pass through (its local APIC is in x2APIC
    /// mode): switches the VMCB to the matching MSR permission map (the clean bits are
    /// always 0, so the next VMRUN reloads it).
    pub fn set_x2apic_passthrough(&mut self, on: bool) {
        self.msrpm.x2apic_mode = on;
        self.vmcb.control.msrpm_base_pa = self.msrpm.current();
    }

    /// Injects a hardware exception (e.g. #GP with error code 0) at the next VMRUN
    /// (EVENTINJ, 15.20). Real mode pushes no error codes, so none is delivered there.
    /// It replaces an event [`run`](Self::run) queued for re-injection; the kernel injects
    /// only after instruction exits (RDMSR, WRMSR, XSETBV, VMMCALL), which never interrupt
    /// an event delivery.
    pub fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        let protected = self.vmcb.save.cr0 & CR0_PE != 0;
        self.vmcb.control.event_injection = event::exception(vector, error_code.filter(|_| protected));
    }

    /// Runs the guest until it exits and hands the exit to `visitor` (see
    /// [`ExitVisitor`]): CPUID, I/O, MSR and VMMCALL exits straight from the exit code;
    /// every other exit decoded by [`exit::decode`].
    #[inline(always)]
    pub fn run<V: ExitVisitor<Self>>(&mut self, visitor: &mut V) -> V::Output {
        self.vmcb.save.rax = self.registers.rax;
        let guest: *mut Vmcb = self.vmcb;
        let host: *mut Vmcb = self.host;
        #[cfg(feature = "profile")]
        let entry = crate::profile_stamp();
        // SAFETY: `new` set up the VMCB and SVM is on (its contract); both pointers come
        // from this vCPU's exclusive references.
        unsafe { world_switch::vmrun(&mut self.registers, guest, host) };
        #[cfg(feature = "profile")]
        {
            self.profile_stamps = (entry, crate::profile_stamp());
        }
        self.registers.rax = self.vmcb.save.rax;
        let c = &mut self.vmcb.control;
        // The flush requested by `reset` is done.
        c.tlb_control = tlb_control::DO_NOTHING;
        // An event whose delivery the exit interrupted (e.g. a nested page fault while
        // pushing an interrupt frame) was not delivered: inject it again at the next VMRUN
        // (15.7.2). Otherwise the injected event, if any, was delivered.
        c.event_injection = if c.exit_int_info & event::VALID != 0 { c.exit_int_info } else { 0 };
        let (code, info1) = (c.exit_code, c.exit_info1);
        let r = &self.registers;
        match code {
            exit::code::CPUID => {
                let (leaf, subleaf) = (r.rax as u32, r.rcx as u32);
                visitor.cpuid(self, leaf, subleaf)
            }
            exit::code::MSR if info1 == 0 => {
                let msr = r.rcx as u32;
                visitor.msr_read(self, msr)
            }
            exit::code::MSR if info1 == exit::MSR_WRITE => {
                let (msr, value) = (r.rcx as u32, (r.rdx << 32) | (r.rax & 0xffff_ffff));
                visitor.msr_write(self, msr, value)
            }
            exit::code::VMMCALL => visitor.hypercall(self),
            exit::code::IOIO => match exit::io(info1) {
                Some(access) => visitor.io(self, access),
                None => {
                    let exit = exit::decode(&self.vmcb.control, &self.registers);
                    visitor.other(self, exit)
                }
            },
            _ => {
                let exit = exit::decode(&self.vmcb.control, &self.registers);
                visitor.other(self, exit)
            }
        }
    }

    /// The TSC just before the last world switch and just after it returned.
    #[cfg(feature = "profile")]
    pub fn profile_stamps(&self) -> (u64, u64) {
        self.profile_stamps
    }

    /// After an NMI exit (`Exit::Nmi`): lets the host's NMI handler take the NMI, which the exit
    /// left pending ([`world_switch::take_pending_nmi`]). The caller must call it after every NMI
    /// exit, before the next [`run`](Self::run), with its NMI handler ready.
    pub fn take_pending_nmi(&mut self) {
        // SAFETY: SVM is on, the host state is back (`run` returned), and the host runs its
        // vCPU loop with interrupts disabled and its NMI handler installed (the caller's
        // contract).
        unsafe { world_switch::take_pending_nmi() };
    }
}
