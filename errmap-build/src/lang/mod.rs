//! The generated helpers, one renderer per language, over plain data.
//!
//! Every renderer writes the same things for each catalog of a file: the
//! table of its entries, a reader per code (`is_<name>`), one reader of the
//! whole entry (`entry_of`), and a builder per code that returns that
//! language's error carrying `ErrorInfo`, `LocalizedMessage` and, where the
//! catalog has a delay, `RetryInfo` with `grpc-retry-pushback-ms`. The
//! readers decide as the Rust reader does: the code and message inside
//! `grpc-status-details-bin` equal the status's own, there is exactly one
//! `ErrorInfo`, and its domain and reason are this catalog's.

use std::collections::BTreeMap;

use crate::spec::{CatalogSpec, EntrySpec};

pub(crate) mod go;
pub(crate) mod python;
pub(crate) mod typescript;

/// The extension that relative TypeScript imports carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportExtension {
    /// `./x_pb` (protoc-gen-es v2's default).
    None,
    /// `./x_pb.js`, for Node's ES modules.
    Js,
    /// `./x_pb.ts`, for Deno and `allowImportingTsExtensions`.
    Ts,
}

/// Where a Go file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoPaths {
    /// In the directory of its `go_package` import path (protoc-gen-go's
    /// default).
    Import,
    /// Beside the `.proto` file, at its path.
    SourceRelative,
}

/// One file the plugin writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// The path under the output directory, `/`-separated.
    pub name: String,
    /// The file's text.
    pub content: String,
}

/// What a renderer is given: one `.proto` file and its catalogs.
pub(crate) struct Source<'a> {
    /// The file's path, as protoc names it (`shop/v1/shop.proto`).
    pub(crate) file: &'a str,
    /// The `go_package` option, if set.
    pub(crate) go_package: Option<String>,
    /// The catalogs the file defines, in file order.
    pub(crate) catalogs: &'a [&'a CatalogSpec],
}

/// Checks that two Go files of one request do not share a package, where
/// their `Entry` and `EntryOf` would clash.
pub(crate) fn check_go_packages(files: &[GeneratedFile]) -> Result<(), String> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for f in files {
        let dir = f.name.rsplit_once('/').map_or("", |(d, _)| d);
        if let Some(first) = seen.insert(dir, &f.name) {
            return Err(format!(
                "{first} and {} are in one Go package; put each catalog file in a go_package of its own",
                f.name
            ));
        }
    }
    Ok(())
}

/// `shop/v1/shop.proto` to `shop/v1/shop`.
pub(crate) fn stem(file: &str) -> &str {
    file.strip_suffix(".proto").unwrap_or(file)
}

/// The value's name without the enum's prefix, as the Rust variant and
/// prost drop it: `SHOP_ERROR_CARD_DECLINED` in `ShopError` is
/// `CARD_DECLINED`; `AUTH_REQUIRED` in `ErrorCode` stays.
pub(crate) fn short_value_name<'a>(enum_name: &str, value: &'a str) -> &'a str {
    let prefix = format!("{}_", crate::screaming_snake(enum_name));
    value
        .strip_prefix(&prefix)
        .filter(|rest| rest.starts_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(value)
}

/// `card_declined`: the short name's words, lower case.
pub(crate) fn snake(catalog: &CatalogSpec, entry: &EntrySpec) -> String {
    short_value_name(&catalog.short_name, &entry.name)
        .split('_')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join("_")
}

/// `CardDeclined`: the Rust variant's name.
pub(crate) fn upper_camel(catalog: &CatalogSpec, entry: &EntrySpec) -> String {
    crate::variant_name(&catalog.short_name, &entry.name)
}

