//! The `errmap` binary, run as a user would run it.

mod common;

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::binary::{serve, sigterm, wait_exit};

use errmap::{ErrorCode, ErrorStatusExt as _};

fn errmap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_errmap"))
        .args(args)
        .output()
        .expect("the errmap binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn lookup_hit_by_number_and_by_name() {
    for arg in ["21", "AUTH_REQUIRED", "auth_required"] {
        let out = errmap(&["lookup", arg]);
        assert_eq!(out.status.code(), Some(0), "{arg}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.starts_with("21 AUTH_REQUIRED\n"), "{text}");
        assert!(text.contains("UNAUTHENTICATED (16)"), "{text}");
        assert!(text.contains("HTTP:      401"), "{text}");
    }
}

#[test]
fn lookup_json_is_machine_readable() {
    let out = errmap(&["lookup", "44", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["code"], 44);
    assert_eq!(value["name"], "API_TOO_MANY_REQUESTS");
    assert_eq!(value["grpcCode"], 8);
    assert_eq!(value["grpcCodeName"], "RESOURCE_EXHAUSTED");
    assert_eq!(value["httpStatus"], 429);
    assert_eq!(value["retryDelay"], "1s");
    assert_eq!(value["domain"], errmap::DOMAIN);
}

#[test]
fn lookup_miss_exits_1_and_bad_input_exits_2() {
    for arg in ["48", "-1", "NOPE"] {
        let out = errmap(&["lookup", arg]);
        assert_eq!(out.status.code(), Some(1), "{arg}");
        assert!(stdout(&out).is_empty());
        assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    }
    for args in [
        &["lookup", ""][..],
        &["lookup", "99999999999"],
        &["lookup"],
        &["frobnicate"],
    ] {
        let out = errmap(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn list_prints_the_table_and_filters() {
    let out = errmap(&["list"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1 + errmap::catalog::entries().len());
    assert!(text.lines().next().unwrap().contains("CODE"));
    for entry in errmap::catalog::entries() {
        assert!(text.contains(entry.name()), "{}", entry.name());
    }

    let out = errmap(&["list", "--category", "oauth", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let values: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let codes: Vec<_> = values.iter().map(|v| v["code"].as_i64().unwrap()).collect();
    assert_eq!(codes, [60, 61, 62, 63, 64]);

    let out = errmap(&["list", "--category", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("auth_token"),
        "lists the real categories"
    );
}

fn details_header(status: &tonic::Status) -> String {
    let mut headers = http::HeaderMap::new();
    status.add_header(&mut headers).unwrap();
    headers["grpc-status-details-bin"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn decode_a_real_status() {
    let status = ErrorCode::AuthPasswordInvalid
        .builder()
        .message("too short")
        .metadata("minLength", "6")
        .field_violation("password", "must be at least 6 characters")
        .help_link("rules", "https://example.com/rules")
        .build()
        .unwrap();
    let value = details_header(&status);
    let out = errmap(&["decode", &value]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for wanted in [
        "status: INVALID_ARGUMENT (3) \"too short\"",
        "ErrorInfo: reason=AUTH_PASSWORD_INVALID domain=auth.errmap.dev",
        "code = 31",
        "minLength = 6",
        "LocalizedMessage [en-US]: Password should be longer",
        "- password: must be at least 6 characters",
        "- rules: https://example.com/rules",
        "catalog entry:",
        "31 AUTH_PASSWORD_INVALID",
    ] {
        assert!(text.contains(wanted), "{wanted:?} missing from:\n{text}");
    }

    // Padded input, a header-style prefix, and JSON.
    let padded = format!("{value}{}", "=".repeat((4 - value.len() % 4) % 4));
    let retry = details_header(&ErrorCode::ApiTryAgainLater.to_status());
    let out = errmap(&[
        "decode",
        "--json",
        &format!("grpc-status-details-bin: {retry}"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["errorInfo"]["reason"], "API_TRY_AGAIN_LATER");
    assert_eq!(json["retryInfo"]["retryDelay"], "5s");
    assert_eq!(json["catalogEntry"]["code"], 49);
    let out = errmap(&["decode", &padded]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn decode_garbage_is_a_one_line_error_with_exit_2() {
    for garbage in ["!!!", "AAAA", "////////", "not base64 at all", ""] {
        let out = errmap(&["decode", garbage]);
        assert_eq!(out.status.code(), Some(2), "{garbage:?}: {}", stdout(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{garbage:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("panicked"));
    }
}

#[test]
fn serve_prints_its_address_answers_and_exits_0_on_sigterm() {
    let mut served = serve(&["--grace-period", "2s"]);
    let url = format!("http://{}", served.addr);

    // A real gRPC call.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        let mut client = errmap::pb::error_catalog_client::ErrorCatalogClient::connect(url.clone())
            .await
            .unwrap();
        let found = client
            .get_error(errmap::pb::GetErrorRequest {
                key: Some(errmap::pb::get_error_request::Key::Code(11)),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.error.unwrap().name, "AUTH_EXPIRED_TOKEN");
        client
            .get_error(errmap::pb::GetErrorRequest { key: None })
            .await
            .unwrap_err()
    });
    assert_eq!(status.error_code(), Some(ErrorCode::ApiInvalidRequest));

    // The CLI as a client of that server.
    let out = errmap(&["lookup", "AUTH_EXPIRED_TOKEN", "--server", &url, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["code"], 11);
    let out = errmap(&["lookup", "48", "--server", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    sigterm(&served.child);
    assert_eq!(
        wait_exit(&mut served.child, Duration::from_secs(20)),
        Some(0)
    );
}

#[test]
fn lookup_against_an_absent_server_fails_cleanly() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = errmap(&[
        "lookup",
        "21",
        "--server",
        &format!("http://127.0.0.1:{port}"),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
}

/// A GetError whose request message is sent only when `gate` opens. The
/// server has accepted the call and waits for its request, so the call is in
/// flight (it takes a place only once the request is in). `sent` fires once
/// the call's request has been handed to the channel, so that a later call
/// on the same channel reaches the server after it.
fn held_call(
    channel: tonic::transport::Channel,
    mut gate: tokio::sync::broadcast::Receiver<()>,
    sent: tokio::sync::mpsc::Sender<()>,
) -> tokio::task::JoinHandle<Result<String, tonic::Status>> {
    tokio::spawn(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let _ = gate.recv().await;
            let _ = tx
                .send(errmap::pb::GetErrorRequest {
                    key: Some(errmap::pb::get_error_request::Key::Code(11)),
                })
                .await;
        });
        let call = grpc
            .client_streaming::<_, errmap::pb::GetErrorRequest, errmap::pb::GetErrorResponse, _>(
                tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
                http::uri::PathAndQuery::from_static("/errmap.v1.ErrorCatalog/GetError"),
                tonic_prost::ProstCodec::default(),
            );
        let mut call = std::pin::pin!(call);
        // One poll hands the request to the channel.
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(call.as_mut(), cx))
        })
        .await;
        let _ = sent.send(()).await;
        let result = match first {
            std::task::Poll::Ready(result) => result,
            std::task::Poll::Pending => call.await,
        };
        result.map(|r| r.into_inner().error.map(|d| d.name).unwrap_or_default())
    })
}

#[test]
fn sigterm_with_100_calls_in_flight_finishes_them_and_refuses_new_ones() {
    let mut served = serve(&["--grace-period", "10s"]);
    let url = format!("http://{}", served.addr);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..4 {
            channels.push(
                tonic::transport::Channel::from_shared(url.clone())
                    .unwrap()
                    .connect()
                    .await
                    .unwrap(),
            );
        }
        let (open, _) = tokio::sync::broadcast::channel::<()>(1);
        let (sent_tx, mut sent_rx) = tokio::sync::mpsc::channel(100);
        let calls: Vec<_> = (0..100)
            .map(|i| held_call(channels[i % 4].clone(), open.subscribe(), sent_tx.clone()))
            .collect();
        for _ in 0..100 {
            sent_rx.recv().await.expect("every held call was sent");
        }
        // A call on each channel after the held ones: once it is answered,
        // the server has accepted every held call before it.
        let probe = || errmap::pb::GetErrorRequest {
            key: Some(errmap::pb::get_error_request::Key::Code(1)),
        };
        for channel in &channels {
            errmap::pb::error_catalog_client::ErrorCatalogClient::new(channel.clone())
                .get_error(probe())
                .await
                .expect("the server answers while 100 calls wait for their requests");
        }
        let mut client =
            errmap::pb::error_catalog_client::ErrorCatalogClient::new(channels[0].clone());

        sigterm(&served.child);
        let began = Instant::now();
        // New calls are refused with 49 while the 100 are in flight.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match client.get_error(probe()).await {
                Err(s) if s.error_code() == Some(ErrorCode::ApiTryAgainLater) => break,
                Ok(_) => {}
                other => panic!("unexpected answer during shutdown: {other:?}"),
            }
            assert!(Instant::now() < deadline, "no 49 during shutdown");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = open.send(());
        for call in calls {
            assert_eq!(
                call.await.unwrap().expect("in-flight call finishes"),
                "AUTH_EXPIRED_TOKEN"
            );
        }
        assert!(began.elapsed() < Duration::from_secs(10));
    });
    assert_eq!(
        wait_exit(&mut served.child, Duration::from_secs(15)),
        Some(0)
    );
}
