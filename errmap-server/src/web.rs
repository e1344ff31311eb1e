//! Browsers: gRPC-Web on the gRPC port, and CORS that lets the error
//! details through.
//!
//! A browser cannot speak gRPC (it cannot read HTTP/2 trailers), so it
//! speaks gRPC-Web: `application/grpc-web`, `application/grpc-web+proto`
//! or `application/grpc-web-text` (base64) over HTTP/1.1 or HTTP/2.
//! `tonic-web` translates it; [`ErrmapServer`](crate::server::ErrmapServer)
//! puts it in front of every service, so that admission, auth, the
//! response layer and the limits hold for it as for gRPC.
//!
//! A handler's error goes out trailers-only: `grpc-status`, `grpc-message`
//! and `grpc-status-details-bin` are HTTP response headers. A script on
//! another origin can read a response header only if CORS exposes it, and
//! a front-end that cannot read them sees "unknown" instead of the code.
//! [`CorsConfig`] allows the request headers a gRPC-Web client sends
//! ([`ALLOW_HEADERS`]) and exposes the status headers ([`EXPOSE_HEADERS`]).
//!
//! CORS is answered only for the origins allowed:
//! - a request without `Origin` (any non-browser client) is not touched:
//!   no CORS header is added to it;
//! - an origin that is not allowed gets no CORS header at all, and its
//!   preflight gets `403`;
//! - without a [`CorsConfig`], no origin is allowed.
//!
//! CORS is not authentication: it tells browsers what a page of another
//! origin may read. Tokens still go through the auth interceptor.
//!
//! ```
//! use errmap_server::server::{ErrmapServer, ServerConfig};
//! use errmap_server::web::CorsConfig;
//!
//! let mut config = ServerConfig::default();
//! config.cors = Some(CorsConfig::new(["https://app.example.com"]).unwrap());
//! let server = ErrmapServer::new(config);
//! # drop(server);
//! ```
//!
//! In a tonic server of your own, the same two layers (the router must
//! accept HTTP/1.1 for browsers that use it):
//!
//! ```
//! use errmap_server::web::CorsConfig;
//!
//! let cors = CorsConfig::new(["https://app.example.com"]).unwrap();
//! let router = tonic::transport::Server::builder()
//!     .accept_http1(true)
//!     .layer(
//!         tower::ServiceBuilder::new()
//!             .layer(cors.layer())
//!             .layer(tonic_web::GrpcWebLayer::new())
//!             .into_inner(),
//!     )
//!     .add_service(errmap_server::service::CatalogService::new().into_server());
//! # drop(router);
//! ```

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{header, HeaderName, HeaderValue, Method, StatusCode};

use crate::{connect::ConnectApi, http_api::HttpApi};
use tower::{Layer, Service};

/// The request headers a gRPC-Web or Connect client may send
/// cross-origin: the content type, gRPC-Web's own (`x-grpc-web`,
/// `x-user-agent`), Connect's (`connect-protocol-version`, and the
/// deadline `connect-timeout-ms`), gRPC's deadline (`grpc-timeout`), a
/// token (`authorization`, or `token` as the legacy API took it), the
/// locale (`accept-language`), and `if-none-match` for cached lookups.
pub const ALLOW_HEADERS: [HeaderName; 10] = [
    header::CONTENT_TYPE,
    HeaderName::from_static("x-grpc-web"),
    HeaderName::from_static("x-user-agent"),
    HeaderName::from_static("grpc-timeout"),
    HeaderName::from_static("connect-protocol-version"),
    HeaderName::from_static("connect-timeout-ms"),
    header::AUTHORIZATION,
    HeaderName::from_static("token"),
    header::ACCEPT_LANGUAGE,
    header::IF_NONE_MATCH,
];

/// The response headers a page may read: the status, its message and its
/// details, which a trailers-only error carries as headers; for the
/// HTTP/JSON API and Connect, `Retry-After` and `WWW-Authenticate`; and a
/// cached lookup's `ETag`.
pub const EXPOSE_HEADERS: [HeaderName; 6] = [
    HeaderName::from_static("grpc-status"),
    HeaderName::from_static("grpc-message"),
    HeaderName::from_static("grpc-status-details-bin"),
    header::RETRY_AFTER,
    header::WWW_AUTHENTICATE,
    header::ETAG,
];

