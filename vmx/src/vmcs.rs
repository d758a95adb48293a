//! One vCPU's VMCS: set up from the capability MSRs and the neutral [`GuestEntry`], run,
//! and its exits decoded into [`Exit`] (SDM 24, 25, 27, and Appendix C for exit reasons).

use crate::Page;
use crate::controls::{MissingControl, Want, adjust};
use crate::exit::{self, ExitFields};
use crate::vmxon::{
    IA32_VMX_BASIC, IA32_VMX_CR0_FIXED0, IA32_VMX_CR0_FIXED1, IA32_VMX_CR4_FIXED0, IA32_VMX_CR4_FIXED1, revision_id,
};
use crate::world_switch::{self, GuestRegisters};
use bulkhead_virt::bitmap::MsrBitmapChoice;
use bulkhead_virt::control_registers::{hardware_value, owned_bits};
use bulkhead_virt::exit::{Exit, ExitVisitor};
use bulkhead_virt::guest_state::{
    CODE32_SELECTOR, DATA_SELECTOR, EntryMode, ExecutionMode, GuestEntry, OptionalInstructions,
};
use x86::vmx::vmcs::{control, guest, host, ro};
use x86_64::registers::model_specific::Msr;

const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
const IA32_VMX_EXIT_CTLS: u32 = 0x483;
const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
const IA32_EFER: u32 = 0xc000_0080;
const IA32_PAT: u32 = 0x277;
const IA32_FS_BASE: u32 = 0xc000_0100;
const IA32_GS_BASE: u32 = 0xc000_0101;

// Control bits (SDM 25.6). Names are those the refusal message shows.
const PIN_NMI_EXITING: Want = Want { bit: 1 << 3, name: "NMI exiting" };
/// The guest's TSC reads (RDTSC, RDTSCP, RDMSR IA32_TSC) add the TSC offset, without exits.
const PROC_TSC_OFFSETTING: Want = Want { bit: 1 << 3, name: "use TSC offsetting" };
/// MWAIT and MONITOR exit (CPUID hides them: the kernel answers #UD); RDPMC exits (CPUID
/// hides the counters: #GP).
const PROC_MWAIT_EXITING: Want = Want { bit: 1 << 10, name: "MWAIT exiting" };
const PROC_RDPMC_EXITING: Want = Want { bit: 1 << 11, name: "RDPMC exiting" };
const PROC_MONITOR_EXITING: Want = Want { bit: 1 << 29, name: "MONITOR exiting" };
const PROC_IO_BITMAPS: Want = Want { bit: 1 << 25, name: "use I/O bitmaps" };
const PROC_MSR_BITMAPS: Want = Want { bit: 1 << 28, name: "use MSR bitmaps" };
const PROC_SECONDARY: Want = Want { bit: 1 << 31, name: "activate secondary controls" };
const PROC2_EPT: Want = Want { bit: 1 << 1, name: "enable EPT" };
const PROC2_VPID: Want = Want { bit: 1 << 5, name: "enable VPID" };
const PROC2_UNRESTRICTED: Want = Want { bit: 1 << 7, name: "unrestricted guest" };
const PROC2_RDTSCP: u32 = 1 << 3;
/// WBINVD exits where the CPU can (counted and logged; the kernel executes it). Optional:
/// without it WBINVD runs natively, which has the same effect on the caches.
const PROC2_WBINVD_EXITING: u32 = 1 << 6;
const PROC2_INVPCID: u32 = 1 << 12;
const PROC2_XSAVES: u32 = 1 << 20;
/// Enabled when the CPU allows them; CPUID hides those it does not (see
/// [`Vcpu::optional_instructions`]).
const PROC2_OPTIONAL: u32 = PROC2_RDTSCP | PROC2_INVPCID | PROC2_XSAVES;
const EXIT_HOST_64: Want = Want { bit: 1 << 9, name: "host address-space size" };
const EXIT_SAVE_EFER: Want = Want { bit: 1 << 20, name: "save IA32_EFER" };
const EXIT_LOAD_EFER: Want = Want { bit: 1 << 21, name: "load IA32_EFER" };
// PAT is passed through to the guest, so it must be switched on every entry and exit.
const EXIT_SAVE_PAT: Want = Want { bit: 1 << 18, name: "save IA32_PAT" };
const EXIT_LOAD_PAT: Want = Want { bit: 1 << 19, name: "load IA32_PAT" };
const ENTRY_LOAD_EFER: Want = Want { bit: 1 << 15, name: "load IA32_EFER" };
const ENTRY_LOAD_PAT: Want = Want { bit: 1 << 14, name: "load IA32_PAT" };
const ENTRY_IA32E_GUEST: u32 = 1 << 9;

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_VMXE: u64 = 1 << 13;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Default PAT (SDM 13.12.4): WB, WT, UC-, UC repeated.
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// Access rights (SDM 24.4.1, Table 24-2): type, S, DPL, P, AVL, L, D/B, G; bit 16 = unusable.
const AR_CODE64: u64 = 0xa09b;
const AR_CODE32: u64 = 0xc09b;
const AR_DATA32: u64 = 0xc093;
const AR_CODE16: u64 = 0x009b;
const AR_DATA16: u64 = 0x0093;
const AR_TSS_BUSY: u64 = 0x008b;
const AR_UNUSABLE: u64 = 1 << 16;

