//! Starting the application processors with INIT-SIPI-SIPI (Intel SDM Vol. 3 9.4.4.1;
//! MultiProcessor Spec B.4).
//!
//! A start-up IPI starts a CPU in real mode at a page below 1 MiB, so a small real-mode
//! trampoline is copied to a free low page. It only loads the boot GDT and jumps to
//! `ap_start32` in the kernel image (`boot/start.rs`), which enters long mode with the BSP's page
//! tables and calls `ap_entry` (main.rs) on the stack the BSP chose. APs start one at a time, so
//! one set of hand-over variables suffices.

use crate::boot::bootinfo::BootInfo;
use crate::boot::madt::CpuList;
use crate::cpu::percpu::{self, MAX_CPUS};
use crate::cpu::time;
use crate::log::{error, info, warn};
use bulkhead_drivers::lapic::{Ipi, LocalApic};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

core::arch::global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .global ap_trampoline_start
    .global ap_trampoline_end
    .code16
ap_trampoline_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (ap_trampoline_gdtr - ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl ${sel_code32}, $ap_start32
    .balign 8
ap_trampoline_gdtr:
    .word 31
    .long boot_gdt
ap_trampoline_end:
    .code64
    "#,
    sel_code32 = const crate::boot::start::SEL_CODE32,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

// Hand-over to the AP being started, read by boot.rs by name.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
static ap_boot_cr3: AtomicU32 = AtomicU32::new(0);
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
static ap_boot_efer_extra: AtomicU32 = AtomicU32::new(0);
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
static ap_boot_stack: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
static ap_boot_cpu: AtomicU32 = AtomicU32::new(0);

/// Set by the BSP once the board check passed: every core goes to its partition.
static START: AtomicBool = AtomicBool::new(false);

/// Lets every AP proceed to its partition.
pub fn release_aps() {
    START.store(true, Ordering::Release);
}

/// On an AP: waits until the BSP releases the APs ([`release_aps`]).
pub fn wait_for_release() {
    while !START.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
}

/// How long the BSP waits for one AP to report in. An AP on a board reports within
/// microseconds; the margin is for emulators, whose AP is a host thread that a busy host
/// may not schedule for a while (Linux waits as long for its APs).
pub const AP_TIMEOUT_MS: u64 = 10_000;

/// A free page below 1 MiB for the trampoline: usable RAM, not the boot information nor a
/// module, not page 0 (real-mode IVT).
fn trampoline_page(boot: &BootInfo) -> Option<u64> {
    let busy = |start: u64, end: u64| {
        (start < boot.info_end && boot.info_start < end) || boot.modules.iter().any(|m| start < m.end && m.start < end)
    };
    (0x8000..0xa0000)
        .step_by(4096)
        .chain((0x1000..0x8000).step_by(4096))
        .find(|&page| boot.is_usable(page, page + 4096) && !busy(page, page + 4096))
}

/// Outcome of starting the APs.
pub struct SmpReport {
    pub expected: usize,
    pub online: usize,
}

/// Starts every CPU in `cpus` that the compiled board lists, except the BSP; `skip_last`
/// deliberately leaves the last one out (test switch). Returns how many came up. A CPU the
/// board does not list stays in wait-for-SIPI: the per-CPU state is sized for the board's
/// CPUs only (`percpu::MAX_CPUS`), and no partition could run on it.
pub fn start_aps(boot: &BootInfo, bsp_apic: &LocalApic, cpus: &CpuList, cr3: u64, skip_last: bool) -> SmpReport {
    crate::cpu::apic::remember_apic(bsp_apic);
    let bsp_id = bsp_apic.id();
    percpu::cpu(0).set_apic_id(bsp_id);
    let board = crate::config::SYSTEM.board.cpus;
    let aps = cpus.apic_ids.iter().copied().filter(|&id| id != bsp_id && board.iter().any(|c| c.apic_id == id));
    let expected = 1 + aps.clone().count();
    let Some(page) = trampoline_page(boot) else {
        error!("smp: no free page below 1 MiB for the AP trampoline");
        return SmpReport { expected, online: 1 };
    };
    // SAFETY: the trampoline is a static byte range emitted above; the page is free RAM,
    // identity-mapped writable, and nothing else uses it while APs start.
    unsafe {
        let start = &raw const ap_trampoline_start;
        let len = (&raw const ap_trampoline_end) as usize - start as usize;
        core::ptr::copy_nonoverlapping(start, page as *mut u8, len);
    }
    assert!(cr3 < 1 << 32, "AP start-up needs page tables below 4 GiB");
    ap_boot_cr3.store(cr3 as u32, Ordering::Relaxed);
    let nxe = x86_64::registers::model_specific::Efer::read()
        .contains(x86_64::registers::model_specific::EferFlags::NO_EXECUTE_ENABLE);
    ap_boot_efer_extra.store(if nxe { 1 << 11 } else { 0 }, Ordering::Relaxed);

    let mut online = 1;
    let last = expected - 1;
    for (n, apic_id) in aps.enumerate() {
        let index = n + 1;
        if index >= MAX_CPUS {
            warn!("smp: cpu with apic_id {=u32} ignored: this build supports {=usize} cpus", apic_id, MAX_CPUS);
            continue;
        }
        let cpu = percpu::cpu(index);
        cpu.set_apic_id(apic_id);
        if skip_last && index == last {
            warn!("test: not starting cpu {=usize} (apic_id {=u32}) on purpose", index, apic_id);
        } else {
            ap_boot_stack.store(percpu::stacks(index).kernel.top(), Ordering::Relaxed);
            ap_boot_cpu.store(index as u32, Ordering::Release);
            bsp_apic.send(Ipi::init(apic_id));
            time::delay_us(10_000);
            bsp_apic.send(Ipi::startup(apic_id, (page >> 12) as u8));
            if !time::wait_until(1, || cpu.is_online()) {
                bsp_apic.send(Ipi::startup(apic_id, (page >> 12) as u8));
            }
        }
        if time::wait_until(AP_TIMEOUT_MS, || cpu.is_online()) {
            online += 1;
        } else {
            // Put it back into wait-for-SIPI so a late start cannot use the next CPU's stack.
            bsp_apic.send(Ipi::init(apic_id));
            error!(
                "smp: cpu {=usize} (apic_id {=u32}) did not come up within {=u64} ms",
                index, apic_id, AP_TIMEOUT_MS
            );
        }
    }
    info!("smp: {=usize} of {=usize} cpus online", online, expected);
    SmpReport { expected, online }
}
