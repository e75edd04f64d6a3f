//! The connection pool: deadpool over redis's multiplexed connections, handing out shared
//! handles rather than exclusive connections, with a recycle check that costs a round trip
//! only when it can tell something.
//!
//! A checkout gives a [`Connection`]: a clone of the pooled multiplexed connection, the slot
//! free again at once. Concurrent calls therefore share the connection the pool hands out,
//! their commands pipelined on one socket by redis's multiplexer, where an exclusive
//! checkout had each call hold a connection of its own for its round trip (and a burst wait
//! for one, or fail the lookup, when the pool ran out). The pool hands out the connection
//! returned last (`QueueMode::Lifo`, set where the pool is built), so the traffic stays on
//! the connection that carries it. The pool still opens connections (it grows only while it
//! has none free, as when many calls arrive at an empty pool), checks idle ones and replaces
//! broken ones. Measured in `loadtests/reports/l2-hit/`: the api's CPU per L2 hit fell by
//! about a third, most of it system time.
//!
//! deadpool-redis's own manager re-checks every connection it hands out with a pipelined
//! `UNWATCH` + `PING`, so each `GET` of an L2 hit paid two round trips. This manager wraps it
//! and keeps its check where it informs:
//!
//! - a connection checked out within the last [`RECHECK_IDLE_AFTER`] is handed out again as
//!   it is: it was working a moment ago, and if Redis went away since, the command fails
//!   within the store's budget exactly as the `PING` would have;
//! - a connection idle longer than that gets deadpool-redis's check, as before (the store
//!   never uses `WATCH`, so the `UNWATCH` is harmless);
//! - a connection on which a command failed for the connection's sake (I/O, a timeout, the
//!   connection dropped) is not handed out again: recycling it fails, and deadpool opens a
//!   new one. Without that, a connection broken while in use would keep failing every call
//!   that drew it, since it never went idle long enough to be checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

/// A connection used within this long is handed out again without a `PING`.
pub const RECHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The pool of [`Connection`]s.
pub(crate) type Pool = managed::Pool<Manager>;

/// Creates connections with deadpool-redis's manager; recycles them as the module says.
pub(crate) struct Manager {
    inner: deadpool_redis::Manager,
}

impl Manager {
    pub(crate) fn new(inner: deadpool_redis::Manager) -> Self {
        Manager { inner }
    }
}

/// A pooled connection and whether a command on it failed for the connection's sake (shared
/// with the handles its commands run on).
pub(crate) struct Tracked {
    conn: MultiplexedConnection,
    failed: Arc<AtomicBool>,
}

impl managed::Manager for Manager {
    type Type = Tracked;
    type Error = RedisError;

    // `create` and the full recycle check are boxed: opening a redis connection is a future
    // of several kilobytes, and deadpool's checkout future holds both inline, so unboxed
    // every checkout (every store call) would carry and copy them, though a warm pool
    // hardly ever opens a connection.
    async fn create(&self) -> Result<Tracked, RedisError> {
        let conn = Box::pin(managed::Manager::create(&self.inner)).await?;
        Ok(Tracked {
            conn,
            failed: Arc::default(),
        })
    }

    async fn recycle(&self, tracked: &mut Tracked, metrics: &Metrics) -> RecycleResult<RedisError> {
        if tracked.failed.load(Ordering::Relaxed) {
            return Err(RecycleError::message("a command on this connection failed"));
        }
        if metrics.last_used() < RECHECK_IDLE_AFTER {
            return Ok(());
        }
        Box::pin(managed::Manager::recycle(
            &self.inner,
            &mut tracked.conn,
            metrics,
        ))
        .await
    }
}

/// A handle on a pooled connection. Commands run on it as on redis's own connections.
///
/// The connection is multiplexed: a handle is a clone of it, and the pool slot it came from
/// is free again as soon as the handle is made, so concurrent callers share a connection,
/// their commands pipelined on one socket by redis's multiplexer, instead of each holding a
/// connection of its own for a round trip. The pool still opens, checks and replaces the
/// connections.
pub(crate) struct Connection {
    conn: MultiplexedConnection,
    failed: Arc<AtomicBool>,
}

impl Connection {
    pub(crate) fn new(object: managed::Object<Manager>) -> Self {
        Connection {
            conn: object.conn.clone(),
            failed: Arc::clone(&object.failed),
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let Connection { conn, failed } = self;
        Box::pin(async move {
            let result = conn.req_packed_command(cmd).await;
            mark_failed(failed, &result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let Connection { conn, failed } = self;
        Box::pin(async move {
            let result = conn.req_packed_commands(cmd, offset, count).await;
            mark_failed(failed, &result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// Flags the pooled connection for replacement when `result` failed for the connection's
/// sake.
fn mark_failed<T>(failed: &AtomicBool, result: &Result<T, RedisError>) {
    if result.as_ref().is_err_and(breaks_connection) {
        failed.store(true, Ordering::Relaxed);
    }
}

/// Whether `error` leaves the connection in doubt (as opposed to Redis answering with an
/// error, after which the connection is as good as before).
fn breaks_connection(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
}
