//! Metrics: calls counted by method, gRPC code, and catalog reason and
//! domain, in the Prometheus text format.
//!
//! [`MetricsLayer`] goes outside the response layer
//! ([`ErrorLayer`](crate::layer::ErrorLayer)). The response layer hands it
//! the code, domain and reason it found or made, in the poll where it
//! found them (a thread-local hand-over, nothing allocated per call; an
//! [`OutcomeSlot`](crate::layer::OutcomeSlot) in the request's extensions
//! gets the same for anyone else). So a reason is read from
//! the status that layer already holds, never by decoding the details a
//! second time. The families, in OpenTelemetry's names:
//!
//! - `rpc_server_call_duration_seconds` (histogram), labelled
//!   `rpc_method` (`/pkg.Service/Method`), `rpc_status_code` (`OK`,
//!   `NOT_FOUND`, …), `error_reason` (empty on OK) and `error_domain`;
//! - `errmap_calls_in_flight`, `errmap_admission_shed_total`,
//!   `errmap_intake_bytes`, `errmap_intake_refused_total`,
//!   `errmap_auth_refusals_total{reason}`, `errmap_catalog_info{domain,hash}`,
//!   `errmap_retried_calls_total` (calls that arrived with
//!   `grpc-previous-rpc-attempts` above 0: clients retrying),
//!   `errmap_trace_spans_exported_total` and
//!   `errmap_trace_spans_dropped_total{reason}` (OTLP, [`crate::otlp`]);
//! - `process_resident_memory_bytes`, `process_open_fds`,
//!   `process_cpu_seconds_total`, read from `/proc` at each scrape.
//!
//! Cardinality is bounded:
//! - a method the server does not serve is `rpc_method="other"`;
//! - a reason or domain is always one of a loaded catalog, or empty.
//!
//! The crate is `prometheus-client`: the Prometheus project's own Rust
//! client. It is OpenMetrics-native, its label sets are typed, and it keeps
//! no global registry, so every server, and every test, has its own.

use std::{
    borrow::Cow,
    collections::HashSet,
    fmt::Write as _,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    task::{ready, Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};
use tonic::Code;
use tower::{Layer, Service};

use errmap::catalog::grpc_code_name;

use crate::{
    admission::Admission,
    auth::AuthInterceptor,
    layer::{Listening, Outcome},
    otlp::{PendingSpan, SpanRecorder},
    reload::LiveCatalogs,
};

mod process;
mod text;

use crate::trace_context::{service_and_method, traceparent};
use process::*;
use text::*;

/// The labels of a call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    /// `grpc` (gRPC and gRPC-Web) or `connect`.
    rpc_system: &'static str,
    rpc_method: &'static str,
    rpc_status_code: &'static str,
    // Borrowed from the binary for a compiled catalog; a catalog loaded at
    // run time may be reloaded away, and its series stay.
    error_reason: Cow<'static, str>,
    error_domain: Cow<'static, str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CatalogLabels {
    domain: String,
    hash: String,
}

