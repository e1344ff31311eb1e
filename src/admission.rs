//! Admission control: a concurrency limit that sheds load instead of
//! queueing it, and the drain phase of a graceful shutdown.
//!
//! - When `limit` calls are in flight, the next call is answered at once
//!   with 44 `API_TOO_MANY_REQUESTS` and its `RetryInfo`.
//! - Once [`Admission::begin_drain`] is called, new calls are answered with
//!   49 `API_TRY_AGAIN_LATER` and its `RetryInfo`, while the calls in flight
//!   finish; [`Admission::drained`] completes when none is left.
//!
//! Paths under an exempt prefix (by default health and reflection, so that
//! load balancers keep seeing the server's state) are neither counted nor
//! refused.
//!
//! ```
//! use errmap::admission::Admission;
//! use errmap::layer::ErrorLayer;
//! use tower::ServiceBuilder;
//!
//! let admission = Admission::new(512);
//! let layers = ServiceBuilder::new()
//!     .layer(ErrorLayer::new())
//!     .layer(admission.layer());
//! let router = tonic::transport::Server::builder()
//!     .layer(layers)
//!     .add_service(errmap::service::CatalogService::new().into_server());
//! // On shutdown: admission.begin_drain(); admission.drained().await; ...
//! # drop(router);
//! ```

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use crate::ErrorCode;

/// Path prefixes exempt by default: health checks and reflection.
pub const DEFAULT_EXEMPT: &[&str] = &["/grpc.health.v1.Health/", "/grpc.reflection."];

#[derive(Debug)]
struct Shared {
    permits: Arc<Semaphore>,
    limit: u32,
    draining: AtomicBool,
    exempt: Vec<String>,
}

/// The shared state of the admission layer; cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission {
    shared: Arc<Shared>,
}

impl Admission {
    /// At most `limit` calls in flight (at least 1), with the default exempt
    /// paths.
    pub fn new(limit: usize) -> Self {
        Self::with_exempt(limit, DEFAULT_EXEMPT.iter().map(|s| s.to_string()))
    }

    /// At most `limit` calls in flight; paths starting with any of `exempt`
    /// are neither counted nor refused.
    pub fn with_exempt(limit: usize, exempt: impl IntoIterator<Item = String>) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
        Self {
            shared: Arc::new(Shared {
                permits: Arc::new(Semaphore::new(limit as usize)),
                limit,
                draining: AtomicBool::new(false),
                exempt: exempt.into_iter().collect(),
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
        self.shared.limit as usize
    }

    /// Calls in flight now (exempt paths not counted).
    pub fn in_flight(&self) -> usize {
        self.limit() - self.shared.permits.available_permits()
    }

    /// From now on, new calls get 49 `API_TRY_AGAIN_LATER`.
    pub fn begin_drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    /// Whether [`begin_drain`](Self::begin_drain) was called.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }

    /// Completes when no counted call is in flight.
    pub async fn drained(&self) {
        if let Ok(all) = self.shared.permits.acquire_many(self.shared.limit).await {
            drop(all);
        }
    }

    fn is_exempt(&self, path: &str) -> bool {
        self.shared
            .exempt
            .iter()
            .any(|p| path.starts_with(p.as_str()))
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

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AdmissionService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = AdmissionFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if self.admission.is_exempt(request.uri().path()) {
            return AdmissionFuture::admitted(self.inner.call(request), None);
        }
        if self.admission.is_draining() {
            return AdmissionFuture::refused(ErrorCode::ApiTryAgainLater);
        }
        match self.admission.shared.permits.clone().try_acquire_owned() {
            Ok(permit) => AdmissionFuture::admitted(self.inner.call(request), Some(permit)),
            Err(_) => {
                tracing::debug!(path = request.uri().path(), "load shed");
                AdmissionFuture::refused(ErrorCode::ApiTooManyRequests)
            }
        }
    }
}

pin_project! {
    /// The response future of [`AdmissionService`]. A counted call keeps its
    /// place until its response is ready.
    pub struct AdmissionFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = AdmissionProj]
    enum Kind<F, B> {
        // The call runs.
        Admitted { #[pin] future: F, permit: Option<OwnedSemaphorePermit> },
        // The call was refused.
        Refused { response: Option<http::Response<B>> },
    }
}

impl<F, B> AdmissionFuture<F, B> {
    fn admitted(future: F, permit: Option<OwnedSemaphorePermit>) -> Self {
        Self {
            kind: Kind::Admitted { future, permit },
        }
    }

    fn refused(code: ErrorCode) -> Self
    where
        B: Default,
    {
        Self {
            kind: Kind::Refused {
                response: Some(code.to_status().into_http()),
            },
        }
    }
}

impl<F, B, E> Future for AdmissionFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            AdmissionProj::Admitted { future, permit } => {
                let output = std::task::ready!(future.poll(cx));
                permit.take();
                Poll::Ready(output)
            }
            AdmissionProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorStatusExt as _;
    use std::convert::Infallible;
    use tower::ServiceExt as _;

    fn code_of(response: &http::Response<String>) -> Option<ErrorCode> {
        tonic::Status::from_header_map(response.headers())?.error_code()
    }

    #[tokio::test]
    async fn the_limit_sheds_and_draining_refuses() {
        let admission = Admission::new(1);
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let wait = Arc::new(tokio::sync::Mutex::new(Some(wait)));
        let service = admission
            .layer()
            .layer(tower::service_fn(move |_: http::Request<()>| {
                let wait = wait.clone();
                async move {
                    let rx = wait.lock().await.take();
                    if let Some(rx) = rx {
                        let _ = rx.await;
                    }
                    Ok::<_, Infallible>(http::Response::new(String::from("ok")))
                }
            }));

        let first = tokio::spawn(service.clone().oneshot(http::Request::new(())));
        while admission.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        let shed = service
            .clone()
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(code_of(&shed), Some(ErrorCode::ApiTooManyRequests));

        let health = http::Request::builder()
            .uri("/grpc.health.v1.Health/Check")
            .body(())
            .unwrap();
        let exempt = service.clone().oneshot(health).await.unwrap();
        assert_eq!(exempt.body(), "ok", "exempt paths are not limited");

        admission.begin_drain();
        let refused = service
            .clone()
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(code_of(&refused), Some(ErrorCode::ApiTryAgainLater));

        let drained = tokio::spawn({
            let admission = admission.clone();
            async move { admission.drained().await }
        });
        tokio::task::yield_now().await;
        assert!(!drained.is_finished(), "one call is still in flight");
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap().body(), "ok");
        tokio::time::timeout(std::time::Duration::from_secs(5), drained)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(admission.in_flight(), 0);
    }
}
