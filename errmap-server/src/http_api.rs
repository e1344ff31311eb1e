//! The lookup API over HTTP/JSON and the catalog as pages, on the gRPC
//! port.
//!
//! - `GET /v1/errors/{code or NAME}` answers the `ErrorDescriptor` as proto3
//!   JSON; `GET /v1/errors?category=C&domain=D` lists them. Each request is
//!   turned into the `errmap.v1.ErrorCatalog` gRPC call and sent through the
//!   server's own layers, so auth, admission, the limits and the locale
//!   apply as on gRPC. A token comes from `Authorization: Bearer` or the
//!   `token` query parameter. Errors are mapped by [`crate::http_error`],
//!   in the shape `Accept` asks for (`application/problem+json` gives RFC
//!   9457) or the configured default.
//! - `GET /` lists every code of every catalog (filters: `category`, `q`;
//!   `lang` overrides `Accept-Language`); `GET /errors/{NAME}` is the page
//!   of one code. Rendered on the server (askama), no JavaScript.

use std::{collections::HashMap, fmt::Write as _, time::Duration};

use askama::Template;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use prost::Message as _;
use prost_reflect::DynamicMessage;
use tonic::{Code, Status};
use tower::Service;

use errmap::{
    catalog::{grpc_code_name, CatalogEntry, CatalogTable},
    catalog_set::Catalogs,
    locale::{self, AcceptLanguage as _},
    pb::{get_error_request::Key, GetErrorRequest, ListErrorsRequest},
    Catalog as _, ErrorCode,
};

use crate::{
    http_error::{HttpErrors, Shape},
    reload::LiveCatalogs,
};

/// Whether `path` has a gRPC method's shape: `/package.Service/Method`.
pub(crate) fn is_grpc_method_path(path: &str) -> bool {
    let mut parts = path.strip_prefix('/').unwrap_or("").split('/');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(service), Some(method), None)
            if service.contains('.') && !method.is_empty()
    )
}

fn is_api_path(path: &str) -> bool {
    path == "/"
        || path.starts_with("/errors/")
        || path == "/v1/errors"
        || path.starts_with("/v1/errors/")
}

/// `message` as proto3 JSON, enums as numbers: `ErrorDescriptor.code` is
/// typed as errmap's own enum, and by name it would print errmap's value of
/// that number for every other catalog (`"AUTH_EMAIL_TAKEN"` for the shop's
/// 1). Fields that hold a code keep their explicit presence, so zero prints.
fn proto_json(message: &DynamicMessage) -> Option<String> {
    let options = prost_reflect::SerializeOptions::new().use_enum_numbers(true);
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(&mut serializer, &options)
        .ok()?;
    String::from_utf8(out).ok()
}

/// The longest query string read; the rest is ignored.
const MAX_QUERY: usize = 2048;

/// Serves the HTTP API and the pages; made by
/// [`ErrmapServer`](crate::server::ErrmapServer).
#[derive(Debug, Clone)]
pub struct HttpApi {
    errors: HttpErrors,
    catalogs: LiveCatalogs,
}

impl HttpApi {
    /// The API and pages over `catalogs`, errors mapped by `errors`.
    pub fn new(catalogs: Catalogs, errors: HttpErrors) -> Self {
        Self::with_live_catalogs(LiveCatalogs::new(catalogs), errors)
    }

    /// The API and pages over the catalogs current at each request, which
    /// a reload replaces.
    pub fn with_live_catalogs(catalogs: LiveCatalogs, errors: HttpErrors) -> Self {
        Self { errors, catalogs }
    }

    /// Whether `request` is one of ours: any method on `/`, `/errors/…` or
    /// `/v1/errors…` (no gRPC method has such a path). `GET` and `HEAD`
    /// are answered; any other method gets 405 with `Allow`.
    pub fn handles<B>(request: &http::Request<B>) -> bool {
        is_api_path(request.uri().path())
    }

    /// Answers `request`; gRPC calls go through `grpc`, the server's
    /// layered services.
    pub async fn call<S, B>(
        &self,
        grpc: S,
        request: http::Request<tonic::body::Body>,
    ) -> http::Response<String>
    where
        S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>>,
        B: http_body::Body<Data = Bytes>,
    {
        if !is_api_path(request.uri().path()) {
            return self.not_ours(&request);
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            // hyper sends no body for HEAD, so HEAD is GET here.
            let mut response = http::Response::new(String::new());
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let query = parse_query(request.uri().query().unwrap_or(""));
        let credentials =
            request.headers().contains_key(header::AUTHORIZATION) || query.contains_key("token");
        let mut response = self.answer(grpc, request, &query).await;
        if credentials {
            // What a request with credentials gets back is the caller's
            // alone: no shared cache may keep it, whether or not auth is
            // on.
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            );
        }
        response
    }

