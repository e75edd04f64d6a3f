//! The model's parameters, read from the rendered manifests (`kubectl kustomize
//! k8s/overlays/kind`): the KEDA ScaledObjects `api` and `worker`, their Deployments, and
//! Prometheus's `prometheus.yml`.
//!
//! Nothing here has a fallback figure of its own: a value the manifests omit takes the default
//! the Kubernetes or KEDA documentation states for it (cited where it is applied), and a shape
//! the model does not understand (an unknown trigger, a PromQL query other than the one form
//! below) is an error, so the model never silently simulates something other than what is
//! deployed.

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_norway::Value;

use super::hpa::{Behavior, Policy, PolicyKind, Select};

/// The metric the api's Prometheus trigger must query.
pub const IN_FLIGHT_METRIC: &str = "http_requests_in_flight";

/// The Prometheus job whose scrape interval the in-flight query depends on.
pub const API_JOB: &str = "fractile-api";

/// Everything the model takes from the manifests.
#[derive(Debug, Clone, Serialize)]
pub struct Manifests {
    pub api: Target,
    pub worker: Target,
    /// Scrape interval of the `fractile-api` job (its own, else the global one).
    pub api_scrape_interval_s: f64,
    /// How often RabbitMQ refreshes the queue figures its management API (and so KEDA's
    /// scaler) reports: `collect_statistics_interval` from a rabbitmq.conf in a ConfigMap,
    /// else its default of 5000 ms.
    pub rabbitmq_stats_interval_s: f64,
}

/// RabbitMQ's default `collect_statistics_interval`, in seconds.
pub const RABBITMQ_DEFAULT_STATS_INTERVAL_S: f64 = 5.0;

/// One autoscaled Deployment: its ScaledObject and the parts of its pod template that matter.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    /// `minReplicaCount` (KEDA default 0).
    pub min_replicas: u32,
    /// `maxReplicaCount` (KEDA default 100).
    pub max_replicas: u32,
    /// `pollingInterval` (KEDA default 30 s): KEDA's own loop, which only decides 0 ↔ 1.
    pub polling_interval_s: f64,
    /// `cooldownPeriod` (KEDA default 300 s): before scaling back to 0.
    pub cooldown_period_s: f64,
    pub behavior: Behavior,
    pub metrics: Vec<Metric>,
    pub pod: Pod,
}

/// One KEDA trigger, as the HPA sees it.
#[derive(Debug, Clone, Serialize)]
pub enum Metric {
    /// `cpu` trigger: a Resource metric from metrics-server, averaged over pods.
    Cpu {
        /// The target per pod in cores (for `Utilization`, the percentage × the request).
        target_cores: f64,
        /// `Utilization` percentage, if that was the metric type.
        utilization_percent: Option<f64>,
    },
    /// `prometheus` trigger with `sum(avg_over_time(http_requests_in_flight{..}[W]))`: an
    /// External metric with an `AverageValue` target.
    InFlight {
        query: String,
        window_s: f64,
        threshold: f64,
        activation_threshold: f64,
        use_cached_metrics: bool,
    },
    /// `rabbitmq` trigger in `QueueLength` mode: an External metric with an `AverageValue`
    /// target, the messages of the matched queues summed.
    QueueLength {
        queues: String,
        value: f64,
        activation_value: f64,
        exclude_unacknowledged: bool,
        use_cached_metrics: bool,
    },
}

impl Metric {
    pub fn name(&self) -> &'static str {
        match self {
            Metric::Cpu { .. } => "cpu",
            Metric::InFlight { .. } => "in-flight",
            Metric::QueueLength { .. } => "queue length",
        }
    }

    /// The activation threshold, for the triggers KEDA's 0 ↔ 1 decision reads (cpu triggers
    /// do not take part in activation).
    pub fn activation(&self) -> Option<f64> {
        match self {
            Metric::Cpu { .. } => None,
            Metric::InFlight {
                activation_threshold,
                ..
            } => Some(*activation_threshold),
            Metric::QueueLength {
                activation_value, ..
            } => Some(*activation_value),
        }
    }
}

