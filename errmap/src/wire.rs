//! Just enough of the protobuf wire format to write the fixed parts of a
//! `google.rpc.Status` once, and to find the `ErrorInfo` in received details
//! without allocating.
//!
//! Everything here reads untrusted bytes: every length is checked against
//! what is left, and a malformed input is an `Err`, never a panic.

/// Type URL prefix of `google.protobuf.Any` values.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";
/// The type name of `google.rpc.ErrorInfo`.
pub const ERROR_INFO: &str = "google.rpc.ErrorInfo";
/// The type name of `google.rpc.LocalizedMessage`.
pub const LOCALIZED_MESSAGE: &str = "google.rpc.LocalizedMessage";
/// The type name of `google.rpc.RetryInfo`.
pub const RETRY_INFO: &str = "google.rpc.RetryInfo";
/// The type name of `google.rpc.BadRequest`.
pub const BAD_REQUEST: &str = "google.rpc.BadRequest";
/// The type name of `google.rpc.Help`.
pub const HELP: &str = "google.rpc.Help";

const WIRE_VARINT: u32 = 0;
const WIRE_LEN: u32 = 2;

// ---- writing ----

/// How many bytes `v` takes as a varint.
pub fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Appends `v` as a varint.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Writes a varint field; zero is the default and is not written.
pub fn put_varint_field(buf: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        put_varint(buf, u64::from(tag << 3 | WIRE_VARINT));
        put_varint(buf, v);
    }
}

/// Writes a length-delimited field (string, bytes or embedded message); an
/// empty value is the default and is not written.
pub fn put_len_field(buf: &mut Vec<u8>, tag: u32, data: &[u8]) {
    if !data.is_empty() {
        put_len_header(buf, tag, data.len());
        buf.extend_from_slice(data);
    }
}

/// Writes the key and length of a length-delimited field whose `len` bytes
/// the caller writes next.
pub fn put_len_header(buf: &mut Vec<u8>, tag: u32, len: usize) {
    put_varint(buf, u64::from(tag << 3 | WIRE_LEN));
    put_varint(buf, len as u64);
}

/// The encoded size of a length-delimited field holding `len` bytes.
pub fn len_field_size(tag: u32, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        varint_len(u64::from(tag << 3)) + varint_len(len as u64) + len
    }
}

/// Writes one `google.rpc.Status.details` entry (field 3): an `Any` holding
/// `value`, an encoded message of type `type_name`.
pub fn put_any_detail(buf: &mut Vec<u8>, type_name: &str, value: &[u8]) {
    put_any_header(buf, type_name, value.len());
    buf.extend_from_slice(value);
}

/// [`put_any_detail`] up to the value: the caller writes the `value_len`
/// bytes of the encoded message next (a non-empty message; an empty one
/// has no value field).
pub fn put_any_header(buf: &mut Vec<u8>, type_name: &str, value_len: usize) {
    let url_len = TYPE_URL_PREFIX.len() + type_name.len();
    let any_len = len_field_size(1, url_len) + len_field_size(2, value_len);
    put_len_header(buf, 3, any_len);
    put_len_header(buf, 1, url_len);
    buf.extend_from_slice(TYPE_URL_PREFIX.as_bytes());
    buf.extend_from_slice(type_name.as_bytes());
    if value_len > 0 {
        put_len_header(buf, 2, value_len);
    }
}

/// Writes a map<string, string> entry of an `ErrorInfo.metadata` (field 3).
pub fn put_map_entry(buf: &mut Vec<u8>, tag: u32, key: &str, value: &str) {
    let len = len_field_size(1, key.len()) + len_field_size(2, value.len());
    put_len_header(buf, tag, len);
    put_len_field(buf, 1, key.as_bytes());
    put_len_field(buf, 2, value.as_bytes());
}

