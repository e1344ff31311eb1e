//! Shared test harness: a real errmap server on 127.0.0.1:0, tonic clients,
//! and `test.v1.Probe`, a hand-written service whose methods misbehave on
//! purpose (slow, panicking, leaking internals...).

#![allow(dead_code, unreachable_pub)]

pub mod binary;
pub mod raw;

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use errmap::Catalog as _;
use errmap_server::server::{self, ErrmapServer, ServerConfig};
use http::uri::PathAndQuery;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{
    body::Body,
    codegen::Service,
    server::{NamedService, UnaryService},
    transport::Channel,
    Request, Response, Status,
};
use tonic_prost::ProstCodec;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A running server and the means to stop it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub probe: Probe,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), server::ServeError>>,
}

impl TestServer {
    /// Starts errmap's services plus the probe on a free port.
    pub async fn start(config: ServerConfig) -> Self {
        let listener = server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let probe = Probe::default();
        let (tx, rx) = oneshot::channel();
        let server = ErrmapServer::new(config).add_service(probe.clone());
        let handle = tokio::spawn(server.serve(listener, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            probe,
            shutdown: Some(tx),
            handle,
        }
    }

    /// Starts with the default configuration.
    pub async fn start_default() -> Self {
        Self::start(ServerConfig::default()).await
    }

    /// A new connection to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect to the test server")
    }

    /// Sends the shutdown signal without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Starts `count` `Slow` calls of `ms` milliseconds on `channel` and
    /// waits (at most 10 s) until their handlers run, so that they hold
    /// their places.
    pub async fn start_slow(
        &self,
        channel: &Channel,
        ms: u64,
        count: usize,
    ) -> Vec<JoinHandle<Result<Response<String>, Status>>> {
        let before = self.probe.started.load(Ordering::SeqCst);
        let calls = (0..count)
            .map(|_| {
                tokio::spawn(call_probe(
                    channel.clone(),
                    "Slow",
                    Request::new(ms.to_string()),
                ))
            })
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.probe.started.load(Ordering::SeqCst) < before + count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the slow calls did not start within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        calls
    }

    /// Signals shutdown and waits (at most 30 s) for the server to stop.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("server stops within 30 s")
            .expect("server task does not panic")
            .expect("server stops cleanly");
    }

    /// Waits (at most 30 s) for the server to stop after `begin_shutdown`.
    pub async fn join(self) -> Result<(), server::ServeError> {
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("server stops within 30 s")
            .expect("server task does not panic")
    }
}

/// Calls `/test.v1.Probe/{method}` with a string body.
pub async fn call_probe(
    channel: Channel,
    method: &str,
    request: Request<String>,
) -> Result<Response<String>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let path = PathAndQuery::try_from(format!("/test.v1.Probe/{method}")).unwrap();
    grpc.unary(request, path, ProstCodec::<String, String>::default())
        .await
}

/// `GetError` for `code` on `channel`: the name of the code the server
/// answers with.
pub async fn error_name(channel: Channel, code: i32) -> Result<String, Status> {
    let response = errmap::pb::error_catalog_client::ErrorCatalogClient::new(channel)
        .get_error(errmap::pb::GetErrorRequest {
            key: Some(errmap::pb::get_error_request::Key::Code(code)),
            domain: None,
        })
        .await?;
    Ok(response
        .into_inner()
        .error
        .map(|e| e.name)
        .unwrap_or_default())
}

/// `test.v1.Probe`: every method takes and returns a string.
///
/// - `Slow`: sleeps the number of milliseconds in the request, then echoes it;
/// - `Echo`: echoes the body and the `x-echo` / `x-echo-bin` metadata back in
///   headers and trailers;
/// - `Panic`: panics with a secret message;
/// - `Internal`: fails with INTERNAL and a message full of internals;
/// - `Unknown`: fails with UNKNOWN and no details;
/// - `Rich`: fails with a catalog status carrying metadata and a violation;
/// - `Plain`: fails with a detail-less NOT_FOUND;
/// - `Special` / `PlainSpecial`: fail with the interop suite's special
///   message, as a catalog status / as a plain INVALID_ARGUMENT;
/// - `Unimplemented`: fails with a bare UNIMPLEMENTED, as a handler may;
/// - `Localized`: fails with 47 built in the caller's locale, with a
///   developer message;
/// - `Attempts`: answers the request's `grpc-previous-rpc-attempts`, or
///   `none`;
/// - `Return`: fails with the status put in [`Probe::next`];
/// - `Peer`: answers the verified client certificate's subject and SANs;
/// - `Forward`: calls the errmap server whose URL is the request and
///   forwards the real decode error tonic's client gives;
/// - `StreamThenFail` (server streaming): one message, then INTERNAL in the
///   trailers.
#[derive(Clone, Default)]
pub struct Probe {
    /// Calls that entered a handler.
    pub started: Arc<AtomicUsize>,
    /// Calls whose handler ran to its end.
    pub finished: Arc<AtomicUsize>,
    /// Handlers dropped before their end (the client went away).
    pub dropped: Arc<AtomicUsize>,
    /// Handlers running now.
    pub current: Arc<AtomicUsize>,
    /// The most handlers that ran at once.
    pub peak: Arc<AtomicUsize>,
    /// What the `Return` method fails with.
    pub next: Arc<std::sync::Mutex<Option<Status>>>,
}

