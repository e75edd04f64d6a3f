//! The simulation: the recorded load replayed against a Deployment whose replica count the
//! modelled HPA (and KEDA) decide, one second at a time.
//!
//! Each second: the load of the recording at that time is spread over the ready pods; the
//! metric pipelines sample it on their own clocks (Prometheus every scrape interval,
//! metrics-server every 15 s, RabbitMQ's statistics every 5 s); every 15 s the HPA reads what
//! those pipelines hold at that moment and decides; new pods become Ready after the measured
//! start-up time and the probes' first successes; removed pods leave the Service at once.
//!
//! The workload model, stated once:
//! - **api**: the fleet's requests in flight and CPU (the recording's totals over its fixed
//!   replica count) do not depend on how many replicas share them, and the Service splits
//!   them evenly over ready pods. True while the api is not the bottleneck (no replica at its
//!   CPU limit): past that, more replicas would lower latency and so the in-flight total.
//! - **worker**: a fluid queue. The recorded publish rate flows in; each ready worker has
//!   `render_threads` slots and each busy slot completes jobs at the measured rate; the
//!   queue's messages are ready + unacked, with unacked = min(depth, ready workers × prefetch).

use serde::Serialize;

use super::hpa::{
    Controller, Decision, PodMetric, SYNC_PERIOD_S, Tolerance, external_average_replicas,
    plain_metric_replicas,
};
use super::manifests::{Metric, Target};
use super::series::Series;

/// metrics-server's `--metric-resolution` default: it scrapes kubelets every 15 s and reports
/// the CPU rate between its last two scrapes.
pub const METRICS_SERVER_RESOLUTION_S: f64 = 15.0;

/// `--horizontal-pod-autoscaler-cpu-initialization-period` default: within it, a pod's CPU
/// sample counts only if its whole window came after the pod became Ready.
pub const CPU_INITIALIZATION_PERIOD_S: f64 = 300.0;

/// The simulation's time step.
const STEP_S: f64 = 1.0;

/// What the simulation needs beyond the manifests and the recording.
#[derive(Debug, Clone, Serialize)]
pub struct Clocks {
    /// Prometheus scrape interval of the api's job.
    pub scrape_interval_s: f64,
    /// RabbitMQ's statistics refresh.
    pub rabbitmq_stats_interval_s: f64,
    /// Seconds from exec to the process answering 200 on /readyz.
    pub startup_s: f64,
    /// Seconds simulated after the recording ends, holding its last sample.
    pub tail_s: f64,
}

/// The worker side of the workload.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Drain {
    /// Jobs per second one busy worker completes (all its render threads together).
    pub jobs_per_worker_s: f64,
    pub render_threads: u32,
    pub prefetch: u32,
}

/// Which side of the system a run models.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum Workload {
    Api,
    Worker(Drain),
}

/// One pod's life.
#[derive(Debug, Clone)]
struct Pod {
    created: f64,
    ready_at: f64,
    removed_at: Option<f64>,
}

impl Pod {
    fn alive(&self, t: f64) -> bool {
        self.created <= t && self.removed_at.is_none_or(|r| t < r)
    }

    fn ready(&self, t: f64) -> bool {
        self.alive(t) && self.ready_at <= t
    }
}

/// One second of the run, for the charts and model.json.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub t: f64,
    /// The recording's arrival rate (api: tile requests/s; worker: jobs published/s).
    pub load: f64,
    /// The Deployment's `replicas`.
    pub desired: u32,
    pub ready: u32,
    /// Per metric: the value per ready pod at this instant ÷ the target (what a perfect,
    /// instantaneous metric would read).
    pub ratio_now: Vec<f64>,
    /// Worker only: messages in the queues (ready + unacked).
    pub queue_depth: Option<f64>,
}

/// What the HPA read for one metric at one sync.
#[derive(Debug, Clone, Serialize)]
pub struct Reading {
    pub metric: &'static str,
    /// The value the HPA compares with the target: the per-pod average for cpu, the total for
    /// the external metrics; `None` when there was none.
    pub value: Option<f64>,
    /// value ÷ (target × the pods it is averaged over): what the tolerance is checked on.
    pub ratio: Option<f64>,
    pub proposal: Option<u32>,
}

