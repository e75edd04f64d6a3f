//! The Redis side of fractile, shared by the api and the worker. Two roles, which may be two
//! servers or one:
//!
//! - the **cache** ([`TileStore`]): tiles (the shared L2), render claims and tile-ready
//!   announcements. Anything in it may be evicted at any moment; it runs `allkeys-lru`;
//! - the **state store** ([`SeedStore`], [`seed`]): seed records, their progress and the
//!   quotas' registry, which must not vanish one key at a time. It runs `noeviction` and
//!   persists (see [`seed`] for why and what a full one answers).
//!
//! [`ReadyListener`] is the one pub/sub connection per process that wakes the requests
//! waiting for a worker's render. Each role is a pool with every timeout set (`client.rs`).
//!
//! Keys are versioned with [`fractile_render::RENDER_VERSION`], so a new renderer never
//! serves an old tile, and prefixed, so tests (and deployments) sharing a Redis stay apart.
//! Redis is a cache here: every caller treats an error as a miss. Two things bound what a
//! sick Redis costs a caller:
//!
//! - the **budget**: one deadline around a whole operation, taking a pooled connection
//!   included. The pool re-checks a connection idle for over a second (`UNWATCH` + `PING`,
//!   up to its recycle timeout; `pool.rs`) and moves on to the next when one does not
//!   answer, so against a paused Redis a single `get()` used to walk the whole pool:
//!   16 × 0.5 s;
//! - the **breaker** ([`breaker`]): after a few consecutive outages calls fail at once, and
//!   one background probe finds out when Redis is back.

mod breaker;
mod client;
pub mod mac;
mod pool;
mod ready;
pub mod seed;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deadpool_redis::PoolError;
use deadpool_redis::redis::{self, AsyncCommands, ErrorKind, ServerErrorKind};
use fractile_render::{RENDER_VERSION, TileKey};
use serde::{Deserialize, Serialize};

use crate::client::RedisClient;
pub use crate::pool::RECHECK_IDLE_AFTER;
pub use breaker::{DEFAULT_BREAKER_THRESHOLD, DEFAULT_PROBE_INTERVAL};
pub use mac::{Refusal, TileMac};
pub use ready::{ReadyListener, ReadyWait};
pub use seed::{
    LeaseStep, NewSeed, SeedAdmission, SeedBBox, SeedOutcome, SeedQuotas, SeedRecord, SeedState,
    SeedStore,
};

/// The schemes of a Redis URL the settings take (`rediss://` is refused by [`check_url`]:
/// this build has no TLS).
pub const REDIS_SCHEMES: &[&str] = &["redis", "rediss"];

/// Whether the Redis client takes `url` (its own parser: host, port, database number, TLS):
/// the settings' check at start-up, so a URL it would refuse stops the process at once.
pub fn check_url(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Default budget of one store operation, from asking for a connection to the reply:
/// hundreds of times what a healthy lookup takes (well under a millisecond on a local
/// network, a few under load), so only a Redis in trouble runs out of it, and short enough
/// that a miss which then renders locally is still quick.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(250);

/// Deletes KEYS[1] if it still holds ARGV[1]: a refused value goes, a good one written since
/// the read stays.
static DELETE_IF_EQUAL: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end \
         return 0",
    )
});

/// Budget of [`TileStore::delete_prefix`], a test and maintenance helper that scans.
const DELETE_PREFIX_BUDGET: Duration = Duration::from_secs(30);

