//! How a run of the hypervisor talks to the host that watches it (emulator harness,
//! `cargo xtask run`, `cargo xtask console`, a technician's serial terminal).
//!
//! The console carries plain text (firmware, GRUB) until the kernel prints one of two
//! markers, which also says what follows; anything before it is shown as it is:
//!
//! - [`CONSOLE_SYNC`] (`console_format = "defmt"`): defmt frames, rzcobs-encoded, each
//!   ended by a zero byte, decoded on the host with the kernel ELF's `.defmt` table;
//! - [`TEXT_CONSOLE_SYNC`] (`console_format = "text"`): one line per log message, exactly
//!   as the host prints a decoded frame: `[cpu0 INFO ] message` (the CPU, the level padded
//!   to five characters), ended by CR LF. Control characters in a message are written as
//!   [`write_escaped`] does, so a message is always one printable line.
//!
//! A run ends with exactly one of [`RUN_END_SUCCESS`] or [`RUN_END_FAILURE`] as the message
//! of a log line. The harness decides pass or fail from those messages, never from the
//! emulator's exit status alone (a QEMU triple fault exits 0).

/// Version of this protocol; bump on any change to the values below.
pub const VERSION: u32 = 1;

/// Plain-text line the kernel writes once, before its first defmt frame. The zero byte
/// after it closes any garbage the decoder might otherwise glue onto the first frame.
pub const CONSOLE_SYNC: &[u8] = b"\r\n@@bulkhead:defmt-stream:v1@@\r\n\0";

/// Plain-text line the kernel writes once, before its first text log line.
pub const TEXT_CONSOLE_SYNC: &[u8] = b"\r\n@@bulkhead:text-stream:v1@@\r\n";

/// Writes `message` with each control character (`char::is_control`: C0, DEL, C1) as
/// `char::escape_default` shows it (`\n`, `\t`, `\u{1b}`), everything else unchanged. The
/// kernel writes text log lines through it, and the host decoder puts decoded messages of
/// either format through it, so a message can never end a line or steer a terminal, and
/// both formats give the same message.
pub fn write_escaped(out: &mut impl core::fmt::Write, message: &str) -> core::fmt::Result {
    let mut plain = 0;
    for (i, c) in message.char_indices() {
        if c.is_control() {
            out.write_str(&message[plain..i])?;
            for e in c.escape_default() {
                out.write_char(e)?;
            }
            plain = i + c.len_utf8();
        }
    }
    out.write_str(&message[plain..])
}

/// Message of the last log frame of a successful run.
pub const RUN_END_SUCCESS: &str = "run ended: success";
/// Message prefix of the last log frame of a failed run; the cause follows.
pub const RUN_END_FAILURE: &str = "run ended: failure";

/// Kernel command-line switch: end the run by telling the emulator to exit. Without it
/// the kernel halts its CPUs at the end of a run, which is what a real board wants.
pub const CMDLINE_EMULATOR_EXIT: &str = "exit=emulator";

/// Kernel command-line switch prefix for test-only behaviour (`test=ud`, `test=panic`,
/// `test=hang`, `test=skip-ap`). Used by the harness to prove it cannot pass a broken run.
pub const CMDLINE_TEST: &str = "test=";

/// QEMU `isa-debug-exit` device: I/O port, and the values written for success and failure.
/// QEMU exits with status `(value << 1) | 1`, so success is 33 and failure 35.
pub const QEMU_DEBUG_EXIT_PORT: u16 = 0xf4;
pub const QEMU_EXIT_SUCCESS: u8 = 0x10;
pub const QEMU_EXIT_FAILURE: u8 = 0x11;
pub const QEMU_STATUS_SUCCESS: i32 = ((QEMU_EXIT_SUCCESS as i32) << 1) | 1;
pub const QEMU_STATUS_FAILURE: i32 = ((QEMU_EXIT_FAILURE as i32) << 1) | 1;

/// Bochs: writing the bytes of "Shutdown" to this port ends the emulator (status 1). A
/// successful run first executes the magic breakpoint `xchg bx, bx`, which with the
/// harness's debugger script (`c`, then `q`) ends Bochs with status 0.
pub const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;
pub const BOCHS_SHUTDOWN_MAGIC: &[u8] = b"Shutdown";

/// How many magic breakpoints a successful run executes. Bochs also enters its debugger
/// on each triple fault a partition takes under SVM (before the SHUTDOWN intercept), and
/// each of those uses one `c` of the debugger script; the script therefore continues up
/// to [`BOCHS_DEBUGGER_CONTINUES`] times before its `q`, and the kernel breaks more often
/// than that, so the `q` is always reached on success.
pub const BOCHS_MAGIC_BREAKS: u32 = 64;
/// The `c` commands in the harness's Bochs debugger script before its `q`.
pub const BOCHS_DEBUGGER_CONTINUES: u32 = 32;
const _: () = assert!(BOCHS_DEBUGGER_CONTINUES < BOCHS_MAGIC_BREAKS);

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn qemu_statuses_are_distinct_and_not_a_clean_exit() {
        assert_eq!(QEMU_STATUS_SUCCESS, 33);
        assert_eq!(QEMU_STATUS_FAILURE, 35);
        assert_ne!(QEMU_STATUS_SUCCESS, 0);
    }

    #[test]
    fn text_marker_is_printable_text() {
        assert!(TEXT_CONSOLE_SYNC.iter().all(|b| b.is_ascii_graphic() || matches!(b, b'\r' | b'\n')));
        assert_ne!(TEXT_CONSOLE_SYNC, &CONSOLE_SYNC[..CONSOLE_SYNC.len() - 1]);
    }

    fn escaped(message: &str) -> std::string::String {
        let mut out = std::string::String::new();
        write_escaped(&mut out, message).unwrap();
        out
    }

    #[test]
    fn escaping_keeps_a_message_on_one_printable_line() {
        assert_eq!(escaped("plain [cpu0] text \\ \"q\" é"), "plain [cpu0] text \\ \"q\" é");
        assert_eq!(escaped("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(escaped("\x1b[2J\0\x7f\u{85}end"), "\\u{1b}[2J\\u{0}\\u{7f}\\u{85}end");
        assert_eq!(escaped(""), "");
    }

    #[test]
    fn sync_marker_is_text_then_frame_terminator() {
        let (last, text) = CONSOLE_SYNC.split_last().unwrap();
        assert_eq!(*last, 0);
        assert!(text.iter().all(|b| b.is_ascii() && *b != 0));
    }
}
