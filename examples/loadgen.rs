//! errmap's load tool: drives unary calls against real servers on
//! 127.0.0.1 and compares, in one run, alternating:
//!
//! - `noop`: `grpc.health.v1.Health/Check`, the baseline;
//! - `hit`: `GetError` for a code that exists;
//! - `miss`: `GetError` for a code that does not (the rich error path);
//!
//! on a server with errmap's layers and the auth interceptor (`errmap`),
//! and the hit and noop on a bare tonic server without them (`bare`), and
//! the hit on errmap's server over TLS (`errmap-tls`, certificates made at
//! start), with the cost of opening a new connection with and without TLS,
//! and the hit over gRPC-Web on HTTP/1.1 (`errmap-web`, tonic-web's client
//! layer on hyper's pooled HTTP/1.1 client) against the same server, the
//! hit over the HTTP/JSON API (`errmap-http/hit`, `GET /v1/errors/11`) and
//! the catalog page (`errmap-http/page`, `GET /`), and the hit on the
//! `errmap` server through the client retry layer
//! (`errmap-retry/hit`, `errmap_client::RetryLayer` over the same
//! channels), against the bare client on those channels; the hit over
//! the Connect protocol on h2c, in JSON (`errmap-connect-json/hit`) and in
//! proto (`errmap-connect-proto/hit`), against the same server; and the
//! gRPC hit on a server with Connect turned off (`no-connect/hit`), beside
//! `errmap/hit`, for what serving Connect costs gRPC; and the hit on a
//! server that exports every call's span over OTLP (`otlp/hit`) to a
//! receiver of its own process (`otlp-sink`), beside `errmap/hit`.
//! Then it measures the `errmap serve` binary: start-up time to accepting
//! connections, and RSS with 1,000 calls in flight.
//!
//! Every server runs as a process of its own (this program again, started
//! with `ERRMAP_LOADGEN_SERVER` naming the server), so each scenario reports,
//! next to its throughput, the server's CPU time per call over the
//! scenario's windows (read from `/proc/<pid>/task/*/schedstat`, in
//! nanoseconds, and `/proc/<pid>/stat`, in clock ticks) and this client's.
//! A layer's cost is then a difference of microseconds of server CPU, which
//! what else runs on the machine moves far less than a throughput ratio.
//!
//! ```sh
//! cargo build --release && cargo run --release --example loadgen -- --duration 20s
//! ```
//!
//! Flags: `--duration D` (total, default 20s), `--rounds N` (default 5),
//! `--concurrency N` tasks (default 64), `--channels M` (default 4),
//! `--serve-binary PATH` (default: the `errmap` next to this example's
//! directory), `--json`, and `--compare-binaries BEFORE AFTER`: instead of
//! the above, two `errmap serve` processes under the same load, alternated
//! round by round, with each server's CPU time per call from `/proc`.
//! `--duration` is split evenly over the rounds and scenarios; each
//! measured slice follows an unmeasured tenth of a slice (at most 100 ms)
//! of the same scenario, so that no scenario starts on a server that sat
//! idle. Every loop is bounded by time and stops by itself; all traffic
//! goes to 127.0.0.1.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use errmap::Catalog as _;
use errmap::{
    pb::{error_catalog_client::ErrorCatalogClient, get_error_request::Key, GetErrorRequest},
    ErrorCode, ErrorStatusExt,
};
use errmap_client::{Retry, RetryLayer, RetryPolicy};
use errmap_server::{
    auth::{AuthInterceptor, JwtVerifier},
    server::{ErrmapServer, ServerConfig},
    service::CatalogService,
};
use hdrhistogram::Histogram;
use serde_json::json;
use tonic::{metadata::MetadataValue, transport::Channel, Request};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
use tower::Layer as _;

const SECRET: &[u8] = b"loadgen secret: only for 127.0.0.1";

#[derive(Debug, Clone)]
struct Options {
    duration: Duration,
    rounds: u32,
    concurrency: usize,
    channels: usize,
    serve_binary: Option<PathBuf>,
    /// Two `errmap` binaries to compare, each as its own `errmap serve`.
    compare: Option<(PathBuf, PathBuf)>,
    /// The scenarios to run, in their order in [`SCENARIOS`].
    scenarios: Vec<Scenario>,
    json: bool,
}

fn parse_options(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        duration: Duration::from_secs(20),
        rounds: 5,
        concurrency: 64,
        channels: 4,
        serve_binary: std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.parent()?.parent()?.join("errmap"))),
        compare: None,
        scenarios: SCENARIOS.to_vec(),
        json: false,
    };
    let mut args = args.peekable();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--duration" => o.duration = parse_duration(&value()?)?,
            "--rounds" => o.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--concurrency" => {
                o.concurrency = value()?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            "--channels" => {
                o.channels = value()?.parse().map_err(|e| format!("--channels: {e}"))?
            }
            "--serve-binary" => o.serve_binary = Some(PathBuf::from(value()?)),
            "--no-serve-binary" => o.serve_binary = None,
            "--compare-binaries" => {
                let a = PathBuf::from(value()?);
                let b = PathBuf::from(args.next().ok_or("--compare-binaries needs two paths")?);
                o.compare = Some((a, b));
            }
            "--scenarios" => {
                let names = value()?;
                let wanted: Vec<&str> = names.split(',').map(str::trim).collect();
                if let Some(unknown) = wanted
                    .iter()
                    .find(|w| !SCENARIOS.iter().any(|s| s.name == **w))
                {
                    let known: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
                    return Err(format!(
                        "--scenarios: no scenario {unknown:?}; there are {}",
                        known.join(", ")
                    ));
                }
                o.scenarios = SCENARIOS
                    .into_iter()
                    .filter(|s| wanted.contains(&s.name))
                    .collect();
            }
            "--json" => o.json = true,
            "--help" | "-h" => {
                return Err(
                    "usage: loadgen [--duration 20s] [--rounds 5] [--concurrency 64] \
                     [--channels 4] [--serve-binary PATH | --no-serve-binary] \
                     [--scenarios errmap/hit,bare/hit,...] \
                     [--compare-binaries BEFORE AFTER] [--json]"
                        .to_owned(),
                )
            }
            other => return Err(format!("unknown flag {other}; see --help")),
        }
    }
    if o.rounds == 0 || o.concurrency == 0 || o.channels == 0 {
        return Err("--rounds, --concurrency and --channels must be at least 1".to_owned());
    }
    Ok(o)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (n, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        (text, 1.0)
    };
    let n: f64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 20s"))?;
    Duration::try_from_secs_f64(n * scale).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Noop,
    Hit,
    Miss,
    /// `GET /`, the catalog page.
    Page,
}

/// Which server a scenario calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// errmap's layers and auth, plaintext.
    Errmap,
    /// A bare tonic server with the same services.
    Bare,
    /// errmap's layers and auth, over TLS.
    ErrmapTls,
    /// errmap's server (the `Errmap` one), over gRPC-Web on HTTP/1.1.
    ErrmapWeb,
    /// errmap's server (the `Errmap` one), over HTTP/1.1: the JSON lookup
    /// API and the pages.
    ErrmapHttp,
    /// errmap's layers and auth, with metrics (`ServerConfig::metrics`).
    ErrmapMetrics,
    /// errmap's layers and auth with gRPC-Web turned off
    /// (`ServerConfig::grpc_web = false`): the gRPC path without the
    /// gRPC-Web and CORS layers.
    ErrmapGrpcOnly,
    /// errmap's server (the `Errmap` one, its channels), called through
    /// the client retry layer (`errmap_client::RetryLayer`).
    ErrmapRetry,
    /// errmap's server (the `Errmap` one), over the Connect protocol on
    /// h2c, in JSON.
    ErrmapConnectJson,
    /// The same, in proto.
    ErrmapConnectProto,
    /// errmap's layers and auth with Connect turned off
    /// (`ServerConfig::connect = false`).
    ErrmapNoConnect,
    /// errmap's layers and auth, exporting every call's span over OTLP
    /// (`errmap_server::otlp`).
    ErrmapOtlp,
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    kind: Kind,
    target: Target,
}

