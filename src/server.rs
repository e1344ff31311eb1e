//! The errmap server: the lookup service, health and reflection on one
//! socket, with explicit transport limits and a bounded graceful shutdown.
//!
//! ```no_run
//! use errmap::server::{self, ErrmapServer, ServerConfig};
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

use tokio::net::TcpListener;
use tonic::{
    body::Body, codegen::Service, server::NamedService, service::RoutesBuilder,
    transport::server::TcpIncoming,
};
use tonic_health::ServingStatus;

use crate::{
    admission::Admission,
    auth::AuthInterceptor,
    layer::ErrorLayer,
    pb::{self, error_catalog_server::ErrorCatalogServer},
    service::CatalogService,
};

/// The name the lookup service is registered under, for health checks.
pub const SERVICE_NAME: &str = "errmap.v1.ErrorCatalog";

/// How the server listens and what it allows. `Default` gives the values
/// `errmap serve` starts with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free port. Default `127.0.0.1:50051`.
    pub addr: SocketAddr,
    /// How long in-flight calls may run on after a shutdown signal before
    /// they are dropped. Default 5 s.
    pub grace_period: Duration,
    /// Streams (calls) one HTTP/2 connection may have open at once. Default
    /// 256.
    pub max_concurrent_streams: u32,
    /// Largest request message accepted, in bytes; larger ones fail with
    /// 40 `API_INVALID_REQUEST`. Default 64 KiB.
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
    /// Calls in flight at once, over all connections (health and reflection
    /// not counted); more are answered at once with 44
    /// `API_TOO_MANY_REQUESTS`. Default 512.
    pub concurrency_limit: usize,
    /// When set, `errmap.v1.ErrorCatalog` requires a valid token. Health and
    /// reflection stay open. Default none.
    pub auth: Option<AuthInterceptor>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            grace_period: Duration::from_secs(5),
            max_concurrent_streams: 256,
            max_request_size: 64 * 1024,
            max_header_list_size: 16 * 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_pending_accept_reset_streams: 100,
            max_local_error_reset_streams: 1024,
            concurrency_limit: 512,
            auth: None,
        }
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The transport failed.
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built from the descriptor sets.
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Binds a listener on `addr` (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The errmap server: the lookup service, `grpc.health.v1.Health` and
/// server reflection (`v1` and `v1alpha`), plus any services of yours.
#[derive(Debug)]
pub struct ErrmapServer {
    config: ServerConfig,
    routes: RoutesBuilder,
}

impl ErrmapServer {
    /// A server with `config` and only errmap's own services.
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            routes: RoutesBuilder::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Adds a service of yours (a tonic-generated `FooServer`) to serve
    /// beside errmap's.
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
        self.routes.add_service(service);
        self
    }

    /// Serves on `listener` until `shutdown` completes, then shuts down
    /// gracefully:
    ///
    /// 1. health reports NOT_SERVING, and new calls get 49
    ///    `API_TRY_AGAIN_LATER` with `RetryInfo`;
    /// 2. the calls in flight finish;
    /// 3. the transport stops accepting and closes the connections.
    ///
    /// All of it within [`ServerConfig::grace_period`]; calls still running
    /// then are dropped.
    ///
    /// Every call passes the [`ErrorLayer`] and
    /// the [`Admission`] limit.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        run(self.config, self.routes, listener, shutdown).await
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

async fn run(
    config: ServerConfig,
    mut routes: RoutesBuilder,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let config = &config;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ErrorCatalogServer<CatalogService>>()
        .await;

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(pb::rpc::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Each version lists both reflection services, as both are served.
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let catalog = CatalogService::new()
        .into_server()
        .max_decoding_message_size(config.max_request_size);
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
    let admission = Admission::new(config.concurrency_limit);

    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(config.keepalive_interval));

    routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_max_header_list_size(config.max_header_list_size)
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .http2_max_pending_accept_reset_streams(Some(config.max_pending_accept_reset_streams))
        .http2_max_local_error_reset_streams(Some(config.max_local_error_reset_streams))
        .max_frame_size(16 * 1024)
        .layer(
            tower::ServiceBuilder::new()
                .layer(ErrorLayer::new())
                .layer(admission.layer())
                .into_inner(),
        )
        .add_routes(routes.routes());

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = router.serve_with_incoming_shutdown(incoming, async {
        let _ = stop_rx.await;
    });
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => return Ok(result?),
        () = shutdown => {}
    }

    tracing::info!(
        grace_period_ms = config.grace_period.as_millis() as u64,
        in_flight = admission.in_flight(),
        "shutting down: NOT_SERVING, refusing new calls, finishing those in flight"
    );
    let deadline = tokio::time::Instant::now() + config.grace_period;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_not_serving::<ErrorCatalogServer<CatalogService>>()
        .await;
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

    match tokio::time::timeout_at(deadline, server).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::warn!("grace period over; dropping the connections still open");
            Ok(())
        }
    }
}
