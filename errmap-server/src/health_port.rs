//! A plaintext port for probes: `grpc.health.v1.Health` alone.
//!
//! Kubernetes' gRPC probes (KEP-2727) speak HTTP/2 without TLS; a TLS probe
//! is alpha in 1.37. A server whose gRPC port wants TLS (or client
//! certificates) therefore answers its probes on a port of its own:
//! `errmap serve --health-addr HOST:PORT`, or
//! [`ErrmapServer::with_health_listener`](crate::server::ErrmapServer::with_health_listener).
//!
//! It serves the very health service of the main port, so it reports what
//! that reports (NOT_SERVING from the shutdown signal on), and it holds
//! like the admin port: at most [`MAX_HEALTH_CONNECTIONS`] connections (the
//! idlest yields), [`MAX_HEALTH_STREAMS`] calls each, the handshake and
//! write deadlines of the main port, HTTP/2 only. Its requests are read as
//! the main port reads them, by an admission of its own: within the
//! request body timeout and the size limit (40 past either), and at most
//! [`MAX_HEALTH_WATCHES`] `Watch` streams (44 past it), so a stream that
//! sends its head and never its message does not hold a place for ever.
//! Every other path is 43, and errors carry their catalog details, through
//! the response layer.

use std::time::Duration;

use errmap::ErrorCode;
use tokio::net::TcpListener;
use tonic::Status;
use tonic_health::pb::health_server::{Health, HealthServer};
use tower::ServiceExt as _;

use crate::{
    connections::{self, ProtocolConfig},
    layer::ErrorLayer,
    listener::{self, ListenerConfig},
};

/// Connections open at once on the health port; probes need a few.
pub const MAX_HEALTH_CONNECTIONS: usize = 16;

/// Calls (a Check, or a Watch that stays) open at once on one connection.
pub const MAX_HEALTH_STREAMS: u32 = 8;

/// `Watch` streams open at once over the whole port.
pub const MAX_HEALTH_WATCHES: usize = 32;

/// The two methods served.
const CHECK: &str = "/grpc.health.v1.Health/Check";
const WATCH: &str = "/grpc.health.v1.Health/Watch";

/// The main port's deadlines and limits that the health port keeps too.
#[derive(Debug, Clone, Copy)]
pub struct HealthPortConfig {
    /// How long a request may take to arrive (40 past it).
    pub request_body_timeout: Duration,
    /// The largest request message (40 past it).
    pub max_request_size: usize,
    /// How long a connection may take to send the HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// How long a write may make no progress.
    pub write_timeout: Duration,
    /// How often idle connections are pinged.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered.
    pub keepalive_timeout: Duration,
}

/// Serves `health` on `listener`, through `errors`, until dropped.
pub async fn serve<H: Health>(
    listener: TcpListener,
    health: HealthServer<H>,
    errors: ErrorLayer,
    config: HealthPortConfig,
) {
    let incoming = listener::incoming(
        listener,
        ListenerConfig {
            max_connections: MAX_HEALTH_CONNECTIONS,
            handshake_timeout: config.handshake_timeout,
            write_timeout: config.write_timeout,
            ..ListenerConfig::default()
        },
    );
    let protocol = ProtocolConfig {
        http1: false,
        http2: true,
        head_timeout: config.handshake_timeout,
        max_header_size: 8 * 1024,
        max_concurrent_streams: MAX_HEALTH_STREAMS,
        keepalive_interval: config.keepalive_interval,
        keepalive_timeout: config.keepalive_timeout,
        ..ProtocolConfig::default()
    };
    let routes = tonic::service::Routes::new(health).prepare();
    // Any other path is 43, as the main port answers a method it does not
    // serve.
    let health_only = tower::service_fn(move |request: http::Request<tonic::body::Body>| {
        let routes = routes.clone();
        async move {
            match request.uri().path() {
                CHECK | WATCH => routes.oneshot(request).await,
                _ => Ok(Status::from(ErrorCode::ApiMethodNotFound).into_http()),
            }
        }
    });
    let admission = crate::admission::Admission::with_config(crate::admission::AdmissionConfig {
        concurrency_limit: MAX_HEALTH_CONNECTIONS * MAX_HEALTH_STREAMS as usize,
        stream_limit: MAX_HEALTH_WATCHES,
        max_request_size: config.max_request_size,
        request_body_timeout: config.request_body_timeout,
        // Heads of at most 8 KiB on every stream the port allows.
        intake_memory: MAX_HEALTH_CONNECTIONS * MAX_HEALTH_STREAMS as usize * 8 * 4 * 1024,
        ..crate::admission::AdmissionConfig::default()
    });
    let service = tower::ServiceBuilder::new()
        .layer(errors)
        .layer(admission.layer())
        .layer(crate::panic::CatchPanicLayer::new())
        .service(health_only);
    connections::serve(incoming, &protocol, service, std::future::pending()).await;
}
