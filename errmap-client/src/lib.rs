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

impl<S: Clone> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            shared: Arc::new(Shared {
                policy: self.policy.clone(),
                throttle: self.throttle.clone(),
                spare: std::sync::Mutex::new(inner.clone()),
            }),
            inner,
        }
    }
}

/// The service made by [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared<S>>,
}

/// What every call of a [`Retry`] and its clones shares: one reference
/// count per call, not three.
#[derive(Debug)]
struct Shared<S> {
    policy: Arc<RetryPolicy>,
    throttle: Arc<Throttle>,
    /// A clone of the service never called: a retry clones it, so that a
    /// call whose first answer is final never clones the service at all.
    spare: std::sync::Mutex<S>,
}

impl<S: Clone> Shared<S> {
    fn spare(&self) -> S {
        // A panic in another thread's clone leaves the service as it was.
        self.spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
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
        // A timeout too far away to be an instant is no deadline at all.
        let deadline =
            headers::request_timeout(request.headers()).and_then(|t| Instant::now().checked_add(t));
        let (parts, body) = request.into_parts();
        let mut gathered = Gathered::new(self.shared.policy.max_request_size);
        match gathered.now(body) {
            // The whole request is here (a unary call's always is): the
            // first attempt goes out now, through the service that was made
            // ready for it, and no clone of the service is made unless a
            // retry needs one.
            Ok(None) => {
                let bytes = gathered.bytes();
                let head = Head::of(&parts);
                let answer = self.inner.call(http::Request::from_parts(
                    parts,
                    Body::new(Replay::new(bytes.clone())),
                ));
                let call = Call {
                    service: None,
                    shared: self.shared.clone(),
                    head,
                    bytes,
                    deadline,
                };
                Box::pin(async move {
                    match call.settle(answer.await.map_err(Into::into)?) {
                        Ok(response) => Ok(response),
                        Err(retrying) => retrying.await,
                    }
                })
            }
            // The rest of the request comes later: the call takes the ready
            // service along, and leaves a clone for the next call.
            Ok(Some(body)) => {
                let clone = self.inner.clone();
                let mut service = std::mem::replace(&mut self.inner, clone);
                let shared = self.shared.clone();
                Box::pin(async move {
                    gathered.rest(body).await?;
                    let bytes = gathered.bytes();
                    let head = Head::of(&parts);
                    let request =
                        http::Request::from_parts(parts, Body::new(Replay::new(bytes.clone())));
                    let ready = service.ready().await.map_err(Into::into)?;
                    let response = ready.call(request).await.map_err(Into::into)?;
                    let call = Call {
                        service: Some(service),
                        shared,
                        head,
                        bytes,
                        deadline,
                    };
                    match call.settle(response) {
                        Ok(response) => Ok(response),
                        Err(retrying) => retrying.await,
                    }
                })
            }
            Err(error) => Box::pin(std::future::ready(Err(error))),
        }
    }
}

/// The head of a request, kept to send it again.
struct Head {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: HeaderMap,
    extensions: KeptExtensions,
}