/// The parts of a pod template the model uses.
#[derive(Debug, Clone, Serialize)]
pub struct Pod {
    pub cpu_request_cores: f64,
    pub cpu_limit_cores: Option<f64>,
    pub startup_probe: Option<Probe>,
    pub readiness_probe: Option<Probe>,
    pub termination_grace_period_s: f64,
}

/// A probe's timing (defaults from the Pod API: initialDelaySeconds 0, periodSeconds 10,
/// successThreshold 1, failureThreshold 3).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Probe {
    pub initial_delay_s: f64,
    pub period_s: f64,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Probe {
    /// The first probe at or after `t` (probes run at `initialDelay + k × period` after the
    /// container starts), plus the further periods `successThreshold` asks for.
    fn first_success_at_or_after(&self, t: f64) -> f64 {
        let k = ((t - self.initial_delay_s) / self.period_s).ceil().max(0.0);
        self.initial_delay_s + (k + f64::from(self.success_threshold) - 1.0) * self.period_s
    }
}

impl Pod {
    /// Seconds from a pod's creation to Ready, given the process's measured start-up time
    /// (exec to its first 200 on /readyz): the startup probe passes at its first run after
    /// that, and the readiness probe (which the kubelet does not run before the startup probe
    /// has passed) at its first run after that.
    pub fn ready_after(&self, startup_s: f64) -> f64 {
        let live = self
            .startup_probe
            .map_or(startup_s, |p| p.first_success_at_or_after(startup_s));
        self.readiness_probe
            .map_or(live, |p| p.first_success_at_or_after(live))
    }
}

impl Manifests {
    /// Reads the multi-document YAML `kubectl kustomize` prints.
    pub fn parse(text: &str) -> Result<Manifests> {
        let mut docs = Vec::new();
        for document in serde_norway::Deserializer::from_str(text) {
            let value = Value::deserialize(document).context("a manifest is not valid YAML")?;
            if !value.is_null() {
                docs.push(value);
            }
        }
        let find = |kind: &str, name: &str| -> Result<&Value> {
            docs.iter()
                .find(|d| {
                    str_at(d, &["kind"]) == Some(kind)
                        && str_at(d, &["metadata", "name"]) == Some(name)
                })
                .ok_or_else(|| anyhow!("the manifests have no {kind} named {name}"))
        };
        let target = |name: &str| -> Result<Target> {
            let scaled = find("ScaledObject", name)?;
            let deployment = find("Deployment", name)?;
            read_target(name, scaled, deployment)
                .with_context(|| format!("ScaledObject/Deployment {name}"))
        };
        let api = target("api")?;
        let worker = target("worker")?;
        // The prometheus.yml Prometheus reads: in a ConfigMap its Deployment mounts (another
        // ConfigMap may use the same key, as Grafana's datasources do).
        let mounted: Vec<&str> = at(
            find("Deployment", "prometheus")?,
            &["spec", "template", "spec", "volumes"],
        )
        .and_then(Value::as_sequence)
        .map(|volumes| {
            volumes
                .iter()
                .filter_map(|v| str_at(v, &["configMap", "name"]))
                .collect()
        })
        .unwrap_or_default();
        let prometheus_yml = docs
            .iter()
            .filter(|d| str_at(d, &["kind"]) == Some("ConfigMap"))
            .filter(|d| str_at(d, &["metadata", "name"]).is_some_and(|n| mounted.contains(&n)))
            .find_map(|d| str_at(d, &["data", "prometheus.yml"]))
            .ok_or_else(|| {
                anyhow!("no ConfigMap mounted by the Deployment prometheus holds a prometheus.yml")
            })?;
        let api_scrape_interval_s = scrape_interval(prometheus_yml, API_JOB)?;
        let mut rabbitmq_stats_interval_s = RABBITMQ_DEFAULT_STATS_INTERVAL_S;
        for conf in docs
            .iter()
            .filter(|d| str_at(d, &["kind"]) == Some("ConfigMap"))
            .filter_map(|d| str_at(d, &["data", "rabbitmq.conf"]))
        {
            for line in conf.lines() {
                if let Some((key, value)) = line.split_once('=')
                    && key.trim() == "collect_statistics_interval"
                {
                    let ms: f64 = value.trim().parse().with_context(|| {
                        format!("collect_statistics_interval {value:?} is not milliseconds")
                    })?;
                    rabbitmq_stats_interval_s = ms / 1000.0;
                }
            }
        }
        Ok(Manifests {
            api,
            worker,
            api_scrape_interval_s,
            rabbitmq_stats_interval_s,
        })
    }
}