/// `cardDeclined`.
pub(crate) fn lower_camel(catalog: &CatalogSpec, entry: &EntrySpec) -> String {
    let upper = upper_camel(catalog, entry);
    let mut chars = upper.chars();
    chars
        .next()
        .map(|first| first.to_ascii_lowercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// `ShopError` to `SHOP_ERROR`, for constants.
pub(crate) use crate::screaming_snake as upper_snake;

/// A gRPC code's name as Connect's `Code` and grpc-go's `codes` spell it:
/// `NOT_FOUND` is `NotFound`, and `CANCELLED` is `Canceled`.
pub(crate) fn grpc_code_camel(grpc: &str) -> String {
    if grpc == "CANCELLED" {
        return "Canceled".to_owned();
    }
    crate::upper_camel(grpc)
}

/// One line about an entry for a doc comment: `NAME (number, GRPC_CODE,
/// retry after N ms): message`, with the name and message as the caller
/// quotes them.
pub(crate) fn summary(entry: &EntrySpec, name: &str, message: &str) -> String {
    let retry = match entry.retry_delay {
        Some(d) => format!(", retry after {} ms", pushback_ms(d)),
        None => String::new(),
    };
    format!(
        "{name} ({}, {}{retry}): {message}",
        entry.number, entry.grpc_code
    )
}

/// Fails when two values of a file give one helper name, or a value gives
/// a name the helpers use themselves. `names` maps each generated name to
/// the value it came from.
pub(crate) fn check_names<'a>(
    file: &str,
    names: impl IntoIterator<Item = (String, &'a str)>,
    taken: &[&str],
) -> Result<(), String> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for (name, value) in names {
        if taken.contains(&name.as_str()) {
            return Err(format!(
                "{file}: {value}: its helper would be named {name}, which the generated file uses for itself; rename the value"
            ));
        }
        if let Some(first) = seen.insert(name.clone(), value) {
            return Err(format!(
                "{file}: {first} and {value} both give the helper name {name}; rename one"
            ));
        }
    }
    Ok(())
}

/// A string literal that Python, TypeScript and Go all read back as
/// `text`: double quotes, with `\\`, `\"`, and `\uXXXX` for control
/// characters and the line and paragraph separators; other characters as
/// they are (the files are UTF-8).
pub(crate) fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A comment-safe one-line version of a message, for doc comments.
pub(crate) fn comment(text: &str) -> String {
    text.replace(['\n', '\r'], " ").replace("*/", "* /")
}

/// Every locale of an entry, English first: `("en-US", message)`, then
/// the translations in tag order.
pub(crate) fn messages(entry: &EntrySpec) -> Vec<(&str, &str)> {
    let mut all = vec![("en-US", entry.message.as_str())];
    all.extend(
        entry
            .translations
            .iter()
            .map(|(tag, text)| (tag.as_str(), text.as_str())),
    );
    all
}

/// The retry delay in milliseconds, rounded up, for
/// `grpc-retry-pushback-ms`.
pub(crate) fn pushback_ms(delay: (u64, u32)) -> u64 {
    delay.0 * 1000 + u64::from(delay.1).div_ceil(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_drop_the_enum_prefix_as_prost_does() {
        assert_eq!(
            short_value_name("ShopError", "SHOP_ERROR_CARD_DECLINED"),
            "CARD_DECLINED"
        );
        assert_eq!(
            short_value_name("ErrorCode", "AUTH_REQUIRED"),
            "AUTH_REQUIRED"
        );
        // A prefix followed by a digit stays, as prost keeps it.
        assert_eq!(
            short_value_name("ShopError", "SHOP_ERROR_3D_SECURE"),
            "SHOP_ERROR_3D_SECURE"
        );
    }

    #[test]
    fn quoting_escapes_what_each_language_would_misread() {
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote("line\nnext\u{2028}"), r#""line\nnext\u2028""#);
        assert_eq!(quote("Карта {sku}"), "\"Карта {sku}\"");
    }

    #[test]
    fn connect_and_go_name_the_codes_alike() {
        assert_eq!(grpc_code_camel("NOT_FOUND"), "NotFound");
        assert_eq!(grpc_code_camel("CANCELLED"), "Canceled");
        assert_eq!(grpc_code_camel("UNAUTHENTICATED"), "Unauthenticated");
    }

    #[test]
    fn pushback_rounds_up_to_a_millisecond() {
        assert_eq!(pushback_ms((1, 0)), 1000);
        assert_eq!(pushback_ms((0, 1)), 1);
        assert_eq!(pushback_ms((2, 500_000_000)), 2500);
    }
}
