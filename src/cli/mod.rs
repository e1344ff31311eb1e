//! The command-line interface of the `errmap` binary.

use std::sync::Arc;
use std::{
    io::IsTerminal as _, io::Write as _, net::SocketAddr, path::PathBuf, process::ExitCode,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use tonic::metadata::{Ascii, MetadataValue};

use errmap::{
    catalog::{CatalogEntry, CatalogTable},
    catalog_set::{self, Catalogs},
    grpc_code_name,
    pb::{self, get_error_request::Key},
    Catalog, ErrorCode, ErrorDetails, ErrorStatusExt,
};
use errmap_server::{
    auth::{AuthInterceptor, JwtVerifier, ReloadableVerifier},
    sanitize,
    server::{self, ServerConfig},
    tls::TlsConfig,
    web::CorsConfig,
};

mod exit;

use exit::{Failure, Outcome};

#[derive(Debug, Parser)]
#[command(
    name = "errmap",
    version,
    about = "One error catalog for gRPC: serve it, look codes up, decode error details.",
    long_about = "errmap keeps an HTTP API's error codes when it moves to gRPC. Each code \
                  travels as a standard google.rpc.ErrorInfo (reason = the code's name) \
                  inside grpc-status-details-bin.\n\n\
                  Exit codes: 0 found / done, 1 not found, 2 bad usage or input, \
                  3 server unreachable or failed.",
    after_help = "Examples:\n  errmap serve\n  errmap lookup 21\n  errmap lookup AUTH_EXPIRED_TOKEN --json\n  \
                  errmap list --category auth_token\n  errmap decode CBASKhZ..."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gRPC server: the lookup service, health and reflection.
    Serve(Box<ServeArgs>),
    /// Show what a code means, from the embedded catalog or a server.
    Lookup {
        /// The code, by number (21) or by name (AUTH_REQUIRED; case does not matter).
        #[arg(allow_negative_numbers = true)]
        code: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Ask a running server instead: http://HOST:PORT, or HOST:PORT.
        #[arg(long, value_name = "URL", conflicts_with = "catalog")]
        server: Option<String>,
        /// Also show the message in this language (e.g. ru, ru-RU), from the
        /// catalog's translations; with --server, sent as `accept-language`
        /// and answered by the server.
        #[arg(long, value_name = "LANG")]
        lang: Option<String>,
        #[command(flatten)]
        tls: ClientTlsArgs,
        /// With --server: a token to send as `authorization: Bearer`, for a
        /// server that requires one.
        #[arg(
            long,
            env = "ERRMAP_TOKEN",
            hide_env_values = true,
            value_name = "TOKEN",
            requires = "server"
        )]
        token: Option<String>,
        /// With --server: retry a call the server asks to retry (42, 44, 49,
        /// and UNAVAILABLE) up to N times, after the delay it gives.
        #[arg(long, value_name = "N", default_value_t = 2, requires = "server")]
        retries: u32,
        #[command(flatten)]
        source: CatalogArgs,
    },
    /// List the catalog, optionally one category.
    List {
        /// Only this category, e.g. auth_token.
        #[arg(long, value_name = "C")]
        category: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        source: CatalogArgs,
    },
    /// Print the catalog as Markdown (the shape of docs/errors.md).
    Docs {
        /// The messages in this language (e.g. ru, ru-RU) instead of English;
        /// `errmap docs --lang ru` is docs/errors.ru.md.
        #[arg(long, value_name = "LANG")]
        lang: Option<String>,
        #[command(flatten)]
        source: CatalogArgs,
    },
    /// Decode a grpc-status-details-bin value (base64, padded or not).
    Decode {
        /// The header value; a leading "grpc-status-details-bin:" is ignored.
        value: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// How `lookup --server https://...` checks the server and shows itself.
#[derive(Debug, Args)]
struct ClientTlsArgs {
    /// With an https:// server: the private CA (PEM) that signed its
    /// certificate. Without it, the system's trusted roots are used.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// With an https:// server that wants one: the client certificate (PEM).
    #[arg(long, value_name = "PEM", requires = "key")]
    cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "PEM", requires = "cert")]
    key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The TLS settings for `url`, or `None` for http://.
    fn config(&self, url: &str) -> Result<Option<tonic::transport::ClientTlsConfig>, String> {
        if !url.starts_with("https://") {
            if self.ca.is_some() || self.cert.is_some() {
                return Err("--ca, --cert and --key need an https:// server".to_owned());
            }
            return Ok(None);
        }
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        // A private CA with --ca; otherwise the system's trusted roots.
        let mut config = match &self.ca {
            Some(ca) => tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?)),
            None => tonic::transport::ClientTlsConfig::new().with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            config = config.identity(tonic::transport::Identity::from_pem(
                read(cert)?,
                read(key)?,
            ));
        }
        Ok(Some(config))
    }
}

