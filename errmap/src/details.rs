//! Reading catalog errors back, on the client side.
//!
//! [`ErrorStatusExt`] adds two kinds of readers to `tonic::Status`:
//!
//! - [`error_code`](ErrorStatusExt::error_code) finds the catalog code by
//!   walking the details bytes in place: no allocation, nothing decoded but
//!   the `ErrorInfo`'s reason and domain;
//! - [`error_details`](ErrorStatusExt::error_details) decodes every detail
//!   once into an [`ErrorDetails`], whose getters then cost nothing. Detail
//!   types errmap does not know are kept, not dropped.
//!
//! Each has a `check_*` twin that says why it found nothing. None of them
//! panics on any input: the bytes come from the network.
//!
//! ```
//! use errmap::{Catalog, ErrorCode, ErrorStatusExt};
//!
//! # let status = tonic::Status::from(ErrorCode::ApiTooManyRequests);
//! // `status` came back from a call.
//! match status.error_code() {
//!     Some(ErrorCode::AuthExpiredToken) => { /* refresh the token, retry */ }
//!     Some(ErrorCode::ApiTooManyRequests) => {
//!         let details = status.error_details().unwrap();
//!         assert_eq!(details.retry_delay(), Some(std::time::Duration::from_secs(1)));
//!     }
//!     Some(other) => eprintln!("{other}: {}", other.entry().message()),
//!     None => eprintln!("not a catalog error: {status}"),
//! }
//! ```

use std::time::Duration;

use base64::{
    alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine as _,
};
use prost_types::Any;
use tonic::{Code, Status};
use tonic_types::pb::{BadRequest, ErrorInfo, Help, LocalizedMessage, RetryInfo};

use crate::{
    catalog::{CatalogEntry, CatalogTable, TableRef},
    catalog_set::Catalogs,
    code::Catalog,
    wire,
};

/// The header that carries the encoded details.
pub const DETAILS_HEADER: &str = "grpc-status-details-bin";

/// Base64 as gRPC metadata uses it: standard alphabet, written without
/// padding, read with or without.
pub(crate) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a status could not be read as a catalog error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DetailsError {
    /// The status carries no details at all.
    #[error("the status carries no details")]
    NoDetails,
    /// The `grpc-status-details-bin` value is not valid base64.
    #[error("the status details are not valid base64: {0}")]
    Base64(String),
    /// The details are not a valid encoded `google.rpc.Status`.
    #[error("the status details are not a valid google.rpc.Status: {0}")]
    Protobuf(String),
    /// A detail of a known type could not be decoded.
    #[error("the {type_name} detail could not be decoded: {reason}")]
    BadDetail {
        /// The detail's message type, e.g. `google.rpc.ErrorInfo`.
        type_name: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// The code or message inside the details differ from the status's own,
    /// which well-behaved servers never send.
    #[error(
        "the details say {details_code:?} {details_message:?} but the status says \
         {status_code:?} {status_message:?}"
    )]
    StatusMismatch {
        /// The status's gRPC code.
        status_code: i32,
        /// The status's message.
        status_message: String,
        /// The code inside the details.
        details_code: i32,
        /// The message inside the details.
        details_message: String,
    },
    /// The details hold no `ErrorInfo`.
    #[error("the status details hold no google.rpc.ErrorInfo")]
    NoErrorInfo,
    /// The details hold more than one `ErrorInfo`, so which code they mean
    /// is ambiguous; errmap never sends that.
    #[error("the status details hold {count} google.rpc.ErrorInfo, not one")]
    DuplicateErrorInfo {
        /// How many there are.
        count: usize,
    },
    /// The `ErrorInfo` belongs to another domain than the catalog's.
    #[error("the ErrorInfo domain {domain:?} is not the catalog's ({expected:?})")]
    ForeignDomain {
        /// The domain found.
        domain: String,
        /// The catalog's domain.
        expected: String,
    },
    /// The `ErrorInfo` reason names no catalog code.
    #[error("the ErrorInfo reason {reason:?} is not in the catalog")]
    UnknownReason {
        /// The reason found.
        reason: String,
    },
}

fn code_of<C: Catalog>(reason: &str, domain: &str) -> Result<C, DetailsError> {
    let expected = C::table().domain();
    if domain != expected {
        return Err(DetailsError::ForeignDomain {
            domain: domain.to_owned(),
            expected: expected.to_owned(),
        });
    }
    C::from_name(reason).ok_or_else(|| DetailsError::UnknownReason {
        reason: reason.to_owned(),
    })
}

