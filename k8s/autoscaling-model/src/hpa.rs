//! The HorizontalPodAutoscaler controller's arithmetic, as kube-controller-manager does it.
//!
//! Two halves, both pure (time is a number of seconds passed in, nothing sleeps):
//! - [`plain_metric_replicas`] and [`external_average_replicas`]: one metric → a replica count
//!   (`pkg/controller/podautoscaler/replica_calculator.go`: `calcPlainMetricReplicas`,
//!   `GetExternalPerPodMetricReplicas`; documented in "Algorithm details" of
//!   <https://kubernetes.io/docs/concepts/workloads/autoscaling/horizontal-pod-autoscale/>).
//! - [`Controller::sync`]: the metrics' proposals → the new `replicas` of the Deployment:
//!   the maximum over metrics, the min/max clamp, the `behavior` stabilization windows and
//!   scaling policies (`horizontal.go`: `reconcileAutoscaler`,
//!   `stabilizeRecommendationWithBehaviors`, `convertDesiredReplicasWithBehaviorRate`;
//!   documented in "Configurable scaling behavior" of the same page).
//!
//! What is deliberately left out: the HPA's conditions and events, `autoscaling/v1`'s
//! behaviour without a `behavior` field (KEDA always creates a v2 HPA, and the v2 defaults are
//! applied here instead), Object metrics and external metrics with `Value` targets.

use serde::Serialize;

/// The cluster-wide default of `--horizontal-pod-autoscaler-tolerance`.
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// The default of `--horizontal-pod-autoscaler-sync-period`: how often the controller runs.
pub const SYNC_PERIOD_S: f64 = 15.0;

/// The default of `--horizontal-pod-autoscaler-downscale-stabilization`, which is also the
/// default `scaleDown.stabilizationWindowSeconds`.
pub const DEFAULT_DOWNSCALE_STABILIZATION_S: f64 = 300.0;

/// How a direction's policies combine (`selectPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Select {
    /// The policy allowing the largest change (the default).
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction at all.
    Disabled,
}

/// What a policy's `value` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PolicyKind {
    /// A number of pods per period.
    Pods,
    /// A percentage of the replicas at the start of the period.
    Percent,
}

/// One scaling policy: at most `value` pods (or percent) per `period_s`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: u32,
    pub period_s: f64,
}

/// `behavior.scaleUp` or `behavior.scaleDown`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rules {
    pub stabilization_window_s: f64,
    pub select: Select,
    pub policies: Vec<Policy>,
    /// The per-direction `tolerance` (feature gate HPAConfigurableTolerance); the default
    /// otherwise.
    pub tolerance: f64,
}

/// `behavior`, with the defaults of "Default behavior" filled in for omitted fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Behavior {
    pub scale_up: Rules,
    pub scale_down: Rules,
}

impl Rules {
    /// The default `scaleUp`: no window, the larger of 100 % and 4 pods every 15 s.
    pub fn default_scale_up() -> Rules {
        Rules {
            stabilization_window_s: 0.0,
            select: Select::Max,
            policies: vec![
                Policy {
                    kind: PolicyKind::Percent,
                    value: 100,
                    period_s: 15.0,
                },
                Policy {
                    kind: PolicyKind::Pods,
                    value: 4,
                    period_s: 15.0,
                },
            ],
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    /// The default `scaleDown`: a 300 s window, 100 % every 15 s.
    pub fn default_scale_down() -> Rules {
        Rules {
            stabilization_window_s: DEFAULT_DOWNSCALE_STABILIZATION_S,
            select: Select::Max,
            policies: vec![Policy {
                kind: PolicyKind::Percent,
                value: 100,
                period_s: 15.0,
            }],
            tolerance: DEFAULT_TOLERANCE,
        }
    }
}

impl Default for Behavior {
    fn default() -> Behavior {
        Behavior {
            scale_up: Rules::default_scale_up(),
            scale_down: Rules::default_scale_down(),
        }
    }
}

/// The tolerance band around a usage ratio of 1 within which the controller does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance {
    pub down: f64,
    pub up: f64,
}

impl Tolerance {
    pub fn of(behavior: &Behavior) -> Tolerance {
        Tolerance {
            down: behavior.scale_down.tolerance,
            up: behavior.scale_up.tolerance,
        }
    }

