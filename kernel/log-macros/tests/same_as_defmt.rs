//! The text console prints what defmt's host decoder prints: each format string is logged
//! through `text_log!` and also encoded as the defmt frame the target would send (the wire
//! format of defmt 1.x), decoded with `defmt-decoder`, and the two messages compared.

use std::cell::Cell;
use std::fmt;

use defmt_decoder::Table;

/// What `text_log!` expects at `$crate::log` and `$crate::console` (the kernel's `log.rs`
/// and `console.rs` have the real ones).
mod log {
    use std::cell::RefCell;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Level {
        Trace,
        Debug,
        Info,
        Warn,
        Error,
    }

    /// As a kernel built with `log_level = "debug"`.
    pub const fn enabled(level: Level) -> bool {
        level as u8 >= Level::Debug as u8
    }

    thread_local! {
        pub static LINES: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
    }
}

mod console {
    use super::log::{LINES, Level};
    use std::fmt;

    pub fn write_line(level: Level, args: fmt::Arguments<'_>) {
        LINES.with(|l| l.borrow_mut().push((level, args.to_string())));
    }
}

use bulkhead_log_macros::text_log;

/// Runs `log` and returns the one line it printed.
fn text(log: impl FnOnce()) -> String {
    log::LINES.with(|l| l.borrow_mut().clear());
    log();
    let lines = log::LINES.with(|l| l.take());
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines[0].1.clone()
}

/// Index of the `{}` helper strings in the reference table.
const PRIM_U32: u16 = 2;
const WRITE_HELLO: u16 = 3;

/// Decodes a frame of string `format` (entry 1, no timestamp) with arguments `args`.
fn decoded(format: &str, args: &Enc) -> String {
    let json = serde_json::json!({
        "timestamp": null,
        "entries": {
            "1": {"string": {"tag": "Info", "string": format}, "raw_symbol": "a"},
            PRIM_U32.to_string(): {"string": {"tag": "Prim", "string": "{=u32}"}, "raw_symbol": "b"},
            WRITE_HELLO.to_string(): {"string": {"tag": "Write", "string": "hello {=u8}"}, "raw_symbol": "c"},
        },
        "bitflags": {},
        "encoding": "Raw"
    });
    let table: Table = serde_json::from_value(json).expect("reference table");
    let mut frame = 1u16.to_le_bytes().to_vec();
    frame.extend_from_slice(&args.0);
    let (frame, used) = table.decode(&frame).unwrap_or_else(|e| panic!("{format}: {e:?}"));
    assert_eq!(used, args.0.len() + 2, "{format}: the whole frame is read");
    frame.display_message().to_string()
}

/// The arguments as the target's `defmt::export` functions put them on the wire.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn u8(self, v: u8) -> Self {
        self.raw(&[v])
    }
    fn u16(self, v: u16) -> Self {
        self.raw(&v.to_le_bytes())
    }
    fn u32(self, v: u32) -> Self {
        self.raw(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> Self {
        self.raw(&v.to_le_bytes())
    }
    fn u128(self, v: u128) -> Self {
        self.raw(&v.to_le_bytes())
    }
    /// `usize` and `isize` travel as 32 bits.
    fn usize(self, v: usize) -> Self {
        self.u32(v as u32)
    }
    fn str(self, s: &str) -> Self {
        self.usize(s.len()).raw(s.as_bytes())
    }
    fn bytes(self, b: &[u8]) -> Self {
        self.usize(b.len()).raw(b)
    }
    /// `{=[?]}` of u32s: length, the element type's format string, the values.
    fn u32_slice(self, values: &[u32]) -> Self {
        let mut e = self.usize(values.len()).u16(PRIM_U32);
        for v in values {
            e = e.u32(*v);
        }
        e
    }
}

/// Stands for a type whose `defmt::Format` impl is `write!(f, "hello {=u8}", self.0)`.
struct Hello(u8);

impl fmt::Display for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        bulkhead_log_macros::text_write!(f, "hello {=u8}", self.0)
    }
}

macro_rules! same {
    ($format:literal, $enc:expr $(, $arg:expr)* $(,)?) => {{
        let text = text(|| text_log!(crate, info, $format $(, $arg)*));
        let defmt = decoded($format, &$enc);
        assert_eq!(text, defmt, "format string {:?}", $format);
        text
    }};
}

#[test]
fn unsigned_and_signed_integers() {
    let e = Enc::default().u8(255).u16(65535).u32(7).u64(u64::MAX).u128(u128::MAX);
    same!("a {=u8} b {=u16} c {=u32} d {=u64} e {=u128}", e, 255u8, 65535u16, 7u32, u64::MAX, u128::MAX);
    let e = Enc::default().u8(0x80).u16(0xfffe).u32((-3i32) as u32).u64((-4i64) as u64).u128((-5i128) as u128);
    let s = same!("{=i8} {=i16} {=i32} {=i64} {=i128}", e, -128i8, -2i16, -3i32, -4i64, -5i128);
    assert_eq!(s, "-128 -2 -3 -4 -5");
}