/// A request's extensions, kept to send again.
enum KeptExtensions {
    /// Only tonic's [`tonic::GrpcMethod`], as a tonic client's call has:
    /// kept as it is, not as a map of boxes.
    Method(tonic::GrpcMethod<'static>),
    /// Any others.
    Cloned(http::Extensions),
}

impl Head {
    fn of(parts: &http::request::Parts) -> Self {
        let extensions = match parts.extensions.get::<tonic::GrpcMethod<'static>>() {
            Some(method) if parts.extensions.len() == 1 => KeptExtensions::Method(method.clone()),
            _ => KeptExtensions::Cloned(parts.extensions.clone()),
        };
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            extensions,
        }
    }

    /// The request again, with `body`.
    fn request(&self, body: Body) -> http::Request<Body> {
        let mut request = http::Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        match &self.extensions {
            KeptExtensions::Method(method) => {
                request.extensions_mut().insert(method.clone());
            }
            KeptExtensions::Cloned(extensions) => *request.extensions_mut() = extensions.clone(),
        }
        request
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

/// How many frames of a request body `Retry::call` reads before it returns.
const FRAMES_AT_ONCE: usize = 64;

/// The request body as it arrives, kept for replays: up to `limit` bytes;
/// a larger one fails unsent.
///
/// A unary request is one data frame: it is kept as it came, with no copy
/// and no list of chunks. Only a request of several frames is joined.
struct Gathered {
    first: Option<Bytes>,
    joined: Option<bytes::BytesMut>,
    size: usize,
    limit: usize,
}

impl Gathered {
    fn new(limit: usize) -> Self {
        Self {
            first: None,
            joined: None,
            size: 0,
            limit,
        }
    }

    /// Keeps one frame of the body.
    fn frame(&mut self, frame: http_body::Frame<Bytes>) -> Result<(), BoxError> {
        let Ok(data) = frame.into_data() else {
            // A request's trailers: gRPC clients send none, and none are
            // replayed.
            return Ok(());
        };
        self.size = self.size.saturating_add(data.len());
        if self.size > self.limit {
            return Err("the request is over the retry buffer and was not sent".into());
        }
        match (&mut self.joined, self.first.take()) {
            (Some(all), _) => all.extend_from_slice(&data),
            (None, None) => self.first = Some(data),
            (None, Some(earlier)) => {
                let mut all = bytes::BytesMut::with_capacity(self.size);
                all.extend_from_slice(&earlier);
                all.extend_from_slice(&data);
                self.joined = Some(all);
            }
        }
        Ok(())
    }

    /// Keeps what the body has ready now, without waiting: `None` when it
    /// has ended, else the body, whose rest comes later. At most
    /// [`FRAMES_AT_ONCE`] frames are read here: a body that keeps yielding
    /// (empty frames, say, which the size limit never stops) is read on in
    /// the call's future, not inside `call`.
    fn now(&mut self, mut body: Body) -> Result<Option<Body>, BoxError> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..FRAMES_AT_ONCE {
            match http_body::Body::poll_frame(Pin::new(&mut body), &mut cx) {
                Poll::Ready(Some(frame)) => self.frame(frame?)?,
                Poll::Ready(None) => return Ok(None),
                Poll::Pending => return Ok(Some(body)),
            }
        }
        Ok(Some(body))
    }

    /// Keeps the rest of the body.
    async fn rest(&mut self, mut body: Body) -> Result<(), BoxError> {
        while let Some(frame) = body.frame().await {
            self.frame(frame?)?;
        }
        Ok(())
    }

    /// The whole body.
    fn bytes(self) -> Bytes {
        match self.joined {
            Some(all) => all.freeze(),
            None => self.first.unwrap_or_default(),
        }
    }
}

/// The whole request body, up to `limit` bytes; a larger one fails unsent.
#[cfg(test)]
async fn buffer(body: Body, limit: usize) -> Result<Bytes, BoxError> {
    let mut gathered = Gathered::new(limit);
    gathered.rest(body).await?;
    Ok(gathered.bytes())
}

/// What a call keeps for its retries.
struct Call<S> {
    /// The service retries go through: none until one is needed.
    service: Option<S>,
    shared: Arc<Shared<S>>,
    head: Head,
    bytes: Bytes,
    deadline: Option<Instant>,
}

/// A call's retries, to await.
type Retrying = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

impl<S> Call<S> {
    /// What follows the first attempt's `response`: the call's answer, or
    /// its retries. A plain `fn`, not an `async fn`: the retries are a
    /// future of their own, boxed only when one happens, so that the future
    /// of a call answered at once stays small.
    fn settle<B>(self, response: http::Response<B>) -> Result<http::Response<Body>, Retrying>
    where
        S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        match next_step(response, 1, &self.shared, self.deadline) {
            Step::Done(response) => Ok(response),
            Step::Wait(delay) => Err(Box::pin(retries(self, delay))),
        }
    }
}

/// After an answer: the call's answer, or a wait before the next attempt.
enum Step {
    Done(http::Response<Body>),
    Wait(Duration),
}