/// Connection settings. Every timeout is set: deadpool's defaults wait forever. `Debug`
/// hides the URL's password.
#[derive(Clone)]
pub struct StoreSettings {
    /// `redis://[:password@]host:port[/db]`.
    pub url: String,
    /// Prefix of every key and channel (`fractile:` by default; tests use their own).
    pub key_prefix: String,
    /// How long a tile stays in Redis (Redis should also evict by LRU under `maxmemory`).
    pub tile_ttl: Duration,
    /// Most connections in the pool (concurrent calls share a connection, so a busy process
    /// holds few: `pool.rs`).
    pub pool_size: usize,
    /// Time to open a connection.
    pub connect_timeout: Duration,
    /// Time for one command's reply.
    pub response_timeout: Duration,
    /// Time to wait for a free pooled connection (a checkout holds one only for an instant,
    /// or while opening it). A wait that runs out is load, not an outage: it fails the call
    /// without counting towards the breaker.
    pub wait_timeout: Duration,
    /// Upper bound on one whole operation (taking a connection, the command, its reply);
    /// the timeouts above are capped by it.
    pub budget: Duration,
    /// Consecutive outages (budget exceeded, connection refused or dropped) that open the
    /// breaker.
    pub breaker_threshold: NonZeroU32,
    /// Pause between two probes of an open breaker.
    pub probe_interval: Duration,
    /// The tiles' MAC key (see [`mac`]); without one, values read back are checked for
    /// their shape only.
    pub tile_mac: Option<TileMac>,
}

