//! The response layer: every non-OK status that leaves the server carries
//! exactly one catalog `ErrorInfo`.
//!
//! A status that already carries an `ErrorInfo` passes through byte for
//! byte. Any other non-OK status is classified by a [`ClassifyStatus`]
//! policy and rewritten as a catalog error; the default policy follows
//! DESIGN.md §3:
//!
//! | the status that slipped through | what is sent |
//! |---|---|
//! | UNIMPLEMENTED with no message (tonic: unknown service or method) | 43 `API_METHOD_NOT_FOUND` |
//! | UNIMPLEMENTED with a message (a handler's) | 41 `API_NOT_IMPLEMENTED` |
//! | a request body that does not decode, or is over the size limit | 40 `API_INVALID_REQUEST` |
//! | INTERNAL, UNKNOWN or DATA_LOSS | 42 `API_INTERNAL_SERVER_ERROR`, message replaced (the original is logged) |
//! | a handler that panicked | 42, the panic text logged, never sent |
//! | INVALID_ARGUMENT, OUT_OF_RANGE | 40 |
//! | NOT_FOUND | 47 `API_ITEM_NOT_FOUND` |
//! | RESOURCE_EXHAUSTED | 44 `API_TOO_MANY_REQUESTS` |
//! | UNAVAILABLE | 49 `API_TRY_AGAIN_LATER` |
//! | UNAUTHENTICATED | 21 `AUTH_REQUIRED` |
//! | PERMISSION_DENIED, ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED | 42, logged as a handler bug: return a catalog code instead |
//! | CANCELLED, DEADLINE_EXCEEDED | unchanged: they describe the call, not the request |
//!
//! Handler messages are kept as the developer message, except for the
//! statuses that become 42. Other details the status carried (a
//! `BadRequest`, say) are kept. Every other header and trailer is kept.
//!
//! The layer finds the status in the response headers (trailers-only
//! responses, as tonic sends every unary error) or in the trailers after a
//! body. On the OK path it allocates nothing. Each failed call is logged on
//! one line with its method, gRPC code and reason.
//!
//! ```
//! use errmap::layer::ErrorLayer;
//!
//! let router = tonic::transport::Server::builder()
//!     .layer(ErrorLayer::new())
//!     .add_service(errmap::service::CatalogService::new().into_server());
//! # drop(router);
//! ```
//!
//! A custom policy is a closure; [`default_classify`] handles the rest:
//!
//! ```
//! use errmap::layer::{default_classify, Classified, ErrorLayer};
//! use errmap::ErrorCode;
//! use tonic::Code;
//!
//! let layer = ErrorLayer::custom(|code: Code, message: &str| match code {
//!     Code::PermissionDenied => Some(Classified::keep_message(ErrorCode::OauthClientForbidden)),
//!     _ => default_classify(code, message),
//! });
//! # drop(layer);
//! ```

use std::{
    any::Any,
    borrow::Cow,
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Uri};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::{details, status, wire, ErrorCode};

const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";

/// What a status that slipped through becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// The catalog code to send.
    pub code: ErrorCode,
    /// Whether the original message is kept as the developer message
    /// (otherwise the catalog message is sent).
    pub keep_message: bool,
}

impl Classified {
    /// Send `code` with the catalog message.
    pub fn catalog_message(code: ErrorCode) -> Self {
        Self {
            code,
            keep_message: false,
        }
    }

    /// Send `code`, keeping the original message.
    pub fn keep_message(code: ErrorCode) -> Self {
        Self {
            code,
            keep_message: true,
        }
    }
}

/// Decides what a non-OK status without an `ErrorInfo` becomes; `None`
/// sends it unchanged.
pub trait ClassifyStatus: Clone + Send + Sync + 'static {
    /// Classifies a status by its gRPC code and (percent-decoded) message.
    fn classify(&self, code: Code, message: &str) -> Option<Classified>;
}

impl<F> ClassifyStatus for F
where
    F: Fn(Code, &str) -> Option<Classified> + Clone + Send + Sync + 'static,
{
    fn classify(&self, code: Code, message: &str) -> Option<Classified> {
        self(code, message)
    }
}

/// The policy of the table in the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPolicy;

impl ClassifyStatus for DefaultPolicy {
    fn classify(&self, code: Code, message: &str) -> Option<Classified> {
        default_classify(code, message)
    }
}

