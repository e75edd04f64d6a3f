//! The model's report: key moments of each run, `model.json`, `README.md`, and one SVG chart
//! per Deployment (load; desired and ready replicas; each metric against its target).

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use super::hpa::{Policy, PolicyKind, Rules, SYNC_PERIOD_S, Select, Tolerance};
use super::manifests::{Manifests, Metric, Probe, Target};
use super::series::{Series, WorkerRate};
use super::sim::{FluidCheck, METRICS_SERVER_RESOLUTION_S, Run};

/// Everything the report is made from.
pub struct Inputs<'a> {
    pub command: String,
    pub manifests_path: String,
    pub series_path: String,
    pub series: &'a Series,
    pub manifests: &'a Manifests,
    pub api_startup_s: f64,
    pub worker_startup_s: f64,
    pub startup_source: String,
    pub worker_rate: WorkerRate,
    pub tail_s: f64,
    pub api: Run,
    pub worker: Run,
    pub fluid: FluidCheck,
}

/// A change of `replicas` the controller made.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ScaleEvent {
    pub t: f64,
    pub from: u32,
    pub to: u32,
}

/// The moments the README's table shows, for one Deployment.
#[derive(Debug, Clone, Serialize)]
pub struct KeyMoments {
    pub first_scale_up: Option<ScaleEvent>,
    /// Start of the first stretch of at least one sync period in which a metric, read
    /// instantly per ready pod, stayed above its target by more than the tolerance.
    pub overload_onset_t: Option<f64>,
    /// From that onset to the first scale-up decision at or after it.
    pub onset_to_decision_s: Option<f64>,
    /// From that onset to the first moment more pods were ready than at the onset.
    pub onset_to_serving_s: Option<f64>,
    pub peak_desired: u32,
    pub peak_desired_t: f64,
    pub peak_ready: u32,
    pub scale_down_start: Option<ScaleEvent>,
    pub scale_down_end: Option<ScaleEvent>,
    pub scale_events: usize,
    /// Reversals in the sequence of scale events (up after down or down after up): 1 is a
    /// single rise and fall; more is flapping.
    pub direction_changes: usize,
    /// Seconds in which a metric, read instantly per ready pod, was above target + tolerance.
    pub seconds_over_target: f64,
}

impl KeyMoments {
    fn of(run: &Run, tolerance: Tolerance) -> KeyMoments {
        let events: Vec<ScaleEvent> = run
            .syncs
            .iter()
            .filter(|s| s.decision.desired != s.current)
            .map(|s| ScaleEvent {
                t: s.t,
                from: s.current,
                to: s.decision.desired,
            })
            .collect();
        let over = |sec: &super::sim::Second| sec.ratio_now.iter().any(|r| *r > 1.0 + tolerance.up);
        let mut onset = None;
        let mut run_start: Option<usize> = None;
        for (i, sec) in run.seconds.iter().enumerate() {
            if over(sec) {
                let start = *run_start.get_or_insert(i);
                if sec.t - run.seconds[start].t >= SYNC_PERIOD_S {
                    onset = Some(start);
                    break;
                }
            } else {
                run_start = None;
            }
        }
        let onset_t = onset.map(|i| run.seconds[i].t);
        let decision_t = onset_t.and_then(|o| {
            events
                .iter()
                .find(|e| e.t >= o && e.to > e.from)
                .map(|e| e.t)
        });
        let serving_t = onset.and_then(|i| {
            let ready_then = run.seconds[i].ready;
            run.seconds[i..]
                .iter()
                .find(|s| s.ready > ready_then)
                .map(|s| s.t)
        });
        let (peak_desired, peak_desired_t) = run
            .seconds
            .iter()
            .map(|s| (s.desired, s.t))
            .fold((0, 0.0), |best, x| if x.0 > best.0 { x } else { best });
        let downs: Vec<&ScaleEvent> = events.iter().filter(|e| e.to < e.from).collect();
        let direction_changes = events
            .windows(2)
            .filter(|w| (w[0].to > w[0].from) != (w[1].to > w[1].from))
            .count();
        KeyMoments {
            first_scale_up: events.iter().find(|e| e.to > e.from).copied(),
            overload_onset_t: onset_t,
            onset_to_decision_s: onset_t.zip(decision_t).map(|(o, d)| d - o),
            onset_to_serving_s: onset_t.zip(serving_t).map(|(o, s)| s - o),
            peak_desired,
            peak_desired_t,
            peak_ready: run.seconds.iter().map(|s| s.ready).max().unwrap_or(0),
            scale_down_start: downs.first().map(|e| **e),
            scale_down_end: downs.last().map(|e| **e),
            scale_events: events.len(),
            direction_changes,
            seconds_over_target: run.seconds.iter().filter(|s| over(s)).count() as f64,
        }
    }
}

