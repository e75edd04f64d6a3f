//! The `tracing` subscriber: JSON lines for containers, pretty for terminals; level from
//! `RUST_LOG` (default `info`); and the OpenTelemetry layer, which gives every span a trace
//! and span id (exported or not, see `fractile_http::trace`). What the settings ask for is
//! [`LogArgs`]; this installs it. A JSON line written inside a span carries that span's
//! `trace_id` and `span_id` (hex, the names of OpenTelemetry's log data model).

use std::fmt as stdfmt;
use std::sync::{Arc, OnceLock};

use fractile_settings::{LogArgs, LogFormat};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::trace::SdkTracer;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, filter, fmt, prelude::*};

/// Installs the global subscriber the settings ask for, with `tracer` making the spans'
/// OpenTelemetry side (none: tracing is off). A second call (tests) leaves the first in
/// place.
pub fn init(args: &LogArgs, tracer: Option<SdkTracer>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(tracer.map(otel_layer));
    let _ = match args.log_format {
        LogFormat::Json => registry.with(json_layer(std::io::stdout)).try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())))
            .try_init(),
    };
}

/// The OpenTelemetry layer. What it does beyond keeping a span's own fields costs every
/// request's span: source locations, targets, thread names and busy/idle times are left out,
/// entering a span does not make its context OpenTelemetry's current one (fractile reads a
/// span's context from the span, `context::inject`; that cost more than the rest of the
/// layer), and [`UNTRACED`] spans are not seen at all.
fn otel_layer<S>(tracer: SdkTracer) -> impl tracing_subscriber::Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_target(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_filter(filter::filter_fn(|meta| !is_untraced(meta)))
}

/// The end of the target that keeps a span out of OpenTelemetry (`<crate>::untraced`): no
/// trace context, no ids in its log lines, and none of the layer's cost (about 5,000
/// instructions a span, a ninth of an L1 hit). Its children that are traced start a trace of
/// their own. The api marks so a request that came without a caller's context when spans
/// are not exported: nothing would show its span, and a job it queues starts the trace.
pub const UNTRACED: &str = "::untraced";

/// Whether `meta` is a span kept out of OpenTelemetry (see [`UNTRACED`]).
fn is_untraced(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().ends_with(UNTRACED)
}

/// The JSON lines: the event's fields flattened, the current span's fields as `span`, and
/// its trace and span ids.
fn json_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let json = fmt::format()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false);
    let dispatch = Registered::default();
    dispatch.clone().and_then(
        fmt::layer()
            .event_format(WithTraceIds {
                inner: json,
                dispatch,
            })
            .fmt_fields(JsonSpanFields)
            .with_writer(writer),
    )
}

/// The subscriber this layer is part of, kept when it is registered: an event format cannot
/// ask for the current dispatcher (inside a subscriber's callback that answers "none", so
/// that a subscriber cannot recurse into itself), and the span's OpenTelemetry context is
/// found through it.
#[derive(Clone, Default)]
struct Registered(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> tracing_subscriber::Layer<S> for Registered {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.0.set(subscriber.downgrade());
    }
}

/// A JSON event format with `"trace_id"` and `"span_id"` added when the event is inside a
/// span with a valid OpenTelemetry context. Only lines written pay for it (nothing is
/// logged on a cache hit at `info`).
struct WithTraceIds<F> {
    inner: F,
    dispatch: Registered,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> stdfmt::Result {
        // Before the inner format reads the span's extensions: the context lookup takes them
        // for writing.
        let dispatch = self.dispatch.0.get().and_then(WeakDispatch::upgrade);
        let ids = ctx
            .lookup_current()
            .zip(dispatch)
            .and_then(|(span, dispatch)| {
                tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)
            });
        let ids = ids.and_then(|cx| {
            let span = cx.span();
            let sc = span.span_context();
            sc.is_valid()
                .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
        });
        let Some((trace_id, span_id)) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        // The object's closing brace is the last one (a newline may follow).
        let Some(end) = line.rfind('}') else {
            return writer.write_str(&line);
        };
        writer.write_str(&line[..end])?;
        write!(
            writer,
            ",\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\""
        )?;
        writer.write_str(&line[end..])
    }
}

