//! Serving accepted connections with hyper: HTTP/2 and HTTP/1.1 on one
//! port, each connection with its calls counted, so that the listener can
//! evict the idlest, and each shut down gracefully on a signal.
//!
//! The settings that tonic's own server does not expose for HTTP/1.1 are
//! set here:
//!
//! - one deadline for a whole request head, the handshake deadline (5 s by
//!   default), which is also how long an HTTP/1.1 keep-alive connection
//!   may stay idle between requests;
//! - one header budget, equal to HTTP/2's header list size (16 KiB by
//!   default; hyper's HTTP/1.1 read buffer cannot be under 8 KiB): a head
//!   over it is answered 431 (with the body the listener was given) and
//!   the connection closes;
//! - requests of a connection are answered one at a time and in order;
//!   the pipelined ones wait, unparsed, within that same buffer, and at
//!   most [`MAX_PIPELINED`] are answered in a row without a new read: the
//!   last of them closes the connection.
//!
//! Every request gets the connection's [`PeerInfo`] in its extensions, and
//! a `grpc-timeout` is enforced: a call still running at its deadline is
//! dropped and answered `CANCELLED` "Timeout expired", as tonic's own
//! server loop answers it. This is a backstop, [`DEADLINE_BACKSTOP`] after
//! the deadline: a call whose request is still arriving is answered
//! `DEADLINE_EXCEEDED` by the intake at the deadline itself, and a stock
//! client raises `DEADLINE_EXCEEDED` from its own timer; neither may lose a
//! race to this answer.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::conn::auto,
    service::{TowerToHyperService, TowerToHyperServiceFuture},
};
use pin_project_lite::pin_project;
use tokio::{sync::watch, time::Sleep};
use tonic::codegen::tokio_stream::StreamExt as _;
use tower::Service;

use crate::{
    listener::{ConnectionState, Incoming},
    tls::PeerInfo,
};

/// HTTP/1.1 requests a connection may have answered in a row while more
/// were already waiting (pipelined, with no read between them); the last
/// of them is answered with `connection: close`, and the connection closes
/// after it. A peer that pipelines and never reads so gets at most this
/// many answers computed, instead of as many as the socket buffers hold.
pub const MAX_PIPELINED: u64 = 16;

/// How long an evicted or shut-down connection may take to close after it
/// was asked to; then it is dropped.
pub const CLOSE_DEADLINE: Duration = Duration::from_secs(1);

/// The protocol settings of served connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProtocolConfig {
    /// Whether HTTP/1.1 is served beside HTTP/2.
    pub http1: bool,
    /// Whether HTTP/2 is served.
    pub http2: bool,
    /// The deadline for a whole HTTP/1.1 request head, and for an idle
    /// keep-alive connection's next one.
    pub head_timeout: Duration,
    /// The header budget of either protocol, in bytes.
    pub max_header_size: u32,
    /// HTTP/2: streams open at once per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2: ping interval of an idle connection.
    pub keepalive_interval: Duration,
    /// HTTP/2: how long a ping may go unanswered.
    pub keepalive_timeout: Duration,
    /// HTTP/2: the rapid-reset guard.
    pub max_pending_accept_reset_streams: usize,
    /// HTTP/2: resets caused by the peer's errors before GOAWAY.
    pub max_local_error_reset_streams: usize,
    /// HTTP/2: the largest frame.
    pub max_frame_size: u32,
}

impl Default for ProtocolConfig {
    /// The values `errmap serve` starts with.
    fn default() -> Self {
        Self {
            http1: true,
            http2: true,
            head_timeout: Duration::from_secs(5),
            max_header_size: 16 * 1024,
            max_concurrent_streams: 256,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_pending_accept_reset_streams: 100,
            max_local_error_reset_streams: 1024,
            max_frame_size: 16 * 1024,
        }
    }
}

/// The executor of HTTP/2 streams: each stream's future is polled once on
/// the connection's own task, and spawned only if it has to wait.
///
/// So a stream's first step (its layers, the intake budget's charge, a
/// request that is whole, most unary calls entirely) is paid for by the
/// connection that opened it, in that connection's turn. A connection that
/// opens thousands of streams cannot queue thousands of tasks ahead of
/// everyone else's; and the intake budget sees each stream as it arrives,
/// not when a task queue reaches it.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstPollInline;

impl<F> hyper::rt::Executor<F> for FirstPollInline
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        let mut future = Box::pin(future);
        // A no-op waker is enough: a spawned task is always polled once,
        // and that poll registers its own waker wherever this one was.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if future.as_mut().poll(&mut cx).is_pending() {
            tokio::spawn(future);
        }
    }
}