    /// `(1 - down) <= ratio <= (1 + up)`: "skips any scaling action if the ratio is
    /// sufficiently close to 1.0".
    pub fn is_within(self, ratio: f64) -> bool {
        (1.0 - self.down) <= ratio && ratio <= (1.0 + self.up)
    }
}

/// One pod as the resource-metrics half of the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodMetric {
    /// The pod's value (cores for CPU), or `None` when the metrics API has none for it yet
    /// (the controller's "missing" pods).
    pub value: Option<f64>,
    /// Whether the sample counts: for CPU, the pod is Ready and the metric's window started
    /// after it became Ready (inside the 5 min CPU initialization period). Pods failing this
    /// are the controller's "unready" pods.
    pub counts: bool,
}

/// A per-pod metric with an `AverageValue` target (and CPU `Utilization`, which is the same
/// calculation with the target expressed in cores): `calcPlainMetricReplicas`.
///
/// - the usage ratio is the mean over counted pods ÷ the target;
/// - with no unready pods on a scale-up and no missing pods: within tolerance → no change,
///   else `ceil(ratio × counted pods)`;
/// - otherwise missing pods are taken as `missing_on_scale_down` on a scale-down (the
///   target, or 100 % of the request for Utilization) and as 0 on a scale-up, unready pods as 0
///   on a scale-up, the ratio recomputed, and the change dropped if it is now within tolerance
///   or reverses direction.
///
/// Returns `None` when no pod has a usable metric (the controller reports an error and that
/// metric does not propose anything).
pub fn plain_metric_replicas(
    current_replicas: u32,
    pods: &[PodMetric],
    target: f64,
    missing_on_scale_down: f64,
    tolerance: Tolerance,
) -> Option<u32> {
    let counted: Vec<f64> = pods
        .iter()
        .filter(|p| p.counts)
        .filter_map(|p| p.value)
        .collect();
    let unready = pods
        .iter()
        .filter(|p| !p.counts && p.value.is_some())
        .count();
    let missing = pods.iter().filter(|p| p.value.is_none()).count();
    if counted.is_empty() {
        return None;
    }
    let ratio = counted.iter().sum::<f64>() / counted.len() as f64 / target;
    let scale_up_with_unready = unready > 0 && ratio > 1.0;
    if !scale_up_with_unready && missing == 0 {
        if tolerance.is_within(ratio) {
            return Some(current_replicas);
        }
        return Some(ceil_replicas(ratio * counted.len() as f64));
    }
    let mut values = counted;
    if missing > 0 {
        let fill = if ratio < 1.0 {
            missing_on_scale_down
        } else {
            0.0
        };
        values.extend(std::iter::repeat_n(fill, missing));
    }
    if scale_up_with_unready {
        values.extend(std::iter::repeat_n(0.0, unready));
    }
    let new_ratio = values.iter().sum::<f64>() / values.len() as f64 / target;
    if tolerance.is_within(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Some(current_replicas);
    }
    let new_replicas = ceil_replicas(new_ratio * values.len() as f64);
    if (new_ratio < 1.0 && new_replicas > current_replicas)
        || (new_ratio > 1.0 && new_replicas < current_replicas)
    {
        return Some(current_replicas);
    }
    Some(new_replicas)
}

/// An external metric with an `AverageValue` target (KEDA's triggers other than cpu/memory):
/// `GetExternalPerPodMetricReplicas`. The tolerance is checked on
/// `total ÷ (target × status replicas)`; outside it the answer is `ceil(total ÷ target)`.
pub fn external_average_replicas(
    status_replicas: u32,
    total: f64,
    target_average: f64,
    tolerance: Tolerance,
) -> u32 {
    let ratio = total / (target_average * f64::from(status_replicas.max(1)));
    if tolerance.is_within(ratio) {
        status_replicas
    } else {
        ceil_replicas(total / target_average)
    }
}