/// Prefixes of the messages tonic gives a request that cannot be decoded:
/// bad protobuf, a truncated or bad frame, over the size limit.
const REQUEST_DECODE_ERRORS: &[&str] = &[
    "failed to decode Protobuf message",
    "Error, decoded message length too large",
    "protocol error: received message with compressed-flag but no grpc-encoding",
    "protocol error: received message with invalid compression flag",
    "Unexpected EOF decoding stream",
    "Missing request message",
    "Error decompressing",
];

fn is_request_decode_error(message: &str) -> bool {
    REQUEST_DECODE_ERRORS.iter().any(|p| message.starts_with(p))
}

/// The default classification (the table in the [module docs](self)).
pub fn default_classify(code: Code, message: &str) -> Option<Classified> {
    use Classified as C;
    Some(match code {
        Code::Ok | Code::Cancelled | Code::DeadlineExceeded => return None,
        _ if is_request_decode_error(message) => C::keep_message(ErrorCode::ApiInvalidRequest),
        Code::Unimplemented if message.is_empty() => {
            C::catalog_message(ErrorCode::ApiMethodNotFound)
        }
        Code::Unimplemented => C::keep_message(ErrorCode::ApiNotImplemented),
        Code::InvalidArgument | Code::OutOfRange => C::keep_message(ErrorCode::ApiInvalidRequest),
        Code::NotFound => C::keep_message(ErrorCode::ApiItemNotFound),
        Code::ResourceExhausted => C::keep_message(ErrorCode::ApiTooManyRequests),
        Code::Unavailable => C::keep_message(ErrorCode::ApiTryAgainLater),
        Code::Unauthenticated => C::keep_message(ErrorCode::AuthRequired),
        Code::Internal
        | Code::Unknown
        | Code::DataLoss
        | Code::PermissionDenied
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::Aborted => C::catalog_message(ErrorCode::ApiInternalServerError),
    })
}

/// Adds the response normalisation to a service; see the
/// [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorLayer<P = DefaultPolicy> {
    policy: P,
}

impl ErrorLayer {
    /// The layer with the default policy.
    pub fn new() -> Self {
        Self {
            policy: DefaultPolicy,
        }
    }
}

impl<P: ClassifyStatus> ErrorLayer<P> {
    /// The layer with a policy of yours (a closure works).
    pub fn custom(policy: P) -> Self {
        Self { policy }
    }
}

impl<S, P: Clone> Layer<S> for ErrorLayer<P> {
    type Service = ErrorService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`ErrorLayer`].
#[derive(Debug, Clone, Copy)]
pub struct ErrorService<S, P = DefaultPolicy> {
    inner: S,
    policy: P,
}

impl<S> ErrorService<S> {
    /// Wraps `inner` with the default policy.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            policy: DefaultPolicy,
        }
    }
}

impl<S, P: ClassifyStatus> ErrorService<S, P> {
    /// Wraps `inner` with a policy of yours.
    pub fn custom(inner: S, policy: P) -> Self {
        Self { inner, policy }
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
    ResBody: Body<Data = Bytes>,
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
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => ResponseFuture {
                kind: Kind::Inner { future },
                policy: Some(self.policy.clone()),
                uri,
            },
            Err(panic) => {
                log_panic(uri.path(), panic);
                ResponseFuture {
                    kind: Kind::Panicked,
                    policy: Some(self.policy.clone()),
                    uri,
                }
            }
        }
    }
}

pin_project! {
    /// The response future of [`ErrorService`].
    pub struct ResponseFuture<F, P> {
        #[pin]
        kind: Kind<F>,
        policy: Option<P>,
        uri: Uri,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Panicked,
    }
}