const SCENARIOS: [Scenario; 16] = [
    Scenario {
        name: "errmap/noop",
        kind: Kind::Noop,
        target: Target::Errmap,
    },
    Scenario {
        name: "errmap/hit",
        kind: Kind::Hit,
        target: Target::Errmap,
    },
    // Right after `errmap/hit`, on the same channels: the pair differs
    // only by the client layer.
    Scenario {
        name: "errmap-retry/hit",
        kind: Kind::Hit,
        target: Target::ErrmapRetry,
    },
    Scenario {
        name: "errmap/miss",
        kind: Kind::Miss,
        target: Target::Errmap,
    },
    Scenario {
        name: "bare/noop",
        kind: Kind::Noop,
        target: Target::Bare,
    },
    Scenario {
        name: "bare/hit",
        kind: Kind::Hit,
        target: Target::Bare,
    },
    Scenario {
        name: "errmap-tls/hit",
        kind: Kind::Hit,
        target: Target::ErrmapTls,
    },
    Scenario {
        name: "errmap-web/hit",
        kind: Kind::Hit,
        target: Target::ErrmapWeb,
    },
    Scenario {
        name: "grpc-only/hit",
        kind: Kind::Hit,
        target: Target::ErrmapGrpcOnly,
    },
    Scenario {
        name: "errmap-metrics/hit",
        kind: Kind::Hit,
        target: Target::ErrmapMetrics,
    },
    Scenario {
        name: "errmap-http/hit",
        kind: Kind::Hit,
        target: Target::ErrmapHttp,
    },
    Scenario {
        name: "errmap-http/page",
        kind: Kind::Page,
        target: Target::ErrmapHttp,
    },
    Scenario {
        name: "errmap-connect-json/hit",
        kind: Kind::Hit,
        target: Target::ErrmapConnectJson,
    },
    Scenario {
        name: "errmap-connect-proto/hit",
        kind: Kind::Hit,
        target: Target::ErrmapConnectProto,
    },
    Scenario {
        name: "no-connect/hit",
        kind: Kind::Hit,
        target: Target::ErrmapNoConnect,
    },
    Scenario {
        name: "otlp/hit",
        kind: Kind::Hit,
        target: Target::ErrmapOtlp,
    },
];

/// A Connect client: hyper's pooled client on h2c, with a body.
type ConnectClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

/// A plain HTTP/1.1 client (hyper's pooled one), for the JSON API and the
/// pages.
type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

/// A gRPC-Web client: tonic-web's layer over hyper's pooled HTTP/1.1
/// client, as a browser's plaintext gRPC-Web goes.
type WebService = tonic_web::GrpcWebClientService<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        tonic_web::GrpcWebCall<tonic::body::Body>,
    >,
>;

/// An HTTP answer to a lookup, read to its end: a 200 is a hit, anything
/// else a miss.
async fn answered<E: std::fmt::Display>(
    response: Result<http::Response<hyper::body::Incoming>, E>,
) -> Result<(), tonic::Status> {
    let response = response.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let ok = response.status() == http::StatusCode::OK;
    let _ = http_body_util::BodyExt::collect(response.into_body()).await;
    if ok {
        Ok(())
    } else {
        Err(tonic::Status::not_found("miss"))
    }
}

/// What a scenario's tasks call through.
#[derive(Clone)]
enum Clients<'a> {
    Grpc(&'a [Channel]),
    Web(&'a WebService, &'a http::Uri),
    Http(&'a HttpClient, &'a str),
    /// A Connect client, the server's base URL, and whether it sends JSON.
    Connect(&'a ConnectClient, &'a str, bool),
    /// Channels, each wrapped by one shared retry layer (one throttle).
    Retry(&'a [Channel], &'a RetryLayer),
}

/// One task's catalog client, over gRPC or gRPC-Web.
enum CatalogClient {
    Grpc(ErrorCatalogClient<Channel>, HealthClient<Channel>),
    Web(ErrorCatalogClient<WebService>),
    Http(HttpClient, String),
    Connect(ConnectClient, String, bool),
    Retry(ErrorCatalogClient<Retry<Channel>>),
}

impl CatalogClient {
    async fn get_error(&mut self, request: Request<GetErrorRequest>) -> Result<(), tonic::Status> {
        match self {
            CatalogClient::Grpc(client, _) => client.get_error(request).await.map(drop),
            CatalogClient::Web(client) => client.get_error(request).await.map(drop),
            CatalogClient::Retry(client) => client.get_error(request).await.map(drop),
            CatalogClient::Connect(client, base, json) => {
                let code = match request.get_ref().key {
                    Some(Key::Code(code)) => code,
                    _ => 0,
                };
                let (content_type, body) = if *json {
                    (
                        "application/json",
                        format!("{{\"code\":{code}}}").into_bytes(),
                    )
                } else {
                    (
                        "application/proto",
                        prost::Message::encode_to_vec(request.get_ref()),
                    )
                };
                let mut post =
                    http::Request::post(format!("{base}/errmap.v1.ErrorCatalog/GetError"))
                        .header("content-type", content_type)
                        .header("connect-protocol-version", "1");
                if let Some(token) = request.metadata().get("authorization") {
                    post = post.header("authorization", token.as_bytes());
                }
                let post = post
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .map_err(|e| tonic::Status::internal(e.to_string()))?;
                answered(client.request(post).await).await
            }
            CatalogClient::Http(client, base) => {
                let code = match request.get_ref().key {
                    Some(Key::Code(code)) => code,
                    _ => 0,
                };
                let mut get = http::Request::get(format!("{base}/v1/errors/{code}"));
                if let Some(token) = request.metadata().get("authorization") {
                    get = get.header("authorization", token.as_bytes());
                }
                let get = get
                    .body(http_body_util::Empty::new())
                    .map_err(|e| tonic::Status::internal(e.to_string()))?;
                answered(client.request(get).await).await
            }
        }
    }

    /// `Health/Check`, with the same `authorization` as the hits send (a
    /// client sends its token on every call; HPACK never indexes it, so
    /// the server decodes it on every call, which is no part of the RPC).
    async fn noop(&mut self, bearer: &MetadataValue<tonic::metadata::Ascii>) -> bool {
        match self {
            CatalogClient::Grpc(_, health) => {
                let mut request = Request::new(HealthCheckRequest::default());
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
                health.check(request).await.is_ok()
            }
            CatalogClient::Web(_)
            | CatalogClient::Http(..)
            | CatalogClient::Connect(..)
            | CatalogClient::Retry(_) => false,
        }
    }

