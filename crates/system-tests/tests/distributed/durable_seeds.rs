//! Durable seeds: the replica expanding a seed is killed with SIGKILL and another one
//! finishes the expansion unasked; a cancel during the expansion always ends `cancelled`;
//! a full bulk queue refuses jobs with a nack and the expansion waits for room.

use std::process::Command;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fractile_api::seeds::SeedStatus;
use fractile_queue::{Publisher, QueueError, RenderJob};
use fractile_render::{MaxZoom, Style, TileId, TileKey};
use fractile_test_support::{Process, rabbitmqctl, workspace_binary};
use fractile_tile_store::{SeedRecord, SeedState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use crate::seeds::{cancel_seed, get_seed, post_seed};

/// Zoom 10 tiles of a rectangle well outside the Mandelbrot set (every point escapes in a
/// few iterations, so each renders in milliseconds): 160 × 126 = 20,160 tiles.
const CHEAP_SEED: &str = r#"{"min_zoom": 10, "max_zoom": 10, "style": "classic",
    "bbox": {"min_re": 0.6, "min_im": 1.2, "max_re": 1.22, "max_im": 1.69}}"#;

/// The tiles of [`CHEAP_SEED`]: columns 857-1016, rows 79-204 of zoom 10.
fn cheap_seed_tiles() -> Vec<TileKey> {
    let range = fractile_render::TileRange::covering(10, MaxZoom::LIMIT, 0.6, 1.2, 1.22, 1.69)
        .expect("valid")
        .expect("inside the world");
    range
        .tiles()
        .map(|tile| TileKey {
            tile,
            style: Style::Classic,
        })
        .collect()
}

/// One tile in this many of the kill test's seed is rendered; the others are stored
/// beforehand, and counted done by whichever replica expands past them. Rendering all
/// 20,160 takes the test's two worker threads over three minutes (about 90 tiles/s here).
const RENDERED_ONE_IN: usize = 20;

