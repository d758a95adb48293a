//! A guest's crash message (Hyper-V crash MSRs with CrashMessage: P3 = GPA of the text,
//! P4 = its length) as hypervisor log lines: split at newlines, each line cleaned as the
//! partition console cleans its output (printable ASCII and space kept, `\r` dropped,
//! anything else `?`), long lines wrapped, empty lines skipped, and the whole bounded.
//!
//! The bound: a crash report ends the partition's run (its fault policy applies), so a
//! partition gets one report per start and the restart limit bounds how often; within a
//! report, at most [`MAX_BYTES`] of text (Linux hands over one page) and [`MAX_LINES`]
//! lines are logged, from the start, since the first lines of a panic say what happened.

/// The most text read from the guest: one 4 KiB page, what Linux's `hv_kmsg_dump` fills.
pub const MAX_BYTES: u64 = 4096;
/// The most lines logged for one report.
pub const MAX_LINES: usize = 100;
/// Longest line; longer ones wrap (as the partition console's lines do).
pub const LINE: usize = 160;

/// One log line of the message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Line {
    bytes: [u8; LINE],
    len: usize,
}

impl Line {
    /// The cleaned text of the line.
    pub fn as_str(&self) -> &str {
        // Only printable ASCII is ever stored.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl core::fmt::Debug for Line {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The lines of `text` (already cut to [`MAX_BYTES`] by the caller), at most
/// [`MAX_LINES`] of them; see the module comment.
pub fn lines(text: &[u8]) -> Lines<'_> {
    Lines { rest: text, emitted: 0 }
}

/// The iterator [`lines`] returns.
pub struct Lines<'a> {
    rest: &'a [u8],
    emitted: usize,
}

impl Lines<'_> {
    /// Whether text remains that the line limit kept out.
    pub fn truncated(&self) -> bool {
        self.rest.iter().any(|&b| b.is_ascii_graphic())
    }
}

impl Iterator for Lines<'_> {
    type Item = Line;

    fn next(&mut self) -> Option<Line> {
        while self.emitted < MAX_LINES && !self.rest.is_empty() {
            let mut line = Line { bytes: [0; LINE], len: 0 };
            let mut used = 0;
            for &byte in self.rest {
                if byte == b'\n' {
                    used += 1;
                    break;
                }
                if line.len == LINE {
                    break;
                }
                used += 1;
                match byte {
                    b'\r' => {}
                    b if b.is_ascii_graphic() || b == b' ' => {
                        line.bytes[line.len] = b;
                        line.len += 1;
                    }
                    // A string ends at NUL: what follows is page filler.
                    0 => {
                        used = self.rest.len();
                        break;
                    }
                    _ => {
                        line.bytes[line.len] = b'?';
                        line.len += 1;
                    }
                }
            }
            self.rest = &self.rest[used..];
            if line.bytes[..line.len].iter().any(|&b| b != b' ') {
                self.emitted += 1;
                return Some(line);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    fn all(text: &[u8]) -> Vec<String> {
        lines(text).map(|l| l.as_str().into()).collect()
    }

    #[test]
    fn splits_and_cleans() {
        assert_eq!(
            all(b"Kernel panic - not syncing: sysrq\r\nCPU: 1 PID: 7\tComm: sh\n\n   \nend"),
            ["Kernel panic - not syncing: sysrq", "CPU: 1 PID: 7?Comm: sh", "end"]
        );
        assert_eq!(all(b"caf\xc3\xa9\x1b[0m"), ["caf???[0m"]);
        assert!(all(b"").is_empty());
        assert!(all(b"\n\n\r\n").is_empty());
    }

    #[test]
    fn stops_at_nul() {
        assert_eq!(all(b"one\ntwo\0three\nfour"), ["one", "two"]);
    }

    #[test]
    fn wraps_long_lines() {
        let long = [b'x'; LINE * 2 + 5];
        let got = all(&long);
        assert_eq!(got.iter().map(String::len).collect::<Vec<_>>(), [LINE, LINE, 5]);
    }

    #[test]
    fn at_most_max_lines_from_the_start() {
        let mut text = Vec::new();
        for i in 0..MAX_LINES + 20 {
            text.extend_from_slice(std::format!("line {i}\n").as_bytes());
        }
        let mut it = lines(&text);
        let got: Vec<String> = it.by_ref().map(|l| l.as_str().into()).collect();
        assert_eq!(got.len(), MAX_LINES);
        assert_eq!(got[0], "line 0");
        assert_eq!(got[MAX_LINES - 1], std::format!("line {}", MAX_LINES - 1));
        assert!(it.truncated());
        let mut short = lines(b"a\nb\n");
        assert_eq!(short.by_ref().count(), 2);
        assert!(!short.truncated());
    }
}
