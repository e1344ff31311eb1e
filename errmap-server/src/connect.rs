//! The Connect protocol's unary calls on the gRPC port (work in progress of
//! issue 27: POST in `application/proto` and `application/json`, `GET` for
//! methods without side effects, errors as Connect's JSON body).
//!
//! A Connect call is turned into the gRPC call of the same path and sent
//! through the server's own layers, as the HTTP API's calls are, so auth,
//! admission, the limits, the response layer and the locale apply as on
//! gRPC. The answer is turned back: the message as the codec asked, or the
//! status as Connect's error body, `{"code", "message", "details"}`, its
//! details the same `google.rpc` messages a gRPC client gets, each as
//! `{"type", "value"}` with the value in unpadded base64. The HTTP status
//! comes from the gRPC code by Connect's table (aligned with
//! `google/rpc/code.proto`), not from the catalog's legacy HTTP status.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt as _;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use tonic::{Code, Status};
use tower::Service;

use errmap::{Catalog as _, ErrorCode};

/// The Connect codec of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    /// `application/proto`: the message's protobuf bytes.
    Proto,
    /// `application/json`: the message as proto3 JSON.
    Json,
}

impl Codec {
    fn content_type(self) -> HeaderValue {
        match self {
            Codec::Proto => HeaderValue::from_static("application/proto"),
            Codec::Json => HeaderValue::from_static("application/json"),
        }
    }

    /// The codec a media type names (`application/json; charset=utf-8`
    /// included), or `None`.
    fn of_media_type(value: &[u8]) -> Option<Codec> {
        let media = value.split(|b| *b == b';').next().unwrap_or(value);
        let media = media.trim_ascii();
        if media.eq_ignore_ascii_case(b"application/proto") {
            Some(Codec::Proto)
        } else if media.eq_ignore_ascii_case(b"application/json") {
            Some(Codec::Json)
        } else {
            None
        }
    }

    /// The codec of a GET's `encoding` parameter.
    fn of_encoding(value: &str) -> Option<Codec> {
        match value {
            "proto" => Some(Codec::Proto),
            "json" => Some(Codec::Json),
            _ => None,
        }
    }
}

/// Marks the gRPC call a Connect call became, in its extensions: metrics
/// count it as `rpc_system="connect"`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectCall;

/// Connect's name for a gRPC code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status of a Connect error, by the protocol's table (which
/// governance RFC 003 aligned with `google/rpc/code.proto`).
pub fn http_status(code: Code) -> StatusCode {
    let status = match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unauthenticated => 401,
    };
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Connect's error body for `status`: its code's name, its message, and
/// each detail of its `grpc-status-details-bin` as `{"type", "value"}`,
/// the value in unpadded base64. Details that do not decode are left out.
pub fn error_body(status: &Status) -> String {
    error_parts(status).0
}

/// The error body, and the retry delay of the status's `RetryInfo`, from
/// one reading of its details.
fn error_parts(status: &Status) -> (String, Option<Duration>) {
    let mut body = serde_json::Map::new();
    body.insert("code".into(), code_name(status.code()).into());
    if !status.message().is_empty() {
        body.insert("message".into(), status.message().into());
    }
    let mut delay = None;
    if let Ok(rich) = errmap::pb::rpc::Status::decode(status.details()) {
        let mut details = Vec::with_capacity(rich.details.len());
        for any in &rich.details {
            let kind = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
            if kind == "google.rpc.RetryInfo" && delay.is_none() {
                delay = errmap::pb::rpc::RetryInfo::decode(any.value.as_slice())
                    .ok()
                    .and_then(|r| r.retry_delay)
                    .and_then(|d| Duration::try_from(d).ok());
            }
            details.push(serde_json::json!({
                "type": kind,
                "value": base64::engine::general_purpose::STANDARD_NO_PAD.encode(&any.value),
            }));
        }
        if !details.is_empty() {
            body.insert("details".into(), details.into());
        }
    }
    (serde_json::Value::Object(body).to_string(), delay)
}

