//! `errmap lookup` and `errmap list`: the offline catalog, and a running
//! server over gRPC (TLS, tokens, retries).

use std::{path::PathBuf, time::Duration};

use clap::Args;
use serde_json::{json, Value};
use tonic::metadata::{Ascii, MetadataValue};

use errmap::{
    catalog::{CatalogEntry, CatalogTable},
    grpc_code_name,
    pb::{self, get_error_request::Key},
    Catalog as _, ErrorCode, ErrorStatusExt,
};

use super::{
    exit::{Failure, Outcome},
    runtime, safe,
};

/// How `lookup --server https://...` checks the server and shows itself.
#[derive(Debug, Args)]
pub(crate) struct ClientTlsArgs {
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
pub(crate) const PLAINTEXT_ON_TLS: [&str; 5] = [
    "frame with invalid size",
    "Broken pipe",
    "broken pipe",
    "Connection reset by peer",
    "connection closed",
];
pub(crate) const PLAINTEXT_ON_TLS_HINT: &str =
    "the server closed the connection; if it serves TLS at that address, use https://";

/// A connection failure in words, each cause once: the TLS causes a user
/// can fix, named; `plaintext` is whether the URL was `http://`.
pub(crate) fn connect_failure(error: &dyn std::error::Error, plaintext: bool) -> String {
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

/// What the user asked to look up.
pub(crate) enum Query {
    Code(i32),
    Name(String),
}

pub(crate) fn parse_query(text: &str) -> Result<Query, String> {
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

pub(crate) fn find_local<'t>(table: &'t CatalogTable, query: &Query) -> Option<&'t CatalogEntry> {
    match query {
        Query::Code(code) => table.by_number(*code),
        Query::Name(name) => table.by_name(name),
    }
}

pub(crate) fn retry_text(delay: Duration) -> String {
    format!("{}s", errmap::catalog::delay_seconds(delay))
}

pub(crate) fn entry_json(table: &CatalogTable, entry: &CatalogEntry) -> Value {
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
    if entry.is_template() {
        value["params"] = json!(entry.params().collect::<Vec<_>>());
    }
    value
}

pub(crate) fn descriptor_json(d: &pb::ErrorDescriptor) -> Value {
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
    if !d.params.is_empty() {
        value["params"] = json!(d.params);
    }
    value
}

pub(crate) fn print_value(value: &Value, json: bool) {
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
    if let Some(Value::Array(params)) = value.get("params") {
        let names: Vec<String> = params
            .iter()
            .map(|p| format!("{{{}}}", safe(p.as_str().unwrap_or_default())))
            .collect();
        println!(
            "  params:    {} (ErrorInfo metadata keys)",
            names.join(", ")
        );
    }
}

pub(crate) fn lookup_local(
    table: &CatalogTable,
    text: &str,
    json: bool,
    locale: Option<&str>,
) -> Outcome {
    let query = match parse_query(text) {
        Ok(q) => q,
        Err(e) => {
            return Err(Failure::BadInput(e.to_string()));
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
pub(crate) fn server_url(text: &str) -> Result<String, String> {
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
pub(crate) struct Ask<'a> {
    pub(crate) domain: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) lang: Option<&'a str>,
    pub(crate) retries: u32,
}

pub(crate) fn lookup_remote(
    text: &str,
    json: bool,
    url: &str,
    tls: &ClientTlsArgs,
    ask: Ask<'_>,
) -> Outcome {
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
            return Err(Failure::BadInput(e.to_string()));
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
                None => Err(Failure::Failed(
                    "the server answered without an entry".to_owned(),
                )),
            },
            Err(status) => match status.error_code() {
                Some(ErrorCode::ApiItemNotFound) => Err(Failure::NotFound(safe(status.message()))),
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
                Some(ErrorCode::AuthRequired) => Err(Failure::Failed(
                    "the server wants a token: pass --token TOKEN or set ERRMAP_TOKEN".to_owned(),
                )),
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
pub(crate) async fn note_other_catalogs<T>(
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

pub(crate) fn list(table: &CatalogTable, category: Option<&str>, json: bool) -> Outcome {
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
