//! The open-model driver: requests start on a schedule, whether or not earlier ones have
//! answered. A closed loop (N users, each waiting for its answer) slows down with the server
//! and so hides overload; here arrivals keep coming, and latency is measured from when a
//! request was *due*, not when it was sent, so a stalled generator or server cannot hide
//! time either (no coordinated omission).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::{Semaphore, mpsc};

use crate::scenario::{Picker, Schedule};

/// Longest a request may take before it counts as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What one request came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Seconds since the run started at which the request was due.
    pub due: f64,
    /// From due time to the end of the body.
    pub latency: Duration,
    /// HTTP status, or `None` for a transport error or timeout.
    pub status: Option<u16>,
    /// Where the api served it from: the `detail` of its `Cache-Status` entry (`l1`, `l2`,
    /// `rendered`, `worker`, `coalesced`, `not_modified`).
    pub cache: Option<String>,
}

/// The run's settings.
pub struct Plan {
    pub target: String,
    pub picker: Picker,
    pub schedule: Schedule,
    pub duration: Duration,
    pub max_in_flight: usize,
    pub max_requests: u64,
    pub seed: u64,
}

/// Everything measured.
pub struct Measured {
    pub outcomes: Vec<Outcome>,
    /// Arrivals not sent because `max_in_flight` requests were outstanding.
    pub dropped: u64,
    pub elapsed: Duration,
}

/// Runs the plan and collects every outcome.
pub async fn run(mut plan: Plan) -> anyhow::Result<Measured> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(4))
        .pool_max_idle_per_host(plan.max_in_flight)
        .build(connector);
    let base = plan.target.trim_end_matches('/').to_owned();
    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
    let slots = Arc::new(Semaphore::new(plan.max_in_flight));
    let mut rng = SmallRng::seed_from_u64(plan.seed);
    let duration = plan.duration.as_secs_f64();
    let start = Instant::now();
    let (mut due, mut sent, mut dropped) = (0.0f64, 0u64, 0u64);

    while due < duration && sent < plan.max_requests {
        let when = start + Duration::from_secs_f64(due);
        tokio::time::sleep_until(when.into()).await;
        let arrival = plan.picker.next(&mut rng);
        let tiles = arrival.len();
        for path in arrival {
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                dropped += 1;
                continue;
            };
            sent += 1;
            let (client, tx, uri) = (client.clone(), tx.clone(), format!("{base}{path}"));
            let due_at = due;
            tokio::spawn(async move {
                let status_and_cache =
                    tokio::time::timeout(REQUEST_TIMEOUT, fetch(&client, &uri)).await;
                let (status, cache) = match status_and_cache {
                    Ok(Ok(pair)) => (Some(pair.0), pair.1),
                    _ => (None, None),
                };
                let latency = start
                    .elapsed()
                    .saturating_sub(Duration::from_secs_f64(due_at));
                let _ = tx.send(Outcome {
                    due: due_at,
                    latency,
                    status,
                    cache,
                });
                drop(permit);
            });
        }
        // The next arrival waits for this one's tiles at the scheduled tile rate: a view
        // clipped at the map's edge (shallow zooms) is fewer than 12 tiles, and counting it
        // as 12 would send fewer tiles per second than the rate says.
        let per_arrival = tiles.max(1) as f64;
        match plan.schedule.next_due(due, duration, per_arrival) {
            Some(next) => due = next,
            None => break,
        }
    }
    drop(tx);
    let mut outcomes = Vec::with_capacity(usize::try_from(sent).unwrap_or(0));
    while let Some(outcome) = rx.recv().await {
        outcomes.push(outcome);
    }
    Ok(Measured {
        outcomes,
        dropped,
        elapsed: start.elapsed(),
    })
}

async fn fetch(
    client: &Client<HttpConnector, Empty<Bytes>>,
    uri: &str,
) -> anyhow::Result<(u16, Option<String>)> {
    let response = client.get(uri.parse()?).await?;
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .and_then(served_from)
        .map(str::to_owned);
    // Read the whole body: latency is to the last byte.
    response.into_body().collect().await?;
    Ok((status, cache))
}

/// The `detail` of the api's own entry (`fractile`) of a `Cache-Status` value (RFC 9211:
/// entries separated by commas, parameters by semicolons).
fn served_from(cache_status: &str) -> Option<&str> {
    let ours = cache_status
        .split(',')
        .find(|entry| entry.split(';').next().map(str::trim) == Some("fractile"))?;
    ours.split(';')
        .find_map(|param| param.trim().strip_prefix("detail="))
}

/// A latency histogram in microseconds, up to a minute.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid")
}

/// Outcomes grouped by the second they were due in.
pub fn by_second(outcomes: &[Outcome]) -> BTreeMap<u64, Vec<&Outcome>> {
    let mut seconds: BTreeMap<u64, Vec<&Outcome>> = BTreeMap::new();
    for o in outcomes {
        seconds.entry(o.due as u64).or_default().push(o);
    }
    seconds
}

#[cfg(test)]
mod tests {
    use super::served_from;

    #[test]
    fn the_api_entry_of_cache_status_gives_the_layer_whatever_caches_appended() {
        assert_eq!(served_from("fractile; hit; detail=l1"), Some("l1"));
        assert_eq!(
            served_from("fractile; fwd=miss; stored; detail=worker, nginx; hit"),
            Some("worker")
        );
        assert_eq!(served_from("nginx; hit"), None);
        assert_eq!(served_from("fractile"), None);
    }
}