// ---- reading ----
//
// One strict reader serves every reader of the crate: `error_code`,
// `error_info`, `error_info_view`, `error_details` and the response layer.
// It accepts exactly what prost accepts for `google.rpc.Status`, `Any` and
// `ErrorInfo` (keys, wire types, lengths, UTF-8 of every string, unknown
// fields and groups skipped as prost skips them), so no two readers can
// disagree about the same bytes.

use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};

/// A protobuf wire-format error in untrusted bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl From<prost::DecodeError> for Malformed {
    fn from(_: prost::DecodeError) -> Self {
        Malformed
    }
}

#[inline]
fn take<'a>(buf: &mut &'a [u8], n: u64) -> Result<&'a [u8], Malformed> {
    let n = usize::try_from(n).map_err(|_| Malformed)?;
    if n > buf.len() {
        return Err(Malformed);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// A field's key, as prost's `decode_key` reads it. The one-byte keys
/// (tags 1 to 15, every key of the messages read here) are read in place;
/// any other goes to prost, so both accept and refuse exactly the same.
#[inline(always)]
fn read_key(buf: &mut &[u8]) -> Result<(u32, WireType), Malformed> {
    if let [byte, rest @ ..] = *buf {
        let wire_type = match byte & 7 {
            0 => Some(WireType::Varint),
            1 => Some(WireType::SixtyFourBit),
            2 => Some(WireType::LengthDelimited),
            3 => Some(WireType::StartGroup),
            4 => Some(WireType::EndGroup),
            5 => Some(WireType::ThirtyTwoBit),
            _ => None,
        };
        if let (true, Some(wire_type)) = (*byte < 0x80 && *byte >= 8, wire_type) {
            *buf = rest;
            return Ok((u32::from(byte >> 3), wire_type));
        }
    }
    Ok(decode_key(buf)?)
}

/// A varint, as prost's `decode_varint` reads it: one byte in place, any
/// longer one by prost.
#[inline(always)]
fn read_varint(buf: &mut &[u8]) -> Result<u64, Malformed> {
    if let [byte, rest @ ..] = *buf {
        if *byte < 0x80 {
            *buf = rest;
            return Ok(u64::from(*byte));
        }
    }
    Ok(decode_varint(buf)?)
}

/// The bytes of a length-delimited field whose key was just read.
#[inline(always)]
fn read_len<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], Malformed> {
    let len = read_varint(buf)?;
    take(buf, len)
}

/// One field of a message: `Ok(None)` at the end of the buffer.
enum Field<'a> {
    Len(u32, &'a [u8]),
    Other,
}

#[inline]
fn next_field<'a>(buf: &mut &'a [u8]) -> Result<Option<Field<'a>>, Malformed> {
    if buf.is_empty() {
        return Ok(None);
    }
    let (tag, wire_type) = read_key(buf)?;
    Ok(Some(match wire_type {
        WireType::LengthDelimited => Field::Len(tag, read_len(buf)?),
        other => {
            skip_field(other, tag, buf, DecodeContext::default())?;
            Field::Other
        }
    }))
}

/// Reads a message whose known fields (tags 1 to `known`) are all
/// length-delimited, calling `on_field` for each of them. A known tag with
/// another wire type is malformed, as it is for prost; unknown fields are
/// skipped as prost skips them.
#[inline]
fn for_len_fields<'a>(
    mut buf: &'a [u8],
    known: u32,
    mut on_field: impl FnMut(u32, &'a [u8]) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    while !buf.is_empty() {
        let (tag, wire_type) = read_key(&mut buf)?;
        if tag <= known {
            if wire_type != WireType::LengthDelimited {
                return Err(Malformed);
            }
            on_field(tag, read_len(&mut buf)?)?;
        } else {
            skip_field(wire_type, tag, &mut buf, DecodeContext::default())?;
        }
    }
    Ok(())
}

