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
//! use errmap::{ErrorCode, ErrorStatusExt};
//!
//! # let status = tonic::Status::from(ErrorCode::ApiTooManyRequests);
//! // `status` came back from a call.
//! match status.error_code() {
//!     Some(ErrorCode::AuthExpiredToken) => { /* refresh the token, retry */ }
//!     Some(ErrorCode::ApiTooManyRequests) => {
//!         let details = status.error_details().unwrap();
//!         assert_eq!(details.retry_delay(), Some(std::time::Duration::from_secs(1)));
//!     }
//!     Some(other) => eprintln!("{other}: {}", other.message()),
//!     None => eprintln!("not a catalog error: {status}"),
//! }
//! ```

use std::time::Duration;

use base64::{
    alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine as _,
};
use prost::Message as _;
use prost_types::Any;
use tonic::{Code, Status};
use tonic_types::pb::{BadRequest, ErrorInfo, Help, LocalizedMessage, RetryInfo};

use crate::{
    catalog::{CatalogEntry, DOMAIN},
    wire, ErrorCode,
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
    /// The `ErrorInfo` belongs to another domain.
    #[error("the ErrorInfo domain {domain:?} is not errmap's ({DOMAIN:?})")]
    ForeignDomain {
        /// The domain found.
        domain: String,
    },
    /// The `ErrorInfo` reason names no catalog code.
    #[error("the ErrorInfo reason {reason:?} is not in the catalog")]
    UnknownReason {
        /// The reason found.
        reason: String,
    },
}

fn code_of(reason: &[u8], domain: &[u8]) -> Result<ErrorCode, DetailsError> {
    if domain != DOMAIN.as_bytes() {
        return Err(DetailsError::ForeignDomain {
            domain: String::from_utf8_lossy(domain).into_owned(),
        });
    }
    ErrorCode::from_name_bytes(reason).ok_or_else(|| DetailsError::UnknownReason {
        reason: String::from_utf8_lossy(reason).into_owned(),
    })
}

/// Finds the catalog code in encoded `google.rpc.Status` bytes without
/// allocating on success.
fn scan_error_code(details: &[u8]) -> Result<ErrorCode, DetailsError> {
    if details.is_empty() {
        return Err(DetailsError::NoDetails);
    }
    match wire::find_error_info(details) {
        Ok(Some((reason, domain))) => code_of(reason, domain),
        Ok(None) => Err(DetailsError::NoErrorInfo),
        Err(wire::Malformed) => Err(DetailsError::Protobuf(
            "malformed protobuf wire data".to_owned(),
        )),
    }
}

/// A borrowed view of an `ErrorInfo` inside a status's details: reading
/// it allocates nothing. Made by [`ErrorStatusExt::error_info_view`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorInfoView<'a> {
    reason: &'a str,
    domain: &'a str,
    /// The encoded ErrorInfo, whose metadata entries were checked when the
    /// view was made.
    encoded: &'a [u8],
}

impl<'a> ErrorInfoView<'a> {
    /// Parses and checks an encoded `ErrorInfo`: wire format and UTF-8 of
    /// every string, metadata included.
    fn parse(encoded: &'a [u8]) -> Result<Self, DetailsError> {
        let bad = |what: &str| DetailsError::BadDetail {
            type_name: wire::ERROR_INFO.to_owned(),
            reason: what.to_owned(),
        };
        let text = |b: &'a [u8]| std::str::from_utf8(b).map_err(|_| bad("a string is not UTF-8"));
        let mut reason = "";
        let mut domain = "";
        let mut fields = wire::Fields::new(encoded);
        while let Some((tag, data)) = fields.next_field().map_err(|_| bad("malformed"))? {
            match (tag, data) {
                (1, Some(d)) => reason = text(d)?,
                (2, Some(d)) => domain = text(d)?,
                (3, Some(entry)) => {
                    let (k, v) = map_entry(entry).ok_or_else(|| bad("malformed metadata entry"))?;
                    text(k)?;
                    text(v)?;
                }
                (1..=3, None) => return Err(bad("wrong wire type")),
                _ => {}
            }
        }
        Ok(Self {
            reason,
            domain,
            encoded,
        })
    }

