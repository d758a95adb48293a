//! VT-x on this core: VMXON, the partition's EPT and intercept bitmaps (built once per
//! partition from the configuration), and the [`Backend`] over a `bulkhead_vmx::Vcpu`.

use crate::backend::address_space::{self, BuildOnce, CORE_PAGES, PARTITION_PAGES};
use crate::backend::{Backend, VirtCore};
use crate::cpu::percpu;
use crate::log::error;
use crate::partition::Partition;
use bulkhead_virt::exit::ExitVisitor;
use bulkhead_virt::guest_state::GuestRegisters;
use bulkhead_virt::guest_state::{ExecutionMode, GuestEntry, OptionalInstructions};
use bulkhead_virt::slat::Ept;
use bulkhead_vmx::Page;
use bulkhead_vmx::vmcs::{HostState, SetupError, Vcpu, VcpuSetup};
use x86_64::instructions::tables::{sgdt, sidt};

/// A partition's VT-x pages besides its EPT (which lies in `address_space`'s table pool):
/// one entry of `address_space::PARTITION_PAGES`, shared with SVM's layout.
#[repr(C, align(4096))]
pub(super) struct PartitionPages {
    io_bitmap_a: Page,
    io_bitmap_b: Page,
    msr_bitmap: Page,
    /// The MSR bitmap for vCPUs whose local APIC is not in x2APIC mode: no x2APIC pass-through.
    msr_bitmap_trap: Page,
    /// `msr_bitmap` with IA32_TSC_DEADLINE intercepted too (while the TSC is offset).
    msr_bitmap_tsc_offset: Page,
}

/// A core's VT-x pages: one entry of `address_space::CORE_PAGES`.
#[repr(C, align(4096))]
pub(super) struct CorePages {
    vmxon: Page,
    vmcs: Page,
}

static BUILT: BuildOnce = BuildOnce::new();

/// Partition `id`'s VMX layout of its entry in the shared `PARTITION_PAGES`.
///
/// # Safety
/// Only one backend runs on a board; the partition's builder (in `BUILT`) is its one
/// writer, and after it the pages are only read.
#[allow(clippy::mut_from_ref)]
unsafe fn partition_pages(id: usize) -> &'static mut PartitionPages {
    // SAFETY: per the caller's promise.
    unsafe { &mut (*PARTITION_PAGES.0.get())[id].vmx }
}

/// This core's VMX layout of its entry in the shared `CORE_PAGES`.
///
/// # Safety
/// Only the core `index` itself may call this (its pages have no other user).
unsafe fn core_pages(index: usize) -> &'static mut CorePages {
    // SAFETY: per the caller's promise.
    unsafe { &mut (*CORE_PAGES.0.get())[index].vmx }
}

/// Builds the partition's EPT and bitmaps once; every core of the partition uses them.
fn build_partition(partition: &Partition) -> Result<u64, ()> {
    BUILT.get(partition, || {
        let id = partition.config().id.0 as usize;
        // SAFETY: `BuildOnce` runs this on one core only: the only writer of these pages.
        let pages = unsafe { partition_pages(id) };
        // SAFETY: as above, for the partition's tables in the pool.
        let (root, io) = address_space::build::<Ept>(partition, unsafe { address_space::slat_tables(id) })?;
        io.vmx_bitmaps(&mut pages.io_bitmap_a.0, &mut pages.io_bitmap_b.0);
        address_space::msr_permissions(&[], true)?.vmx_bitmap(&mut pages.msr_bitmap.0);
        address_space::msr_permissions(&[], false)?.vmx_bitmap(&mut pages.msr_bitmap_trap.0);
        address_space::msr_permissions(&[crate::lapic::access::TSC_DEADLINE], true)?
            .vmx_bitmap(&mut pages.msr_bitmap_tsc_offset.0);
        Ok(root)
    })
}

/// The VT-x backend of this core.
pub struct VmxCore {
    vcpu: Option<Vcpu>,
}

