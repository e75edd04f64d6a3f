//! Lua shared by the seed scripts: the Redis server's clock and a record's counts; and the
//! one way a duration goes to them (milliseconds, at least one).

use std::time::Duration;

/// Lua: the current time in ms by the Redis server's clock (`TIME`), so that leases do not
/// depend on the replicas' clocks agreeing.
pub(super) const NOW_MS: &str = "local function now_ms() local t = redis.call('TIME') \
                      return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end\n";

/// Lua: `counts(rec)`, a record's finished and failed tiles: its fields, or for a record of an
/// earlier version (which kept them only in the sets) the sizes of its sets.
pub(super) const COUNTS: &str = "local function counts(rec) \
                      local f = redis.call('HMGET', rec, 'done', 'failed') \
                      local done = tonumber(f[1]) or redis.call('SCARD', rec .. ':done') \
                      local failed = tonumber(f[2]) or redis.call('SCARD', rec .. ':failed') \
                      return done, failed end\n";

/// `d` in milliseconds, as the scripts take a TTL or a lease: at least 1, saturating.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
