//! Issue 14 over the wire, with a raw HTTP/1.1 client: gRPC-Web on the
//! gRPC port (binary and base64 framing), CORS for allowed origins only,
//! and errmap's guarantees (catalog details, auth, the size limit) on the
//! gRPC-Web path.

mod common;

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use base64::Engine as _;
use common::TestServer;
use errmap::{
    pb::{get_error_request::Key, GetErrorRequest, GetErrorResponse},
    Catalog as _, ErrorCode, ErrorStatusExt as _,
};
use errmap_server::{
    auth::{AuthInterceptor, JwtVerifier},
    server::ServerConfig,
    web::{CorsConfig, ALLOW_HEADERS, EXPOSE_HEADERS},
};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const APP: &str = "http://app.test:8080";
const GET_ERROR: &str = "/errmap.v1.ErrorCatalog/GetError";

/// A response read off the socket.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn cors_headers(&self) -> Vec<&str> {
        self.headers
            .keys()
            .map(|k| k.as_str())
            .filter(|k| k.starts_with("access-control-"))
            .collect()
    }
}

/// Sends one HTTP/1.1 request (with `Connection: close`) and reads the
/// whole response, chunked or not.
async fn http1(addr: SocketAddr, head: &str, body: &[u8]) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{head}\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers and closes within 10 s")
        .unwrap();
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.append(
            http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            value.trim().parse().unwrap(),
        );
    }
    let rest = &raw[split + 4..];
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A gRPC-Web message frame.
fn frame(message: &impl prost::Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
    out
}

/// The frames of a gRPC-Web response body: the messages, and the trailers
/// frame (flag 0x80) as a header map.
fn frames(mut body: &[u8]) -> (Vec<Vec<u8>>, http::HeaderMap) {
    let mut messages = Vec::new();
    let mut trailers = http::HeaderMap::new();
    while !body.is_empty() {
        let flag = body[0];
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let payload = &body[5..5 + len];
        if flag & 0x80 != 0 {
            for line in std::str::from_utf8(payload).unwrap().split("\r\n") {
                if let Some((name, value)) = line.split_once(':') {
                    trailers.append(
                        http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                        value.trim().parse().unwrap(),
                    );
                }
            }
        } else {
            messages.push(payload.to_vec());
        }
        body = &body[5 + len..];
    }
    (messages, trailers)
}

fn get_error(code: i32) -> GetErrorRequest {
    GetErrorRequest {
        key: Some(Key::Code(code)),
        domain: None,
    }
}

/// A gRPC-Web POST head, with `extra` header lines.
fn post(content_type: &str, extra: &[&str]) -> String {
    let mut head = format!(
        "POST {GET_ERROR} HTTP/1.1\r\nContent-Type: {content_type}\r\nX-Grpc-Web: 1\r\nAccept: {content_type}"
    );
    for line in extra {
        head.push_str("\r\n");
        head.push_str(line);
    }
    head
}

async fn with_cors(origins: &[&str]) -> TestServer {
    let mut config = ServerConfig::default();
    config.cors = Some(CorsConfig::new(origins).unwrap());
    TestServer::start(config).await
}

#[tokio::test]
async fn preflight_is_answered_for_allowed_origins_only() {
    let server = with_cors(&[APP]).await;
    let preflight = |origin: &str| {
        format!(
            "OPTIONS {GET_ERROR} HTTP/1.1\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization,token,accept-language"
        )
    };
    let allowed = http1(server.addr, &preflight(APP), b"").await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        allowed.header("access-control-allow-methods"),
        Some("GET,POST")
    );
    assert_eq!(allowed.header("access-control-max-age"), Some("7200"));
    let allow_headers = allowed.header("access-control-allow-headers").unwrap();
    for name in ALLOW_HEADERS {
        assert!(
            allow_headers.split(',').any(|h| h.trim() == name.as_str()),
            "{name} not in {allow_headers}"
        );
    }
    assert_eq!(allowed.header("access-control-allow-credentials"), None);

    let refused = http1(server.addr, &preflight("http://evil.test"), b"").await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(refused.cors_headers().is_empty(), "{refused:?}");
    // A case variant of an allowed origin is not that origin (browsers send
    // origins in lower case): refused like any other, not half-answered.
    let variant = APP.to_ascii_uppercase();
    let refused = http1(server.addr, &preflight(&variant), b"").await;
    assert_eq!(refused.status, 403, "{variant}: {refused:?}");
    assert!(refused.cors_headers().is_empty(), "{refused:?}");
    server.stop().await;

    // Without --cors-allow-origin, nobody is allowed.
    let server = TestServer::start_default().await;
    let refused = http1(server.addr, &preflight(APP), b"").await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(refused.cors_headers().is_empty(), "{refused:?}");
    server.stop().await;
}