fn call_histogram() -> Histogram {
    // 100 µs to ~13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// The parts of the server the scrape reads.
#[derive(Debug, Clone)]
struct Sources {
    admission: Admission,
    auth: Option<AuthInterceptor>,
    catalogs: LiveCatalogs,
}

struct Inner {
    /// Which metrics these are in the threads' memories of histograms.
    id: u64,
    registry: Registry,
    calls: Family<CallLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    shed: Counter,
    intake_bytes: Gauge,
    intake_refused: Counter,
    auth_refusals: Family<ReasonLabel, Counter>,
    retries: Counter,
    catalog_info: Family<CatalogLabels, Gauge>,
    resident: Gauge,
    open_fds: Gauge,
    cpu: Counter<f64, std::sync::atomic::AtomicU64>,
    trace_export: crate::otlp::TraceExportCounters,
    /// What the counters of the sources read last, to add the difference.
    last: Mutex<Last>,
    /// The served methods, interned; other paths are "other".
    methods: OnceLock<HashSet<&'static str, foldhash::fast::RandomState>>,
    sources: OnceLock<Sources>,
}

#[derive(Default)]
struct Last {
    shed: u64,
    intake_refused: u64,
    auth: [u64; 3],
    cpu: f64,
    /// The catalog set the `catalog_info` series describe.
    catalogs: Option<Arc<errmap::Catalogs>>,
}

/// A fresh identity for a [`Metrics`] in the threads' memories.
fn next_metrics_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// How many call series each thread keeps a handle to.
const RECENT_SERIES_PER_THREAD: usize = 16;

thread_local! {
    /// The call series this thread recorded last: which metrics, their
    /// labels, and the series' histogram.
    static RECENT_SERIES: std::cell::RefCell<Vec<(u64, CallLabels, Histogram)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `grpc-previous-rpc-attempts`, parsed once.
const PREVIOUS_ATTEMPTS: http::HeaderName =
    http::HeaderName::from_static(errmap::headers::PREVIOUS_ATTEMPTS);

/// A server's metrics: see the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics; [`ErrmapServer`](crate::server::ErrmapServer) attaches
    /// its methods, catalogs, admission and auth when it starts.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let calls = Family::<CallLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            call_histogram,
        );
        registry.register(
            "rpc_server_call_duration_seconds",
            "Duration of calls, by method, gRPC code and catalog reason",
            calls.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "errmap_calls_in_flight",
            "Calls in intake, running or streaming",
            in_flight.clone(),
        );
        let shed = Counter::default();
        registry.register(
            "errmap_admission_shed",
            "Calls shed with 44 because no place was free",
            shed.clone(),
        );
        let intake_bytes = Gauge::default();
        registry.register(
            "errmap_intake_bytes",
            "Header and body bytes held by calls whose request has not arrived, as the intake memory budget counts them",
            intake_bytes.clone(),
        );
        let intake_refused = Counter::default();
        registry.register(
            "errmap_intake_refused",
            "Calls in intake refused with 44 to keep within the intake memory budget",
            intake_refused.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "errmap_retried_calls",
            "Calls that arrived as retries (grpc-previous-rpc-attempts above 0)",
            retries.clone(),
        );
        let auth_refusals = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "errmap_auth_refusals",
            "Calls the auth interceptor refused, by reason",
            auth_refusals.clone(),
        );
        let catalog_info = Family::<CatalogLabels, Gauge>::default();
        registry.register(
            "errmap_catalog_info",
            "The catalogs served, by domain and content hash",
            catalog_info.clone(),
        );
        let resident = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            resident.clone(),
        );
        let open_fds = Gauge::default();
        registry.register(
            "process_open_fds",
            "Number of open file descriptors",
            open_fds.clone(),
        );
        let cpu = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time spent in seconds",
            cpu.clone(),
        );
        let trace_export = crate::otlp::TraceExportCounters::default();
        registry.register(
            "errmap_trace_spans_exported",
            "Call spans the OTLP collector accepted",
            trace_export.exported.clone(),
        );
        registry.register(
            "errmap_trace_spans_dropped",
            "Call spans not sent over OTLP: the queue was full, or their export failed",
            trace_export.dropped.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                id: next_metrics_id(),
                registry,
                calls,
                in_flight,
                shed,
                intake_bytes,
                intake_refused,
                auth_refusals,
                retries,
                catalog_info,
                resident,
                open_fds,
                cpu,
                trace_export,
                last: Mutex::new(Last::default()),
                methods: OnceLock::new(),
                sources: OnceLock::new(),
            }),
        }
    }

    /// The counters an OTLP export ([`crate::otlp::TraceExport`]) adds to,
    /// shown here as `errmap_trace_spans_exported_total` and
    /// `errmap_trace_spans_dropped_total{reason}`.
    pub fn trace_export_counters(&self) -> crate::otlp::TraceExportCounters {
        self.inner.trace_export.clone()
    }

    /// Attaches what the server serves. Called once by the server; later
    /// calls are ignored.
    pub(crate) fn attach(
        &self,
        methods: impl IntoIterator<Item = String>,
        catalogs: &LiveCatalogs,
        admission: Admission,
        auth: Option<AuthInterceptor>,
    ) {
        let methods: HashSet<&'static str, foldhash::fast::RandomState> = methods
            .into_iter()
            .map(|m| &*Box::leak(m.into_boxed_str()))
            .collect();
        if self.inner.methods.set(methods).is_err() {
            return;
        }
        let _ = self.inner.sources.set(Sources {
            admission,
            auth,
            catalogs: catalogs.clone(),
        });
        self.refresh();
    }

    /// Whether the server is ready: attached, and not stopping (from the
    /// shutdown signal on, through the drain delay and the drain).
    pub fn is_ready(&self) -> bool {
        self.inner
            .sources
            .get()
            .is_some_and(|s| !s.admission.is_stopping())
    }

    /// The layer that times calls; put it outside the response layer.
    pub fn layer(&self) -> MetricsLayer {
        MetricsLayer {
            metrics: Some(self.clone()),
            trace: true,
            export: None,
        }
    }

    fn method_label(&self, path: &str) -> &'static str {
        self.inner
            .methods
            .get()
            .and_then(|m| m.get(path).copied())
            .unwrap_or("other")
    }

    /// Records one call with these labels, as the layer does. For
    /// benchmarks (the memory of many label sets); the layer is the way in.
    #[doc(hidden)]
    pub fn record_labels(
        &self,
        method: &'static str,
        code: Code,
        domain: &'static str,
        reason: &'static str,
        seconds: f64,
    ) {
        let labels = CallLabels {
            rpc_system: "grpc",
            rpc_method: method,
            rpc_status_code: grpc_code_name(code),
            error_reason: Cow::Borrowed(reason),
            error_domain: Cow::Borrowed(domain),
        };
        self.inner.calls.get_or_create(&labels).observe(seconds);
    }

    fn record(
        &self,
        system: &'static str,
        method: &'static str,
        outcome: Outcome,
        started: Instant,
    ) {
        let labels = CallLabels {
            rpc_system: system,
            rpc_method: method,
            rpc_status_code: grpc_code_name(outcome.code),
            error_reason: outcome.reason,
            error_domain: outcome.domain,
        };
        let seconds = started.elapsed().as_secs_f64();
        // The family's lock and a hash of five labels are paid once per
        // thread and label set; the series are never removed, so a kept
        // handle stays the family's.
        RECENT_SERIES.with(|recent| {
            let mut recent = recent.borrow_mut();
            let id = self.inner.id;
            if let Some((_, _, histogram)) = recent
                .iter()
                .find(|(metrics, kept, _)| *metrics == id && *kept == labels)
            {
                histogram.observe(seconds);
                return;
            }
            let histogram = self.inner.calls.get_or_create(&labels).clone();
            histogram.observe(seconds);
            if recent.len() >= RECENT_SERIES_PER_THREAD {
                recent.remove(0);
            }
            recent.push((id, labels, histogram));
        });
    }

    /// The metrics in the OpenMetrics text format (ending in `# EOF`), or,
    /// with `openmetrics` false, in the Prometheus text format 0.0.4.
    pub fn encode(&self, openmetrics: bool) -> String {
        self.refresh();
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.inner.registry).is_err() {
            return String::new();
        }
        if openmetrics {
            out
        } else {
            openmetrics_to_prometheus_text(&out)
        }
    }

    /// Reads the sources and `/proc` into the gauges and counters.
    fn refresh(&self) {
        let inner = &self.inner;
        let Ok(mut last) = inner.last.lock() else {
            return;
        };
        if let Some(sources) = inner.sources.get() {
            // The catalogs served now: a reload replaces the series.
            let catalogs = sources.catalogs.load();
            if !last
                .catalogs
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &catalogs))
            {
                inner.catalog_info.clear();
                for table in catalogs.tables() {
                    inner
                        .catalog_info
                        .get_or_create(&CatalogLabels {
                            domain: table.domain().to_owned(),
                            hash: format!("{:016x}", table.content_hash()),
                        })
                        .set(1);
                }
                last.catalogs = Some(catalogs);
            }
            inner.in_flight.set(sources.admission.in_flight() as i64);
            let shed = sources.admission.shed();
            inner.shed.inc_by(shed.saturating_sub(last.shed));
            last.shed = shed;
            inner
                .intake_bytes
                .set(sources.admission.intake_bytes() as i64);
            let refused = sources.admission.intake_refused();
            inner
                .intake_refused
                .inc_by(refused.saturating_sub(last.intake_refused));
            last.intake_refused = refused;
            if let Some(auth) = &sources.auth {
                for (i, (reason, n)) in auth.refusals_by_reason().into_iter().enumerate() {
                    let counter = inner.auth_refusals.get_or_create(&ReasonLabel { reason });
                    counter.inc_by(n.saturating_sub(last.auth[i]));
                    last.auth[i] = n;
                }
            }
        }
        if let Some(process) = read_process() {
            inner.resident.set(process.resident_bytes as i64);
            inner.open_fds.set(process.open_fds as i64);
            if process.cpu_seconds > last.cpu {
                inner.cpu.inc_by(process.cpu_seconds - last.cpu);
                last.cpu = process.cpu_seconds;
            }
        }
    }
}

