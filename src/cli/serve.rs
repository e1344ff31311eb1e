//! `errmap serve`: its flags, the server assembly, reloads on SIGHUP,
//! and the shutdown signals.

use std::{
    io::IsTerminal as _, io::Write as _, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration,
};

use clap::Args;
use errmap_server::{
    auth::{AuthInterceptor, JwtVerifier, ReloadableVerifier},
    otlp::{TraceExport, TraceExportConfig},
    sanitize,
    server::{self, ServerConfig},
    tls::TlsConfig,
    web::CorsConfig,
};

use super::{
    args::{parse_addr, parse_duration, parse_size},
    exit::{Failure, Outcome},
    reload::{CatalogReloader, Trigger},
    runtime,
};

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (an IP or a host name such as localhost, and a
    /// port); port 0 picks a free port. The bound address is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:50051", value_parser = parse_addr, value_name = "HOST:PORT")]
    addr: SocketAddr,
    /// How long in-flight calls may finish after SIGINT or SIGTERM (e.g. 5s, 500ms),
    /// counted from the end of --drain-delay.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    grace_period: Duration,
    /// After SIGINT or SIGTERM, how long to keep taking new calls while health
    /// already says NOT_SERVING (and /readyz 503), before refusing them and
    /// draining: the time a load balancer or Kubernetes takes to stop sending.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    drain_delay: Duration,
    /// Calls one connection may have open at once.
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_concurrent_streams: u32,
    /// Largest request message accepted, in bytes.
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES")]
    max_request_size: usize,
    /// How often idle connections are pinged.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    keepalive_timeout: Duration,
    /// Calls running at once over all connections; more get 44 API_TOO_MANY_REQUESTS.
    /// A call takes its place only once its request has arrived.
    #[arg(long, default_value_t = 512, value_name = "N")]
    concurrency_limit: usize,
    /// Long-lived streams (health Watch, reflection) open at once; more get 44.
    #[arg(long, default_value_t = 128, value_name = "N")]
    stream_limit: usize,
    /// How long a request may take to arrive before it is answered with 40.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    request_body_timeout: Duration,
    /// Connections open at once. At the cap the connection idle longest yields
    /// to a newcomer (GOAWAY on HTTP/2, a close on HTTP/1.1); a connection with
    /// a call in flight is never evicted.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    max_connections: usize,
    /// How long a new connection may take to send its first request head (the
    /// HTTP/2 preface, or a whole HTTP/1.1 head) before it is closed; also the
    /// deadline of every HTTP/1.1 head, and so an HTTP/1.1 keep-alive's idle time.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    handshake_timeout: Duration,
    /// How long a write may make no progress (the peer reads nothing while bytes
    /// are queued) before the connection is closed; on the admin port too.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    write_timeout: Duration,
    /// The memory budget of requests still arriving (headers and buffered bodies
    /// of every call in intake), in bytes or with KiB, MiB or GiB. Past it the
    /// oldest unfinished intake is refused first, with 44 API_TOO_MANY_REQUESTS.
    #[arg(long, default_value = "64MiB", value_parser = parse_size, value_name = "SIZE")]
    intake_memory: usize,
    /// Require an HS256 JWT for errmap.v1.ErrorCatalog, signed with the secret in
    /// this file (at least 32 bytes; a trailing newline is ignored). Health and
    /// reflection stay open. Needs --auth-audience or --auth-allow-any-audience.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["auth_jwt_public_key_file", "auth_jwks_file"])]
    auth_jwt_secret_file: Option<PathBuf>,
    /// Require an RS256 or ES256 JWT for errmap.v1.ErrorCatalog, checked with the
    /// RSA or EC P-256 public key in this PEM file.
    #[arg(long, value_name = "PATH", conflicts_with = "auth_jwks_file")]
    auth_jwt_public_key_file: Option<PathBuf>,
    /// Require an RS256 or ES256 JWT checked with the key of this RFC 7517 JSON
    /// Web Key Set that the token's `kid` names. SIGHUP re-reads the file (and
    /// any other key file), so keys can be added and removed without a restart.
    #[arg(long, value_name = "PATH")]
    auth_jwks_file: Option<PathBuf>,
    /// With a JWT option: the required `iss` claim.
    #[arg(long, value_name = "ISSUER")]
    auth_issuer: Option<String>,
    /// With a JWT option: the required `aud` claim. Required, unless
    /// --auth-allow-any-audience says otherwise.
    #[arg(long, value_name = "AUDIENCE")]
    auth_audience: Option<String>,
    /// With a JWT option: accept tokens whatever their `aud` claim, e.g. when the
    /// issuer sets none. Tokens minted for another service are then accepted too.
    #[arg(long, conflicts_with = "auth_audience")]
    auth_allow_any_audience: bool,
    /// With a JWT option: how far past `exp` a token is still accepted.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    auth_leeway: Duration,
    /// Serve TLS with this certificate chain (PEM), HTTP/2 through ALPN. SIGHUP
    /// re-reads it, with the key and the client CA.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Also serve the catalogs of this FileDescriptorSet (repeatable); made with
    /// `protoc --include_imports --descriptor_set_out` or `buf build -o`.
    /// SIGHUP, and any change to the file (a write, a rename over it, a
    /// ConfigMap's `..data` swap), reload every set; a file that does not
    /// load keeps the running catalogs.
    #[arg(long = "catalog", value_name = "SET.binpb")]
    catalogs: Vec<PathBuf>,
    /// Do not serve the embedded catalog; the first --catalog becomes the default.
    #[arg(long, requires = "catalogs")]
    no_default_catalog: bool,
    /// Refuse a catalog reload that breaks clients (as `errmap check` finds:
    /// a code gone or renamed, a gRPC code, HTTP status or domain changed, a
    /// placeholder removed); without it such a reload is applied and logged
    /// as a warning with the findings.
    #[arg(long, requires = "catalogs")]
    refuse_breaking_reload: bool,
    /// Let pages of this origin call the server from a browser, with gRPC-Web
    /// (repeatable; `*` for any origin): CORS allows the gRPC-Web request
    /// headers and exposes grpc-status, grpc-message and grpc-status-details-bin.
    /// Without it, no cross-origin access is granted.
    #[arg(
        long = "cors-allow-origin",
        value_name = "ORIGIN",
        conflicts_with = "no_grpc_web"
    )]
    cors_allow_origins: Vec<String>,
    /// Serve gRPC only, over HTTP/2: no gRPC-Web, no HTTP/1.1.
    #[arg(long)]
    no_grpc_web: bool,
    /// Do not serve the Connect protocol's unary calls (POST in
    /// application/proto or application/json, GET for lookups).
    #[arg(long)]
    no_connect: bool,
    /// The shape of the HTTP/JSON API's errors when Accept does not ask for
    /// application/problem+json: legacy ({"v", "error": {...}}), google (AIP-193)
    /// or problem (RFC 9457).
    #[arg(long, default_value = "legacy", value_parser = ["legacy", "google", "problem"])]
    http_error_format: String,
    /// The log format on stderr: text, or json (one object per line: time,
    /// level, message, the call's span fields).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Serve GET /metrics (Prometheus text; OpenMetrics when asked), /healthz and
    /// /readyz on this address, apart from the gRPC port. Its bound address is
    /// printed as the second line of stdout.
    #[arg(long, value_name = "HOST:PORT")]
    admin_addr: Option<SocketAddr>,
    /// Serve grpc.health.v1.Health alone, in plaintext HTTP/2, on this address
    /// too, for probes that speak no TLS (Kubernetes' gRPC probes). Its bound
    /// address is printed on stdout after the others.
    #[arg(long, value_name = "HOST:PORT")]
    health_addr: Option<SocketAddr>,
    /// Export every call's span over OTLP/gRPC to this collector (e.g.
    /// http://otel-collector:4317): service.name=errmap, the RPC attributes,
    /// the catalog reason and domain, parented on the caller's traceparent.
    /// Off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// With --otlp-endpoint: finished spans queued for export at most; past it
    /// they are dropped (and counted in /metrics), so that a slow or absent
    /// collector never slows calls down nor grows memory.
    #[arg(
        long,
        default_value_t = 2048,
        value_name = "N",
        requires = "otlp_endpoint"
    )]
    otlp_queue: usize,
    /// With --otlp-endpoint: the share of calls exported, from 0 to 1, for calls
    /// without a caller's traceparent (a traceparent's sampled flag decides for
    /// the others).
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "RATIO",
        requires = "otlp_endpoint"
    )]
    otlp_sample_ratio: f64,
    /// With --otlp-endpoint: compress exports (gzip) or not (none).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_COMPRESSION",
        default_value = "none",
        value_parser = ["none", "gzip"],
        requires = "otlp_endpoint"
    )]
    otlp_compression: String,
    /// The public URL of this server's catalog pages (e.g.
    /// `https://errors.example.com`): every error links to URL/errors/NAME.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
}

