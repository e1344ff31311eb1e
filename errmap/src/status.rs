//! Building `tonic::Status` values from catalog codes.
//!
//! A status for a bare code is made from bytes encoded once per code and
//! shared afterwards, so [`Catalog::to_status`](crate::Catalog::to_status) costs one small `String`
//! (tonic owns the message) and no protobuf encoding. The
//! [`StatusBuilder`] covers the richer cases: a developer message of the
//! caller's, `ErrorInfo` metadata, `BadRequest` field violations, `Help`
//! links and extra response metadata.
//!
//! What is sent (docs/design.md §2): `grpc-status` is the code's gRPC code,
//! `grpc-message` the message, and `grpc-status-details-bin` a
//! `google.rpc.Status` with the same code and message, holding one
//! `ErrorInfo` (reason, domain, `metadata["code"]`), one `LocalizedMessage`
//! (`en-US`, or the caller's locale: [`StatusBuilder::locale`],
//! [`Catalog::to_status_for`](crate::Catalog::to_status_for)), a `RetryInfo` where the catalog has a delay,
//! and the caller's `BadRequest` and `Help` where given. Every code has one
//! pre-encoded status per locale of its catalog.
//!
//! ```
//! use errmap::{Catalog, ErrorCode, ErrorStatusExt};
//!
//! # fn main() -> Result<(), errmap::BuildError> {
//! // The common case: a bare code.
//! let status = tonic::Status::from(ErrorCode::AuthExpiredToken);
//! assert_eq!(status.code(), tonic::Code::Unauthenticated);
//! assert_eq!(status.error_code(), Some(ErrorCode::AuthExpiredToken));
//!
//! // The rich case.
//! let status = ErrorCode::AuthPasswordInvalid
//!     .builder()
//!     .message("password must be at least 6 characters long")
//!     .metadata("minLength", "6")
//!     .field_violation("password", "too short")
//!     .help_link("Password rules", "https://example.com/docs/passwords")
//!     .build()?;
//! let details = status.error_details().unwrap();
//! assert_eq!(details.error_info().unwrap().metadata["minLength"], "6");
//! assert_eq!(details.bad_request().unwrap().field_violations[0].field, "password");
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;

use bytes::Bytes;
use prost::Message as _;
use tonic::{
    metadata::{
        AsciiMetadataKey, AsciiMetadataValue, BinaryMetadataKey, BinaryMetadataValue, MetadataMap,
    },
    Status,
};
use tonic_types::pb::{bad_request::FieldViolation, help::Link, BadRequest, Help};

use crate::{
    catalog::{CatalogEntry, CatalogTable, TableRef},
    prebuilt::Prebuilt,
    template::Template,
    wire,
};

/// The locale of the catalog messages: the `LocalizedMessage` of a status
/// made without a caller's locale ([`Catalog::to_status`](crate::Catalog::to_status), `.into()`).
pub const LOCALE: &str = crate::locale::DEFAULT_LOCALE;

use crate::headers::GRPC_RETRY_PUSHBACK as PUSHBACK_HEADER;
pub use crate::headers::RETRY_PUSHBACK_MS;

