//! Seed records: the one owner of a seed's state, fields and every change to them, in the
//! **state store** ([`SeedStore`]): a Redis that does not evict and persists, apart from the
//! tile cache.
//!
//! Why apart: the tile cache runs as a cache (`allkeys-lru`), which may evict any key at any
//! moment, and a seed is several keys. Evicting its set of finished tiles once turned a seed
//! reported `done` into `running` with nothing done, counted against the quotas for the
//! record's lifetime; evicting the registry would switch the quotas off. The state store runs
//! with `noeviction` (a full store refuses writes: new seeds get a 503, tiles are untouched)
//! and an append-only file. Embedded and development setups may point it at the cache's
//! server (`FRACTILE_STATE_REDIS_URL` defaults to `FRACTILE_REDIS_URL`), and then live with
//! the cache's eviction.
//!
//! A seed is a Redis hash `{prefix}seed:{id}` (see [`SeedRecord`] for its fields), the sets
//! `{prefix}seed:{id}:done` / `:failed` of its finished tiles, and its id in the registry
//! `{prefix}seeds` while it may still have work. The api creates and expands seeds, the
//! workers mark tiles; neither writes a field by name: every change is a method here, and
//! every state change is one Lua script that checks the state it moves from, so two
//! replicas (or a replica and an operator) can never interleave a read and a write.
//!
//! **What is stored, not derived.** The counts of finished tiles are fields of the record,
//! moved by the same script that adds a tile to its set (the sets only make a second mark
//! of a tile a no-op), and a seed whose every tile is accounted for is *stored* `done`. So a
//! finished seed stays finished whatever happens to its sets, and a missing record is a 404,
//! never a seed that looks like it has work. The registry heals itself: every mark and every
//! step of the expansion puts a seed with work back into it.
//!
//! **States.** `expanding` → `running` (every job queued) or `failed` (the jobs could not be
//! queued); `running` → `done` (every tile accounted for); any state but `done` →
//! `cancelled`. Nothing leaves `cancelled`: the expansion's own moves all require
//! `expanding`, so a cancel always wins, whichever arrives first.
//!
//! **Durable expansion.** The replica expanding a seed holds a lease on it (`holder`,
//! `lease_until_ms`, in Redis server time so replicas' clocks do not matter) and stores
//! its `cursor` (tiles of the plan queued so far, in plan order) with the counters in one
//! step after each batch. It renews the lease while it works; if it stops renewing (killed,
//! partitioned, shut down: a clean shutdown releases the lease at once), any replica's
//! [`SeedStore::seed_take_over`] finds the seed and continues from the cursor. A batch
//! queued but not yet recorded when the holder died is queued again: duplicates, never
//! gaps, and workers are idempotent. Every step of the holder checks it still holds the
//! lease, so a holder that lost it (paused past its lease) stops instead of racing the
//! new one.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_redis::redis;
use fractile_render::TileKey;
use serde::{Deserialize, Serialize};

