//! Per-call spans exported over OTLP/gRPC to an OpenTelemetry collector.
//!
//! Each call the [`MetricsLayer`](crate::metrics::MetricsLayer) observes
//! can become one SERVER span, named `service/method`, with OpenTelemetry's
//! RPC attributes (`rpc.system`, `rpc.service`, `rpc.method`,
//! `rpc.grpc.status_code`, `error.type` on a failure) and errmap's
//! `errmap.error.reason` and `errmap.error.domain`, under the resource
//! `service.name=errmap` and `service.version`.
//!
//! - **Sampled at the head.** A caller's W3C `traceparent` is the parent,
//!   and its sampled flag decides; without one, a call is exported with
//!   probability [`TraceExportConfig::sample_ratio`] (by its trace id, as
//!   OpenTelemetry's `TraceIdRatioBased` sampler decides).
//! - **Cheap on the call.** The call records what it already knows (ids,
//!   times, path, code, reason, domain) and puts it into a queue of
//!   [`TraceExportConfig::queue`] spans with `try_send`: it never waits for
//!   the collector. When the queue is full (the collector is down or slow)
//!   the span is dropped and counted, so memory does not grow.
//! - **Built and sent off the call.** One task takes up to
//!   [`TraceExportConfig::batch`] spans at a time, at most every
//!   [`TraceExportConfig::delay`], turns them into OpenTelemetry's
//!   `SpanData`, and exports them with `opentelemetry-otlp`'s tonic exporter
//!   (gzip if [`TraceExportConfig::gzip`]) within
//!   [`TraceExportConfig::timeout`]; a batch that fails is dropped and
//!   counted, never retried.
//! - **Counted.** [`TraceExportCounters`] feed `/metrics`:
//!   `errmap_trace_spans_exported_total` and
//!   `errmap_trace_spans_dropped_total{reason="queue_full"|"export_failed"}`.
//!
//! Off by default: without a [`SpanRecorder`] in
//! [`ServerConfig::span_export`](crate::server::ServerConfig::span_export),
//! no code of this module runs on a call.
//!
//! The `tracing` span `rpc` of each call (for the logs) is a separate
//! thing: going through `tracing-opentelemetry` would cost every call about
//! 5 µs of server CPU (a third of a call) even with nothing sampled, so the
//! export does not (BENCHMARKS.md).

use std::{
    borrow::Cow,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use opentelemetry::{
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
    InstrumentationScope, KeyValue,
};
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    trace::{
        IdGenerator as _, RandomIdGenerator, SpanData, SpanEvents, SpanExporter as _, SpanLinks,
    },
    Resource,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use tokio::sync::{mpsc, Notify};
use tonic::Code;

use crate::layer::Outcome;

/// How the spans are sampled, queued, batched and sent.
#[derive(Debug, Clone)]
pub struct TraceExportConfig {
    /// The collector's OTLP/gRPC endpoint, `http://HOST:PORT` (or
    /// `https://`, checked against the system's roots).
    pub endpoint: String,
    /// The share of calls without a caller's `traceparent` that are
    /// exported, from 0 to 1. Default 1: every call.
    pub sample_ratio: f64,
    /// Finished spans waiting to be sent; past it they are dropped.
    /// Default 2048.
    pub queue: usize,
    /// Spans sent in one export, at most the queue's size. Default 512.
    pub batch: usize,
    /// How long a span may wait for its batch to fill. Default 1 s.
    pub delay: Duration,
    /// How long one export may take before its batch is dropped.
    /// Default 5 s.
    pub timeout: Duration,
    /// Whether exports are gzipped. Default false, as OpenTelemetry's
    /// `OTEL_EXPORTER_OTLP_COMPRESSION`: gzip costs about 1.2 µs of CPU a
    /// span (BENCHMARKS.md), worth it only where the network is dear.
    pub gzip: bool,
}

impl TraceExportConfig {
    /// The defaults, sending to `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            sample_ratio: 1.0,
            queue: 2048,
            batch: 512,
            delay: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            gzip: false,
        }
    }
}

/// Why spans were not sent.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `queue_full` or `export_failed`.
    pub reason: &'static str,
}

/// The counts of spans sent and dropped, shared with `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct TraceExportCounters {
    /// Spans the collector accepted.
    pub exported: Counter,
    /// Spans dropped, by reason.
    pub dropped: Family<DropLabels, Counter>,
}