/// Why a vCPU could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupError {
    Missing(MissingControl),
    /// A VMX instruction failed with this VM-instruction error number (SDM 31.4).
    Instruction {
        operation: &'static str,
        error: u64,
    },
}

impl From<MissingControl> for SetupError {
    fn from(m: MissingControl) -> Self {
        SetupError::Missing(m)
    }
}

/// The host state to return to on every exit (SDM 24.5): this core's current
/// descriptor tables, segments and control registers.
#[derive(Debug, Clone, Copy)]
pub struct HostState {
    pub cr3: u64,
    pub gdtr_base: u64,
    pub idtr_base: u64,
    pub tr_selector: u16,
    pub tr_base: u64,
    pub cs: u16,
    pub ds: u16,
}

/// What a vCPU gets from the partition: its address space, identity and bitmaps.
#[derive(Debug, Clone, Copy)]
pub struct VcpuSetup {
    /// Root of the EPT (PML4) built for the partition.
    pub ept_root: u64,
    /// Nonzero VPID, one per partition.
    pub vpid: u16,
    pub io_bitmap_a: u64,
    pub io_bitmap_b: u64,
    /// The MSR bitmap of a vCPU whose local APIC is in x2APIC mode (its x2APIC registers
    /// and TSC deadline pass through where the hardware allows).
    pub msr_bitmap: u64,
    /// The same MSR bitmap with IA32_TSC_DEADLINE intercepted as well, used while the
    /// guest's TSC is offset (see [`Vcpu::set_tsc_offset`]).
    pub msr_bitmap_tsc_offset: u64,
    /// The MSR bitmap of a vCPU whose local APIC is in xAPIC mode or disabled: no x2APIC
    /// register and no TSC deadline passes through (see [`Vcpu::set_x2apic_passthrough`]).
    pub msr_bitmap_apic_trap: u64,
    pub host: HostState,
}

/// The CR0/CR4 bits VMX fixes (IA32_VMX_CR0/CR4_FIXED0/1, SDM A.7, A.8) and those of them
/// the hypervisor owns through the guest/host masks.
#[derive(Debug, Clone, Copy, Default)]
struct FixedBits {
    cr0_fixed0: u64,
    cr0_fixed1: u64,
    cr0_owned: u64,
    cr4_fixed0: u64,
    cr4_fixed1: u64,
    cr4_owned: u64,
}

impl FixedBits {
    /// From the capability MSRs; "unrestricted guest" is a required control here, so
    /// CR0.PE and CR0.PG are the guest's.
    fn read() -> Self {
        let (cr0_fixed0, cr0_fixed1) = (rdmsr(IA32_VMX_CR0_FIXED0), rdmsr(IA32_VMX_CR0_FIXED1));
        let (cr4_fixed0, cr4_fixed1) = (rdmsr(IA32_VMX_CR4_FIXED0), rdmsr(IA32_VMX_CR4_FIXED1));
        FixedBits {
            cr0_fixed0,
            cr0_fixed1,
            cr0_owned: owned_bits(cr0_fixed0, cr0_fixed1, true, true),
            cr4_fixed0,
            cr4_fixed1,
            // VMXE always: the guest must see it clear whatever the MSRs say.
            cr4_owned: owned_bits(cr4_fixed0, cr4_fixed1, true, false) | CR4_VMXE,
        }
    }
}

fn rdmsr(msr: u32) -> u64 {
    // SAFETY: VMX capability and architectural MSRs, read after VMX was found present.
    unsafe { Msr::new(msr).read() }
}

fn vmwrite(field: u32, value: u64) -> Result<(), SetupError> {
    // SAFETY: a VMCS is current (the caller loaded it); writing a field has no other effect.
    unsafe { x86::bits64::vmx::vmwrite(field, value) }
        .map_err(|_| SetupError::Instruction { operation: "vmwrite", error: vmread(ro::VM_INSTRUCTION_ERROR) })
}

/// VMREAD of a field of the current VMCS. Unlike the `x86` crate's, it skips the
/// VMfail check (RFLAGS read back through the stack): with a VMCS current, VMREAD of a
/// field this backend's required controls guarantee cannot fail (SDM Vol. 3C §31.3
/// VMREAD), and several run on every exit.
fn vmread(field: u32) -> u64 {
    let value: u64;
    // SAFETY: a VMCS is current; reading a field has no side effects.
    unsafe { core::arch::asm!("vmread {0}, {1}", out(reg) value, in(reg) u64::from(field), options(nostack)) };
    value
}

