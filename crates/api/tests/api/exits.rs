//! The binary in its failure paths: whatever goes wrong, it exits with a status that says
//! so and never prints a panic; a broker that is down is not a failure at all (the api
//! serves without it).

use std::process::Command;
use std::time::Duration;

use fractile_test_support::{Process, closed_port};

fn api() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fractile-api"));
    command
        .env("FRACTILE_LISTEN", "127.0.0.1:0")
        .env("FRACTILE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("FRACTILE_LOG_FORMAT", "json")
        .env("FRACTILE_SHUTDOWN_DELAY", "0s")
        .env("FRACTILE_RENDER_THREADS", "1");
    command
}

/// The `listening` log line's addresses: (traffic, admin).
fn listening(process: &Process) -> (String, String) {
    let line = process.wait_for_line(Duration::from_secs(20), |l| l.contains("\"listening\""));
    let event: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    let address = |field: &str| event[field].as_str().expect("an address").to_owned();
    (address("traffic"), address("admin"))
}

#[test]
fn bad_settings_exit_with_a_usage_error_and_no_panic() {
    let mut command = api();
    command.env("FRACTILE_MAX_ZOOM", "33");
    let status = Process::spawn(command).wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "clap's usage error");
}

#[test]
fn a_sigterm_the_moment_it_listens_drains_instead_of_killing() {
    // The signal handlers must exist before the `listening` line: an orchestrator may stop a
    // process the moment it is up. Several rounds, as the window is narrow.
    for round in 0..5 {
        let process = Process::spawn(api());
        listening(&process);
        process.terminate();
        let status = process.wait_exit(Duration::from_secs(20));
        assert!(
            status.success(),
            "round {round}: {status:?} (killed by the signal?)"
        );
    }
}

#[test]
fn empty_urls_mean_unset_and_the_api_starts() {
    // As a Docker `.env` file writes the settings it leaves unset.
    let mut command = api();
    command
        .env("FRACTILE_REDIS_URL", "")
        .env("FRACTILE_AMQP_URL", "");
    let process = Process::spawn(command);
    listening(&process);
    process.terminate();
    let status = process.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
}

#[test]
fn an_invalid_redis_url_exits_2_naming_its_variable_without_the_password() {
    let mut command = api();
    // The scheme forgotten: not a URL at all.
    command
        .env("FRACTILE_REDIS_URL", ":s3cret-pw@127.0.0.1:6379")
        .env_remove("FRACTILE_AMQP_URL");
    let (status, output) = Process::spawn(command).wait_exit_with_output(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "clap's usage error: {output}");
    assert!(output.contains("FRACTILE_REDIS_URL"), "{output}");
    assert!(!output.contains("s3cret-pw"), "{output}");
}

