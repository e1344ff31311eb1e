//! The Connect protocol's unary calls on the gRPC port, on the wire, with
//! hyper's client over HTTP/1.1 and h2c: the status and content type of
//! each answer, the error body and its unpadded base64 details (the same
//! ErrorInfo a gRPC client gets), GET beside POST with ETag and
//! If-None-Match, the limits and the deadline, and `connect = false`.

mod common;

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use common::TestServer;
use errmap::{pb, ErrorStatusExt as _};
use errmap_server::{
    auth::{AuthInterceptor, JwtVerifier},
    server::ServerConfig,
};
use prost::Message as _;
use serde_json::Value;

struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
    }

    /// The error body's detail of `kind`, decoded from unpadded base64.
    fn detail(&self, kind: &str) -> Vec<u8> {
        let body = self.json();
        let detail = body["details"]
            .as_array()
            .unwrap_or_else(|| panic!("no details in {body}"))
            .iter()
            .find(|d| d["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {body}"));
        let value = detail["value"].as_str().unwrap();
        assert!(!value.ends_with('='), "padded base64: {value}");
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(value)
            .unwrap()
    }
}

/// One request with hyper's client, over HTTP/1.1 or h2c.
async fn send(
    http2: bool,
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let (status, headers, body) = common::http_request(http2, method, url, headers, body).await;
    Reply {
        status,
        headers,
        body,
    }
}

/// A `POST` with [`send`].
async fn post(http2: bool, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    send(http2, http::Method::POST, url, headers, body).await
}

const GET_ERROR: &str = "/errmap.v1.ErrorCatalog/GetError";
const JSON: (&str, &str) = ("content-type", "application/json");
const PROTO: (&str, &str) = ("content-type", "application/proto");
const VERSION: (&str, &str) = ("connect-protocol-version", "1");

fn request_proto(code: i32) -> Vec<u8> {
    pb::GetErrorRequest {
        key: Some(pb::get_error_request::Key::Code(code)),
        domain: None,
    }
    .encode_to_vec()
}

/// The ErrorInfo a gRPC client gets for GetError(`code`).
async fn grpc_error_info(server: &TestServer, code: i32) -> pb::rpc::ErrorInfo {
    let status = pb::error_catalog_client::ErrorCatalogClient::new(server.channel().await)
        .get_error(pb::GetErrorRequest {
            key: Some(pb::get_error_request::Key::Code(code)),
            domain: None,
        })
        .await
        .unwrap_err();
    let (_, info) = status.error_info::<errmap::ErrorCode>().unwrap();
    info
}