/// One run of the controller.
#[derive(Debug, Clone, Serialize)]
pub struct Sync {
    pub t: f64,
    pub current: u32,
    pub readings: Vec<Reading>,
    pub decision: Decision,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub target: String,
    /// Seconds from a pod's creation to Ready.
    pub ready_delay_s: f64,
    pub seconds: Vec<Second>,
    pub syncs: Vec<Sync>,
    /// When KEDA scaled from or to zero (only with minReplicaCount 0).
    pub activations: Vec<(f64, u32)>,
}

/// Per-second history the metric pipelines read back from.
#[derive(Debug, Clone, Copy, Default)]
struct Instant {
    /// Requests in flight on each ready api pod.
    in_flight_per_ready: f64,
    /// CPU cores used by each ready api pod.
    cpu_per_ready: f64,
    /// Messages counted by the queue trigger (ready + unacked, or ready only).
    queue_counted: f64,
}

/// Replays `series` against `target`.
pub fn simulate(
    target: &Target,
    series: &Series,
    workload: Workload,
    clocks: &Clocks,
) -> anyhow::Result<Run> {
    if let Workload::Worker(_) = workload
        && target
            .metrics
            .iter()
            .any(|m| matches!(m, Metric::Cpu { .. }))
    {
        anyhow::bail!(
            "the worker's ScaledObject has a cpu trigger, but the recording has no worker CPU to feed it"
        );
    }
    if let Workload::Api = workload
        && target
            .metrics
            .iter()
            .any(|m| matches!(m, Metric::QueueLength { .. }))
    {
        anyhow::bail!(
            "the api's ScaledObject has a queue trigger: the model feeds queues to the worker only"
        );
    }
    let ready_delay_s = target.pod.ready_after(clocks.startup_s);
    let tolerance = Tolerance::of(&target.behavior);
    // KEDA creates the HPA with minReplicas = max(minReplicaCount, 1): 0 ↔ 1 is KEDA's own.
    let hpa_min = target.min_replicas.max(1);
    let mut hpa = Controller::new(target.behavior.clone(), hpa_min, target.max_replicas);
    let start = series.start();
    let steps = ((series.end() - start + clocks.tail_s) / STEP_S).floor() as usize + 1;

    // The run starts in the steady state of its minimum: pods long ready.
    let mut replicas = target.min_replicas;
    let long_ago = -10.0 * CPU_INITIALIZATION_PERIOD_S;
    let mut pods: Vec<Pod> = (0..replicas)
        .map(|_| Pod {
            created: long_ago,
            ready_at: long_ago,
            removed_at: None,
        })
        .collect();
    let mut history: Vec<Instant> = Vec::with_capacity(steps);
    let mut queue_depth = 0.0_f64;
    let mut rabbit_snapshot = 0.0_f64;
    let mut cached: Vec<Option<f64>> = vec![None; target.metrics.len()];
    let mut last_active = 0.0_f64;
    let mut seconds = Vec::with_capacity(steps);
    let mut syncs = Vec::new();
    let mut activations = Vec::new();

    for step in 0..steps {
        let t = step as f64 * STEP_S;
        let sample = series.at(start + t);
        let ready = pods.iter().filter(|p| p.ready(t)).count() as u32;
        let ready_f = f64::from(ready);
        let per_ready = |total: f64| if ready > 0 { total / ready_f } else { 0.0 };
        let counted = |depth: f64, drain: &Drain, exclude_unacked: bool| {
            let unacked = depth.min(ready_f * f64::from(drain.prefetch));
            if exclude_unacked {
                depth - unacked
            } else {
                depth
            }
        };
        let exclude_unacked = target.metrics.iter().any(|m| {
            matches!(
                m,
                Metric::QueueLength {
                    exclude_unacknowledged: true,
                    ..
                }
            )
        });
        let now = match workload {
            Workload::Api => Instant {
                in_flight_per_ready: per_ready(sample.in_flight_total()),
                cpu_per_ready: per_ready(sample.cpu_total()),
                queue_counted: 0.0,
            },
            Workload::Worker(drain) => Instant {
                queue_counted: counted(queue_depth, &drain, exclude_unacked),
                ..Instant::default()
            },
        };
        history.push(now);
        if on_tick(t, clocks.rabbitmq_stats_interval_s) {
            rabbit_snapshot = now.queue_counted;
        }

        let pipelines = Pipelines {
            history: &history,
            t,
            scrape_interval_s: clocks.scrape_interval_s,
            rabbit_snapshot,
        };

        // KEDA's polling loop: refreshes cached values, and decides 0 ↔ 1 when allowed to.
        if on_tick(t, target.polling_interval_s) {
            let mut active = false;
            for (i, metric) in target.metrics.iter().enumerate() {
                let (value, _) = pipelines.read(metric, &pods);
                cached[i] = value;
                if let (Some(v), Some(activation)) = (value, metric.activation()) {
                    // "Activation only occurs when this value is greater than the set value".
                    active |= v > activation;
                }
            }
            if active {
                last_active = t;
            }
            if target.min_replicas == 0 {
                if replicas == 0 && active {
                    replicas = 1;
                    scale_to(&mut pods, 1, t, ready_delay_s);
                    activations.push((t, 1));
                } else if replicas > 0 && !active && t - last_active >= target.cooldown_period_s {
                    replicas = 0;
                    scale_to(&mut pods, 0, t, ready_delay_s);
                    activations.push((t, 0));
                }
            }
        }

        if on_tick(t, SYNC_PERIOD_S) {
            let status_replicas = pods.iter().filter(|p| p.alive(t)).count() as u32;
            let mut readings = Vec::new();
            let mut proposals = Vec::new();
            for (i, metric) in target.metrics.iter().enumerate() {
                let (fresh, pod_metrics) = pipelines.read(metric, &pods);
                let reading = match metric {
                    Metric::Cpu {
                        target_cores,
                        utilization_percent,
                    } => {
                        // Missing pods on a scale-down count at 100 % of the request (or of
                        // the target when it is above 100 %) for Utilization, at the target
                        // for AverageValue.
                        let missing_fill = match utilization_percent {
                            Some(p) => target.pod.cpu_request_cores * p.max(100.0) / 100.0,
                            None => *target_cores,
                        };
                        let proposal = plain_metric_replicas(
                            replicas,
                            &pod_metrics,
                            *target_cores,
                            missing_fill,
                            tolerance,
                        );
                        let counted: Vec<f64> = pod_metrics
                            .iter()
                            .filter(|p| p.counts)
                            .filter_map(|p| p.value)
                            .collect();
                        let mean = (!counted.is_empty())
                            .then(|| counted.iter().sum::<f64>() / counted.len() as f64);
                        Reading {
                            metric: metric.name(),
                            value: mean,
                            ratio: mean.map(|m| m / target_cores),
                            proposal,
                        }
                    }
                    Metric::InFlight {
                        threshold: target_avg,
                        use_cached_metrics,
                        ..
                    }
                    | Metric::QueueLength {
                        value: target_avg,
                        use_cached_metrics,
                        ..
                    } => {
                        let value = if *use_cached_metrics {
                            cached[i]
                        } else {
                            fresh
                        };
                        let proposal = value.map(|v| {
                            external_average_replicas(status_replicas, v, *target_avg, tolerance)
                        });
                        Reading {
                            metric: metric.name(),
                            value,
                            ratio: value
                                .map(|v| v / (target_avg * f64::from(status_replicas.max(1)))),
                            proposal,
                        }
                    }
                };
                proposals.push(reading.proposal);
                readings.push(reading);
            }
            let decision = hpa.sync(t, replicas, &proposals);
            if decision.desired != replicas {
                scale_to(&mut pods, decision.desired, t, ready_delay_s);
            }
            syncs.push(Sync {
                t,
                current: replicas,
                readings,
                decision: decision.clone(),
            });
            replicas = decision.desired;
        }

        let ready_after = pods.iter().filter(|p| p.ready(t)).count() as u32;
        let load = match workload {
            Workload::Api => sample.arrival_rate,
            Workload::Worker(_) => sample.jobs_published_per_s,
        };
        let ratio_now = target
            .metrics
            .iter()
            .map(|m| match m {
                Metric::Cpu { target_cores, .. } => now.cpu_per_ready / target_cores,
                Metric::InFlight { threshold, .. } => now.in_flight_per_ready / threshold,
                Metric::QueueLength { value, .. } => {
                    now.queue_counted / (value * f64::from(ready.max(1)))
                }
            })
            .collect();
        seconds.push(Second {
            t,
            load,
            desired: replicas,
            ready: ready_after,
            ratio_now,
            queue_depth: matches!(workload, Workload::Worker(_)).then_some(queue_depth),
        });

        if let Workload::Worker(drain) = workload {
            queue_depth = drain_queue(
                queue_depth,
                sample.jobs_published_per_s,
                f64::from(ready_after),
                &drain,
                STEP_S,
            );
        }
    }
    Ok(Run {
        target: target.name.clone(),
        ready_delay_s,
        seconds,
        syncs,
        activations,
    })
}