/// What follows answer number `attempt`.
fn next_step<S, B>(
    response: http::Response<B>,
    attempt: u32,
    shared: &Shared<S>,
    deadline: Option<Instant>,
) -> Step
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let policy = &shared.policy;
    let throttle = &shared.throttle;
    let finish = |response: http::Response<B>| {
        let mut response = response.map(Body::new);
        response.extensions_mut().insert(Attempts(attempt));
        response
            .headers_mut()
            .insert(PREVIOUS_ATTEMPTS_NAME, previous_attempts(attempt));
        Step::Done(response)
    };
    let Some(verdict) = verdict(response.headers(), policy) else {
        throttle.success();
        return finish(response);
    };
    if verdict.refused {
        throttle.failure();
        return finish(response);
    }
    if !verdict.retryable {
        return finish(response);
    }
    throttle.failure();
    if attempt >= policy.max_attempts || !throttle.allows() {
        return finish(response);
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
        // A delay too long to add (a hostile RetryInfo under a cap of
        // `Duration::MAX`) ends after any deadline.
        if Instant::now()
            .checked_add(delay)
            .is_none_or(|wake| wake >= deadline)
        {
            // Sleeping would pass the deadline: give up now.
            return Step::Done(deadline_exceeded(attempt));
        }
    }
    Step::Wait(delay)
}