/// How long a browser may cache a preflight answer. Chromium caps it at
/// two hours.
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(2 * 60 * 60);

/// Why an origin could not be allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--cors-allow-origin {origin:?}: {problem}")]
pub struct CorsError {
    /// The origin given.
    pub origin: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

#[derive(Debug, Clone)]
enum Origins {
    Any,
    List(Arc<[HeaderValue]>),
}

/// Which origins may call the server from a browser; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct CorsConfig {
    origins: Origins,
}

impl CorsConfig {
    /// Allows `origins`: each is `*` (any origin) or a serialized origin,
    /// `scheme://host[:port]` with `http` or `https` and nothing after it
    /// (`https://app.example.com`, `http://127.0.0.1:8080`). Scheme and
    /// host are compared case-blind, as browsers send them in lower case.
    ///
    /// ```
    /// use errmap_server::web::CorsConfig;
    ///
    /// let cors = CorsConfig::new(["https://app.example.com", "http://localhost:8080"]).unwrap();
    /// assert!(cors.allows("https://app.example.com"));
    /// assert!(!cors.allows("https://evil.example.com"));
    /// assert!(CorsConfig::new(["https://app.example.com/"]).is_err());
    /// assert!(CorsConfig::new(["*"]).unwrap().allows("https://anyone.example"));
    /// ```
    pub fn new<I>(origins: I) -> Result<Self, CorsError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut list = Vec::new();
        let mut any = false;
        for origin in origins {
            let origin = origin.as_ref().trim();
            if origin == "*" {
                any = true;
                continue;
            }
            list.push(parse_origin(origin)?);
        }
        if list.is_empty() && !any {
            return Err(CorsError {
                origin: String::new(),
                problem: "give at least one origin, or * for any",
            });
        }
        Ok(Self {
            origins: if any {
                Origins::Any
            } else {
                Origins::List(list.into())
            },
        })
    }

    /// Allows any origin (`*`).
    pub fn any_origin() -> Self {
        Self {
            origins: Origins::Any,
        }
    }

    /// Whether a request from `origin` gets CORS headers.
    pub fn allows(&self, origin: impl AsRef<[u8]>) -> bool {
        let origin = origin.as_ref();
        match &self.origins {
            Origins::Any => true,
            Origins::List(list) => list
                .iter()
                // Byte for byte: browsers serialize origins in lower case
                // (RFC 6454), and the list is stored so.
                .any(|allowed| allowed.as_bytes() == origin),
        }
    }

    /// tower-http's `CorsLayer` with errmap's lists: the allowed origins,
    /// `GET` (the HTTP/JSON API) and `POST` (gRPC-Web), [`ALLOW_HEADERS`], [`EXPOSE_HEADERS`] and
    /// [`PREFLIGHT_MAX_AGE`]. It answers every request it sees, origin
    /// allowed or not; [`layer`](Self::layer) sends it only the allowed
    /// ones.
    pub fn tower_http_layer(&self) -> tower_http::cors::CorsLayer {
        let origins = match &self.origins {
            Origins::Any => tower_http::cors::AllowOrigin::any(),
            Origins::List(list) => tower_http::cors::AllowOrigin::list(list.iter().cloned()),
        };
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers(ALLOW_HEADERS)
            .expose_headers(EXPOSE_HEADERS)
            .max_age(PREFLIGHT_MAX_AGE)
    }

    /// The CORS layer to put in front of `tonic_web::GrpcWebLayer`.
    pub fn layer(&self) -> CorsLayer {
        CorsLayer {
            config: Some(self.clone()),
        }
    }
}

/// `scheme://host[:port]`, lower-cased, as a header value.
fn parse_origin(origin: &str) -> Result<HeaderValue, CorsError> {
    let fail = |problem| CorsError {
        origin: origin.to_owned(),
        problem,
    };
    let (scheme, rest) = origin
        .split_once("://")
        .ok_or_else(|| fail("an origin is scheme://host[:port], e.g. https://app.example.com"))?;
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(fail("the scheme must be http or https"));
    }
    if rest.is_empty() {
        return Err(fail("the host is missing"));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(fail(
            "an origin has no path: drop everything after the host and port",
        ));
    }
    if rest.contains('@') {
        return Err(fail("an origin has no user name or password"));
    }
    if let Some((_, port)) = rest
        .rsplit_once(':')
        .filter(|(host, _)| !host.ends_with(']'))
    {
        if port.is_empty() || port.parse::<u16>().is_err() {
            return Err(fail("the port is not a number from 0 to 65535"));
        }
    }
    if !rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    {
        return Err(fail(
            "the host has characters an origin cannot have (write IDNs in punycode)",
        ));
    }
    HeaderValue::from_str(&origin.to_ascii_lowercase())
        .map_err(|_| fail("not a valid header value"))
}

