//! The error catalog, compiled in from `proto/errmap/v1/error_code.proto`.
//!
//! `build.rs` validates the proto and writes a static table, so every lookup
//! here is a bounds check and an array index: no allocation, no hashing of
//! numbers, and one hash plus one comparison for names.
//!
//! ```
//! use errmap::ErrorCode;
//!
//! let code = ErrorCode::from_name("AUTH_EXPIRED_TOKEN").unwrap();
//! assert_eq!(code.code(), 11);
//! assert_eq!(code.grpc_code(), tonic::Code::Unauthenticated);
//! assert_eq!(code.http_status(), 400);
//! assert_eq!(ErrorCode::from_code(11), Some(code));
//! assert_eq!(ErrorCode::from_code(12), None);
//! ```

use std::{fmt, time::Duration};

use tonic::Code;

use crate::name_hash::name_hash;
pub use crate::pb::ErrorCode;

/// Everything the catalog says about one error code.
#[derive(Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    code: ErrorCode,
    number: i32,
    number_str: &'static str,
    name: &'static str,
    grpc_code: Code,
    http_status: u16,
    category: &'static str,
    message: &'static str,
    retry_delay: Option<Duration>,
}

include!(concat!(env!("OUT_DIR"), "/catalog_table.rs"));

const NO_ENTRY: u8 = u8::MAX;

impl CatalogEntry {
    /// The code as the enum.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The numeric code, for example `11`. It is also sent as
    /// `ErrorInfo.metadata["code"]`.
    pub fn number(&self) -> i32 {
        self.number
    }

    /// The numeric code in decimal, as sent in `ErrorInfo.metadata["code"]`.
    pub fn number_str(&self) -> &'static str {
        self.number_str
    }

    /// The name, which is also the `ErrorInfo.reason`, for example
    /// `"AUTH_EXPIRED_TOKEN"`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The gRPC status code this error is sent with.
    pub fn grpc_code(&self) -> Code {
        self.grpc_code
    }

    /// The HTTP status the legacy HTTP API answered with.
    pub fn http_status(&self) -> u16 {
        self.http_status
    }

    /// The category, for example `"auth_token"`.
    pub fn category(&self) -> &'static str {
        self.category
    }

    /// The English message, also sent as the default `grpc-message` and as
    /// the `LocalizedMessage` for `en-US`.
    pub fn message(&self) -> &'static str {
        self.message
    }

    /// How long a caller should wait before retrying, for the codes that ask
    /// for a retry (sent as `RetryInfo`).
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_delay
    }

    /// The `ErrorInfo.domain` shared by every catalog code.
    pub fn domain(&self) -> &'static str {
        DOMAIN
    }

    /// The index of this entry in [`entries()`].
    pub(crate) fn index(&self) -> usize {
        usize::from(BY_CODE[self.number as usize])
    }
}

/// Every catalog entry, in code order.
///
/// ```
/// let names: Vec<_> = errmap::catalog::entries().iter().map(|e| e.name()).collect();
/// assert_eq!(names[0], "AUTH_USERNAME_TAKEN");
/// assert_eq!(names.len(), 25);
/// ```
pub fn entries() -> &'static [CatalogEntry] {
    &ENTRIES
}

/// The distinct categories, in the order they first appear in code order.
pub fn categories() -> impl Iterator<Item = &'static str> {
    ENTRIES.iter().enumerate().filter_map(|(i, e)| {
        (!ENTRIES[..i].iter().any(|p| p.category == e.category)).then_some(e.category)
    })
}

/// Whether `category` is the category of at least one entry.
pub fn is_category(category: &str) -> bool {
    ENTRIES.iter().any(|e| e.category == category)
}

impl ErrorCode {
    /// The code with number `code`, or `None` if the catalog has no such
    /// code (negative numbers included).
    pub fn from_code(code: i32) -> Option<Self> {
        if !(0..=MAX_CODE).contains(&code) {
            return None;
        }
        match BY_CODE[code as usize] {
            NO_ENTRY => None,
            i => Some(ENTRIES[usize::from(i)].code),
        }
    }

    /// The code named `name` (the `ErrorInfo.reason`, for example
    /// `"AUTH_REQUIRED"`), or `None`. Matching is exact: names are upper case.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::from_name_bytes(name.as_bytes())
    }

    pub(crate) fn from_name_bytes(name: &[u8]) -> Option<Self> {
        if name.len() > MAX_NAME_LEN {
            return None;
        }
        let slot = name_hash(NAME_SEED, name) as usize & (BY_NAME.len() - 1);
        match BY_NAME[slot] {
            NO_ENTRY => None,
            i => {
                let entry = &ENTRIES[usize::from(i)];
                (entry.name.as_bytes() == name).then_some(entry.code)
            }
        }
    }

    /// Every code, in code order.
    pub fn all() -> impl ExactSizeIterator<Item = Self> + Clone {
        ENTRIES.iter().map(|e| e.code)
    }

    /// The catalog entry of this code.
    pub fn entry(self) -> &'static CatalogEntry {
        &ENTRIES[usize::from(BY_CODE[self as usize])]
    }

    /// The numeric code, for example `11`.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The name, which is also the `ErrorInfo.reason`.
    pub fn name(self) -> &'static str {
        self.entry().name
    }

    /// The gRPC status code this error is sent with.
    pub fn grpc_code(self) -> Code {
        self.entry().grpc_code
    }

    /// The HTTP status of the legacy HTTP API.
    pub fn http_status(self) -> u16 {
        self.entry().http_status
    }

    /// The category, for example `"auth_token"`.
    pub fn category(self) -> &'static str {
        self.entry().category
    }

    /// The English message.
    pub fn message(self) -> &'static str {
        self.entry().message
    }

    /// The retry delay, for the codes that ask for a retry.
    pub fn retry_delay(self) -> Option<Duration> {
        self.entry().retry_delay
    }

    /// The `ErrorInfo.domain` shared by every catalog code.
    pub fn domain(self) -> &'static str {
        DOMAIN
    }
}

impl fmt::Display for ErrorCode {
    /// Writes the name, for example `AUTH_EXPIRED_TOKEN`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_entry() {
        for entry in entries() {
            assert_eq!(entry.code().entry(), entry);
            assert_eq!(ErrorCode::try_from(entry.number()), Ok(entry.code()));
            assert_eq!(entry.code().as_str_name(), entry.name());
            assert_eq!(entry.number_str(), entry.number().to_string());
            assert_eq!(entries()[entry.index()], *entry);
        }
    }

    #[test]
    fn entries_are_in_code_order() {
        assert!(entries().windows(2).all(|w| w[0].number() < w[1].number()));
    }

    #[test]
    fn names_longer_than_any_entry_miss() {
        assert_eq!(ErrorCode::from_name(&"A".repeat(MAX_NAME_LEN + 1)), None);
    }
}
