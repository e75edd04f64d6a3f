//! The cache role ([`TileStore`]): tiles (the shared L2), each checked on the way out (its
//! shape, and its MAC where the deployment has a key) and sealed on the way in, render
//! claims, and tile-ready announcements. Anything in it may be evicted at any moment.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deadpool_redis::redis::{self, AsyncCommands};
use fractile_render::TileKey;

use crate::client::{PoolStatus, RedisClient};
use crate::error::StoreError;
use crate::keys::Keys;
use crate::mac::{self, Refusal, TileMac};
use crate::ready::{ReadyListener, ReadyNote};
use crate::settings::StoreSettings;

/// Deletes KEYS[1] if it still holds ARGV[1]: a refused value goes, a good one written since
/// the read stays.
static DELETE_IF_EQUAL: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end \
         return 0",
    )
});

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
        self.set_claim(key, ttl, "NX").await
    }

    /// Extends a render claim this caller holds to `ttl` (once its job is published); false
    /// if the claim is gone.
    pub async fn hold_claim(&self, key: &TileKey, ttl: Duration) -> Result<bool, StoreError> {
        self.set_claim(key, ttl, "XX").await
    }

    /// `SET` of `key`'s claim for `ttl` under `condition` (`NX`: none yet; `XX`: one lives).
    async fn set_claim(
        &self,
        key: &TileKey,
        ttl: Duration,
        condition: &'static str,
    ) -> Result<bool, StoreError> {
        let k = self.keys.claim(key);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.redis
            .with_conn(|mut c| async move {
                let set: Option<String> = redis::cmd("SET")
                    .arg(&k)
                    .arg(1)
                    .arg(condition)
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
    #[cfg(feature = "test-util")]
    pub async fn delete_prefix(&self) -> Result<(), StoreError> {
        self.redis.delete_prefix(&self.keys.prefix).await
    }
}