/// The `grpc-retry-pushback-ms` value for `delay`: whole milliseconds,
/// rounded up.
pub(crate) fn pushback_value(delay: std::time::Duration) -> http::HeaderValue {
    let millis = delay.as_millis() + u128::from(!delay.subsec_nanos().is_multiple_of(1_000_000));
    http::HeaderValue::from(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// The response metadata holding `grpc-retry-pushback-ms` for `delay`,
/// made once per code: a status clones it, which neither hashes the name
/// nor counts references (the value is static, as the catalog is).
fn pushback_metadata(delay: std::time::Duration) -> MetadataMap {
    let digits = crate::catalog::intern(pushback_value(delay).to_str().unwrap_or("0"));
    let mut headers = http::HeaderMap::with_capacity(1);
    headers.insert(PUSHBACK_HEADER, http::HeaderValue::from_static(digits));
    MetadataMap::from_headers(headers)
}

/// Sets `grpc-retry-pushback-ms` for `delay` in a header block.
pub fn insert_pushback(headers: &mut http::HeaderMap, delay: std::time::Duration) {
    headers.insert(PUSHBACK_HEADER, pushback_value(delay));
}

/// The ErrorInfo metadata key that carries the numeric code; callers may not
/// set it.
pub const CODE_METADATA_KEY: &str = "code";

/// The most bytes a built status may put in the trailers (message,
/// details in base64 and response metadata), well under the 8 KiB gRPC
/// implementations may enforce on the whole trailer block.
pub const MAX_STATUS_SIZE: usize = 6 * 1024;

/// The longest `ErrorInfo` metadata key AIP-193 allows.
pub const MAX_METADATA_KEY_LEN: usize = 64;

/// Why a [`StatusBuilder`] refused to build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An `ErrorInfo` metadata key does not have AIP-193's form.
    #[error(
        "ErrorInfo metadata key {key:?} is invalid: keys are lowerCamelCase, \
         [a-z][a-zA-Z0-9-_]+, at most 64 characters"
    )]
    InvalidMetadataKey {
        /// The key given.
        key: String,
    },
    /// The caller tried to set `ErrorInfo.metadata["code"]`, which errmap
    /// fills with the numeric code.
    #[error("ErrorInfo metadata key \"code\" is reserved for the numeric error code")]
    ReservedMetadataKey,
    /// A response metadata key or value could not be sent.
    #[error("response metadata {key:?} is invalid: {reason}")]
    InvalidResponseMetadata {
        /// The key given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The code's message is a template, and a placeholder was given no
    /// argument.
    #[error(
        "the message of {code} needs the argument {name:?}; give it with .arg({name:?}, value)"
    )]
    MissingArgument {
        /// The placeholder without an argument.
        name: String,
        /// The code's name.
        code: String,
    },
    /// An argument names no placeholder of the code's message.
    #[error("the message of {code} has no placeholder {{{name}}}")]
    UnknownArgument {
        /// The argument's name.
        name: String,
        /// The code's name.
        code: String,
    },
    /// The status would not fit the trailer budget.
    #[error(
        "the status would put {size} bytes into the trailers, over the limit of {limit}; \
         send less metadata or a shorter message"
    )]
    TooLarge {
        /// The estimated size in bytes.
        size: usize,
        /// [`MAX_STATUS_SIZE`].
        limit: usize,
    },
}

/// Whether `key` may be used as `ErrorInfo` metadata key: AIP-193's
/// `[a-z][a-zA-Z0-9-_]+`, at most 64 characters.
pub fn is_valid_metadata_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() >= 2
        && b.len() <= MAX_METADATA_KEY_LEN
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

/// The catalog's `Help` link of `entry`: the page of its code under
/// `base_url` (the pages of `errmap serve`, at its `--public-url`),
/// `{base_url}/errors/{NAME}`.
pub fn catalog_help_link(base_url: &str, entry: &CatalogEntry) -> Link {
    Link {
        description: format!("{} ({}) in the error catalog", entry.name(), entry.number()),
        url: format!("{}/errors/{}", base_url.trim_end_matches('/'), entry.name()),
    }
}

/// The `details` entry holding a `LocalizedMessage`.
fn put_localized_message(out: &mut Vec<u8>, locale: &str, text: &str) {
    put_localized_message_head(out, locale, text.len());
    out.extend_from_slice(text.as_bytes());
}

/// [`put_localized_message`] up to its text, whose `text_len` bytes the
/// caller writes next (a filled template, written in place).
fn put_localized_message_head(out: &mut Vec<u8>, locale: &str, text_len: usize) {
    let value_len = wire::len_field_size(1, locale.len()) + wire::len_field_size(2, text_len);
    wire::put_any_header(out, wire::LOCALIZED_MESSAGE, value_len);
    wire::put_len_field(out, 1, locale.as_bytes());
    if text_len > 0 {
        wire::put_len_header(out, 2, text_len);
    }
}

