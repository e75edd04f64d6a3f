//! Admitting a seed: the deployment's quotas ([`SeedQuotas`]), counted in one script over
//! the registry of seeds that may still have work, which creates the record only if both
//! allow it.

use std::time::Duration;

use deadpool_redis::redis;

use super::lua::{COUNTS, NOW_MS, millis};
use super::record::{SeedRecord, SeedState};
use super::store::SeedStore;
use crate::error::StoreError;

/// A seed to record: its id, its record, how long the record is kept, and the lease its
/// accepting replica takes on its expansion.
#[derive(Debug)]
pub struct NewSeed<'a> {
    /// The seed's id.
    pub id: &'a str,
    /// The record (normally [`SeedRecord::new`]).
    pub record: &'a SeedRecord,
    /// How long the record lives.
    pub ttl: Duration,
    /// The replica that expands it, and for how long its lease holds without renewal.
    pub lease: Option<(&'a str, Duration)>,
}

/// Limits on the seeds of a deployment (everything sharing one key prefix).
#[derive(Debug, Clone, Copy)]
pub struct SeedQuotas {
    /// Seeds active at once.
    pub max_active: u32,
    /// Tiles of unfinished seeds not yet accounted for, the new seed's included.
    pub max_queued_tiles: u64,
}

/// What [`SeedStore::seed_admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedAdmission {
    /// The seed is recorded.
    Admitted,
    /// Refused: `active` seeds already run, the quota's worth.
    TooManyActive {
        /// Active seeds found.
        active: u64,
    },
    /// Refused: unfinished seeds already hold `queued` tiles, and the new one would take
    /// the sum past the quota.
    TooManyQueuedTiles {
        /// Remaining tiles of the unfinished seeds.
        queued: u64,
    },
}

/// The seed admission script. KEYS: the registry, the new record. ARGV: key prefix, id,
/// total, max active, max queued tiles, TTL in ms, holder ('' for none), lease in ms, then
/// field/value pairs. Answers `{verdict, active, queued}`: 0 admitted, 1 too many active,
/// 2 too many queued tiles. A registered id whose record is gone, or which has nothing left
/// to do, leaves the registry on the way: the quotas count only seeds that can progress.
static SEED_ADMIT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    let (expanding, running) = (SeedState::Expanding.as_str(), SeedState::Running.as_str());
    let (failed, interrupted) = (SeedState::Failed.as_str(), SeedState::Interrupted.as_str());
    redis::Script::new(&format!(
        r"{NOW_MS}{COUNTS}
local prefix, id = ARGV[1], ARGV[2]
local total, max_active, max_queued = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local active, queued = 0, 0
for _, other in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local rec = prefix .. 'seed:' .. other
  local f = redis.call('HMGET', rec, 'state', 'total', 'queued')
  local state = f[1]
  local done, failed_tiles = counts(rec)
  local accounted = done + failed_tiles
  local remaining = 0
  if state == '{expanding}' or state == '{running}' then
    remaining = (tonumber(f[2]) or 0) - accounted
  elseif state == '{failed}' or state == '{interrupted}' then
    remaining = (tonumber(f[3]) or 0) - accounted
  end
  if state == '{expanding}' or (state == '{running}' and remaining > 0) then
    active = active + 1
  end
  if remaining > 0 then
    queued = queued + remaining
  elseif state ~= '{expanding}' then
    redis.call('SREM', KEYS[1], other)
  end
end
if active >= max_active then return {{1, active, queued}} end
if queued + total > max_queued then return {{2, active, queued}} end
local fields = {{}}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[2], 'holder', ARGV[7], 'lease_until_ms',
    string.format('%.0f', now_ms() + tonumber(ARGV[8])))
end
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('SADD', KEYS[1], id)
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[6]) then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
return {{0, active, queued}}
"
    ))
});

impl SeedStore {
    /// Creates a seed record with a TTL if the deployment's seed quotas allow it, in one
    /// atomic step, so several api replicas sharing this Redis cannot race past the quotas.
    /// With `lease`, the accepting replica holds the expansion from the start.
    ///
    /// Seeds are counted from a registry set of the seeds that may still have work: one is
    /// active while `expanding`, or `running` with tiles unaccounted for; its remaining tiles
    /// are its total minus those marked done or failed (for `failed` and `interrupted` seeds,
    /// the tiles it queued minus those); `done`, `cancelled` and vanished seeds have none.
    /// Seeds left with nothing to do leave the registry on the way. The cost is one pass over
    /// the registry, which the quotas keep small.
    ///
    /// The script builds the record keys from the prefix, so it needs a single Redis (not a
    /// cluster), which is what fractile runs on.
    pub async fn seed_admit(
        &self,
        seed: &NewSeed<'_>,
        quotas: SeedQuotas,
    ) -> Result<SeedAdmission, StoreError> {
        let registry = self.keys.registry();
        let record = self.keys.seed(seed.id);
        let (holder, lease) = seed.lease.unwrap_or(("", Duration::ZERO));
        let mut invocation = SEED_ADMIT.key(&registry);
        invocation
            .key(&record)
            .arg(&self.keys.prefix)
            .arg(seed.id)
            .arg(seed.record.total)
            .arg(quotas.max_active)
            .arg(quotas.max_queued_tiles)
            .arg(millis(seed.ttl))
            .arg(holder)
            .arg(millis(lease));
        for (field, value) in seed.record.fields() {
            invocation.arg(field).arg(value);
        }
        self.redis
            .with_conn(|mut c| async move {
                let (verdict, active, queued): (i64, u64, u64) =
                    invocation.invoke_async(&mut c).await?;
                Ok(match verdict {
                    0 => SeedAdmission::Admitted,
                    1 => SeedAdmission::TooManyActive { active },
                    2 => SeedAdmission::TooManyQueuedTiles { queued },
                    other => {
                        return Err(StoreError::Malformed(format!(
                            "seed admission answered {other}"
                        )));
                    }
                })
            })
            .await
    }
}
