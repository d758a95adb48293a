//! AMD SVM on this core: EFER.SVME and the host save area, the partition's NPT and
//! permission maps (built once per partition from the configuration, by the same code as
//! the EPT: `backend/address_space.rs`), and the [`Backend`] over a `bulkhead_svm::vcpu::Vcpu`.

use crate::backend::Backend;
use crate::backend::address_space::{self, BuildOnce, CORE_PAGES, PARTITION_PAGES};
use crate::cpu::percpu;
use crate::log::error;
use crate::partition::Partition;
use bulkhead_svm::enable::Features;
use bulkhead_svm::vcpu::{SetupError, Vcpu, VcpuSetup};
use bulkhead_svm::vmcb::Vmcb;
use bulkhead_svm::{IoPermissionMap, MsrPermissionMap, Page};
use bulkhead_virt::exit::Exit;
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

    #[inline]
    fn vcpu(&mut self) -> &mut Vcpu {
        self.vcpu.as_mut().expect("started before use")
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

impl Backend for SvmCore {
    fn start(&mut self, partition: &'static Partition, entry: &GuestEntry) -> Result<(), ()> {
        if let Some(vcpu) = self.vcpu.as_mut() {
            vcpu.reset(entry);
            return Ok(());
        }
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
        self.vcpu = Some(vcpu);
        Ok(())
    }

    #[cfg(feature = "profile")]
    fn profile_stamps(&mut self) -> (u64, u64) {
        self.vcpu().profile_stamps()
    }

    #[inline]
    fn enter_guest(&mut self) -> Exit {
        let exit = self.vcpu().enter_guest();
        if exit == Exit::Nmi {
            // The exit left the NMI pending: the host handler takes it now, and does not
            // count it a second time (`partition/nmi.rs` counts the exit).
            crate::partition::nmi::drain(|| self.vcpu().take_pending_nmi());
        }
        exit
    }

    fn rip(&mut self) -> u64 {
        self.vcpu().rip()
    }

    #[inline]
    fn registers(&mut self) -> &mut GuestRegisters {
        self.vcpu().registers()
    }

    #[inline]
    fn skip_instruction(&mut self) {
        self.vcpu().skip_instruction()
    }

    #[inline]
    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        self.vcpu().inject_exception(vector, error_code)
    }

    fn advance_rip(&mut self, length: u64) {
        self.vcpu().advance_rip(length)
    }

    fn guest_cr3_and_cs_base(&mut self) -> (u64, u64) {
        self.vcpu().guest_cr3_and_cs_base()
    }

    #[inline]
    fn set_x2apic_passthrough(&mut self, on: bool) {
        self.vcpu().set_x2apic_passthrough(on);
    }

    fn guest_cr0(&mut self) -> u64 {
        self.vcpu().guest_cr0()
    }

    fn guest_cr4(&mut self) -> u64 {
        self.vcpu().guest_cr4()
    }

    fn guest_efer(&mut self) -> u64 {
        self.vcpu().guest_efer() & !bulkhead_svm::enable::EFER_SVME
    }

    fn set_guest_cr0(&mut self, value: u64, long_mode_active: bool) {
        self.vcpu().set_guest_cr0(value, long_mode_active)
    }

    fn set_guest_cr4(&mut self, value: u64) {
        self.vcpu().set_guest_cr4(value)
    }

    fn tsc_offset(&mut self) -> u64 {
        self.vcpu().tsc_offset()
    }

    fn set_tsc_offset(&mut self, offset: u64) {
        self.vcpu().set_tsc_offset(offset)
    }

    fn set_guest_efer(&mut self, value: u64) {
        self.vcpu().set_guest_efer(value)
    }

    #[inline]
    fn execution_mode(&mut self) -> ExecutionMode {
        self.vcpu().execution_mode()
    }

    fn optional_instructions(&mut self) -> OptionalInstructions {
        // Not intercepted: the guest executes them natively where the CPU has them.
        OptionalInstructions { rdtscp: true, invpcid: true, xsaves: true }
    }
}

fn report_setup(partition: &Partition, e: SetupError) {
    error!("partition {=str}: cannot set up the SVM vCPU: {}", partition.name(), crate::log::Debug2Format(&e));
}
