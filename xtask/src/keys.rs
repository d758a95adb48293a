//! `cargo xtask run`'s keyboard: the terminal's keystrokes go to the emulated machine's
//! serial port (the hypervisor's console, which hands them to the system's
//! `console_input` partition), as QEMU's `-serial mon:stdio` would pass them, with the
//! same way out: Ctrl-A X quits, Ctrl-A Ctrl-A sends a Ctrl-A.
//!
//! The terminal is put in a raw input mode for the run (no line editing, no local echo:
//! the partition echoes what it reads; Ctrl-C and Ctrl-Z go to the partition as bytes,
//! where they interrupt or suspend its foreground job) and restored afterwards, also when
//! the run ends in an error. Output processing stays on, so the console's lines print as
//! before.

use std::io::Read;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};

use rustix::termios::{self, InputModes, LocalModes, OptionalActions, SpecialCodeIndex, Termios};

/// The escape key: Ctrl-A.
pub const ESCAPE: u8 = 0x01;

/// What the banner says about the keys.
pub const HELP: &str = "Ctrl-A X quits, Ctrl-A Ctrl-A sends Ctrl-A";

/// Set once Ctrl-A X was typed.
static QUIT: AtomicBool = AtomicBool::new(false);

/// Whether the run was quit from the keyboard (Ctrl-A X).
pub fn quit_requested() -> bool {
    QUIT.load(Ordering::Relaxed)
}

/// The Ctrl-A prefix, byte by byte.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Keys {
    escaped: bool,
}

/// What one keystroke does.
#[derive(Debug, PartialEq, Eq)]
pub enum Key {
    /// Send these bytes (none: the escape key, waiting for its second key).
    Send(Vec<u8>),
    /// Ctrl-A X: end the run.
    Quit,
}

impl Keys {
    pub fn key(&mut self, byte: u8) -> Key {
        if std::mem::take(&mut self.escaped) {
            return match byte {
                b'x' | b'X' => Key::Quit,
                ESCAPE => Key::Send(vec![ESCAPE]),
                // An unknown command: both keys go through, as typed.
                other => Key::Send(vec![ESCAPE, other]),
            };
        }
        if byte == ESCAPE {
            self.escaped = true;
            return Key::Send(Vec::new());
        }
        Key::Send(vec![byte])
    }
}

/// The terminal on standard input in raw input mode until dropped.
pub struct RawInput {
    saved: Termios,
}

impl RawInput {
    /// Raw input mode, if standard input is a terminal.
    pub fn enter() -> Option<RawInput> {
        let stdin = std::io::stdin();
        let fd = stdin.as_fd();
        if !termios::isatty(fd) {
            return None;
        }
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        raw.local_modes -= LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG | LocalModes::IEXTEN;
        raw.input_modes -= InputModes::IXON | InputModes::ICRNL | InputModes::INLCR | InputModes::IGNCR;
        raw.special_codes[SpecialCodeIndex::VMIN] = 1;
        raw.special_codes[SpecialCodeIndex::VTIME] = 0;
        termios::tcsetattr(fd, OptionalActions::Now, &raw).ok()?;
        Some(RawInput { saved })
    }
}

impl Drop for RawInput {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), OptionalActions::Now, &self.saved);
    }
}

/// Reads standard input on a thread of its own and passes the keystrokes on (see
/// [`Keys`]); the channel closes at Ctrl-A X or the end of input, which ends the run.
pub fn forward() -> Receiver<Vec<u8>> {
    let (tx, rx) = channel();
    std::thread::spawn(move || pump(std::io::stdin().lock(), &tx));
    rx
}

fn pump(mut input: impl Read, tx: &Sender<Vec<u8>>) {
    let mut keys = Keys::default();
    let mut buf = [0u8; 256];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut out = Vec::new();
        for &byte in &buf[..n] {
            match keys.key(byte) {
                Key::Send(bytes) => out.extend(bytes),
                Key::Quit => {
                    QUIT.store(true, Ordering::Relaxed);
                    let _ = tx.send(out);
                    return;
                }
            }
        }
        if !out.is_empty() && tx.send(out).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(bytes: &[u8]) -> (Vec<u8>, bool) {
        let mut keys = Keys::default();
        let mut out = Vec::new();
        for &b in bytes {
            match keys.key(b) {
                Key::Send(s) => out.extend(s),
                Key::Quit => return (out, true),
            }
        }
        (out, false)
    }

    #[test]
    fn keys_pass_through_and_ctrl_a_x_quits() {
        assert_eq!(feed(b"ls\r\x03"), (b"ls\r\x03".to_vec(), false));
        assert_eq!(feed(b"ab\x01xcd"), (b"ab".to_vec(), true));
        assert_eq!(feed(b"\x01X"), (Vec::new(), true));
        assert_eq!(feed(b"\x01\x01a"), (b"\x01a".to_vec(), false));
        assert_eq!(feed(b"\x01q"), (b"\x01q".to_vec(), false));
        assert_eq!(feed(b"\x01"), (Vec::new(), false), "waits for the second key");
    }

    #[test]
    fn the_pump_closes_the_channel_at_quit_and_at_the_end_of_input() {
        let (tx, rx) = channel();
        pump(&b"echo\r\x01xignored"[..], &tx);
        drop(tx);
        let got: Vec<u8> = rx.iter().flatten().collect();
        assert_eq!(got, b"echo\r");
        let (tx, rx) = channel();
        pump(&b"end"[..], &tx);
        drop(tx);
        assert_eq!(rx.iter().flatten().collect::<Vec<u8>>(), b"end");
    }
}