/// Observes every call: a `tracing` span with OpenTelemetry's attribute
/// names, and, with metrics, its time and outcome. Made by
/// [`Metrics::layer`], [`MetricsLayer::tracing_only`], or
/// [`MetricsLayer::disabled`] for a layer that does nothing.
///
/// The span is `rpc` at INFO: `rpc.system = "grpc"`, `rpc.service`,
/// `rpc.method`, `rpc.status_code` (the code's name), `error.type` (set only
/// on error, to the code's name), and errmap's own `errmap.error.reason` and
/// `errmap.error.domain`. An incoming W3C `traceparent` is recorded as
/// `trace_id` and `parent_span_id`, so that logs can be joined to the
/// caller's trace. Log lines made while the call runs carry these fields.
///
/// [`exporting`](Self::exporting) also records each sampled call for the
/// OTLP export ([`crate::otlp`]).
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Option<Metrics>,
    trace: bool,
    export: Option<SpanRecorder>,
}

impl MetricsLayer {
    /// A layer that passes every call through and records nothing.
    pub fn disabled() -> Self {
        Self {
            metrics: None,
            trace: false,
            export: None,
        }
    }

    /// Each sampled call is also recorded into `export`'s queue.
    pub fn exporting(mut self, export: SpanRecorder) -> Self {
        self.export = Some(export);
        self
    }