/// CORS for the allowed origins only; see the [module docs](self). Made by
/// [`CorsConfig::layer`], or [`CorsLayer::disabled`] for no cross-origin
/// access at all.
#[derive(Debug, Clone)]
pub struct CorsLayer {
    config: Option<CorsConfig>,
}

impl CorsLayer {
    /// A layer that grants no cross-origin access: requests pass untouched,
    /// and a preflight gets `403`.
    pub fn disabled() -> Self {
        Self { config: None }
    }
}

impl<S: Clone> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let cors = self
            .config
            .as_ref()
            .map(|c| Arc::new(c.clone()))
            .map(|config| {
                (
                    config.clone(),
                    config.tower_http_layer().layer(inner.clone()),
                )
            });
        Cors { inner, cors }
    }
}

/// The service made by [`CorsLayer`].
#[derive(Clone)]
pub struct Cors<S> {
    inner: S,
    cors: Option<(Arc<CorsConfig>, tower_http::cors::Cors<S>)>,
}

impl<S> fmt::Debug for Cors<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cors")
            .field("config", &self.cors.as_ref().map(|(c, _)| c))
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Cors<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = CorsFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both paths lead to the same inner service (tower-http's wraps a
        // clone); each must be ready for the call it may get.
        if let Some((_, cors)) = &mut self.cors {
            if cors.poll_ready(cx)?.is_pending() {
                return Poll::Pending;
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if self.cors.is_none() && request.method() != Method::OPTIONS {
            // No CORS configured: only a preflight is its business.
            return CorsFuture::inner(self.inner.call(request));
        }
        let Some(origin) = request.headers().get(header::ORIGIN) else {
            // Not a browser's cross-origin request: not CORS's business.
            return CorsFuture::inner(self.inner.call(request));
        };
        match &mut self.cors {
            Some((config, cors)) if config.allows(origin.as_bytes()) => CorsFuture {
                kind: Kind::Cors {
                    future: cors.call(request),
                },
            },
            _ if request.method() == Method::OPTIONS => {
                // A preflight from an origin that is not allowed: no CORS
                // headers, so the browser stops here.
                CorsFuture {
                    kind: Kind::Refused {
                        response: Some(forbidden()),
                    },
                }
            }
            _ => CorsFuture::inner(self.inner.call(request)),
        }
    }
}

fn forbidden<B: Default>() -> http::Response<B> {
    let mut response = http::Response::new(B::default());
    *response.status_mut() = StatusCode::FORBIDDEN;
    response
}

pin_project_lite::pin_project! {
    /// The response future of [`Cors`].
    pub struct CorsFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        // Passed through without CORS.
        Inner { #[pin] future: F },
        // Through tower-http's CORS.
        Cors { #[pin] future: tower_http::cors::ResponseFuture<F> },
        // A refused preflight.
        Refused { response: Option<http::Response<B>> },
    }
}

impl<F, B> CorsFuture<F, B> {
    fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }
}

impl<F, B, E> Future for CorsFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Default,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future.poll(cx),
            KindProj::Cors { future } => future.poll(cx),
            KindProj::Refused { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_else(forbidden)))
            }
        }
    }
}

/// Sends browsers' gRPC-Web requests through `tonic_web` and gRPC straight
/// to the inner service, so that a gRPC call pays one header check for
/// gRPC-Web support and nothing more (`tonic_web::GrpcWebService` alone
/// would box the bodies of every gRPC call). With the HTTP API on, a request
/// with no gRPC content type goes to it (an unknown path gets 404 and the
/// catalog's 43); without it, a request that is neither HTTP/2 nor gRPC-Web
/// goes to `tonic_web` too, which answers it with 400.
///
/// [`ErrmapServer`](crate::server::ErrmapServer) puts it in front of
/// errmap's layers; [`WebLayer::disabled`] turns gRPC-Web off.
#[derive(Debug, Clone)]
pub struct WebLayer {
    enabled: bool,
    http: Option<Arc<HttpApi>>,
    connect: Option<Arc<ConnectApi>>,
}