/// VMWRITE on the exit path: as [`vmread`], without the VMfail check, for fields that
/// exist and values the SDM's checks accept (the guest RIP and interruptibility state).
fn vmwrite_unchecked(field: u32, value: u64) {
    // SAFETY: a VMCS is current; the caller writes a field that exists with a value the
    // next VM entry accepts.
    unsafe { core::arch::asm!("vmwrite {0}, {1}", in(reg) u64::from(field), in(reg) value, options(nostack)) };
}

/// A virtual CPU backed by a VMCS on the current core.
pub struct Vcpu {
    vmcs: &'static mut Page,
    registers: GuestRegisters,
    launched: bool,
    fixed: FixedBits,
    /// The MSR bitmaps and which one the VMCS uses.
    msr_bitmaps: MsrBitmapChoice,
    /// The TSC just before the last world switch and just after it returned
    /// (`cargo xtask bench --profile`).
    #[cfg(feature = "profile")]
    profile_stamps: (u64, u64),
}

impl Vcpu {
    /// Initialises `vmcs` for a vCPU that starts at `entry`, and makes it current.
    ///
    /// # Safety
    /// VMX must be on for this core; the page and every address in `setup` must stay valid
    /// while the vCPU exists.
    pub unsafe fn new(vmcs: &'static mut Page, setup: &VcpuSetup, entry: &GuestEntry) -> Result<Self, SetupError> {
        vmcs.0.fill(0);
        vmcs.0[..4].copy_from_slice(&revision_id().to_le_bytes());
        // SAFETY: a 4 KiB-aligned region with the revision id, owned by this vCPU.
        unsafe {
            x86::bits64::vmx::vmclear(vmcs.address())
                .map_err(|_| SetupError::Instruction { operation: "vmclear", error: 0 })?;
            x86::bits64::vmx::vmptrld(vmcs.address())
                .map_err(|_| SetupError::Instruction { operation: "vmptrld", error: 0 })?;
        }
        let mut vcpu = Vcpu {
            vmcs,
            registers: GuestRegisters::default(),
            launched: false,
            fixed: FixedBits::read(),
            msr_bitmaps: MsrBitmapChoice::at_reset(0, 0, 0),
            #[cfg(feature = "profile")]
            profile_stamps: (0, 0),
        };
        vcpu.write_controls(setup)?;
        vcpu.write_host_state(&setup.host)?;
        vcpu.reset(entry)?;
        Ok(vcpu)
    }

    fn write_controls(&mut self, setup: &VcpuSetup) -> Result<(), SetupError> {
        let true_controls = rdmsr(IA32_VMX_BASIC) & (1 << 55) != 0;
        let msr = |plain, truec| rdmsr(if true_controls { truec } else { plain });
        let pin = adjust(
            "pin-based controls",
            msr(IA32_VMX_PINBASED_CTLS, IA32_VMX_TRUE_PINBASED_CTLS),
            &[PIN_NMI_EXITING],
            0,
        )?;
        let proc = adjust(
            "primary processor-based controls",
            msr(IA32_VMX_PROCBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS),
            &[
                PROC_TSC_OFFSETTING,
                PROC_MWAIT_EXITING,
                PROC_RDPMC_EXITING,
                PROC_MONITOR_EXITING,
                PROC_IO_BITMAPS,
                PROC_MSR_BITMAPS,
                PROC_SECONDARY,
            ],
            0,
        )?;
        let proc2 = adjust(
            "secondary processor-based controls",
            rdmsr(IA32_VMX_PROCBASED_CTLS2),
            &[PROC2_EPT, PROC2_VPID, PROC2_UNRESTRICTED],
            PROC2_OPTIONAL | PROC2_WBINVD_EXITING,
        )?;
        let exit = adjust(
            "VM-exit controls",
            msr(IA32_VMX_EXIT_CTLS, IA32_VMX_TRUE_EXIT_CTLS),
            &[EXIT_HOST_64, EXIT_SAVE_EFER, EXIT_LOAD_EFER, EXIT_SAVE_PAT, EXIT_LOAD_PAT],
            0,
        )?;
        let entry = adjust(
            "VM-entry controls",
            msr(IA32_VMX_ENTRY_CTLS, IA32_VMX_TRUE_ENTRY_CTLS),
            &[ENTRY_LOAD_EFER, ENTRY_LOAD_PAT],
            0,
        )?;
        vmwrite(control::PINBASED_EXEC_CONTROLS, pin.into())?;
        vmwrite(control::PRIMARY_PROCBASED_EXEC_CONTROLS, proc.into())?;
        vmwrite(control::SECONDARY_PROCBASED_EXEC_CONTROLS, proc2.into())?;
        vmwrite(control::VMEXIT_CONTROLS, exit.into())?;
        vmwrite(control::VMENTRY_CONTROLS, entry.into())?;
        vmwrite(control::EXCEPTION_BITMAP, 0)?;
        vmwrite(control::IO_BITMAP_A_ADDR_FULL, setup.io_bitmap_a)?;
        vmwrite(control::IO_BITMAP_B_ADDR_FULL, setup.io_bitmap_b)?;
        // Every vCPU starts with its local APIC in xAPIC mode and its TSC not offset.
        self.msr_bitmaps =
            MsrBitmapChoice::at_reset(setup.msr_bitmap, setup.msr_bitmap_tsc_offset, setup.msr_bitmap_apic_trap);
        vmwrite(control::MSR_BITMAPS_ADDR_FULL, self.msr_bitmaps.current())?;
        // EPTP: WB paging structures, 4-level walk (SDM 25.6.11).
        vmwrite(control::EPTP_FULL, setup.ept_root | 6 | (3 << 3))?;
        vmwrite(control::VPID, setup.vpid.into())?;
        // The CR0/CR4 bits VMX fixes while the guest runs (CR0.NE, CR4.VMXE on every CPU
        // so far) are the hypervisor's; the guest reads its own value from the read shadow
        // and a write changing one exits (`bulkhead_virt::control_registers`). Every other
        // bit is the guest's.
        vmwrite(control::CR0_GUEST_HOST_MASK, self.fixed.cr0_owned)?;
        vmwrite(control::CR4_GUEST_HOST_MASK, self.fixed.cr4_owned)?;
        vmwrite(control::TSC_OFFSET_FULL, 0)?;
        vmwrite(control::CR3_TARGET_COUNT, 0)?;
        vmwrite(control::VMEXIT_MSR_STORE_COUNT, 0)?;
        vmwrite(control::VMEXIT_MSR_LOAD_COUNT, 0)?;
        vmwrite(control::VMENTRY_MSR_LOAD_COUNT, 0)?;
        Ok(())
    }

