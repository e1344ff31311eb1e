//! The `errmap` binary, run as a user would run it.

mod common;

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::binary::{serve, sigterm, wait_exit};

use errmap::Catalog as _;
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
    assert_eq!(
        text.lines().count(),
        1 + errmap::ErrorCode::table().entries().len()
    );
    assert!(text.lines().next().unwrap().contains("CODE"));
    for entry in errmap::ErrorCode::table().entries() {
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
        let mut client = common::catalog_client(url.clone()).await.unwrap();
        let found = client
            .get_error(errmap::pb::GetErrorRequest {
                key: Some(errmap::pb::get_error_request::Key::Code(11)),
                domain: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.error.unwrap().name, "AUTH_EXPIRED_TOKEN");
        client
            .get_error(errmap::pb::GetErrorRequest {
                key: None,
                domain: None,
            })
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
    // Each cause once (issue 22: it said "tcp connect error" twice).
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "error: cannot reach http://127.0.0.1:{port}: transport error: tcp connect error: Connection refused (os error 111)"
        )
    );
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
                    domain: None,
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
            domain: None,
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

/// Runs `errmap serve --addr 127.0.0.1:0 <args>`, expecting it to refuse to
/// start; gives its exit code and stderr.
fn serve_refused(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_errmap"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let code = wait_exit(&mut child, Duration::from_secs(10));
    let mut err = String::new();
    use std::io::Read as _;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, err)
}

#[test]
fn limits_that_cannot_work_are_refused_with_exit_2() {
    for (flag, value) in [
        ("--max-concurrent-streams", "0"),
        ("--concurrency-limit", "0"),
        ("--max-request-size", "0"),
        ("--keepalive-interval", "0s"),
        ("--keepalive-timeout", "0ms"),
        ("--stream-limit", "0"),
        ("--max-connections", "0"),
        ("--request-body-timeout", "0s"),
        ("--handshake-timeout", "0s"),
    ] {
        let (code, err) = serve_refused(&[flag, value]);
        assert_eq!(code, Some(2), "{flag} {value}: {err}");
        assert!(err.contains(flag), "{flag}: {err}");
        assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    }
}

fn secret_file(secret: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "errmap-cli-secret-{}-{}",
        std::process::id(),
        secret.len()
    ));
    std::fs::write(&path, secret).unwrap();
    path
}

