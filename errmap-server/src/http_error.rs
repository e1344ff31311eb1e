//! A `tonic::Status` as an HTTP error response, in the three shapes HTTP
//! clients expect, from one status:
//!
//! - [`Shape::Legacy`]: the body of the HTTP API this catalog came from,
//!   `{"v": "1", "error": {"message", "code", "status"}}`, whose clients
//!   take the HTTP status from `error.status`;
//! - [`Shape::Google`]: AIP-193's JSON, `{"error": {"code", "message",
//!   "status", "details": [{"@type": ...}]}}`, the details as proto3 JSON;
//! - [`Shape::Problem`]: RFC 9457 problem details, `application/problem+json`,
//!   with the members `type`, `title`, `status`, `detail`, and the
//!   extensions `code`, `reason`, `domain`, `metadata` and `retryAfter`.
//!
//! The HTTP status is the catalog entry's; a status that is not a catalog
//! status gets the gRPC → HTTP mapping of `google/rpc/code.proto`. Headers:
//! `Retry-After` from `RetryInfo` (whole seconds, rounded up), and
//! `WWW-Authenticate: Bearer` for 21, 10 and 11 and any other 401.
//!
//! ```
//! use errmap_server::http_error::{HttpErrors, Shape};
//! use errmap::ErrorCode;
//!
//! let errors = HttpErrors::default();
//! let response = errors.response(&ErrorCode::ApiItemNotFound.into(), Shape::Problem);
//! assert_eq!(response.status(), 404);
//! assert_eq!(response.headers()["content-type"], "application/problem+json");
//! let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
//! assert_eq!(body["reason"], "API_ITEM_NOT_FOUND");
//! assert_eq!(body["code"], 47);
//! ```
//!
//! [`HttpErrorLayer`] does it for any tower service whose error is a
//! `Status` (an axum or hyper handler), choosing the shape from `Accept`.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use http::{header, HeaderMap, HeaderValue, StatusCode};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use serde_json::{json, Map, Value};
use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::reload::LiveCatalogs;

use errmap::{
    catalog::{grpc_code_name, CatalogEntry, TableRef},
    catalog_set::Catalogs,
    details::{self, ErrorDetails},
};

/// `application/problem+json` (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The shape of an HTTP error body; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// `{"v", "error": {"message", "code", "status"}}`, the legacy API's.
    #[default]
    Legacy,
    /// AIP-193: `{"error": {"code", "message", "status", "details"}}`.
    Google,
    /// RFC 9457 problem details.
    Problem,
}

impl Shape {
    /// The shape named `google`, `problem` or `legacy`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "legacy" => Some(Self::Legacy),
            "google" => Some(Self::Google),
            "problem" => Some(Self::Problem),
            _ => None,
        }
    }

    /// The shape a request's `Accept` asks for: RFC 9457 when it accepts
    /// `application/problem+json` (with a quality above zero), else
    /// `default`. (The other two shapes are both `application/json`.)
    pub fn from_accept(headers: &HeaderMap, default: Shape) -> Shape {
        let wants_problem = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .take(32)
            .any(|member| {
                let mut parts = member.split(';');
                let media = parts.next().unwrap_or("").trim();
                let zero = parts.any(|p| {
                    let p = p.trim();
                    p.strip_prefix("q=")
                        .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
                });
                media.eq_ignore_ascii_case(PROBLEM_JSON) && !zero
            });
        if wants_problem {
            Shape::Problem
        } else {
            default
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Shape::Problem => PROBLEM_JSON,
            Shape::Legacy | Shape::Google => "application/json",
        }
    }
}

/// The HTTP status `google/rpc/code.proto` gives a gRPC code.
pub fn http_status_of_code(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The descriptors of `google.rpc` and of errmap's protos, for proto3 JSON.
pub(crate) fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut pool = DescriptorPool::new();
        let _ = pool.add_file_descriptor_set(crate::descriptors::google_rpc_descriptor_set());
        let _ = pool.decode_file_descriptor_set(errmap::pb::FILE_DESCRIPTOR_SET);
        pool
    })
}

/// Maps statuses to HTTP error responses; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct HttpErrors {
    inner: Arc<Settings>,
}

