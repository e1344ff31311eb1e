//! Rewriting: a status that is not a catalog status becomes the catalog
//! status its classification names, with its original text logged (escaped,
//! rate-limited), never sent.

use super::*;

/// Whether the status in `headers` is a catalog status: its details are
/// well-formed, match its code and message, and hold exactly one
/// `ErrorInfo` of one of `catalogs`.
pub(super) fn catalog_status<'c>(
    headers: &HeaderMap,
    code: Code,
    catalogs: &'c Catalogs,
) -> Option<(&'c TableRef, &'c CatalogEntry)> {
    let details = headers
        .get(details::DETAILS_HEADER)
        .and_then(|v| details::decode_base64(v.as_bytes()).ok())?;
    let message = headers
        .get(GRPC_MESSAGE)
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    details::catalog_entry_of_parts(code, &message, &details, catalogs).ok()
}

/// Rewrites of statuses that slipped through, logged at a bounded rate:
/// at most once a second per reason sent, with a count of the others.
pub(super) static REWRITES_BY_REASON: RateLimitByKey = RateLimitByKey::new(Duration::from_secs(1));

/// Statuses cut to the trailer budget, logged at a bounded rate.
pub(super) static REWRITES: RateLimit = RateLimit::new(20, Duration::from_secs(1));

/// Makes the status in `headers` (response headers of a trailers-only
/// response, or trailers) a catalog error within the trailer budget. A
/// status the layer makes is in the caller's locale. Returns what was
/// sent, when there is a status.
pub(super) fn normalize<P: ClassifyStatus>(
    headers: &mut HeaderMap,
    policy: &P,
    path: &str,
    catalogs: &LiveCatalogs,
    help_base_url: Option<&str>,
    accept_language: Option<&HeaderValue>,
) -> Option<Outcome> {
    let code = headers
        .get(GRPC_STATUS)
        .map(|v| Code::from_bytes(v.as_bytes()))?;
    if code == Code::Ok {
        // Only a handler's own response metadata can make an OK block large.
        return Some(
            fit_budget(headers, code, path, accept_language).unwrap_or(Outcome::plain(code)),
        );
    }
    let catalogs = catalogs.load();
    if let Some((table, entry)) = catalog_status(headers, code, &catalogs) {
        // gRFC A6 clients read the delay from grpc-retry-pushback-ms: a
        // catalog status that asks for a retry carries it, whoever built it.
        if let Some(delay) = entry.retry_delay() {
            if !headers.contains_key(status::RETRY_PUSHBACK_MS) {
                status::insert_pushback(headers, delay);
            }
        }
        if let Some(base) = help_base_url {
            link_to_page(headers, code, base, entry);
        }
        let outcome = Outcome {
            code,
            domain: table.shared_domain(),
            reason: entry.shared_name(),
        };
        return Some(fit_budget(headers, code, path, accept_language).unwrap_or(outcome));
    }
    let Some(classified) = policy.classify(code) else {
        return Some(
            fit_budget(headers, code, path, accept_language).unwrap_or(Outcome::plain(code)),
        );
    };

    if let Some(suppressed) = REWRITES_BY_REASON.check(classified.entry().shared_name()) {
        let message = headers
            .get(GRPC_MESSAGE)
            .map(|v| percent_decode(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let detail_types = headers
            .get(details::DETAILS_HEADER)
            .map(|v| describe_details(v.as_bytes()))
            .unwrap_or_default();
        tracing::warn!(
            grpc.method = %sanitize::escape(path),
            grpc.code = ?code,
            original_message = %sanitize::escape(&message),
            original_details = %sanitize::escape(&detail_types),
            reason = classified.entry().name(),
            suppressed,
            "a status without a catalog code was rewritten; return a catalog code instead"
        );
    }

    let grpc_code = classified.grpc_code.unwrap_or(code);
    let status =
        classified
            .table()
            .status_with_grpc_code(classified.entry(), grpc_code, accept_language);
    headers.remove(GRPC_STATUS);
    headers.remove(GRPC_MESSAGE);
    headers.remove(details::DETAILS_HEADER);
    headers.remove(status::RETRY_PUSHBACK_MS);
    let _ = status.add_header(headers);
    if let Some(base) = help_base_url {
        link_to_page(headers, grpc_code, base, classified.entry());
    }
    let outcome = Outcome {
        code: grpc_code,
        domain: classified.table().shared_domain(),
        reason: classified.entry().shared_name(),
    };
    Some(fit_budget(headers, grpc_code, path, accept_language).unwrap_or(outcome))
}

/// The detail types of a details header, for the log.
pub(super) fn describe_details(value: &[u8]) -> String {
    let Ok(bytes) = details::decode_base64(value) else {
        return "(not base64)".to_owned();
    };
    match wire::StatusView::parse(&bytes) {
        Ok(view) => view
            .details()
            .map(|(any, _)| any.type_name().to_owned())
            .collect::<Vec<_>>()
            .join(","),
        Err(_) => "(not a google.rpc.Status)".to_owned(),
    }
}

/// Puts the link to `entry`'s page under `base_url` first in the status's
/// one `Help` detail (adding the detail when there is none), unless it is
/// there already. The status in `headers` is a catalog status of `entry`.
pub(super) fn link_to_page(
    headers: &mut HeaderMap,
    code: Code,
    base_url: &str,
    entry: &CatalogEntry,
) {
    use prost::Message as _;
    let Some(bytes) = headers
        .get(details::DETAILS_HEADER)
        .and_then(|v| details::decode_base64(v.as_bytes()).ok())
    else {
        return;
    };
    let Ok(mut rpc) = tonic_types::pb::Status::decode(bytes.as_slice()) else {
        return;
    };
    let link = status::catalog_help_link(base_url, entry);
    let help_type = format!("{}{}", wire::TYPE_URL_PREFIX, wire::HELP);
    match rpc.details.iter_mut().find(|any| any.type_url == help_type) {
        Some(any) => {
            let Ok(mut help) = tonic_types::pb::Help::decode(any.value.as_slice()) else {
                return;
            };
            if help.links.first().is_some_and(|l| l.url == link.url) {
                return;
            }
            help.links.insert(0, link);
            any.value = help.encode_to_vec();
        }
        None => rpc.details.push(prost_types::Any {
            type_url: help_type,
            value: tonic_types::pb::Help { links: vec![link] }.encode_to_vec(),
        }),
    }
    let message = rpc.message.clone();
    let linked = Status::with_details(code, message, Bytes::from(rpc.encode_to_vec()));
    let _ = linked.add_header(headers);
}
