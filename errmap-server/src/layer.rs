//! The response layer: every non-OK status that leaves the server carries
//! exactly one catalog `ErrorInfo`, and nothing internal.
//!
//! A status passes through untouched only if its details are a well-formed
//! `google.rpc.Status` that matches its `grpc-status` and `grpc-message`,
//! holding exactly one `ErrorInfo` whose domain is one of the layer's
//! catalogs ([`ErrorLayer::with_catalogs`]; by default the auth API's) and
//! whose reason is a code of that catalog: it was built with the catalog builder, so its
//! message is meant for the client. Every other non-OK status is rewritten
//! by a [`ClassifyStatus`] policy. The default policy follows the table in
//! `docs/design.md` ("Statuses the server makes by itself"):
//!
//! | gRPC code of the status that slipped through | catalog code sent | gRPC code sent |
//! |---|---|---|
//! | INTERNAL, UNKNOWN, DATA_LOSS | 42 `API_INTERNAL_SERVER_ERROR` | kept |
//! | INVALID_ARGUMENT | 40 `API_INVALID_REQUEST` | kept |
//! | NOT_FOUND | 47 `API_ITEM_NOT_FOUND` | kept |
//! | PERMISSION_DENIED | 45 `API_FORBIDDEN` | kept |
//! | UNAUTHENTICATED | 21 `AUTH_REQUIRED` | kept |
//! | RESOURCE_EXHAUSTED | 44 `API_TOO_MANY_REQUESTS` | kept |
//! | UNAVAILABLE | 49 `API_TRY_AGAIN_LATER` | kept |
//! | UNIMPLEMENTED (from a handler) | 41 `API_NOT_IMPLEMENTED` | kept |
//! | ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE | 46 `API_UNKNOWN_ERROR` | kept |
//! | CANCELLED, DEADLINE_EXCEEDED | unchanged: they describe the call, not the request | |
//!
//! A rewritten status carries the catalog message of the code it gets,
//! never the handler's text or details: those are logged (escaped, at a
//! bounded rate) for the operator. The layer never looks at message text:
//! the statuses that depend on what happened rather than on the code (an
//! unknown method is 43, an undecodable request is 40, a panic is 42) are
//! made where it happened, by the [`admission`](crate::admission) and
//! [`panic`](crate::panic) layers, as catalog statuses that pass here
//! untouched.
//!
//! Every status leaving the layer fits the trailer budget
//! ([`MAX_TRAILER_BLOCK`]): a passing status that is too large gets its
//! message cut at a character boundary, then loses the details and response
//! metadata that are not its own, until it fits.
//!
//! The layer finds the status in the response headers (trailers-only
//! responses, as tonic sends every unary error) or in the trailers after a
//! body. On the OK path it allocates nothing and logs nothing.
//!
//! ```
//! use errmap_server::layer::ErrorLayer;
//!
//! let router = tonic::transport::Server::builder()
//!     .layer(ErrorLayer::new())
//!     .add_service(errmap_server::service::CatalogService::new().into_server());
//! # drop(router);
//! ```
//!
//! A custom policy is a closure; [`default_classify`] handles the rest:
//!
//! ```
//! use errmap_server::layer::{default_classify, Classified, ErrorLayer};
//! use errmap::ErrorCode;
//! use tonic::Code;
//!
//! let layer = ErrorLayer::custom(|code: Code| match code {
//!     Code::PermissionDenied => Some(Classified::new(ErrorCode::OauthClientForbidden)),
//!     _ => default_classify(code),
//! });
//! # drop(layer);
//! ```

use std::{
    borrow::Cow,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Uri};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::{Code, Status};
use tower::{Layer, Service};

use errmap::{
    catalog::{CatalogEntry, CatalogTable},
    catalog_set::Catalogs,
    details, locale, status, wire, Catalog, ErrorCode,
};

use crate::sanitize::{self, RateLimit, RateLimitByKey};

use errmap::headers::GRPC_STATUS;
const GRPC_MESSAGE: &str = "grpc-message";