fn malformed() -> DetailsError {
    DetailsError::Protobuf("malformed protobuf wire data".to_owned())
}

fn bad_error_info() -> DetailsError {
    DetailsError::BadDetail {
        type_name: wire::ERROR_INFO.to_owned(),
        reason: "malformed ErrorInfo (wire format or UTF-8)".to_owned(),
    }
}

/// The one strict reading every reader of a status shares: the details are
/// a well-formed `google.rpc.Status` whose code and message equal the
/// status's own, holding exactly one well-formed `ErrorInfo`. Allocates
/// nothing unless it fails.
fn read_error_info<'a>(
    code: tonic::Code,
    message: &str,
    details: &'a [u8],
) -> Result<wire::ErrorInfoFields<'a>, DetailsError> {
    if details.is_empty() {
        return Err(DetailsError::NoDetails);
    }
    let view = wire::StatusView::parse(details).map_err(|_| malformed())?;
    if view.code != code as i32 || view.message != message {
        return Err(DetailsError::StatusMismatch {
            status_code: code as i32,
            status_message: message.to_owned(),
            details_code: view.code,
            details_message: view.message.to_owned(),
        });
    }
    let info = match (view.error_infos, view.error_info) {
        (1, Some(info)) => info,
        (0, _) | (_, None) => return Err(DetailsError::NoErrorInfo),
        (count, _) => return Err(DetailsError::DuplicateErrorInfo { count }),
    };
    wire::ErrorInfoFields::parse(info).map_err(|_| bad_error_info())
}

/// The shortcut for a status as errmap builds it: its code, its message,
/// the `ErrorInfo`, then exactly the details errmap puts after the
/// `ErrorInfo` for that code (its `LocalizedMessage` in one of the
/// catalog's locales, and its `RetryInfo`). Those bytes are the ones errmap
/// encoded and checked, so they are not read again. The `ErrorInfo` is
/// read in full. `None` for anything else, which the general reader reads;
/// on what it accepts, both give the same answer.
fn read_own_status<'a, T: AsRef<CatalogTable>>(
    code: tonic::Code,
    message: &str,
    details: &'a [u8],
    table_of: impl FnOnce(&[u8]) -> Option<T>,
) -> Option<(T, usize, wire::ErrorInfoFields<'a>)> {
    let own = wire::OwnStatus::split(details)?;
    if own.code != code as i32 || own.message != message.as_bytes() {
        return None;
    }
    let (reason, domain) = wire::ErrorInfoFields::leading_reason_and_domain(own.error_info)?;
    let found = table_of(domain)?;
    let table = found.as_ref();
    // The table's domain is the status's: `table_of` may give a table
    // without looking (one catalog's reader does), and the unsafe read
    // below relies on it.
    if table.domain().as_bytes() != domain {
        return None;
    }
    let index = table.index_of_name(reason)?;
    // What errmap puts after the ErrorInfo, in one of the catalog's locales.
    let own_rest = (0..table.locales().len()).any(|l| table.prebuilt(index, l).rest == own.rest);
    if !own_rest {
        return None;
    }
    // The ErrorInfo as errmap writes it for the entry (reason, domain,
    // `code`): only what follows is read.
    // SAFETY: `reason` is the name of entry `index` (`index_of_name`
    // compared the bytes) and `domain` the table's domain (compared
    // above): both are the bytes of a `str`.
    let fields = unsafe {
        wire::ErrorInfoFields::after_prefix(
            own.error_info,
            &table.prebuilt(index, 0).error_info_value,
            reason,
            domain,
        )
    }?;
    Some((found, index, fields))
}

/// [`read_error_info`], then the code of catalog `C`.
fn read_catalog_error<'a, C: Catalog>(
    code: tonic::Code,
    message: &str,
    details: &'a [u8],
) -> Result<(C, wire::ErrorInfoFields<'a>), DetailsError> {
    // read_own_status checks that the domain is the table's.
    let own = read_own_status(code, message, details, |_| Some(C::table()));
    if let Some((_, index, fields)) = own {
        if let Some(found) = C::from_index(index) {
            return Ok((found, fields));
        }
    }
    let fields = read_error_info(code, message, details)?;
    Ok((code_of(fields.reason, fields.domain)?, fields))
}

