//! Waking the requests that wait for a worker's render: the [`ReadyNote`] a worker
//! announces a tile with, and the [`ReadyListener`] that hands it to the waiters.
//!
//! One pub/sub connection per process subscribes to the ready channel and hands each
//! announcement to whoever registered for that tile. Pub/sub delivers at most once and not
//! while the connection is down, so a waiter never relies on it alone: it also re-reads the
//! store on a short interval until its deadline. The listener reconnects by itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_redis::redis;
use fractile_render::TileKey;
use futures_lite::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use fractile_telemetry::RateLimitedLog;

/// Pause before reconnecting a lost pub/sub connection.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(250);
/// Time allowed to open the pub/sub connection and subscribe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// At most one WARN per this interval while subscribing keeps failing.
const FAILING_LOG_EVERY: Duration = Duration::from_secs(10);
/// At most one WARN per this interval for malformed announcements.
const MALFORMED_LOG_EVERY: Duration = Duration::from_secs(10);

/// What a worker says when a tile is ready: which tile, who rendered it, how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyNote {
    /// The tile, as `style/z/x/y`.
    pub key: String,
    /// The worker's id.
    pub worker: String,
    /// Render time in milliseconds (0 when the tile was already stored, not rendered now).
    pub render_ms: f64,
    /// Milliseconds from the job's delivery to the worker until its tile was ready to
    /// store: the worker's checks, its wait for a render thread and the render. A waiting
    /// request subtracts it from its own wait to see what the broker and the announcement
    /// took, without comparing two machines' clocks. Absent from older workers' notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_ms: Option<f64>,
    /// The W3C `traceparent` of the worker's span that made the tile, so a request that
    /// waited on another's render can link to it. Absent from older workers' notes (no
    /// link), and ignored by older apis (serde skips unknown fields): a rolling upgrade in
    /// either order loses only links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

type Waiters = Arc<Mutex<HashMap<String, watch::Sender<Option<ReadyNote>>>>>;

/// Dispatches tile-ready announcements to registered waiters. Cheap to clone.
#[derive(Clone)]
pub struct ReadyListener {
    waiters: Waiters,
    connected: watch::Receiver<bool>,
}

impl ReadyListener {
    pub(crate) fn spawn(
        client: redis::Client,
        redacted_url: Arc<str>,
        channel: String,
        stop: CancellationToken,
    ) -> Self {
        let waiters: Waiters = Arc::default();
        let (connected_tx, connected) = watch::channel(false);
        tokio::spawn(listen(
            client,
            redacted_url,
            channel,
            Arc::clone(&waiters),
            connected_tx,
            stop,
        ));
        ReadyListener { waiters, connected }
    }

    /// Whether the subscription is live right now.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Waits until the subscription is live or `timeout` passes; true if live.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.connected.clone();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Resolves once the subscription is down, at once if it is down now (or the listener
    /// has stopped). Waiters select on it: without the subscription they hear of no tile,
    /// so they look in the store at once instead of at their next poll.
    pub async fn disconnected(&self) {
        let mut rx = self.connected.clone();
        // An error means the listener stopped: no announcement comes any more either.
        let _ = rx.wait_for(|connected| !*connected).await;
    }

    /// Registers interest in `key`. Register *before* queueing the render, or the
    /// announcement may come first.
    pub fn register(&self, key: &TileKey) -> ReadyWait {
        let name = key.to_string();
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let rx = waiters
            .entry(name.clone())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        ReadyWait {
            name,
            rx,
            waiters: Arc::clone(&self.waiters),
        }
    }
}

/// One registration: resolves when the tile is announced. Deregisters on drop.
pub struct ReadyWait {
    name: String,
    rx: watch::Receiver<Option<ReadyNote>>,
    waiters: Waiters,
}

