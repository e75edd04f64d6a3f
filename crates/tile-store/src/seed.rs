//! Seed records: the one owner of a seed's state, fields and every change to them.
//!
//! A seed is a Redis hash `{prefix}seed:{id}` (see [`SeedRecord`] for its fields), the sets
//! `{prefix}seed:{id}:done` / `:failed` of its finished tiles, and its id in the registry
//! `{prefix}seeds` while it may still have work. The api creates and expands seeds, the
//! workers mark tiles; neither writes a field by name: every change is a method here, and
//! every state change is one Lua script that checks the state it moves from, so two
//! replicas (or a replica and an operator) can never interleave a read and a write.
//!
//! **States.** `expanding` → `running` (every job queued) or `failed` (the jobs could not be
//! queued); any state but done → `cancelled`. Nothing leaves `cancelled`: the expansion's own moves
//! all require `expanding`, so a cancel always wins, whichever arrives first. `done` is not
//! stored: a `running` seed whose tiles are all accounted for reports it.
//!
//! **Durable expansion.** The replica expanding a seed holds a lease on it (`holder`,
//! `lease_until_ms`, in Redis server time so replicas' clocks do not matter) and stores
//! its `cursor` (tiles of the plan queued so far, in plan order) with the counters in one
//! step after each batch. It renews the lease while it works; if it stops renewing (killed,
//! partitioned, shut down: a clean shutdown releases the lease at once), any replica's
//! [`TileStore::seed_take_over`] finds the seed and continues from the cursor. A batch
//! queued but not yet recorded when the holder died is queued again: duplicates, never
//! gaps, and workers are idempotent. Every step of the holder checks it still holds the
//! lease, so a holder that lost it (paused past its lease) stops instead of racing the
//! new one.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_redis::redis;
use fractile_render::TileKey;
use serde::{Deserialize, Serialize};

use crate::{StoreError, TileStore};

/// What became of a seed's tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedOutcome {
    /// Rendered and stored, or found already stored.
    Done,
    /// Dead-lettered after its last attempt.
    Failed,
}

/// A seed's stored `state`: the one list of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedState {
    /// Its jobs are being queued (by whichever replica holds its lease).
    Expanding,
    /// Every job is queued; workers are rendering.
    Running,
    /// Cancelled by the operator: workers skip its remaining jobs. Final.
    Cancelled,
    /// Its jobs could not all be queued.
    Failed,
    /// Written only by versions before durable expansion, when the accepting replica shut
    /// down mid-expansion; still read (and counted by admission) for their records.
    Interrupted,
}

impl SeedState {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            SeedState::Expanding => "expanding",
            SeedState::Running => "running",
            SeedState::Cancelled => "cancelled",
            SeedState::Failed => "failed",
            SeedState::Interrupted => "interrupted",
        }
    }

    /// The state stored as `name`, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        [
            SeedState::Expanding,
            SeedState::Running,
            SeedState::Cancelled,
            SeedState::Failed,
            SeedState::Interrupted,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// The rectangle of the complex plane a seed covers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeedBBox {
    /// Left edge.
    pub min_re: f64,
    /// Bottom edge.
    pub min_im: f64,
    /// Right edge.
    pub max_re: f64,
    /// Top edge.
    pub max_im: f64,
}

/// A seed's record. What was asked (zooms, bbox, style) is kept so that any replica can
/// rebuild the plan and continue the expansion from `cursor`.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedRecord {
    /// The stored state.
    pub state: SeedState,
    /// Tiles in the seed.
    pub total: u64,
    /// Jobs queued (confirmed by the broker) so far.
    pub queued: u64,
    /// Tiles found already stored while expanding (counted in `done`).
    pub skipped: u64,
    /// Tiles finished: rendered, or found already stored (from the `:done` set).
    pub done: u64,
    /// Tiles that failed for good (from the `:failed` set).
    pub failed: u64,
    /// Tiles of the plan expanded so far, in plan order; `None` in records of versions
    /// before durable expansion, which are never taken over.
    pub cursor: Option<u64>,
    /// Shallowest zoom.
    pub min_zoom: u8,
    /// Deepest zoom.
    pub max_zoom: u8,
    /// Only tiles intersecting this rectangle (`None`: whole zoom levels).
    pub bbox: Option<SeedBBox>,
    /// Style name.
    pub style: String,
    /// When it was accepted (ms since the Unix epoch).
    pub created_unix_ms: u64,
}