/// The catalog and entry of `status` among `catalogs`: the same strict
/// reading as [`ErrorStatusExt::error_code`], for whichever catalog the
/// `ErrorInfo`'s domain names. The response layer passes a status through
/// only when this succeeds.
pub fn catalog_entry_of<'c>(
    status: &Status,
    catalogs: &'c Catalogs,
) -> Result<(&'c TableRef, &'c CatalogEntry), DetailsError> {
    catalog_entry_of_parts(status.code(), status.message(), status.details(), catalogs)
}

/// [`catalog_entry_of`] on a status's parts, for the response layer, which
/// has them from the headers and need not build a `Status`.
pub fn catalog_entry_of_parts<'c>(
    code: tonic::Code,
    message: &str,
    details: &[u8],
    catalogs: &'c Catalogs,
) -> Result<(&'c TableRef, &'c CatalogEntry), DetailsError> {
    if let Some((table, index, _)) = read_own_status(code, message, details, |domain| {
        catalogs.by_domain(std::str::from_utf8(domain).ok()?)
    }) {
        return Ok((table, &table.entries()[index]));
    }
    let fields = read_error_info(code, message, details)?;
    let Some(table) = catalogs.by_domain(fields.domain) else {
        return Err(DetailsError::ForeignDomain {
            domain: fields.domain.to_owned(),
            expected: catalogs
                .default_table()
                .map_or_else(String::new, |t| t.domain().to_owned()),
        });
    };
    let index = table
        .index_of_name(fields.reason.as_bytes())
        .ok_or_else(|| DetailsError::UnknownReason {
            reason: fields.reason.to_owned(),
        })?;
    Ok((table, &table.entries()[index]))
}

/// A borrowed view of an `ErrorInfo` inside a status's details: reading
/// it allocates nothing. Made by [`ErrorStatusExt::error_info_view`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorInfoView<'a> {
    fields: wire::ErrorInfoFields<'a>,
}

impl<'a> ErrorInfoView<'a> {
    /// The reason, the catalog code's name.
    pub fn reason(&self) -> &'a str {
        self.fields.reason
    }

    /// The domain.
    pub fn domain(&self) -> &'a str {
        self.fields.domain
    }

    /// The metadata entries, in the order sent (a repeated key yields each
    /// value; map semantics keep the last).
    pub fn metadata(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.fields.metadata()
    }

    /// One metadata value (the last one sent for `key`).
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.metadata()
            .filter(|(k, _)| *k == key)
            .last()
            .map(|(_, v)| v)
    }

    /// The owned message.
    pub fn to_error_info(&self) -> ErrorInfo {
        // Room for `code` and two more entries from the start: the table
        // is allocated once, never grown, for most statuses.
        let mut metadata = std::collections::HashMap::with_capacity(3);
        metadata.extend(self.metadata().map(|(k, v)| (k.to_owned(), v.to_owned())));
        ErrorInfo {
            reason: self.reason().to_owned(),
            domain: self.domain().to_owned(),
            metadata,
        }
    }
}

/// Every detail of a rich status, decoded once.
///
/// Known types are decoded into their messages (the first of each type);
/// every other `Any`, including repeats of a known type and known types
/// that do not decode, is kept in [`other`](Self::other), so nothing sent
/// is lost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorDetails {
    code: i32,
    message: String,
    error_info: Option<ErrorInfo>,
    localized_message: Option<LocalizedMessage>,
    retry_info: Option<RetryInfo>,
    bad_request: Option<BadRequest>,
    help: Option<Help>,
    error_infos: usize,
    other: Vec<Any>,
}

fn decode_detail<M: prost::Message + Default>(
    slot: &mut Option<M>,
    any: AnyRef<'_>,
) -> Option<Any> {
    if slot.is_none() {
        if let Ok(message) = M::decode(any.value) {
            *slot = Some(message);
            return None;
        }
    }
    Some(any.to_owned())
}

/// A details entry before it is sorted into its slot.
#[derive(Clone, Copy)]
struct AnyRef<'a> {
    type_url: &'a str,
    value: &'a [u8],
}

impl AnyRef<'_> {
    fn to_owned(self) -> Any {
        Any {
            type_url: self.type_url.to_owned(),
            value: self.value.to_vec(),
        }
    }
}