/// The most bytes a response's status block (headers of a trailers-only
/// response, or trailers) may take, counted as HTTP/2 counts a header list:
/// name, value and 32 bytes per entry. gRPC implementations may refuse a
/// block over 8 KiB; this leaves room for what proxies add.
pub const MAX_TRAILER_BLOCK: usize = 7 * 1024;

/// What the response layer found or made of a call's status: its gRPC code
/// and, for a catalog status, the catalog's domain and the reason (empty
/// otherwise). Read by the [`metrics`](crate::metrics) layer, so that no
/// one decodes the details a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The gRPC code sent.
    pub code: Code,
    /// The `ErrorInfo.domain`, or `""`.
    pub domain: &'static str,
    /// The `ErrorInfo.reason`, or `""`.
    pub reason: &'static str,
}

impl Outcome {
    fn plain(code: Code) -> Self {
        Self {
            code,
            domain: "",
            reason: "",
        }
    }
}

/// A slot for a call's [`Outcome`]: put one into a request's extensions
/// before the response layer, and read it once the status is known.
#[derive(Debug, Clone, Default)]
pub struct OutcomeSlot(Arc<OnceLock<Outcome>>);

impl OutcomeSlot {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// The outcome, once the response layer has seen the status.
    pub fn get(&self) -> Option<Outcome> {
        self.0.get().copied()
    }

    fn set(&self, outcome: Outcome) {
        let _ = self.0.set(outcome);
    }
}

/// What a status that slipped through becomes: a code of any catalog (the
/// auth API's [`ErrorCode`], or a team's own enum), sent with its own gRPC
/// code or another.
#[derive(Debug, Clone, Copy)]
pub struct Classified {
    table: &'static CatalogTable,
    entry: &'static CatalogEntry,
    /// The gRPC code to send it with; `None` sends the original one.
    pub grpc_code: Option<Code>,
}

impl Classified {
    /// Send `code`, keeping the gRPC code of the status that slipped
    /// through.
    pub fn new<C: Catalog>(code: C) -> Self {
        Self {
            table: C::table(),
            entry: code.entry(),
            grpc_code: None,
        }
    }

    /// Send `code` with the gRPC code `grpc_code`.
    pub fn with_grpc_code<C: Catalog>(code: C, grpc_code: Code) -> Self {
        Self {
            grpc_code: Some(grpc_code),
            ..Self::new(code)
        }
    }

    /// The catalog entry to send.
    pub fn entry(&self) -> &'static CatalogEntry {
        self.entry
    }

    /// The catalog it belongs to.
    pub fn table(&self) -> &'static CatalogTable {
        self.table
    }
}

impl PartialEq for Classified {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.entry, other.entry) && self.grpc_code == other.grpc_code
    }
}

impl Eq for Classified {}

/// Decides what a non-OK status that is not a catalog status becomes;
/// `None` sends it unchanged.
pub trait ClassifyStatus: Clone + Send + Sync + 'static {
    /// Classifies a status by its gRPC code.
    fn classify(&self, code: Code) -> Option<Classified>;
}

impl<F> ClassifyStatus for F
where
    F: Fn(Code) -> Option<Classified> + Clone + Send + Sync + 'static,
{
    fn classify(&self, code: Code) -> Option<Classified> {
        self(code)
    }
}

/// The policy of the table in the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPolicy;

impl ClassifyStatus for DefaultPolicy {
    fn classify(&self, code: Code) -> Option<Classified> {
        default_classify(code)
    }
}

/// The default classification (the table in the [module docs](self)).
pub fn default_classify(code: Code) -> Option<Classified> {
    Some(Classified::new(match code {
        Code::Ok | Code::Cancelled | Code::DeadlineExceeded => return None,
        Code::Internal | Code::Unknown | Code::DataLoss => ErrorCode::ApiInternalServerError,
        Code::InvalidArgument => ErrorCode::ApiInvalidRequest,
        Code::NotFound => ErrorCode::ApiItemNotFound,
        Code::PermissionDenied => ErrorCode::ApiForbidden,
        Code::Unauthenticated => ErrorCode::AuthRequired,
        Code::ResourceExhausted => ErrorCode::ApiTooManyRequests,
        Code::Unavailable => ErrorCode::ApiTryAgainLater,
        Code::Unimplemented => ErrorCode::ApiNotImplemented,
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted | Code::OutOfRange => {
            ErrorCode::ApiUnknownError
        }
    }))
}

