//! A client-side retry layer that obeys the server: `RetryInfo` first,
//! then `grpc-retry-pushback-ms`, then exponential backoff with full
//! jitter, always within the call's deadline and gRFC A6's retry
//! throttling.
//!
//! It wraps any tonic client transport (a `Channel`, say):
//!
//! ```no_run
//! use errmap_client::{RetryLayer, RetryPolicy};
//!
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051")
//!     .connect()
//!     .await?;
//! let channel = tower::ServiceBuilder::new()
//!     .layer(RetryLayer::new(RetryPolicy::default()))
//!     .service(channel);
//! let mut client = errmap::pb::error_catalog_client::ErrorCatalogClient::new(channel);
//! # let _ = &mut client;
//! # Ok(())
//! # }
//! ```
//!
//! What is retried: a failure whose status is a catalog status with a
//! retry delay (42, 44, 49), or whose gRPC code is in
//! [`RetryPolicy::retryable_codes`], unless its `grpc-retry-pushback-ms`
//! is not a non-negative integer: by gRFC A6 that asks for no retry at
//! all. Only answers that carry their status
//! in the headers (trailers-only) are retried: once response data has
//! arrived, the answer is the caller's. The request is buffered (up to
//! [`RetryPolicy::max_request_size`]) so that it can be sent again: the
//! layer is for unary and client-streaming calls, whose requests end; a
//! request over the limit fails before it is sent. Each retry carries
//! `grpc-previous-rpc-attempts`,
//! and the final answer carries the attempts made, in its extensions
//! ([`Attempts`]) and as `grpc-previous-rpc-attempts` in its metadata.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt as _;
use tonic::{body::Body, Code, Status};
use tower::{Layer, Service, ServiceExt as _};

use errmap::{details, headers, Catalogs};

/// The header a retry carries: how many attempts came before it (gRFC A6).
pub use errmap::headers::PREVIOUS_ATTEMPTS;

// Header names made once: a `&str` name is parsed and checked at each use.
const PREVIOUS_ATTEMPTS_NAME: HeaderName = HeaderName::from_static(PREVIOUS_ATTEMPTS);
use errmap::headers::GRPC_STATUS;
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// How the layer retries.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included. Default 3.
    pub max_attempts: u32,
    /// gRPC codes retried even without a catalog delay. Default
    /// UNAVAILABLE.
    pub retryable_codes: Vec<Code>,
    /// The first backoff when the server gives no delay. Default 100 ms.
    pub initial_backoff: Duration,
    /// The largest backoff. Default 5 s.
    pub max_backoff: Duration,
    /// The longest server-given delay waited; a longer one is cut to it.
    /// Default 30 s.
    pub max_server_delay: Duration,
    /// A6 throttling: the token bucket's size. Default 10.
    pub max_tokens: f64,
    /// A6 throttling: tokens a success gives back. Default 0.1.
    pub token_ratio: f64,
    /// The largest request buffered for a retry. Default 64 KiB.
    pub max_request_size: usize,
    /// The catalogs whose statuses are read. Default the auth API's.
    pub catalogs: Catalogs,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            retryable_codes: vec![Code::Unavailable],
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_server_delay: Duration::from_secs(30),
            max_tokens: 10.0,
            token_ratio: 0.1,
            max_request_size: 64 * 1024,
            catalogs: Catalogs::default(),
        }
    }
}

impl RetryPolicy {
    /// The policy with `max_attempts` attempts in all.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The policy with server delays cut to `cap`.
    pub fn with_max_server_delay(mut self, cap: Duration) -> Self {
        self.max_server_delay = cap;
        self
    }
}

/// The attempts a call took, in its response's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts(pub u32);

/// gRFC A6 throttling: a token bucket shared by every clone of a layer.
///
/// Tokens are counted in thousandths, the precision A6 gives them, in one
/// atomic: a success costs a compare-and-swap, never a lock.
#[derive(Debug)]
struct Throttle {
    /// Tokens left, in thousandths.
    milli_tokens: AtomicU64,
    /// The bucket's size, in thousandths.
    max: u64,
    /// What a success gives back, in thousandths.
    ratio: u64,
}

/// A token count in thousandths: non-negative and finite, else zero.
fn thousandths(tokens: f64) -> u64 {
    if tokens.is_finite() && tokens > 0.0 {
        (tokens * 1000.0).round().min(u64::MAX as f64) as u64
    } else {
        0
    }
}

