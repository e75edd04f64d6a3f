//! The expansion lease: the holder's steps (advance the cursor, renew, release, finish the
//! expansion), each checking it still holds the lease, and the take-over of an expansion
//! whose holder stopped renewing it. Time is the Redis server's.

use std::time::Duration;

use deadpool_redis::redis;

use super::lua::{COUNTS, NOW_MS, millis};
use super::record::SeedState;
use super::store::SeedStore;
use crate::error::StoreError;

/// What a lease holder's step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStep {
    /// Done: the caller held the lease and the seed was expanding.
    Held,
    /// Not done: the seed left `expanding` (cancelled, for one) or another replica holds
    /// it now. The caller must stop expanding.
    Lost(Option<SeedState>),
}

/// A lease holder's step. KEYS: the record, the registry. ARGV: operation (`advance`,
/// `renew`, `finish`, `release`), holder, lease in ms, the seed's id, then for `advance` the
/// new cursor and the queued and skipped counts to add, for `finish` the state to move to.
/// Runs only while the seed is `expanding` and held by this holder; answers `{1, state}`
/// when it ran, `{0, state}` (`''` for a missing record) when it did not. A `finish` to
/// `running` of a seed whose tiles are all accounted for already (every one found stored)
/// stores it `done`. The holder's steps keep the seed in the registry.
static SEED_LEASE_STEP: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    let (expanding, running) = (SeedState::Expanding.as_str(), SeedState::Running.as_str());
    let done = SeedState::Done.as_str();
    redis::Script::new(&format!(
        r"{NOW_MS}{COUNTS}
local f = redis.call('HMGET', KEYS[1], 'state', 'holder', 'total')
if not f[1] then return {{0, ''}} end
if f[1] ~= '{expanding}' or f[2] ~= ARGV[2] then return {{0, f[1]}} end
local op = ARGV[1]
if op == 'advance' then
  redis.call('HSET', KEYS[1], 'cursor', ARGV[5])
  redis.call('HINCRBY', KEYS[1], 'queued', ARGV[6])
  redis.call('HINCRBY', KEYS[1], 'skipped', ARGV[7])
end
if op == 'advance' or op == 'renew' then
  redis.call('HSET', KEYS[1], 'lease_until_ms', string.format('%.0f', now_ms() + tonumber(ARGV[3])))
  redis.call('SADD', KEYS[2], ARGV[4])
elseif op == 'finish' then
  local to = ARGV[5]
  local done, failed = counts(KEYS[1])
  if to == '{running}' and done + failed >= (tonumber(f[3]) or 0) then
    to = '{done}'
    redis.call('SREM', KEYS[2], ARGV[4])
  end
  redis.call('HSET', KEYS[1], 'state', to)
  redis.call('HDEL', KEYS[1], 'holder', 'lease_until_ms')
elseif op == 'release' then
  redis.call('HDEL', KEYS[1], 'holder', 'lease_until_ms')
else
  return redis.error_reply('unknown lease step ' .. op)
end
return {{1, f[1]}}
"
    ))
});

/// Takes over one orphaned expansion. KEYS: the registry. ARGV: key prefix, holder, lease
/// in ms. An orphan is a registered seed still `expanding`, with a cursor (written by this
/// version), whose lease has run out or was released. Answers its id, or nil.
static SEED_TAKE_OVER: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    let expanding = SeedState::Expanding.as_str();
    redis::Script::new(&format!(
        r"{NOW_MS}
local now = now_ms()
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local rec = ARGV[1] .. 'seed:' .. id
  local f = redis.call('HMGET', rec, 'state', 'cursor', 'lease_until_ms')
  if f[1] == '{expanding}' and f[2] and ((not f[3]) or tonumber(f[3]) < now) then
    redis.call('HSET', rec, 'holder', ARGV[2], 'lease_until_ms',
      string.format('%.0f', now + tonumber(ARGV[3])))
    return id
  end
end
return false
"
    ))
});

impl SeedStore {
    /// Records a batch expanded by the lease holder: the cursor moves to `cursor`, `queued`
    /// and `skipped` grow, and the lease is renewed, all in one step.
    pub async fn seed_advance(
        &self,
        id: &str,
        holder: &str,
        lease: Duration,
        cursor: u64,
        queued: u64,
        skipped: u64,
    ) -> Result<LeaseStep, StoreError> {
        let numbers = [cursor, queued, skipped].map(|n| n.to_string());
        self.lease_step(id, "advance", holder, lease, &numbers)
            .await
    }

    /// Renews the holder's lease.
    pub async fn seed_renew(
        &self,
        id: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<LeaseStep, StoreError> {
        self.lease_step(id, "renew", holder, lease, &[]).await
    }

    /// Gives the lease up (at shutdown), so another replica takes the expansion over at
    /// once rather than when the lease runs out.
    pub async fn seed_release(&self, id: &str, holder: &str) -> Result<LeaseStep, StoreError> {
        self.lease_step(id, "release", holder, Duration::ZERO, &[])
            .await
    }

    /// Ends the expansion: `expanding` → `to` (`running`, or `failed`), only while the
    /// holder holds the lease; a cancelled seed stays cancelled, and one whose every tile is
    /// accounted for already goes to `done` instead of `running`.
    pub async fn seed_finish_expansion(
        &self,
        id: &str,
        holder: &str,
        to: SeedState,
    ) -> Result<LeaseStep, StoreError> {
        self.lease_step(
            id,
            "finish",
            holder,
            Duration::ZERO,
            &[to.as_str().to_owned()],
        )
        .await
    }

    async fn lease_step(
        &self,
        id: &str,
        op: &str,
        holder: &str,
        lease: Duration,
        rest: &[String],
    ) -> Result<LeaseStep, StoreError> {
        let mut invocation = SEED_LEASE_STEP.key(self.keys.seed(id));
        invocation
            .key(self.keys.registry())
            .arg(op)
            .arg(holder)
            .arg(millis(lease))
            .arg(id);
        for arg in rest {
            invocation.arg(arg);
        }
        self.redis
            .with_conn(|mut c| async move { lease_answer(invocation.invoke_async(&mut c).await?) })
            .await
    }

    /// Takes over one expansion whose holder stopped renewing its lease (or released it),
    /// as `holder` for `lease`: its id, or `None` when every expansion is held.
    pub async fn seed_take_over(
        &self,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<String>, StoreError> {
        let registry = self.keys.registry();
        let mut invocation = SEED_TAKE_OVER.key(&registry);
        invocation
            .arg(&self.keys.prefix)
            .arg(holder)
            .arg(millis(lease));
        self.redis
            .with_conn(|mut c| async move { Ok(invocation.invoke_async(&mut c).await?) })
            .await
    }
}

/// The lease script's answer `{ran, state}` as a [`LeaseStep`].
fn lease_answer((ran, state): (i64, String)) -> Result<LeaseStep, StoreError> {
    if ran == 1 {
        return Ok(LeaseStep::Held);
    }
    if state.is_empty() {
        return Ok(LeaseStep::Lost(None));
    }
    SeedState::parse(&state)
        .map(|s| LeaseStep::Lost(Some(s)))
        .ok_or_else(|| StoreError::Malformed(format!("seed state {state:?}")))
}
