//! Turns the raw bytes of the kernel's serial console into readable lines.
//!
//! The console carries plain text (firmware, GRUB) until the kernel writes one of its two
//! markers (see `bulkhead_abi::run`): after [`CONSOLE_SYNC`] it carries defmt frames,
//! rzcobs-encoded and each ended by a zero byte; after [`TEXT_CONSOLE_SYNC`] it carries
//! text lines (`[cpu0 INFO ] message`, CR LF), which the kernel already formatted as this
//! module prints a frame. [`ConsoleDecoder`] handles every part: text before the marker
//! comes out as [`Line::Console`] with ANSI escape sequences and carriage returns removed
//! (OVMF and GRUB draw with them); frames and text log lines come out as the same
//! [`Line::Log`] values; a frame or text line that does not decode is skipped, counted and
//! reported as a [`Line::Decoder`] note.

use std::fmt;

use bulkhead_abi::run::{CONSOLE_SYNC, RUN_END_FAILURE, RUN_END_SUCCESS, TEXT_CONSOLE_SYNC, write_escaped};
use defmt_decoder::{DecodeError, Frame, StreamDecoder, Table};

/// A pre-sync line longer than this is cut, and a text log line longer than this is
/// skipped as malformed, so a console that never prints a newline cannot make the decoder
/// hold all of it in memory.
const MAX_TEXT_LINE: usize = 4096;

/// Log level of a decoded frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

impl std::str::FromStr for Level {
    type Err = ();

    /// The level's name as [`Level::as_str`] writes it.
    fn from_str(name: &str) -> Result<Level, ()> {
        [Level::Trace, Level::Debug, Level::Info, Level::Warn, Level::Error]
            .into_iter()
            .find(|l| l.as_str() == name)
            .ok_or(())
    }
}

impl From<defmt_parser::Level> for Level {
    fn from(level: defmt_parser::Level) -> Self {
        match level {
            defmt_parser::Level::Trace => Level::Trace,
            defmt_parser::Level::Debug => Level::Debug,
            defmt_parser::Level::Info => Level::Info,
            defmt_parser::Level::Warn => Level::Warn,
            defmt_parser::Level::Error => Level::Error,
        }
    }
}

/// One line of decoded console output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// Text written before the sync marker (firmware, GRUB), cleaned of escape sequences.
    Console(String),
    /// A log message from the kernel, a defmt frame or a text line. `timestamp` is the
    /// frame's timestamp as the kernel formats it (`cpu0`), `level` is `None` for
    /// `println!` frames. Control characters in `message` are escaped
    /// (`bulkhead_abi::run::write_escaped`), so it is always one line.
    Log { timestamp: Option<String>, level: Option<Level>, message: String },
    /// A note from the decoder itself, such as a skipped malformed frame.
    Decoder(String),
}

impl Line {
    /// Shorthand for a log line, mostly for tests.
    pub fn log(timestamp: &str, level: Level, message: impl Into<String>) -> Line {
        Line::Log { timestamp: Some(timestamp.to_string()), level: Some(level), message: message.into() }
    }

    pub fn level(&self) -> Option<Level> {
        match self {
            Line::Log { level, .. } => *level,
            _ => None,
        }
    }

    /// The text of the line without its `[...]` prefix.
    pub fn message(&self) -> &str {
        match self {
            Line::Console(text) | Line::Decoder(text) => text,
            Line::Log { message, .. } => message,
        }
    }

    /// For a line of a partition's own console output (the hypervisor logs those as
    /// `[name] text`), the partition's name. Such text is the guest's, not the
    /// hypervisor's, and must not satisfy expectations about hypervisor lines.
    pub fn partition_console(&self) -> Option<&str> {
        let Line::Log { message, .. } = self else { return None };
        let (name, _) = message.strip_prefix('[')?.split_once("] ")?;
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        valid.then_some(name)
    }

    /// True for the kernel's `run ended: success` frame.
    pub fn is_run_success(&self) -> bool {
        matches!(self, Line::Log { message, .. } if message == RUN_END_SUCCESS)
    }

    /// True for the kernel's `run ended: failure: <cause>` frame.
    pub fn is_run_failure(&self) -> bool {
        matches!(self, Line::Log { message, .. } if message.starts_with(RUN_END_FAILURE))
    }

    pub fn is_run_end(&self) -> bool {
        self.is_run_success() || self.is_run_failure()
    }

    fn from_frame(frame: &Frame<'_>) -> Line {
        Line::Log {
            timestamp: frame.display_timestamp().map(|t| t.to_string()),
            level: frame.level().map(Level::from),
            message: escaped(&frame.display_message().to_string()),
        }
    }