fn read_target(name: &str, scaled: &Value, deployment: &Value) -> Result<Target> {
    let spec = at(scaled, &["spec"]).ok_or_else(|| anyhow!("no spec"))?;
    if let Some(target) = str_at(spec, &["scaleTargetRef", "name"])
        && target != name
    {
        bail!("scaleTargetRef is {target}, not the Deployment {name}");
    }
    // Defaults: keda-docs reference/scaledobject-spec.md.
    let min_replicas = u32_at(spec, &["minReplicaCount"])?.unwrap_or(0);
    let max_replicas = u32_at(spec, &["maxReplicaCount"])?.unwrap_or(100);
    if max_replicas == 0 || min_replicas > max_replicas {
        bail!("minReplicaCount {min_replicas} / maxReplicaCount {max_replicas} is not a range");
    }
    let polling_interval_s = f64_at(spec, &["pollingInterval"])?.unwrap_or(30.0);
    let cooldown_period_s = f64_at(spec, &["cooldownPeriod"])?.unwrap_or(300.0);
    let behavior = match at(
        spec,
        &["advanced", "horizontalPodAutoscalerConfig", "behavior"],
    ) {
        Some(b) => read_behavior(b)?,
        None => Behavior::default(),
    };
    let pod = read_pod(deployment, name)?;
    let triggers = at(spec, &["triggers"])
        .and_then(Value::as_sequence)
        .ok_or_else(|| anyhow!("no triggers"))?;
    let mut metrics = Vec::new();
    for trigger in triggers {
        metrics.push(read_trigger(trigger, &pod)?);
    }
    Ok(Target {
        name: name.to_owned(),
        min_replicas,
        max_replicas,
        polling_interval_s,
        cooldown_period_s,
        behavior,
        metrics,
        pod,
    })
}

/// `behavior` merged over the defaults of "Default behavior" (Kubernetes HPA docs): omitted
/// fields keep the default, as the API server's defaulting does.
fn read_behavior(b: &Value) -> Result<Behavior> {
    let mut behavior = Behavior::default();
    for (key, rules) in [
        ("scaleUp", &mut behavior.scale_up),
        ("scaleDown", &mut behavior.scale_down),
    ] {
        let Some(r) = at(b, &[key]) else { continue };
        if let Some(w) = f64_at(r, &["stabilizationWindowSeconds"])? {
            rules.stabilization_window_s = w;
        }
        if let Some(s) = str_at(r, &["selectPolicy"]) {
            rules.select = match s {
                "Max" => Select::Max,
                "Min" => Select::Min,
                "Disabled" => Select::Disabled,
                other => bail!("{key}.selectPolicy {other} is not Max, Min or Disabled"),
            };
        }
        if let Some(t) = f64_at(r, &["tolerance"])? {
            rules.tolerance = t;
        }
        if let Some(policies) = at(r, &["policies"]).and_then(Value::as_sequence) {
            rules.policies = policies
                .iter()
                .map(|p| read_policy(p).with_context(|| format!("{key} policy")))
                .collect::<Result<_>>()?;
        }
    }
    Ok(behavior)
}

