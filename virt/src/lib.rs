//! Architecture-neutral virtualization logic shared by the VT-x backend (`vmx/`), the AMD-V
//! backend (`svm/`) and the kernel.
//!
//! Everything here is plain `no_std` code without heap and without `unsafe`: it computes
//! tables and bytes, and leaves touching hardware to its callers. That keeps the parts that
//! are easy to get subtly wrong (entry encodings, bitmap bit positions, loader bounds checks)
//! testable on the host with `cargo test -p bulkhead-virt`.
//!
//! | module | what it does |
//! |---|---|
//! | [`memory`] | the [`GuestMemory`](memory::GuestMemory) access trait and [`RegionMemory`](memory::RegionMemory) over byte slices |
//! | [`slat`] | second-level address translation tables: one builder, two encodings ([`Ept`](slat::Ept), [`Npt`](slat::Npt)) |
//! | [`elf`] | ELF64 / ELF32 payload loading, multiboot1 header discovery |
//! | [`bzimage`] | the Linux boot protocol: setup header checks, kernel/initrd/zero-page layout, the e820 map, the zero page |
//! | [`multiboot1`] | the multiboot1 information structure handed to guests in EBX |
//! | [`guest_paging`] | identity-mapping long-mode page tables and a flat GDT for guests |
//! | [`guest_walk`] | guest-linear to guest-physical through the guest's own page tables |
//! | [`ipi`] | which IPIs a partition's ICR write may send, and to whom |
//! | [`pages`] | page-aligned buffers the hardware reads by physical address |
//! | [`control_registers`] | which CR0/CR4 bits the hypervisor owns, and MOV to CR0/CR4 (and an intercepted EFER write) answered as the processor would |
//! | [`cpuid`] | the CPUID features hidden from partitions (their MSRs or instructions are refused) |
//! | [`tsc`] | a guest's TSC deadline between its offset TSC and the hardware's |
//! | [`bitmap`] | I/O and MSR intercept bitmaps for VMX and SVM, from "what the guest may access" |
//! | [`msr_map`] | the MSRs a partition reads or writes without an exit |
//! | [`apic_base`] | IA32_APIC_BASE of a partition's local APIC: its mode state machine |
//! | [`ioapic`] | a partition's view of an IOAPIC: its own pins' redirection entries checked and retargeted, other pins masked |
//! | [`mmio_decode`] | decoding the MOV that touched an emulated MMIO page (the xAPIC page) |
//! | [`x2apic`] | the x2APIC register map: which registers exist, may be read or written, and with which bits |
//! | [`hyperv_clock`] | the partition reference time as the reference TSC page expresses it (with a vCPU's TSC offset), measured frequencies |
//! | [`crash_text`] | a guest's crash message as cleaned, bounded log lines |
//! | [`hyperv_msr`] | which values a partition may write to the Hyper-V synthetic MSRs (reserved bits) |
//! | [`console_rate`] | the rate limit on a partition's console lines |
//! | [`xcr0`] | which XCR0 values a partition may set with XSETBV |
//! | [`pci_config`] | a partition's view of the configuration space of a PCI function it owns: BARs, command, capabilities, MSI checked and retargeted |
//! | [`profile`] | the exit profile of `cargo xtask bench --profile`: per-exit phase sums, the longest run per kind of exit |
//! | [`msix`] | an assigned function's MSI-X table as its owner sees it: entries shadowed, messages checked and retargeted |
//! | [`vtd_slat`] | VT-d second-level page-table entries: a DMA domain built with the [`slat`] builder |
//! | [`acpi`] | the ACPI tables (RSDP, XSDT, FADT, DSDT, MADT, MCFG) describing a partition's virtual platform |
//!
//! No function in this crate panics on any input; the parsers have randomized tests that
//! feed them arbitrary and mutated bytes.

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod acpi;
pub mod apic_base;
pub mod bitmap;
pub mod bzimage;
pub mod console_rate;
pub mod control_registers;
pub mod cpuid;
pub mod crash_text;
pub mod elf;
pub mod exit;
pub mod guest_paging;
pub mod guest_state;
pub mod guest_walk;
pub mod hyperv_clock;
pub mod hyperv_msr;
pub mod in_flight;
pub mod ioapic;
pub mod ipi;
pub mod memory;
pub mod misc_enable;
pub mod mmio_decode;
pub mod model_msr;
pub mod msix;
pub mod msr_map;
pub mod mtrr;
pub mod multiboot1;
pub mod pages;
pub mod pci_config;
pub mod profile;
pub mod slat;
pub mod tsc;
pub mod uart16550;
pub mod vtd_slat;
pub mod x2apic;
pub mod xcr0;

#[cfg(test)]
extern crate std;