impl<F, P, ResBody, E> Future for ResponseFuture<F, P>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Body<Data = Bytes>,
    P: ClassifyStatus,
{
    type Output = Result<http::Response<ErrorBody<ResBody, P>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let policy = this
            .policy
            .take()
            .expect("ResponseFuture polled after completion");
        let future = match this.kind.project() {
            KindProj::Inner { future } => future,
            KindProj::Panicked => return Poll::Ready(Ok(panic_response())),
        };
        let polled = catch_unwind(AssertUnwindSafe(|| future.poll(cx)));
        let response = match polled {
            Ok(Poll::Pending) => {
                *this.policy = Some(policy);
                return Poll::Pending;
            }
            Ok(Poll::Ready(Err(error))) => return Poll::Ready(Err(error)),
            Ok(Poll::Ready(Ok(response))) => response,
            Err(panic) => {
                log_panic(this.uri.path(), panic);
                return Poll::Ready(Ok(panic_response()));
            }
        };
        let (mut parts, body) = response.into_parts();
        if parts.headers.contains_key(GRPC_STATUS) {
            // Trailers-only: the status is known now; the body is left alone.
            normalize(&mut parts.headers, &policy, this.uri.path());
            return Poll::Ready(Ok(http::Response::from_parts(
                parts,
                ErrorBody::plain(body),
            )));
        }
        let uri = std::mem::take(this.uri);
        Poll::Ready(Ok(http::Response::from_parts(
            parts,
            ErrorBody {
                kind: BodyKind::Trailers {
                    inner: body,
                    policy,
                    uri,
                    done: false,
                },
            },
        )))
    }
}

/// A trailers-only 42 for a handler that panicked.
fn panic_response<B, P>() -> http::Response<ErrorBody<B, P>> {
    let status = ErrorCode::ApiInternalServerError.to_status();
    let mut response = http::Response::new(ErrorBody::empty());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    let _ = status.add_header(response.headers_mut());
    response
}

fn panic_text(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(a panic payload that is not a string)"
    }
}

fn log_panic(path: &str, panic: Box<dyn Any + Send>) {
    tracing::error!(
        grpc.method = path,
        panic = panic_text(panic.as_ref()),
        reason = ErrorCode::ApiInternalServerError.name(),
        "handler panicked; sent 42 API_INTERNAL_SERVER_ERROR"
    );
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
        Trailers { #[pin] inner: B, policy: P, uri: Uri, done: bool },
        // The body of a response the layer made itself.
        Empty,
    }
}

impl<B, P> ErrorBody<B, P> {
    fn plain(inner: B) -> Self {
        Self {
            kind: BodyKind::Plain { inner },
        }
    }