    async fn answer<S, B>(
        &self,
        grpc: S,
        request: http::Request<tonic::body::Body>,
        query: &HashMap<String, String>,
    ) -> http::Response<String>
    where
        S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>>,
        B: http_body::Body<Data = Bytes>,
    {
        let path = request.uri().path().to_owned();
        let headers = request.headers().clone();
        if path == "/" {
            return self.catalog_page(query, &headers);
        }
        if let Some(name) = path.strip_prefix("/errors/") {
            return self.error_page(name, query, &headers);
        }
        let key = path
            .strip_prefix("/v1/errors")
            .map(|rest| rest.trim_start_matches('/'))
            .unwrap_or("");
        let domain = query.get("domain").cloned();
        let (grpc_path, message) = if key.is_empty() {
            (
                "/errmap.v1.ErrorCatalog/ListErrors",
                ListErrorsRequest {
                    category: query.get("category").cloned().unwrap_or_default(),
                    domain,
                }
                .encode_to_vec(),
            )
        } else {
            let key = percent_decode(key);
            let key = match key.parse::<i32>() {
                Ok(code) => Key::Code(code),
                Err(_) => Key::Name(key.to_ascii_uppercase()),
            };
            (
                "/errmap.v1.ErrorCatalog/GetError",
                GetErrorRequest {
                    key: Some(key),
                    domain,
                }
                .encode_to_vec(),
            )
        };
        let response_type = if key.is_empty() {
            "errmap.v1.ListErrorsResponse"
        } else {
            "errmap.v1.GetErrorResponse"
        };
        match unary(grpc, grpc_path, message, &headers, query.get("token")).await {
            Ok(bytes) => self.json_message(response_type, &bytes, &headers),
            Err(status) => self.error(&status, &headers),
        }
    }

    /// A request without a gRPC content type for a path that is not the
    /// API's nor a page's. On a gRPC method's path (`/package.Service/Method`)
    /// it is 415, as the gRPC over HTTP/2 spec asks, with the catalog's 40
    /// in the body and as a trailers-only gRPC status in the headers; any
    /// other path is 404 with the catalog's 43. Both in the shape asked for.
    fn not_ours(&self, request: &http::Request<tonic::body::Body>) -> http::Response<String> {
        let headers = request.headers();
        if !is_grpc_method_path(request.uri().path()) {
            return self.error(
                &ErrorCode::ApiMethodNotFound.to_status_for(headers),
                headers,
            );
        }
        let status = ErrorCode::ApiInvalidRequest
            .builder()
            .locale(headers)
            .message("a gRPC method takes content-type application/grpc (or a gRPC-Web type)")
            .build()
            .unwrap_or_else(Status::from);
        let mut response = self.errors.response_as(
            &status,
            Shape::from_accept(headers, self.errors.default_shape()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        );
        let _ = status.add_header(response.headers_mut());
        response
    }

    fn error(&self, status: &Status, headers: &HeaderMap) -> http::Response<String> {
        self.errors.response_for(status, headers)
    }

    /// A gRPC answer as proto3 JSON.
    fn json_message(
        &self,
        name: &str,
        bytes: &[u8],
        headers: &HeaderMap,
    ) -> http::Response<String> {
        let value = crate::http_error::pool()
            .get_message_by_name(name)
            .and_then(|d| DynamicMessage::decode(d, bytes).ok())
            .and_then(|m| proto_json(&m));
        match value {
            Some(json) => {
                let mut response = http::Response::new(json);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            None => self.error(
                &ErrorCode::ApiInternalServerError.to_status_for(headers),
                headers,
            ),
        }
    }

    /// The locale wanted: `?lang=`, else `Accept-Language`.
    fn wanted_language(query: &HashMap<String, String>, headers: &HeaderMap) -> String {
        match query.get("lang") {
            Some(lang) if !lang.is_empty() => lang.clone(),
            _ => headers
                .accept_language()
                .and_then(|v| std::str::from_utf8(v).ok())
                .unwrap_or("")
                .to_owned(),
        }
    }

    fn languages<'a>(
        catalogs: &'a Catalogs,
        current: &str,
        base: &str,
        query: &HashMap<String, String>,
    ) -> Vec<Language<'a>> {
        let mut tags: Vec<&'a str> = Vec::new();
        for table in catalogs.tables() {
            for tag in table.locales() {
                if !tags.contains(tag) {
                    tags.push(tag);
                }
            }
        }
        tags.into_iter()
            .map(|tag| {
                let mut params: Vec<(String, String)> = query
                    .iter()
                    // A token is a credential: never echoed into a link.
                    .filter(|(k, _)| k.as_str() != "lang" && k.as_str() != "token")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                params.sort();
                params.push(("lang".to_owned(), tag.to_owned()));
                Language {
                    tag,
                    current: tag == current,
                    href: format!("{base}?{}", encode_query(&params)),
                }
            })
            .collect()
    }

