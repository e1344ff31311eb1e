//! Admission control: which calls the server takes, and when.
//!
//! A call goes through these steps, each of which can answer it at once
//! with a catalog status:
//!
//! 1. **Route.** With a [`RouteTable`], a path that names no method the
//!    server serves is answered with 43 `API_METHOD_NOT_FOUND`: decided
//!    from the routes, never from a message.
//! 2. **Drain.** Once [`Admission::begin_drain`] is called, new calls get
//!    49 `API_TRY_AGAIN_LATER` with its `RetryInfo`.
//! 3. **Intake.** The request is read before the call takes a place: the
//!    whole request for methods whose client sends one message, the first
//!    message for client-streaming (and unknown) methods. A request that
//!    does not arrive within the body timeout, whose message is over the
//!    size limit, is cut short, or is compressed when compression is not
//!    accepted, gets 40 `API_INVALID_REQUEST`. A client that opens streams
//!    and never sends their bodies therefore holds no place: it cannot
//!    starve the clients on other connections.
//! 4. **Place.** The call then takes one of `concurrency_limit` places
//!    (long-lived streams, health `Watch` and reflection, one of
//!    `stream_limit` places of their own), or gets 44
//!    `API_TOO_MANY_REQUESTS` with its `RetryInfo` at once: load is shed,
//!    not queued.
//! 5. **Decode check.** If the service answers with an error and the
//!    request's first message does not decode as the method's input type
//!    (known from the route's descriptors), the answer becomes 40: the
//!    server could not decode the request. An error a handler forwards from
//!    a downstream call is left to the response layer, whatever its text.
//!
//! Health `Check` is read and checked like any call, but never refused for
//! load or a drain and never counted, so that load balancers keep seeing
//! the server's state. [`Admission::drained`] completes once no
//! counted call (in intake, running, or streaming) is left.
//!
//! ```
//! use errmap_server::admission::Admission;
//! use errmap_server::layer::ErrorLayer;
//! use tower::ServiceBuilder;
//!
//! let admission = Admission::new(512);
//! let layers = ServiceBuilder::new()
//!     .layer(ErrorLayer::new())
//!     .layer(admission.layer());
//! let router = tonic::transport::Server::builder()
//!     .layer(layers)
//!     .add_service(errmap_server::service::CatalogService::new().into_server());
//! // On shutdown: admission.begin_drain(); admission.drained().await; ...
//! # drop(router);
//! ```

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    task::{ready, Context, Poll, Waker},
    time::Duration,
};

