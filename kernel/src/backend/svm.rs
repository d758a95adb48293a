//! AMD SVM on this core: EFER.SVME and the host save area, the partition's NPT and
//! permission maps (built once per partition from the configuration, by the same code as
//! the EPT: `backend/address_space.rs`), and the [`Backend`] over a `bulkhead_svm::vcpu::Vcpu`.

use crate::backend::address_space::{self, BuildOnce, CORE_PAGES, PARTITION_PAGES};
use crate::backend::{Backend, VirtCore};
use crate::cpu::percpu;
use crate::log::error;
use crate::partition::Partition;
use bulkhead_svm::enable::Features;
use bulkhead_svm::vcpu::{SetupError, Vcpu, VcpuSetup};
use bulkhead_svm::vmcb::Vmcb;
use bulkhead_svm::{IoPermissionMap, MsrPermissionMap, Page};
use bulkhead_virt::exit::{Exit, ExitVisitor, PortAccess};
use bulkhead_virt::guest_state::{ExecutionMode, GuestEntry, GuestRegisters, OptionalInstructions};
use bulkhead_virt::slat::Npt;

/// A partition's SVM pages besides its NPT (which lies in `address_space`'s table pool):
/// one entry of `address_space::PARTITION_PAGES`, shared with VT-x's layout.
#[repr(C, align(4096))]
pub(super) struct PartitionPages {
    iopm: IoPermissionMap,
    msrpm: MsrPermissionMap,
    /// The permission map for vCPUs whose local APIC is not in x2APIC mode.
    msrpm_trap: MsrPermissionMap,
    /// `msrpm` with IA32_TSC_DEADLINE intercepted too (while the TSC is offset).
    msrpm_tsc_offset: MsrPermissionMap,
}

impl PartitionPages {
    pub(super) const ZERO: Self = PartitionPages {
        iopm: IoPermissionMap::zeroed(),
        msrpm: MsrPermissionMap::zeroed(),
        msrpm_trap: MsrPermissionMap::zeroed(),
        msrpm_tsc_offset: MsrPermissionMap::zeroed(),
    };
}

/// A core's SVM pages: one entry of `address_space::CORE_PAGES`.
#[repr(C, align(4096))]
pub(super) struct CorePages {
    host_save: Page,
    guest: Vmcb,
    host: Vmcb,
}

impl CorePages {
    pub(super) const ZERO: Self = CorePages { host_save: Page::zeroed(), guest: Vmcb::zeroed(), host: Vmcb::zeroed() };
}
static BUILT: BuildOnce = BuildOnce::new();

/// Partition `id`'s SVM layout of its entry in the shared `PARTITION_PAGES`.
///
/// # Safety
/// Only one backend runs on a board; the partition's builder (in `BUILT`) is its one
/// writer, and after it the pages are only read.
#[allow(clippy::mut_from_ref)]
unsafe fn partition_pages(id: usize) -> &'static mut PartitionPages {
    // SAFETY: per the caller's promise.
    unsafe { &mut (*PARTITION_PAGES.0.get())[id].svm }
}

/// This core's SVM layout of its entry in the shared `CORE_PAGES`.
///
/// # Safety
/// Only the core `index` itself may call this (its pages have no other user).
unsafe fn core_pages(index: usize) -> &'static mut CorePages {
    // SAFETY: per the caller's promise.
    unsafe { &mut (*CORE_PAGES.0.get())[index].svm }
}

/// Builds the partition's NPT and permission maps once; every core of the partition uses
/// them.
fn build_partition(partition: &Partition) -> Result<u64, ()> {
    BUILT.get(partition, || {
        let id = partition.config().id.0 as usize;
        // SAFETY: `BuildOnce` runs this on one core only: the only writer of these pages.
        let pages = unsafe { partition_pages(id) };
        // SAFETY: as above, for the partition's tables in the pool.
        let (root, io) = address_space::build::<Npt>(partition, unsafe { address_space::slat_tables(id) })?;
        io.svm_iopm(&mut pages.iopm.0);
        // EFER exits: the VMCB's copy must keep SVME, which the partition must not see.
        address_space::msr_permissions(&[bulkhead_virt::msr_map::EFER], true)?.svm_msrpm(&mut pages.msrpm.0);
        address_space::msr_permissions(&[bulkhead_virt::msr_map::EFER], false)?.svm_msrpm(&mut pages.msrpm_trap.0);
        address_space::msr_permissions(&[bulkhead_virt::msr_map::EFER, crate::lapic::access::TSC_DEADLINE], true)?
            .svm_msrpm(&mut pages.msrpm_tsc_offset.0);
        Ok(root)
    })
}