/// The metric pipelines' state at one instant.
struct Pipelines<'a> {
    history: &'a [Instant],
    t: f64,
    scrape_interval_s: f64,
    /// The queue figure RabbitMQ's statistics last published.
    rabbit_snapshot: f64,
}

impl Pipelines<'_> {
    /// What a metric's pipeline hands out now: the value for an external metric, per-pod
    /// samples for cpu.
    fn read(&self, metric: &Metric, pods: &[Pod]) -> (Option<f64>, Vec<PodMetric>) {
        match metric {
            Metric::Cpu { .. } => (None, cpu_metrics(pods, self.history, self.t)),
            Metric::InFlight { window_s, .. } => (
                Some(milli(in_flight_query(
                    pods,
                    self.history,
                    self.t,
                    *window_s,
                    self.scrape_interval_s,
                ))),
                Vec::new(),
            ),
            // Message counts are whole numbers.
            Metric::QueueLength { .. } => (Some(self.rabbit_snapshot.round()), Vec::new()),
        }
    }
}

/// Whether a clock of period `period` ticks at `t` (all clocks tick at 0).
fn on_tick(t: f64, period: f64) -> bool {
    if period <= 0.0 {
        return true;
    }
    let k = (t / period).round();
    (t - k * period).abs() < 1e-6
}