impl TraceExportCounters {
    fn dropped(&self, reason: &'static str, n: usize) {
        self.dropped
            .get_or_create(&DropLabels { reason })
            .inc_by(n as u64);
    }

    /// All spans dropped so far, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        ["queue_full", "export_failed"]
            .into_iter()
            .map(|reason| self.dropped.get_or_create(&DropLabels { reason }).get())
            .sum()
    }
}

/// A bad `--otlp-*` setting, or an exporter that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TraceExportError {
    /// The endpoint is not an `http://` or `https://` URL with a host.
    #[error("--otlp-endpoint {0:?} is not an http:// or https:// URL with a host and a port")]
    BadEndpoint(String),
    /// A size or time of zero.
    #[error("the OTLP {0} must be above zero")]
    Zero(&'static str),
    /// A sample ratio outside 0 to 1.
    #[error("--otlp-sample-ratio must be from 0 to 1, not {0}")]
    BadRatio(f64),
    /// The OTLP exporter refused its configuration.
    #[error("the OTLP exporter: {0}")]
    Exporter(String),
}

/// Calls' spans exported over OTLP: the queue, and the task that sends it.
/// Make it with [`new`](Self::new), give its [`recorder`](Self::recorder)
/// to the server, start its task in the runtime with
/// [`start`](Self::start), and end with [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct TraceExport {
    config: TraceExportConfig,
    counters: TraceExportCounters,
    recorder: SpanRecorder,
    queue: Option<mpsc::Receiver<CallSpan>>,
    task: Option<tokio::task::JoinHandle<()>>,
    stop: Arc<Notify>,
}

impl TraceExport {
    /// The export of `config`, counting into `counters`. Nothing connects
    /// yet.
    pub fn new(
        config: TraceExportConfig,
        counters: TraceExportCounters,
    ) -> Result<Self, TraceExportError> {
        check_endpoint(&config.endpoint)?;
        for (name, zero) in [
            ("queue", config.queue == 0),
            ("batch", config.batch == 0),
            ("timeout", config.timeout.is_zero()),
        ] {
            if zero {
                return Err(TraceExportError::Zero(name));
            }
        }
        if !(0.0..=1.0).contains(&config.sample_ratio) {
            return Err(TraceExportError::BadRatio(config.sample_ratio));
        }
        // A batch in flight holds spans too: never more than the queue.
        let mut config = config;
        config.batch = config.batch.min(config.queue);
        let (tx, rx) = mpsc::channel(config.queue);
        let recorder = SpanRecorder {
            inner: Arc::new(RecorderInner {
                tx,
                counters: counters.clone(),
                threshold: ratio_threshold(config.sample_ratio),
            }),
        };
        Ok(Self {
            config,
            counters,
            recorder,
            queue: Some(rx),
            task: None,
            stop: Arc::new(Notify::new()),
        })
    }

    /// What the server records each call with
    /// ([`ServerConfig::span_export`](crate::server::ServerConfig::span_export)).
    pub fn recorder(&self) -> SpanRecorder {
        self.recorder.clone()
    }

    /// Builds the exporter and starts the task that sends the queue; call
    /// it inside the Tokio runtime, once.
    pub fn start(&mut self) -> Result<(), TraceExportError> {
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(self.config.endpoint.clone())
            .with_timeout(self.config.timeout);
        if self.config.gzip {
            builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
        }
        let mut exporter = builder
            .build()
            .map_err(|e| TraceExportError::Exporter(e.to_string()))?;
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name("errmap")
                .with_attribute(KeyValue::new("service.version", VERSION))
                .build(),
        );
        let Some(mut rx) = self.queue.take() else {
            return Ok(());
        };
        let counters = self.counters.clone();
        let config = self.config.clone();
        let stop = self.stop.clone();
        self.task = Some(tokio::spawn(async move {
            send_batches(&mut rx, &exporter, &counters, &config, &stop).await;
            let _ = exporter.shutdown();
        }));
        Ok(())
    }

    /// Sends what is queued, within `within`, and stops: spans of calls
    /// that end later are dropped.
    pub async fn shutdown(mut self, within: Duration) {
        self.stop.notify_one();
        if let Some(task) = self.task.take() {
            if tokio::time::timeout(within, task).await.is_err() {
                tracing::warn!("the last spans were not sent in time");
            }
        }
    }
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The bytes of a call's path a queued span keeps: more than
/// `rpc.service` and `rpc.method` together may show.
const PATH_KEPT: usize = 256;