impl WebLayer {
    /// gRPC-Web on.
    pub fn new() -> Self {
        Self {
            enabled: true,
            http: None,
            connect: None,
        }
    }

    /// gRPC-Web off: every request goes straight to the inner service.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            http: None,
            connect: None,
        }
    }

    /// Also serves the HTTP/JSON lookup API and the catalog pages
    /// ([`HttpApi`]) on `GET`s of their paths.
    pub fn with_http_api(mut self, api: HttpApi) -> Self {
        self.http = Some(Arc::new(api));
        self
    }

    /// Also serves the Connect protocol's unary calls ([`ConnectApi`]).
    pub fn with_connect(mut self, api: ConnectApi) -> Self {
        self.connect = Some(Arc::new(api));
        self
    }
}

impl Default for WebLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone> Layer<S> for WebLayer {
    type Service = Web<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Web {
            web: self.enabled,
            http: self.http.clone(),
            connect: self.connect.clone(),
            grpc: inner,
        }
    }
}

impl<S: Clone> Web<S> {
    /// The inner service, polled ready, for a call that goes through it
    /// from a future of its own (the HTTP API's, Connect's); a clone takes
    /// its place.
    fn take_ready(&mut self) -> S {
        let clone = self.grpc.clone();
        std::mem::replace(&mut self.grpc, clone)
    }
}

/// The service made by [`WebLayer`].
#[derive(Debug, Clone)]
pub struct Web<S> {
    // Whether gRPC-Web is served. Its service wraps the inner one for the
    // call that needs it, so that the per-call clone of this service
    // clones the inner stack once, not twice.
    web: bool,
    http: Option<Arc<HttpApi>>,
    connect: Option<Arc<ConnectApi>>,
    grpc: S,
}

/// The error of a [`WebBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which of the gRPC content types `headers` carry, read once per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GrpcFamily {
    /// Neither: an HTTP request. The HTTP API answers it, 404 with the
    /// catalog's 43 where the path is none of its own.
    None,
    /// `application/grpc`, `application/grpc+proto`, …
    Grpc,
    /// One of the gRPC-Web content types.
    Web,
}

impl GrpcFamily {
    fn of(headers: &http::HeaderMap) -> Self {
        match headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()) {
            Some(v) if v.starts_with(b"application/grpc-web") => Self::Web,
            Some(v) if v.starts_with(b"application/grpc") => Self::Grpc,
            _ => Self::None,
        }
    }
}