impl ServeArgs {
    /// The JWT verifier the flags ask for, if any.
    fn verifier(&self) -> Result<Option<JwtVerifier>, String> {
        if let Some(path) = &self.auth_jwks_file {
            let json =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let verifier =
                JwtVerifier::from_jwks(&json).map_err(|e| format!("{}: {e}", path.display()))?;
            return self.finish(verifier).map(Some);
        }
        let verifier = match (&self.auth_jwt_secret_file, &self.auth_jwt_public_key_file) {
            (Some(path), _) => {
                let mut secret = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                while matches!(secret.last(), Some(b'\n' | b'\r')) {
                    secret.pop();
                }
                JwtVerifier::try_hs256(&secret).map_err(|e| format!("{}: {e}", path.display()))?
            }
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                JwtVerifier::from_public_key_pem(&pem)
                    .map_err(|e| format!("{}: {e}", path.display()))?
            }
            (None, None) => {
                if self.auth_issuer.is_some()
                    || self.auth_audience.is_some()
                    || self.auth_allow_any_audience
                {
                    return Err(
                        "--auth-issuer, --auth-audience and --auth-allow-any-audience need \
                         --auth-jwt-secret-file, --auth-jwt-public-key-file or --auth-jwks-file"
                            .to_owned(),
                    );
                }
                return Ok(None);
            }
        };
        self.finish(verifier).map(Some)
    }

    /// The audience, issuer and leeway flags applied to `verifier`.
    fn finish(&self, verifier: JwtVerifier) -> Result<JwtVerifier, String> {
        if self.auth_audience.is_none() && !self.auth_allow_any_audience {
            return Err(
                "--auth-audience is required with a JWT key, so that tokens minted for \
                        another service are refused (or pass --auth-allow-any-audience to accept \
                        any audience)"
                    .to_owned(),
            );
        }
        let mut verifier = verifier.with_leeway(self.auth_leeway);
        if let Some(issuer) = &self.auth_issuer {
            verifier = verifier.with_issuer(issuer);
        }
        if let Some(audience) = &self.auth_audience {
            verifier = verifier.with_audience(audience);
        }
        Ok(verifier)
    }
}

