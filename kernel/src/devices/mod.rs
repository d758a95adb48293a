//! Assigned devices: the hypervisor owns the interrupt controllers and the PCI
//! configuration space and confines DMA; a partition sees its own devices only
//! (docs/devices.md).
//!
//! - [`ioapic`]: the board's IOAPICs; a partition programs the pins of its own GSIs through
//!   an emulated IOAPIC page.
//! - [`pci`]: configuration space (ports 0xCF8/0xCFC and the ECAM window), filtered per
//!   partition; MSI messages checked and retargeted.
//! - [`iommu`]: VT-d DMA remapping, one domain per partition, faults logged and counted.

pub mod ioapic;
pub mod iommu;
pub mod pci;