/// RDMSR for the SVM checks (VM_CR), `None` when the MSR is absent (#GP).
fn read_msr(msr: u32) -> Option<u64> {
    // SAFETY: reading an SVM control MSR has no effect; a #GP is recovered.
    unsafe { crate::cpu::fixup::read_msr_safe(msr) }.ok()
}

/// The SVM backend of this core.
pub struct SvmCore {
    features: Features,
    vcpu: Option<Vcpu>,
}

impl SvmCore {
    /// Turns SVM on for this core.
    pub fn enable() -> Result<Self, ()> {
        crate::cpu::capabilities::enable_caches();
        let index = percpu::current_index() as usize;
        // SAFETY: this core's own host save page, used for nothing else; interrupts are off
        // in the hypervisor.
        let result = unsafe { bulkhead_svm::enable::enable(&mut core_pages(index).host_save, read_msr) };
        match result {
            Ok(features) => Ok(SvmCore { features, vcpu: None }),
            Err(e) => {
                error!("cpu {=usize}: cannot turn SVM on: {}", index, crate::log::Debug2Format(&e));
                Err(())
            }
        }
    }

    /// This core runs no guest any more (its partition halted for good): lets the host
    /// take NMIs again. The hypervisor runs with GIF clear, which holds a late NMI (a
    /// containment signal sent just before the core parked) pending for ever; a pending
    /// NMI held that way wakes HLT at once on some CPUs (Bochs), so the idle core would
    /// spin instead of halting.
    pub fn retire(self) {
        // SAFETY: SVM is on (this value exists only after `enable`), RFLAGS.IF is clear in
        // the hypervisor, and the host IDT's NMI handler only returns.
        unsafe { bulkhead_svm::world_switch::stgi() }
    }
}

impl VirtCore for SvmCore {
    type Vcpu = Vcpu;

    fn start(&mut self, partition: &'static Partition, entry: &GuestEntry) -> Result<&mut Vcpu, ()> {
        if let Some(vcpu) = self.vcpu.as_mut() {
            vcpu.reset(entry);
        } else {
            let vcpu = self.new_vcpu(partition, entry)?;
            self.vcpu = Some(vcpu);
        }
        self.vcpu.as_mut().ok_or(())
    }
}

impl SvmCore {
    /// The vCPU of `partition` on this core, set up for its first start at `entry`.
    fn new_vcpu(&mut self, partition: &'static Partition, entry: &GuestEntry) -> Result<Vcpu, ()> {
        let root = build_partition(partition)?;
        let id = partition.config().id.0 as usize;
        // SAFETY: the partition's pages are built and from now on only read.
        let pages = unsafe { partition_pages(id) };
        let setup = VcpuSetup {
            npt_root: root,
            asid: id as u32 + 1,
            iopm: pages.iopm.address(),
            msrpm: pages.msrpm.address(),
            msrpm_tsc_offset: pages.msrpm_tsc_offset.address(),
            msrpm_apic_trap: pages.msrpm_trap.address(),
        };
        let index = percpu::current_index() as usize;
        // SAFETY: this core's VMCBs, used by this vCPU only.
        let core = unsafe { core_pages(index) };
        // SAFETY: SVM is on (`enable`), and every page in `setup` and both VMCBs are static.
        let vcpu = unsafe { Vcpu::new(&mut core.guest, &mut core.host, &setup, &self.features, entry) }
            .map_err(|e| report_setup(partition, e))?;
        Ok(vcpu)
    }
}

/// The exit path's view of a started SVM vCPU: `bulkhead_svm`'s own methods, with the
/// NMI drain after an NMI exit and EFER.SVME hidden.
impl Backend for Vcpu {
    #[cfg(feature = "profile")]
    fn profile_stamps(&mut self) -> (u64, u64) {
        Vcpu::profile_stamps(self)
    }