/// `ratio` as a bound on the low 64 bits of a trace id.
fn ratio_threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else {
        (ratio * u64::MAX as f64) as u64
    }
}

/// Records the calls' spans into the export's queue; cheap to clone. Made
/// by [`TraceExport::recorder`].
#[derive(Debug, Clone)]
pub struct SpanRecorder {
    // One reference count to touch when a service is cloned.
    inner: Arc<RecorderInner>,
}

#[derive(Debug)]
struct RecorderInner {
    tx: mpsc::Sender<CallSpan>,
    counters: TraceExportCounters,
    threshold: u64,
}

/// A call being recorded: what is known when it starts.
#[derive(Debug)]
pub(crate) struct PendingSpan {
    trace_id: TraceId,
    span_id: SpanId,
    parent: SpanId,
    start: SystemTime,
    started: Instant,
    system: &'static str,
    path: Box<str>,
}

/// A finished call, queued for export.
#[derive(Debug)]
struct CallSpan {
    pending: PendingSpan,
    end: SystemTime,
    code: Code,
    reason: Cow<'static, str>,
    domain: Cow<'static, str>,
}

impl SpanRecorder {
    /// A span for the call with `headers` and `path`, if it is sampled: the
    /// caller's `traceparent` decides when there is one (and is the
    /// parent), else the ratio.
    pub(crate) fn begin(
        &self,
        headers: &http::HeaderMap,
        path: &str,
        system: &'static str,
    ) -> Option<PendingSpan> {
        let (trace_id, parent) = match crate::trace_context::traceparent_ids(headers) {
            Some((trace_id, parent, sampled)) => {
                if !sampled {
                    return None;
                }
                (trace_id, parent)
            }
            None => {
                let trace_id = RandomIdGenerator::default().new_trace_id();
                let low = u128::from_be_bytes(trace_id.to_bytes()) as u64;
                let threshold = self.inner.threshold;
                if threshold != u64::MAX && low >= threshold {
                    return None;
                }
                (trace_id, SpanId::INVALID)
            }
        };
        Some(PendingSpan {
            trace_id,
            span_id: RandomIdGenerator::default().new_span_id(),
            parent,
            start: SystemTime::now(),
            started: Instant::now(),
            system,
            // A peer chooses the path, up to the header budget: only what
            // the span's names keep (200 bytes after the slash) is held.
            path: errmap::status::cut_at_char_boundary(path.trim_start_matches('/'), PATH_KEPT)
                .into(),
        })
    }

    /// Queues the finished call, or counts it dropped when the queue is
    /// full.
    pub(crate) fn end(&self, pending: PendingSpan, outcome: &Outcome) {
        let end = pending.start + pending.started.elapsed();
        let span = CallSpan {
            pending,
            end,
            code: outcome.code,
            reason: outcome.reason.clone(),
            domain: outcome.domain.clone(),
        };
        if self.inner.tx.try_send(span).is_err() {
            self.inner.counters.dropped("queue_full", 1);
        }
    }
}

/// Whether OpenTelemetry's RPC conventions count `code` as an error of the
/// server (the others are the caller's).
pub fn server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

