//! Fault injection on the admin port, for demos and chaos tests: add latency to tile
//! responses, fail a fraction of them, slow renders down by a factor, pause a worker's
//! consumption. Users turn faults on to watch alerts fire and autoscalers react.
//!
//! Off unless the process starts with `FRACTILE_FAULT_INJECTION=true`, which needs
//! `FRACTILE_ADMIN_TOKEN` (`fractile_settings::FaultArgs`); then `/faults` on the admin port (never behind the
//! load balancer) takes a `PUT` of the faults wanted, which replace any active ones and lift
//! by themselves after `duration_s` (default 300 s, at most an hour), so a forgotten fault
//! cannot outlive the demo. `DELETE` lifts them at once. Both want
//! `Authorization: Bearer <FRACTILE_ADMIN_TOKEN>`: whoever reaches an admin port (a scraper, a
//! neighbour pod) could otherwise make every tile of a replica fail for an hour. `GET` is
//! open, like the rest of the admin port. Every active fault is shown in
//! `fault_injection_active{fault}` and in `/readyz`.
//!
//! When nothing is injected the hooks cost one relaxed atomic load each.
//!
//! This module holds the faults and their hooks; [`routes`] is `/faults` over HTTP.

pub mod routes;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fractile_render_pool::Slowdown;
use fractile_settings::Secret;
use prometheus::{IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use utoipa::ToSchema;

/// Default lifetime of injected faults.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(300);
/// Longest lifetime a `PUT` may ask for.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Largest latency that may be added to a tile response.
pub const MAX_LATENCY: Duration = Duration::from_secs(60);
/// Largest render slowdown factor.
pub const MAX_SLOWDOWN: f64 = 100.0;

/// One kind of fault. Each binary supports the ones its work has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Added latency on every tile response (api).
    TileLatency,
    /// A fraction of tile responses fail with 500 (api).
    TileErrors,
    /// Renders take this many times their CPU time (api and worker).
    RenderSlowdown,
    /// The worker stops taking jobs; those it holds wait (worker).
    PauseConsumption,
}

impl Fault {
    /// Every fault, in the order metrics and `/readyz` list them.
    pub const ALL: [Fault; 4] = [
        Fault::TileLatency,
        Fault::TileErrors,
        Fault::RenderSlowdown,
        Fault::PauseConsumption,
    ];

    /// The name in the metric label, the JSON body and `/readyz`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::TileLatency => "tile_latency",
            Fault::TileErrors => "tile_errors",
            Fault::RenderSlowdown => "render_slowdown",
            Fault::PauseConsumption => "pause_consumption",
        }
    }
}

/// The body of `PUT /faults`: the faults wanted; what is left out is off.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"tile_latency_ms": 200, "duration_s": 60}))]
pub struct FaultRequest {
    /// Milliseconds added to every tile response (at most 60000).
    #[serde(default)]
    #[schema(maximum = 60000)]
    pub tile_latency_ms: u64,
    /// Fraction of tile responses answered 500 `fault_injected`, from 0 to 1.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    pub tile_error_ratio: f64,
    /// Factor on every render's CPU time, from 1 to 100.
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 100)]
    pub render_slowdown: f64,
    /// Stop taking jobs from the queue.
    #[serde(default)]
    pub pause_consumption: bool,
    /// Seconds until the faults lift by themselves, from 1 to 3600 (default 300).
    #[serde(default = "default_duration_s")]
    #[schema(minimum = 1, maximum = 3600)]
    pub duration_s: u64,
}

fn one() -> f64 {
    1.0
}

fn default_duration_s() -> u64 {
    DEFAULT_DURATION.as_secs()
}

impl FaultRequest {
    /// The faults this request turns on.
    fn active(&self) -> Vec<Fault> {
        Fault::ALL
            .into_iter()
            .filter(|fault| match fault {
                Fault::TileLatency => self.tile_latency_ms > 0,
                Fault::TileErrors => self.tile_error_ratio > 0.0,
                Fault::RenderSlowdown => self.render_slowdown > 1.0,
                Fault::PauseConsumption => self.pause_consumption,
            })
            .collect()
    }
}

