//! Catches a handler's panic and answers 42 `API_INTERNAL_SERVER_ERROR`
//! instead: the panic text is logged (escaped, at a bounded rate), never
//! sent.
//!
//! A panic is caught where it happens: when the service is called, while
//! its response future runs, and while a streaming response body is being
//! produced (the 42 then goes out in the trailers). The connection and the
//! other calls on it are unaffected.
//!
//! ```
//! use errmap_server::panic::CatchPanicLayer;
//! use errmap::ErrorStatusExt as _;
//! use tower::{ServiceBuilder, ServiceExt as _};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let service = ServiceBuilder::new()
//!     .layer(CatchPanicLayer::new())
//!     .service_fn(|_: http::Request<()>| async {
//!         if true {
//!             panic!("connection string postgres://admin:secret@db");
//!         }
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     });
//! let response = service.oneshot(http::Request::new(())).await.unwrap();
//! let status = tonic::Status::from_header_map(response.headers()).unwrap();
//! assert_eq!(status.error_code(), Some(errmap::ErrorCode::ApiInternalServerError));
//! assert!(!status.message().contains("secret"));
//! # }
//! ```
//!
//! A custom answer is a closure from the panic text to the status to send:
//!
//! ```
//! use errmap_server::panic::CatchPanicLayer;
//!
//! let layer = CatchPanicLayer::custom(|_panic: &str| {
//!     tonic::Status::from(errmap::ErrorCode::ApiTryAgainLater)
//! });
//! # drop(layer);
//! ```

use std::{
    any::Any,
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Uri};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Status;
use tower::{Layer, Service};

use errmap::{Catalog as _, ErrorCode};
use http::header::ACCEPT_LANGUAGE;

use crate::sanitize::{self, RateLimit};

/// Decides what a panic becomes.
pub trait PanicResponse: Clone + Send + Sync + 'static {
    /// The status to send for a panic with this text.
    fn status_for_panic(&self, panic: &str) -> Status;

    /// The status to send for a panic with this text, to a caller that
    /// sent this `accept-language` (see [`errmap::locale`]). By default
    /// [`status_for_panic`](Self::status_for_panic), whatever the locale.
    fn status_for_panic_in(&self, panic: &str, accept_language: Option<&HeaderValue>) -> Status {
        let _ = accept_language;
        self.status_for_panic(panic)
    }
}

impl<F> PanicResponse for F
where
    F: Fn(&str) -> Status + Clone + Send + Sync + 'static,
{
    fn status_for_panic(&self, panic: &str) -> Status {
        self(panic)
    }
}

/// The default answer: 42 `API_INTERNAL_SERVER_ERROR`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Internal;

impl PanicResponse for Internal {
    fn status_for_panic(&self, _panic: &str) -> Status {
        ErrorCode::ApiInternalServerError.to_status()
    }

    fn status_for_panic_in(&self, _panic: &str, accept_language: Option<&HeaderValue>) -> Status {
        ErrorCode::ApiInternalServerError.to_status_for(accept_language)
    }
}

/// Catches panics; see the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer<P = Internal> {
    answer: P,
}

impl CatchPanicLayer {
    /// Answers a panic with 42.
    pub fn new() -> Self {
        Self { answer: Internal }
    }
}

impl<P: PanicResponse> CatchPanicLayer<P> {
    /// Answers a panic with the status `answer` gives.
    pub fn custom(answer: P) -> Self {
        Self { answer }
    }
}

impl<S, P: Clone> Layer<S> for CatchPanicLayer<P> {
    type Service = CatchPanic<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic {
            inner,
            answer: self.answer.clone(),
        }
    }
}

/// The service made by [`CatchPanicLayer`].
#[derive(Debug, Clone, Copy)]
pub struct CatchPanic<S, P = Internal> {
    inner: S,
    answer: P,
}

impl<S> CatchPanic<S> {
    /// Wraps `inner`, answering a panic with 42.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            answer: Internal,
        }
    }
}

