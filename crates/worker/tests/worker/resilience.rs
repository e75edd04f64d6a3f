//! A worker killed mid-seed, a consumer that ends, a graceful shutdown.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fractile_queue::RenderJob;
use fractile_render::{MaxZoom, RenderError, Style, TileKey, TileRange, render_tile};
use fractile_tile_store::{NewSeed, SeedAdmission, SeedQuotas, SeedRecord, SeedState};
use fractile_worker::{Renderer, Worker};

use crate::helpers::*;

fn passive() -> fractile_queue::lapin::options::QueueDeclareOptions {
    fractile_queue::lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

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

async fn seed_progress(env: &Env, id: &str) -> (u64, u64) {
    let record = env
        .store
        .seed_get(id)
        .await
        .expect("redis")
        .expect("seed exists");
    (record.done, record.failed)
}

#[tokio::test]
async fn killing_a_worker_mid_seed_loses_no_tile() {
    let Some(env) = Env::new().await else { return };
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
    let admitted = env.store.seed_admit(&seed, quotas).await.expect("seed");
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
async fn a_consumer_that_ends_makes_the_worker_exit_non_zero() {
    let Some(env) = Env::new().await else { return };
    let args = env.worker_args(1);
    let mut command = Command::new(env!("CARGO_BIN_EXE_fractile-worker"));
    command
        .args(&args[1..])
        .env("FRACTILE_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn");
    let worker = fractile_test_support::Process::spawn(command);
    // Wait until the worker consumes, then pull its queue from under it: the broker
    // cancels the consumer, and a worker that kept running would consume nothing forever.
    eventually("the worker consumes", Duration::from_secs(20), || async {
        env.channel
            .queue_declare(
                env.topology.interactive.as_str().into(),
                passive(),
                Default::default(),
            )
            .await
            .is_ok_and(|q| q.consumer_count() > 0)
    })
    .await;
    env.channel
        .queue_delete(env.topology.interactive.as_str().into(), Default::default())
        .await
        .expect("deleted");
    // It exits by itself, non-zero, and without a panic on the way out.
    let status = tokio::task::spawn_blocking(move || worker.wait_exit(Duration::from_secs(20)))
        .await
        .expect("waited");
    assert!(!status.success(), "exit status {status:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn shutdown_finishes_and_acks_the_job_in_progress() {
    let Some(env) = Env::new().await else { return };
    let slow: Renderer = Arc::new(
        |k: TileKey, cancelled: &dyn Fn() -> bool| -> Result<Vec<u8>, RenderError> {
            std::thread::sleep(Duration::from_millis(700));
            render_tile(k.tile, k.style, cancelled)
        },
    );
    let worker = Worker::new(env.worker_config())
        .expect("worker")
        .with_renderer(slow);
    let metrics = worker.metrics();
    let running = start(worker);
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
async fn a_paused_worker_holds_its_jobs_until_the_pause_lifts() {
    let Some(env) = Env::new().await else { return };
    let worker = Worker::new(env.worker_config()).expect("worker");
    let faults = worker.faults();
    faults
        .apply(
            serde_json::from_value(serde_json::json!({ "pause_consumption": true }))
                .expect("valid"),
        )
        .expect("applied");
    let running = start(worker);
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
