//! Bulkhead configuration: the board and system TOML files, their validation, and the
//! constant tables they compile into.
//!
//! Without the `host` feature this crate is only [`tables`], the `no_std` types of the
//! compiled configuration that the kernel includes.
//!
//! With `host` (the default) it is the build-time pipeline, after Hubris' app.toml:
//! [`load_system`] reads a system file and its board with spans, checks every rule and
//! reports *all* problems as `file:line:col: [rule] message` plus a hint ([`Diagnostics`]);
//! a configuration that passes becomes a [`System`], which [`generate_tables`] turns into the
//! Rust source the kernel's build script includes, and [`summary`] into a readable overview.
//! Nothing is parsed at run time. `docs/config.md` documents every key and rule.
#![cfg_attr(not(feature = "host"), no_std)]
#![forbid(unsafe_code)]

pub mod tables;

#[cfg(feature = "host")]
mod board;
#[cfg(feature = "host")]
pub mod codegen;
#[cfg(feature = "host")]
pub mod diag;
#[cfg(feature = "host")]
pub mod footprint;
#[cfg(feature = "host")]
mod load;
#[cfg(feature = "host")]
pub mod model;
#[cfg(feature = "host")]
mod payload;
#[cfg(feature = "host")]
mod summary;
#[cfg(feature = "host")]
mod system;
#[cfg(feature = "host")]
mod validate;
#[cfg(feature = "host")]
mod value;

#[cfg(feature = "host")]
pub use codegen::{BootModule, boot_modules, generate_tables};
#[cfg(feature = "host")]
pub use diag::{Diagnostic, Diagnostics, RULES, Rule, rule};
#[cfg(feature = "host")]
pub use footprint::{Budget, Footprint};
#[cfg(feature = "host")]
pub use load::{LoadOptions, Loaded, MAX_CONFIG_BYTES, boards_dir, load_system};
#[cfg(feature = "host")]
pub use model::System;
#[cfg(feature = "host")]
pub use payload::{APPS_DIR, APPS_PREFIX, GUESTS_PREFIX, LINUX_ASSETS, LINUX_DIR, LINUX_PREFIX};
#[cfg(feature = "host")]
pub use summary::summary;
#[cfg(feature = "host")]
pub use system::DEFAULT_RESERVED;
#[cfg(feature = "host")]
pub use validate::ALLOCATION_ALIGN;

/// The system `cargo xtask run` uses when none is given, relative to the workspace root.
pub const DEFAULT_SYSTEM: &str = "board/systems/demo.toml";

/// The reference documentation must keep up with the schema and the rules.
#[cfg(all(test, feature = "host"))]
mod docs_tests {
    const DOC: &str = include_str!("../../docs/config.md");

    #[test]
    fn every_rule_is_documented() {
        for rule in crate::RULES {
            assert!(DOC.contains(&format!("| `{}` |", rule.name)), "docs/config.md lacks rule {}", rule.name);
        }
    }

    #[test]
    fn every_key_is_documented() {
        use crate::board::*;
        use crate::system::*;
        let lists: [&[&str]; 21] = [
            WATCHDOG_KEYS,
            RESET_RECORD_KEYS,
            IOAPIC_KEYS,
            MSI_KEYS,
            BOARD_KEYS,
            CPU_KEYS,
            RANGE_KEYS,
            DEVICE_KEYS,
            PCI_KEYS,
            BAR_KEYS,
            PORT_KEYS,
            IOMMU_KEYS,
            SYSTEM_KEYS,
            HYPERVISOR_KEYS,
            RESERVED_KEYS,
            PARTITION_KEYS,
            MEMORY_KEYS,
            PAYLOAD_KEYS,
            CONNECTION_KEYS,
            SHARED_KEYS,
            SHARER_KEYS,
        ];
        for key in lists.iter().flat_map(|l| l.iter()) {
            assert!(DOC.contains(&format!("`{key}`")), "docs/config.md lacks key {key}");
        }
    }
}
