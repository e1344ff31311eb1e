//! Locales: which language a caller reads, from its `accept-language`.
//!
//! A client asks for a language the way browsers do, with the HTTP header
//! `accept-language`, sent as gRPC metadata (`ru-RU, ru;q=0.9, en;q=0.5`).
//! Every catalog status then carries a `google.rpc.LocalizedMessage` in the
//! best locale the catalog has; `grpc-message` and the message of the
//! `google.rpc.Status` stay the English developer message.
//!
//! The rules (RFC 9110 §12.5.4 for the header, RFC 4647 lookup for the
//! match):
//! - members are tried by quality value, highest first, and in header order
//!   among equal values; `q=0` members are ignored;
//! - a member matches a catalog locale when it is the same tag (`ru-RU`),
//!   when it is a range that covers one (`ru` gives `ru-RU`), or else when
//!   it has the same language (`ru-UA` gives `ru-RU`, `en-GB` gives
//!   `en-US`);
//! - `*`, an unmatched header, a missing one, and a malformed one give
//!   `en-US`.
//!
//! The header is bounded work: a value over [`MAX_HEADER_LEN`] bytes is
//! ignored, only the first [`MAX_MEMBERS`] members are read, and a member
//! whose tag or quality value is malformed is skipped. Tags are parsed and
//! compared by `unic-langid`, so case and `_` separators do not matter.
//! Negotiation allocates nothing.
//!
//! ```
//! use errmap::{Catalog, CatalogTable, ErrorCode};
//!
//! let table: &CatalogTable = ErrorCode::table();
//! assert_eq!(table.negotiate("ru"), "ru-RU");
//! assert_eq!(table.negotiate("fr-CH, ru;q=0.5"), "ru-RU");
//! assert_eq!(table.negotiate("fr-CH, de;q=0.5"), "en-US");
//! assert_eq!(table.negotiate("*;q=abc"), "en-US");
//! ```

use http::{HeaderMap, HeaderValue};
use tonic::metadata::MetadataMap;
use unic_langid::LanguageIdentifier;

/// The locale of the catalog messages, and the one every negotiation falls
/// back to.
pub const DEFAULT_LOCALE: &str = "en-US";

/// The request header (and gRPC metadata key) a client asks for a locale
/// with.
pub const ACCEPT_LANGUAGE: &str = "accept-language";

/// The longest `accept-language` value that is read; a longer one is
/// ignored (the default locale is used). Browsers send well under 200
/// bytes.
pub const MAX_HEADER_LEN: usize = 1024;

/// How many comma-separated members of the header are read; the rest are
/// ignored.
pub const MAX_MEMBERS: usize = 32;

/// The longest language tag that is parsed; longer members are skipped.
const MAX_TAG_LEN: usize = 64;

/// Where a caller's `accept-language` can be read from: a request, its
/// metadata or headers, a header value, or the text itself (`"ru"`).
///
/// ```
/// use errmap::{Catalog, ErrorCode};
///
/// let mut request = tonic::Request::new(());
/// request.metadata_mut().insert("accept-language", "ru-RU,ru;q=0.9".parse().unwrap());
/// let status = ErrorCode::ApiItemNotFound.builder().locale(&request).build().unwrap();
/// # use errmap::ErrorStatusExt as _;
/// let details = status.error_details().unwrap();
/// assert_eq!(details.localized_message().unwrap().locale, "ru-RU");
/// // grpc-message stays the English developer message.
/// assert_eq!(status.message(), ErrorCode::ApiItemNotFound.entry().message());
/// ```
pub trait AcceptLanguage {
    /// The `accept-language` value, if there is one.
    fn accept_language(&self) -> Option<&[u8]>;
}

impl AcceptLanguage for str {
    fn accept_language(&self) -> Option<&[u8]> {
        Some(self.as_bytes())
    }
}

impl AcceptLanguage for String {
    fn accept_language(&self) -> Option<&[u8]> {
        Some(self.as_bytes())
    }
}