impl<S, P: PanicResponse> CatchPanic<S, P> {
    /// Wraps `inner`, answering a panic with the status `answer` gives.
    pub fn custom(inner: S, answer: P) -> Self {
        Self { inner, answer }
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

impl<S, P, ReqBody, ResBody> Service<http::Request<ReqBody>> for CatchPanic<S, P>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
    P: PanicResponse,
{
    type Response = http::Response<PanicBody<ResBody, P>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // Boxed: it goes on into the response body, which every layer
        // above moves on the way out.
        let caller = Box::new(Caller {
            uri: request.uri().clone(),
            accept_language: request.headers().get(ACCEPT_LANGUAGE).cloned(),
        });
        let kind = match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => Kind::Running { future },
            Err(panic) => Kind::Panicked {
                status: Some(answer(&self.answer, Some(&caller), panic)),
            },
        };
        ResponseFuture {
            kind,
            answer: self.answer.clone(),
            caller: Some(caller),
        }
    }
}

/// What the layer keeps of a request: its path for the log, and its
/// `accept-language` for the answer.
#[derive(Debug, Clone)]
struct Caller {
    uri: Uri,
    accept_language: Option<HeaderValue>,
}

pin_project! {
    /// The response future of [`CatchPanic`].
    pub struct ResponseFuture<F, P> {
        #[pin]
        kind: Kind<F>,
        answer: P,
        // Handed on to the body when the response comes.
        caller: Option<Box<Caller>>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Running { #[pin] future: F },
        Panicked { status: Option<Status> },
        Done,
    }
}

impl<F, P, ResBody, E> Future for ResponseFuture<F, P>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Body<Data = Bytes>,
    P: PanicResponse,
{
    type Output = Result<http::Response<PanicBody<ResBody, P>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.as_mut().project();
        let result = match this.kind.project() {
            KindProj::Running { future } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(result)) => result.map(|response| {
                        response.map(|inner| PanicBody {
                            inner: Some(inner),
                            guard: Some((this.answer.clone(), this.caller.take())),
                        })
                    }),
                    Err(panic) => Ok(status_response(answer(
                        this.answer,
                        this.caller.as_deref(),
                        panic,
                    ))),
                }
            }
            KindProj::Panicked { status } => {
                Ok(status_response(status.take().unwrap_or_else(|| {
                    ErrorCode::ApiInternalServerError.to_status_for(
                        this.caller
                            .as_ref()
                            .and_then(|c| c.accept_language.as_ref()),
                    )
                })))
            }
            KindProj::Done => {
                tracing::warn!("errmap CatchPanic future polled after completion");
                Ok(status_response(
                    ErrorCode::ApiInternalServerError.to_status(),
                ))
            }
        };
        self.project().kind.set(Kind::Done);
        Poll::Ready(result)
    }
}