fn read_policy(p: &Value) -> Result<Policy> {
    let kind = match str_at(p, &["type"]) {
        Some("Pods") => PolicyKind::Pods,
        Some("Percent") => PolicyKind::Percent,
        other => bail!("policy type {other:?} is not Pods or Percent"),
    };
    let value = u32_at(p, &["value"])?.ok_or_else(|| anyhow!("policy without value"))?;
    let period_s = f64_at(p, &["periodSeconds"])?.ok_or_else(|| anyhow!("no periodSeconds"))?;
    if period_s <= 0.0 || period_s > 1800.0 {
        bail!("periodSeconds {period_s} is outside (0, 1800]");
    }
    Ok(Policy {
        kind,
        value,
        period_s,
    })
}

fn read_trigger(trigger: &Value, pod: &Pod) -> Result<Metric> {
    let kind = str_at(trigger, &["type"]).ok_or_else(|| anyhow!("trigger without type"))?;
    let meta =
        at(trigger, &["metadata"]).ok_or_else(|| anyhow!("{kind} trigger without metadata"))?;
    let metric_type = str_at(trigger, &["metricType"]);
    let use_cached_metrics = bool_at(trigger, &["useCachedMetrics"])?.unwrap_or(false);
    match kind {
        "cpu" => {
            let value = str_or_number(meta, "value")?
                .ok_or_else(|| anyhow!("cpu trigger without value"))?;
            match metric_type {
                Some("AverageValue") => Ok(Metric::Cpu {
                    target_cores: parse_cpu(&value)?,
                    utilization_percent: None,
                }),
                Some("Utilization") => {
                    let percent: f64 = value
                        .parse()
                        .with_context(|| format!("cpu Utilization value {value}"))?;
                    Ok(Metric::Cpu {
                        target_cores: pod.cpu_request_cores * percent / 100.0,
                        utilization_percent: Some(percent),
                    })
                }
                other => bail!(
                    "cpu trigger metricType {other:?}: the model knows AverageValue and Utilization"
                ),
            }
        }
        "prometheus" => {
            // KEDA's scaledobject-spec: a trigger's metricType defaults to AverageValue.
            if !matches!(metric_type, None | Some("AverageValue")) {
                bail!(
                    "prometheus trigger metricType {metric_type:?}: the model knows AverageValue"
                );
            }
            let query = str_at(meta, &["query"])
                .ok_or_else(|| anyhow!("prometheus trigger without query"))?;
            let window_s = in_flight_window(query)?;
            let threshold = number(meta, "threshold")?
                .ok_or_else(|| anyhow!("prometheus trigger without threshold"))?;
            Ok(Metric::InFlight {
                query: query.to_owned(),
                window_s,
                threshold,
                activation_threshold: number(meta, "activationThreshold")?.unwrap_or(0.0),
                use_cached_metrics,
            })
        }
        "rabbitmq" => {
            if !matches!(metric_type, None | Some("AverageValue")) {
                bail!("rabbitmq trigger metricType {metric_type:?}: the model knows AverageValue");
            }
            let mode = str_at(meta, &["mode"]);
            let value = match (mode, number(meta, "value")?, number(meta, "queueLength")?) {
                (Some("QueueLength"), Some(v), _) => v,
                // The deprecated form; keda-docs: "Default is set to `20`".
                (None, None, q) => q.unwrap_or(20.0),
                (mode, value, _) => bail!(
                    "rabbitmq trigger mode {mode:?} with value {value:?}: the model knows QueueLength with a value"
                ),
            };
            if bool_at(meta, &["excludeUnacknowledged"])?.unwrap_or(false)
                && str_at(meta, &["protocol"]) == Some("amqp")
            {
                bail!("excludeUnacknowledged only applies to the http protocol");
            }
            Ok(Metric::QueueLength {
                queues: str_at(meta, &["queueName"]).unwrap_or_default().to_owned(),
                value,
                activation_value: number(meta, "activationValue")?.unwrap_or(0.0),
                // Over AMQP the scaler sees only ready messages; over HTTP ready + unacked
                // unless excludeUnacknowledged.
                exclude_unacknowledged: bool_at(meta, &["excludeUnacknowledged"])?.unwrap_or(false)
                    || str_at(meta, &["protocol"]) == Some("amqp"),
                use_cached_metrics,
            })
        }
        other => bail!("trigger type {other}: the model knows cpu, prometheus and rabbitmq"),
    }
}

