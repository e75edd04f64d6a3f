//! Seed jobs: stored without an announcement (no request waits for them), skipped once
//! their seed is cancelled.

use std::time::{Duration, SystemTime};

use fractile_queue::RenderJob;
use fractile_tile_store::{NewSeed, SeedQuotas, SeedRecord};
use fractile_worker::Worker;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn seed_tiles_are_stored_without_an_announcement_interactive_ones_with_one() {
    let env = Env::new().await;
    let running = run_worker(Worker::new(env.worker_config(2)).expect("worker"));
    let stop = CancellationToken::new();
    let ready = env.store.ready_listener(stop.clone());
    assert!(ready.wait_connected(Duration::from_secs(5)).await);

    let (seeded, wanted) = (key(4, 2, 5), key(4, 9, 9));
    let mut seed_wait = ready.register(&seeded);
    let mut wanted_wait = ready.register(&wanted);
    env.send(&RenderJob::bulk(&seeded, "someseed")).await;
    eventually(
        "the seed tile is stored",
        Duration::from_secs(15),
        || async { env.store.get(&seeded).await.expect("redis").is_some() },
    )
    .await;
    // An interactive job after it: its announcement comes on the same channel, after the
    // seed tile's would have.
    let job = RenderJob::interactive(&wanted, SystemTime::now() + Duration::from_secs(10));
    env.send(&job).await;
    let note = tokio::time::timeout(Duration::from_secs(15), wanted_wait.announced())
        .await
        .expect("the interactive tile is announced");
    assert_eq!(note.key, wanted.to_string());
    assert!(
        tokio::time::timeout(Duration::from_millis(500), seed_wait.announced())
            .await
            .is_err(),
        "the seed tile was announced"
    );
    running.shutdown().await;
    stop.cancel();
    env.cleanup().await;
}

/// Records seed `id` of `tiles` tiles at zoom `z` (no lease: the test queues its jobs).
async fn admit(seeds: &fractile_tile_store::SeedStore, id: &str, tiles: u64, z: u8) {
    let record = SeedRecord::new(tiles, (z, z), None, "classic", 0);
    let seed = NewSeed {
        id,
        record: &record,
        ttl: Duration::from_secs(600),
        lease: None,
    };
    let quotas = SeedQuotas {
        max_active: 10,
        max_queued_tiles: 100,
    };
    seeds.seed_admit(&seed, quotas).await.expect("redis");
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn jobs_of_a_cancelled_seed_are_acked_unrendered() {
    let env = Env::new().await;
    admit(&env.seeds, "cancelme", 2, 4).await;
    assert!(env.seeds.seed_cancel("cancelme").await.expect("redis"));
    let tile = key(4, 1, 1);
    env.send(&RenderJob::bulk(&tile, "cancelme")).await;
    let worker = Worker::new(env.worker_config(2)).expect("worker");
    let metrics = worker.metrics();
    let running = run_worker(worker);
    eventually("the job is skipped", Duration::from_secs(15), || async {
        metrics.skipped.with_label_values(&["cancelled"]).get() == 1
    })
    .await;
    assert_eq!(env.store.get(&tile).await.expect("redis"), None);
    running.shutdown().await;
    assert_eq!(
        env.ready(&env.topology.bulk).await,
        0,
        "skipped means acked"
    );
    env.cleanup().await;
}

/// A seed learns of every tile, even one rendered while the state store did not answer: the
/// worker holds the job and retries the record until it answers (or gives the job back),
/// instead of acking a tile its seed never hears of. A seed short of one tile would never
/// finish, and count against the quotas until its record expires.
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn progress_made_while_the_state_store_stalls_is_recorded_once_it_answers() {
    let env = Env::new().await;
    let state = fractile_test_support::PrivateRedis::start().await;
    let mut settings = fractile_tile_store::StoreSettings::new(state.url(), env.prefix.clone());
    settings.budget = Duration::from_secs(2);
    let seeds = fractile_tile_store::SeedStore::new(&settings).expect("seed store");
    let tiles = [key(5, 3, 3), key(5, 3, 4)];
    admit(&seeds, "stalled", 2, 5).await;

    let mut args = env.worker_args(1);
    args.extend(["--state-redis-url".to_owned(), state.url()]);
    let worker =
        Worker::new(<fractile_worker::Config as clap::Parser>::parse_from(args)).expect("worker");
    let running = run_worker(worker);
    env.wait_consuming(&env.topology.bulk).await;
    state.pause();
    for tile in &tiles {
        env.send(&RenderJob::bulk(tile, "stalled")).await;
    }
    // The first tile is rendered and stored; its record waits (the worker holds the job,
    // and with a bulk prefetch of one, the second job waits in the broker).
    eventually("a tile is stored", Duration::from_secs(15), || async {
        env.store
            .exists(&tiles)
            .await
            .expect("redis")
            .contains(&true)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    state.resume();
    eventually(
        "the seed hears of both tiles",
        Duration::from_secs(30),
        || async {
            seeds
                .seed_get("stalled")
                .await
                .ok()
                .flatten()
                .is_some_and(|r| r.done == 2)
        },
    )
    .await;
    running.shutdown().await;
    env.cleanup().await;
}
