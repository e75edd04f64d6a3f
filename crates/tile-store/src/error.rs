//! [`StoreError`]: why a store call failed, and which failures say Redis is out of reach
//! (those count towards the breaker) or full.

use std::time::Duration;

use deadpool_redis::PoolError;
use deadpool_redis::redis::{self, ErrorKind, ServerErrorKind};

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The breaker is open: Redis failed repeatedly, and calls fail fast until a probe
    /// gets an answer.
    #[error("redis unavailable (circuit breaker open)")]
    Unavailable,
    /// The operation did not finish within the budget.
    #[error("redis did not answer within {0:?}")]
    OverBudget(Duration),
    /// No pooled connection became free within the wait timeout.
    #[error("timed out waiting for a pooled redis connection")]
    PoolWaitTimeout,
    /// Getting a connection failed otherwise.
    #[error("redis pool: {0}")]
    Pool(String),
    /// The command failed or timed out.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stored value was not what this version writes.
    #[error("malformed value in redis: {0}")]
    Malformed(String),
}

impl StoreError {
    /// Whether this error says Redis is out of reach (as opposed to busy, or answering with
    /// an error): these count towards the breaker, and a request waiting for a worker's
    /// tile gives up on Redis when it sees one.
    pub fn is_outage(&self) -> bool {
        match self {
            StoreError::Unavailable | StoreError::OverBudget(_) | StoreError::Pool(_) => true,
            StoreError::PoolWaitTimeout | StoreError::Malformed(_) => false,
            StoreError::Redis(e) => match e.kind() {
                ErrorKind::Io
                | ErrorKind::Parse
                | ErrorKind::AuthenticationFailed
                | ErrorKind::ClusterConnectionNotFound => true,
                ErrorKind::Server(kind) => matches!(
                    kind,
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::TryAgain
                ),
                // Redis answered: a wrong type, a script error, out of memory, ...
                _ => false,
            },
        }
    }
}

impl StoreError {
    /// Whether Redis refused a write because it is full (`maxmemory` reached under
    /// `noeviction`: an `OOM` error reply). The state store answers this, where the cache
    /// would evict.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, StoreError::Redis(e) if e.code() == Some("OOM"))
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Timeout(deadpool_redis::TimeoutType::Wait) => StoreError::PoolWaitTimeout,
            PoolError::Backend(e) => StoreError::Redis(e),
            other => StoreError::Pool(other.to_string()),
        }
    }
}