#[tokio::test]
async fn grpc_web_hit_and_miss_over_http1() {
    let server = with_cors(&[APP]).await;
    let origin = format!("Origin: {APP}");

    // A hit: the answer in a message frame, the status in the trailers frame.
    let hit = http1(
        server.addr,
        &post("application/grpc-web+proto", &[&origin]),
        &frame(&get_error(11)),
    )
    .await;
    assert_eq!(hit.status, 200, "{hit:?}");
    assert_eq!(
        hit.header("content-type"),
        Some("application/grpc-web+proto")
    );
    assert_eq!(hit.header("access-control-allow-origin"), Some(APP));
    let (messages, trailers) = frames(&hit.body);
    let found = GetErrorResponse::decode(&messages[0][..])
        .unwrap()
        .error
        .unwrap();
    assert_eq!(found.name, "AUTH_EXPIRED_TOKEN");
    assert_eq!(trailers["grpc-status"], "0");

    // A miss: trailers-only, so the status and its details are HTTP
    // headers, readable because CORS exposes them; HTTP status stays 200.
    let miss = http1(
        server.addr,
        &post("application/grpc-web", &[&origin, "Accept-Language: ru"]),
        &frame(&get_error(48)),
    )
    .await;
    assert_eq!(miss.status, 200, "{miss:?}");
    let expose = miss.header("access-control-expose-headers").unwrap();
    for name in EXPOSE_HEADERS {
        assert!(
            expose.split(',').any(|h| h.trim() == name.as_str()),
            "{name} not in {expose}"
        );
    }
    let status = tonic::Status::from_header_map(&miss.headers).expect("a status in the headers");
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.error_code(), Some(ErrorCode::ApiItemNotFound));
    let details = status.check_error_details().unwrap();
    assert_eq!(details.metadata("requestedCode"), Some("48"));
    assert_eq!(details.localized_message().unwrap().locale, "ru-RU");
    server.stop().await;
}

#[tokio::test]
async fn grpc_web_text_is_base64_both_ways() {
    let server = with_cors(&["*"]).await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let reply = http1(
        server.addr,
        &post("application/grpc-web-text", &["Origin: http://anyone.test"]),
        b64.encode(frame(&get_error(21))).as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("application/grpc-web-text"));
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    // The body is base64, possibly in several padded pieces.
    let text = String::from_utf8(reply.body).unwrap();
    let mut body = Vec::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let end = rest.find('=').map_or(rest.len(), |at| {
            at + rest[at..].chars().take_while(|c| *c == '=').count()
        });
        body.extend(b64.decode(&rest[..end]).unwrap());
        rest = &rest[end..];
    }
    let (messages, trailers) = frames(&body);
    let found = GetErrorResponse::decode(&messages[0][..])
        .unwrap()
        .error
        .unwrap();
    assert_eq!(found.name, "AUTH_REQUIRED");
    assert_eq!(trailers["grpc-status"], "0");
    server.stop().await;
}

