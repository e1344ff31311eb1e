//! The catalog enums: the [`Catalog`] trait that every one implements, and
//! the auth API's own, [`ErrorCode`].
//!
//! ```
//! use errmap::{Catalog, ErrorCode};
//!
//! let code = ErrorCode::from_name("AUTH_EXPIRED_TOKEN").unwrap();
//! let entry = code.entry();
//! assert_eq!(entry.number(), 11);
//! assert_eq!(entry.grpc_code(), tonic::Code::Unauthenticated);
//! assert_eq!(entry.http_status(), 400);
//! assert_eq!(ErrorCode::from_code(11), Some(code));
//! assert_eq!(ErrorCode::from_code(12), None);
//! assert_eq!(ErrorCode::table().domain(), "auth.errmap.dev");
//! ```

use std::{fmt, hash::Hash};

use tonic::Status;

use crate::{
    catalog::{CatalogEntry, CatalogTable},
    locale::AcceptLanguage,
    status::StatusBuilder,
};

/// A catalog enum: the auth API's [`ErrorCode`], or one that `errmap-build`
/// generated from a team's proto. Every catalog gets the same lookups,
/// status builder ([`to_status`](Self::to_status),
/// [`builder`](Self::builder)) and reader
/// ([`ErrorStatusExt::error_code`](crate::ErrorStatusExt::error_code)).
///
/// Implemented by generated code; the required methods are its plumbing.
pub trait Catalog: Copy + Eq + Hash + fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// The catalog's table.
    fn table() -> &'static CatalogTable;

    /// This code's index in [`CatalogTable::entries`].
    fn index(self) -> usize;

    /// The code at `index` in [`CatalogTable::entries`].
    fn from_index(index: usize) -> Option<Self>;

    /// Everything the catalog says about this code.
    #[inline]
    fn entry(self) -> &'static CatalogEntry {
        &Self::table().entries()[self.index()]
    }

    /// The code numbered `code`, or `None`.
    #[inline]
    fn from_code(code: i32) -> Option<Self> {
        Self::from_index(Self::table().index_of_number(code)?)
    }

    /// The code named `name` (the `ErrorInfo.reason`), or `None`. Matching
    /// is exact: names are upper case.
    #[inline]
    fn from_name(name: &str) -> Option<Self> {
        Self::from_index(Self::table().index_of_name(name.as_bytes())?)
    }

    /// Every code, in code order.
    fn all() -> impl ExactSizeIterator<Item = Self> + Clone {
        (0..Self::table().entries().len())
            .filter_map(Self::from_index)
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// This code as a `tonic::Status` with the catalog message and the
    /// standard details, from bytes encoded once per code. Its
    /// `LocalizedMessage` is `en-US`; [`to_status_for`](Self::to_status_for)
    /// answers in the caller's locale.
    ///
    /// A code whose message is a template has no arguments here: each
    /// placeholder is sent as `<name>` ("The quantity &lt;quantity&gt;
    /// exceeds …"), in `grpc-message` and in the `LocalizedMessage`, and
    /// `ErrorInfo.metadata` holds only `code`. Fill it with
    /// [`builder`](Self::builder) and
    /// [`StatusBuilder::arg`](crate::StatusBuilder::arg).
    #[inline]
    fn to_status(self) -> Status {
        Self::table().status(self.index(), 0)
    }

    /// [`to_status`](Self::to_status) with the `LocalizedMessage` in the
    /// locale the caller asks for: `from` is the request, its metadata, or
    /// an `accept-language` value (see [`crate::locale`]). Still no encoding:
    /// every code has a pre-encoded status per locale.
    ///
    /// ```
    /// use errmap::{Catalog, ErrorCode, ErrorStatusExt};
    ///
    /// let status = ErrorCode::AuthExpiredToken.to_status_for("ru");
    /// let localized = status.error_details().unwrap().localized_message().unwrap().clone();
    /// assert_eq!(localized.locale, "ru-RU");
    /// assert_eq!(localized.message, "Срок действия токена истёк, получите новый.");
    /// assert_eq!(status.message(), "Token has expired, please get a new one.");
    /// ```
    #[inline]
    fn to_status_for(self, from: impl AcceptLanguage) -> Status {
        let table = Self::table();
        table.status(self.index(), table.negotiate_index(from))
    }

    /// A [`StatusBuilder`] for this code, for a status with more than the
    /// catalog gives.
    fn builder(self) -> StatusBuilder {
        StatusBuilder::new(self)
    }
}

// The auth API's catalog, generated from proto/errmap/v1/error_code.proto.
include!(concat!(env!("OUT_DIR"), "/catalog_table.rs"));

impl StatusBuilder {
    /// A builder for `code`; with nothing else set, `build` gives the same
    /// status as [`Catalog::to_status`].
    pub fn new<C: Catalog>(code: C) -> Self {
        Self::for_entry(C::table().into(), code.index())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_entry() {
        let table = ErrorCode::table();
        for (i, entry) in table.entries().iter().enumerate() {
            let code = ErrorCode::from_index(i).unwrap();
            assert_eq!(code.index(), i);
            assert_eq!(code.entry(), entry);
            assert_eq!(ErrorCode::from_code(entry.number()), Some(code));
            assert_eq!(ErrorCode::from_name(entry.name()), Some(code));
            assert_eq!(code.to_string(), entry.name());
            assert_eq!(entry.number_str(), entry.number().to_string());
        }
        assert_eq!(ErrorCode::all().len(), table.entries().len());
    }

    #[test]
    fn entries_are_in_code_order() {
        let entries = ErrorCode::table().entries();
        assert!(entries.windows(2).all(|w| w[0].number() < w[1].number()));
    }

    #[test]
    fn names_longer_than_any_entry_miss() {
        assert_eq!(ErrorCode::from_name(&"A".repeat(64)), None);
    }
}
