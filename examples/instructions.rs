//! The hot paths one at a time, for counting their instructions under
//! callgrind: counts repeat exactly for the same binary, whatever else the
//! machine does, where a time never does.
//!
//! ```sh
//! scripts/instructions.sh            # every path, a table
//! scripts/instructions.sh read/view  # some of them
//! ```
//!
//! The script runs `instructions PATH N` under
//! `valgrind --tool=callgrind --collect-atstart=no
//! --toggle-collect=*instructions::measured*`: only what [`measured`] runs
//! is counted, N calls of the path after one call to warm it up (the
//! pre-encoded statuses are made on first use), and it divides by N.
//!
//! Run without arguments, it lists the paths; with `--check`, it runs each
//! once and checks its result, which the test suite does so that no path
//! rots into measuring a failure.

use std::{collections::HashMap, future::Future as _, hint::black_box, time::Duration};

use errmap::{Catalog as _, ErrorCode, ErrorStatusExt, DOMAIN};
use http::HeaderMap;
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

/// The code of the bench: number 44, with RetryInfo and a pushback.
const CODE: ErrorCode = ErrorCode::ApiTooManyRequests;

/// One path: its name, its anchor (the alternative it is compared with,
/// if any) and one call of it, returning whether it got what it should.
struct Path {
    name: &'static str,
    anchor: Option<&'static str>,
    run: fn(&Fixture) -> bool,
}

/// What the paths read: made once, before anything is counted.
struct Fixture {
    /// A rich status as a client receives it, through headers.
    received: Status,
    /// A Russian-first browser's `accept-language`.
    russian: tonic::metadata::MetadataMap,
    /// The shop example's catalog, loaded at run time: its templated
    /// `QUANTITY_OVER_LIMIT` (6) and its plain `QUANTITY_INVALID` (5).
    shop: errmap::TableRef,
}

/// The shop example's catalog, compiled here by protox and loaded as
/// `errmap serve --catalog` loads one.
fn shop_table() -> errmap::TableRef {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut compiler = protox::Compiler::new([
        format!("{root}/examples/shop/proto"),
        format!("{root}/proto"),
    ])
    .expect("the proto folders");
    compiler.include_imports(true);
    compiler
        .open_file("shop/v1/shop.proto")
        .expect("the shop's proto compiles");
    errmap::catalog_set::load_descriptor_set(&compiler.encode_file_descriptor_set(), "shop")
        .expect("the shop's catalog loads")
        .remove(0)
        .into()
}

impl Fixture {
    fn new() -> Self {
        let built = CODE
            .builder()
            .message("user u-42 is over quota")
            .metadata("userId", "u-42")
            .build()
            .expect("a valid status");
        let mut headers = HeaderMap::new();
        built.add_header(&mut headers).expect("headers");
        let mut russian = tonic::metadata::MetadataMap::new();
        russian.insert(
            "accept-language",
            "ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7"
                .parse()
                .expect("ascii"),
        );
        Self {
            received: Status::from_header_map(&headers).expect("a status"),
            russian,
            shop: shop_table(),
        }
    }
}

fn tonic_types_bare() -> Status {
    let mut details = ErrorDetails::with_error_info(
        CODE.entry().name(),
        DOMAIN,
        HashMap::from([("code".to_owned(), CODE.entry().number().to_string())]),
    );
    details.set_localized_message("en-US", CODE.entry().message());
    details.set_retry_info(Some(Duration::from_secs(1)));
    Status::with_error_details(CODE.entry().grpc_code(), CODE.entry().message(), details)
}

fn tonic_types_rich(user: &str) -> Status {
    let mut details = ErrorDetails::with_error_info(
        CODE.entry().name(),
        DOMAIN,
        HashMap::from([
            ("code".to_owned(), CODE.entry().number().to_string()),
            ("userId".to_owned(), user.to_owned()),
        ]),
    );
    details.set_localized_message("en-US", CODE.entry().message());
    details.set_retry_info(Some(Duration::from_secs(1)));
    Status::with_error_details(
        CODE.entry().grpc_code(),
        format!("user {user} is over quota"),
        details,
    )
}

/// One call of a service kept between calls.
type Call = Box<dyn FnMut(http::Request<()>) -> bool>;