impl Probe {
    /// Waits (at most 5 s) until a handler was dropped before its end.
    pub async fn wait_dropped(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.dropped.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Counts a running handler; on drop, notes whether it ran to its end.
struct Running {
    probe: Probe,
    done: bool,
}

impl Running {
    fn new(probe: &Probe) -> Self {
        probe.started.fetch_add(1, Ordering::SeqCst);
        let now = probe.current.fetch_add(1, Ordering::SeqCst) + 1;
        probe.peak.fetch_max(now, Ordering::SeqCst);
        Self {
            probe: probe.clone(),
            done: false,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.probe.current.fetch_sub(1, Ordering::SeqCst);
        if self.done {
            self.probe.finished.fetch_add(1, Ordering::SeqCst);
        } else {
            self.probe.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl NamedService for Probe {
    const NAME: &'static str = "test.v1.Probe";
}

impl Service<http::Request<Body>> for Probe {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let method = req.uri().path().rsplit('/').next().unwrap_or("").to_owned();
        let probe = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<String, String>::default());
            if method == "StreamThenFail" {
                return Ok(grpc.server_streaming(StreamThenFail, req).await);
            }
            if method == "EchoInTrailers" {
                return Ok(grpc.server_streaming(EchoInTrailers, req).await);
            }
            Ok(grpc.unary(ProbeHandler { method, probe }, req).await)
        })
    }
}

struct ProbeHandler {
    method: String,
    probe: Probe,
}

/// The message the `Panic` method panics with; it must never reach a client.
pub const PANIC_SECRET: &str = "panic: secret connection string postgres://admin:hunter2@db";
/// The special message of the gRPC interop suite.
pub const SPECIAL_MESSAGE: &str =
    "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";

/// `StreamThenFail`: sends one message, then fails with INTERNAL in the
/// trailers.
struct StreamThenFail;

impl tonic::server::ServerStreamingService<String> for StreamThenFail {
    type Response = String;
    type ResponseStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<String, Status>> + Send + 'static>>;
    type Future = BoxFuture<Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<String>) -> Self::Future {
        let first = request.into_inner();
        Box::pin(async move {
            let stream = tokio_stream::iter([Ok(first), Err(Status::internal(INTERNAL_SECRET))]);
            Ok(Response::new(Box::pin(stream) as Self::ResponseStream))
        })
    }
}

/// `EchoInTrailers`: one message, then a catalog error whose metadata echoes
/// the request's `x-echo` / `x-echo-bin`, so they travel in the trailers.
struct EchoInTrailers;

impl tonic::server::ServerStreamingService<String> for EchoInTrailers {
    type Response = String;
    type ResponseStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<String, Status>> + Send + 'static>>;
    type Future = BoxFuture<Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<String>) -> Self::Future {
        let mut status: Status = errmap::ErrorCode::ApiItemNotFound.into();
        if let Some(v) = request.metadata().get("x-echo") {
            status.metadata_mut().insert("x-echo", v.clone());
        }
        if let Some(v) = request.metadata().get_bin("x-echo-bin") {
            status.metadata_mut().insert_bin("x-echo-bin", v.clone());
        }
        let first = request.into_inner();
        Box::pin(async move {
            let stream = tokio_stream::iter([Ok(first), Err(status)]);
            Ok(Response::new(Box::pin(stream) as Self::ResponseStream))
        })
    }
}

