//! Marking a seed's finished tiles: the count moves with the set that keeps a redelivered
//! job from counting twice, and the mark that accounts for the last tile stores the seed
//! `done` (and takes it out of the registry). And sampling whether the running seeds
//! advance ([`SeedStore::seed_progress_sample`]), once per period for the whole deployment.

use std::time::Duration;

use deadpool_redis::redis;
use fractile_render::TileKey;

use super::lua::{COUNTS, NOW_MS, millis};
use super::record::{SeedOutcome, SeedState};
use super::store::SeedStore;
use crate::error::StoreError;

/// Records finished tiles of a live seed. KEYS: the record, the set, the registry. ARGV: the
/// seed's id, the count's field (`done` or `failed`), then tile ids. A tile already in the
/// set counts once; a `running` seed whose tiles are now all accounted for is stored `done`
/// and leaves the registry; one with work left is put back in the registry if it was lost.
/// A `done` seed's counts are final: a late redelivery changes nothing, even if its sets
/// were lost.
static SEED_MARK: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    let (expanding, running) = (SeedState::Expanding.as_str(), SeedState::Running.as_str());
    let done = SeedState::Done.as_str();
    redis::Script::new(&format!(
        r"{COUNTS}
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then return 0 end
if redis.call('HGET', KEYS[1], 'state') == '{done}' then return 1 end
local added = redis.call('SADD', KEYS[2], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[2], ttl)
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then
  redis.call('HSET', KEYS[1], ARGV[2], redis.call('SCARD', KEYS[2]))
elseif added > 0 then
  redis.call('HINCRBY', KEYS[1], ARGV[2], added)
end
local f = redis.call('HMGET', KEYS[1], 'state', 'total')
local done, failed = counts(KEYS[1])
if f[1] == '{running}' and done + failed >= (tonumber(f[2]) or 0) then
  redis.call('HSET', KEYS[1], 'state', '{done}')
  redis.call('SREM', KEYS[3], ARGV[1])
elseif f[1] == '{expanding}' or f[1] == '{running}' then
  redis.call('SADD', KEYS[3], ARGV[1])
  if redis.call('PTTL', KEYS[3]) < ttl then redis.call('PEXPIRE', KEYS[3], ttl) end
end
return 1
"
    ))
});

/// What one period's sample of the running seeds found (see
/// [`SeedStore::seed_progress_sample`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProgressSample {
    /// Seeds running through the whole period of which at least one tile finished in it.
    pub advanced: u64,
    /// Seeds running through the whole period of which no tile finished in it.
    pub stalled: u64,
}

/// The progress sample. KEYS: the registry, the sample's own hash. ARGV: key prefix, the
/// period in ms. The period is numbered by the Redis server's clock; the first call in a
/// period samples, later ones in it answer nil, so the deployment samples once per period
/// whichever replicas ask. The hash keeps the period sampled last and each running seed's
/// finished tiles then; a seed is judged against it only if that was the period just before
/// (a seed registered since, or a period nobody sampled, is no judgement). Failed tiles are
/// not progress.
static SEED_PROGRESS: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    let (expanding, running) = (SeedState::Expanding.as_str(), SeedState::Running.as_str());
    redis::Script::new(&format!(
        r"{NOW_MS}{COUNTS}
local period = tonumber(ARGV[2])
local slot = math.floor(now_ms() / period)
local last = tonumber(redis.call('HGET', KEYS[2], '.period') or '-1')
if last >= slot then return false end
local seen = redis.call('HGETALL', KEYS[2])
local before = {{}}
for i = 1, #seen, 2 do before[seen[i]] = tonumber(seen[i + 1]) end
local advanced, stalled = 0, 0
local now = {{'.period', slot}}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local rec = ARGV[1] .. 'seed:' .. id
  local state = redis.call('HGET', rec, 'state')
  if state == '{expanding}' or state == '{running}' then
    local done = counts(rec)
    if last == slot - 1 and before[id] ~= nil then
      if done > before[id] then advanced = advanced + 1 else stalled = stalled + 1 end
    end
    now[#now + 1] = id
    now[#now + 1] = done
  end
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], unpack(now))
redis.call('PEXPIRE', KEYS[2], period * 3)
return {{advanced, stalled}}
"
    ))
});

impl SeedStore {
    /// Samples the progress of the running seeds (`expanding` or `running`), once per
    /// `period` for every replica sharing the store: `None` when another call already sampled
    /// this period. A seed counts as advanced when at least one of its tiles finished since
    /// the previous period's sample, stalled when none did.
    pub async fn seed_progress_sample(
        &self,
        period: Duration,
    ) -> Result<Option<ProgressSample>, StoreError> {
        let mut invocation = SEED_PROGRESS.key(self.keys.registry());
        invocation
            .key(self.keys.progress())
            .arg(&self.keys.prefix)
            .arg(millis(period));
        self.redis
            .with_conn(|mut c| async move {
                let sample: Option<(u64, u64)> = invocation.invoke_async(&mut c).await?;
                Ok(sample.map(|(advanced, stalled)| ProgressSample { advanced, stalled }))
            })
            .await
    }

    /// Records what became of some of a seed's tiles. A set beside the count: a redelivered
    /// job marks its tile again without counting it twice. Only for live seeds; the set
    /// expires with the record.
    pub async fn seed_mark(
        &self,
        id: &str,
        outcome: SeedOutcome,
        keys: &[TileKey],
    ) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let field = outcome.name();
        let mut invocation = SEED_MARK.key(self.keys.seed(id));
        invocation
            .key(self.keys.tiles(id, outcome))
            .key(self.keys.registry())
            .arg(id)
            .arg(field);
        for key in keys {
            invocation.arg(key.to_string());
        }
        self.redis
            .with_conn(|mut c| async move {
                let _: i64 = invocation.invoke_async(&mut c).await?;
                Ok(())
            })
            .await
    }
}