/// `--public-url`: an absolute http(s) URL without query or fragment,
/// returned without a trailing slash.
pub(crate) fn check_public_url(url: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    let uri: tonic::codegen::http::Uri = url
        .parse()
        .map_err(|e| format!("--public-url {url:?}: not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "--public-url {url:?}: give an absolute http:// or https:// URL, e.g. https://errors.example.com"
        ));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!("--public-url {url:?}: no query or fragment"));
    }
    Ok(url.to_owned())
}

pub(crate) fn serve(args: ServeArgs) -> Outcome {
    let verifier = match args.verifier() {
        Ok(verifier) => verifier,
        Err(e) => {
            return Err(Failure::BadInput(e.to_string()));
        }
    };

    let mut config = ServerConfig::default();
    config.addr = args.addr;
    config.grace_period = args.grace_period;
    config.drain_delay = args.drain_delay;
    config.max_concurrent_streams = args.max_concurrent_streams;
    config.max_request_size = args.max_request_size;
    config.keepalive_interval = args.keepalive_interval;
    config.keepalive_timeout = args.keepalive_timeout;
    config.concurrency_limit = args.concurrency_limit;
    config.stream_limit = args.stream_limit;
    config.request_body_timeout = args.request_body_timeout;
    config.max_connections = args.max_connections;
    config.handshake_timeout = args.handshake_timeout;
    config.write_timeout = args.write_timeout;
    config.intake_memory = args.intake_memory;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            match TlsConfig::from_files(cert, key, args.tls_client_ca.as_ref()) {
                Ok(tls) => Some(tls),
                Err(e) => return Err(Failure::BadInput(e.to_string().to_string())),
            }
        }
        _ => None,
    };
    config.tls = tls.clone();
    let keys = verifier.map(|v| Arc::new(ReloadableVerifier::new(v)));
    config.auth = keys.clone().map(|keys| AuthInterceptor::from_arc(keys));
    let reloader = match CatalogReloader::start(
        args.catalogs.clone(),
        args.no_default_catalog,
        args.refuse_breaking_reload,
    ) {
        Ok(reloader) => Arc::new(reloader),
        Err(e) => return Err(Failure::BadInput(e)),
    };
    config.catalogs = reloader.catalogs();
    config.grpc_web = !args.no_grpc_web;
    config.connect = !args.no_connect;
    let admin_addr = args.admin_addr;
    let health_addr = args.health_addr;
    if admin_addr.is_some() {
        config.metrics = Some(errmap_server::metrics::Metrics::new());
    }
    config.http_error_format =
        errmap_server::http_error::Shape::from_name(&args.http_error_format).unwrap_or_default();
    if let Some(url) = &args.public_url {
        match check_public_url(url) {
            Ok(url) => config.public_url = Some(url),
            Err(e) => return Err(Failure::BadInput(e.to_string())),
        }
    }
    if !args.cors_allow_origins.is_empty() {
        config.cors = match CorsConfig::new(&args.cors_allow_origins) {
            Ok(cors) => Some(cors),
            Err(e) => return Err(Failure::BadInput(e.to_string().to_string())),
        };
    }
    let cors_origins = args.cors_allow_origins.join(" ");
    if let Err(e) = config.validate() {
        return Err(Failure::BadInput(e.to_string()));
    }
    let auth_on = config.auth.is_some();
    // Spans over OTLP: the export's task starts in the runtime.
    let mut export = match &args.otlp_endpoint {
        Some(endpoint) => {
            let mut otlp = TraceExportConfig::new(endpoint.clone());
            otlp.queue = args.otlp_queue;
            otlp.sample_ratio = args.otlp_sample_ratio;
            otlp.gzip = args.otlp_compression == "gzip";
            let counters = config
                .metrics
                .as_ref()
                .map(|m| m.trace_export_counters())
                .unwrap_or_default();
            match TraceExport::new(otlp, counters) {
                Ok(export) => Some(export),
                Err(e) => return Err(Failure::BadInput(e.to_string())),
            }
        }
        None => None,
    };
    config.span_export = export.as_ref().map(TraceExport::recorder);
    // Dependencies log through `log` (rustls names a peer's SNI at WARN on
    // every hello): their records reach the log rate-limited and cut.
    errmap_server::sanitize::install_log_bridge();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_format == "json" {
        // One object per line: timestamp, level, fields (the message), and
        // the fields of the call's span.
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        // Colours only for a person at a terminal: never escape codes in a
        // log file.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init();
    }

    runtime().block_on(async move {
        if let Some(export) = export.as_mut() {
            if let Err(e) = export.start() {
                return Err(Failure::BadInput(e.to_string()));
            }
        }
        let shutdown = shutdown_signal();
        if !args.catalogs.is_empty() {
            reloader.clone().watch();
        }
        reload_on_sighup(args, keys, tls, reloader);
        let listener = match server::bind(config.addr).await {
            Ok(listener) => listener,
            Err(e) => {
                return Err(Failure::Failed(format!("cannot listen on {}: {e}", config.addr)));
            }
        };
        let bound = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => {
                return Err(Failure::Failed(format!("{e}")));
            }
        };
        let admin = bind_optional("--admin-addr", admin_addr).await?;
        let health_port = bind_optional("--health-addr", health_addr).await?;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{bound}");
        for (listener, what) in [
            (&admin, "admin: /metrics, /healthz, /readyz"),
            (&health_port, "health: grpc.health.v1.Health in plaintext, for probes"),
        ] {
            if let Some(listener) = listener {
                let addr = listener
                    .local_addr()
                    .map_err(|e| Failure::Failed(format!("{e}")))?;
                let _ = writeln!(stdout, "{addr}");
                tracing::info!(%addr, "{what}");
            }
        }
        let _ = stdout.flush();
        drop(stdout);
        if let (Some(admin), Some(metrics)) = (admin, config.metrics.clone()) {
            tokio::spawn(errmap_server::admin::serve(admin, metrics, std::future::pending()));
        }
        if !bound.ip().is_loopback() && config.tls.is_none() {
            tracing::warn!(
                %bound,
                "listening beyond loopback without TLS: tokens and errors travel in clear text; \
                 pass --tls-cert and --tls-key (or keep --addr on 127.0.0.1 behind a proxy that ends TLS)"
            );
        }
        tracing::info!(
            %bound,
            auth = auth_on,
            cors = %sanitize::escape(&cors_origins),
            "serving errmap.v1.ErrorCatalog, health and reflection, over gRPC and gRPC-Web"
        );
        let mut server = errmap_server::server::ErrmapServer::new(config);
        if let Some(health_port) = health_port {
            server = server.with_health_listener(health_port);
        }
        let served = server.serve(listener, shutdown).await;
        if let Some(export) = export {
            // The spans of the last calls, if the collector takes them soon.
            export.shutdown(Duration::from_secs(2)).await;
        }
        match served {
            Ok(()) => {
                tracing::info!("stopped");
                Ok(())
            }
            Err(e) => {
                Err(Failure::Failed(format!("{e}")))
            }
        }
    })
}

