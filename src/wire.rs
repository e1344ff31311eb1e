//! Just enough of the protobuf wire format to write the fixed parts of a
//! `google.rpc.Status` once, and to find the `ErrorInfo` in received details
//! without allocating.
//!
//! Everything here reads untrusted bytes: every length is checked against
//! what is left, and a malformed input is an `Err`, never a panic.

/// Type URL prefix of `google.protobuf.Any` values.
pub(crate) const TYPE_URL_PREFIX: &str = "type.googleapis.com/";
pub(crate) const ERROR_INFO: &str = "google.rpc.ErrorInfo";
pub(crate) const LOCALIZED_MESSAGE: &str = "google.rpc.LocalizedMessage";
pub(crate) const RETRY_INFO: &str = "google.rpc.RetryInfo";
pub(crate) const BAD_REQUEST: &str = "google.rpc.BadRequest";
pub(crate) const HELP: &str = "google.rpc.Help";

const WIRE_VARINT: u32 = 0;
const WIRE_FIXED64: u32 = 1;
const WIRE_LEN: u32 = 2;
const WIRE_FIXED32: u32 = 5;

// ---- writing ----

pub(crate) fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Writes a varint field; zero is the default and is not written.
pub(crate) fn put_varint_field(buf: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        put_varint(buf, u64::from(tag << 3 | WIRE_VARINT));
        put_varint(buf, v);
    }
}

/// Writes a length-delimited field (string, bytes or embedded message); an
/// empty value is the default and is not written.
pub(crate) fn put_len_field(buf: &mut Vec<u8>, tag: u32, data: &[u8]) {
    if !data.is_empty() {
        put_len_header(buf, tag, data.len());
        buf.extend_from_slice(data);
    }
}

/// Writes the key and length of a length-delimited field whose `len` bytes
/// the caller writes next.
pub(crate) fn put_len_header(buf: &mut Vec<u8>, tag: u32, len: usize) {
    put_varint(buf, u64::from(tag << 3 | WIRE_LEN));
    put_varint(buf, len as u64);
}

/// The encoded size of a length-delimited field holding `len` bytes.
pub(crate) fn len_field_size(tag: u32, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        varint_len(u64::from(tag << 3)) + varint_len(len as u64) + len
    }
}

/// Writes one `google.rpc.Status.details` entry (field 3): an `Any` holding
/// `value`, an encoded message of type `type_name`.
pub(crate) fn put_any_detail(buf: &mut Vec<u8>, type_name: &str, value: &[u8]) {
    let url_len = TYPE_URL_PREFIX.len() + type_name.len();
    let any_len = len_field_size(1, url_len) + len_field_size(2, value.len());
    put_len_header(buf, 3, any_len);
    put_len_header(buf, 1, url_len);
    buf.extend_from_slice(TYPE_URL_PREFIX.as_bytes());
    buf.extend_from_slice(type_name.as_bytes());
    put_len_field(buf, 2, value);
}

/// Writes a map<string, string> entry of an `ErrorInfo.metadata` (field 3).
pub(crate) fn put_map_entry(buf: &mut Vec<u8>, tag: u32, key: &str, value: &str) {
    let len = len_field_size(1, key.len()) + len_field_size(2, value.len());
    put_len_header(buf, tag, len);
    put_len_field(buf, 1, key.as_bytes());
    put_len_field(buf, 2, value.as_bytes());
}

// ---- reading ----

/// A protobuf wire-format error in untrusted bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

#[inline]
fn get_varint(buf: &mut &[u8]) -> Result<u64, Malformed> {
    // Fast path: most keys and lengths here fit in one byte.
    if let Some((&b, rest)) = buf.split_first() {
        if b < 0x80 {
            *buf = rest;
            return Ok(u64::from(b));
        }
    }
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(Malformed)?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(Malformed)
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

/// One field of a message: its tag and, for length-delimited fields, its
/// bytes (other wire types are skipped and give `None`).
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
}

/// A field's tag, and its bytes if it is length-delimited.
pub(crate) type Field<'a> = (u32, Option<&'a [u8]>);

impl<'a> Fields<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// The next field as `(tag, Some(bytes))` for length-delimited fields,
    /// `(tag, None)` for the others; `Ok(None)` at the end.
    #[inline]
    pub(crate) fn next_field(&mut self) -> Result<Option<Field<'a>>, Malformed> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = get_varint(&mut self.buf)?;
        let tag = u32::try_from(key >> 3).map_err(|_| Malformed)?;
        if tag == 0 {
            return Err(Malformed);
        }
        let data = match (key & 7) as u32 {
            WIRE_VARINT => {
                get_varint(&mut self.buf)?;
                None
            }
            WIRE_FIXED64 => {
                take(&mut self.buf, 8)?;
                None
            }
            WIRE_LEN => {
                let len = get_varint(&mut self.buf)?;
                Some(take(&mut self.buf, len)?)
            }
            WIRE_FIXED32 => {
                take(&mut self.buf, 4)?;
                None
            }
            _ => return Err(Malformed),
        };
        Ok(Some((tag, data)))
    }
}