impl AcceptLanguage for [u8] {
    fn accept_language(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl AcceptLanguage for HeaderValue {
    fn accept_language(&self) -> Option<&[u8]> {
        Some(self.as_bytes())
    }
}

impl AcceptLanguage for HeaderMap {
    fn accept_language(&self) -> Option<&[u8]> {
        self.get(ACCEPT_LANGUAGE).map(HeaderValue::as_bytes)
    }
}

impl AcceptLanguage for MetadataMap {
    fn accept_language(&self) -> Option<&[u8]> {
        self.get(ACCEPT_LANGUAGE).map(|v| v.as_bytes())
    }
}

impl<T> AcceptLanguage for tonic::Request<T> {
    fn accept_language(&self) -> Option<&[u8]> {
        self.metadata().accept_language()
    }
}

impl<T> AcceptLanguage for http::Request<T> {
    fn accept_language(&self) -> Option<&[u8]> {
        self.headers().accept_language()
    }
}

impl<T: AcceptLanguage + ?Sized> AcceptLanguage for &T {
    fn accept_language(&self) -> Option<&[u8]> {
        (**self).accept_language()
    }
}

impl<T: AcceptLanguage> AcceptLanguage for Option<T> {
    fn accept_language(&self) -> Option<&[u8]> {
        self.as_ref().and_then(AcceptLanguage::accept_language)
    }
}

#[cfg(any(test, feature = "negotiation-count"))]
thread_local! {
    /// How many negotiations this thread ran: tests (errmap-server's too,
    /// through the `negotiation-count` feature) check that the OK path runs
    /// none.
    #[doc(hidden)]
    pub static NEGOTIATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The locales of one catalog, parsed once: `en-US` first, then the
/// catalog's translations by tag.
#[derive(Debug)]
pub(crate) struct Locales {
    tags: Box<[&'static str]>,
    ids: Box<[LanguageIdentifier]>,
}

impl Locales {
    /// `en-US` and `others` (valid BCP 47 tags, as the catalog checks
    /// made sure; one that does not parse is never matched).
    pub(crate) fn new(others: impl IntoIterator<Item = &'static str>) -> Self {
        let tags: Vec<&'static str> = std::iter::once(DEFAULT_LOCALE)
            .chain(others.into_iter().filter(|t| *t != DEFAULT_LOCALE))
            .collect();
        let ids = tags
            .iter()
            .map(|t| LanguageIdentifier::from_bytes(t.as_bytes()).unwrap_or_default())
            .collect();
        Self {
            tags: tags.into_boxed_slice(),
            ids,
        }
    }

    /// Every tag, `en-US` first.
    pub(crate) fn tags(&self) -> &[&'static str] {
        &self.tags
    }

    /// The index of the locale `accept_language` asks for; 0 (`en-US`) when
    /// nothing matches.
    pub(crate) fn negotiate(&self, accept_language: &[u8]) -> usize {
        #[cfg(any(test, feature = "negotiation-count"))]
        NEGOTIATIONS.with(|n| n.set(n.get() + 1));
        if accept_language.len() > MAX_HEADER_LEN {
            return 0;
        }
        // A locale negotiated before (or a client that names exactly one of
        // ours) costs one comparison per locale.
        if let Some(at) = self
            .tags
            .iter()
            .position(|t| t.as_bytes().eq_ignore_ascii_case(accept_language))
        {
            return at;
        }
        // (quality in thousandths, locale index) of the best match so far.
        let mut best: Option<(u16, usize)> = None;
        for member in accept_language.split(|b| *b == b',').take(MAX_MEMBERS) {
            let Some((tag, quality)) = parse_member(member) else {
                continue;
            };
            if quality == 0 || best.is_some_and(|(q, _)| quality <= q) {
                continue;
            }
            let found = if tag == b"*" {
                Some(0)
            } else {
                self.lookup(tag)
            };
            if let Some(index) = found {
                best = Some((quality, index));
                if quality == 1000 {
                    break;
                }
            }
        }
        best.map_or(0, |(_, index)| index)
    }

    /// The locale one tag asks for: the same tag, a locale the tag covers
    /// as a range, or one of the same language.
    pub(crate) fn lookup(&self, tag: &[u8]) -> Option<usize> {
        if tag.len() > MAX_TAG_LEN {
            return None;
        }
        // The common case needs no parsing: the tag is one of ours, in any
        // case (BCP 47 tags compare case-blind).
        if let Some(at) = self
            .tags
            .iter()
            .position(|t| t.as_bytes().eq_ignore_ascii_case(tag))
        {
            return Some(at);
        }
        let wanted = LanguageIdentifier::from_bytes(tag).ok()?;
        if wanted.language.is_empty() {
            return None;
        }
        let ids = &self.ids;
        ids.iter()
            .position(|id| wanted.matches(id, false, false))
            .or_else(|| ids.iter().position(|id| wanted.matches(id, true, false)))
            .or_else(|| ids.iter().position(|id| id.language == wanted.language))
    }
}

/// One member of the header: its tag and its quality value in thousandths
/// (RFC 9110 `weight`), or `None` when it is malformed or empty.
fn parse_member(member: &[u8]) -> Option<(&[u8], u16)> {
    let mut parts = member.split(|b| *b == b';');
    let tag = trim(parts.next()?);
    if tag.is_empty()
        || !tag
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_*".contains(b))
    {
        return None;
    }
    let mut quality = 1000;
    let mut seen = false;
    for parameter in parts {
        let parameter = trim(parameter);
        let value = match parameter {
            [b'q' | b'Q', rest @ ..] => trim(trim(rest).strip_prefix(b"=")?),
            _ => return None,
        };
        if seen {
            return None;
        }
        seen = true;
        quality = parse_quality(value)?;
    }
    Some((tag, quality))
}

/// An RFC 9110 `qvalue` in thousandths: `0`, `0.` and up to three digits,
/// `1`, or `1.` and up to three zeros.
fn parse_quality(value: &[u8]) -> Option<u16> {
    let (whole, fraction) = match value.iter().position(|b| *b == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &[][..]),
    };
    if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for (i, digit) in fraction.iter().enumerate() {
        thousandths += u16::from(digit - b'0') * [100, 10, 1][i];
    }
    match whole {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locales() -> Locales {
        Locales::new(["de-DE", "pt-BR", "ru-RU", "zh-Hant-TW"])
    }

    fn negotiated(header: &str) -> &'static str {
        let l = locales();
        l.tags()[l.negotiate(header.as_bytes())]
    }

    #[test]
    fn negotiation_follows_the_rules() {
        let cases: &[(&str, &str)] = &[
            // Exact tags, in any case, with either separator.
            ("ru-RU", "ru-RU"),
            ("RU-ru", "ru-RU"),
            ("ru_RU", "ru-RU"),
            ("en-US", "en-US"),
            // A range covers the tag.
            ("ru", "ru-RU"),
            ("zh-Hant", "zh-Hant-TW"),
            ("zh", "zh-Hant-TW"),
            // Same language, other region.
            ("ru-UA", "ru-RU"),
            ("en-GB", "en-US"),
            ("pt-PT", "pt-BR"),
            // Quality values order the members; ties keep header order.
            ("fr-CH, ru;q=0.5", "ru-RU"),
            ("ru;q=0.5, de;q=0.9", "de-DE"),
            ("ru;q=0.5, de;q=0.5", "ru-RU"),
            ("de;q=0.500, ru;q=0.501", "ru-RU"),
            ("ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7", "ru-RU"),
            ("en-US,en;q=0.9,ru;q=0.8", "en-US"),
            ("fr, en;q=0.1, ru;q=0.05", "en-US"),
            ("ru ; q = 0.4 , de ; Q=0.3", "ru-RU"),
            ("ru;q=1.000", "ru-RU"),
            // q=0 means "not this one".
            ("ru;q=0", "en-US"),
            ("ru;q=0.000, de", "de-DE"),
            // Wildcards and misses give the default.
            ("*", "en-US"),
            ("ru;q=0.4, *;q=0.5", "en-US"),
            ("fr-CH", "en-US"),
            ("", "en-US"),
            ("x-klingon", "en-US"),
            // Malformed members are skipped, the rest still count.
            ("*;q=abc", "en-US"),
            ("ru;q=abc, de;q=0.1", "de-DE"),
            ("ru;q=1.5", "en-US"),
            ("ru;q=1.001", "en-US"),
            ("ru;q=0.1234", "en-US"),
            ("ru;q=-1", "en-US"),
            ("ru;q=", "en-US"),
            ("ru;q=0.5;q=0.9", "en-US"),
            ("ru;level=1", "en-US"),
            ("ру", "en-US"),
            ("ru RU", "en-US"),
            ("r", "en-US"),
            ("toolongforalanguage", "en-US"),
            (",,,,ru", "ru-RU"),
        ];
        for (header, want) in cases {
            assert_eq!(negotiated(header), *want, "accept-language: {header:?}");
        }
    }

    #[test]
    fn hostile_headers_fall_back_within_bounds() {
        // 8 KiB of commas: over the length bound.
        assert_eq!(negotiated(&",".repeat(8 * 1024)), "en-US");
        // Under the length bound, but the tag comes after MAX_MEMBERS.
        let late = format!("{}ru", ",".repeat(MAX_MEMBERS));
        assert!(late.len() < MAX_HEADER_LEN);
        assert_eq!(negotiated(&late), "en-US");
        let early = format!("{}ru", ",".repeat(MAX_MEMBERS - 1));
        assert_eq!(negotiated(&early), "ru-RU");
        // A thousand tags.
        let many = vec!["fr"; 1000].join(",") + ",ru";
        assert_eq!(negotiated(&many), "en-US");
        // One huge tag.
        assert_eq!(negotiated(&"a".repeat(1000)), "en-US");
        assert_eq!(negotiated(&"ru-".repeat(300)), "en-US");
        // Bytes that are not text.
        let l = locales();
        assert_eq!(l.negotiate(&[0xff, 0xfe, b'r', b'u']), 0);
        assert_eq!(l.negotiate(b"ru\0"), 0);
    }

    #[test]
    fn quality_values_follow_rfc_9110() {
        for (text, want) in [
            ("0", Some(0)),
            ("0.", Some(0)),
            ("0.5", Some(500)),
            ("0.05", Some(50)),
            ("0.999", Some(999)),
            ("1", Some(1000)),
            ("1.", Some(1000)),
            ("1.000", Some(1000)),
            ("1.0001", None),
            ("1.1", None),
            ("2", None),
            (".5", None),
            ("0.5x", None),
            ("", None),
        ] {
            assert_eq!(parse_quality(text.as_bytes()), want, "q={text}");
        }
    }

    #[test]
    fn sources_read_the_header() {
        let mut metadata = MetadataMap::new();
        assert_eq!(metadata.accept_language(), None);
        metadata.insert(ACCEPT_LANGUAGE, "ru".parse().unwrap());
        assert_eq!(metadata.accept_language(), Some(&b"ru"[..]));
        let request = tonic::Request::from_parts(metadata, Default::default(), ());
        assert_eq!(request.accept_language(), Some(&b"ru"[..]));
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT_LANGUAGE, HeaderValue::from_static("de"));
        assert_eq!(headers.accept_language(), Some(&b"de"[..]));
        assert_eq!(None::<&str>.accept_language(), None);
        assert_eq!("fr".accept_language(), Some(&b"fr"[..]));
    }
}
