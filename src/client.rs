//! A client-side retry layer that obeys the server: `RetryInfo` first,
//! then `grpc-retry-pushback-ms`, then exponential backoff with full
//! jitter, always within the call's deadline and gRFC A6's retry
//! throttling.
//!
//! It wraps any tonic client transport (a `Channel`, say):
//!
//! ```no_run
//! use errmap::client::{RetryLayer, RetryPolicy};
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
//! [`RetryPolicy::retryable_codes`]. Only answers that carry their status
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
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body_util::BodyExt as _;
use tonic::{body::Body, Code, Status};
use tower::{Layer, Service, ServiceExt as _};

use crate::{catalogs::Catalogs, details};

/// The header a retry carries: how many attempts came before it (gRFC A6).
pub const PREVIOUS_ATTEMPTS: &str = "grpc-previous-rpc-attempts";

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
#[derive(Debug)]
struct Throttle {
    tokens: Mutex<f64>,
    max: f64,
    ratio: f64,
}

impl Throttle {
    fn failure(&self) {
        if let Ok(mut t) = self.tokens.lock() {
            *t = (*t - 1.0).max(0.0);
        }
    }

    fn success(&self) {
        if let Ok(mut t) = self.tokens.lock() {
            *t = (*t + self.ratio).min(self.max);
        }
    }

    /// Whether a retry may be sent: more than half the tokens left.
    fn allows(&self) -> bool {
        self.tokens.lock().is_ok_and(|t| *t > self.max / 2.0)
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
        let throttle = Arc::new(Throttle {
            tokens: Mutex::new(policy.max_tokens),
            max: policy.max_tokens,
            ratio: policy.token_ratio,
        });
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

/// The `grpc-timeout` of a request, parsed.
fn request_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What the server said about retrying a trailers-only failure.
struct Verdict {
    retryable: bool,
    /// RetryInfo's delay, else the pushback.
    server_delay: Option<Duration>,
}

fn verdict(headers: &HeaderMap, policy: &RetryPolicy) -> Option<Verdict> {
    let status = Status::from_header_map(headers)?;
    if status.code() == Code::Ok {
        return None;
    }
    let catalog = details::catalog_entry_of(&status, &policy.catalogs).ok();
    let retry_info = details::ErrorDetails::decode(status.details())
        .ok()
        .and_then(|d| d.retry_delay());
    let pushback = headers
        .get(crate::status::RETRY_PUSHBACK_MS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis);
    let retryable = catalog.is_some_and(|(_, e)| e.retry_delay().is_some())
        || policy.retryable_codes.contains(&status.code());
    Some(Verdict {
        retryable,
        server_delay: retry_info.or(pushback),
    })
}

fn deadline_exceeded(attempts: u32) -> http::Response<Body> {
    let mut response =
        Status::deadline_exceeded("the server asked to retry later than the call's deadline")
            .into_http::<Body>();
    response.extensions_mut().insert(Attempts(attempts));
    if let Ok(value) = HeaderValue::from_str(&attempts.saturating_sub(1).to_string()) {
        response.headers_mut().insert(PREVIOUS_ATTEMPTS, value);
    }
    response
}

async fn run<S, B>(
    mut inner: S,
    policy: Arc<RetryPolicy>,
    throttle: Arc<Throttle>,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, BoxError>
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let deadline = request_timeout(request.headers()).map(|t| started + t);
    let (parts, body) = request.into_parts();
    // Buffer the request, up to the limit; a larger one is sent once.
    let limited = http_body_util::Limited::new(body, policy.max_request_size);
    let buffered: Option<Bytes> = match limited.collect().await {
        Ok(collected) => Some(collected.to_bytes()),
        Err(error) => {
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_none()
            {
                return Err(error);
            }
            None
        }
    };
    let Some(bytes) = buffered else {
        return Err("the request is over the retry buffer and was not sent".into());
    };
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let mut request = http::Request::from_parts(
            parts.clone(),
            Body::new(http_body_util::Full::new(bytes.clone())),
        );
        if attempt > 1 {
            if let Ok(value) = HeaderValue::from_str(&(attempt - 1).to_string()) {
                request.headers_mut().insert(PREVIOUS_ATTEMPTS, value);
            }
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if let Ok(value) = HeaderValue::from_str(&format!("{}m", left.as_millis().max(1))) {
                    request.headers_mut().insert("grpc-timeout", value);
                }
            }
        }
        let response = inner
            .ready()
            .await
            .map_err(Into::into)?
            .call(request)
            .await
            .map_err(Into::into)?;
        let verdict = verdict(response.headers(), &policy);
        let finish = |response: http::Response<B>| {
            let mut response = response.map(Body::new);
            response.extensions_mut().insert(Attempts(attempt));
            if let Ok(value) = HeaderValue::from_str(&attempt.saturating_sub(1).to_string()) {
                response.headers_mut().insert(PREVIOUS_ATTEMPTS, value);
            }
            response
        };
        let Some(verdict) = verdict else {
            throttle.success();
            return Ok(finish(response));
        };
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
            if Instant::now() + delay >= deadline {
                // Sleeping would pass the deadline: give up now.
                return Ok(deadline_exceeded(attempt));
            }
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", HeaderValue::from_static("250m"));
        assert_eq!(request_timeout(&headers), Some(Duration::from_millis(250)));
        headers.insert("grpc-timeout", HeaderValue::from_static("3S"));
        assert_eq!(request_timeout(&headers), Some(Duration::from_secs(3)));
        headers.insert("grpc-timeout", HeaderValue::from_static("x"));
        assert_eq!(request_timeout(&headers), None);
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
        let throttle = Throttle {
            tokens: Mutex::new(10.0),
            max: 10.0,
            ratio: 0.1,
        };
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
