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
//!
//! **Where each part lives.** `record.rs`: the states and the record; `keys.rs`: the key
//! names; `store.rs`: the [`SeedStore`] handle, reads and the cancel; `admission.rs`: the
//! quotas and the registry walk; `lease.rs`: the expansion lease and its take-over;
//! `progress.rs`: the marks of finished tiles and the progress sample; `lua.rs`: what the scripts share.

mod admission;
mod keys;
mod lease;
mod lua;
mod progress;
mod record;
mod store;

pub use admission::{NewSeed, SeedAdmission, SeedQuotas};
pub use lease::LeaseStep;
pub use progress::ProgressSample;
pub use record::{SeedBBox, SeedOutcome, SeedRecord, SeedState};
pub use store::SeedStore;