impl SeedRecord {
    /// A new seed's record: `expanding`, nothing queued, cursor at the start.
    pub fn new(
        total: u64,
        zooms: (u8, u8),
        bbox: Option<SeedBBox>,
        style: &str,
        created_unix_ms: u64,
    ) -> Self {
        SeedRecord {
            state: SeedState::Expanding,
            total,
            queued: 0,
            skipped: 0,
            done: 0,
            failed: 0,
            cursor: Some(0),
            min_zoom: zooms.0,
            max_zoom: zooms.1,
            bbox,
            style: style.to_owned(),
            created_unix_ms,
        }
    }

    /// The state a client is told: `done` for a `running` seed with every tile accounted
    /// for, else the stored state.
    pub fn reported_state(&self) -> &'static str {
        match self.state {
            SeedState::Running if self.done + self.failed >= self.total => "done",
            other => other.as_str(),
        }
    }

    /// The hash fields it is stored as (`done` and `failed` live in sets; the lease is
    /// written by the scripts).
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("state", self.state.as_str().to_owned()),
            ("total", self.total.to_string()),
            ("queued", self.queued.to_string()),
            ("skipped", self.skipped.to_string()),
            ("min_zoom", self.min_zoom.to_string()),
            ("max_zoom", self.max_zoom.to_string()),
            ("style", self.style.clone()),
            ("created_unix_ms", self.created_unix_ms.to_string()),
        ];
        if let Some(cursor) = self.cursor {
            fields.push(("cursor", cursor.to_string()));
        }
        if let Some(b) = self.bbox {
            // `Display` of an f64 is the shortest text that parses back to the same value.
            let text = format!("{},{},{},{}", b.min_re, b.min_im, b.max_re, b.max_im);
            fields.push(("bbox", text));
        }
        fields
    }

    /// The record stored as `fields`, with the sizes of its tile sets.
    fn from_fields(
        fields: &HashMap<String, String>,
        done: u64,
        failed: u64,
    ) -> Result<Self, StoreError> {
        let malformed = |what: &str| StoreError::Malformed(format!("seed record: {what}"));
        let text = |k: &str| fields.get(k).map(String::as_str);
        let number = |k: &str| -> Result<u64, StoreError> {
            text(k).map_or(Ok(0), |v| v.parse().map_err(|_| malformed(k)))
        };
        let zoom = |k: &str| -> Result<u8, StoreError> {
            text(k).map_or(Ok(0), |v| v.parse().map_err(|_| malformed(k)))
        };
        let state = text("state")
            .and_then(SeedState::parse)
            .ok_or_else(|| malformed("state"))?;
        let bbox = match text("bbox") {
            None => None,
            Some(v) => {
                let parts: Vec<f64> = v
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|_| malformed("bbox"))?;
                let [min_re, min_im, max_re, max_im] = parts[..] else {
                    return Err(malformed("bbox"));
                };
                Some(SeedBBox {
                    min_re,
                    min_im,
                    max_re,
                    max_im,
                })
            }
        };
        Ok(SeedRecord {
            state,
            total: number("total")?,
            queued: number("queued")?,
            skipped: number("skipped")?,
            done,
            failed,
            cursor: text("cursor")
                .map(|v| v.parse().map_err(|_| malformed("cursor")))
                .transpose()?,
            min_zoom: zoom("min_zoom")?,
            max_zoom: zoom("max_zoom")?,
            bbox,
            style: text("style").unwrap_or_default().to_owned(),
            created_unix_ms: number("created_unix_ms")?,
        })
    }
}

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

