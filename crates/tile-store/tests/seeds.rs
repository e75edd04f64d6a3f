//! The seed record's scripts against the real Redis: admission counts each state as
//! documented, a cancel always wins over the expansion's own moves, and the expansion lease
//! is taken over only when its holder stops renewing it. Each test has its own key prefix.

use std::time::Duration;

use fractile_render::{MaxZoom, Style, TileKey, TileRange};
use fractile_test_support::{Cleanup, services, unique_prefix};
use fractile_tile_store::{
    LeaseStep, NewSeed, ProgressSample, SeedAdmission, SeedOutcome, SeedQuotas, SeedRecord,
    SeedState, SeedStore, StoreSettings,
};

/// A store under a fresh prefix, the prefix, and the guard that deletes its keys.
fn store() -> (SeedStore, String, Cleanup) {
    let services = services();
    let prefix = unique_prefix();
    let cleanup = Cleanup::new(&services, &prefix);
    let mut settings = StoreSettings::new(services.redis, prefix.clone());
    // Generous: these tests run beside others on a busy machine.
    settings.budget = Duration::from_secs(2);
    settings.response_timeout = Duration::from_secs(2);
    (SeedStore::new(&settings).expect("store"), prefix, cleanup)
}

const QUOTAS: SeedQuotas = SeedQuotas {
    max_active: 100,
    max_queued_tiles: 1_000_000,
};

/// Records an expanding seed of `total` tiles, its lease held by `holder` for `lease`.
async fn expanding(store: &SeedStore, id: &str, total: u64, holder: &str, lease: Duration) {
    let record = SeedRecord::new(total, (0, 3), None, "classic", 0);
    let seed = NewSeed {
        id,
        record: &record,
        ttl: Duration::from_secs(600),
        lease: Some((holder, lease)),
    };
    assert_eq!(
        store.seed_admit(&seed, QUOTAS).await.expect("redis"),
        SeedAdmission::Admitted
    );
}

