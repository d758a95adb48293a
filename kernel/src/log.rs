//! The kernel's logging facade: every log line goes through [`trace!`], [`debug!`],
//! [`info!`], [`warn!`] and [`error!`], never through defmt's macros directly.
//!
//! The console format is chosen at build time (`[hypervisor] console_format`); the kernel's
//! build script turns it into `--cfg bulkhead_console="defmt"` or `="text"`.
//!
//! - **defmt** (default): each macro *is* defmt's (`defmt::info!(...)`, the tokens passed
//!   unchanged), so the frames, the `.defmt` table and the code are those of a kernel that
//!   calls defmt itself; nothing is formatted on the target.
//! - **text**: each macro hands the same defmt format string to
//!   `bulkhead_log_macros::text_log!`, which turns it into a `core::fmt` string at compile
//!   time and prints the line the host decoder would print for the defmt frame
//!   (`console::write_line`). defmt is then not used at all: no global logger is linked, so a
//!   stray defmt frame cannot reach the text console (the build would not link).
//!
//! Calls are therefore written in defmt's syntax (`{=u32}`, `{=u64:#x}`, `{=str}`,
//! `{=[?]}`, `{}`), and work in both builds. What the text build cannot print exactly as
//! the decoder would is a compile error there (floats, time hints, ...; see the macro
//! crate), and `kernel/log-macros/src/kernel_sources.rs` checks every call of the kernel
//! against it on the host, whichever format the default system uses. `{}` takes a
//! `defmt::Format` value in a defmt build and a `core::fmt::Display` one in a text build:
//! [`Debug2Format`] and [`Display2Format`] are both, [`impl_format!`] writes both impls from
//! one body, and [`derived_format!`] gives enums that derive `defmt::Format` the `Display`
//! that matches it. The level filter is the configuration's `log_level` in both builds,
//! applied at compile time; like defmt, a filtered call still evaluates its arguments.

/// Logs at TRACE level (see the module docs for the format string). No call logs at
/// TRACE so far; the level is part of the facade as it is of the configuration.
#[allow(unused_macros)]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::__log!(trace, $($arg)+) };
}

/// Logs at DEBUG level.
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::__log!(debug, $($arg)+) };
}

/// Logs at INFO level.
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::__log!(info, $($arg)+) };
}

/// Logs at WARN level. (Defined as `warn_` and exported as `warn`: a `use` of the bare
/// name `warn` would be ambiguous with the built-in `#[warn]` attribute.)
macro_rules! warn_ {
    ($($arg:tt)+) => { $crate::log::__log!(warn, $($arg)+) };
}

/// Logs at ERROR level.
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::__log!(error, $($arg)+) };
}

#[cfg(bulkhead_console = "defmt")]
macro_rules! __log {
    (trace, $($arg:tt)+) => { ::defmt::trace!($($arg)+) };
    (debug, $($arg:tt)+) => { ::defmt::debug!($($arg)+) };
    (info, $($arg:tt)+) => { ::defmt::info!($($arg)+) };
    (warn, $($arg:tt)+) => { ::defmt::warn!($($arg)+) };
    (error, $($arg:tt)+) => { ::defmt::error!($($arg)+) };
}

#[cfg(bulkhead_console = "text")]
macro_rules! __log {
    ($level:ident, $($arg:tt)+) => { ::bulkhead_log_macros::text_log!($crate, $level, $($arg)+) };
}

/// `write!(f, "defmt format", args...)` inside [`impl_format!`]: `defmt::write!` or
/// `core::write!` with the translated string.
#[cfg(bulkhead_console = "defmt")]
macro_rules! write {
    ($f:expr, $($arg:tt)+) => { ::defmt::write!($f, $($arg)+) };
}

#[cfg(bulkhead_console = "text")]
macro_rules! write {
    ($f:expr, $($arg:tt)+) => { ::bulkhead_log_macros::text_write!($f, $($arg)+) };
}

/// `impl_format!(Type, |value, f| body)`: how `Type` shows in a `{}` parameter, written
/// once with [`write!`]: `defmt::Format` in a defmt build, `Display` in a text build.
#[cfg(bulkhead_console = "defmt")]
macro_rules! impl_format {
    ($ty:ty, |$value:ident, $f:ident| $body:expr) => {
        impl ::defmt::Format for $ty {
            fn format(&self, $f: ::defmt::Formatter<'_>) {
                let $value = self;
                $body
            }
        }
    };
}

#[cfg(bulkhead_console = "text")]
macro_rules! impl_format {
    ($ty:ty, |$value:ident, $f:ident| $body:expr) => {
        impl ::core::fmt::Display for $ty {
            fn fmt(&self, $f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                let $value = self;
                $body
            }
        }
    };
}

/// For enums that `#[cfg_attr(bulkhead_console = "defmt", derive(defmt::Format))]`: in a
/// text build, `Display` as the decoder shows the derived frames (`Variant`,
/// `Variant(3)`), which for unit variants and integer fields is what `derive(Debug)` writes.
#[cfg(bulkhead_console = "defmt")]
macro_rules! derived_format {
    ($($ty:ty),+ $(,)?) => {};
}

#[cfg(bulkhead_console = "text")]
macro_rules! derived_format {
    ($($ty:ty),+ $(,)?) => {
        $(
            impl ::core::fmt::Display for $ty {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    ::core::fmt::Debug::fmt(self, f)
                }
            }
        )+
    };
}

#[allow(unused_imports)]
pub(crate) use trace;
pub(crate) use warn_ as warn;
pub(crate) use {__log, debug, derived_format, error, impl_format, info, write};

#[cfg(bulkhead_console = "defmt")]
pub use defmt::{Debug2Format, Display2Format};

#[cfg(bulkhead_console = "text")]
pub use text::*;

/// What `text_log!` expands to calls, and the text build's `{}` wrappers.
#[cfg(bulkhead_console = "text")]
mod text {
    use core::fmt;

    pub use bulkhead_board::tables::LogLevel as Level;

    /// Whether `level` passes the configured `log_level`; `text_log!` asks in a `const`
    /// block, so filtered calls print nothing and cost nothing.
    pub const fn enabled(level: Level) -> bool {
        level as u8 <= crate::config::SYSTEM.hypervisor.log_level as u8
    }

    /// `{}` shows the value's `Debug`, as `defmt::Debug2Format` makes the decoder show it.
    pub struct Debug2Format<'a, T: fmt::Debug + ?Sized>(pub &'a T);

    impl<T: fmt::Debug + ?Sized> fmt::Display for Debug2Format<'_, T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            fmt::Debug::fmt(self.0, f)
        }
    }

    /// `{}` shows the value's `Display`, as `defmt::Display2Format` makes the decoder show it.
    pub struct Display2Format<'a, T: fmt::Display + ?Sized>(pub &'a T);

    impl<T: fmt::Display + ?Sized> fmt::Display for Display2Format<'_, T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            fmt::Display::fmt(self.0, f)
        }
    }
}
