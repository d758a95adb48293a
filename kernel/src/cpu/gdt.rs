//! Per-CPU GDT and TSS. Each CPU needs its own TSS (the busy bit, and its own IST stacks
//! for NMI, #DF and #MC: Intel SDM Vol. 3 6.14.5).

use crate::cpu::percpu::{self, PerCpu};
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::Descriptor;

/// IST slots (0-based, as `TaskStateSegment::interrupt_stack_table` counts them).
pub const IST_NMI: u16 = 0;
pub const IST_DOUBLE_FAULT: u16 = 1;
pub const IST_MACHINE_CHECK: u16 = 2;

/// Selectors of every CPU's GDT (entries appended in this order to an empty table; the
/// TSS descriptor takes two slots).
pub const CODE_SELECTOR: u16 = 0x08;
pub const DATA_SELECTOR: u16 = 0x10;
pub const TSS_SELECTOR: u16 = 0x18;

/// Builds and loads this CPU's GDT and TSS.
pub fn install(cpu: &'static PerCpu) {
    let stacks = percpu::stacks(cpu.index() as usize);
    // SAFETY: we are the CPU that owns `cpu`, setting itself up once.
    let (tss, gdt) = unsafe { cpu.descriptor_tables() };
    tss.interrupt_stack_table[IST_NMI as usize] = VirtAddr::new(stacks.nmi.top());
    tss.interrupt_stack_table[IST_DOUBLE_FAULT as usize] = VirtAddr::new(stacks.double_fault.top());
    tss.interrupt_stack_table[IST_MACHINE_CHECK as usize] = VirtAddr::new(stacks.machine_check.top());
    tss.privilege_stack_table[0] = VirtAddr::new(stacks.kernel.top());
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss_selector = gdt.append(Descriptor::tss_segment(tss));
    debug_assert_eq!((code.0, data.0, tss_selector.0), (CODE_SELECTOR, DATA_SELECTOR, TSS_SELECTOR));
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded, with the right descriptor types.
    unsafe {
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        load_tss(tss_selector);
    }
}