    /// Reads a line of a text console, the form this type's `Display` writes for a log
    /// line: `[cpu0 INFO ] message`, `[cpu0      ] message` (no level), `[DEBUG] message`
    /// (no timestamp). `None` if the line is not of that form.
    pub fn parse_text(line: &str) -> Option<Line> {
        let rest = line.strip_prefix('[')?;
        let (head, message) = match rest.split_once("] ") {
            Some(parts) => parts,
            None => (rest.strip_suffix(']')?, ""),
        };
        let (timestamp, level) = match head.split_once(' ') {
            Some((ts, level)) => (Some(ts), level.trim()),
            None => (None, head),
        };
        let timestamp = match timestamp {
            Some(ts) if ts.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c)) && !ts.is_empty() => {
                Some(ts.to_string())
            }
            Some(_) => return None,
            None => None,
        };
        let level = match level {
            "" if timestamp.is_some() => None,
            name => Some(name.parse().ok()?),
        };
        Some(Line::Log { timestamp, level, message: escaped(message) })
    }
}

/// `[cpu0 INFO ] message` for log frames (level padded to 5), `[console] text` for text
/// before the sync marker, `[decoder] note` for the decoder's own notes.
impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Line::Console(text) => write!(f, "[console] {text}"),
            Line::Decoder(text) => write!(f, "[decoder] {text}"),
            Line::Log { timestamp, level, message } => {
                let level = level.map_or("", Level::as_str);
                match timestamp {
                    Some(ts) => write!(f, "[{ts} {level:<5}] {message}"),
                    None => write!(f, "[{level:<5}] {message}"),
                }
            }
        }
    }
}

/// Removes ANSI/VT100 escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL|ESC \`,
/// and two-byte `ESC x` forms), carriage returns and other control characters from one
/// line of console text, and trims trailing whitespace. Tabs become spaces. Bytes that are
/// not UTF-8 are replaced, never dropped silently.
pub fn clean_text(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        match b {
            0x1b => match bytes.get(i) {
                Some(b'[') => {
                    // CSI: parameter and intermediate bytes (0x20..=0x3f), then one final
                    // byte (0x40..=0x7e).
                    i += 1;
                    while i < bytes.len() && (0x20..=0x3f).contains(&bytes[i]) {
                        i += 1;
                    }
                    if i < bytes.len() && (0x40..=0x7e).contains(&bytes[i]) {
                        i += 1;
                    }
                }
                Some(b']') => {
                    // OSC: up to BEL or the string terminator ESC '\'.
                    i += 1;
                    while i < bytes.len() {
                        if bytes[i] == 0x07 {
                            i += 1;
                            break;
                        }
                        if bytes[i] == 0x1b && bytes.get(i + 1) == Some(&b'\\') {
                            i += 2;
                            break;
                        }
                        i += 1;
                    }
                }
                Some(_) => {
                    // ESC, intermediates (0x20..=0x2f), one final byte: `ESC ( B`, `ESC c`.
                    while i < bytes.len() && (0x20..=0x2f).contains(&bytes[i]) {
                        i += 1;
                    }
                    if i < bytes.len() {
                        i += 1;
                    }
                }
                None => {}
            },
            b'\t' => out.push(b' '),
            0x00..=0x1f | 0x7f => {}
            _ => out.push(b),
        }
    }
    let mut text = String::from_utf8_lossy(&out).into_owned();
    text.truncate(text.trim_end().len());
    text
}

/// The printable core of a marker (what is searched for) and the bytes after it (line
/// end, and for defmt the frame terminator, skipped before the first frame).
fn marker_parts(marker: &'static [u8]) -> (&'static [u8], &'static [u8]) {
    let pad = |b: &u8| matches!(b, b'\r' | b'\n' | b' ' | 0);
    let start = marker.iter().position(|b| !pad(b)).unwrap_or(0);
    let end = marker.iter().rposition(|b| !pad(b)).map_or(marker.len(), |p| p + 1);
    (&marker[start..end], &marker[end..])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `message` with control characters escaped, as the kernel's text console writes it.
fn escaped(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    // Writing to a String cannot fail.
    let _ = write_escaped(&mut out, message);
    out
}

/// What the kernel's console carries after its marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFormat {
    /// defmt frames ([`CONSOLE_SYNC`]): decoding needs the kernel ELF's defmt table.
    Defmt,
    /// Text lines ([`TEXT_CONSOLE_SYNC`]): decoded without anything from the kernel.
    Text,
}

enum State {
    /// Before a marker: accumulating text lines.
    Text,
    /// Just after the defmt marker's printable core: skipping its line end, as far as it
    /// matches.
    Tail(usize),
    /// Decoding defmt frames.
    Frames,
    /// Reading text log lines; `skipping` while the rest of an overlong line goes by.
    Lines { skipping: bool },
}

