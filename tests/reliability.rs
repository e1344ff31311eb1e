//! Reliability and security against a real server on 127.0.0.1: the gRPC
//! interop cases that apply, bad input on the wire (a raw HTTP/2 client),
//! limits under load and faults. Every loop is bounded in count and time.

mod common;

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use bytes::{BufMut, Bytes, BytesMut};
use common::{call_probe, TestServer};
use errmap::{
    pb::{error_catalog_client::ErrorCatalogClient, get_error_request::Key, GetErrorRequest},
    ErrorCode, ErrorStatusExt,
};
use errmap_server::server::ServerConfig;
use http::HeaderValue;
use prost::Message as _;
use tokio::net::TcpStream;
use tonic::{metadata::MetadataValue, Code, Request};

use common::raw::{get_error_body, grpc_frame, h2_connect, raw_call};

/// A good call on `client` (the same connection) answers.
async fn good_call(client: &h2::client::SendRequest<Bytes>, addr: std::net::SocketAddr) {
    let reply = raw_call(
        client,
        addr,
        "/errmap.v1.ErrorCatalog/GetError",
        &[],
        get_error_body(11),
    )
    .await
    .expect("the connection still works");
    assert_eq!(reply.status().map(|s| s.code()), Some(Code::Ok));
    assert!(reply.data.len() > 5);
}

/// A good call on a new connection answers.
async fn good_call_new_connection(server: &TestServer) {
    let mut client = ErrorCatalogClient::new(server.channel().await);
    client
        .get_error(GetErrorRequest {
            key: Some(Key::Code(21)),
            domain: None,
        })
        .await
        .expect("a new connection works");
}

// ---------------------------------------------------------------------------
// Interop-suite cases.

#[tokio::test]
async fn empty_request_messages_are_answered() {
    let server = TestServer::start_default().await;
    let channel = server.channel().await;
    // ListErrors with an empty request lists everything.
    let all = ErrorCatalogClient::new(channel.clone())
        .list_errors(errmap::pb::ListErrorsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.errors.len(), 27);
    // Health with an empty request.
    tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    // A zero-length message frame for GetError: a valid empty request (no key).
    let client = h2_connect(server.addr).await;
    let reply = raw_call(
        &client,
        server.addr,
        "/errmap.v1.ErrorCatalog/GetError",
        &[],
        grpc_frame(&[], false),
    )
    .await
    .unwrap();
    assert_eq!(
        reply.status().unwrap().error_code(),
        Some(ErrorCode::ApiInvalidRequest)
    );
    server.stop().await;
}

/// `Duration::MAX` reads as "no limit" to a library user, and is no
/// instant from now: hyper's keep-alive panicked on it, per connection.
/// Each duration of the configuration is refused at start with its flag
/// instead, and a day is still served.
#[tokio::test]
async fn a_duration_of_duration_max_is_refused_at_start_and_a_day_is_served() {
    type Setter = fn(&mut ServerConfig, Duration);
    let settings: [(&str, Setter); 5] = [
        ("--grace-period", |c, d| c.grace_period = d),
        ("--keepalive-interval", |c, d| c.keepalive_interval = d),
        ("--keepalive-timeout", |c, d| c.keepalive_timeout = d),
        ("--request-body-timeout", |c, d| c.request_body_timeout = d),
        ("--handshake-timeout", |c, d| c.handshake_timeout = d),
    ];
    for (flag, set) in settings {
        let mut config = ServerConfig::default();
        set(&mut config, Duration::MAX);
        let error = config.validate().unwrap_err();
        assert_eq!(error.setting, flag);
        assert!(error.to_string().contains("at most a day"), "{error}");
        let listener = errmap_server::server::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let served = errmap_server::server::ErrmapServer::new(config)
            .serve(listener, std::future::pending())
            .await;
        assert!(served.is_err(), "{flag}: served with Duration::MAX");
    }

    let mut config = ServerConfig::default();
    for (_, set) in settings {
        set(&mut config, errmap_server::server::MAX_DURATION);
    }
    let server = TestServer::start(config).await;
    let channel = server.channel().await;
    let name = common::error_name(channel.clone(), 21).await;
    assert_eq!(name.unwrap(), "AUTH_REQUIRED");
    assert_eq!(
        call_probe(channel, "Echo", Request::new("still up".to_owned()))
            .await
            .unwrap()
            .into_inner(),
        "still up"
    );
    // Nothing is in flight, so a day's grace period ends at once.
    server.stop().await;
}