/// The whole Connect error response for `status`: the HTTP status by the
/// table, `application/json`, and `Retry-After` (whole seconds, rounded
/// up) where the status carries a retry delay.
pub fn error_response(status: &Status) -> http::Response<Bytes> {
    let (mut body, delay) = error_parts(status);
    if body.len() > crate::layer::MAX_TRAILER_BLOCK {
        // The trailer budget, as a body budget: a status that fit its
        // trailers fits here too, but JSON's quoting may tip one over. The
        // catalog's own answer for the code then goes instead.
        body = error_body(&budget_fallback(status));
    }
    let mut response = http::Response::new(Bytes::from(body));
    *response.status_mut() = http_status(status.code());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(delay) = delay {
        let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// What goes out when a status's Connect body is over the budget: the
/// catalog's status for the same code, or 42 if it has none.
fn budget_fallback(status: &Status) -> Status {
    errmap::details::ErrorDetails::decode(status.details())
        .ok()
        .and_then(|d| d.error_code::<ErrorCode>())
        .map_or_else(
            || Status::from(ErrorCode::ApiInternalServerError),
            Status::from,
        )
}

/// `Connect-Timeout-Ms` in milliseconds, or `None` when the header is
/// absent or not a positive integer of at most ten digits (the spec's
/// limit).
fn timeout_ms(headers: &HeaderMap) -> Option<u64> {
    let text = headers.get(TIMEOUT)?.to_str().ok()?;
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A deadline in milliseconds as gRPC's `grpc-timeout`, which takes at
/// most 8 digits: larger deadlines in seconds.
fn grpc_timeout(ms: u64) -> HeaderValue {
    let value = if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", Duration::from_millis(ms).as_secs().min(99_999_999))
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("99999999S"))
}

/// One unary method a Connect call may name.
#[derive(Debug, Clone)]
struct UnaryMethod {
    input: MessageDescriptor,
    output: MessageDescriptor,
    /// `idempotency_level = NO_SIDE_EFFECTS`: a GET may call it.
    no_side_effects: bool,
}

/// The Connect side of the gRPC port: knows each unary method's types from
/// the descriptors the server holds.
#[derive(Debug, Clone)]
pub struct ConnectApi {
    methods: Arc<HashMap<String, UnaryMethod>>,
    limits: ConnectLimits,
    /// Bytes of Connect request bodies held right now, across calls.
    held: Arc<std::sync::atomic::AtomicUsize>,
    catalogs: crate::reload::LiveCatalogs,
}

/// The limits a Connect request body is read under: the same as a gRPC
/// request's.
#[derive(Debug, Clone, Copy)]
pub struct ConnectLimits {
    /// The largest body, in bytes (`--max-request-size`): over it, 40.
    pub max_request_size: usize,
    /// How long the whole body may take to arrive (the request body
    /// timeout): past it, 40.
    pub body_timeout: Duration,
    /// The bytes all Connect bodies being read may hold at once (the intake
    /// memory): a body that would go over it gets 44.
    pub intake_memory: usize,
}

/// Gives a body's bytes back to the budget when the body is done with.
struct Held<'a> {
    held: &'a std::sync::atomic::AtomicUsize,
    bytes: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Headers of a Connect request that are the protocol's, not the call's
/// metadata.
fn is_protocol_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-type"
            | "content-length"
            | "content-encoding"
            | "accept-encoding"
            | "connect-protocol-version"
            | "connect-timeout-ms"
            | "connect-content-encoding"
            | "connect-accept-encoding"
            | "host"
            | "connection"
            | "te"
            | "transfer-encoding"
            | "upgrade"
            | "keep-alive"
            | "accept"
    )
}

impl ConnectApi {
    /// The unary methods of every service that `pool` defines; a GET's
    /// `ETag` comes from `catalogs`' content hashes.
    pub fn new(
        pool: &DescriptorPool,
        limits: ConnectLimits,
        catalogs: crate::reload::LiveCatalogs,
    ) -> Self {
        let mut methods = HashMap::new();
        for service in pool.services() {
            for method in service.methods() {
                if method.is_client_streaming() || method.is_server_streaming() {
                    continue;
                }
                let no_side_effects = method
                    .options()
                    .get_field_by_name("idempotency_level")
                    .and_then(|v| v.as_enum_number())
                    == Some(1);
                methods.insert(
                    format!("/{}/{}", service.full_name(), method.name()),
                    UnaryMethod {
                        input: method.input(),
                        output: method.output(),
                        no_side_effects,
                    },
                );
            }
        }
        Self {
            methods: Arc::new(methods),
            limits,
            held: Arc::default(),
            catalogs,
        }
    }

