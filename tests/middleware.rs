//! docs/design.md §3 on a real server: every failure the server makes itself
//! leaves as a catalog error, and handlers' own errors pass through.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{call_probe, TestServer, INTERNAL_SECRET, PANIC_SECRET, SPECIAL_MESSAGE};
use errmap::Catalog as _;
use errmap::{
    pb::{error_catalog_client::ErrorCatalogClient, get_error_request::Key, GetErrorRequest},
    ErrorCode, ErrorStatusExt,
};
use errmap_server::{
    auth::{AuthInterceptor, JwtVerifier},
    server::ServerConfig,
};
use http::uri::PathAndQuery;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tonic::{transport::Channel, Request, Status};
use tonic_prost::ProstCodec;

/// Asserts `status` is exactly one catalog error `code`, read back with
/// errmap and with tonic-types.
fn assert_catalog(status: &Status, code: ErrorCode) {
    assert_rewritten(status, code, code.entry().grpc_code());
}

/// Asserts `status` is exactly one catalog error `code`, sent with the gRPC
/// code `grpc` (the response layer keeps the code of what it rewrites).
fn assert_rewritten(status: &Status, code: ErrorCode, grpc: tonic::Code) {
    assert_eq!(status.code(), grpc, "{status:?}");
    assert_eq!(status.error_code(), Some(code), "{status:?}");
    let details = status
        .check_error_details()
        .expect("details decode and match the status");
    let rpc: tonic_types::pb::Status = prost::Message::decode(status.details()).unwrap();
    let infos = rpc
        .details
        .iter()
        .filter(|a| a.type_url.ends_with("google.rpc.ErrorInfo"))
        .count();
    assert_eq!(infos, 1, "exactly one ErrorInfo");
    let theirs = tonic_types::StatusExt::get_error_details(status);
    assert_eq!(theirs.error_info().unwrap().reason, code.entry().name());
    assert_eq!(details.retry_delay(), code.entry().retry_delay());
}

async fn raw_unary(channel: Channel, path: &'static str, body: String) -> Result<String, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    grpc.unary(
        Request::new(body),
        PathAndQuery::from_static(path),
        ProstCodec::<String, String>::default(),
    )
    .await
    .map(|r| r.into_inner())
}