/// Checks that the query is `sum(avg_over_time(http_requests_in_flight{…}[W]))` (optionally
/// `sum by () (…)`-free, whitespace anywhere) with a `job` selector for the api's job, and
/// returns W in seconds. The model evaluates exactly this shape; anything else is refused.
pub fn in_flight_window(query: &str) -> Result<f64> {
    let q: String = query.chars().filter(|c| !c.is_whitespace()).collect();
    let shape = || {
        anyhow!(
            "the Prometheus query {query:?} is not of the form the model evaluates: \
             sum(avg_over_time({IN_FLIGHT_METRIC}{{job=\"{API_JOB}\"}}[<window>]))"
        )
    };
    let inner = q
        .strip_prefix("sum(avg_over_time(")
        .and_then(|r| r.strip_suffix("))"))
        .ok_or_else(shape)?;
    let selector = inner.strip_prefix(IN_FLIGHT_METRIC).ok_or_else(shape)?;
    let (labels, range) = match selector.strip_prefix('{') {
        Some(rest) => rest.split_once('}').ok_or_else(shape)?,
        None => ("", selector),
    };
    if !labels.split(',').any(|l| l == format!("job=\"{API_JOB}\"")) {
        bail!(
            "the Prometheus query {query:?} does not select job=\"{API_JOB}\": the model only knows that job's pods"
        );
    }
    let window = range
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(shape)?;
    parse_prometheus_duration(window)
}

/// The scrape interval of `job` in a prometheus.yml: the job's own, else the global one, else
/// Prometheus's default of 1m.
pub fn scrape_interval(prometheus_yml: &str, job: &str) -> Result<f64> {
    let config: Value =
        serde_norway::from_str(prometheus_yml).context("prometheus.yml is not valid YAML")?;
    let jobs = at(&config, &["scrape_configs"])
        .and_then(Value::as_sequence)
        .ok_or_else(|| anyhow!("prometheus.yml has no scrape_configs"))?;
    let job_config = jobs
        .iter()
        .find(|j| str_at(j, &["job_name"]) == Some(job))
        .ok_or_else(|| anyhow!("prometheus.yml has no job {job}"))?;
    let interval = str_at(job_config, &["scrape_interval"])
        .or_else(|| str_at(&config, &["global", "scrape_interval"]))
        .unwrap_or("1m");
    parse_prometheus_duration(interval)
}

fn read_pod(deployment: &Value, name: &str) -> Result<Pod> {
    let pod_spec = at(deployment, &["spec", "template", "spec"])
        .ok_or_else(|| anyhow!("Deployment {name} has no pod template"))?;
    let containers = at(pod_spec, &["containers"])
        .and_then(Value::as_sequence)
        .ok_or_else(|| anyhow!("Deployment {name} has no containers"))?;
    let container = containers
        .iter()
        .find(|c| str_at(c, &["name"]) == Some(name))
        .or_else(|| containers.first())
        .ok_or_else(|| anyhow!("Deployment {name} has no containers"))?;
    let cpu_request_cores = match str_or_number(container, "resources.requests.cpu")? {
        Some(q) => parse_cpu(&q)?,
        None => {
            bail!("container {name} has no cpu request: CPU utilization is undefined without one")
        }
    };
    let cpu_limit_cores = str_or_number(container, "resources.limits.cpu")?
        .map(|q| parse_cpu(&q))
        .transpose()?;
    Ok(Pod {
        cpu_request_cores,
        cpu_limit_cores,
        startup_probe: read_probe(at(container, &["startupProbe"]))?,
        readiness_probe: read_probe(at(container, &["readinessProbe"]))?,
        // The Pod API default is 30 s.
        termination_grace_period_s: f64_at(pod_spec, &["terminationGracePeriodSeconds"])?
            .unwrap_or(30.0),
    })
}

