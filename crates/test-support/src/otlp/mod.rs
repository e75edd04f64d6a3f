//! An in-process OTLP/HTTP trace receiver: a test points a binary's
//! `OTEL_EXPORTER_OTLP_ENDPOINT` at [`Receiver::endpoint`] and asserts on the [`Span`]s it
//! exported. The receiver serves `POST /v1/traces` on 127.0.0.1 and decodes each protobuf
//! `ExportTraceServiceRequest` into flat [`Span`]s; [`Receiver::stalled`] is a collector that
//! takes requests and never answers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as OtlpStatusCode;
use prost::Message;
use tokio::sync::watch;

/// The kind of a span (server, client, producer, ...), as OTLP numbers it.
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// The largest export request the receiver reads: the exporter's batches of a busy test
/// run to a few MB.
const BODY_LIMIT: usize = 64 << 20;

/// The protobuf media type of OTLP/HTTP, in both directions.
const PROTOBUF: &str = "application/x-protobuf";

/// One exported span, flattened out of its resource and scope.
#[derive(Clone, Debug)]
pub struct Span {
    /// The resource's `service.name` (`""` when it has none).
    pub service: String,
    /// The span's name.
    pub name: String,
    /// The span's kind; a number OTLP does not define reads as `Unspecified`.
    pub kind: SpanKind,
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
    /// The parent's span id, for a span that has one.
    pub parent_span_id: Option<String>,
    /// The linked spans, as (trace id, span id).
    pub links: Vec<(String, String)>,
    /// The span's attributes, each value rendered by [`render`].
    pub attributes: BTreeMap<String, String>,
    /// The resource's attributes, rendered the same way.
    pub resource: BTreeMap<String, String>,
    /// Whether the span's status is `Error`.
    pub status_error: bool,
}

impl Span {
    /// The attribute `key`, rendered as a string.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The spans named `name`, in the order received.
pub fn by_name<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// What the receiver has seen, shared by its handlers and the test.
#[derive(Default)]
struct Seen {
    spans: Mutex<Vec<Span>>,
    /// Requests to `/v1/traces`, answered or not, decoded or not.
    requests: AtomicU64,
    /// Of those, the ones refused: a body that does not decode (400), a content type or
    /// encoding other than uncompressed protobuf (415).
    rejected: AtomicU64,
    /// Requests to any other path (a misconfigured endpoint), answered 404.
    stray: AtomicU64,
}

/// The handlers' state.
#[derive(Clone)]
struct Shared {
    seen: Arc<Seen>,
    /// Whether the handler never answers (the receiver of [`Receiver::stalled`]).
    stall: bool,
    /// Becomes true when the receiver is dropped: the server stops, and stalled requests end.
    shutdown: watch::Receiver<bool>,
}

/// An OTLP/HTTP trace receiver on 127.0.0.1, serving until dropped.
pub struct Receiver {
    addr: SocketAddr,
    seen: Arc<Seen>,
    shutdown: watch::Sender<bool>,
}

impl Receiver {
    /// A receiver that answers each export with 200 and an empty
    /// `ExportTraceServiceResponse`.
    pub async fn start() -> Receiver {
        Self::serve(false).await
    }

    /// A collector that hangs: it accepts connections, reads and records each export
    /// request like [`start`](Self::start), and never answers (until dropped).
    pub async fn stalled() -> Receiver {
        Self::serve(true).await
    }

