//! Redis going away and coming back, and Redis stalling (`SIGSTOP`: its connections stay open
//! and nothing answers), on a private redis-server so no other test notices. Every wait is
//! bounded: a stall must cost a caller at most the store's budget, not a timeout per pooled
//! connection, and a request waiting for a worker's tile must give up on Redis promptly.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fractile_api::Config;
use fractile_render::{MaxZoom, Style, TileId, TileKey};
use fractile_test_support::PrivateRedis;
use fractile_tile_store::{StoreError, StoreSettings, TileStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// The budget the tests run with (the default).
const BUDGET: Duration = fractile_tile_store::DEFAULT_BUDGET;
/// What a caller may take beyond the budget: scheduling, a render of a shallow tile in a
/// debug build, a loaded 2-core machine. Far below a pool walk (pool × 0.5 s).
const MARGIN: Duration = Duration::from_millis(750);

fn key(z: u8, x: u32, y: u32) -> TileKey {
    TileKey {
        tile: TileId::new(z, x, y, MaxZoom::LIMIT).expect("valid tile"),
        style: Style::Classic,
    }
}

/// `n` lookups at once, each of its own tile, every one succeeding.
async fn lookups_at_once(store: &TileStore, n: u32) {
    let lookups: Vec<_> = (0..n)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.get(&key(12, i, 7)).await })
        })
        .collect();
    for lookup in lookups {
        lookup.await.expect("task").expect("lookup");
    }
}

/// Opens `n` pooled connections: `n` lookups at once on an empty pool, each opening its own
/// (once the pool has a connection, handles share it: `pool.rs`).
async fn fill_pool(store: &TileStore, n: u32) {
    lookups_at_once(store, n).await;
    assert_eq!(
        store.pool_status().size,
        n as usize,
        "the pool holds {n} connections"
    );
}

