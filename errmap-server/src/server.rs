//! The errmap server: the lookup service, health and reflection on one
//! socket, with explicit transport limits and a bounded graceful shutdown.
//!
//! ```no_run
//! use errmap_server::server::{self, ErrmapServer, ServerConfig};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ServerConfig::default();
//! let listener = server::bind(config.addr).await?;
//! println!("listening on {}", listener.local_addr()?);
//! ErrmapServer::new(config)
//!     // .add_service(MyServiceServer::new(my_service)) — your own services
//!     .serve(listener, async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```

use std::{convert::Infallible, future::Future, io, net::SocketAddr, time::Duration};

use errmap::Catalog as _;
use tokio::net::TcpListener;
use tonic::{body::Body, codegen::Service, server::NamedService, service::RoutesBuilder};
use tonic_health::ServingStatus;

use errmap::pb::{self, error_catalog_server::ErrorCatalogServer};

use crate::{
    admission::{Admission, AdmissionConfig, RouteTable},
    auth::AuthInterceptor,
    connections::{self, ProtocolConfig},
    http_api::HttpApi,
    http_error::{HttpErrors, Shape},
    layer::ErrorLayer,
    listener::{self, ListenerConfig},
    metrics::{Metrics, MetricsLayer},
    panic::CatchPanicLayer,
    reload::LiveCatalogs,
    service::CatalogService,
    tls::TlsConfig,
    web::{CorsConfig, CorsLayer, WebLayer},
};

/// The name the lookup service is registered under, for health checks.
pub const SERVICE_NAME: &str = "errmap.v1.ErrorCatalog";

