//! One connection to the broker: its URL checked at start-up, a reachability probe that
//! fails fast, lapin's automatic recovery with its backoff, and the AMQP runtime every
//! connection's I/O runs on (see the crate docs); [`QueueError`], why talking to the broker
//! failed.

use std::sync::OnceLock;
use std::time::Duration;

use backon::ExponentialBuilder;
use lapin::{Connection, ConnectionProperties};

/// The schemes of an AMQP URL the settings take (`amqps://` is refused by [`check_url`]:
/// this build of lapin has no TLS).
pub const AMQP_SCHEMES: &[&str] = &["amqp", "amqps"];

/// Whether lapin takes `url` (its own parser: port, vhost, query parameters), and can
/// connect to it: the settings' check at start-up, so a URL it would refuse stops the
/// process at once instead of failing every connection attempt.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: lapin::uri::AMQPUri = url.parse()?;
    if uri.scheme == lapin::uri::AMQPScheme::AMQPS {
        return Err("amqps:// needs TLS, which this build does not include".into());
    }
    Ok(())
}

/// Why talking to the broker failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker did not answer in time.
    #[error("timed out talking to RabbitMQ ({0})")]
    Timeout(&'static str),
    /// The AMQP layer failed (connection lost, channel closed, recovering...).
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused the message (nack).
    #[error("the broker did not accept the job: {0}")]
    Rejected(&'static str),
    /// The broker had no queue to route the job to and returned it (the queue was deleted):
    /// the topology is being declared again.
    #[error("the job was unroutable and came back; re-declaring the queues")]
    Unroutable,
    /// The broker has blocked publishing (a memory or disk alarm).
    #[error("RabbitMQ blocks publishers (resource alarm)")]
    Blocked,
    /// No connection to the broker yet (or any more).
    #[error("not connected to RabbitMQ")]
    NotConnected,
    /// Nothing accepts a TCP connection at the broker's address (checked before a connect).
    #[error("RabbitMQ is unreachable at {0}")]
    Unreachable(String),
    /// The AMQP runtime could not be started.
    #[error("starting the AMQP runtime: {0}")]
    Runtime(String),
}

/// The runtime every connection's I/O runs on (see the module docs): one worker thread,
/// created on first use, never shut down.
fn amqp_runtime() -> Result<async_rs::TokioRuntime, QueueError> {
    static RUNTIME: OnceLock<Result<async_rs::TokioRuntime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("amqp-io")
                .enable_all()
                .build()
                .map(async_rs::TokioRuntime::tokio_with_runtime)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(QueueError::Runtime)
}

/// lapin's own reconnect schedule, for a connection that was up and dropped (and for the
/// TCP attempts of a first connect): ten attempts from 250 ms, doubling, capped at 4 s,
/// with jitter: 30 to 55 s, enough for a broker restart. Past that the connection reports
/// an error and stays down; longer outages are [`PublisherLink`]'s (or the worker's
/// orchestrator's) business, which start a fresh connection.
fn recovery_backoff() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(4))
        .with_max_times(10)
        .with_jitter()
}

/// How long the reachability check before a connect waits for the TCP handshake.
const REACHABLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Fails at once, naming the address and the cause, when nothing accepts a TCP connection
/// at the broker's address. Without it a first connect to a broker that is down spends
/// `recovery_backoff` (30 to 55 s) in lapin's silent TCP retries before it reports anything;
/// with it each attempt of the caller's own loop fails fast and is logged with its next
/// retry time. The probe connection is closed at once.
async fn check_reachable(url: &str) -> Result<(), QueueError> {
    let uri: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|e: String| QueueError::Unreachable(format!("invalid AMQP URL: {e}")))?;
    let (host, port) = (uri.authority.host.as_str(), uri.authority.port);
    match tokio::time::timeout(
        REACHABLE_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    {
        Ok(Ok(_probe)) => Ok(()),
        Ok(Err(e)) => Err(QueueError::Unreachable(format!("{host}:{port}: {e}"))),
        Err(_) => Err(QueueError::Unreachable(format!(
            "{host}:{port}: no TCP answer within {REACHABLE_TIMEOUT:?}"
        ))),
    }
}

/// Opens a connection with automatic recovery (the connection, its channels, their
/// consumers and the declared topology come back after a broker restart or a network
/// blip, for as long as `recovery_backoff` allows). `name` shows in the management UI.
/// A broker nobody answers for fails at once ([`QueueError::Unreachable`]).
pub async fn connect(url: &str, name: &str, timeout: Duration) -> Result<Connection, QueueError> {
    check_reachable(url).await?;
    let properties = ConnectionProperties::default()
        .with_connection_name(name.into())
        .with_backoff(recovery_backoff())
        .enable_auto_recover();
    let runtime = amqp_runtime()?;
    tokio::time::timeout(
        timeout,
        Connection::connect_with_runtime(url, properties, runtime),
    )
    .await
    .map_err(|_| QueueError::Timeout("connect"))?
    .map_err(QueueError::from)
}