    /// Whether `request` is a Connect unary call: a POST in
    /// `application/proto` or `application/json`, or a GET with
    /// `connect=v1` in its query.
    pub fn handles<B>(request: &http::Request<B>) -> bool {
        if !crate::http_api::is_grpc_method_path(request.uri().path()) {
            return false;
        }
        match *request.method() {
            // A POST in a Connect codec, or one that says it is Connect
            // (and gets 415 if its codec is not one of ours).
            Method::POST => {
                request
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|v| Codec::of_media_type(v.as_bytes()).is_some())
                    || request.headers().contains_key(PROTOCOL_VERSION)
            }
            Method::GET => request
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "connect=v1")),
            _ => false,
        }
    }

    /// Answers one Connect call; the gRPC call goes through `grpc`, the
    /// server's layered services.
    pub async fn call<S, B>(
        &self,
        grpc: S,
        request: http::Request<tonic::body::Body>,
    ) -> http::Response<Bytes>
    where
        S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>>,
        B: http_body::Body<Data = Bytes>,
    {
        let get = request.method() == Method::GET;
        let http1 = request.version() <= http::Version::HTTP_11;
        let credentials = request.headers().contains_key(header::AUTHORIZATION);
        let tag = get.then(|| self.etag(&request));
        let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
        // A POST's codec is its content type; a GET's, its encoding
        // parameter, read with the rest of its query.
        let post_codec = if get {
            None
        } else {
            request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| Codec::of_media_type(v.as_bytes()))
        };
        if !get && post_codec.is_none() {
            let mut response = error_response(&invalid(
                "a Connect call's content type is application/proto or application/json",
            ));
            *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return response;
        }
        // Connect-Timeout-Ms is the call's deadline: the answer is dropped
        // at it, and the caller gets deadline_exceeded (the connection's
        // own backstop reads only gRPC's grpc-timeout).
        let timeout = timeout_ms(request.headers());
        // Whether the body has been read whole: a deadline that passes
        // before leaves the rest of it on the connection.
        let body_read = AtomicBool::new(get);
        let answer = self.answer(grpc, request, post_codec, timeout, &body_read);
        let answered = match timeout {
            Some(ms) => tokio::time::timeout(Duration::from_millis(ms), answer)
                .await
                .unwrap_or_else(|_| {
                    Err(Failure {
                        status: Status::deadline_exceeded(
                            "the call ran past its Connect-Timeout-Ms",
                        ),
                        body_refused: !body_read.load(Ordering::Acquire),
                    })
                }),
            None => answer.await,
        };
        let mut response = match answered {
            Ok(response) => response,
            Err(failure) => {
                let mut response = error_response(&failure.status);
                // A body refused part-way (too large, too slow, over the
                // budget, or cut off by the deadline) leaves bytes on an HTTP/1.1 connection that no
                // request will read: the client must not reuse it.
                if http1 && failure.body_refused {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        };
        if let Some(tag) = tag.filter(|_| response.status() == StatusCode::OK) {
            if if_none_match.is_some_and(|v| etag_matches(&v, &tag)) {
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                *response.body_mut() = Bytes::new();
                response.headers_mut().remove(header::CONTENT_TYPE);
            }
            response.headers_mut().insert(header::ETAG, tag);
            response
                .headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Accept-Language"));
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(if credentials {
                    "private, no-cache"
                } else {
                    "public, no-cache"
                }),
            );
        }
        response
    }

    /// Reads a request body within the limits: the size, the body timeout,
    /// and the budget all Connect bodies share.
    async fn read_body(&self, mut body: tonic::body::Body) -> Result<Vec<u8>, Failure> {
        let mut held = Held {
            held: &self.held,
            bytes: 0,
        };
        let mut out = Vec::new();
        let read = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| invalid("the request body could not be read"))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if out.len() + data.len() > self.limits.max_request_size {
                    return Err(invalid("the request is over the size limit"));
                }
                let before = self.held.fetch_add(data.len(), Ordering::AcqRel);
                held.bytes += data.len();
                if before + data.len() > self.limits.intake_memory {
                    return Err(Status::from(ErrorCode::ApiTooManyRequests));
                }
                out.extend_from_slice(&data);
            }
            Ok(())
        };
        let refused = |status| Failure {
            status,
            body_refused: true,
        };
        match tokio::time::timeout(self.limits.body_timeout, read).await {
            Ok(Ok(())) => Ok(out),
            Ok(Err(status)) => Err(refused(status)),
            Err(_) => Err(refused(invalid("the request body did not arrive in time"))),
        }
    }

    /// A GET's entity tag: the catalogs' content hashes, the path, the
    /// query and the locale asked for, hashed. An answer changes only when
    /// one of them does (a reload, another question, another language).
    fn etag<B>(&self, request: &http::Request<B>) -> HeaderValue {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for table in self.catalogs.load().tables() {
            table.content_hash().hash(&mut hasher);
        }
        request.uri().path().hash(&mut hasher);
        request.uri().query().unwrap_or("").hash(&mut hasher);
        request
            .headers()
            .get(header::ACCEPT_LANGUAGE)
            .map(HeaderValue::as_bytes)
            .hash(&mut hasher);
        HeaderValue::from_str(&format!("\"{:016x}\"", hasher.finish()))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
    }

    async fn answer<S, B>(
        &self,
        grpc: S,
        request: http::Request<tonic::body::Body>,
        post_codec: Option<Codec>,
        timeout: Option<u64>,
        body_read: &AtomicBool,
    ) -> Result<http::Response<Bytes>, Failure>
    where
        S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>>,
        B: http_body::Body<Data = Bytes>,
    {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let method = self.methods.get(&path).cloned();
        let (codec, message) = if let Some(codec) = post_codec {
            let message = self.read_body(body).await?;
            body_read.store(true, Ordering::Release);
            (codec, message)
        } else {
            // The query is bounded by the head limits; its message by the
            // size limit, as a body is.
            let query = crate::http_api::parse_query_whole(parts.uri.query().unwrap_or(""));
            let codec = query
                .get("encoding")
                .and_then(|e| Codec::of_encoding(e))
                .ok_or_else(|| invalid("the encoding parameter must be proto or json"))?;
            let Some(method) = &method else {
                return Err(Status::from(ErrorCode::ApiMethodNotFound).into());
            };
            if !method.no_side_effects {
                return Err(Status::from(ErrorCode::ApiMethodNotFound).into());
            }
            let raw = query.get("message").cloned().unwrap_or_default();
            let bytes = if query.get("base64").map(String::as_str) == Some("1") {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(raw.trim_end_matches('='))
                    .map_err(|_| invalid("the message parameter is not base64"))?
            } else {
                raw.into_bytes()
            };
            if bytes.len() > self.limits.max_request_size {
                return Err(invalid("the request is over the size limit").into());
            }
            (codec, bytes)
        };
        // A method the descriptors do not name may still be served (a
        // service added without its descriptor set): in proto, the call
        // goes through as it is, and routing answers 43 if nothing serves
        // it. JSON needs the types.
        let proto = match (codec, &method) {
            (Codec::Proto, _) => message,
            (Codec::Json, None) => return Err(Status::from(ErrorCode::ApiMethodNotFound).into()),
            (Codec::Json, Some(method)) => {
                let text = if message.is_empty() {
                    b"{}".as_slice()
                } else {
                    &message
                };
                let mut deserializer = serde_json::Deserializer::from_slice(text);
                let decoded = DynamicMessage::deserialize(method.input.clone(), &mut deserializer)
                    .map_err(|e| {
                        invalid(&format!(
                            "the JSON is not a {}: {e}",
                            method.input.full_name()
                        ))
                    })?;
                decoded.encode_to_vec()
            }
        };
        let path =
            http::Uri::try_from(path).map_err(|_| Status::from(ErrorCode::ApiMethodNotFound))?;
        let mut request = crate::unary::request(path, &proto);
        // The connection's extensions (the peer) go along, with the mark.
        *request.extensions_mut() = parts.extensions;
        request.extensions_mut().insert(ConnectCall);
        let out = request.headers_mut();
        for (name, value) in parts.headers.iter().filter(|(n, _)| !is_protocol_header(n)) {
            out.append(name.clone(), value.clone());
        }
        if let Some(ms) = timeout {
            out.insert("grpc-timeout", grpc_timeout(ms));
        }
        let crate::unary::Answer {
            headers,
            message: reply,
            trailers,
        } = crate::unary::call(grpc, request).await?;
        let body = match (codec, &method) {
            (Codec::Proto, _) => reply,
            (Codec::Json, None) => {
                return Err(Status::from(ErrorCode::ApiInternalServerError).into())
            }
            (Codec::Json, Some(method)) => {
                let decoded = DynamicMessage::decode(method.output.clone(), reply)
                    .map_err(|_| Status::from(ErrorCode::ApiInternalServerError))?;
                let options = prost_reflect::SerializeOptions::new().use_enum_numbers(true);
                let mut out = Vec::with_capacity(256);
                let mut serializer = serde_json::Serializer::new(&mut out);
                decoded
                    .serialize_with_options(&mut serializer, &options)
                    .map_err(|_| Status::from(ErrorCode::ApiInternalServerError))?;
                Bytes::from(out)
            }
        };
        let mut response = http::Response::new(body);
        let out = response.headers_mut();
        for (name, value) in headers.iter().filter(|(n, _)| !is_grpc_header(n)) {
            out.append(name.clone(), value.clone());
        }
        for (name, value) in trailers.iter().filter(|(n, _)| !is_grpc_header(n)) {
            if let Ok(name) =
                HeaderName::from_bytes(format!("trailer-{}", name.as_str()).as_bytes())
            {
                out.append(name, value.clone());
            }
        }
        out.insert(header::CONTENT_TYPE, codec.content_type());
        Ok(response)
    }
}