fn read_probe(p: Option<&Value>) -> Result<Option<Probe>> {
    let Some(p) = p else { return Ok(None) };
    let probe = Probe {
        initial_delay_s: f64_at(p, &["initialDelaySeconds"])?.unwrap_or(0.0),
        period_s: f64_at(p, &["periodSeconds"])?.unwrap_or(10.0),
        success_threshold: u32_at(p, &["successThreshold"])?.unwrap_or(1),
        failure_threshold: u32_at(p, &["failureThreshold"])?.unwrap_or(3),
    };
    if probe.period_s <= 0.0 || probe.success_threshold == 0 {
        bail!(
            "a probe with periodSeconds {} and successThreshold {}",
            probe.period_s,
            probe.success_threshold
        );
    }
    Ok(Some(probe))
}

/// A CPU quantity: `250m`, `1`, `0.5`.
pub fn parse_cpu(q: &str) -> Result<f64> {
    let q = q.trim();
    let cores = match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().map(|m| m / 1000.0),
        None => q.parse::<f64>(),
    }
    .with_context(|| format!("{q:?} is not a CPU quantity"))?;
    if !(cores.is_finite() && cores > 0.0) {
        bail!("CPU quantity {q:?} is not positive");
    }
    Ok(cores)
}

/// A Prometheus duration: `30s`, `1m`, `1m30s`, `500ms`.
pub fn parse_prometheus_duration(d: &str) -> Result<f64> {
    let mut total = 0.0;
    let mut rest = d.trim();
    if rest.is_empty() {
        bail!("an empty duration");
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            bail!("{d:?} is not a Prometheus duration");
        }
        let n: f64 = rest[..digits].parse()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            "y" => 31_536_000.0,
            unit => bail!("{d:?}: unknown unit {unit:?}"),
        };
        total += n * seconds;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(*key))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

fn f64_at(v: &Value, path: &[&str]) -> Result<Option<f64>> {
    match at(v, path) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| anyhow!("{} is not a number: {x:?}", path.join("."))),
    }
}

fn u32_at(v: &Value, path: &[&str]) -> Result<Option<u32>> {
    match at(v, path) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| anyhow!("{} is not a count: {x:?}", path.join("."))),
    }
}

/// KEDA's metadata values are strings (`"true"`), occasionally YAML booleans.
fn bool_at(v: &Value, path: &[&str]) -> Result<Option<bool>> {
    match at(v, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(x) => bail!("{} is not a boolean: {x:?}", path.join(".")),
    }
}

/// A dotted path's value as text, whether YAML wrote it as a string or a number.
fn str_or_number(v: &Value, dotted: &str) -> Result<Option<String>> {
    let path: Vec<&str> = dotted.split('.').collect();
    match at(v, &path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(x) => bail!("{dotted} is neither text nor a number: {x:?}"),
    }
}

