//! The binary in its failure paths: it exits with a status that says what happened and
//! never prints a panic. An unreachable broker is retried with backoff (the password kept
//! out of the logs) while `/readyz` says not ready, until SIGTERM ends it cleanly.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use fractile_test_support::{Process, closed_port};

fn worker() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fractile-worker"));
    command
        .env("FRACTILE_LOG_FORMAT", "json")
        .env("FRACTILE_RENDER_THREADS", "1")
        .env_remove("FRACTILE_AMQP_URL")
        .env_remove("FRACTILE_REDIS_URL");
    command
}

/// Status code and body of `GET path` on `addr` (plain HTTP/1.1, connection closed after).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("admin port answers");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response[9..12].parse().expect("status code");
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

#[test]
fn missing_settings_exit_with_a_usage_error_and_no_panic() {
    let status = Process::spawn(worker()).wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "clap's usage error");
}

#[test]
fn an_empty_or_invalid_url_exits_with_a_usage_error_naming_its_variable() {
    for (amqp, redis, variable) in [
        // As a Docker `.env` file writes a setting it leaves unset.
        ("", "redis://127.0.0.1:6379", "FRACTILE_AMQP_URL"),
        (
            "amqp://127.0.0.1:5672/%2f",
            ":s3cret-pw@127.0.0.1:6379",
            "FRACTILE_REDIS_URL",
        ),
    ] {
        let mut command = worker();
        command
            .env("FRACTILE_AMQP_URL", amqp)
            .env("FRACTILE_REDIS_URL", redis);
        let (status, output) =
            Process::spawn(command).wait_exit_with_output(Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{output}");
        assert!(output.contains(variable), "{output}");
        assert!(!output.contains("s3cret-pw"), "{output}");
        assert!(
            output.matches("relative URL without a base").count() <= 1,
            "{output}"
        );
    }
}

/// Fault injection without `FRACTILE_ADMIN_TOKEN` would let whoever reaches the admin port
/// pause consumption: a configuration error.
#[test]
fn fault_injection_without_an_admin_token_exits_2() {
    let mut command = worker();
    command
        .env("FRACTILE_AMQP_URL", "amqp://127.0.0.1:5672/%2f")
        .env("FRACTILE_REDIS_URL", "redis://127.0.0.1:6379")
        .env("FRACTILE_FAULT_INJECTION", "true")
        .env_remove("FRACTILE_ADMIN_TOKEN");
    let (status, output) = Process::spawn(command).wait_exit_with_output(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("needs FRACTILE_ADMIN_TOKEN"), "{output}");
}

#[test]
fn an_unreachable_broker_is_retried_not_ready_until_sigterm_ends_it_cleanly() {
    let password = "do-not-log-me";
    let admin = format!("127.0.0.1:{}", closed_port());
    let mut command = worker();
    command
        .env(
            "FRACTILE_AMQP_URL",
            format!("amqp://fractile:{password}@127.0.0.1:{}/%2f", closed_port()),
        )
        .env(
            "FRACTILE_REDIS_URL",
            format!("redis://127.0.0.1:{}", closed_port()),
        )
        .env("FRACTILE_ADMIN_LISTEN", &admin);
    let process = Process::spawn(command);
    // Each failed attempt says so at once, with the redacted URL and the next retry time
    // (not after lapin's silent TCP retries).
    process.wait_for_line(Duration::from_secs(10), |l| {
        l.contains("connecting to RabbitMQ failed")
            && l.contains("fractile:***@127.0.0.1")
            && l.contains("retry_in")
            && l.contains("unreachable")
    });
    let (status, body) = http_get(&admin, "/readyz");
    assert_eq!(status, 503, "{body}");
    let (_, metrics) = http_get(&admin, "/metrics");
    assert!(metrics.contains("\nqueue_connected 0"), "{metrics}");
    assert!(
        !process.output().iter().any(|l| l.contains(password)),
        "the password was logged"
    );

    process.terminate();
    let status = process.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
}