/// How the server listens and what it allows. `Default` gives the values
/// `errmap serve` starts with; [`validate`](Self::validate) checks a
/// configuration once, before the server starts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free port. Default `127.0.0.1:50051`.
    pub addr: SocketAddr,
    /// How long in-flight calls may run on after a shutdown signal before
    /// they are dropped (counted from the end of the
    /// [`drain_delay`](Self::drain_delay)). Default 5 s.
    pub grace_period: Duration,
    /// How long the server keeps taking new calls after a shutdown signal,
    /// while health already reports NOT_SERVING and `/readyz` 503: the time
    /// load balancers and Kubernetes' endpoints take to stop sending new
    /// calls. Then the drain begins. Default 0.
    pub drain_delay: Duration,
    /// Where the calls' spans go for the OTLP export: the recorder of a
    /// [`crate::otlp::TraceExport`]. Default none: nothing of the export
    /// runs on a call.
    pub span_export: Option<crate::otlp::SpanRecorder>,
    /// Streams (calls) one HTTP/2 connection may have open at once. Default
    /// 256.
    pub max_concurrent_streams: u32,
    /// Largest request message accepted by every service (the catalog,
    /// health, reflection and yours), in bytes; larger ones fail with 40
    /// `API_INVALID_REQUEST`. Default 64 KiB.
    pub max_request_size: usize,
    /// Largest header block accepted, in bytes. Default 16 KiB.
    pub max_header_list_size: u32,
    /// How often an idle connection is pinged. Default 30 s.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    /// Default 10 s.
    pub keepalive_timeout: Duration,
    /// Streams a client may open and reset before the server answers with
    /// GOAWAY (the HTTP/2 rapid-reset guard). Default 100.
    pub max_pending_accept_reset_streams: usize,
    /// Streams the server may reset because of a client's protocol errors
    /// before it closes the connection with GOAWAY. Default 1024.
    pub max_local_error_reset_streams: usize,
    /// Calls running at once, over all connections (health checks not
    /// counted); more are answered at once with 44 `API_TOO_MANY_REQUESTS`.
    /// A call takes its place only once its request has arrived. Default 512.
    pub concurrency_limit: usize,
    /// Long-lived streams (health `Watch`, reflection) open at once, over
    /// all connections; more get 44. Default 128.
    pub stream_limit: usize,
    /// How long a request may take to arrive before it is answered with
    /// 40. Default 10 s.
    pub request_body_timeout: Duration,
    /// Connections open at once; at the cap, the connection idle longest
    /// (no call in flight) yields to a newcomer, and when none is idle the
    /// newcomer waits. Default 1024.
    pub max_connections: usize,
    /// How long a new connection may take to send its first request head
    /// (the HTTP/2 preface, or a whole HTTP/1.1 head) before it is closed;
    /// also the deadline of every later HTTP/1.1 head, and so how long an
    /// HTTP/1.1 keep-alive connection may stay idle. Default 5 s.
    pub handshake_timeout: Duration,
    /// How long a write may make no progress (the peer reads nothing while
    /// the server has bytes queued) before the connection is closed.
    /// Default 10 s.
    pub write_timeout: Duration,
    /// The memory budget of requests still arriving: the header bytes and
    /// buffered body bytes of every call in intake, over all connections.
    /// Past it, the oldest unfinished intake is refused first, with 44
    /// `API_TOO_MANY_REQUESTS`. Default 64 MiB.
    pub intake_memory: usize,
    /// When set, `errmap.v1.ErrorCatalog` requires a valid token. Health and
    /// reflection stay open. Default none.
    pub auth: Option<AuthInterceptor>,
    /// The catalogs the lookup service answers from and whose statuses the
    /// response layer passes. Default: the auth API's catalog alone. A
    /// [`LiveCatalogs::store`](crate::reload::Reloadable::store) on this
    /// handle (or a clone) while the server runs reloads them: every part
    /// (lookups, the response layer, the HTTP API and pages, reflection,
    /// metrics) reads the new set from its next call on. Make one with
    /// `catalogs.into()`.
    pub catalogs: LiveCatalogs,
    /// TLS (and, with a client CA, mutual TLS); plaintext when `None`, the
    /// default. Reload it with [`TlsConfig::reload`].
    pub tls: Option<TlsConfig>,
    /// Whether browsers' gRPC-Web is served, over HTTP/1.1 and HTTP/2, on
    /// the same port as gRPC (see [`crate::web`]). Off, the server speaks
    /// HTTP/2 only. Default on.
    pub grpc_web: bool,
    /// Whether the Connect protocol's unary calls are served on the same
    /// port (see [`crate::connect`]). Default on.
    pub connect: bool,
    /// The origins whose pages may call the server from a browser (CORS,
    /// see [`crate::web`]); without this no cross-origin access is
    /// granted. Default `None`.
    pub cors: Option<CorsConfig>,
    /// The shape of the HTTP/JSON API's errors when `Accept` does not ask
    /// for RFC 9457 (see [`crate::http_api`]). Default the legacy body.
    pub http_error_format: Shape,
    /// The server's metrics (see [`crate::metrics`]): every call is timed
    /// and counted by method, code and reason. Serve them with
    /// [`crate::admin::serve`]. Default none.
    pub metrics: Option<Metrics>,
    /// The public URL of this server's catalog pages, e.g.
    /// `https://errors.example.com`: every catalog status carries a
    /// `google.rpc.Help` link to `{url}/errors/{NAME}` (the response layer
    /// adds it: [`ErrorLayer::with_help_base_url`]), and RFC 9457's `type` is
    /// that page. Default none.
    pub public_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            grace_period: Duration::from_secs(5),
            drain_delay: Duration::ZERO,
            span_export: None,
            max_concurrent_streams: 256,
            max_request_size: 64 * 1024,
            max_header_list_size: 16 * 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_pending_accept_reset_streams: 100,
            max_local_error_reset_streams: 1024,
            concurrency_limit: 512,
            stream_limit: 128,
            request_body_timeout: Duration::from_secs(10),
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            intake_memory: 64 * 1024 * 1024,
            auth: None,
            catalogs: LiveCatalogs::default(),
            tls: None,
            grpc_web: true,
            connect: true,
            cors: None,
            http_error_format: Shape::Legacy,
            public_url: None,
            metrics: None,
        }
    }
}