#[tokio::test]
async fn hits_and_misses_in_json_and_proto_over_http1_and_h2c() {
    let server = TestServer::start_default().await;
    let url = format!("http://{}{GET_ERROR}", server.addr);
    let grpc_miss = grpc_error_info(&server, 48).await;
    for http2 in [false, true] {
        // A hit, JSON.
        let hit = post(http2, &url, &[JSON, VERSION], br#"{"code": 21}"#.to_vec()).await;
        assert_eq!(hit.status, 200, "{http2}");
        assert_eq!(hit.header("content-type"), "application/json");
        assert_eq!(hit.json()["error"]["name"], "AUTH_REQUIRED");
        // A hit, proto.
        let hit = post(http2, &url, &[PROTO, VERSION], request_proto(21)).await;
        assert_eq!(hit.status, 200);
        assert_eq!(hit.header("content-type"), "application/proto");
        let reply = pb::GetErrorResponse::decode(hit.body.clone()).unwrap();
        assert_eq!(reply.error.unwrap().name, "AUTH_REQUIRED");

        // A miss: 404 by Connect's table, the body in JSON whatever the codec.
        for (headers, body) in [
            (&[JSON, VERSION][..], br#"{"code": 48}"#.to_vec()),
            (&[PROTO, VERSION][..], request_proto(48)),
        ] {
            let miss = send(http2, http::Method::POST, &url, headers, body).await;
            assert_eq!(miss.status, 404);
            assert_eq!(miss.header("content-type"), "application/json");
            let body = miss.json();
            assert_eq!(body["code"], "not_found");
            assert_eq!(body["message"], "no catalog error has requestedCode \"48\"");
            let info =
                pb::rpc::ErrorInfo::decode(miss.detail("google.rpc.ErrorInfo").as_slice()).unwrap();
            assert_eq!(info, grpc_miss, "the same ErrorInfo as gRPC's");
            let localized = pb::rpc::LocalizedMessage::decode(
                miss.detail("google.rpc.LocalizedMessage").as_slice(),
            )
            .unwrap();
            assert_eq!(localized.locale, "en-US");
        }
        // In Russian.
        let russian = post(
            http2,
            &url,
            &[JSON, VERSION, ("accept-language", "ru")],
            br#"{"code": 48}"#.to_vec(),
        )
        .await;
        let localized = pb::rpc::LocalizedMessage::decode(
            russian.detail("google.rpc.LocalizedMessage").as_slice(),
        )
        .unwrap();
        assert_eq!(localized.locale, "ru-RU");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_get_answers_as_the_post_does_and_is_cached_by_its_etag() {
    let server = TestServer::start_default().await;
    let base = format!("http://{}", server.addr);
    let posted = post(
        false,
        &format!("{base}{GET_ERROR}"),
        &[JSON],
        br#"{"code":47}"#.to_vec(),
    )
    .await;
    let get_url =
        format!("{base}{GET_ERROR}?connect=v1&encoding=json&message=%7B%22code%22%3A47%7D");
    let get = send(false, http::Method::GET, &get_url, &[], Vec::new()).await;
    assert_eq!(get.status, 200);
    assert_eq!(get.body, posted.body, "GET and POST answer alike");
    let etag = get.header("etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(get.header("cache-control"), "public, no-cache");
    assert_eq!(get.header("vary"), "Accept-Language");
    // The same question: 304, no body.
    let again = send(
        false,
        http::Method::GET,
        &get_url,
        &[("if-none-match", &etag)],
        Vec::new(),
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    // Another language is another answer.
    let russian = send(
        false,
        http::Method::GET,
        &get_url,
        &[("if-none-match", &etag), ("accept-language", "ru")],
        Vec::new(),
    )
    .await;
    assert_eq!(russian.status, 200);
    assert_ne!(russian.header("etag"), etag);
    // With credentials, only the caller may keep it.
    let private = send(
        false,
        http::Method::GET,
        &get_url,
        &[("authorization", "Bearer x")],
        Vec::new(),
    )
    .await;
    assert_eq!(private.header("cache-control"), "private, no-cache");
    // base64 proto, as connect-es sends it.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(request_proto(47));
    let proto = send(
        false,
        http::Method::GET,
        &format!("{base}{GET_ERROR}?connect=v1&encoding=proto&base64=1&message={b64}"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(proto.status, 200);
    assert_eq!(
        pb::GetErrorResponse::decode(proto.body)
            .unwrap()
            .error
            .unwrap()
            .code,
        Some(47)
    );
    // A method with side effects (health's Check is not marked) takes no GET.
    let check = send(
        false,
        http::Method::GET,
        &format!("{base}/grpc.health.v1.Health/Check?connect=v1&encoding=json&message=%7B%7D"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(check.json()["code"], "unimplemented");
    // But a POST does.
    let check = post(
        false,
        &format!("{base}/grpc.health.v1.Health/Check"),
        &[JSON],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(check.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn failures_before_the_handler_get_connect_bodies() {
    let mut config = ServerConfig::default();
    config.max_request_size = 1024;
    let server = TestServer::start(config).await;
    let base = format!("http://{}", server.addr);
    // A content type Connect does not have: 415, with 40.
    let bad_type = post(
        false,
        &format!("{base}{GET_ERROR}"),
        &[("content-type", "text/plain"), VERSION],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(bad_type.status, 415);
    let info =
        pb::rpc::ErrorInfo::decode(bad_type.detail("google.rpc.ErrorInfo").as_slice()).unwrap();
    assert_eq!(info.reason, "API_INVALID_REQUEST");
    // Over the size limit: 40.
    let big = format!(r#"{{"name": "{}"}}"#, "A".repeat(4096));
    let too_large = post(
        false,
        &format!("{base}{GET_ERROR}"),
        &[JSON],
        big.into_bytes(),
    )
    .await;
    assert_eq!(too_large.status, 400);
    assert_eq!(too_large.json()["code"], "invalid_argument");
    // The rest of the body is never read: HTTP/1.1 must not reuse the connection.
    assert_eq!(too_large.header("connection"), "close");
    // A GET's message is held to the same size limit as a body.
    let long = format!("%7B%22name%22%3A%22{}%22%7D", "A".repeat(2048));
    let long_get = send(
        false,
        http::Method::GET,
        &format!("{base}{GET_ERROR}?connect=v1&encoding=json&message={long}"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(
        long_get.status,
        400,
        "{}",
        String::from_utf8_lossy(&long_get.body)
    );
    assert_eq!(long_get.json()["code"], "invalid_argument");
    // JSON that is not the request type: 40.
    let wrong = post(
        false,
        &format!("{base}{GET_ERROR}"),
        &[JSON],
        br#"{"nope": 1}"#.to_vec(),
    )
    .await;
    assert_eq!(wrong.status, 400);
    // No such method: 43, unimplemented, 501.
    for codec in [JSON, PROTO] {
        let unknown = post(
            false,
            &format!("{base}/errmap.v1.ErrorCatalog/Nope"),
            &[codec],
            Vec::new(),
        )
        .await;
        assert_eq!(unknown.status, 501);
        let info =
            pb::rpc::ErrorInfo::decode(unknown.detail("google.rpc.ErrorInfo").as_slice()).unwrap();
        assert_eq!(info.reason, "API_METHOD_NOT_FOUND");
    }
    server.stop().await;
}

#[tokio::test]
async fn shedding_carries_retry_after_and_the_timeout_header_is_the_deadline() {
    let mut config = ServerConfig::default();
    config.concurrency_limit = 1;
    let server = TestServer::start(config).await;
    let channel = server.channel().await;
    let held = server.start_slow(&channel, 3_000, 1).await;
    let slow = format!("http://{}/test.v1.Probe/Slow", server.addr);
    // The one place is taken: 44, 429, Retry-After.
    let shed = post(false, &slow, &[PROTO], "10".to_owned().encode_to_vec()).await;
    assert_eq!(shed.status, 429, "{}", String::from_utf8_lossy(&shed.body));
    assert_eq!(shed.json()["code"], "resource_exhausted");
    assert_eq!(shed.header("retry-after"), "1");
    let info = pb::rpc::ErrorInfo::decode(shed.detail("google.rpc.ErrorInfo").as_slice()).unwrap();
    assert_eq!(info.metadata["code"], "44");
    for call in held {
        call.await.unwrap().unwrap();
    }
    // Connect-Timeout-Ms is the call's deadline: 504.
    let late = post(
        true,
        &slow,
        &[PROTO, ("connect-timeout-ms", "100")],
        "2000".to_owned().encode_to_vec(),
    )
    .await;
    assert_eq!(late.status, 504, "{}", String::from_utf8_lossy(&late.body));
    assert_eq!(late.json()["code"], "deadline_exceeded");
    server.stop().await;
}

#[tokio::test]
async fn tokens_are_checked_as_for_grpc() {
    let secret: &[u8] = b"connect test secret, 32 bytes or more";
    let mut config = ServerConfig::default();
    config.auth = Some(AuthInterceptor::new(JwtVerifier::hs256(secret)));
    let server = TestServer::start(config).await;
    let url = format!("http://{}{GET_ERROR}", server.addr);
    let anonymous = post(false, &url, &[JSON], br#"{"code": 1}"#.to_vec()).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["code"], "unauthenticated");
    let info =
        pb::rpc::ErrorInfo::decode(anonymous.detail("google.rpc.ErrorInfo").as_slice()).unwrap();
    assert_eq!(info.reason, "AUTH_REQUIRED");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "connect", "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap();
    let token = format!("Bearer {jwt}");
    let with_token = post(
        false,
        &url,
        &[JSON, ("authorization", &token)],
        br#"{"code": 1}"#.to_vec(),
    )
    .await;
    assert_eq!(with_token.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn off_the_port_speaks_no_connect() {
    let mut config = ServerConfig::default();
    config.connect = false;
    let server = TestServer::start(config).await;
    let url = format!("http://{}{GET_ERROR}", server.addr);
    let reply = post(false, &url, &[JSON], br#"{"code": 21}"#.to_vec()).await;
    // The HTTP API answers instead, in its legacy shape: a gRPC method
    // takes a gRPC content type.
    assert_eq!(
        reply.status,
        415,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["v"], "1");
    assert_eq!(reply.json()["error"]["code"], 40);
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_connect_calls_apart() {
    let metrics = errmap_server::metrics::Metrics::new();
    let mut config = ServerConfig::default();
    config.metrics = Some(metrics.clone());
    let server = TestServer::start(config).await;
    let url = format!("http://{}{GET_ERROR}", server.addr);
    let miss = post(false, &url, &[JSON], br#"{"code": 48}"#.to_vec()).await;
    assert_eq!(miss.status, 404);
    let _ = grpc_error_info(&server, 48).await;
    let text = metrics.encode(false);
    let line = |system: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("rpc_server_call_duration_seconds_count")
                    && l.contains(&format!("rpc_system=\"{system}\""))
                    && l.contains("GetError")
                    && l.contains("API_ITEM_NOT_FOUND")
            })
            .unwrap_or_else(|| panic!("no {system} series in\n{text}"))
            .to_owned()
    };
    assert!(line("connect").ends_with(" 1"), "{}", line("connect"));
    assert!(line("grpc").ends_with(" 1"), "{}", line("grpc"));
    server.stop().await;
}

/// The answer, head and body, to an HTTP/1.1 POST on a kept-alive
/// connection whose body stops part-way, with `extra` header lines.
async fn stalled_http1(server: &TestServer, extra: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /errmap.v1.ErrorCatalog/GetError HTTP/1.1\r\nhost: x\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n{extra}\r\n{{\"code\":"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 10 s");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_body_that_stalls_gets_40_at_the_body_timeout() {
    let mut config = ServerConfig::default();
    config.request_body_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let text = stalled_http1(&server, "").await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("\"code\":\"invalid_argument\""), "{text}");
    // The rest of the body would be read as the next request.
    assert!(text.contains("connection: close\r\n"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn a_deadline_that_passes_while_the_body_arrives_is_deadline_exceeded() {
    let server = TestServer::start(ServerConfig::default()).await;
    // Well before the body timeout (10 s).
    let text = stalled_http1(&server, "connect-timeout-ms: 300\r\n").await;
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(text.contains("\"code\":\"deadline_exceeded\""), "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn bodies_share_the_intake_budget() {
    let mut config = ServerConfig::default();
    config.intake_memory = 1024;
    let server = TestServer::start(config).await;
    let url = format!("http://{}{GET_ERROR}", server.addr);
    // One body larger than the whole budget (but under the size limit).
    let big = format!(r#"{{"name": "{}"}}"#, "A".repeat(4096));
    let over = send(false, http::Method::POST, &url, &[JSON], big.into_bytes()).await;
    assert_eq!(over.status, 429, "{}", String::from_utf8_lossy(&over.body));
    let info = pb::rpc::ErrorInfo::decode(over.detail("google.rpc.ErrorInfo").as_slice()).unwrap();
    assert_eq!(info.metadata["code"], "44");
    // The budget is given back: a small call passes.
    let small = post(false, &url, &[JSON], br#"{"code": 21}"#.to_vec()).await;
    assert_eq!(small.status, 200);
    server.stop().await;
}