/// A call's retries, after its first answer asked for one in `delay`.
async fn retries<S, B>(
    mut call: Call<S>,
    mut delay: Duration,
) -> Result<http::Response<Body>, BoxError>
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut attempt: u32 = 1;
    loop {
        tokio::time::sleep(delay).await;
        attempt += 1;
        let shared = &call.shared;
        let service = call.service.get_or_insert_with(|| shared.spare());
        let ready = service.ready().await.map_err(Into::into)?;
        let mut request = call
            .head
            .request(Body::new(Replay::new(call.bytes.clone())));
        request
            .headers_mut()
            .insert(PREVIOUS_ATTEMPTS_NAME, previous_attempts(attempt));
        if let Some(deadline) = call.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Ok(value) = HeaderValue::from_str(&format!("{}m", left.as_millis().max(1))) {
                request.headers_mut().insert(GRPC_TIMEOUT, value);
            }
        }
        let response = ready.call(request).await.map_err(Into::into)?;
        match next_step(response, attempt, &call.shared, call.deadline) {
            Step::Done(response) => return Ok(response),
            Step::Wait(next) => delay = next,
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

    /// What a [`Recording`] service saw of one request.
    #[derive(Debug, Clone, PartialEq)]
    struct Seen {
        method: http::Method,
        uri: http::Uri,
        headers: HeaderMap,
        grpc_method: Option<(String, String)>,
        tag: Option<&'static str>,
        body: Bytes,
    }

    /// A service that counts its clones, keeps what each request carried,
    /// and answers UNAVAILABLE (with a 1 ms pushback) `failures` times,
    /// then OK.
    struct Recording {
        clones: Arc<AtomicU64>,
        seen: Arc<std::sync::Mutex<Vec<Seen>>>,
        failures: u64,
    }

    impl Clone for Recording {
        fn clone(&self) -> Self {
            self.clones.fetch_add(1, Ordering::Relaxed);
            Self {
                clones: self.clones.clone(),
                seen: self.seen.clone(),
                failures: self.failures,
            }
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Tag(&'static str);

    impl Service<http::Request<Body>> for Recording {
        type Response = http::Response<Body>;
        type Error = BoxError;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            let seen = self.seen.clone();
            let failures = self.failures;
            Box::pin(async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await?.to_bytes();
                let mut seen = seen.lock().unwrap();
                seen.push(Seen {
                    method: parts.method,
                    uri: parts.uri,
                    headers: parts.headers,
                    grpc_method: parts
                        .extensions
                        .get::<tonic::GrpcMethod<'static>>()
                        .map(|m| (m.service().to_owned(), m.method().to_owned())),
                    tag: parts.extensions.get::<Tag>().map(|t| t.0),
                    body,
                });
                let mut response = http::Response::new(Body::empty());
                if seen.len() as u64 <= failures {
                    *response.headers_mut() = trailers_only("14", Some("1"));
                }
                Ok(response)
            })
        }
    }

    fn recording(failures: u64) -> (Recording, Arc<AtomicU64>, Arc<std::sync::Mutex<Vec<Seen>>>) {
        let clones = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let service = Recording {
            clones: clones.clone(),
            seen: seen.clone(),
            failures,
        };
        (service, clones, seen)
    }

    /// A request as a tonic client makes one, with one more extension if
    /// `tag` is given.
    fn grpc_request(body: Body, tag: Option<&'static str>) -> http::Request<Body> {
        let mut request = http::Request::new(body);
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = http::Uri::from_static("http://127.0.0.1/pkg.Svc/Do");
        request
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        request
            .headers_mut()
            .insert("authorization", HeaderValue::from_static("Bearer t"));
        request
            .extensions_mut()
            .insert(tonic::GrpcMethod::new("pkg.Svc", "Do"));
        if let Some(tag) = tag {
            request.extensions_mut().insert(Tag(tag));
        }
        request
    }

    #[tokio::test]
    async fn a_final_first_answer_clones_no_service() {
        let (service, clones, seen) = recording(0);
        let mut service = RetryLayer::new(RetryPolicy::default()).layer(service);
        let made = clones.load(Ordering::Relaxed);
        for _ in 0..3 {
            let request = grpc_request(body_of(&[b"\0\0\0\0\x01x"]), None);
            let response = call_once(&mut service, request).await;
            assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(1)));
            assert_eq!(response.headers()[PREVIOUS_ATTEMPTS], "0");
        }
        assert_eq!(
            clones.load(Ordering::Relaxed),
            made,
            "a call cloned the service"
        );
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_retry_sends_the_same_head_extensions_and_body() {
        for tag in [None, Some("kept")] {
            let (service, clones, seen) = recording(2);
            let mut service = RetryLayer::new(RetryPolicy::default()).layer(service);
            let made = clones.load(Ordering::Relaxed);
            let request = grpc_request(body_of(&[b"\0\0\0\0\x02", b"hi"]), tag);
            let response = call_once(&mut service, request).await;
            assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(3)));
            assert_eq!(response.headers()[PREVIOUS_ATTEMPTS], "2");
            // One clone of the spare for both retries.
            assert_eq!(clones.load(Ordering::Relaxed), made + 1);
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 3);
            for (i, s) in seen.iter().enumerate() {
                assert_eq!(s.method, http::Method::POST);
                assert_eq!(s.uri, "http://127.0.0.1/pkg.Svc/Do");
                assert_eq!(s.headers["authorization"], "Bearer t");
                assert_eq!(s.headers["content-type"], "application/grpc");
                assert_eq!(
                    s.headers
                        .get(PREVIOUS_ATTEMPTS)
                        .map(|v| v.to_str().unwrap()),
                    (i > 0).then(|| i.to_string()).as_deref(),
                    "attempt {i}"
                );
                assert_eq!(
                    s.grpc_method,
                    Some(("pkg.Svc".to_owned(), "Do".to_owned())),
                    "attempt {i}"
                );
                assert_eq!(s.tag, tag, "attempt {i}");
                assert_eq!(&s.body[..], b"\0\0\0\0\x02hi", "attempt {i}");
            }
        }
    }

    #[tokio::test]
    async fn a_body_that_comes_later_is_sent_and_replayed() {
        let (service, _, seen) = recording(1);
        let mut service = RetryLayer::new(RetryPolicy::default()).layer(service);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Status>>(2);
        let body = Body::new(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        let call = tokio::spawn(async move {
            let response = call_once(&mut service, grpc_request(body, None)).await;
            response.extensions().get::<Attempts>().copied()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"late"))))
            .await
            .unwrap();
        drop(tx);
        assert_eq!(call.await.unwrap(), Some(Attempts(2)));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|s| &s.body[..] == b"late"));
    }

    #[tokio::test]
    async fn a_body_that_keeps_yielding_is_read_on_in_the_future() {
        // A ready body of three frames is read whole inside `call`.
        let mut gathered = Gathered::new(64);
        assert!(gathered
            .now(body_of(&[b"a", b"b", b"c"]))
            .unwrap()
            .is_none());
        assert_eq!(&gathered.bytes()[..], b"abc");
        // One of many empty frames (which the size limit never stops) is
        // left for the call's future after `FRAMES_AT_ONCE`, and still sent
        // whole.
        let mut frames: Vec<&'static [u8]> = vec![b""; FRAMES_AT_ONCE * 3];
        frames.push(b"end");
        let mut gathered = Gathered::new(64);
        assert!(gathered.now(body_of(&frames)).unwrap().is_some());
        let (service, _, seen) = recording(0);
        let mut service = RetryLayer::new(RetryPolicy::default()).layer(service);
        let response = call_once(&mut service, grpc_request(body_of(&frames), None)).await;
        assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(1)));
        assert_eq!(&seen.lock().unwrap()[0].body[..], b"end");
    }
}
