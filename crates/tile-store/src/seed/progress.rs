//! Marking a seed's finished tiles: the count moves with the set that keeps a redelivered
//! job from counting twice, and the mark that accounts for the last tile stores the seed
//! `done` (and takes it out of the registry).

use deadpool_redis::redis;
use fractile_render::TileKey;

use super::lua::COUNTS;
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

impl SeedStore {
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
