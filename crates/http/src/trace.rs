//! Span export: the OpenTelemetry tracer provider both binaries install, from the standard
//! `OTEL_*` settings ([`TraceArgs`]).
//!
//! Every process has a provider, so every span has a trace and span id that logs carry and
//! that travels on (HTTP in, AMQP out), exported or not. With an endpoint, finished sampled
//! spans go to a bounded queue ([`SPAN_QUEUE`]) that one thread of its own drains in batches
//! (at most [`SPAN_QUEUE`] + 512 spans held in all) to the OTLP/HTTP exporter (blocking reqwest, never on a runtime that serves requests). A
//! collector that is down or slow costs a request nothing: when the queue is full a span is
//! dropped, counted in `trace_spans_dropped_total{reason="queue_full"}`, and logged once per
//! interval; a batch the collector refuses or does not take within [`EXPORT_TIMEOUT`] is
//! counted with `reason="export_failed"`. The SDK's own batch processor counts its drops
//! only in a log line at shutdown, hence this one.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{LazyLock, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fractile_settings::{RootSampling, Sampling, TraceArgs};
use fractile_telemetry::RateLimitedLog;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, SamplingResult, SdkTracer,
    SdkTracerProvider, ShouldSample, Span, SpanData, SpanExporter, SpanProcessor,
};
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// Finished spans waiting for export, at most; more are dropped (and counted).
pub const SPAN_QUEUE: usize = 4096;
/// Spans per export request, at most.
const MAX_BATCH: usize = 512;
/// How long a span waits for its batch to fill before the batch is sent anyway.
const BATCH_INTERVAL: Duration = Duration::from_secs(2);
/// How long one export request may take (the collector's answer included).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the last spans to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// At most one warning per this interval for drops and failed exports.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// The export counters, one set per process, registered by each binary in its registry.
pub struct ExportMetrics {
    /// `trace_spans_exported_total`: spans the collector accepted.
    pub exported: IntCounter,
    /// `trace_spans_dropped_total{reason}`: spans lost, `queue_full` or `export_failed`.
    pub dropped: IntCounterVec,
}

impl ExportMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(ExportMetrics {
            exported: IntCounter::new(
                "trace_spans_exported_total",
                "Spans sent to the OTLP endpoint and accepted by it.",
            )?,
            dropped: IntCounterVec::new(
                Opts::new(
                    "trace_spans_dropped_total",
                    "Finished sampled spans not exported: reason=\"queue_full\" (the export \
                     queue was full: the collector is slow or down) or \"export_failed\".",
                ),
                &["reason"],
            )?,
        })
    }

    /// Registers the counters in `registry` (each binary's, once).
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.exported.clone()))?;
        registry.register(Box::new(self.dropped.clone()))?;
        for reason in ["queue_full", "export_failed"] {
            self.dropped.with_label_values(&[reason]);
        }
        Ok(())
    }
}

/// The process's export counters.
pub fn export_metrics() -> &'static ExportMetrics {
    static METRICS: LazyLock<ExportMetrics> =
        LazyLock::new(|| ExportMetrics::new().expect("static metric definitions are valid"));
    &METRICS
}

/// The process's tracer provider. Shut it down at exit to send the last spans.
#[derive(Debug, Clone)]
pub struct Tracing {
    provider: SdkTracerProvider,
    disabled: bool,
}

impl Tracing {
    /// The provider the settings describe: their sampler and resource, and an exporter when
    /// an endpoint is set. `default_service` names the service when `OTEL_SERVICE_NAME`
    /// does not.
    pub fn new(args: &TraceArgs, default_service: &str) -> Result<Tracing, String> {
        let resource = resource(args, default_service);
        let mut builder = SdkTracerProvider::builder()
            .with_sampler(HeadSampled(sampler(args.sampling())))
            .with_resource(resource.clone());
        let url = args.traces_url();
        if let Some(url) = &url {
            let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(url.clone())
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| format!("the OTLP exporter for {url}: {e}"))?;
            exporter.set_resource(&resource);
            let processor = BoundedExport::start(exporter, SPAN_QUEUE, export_metrics())
                .map_err(|e| format!("starting the span export thread: {e}"))?;
            builder = builder.with_span_processor(processor);
        }
        Ok(Tracing {
            provider: builder.build(),
            disabled: args.sdk_disabled,
        })
    }

    /// The tracer `tracing-opentelemetry` makes spans with; `None` when tracing is off
    /// (`OTEL_SDK_DISABLED=true`).
    pub fn tracer(&self) -> Option<SdkTracer> {
        (!self.disabled).then(|| self.provider.tracer("fractile"))
    }

    /// Sends what is queued, waiting a few seconds at most; at exit.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!(error = %e, "spans may be lost: exporting the last ones failed");
        }
    }
}

