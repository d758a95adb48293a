//! The Hyper-V hypercall ABI as the Microsoft Hypervisor Top-Level Functional Specification
//! (TLFS) defines it: what the hypervisor reports and accepts, and what guests (Linux with its
//! Hyper-V drivers, or our own) send. Bulkhead implements the subset a statically partitioned
//! guest needs: discovery, the hypercall page, the SynIC and inter-partition messages.
//!
//! Sources, as digested with citations in the project's hypercall reference:
//! * [`cpuid`]: TLFS "Feature Discovery" and HV_PARTITION_PRIVILEGE_MASK (reference §1);
//! * [`msr`]: TLFS "Hypercall Interface", "Timers", "Inter-Partition Communication" (§2);
//! * [`hypercall`]: TLFS "Hypercall Interface", HV_STATUS numbers from Linux `hvgdk_mini.h` (§3);
//! * [`message`]: TLFS HvCallPostMessage, HvCallSignalEvent, HV_MESSAGE, SynIC pages (§4);
//! * [`reference_tsc`]: TLFS "Timers", the reference TSC page (§2.2);
//! * [`client`]: the guest side of all of it as a safe client.
//!
//! Everything but the client is plain data and pure functions, usable by the hypervisor and
//! by no_std guests; the client is for guests only.

pub mod client;
pub mod cpuid;
pub mod hypercall;
pub mod message;
pub mod msr;
pub mod reference_tsc;

pub use hypercall::{CONSOLE_WRITE_MAX, ConsoleWriteInput, HvStatus, HypercallInput, HypercallResult, input_gpa_ok};
pub use message::{
    EventFlagsPage, Message, MessageHeader, MessagePage, PostMessageHeader, PostMessageInput, SignalEventInput,
};
pub use msr::{CrashCtl, HypercallMsr, PageMsr, Scontrol, Sint};
pub use reference_tsc::ReferenceTscPage;

/// Version of this interface; bump on any change to a value or layout in this module.
pub const VERSION: u32 = 1;
