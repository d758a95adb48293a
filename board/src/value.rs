//! Reading the spanned TOML tree: typed getters that report instead of failing.
//!
//! The files are parsed with `toml`'s span-preserving `DeTable` rather than deserialized with
//! serde, because serde stops at the first error and we must report all of them. Each getter
//! returns `None` after reporting the problem at the offending value, so a caller simply skips
//! what is broken and carries on with the rest of the file. Nothing here indexes, unwraps or
//! does unchecked arithmetic on input.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diag::{FileId, Loc, Sink, rule};

pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

pub(crate) const KIB: u64 = 1 << 10;
pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const GIB: u64 = 1 << 30;

/// The file being read and where its problems go.
pub(crate) struct Cx<'s> {
    pub file: FileId,
    pub sink: &'s mut Sink,
}

impl Cx<'_> {
    pub fn loc(&self, span: &Range<usize>) -> Loc {
        Loc { file: self.file, offset: span.start }
    }

    pub fn at(&self, value: &Value<'_>) -> Loc {
        self.loc(&value.span())
    }

    pub fn error(&mut self, span: &Range<usize>, rule: &'static str, message: impl Into<String>) {
        let loc = self.loc(span);
        self.sink.error(loc, rule, message);
    }

    pub fn error_hint(
        &mut self,
        span: &Range<usize>,
        rule: &'static str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let loc = self.loc(span);
        self.sink.error_hint(loc, rule, message, hint);
    }

    fn mismatch(&mut self, value: &Value<'_>, key: &str, expected: &str) {
        let found = value.get_ref().type_str();
        self.error_hint(
            &value.span(),
            rule::TYPE_MISMATCH,
            format!("`{key}` must be {expected}, found {found}"),
            format!("write `{key}` as {expected}"),
        );
    }

    pub fn string<'a>(&mut self, value: &'a Value<'_>, key: &str) -> Option<&'a str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            _ => {
                self.mismatch(value, key, "a string");
                None
            }
        }
    }

    pub fn boolean(&mut self, value: &Value<'_>, key: &str) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.mismatch(value, key, "a boolean (true or false)");
                None
            }
        }
    }

    pub fn array<'a, 'i>(&mut self, value: &'a Value<'i>, key: &str) -> Option<&'a [Value<'i>]> {
        match value.get_ref() {
            DeValue::Array(a) => Some(a),
            _ => {
                self.mismatch(value, key, "an array");
                None
            }
        }
    }

    /// Any integer (range checks are left to the caller, which knows the rule to report).
    pub fn int(&mut self, value: &Value<'_>, key: &str) -> Option<i128> {
        let DeValue::Integer(int) = value.get_ref() else {
            self.mismatch(value, key, "an integer");
            return None;
        };
        let parsed = i128::from_str_radix(int.as_str(), int.radix()).ok();
        if parsed.is_none() {
            self.error(&value.span(), rule::INVALID_VALUE, format!("`{key}` = {int} is too large"));
        }
        parsed
    }

    /// An integer between 0 and `max`.
    pub fn uint(&mut self, value: &Value<'_>, key: &str, max: u64) -> Option<u64> {
        let DeValue::Integer(int) = value.get_ref() else {
            self.mismatch(value, key, "an integer");
            return None;
        };
        let parsed = i128::from_str_radix(int.as_str(), int.radix()).ok();
        match parsed.and_then(|n| u64::try_from(n).ok()) {
            Some(n) if n <= max => Some(n),
            _ => {
                self.error_hint(
                    &value.span(),
                    rule::INVALID_VALUE,
                    format!("`{key}` = {int} is out of range"),
                    format!("`{key}` must be between 0 and {max} ({max:#x})"),
                );
                None
            }
        }
    }

    /// A size in bytes: an integer, or a string such as "64 MiB" (units B, KiB, MiB, GiB, TiB).
    pub fn size(&mut self, value: &Value<'_>, key: &str) -> Option<u64> {
        match value.get_ref() {
            DeValue::Integer(_) => self.uint(value, key, u64::MAX),
            DeValue::String(s) => match parse_size(s) {
                Ok(n) => Some(n),
                Err(why) => {
                    self.error_hint(
                        &value.span(),
                        rule::INVALID_VALUE,
                        format!("`{key}` = {s:?} is not a size: {why}"),
                        "write a size as an integer number of bytes or as a string like \"4 KiB\", \"64 MiB\", \"1 GiB\"",
                    );
                    None
                }
            },
            _ => {
                self.mismatch(value, key, "a size (an integer or a string like \"64 MiB\")");
                None
            }
        }
    }

    /// A table; `what` names it in messages, `known` lists the keys it may hold.
    pub fn table<'a, 'i>(
        &mut self,
        value: &'a Value<'i>,
        key: &str,
        what: &'static str,
        known: &'static [&'static str],
    ) -> Option<Table<'a, 'i>> {
        match value.get_ref() {
            DeValue::Table(map) => Some(Table::new(self, map, value.span(), what, known)),
            _ => {
                self.mismatch(value, key, "a table");
                None
            }
        }
    }
}

