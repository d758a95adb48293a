//! The Bulkhead hypervisor kernel.
//!
//! Boot order on the boot CPU (BSP): console, per-CPU state, descriptor tables, boot
//! information, final page tables, capability report, TSC calibration, local APIC, then
//! every AP through INIT-SIPI-SIPI. Each AP sets up the same per-CPU state and reports in.
#![no_std]
#![no_main]

mod backend;
mod boot;
mod config;
mod console;
mod cpu;
mod devices;
mod exits;
mod hyperv;
mod idt;
mod lapic;
mod log;
mod partition;
#[cfg(feature = "profile")]
mod profile;
mod run_end;
mod supervision;
mod vcpu;
mod xen;

use crate::log::{error, info};
use boot::bootinfo::{self, BootInfo};
use boot::cmdline::{Switches, TestAction};
use boot::{madt, paging, relocate, smp};
use bulkhead_drivers::lapic::LocalApic;
use cpu::{capabilities, gdt, percpu, time};

/// Entry on the BSP from boot.rs, in long mode on CPU 0's stack.
#[unsafe(no_mangle)]
extern "C" fn bsp_entry(magic: u32, boot_info: u32) -> ! {
    percpu::install(0);
    console::init();
    gdt::install(percpu::cpu(0));
    idt::init();
    idt::load();
    info!("bulkhead {=str} starting", env!("CARGO_PKG_VERSION"));

    // SAFETY: magic and address are what GRUB left in EAX and EBX.
    let boot = match unsafe { BootInfo::parse(magic, boot_info) } {
        Ok(boot) => boot,
        Err(e) => {
            error!("boot information unusable: {}", e);
            run_end::fail("not booted by a multiboot2 loader");
        }
    };
    // Whatever GRUB left in partition memory moves to the hypervisor's before use.
    let mut boot = match relocate::boot_info(&boot) {
        // SAFETY: a byte-exact copy of the structure GRUB passed, at a new address.
        Some(moved) => unsafe { BootInfo::parse(magic, moved) }.unwrap_or(boot),
        None => boot,
    };
    relocate::modules(&mut boot);
    let boot = bootinfo::publish(boot);
    let switches = Switches::parse(boot.command_line);
    run_end::set_emulator_exit(switches.emulator_exit);
    boot.log();

    boot::board_check::log_summary();

    let cpu = capabilities::probe();
    cpu.log();
    let cr3 = paging::install(boot, cpu.caps.nx, cpu.caps.page_1gb);
    if cpu.caps.nx {
        let audit = paging::audit(cr3);
        if let Some(address) = audit.first_bad {
            error!(
                "paging: {=u64} writable+executable mappings, first at {=u64:#x}",
                audit.writable_executable, address
            );
            run_end::fail("page tables map memory writable and executable");
        }
        info!("paging: audit ok, {=u64} leaf mappings, none writable+executable", audit.leaves);
    } else {
        crate::log::warn!("paging: the CPU has no NX bit, so all mapped memory is executable");
    }
    time::calibrate();
    // The legacy 8259 PICs belong to no partition: mask every line, so nothing reaches a
    // core through LINT0 in virtual-wire mode (the BIOS leaves the BSP's LINT0 as ExtINT).
    // SAFETY: the PIC data ports; masking all IRQs has no other effect.
    unsafe {
        bulkhead_drivers::port::outb(0x21, 0xff);
        bulkhead_drivers::port::outb(0xa1, 0xff);
    }
    // The IOAPICs likewise: every pin masked until its owner programs it.
    devices::ioapic::init();

    cpu::apic::set_x2apic(cpu.caps.x2apic);
    // SAFETY: the BSP enables its own APIC once; the xAPIC page is identity-mapped.
    let apic = unsafe { LocalApic::enable(cpu.caps.x2apic) };
    info!(
        "cpu 0 online: apic_id={=u32} (boot cpu, {=str})",
        apic.id(),
        if cpu.caps.x2apic { "x2apic" } else { "xapic" }
    );
    percpu::cpu(0).mark_online();
    time::measure_apic_timer(&apic);

    match switches.test {
        Some(TestAction::InvalidOpcode) => {
            info!("test: executing ud2 on purpose");
            // SAFETY: raises #UD, which the exception handler reports; that is the point.
            unsafe { core::arch::asm!("ud2") };
        }
        Some(TestAction::Panic) => panic!("test: panic on purpose"),
        Some(TestAction::Hang) => {
            info!("test: hanging on purpose");
            loop {
                core::hint::spin_loop();
            }
        }
        _ => {}
    }

    let Some(rsdp) = boot.rsdp else {
        run_end::fail("no ACPI RSDP from the bootloader: cannot find the CPUs");
    };
    // SAFETY: the RSDP copy lies in the boot information, identity-mapped.
    let cpus = match unsafe { madt::processors(rsdp) } {
        Ok(cpus) => cpus,
        Err(e) => {
            error!("acpi: {}", e);
            run_end::fail("cannot read the ACPI MADT");
        }
    };
    if cpus.ignored > 0 {
        crate::log::warn!("acpi: {=usize} more cpus than this build supports are ignored", cpus.ignored);
    }
    info!("acpi: MADT lists {=usize} cpus", cpus.apic_ids.len());
    let smp = smp::start_aps(boot, &apic, &cpus, cr3, switches.test == Some(TestAction::SkipAp));
    if smp.online != smp.expected {
        run_end::fail("not every cpu came up");
    }
    if boot::board_check::check_board(boot, &cpus) > 0 {
        run_end::fail("this machine does not match the compiled board");
    }
    devices::pci::init();
    supervision::reset_record::report_at_boot();
    supervision::board_watchdog::arm();
    let backend = if cpu.caps.vmx && cpu.caps.second_level_paging && cpu.caps.unrestricted_guest {
        BackendKind::Vmx
    } else if cpu.caps.svm && cpu.caps.second_level_paging {
        BackendKind::Svm
    } else {
        crate::log::warn!(
            "partitions need VT-x with EPT and unrestricted guest, or AMD SVM with nested paging; this CPU ({=str}) has neither: no partition is started",
            cpu.vendor.name()
        );
        run_end::succeed();
    };
    info!(
        "backend: {=str}{=str}",
        backend.name(),
        if cpu.caps.x2apic { "" } else { " (partitions' x2APIC emulated on the xAPIC)" }
    );
    BACKEND.store(backend as u8, core::sync::atomic::Ordering::Relaxed);
    // DMA remapping on before any partition (and so any assigned function) runs.
    devices::iommu::init();
    // Xen message rings start empty before either end runs.
    crate::xen::ring::init_all();
    smp::release_aps();
    core_main()
}