/// What a plaintext HTTP/2 client sees when the port speaks TLS: the TLS
/// server answers the preface with an alert (read as a frame of a bad
/// size) or closes the connection.
const PLAINTEXT_ON_TLS: [&str; 4] = [
    "frame with invalid size",
    "Broken pipe",
    "broken pipe",
    "Connection reset by peer",
];
const PLAINTEXT_ON_TLS_HINT: &str =
    "the server closed the connection; if it serves TLS at that address, use https://";

/// A connection failure in words, each cause once: the TLS causes a user
/// can fix, named; `plaintext` is whether the URL was `http://`.
fn connect_failure(error: &dyn std::error::Error, plaintext: bool) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // Many errors print their source in their own text too
        // ("tcp connect error: tcp connect error: ..."): say each once.
        let text = cause.to_string();
        if !chain.contains(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        source = cause.source();
    }
    let cause = if chain.contains("UnknownIssuer") || chain.contains("unknown issuer") {
        "the server's certificate is not signed by a trusted CA (give a private one with --ca)"
    } else if chain.contains("NotValidForName") || chain.contains("not valid for name") {
        "the server's certificate is not valid for the host name in the URL"
    } else if chain.contains("CertificateRequired") || chain.contains("certificate required") {
        "the server wants a client certificate: pass --cert and --key"
    } else if chain.contains("BadCertificate")
        || chain.contains("UnknownCA")
        || chain.contains("DecryptError")
    {
        "the server refused the client certificate"
    } else if chain.contains("InvalidContentType") || chain.contains("CorruptMessage") {
        "the server does not speak TLS at that address (try http://)"
    } else if plaintext && PLAINTEXT_ON_TLS.iter().any(|sign| chain.contains(sign)) {
        PLAINTEXT_ON_TLS_HINT
    } else {
        ""
    };
    if cause.is_empty() {
        safe(&chain)
    } else {
        format!("{cause} ({})", safe(&chain))
    }
}

/// Which catalog a command reads.
#[derive(Debug, Args)]
struct CatalogArgs {
    /// Read the catalogs of this FileDescriptorSet (made with `protoc
    /// --include_imports --descriptor_set_out` or `buf build -o`) instead of the
    /// embedded one.
    #[arg(long, value_name = "SET.binpb")]
    catalog: Option<PathBuf>,
    /// The catalog to use, by its ErrorInfo domain, when there are several
    /// (with --server: the server's catalog of that domain).
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
}

impl CatalogArgs {
    /// The catalog asked for, or a one-line error.
    fn table(&self) -> Result<&'static CatalogTable, String> {
        let Some(path) = &self.catalog else {
            return match &self.domain {
                Some(d) if d != ErrorCode::table().domain() => Err(format!(
                    "the embedded catalog's domain is {:?}, not {d:?}; pass --catalog SET.binpb",
                    ErrorCode::table().domain()
                )),
                _ => Ok(ErrorCode::table()),
            };
        };
        let tables = catalog_set::load_file(path).map_err(|e| e.to_string())?;
        match (&self.domain, tables.as_slice()) {
            (None, [one]) => Ok(one),
            (Some(domain), _) => tables
                .iter()
                .copied()
                .find(|t| t.domain() == domain)
                .ok_or_else(|| {
                    format!(
                        "{}: no catalog has domain {domain:?}; it has {}",
                        path.display(),
                        domains(&tables)
                    )
                }),
            (None, _) => Err(format!(
                "{}: it holds several catalogs ({}); pick one with --domain",
                path.display(),
                domains(&tables)
            )),
        }
    }
}