use bytes::{Buf as _, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use tokio::{sync::Notify, time::Sleep};
use tower::{Layer, Service};

use errmap::{Catalog as _, ErrorCode};
use http::header::ACCEPT_LANGUAGE;

mod body;
mod future;
mod intake;
mod routes;

pub use body::AdmissionBody;
use body::*;
pub use future::AdmissionFuture;
use future::*;
use intake::*;
use routes::*;
pub use routes::{RouteError, RouteTable};

/// `grpc-encoding`, parsed once: a name given as text is parsed and
/// hashed on every lookup.
const GRPC_ENCODING: http::HeaderName = http::HeaderName::from_static("grpc-encoding");

/// Paths exempt from admission: health checks, so that probes keep working
/// under load and during a drain.
pub const DEFAULT_EXEMPT: &[&str] = &["/grpc.health.v1.Health/Check"];

/// Paths of long-lived streams, which count against
/// [`AdmissionConfig::stream_limit`] instead of the concurrency limit.
pub const DEFAULT_LONG_LIVED: &[&str] = &[
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The settings of the admission layer. `Default` gives the values
/// `errmap serve` starts with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AdmissionConfig {
    /// Calls running at once over all connections; more get 44. Default 512.
    pub concurrency_limit: usize,
    /// Long-lived streams (health `Watch`, reflection) open at once; more
    /// get 44. Default 128.
    pub stream_limit: usize,
    /// The largest request message, in bytes; larger ones get 40. Default
    /// 64 KiB.
    pub max_request_size: usize,
    /// How long a request may take to arrive (its first message, or all of
    /// it for single-request methods) before it gets 40. Default 10 s.
    pub request_body_timeout: Duration,
    /// The memory budget of calls in intake, over all connections: the
    /// header bytes and buffered body bytes of every call whose request has
    /// not arrived. Past it, the oldest unfinished intake is refused first
    /// with 44, then, if that is not enough, the newcomer. Default 64 MiB.
    pub intake_memory: usize,
    /// Whether compressed requests are passed on; when false (the default,
    /// as errmap's services accept none) they get 40.
    pub accept_compressed: bool,
    /// The served routes; `None` takes every path as served and every
    /// method as client-streaming.
    pub routes: Option<RouteTable>,
    /// Paths exempt from admission. Default [`DEFAULT_EXEMPT`].
    pub exempt: Vec<String>,
    /// Paths of long-lived streams. Default [`DEFAULT_LONG_LIVED`].
    pub long_lived: Vec<String>,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            concurrency_limit: 512,
            stream_limit: 128,
            max_request_size: 64 * 1024,
            request_body_timeout: Duration::from_secs(10),
            intake_memory: 64 * 1024 * 1024,
            accept_compressed: false,
            routes: None,
            exempt: DEFAULT_EXEMPT.iter().map(|s| s.to_string()).collect(),
            long_lived: DEFAULT_LONG_LIVED.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Places for calls: how many are taken, of at most `limit`. Nothing
/// waits for one (a call that finds none is shed), so a count is all it
/// takes: one atomic add to take a place and one to give it back.
#[derive(Debug)]
struct Places {
    taken: AtomicUsize,
    limit: usize,
}

impl Places {
    fn new(limit: usize) -> Self {
        Self {
            taken: AtomicUsize::new(0),
            limit: limit.max(1),
        }
    }

    /// Takes a place if one is free.
    fn try_take(&self) -> bool {
        if self.taken.fetch_add(1, Ordering::AcqRel) < self.limit {
            true
        } else {
            self.taken.fetch_sub(1, Ordering::AcqRel);
            false
        }
    }

    fn give_back(&self) {
        self.taken.fetch_sub(1, Ordering::AcqRel);
    }

    #[cfg(test)]
    fn available(&self) -> usize {
        self.limit
            .saturating_sub(self.taken.load(Ordering::Acquire))
    }
}

#[derive(Debug)]
struct Shared {
    config: AdmissionConfig,
    places: Places,
    stream_places: Places,
    in_flight: AtomicUsize,
    idle: Notify,
    draining: AtomicBool,
    stopping: AtomicBool,
    shed: std::sync::atomic::AtomicU64,
    intake: IntakeBudget,
}

/// The shared state of the admission layer; cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission {
    shared: Arc<Shared>,
}

impl Admission {
    /// At most `limit` calls running (at least 1), the other settings as in
    /// [`AdmissionConfig::default`].
    pub fn new(limit: usize) -> Self {
        Self::with_config(AdmissionConfig {
            concurrency_limit: limit,
            ..AdmissionConfig::default()
        })
    }

    /// Admission with every setting of `config`.
    pub fn with_config(config: AdmissionConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                places: Places::new(config.concurrency_limit),
                stream_places: Places::new(config.stream_limit),
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
                draining: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                shed: std::sync::atomic::AtomicU64::new(0),
                intake: IntakeBudget {
                    limit: config.intake_memory.max(1),
                    ..IntakeBudget::default()
                },
                config,
            }),
        }
    }

    /// The layer to add to a server.
    pub fn layer(&self) -> AdmissionLayer {
        AdmissionLayer {
            admission: self.clone(),
        }
    }

    /// The concurrency limit.
    pub fn limit(&self) -> usize {
        self.shared.places.limit
    }

    /// Counted calls now: in intake, running, or streaming (exempt paths
    /// not counted). Right while draining too.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Bytes held now by calls in intake (headers and buffered body), as
    /// the intake memory budget counts them.
    pub fn intake_bytes(&self) -> usize {
        self.shared.intake.used.load(Ordering::Relaxed)
    }

    /// Calls in intake refused so far with 44 to keep within the intake
    /// memory budget.
    pub fn intake_refused(&self) -> u64 {
        self.shared.intake.refused.load(Ordering::Relaxed)
    }

    /// Calls shed so far with 44 because no place was free (calls or
    /// long-lived streams).
    pub fn shed(&self) -> u64 {
        self.shared.shed.load(Ordering::Relaxed)
    }

    /// From now on, new calls get 49 `API_TRY_AGAIN_LATER`; implies
    /// [`announce_stop`](Self::announce_stop).
    pub fn begin_drain(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    /// The server is about to stop: it is no longer ready (`/readyz`), but
    /// still takes new calls until [`begin_drain`](Self::begin_drain).
    pub fn announce_stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether [`announce_stop`](Self::announce_stop) or
    /// [`begin_drain`](Self::begin_drain) was called.
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    /// Whether [`begin_drain`](Self::begin_drain) was called.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }

    /// Completes when no counted call is in flight.
    pub async fn drained(&self) {
        loop {
            let notified = self.shared.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn is_exempt(&self, path: &str) -> bool {
        self.shared.config.exempt.iter().any(|p| p == path)
    }

    fn is_long_lived(&self, path: &str) -> bool {
        self.shared.config.long_lived.iter().any(|p| p == path)
    }

    fn enter(&self) -> InFlight {
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight {
            shared: self.shared.clone(),
        }
    }
}

/// One counted call; leaving wakes [`Admission::drained`] at zero.
#[derive(Debug)]
struct InFlight {
    shared: Arc<Shared>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.shared.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.idle.notify_waiters();
        }
    }
}