/// First Rust code on an AP (called from `boot/start.rs` with the index the BSP handed over).
#[unsafe(no_mangle)]
extern "C" fn ap_entry(index: u32) -> ! {
    percpu::install(index as usize);
    let cpu = percpu::current();
    gdt::install(cpu);
    idt::load();
    // SAFETY: each CPU enables its own APIC once; the xAPIC page is identity-mapped.
    let apic = unsafe { LocalApic::enable(cpu::apic::x2apic()) };
    cpu::apic::remember_apic(&apic);
    let apic_id = apic.id();
    if apic_id != cpu.apic_id() {
        crate::log::warn!("cpu {=u32}: MADT said apic_id {=u32}, the APIC says {=u32}", index, cpu.apic_id(), apic_id);
        cpu.set_apic_id(apic_id);
    }
    info!("cpu {=u32} online: apic_id={=u32}", index, apic_id);
    cpu.mark_online();
    smp::wait_for_release();
    core_main()
}

/// The virtualization backend every core uses, chosen once from CPUID.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BackendKind {
    None = 0,
    Vmx = 1,
    Svm = 2,
}

impl BackendKind {
    fn name(self) -> &'static str {
        match self {
            BackendKind::None => "none",
            BackendKind::Vmx => "vmx (Intel VT-x, EPT)",
            BackendKind::Svm => "svm (AMD-V, NPT)",
        }
    }
}

static BACKEND: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(BackendKind::None as u8);

/// Every core after start-up: run the partition configured for it, or idle.
fn core_main() -> ! {
    let cpu = percpu::current();
    let Some((partition, first_core)) = partition::for_apic_id(cpu.apic_id()) else {
        let core = crate::config::SYSTEM.core_map.iter().find(|c| c.apic_id == cpu.apic_id()).map(|c| c.core);
        if core.is_some() && core == crate::config::SYSTEM.hypervisor.monitor_core {
            supervision::monitor::run();
        }
        info!("cpu {=u32}: no partition on this core; idle", cpu.index());
        run_end::halt_forever()
    };
    let boot = bootinfo::get().expect("published before the APs were released");
    capabilities::enable_host_xsave();
    let backend = BACKEND.load(core::sync::atomic::Ordering::Relaxed);
    let started = if backend == BackendKind::Vmx as u8 {
        backend::vmx::VmxCore::enable().map(|mut b| vcpu::core_loop(partition, boot, &mut b, first_core))
    } else if backend == BackendKind::Svm as u8 {
        backend::svm::SvmCore::enable().map(|mut b| {
            vcpu::core_loop(partition, boot, &mut b, first_core);
            b.retire()
        })
    } else {
        run_end::halt_forever()
    };
    if started.is_err() {
        error!(
            "cpu {=u32}: cannot turn virtualization on; partition {=str} not started",
            cpu.index(),
            partition.name()
        );
    }
    run_end::halt_forever()
}