/// model.json: the parameters, the inputs' provenance, and both runs in full.
#[derive(Serialize)]
pub struct Model<'a> {
    command: String,
    manifests_path: String,
    series_path: String,
    series_command: String,
    series_machine: String,
    series_commit: String,
    recorded_topology: Topology,
    parameters: &'a Manifests,
    api_startup_s: f64,
    worker_startup_s: f64,
    startup_source: String,
    worker_rate: WorkerRate,
    tail_s: f64,
    assumptions: Vec<&'static str>,
    api_moments: KeyMoments,
    worker_moments: KeyMoments,
    fluid_check: FluidCheck,
    api: Run,
    worker: Run,
}

#[derive(Serialize)]
struct Topology {
    api_replicas: u32,
    worker_replicas: u32,
    worker_render_threads: u32,
    worker_prefetch: u32,
}

/// What the model takes for granted; the README lists them and model.json carries them.
const ASSUMPTIONS: &[&str] = &[
    "The api fleet's total requests in flight and total CPU at each moment are those recorded (over the recording's fixed replica count) and do not depend on how many replicas share them; the Service spreads them evenly over ready pods. This holds while the api is not the bottleneck: once a replica is at its CPU limit, more replicas would lower latency and with it the in-flight total, so past that point the model overstates in-flight and understates how fast added pods relieve the fleet.",
    "The workers form a fluid queue: the recorded publish rate flows in; each ready worker's render threads each complete jobs at the measured rate while there are jobs; unacked = min(depth, ready workers × prefetch). Workers do not slow each other down (in a cluster each has its own CPU limit), which the recording, on 2 shared cores, cannot confirm beyond its own worker count.",
    "Pods are created the moment the controller decides (no scheduling or image pull delay: the kind scripts load the image into the node) and start their process at once; they become Ready at the startup probe's first run after the measured start-up time, then the readiness probe's next run. Removed pods leave the Service at once.",
    "Every clock (HPA sync, Prometheus scrapes, metrics-server scrapes, RabbitMQ statistics, KEDA polling) ticks at t = 0 and at multiples of its period; in a cluster their phases are arbitrary, which shifts every delay by up to one period of the clock concerned.",
    "The run starts with the ScaledObject's minReplicaCount pods, long Ready, and an HPA that has just been created (its scale-down window holds only the starting count).",
    "Not-yet-ready pods serve nothing: Prometheus scrapes them (they are Running) as 0 in flight; metrics-server's CPU for them is not used (the HPA sets them aside).",
];