impl Throttle {
    fn new(max_tokens: f64, token_ratio: f64) -> Self {
        let max = thousandths(max_tokens);
        Self {
            milli_tokens: AtomicU64::new(max),
            max,
            ratio: thousandths(token_ratio),
        }
    }

    fn failure(&self) {
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(1000))
            });
    }

    fn success(&self) {
        // A full bucket, the common case, is left alone: no write at all.
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t < self.max).then(|| t.saturating_add(self.ratio).min(self.max))
            });
    }

    /// Whether a retry may be sent: more than half the tokens left.
    fn allows(&self) -> bool {
        self.milli_tokens.load(Ordering::Relaxed) > self.max / 2
    }
}

/// Adds retries to a client transport; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: Arc<RetryPolicy>,
    throttle: Arc<Throttle>,
}

impl RetryLayer {
    /// A layer with `policy`; its clones share one throttle.
    pub fn new(policy: RetryPolicy) -> Self {
        let throttle = Arc::new(Throttle::new(policy.max_tokens, policy.token_ratio));
        Self {
            policy: Arc::new(policy),
            throttle,
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            policy: self.policy.clone(),
            throttle: self.throttle.clone(),
        }
    }
}

/// The service made by [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    policy: Arc<RetryPolicy>,
    throttle: Arc<Throttle>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> Service<http::Request<Body>> for Retry<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let policy = self.policy.clone();
        let throttle = self.throttle.clone();
        Box::pin(run(inner, policy, throttle, request))
    }
}

/// A small xorshift for the jitter; seeded per call from the clock.
fn jitter(max: Duration) -> Duration {
    static COUNTER: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut x = COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let nanos = max.as_nanos().min(u128::from(u64::MAX)) as u64;
    Duration::from_nanos(if nanos == 0 { 0 } else { x % nanos })
}

/// What the server said about retrying a trailers-only failure.
#[derive(Debug, PartialEq)]
struct Verdict {
    retryable: bool,
    /// A `grpc-retry-pushback-ms` that is not a non-negative integer: by
    /// gRFC A6, the server asks not to be retried at all, and that counts
    /// as a failure for the throttle.
    refused: bool,
    /// RetryInfo's delay, else the pushback.
    server_delay: Option<Duration>,
}

fn verdict(headers: &HeaderMap, policy: &RetryPolicy) -> Option<Verdict> {
    // An answer with data carries no status in its headers: the common
    // case, decided by one look-up.
    headers.get(GRPC_STATUS)?;
    let status = Status::from_header_map(headers)?;
    if status.code() == Code::Ok {
        return None;
    }
    let catalog = details::catalog_entry_of(&status, &policy.catalogs).ok();
    let retry_info = details::ErrorDetails::decode(status.details())
        .ok()
        .and_then(|d| d.retry_delay());
    let pushback = headers::retry_pushback(headers);
    let retryable = catalog.is_some_and(|(_, e)| e.retry_delay().is_some())
        || policy.retryable_codes.contains(&status.code());
    Some(Verdict {
        retryable,
        refused: pushback.is_err(),
        server_delay: retry_info.or(pushback.ok().flatten()),
    })
}

fn deadline_exceeded(attempts: u32) -> http::Response<Body> {
    let mut response =
        Status::deadline_exceeded("the server asked to retry later than the call's deadline")
            .into_http::<Body>();
    response.extensions_mut().insert(Attempts(attempts));
    response
        .headers_mut()
        .insert(PREVIOUS_ATTEMPTS_NAME, previous_attempts(attempts));
    response
}

/// `grpc-previous-rpc-attempts` for attempt number `attempt` (from 1): the
/// attempts before it. The first answer's `0` costs no allocation.
fn previous_attempts(attempt: u32) -> HeaderValue {
    match attempt.saturating_sub(1) {
        0 => HeaderValue::from_static("0"),
        n => HeaderValue::from(n),
    }
}

/// The buffered request, sent again as one data frame.
///
/// It tells no exact size and learns its end only when polled after the
/// frame, as tonic's own request body does. A body that declares its size
/// (`http_body_util::Full`) makes hyper add `content-length` and end the
/// stream on the data frame; through a real server that cost about 10% of
/// a call's throughput (`loadgen`, `errmap-retry/hit`), where this body
/// costs nothing the machine's noise shows (ratios of 0.985 and 1.033).
#[derive(Debug)]
struct Replay(Option<Bytes>);