    /// The reason, the catalog code's name.
    pub fn reason(&self) -> &'a str {
        self.reason
    }

    /// The domain.
    pub fn domain(&self) -> &'a str {
        self.domain
    }

    /// The metadata entries, in the order sent (a repeated key yields each
    /// value; map semantics keep the last).
    pub fn metadata(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let mut fields = wire::Fields::new(self.encoded);
        std::iter::from_fn(move || loop {
            match fields.next_field() {
                Ok(Some((3, Some(entry)))) => {
                    let (k, v) = map_entry(entry)?;
                    // Checked in `parse`.
                    return Some((
                        std::str::from_utf8(k).unwrap_or_default(),
                        std::str::from_utf8(v).unwrap_or_default(),
                    ));
                }
                Ok(Some(_)) => continue,
                _ => return None,
            }
        })
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
        ErrorInfo {
            reason: self.reason.to_owned(),
            domain: self.domain.to_owned(),
            metadata: self
                .metadata()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }
}

/// The key and value of an encoded map entry.
fn map_entry(entry: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut key: &[u8] = &[];
    let mut value: &[u8] = &[];
    let mut fields = wire::Fields::new(entry);
    while let Some((tag, data)) = fields.next_field().ok()? {
        match (tag, data) {
            (1, Some(d)) => key = d,
            (2, Some(d)) => value = d,
            (1 | 2, None) => return None,
            _ => {}
        }
    }
    Some((key, value))
}

/// Every detail of a rich status, decoded once.
///
/// Known types are decoded into their messages (the first of each type);
/// every other `Any`, including repeats of a known type, is kept in
/// [`other`](Self::other).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorDetails {
    code: i32,
    message: String,
    error_info: Option<ErrorInfo>,
    localized_message: Option<LocalizedMessage>,
    retry_info: Option<RetryInfo>,
    bad_request: Option<BadRequest>,
    help: Option<Help>,
    other: Vec<Any>,
}

fn decode_detail<M: prost::Message + Default>(
    slot: &mut Option<M>,
    any: Any,
    type_name: &str,
    other: &mut Vec<Any>,
) -> Result<(), DetailsError> {
    if slot.is_some() {
        other.push(any);
        return Ok(());
    }
    let message = M::decode(any.value.as_slice()).map_err(|e| DetailsError::BadDetail {
        type_name: type_name.to_owned(),
        reason: e.to_string(),
    })?;
    *slot = Some(message);
    Ok(())
}

impl ErrorDetails {
    /// Decodes an encoded `google.rpc.Status` (the bytes of
    /// `Status::details()`).
    pub fn decode(details: &[u8]) -> Result<Self, DetailsError> {
        if details.is_empty() {
            return Err(DetailsError::NoDetails);
        }
        let status = tonic_types::pb::Status::decode(details)
            .map_err(|e| DetailsError::Protobuf(e.to_string()))?;
        let mut out = ErrorDetails {
            code: status.code,
            message: status.message,
            ..Self::default()
        };
        for any in status.details {
            let name = wire::type_name(any.type_url.as_bytes());
            let name = std::str::from_utf8(name).unwrap_or_default();
            match name {
                wire::ERROR_INFO => {
                    decode_detail(&mut out.error_info, any, wire::ERROR_INFO, &mut out.other)?
                }
                wire::LOCALIZED_MESSAGE => decode_detail(
                    &mut out.localized_message,
                    any,
                    wire::LOCALIZED_MESSAGE,
                    &mut out.other,
                )?,
                wire::RETRY_INFO => {
                    decode_detail(&mut out.retry_info, any, wire::RETRY_INFO, &mut out.other)?
                }
                wire::BAD_REQUEST => {
                    decode_detail(&mut out.bad_request, any, wire::BAD_REQUEST, &mut out.other)?
                }
                wire::HELP => decode_detail(&mut out.help, any, wire::HELP, &mut out.other)?,
                _ => out.other.push(any),
            }
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

    /// The catalog code, if the `ErrorInfo` is one of errmap's.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.check_error_code().ok()
    }

    /// The catalog code, or why there is none.
    pub fn check_error_code(&self) -> Result<ErrorCode, DetailsError> {
        let info = self.error_info.as_ref().ok_or(DetailsError::NoErrorInfo)?;
        code_of(info.reason.as_bytes(), info.domain.as_bytes())
    }

    /// The catalog entry of [`error_code`](Self::error_code).
    pub fn entry(&self) -> Option<&'static CatalogEntry> {
        self.error_code().map(ErrorCode::entry)
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
    if !headers.contains_key("grpc-status") {
        return Ok(None);
    }
    if let Some(value) = headers.get(DETAILS_HEADER) {
        decode_base64(value.as_bytes())?;
    }
    // The details decode, so tonic's own reader has nothing to panic about.
    Ok(Status::from_header_map(headers))
}

/// The encoded value of the first `ErrorInfo` of encoded details.
fn error_info_value(details: &[u8]) -> Result<&[u8], DetailsError> {
    if details.is_empty() {
        return Err(DetailsError::NoDetails);
    }
    match wire::find_error_info_value(details) {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err(DetailsError::NoErrorInfo),
        Err(wire::Malformed) => Err(DetailsError::Protobuf(
            "malformed protobuf wire data".to_owned(),
        )),
    }
}

mod sealed {
    #[allow(unreachable_pub)]
    pub trait Sealed {}
    impl Sealed for tonic::Status {}
}

/// Reads catalog errors back from a `tonic::Status`. Sealed: implemented for
/// `tonic::Status` only, so methods can be added without breaking anyone.
pub trait ErrorStatusExt: sealed::Sealed {
    /// The catalog code, or `None` if the status is not an errmap error of
    /// this catalog's domain (or its details are unreadable).
    ///
    /// Does not allocate.
    fn error_code(&self) -> Option<ErrorCode>;

