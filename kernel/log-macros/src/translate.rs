//! From a defmt format string to a `core::fmt` one that prints what defmt's host decoder
//! prints for the same arguments.
//!
//! The string is parsed by `defmt-parser` (the parser defmt's own macros and its decoder
//! use, in the macros' strict mode), so both builds read it identically. Each parameter
//! becomes a positional `{N:spec}`; what the decoder does with each type and display hint
//! (defmt-decoder 1.2, `Frame::format_args`) is mirrored here, and anything it does that
//! `core::fmt` cannot reproduce is refused with a message, never approximated.

use defmt_parser::{DisplayHint, Fragment, ParserMode, Type};

/// How one argument is taken (its type check) and shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// `{=u8}` .. `{=u128}`, `{=i8}` .. `{=i128}`: the type's name.
    Int(&'static str),
    /// `{=usize}`: defmt sends it as 32 bits, so the decoder shows it truncated to `u32`.
    Usize,
    /// `{=isize}`: sent as 32 bits, like `usize`.
    Isize,
    Bool,
    Char,
    /// `{=str}`.
    Str,
    /// `{}` or `{=?}`: the argument's `Display`, which stands for its `defmt::Format`.
    Display,
    /// `{=[?]}`: a slice whose elements are shown with their `Display`, as `[a, b]`.
    Slice,
    /// `{=[?; N]}`: an array of N such elements.
    Array(usize),
    /// `{=[u8]}`: bytes, shown as `[1, 2]`.
    Bytes,
    /// `{=[u8; N]}`.
    ByteArray(usize),
}

/// A translated format string: the `core::fmt` string (arguments by position) and, for
/// each argument index, how to take it.
#[derive(Debug, PartialEq, Eq)]
pub struct Translation {
    pub format: String,
    pub args: Vec<Arg>,
}

/// Translates `format` (a defmt format string); the error says what is not supported.
pub fn translate(format: &str) -> Result<Translation, String> {
    let fragments = defmt_parser::parse(format, ParserMode::Strict).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let mut args: Vec<Option<Arg>> = Vec::new();
    for fragment in &fragments {
        match fragment {
            Fragment::Literal(text) => {
                for c in text.chars() {
                    match c {
                        '{' => out.push_str("{{"),
                        '}' => out.push_str("}}"),
                        c => out.push(c),
                    }
                }
            }
            Fragment::Parameter(param) => {
                let arg = arg_of(&param.ty)?;
                let spec = spec_of(arg, param.hint.as_ref())?;
                if args.len() <= param.index {
                    args.resize(param.index + 1, None);
                }
                // The parser already refuses one index with two types.
                args[param.index] = Some(arg);
                out.push('{');
                out.push_str(&param.index.to_string());
                if !spec.is_empty() {
                    out.push(':');
                    out.push_str(&spec);
                }
                out.push('}');
            }
        }
    }
    // The parser refuses unused indices, so every index has its argument.
    let args = args.into_iter().collect::<Option<Vec<Arg>>>().ok_or("an argument index is never used")?;
    Ok(Translation { format: out, args })
}

fn arg_of(ty: &Type) -> Result<Arg, String> {
    Ok(match ty {
        Type::U8 => Arg::Int("u8"),
        Type::U16 => Arg::Int("u16"),
        Type::U32 => Arg::Int("u32"),
        Type::U64 => Arg::Int("u64"),
        Type::U128 => Arg::Int("u128"),
        Type::I8 => Arg::Int("i8"),
        Type::I16 => Arg::Int("i16"),
        Type::I32 => Arg::Int("i32"),
        Type::I64 => Arg::Int("i64"),
        Type::I128 => Arg::Int("i128"),
        Type::Usize => Arg::Usize,
        Type::Isize => Arg::Isize,
        Type::Bool => Arg::Bool,
        Type::Char => Arg::Char,
        Type::Str => Arg::Str,
        Type::Format => Arg::Display,
        Type::FormatSlice => Arg::Slice,
        Type::FormatArray(n) => Arg::Array(*n),
        Type::U8Slice => Arg::Bytes,
        Type::U8Array(n) => Arg::ByteArray(*n),
        Type::F32 | Type::F64 => {
            return Err("floating-point arguments are not supported by the text console (defmt's decoder \
                        prints them with ryu, which core::fmt does not match); log an integer instead"
                .into());
        }
        Type::IStr => return Err("`{=istr}` (an interned string) is not supported by the text console".into()),
        Type::BitField(_) => return Err("bit-field arguments are not supported by the text console".into()),
        Type::Debug | Type::Display | Type::FormatSequence => {
            return Err(format!("defmt's internal type {ty:?} is not supported by the text console"));
        }
    })
}