/// Every URL the clients would refuse stops the api at start-up with exit 2, one line naming
/// the variable, and no part of the password, whatever characters it holds.
#[test]
fn every_url_the_clients_refuse_exits_2_naming_its_variable_without_the_password() {
    for (variable, url, says) in [
        (
            "FRACTILE_REDIS_URL",
            "redis://127.0.0.1:6379/9x",
            "database number",
        ),
        (
            "FRACTILE_REDIS_URL",
            "redis://user:pa?ss-SECRET@127.0.0.1:6391",
            "invalid port",
        ),
        (
            "FRACTILE_REDIS_URL",
            "redis://u:123/x-SECRET@127.0.0.1:6391",
            "database number",
        ),
        ("FRACTILE_REDIS_URL", "rediss://127.0.0.1:6380", "TLS"),
        (
            "FRACTILE_STATE_REDIS_URL",
            "redis://127.0.0.1:6379/not-a-db",
            "database number",
        ),
        (
            "FRACTILE_AMQP_URL",
            "amqp://u:pa/ss-SECRET@127.0.0.1:5672/%2f",
            "invalid port",
        ),
        ("FRACTILE_AMQP_URL", "amqps://127.0.0.1:5671/%2f", "TLS"),
    ] {
        let mut command = api();
        command.env("FRACTILE_REDIS_URL", "redis://127.0.0.1:6379");
        command.env(variable, url);
        let (status, output) =
            Process::spawn(command).wait_exit_with_output(Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{url}: {output}");
        assert!(output.contains(variable), "{url}: {output}");
        assert!(output.contains(says), "{url}: {output}");
        assert!(!output.contains("SECRET"), "{url}: {output}");
    }
}

/// Found by the hostile trial: fault injection used to need no credential. On without
/// Tracing's `OTEL_*` settings are checked like the rest, where the SDK would ignore what
/// it cannot use: each refusal exits 2 naming the variable, and never shows an endpoint's
/// credentials.
#[test]
fn tracing_settings_the_sdk_would_ignore_exit_2_naming_their_variable() {
    for (settings, variable) in [
        (
            &[("OTEL_TRACES_SAMPLER", "AlwaysOn")][..],
            "OTEL_TRACES_SAMPLER",
        ),
        (
            &[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ][..],
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (
            &[("OTEL_TRACES_SAMPLER_ARG", "0.5")][..],
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")][..],
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (
            &[(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://user:SECRET@collector:4318",
            )][..],
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (
            &[("OTEL_RESOURCE_ATTRIBUTES", "team")][..],
            "OTEL_RESOURCE_ATTRIBUTES",
        ),
        (&[("OTEL_SDK_DISABLED", "yes")][..], "OTEL_SDK_DISABLED"),
    ] {
        let mut command = api();
        command.envs(settings.iter().copied());
        let (status, output) =
            Process::spawn(command).wait_exit_with_output(Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{settings:?}: {output}");
        assert!(output.contains(variable), "{settings:?}: {output}");
        assert!(!output.contains("SECRET"), "{settings:?}: {output}");
        assert!(!output.contains("panicked"), "{settings:?}: {output}");
    }
}

/// `FRACTILE_ADMIN_TOKEN`, or with one too short, is a configuration error.
#[test]
fn fault_injection_without_a_good_admin_token_exits_2_without_printing_it() {
    for (token, says) in [
        (None, "needs FRACTILE_ADMIN_TOKEN"),
        (Some("short-SECRET"), "FRACTILE_ADMIN_TOKEN"),
    ] {
        let mut command = api();
        command.env("FRACTILE_FAULT_INJECTION", "true");
        match token {
            Some(token) => command.env("FRACTILE_ADMIN_TOKEN", token),
            None => command.env_remove("FRACTILE_ADMIN_TOKEN"),
        };
        let (status, output) =
            Process::spawn(command).wait_exit_with_output(Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{token:?}: {output}");
        assert!(
            output.contains("FRACTILE_ADMIN_TOKEN"),
            "{token:?}: {output}"
        );
        assert!(output.contains(says), "{token:?}: {output}");
        assert!(!output.contains("SECRET"), "{token:?}: {output}");
    }
}

#[test]
fn an_invalid_amqp_url_error_is_printed_once_without_the_password() {
    let mut command = api();
    command
        .env("FRACTILE_REDIS_URL", "redis://127.0.0.1:6379")
        .env("FRACTILE_AMQP_URL", ":s3cret-pw@127.0.0.1:5672");
    let (status, output) = Process::spawn(command).wait_exit_with_output(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("FRACTILE_AMQP_URL"), "{output}");
    assert!(!output.contains("s3cret-pw"), "{output}");
    assert!(output.contains("***@127.0.0.1:5672"), "{output}");
    assert_eq!(
        output.matches("relative URL without a base").count(),
        1,
        "{output}"
    );
}

#[test]
fn a_taken_port_exits_non_zero_and_no_panic() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut command = api();
    command.env(
        "FRACTILE_ADMIN_LISTEN",
        taken.local_addr().expect("addr").to_string(),
    );
    let process = Process::spawn(command);
    let status = process.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
}

#[test]
fn without_a_broker_the_api_serves_reports_it_and_exits_cleanly() {
    let password = "do-not-log-me";
    let mut command = api();
    command
        .env(
            "FRACTILE_AMQP_URL",
            format!("amqp://fractile:{password}@127.0.0.1:{}/%2f", closed_port()),
        )
        // Redis is not needed for this either: unreachable, it is a miss.
        .env(
            "FRACTILE_REDIS_URL",
            format!("redis://:{password}@127.0.0.1:{}", closed_port()),
        );
    let process = Process::spawn(command);
    // It listens at once instead of waiting for the broker.
    let (traffic, admin) = listening(&process);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let (tile, ready, metrics) = runtime.block_on(async {
        let tile = http
            .get(format!("http://{traffic}/tiles/2/1/1.png"))
            .send()
            .await
            .expect("tile");
        let ready = http
            .get(format!("http://{admin}/readyz"))
            .send()
            .await
            .expect("readyz");
        let ready = (
            ready.status().as_u16(),
            serde_json::from_str::<serde_json::Value>(&ready.text().await.expect("body"))
                .expect("JSON"),
        );
        let metrics = http
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        (tile.status().as_u16(), ready, metrics)
    });
    assert_eq!(tile, 200, "the miss is rendered here");
    assert_eq!(ready.0, 200, "still ready: misses are served locally");
    assert_eq!(ready.1["queue"], "down");
    assert!(metrics.contains("\nqueue_connected 0"), "{metrics}");
    // Each attempt is logged with the redacted URL and when the next one comes, the password
    // never; the same for Redis (the tile-ready subscription's reconnects).
    process.wait_for_line(Duration::from_secs(10), |l| {
        l.contains("connecting to RabbitMQ")
            && l.contains("fractile:***@127.0.0.1")
            && l.contains("retry_in")
    });
    process.wait_for_line(Duration::from_secs(10), |l| {
        l.contains("tile-ready subscription")
            && l.contains("***@127.0.0.1")
            && l.contains("retry_in")
    });
    assert!(
        !process.output().iter().any(|l| l.contains(password)),
        "the password was logged"
    );

    // SIGTERM while it is still trying to connect.
    process.terminate();
    let status = process.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
}