/// The spans' resource: the version, the configured attributes, and the service name after
/// them (`TraceArgs::service_name` settles its precedence).
fn resource(args: &TraceArgs, default_service: &str) -> Resource {
    Resource::builder_empty()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attributes(
            args.resource_attributes()
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_service_name(args.service_name(default_service))
        .build()
}

/// The SDK's sampler for the settings' choice.
fn sampler(sampling: Sampling) -> Sampler {
    let root = |root: RootSampling| match root {
        RootSampling::AlwaysOn => Sampler::AlwaysOn,
        RootSampling::AlwaysOff => Sampler::AlwaysOff,
        RootSampling::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
    };
    match sampling {
        Sampling::AlwaysOn => Sampler::AlwaysOn,
        Sampling::AlwaysOff => Sampler::AlwaysOff,
        Sampling::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
        Sampling::ParentBased(inner) => Sampler::ParentBased(Box::new(root(inner))),
    }
}

/// Decides whether a request that arrived without a caller's context starts a sampled trace,
/// before its span exists (head sampling at the edge).
///
/// With a ratio sampler most requests are not sampled, but a span the OpenTelemetry layer
/// sees costs the same sampled or not: its builder, its fields as attributes, its context,
/// about 8,500 instructions an L1 hit (18 %). A request this rejects gets a span that layer
/// never sees (`fractile_telemetry::UNTRACED`), like a request when nothing is exported, and
/// the one it accepts gets a server span that [`HeadSampled`] samples without asking again.
/// The decision is the configured sampler's own, for a root server span with a fresh random
/// trace id, so the sampled fraction is the configured one.
#[derive(Debug, Clone)]
pub struct RootSampler(Sampler);

impl RootSampler {
    /// The configured sampler's decision for a request without a caller's context.
    pub fn new(sampling: Sampling) -> RootSampler {
        RootSampler(sampler(sampling))
    }

    /// Whether this request starts a sampled trace: the configured sampler's decision for a
    /// root server span with a fresh random trace id.
    pub fn sample(&self) -> bool {
        let trace_id = RandomIdGenerator::default().new_trace_id();
        let result = self
            .0
            .should_sample(None, trace_id, "request", &SpanKind::Server, &[], &[]);
        result.decision == SamplingDecision::RecordAndSample
    }
}

/// The configured sampler, except for a root server span: a request's, whose sampling
/// [`RootSampler`] decided before the span was made (a span it rejects never reaches the
/// SDK), so it is sampled. Asking the configured sampler again would sample a ratio of the
/// ratio. Every other span (one with a parent, local or remote, and every root that is not
/// a request's: a job published outside a request, a job without a context) is the
/// configured sampler's.
#[derive(Debug, Clone)]
struct HeadSampled(Sampler);

impl ShouldSample for HeadSampled {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let root = parent.is_none_or(|cx| !cx.has_active_span());
        if root && *kind == SpanKind::Server {
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: TraceState::default(),
            };
        }
        self.0
            .should_sample(parent, trace_id, name, kind, attributes, links)
    }
}

/// What the export thread is asked to do.
enum Message {
    Span(Box<SpanData>),
    /// Export what is queued, then answer.
    Flush(SyncSender<()>),
    /// Export what is queued, shut the exporter down, answer and end.
    Shutdown(SyncSender<()>),
}

