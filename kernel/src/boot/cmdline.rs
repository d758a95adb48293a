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