fn domains(tables: &[&CatalogTable]) -> String {
    tables
        .iter()
        .map(|t| t.domain())
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on (an IP or a host name such as localhost, and a
    /// port); port 0 picks a free port. The bound address is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:50051", value_parser = parse_addr, value_name = "HOST:PORT")]
    addr: SocketAddr,
    /// How long in-flight calls may finish after SIGINT or SIGTERM (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    grace_period: Duration,
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
    #[arg(long = "catalog", value_name = "SET.binpb")]
    catalogs: Vec<PathBuf>,
    /// Do not serve the embedded catalog; the first --catalog becomes the default.
    #[arg(long, requires = "catalogs")]
    no_default_catalog: bool,
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
    /// The public URL of this server's catalog pages (e.g.
    /// https://errors.example.com): every error links to URL/errors/NAME.
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

/// Parses `HOST:PORT`, where HOST is an IP address or a name such as
/// `localhost` (the first address it resolves to is used), and
/// `[v6]:PORT`.
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "{text:?} is not HOST:PORT, e.g. 127.0.0.1:50051 or localhost:0"
        ));
    };
    if host.is_empty() {
        return Err(format!("{text:?} has no host; e.g. 127.0.0.1:{port}"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number (0 to 65535)"))?;
    use std::net::ToSocketAddrs as _;
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

/// Parses `65536`, `64KiB`, `64MiB` or `1GiB`.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let value: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 65536, 64KiB or 64MiB"))?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}; use KiB, MiB or GiB")),
    };
    value
        .checked_mul(scale)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?} must be at least 1 byte and fit in memory"))
}

/// Parses `500ms`, `5s`, `2m` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 5s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?}; use ms, s or m")),
    };
    let duration = Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))?;
    if duration > server::MAX_DURATION {
        return Err(format!("{text:?} is longer than a day; use at most 1440m"));
    }
    Ok(duration)
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Lookup {
            code,
            json,
            server,
            lang,
            tls,
            token,
            retries,
            source,
        } => match server {
            None => match source
                .table()
                .and_then(|table| Ok((table, resolve_lang(table, lang.as_deref())?)))
            {
                Ok((table, locale)) => lookup_local(table, &code, json, locale),
                Err(e) => Err(Failure::BadInput(e.to_string())),
            },
            Some(url) => lookup_remote(
                &code,
                json,
                &url,
                &tls,
                Ask {
                    domain: source.domain,
                    token,
                    lang: lang.as_deref(),
                    retries,
                },
            ),
        },
        Command::List {
            category,
            json,
            source,
        } => match source.table() {
            Ok(table) => list(table, category.as_deref(), json),
            Err(e) => Err(Failure::BadInput(e.to_string())),
        },
        Command::Decode { value, json } => decode(&value, json),
        Command::Docs { lang, source } => match source
            .table()
            .and_then(|table| Ok((table, resolve_lang(table, lang.as_deref())?)))
        {
            Ok((table, locale)) => {
                print!("{}", table.markdown_in(locale.unwrap_or("en-US")));
                Ok(())
            }
            Err(e) => Err(Failure::BadInput(e.to_string())),
        },
    };
    exit::finish(code)
}

