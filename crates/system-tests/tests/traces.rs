//! One request, one trace: the api and the worker run as processes against the real Redis
//! and RabbitMQ, exporting OTLP/HTTP to a receiver in this test process
//! (`fractile_test_support::otlp`), and the spans they send are checked for what the
//! traces promise.
//!
//! - A queued miss with a caller's `traceparent`: the api's SERVER span is the caller's
//!   child, named and labelled by route template; its PRODUCER `publish <queue>` span is the
//!   server span's child with the messaging attributes; the worker's CONSUMER
//!   `process <queue>` span is the publish span's child and links to it; the render and the
//!   store are the consumer's children. The response's `traceresponse` names the trace.
//! - A request that waited on a render another replica's request queued links its span to
//!   the worker's span that made the tile (its context comes in the announcement).
//! - A request that waited on another's fill in its own replica links to that request's
//!   span.
//! - A seed is one trace: the `POST`, the expansion below it, its batches below that; each of
//!   its jobs is a trace of its own (publish, then the worker's process span) linked to the
//!   batch that queued it.
//! - A seed whose expansion another replica takes over (its holder died) stays one trace: the
//!   record keeps the `POST`'s context, and the new holder's expansion is its child.
//! - Without an endpoint the api exports nothing but still passes a caller's context on to
//!   the worker, and a job it queues for a request without one starts a trace the worker
//!   continues.
//! - A job published without trace headers is processed as a new trace (no parent, no link)
//!   and its tile stored.
//! - A collector that never answers costs no request its latency, and the spans the export
//!   queue cannot hold are dropped and counted.
//! - A ratio sampler traces that ratio of the requests that come without a caller's context
//!   (decided before their span is made, so an unsampled request pays for no span), and a
//!   caller's decision is followed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fractile_queue::{Priority, RenderJob};
use fractile_render::{MaxZoom, Style, TileId, TileKey};
use fractile_test_support::otlp::{Receiver, Span, SpanKind};
use fractile_test_support::{Isolated, Process, TILE_MAC_KEY, cache_layer_of, workspace_binary};
use fractile_tile_store::{NewSeed, SeedAdmission, SeedQuotas, SeedRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

/// A caller's sampled context: trace `4bf9…4736`, span `00f0…02b7`.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The distributed settings both binaries share, on `env`'s prefix, exporting to `endpoint`.
fn shared_args(env: &Isolated) -> Vec<String> {
    [
        "--amqp-url",
        &env.amqp,
        "--redis-url",
        &env.redis,
        "--queue-prefix",
        &env.prefix,
        "--key-prefix",
        &env.prefix,
        "--tile-mac-key",
        TILE_MAC_KEY,
        "--admin-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

fn command(binary: &str, args: Vec<String>, endpoint: &str) -> std::process::Command {
    let mut command = std::process::Command::new(workspace_binary(binary));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("RUST_LOG", "info");
    command
}

/// An api process and its traffic and admin addresses (read from its `listening` line).
struct Api {
    /// Killed when the test ends.
    _process: Process,
    traffic: String,
    admin: String,
}

/// The seed routes' token of these tests' apis.
const SEED_TOKEN: &str = "seed-token-of-the-trace-tests";

fn start_api(env: &Isolated, endpoint: &str) -> Api {
    start_api_with(env, endpoint, &[])
}

/// [`start_api`] with `extra` arguments.
fn start_api_with(env: &Isolated, endpoint: &str, extra: &[&str]) -> Api {
    let mut args = shared_args(env);
    args.extend(["--listen", "127.0.0.1:0", "--seed-token", SEED_TOKEN].map(String::from));
    args.extend(extra.iter().map(|a| a.to_string()));
    let process = Process::spawn(command("fractile-api", args, endpoint));
    let line = process.wait_for_line(WAIT, |line| line.contains("\"listening\""));
    let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    let field = |name: &str| {
        json[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} in {line}"))
            .to_string()
    };
    Api {
        traffic: field("traffic"),
        admin: field("admin"),
        _process: process,
    }
}

fn start_worker(env: &Isolated, endpoint: &str) -> Process {
    let mut args = shared_args(env);
    args.extend(["--render-threads".into(), "2".into()]);
    let process = Process::spawn(command("fractile-worker", args, endpoint));
    process.wait_for_line(WAIT, |line| line.contains("connected to RabbitMQ"));
    process
}

/// A response's status and headers (lower-case names) and body length.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
}

/// `GET path` on `addr` over a connection of its own, with `headers`.
async fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    send(addr, "GET", path, headers, "").await
}

/// `method path` with `headers` and `body` on `addr`, over a connection of its own.
async fn send(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: fractile\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request sent");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .expect("read");
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer { status, headers }
}

/// The trace id a response's `traceresponse` names.
fn trace_of(answer: &Answer) -> String {
    answer
        .headers
        .get("traceresponse")
        .and_then(|t| t.split('-').nth(1))
        .expect("traceresponse")
        .to_string()
}

/// Asks `a` and `b` at once for the same cold tile (`path(n)`, a new one each round) until
/// `waited` says one answer waited on the other's work; then (the one that did the work, the
/// one that waited). A pair that did not meet proves nothing: another tile then.
async fn a_pair_that_met(
    a: &str,
    b: &str,
    path: impl Fn(u32) -> String,
    waited: impl Fn(&Answer) -> bool,
) -> (Answer, Answer) {
    for n in 0..20u32 {
        let path = path(n);
        let (first, second) = tokio::join!(get(a, &path, &[]), get(b, &path, &[]));
        assert_eq!((first.status, second.status), (200, 200));
        match (waited(&first), waited(&second)) {
            (false, true) => return (first, second),
            (true, false) => return (second, first),
            _ => {}
        }
    }
    panic!("no request waited on the other's work in 20 tiles");
}

fn one<'a>(spans: &'a [Span], pred: impl Fn(&Span) -> bool, what: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| pred(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}\nall: {spans:#?}");
    found[0]
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_queued_miss_is_one_trace_from_the_caller_to_the_render() {
    let (receiver, env, _worker) = with_a_worker().await;
    let api = connected_api(&env, &receiver.endpoint()).await;

    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let answer = get(
        &api.traffic,
        "/tiles/7/20/45.png?style=fire",
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer
            .headers
            .get("cache-status")
            .map(|v| cache_layer_of(v)),
        Some("MISS")
    );

    let queue = env.topology.queue_for(Priority::Interactive).to_string();
    let spans = receiver
        .wait_for(WAIT, |spans| {
            spans.iter().any(|s| s.name == format!("process {queue}"))
                && spans.iter().any(|s| s.name == "store and announce")
                && spans.iter().any(|s| s.name == "GET /tiles/{z}/{x}/{y}")
        })
        .await;
    let in_trace: Vec<Span> = spans
        .iter()
        .filter(|s| s.trace_id == CALLER_TRACE)
        .cloned()
        .collect();

    let server = one(&in_trace, |s| s.kind == SpanKind::Server, "the server span");
    assert_eq!(server.name, "GET /tiles/{z}/{x}/{y}");
    assert_eq!(server.service, "fractile-api");
    assert_eq!(server.parent_span_id.as_deref(), Some(CALLER_SPAN));
    assert_eq!(server.attr("http.route"), Some("/tiles/{z}/{x}/{y}"));
    assert_eq!(server.attr("http.request.method"), Some("GET"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert!(
        server
            .attributes
            .values()
            .all(|v| !v.contains("/tiles/7/20")),
        "no raw path: {server:#?}"
    );
    assert_eq!(
        answer.headers.get("traceresponse"),
        Some(&format!("00-{CALLER_TRACE}-{}-01", server.span_id))
    );

    let publish = one(
        &in_trace,
        |s| s.kind == SpanKind::Producer,
        "the publish span",
    );
    assert_eq!(publish.name, format!("publish {queue}"));
    assert_eq!(
        publish.parent_span_id.as_deref(),
        Some(server.span_id.as_str())
    );
    assert_eq!(publish.attr("messaging.system"), Some("rabbitmq"));
    assert_eq!(
        publish.attr("messaging.destination.name"),
        Some(queue.as_str())
    );
    assert_eq!(publish.attr("messaging.operation.type"), Some("send"));
    assert_eq!(publish.attr("messaging.message.id"), Some("fire/7/20/45"));
    assert!(publish.attr("messaging.message.body.size").is_some());

    let process = one(
        &in_trace,
        |s| s.kind == SpanKind::Consumer,
        "the process span",
    );
    assert_eq!(process.name, format!("process {queue}"));
    assert_eq!(process.service, "fractile-worker");
    assert_eq!(
        process.parent_span_id.as_deref(),
        Some(publish.span_id.as_str())
    );
    assert_eq!(
        process.links,
        [(CALLER_TRACE.to_string(), publish.span_id.clone())]
    );
    assert_eq!(process.attr("messaging.operation.type"), Some("process"));
    for child in ["render", "store and announce"] {
        let span = one(&in_trace, |s| s.name == child, child);
        assert_eq!(
            span.parent_span_id.as_deref(),
            Some(process.span_id.as_str()),
            "{child}"
        );
    }
    drop(api);
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn without_an_endpoint_the_api_still_passes_the_context_on() {
    let (receiver, env, _worker) = with_a_worker().await;
    // The api exports nothing (the variable set empty reads as unset).
    let api = connected_api(&env, "").await;
    let queue = env.topology.queue_for(Priority::Interactive).to_string();

    // A caller's context goes on to the worker through the api's (unexported) spans.
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let answer = get(
        &api.traffic,
        "/tiles/8/40/90.png",
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(
        !answer.headers.contains_key("traceresponse"),
        "nothing is exported"
    );
    // Without one, the job's publish starts the trace the worker continues.
    assert_eq!(
        get(&api.traffic, "/tiles/8/41/90.png", &[]).await.status,
        200
    );

    let spans = receiver
        .wait_for(WAIT, |spans| {
            spans
                .iter()
                .filter(|s| s.name == format!("process {queue}"))
                .count()
                == 2
        })
        .await;
    assert!(
        spans.iter().all(|s| s.service == "fractile-worker"),
        "{spans:#?}"
    );
    let processes: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Consumer)
        .collect();
    for process in &processes {
        let parent = process
            .parent_span_id
            .as_deref()
            .expect("the api's publish span");
        assert_eq!(process.links.len(), 1);
        assert_eq!(process.links[0].1, parent);
    }
    assert_eq!(
        processes
            .iter()
            .filter(|p| p.trace_id == CALLER_TRACE)
            .count(),
        1,
        "{processes:#?}"
    );
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_request_that_waited_on_another_replicas_render_links_to_it() {
    let (receiver, env, _worker) = with_a_worker().await;
    let a = connected_api(&env, &receiver.endpoint()).await;
    let b = connected_api(&env, &receiver.endpoint()).await;
    // A and B ask for the same tile at once: one takes the render claim and queues the
    // job, the other finds the claim and waits for the announcement.
    let joined = |answer: &Answer| {
        answer
            .headers
            .get("cache-status")
            .map(|v| cache_layer_of(v))
            == Some("MISS")
            && answer
                .headers
                .get("server-timing")
                .is_some_and(|t| t.contains("claim") && !t.contains("publish"))
    };
    let tile = |n: u32| format!("/tiles/9/{}/180.png?style=ocean", 90 + n);
    let (queued, waited) = a_pair_that_met(&a.traffic, &b.traffic, tile, joined).await;
    let (render_trace, waiter_trace) = (trace_of(&queued), trace_of(&waited));
    assert_ne!(render_trace, waiter_trace);
    let spans = receiver
        .wait_for(WAIT, |spans| {
            spans
                .iter()
                .any(|s| s.trace_id == waiter_trace && s.kind == SpanKind::Server)
                && spans
                    .iter()
                    .any(|s| s.trace_id == render_trace && s.kind == SpanKind::Consumer)
        })
        .await;
    let render = one(
        &spans,
        |s| s.trace_id == render_trace && s.kind == SpanKind::Consumer,
        "the worker's span",
    );
    let waiter = one(
        &spans,
        |s| s.trace_id == waiter_trace && s.kind == SpanKind::Server,
        "the waiting request's span",
    );
    assert_eq!(
        waiter.links,
        [(render_trace.clone(), render.span_id.clone())]
    );
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_request_that_waited_on_a_fill_in_its_replica_links_to_it() {
    let (receiver, env, _worker) = with_a_worker().await;
    let api = connected_api(&env, &receiver.endpoint()).await;
    // Two requests for one cold tile on one replica: one fills it, the other waits on that
    // fill (`coalesced` in its Server-Timing).
    let coalesced = |answer: &Answer| {
        answer
            .headers
            .get("server-timing")
            .is_some_and(|t| t.starts_with("coalesced"))
    };
    let tile = |n: u32| format!("/tiles/9/{}/200.png?style=ocean", 300 + n);
    let (filled, waited) = a_pair_that_met(&api.traffic, &api.traffic, tile, coalesced).await;
    let (fill_trace, wait_trace) = (trace_of(&filled), trace_of(&waited));
    let spans = receiver
        .wait_for(WAIT, |spans| {
            [&fill_trace, &wait_trace].iter().all(|t| {
                spans
                    .iter()
                    .any(|s| &&s.trace_id == t && s.kind == SpanKind::Server)
            })
        })
        .await;
    let server = |trace: &str| {
        one(
            &spans,
            |s| s.trace_id == trace && s.kind == SpanKind::Server,
            "a server span",
        )
        .clone()
    };
    let (fill, wait) = (server(&fill_trace), server(&wait_trace));
    assert_eq!(wait.links, [(fill_trace.clone(), fill.span_id.clone())]);
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_seed_is_one_trace_and_its_jobs_link_to_it() {
    let (receiver, env, _worker) = with_a_worker().await;
    let api = connected_api(&env, &receiver.endpoint()).await;
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let authorization = format!("Bearer {SEED_TOKEN}");
    let answer = send(
        &api.traffic,
        "POST",
        "/v1/seeds",
        &[
            ("traceparent", &traceparent),
            ("authorization", &authorization),
            ("content-type", "application/json"),
        ],
        r#"{"min_zoom": 0, "max_zoom": 1, "style": "fire"}"#,
    )
    .await;
    assert_eq!(answer.status, 202);
    // Five tiles: five jobs, five renders.
    let spans = a_five_tile_seed(&receiver, &env).await;
    let server = one(
        &spans,
        |s| s.kind == SpanKind::Server && s.trace_id == CALLER_TRACE,
        "the POST's span",
    );
    let expansion = one(&spans, |s| s.name == "seed expansion", "the expansion");
    assert_eq!(expansion.trace_id, CALLER_TRACE);
    assert_eq!(
        expansion.parent_span_id.as_deref(),
        Some(server.span_id.as_str())
    );
    let batches: Vec<&Span> = spans.iter().filter(|s| s.name == "seed batch").collect();
    assert!(!batches.is_empty());
    for batch in &batches {
        assert_eq!(
            batch.parent_span_id.as_deref(),
            Some(expansion.span_id.as_str())
        );
    }
    let publishes: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Producer)
        .collect();
    assert_eq!(publishes.len(), 5, "{publishes:#?}");
    for publish in &publishes {
        // A trace of its own, linked to a batch of the seed's trace.
        assert_eq!(publish.parent_span_id, None);
        assert_ne!(publish.trace_id, CALLER_TRACE);
        assert_eq!(publish.links.len(), 1);
        assert_eq!(publish.links[0].0, CALLER_TRACE);
        assert!(batches.iter().any(|b| b.span_id == publish.links[0].1));
        let process = one(
            &spans,
            |s| s.kind == SpanKind::Consumer && s.trace_id == publish.trace_id,
            "the job's process span",
        );
        assert_eq!(
            process.parent_span_id.as_deref(),
            Some(publish.span_id.as_str())
        );
    }
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_seed_taken_over_by_another_replica_stays_in_its_trace() {
    let (receiver, env, _worker) = with_a_worker().await;
    // A seed accepted in the caller's trace by a replica that died at once: its lease ran
    // out, nothing expanded.
    let mut record = SeedRecord::new(5, (0, 1), None, "fire", 0);
    record.traceparent = Some(format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"));
    let orphan = NewSeed {
        id: "orphan",
        record: &record,
        ttl: Duration::from_secs(600),
        lease: Some(("a-replica-that-died", Duration::from_millis(1))),
    };
    let quotas = SeedQuotas {
        max_active: 10,
        max_queued_tiles: 1_000,
    };
    assert_eq!(
        env.seeds.seed_admit(&orphan, quotas).await.expect("redis"),
        SeedAdmission::Admitted
    );
    // A replica that looks for orphans every third of a second takes it over.
    let api = start_api_with(&env, &receiver.endpoint(), &["--seed-lease", "1s"]);
    connected(&api).await;
    let spans = a_five_tile_seed(&receiver, &env).await;
    let expansion = one(&spans, |s| s.name == "seed expansion", "the expansion");
    assert_eq!(expansion.trace_id, CALLER_TRACE);
    assert_eq!(expansion.parent_span_id.as_deref(), Some(CALLER_SPAN));
    for batch in spans.iter().filter(|s| s.name == "seed batch") {
        assert_eq!(batch.trace_id, CALLER_TRACE);
    }
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_job_without_trace_headers_is_a_new_trace() {
    let (receiver, env, _worker) = with_a_worker().await;

    let publisher =
        fractile_queue::Publisher::connect(&env.amqp, "traces-test", env.topology.clone(), WAIT)
            .await
            .expect("a publisher");
    let tile = TileId::new(6, 11, 22, MaxZoom::new(18).expect("valid")).expect("a tile");
    let key = TileKey {
        tile,
        style: Style::Ocean,
    };
    let job = RenderJob::interactive(&key, std::time::SystemTime::now() + WAIT);
    publisher
        .publish_raw(Priority::Interactive, &job.encode())
        .await
        .expect("published")
        .confirmed()
        .await
        .expect("confirmed");

    let queue = env.topology.queue_for(Priority::Interactive).to_string();
    let spans = receiver
        .wait_for(WAIT, |spans| {
            spans.iter().any(|s| s.name == format!("process {queue}"))
                && spans.iter().any(|s| s.name == "store and announce")
        })
        .await;
    let process = one(&spans, |s| s.kind == SpanKind::Consumer, "the process span");
    assert_eq!(process.parent_span_id, None);
    assert!(process.links.is_empty());
    assert!(env.store.exists(&[key]).await.expect("redis")[0]);
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_collector_that_never_answers_costs_no_request_its_latency() {
    let receiver = Receiver::stalled().await;
    let env = Isolated::new().await;
    env.declare_topology().await;
    let api = start_api(&env, &receiver.endpoint());
    // One render, then hits: each request makes a span the export queue must take or drop.
    assert_eq!(get(&api.traffic, "/tiles/2/1/1.png", &[]).await.status, 200);
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    let requests = 6_000;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let addr = api.traffic.clone();
        tasks.spawn(async move {
            let mut slowest = Duration::ZERO;
            for _ in (worker..requests).step_by(8) {
                let start = Instant::now();
                assert_eq!(get(&addr, "/tiles/2/1/1.png", &[]).await.status, 200);
                slowest = slowest.max(start.elapsed());
            }
            slowest
        });
    }
    while let Some(done) = tasks.join_next().await {
        slowest = slowest.max(done.expect("a client task"));
    }
    // An export waits up to 5 s for the collector: a request that waited on one would take
    // that long.
    assert!(
        slowest < Duration::from_secs(2),
        "slowest request {slowest:?}"
    );
    assert!(
        receiver.requests() >= 1,
        "the exporter reached the stalled collector"
    );
    let metrics = get_body(&api.admin, "/metrics").await;
    let dropped = metric(&metrics, "trace_spans_dropped_total{reason=\"queue_full\"}");
    assert!(
        dropped > 0.0,
        "{requests} spans in {:?} against a queue of 4,096 and a stalled collector: {dropped}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_ratio_sampler_traces_that_ratio_of_requests_and_follows_the_caller() {
    let receiver = Receiver::start().await;
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ];
    let mut command = command(
        "fractile-api",
        args.map(String::from).to_vec(),
        &receiver.endpoint(),
    );
    command
        .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
        .env("OTEL_TRACES_SAMPLER_ARG", "0.5");
    let process = Process::spawn(command);
    let line = process.wait_for_line(WAIT, |line| line.contains("\"listening\""));
    let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    let traffic = json["traffic"].as_str().expect("traffic").to_string();
    let path = "/tiles/2/1/1.png";
    assert_eq!(get(&traffic, path, &[]).await.status, 200);

    // Requests without a caller's context: about half are traced. Deciding at the root and
    // then asking the sampler again would trace a quarter (50 of 200, four standard
    // deviations below the bound).
    const REQUESTS: usize = 200;
    let mut traced = std::collections::BTreeSet::new();
    for _ in 0..REQUESTS {
        let answer = get(&traffic, path, &[]).await;
        assert_eq!(answer.status, 200);
        if answer.headers.contains_key("traceresponse") {
            traced.insert(trace_of(&answer));
        }
    }
    assert!(
        (70..=130).contains(&traced.len()),
        "{} of {REQUESTS} requests traced at a ratio of 0.5",
        traced.len()
    );

    // A caller's decision is followed: sampled, always traced as its child; not sampled,
    // never.
    let sampled = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let unsampled = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-00");
    for _ in 0..10 {
        let answer = get(&traffic, path, &[("traceparent", &sampled)]).await;
        assert_eq!(trace_of(&answer), CALLER_TRACE);
        let answer = get(&traffic, path, &[("traceparent", &unsampled)]).await;
        assert!(!answer.headers.contains_key("traceresponse"));
    }

    // Exactly the traced requests' server spans are exported.
    let servers = |spans: &[Span]| -> Vec<String> {
        spans
            .iter()
            .filter(|s| s.kind == SpanKind::Server && s.trace_id != CALLER_TRACE)
            .map(|s| s.trace_id.clone())
            .collect()
    };
    let spans = receiver
        .wait_for(WAIT, |spans| {
            servers(spans).len() >= traced.len()
                && spans.iter().filter(|s| s.trace_id == CALLER_TRACE).count() >= 10
        })
        .await;
    let exported: std::collections::BTreeSet<String> = servers(&spans).into_iter().collect();
    assert!(
        traced.is_subset(&exported),
        "every traced request's span is exported"
    );
    assert!(
        exported.len() <= traced.len() + 1,
        "only traced requests' spans are exported (the first, rendering request may be one): {} \
         spans for {} traced requests",
        exported.len(),
        traced.len()
    );
    drop(process);
}

/// The spans of a seed of five tiles, once its expansion and its five renders are in.
async fn a_five_tile_seed(receiver: &Receiver, env: &Isolated) -> Vec<Span> {
    let process = format!("process {}", env.topology.queue_for(Priority::Bulk));
    receiver
        .wait_for(WAIT, |spans| {
            spans.iter().filter(|s| s.name == process).count() == 5
                && spans.iter().any(|s| s.name == "seed expansion")
        })
        .await
}

/// A receiver, a test environment with its topology declared, and a worker exporting to
/// the receiver.
async fn with_a_worker() -> (Receiver, Isolated, Process) {
    let receiver = Receiver::start().await;
    let env = Isolated::new().await;
    env.declare_topology().await;
    let worker = start_worker(&env, &receiver.endpoint());
    (receiver, env, worker)
}

/// An api exporting to `endpoint`, once it is connected to the broker.
async fn connected_api(env: &Isolated, endpoint: &str) -> Api {
    let api = start_api(env, endpoint);
    connected(&api).await;
    api
}

/// Waits until `api` is connected to the broker: until then a miss renders in the api.
async fn connected(api: &Api) {
    let deadline = Instant::now() + WAIT;
    while metric(&get_body(&api.admin, "/metrics").await, "queue_connected") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the api never connected to RabbitMQ"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET path`'s body as text.
async fn get_body(addr: &str, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: fractile\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request sent");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    String::from_utf8_lossy(&raw).to_string()
}

/// The value of the sample named `series` (name and labels as exposed).
fn metric(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in /metrics"))
}