    /// Spans, no metrics.
    pub fn tracing_only() -> Self {
        Self {
            metrics: None,
            trace: true,
            export: None,
        }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
            trace: self.trace,
            export: self.export.clone(),
        }
    }
}

/// The service made by [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Option<Metrics>,
    trace: bool,
    export: Option<SpanRecorder>,
}

/// A call being observed: recorded once, when its status is known or when
/// it is dropped before.
struct Timing {
    metrics: Option<Metrics>,
    span: tracing::Span,
    export: Option<(SpanRecorder, PendingSpan)>,
    system: &'static str,
    method: &'static str,
    started: Instant,
    done: bool,
}

impl Timing {
    /// Records the call with its `outcome`: the one the response layer
    /// handed over, else the gRPC code alone.
    fn finish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        if !self.span.is_disabled() {
            let name = grpc_code_name(outcome.code);
            self.span.record("rpc.status_code", name);
            if outcome.code != Code::Ok {
                self.span.record("error.type", name);
            }
            if !outcome.reason.is_empty() {
                self.span.record("errmap.error.reason", &*outcome.reason);
                self.span.record("errmap.error.domain", &*outcome.domain);
            }
        }
        if let Some((recorder, span)) = self.export.take() {
            recorder.end(span, &outcome);
        }
        if let Some(metrics) = &self.metrics {
            metrics.record(self.system, self.method, outcome, self.started);
        }
    }
}

impl Drop for Timing {
    fn drop(&mut self) {
        // Dropped before a status: the client went away.
        self.finish(Outcome::plain(Code::Cancelled));
    }
}