/// A listener on `addr`, when the flag `flag` gave one.
async fn bind_optional(
    flag: &str,
    addr: Option<SocketAddr>,
) -> Result<Option<tokio::net::TcpListener>, Failure> {
    match addr {
        Some(addr) => server::bind(addr)
            .await
            .map(Some)
            .map_err(|e| Failure::Failed(format!("cannot listen on {flag} {addr}: {e}"))),
        None => Ok(None),
    }
}

/// On every SIGHUP, re-reads the TLS files, the JWT key files and the
/// catalog files the flags name and, where they are valid, makes them what
/// new connections and calls use; what does not load is kept as it was, and
/// the log says why.
pub(crate) fn reload_on_sighup(
    args: ServeArgs,
    keys: Option<Arc<ReloadableVerifier<JwtVerifier>>>,
    tls: Option<TlsConfig>,
    catalogs: Arc<CatalogReloader>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; nothing will be reloaded");
            return;
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                if !args.catalogs.is_empty() {
                    let catalogs = catalogs.clone();
                    let _ =
                        tokio::task::spawn_blocking(move || catalogs.reload(Trigger::Signal)).await;
                }
                if let Some(tls) = &tls {
                    match tls.reload() {
                        Ok(()) => {
                            tracing::info!("SIGHUP: TLS certificate, key and client CA reloaded")
                        }
                        Err(error) => tracing::warn!(
                            error = %errmap_server::sanitize::escape(&error.to_string()),
                            "SIGHUP: TLS material not reloaded; the old material stays"
                        ),
                    }
                }
                let Some(keys) = &keys else { continue };
                match args.verifier() {
                    Ok(Some(verifier)) => {
                        let kids: Vec<&str> = verifier.key_ids().collect();
                        tracing::info!(kids = ?kids, "SIGHUP: JWT keys reloaded");
                        keys.replace(verifier);
                    }
                    Ok(None) => {}
                    Err(error) => tracing::warn!(
                        error = %errmap_server::sanitize::escape(&error),
                        "SIGHUP: JWT keys not reloaded; the old keys stay"
                    ),
                }
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (args, keys, tls, catalogs);
    }
}

/// Registers the SIGINT and SIGTERM handlers now, so that a signal sent
/// right after the address is printed is a graceful shutdown, not a kill;
/// the future completes on either signal.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