impl StoreSettings {
    /// Settings with the defaults the binaries use, for `url` and `key_prefix`.
    pub fn new(url: impl Into<String>, key_prefix: impl Into<String>) -> Self {
        StoreSettings {
            url: url.into(),
            key_prefix: key_prefix.into(),
            tile_ttl: Duration::from_secs(7 * 86_400),
            pool_size: 16,
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(500),
            wait_timeout: Duration::from_millis(200),
            budget: DEFAULT_BUDGET,
            breaker_threshold: DEFAULT_BREAKER_THRESHOLD,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            tile_mac: None,
        }
    }
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("url", &fractile_settings::redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("tile_ttl", &self.tile_ttl)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("wait_timeout", &self.wait_timeout)
            .field("budget", &self.budget)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("probe_interval", &self.probe_interval)
            .field("tile_mac", &self.tile_mac.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// The Redis settings every binary that uses the store shares, short of the URL (the api
/// may run without Redis, the worker may not, so each declares its own): a clap argument
/// group (`#[command(flatten)]`) that builds the [`StoreSettings`] in one place.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Prefix of the Redis keys (deployments sharing a Redis keep apart with it).
    #[arg(long, env = "FRACTILE_KEY_PREFIX", default_value = "fractile:")]
    pub key_prefix: String,

    /// How long tiles live in Redis.
    #[arg(long, env = "FRACTILE_TILE_TTL", default_value = "7d", value_parser = fractile_settings::parse_duration)]
    pub tile_ttl: Duration,

    /// Most connections in the Redis pool; concurrent calls share a connection (their
    /// commands pipelined), so the pool grows only when many calls find none open.
    #[arg(long, env = "FRACTILE_REDIS_POOL_SIZE", default_value_t = 16)]
    pub redis_pool_size: usize,

    /// The Redis budget and circuit breaker.
    #[command(flatten)]
    pub limits: RedisLimits,

    /// Key of the MAC every tile in the cache carries, shared by the api and the workers (at
    /// least 32 bytes, e.g. `openssl rand -hex 32`): only tiles made with it are served from
    /// the cache. Unset: tiles read from the cache are checked for their shape only, and
    /// anything that can write to Redis can have its bytes served.
    #[arg(long, env = "FRACTILE_TILE_MAC_KEY", hide_env_values = true, value_parser = fractile_settings::SecretParser::at_least(mac::MIN_KEY_BYTES))]
    pub tile_mac_key: Option<fractile_settings::Secret>,

    /// The MAC key being replaced, while a new `FRACTILE_TILE_MAC_KEY` rolls out: tiles
    /// signed with it are still accepted (new ones are signed with the new key).
    #[arg(long, env = "FRACTILE_TILE_MAC_PREVIOUS_KEY", hide_env_values = true, requires = "tile_mac_key", value_parser = fractile_settings::SecretParser::at_least(mac::MIN_KEY_BYTES))]
    pub tile_mac_previous_key: Option<fractile_settings::Secret>,
}

impl RedisArgs {
    /// The store's settings for `url` with these arguments.
    pub fn settings(&self, url: &fractile_settings::SecretUrl) -> StoreSettings {
        let mut settings = StoreSettings::new(url.expose(), self.key_prefix.clone());
        settings.tile_ttl = self.tile_ttl;
        settings.pool_size = self.redis_pool_size;
        settings.tile_mac = self
            .tile_mac_key
            .clone()
            .map(|key| TileMac::new(key, self.tile_mac_previous_key.clone()));
        settings.with_limits(&self.limits)
    }
}

/// The settings that bound what a sick Redis costs, shared by every binary that uses the
/// store (a clap argument group: `#[command(flatten)]`).
#[derive(Debug, Clone, clap::Args)]
pub struct RedisLimits {
    /// Longest one Redis operation may take, from asking for a pooled connection to the
    /// reply. Beyond it the operation fails (a lookup is then a miss) and counts towards the
    /// circuit breaker.
    #[arg(long, env = "FRACTILE_REDIS_BUDGET", default_value = "250ms", value_parser = fractile_settings::parse_nonzero_duration)]
    pub redis_budget: Duration,

    /// Consecutive Redis outages (over budget, refused, dropped) that open the circuit
    /// breaker: Redis calls then fail at once until a background probe gets an answer.
    #[arg(long, env = "FRACTILE_REDIS_BREAKER_THRESHOLD", default_value_t = DEFAULT_BREAKER_THRESHOLD)]
    pub redis_breaker_threshold: NonZeroU32,

    /// Pause between two probes (`PING`) of Redis while the breaker is open.
    #[arg(long, env = "FRACTILE_REDIS_PROBE_INTERVAL", default_value = "1s", value_parser = fractile_settings::parse_nonzero_duration)]
    pub redis_probe_interval: Duration,
}

impl StoreSettings {
    /// These settings with `limits` applied.
    pub fn with_limits(mut self, limits: &RedisLimits) -> Self {
        self.budget = limits.redis_budget;
        self.breaker_threshold = limits.redis_breaker_threshold;
        self.probe_interval = limits.redis_probe_interval;
        self
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The breaker is open: Redis failed repeatedly, and calls fail fast until a probe
    /// gets an answer.
    #[error("redis unavailable (circuit breaker open)")]
    Unavailable,
    /// The operation did not finish within the budget.
    #[error("redis did not answer within {0:?}")]
    OverBudget(Duration),
    /// No pooled connection became free within the wait timeout.
    #[error("timed out waiting for a pooled redis connection")]
    PoolWaitTimeout,
    /// Getting a connection failed otherwise.
    #[error("redis pool: {0}")]
    Pool(String),
    /// The command failed or timed out.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stored value was not what this version writes.
    #[error("malformed value in redis: {0}")]
    Malformed(String),
}

impl StoreError {
    /// Whether this error says Redis is out of reach (as opposed to busy, or answering with
    /// an error): these count towards the breaker, and a request waiting for a worker's
    /// tile gives up on Redis when it sees one.
    pub fn is_outage(&self) -> bool {
        match self {
            StoreError::Unavailable | StoreError::OverBudget(_) | StoreError::Pool(_) => true,
            StoreError::PoolWaitTimeout | StoreError::Malformed(_) => false,
            StoreError::Redis(e) => match e.kind() {
                ErrorKind::Io
                | ErrorKind::Parse
                | ErrorKind::AuthenticationFailed
                | ErrorKind::ClusterConnectionNotFound => true,
                ErrorKind::Server(kind) => matches!(
                    kind,
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::TryAgain
                ),
                // Redis answered: a wrong type, a script error, out of memory, ...
                _ => false,
            },
        }
    }
}

impl StoreError {
    /// Whether Redis refused a write because it is full (`maxmemory` reached under
    /// `noeviction`: an `OOM` error reply). The state store answers this, where the cache
    /// would evict.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, StoreError::Redis(e) if e.code() == Some("OOM"))
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Timeout(deadpool_redis::TimeoutType::Wait) => StoreError::PoolWaitTimeout,
            PoolError::Backend(e) => StoreError::Redis(e),
            other => StoreError::Pool(other.to_string()),
        }
    }
}

/// The pool's occupancy, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct PoolStatus {
    /// Connections open.
    pub size: usize,
    /// Connections idle in the pool.
    pub available: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

/// What a worker says when a tile is ready: which tile, who rendered it, how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyNote {
    /// The tile, as `style/z/x/y`.
    pub key: String,
    /// The worker's id.
    pub worker: String,
    /// Render time in milliseconds (0 when the tile was already stored, not rendered now).
    pub render_ms: f64,
    /// Milliseconds from the job's delivery to the worker until its tile was ready to
    /// store: the worker's checks, its wait for a render thread and the render. A waiting
    /// request subtracts it from its own wait to see what the broker and the announcement
    /// took, without comparing two machines' clocks. Absent from older workers' notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_ms: Option<f64>,
}

