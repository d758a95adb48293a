//! What a 64-bit partition payload needs to drive its own vCPUs, shared by the test
//! guests (guests/) and the unikernel runtime (runtime/): switching the local APIC to
//! x2APIC mode, the xAPIC register page, and starting the partition's other vCPUs with
//! INIT and start-up IPIs through a real-mode trampoline.
//!
//! Runs in the partition (ring 0, identity-mapped memory as the loader sets it up); it
//! compiles on the host too, where nothing calls it.
#![no_std]

pub mod lapic;
pub mod smp;
