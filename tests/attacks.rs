//! The edge holds: attacks on a real `errmap serve` on 127.0.0.1, with its
//! default limits unless a test says otherwise. Every loop is bounded in
//! count and time. The figures each test prints (`cargo test --test attacks
//! -- --nocapture`) are the ones the README's "Reliability" section quotes.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{
    binary::{serve, serve_with, Served},
    raw::{grpc_frame, h2_connect, raw_call},
};
use errmap::{
    pb::{error_catalog_client::ErrorCatalogClient, get_error_request::Key, GetErrorRequest},
    ErrorCode, ErrorStatusExt,
};
use prost::Message as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tonic::transport::Channel;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: the rest of a client's handshake.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// The attacks run one at a time: each measures a victim's success and the
/// server's CPU, which another attack on the same two cores would distort.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn addr_of(served: &Served) -> SocketAddr {
    served.addr.parse().unwrap()
}

async fn channel(served: &Served) -> Channel {
    Channel::from_shared(served.url())
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("the victim connects")
}

/// A well-behaved client on its own connection: one `GetError` every
/// `pause` until `until`, each with a 2 s deadline. Gives (answered, sent).
async fn victim(channel: Channel, until: Instant, pause: Duration) -> (usize, usize) {
    let mut client = ErrorCatalogClient::new(channel);
    let (mut ok, mut sent) = (0, 0);
    while Instant::now() < until && sent < 10_000 {
        sent += 1;
        let mut request = tonic::Request::new(GetErrorRequest {
            key: Some(Key::Code(11)),
            domain: None,
        });
        request.set_timeout(Duration::from_secs(2));
        let answer =
            tokio::time::timeout(Duration::from_millis(2500), client.get_error(request)).await;
        if let Ok(Ok(reply)) = answer {
            if reply.into_inner().error.map(|e| e.name).as_deref() == Some("AUTH_EXPIRED_TOKEN") {
                ok += 1;
            }
        }
        tokio::time::sleep(pause).await;
    }
    (ok, sent)
}

