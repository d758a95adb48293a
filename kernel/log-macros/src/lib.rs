//! The text half of the kernel's logging facade (`kernel/src/log.rs`).
//!
//! The kernel's log calls are written once, in defmt's format-string syntax
//! (`"cpu {=u32} at {=u64:#x}: {}"`). A defmt build hands them to defmt unchanged; a
//! text-console build (`console_format = "text"`) hands them to [`text_log!`], which
//! turns the format string into a `core::fmt` one at compile time, so the kernel prints
//! the very line defmt's host decoder would have printed. Typed parameters keep defmt's
//! type check (`{=u32}` takes a `u32`, or a reference to one), arguments are evaluated
//! exactly once and also when the level is filtered out, as defmt does. A format string
//! whose output `core::fmt` cannot reproduce (floats, time and ASCII hints, ...) is a
//! compile error naming the reason; see `translate.rs`.
//!
//! Why a proc macro of our own: the crates that switch between defmt and `core::fmt`
//! (`defmt-or-log`) take only the syntax both accept (`{}`, `{:?}`), selected by Cargo
//! features rather than by the board's configuration. Rewriting the kernel's calls that way
//! would give up defmt's typed parameters (`{}` on an integer costs defmt a type tag per
//! argument), so the defmt build would no longer be the one it is today.

use proc_macro::TokenStream;
use proc_macro2::{Literal, TokenStream as TokenStream2, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Ident, LitStr, Token};

#[cfg(test)]
mod kernel_sources;
mod translate;

use translate::{Arg, translate};

/// `text_log!(KRATE, LEVEL, "defmt format", args...)`: one log line through
/// `KRATE::console::write_line(KRATE::log::Level::L, format_args!(...))`, if
/// `KRATE::log::enabled(Level::L)` (a `const fn`) allows it. LEVEL is `trace`, `debug`,
/// `info`, `warn` or `error`. Meant to be called by the kernel's `log::info!` etc. only.
#[proc_macro]
pub fn text_log(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as LogInput);
    let level = input.level;
    let krate = input.krate;
    expand(&input.format, &input.args, |format| {
        quote! {
            if const { #krate::log::enabled(#krate::log::Level::#level) } {
                #krate::console::write_line(#krate::log::Level::#level, ::core::format_args!(#format));
            }
        }
    })
    .unwrap_or_else(syn::Error::into_compile_error)
    .into()
}