/// `Connect-Protocol-Version`, which a Connect client sends with every call.
const PROTOCOL_VERSION: &str = "connect-protocol-version";

/// Why a Connect call failed: its status, and whether its body was
/// refused before its end.
struct Failure {
    status: Status,
    body_refused: bool,
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Self {
            status,
            body_refused: false,
        }
    }
}

/// `Connect-Timeout-Ms`, the call's deadline in milliseconds.
const TIMEOUT: &str = "connect-timeout-ms";

/// Whether an `If-None-Match` value names `tag` (or is `*`).
fn etag_matches(value: &HeaderValue, tag: &HeaderValue) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    value
        .split(',')
        .map(str::trim)
        .any(|v| v == "*" || v.strip_prefix("W/").unwrap_or(v) == tag.to_str().unwrap_or(""))
}

/// 40 with a developer message that says what was wrong.
fn invalid(why: &str) -> Status {
    ErrorCode::ApiInvalidRequest
        .builder()
        .message(why.to_owned())
        .build()
        .unwrap_or_else(|_| Status::from(ErrorCode::ApiInvalidRequest))
}

fn is_grpc_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("grpc-")
        || name == header::CONTENT_TYPE
        || name == header::CONTENT_LENGTH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_connects() {
        for (code, name, status) in [
            (Code::NotFound, "not_found", 404),
            (Code::Unauthenticated, "unauthenticated", 401),
            (Code::ResourceExhausted, "resource_exhausted", 429),
            (Code::InvalidArgument, "invalid_argument", 400),
            (Code::Unavailable, "unavailable", 503),
            (Code::Internal, "internal", 500),
            (Code::Unimplemented, "unimplemented", 501),
            (Code::Cancelled, "canceled", 499),
            (Code::DeadlineExceeded, "deadline_exceeded", 504),
            (Code::FailedPrecondition, "failed_precondition", 400),
        ] {
            assert_eq!(code_name(code), name);
            assert_eq!(http_status(code).as_u16(), status, "{name}");
        }
    }

    #[test]
    fn an_error_body_carries_the_catalog_details_in_unpadded_base64() {
        let status = Status::from(ErrorCode::ApiTooManyRequests);
        let body: serde_json::Value = serde_json::from_str(&error_body(&status)).unwrap();
        assert_eq!(body["code"], "resource_exhausted");
        assert_eq!(body["message"], status.message());
        let details = body["details"].as_array().unwrap();
        let kinds: Vec<&str> = details
            .iter()
            .map(|d| d["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "google.rpc.ErrorInfo",
                "google.rpc.LocalizedMessage",
                "google.rpc.RetryInfo"
            ]
        );
        let value = details[0]["value"].as_str().unwrap();
        assert!(!value.ends_with('='), "unpadded: {value}");
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(value)
            .unwrap();
        let info = errmap::pb::rpc::ErrorInfo::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            (info.reason.as_str(), info.metadata["code"].as_str()),
            ("API_TOO_MANY_REQUESTS", "44")
        );
        let response = error_response(&status);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn connect_timeouts_become_grpc_timeouts() {
        let ms = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(TIMEOUT, HeaderValue::from_str(value).unwrap());
            timeout_ms(&headers)
        };
        assert_eq!(grpc_timeout(ms("250").unwrap()), "250m");
        assert_eq!(grpc_timeout(ms("100000000").unwrap()), "100000S");
        for bad in ["", "-1", "1.5", "12345678901", "abc"] {
            assert!(ms(bad).is_none(), "{bad}");
        }
        assert!(timeout_ms(&HeaderMap::new()).is_none());
    }

    #[test]
    fn codecs_by_media_type_and_encoding() {
        assert_eq!(
            Codec::of_media_type(b"application/json; charset=utf-8"),
            Some(Codec::Json)
        );
        assert_eq!(
            Codec::of_media_type(b"Application/Proto"),
            Some(Codec::Proto)
        );
        assert_eq!(Codec::of_media_type(b"application/grpc"), None);
        assert_eq!(Codec::of_encoding("json"), Some(Codec::Json));
        assert_eq!(Codec::of_encoding("xml"), None);
    }

    #[test]
    fn queries_are_percent_decoded() {
        let parse = crate::http_api::parse_query_whole;
        let q = parse("message=%7B%22code%22%3A48%7D&encoding=json&connect=v1&x=a+b");
        assert_eq!(q["message"], "{\"code\":48}");
        assert_eq!(q["x"], "a b");
        assert_eq!(parse("m=%zz%4")["m"], "%zz%4");
    }
}
