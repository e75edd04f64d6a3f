//! [`PublisherLink`]: a [`Publisher`] that may be absent now and present later.
//!
//! A process that can do useful work without the broker (the api renders misses itself)
//! must not wait for it at start-up, nor die with it. The link connects in a background
//! task with capped exponential backoff and jitter, logging every failed attempt (the URL's
//! password redacted), and hands out the publisher once it is up. Short outages are lapin's:
//! the connection recovers its channel and topology by itself, and meanwhile publishes fail
//! fast. If lapin gives up (an outage longer than its reconnect schedule) or the channel is
//! closed, the link drops that publisher and connects again from scratch.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{Publisher, Topology, redact_url};

/// How often a connected link checks whether its publisher died for good.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Time allowed for one connection attempt (TCP with lapin's own retries, the AMQP
/// handshake, the channel and the topology): longer than lapin's retries take, so an
/// attempt ends with lapin's own error rather than being abandoned mid-way.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(90);

/// Longest wait between two connection attempts.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// Delays between attempts at something the broker must answer: from half a second,
/// doubling, capped at `max`, with jitter so replicas restarted together do not retry in
/// step. Endless: the caller decides when to give up.
pub fn backoff_delays(max: Duration) -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(max)
        .without_max_times()
        .with_jitter()
        .build()
}

/// A publisher connected in the background. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct PublisherLink {
    current: watch::Receiver<Option<Publisher>>,
}

impl PublisherLink {
    /// Starts connecting to `url` in the background; stops (closing the connection) when
    /// `stop` is cancelled. Returns at once.
    pub fn start(url: String, name: String, topology: Topology, stop: CancellationToken) -> Self {
        let (tx, current) = watch::channel(None);
        tokio::spawn(supervise(url, name, topology, tx, stop));
        PublisherLink { current }
    }

    /// The publisher, once connected. It may still be recovering from a blip: its publishes
    /// then fail fast, and [`Publisher::is_connected`] says so.
    pub fn publisher(&self) -> Option<Publisher> {
        self.current.borrow().clone()
    }

    /// Whether a publish could go out right now.
    pub fn is_connected(&self) -> bool {
        self.current
            .borrow()
            .as_ref()
            .is_some_and(Publisher::is_connected)
    }

    /// Waits until connected, at most `limit`; true if it is.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.is_connected() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn supervise(
    url: String,
    name: String,
    topology: Topology,
    tx: watch::Sender<Option<Publisher>>,
    stop: CancellationToken,
) {
    let redacted = redact_url(&url);
    let mut delays = backoff_delays(MAX_RECONNECT_DELAY);
    let mut attempt: u32 = 0;
    loop {
        attempt = attempt.saturating_add(1);
        tracing::info!(url = %redacted, attempt, "connecting to RabbitMQ");
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            connected = Publisher::connect(&url, &name, topology.clone(), ATTEMPT_TIMEOUT) => connected,
        };
        let publisher = match connected {
            Ok(publisher) => publisher,
            Err(error) => {
                let retry_in = delays.next().unwrap_or(MAX_RECONNECT_DELAY);
                tracing::warn!(url = %redacted, attempt, ?retry_in, %error, "connecting to RabbitMQ failed; misses are served without the queue meanwhile");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(retry_in) => continue,
                }
            }
        };
        tracing::info!(url = %redacted, attempt, "connected to RabbitMQ");
        attempt = 0;
        delays = backoff_delays(MAX_RECONNECT_DELAY);
        tx.send_replace(Some(publisher.clone()));
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    tx.send_replace(None);
                    publisher.close(Duration::from_secs(2)).await;
                    return;
                }
                () = tokio::time::sleep(WATCH_EVERY) => {}
            }
            if publisher.is_dead() {
                tracing::warn!(url = %redacted, "the RabbitMQ connection is gone for good; connecting again");
                tx.send_replace(None);
                break;
            }
        }
    }
}
