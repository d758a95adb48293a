//! VT-x on this core: VMXON, the partition's EPT and intercept bitmaps (built once per
//! partition from the configuration), and the [`Backend`] over a `bulkhead_vmx::Vcpu`.

use crate::backend::Backend;
use crate::partition::Partition;
use crate::percpu::{self, MAX_CPUS};
use bulkhead_board::tables::{Access, MAX_PARTITIONS};
use bulkhead_virt::bitmap::{IoPermissions, MsrPermissions};
use bulkhead_virt::exit::Exit;
use bulkhead_virt::guest_state::GuestRegisters;
use bulkhead_virt::guest_state::{GuestEntry, OptionalInstructions};
use bulkhead_virt::slat::{ArrayPool, Attributes, Ept, MemoryType, Slat};
use bulkhead_vmx::Page;
use bulkhead_vmx::vmcs::{HostState, SetupError, Vcpu, VcpuSetup};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};
use defmt::{error, info};
use x86_64::instructions::tables::{sgdt, sidt};

/// EPT tables per partition: PML4 + PDPT + a PD per GiB + PTs for 4 KiB-mapped regions.
const EPT_TABLES: usize = 32;

#[repr(C, align(4096))]
struct PartitionPages {
    ept: [[u64; 512]; EPT_TABLES],
    io_bitmap_a: Page,
    io_bitmap_b: Page,
    msr_bitmap: Page,
}

#[repr(C, align(4096))]
struct CorePages {
    vmxon: Page,
    vmcs: Page,
}

struct Pages<T, const N: usize>(UnsafeCell<[T; N]>);
// SAFETY: each entry is used by one owner: a core's pages by that core, a partition's by
// its boot core while building (then only read by hardware), guarded by `BUILT`.
unsafe impl<T, const N: usize> Sync for Pages<T, N> {}

static PARTITION_PAGES: Pages<PartitionPages, MAX_PARTITIONS> = Pages(UnsafeCell::new(
    [const {
        PartitionPages {
            ept: [[0; 512]; EPT_TABLES],
            io_bitmap_a: Page::zeroed(),
            io_bitmap_b: Page::zeroed(),
            msr_bitmap: Page::zeroed(),
        }
    }; MAX_PARTITIONS],
));
static CORE_PAGES: Pages<CorePages, MAX_CPUS> =
    Pages(UnsafeCell::new([const { CorePages { vmxon: Page::zeroed(), vmcs: Page::zeroed() } }; MAX_CPUS]));

const NOT_BUILT: u8 = 0;
const BUILDING: u8 = 1;
const BUILT: u8 = 2;
const FAILED: u8 = 3;
static STATE: [AtomicU8; MAX_PARTITIONS] = [const { AtomicU8::new(NOT_BUILT) }; MAX_PARTITIONS];
static EPT_ROOT: [core::sync::atomic::AtomicU64; MAX_PARTITIONS] =
    [const { core::sync::atomic::AtomicU64::new(0) }; MAX_PARTITIONS];

fn attributes(access: Access, memory_type: MemoryType) -> Attributes {
    Attributes { read: access.read, write: access.write, execute: access.execute, memory_type }
}

/// Builds the partition's EPT and bitmaps once; every core of the partition uses them.
fn build_partition(partition: &Partition) -> Result<u64, ()> {
    let id = partition.config().id.0 as usize;
    loop {
        match STATE[id].compare_exchange(NOT_BUILT, BUILDING, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => break,
            Err(BUILT) => return Ok(EPT_ROOT[id].load(Ordering::Acquire)),
            Err(FAILED) => return Err(()),
            Err(_) => core::hint::spin_loop(),
        }
    }
    match build_tables(partition, id) {
        Ok(root) => {
            EPT_ROOT[id].store(root, Ordering::Release);
            STATE[id].store(BUILT, Ordering::Release);
            Ok(root)
        }
        Err(()) => {
            STATE[id].store(FAILED, Ordering::Release);
            Err(())
        }
    }
}