/// Streaming decoder for one run's console. Feed it bytes as they arrive; it appends the
/// lines it completes to `out`.
pub struct ConsoleDecoder<'t> {
    stream: Option<Box<dyn StreamDecoder + Send + Sync + 't>>,
    state: State,
    text: Vec<u8>,
    malformed: usize,
    /// defmt frame bytes that arrived without a table: counted, and kept if a table may
    /// still come ([`ConsoleDecoder::set_table`]).
    undecoded: Vec<u8>,
    undecoded_bytes: usize,
    table_may_follow: bool,
}

impl<'t> ConsoleDecoder<'t> {
    /// `table` is the kernel's defmt table, needed only if the console turns out to carry
    /// defmt frames. Without one, such frames are counted, not decoded, and a
    /// [`Line::Decoder`] note says so as soon as the defmt marker arrives.
    pub fn new(table: Option<&'t Table>) -> Self {
        ConsoleDecoder {
            stream: table.map(Table::new_stream_decoder),
            state: State::Text,
            text: Vec::new(),
            malformed: 0,
            undecoded: Vec::new(),
            undecoded_bytes: 0,
            table_may_follow: false,
        }
    }

    /// A decoder whose caller finds the defmt table only once it is needed: when
    /// [`needs_table`](Self::needs_table) says so, it calls
    /// [`set_table`](Self::set_table), and the frames that came before are decoded then.
    /// Until then frames are kept; if no table ever comes, [`finish`](Self::finish) notes
    /// how many bytes were not decoded.
    pub fn with_table_later() -> Self {
        ConsoleDecoder { table_may_follow: true, ..ConsoleDecoder::new(None) }
    }

    /// Whether a marker has been seen.
    pub fn synced(&self) -> bool {
        !matches!(self.state, State::Text)
    }

    /// The format announced by the marker, once it has been seen.
    pub fn format(&self) -> Option<StreamFormat> {
        match self.state {
            State::Text => None,
            State::Tail(_) | State::Frames => Some(StreamFormat::Defmt),
            State::Lines { .. } => Some(StreamFormat::Text),
        }
    }

    /// Whether defmt frames are arriving and there is no table to decode them.
    pub fn needs_table(&self) -> bool {
        self.format() == Some(StreamFormat::Defmt) && self.stream.is_none()
    }

    /// Supplies the defmt table late, and decodes the frames kept until now.
    pub fn set_table(&mut self, table: &'t Table, out: &mut Vec<Line>) {
        self.stream = Some(table.new_stream_decoder());
        self.undecoded_bytes = 0;
        let kept = std::mem::take(&mut self.undecoded);
        self.decode_frames(&kept, out);
    }