/// Why a `PUT /faults` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// A value is out of its range.
    #[error("{0}")]
    Invalid(String),
    /// This process has no such work to disturb.
    #[error("{0} is not a fault this process supports (it supports: {1})")]
    Unsupported(&'static str, String),
}

/// The injected faults of one process. Cloning shares them.
#[derive(Clone)]
pub struct Faults(Arc<Inner>);

struct Inner {
    /// The token changes want; `None`: fault injection is off.
    token: Option<Secret>,
    supported: &'static [Fault],
    latency_ms: AtomicU64,
    /// Failing fraction of tile responses, in parts per million.
    error_ppm: AtomicU32,
    /// Tile responses seen while errors are injected: failures are spread evenly over them.
    counted: AtomicU64,
    slowdown: Slowdown,
    paused: watch::Sender<bool>,
    /// The request now in force, and when it lifts.
    current: Mutex<Option<(FaultRequest, Instant)>>,
    /// Bumped by every change, so an expiry timer only lifts the faults it was set for.
    generation: AtomicU64,
    active: IntGaugeVec,
}

impl Faults {
    /// Faults for a process that supports `supported`, with `fault_injection_active{fault}`
    /// registered on `registry` (0 for each supported fault). `token` is what `/faults`
    /// wants of a change ([`FaultArgs::injection`]); `None` refuses every change, so nothing
    /// can be injected.
    pub fn new(
        token: Option<Secret>,
        supported: &'static [Fault],
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let active = IntGaugeVec::new(
            Opts::new(
                "fault_injection_active",
                "1 while the fault is injected through the admin port's /faults",
            ),
            &["fault"],
        )?;
        registry.register(Box::new(active.clone()))?;
        for fault in supported {
            active.with_label_values(&[fault.name()]).set(0);
        }
        Ok(Faults(Arc::new(Inner {
            token,
            supported,
            latency_ms: AtomicU64::new(0),
            error_ppm: AtomicU32::new(0),
            counted: AtomicU64::new(0),
            slowdown: Slowdown::default(),
            paused: watch::Sender::new(false),
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
            active,
        })))
    }

    /// The token changes want; `None` while fault injection is off.
    pub(crate) fn token(&self) -> Option<&Secret> {
        self.0.token.as_ref()
    }

    /// Whether `/faults` accepts changes (with the token).
    pub fn enabled(&self) -> bool {
        self.0.token.is_some()
    }

    /// Latency to add to a tile response, if any.
    pub fn tile_latency(&self) -> Option<Duration> {
        match self.0.latency_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Whether this tile response is one of the injected failures. Failures are spread
    /// evenly (a ratio of 0.1 fails every tenth response), so a short test sees the ratio.
    pub fn fail_tile(&self) -> bool {
        let ppm = u64::from(self.0.error_ppm.load(Ordering::Relaxed));
        if ppm == 0 {
            return false;
        }
        let n = self.0.counted.fetch_add(1, Ordering::Relaxed);
        (n + 1) * ppm / 1_000_000 > n * ppm / 1_000_000
    }

    /// The render slowdown, for the render pool.
    pub fn slowdown(&self) -> Slowdown {
        self.0.slowdown.clone()
    }

    /// Whether consumption is paused.
    pub fn is_paused(&self) -> bool {
        *self.0.paused.borrow()
    }

    /// Resolves once consumption is not paused (at once if it is not).
    pub async fn unpaused(&self) {
        let mut paused = self.0.paused.subscribe();
        // The sender lives as long as `self`: the wait cannot fail while we hold it.
        let _ = paused.wait_for(|p| !*p).await;
    }

    /// The names of the faults in force, for `/readyz`.
    pub fn active(&self) -> Vec<&'static str> {
        self.current()
            .map(|(request, _)| request.active().into_iter().map(Fault::name).collect())
            .unwrap_or_default()
    }

