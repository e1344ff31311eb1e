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

use std::{convert::Infallible, future::Future};

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Admin connections open at once; more are closed at once. Scrapers and
/// probes need a handful.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics text.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The answer to one admin request.
pub fn answer<B>(metrics: &Metrics, request: &http::Request<B>) -> http::Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        let mut response = http::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match request.uri().path() {
        "/metrics" => {
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
/// completes. At most [`MAX_ADMIN_CONNECTIONS`] connections are served at
/// once, each with 10 s to send a request head.
pub async fn serve(listener: TcpListener, metrics: Metrics, shutdown: impl Future<Output = ()>) {
    let places = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        let Ok((stream, _)) = accepted else {
            // Out of descriptors, say: do not spin.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            // Full: close this one rather than queue without bound.
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _place = place;
            let service = hyper::service::service_fn(move |request| {
                let response = answer(&metrics, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(std::time::Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