async fn state(store: &SeedStore, id: &str) -> SeedState {
    store
        .seed_state(id)
        .await
        .expect("redis")
        .expect("the record exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_cancel_always_wins_over_a_concurrent_end_of_expansion() {
    let (store, _, _cleanup) = store();
    // Rounds of seeds whose expansion ends (last batch, then running) while an operator
    // cancels them, all at once so that the two land in every order.
    const ROUNDS: usize = 8;
    const SEEDS: usize = 50;
    let lease = Duration::from_secs(60);
    let mut lost = Vec::new();
    for round in 0..ROUNDS {
        let ids: Vec<String> = (0..SEEDS).map(|i| format!("race{round}-{i}")).collect();
        for id in &ids {
            expanding(&store, id, 10, "a", lease).await;
        }
        let mut tasks = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let (finish, cancel) = (store.clone(), store.clone());
            let (i1, i2) = (id.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let _ = finish.seed_advance(&i1, "a", lease, 10, 10, 0).await;
                finish
                    .seed_finish_expansion(&i1, "a", SeedState::Running)
                    .await
                    .map(|_| ())
            }));
            tasks.push(tokio::spawn(async move {
                for _ in 0..i % 7 {
                    tokio::task::yield_now().await;
                }
                cancel.seed_cancel(&i2).await.map(|_| ())
            }));
        }
        for task in tasks {
            task.await.expect("task").expect("redis");
        }
        for id in &ids {
            if state(&store, id).await != SeedState::Cancelled {
                lost.push(id.clone());
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} cancels lost: {lost:?}",
        lost.len(),
        ROUNDS * SEEDS
    );
    // After a cancel, none of the holder's steps runs, and each says why.
    let id = "settled";
    expanding(&store, id, 10, "a", lease).await;
    assert!(store.seed_cancel(id).await.expect("redis"));
    let lost = LeaseStep::Lost(Some(SeedState::Cancelled));
    assert_eq!(store.seed_renew(id, "a", lease).await.expect("redis"), lost);
    assert_eq!(
        store
            .seed_advance(id, "a", lease, 5, 5, 0)
            .await
            .expect("redis"),
        lost
    );
    for to in [SeedState::Running, SeedState::Failed] {
        assert_eq!(
            store
                .seed_finish_expansion(id, "a", to)
                .await
                .expect("redis"),
            lost
        );
    }
    let record = store.seed_get(id).await.expect("redis").expect("exists");
    assert_eq!(
        (record.state, record.cursor, record.queued),
        (SeedState::Cancelled, Some(0), 0)
    );
    assert!(!store.seed_cancel("nosuchseed").await.expect("redis"));
    assert_eq!(
        store
            .seed_renew("nosuchseed", "a", lease)
            .await
            .expect("redis"),
        LeaseStep::Lost(None)
    );
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_cancel_leaves_a_done_seed_done_and_cancels_one_with_work_left() {
    let (store, _, _cleanup) = store();
    let lease = Duration::from_secs(30);
    let tiles: Vec<TileKey> = TileRange::whole(1, MaxZoom::LIMIT)
        .expect("valid")
        .tiles()
        .map(|tile| TileKey {
            tile,
            style: Style::Classic,
        })
        .collect();
    for id in ["finished", "unfinished"] {
        expanding(&store, id, 4, "a", lease).await;
        assert_eq!(
            store
                .seed_finish_expansion(id, "a", SeedState::Running)
                .await
                .expect("redis"),
            LeaseStep::Held
        );
    }
    // Every tile of one accounted for (one failed for good), three of four of the other.
    store
        .seed_mark("finished", SeedOutcome::Done, &tiles[..3])
        .await
        .expect("redis");
    store
        .seed_mark("finished", SeedOutcome::Failed, &tiles[3..])
        .await
        .expect("redis");
    store
        .seed_mark("unfinished", SeedOutcome::Done, &tiles[..3])
        .await
        .expect("redis");
    for (id, reported) in [("finished", "done"), ("unfinished", "cancelled")] {
        assert!(store.seed_cancel(id).await.expect("redis"), "{id} exists");
        let record = store.seed_get(id).await.expect("redis").expect("exists");
        assert_eq!(record.reported_state(), reported, "{id} after a cancel");
    }
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn an_expansion_is_taken_over_only_when_its_holder_stops_renewing() {
    let (store, _, _cleanup) = store();
    let lease = Duration::from_millis(600);
    expanding(&store, "s", 2000, "a", lease).await;
    // Held: nobody else gets it.
    assert_eq!(store.seed_take_over("b", lease).await.expect("redis"), None);
    assert_eq!(
        store
            .seed_advance("s", "a", lease, 500, 480, 20)
            .await
            .expect("redis"),
        LeaseStep::Held
    );
    // Renewed in time, the lease holds past its first term.
    for _ in 0..4 {
        tokio::time::sleep(lease / 3).await;
        assert_eq!(
            store.seed_renew("s", "a", lease).await.expect("redis"),
            LeaseStep::Held
        );
        assert_eq!(store.seed_take_over("b", lease).await.expect("redis"), None);
    }
    // Not renewed: it runs out and another replica takes the expansion where it stood.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert_eq!(
        store
            .seed_take_over("b", lease)
            .await
            .expect("redis")
            .as_deref(),
        Some("s")
    );
    let record = store.seed_get("s").await.expect("redis").expect("exists");
    assert_eq!(
        (record.state, record.cursor, record.queued, record.skipped),
        (SeedState::Expanding, Some(500), 480, 20)
    );
    // The old holder, back from a pause, is told to stop; the new one goes on.
    assert_eq!(
        store
            .seed_advance("s", "a", lease, 1000, 500, 0)
            .await
            .expect("redis"),
        LeaseStep::Lost(Some(SeedState::Expanding))
    );
    assert_eq!(
        store
            .seed_advance("s", "b", lease, 1000, 500, 0)
            .await
            .expect("redis"),
        LeaseStep::Held
    );
    // A released lease is free at once.
    assert_eq!(
        store.seed_release("s", "b").await.expect("redis"),
        LeaseStep::Held
    );
    assert_eq!(
        store
            .seed_take_over("c", lease)
            .await
            .expect("redis")
            .as_deref(),
        Some("s")
    );
    assert_eq!(
        store
            .seed_finish_expansion("s", "c", SeedState::Running)
            .await
            .expect("redis"),
        LeaseStep::Held
    );
    let record = store.seed_get("s").await.expect("redis").expect("exists");
    assert_eq!(
        (record.state, record.cursor, record.queued),
        (SeedState::Running, Some(1000), 980)
    );
    // Running seeds are not expansions: nothing to take over.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert_eq!(store.seed_take_over("d", lease).await.expect("redis"), None);
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn records_without_a_cursor_are_never_taken_over() {
    let (store, prefix, _cleanup) = store();
    // A record written by a version before durable expansion: its plan cannot be rebuilt.
    let services = services();
    let client = redis::Client::open(services.redis.as_str()).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let record = format!("{prefix}seed:old");
    let _: () = redis::pipe()
        .hset_multiple(&record, &[("state", "expanding"), ("total", "85")])
        .sadd(format!("{prefix}seeds"), "old")
        .query_async(&mut c)
        .await
        .expect("redis");
    assert_eq!(
        store
            .seed_take_over("b", Duration::from_secs(1))
            .await
            .expect("redis"),
        None
    );
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn admission_counts_each_state_as_documented() {
    let (store, prefix, _cleanup) = store();
    let store = &store;
    let quotas = SeedQuotas {
        max_active: 2,
        max_queued_tiles: 100,
    };
    // A seed of `total` tiles in `state` with `queued` jobs queued.
    let admit = |id: &'static str, total: u64, state: SeedState, queued: u64| async move {
        let mut record = SeedRecord::new(total, (0, 3), None, "classic", 0);
        record.state = state;
        record.queued = queued;
        let seed = NewSeed {
            id,
            record: &record,
            ttl: Duration::from_secs(600),
            lease: None,
        };
        store.seed_admit(&seed, quotas).await.expect("redis")
    };
    let services = services();
    let client = redis::Client::open(services.redis.as_str()).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");

    assert_eq!(
        admit("a", 50, SeedState::Running, 50).await,
        SeedAdmission::Admitted
    );
    assert_eq!(
        admit("b", 10, SeedState::Expanding, 4).await,
        SeedAdmission::Admitted
    );
    assert_eq!(
        admit("c", 1, SeedState::Running, 1).await,
        SeedAdmission::TooManyActive { active: 2 }
    );
    // Interrupted (only older versions write it): no longer active; its queued jobs (4)
    // still count until rendered.
    let _: () =
        redis::AsyncCommands::hset(&mut c, format!("{prefix}seed:b"), "state", "interrupted")
            .await
            .expect("redis");
    assert_eq!(
        admit("c", 47, SeedState::Running, 47).await,
        SeedAdmission::TooManyQueuedTiles { queued: 54 }
    );
    // Finished tiles (rendered or failed for good) count no more.
    let three: Vec<TileKey> = TileRange::whole(1, MaxZoom::LIMIT)
        .expect("valid")
        .tiles()
        .take(3)
        .map(|tile| TileKey {
            tile,
            style: Style::Classic,
        })
        .collect();
    store
        .seed_mark("a", SeedOutcome::Done, &three[..2])
        .await
        .expect("redis");
    store
        .seed_mark("a", SeedOutcome::Failed, &three[2..])
        .await
        .expect("redis");
    assert_eq!(
        admit("c", 47, SeedState::Running, 47).await,
        SeedAdmission::Admitted
    );
    // Cancelled: nothing left, neither active nor queued.
    assert!(store.seed_cancel("a").await.expect("redis"));
    assert_eq!(
        admit("d", 1, SeedState::Running, 1).await,
        SeedAdmission::Admitted
    );
    assert_eq!(
        admit("e", 1, SeedState::Running, 1).await,
        SeedAdmission::TooManyActive { active: 2 }
    );
    // Failed (could not queue every job): like interrupted, only its queued jobs count.
    let _: () = redis::AsyncCommands::hset(&mut c, format!("{prefix}seed:c"), "state", "failed")
        .await
        .expect("redis");
    assert_eq!(
        admit("e", 49, SeedState::Running, 49).await,
        SeedAdmission::TooManyQueuedTiles { queued: 4 + 47 + 1 }
    );
    assert_eq!(
        admit("e", 48, SeedState::Running, 48).await,
        SeedAdmission::Admitted
    );
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn marks_count_each_tile_once_and_only_for_live_seeds() {
    let (store, _, _cleanup) = store();
    expanding(&store, "m", 4, "a", Duration::from_secs(60)).await;
    let tiles: Vec<TileKey> = TileRange::whole(1, MaxZoom::LIMIT)
        .expect("valid")
        .tiles()
        .map(|tile| TileKey {
            tile,
            style: Style::Fire,
        })
        .collect();
    for _ in 0..3 {
        store
            .seed_mark("m", SeedOutcome::Done, &tiles[..3])
            .await
            .expect("redis");
    }
    store
        .seed_mark("m", SeedOutcome::Failed, &tiles[3..])
        .await
        .expect("redis");
    let record = store.seed_get("m").await.expect("redis").expect("exists");
    assert_eq!((record.done, record.failed), (3, 1));
    // A seed whose record is gone (expired) gets nothing recorded.
    store
        .seed_mark("gone", SeedOutcome::Done, &tiles)
        .await
        .expect("redis");
    assert!(store.seed_get("gone").await.expect("redis").is_none());
    assert_eq!(store.seed_state("gone").await.expect("redis"), None);
}

/// The four tiles of zoom 1 in the classic style.
fn zoom_one() -> Vec<TileKey> {
    TileRange::whole(1, MaxZoom::LIMIT)
        .expect("valid")
        .tiles()
        .map(|tile| TileKey {
            tile,
            style: Style::Classic,
        })
        .collect()
}

/// A connection of the test's own, to do to the store what eviction or an operator would.
async fn raw() -> deadpool_redis::redis::aio::MultiplexedConnection {
    deadpool_redis::redis::Client::open(services().redis)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

async fn delete(key: &str) {
    let _: i64 = deadpool_redis::redis::cmd("DEL")
        .arg(key)
        .query_async(&mut raw().await)
        .await
        .expect("DEL");
}

/// A seed of four tiles, expanded and running, `done` of them marked done.
async fn running(store: &SeedStore, id: &str, done: usize) {
    expanding(store, id, 4, "a", Duration::from_secs(60)).await;
    let finished = store
        .seed_finish_expansion(id, "a", SeedState::Running)
        .await
        .expect("redis");
    assert_eq!(finished, LeaseStep::Held);
    store
        .seed_mark(id, SeedOutcome::Done, &zoom_one()[..done])
        .await
        .expect("redis");
}

/// Seeds are several keys, and one can be lost without the others (evicted by a cache's
/// LRU, deleted by hand). A finished seed is stored `done`, so whichever key goes it stays
/// finished, or (its record gone) is not found at all: never `running` again, and never
/// counted against the quotas.
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_finished_seed_stays_finished_whichever_of_its_keys_is_lost() {
    for victim in ["seed:fin", "seed:fin:done", "seed:fin:failed", "seeds"] {
        let (store, prefix, _cleanup) = store();
        running(&store, "fin", 3).await;
        store
            .seed_mark("fin", SeedOutcome::Failed, &zoom_one()[3..])
            .await
            .expect("redis");
        assert_eq!(
            state(&store, "fin").await,
            SeedState::Done,
            "stored, not derived"
        );

        delete(&format!("{prefix}{victim}")).await;
        // A late redelivery marks a tile again.
        store
            .seed_mark("fin", SeedOutcome::Done, &zoom_one()[..1])
            .await
            .expect("redis");
        match store.seed_get("fin").await.expect("redis") {
            None => assert_eq!(victim, "seed:fin", "only a lost record makes it unknown"),
            Some(record) => {
                assert_eq!(record.state, SeedState::Done, "{victim} lost");
                assert_eq!(record.reported_state(), "done", "{victim} lost");
                assert_eq!((record.done, record.failed), (3, 1), "{victim} lost");
            }
        }
        // Nothing counts it: a quota of one active seed admits the next.
        let record = SeedRecord::new(4, (0, 1), None, "classic", 0);
        let next = NewSeed {
            id: "next",
            record: &record,
            ttl: Duration::from_secs(600),
            lease: None,
        };
        let one = SeedQuotas {
            max_active: 1,
            max_queued_tiles: 4,
        };
        assert_eq!(
            store.seed_admit(&next, one).await.expect("redis"),
            SeedAdmission::Admitted,
            "{victim} lost"
        );
    }
}

/// A seed with work left counts against the quotas while it can progress (its lost registry
/// entry comes back with its next mark), and stops counting when it cannot (its record gone).
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_seed_with_work_left_counts_while_it_can_progress_and_not_after() {
    let (store, prefix, _cleanup) = store();
    running(&store, "live", 1).await;
    let one_active = SeedQuotas {
        max_active: 1,
        max_queued_tiles: 1_000,
    };
    let record = SeedRecord::new(4, (0, 1), None, "classic", 0);
    let next = |id| NewSeed {
        id,
        record: &record,
        ttl: Duration::from_secs(600),
        lease: None,
    };
    delete(&format!("{prefix}seeds")).await;
    store
        .seed_mark("live", SeedOutcome::Done, &zoom_one()[1..2])
        .await
        .expect("redis");
    assert_eq!(
        store
            .seed_admit(&next("a"), one_active)
            .await
            .expect("redis"),
        SeedAdmission::TooManyActive { active: 1 },
        "the registry healed: the live seed counts again"
    );
    delete(&format!("{prefix}seed:live")).await;
    assert_eq!(
        store
            .seed_admit(&next("b"), one_active)
            .await
            .expect("redis"),
        SeedAdmission::Admitted,
        "a seed without a record cannot progress and is not counted"
    );
}

/// Records written before the counts moved into the record keep them in their sets: they
/// are read from there, and the first mark moves them into the record.
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn records_of_earlier_versions_count_from_their_sets_and_finish() {
    let (store, prefix, _cleanup) = store();
    let tiles = zoom_one();
    let mut c = raw().await;
    let record = format!("{prefix}seed:old");
    let _: () = deadpool_redis::redis::cmd("HSET")
        .arg(&record)
        .arg(&[
            ("state", "running"),
            ("total", "4"),
            ("queued", "4"),
            ("skipped", "0"),
            ("min_zoom", "1"),
            ("max_zoom", "1"),
            ("style", "classic"),
            ("created_unix_ms", "0"),
            ("cursor", "4"),
        ])
        .query_async(&mut c)
        .await
        .expect("HSET");
    let _: () = deadpool_redis::redis::cmd("PEXPIRE")
        .arg(&record)
        .arg(600_000)
        .query_async(&mut c)
        .await
        .expect("PEXPIRE");
    let _: () = deadpool_redis::redis::cmd("SADD")
        .arg(format!("{record}:done"))
        .arg(tiles[0].to_string())
        .arg(tiles[1].to_string())
        .query_async(&mut c)
        .await
        .expect("SADD");
    let read = store.seed_get("old").await.expect("redis").expect("exists");
    assert_eq!((read.done, read.reported_state()), (2, "running"));
    // One tile again, one new: three done.
    store
        .seed_mark("old", SeedOutcome::Done, &tiles[1..3])
        .await
        .expect("redis");
    let read = store.seed_get("old").await.expect("redis").expect("exists");
    assert_eq!((read.done, read.state), (3, SeedState::Running));
    store
        .seed_mark("old", SeedOutcome::Done, &tiles[3..])
        .await
        .expect("redis");
    assert_eq!(state(&store, "old").await, SeedState::Done);
}

/// Sleeps until just after the next multiple of `period` by this machine's clock (the test's
/// Redis is local, so its clock is this one).
async fn next_period(period: Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    let into =
        Duration::from_nanos(u64::try_from(now.as_nanos() % period.as_nanos()).expect("small"));
    tokio::time::sleep(period - into + Duration::from_millis(20)).await;
}

/// The progress sample counts each running seed once per period, advanced when a tile of it
/// finished since the period before, stalled when none did; the first call in a period
/// samples for every replica, later ones get nothing; a seed is judged only against the
/// period just before, so a gap (nobody sampled) or a new seed is no judgement; finished
/// seeds are not counted.
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn the_progress_sample_judges_each_running_seed_once_per_period() {
    let (store, _, _cleanup) = store();
    let period = Duration::from_secs(1);
    running(&store, "moving", 1).await;
    running(&store, "stuck", 1).await;
    running(&store, "finished", 4).await;

    next_period(period).await;
    let first = store.seed_progress_sample(period).await.expect("redis");
    // Nothing to compare with yet: the seeds are noted, not judged.
    assert_eq!(first, Some(ProgressSample::default()));
    // The same period again (another replica): already sampled.
    assert_eq!(
        store.seed_progress_sample(period).await.expect("redis"),
        None
    );

    store
        .seed_mark("moving", SeedOutcome::Done, &zoom_one()[1..2])
        .await
        .expect("redis");
    // A failed tile is no progress.
    store
        .seed_mark("stuck", SeedOutcome::Failed, &zoom_one()[1..2])
        .await
        .expect("redis");
    next_period(period).await;
    let second = store.seed_progress_sample(period).await.expect("redis");
    assert_eq!(
        second,
        Some(ProgressSample {
            advanced: 1,
            stalled: 1
        })
    );

    // A period nobody sampled: the next sample notes, and judges nothing.
    next_period(period).await;
    next_period(period).await;
    let after_gap = store.seed_progress_sample(period).await.expect("redis");
    assert_eq!(after_gap, Some(ProgressSample::default()));
    next_period(period).await;
    let again = store.seed_progress_sample(period).await.expect("redis");
    assert_eq!(
        again,
        Some(ProgressSample {
            advanced: 0,
            stalled: 2
        })
    );
}