    fn empty() -> Self {
        Self {
            kind: BodyKind::Empty,
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
            ErrorBodyProj::Empty => Poll::Ready(None),
            ErrorBodyProj::Trailers {
                inner,
                policy,
                uri,
                done,
            } => {
                if *done {
                    return Poll::Ready(None);
                }
                let polled = catch_unwind(AssertUnwindSafe(|| inner.poll_frame(cx)));
                let frame = match polled {
                    Ok(polled) => ready!(polled),
                    Err(panic) => {
                        log_panic(uri.path(), panic);
                        *done = true;
                        let mut trailers = HeaderMap::new();
                        let _ = ErrorCode::ApiInternalServerError
                            .to_status()
                            .add_header(&mut trailers);
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                };
                match frame {
                    Some(Ok(frame)) if frame.is_trailers() => {
                        let mut trailers = frame.into_trailers().unwrap_or_default();
                        normalize(&mut trailers, policy, uri.path());
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    other => Poll::Ready(other),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Plain { inner } => inner.is_end_stream(),
            BodyKind::Trailers { inner, done, .. } => *done || inner.is_end_stream(),
            BodyKind::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Plain { inner } | BodyKind::Trailers { inner, .. } => inner.size_hint(),
            BodyKind::Empty => SizeHint::with_exact(0),
        }
    }
}

/// Decodes a `grpc-message` value (percent-encoded UTF-8).
fn percent_decode(value: &[u8]) -> Cow<'_, str> {
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

/// Makes the status in `headers` (response headers of a trailers-only
/// response, or trailers) a catalog error, and logs the failure.
fn normalize<P: ClassifyStatus>(headers: &mut HeaderMap, policy: &P, path: &str) {
    let Some(code) = headers
        .get(GRPC_STATUS)
        .map(|v| Code::from_bytes(v.as_bytes()))
    else {
        return;
    };
    if code == Code::Ok {
        return;
    }

    // The details, if readable; a status with an ErrorInfo passes untouched.
    let raw_details = headers
        .get(details::DETAILS_HEADER)
        .and_then(|v| details::decode_base64(v.as_bytes()).ok());
    if let Some(bytes) = &raw_details {
        if let Ok(Some((reason, domain))) = wire::find_error_info(bytes) {
            tracing::info!(
                grpc.method = path,
                grpc.code = ?code,
                reason = %String::from_utf8_lossy(reason),
                domain = %String::from_utf8_lossy(domain),
                "call failed"
            );
            return;
        }
    }

    let message = headers
        .get(GRPC_MESSAGE)
        .map(|v| percent_decode(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let Some(classified) = policy.classify(code, &message) else {
        tracing::info!(grpc.method = path, grpc.code = ?code, message, "call failed");
        return;
    };

    if classified.code == ErrorCode::ApiInternalServerError {
        tracing::error!(
            grpc.method = path,
            grpc.code = ?code,
            original_message = %message,
            reason = classified.code.name(),
            "non-catalog error hidden from the client; return a catalog code instead"
        );
    } else {
        tracing::info!(
            grpc.method = path,
            grpc.code = ?classified.code.grpc_code(),
            original_code = ?code,
            reason = classified.code.name(),
            "call failed"
        );
    }

    // Keep the other details the status carried.
    let own = [
        wire::ERROR_INFO.as_bytes(),
        wire::LOCALIZED_MESSAGE.as_bytes(),
        wire::RETRY_INFO.as_bytes(),
    ];
    let foreign: Vec<&[u8]> = raw_details
        .as_deref()
        .and_then(|bytes| wire::detail_entries(bytes).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|(type_name, _)| !own.contains(type_name))
        .map(|(_, any)| any)
        .collect();
    let keep = classified.keep_message && !message.is_empty();
    let status: Status =
        status::enrich(classified.code, keep.then_some(message.as_str()), &foreign);

    headers.remove(GRPC_STATUS);
    headers.remove(GRPC_MESSAGE);
    headers.remove(details::DETAILS_HEADER);
    if let Err(error) = status.add_header(headers) {
        // Only a message that cannot be a header value gets here; send the
        // catalog message instead.
        tracing::warn!(%error, "could not encode the status; sending the catalog message");
        let _ = classified.code.to_status().add_header(headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn code_of(headers: &HeaderMap) -> Option<ErrorCode> {
        use crate::ErrorStatusExt as _;
        details::status_from_header_map(headers).ok()??.error_code()
    }

    #[tokio::test]
    async fn unknown_methods_become_43() {
        let headers = through_layer(trailers_only(Status::unimplemented(""))).await;
        assert_eq!(code_of(&headers), Some(ErrorCode::ApiMethodNotFound));
    }

    #[tokio::test]
    async fn internal_messages_are_replaced() {
        let headers = through_layer(trailers_only(Status::internal("secret"))).await;
        assert_eq!(code_of(&headers), Some(ErrorCode::ApiInternalServerError));
        let message = headers[GRPC_MESSAGE].to_str().unwrap();
        assert!(!message.contains("secret"), "{message}");
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

    #[tokio::test]
    async fn handler_messages_and_foreign_details_are_kept() {
        let bad_request = tonic_types::pb::BadRequest {
            field_violations: vec![tonic_types::pb::bad_request::FieldViolation {
                field: "x".into(),
                description: "y".into(),
                ..Default::default()
            }],
        };
        let rpc = tonic_types::pb::Status {
            code: Code::InvalidArgument as i32,
            message: "x is wrong".into(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
                value: prost::Message::encode_to_vec(&bad_request),
            }],
        };
        let status = Status::with_details(
            Code::InvalidArgument,
            "x is wrong",
            Bytes::from(prost::Message::encode_to_vec(&rpc)),
        );
        let headers = through_layer(trailers_only(status)).await;
        use crate::ErrorStatusExt as _;
        let status = details::status_from_header_map(&headers).unwrap().unwrap();
        let details = status.check_error_details().unwrap();
        assert_eq!(details.error_code(), Some(ErrorCode::ApiInvalidRequest));
        assert_eq!(status.message(), "x is wrong");
        assert_eq!(details.bad_request(), Some(&bad_request));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"plain"), "plain");
        assert_eq!(percent_decode(b"a%20b%E2%98%BA"), "a b☺");
        assert_eq!(percent_decode(b"bad%zz%"), "bad%zz%");
    }

    #[test]
    fn request_decode_errors_become_40() {
        for message in [
            "failed to decode Protobuf message: invalid wire type",
            "Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes",
        ] {
            assert_eq!(
                default_classify(Code::Internal, message).map(|c| c.code),
                Some(ErrorCode::ApiInvalidRequest)
            );
        }
    }
}