    #[inline(always)]
    fn run<V: ExitVisitor<Self>>(&mut self, visitor: &mut V) -> V::Output {
        Vcpu::run(self, &mut DrainNmi(visitor))
    }

    fn rip(&mut self) -> u64 {
        Vcpu::rip(self)
    }

    #[inline]
    fn registers(&mut self) -> &mut GuestRegisters {
        Vcpu::registers(self)
    }

    #[inline]
    fn skip_instruction(&mut self) {
        Vcpu::skip_instruction(self)
    }

    #[inline]
    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        Vcpu::inject_exception(self, vector, error_code)
    }

    fn advance_rip(&mut self, length: u64) {
        Vcpu::advance_rip(self, length)
    }

    fn guest_cr3_and_cs_base(&mut self) -> (u64, u64) {
        Vcpu::guest_cr3_and_cs_base(self)
    }

    #[inline]
    fn set_x2apic_passthrough(&mut self, on: bool) {
        Vcpu::set_x2apic_passthrough(self, on);
    }

    fn guest_cr0(&mut self) -> u64 {
        Vcpu::guest_cr0(self)
    }

    fn guest_cr4(&mut self) -> u64 {
        Vcpu::guest_cr4(self)
    }

    fn guest_efer(&mut self) -> u64 {
        Vcpu::guest_efer(self) & !bulkhead_svm::enable::EFER_SVME
    }

    fn set_guest_cr0(&mut self, value: u64, long_mode_active: bool) {
        Vcpu::set_guest_cr0(self, value, long_mode_active)
    }

    fn set_guest_cr4(&mut self, value: u64) {
        Vcpu::set_guest_cr4(self, value)
    }

    fn tsc_offset(&mut self) -> u64 {
        Vcpu::tsc_offset(self)
    }

    fn set_tsc_offset(&mut self, offset: u64) {
        Vcpu::set_tsc_offset(self, offset)
    }

    fn set_guest_efer(&mut self, value: u64) {
        Vcpu::set_guest_efer(self, value)
    }

    #[inline]
    fn execution_mode(&mut self) -> ExecutionMode {
        Vcpu::execution_mode(self)
    }

    fn optional_instructions(&mut self) -> OptionalInstructions {
        // Not intercepted: the guest executes them natively where the CPU has them.
        OptionalInstructions { rdtscp: true, invpcid: true, xsaves: true }
    }
}

/// Passes every exit on to the kernel's visitor; an NMI exit after the host's NMI handler
/// took the NMI the exit left pending (without counting it a second time:
/// `partition/nmi.rs` counts the exit).
struct DrainNmi<'v, V>(&'v mut V);

impl<V: ExitVisitor<Vcpu>> ExitVisitor<Vcpu> for DrainNmi<'_, V> {
    type Output = V::Output;

    #[inline(always)]
    fn cpuid(&mut self, vcpu: &mut Vcpu, leaf: u32, subleaf: u32) -> V::Output {
        self.0.cpuid(vcpu, leaf, subleaf)
    }

    #[inline(always)]
    fn io(&mut self, vcpu: &mut Vcpu, access: PortAccess) -> V::Output {
        self.0.io(vcpu, access)
    }

    #[inline(always)]
    fn msr_read(&mut self, vcpu: &mut Vcpu, msr: u32) -> V::Output {
        self.0.msr_read(vcpu, msr)
    }

    #[inline(always)]
    fn msr_write(&mut self, vcpu: &mut Vcpu, msr: u32, value: u64) -> V::Output {
        self.0.msr_write(vcpu, msr, value)
    }

    #[inline(always)]
    fn hypercall(&mut self, vcpu: &mut Vcpu) -> V::Output {
        self.0.hypercall(vcpu)
    }

    #[inline(always)]
    fn other(&mut self, vcpu: &mut Vcpu, exit: Exit) -> V::Output {
        if exit == Exit::Nmi {
            crate::partition::nmi::drain(|| vcpu.take_pending_nmi());
        }
        self.0.other(vcpu, exit)
    }
}

fn report_setup(partition: &Partition, e: SetupError) {
    error!("partition {=str}: cannot set up the SVM vCPU: {}", partition.name(), crate::log::Debug2Format(&e));
}