    fn catalog_page(
        &self,
        query: &HashMap<String, String>,
        headers: &HeaderMap,
    ) -> http::Response<String> {
        let wanted = Self::wanted_language(query, headers);
        let catalogs = self.catalogs.load();
        let default = catalogs.default_table();
        let lang = default.map_or(locale::DEFAULT_LOCALE, |t| t.negotiate(wanted.as_str()));
        let category = query.get("category").map(String::as_str).unwrap_or("");
        let text = query
            .get("q")
            .map(|q| q.trim().to_lowercase())
            .unwrap_or_default();
        let mut rows = Vec::new();
        let mut total = 0;
        let mut categories: Vec<Category<'_>> = Vec::new();
        for table in catalogs.tables() {
            let locale = table.negotiate(wanted.as_str());
            for c in table.categories() {
                if !categories.iter().any(|k| k.name == c) {
                    categories.push(Category {
                        name: c,
                        selected: c == category,
                    });
                }
            }
            for e in table.entries() {
                total += 1;
                let message = e.message_in(locale).unwrap_or(e.message());
                let matches_text = text.is_empty()
                    || e.name().to_lowercase().contains(&text)
                    || message.to_lowercase().contains(&text)
                    || e.message().to_lowercase().contains(&text)
                    || e.number_str() == text;
                if (category.is_empty() || e.category() == category) && matches_text {
                    rows.push(row(table, e, message, &page_link(table, e, query)));
                }
            }
        }
        let page = CatalogPage {
            lang,
            languages: Self::languages(&catalogs, lang, "/", query),
            filtered: !category.is_empty() || !text.is_empty(),
            categories,
            query: query.get("q").cloned().unwrap_or_default(),
            lang_param: query.get("lang").cloned().unwrap_or_default(),
            total,
            one_domain: match catalogs.len() {
                1 => catalogs.default_table().map(|t| t.domain()),
                _ => None,
            },
            rows,
        };
        html(page.render())
    }

    fn error_page(
        &self,
        name: &str,
        query: &HashMap<String, String>,
        headers: &HeaderMap,
    ) -> http::Response<String> {
        let name = percent_decode(name);
        let wanted_domain = query.get("domain");
        let catalogs = self.catalogs.load();
        let found = catalogs
            .tables()
            .filter(|t| wanted_domain.is_none_or(|d| d == t.domain()))
            .find_map(|t| Some((t, t.by_name(&name)?)));
        let Some((table, e)) = found else {
            let status = ErrorCode::ApiItemNotFound
                .builder()
                .locale(headers)
                .message(format!("no catalog error is named {:?}", clip(&name)))
                .build()
                .unwrap_or_else(Status::from);
            let mut response = self.error(&status, headers);
            *response.status_mut() = StatusCode::NOT_FOUND;
            return response;
        };
        let wanted = Self::wanted_language(query, headers);
        let lang = table.negotiate(wanted.as_str());
        let message = e.message_in(lang).unwrap_or(e.message());
        let page = ErrorPage {
            lang,
            languages: Self::languages(&catalogs, lang, &format!("/errors/{}", e.name()), query),
            back: match query.get("lang") {
                Some(l) => format!("/?{}", encode_query(&[("lang".to_owned(), l.clone())])),
                None => "/".to_owned(),
            },
            row: row(table, e, message, ""),
            advice: advice(e),
        };
        html(page.render())
    }
}

/// One language of the switch.
struct Language<'a> {
    tag: &'a str,
    current: bool,
    href: String,
}

struct Category<'a> {
    name: &'a str,
    selected: bool,
}

