//! [`RedisClient`]: one Redis, reached through a pool within a budget and behind a breaker.
//! The tile store (the cache) and the seed store (durable state) each have one, on their
//! own servers or on the same one.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use deadpool::managed::QueueMode;
use deadpool_redis::redis::{self, AsyncConnectionConfig};
use deadpool_redis::{Manager, Runtime, Timeouts};

use crate::breaker::Breaker;
use crate::error::StoreError;
use crate::pool::{self, Connection, Pool};
use crate::settings::StoreSettings;

/// Budget of [`RedisClient::delete_prefix`], which scans.
#[cfg(feature = "test-util")]
const DELETE_PREFIX_BUDGET: Duration = Duration::from_secs(30);

/// The pool's occupancy, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct PoolStatus {
    /// Connections open.
    pub size: usize,
    /// Connections idle in the pool.
    pub available: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

/// A pool of connections to one Redis, every call within the budget and through the
/// breaker. Cheap to clone: clones share the pool and the breaker.
#[derive(Clone)]
pub(crate) struct RedisClient {
    pool: Pool,
    budget: Duration,
    probe_interval: Duration,
    breaker: Arc<Breaker>,
    /// The URL with its password hidden, for logs.
    pub(crate) redacted_url: Arc<str>,
}

impl RedisClient {
    /// Builds the pool for `settings`; `store` names this Redis's role in the breaker's
    /// metrics (`cache` or `state`). Connects lazily: a Redis that is down at start-up is not
    /// an error.
    pub(crate) fn new(settings: &StoreSettings, store: &'static str) -> Result<Self, StoreError> {
        let connection = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout));
        let manager = Manager::new_with_config(settings.url.as_str(), connection)?;
        let budget = settings.budget;
        let pool = Pool::builder(pool::Manager::new(manager))
            .max_size(settings.pool_size)
            // The budget bounds the whole operation anyway; capping these keeps the pool's
            // own errors (a wait timeout is load, not an outage) ahead of the budget's.
            .timeouts(Timeouts {
                wait: Some(settings.wait_timeout.min(budget)),
                create: Some(settings.connect_timeout.min(budget)),
                recycle: Some(settings.response_timeout.min(budget)),
            })
            // Required as soon as any timeout is set.
            .runtime(Runtime::Tokio1)
            // The connection returned last is handed out first: checkouts are shared handles
            // (`pool.rs`), so calls keep pipelining on the connection already carrying the
            // traffic, and the extra ones a burst opened (or a recycle check's wait) stay
            // idle instead of thinning the traffic over every connection.
            .queue_mode(QueueMode::Lifo)
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        Ok(RedisClient {
            pool,
            budget,
            probe_interval: settings.probe_interval,
            breaker: Arc::new(Breaker::new(settings.breaker_threshold, store)),
            redacted_url: fractile_settings::redact_url(&settings.url).into(),
        })
    }

    /// Registers the breaker's metrics (`redis_breaker_open{store}`,
    /// `redis_breaker_opens_total{store}`) on a process's registry.
    pub(crate) fn register_metrics(
        &self,
        registry: &prometheus::Registry,
    ) -> Result<(), prometheus::Error> {
        self.breaker.register(registry)
    }

    /// Whether the breaker is open.
    pub(crate) fn breaker_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// Times the breaker has opened.
    pub(crate) fn breaker_opens(&self) -> u64 {
        self.breaker.opens()
    }

    /// The pool's occupancy.
    pub(crate) fn pool_status(&self) -> PoolStatus {
        let s = self.pool.status();
        PoolStatus {
            size: s.size,
            available: s.available,
            waiting: s.waiting,
        }
    }

    /// One `PING` through the breaker, within the budget.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.with_conn(|mut c| async move {
            let _: String = redis::cmd("PING").query_async(&mut c).await?;
            Ok(())
        })
        .await
    }

    /// Runs `f` on a pooled connection, through the breaker, within the budget.
    pub(crate) async fn with_conn<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.with_conn_within(self.budget, f).await
    }

    /// [`Self::with_conn`] with another budget.
    pub(crate) async fn with_conn_within<T, F, Fut>(
        &self,
        budget: Duration,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.breaker.allow()?;
        let result = within(budget, &self.pool, f).await;
        let outage = result.as_ref().err().is_some_and(StoreError::is_outage);
        if self.breaker.record(outage) {
            self.start_probe(result.as_ref().err());
        }
        result
    }

    /// Deletes every key under `prefix` (tests clean up with it).
    #[cfg(feature = "test-util")]
    pub(crate) async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        let pattern = format!("{prefix}*");
        self.with_conn_within(DELETE_PREFIX_BUDGET, |mut c| async move {
            let keys: Vec<String> = {
                let mut iter =
                    redis::AsyncCommands::scan_match::<_, String>(&mut c, &pattern).await?;
                let mut keys = Vec::new();
                while let Some(k) = futures_lite::StreamExt::next(&mut iter).await {
                    keys.push(k?);
                }
                keys
            };
            if !keys.is_empty() {
                let _: () = redis::AsyncCommands::del(&mut c, keys).await?;
            }
            Ok(())
        })
        .await
    }

    /// The breaker just opened: probe Redis in the background until it answers.
    fn start_probe(&self, cause: Option<&StoreError>) {
        let threshold = self.breaker.threshold();
        tracing::warn!(
            url = %self.redacted_url,
            store = self.breaker.store(),
            error = cause.map(tracing::field::display),
            threshold,
            probe_every = ?self.probe_interval,
            "redis breaker open: calls fail fast until a probe gets an answer"
        );
        let breaker: Weak<Breaker> = Arc::downgrade(&self.breaker);
        let (pool, budget, every) = (self.pool.clone(), self.budget, self.probe_interval);
        tokio::spawn(async move {
            let opened = Instant::now();
            loop {
                tokio::time::sleep(every).await;
                // Every client is gone: nobody is left to probe for.
                let Some(breaker) = breaker.upgrade() else {
                    return;
                };
                let ping = within(budget, &pool, |mut c| async move {
                    let _: String = redis::cmd("PING").query_async(&mut c).await?;
                    Ok(())
                });
                if ping.await.is_ok() {
                    breaker.close();
                    tracing::info!(store = breaker.store(), open_for = ?opened.elapsed(), "redis answered the probe; breaker closed");
                    return;
                }
            }
        });
    }
}

/// Takes a connection from `pool` and runs `f` on it, all within `budget`.
async fn within<T, F, Fut>(budget: Duration, pool: &Pool, f: F) -> Result<T, StoreError>
where
    F: FnOnce(Connection) -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let operation = async {
        let conn = Connection::new(pool.get().await?);
        f(conn).await
    };
    tokio::time::timeout(budget, operation)
        .await
        .unwrap_or(Err(StoreError::OverBudget(budget)))
}