    fn write_host_state(&mut self, h: &HostState) -> Result<(), SetupError> {
        use x86_64::registers::control::{Cr0, Cr4};
        vmwrite(host::CR0, Cr0::read_raw())?;
        vmwrite(host::CR3, h.cr3)?;
        vmwrite(host::CR4, Cr4::read_raw())?;
        vmwrite(host::CS_SELECTOR, h.cs.into())?;
        for field in [host::SS_SELECTOR, host::DS_SELECTOR, host::ES_SELECTOR] {
            vmwrite(field, h.ds.into())?;
        }
        vmwrite(host::FS_SELECTOR, 0)?;
        vmwrite(host::GS_SELECTOR, 0)?;
        vmwrite(host::TR_SELECTOR, h.tr_selector.into())?;
        vmwrite(host::FS_BASE, rdmsr(IA32_FS_BASE))?;
        vmwrite(host::GS_BASE, rdmsr(IA32_GS_BASE))?;
        vmwrite(host::TR_BASE, h.tr_base)?;
        vmwrite(host::GDTR_BASE, h.gdtr_base)?;
        vmwrite(host::IDTR_BASE, h.idtr_base)?;
        vmwrite(host::IA32_SYSENTER_CS, 0)?;
        vmwrite(host::IA32_SYSENTER_ESP, 0)?;
        vmwrite(host::IA32_SYSENTER_EIP, 0)?;
        vmwrite(host::IA32_EFER_FULL, rdmsr(IA32_EFER))?;
        vmwrite(host::IA32_PAT_FULL, rdmsr(IA32_PAT))?;
        vmwrite(host::RIP, world_switch::exit_handler_address())?;
        Ok(())
    }

    /// After a refused VMRESUME: launches the VMCS if that is why (its first entry since
    /// `new` or `reset`; SDM Vol. 3C 31.4 "VM Instruction Error Numbers": 5, VMRESUME with
    /// non-launched VMCS). Whether the guest was entered.
    #[cold]
    #[inline(never)]
    fn first_entry(&mut self) -> bool {
        const VMRESUME_NON_LAUNCHED: u64 = 5;
        if self.launched || vmread(ro::VM_INSTRUCTION_ERROR) != VMRESUME_NON_LAUNCHED {
            return false;
        }
        // SAFETY: as in `run`; the VMCS is current and clear.
        let entered = unsafe { world_switch::launch(&mut self.registers) };
        self.launched = entered;
        entered
    }

