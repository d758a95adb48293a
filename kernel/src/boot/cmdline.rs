//! Kernel command-line switches (space separated, from GRUB's `multiboot2` line).

use bulkhead_abi::run::{CMDLINE_EMULATOR_EXIT, CMDLINE_TEST};

/// Test-only behaviour, to prove the harness catches every kind of broken run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestAction {
    /// Execute an undefined instruction (#UD).
    InvalidOpcode,
    Panic,
    /// Never end the run.
    Hang,
    /// Do not start the last AP.
    SkipAp,
}

#[derive(Debug, Default)]
pub struct Switches {
    pub emulator_exit: bool,
    pub test: Option<TestAction>,
}

impl Switches {
    pub fn parse(cmdline: &str) -> Self {
        let mut s = Switches::default();
        for word in cmdline.split_ascii_whitespace() {
            if word == CMDLINE_EMULATOR_EXIT {
                s.emulator_exit = true;
            } else if let Some(action) = word.strip_prefix(CMDLINE_TEST) {
                s.test = match action {
                    "ud" => Some(TestAction::InvalidOpcode),
                    "panic" => Some(TestAction::Panic),
                    "hang" => Some(TestAction::Hang),
                    "skip-ap" => Some(TestAction::SkipAp),
                    other => {
                        crate::log::warn!("command line: unknown test action {=str}", other);
                        None
                    }
                };
            }
        }
        s
    }
}

/// Test-only: `hang_cpu=N` makes the CPU with index N, at its first VM exit once
/// `hang_after_ms=M` milliseconds (default 1000) have passed since boot, spin forever inside
/// the hypervisor with interrupts disabled: a hung hypervisor core, for the board watchdog's
/// test (kernel/src/supervision/test_hang.rs, docs/supervision.md).
pub const CMDLINE_HANG_CPU: &str = "hang_cpu=";
pub const CMDLINE_HANG_AFTER_MS: &str = "hang_after_ms=";
/// The delay without `hang_after_ms`.
pub const DEFAULT_HANG_AFTER_MS: u64 = 1000;

/// The `hang_cpu` switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HangSwitch {
    pub cpu: u32,
    pub after_ms: u64,
}

impl HangSwitch {
    /// The switch, if the command line sets it; `Err(word)` for a malformed value
    /// (`hang_after_ms` without `hang_cpu` is ignored).
    pub fn parse(cmdline: &str) -> Result<Option<HangSwitch>, &str> {
        let mut cpu = None;
        let mut after_ms = DEFAULT_HANG_AFTER_MS;
        for word in cmdline.split_ascii_whitespace() {
            if let Some(value) = word.strip_prefix(CMDLINE_HANG_CPU) {
                cpu = Some(value.parse().map_err(|_| word)?);
            } else if let Some(value) = word.strip_prefix(CMDLINE_HANG_AFTER_MS) {
                after_ms = value.parse().map_err(|_| word)?;
            }
        }
        Ok(cpu.map(|cpu| HangSwitch { cpu, after_ms }))
    }
}