    /// `GET /`, over HTTP.
    async fn page(&mut self) -> bool {
        let CatalogClient::Http(client, base) = self else {
            return false;
        };
        let Ok(get) = http::Request::get(format!("{base}/")).body(http_body_util::Empty::new())
        else {
            return false;
        };
        match client.request(get).await {
            Ok(response) => {
                let ok = response.status() == http::StatusCode::OK;
                let body = http_body_util::BodyExt::collect(response.into_body()).await;
                ok && body.is_ok_and(|b| b.to_bytes().len() > 1000)
            }
            Err(_) => false,
        }
    }
}

fn web_client(addr: SocketAddr) -> (WebService, http::Uri) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let uri = format!("http://{addr}").parse().expect("uri");
    (tonic_web::GrpcWebClientService::new(client), uri)
}

struct Totals {
    histogram: Histogram<u64>,
    calls: u64,
    unexpected: u64,
    elapsed: Duration,
}

impl Totals {
    fn new() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            calls: 0,
            unexpected: 0,
            elapsed: Duration::ZERO,
        }
    }

    fn throughput(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The environment variable that makes this program one of the servers
/// under load, named by its value (see [`Role`]).
const ROLE_VAR: &str = "ERRMAP_LOADGEN_SERVER";
/// The directory holding `cert.pem` and `key.pem` for the TLS server.
const TLS_DIR_VAR: &str = "ERRMAP_LOADGEN_TLS_DIR";
/// The OTLP receiver's address, for the `otlp` server.
const OTLP_VAR: &str = "ERRMAP_LOADGEN_OTLP";
/// The `otlp` server's sample ratio (default 1: every call), passed on from
/// the load tool's own environment.
const OTLP_RATIO_VAR: &str = "ERRMAP_LOADGEN_OTLP_SAMPLE_RATIO";

/// One server process under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// errmap's layers, admission and auth on the lookup service.
    Errmap,
    /// A bare tonic server with the same services.
    Bare,
    /// `Errmap` over TLS.
    Tls,
    /// `Errmap` with gRPC-Web turned off.
    GrpcOnly,
    /// `Errmap` with metrics.
    Metrics,
    /// `Errmap` with Connect turned off.
    NoConnect,
    /// An OTLP/gRPC receiver that counts the spans it gets.
    OtlpSink,
    /// `Errmap` exporting its spans over OTLP to `OtlpSink`.
    Otlp,
}

impl Role {
    /// In the order they start: `Otlp` needs `OtlpSink`'s address.
    const ALL: [Role; 8] = [
        Role::Errmap,
        Role::Bare,
        Role::Tls,
        Role::GrpcOnly,
        Role::Metrics,
        Role::NoConnect,
        Role::OtlpSink,
        Role::Otlp,
    ];

    fn name(self) -> &'static str {
        match self {
            Role::Errmap => "errmap",
            Role::Bare => "bare",
            Role::Tls => "tls",
            Role::GrpcOnly => "grpc-only",
            Role::Metrics => "metrics",
            Role::NoConnect => "no-connect",
            Role::OtlpSink => "otlp-sink",
            Role::Otlp => "otlp",
        }
    }

    fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl Target {
    /// The server process a scenario's calls reach.
    fn role(self) -> Role {
        match self {
            Target::Errmap
            | Target::ErrmapWeb
            | Target::ErrmapHttp
            | Target::ErrmapRetry
            | Target::ErrmapConnectJson
            | Target::ErrmapConnectProto => Role::Errmap,
            Target::ErrmapNoConnect => Role::NoConnect,
            Target::Bare => Role::Bare,
            Target::ErrmapTls => Role::Tls,
            Target::ErrmapGrpcOnly => Role::GrpcOnly,
            Target::ErrmapMetrics => Role::Metrics,
            Target::ErrmapOtlp => Role::Otlp,
        }
    }
}

/// The life of a server process: starts the server `role` names on a free
/// port of 127.0.0.1, prints `listening ADDR`, serves until its standard
/// input closes (the load tool is done, or gone), then prints what it has
/// to report (`scrape_bytes N` for the metrics server) and exits.
fn serve_role(role: Role) -> Result<(), String> {
    use std::io::{Read as _, Write as _};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let metrics = (role == Role::Metrics).then(errmap_server::metrics::Metrics::new);
    // The `otlp` server exports every call's span, as `errmap serve
    // --otlp-endpoint` does.
    let mut export = None;
    let mut exported = None;
    if role == Role::Otlp {
        let sink = std::env::var(OTLP_VAR).map_err(|_| format!("{OTLP_VAR} is not set"))?;
        let counters = errmap_server::otlp::TraceExportCounters::default();
        let mut otlp = errmap_server::otlp::TraceExportConfig::new(format!("http://{sink}"));
        if let Ok(ratio) = std::env::var(OTLP_RATIO_VAR) {
            otlp.sample_ratio = ratio
                .parse()
                .map_err(|_| format!("{OTLP_RATIO_VAR}: {ratio}"))?;
        }
        export = Some(
            errmap_server::otlp::TraceExport::new(otlp, counters.clone())
                .map_err(|e| e.to_string())?,
        );
        exported = Some(counters);
    }
    let sink_count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    runtime.block_on(async {
        if let Some(e) = export.as_mut() {
            e.start().map_err(|e| e.to_string())?;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async {
            let _ = rx.await;
        };
        let server = if role == Role::OtlpSink {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let sink = OtlpSink(sink_count.clone());
            tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(
                        opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(sink)
                            .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
                    )
                    .serve_with_incoming_shutdown(incoming, stop)
                    .await
                    .map_err(|e| e.to_string())
            })
        } else if role == Role::Bare {
            let (_, health) = tonic_health::server::health_reporter();
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(health)
                    .add_service(CatalogService::new().into_server())
                    .serve_with_incoming_shutdown(incoming, stop)
                    .await
                    .map_err(|e| e.to_string())
            })
        } else {
            let mut config = ServerConfig::default();
            config.auth = Some(AuthInterceptor::new(JwtVerifier::hs256(SECRET)));
            config.concurrency_limit = 4096;
            config.grpc_web = role != Role::GrpcOnly;
            config.connect = role != Role::NoConnect;
            config.metrics = metrics.clone();
            config.span_export = export.as_ref().map(errmap_server::otlp::TraceExport::recorder);
            if role == Role::Tls {
                let dir = PathBuf::from(
                    std::env::var_os(TLS_DIR_VAR).ok_or(format!("{TLS_DIR_VAR} is not set"))?,
                );
                config.tls = Some(
                    errmap_server::tls::TlsConfig::from_files(
                        dir.join("cert.pem"),
                        dir.join("key.pem"),
                        None::<PathBuf>,
                    )
                    .map_err(|e| format!("TLS config: {e}"))?,
                );
            }
            tokio::spawn(async move {
                ErrmapServer::new(config)
                    .serve(listener, stop)
                    .await
                    .map_err(|e| e.to_string())
            })
        };
        println!("listening {addr}");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        // Served until the load tool closes our standard input.
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await
        .map_err(|e| e.to_string())?;
        let _ = tx.send(());
        match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(Ok(Ok(()))) | Err(_) => {}
            Ok(Ok(Err(e))) => return Err(format!("the {} server failed: {e}", role.name())),
            Ok(Err(e)) => return Err(e.to_string()),
        }
        if let Some(e) = export.take() {
            e.shutdown(Duration::from_secs(2)).await;
        }
        Ok::<(), String>(())
    })?;
    if let Some(metrics) = metrics {
        println!("scrape_bytes {}", metrics.encode(false).len());
    }
    if let Some(counters) = exported {
        println!("spans_exported {}", counters.exported.get());
        for reason in ["queue_full", "export_failed"] {
            let n = counters
                .dropped
                .get_or_create(&errmap_server::otlp::DropLabels { reason })
                .get();
            println!("spans_dropped_{reason} {n}");
        }
    }
    if role == Role::OtlpSink {
        println!(
            "spans_received {}",
            sink_count.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    Ok(())
}

/// The `otlp-sink` server: an OTLP/gRPC trace receiver that counts spans.
struct OtlpSink(std::sync::Arc<std::sync::atomic::AtomicU64>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for OtlpSink
{
    async fn export(
        &self,
        request: Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0
            .fetch_add(spans as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(tonic::Response::new(Default::default()))
    }
}

/// A server process under load, started by [`ServerProcess::start`].
struct ServerProcess {
    role: Role,
    child: std::process::Child,
    addr: SocketAddr,
    stdout: BufReader<std::process::ChildStdout>,
}

impl ServerProcess {
    /// Starts this program again as the server `role` names, and waits
    /// for its address.
    fn start(
        role: Role,
        tls_dir: Option<&std::path::Path>,
        otlp: Option<SocketAddr>,
    ) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
        let mut command = Command::new(exe);
        if cfg!(test) {
            // Under the test harness the server is a test of its own.
            command.args([
                "tests::server_process",
                "--exact",
                "--ignored",
                "--nocapture",
            ]);
        }
        command
            .env(ROLE_VAR, role.name())
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(dir) = tls_dir {
            command.env(TLS_DIR_VAR, dir);
        }
        if let Some(addr) = otlp {
            command.env(OTLP_VAR, addr.to_string());
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start the {} server: {e}", role.name()))?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the {} server exited before listening",
                    role.name()
                ));
            }
            if let Some(addr) = line.trim().strip_prefix("listening ") {
                let addr = addr
                    .parse()
                    .map_err(|e| format!("the {} server's address {addr:?}: {e}", role.name()))?;
                return Ok(Self {
                    role,
                    child,
                    addr,
                    stdout,
                });
            }
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Stops the server (closes its standard input) and gives the lines it
    /// printed last.
    fn stop(mut self) -> Result<Vec<String>, String> {
        drop(self.child.stdin.take());
        let mut lines = Vec::new();
        for line in (&mut self.stdout).lines() {
            let line = line.map_err(|e| e.to_string())?;
            if !line.trim().is_empty() {
                lines.push(line);
            }
        }
        let status = self.child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!(
                "the {} server exited with {status}",
                self.role.name()
            ));
        }
        Ok(lines)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Stopped already, or never to be: a server never outlives the tool.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token() -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "loadgen", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("sign the token")
}

