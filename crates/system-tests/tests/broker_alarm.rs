//! A RabbitMQ memory alarm (the high watermark set far below what the broker uses): the
//! broker blocks publishers. Misses must not wait for it longer than the publish timeout
//! (they are rendered here), hits must not notice, and when the alarm clears the same
//! processes go back to the queue without a restart.
//!
//! A test binary of its own, holding the broker lock: the alarm blocks every publisher on
//! the broker, other tests' too. The watermark is restored by a guard, also on failure.

// Shares the distributed tests' helpers; not every helper is used here.
#[allow(dead_code, unused_imports)]
#[path = "distributed/helpers.rs"]
mod helpers;

use std::num::NonZeroUsize;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fractile_test_support::{BrokerLock, cache_layer, rabbitmqctl};

use helpers::*;

/// A watermark far below any broker's memory use: the alarm goes off at once.
const TINY_WATERMARK: &str = "0.0001";

/// Raises the memory alarm; restores the watermark it found when dropped.
struct MemoryAlarm {
    restore: Vec<String>,
}

impl MemoryAlarm {
    fn raise() -> MemoryAlarm {
        let restore = current_watermark();
        let alarm = MemoryAlarm { restore };
        rabbitmqctl(&["set_vm_memory_high_watermark", TINY_WATERMARK]);
        alarm
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        let mut args = vec!["set_vm_memory_high_watermark".to_owned()];
        args.extend(self.restore.iter().cloned());
        let restored = Command::new("rabbitmqctl").args(&args).status();
        if !restored.is_ok_and(|s| s.success()) {
            eprintln!("restoring the watermark failed: run rabbitmqctl {args:?}");
        }
    }
}

/// The arguments of `set_vm_memory_high_watermark` that restore today's setting: a
/// fraction (`0.4`) or `absolute <bytes>`.
fn current_watermark() -> Vec<String> {
    let environment = rabbitmqctl(&["-q", "environment"]);
    let key = "{vm_memory_high_watermark,";
    let value = environment
        .find(key)
        .map(|at| &environment[at + key.len()..])
        .unwrap_or("0.4}");
    if let Some(rest) = value.strip_prefix("{absolute,") {
        let bytes: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        return vec!["absolute".into(), bytes];
    }
    let fraction: String = value
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let fraction = if fraction.parse::<f64>().is_ok() {
        fraction
    } else {
        "0.4".into()
    };
    vec![fraction]
}

fn memory_alarm_on() -> bool {
    rabbitmqctl(&["-q", "eval", "rabbit_alarm:get_alarms()."]).contains("memory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_memory_alarm_bounds_misses_spares_hits_and_clears_without_a_restart() {
    const MISSES: u32 = 16;
    let cluster = Cluster::new().await;
    let worker = start_worker(cluster.worker_config(1));
    let mut config = cluster.api_config();
    config.publish_timeout = Duration::from_secs(1);
    config.process.render_threads = NonZeroUsize::new(2);
    let (state, app) = cluster.api(&config).await;
    let warm = send(&app, get("/tiles/6/1/1.png")).await;
    assert!(header(&warm, "server-timing").contains("worker;"));

    let lock = BrokerLock::acquire(Duration::from_secs(300));
    let alarm = MemoryAlarm::raise();
    eventually(
        "the memory alarm is on",
        Duration::from_secs(20),
        || async { memory_alarm_on() },
    )
    .await;

    // Misses, all at once: each is answered, rendered here, within the publish timeout
    // plus a render.
    let tasks: Vec<_> = (0..MISSES)
        .map(|x| {
            let app = app.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let response = send(&app, get(&format!("/tiles/7/{x}/40.png"))).await;
                (response, started.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (response, took) = task.await.expect("task");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            header(&response, "server-timing").starts_with("queue;"),
            "rendered here: {}",
            header(&response, "server-timing")
        );
        slowest = slowest.max(took);
    }
    eprintln!("slowest miss during the alarm: {slowest:?} (publish timeout 1 s)");
    assert!(
        slowest < config.publish_timeout + Duration::from_secs(2),
        "a miss waited {slowest:?}"
    );
    let held = ["timeout", "blocked"].map(|result| {
        state
            .metrics
            .publishes
            .with_label_values(&["interactive", result])
            .get()
    });
    assert!(
        held.iter().sum::<u64>() >= 1,
        "publishes held by the alarm are counted: {held:?}"
    );

    // Hits do not touch the broker.
    let started = Instant::now();
    let hit = send(&app, get("/tiles/6/1/1.png")).await;
    assert_eq!(
        (hit.status(), cache_layer(&hit).to_owned()),
        (StatusCode::OK, "L1".into())
    );
    assert!(started.elapsed() < Duration::from_millis(500));

    // Cleared: the same processes use the queue again.
    drop(alarm);
    let cleared = Instant::now();
    eventually(
        "the memory alarm is off",
        Duration::from_secs(20),
        || async { !memory_alarm_on() },
    )
    .await;
    let mut x = 0;
    loop {
        let response = send(&app, get(&format!("/tiles/7/{x}/41.png"))).await;
        assert_eq!(response.status(), StatusCode::OK);
        if header(&response, "server-timing").contains("worker;") {
            break;
        }
        assert!(
            cleared.elapsed() < Duration::from_secs(30),
            "misses did not go through the queue again within 30 s"
        );
        x += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "misses went through the queue again {:?} after the alarm was cleared",
        cleared.elapsed()
    );
    drop(lock);
    worker.shutdown().await;
    cluster.cleanup().await;
}