impl<'a> Model<'a> {
    pub fn new(inputs: Inputs<'a>) -> Model<'a> {
        let api_moments =
            KeyMoments::of(&inputs.api, Tolerance::of(&inputs.manifests.api.behavior));
        let worker_moments = KeyMoments::of(
            &inputs.worker,
            Tolerance::of(&inputs.manifests.worker.behavior),
        );
        Model {
            command: inputs.command,
            manifests_path: inputs.manifests_path,
            series_path: inputs.series_path,
            series_command: inputs.series.command.clone(),
            series_machine: inputs.series.machine.clone(),
            series_commit: inputs.series.commit.clone(),
            recorded_topology: Topology {
                api_replicas: inputs.series.api_replicas,
                worker_replicas: inputs.series.worker_replicas,
                worker_render_threads: inputs.series.worker_render_threads,
                worker_prefetch: inputs.series.worker_prefetch,
            },
            parameters: inputs.manifests,
            api_startup_s: inputs.api_startup_s,
            worker_startup_s: inputs.worker_startup_s,
            startup_source: inputs.startup_source,
            worker_rate: inputs.worker_rate,
            tail_s: inputs.tail_s,
            assumptions: ASSUMPTIONS.to_vec(),
            api_moments,
            worker_moments,
            fluid_check: inputs.fluid,
            api: inputs.api,
            worker: inputs.worker,
        }
    }

    /// One line for the terminal.
    pub fn summary_line(&self) -> String {
        let m = |k: &KeyMoments| {
            format!(
                "peak {} replicas, {} scale events, {} direction changes, onset→serving {}",
                k.peak_desired,
                k.scale_events,
                k.direction_changes,
                secs(k.onset_to_serving_s)
            )
        };
        format!(
            "api: {}; worker: {}; fluid queue mean abs error {:.1} messages",
            m(&self.api_moments),
            m(&self.worker_moments),
            self.fluid_check.mean_abs_error
        )
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("model.json"), serde_json::to_string_pretty(self)?)?;
        let p = self.parameters;
        chart(
            &dir.join("api.svg"),
            "api: tile requests/s",
            &self.api,
            &p.api,
            None,
        )?;
        chart(
            &dir.join("worker.svg"),
            "worker: jobs published/s",
            &self.worker,
            &p.worker,
            Some(&self.fluid_check),
        )?;
        std::fs::write(dir.join("README.md"), self.readme())?;
        Ok(())
    }

    fn readme(&self) -> String {
        let p = self.parameters;
        let mut md = String::new();
        md.push_str(
            "# The autoscalers, modelled on a recorded load\n\n\
             **A model of the controller, not the controller.** No Kubernetes runs on this \
             machine, so `fractile-autoscaling-model` (`k8s/autoscaling-model/`) replays what the \
             HorizontalPodAutoscaler controller and KEDA would do with the ScaledObjects in \
             `k8s/`, second by second, on metrics recorded from the real processes under a \
             rising and falling load. It follows the documented algorithm (each rule below \
             cites its source; the controller's worked examples are its unit tests) and the \
             documented freshness of each metric. It is not a cluster: no scheduler, no \
             kubelet, no network, no noisy neighbours, and the load is replayed, not reacting \
             to the replicas beyond what the assumptions say. Use it to judge the settings \
             (how soon a new pod serves, whether the count flaps), not as a measurement of a \
             cluster.\n\n",
        );
        let _ = writeln!(
            md,
            "Reproduce:\n\n```sh\nkubectl kustomize k8s/overlays/kind > {}\n{}\n```\n",
            self.manifests_path, self.command
        );
        let _ = writeln!(
            md,
            "Inputs:\n\n\
             - manifests: `{}` (`kubectl kustomize k8s/overlays/kind`);\n\
             - recording: `{}`, made by `{}` on {} at commit `{}`; recorded topology: {} api \
             replicas, {} workers with {} render thread(s) and prefetch {};\n\
             - start-up (exec → first 200 on /readyz): api {:.2} s, worker {:.2} s{};\n\
             - one busy worker drains {:.2} jobs/s ({});\n\
             - after the recording ends, {:.0} s more are simulated holding its last sample.\n",
            self.manifests_path,
            self.series_path,
            self.series_command,
            self.series_machine,
            self.series_commit,
            self.recorded_topology.api_replicas,
            self.recorded_topology.worker_replicas,
            self.recorded_topology.worker_render_threads,
            self.recorded_topology.worker_prefetch,
            self.api_startup_s,
            self.worker_startup_s,
            if self.startup_source.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.startup_source)
            },
            self.worker_rate.jobs_per_s,
            self.worker_rate.source,
            self.tail_s,
        );

        md.push_str("## Key moments\n\n");
        md.push_str(&moments_table(
            &self.api_moments,
            &self.worker_moments,
            (self.api.ready_delay_s, self.worker.ready_delay_s),
        ));
        md.push_str(
            "\n\"Overload\" is a metric read instantly per ready pod (the chart's thin line) \
             above its target by more than the tolerance for at least one sync period (15 s); \
             \"serving\" is the first second with more ready pods than at that onset. A \
             direction change is a scale-up after a scale-down or the reverse: one is a single \
             rise and fall, more is flapping.\n\n",
        );
        md.push_str("![api](api.svg)\n\n![worker](worker.svg)\n\n");
        md.push_str(
            "Each chart: the load; the Deployment's `replicas` (desired) and its ready pods; \
             each metric ÷ its target — the thick line what the HPA read at each sync (cpu: \
             the mean over counted pods; external metrics: the total ÷ (target × pods)), the \
             thin line the same metric read instantly per ready pod — with the tolerance band \
             around 1.\n\n",
        );

        md.push_str("## Checking the fluid queue against the recording\n\n");
        let f = &self.fluid_check;
        let _ = writeln!(
            md,
            "Run with the recording's own {} workers (no autoscaling), the fluid queue gives a \
             depth (ready + unacked, as RabbitMQ's statistics show it) within {:.1} messages \
             of the recorded depth on average (largest difference {:.1}); the recorded peak is \
             {:.0} messages at {:.0} s, the modelled one {:.0} at {:.0} s. The worker \
             chart's bottom panel shows both. The model holds each worker's drain rate \
             constant; where the load comes near the workers' capacity, the depth integrates \
             any difference between that rate and the real, varying one (on the recording \
             machine the workers share 2 cores with the apis and the load generator), so the \
             worker's replica counts are those a queue of the modelled size calls for.\n",
            f.workers,
            f.mean_abs_error,
            f.max_abs_error,
            f.recorded_peak,
            f.recorded_peak_t,
            f.simulated_peak,
            f.simulated_peak_t
        );

        md.push_str("## Parameters read from the manifests\n\n");
        md.push_str(&parameters_table(
            p,
            self.api.ready_delay_s,
            self.worker.ready_delay_s,
        ));

        md.push_str("\n## The rules modelled, and where each is documented\n\n");
        md.push_str(RULES);
        md.push_str("\n## Assumptions\n\n");
        for a in &self.assumptions {
            let _ = writeln!(md, "- {a}");
        }
        md.push_str("\n## What the model does not do\n\n");
        md.push_str(NOT_MODELLED);
        md
    }
}