/// Runs one scenario for `slice` with `concurrency` tasks over `clients`.
async fn run_slice(
    scenario: Scenario,
    clients: Clients<'_>,
    concurrency: usize,
    slice: Duration,
    bearer: &MetadataValue<tonic::metadata::Ascii>,
) -> Totals {
    let started = Instant::now();
    let end = started + slice;
    let mut tasks = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let mut client = match &clients {
            Clients::Grpc(channels) => {
                let channel = channels[i % channels.len()].clone();
                CatalogClient::Grpc(
                    ErrorCatalogClient::new(channel.clone()),
                    HealthClient::new(channel),
                )
            }
            Clients::Web(service, uri) => CatalogClient::Web(ErrorCatalogClient::with_origin(
                (*service).clone(),
                (*uri).clone(),
            )),
            Clients::Http(client, base) => CatalogClient::Http((*client).clone(), base.to_string()),
            Clients::Connect(client, base, json) => {
                CatalogClient::Connect((*client).clone(), base.to_string(), *json)
            }
            Clients::Retry(channels, layer) => CatalogClient::Retry(ErrorCatalogClient::new(
                layer.layer(channels[i % channels.len()].clone()),
            )),
        };
        let bearer = bearer.clone();
        tasks.push(tokio::spawn(async move {
            let mut totals = Totals::new();
            while Instant::now() < end {
                let t = Instant::now();
                let ok = match scenario.kind {
                    Kind::Noop => client.noop(&bearer).await,
                    Kind::Page => client.page().await,
                    Kind::Hit | Kind::Miss => {
                        let code = if scenario.kind == Kind::Hit { 11 } else { 48 };
                        let mut request = Request::new(GetErrorRequest {
                            key: Some(Key::Code(code)),
                            domain: None,
                        });
                        request
                            .metadata_mut()
                            .insert("authorization", bearer.clone());
                        match client.get_error(request).await {
                            Ok(()) => scenario.kind == Kind::Hit,
                            Err(status) => {
                                scenario.kind == Kind::Miss
                                    && status.error_code() == Some(ErrorCode::ApiItemNotFound)
                            }
                        }
                    }
                };
                let micros = t.elapsed().as_micros().max(1) as u64;
                let _ = totals.histogram.record(micros.min(60_000_000));
                totals.calls += 1;
                totals.unexpected += u64::from(!ok);
            }
            totals
        }));
    }
    let mut sum = Totals::new();
    for task in tasks {
        if let Ok(t) = task.await {
            let _ = sum.histogram.add(&t.histogram);
            sum.calls += t.calls;
            sum.unexpected += t.unexpected;
        }
    }
    sum.elapsed = started.elapsed();
    sum
}

async fn connect(addr: SocketAddr, n: usize) -> Vec<Channel> {
    connect_with(addr, n, None).await
}

/// `n` channels to `addr`, over TLS with the CA `tls_ca` (PEM) if given.
async fn connect_with(addr: SocketAddr, n: usize, tls_ca: Option<&str>) -> Vec<Channel> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        channels.push(open_channel(addr, tls_ca).await);
    }
    channels
}

async fn open_channel(addr: SocketAddr, tls_ca: Option<&str>) -> Channel {
    match tls_ca {
        None => Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect"),
        Some(ca) => Channel::from_shared(format!("https://{addr}"))
            .expect("uri")
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                    .domain_name("localhost"),
            )
            .expect("tls config")
            .connect()
            .await
            .expect("connect over TLS"),
    }
}