/// A setting of [`ServerConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} {problem}")]
pub struct ConfigError {
    /// The setting, named as the `errmap serve` flag that sets it.
    pub setting: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// The longest duration [`ServerConfig`] takes for a timeout, an interval
/// or the grace period: a day.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

impl ServerConfig {
    /// Checks every limit: a zero count or a zero duration would make the
    /// server unusable (no stream, no call, no message) or busy (a ping
    /// loop), so each is refused with the flag that sets it, and so is a
    /// duration over [`MAX_DURATION`] (`Duration::MAX` is no instant from
    /// now). CORS without gRPC-Web is refused too.
    ///
    /// ```
    /// let mut config = errmap_server::server::ServerConfig::default();
    /// assert!(config.validate().is_ok());
    /// config.concurrency_limit = 0;
    /// assert_eq!(
    ///     config.validate().unwrap_err().to_string(),
    ///     "--concurrency-limit must be at least 1"
    /// );
    /// config.concurrency_limit = 1;
    /// config.cors = Some(errmap_server::web::CorsConfig::any_origin());
    /// config.grpc_web = false;
    /// assert!(config.validate().unwrap_err().to_string().starts_with("--cors-allow-origin needs gRPC-Web"));
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |setting, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError {
                    setting,
                    problem: "must be at least 1",
                })
            }
        };
        // Each duration becomes an instant from now (here, in hyper's
        // keep-alive, in tonic's timers), and `Duration::MAX` is no
        // instant: a day is far longer than any of them needs.
        let at_most_a_day = |setting, d: Duration| {
            if d > MAX_DURATION {
                Err(ConfigError {
                    setting,
                    problem: "must be at most a day (24h)",
                })
            } else {
                Ok(())
            }
        };
        let nonzero = |setting, d: Duration| {
            if d.is_zero() {
                Err(ConfigError {
                    setting,
                    problem: "must be longer than zero",
                })
            } else {
                at_most_a_day(setting, d)
            }
        };
        positive("--max-concurrent-streams", self.max_concurrent_streams > 0)?;
        positive("--max-request-size", self.max_request_size > 0)?;
        positive("--max-header-list-size", self.max_header_list_size > 0)?;
        positive("--concurrency-limit", self.concurrency_limit > 0)?;
        positive("--stream-limit", self.stream_limit > 0)?;
        positive("--max-connections", self.max_connections > 0)?;
        nonzero("--keepalive-interval", self.keepalive_interval)?;
        nonzero("--keepalive-timeout", self.keepalive_timeout)?;
        nonzero("--request-body-timeout", self.request_body_timeout)?;
        nonzero("--handshake-timeout", self.handshake_timeout)?;
        nonzero("--write-timeout", self.write_timeout)?;
        positive("--intake-memory", self.intake_memory > 0)?;
        at_most_a_day("--grace-period", self.grace_period)?;
        at_most_a_day("--drain-delay", self.drain_delay)?;
        if self.max_request_size > (u32::MAX as usize) {
            return Err(ConfigError {
                setting: "--max-request-size",
                problem: "must fit a gRPC message length (at most 4 GiB - 1)",
            });
        }
        if self.cors.is_some() && !self.grpc_web {
            return Err(ConfigError {
                setting: "--cors-allow-origin",
                problem: "needs gRPC-Web: browsers cannot call gRPC without it",
            });
        }
        Ok(())
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A setting cannot work.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The transport failed.
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built from the descriptor sets.
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A descriptor set given for the routes is invalid.
    #[error("route setup failed: {0}")]
    Routes(#[from] crate::admission::RouteError),
}

/// The listen backlog [`bind`] asks for (the kernel may cap it, on Linux at
/// `net.core.somaxconn`): room for a burst of new connections while the
/// server is busy or at its connection cap.
pub(crate) const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener on `addr` (port 0 picks a free one), with a backlog of
/// 4,096 connections and `SO_REUSEADDR`.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The errmap server: the lookup service, `grpc.health.v1.Health` and
/// server reflection (`v1` and `v1alpha`), plus any services of yours.
#[derive(Debug)]
pub struct ErrmapServer {
    config: ServerConfig,
    routes: RoutesBuilder,
    services: Vec<&'static str>,
    descriptor_sets: Vec<&'static [u8]>,
    health_listener: Option<TcpListener>,
}

impl ErrmapServer {
    /// A server with `config` and only errmap's own services.
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            routes: RoutesBuilder::default(),
            services: Vec::new(),
            descriptor_sets: Vec::new(),
            health_listener: None,
        }
    }

    /// Serves `grpc.health.v1.Health` alone on `listener` too, in plaintext
    /// HTTP/2, whatever TLS the main port has: Kubernetes' gRPC probes
    /// speak no TLS. It reports what the main port's health reports, and
    /// stops with it. See [`crate::health_port`].
    pub fn with_health_listener(mut self, listener: TcpListener) -> Self {
        self.health_listener = Some(listener);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Adds a service of yours (a tonic-generated `FooServer`) to serve
    /// beside errmap's. Set its `max_decoding_message_size` to
    /// [`ServerConfig::max_request_size`] as errmap's own services do.
    ///
    /// Without its descriptors (see
    /// [`register_encoded_file_descriptor_set`](Self::register_encoded_file_descriptor_set)),
    /// every path under the service counts as served, and every method is
    /// taken to be client-streaming: the call takes a place once its first
    /// message has arrived.
    pub fn add_service<S, B>(mut self, service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        self.services.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Registers the encoded `FileDescriptorSet` of your services: served
    /// by reflection, and used by admission to know each method's kind
    /// (a single-request method takes its place once its whole request has
    /// arrived), its input type (a request that does not decode is 40) and
    /// which paths exist (any other is 43).
    pub fn register_encoded_file_descriptor_set(mut self, set: &'static [u8]) -> Self {
        self.descriptor_sets.push(set);
        self
    }

    /// Serves on `listener` until `shutdown` completes, then shuts down
    /// gracefully:
    ///
    /// 1. health reports NOT_SERVING (and `/readyz` 503); new calls are
    ///    still taken for [`ServerConfig::drain_delay`];
    /// 2. new calls get 49 `API_TRY_AGAIN_LATER` with `RetryInfo`;
    /// 3. the calls in flight finish;
    /// 4. the transport stops accepting and closes the connections.
    ///
    /// Steps 2 to 4 within [`ServerConfig::grace_period`]; calls still
    /// running then are dropped.
    ///
    /// Every call passes the [`ErrorLayer`], the [`Admission`] limits and
    /// the [`CatchPanicLayer`]; every connection the [`listener`] limits.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        self.config.validate()?;
        run(self, listener, shutdown).await
    }
}