fn status_in(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get(errmap::headers::GRPC_STATUS)
        .map(|v| Code::from_bytes(v.as_bytes()))
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for MetricsService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    type Response = http::Response<MetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if self.metrics.is_none() && !self.trace && self.export.is_none() {
            return MetricsFuture {
                future: self.inner.call(request),
                timing: None,
            };
        }
        let system = if request
            .extensions()
            .get::<crate::connect::ConnectCall>()
            .is_some()
        {
            "connect"
        } else {
            "grpc"
        };
        if let Some(metrics) = &self.metrics {
            let retried = request
                .headers()
                .get(PREVIOUS_ATTEMPTS)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u32>().ok())
                .is_some_and(|n| n > 0);
            if retried {
                metrics.inner.retries.inc();
            }
        }
        let span = if self.trace {
            let span = tracing::info_span!(
                "rpc",
                otel.kind = "server",
                rpc.system = system,
                rpc.service = tracing::field::Empty,
                rpc.method = tracing::field::Empty,
                rpc.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
                errmap.error.reason = tracing::field::Empty,
                errmap.error.domain = tracing::field::Empty,
                trace_id = tracing::field::Empty,
                parent_span_id = tracing::field::Empty,
            );
            // The fields cost an escape and two strings: only for a span
            // someone listens to.
            if !span.is_disabled() {
                let (service, method) = service_and_method(request.uri().path());
                span.record("rpc.service", service.as_str());
                span.record("rpc.method", method.as_str());
                if let Some((trace, parent)) = traceparent(request.headers()) {
                    span.record("trace_id", trace);
                    span.record("parent_span_id", parent);
                }
            }
            span
        } else {
            tracing::Span::none()
        };
        if span.is_disabled() && self.metrics.is_none() && self.export.is_none() {
            // Spans only, and no subscriber listens to this one: nothing
            // would read the call's outcome.
            return MetricsFuture {
                future: self.inner.call(request),
                timing: None,
            };
        }
        let export = self.export.as_ref().and_then(|recorder| {
            recorder
                .begin(request.headers(), request.uri().path(), system)
                .map(|span| (recorder.clone(), span))
        });
        // Boxed: it goes on into the response body, which every layer
        // above moves on the way out.
        let timing = Box::new(Timing {
            export,
            system,
            method: self
                .metrics
                .as_ref()
                .map_or("other", |m| m.method_label(request.uri().path())),
            metrics: self.metrics.clone(),
            span,
            started: Instant::now(),
            done: false,
        });
        let future = {
            let _enter = timing.span.enter();
            self.inner.call(request)
        };
        MetricsFuture {
            future,
            timing: Some(timing),
        }
    }
}

pin_project! {
    /// The response future of [`MetricsService`].
    pub struct MetricsFuture<F> {
        #[pin]
        future: F,
        timing: Option<Box<Timing>>,
    }
}

impl<F, B, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<MetricsBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(timing) = this.timing.as_ref() else {
            // Nothing observed, or polled after it completed.
            return this.future.poll(cx).map_ok(|response| {
                response.map(|inner| MetricsBody {
                    inner,
                    timing: None,
                })
            });
        };
        let (polled, outcome) = {
            let _enter = timing.span.enter();
            let listening = Listening::start();
            let polled = this.future.poll(cx);
            (polled, listening.finish())
        };
        let result = ready!(polled);
        let mut timing = this.timing.take();
        Poll::Ready(match result {
            Ok(response) => {
                // Trailers-only: the status is known now. The response
                // layer says so by handing its outcome over.
                if let Some(t) = timing.as_mut() {
                    if let Some(outcome) =
                        outcome.or_else(|| status_in(response.headers()).map(Outcome::plain))
                    {
                        t.finish(outcome);
                    }
                }
                Ok(response.map(|inner| MetricsBody { inner, timing }))
            }
            Err(error) => {
                if let Some(t) = timing.as_mut() {
                    t.finish(outcome.unwrap_or(Outcome::plain(Code::Unknown)));
                }
                Err(error)
            }
        })
    }
}

pin_project! {
    /// The response body of [`MetricsService`]: records the call when the
    /// trailers pass.
    pub struct MetricsBody<B> {
        #[pin]
        inner: B,
        timing: Option<Box<Timing>>,
    }
}