struct Row<'a> {
    number: i32,
    name: &'a str,
    /// The name cut after each `_`, where the page may break it.
    name_parts: Vec<&'a str>,
    category: &'a str,
    grpc: &'a str,
    /// The gRPC code's name cut after each `_`.
    grpc_parts: Vec<&'a str>,
    http: u16,
    /// The message, its `backticked` parts shown as code.
    message: Vec<Span<'a>>,
    retry: String,
    domain: &'a str,
    /// The placeholders of the message template.
    params: Vec<&'a str>,
    href: String,
}

/// A run of a message: plain text, or code (between backticks).
struct Span<'a> {
    text: &'a str,
    code: bool,
}

/// `message` cut at its backticks: the runs between a pair are code. An
/// unpaired backtick stays as it is, in the text.
fn spans(message: &str) -> Vec<Span<'_>> {
    let mut out = Vec::new();
    let mut rest = message;
    while let Some(open) = rest.find('`') {
        let Some(len) = rest[open + 1..].find('`') else {
            break;
        };
        if open > 0 {
            out.push(Span {
                text: &rest[..open],
                code: false,
            });
        }
        out.push(Span {
            text: &rest[open + 1..open + 1 + len],
            code: true,
        });
        rest = &rest[open + 2 + len..];
    }
    if !rest.is_empty() {
        out.push(Span {
            text: rest,
            code: false,
        });
    }
    out
}

fn row<'a>(table: &'a CatalogTable, e: &'a CatalogEntry, message: &'a str, href: &str) -> Row<'a> {
    Row {
        number: e.number(),
        name: e.name(),
        name_parts: e.name().split_inclusive('_').collect(),
        category: e.category(),
        grpc: grpc_code_name(e.grpc_code()),
        grpc_parts: grpc_code_name(e.grpc_code()).split_inclusive('_').collect(),
        http: e.http_status(),
        message: spans(message),
        retry: e.retry_delay().map(retry_text).unwrap_or_default(),
        domain: table.domain(),
        params: e.params().collect(),
        href: href.to_owned(),
    }
}

/// The page of `e`: `/errors/NAME`, with the catalog's domain when it is
/// not the default one, and the language asked for.
fn page_link(table: &CatalogTable, e: &CatalogEntry, query: &HashMap<String, String>) -> String {
    let mut params = Vec::new();
    if table.domain() != errmap::DOMAIN {
        params.push(("domain".to_owned(), table.domain().to_owned()));
    }
    if let Some(lang) = query.get("lang") {
        params.push(("lang".to_owned(), lang.clone()));
    }
    if params.is_empty() {
        format!("/errors/{}", e.name())
    } else {
        format!("/errors/{}?{}", e.name(), encode_query(&params))
    }
}

fn retry_text(d: Duration) -> String {
    format!("{} s", errmap::catalog::delay_seconds(d))
}

/// What a client should do about a code, from its gRPC code and delay.
fn advice(e: &CatalogEntry) -> String {
    let name = e.name();
    let mut text = match e.grpc_code() {
        Code::Unauthenticated if name.contains("EXPIRED") => {
            "Get a new token (refresh it), then send the call again.".to_owned()
        }
        Code::Unauthenticated => {
            "Sign in: send a valid token in the Authorization header (Bearer) or the token parameter, then send the call again.".to_owned()
        }
        Code::PermissionDenied => {
            "Do not retry: the caller may not do this. Ask for access, or act as a caller who may.".to_owned()
        }
        Code::InvalidArgument | Code::OutOfRange => {
            "Fix the request before sending it again: the google.rpc.BadRequest detail, when present, names each field and what is wrong with it.".to_owned()
        }
        Code::NotFound => {
            "Check the identifier you sent; the thing it names does not exist (or no longer does). Do not retry unchanged.".to_owned()
        }
        Code::AlreadyExists => {
            "Use the existing resource, or pick another identifier.".to_owned()
        }
        Code::FailedPrecondition => {
            "Change the state the call depends on first (see the message), then send it again.".to_owned()
        }
        Code::Unimplemented => {
            "Do not retry: this server does not offer the method. Check the method name and the server version.".to_owned()
        }
        Code::ResourceExhausted | Code::Unavailable | Code::Aborted => {
            "Retry later, with backoff.".to_owned()
        }
        Code::Internal | Code::Unknown | Code::DataLoss => {
            "The fault is the server's. Retry later; report it if it persists.".to_owned()
        }
        _ => "Read the message; it says what went wrong.".to_owned(),
    };
    if let Some(delay) = e.retry_delay() {
        let _ = write!(
            text,
            " Wait at least {} before retrying: the google.rpc.RetryInfo detail (and the Retry-After header over HTTP) carries the delay.",
            retry_text(delay)
        );
    }
    text
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogPage<'a> {
    lang: &'a str,
    languages: Vec<Language<'a>>,
    categories: Vec<Category<'a>>,
    query: String,
    lang_param: String,
    filtered: bool,
    total: usize,
    /// The domain of every code, when the server serves one catalog: the
    /// page says it once, and has no Domain column.
    one_domain: Option<&'a str>,
    rows: Vec<Row<'a>>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    lang: &'a str,
    languages: Vec<Language<'a>>,
    back: String,
    row: Row<'a>,
    advice: String,
}

