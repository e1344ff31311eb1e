//! A server's per-call path in-process, with no socket and no HTTP/2: what
//! every call costs above the transport, for counting its instructions
//! (`examples/instructions.rs`, `scripts/instructions.sh stack/`).
//!
//! [`CallPath`] is the service a connection of an [`ErrmapServer`] calls:
//! the per-connection wrapper, CORS, gRPC-Web, the HTTP API and Connect,
//! metrics, the response layer, admission and the panic guard, around
//! tonic's router and the services, called in place as a connection calls
//! it. [`drive`] makes one call through any tower service as hyper's
//! adapter makes it (a clone of the service, readied, then called), as a
//! bare tonic server is called; [`answer`] reads a call's answer to its
//! end.
//!
//! This is a measuring tool, not an API to build on: it may change in any
//! release.

use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use tonic::body::Body;
use tower::Service;

use crate::{
    connections::{InPlace, PerConnection},
    server::{assemble, Assembled, CallStack, ErrmapServer, ServeError},
};

/// The per-call path of one server, as one of its connections calls it.
pub struct CallPath {
    service: InPlace<PerConnection<CallStack>>,
    // The health reporter and the drain: kept, as a serving server keeps them.
    _health: tonic_health::server::HealthReporter,
    _admission: crate::admission::Admission,
}

impl std::fmt::Debug for CallPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallPath").finish_non_exhaustive()
    }
}

impl CallPath {
    /// The per-call path of `server`, built as
    /// [`ErrmapServer::serve`] builds it. Needs a tokio runtime.
    pub async fn new(server: ErrmapServer) -> Result<Self, ServeError> {
        server.config().validate()?;
        let Assembled {
            stack,
            admission,
            health,
            ..
        } = assemble(server).await?;
        Ok(Self {
            service: InPlace::new(PerConnection::detached(stack)),
            _health: health,
            _admission: admission,
        })
    }

    /// One call through the whole path, as a connection of the server
    /// makes it (in place, with no clone of the stack), its answer read to
    /// its end; see [`answer`].
    pub fn call(&self, request: http::Request<Body>) -> Option<Answer> {
        answer(hyper::service::Service::call(&self.service, request))
    }
}

/// What a call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: http::StatusCode,
    /// `grpc-status`, from the trailers or from a trailers-only head.
    pub grpc_status: Option<http::HeaderValue>,
    /// The bytes of the body's data frames.
    pub data: usize,
}

/// Calls `service` with `request` as hyper's adapter for tower services
/// calls a connection's service (a clone of it, polled ready, then called;
/// tonic's own server is called so), and reads the answer; see [`answer`].
pub fn drive<S, B>(service: &S, request: http::Request<Body>) -> Option<Answer>
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone,
    B: http_body::Body<Data = Bytes>,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut service = service.clone();
    match service.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => return None,
    }
    answer(service.call(request))
}

/// Polls a call's future and then its answer's body to the end, each
/// once with a no-op waker: `None` if any of it had to wait, or failed.
pub fn answer<F, B, E>(future: F) -> Option<Answer>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: http_body::Body<Data = Bytes>,
{
    let mut cx = Context::from_waker(Waker::noop());
    let future = pin!(future);
    let Poll::Ready(Ok(response)) = future.poll(&mut cx) else {
        return None;
    };
    let (parts, body) = response.into_parts();
    let mut grpc_status = parts.headers.get(errmap::headers::GRPC_STATUS).cloned();
    let mut data = 0;
    let mut body = pin!(body);
    loop {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(None) => break,
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(bytes) => data += bytes.len(),
                Err(frame) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        grpc_status = trailers
                            .get(errmap::headers::GRPC_STATUS)
                            .cloned()
                            .or(grpc_status);
                    }
                }
            },
            Poll::Ready(Some(Err(_))) | Poll::Pending => return None,
        }
    }
    Some(Answer {
        status: parts.status,
        grpc_status,
        data,
    })
}