#[derive(Debug, Clone)]
struct Settings {
    catalogs: LiveCatalogs,
    public_url: Option<String>,
    api_version: String,
    default_shape: Shape,
}

impl Default for HttpErrors {
    /// The default catalog, no public URL, API version `"1"`, the legacy
    /// shape by default.
    fn default() -> Self {
        Self::new(Catalogs::default())
    }
}

impl HttpErrors {
    /// Maps statuses of `catalogs`.
    pub fn new(catalogs: Catalogs) -> Self {
        Self::with_live_catalogs(LiveCatalogs::new(catalogs))
    }

    /// Maps statuses of the catalogs current at each call, which a reload
    /// replaces.
    pub fn with_live_catalogs(catalogs: LiveCatalogs) -> Self {
        Self {
            inner: Arc::new(Settings {
                catalogs,
                public_url: None,
                api_version: "1".to_owned(),
                default_shape: Shape::Legacy,
            }),
        }
    }

    fn settings(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.inner)
    }

    /// The public URL of the catalog pages: RFC 9457's `type` becomes
    /// `{url}/errors/{NAME}` (else `about:blank`).
    pub fn with_public_url(mut self, url: impl Into<String>) -> Self {
        self.settings().public_url = Some(url.into().trim_end_matches('/').to_owned());
        self
    }

    /// The API version the legacy body carries as `v`. Default `"1"`.
    pub fn with_api_version(mut self, version: impl Into<String>) -> Self {
        self.settings().api_version = version.into();
        self
    }

    /// The shape used when `Accept` does not ask for RFC 9457.
    pub fn with_default_shape(mut self, shape: Shape) -> Self {
        self.settings().default_shape = shape;
        self
    }

    /// The shape used when `Accept` does not ask for RFC 9457.
    pub fn default_shape(&self) -> Shape {
        self.inner.default_shape
    }

    /// The catalogs whose statuses are recognised, as they are now.
    pub fn catalogs(&self) -> Arc<Catalogs> {
        self.inner.catalogs.load()
    }

    /// The catalogs whose statuses are recognised, as a reload replaces
    /// them.
    pub fn live_catalogs(&self) -> &LiveCatalogs {
        &self.inner.catalogs
    }

    /// The HTTP status of `status`: its catalog entry's, else the
    /// `google/rpc/code.proto` mapping of its gRPC code.
    pub fn http_status(&self, status: &Status) -> StatusCode {
        let catalogs = self.catalogs();
        http_status_from(status, details::catalog_entry_of(status, &catalogs).ok())
    }

    /// The response for `status` in `shape`: HTTP status, headers and JSON
    /// body.
    pub fn response(&self, status: &Status, shape: Shape) -> http::Response<String> {
        let catalogs = self.catalogs();
        let entry = details::catalog_entry_of(status, &catalogs).ok();
        self.response_with(status, shape, http_status_from(status, entry), entry)
    }

    /// [`response`](Self::response) with another HTTP status than the
    /// catalog's, in the headers and the body alike (415 for a request in
    /// a content type the path does not take, say).
    pub fn response_as(
        &self,
        status: &Status,
        shape: Shape,
        http_status: StatusCode,
    ) -> http::Response<String> {
        let catalogs = self.catalogs();
        let entry = details::catalog_entry_of(status, &catalogs).ok();
        self.response_with(status, shape, http_status, entry)
    }

    /// [`response_as`](Self::response_as) with the status's catalog entry
    /// already found: each status is read once.
    fn response_with(
        &self,
        status: &Status,
        shape: Shape,
        http_status: StatusCode,
        entry: Option<(&TableRef, &CatalogEntry)>,
    ) -> http::Response<String> {
        let details = ErrorDetails::decode(status.details()).ok();
        let body = self.body_with(status, shape, http_status, entry, details.as_ref());
        let mut response = http::Response::new(body.to_string());
        *response.status_mut() = http_status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(shape.content_type()),
        );
        if let Some(delay) = details.as_ref().and_then(ErrorDetails::retry_delay) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_seconds(delay)));
        }
        if let Some(challenge) = challenge(entry, http_status) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }

    /// [`response`](Self::response) with the shape `headers` ask for.
    pub fn response_for(&self, status: &Status, headers: &HeaderMap) -> http::Response<String> {
        self.response(
            status,
            Shape::from_accept(headers, self.inner.default_shape),
        )
    }

    /// The JSON body for `status` in `shape`.
    pub fn body(&self, status: &Status, shape: Shape) -> Value {
        let details = ErrorDetails::decode(status.details()).ok();
        let catalogs = self.catalogs();
        let entry = details::catalog_entry_of(status, &catalogs).ok();
        self.body_with(
            status,
            shape,
            http_status_from(status, entry),
            entry,
            details.as_ref(),
        )
    }

    fn body_with(
        &self,
        status: &Status,
        shape: Shape,
        http_status: StatusCode,
        entry: Option<(&TableRef, &CatalogEntry)>,
        details: Option<&ErrorDetails>,
    ) -> Value {
        let message = status.message();
        match shape {
            Shape::Legacy => json!({
                "v": self.inner.api_version,
                "error": {
                    "message": message,
                    "code": entry.map(|(_, e)| e.number()),
                    "status": http_status.as_u16(),
                },
            }),
            Shape::Google => json!({
                "error": {
                    "code": http_status.as_u16(),
                    "message": message,
                    "status": grpc_code_name(status.code()),
                    "details": details_json(status.details()),
                },
            }),
            Shape::Problem => {
                let mut problem = Map::new();
                let (kind, title) = match (entry, &self.inner.public_url) {
                    (Some((_, e)), Some(url)) => {
                        (format!("{url}/errors/{}", e.name()), e.message())
                    }
                    (Some((_, e)), None) => ("about:blank".to_owned(), e.message()),
                    (None, _) => (
                        "about:blank".to_owned(),
                        http_status.canonical_reason().unwrap_or("Error"),
                    ),
                };
                problem.insert("type".into(), json!(kind));
                problem.insert("title".into(), json!(title));
                problem.insert("status".into(), json!(http_status.as_u16()));
                problem.insert("detail".into(), json!(message));
                if let Some((table, e)) = entry {
                    problem.insert("code".into(), json!(e.number()));
                    problem.insert("reason".into(), json!(e.name()));
                    problem.insert("domain".into(), json!(table.domain()));
                }
                if let Some(info) = details.and_then(ErrorDetails::error_info) {
                    let metadata: Map<String, Value> = info
                        .metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(v)))
                        .collect();
                    problem.insert("metadata".into(), Value::Object(sorted(metadata)));
                }
                if let Some(delay) = details.and_then(ErrorDetails::retry_delay) {
                    problem.insert("retryAfter".into(), json!(retry_seconds(delay)));
                }
                Value::Object(problem)
            }
        }
    }

    /// A tower layer that turns a service's `Status` errors into these
    /// responses.
    pub fn layer(&self) -> HttpErrorLayer {
        HttpErrorLayer {
            errors: self.clone(),
        }
    }
}

