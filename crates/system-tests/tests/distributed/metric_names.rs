//! What the two binaries export under the same names means the same thing, with the same
//! buckets; what differs has different names. Needs no service.

use std::collections::BTreeSet;

/// Every sample line's metric name (histogram series reduced to the family name).
fn names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

/// The `le` values of `family`'s buckets.
fn buckets(exposition: &str, family: &str) -> Vec<String> {
    let prefix = format!("{family}_bucket{{");
    exposition
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| line.split("le=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn shared_metrics_have_the_same_names_and_buckets_and_the_broker_depth_its_own_name() {
    let api = fractile_api::metrics::Metrics::new().expect("api metrics");
    let worker = fractile_worker::metrics::WorkerMetrics::new().expect("worker metrics");
    for render in [api.render_metrics(), worker.render_metrics()] {
        let _ = render.record(|| Ok::<_, fractile_render::RenderError>(()));
    }
    worker.queue_depth.with_label_values(&["bulk"]).set(3);
    let (api, worker) = (
        api.encode().expect("encodes"),
        worker.encode().expect("encodes"),
    );

    let api_buckets = buckets(&api, "render_duration_seconds");
    assert!(api_buckets.len() > 5, "{api_buckets:?}");
    assert_eq!(api_buckets, buckets(&worker, "render_duration_seconds"));

    let (api, worker) = (names(&api), names(&worker));
    // The render threads' metrics: one set of names in both (Prometheus's `job` tells the
    // binaries apart), registered in one place (`fractile_render_pool`).
    for shared in [
        "render_duration_seconds",
        "renders_total",
        "render_pool_queue_depth",
        "render_pool_wait_seconds",
        "render_pool_rejected_total",
    ] {
        assert!(api.contains(shared) && worker.contains(shared), "{shared}");
    }
    // The broker's queue has a name of its own, apart from the render pools'.
    assert!(worker.contains("broker_queue_ready_messages"));
    assert!(!api.contains("render_queue_depth"), "{api:?}");
    #[cfg(target_os = "linux")]
    assert!(
        api.contains("process_cpu_seconds_total") && worker.contains("process_cpu_seconds_total")
    );
}