/// `data` as text, if it is valid UTF-8. ASCII, what nearly every string
/// of a status is, is checked a word at a time.
#[inline]
fn text(data: &[u8]) -> Result<&str, Malformed> {
    if data.is_ascii() {
        // SAFETY: every ASCII byte string is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(data) })
    } else {
        std::str::from_utf8(data).map_err(|_| Malformed)
    }
}

/// One `details` entry of a status: the `Any`'s type URL and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnyView<'a> {
    /// The type URL, e.g. `type.googleapis.com/google.rpc.ErrorInfo`.
    pub type_url: &'a str,
    /// The encoded message.
    pub value: &'a [u8],
}

/// The type URLs of the details errmap sends: how the `Any`s of every
/// status errmap builds begin (key 1, the length, the URL).
const KNOWN_TYPE_URLS: [&str; 5] = [
    "type.googleapis.com/google.rpc.ErrorInfo",
    "type.googleapis.com/google.rpc.LocalizedMessage",
    "type.googleapis.com/google.rpc.RetryInfo",
    "type.googleapis.com/google.rpc.BadRequest",
    "type.googleapis.com/google.rpc.Help",
];

impl<'a> AnyView<'a> {
    fn parse(any: &'a [u8]) -> Result<Self, Malformed> {
        // The common case: a known type URL, then the value and nothing
        // after it. Bytes equal to a known URL are valid UTF-8 with no
        // check; anything else takes the general reader below.
        if let [0x0a, len, rest @ ..] = any {
            for url in KNOWN_TYPE_URLS {
                if usize::from(*len) != url.len() {
                    continue;
                }
                if let Some([0x12, value @ ..]) = rest.strip_prefix(url.as_bytes()) {
                    let mut value = value;
                    if let Ok(data) = read_len(&mut value) {
                        if value.is_empty() {
                            return Ok(AnyView {
                                type_url: url,
                                value: data,
                            });
                        }
                    }
                }
                break;
            }
        }
        let mut out = AnyView {
            type_url: "",
            value: &[],
        };
        for_len_fields(any, 2, |tag, data| {
            match tag {
                1 => out.type_url = text(data)?,
                _ => out.value = data,
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The message type it holds: what follows the last `/` of the URL.
    pub fn type_name(&self) -> &'a str {
        match self.type_url.rfind('/') {
            Some(i) => &self.type_url[i + 1..],
            None => self.type_url,
        }
    }

    /// Whether it holds a message of type `name`.
    #[inline]
    pub fn is(&self, name: &str) -> bool {
        is_type(self.type_url.as_bytes(), name)
    }
}

/// An encoded `google.rpc.Status`, checked whole: its code, its message, and
/// where its first `ErrorInfo` is.
#[derive(Debug, Clone, Copy)]
pub struct StatusView<'a> {
    /// `google.rpc.Status.code`.
    pub code: i32,
    /// `google.rpc.Status.message`.
    pub message: &'a str,
    /// The value of the first `ErrorInfo` detail.
    pub error_info: Option<&'a [u8]>,
    /// How many `ErrorInfo` details there are.
    pub error_infos: usize,
    bytes: &'a [u8],
}

impl<'a> StatusView<'a> {
    /// Checks `bytes` as prost would decode a `google.rpc.Status` (the
    /// `Any` values are checked as `Any`s; what they hold is not decoded).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Malformed> {
        let mut out = StatusView {
            code: 0,
            message: "",
            error_info: None,
            error_infos: 0,
            bytes,
        };
        let mut buf = bytes;
        while !buf.is_empty() {
            let (tag, wire_type) = read_key(&mut buf)?;
            match (tag, wire_type) {
                (1, WireType::Varint) => out.code = read_varint(&mut buf)? as i32,
                (2 | 3, WireType::LengthDelimited) => {
                    let data = read_len(&mut buf)?;
                    if tag == 2 {
                        out.message = text(data)?;
                    } else {
                        let any = AnyView::parse(data)?;
                        if any.is(ERROR_INFO) {
                            out.error_infos += 1;
                            out.error_info.get_or_insert(any.value);
                        }
                    }
                }
                (1..=3, _) => return Err(Malformed),
                (tag, wire_type) => skip_field(wire_type, tag, &mut buf, DecodeContext::default())?,
            }
        }
        Ok(out)
    }

    /// Every `details` entry, in order, with its encoded `Any`.
    pub fn details(&self) -> impl Iterator<Item = (AnyView<'a>, &'a [u8])> + 'a {
        let mut buf = self.bytes;
        std::iter::from_fn(move || loop {
            // Checked whole in `parse`, so nothing here fails.
            match next_field(&mut buf).ok()?? {
                Field::Len(3, any) => return Some((AnyView::parse(any).ok()?, any)),
                _ => continue,
            }
        })
    }
}