/// Adds the response normalisation to a service; see the
/// [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct ErrorLayer<P = DefaultPolicy> {
    policy: P,
    catalogs: Catalogs,
}

impl ErrorLayer {
    /// The layer with the default policy, passing statuses of the default
    /// catalog.
    pub fn new() -> Self {
        Self {
            policy: DefaultPolicy,
            catalogs: Catalogs::default(),
        }
    }
}

impl<P: ClassifyStatus> ErrorLayer<P> {
    /// The layer with a policy of yours (a closure works).
    pub fn custom(policy: P) -> Self {
        Self {
            policy,
            catalogs: Catalogs::default(),
        }
    }

    /// Passes the statuses of every catalog in `catalogs` (a team's own,
    /// say, beside the default) instead of the default catalog's only.
    pub fn with_catalogs(mut self, catalogs: Catalogs) -> Self {
        self.catalogs = catalogs;
        self
    }
}

impl<S, P: Clone> Layer<S> for ErrorLayer<P> {
    type Service = ErrorService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorService {
            inner,
            policy: self.policy.clone(),
            catalogs: self.catalogs.clone(),
        }
    }
}

/// The service made by [`ErrorLayer`].
#[derive(Debug, Clone)]
pub struct ErrorService<S, P = DefaultPolicy> {
    inner: S,
    policy: P,
    catalogs: Catalogs,
}

impl<S> ErrorService<S> {
    /// Wraps `inner` with the default policy.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            policy: DefaultPolicy,
            catalogs: Catalogs::default(),
        }
    }
}

