//! The gRPC headers errmap reads and writes, in one place: their names, and
//! one parser for each value (gRPC over HTTP/2: `grpc-status`,
//! `grpc-message`, `grpc-status-details-bin`, `grpc-timeout`; gRFC A6:
//! `grpc-retry-pushback-ms`).
//!
//! ```
//! use std::{borrow::Cow, time::Duration};
//! use errmap::headers;
//!
//! assert_eq!(headers::grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
//! assert_eq!(headers::grpc_timeout(b"1.5S"), None);
//! ```

use std::{borrow::Cow, time::Duration};

use http::{HeaderMap, HeaderName};

/// `grpc-status`: the status code, in decimal.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`: the status message, percent-encoded.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-status-details-bin`: the `google.rpc.Status`, base64.
pub const GRPC_STATUS_DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");
/// `grpc-timeout`: the caller's deadline, as digits and a unit.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// `grpc-retry-pushback-ms`: how long gRPC clients with a retry policy
/// (gRFC A6) wait before retrying, in milliseconds. errmap sends it with
/// every status that carries a `RetryInfo`, with the same delay.
pub const RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";
/// [`RETRY_PUSHBACK_MS`] as a header name.
pub const GRPC_RETRY_PUSHBACK: HeaderName = HeaderName::from_static(RETRY_PUSHBACK_MS);

/// `grpc-previous-rpc-attempts`: how many times a call was tried before
/// this attempt (gRFC A6).
pub const PREVIOUS_ATTEMPTS: &str = "grpc-previous-rpc-attempts";

/// A `grpc-timeout` value as a duration: at most 8 digits and a unit (`H`,
/// `M`, `S`, `m`, `u`, `n`), as the gRPC spec writes it. Anything else,
/// a sign, a fraction, a ninth digit, is `None`.
pub fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Eight digits fit any unit: 99,999,999 hours is about 3.6e11 s.
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The `grpc-timeout` of a request's headers, parsed by [`grpc_timeout`].
pub fn request_timeout(headers: &HeaderMap) -> Option<Duration> {
    grpc_timeout(headers.get(GRPC_TIMEOUT)?.as_bytes())
}

/// The `grpc-status` of `headers` (trailers, or the headers of a
/// trailers-only response) as its number, without decoding the rest of the
/// status; `None` when it is absent or not a number.
pub fn grpc_status_code(headers: &HeaderMap) -> Option<i32> {
    let value = headers.get(GRPC_STATUS)?.as_bytes();
    if value.is_empty() || value.len() > 2 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, d| n * 10 + i32::from(d - b'0')))
}

/// The pushback of `headers`: absent (`Ok(None)`), a delay, or (`Err`) a
/// value that is no non-negative integer, which by gRFC A6 asks for no
/// retry at all.
#[allow(clippy::result_unit_err)]
pub fn retry_pushback(headers: &HeaderMap) -> Result<Option<Duration>, ()> {
    let Some(value) = headers.get(GRPC_RETRY_PUSHBACK) else {
        return Ok(None);
    };
    let millis = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or(())?;
    Ok(Some(Duration::from_millis(millis)))
}

/// Decodes a percent-encoded value: a `grpc-message` (percent-encoded
/// UTF-8), or a URL's path or query. A `%` not followed by two hex digits
/// stays as it is; bytes that are not UTF-8 become U+FFFD.
pub fn percent_decode(value: &[u8]) -> Cow<'_, str> {
    if !value.contains(&b'%') {
        return String::from_utf8_lossy(value);
    }
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (value[i], value.get(i + 1), value.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(grpc_timeout(b"200m"), Some(Duration::from_millis(200)));
        assert_eq!(grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            grpc_timeout(b"99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        for bad in [
            &b""[..],
            b"m",
            b"123456789m",
            b"12x",
            b"-1S",
            b"1.5S",
            b"+1S",
        ] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn status_codes_and_pushbacks_are_read_without_decoding_the_rest() {
        let mut headers = HeaderMap::new();
        assert_eq!(grpc_status_code(&headers), None);
        headers.insert(GRPC_STATUS, "13".parse().unwrap());
        assert_eq!(grpc_status_code(&headers), Some(13));
        headers.insert(GRPC_STATUS, "x".parse().unwrap());
        assert_eq!(grpc_status_code(&headers), None);
        assert_eq!(retry_pushback(&headers), Ok(None));
        headers.insert(GRPC_RETRY_PUSHBACK, "1000".parse().unwrap());
        assert_eq!(retry_pushback(&headers), Ok(Some(Duration::from_secs(1))));
        headers.insert(GRPC_RETRY_PUSHBACK, "-1".parse().unwrap());
        assert_eq!(retry_pushback(&headers), Err(()));
    }
}