/// Span fields as a JSON object, written straight into the span's buffer.
///
/// The JSON format keeps each span's fields as the text of a JSON object, made when the span
/// opens; every log line inside the span copies them. tracing-subscriber's own `JsonFields`
/// builds a map of `serde_json::Value`s first, an allocation per field, which made the api's
/// per-request span most of the cost of its logging on an L1 hit (nothing is logged on a hit
/// at `info`, but the span is made). This writes the same object without the detour.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonSpanFields;

impl<'w> FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> stdfmt::Result {
        let mut object = JsonObject::new(&mut writer);
        fields.record(&mut object);
        object.finish()
    }

    /// Fields recorded after the span opened join its object (a later value of a field it
    /// already has is written again; readers keep the last).
    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> stdfmt::Result {
        let reopened = current.fields.ends_with('}');
        if reopened {
            current.fields.pop();
        }
        let first = !reopened || current.fields == "{";
        let mut writer = current.as_writer();
        let mut object = JsonObject {
            writer: &mut writer,
            first,
            result: Ok(()),
        };
        if !reopened {
            object.result = object.writer.write_char('{');
        }
        fields.record(&mut object);
        object.finish()
    }
}

/// Writes visited fields as the members of one JSON object.
struct JsonObject<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: stdfmt::Result,
}

impl<'a, 'w> JsonObject<'a, 'w> {
    fn new(writer: &'a mut Writer<'w>) -> Self {
        let result = writer.write_char('{');
        JsonObject {
            writer,
            first: true,
            result,
        }
    }

    /// Writes `"name":` and then the value with `value`. Fields named `otel.*` are
    /// instructions to the OpenTelemetry layer (a span's name and kind), not data: left out.
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'w>) -> stdfmt::Result) {
        if self.result.is_err() || field.name().starts_with("otel.") {
            return;
        }
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            ","
        };
        self.result = self
            .writer
            .write_str(separator)
            .and_then(|()| write_json_str(self.writer, field.name()))
            .and_then(|()| self.writer.write_char(':'))
            .and_then(|()| value(self.writer));
    }

    fn finish(self) -> stdfmt::Result {
        self.result.and_then(|()| self.writer.write_char('}'))
    }
}

impl Visit for JsonObject<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |w| write_json_str(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn stdfmt::Debug) {
        self.member(field, |w| write_json_args(w, format_args!("{value:?}")));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity.
        self.member(field, |w| {
            if value.is_finite() {
                write!(w, "{value}")
            } else {
                w.write_str("null")
            }
        });
    }
}

/// Writes `text` as a JSON string: quoted, with `"`, `\\` and control characters escaped.
fn write_json_str(writer: &mut Writer<'_>, text: &str) -> stdfmt::Result {
    writer.write_char('"')?;
    write_escaped(writer, text)?;
    writer.write_char('"')
}

/// Writes formatted `text` as a JSON string, escaping it as it is formatted.
fn write_json_args(writer: &mut Writer<'_>, text: stdfmt::Arguments<'_>) -> stdfmt::Result {
    /// Escapes what passes through it.
    struct Escaping<'a, 'w>(&'a mut Writer<'w>);
    impl stdfmt::Write for Escaping<'_, '_> {
        fn write_str(&mut self, s: &str) -> stdfmt::Result {
            write_escaped(self.0, s)
        }
    }
    writer.write_char('"')?;
    stdfmt::write(&mut Escaping(writer), text)?;
    writer.write_char('"')
}

