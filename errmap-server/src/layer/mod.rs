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

use std::borrow::Cow;

use errmap::{
    catalog::{CatalogEntry, TableRef},
    catalog_set::Catalogs,
    details, status, wire, Catalog, ErrorCode,
};

use crate::{
    reload::LiveCatalogs,
    sanitize::{self, RateLimit, RateLimitByKey},
};

mod budget;
mod classify;
mod outcome;
mod rewrite;

pub use budget::MAX_TRAILER_BLOCK;
use budget::*;
pub use classify::{default_classify, Classified, ClassifyStatus, DefaultPolicy};
use errmap::headers::percent_decode;
pub(crate) use outcome::Listening;
pub use outcome::{Outcome, OutcomeSlot};
use rewrite::*;

use errmap::headers::GRPC_STATUS;
const GRPC_MESSAGE: &str = "grpc-message";

/// Adds the response normalisation to a service; see the
/// [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct ErrorLayer<P = DefaultPolicy> {
    policy: P,
    catalogs: LiveCatalogs,
    help_base_url: Option<Arc<str>>,
}

impl ErrorLayer {
    /// The layer with the default policy, passing statuses of the default
    /// catalog.
    pub fn new() -> Self {
        Self {
            policy: DefaultPolicy,
            catalogs: LiveCatalogs::default(),
            help_base_url: None,
        }
    }
}

impl<P: ClassifyStatus> ErrorLayer<P> {
    /// The layer with a policy of yours (a closure works).
    pub fn custom(policy: P) -> Self {
        Self {
            policy,
            catalogs: LiveCatalogs::default(),
            help_base_url: None,
        }
    }

    /// Links every catalog status that leaves to the page of its code in
    /// the catalog pages at `base_url` (`errmap serve --public-url`):
    /// `{base_url}/errors/{NAME}`, first in its one `google.rpc.Help`
    /// detail. A status that already links there is left as it is.
    pub fn with_help_base_url(mut self, base_url: impl AsRef<str>) -> Self {
        self.help_base_url = Some(Arc::from(base_url.as_ref().trim_end_matches('/')));
        self
    }

    /// Passes the statuses of every catalog in `catalogs` (a team's own,
    /// say, beside the default) instead of the default catalog's only.
    pub fn with_catalogs(self, catalogs: Catalogs) -> Self {
        self.with_live_catalogs(LiveCatalogs::new(catalogs))
    }

    /// [`with_catalogs`](Self::with_catalogs) with a set that a reload
    /// replaces: every response reads the set current when its status
    /// arrives.
    pub fn with_live_catalogs(mut self, catalogs: LiveCatalogs) -> Self {
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
            help_base_url: self.help_base_url.clone(),
        }
    }
}

/// The service made by [`ErrorLayer`].
#[derive(Debug, Clone)]
pub struct ErrorService<S, P = DefaultPolicy> {
    inner: S,
    policy: P,
    catalogs: LiveCatalogs,
    help_base_url: Option<Arc<str>>,
}

impl<S> ErrorService<S> {
    /// Wraps `inner` with the default policy.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            policy: DefaultPolicy,
            catalogs: LiveCatalogs::default(),
            help_base_url: None,
        }
    }
}

impl<S, P: ClassifyStatus> ErrorService<S, P> {
    /// Wraps `inner` with a policy of yours.
    pub fn custom(inner: S, policy: P) -> Self {
        Self {
            inner,
            policy,
            catalogs: LiveCatalogs::default(),
            help_base_url: None,
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
        let accept_language = request
            .headers()
            .get(http::header::ACCEPT_LANGUAGE)
            .cloned();
        let slot = request.extensions().get::<OutcomeSlot>().cloned();
        ResponseFuture {
            future: self.inner.call(request),
            // Boxed: it goes on into the response body, which every layer
            // above moves on the way out.
            state: Some(Box::new(State {
                policy: self.policy.clone(),
                uri,
                catalogs: self.catalogs.clone(),
                help_base_url: self.help_base_url.clone(),
                accept_language,
                slot,
            })),
        }
    }
}

/// What the layer keeps of a request until its status is known.
struct State<P> {
    policy: P,
    uri: Uri,
    catalogs: LiveCatalogs,
    help_base_url: Option<Arc<str>>,
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
            self.help_base_url.as_deref(),
            self.accept_language.as_ref(),
        );
        if let Some(outcome) = outcome {
            outcome::offer(&outcome);
            if let Some(slot) = &self.slot {
                slot.set(outcome);
            }
        }
    }
}

pin_project! {
    /// The response future of [`ErrorService`].
    pub struct ResponseFuture<F, P> {
        #[pin]
        future: F,
        state: Option<Box<State<P>>>,
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
        Trailers { #[pin] inner: B, state: Box<State<P>> },
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