/// The seed's record; a read that fails (Redis over its budget on a busy machine) is
/// tried again, a few times.
async fn record(cluster: &Cluster, id: &str) -> SeedRecord {
    let mut attempts = 0;
    loop {
        match cluster.seeds.seed_get(id).await {
            Ok(found) => return found.expect("the seed exists"),
            Err(error) if attempts < 5 => {
                eprintln!("reading the seed failed ({error}); again");
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("reading the seed: {error}"),
        }
    }
}

/// `POST /v1/seeds` over HTTP/1.1 to a running api: the status and the seed's id.
async fn post_over_http(addr: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /v1/seeds HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {SEED_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("the api answers")
    .expect("read response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let (_, json) = response.split_once("\r\n\r\n").expect("a body");
    let seed: SeedStatus = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    (status, seed.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn killing_the_expanding_replica_leaves_the_seed_to_another_which_finishes_it() {
    let cluster = Cluster::new().await;
    const LEASE: &str = "2s";
    // The replica that will be killed: the api binary, expanding the seed it accepted.
    let mut doomed = {
        let mut command = Command::new(workspace_binary("fractile-api"));
        command
            .env("FRACTILE_LISTEN", "127.0.0.1:0")
            .env("FRACTILE_ADMIN_LISTEN", "127.0.0.1:0")
            .env("FRACTILE_LOG_FORMAT", "json")
            .env("FRACTILE_REDIS_URL", &cluster.redis)
            .env("FRACTILE_AMQP_URL", &cluster.amqp)
            .env("FRACTILE_KEY_PREFIX", &cluster.prefix)
            .env("FRACTILE_QUEUE_PREFIX", &cluster.prefix)
            .env("FRACTILE_SEED_TOKEN", SEED_TOKEN)
            .env("FRACTILE_SEED_LEASE", LEASE)
            .env("FRACTILE_RENDER_THREADS", "1");
        Process::spawn(command)
    };
    let listening = doomed.wait_for_line(Duration::from_secs(30), |l| l.contains("\"listening\""));
    let event: serde_json::Value = serde_json::from_str(&listening).expect("a JSON log line");
    let addr = event["traffic"]
        .as_str()
        .expect("traffic address")
        .to_owned();
    // Most tiles are stored already: found by the expansion, they count as done unrendered.
    let tiles = cheap_seed_tiles();
    assert_eq!(tiles.len(), 20_160);
    for (i, key) in tiles.iter().enumerate() {
        if i % RENDERED_ONE_IN != 0 {
            cluster
                .store
                .put(key, b"stored before")
                .await
                .expect("redis");
        }
    }
    // Another replica, in this process, with the same lease.
    let mut config = cluster.api_config();
    config.seed_lease = Duration::from_secs(2);
    let (_survivor, _) = cluster.api(&config).await;
    // Seeds go to the killed replica only once its publisher is up.
    let started = Instant::now();
    let id = loop {
        let (status, id) = post_over_http(&addr, CHEAP_SEED).await;
        if status == 202 {
            break id;
        }
        assert!(
            status == 503 && started.elapsed() < Duration::from_secs(20),
            "POST answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Kill it once it has queued part of the seed, mid-expansion.
    let at_kill = loop {
        let r = record(&cluster, &id).await;
        if r.cursor >= Some(1000) {
            doomed.kill();
            break record(&cluster, &id).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the seed was not expanding"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    eprintln!(
        "killed the expanding replica at cursor {:?} of {} ({} queued)",
        at_kill.cursor, at_kill.total, at_kill.queued
    );
    assert!(at_kill.total >= 20_000, "{} tiles", at_kill.total);
    assert_eq!(
        at_kill.state,
        SeedState::Expanding,
        "killed after the expansion had finished: nothing left to take over"
    );
    assert!(at_kill.cursor.expect("a cursor") < at_kill.total);

    // Nobody asks anything from here on: the survivor takes the expansion over when the
    // lease runs out, and the workers render every tile.
    let worker = start_worker(cluster.worker_config(2));
    let limit = Duration::from_secs(90);
    let finished = Instant::now();
    let done = loop {
        let r = record(&cluster, &id).await;
        if r.reported_state() == "done" {
            break r;
        }
        assert!(
            finished.elapsed() < limit,
            "not done within {limit:?}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "done {} of {} in {:?} after the kill",
        done.done,
        done.total,
        finished.elapsed()
    );
    assert_eq!((done.done, done.failed), (done.total, 0));
    assert_eq!(done.cursor, Some(done.total));
    // Every tile queued or skipped at least once; the batch in flight at the kill may
    // have been queued twice. (Not `queued >= tiles not stored before`: a tile of that batch
    // may be rendered before the survivor expands the batch again, and then counts as
    // skipped. What matters is below: each of those tiles was rendered.)
    assert!(done.queued + done.skipped >= done.total, "{done:?}");
    let stored = cluster.store.exists(&tiles).await.expect("redis");
    assert!(stored.iter().all(|s| *s), "every tile stored");
    for key in tiles.iter().step_by(RENDERED_ONE_IN) {
        let png = cluster
            .store
            .get(key)
            .await
            .expect("redis")
            .expect("stored");
        assert!(png.starts_with(b"\x89PNG"), "{key} was not rendered");
    }
    worker.shutdown().await;
    cluster.cleanup().await;
}

/// `POST /v1/seeds`, accepted. A 503 (Redis over its budget while every test of the suite
/// runs at once on a small machine) is a refusal to retry, as a client would.
async fn accept(app: &axum::Router, body: &str) -> axum::http::Response<axum::body::Body> {
    for _ in 0..10 {
        let response = send(app, post_seed(body)).await;
        if response.status() != StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            return response;
        }
        eprintln!("seed refused: {}", body_json(response).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the seed was refused ten times");
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_cancel_during_expansion_always_ends_cancelled() {
    let cluster = Cluster::new().await;
    let (_, app) = cluster.api(&cluster.api_config()).await;
    // Cancels land at different points of the expansion: before the first batch, between
    // batches, as it ends, after it; every seed ends cancelled and stays so.
    let mut seen_expanding = 0;
    for round in 0..12u64 {
        let accepted = accept(&app, r#"{"min_zoom": 0, "max_zoom": 5}"#).await;
        let location = header(&accepted, "location");
        let id = location.trim_start_matches("/v1/seeds/").to_owned();
        tokio::time::sleep(Duration::from_millis(round * round * 5)).await;
        if record(&cluster, &id).await.state == SeedState::Expanding {
            seen_expanding += 1;
        }
        let cancelled = send(&app, cancel_seed(&location)).await;
        assert_eq!(cancelled.status(), StatusCode::OK);
        // The expansion notices at its next step; give it time to try to move on.
        let queued_then = record(&cluster, &id).await.queued;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let after = record(&cluster, &id).await;
        assert_eq!(
            after.state,
            SeedState::Cancelled,
            "round {round}: {after:?}"
        );
        assert!(
            after.queued <= queued_then + 500,
            "round {round}: kept queueing after the cancel: {queued_then} then {}",
            after.queued
        );
        let reported = send(&app, get_seed(&location)).await;
        assert_eq!(body_json(reported).await["state"], "cancelled");
    }
    assert!(seen_expanding > 0, "no cancel landed mid-expansion");
    cluster.cleanup().await;
}

async fn bulk_ready(cluster: &Cluster) -> u32 {
    cluster
        .topology
        .ready_messages(&cluster.channel, &cluster.topology.bulk)
        .await
        .expect("queue")
}

/// A policy bounding one test's bulk queue, removed when dropped.
struct BulkBound {
    name: String,
}

impl BulkBound {
    fn set(cluster: &Cluster, jobs: u32) -> BulkBound {
        let name = format!("{}bulk-bound", cluster.prefix);
        let pattern = format!("^{}$", regex_escape(&cluster.topology.bulk));
        let definition = format!(r#"{{"max-length": {jobs}}}"#);
        rabbitmqctl(&[
            "set_policy",
            "--apply-to",
            "queues",
            "--priority",
            "100",
            &name,
            &pattern,
            &definition,
        ]);
        BulkBound { name }
    }
}

impl Drop for BulkBound {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["clear_policy", &self.name])
            .status();
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escape = !c.is_ascii_alphanumeric() && c != '-' && c != '_';
            escape.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_full_bulk_queue_refuses_with_a_nack_and_the_expansion_waits_for_room() {
    const BOUND: u32 = 100;
    let cluster = Cluster::new().await;
    // The declared bound (250,000) is lowered by a policy, as an operator would.
    let _bound = BulkBound::set(&cluster, BOUND);
    let (_, app) = cluster.api(&cluster.api_config()).await;
    // Zooms 0-5: 1365 tiles, and no worker yet: the queue fills at its bound.
    let accepted = accept(&app, r#"{"min_zoom": 0, "max_zoom": 5}"#).await;
    let location = header(&accepted, "location");
    let id = location.trim_start_matches("/v1/seeds/").to_owned();
    eventually(
        "the bulk queue is full",
        Duration::from_secs(20),
        || async { bulk_ready(&cluster).await >= BOUND },
    )
    .await;
    // A publish past the bound is refused with a nack, not queued and not dropped.
    let publisher = Publisher::connect(
        &cluster.amqp,
        "test-full",
        cluster.topology.clone(),
        Duration::from_secs(10),
    )
    .await
    .expect("publisher");
    let tile = TileKey {
        tile: TileId::new(7, 1, 1, MaxZoom::LIMIT).expect("valid"),
        style: Style::Fire,
    };
    let refused = publisher
        .publish(&RenderJob::bulk(&tile, "other"))
        .await
        .expect("written")
        .confirmed()
        .await;
    assert!(
        matches!(refused, Err(QueueError::Rejected(_))),
        "{refused:?}"
    );
    // The expansion waits, neither failing the seed nor filling the queue further. A
    // quorum queue's bound is checked as publishes arrive, so the jobs of the batch in
    // flight when it was reached may pass it: at most one batch (500).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = bulk_ready(&cluster).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = bulk_ready(&cluster).await;
    eprintln!("bulk queue bounded at {BOUND}: {before}, then {after} ready");
    assert_eq!(before, after, "the queue still grew");
    assert!(after <= BOUND + 500, "{after} ready");
    let waiting = record(&cluster, &id).await;
    assert_eq!(waiting.state, SeedState::Expanding, "{waiting:?}");
    assert!(waiting.cursor < Some(waiting.total), "{waiting:?}");
    // Workers make room; the expansion goes on and the seed finishes whole.
    let worker = start_worker(cluster.worker_config(2));
    eventually("the seed is done", Duration::from_secs(90), || async {
        record(&cluster, &id).await.reported_state() == "done"
    })
    .await;
    let done = record(&cluster, &id).await;
    assert_eq!((done.done, done.failed, done.total), (1365, 0, 1365));
    worker.shutdown().await;
    cluster.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_replica_shutting_down_mid_expansion_hands_it_over_at_once() {
    let cluster = Cluster::new().await;
    // Long leases, so that only a released one can be taken over during the test.
    let mut config = cluster.api_config();
    config.seed_lease = Duration::from_secs(60);
    let (leaving, app) = cluster.api(&config).await;
    let (_staying, _) = cluster.api(&config).await;
    // A full queue keeps the expansion going until the shutdown.
    let bound = BulkBound::set(&cluster, 100);
    let accepted = accept(&app, r#"{"min_zoom": 0, "max_zoom": 5}"#).await;
    let id = header(&accepted, "location")
        .trim_start_matches("/v1/seeds/")
        .to_owned();
    eventually(
        "the bulk queue is full",
        Duration::from_secs(20),
        || async { bulk_ready(&cluster).await >= 100 },
    )
    .await;
    assert!(
        leaving.stop_background(Duration::from_secs(5)).await,
        "the expansion stops at shutdown"
    );
    let at_shutdown = record(&cluster, &id).await;
    assert_eq!(at_shutdown.state, SeedState::Expanding);
    // Released: free to take now, a minute before the lease would have run out. (Taken
    // here and given back, to see it.)
    let lease = Duration::from_secs(60);
    assert_eq!(
        cluster
            .seeds
            .seed_take_over("probe", lease)
            .await
            .expect("redis")
            .as_deref(),
        Some(id.as_str()),
        "the lease was not released at shutdown"
    );
    cluster
        .seeds
        .seed_release(&id, "probe")
        .await
        .expect("redis");
    drop(bound);
    let shut_down = Instant::now();
    let worker = start_worker(cluster.worker_config(2));
    eventually(
        "the other replica expands the seed",
        Duration::from_secs(90),
        || async { record(&cluster, &id).await.cursor > at_shutdown.cursor },
    )
    .await;
    eprintln!(
        "the other replica recorded a batch {:?} after the shutdown",
        shut_down.elapsed()
    );
    eventually("the seed is done", Duration::from_secs(60), || async {
        record(&cluster, &id).await.reported_state() == "done"
    })
    .await;
    worker.shutdown().await;
    cluster.cleanup().await;
}