#[tokio::test]
async fn unknown_service_and_unknown_method_are_43() {
    let server = TestServer::start_default().await;
    let channel = server.channel().await;
    for path in [
        "/no.such.v1.Service/Method",
        "/errmap.v1.ErrorCatalog/NoSuchMethod",
    ] {
        let status = raw_unary(channel.clone(), path, String::new())
            .await
            .unwrap_err();
        assert_catalog(&status, ErrorCode::ApiMethodNotFound);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_is_42_and_the_server_keeps_serving() {
    let server = TestServer::start_default().await;
    let channel = server.channel().await;
    let status = call_probe(channel.clone(), "Panic", Request::new(String::new()))
        .await
        .unwrap_err();
    assert_catalog(&status, ErrorCode::ApiInternalServerError);
    assert!(
        !status.message().contains("hunter2"),
        "{}",
        status.message()
    );
    assert!(!format!("{status:?}").contains(PANIC_SECRET));
    // Same connection, next call.
    let ok = call_probe(channel, "Slow", Request::new("0".into()))
        .await
        .unwrap();
    assert_eq!(ok.into_inner(), "0");
    server.stop().await;
}

#[tokio::test]
async fn internal_and_unknown_without_details_are_42_without_internals() {
    let server = TestServer::start_default().await;
    let channel = server.channel().await;
    for (method, grpc) in [
        ("Internal", tonic::Code::Internal),
        ("Unknown", tonic::Code::Unknown),
    ] {
        let status = call_probe(channel.clone(), method, Request::new(String::new()))
            .await
            .unwrap_err();
        assert_rewritten(&status, ErrorCode::ApiInternalServerError, grpc);
        assert_eq!(
            status.message(),
            ErrorCode::ApiInternalServerError.entry().message()
        );
        assert!(!format!("{status:?}").contains(INTERNAL_SECRET));
    }
    server.stop().await;
}

#[tokio::test]
async fn an_error_in_the_trailers_after_a_body_is_normalised() {
    let server = TestServer::start_default().await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let mut stream = grpc
        .server_streaming(
            Request::new("first".to_owned()),
            PathAndQuery::from_static("/test.v1.Probe/StreamThenFail"),
            ProstCodec::<String, String>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().as_deref(), Some("first"));
    let status = stream.message().await.unwrap_err();
    assert_catalog(&status, ErrorCode::ApiInternalServerError);
    assert!(!format!("{status:?}").contains(INTERNAL_SECRET));
    server.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_request_bodies_are_40() {
    let server = TestServer::start_default().await;
    let channel = server.channel().await;
    // A String encodes as field 1, length-delimited; GetErrorRequest's
    // field 1 is an int32, so the server cannot decode it.
    let status = raw_unary(
        channel.clone(),
        "/errmap.v1.ErrorCatalog/GetError",
        "garbage".into(),
    )
    .await
    .unwrap_err();
    assert_catalog(&status, ErrorCode::ApiInvalidRequest);

    // Over the 64 KiB request limit.
    let mut client = ErrorCatalogClient::new(channel.clone());
    let status = client
        .get_error(GetErrorRequest {
            key: Some(Key::Name("X".repeat(100 * 1024))),
            domain: None,
        })
        .await
        .unwrap_err();
    assert_catalog(&status, ErrorCode::ApiInvalidRequest);
    assert_eq!(
        status.message(),
        ErrorCode::ApiInvalidRequest.entry().message()
    );

    // The server is fine afterwards, on the same connection.
    client
        .get_error(GetErrorRequest {
            key: Some(Key::Code(21)),
            domain: None,
        })
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn load_is_shed_with_44_and_retry_info() {
    let mut config = ServerConfig::default();
    config.concurrency_limit = 2;
    let server = TestServer::start(config).await;
    let channel = server.channel().await;
    let slow = server.start_slow(&channel, 800, 2).await;
    let status = call_probe(channel.clone(), "Slow", Request::new("0".into()))
        .await
        .unwrap_err();
    assert_catalog(&status, ErrorCode::ApiTooManyRequests);
    assert_eq!(
        status.error_details().unwrap().retry_delay(),
        Some(Duration::from_secs(1))
    );
    // Health is not limited.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    for call in slow {
        call.await.unwrap().unwrap();
    }
    // Capacity is back.
    call_probe(channel, "Slow", Request::new("0".into()))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn calls_during_shutdown_get_49_while_in_flight_calls_finish() {
    let mut server = TestServer::start_default().await;
    let channel = server.channel().await;
    let slow = server.start_slow(&channel, 800, 1).await;
    server.begin_shutdown();
    // The drain has begun once health says NOT_SERVING.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    loop {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner()
            .status;
        if status != tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = ErrorCatalogClient::new(channel.clone())
        .get_error(GetErrorRequest {
            key: Some(Key::Code(1)),
            domain: None,
        })
        .await
        .unwrap_err();
    assert_catalog(&status, ErrorCode::ApiTryAgainLater);
    assert_eq!(
        status.error_details().unwrap().retry_delay(),
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        slow.into_iter()
            .next()
            .unwrap()
            .await
            .unwrap()
            .unwrap()
            .into_inner(),
        "800"
    );
    server.join().await.unwrap();
}

#[tokio::test]
async fn a_handlers_rich_status_passes_unchanged_with_its_metadata() {
    let server = TestServer::start_default().await;
    let status = call_probe(server.channel().await, "Rich", Request::new(String::new()))
        .await
        .unwrap_err();
    let expected = ErrorCode::AuthUsernameInvalid
        .builder()
        .message("username too short")
        .metadata("minLength", "5")
        .field_violation("username", "too short")
        .build()
        .unwrap();
    assert_eq!(status.code(), expected.code());
    assert_eq!(status.message(), expected.message());
    assert_eq!(
        status.details(),
        expected.details(),
        "details byte for byte"
    );
    assert_eq!(status.metadata().get("x-request-id").unwrap(), "rich-1");
    assert_eq!(
        status
            .metadata()
            .get_bin("x-trace-bin")
            .unwrap()
            .to_bytes()
            .unwrap()
            .as_ref(),
        [1, 2, 3, 255]
    );
    server.stop().await;
}

#[tokio::test]
async fn custom_metadata_survives_the_layer_on_the_ok_path() {
    let server = TestServer::start_default().await;
    let mut request = Request::new("hello".to_owned());
    request
        .metadata_mut()
        .insert("x-echo", "ascii-value".parse().unwrap());
    request.metadata_mut().insert_bin(
        "x-echo-bin",
        tonic::metadata::MetadataValue::from_bytes(&[0, 1, 254, 255]),
    );
    let response = call_probe(server.channel().await, "Echo", request)
        .await
        .unwrap();
    assert_eq!(response.metadata().get("x-echo").unwrap(), "ascii-value");
    assert_eq!(
        response
            .metadata()
            .get_bin("x-echo-bin")
            .unwrap()
            .to_bytes()
            .unwrap()
            .as_ref(),
        [0, 1, 254, 255]
    );
    assert_eq!(response.into_inner(), "hello");
    server.stop().await;
}

#[tokio::test]
async fn the_interop_special_message_round_trips_exactly() {
    let server = TestServer::start_default().await;
    let channel = server.channel().await;
    // A catalog status keeps its developer message exactly...
    let status = call_probe(channel.clone(), "Special", Request::new(String::new()))
        .await
        .unwrap_err();
    assert_catalog(&status, ErrorCode::ApiInvalidRequest);
    assert_eq!(status.message(), SPECIAL_MESSAGE);
    let details = status.check_error_details().unwrap();
    assert_eq!(details.status_message(), SPECIAL_MESSAGE);
    // ...while a plain one is rewritten and its text never sent.
    let status = call_probe(channel.clone(), "PlainSpecial", Request::new(String::new()))
        .await
        .unwrap_err();
    assert_catalog(&status, ErrorCode::ApiInvalidRequest);
    assert_eq!(
        status.message(),
        ErrorCode::ApiInvalidRequest.entry().message()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_plain_status_gets_its_catalog_code_and_message() {
    let server = TestServer::start_default().await;
    let status = call_probe(server.channel().await, "Plain", Request::new(String::new()))
        .await
        .unwrap_err();
    assert_catalog(&status, ErrorCode::ApiItemNotFound);
    assert_eq!(
        status.message(),
        ErrorCode::ApiItemNotFound.entry().message()
    );
    server.stop().await;
}

mod auth {
    use super::*;

    const SECRET: &[u8] = b"test secret, 32 bytes or longer.";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn sign(claims: serde_json::Value, alg: Algorithm, key: &EncodingKey) -> String {
        jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
    }

    fn hs256(claims: serde_json::Value, secret: &[u8]) -> String {
        sign(claims, Algorithm::HS256, &EncodingKey::from_secret(secret))
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/keys/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    async fn protected(verifier: JwtVerifier) -> TestServer {
        let mut config = ServerConfig::default();
        config.auth = Some(AuthInterceptor::new(verifier));
        TestServer::start(config).await
    }

    async fn get_error(
        server: &TestServer,
        metadata: &[(&'static str, &str)],
    ) -> Result<(), Status> {
        let mut request = Request::new(GetErrorRequest {
            key: Some(Key::Code(11)),
            domain: None,
        });
        for (key, value) in metadata {
            request.metadata_mut().append(*key, value.parse().unwrap());
        }
        ErrorCatalogClient::new(server.channel().await)
            .get_error(request)
            .await
            .map(|_| ())
    }

    #[tokio::test]
    async fn tokens_missing_malformed_badly_signed_and_expired() {
        let server = protected(JwtVerifier::hs256(SECRET)).await;
        let good = hs256(serde_json::json!({"sub": "u1", "exp": now() + 600}), SECRET);
        let bearer = |t: &str| format!("Bearer {t}");

        get_error(&server, &[("authorization", &bearer(&good))])
            .await
            .unwrap();
        get_error(&server, &[("token", &good)]).await.unwrap();
        get_error(
            &server,
            &[("authorization", &bearer(&good)), ("token", &good)],
        )
        .await
        .unwrap();

        for (metadata, code) in [
            (vec![], ErrorCode::AuthRequired),
            (
                vec![("authorization", "Bearer ".to_owned())],
                ErrorCode::AuthRequired,
            ),
            (vec![("token", String::new())], ErrorCode::AuthRequired),
            (
                vec![("authorization", bearer("not.a.jwt"))],
                ErrorCode::AuthInvalidToken,
            ),
            (
                vec![("authorization", bearer("garbage"))],
                ErrorCode::AuthInvalidToken,
            ),
            (
                vec![(
                    "authorization",
                    bearer(&hs256(
                        serde_json::json!({"exp": now() + 600}),
                        b"another secret, also long enough",
                    )),
                )],
                ErrorCode::AuthInvalidToken,
            ),
            (
                vec![(
                    "authorization",
                    bearer(&hs256(serde_json::json!({"exp": now() - 120}), SECRET)),
                )],
                ErrorCode::AuthExpiredToken,
            ),
            (
                vec![("authorization", format!("Basic {good}"))],
                ErrorCode::AuthInvalidToken,
            ),
            (
                vec![
                    ("authorization", bearer(&good)),
                    ("token", "other".to_owned()),
                ],
                ErrorCode::AuthInvalidToken,
            ),
            (
                // No exp at all.
                vec![(
                    "authorization",
                    bearer(&hs256(serde_json::json!({"sub": "u1"}), SECRET)),
                )],
                ErrorCode::AuthInvalidToken,
            ),
        ] {
            let pairs: Vec<(&'static str, &str)> =
                metadata.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let status = get_error(&server, &pairs).await.unwrap_err();
            assert_catalog(&status, code);
            // The token is never echoed.
            for (_, value) in &metadata {
                if value.len() > 12 {
                    assert!(!format!("{status:?}").contains(value.trim_start_matches("Bearer ")));
                }
            }
        }

        // Non-ASCII metadata.
        let mut request = Request::new(GetErrorRequest {
            key: Some(Key::Code(11)),
            domain: None,
        });
        request.metadata_mut().insert(
            "authorization",
            tonic::metadata::MetadataValue::try_from(&b"Bearer \xe9t\xe9"[..]).unwrap(),
        );
        let status = ErrorCatalogClient::new(server.channel().await)
            .get_error(request)
            .await
            .unwrap_err();
        assert_catalog(&status, ErrorCode::AuthInvalidToken);

        // Health stays open.
        tonic_health::pb::health_client::HealthClient::new(server.channel().await)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap();
        server.stop().await;
    }

    #[tokio::test]
    async fn issuer_audience_and_leeway_are_checked() {
        let verifier = JwtVerifier::hs256(SECRET)
            .with_issuer("https://issuer.example")
            .with_audience("errmap")
            .with_leeway(Duration::from_secs(60));
        let server = protected(verifier).await;
        let token = |claims| format!("Bearer {}", hs256(claims, SECRET));
        let iss = "https://issuer.example";

        let ok = token(serde_json::json!({"iss": iss, "aud": "errmap", "exp": now() + 60}));
        get_error(&server, &[("authorization", &ok)]).await.unwrap();
        // Expired 30 s ago, within the 60 s leeway.
        let within = token(serde_json::json!({"iss": iss, "aud": "errmap", "exp": now() - 30}));
        get_error(&server, &[("authorization", &within)])
            .await
            .unwrap();

        for (claims, code) in [
            (
                serde_json::json!({"iss": "evil", "aud": "errmap", "exp": now() + 60}),
                ErrorCode::AuthInvalidToken,
            ),
            (
                serde_json::json!({"iss": iss, "aud": "other", "exp": now() + 60}),
                ErrorCode::AuthInvalidToken,
            ),
            (
                serde_json::json!({"aud": "errmap", "exp": now() + 60}),
                ErrorCode::AuthInvalidToken,
            ),
            (
                serde_json::json!({"iss": iss, "aud": "errmap", "exp": now() - 300}),
                ErrorCode::AuthExpiredToken,
            ),
        ] {
            let status = get_error(&server, &[("authorization", &token(claims.clone()))])
                .await
                .unwrap_err();
            assert_catalog(&status, code);
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn rs256_and_es256_with_public_keys_in_pem() {
        for (public, private, alg) in [
            ("rsa_public.pem", "rsa_private.pem", Algorithm::RS256),
            ("ec_public.pem", "ec_private.pem", Algorithm::ES256),
        ] {
            let verifier = JwtVerifier::from_public_key_pem(&fixture(public)).unwrap();
            let server = protected(verifier).await;
            let key = match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(&fixture(private)).unwrap(),
                _ => EncodingKey::from_ec_pem(&fixture(private)).unwrap(),
            };
            let good = sign(
                serde_json::json!({"sub": "u", "exp": now() + 60}),
                alg,
                &key,
            );
            get_error(&server, &[("authorization", &format!("Bearer {good}"))])
                .await
                .unwrap_or_else(|s| panic!("{alg:?}: {s:?}"));

            let expired = sign(serde_json::json!({"exp": now() - 120}), alg, &key);
            let status = get_error(&server, &[("authorization", &format!("Bearer {expired}"))])
                .await
                .unwrap_err();
            assert_catalog(&status, ErrorCode::AuthExpiredToken);

            // An HS256 token signed with the public key's bytes (the classic
            // algorithm-confusion attack) is refused.
            let confused = hs256(serde_json::json!({"exp": now() + 60}), &fixture(public));
            let status = get_error(&server, &[("authorization", &format!("Bearer {confused}"))])
                .await
                .unwrap_err();
            assert_catalog(&status, ErrorCode::AuthInvalidToken);
            server.stop().await;
        }
    }

    #[test]
    fn bad_keys_are_clear_errors() {
        let err = JwtVerifier::from_public_key_pem(b"not a pem").unwrap_err();
        assert!(err.to_string().contains("not an RSA or EC"), "{err}");
        assert!(JwtVerifier::try_hs256(b"").is_err());
    }
}

#[tokio::test]
async fn a_forwarded_downstream_decode_error_is_not_a_decode_failure_of_this_server() {
    let downstream = TestServer::start_default().await;
    let server = TestServer::start_default().await;
    let status = call_probe(
        server.channel().await,
        "Forward",
        Request::new(format!("http://{}", downstream.addr)),
    )
    .await
    .unwrap_err();
    // tonic's client said "failed to decode Protobuf message" as INTERNAL;
    // this server decoded its own request fine, so that is a 42, without
    // the downstream's text.
    assert_catalog(&status, ErrorCode::ApiInternalServerError);
    assert!(!status.message().contains("decode"), "{}", status.message());
    server.stop().await;
    downstream.stop().await;
}

#[tokio::test]
async fn the_forwarded_error_really_is_tonics_decode_error() {
    // The same downstream call, made here without the layer: what the
    // Probe forwards is tonic's own decode failure, not a copied string.
    let downstream = TestServer::start_default().await;
    let mut grpc = tonic::client::Grpc::new(downstream.channel().await);
    grpc.ready().await.unwrap();
    let status = grpc
        .unary(
            Request::new(GetErrorRequest {
                key: Some(Key::Code(11)),
                domain: None,
            }),
            PathAndQuery::from_static("/errmap.v1.ErrorCatalog/GetError"),
            ProstCodec::<GetErrorRequest, prost_types::Duration>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal);
    assert!(
        status
            .message()
            .starts_with("failed to decode Protobuf message"),
        "{}",
        status.message()
    );
    downstream.stop().await;
}

#[tokio::test]
async fn a_handlers_unimplemented_is_41_and_only_the_routes_make_43() {
    let server = TestServer::start_default().await;
    let channel = server.channel().await;
    // A bare UNIMPLEMENTED from a handler, even with no message, is 41.
    let status = call_probe(
        channel.clone(),
        "Unimplemented",
        Request::new(String::new()),
    )
    .await
    .unwrap_err();
    assert_catalog(&status, ErrorCode::ApiNotImplemented);
    // A method errmap's own service does not have is 43, decided from its
    // descriptors before any handler runs.
    let status = raw_unary(
        channel,
        "/grpc.health.v1.Health/NoSuchMethod",
        String::new(),
    )
    .await
    .unwrap_err();
    assert_catalog(&status, ErrorCode::ApiMethodNotFound);
    assert_eq!(
        server
            .probe
            .started
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    server.stop().await;
}