impl Prebuilt {
    /// The status of `entry` with its `LocalizedMessage` in `locale`,
    /// reading `text` (for a template, its unfilled form).
    pub(crate) fn new(domain: &str, entry: &CatalogEntry, locale: &str, text: &str) -> Self {
        let error_info_value = encode_error_info(domain, entry, &[]);
        let mut detail = Vec::with_capacity(error_info_value.len() + 48);
        wire::put_any_detail(&mut detail, wire::ERROR_INFO, &error_info_value);
        let error_info = Bytes::from(detail);

        // A template is sent unfilled (`<name>` for each placeholder) by a
        // status without arguments; its segments are kept for the fills.
        let segments = entry
            .is_template()
            .then(|| crate::template::segments(text))
            .flatten();
        let english = match (&segments, locale == crate::locale::DEFAULT_LOCALE) {
            (Some(segments), true) => Some(segments.clone()),
            (Some(_), false) => crate::template::segments(entry.message()),
            (None, _) => None,
        };
        let unfilled = english.as_deref().map(|segments| {
            crate::template::Template {
                text: entry.message(),
                segments,
            }
            .unfilled()
            .into_boxed_str()
        });
        let mut rest = Vec::new();
        match &segments {
            Some(segments) => {
                let template = crate::template::Template { text, segments };
                put_localized_message(&mut rest, locale, &template.unfilled());
            }
            None => put_localized_message(&mut rest, locale, text),
        }
        let localized_len = rest.len();
        if let Some(delay) = entry.retry_delay() {
            let mut duration = Vec::new();
            wire::put_varint_field(&mut duration, 1, delay.as_secs());
            wire::put_varint_field(&mut duration, 2, u64::from(delay.subsec_nanos()));
            let mut retry = Vec::new();
            wire::put_len_header(&mut retry, 1, duration.len());
            retry.extend_from_slice(&duration);
            wire::put_any_detail(&mut rest, wire::RETRY_INFO, &retry);
        }
        let rest = Bytes::from(rest);
        let status = encode_status(
            entry.grpc_code(),
            unfilled.as_deref().unwrap_or(entry.message()),
            &error_info,
            &rest,
            &[],
        );
        Prebuilt {
            status: Bytes::from(status),
            error_info,
            error_info_value: Bytes::from(error_info_value),
            rest,
            localized_len,
            unfilled,
            segments,
            pushback: entry.retry_delay().map(pushback_metadata),
        }
    }

    /// The message a status without a caller's message sends.
    pub(crate) fn message<'a>(&'a self, entry: &'a CatalogEntry) -> &'a str {
        self.unfilled.as_deref().unwrap_or(entry.message())
    }
}