/// The catalog entry's HTTP status, else `code.proto`'s for the gRPC code.
fn http_status_from(status: &Status, entry: Option<(&TableRef, &CatalogEntry)>) -> StatusCode {
    entry
        .and_then(|(_, e)| StatusCode::from_u16(e.http_status()).ok())
        .unwrap_or_else(|| http_status_of_code(status.code()))
}

fn sorted(map: Map<String, Value>) -> Map<String, Value> {
    let mut pairs: Vec<_> = map.into_iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs.into_iter().collect()
}

/// Whole seconds, rounded up (`Retry-After` has no fractions).
fn retry_seconds(delay: Duration) -> u64 {
    delay.as_secs() + u64::from(delay.subsec_nanos() > 0)
}

/// The `WWW-Authenticate` challenge: RFC 6750 for the auth catalog's token
/// codes, and any 401.
fn challenge(
    entry: Option<(&TableRef, &CatalogEntry)>,
    http_status: StatusCode,
) -> Option<&'static str> {
    let reason = entry
        .filter(|(table, _)| table.domain() == errmap::DOMAIN)
        .map(|(_, e)| e.name());
    match reason {
        Some("AUTH_INVALID_TOKEN" | "AUTH_EXPIRED_TOKEN") => Some("Bearer error=\"invalid_token\""),
        Some("AUTH_REQUIRED") => Some("Bearer"),
        _ if http_status == StatusCode::UNAUTHORIZED => Some("Bearer"),
        _ => None,
    }
}