/// `text_write!(FORMATTER, "defmt format", args...)`: `core::write!` to a
/// `core::fmt::Formatter` with the translated format string (for `Display` impls that
/// stand for `defmt::Format` ones, see the kernel's `log::impl_format!`).
#[proc_macro]
pub fn text_write(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as WriteInput);
    let formatter = input.formatter;
    expand(&input.format, &input.args, |format| quote!(::core::write!(#formatter, #format)))
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

struct LogInput {
    krate: TokenStream2,
    level: Ident,
    format: LitStr,
    args: Vec<Expr>,
}

impl Parse for LogInput {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        // The path of the kernel crate, `$crate` as the facade passes it: everything up
        // to the first comma, taken as it is.
        let krate = input.step(|cursor| {
            let mut tokens = TokenStream2::new();
            let mut rest = *cursor;
            while let Some((tree, next)) = rest.token_tree() {
                if matches!(&tree, TokenTree::Punct(p) if p.as_char() == ',') {
                    return Ok((tokens, rest));
                }
                tokens.extend([tree]);
                rest = next;
            }
            Err(cursor.error("expected the crate path, a level and a format string"))
        })?;
        input.parse::<Token![,]>()?;
        let raw: Ident = input.parse()?;
        let level = match raw.to_string().as_str() {
            "trace" => "Trace",
            "debug" => "Debug",
            "info" => "Info",
            "warn" => "Warn",
            "error" => "Error",
            _ => return Err(syn::Error::new(raw.span(), "the level is one of trace, debug, info, warn, error")),
        };
        input.parse::<Token![,]>()?;
        let (format, args) = format_and_args(input)?;
        Ok(LogInput { krate, level: Ident::new(level, raw.span()), format, args })
    }
}

struct WriteInput {
    formatter: Expr,
    format: LitStr,
    args: Vec<Expr>,
}

impl Parse for WriteInput {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let formatter = input.parse()?;
        input.parse::<Token![,]>()?;
        let (format, args) = format_and_args(input)?;
        Ok(WriteInput { formatter, format, args })
    }
}

/// `"format", arg, arg,` as defmt's macros take them (a trailing comma is fine).
fn format_and_args(input: ParseStream<'_>) -> syn::Result<(LitStr, Vec<Expr>)> {
    let format: LitStr = input.parse()?;
    if input.is_empty() {
        return Ok((format, Vec::new()));
    }
    input.parse::<Token![,]>()?;
    let args = Punctuated::<Expr, Token![,]>::parse_terminated(input)?;
    Ok((format, args.into_iter().collect()))
}

/// Binds the arguments once (`match (&(a), &(b)) { (arg0, arg1) => ... }`, as defmt
/// does), then lets `body` use the `format_args!` input: the translated string and each
/// argument taken as its parameter's type says.
fn expand(
    format: &LitStr,
    args: &[Expr],
    body: impl FnOnce(TokenStream2) -> TokenStream2,
) -> syn::Result<TokenStream2> {
    let translation = translate(&format.value()).map_err(|e| syn::Error::new(format.span(), e))?;
    if translation.args.len() != args.len() {
        let only = if args.len() < translation.args.len() { "only " } else { "" };
        return Err(syn::Error::new(
            format.span(),
            format!(
                "format string requires {} arguments but {only}{} were provided",
                translation.args.len(),
                args.len()
            ),
        ));
    }
    let names: Vec<Ident> = (0..args.len()).map(|i| format_ident!("arg{i}")).collect();
    let taken = translation.args.iter().zip(&names).zip(args).map(|((kind, name), expr)| take(*kind, name, expr));
    let core_format = LitStr::new(&translation.format, format.span());
    let body = body(quote!(#core_format #(, #taken)*));
    Ok(quote! {
        match (#(&(#args),)*) {
            (#(#names,)*) => { #body }
        }
    })
}

/// The expression that hands argument `name` (a reference to the value) to `format_args!`.
fn take(kind: Arg, name: &Ident, expr: &Expr) -> TokenStream2 {
    let span = expr.span();
    // Writes the elements of `value` (a slice) as the decoder writes a `{=[?]}`.
    let elements = quote_spanned! {span=>
        ::core::fmt::from_fn(move |f| {
            f.write_str("[")?;
            for (i, element) in value.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                ::core::fmt::Display::fmt(element, f)?;
            }
            f.write_str("]")
        })
    };
    match kind {
        Arg::Int(ty) => {
            let ty = Ident::new(ty, span);
            quote_spanned!(span=> { let value: &#ty = #name; value })
        }
        // defmt puts usize and isize on the wire as 32 bits; the decoder shows that.
        Arg::Usize => quote_spanned!(span=> { let value: &usize = #name; *value as u32 }),
        Arg::Isize => quote_spanned!(span=> { let value: &isize = #name; *value as i32 }),
        Arg::Bool => quote_spanned!(span=> { let value: &bool = #name; value }),
        Arg::Char => quote_spanned!(span=> { let value: &char = #name; value }),
        Arg::Str => quote_spanned!(span=> { let value: &str = #name; value }),
        Arg::Display => quote_spanned!(span=> #name),
        Arg::Slice => quote_spanned!(span=> { let value: &[_] = #name; #elements }),
        Arg::Array(n) => {
            let n = Literal::usize_unsuffixed(n);
            quote_spanned!(span=> { let value: &[_; #n] = #name; let value: &[_] = value; #elements })
        }
        Arg::Bytes => quote_spanned!(span=> { let value: &[u8] = #name; value }),
        Arg::ByteArray(n) => {
            let n = Literal::usize_unsuffixed(n);
            quote_spanned!(span=> { let value: &[u8; #n] = #name; value })
        }
    }
}