fn html(rendered: askama::Result<String>) -> http::Response<String> {
    match rendered {
        Ok(page) => {
            let mut response = http::Response::new(page);
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            response
        }
        Err(error) => {
            tracing::error!(%error, "a catalog page did not render");
            let mut response = http::Response::new("the page could not be rendered".to_owned());
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

fn clip(text: &str) -> &str {
    errmap::status::cut_at_char_boundary(text, 100)
}

/// Sends one unary gRPC call through `grpc` and returns the answer's
/// message bytes, or its status.
async fn unary<S, B>(
    grpc: S,
    path: &'static str,
    message: Vec<u8>,
    headers: &HeaderMap,
    token: Option<&String>,
) -> Result<Bytes, Status>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>>,
    B: http_body::Body<Data = Bytes>,
{
    let mut request = crate::unary::request(http::Uri::from_static(path), &message);
    let out = request.headers_mut();
    for name in [
        header::AUTHORIZATION,
        header::ACCEPT_LANGUAGE,
        http::HeaderName::from_static("traceparent"),
        http::HeaderName::from_static("tracestate"),
    ] {
        if let Some(value) = headers.get(&name) {
            out.insert(name, value.clone());
        }
    }
    if let Some(token) = token {
        if let Ok(value) = HeaderValue::from_str(token) {
            out.insert("token", value);
        }
    }
    Ok(crate::unary::call(grpc, request).await?.message)
}

/// `a=1&b=x%20y` → map; `+` is a space; the first value of a name wins.
/// The HTTP API reads the first [`MAX_QUERY`] bytes of a query.
fn parse_query(query: &str) -> HashMap<String, String> {
    parse_query_whole(errmap::status::cut_at_char_boundary(query, MAX_QUERY))
}

/// [`parse_query`] of all of `query`, for a caller that bounds it itself.
pub(crate) fn parse_query_whole(query: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(percent_decode(key))
            .or_insert_with(|| percent_decode(value));
    }
    out
}

fn percent_decode(text: &str) -> String {
    errmap::headers::percent_decode(text.replace('+', " ").as_bytes()).into_owned()
}

fn encode_query(params: &[(String, String)]) -> String {
    let encode = |text: &str| {
        let mut out = String::new();
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(b as char);
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
        out
    };
    params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backticks_mark_code_and_an_unpaired_one_stays_text() {
        let shown = |m: &str| {
            spans(m)
                .iter()
                .map(|s| {
                    if s.code {
                        format!("<{}>", s.text)
                    } else {
                        s.text.to_owned()
                    }
                })
                .collect::<String>()
        };
        assert_eq!(
            shown("Send the `token` param or the `Authorization` header."),
            "Send the <token> param or the <Authorization> header."
        );
        assert_eq!(shown("`a` b"), "<a> b");
        assert_eq!(shown("a ` b"), "a ` b");
        assert_eq!(shown("``"), "<>");
        assert_eq!(shown(""), "");
    }

    #[test]
    fn queries_decode() {
        let q = parse_query("category=auth_token&q=expired+token&lang=ru%2DRU&q=second");
        assert_eq!(q["category"], "auth_token");
        assert_eq!(q["q"], "expired token");
        assert_eq!(q["lang"], "ru-RU");
    }

    #[test]
    fn every_code_has_advice() {
        for e in ErrorCode::table().entries() {
            let text = advice(e);
            assert!(text.len() > 20, "{}", e.name());
            if e.retry_delay().is_some() {
                assert!(text.contains("Wait at least"), "{}", e.name());
            }
        }
    }
}