/// Calls `service`, polled once with a no-op waker (its answer is ready at
/// once): true for an HTTP 200.
fn kept_call<S, B>(mut service: S) -> Call
where
    S: tower::Service<http::Request<()>, Response = http::Response<B>> + 'static,
    S::Future: Unpin,
{
    Box::new(move |request| {
        let mut future = tower::Service::call(&mut service, request);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::Pin::new(&mut future).poll(&mut cx) {
            std::task::Poll::Ready(Ok(response)) => {
                black_box(response).status() == http::StatusCode::OK
            }
            _ => false,
        }
    })
}

/// The response layer on the OK path, as the `layer_ok_path` bench calls
/// it: an inner service that answers at once.
fn layer_ok_path() -> bool {
    thread_local! {
        static SERVICE: std::cell::RefCell<Option<Call>> = const { std::cell::RefCell::new(None) };
    }
    SERVICE.with(|slot| {
        let mut slot = slot.borrow_mut();
        let call = slot.get_or_insert_with(|| {
            let service = tower::Layer::layer(
                &errmap_server::layer::ErrorLayer::new(),
                tower::service_fn(|_: http::Request<()>| {
                    let mut response =
                        http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                    response.headers_mut().insert(
                        "content-type",
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    std::future::ready(Ok::<_, std::convert::Infallible>(response))
                }),
            );
            kept_call(service)
        });
        call(http::Request::new(()))
    })
}

/// The metrics layer (spans only, as in a server without `--admin-addr`)
/// on the OK path, with the OTLP export at `ratio` or without it; the
/// export's task is not started, so no export runs in the count. A ratio
/// of `NAN` stands for the layer with metrics on (`--admin-addr`) instead.
fn metrics_ok_path(ratio: Option<f64>) -> bool {
    thread_local! {
        static SERVICES: std::cell::RefCell<Vec<(Option<u64>, Call)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    let key = ratio.map(f64::to_bits);
    SERVICES.with(|slot| {
        let mut services = slot.borrow_mut();
        if !services.iter().any(|(k, _)| *k == key) {
            let mut layer = errmap_server::metrics::MetricsLayer::tracing_only();
            if ratio.is_some_and(f64::is_nan) {
                layer = errmap_server::metrics::Metrics::new().layer();
            } else if let Some(ratio) = ratio {
                let mut config =
                    errmap_server::otlp::TraceExportConfig::new("http://127.0.0.1:4317");
                config.sample_ratio = ratio;
                let export = errmap_server::otlp::TraceExport::new(
                    config,
                    errmap_server::otlp::TraceExportCounters::default(),
                )
                .expect("an export");
                layer = layer.exporting(export.recorder());
                // Kept for the process's life: its queue is the recorder's.
                std::mem::forget(export);
            }
            let service = tower::Layer::layer(
                &layer,
                tower::service_fn(|_: http::Request<()>| {
                    let mut response =
                        http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                    response
                        .headers_mut()
                        .insert("grpc-status", http::HeaderValue::from_static("0"));
                    std::future::ready(Ok::<_, std::convert::Infallible>(response))
                }),
            );
            let call = kept_call(service);
            services.push((key, call));
        }
        let (_, call) = services
            .iter_mut()
            .find(|(k, _)| *k == key)
            .expect("made above");
        let request = http::Request::builder()
            .uri("/errmap.v1.ErrorCatalog/GetError")
            .body(())
            .expect("a request");
        call(request)
    })
}

/// The HS256 secret of the stack paths' server, as `loadgen`'s.
const STACK_SECRET: &[u8] = b"instructions: only in-process";

/// A server's per-call path and the token its calls carry, with the
/// runtime they run in.
struct Stack {
    runtime: tokio::runtime::Runtime,
    errmap: errmap_server::measure::CallPath,
    /// The same server with metrics on (`--admin-addr`).
    errmap_metrics: errmap_server::measure::CallPath,
    bare: tonic::service::Routes,
    bearer: http::HeaderValue,
}

impl Stack {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        // As `loadgen`'s errmap server: auth, gRPC-Web, Connect, the HTTP
        // API, spans with no subscriber, no metrics.
        let mut config = errmap_server::ServerConfig::default();
        config.auth = Some(errmap_server::auth::AuthInterceptor::new(
            errmap_server::auth::JwtVerifier::hs256(STACK_SECRET),
        ));
        config.concurrency_limit = 4096;
        let errmap = runtime
            .block_on(errmap_server::measure::CallPath::new(
                errmap_server::ErrmapServer::new(config.clone()),
            ))
            .expect("the server assembles");
        config.metrics = Some(errmap_server::metrics::Metrics::new());
        let errmap_metrics = runtime
            .block_on(errmap_server::measure::CallPath::new(
                errmap_server::ErrmapServer::new(config),
            ))
            .expect("the server assembles");
        // As `loadgen`'s bare tonic server.
        let (_, health) = tonic_health::server::health_reporter();
        let bare = tonic::service::Routes::new(health)
            .add_service(errmap_server::service::CatalogService::new().into_server())
            .prepare();
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 3600;
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": "instructions", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(STACK_SECRET),
        )
        .expect("sign the token");
        Self {
            runtime,
            errmap,
            errmap_metrics,
            bare,
            bearer: http::HeaderValue::try_from(format!("Bearer {token}")).expect("ascii"),
        }
    }

    /// A unary gRPC request for `path` with `message`, as h2 hands one to
    /// the server: HTTP/2, its headers, the whole message in one frame.
    fn request(&self, path: &'static str, message: &[u8]) -> http::Request<tonic::body::Body> {
        let mut frame = Vec::with_capacity(5 + message.len());
        frame.push(0);
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(message);
        let mut request = http::Request::new(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(frame),
        )));
        *request.method_mut() = http::Method::POST;
        *request.version_mut() = http::Version::HTTP_2;
        *request.uri_mut() = http::Uri::from_static(path);
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        headers.insert(http::header::AUTHORIZATION, self.bearer.clone());
        request
    }
}