/// Kubernetes quantities carry milli precision (KEDA hands metrics over as milli-quantities).
fn milli(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Sets the Deployment to `n` pods: new ones are created now; on a scale-down the ReplicaSet
/// removes not-yet-ready pods first, then the most recently ready.
fn scale_to(pods: &mut Vec<Pod>, n: u32, t: f64, ready_delay_s: f64) {
    let alive: Vec<usize> = (0..pods.len()).filter(|&i| pods[i].alive(t)).collect();
    let n = n as usize;
    if alive.len() > n {
        let mut victims = alive;
        // Unready first, then the latest to become ready.
        victims.sort_by(|&a, &b| {
            let key = |p: &Pod| (p.ready(t), std::cmp::Reverse(ordered(p.ready_at)));
            key(&pods[a]).cmp(&key(&pods[b]))
        });
        let excess = victims.len() - n;
        for &i in victims.iter().take(excess) {
            pods[i].removed_at = Some(t);
        }
    } else {
        for _ in alive.len()..n {
            pods.push(Pod {
                created: t,
                ready_at: t + ready_delay_s,
                removed_at: None,
            });
        }
    }
}

/// A total order on finite times.
fn ordered(t: f64) -> i64 {
    (t * 1000.0).round() as i64
}

/// What metrics-server holds for each alive pod at `t`: the CPU rate between its last two
/// scrapes (every 15 s), which needs the container to have run since the one before the last.
/// Inside the CPU initialization period a sample counts only if the pod is Ready and the
/// sample's window began after it became Ready (`groupPods` in the HPA controller).
fn cpu_metrics(pods: &[Pod], history: &[Instant], t: f64) -> Vec<PodMetric> {
    let res = METRICS_SERVER_RESOLUTION_S;
    let scraped = (t / res).floor() * res;
    let window_start = scraped - res;
    pods.iter()
        .filter(|p| p.alive(t))
        .map(|p| {
            if p.created > window_start {
                return PodMetric {
                    value: None,
                    counts: false,
                };
            }
            // Mean over the seconds (window_start, scraped] of this pod's share.
            let mut sum = 0.0;
            let mut n = 0.0;
            let mut u = window_start + STEP_S;
            while u <= scraped + 1e-9 {
                let share = usize::try_from(u as i64)
                    .ok()
                    .and_then(|i| history.get(i))
                    .map_or(0.0, |h| h.cpu_per_ready);
                sum += if p.ready_at <= u { share } else { 0.0 };
                n += 1.0;
                u += STEP_S;
            }
            let value = if n > 0.0 { sum / n } else { 0.0 };
            let in_init_period = p.created + CPU_INITIALIZATION_PERIOD_S > t;
            let counts = p.ready(t) && (!in_init_period || window_start >= p.ready_at);
            PodMetric {
                value: Some(value),
                counts,
            }
        })
        .collect()
}

/// `sum(avg_over_time(http_requests_in_flight[W]))` at `t`: for every pod that has samples in
/// (t − W, t] — removed pods too, whose last samples stay in range — the mean of its samples
/// there, summed. A pod is scraped every interval from its first tick after it starts Running
/// (before Ready, when it serves nothing and reports 0) until it is removed.
fn in_flight_query(
    pods: &[Pod],
    history: &[Instant],
    t: f64,
    window_s: f64,
    scrape_interval_s: f64,
) -> f64 {
    let mut total = 0.0;
    for p in pods {
        let mut sum = 0.0;
        let mut n = 0.0;
        // Scrape ticks in the window, newest first.
        let mut s = (t / scrape_interval_s).floor() * scrape_interval_s;
        while s > t - window_s + 1e-9 {
            if s >= 0.0 && p.created <= s && p.removed_at.is_none_or(|r| s < r) {
                let value = usize::try_from(s.round() as i64)
                    .ok()
                    .and_then(|i| history.get(i))
                    .map_or(0.0, |h| h.in_flight_per_ready);
                sum += if p.ready_at <= s { value } else { 0.0 };
                n += 1.0;
            }
            s -= scrape_interval_s;
        }
        if n > 0.0 {
            total += sum / n;
        }
    }
    total
}

/// Advances the fluid queue by `dt`: jobs arrive at `inflow`; each busy render slot completes
/// `jobs_per_worker_s ÷ render_threads` jobs per second; slots are busy while there are jobs.
/// Small sub-steps keep the explicit integration stable whatever the rates.
pub fn drain_queue(depth: f64, inflow: f64, ready_workers: f64, drain: &Drain, dt: f64) -> f64 {
    let threads = f64::from(drain.render_threads.max(1));
    let per_slot = drain.jobs_per_worker_s / threads;
    let slots = ready_workers * threads;
    let h_max = if per_slot > 0.0 {
        (0.2 / per_slot).min(0.05)
    } else {
        0.05
    };
    let n = (dt / h_max).ceil().max(1.0);
    let h = dt / n;
    let mut d = depth;
    for _ in 0..n as usize {
        let busy = d.min(slots);
        d = (d + (inflow - per_slot * busy) * h).max(0.0);
    }
    d
}

/// How well the fluid queue reproduces the recording when run with the recorded (fixed)
/// worker count.
#[derive(Debug, Clone, Serialize)]
pub struct FluidCheck {
    pub workers: u32,
    pub mean_abs_error: f64,
    pub max_abs_error: f64,
    pub recorded_peak: f64,
    pub recorded_peak_t: f64,
    pub simulated_peak: f64,
    pub simulated_peak_t: f64,
    /// Per sample: (t, recorded depth, simulated depth as RabbitMQ's statistics would show it).
    pub points: Vec<(f64, f64, f64)>,
}

/// Runs the fluid queue with the recording's worker count and compares it with the recorded
/// depth, both as RabbitMQ's statistics show them (refreshed every `stats_interval_s`).
pub fn check_fluid_model(series: &Series, drain: &Drain, stats_interval_s: f64) -> FluidCheck {
    let workers = f64::from(series.worker_replicas);
    let mut depth = series.samples.first().map_or(0.0, |s| s.queue_depth());
    let mut snapshot = depth;
    let mut points = Vec::new();
    let start = series.start();
    let mut t = start;
    let mut sample_index = 0;
    while t <= series.end() + 1e-9 {
        let sample = series.at(t);
        if on_tick(t - start, stats_interval_s) {
            snapshot = depth;
        }
        // One comparison per recorded sample.
        while sample_index < series.samples.len() && series.samples[sample_index].t <= t + 1e-9 {
            let s = &series.samples[sample_index];
            points.push((s.t - start, s.queue_depth(), snapshot));
            sample_index += 1;
        }
        depth = drain_queue(depth, sample.jobs_published_per_s, workers, drain, STEP_S);
        t += STEP_S;
    }
    let errors: Vec<f64> = points.iter().map(|(_, r, s)| (r - s).abs()).collect();
    let peak = |pick: fn(&(f64, f64, f64)) -> f64| {
        points
            .iter()
            .map(|p| (pick(p), p.0))
            .fold((0.0, 0.0), |best, x| if x.0 > best.0 { x } else { best })
    };
    let (recorded_peak, recorded_peak_t) = peak(|p| p.1);
    let (simulated_peak, simulated_peak_t) = peak(|p| p.2);
    FluidCheck {
        workers: series.worker_replicas,
        mean_abs_error: errors.iter().sum::<f64>() / errors.len().max(1) as f64,
        max_abs_error: errors.iter().fold(0.0, |a: f64, &b| a.max(b)),
        recorded_peak,
        recorded_peak_t,
        simulated_peak,
        simulated_peak_t,
        points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::Manifests;
    use crate::series::estimate_worker_rate;

    fn inputs() -> anyhow::Result<(Manifests, Series)> {
        let m = Manifests::parse(include_str!("testdata/manifests.yaml"))?;
        let s: Series = serde_json::from_str(include_str!("testdata/series.json"))?;
        Ok((m, s))
    }

    fn clocks(m: &Manifests) -> Clocks {
        Clocks {
            scrape_interval_s: m.api_scrape_interval_s,
            rabbitmq_stats_interval_s: m.rabbitmq_stats_interval_s,
            startup_s: 1.0,
            tail_s: 300.0,
        }
    }

    /// The drain the recording shows: the estimated rate with its threads and prefetch.
    fn measured_drain(s: &Series) -> anyhow::Result<Drain> {
        Ok(Drain {
            jobs_per_worker_s: estimate_worker_rate(s)?.jobs_per_s,
            render_threads: s.worker_render_threads,
            prefetch: s.worker_prefetch,
        })
    }

    #[test]
    fn a_queue_below_capacity_holds_littles_law_and_above_it_grows_at_the_excess() {
        let drain = Drain {
            jobs_per_worker_s: 4.0,
            render_threads: 1,
            prefetch: 3,
        };
        // 2 jobs/s into 2 workers of 4/s: jobs in service = λ / μ = 0.5.
        let mut d = 0.0;
        for _ in 0..100 {
            d = drain_queue(d, 2.0, 2.0, &drain, 1.0);
        }
        assert!((d - 0.5).abs() < 0.01, "{d}");
        // 10 jobs/s into 8/s of capacity: +2 per second once saturated.
        let before = drain_queue(50.0, 10.0, 2.0, &drain, 1.0);
        assert!((before - 52.0).abs() < 1e-6, "{before}");
    }

    #[test]
    fn the_fluid_model_reproduces_its_own_synthetic_recording() -> anyhow::Result<()> {
        let (m, s) = inputs()?;
        let drain = measured_drain(&s)?;
        let check = check_fluid_model(&s, &drain, m.rabbitmq_stats_interval_s);
        // The fixture was made by a discrete version of the same queue, so the peaks agree to
        // within one statistics interval of growth (2 jobs/s × 5 s).
        assert!(
            (check.recorded_peak - check.simulated_peak).abs() <= 12.0,
            "{} vs {}",
            check.recorded_peak,
            check.simulated_peak
        );
        assert!(check.mean_abs_error < 10.0, "{}", check.mean_abs_error);
        Ok(())
    }

    #[test]
    fn the_api_scales_up_under_the_plateau_and_back_down_within_bounds() -> anyhow::Result<()> {
        let (m, s) = inputs()?;
        let run = simulate(&m.api, &s, Workload::Api, &clocks(&m))?;
        let peak = run.seconds.iter().map(|x| x.desired).max().unwrap_or(0);
        // 400 req/s: 1.2 cores (0.5 each → 3 pods) and 120 in flight (40 each → 3 pods); the
        // in-flight query overshoots by one right after the first scale-up (see
        // `a_sum_of_per_pod_averages_overstates_the_fleet_after_a_scale_up`).
        assert!((3..=4).contains(&peak), "{peak}");
        assert!(
            run.seconds
                .iter()
                .all(|x| (m.api.min_replicas..=m.api.max_replicas).contains(&x.desired))
        );
        // Back at the minimum by the end of the tail.
        assert_eq!(
            run.seconds.last().map(|x| x.desired),
            Some(m.api.min_replicas)
        );
        // No pod is ready before its ready delay.
        let first_up = run
            .syncs
            .iter()
            .find(|x| x.decision.desired > x.current)
            .map(|x| x.t)
            .unwrap_or(f64::INFINITY);
        let first_more_ready = run
            .seconds
            .iter()
            .find(|x| x.ready > m.api.min_replicas)
            .map(|x| x.t)
            .unwrap_or(f64::INFINITY);
        assert!(first_more_ready >= first_up + run.ready_delay_s);
        Ok(())
    }

    /// `sum(avg_over_time(x[W]))` over pods is not the fleet's average over W when the pod
    /// count changed inside W: each old pod's average still holds its larger share from
    /// before, while the new pod's covers only its short life. With a constant fleet total of
    /// 120 going from 2 to 3 ready pods, the query reads more than 120 until W has passed.
    #[test]
    fn a_sum_of_per_pod_averages_overstates_the_fleet_after_a_scale_up() {
        let old = Pod {
            created: -1000.0,
            ready_at: -1000.0,
            removed_at: None,
        };
        let new = Pod {
            created: 60.0,
            ready_at: 60.0,
            removed_at: None,
        };
        let history: Vec<Instant> = (0..200)
            .map(|t| Instant {
                in_flight_per_ready: if t < 60 { 60.0 } else { 40.0 },
                ..Instant::default()
            })
            .collect();
        let pods = [old.clone(), old, new];
        // Before the new pod: exactly the fleet total.
        assert_eq!(
            in_flight_query(&pods[..2], &history, 55.0, 30.0, 5.0),
            120.0
        );
        // 10 s after: old pods average (4 × 60 + 2 × 40) / 6 each, the new one 40.
        let after = in_flight_query(&pods, &history, 65.0, 30.0, 5.0);
        assert!((after - (2.0 * 320.0 / 6.0 + 40.0)).abs() < 1e-9, "{after}");
        assert!(after > 120.0);
        // Once the window holds only samples from after the change: 120 again.
        assert_eq!(in_flight_query(&pods, &history, 95.0, 30.0, 5.0), 120.0);
    }

    #[test]
    fn the_workers_follow_the_backlog() -> anyhow::Result<()> {
        let (m, s) = inputs()?;
        let drain = measured_drain(&s)?;
        let run = simulate(&m.worker, &s, Workload::Worker(drain), &clocks(&m))?;
        let peak = run.seconds.iter().map(|x| x.desired).max().unwrap_or(0);
        // 8 jobs/s need 3 workers of 3/s: the backlog pushes past 1 and the cap is 6.
        assert!((3..=m.worker.max_replicas).contains(&peak), "{peak}");
        assert_eq!(
            run.seconds.last().map(|x| x.desired),
            Some(m.worker.min_replicas)
        );
        Ok(())
    }

    #[test]
    fn a_steady_load_exactly_at_the_target_never_scales() -> anyhow::Result<()> {
        let (m, mut s) = inputs()?;
        // 2 pods × 40 in flight and 2 × 0.5 cores, for the whole recording.
        for sample in &mut s.samples {
            sample.api_in_flight = vec![80.0 / 3.0; 3];
            sample.api_cpu_cores = vec![1.0 / 3.0; 3];
        }
        let run = simulate(&m.api, &s, Workload::Api, &clocks(&m))?;
        assert!(run.seconds.iter().all(|x| x.desired == 2));
        Ok(())
    }

    #[test]
    fn keda_activates_from_zero_above_the_activation_value_and_deactivates_after_cooldown()
    -> anyhow::Result<()> {
        let (mut m, s) = inputs()?;
        m.worker.min_replicas = 0;
        m.worker.cooldown_period_s = 60.0;
        let drain = Drain {
            jobs_per_worker_s: 3.0,
            render_threads: 1,
            prefetch: 3,
        };
        let run = simulate(&m.worker, &s, Workload::Worker(drain), &clocks(&m))?;
        // Starts at 0 with jobs arriving: activated to 1 once the statistics show a message.
        assert_eq!(run.activations.first().map(|a| a.1), Some(1));
        // Every return to 0 comes a full cooldown after the last activation at the earliest.
        for pair in run.activations.windows(2) {
            if pair[1].1 == 0 {
                assert!(
                    pair[1].0 - pair[0].0 >= m.worker.cooldown_period_s,
                    "{pair:?}"
                );
            }
        }
        Ok(())
    }
}