/// A CA and a server certificate for localhost, made now, written to a
/// temporary directory as `cert.pem` and `key.pem`; gives the directory
/// and the CA's PEM.
fn test_tls() -> (PathBuf, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("server params")
        .signed_by(&key, &ca, &ca_key)
        .expect("server certificate");
    let dir = std::env::temp_dir().join(format!("errmap-loadgen-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key");
    (dir, ca.pem())
}

/// The median time to open a new connection and make one `GetError`
/// call on it, over `n` connections, with TLS (CA `tls_ca`) or without.
async fn new_connection_cost(
    addr: SocketAddr,
    n: usize,
    tls_ca: Option<&str>,
    bearer: &MetadataValue<tonic::metadata::Ascii>,
) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let channel = open_channel(addr, tls_ca).await;
        let mut request = Request::new(GetErrorRequest {
            key: Some(Key::Code(11)),
            domain: None,
        });
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
        let _ = ErrorCatalogClient::new(channel).get_error(request).await;
        times.push(started.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

struct ServeFigures {
    startup: Duration,
    rss_idle_kib: u64,
    rss_in_flight_kib: u64,
    in_flight: usize,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// User and system CPU time of a process so far, in seconds, from
/// `/proc/<pid>/stat` (in clock ticks: 10 ms apiece on most machines).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// CPU time of a process so far, in seconds, to the nanosecond: the sum
/// over its live threads of the time on a CPU that
/// `/proc/<pid>/task/<tid>/schedstat` gives. `None` where the kernel keeps
/// no schedstat.
fn cpu_seconds_precise(pid: &str) -> Option<f64> {
    let mut nanos = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        // A thread that ends between the listing and the read counts for
        // nothing, as it would in the next reading.
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        nanos += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(nanos as f64 / 1e9)
}

/// A process's CPU time so far, both ways (see [`cpu_seconds`] and
/// [`cpu_seconds_precise`]).
#[derive(Debug, Clone, Copy)]
struct Cpu {
    precise: Option<f64>,
    ticks: f64,
}

impl Cpu {
    fn now(pid: &str) -> Self {
        Self {
            precise: cpu_seconds_precise(pid),
            ticks: cpu_seconds(pid),
        }
    }

    /// The CPU time from `earlier` to this reading, in seconds: schedstat's
    /// where there is one, else the ticks.
    fn since(&self, earlier: &Cpu) -> CpuSpent {
        CpuSpent {
            precise: match (self.precise, earlier.precise) {
                (Some(a), Some(b)) => (a - b).max(0.0),
                _ => (self.ticks - earlier.ticks).max(0.0),
            },
            ticks: (self.ticks - earlier.ticks).max(0.0),
        }
    }
}

/// CPU seconds spent over a window (see [`Cpu::since`]).
#[derive(Debug, Clone, Copy, Default)]
struct CpuSpent {
    precise: f64,
    ticks: f64,
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `errmap serve` from `path` on a free port: the child and its address.
fn spawn_serve(
    path: &PathBuf,
    extra: &[&str],
) -> Result<(std::process::Child, SocketAddr), String> {
    let mut child = Command::new(path)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--concurrency-limit",
            "4096",
        ])
        .args(extra)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let addr = line
        .trim()
        .parse()
        .map_err(|e| format!("address {line:?}: {e}"))?;
    Ok((child, addr))
}

/// Two `errmap serve` binaries under the same load, alternated round by
/// round (the order swapped every round): for the health check (`noop`)
/// and a hit, each binary's throughput and its server's CPU time per call
/// (from `/proc/<pid>/stat` over the slice), and this client's CPU per call.
async fn compare_binaries(
    options: &Options,
    before: &PathBuf,
    after: &PathBuf,
) -> Result<serde_json::Value, String> {
    let (mut child_a, addr_a) = spawn_serve(before, &[])?;
    let (mut child_b, addr_b) = spawn_serve(after, &[])?;
    let channels_a = connect(addr_a, options.channels).await;
    let channels_b = connect(addr_b, options.channels).await;
    let servers = [
        ("before", child_a.id().to_string(), channels_a),
        ("after", child_b.id().to_string(), channels_b),
    ];
    let kinds = [
        Scenario {
            name: "noop",
            kind: Kind::Noop,
            target: Target::Errmap,
        },
        Scenario {
            name: "hit",
            kind: Kind::Hit,
            target: Target::Errmap,
        },
    ];
    let slice = options.duration / (options.rounds * 4).max(1);
    let bearer: MetadataValue<tonic::metadata::Ascii> = "Bearer none".parse().unwrap();
    // rows[kind][server] = per-round (throughput, server µs/call, client µs/call)
    let mut rows = vec![vec![Vec::new(), Vec::new()]; kinds.len()];
    for round in 0..options.rounds {
        for (k, scenario) in kinds.iter().enumerate() {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for s in order {
                let (_, pid, channels) = &servers[s];
                let (server_before, client_before) = (Cpu::now(pid), Cpu::now("self"));
                let totals = run_slice(
                    *scenario,
                    Clients::Grpc(channels),
                    options.concurrency,
                    slice,
                    &bearer,
                )
                .await;
                let calls = totals.calls.max(1) as f64;
                let server = Cpu::now(pid).since(&server_before).precise / calls * 1e6;
                let client = Cpu::now("self").since(&client_before).precise / calls * 1e6;
                rows[k][s].push((calls / totals.elapsed.as_secs_f64(), server, client));
            }
        }
    }
    let _ = child_a.kill();
    let _ = child_b.kill();
    let _ = child_a.wait();
    let _ = child_b.wait();
    let mut report = serde_json::Map::new();
    for (k, scenario) in kinds.iter().enumerate() {
        let pick =
            |s: usize, f: fn(&(f64, f64, f64)) -> f64| median(rows[k][s].iter().map(f).collect());
        let ratios: Vec<f64> = rows[k][0]
            .iter()
            .zip(&rows[k][1])
            .map(|(a, b)| b.0 / a.0)
            .collect();
        report.insert(
            scenario.name.to_owned(),
            json!({
                "before": {
                    "throughput": pick(0, |r| r.0),
                    "server_us_per_call": pick(0, |r| r.1),
                    "client_us_per_call": pick(0, |r| r.2),
                },
                "after": {
                    "throughput": pick(1, |r| r.0),
                    "server_us_per_call": pick(1, |r| r.1),
                    "client_us_per_call": pick(1, |r| r.2),
                },
                "throughput_after_vs_before_median_ratio": median(ratios),
            }),
        );
    }
    report.insert(
        "options".to_owned(),
        json!({
            "duration_s": options.duration.as_secs_f64(),
            "rounds": options.rounds,
            "concurrency": options.concurrency,
            "channels": options.channels,
            "before": before.display().to_string(),
            "after": after.display().to_string(),
        }),
    );
    Ok(serde_json::Value::Object(report))
}

/// Start-up time and RSS of the real `errmap serve` process.
async fn measure_binary(path: &PathBuf, in_flight: usize) -> Result<ServeFigures, String> {
    let started = Instant::now();
    let (mut child, addr) = spawn_serve(path, &["--grace-period", "2s"])?;
    tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let startup = started.elapsed();

    let channels = connect(addr, in_flight.div_ceil(200)).await;
    let _ = HealthClient::new(channels[0].clone())
        .check(HealthCheckRequest::default())
        .await;
    let rss_idle_kib = rss_kib(child.id());

    // Calls whose request is held back: accepted and in flight (waiting for
    // their request, so holding no concurrency place) until released.
    let (release, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut calls = Vec::with_capacity(in_flight);
    for i in 0..in_flight {
        let mut grpc = tonic::client::Grpc::new(channels[i % channels.len()].clone());
        let mut gate = release.subscribe();
        calls.push(tokio::spawn(async move {
            grpc.ready().await.map_err(|e| e.to_string())?;
            // The request message is sent only once the gate opens.
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tokio::spawn(async move {
                let _ = gate.recv().await;
                let _ = tx
                    .send(GetErrorRequest {
                        key: Some(Key::Code(11)),
                        domain: None,
                    })
                    .await;
            });
            let held = tokio_stream::wrappers::ReceiverStream::new(rx);
            grpc.client_streaming::<_, GetErrorRequest, errmap::pb::GetErrorResponse, _>(
                Request::new(held),
                http::uri::PathAndQuery::from_static("/errmap.v1.ErrorCatalog/GetError"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map(|_| ())
            .map_err(|s| s.to_string())
        }));
    }
    tokio::time::sleep(Duration::from_millis(750)).await;
    let rss_in_flight_kib = rss_kib(child.id());
    let _ = release.send(());
    let mut done = 0;
    for call in calls {
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .unwrap_or(Ok(Err(String::new())))
        {
            done += 1;
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    if done != in_flight {
        return Err(format!("only {done} of {in_flight} held calls finished"));
    }
    Ok(ServeFigures {
        startup,
        rss_idle_kib,
        rss_in_flight_kib,
        in_flight,
    })
}

/// The memory `n` distinct label sets take in a metrics registry: RSS
/// before and after recording one call for each (KiB).
fn label_sets_memory(n: usize) -> (usize, u64) {
    let metrics = errmap_server::metrics::Metrics::new();
    let methods: Vec<&'static str> = (0..n)
        .map(|i| &*Box::leak(format!("/bench.v1.Service/Method{i}").into_boxed_str()))
        .collect();
    let before = rss_kib(std::process::id());
    for method in &methods {
        metrics.record_labels(
            method,
            tonic::Code::NotFound,
            "auth.errmap.dev",
            "API_ITEM_NOT_FOUND",
            0.001,
        );
    }
    let after = rss_kib(std::process::id());
    (n, after.saturating_sub(before))
}

fn largest_bare_status() -> (ErrorCode, usize) {
    ErrorCode::all()
        .map(|code| {
            let mut headers = http::HeaderMap::new();
            let _ = code.to_status().add_header(&mut headers);
            let size = headers
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len())
                .sum();
            (code, size)
        })
        .max_by_key(|(_, size)| *size)
        .unwrap_or((ErrorCode::ApiInternalServerError, 0))
}

/// One scenario's figures over every round.
struct Measured {
    totals: Totals,
    /// Per round: the server's and this client's CPU seconds.
    server_cpu: Vec<CpuSpent>,
    client_cpu: Vec<f64>,
    calls: Vec<u64>,
}

impl Measured {
    fn new() -> Self {
        Self {
            totals: Totals::new(),
            server_cpu: Vec::new(),
            client_cpu: Vec::new(),
            calls: Vec::new(),
        }
    }

    /// The median over the rounds of the server's CPU µs per call.
    fn server_us(&self) -> f64 {
        median(
            self.server_cpu
                .iter()
                .zip(&self.calls)
                .map(|(cpu, calls)| cpu.precise / (*calls).max(1) as f64 * 1e6)
                .collect(),
        )
    }

    /// The server's CPU µs per call over all the rounds, from
    /// `/proc/<pid>/stat`'s clock ticks.
    fn server_us_from_ticks(&self) -> f64 {
        let ticks: f64 = self.server_cpu.iter().map(|c| c.ticks).sum();
        ticks / self.calls.iter().sum::<u64>().max(1) as f64 * 1e6
    }

    /// The median over the rounds of this client's CPU µs per call.
    fn client_us(&self) -> f64 {
        median(
            self.client_cpu
                .iter()
                .zip(&self.calls)
                .map(|(cpu, calls)| cpu / (*calls).max(1) as f64 * 1e6)
                .collect(),
        )
    }
}

async fn run(options: Options) -> Result<serde_json::Value, String> {
    let (tls_dir, tls_ca) = test_tls();
    let mut servers = Vec::with_capacity(Role::ALL.len());
    for role in Role::ALL {
        let sink = servers
            .iter()
            .find(|s: &&ServerProcess| s.role == Role::OtlpSink)
            .map(|s| s.addr);
        servers.push(ServerProcess::start(role, Some(&tls_dir), sink)?);
    }
    let server = |role: Role| &servers[Role::ALL.iter().position(|r| *r == role).unwrap_or(0)];
    let errmap_addr = server(Role::Errmap).addr;
    let tls_addr = server(Role::Tls).addr;
    let errmap_channels = connect(errmap_addr, options.channels).await;
    let bare_channels = connect(server(Role::Bare).addr, options.channels).await;
    let tls_channels = connect_with(tls_addr, options.channels, Some(&tls_ca)).await;
    let metrics_channels = connect(server(Role::Metrics).addr, options.channels).await;
    let grpc_only_channels = connect(server(Role::GrpcOnly).addr, options.channels).await;
    let (web, web_uri) = web_client(errmap_addr);
    let http_client: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let http_base = format!("http://{errmap_addr}");
    // TCP_NODELAY, as tonic's channels set it: without it the small h2
    // frames of a call wait on delayed ACKs (40 ms).
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let connect_client: ConnectClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build(connector);
    let no_connect_channels = connect(server(Role::NoConnect).addr, options.channels).await;
    let otlp_channels = connect(server(Role::Otlp).addr, options.channels).await;
    let retry_layer = RetryLayer::new(RetryPolicy::default());
    let clients = |target: Target| match target {
        Target::Errmap => Clients::Grpc(&errmap_channels),
        Target::Bare => Clients::Grpc(&bare_channels),
        Target::ErrmapTls => Clients::Grpc(&tls_channels),
        Target::ErrmapWeb => Clients::Web(&web, &web_uri),
        Target::ErrmapGrpcOnly => Clients::Grpc(&grpc_only_channels),
        Target::ErrmapMetrics => Clients::Grpc(&metrics_channels),
        Target::ErrmapHttp => Clients::Http(&http_client, &http_base),
        Target::ErrmapRetry => Clients::Retry(&errmap_channels, &retry_layer),
        Target::ErrmapConnectJson => Clients::Connect(&connect_client, &http_base, true),
        Target::ErrmapConnectProto => Clients::Connect(&connect_client, &http_base, false),
        Target::ErrmapNoConnect => Clients::Grpc(&no_connect_channels),
        Target::ErrmapOtlp => Clients::Grpc(&otlp_channels),
    };
    let bearer: MetadataValue<_> = format!("Bearer {}", token()).parse().map_err(|_| "token")?;

    let scenarios = &options.scenarios;
    let slice = options.duration / (options.rounds * scenarios.len() as u32);
    // Warm-up, not recorded.
    for &s in scenarios {
        run_slice(
            s,
            clients(s.target),
            options.concurrency,
            slice.min(Duration::from_millis(200)),
            &bearer,
        )
        .await;
    }
    let warm = (slice / 10).min(Duration::from_millis(100));
    let mut measured: Vec<Measured> = scenarios.iter().map(|_| Measured::new()).collect();
    // Throughput of each scenario in each round, for per-round ratios.
    let mut per_round: Vec<Vec<f64>> = Vec::new();
    for round in 0..options.rounds {
        let mut this_round = Vec::with_capacity(scenarios.len());
        for (i, s) in scenarios.iter().enumerate() {
            // Unmeasured: a server that sat idle through the slices before
            // starts its slice warm, so that a scenario's place in the
            // round (after its own server's scenario, or after another's)
            // moves its figures less.
            run_slice(*s, clients(s.target), options.concurrency, warm, &bearer).await;
            let pid = server(s.target.role()).pid();
            let (server_before, client_before) = (Cpu::now(&pid), Cpu::now("self"));
            let t = run_slice(*s, clients(s.target), options.concurrency, slice, &bearer).await;
            let (server_after, client_after) = (Cpu::now(&pid), Cpu::now("self"));
            this_round.push(t.throughput());
            let m = &mut measured[i];
            m.server_cpu.push(server_after.since(&server_before));
            m.client_cpu
                .push(client_after.since(&client_before).precise);
            m.calls.push(t.calls);
            let total = &mut m.totals;
            let _ = total.histogram.add(&t.histogram);
            total.calls += t.calls;
            total.unexpected += t.unexpected;
            total.elapsed += t.elapsed;
        }
        per_round.push(this_round);
        if !options.json {
            eprintln!("round {}/{} done", round + 1, options.rounds);
        }
    }
    // The cost of a new connection: TCP (and TLS) handshake, HTTP/2
    // handshake and one call.
    let handshakes = if options.duration >= Duration::from_secs(5) {
        50
    } else {
        5
    };
    let plain_connection = new_connection_cost(errmap_addr, handshakes, None, &bearer).await;
    let tls_connection = new_connection_cost(tls_addr, handshakes, Some(&tls_ca), &bearer).await;
    drop((
        errmap_channels,
        bare_channels,
        tls_channels,
        metrics_channels,
        grpc_only_channels,
    ));
    let mut scrape_bytes = None;
    let mut spans = serde_json::Map::new();
    // In the reverse order of their start: the `otlp` server sends its last
    // spans before its receiver stops.
    for process in servers.into_iter().rev() {
        for line in process.stop()? {
            if let Some(n) = line.strip_prefix("scrape_bytes ") {
                scrape_bytes = n.trim().parse::<usize>().ok();
            }
            for key in [
                "spans_exported",
                "spans_dropped_queue_full",
                "spans_dropped_export_failed",
                "spans_received",
            ] {
                if let Some(n) = line
                    .strip_prefix(key)
                    .and_then(|n| n.trim().parse::<u64>().ok())
                {
                    spans.insert(key.to_owned(), json!(n));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tls_dir);
    let scrape_bytes = scrape_bytes.ok_or("the metrics server did not report its scrape")?;
    let label_sets = label_sets_memory(10_000);

    let index = |name: &str| scenarios.iter().position(|s| s.name == name);
    // The median over the rounds of the per-round ratio a/b; not a number
    // where a scenario was not run.
    let ratio = |a: &str, b: &str| {
        let (Some(a), Some(b)) = (index(a), index(b)) else {
            return f64::NAN;
        };
        let mut ratios: Vec<f64> = per_round
            .iter()
            .map(|round| round[a] / round[b].max(1e-9))
            .collect();
        ratios.sort_by(f64::total_cmp);
        let mid = ratios.len() / 2;
        if ratios.len() % 2 == 1 {
            ratios[mid]
        } else {
            (ratios[mid - 1] + ratios[mid]) / 2.0
        }
    };
    let hit_vs_noop = ratio("errmap/hit", "errmap/noop");
    let miss_vs_noop = ratio("errmap/miss", "errmap/noop");
    let layers_hit = ratio("errmap/hit", "bare/hit");
    let layers_noop = ratio("errmap/noop", "bare/noop");
    let bare_hit_vs_noop = ratio("bare/hit", "bare/noop");
    let tls_hit_vs_plain = ratio("errmap-tls/hit", "errmap/hit");
    let web_hit_vs_grpc = ratio("errmap-web/hit", "errmap/hit");
    let web_support_cost = ratio("errmap/hit", "grpc-only/hit");
    let http_hit_vs_grpc = ratio("errmap-http/hit", "errmap/hit");
    let metrics_cost = ratio("errmap-metrics/hit", "errmap/hit");
    let retry_layer_cost = ratio("errmap-retry/hit", "errmap/hit");
    // The median over the rounds of the per-round ratio of CPU per call,
    // the server's or this client's.
    let cpu_ratio = |a: &str, b: &str, client: bool| {
        let per_call = |m: &Measured, round: usize| {
            let cpu = if client {
                m.client_cpu[round]
            } else {
                m.server_cpu[round].precise
            };
            cpu / m.calls[round].max(1) as f64
        };
        let (Some(a), Some(b)) = (index(a), index(b)) else {
            return f64::NAN;
        };
        let (a, b) = (&measured[a], &measured[b]);
        median(
            (0..a.calls.len())
                .map(|r| per_call(a, r) / per_call(b, r).max(1e-12))
                .collect(),
        )
    };
    let cpu_ratios = json!({
        "full_stack_hit_vs_bare_tonic_hit": cpu_ratio("errmap/hit", "bare/hit", false),
        "full_stack_noop_vs_bare_tonic_noop": cpu_ratio("errmap/noop", "bare/noop", false),
        "get_error_vs_health_check": cpu_ratio("errmap/hit", "errmap/noop", false),
        "bare_tonic_get_error_vs_health_check": cpu_ratio("bare/hit", "bare/noop", false),
        "miss_vs_hit": cpu_ratio("errmap/miss", "errmap/hit", false),
        "metrics_on_vs_off_hit": cpu_ratio("errmap-metrics/hit", "errmap/hit", false),
        "with_vs_without_grpc_web_hit": cpu_ratio("errmap/hit", "grpc-only/hit", false),
        "tls_vs_plaintext_hit": cpu_ratio("errmap-tls/hit", "errmap/hit", false),
        "client_retry_layer_on_vs_off_hit": cpu_ratio("errmap-retry/hit", "errmap/hit", true),
        "connect_json_vs_grpc_hit": cpu_ratio("errmap-connect-json/hit", "errmap/hit", false),
        "connect_proto_vs_grpc_hit": cpu_ratio("errmap-connect-proto/hit", "errmap/hit", false),
        "grpc_hit_with_vs_without_connect": cpu_ratio("errmap/hit", "no-connect/hit", false),
        "otlp_export_on_vs_off_hit": cpu_ratio("otlp/hit", "errmap/hit", false),
    });
    let (largest_code, largest_size) = largest_bare_status();

    let serve = match &options.serve_binary {
        Some(path) if path.exists() => Some(measure_binary(path, 1000).await),
        Some(path) => Some(Err(format!(
            "{} not found; run `cargo build --release` first",
            path.display()
        ))),
        None => None,
    };

    let mut per_scenario = serde_json::Map::new();
    for (s, m) in scenarios.iter().zip(&measured) {
        let t = &m.totals;
        per_scenario.insert(
            s.name.to_owned(),
            json!({
                "server_us_per_call": m.server_us(),
                "server_us_per_call_from_ticks": m.server_us_from_ticks(),
                "client_us_per_call": m.client_us(),
                "calls": t.calls,
                "unexpected": t.unexpected,
                "throughput": t.throughput(),
                "p50_us": t.histogram.value_at_quantile(0.5),
                "p99_us": t.histogram.value_at_quantile(0.99),
                "max_us": t.histogram.max(),
            }),
        );
    }
    let mut report = json!({
        "options": {
            "duration_s": options.duration.as_secs_f64(),
            "rounds": options.rounds,
            "concurrency": options.concurrency,
            "channels": options.channels,
        },
        "scenarios": per_scenario,
        "ratios_are": "median over the rounds of the per-round throughput ratio",
        "cpu_ratios_are": "median over the rounds of the per-round ratio of CPU µs per call \
            (the server's, from /proc/<pid>/task/*/schedstat; the client's for the retry layer)",
        "cpu_ratios": cpu_ratios,
        "ratios": {
            "hit_vs_noop": hit_vs_noop,
            "miss_vs_noop": miss_vs_noop,
            "layers_and_auth_hit": layers_hit,
            "layers_noop": layers_noop,
            "bare_hit_vs_noop": bare_hit_vs_noop,
            "tls_hit_vs_plaintext_hit": tls_hit_vs_plain,
            "grpc_web_hit_vs_grpc_hit": web_hit_vs_grpc,
            "grpc_hit_with_vs_without_grpc_web": web_support_cost,
            "http_json_hit_vs_grpc_hit": http_hit_vs_grpc,
            "hit_with_vs_without_metrics": metrics_cost,
            "hit_with_vs_without_retry_layer": retry_layer_cost,
            "hit_with_vs_without_otlp_export": ratio("otlp/hit", "errmap/hit"),
        },
        "otlp": spans,
        "metrics": {
            "scrape_bytes": scrape_bytes,
            "label_sets": label_sets.0,
            "label_sets_rss_kib": label_sets.1,
        },
        "new_connection_median_us": {
            "plaintext": plain_connection.as_micros() as u64,
            "tls": tls_connection.as_micros() as u64,
        },
        "largest_bare_status": {"code": largest_code.entry().name(), "bytes": largest_size},
    });
    match serve {
        Some(Ok(f)) => {
            report["serve_binary"] = json!({
                "startup_ms": f.startup.as_secs_f64() * 1000.0,
                "rss_idle_mib": f.rss_idle_kib as f64 / 1024.0,
                "rss_in_flight_mib": f.rss_in_flight_kib as f64 / 1024.0,
                "in_flight": f.in_flight,
            })
        }
        Some(Err(e)) => report["serve_binary"] = json!({"error": e}),
        None => {}
    }
    let unexpected: u64 = measured.iter().map(|m| m.totals.unexpected).sum();
    if unexpected > 0 {
        return Err(format!(
            "{unexpected} calls got an unexpected answer:\n{report:#}"
        ));
    }
    Ok(report)
}

fn print_text(report: &serde_json::Value) {
    println!(
        "{:<19} {:>9} {:>10} {:>11} {:>11} {:>8} {:>8} {:>8}",
        "scenario", "calls", "calls/s", "server µs", "client µs", "p50 µs", "p99 µs", "max µs"
    );
    if let Some(scenarios) = report["scenarios"].as_object() {
        for (name, s) in scenarios {
            let n = |k: &str| s[k].as_u64().unwrap_or(0);
            let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "{:<19} {:>9} {:>10.0} {:>11.2} {:>11.2} {:>8} {:>8} {:>8}",
                name,
                n("calls"),
                f("throughput"),
                f("server_us_per_call"),
                f("client_us_per_call"),
                n("p50_us"),
                n("p99_us"),
                n("max_us")
            );
        }
    }
    if let Some(ratios) = report["cpu_ratios"].as_object() {
        let text: Vec<String> = ratios
            .iter()
            .map(|(k, v)| format!("{k}={:.3}", v.as_f64().unwrap_or(f64::NAN)))
            .collect();
        println!("cpu per call: {}", text.join(" "));
    }
    let r = &report["ratios"];
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let serve = &report["serve_binary"];
    let serve_text = if serve["startup_ms"].is_number() {
        format!(
            " startup={:.1}ms rss_idle={:.1}MiB rss_1000_in_flight={:.1}MiB",
            f(&serve["startup_ms"]),
            f(&serve["rss_idle_mib"]),
            f(&serve["rss_in_flight_mib"])
        )
    } else if let Some(e) = serve["error"].as_str() {
        format!(" serve_binary: {e}")
    } else {
        String::new()
    };
    println!(
        "summary: hit/noop={:.3} (bare tonic {:.3}) miss/noop={:.3} layers+auth(hit)={:.3} layers(noop)={:.3} tls/plaintext(hit)={:.3} grpc-web/grpc(hit)={:.3} grpc(hit) with/without gRPC-Web={:.3} http-json/grpc(hit)={:.3} metrics on/off(hit)={:.3} retry layer on/off(hit)={:.3} new connection: plaintext {}us, TLS {}us largest_status={}B{}",
        f(&r["hit_vs_noop"]),
        f(&r["bare_hit_vs_noop"]),
        f(&r["miss_vs_noop"]),
        f(&r["layers_and_auth_hit"]),
        f(&r["layers_noop"]),
        f(&r["tls_hit_vs_plaintext_hit"]),
        f(&r["grpc_web_hit_vs_grpc_hit"]),
        f(&r["grpc_hit_with_vs_without_grpc_web"]),
        f(&r["http_json_hit_vs_grpc_hit"]),
        f(&r["hit_with_vs_without_metrics"]),
        f(&r["hit_with_vs_without_retry_layer"]),
        report["new_connection_median_us"]["plaintext"],
        report["new_connection_median_us"]["tls"],
        report["largest_bare_status"]["bytes"],
        serve_text
    );
}

fn main() -> std::process::ExitCode {
    if let Some(name) = std::env::var_os(ROLE_VAR) {
        return match Role::from_name(&name.to_string_lossy()).ok_or("no such server") {
            Ok(role) => match serve_role(role) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("error: {ROLE_VAR}={name:?}: {e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let options = match parse_options(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let report = match &options.compare {
        Some((before, after)) => runtime.block_on(compare_binaries(&options, before, after)),
        None => runtime.block_on(run(options.clone())),
    };
    match report {
        Ok(report) => {
            // The comparison has no table of its own: it prints its JSON.
            if options.json || options.compare.is_some() {
                println!("{report:#}");
            } else {
                print_text(&report);
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps the tool from rotting: one short run, every scenario answered
    /// as expected.
    #[test]
    fn a_one_second_run_works() {
        let options = parse_options(
            [
                "--duration",
                "1s",
                "--rounds",
                "1",
                "--concurrency",
                "4",
                "--channels",
                "2",
                "--no-serve-binary",
            ]
            .into_iter()
            .map(String::from),
        )
        .unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let report = runtime.block_on(run(options)).unwrap();
        for s in SCENARIOS {
            let scenario = &report["scenarios"][s.name];
            assert!(scenario["calls"].as_u64().unwrap() > 0, "{}", s.name);
            // Each server is a process of its own, whose CPU is measured.
            assert!(
                scenario["server_us_per_call"].as_f64().unwrap() > 0.0,
                "{}: {scenario}",
                s.name
            );
            assert!(scenario["client_us_per_call"].as_f64().unwrap() > 0.0);
        }
        assert!(report["metrics"]["scrape_bytes"].as_u64().unwrap() > 0);
        // The `otlp` server's spans reached the receiver, every one of them
        // counted on both sides.
        let otlp = &report["otlp"];
        let received = otlp["spans_received"].as_u64().unwrap();
        assert!(received > 0, "{otlp}");
        assert_eq!(otlp["spans_exported"].as_u64(), Some(received), "{otlp}");
        assert!(
            report["cpu_ratios"]["full_stack_hit_vs_bare_tonic_hit"]
                .as_f64()
                .unwrap()
                > 0.0
        );
        assert!(report["ratios"]["hit_vs_noop"].as_f64().unwrap() > 0.0);
        assert!(
            report["ratios"]["hit_with_vs_without_retry_layer"]
                .as_f64()
                .unwrap()
                > 0.0
        );
        assert!(report["largest_bare_status"]["bytes"].as_u64().unwrap() < 1024);
    }

    /// Not a test: the server process [`ServerProcess::start`] starts
    /// under the test harness, where this program's `main` does not run.
    #[test]
    #[ignore = "a server process of `a_one_second_run_works`, started by it"]
    fn server_process() {
        let name = std::env::var(ROLE_VAR).expect("started by ServerProcess::start");
        serve_role(Role::from_name(&name).expect("a server's name")).unwrap();
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse_options(["--bogus".to_owned()].into_iter()).is_err());
        assert!(parse_options(["--duration".to_owned()].into_iter()).is_err());
        assert!(parse_options(["--rounds".to_owned(), "0".to_owned()].into_iter()).is_err());
    }
}