    /// Puts the vCPU in its start state (first start, or a partition restart).
    pub fn reset(&mut self, entry: &GuestEntry) -> Result<(), SetupError> {
        if self.launched {
            // A launched VMCS must be cleared before the next VMLAUNCH (SDM 24.11.3); the
            // guest's cached translations of the previous run go with its VPID.
            // SAFETY: our own VMCS region; it is made current again right after.
            unsafe {
                x86::bits64::vmx::vmclear(self.vmcs.address())
                    .map_err(|_| SetupError::Instruction { operation: "vmclear", error: 0 })?;
                x86::bits64::vmx::vmptrld(self.vmcs.address())
                    .map_err(|_| SetupError::Instruction { operation: "vmptrld", error: 0 })?;
            }
            invvpid_single_context(vmread(control::VPID) as u16);
        }
        self.registers =
            GuestRegisters { rax: entry.rax, rbx: entry.rbx, rdi: entry.rdi, rsi: entry.rsi, ..Default::default() };
        let (cr0, cr4, efer, code, code_ar, data_ar, base) = match entry.mode {
            EntryMode::Real { segment } => {
                (CR0_ET | CR0_NE, 0, 0, segment, AR_CODE16, AR_DATA16, u64::from(segment) << 4)
            }
            EntryMode::Protected32 => (CR0_PE | CR0_ET | CR0_NE, 0, 0, CODE32_SELECTOR, AR_CODE32, AR_DATA32, 0),
            EntryMode::Long64 { selectors, .. } => (
                CR0_PE | CR0_ET | CR0_NE | CR0_WP | CR0_PG,
                CR4_PAE,
                EFER_LME | EFER_LMA,
                selectors.code,
                AR_CODE64,
                AR_DATA32,
                0,
            ),
        };
        let real = matches!(entry.mode, EntryMode::Real { .. });
        let limit = if real { 0xffff } else { 0xffff_ffff };
        // After INIT-SIPI only CS points at the start page; the data segments are
        // selector 0, base 0 (SDM Table 10-1).
        let data = match entry.mode {
            EntryMode::Real { .. } => 0,
            EntryMode::Protected32 => DATA_SELECTOR,
            EntryMode::Long64 { selectors, .. } => selectors.data,
        };
        // Caches on (CD and NW clear), as after a reset that enabled them; the owned bits
        // (NE, VMXE) hold their fixed values, the guest reads its own.
        let f = self.fixed;
        vmwrite(guest::CR0, hardware_value(cr0, f.cr0_fixed0, f.cr0_fixed1, f.cr0_owned))?;
        vmwrite(control::CR0_READ_SHADOW, cr0)?;
        vmwrite(guest::CR3, if let EntryMode::Long64 { cr3, .. } = entry.mode { cr3 } else { 0 })?;
        vmwrite(guest::CR4, hardware_value(cr4, f.cr4_fixed0, f.cr4_fixed1, f.cr4_owned))?;
        vmwrite(control::CR4_READ_SHADOW, cr4)?;
        self.set_tsc_offset(0);
        vmwrite(guest::IA32_EFER_FULL, efer)?;
        vmwrite(guest::IA32_PAT_FULL, PAT_DEFAULT)?;
        vmwrite(guest::CS_SELECTOR, code.into())?;
        vmwrite(guest::CS_BASE, base)?;
        vmwrite(guest::CS_LIMIT, limit)?;
        vmwrite(guest::CS_ACCESS_RIGHTS, code_ar)?;
        for (selector, base_f, limit_f, ar) in [
            (guest::SS_SELECTOR, guest::SS_BASE, guest::SS_LIMIT, guest::SS_ACCESS_RIGHTS),
            (guest::DS_SELECTOR, guest::DS_BASE, guest::DS_LIMIT, guest::DS_ACCESS_RIGHTS),
            (guest::ES_SELECTOR, guest::ES_BASE, guest::ES_LIMIT, guest::ES_ACCESS_RIGHTS),
            (guest::FS_SELECTOR, guest::FS_BASE, guest::FS_LIMIT, guest::FS_ACCESS_RIGHTS),
            (guest::GS_SELECTOR, guest::GS_BASE, guest::GS_LIMIT, guest::GS_ACCESS_RIGHTS),
        ] {
            vmwrite(selector, data.into())?;
            vmwrite(base_f, 0)?;
            vmwrite(limit_f, limit)?;
            vmwrite(ar, data_ar)?;
        }
        vmwrite(guest::LDTR_SELECTOR, 0)?;
        vmwrite(guest::LDTR_BASE, 0)?;
        vmwrite(guest::LDTR_LIMIT, 0)?;
        vmwrite(guest::LDTR_ACCESS_RIGHTS, AR_UNUSABLE)?;
        vmwrite(guest::TR_SELECTOR, 0)?;
        vmwrite(guest::TR_BASE, 0)?;
        vmwrite(guest::TR_LIMIT, 0xffff)?;
        vmwrite(guest::TR_ACCESS_RIGHTS, AR_TSS_BUSY)?;
        let (gdt_base, gdt_limit) = if real { (0, 0xffff) } else { (entry.gdt_base, u64::from(entry.gdt_limit)) };
        vmwrite(guest::GDTR_BASE, gdt_base)?;
        vmwrite(guest::GDTR_LIMIT, gdt_limit)?;
        vmwrite(guest::IDTR_BASE, 0)?;
        vmwrite(guest::IDTR_LIMIT, 0xffff)?;
        vmwrite(guest::DR7, 0x400)?;
        vmwrite(guest::RSP, entry.rsp)?;
        vmwrite(guest::RIP, entry.rip)?;
        vmwrite(guest::RFLAGS, 0x2)?;
        vmwrite(guest::PENDING_DBG_EXCEPTIONS, 0)?;
        vmwrite(guest::IA32_SYSENTER_CS, 0)?;
        vmwrite(guest::IA32_SYSENTER_ESP, 0)?;
        vmwrite(guest::IA32_SYSENTER_EIP, 0)?;
        vmwrite(guest::IA32_DEBUGCTL_FULL, 0)?;
        vmwrite(guest::LINK_PTR_FULL, u64::MAX)?;
        vmwrite(guest::INTERRUPTIBILITY_STATE, 0)?;
        vmwrite(guest::ACTIVITY_STATE, 0)?;
        vmwrite(control::VMENTRY_INTERRUPTION_INFO_FIELD, 0)?;
        let entry_controls = vmread(control::VMENTRY_CONTROLS) as u32 & !ENTRY_IA32E_GUEST;
        let ia32e = if matches!(entry.mode, EntryMode::Long64 { .. }) { ENTRY_IA32E_GUEST } else { 0 };
        vmwrite(control::VMENTRY_CONTROLS, (entry_controls | ia32e).into())?;
        self.launched = false;
        Ok(())
    }