/// What [`TileStore::seed_admit`] decided.
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

/// What a lease holder's step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStep {
    /// Done: the caller held the lease and the seed was expanding.
    Held,
    /// Not done: the seed left `expanding` (cancelled, for one) or another replica holds
    /// it now. The caller must stop expanding.
    Lost(Option<SeedState>),
}

/// Lua: the current time in ms by the Redis server's clock (`TIME`), so that leases do not
/// depend on the replicas' clocks agreeing.
const NOW_MS: &str = "local function now_ms() local t = redis.call('TIME') \
                      return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end\n";

/// The seed admission script. KEYS: the registry, the new record. ARGV: key prefix, id,
/// total, max active, max queued tiles, TTL in ms, holder ('' for none), lease in ms, then
/// field/value pairs. Answers `{verdict, active, queued}`: 0 admitted, 1 too many active,
/// 2 too many queued tiles.
static SEED_ADMIT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    let (expanding, running) = (SeedState::Expanding.as_str(), SeedState::Running.as_str());
    let (failed, interrupted) = (SeedState::Failed.as_str(), SeedState::Interrupted.as_str());
    redis::Script::new(&format!(
        r"{NOW_MS}
local prefix, id = ARGV[1], ARGV[2]
local total, max_active, max_queued = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local active, queued = 0, 0
for _, other in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local rec = prefix .. 'seed:' .. other
  local f = redis.call('HMGET', rec, 'state', 'total', 'queued')
  local state = f[1]
  local accounted = redis.call('SCARD', rec .. ':done') + redis.call('SCARD', rec .. ':failed')
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
  else
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
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {{0, active, queued}}
"
    ))
});