use crate::client::RedisClient;
use crate::{Keys, PoolStatus, StoreError, StoreSettings};

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
    /// Every tile is accounted for (rendered, found stored, or failed for good). Final.
    Done,
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
            SeedState::Done => "done",
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
            SeedState::Done,
            SeedState::Cancelled,
            SeedState::Failed,
            SeedState::Interrupted,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// The rectangle of the complex plane a seed covers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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
    /// Tiles finished: rendered, or found already stored.
    pub done: u64,
    /// Tiles that failed for good.
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

    /// The state a client is told: the stored one, and `done` for a `running` record of an
    /// earlier version (which derived it) with every tile accounted for.
    pub fn reported_state(&self) -> &'static str {
        match self.state {
            SeedState::Running if self.done + self.failed >= self.total => "done",
            other => other.as_str(),
        }
    }

    /// The hash fields it is stored as (the lease is written by the scripts).
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("state", self.state.as_str().to_owned()),
            ("total", self.total.to_string()),
            ("queued", self.queued.to_string()),
            ("skipped", self.skipped.to_string()),
            ("done", self.done.to_string()),
            ("failed", self.failed.to_string()),
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

    /// The record stored as `fields`. `sets` are the sizes of its `:done` and `:failed` sets,
    /// read for records of earlier versions, which kept the counts only there.
    fn from_fields(fields: &HashMap<String, String>, sets: (u64, u64)) -> Result<Self, StoreError> {
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
        let counted = |k: &str, set: u64| -> Result<u64, StoreError> {
            match text(k) {
                Some(_) => number(k),
                None => Ok(set),
            }
        };
        Ok(SeedRecord {
            state,
            total: number("total")?,
            queued: number("queued")?,
            skipped: number("skipped")?,
            done: counted("done", sets.0)?,
            failed: counted("failed", sets.1)?,
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

/// Lua: `counts(rec)`, a record's finished and failed tiles: its fields, or for a record of an
/// earlier version (which kept them only in the sets) the sizes of its sets.
const COUNTS: &str = "local function counts(rec) \
                      local f = redis.call('HMGET', rec, 'done', 'failed') \
                      local done = tonumber(f[1]) or redis.call('SCARD', rec .. ':done') \
                      local failed = tonumber(f[2]) or redis.call('SCARD', rec .. ':failed') \
                      return done, failed end\n";

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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Seed records in the state store. Cheap to clone.
#[derive(Clone)]
pub struct SeedStore {
    redis: RedisClient,
    keys: Keys,
}

impl SeedStore {
    /// Builds the pool for the state store at `settings.url` (its tile TTL is not used).
    /// Connects lazily: a Redis that is down at start-up is not an error.
    pub fn new(settings: &StoreSettings) -> Result<Self, StoreError> {
        Ok(SeedStore {
            redis: RedisClient::new(settings, "state")?,
            keys: Keys {
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

    /// A seed's record, if it exists.
    pub async fn seed_get(&self, id: &str) -> Result<Option<SeedRecord>, StoreError> {
        let k = self.keys.seed(id);
        let (done, failed) = (
            self.keys.seed_tiles(id, SeedOutcome::Done),
            self.keys.seed_tiles(id, SeedOutcome::Failed),
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
            .key(self.keys.seed_registry())
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
        let registry = self.keys.seed_registry();
        let mut invocation = SEED_TAKE_OVER.key(&registry);
        invocation
            .arg(&self.keys.prefix)
            .arg(holder)
            .arg(millis(lease));
        self.redis
            .with_conn(|mut c| async move { Ok(invocation.invoke_async(&mut c).await?) })
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
        let field = match outcome {
            SeedOutcome::Done => "done",
            SeedOutcome::Failed => "failed",
        };
        let mut invocation = SEED_MARK.key(self.keys.seed(id));
        invocation
            .key(self.keys.seed_tiles(id, outcome))
            .key(self.keys.seed_registry())
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

    /// Deletes every key under this store's prefix (tests clean up with it).
    pub async fn delete_prefix(&self) -> Result<(), StoreError> {
        crate::delete_prefix(&self.redis, &self.keys.prefix).await
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
            SeedState::Done,
            SeedState::Cancelled,
            SeedState::Failed,
            SeedState::Interrupted,
        ] {
            assert_eq!(SeedState::parse(state.as_str()), Some(state));
        }
        assert_eq!(SeedState::parse("paused"), None);
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
        record.done = 7;
        record.failed = 2;
        let fields: HashMap<String, String> = record
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        // The stored counts, not the sets' sizes (those are for earlier versions' records).
        let back = SeedRecord::from_fields(&fields, (0, 0)).expect("valid");
        assert_eq!(back, record);
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
        assert!(SeedRecord::from_fields(&fields(&[("state", "paused")]), (0, 0)).is_err());
        assert!(
            SeedRecord::from_fields(&fields(&[("state", "running"), ("total", "x")]), (0, 0))
                .is_err()
        );
        assert!(
            SeedRecord::from_fields(&fields(&[("state", "running"), ("bbox", "1,2,3")]), (0, 0))
                .is_err()
        );
        // A record of a version before durable expansion: no cursor, never taken over.
        let old = SeedRecord::from_fields(
            &fields(&[("state", "interrupted"), ("total", "85"), ("queued", "40")]),
            (3, 1),
        )
        .expect("valid");
        assert_eq!((old.cursor, old.queued), (None, 40));
        // Its counts come from its sets.
        assert_eq!((old.done, old.failed), (3, 1));
    }
}