/// The `details` entry (an `Any`) holding the code's `ErrorInfo`, with the
/// caller's metadata after `code`.
fn encode_error_info_detail(
    domain: &str,
    entry: &CatalogEntry,
    metadata: &[(Cow<'static, str>, String)],
) -> Vec<u8> {
    let info = encode_error_info(domain, entry, metadata);
    let mut detail = Vec::with_capacity(info.len() + 48);
    wire::put_any_detail(&mut detail, wire::ERROR_INFO, &info);
    detail
}

/// The code's `ErrorInfo` (reason, domain, `metadata["code"]`), with the
/// caller's metadata after `code`.
fn encode_error_info(
    domain: &str,
    entry: &CatalogEntry,
    metadata: &[(Cow<'static, str>, String)],
) -> Vec<u8> {
    let mut info = Vec::with_capacity(
        64 + metadata
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum::<usize>(),
    );
    wire::put_len_field(&mut info, 1, entry.name().as_bytes());
    wire::put_len_field(&mut info, 2, domain.as_bytes());
    wire::put_map_entry(&mut info, 3, CODE_METADATA_KEY, entry.number_str());
    for (key, value) in metadata {
        wire::put_map_entry(&mut info, 3, key, value);
    }
    info
}

/// A `google.rpc.Status`'s code and message; its detail entries follow.
fn put_status_head(buf: &mut Vec<u8>, grpc_code: tonic::Code, message: &str) {
    wire::put_varint_field(buf, 1, grpc_code as i32 as u64);
    wire::put_len_field(buf, 2, message.as_bytes());
}

/// A whole `google.rpc.Status`: code, message, then the detail entries.
fn encode_status(
    grpc_code: tonic::Code,
    message: &str,
    error_info: &[u8],
    rest: &[u8],
    extra: &[u8],
) -> Vec<u8> {
    let mut buf =
        Vec::with_capacity(16 + message.len() + error_info.len() + rest.len() + extra.len());
    put_status_head(&mut buf, grpc_code, message);
    buf.extend_from_slice(error_info);
    buf.extend_from_slice(rest);
    buf.extend_from_slice(extra);
    buf
}

/// Builds a catalog status with caller data. Made by
/// [`Catalog::builder`](crate::Catalog::builder).
///
/// Setters never fail; the first invalid input is remembered and reported
/// by [`build`](Self::build), so a chain reads top to bottom.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct StatusBuilder {
    table: TableRef,
    index: usize,
    locale: usize,
    message: Option<Cow<'static, str>>,
    metadata: Vec<(Cow<'static, str>, String)>,
    violations: Vec<FieldViolation>,
    links: Vec<Link>,
    help_base_url: Option<String>,
    response_metadata: MetadataMap,
    error: Option<BuildError>,
}

impl StatusBuilder {
    /// A builder for entry `index` of `table`.
    pub(crate) fn for_entry(table: TableRef, index: usize) -> Self {
        Self {
            table,
            index,
            locale: 0,
            message: None,
            metadata: Vec::new(),
            violations: Vec::new(),
            links: Vec::new(),
            help_base_url: None,
            response_metadata: MetadataMap::new(),
            error: None,
        }
    }

    fn fail(&mut self, error: BuildError) {
        self.error.get_or_insert(error);
    }

    /// Sends the `LocalizedMessage` in the locale the caller asks for:
    /// `from` is the request (`&request`), its metadata, or an
    /// `accept-language` value such as `"ru"` (see [`crate::locale`]). A
    /// locale the catalog does not have gives `en-US`. `grpc-message` stays
    /// the English developer message.
    pub fn locale(mut self, from: impl crate::locale::AcceptLanguage) -> Self {
        self.locale = self.table.negotiate_index(from);
        self
    }

    /// A developer message to send instead of the catalog's, in
    /// `grpc-message` and in the details' `google.rpc.Status.message`. The
    /// `LocalizedMessage` keeps the catalog message.
    pub fn message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Adds `ErrorInfo` metadata. The key must be lowerCamelCase
    /// (`[a-z][a-zA-Z0-9-_]+`, at most 64 characters) and not `code`.
    /// Setting a key twice keeps the last value.
    pub fn metadata(mut self, key: impl Into<Cow<'static, str>>, value: impl Into<String>) -> Self {
        let key = key.into();
        if key == CODE_METADATA_KEY {
            self.fail(BuildError::ReservedMetadataKey);
        } else if !is_valid_metadata_key(&key) {
            self.fail(BuildError::InvalidMetadataKey {
                key: key.into_owned(),
            });
        } else {
            let value = value.into();
            match self.metadata.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => self.metadata.push((key, value)),
            }
        }
        self
    }

    /// Fills the placeholder `{name}` of the code's message template with
    /// `value`, in `grpc-message` and in the `LocalizedMessage`, and sends
    /// it as `ErrorInfo.metadata[name]` too, as AIP-193 asks of every
    /// dynamic part of a message. Naming a placeholder the template does
    /// not have is an error of [`build`](Self::build), as is leaving one
    /// unfilled; giving one twice keeps the last value.
    ///
    /// ```
    /// # use errmap::{catalog::{CatalogEntry, CatalogTable}, ErrorStatusExt};
    /// # use std::borrow::Cow;
    /// # static ENTRIES: [CatalogEntry; 1] = [CatalogEntry::new(
    /// #     1, "1", "SHOP_AMOUNT_OVER_LIMIT", tonic::Code::InvalidArgument, 400, "limits",
    /// #     "Amount {amount} exceeds the limit of {limit}.", None,
    /// # ).with_params(&[Cow::Borrowed("amount"), Cow::Borrowed("limit")])];
    /// # let table: &'static CatalogTable =
    /// #     Box::leak(Box::new(CatalogTable::new("shop.example.com", "shop.v1.ShopError", &ENTRIES[..])));
    /// # let entry = &table.entries()[0];
    /// // `builder_of` for a table; a generated enum has `.builder()`.
    /// let status = table
    ///     .builder_of(entry)
    ///     .arg("amount", 120)
    ///     .arg("limit", 100)
    ///     .build()?;
    /// assert_eq!(status.message(), "Amount 120 exceeds the limit of 100.");
    /// let info = status.error_details().unwrap().error_info().unwrap().clone();
    /// assert_eq!(info.metadata["amount"], "120");
    ///
    /// let missing = table.builder_of(entry).arg("amount", 120).build();
    /// assert_eq!(missing.unwrap_err().to_string(), "the message of SHOP_AMOUNT_OVER_LIMIT needs the argument \"limit\"; give it with .arg(\"limit\", value)");
    /// # Ok::<(), errmap::BuildError>(())
    /// ```
    pub fn arg(self, name: impl Into<Cow<'static, str>>, value: impl std::fmt::Display) -> Self {
        let name = name.into();
        let entry = &self.table.entries()[self.index];
        if !entry.params().any(|p| p == name) {
            let mut this = self;
            let code = this.table.entries()[this.index].name().to_owned();
            this.fail(BuildError::UnknownArgument {
                name: name.into_owned(),
                code,
            });
            return this;
        }
        self.metadata(name, value.to_string())
    }

    /// Adds a `BadRequest` field violation with a field path and a
    /// description.
    pub fn field_violation(self, field: impl Into<String>, description: impl Into<String>) -> Self {
        self.violation(FieldViolation {
            field: field.into(),
            description: description.into(),
            ..FieldViolation::default()
        })
    }

    /// Adds a `BadRequest` field violation with all its fields (`field`,
    /// `description`, `reason`, `localized_message`).
    pub fn violation(mut self, violation: FieldViolation) -> Self {
        self.violations.push(violation);
        self
    }

    /// Links the status to the page of its code in the catalog pages at
    /// `base_url` (those of `errmap serve --public-url`):
    /// `{base_url}/errors/{NAME}`, first in the `Help` detail, before any
    /// [`help_link`](Self::help_link). `errmap-server`'s response layer adds
    /// the same link to every catalog status when it is given a base URL.
    ///
    /// ```
    /// use errmap::{Catalog, ErrorCode, ErrorStatusExt};
    ///
    /// let status = ErrorCode::AuthExpiredToken
    ///     .builder()
    ///     .catalog_help("https://errors.example.com")
    ///     .build()?;
    /// let help = status.error_details().unwrap().help().unwrap().clone();
    /// assert_eq!(help.links[0].url, "https://errors.example.com/errors/AUTH_EXPIRED_TOKEN");
    /// # Ok::<(), errmap::BuildError>(())
    /// ```
    pub fn catalog_help(mut self, base_url: impl Into<String>) -> Self {
        self.help_base_url = Some(base_url.into());
        self
    }

    /// Adds a `Help` link.
    pub fn help_link(mut self, description: impl Into<String>, url: impl Into<String>) -> Self {
        self.links.push(Link {
            description: description.into(),
            url: url.into(),
        });
        self
    }

    /// Adds an ASCII response metadata entry (sent as a header or trailer).
    /// Keys are lower case, do not end in `-bin` and do not start with
    /// `grpc-`; values are visible ASCII.
    pub fn ascii_metadata(mut self, key: &str, value: &str) -> Self {
        match check_response_key(key, false).and_then(|()| {
            let key = AsciiMetadataKey::from_bytes(key.as_bytes())
                .map_err(|_| "not a valid header name")?;
            let value = AsciiMetadataValue::try_from(value)
                .map_err(|_| "the value is not visible ASCII")?;
            Ok((key, value))
        }) {
            Ok((key, value)) => {
                self.response_metadata.append(key, value);
            }
            Err(reason) => self.fail(BuildError::InvalidResponseMetadata {
                key: key.to_owned(),
                reason,
            }),
        }
        self
    }

    /// Adds a binary response metadata entry; the key must end in `-bin`.
    pub fn binary_metadata(mut self, key: &str, value: impl AsRef<[u8]>) -> Self {
        match check_response_key(key, true).and_then(|()| {
            BinaryMetadataKey::from_bytes(key.as_bytes()).map_err(|_| "not a valid header name")
        }) {
            Ok(key) => {
                self.response_metadata
                    .append_bin(key, BinaryMetadataValue::from_bytes(value.as_ref()));
            }
            Err(reason) => self.fail(BuildError::InvalidResponseMetadata {
                key: key.to_owned(),
                reason,
            }),
        }
        self
    }

    /// Builds the status, or reports the first invalid input.
    pub fn build(self) -> Result<Status, BuildError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let table = &*self.table;
        let entry = &table.entries()[self.index];
        let pre = table.prebuilt(self.index, self.locale);
        // A template is filled from the arguments (which are ErrorInfo
        // metadata): in grpc-message, unless the caller gave its own, and
        // in the LocalizedMessage, which is written straight into the
        // status (no copy of the filled text).
        let mut filled = None;
        let mut localized = None;
        if let Some(segments) = pre.segments.as_deref() {
            let tag = table.locales()[self.locale];
            let template = Template {
                text: entry.message_in(tag).unwrap_or(entry.message()),
                segments,
            };
            let missing = |name: String| BuildError::MissingArgument {
                name,
                code: entry.name().to_owned(),
            };
            if self.message.is_none() {
                let english = match self.locale {
                    0 => template,
                    _ => Template {
                        text: entry.message(),
                        segments: table
                            .prebuilt(self.index, 0)
                            .segments
                            .as_deref()
                            .unwrap_or_default(),
                    },
                };
                filled = Some(english.fill(&self.metadata).map_err(missing)?);
            }
            // In English, the LocalizedMessage is the message just filled.
            localized = Some(match (&filled, self.locale) {
                (Some(english), 0) => (tag, None, english.len()),
                _ => {
                    let len = template.filled_len(&self.metadata).map_err(missing)?;
                    (tag, Some(template), len)
                }
            });
        }
        let message: &str = match (&self.message, &filled) {
            (Some(m), _) => m,
            (None, Some(f)) => f,
            (None, None) => pre.message(entry),
        };

        let mut extra = Vec::new();
        if !self.violations.is_empty() {
            let bad_request = BadRequest {
                field_violations: self.violations,
            };
            wire::put_any_detail(&mut extra, wire::BAD_REQUEST, &bad_request.encode_to_vec());
        }
        // One Help detail: the catalog's link, then the caller's.
        let mut links = self.links;
        if let Some(base) = &self.help_base_url {
            links.insert(0, catalog_help_link(base, entry));
        }
        if !links.is_empty() {
            let detail = Help { links };
            wire::put_any_detail(&mut extra, wire::HELP, &detail.encode_to_vec());
        }

        let details = if self.message.is_none() && self.metadata.is_empty() && extra.is_empty() {
            pre.status.clone()
        } else {
            let info;
            let error_info: &[u8] = if self.metadata.is_empty() {
                &pre.error_info
            } else {
                info = encode_error_info_detail(table.domain(), entry, &self.metadata);
                &info
            };
            match &localized {
                None => Bytes::from(encode_status(
                    entry.grpc_code(),
                    message,
                    error_info,
                    &pre.rest,
                    &extra,
                )),
                Some((tag, template, len)) => {
                    let (tag, len) = (*tag, *len);
                    let retry = &pre.rest[pre.localized_len..];
                    let mut buf = Vec::with_capacity(
                        32 + message.len()
                            + error_info.len()
                            + tag.len()
                            + len
                            + wire::TYPE_URL_PREFIX.len()
                            + wire::LOCALIZED_MESSAGE.len()
                            + retry.len()
                            + extra.len(),
                    );
                    put_status_head(&mut buf, entry.grpc_code(), message);
                    buf.extend_from_slice(error_info);
                    put_localized_message_head(&mut buf, tag, len);
                    match template {
                        Some(template) => template.write_filled(&self.metadata, |piece| {
                            buf.extend_from_slice(piece.as_bytes())
                        }),
                        None => buf.extend_from_slice(message.as_bytes()),
                    }
                    buf.extend_from_slice(retry);
                    buf.extend_from_slice(&extra);
                    Bytes::from(buf)
                }
            }
        };

        let mut response_metadata = self.response_metadata;
        if let Some(pushback) = &pre.pushback {
            if response_metadata.is_empty() {
                response_metadata = pushback.clone();
            } else {
                let mut headers = response_metadata.into_headers();
                headers.extend(pushback.as_ref().clone());
                response_metadata = MetadataMap::from_headers(headers);
            }
        }
        let size = trailer_size(message, details.len(), &response_metadata);
        if size > MAX_STATUS_SIZE {
            return Err(BuildError::TooLarge {
                size,
                limit: MAX_STATUS_SIZE,
            });
        }
        let message = match (self.message, filled) {
            (Some(m), _) => m.into_owned(),
            (None, Some(f)) => f,
            (None, None) => pre.message(entry).to_owned(),
        };
        Ok(Status::with_details_and_metadata(
            entry.grpc_code(),
            message,
            details,
            response_metadata,
        ))
    }
}

/// Re-encodes a `google.rpc.Status` with another message and the given
/// (already encoded) `Any` entries. Used by the response layer to cut a
/// status that is over the trailer budget.
pub fn reencode(grpc_code: tonic::Code, message: &str, anys: &[&[u8]]) -> Vec<u8> {
    let mut extra = Vec::new();
    for any in anys {
        wire::put_len_field(&mut extra, 3, any);
    }
    encode_status(grpc_code, message, &[], &[], &extra)
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub fn cut_at_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn check_response_key(key: &str, binary: bool) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("the key is empty");
    }
    if key.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("keys are lower case");
    }
    if key.starts_with("grpc-") {
        return Err("keys starting with grpc- are reserved for gRPC itself");
    }
    if matches!(key, "content-type" | "te" | "user-agent" | "connection") {
        return Err("the key is a reserved HTTP/2 or gRPC header");
    }
    match (binary, key.ends_with("-bin")) {
        (true, false) => Err("binary keys end in -bin"),
        (false, true) => Err("ASCII keys must not end in -bin"),
        _ => Ok(()),
    }
}