/// The layer made by [`Admission::layer`].
#[derive(Debug, Clone)]
pub struct AdmissionLayer {
    admission: Admission,
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService {
            inner,
            admission: self.admission.clone(),
        }
    }
}

/// The service made by [`AdmissionLayer`].
#[derive(Debug, Clone)]
pub struct AdmissionService<S> {
    inner: S,
    admission: Admission,
}

impl<S> AdmissionService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// What the intake waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// The whole request (the client sends one message).
    Whole,
    /// The first message, or the end of the request.
    First,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AdmissionService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>> + Clone,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<tonic::codegen::StdError>,
    ResBody: Default,
{
    type Response = http::Response<AdmissionBody<ResBody>>;
    type Error = S::Error;
    type Future = AdmissionFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let admission = &self.admission;
        // Refusals answer in the caller's locale; kept, not negotiated.
        let accept_language = request.headers().get(ACCEPT_LANGUAGE).cloned();
        let path = request.uri().path();
        let exempt = admission.is_exempt(path);
        let shared = &admission.shared;
        let (want, input) = match shared.config.routes.as_ref().map(|r| r.route(path)) {
            Some(Route::NotServed) => {
                return AdmissionFuture::refused(ErrorCode::ApiMethodNotFound, accept_language);
            }
            Some(Route::Method(method)) if !method.client_streaming => {
                (Want::Whole, Some(method.input.clone()))
            }
            Some(Route::Method(method)) => (Want::First, Some(method.input.clone())),
            Some(Route::Opaque) | None => (Want::First, None),
        };
        if admission.is_draining() && !exempt {
            return AdmissionFuture::refused(ErrorCode::ApiTryAgainLater, accept_language);
        }
        // A message may carry the compressed flag only when the request
        // names an encoding, and an encoding is only taken where accepted.
        let encoded = request
            .headers()
            .get(GRPC_ENCODING)
            .is_some_and(|v| v.as_bytes() != b"identity");
        if encoded && !shared.config.accept_compressed {
            return AdmissionFuture::refused(ErrorCode::ApiInvalidRequest, accept_language);
        }
        let call_timeout = errmap::headers::request_timeout(request.headers());
        let long_lived = admission.is_long_lived(path);
        // Exempt calls are read like the others, but neither counted nor
        // limited.
        let in_flight = (!exempt).then(|| admission.enter());
        // The clone takes the place of the service that was polled ready.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = request.into_parts();
        let body = tonic::body::Body::new(body);
        AdmissionFuture {
            accept_language,
            state: Box::pin(State::Reading {
                inner: Some(inner),
                parts: Some(parts),
                body: Some(body),
                buffered: Buffered::default(),
                trailers: None,
                want,
                encoded,
                input,
                long_lived,
                in_flight,
                admission: admission.clone(),
                charge: None,
                caller_deadline: call_timeout
                    .is_some_and(|t| t < shared.config.request_body_timeout),
                timeout: call_timeout.map_or(shared.config.request_body_timeout, |t| {
                    t.min(shared.config.request_body_timeout)
                }),
                deadline: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use errmap::ErrorStatusExt as _;
    use std::convert::Infallible;
    use tokio::time::Instant;
    use tower::ServiceExt as _;

    type Full = http_body_util::Full<Bytes>;

    /// A request body that never arrives.
    struct Never;

    impl Body for Never {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Pending
        }
    }

    fn frame(message: &[u8]) -> Full {
        let mut data = vec![0];
        data.extend_from_slice(&(message.len() as u32).to_be_bytes());
        data.extend_from_slice(message);
        Full::new(Bytes::from(data))
    }

    fn code_of<B>(response: &http::Response<B>) -> Option<ErrorCode> {
        tonic::Status::from_header_map(response.headers())?.error_code()
    }

    fn request<B>(path: &str, body: B) -> http::Request<B> {
        http::Request::builder().uri(path).body(body).unwrap()
    }

    /// A service that answers OK, for `/slow` once `release` fires.
    fn service(
        release: Option<Arc<Notify>>,
    ) -> impl Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<String>,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        tower::service_fn(move |request: http::Request<tonic::body::Body>| {
            let release = release.clone().filter(|_| request.uri().path() == "/slow");
            async move {
                if let Some(release) = release {
                    release.notified().await;
                }
                Ok::<_, Infallible>(http::Response::new(String::from("ok")))
            }
        })
    }

    #[tokio::test]
    async fn a_request_that_never_arrives_holds_no_place() {
        let admission = Admission::new(1);
        let layered = admission.layer().layer(service(None));
        let stuck = tokio::spawn(layered.clone().oneshot(request("/a.B/C", Never)));
        while admission.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        // The only place is free: a whole request goes through.
        let response = layered
            .clone()
            .oneshot(request("/a.B/C", frame(b"x")))
            .await
            .unwrap();
        assert_eq!(code_of(&response), None);
        assert_eq!(admission.in_flight(), 1, "the stuck call is in flight");
        stuck.abort();
    }

    #[tokio::test]
    async fn past_the_intake_budget_the_oldest_intake_is_refused_first() {
        // Room for three heads of 10 KiB (each counted at four times its
        // size, plus 2 KiB), not four.
        let admission = Admission::with_config(AdmissionConfig {
            intake_memory: 140 * 1024,
            ..AdmissionConfig::default()
        });
        let layered = admission.layer().layer(service(None));
        let big = |n: usize| {
            let mut r = request("/a.B/C", Never);
            r.headers_mut().insert(
                "x-pad",
                HeaderValue::from_str(&"p".repeat(10 * 1024)).unwrap(),
            );
            r.headers_mut()
                .insert("x-n", HeaderValue::from_str(&n.to_string()).unwrap());
            r
        };
        let mut stuck = Vec::new();
        for n in 0..3 {
            stuck.push(tokio::spawn(layered.clone().oneshot(big(n))));
            while admission.intake_bytes() < (n + 1) * 40 * 1024 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(admission.intake_refused(), 0);
        // A fourth: the first (the oldest) is refused with 44, at once.
        let fourth = tokio::spawn(layered.clone().oneshot(big(3)));
        let first = tokio::time::timeout(Duration::from_secs(5), stuck.remove(0))
            .await
            .expect("the oldest intake is answered at once")
            .unwrap()
            .unwrap();
        assert_eq!(code_of(&first), Some(ErrorCode::ApiTooManyRequests));
        assert_eq!(admission.intake_refused(), 1);
        assert!(admission.intake_bytes() <= 140 * 1024);
        // A whole request still goes through beside them: never charged.
        let whole = layered
            .clone()
            .oneshot(request("/a.B/C", frame(b"x")))
            .await
            .unwrap();
        assert_eq!(code_of(&whole), None);
        for call in stuck {
            call.abort();
        }
        fourth.abort();
        // Aborted intakes give their bytes back.
        let deadline = Instant::now() + Duration::from_secs(5);
        while admission.intake_bytes() > 0 {
            assert!(
                Instant::now() < deadline,
                "{} bytes kept",
                admission.intake_bytes()
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_request_that_does_not_arrive_in_time_is_40() {
        let config = AdmissionConfig {
            request_body_timeout: Duration::from_millis(200),
            ..AdmissionConfig::default()
        };
        let admission = Admission::with_config(config);
        let response = admission
            .layer()
            .layer(service(None))
            .oneshot(request("/a.B/C", Never))
            .await
            .unwrap();
        assert_eq!(code_of(&response), Some(ErrorCode::ApiInvalidRequest));
        assert_eq!(admission.in_flight(), 0);
    }

    #[tokio::test]
    async fn the_limit_sheds_once_the_request_is_in_and_draining_refuses() {
        let admission = Admission::new(1);
        let release = Arc::new(Notify::new());
        let layered = admission.layer().layer(service(Some(release.clone())));
        let first = tokio::spawn(layered.clone().oneshot(request("/slow", frame(b"1"))));
        while admission.shared.places.available() == 1 {
            tokio::task::yield_now().await;
        }
        let shed = layered
            .clone()
            .oneshot(request("/a.B/C", frame(b"2")))
            .await
            .unwrap();
        assert_eq!(code_of(&shed), Some(ErrorCode::ApiTooManyRequests));

        admission.begin_drain();
        assert_eq!(admission.in_flight(), 1, "right while draining");
        let refused = layered
            .clone()
            .oneshot(request("/a.B/C", frame(b"3")))
            .await
            .unwrap();
        assert_eq!(code_of(&refused), Some(ErrorCode::ApiTryAgainLater));
        // Health checks are never refused.
        let check = layered
            .clone()
            .oneshot(request("/grpc.health.v1.Health/Check", frame(b"")))
            .await
            .unwrap();
        assert_eq!(code_of(&check), None);

        let drained = tokio::spawn({
            let admission = admission.clone();
            async move { admission.drained().await }
        });
        tokio::task::yield_now().await;
        assert!(!drained.is_finished(), "one call is still in flight");
        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap().into_body().inner, "ok");
        tokio::time::timeout(Duration::from_secs(5), drained)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(admission.in_flight(), 0);
    }

    #[tokio::test]
    async fn paths_the_routes_do_not_know_are_43_and_bad_frames_are_40() {
        let mut routes = RouteTable::new();
        routes
            .add_descriptors(errmap::pb::FILE_DESCRIPTOR_SET)
            .unwrap();
        routes.add_service("errmap.v1.ErrorCatalog");
        let config = AdmissionConfig {
            routes: Some(routes),
            max_request_size: 8,
            ..AdmissionConfig::default()
        };
        let layered = Admission::with_config(config).layer().layer(service(None));
        let call = |path: &'static str, body: Full| layered.clone().oneshot(request(path, body));
        let not_found = call("/errmap.v1.ErrorCatalog/Nope", frame(b""))
            .await
            .unwrap();
        assert_eq!(code_of(&not_found), Some(ErrorCode::ApiMethodNotFound));
        let other = call("/other.v1.Service/Method", frame(b"")).await.unwrap();
        assert_eq!(code_of(&other), Some(ErrorCode::ApiMethodNotFound));
        let big = call("/errmap.v1.ErrorCatalog/GetError", frame(&[8; 9]))
            .await
            .unwrap();
        assert_eq!(code_of(&big), Some(ErrorCode::ApiInvalidRequest));
        let cut = call(
            "/errmap.v1.ErrorCatalog/GetError",
            Full::new(Bytes::from_static(&[0, 0, 0, 0, 4, 8])),
        )
        .await
        .unwrap();
        assert_eq!(code_of(&cut), Some(ErrorCode::ApiInvalidRequest));
        let compressed = call(
            "/errmap.v1.ErrorCatalog/GetError",
            Full::new(Bytes::from_static(&[1, 0, 0, 0, 0])),
        )
        .await
        .unwrap();
        assert_eq!(code_of(&compressed), Some(ErrorCode::ApiInvalidRequest));
        let none = call("/errmap.v1.ErrorCatalog/GetError", Full::default())
            .await
            .unwrap();
        assert_eq!(
            code_of(&none),
            Some(ErrorCode::ApiInvalidRequest),
            "a unary call needs its message"
        );
        let fine = call("/errmap.v1.ErrorCatalog/GetError", frame(&[8, 11]))
            .await
            .unwrap();
        assert_eq!(code_of(&fine), None);
    }

    #[tokio::test]
    async fn a_callers_deadline_while_the_request_is_arriving_is_deadline_exceeded() {
        let admission = Admission::new(4);
        let request = http::Request::builder()
            .uri("/a.B/C")
            .header("grpc-timeout", "100m")
            .body(Never)
            .unwrap();
        let response = admission
            .layer()
            .layer(service(None))
            .oneshot(request)
            .await
            .unwrap();
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(admission.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_refused_future_answers_again_if_polled_again() {
        let admission = Admission::new(1);
        admission.begin_drain();
        let mut layered = admission.layer().layer(service(None));
        let mut future = std::pin::pin!(layered.call(request("/a.B/C", frame(b""))));
        let waker = futures_noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..2 {
            match future.as_mut().poll(&mut cx) {
                Poll::Ready(Ok(response)) => {
                    assert_eq!(code_of(&response), Some(ErrorCode::ApiTryAgainLater))
                }
                other => panic!("not answered: {:?}", other.is_pending()),
            }
        }
    }

    fn futures_noop_waker() -> std::task::Waker {
        std::task::Waker::noop().clone()
    }
}