/// Which server a stack path calls.
#[derive(Clone, Copy, PartialEq)]
enum On {
    Errmap,
    ErrmapWithMetrics,
    Bare,
}

/// One call of a unary RPC through the server `on` (a whole per-call path,
/// or bare tonic's router): true for gRPC status 0 with a message.
fn stack_call_on(on: On, health: bool) -> bool {
    thread_local! {
        static STACK: std::cell::OnceCell<Stack> = const { std::cell::OnceCell::new() };
    }
    STACK.with(|stack| {
        let stack = stack.get_or_init(Stack::new);
        let _entered = stack.runtime.enter();
        let request = if health {
            // An empty `HealthCheckRequest`: the server's overall health.
            stack.request("http://127.0.0.1/grpc.health.v1.Health/Check", &[])
        } else {
            // `GetErrorRequest { code: 11 }`.
            stack.request(
                "http://127.0.0.1/errmap.v1.ErrorCatalog/GetError",
                &[0x08, 11],
            )
        };
        let answer = match on {
            On::Errmap => black_box(&stack.errmap).call(request),
            On::ErrmapWithMetrics => black_box(&stack.errmap_metrics).call(request),
            On::Bare => errmap_server::measure::drive(black_box(&stack.bare), request),
        };
        answer.is_some_and(|a| {
            a.status == http::StatusCode::OK
                && a.grpc_status.as_ref().is_some_and(|s| s == "0")
                && a.data > 5
        })
    })
}

/// A client and a bare tonic server on 127.0.0.1, the server in a thread
/// of its own: the client's runtime is a current-thread one, driven only
/// inside [`measured`], so callgrind counts the client's side of each call
/// (its channel's buffer task included) and none of the server's.
struct Client {
    runtime: tokio::runtime::Runtime,
    plain: errmap::pb::error_catalog_client::ErrorCatalogClient<tonic::transport::Channel>,
    retry: errmap::pb::error_catalog_client::ErrorCatalogClient<
        errmap_client::Retry<tonic::transport::Channel>,
    >,
}

impl Client {
    fn new() -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the server's runtime");
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind 127.0.0.1");
                addr_tx
                    .send(listener.local_addr().expect("an address"))
                    .expect("the harness waits for the address");
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                // Served until the process ends.
                let _ = tonic::transport::Server::builder()
                    .add_service(errmap_server::service::CatalogService::new().into_server())
                    .serve_with_incoming(incoming)
                    .await;
            });
        });
        let addr = addr_rx.recv().expect("the server's address");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the client's runtime");
        let connect = |addr: std::net::SocketAddr| async move {
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("an endpoint")
                .tcp_nodelay(true)
                .connect()
                .await
                .expect("the server answers")
        };
        let (plain, retry) = runtime.block_on(async { (connect(addr).await, connect(addr).await) });
        let retry = tower::Layer::layer(
            &errmap_client::RetryLayer::new(errmap_client::RetryPolicy::default()),
            retry,
        );
        Self {
            runtime,
            plain: errmap::pb::error_catalog_client::ErrorCatalogClient::new(plain),
            retry: errmap::pb::error_catalog_client::ErrorCatalogClient::new(retry),
        }
    }
}