/// Writes `s` with JSON's escapes. Every byte that needs one is ASCII, so a byte scan finds
/// them without decoding UTF-8, and the runs between them are written whole.
fn write_escaped(writer: &mut Writer<'_>, s: &str) -> stdfmt::Result {
    let mut plain = 0;
    for (i, byte) in s.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..0x20 => "",
            _ => continue,
        };
        writer.write_str(&s[plain..i])?;
        if escaped.is_empty() {
            write!(writer, "\\u{byte:04x}")?;
        } else {
            writer.write_str(escaped)?;
        }
        plain = i + 1;
    }
    writer.write_str(&s[plain..])
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// A writer into a shared buffer, for the lines a subscriber writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn json(&self) -> Vec<serde_json::Value> {
            let text = String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8");
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
                .collect()
        }
    }

    #[test]
    fn json_lines_inside_a_traced_span_carry_its_trace_and_span_ids() {
        let provider = SdkTracerProvider::builder().build();
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(otel_layer(provider.tracer("test")))
            .with(json_layer(move || writer.clone()));
        let expected = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside any span");
            let span = tracing::info_span!("request", route = "/x");
            span.in_scope(|| tracing::warn!(n = 1, "inside"));
            let untraced = tracing::info_span!(target: "app::untraced", "request");
            untraced.in_scope(|| tracing::warn!("inside an untraced span"));
            let sc = crate::context::span_context(&span).expect("a traced span has a context");
            (sc.trace_id().to_string(), sc.span_id().to_string())
        });
        let lines = lines.json();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].get("trace_id").is_none());
        assert_eq!(lines[1]["trace_id"], expected.0.as_str());
        assert_eq!(lines[1]["span_id"], expected.1.as_str());
        assert_eq!(lines[1]["n"], 1);
        assert_eq!(lines[1]["span"]["route"], "/x");
        assert_eq!(expected.0.len(), 32);
        assert!(lines[2].get("trace_id").is_none(), "{:?}", lines[2]);
        assert_eq!(lines[2]["message"], "inside an untraced span");
    }

    /// What `JsonSpanFields` writes for a span with `fields`, parsed back.
    fn formatted(make: impl FnOnce() -> tracing::Span) -> serde_json::Value {
        use tracing_subscriber::registry::LookupSpan;
        let subscriber = tracing_subscriber::registry().with(
            fmt::layer()
                .json()
                .fmt_fields(JsonSpanFields)
                .with_writer(std::io::sink),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = make();
            let text = tracing::dispatcher::get_default(|dispatch| {
                let registry = dispatch
                    .downcast_ref::<tracing_subscriber::Registry>()
                    .expect("the registry is the subscriber's root");
                let id = span.id().expect("span enabled");
                let data = registry.span(&id).expect("span exists");
                let ext = data.extensions();
                ext.get::<FormattedFields<JsonSpanFields>>()
                    .expect("fields formatted")
                    .fields
                    .clone()
            });
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
        })
    }

    #[test]
    fn span_fields_are_a_json_object_with_every_value_escaped() {
        let tricky = "quote \" backslash \\ newline \n tab \t bell \u{7} é";
        let value = formatted(|| {
            tracing::info_span!(
                "request",
                method = %"GET",
                route = tricky,
                n = 7u64,
                signed = -3i64,
                ok = true,
                ratio = 0.5f64,
                nan = f64::NAN,
                debug = ?Some("x"),
            )
        });
        assert_eq!(
            value,
            serde_json::json!({
                "method": "GET", "route": tricky, "n": 7, "signed": -3, "ok": true,
                "ratio": 0.5, "nan": null, "debug": "Some(\"x\")",
            })
        );
    }

    #[test]
    fn fields_recorded_later_join_the_object() {
        let value = formatted(|| {
            let span = tracing::info_span!("request", route = "/", status = tracing::field::Empty);
            span.record("status", 200u64);
            span
        });
        assert_eq!(value, serde_json::json!({"route": "/", "status": 200}));
        let value = formatted(|| {
            let span = tracing::info_span!("request", status = tracing::field::Empty);
            span.record("status", 200u64);
            span
        });
        assert_eq!(value, serde_json::json!({"status": 200}));
    }
}