#[test]
fn radix_padding_and_debug_hints() {
    let v = 0x2f_u64;
    let e = Enc::default().u64(v).u64(v).u64(v).u64(v).u64(v);
    let s = same!("{=u64:#x} {=u64:x} {=u64:X} {=u64:#X} {=u64:#012x}", e, v, v, v, v, v);
    assert_eq!(s, "0x2f 2f 2F 0x2F 0x000000002f");
    let e = Enc::default().u32(42).u8(5).u8(5).u16(8).u16(8).u32(9);
    same!("{=u32:08} {=u8:#b} {=u8:08b} {=u16:o} {=u16:#o} {=u32:?}", e, 42u32, 5u8, 5u8, 8u16, 8u16, 9u32);
    // Negative numbers in hex: two's complement of their own width.
    let e = Enc::default().u32((-1i32) as u32).u8(0xfe);
    let s = same!("{=i32:x} {=i8:#x}", e, -1i32, -2i8);
    assert_eq!(s, "ffffffff 0xfe");
}

#[test]
fn booleans_characters_and_strings() {
    let e = Enc::default().u8(1).u8(0).u32('é' as u32);
    same!("{=bool} {=bool} {=char}", e, true, false, 'é');
    let tricky = "quote \" backslash \\ tab\t end";
    let e = Enc::default().str(tricky).str(tricky);
    let s = same!("{=str} and {=str:?}", e, tricky, tricky);
    assert!(s.contains(r#""quote \" backslash \\ tab\t end""#), "{s}");
    // Owned strings and references to them are taken as `&str`, as defmt does.
    let owned = String::from("owned");
    same!("{=str} {=str}", Enc::default().str("owned").str("owned"), owned, &owned);
}

#[test]
fn usize_and_isize_show_what_defmt_sends() {
    let big = 0x1_0000_0005_usize;
    let e = Enc::default().usize(big).u32((-7i32) as u32);
    let s = same!("{=usize} {=isize}", e, big, -7isize);
    assert_eq!(s, "5 -7", "defmt sends 32 bits; the text console shows the same");
}

#[test]
fn slices_arrays_and_bytes() {
    let cores: &[u32] = &[1, 2, 3];
    same!("cores {=[?]}", Enc::default().u32_slice(cores), cores);
    let none: &[u32] = &[];
    assert_eq!(same!("cores {=[?]}", Enc::default().u32_slice(none), none), "cores []");
    // A Vec and an array are taken as slices, as defmt takes them.
    let vec = vec![4u32, 5];
    same!("{=[?]} {=[?]}", Enc::default().u32_slice(&vec).u32_slice(&[6, 7]), vec, [6u32, 7]);
    let e = Enc::default().bytes(&[1, 2, 255]).raw(&[9, 8, 7]);
    let s = same!("{=[u8]} {=[u8; 3]}", e, [1u8, 2, 255].as_slice(), [9u8, 8, 7]);
    assert_eq!(s, "[1, 2, 255] [9, 8, 7]");
}

#[test]
fn formatted_values_use_display_for_format() {
    let e = Enc::default().u16(WRITE_HELLO).u8(7).u16(WRITE_HELLO).u8(8);
    let s = same!("{} then {=?}", e, Hello(7), Hello(8));
    assert_eq!(s, "hello 7 then hello 8");
}

#[test]
fn braces_indices_and_trailing_commas() {
    let s = same!("{{x}} = {=u8}", Enc::default().u8(1), 1u8,);
    assert_eq!(s, "{x} = 1");
    let e = Enc::default().str("a").u8(10);
    let s = same!("{1=u8} {0=str} {1=u8:#x}", e, "a", 10u8);
    assert_eq!(s, "10 a 0xa");
    same!("no arguments", Enc::default());
}

#[test]
fn filtered_levels_print_nothing_but_evaluate_their_arguments_once() {
    let evaluated = Cell::new(0u32);
    let next = || {
        evaluated.set(evaluated.get() + 1);
        evaluated.get()
    };
    log::LINES.with(|l| l.borrow_mut().clear());
    text_log!(crate, trace, "filtered {=u32}", next());
    assert!(log::LINES.with(|l| l.borrow().is_empty()), "trace is below the level");
    assert_eq!(evaluated.get(), 1, "defmt evaluates filtered arguments too");
    let line = text(|| text_log!(crate, warn, "{0=u32} twice {0=u32}", next()));
    assert_eq!(line, "2 twice 2");
    assert_eq!(evaluated.get(), 2, "one evaluation per argument");
    for (level, expected) in [(log::Level::Error, "e"), (log::Level::Debug, "d")] {
        log::LINES.with(|l| l.borrow_mut().clear());
        match level {
            log::Level::Error => text_log!(crate, error, "e"),
            _ => text_log!(crate, debug, "d"),
        }
        assert_eq!(log::LINES.with(|l| l.take()), [(level, expected.to_string())]);
    }
}