    /// How many defmt frames and text log lines were malformed and skipped.
    pub fn malformed_frames(&self) -> usize {
        self.malformed
    }

    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Line>) {
        let (defmt_core, tail) = marker_parts(CONSOLE_SYNC);
        let (text_core, _) = marker_parts(TEXT_CONSOLE_SYNC);
        if let State::Text = self.state {
            self.text.extend_from_slice(bytes);
            let defmt = find(&self.text, defmt_core).map(|p| (p, defmt_core.len(), StreamFormat::Defmt));
            let text = find(&self.text, text_core).map(|p| (p, text_core.len(), StreamFormat::Text));
            // The first marker counts; the other is then just stream content.
            let found = match (defmt, text) {
                (Some(d), Some(t)) => Some(if d.0 < t.0 { d } else { t }),
                (d, t) => d.or(t),
            };
            if let Some((pos, len, format)) = found {
                let rest = self.text.split_off(pos + len);
                self.text.truncate(pos);
                let before = std::mem::take(&mut self.text);
                emit_text(&before, out);
                match format {
                    StreamFormat::Defmt => {
                        self.state = State::Tail(0);
                        if self.stream.is_none() && !self.table_may_follow {
                            out.push(Line::Decoder(
                                "the console switched to defmt frames, but there is no defmt table (the kernel \
                                 ELF's) to decode them: they are counted, not shown"
                                    .into(),
                            ));
                        }
                        let rest = self.skip_tail(&rest, tail);
                        self.decode_frames(rest, out);
                    }
                    StreamFormat::Text => {
                        self.state = State::Lines { skipping: false };
                        self.read_lines(&rest, out);
                    }
                }
            } else {
                let keep_from = match self.text.iter().rposition(|&b| b == b'\n') {
                    Some(nl) => nl + 1,
                    // A runaway line: cut it, but keep enough to find a marker split here.
                    None if self.text.len() > MAX_TEXT_LINE => {
                        self.text.len() - (defmt_core.len().max(text_core.len()) - 1)
                    }
                    None => 0,
                };
                let rest = self.text.split_off(keep_from);
                let done = std::mem::replace(&mut self.text, rest);
                emit_text(&done, out);
            }
            return;
        }
        if let State::Lines { .. } = self.state {
            return self.read_lines(bytes, out);
        }
        if let State::Tail(_) = self.state {
            bytes = self.skip_tail(bytes, tail);
        }
        self.decode_frames(bytes, out);
    }

    /// Skips the marker's line end as far as it matches; anything else is frame data.
    fn skip_tail<'b>(&mut self, mut bytes: &'b [u8], tail: &[u8]) -> &'b [u8] {
        while let State::Tail(i) = self.state {
            match (tail.get(i), bytes.first()) {
                (Some(want), Some(got)) if want == got => {
                    bytes = &bytes[1..];
                    self.state = State::Tail(i + 1);
                }
                (Some(_), None) => break,
                _ => self.state = State::Frames,
            }
        }
        bytes
    }

    fn decode_frames(&mut self, bytes: &[u8], out: &mut Vec<Line>) {
        if bytes.is_empty() {
            return;
        }
        let Some(stream) = self.stream.as_mut() else {
            self.undecoded_bytes += bytes.len();
            if self.table_may_follow {
                self.undecoded.extend_from_slice(bytes);
            }
            return;
        };
        stream.received(bytes);
        loop {
            match stream.decode() {
                Ok(frame) => out.push(Line::from_frame(&frame)),
                Err(DecodeError::UnexpectedEof) => break,
                Err(DecodeError::Malformed) => {
                    self.malformed += 1;
                    out.push(Line::Decoder(format!("malformed defmt frame skipped ({} so far)", self.malformed)));
                }
            }
        }
    }

    /// Text log lines: each complete line (LF-ended; a CR before it is dropped) becomes a
    /// [`Line::Log`], or a note if it is not of that form. Blank lines are skipped.
    fn read_lines(&mut self, bytes: &[u8], out: &mut Vec<Line>) {
        for part in bytes.split_inclusive(|&b| b == b'\n') {
            let State::Lines { skipping } = &mut self.state else { return };
            let complete = part.ends_with(b"\n");
            if *skipping {
                *skipping = !complete;
                continue;
            }
            self.text.extend_from_slice(part);
            if !complete {
                if self.text.len() > MAX_TEXT_LINE {
                    *skipping = true;
                    self.text.clear();
                    self.malformed += 1;
                    out.push(Line::Decoder(format!(
                        "text log line longer than {MAX_TEXT_LINE} bytes skipped ({} malformed so far)",
                        self.malformed
                    )));
                }
                continue;
            }
            let line = std::mem::take(&mut self.text);
            self.text_line(&line, out);
        }
    }

    fn text_line(&mut self, line: &[u8], out: &mut Vec<Line>) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match Line::parse_text(&String::from_utf8_lossy(line)) {
            Some(log) => out.push(log),
            None => {
                self.malformed += 1;
                out.push(Line::Decoder(format!(
                    "malformed text log line skipped ({} so far): {}",
                    self.malformed,
                    clean_text(line)
                )));
            }
        }
    }

    /// Flushes what is left at the end of the run (a last line without a newline).
    pub fn finish(&mut self, out: &mut Vec<Line>) {
        match self.state {
            State::Text => {
                let text = std::mem::take(&mut self.text);
                emit_text(&text, out);
            }
            State::Lines { skipping: false } if !self.text.is_empty() => {
                let line = std::mem::take(&mut self.text);
                self.text_line(&line, out);
            }
            _ => {}
        }
        if self.undecoded_bytes > 0 {
            out.push(Line::Decoder(format!(
                "{} bytes of defmt frames not decoded: no defmt table",
                self.undecoded_bytes
            )));
            self.undecoded_bytes = 0;
            self.undecoded.clear();
        }
    }
}