/// A `google.rpc.Status` laid out as errmap writes it: key 1 (the code),
/// key 2 (the message), then a first `Any` holding an `ErrorInfo` under its
/// usual type URL. What follows it is not read: see [`OwnStatus::rest`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct OwnStatus<'a> {
    /// `google.rpc.Status.code`.
    pub(crate) code: i32,
    /// `google.rpc.Status.message`, not yet checked as text.
    pub(crate) message: &'a [u8],
    /// The value of the `ErrorInfo` detail, not yet read.
    pub(crate) error_info: &'a [u8],
    /// Everything after the `ErrorInfo` detail, not yet read: the reader
    /// accepts it only when it is bytes errmap made.
    pub(crate) rest: &'a [u8],
}

impl<'a> OwnStatus<'a> {
    /// The parts of `details` if it begins as errmap writes a status.
    pub(crate) fn split(details: &'a [u8]) -> Option<Self> {
        let [0x08, rest @ ..] = details else {
            return None;
        };
        let mut buf = rest;
        let code = read_varint(&mut buf).ok()? as i32;
        let [0x12, rest @ ..] = buf else {
            return None;
        };
        buf = rest;
        let message = read_len(&mut buf).ok()?;
        let [0x1a, rest @ ..] = buf else {
            return None;
        };
        buf = rest;
        let any = AnyView::parse(read_len(&mut buf).ok()?).ok()?;
        if any.type_url != KNOWN_TYPE_URLS[0] {
            return None;
        }
        Some(Self {
            code,
            message,
            error_info: any.value,
            rest: buf,
        })
    }
}

/// An `ErrorInfo`, checked as prost decodes it, borrowed from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorInfoFields<'a> {
    /// `ErrorInfo.reason`.
    pub reason: &'a str,
    /// `ErrorInfo.domain`.
    pub domain: &'a str,
    /// The encoded message, for walking the metadata.
    pub encoded: &'a [u8],
}