/// `int32(math.Ceil(x))`, with the quantities' milli precision: 2.0000000001 (a float
/// artefact of 0.2 / 0.1) is 2 replicas, as it is for the controller's milli-unit integers.
fn ceil_replicas(x: f64) -> u32 {
    let rounded = (x * 1000.0).round() / 1000.0;
    rounded.ceil().max(0.0) as u32
}

/// What one run of the controller decided, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The largest of the metrics' proposals (before the clamp and `behavior`).
    pub proposed: Option<u32>,
    /// After the stabilization window.
    pub stabilized: u32,
    /// The new `replicas`.
    pub desired: u32,
    /// Why the answer differs from `stabilized`, if it does.
    pub limited_by: Option<&'static str>,
}

/// The controller's memory for one HPA: past recommendations (for the stabilization windows)
/// and past scale events (for the policies' periods).
#[derive(Debug, Clone)]
pub struct Controller {
    pub behavior: Behavior,
    pub min_replicas: u32,
    pub max_replicas: u32,
    recommendations: Vec<(f64, u32)>,
    scale_up_events: Vec<(f64, u32)>,
    scale_down_events: Vec<(f64, u32)>,
}

impl Controller {
    pub fn new(behavior: Behavior, min_replicas: u32, max_replicas: u32) -> Controller {
        Controller {
            behavior,
            min_replicas,
            max_replicas,
            recommendations: Vec::new(),
            scale_up_events: Vec::new(),
            scale_down_events: Vec::new(),
        }
    }

    /// One run of `reconcileAutoscaler` at time `now` (seconds) for a target whose `replicas`
    /// is `current`, given each metric's proposal (`None`: the metric could not be computed).
    pub fn sync(&mut self, now: f64, current: u32, proposals: &[Option<u32>]) -> Decision {
        // A target scaled to 0 by hand (or by KEDA's deactivation) is left alone.
        if current == 0 && self.min_replicas != 0 {
            return Decision {
                proposed: None,
                stabilized: 0,
                desired: 0,
                limited_by: Some("scaled to zero: autoscaling inactive"),
            };
        }
        if current > self.max_replicas || current < self.min_replicas {
            let desired = current.clamp(self.min_replicas, self.max_replicas);
            self.record_scale_event(now, current, desired);
            return Decision {
                proposed: None,
                stabilized: desired,
                desired,
                limited_by: Some("outside min/max"),
            };
        }
        let valid: Vec<u32> = proposals.iter().flatten().copied().collect();
        let Some(&largest) = valid.iter().max() else {
            // Every metric failed: the controller reports the error and changes nothing.
            return Decision {
                proposed: None,
                stabilized: current,
                desired: current,
                limited_by: Some("no metric available"),
            };
        };
        // "If any of these metrics cannot be converted into a desired replica count ... and a
        // scale down is suggested by the metrics which can be fetched, scaling is skipped."
        if valid.len() < proposals.len() && largest < current {
            return Decision {
                proposed: Some(largest),
                stabilized: current,
                desired: current,
                limited_by: Some("a metric is missing: no scale-down"),
            };
        }
        let stabilized = self.stabilize(now, current, largest);
        let (desired, limited_by) = self.limit_rate(now, current, stabilized);
        self.record_scale_event(now, current, desired);
        Decision {
            proposed: Some(largest),
            stabilized,
            desired,
            limited_by,
        }
    }

    /// `stabilizeRecommendationWithBehaviors`: the scale-up answer is the smallest
    /// recommendation within the scale-up window, the scale-down answer the largest within the
    /// scale-down window; the current count stays unless one of them moves it.
    fn stabilize(&mut self, now: f64, current: u32, recommendation: u32) -> u32 {
        if self.recommendations.is_empty() {
            // maybeInitScaleDownStabilizationWindow: a new HPA remembers the count it found,
            // so it does not scale down in its first window.
            self.recommendations.push((now, current));
        }
        let up_cutoff = now - self.behavior.scale_up.stabilization_window_s;
        let down_cutoff = now - self.behavior.scale_down.stabilization_window_s;
        let mut up = recommendation;
        let mut down = recommendation;
        for &(t, r) in &self.recommendations {
            // `rec.timestamp.After(cutoff)`: strictly inside the window.
            if t > up_cutoff {
                up = up.min(r);
            }
            if t > down_cutoff {
                down = down.max(r);
            }
        }
        let oldest_kept = now
            - self
                .behavior
                .scale_up
                .stabilization_window_s
                .max(self.behavior.scale_down.stabilization_window_s);
        self.recommendations.retain(|&(t, _)| t > oldest_kept);
        self.recommendations.push((now, recommendation));
        current.max(up).min(down)
    }

