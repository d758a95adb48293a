//! The partition's command line (NUL-terminated at 0x9000, its address in RDI): words
//! separated by spaces. Words `bulkhead.KEY=VALUE` are the runtime's own options and are
//! not passed to the program; every other word is one of its arguments, after `argv[0]`.

/// The prefix of the runtime's own options.
pub const OPTION_PREFIX: &str = "bulkhead.";

/// The words of `line` that are the program's arguments, in order.
pub fn arguments(line: &str) -> impl Iterator<Item = &str> {
    line.split_ascii_whitespace().filter(|w| !w.starts_with(OPTION_PREFIX))
}

/// The value of the runtime option `key` (`bulkhead.KEY=VALUE`), the last one given.
pub fn option<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix(OPTION_PREFIX)?.strip_prefix(key)?.strip_prefix('='))
        .next_back()
}

/// A size written as bytes (decimal or 0x hexadecimal) with an optional `K`, `M` or `G`
/// suffix (binary units).
pub fn parse_size(text: &str) -> Option<u64> {
    let (digits, unit) = match text.as_bytes().last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&text[..text.len() - 1], 1 << 20),
        b'G' | b'g' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    let value = match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse::<u64>().ok()?,
    };
    value.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_not_arguments() {
        let line = " fast  bulkhead.memory=8M  -v app:x ";
        assert_eq!(arguments(line).collect::<Vec<_>>(), ["fast", "-v", "app:x"]);
        assert_eq!(option(line, "memory"), Some("8M"));
        assert_eq!(option(line, "mem"), None);
        assert_eq!(option("bulkhead.memory=1M bulkhead.memory=2M", "memory"), Some("2M"));
        assert_eq!(arguments("").count(), 0);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16M"), Some(16 << 20));
        assert_eq!(parse_size("0x1000"), Some(4096));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999G"), None);
    }
}