/// The catalog's locale for `--lang`, or a one-line error listing them.
fn resolve_lang(table: &CatalogTable, lang: Option<&str>) -> Result<Option<&'static str>, String> {
    let Some(lang) = lang else {
        return Ok(None);
    };
    table.locale_for(lang).map(Some).ok_or_else(|| {
        format!(
            "the catalog has no messages in {lang:?}; it has {}",
            table.locales().join(", ")
        )
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

/// `--public-url`: an absolute http(s) URL without query or fragment,
/// returned without a trailing slash.
fn check_public_url(url: &str) -> Result<String, String> {
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

fn serve(args: ServeArgs) -> Outcome {
    let verifier = match args.verifier() {
        Ok(verifier) => verifier,
        Err(e) => {
            return Err(Failure::BadInput(format!("{e}")));
        }
    };

    let mut config = ServerConfig::default();
    config.addr = args.addr;
    config.grace_period = args.grace_period;
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
    config.catalogs = match load_catalogs(&args.catalogs, args.no_default_catalog) {
        Ok(catalogs) => catalogs,
        Err(e) => return Err(Failure::BadInput(e.to_string())),
    };
    config.grpc_web = !args.no_grpc_web;
    let admin_addr = args.admin_addr;
    if admin_addr.is_some() {
        config.metrics = Some(errmap_server::metrics::Metrics::new());
    }
    config.http_error_format =
        errmap_server::http_error::Shape::from_name(&args.http_error_format).unwrap_or_default();
    if let Some(url) = &args.public_url {
        match check_public_url(url) {
            Ok(url) => {
                // Before any status is built: the link is pre-encoded.
                if let Err(e) = errmap::status::set_help_base_url(&url) {
                    return Err(Failure::BadInput(format!("--public-url: {e}")));
                }
                config.public_url = Some(url);
            }
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
        return Err(Failure::BadInput(format!("{e}")));
    }
    let auth_on = config.auth.is_some();
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
        let shutdown = shutdown_signal();
        reload_on_sighup(args, keys, tls);
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
        let admin = match admin_addr {
            Some(addr) => match server::bind(addr).await {
                Ok(listener) => Some(listener),
                Err(e) => {
                    return Err(Failure::Failed(format!("cannot listen on --admin-addr {addr}: {e}")));
                }
            },
            None => None,
        };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{bound}");
        if let Some(admin) = &admin {
            match admin.local_addr() {
                Ok(addr) => {
                    let _ = writeln!(stdout, "{addr}");
                    tracing::info!(%addr, "admin: /metrics, /healthz, /readyz");
                }
                Err(e) => {
                    return Err(Failure::Failed(format!("{e}")));
                }
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
        match server::serve(listener, &config, shutdown).await {
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

/// On every SIGHUP, re-reads the TLS files and the JWT key files the flags
/// name and, where they are valid, makes them what new connections and calls
/// use; what does not load is kept as it was, and the log says why.
fn reload_on_sighup(
    args: ServeArgs,
    keys: Option<Arc<ReloadableVerifier<JwtVerifier>>>,
    tls: Option<TlsConfig>,
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
        let _ = (args, keys, tls);
    }
}

/// The embedded catalog (unless `no_default`) and those of `files`.
fn load_catalogs(files: &[PathBuf], no_default: bool) -> Result<Catalogs, String> {
    let mut catalogs = if no_default {
        Catalogs::empty()
    } else {
        Catalogs::default()
    };
    for file in files {
        for table in catalog_set::load_file(file).map_err(|e| e.to_string())? {
            catalogs = catalogs
                .with(table, &file.display().to_string())
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(catalogs)
}

/// Registers the SIGINT and SIGTERM handlers now, so that a signal sent
/// right after the address is printed is a graceful shutdown, not a kill;
/// the future completes on either signal.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
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

/// What the user asked to look up.
enum Query {
    Code(i32),
    Name(String),
}

fn parse_query(text: &str) -> Result<Query, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("give a code number (e.g. 21) or a name (e.g. AUTH_REQUIRED)".to_owned());
    }
    if let Some(digits) = text.strip_prefix('-').or(Some(text)) {
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse::<i32>()
                .map(Query::Code)
                .map_err(|_| format!("{text} is out of range for a code"));
        }
    }
    // One rule offline and on a server: names are upper case, so the CLI
    // upper-cases what it is given.
    Ok(Query::Name(text.to_ascii_uppercase()))
}

fn find_local(table: &CatalogTable, query: &Query) -> Option<&'static CatalogEntry> {
    match query {
        Query::Code(code) => table.by_number(*code),
        Query::Name(name) => table.by_name(name),
    }
}

fn retry_text(delay: Duration) -> String {
    if delay.subsec_nanos() == 0 {
        format!("{}s", delay.as_secs())
    } else {
        format!("{}s", delay.as_secs_f64())
    }
}

fn entry_json(table: &CatalogTable, entry: &CatalogEntry) -> Value {
    let mut value = json!({
        "code": entry.number(),
        "name": entry.name(),
        "message": entry.message(),
        "category": entry.category(),
        "grpcCode": entry.grpc_code() as i32,
        "grpcCodeName": grpc_code_name(entry.grpc_code()),
        "httpStatus": entry.http_status(),
        "domain": table.domain(),
    });
    if let Some(delay) = entry.retry_delay() {
        value["retryDelay"] = json!(retry_text(delay));
    }
    value
}

fn descriptor_json(d: &pb::ErrorDescriptor) -> Value {
    let mut value = json!({
        "code": d.number.or(d.code),
        "name": d.name,
        "message": d.message,
        "category": d.category,
        "grpcCode": d.grpc_code,
        "grpcCodeName": d.grpc_code_name,
        "httpStatus": d.http_status,
        "domain": d.domain,
    });
    if let Some(delay) = &d.retry_delay {
        value["retryDelay"] = json!(retry_text(Duration::new(
            delay.seconds.max(0) as u64,
            delay.nanos.clamp(0, 999_999_999) as u32
        )));
    }
    value
}

/// Peer-supplied text made safe for a terminal: control characters are
/// shown as escapes.
fn safe(text: &str) -> String {
    errmap_server::sanitize::escape_controls(text).into_owned()
}

fn print_value(value: &Value, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
        return;
    }
    let field = |k: &str| value.get(k).cloned().unwrap_or(Value::Null);
    // What a server sent may hold terminal escapes; they are shown, not run.
    let text = |k: &str| match field(k) {
        Value::String(s) => safe(&s),
        other => safe(&other.to_string()),
    };
    println!("{} {}", text("code"), text("name"));
    println!("  message:   {}", text("message"));
    println!("  category:  {}", text("category"));
    println!(
        "  gRPC code: {} ({})",
        text("grpcCodeName"),
        text("grpcCode")
    );
    println!("  HTTP:      {}", text("httpStatus"));
    println!("  domain:    {}", text("domain"));
    if value.get("localizedMessage").is_some() {
        println!("  {}:     {}", text("locale"), text("localizedMessage"));
    }
    if value.get("retryDelay").is_some() {
        println!("  retry:     after {}", text("retryDelay"));
    }
}

fn lookup_local(table: &CatalogTable, text: &str, json: bool, locale: Option<&str>) -> Outcome {
    let query = match parse_query(text) {
        Ok(q) => q,
        Err(e) => {
            return Err(Failure::BadInput(format!("{e}")));
        }
    };
    match find_local(table, &query) {
        Some(entry) => {
            let mut value = entry_json(table, entry);
            if let Some(locale) = locale {
                value["locale"] = json!(locale);
                value["localizedMessage"] =
                    json!(entry.message_in(locale).unwrap_or(entry.message()));
            }
            print_value(&value, json);
            Ok(())
        }
        None => Err(Failure::NotFound(format!(
            "{text:?} is not in the catalog (see `errmap list`)"
        ))),
    }
}

/// The URL `--server` means: `HOST:PORT` is `http://HOST:PORT`; `https://`
/// is always TLS, never plaintext.
fn server_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.contains("://") {
        return if text.starts_with("http://") || text.starts_with("https://") {
            Ok(text.to_owned())
        } else {
            Err(format!("{text:?}: the scheme must be http:// or https://"))
        };
    }
    Ok(format!("http://{text}"))
}

/// What `lookup --server` sends besides the code.
struct Ask<'a> {
    domain: Option<String>,
    token: Option<String>,
    lang: Option<&'a str>,
    retries: u32,
}

fn lookup_remote(text: &str, json: bool, url: &str, tls: &ClientTlsArgs, ask: Ask<'_>) -> Outcome {
    let Ask {
        domain,
        token,
        lang,
        retries,
    } = ask;
    let url = match server_url(url) {
        Ok(url) => url,
        Err(e) => return Err(Failure::BadInput(e.to_string())),
    };
    let url = url.as_str();
    let bearer = match token
        .as_deref()
        .map(|t| format!("Bearer {}", t.trim()).parse())
    {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => {
            return Err(Failure::BadInput(
                "the token is not a valid header value (visible ASCII only)".to_owned(),
            ))
        }
    };
    let accept_language = match lang.map(|l| {
        let l = l.trim();
        if l.is_empty() || !l.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(());
        }
        l.parse::<MetadataValue<Ascii>>().map_err(drop)
    }) {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => return Err(Failure::BadInput(
            "--lang must be a language tag or an accept-language value, e.g. ru or ru-RU,en;q=0.5"
                .to_owned(),
        )),
    };
    let query = match parse_query(text) {
        Ok(q) => q,
        Err(e) => {
            return Err(Failure::BadInput(format!("{e}")));
        }
    };
    let tls_config = match tls.config(url) {
        Ok(config) => config,
        Err(e) => return Err(Failure::BadInput(e.to_string())),
    };
    let endpoint = match tonic::transport::Endpoint::from_shared(url.to_owned()) {
        Ok(endpoint) => endpoint
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10)),
        Err(e) => {
            return Err(Failure::BadInput(format!(
                "{url:?} is not a valid server URL: {e}"
            )));
        }
    };
    let endpoint = match tls_config {
        None => endpoint,
        Some(config) => match endpoint.tls_config(config) {
            Ok(endpoint) => endpoint,
            Err(e) => {
                return Err(Failure::BadInput(format!(
                    "TLS settings: {}",
                    connect_failure(&e, false)
                )))
            }
        },
    };
    let by_code_in_default = domain.is_none() && matches!(query, Query::Code(_));
    let key = match query {
        Query::Code(code) => Key::Code(code),
        Query::Name(name) => Key::Name(name),
    };
    runtime().block_on(async move {
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(e) => {
                return Err(Failure::Failed(format!(
                    "cannot reach {url}: {}",
                    connect_failure(&e, url.starts_with("http://"))
                )));
            }
        };
        let policy = errmap_client::RetryPolicy::default()
            .with_max_attempts(retries.saturating_add(1))
            .with_max_server_delay(Duration::from_secs(10));
        let channel = tower::ServiceBuilder::new()
            .layer(errmap_client::RetryLayer::new(policy))
            .service(channel);
        let mut client = pb::error_catalog_client::ErrorCatalogClient::new(channel);
        let mut request = tonic::Request::new(pb::GetErrorRequest {
            key: Some(key),
            domain,
        });
        if let Some(bearer) = bearer {
            request.metadata_mut().insert("authorization", bearer);
        }
        if let Some(accept_language) = accept_language.clone() {
            request
                .metadata_mut()
                .insert(errmap::locale::ACCEPT_LANGUAGE, accept_language);
        }
        match client.get_error(request).await {
            Ok(response) => match response.into_inner().error {
                Some(descriptor) => {
                    let mut value = descriptor_json(&descriptor);
                    if accept_language.is_some() && !descriptor.locale.is_empty() {
                        value["locale"] = json!(descriptor.locale);
                        value["localizedMessage"] = json!(descriptor.localized_message);
                    }
                    print_value(&value, json);
                    if by_code_in_default {
                        note_other_catalogs(&mut client, &descriptor.domain).await;
                    }
                    Ok(())
                }
                None => Err(Failure::Failed(format!(
                    "the server answered without an entry"
                ))),
            },
            Err(status) => match status.error_code() {
                Some(ErrorCode::ApiItemNotFound) => {
                    Err(Failure::NotFound(format!("{}", safe(status.message()))))
                }
                Some(ErrorCode::ApiInvalidRequest) => {
                    let details = status.error_details().unwrap_or_default();
                    let violations = details
                        .bad_request()
                        .map(|b| &b.field_violations[..])
                        .unwrap_or(&[]);
                    if violations.is_empty() {
                        return Err(Failure::BadInput(safe(status.message())));
                    }
                    let lines: Vec<String> = violations
                        .iter()
                        .map(|v| format!("{}: {}", safe(&v.field), safe(&v.description)))
                        .collect();
                    Err(Failure::BadInput(lines.join("\nerror: ")))
                }
                Some(ErrorCode::AuthRequired) => Err(Failure::Failed(format!(
                    "the server wants a token: pass --token TOKEN or set ERRMAP_TOKEN"
                ))),
                Some(code @ (ErrorCode::AuthInvalidToken | ErrorCode::AuthExpiredToken)) => {
                    Err(Failure::Failed(format!(
                        "the server refused the token ({code}): {}",
                        safe(code.entry().message())
                    )))
                }
                _ => {
                    let mut cause = match std::error::Error::source(&status) {
                        Some(source) => {
                            format!(" ({})", connect_failure(source, url.starts_with("http://")))
                        }
                        None => String::new(),
                    };
                    // A TLS 1.3 server refuses a missing client certificate
                    // after the handshake, so the client may see only a
                    // closed connection: say what is likely.
                    let transport_failure = url.starts_with("https://")
                        && matches!(
                            status.code(),
                            tonic::Code::Unknown
                                | tonic::Code::Unavailable
                                | tonic::Code::Cancelled
                        )
                        && std::error::Error::source(&status).is_some();
                    if transport_failure
                        && tls.cert.is_some()
                        && !cause.contains("client certificate")
                    {
                        cause.push_str(" (the server may have refused the client certificate)");
                    }
                    if transport_failure
                        && tls.cert.is_none()
                        && !cause.contains("client certificate")
                    {
                        cause.push_str(
                            " (if the server requires a client certificate, pass --cert and --key)",
                        );
                    }
                    Err(Failure::Failed(format!(
                        "the server failed: {:?}: {}{cause}",
                        status.code(),
                        safe(status.message())
                    )))
                }
            },
        }
    })
}