#[tokio::test]
async fn status_code_and_message_round_trip_for_every_code() {
    let server = TestServer::start_default().await;
    let mut client = ErrorCatalogClient::new(server.channel().await);
    // The service's own errors: code, message and details as built.
    let status = client
        .get_error(GetErrorRequest {
            key: Some(Key::Name("NO_SUCH_NAME".into())),
            domain: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.message(),
        "no catalog error has requestedName \"NO_SUCH_NAME\""
    );
    assert_eq!(
        status.check_error_details().unwrap().status_message(),
        status.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn custom_metadata_is_echoed_in_headers_and_in_trailers() {
    let server = TestServer::start_default().await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let mut request = Request::new("x".to_owned());
    request
        .metadata_mut()
        .insert("x-echo", "trailing ascii".parse().unwrap());
    request
        .metadata_mut()
        .insert_bin("x-echo-bin", MetadataValue::from_bytes(&[0xab, 0xab, 0xab]));
    let mut stream = grpc
        .server_streaming(
            request,
            http::uri::PathAndQuery::from_static("/test.v1.Probe/EchoInTrailers"),
            tonic_prost::ProstCodec::<String, String>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().as_deref(), Some("x"));
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.error_code(), Some(ErrorCode::ApiItemNotFound));
    assert_eq!(status.metadata().get("x-echo").unwrap(), "trailing ascii");
    assert_eq!(
        status
            .metadata()
            .get_bin("x-echo-bin")
            .unwrap()
            .to_bytes()
            .unwrap()
            .as_ref(),
        [0xab, 0xab, 0xab]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_deadline_shorter_than_the_handler_drops_the_handler() {
    let server = TestServer::start_default().await;
    let mut request = Request::new("5000".to_owned());
    request.set_timeout(Duration::from_millis(100));
    let began = Instant::now();
    let status = call_probe(server.channel().await, "Slow", request)
        .await
        .unwrap_err();
    // tonic reports an expired deadline as CANCELLED "Timeout expired", in
    // its clients and in its servers' answer to grpc-timeout; stock gRPC
    // clients raise DEADLINE_EXCEEDED from their own timer (see the Python
    // interop test). What matters here is what the server does.
    assert_eq!(
        (status.code(), status.message()),
        (Code::Cancelled, "Timeout expired"),
        "{status:?}"
    );
    assert!(began.elapsed() < Duration::from_secs(4));
    // The server drops the handler: it never runs to its end.
    let probe = server.probe.clone();
    probe.wait_dropped().await;
    assert_eq!(probe.dropped.load(Ordering::SeqCst), 1);
    assert_eq!(probe.finished.load(Ordering::SeqCst), 0);
    server.stop().await;
}

#[tokio::test]
async fn client_cancellation_releases_the_handler_and_its_place() {
    let mut config = ServerConfig::default();
    config.concurrency_limit = 1;
    let server = TestServer::start(config).await;
    let channel = server.channel().await;
    let slow = server.start_slow(&channel, 30_000, 1).await;
    // The place is taken.
    let shed = call_probe(channel.clone(), "Slow", Request::new("0".into()))
        .await
        .unwrap_err();
    assert_eq!(shed.error_code(), Some(ErrorCode::ApiTooManyRequests));
    // The client gives up.
    slow[0].abort();
    server.probe.wait_dropped().await;
    assert_eq!(
        server.probe.dropped.load(Ordering::SeqCst),
        1,
        "the handler was dropped"
    );
    // And the place is free again.
    let ok = call_probe(channel, "Slow", Request::new("0".into()))
        .await
        .unwrap();
    assert_eq!(ok.into_inner(), "0");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Bad input on the wire.

#[tokio::test]
async fn bad_input_gets_a_catalog_answer_or_a_clean_refusal_and_the_server_stays_up() {
    let server = TestServer::start_default().await;
    let addr = server.addr;
    let client = h2_connect(addr).await;
    let path = "/errmap.v1.ErrorCatalog/GetError";

    // Garbage protobuf.
    let reply = raw_call(
        &client,
        addr,
        path,
        &[],
        grpc_frame(b"\xff\xff\xff\xff", false),
    )
    .await
    .unwrap();
    assert_eq!(
        reply.status().unwrap().error_code(),
        Some(ErrorCode::ApiInvalidRequest)
    );
    good_call(&client, addr).await;

    // A truncated frame: the header promises 100 bytes, 3 arrive.
    let mut truncated = BytesMut::new();
    truncated.put_u8(0);
    truncated.put_u32(100);
    truncated.put_slice(b"\x08\x0b\x00");
    let reply = raw_call(&client, addr, path, &[], truncated.freeze())
        .await
        .unwrap();
    assert_eq!(
        reply.status().unwrap().error_code(),
        Some(ErrorCode::ApiInvalidRequest)
    );
    good_call(&client, addr).await;

    // Over the size limit (64 KiB), announced in the frame header.
    let big = vec![b'x'; 70 * 1024];
    let reply = raw_call(&client, addr, path, &[], grpc_frame(&big, false))
        .await
        .unwrap();
    assert_eq!(
        reply.status().unwrap().error_code(),
        Some(ErrorCode::ApiInvalidRequest)
    );
    good_call(&client, addr).await;

    // The compressed flag without grpc-encoding.
    let message = GetErrorRequest {
        key: Some(Key::Code(11)),
        domain: None,
    }
    .encode_to_vec();
    let reply = raw_call(&client, addr, path, &[], grpc_frame(&message, true))
        .await
        .unwrap();
    assert_eq!(
        reply.status().unwrap().error_code(),
        Some(ErrorCode::ApiInvalidRequest)
    );
    good_call(&client, addr).await;

    // A content type that is not gRPC: a catalog error or a clean refusal.
    let reply = raw_call(
        &client,
        addr,
        path,
        &[("content-type", HeaderValue::from_static("text/plain"))],
        get_error_body(11),
    )
    .await;
    // 415, as the gRPC over HTTP/2 spec asks, with the catalog's 40 as a
    // trailers-only status (issue 22: no reply without a status passes).
    let reply = reply.expect("an answer, not a reset");
    assert_eq!(reply.http_status, 415);
    assert_eq!(
        reply.status().expect("a grpc-status").error_code(),
        Some(ErrorCode::ApiInvalidRequest)
    );
    good_call(&client, addr).await;

    // Non-ASCII bytes and broken percent-encoding in metadata.
    let reply = raw_call(
        &client,
        addr,
        path,
        &[
            (
                "x-odd",
                HeaderValue::from_bytes(b"caf\xe9 \xff%zz%").unwrap(),
            ),
            ("x-percent", HeaderValue::from_static("%E2%98%%G0")),
        ],
        get_error_body(11),
    )
    .await
    .unwrap();
    assert_eq!(reply.status().map(|s| s.code()), Some(Code::Ok));
    good_call(&client, addr).await;

    // A 64 KiB header, over the 16 KiB header list limit: refused cleanly.
    let huge = HeaderValue::from_str(&"h".repeat(64 * 1024)).unwrap();
    let reply = raw_call(&client, addr, path, &[("x-huge", huge)], get_error_body(11)).await;
    // h2 answers a header list four times its limit with GOAWAY
    // ENHANCE_YOUR_CALM for the connection (issue 22: a reply without a
    // status no longer passes).
    match reply {
        Ok(reply) => panic!(
            "answered {} {:?}",
            reply.http_status,
            reply.status().map(|s| s.code())
        ),
        Err(e) => assert!(
            e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM),
            "{e:?}"
        ),
    }
    // The server is up: a new connection works, and so does this one when
    // the refusal was per stream.
    good_call_new_connection(&server).await;
    let after = h2_connect(addr).await;
    good_call(&after, addr).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Limits under load.

#[tokio::test]
async fn beyond_the_concurrency_limit_the_excess_gets_44_at_once() {
    let mut config = ServerConfig::default();
    config.concurrency_limit = 8;
    let server = TestServer::start(config).await;
    let channel = server.channel().await;
    let began = Instant::now();
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let channel = channel.clone();
            tokio::spawn(async move {
                let result = call_probe(channel, "Slow", Request::new("1500".into())).await;
                (result, began.elapsed())
            })
        })
        .collect();
    let mut ok = 0;
    let mut shed = 0;
    let mut slowest_shed = Duration::ZERO;
    let mut fastest_ok = Duration::MAX;
    for call in calls {
        let (result, at) = call.await.unwrap();
        match result {
            Ok(_) => {
                ok += 1;
                fastest_ok = fastest_ok.min(at);
            }
            Err(status) => {
                assert_eq!(
                    status.error_code(),
                    Some(ErrorCode::ApiTooManyRequests),
                    "{status:?}"
                );
                shed += 1;
                slowest_shed = slowest_shed.max(at);
            }
        }
    }
    assert_eq!((ok, shed), (8, 24));
    // Shed at once: every refusal came back before any admitted call ended.
    assert!(
        slowest_shed < fastest_ok,
        "{slowest_shed:?} vs {fastest_ok:?}"
    );
    assert_eq!(server.probe.peak.load(Ordering::SeqCst), 8);
    server.stop().await;
}

#[tokio::test]
async fn streams_beyond_max_concurrent_streams_wait_their_turn() {
    let mut config = ServerConfig::default();
    config.max_concurrent_streams = 4;
    let server = TestServer::start(config).await;
    let channel = server.channel().await;
    // One call first, so that the client has the server's SETTINGS (a
    // client that opens streams before that gets REFUSED_STREAM, cleanly).
    call_probe(channel.clone(), "Slow", Request::new("0".into()))
        .await
        .unwrap();
    let calls: Vec<_> = (0..12)
        .map(|_| {
            tokio::spawn(call_probe(
                channel.clone(),
                "Slow",
                Request::new("200".into()),
            ))
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("every call is served, in turn");
    }
    assert_eq!(
        server.probe.peak.load(Ordering::SeqCst),
        4,
        "one connection, 4 streams at most"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_thousand_idle_connections_do_not_stop_a_real_client() {
    let server = TestServer::start_default().await;
    let mut idle = Vec::with_capacity(1000);
    for _ in 0..1000 {
        idle.push(h2_connect(server.addr).await);
    }
    let began = Instant::now();
    good_call_new_connection(&server).await;
    good_call(&idle[999], server.addr).await;
    assert!(began.elapsed() < Duration::from_secs(10));
    drop(idle);
    server.stop().await;
}

#[tokio::test]
async fn rapid_reset_gets_goaway_and_others_are_still_served() {
    let server = TestServer::start_default().await;
    let addr = server.addr;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .max_concurrent_reset_streams(100_000)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    // Open a stream and reset it at once, over and over (bounded).
    let began = Instant::now();
    let mut sent = 0;
    let mut refused = None;
    while sent < 20_000 && began.elapsed() < Duration::from_secs(10) {
        let request = http::Request::post(format!("http://{addr}/test.v1.Probe/Slow"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let mut ready = match client.clone().ready().await {
            Ok(ready) => ready,
            Err(e) => {
                refused = Some(e);
                break;
            }
        };
        match ready.send_request(request, false) {
            Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        sent += 1;
        if sent % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), connection).await;
    let error = refused.map(|e| format!("{e:?}")).unwrap_or_default()
        + &format!(" / connection: {closed:?}");
    // The server cut the connection long before the loop's bound: with
    // GOAWAY (ENHANCE_YOUR_CALM), which a client still writing sees as a
    // broken pipe or a reset.
    assert!(
        sent < 20_000 && began.elapsed() < Duration::from_secs(10),
        "never refused: {error}"
    );
    assert!(
        [
            "ENHANCE_YOUR_CALM",
            "GoAway",
            "BrokenPipe",
            "ConnectionReset"
        ]
        .iter()
        .any(|e| error.contains(e)),
        "after {sent} resets: {error}"
    );
    // Everyone else is still served.
    good_call_new_connection(&server).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Faults.

#[tokio::test]
async fn panics_mid_load_are_42_and_the_rest_is_served() {
    let server = TestServer::start_default().await;
    let channel = server.channel().await;
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let method = if i % 5 == 0 { "Panic" } else { "Slow" };
            let channel = channel.clone();
            tokio::spawn(async move {
                (
                    method,
                    call_probe(channel, method, Request::new("1".into())).await,
                )
            })
        })
        .collect();
    let mut panics = 0;
    for call in calls {
        match call.await.unwrap() {
            ("Panic", result) => {
                let status = result.unwrap_err();
                assert_eq!(status.error_code(), Some(ErrorCode::ApiInternalServerError));
                panics += 1;
            }
            (_, result) => assert_eq!(result.unwrap().into_inner(), "1"),
        }
    }
    assert_eq!(panics, 40);
    good_call_new_connection(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_call_leaves_the_server_well() {
    let mut config = ServerConfig::default();
    config.concurrency_limit = 2;
    let server = TestServer::start(config).await;
    // Its own connection, dropped while the call runs.
    let doomed = server.channel().await;
    let call = tokio::spawn(call_probe(doomed, "Slow", Request::new("30000".into())));
    while server.probe.current.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    call.abort();
    let _ = call.await;
    server.probe.wait_dropped().await;
    assert_eq!(server.probe.dropped.load(Ordering::SeqCst), 1);
    // Both places are free.
    let channel = server.channel().await;
    let a = tokio::spawn(call_probe(
        channel.clone(),
        "Slow",
        Request::new("100".into()),
    ));
    let b = tokio::spawn(call_probe(channel, "Slow", Request::new("100".into())));
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_deadline_that_passes_while_the_request_is_arriving_is_deadline_exceeded() {
    // tonic's own timeout would answer CANCELLED "Timeout expired"; the
    // intake answers first, with the code the call deserves.
    let server = TestServer::start_default().await;
    let client = h2_connect(server.addr).await;
    let request = http::Request::post(format!(
        "http://{}/errmap.v1.ErrorCatalog/GetError",
        server.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("grpc-timeout", "150m")
    .body(())
    .unwrap();
    let mut ready = client.clone().ready().await.unwrap();
    let (response, _send) = ready.send_request(request, false).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("answered")
        .unwrap();
    let status = errmap::details::status_from_header_map(response.headers())
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    server.stop().await;
}
