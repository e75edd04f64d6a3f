//! What the worker does with a job: render, store, announce, then ack; drop what nobody
//! can use; dead-letter poison.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fractile_queue::{INTERACTIVE_MAX_ATTEMPTS, Priority, RenderJob};
use fractile_render::{RenderError, TileKey, render_tile};
use fractile_worker::{Renderer, Worker};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn an_interactive_job_is_rendered_stored_announced_then_acked() {
    let env = Env::new().await;
    let worker = Worker::new(env.worker_config(2)).expect("worker");
    let metrics = worker.metrics();
    let running = run_worker(worker);
    let stop = CancellationToken::new();
    let ready = env.store.ready_listener(stop.clone());
    assert!(ready.wait_connected(Duration::from_secs(5)).await);

    let tile = key(4, 3, 5);
    let mut wait = ready.register(&tile);
    let job = RenderJob::interactive(&tile, SystemTime::now() + Duration::from_secs(10));
    env.send(&job).await;
    let note = tokio::time::timeout(Duration::from_secs(15), wait.announced())
        .await
        .expect("announced");
    assert_eq!(note.key, tile.to_string());
    assert!(note.render_ms > 0.0);

    let stored = env
        .store
        .get(&tile)
        .await
        .expect("redis")
        .expect("stored before the announcement");
    assert_eq!(
        stored.as_ref(),
        render_tile(tile.tile, tile.style, &|| false)
            .expect("renders")
            .as_slice()
    );
    eventually("the job is acked", Duration::from_secs(5), || async {
        metrics.in_progress.get() == 0
    })
    .await;
    assert_eq!(env.ready(&env.topology.interactive).await, 0);
    assert_eq!(metrics.render.count("ok"), 1);

    running.shutdown().await;
    // Nothing came back to the queue when the worker's connection closed: it was acked.
    assert_eq!(env.ready(&env.topology.interactive).await, 0);
    stop.cancel();
    env.cleanup().await;
}