    fn current(&self) -> Option<(FaultRequest, Instant)> {
        self.0
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts `request` in force, replacing what was, until its duration passes.
    pub fn apply(&self, request: FaultRequest) -> Result<(), FaultError> {
        self.validate(&request)?;
        let lifts_at = Instant::now() + Duration::from_secs(request.duration_s);
        let generation = self.set(Some((request, lifts_at)));
        let weak: Weak<Inner> = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            tokio::time::sleep_until(lifts_at).await;
            if let Some(inner) = weak.upgrade() {
                let faults = Faults(inner);
                if faults.0.generation.load(Ordering::SeqCst) == generation {
                    tracing::info!("injected faults lifted: their duration passed");
                    faults.set(None);
                }
            }
        });
        Ok(())
    }

    /// Lifts every fault.
    pub fn clear(&self) {
        self.set(None);
    }

    fn validate(&self, r: &FaultRequest) -> Result<(), FaultError> {
        let invalid = |s: String| Err(FaultError::Invalid(s));
        if r.tile_latency_ms > MAX_LATENCY.as_millis() as u64 {
            return invalid(format!(
                "tile_latency_ms must be at most {}",
                MAX_LATENCY.as_millis()
            ));
        }
        if !(0.0..=1.0).contains(&r.tile_error_ratio) {
            return invalid("tile_error_ratio must be between 0 and 1".into());
        }
        if !(1.0..=MAX_SLOWDOWN).contains(&r.render_slowdown) {
            return invalid(format!(
                "render_slowdown must be between 1 and {MAX_SLOWDOWN}"
            ));
        }
        if r.duration_s == 0 || r.duration_s > MAX_DURATION.as_secs() {
            return invalid(format!(
                "duration_s must be between 1 and {}",
                MAX_DURATION.as_secs()
            ));
        }
        if let Some(fault) = r
            .active()
            .into_iter()
            .find(|f| !self.0.supported.contains(f))
        {
            let supported: Vec<&str> = self.0.supported.iter().map(|f| f.name()).collect();
            return Err(FaultError::Unsupported(fault.name(), supported.join(", ")));
        }
        Ok(())
    }

    /// Sets every hook to `current` (or to nothing) and returns the new generation.
    fn set(&self, current: Option<(FaultRequest, Instant)>) -> u64 {
        let inner = &self.0;
        let mut slot = inner
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let off = FaultRequest {
            tile_latency_ms: 0,
            tile_error_ratio: 0.0,
            render_slowdown: 1.0,
            pause_consumption: false,
            duration_s: 0,
        };
        let r = current.as_ref().map_or(&off, |(r, _)| r);
        inner.latency_ms.store(r.tile_latency_ms, Ordering::Relaxed);
        // In range already (0 ..= 1): the cast cannot overflow.
        inner
            .error_ppm
            .store((r.tile_error_ratio * 1_000_000.0) as u32, Ordering::Relaxed);
        inner.counted.store(0, Ordering::Relaxed);
        inner.slowdown.set(r.render_slowdown);
        inner.paused.send_replace(r.pause_consumption);
        let active = r.active();
        for fault in inner.supported {
            let on = i64::from(active.contains(fault));
            inner.active.with_label_values(&[fault.name()]).set(on);
        }
        if !active.is_empty() {
            let names: Vec<&str> = active.iter().map(|f| f.name()).collect();
            tracing::warn!(faults = ?names, duration_s = r.duration_s, "faults injected");
        }
        *slot = current;
        inner.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// What `GET /faults` shows.
    pub(crate) fn view(&self) -> FaultsView {
        match self.current() {
            Some((request, lifts_at)) if !request.active().is_empty() => FaultsView {
                enabled: self.enabled(),
                active: request.active().into_iter().map(Fault::name).collect(),
                lifts_in_s: Some(lifts_at.saturating_duration_since(Instant::now()).as_secs()),
                settings: Some(request),
            },
            _ => FaultsView {
                enabled: self.enabled(),
                active: Vec::new(),
                settings: None,
                lifts_in_s: None,
            },
        }
    }
}