/// `f`'s result and how long it took, failing the test if it takes more than `limit`.
async fn timed<T>(limit: Duration, f: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("did not finish within {limit:?}"));
    (out, started.elapsed())
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_lookup_against_a_paused_redis_costs_the_budget_whatever_the_pool_size_and_the_breaker_opens_then_closes()
 {
    let redis = PrivateRedis::start().await;
    let mut settings = StoreSettings::new(redis.url(), "stall:");
    settings.pool_size = 32;
    let store = TileStore::new(&settings).expect("store");
    fill_pool(&store, 32).await;

    redis.pause();
    // Before the budget, taking a connection re-checked every idle one in turn, each for up
    // to its recycle timeout: 32 × 0.5 s for this first lookup.
    let (first, took) = timed(Duration::from_secs(5), store.get(&key(3, 1, 1))).await;
    eprintln!("first lookup during the pause (pool of 32): {took:?}");
    assert!(matches!(first, Err(StoreError::OverBudget(_))), "{first:?}");
    assert!(took < BUDGET + MARGIN, "took {took:?}");
    assert!(!store.breaker_open(), "one outage is not enough to open");

    // Consecutive outages up to the threshold (3) open the breaker...
    for _ in 1..settings.breaker_threshold.get() {
        let (result, took) = timed(Duration::from_secs(5), store.get(&key(3, 1, 1))).await;
        assert!(
            result.is_err() && took < BUDGET + MARGIN,
            "{result:?} in {took:?}"
        );
    }
    assert!(store.breaker_open());
    assert_eq!(store.breaker_opens(), 1);
    // ...and then a call fails at once, without touching Redis.
    let (result, took) = timed(Duration::from_secs(1), store.get(&key(3, 1, 1))).await;
    assert!(matches!(result, Err(StoreError::Unavailable)), "{result:?}");
    assert!(took < Duration::from_millis(50), "took {took:?}");
    // The background probe keeps failing while Redis is paused: still open.
    tokio::time::sleep(settings.probe_interval * 2 + BUDGET).await;
    assert!(
        store.breaker_open(),
        "the probe cannot close it while Redis is paused"
    );

    redis.resume();
    eventually(
        "the probe closes the breaker",
        settings.probe_interval * 2 + BUDGET + MARGIN,
        || async { !store.breaker_open() },
    )
    .await;
    assert_eq!(store.get(&key(3, 1, 1)).await.expect("redis answers"), None);
    assert_eq!(store.breaker_opens(), 1);
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn the_ready_listener_tells_at_once_that_its_subscription_dropped() {
    let mut redis = PrivateRedis::start().await;
    let store = TileStore::new(&StoreSettings::new(redis.url(), "listener:")).expect("store");
    let stop = tokio_util::sync::CancellationToken::new();
    let ready = store.ready_listener(stop.clone());
    assert!(ready.wait_connected(Duration::from_secs(5)).await);
    let still_up = tokio::time::timeout(Duration::from_millis(100), ready.disconnected()).await;
    assert!(still_up.is_err(), "subscribed: disconnected() waits");

    redis.kill();
    // Waiters select on this and look in the store at once instead of at their next poll.
    let ((), took) = timed(Duration::from_secs(1), ready.disconnected()).await;
    eprintln!("subscription loss seen after {took:?}");
    stop.cancel();
}

/// A Redis-only api (L2 and local renders) with a pool of `pool` on `redis`.
fn redis_only_api(cluster: &Cluster, redis: &PrivateRedis, pool: usize) -> Config {
    let mut config = cluster.api_config();
    config.redis_url = Some(redis.url().into());
    config.amqp_url = None;
    config.redis.redis_pool_size = pool;
    config
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_paused_redis_costs_a_miss_at_most_the_budget_and_readyz_reports_the_breaker() {
    let cluster = Cluster::new().await;
    let redis = PrivateRedis::start().await;
    let config = redis_only_api(&cluster, &redis, 32);
    let (state, app) = cluster.api(&config).await;
    let admin = fractile_api::admin::admin_app(state.clone());
    let store = state
        .backends
        .as_ref()
        .expect("redis configured")
        .store
        .clone();
    // Handles share a connection once one is open, so the pool grows only while it has
    // none: 32 lookups at once, before anything else uses it.
    fill_pool(&store, 32).await;
    let readyz = || async {
        let response = send(&admin, get("/readyz")).await;
        (response.status(), body_json(response).await)
    };
    let (status, body) = readyz().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["redis"].as_str(), body["redis_breaker"].as_str()),
        (Some("up"), Some("closed"))
    );
    // A tile stored before the pause, to be read from L2 once Redis is back.
    let before = send(&app, get("/tiles/5/3/3.png")).await;
    assert_eq!(cache_layer(&before).to_owned(), "MISS");

    redis.pause();
    let (miss, took) = timed(Duration::from_secs(5), send(&app, get("/tiles/5/4/4.png"))).await;
    eprintln!("first miss during the pause (pool of 32): {took:?}");
    assert_eq!(
        (miss.status(), cache_layer(&miss).to_owned()),
        (StatusCode::OK, "MISS".into())
    );
    assert!(took < BUDGET + MARGIN, "took {took:?}");

    // The probe's own PING counts: readyz alone opens the breaker of an idle api. The api
    // stays ready: Redis is a cache.
    eventually(
        "readyz reports the breaker open",
        Duration::from_secs(5),
        || async {
            let (status, body) = readyz().await;
            assert_eq!(
                status,
                StatusCode::OK,
                "a Redis outage does not make the api unready"
            );
            body["redis_breaker"] == "open" && body["redis"] == "down"
        },
    )
    .await;
    let metrics = state.metrics.encode().expect("metrics");
    // Whole lines: the HELP text of the gauge starts with "1 while".
    assert!(
        metrics.contains("\nredis_breaker_open{store=\"cache\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nredis_breaker_opens_total{store=\"cache\"} 1\n"),
        "{metrics}"
    );
    // Open: a miss does not even try Redis.
    let (miss, took) = timed(Duration::from_secs(5), send(&app, get("/tiles/5/5/5.png"))).await;
    assert_eq!(miss.status(), StatusCode::OK);
    assert!(took < BUDGET, "took {took:?}");

    redis.resume();
    let resumed = Instant::now();
    eventually(
        "readyz reports the breaker closed",
        Duration::from_secs(5),
        || async {
            let (_, body) = readyz().await;
            body["redis_breaker"] == "closed" && body["redis"] == "up"
        },
    )
    .await;
    eprintln!("breaker closed {:?} after the resume", resumed.elapsed());
    assert!(
        state
            .metrics
            .encode()
            .expect("metrics")
            .contains("\nredis_breaker_open{store=\"cache\"} 0\n")
    );
    // A replica with a cold L1 reads the tile stored before the pause.
    let (_, fresh) = cluster.api(&config).await;
    let hit = send(&fresh, get("/tiles/5/3/3.png")).await;
    assert_eq!(cache_layer(&hit).to_owned(), "L2");
    cluster.cleanup().await;
}

