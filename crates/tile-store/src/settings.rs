//! How the store reaches Redis: [`StoreSettings`] (every timeout set, the budget, the
//! breaker, the MAC key), the clap argument groups the binaries build them from
//! ([`RedisArgs`], [`RedisLimits`]), and the check of a Redis URL at start-up.

use std::num::NonZeroU32;
use std::time::Duration;

use deadpool_redis::redis;

use crate::breaker::{DEFAULT_BREAKER_THRESHOLD, DEFAULT_PROBE_INTERVAL};
use crate::mac::{self, TileMac};

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