impl ErrorDetails {
    /// Decodes an encoded `google.rpc.Status` (the bytes of
    /// `Status::details()`), with the same strict reader as
    /// [`ErrorStatusExt::error_code`].
    pub fn decode(details: &[u8]) -> Result<Self, DetailsError> {
        if details.is_empty() {
            return Err(DetailsError::NoDetails);
        }
        let view = wire::StatusView::parse(details).map_err(|_| malformed())?;
        let mut out = ErrorDetails {
            code: view.code,
            message: view.message.to_owned(),
            error_infos: view.error_infos,
            ..Self::default()
        };
        if let Some(info) = view.error_info {
            let fields = wire::ErrorInfoFields::parse(info).map_err(|_| bad_error_info())?;
            out.error_info = Some(ErrorInfoView { fields }.to_error_info());
        }
        let mut seen_error_info = false;
        for (any, _) in view.details() {
            let any_ref = AnyRef {
                type_url: any.type_url,
                value: any.value,
            };
            let rest = match any.type_name() {
                wire::ERROR_INFO if !seen_error_info => {
                    seen_error_info = true;
                    None
                }
                wire::LOCALIZED_MESSAGE => decode_detail(&mut out.localized_message, any_ref),
                wire::RETRY_INFO => decode_detail(&mut out.retry_info, any_ref),
                wire::BAD_REQUEST => decode_detail(&mut out.bad_request, any_ref),
                wire::HELP => decode_detail(&mut out.help, any_ref),
                _ => Some(any_ref.to_owned()),
            };
            out.other.extend(rest);
        }
        Ok(out)
    }

    /// Decodes a `grpc-status-details-bin` header value: base64, padded or
    /// not, of an encoded `google.rpc.Status`.
    pub fn from_header_value(value: &[u8]) -> Result<Self, DetailsError> {
        Self::decode(&decode_base64(value)?)
    }

    /// The gRPC code inside the details.
    pub fn status_code(&self) -> Code {
        Code::from_i32(self.code)
    }

    /// The message inside the details.
    pub fn status_message(&self) -> &str {
        &self.message
    }

    /// The code of catalog `C`, if the `ErrorInfo` is one of `C`'s.
    pub fn error_code<C: Catalog>(&self) -> Option<C> {
        self.check_error_code().ok()
    }

    /// The code of catalog `C`, or why there is none.
    pub fn check_error_code<C: Catalog>(&self) -> Result<C, DetailsError> {
        if self.error_infos > 1 {
            return Err(DetailsError::DuplicateErrorInfo {
                count: self.error_infos,
            });
        }
        let info = self.error_info.as_ref().ok_or(DetailsError::NoErrorInfo)?;
        code_of(&info.reason, &info.domain)
    }

    /// The entry of catalog `C` for [`error_code`](Self::error_code).
    pub fn entry<C: Catalog>(&self) -> Option<&'static CatalogEntry> {
        self.error_code::<C>().map(C::entry)
    }

    /// The `ErrorInfo`, with its metadata.
    pub fn error_info(&self) -> Option<&ErrorInfo> {
        self.error_info.as_ref()
    }

    /// One `ErrorInfo` metadata value, for example `"code"`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.error_info
            .as_ref()?
            .metadata
            .get(key)
            .map(String::as_str)
    }

    /// The `LocalizedMessage`.
    pub fn localized_message(&self) -> Option<&LocalizedMessage> {
        self.localized_message.as_ref()
    }

    /// The `RetryInfo`.
    pub fn retry_info(&self) -> Option<&RetryInfo> {
        self.retry_info.as_ref()
    }

    /// The `RetryInfo` delay as a `Duration`; `None` when absent or
    /// negative.
    pub fn retry_delay(&self) -> Option<Duration> {
        let delay = self.retry_info.as_ref()?.retry_delay.as_ref()?;
        let secs = u64::try_from(delay.seconds).ok()?;
        let nanos = u32::try_from(delay.nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)?;
        Some(Duration::new(secs, nanos))
    }

    /// The `BadRequest`, with its field violations.
    pub fn bad_request(&self) -> Option<&BadRequest> {
        self.bad_request.as_ref()
    }

    /// The `Help`, with its links.
    pub fn help(&self) -> Option<&Help> {
        self.help.as_ref()
    }

    /// Details of types errmap does not decode, and repeats of known types,
    /// as sent.
    pub fn other(&self) -> &[Any] {
        &self.other
    }
}

/// Decodes base64 as it appears in `-bin` metadata, padded or not.
pub fn decode_base64(value: &[u8]) -> Result<Vec<u8>, DetailsError> {
    BASE64
        .decode(value)
        .map_err(|e| DetailsError::Base64(e.to_string()))
}