/// After a lookup by number without `--domain`: when the server serves
/// more than one catalog, says on stderr which one answered (the default)
/// and how to ask another.
async fn note_other_catalogs<T>(
    client: &mut pb::error_catalog_client::ErrorCatalogClient<T>,
    answered: &str,
) where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let Ok(listed) = client.list_catalogs(pb::ListCatalogsRequest {}).await else {
        return;
    };
    let others: Vec<String> = listed
        .into_inner()
        .catalogs
        .into_iter()
        .map(|c| safe(&c.domain))
        .filter(|d| d != answered)
        .collect();
    if !others.is_empty() {
        eprintln!(
            "note: the default catalog ({}) answered; the server also serves {}: pass --domain DOMAIN to ask one of them",
            safe(answered),
            others.join(", ")
        );
    }
}

fn list(table: &CatalogTable, category: Option<&str>, json: bool) -> Outcome {
    if let Some(category) = category {
        if !table.is_category(category) {
            let known: Vec<_> = table.categories().collect();
            return Err(Failure::BadInput(format!(
                "unknown category {category:?}; the categories are: {}",
                known.join(", ")
            )));
        }
    }
    let entries: Vec<&CatalogEntry> = table
        .entries()
        .iter()
        .filter(|e| category.is_none_or(|c| e.category() == c))
        .collect();
    if json {
        let values: Vec<Value> = entries.iter().map(|e| entry_json(table, e)).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&values).unwrap_or_default()
        );
        return Ok(());
    }
    let name_width = entries.iter().map(|e| e.name().len()).max().unwrap_or(4);
    println!(
        "{:>4}  {:<name_width$}  {:<19}  {:>4}  {:<18}  MESSAGE",
        "CODE", "NAME", "GRPC", "HTTP", "CATEGORY"
    );
    for e in entries {
        println!(
            "{:>4}  {:<name_width$}  {:<19}  {:>4}  {:<18}  {}",
            e.number(),
            e.name(),
            grpc_code_name(e.grpc_code()),
            e.http_status(),
            e.category(),
            e.message()
        );
    }
    Ok(())
}

