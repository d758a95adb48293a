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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_not_arguments() {
        let line = " fast  bulkhead.verbose=1  -v app:x ";
        assert_eq!(arguments(line).collect::<Vec<_>>(), ["fast", "-v", "app:x"]);
        assert_eq!(option(line, "verbose"), Some("1"));
        assert_eq!(option(line, "verb"), None);
        assert_eq!(option("bulkhead.verbose=1 bulkhead.verbose=2", "verbose"), Some("2"));
        assert_eq!(arguments("").count(), 0);
    }
}
