//! What a call's span is named by: the caller's W3C `traceparent`, and the
//! service and method of its path.

/// The trace and parent span ids of a W3C `traceparent`
/// (`00-<32 hex>-<16 hex>-<2 hex>`), if it is well-formed.
pub(crate) fn traceparent(headers: &http::HeaderMap) -> Option<(&str, &str)> {
    traceparent_parts(headers).map(|(trace, parent, _)| (trace, parent))
}

/// The trace id, parent span id and flags of a well-formed `traceparent`.
fn traceparent_parts(headers: &http::HeaderMap) -> Option<(&str, &str, &str)> {
    const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
    let value = headers.get(TRACEPARENT)?.to_str().ok()?;
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && hex(flags, 2)
        && (version != "00" || parts.next().is_none());
    valid.then_some((trace, parent, flags))
}

/// The trace id, parent span id and sampled flag of a well-formed W3C
/// `traceparent`, for the OTLP export.
pub(crate) fn traceparent_ids(
    headers: &http::HeaderMap,
) -> Option<(
    opentelemetry::trace::TraceId,
    opentelemetry::trace::SpanId,
    bool,
)> {
    let (trace, parent, flags) = traceparent_parts(headers)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((
        opentelemetry::trace::TraceId::from_hex(trace).ok()?,
        opentelemetry::trace::SpanId::from_hex(parent).ok()?,
        flags & 1 == 1,
    ))
}

/// `rpc.service` and `rpc.method` of a path, escaped and bounded: peers
/// choose paths.
pub(crate) fn service_and_method(path: &str) -> (String, String) {
    let path = errmap::status::cut_at_char_boundary(path.trim_start_matches('/'), 200);
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    (
        crate::sanitize::escape(service).into_owned(),
        crate::sanitize::escape(method).into_owned(),
    )
}