/// One attacking connection: `streams` `GetError` streams that send their
/// headers and never their body. With `reopen`, every stream the server
/// answers is opened again, and so is the connection when it closes.
async fn half_open_attacker(
    addr: SocketAddr,
    streams: usize,
    reopen: bool,
    until: Instant,
    opened: Arc<AtomicUsize>,
) {
    while Instant::now() < until {
        let Ok(Ok(tcp)) =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok((client, connection)) = h2::client::handshake(tcp).await else {
            continue;
        };
        // The connection task answers the server's pings.
        let driver = tokio::spawn(connection);
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let client = client.clone();
            let opened = opened.clone();
            tasks.push(tokio::spawn(async move {
                while Instant::now() < until {
                    let Ok(mut ready) = client.clone().ready().await else {
                        return;
                    };
                    let request = http::Request::post("/errmap.v1.ErrorCatalog/GetError")
                        .header("content-type", "application/grpc")
                        .header("te", "trailers")
                        .body(())
                        .unwrap();
                    let Ok((response, send)) = ready.send_request(request, false) else {
                        return;
                    };
                    opened.fetch_add(1, Ordering::Relaxed);
                    let left = until.saturating_duration_since(Instant::now());
                    let answered = tokio::time::timeout(left, response).await;
                    drop(send);
                    match answered {
                        Ok(Ok(_)) if reopen => continue,
                        Ok(Err(_)) => return,
                        _ => {
                            // Not reopening: hold the stream to the end.
                            tokio::time::sleep(until.saturating_duration_since(Instant::now()))
                                .await;
                            return;
                        }
                    }
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
        driver.abort();
        if !reopen {
            return;
        }
    }
}

#[test]
fn half_open_streams_on_other_connections_do_not_starve_a_client() {
    let _serial = one_at_a_time();
    let served = serve(&[]);
    let addr = addr_of(&served);
    let (ok, sent, opened, rss) = runtime().block_on(async {
        let hold = Duration::from_secs(30);
        let until = Instant::now() + hold + Duration::from_secs(2);
        let opened = Arc::new(AtomicUsize::new(0));
        let mut attackers = Vec::new();
        // 8 connections × 256 half-open streams, held; and 2 connections
        // that reopen whatever the server closes.
        for (connections, reopen) in [(8, false), (2, true)] {
            for _ in 0..connections {
                attackers.push(tokio::spawn(half_open_attacker(
                    addr,
                    256,
                    reopen,
                    until,
                    opened.clone(),
                )));
            }
        }
        // Every attacking stream is open before the victim starts.
        let wait = Instant::now() + Duration::from_secs(20);
        while opened.load(Ordering::Relaxed) < 10 * 256 && Instant::now() < wait {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let channel = channel(&served).await;
        let (ok, sent) = victim(channel, Instant::now() + hold, Duration::from_millis(50)).await;
        let rss = served.rss_kib();
        for attacker in attackers {
            let _ = attacker.await;
        }
        (ok, sent, opened.load(Ordering::Relaxed), rss)
    });
    eprintln!(
        "starvation: victim {ok}/{sent} answered ({:.1}%), attacker streams opened {opened}, \
         server RSS {rss} KiB",
        100.0 * ok as f64 / sent as f64
    );
    assert!(opened >= 10 * 256, "the attack ran: {opened} streams");
    assert!(sent >= 100, "the victim kept calling: {sent}");
    assert!(
        ok * 100 >= sent * 95,
        "the victim got {ok} of {sent} answers under attack"
    );
}

#[test]
fn connections_that_never_finish_their_handshake_are_closed() {
    let _serial = one_at_a_time();
    // A cap above the flood, so that every connection is taken at once and
    // it is the handshake deadline (default 5 s) that closes them.
    let served = serve(&["--max-connections", "4000"]);
    let addr = addr_of(&served);
    let before = served.rss_kib();
    let (closed, ok, sent, peak, slowest_ms, took) = runtime().block_on(async {
        let channel = channel(&served).await;
        let began = Instant::now();
        let until = began + Duration::from_secs(20);
        let closed = Arc::new(AtomicUsize::new(0));
        let connected = Arc::new(AtomicUsize::new(0));
        let slowest = Arc::new(AtomicUsize::new(0));
        let mut flood = Vec::new();
        for i in 0..3000 {
            let closed = closed.clone();
            let connected = connected.clone();
            let slowest = slowest.clone();
            flood.push(tokio::spawn(async move {
                let left = until.saturating_duration_since(Instant::now());
                let Ok(Ok(mut tcp)) = tokio::time::timeout(left, TcpStream::connect(addr)).await
                else {
                    return;
                };
                connected.fetch_add(1, Ordering::Relaxed);
                let at = Instant::now();
                if i % 2 == 0 {
                    // Ten bytes of the preface, then nothing.
                    let _ = tcp.write_all(&PREFACE[..10]).await;
                }
                let mut buf = [0u8; 256];
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, tcp.read(&mut buf)).await {
                        // Closed by the server (EOF or reset).
                        Ok(Ok(0)) | Ok(Err(_)) => {
                            closed.fetch_add(1, Ordering::Relaxed);
                            slowest.fetch_max(at.elapsed().as_millis() as usize, Ordering::Relaxed);
                            return;
                        }
                        // The server's own SETTINGS; keep waiting.
                        Ok(Ok(_)) => continue,
                        Err(_) => return,
                    }
                }
            }));
        }
        let peak = Arc::new(AtomicUsize::new(0));
        let watcher = {
            let peak = peak.clone();
            let pid = served.pid();
            let closed = closed.clone();
            tokio::spawn(async move {
                while closed.load(Ordering::Relaxed) < 3000 && Instant::now() < until {
                    peak.fetch_max(common::binary::rss_kib(pid) as usize, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        // A client on its own connection is served during the flood.
        let (ok, sent) = victim(
            channel,
            Instant::now() + Duration::from_secs(10),
            Duration::from_millis(100),
        )
        .await;
        for task in flood {
            let _ = task.await;
        }
        let took = began.elapsed();
        let _ = watcher.await;
        assert_eq!(
            connected.load(Ordering::Relaxed),
            3000,
            "the flood connected"
        );
        (
            closed.load(Ordering::Relaxed),
            ok,
            sent,
            peak.load(Ordering::Relaxed) as u64,
            slowest.load(Ordering::Relaxed) as u64,
            took,
        )
    });
    let after = served.rss_kib();
    eprintln!(
        "handshake flood: {closed}/3000 closed by the server, the last {slowest_ms} ms after it \
         connected ({:.1} s in all); victim {ok}/{sent}; RSS {before} KiB before, {peak} KiB \
         peak, {after} KiB after",
        took.as_secs_f64()
    );
    assert_eq!(closed, 3000, "every half-finished handshake was closed");
    // The default deadline is 5 s; the margin is for a loaded machine.
    assert!(slowest_ms < 9_000, "a connection stayed {slowest_ms} ms");
    assert!(ok * 100 >= sent * 95, "victim {ok}/{sent}");
    assert!(peak < 96 * 1024, "peak RSS {peak} KiB");
}

#[test]
fn connections_past_the_cap_wait_until_one_closes() {
    let _serial = one_at_a_time();
    let served = serve(&["--max-connections", "20"]);
    let addr = addr_of(&served);
    runtime().block_on(async {
        // Connections that finish their handshake and stay; the server
        // answers a connection it has taken with its own SETTINGS.
        async fn open(addr: SocketAddr) -> TcpStream {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(PREFACE).await.unwrap();
            tcp.write_all(SETTINGS).await.unwrap();
            tcp
        }
        async fn taken(tcp: &mut TcpStream, wait: Duration) -> bool {
            let mut buf = [0u8; 64];
            matches!(
                tokio::time::timeout(wait, tcp.read(&mut buf)).await,
                Ok(Ok(n)) if n > 0
            )
        }
        let mut first = Vec::new();
        for _ in 0..20 {
            let mut tcp = open(addr).await;
            assert!(taken(&mut tcp, Duration::from_secs(5)).await);
            first.push(tcp);
        }
        let mut waiting = open(addr).await;
        assert!(
            !taken(&mut waiting, Duration::from_millis(1500)).await,
            "a 21st connection is not taken while 20 are open"
        );
        drop(first.pop());
        assert!(
            taken(&mut waiting, Duration::from_secs(5)).await,
            "it is taken once one closes"
        );
    });
}

#[test]
fn accept_backs_off_instead_of_spinning_when_out_of_file_descriptors() {
    let _serial = one_at_a_time();
    let served = serve_with(
        &["sh", "-c", "ulimit -n 200 && exec \"$0\" \"$@\""],
        &[],
        "warn",
    );
    let addr = addr_of(&served);
    // 300 connections that finish their handshake, so they stay open: the
    // server runs out of descriptors with some still in the backlog.
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        use std::io::Write as _;
        tcp.write_all(PREFACE).unwrap();
        tcp.write_all(SETTINGS).unwrap();
        held.push(tcp);
    }
    std::thread::sleep(Duration::from_secs(1));
    let cpu_before = served.cpu_seconds();
    std::thread::sleep(Duration::from_secs(3));
    let cpu = served.cpu_seconds() - cpu_before;
    drop(held);
    // Once the descriptors are back, a real client is served.
    let answered = runtime().block_on(async {
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            if let Ok(Ok(channel)) = tokio::time::timeout(
                Duration::from_secs(3),
                Channel::from_shared(served.url()).unwrap().connect(),
            )
            .await
            {
                let mut client = ErrorCatalogClient::new(channel);
                if client
                    .get_error(GetErrorRequest {
                        key: Some(Key::Code(11)),
                        domain: None,
                    })
                    .await
                    .is_ok()
                {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    });
    eprintln!(
        "EMFILE: {:.0}% of a core over 3 s while out of descriptors",
        cpu / 3.0 * 100.0
    );
    assert!(cpu < 0.9, "the accept loop used {cpu:.2} s of CPU in 3 s");
    assert!(answered, "a client is served once descriptors are free");
}

/// The size of a header block as HTTP/2 counts it.
fn block_size(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 32)
        .sum()
}

#[test]
fn reflection_and_health_obey_the_request_size_limit() {
    let _serial = one_at_a_time();
    let served = serve(&[]);
    let addr = addr_of(&served);
    let (largest, peak) = runtime().block_on(async {
        let symbol = "a".repeat(4 << 20);
        let request = tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                tonic_reflection::pb::v1::server_reflection_request::MessageRequest::FileContainingSymbol(symbol),
            ),
        }
        .encode_to_vec();
        let health = tonic_health::pb::HealthCheckRequest {
            service: "s".repeat(100 * 1024),
        }
        .encode_to_vec();
        let peak = Arc::new(AtomicUsize::new(0));
        let largest = Arc::new(AtomicUsize::new(0));
        let mut calls = Vec::new();
        for i in 0..16 {
            let (path, body) = if i % 4 == 3 {
                ("/grpc.health.v1.Health/Check", grpc_frame(&health, false))
            } else {
                (
                    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                    grpc_frame(&request, false),
                )
            };
            let largest = largest.clone();
            calls.push(tokio::spawn(async move {
                let client = h2_connect(addr).await;
                let reply = raw_call(&client, addr, path, &[], body).await;
                // The server may answer before it has read the whole
                // request, and reset the rest; either way it answers.
                let reply = match reply {
                    Ok(reply) => reply,
                    Err(e) => panic!("{path}: no answer: {e:?}"),
                };
                let status = reply.status().expect("a status");
                assert_eq!(
                    status.error_code(),
                    Some(ErrorCode::ApiInvalidRequest),
                    "{path}: {status:?}"
                );
                let size = block_size(&reply.headers)
                    + reply.trailers.as_ref().map_or(0, block_size);
                largest.fetch_max(size, Ordering::Relaxed);
            }));
        }
        let pid = served.pid();
        let watcher = {
            let peak = peak.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    peak.fetch_max(common::binary::rss_kib(pid) as usize, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        for call in calls {
            call.await.expect("every oversized request is answered with 40");
        }
        watcher.abort();
        (largest.load(Ordering::Relaxed), peak.load(Ordering::Relaxed))
    });
    eprintln!("oversized reflection/health: largest answer block {largest} B, peak RSS {peak} KiB");
    assert!(largest <= 8 * 1024, "answer block of {largest} bytes");
    assert!(peak < 96 * 1024, "peak RSS {peak} KiB");
}

#[test]
fn health_watches_and_reflection_streams_count_against_the_stream_limit() {
    let _serial = one_at_a_time();
    let served = serve(&["--stream-limit", "64"]);
    let (serving, shed, reflection_shed, rss) = runtime().block_on(async {
        let mut channels = Vec::new();
        for _ in 0..4 {
            channels.push(channel(&served).await);
        }
        let serving = Arc::new(AtomicUsize::new(0));
        let shed = Arc::new(AtomicUsize::new(0));
        let mut streams = Vec::new();
        let mut watches = Vec::new();
        for i in 0..512 {
            let mut health =
                tonic_health::pb::health_client::HealthClient::new(channels[i % 4].clone());
            let serving = serving.clone();
            let shed = shed.clone();
            watches.push(tokio::spawn(async move {
                match health
                    .watch(tonic_health::pb::HealthCheckRequest::default())
                    .await
                {
                    Ok(response) => {
                        let mut stream = response.into_inner();
                        if stream.message().await.ok().flatten().is_some() {
                            serving.fetch_add(1, Ordering::Relaxed);
                            return Some(stream);
                        }
                        None
                    }
                    Err(status) => {
                        if status.error_code() == Some(ErrorCode::ApiTooManyRequests) {
                            shed.fetch_add(1, Ordering::Relaxed);
                        }
                        None
                    }
                }
            }));
        }
        for watch in watches {
            if let Some(stream) = watch.await.unwrap() {
                streams.push(stream);
            }
        }
        // Reflection shares the limit.
        let mut reflection =
            tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
                channels[0].clone(),
            );
        let request = tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                    String::new(),
                ),
            ),
        };
        let reflected = async {
            let mut stream = reflection
                .server_reflection_info(tokio_stream::iter([request]))
                .await?
                .into_inner();
            stream.message().await
        }
        .await;
        let reflection_shed =
            matches!(&reflected, Err(s) if s.error_code() == Some(ErrorCode::ApiTooManyRequests));
        let rss = served.rss_kib();
        drop(streams);
        (
            serving.load(Ordering::Relaxed),
            shed.load(Ordering::Relaxed),
            reflection_shed,
            rss,
        )
    });
    eprintln!("stream limit 64: {serving} watches served, {shed} shed with 44, RSS {rss} KiB");
    assert_eq!(serving, 64);
    assert_eq!(shed, 512 - 64);
    assert!(
        reflection_shed,
        "a reflection stream past the limit gets 44"
    );
}

#[test]
fn every_answer_fits_the_trailer_budget_even_for_a_huge_name() {
    let _serial = one_at_a_time();
    let served = serve(&[]);
    let addr = addr_of(&served);
    runtime().block_on(async {
        let client = h2_connect(addr).await;
        // Just under the 64 KiB request limit: the name is echoed (cut) in
        // the 47's metadata.
        let name = "Ж".repeat(30 * 1024);
        let body = grpc_frame(
            &GetErrorRequest {
                key: Some(Key::Name(name)),
                domain: None,
            }
            .encode_to_vec(),
            false,
        );
        let reply = raw_call(&client, addr, "/errmap.v1.ErrorCatalog/GetError", &[], body)
            .await
            .unwrap();
        let status = reply.status().unwrap();
        assert_eq!(status.error_code(), Some(ErrorCode::ApiItemNotFound));
        assert!(block_size(&reply.headers) <= 8 * 1024);
        let _ = Bytes::new();
    });
}