/// Key and channel names.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn tile(&self, key: &TileKey) -> String {
        let t = key.tile;
        let (p, s) = (&self.prefix, key.style);
        format!("{p}tile:{RENDER_VERSION}:{s}:{}:{}:{}", t.z(), t.x(), t.y())
    }

    fn claim(&self, key: &TileKey) -> String {
        let t = key.tile;
        let (p, s) = (&self.prefix, key.style);
        format!(
            "{p}rendering:{RENDER_VERSION}:{s}:{}:{}:{}",
            t.z(),
            t.x(),
            t.y()
        )
    }

    fn seed(&self, id: &str) -> String {
        format!("{}seed:{id}", self.prefix)
    }

    /// The ids of the seeds that may still have work (see [`TileStore::seed_admit`]).
    fn seed_registry(&self) -> String {
        format!("{}seeds", self.prefix)
    }

    fn seed_tiles(&self, id: &str, outcome: SeedOutcome) -> String {
        let set = match outcome {
            SeedOutcome::Done => "done",
            SeedOutcome::Failed => "failed",
        };
        format!("{}seed:{id}:{set}", self.prefix)
    }

    fn ready_channel(&self) -> String {
        format!("{}tile-ready", self.prefix)
    }
}

/// What the cache holds for a tile.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// The tile's PNG, checked (see [`mac`]).
    Tile(Bytes),
    /// Nothing.
    Missing,
    /// Bytes that are not this tile (see [`Refusal`]): deleted; the caller renders it again.
    Refused(Refusal),
}

/// Tiles, render claims and announcements in the cache Redis. Cheap to clone.
#[derive(Clone)]
pub struct TileStore {
    redis: RedisClient,
    /// For the pub/sub listener, which needs a connection of its own.
    client: redis::Client,
    keys: Keys,
    tile_ttl_secs: u64,
    /// Signs what is stored and checks what is read (shape only without it).
    mac: Option<TileMac>,
}

impl TileStore {
    /// Builds the pool. Connects lazily: a Redis that is down at start-up is not an error.
    pub fn new(settings: &StoreSettings) -> Result<Self, StoreError> {
        Ok(TileStore {
            redis: RedisClient::new(settings, "cache")?,
            client: redis::Client::open(settings.url.as_str())?,
            keys: Keys {
                prefix: settings.key_prefix.clone(),
            },
            tile_ttl_secs: settings.tile_ttl.as_secs().max(1),
            mac: settings.tile_mac.clone(),
        })
    }

    /// Whether tiles are signed and checked with a MAC key.
    pub fn signs_tiles(&self) -> bool {
        self.mac.is_some()
    }

    /// Registers the breaker's metrics (`redis_breaker_open{store="cache"}`,
    /// `redis_breaker_opens_total{store="cache"}`) on a process's registry.
    pub fn register_metrics(
        &self,
        registry: &prometheus::Registry,
    ) -> Result<(), prometheus::Error> {
        self.redis.register_metrics(registry)
    }

