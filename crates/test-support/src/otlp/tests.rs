//! The receiver's own tests: decoding, refusals, a stalled collector, the wait's message.

use super::*;
use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Link;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as OtlpSpan, Status};
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