/// A trailers-only response carrying `status`.
fn status_response<B, P>(status: Status) -> http::Response<PanicBody<B, P>> {
    let mut response = http::Response::new(PanicBody::empty());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    if status.add_header(response.headers_mut()).is_err() {
        let _ = ErrorCode::ApiInternalServerError
            .to_status()
            .add_header(response.headers_mut());
    }
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

static PANICS: RateLimit = RateLimit::new(20, Duration::from_secs(1));

/// Logs the panic and gives the status to send for it.
fn answer<P: PanicResponse>(
    answer: &P,
    caller: Option<&Caller>,
    panic: Box<dyn Any + Send>,
) -> Status {
    let text = panic_text(panic.as_ref());
    if let Some(suppressed) = PANICS.check() {
        tracing::error!(
            grpc.method = %sanitize::escape(caller.map_or("", |c| c.uri.path())),
            panic = %sanitize::escape(text),
            suppressed,
            "handler panicked"
        );
    }
    // The answer must not panic in turn; if it does, 42.
    let accept_language = caller.and_then(|c| c.accept_language.as_ref());
    catch_unwind(AssertUnwindSafe(|| {
        answer.status_for_panic_in(text, accept_language)
    }))
    .unwrap_or_else(|_| ErrorCode::ApiInternalServerError.to_status_for(accept_language))
}

pin_project! {
    /// The response body of [`CatchPanic`]: the handler's body, or the end
    /// of a response the layer made itself. A panic while the body is
    /// produced ends it with the answer in the trailers.
    pub struct PanicBody<B, P> {
        #[pin]
        inner: Option<B>,
        guard: Option<(P, Option<Box<Caller>>)>,
    }
}

impl<B, P> Default for PanicBody<B, P> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<B, P> PanicBody<B, P> {
    fn empty() -> Self {
        Self {
            inner: None,
            guard: None,
        }
    }
}

impl<B, P> Body for PanicBody<B, P>
where
    B: Body<Data = Bytes>,
    P: PanicResponse,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        match catch_unwind(AssertUnwindSafe(|| inner.poll_frame(cx))) {
            Ok(polled) => Poll::Ready(ready!(polled)),
            Err(panic) => {
                let status = match this.guard.take() {
                    Some((answer_with, caller)) => answer(&answer_with, caller.as_deref(), panic),
                    None => ErrorCode::ApiInternalServerError.to_status(),
                };
                this.inner.set(None);
                let mut trailers = HeaderMap::new();
                if status.add_header(&mut trailers).is_err() {
                    let _ = ErrorCode::ApiInternalServerError
                        .to_status()
                        .add_header(&mut trailers);
                }
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use errmap::ErrorStatusExt as _;
    use http_body_util::BodyExt as _;
    use std::convert::Infallible;
    use tower::{ServiceBuilder, ServiceExt as _};

    type Full = http_body_util::Full<Bytes>;

    fn code_of(headers: &HeaderMap) -> Option<ErrorCode> {
        Status::from_header_map(headers)?.error_code()
    }

    #[tokio::test]
    async fn a_panic_in_the_future_is_42_and_its_text_is_not_sent() {
        let service = ServiceBuilder::new()
            .layer(CatchPanicLayer::new())
            .service_fn(|_: http::Request<()>| async {
                if true {
                    panic!("secret-in-panic");
                }
                Ok::<_, Infallible>(http::Response::new(Full::default()))
            });
        let response = service.oneshot(http::Request::new(())).await.unwrap();
        assert_eq!(
            code_of(response.headers()),
            Some(ErrorCode::ApiInternalServerError)
        );
        assert!(!format!("{:?}", response.headers()).contains("secret-in-panic"));
    }

    /// A service whose `call` itself panics.
    #[derive(Clone)]
    struct PanicsInCall;

    impl Service<http::Request<()>> for PanicsInCall {
        type Response = http::Response<Full>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            panic!("in call")
        }
    }

    #[tokio::test]
    async fn a_panic_in_call_is_42_and_a_custom_answer_is_used() {
        let response = CatchPanicLayer::new()
            .layer(PanicsInCall)
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(
            code_of(response.headers()),
            Some(ErrorCode::ApiInternalServerError)
        );
        let custom = CatchPanicLayer::custom(|_: &str| Status::from(ErrorCode::ApiTryAgainLater))
            .layer(PanicsInCall)
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(code_of(custom.headers()), Some(ErrorCode::ApiTryAgainLater));
    }

    /// A body that yields one chunk, then panics.
    struct PanicsMidBody(bool);

    impl Body for PanicsMidBody {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.0 {
                panic!("mid-body secret");
            }
            self.0 = true;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first")))))
        }
    }

    #[tokio::test]
    async fn a_panic_mid_body_ends_the_body_with_42_in_the_trailers() {
        let service =
            CatchPanicLayer::new().layer(tower::service_fn(|_: http::Request<()>| async {
                Ok::<_, Infallible>(http::Response::new(PanicsMidBody(false)))
            }));
        let response = service.oneshot(http::Request::new(())).await.unwrap();
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(code_of(&trailers), Some(ErrorCode::ApiInternalServerError));
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"first"));
    }
}