/// A lease holder's step. KEYS: the record. ARGV: operation (`advance`, `renew`, `finish`,
/// `release`), holder, lease in ms, then for `advance` the new cursor and the queued and
/// skipped counts to add, for `finish` the state to move to. Runs only while the seed is
/// `expanding` and held by this holder; answers `{1, state}` when it ran, `{0, state}`
/// (`''` for a missing record) when it did not.
static SEED_LEASE_STEP: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    let expanding = SeedState::Expanding.as_str();
    redis::Script::new(&format!(
        r"{NOW_MS}
local f = redis.call('HMGET', KEYS[1], 'state', 'holder')
if not f[1] then return {{0, ''}} end
if f[1] ~= '{expanding}' or f[2] ~= ARGV[2] then return {{0, f[1]}} end
local op = ARGV[1]
if op == 'advance' then
  redis.call('HSET', KEYS[1], 'cursor', ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'queued', ARGV[5])
  redis.call('HINCRBY', KEYS[1], 'skipped', ARGV[6])
end
if op == 'advance' or op == 'renew' then
  redis.call('HSET', KEYS[1], 'lease_until_ms', string.format('%.0f', now_ms() + tonumber(ARGV[3])))
elseif op == 'finish' then
  redis.call('HSET', KEYS[1], 'state', ARGV[4])
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

/// Cancels a seed that has not finished. KEYS: the record, its `:done` and `:failed` sets.
/// Answers 1, or 0 when it does not exist. A `running` seed whose tiles are all accounted
/// for (reported `done`) is left as it is: its work is finished, and calling it cancelled
/// would misreport it. Otherwise the lease goes with the cancel: the holder's next step finds
/// `cancelled` and stops.
static SEED_CANCEL: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(&format!(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local f = redis.call('HMGET', KEYS[1], 'state', 'total')
if f[1] == '{running}' then
  local accounted = redis.call('SCARD', KEYS[2]) + redis.call('SCARD', KEYS[3])
  if accounted >= (tonumber(f[2]) or 0) then return 1 end
end
redis.call('HSET', KEYS[1], 'state', '{cancelled}')
redis.call('HDEL', KEYS[1], 'holder', 'lease_until_ms')
return 1
",
        running = SeedState::Running.as_str(),
        cancelled = SeedState::Cancelled.as_str(),
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

/// Records finished tiles of a live seed. KEYS: the record, the set. ARGV: tile ids.
static SEED_MARK: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "local ttl = redis.call('PTTL', KEYS[1]) \
         if ttl < 0 then return 0 end \
         redis.call('SADD', KEYS[2], unpack(ARGV)) \
         redis.call('PEXPIRE', KEYS[2], ttl) return 1",
    )
});

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl TileStore {
    /// Creates a seed record with a TTL if the deployment's seed quotas allow it, in one
    /// atomic step, so several api replicas sharing this Redis cannot race past the quotas.
    /// With `lease`, the accepting replica holds the expansion from the start.
    ///
    /// Seeds are counted from a registry set of the seeds that may still have work: one is
    /// active while `expanding`, or `running` with tiles unaccounted for; its remaining tiles
    /// are its total minus those marked done or failed (for `failed` and `interrupted` seeds,
    /// the tiles it queued minus those); `cancelled` and expired seeds have none. Seeds left
    /// with nothing to do leave the registry on the way. The cost is one pass over the
    /// registry, which the quotas keep small.
    ///
    /// The script builds the record keys from the prefix, so it needs a single Redis (not a
    /// cluster), which is what fractile runs on.
    pub async fn seed_admit(
        &self,
        seed: &NewSeed<'_>,
        quotas: SeedQuotas,
    ) -> Result<SeedAdmission, StoreError> {
        let registry = self.keys.seed_registry();
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
        self.with_conn(|mut c| async move {
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

    /// A seed's record, if it exists, with `done` and `failed` counted from its tile sets.
    pub async fn seed_get(&self, id: &str) -> Result<Option<SeedRecord>, StoreError> {
        let k = self.keys.seed(id);
        let (done, failed) = (
            self.keys.seed_tiles(id, SeedOutcome::Done),
            self.keys.seed_tiles(id, SeedOutcome::Failed),
        );
        self.with_conn(|mut c| async move {
            let (fields, done, failed): (HashMap<String, String>, u64, u64) = redis::pipe()
                .hgetall(&k)
                .scard(&done)
                .scard(&failed)
                .query_async(&mut c)
                .await?;
            if fields.is_empty() {
                return Ok(None);
            }
            SeedRecord::from_fields(&fields, done, failed).map(Some)
        })
        .await
    }

    /// A seed's stored state, if it exists (what a worker checks before each job).
    pub async fn seed_state(&self, id: &str) -> Result<Option<SeedState>, StoreError> {
        let k = self.keys.seed(id);
        self.with_conn(|mut c| async move {
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
        let mut invocation = SEED_CANCEL.key(self.keys.seed(id));
        invocation
            .key(self.keys.seed_tiles(id, SeedOutcome::Done))
            .key(self.keys.seed_tiles(id, SeedOutcome::Failed));
        self.with_conn(|mut c| async move {
            let existed: i64 = invocation.invoke_async(&mut c).await?;
            Ok(existed == 1)
        })
        .await
    }

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
        self.lease_step(id, "advance", holder, lease, &[cursor, queued, skipped])
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
    /// holder holds the lease; a cancelled seed stays cancelled.
    pub async fn seed_finish_expansion(
        &self,
        id: &str,
        holder: &str,
        to: SeedState,
    ) -> Result<LeaseStep, StoreError> {
        let k = self.keys.seed(id);
        let mut invocation = SEED_LEASE_STEP.key(&k);
        invocation.arg("finish").arg(holder).arg(1).arg(to.as_str());
        self.with_conn(|mut c| async move { lease_answer(invocation.invoke_async(&mut c).await?) })
            .await
    }

    async fn lease_step(
        &self,
        id: &str,
        op: &str,
        holder: &str,
        lease: Duration,
        numbers: &[u64],
    ) -> Result<LeaseStep, StoreError> {
        let k = self.keys.seed(id);
        let mut invocation = SEED_LEASE_STEP.key(&k);
        invocation.arg(op).arg(holder).arg(millis(lease));
        for n in numbers {
            invocation.arg(*n);
        }
        self.with_conn(|mut c| async move { lease_answer(invocation.invoke_async(&mut c).await?) })
            .await
    }

    /// Takes over one expansion whose holder stopped renewing its lease (or released it),
    /// as `holder` for `lease`: its id, or `None` when every expansion is held.
    pub async fn seed_take_over(
        &self,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<String>, StoreError> {
        let registry = self.keys.seed_registry();
        let mut invocation = SEED_TAKE_OVER.key(&registry);
        invocation
            .arg(&self.keys.prefix)
            .arg(holder)
            .arg(millis(lease));
        self.with_conn(|mut c| async move { Ok(invocation.invoke_async(&mut c).await?) })
            .await
    }

    /// Records what became of some of a seed's tiles. A set, not a counter: a redelivered
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
        let set = self.keys.seed_tiles(id, outcome);
        let record = self.keys.seed(id);
        let mut invocation = SEED_MARK.key(&record);
        invocation.key(&set);
        for key in keys {
            invocation.arg(key.to_string());
        }
        self.with_conn(|mut c| async move {
            let _: i64 = invocation.invoke_async(&mut c).await?;
            Ok(())
        })
        .await
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for state in [
            SeedState::Expanding,
            SeedState::Running,
            SeedState::Cancelled,
            SeedState::Failed,
            SeedState::Interrupted,
        ] {
            assert_eq!(SeedState::parse(state.as_str()), Some(state));
        }
        assert_eq!(SeedState::parse("done"), None);
    }

    #[test]
    fn records_round_trip_through_their_fields() {
        let bbox = SeedBBox {
            min_re: -0.1,
            min_im: 1.0 / 3.0,
            max_re: 0.7,
            max_im: 1.2,
        };
        let mut record = SeedRecord::new(20_000, (3, 9), Some(bbox), "fire", 1_700_000_000_000);
        record.cursor = Some(1500);
        record.queued = 1400;
        record.skipped = 100;
        let fields: HashMap<String, String> = record
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let back = SeedRecord::from_fields(&fields, 7, 2).expect("valid");
        assert_eq!(
            back,
            SeedRecord {
                done: 7,
                failed: 2,
                ..record
            }
        );
    }

    #[test]
    fn a_running_seed_with_every_tile_accounted_for_reports_done() {
        let mut record = SeedRecord::new(10, (0, 1), None, "classic", 0);
        assert_eq!(record.reported_state(), "expanding");
        record.state = SeedState::Running;
        record.done = 9;
        assert_eq!(record.reported_state(), "running");
        record.failed = 1;
        assert_eq!(record.reported_state(), "done");
        record.state = SeedState::Cancelled;
        assert_eq!(record.reported_state(), "cancelled");
    }

    #[test]
    fn records_of_other_writers_are_malformed_not_guessed() {
        let fields = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(SeedRecord::from_fields(&fields(&[("state", "paused")]), 0, 0).is_err());
        assert!(
            SeedRecord::from_fields(&fields(&[("state", "running"), ("total", "x")]), 0, 0)
                .is_err()
        );
        assert!(
            SeedRecord::from_fields(&fields(&[("state", "running"), ("bbox", "1,2,3")]), 0, 0)
                .is_err()
        );
        // A record of a version before durable expansion: no cursor, never taken over.
        let old = SeedRecord::from_fields(
            &fields(&[("state", "interrupted"), ("total", "85"), ("queued", "40")]),
            0,
            0,
        )
        .expect("valid");
        assert_eq!((old.cursor, old.queued), (None, 40));
    }
}