/// The `core::fmt` spec (what follows `:`) that prints an argument as the decoder does.
fn spec_of(arg: Arg, hint: Option<&DisplayHint>) -> Result<String, String> {
    let unsupported = |what: &str| Err(format!("display hint {hint:?} on {what} is not supported by the text console"));
    let radix = |alternate: bool, zero_pad: usize, letter: char| {
        let mut spec = String::new();
        if alternate {
            spec.push('#');
        }
        if zero_pad > 0 {
            spec.push('0');
            spec.push_str(&zero_pad.to_string());
        }
        spec.push(letter);
        spec
    };
    match arg {
        Arg::Int(_) | Arg::Usize | Arg::Isize => match hint {
            // `:?` on an integer: the decoder falls back to the parent's hint, which a
            // top-level argument does not have.
            None | Some(DisplayHint::NoHint { zero_pad: 0 }) | Some(DisplayHint::Debug) => Ok(String::new()),
            Some(DisplayHint::NoHint { zero_pad }) => Ok(format!("0{zero_pad}")),
            // defmt-decoder 1.2 cannot show isize in a radix (it panics), so neither do we.
            Some(DisplayHint::Hexadecimal { .. } | DisplayHint::Octal { .. } | DisplayHint::Binary { .. })
                if arg == Arg::Isize =>
            {
                unsupported("an isize")
            }
            Some(DisplayHint::Hexadecimal { alternate, uppercase, zero_pad }) => {
                Ok(radix(*alternate, *zero_pad, if *uppercase { 'X' } else { 'x' }))
            }
            Some(DisplayHint::Octal { alternate, zero_pad }) => Ok(radix(*alternate, *zero_pad, 'o')),
            Some(DisplayHint::Binary { alternate, zero_pad }) => Ok(radix(*alternate, *zero_pad, 'b')),
            Some(_) => unsupported("an integer"),
        },
        // The decoder shows booleans and characters the same whatever the hint.
        Arg::Bool | Arg::Char => Ok(String::new()),
        // Strings: quoted and escaped with `:?`, as they are otherwise.
        Arg::Str => Ok(if hint == Some(&DisplayHint::Debug) { "?".into() } else { String::new() }),
        // A hint on a formatted value is handed down to its fields by the decoder; a
        // Display impl cannot see it.
        Arg::Display | Arg::Slice | Arg::Array(_) => match hint {
            None => Ok(String::new()),
            Some(_) => unsupported("a `{}`/`{=[?]}` argument"),
        },
        Arg::Bytes | Arg::ByteArray(_) => match hint {
            None => Ok("?".into()),
            Some(_) => unsupported("bytes"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(format: &str) -> (String, Vec<Arg>) {
        let Translation { format, args } = translate(format).unwrap_or_else(|e| panic!("{format}: {e}"));
        (format, args)
    }

    #[test]
    fn typed_parameters_become_positional_arguments() {
        assert_eq!(
            t("cpu {=u32} online: apic_id={=u32} ({=str})"),
            ("cpu {0} online: apic_id={1} ({2})".into(), vec![Arg::Int("u32"), Arg::Int("u32"), Arg::Str])
        );
        assert_eq!(t("no arguments"), ("no arguments".into(), vec![]));
        assert_eq!(t("{=bool} {=usize} {=isize} {=char}").1, [Arg::Bool, Arg::Usize, Arg::Isize, Arg::Char]);
    }

    #[test]
    fn radix_and_padding_hints_keep_their_rust_meaning() {
        assert_eq!(t("{=u64:#x}").0, "{0:#x}");
        assert_eq!(t("{=u64:x}").0, "{0:x}");
        assert_eq!(t("{=u64:X}").0, "{0:X}");
        assert_eq!(t("{=u64:#012x}").0, "{0:#012x}");
        assert_eq!(t("{=u8:08b}").0, "{0:08b}");
        assert_eq!(t("{=u16:#o}").0, "{0:#o}");
        assert_eq!(t("{=u32:05}").0, "{0:05}");
        assert_eq!(t("{=u32:?}").0, "{0}");
        assert_eq!(t("{=i32:#x}").0, "{0:#x}");
    }

    #[test]
    fn strings_and_formatted_values() {
        assert_eq!(t("{=str:?}").0, "{0:?}");
        assert_eq!(t("{} and {=?}"), ("{0} and {1}".into(), vec![Arg::Display, Arg::Display]));
        assert_eq!(t("cores {=[?]}"), ("cores {0}".into(), vec![Arg::Slice]));
        assert_eq!(t("{=[?; 3]}").1, [Arg::Array(3)]);
        assert_eq!(t("{=[u8]} {=[u8; 4]}"), ("{0:?} {1:?}".into(), vec![Arg::Bytes, Arg::ByteArray(4)]));
        // Hints that do not change what the decoder prints.
        assert_eq!(t("{=bool:x} {=char:?}").0, "{0} {1}");
    }

    #[test]
    fn explicit_indices_and_repeats() {
        assert_eq!(t("{1=u8} {0=str} {1=u8:#x}"), ("{1} {0} {1:#x}".into(), vec![Arg::Str, Arg::Int("u8")]));
    }

    #[test]
    fn braces_in_literals_are_escaped() {
        assert_eq!(t("set {{a, b}} = {=u8}").0, "set {{a, b}} = {0}");
    }

    #[test]
    fn what_cannot_be_mirrored_is_refused_with_a_reason() {
        for (format, why) in [
            ("{=f32}", "floating-point"),
            ("{=f64}", "floating-point"),
            ("{=istr}", "interned"),
            ("{=0..4}", "bit-field"),
            ("{=u8:a}", "Ascii"),
            ("{=u64:us}", "Seconds"),
            ("{=u64:iso8601ms}", "ISO8601"),
            ("{=isize:x}", "isize"),
            ("{:x}", "`{}`"),
            ("{=[u8]:x}", "bytes"),
        ] {
            let err = translate(format).expect_err(format);
            assert!(err.contains(why), "{format}: {err}");
        }
        // defmt's own parse errors come through unchanged.
        assert!(translate("{=u8").is_err());
        assert!(translate("{0=u8} {0=u16}").is_err());
        assert!(translate("{1=u8}").is_err(), "index 0 unused");
    }
}
