//! Trace context across process boundaries: W3C `traceparent`/`tracestate` written into and
//! read from whatever carries a request (HTTP headers, AMQP message headers, a Redis value),
//! and the ids of a `tracing` span. Each carrier names its own fields; this module only moves
//! the context, with the W3C Trace Context propagator.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header (and field) names, lower case as HTTP/2 and AMQP tables carry them.
pub const TRACEPARENT: &str = "traceparent";
/// The vendor-specific companion of [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// A span's context, as `(field, value)` pairs to carry: `traceparent`, and `tracestate` when
/// not empty. Empty when the span has no valid context (no subscriber with the
/// OpenTelemetry layer).
pub fn inject(span: &tracing::Span) -> Vec<(&'static str, String)> {
    struct Pairs(Vec<(&'static str, String)>);
    impl Injector for Pairs {
        fn set(&mut self, key: &str, value: String) {
            let key = match key {
                TRACEPARENT => TRACEPARENT,
                TRACESTATE => TRACESTATE,
                _ => return,
            };
            if !value.is_empty() {
                self.0.push((key, value));
            }
        }
    }
    let mut pairs = Pairs(Vec::with_capacity(2));
    TraceContextPropagator::new().inject_context(&span.context(), &mut pairs);
    pairs.0
}

/// `span`'s W3C `traceparent` alone, for a carrier with one field for it.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    inject(span)
        .into_iter()
        .find_map(|(name, value)| (name == TRACEPARENT).then_some(value))
}

/// `span`'s own span context, if valid (to link another span to it).
pub fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    let cx = span.context();
    let span_ref = cx.span();
    let sc = span_ref.span_context();
    sc.is_valid().then(|| sc.clone())
}

/// The remote span context a carrier's `traceparent` and `tracestate` name, if valid.
pub fn extract(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<SpanContext> {
    struct Fields<'a>(Option<&'a str>, Option<&'a str>);
    impl Extractor for Fields<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                TRACEPARENT => self.0,
                TRACESTATE => self.1,
                _ => None,
            }
        }
        fn keys(&self) -> Vec<&str> {
            vec![TRACEPARENT, TRACESTATE]
        }
    }
    let cx = TraceContextPropagator::new().extract(&Fields(traceparent, tracestate));
    let remote = cx.span().span_context().clone();
    remote.is_valid().then_some(remote)
}

/// Makes `remote` the parent of `span`, which must not have started yet (call it right
/// after creating the span). Its sampling decision is the parent's, with a parent-based
/// sampler.
pub fn set_parent(span: &tracing::Span, remote: SpanContext) {
    let cx = opentelemetry::Context::new().with_remote_span_context(remote);
    // Fails only without the OpenTelemetry layer (tests) or for a started span: the span
    // stays a root, which loses the join, not the work.
    let _ = span.set_parent(cx);
}

/// Links `span` to `other` (another trace's span it waited on or was caused by).
pub fn add_link(span: &tracing::Span, other: SpanContext) {
    span.add_link(other);
}

/// Gives an HTTP server span the conventions' attributes for its request:
/// `http.request.method` and `http.route` (the route template, never the raw path).
pub fn http_server(span: &tracing::Span, method: &str, route: &str) {
    span.set_attribute("http.request.method", method.to_string());
    span.set_attribute("http.route", route.to_string());
}

/// Records an HTTP server span's status: `http.response.status_code`, and the span's
/// status as an error for a 5xx (the HTTP conventions leave 4xx unset on a server span).
pub fn record_status(span: &tracing::Span, status: u16) {
    span.set_attribute("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.set_status(opentelemetry::trace::Status::error(""));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_is_read_and_a_bad_one_is_none() {
        let remote = extract(Some(PARENT), None).expect("valid");
        assert_eq!(
            remote.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(remote.span_id().to_string(), "00f067aa0ba902b7");
        assert!(remote.is_sampled() && remote.is_remote());
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(extract(Some(bad), None).is_none(), "{bad}");
        }
        assert!(extract(None, None).is_none());
    }

    #[test]
    fn without_the_layer_nothing_is_injected() {
        assert!(inject(&tracing::Span::none()).is_empty());
        assert!(span_context(&tracing::Span::none()).is_none());
    }
}