impl<B: Body<Data = Bytes>> Body for MetricsBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let Some(timing) = this.timing.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        let (polled, outcome) = {
            let _enter = timing.span.enter();
            let listening = Listening::start();
            let polled = this.inner.poll_frame(cx);
            (polled, listening.finish())
        };
        let frame = ready!(polled);
        match &frame {
            Some(Ok(f)) => {
                if let Some(trailers) = f.trailers_ref() {
                    timing.finish(outcome.unwrap_or_else(|| {
                        Outcome::plain(status_in(trailers).unwrap_or(Code::Unknown))
                    }));
                }
            }
            Some(Err(_)) | None => {
                timing.finish(outcome.unwrap_or(Outcome::plain(Code::Unknown)));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Default> Default for MetricsBody<B> {
    fn default() -> Self {
        Self {
            inner: B::default(),
            timing: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_each_family_as_its_samples() {
        let openmetrics = "# HELP shed Calls shed.\n# TYPE shed counter\nshed_total 3\n\
                           # HELP up Up.\n# TYPE up gauge\n# UNIT up seconds\nup 1\n\
                           # HELP build Build.\n# TYPE build info\nbuild_info{v=\"1\"} 1\n\
                           # TYPE odd unknown\nodd 2\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus_text(openmetrics),
            "# HELP shed_total Calls shed.\n# TYPE shed_total counter\nshed_total 3\n\
             # HELP up Up.\n# TYPE up gauge\nup 1\n\
             # HELP build_info Build.\n# TYPE build_info gauge\nbuild_info{v=\"1\"} 1\n\
             # TYPE odd untyped\nodd 2\n"
        );
    }

    /// The count of one call series in the text `metrics` encode.
    fn count_of(metrics: &Metrics, code: &str) -> Option<u64> {
        let text = metrics.encode(false);
        let prefix = "rpc_server_call_duration_seconds_count{";
        text.lines()
            .filter(|l| l.starts_with(prefix) && l.contains(&format!("rpc_status_code=\"{code}\"")))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Each thread keeps handles to the series it recorded last: calls of
    /// two servers' metrics on one thread, and of one server's on two
    /// threads, are each counted once, where they belong.
    #[test]
    fn series_kept_per_thread_count_each_call_once_and_in_its_metrics() {
        let first = Metrics::new();
        let second = Metrics::new();
        let call = |metrics: &Metrics, code: Code| {
            metrics.record("grpc", "other", Outcome::plain(code), Instant::now());
        };
        for _ in 0..5 {
            call(&first, Code::Ok);
        }
        for _ in 0..3 {
            call(&second, Code::Ok);
        }
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for _ in 0..4 {
                    call(&first, Code::Ok);
                }
            });
        });
        // More series than a thread keeps: the first is recorded again
        // through the family.
        let codes = [
            Code::Cancelled,
            Code::Unknown,
            Code::InvalidArgument,
            Code::DeadlineExceeded,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::Internal,
            Code::Unavailable,
            Code::DataLoss,
            Code::Unauthenticated,
        ];
        for code in codes {
            call(&first, code);
        }
        call(&first, Code::Ok);
        assert_eq!(count_of(&first, "OK"), Some(10));
        assert_eq!(count_of(&second, "OK"), Some(3));
        assert_eq!(count_of(&first, "UNAUTHENTICATED"), Some(1));
        assert_eq!(count_of(&second, "UNAUTHENTICATED"), None);
    }

    /// Every TYPE line of the 0.0.4 text names a family whose samples
    /// follow it, by that name or, for a histogram, its suffixes.
    #[test]
    fn every_type_line_of_the_0_0_4_text_names_its_samples() {
        let metrics = Metrics::new();
        metrics.record_labels(
            "/errmap.v1.ErrorCatalog/GetError",
            Code::NotFound,
            "auth.errmap.dev",
            "API_ITEM_NOT_FOUND",
            0.001,
        );
        let text = metrics.encode(false);
        let mut family: Option<(String, String)> = None;
        let mut typed = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                family = Some((name.to_owned(), kind.to_owned()));
                typed += 1;
            } else if !line.starts_with('#') {
                let sample = line.split(['{', ' ']).next().unwrap();
                let (name, kind) = family.as_ref().expect("a TYPE line first");
                let allowed: &[&str] = match kind.as_str() {
                    "histogram" => &["_bucket", "_sum", "_count"],
                    _ => &[""],
                };
                assert!(
                    allowed.iter().any(|s| sample == format!("{name}{s}")),
                    "{sample} under # TYPE {name} {kind}\n{text}"
                );
            }
        }
        assert!(typed >= 8, "{text}");
        assert!(
            text.contains("# TYPE errmap_admission_shed_total counter\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn traceparent_is_read_only_when_well_formed() {
        let headers = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("traceparent", v.parse().unwrap());
            h
        };
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            traceparent(&headers(good)),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"))
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f35-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(traceparent(&headers(bad)), None, "{bad}");
        }
    }

    #[test]
    fn paths_are_escaped_and_bounded_in_spans() {
        let (service, method) = service_and_method("/errmap.v1.ErrorCatalog/GetError");
        assert_eq!(
            (service.as_str(), method.as_str()),
            ("errmap.v1.ErrorCatalog", "GetError")
        );
        let (_, method) = service_and_method(&format!("/s/{}\u{1b}[31m", "m".repeat(500)));
        assert!(method.len() < 260);
        assert!(!method.contains('\u{1b}'));
    }
}