impl CallSpan {
    /// OpenTelemetry's form of the span, built in the export task.
    fn into_span_data(self, scope: &InstrumentationScope) -> SpanData {
        let p = self.pending;
        let (service, method) = crate::trace_context::service_and_method(&p.path);
        let mut attributes = Vec::with_capacity(7);
        attributes.push(KeyValue::new("rpc.system", p.system));
        attributes.push(KeyValue::new("rpc.service", service.clone()));
        attributes.push(KeyValue::new("rpc.method", method.clone()));
        attributes.push(KeyValue::new(
            "rpc.grpc.status_code",
            i64::from(i32::from(self.code)),
        ));
        let code_name = errmap::catalog::grpc_code_name(self.code);
        if self.code != Code::Ok {
            attributes.push(KeyValue::new("error.type", code_name));
        }
        if !self.reason.is_empty() {
            attributes.push(KeyValue::new("errmap.error.reason", self.reason));
            attributes.push(KeyValue::new("errmap.error.domain", self.domain));
        }
        let status = if server_error(self.code) {
            Status::error(code_name)
        } else {
            Status::Unset
        };
        SpanData {
            span_context: SpanContext::new(
                p.trace_id,
                p.span_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: p.parent,
            parent_span_is_remote: p.parent != SpanId::INVALID,
            span_kind: SpanKind::Server,
            name: Cow::Owned(format!("{service}/{method}")),
            start_time: p.start,
            end_time: self.end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        }
    }
}

/// The loop of the export task: a batch at a time, until told to stop,
/// then what is left.
async fn send_batches(
    rx: &mut mpsc::Receiver<CallSpan>,
    exporter: &opentelemetry_otlp::SpanExporter,
    counters: &TraceExportCounters,
    config: &TraceExportConfig,
    stop: &Notify,
) {
    let scope = InstrumentationScope::builder("errmap")
        .with_version(VERSION)
        .build();
    let mut stopping = false;
    loop {
        let mut batch = Vec::with_capacity(config.batch.min(64));
        if !stopping {
            tokio::select! {
                n = rx.recv_many(&mut batch, config.batch) => if n == 0 { return },
                () = stop.notified() => stopping = true,
            }
        }
        if !stopping && batch.len() < config.batch {
            // Let the batch fill for the delay, unless told to stop.
            let fill = async {
                let until = tokio::time::Instant::now() + config.delay;
                while batch.len() < config.batch {
                    let left = config.batch - batch.len();
                    match tokio::time::timeout_at(until, rx.recv_many(&mut batch, left)).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            };
            tokio::select! {
                () = fill => {}
                () = stop.notified() => stopping = true,
            }
        }
        if stopping {
            while batch.len() < config.batch {
                match rx.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(_) => break,
                }
            }
        }
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        let spans = batch
            .into_iter()
            .map(|s| s.into_span_data(&scope))
            .collect();
        match tokio::time::timeout(config.timeout, exporter.export(spans)).await {
            Ok(Ok(())) => {
                counters.exported.inc_by(n as u64);
            }
            Ok(Err(e)) => {
                counters.dropped("export_failed", n);
                tracing::debug!(error = %e, spans = n, "an OTLP export failed");
            }
            Err(_) => counters.dropped("export_failed", n),
        }
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), TraceExportError> {
    let bad = || TraceExportError::BadEndpoint(endpoint.to_owned());
    let uri: http::Uri = endpoint.parse().map_err(|_| bad())?;
    match (uri.scheme_str(), uri.host(), uri.port_u16()) {
        (Some("http" | "https"), Some(host), Some(_)) if !host.is_empty() => Ok(()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_urls_with_a_host_and_a_port() {
        for good in ["http://127.0.0.1:4317", "https://collector.internal:4317"] {
            assert!(check_endpoint(good).is_ok(), "{good}");
        }
        for bad in [
            "127.0.0.1:4317",
            "grpc://collector:4317",
            "http://collector",
            "http://:4317",
            "",
            "http://[::1",
        ] {
            let err = check_endpoint(bad).unwrap_err();
            assert!(err.to_string().contains("--otlp-endpoint"), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_sizes_and_ratios_are_refused() {
        let mut config = TraceExportConfig::new("http://127.0.0.1:4317");
        config.queue = 0;
        let err = TraceExport::new(config, TraceExportCounters::default()).unwrap_err();
        assert_eq!(err.to_string(), "the OTLP queue must be above zero");
        for ratio in [-0.1, 1.5, f64::NAN] {
            let mut config = TraceExportConfig::new("http://127.0.0.1:4317");
            config.sample_ratio = ratio;
            let err = TraceExport::new(config, TraceExportCounters::default()).unwrap_err();
            assert!(err.to_string().contains("--otlp-sample-ratio"), "{err}");
        }
    }

    fn recorder(ratio: f64) -> (TraceExport, SpanRecorder) {
        let mut config = TraceExportConfig::new("http://127.0.0.1:4317");
        config.sample_ratio = ratio;
        let export = TraceExport::new(config, TraceExportCounters::default()).unwrap();
        let recorder = export.recorder();
        (export, recorder)
    }

    #[test]
    fn the_callers_sampled_flag_decides_and_else_the_ratio() {
        let none = http::HeaderMap::new();
        let with = |flags: &str| {
            let mut h = http::HeaderMap::new();
            let value = format!("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-{flags}");
            h.insert("traceparent", value.parse().unwrap());
            h
        };
        let path = "/errmap.v1.ErrorCatalog/GetError";
        let (_all, every) = recorder(1.0);
        let (_none, never) = recorder(0.0);
        for _ in 0..100 {
            assert!(every.begin(&none, path, "grpc").is_some());
            assert!(never.begin(&none, path, "grpc").is_none());
        }
        // A sampled parent is followed whatever the ratio; an unsampled
        // one too.
        let span = never.begin(&with("01"), path, "grpc").unwrap();
        assert_eq!(
            span.trace_id,
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap()
        );
        assert_eq!(span.parent, SpanId::from_hex("b7ad6b7169203331").unwrap());
        assert!(every.begin(&with("00"), path, "grpc").is_none());
        // A tenth, roughly.
        let (_tenth, tenth) = recorder(0.1);
        let sampled = (0..10_000)
            .filter(|_| tenth.begin(&none, path, "grpc").is_some())
            .count();
        assert!((700..1300).contains(&sampled), "{sampled} of 10,000");
    }

    #[test]
    fn a_queued_span_keeps_only_the_path_its_names_show() {
        let (_export, recorder) = recorder(1.0);
        let path = format!("/{}/{}", "s".repeat(150), "m".repeat(10_000));
        let pending = recorder
            .begin(&http::HeaderMap::new(), &path, "grpc")
            .unwrap();
        assert!(pending.path.len() <= PATH_KEPT, "{}", pending.path.len());
        let span = CallSpan {
            pending,
            end: SystemTime::now(),
            code: Code::Unimplemented,
            reason: "".into(),
            domain: "".into(),
        }
        .into_span_data(&InstrumentationScope::default());
        let (service, method) = crate::trace_context::service_and_method(&path);
        assert_eq!(span.name, format!("{service}/{method}"));
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let mut config = TraceExportConfig::new("http://127.0.0.1:4317");
        config.queue = 2;
        let counters = TraceExportCounters::default();
        let export = TraceExport::new(config, counters.clone()).unwrap();
        let recorder = export.recorder();
        let outcome = Outcome::plain(Code::Ok);
        for _ in 0..5 {
            let span = recorder
                .begin(&http::HeaderMap::new(), "/a.B/C", "grpc")
                .unwrap();
            recorder.end(span, &outcome);
        }
        assert_eq!(counters.dropped_total(), 3);
    }

    #[test]
    fn a_span_carries_the_rpc_attributes_and_a_server_error_status() {
        let (_export, recorder) = recorder(1.0);
        let pending = recorder
            .begin(
                &http::HeaderMap::new(),
                "/errmap.v1.ErrorCatalog/Nope",
                "grpc",
            )
            .unwrap();
        let span = CallSpan {
            pending,
            end: SystemTime::now(),
            code: Code::Unimplemented,
            reason: "API_METHOD_NOT_FOUND".into(),
            domain: "auth.errmap.dev".into(),
        }
        .into_span_data(&InstrumentationScope::default());
        assert_eq!(span.name, "errmap.v1.ErrorCatalog/Nope");
        assert_eq!(span.span_kind, SpanKind::Server);
        assert_eq!(span.parent_span_id, SpanId::INVALID);
        assert!(!span.parent_span_is_remote);
        let get = |key: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(get("rpc.system").as_deref(), Some("grpc"));
        assert_eq!(
            get("rpc.service").as_deref(),
            Some("errmap.v1.ErrorCatalog")
        );
        assert_eq!(get("rpc.method").as_deref(), Some("Nope"));
        assert_eq!(get("rpc.grpc.status_code").as_deref(), Some("12"));
        assert_eq!(get("error.type").as_deref(), Some("UNIMPLEMENTED"));
        assert_eq!(
            get("errmap.error.reason").as_deref(),
            Some("API_METHOD_NOT_FOUND")
        );
        assert_eq!(
            get("errmap.error.domain").as_deref(),
            Some("auth.errmap.dev")
        );
        assert_eq!(span.status, Status::error("UNIMPLEMENTED"));
    }
}