#[test]
fn a_jwt_key_needs_an_audience_and_a_long_enough_secret() {
    let good = secret_file(b"a secret of thirty-two bytes, ok");
    let good = good.to_str().unwrap();
    let (code, err) = serve_refused(&["--auth-jwt-secret-file", good]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--auth-audience"), "{err}");
    assert!(err.contains("--auth-allow-any-audience"), "{err}");

    let short = secret_file(b"sixteen byte key");
    let (code, err) = serve_refused(&[
        "--auth-jwt-secret-file",
        short.to_str().unwrap(),
        "--auth-audience",
        "errmap",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("RFC 7518") && err.contains("32"), "{err}");

    // The explicit opt-out starts.
    let mut served = serve(&["--auth-jwt-secret-file", good, "--auth-allow-any-audience"]);
    served.stop();
}

#[test]
fn serve_checks_cors_origins() {
    for (origin, words) in [
        ("app.example.com", "scheme://host"),
        ("https://app.example.com/", "no path"),
        ("ftp://app.example.com", "http or https"),
    ] {
        let (code, err) = serve_refused(&["--cors-allow-origin", origin]);
        assert_eq!(code, Some(2), "{origin}: {err}");
        assert!(
            err.contains(words) && err.contains("--cors-allow-origin"),
            "{origin}: {err}"
        );
    }
    let (code, err) = serve_refused(&["--cors-allow-origin", "*", "--no-grpc-web"]);
    assert_eq!(code, Some(2), "{err}");
    // Good origins start.
    let mut served = serve(&[
        "--cors-allow-origin",
        "https://app.example.com",
        "--cors-allow-origin",
        "http://127.0.0.1:8080",
    ]);
    served.stop();
}

#[test]
fn log_format_json_writes_one_object_per_line_with_the_span_fields() {
    let secret = secret_file(b"a json log test secret of 32 bytes or more");
    let mut served = common::binary::serve_with(
        &[],
        &[
            "--log-format",
            "json",
            "--auth-jwt-secret-file",
            secret.to_str().unwrap(),
            "--auth-audience",
            "errmap",
        ],
        "info",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = common::catalog_client(served.url()).await.unwrap();
        let mut request = tonic::Request::new(errmap::pb::GetErrorRequest {
            key: Some(errmap::pb::get_error_request::Key::Code(11)),
            domain: None,
        });
        request.metadata_mut().insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let status = client.get_error(request).await.unwrap_err();
        assert_eq!(status.error_code(), Some(ErrorCode::AuthRequired));
    });
    served.stop();
    let stderr = String::from_utf8(served.stderr()).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(lines.len() >= 3, "{stderr}");
    for line in &lines {
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["level"].is_string(), "{line}");
        assert!(line["fields"]["message"].is_string(), "{line}");
    }
    let refused = lines
        .iter()
        .find(|l| l["fields"]["message"] == "call without a token refused")
        .unwrap_or_else(|| panic!("no refusal line in {stderr}"));
    let span = &refused["span"];
    assert_eq!(span["rpc.system"], "grpc");
    assert_eq!(span["rpc.service"], "errmap.v1.ErrorCatalog");
    assert_eq!(span["rpc.method"], "GetError");
    assert_eq!(span["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span["parent_span_id"], "00f067aa0ba902b7");
    assert!(!stderr.contains('\u{1b}'), "no ANSI escapes");
}

#[test]
fn lookup_retries_what_the_server_asks_to_retry() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut config = errmap_server::server::ServerConfig::default();
    config.concurrency_limit = 1;
    let server = rt.block_on(common::TestServer::start(config));
    let url = format!("http://{}", server.addr);
    let channel = rt.block_on(server.channel());
    // The only place is held for 1.5 s: without retries, 44.
    let slow = rt.block_on(server.start_slow(&channel, 1500, 1));
    let once = errmap(&["lookup", "11", "--server", &url, "--retries", "0"]);
    assert_eq!(once.status.code(), Some(3), "{}", stderr(&once));
    assert!(
        stderr(&once).contains("ResourceExhausted"),
        "{}",
        stderr(&once)
    );
    // With retries, after the 1 s RetryInfo delay (twice if need be), found.
    let retried = errmap(&["lookup", "11", "--server", &url, "--retries", "2"]);
    assert_eq!(retried.status.code(), Some(0), "{}", stderr(&retried));
    assert!(stdout(&retried).contains("AUTH_EXPIRED_TOKEN"));
    for call in slow {
        rt.block_on(call).unwrap().unwrap();
    }
    rt.block_on(server.stop());
}

#[test]
fn serve_takes_a_host_name() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_errmap"))
        .args(["serve", "--addr", "localhost:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead as _;
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: std::net::SocketAddr = line.trim().parse().expect("the bound address");
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(0));
}

#[test]
fn refused_tokens_cannot_forge_log_lines_and_logs_have_no_colours() {
    use base64::Engine as _;
    let secret = secret_file(b"the log test secret, 32 bytes ok");
    let mut served = common::binary::serve_with(
        &[],
        &[
            "--auth-jwt-secret-file",
            secret.to_str().unwrap(),
            "--auth-audience",
            "errmap",
        ],
        "info",
    );
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let header =
        b64("{\"alg\":\"HS256\\n\\u001b[31mFORGED admin signed in\\u001b[0m\",\"typ\":\"JWT\"}");
    let token = format!("{header}.{}.c2ln", b64("{\"exp\":99999999999}"));
    let url = served.url();
    let status = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client = common::catalog_client(url).await.unwrap();
        let mut request = tonic::Request::new(errmap::pb::GetErrorRequest {
            key: Some(errmap::pb::get_error_request::Key::Code(1)),
            domain: None,
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        client.get_error(request).await.unwrap_err()
    });
    assert_eq!(status.error_code(), Some(ErrorCode::AuthInvalidToken));
    served.stop();
    let log = served.stderr();
    let text = String::from_utf8_lossy(&log);
    assert!(
        !log.contains(&0x1b),
        "no escape byte reaches the log:\n{text}"
    );
    assert!(
        !text.lines().any(|l| l.trim_start().starts_with("FORGED")),
        "no forged line:\n{text}"
    );
    assert!(
        text.contains("token refused") && text.contains("\\u{1b}[31mFORGED"),
        "the refusal is logged, escaped:\n{text}"
    );
}

#[test]
fn decode_shows_terminal_escapes_from_the_peer_instead_of_running_them() {
    let nasty = "\u{1b}[2J\u{1b}]0;pwned\u{7}gone";
    let status = ErrorCode::ApiInvalidRequest
        .builder()
        .message(nasty)
        .metadata("field", nasty)
        .field_violation(nasty, nasty)
        .build()
        .unwrap();
    let out = errmap(&["decode", &details_header(&status)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!out.stdout.contains(&0x1b), "{}", stdout(&out));
    assert!(!out.stdout.contains(&0x07));
    assert!(stdout(&out).contains("\\u{1b}[2J"), "{}", stdout(&out));
    // JSON output stays exact: JSON escapes control characters itself.
    let out = errmap(&["decode", &details_header(&status), "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["status"]["message"], nasty);
}

/// A lookup server that answers with terminal escapes in every field.
#[derive(Default)]
struct Hostile;

#[tonic::async_trait]
impl errmap::pb::error_catalog_server::ErrorCatalog for Hostile {
    async fn get_error(
        &self,
        _: tonic::Request<errmap::pb::GetErrorRequest>,
    ) -> Result<tonic::Response<errmap::pb::GetErrorResponse>, tonic::Status> {
        let nasty = "X\u{1b}[31mRED\u{1b}]0;title\u{7}".to_owned();
        Ok(tonic::Response::new(errmap::pb::GetErrorResponse {
            error: Some(errmap::pb::ErrorDescriptor {
                code: Some(ErrorCode::AuthRequired as i32),
                number: Some(ErrorCode::AuthRequired as i32),
                name: nasty.clone(),
                message: nasty.clone(),
                category: nasty.clone(),
                grpc_code: 16,
                grpc_code_name: nasty.clone(),
                http_status: 401,
                domain: nasty.clone(),
                retry_delay: None,
                localized_message: nasty.clone(),
                locale: nasty.clone(),
                params: vec![nasty],
            }),
        }))
    }

    async fn list_errors(
        &self,
        _: tonic::Request<errmap::pb::ListErrorsRequest>,
    ) -> Result<tonic::Response<errmap::pb::ListErrorsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }

    async fn list_catalogs(
        &self,
        _: tonic::Request<errmap::pb::ListCatalogsRequest>,
    ) -> Result<tonic::Response<errmap::pb::ListCatalogsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
}

#[test]
fn lookup_on_a_hostile_server_escapes_what_it_prints() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(errmap::pb::error_catalog_server::ErrorCatalogServer::new(
                Hostile,
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let out = errmap(&["lookup", "21", "--server", &format!("http://{addr}")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!out.stdout.contains(&0x1b), "{}", stdout(&out));
    assert!(!out.stdout.contains(&0x07), "{}", stdout(&out));
    assert!(stdout(&out).contains("X\\u{1b}[31mRED"), "{}", stdout(&out));
}

#[test]
fn names_are_case_blind_offline_and_on_a_server_alike() {
    let mut served = serve(&[]);
    let url = served.url();
    for arg in ["auth_required", "Auth_Required", "AUTH_REQUIRED"] {
        let offline = errmap(&["lookup", arg, "--json"]);
        let remote = errmap(&["lookup", arg, "--json", "--server", &url]);
        assert_eq!(
            offline.status.code(),
            Some(0),
            "{arg}: {}",
            stderr(&offline)
        );
        assert_eq!(remote.status.code(), Some(0), "{arg}: {}", stderr(&remote));
        assert_eq!(offline.stdout, remote.stdout, "{arg}");
    }
    served.stop();
}

#[test]
fn lookup_lang_asks_the_server_with_accept_language() {
    let mut served = serve(&[]);
    let url = served.url();
    // The server answers in the locale asked for, as the offline lookup does.
    for lang in ["ru", "ru-RU", "RU_ru"] {
        let offline = errmap(&["lookup", "11", "--lang", lang, "--json"]);
        let remote = errmap(&["lookup", "11", "--lang", lang, "--json", "--server", &url]);
        assert_eq!(remote.status.code(), Some(0), "{lang}: {}", stderr(&remote));
        let value: serde_json::Value = serde_json::from_slice(&remote.stdout).unwrap();
        assert_eq!(value["locale"], "ru-RU");
        assert_eq!(
            value["localizedMessage"],
            ErrorCode::AuthExpiredToken
                .entry()
                .message_in("ru-RU")
                .unwrap()
        );
        assert_eq!(offline.stdout, remote.stdout, "{lang}");
    }
    // A language the catalog lacks: the server falls back to English (the
    // offline lookup refuses it, as it can list what there is).
    let remote = errmap(&["lookup", "11", "--lang", "fr", "--json", "--server", &url]);
    assert_eq!(remote.status.code(), Some(0), "{}", stderr(&remote));
    let value: serde_json::Value = serde_json::from_slice(&remote.stdout).unwrap();
    assert_eq!(value["locale"], "en-US");
    assert_eq!(value["localizedMessage"], value["message"]);
    // Text output shows the localized line.
    let remote = errmap(&["lookup", "11", "--lang", "ru", "--server", &url]);
    assert!(stdout(&remote).contains("ru-RU:"), "{}", stdout(&remote));
    // A value that cannot be a header is bad input, not a panic.
    let bad = errmap(&["lookup", "11", "--lang", "ру", "--server", &url]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("--lang"), "{}", stderr(&bad));
    served.stop();
}

#[test]
fn the_readmes_decode_example_works_when_pasted() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("$ errmap decode '"))
        .expect("the README shows errmap decode");
    let value = line
        .trim_start_matches("$ errmap decode '")
        .trim_end_matches('\'');
    let out = errmap(&["decode", value]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = stdout(&out);
    for expected in readme
        .lines()
        .skip_while(|l| *l != line)
        .skip(1)
        .take_while(|l| *l != "...")
    {
        assert!(shown.contains(expected), "{expected:?} not in\n{shown}");
    }
}

/// A self-signed certificate for localhost and 127.0.0.1, written to a
/// fresh directory: (certificate, key).
fn self_signed(test: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("errmap-cli-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// Issue 22, items 8 and 9: a plaintext client on a TLS port is told to
/// use https://, and no cause of a failure is printed twice.
#[test]
fn client_failures_name_the_likely_cause_once() {
    let (cert, key) = self_signed("plaintext");
    let served = serve(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    for server in [format!("http://{}", served.addr), served.addr.clone()] {
        let out = errmap(&["lookup", "21", "--server", &server]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{server}: {err}");
        assert!(
            err.contains("if it serves TLS at that address, use https://"),
            "{server}: {err}"
        );
    }
    // https:// without --ca: the self-signed certificate is not trusted,
    // said once.
    let out = errmap(&[
        "lookup",
        "21",
        "--server",
        &format!("https://{}", served.addr),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        !err.contains("use https://"),
        "no plaintext hint on https: {err}"
    );
    assert!(err.contains("cannot reach"), "{err}");
    // A refused connection, each cause said once: in
    // lookup_against_an_absent_server_fails_cleanly.
}

/// A TLS failure whose cause text is also its source's is said once
/// (rustls' `invalid peer certificate: UnknownIssuer` was printed twice).
#[test]
fn an_untrusted_certificate_is_named_once() {
    let (cert, key) = self_signed("untrusted");
    // A CA-less leaf: the client, trusting only the system roots, refuses it.
    let served = serve(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    // A CA of another name, that signed nothing the server has.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "another CA");
    let other_ca = cert.with_file_name("other-ca.pem");
    std::fs::write(&other_ca, params.self_signed(&ca_key).unwrap().pem()).unwrap();
    let out = errmap(&[
        "lookup",
        "21",
        "--server",
        &format!(
            "https://localhost:{}",
            served.addr.rsplit(':').next().unwrap()
        ),
        "--ca",
        other_ca.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(err.contains("not signed by a trusted CA"), "{err}");
    assert_eq!(err.matches("UnknownIssuer").count(), 1, "{err}");
    for word in [
        "invalid peer certificate",
        "tcp connect error",
        "transport error",
    ] {
        assert!(err.matches(word).count() <= 1, "{word} twice: {err}");
    }
}

/// Issue 22, item 10: serving beyond loopback without TLS is a warning that
/// names the flags.
#[test]
fn serving_beyond_loopback_without_tls_warns() {
    /// The log lines of `serve --addr ADDR` up to its "serving" line.
    fn startup_log(addr: &str) -> String {
        use std::io::BufRead as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_errmap"))
            .args(["serve", "--addr", addr])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut log = String::new();
        for line in std::io::BufReader::new(child.stderr.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .take(20)
        {
            log.push_str(&line);
            log.push('\n');
            if line.contains("serving errmap.v1.ErrorCatalog") {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        log
    }
    let log = startup_log("0.0.0.0:0");
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("without TLS"))
        .unwrap_or_else(|| panic!("no warning: {log}"));
    assert!(warning.contains("--tls-cert"), "{warning}");
    // On loopback, no such warning.
    let log = startup_log("127.0.0.1:0");
    assert!(log.contains("serving errmap.v1.ErrorCatalog"), "{log}");
    assert!(!log.contains("without TLS"), "{log}");
}

/// Issue 22, item 15: `serve --help` lists the auth flags together.
#[test]
fn serve_help_lists_the_auth_flags_together() {
    let help = stdout(&errmap(&["serve", "--help"]));
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|l| l.split([' ', '<']).next().unwrap())
        .collect();
    let auth: Vec<usize> = flags
        .iter()
        .enumerate()
        .filter(|(_, f)| f.starts_with("auth-"))
        .map(|(i, _)| i)
        .collect();
    assert!(auth.contains(&flags.iter().position(|f| *f == "auth-leeway").unwrap()));
    assert_eq!(
        auth.last().unwrap() - auth.first().unwrap() + 1,
        auth.len(),
        "the auth flags are apart: {flags:?}"
    );
}

/// The shop's catalog as `protoc --include_imports` would write it, with
/// its domain and package replaced when `domain` is given (a second catalog
/// holding the same names).
fn shop_set(domain: Option<&str>) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!(
        "errmap-cli-shop-{}-{}",
        std::process::id(),
        domain.unwrap_or("shop")
    ));
    std::fs::create_dir_all(dir.join("shop/v1")).unwrap();
    let mut proto =
        std::fs::read_to_string(root.join("examples/shop/proto/shop/v1/shop.proto")).unwrap();
    if let Some(domain) = domain {
        proto = proto
            .replace("\"shop.example.com\"", &format!("{domain:?}"))
            .replace("package shop.v1;", "package shop.v2;");
    }
    std::fs::write(dir.join("shop/v1/shop.proto"), proto).unwrap();
    let mut compiler = protox::Compiler::new([dir.clone(), root.join("proto")]).unwrap();
    compiler.include_imports(true);
    compiler.open_file("shop/v1/shop.proto").unwrap();
    let path = dir.join("shop.binpb");
    std::fs::write(&path, compiler.encode_file_descriptor_set()).unwrap();
    path
}

/// Issue 22, item 11: on a server with several catalogs, a name found in
/// exactly one is found without `--domain`; an ambiguous one names the
/// domains; a number without `--domain` says which catalog answered.
#[test]
fn lookups_on_a_multi_catalog_server_find_names_and_say_which_domain() {
    let shop = shop_set(None);
    let served = serve(&["--catalog", shop.to_str().unwrap()]);
    let url = served.url();

    let out = errmap(&["lookup", "SHOP_ERROR_CARD_DECLINED", "--server", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("1 SHOP_ERROR_CARD_DECLINED\n"), "{text}");
    assert!(text.contains("domain:    shop.example.com"), "{text}");
    assert_eq!(stderr(&out), "", "a name in one catalog needs no note");

    let out = errmap(&["lookup", "1", "--server", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("1 AUTH_EMAIL_TAKEN\n"));
    assert_eq!(
        stderr(&out),
        "note: the default catalog (auth.errmap.dev) answered; the server also serves \
         shop.example.com: pass --domain DOMAIN to ask one of them\n"
    );
    let out = errmap(&[
        "lookup",
        "1",
        "--server",
        &url,
        "--domain",
        "shop.example.com",
    ]);
    assert!(stdout(&out).starts_with("1 SHOP_ERROR_CARD_DECLINED\n"));
    assert_eq!(stderr(&out), "");
    let out = errmap(&["lookup", "NOPE_NOT_THERE", "--server", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    drop(served);

    // The same names in two catalogs: the answer names both domains.
    let twin = shop_set(Some("twin.example.com"));
    let served = serve(&[
        "--catalog",
        shop.to_str().unwrap(),
        "--catalog",
        twin.to_str().unwrap(),
    ]);
    let out = errmap(&[
        "lookup",
        "SHOP_ERROR_CARD_DECLINED",
        "--server",
        &served.url(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "error: domain: SHOP_ERROR_CARD_DECLINED is in several catalogs \
         (shop.example.com, twin.example.com); set the domain\n"
    );
}

/// The README's `errmap lookup 21` shows what the binary prints, line for
/// line (issue 22: the README, pasted, does what it says).
#[test]
fn the_readmes_lookup_example_is_what_the_binary_prints() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let shown: Vec<&str> = readme
        .lines()
        .skip_while(|l| *l != "$ errmap lookup 21")
        .skip(1)
        .take_while(|l| !l.starts_with("$ ") && !l.starts_with("```"))
        .collect();
    assert!(
        shown.len() >= 6,
        "the README shows errmap lookup 21: {shown:?}"
    );
    let out = errmap(&["lookup", "21"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), shown);
}