/// The bytes the status adds to the trailer block: the percent-encoded
/// message, the base64 details and the response metadata, plus the header
/// names.
fn trailer_size(message: &str, details_len: usize, metadata: &MetadataMap) -> usize {
    let message_len: usize = message
        .bytes()
        .map(|b| {
            if (0x20..=0x7e).contains(&b) && b != b'%' {
                1
            } else {
                3
            }
        })
        .sum();
    let details_b64 = details_len.div_ceil(3) * 4;
    let headers: usize = metadata
        .as_ref()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    "grpc-status".len()
        + 2
        + "grpc-message".len()
        + message_len
        + "grpc-status-details-bin".len()
        + details_b64
        + headers
}

impl TableRef {
    /// A [`StatusBuilder`] for `entry`, an entry of this table: for a
    /// catalog loaded at run time, where there is no enum to call
    /// [`Catalog::builder`](crate::Catalog::builder) on.
    ///
    /// # Panics
    ///
    /// If `entry` is not one of this table's entries.
    pub fn builder_of(&self, entry: &CatalogEntry) -> StatusBuilder {
        StatusBuilder::for_entry(self.clone(), self.position_of(entry))
    }
}

impl CatalogTable {
    /// The bare catalog status of `entry` (an entry of this table; catalog
    /// message, standard details), sent with the gRPC code `grpc_code`
    /// instead of the catalog's. The response layer uses it for statuses
    /// that slipped through: their gRPC code is kept, so that clients that
    /// branch on it (retry on ABORTED, say) keep working. The
    /// `LocalizedMessage` is in the locale `from` asks for.
    ///
    /// # Panics
    ///
    /// If `entry` is not one of this table's entries.
    pub fn status_with_grpc_code(
        &self,
        entry: &CatalogEntry,
        grpc_code: tonic::Code,
        from: impl crate::locale::AcceptLanguage,
    ) -> Status {
        let index = self.position_of(entry);
        let locale = self.negotiate_index(from);
        if grpc_code == entry.grpc_code() {
            return self.status(index, locale);
        }
        let pre = self.prebuilt(index, locale);
        let message = pre.message(entry);
        let details = encode_status(grpc_code, message, &pre.error_info, &pre.rest, &[]);
        match &pre.pushback {
            Some(pushback) => Status::with_details_and_metadata(
                grpc_code,
                message,
                Bytes::from(details),
                pushback.clone(),
            ),
            None => Status::with_details(grpc_code, message, Bytes::from(details)),
        }
    }