/// A metadata number (KEDA writes them as strings: `threshold: "64"`).
fn number(meta: &Value, key: &str) -> Result<Option<f64>> {
    str_or_number(meta, key)?
        .map(|s| {
            s.trim()
                .parse::<f64>()
                .with_context(|| format!("{key} {s:?} is not a number"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hpa::Rules;

    const FIXTURE: &str = include_str!("testdata/manifests.yaml");

    #[test]
    fn reads_the_fixture_scaled_objects_and_deployments() -> Result<()> {
        let m = Manifests::parse(FIXTURE)?;
        assert_eq!((m.api.min_replicas, m.api.max_replicas), (2, 8));
        assert_eq!((m.worker.min_replicas, m.worker.max_replicas), (1, 6));
        assert_eq!(m.api.polling_interval_s, 5.0);
        assert_eq!(m.api_scrape_interval_s, 10.0);
        assert_eq!(m.api.behavior.scale_down.stabilization_window_s, 120.0);
        // scaleUp is omitted in the fixture's worker: the documented default.
        assert_eq!(m.worker.behavior.scale_up, Rules::default_scale_up());
        assert_eq!(m.api.behavior.scale_down.select, Select::Min);
        assert_eq!(m.api.pod.cpu_request_cores, 0.25);
        assert_eq!(m.api.pod.termination_grace_period_s, 30.0);
        let [
            Metric::Cpu { target_cores, .. },
            Metric::InFlight {
                window_s,
                threshold,
                ..
            },
        ] = m.api.metrics.as_slice()
        else {
            bail!("api metrics: {:?}", m.api.metrics);
        };
        assert_eq!((*target_cores, *window_s, *threshold), (0.5, 60.0, 40.0));
        let [
            Metric::QueueLength {
                value,
                exclude_unacknowledged,
                ..
            },
        ] = m.worker.metrics.as_slice()
        else {
            bail!("worker metrics: {:?}", m.worker.metrics);
        };
        assert_eq!((*value, *exclude_unacknowledged), (25.0, false));
        assert_eq!(m.worker.pod.termination_grace_period_s, 60.0);
        // A Utilization target is a percentage of the request: 80 % of 250m.
        let utilization = FIXTURE.replace(
            "metricType: AverageValue\n    metadata:\n      value: 500m",
            "metricType: Utilization\n    metadata:\n      value: \"80\"",
        );
        let m = Manifests::parse(&utilization)?;
        let [
            Metric::Cpu {
                target_cores,
                utilization_percent,
            },
            _,
        ] = m.api.metrics.as_slice()
        else {
            bail!("api metrics: {:?}", m.api.metrics);
        };
        assert_eq!((*target_cores, *utilization_percent), (0.2, Some(80.0)));
        Ok(())
    }

    #[test]
    fn a_pod_is_ready_at_the_first_probes_after_its_start_up() -> Result<()> {
        let m = Manifests::parse(FIXTURE)?;
        // Fixture api: startup probe every 1 s, readiness every 3 s after 2 s.
        assert_eq!(m.api.pod.ready_after(0.4), 2.0);
        assert_eq!(m.api.pod.ready_after(2.3), 5.0);
        assert_eq!(m.api.pod.ready_after(5.0), 5.0);
        Ok(())
    }

    #[test]
    fn refuses_queries_it_cannot_evaluate() {
        assert_eq!(
            in_flight_window(
                r#"sum( avg_over_time(http_requests_in_flight{job="fractile-api"}[1m30s]) )"#
            )
            .ok(),
            Some(90.0)
        );
        for q in [
            r#"sum(rate(http_requests_total{job="fractile-api"}[30s]))"#,
            r#"avg(avg_over_time(http_requests_in_flight{job="fractile-api"}[30s]))"#,
            r#"sum(avg_over_time(http_requests_in_flight{job="fractile-worker"}[30s]))"#,
            r#"sum(max_over_time(http_requests_in_flight{job="fractile-api"}[30s]))"#,
            r#"sum(avg_over_time(http_requests_in_flight{job="fractile-api"}[30x]))"#,
        ] {
            assert!(in_flight_window(q).is_err(), "{q}");
        }
    }

    #[test]
    fn unknown_triggers_are_errors() {
        let text = FIXTURE.replace("type: rabbitmq", "type: kafka");
        let err = Manifests::parse(&text).err().map(|e| format!("{e:#}"));
        assert!(err.is_some_and(|e| e.contains("kafka")));
    }

    #[test]
    fn quantities_and_durations() -> Result<()> {
        assert_eq!(parse_cpu("600m")?, 0.6);
        assert_eq!(parse_cpu("1")?, 1.0);
        assert_eq!(parse_prometheus_duration("5s")?, 5.0);
        assert_eq!(parse_prometheus_duration("2m")?, 120.0);
        assert_eq!(parse_prometheus_duration("1m30s")?, 90.0);
        assert!(parse_cpu("lots").is_err());
        assert!(parse_prometheus_duration("5").is_err());
        Ok(())
    }
}
