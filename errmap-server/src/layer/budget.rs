//! The trailer budget: every status block within [`MAX_TRAILER_BLOCK`],
//! a long message cut at a character boundary, then extras dropped.

use super::*;

/// The most bytes a response's status block (headers of a trailers-only
/// response, or trailers) may take, counted as HTTP/2 counts a header list:
/// name, value and 32 bytes per entry. gRPC implementations may refuse a
/// block over 8 KiB; this leaves room for what proxies add.
pub const MAX_TRAILER_BLOCK: usize = 7 * 1024;

/// The size of a header block as HTTP/2 counts it.
pub(crate) fn block_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// Whether a header is part of the status or of the HTTP response itself,
/// rather than response metadata a handler added.
pub(super) fn is_own_header(name: &http::HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("grpc-") || name == "content-type" || name == "date"
}

/// Cuts the status in `headers` until the block fits [`MAX_TRAILER_BLOCK`]:
/// first the message (at a character boundary, in `grpc-message` and in
/// the details alike), then the details errmap does not send itself, then
/// the response metadata of the handler's. Returns the outcome when, as a
/// last resort, it replaced the status with 42.
pub(super) fn fit_budget(
    headers: &mut HeaderMap,
    code: Code,
    path: &str,
    accept_language: Option<&HeaderValue>,
) -> Option<Outcome> {
    let size = block_size(headers);
    if size <= MAX_TRAILER_BLOCK {
        return None;
    }
    let details = headers
        .get(details::DETAILS_HEADER)
        .and_then(|v| details::decode_base64(v.as_bytes()).ok())
        .unwrap_or_default();
    let view = wire::StatusView::parse(&details).ok();
    let message = headers
        .get(GRPC_MESSAGE)
        .map(|v| percent_decode(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let own = [wire::ERROR_INFO, wire::LOCALIZED_MESSAGE, wire::RETRY_INFO];
    let all: Vec<(&str, &[u8])> = view
        .iter()
        .flat_map(|v| v.details())
        .map(|(any, raw)| (any.type_name(), raw))
        .collect();

    // The room left for the message: the block without it, and without the
    // details, whose size is known once the message is chosen.
    let set = |headers: &mut HeaderMap, message: &str, anys: &[&[u8]]| {
        headers.remove(GRPC_MESSAGE);
        headers.remove(details::DETAILS_HEADER);
        let encoded = status::reencode(code, message, anys);
        let status = Status::with_details(code, message.to_owned(), Bytes::from(encoded));
        let _ = status.add_header(headers);
    };
    let mut anys: Vec<&[u8]> = all.iter().map(|(_, raw)| *raw).collect();
    for attempt in 0..3 {
        if attempt == 1 {
            anys = all
                .iter()
                .filter(|(name, _)| own.contains(name))
                .map(|(_, raw)| *raw)
                .collect();
        }
        if attempt == 2 {
            let foreign: Vec<_> = headers
                .keys()
                .filter(|name| !is_own_header(name))
                .cloned()
                .collect();
            for name in foreign {
                headers.remove(name);
            }
        }
        set(headers, "", &anys);
        let base = block_size(headers);
        // Each message byte costs at most 3 in grpc-message (percent
        // encoding) and 4/3 in the base64 details.
        let mut room = MAX_TRAILER_BLOCK.saturating_sub(base + 16) * 3 / 13;
        let mut cut = status::cut_at_char_boundary(&message, room);
        set(headers, cut, &anys);
        // Varint and base64 rounding can leave it a few bytes over.
        while block_size(headers) > MAX_TRAILER_BLOCK && !cut.is_empty() {
            room = cut.len() * 9 / 10;
            cut = status::cut_at_char_boundary(&message, room);
            set(headers, cut, &anys);
        }
        if block_size(headers) <= MAX_TRAILER_BLOCK {
            if let Some(suppressed) = REWRITES.check() {
                tracing::warn!(
                    grpc.method = %sanitize::escape(path),
                    size,
                    limit = MAX_TRAILER_BLOCK,
                    message_kept = cut.len(),
                    message_was = message.len(),
                    suppressed,
                    "a status over the trailer budget was cut"
                );
            }
            return None;
        }
    }
    // Nothing of the handler's is left but a status that still does not
    // fit; send the bare catalog 42.
    headers.remove(GRPC_MESSAGE);
    headers.remove(details::DETAILS_HEADER);
    headers.remove(GRPC_STATUS);
    let _ = ErrorCode::ApiInternalServerError
        .to_status_for(accept_language)
        .add_header(headers);
    Some(Outcome {
        code: Code::Internal,
        domain: Cow::Borrowed(errmap::DOMAIN),
        reason: Cow::Borrowed(ErrorCode::ApiInternalServerError.entry().name()),
    })
}