    /// The bare status of `entry` (an entry of this table): the catalog
    /// message and the standard details, from bytes encoded once. For a
    /// catalog loaded at run time, where there is no enum to call
    /// [`Catalog::to_status`](crate::Catalog::to_status) on.
    ///
    /// # Panics
    ///
    /// If `entry` is not one of this table's entries.
    pub fn status_of(&self, entry: &CatalogEntry) -> Status {
        self.status(self.position_of(entry), 0)
    }

    /// A [`StatusBuilder`] for `entry`, an entry of this table (see
    /// [`status_of`](Self::status_of)). For a table loaded at run time,
    /// [`TableRef::builder_of`].
    pub fn builder_of(&'static self, entry: &CatalogEntry) -> StatusBuilder {
        StatusBuilder::for_entry(TableRef::from(self), self.position_of(entry))
    }

    /// The pre-encoded status of entry `index` in locale `locale` (an index
    /// into [`locales`](Self::locales)); all of them are made on first use.
    pub(crate) fn prebuilt(&self, index: usize, locale: usize) -> &Prebuilt {
        let all = self.prebuilt_slot().get_or_init(|| {
            self.locales
                .tags()
                .iter()
                .flat_map(|tag| {
                    self.entries.iter().map(move |e| {
                        let text = e.message_in(tag).unwrap_or(&e.message);
                        Prebuilt::new(&self.domain, e, tag, text)
                    })
                })
                .collect()
        });
        &all[locale * self.entries.len() + index]
    }

