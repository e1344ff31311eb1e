//! The command-line interface of the `errmap` binary.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

use errmap::{catalog::CatalogTable, catalog_set, Catalog as _, ErrorCode, TableRef};

mod args;
mod check;
mod decode;
mod exit;
mod lookup;
mod reload;
mod serve;

use decode::decode;
use exit::Failure;
use lookup::{list, lookup_local, lookup_remote, Ask, ClientTlsArgs};
use serve::{serve, ServeArgs};

#[derive(Debug, Parser)]
#[command(
    name = "errmap",
    version,
    about = "One error catalog for gRPC: serve it, look codes up, decode error details.",
    long_about = "errmap keeps an HTTP API's error codes when it moves to gRPC. Each code \
                  travels as a standard google.rpc.ErrorInfo (reason = the code's name) \
                  inside grpc-status-details-bin.\n\n\
                  Exit codes: 0 found / done, 1 not found (or, for check, a breaking change), 2 bad usage or input, \
                  3 server unreachable or failed.",
    after_help = "Examples:\n  errmap serve\n  errmap lookup 21\n  errmap lookup AUTH_EXPIRED_TOKEN --json\n  \
                  errmap list --category auth_token\n  errmap decode CBASKhZ...\n  errmap check new.binpb --against buf/errmap-v1.binpb"
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
    /// Check that a new version of the catalogs keeps the old one's clients
    /// working: one line per change, `ENUM.VALUE (number): breaking|compatible: what`.
    /// Exit 1 when a change breaks clients, 0 when all is compatible, 2 on
    /// bad input.
    Check {
        /// The new catalogs: a FileDescriptorSet, as --catalog takes it.
        #[arg(value_name = "NEW.binpb")]
        new: PathBuf,
        /// The catalogs clients were built against (the last release's set).
        #[arg(long, value_name = "OLD.binpb")]
        against: PathBuf,
        /// Print a JSON array of {value, number, kind, breaking, detail}.
        #[arg(long)]
        json: bool,
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
    fn table(&self) -> Result<TableRef, String> {
        let Some(path) = &self.catalog else {
            return match &self.domain {
                Some(d) if d != ErrorCode::table().domain() => Err(format!(
                    "the embedded catalog's domain is {:?}, not {d:?}; pass --catalog SET.binpb",
                    ErrorCode::table().domain()
                )),
                _ => Ok(ErrorCode::table().into()),
            };
        };
        let mut tables = catalog_set::load_file(path).map_err(|e| e.to_string())?;
        match (&self.domain, tables.len()) {
            (None, 1) => Ok(tables.remove(0).into()),
            (Some(domain), _) => match tables.iter().position(|t| t.domain() == domain) {
                Some(at) => Ok(tables.swap_remove(at).into()),
                None => Err({
                    format!(
                        "{}: no catalog has domain {domain:?}; it has {}",
                        path.display(),
                        domains(&tables)
                    )
                }),
            },
            (None, _) => Err(format!(
                "{}: it holds several catalogs ({}); pick one with --domain",
                path.display(),
                domains(&tables)
            )),
        }
    }
}

fn domains(tables: &[CatalogTable]) -> String {
    tables
        .iter()
        .map(|t| t.domain())
        .collect::<Vec<_>>()
        .join(", ")
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
            None => match source.table().and_then(|table| {
                let locale = resolve_lang(&table, lang.as_deref())?;
                Ok((table, locale))
            }) {
                Ok((table, locale)) => lookup_local(&table, &code, json, locale),
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
            Ok(table) => list(&table, category.as_deref(), json),
            Err(e) => Err(Failure::BadInput(e.to_string())),
        },
        Command::Decode { value, json } => decode(&value, json),
        Command::Check { new, against, json } => check::check(&new, &against, json),
        Command::Docs { lang, source } => match source.table().and_then(|table| {
            let locale = resolve_lang(&table, lang.as_deref())?;
            Ok((table, locale))
        }) {
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

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

/// Peer-supplied text made safe for a terminal: control characters are
/// shown as escapes.
pub(crate) fn safe(text: &str) -> String {
    errmap_server::sanitize::escape_controls(text).into_owned()
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, time::Duration};

    use super::*;
    use super::{
        args::{parse_addr, parse_duration},
        lookup::{find_local, parse_query, server_url, Query},
    };

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