/// The details of an encoded `google.rpc.Status` as proto3 JSON, each with
/// its `@type`; types the pool does not know are left out.
fn details_json(encoded: &[u8]) -> Value {
    let Ok(status) = tonic_types::pb::Status::decode(encoded) else {
        return json!([]);
    };
    let details: Vec<Value> = status
        .details
        .iter()
        .filter_map(|detail| {
            let name = detail.type_url.rsplit('/').next()?;
            let descriptor: MessageDescriptor = pool().get_message_by_name(name)?;
            let message = DynamicMessage::decode(descriptor, detail.value.as_slice()).ok()?;
            let mut value = serde_json::to_value(&message).ok()?;
            let object = value.as_object_mut()?;
            let mut with_type = Map::new();
            with_type.insert("@type".into(), json!(detail.type_url));
            with_type.append(object);
            Some(Value::Object(with_type))
        })
        .collect();
    Value::Array(details)
}

/// Turns the `Status` errors of a service into HTTP error responses, in the
/// shape the request's `Accept` asks for. Made by [`HttpErrors::layer`].
///
/// ```
/// use errmap_server::http_error::HttpErrors;
/// use errmap::ErrorCode;
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let handler = tower::service_fn(|_: http::Request<()>| async {
///     Err::<http::Response<String>, _>(tonic::Status::from(ErrorCode::AuthRequired))
/// });
/// let mut service = tower::ServiceBuilder::new()
///     .layer(HttpErrors::default().layer())
///     .service(handler);
/// let response = service.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
/// assert_eq!(response.status(), 401);
/// assert_eq!(response.headers()["www-authenticate"], "Bearer");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct HttpErrorLayer {
    errors: HttpErrors,
}

impl<S> Layer<S> for HttpErrorLayer {
    type Service = HttpErrorService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpErrorService {
            inner,
            errors: self.errors.clone(),
        }
    }
}

/// The service made by [`HttpErrorLayer`].
#[derive(Debug, Clone)]
pub struct HttpErrorService<S> {
    inner: S,
    errors: HttpErrors,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for HttpErrorService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>, Error = Status>,
    S::Future: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<http::Response<ResBody>, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(status)) => {
                // The error is answered by `call`; the service itself is
                // not ready to be called, so report readiness and fail
                // there.
                tracing::warn!(%status, "service not ready");
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let shape = Shape::from_accept(request.headers(), self.errors.default_shape());
        let errors = self.errors.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            Ok(match future.await {
                Ok(response) => response,
                Err(status) => errors.response(&status, shape).map(ResBody::from),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use errmap::{Catalog as _, ErrorCode};

    #[test]
    fn every_grpc_code_has_its_http_status() {
        for (code, http) in [
            (Code::NotFound, 404),
            (Code::Unauthenticated, 401),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Cancelled, 499),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
        ] {
            assert_eq!(http_status_of_code(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn the_catalog_decides_the_http_status() {
        let errors = HttpErrors::default();
        // 11 is UNAUTHENTICATED but was 400 in the legacy API.
        let status = ErrorCode::AuthExpiredToken.to_status();
        assert_eq!(errors.http_status(&status), 400);
        assert_eq!(errors.http_status(&Status::unauthenticated("x")), 401);
    }

    #[test]
    fn accept_picks_rfc_9457() {
        let mut headers = HeaderMap::new();
        assert_eq!(Shape::from_accept(&headers, Shape::Google), Shape::Google);
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, application/problem+json;q=0.9"),
        );
        assert_eq!(Shape::from_accept(&headers, Shape::Legacy), Shape::Problem);
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/problem+json;q=0"),
        );
        assert_eq!(Shape::from_accept(&headers, Shape::Legacy), Shape::Legacy);
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert_eq!(Shape::from_accept(&headers, Shape::Google), Shape::Google);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_seconds(Duration::from_secs(1)), 1);
    }
}