    /// The bare status of entry `index` in locale `locale`.
    pub(crate) fn status(&self, index: usize, locale: usize) -> Status {
        let entry = &self.entries[index];
        let pre = self.prebuilt(index, locale);
        let message = pre.message(entry);
        match &pre.pushback {
            // gRFC A6 clients retry after grpc-retry-pushback-ms.
            Some(pushback) => Status::with_details_and_metadata(
                entry.grpc_code,
                message,
                pre.status.clone(),
                pushback.clone(),
            ),
            None => Status::with_details(entry.grpc_code, message, pre.status.clone()),
        }
    }

    /// [`status_of`](Self::status_of) with the `LocalizedMessage` in the
    /// locale `from` asks for (see [`negotiate`](Self::negotiate)).
    ///
    /// # Panics
    ///
    /// If `entry` is not one of this table's entries.
    pub fn status_of_for(
        &self,
        entry: &CatalogEntry,
        from: impl crate::locale::AcceptLanguage,
    ) -> Status {
        self.status(self.position_of(entry), self.negotiate_index(from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Catalog as _, ErrorCode};

    #[test]
    fn metadata_keys_follow_aip_193() {
        for ok in ["minLength", "field", "a1", "x-y_z", &"a".repeat(64)] {
            assert!(is_valid_metadata_key(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "Min",
            "1a",
            "_a",
            "min length",
            "ключ",
            &"a".repeat(65),
        ] {
            assert!(!is_valid_metadata_key(bad), "{bad}");
        }
    }

    #[test]
    fn builder_without_caller_data_shares_the_prebuilt_bytes() {
        let built = ErrorCode::ApiTooManyRequests.builder().build().unwrap();
        let plain = ErrorCode::ApiTooManyRequests.to_status();
        assert_eq!(built.details().as_ptr(), plain.details().as_ptr());
        assert_eq!(built.message(), plain.message());
    }
}