    /// Whether the breaker is open: Redis failed repeatedly and calls fail fast until the
    /// background probe gets an answer.
    pub fn breaker_open(&self) -> bool {
        self.redis.breaker_open()
    }

    /// Times the breaker has opened.
    pub fn breaker_opens(&self) -> u64 {
        self.redis.breaker_opens()
    }

    /// One `PING` through the breaker, within the budget: the readiness probes' check. It
    /// counts like any call, so an idle process still notices an outage.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.redis.ping().await
    }

    /// The pool's occupancy.
    pub fn pool_status(&self) -> PoolStatus {
        self.redis.pool_status()
    }

    /// What the cache holds for `key`: the tile, checked before anything serves it or keeps
    /// it (its shape, and its MAC where the deployment has a key), nothing, or bytes that are
    /// not this tile, which are deleted on the way (only if they are still what was read, so
    /// a good tile written meanwhile stays).
    pub async fn lookup(&self, key: &TileKey) -> Result<Stored, StoreError> {
        let k = self.keys.tile(key);
        let read = k.clone();
        let value: Option<Bytes> = self
            .redis
            .with_conn(|mut c| async move {
                let value: Option<Vec<u8>> = c.get(&read).await?;
                Ok(value.map(Bytes::from))
            })
            .await?;
        let Some(value) = value else {
            return Ok(Stored::Missing);
        };
        let opened = match &self.mac {
            Some(mac) => mac.open(key, value.clone()),
            None => mac::open_unkeyed(value.clone()),
        };
        match opened {
            Ok(png) => Ok(Stored::Tile(png)),
            Err(refusal) => {
                let mut delete = DELETE_IF_EQUAL.key(&k);
                delete.arg(value.as_ref());
                // Best effort: a value left behind is refused again on the next read.
                let _ = self
                    .redis
                    .with_conn(|mut c| async move {
                        let _: i64 = delete.invoke_async(&mut c).await?;
                        Ok(())
                    })
                    .await;
                Ok(Stored::Refused(refusal))
            }
        }
    }

    /// A tile's PNG, if the cache holds it (checked as [`Self::lookup`] does; refused bytes
    /// are `None`).
    pub async fn get(&self, key: &TileKey) -> Result<Option<Bytes>, StoreError> {
        Ok(match self.lookup(key).await? {
            Stored::Tile(png) => Some(png),
            Stored::Missing | Stored::Refused(_) => None,
        })
    }

    /// What is stored for a tile's `png`: the PNG, followed by its MAC tag where the
    /// deployment has a key.
    fn value(&self, key: &TileKey, png: &[u8]) -> Vec<u8> {
        match &self.mac {
            Some(mac) => mac.seal(key, png),
            None => png.to_vec(),
        }
    }

    /// Which of `keys` are stored (one round trip).
    pub async fn exists(&self, keys: &[TileKey]) -> Result<Vec<bool>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.exists(self.keys.tile(key));
        }
        self.redis
            .with_conn(|mut c| async move { Ok(pipe.query_async(&mut c).await?) })
            .await
    }

    /// Stores a tile and announces it on the ready channel (one round trip). The write is a
    /// plain `SET`: rendering is deterministic, so a second store of the same tile (a
    /// redelivered job) writes the same bytes.
    pub async fn put_and_announce(
        &self,
        key: &TileKey,
        png: &[u8],
        note: &ReadyNote,
    ) -> Result<(), StoreError> {
        let payload =
            serde_json::to_string(note).map_err(|e| StoreError::Malformed(e.to_string()))?;
        let mut pipe = redis::pipe();
        pipe.set_ex(
            self.keys.tile(key),
            self.value(key, png),
            self.tile_ttl_secs,
        )
        .ignore();
        pipe.publish(self.keys.ready_channel(), payload).ignore();
        self.redis
            .with_conn(|mut c| async move { Ok(pipe.query_async(&mut c).await?) })
            .await
    }

    /// Stores a tile without announcing it: a seed's tiles, which no request waits for
    /// (announcing them would wake every api replica's listener for nothing).
    pub async fn put(&self, key: &TileKey, png: &[u8]) -> Result<(), StoreError> {
        let (k, ttl) = (self.keys.tile(key), self.tile_ttl_secs);
        let value = self.value(key, png);
        self.redis
            .with_conn(|mut c| async move { Ok(c.set_ex(k, value, ttl).await?) })
            .await
    }

    /// Announces a tile that is already stored (a job whose tile another worker rendered).
    pub async fn announce(&self, note: &ReadyNote) -> Result<(), StoreError> {
        let payload =
            serde_json::to_string(note).map_err(|e| StoreError::Malformed(e.to_string()))?;
        let channel = self.keys.ready_channel();
        self.redis
            .with_conn(|mut c| async move { Ok(c.publish(channel, payload).await?) })
            .await
    }

    /// Claims the right to queue a render of `key` for `ttl`: true for the first caller
    /// across all api replicas, false while another claim lives. This is what makes
    /// concurrent misses on several replicas produce one render job.
    pub async fn claim_render(&self, key: &TileKey, ttl: Duration) -> Result<bool, StoreError> {
        let k = self.keys.claim(key);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.redis
            .with_conn(|mut c| async move {
                let set: Option<String> = redis::cmd("SET")
                    .arg(&k)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await?;
                Ok(set.is_some())
            })
            .await
    }

    /// Starts the pub/sub listener that wakes waiters when workers announce tiles.
    pub fn ready_listener(&self, stop: tokio_util::sync::CancellationToken) -> ReadyListener {
        ReadyListener::spawn(
            self.client.clone(),
            Arc::clone(&self.redis.redacted_url),
            self.keys.ready_channel(),
            stop,
        )
    }

    /// Deletes every key under this store's prefix (tests clean up with it).
    pub async fn delete_prefix(&self) -> Result<(), StoreError> {
        delete_prefix(&self.redis, &self.keys.prefix).await
    }
}

