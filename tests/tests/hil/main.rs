//! Hardware-in-the-loop tests: each one boots the hypervisor in an emulator and judges the
//! run from its console (see docs/testing.md). They are one test binary so that cargo runs
//! them all in parallel (one test thread per core).

mod apic;
mod board_watchdog;
mod boot;
mod boot_info;
mod config;
mod console;
mod cpu;
mod dma;
mod flood;
mod harness;
mod hyperv;
mod image;
mod interrupts;
mod isolation;
mod linux;
mod linux_bochs;
mod linux_console;
mod linux_direct;
mod linux_msg;
mod linux_nic;
mod linux_supervision;
mod linux_xen;
mod messaging_std;
mod partitions;
mod pci;
mod smp;
mod supervision;
mod sweep;
mod threads;
mod unikernel;
mod unikernel_demo;
mod xen;
