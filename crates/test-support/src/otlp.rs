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
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::Link;
    use opentelemetry_proto::tonic::trace::v1::{
        ResourceSpans, ScopeSpans, Span as OtlpSpan, Status,
    };
    use std::io::{Read, Write};

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    fn string(s: &str) -> any_value::Value {
        any_value::Value::StringValue(s.to_owned())
    }

    /// A request of two spans from `fractile-api`: a server span, and its child with a link
    /// and an error status.
    fn two_spans() -> ExportTraceServiceRequest {
        let trace = vec![0xab; 16];
        let server = OtlpSpan {
            trace_id: trace.clone(),
            span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
            name: "GET /tiles".to_owned(),
            kind: SpanKind::Server as i32,
            attributes: vec![
                kv("http.route", string("/tiles/{z}/{x}/{y}")),
                kv("http.status_code", any_value::Value::IntValue(200)),
                kv("cache.hit", any_value::Value::BoolValue(false)),
                kv("ratio", any_value::Value::DoubleValue(0.25)),
                kv("raw", any_value::Value::BytesValue(vec![0x0f, 0xa0])),
                kv(
                    "zooms",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(any_value::Value::IntValue(3)),
                            },
                            AnyValue {
                                value: Some(string("four")),
                            },
                        ],
                    }),
                ),
            ],
            ..OtlpSpan::default()
        };
        let child = OtlpSpan {
            trace_id: trace,
            span_id: vec![0xff; 8],
            parent_span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
            name: "render".to_owned(),
            kind: SpanKind::Internal as i32,
            links: vec![Link {
                trace_id: vec![0x11; 16],
                span_id: vec![0x22; 8],
                ..Link::default()
            }],
            status: Some(Status {
                message: "failed".to_owned(),
                code: OtlpStatusCode::Error as i32,
            }),
            ..OtlpSpan::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", string("fractile-api")),
                        kv("service.instance.id", string("one")),
                    ],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "tracing-opentelemetry".to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    spans: vec![server, child],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    /// One HTTP/1.1 POST to `path` on `addr` with `extra` header lines, read until the server
    /// closes; the response's raw bytes, or the I/O error (a read timeout after `limit`).
    async fn post_raw(
        addr: SocketAddr,
        path: &str,
        extra: &str,
        body: Vec<u8>,
        limit: Duration,
    ) -> std::io::Result<Vec<u8>> {
        let path = path.to_owned();
        let extra = extra.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr)?;
            stream.set_read_timeout(Some(limit))?;
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\
                 Content-Length: {}\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes())?;
            stream.write_all(&body)?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response)?;
            Ok(response)
        })
        .await
        .expect("the client thread ends")
    }

    /// A protobuf POST to `/v1/traces`: the status code and the body.
    async fn export_raw(receiver: &Receiver, body: Vec<u8>) -> (u16, Vec<u8>) {
        let content_type = format!("Content-Type: {PROTOBUF}\r\n");
        let response = post_raw(
            receiver.addr,
            "/v1/traces",
            &content_type,
            body,
            Duration::from_secs(10),
        )
        .await
        .expect("the receiver answers");
        status_and_body(&response)
    }

    fn status_and_body(response: &[u8]) -> (u16, Vec<u8>) {
        let text = String::from_utf8_lossy(response);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("a status line in {text:?}"));
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of head");
        (status, response[split + 4..].to_vec())
    }

    #[tokio::test]
    async fn decodes_an_export_into_spans() {
        let receiver = Receiver::start().await;
        assert!(receiver.endpoint().starts_with("http://127.0.0.1:"));
        let (status, body) = export_raw(&receiver, two_spans().encode_to_vec()).await;
        assert_eq!(status, 200);
        assert_eq!(
            ExportTraceServiceResponse::decode(body.as_slice()).expect("a response message"),
            ExportTraceServiceResponse::default()
        );
        assert_eq!((receiver.requests(), receiver.rejected()), (1, 0));

        let spans = receiver
            .wait_for(Duration::from_secs(5), |spans| spans.len() == 2)
            .await;
        let server = by_name(&spans, "GET /tiles")[0];
        assert_eq!(server.service, "fractile-api");
        assert_eq!(server.kind, SpanKind::Server);
        assert_eq!(server.trace_id, "ab".repeat(16));
        assert_eq!(server.span_id, "0102030405060708");
        assert_eq!(server.parent_span_id, None);
        assert!(server.links.is_empty());
        assert_eq!(server.attr("http.route"), Some("/tiles/{z}/{x}/{y}"));
        assert_eq!(server.attr("http.status_code"), Some("200"));
        assert_eq!(server.attr("cache.hit"), Some("false"));
        assert_eq!(server.attr("ratio"), Some("0.25"));
        assert_eq!(server.attr("raw"), Some("0fa0"));
        assert_eq!(server.attr("zooms"), Some("[3, four]"));
        assert_eq!(server.attr("absent"), None);
        assert_eq!(
            server
                .resource
                .get("service.instance.id")
                .map(String::as_str),
            Some("one")
        );
        assert!(!server.status_error);

        let child = by_name(&spans, "render")[0];
        assert_eq!(child.service, "fractile-api");
        assert_eq!(child.kind, SpanKind::Internal);
        assert_eq!(child.trace_id, server.trace_id);
        assert_eq!(child.span_id, "ff".repeat(8));
        assert_eq!(child.parent_span_id.as_deref(), Some("0102030405060708"));
        assert_eq!(child.links, vec![("11".repeat(16), "22".repeat(8))]);
        assert!(child.attributes.is_empty());
        assert!(child.status_error);
    }

    #[tokio::test]
    async fn refuses_a_body_that_does_not_decode() {
        let receiver = Receiver::start().await;
        let (status, _) = export_raw(&receiver, vec![0xff; 16]).await;
        assert_eq!(status, 400);
        assert_eq!((receiver.requests(), receiver.rejected()), (1, 1));
        assert!(receiver.spans().is_empty());
    }

    #[tokio::test]
    async fn refuses_a_compressed_or_json_body() {
        let receiver = Receiver::start().await;
        let body = two_spans().encode_to_vec();
        let gzip = format!("Content-Type: {PROTOBUF}\r\nContent-Encoding: gzip\r\n");
        let json = "Content-Type: application/json\r\n";
        for headers in [gzip.as_str(), json] {
            let response = post_raw(
                receiver.addr,
                "/v1/traces",
                headers,
                body.clone(),
                Duration::from_secs(10),
            )
            .await
            .expect("the receiver answers");
            assert_eq!(status_and_body(&response).0, 415, "{headers}");
        }
        assert_eq!((receiver.requests(), receiver.rejected()), (2, 2));
        assert!(receiver.spans().is_empty());
    }

    #[tokio::test]
    async fn a_body_of_several_megabytes_is_read() {
        let receiver = Receiver::start().await;
        let mut request = two_spans();
        let big = "x".repeat(8 << 20);
        request.resource_spans[0].scope_spans[0].spans[0]
            .attributes
            .push(kv("big", string(&big)));
        let (status, _) = export_raw(&receiver, request.encode_to_vec()).await;
        assert_eq!(status, 200);
        assert_eq!(receiver.spans()[0].attr("big").map(str::len), Some(8 << 20));
    }

    #[tokio::test]
    async fn stalled_never_answers() {
        let receiver = Receiver::stalled().await;
        let content_type = format!("Content-Type: {PROTOBUF}\r\n");
        let answer = post_raw(
            receiver.addr,
            "/v1/traces",
            &content_type,
            two_spans().encode_to_vec(),
            Duration::from_secs(1),
        )
        .await;
        let error = answer.expect_err("no answer within 1 s");
        assert!(
            matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{error}"
        );
        assert_eq!(receiver.requests(), 1);
        assert_eq!(receiver.spans().len(), 2);
    }

    #[tokio::test]
    #[should_panic(expected = "0 requests to /v1/traces (0 rejected), 1 to other paths, 0 spans")]
    async fn wait_for_fails_with_what_it_has() {
        let receiver = Receiver::start().await;
        let _ = post_raw(
            receiver.addr,
            "/traces",
            "",
            Vec::new(),
            Duration::from_secs(10),
        )
        .await;
        receiver
            .wait_for(Duration::from_millis(100), |spans| !spans.is_empty())
            .await;
    }
}