impl ProtocolConfig {
    fn builder(&self) -> auto::Builder<FirstPollInline> {
        let mut builder = auto::Builder::new(FirstPollInline);
        if !self.http1 {
            builder = builder.http2_only();
        } else if !self.http2 {
            builder = builder.http1_only();
        }
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(self.head_timeout)
            // hyper's floor for its read buffer is 8 KiB.
            .max_buf_size((self.max_header_size as usize).max(8 * 1024));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_concurrent_streams)
            .keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout)
            .max_pending_accept_reset_streams(self.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(self.max_local_error_reset_streams)
            .max_frame_size(self.max_frame_size)
            .max_header_list_size(self.max_header_size);
        builder
    }
}

/// Serves every connection of `incoming` with `service` until `shutdown`
/// completes; then stops accepting, asks every connection to close
/// gracefully (GOAWAY on HTTP/2, a close after the current answer on
/// HTTP/1.1), and waits for them to close.
pub async fn serve<S, B>(
    mut incoming: Incoming,
    protocol: &ProtocolConfig,
    service: S,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = protocol.builder();
    let (closing_tx, closing) = watch::channel(false);
    // Dropping the set (the server's grace period is over) drops every
    // connection still open.
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let connection = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            next = incoming.next() => match next {
                Some(Ok(connection)) => connection,
                Some(Err(_)) => continue,
                None => break,
            },
        };
        let state = connection.state();
        let service = PerConnection {
            inner: service.clone(),
            peer: connection.peer_info(),
            state: state.clone(),
        };
        let builder = builder.clone();
        let mut closing = closing.clone();
        tasks.spawn(async move {
            let hyper_service = InPlace::new(service);
            let served = builder.serve_connection(TokioIo::new(connection), hyper_service);
            tokio::pin!(served);
            let mut asked = false;
            // Armed on eviction only: never polled before, so it takes no
            // place in the timer until then.
            let mut evicted = false;
            let close_by = tokio::time::sleep(CLOSE_DEADLINE);
            tokio::pin!(close_by);
            loop {
                tokio::select! {
                    result = served.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(error = %crate::sanitize::escape(&error.to_string()), "connection ended with an error");
                        }
                        return;
                    }
                    () = state.evicted(), if !asked => {
                        tracing::debug!("idle connection yields its place");
                        served.as_mut().graceful_shutdown();
                        asked = true;
                        evicted = true;
                        close_by.as_mut().reset(tokio::time::Instant::now() + CLOSE_DEADLINE);
                    }
                    _ = closing.wait_for(|closing| *closing), if !asked => {
                        served.as_mut().graceful_shutdown();
                        asked = true;
                        // Calls in flight finish within the server's grace
                        // period, which drops this task when it is over.
                    }
                    () = close_by.as_mut(), if evicted => return,
                }
            }
        });
    }
    let closed = incoming.stop();
    let _ = closing_tx.send(true);
    while tasks.join_next().await.is_some() {}
    // TLS handshakes still under way end by their deadline.
    closed.all_closed().await;
}

/// A connection's service as hyper calls it: readied and called in place,
/// one call at a time on the connection's task, where hyper's own adapter
/// clones the whole stack for every call (a dozen reference counts that
/// every call on every thread writes). When the service is not ready at
/// once, the call waits for it on a clone, as hyper's adapter does.
pub(crate) struct InPlace<S> {
    service: std::cell::RefCell<S>,
}

impl<S> InPlace<S> {
    pub(crate) fn new(service: S) -> Self {
        Self {
            service: std::cell::RefCell::new(service),
        }
    }
}

impl<S, R> hyper::service::Service<R> for InPlace<S>
where
    S: Service<R> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = InPlaceFuture<S::Future, TowerToHyperServiceFuture<S, R>>;

    fn call(&self, request: R) -> Self::Future {
        // Never borrowed across a call: `call` does not re-enter.
        let mut service = self.service.borrow_mut();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match service.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => InPlaceFuture::Called {
                future: service.call(request),
            },
            _ => InPlaceFuture::Waiting {
                future: hyper::service::Service::call(
                    &TowerToHyperService::new(service.clone()),
                    request,
                ),
            },
        }
    }
}