#[tokio::test]
async fn the_guarantees_hold_on_the_grpc_web_path() {
    let secret: &[u8] = b"web test secret, 32 bytes or more";
    let mut config = ServerConfig::default();
    config.cors = Some(CorsConfig::new([APP]).unwrap());
    config.auth = Some(AuthInterceptor::new(JwtVerifier::hs256(secret)));
    let server = TestServer::start(config).await;
    let origin = format!("Origin: {APP}");

    // No token: 21, in headers a page can read.
    let reply = http1(
        server.addr,
        &post("application/grpc-web", &[&origin]),
        &frame(&get_error(11)),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
    let status = tonic::Status::from_header_map(&reply.headers).unwrap();
    assert_eq!(status.error_code(), Some(ErrorCode::AuthRequired));
    status.check_error_details().unwrap();

    // Too large: 40, from admission.
    let big = GetErrorRequest {
        key: Some(Key::Name("A".repeat(100 * 1024))),
        domain: None,
    };
    let reply = http1(
        server.addr,
        &post("application/grpc-web", &[&origin]),
        &frame(&big),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let status = tonic::Status::from_header_map(&reply.headers).unwrap();
    assert_eq!(status.error_code(), Some(ErrorCode::ApiInvalidRequest));

    // An unknown method: 43.
    let head = post("application/grpc-web", &[&origin]).replace(GET_ERROR, "/no.Such/Method");
    let reply = http1(server.addr, &head, &frame(&get_error(1))).await;
    let status = tonic::Status::from_header_map(&reply.headers).unwrap();
    assert_eq!(status.error_code(), Some(ErrorCode::ApiMethodNotFound));

    let (_, trailers) = frames(&reply.body);
    assert!(trailers.is_empty(), "trailers-only: {trailers:?}");

    // A handler's bare INTERNAL after a message: the response layer
    // rewrites it in the trailers frame, before gRPC-Web encodes them.
    let head = post("application/grpc-web", &[&origin])
        .replace(GET_ERROR, "/test.v1.Probe/StreamThenFail");
    let reply = http1(server.addr, &head, &frame(&"first".to_owned())).await;
    let (messages, trailers) = frames(&reply.body);
    assert_eq!(String::decode(&messages[0][..]).unwrap(), "first");
    let status = tonic::Status::from_header_map(&trailers).unwrap();
    assert_eq!(status.error_code(), Some(ErrorCode::ApiInternalServerError));
    assert!(!format!("{status:?}").contains(common::INTERNAL_SECRET));
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_request_frame_on_the_grpc_web_path_is_40() {
    let server = TestServer::start_default().await;
    let cases: [(&str, Vec<u8>); 3] = [
        // A message, then a trailers frame that claims more than it has.
        ("short trailers frame", {
            let mut body = frame(&get_error(11));
            body.extend_from_slice(&[0x80, 0, 0, 0, 99, b'x']);
            body
        }),
        // A message, then a trailers frame that is not a header block.
        ("garbled trailers", {
            let mut body = frame(&get_error(11));
            let garbage = b"\x00\x01 not: a\r\nheader\xff";
            body.push(0x80);
            body.extend_from_slice(&(garbage.len() as u32).to_be_bytes());
            body.extend_from_slice(garbage);
            body
        }),
        // A frame flag that gRPC-Web does not define.
        ("unknown flag", {
            let mut body = frame(&get_error(11));
            body[0] = 0x40;
            body
        }),
    ];
    for (what, body) in cases {
        let reply = http1(server.addr, &post("application/grpc-web", &[]), &body).await;
        assert_eq!(reply.status, 200, "{what}: {reply:?}");
        let status = tonic::Status::from_header_map(&reply.headers)
            .or_else(|| tonic::Status::from_header_map(&frames(&reply.body).1))
            .unwrap_or_else(|| panic!("{what}: no status in {reply:?}"));
        assert_eq!(
            status.error_code(),
            Some(ErrorCode::ApiInvalidRequest),
            "{what}: {status:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_refused_origin_gets_no_cors_headers_and_non_browsers_none_at_all() {
    let server = with_cors(&[APP]).await;
    // A page of another origin: served (CORS is not authentication), but
    // with no CORS header, so its browser hides the answer from it.
    let reply = http1(
        server.addr,
        &post("application/grpc-web", &["Origin: http://evil.test"]),
        &frame(&get_error(48)),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.cors_headers().is_empty(), "{reply:?}");

    // A gRPC client over HTTP/2 sends no Origin: nothing CORS is added.
    let mut client =
        errmap::pb::error_catalog_client::ErrorCatalogClient::new(server.channel().await);
    let response = client.get_error(get_error(11)).await.unwrap();
    assert!(!response
        .metadata()
        .keys()
        .any(|k| format!("{k:?}").contains("access-control")));
    let status = client.get_error(get_error(48)).await.unwrap_err();
    assert!(!status
        .metadata()
        .keys()
        .any(|k| format!("{k:?}").contains("access-control")));
    assert_eq!(status.error_code(), Some(ErrorCode::ApiItemNotFound));

    // HTTP/1.1 that is neither gRPC-Web nor the HTTP API: 404 with the
    // catalog's 43 (issue 22; tonic-web answered an empty 400), not a crash.
    let reply = http1(
        server.addr,
        "POST /anything HTTP/1.1\r\nContent-Type: text/plain",
        b"hello",
    )
    .await;
    assert_eq!(reply.status, 404);
    assert!(
        String::from_utf8_lossy(&reply.body).contains("\"code\":43"),
        "{reply:?}"
    );
    // GET / is the catalog page.
    let reply = http1(server.addr, "GET / HTTP/1.1", b"").await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    server.stop().await;
}

#[tokio::test]
async fn every_catalog_code_reads_back_through_grpc_web() {
    let server = with_cors(&[APP]).await;
    let origin = format!("Origin: {APP}");
    let mut seen = HashMap::new();
    for code in ErrorCode::all() {
        let reply = http1(
            server.addr,
            &post("application/grpc-web+proto", &[&origin]),
            &frame(&get_error(code.entry().number())),
        )
        .await;
        let (messages, _) = frames(&reply.body);
        let found = GetErrorResponse::decode(&messages[0][..])
            .unwrap()
            .error
            .unwrap();
        seen.insert(found.name.clone(), found.code);
        assert_eq!(found.name, code.entry().name());
    }
    assert_eq!(seen.len(), ErrorCode::all().len());
    server.stop().await;
}

#[tokio::test]
async fn grpc_web_can_be_turned_off() {
    let mut config = ServerConfig::default();
    config.grpc_web = false;
    let server = TestServer::start(config).await;
    // HTTP/1.1 is not spoken: the connection closes without an answer.
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "{}\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        post("application/grpc-web", &[])
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server closes the connection within 10 s");
    assert!(
        !raw.starts_with(b"HTTP/1.1"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    // gRPC works as before.
    let mut client =
        errmap::pb::error_catalog_client::ErrorCatalogClient::new(server.channel().await);
    let found = client.get_error(get_error(11)).await.unwrap().into_inner();
    assert_eq!(found.error.unwrap().name, "AUTH_EXPIRED_TOKEN");
    server.stop().await;
}