/// Emits each line of `bytes` as a cleaned [`Line::Console`], skipping lines that are empty
/// once cleaned (firmware screen redraws).
fn emit_text(bytes: &[u8], out: &mut Vec<Line>) {
    for part in bytes.split(|&b| b == b'\n') {
        let text = clean_text(part);
        if !text.trim().is_empty() {
            out.push(Line::Console(text));
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A hand-made defmt table and an rzcobs encoder, so the decoder can be tested on real
    //! frames without a kernel ELF.

    use defmt_decoder::Table;

    pub const INFO_HELLO: u16 = 1; // "hello {=u32}"
    pub const ERROR_BOOM: u16 = 2; // "boom"
    pub const PRINTLN: u16 = 3; // "plain {=u8}"
    pub const INFO_SAY: u16 = 4; // "say {=str}"

    pub fn table() -> Table {
        serde_json::from_str(
            r#"{
                "timestamp": {"string": {"tag": "Timestamp", "string": "cpu{=u8}"}, "raw_symbol": "ts"},
                "entries": {
                    "1": {"string": {"tag": "Info", "string": "hello {=u32}"}, "raw_symbol": "a"},
                    "2": {"string": {"tag": "Error", "string": "boom"}, "raw_symbol": "b"},
                    "3": {"string": {"tag": "Println", "string": "plain {=u8}"}, "raw_symbol": "c"},
                    "4": {"string": {"tag": "Info", "string": "say {=str}"}, "raw_symbol": "d"}
                },
                "bitflags": {},
                "encoding": "Rzcobs"
            }"#,
        )
        .expect("test table")
    }

    /// rzcobs-encodes `data` and appends the zero frame terminator. Groups of seven bytes
    /// carry a bitmap of which ones are zero; a run of non-zero bytes ended by a zero is
    /// stored as the bytes plus a length byte; the decoder reads from the end.
    pub fn rzcobs(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut run, mut zeros) = (0u8, 0u8);
        for &b in data {
            if run < 7 {
                if b == 0 {
                    zeros |= 1 << run;
                } else {
                    out.push(b);
                }
                run += 1;
                if run == 7 && zeros != 0 {
                    out.push(zeros);
                    (run, zeros) = (0, 0);
                }
            } else if b == 0 {
                out.push(0x80 | (run - 7));
                (run, zeros) = (0, 0);
            } else {
                out.push(b);
                run += 1;
                if run == 134 {
                    out.push(0xff);
                    (run, zeros) = (0, 0);
                }
            }
        }
        if run > 0 {
            // Pad the last group with zeros; the decoder ignores bytes after the frame.
            out.push(if run < 7 { zeros | (0x7f & (0x7f << run)) } else { 0x80 | (run - 7) });
        }
        out.push(0);
        out
    }

    /// One encoded frame: string index, timestamp (cpu number), arguments.
    pub fn frame(index: u16, cpu: u8, args: &[u8]) -> Vec<u8> {
        let mut raw = index.to_le_bytes().to_vec();
        raw.push(cpu);
        raw.extend_from_slice(args);
        rzcobs(&raw)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn decode_all(table: Option<&Table>, chunks: &[&[u8]]) -> (Vec<Line>, usize) {
        let mut dec = ConsoleDecoder::new(table);
        let mut out = Vec::new();
        for chunk in chunks {
            dec.feed(chunk, &mut out);
        }
        dec.finish(&mut out);
        (out, dec.malformed_frames())
    }

    fn texts(lines: &[Line]) -> Vec<String> {
        lines.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn formats_lines() {
        assert_eq!(Line::log("cpu0", Level::Info, "capabilities: x").to_string(), "[cpu0 INFO ] capabilities: x");
        assert_eq!(Line::log("cpu3", Level::Error, "bad").to_string(), "[cpu3 ERROR] bad");
        assert_eq!(Line::log("cpu1", Level::Warn, "w").to_string(), "[cpu1 WARN ] w");
        let no_ts = Line::Log { timestamp: None, level: Some(Level::Debug), message: "m".into() };
        assert_eq!(no_ts.to_string(), "[DEBUG] m");
        let println = Line::Log { timestamp: Some("cpu0".into()), level: None, message: "p".into() };
        assert_eq!(println.to_string(), "[cpu0      ] p");
        assert_eq!(Line::Console("GRUB".into()).to_string(), "[console] GRUB");
        assert_eq!(Line::Decoder("x".into()).to_string(), "[decoder] x");
    }

    #[test]
    fn run_end_lines_are_recognised_only_as_log_frames() {
        assert!(Line::log("cpu0", Level::Info, "run ended: success").is_run_success());
        let fail = Line::log("cpu0", Level::Error, "run ended: failure: exception");
        assert!(fail.is_run_failure() && !fail.is_run_success());
        assert!(!Line::Console("run ended: success".into()).is_run_end());
        assert!(!Line::log("cpu0", Level::Info, "run ended: successful?").is_run_success());
    }

    #[test]
    fn strips_ansi_and_carriage_returns() {
        assert_eq!(clean_text(b"\x1b[H\x1b[J\x1b[1;1HGRUB loading.\r"), "GRUB loading.");
        assert_eq!(clean_text(b"\x1b[0m\x1b[37m\x1b[40merror: file not found.\r"), "error: file not found.");
        assert_eq!(clean_text(b"\x1b]0;title\x07after"), "after");
        assert_eq!(clean_text(b"\x1b]2;t\x1b\\after"), "after");
        assert_eq!(clean_text(b"a\x1b(Bb\x1bcc"), "abc");
        assert_eq!(clean_text(b"\x1b[?25l\x1b[25;80Hx"), "x");
        assert_eq!(clean_text(b"tab\there  \r\r"), "tab here");
        assert_eq!(clean_text(b"bell\x07 nul\x00 del\x7f"), "bell nul del");
        assert_eq!(clean_text("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(clean_text(b"bad \xff byte"), "bad \u{fffd} byte");
        // An escape cut off at the end of the line does not eat anything else.
        assert_eq!(clean_text(b"end\x1b["), "end");
        assert_eq!(clean_text(b"end\x1b"), "end");
    }

    #[test]
    fn text_before_sync_becomes_console_lines() {
        let (lines, _) =
            decode_all(None, &[b"SeaBIOS (version 1.16)\r\n\r\n\x1b[2J\r\nBooting from DVD/CD...\r\nGRUB"]);
        assert_eq!(
            texts(&lines),
            ["[console] SeaBIOS (version 1.16)", "[console] Booting from DVD/CD...", "[console] GRUB"]
        );
    }

    #[test]
    fn text_lines_split_across_chunks_are_joined() {
        let (lines, _) = decode_all(None, &[b"Boo", b"ting\r", b"\nnext", b" line\n"]);
        assert_eq!(texts(&lines), ["[console] Booting", "[console] next line"]);
    }

    #[test]
    fn frames_after_sync_are_decoded() {
        let table = table();
        let mut bytes = b"GRUB says hi\r\n".to_vec();
        bytes.extend_from_slice(CONSOLE_SYNC);
        bytes.extend(frame(INFO_HELLO, 0, &0x1234_5678u32.to_le_bytes()));
        bytes.extend(frame(ERROR_BOOM, 3, &[]));
        bytes.extend(frame(PRINTLN, 1, &[0]));
        let (lines, malformed) = decode_all(Some(&table), &[&bytes]);
        assert_eq!(
            texts(&lines),
            ["[console] GRUB says hi", "[cpu0 INFO ] hello 305419896", "[cpu3 ERROR] boom", "[cpu1      ] plain 0",]
        );
        assert_eq!(malformed, 0);
        assert_eq!(lines[2].level(), Some(Level::Error));
    }

    #[test]
    fn sync_and_frames_split_at_every_byte_boundary() {
        let table = table();
        let mut bytes = b"firmware\r\nGRUB".to_vec();
        bytes.extend_from_slice(CONSOLE_SYNC);
        // Zero bytes inside the payload exercise every rzcobs group kind.
        bytes.extend(frame(INFO_HELLO, 0, &[0, 0, 1, 0]));
        bytes.extend(frame(INFO_HELLO, 2, &[0xff, 0xff, 0xff, 0xff]));
        let want =
            ["[console] firmware", "[console] GRUB", "[cpu0 INFO ] hello 65536", "[cpu2 INFO ] hello 4294967295"];
        for split in 0..bytes.len() {
            let (a, b) = bytes.split_at(split);
            let (lines, malformed) = decode_all(Some(&table), &[a, b]);
            assert_eq!(texts(&lines), want, "split at {split}");
            assert_eq!(malformed, 0, "split at {split}");
        }
        // And one byte at a time.
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        let (lines, _) = decode_all(Some(&table), &chunks);
        assert_eq!(texts(&lines), want);
    }

    #[test]
    fn text_on_the_marker_line_is_kept() {
        let table = table();
        let mut bytes = b"no newline before marker".to_vec();
        bytes.extend_from_slice(&CONSOLE_SYNC[2..]); // marker without its leading CR LF
        bytes.extend(frame(ERROR_BOOM, 0, &[]));
        let (lines, _) = decode_all(Some(&table), &[&bytes]);
        assert_eq!(texts(&lines), ["[console] no newline before marker", "[cpu0 ERROR] boom"]);
    }

    #[test]
    fn malformed_frames_are_skipped_counted_and_noted() {
        let table = table();
        let mut bytes = CONSOLE_SYNC.to_vec();
        bytes.extend(frame(INFO_HELLO, 0, &7u32.to_le_bytes()));
        bytes.extend(frame(999, 0, &[])); // unknown string index
        bytes.extend_from_slice(b"line noise\0"); // not rzcobs at all
        // A frame that lost a byte on the line.
        let mut lost = frame(INFO_HELLO, 0, &0x0102_0304u32.to_le_bytes());
        lost.remove(1);
        bytes.extend(lost);
        bytes.extend(frame(ERROR_BOOM, 1, &[]));
        let (lines, malformed) = decode_all(Some(&table), &[&bytes]);
        assert_eq!(malformed, 3);
        assert_eq!(lines.first().unwrap().to_string(), "[cpu0 INFO ] hello 7");
        assert_eq!(lines.last().unwrap().to_string(), "[cpu1 ERROR] boom");
        let notes = lines.iter().filter(|l| matches!(l, Line::Decoder(t) if t.contains("malformed"))).count();
        assert_eq!(notes, 3);
    }

    #[test]
    fn marker_text_alone_does_not_leak_into_output() {
        let (lines, _) = decode_all(None, &[CONSOLE_SYNC]);
        assert!(lines.iter().all(|l| !l.message().contains("@@")), "{lines:?}");
    }

    #[test]
    fn without_a_table_frames_are_counted_not_invented() {
        let mut bytes = b"hi\n".to_vec();
        bytes.extend_from_slice(CONSOLE_SYNC);
        let frame = frame(INFO_HELLO, 0, &[1, 2, 3, 4]);
        bytes.extend(&frame);
        let (lines, _) = decode_all(None, &[&bytes]);
        assert_eq!(lines[0].to_string(), "[console] hi");
        // Said at once, when the stream switches, and counted at the end.
        assert!(lines[1].to_string().contains("switched to defmt frames, but there is no defmt table"));
        let counted = format!("{} bytes of defmt frames not decoded: no defmt table", frame.len());
        assert!(lines[2].to_string().contains(&counted), "{lines:?}");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn a_table_can_follow_the_marker() {
        let table = table();
        let mut bytes = b"GRUB\r\n".to_vec();
        bytes.extend_from_slice(CONSOLE_SYNC);
        let first = frame(INFO_HELLO, 0, &5u32.to_le_bytes());
        bytes.extend(&first);
        let mut dec = ConsoleDecoder::with_table_later();
        let mut out = Vec::new();
        dec.feed(&bytes, &mut out);
        assert!(dec.needs_table() && dec.format() == Some(StreamFormat::Defmt));
        assert_eq!(texts(&out), ["[console] GRUB"], "no note while a table may still come");
        dec.set_table(&table, &mut out);
        dec.feed(&frame(ERROR_BOOM, 1, &[]), &mut out);
        dec.finish(&mut out);
        assert!(!dec.needs_table());
        assert_eq!(texts(&out), ["[console] GRUB", "[cpu0 INFO ] hello 5", "[cpu1 ERROR] boom"]);
        // Without a table ever: nothing invented, the bytes counted at the end.
        let mut dec = ConsoleDecoder::with_table_later();
        let mut out = Vec::new();
        dec.feed(&bytes, &mut out);
        dec.finish(&mut out);
        let counted = format!("{} bytes of defmt frames not decoded", first.len());
        assert!(out.last().unwrap().to_string().contains(&counted), "{out:?}");
    }

    /// A text console's bytes: what came before, the marker, the lines with CR LF.
    fn text_stream(before: &[u8], lines: &[&str]) -> Vec<u8> {
        let mut bytes = before.to_vec();
        bytes.extend_from_slice(TEXT_CONSOLE_SYNC);
        for line in lines {
            bytes.extend_from_slice(line.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        bytes
    }

    #[test]
    fn text_lines_round_trip_every_level_and_form() {
        let lines = [
            Line::log("cpu0", Level::Trace, "t"),
            Line::log("cpu1", Level::Debug, "  [0x000000100000, 0x000000200000) Usable"),
            Line::log("cpu0", Level::Info, "config: partition 0 control: cores [1], watchdog none"),
            Line::log("cpu2", Level::Warn, "w] with [brackets] inside"),
            Line::log("cpu15", Level::Error, "run ended: failure: a cause"),
            Line::log("cpu0", Level::Info, ""),
            Line::Log { timestamp: Some("cpu0".into()), level: None, message: "println".into() },
            Line::Log { timestamp: None, level: Some(Level::Debug), message: "no timestamp".into() },
        ];
        let shown: Vec<String> = lines.iter().map(ToString::to_string).collect();
        let bytes = text_stream(b"SeaBIOS\r\nGRUB loading", &shown.iter().map(String::as_str).collect::<Vec<_>>());
        let (decoded, malformed) = decode_all(None, &[&bytes]);
        assert_eq!(malformed, 0);
        assert_eq!(decoded[..2], [Line::Console("SeaBIOS".into()), Line::Console("GRUB loading".into())]);
        assert_eq!(decoded[2..], lines);
        assert!(decoded[6].is_run_failure());
    }

    #[test]
    fn text_partition_lines_stay_the_partitions() {
        let bytes = text_stream(b"", &["[cpu1 INFO ] [control] run ended: success"]);
        let (lines, _) = decode_all(None, &[&bytes]);
        assert_eq!(lines, [Line::log("cpu1", Level::Info, "[control] run ended: success")]);
        assert_eq!(lines[0].partition_console(), Some("control"));
        assert!(!lines[0].is_run_success(), "a guest's words are not the kernel's verdict");
    }

    #[test]
    fn malformed_text_lines_are_skipped_counted_and_noted() {
        let bytes = text_stream(
            b"",
            &[
                "[cpu0 INFO ] first",
                "no brackets at all",
                "[cpu0 LOUD ] unknown level",
                "[cpu 0 INFO ] space in the timestamp",
                "[cpu0 INFO",
                "",
                "[cpu1 WARN ] last",
            ],
        );
        let (lines, malformed) = decode_all(None, &[&bytes]);
        assert_eq!(malformed, 4);
        assert_eq!(lines.first(), Some(&Line::log("cpu0", Level::Info, "first")));
        assert_eq!(lines.last(), Some(&Line::log("cpu1", Level::Warn, "last")));
        let notes: Vec<String> =
            lines.iter().filter(|l| matches!(l, Line::Decoder(_))).map(|l| l.to_string()).collect();
        assert_eq!(notes.len(), 4, "{notes:?}");
        assert!(notes[0].contains("malformed text log line skipped (1 so far): no brackets at all"), "{notes:?}");
    }

    #[test]
    fn text_marker_and_lines_split_at_every_byte_boundary() {
        let bytes = text_stream(b"firmware\r\nGRUB", &["[cpu0 INFO ] one", "[cpu1 ERROR] two"]);
        let want = ["[console] firmware", "[console] GRUB", "[cpu0 INFO ] one", "[cpu1 ERROR] two"];
        for split in 0..bytes.len() {
            let (a, b) = bytes.split_at(split);
            let (lines, malformed) = decode_all(None, &[a, b]);
            assert_eq!(texts(&lines), want, "split at {split}");
            assert_eq!(malformed, 0, "split at {split}");
        }
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        let mut dec = ConsoleDecoder::new(None);
        let mut out = Vec::new();
        for chunk in chunks {
            dec.feed(chunk, &mut out);
        }
        assert_eq!(dec.format(), Some(StreamFormat::Text));
        assert!(!dec.needs_table(), "a text console needs no table");
        dec.finish(&mut out);
        assert_eq!(texts(&out), want);
    }

    #[test]
    fn the_last_text_line_needs_no_line_end_and_overlong_lines_are_skipped() {
        let mut bytes = text_stream(b"", &["[cpu0 INFO ] a"]);
        bytes.extend(std::iter::repeat_n(b'x', MAX_TEXT_LINE * 2));
        bytes.extend_from_slice(b"\r\n[cpu0 INFO ] after\r\n[cpu0 INFO ] cut off");
        let chunks: Vec<&[u8]> = bytes.chunks(1000).collect();
        let (lines, malformed) = decode_all(None, &chunks);
        assert_eq!(malformed, 1);
        assert_eq!(lines[0], Line::log("cpu0", Level::Info, "a"));
        assert!(lines[1].to_string().contains("longer than 4096 bytes"), "{lines:?}");
        assert_eq!(lines[2..], [Line::log("cpu0", Level::Info, "after"), Line::log("cpu0", Level::Info, "cut off")]);
    }

    #[test]
    fn control_characters_never_reach_a_message_in_either_format() {
        // A text line with raw control characters (line noise; the kernel escapes its own).
        let bytes = text_stream(b"", &["[cpu0 INFO ] red \x1b[31m bell \x07"]);
        let (lines, _) = decode_all(None, &[&bytes]);
        assert_eq!(lines, [Line::log("cpu0", Level::Info, "red \\u{1b}[31m bell \\u{7}")]);
        // A defmt frame whose message holds a newline: shown as the text console shows it.
        let table = table();
        let text = "two\nlines";
        let mut args = (text.len() as u32).to_le_bytes().to_vec();
        args.extend_from_slice(text.as_bytes());
        let mut bytes = CONSOLE_SYNC.to_vec();
        bytes.extend(frame(INFO_SAY, 0, &args));
        let (lines, _) = decode_all(Some(&table), &[&bytes]);
        assert_eq!(lines, [Line::log("cpu0", Level::Info, "say two\\nlines")]);
        assert_eq!(lines[0].to_string().lines().count(), 1);
    }

    #[test]
    fn the_first_marker_decides_the_format() {
        let mut bytes = text_stream(b"", &["[cpu0 INFO ] text first"]);
        bytes.extend_from_slice(CONSOLE_SYNC);
        bytes.extend_from_slice(b"\r\n[cpu0 INFO ] still text\r\n");
        let (lines, malformed) = decode_all(None, &[&bytes]);
        assert_eq!(lines[0], Line::log("cpu0", Level::Info, "text first"));
        // The defmt marker inside a text stream is only text that is not a log line (its
        // marker line, and its zero byte).
        assert_eq!(malformed, 2);
        assert_eq!(lines.last(), Some(&Line::log("cpu0", Level::Info, "still text")));
    }

    #[test]
    fn runaway_text_line_is_cut_but_marker_still_found() {
        let table = table();
        let mut bytes = vec![b'x'; MAX_TEXT_LINE * 3];
        bytes.extend_from_slice(CONSOLE_SYNC);
        bytes.extend(frame(ERROR_BOOM, 0, &[]));
        let chunks: Vec<&[u8]> = bytes.chunks(1000).collect();
        let (lines, _) = decode_all(Some(&table), &chunks);
        assert_eq!(lines.last().unwrap().to_string(), "[cpu0 ERROR] boom");
        let text: usize = lines.iter().filter(|l| matches!(l, Line::Console(_))).map(|l| l.message().len()).sum();
        assert_eq!(text, MAX_TEXT_LINE * 3);
    }
}