/// Deletes every key under `prefix` on `redis`.
async fn delete_prefix(redis: &RedisClient, prefix: &str) -> Result<(), StoreError> {
    let pattern = format!("{prefix}*");
    redis
        .with_conn_within(DELETE_PREFIX_BUDGET, |mut c| async move {
            let keys: Vec<String> = {
                let mut iter = c.scan_match::<_, String>(&pattern).await?;
                let mut keys = Vec::new();
                while let Some(k) = futures_lite::StreamExt::next(&mut iter).await {
                    keys.push(k?);
                }
                keys
            };
            if !keys.is_empty() {
                let _: () = c.del(keys).await?;
            }
            Ok(())
        })
        .await
}

#[cfg(test)]
mod tests {
    use fractile_render::{MaxZoom, Style, TileId};

    use super::*;

    #[test]
    fn keys_carry_the_prefix_the_render_version_and_the_whole_tile() {
        let keys = Keys {
            prefix: "fractile:".into(),
        };
        let key = TileKey {
            tile: TileId::new(5, 3, 4, MaxZoom::LIMIT).expect("valid"),
            style: Style::Fire,
        };
        let v = RENDER_VERSION;
        assert_eq!(keys.tile(&key), format!("fractile:tile:{v}:fire:5:3:4"));
        assert_eq!(
            keys.claim(&key),
            format!("fractile:rendering:{v}:fire:5:3:4")
        );
        assert_eq!(keys.seed("ab"), "fractile:seed:ab");
        assert_eq!(keys.seed_registry(), "fractile:seeds");
        assert_eq!(
            keys.seed_tiles("ab", SeedOutcome::Done),
            "fractile:seed:ab:done"
        );
        assert_eq!(
            keys.seed_tiles("ab", SeedOutcome::Failed),
            "fractile:seed:ab:failed"
        );
        assert_eq!(keys.ready_channel(), "fractile:tile-ready");
        // The admission and take-over scripts build record keys as prefix .. 'seed:' .. id.
        assert_eq!(keys.seed("ab"), format!("{}seed:{}", keys.prefix, "ab"));
    }
}