    async fn serve(stall: bool) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binds 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let seen = Arc::new(Seen::default());
        let (shutdown, stopped) = watch::channel(false);
        let shared = Shared {
            seen: Arc::clone(&seen),
            stall,
            shutdown: stopped.clone(),
        };
        let app = Router::new()
            .route("/v1/traces", post(export))
            .fallback(stray)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(shared);
        let mut stopped = stopped;
        tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
                .expect("the OTLP receiver serves");
        });
        Receiver {
            addr,
            seen,
            shutdown,
        }
    }

    /// The base URL for `OTEL_EXPORTER_OTLP_ENDPOINT`: `http://127.0.0.1:PORT` (the exporter
    /// appends `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The export requests received on `/v1/traces`, including the rejected ones.
    pub fn requests(&self) -> u64 {
        self.seen.requests.load(Ordering::SeqCst)
    }

    /// The export requests refused with 400 (undecodable) or 415 (not uncompressed protobuf).
    pub fn rejected(&self) -> u64 {
        self.seen.rejected.load(Ordering::SeqCst)
    }

    /// Every span received so far, in the order received.
    pub fn spans(&self) -> Vec<Span> {
        self.seen.spans.lock().expect("not poisoned").clone()
    }

    /// Polls until `pred` holds for the spans received, and returns them; after `timeout`,
    /// fails the test with the spans and requests it has.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return spans;
            }
            if Instant::now() >= deadline {
                let mut listing = String::new();
                for s in &spans {
                    let _ = writeln!(
                        listing,
                        "  {}: {} {:?} trace {} span {} parent {:?} {:?}",
                        s.service,
                        s.name,
                        s.kind,
                        s.trace_id,
                        s.span_id,
                        s.parent_span_id,
                        s.attributes
                    );
                }
                panic!(
                    "timed out after {timeout:?} waiting for the spans; {} requests to /v1/traces \
                     ({} rejected), {} to other paths, {} spans:\n{listing}",
                    self.requests(),
                    self.rejected(),
                    self.seen.stray.load(Ordering::SeqCst),
                    spans.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// `POST /v1/traces`.
async fn export(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let seen = &shared.seen;
    seen.requests.fetch_add(1, Ordering::SeqCst);
    let answer = receive(seen, &headers, &body);
    if answer.is_err() {
        seen.rejected.fetch_add(1, Ordering::SeqCst);
    }
    if shared.stall {
        let mut shutdown = shared.shutdown;
        let _ = shutdown.wait_for(|stop| *stop).await;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match answer {
        Ok(()) => (
            [(header::CONTENT_TYPE, PROTOBUF)],
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
            .into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// Any other path: counted for [`Receiver::wait_for`]'s report, and 404.
async fn stray(State(shared): State<Shared>) -> StatusCode {
    shared.seen.stray.fetch_add(1, Ordering::SeqCst);
    StatusCode::NOT_FOUND
}

/// Checks and decodes one export request, and records its spans.
fn receive(seen: &Seen, headers: &HeaderMap, body: &[u8]) -> Result<(), (StatusCode, String)> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != PROTOBUF {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type {content_type:?}: only {PROTOBUF} is received"),
        ));
    }
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content encoding {encoding:?}: only an uncompressed body is received"),
        ));
    }
    let request = ExportTraceServiceRequest::decode(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("undecodable request: {e}")))?;
    let spans = flatten(request);
    seen.spans.lock().expect("not poisoned").extend(spans);
    Ok(())
}

/// The request's spans, each with its resource's attributes.
fn flatten(request: ExportTraceServiceRequest) -> Vec<Span> {
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = attributes(
            resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default(),
        );
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for span in resource_spans
            .scope_spans
            .into_iter()
            .flat_map(|scope| scope.spans)
        {
            spans.push(Span {
                service: service.clone(),
                name: span.name,
                kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: (!span.parent_span_id.is_empty())
                    .then(|| hex(&span.parent_span_id)),
                links: span
                    .links
                    .iter()
                    .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
                    .collect(),
                attributes: attributes(span.attributes),
                resource: resource.clone(),
                status_error: span
                    .status
                    .is_some_and(|s| s.code == OtlpStatusCode::Error as i32),
            });
        }
    }
    spans
}

fn attributes(pairs: Vec<KeyValue>) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|kv| (kv.key, render(kv.value.as_ref())))
        .collect()
}

/// An attribute value as a string: a string as it is; a bool, integer or double by its
/// `Display`; bytes in lower-case hex; an array as `[a, b]`; a key-value list as
/// `{k: v, ...}`; no value as `""`.
pub fn render(value: Option<&AnyValue>) -> String {
    use any_value::Value;
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => hex(b),
        Some(Value::ArrayValue(array)) => {
            let items: Vec<String> = array.values.iter().map(|v| render(Some(v))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Value::KvlistValue(list)) => {
            let items: Vec<String> = list
                .values
                .iter()
                .map(|kv| format!("{}: {}", kv.key, render(kv.value.as_ref())))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Some(Value::StringValueStrindex(index)) => format!("strindex {index}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests;