/// An `ErrorInfo`'s reason and domain, borrowed from the encoded bytes.
pub(crate) type ReasonAndDomain<'a> = (&'a [u8], &'a [u8]);

/// The encoded value of the first `ErrorInfo` in an encoded
/// `google.rpc.Status`, or `Ok(None)` if it has none.
pub(crate) fn find_error_info_value(status: &[u8]) -> Result<Option<&[u8]>, Malformed> {
    let mut fields = Fields::new(status);
    while let Some((tag, data)) = fields.next_field()? {
        let (3, Some(any)) = (tag, data) else {
            continue;
        };
        let mut type_url: &[u8] = &[];
        let mut value: &[u8] = &[];
        let mut any_fields = Fields::new(any);
        while let Some((tag, data)) = any_fields.next_field()? {
            match (tag, data) {
                (1, Some(d)) => type_url = d,
                (2, Some(d)) => value = d,
                _ => {}
            }
        }
        if is_type(type_url, ERROR_INFO) {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// The reason and domain of the first `ErrorInfo` in an encoded
/// `google.rpc.Status`, or `Ok(None)` if it has none.
pub(crate) fn find_error_info(status: &[u8]) -> Result<Option<ReasonAndDomain<'_>>, Malformed> {
    let Some(value) = find_error_info_value(status)? else {
        return Ok(None);
    };
    let mut reason: &[u8] = &[];
    let mut domain: &[u8] = &[];
    let mut info_fields = Fields::new(value);
    while let Some((tag, data)) = info_fields.next_field()? {
        match (tag, data) {
            (1, Some(d)) => reason = d,
            (2, Some(d)) => domain = d,
            _ => {}
        }
    }
    Ok(Some((reason, domain)))
}

/// A `details` entry: the message type it holds, and the encoded `Any`.
pub(crate) type DetailEntry<'a> = (&'a [u8], &'a [u8]);

/// The `details` entries (encoded `Any` messages) of an encoded
/// `google.rpc.Status`, each with the message type it holds.
pub(crate) fn detail_entries(status: &[u8]) -> Result<Vec<DetailEntry<'_>>, Malformed> {
    let mut out = Vec::new();
    let mut fields = Fields::new(status);
    while let Some((tag, data)) = fields.next_field()? {
        let (3, Some(any)) = (tag, data) else {
            continue;
        };
        let mut type_url: &[u8] = &[];
        let mut any_fields = Fields::new(any);
        while let Some((tag, data)) = any_fields.next_field()? {
            if let (1, Some(d)) = (tag, data) {
                type_url = d;
            }
        }
        out.push((type_name(type_url), any));
    }
    Ok(out)
}

/// Whether `type_url` names the message type `name`: it is `name`, or
/// ends in `/name`. Cheaper than [`type_name`] on the hot path.
#[inline]
pub(crate) fn is_type(type_url: &[u8], name: &str) -> bool {
    let name = name.as_bytes();
    match type_url.len().checked_sub(name.len()) {
        Some(0) => type_url == name,
        Some(at) => type_url[at - 1] == b'/' && &type_url[at..] == name,
        None => false,
    }
}

/// The message type named by a type URL: what follows its last `/`.
pub(crate) fn type_name(type_url: &[u8]) -> &[u8] {
    match type_url.iter().rposition(|&b| b == b'/') {
        Some(i) => &type_url[i + 1..],
        None => type_url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX.into(), u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v));
            let mut slice = buf.as_slice();
            assert_eq!(get_varint(&mut slice), Ok(v));
            assert!(slice.is_empty());
        }
    }

    #[test]
    fn truncated_input_is_malformed() {
        let mut buf = Vec::new();
        put_any_detail(&mut buf, ERROR_INFO, b"\x0a\x03ABC");
        for cut in 1..buf.len() {
            assert_eq!(find_error_info(&buf[..cut]), Err(Malformed), "cut at {cut}");
        }
        assert_eq!(find_error_info(&buf), Ok(Some((&b"ABC"[..], &b""[..]))));
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
    fn overlong_varint_is_malformed() {
        let mut slice: &[u8] = &[0xff; 11];
        assert_eq!(get_varint(&mut slice), Err(Malformed));
    }
}
