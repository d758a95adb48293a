//! Standard output and standard error: `sys_write` and `sys_writev` on fds 1 and 2.
//!
//! Bytes collect per line ([`crate::line_buffer`]) and leave as whole lines through the
//! Bulkhead console-write hypercall (0x8001), one exit per line or less; the hypervisor
//! puts them on the partition's console with its `[name]` prefix. Where the hypervisor
//! answers INVALID_HYPERCALL_CODE (an older Bulkhead) or has no hypercall page, the same
//! lines go to the partition's virtual UART at 0x3F8, one exit per byte.
//!
//! The last bytes written to standard error are kept: std prints a panic's message there
//! just before it aborts, and the crash report repeats them.

use crate::line_buffer::LineBuffer;
use bulkhead_abi::hyperv::hypercall::code;
use bulkhead_abi::hyperv::{CONSOLE_WRITE_MAX, ConsoleWriteInput, HvStatus, HypercallInput, HypercallResult};
use core::cell::UnsafeCell;
use hermit_abi::{EBADF, EFAULT, EINVAL, iovec};
use spin::Mutex;

/// The partition's virtual 16550 (COM1).
const UART: u16 = 0x3F8;
/// Bytes of standard error kept for a crash report.
const STDERR_TAIL: usize = 512;

struct Console {
    lines: LineBuffer<CONSOLE_WRITE_MAX>,
    hypercall: bool,
    stderr_tail: [u8; STDERR_TAIL],
    stderr_len: usize,
}

static CONSOLE: Mutex<Console> =
    Mutex::new(Console { lines: LineBuffer::new(), hypercall: false, stderr_tail: [0; STDERR_TAIL], stderr_len: 0 });

/// The console write's input block: a page of its own, used only under [`CONSOLE`]'s lock
/// (TLFS: the block is 8-byte aligned and within one page).
#[repr(C, align(4096))]
struct InputPage(UnsafeCell<ConsoleWriteInput>);
// SAFETY: only touched with CONSOLE locked.
unsafe impl Sync for InputPage {}
static INPUT: InputPage =
    InputPage(UnsafeCell::new(ConsoleWriteInput { len: 0, reserved: 0, text: [0; CONSOLE_WRITE_MAX] }));

/// Chooses the hypercall when there is a hypercall page and the hypervisor knows the call
/// (an empty write asks, one exit at start); returns whether it is used.
pub fn init(hypercall: bool) -> bool {
    let mut console = CONSOLE.lock();
    let mut known = hypercall;
    if known {
        emit_hypercall(b"", &mut known);
    }
    console.hypercall = known;
    known
}

impl Console {
    fn write(&mut self, bytes: &[u8], stderr: bool) {
        if stderr {
            self.keep_stderr(bytes);
        }
        let mut hypercall = self.hypercall;
        self.lines.write(bytes, &mut |chunk| emit(chunk, &mut hypercall));
        self.hypercall = hypercall;
    }

    fn flush(&mut self) {
        let mut hypercall = self.hypercall;
        self.lines.flush(&mut |chunk| emit(chunk, &mut hypercall));
        self.hypercall = hypercall;
    }

    fn keep_stderr(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(STDERR_TAIL)..];
        let keep = (STDERR_TAIL - bytes.len()).min(self.stderr_len);
        self.stderr_tail.copy_within(self.stderr_len - keep..self.stderr_len, 0);
        self.stderr_tail[keep..keep + bytes.len()].copy_from_slice(bytes);
        self.stderr_len = keep + bytes.len();
    }
}

/// Sends one chunk (whole lines, or a piece of an overlong line); switches to the UART
/// for good if the hypervisor does not know the call.
fn emit(chunk: &[u8], hypercall: &mut bool) {
    if *hypercall && emit_hypercall(chunk, hypercall) {
        return;
    }
    write_uart(chunk);
}

