//! The rules of an errmap catalog: reads catalog enums out of a descriptor
//! pool and validates them.
//!
//! The one set of catalog rules: `errmap-build` runs them in a team's
//! `build.rs`, and the `errmap` runtime runs them on descriptor sets loaded
//! at run time (`errmap serve --catalog`). A catalog that one accepts, the
//! other does.

use std::fmt;

use prost_reflect::{DescriptorPool, EnumValueDescriptor, Value};

pub mod compat;
pub mod template;

/// The canonical gRPC status codes, by name and number (google.rpc.Code).
pub const GRPC_CODES: [(&str, i32); 17] = [
    ("OK", 0),
    ("CANCELLED", 1),
    ("UNKNOWN", 2),
    ("INVALID_ARGUMENT", 3),
    ("DEADLINE_EXCEEDED", 4),
    ("NOT_FOUND", 5),
    ("ALREADY_EXISTS", 6),
    ("PERMISSION_DENIED", 7),
    ("RESOURCE_EXHAUSTED", 8),
    ("FAILED_PRECONDITION", 9),
    ("ABORTED", 10),
    ("OUT_OF_RANGE", 11),
    ("UNIMPLEMENTED", 12),
    ("INTERNAL", 13),
    ("UNAVAILABLE", 14),
    ("DATA_LOSS", 15),
    ("UNAUTHENTICATED", 16),
];

/// Longest message accepted, in bytes: keeps every status well under the
/// 8 KiB trailer budget.
pub const MAX_MESSAGE_LEN: usize = 512;

/// The longest reason AIP-193 allows.
pub const MAX_REASON_LEN: usize = 63;

/// A validated catalog.
#[derive(Debug, Clone)]
pub struct CatalogSpec {
    /// The ErrorInfo domain, from the enum's `(errmap.v1.domain)` option.
    pub domain: String,
    /// The enum's full name, e.g. `shop.v1.ShopError`.
    pub enum_name: String,
    /// The enum's own name, e.g. `ShopError`.
    pub short_name: String,
    /// The file that defines the enum.
    pub file: String,
    /// The values, sorted by number.
    pub entries: Vec<EntrySpec>,
    /// The numbers the enum reserves (`reserved 5, 9 to 11;`): codes that
    /// were removed and are never reused.
    pub reserved_numbers: Vec<std::ops::RangeInclusive<i32>>,
}

/// One validated catalog value.
#[derive(Debug, Clone)]
pub struct EntrySpec {
    /// The code, the enum value's number.
    pub number: i32,
    /// The reason, the enum value's name.
    pub name: String,
    /// The canonical gRPC code name, e.g. `UNAUTHENTICATED`.
    pub grpc_code: &'static str,
    /// The canonical gRPC code number, e.g. 16.
    pub grpc_number: i32,
    /// The legacy HTTP status.
    pub http_status: u16,
    /// The category, in snake_case.
    pub category: String,
    /// The English message.
    pub message: String,
    /// The retry delay as (seconds, nanoseconds), where the code has one.
    pub retry_delay: Option<(u64, u32)>,
    /// The message in other locales, sorted by BCP 47 tag (en-US is
    /// `message`).
    pub translations: Vec<(String, String)>,
    /// The placeholders of the message template, each once, in the order
    /// they first appear in the English message (empty for a plain
    /// message). Every translation has the same set.
    pub params: Vec<String>,
}

/// Everything wrong with a catalog, one problem a line, each naming the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogErrors(pub Vec<String>);

impl fmt::Display for CatalogErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(problem)?;
        }
        Ok(())
    }
}

impl std::error::Error for CatalogErrors {}

/// Whether `reason` has AIP-193's form: `[A-Z][A-Z0-9_]+[A-Z0-9]`, at most
/// 63 characters.
pub fn is_valid_reason(reason: &str) -> bool {
    let b = reason.as_bytes();
    b.len() >= 3
        && b.len() <= MAX_REASON_LEN
        && b[0].is_ascii_uppercase()
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
        && b[b.len() - 1] != b'_'
}

fn is_valid_category(category: &str) -> bool {
    let b = category.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

fn is_valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && !domain.starts_with(['.', '-'])
        && !domain.ends_with(['.', '-'])
        && domain
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
}