/// The partition's EPT and bitmaps; the caller holds the BUILDING state.
fn build_tables(partition: &Partition, id: usize) -> Result<u64, ()> {
    // SAFETY: the caller won the BUILDING state: the only writer of this partition's pages.
    let pages = unsafe { &mut (*PARTITION_PAGES.0.get())[id] };
    let mut pool = ArrayPool::new(&mut pages.ept);
    let mut ept = Slat::<Ept>::new(&mut pool).map_err(|_| ())?;
    let config = partition.config();
    for region in config.memory {
        ept.map(
            &mut pool,
            region.guest_base,
            region.host_base,
            region.size,
            attributes(region.access, MemoryType::WriteBack),
            region.large_pages,
        )
        .map_err(|e| error!("partition {=str}: EPT: {}", partition.name(), defmt::Debug2Format(&e)))?;
    }
    for shared in crate::config::SYSTEM.shared_memory {
        for sharer in shared.sharers.iter().filter(|s| s.partition == config.id) {
            ept.map(
                &mut pool,
                sharer.guest_base,
                shared.host.base,
                shared.host.size,
                attributes(sharer.access, MemoryType::WriteBack),
                false,
            )
            .map_err(|e| error!("partition {=str}: EPT: {}", partition.name(), defmt::Debug2Format(&e)))?;
        }
    }
    let mut io = IoPermissions::new();
    let mut mmio_count = 0;
    for device in config.devices.iter().map(|d| &crate::config::SYSTEM.board.devices[d.0 as usize]) {
        if device.pci.is_some() {
            // A PCI function can master the bus: without DMA remapping it could write any
            // memory. Legacy port/MMIO devices (no bus mastering) are fine.
            error!(
                "partition {=str}: PCI device {=str} needs the IOMMU (VT-d), which Bulkhead does not drive yet; not assigned",
                partition.name(),
                device.name
            );
            return Err(());
        }
        for ports in device.io_ports {
            io.allow(ports.base, ports.count).map_err(|_| ())?;
        }
        for range in device.mmio.iter().chain(device.bars.iter().filter(|b| b.memory).map(|b| &b.range)) {
            let all = Access { read: true, write: true, execute: false };
            ept.map(&mut pool, range.base, range.base, range.size, attributes(all, MemoryType::Uncacheable), false)
                .map_err(|e| error!("partition {=str}: EPT: {}", partition.name(), defmt::Debug2Format(&e)))?;
            mmio_count += 1;
        }
    }
    io.vmx_bitmaps(&mut pages.io_bitmap_a.0, &mut pages.io_bitmap_b.0);
    let mut msrs = MsrPermissions::new();
    for &msr in crate::msr::PASS_THROUGH {
        msrs.allow_read(msr).map_err(|_| ())?;
        msrs.allow_write(msr).map_err(|_| ())?;
    }
    for &msr in crate::msr::READ_ONLY {
        msrs.allow_read(msr).map_err(|_| ())?;
    }
    if crate::smp::x2apic() {
        for msr in crate::msr::X2APIC_READ.chain(core::iter::once(0x6e0)) {
            msrs.allow_read(msr).map_err(|_| ())?;
        }
        for &msr in crate::msr::X2APIC_WRITE {
            msrs.allow_write(msr).map_err(|_| ())?;
        }
    }
    msrs.vmx_bitmap(&mut pages.msr_bitmap.0);
    let root = ept.root();
    info!(
        "partition {=str}: EPT root {=u64:#x}, {=usize} regions, {=usize} device MMIO ranges",
        partition.name(),
        root,
        config.memory.len(),
        mmio_count
    );
    Ok(root)
}

/// The VT-x backend of this core.
pub struct VmxCore {
    vcpu: Option<Vcpu>,
}

impl VmxCore {
    /// Turns VMX on for this core.
    pub fn enable() -> Result<Self, ()> {
        let index = percpu::current_index() as usize;
        // SAFETY: this core's own pages; VMX presence was checked by the caller.
        let pages = unsafe { &mut (*CORE_PAGES.0.get())[index] };
        // SAFETY: as above.
        match unsafe { bulkhead_vmx::vmxon::enable(&mut pages.vmxon) } {
            Ok(()) => Ok(VmxCore { vcpu: None }),
            Err(e) => {
                error!("cpu {=usize}: VMXON failed: {}", index, defmt::Debug2Format(&e));
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
            tr_selector: crate::gdt::TSS_SELECTOR,
            tr_base: percpu::cpu(index).tss_address(),
            cs: crate::gdt::CODE_SELECTOR,
            ds: crate::gdt::DATA_SELECTOR,
        }
    }
}

impl Backend for VmxCore {
    fn start(&mut self, partition: &'static Partition, entry: &GuestEntry) -> Result<(), ()> {
        if let Some(vcpu) = self.vcpu.as_mut() {
            return vcpu.reset(entry).map_err(|e| report_setup(partition, e));
        }
        let root = build_partition(partition)?;
        let id = partition.config().id.0 as usize;
        // SAFETY: the partition's pages are built and from now on only read.
        let pages = unsafe { &(*PARTITION_PAGES.0.get())[id] };
        let setup = VcpuSetup {
            ept_root: root,
            vpid: id as u16 + 1,
            io_bitmap_a: pages.io_bitmap_a.address(),
            io_bitmap_b: pages.io_bitmap_b.address(),
            msr_bitmap: pages.msr_bitmap.address(),
            host: Self::host_state(),
        };
        let index = percpu::current_index() as usize;
        // SAFETY: this core's VMCS page, used by this vCPU only.
        let vmcs = unsafe { &mut (*CORE_PAGES.0.get())[index].vmcs };
        // SAFETY: VMX is on (`enable`), and every page in `setup` is static.
        let vcpu = unsafe { Vcpu::new(vmcs, &setup, entry) }.map_err(|e| report_setup(partition, e))?;
        self.vcpu = Some(vcpu);
        Ok(())
    }

    fn run(&mut self) -> (Exit, u64) {
        let vcpu = self.vcpu.as_mut().expect("started before running");
        let exit = vcpu.run();
        (exit, vcpu.rip())
    }

    fn registers(&mut self) -> &mut GuestRegisters {
        self.vcpu.as_mut().expect("started").registers()
    }

    fn skip_instruction(&mut self) {
        self.vcpu.as_mut().expect("started").skip_instruction()
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        self.vcpu.as_mut().expect("started").inject_exception(vector, error_code)
    }

    fn guest_cr4(&mut self) -> u64 {
        self.vcpu.as_mut().expect("started").guest_cr4()
    }

    fn optional_instructions(&mut self) -> OptionalInstructions {
        self.vcpu.as_mut().expect("started").optional_instructions()
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