impl VmxCore {
    /// Turns VMX on for this core.
    pub fn enable() -> Result<Self, ()> {
        crate::cpu::capabilities::enable_caches();
        let index = percpu::current_index() as usize;
        // SAFETY: this core's own pages; VMX presence was checked by the caller.
        let pages = unsafe { core_pages(index) };
        // SAFETY: as above.
        match unsafe { bulkhead_vmx::vmxon::enable(&mut pages.vmxon) } {
            Ok(()) => Ok(VmxCore { vcpu: None }),
            Err(e) => {
                error!("cpu {=usize}: VMXON failed: {}", index, crate::log::Debug2Format(&e));
                Err(())
            }
        }
    }

    fn host_state() -> HostState {
        let index = percpu::current_index() as usize;
        HostState {
            cr3: x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64(),
            gdtr_base: sgdt().base.as_u64(),
            idtr_base: sidt().base.as_u64(),
            tr_selector: crate::cpu::gdt::TSS_SELECTOR,
            tr_base: percpu::cpu(index).tss_address(),
            cs: crate::cpu::gdt::CODE_SELECTOR,
            ds: crate::cpu::gdt::DATA_SELECTOR,
        }
    }
}

impl VirtCore for VmxCore {
    type Vcpu = Vcpu;

    fn start(&mut self, partition: &'static Partition, entry: &GuestEntry) -> Result<&mut Vcpu, ()> {
        if let Some(vcpu) = self.vcpu.as_mut() {
            vcpu.reset(entry).map_err(|e| report_setup(partition, e))?;
        } else {
            let vcpu = self.new_vcpu(partition, entry)?;
            self.vcpu = Some(vcpu);
        }
        self.vcpu.as_mut().ok_or(())
    }
}

impl VmxCore {
    /// The vCPU of `partition` on this core, set up for its first start at `entry`.
    fn new_vcpu(&mut self, partition: &'static Partition, entry: &GuestEntry) -> Result<Vcpu, ()> {
        let root = build_partition(partition)?;
        let id = partition.config().id.0 as usize;
        // SAFETY: the partition's pages are built and from now on only read.
        let pages = unsafe { partition_pages(id) };
        let setup = VcpuSetup {
            ept_root: root,
            vpid: id as u16 + 1,
            io_bitmap_a: pages.io_bitmap_a.address(),
            io_bitmap_b: pages.io_bitmap_b.address(),
            msr_bitmap: pages.msr_bitmap.address(),
            msr_bitmap_tsc_offset: pages.msr_bitmap_tsc_offset.address(),
            msr_bitmap_apic_trap: pages.msr_bitmap_trap.address(),
            host: Self::host_state(),
        };
        let index = percpu::current_index() as usize;
        // SAFETY: this core's VMCS page, used by this vCPU only.
        let vmcs = unsafe { &mut core_pages(index).vmcs };
        // SAFETY: VMX is on (`enable`), and every page in `setup` is static.
        let vcpu = unsafe { Vcpu::new(vmcs, &setup, entry) }.map_err(|e| report_setup(partition, e))?;
        Ok(vcpu)
    }
}

/// The exit path's view of a started VT-x vCPU: `bulkhead_vmx`'s own methods.
impl Backend for Vcpu {
    #[inline(always)]
    fn run<V: ExitVisitor<Self>>(&mut self, visitor: &mut V) -> V::Output {
        Vcpu::run(self, visitor)
    }

    #[cfg(feature = "profile")]
    fn profile_stamps(&mut self) -> (u64, u64) {
        Vcpu::profile_stamps(self)
    }

    fn rip(&mut self) -> u64 {
        Vcpu::rip(self)
    }

    #[inline(always)]
    fn registers(&mut self) -> &mut GuestRegisters {
        Vcpu::registers(self)
    }

    #[inline(always)]
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

    #[inline]
    fn guest_cr4(&mut self) -> u64 {
        Vcpu::guest_cr4(self)
    }

    fn guest_efer(&mut self) -> u64 {
        Vcpu::guest_efer(self)
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
        Vcpu::optional_instructions(self)
    }
}

fn report_setup(partition: &Partition, e: SetupError) {
    match e {
        SetupError::Missing(bulkhead_vmx::controls::MissingControl::Required { field, control }) => error!(
            "partition {=str}: this CPU cannot run partitions: VMX {=str} lack \"{=str}\"",
            partition.name(),
            field,
            control
        ),
        SetupError::Instruction { operation, error } => {
            error!("partition {=str}: {=str} failed, VM-instruction error {=u64}", partition.name(), operation, error)
        }
    }
}