/// An api with the queue and a private Redis, no worker: a miss waits for a render nobody
/// does. Returns the api and the task of one such waiting request, once its job is queued.
async fn waiting_miss(
    cluster: &Cluster,
    redis: &PrivateRedis,
) -> (
    fractile_api::AppState,
    tokio::task::JoinHandle<axum::http::Response<axum::body::Body>>,
) {
    let mut config = cluster.api_config();
    config.redis_url = Some(redis.url().into());
    // Long enough that sitting out the render deadline cannot pass for a fallback.
    config.render_timeout = Duration::from_secs(10);
    config.request_timeout = Duration::from_secs(20);
    let (state, app) = cluster.api(&config).await;
    let request = tokio::spawn(async move { send(&app, get("/tiles/6/9/9.png")).await });
    eventually("the miss is queued", Duration::from_secs(5), || async {
        state
            .metrics
            .publishes
            .with_label_values(&["interactive", "ok"])
            .get()
            == 1
    })
    .await;
    (state, request)
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_miss_waiting_for_a_worker_falls_back_within_the_budget_when_redis_stalls() {
    let cluster = Cluster::new().await;
    let redis = PrivateRedis::start().await;
    let (state, request) = waiting_miss(&cluster, &redis).await;

    // The subscription stays up (the connection is open): only the store's budget notices.
    redis.pause();
    let (response, took) = timed(Duration::from_secs(15), request).await;
    let response = response.expect("request task");
    eprintln!("waiting miss answered {took:?} after the pause");
    assert_eq!(
        (response.status(), cache_layer(&response).to_owned()),
        (StatusCode::OK, "MISS".into())
    );
    // At most one poll interval (200 ms), then one lookup within the budget, then a render.
    assert!(
        took < Duration::from_millis(200) + BUDGET + MARGIN,
        "took {took:?}"
    );
    let gave_up = state
        .metrics
        .result_wait
        .with_label_values(&["redis_unavailable"]);
    assert_eq!(gave_up.get_sample_count(), 1);
    cluster.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_miss_waiting_for_a_worker_falls_back_at_once_when_redis_dies() {
    let cluster = Cluster::new().await;
    let mut redis = PrivateRedis::start().await;
    let (_state, request) = waiting_miss(&cluster, &redis).await;

    // The subscription ends with the connection: the waiter looks in Redis at once.
    redis.kill();
    let (response, took) = timed(Duration::from_secs(15), request).await;
    let response = response.expect("request task");
    eprintln!("waiting miss answered {took:?} after the kill");
    assert_eq!(
        (response.status(), cache_layer(&response).to_owned()),
        (StatusCode::OK, "MISS".into())
    );
    assert!(took < BUDGET + MARGIN, "took {took:?}");
    cluster.cleanup().await;
}

/// `GET path` on `port` over a fresh connection: the status code and the JSON body.
async fn admin_get(port: u16, path: &str) -> (u16, serde_json::Value) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("the admin port answers within 5 s")
        .expect("HTTP exchange");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or_default())
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_worker_is_not_ready_while_its_redis_does_not_answer() {
    let cluster = Cluster::new().await;
    let redis = PrivateRedis::start().await;
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut config = cluster.worker_config(1);
    config.redis_url = redis.url().into();
    config.admin_listen = ([127, 0, 0, 1], admin_port).into();
    let worker = start_worker(config);
    eventually("the worker is ready", Duration::from_secs(10), || async {
        std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_ok()
            && admin_get(admin_port, "/readyz").await.0 == 200
    })
    .await;

    redis.pause();
    let ((status, body), took) =
        timed(Duration::from_secs(5), admin_get(admin_port, "/readyz")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (503, Some("redis unreachable")),
        "{body}"
    );
    assert!(took < BUDGET + MARGIN, "readyz took {took:?}");
    eventually(
        "the worker's breaker opens",
        Duration::from_secs(5),
        || async { admin_get(admin_port, "/readyz").await.1["redis_breaker"] == "open" },
    )
    .await;
    let metrics = worker.metrics.encode().expect("metrics");
    assert!(
        metrics.contains("\nredis_breaker_open{store=\"cache\"} 1\n"),
        "{metrics}"
    );

    redis.resume();
    eventually(
        "the worker is ready again",
        Duration::from_secs(5),
        || async { admin_get(admin_port, "/readyz").await.0 == 200 },
    )
    .await;
    worker.shutdown().await;
    cluster.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn losing_redis_degrades_to_l1_and_local_renders_then_recovers() {
    let cluster = Cluster::new().await;
    let mut redis = PrivateRedis::start().await;
    let port = redis.port();
    let mut config = cluster.api_config();
    config.redis_url = Some(redis.url().into());
    config.amqp_url = None;
    let (state, app) = cluster.api(&config).await;
    assert_eq!(
        send(&app, get("/tiles/4/1/1.png")).await.status(),
        StatusCode::OK
    );

    redis.kill();
    // Cached tiles still come from L1; misses are rendered here; nothing is a 500.
    let hit = send(&app, get("/tiles/4/1/1.png")).await;
    assert_eq!(
        (hit.status(), cache_layer(&hit).to_owned()),
        (StatusCode::OK, "L1".into())
    );
    for x in 2..6 {
        let miss = send(&app, get(&format!("/tiles/4/{x}/1.png"))).await;
        assert_eq!(
            (miss.status(), cache_layer(&miss).to_owned()),
            (StatusCode::OK, "MISS".into())
        );
    }
    assert!(
        state
            .metrics
            .cache_requests
            .with_label_values(&["l2", "error"])
            .get()
            > 0,
        "errors are counted"
    );

    // Redis returns on the same port: the same process uses it again, no restart.
    let _redis = PrivateRedis::start_on(port).await;
    let (_, fresh) = cluster.api(&config).await;
    // Each round renders a new tile on the first api (its write to Redis happens in the
    // background, and fails while the breaker is still open), then reads it through a replica
    // with a cold L1: once that is an L2 hit, the first api is writing to Redis again.
    let next = AtomicU32::new(0);
    eventually(
        "a replica reads the first api's new renders from L2",
        Duration::from_secs(15),
        || {
            let (app, fresh) = (app.clone(), fresh.clone());
            let uri = format!("/tiles/7/{}/3.png", next.fetch_add(1, Ordering::Relaxed));
            async move {
                assert_eq!(send(&app, get(&uri)).await.status(), StatusCode::OK);
                tokio::time::sleep(Duration::from_millis(100)).await;
                cache_layer(&send(&fresh, get(&uri)).await) == "L2"
            }
        },
    )
    .await;
    cluster.cleanup().await;
}

/// A connection of the test's own to the private Redis, beside the store's.
async fn admin(redis: &PrivateRedis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connects")
}

/// A store on the private Redis whose pool holds one connection, so every call uses it.
fn one_connection_store(redis: &PrivateRedis, prefix: &str) -> TileStore {
    pooled_store(redis, prefix, 1)
}

/// A store on `redis` under `prefix` with a pool of at most `size` connections.
fn pooled_store(redis: &PrivateRedis, prefix: &str, size: usize) -> TileStore {
    let mut settings = StoreSettings::new(redis.url(), prefix);
    settings.pool_size = size;
    TileStore::new(&settings).expect("store")
}

/// Calls of `command` the private Redis has served so far (`INFO commandstats`).
async fn served(redis: &PrivateRedis, command: &str) -> u64 {
    let mut conn = admin(redis).await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .expect("INFO");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

/// An L2 hit is one round trip: a pooled connection used moments ago is handed out again
/// without the recycle check's `PING` (deadpool-redis's own manager sends one on every
/// checkout).
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_connection_used_moments_ago_is_handed_out_without_a_ping() {
    let redis = PrivateRedis::start().await;
    let store = one_connection_store(&redis, "recycle:");
    for _ in 0..50 {
        store.get(&key(3, 1, 1)).await.expect("a lookup");
    }
    let (gets, pings) = (served(&redis, "get").await, served(&redis, "ping").await);
    assert_eq!(gets, 50);
    assert_eq!(pings, 0, "{pings} PINGs for 50 lookups on one connection");
}

/// Concurrent calls share a pooled connection, their commands pipelined on it, rather than
/// each taking one for its round trip: 64 lookups at once on a warm pool of 16 leave it at
/// the one connection they found.
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn concurrent_lookups_share_one_connection() {
    let redis = PrivateRedis::start().await;
    let store = pooled_store(&redis, "share:", 16);
    store.get(&key(3, 1, 1)).await.expect("a lookup");
    lookups_at_once(&store, 64).await;
    assert_eq!(served(&redis, "get").await, 65);
    assert_eq!(
        store.pool_status().size,
        1,
        "one connection served them all"
    );
}

/// A burst on an empty pool opens several connections; afterwards calls go back to one (the
/// pool hands out the connection returned last), so they keep sharing it rather than
/// spreading over every connection the burst opened.
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn after_a_burst_calls_return_to_one_connection() {
    let redis = PrivateRedis::start().await;
    let store = pooled_store(&redis, "lifo:", 8);
    fill_pool(&store, 8).await;
    // Past Redis's one-second resolution of `idle`: every connection idle since the burst.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..50 {
        store.get(&key(3, 1, 1)).await.expect("a lookup");
    }
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin(&redis).await)
        .await
        .expect("CLIENT LIST");
    let used = clients
        .lines()
        .filter(|line| line.contains(" cmd=get ") || line.contains(" cmd=ping "))
        .filter(|line| line.contains(" idle=0 "))
        .count();
    assert_eq!(
        used, 1,
        "connections that served the 50 lookups:\n{clients}"
    );
}

/// Skipping that check must not keep a broken connection in use: when the server drops
/// every client, the call on the dropped connection fails, and the next one gets a new
/// connection instead of the same broken one (it was used moments ago, so no `PING` would
/// have caught it).
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_connection_that_failed_in_use_is_replaced() {
    let redis = PrivateRedis::start().await;
    let store = one_connection_store(&redis, "replace:");
    store.get(&key(3, 1, 1)).await.expect("a lookup");

    let killed: u64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query_async(&mut admin(&redis).await)
        .await
        .expect("CLIENT KILL");
    assert_eq!(killed, 1, "the store's one connection");

    let on_the_dropped_connection = store.get(&key(3, 1, 1)).await;
    assert!(
        on_the_dropped_connection.is_err(),
        "{on_the_dropped_connection:?}"
    );
    store
        .get(&key(3, 1, 1))
        .await
        .expect("the next lookup runs on a new connection");
}