    /// The guest's CR4 as the guest wrote it (CR4.VMXE, which VMX forces on, reads as the
    /// guest's own value through the read shadow).
    pub fn guest_cr4(&self) -> u64 {
        let mask = self.fixed.cr4_owned;
        (vmread(guest::CR4) & !mask) | (vmread(control::CR4_READ_SHADOW) & mask)
    }

    /// Performs a MOV to CR0 the kernel validated: the guest reads `value`, the hardware
    /// holds it with the fixed bits; EFER.LMA and the "IA-32e mode guest" entry control
    /// follow `long_mode_active` (SDM 26.3.1.1: they must agree at the next entry).
    ///
    /// Turning on 32-bit PAE paging here does not load the PDPTE fields: such a write exits
    /// only when it also changes CR0.NE, which no known guest does (docs/platform.md).
    pub fn set_guest_cr0(&mut self, value: u64, long_mode_active: bool) {
        let f = self.fixed;
        vmwrite_unchecked(guest::CR0, hardware_value(value, f.cr0_fixed0, f.cr0_fixed1, f.cr0_owned));
        vmwrite_unchecked(control::CR0_READ_SHADOW, value);
        const LMA: u64 = 1 << 10;
        let efer = vmread(guest::IA32_EFER_FULL);
        vmwrite_unchecked(guest::IA32_EFER_FULL, if long_mode_active { efer | LMA } else { efer & !LMA });
        let entry = vmread(control::VMENTRY_CONTROLS) as u32 & !ENTRY_IA32E_GUEST;
        let ia32e = if long_mode_active { ENTRY_IA32E_GUEST } else { 0 };
        vmwrite_unchecked(control::VMENTRY_CONTROLS, (entry | ia32e).into());
    }

    /// Performs a MOV to CR4 the kernel validated.
    pub fn set_guest_cr4(&mut self, value: u64) {
        let f = self.fixed;
        vmwrite_unchecked(guest::CR4, hardware_value(value, f.cr4_fixed0, f.cr4_fixed1, f.cr4_owned));
        vmwrite_unchecked(control::CR4_READ_SHADOW, value);
    }

    /// The value added to the TSC the guest reads (RDTSC, RDTSCP, RDMSR of IA32_TSC;
    /// SDM 26.6.5 with "use TSC offsetting").
    pub fn tsc_offset(&self) -> u64 {
        vmread(control::TSC_OFFSET_FULL)
    }

    /// Sets the guest's TSC offset. While it is nonzero the guest's IA32_TSC_DEADLINE
    /// accesses exit too, so that the kernel converts between the guest's and the
    /// hardware's TSC (the local APIC compares the deadline with the unoffset TSC).
    pub fn set_tsc_offset(&mut self, offset: u64) {
        vmwrite_unchecked(control::TSC_OFFSET_FULL, offset);
        self.msr_bitmaps.tsc_offset = offset != 0;
        vmwrite_unchecked(control::MSR_BITMAPS_ADDR_FULL, self.msr_bitmaps.current());
    }