pin_project! {
    /// The response future of [`InPlace`].
    #[project = InPlaceProj]
    pub(crate) enum InPlaceFuture<F, W> {
        Called { #[pin] future: F },
        Waiting { #[pin] future: W },
    }
}

impl<F, W, T> Future for InPlaceFuture<F, W>
where
    F: Future<Output = T>,
    W: Future<Output = T>,
{
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.project() {
            InPlaceProj::Called { future } => future.poll(cx),
            InPlaceProj::Waiting { future } => future.poll(cx),
        }
    }
}

/// The per-connection wrapper around the server's service: peer info in,
/// calls counted, `grpc-timeout` enforced.
#[derive(Debug, Clone)]
pub(crate) struct PerConnection<S> {
    inner: S,
    peer: PeerInfo,
    state: Arc<ConnectionState>,
}

impl<S> PerConnection<S> {
    /// `inner` as a connection with no peer, that no listener accepted,
    /// calls it ([`crate::measure`]).
    pub(crate) fn detached(inner: S) -> Self {
        Self {
            inner,
            peer: PeerInfo {
                tcp: tonic::transport::server::TcpConnectInfo {
                    local_addr: None,
                    remote_addr: None,
                },
                identity: None,
            },
            state: ConnectionState::detached(),
        }
    }
}

/// A call counted on its connection until its answer is done.
#[derive(Debug)]
struct CallGuard(Arc<ConnectionState>);

impl CallGuard {
    fn new(state: &Arc<ConnectionState>) -> Self {
        state.call_started();
        Self(state.clone())
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.call_ended();
    }
}

impl<S, B, ReqBody> Service<http::Request<ReqBody>> for PerConnection<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>, Error = Infallible>,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<CountedBody<B>>;
    type Error = Infallible;
    type Future = CallFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let guard = CallGuard::new(&self.state);
        let close = request.version() <= http::Version::HTTP_11
            && self.state.http1_request_taken() >= MAX_PIPELINED - 1;
        if close {
            tracing::debug!("{MAX_PIPELINED} pipelined requests in a row; closing after this one");
        }
        let timeout = errmap::headers::request_timeout(request.headers())
            .map(|t| t.saturating_add(DEADLINE_BACKSTOP));
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(self.peer.clone());
        let request = http::Request::from_parts(parts, tonic::body::Body::new(body));
        CallFuture {
            future: self.inner.call(request),
            timeout,
            deadline: None,
            guard: Some(guard),
            close,
        }
    }
}

/// How long after a call's `grpc-timeout` the connection drops it, if
/// nothing answered by then (see the module docs). Without it, the two
/// timers of one deadline raced: this one is set a moment before the
/// intake's, and under load it fired first, turning the intake's
/// `DEADLINE_EXCEEDED` into `CANCELLED`.
pub const DEADLINE_BACKSTOP: Duration = Duration::from_millis(20);

pin_project! {
    /// The response future of [`PerConnection`].
    pub(crate) struct CallFuture<F> {
        #[pin]
        future: F,
        // The caller's `grpc-timeout` plus the backstop, and its timer,
        // made the first time the call has to wait: most unary calls are
        // answered when first polled, right after they were made.
        timeout: Option<Duration>,
        deadline: Option<Pin<Box<Sleep>>>,
        guard: Option<CallGuard>,
        // Whether the answer closes the connection (too deep a pipeline).
        close: bool,
    }
}

impl<F, B> Future for CallFuture<F>
where
    F: Future<Output = Result<http::Response<B>, Infallible>>,
{
    type Output = Result<http::Response<CountedBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.future.poll(cx) {
            let guard = this.guard.take();
            let close = *this.close;
            return Poll::Ready(result.map(|mut response| {
                if close {
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                response.map(|inner| CountedBody {
                    inner: Inner::Body { body: inner },
                    guard,
                })
            }));
        }
        if let Some(timeout) = *this.timeout {
            let deadline = this
                .deadline
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            ready!(deadline.as_mut().poll(cx));
            let guard = this.guard.take();
            // As tonic's own server loop answered it.
            let (parts, _) = tonic::Status::cancelled("Timeout expired")
                .into_http::<()>()
                .into_parts();
            return Poll::Ready(Ok(http::Response::from_parts(
                parts,
                CountedBody {
                    inner: Inner::Empty,
                    guard,
                },
            )));
        }
        Poll::Pending
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        Body { #[pin] body: B },
        Empty,
    }
}

pin_project! {
    /// A response body that keeps its call counted on the connection until
    /// it is done or dropped.
    pub(crate) struct CountedBody<B> {
        #[pin]
        inner: Inner<B>,
        guard: Option<CallGuard>,
    }
}

impl<B> Body for CountedBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = match this.inner.project() {
            InnerProj::Body { body } => body.poll_frame(cx),
            InnerProj::Empty => Poll::Ready(None),
        };
        if let Poll::Ready(None) = polled {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Body { body } => body.is_end_stream(),
            Inner::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Body { body } => body.size_hint(),
            Inner::Empty => SizeHint::with_exact(0),
        }
    }
}