    /// `convertDesiredReplicasWithBehaviorRate`: the policies bound the change relative to the
    /// replica count at the start of each policy's period, reconstructed from the scale events
    /// within that period; min/max bound the rest.
    fn limit_rate(&self, now: f64, current: u32, desired: u32) -> (u32, Option<&'static str>) {
        let current_i = i64::from(current);
        if desired > current {
            let limit = self
                .policy_limit(now, current_i, &self.behavior.scale_up, true)
                .max(current_i);
            let allowed = i64::from(self.max_replicas).min(limit);
            if i64::from(desired) > allowed {
                let why = if allowed < i64::from(self.max_replicas) {
                    "scale-up policy"
                } else {
                    "maxReplicas"
                };
                return (to_replicas(allowed), Some(why));
            }
        } else if desired < current {
            let limit = self
                .policy_limit(now, current_i, &self.behavior.scale_down, false)
                .min(current_i);
            let allowed = i64::from(self.min_replicas).max(limit);
            if i64::from(desired) < allowed {
                let why = if allowed > i64::from(self.min_replicas) {
                    "scale-down policy"
                } else {
                    "minReplicas"
                };
                return (to_replicas(allowed), Some(why));
            }
        }
        (desired, None)
    }

    /// `calculateScaleUpLimitWithScalingRules` / `calculateScaleDownLimitWithBehaviors`.
    fn policy_limit(&self, now: f64, current: i64, rules: &Rules, up: bool) -> i64 {
        let changes = |events: &[(f64, u32)], period: f64| -> i64 {
            events
                .iter()
                .filter(|&&(t, _)| t > now - period)
                .map(|&(_, n)| i64::from(n))
                .sum()
        };
        // Max (the default) picks the largest change: the highest limit going up, the lowest
        // going down; Min the reverse.
        let pick_highest = match rules.select {
            Select::Disabled => return current,
            Select::Max => up,
            Select::Min => !up,
        };
        let mut result: Option<i64> = None;
        for policy in &rules.policies {
            let added = changes(&self.scale_up_events, policy.period_s);
            let removed = changes(&self.scale_down_events, policy.period_s);
            let start = current - added + removed;
            let proposed = match (policy.kind, up) {
                (PolicyKind::Pods, true) => start + i64::from(policy.value),
                (PolicyKind::Pods, false) => start - i64::from(policy.value),
                // Rounded up going up, so that a small percentage still adds a pod.
                (PolicyKind::Percent, true) => {
                    (start as f64 * (1.0 + f64::from(policy.value) / 100.0)).ceil() as i64
                }
                // Truncated going down (Go's int32(float64)), which rounds the removal up.
                (PolicyKind::Percent, false) => {
                    (start as f64 * (1.0 - f64::from(policy.value) / 100.0)) as i64
                }
            };
            result = Some(match result {
                None => proposed,
                Some(r) if pick_highest => r.max(proposed),
                Some(r) => r.min(proposed),
            });
        }
        result.unwrap_or(current)
    }

    fn record_scale_event(&mut self, now: f64, current: u32, desired: u32) {
        if desired > current {
            self.scale_up_events.push((now, desired - current));
        } else if desired < current {
            self.scale_down_events.push((now, current - desired));
        }
        // Events older than the longest period no longer limit anything.
        let longest = self
            .behavior
            .scale_up
            .policies
            .iter()
            .chain(&self.behavior.scale_down.policies)
            .map(|p| p.period_s)
            .fold(0.0, f64::max);
        self.scale_up_events.retain(|&(t, _)| t > now - longest);
        self.scale_down_events.retain(|&(t, _)| t > now - longest);
    }
}