/// A span processor with a bounded queue that never blocks the caller, drained by a thread
/// of its own; see the module docs.
#[derive(Debug)]
struct BoundedExport {
    queue: SyncSender<Message>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl BoundedExport {
    fn start<E: SpanExporter + 'static>(
        exporter: E,
        capacity: usize,
        metrics: &'static ExportMetrics,
    ) -> std::io::Result<Self> {
        let (queue, receive) = mpsc::sync_channel(capacity);
        let thread = std::thread::Builder::new()
            .name("span-export".into())
            .spawn(move || export_loop(exporter, receive, metrics))?;
        Ok(BoundedExport {
            queue,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Asks the thread for `message`'s work and waits for its answer, `timeout` at most.
    fn ask(&self, message: fn(SyncSender<()>) -> Message, timeout: Duration) -> OTelSdkResult {
        let (done, answered) = mpsc::sync_channel(1);
        self.queue
            .send(message(done))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        answered
            .recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl SpanProcessor for BoundedExport {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.queue.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                export_metrics()
                    .dropped
                    .with_label_values(&["queue_full"])
                    .inc();
                static FULL: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
                if let Some(suppressed) = FULL.check() {
                    tracing::warn!(
                        suppressed,
                        "span export queue full (the collector is slow or down): dropping spans"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Message::Flush, EXPORT_TIMEOUT + SHUTDOWN_TIMEOUT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let result = self.ask(Message::Shutdown, timeout);
        if result.is_ok()
            && let Ok(mut thread) = self.thread.lock()
            && let Some(thread) = thread.take()
        {
            let _ = thread.join();
        }
        result
    }
}

/// The export thread: batches of at most [`MAX_BATCH`] spans, sent when full or
/// [`BATCH_INTERVAL`] after the first span of the batch arrived.
fn export_loop<E: SpanExporter>(
    exporter: E,
    queue: Receiver<Message>,
    metrics: &'static ExportMetrics,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    let mut due: Option<Instant> = None;
    loop {
        let wait = due.map_or(Duration::from_secs(3600), |due| {
            due.saturating_duration_since(Instant::now())
        });
        match queue.recv_timeout(wait) {
            Ok(Message::Span(span)) => {
                batch.push(*span);
                due.get_or_insert_with(|| Instant::now() + BATCH_INTERVAL);
                if batch.len() >= MAX_BATCH {
                    export(&exporter, &mut batch, metrics);
                    due = None;
                }
            }
            Ok(Message::Flush(done)) => {
                export(&exporter, &mut batch, metrics);
                due = None;
                let _ = done.send(());
            }
            Ok(Message::Shutdown(done)) => {
                export(&exporter, &mut batch, metrics);
                let _ = exporter.shutdown();
                let _ = done.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                export(&exporter, &mut batch, metrics);
                due = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                export(&exporter, &mut batch, metrics);
                let _ = exporter.shutdown();
                return;
            }
        }
    }
}

/// Sends `batch` (emptied) and counts the outcome.
fn export<E: SpanExporter>(exporter: &E, batch: &mut Vec<SpanData>, metrics: &ExportMetrics) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
    let count = spans.len() as u64;
    match futures_lite::future::block_on(exporter.export(spans)) {
        Ok(()) => metrics.exported.inc_by(count),
        Err(error) => {
            metrics
                .dropped
                .with_label_values(&["export_failed"])
                .inc_by(count);
            static FAILED: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
            if let Some(suppressed) = FAILED.check() {
                tracing::warn!(%error, spans = count, suppressed, "exporting spans failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use opentelemetry::trace::{SpanContext, Tracer};

    /// An exporter that takes `delay` per batch and counts what it got.
    #[derive(Debug, Clone)]
    struct Slow {
        delay: Duration,
        spans: Arc<AtomicU64>,
    }

    impl SpanExporter for Slow {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            std::thread::sleep(self.delay);
            self.spans.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok(())
        }
    }

    fn provider(exporter: Slow, capacity: usize) -> SdkTracerProvider {
        let processor =
            BoundedExport::start(exporter, capacity, export_metrics()).expect("a thread");
        SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOn)
            .with_span_processor(processor)
            .build()
    }

    #[test]
    fn spans_are_exported_and_flushed_at_shutdown() {
        let spans = Arc::new(AtomicU64::new(0));
        let provider = provider(
            Slow {
                delay: Duration::ZERO,
                spans: spans.clone(),
            },
            64,
        );
        let tracer = provider.tracer("test");
        for _ in 0..10 {
            tracer.in_span("work", |_| {});
        }
        provider.shutdown().expect("shut down");
        assert_eq!(spans.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn a_stalled_exporter_never_blocks_the_span_and_drops_are_counted() {
        let spans = Arc::new(AtomicU64::new(0));
        let provider = provider(
            Slow {
                delay: Duration::from_millis(300),
                spans: spans.clone(),
            },
            8,
        );
        let tracer = provider.tracer("test");
        let dropped = || {
            export_metrics()
                .dropped
                .with_label_values(&["queue_full"])
                .get()
        };
        let before = dropped();
        let start = Instant::now();
        for _ in 0..1000 {
            tracer.in_span("work", |_| {});
        }
        // 1,000 spans against a queue of 8 and an exporter that takes 300 ms a batch: if a
        // span waited for room, this would take minutes.
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        // What the queue and the thread's batch could not hold was dropped and counted;
        // the rest is exported at shutdown: nothing is lost without a count.
        provider.shutdown().expect("shut down");
        let dropped = dropped() - before;
        assert!(dropped > 0);
        assert_eq!(dropped + spans.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn the_resource_names_the_service_as_the_settings_say() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            trace: TraceArgs,
        }
        let name = |args: &[&str]| {
            let cli = Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
                .expect("valid");
            let resource = resource(&cli.trace, "fractile-api");
            let get = |key: &'static str| {
                resource
                    .get(&opentelemetry::Key::from_static_str(key))
                    .map(|v| v.to_string())
            };
            (get("service.name"), get("team"), get("service.version"))
        };
        let version = Some(env!("CARGO_PKG_VERSION").to_string());
        assert_eq!(
            name(&[]),
            (Some("fractile-api".into()), None, version.clone())
        );
        let attrs = ["--otel-resource-attributes", "service.name=tiles,team=maps"];
        assert_eq!(
            name(&attrs),
            (Some("tiles".into()), Some("maps".into()), version.clone())
        );
        let mut both = attrs.to_vec();
        both.extend(["--otel-service-name", "edge"]);
        assert_eq!(name(&both).0.as_deref(), Some("edge"));
    }

    #[test]
    fn samplers_follow_the_settings() {
        assert!(matches!(sampler(Sampling::AlwaysOff), Sampler::AlwaysOff));
        assert!(matches!(
            sampler(Sampling::Ratio(0.25)),
            Sampler::TraceIdRatioBased(r) if r == 0.25
        ));
        assert!(matches!(
            sampler(Sampling::ParentBased(RootSampling::AlwaysOn)),
            Sampler::ParentBased(_)
        ));
    }

    /// How many of `n` requests `sampling`'s root decision traces.
    fn traced_of(sampling: Sampling, n: usize) -> usize {
        let roots = RootSampler::new(sampling);
        (0..n).filter(|_| roots.sample()).count()
    }

    #[test]
    fn the_root_decision_is_the_configured_samplers() {
        assert_eq!(traced_of(Sampling::AlwaysOn, 100), 100);
        assert_eq!(traced_of(Sampling::AlwaysOff, 100), 0);
        assert_eq!(
            traced_of(Sampling::ParentBased(RootSampling::AlwaysOff), 100),
            0
        );
        // 10,000 draws at 0.25: 2,500 expected, a standard deviation of 43.
        for sampling in [
            Sampling::Ratio(0.25),
            Sampling::ParentBased(RootSampling::Ratio(0.25)),
        ] {
            let traced = traced_of(sampling, 10_000);
            assert!((2_250..=2_750).contains(&traced), "{traced}");
        }
    }

    /// What `HeadSampled` over `inner` decides for a span of `kind` under `parent`.
    fn decision(inner: Sampler, parent: Option<SpanContext>, kind: SpanKind) -> SamplingDecision {
        let cx = parent.map(|p| Context::new().with_remote_span_context(p));
        let trace_id = RandomIdGenerator::default().new_trace_id();
        HeadSampled(inner)
            .should_sample(cx.as_ref(), trace_id, "span", &kind, &[], &[])
            .decision
    }

    #[test]
    fn a_request_chosen_at_the_root_is_sampled_and_every_other_span_as_configured() {
        let never = || Sampler::ParentBased(Box::new(Sampler::AlwaysOff));
        // A root server span was chosen before it was made.
        assert_eq!(
            decision(never(), None, SpanKind::Server),
            SamplingDecision::RecordAndSample
        );
        // Any other root is the configured sampler's.
        for kind in [SpanKind::Producer, SpanKind::Consumer, SpanKind::Internal] {
            assert_eq!(decision(never(), None, kind), SamplingDecision::Drop);
        }
        // A span with a parent follows it (parent-based), server spans included.
        let remote = |flags| {
            SpanContext::new(
                TraceId::from(7),
                opentelemetry::trace::SpanId::from(9),
                flags,
                true,
                TraceState::default(),
            )
        };
        let unsampled = remote(opentelemetry::trace::TraceFlags::default());
        let sampled = remote(opentelemetry::trace::TraceFlags::SAMPLED);
        assert_eq!(
            decision(never(), Some(unsampled), SpanKind::Server),
            SamplingDecision::Drop
        );
        assert_eq!(
            decision(never(), Some(sampled), SpanKind::Consumer),
            SamplingDecision::RecordAndSample
        );
    }
}