impl<'a> ErrorInfoFields<'a> {
    /// Checks an encoded `ErrorInfo`: wire format, and UTF-8 of every
    /// string, metadata included. The last `reason` and `domain` win.
    pub fn parse(encoded: &'a [u8]) -> Result<Self, Malformed> {
        let mut out = ErrorInfoFields {
            reason: "",
            domain: "",
            encoded,
        };
        for_len_fields(encoded, 3, |tag, data| {
            match tag {
                1 => out.reason = text(data)?,
                2 => out.domain = text(data)?,
                _ => {
                    let (k, v) = map_entry(data)?;
                    text(k)?;
                    text(v)?;
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The reason and domain of an `ErrorInfo` whose first two fields are
    /// they, as errmap writes them; not yet checked as text.
    pub(crate) fn leading_reason_and_domain(encoded: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        let [0x0a, rest @ ..] = encoded else {
            return None;
        };
        let mut buf = rest;
        let reason = read_len(&mut buf).ok()?;
        let [0x12, rest @ ..] = buf else {
            return None;
        };
        buf = rest;
        let domain = read_len(&mut buf).ok()?;
        Some((reason, domain))
    }

    /// The `ErrorInfo` `encoded`, if it begins with `prefix` (bytes errmap
    /// encoded for one code: its `reason`, its `domain` and its
    /// `metadata["code"]`, which need no second look) and what follows is
    /// well-formed metadata and nothing else. `None` otherwise, for the
    /// general [`parse`](Self::parse) to read.
    ///
    /// # Safety
    ///
    /// `reason` and `domain` are valid UTF-8: the caller found them equal
    /// to a catalog entry's name and a catalog's domain, so they are not
    /// checked a second time.
    pub(crate) unsafe fn after_prefix(
        encoded: &'a [u8],
        prefix: &[u8],
        reason: &'a [u8],
        domain: &'a [u8],
    ) -> Option<Self> {
        let rest = encoded.strip_prefix(prefix)?;
        debug_assert!(std::str::from_utf8(reason).is_ok() && std::str::from_utf8(domain).is_ok());
        // SAFETY: the caller's promise (see above).
        let (reason, domain) = unsafe {
            (
                std::str::from_utf8_unchecked(reason),
                std::str::from_utf8_unchecked(domain),
            )
        };
        for_len_fields(rest, 3, |tag, data| {
            // A second reason or domain would replace the first: the
            // general reader sees to it.
            if tag != 3 {
                return Err(Malformed);
            }
            let (k, v) = map_entry(data)?;
            text(k)?;
            text(v)?;
            Ok(())
        })
        .ok()?;
        Some(Self {
            reason,
            domain,
            encoded,
        })
    }

    /// The metadata entries, in the order sent (a repeated key yields each
    /// value; map semantics keep the last).
    pub fn metadata(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let mut buf = self.encoded;
        std::iter::from_fn(move || loop {
            match next_field(&mut buf).ok()?? {
                Field::Len(3, entry) => {
                    // Checked in `parse`.
                    let (k, v) = map_entry(entry).ok()?;
                    return Some((text(k).ok()?, text(v).ok()?));
                }
                _ => continue,
            }
        })
    }
}

/// The key and value of an encoded `map<string, string>` entry (not yet
/// checked for UTF-8).
fn map_entry(entry: &[u8]) -> Result<(&[u8], &[u8]), Malformed> {
    // The common case: key, then value, both shorter than 128 bytes and
    // nothing after them.
    if let [0x0a, key_len, rest @ ..] = entry {
        let key_len = usize::from(*key_len);
        if key_len < 0x80 && rest.len() > key_len + 1 {
            let (key, rest) = rest.split_at(key_len);
            if let [0x12, value_len, value @ ..] = rest {
                if *value_len < 0x80 && usize::from(*value_len) == value.len() {
                    return Ok((key, value));
                }
            }
        }
    }
    let mut key: &[u8] = &[];
    let mut value: &[u8] = &[];
    for_len_fields(entry, 2, |tag, data| {
        match tag {
            1 => key = data,
            _ => value = data,
        }
        Ok(())
    })?;
    Ok((key, value))
}

/// Whether `type_url` names the message type `name`: it is `name`, or
/// ends in `/name`.
#[inline]
pub fn is_type(type_url: &[u8], name: &str) -> bool {
    let name = name.as_bytes();
    match type_url.len().checked_sub(name.len()) {
        Some(0) => type_url == name,
        Some(at) => type_url[at - 1] == b'/' && &type_url[at..] == name,
        None => false,
    }
}

/// The message type named by a type URL: what follows its last `/`.
#[cfg(test)]
pub fn type_name(type_url: &[u8]) -> &[u8] {
    match type_url.iter().rposition(|&b| b == b'/') {
        Some(i) => &type_url[i + 1..],
        None => type_url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn status_with(details: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        put_varint_field(&mut buf, 1, 5);
        put_len_field(&mut buf, 2, b"m");
        buf.extend_from_slice(details);
        buf
    }

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX.into(), u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v));
            let mut slice = buf.as_slice();
            assert_eq!(decode_varint(&mut slice).ok(), Some(v));
            assert!(slice.is_empty());
        }
    }

    #[test]
    fn truncated_input_is_malformed() {
        let mut any = Vec::new();
        put_any_detail(&mut any, ERROR_INFO, b"\x0a\x03ABC");
        let buf = status_with(&any);
        for cut in 1..buf.len() {
            if let Ok(view) = StatusView::parse(&buf[..cut]) {
                // A cut between two fields is a shorter, valid status.
                assert!(view.error_info.is_none(), "cut at {cut}");
            }
        }
        let view = StatusView::parse(&buf).unwrap();
        assert_eq!(view.error_info, Some(&b"\x0a\x03ABC"[..]));
        assert_eq!(
            ErrorInfoFields::parse(view.error_info.unwrap())
                .unwrap()
                .reason,
            "ABC"
        );
    }

    #[test]
    fn a_reason_with_the_wrong_wire_type_is_refused_as_prost_refuses_it() {
        // reason (tag 1) sent as a varint.
        let info = [0x08, 0x01];
        assert!(ErrorInfoFields::parse(&info).is_err());
        assert!(tonic_types::pb::ErrorInfo::decode(&info[..]).is_err());
        // ...and as a fixed32.
        let info = [0x0d, 1, 2, 3, 4];
        assert!(ErrorInfoFields::parse(&info).is_err());
        assert!(tonic_types::pb::ErrorInfo::decode(&info[..]).is_err());
        // An unknown group is skipped by both.
        let info = [0x0a, 0x01, b'A', 0x23, 0x24];
        assert_eq!(ErrorInfoFields::parse(&info).unwrap().reason, "A");
        assert_eq!(
            tonic_types::pb::ErrorInfo::decode(&info[..])
                .unwrap()
                .reason,
            "A"
        );
    }

    #[test]
    fn two_error_infos_are_counted() {
        let mut any = Vec::new();
        put_any_detail(&mut any, ERROR_INFO, b"\x0a\x01A");
        put_any_detail(&mut any, ERROR_INFO, b"\x0a\x01B");
        let buf = status_with(&any);
        let view = StatusView::parse(&buf).unwrap();
        assert_eq!(view.error_infos, 2);
        assert_eq!(view.details().count(), 2);
    }

    #[test]
    fn type_urls_match_by_their_last_segment() {
        assert!(is_type(
            b"type.googleapis.com/google.rpc.ErrorInfo",
            ERROR_INFO
        ));
        assert!(is_type(b"google.rpc.ErrorInfo", ERROR_INFO));
        assert!(is_type(b"x/y/google.rpc.ErrorInfo", ERROR_INFO));
        assert!(!is_type(
            b"type.googleapis.com/google.rpc.ErrorInfoX",
            ERROR_INFO
        ));
        assert!(!is_type(
            b"type.googleapis.com/xgoogle.rpc.ErrorInfo",
            ERROR_INFO
        ));
        assert!(!is_type(b"ErrorInfo", ERROR_INFO));
        assert!(!is_type(b"", ERROR_INFO));
        for url in [
            &b"a/google.rpc.ErrorInfo"[..],
            b"google.rpc.Help",
            b"/",
            b"",
        ] {
            assert_eq!(
                is_type(url, ERROR_INFO),
                type_name(url) == ERROR_INFO.as_bytes(),
                "{url:?}"
            );
        }
    }

    #[test]
    fn the_known_type_urls_are_the_prefix_and_the_names() {
        let names = [ERROR_INFO, LOCALIZED_MESSAGE, RETRY_INFO, BAD_REQUEST, HELP];
        for (url, name) in KNOWN_TYPE_URLS.iter().zip(names) {
            assert_eq!(*url, format!("{TYPE_URL_PREFIX}{name}"));
        }
    }

    #[test]
    fn overlong_varint_is_malformed() {
        let mut slice: &[u8] = &[0xff; 11];
        assert!(decode_varint(&mut slice).is_err());
    }
}