/// Serves errmap's own services on `listener` until `shutdown` completes;
/// see [`ErrmapServer::serve`].
pub async fn serve(
    listener: TcpListener,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    ErrmapServer::new(config.clone())
        .serve(listener, shutdown)
        .await
}

/// The full names of the services the encoded descriptor sets define.
fn services_in(sets: &[&[u8]]) -> Vec<String> {
    use prost::Message as _;
    let mut names = Vec::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
            continue;
        };
        for file in set.file {
            for service in &file.service {
                let name = match file.package() {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    names
}

/// What reflection serves besides the catalogs loaded at run time: the
/// descriptor sets of errmap's services and of those added, and the names
/// of the services served.
#[derive(Clone)]
struct Reflection {
    sets: std::sync::Arc<[&'static [u8]]>,
    served: std::sync::Arc<[String]>,
}

impl Reflection {
    /// A reflection builder with errmap's descriptors, the added ones, and
    /// `runtime` (the catalogs loaded at run time), listing the services
    /// served only (a team's catalog file may define others).
    fn builder(&self, runtime: &[&'static [u8]]) -> tonic_reflection::server::Builder<'static> {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_file_descriptor_set(crate::descriptors::google_rpc_descriptor_set())
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Each version lists both reflection services, as both are served.
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            );
        for set in self.sets.iter() {
            builder = builder.register_encoded_file_descriptor_set(set);
        }
        for set in runtime {
            builder = builder.register_encoded_file_descriptor_set(set);
        }
        for name in self.served.iter() {
            builder = builder.with_service_name(name.clone());
        }
        builder
    }
}

/// One descriptor pool of the services served, for the Connect protocol's
/// JSON; a set that does not fit the pool is left out, with a warning.
fn connect_pool(sets: &[&'static [u8]]) -> prost_reflect::DescriptorPool {
    use prost::Message as _;
    let mut pool = prost_reflect::DescriptorPool::new();
    for set in sets {
        let added = prost_types::FileDescriptorSet::decode(*set)
            .map_err(|e| e.to_string())
            .and_then(|set| {
                let missing: Vec<_> = set
                    .file
                    .into_iter()
                    .filter(|f| pool.get_file_by_name(f.name()).is_none())
                    .collect();
                pool.add_file_descriptor_protos(missing)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = added {
            tracing::warn!(error = %e, "a descriptor set is left out of the Connect protocol's JSON");
        }
    }
    pool
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The service every call of a server passes, from CORS down to tonic's
/// router: gRPC-Web, the HTTP API and Connect, metrics, the response layer,
/// admission and the panic guard.
pub(crate) type CallStack = crate::web::Cors<
    crate::web::Web<
        crate::metrics::MetricsService<
            crate::layer::ErrorService<
                crate::admission::AdmissionService<
                    crate::panic::CatchPanic<tonic::service::Routes>,
                >,
            >,
        >,
    >,
>;

/// A server, assembled and not yet serving.
pub(crate) struct Assembled {
    pub(crate) config: ServerConfig,
    /// Every call's service.
    pub(crate) stack: CallStack,
    /// The calls' limits and the drain.
    pub(crate) admission: Admission,
    /// What health reports.
    pub(crate) health: tonic_health::server::HealthReporter,
    /// The plaintext health port, if any; it stops when this is dropped.
    health_port: Option<AbortOnDrop>,
    /// The answer to an HTTP/1.1 head over the header budget.
    pub(crate) oversized_head: bytes::Bytes,
}

/// Builds what `server` serves: its services, their layers, and the parts
/// that its shutdown needs.
pub(crate) async fn assemble(server: ErrmapServer) -> Result<Assembled, ServeError> {
    let ErrmapServer {
        config,
        mut routes,
        services,
        descriptor_sets,
        health_listener,
    } = server;
    let config_owned = config;
    let config = &config_owned;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ErrorCatalogServer<CatalogService>>()
        .await;

    // The services reflection lists: those of errmap's descriptors and of
    // those added, as before catalogs were reloadable; a team's catalog
    // file loaded at run time may define services this server does not
    // serve, and they are not listed.
    let static_sets: Vec<&'static [u8]> = [
        pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]
    .into_iter()
    .chain(descriptor_sets.iter().copied())
    .collect();
    let served = services_in(&static_sets);
    let limit = config.max_request_size;
    let reflection = Reflection {
        sets: descriptor_sets.clone().into(),
        served: served.into(),
    };
    let v1 = reflection.clone();
    let reflection_v1 =
        crate::reflection::LiveReflection::new(config.catalogs.clone(), move |c| {
            let runtime = crate::reflection::runtime_descriptor_sets(c);
            Ok(v1
                .builder(&runtime)
                .build_v1()?
                .max_decoding_message_size(limit))
        })?;
    let v1alpha = reflection;
    let reflection_v1alpha =
        crate::reflection::LiveReflection::new(config.catalogs.clone(), move |c| {
            let runtime = crate::reflection::runtime_descriptor_sets(c);
            Ok(v1alpha
                .builder(&runtime)
                .build_v1alpha()?
                .max_decoding_message_size(limit))
        })?;
    let health_service = health_service.max_decoding_message_size(limit);
    // The plaintext health port, for probes; it stops with this function.
    let health_port = health_listener.map(|listener| {
        AbortOnDrop(tokio::spawn(crate::health_port::serve(
            listener,
            health_service.clone(),
            error_layer(config),
            crate::health_port::HealthPortConfig {
                request_body_timeout: config.request_body_timeout,
                max_request_size: config.max_request_size,
                handshake_timeout: config.handshake_timeout,
                write_timeout: config.write_timeout,
                keepalive_interval: config.keepalive_interval,
                keepalive_timeout: config.keepalive_timeout,
            },
        )))
    });

    let mut table = RouteTable::new();
    for set in static_sets.iter().copied() {
        table.add_descriptors(set)?;
    }
    for name in [
        SERVICE_NAME,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    .into_iter()
    .chain(services.iter().copied())
    {
        table.add_service(name);
    }

    let catalog = CatalogService::with_live_catalogs(config.catalogs.clone())
        .into_server()
        .max_decoding_message_size(limit);
    match &config.auth {
        Some(auth) => {
            routes.add_service(tonic::service::interceptor::InterceptedService::new(
                catalog,
                auth.clone(),
            ));
        }
        None => {
            routes.add_service(catalog);
        }
    }
    let methods: Vec<String> = table.method_paths().map(str::to_owned).collect();
    let admission = Admission::with_config(AdmissionConfig {
        concurrency_limit: config.concurrency_limit,
        stream_limit: config.stream_limit,
        max_request_size: config.max_request_size,
        request_body_timeout: config.request_body_timeout,
        intake_memory: config.intake_memory,
        routes: Some(table),
        ..AdmissionConfig::default()
    });

    routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let metrics_layer = match &config.metrics {
        Some(metrics) => {
            metrics.attach(
                methods,
                &config.catalogs,
                admission.clone(),
                config.auth.clone(),
            );
            metrics.layer()
        }
        None => MetricsLayer::tracing_only(),
    };
    let metrics_layer = match &config.span_export {
        Some(recorder) => metrics_layer.exporting(recorder.clone()),
        None => metrics_layer,
    };
    let mut http_errors = HttpErrors::with_live_catalogs(config.catalogs.clone())
        .with_default_shape(config.http_error_format);
    if let Some(url) = &config.public_url {
        http_errors = http_errors.with_public_url(url.clone());
    }
    // An HTTP/1.1 head over the header budget: 431, with the catalog's 40
    // in the configured JSON shape.
    let oversized = http_errors.response_for(
        &errmap::ErrorCode::ApiInvalidRequest.to_status(),
        &http::HeaderMap::new(),
    );
    let content_type = oversized
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let oversized_head =
        listener::oversized_head_response(&content_type, oversized.body().as_bytes());
    let cors = match &config.cors {
        Some(cors) => cors.layer(),
        None => CorsLayer::disabled(),
    };
    let mut web = if config.grpc_web {
        WebLayer::new()
    } else {
        WebLayer::disabled()
    }
    .with_http_api(HttpApi::with_live_catalogs(
        config.catalogs.clone(),
        http_errors,
    ));
    if config.connect {
        web = web.with_connect(crate::connect::ConnectApi::new(
            &connect_pool(&static_sets),
            crate::connect::ConnectLimits {
                max_request_size: config.max_request_size,
                body_timeout: config.request_body_timeout,
                intake_memory: config.intake_memory,
            },
            config.catalogs.clone(),
        ));
    }
    let stack = tower::ServiceBuilder::new()
        .layer(cors)
        .layer(web)
        .layer(metrics_layer)
        .layer(error_layer(config))
        .layer(admission.layer())
        .layer(CatchPanicLayer::new())
        .service(routes.routes().prepare());
    Ok(Assembled {
        config: config_owned,
        stack,
        admission,
        health,
        health_port,
        oversized_head,
    })
}

async fn run(
    server: ErrmapServer,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let Assembled {
        config,
        stack,
        admission,
        health,
        health_port: _health_port,
        oversized_head,
    } = assemble(server).await?;
    let config = &config;
    let incoming = listener::incoming(
        listener,
        ListenerConfig {
            max_connections: config.max_connections,
            handshake_timeout: config.handshake_timeout,
            write_timeout: config.write_timeout,
            oversized_head_response: oversized_head,
            tls: config.tls.clone(),
        },
    );
    let protocol = ProtocolConfig {
        // Browsers' gRPC-Web may come over HTTP/1.1.
        http1: config.grpc_web,
        http2: true,
        head_timeout: config.handshake_timeout,
        max_header_size: config.max_header_list_size,
        max_concurrent_streams: config.max_concurrent_streams,
        keepalive_interval: config.keepalive_interval,
        keepalive_timeout: config.keepalive_timeout,
        max_pending_accept_reset_streams: config.max_pending_accept_reset_streams,
        max_local_error_reset_streams: config.max_local_error_reset_streams,
        max_frame_size: 16 * 1024,
    };

    // Memory a flood took is given back once the server is quiet again.
    let trimmer = AbortOnDrop(tokio::spawn(crate::memory::trim_when_quiet(
        admission.clone(),
        incoming.places(),
    )));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = connections::serve(incoming, &protocol, stack, async {
        let _ = stop_rx.await;
    });
    tokio::pin!(server);
    tokio::select! {
        () = &mut server => return Ok(()),
        () = shutdown => {}
    }

    // Health says NOT_SERVING at once, so that probes and load balancers
    // stop sending calls; new calls are still taken for the drain delay,
    // while they do.
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_not_serving::<ErrorCatalogServer<CatalogService>>()
        .await;
    admission.announce_stop();
    if !config.drain_delay.is_zero() {
        tracing::info!(
            drain_delay_ms = config.drain_delay.as_millis() as u64,
            "stopping: NOT_SERVING, taking new calls for the drain delay"
        );
        tokio::select! {
            () = &mut server => return Ok(()),
            () = tokio::time::sleep(config.drain_delay) => {}
        }
    }
    tracing::info!(
        grace_period_ms = config.grace_period.as_millis() as u64,
        in_flight = admission.in_flight(),
        "shutting down: NOT_SERVING, refusing new calls, finishing those in flight"
    );
    let deadline = tokio::time::Instant::now() + config.grace_period;
    admission.begin_drain();
    if tokio::time::timeout_at(deadline, admission.drained())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = admission.in_flight(),
            "grace period over while calls were still in flight"
        );
    }
    let _ = stop_tx.send(());

    let stopped = tokio::time::timeout_at(deadline, server).await;
    drop(trimmer);
    match stopped {
        Ok(()) => Ok(()),
        Err(_) => {
            tracing::warn!("grace period over; dropping the connections still open");
            Ok(())
        }
    }
}

/// The response layer of `config`: its catalogs, and the links to the
/// catalog pages at its public URL.
fn error_layer(config: &ServerConfig) -> ErrorLayer {
    let layer = ErrorLayer::new().with_live_catalogs(config.catalogs.clone());
    match &config.public_url {
        Some(url) => layer.with_help_base_url(url),
        None => layer,
    }
}