    /// The guest's CR0 as the guest sees it: the bits the CR0 guest/host mask owns read
    /// from the read shadow.
    pub fn guest_cr0(&self) -> u64 {
        let mask = vmread(control::CR0_GUEST_HOST_MASK);
        (vmread(guest::CR0) & !mask) | (vmread(control::CR0_READ_SHADOW) & mask)
    }

    /// The guest's EFER (loaded and saved with the VMCS; partitions write it directly).
    pub fn guest_efer(&self) -> u64 {
        vmread(guest::IA32_EFER_FULL)
    }

    /// Sets the guest's EFER, keeping LMA (it follows CR0.PG and the entry control
    /// "IA-32e mode guest", which stays as it is). The caller validates `value`.
    pub fn set_guest_efer(&mut self, value: u64) {
        const LMA: u64 = 1 << 10;
        let efer = (value & !LMA) | (vmread(guest::IA32_EFER_FULL) & LMA);
        // A VMCS field that exists on every CPU this backend runs on: cannot fail.
        let _ = vmwrite(guest::IA32_EFER_FULL, efer);
    }

    /// The guest's execution mode and CPL (SDM Vol. 3 5.5: the CPL is SS.DPL; CS access
    /// rights bit 13 is L).
    #[inline]
    pub fn execution_mode(&self) -> ExecutionMode {
        const AR_DPL_SHIFT: u64 = 5;
        const AR_LONG: u64 = 1 << 13;
        // The processor's mode follows the actual CR0 (the read shadow only changes what
        // the guest reads), so one VMREAD instead of `guest_cr0`'s three, and CR0 and
        // RFLAGS only outside 64-bit mode: this runs on every hypercall.
        let cpl = ((vmread(guest::SS_ACCESS_RIGHTS) >> AR_DPL_SHIFT) & 0b11) as u8;
        let cs_long = vmread(guest::CS_ACCESS_RIGHTS) & AR_LONG != 0;
        ExecutionMode::decode_lazily(self.guest_efer(), cs_long, cpl, || (vmread(guest::CR0), vmread(guest::RFLAGS)))
    }

    /// The optional instructions this vCPU's controls enable.
    pub fn optional_instructions(&self) -> OptionalInstructions {
        let controls = vmread(control::SECONDARY_PROCBASED_EXEC_CONTROLS) as u32;
        OptionalInstructions {
            rdtscp: controls & PROC2_RDTSCP != 0,
            invpcid: controls & PROC2_INVPCID != 0,
            xsaves: controls & PROC2_XSAVES != 0,
        }
    }

    #[inline]
    pub fn registers(&mut self) -> &mut GuestRegisters {
        &mut self.registers
    }

    pub fn rip(&self) -> u64 {
        vmread(guest::RIP)
    }

    /// Moves RIP past the instruction that caused the last exit.
    #[inline]
    pub fn skip_instruction(&mut self) {
        let next = vmread(guest::RIP) + vmread(ro::VMEXIT_INSTRUCTION_LEN);
        vmwrite_unchecked(guest::RIP, next);
        // An instruction emulated by the hypervisor ends any STI / MOV SS blocking.
        let state = vmread(guest::INTERRUPTIBILITY_STATE);
        if state & 0b11 != 0 {
            vmwrite_unchecked(guest::INTERRUPTIBILITY_STATE, state & !0b11);
        }
    }

    /// Moves RIP forward by `length` bytes: past an instruction the kernel decoded and
    /// emulated itself (the VM-exit instruction length is undefined for EPT violations,
    /// SDM 28.2.5).
    pub fn advance_rip(&mut self, length: u64) {
        vmwrite_unchecked(guest::RIP, vmread(guest::RIP) + length);
        let state = vmread(guest::INTERRUPTIBILITY_STATE);
        if state & 0b11 != 0 {
            vmwrite_unchecked(guest::INTERRUPTIBILITY_STATE, state & !0b11);
        }
    }

    /// The guest's CR3 and CS base (for reading the guest's instruction bytes).
    pub fn guest_cr3_and_cs_base(&self) -> (u64, u64) {
        (vmread(guest::CR3), vmread(guest::CS_BASE))
    }

    /// Whether the guest's x2APIC registers may pass through (its local APIC is in x2APIC
    /// mode): switches the VMCS to the matching MSR bitmap.
    pub fn set_x2apic_passthrough(&mut self, on: bool) {
        self.msr_bitmaps.x2apic_mode = on;
        vmwrite_unchecked(control::MSR_BITMAPS_ADDR_FULL, self.msr_bitmaps.current());
    }