/// Calls `GetError` on the errmap server at `url` and decodes its answer as
/// the wrong type, so that tonic's own client fails with a real "failed to
/// decode Protobuf message" status, which is returned as a handler would
/// forward a downstream failure.
async fn forward_downstream_error(url: String) -> Status {
    let channel = match Channel::from_shared(url) {
        Ok(endpoint) => match endpoint.connect().await {
            Ok(channel) => channel,
            Err(e) => return Status::unavailable(e.to_string()),
        },
        Err(e) => return Status::invalid_argument(e.to_string()),
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(e) = grpc.ready().await {
        return Status::unavailable(e.to_string());
    }
    let request = errmap::pb::GetErrorRequest {
        key: Some(errmap::pb::get_error_request::Key::Code(11)),
        domain: None,
    };
    // GetErrorResponse's field 1 is a message; Duration's is a varint.
    match grpc
        .unary(
            Request::new(request),
            PathAndQuery::from_static("/errmap.v1.ErrorCatalog/GetError"),
            ProstCodec::<errmap::pb::GetErrorRequest, prost_types::Duration>::default(),
        )
        .await
    {
        Ok(_) => Status::ok("the downstream answer decoded after all"),
        Err(status) => status,
    }
}

/// The developer message of the `Localized` method.
pub const LOCALIZED_DEVELOPER_MESSAGE: &str = "no order 7 for this account";

/// The message of the `Internal` method; it must never reach a client.
pub const INTERNAL_SECRET: &str = "internal: table users_v2 is locked by pid 4242";

impl UnaryService<String> for ProbeHandler {
    type Response = String;
    type Future = BoxFuture<Result<Response<String>, Status>>;

    fn call(&mut self, request: Request<String>) -> Self::Future {
        let method = self.method.clone();
        let probe = self.probe.clone();
        Box::pin(async move {
            let mut running = Running::new(&probe);
            let result = match method.as_str() {
                "Slow" => {
                    let ms: u64 = request.get_ref().parse().unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
                    Ok(Response::new(request.into_inner()))
                }
                "Echo" => {
                    let echo = request.metadata().get("x-echo").cloned();
                    let echo_bin = request.metadata().get_bin("x-echo-bin").cloned();
                    let mut response = Response::new(request.into_inner());
                    if let Some(v) = echo {
                        response.metadata_mut().insert("x-echo", v);
                    }
                    if let Some(v) = echo_bin {
                        response.metadata_mut().insert_bin("x-echo-bin", v);
                    }
                    Ok(response)
                }
                "Panic" => panic!("{PANIC_SECRET}"),
                "Internal" => Err(Status::internal(INTERNAL_SECRET)),
                "Unknown" => Err(Status::unknown(INTERNAL_SECRET)),
                "Plain" => Err(Status::not_found("no such thing")),
                "Rich" => Err(errmap::ErrorCode::AuthUsernameInvalid
                    .builder()
                    .message("username too short")
                    .metadata("minLength", "5")
                    .field_violation("username", "too short")
                    .ascii_metadata("x-request-id", "rich-1")
                    .binary_metadata("x-trace-bin", [1u8, 2, 3, 255])
                    .build()
                    .unwrap()),
                "Special" => Err(errmap::ErrorCode::ApiInvalidRequest
                    .builder()
                    .message(SPECIAL_MESSAGE)
                    .build()
                    .unwrap()),
                "PlainSpecial" => Err(Status::invalid_argument(SPECIAL_MESSAGE)),
                "Localized" => Err(errmap::ErrorCode::ApiItemNotFound
                    .builder()
                    .locale(&request)
                    .message(LOCALIZED_DEVELOPER_MESSAGE)
                    .metadata("orderId", "7")
                    .build()
                    .unwrap()),
                "Unimplemented" => Err(Status::unimplemented("")),
                "Attempts" => Ok(Response::new(
                    request
                        .metadata()
                        .get("grpc-previous-rpc-attempts")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_owned(),
                )),
                "Peer" => Ok(Response::new(
                    request
                        .extensions()
                        .get::<errmap_server::tls::PeerInfo>()
                        .and_then(|peer| peer.identity.as_ref())
                        .map(|id| format!("{} {}", id.subject, id.sans.join(",")))
                        .unwrap_or_else(|| "anonymous".to_owned()),
                )),
                "Return" => Err(probe
                    .next
                    .lock()
                    .unwrap()
                    .take()
                    .unwrap_or_else(|| Status::internal("nothing to return"))),
                "Forward" => Err(forward_downstream_error(request.into_inner()).await),
                other => Err(Status::unimplemented(format!("no probe method {other}"))),
            };
            running.done = true;
            drop(running);
            result
        })
    }
}

/// A lookup client on a new channel to `url`: what the generated
/// `ErrorCatalogClient::connect` did before the light `errmap` crate took
/// tonic without its transport.
pub async fn catalog_client(
    url: impl Into<String>,
) -> Result<errmap::pb::error_catalog_client::ErrorCatalogClient<Channel>, tonic::transport::Error>
{
    let channel = Channel::from_shared(url.into())
        .expect("a valid URL")
        .connect()
        .await?;
    Ok(errmap::pb::error_catalog_client::ErrorCatalogClient::new(
        channel,
    ))
}

/// One request with hyper's client, over HTTP/1.1 or h2c (20 s at most for
/// the answer's head): its status, headers and whole body.
pub async fn http_request(
    http2: bool,
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, http::HeaderMap, bytes::Bytes) {
    use http_body_util::BodyExt as _;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(http2)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), client.request(request))
        .await
        .expect("an answer within 20 s")
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}