/// Reads the catalog enum `enum_name` (fully qualified, e.g.
/// `errmap.v1.ErrorCode`) from `pool`, with the option extensions
/// `errmap.v1.domain` and `errmap.v1.error`, and checks every rule of the
/// catalog. On failure every problem found is reported, not just the first.
pub fn read_catalog(pool: &DescriptorPool, enum_name: &str) -> Result<CatalogSpec, CatalogErrors> {
    let mut problems = Vec::new();
    let Some(enum_desc) = pool.get_enum_by_name(enum_name) else {
        return Err(CatalogErrors(vec![format!(
            "the catalog enum {enum_name} is not defined in the compiled protos"
        )]));
    };
    let file = enum_desc.parent_file().name().to_owned();
    let short = enum_desc.name().to_owned();
    let (Some(domain_ext), Some(error_ext)) = (
        pool.get_extension_by_name("errmap.v1.domain"),
        pool.get_extension_by_name("errmap.v1.error"),
    ) else {
        return Err(CatalogErrors(vec![format!(
            "{file}: {short}: the options errmap.v1.domain and errmap.v1.error are not defined; import errmap/v1/options.proto"
        )]));
    };

    let enum_options = enum_desc.options();
    let domain = if enum_options.has_extension(&domain_ext) {
        enum_options
            .get_extension(&domain_ext)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    } else {
        String::new()
    };
    if domain.is_empty() {
        problems.push(format!(
            "{file}: {short}: the enum has no (errmap.v1.domain) option; declare the ErrorInfo domain once on the enum"
        ));
    } else if !is_valid_domain(&domain) {
        problems.push(format!(
            "{file}: {short}: domain {domain:?} is not a lowercase DNS-style name"
        ));
    }

    let mut entries: Vec<EntrySpec> = Vec::new();
    for value in enum_desc.values() {
        if is_unspecified_zero(&value, value.options().has_extension(&error_ext)) {
            continue;
        }
        let at = format!("{file}: {short}.{}", value.name());
        match read_value(&value, &error_ext, &at) {
            Ok(entry) => {
                if let Some(other) = entries.iter().find(|e| e.number == entry.number) {
                    problems.push(format!(
                        "{at}: duplicate number {} (already used by {}); a code is never reused",
                        entry.number, other.name
                    ));
                } else {
                    entries.push(entry);
                }
            }
            Err(mut value_problems) => problems.append(&mut value_problems),
        }
    }
    if entries.is_empty() && problems.is_empty() {
        problems.push(format!("{file}: {short}: the catalog has no error codes"));
    }
    // Every value has every locale that any value has.
    let mut locales: Vec<&str> = entries
        .iter()
        .flat_map(|e| e.translations.iter().map(|(l, _)| l.as_str()))
        .collect();
    locales.sort_unstable();
    locales.dedup();
    for entry in &entries {
        for locale in &locales {
            if !entry.translations.iter().any(|(l, _)| l == locale) {
                problems.push(format!(
                    "{file}: {short}.{}: no {locale} message; every value of the catalog needs one",
                    entry.name
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(CatalogErrors(problems));
    }
    entries.sort_by_key(|e| e.number);
    Ok(CatalogSpec {
        domain,
        enum_name: enum_desc.full_name().to_owned(),
        short_name: short,
        file,
        entries,
        reserved_numbers: enum_desc.reserved_ranges().collect(),
    })
}

/// Every catalog in `pool`: each enum that carries `(errmap.v1.domain)` or
/// whose values carry `(errmap.v1.error)`, from the files named in `files`
/// (all files when empty), validated, with no two sharing a domain. Enums
/// named in `skip` are left out. Every problem is reported, each naming the
/// file, the enum and the value.
pub fn read_catalogs(
    pool: &DescriptorPool,
    files: &[String],
    skip: &[&str],
) -> Result<Vec<CatalogSpec>, CatalogErrors> {
    if pool.get_extension_by_name("errmap.v1.domain").is_none()
        || pool.get_extension_by_name("errmap.v1.error").is_none()
    {
        return Err(CatalogErrors(vec![
            "no file imports errmap/v1/options.proto, so no enum is an errmap catalog".to_owned(),
        ]));
    }
    let found = find_catalogs(pool, files, skip)?;
    if found.is_empty() {
        return Err(CatalogErrors(vec![
            "no enum carries (errmap.v1.domain) and (errmap.v1.error) options".to_owned(),
        ]));
    }
    Ok(found)
}

/// [`read_catalogs`] for a caller to whom no catalog at all is no error (a
/// code generator handed every file of a module): the catalogs among
/// `files`, validated, possibly none.
pub fn find_catalogs(
    pool: &DescriptorPool,
    files: &[String],
    skip: &[&str],
) -> Result<Vec<CatalogSpec>, CatalogErrors> {
    let (Some(domain_ext), Some(error_ext)) = (
        pool.get_extension_by_name("errmap.v1.domain"),
        pool.get_extension_by_name("errmap.v1.error"),
    ) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for enum_desc in pool.all_enums() {
        let file = enum_desc.parent_file().name().to_owned();
        if (!files.is_empty() && !files.contains(&file)) || skip.contains(&enum_desc.full_name()) {
            continue;
        }
        let annotated = enum_desc.options().has_extension(&domain_ext)
            || enum_desc
                .values()
                .any(|v| v.options().has_extension(&error_ext));
        if !annotated {
            continue;
        }
        match read_catalog(pool, enum_desc.full_name()) {
            Ok(spec) => found.push(spec),
            Err(mut errors) => problems.append(&mut errors.0),
        }
    }
    for (i, spec) in found.iter().enumerate() {
        if let Some(first) = found[..i].iter().find(|f| f.domain == spec.domain) {
            problems.push(format!(
                "{}: {}: domain {:?} is already the domain of {} ({}); each catalog has a domain of its own",
                spec.file, spec.short_name, spec.domain, first.enum_name, first.file
            ));
        }
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(CatalogErrors(problems))
    }
}

/// Whether a value is the AIP-126 "unspecified" zero of an enum, which is
/// not an error code: number 0, a name ending in `_UNSPECIFIED`, and no
/// `(errmap.v1.error)` option.
fn is_unspecified_zero(value: &EnumValueDescriptor, has_option: bool) -> bool {
    value.number() == 0 && value.name().ends_with("_UNSPECIFIED") && !has_option
}

fn read_value(
    value: &EnumValueDescriptor,
    error_ext: &prost_reflect::ExtensionDescriptor,
    at: &str,
) -> Result<EntrySpec, Vec<String>> {
    let mut problems = Vec::new();
    let name = value.name().to_owned();
    let number = value.number();
    if !is_valid_reason(&name) {
        problems.push(format!(
            "{at}: the name is not a valid AIP-193 reason ([A-Z][A-Z0-9_]+[A-Z0-9], at most {MAX_REASON_LEN} characters)"
        ));
    }
    let options = value.options();
    if !options.has_extension(error_ext) {
        let hint = if number == 0 {
            " (a zero that is not a code is named *_UNSPECIFIED, as AIP-126 says)"
        } else {
            ""
        };
        problems.push(format!(
            "{at}: the value has no (errmap.v1.error) option; every catalog value needs its gRPC code, HTTP status, category and message{hint}"
        ));
        return Err(problems);
    }
    let spec = options.get_extension(error_ext);
    let Some(spec) = spec.as_message() else {
        problems.push(format!("{at}: (errmap.v1.error) is not a message"));
        return Err(problems);
    };
    let text = |field: &str| -> String {
        spec.get_field_by_name(field)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };

    let grpc_name = text("grpc_code");
    let grpc = GRPC_CODES.iter().find(|(n, _)| *n == grpc_name);
    let grpc = match grpc {
        None => {
            problems.push(format!(
                "{at}: unknown gRPC code {grpc_name:?}; use a google.rpc.Code name such as \"INVALID_ARGUMENT\""
            ));
            None
        }
        Some(("OK", _)) => {
            problems.push(format!("{at}: gRPC code OK is not an error"));
            None
        }
        Some(found) => Some(*found),
    };

    let http = spec
        .get_field_by_name("http_status")
        .and_then(|v| v.as_i32())
        .unwrap_or_default();
    if !(100..=599).contains(&http) {
        problems.push(format!("{at}: HTTP status {http} is outside 100..=599"));
    }

    let category = text("category");
    if !is_valid_category(&category) {
        problems.push(format!(
            "{at}: category {category:?} is empty or not snake_case ([a-z][a-z0-9_]*)"
        ));
    }

    let message = text("message");
    if message.trim().is_empty() {
        problems.push(format!("{at}: the message is empty"));
    } else if message.trim() != message || message.contains(['\n', '\r']) {
        problems.push(format!(
            "{at}: the message has leading or trailing white space, or a line break"
        ));
    } else if !message.ends_with(['.', '?']) {
        problems.push(format!(
            "{at}: the message {message:?} must end with a full stop or a question mark"
        ));
    } else if message.len() > MAX_MESSAGE_LEN {
        problems.push(format!(
            "{at}: the message is {} bytes long; at most {MAX_MESSAGE_LEN} are allowed",
            message.len()
        ));
    }

    let params: Vec<String> = match template::placeholders(&message) {
        Ok(names) => names.into_iter().map(str::to_owned).collect(),
        Err(e) => {
            problems.push(format!("{at}: the message template is broken: {e}"));
            Vec::new()
        }
    };

    let mut translations = Vec::new();
    if let Some(messages) = spec.get_field_by_name("messages") {
        if let Some(map) = messages.as_map() {
            for (key, value) in map {
                let locale = key.as_str().unwrap_or_default().to_owned();
                let text = value.as_str().unwrap_or_default().to_owned();
                match locale.parse::<unic_langid::LanguageIdentifier>() {
                    Ok(id) if id.to_string() == locale && locale != "en-US" => {}
                    Ok(_) if locale == "en-US" => problems.push(format!(
                        "{at}: messages has en-US, which is the `message` field"
                    )),
                    _ => problems.push(format!(
                        "{at}: {locale:?} is not a well-formed BCP 47 locale tag in canonical form, such as \"ru-RU\""
                    )),
                }
                if text.trim().is_empty() {
                    problems.push(format!("{at}: the {locale} message is empty"));
                } else if text.trim() != text || text.contains(['\n', '\r']) {
                    problems.push(format!(
                        "{at}: the {locale} message has leading or trailing white space, or a line break"
                    ));
                } else if text.len() > MAX_MESSAGE_LEN {
                    problems.push(format!(
                        "{at}: the {locale} message is {} bytes long; at most {MAX_MESSAGE_LEN} are allowed",
                        text.len()
                    ));
                }
                check_translated_template(&mut problems, at, &locale, &text, &params);
                translations.push((locale, text));
            }
        }
    }
    translations.sort();

    let mut retry_delay = None;
    if spec.has_field_by_name("retry_delay") {
        let delay = spec.get_field_by_name("retry_delay");
        let delay = delay.as_deref().and_then(Value::as_message);
        let seconds = delay
            .and_then(|d| d.get_field_by_name("seconds"))
            .and_then(|v| v.as_i64())
            .unwrap_or_default();
        let nanos = delay
            .and_then(|d| d.get_field_by_name("nanos"))
            .and_then(|v| v.as_i32())
            .unwrap_or_default();
        if seconds < 0 || !(0..1_000_000_000).contains(&nanos) || (seconds == 0 && nanos == 0) {
            problems.push(format!(
                "{at}: retry_delay must be positive (got {seconds} s, {nanos} ns)"
            ));
        } else if seconds > 86_400 {
            problems.push(format!("{at}: retry_delay of {seconds} s is over a day"));
        } else {
            retry_delay = Some((seconds as u64, nanos as u32));
        }
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    let (grpc_code, grpc_number) = grpc.unwrap_or(("UNKNOWN", 2));
    Ok(EntrySpec {
        number,
        name,
        grpc_code,
        grpc_number,
        http_status: http as u16,
        category,
        message,
        retry_delay,
        translations,
        params,
    })
}

/// A translation carries exactly the placeholders of the English message:
/// none missing, none added, each well-formed.
fn check_translated_template(
    problems: &mut Vec<String>,
    at: &str,
    locale: &str,
    text: &str,
    params: &[String],
) {
    match template::placeholders(text) {
        Err(e) => problems.push(format!(
            "{at}: the {locale} message template is broken: {e}"
        )),
        Ok(names) => {
            let missing: Vec<&str> = params
                .iter()
                .map(String::as_str)
                .filter(|p| !names.contains(p))
                .collect();
            let added: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| !params.iter().any(|p| p == n))
                .collect();
            if !missing.is_empty() || !added.is_empty() {
                let list = |names: &[&str]| {
                    names
                        .iter()
                        .map(|n| format!("{{{n}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mut what = Vec::new();
                if !missing.is_empty() {
                    what.push(format!("lacks {}", list(&missing)));
                }
                if !added.is_empty() {
                    what.push(format!(
                        "has {} that the English message has not",
                        list(&added)
                    ));
                }
                problems.push(format!(
                    "{at}: the {locale} message {}; a translation carries exactly the placeholders of the English message",
                    what.join(" and ")
                ));
            }
        }
    }
}
