//! RabbitMQ's cost per render job, through fractile's own queue code: persistent, mandatory
//! publishes with confirms to the interactive quorum queue (as the api sends a miss), then
//! consumes with manual acks at a worker's prefetch, then both at once. For each phase it
//! prints messages per second and the broker's CPU-seconds per 1000 messages (from
//! `/proc/<broker pid>/stat`), which is what carries over to a broker on its own cores.
//!
//! `cargo run --release --example queue_bench -- AMQP_URL BROKER_PID [messages] [window] [prefetch] [clk_tck]`
//! `window` is how many confirms may be outstanding (the api awaits one per miss, so it has
//! as many outstanding as misses in progress); queues live under the prefix
//! `capacity-bench.` and are deleted at the end.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use fractile_capacity::process_cpu;
use fractile_queue::lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use fractile_queue::lapin::types::FieldTable;
use fractile_queue::{Publisher, RenderJob, Topology};
use fractile_render::{MaxZoom, Style, TileId, TileKey};
use futures_lite::StreamExt;

const TIMEOUT: Duration = Duration::from_secs(10);

struct Settings {
    url: String,
    broker: u32,
    messages: u32,
    window: usize,
    prefetch: u16,
    ticks: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(url), Some(broker)) = (args.first(), args.get(1)) else {
        anyhow::bail!(
            "usage: queue_bench AMQP_URL BROKER_PID [messages] [window] [prefetch] [clk_tck]"
        );
    };
    let number = |i: usize, default: &str| args.get(i).map_or(default, String::as_str).to_owned();
    let s = Settings {
        url: url.clone(),
        broker: broker.parse()?,
        messages: number(2, "20000").parse()?,
        window: number(3, "64").parse()?,
        prefetch: number(4, "2").parse()?,
        ticks: number(5, "100").parse()?,
    };
    let topology = Topology::new("capacity-bench.");
    let publisher = Publisher::connect(&s.url, "capacity-bench", topology.clone(), TIMEOUT).await?;
    let consumer_connection =
        fractile_queue::connect(&s.url, "capacity-bench-consumer", TIMEOUT).await?;
    let channel = consumer_connection.create_channel().await?;
    channel
        .basic_qos(s.prefetch, BasicQosOptions::default())
        .await?;
    // Start empty: an earlier interrupted run may have left jobs behind.
    channel
        .queue_purge(topology.interactive.as_str().into(), Default::default())
        .await?;

    println!(
        "messages: {}, confirms outstanding at most: {}, consumer prefetch: {}",
        s.messages, s.window, s.prefetch
    );
    println!(
        "| phase | messages | seconds | messages/s | broker CPU-s | broker CPU-s per 1000 msgs |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");

    let measure =
        |label: &'static str, started: Instant, cpu_before: Duration| -> anyhow::Result<()> {
            let seconds = started.elapsed().as_secs_f64();
            let cpu = (process_cpu(s.broker, s.ticks)? - cpu_before).as_secs_f64();
            let n = f64::from(s.messages);
            println!(
                "| {label} | {} | {seconds:.2} | {:.0} | {cpu:.2} | {:.3} |",
                s.messages,
                n / seconds,
                cpu / n * 1000.0
            );
            Ok(())
        };

    let (cpu, started) = (process_cpu(s.broker, s.ticks)?, Instant::now());
    publish_all(&publisher, &s, 0).await?;
    measure("publish + confirm", started, cpu)?;

    let (cpu, started) = (process_cpu(s.broker, s.ticks)?, Instant::now());
    consume_all(&channel, &topology, s.messages, "drain").await?;
    measure("consume + ack", started, cpu)?;

    let (cpu, started) = (process_cpu(s.broker, s.ticks)?, Instant::now());
    let (published, consumed) = tokio::join!(
        publish_all(&publisher, &s, s.messages),
        consume_all(&channel, &topology, s.messages, "both")
    );
    published?;
    consumed?;
    measure("both at once (per message through)", started, cpu)?;

    topology.delete(&channel).await?;
    Ok(())
}

/// Publishes `s.messages` interactive jobs with at most `s.window` confirms outstanding.
async fn publish_all(publisher: &Publisher, s: &Settings, first: u32) -> anyhow::Result<()> {
    let deadline = SystemTime::now() + Duration::from_secs(3600);
    let mut pending = VecDeque::with_capacity(s.window);
    for i in first..first + s.messages {
        // Distinct zoom-16 tiles: the payload is the size of a real job.
        let tile = TileId::new(16, 1000 + i % 60_000, 2000 + i / 60_000, MaxZoom::LIMIT)?;
        let job = RenderJob::interactive(
            &TileKey {
                tile,
                style: Style::Classic,
            },
            deadline,
        );
        if pending.len() == s.window
            && let Some(confirm) = pending.pop_front()
        {
            fractile_queue::PendingConfirm::confirmed(confirm).await?;
        }
        pending.push_back(publisher.publish(&job).await?);
    }
    for confirm in pending {
        confirm.confirmed().await?;
    }
    Ok(())
}

/// Consumes and acks `n` messages from the interactive queue.
async fn consume_all(
    channel: &fractile_queue::lapin::Channel,
    topology: &Topology,
    n: u32,
    tag: &str,
) -> anyhow::Result<()> {
    let mut consumer = channel
        .basic_consume(
            topology.interactive.as_str().into(),
            format!("capacity-bench-{tag}").into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut left = n;
    while left > 0 {
        let delivery = tokio::time::timeout(TIMEOUT, consumer.next())
            .await
            .map_err(|_| anyhow::anyhow!("no delivery for {TIMEOUT:?} with {left} left"))?
            .ok_or_else(|| anyhow::anyhow!("the consumer ended with {left} left"))??;
        delivery.ack(BasicAckOptions::default()).await?;
        left -= 1;
    }
    channel
        .basic_cancel(format!("capacity-bench-{tag}").into(), Default::default())
        .await?;
    Ok(())
}