impl Replay {
    fn new(bytes: Bytes) -> Self {
        Self((!bytes.is_empty()).then_some(bytes))
    }
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|bytes| Ok(http_body::Frame::data(bytes))))
    }
}

/// The whole request body, up to `limit` bytes; a larger one fails unsent.
///
/// A unary request is one data frame: it is kept as it came, with no copy
/// and no list of chunks. Only a request of several frames is joined.
async fn buffer(mut body: Body, limit: usize) -> Result<Bytes, BoxError> {
    let mut first: Option<Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    let mut size = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            // A request's trailers: gRPC clients send none, and none are
            // replayed.
            continue;
        };
        size = size.saturating_add(data.len());
        if size > limit {
            return Err("the request is over the retry buffer and was not sent".into());
        }
        match (&mut joined, first.take()) {
            (Some(all), _) => all.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(earlier)) => {
                let mut all = bytes::BytesMut::with_capacity(size);
                all.extend_from_slice(&earlier);
                all.extend_from_slice(&data);
                joined = Some(all);
            }
        }
    }
    Ok(match joined {
        Some(all) => all.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// One call, with its retries. A plain `fn` around an `async move` block,
/// not an `async fn`: an `async fn` keeps its arguments twice in its
/// future (as arguments and as locals), and this future is allocated for
/// every call.
fn run<S, B>(
    mut inner: S,
    policy: Arc<RetryPolicy>,
    throttle: Arc<Throttle>,
    request: http::Request<Body>,
) -> impl Future<Output = Result<http::Response<Body>, BoxError>> + Send
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // A timeout too far away to be an instant is no deadline at all.
    let deadline =
        headers::request_timeout(request.headers()).and_then(|t| Instant::now().checked_add(t));
    let (parts, body) = request.into_parts();
    async move {
        let bytes = buffer(body, policy.max_request_size).await?;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let inner = inner.ready().await.map_err(Into::into)?;
            let mut request =
                http::Request::from_parts(parts.clone(), Body::new(Replay::new(bytes.clone())));
            if attempt > 1 {
                request
                    .headers_mut()
                    .insert(PREVIOUS_ATTEMPTS_NAME, previous_attempts(attempt));
                if let Some(deadline) = deadline {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if let Ok(value) =
                        HeaderValue::from_str(&format!("{}m", left.as_millis().max(1)))
                    {
                        request.headers_mut().insert(GRPC_TIMEOUT, value);
                    }
                }
            }
            let response = inner.call(request).await.map_err(Into::into)?;
            let verdict = verdict(response.headers(), &policy);
            let finish = |response: http::Response<B>| {
                let mut response = response.map(Body::new);
                response.extensions_mut().insert(Attempts(attempt));
                response
                    .headers_mut()
                    .insert(PREVIOUS_ATTEMPTS_NAME, previous_attempts(attempt));
                response
            };
            let Some(verdict) = verdict else {
                throttle.success();
                return Ok(finish(response));
            };
            if verdict.refused {
                throttle.failure();
                return Ok(finish(response));
            }
            if !verdict.retryable {
                return Ok(finish(response));
            }
            throttle.failure();
            if attempt >= policy.max_attempts || !throttle.allows() {
                return Ok(finish(response));
            }
            let backoff = {
                let exp = policy
                    .initial_backoff
                    .saturating_mul(1u32 << (attempt - 1).min(16))
                    .min(policy.max_backoff);
                jitter(exp)
            };
            let delay = verdict
                .server_delay
                .map_or(backoff, |d| d.min(policy.max_server_delay));
            if let Some(deadline) = deadline {
                // A delay too long to add (a hostile RetryInfo under a cap
                // of `Duration::MAX`) ends after any deadline.
                if Instant::now()
                    .checked_add(delay)
                    .is_none_or(|wake| wake >= deadline)
                {
                    // Sleeping would pass the deadline: give up now.
                    return Ok(deadline_exceeded(attempt));
                }
            }
            // Boxed: the timer is only needed here, and would otherwise make
            // every call's future larger.
            Box::pin(tokio::time::sleep(delay)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", HeaderValue::from_static("250m"));
        assert_eq!(
            headers::request_timeout(&headers),
            Some(Duration::from_millis(250))
        );
        headers.insert("grpc-timeout", HeaderValue::from_static("3S"));
        assert_eq!(
            headers::request_timeout(&headers),
            Some(Duration::from_secs(3))
        );
        headers.insert("grpc-timeout", HeaderValue::from_static("x"));
        assert_eq!(headers::request_timeout(&headers), None);
    }

    /// Polls a future that never waits.
    fn now<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("an in-memory body never waits"),
        }
    }

    fn body_of(chunks: &[&'static [u8]]) -> Body {
        let frames: Vec<Result<http_body::Frame<Bytes>, Status>> = chunks
            .iter()
            .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c))))
            .collect();
        Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)))
    }

    #[test]
    fn one_frame_is_kept_as_it_came() {
        static FRAME: &[u8] = b"\0\0\0\0\x02hi";
        let bytes = now(buffer(body_of(&[FRAME]), 64)).unwrap();
        assert_eq!(&bytes[..], FRAME);
        assert_eq!(bytes.as_ptr(), FRAME.as_ptr(), "copied, not kept");
    }

    #[test]
    fn frames_are_joined_in_order() {
        let bytes = now(buffer(body_of(&[b"ab", b"cd", b"e"]), 64)).unwrap();
        assert_eq!(&bytes[..], b"abcde");
        assert_eq!(now(buffer(Body::empty(), 64)).unwrap().len(), 0);
    }

    #[test]
    fn a_request_over_the_limit_fails() {
        assert_eq!(now(buffer(body_of(&[b"abcd"]), 4)).unwrap().len(), 4);
        let error = now(buffer(body_of(&[b"abc", b"de"]), 4)).unwrap_err();
        assert!(
            error.to_string().contains("over the retry buffer"),
            "{error}"
        );
        assert!(now(buffer(body_of(&[b"abcde"]), 4)).is_err());
    }

    #[test]
    fn the_replay_sends_its_bytes_once() {
        use http_body::Body as _;
        let replay = Replay::new(Bytes::from_static(b"abc"));
        assert!(!replay.is_end_stream());
        assert_eq!(replay.size_hint().exact(), None, "no content-length");
        let again = now(buffer(Body::new(replay), 64)).unwrap();
        assert_eq!(&again[..], b"abc");
        let mut empty = Replay::new(Bytes::new());
        assert!(now(std::future::poll_fn(
            |cx| Pin::new(&mut empty).poll_frame(cx)
        ))
        .is_none());
    }

    fn trailers_only(code: &str, pushback: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_str(code).unwrap());
        if let Some(value) = pushback {
            headers.insert(headers::RETRY_PUSHBACK_MS, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn the_pushback_is_read_as_a6_says() {
        let policy = RetryPolicy::default();
        let unavailable = |pushback| verdict(&trailers_only("14", pushback), &policy).unwrap();
        assert_eq!(
            unavailable(None),
            Verdict {
                retryable: true,
                refused: false,
                server_delay: None
            }
        );
        assert_eq!(
            unavailable(Some("250")).server_delay,
            Some(Duration::from_millis(250))
        );
        assert!(!unavailable(Some("250")).refused);
        // Negative or unparseable: the server asks for no retry.
        for refusal in ["-1", "soon", "1.5", "", "99999999999999999999999"] {
            let v = unavailable(Some(refusal));
            assert!(v.refused, "{refusal:?}");
            assert_eq!(v.server_delay, None, "{refusal:?}");
        }
        // An OK answer, or one with data, gives no verdict.
        assert_eq!(verdict(&trailers_only("0", Some("-1")), &policy), None);
        assert_eq!(verdict(&HeaderMap::new(), &policy), None);
    }

    /// A server that counts its calls in `calls` and answers each with
    /// `answer()`.
    fn answering(
        calls: Arc<AtomicU64>,
        answer: impl Fn() -> http::Response<Body> + Clone,
    ) -> impl Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = std::convert::Infallible,
        Future = std::future::Ready<Result<http::Response<Body>, std::convert::Infallible>>,
    > + Clone {
        tower::service_fn(move |_: http::Request<Body>| {
            calls.fetch_add(1, Ordering::Relaxed);
            std::future::ready(Ok(answer()))
        })
    }

    /// A server that refuses every call with UNAVAILABLE and `pushback`.
    fn refusing(
        pushback: &'static str,
        calls: Arc<AtomicU64>,
    ) -> impl Clone
           + Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = std::convert::Infallible,
        Future = std::future::Ready<Result<http::Response<Body>, std::convert::Infallible>>,
    > {
        answering(calls, move || {
            let mut response = http::Response::new(Body::empty());
            *response.headers_mut() = trailers_only("14", Some(pushback));
            response
        })
    }

    /// One call through `service`.
    async fn call_once<S>(service: &mut S, request: http::Request<Body>) -> http::Response<Body>
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError>,
    {
        service.ready().await.unwrap().call(request).await.unwrap()
    }

    #[tokio::test]
    async fn a_refusing_pushback_stops_the_retries_and_costs_a_token() {
        let calls = Arc::new(AtomicU64::new(0));
        let layer = RetryLayer::new(RetryPolicy::default().with_max_attempts(5));
        let mut service = layer.layer(refusing("-1", calls.clone()));
        let response = call_once(&mut service, http::Request::new(Body::empty())).await;
        assert_eq!(calls.load(Ordering::Relaxed), 1, "retried a refusal");
        assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(1)));
        assert_eq!(layer.throttle.milli_tokens.load(Ordering::Relaxed), 9_000);

        // The same server with a valid pushback is retried, after it.
        let calls = Arc::new(AtomicU64::new(0));
        let layer = RetryLayer::new(RetryPolicy::default().with_max_attempts(3));
        let mut service = layer.layer(refusing("1", calls.clone()));
        let response = call_once(&mut service, http::Request::new(Body::empty())).await;
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(3)));
    }

    #[tokio::test]
    async fn huge_delays_and_timeouts_never_panic() {
        let policy = RetryPolicy::default().with_max_server_delay(Duration::MAX);
        let calls = Arc::new(AtomicU64::new(0));
        // Every answer is UNAVAILABLE with a RetryInfo of i64::MAX seconds.
        let forever = answering(calls.clone(), || {
            let details = tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(
                i64::MAX as u64,
            )));
            <Status as tonic_types::StatusExt>::with_error_details(
                Code::Unavailable,
                "slow down",
                details,
            )
            .into_http::<Body>()
        });
        let mut service = RetryLayer::new(policy).layer(forever);
        // A deadline the delay would pass: given up at once.
        let mut request = http::Request::new(Body::empty());
        request
            .headers_mut()
            .insert("grpc-timeout", HeaderValue::from_static("5S"));
        let response = call_once(&mut service, request).await;
        assert_eq!(
            Status::from_header_map(response.headers()).map(|s| s.code()),
            Some(Code::DeadlineExceeded)
        );
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        // A timeout too large for an instant is no deadline; the wait is
        // then the server's (cut to the cap), so the call is left waiting.
        let mut request = http::Request::new(Body::empty());
        request.headers_mut().insert(
            "grpc-timeout",
            HeaderValue::from_static("18446744073709551615H"),
        );
        let call = service.ready().await.unwrap().call(request);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), call)
                .await
                .is_err(),
            "a call waiting i64::MAX seconds answered"
        );
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn previous_attempts_count_from_zero() {
        assert_eq!(previous_attempts(1), "0");
        assert_eq!(previous_attempts(2), "1");
        assert_eq!(previous_attempts(12), "11");
    }

    #[test]
    fn throttle_counts_thousandths() {
        let throttle = Throttle::new(10.0, 0.1);
        // Six failures: 4 tokens left, under half.
        for _ in 0..6 {
            throttle.failure();
        }
        assert!(!throttle.allows());
        // Ten successes give back exactly one token (no float drift): 5.
        for _ in 0..10 {
            throttle.success();
        }
        assert_eq!(throttle.milli_tokens.load(Ordering::Relaxed), 5000);
        assert!(!throttle.allows(), "5 is not more than half of 10");
        throttle.success();
        assert!(throttle.allows());
        // Never above the size, never below zero.
        for _ in 0..1000 {
            throttle.success();
        }
        assert_eq!(throttle.milli_tokens.load(Ordering::Relaxed), 10_000);
        for _ in 0..100 {
            throttle.failure();
        }
        assert_eq!(throttle.milli_tokens.load(Ordering::Relaxed), 0);
        assert_eq!(Throttle::new(f64::NAN, -1.0).max, 0);
    }

    #[test]
    fn jitter_stays_under_its_bound() {
        for _ in 0..1000 {
            assert!(jitter(Duration::from_millis(10)) < Duration::from_millis(10));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn the_throttle_stops_retries_when_half_empty() {
        let throttle = Throttle::new(10.0, 0.1);
        for _ in 0..5 {
            assert!(throttle.allows());
            throttle.failure();
        }
        assert!(!throttle.allows());
        for _ in 0..10 {
            throttle.success();
        }
        assert!(throttle.allows());
    }
}