/// One `GetError` hit from a tonic client, through the client retry layer
/// or without it: true for the entry asked for.
fn client_call(retry: bool) -> bool {
    thread_local! {
        static CLIENT: std::cell::RefCell<Option<Client>> = const { std::cell::RefCell::new(None) };
    }
    CLIENT.with(|slot| {
        let mut slot = slot.borrow_mut();
        let client = slot.get_or_insert_with(Client::new);
        let request = errmap::pb::GetErrorRequest {
            key: Some(errmap::pb::get_error_request::Key::Code(11)),
            ..Default::default()
        };
        let answer = if retry {
            client
                .runtime
                .block_on(client.retry.get_error(black_box(request)))
        } else {
            client
                .runtime
                .block_on(client.plain.get_error(black_box(request)))
        };
        answer.is_ok_and(|a| a.into_inner().error.is_some_and(|e| e.code == Some(11)))
    })
}

const PATHS: &[Path] = &[
    Path {
        name: "client/retry_get_error_hit",
        anchor: Some("client/plain_get_error_hit"),
        run: |_| client_call(true),
    },
    Path {
        name: "client/plain_get_error_hit",
        anchor: None,
        run: |_| client_call(false),
    },
    Path {
        name: "stack/get_error_hit",
        anchor: Some("stack/bare_tonic_get_error_hit"),
        run: |_| stack_call_on(On::Errmap, false),
    },
    Path {
        name: "stack/get_error_hit_metrics_on",
        anchor: Some("stack/get_error_hit"),
        run: |_| stack_call_on(On::ErrmapWithMetrics, false),
    },
    Path {
        name: "stack/bare_tonic_get_error_hit",
        anchor: None,
        run: |_| stack_call_on(On::Bare, false),
    },
    Path {
        name: "stack/health_check",
        anchor: Some("stack/bare_tonic_health_check"),
        run: |_| stack_call_on(On::Errmap, true),
    },
    Path {
        name: "stack/bare_tonic_health_check",
        anchor: None,
        run: |_| stack_call_on(On::Bare, true),
    },
    Path {
        name: "build/bare_44",
        anchor: Some("build/tonic_types_bare"),
        run: |_| black_box(CODE).to_status().code() == tonic::Code::ResourceExhausted,
    },
    Path {
        name: "build/tonic_types_bare",
        anchor: None,
        run: |_| tonic_types_bare().code() == tonic::Code::ResourceExhausted,
    },
    Path {
        name: "build/bare_no_retry",
        anchor: None,
        run: |_| black_box(ErrorCode::ApiItemNotFound).to_status().code() == tonic::Code::NotFound,
    },
    Path {
        name: "build/metadata_and_message",
        anchor: Some("build/tonic_types_metadata_and_message"),
        run: |_| {
            CODE.builder()
                .message(format!("user {} is over quota", black_box("u-42")))
                .metadata("userId", black_box("u-42").to_owned())
                .build()
                .is_ok()
        },
    },
    Path {
        name: "build/tonic_types_metadata_and_message",
        anchor: None,
        run: |_| tonic_types_rich(black_box("u-42")).code() == tonic::Code::ResourceExhausted,
    },
    Path {
        name: "build/templated_two_args",
        anchor: Some("build/plain_same_metadata"),
        run: |f| {
            let entry = f.shop.by_number(6).expect("QUANTITY_OVER_LIMIT");
            f.shop
                .builder_of(entry)
                .arg("quantity", black_box(12))
                .arg("limit", black_box(10))
                .build()
                .is_ok_and(|s| s.message() == "The quantity 12 exceeds the limit of 10 per order.")
        },
    },
    Path {
        name: "build/plain_same_metadata",
        anchor: None,
        run: |f| {
            let entry = f.shop.by_number(5).expect("QUANTITY_INVALID");
            f.shop
                .builder_of(entry)
                .metadata("quantity", black_box(12).to_string())
                .metadata("limit", black_box(10).to_string())
                .build()
                .is_ok()
        },
    },
    Path {
        name: "build/negotiated_ru",
        anchor: None,
        run: |f| {
            !black_box(CODE)
                .to_status_for(&f.russian)
                .details()
                .is_empty()
        },
    },
    Path {
        name: "read/errmap",
        anchor: Some("read/tonic_types"),
        run: |f| {
            black_box(&f.received)
                .error_info::<ErrorCode>()
                .is_some_and(|(code, info)| code == CODE && info.metadata["userId"] == "u-42")
        },
    },
    Path {
        name: "read/tonic_types",
        anchor: None,
        run: |f| {
            let status = black_box(&f.received);
            status.get_details_error_info().is_some_and(|info| {
                (info.domain == DOMAIN)
                    .then(|| ErrorCode::from_name(&info.reason))
                    .flatten()
                    == Some(CODE)
                    && info.metadata["userId"] == "u-42"
            })
        },
    },
    Path {
        name: "read/errmap_view",
        anchor: Some("read/tonic_types"),
        run: |f| {
            black_box(&f.received)
                .error_info_view::<ErrorCode>()
                .is_some_and(|(code, info)| code == CODE && info.get("userId") == Some("u-42"))
        },
    },
    Path {
        name: "read/errmap_code_only",
        anchor: Some("read/tonic_types"),
        run: |f| black_box(&f.received).error_code::<ErrorCode>() == Some(CODE),
    },
    Path {
        name: "read/error_details",
        anchor: Some("read/tonic_types"),
        run: |f| {
            black_box(&f.received)
                .error_details()
                .is_some_and(|d| d.retry_delay() == Some(Duration::from_secs(1)))
        },
    },
    Path {
        name: "layer/ok_path",
        anchor: None,
        run: |_| layer_ok_path(),
    },
    Path {
        name: "metrics/ok_path",
        anchor: None,
        run: |_| metrics_ok_path(None),
    },
    Path {
        name: "metrics/ok_path_metrics_on",
        anchor: Some("metrics/ok_path"),
        run: |_| metrics_ok_path(Some(f64::NAN)),
    },
    Path {
        name: "metrics/ok_path_otlp_1pct",
        anchor: Some("metrics/ok_path"),
        run: |_| metrics_ok_path(Some(0.01)),
    },
    Path {
        name: "metrics/ok_path_otlp_every_call",
        anchor: Some("metrics/ok_path"),
        run: |_| metrics_ok_path(Some(1.0)),
    },
    Path {
        name: "negotiate/browser_ru",
        anchor: None,
        run: |f| ErrorCode::table().negotiate(black_box(&f.russian)) == "ru-RU",
    },
];