/// The api looked in Redis a moment before it queued the job, so a first delivery renders
/// without looking again (a round trip on the waiting request's path); a seed job looks.
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_first_interactive_delivery_renders_without_looking_for_a_stored_tile() {
    let env = Env::new().await;
    let (interactive, seeded) = (key(3, 2, 2), key(3, 2, 3));
    // Placeholders where the tiles would be (another tile's picture, stored as theirs): the
    // seed job must find its own, the interactive job must not look.
    let other = key(0, 0, 0);
    let placeholder = render_tile(other.tile, other.style, &|| false).expect("renders");
    for tile in [interactive, seeded] {
        env.store.put(&tile, &placeholder).await.expect("redis");
    }
    let worker = Worker::new(env.worker_config(2)).expect("worker");
    let metrics = worker.metrics();
    let running = run_worker(worker);
    env.send(&RenderJob::interactive(
        &interactive,
        SystemTime::now() + Duration::from_secs(10),
    ))
    .await;
    env.send(&RenderJob::bulk(&seeded, "seed")).await;
    eventually("both jobs are done", Duration::from_secs(10), || async {
        metrics.render.count("ok") + metrics.skipped.with_label_values(&["stored"]).get() == 2
    })
    .await;
    assert_eq!(
        metrics.render.count("ok"),
        1,
        "only the interactive job rendered"
    );
    assert_eq!(metrics.skipped.with_label_values(&["stored"]).get(), 1);
    let stored = env
        .store
        .get(&interactive)
        .await
        .expect("redis")
        .expect("stored");
    assert_ne!(stored, placeholder, "rendered and stored over it");
    let kept = env
        .store
        .get(&seeded)
        .await
        .expect("redis")
        .expect("stored");
    assert_eq!(kept, placeholder, "the seed job looked first");
    running.shutdown().await;
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn interactive_jobs_past_their_deadline_are_dropped_unrendered() {
    let env = Env::new().await;
    let tile = key(3, 1, 1);
    let job = RenderJob::interactive(&tile, SystemTime::now() - Duration::from_secs(1));
    env.send(&job).await;
    let worker = Worker::new(env.worker_config(2)).expect("worker");
    let metrics = worker.metrics();
    let running = run_worker(worker);
    eventually("the job is dropped", Duration::from_secs(10), || async {
        metrics.deadline_drops.get() == 1
    })
    .await;
    assert_eq!(metrics.render.count("ok"), 0);
    assert_eq!(env.store.get(&tile).await.expect("redis"), None);
    running.shutdown().await;
    assert_eq!(
        env.ready(&env.topology.interactive).await,
        0,
        "dropped means acked"
    );
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn poison_ends_in_the_dead_letter_queue_and_nothing_else_stalls() {
    let env = Env::new().await;
    let cursed = key(2, 1, 2);
    let renderer: Renderer = Arc::new(
        move |k: TileKey, cancelled: &dyn Fn() -> bool| -> Result<Vec<u8>, RenderError> {
            assert!(
                k != cursed,
                "deliberate test panic: this tile cannot be rendered"
            );
            render_tile(k.tile, k.style, cancelled)
        },
    );
    let worker = Worker::new(env.worker_config(2))
        .expect("worker")
        .with_renderer(renderer);
    let metrics = worker.metrics();
    let running = run_worker(worker);

    let far = SystemTime::now() + Duration::from_secs(30);
    env.publisher
        .publish_raw(Priority::Interactive, b"{not json")
        .await
        .expect("sent")
        .confirmed()
        .await
        .expect("ok");
    env.send(&RenderJob::interactive(&cursed, far)).await;
    let healthy = key(2, 2, 2);
    env.send(&RenderJob::interactive(&healthy, far)).await;

    eventually(
        "both poison messages are dead-lettered",
        Duration::from_secs(20),
        || async { env.ready(&env.topology.dead).await == 2 },
    )
    .await;
    // The healthy job was not held up behind them (its render may finish a moment after the
    // second poison message is dead-lettered).
    eventually(
        "the healthy tile is stored",
        Duration::from_secs(5),
        || async { env.store.get(&healthy).await.expect("redis").is_some() },
    )
    .await;
    assert_eq!(env.store.get(&cursed).await.expect("redis"), None);
    assert_eq!(metrics.dead_lettered.get(), 2);
    assert_eq!(
        metrics.retries.get(),
        u64::from(INTERACTIVE_MAX_ATTEMPTS - 1),
        "the panicking render was retried to the interactive lane's cap"
    );
    running.shutdown().await;
    env.cleanup().await;
}

/// A render that outlives its requester keeps its thread; the jobs queued behind it give up
/// and are acked, and the broker sends more. Those newer jobs must wait for the pool, not
/// fail: a failed attempt is a requeue, and a second one dead-letters a healthy job (seen
/// under load, 54 jobs in 11 ms: "render pool full").
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn jobs_behind_abandoned_ones_wait_for_the_pool_and_are_never_dead_lettered() {
    let env = Env::new().await;
    // Slow renders that do not look at their deadline: the thread stays busy past it.
    let renderer: Renderer = Arc::new(
        |k: TileKey, cancelled: &dyn Fn() -> bool| -> Result<Vec<u8>, RenderError> {
            std::thread::sleep(Duration::from_millis(400));
            render_tile(k.tile, k.style, cancelled)
        },
    );
    // One render thread: a prefetch of 2 interactive jobs and 1 seed job.
    let config = <fractile_worker::Config as clap::Parser>::parse_from(env.worker_args(1));
    let worker = Worker::new(config).expect("worker").with_renderer(renderer);
    let metrics = worker.metrics();
    let running = run_worker(worker);
    env.wait_consuming(&env.topology.interactive).await;

    // A job every 50 ms, each wanted for 250 ms: every job queued behind a render gives up
    // before the thread is free, and each one given up lets the broker send the next.
    let jobs = 16u32;
    for i in 0..jobs {
        let job = RenderJob::interactive(
            &key(6, i, 7),
            SystemTime::now() + Duration::from_millis(250),
        );
        env.send(&job).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("every job is settled", Duration::from_secs(30), || async {
        // Deliveries, redeliveries included: at least one per job.
        metrics.consumed.with_label_values(&["interactive"]).get() >= u64::from(jobs)
            && metrics.in_progress.get() == 0
            && env.ready(&env.topology.interactive).await == 0
    })
    .await;
    assert!(
        metrics.deadline_drops.get() > 0,
        "requesters gave up while jobs waited: the case under test happened"
    );
    assert_eq!(metrics.retries.get(), 0, "no job counted a failed attempt");
    assert_eq!(metrics.dead_lettered.get(), 0, "no job was dead-lettered");
    assert_eq!(env.ready(&env.topology.dead).await, 0);
    running.shutdown().await;
    env.cleanup().await;
}