fn to_replicas(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    //! Worked examples from the Kubernetes documentation, page "Horizontal Pod Autoscaling"
    //! (content/en/docs/concepts/workloads/autoscaling/horizontal-pod-autoscale.md in
    //! kubernetes/website), and from KEDA's.

    use super::*;

    const TOL: Tolerance = Tolerance {
        down: DEFAULT_TOLERANCE,
        up: DEFAULT_TOLERANCE,
    };

    fn ready(values: &[f64]) -> Vec<PodMetric> {
        values
            .iter()
            .map(|&v| PodMetric {
                value: Some(v),
                counts: true,
            })
            .collect()
    }

    /// "Algorithm details": "if the current metric value is `200m`, and the desired value is
    /// `100m`, the number of replicas will be doubled, since 200.0 ÷ 100.0 = 2.0".
    #[test]
    fn current_200m_against_100m_doubles_the_replicas() {
        let pods = ready(&[0.2, 0.2, 0.2]);
        assert_eq!(plain_metric_replicas(3, &pods, 0.1, 0.1, TOL), Some(6));
    }

    /// "Algorithm details": "If the current value is instead `50m`, you'll halve the number of
    /// replicas, since 50.0 ÷ 100.0 = 0.5".
    #[test]
    fn current_50m_against_100m_halves_the_replicas() {
        let pods = ready(&[0.05; 4]);
        assert_eq!(plain_metric_replicas(4, &pods, 0.1, 0.1, TOL), Some(2));
    }

    /// "Algorithm details": "The control plane skips any scaling action if the ratio is
    /// sufficiently close to 1.0 (within a configurable tolerance, 0.1 by default)".
    #[test]
    fn a_ratio_within_the_tolerance_changes_nothing() {
        // 109m / 100m = 1.09: ceil(1.09 × 10) would be 11, but it is within 10 %.
        assert_eq!(
            plain_metric_replicas(10, &ready(&[0.109; 10]), 0.1, 0.1, TOL),
            Some(10)
        );
        assert_eq!(
            plain_metric_replicas(10, &ready(&[0.091; 10]), 0.1, 0.1, TOL),
            Some(10)
        );
        // 112m is outside: ceil(1.12 × 10) = 12.
        assert_eq!(
            plain_metric_replicas(10, &ready(&[0.112; 10]), 0.1, 0.1, TOL),
            Some(12)
        );
        // The same band for an external AverageValue metric: 31 messages on 3 pods at 10 each.
        assert_eq!(external_average_replicas(3, 31.0, 10.0, TOL), 3);
    }

    /// "Algorithm details": "if any not-yet-ready pods were present, and the workload would
    /// have scaled up without factoring in missing metrics or not-yet-ready pods, the
    /// controller conservatively assumes that the not-yet-ready pods are consuming 0% of the
    /// desired metric, further dampening the magnitude of a scale up."
    #[test]
    fn not_yet_ready_pods_count_as_zero_on_a_scale_up() {
        let mut pods = ready(&[0.2, 0.2]);
        pods.push(PodMetric {
            value: Some(0.5),
            counts: false,
        });
        pods.push(PodMetric {
            value: Some(0.5),
            counts: false,
        });
        // Ready pods alone: ratio 2 → 4. With the two unready at 0: (0.4 / 4) / 0.1 = 1.0,
        // within tolerance → no change.
        assert_eq!(plain_metric_replicas(4, &pods, 0.1, 0.1, TOL), Some(4));
        // On a scale-down the unready pods are only set aside.
        let mut pods = ready(&[0.02, 0.02]);
        pods.push(PodMetric {
            value: Some(0.5),
            counts: false,
        });
        assert_eq!(plain_metric_replicas(3, &pods, 0.1, 0.1, TOL), Some(1));
    }

    /// "Algorithm details": missing metrics are taken as "100% of the desired value in case
    /// of a scale down, and 0% in case of a scale up".
    #[test]
    fn missing_metrics_dampen_both_directions() {
        let missing = PodMetric {
            value: None,
            counts: false,
        };
        // Up: two pods at 300m and one missing at 0 → mean 200m → ceil(2 × 3) = 6.
        let mut pods = ready(&[0.3, 0.3]);
        pods.push(missing);
        assert_eq!(plain_metric_replicas(3, &pods, 0.1, 0.1, TOL), Some(6));
        // Down: two pods at 20m and two missing at the target → mean 60m → ceil(0.6 × 4) = 3.
        let mut pods = ready(&[0.02, 0.02]);
        pods.extend([missing, missing]);
        assert_eq!(plain_metric_replicas(4, &pods, 0.1, 0.1, TOL), Some(3));
    }

    /// KEDA, RabbitMQ scaler (keda-docs content/docs/2.18/scalers/rabbitmq-queue.md): "if one
    /// pod can handle 10 messages, set the queue length target to `10`. If the actual number of
    /// messages in the queue is 30, the scaler will scale up to 3 pods."
    #[test]
    fn keda_queue_length_30_with_value_10_scales_to_3_pods() {
        assert_eq!(external_average_replicas(1, 30.0, 10.0, TOL), 3);
        let mut hpa = Controller::new(Behavior::default(), 1, 100);
        let decision = hpa.sync(
            0.0,
            1,
            &[Some(external_average_replicas(1, 30.0, 10.0, TOL))],
        );
        assert_eq!(decision.desired, 3);
    }

    /// "Scaling on multiple metrics": "The HorizontalPodAutoscaler takes the maximum scale
    /// recommended for each metric".
    #[test]
    fn several_metrics_take_the_largest_proposal() {
        let mut hpa = Controller::new(Behavior::default(), 1, 10);
        assert_eq!(hpa.sync(0.0, 2, &[Some(3), Some(5), Some(2)]).desired, 5);
    }

    /// "Scaling policies": Pods 4 and Percent 10 per 60 s; "if there are 80 replicas and the
    /// target has to be scaled down to 10 replicas then during the first step 8 replicas will be
    /// reduced. In the next iteration when the number of replicas is 72, 10% of the pods is 7.2
    /// but the number is rounded up to 8. ... When the number of replicas falls below 40 the
    /// first policy (Pods) is applied and 4 replicas will be reduced at a time."
    #[test]
    fn scaling_policies_example_80_replicas_down_to_10() {
        let behavior = Behavior {
            scale_up: Rules::default_scale_up(),
            scale_down: Rules {
                stabilization_window_s: 0.0,
                select: Select::Max,
                policies: vec![
                    Policy {
                        kind: PolicyKind::Pods,
                        value: 4,
                        period_s: 60.0,
                    },
                    Policy {
                        kind: PolicyKind::Percent,
                        value: 10,
                        period_s: 60.0,
                    },
                ],
                tolerance: DEFAULT_TOLERANCE,
            },
        };
        let mut hpa = Controller::new(behavior, 1, 100);
        // One step per period, so each step starts a fresh period as in the example.
        let mut replicas = 80;
        let mut steps = Vec::new();
        for i in 0..30 {
            let next = hpa.sync(f64::from(i) * 60.0, replicas, &[Some(10)]).desired;
            steps.push(replicas - next);
            replicas = next;
            if replicas == 10 {
                break;
            }
        }
        assert_eq!(&steps[..2], &[8, 8], "80 → 72 → 64");
        // 64 → 57 (6.4 → 7), 57 → 51 (5.7 → 6), 51 → 45 (6), 45 → 40 (4.5 → 5): Percent while
        // it allows more than 4; then 4 at a time down to 12, and the last 2.
        assert_eq!(&steps[2..], &[7, 6, 6, 5, 4, 4, 4, 4, 4, 4, 4, 2]);
        assert_eq!(replicas, 10);
    }

    /// The same example within one period: the limit is relative to the replicas at the start
    /// of the period, so a second sync 15 s later may remove nothing more.
    #[test]
    fn a_policy_period_counts_earlier_changes_within_it() {
        let behavior = Behavior {
            scale_up: Rules::default_scale_up(),
            scale_down: Rules {
                stabilization_window_s: 0.0,
                select: Select::Max,
                policies: vec![Policy {
                    kind: PolicyKind::Pods,
                    value: 4,
                    period_s: 60.0,
                }],
                tolerance: DEFAULT_TOLERANCE,
            },
        };
        let mut hpa = Controller::new(behavior, 1, 100);
        assert_eq!(hpa.sync(0.0, 20, &[Some(10)]).desired, 16);
        assert_eq!(hpa.sync(15.0, 16, &[Some(10)]).desired, 16);
        assert_eq!(hpa.sync(45.0, 16, &[Some(10)]).desired, 16);
        // 60 s after the first removal it is out of the period.
        assert_eq!(hpa.sync(60.0, 16, &[Some(10)]).desired, 12);
    }

    /// "Scaling policies": "By setting the value to `Min` which would select the policy which
    /// allows the smallest change"; "Setting the value to `Disabled` completely disables scaling
    /// in that direction."
    #[test]
    fn select_policy_min_and_disabled() {
        let rules = |select| Rules {
            stabilization_window_s: 0.0,
            select,
            policies: vec![
                Policy {
                    kind: PolicyKind::Percent,
                    value: 10,
                    period_s: 60.0,
                },
                Policy {
                    kind: PolicyKind::Pods,
                    value: 5,
                    period_s: 60.0,
                },
            ],
            tolerance: DEFAULT_TOLERANCE,
        };
        let mut hpa = Controller::new(
            Behavior {
                scale_up: Rules::default_scale_up(),
                scale_down: rules(Select::Min),
            },
            1,
            200,
        );
        // 100 pods: 10 % = 10, Pods = 5; Min removes 5.
        assert_eq!(hpa.sync(0.0, 100, &[Some(10)]).desired, 95);
        let mut hpa = Controller::new(
            Behavior {
                scale_up: Rules::default_scale_up(),
                scale_down: rules(Select::Disabled),
            },
            1,
            200,
        );
        assert_eq!(hpa.sync(0.0, 100, &[Some(10)]).desired, 100);
    }

    /// "Stabilization window": "When the metrics indicate that the target should be scaled down
    /// the algorithm looks into previously computed desired states, and uses the highest value
    /// from the specified interval." With `stabilizationWindowSeconds: 300`, "all desired states
    /// from the past 5 minutes will be considered."
    #[test]
    fn stabilization_window_example_keeps_the_highest_of_the_last_5_minutes() {
        let behavior = Behavior {
            scale_up: Rules::default_scale_up(),
            scale_down: Rules {
                stabilization_window_s: 300.0,
                ..Rules::default_scale_down()
            },
        };
        let mut hpa = Controller::new(behavior, 1, 10);
        assert_eq!(hpa.sync(0.0, 2, &[Some(6)]).desired, 6);
        // The load drops at once; every later recommendation is 1.
        let mut replicas = 6;
        let mut first_down = None;
        let mut t = 15.0;
        while t <= 600.0 {
            replicas = hpa.sync(t, replicas, &[Some(1)]).desired;
            if replicas < 6 && first_down.is_none() {
                first_down = Some(t);
            }
            t += 15.0;
        }
        // The recommendation of 6 made at 0 s stays inside the window until 300 s have passed
        // ("After", strictly), and the default scale-down policy then allows 100 % at once.
        assert_eq!(first_down, Some(300.0));
        assert_eq!(replicas, 1);
    }

    /// "Default behavior": scale-down "allows a 100% of the currently running replicas to be
    /// removed" after a 300 s window; scale-up has no window and adds "4 pods or a 100% of the
    /// currently running replicas ... every 15 seconds".
    #[test]
    fn default_behavior_scales_up_by_max_of_100_percent_and_4_pods_per_15_s() {
        let mut hpa = Controller::new(Behavior::default(), 1, 100);
        // From 1: max(2, 5) = 5. From 5: max(10, 9) = 10. From 10: 20. From 20: 40.
        let mut replicas = 1;
        let mut seen = vec![replicas];
        for i in 0..5 {
            replicas = hpa
                .sync(f64::from(i) * 15.0, replicas, &[Some(100)])
                .desired;
            seen.push(replicas);
        }
        assert_eq!(seen, vec![1, 5, 10, 20, 40, 80]);
        // Two syncs within the same 15 s period: the second one may not add more.
        let mut hpa = Controller::new(Behavior::default(), 1, 100);
        assert_eq!(hpa.sync(0.0, 1, &[Some(100)]).desired, 5);
        assert_eq!(hpa.sync(10.0, 5, &[Some(100)]).desired, 5);
    }

    #[test]
    fn default_behavior_scales_down_to_the_minimum_at_once_after_300_s() {
        let mut hpa = Controller::new(Behavior::default(), 2, 100);
        assert_eq!(hpa.sync(0.0, 40, &[Some(40)]).desired, 40);
        assert_eq!(hpa.sync(15.0, 40, &[Some(1)]).desired, 40);
        assert_eq!(hpa.sync(285.0, 40, &[Some(1)]).desired, 40);
        assert_eq!(hpa.sync(300.0, 40, &[Some(1)]).desired, 2);
    }

    #[test]
    fn a_missing_metric_blocks_a_scale_down_but_not_a_scale_up() {
        let mut hpa = Controller::new(Behavior::default(), 1, 10);
        // Initialise the window at 4 so the down decision is only blocked by the missing metric.
        hpa.sync(0.0, 4, &[Some(4)]);
        let d = hpa.sync(400.0, 4, &[Some(1), None]);
        assert_eq!(d.desired, 4);
        assert_eq!(hpa.sync(415.0, 4, &[Some(6), None]).desired, 6);
    }

    /// Property: whatever the metrics propose and whatever the history, the answer stays within
    /// [minReplicas, maxReplicas] once the target is inside them.
    #[test]
    fn never_outside_min_and_max() {
        let behaviors = [
            Behavior::default(),
            Behavior {
                scale_up: Rules {
                    stabilization_window_s: 30.0,
                    ..Rules::default_scale_up()
                },
                scale_down: Rules {
                    stabilization_window_s: 0.0,
                    policies: vec![Policy {
                        kind: PolicyKind::Percent,
                        value: 50,
                        period_s: 30.0,
                    }],
                    ..Rules::default_scale_down()
                },
            },
        ];
        // A deterministic pseudo-random walk of proposals, wide of the bounds on both sides.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for behavior in behaviors {
            for (min, max) in [(1, 1), (1, 10), (2, 10), (3, 7)] {
                let mut hpa = Controller::new(behavior.clone(), min, max);
                let mut replicas = min;
                for i in 0..2000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let proposal = u32::try_from(x % 25).unwrap_or(0);
                    let missing = x.is_multiple_of(11);
                    let proposals = [Some(proposal), (!missing).then_some(proposal / 2)];
                    replicas = hpa.sync(f64::from(i) * 15.0, replicas, &proposals).desired;
                    assert!(
                        (min..=max).contains(&replicas),
                        "{replicas} outside [{min}, {max}] at step {i}"
                    );
                }
            }
        }
    }

    /// Property: a load exactly at the target never changes the replica count, for any count,
    /// for both kinds of metric.
    #[test]
    fn a_constant_load_at_the_target_never_changes_replicas() {
        for replicas in 1..=20u32 {
            let mut hpa = Controller::new(Behavior::default(), 1, 20);
            for i in 0..100 {
                let now = f64::from(i) * 15.0;
                let cpu = plain_metric_replicas(
                    replicas,
                    &ready(&vec![0.6; replicas as usize]),
                    0.6,
                    0.6,
                    TOL,
                );
                let queue =
                    external_average_replicas(replicas, 30.0 * f64::from(replicas), 30.0, TOL);
                let d = hpa.sync(now, replicas, &[cpu, Some(queue)]);
                assert_eq!(d.desired, replicas, "at {replicas} replicas, step {i}");
            }
        }
    }
}