    /// Injects a hardware exception (e.g. #GP with error code 0) at the next entry.
    pub fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        const VALID: u64 = 1 << 31;
        const HARDWARE_EXCEPTION: u64 = 3 << 8;
        const DELIVER_ERROR_CODE: u64 = 1 << 11;
        let mut info = VALID | HARDWARE_EXCEPTION | u64::from(vector);
        // Real mode pushes no error codes; delivering one there fails the VM entry
        // (SDM 26.2.1.3).
        let protected = vmread(guest::CR0) & CR0_PE != 0;
        if let (Some(code), true) = (error_code, protected) {
            info |= DELIVER_ERROR_CODE;
            let _ = vmwrite(control::VMENTRY_EXCEPTION_ERR_CODE, code.into());
        }
        let _ = vmwrite(control::VMENTRY_INTERRUPTION_INFO_FIELD, info);
    }

    /// Runs the guest until it exits and hands the exit to `visitor` (see
    /// [`ExitVisitor`]): CPUID, I/O, MSR and VMCALL exits straight from the exit reason,
    /// with only the fields each needs read; every other exit decoded by
    /// [`exit::decode`](crate::exit::decode). A failed VM entry arrives at `other` as
    /// [`Exit::Unhandled`] with reason `u32::MAX` and the VM-instruction error.
    #[inline(always)]
    pub fn run<V: ExitVisitor<Self>>(&mut self, visitor: &mut V) -> V::Output {
        // Every entry but the first after `new` or `reset` resumes; the first VMRESUME is
        // refused (VMfailValid, "VMRESUME with non-launched VMCS") and `first_entry`
        // launches instead, so the launch state costs the exit path nothing.
        #[cfg(feature = "profile")]
        let entry = crate::profile_stamp();
        // SAFETY: `new` set up and loaded the VMCS with HOST_RIP at the exit handler.
        let mut entered = unsafe { world_switch::resume(&mut self.registers) };
        #[cfg(feature = "profile")]
        {
            self.profile_stamps = (entry, crate::profile_stamp());
        }
        if !entered {
            entered = self.first_entry();
        }
        if !entered {
            let failed = Exit::Unhandled { reason: u32::MAX, qualification: vmread(ro::VM_INSTRUCTION_ERROR) };
            return visitor.other(self, failed);
        }
        let reason = vmread(ro::EXIT_REASON) as u32;
        let r = &self.registers;
        match reason & 0xffff {
            exit::reason::CPUID => {
                let (leaf, subleaf) = (r.rax as u32, r.rcx as u32);
                visitor.cpuid(self, leaf, subleaf)
            }
            exit::reason::IO_INSTRUCTION => {
                let access = exit::port_access(vmread(ro::EXIT_QUALIFICATION));
                visitor.io(self, access)
            }
            exit::reason::RDMSR => {
                let msr = r.rcx as u32;
                visitor.msr_read(self, msr)
            }
            exit::reason::WRMSR => {
                let (msr, value) = (r.rcx as u32, (r.rdx << 32) | (r.rax & 0xffff_ffff));
                visitor.msr_write(self, msr, value)
            }
            exit::reason::VMCALL => visitor.hypercall(self),
            _ => {
                let exit = self.decode(reason);
                if exit == Exit::Nmi {
                    world_switch::unblock_nmis();
                }
                visitor.other(self, exit)
            }
        }
    }

    /// The TSC just before the last world switch and just after it returned.
    #[cfg(feature = "profile")]
    pub fn profile_stamps(&self) -> (u64, u64) {
        self.profile_stamps
    }

    /// What the guest did, from the exit reason and the exit-information fields
    /// (`exit::decode`).
    #[inline(always)]
    fn decode(&self, reason: u32) -> Exit {
        crate::exit::decode(reason, &CurrentVmcs, &self.registers)
    }
}

/// The exit-information fields of the current VMCS, each read when the decode asks.
struct CurrentVmcs;

impl ExitFields for CurrentVmcs {
    #[inline(always)]
    fn qualification(&self) -> u64 {
        vmread(ro::EXIT_QUALIFICATION)
    }
    #[inline(always)]
    fn interruption_info(&self) -> u64 {
        vmread(ro::VMEXIT_INTERRUPTION_INFO)
    }
    #[inline(always)]
    fn interruption_error_code(&self) -> u64 {
        vmread(ro::VMEXIT_INTERRUPTION_ERR_CODE)
    }
    #[inline(always)]
    fn guest_physical_address(&self) -> u64 {
        vmread(ro::GUEST_PHYSICAL_ADDR_FULL)
    }
    #[inline(always)]
    fn guest_rsp(&self) -> u64 {
        vmread(guest::RSP)
    }
}

/// INVVPID, single-context (type 1): drops every cached translation tagged with `vpid`
/// (SDM 31.3, INVVPID). The `x86` crate has no wrapper for it.
fn invvpid_single_context(vpid: u16) {
    let descriptor: [u64; 2] = [u64::from(vpid), 0];
    // SAFETY: VMX is on; a valid descriptor for a nonzero VPID; only TLB state changes.
    unsafe { core::arch::asm!("invvpid {0}, [{1}]", in(reg) 1u64, in(reg) &descriptor, options(nostack, readonly)) };
}