impl<S, ResBody> Service<http::Request<tonic::body::Body>> for Web<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError> + fmt::Display,
{
    type Response = http::Response<WebBody<ResBody>>;
    type Error = S::Error;
    type Future = WebFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.grpc.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let family = GrpcFamily::of(request.headers());
        let grpc_family = family != GrpcFamily::None;
        if let Some(api) = self
            .connect
            .as_ref()
            .filter(|_| !grpc_family && ConnectApi::handles(&request))
        {
            let api = api.clone();
            let grpc = self.take_ready();
            return WebFuture::http(async move {
                api.call(grpc, request)
                    .await
                    .map(|body| tonic::body::Body::new(http_body_util::Full::new(body)))
            });
        }
        if let Some(api) = self
            .http
            .as_ref()
            .filter(|_| !grpc_family || HttpApi::handles(&request))
        {
            let api = api.clone();
            let grpc = self.take_ready();
            return WebFuture::http(async move {
                api.call(grpc, request).await.map(tonic::body::Body::new)
            });
        }
        let web =
            self.web && (request.version() != http::Version::HTTP_2 || family == GrpcFamily::Web);
        let kind = if web {
            let mut web = tonic_web::GrpcWebLayer::new().layer(self.take_ready());
            WebKind::Web {
                future: web.call(request),
            }
        } else {
            WebKind::Grpc {
                future: self.grpc.call(request),
            }
        };
        WebFuture { kind }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Web`].
    pub struct WebFuture<F> {
        #[pin]
        kind: WebKind<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = WebKindProj]
    enum WebKind<F> {
        Web { #[pin] future: tonic_web::ResponseFuture<F> },
        Grpc { #[pin] future: F },
        Http { future: Pin<Box<dyn Future<Output = http::Response<tonic::body::Body>> + Send>> },
    }
}

impl<F> WebFuture<F> {
    /// A future that answers the request itself (the HTTP API, Connect).
    fn http(
        future: impl Future<Output = http::Response<tonic::body::Body>> + Send + 'static,
    ) -> Self {
        Self {
            kind: WebKind::Http {
                future: Box::pin(future),
            },
        }
    }
}

impl<F, B, E> Future for WebFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError> + fmt::Display,
{
    type Output = Result<http::Response<WebBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            WebKindProj::Web { future } => future
                .poll(cx)
                .map_ok(|response| response.map(|body| WebBody::web(body))),
            WebKindProj::Grpc { future } => future
                .poll(cx)
                .map_ok(|response| response.map(|body| WebBody::grpc(body))),
            WebKindProj::Http { future } => future
                .as_mut()
                .poll(cx)
                .map(|response| Ok(response.map(WebBody::web))),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response body of [`Web`]: gRPC-Web's, or the inner service's
    /// as it was.
    pub struct WebBody<B> {
        #[pin]
        kind: WebBodyKind<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = WebBodyProj]
    enum WebBodyKind<B> {
        Web { #[pin] body: tonic::body::Body },
        Grpc { #[pin] body: B },
    }
}

impl<B> WebBody<B> {
    fn web(body: tonic::body::Body) -> Self {
        Self {
            kind: WebBodyKind::Web { body },
        }
    }

    fn grpc(body: B) -> Self {
        Self {
            kind: WebBodyKind::Grpc { body },
        }
    }
}

impl<B> Default for WebBody<B> {
    /// An empty body (what a CORS preflight answer carries).
    fn default() -> Self {
        Self::web(tonic::body::Body::default())
    }
}

impl<B> http_body::Body for WebBody<B>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            WebBodyProj::Web { body } => body.poll_frame(cx).map_err(Into::into),
            WebBodyProj::Grpc { body } => body.poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            WebBodyKind::Web { body } => body.is_end_stream(),
            WebBodyKind::Grpc { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.kind {
            WebBodyKind::Web { body } => body.size_hint(),
            WebBodyKind::Grpc { body } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        for good in [
            "https://app.example.com",
            "http://127.0.0.1:8080",
            "HTTPS://App.Example.com",
            "http://[::1]:3000",
            "http://localhost",
        ] {
            assert!(CorsConfig::new([good]).is_ok(), "{good}");
        }
        for (bad, words) in [
            ("app.example.com", "scheme://host"),
            ("ftp://app.example.com", "http or https"),
            ("https://", "host is missing"),
            ("https://app.example.com/", "no path"),
            ("https://app.example.com/x", "no path"),
            ("https://user@app.example.com", "user name"),
            ("https://app.example.com:99999", "port"),
            ("https://app.example.com:", "port"),
            ("https://app example.com", "characters"),
            ("https://прил.example", "punycode"),
        ] {
            let error = CorsConfig::new([bad]).unwrap_err();
            assert!(error.to_string().contains(words), "{bad}: {error}");
        }
        assert!(CorsConfig::new(Vec::<String>::new()).is_err());
    }

    #[test]
    fn the_list_is_stored_lower_case_and_origins_compare_byte_for_byte() {
        // The configured list is case-blind (stored in lower case, as
        // browsers send origins); what a request sends is matched exactly,
        // so a case variant is refused like any origin not on the list.
        let cors = CorsConfig::new(["https://App.example.com"]).unwrap();
        assert!(cors.allows("https://app.example.com"));
        assert!(!cors.allows("HTTPS://APP.EXAMPLE.COM"));
        assert!(!cors.allows("https://App.example.com"));
        assert!(!cors.allows("https://app.example.com:443"));
        assert!(!cors.allows("http://app.example.com"));
        assert!(!cors.allows("null"));
        let any = CorsConfig::new(["https://a.example", "*"]).unwrap();
        assert!(any.allows("null"));
    }
}