fn decode(value: &str, json: bool) -> Outcome {
    let mut text = value.trim();
    if let Some(rest) = text.strip_prefix("grpc-status-details-bin:") {
        text = rest.trim();
    }
    let details = match ErrorDetails::from_header_value(text.as_bytes()) {
        Ok(details) => details,
        Err(e) => {
            return Err(Failure::BadInput(format!("cannot decode: {e}")));
        }
    };
    let code = details.status_code();
    let mut out = json!({
        "status": {
            "code": code as i32,
            "codeName": grpc_code_name(code),
            "message": details.status_message(),
        },
    });
    if let Some(info) = details.error_info() {
        let metadata: serde_json::Map<String, Value> = info
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        out["errorInfo"] = json!({
            "reason": info.reason,
            "domain": info.domain,
            "metadata": metadata,
        });
    }
    if let Some(m) = details.localized_message() {
        out["localizedMessage"] = json!({"locale": m.locale, "message": m.message});
    }
    if let Some(delay) = details.retry_delay() {
        out["retryInfo"] = json!({"retryDelay": retry_text(delay)});
    }
    if let Some(bad) = details.bad_request() {
        out["badRequest"] = json!({
            "fieldViolations": bad.field_violations.iter().map(|v| json!({
                "field": v.field,
                "description": v.description,
                "reason": v.reason,
                "localizedMessage": v.localized_message.as_ref().map(|m| json!({"locale": m.locale, "message": m.message})),
            })).collect::<Vec<_>>(),
        });
    }
    if let Some(help) = details.help() {
        out["help"] = json!({
            "links": help.links.iter().map(|l| json!({"description": l.description, "url": l.url})).collect::<Vec<_>>(),
        });
    }
    if !details.other().is_empty() {
        out["otherDetails"] = json!(details
            .other()
            .iter()
            .map(|any| json!({"typeUrl": any.type_url, "bytes": any.value.len()}))
            .collect::<Vec<_>>());
    }
    let table = ErrorCode::table();
    if let Some(entry) = details.entry::<ErrorCode>() {
        out["catalogEntry"] = entry_json(table, entry);
    }

    if json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    // Everything below came from a peer: control characters are escaped.
    println!(
        "status: {} ({}) \"{}\"",
        grpc_code_name(code),
        code as i32,
        safe(details.status_message())
    );
    if let Some(info) = details.error_info() {
        println!(
            "ErrorInfo: reason={} domain={}",
            safe(&info.reason),
            safe(&info.domain)
        );
        let mut metadata: Vec<_> = info.metadata.iter().collect();
        metadata.sort();
        for (k, v) in metadata {
            println!("  {} = {}", safe(k), safe(v));
        }
    }
    if let Some(m) = details.localized_message() {
        println!(
            "LocalizedMessage [{}]: {}",
            safe(&m.locale),
            safe(&m.message)
        );
    }
    if let Some(delay) = details.retry_delay() {
        println!("RetryInfo: retry after {}", retry_text(delay));
    }
    if let Some(bad) = details.bad_request() {
        println!("BadRequest:");
        for v in &bad.field_violations {
            let reason = if v.reason.is_empty() {
                String::new()
            } else {
                format!(" [{}]", v.reason)
            };
            println!(
                "  - {}: {}{}",
                safe(&v.field),
                safe(&v.description),
                safe(&reason)
            );
        }
    }
    if let Some(help) = details.help() {
        println!("Help:");
        for l in &help.links {
            println!("  - {}: {}", safe(&l.description), safe(&l.url));
        }
    }
    for any in details.other() {
        println!(
            "other detail: {} ({} bytes)",
            safe(&any.type_url),
            any.value.len()
        );
    }
    match details.entry::<ErrorCode>() {
        Some(entry) => {
            println!("catalog entry:");
            print_value(&entry_json(table, entry), false);
        }
        None => println!("not a catalog error of this catalog"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
        assert_eq!(parse_duration("1440m"), Ok(Duration::from_secs(86_400)));
        let too_long = parse_duration("9999999999999999999s").unwrap_err();
        assert!(too_long.contains("longer than a day"), "{too_long}");
        assert!(parse_duration("1441m").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn server_urls_default_to_http_and_never_downgrade_https() {
        assert_eq!(
            server_url("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(server_url("http://h:1").unwrap(), "http://h:1");
        assert_eq!(server_url("https://h:1").unwrap(), "https://h:1");
        assert!(server_url("ftp://h:1").is_err());
    }

    #[test]
    fn addresses_parse_with_names() {
        assert_eq!(
            parse_addr("127.0.0.1:0"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 0)))
        );
        let local = parse_addr("localhost:0").unwrap();
        assert!(local.ip().is_loopback(), "{local}");
        assert!(parse_addr("localhost").is_err());
        assert!(parse_addr("localhost:99999").is_err());
        assert!(parse_addr(":80").is_err());
    }

    #[test]
    fn queries_parse() {
        assert!(matches!(parse_query("21"), Ok(Query::Code(21))));
        assert!(matches!(parse_query("-1"), Ok(Query::Code(-1))));
        assert!(matches!(parse_query("AUTH_REQUIRED"), Ok(Query::Name(n)) if n == "AUTH_REQUIRED"));
        // One rule offline and remote: the name is upper-cased before use.
        assert!(matches!(parse_query("auth_Required"), Ok(Query::Name(n)) if n == "AUTH_REQUIRED"));
        assert!(parse_query("99999999999").is_err());
        assert!(parse_query("  ").is_err());
        assert_eq!(
            find_local(ErrorCode::table(), &parse_query("auth_required").unwrap()),
            Some(ErrorCode::AuthRequired.entry())
        );
    }
}