/// Reads a status from response headers or trailers, like
/// `tonic::Status::from_header_map`, but returns an error instead of
/// panicking when `grpc-status-details-bin` is not valid base64.
///
/// `Ok(None)` when there is no `grpc-status` header.
pub fn status_from_header_map(headers: &http::HeaderMap) -> Result<Option<Status>, DetailsError> {
    if !headers.contains_key(crate::headers::GRPC_STATUS) {
        return Ok(None);
    }
    if let Some(value) = headers.get(DETAILS_HEADER) {
        decode_base64(value.as_bytes())?;
    }
    // The details decode, so tonic's own reader has nothing to panic about.
    Ok(Status::from_header_map(headers))
}

mod sealed {
    #[allow(unreachable_pub)]
    pub trait Sealed {}
    impl Sealed for tonic::Status {}
}

/// Reads catalog errors back from a `tonic::Status`. Sealed: implemented for
/// `tonic::Status` only, so methods can be added without breaking anyone.
pub trait ErrorStatusExt: sealed::Sealed {
    /// The code of catalog `C` (usually inferred, as in
    /// `Some(ErrorCode::AuthRequired) == status.error_code()`), or `None` if
    /// the status is not an error of that catalog or its details are
    /// unreadable.
    ///
    /// Does not allocate.
    fn error_code<C: Catalog>(&self) -> Option<C>;

    /// The code of catalog `C`, or why there is none.
    fn check_error_code<C: Catalog>(&self) -> Result<C, DetailsError>;

    /// The code and the `ErrorInfo` (with its metadata), decoding nothing
    /// else; `None` as for [`error_code`](Self::error_code).
    fn error_info<C: Catalog>(&self) -> Option<(C, ErrorInfo)>;

    /// The code and the `ErrorInfo`, or why there are none.
    fn check_error_info<C: Catalog>(&self) -> Result<(C, ErrorInfo), DetailsError>;

    /// The code and a borrowed view of the `ErrorInfo`: reason, domain and
    /// metadata without allocating.
    fn error_info_view<C: Catalog>(&self) -> Option<(C, ErrorInfoView<'_>)>;

    /// The code and a borrowed `ErrorInfo`, or why there are none.
    fn check_error_info_view<C: Catalog>(&self) -> Result<(C, ErrorInfoView<'_>), DetailsError>;

    /// Every detail, decoded once; `None` if the status has no details or
    /// they are unreadable.
    fn error_details(&self) -> Option<ErrorDetails>;

    /// Every detail, decoded once, or why they cannot be read. Also checks
    /// that the code and message inside the details equal the status's own,
    /// as gRPC's Python and Go readers do.
    fn check_error_details(&self) -> Result<ErrorDetails, DetailsError>;
}

impl ErrorStatusExt for Status {
    fn error_code<C: Catalog>(&self) -> Option<C> {
        self.check_error_code().ok()
    }

    fn check_error_code<C: Catalog>(&self) -> Result<C, DetailsError> {
        read_catalog_error(self.code(), self.message(), self.details()).map(|(code, _)| code)
    }

    fn error_info<C: Catalog>(&self) -> Option<(C, ErrorInfo)> {
        self.check_error_info().ok()
    }

    fn check_error_info<C: Catalog>(&self) -> Result<(C, ErrorInfo), DetailsError> {
        let (code, view) = self.check_error_info_view()?;
        Ok((code, view.to_error_info()))
    }

    fn error_info_view<C: Catalog>(&self) -> Option<(C, ErrorInfoView<'_>)> {
        self.check_error_info_view().ok()
    }

    fn check_error_info_view<C: Catalog>(&self) -> Result<(C, ErrorInfoView<'_>), DetailsError> {
        let (code, fields) = read_catalog_error(self.code(), self.message(), self.details())?;
        Ok((code, ErrorInfoView { fields }))
    }

    fn error_details(&self) -> Option<ErrorDetails> {
        self.check_error_details().ok()
    }

    fn check_error_details(&self) -> Result<ErrorDetails, DetailsError> {
        let details = ErrorDetails::decode(self.details())?;
        if details.code != self.code() as i32 || details.message != self.message() {
            return Err(DetailsError::StatusMismatch {
                status_code: self.code() as i32,
                status_message: self.message().to_owned(),
                details_code: details.code,
                details_message: details.message,
            });
        }
        Ok(details)
    }
}