impl<S, P: ClassifyStatus> ErrorService<S, P> {
    /// Wraps `inner` with a policy of yours.
    pub fn custom(inner: S, policy: P) -> Self {
        Self {
            inner,
            policy,
            catalogs: Catalogs::default(),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, P, ReqBody, ResBody> Service<http::Request<ReqBody>> for ErrorService<S, P>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Body<Data = Bytes> + Default,
    P: ClassifyStatus,
{
    type Response = http::Response<ErrorBody<ResBody, P>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let uri = request.uri().clone();
        // Kept, not negotiated: only a status the layer makes needs it.
        let accept_language = request.headers().get(locale::ACCEPT_LANGUAGE).cloned();
        let slot = request.extensions().get::<OutcomeSlot>().cloned();
        ResponseFuture {
            future: self.inner.call(request),
            state: Some(State {
                policy: self.policy.clone(),
                uri,
                catalogs: self.catalogs.clone(),
                accept_language,
                slot,
            }),
        }
    }
}

/// What the layer keeps of a request until its status is known.
struct State<P> {
    policy: P,
    uri: Uri,
    catalogs: Catalogs,
    /// The caller's `accept-language`, for the statuses the layer makes.
    accept_language: Option<HeaderValue>,
    /// Where the outcome goes, if someone asked for it.
    slot: Option<OutcomeSlot>,
}

impl<P: ClassifyStatus> State<P> {
    fn normalize(&self, headers: &mut HeaderMap) {
        let outcome = normalize(
            headers,
            &self.policy,
            self.uri.path(),
            &self.catalogs,
            self.accept_language.as_ref(),
        );
        if let (Some(slot), Some(outcome)) = (&self.slot, outcome) {
            slot.set(outcome);
        }
    }
}

pin_project! {
    /// The response future of [`ErrorService`].
    pub struct ResponseFuture<F, P> {
        #[pin]
        future: F,
        state: Option<State<P>>,
    }
}

impl<F, P, ResBody, E> Future for ResponseFuture<F, P>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Body<Data = Bytes> + Default,
    P: ClassifyStatus,
{
    type Output = Result<http::Response<ErrorBody<ResBody, P>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.state.is_none() {
            // Polled after it completed: a contract breach of the caller's,
            // answered with a well-formed 42 rather than a panic or a hang.
            tracing::warn!("errmap ErrorLayer future polled after completion");
            return Poll::Ready(Ok(internal_response()));
        }
        let response = ready!(this.future.poll(cx))?;
        let Some(state) = this.state.take() else {
            return Poll::Ready(Ok(internal_response()));
        };
        let (mut parts, body) = response.into_parts();
        if parts.headers.contains_key(GRPC_STATUS) {
            // Trailers-only: the status is known now; the body is left alone.
            state.normalize(&mut parts.headers);
            return Poll::Ready(Ok(http::Response::from_parts(
                parts,
                ErrorBody::plain(body),
            )));
        }
        Poll::Ready(Ok(http::Response::from_parts(
            parts,
            ErrorBody {
                kind: BodyKind::Trailers { inner: body, state },
            },
        )))
    }
}

/// A trailers-only 42, for a future polled after completion.
fn internal_response<B: Default, P>() -> http::Response<ErrorBody<B, P>> {
    let mut response = http::Response::new(ErrorBody::plain(B::default()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    let _ = ErrorCode::ApiInternalServerError
        .to_status()
        .add_header(response.headers_mut());
    response
}

pin_project! {
    /// The response body of [`ErrorService`]: passes the handler's body
    /// through and, when the status comes in the trailers, normalises it
    /// there.
    pub struct ErrorBody<B, P> {
        #[pin]
        kind: BodyKind<B, P>,
    }
}

pin_project! {
    #[project = ErrorBodyProj]
    enum BodyKind<B, P> {
        // The status was in the headers; nothing to do.
        Plain { #[pin] inner: B },
        // The status comes in the trailers.
        Trailers { #[pin] inner: B, state: State<P> },
    }
}

impl<B, P> ErrorBody<B, P> {
    fn plain(inner: B) -> Self {
        Self {
            kind: BodyKind::Plain { inner },
        }
    }
}

impl<B, P> Body for ErrorBody<B, P>
where
    B: Body<Data = Bytes>,
    P: ClassifyStatus,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            ErrorBodyProj::Plain { inner } => inner.poll_frame(cx),
            ErrorBodyProj::Trailers { inner, state } => match ready!(inner.poll_frame(cx)) {
                Some(Ok(frame)) if frame.is_trailers() => {
                    let mut trailers = frame.into_trailers().unwrap_or_default();
                    state.normalize(&mut trailers);
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                other => Poll::Ready(other),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Plain { inner } | BodyKind::Trailers { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Plain { inner } | BodyKind::Trailers { inner, .. } => inner.size_hint(),
        }
    }
}

/// Decodes a `grpc-message` value (percent-encoded UTF-8).
pub(crate) fn percent_decode(value: &[u8]) -> Cow<'_, str> {
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

/// Whether the status in `headers` is a catalog status: its details are
/// well-formed, match its code and message, and hold exactly one
/// `ErrorInfo` of one of `catalogs`.
fn catalog_status(
    headers: &HeaderMap,
    code: Code,
    catalogs: &Catalogs,
) -> Option<(&'static errmap::CatalogTable, &'static errmap::CatalogEntry)> {
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
static REWRITES_BY_REASON: RateLimitByKey = RateLimitByKey::new(Duration::from_secs(1));

/// Statuses cut to the trailer budget, logged at a bounded rate.
static REWRITES: RateLimit = RateLimit::new(20, Duration::from_secs(1));

/// Makes the status in `headers` (response headers of a trailers-only
/// response, or trailers) a catalog error within the trailer budget. A
/// status the layer makes is in the caller's locale. Returns what was
/// sent, when there is a status.
fn normalize<P: ClassifyStatus>(
    headers: &mut HeaderMap,
    policy: &P,
    path: &str,
    catalogs: &Catalogs,
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
    if let Some((table, entry)) = catalog_status(headers, code, catalogs) {
        // gRFC A6 clients read the delay from grpc-retry-pushback-ms: a
        // catalog status that asks for a retry carries it, whoever built it.
        if let Some(delay) = entry.retry_delay() {
            if !headers.contains_key(status::RETRY_PUSHBACK_MS) {
                status::insert_pushback(headers, delay);
            }
        }
        let outcome = Outcome {
            code,
            domain: table.domain(),
            reason: entry.name(),
        };
        return Some(fit_budget(headers, code, path, accept_language).unwrap_or(outcome));
    }
    let Some(classified) = policy.classify(code) else {
        return Some(
            fit_budget(headers, code, path, accept_language).unwrap_or(Outcome::plain(code)),
        );
    };

    if let Some(suppressed) = REWRITES_BY_REASON.check(classified.entry().name()) {
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
    let outcome = Outcome {
        code: grpc_code,
        domain: classified.table().domain(),
        reason: classified.entry().name(),
    };
    Some(fit_budget(headers, grpc_code, path, accept_language).unwrap_or(outcome))
}

/// The detail types of a details header, for the log.
fn describe_details(value: &[u8]) -> String {
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

/// The size of a header block as HTTP/2 counts it.
pub(crate) fn block_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// Whether a header is part of the status or of the HTTP response itself,
/// rather than response metadata a handler added.
fn is_own_header(name: &http::HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("grpc-") || name == "content-type" || name == "date"
}

/// Cuts the status in `headers` until the block fits [`MAX_TRAILER_BLOCK`]:
/// first the message (at a character boundary, in `grpc-message` and in
/// the details alike), then the details errmap does not send itself, then
/// the response metadata of the handler's. Returns the outcome when, as a
/// last resort, it replaced the status with 42.
fn fit_budget(
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
        domain: errmap::DOMAIN,
        reason: ErrorCode::ApiInternalServerError.entry().name(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use errmap::ErrorStatusExt as _;
    use std::convert::Infallible;
    use tower::{ServiceBuilder, ServiceExt};

    type Full = http_body_util::Full<Bytes>;

    fn trailers_only(status: Status) -> http::Response<Full> {
        let mut response = http::Response::new(Full::default());
        status.add_header(response.headers_mut()).unwrap();
        response
    }

    async fn through_layer(response: http::Response<Full>) -> HeaderMap {
        let service = ServiceBuilder::new().layer(ErrorLayer::new()).service_fn(
            move |_req: http::Request<()>| {
                let response = response.clone();
                async move { Ok::<_, Infallible>(response) }
            },
        );
        let response = service.oneshot(http::Request::new(())).await.unwrap();
        response.headers().clone()
    }

    fn status_of(headers: &HeaderMap) -> Status {
        details::status_from_header_map(headers).unwrap().unwrap()
    }

    #[tokio::test]
    async fn every_code_is_rewritten_by_the_table_and_keeps_its_grpc_code() {
        let table = [
            (Code::Internal, ErrorCode::ApiInternalServerError),
            (Code::Unknown, ErrorCode::ApiInternalServerError),
            (Code::DataLoss, ErrorCode::ApiInternalServerError),
            (Code::InvalidArgument, ErrorCode::ApiInvalidRequest),
            (Code::NotFound, ErrorCode::ApiItemNotFound),
            (Code::PermissionDenied, ErrorCode::ApiForbidden),
            (Code::Unauthenticated, ErrorCode::AuthRequired),
            (Code::ResourceExhausted, ErrorCode::ApiTooManyRequests),
            (Code::Unavailable, ErrorCode::ApiTryAgainLater),
            (Code::Unimplemented, ErrorCode::ApiNotImplemented),
            (Code::AlreadyExists, ErrorCode::ApiUnknownError),
            (Code::FailedPrecondition, ErrorCode::ApiUnknownError),
            (Code::Aborted, ErrorCode::ApiUnknownError),
            (Code::OutOfRange, ErrorCode::ApiUnknownError),
        ];
        for (code, expected) in table {
            let headers = through_layer(trailers_only(Status::new(code, "secret"))).await;
            let status = status_of(&headers);
            assert_eq!(status.code(), code, "{code:?} is kept");
            assert_eq!(status.error_code(), Some(expected), "{code:?}");
            assert_eq!(status.message(), expected.entry().message(), "{code:?}");
            assert!(status.check_error_details().is_ok(), "{code:?}");
        }
    }

    /// The OK path keeps the caller's accept-language but never negotiates;
    /// a status the layer makes is in the negotiated locale.
    #[tokio::test(flavor = "current_thread")]
    async fn only_a_status_the_layer_makes_negotiates() {
        let negotiations = || errmap::locale::NEGOTIATIONS.with(|n| n.get());
        let call = |response: http::Response<Full>| {
            let service = ServiceBuilder::new().layer(ErrorLayer::new()).service_fn(
                move |_req: http::Request<()>| {
                    let response = response.clone();
                    async move { Ok::<_, Infallible>(response) }
                },
            );
            let mut request = http::Request::new(());
            request
                .headers_mut()
                .insert("accept-language", HeaderValue::from_static("ru"));
            service.oneshot(request)
        };
        let mut ok = http::Response::new(Full::default());
        ok.headers_mut()
            .insert(GRPC_STATUS, HeaderValue::from_static("0"));
        let before = negotiations();
        let response = call(ok).await.unwrap();
        assert_eq!(response.headers()[GRPC_STATUS], "0");
        let response = call(http::Response::new(Full::default())).await.unwrap();
        drop(response);
        // A catalog status passes untouched, in the locale it was built in.
        let passed = call(trailers_only(ErrorCode::ApiItemNotFound.to_status()))
            .await
            .unwrap();
        let passed = status_of(passed.headers());
        let localized = passed
            .error_details()
            .unwrap()
            .localized_message()
            .unwrap()
            .clone();
        assert_eq!(localized.locale, "en-US");
        assert_eq!(
            negotiations(),
            before,
            "no negotiation on OK or pass-through"
        );

        let rewritten = call(trailers_only(Status::internal("secret")))
            .await
            .unwrap();
        assert_eq!(negotiations(), before + 1);
        let status = status_of(rewritten.headers());
        let localized = status
            .error_details()
            .unwrap()
            .localized_message()
            .unwrap()
            .clone();
        assert_eq!(localized.locale, "ru-RU");
        assert_eq!(
            status.message(),
            ErrorCode::ApiInternalServerError.entry().message()
        );
    }

    #[tokio::test]
    async fn catalog_statuses_pass_byte_for_byte() {
        let status = ErrorCode::AuthExpiredToken
            .builder()
            .message("custom")
            .build()
            .unwrap();
        let response = trailers_only(status);
        let before = response.headers().clone();
        let after = through_layer(response).await;
        assert_eq!(before, after);
    }

    #[tokio::test]
    async fn cancelled_passes_unchanged() {
        let response = trailers_only(Status::cancelled("client went away"));
        let before = response.headers().clone();
        assert_eq!(through_layer(response).await, before);
    }

    fn with_infos(code: Code, message: &str, infos: &[(&str, &str)]) -> Status {
        let rpc = tonic_types::pb::Status {
            code: code as i32,
            message: message.into(),
            details: infos
                .iter()
                .map(|(reason, domain)| prost_types::Any {
                    type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
                    value: prost::Message::encode_to_vec(&tonic_types::pb::ErrorInfo {
                        reason: (*reason).into(),
                        domain: (*domain).into(),
                        ..Default::default()
                    }),
                })
                .collect(),
        };
        Status::with_details(
            code,
            message.to_owned(),
            Bytes::from(prost::Message::encode_to_vec(&rpc)),
        )
    }

    #[tokio::test]
    async fn only_one_error_info_of_this_catalog_passes() {
        let domain = errmap::DOMAIN;
        for (infos, why) in [
            (
                vec![("AUTH_REQUIRED", "upstream.example.com")],
                "a foreign domain",
            ),
            (vec![("NO_SUCH_REASON", domain)], "an unknown reason"),
            (
                vec![("AUTH_REQUIRED", domain), ("AUTH_REQUIRED", domain)],
                "two ErrorInfos",
            ),
            (vec![], "no ErrorInfo"),
        ] {
            let status = with_infos(Code::Internal, "db password is hunter2", &infos);
            let headers = through_layer(trailers_only(status)).await;
            let status = status_of(&headers);
            assert_eq!(
                status.error_code(),
                Some(ErrorCode::ApiInternalServerError),
                "{why}"
            );
            assert!(!status.message().contains("hunter2"), "{why}");
            assert!(
                !String::from_utf8_lossy(status.details()).contains("hunter2"),
                "{why}"
            );
        }
        // A matching one passes.
        let status = with_infos(
            Code::Unauthenticated,
            ErrorCode::AuthRequired.entry().message(),
            &[("AUTH_REQUIRED", domain)],
        );
        let response = trailers_only(status);
        let before = response.headers().clone();
        assert_eq!(through_layer(response).await, before);
    }

    #[tokio::test]
    async fn a_catalog_error_info_with_a_message_that_differs_is_rewritten() {
        let mut status = ErrorCode::AuthRequired.to_status();
        status = Status::with_details(
            status.code(),
            "leaked text",
            status.details().to_vec().into(),
        );
        let headers = through_layer(trailers_only(status)).await;
        let status = status_of(&headers);
        assert_eq!(status.message(), ErrorCode::AuthRequired.entry().message());
        assert!(status.check_error_details().is_ok());
    }

    #[tokio::test]
    async fn oversized_statuses_are_cut_to_the_budget_at_a_character_boundary() {
        let long = "ж".repeat(20_000);
        let status = ErrorCode::ApiInvalidRequest
            .builder()
            .field_violation("x", "y")
            .build()
            .unwrap();
        // Rebuilt by hand with a message the builder would refuse.
        let view_bytes = status::reencode(
            status.code(),
            &long,
            &wire::StatusView::parse(status.details())
                .unwrap()
                .details()
                .map(|(_, raw)| raw)
                .collect::<Vec<_>>(),
        );
        let big = Status::with_details(status.code(), long.clone(), Bytes::from(view_bytes));
        let mut response = trailers_only(big);
        response
            .headers_mut()
            .insert("x-big", HeaderValue::from_str(&"v".repeat(9000)).unwrap());
        let headers = through_layer(response).await;
        assert!(
            block_size(&headers) <= MAX_TRAILER_BLOCK,
            "{}",
            block_size(&headers)
        );
        let status = status_of(&headers);
        assert_eq!(status.error_code(), Some(ErrorCode::ApiInvalidRequest));
        assert!(status.message().chars().all(|c| c == 'ж'));
        assert!(!status.message().is_empty());
        assert!(status.check_error_details().is_ok());
    }

    #[test]
    fn a_future_polled_after_completion_answers_42_without_panicking() {
        let mut service =
            ErrorLayer::new().layer(tower::service_fn(|_: http::Request<()>| async {
                Ok::<_, Infallible>(http::Response::new(Full::default()))
            }));
        let mut future = std::pin::pin!(service.call(http::Request::new(())));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(Ok(first)) = future.as_mut().poll(&mut cx) else {
            panic!("the first poll answers");
        };
        assert!(!first.headers().contains_key(GRPC_STATUS));
        let Poll::Ready(Ok(again)) = future.as_mut().poll(&mut cx) else {
            panic!("a second poll answers too");
        };
        assert_eq!(
            errmap::ErrorStatusExt::error_code(&status_of(again.headers())),
            Some(ErrorCode::ApiInternalServerError)
        );
    }

    #[tokio::test]
    async fn an_ok_block_over_the_budget_loses_the_handlers_metadata_only() {
        let mut response = http::Response::new(Full::default());
        response
            .headers_mut()
            .insert(GRPC_STATUS, HeaderValue::from_static("0"));
        response
            .headers_mut()
            .insert("x-big", HeaderValue::from_str(&"v".repeat(9000)).unwrap());
        response
            .headers_mut()
            .insert("x-small", HeaderValue::from_static("kept?"));
        let headers = through_layer(response).await;
        assert!(block_size(&headers) <= MAX_TRAILER_BLOCK);
        assert_eq!(headers[GRPC_STATUS], "0");
        assert!(!headers.contains_key("x-big"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"plain"), "plain");
        assert_eq!(percent_decode(b"a%20b%E2%98%BA"), "a b☺");
        assert_eq!(percent_decode(b"bad%zz%"), "bad%zz%");
    }
}