const RULES: &str = "\
- **The control loop** runs every 15 s, the default `--horizontal-pod-autoscaler-sync-period` \
([HPA docs, \"How does a HorizontalPodAutoscaler work?\"](https://kubernetes.io/docs/concepts/workloads/autoscaling/horizontal-pod-autoscale/)). \
KEDA's `pollingInterval` only drives its own 0 ↔ 1 decision; between 1 and N the HPA asks KEDA's \
metrics server at each sync, which queries the source then ([KEDA, scaledobject-spec, pollingInterval](https://keda.sh/docs/2.18/reference/scaledobject-spec/#pollinginterval); \
with `useCachedMetrics` the value of the last poll instead).
- **One metric → replicas**: `desiredReplicas = ceil(currentReplicas × currentValue / target)`, \
nothing if the ratio is within the tolerance (0.1, or `behavior.*.tolerance`) \
([HPA docs, \"Algorithm details\", \"Tolerance\"](https://kubernetes.io/docs/concepts/workloads/autoscaling/horizontal-pod-autoscale/#algorithm-details)). \
CPU (`AverageValue` in cores, or `Utilization` as a percentage of the request) is the mean over \
pods; pods not yet Ready, or whose CPU sample began before they became Ready within the 5 min CPU \
initialization period, are set aside, and count as 0 if the others call for a scale-up; pods \
metrics-server has no sample for yet count as 0 on a scale-up and as the target on a scale-down; \
the result is dropped if this reverses the direction or lands within the tolerance (same section; \
`calcPlainMetricReplicas` in `pkg/controller/podautoscaler/replica_calculator.go`).
- **External metrics with `AverageValue`** (KEDA's `prometheus` and `rabbitmq` triggers): \
`desired = ceil(total / target)`, the tolerance checked on `total / (target × current pods)` \
(`GetExternalPerPodMetricReplicas`, same file; [KEDA rabbitmq scaler](https://keda.sh/docs/2.18/scalers/rabbitmq-queue/): \
\"If the actual number of messages in the queue is 30, the scaler will scale up to 3 pods\" with a value of 10).
- **Several metrics**: the largest proposal; if a metric is missing and the others propose a \
scale-down, nothing happens ([HPA docs, \"Algorithm details\"](https://kubernetes.io/docs/concepts/workloads/autoscaling/horizontal-pod-autoscale/#algorithm-details)).
- **Stabilization window**: going up, the smallest recommendation of the `scaleUp` window; going \
down, the largest of the `scaleDown` window ([HPA docs, \"Stabilization window\"](https://kubernetes.io/docs/concepts/workloads/autoscaling/horizontal-pod-autoscale/#stabilization-window)).
- **Scaling policies**: each policy allows `Pods` or `Percent` of the replica count at the start \
of its `periodSeconds`, reconstructed from the scale events within the period; `selectPolicy` \
`Max` (default) takes the policy allowing the largest change, `Min` the smallest, `Disabled` none; \
percentages round up going up and the remaining count truncates going down \
([HPA docs, \"Scaling policies\"](https://kubernetes.io/docs/concepts/workloads/autoscaling/horizontal-pod-autoscale/#scaling-policies); \
`convertDesiredReplicasWithBehaviorRate` in `horizontal.go`). Omitted fields take the \
[\"Default behavior\"](https://kubernetes.io/docs/concepts/workloads/autoscaling/horizontal-pod-autoscale/#default-behavior): \
scale-up without a window, max(100 %, 4 pods) per 15 s; scale-down with a 300 s window, 100 % per 15 s.
- **min/max**: KEDA's `minReplicaCount`/`maxReplicaCount` become the HPA's (its minimum at least \
1); activation (`activationValue`, `activationThreshold`) only decides 0 ↔ 1 and only when \
`minReplicaCount` is 0, on KEDA's polling interval, back to 0 after `cooldownPeriod` without \
activity ([KEDA, \"Activating and Scaling thresholds\"](https://keda.sh/docs/2.18/concepts/scaling-deployments/#activating-and-scaling-thresholds), \
[cooldownPeriod](https://keda.sh/docs/2.18/reference/scaledobject-spec/#cooldownperiod)).
- **Freshness of each metric**: Prometheus evaluates `sum(avg_over_time(http_requests_in_flight[W]))` \
over the samples scraped every scrape interval in (t − W, t] (left-open, Prometheus 3), so the \
value trails the load by up to the scrape interval plus the window; a removed pod's last samples \
stay in range for W. RabbitMQ's management API, which the `rabbitmq` scaler reads in HTTP mode, \
refreshes queue figures every `collect_statistics_interval` (5 s by default). metrics-server \
reports the CPU rate between its last two kubelet scrapes, 15 s apart (`--metric-resolution`).
- **Pods**: Ready at the startup probe's first run at or after the measured start-up time, then \
the readiness probe's next run (the kubelet runs readiness only after startup has passed), with \
`successThreshold` runs; on a scale-down the ReplicaSet removes unready pods first, then the most \
recently ready.
";

const NOT_MODELLED: &str = "\
- Scheduling, image pulls, node capacity: every pod fits and starts at once.
- The api's latency reacting to more replicas (see the first assumption), load shedding, and \
the api's own render fallback; the worker's render time varying with the tiles' zoom.
- The HPA's `--horizontal-pod-autoscaler-initial-readiness-delay` (pods flapping between Ready \
and not Ready): pods here become Ready once and stay.
- Errors fetching metrics, KEDA's `fallback`, `scalingModifiers`, `idleReplicaCount`, and other \
trigger types: the model refuses manifests that use a trigger or query shape it does not know.
- Rolling updates, PodDisruptionBudgets, and the terminating pods' `preStop` and \
`terminationGracePeriodSeconds` (read and shown, not simulated: a removed pod leaves the \
Service at once).
";

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |s| format!("{s:.0} s"))
}

fn event(e: Option<ScaleEvent>) -> String {
    e.map_or_else(
        || "–".into(),
        |e| format!("{:.0} s: {} → {}", e.t, e.from, e.to),
    )
}

fn moments_table(api: &KeyMoments, worker: &KeyMoments, delays: (f64, f64)) -> String {
    let mut md = String::from("| | api | worker |\n| --- | --- | --- |\n");
    let mut row = |name: &str, a: String, w: String| {
        let _ = writeln!(md, "| {name} | {a} | {w} |");
    };
    row(
        "first scale-up decision",
        event(api.first_scale_up),
        event(worker.first_scale_up),
    );
    row(
        "sustained overload begins",
        secs(api.overload_onset_t),
        secs(worker.overload_onset_t),
    );
    row(
        "overload → scale-up decision",
        secs(api.onset_to_decision_s),
        secs(worker.onset_to_decision_s),
    );
    row(
        "overload → a new pod serving",
        secs(api.onset_to_serving_s),
        secs(worker.onset_to_serving_s),
    );
    row(
        "pod creation → Ready (start-up + probes)",
        format!("{:.0} s", delays.0),
        format!("{:.0} s", delays.1),
    );
    row(
        "peak replicas (desired / ready)",
        format!(
            "{} at {:.0} s / {}",
            api.peak_desired, api.peak_desired_t, api.peak_ready
        ),
        format!(
            "{} at {:.0} s / {}",
            worker.peak_desired, worker.peak_desired_t, worker.peak_ready
        ),
    );
    row(
        "scale-down starts",
        event(api.scale_down_start),
        event(worker.scale_down_start),
    );
    row(
        "scale-down ends (last decrease)",
        event(api.scale_down_end),
        event(worker.scale_down_end),
    );
    row(
        "scale events",
        api.scale_events.to_string(),
        worker.scale_events.to_string(),
    );
    row(
        "direction changes (flapping if > 1)",
        api.direction_changes.to_string(),
        worker.direction_changes.to_string(),
    );
    row(
        "seconds over target (instant, per ready pod)",
        format!("{:.0}", api.seconds_over_target),
        format!("{:.0}", worker.seconds_over_target),
    );
    md
}

fn metric_text(m: &Metric) -> String {
    match m {
        Metric::Cpu {
            target_cores,
            utilization_percent: Some(p),
        } => format!(
            "cpu Utilization {p:.0} % of the request (= {:.0}m)",
            target_cores * 1000.0
        ),
        Metric::Cpu { target_cores, .. } => {
            format!("cpu AverageValue {:.0}m per pod", target_cores * 1000.0)
        }
        Metric::InFlight {
            query,
            window_s,
            threshold,
            activation_threshold,
            use_cached_metrics,
        } => format!(
            "prometheus `{query}` (window {window_s:.0} s), threshold {threshold} per pod, activation {activation_threshold}{}",
            if *use_cached_metrics { ", cached" } else { "" }
        ),
        Metric::QueueLength {
            queues,
            value,
            activation_value,
            exclude_unacknowledged,
            use_cached_metrics,
        } => format!(
            "rabbitmq QueueLength of `{queues}` ({}), value {value} per pod, activation {activation_value}{}",
            if *exclude_unacknowledged {
                "ready only"
            } else {
                "ready + unacked"
            },
            if *use_cached_metrics { ", cached" } else { "" }
        ),
    }
}

fn rules_text(r: &Rules) -> String {
    let select = match r.select {
        Select::Max => "Max",
        Select::Min => "Min",
        Select::Disabled => "Disabled",
    };
    let policies: Vec<String> = r
        .policies
        .iter()
        .map(|p: &Policy| match p.kind {
            PolicyKind::Pods => format!("{} pods / {:.0} s", p.value, p.period_s),
            PolicyKind::Percent => format!("{} % / {:.0} s", p.value, p.period_s),
        })
        .collect();
    format!(
        "window {:.0} s; {}; select {select}; tolerance {}",
        r.stabilization_window_s,
        policies.join(", "),
        r.tolerance
    )
}

fn probe_text(p: Option<Probe>) -> String {
    p.map_or_else(
        || "none".into(),
        |p| {
            format!(
                "after {:.0} s, every {:.0} s, {} success(es)",
                p.initial_delay_s, p.period_s, p.success_threshold
            )
        },
    )
}

fn parameters_table(m: &Manifests, api_delay: f64, worker_delay: f64) -> String {
    let mut md = String::from("| | api | worker |\n| --- | --- | --- |\n");
    let (a, w) = (&m.api, &m.worker);
    let mut row = |name: &str, f: &dyn Fn(&Target) -> String| {
        let cell = |s: String| s.replace('|', "\\|");
        let _ = writeln!(md, "| {name} | {} | {} |", cell(f(a)), cell(f(w)));
    };
    row("min / max replicas", &|t| {
        format!("{} / {}", t.min_replicas, t.max_replicas)
    });
    row("KEDA pollingInterval / cooldownPeriod", &|t| {
        format!(
            "{:.0} s / {:.0} s",
            t.polling_interval_s, t.cooldown_period_s
        )
    });
    row("triggers", &|t| {
        t.metrics
            .iter()
            .map(metric_text)
            .collect::<Vec<_>>()
            .join("; ")
    });
    row("scaleUp", &|t| rules_text(&t.behavior.scale_up));
    row("scaleDown", &|t| rules_text(&t.behavior.scale_down));
    row("cpu request / limit", &|t| {
        format!(
            "{:.0}m / {}",
            t.pod.cpu_request_cores * 1000.0,
            t.pod
                .cpu_limit_cores
                .map_or_else(|| "none".into(), |l| format!("{:.0}m", l * 1000.0))
        )
    });
    row("startupProbe", &|t| probe_text(t.pod.startup_probe));
    row("readinessProbe", &|t| probe_text(t.pod.readiness_probe));
    row("terminationGracePeriodSeconds", &|t| {
        format!("{:.0} s", t.pod.termination_grace_period_s)
    });
    let _ = writeln!(
        md,
        "| creation → Ready in the model | {api_delay:.0} s | {worker_delay:.0} s |"
    );
    let _ = writeln!(
        md,
        "\nClocks: HPA sync every {SYNC_PERIOD_S:.0} s (controller default); Prometheus scrapes \
         the `fractile-api` job every {:.0} s (prometheus.yml); RabbitMQ statistics every \
         {:.0} s; metrics-server every {METRICS_SERVER_RESOLUTION_S:.0} s.",
        m.api_scrape_interval_s, m.rabbitmq_stats_interval_s
    );
    md
}

/// Three panels sharing the time axis: the load; desired and ready replicas; each metric ÷
/// its target (thick: what the HPA read at its syncs; thin: instant per ready pod). The
/// worker's chart adds the fluid queue check in a fourth panel.
fn chart(
    path: &Path,
    load_label: &str,
    run: &Run,
    target: &Target,
    fluid: Option<&FluidCheck>,
) -> anyhow::Result<()> {
    let panels = if fluid.is_some() { 4 } else { 3 };
    let root = SVGBackend::new(path, (960, 260 * panels)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((panels as usize, 1));
    let t_max = run.seconds.last().map_or(1.0, |s| s.t).max(1.0);
    let tol = Tolerance::of(&target.behavior);

    // Load.
    let load_max = run.seconds.iter().map(|s| s.load).fold(1.0, f64::max) * 1.1;
    let mut c = ChartBuilder::on(&areas[0])
        .caption(format!("{}: load", run.target), ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..load_max)?;
    c.configure_mesh()
        .y_desc(load_label)
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    c.draw_series(LineSeries::new(
        run.seconds.iter().map(|s| (s.t, s.load)),
        BLACK.stroke_width(2),
    ))?;

    // Replicas.
    let r_max = f64::from(target.max_replicas) + 1.0;
    let mut c = ChartBuilder::on(&areas[1])
        .caption(format!("{}: replicas", run.target), ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..r_max)?;
    c.configure_mesh()
        .y_desc("pods")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (label, colour, pick) in [
        (
            "desired (replicas)",
            BLUE,
            (|s: &super::sim::Second| s.desired) as fn(&super::sim::Second) -> u32,
        ),
        ("ready", GREEN, |s: &super::sim::Second| s.ready),
    ] {
        c.draw_series(LineSeries::new(
            run.seconds.iter().map(|s| (s.t, f64::from(pick(s)))),
            colour.stroke_width(2),
        ))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;

    // Metrics ÷ target.
    let ratio_max = run
        .seconds
        .iter()
        .flat_map(|s| s.ratio_now.iter().copied())
        .chain(
            run.syncs
                .iter()
                .flat_map(|s| s.readings.iter().filter_map(|r| r.ratio)),
        )
        .fold(1.5, f64::max)
        .min(10.0)
        * 1.1;
    let mut c = ChartBuilder::on(&areas[2])
        .caption(
            format!("{}: metric ÷ target", run.target),
            ("sans-serif", 16),
        )
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..ratio_max)?;
    c.configure_mesh()
        .y_desc("× target")
        .x_desc("seconds")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for y in [1.0 - tol.down, 1.0, 1.0 + tol.up] {
        let style = if y == 1.0 {
            BLACK.stroke_width(1)
        } else {
            BLACK.mix(0.3).stroke_width(1)
        };
        c.draw_series(LineSeries::new([(0.0, y), (t_max, y)], style))?;
    }
    let colours = [RED, MAGENTA, CYAN];
    for (i, metric) in target.metrics.iter().enumerate() {
        let colour = colours[i % colours.len()];
        c.draw_series(LineSeries::new(
            run.seconds
                .iter()
                .map(|s| (s.t, s.ratio_now[i].min(ratio_max))),
            colour.mix(0.35).stroke_width(1),
        ))?;
        c.draw_series(LineSeries::new(
            run.syncs
                .iter()
                .filter_map(|s| s.readings[i].ratio.map(|r| (s.t, r.min(ratio_max)))),
            colour.stroke_width(2),
        ))?
        .label(format!("{} (HPA reading)", metric.name()))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;

    if let Some(f) = fluid {
        // The same time axis as the panels above.
        let x_max = t_max;
        let y_max = f.points.iter().map(|p| p.1.max(p.2)).fold(1.0, f64::max) * 1.1;
        let mut c = ChartBuilder::on(&areas[3])
            .caption(
                format!(
                    "fluid queue check: {} workers fixed, as recorded",
                    f.workers
                ),
                ("sans-serif", 16),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        c.configure_mesh()
            .y_desc("messages")
            .x_desc("seconds")
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (label, colour, pick) in [
            (
                "recorded depth",
                BLACK,
                (|p: &(f64, f64, f64)| p.1) as fn(&(f64, f64, f64)) -> f64,
            ),
            ("modelled depth", RED, |p: &(f64, f64, f64)| p.2),
        ] {
            c.draw_series(LineSeries::new(
                f.points.iter().map(|p| (p.0, pick(p))),
                colour.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
        }
        c.configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hpa::Decision;
    use crate::sim::{Second, Sync};

    fn sync(t: f64, current: u32, desired: u32) -> Sync {
        Sync {
            t,
            current,
            readings: Vec::new(),
            decision: Decision {
                proposed: Some(desired),
                stabilized: desired,
                desired,
                limited_by: None,
            },
        }
    }

    #[test]
    fn key_moments_time_the_overload_and_count_direction_changes() {
        // Overloaded from 10 s; up at 15 s (2 → 3, ready at 25 s), down at 45 s, up at 60 s.
        let seconds: Vec<Second> = (0..90)
            .map(|t| {
                let t = f64::from(t);
                let desired = if (15.0..45.0).contains(&t) || t >= 60.0 {
                    3
                } else {
                    2
                };
                let ready = if (25.0..45.0).contains(&t) || t >= 70.0 {
                    3
                } else {
                    2
                };
                Second {
                    t,
                    load: 0.0,
                    desired,
                    ready,
                    ratio_now: vec![if t >= 10.0 { 2.0 } else { 0.5 }],
                    queue_depth: None,
                }
            })
            .collect();
        let run = Run {
            target: "api".into(),
            ready_delay_s: 10.0,
            seconds,
            syncs: vec![
                sync(0.0, 2, 2),
                sync(15.0, 2, 3),
                sync(30.0, 3, 3),
                sync(45.0, 3, 2),
                sync(60.0, 2, 3),
                sync(75.0, 3, 3),
            ],
            activations: Vec::new(),
        };
        let k = KeyMoments::of(&run, Tolerance { down: 0.1, up: 0.1 });
        assert_eq!(k.overload_onset_t, Some(10.0));
        assert_eq!(k.onset_to_decision_s, Some(5.0));
        assert_eq!(k.onset_to_serving_s, Some(15.0));
        assert_eq!(k.scale_events, 3);
        assert_eq!(k.direction_changes, 2);
        assert_eq!((k.peak_desired, k.peak_desired_t), (3, 15.0));
        assert_eq!(k.scale_down_start.map(|e| e.t), Some(45.0));
        assert_eq!(k.seconds_over_target, 80.0);
    }
}