/// The console-write hypercall with `chunk`; false (and `hypercall` cleared) if it could
/// not be made or the hypervisor does not know it.
fn emit_hypercall(chunk: &[u8], hypercall: &mut bool) -> bool {
    {
        // SAFETY: the caller holds CONSOLE's lock, the only user of the page.
        let input = unsafe { &mut *INPUT.0.get() };
        input.len = chunk.len() as u32;
        input.reserved = 0;
        input.text[..chunk.len()].copy_from_slice(chunk);
        let value = HypercallInput::new(code::BULKHEAD_CONSOLE_WRITE).value();
        match crate::hypercall::call(value, input as *const ConsoleWriteInput as u64) {
            Some(raw) if HypercallResult::decode(raw).status_code() == HvStatus::InvalidHypercallCode.code() => {
                *hypercall = false;
                false
            }
            Some(_) => true,
            None => {
                *hypercall = false;
                false
            }
        }
    }
}

fn write_uart(bytes: &[u8]) {
    for &b in bytes {
        crate::cpu::outb(UART, b);
    }
}

/// Writes straight to the UART, past the buffer and its lock: the crash path, where the
/// lock may be held by the code that faulted.
pub fn write_raw(bytes: &[u8]) {
    write_uart(bytes);
}

/// Sends what is buffered before a crash report; skipped if the console is locked (the
/// fault happened inside it).
pub fn flush_for_crash() {
    if let Some(mut console) = CONSOLE.try_lock() {
        console.flush();
    }
}

/// Sends what is buffered (at exit).
pub fn flush() {
    CONSOLE.lock().flush();
}

/// Runs `with` on the last bytes written to standard error.
pub fn with_stderr_tail<T>(with: impl FnOnce(&[u8]) -> T) -> Option<T> {
    CONSOLE.try_lock().map(|console| with(&console.stderr_tail[..console.stderr_len]))
}

/// `write(fd, buf, len)`: fds 1 and 2 only; the whole buffer is taken.
#[unsafe(no_mangle)]
pub extern "C" fn sys_write(fd: i32, buf: *const u8, len: usize) -> isize {
    if fd != 1 && fd != 2 {
        return -(EBADF as isize);
    }
    if len == 0 {
        return 0;
    }
    if buf.is_null() {
        return -(EFAULT as isize);
    }
    // SAFETY: std passes a buffer of `len` readable bytes.
    let bytes = unsafe { core::slice::from_raw_parts(buf, len) };
    CONSOLE.lock().write(bytes, fd == 2);
    len as isize
}

/// `writev(fd, iov, iovcnt)`: as [`sys_write`] for each buffer in turn.
#[unsafe(no_mangle)]
pub extern "C" fn sys_writev(fd: i32, iov: *const iovec, iovcnt: usize) -> isize {
    if fd != 1 && fd != 2 {
        return -(EBADF as isize);
    }
    if iovcnt > hermit_abi::IOV_MAX || (iov.is_null() && iovcnt > 0) {
        return -(EINVAL as isize);
    }
    if iovcnt == 0 {
        return 0;
    }
    // SAFETY: std passes `iovcnt` descriptors, each of `iov_len` readable bytes.
    let vectors = unsafe { core::slice::from_raw_parts(iov, iovcnt) };
    let mut console = CONSOLE.lock();
    let mut total = 0isize;
    for v in vectors {
        if v.iov_len == 0 {
            continue;
        }
        // SAFETY: as above.
        let bytes = unsafe { core::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) };
        console.write(bytes, fd == 2);
        total += v.iov_len as isize;
    }
    total
}

/// Writes one formatted line of the runtime's own (exit status, start failures).
pub fn write_line(args: core::fmt::Arguments<'_>) {
    struct Lines<'a>(&'a mut Console);
    impl core::fmt::Write for Lines<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            self.0.write(s.as_bytes(), false);
            Ok(())
        }
    }
    let mut console = CONSOLE.lock();
    let _ = core::fmt::write(&mut Lines(&mut console), args);
    console.write(b"\n", false);
}
