//! The console's line assembly: bytes collect until a line is complete, and what leaves is
//! whole lines, as many as fit one console write, so the hypervisor is entered once per
//! line or less (one console write carries up to a page; see
//! `bulkhead_abi::hyperv::CONSOLE_WRITE_MAX`).

/// Bytes waiting for the end of their line, at most `N`.
pub struct LineBuffer<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Default for LineBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LineBuffer<N> {
    pub const fn new() -> Self {
        Self { bytes: [0; N], len: 0 }
    }

    /// The bytes held.
    pub fn pending(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Adds `text`, calling `emit` with each chunk that must leave now: the complete
    /// lines (all of them together while they fit), or a full buffer of one line longer
    /// than the buffer. What remains is the start of the current line.
    pub fn write(&mut self, mut text: &[u8], emit: &mut impl FnMut(&[u8])) {
        while !text.is_empty() {
            let room = N - self.len;
            let take = text.len().min(room);
            self.bytes[self.len..self.len + take].copy_from_slice(&text[..take]);
            self.len += take;
            text = &text[take..];
            if self.len == N {
                // Full: send the complete lines; a line as long as the buffer goes as is.
                match self.pending().iter().rposition(|&b| b == b'\n') {
                    Some(last) => self.emit_through(last, emit),
                    None => self.flush(emit),
                }
            }
        }
        if let Some(last) = self.pending().iter().rposition(|&b| b == b'\n') {
            self.emit_through(last, emit);
        }
    }

    /// Sends whatever is held, complete line or not (at exit, before a crash report).
    pub fn flush(&mut self, emit: &mut impl FnMut(&[u8])) {
        if self.len > 0 {
            emit(self.pending());
            self.len = 0;
        }
    }

    /// Sends bytes `..=last` and keeps the rest.
    fn emit_through(&mut self, last: usize, emit: &mut impl FnMut(&[u8])) {
        emit(&self.bytes[..=last]);
        self.bytes.copy_within(last + 1..self.len, 0);
        self.len -= last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<const N: usize>(buffer: &mut LineBuffer<N>, writes: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for w in writes {
            buffer.write(w, &mut |chunk| out.push(chunk.to_vec()));
        }
        out
    }

    #[test]
    fn a_line_leaves_when_it_is_complete_in_one_chunk() {
        let mut b = LineBuffer::<64>::new();
        let out = run(&mut b, &[b"hel", b"lo", b" world\nnext"]);
        assert_eq!(out, vec![b"hello world\n".to_vec()]);
        assert_eq!(b.pending(), b"next");
    }

    #[test]
    fn several_lines_of_one_write_leave_together() {
        let mut b = LineBuffer::<64>::new();
        let out = run(&mut b, &[b"a\nb\nc"]);
        assert_eq!(out, vec![b"a\nb\n".to_vec()]);
        assert_eq!(b.pending(), b"c");
    }

    #[test]
    fn a_full_buffer_sends_its_complete_lines_then_long_lines_in_pieces() {
        let mut b = LineBuffer::<8>::new();
        let out = run(&mut b, &[b"ab\ncdefghijklmn"]);
        assert_eq!(out, vec![b"ab\n".to_vec(), b"cdefghij".to_vec()]);
        assert_eq!(b.pending(), b"klmn");
        let mut rest = Vec::new();
        b.flush(&mut |c| rest.push(c.to_vec()));
        assert_eq!(rest, vec![b"klmn".to_vec()]);
        assert!(b.pending().is_empty());
    }

    #[test]
    fn nothing_leaves_without_a_newline_or_a_flush() {
        let mut b = LineBuffer::<16>::new();
        assert!(run(&mut b, &[b"partial"]).is_empty());
        let mut none = 0;
        LineBuffer::<4>::new().flush(&mut |_| none += 1);
        assert_eq!(none, 0);
    }
}