impl ReadyWait {
    /// Waits for the announcement (forever: the caller bounds it with its deadline and its
    /// own polling of the store).
    pub async fn announced(&mut self) -> ReadyNote {
        loop {
            if let Some(note) = self.rx.borrow_and_update().clone() {
                return note;
            }
            if self.rx.changed().await.is_err() {
                // The sender went away (cannot happen while registered); wait forever.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for ReadyWait {
    fn drop(&mut self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        // Remove the entry once its last waiter leaves (this one is still counted).
        if waiters
            .get(&self.name)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            waiters.remove(&self.name);
        }
    }
}

async fn listen(
    client: redis::Client,
    url: Arc<str>,
    channel: String,
    waiters: Waiters,
    connected: watch::Sender<bool>,
    stop: CancellationToken,
) {
    // While Redis is down this loop fails every RECONNECT_BACKOFF (4 times a second): WARN
    // at the first failure of a streak and then once per FAILING_LOG_EVERY with the count.
    let mut streak = FailureStreak::default();
    loop {
        let subscribed = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        match subscribed {
            Ok(Ok(pubsub)) => {
                connected.send_replace(true);
                if streak.failures > 0 {
                    tracing::info!(%channel, failures = streak.failures, "tile-ready subscription restored");
                }
                streak = FailureStreak::default();
                tracing::debug!(%channel, "subscribed to tile-ready announcements");
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        message = messages.next() => match message {
                            Some(message) => dispatch(&waiters, message.get_payload_bytes()),
                            None => break,
                        },
                    }
                }
                connected.send_replace(false);
                tracing::warn!(%url, "tile-ready subscription lost; reconnecting");
            }
            Ok(Err(error)) => {
                if let Some(suppressed) = streak.failed() {
                    tracing::warn!(%url, %error, failures = streak.failures, suppressed, retry_in = ?RECONNECT_BACKOFF, "tile-ready subscription failed; retrying");
                }
            }
            Err(_) => {
                if let Some(suppressed) = streak.failed() {
                    tracing::warn!(%url, failures = streak.failures, suppressed, retry_in = ?RECONNECT_BACKOFF, "tile-ready subscription timed out; retrying");
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RECONNECT_BACKOFF) => {}
        }
    }
}

/// Consecutive failures to subscribe, and when one was last logged.
#[derive(Default)]
struct FailureStreak {
    failures: u64,
    last_logged: Option<tokio::time::Instant>,
    suppressed: u64,
}

impl FailureStreak {
    /// Counts a failure; `Some(suppressed since the last line)` when it should be logged.
    fn failed(&mut self) -> Option<u64> {
        self.failures += 1;
        let now = tokio::time::Instant::now();
        match self.last_logged {
            Some(last) if now.saturating_duration_since(last) < FAILING_LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_logged = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

fn dispatch(waiters: &Waiters, payload: &[u8]) {
    let Ok(note) = serde_json::from_slice::<ReadyNote>(payload) else {
        // Anyone who can publish to the channel can send these, as fast as they like.
        static MALFORMED: RateLimitedLog = RateLimitedLog::new(MALFORMED_LOG_EVERY);
        if let Some(suppressed) = MALFORMED.check() {
            tracing::warn!(suppressed, "ignoring a malformed tile-ready announcement");
        }
        return;
    };
    let waiters = waiters.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tx) = waiters.get(&note.key) {
        tx.send_replace(Some(note));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_streak_logs_once_per_interval_and_counts_the_rest() {
        let mut streak = FailureStreak::default();
        assert_eq!(streak.failed(), Some(0), "the first failure is logged");
        for _ in 0..5 {
            assert_eq!(streak.failed(), None);
        }
        // As if the last line were written one interval ago.
        streak.last_logged = tokio::time::Instant::now().checked_sub(FAILING_LOG_EVERY);
        assert!(streak.last_logged.is_some());
        assert_eq!(streak.failed(), Some(5), "the next line carries the count");
        assert_eq!(streak.failed(), None);
        assert_eq!(streak.failures, 8);
    }
}