/// What `/faults` answers: whether injection is enabled and the faults in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct FaultsView {
    /// Whether the process started with `FRACTILE_FAULT_INJECTION=true`.
    pub enabled: bool,
    /// Names of the faults in force.
    pub active: Vec<&'static str>,
    /// The request in force, while a fault is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<FaultRequest>,
    /// Seconds until the faults lift by themselves, while a fault is in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifts_in_s: Option<u64>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use fractile_settings::ADMIN_TOKEN_MIN_BYTES;

    use super::*;

    const API: &[Fault] = &[Fault::TileLatency, Fault::TileErrors, Fault::RenderSlowdown];

    const TOKEN: &str = "admin-token-for-tests-0123456789";

    fn token() -> Secret {
        Secret::new(TOKEN, ADMIN_TOKEN_MIN_BYTES).expect("valid token")
    }

    fn faults(enabled: bool) -> (Faults, Registry) {
        let registry = Registry::new();
        (
            Faults::new(enabled.then(token), API, &registry).expect("registers"),
            registry,
        )
    }

    fn request(json: serde_json::Value) -> FaultRequest {
        serde_json::from_value(json).expect("valid request")
    }

    fn gauge(registry: &Registry, fault: &str) -> i64 {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == "fault_injection_active")
            .flat_map(|f| f.get_metric())
            .find(|m| m.get_label().iter().any(|l| l.value() == fault))
            .map_or(-1, |m| m.get_gauge().get_value() as i64)
    }

    #[tokio::test]
    async fn errors_are_spread_evenly_at_the_ratio() {
        let (faults, registry) = faults(true);
        assert!(!faults.fail_tile());
        faults
            .apply(request(json!({ "tile_error_ratio": 0.25 })))
            .expect("valid");
        let failed = (0..100).filter(|_| faults.fail_tile()).count();
        assert_eq!(failed, 25);
        assert_eq!(gauge(&registry, "tile_errors"), 1);
        assert_eq!(gauge(&registry, "tile_latency"), 0);
        assert_eq!(faults.active(), ["tile_errors"]);
        faults.clear();
        assert!(!faults.fail_tile());
        assert_eq!(gauge(&registry, "tile_errors"), 0);
        assert!(faults.active().is_empty());
    }

    #[tokio::test]
    async fn out_of_range_and_unsupported_faults_are_refused() {
        let (faults, _registry) = faults(true);
        for bad in [
            json!({ "tile_error_ratio": 1.5 }),
            json!({ "render_slowdown": 0.5 }),
            json!({ "tile_latency_ms": 120_000 }),
            json!({ "tile_latency_ms": 10, "duration_s": 0 }),
        ] {
            assert!(
                matches!(
                    faults.apply(request(bad.clone())),
                    Err(FaultError::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            faults.apply(request(json!({ "pause_consumption": true }))),
            Err(FaultError::Unsupported("pause_consumption", _))
        ));
        assert!(
            serde_json::from_value::<FaultRequest>(json!({ "tile_latncy_ms": 5 })).is_err(),
            "a misspelt fault is refused, not ignored"
        );
        assert!(faults.tile_latency().is_none(), "nothing was applied");
    }

    #[tokio::test(start_paused = true)]
    async fn faults_lift_when_their_duration_passes() {
        let (faults, registry) = faults(true);
        faults
            .apply(request(json!({ "tile_latency_ms": 200, "duration_s": 5 })))
            .expect("valid");
        assert_eq!(faults.tile_latency(), Some(Duration::from_millis(200)));
        // A later change restarts the clock: the first timer must not lift the second.
        tokio::time::sleep(Duration::from_secs(3)).await;
        faults
            .apply(request(json!({ "tile_latency_ms": 300, "duration_s": 5 })))
            .expect("valid");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(faults.tile_latency(), Some(Duration::from_millis(300)));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(faults.tile_latency(), None);
        assert_eq!(gauge(&registry, "tile_latency"), 0);
    }

    #[tokio::test]
    async fn a_pause_holds_until_lifted() {
        let registry = Registry::new();
        let faults =
            Faults::new(Some(token()), &[Fault::PauseConsumption], &registry).expect("registers");
        faults.unpaused().await;
        faults
            .apply(request(json!({ "pause_consumption": true })))
            .expect("valid");
        assert!(faults.is_paused());
        let waiting = tokio::spawn({
            let faults = faults.clone();
            async move { faults.unpaused().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        faults.clear();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("resumes")
            .expect("no panic");
    }
}