    /// The catalog code, or why there is none.
    fn check_error_code(&self) -> Result<ErrorCode, DetailsError>;

    /// The catalog code and the `ErrorInfo` (with its metadata), decoding
    /// nothing else; `None` as for [`error_code`](Self::error_code).
    fn error_info(&self) -> Option<(ErrorCode, ErrorInfo)>;

    /// The catalog code and the `ErrorInfo`, or why there are none.
    fn check_error_info(&self) -> Result<(ErrorCode, ErrorInfo), DetailsError>;

    /// The catalog code and a borrowed view of the `ErrorInfo`: reason,
    /// domain and metadata without allocating.
    fn error_info_view(&self) -> Option<(ErrorCode, ErrorInfoView<'_>)>;

    /// The catalog code and a borrowed `ErrorInfo`, or why there are none.
    fn check_error_info_view(&self) -> Result<(ErrorCode, ErrorInfoView<'_>), DetailsError>;

    /// Every detail, decoded once; `None` if the status has no details or
    /// they are unreadable.
    fn error_details(&self) -> Option<ErrorDetails>;

    /// Every detail, decoded once, or why they cannot be read. Also checks
    /// that the code and message inside the details equal the status's own,
    /// as gRPC's Python and Go readers do.
    fn check_error_details(&self) -> Result<ErrorDetails, DetailsError>;
}

impl ErrorStatusExt for Status {
    fn error_code(&self) -> Option<ErrorCode> {
        scan_error_code(self.details()).ok()
    }

    fn check_error_code(&self) -> Result<ErrorCode, DetailsError> {
        scan_error_code(self.details())
    }

    fn error_info(&self) -> Option<(ErrorCode, ErrorInfo)> {
        self.check_error_info().ok()
    }

    fn check_error_info(&self) -> Result<(ErrorCode, ErrorInfo), DetailsError> {
        let value = error_info_value(self.details())?;
        let info = ErrorInfo::decode(value).map_err(|e| DetailsError::BadDetail {
            type_name: wire::ERROR_INFO.to_owned(),
            reason: e.to_string(),
        })?;
        let code = code_of(info.reason.as_bytes(), info.domain.as_bytes())?;
        Ok((code, info))
    }

    fn error_info_view(&self) -> Option<(ErrorCode, ErrorInfoView<'_>)> {
        self.check_error_info_view().ok()
    }

    fn check_error_info_view(&self) -> Result<(ErrorCode, ErrorInfoView<'_>), DetailsError> {
        let view = ErrorInfoView::parse(error_info_value(self.details())?)?;
        let code = code_of(view.reason.as_bytes(), view.domain.as_bytes())?;
        Ok((code, view))
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
