//! [`SeedStore`], the state store's handle: its pool, reading a seed's record and state,
//! and the operator's cancel. Admission, the expansion lease and the marks of finished
//! tiles are its methods too, each in the module of its concern.

use std::collections::HashMap;

use deadpool_redis::redis;

use super::keys::SeedKeys;
use super::lua::COUNTS;
use super::record::{SeedOutcome, SeedRecord, SeedState};
use crate::client::{PoolStatus, RedisClient};
use crate::error::StoreError;
use crate::settings::StoreSettings;

/// Seed records in the state store. Cheap to clone.
#[derive(Clone)]
pub struct SeedStore {
    pub(super) redis: RedisClient,
    pub(super) keys: SeedKeys,
}

/// Cancels a seed that has not finished. KEYS: the record. Answers 1, or 0 when it does not
/// exist. A `done` seed (or a `running` record of an earlier version with every tile
/// accounted for) is left as it is: its work is finished, and calling it cancelled would
/// misreport it. Otherwise the lease goes with the cancel: the holder's next step finds
/// `cancelled` and stops.
static SEED_CANCEL: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(&format!(
        r"{COUNTS}
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local f = redis.call('HMGET', KEYS[1], 'state', 'total')
if f[1] == '{done}' then return 1 end
if f[1] == '{running}' then
  local done, failed = counts(KEYS[1])
  if done + failed >= (tonumber(f[2]) or 0) then return 1 end
end
redis.call('HSET', KEYS[1], 'state', '{cancelled}')
redis.call('HDEL', KEYS[1], 'holder', 'lease_until_ms')
return 1
",
        done = SeedState::Done.as_str(),
        running = SeedState::Running.as_str(),
        cancelled = SeedState::Cancelled.as_str(),
    ))
});

impl SeedStore {
    /// Builds the pool for the state store at `settings.url` (its tile TTL is not used).
    /// Connects lazily: a Redis that is down at start-up is not an error.
    pub fn new(settings: &StoreSettings) -> Result<Self, StoreError> {
        Ok(SeedStore {
            redis: RedisClient::new(settings, "state")?,
            keys: SeedKeys {
                prefix: settings.key_prefix.clone(),
            },
        })
    }

    /// Registers the breaker's metrics (`redis_breaker_open{store="state"}`,
    /// `redis_breaker_opens_total{store="state"}`) on a process's registry.
    pub fn register_metrics(
        &self,
        registry: &prometheus::Registry,
    ) -> Result<(), prometheus::Error> {
        self.redis.register_metrics(registry)
    }

    /// Whether the breaker is open.
    pub fn breaker_open(&self) -> bool {
        self.redis.breaker_open()
    }

    /// One `PING` through the breaker, within the budget.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.redis.ping().await
    }

    /// The pool's occupancy.
    pub fn pool_status(&self) -> PoolStatus {
        self.redis.pool_status()
    }

    /// A seed's record, if it exists.
    pub async fn seed_get(&self, id: &str) -> Result<Option<SeedRecord>, StoreError> {
        let k = self.keys.seed(id);
        let (done, failed) = (
            self.keys.tiles(id, SeedOutcome::Done),
            self.keys.tiles(id, SeedOutcome::Failed),
        );
        self.redis
            .with_conn(|mut c| async move {
                let (fields, done, failed): (HashMap<String, String>, u64, u64) = redis::pipe()
                    .hgetall(&k)
                    .scard(&done)
                    .scard(&failed)
                    .query_async(&mut c)
                    .await?;
                if fields.is_empty() {
                    return Ok(None);
                }
                SeedRecord::from_fields(&fields, (done, failed)).map(Some)
            })
            .await
    }

    /// A seed's stored state, if it exists (what a worker checks before each job).
    pub async fn seed_state(&self, id: &str) -> Result<Option<SeedState>, StoreError> {
        let k = self.keys.seed(id);
        self.redis
            .with_conn(|mut c| async move {
                let state: Option<String> = redis::AsyncCommands::hget(&mut c, &k, "state").await?;
                state
                    .map(|s| {
                        SeedState::parse(&s)
                            .ok_or_else(|| StoreError::Malformed(format!("seed state {s:?}")))
                    })
                    .transpose()
            })
            .await
    }

    /// Cancels a seed unless it is done (every tile accounted for: a done seed stays done);
    /// false if it does not exist. Final: no other change moves a seed out of `cancelled`.
    pub async fn seed_cancel(&self, id: &str) -> Result<bool, StoreError> {
        let invocation = SEED_CANCEL.key(self.keys.seed(id));
        self.redis
            .with_conn(|mut c| async move {
                let existed: i64 = invocation.invoke_async(&mut c).await?;
                Ok(existed == 1)
            })
            .await
    }

    /// Deletes every key under this store's prefix (tests clean up with it).
    #[cfg(feature = "test-util")]
    pub async fn delete_prefix(&self) -> Result<(), StoreError> {
        self.redis.delete_prefix(&self.keys.prefix).await
    }
}