/// Runs `path` `n` times: the only function callgrind counts.
#[inline(never)]
fn measured(path: &Path, fixture: &Fixture, n: u64) -> u64 {
    let mut ok = 0;
    for _ in 0..n {
        ok += u64::from((path.run)(black_box(fixture)));
    }
    ok
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fixture = Fixture::new();
    match args.as_slice() {
        [] => {
            for path in PATHS {
                println!("{} {}", path.name, path.anchor.unwrap_or("-"));
            }
            std::process::ExitCode::SUCCESS
        }
        [check] if check == "--check" => {
            let failed: Vec<&str> = PATHS
                .iter()
                .filter(|p| !(p.run)(&fixture))
                .map(|p| p.name)
                .collect();
            if failed.is_empty() {
                println!("{} paths answer as they should", PATHS.len());
                std::process::ExitCode::SUCCESS
            } else {
                eprintln!("these paths did not get what they should: {failed:?}");
                std::process::ExitCode::FAILURE
            }
        }
        [name, n] => {
            let Some(path) = PATHS.iter().find(|p| p.name == name) else {
                eprintln!("no path {name:?}; run without arguments for the list");
                return std::process::ExitCode::from(2);
            };
            let Ok(n) = n.parse::<u64>() else {
                eprintln!("{n:?} is not a count of calls");
                return std::process::ExitCode::from(2);
            };
            // One call outside the count: first-use work is not the path's.
            if !(path.run)(&fixture) {
                eprintln!("{name} did not get what it should");
                return std::process::ExitCode::FAILURE;
            }
            let ok = measured(path, &fixture, n);
            if ok != n {
                eprintln!(
                    "{name}: {} of {n} calls did not get what they should",
                    n - ok
                );
                return std::process::ExitCode::FAILURE;
            }
            std::process::ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: instructions [--check | PATH CALLS]");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_answers_as_it_should() {
        let fixture = Fixture::new();
        for path in PATHS {
            assert!((path.run)(&fixture), "{}", path.name);
            if let Some(anchor) = path.anchor {
                assert!(PATHS.iter().any(|p| p.name == anchor), "{anchor}");
            }
        }
    }
}
