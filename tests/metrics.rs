//! Issue 16 on a real server: a known mix of calls, then a scrape of the
//! admin listener, every counter checked by its labels.

mod common;

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::{call_probe, TestServer};
use errmap::{
    pb::{error_catalog_client::ErrorCatalogClient, get_error_request::Key, GetErrorRequest},
    ErrorCode, ErrorStatusExt as _,
};
use errmap_server::{
    auth::{AuthInterceptor, JwtVerifier},
    metrics::Metrics,
    server::ServerConfig,
};
use http::uri::PathAndQuery;
use http_body_util::BodyExt as _;
use tonic::Request;
use tonic_prost::ProstCodec;

const SECRET: &[u8] = b"metrics test secret, 32 bytes ok";

fn token() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "m", "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// One sample: name, labels, value.
type Sample = (String, HashMap<String, String>, f64);

/// The samples of a Prometheus text exposition.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once("=\"").unwrap();
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            (name.to_owned(), labels, value.parse().unwrap())
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include `want`.
fn sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn scrape(admin: SocketAddr, accept: Option<&str>) -> (String, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let mut request = http::Request::get(format!("http://{admin}/metrics"));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = client
        .request(request.body(http_body_util::Empty::new()).unwrap())
        .await
        .unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (content_type, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn a_known_mix_is_counted_by_its_labels() {
    let metrics = Metrics::new();
    let mut config = ServerConfig::default();
    config.metrics = Some(metrics.clone());
    config.auth = Some(AuthInterceptor::new(JwtVerifier::hs256(SECRET)));
    config.concurrency_limit = 1;
    let server = TestServer::start(config).await;
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = admin_listener.local_addr().unwrap();
    tokio::spawn(errmap_server::admin::serve(
        admin_listener,
        metrics.clone(),
        std::future::pending(),
    ));
    let channel = server.channel().await;
    let mut client = ErrorCatalogClient::new(channel.clone());
    let bearer = format!("Bearer {}", token());
    let get = |code: i32, auth: Option<&str>| {
        let mut request = Request::new(GetErrorRequest {
            key: Some(Key::Code(code)),
            domain: None,
        });
        if let Some(auth) = auth {
            request
                .metadata_mut()
                .insert("authorization", auth.parse().unwrap());
        }
        request
    };

    let (hits, misses, no_token, bad_token, unknown, panics, shed) = (5, 3, 2, 4, 1000, 2, 3);
    for _ in 0..hits {
        client.get_error(get(11, Some(&bearer))).await.unwrap();
    }
    for _ in 0..misses {
        let status = client.get_error(get(48, Some(&bearer))).await.unwrap_err();
        assert_eq!(status.error_code(), Some(ErrorCode::ApiItemNotFound));
    }
    for _ in 0..no_token {
        client.get_error(get(11, None)).await.unwrap_err();
    }
    for _ in 0..bad_token {
        client
            .get_error(get(11, Some("Bearer not.a.token")))
            .await
            .unwrap_err();
    }
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    for i in 0..unknown {
        grpc.ready().await.unwrap();
        let path =
            PathAndQuery::try_from(format!("/errmap.v1.ErrorCatalog/Random{i:x}{}", i * 7919))
                .unwrap();
        let status = grpc
            .unary(
                Request::new(String::new()),
                path,
                ProstCodec::<String, String>::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.error_code(), Some(ErrorCode::ApiMethodNotFound));
    }
    for _ in 0..panics {
        call_probe(channel.clone(), "Panic", Request::new(String::new()))
            .await
            .unwrap_err();
    }
    // The only place is held: the next calls are shed.
    let slow = server.start_slow(&channel, 1500, 1).await;
    for _ in 0..shed {
        let status = client.get_error(get(11, Some(&bearer))).await.unwrap_err();
        assert_eq!(status.error_code(), Some(ErrorCode::ApiTooManyRequests));
    }
    for call in slow {
        call.await.unwrap().unwrap();
    }

    let (content_type, text) = scrape(admin, None).await;
    assert_eq!(content_type, errmap_server::admin::PROMETHEUS_TEXT);
    assert!(!text.contains("# EOF"));
    let artifacts = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-artifacts");
    let _ = std::fs::create_dir_all(artifacts);
    let _ = std::fs::write(format!("{artifacts}/metrics.txt"), &text);
    let samples = parse(&text);
    let count = "rpc_server_call_duration_seconds_count";
    let get_error = "/errmap.v1.ErrorCatalog/GetError";
    let by = |labels: &[(&str, &str)]| sum(&samples, count, labels);

    assert_eq!(
        by(&[("rpc_method", get_error), ("rpc_status_code", "OK")]),
        hits as f64
    );
    assert_eq!(
        by(&[
            ("rpc_method", get_error),
            ("error_reason", "API_ITEM_NOT_FOUND")
        ]),
        misses as f64
    );
    assert_eq!(by(&[("error_reason", "AUTH_REQUIRED")]), no_token as f64);
    assert_eq!(
        by(&[("error_reason", "AUTH_INVALID_TOKEN")]),
        bad_token as f64
    );
    assert_eq!(
        by(&[("error_reason", "API_TOO_MANY_REQUESTS")]),
        shed as f64
    );
    assert_eq!(
        by(&[
            ("error_reason", "API_INTERNAL_SERVER_ERROR"),
            ("rpc_status_code", "INTERNAL")
        ]),
        panics as f64
    );
    // A thousand unknown names are one label value.
    assert_eq!(
        by(&[
            ("rpc_method", "other"),
            ("error_reason", "API_METHOD_NOT_FOUND")
        ]),
        unknown as f64
    );
    let methods: std::collections::HashSet<&String> = samples
        .iter()
        .filter(|(n, _, _)| n == count)
        .map(|(_, l, _)| &l["rpc_method"])
        .collect();
    assert!(methods.len() <= 3, "{methods:?}");
    // The histogram counts every call (the slow one included), and every
    // failed call carries the catalog's domain.
    let total = hits + misses + no_token + bad_token + unknown + panics + shed + 1;
    assert_eq!(by(&[]), total as f64);
    assert_eq!(
        by(&[("error_domain", "auth.errmap.dev")]),
        (total - hits - 1) as f64
    );
    // The other families.
    assert_eq!(
        sum(&samples, "errmap_admission_shed_total", &[]),
        shed as f64
    );
    assert_eq!(
        sum(
            &samples,
            "errmap_auth_refusals_total",
            &[("reason", "AUTH_REQUIRED")]
        ),
        no_token as f64
    );
    assert_eq!(
        sum(
            &samples,
            "errmap_auth_refusals_total",
            &[("reason", "AUTH_INVALID_TOKEN")]
        ),
        bad_token as f64
    );
    assert_eq!(sum(&samples, "errmap_calls_in_flight", &[]), 0.0);
    assert_eq!(
        sum(
            &samples,
            "errmap_catalog_info",
            &[("domain", "auth.errmap.dev")]
        ),
        1.0
    );
    assert!(sum(&samples, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(sum(&samples, "process_open_fds", &[]) > 3.0);

    // OpenMetrics when asked.
    let (content_type, text) = scrape(admin, Some("application/openmetrics-text")).await;
    assert!(content_type.starts_with("application/openmetrics-text"));
    assert!(text.ends_with("# EOF\n"));

    // Readiness turns false while draining.
    assert!(metrics.is_ready());
    let mut server = server;
    let slow = server.start_slow(&channel, 1000, 1).await;
    server.begin_shutdown();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.is_ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness never dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for call in slow {
        let _ = call.await;
    }
    server.join().await.unwrap();
}

#[tokio::test]
async fn the_admin_listener_caps_its_connections_and_the_idlest_yield() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    tokio::spawn(errmap_server::admin::serve(
        listener,
        Metrics::new(),
        std::future::pending(),
    ));
    // Idle connections up to the cap, and 20 more: each newcomer past the
    // cap takes the place of the one idle longest.
    let started = tokio::time::Instant::now();
    let mut idle = Vec::new();
    for _ in 0..errmap_server::admin::MAX_ADMIN_CONNECTIONS + 20 {
        idle.push(tokio::net::TcpStream::connect(admin).await.unwrap());
    }
    // A probe is still answered, at once.
    let mut probe = tokio::net::TcpStream::connect(admin).await.unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), probe.read_to_end(&mut answer))
        .await
        .expect("the probe is answered beside idle connections past the cap")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    // The 20 idle longest yielded to the 20 newcomers: each is closed (its
    // read ends), all within 3 s of the start, well before the 5 s head
    // deadline could have closed them. (The probe took one more place, the
    // 21st oldest's.)
    let deadline = started + Duration::from_secs(3);
    for (i, tcp) in idle[..20].iter_mut().enumerate() {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "idle connection {i} was not closed within 3 s: {read:?}"
        );
    }
    // The newest, which did not yield, are all still open: what closed the
    // oldest was the cap, not a deadline.
    assert!(
        tokio::time::Instant::now() < started + Duration::from_secs(4),
        "too slow to tell the cap from the head deadline"
    );
    for (i, tcp) in idle.iter().enumerate().skip(21) {
        let mut buf = [0u8; 1];
        assert!(
            matches!(tcp.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "idle connection {i}, among the newest, was closed"
        );
    }
}
