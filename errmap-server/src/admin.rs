//! The admin listener: `GET /metrics`, `GET /healthz` and `GET /readyz` on
//! an address of its own, never on the gRPC port.
//!
//! - `/metrics` answers the Prometheus text format, or OpenMetrics when the
//!   request's `Accept` asks for `application/openmetrics-text`;
//! - `/healthz` is 200 while the process serves;
//! - `/readyz` is 200 while the server takes calls, and 503 once it drains
//!   (or before it has started).
//!
//! `errmap serve --admin-addr HOST:PORT` runs it; nothing listens unless
//! the flag is given.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::Full;
use tokio::{net::TcpListener, sync::Semaphore};

use crate::{
    connections::{self, ProtocolConfig},
    listener::{self, ListenerConfig, Places},
    metrics::Metrics,
};

/// Admin connections open at once. At the cap, the idlest yields to a
/// newcomer, as on the gRPC port; scrapers and probes need a handful.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// Open admin connections past which `/metrics` is refused (503 with
/// `Retry-After`), so that the places left go to `/healthz` and `/readyz`.
pub const METRICS_UNTIL_CONNECTIONS: usize = MAX_ADMIN_CONNECTIONS * 3 / 4;

/// Scrapes encoded at once; another gets 503 until one is done.
pub const MAX_SCRAPES_AT_ONCE: usize = 2;

/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics text.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Who may encode the metrics now: probes are answered first when places
/// are short.
#[derive(Debug, Clone)]
struct Scrapes {
    places: Option<Places>,
    at_once: Arc<Semaphore>,
}

fn text(status: StatusCode, body: &'static str) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn answer_with<B>(
    metrics: &Metrics,
    request: &http::Request<B>,
    scrapes: &Scrapes,
) -> http::Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match request.uri().path() {
        "/metrics" => {
            let busy = scrapes
                .places
                .as_ref()
                .is_some_and(|p| p.open_connections() > METRICS_UNTIL_CONNECTIONS);
            let permit = scrapes.at_once.clone().try_acquire_owned();
            let Ok(_permit) = permit
                .map_err(|_| ())
                .and_then(|p| if busy { Err(()) } else { Ok(p) })
            else {
                let mut response = text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy: the admin port answers probes first; scrape again\n",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            };
            let openmetrics = request.headers().get_all(header::ACCEPT).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.contains("application/openmetrics-text"))
            });
            let body = metrics.encode(openmetrics);
            let mut response = http::Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(if openmetrics {
                    OPENMETRICS_TEXT
                } else {
                    PROMETHEUS_TEXT
                }),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if metrics.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /healthz, /readyz\n",
        ),
    }
}

/// Serves the admin endpoints on `listener` (HTTP/1.1) until `shutdown`
/// completes, with places and deadlines of its own, never shared with the
/// gRPC port: at most [`MAX_ADMIN_CONNECTIONS`] connections, the idlest
/// yielding to a newcomer; 5 s for a whole request head (and for an idle
/// keep-alive connection's next one); 10 s for a write to make progress;
/// 8 KiB of headers. Probes are answered before `/metrics` when places are
/// short.
pub async fn serve(listener: TcpListener, metrics: Metrics, shutdown: impl Future<Output = ()>) {
    let incoming = listener::incoming(
        listener,
        ListenerConfig {
            max_connections: MAX_ADMIN_CONNECTIONS,
            oversized_head_response: listener::oversized_head_response(
                "text/plain; charset=utf-8",
                b"request head too large\n",
            ),
            ..ListenerConfig::default()
        },
    );
    let scrapes = Scrapes {
        places: Some(incoming.places()),
        at_once: Arc::new(Semaphore::new(MAX_SCRAPES_AT_ONCE)),
    };
    let protocol = ProtocolConfig {
        http1: true,
        http2: false,
        head_timeout: Duration::from_secs(5),
        max_header_size: 8 * 1024,
        ..ProtocolConfig::default()
    };
    let service = tower::service_fn(move |request: http::Request<tonic::body::Body>| {
        let response = answer_with(&metrics, &request, &scrapes);
        std::future::ready(Ok::<_, Infallible>(response))
    });
    connections::serve(incoming, &protocol, service, shutdown).await;
}
