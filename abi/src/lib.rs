//! Interfaces shared by the Bulkhead hypervisor, its guests and the host tools.
//!
//! Everything here is a contract between two sides built separately: changing a value
//! breaks the other side, so each module carries a version.
#![no_std]

pub mod boot_info;
pub mod demo;
pub mod hyperv;
pub mod run;
pub mod supervision;
pub mod xen;
pub mod xen_client;
pub mod xen_ring;
