//! A worker killed mid-seed, a consumer that ends, a graceful shutdown.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fractile_queue::RenderJob;
use fractile_render::{MaxZoom, RenderError, Style, TileKey, TileRange, render_tile};
use fractile_tile_store::{NewSeed, SeedAdmission, SeedQuotas, SeedRecord, SeedState};
use fractile_worker::{Renderer, Worker};

use crate::helpers::*;

fn spawn_worker_process(env: &Env, threads: usize) -> Child {
    let args = env.worker_args(threads);
    Command::new(env!("CARGO_BIN_EXE_fractile-worker"))
        .args(&args[1..])
        .env("FRACTILE_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker binary starts")
}

/// Pauses consumption (fault injection): deliveries are held unsettled until it lifts.
fn pause(faults: &fractile_http::faults::Faults) {
    faults
        .apply(
            serde_json::from_value(serde_json::json!({ "pause_consumption": true }))
                .expect("valid"),
        )
        .expect("applied");
}

async fn seed_progress(env: &Env, id: &str) -> (u64, u64) {
    let record = env
        .seeds
        .seed_get(id)
        .await
        .expect("redis")
        .expect("seed exists");
    (record.done, record.failed)
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn killing_a_worker_mid_seed_loses_no_tile() {
    let env = Env::new().await;
    // Zooms 0-4: 341 tiles.
    let tiles: Vec<TileKey> = (0..=4)
        .flat_map(|z| TileRange::whole(z, MaxZoom::LIMIT).expect("valid").tiles())
        .map(|tile| TileKey {
            tile,
            style: Style::Fire,
        })
        .collect();
    let id = "killtest";
    let mut record = SeedRecord::new(tiles.len() as u64, (0, 4), None, "fire", 0);
    record.state = SeedState::Running;
    let seed = NewSeed {
        id,
        record: &record,
        ttl: Duration::from_secs(600),
        lease: None,
    };
    let quotas = SeedQuotas {
        max_active: 1,
        max_queued_tiles: 1000,
    };
    let admitted = env.seeds.seed_admit(&seed, quotas).await.expect("seed");
    assert_eq!(admitted, SeedAdmission::Admitted);
    for tile in &tiles {
        env.send(&RenderJob::bulk(tile, id)).await;
    }

    let mut doomed = spawn_worker_process(&env, 1);
    eventually(
        "the first worker has made progress",
        Duration::from_secs(60),
        || async { seed_progress(&env, id).await.0 >= 20 },
    )
    .await;
    doomed.kill().expect("SIGKILL");
    let _ = doomed.wait();
    let (done_at_kill, _) = seed_progress(&env, id).await;
    assert!(done_at_kill < tiles.len() as u64, "killed mid-seed");

    let mut survivor = spawn_worker_process(&env, 2);
    eventually("the seed completes", Duration::from_secs(120), || async {
        seed_progress(&env, id).await == (tiles.len() as u64, 0)
    })
    .await;
    let stored = env.store.exists(&tiles).await.expect("redis");
    assert!(stored.iter().all(|s| *s), "every tile is in Redis");
    let _ = survivor.kill();
    let _ = survivor.wait();
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_consumer_that_ends_is_set_up_again_and_the_worker_never_panics() {
    let env = Env::new().await;
    let args = env.worker_args(1);
    let mut command = Command::new(env!("CARGO_BIN_EXE_fractile-worker"));
    command
        .args(&args[1..])
        .env("FRACTILE_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn");
    let worker = fractile_test_support::Process::spawn(command);
    let consumers = || env.consumers(&env.topology.interactive);
    eventually("the worker consumes", Duration::from_secs(20), || async {
        consumers().await > 0
    })
    .await;
    // Pull its queue from under it: the broker cancels the consumer. A worker that kept
    // running without it would consume nothing for ever; this one says so and sets its
    // consumers (and the queue) up again.
    env.channel
        .queue_delete(env.topology.interactive.as_str().into(), Default::default())
        .await
        .expect("deleted");
    eventually(
        "the worker says it stopped consuming",
        Duration::from_secs(20),
        || async {
            worker
                .output()
                .iter()
                .any(|l| l.contains("consuming stopped") && l.contains("Interactive"))
        },
    )
    .await;
    eventually(
        "the worker consumes again",
        Duration::from_secs(20),
        || async { consumers().await > 0 },
    )
    .await;
    let tile = key(4, 1, 1);
    let job = RenderJob::interactive(&tile, SystemTime::now() + Duration::from_secs(30));
    env.send(&job).await;
    eventually("the job is rendered", Duration::from_secs(20), || async {
        matches!(env.store.get(&tile).await, Ok(Some(_)))
    })
    .await;

    worker.terminate();
    let status = tokio::task::spawn_blocking(move || worker.wait_exit(Duration::from_secs(20)))
        .await
        .expect("waited");
    assert!(status.success(), "exit status {status:?}");
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn shutdown_finishes_and_acks_the_job_in_progress() {
    let env = Env::new().await;
    let slow: Renderer = Arc::new(
        |k: TileKey, cancelled: &dyn Fn() -> bool| -> Result<Vec<u8>, RenderError> {
            std::thread::sleep(Duration::from_millis(700));
            render_tile(k.tile, k.style, cancelled)
        },
    );
    let worker = Worker::new(env.worker_config(2))
        .expect("worker")
        .with_renderer(slow);
    let metrics = worker.metrics();
    let running = run_worker(worker);
    let tile = key(3, 4, 4);
    let job = RenderJob::interactive(&tile, SystemTime::now() + Duration::from_secs(30));
    env.send(&job).await;
    eventually(
        "the job is in progress",
        Duration::from_secs(10),
        || async { metrics.in_progress.get() == 1 },
    )
    .await;

    running.shutdown().await;
    assert!(
        env.store.get(&tile).await.expect("redis").is_some(),
        "the job finished"
    );
    assert_eq!(
        env.ready(&env.topology.interactive).await,
        0,
        "and was acked, not returned"
    );
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_paused_worker_holds_its_jobs_until_the_pause_lifts() {
    let env = Env::new().await;
    let worker = Worker::new(env.worker_config(2)).expect("worker");
    let faults = worker.faults();
    pause(&faults);
    let running = run_worker(worker);
    let tile = key(5, 7, 9);
    env.send(&RenderJob::bulk(&tile, "paused-seed")).await;
    eventually(
        "the job reaches the worker",
        Duration::from_secs(10),
        || async { env.ready(&env.topology.bulk).await == 0 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        env.store.get(&tile).await.expect("redis").is_none(),
        "nothing is rendered while paused"
    );
    faults.clear();
    eventually("the held job renders", Duration::from_secs(10), || async {
        matches!(env.store.get(&tile).await, Ok(Some(_)))
    })
    .await;
    running.shutdown().await;
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_failed_depth_read_is_counted_and_the_other_depths_stay_current() {
    let env = Env::new().await;
    let worker = Worker::new(env.worker_config(2)).expect("worker");
    let metrics = worker.metrics();
    // Paused: the worker holds its prefetch (2 bulk jobs) and the rest stays ready.
    pause(&worker.faults());
    let running = run_worker(worker);
    env.wait_consuming(&env.topology.bulk).await;
    // The dead-letter queue disappears: its depth cannot be read any more.
    env.delete_queue(&env.topology.dead).await;
    for x in 0..8 {
        env.send(&RenderJob::bulk(&key(3, x, 0), "depth-seed"))
            .await;
    }
    eventually(
        "the failed read is counted",
        Duration::from_secs(15),
        || async { metrics.depth_poll_failures.get() > 0 },
    )
    .await;
    let ready = i64::from(env.ready(&env.topology.bulk).await);
    assert!(ready > 0, "jobs are waiting");
    eventually(
        "the bulk depth is read after the failure",
        Duration::from_secs(15),
        || async { metrics.queue_depth.with_label_values(&["bulk"]).get() == ready },
    )
    .await;
    running.shutdown().await;
    env.cleanup().await;
}