/// Parses "64 MiB", "4KiB", "0x1000", "512 B", "4096".
pub(crate) fn parse_size(text: &str) -> Result<u64, &'static str> {
    let text = text.trim();
    let (number, radix, unit) = match text.strip_prefix("0x") {
        Some(hex) => (hex, 16, ""),
        None => {
            let end = text.find(|c: char| !(c.is_ascii_digit() || c == '_')).unwrap_or(text.len());
            let number = text.get(..end).unwrap_or("");
            (number, 10, text.get(end..).unwrap_or("").trim())
        }
    };
    let cleaned: String = number.chars().filter(|&c| c != '_').collect();
    if cleaned.is_empty() {
        return Err("no number");
    }
    let n = u64::from_str_radix(&cleaned, radix).map_err(|_| "bad or too large number")?;
    let scale = match unit {
        "" | "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        "TiB" => 1 << 40,
        _ => return Err("unknown unit (use B, KiB, MiB, GiB or TiB)"),
    };
    n.checked_mul(scale).ok_or("larger than 2^64 bytes")
}

/// A table being read, with the keys it may contain.
pub(crate) struct Table<'a, 'i> {
    map: &'a DeTable<'i>,
    pub span: Range<usize>,
    pub what: &'static str,
}

impl<'a, 'i> Table<'a, 'i> {
    /// Wraps a table and reports its unknown keys right away.
    pub fn new(
        cx: &mut Cx<'_>,
        map: &'a DeTable<'i>,
        span: Range<usize>,
        what: &'static str,
        known: &'static [&'static str],
    ) -> Self {
        for (key, _) in map.iter() {
            let name: &str = key.get_ref();
            if !known.contains(&name) {
                let hint = match closest(name, known) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => format!("{what} keys are: {}", known.join(", ")),
                };
                cx.error_hint(&key.span(), rule::UNKNOWN_KEY, format!("unknown key `{name}` in {what}"), hint);
            }
        }
        Table { map, span, what }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value<'i>> {
        self.map.get(key)
    }

    /// The value of a required key, or a `missing-key` report at the table.
    pub fn required(&self, cx: &mut Cx<'_>, key: &str) -> Option<&'a Value<'i>> {
        let value = self.get(key);
        if value.is_none() {
            cx.error_hint(
                &self.span,
                rule::MISSING_KEY,
                format!("{} is missing `{key}`", self.what),
                format!("add `{key} = ...` to this {}", self.what),
            );
        }
        value
    }

    /// Where a missing optional value would be reported: the key if present, else the table.
    pub fn key_span(&self, key: &str) -> Range<usize> {
        self.map.get_key_value(key).map_or(self.span.clone(), |(k, _)| k.span())
    }

    /// Reads an array of tables (`[[key]]` or `key = [{...}]`), each with `known` keys.
    pub fn tables(
        &self,
        cx: &mut Cx<'_>,
        key: &str,
        what: &'static str,
        known: &'static [&'static str],
    ) -> Vec<Table<'a, 'i>> {
        let Some(value) = self.get(key) else {
            return Vec::new();
        };
        let Some(items) = cx.array(value, key) else {
            return Vec::new();
        };
        items.iter().filter_map(|item| cx.table(item, key, what, known)).collect()
    }
}

/// The known key nearest to a misspelt one, if it is close.
fn closest(name: &str, known: &[&'static str]) -> Option<&'static str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    // Keys longer than this are not misspellings of ours; avoid quadratic work on junk.
    if a.len() > 64 {
        return usize::MAX;
    }
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row.first().copied().unwrap_or(0);
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or(0);
            let left = row.get(j).copied().unwrap_or(0);
            let cost = usize::from(ca != *cb);
            let best = (prev + cost).min(above + 1).min(left + 1);
            prev = above;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = best;
            }
        }
    }
    row.last().copied().unwrap_or(0)
}

/// Names of partitions, devices and shared regions: they become boot module names and
/// appear in generated Rust strings and comments, so keep them plain.
pub(crate) fn check_name(cx: &mut Cx<'_>, value: &Value<'_>, key: &str) -> Option<String> {
    let name = cx.string(value, key)?;
    let ok = name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Some(name.to_owned())
    } else {
        cx.error_hint(
            &value.span(),
            rule::INVALID_VALUE,
            format!("`{key}` = {name:?} is not a valid name"),
            "names start with a lowercase letter and use only a-z, 0-9, '-' and '_' (at most 32 characters)",
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64 MiB"), Ok(64 * MIB));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("0x1000"), Ok(4096));
        assert_eq!(parse_size("1_024"), Ok(1024));
        assert_eq!(parse_size("2 GiB"), Ok(2 * GIB));
        assert_eq!(parse_size("7 B"), Ok(7));
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("4 mb").is_err());
        assert!(parse_size("99999999999 TiB").is_err());
        assert!(parse_size("-4 KiB").is_err());
        assert!(parse_size("0xzz").is_err());
    }

    #[test]
    fn spelling_suggestions() {
        assert_eq!(closest("guest_bse", &["guest_base", "size"]), Some("guest_base"));
        assert_eq!(closest("zzzzzz", &["guest_base", "size"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
