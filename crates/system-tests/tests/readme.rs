//! README.md against the binaries, so that the two cannot drift apart. Needs no service.
//!
//! - Settings: every `FRACTILE_*` variable of the api's and the worker's clap `Config` (what
//!   `--help` prints) is in the Configuration section, the api's as a table row with its flag
//!   and default; every row and every name of the worker's paragraph is a setting of that
//!   binary; every other `FRACTILE_*` name in the README is one too, or one of
//!   [`OTHER_VARIABLES`].
//! - Metrics: every name the README lists for a binary (the api's "Metrics:" paragraph, the
//!   worker's "Its metrics:") is registered by it, a labelled metric without a child
//!   included (a probe registration fails); every metric the binary exports is listed: the
//!   families its `/metrics` shows after a few requests, and every metric-like string literal
//!   of `crates/*/src` its registry holds (labelled metrics that no request created yet).
//! - Routes: every `METHOD /path` of the HTTP API section reaches a handler of the api's
//!   traffic router, or of its admin router when the paragraph is about the admin port: no
//!   405, no fallback.
//!
//! The api runs in distributed mode against closed ports (it serves without Redis and
//! RabbitMQ), so its Redis and queue metrics exist. `a_drifted_readme_is_caught` runs the same
//! checks on a small README with one drift of each kind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use clap::CommandFactory;
use fractile_api::AppState;
use fractile_test_support::{body_bytes, closed_port, get, oneshot};
use prometheus::{IntGauge, Registry};

/// `FRACTILE_*` names the README uses that are no binary's setting, each with a file that
/// reads it (the test checks that it still does, and that the README still uses the name).
const OTHER_VARIABLES: &[(&str, &str)] = &[
    // The service tests' Redis and RabbitMQ (Development).
    (
        "FRACTILE_TEST_REDIS_URL",
        "crates/test-support/src/services.rs",
    ),
    (
        "FRACTILE_TEST_AMQP_URL",
        "crates/test-support/src/services.rs",
    ),
    // deploy/kind/load.sh: the load test's profile and scenario.
    ("FRACTILE_LOAD_PROFILE", "deploy/kind/load.sh"),
    ("FRACTILE_LOAD_SCENARIO", "deploy/kind/load.sh"),
    // deploy/kind/up.sh: the overlay it applies.
    ("FRACTILE_OVERLAY", "deploy/kind/up.sh"),
    // deploy/local/start.sh: fault injection in the local topology.
    ("FRACTILE_LOCAL_FAULTS", "deploy/local/start.sh"),
    // Rewrites the committed OpenAPI document (HTTP API).
    ("FRACTILE_WRITE_OPENAPI", "crates/api/tests/api/openapi.rs"),
    // The source revision a build embeds (crates/http/build.rs; HTTP API, admin port).
    ("FRACTILE_REVISION", "crates/http/build.rs"),
    // The compose file's collector image (The demo stack: images from a mirror).
    ("OTEL_COLLECTOR_IMAGE", "docker-compose.yml"),
    // Regenerates the SLO rules (SLOs and alerts).
    (
        "FRACTILE_WRITE_SLO_RULES",
        "crates/system-tests/tests/slo.rs",
    ),
];

/// Exported metrics the README names by example only ("the process collector's
/// `process_cpu_seconds_total`, `process_resident_memory_bytes` and others"): the
/// prometheus crate's process collector, which both binaries register.
const COLLECTOR_PREFIXES: &[&str] = &["process_"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

// ---------------------------------------------------------------------------------------
// Extraction from the README's text.

/// The `## {title}` section, up to the next `## ` heading.
fn section<'a>(readme: &'a str, title: &str) -> Option<&'a str> {
    let heading = format!("## {title}\n");
    let start = readme.find(&heading)? + heading.len();
    let rest = &readme[start..];
    let end = rest.find("\n## ").map_or(rest.len(), |i| i + 1);
    Some(&rest[..end])
}

/// The paragraphs of `text` (blank-line separated; a list is one paragraph).
fn paragraphs(text: &str) -> impl Iterator<Item = &str> {
    text.split("\n\n").map(str::trim).filter(|p| !p.is_empty())
}

/// Every `` `code` `` span of `text` that is outside parentheses: in the metric paragraphs,
/// a parenthesis holds label values or remarks (`` (`ok`, `rejected`) ``), not names.
fn top_level_code(text: &str) -> Vec<&str> {
    let (mut spans, mut depth, mut open) = (Vec::new(), 0_i32, None);
    for (i, c) in text.char_indices() {
        match (c, open) {
            ('`', None) => open = Some(i + 1),
            ('`', Some(start)) => {
                if depth == 0 {
                    spans.push(&text[start..i]);
                }
                open = None;
            }
            ('(', None) => depth += 1,
            (')', None) => depth -= 1,
            _ => {}
        }
    }
    spans
}

/// The metric names `paragraph` lists: top-level code spans that look like a metric
/// (lower case, an underscore), labels dropped. `http_connections_*` stays a wildcard.
fn metric_names(paragraph: &str) -> BTreeSet<String> {
    top_level_code(paragraph)
        .into_iter()
        .map(|span| span.split('{').next().unwrap_or(span))
        .filter(|name| {
            name.starts_with(|c: char| c.is_ascii_lowercase())
                && name.contains('_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '*')
        })
        .map(str::to_owned)
        .collect()
}

/// Every setting name in `text`: `FRACTILE_[A-Z0-9_]+`, and `OTEL_[A-Z0-9_]+` (tracing's
/// standard variables, the one exception to the prefix).
fn fractile_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in SETTING_PREFIXES {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            // Only a name's start: `XOTEL_` is not a setting.
            let starts = rest[..i]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            let tail = &rest[i + prefix.len()..];
            let len = tail
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            let name = tail[..len].trim_end_matches('_');
            if starts && !name.is_empty() {
                names.insert(format!("{prefix}{name}"));
            }
            rest = tail;
        }
    }
    names
}

/// The prefixes of setting names.
const SETTING_PREFIXES: [&str; 2] = ["FRACTILE_", "OTEL_"];

/// A row of the Configuration table: flag and default cells as written.
#[derive(Debug, PartialEq)]
struct Row {
    flag: String,
    default: String,
}

/// The Configuration table's rows, by variable.
fn table_rows(configuration: &str) -> BTreeMap<String, Row> {
    configuration
        .lines()
        .filter(|line| {
            SETTING_PREFIXES
                .iter()
                .any(|prefix| line.starts_with(&format!("| `{prefix}")))
        })
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (variable, flag, default) = (cells.get(1)?, cells.get(2)?, cells.get(3)?);
            Some((
                variable.trim_matches('`').to_owned(),
                Row {
                    flag: flag.trim_matches('`').to_owned(),
                    default: (*default).to_owned(),
                },
            ))
        })
        .collect()
}

/// A route the README lists, and which port serves it.
#[derive(Debug, PartialEq)]
struct RouteRef {
    method: Method,
    path: String,
    admin: bool,
}

/// Every `` `METHOD /path` `` of `http_api`, on the admin port when its paragraph says so.
fn routes(http_api: &str) -> Vec<RouteRef> {
    let mut found = Vec::new();
    for paragraph in paragraphs(http_api) {
        let admin = paragraph.to_lowercase().contains("admin port");
        for span in paragraph.split('`').skip(1).step_by(2) {
            let Some((method, path)) = span.split_once(' ') else {
                continue;
            };
            let Ok(method) = method.parse::<Method>() else {
                continue;
            };
            if method.as_str().chars().all(|c| c.is_ascii_uppercase()) && path.starts_with('/') {
                let path = path.split('?').next().unwrap_or(path).to_owned();
                found.push(RouteRef {
                    method,
                    path,
                    admin,
                });
            }
        }
    }
    found
}

/// `path` with its `{placeholders}` filled in: a tile that exists, any seed id.
fn concrete(path: &str) -> String {
    path.replace("{z}", "1")
        .replace("{x}", "0")
        .replace("{y}", "0")
        .replace("{id}", "readme-check")
}

// ---------------------------------------------------------------------------------------
// The binaries' side.

/// One setting as clap has it: the flag and the default `--help` shows.
struct Setting {
    flag: String,
    default: Option<String>,
}

fn settings(command: &clap::Command) -> BTreeMap<String, Setting> {
    command
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_owned();
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let setting = Setting {
                flag: arg.get_long().map(|l| format!("--{l}")).unwrap_or_default(),
                default: (!defaults.is_empty()).then(|| defaults.join(",")),
            };
            Some((env, setting))
        })
        .collect()
}

/// A binary's metrics: its registry, and what it exports.
struct Metrics {
    registry: Registry,
    exported: BTreeSet<String>,
}

impl Metrics {
    /// `registry` and the families of `exposition` (its `/metrics`), plus every string
    /// literal of the source that `registry` holds: a labelled metric no request created a
    /// child of yet is in the registry but not in `/metrics`.
    fn new(registry: Registry, exposition: &str, literals: &BTreeSet<String>) -> Self {
        let mut metrics = Metrics {
            registry,
            exported: exposition
                .lines()
                .filter_map(|line| line.strip_prefix("# TYPE "))
                .filter_map(|rest| rest.split(' ').next())
                .map(str::to_owned)
                .collect(),
        };
        let registered: Vec<String> = literals
            .iter()
            .filter(|name| metrics.registers(name))
            .cloned()
            .collect();
        metrics.exported.extend(registered);
        metrics
    }

    /// Whether a metric named `name` is registered: a gauge of that name cannot be.
    fn registers(&self, name: &str) -> bool {
        let Ok(probe) = IntGauge::new(name, "README probe") else {
            return false;
        };
        match self.registry.register(Box::new(probe.clone())) {
            Ok(()) => {
                let _ = self.registry.unregister(Box::new(probe));
                false
            }
            Err(_) => true,
        }
    }
}

/// The `"lower_case_with_underscores"` string literals of the crates' sources.
fn metric_like_literals() -> BTreeSet<String> {
    let mut files = Vec::new();
    let crates = root().join("crates");
    for entry in std::fs::read_dir(&crates).expect("crates/").flatten() {
        rust_files(&entry.path().join("src"), &mut files);
    }
    let mut literals = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("utf-8 source");
        for piece in text.split('"') {
            let looks_like_a_metric = piece.starts_with(|c: char| c.is_ascii_lowercase())
                && piece.contains('_')
                && piece
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if looks_like_a_metric {
                literals.insert(piece.to_owned());
            }
        }
    }
    literals
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Both binaries as the checks see them.
struct Binaries {
    api_settings: BTreeMap<String, Setting>,
    worker_settings: BTreeMap<String, Setting>,
    api: Metrics,
    worker: Metrics,
    state: AppState,
    traffic: Router,
    admin: Router,
    _worker: fractile_worker::Worker,
}

impl Binaries {
    /// The api in distributed mode (Redis and RabbitMQ on closed ports) after a hit, a miss
    /// and a 404, and a worker as configured before it connects.
    async fn start() -> Self {
        let redis = format!("redis://127.0.0.1:{}", closed_port());
        let amqp = format!("amqp://127.0.0.1:{}/%2f", closed_port());
        let literals = metric_like_literals();

        let config = fractile_api::Config::try_load_from([
            "fractile-api",
            "--redis-url",
            &redis,
            "--amqp-url",
            &amqp,
            "--render-threads",
            "1",
        ])
        .expect("api settings");
        let state = AppState::connect(&config).await.expect("api state");
        let traffic = fractile_api::app::app(state.clone());
        let admin = fractile_api::admin::admin_app(state.clone());
        for uri in ["/tiles/1/0/0.png", "/tiles/1/0/0.png", "/readme-check"] {
            oneshot(&traffic, get(uri)).await;
        }
        let exposition = text(oneshot(&admin, get("/metrics")).await).await;
        let api = Metrics::new(state.metrics.registry().clone(), &exposition, &literals);

        let worker_config = <fractile_worker::Config as clap::Parser>::try_parse_from([
            "fractile-worker",
            "--redis-url",
            &redis,
            "--amqp-url",
            &amqp,
            "--render-threads",
            "1",
        ])
        .expect("worker settings");
        let worker = fractile_worker::Worker::new(worker_config).expect("worker");
        let worker_metrics = worker.metrics();
        let exposition = worker_metrics.encode().expect("worker metrics encode");
        let worker_side = Metrics::new(worker_metrics.registry().clone(), &exposition, &literals);

        Binaries {
            api_settings: settings(&fractile_api::Config::command()),
            worker_settings: settings(&fractile_worker::Config::command()),
            api,
            worker: worker_side,
            state,
            traffic,
            admin,
            _worker: worker,
        }
    }

    /// Traffic requests that reached the router's fallback so far.
    fn unmatched(&self) -> u64 {
        ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .iter()
            .map(|class| {
                self.state
                    .metrics
                    .requests
                    .with_label_values(&["unmatched", class])
                    .get()
            })
            .sum()
    }
}

impl Drop for Binaries {
    fn drop(&mut self) {
        self.state.background.cancel();
    }
}

async fn text(response: axum::http::Response<Body>) -> String {
    String::from_utf8_lossy(&body_bytes(response).await).into_owned()
}

// ---------------------------------------------------------------------------------------
// The checks: each returns what disagrees, in words.

fn setting_problems(readme: &str, b: &Binaries) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(configuration) = section(readme, "Configuration") else {
        return vec!["no \"## Configuration\" section".into()];
    };
    let rows = table_rows(configuration);
    for (name, setting) in &b.api_settings {
        let Some(row) = rows.get(name) else {
            problems.push(format!(
                "api setting {name} has no row in the Configuration table"
            ));
            continue;
        };
        if row.flag != setting.flag {
            problems.push(format!(
                "{name}: the table says flag `{}`, the api's is `{}`",
                row.flag, setting.flag
            ));
        }
        let written = row
            .default
            .strip_prefix('`')
            .and_then(|d| d.strip_suffix('`'));
        if written != setting.default.as_deref() {
            problems.push(format!(
                "{name}: the table says default {}, the api's --help {}",
                row.default,
                setting
                    .default
                    .as_deref()
                    .map_or("has none".to_owned(), |d| format!("says `{d}`"))
            ));
        }
    }
    for name in rows.keys() {
        if !b.api_settings.contains_key(name) {
            problems.push(format!(
                "the Configuration table has {name}, which is no api setting"
            ));
        }
    }
    let worker_paragraph = paragraphs(configuration).find(|p| p.starts_with("The worker ("));
    match worker_paragraph {
        None => problems.push("no paragraph \"The worker (\" in Configuration".into()),
        Some(paragraph) => {
            for name in fractile_names(paragraph) {
                if !b.worker_settings.contains_key(&name) {
                    problems.push(format!(
                        "the worker's paragraph names {name}, which is no worker setting"
                    ));
                }
            }
        }
    }
    let documented = fractile_names(configuration);
    for name in b.worker_settings.keys() {
        if !documented.contains(name) {
            problems.push(format!(
                "worker setting {name} is not in the Configuration section"
            ));
        }
    }
    for name in fractile_names(readme) {
        let known = b.api_settings.contains_key(&name)
            || b.worker_settings.contains_key(&name)
            || OTHER_VARIABLES.iter().any(|(other, _)| *other == name);
        if !known {
            problems.push(format!(
                "the README names {name}, which is no setting of either binary"
            ));
        }
    }
    problems
}

fn metric_problems(readme: &str, b: &Binaries) -> Vec<String> {
    let mut problems = Vec::new();
    let api_list = section(readme, "HTTP API")
        .and_then(|s| paragraphs(s).find(|p| p.starts_with("Metrics:")))
        .map(metric_names);
    // The worker's list ends its paragraph, after "Its metrics:" (line breaks anywhere).
    let worker_list = section(readme, "Configuration").and_then(|s| {
        paragraphs(s)
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .find_map(|p| {
                p.split_once("Its metrics:")
                    .map(|(_, list)| metric_names(list))
            })
    });
    for (binary, list, metrics, anchor) in [
        ("api", api_list, &b.api, "\"Metrics:\" in HTTP API"),
        (
            "worker",
            worker_list,
            &b.worker,
            "\"Its metrics:\" in Configuration",
        ),
    ] {
        let Some(list) = list else {
            problems.push(format!(
                "no {anchor} paragraph listing the {binary}'s metrics"
            ));
            continue;
        };
        let wildcards: Vec<&str> = list.iter().filter_map(|n| n.strip_suffix('*')).collect();
        for name in &list {
            let present = match name.strip_suffix('*') {
                Some(prefix) => metrics.exported.iter().any(|e| e.starts_with(prefix)),
                None => metrics.registers(name),
            };
            if !present {
                problems.push(format!(
                    "the README lists `{name}` for the {binary}, which does not export it"
                ));
            }
        }
        for name in &metrics.exported {
            let listed = list.contains(name)
                || wildcards.iter().any(|w| name.starts_with(w))
                || COLLECTOR_PREFIXES.iter().any(|p| name.starts_with(p));
            if !listed {
                problems.push(format!(
                    "the {binary} exports `{name}`, which the README's list ({anchor}) lacks"
                ));
            }
        }
    }
    problems
}

async fn route_problems(readme: &str, b: &Binaries) -> Vec<String> {
    let Some(http_api) = section(readme, "HTTP API") else {
        return vec!["no \"## HTTP API\" section".into()];
    };
    let listed = routes(http_api);
    if listed.is_empty() {
        return vec!["no `METHOD /path` in the HTTP API section".into()];
    }
    let mut problems = Vec::new();
    for route in listed {
        let request = Request::builder()
            .method(route.method.clone())
            .uri(concrete(&route.path))
            .body(Body::empty())
            .expect("valid request");
        let (port, reached) = if route.admin {
            let status = oneshot(&b.admin, request).await.status();
            let reached =
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED;
            (("admin", status), reached)
        } else {
            let before = b.unmatched();
            let status = oneshot(&b.traffic, request).await.status();
            let reached = status != StatusCode::METHOD_NOT_ALLOWED && b.unmatched() == before;
            (("traffic", status), reached)
        };
        if !reached {
            problems.push(format!(
                "the README lists `{} {}`, which the {} router does not route ({})",
                route.method, route.path, port.0, port.1
            ));
        }
    }
    problems
}

async fn drift(readme: &str, b: &Binaries) -> Vec<String> {
    let mut problems = setting_problems(readme, b);
    problems.extend(metric_problems(readme, b));
    problems.extend(route_problems(readme, b).await);
    problems
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_readme_matches_the_binaries() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let binaries = Binaries::start().await;
    let problems = drift(&readme, &binaries).await;
    assert!(
        problems.is_empty(),
        "README.md and the binaries disagree:\n  {}",
        problems.join("\n  ")
    );
    // What the checks stand on is really there: not an empty list that passes.
    assert!(binaries.api_settings.len() > 30 && binaries.worker_settings.len() > 10);
    assert!(binaries.api.exported.len() > 25 && binaries.worker.exported.len() > 15);
    let http_api = section(&readme, "HTTP API").expect("section");
    assert!(routes(http_api).len() >= 10, "{:?}", routes(http_api));
    // Each exception is still needed and still true.
    for (name, file) in OTHER_VARIABLES {
        assert!(readme.contains(name), "{name} is no longer in README.md");
        let source = std::fs::read_to_string(root().join(file)).expect("allowlisted file");
        assert!(source.contains(name), "{file} no longer reads {name}");
    }
}

/// One drift of each kind, and names that must not count (label values in parentheses).
const DRIFTED: &str = "# fractile

## HTTP API

Traffic port:

- `GET /tiles/{z}/{x}/{y}.png?style=fire`: a tile.
- `GET /not-a-route`: nothing serves it.
- `PATCH /`: the viewer takes GET only.

Admin port: `GET /metrics`, `GET /nowhere`.

Metrics: `http_requests_total{route,status}` (`result` = `not_a_metric`),
`made_up_seconds{le}`, `http_connections_*{listener}`.

## Configuration

| variable | flag | default | meaning |
| --- | --- | --- | --- |
| `FRACTILE_LISTEN` | `--listen` | `0.0.0.0:9999` | a wrong default |
| `FRACTILE_MAX_ZOOM` | `--zoom` | `24` | a wrong flag |
| `FRACTILE_RENDER_THREADS` | `--render-threads` | CPUs available | right |
| `FRACTILE_NOT_A_SETTING` | `--not-a-setting` | unset | made up |

The worker (`--help`) takes `FRACTILE_AMQP_URL`, `FRACTILE_L1_BYTES` and the rest. Its
metrics: `worker_jobs_consumed_total{queue}`, `no_such_worker_metric`.

Elsewhere: `FRACTILE_UNHEARD_OF`.
";

#[test]
fn extraction_finds_what_the_readme_lists() {
    let http_api = section(DRIFTED, "HTTP API").expect("section");
    assert!(!http_api.contains("## Configuration"), "{http_api}");
    let metrics = paragraphs(http_api)
        .find(|p| p.starts_with("Metrics:"))
        .map(metric_names)
        .expect("paragraph");
    let expected = [
        "http_requests_total",
        "made_up_seconds",
        "http_connections_*",
    ];
    assert_eq!(metrics, expected.iter().map(|s| s.to_string()).collect());
    let found: Vec<(String, String, bool)> = routes(http_api)
        .into_iter()
        .map(|r| (r.method.to_string(), r.path, r.admin))
        .collect();
    let want = [
        ("GET", "/tiles/{z}/{x}/{y}.png", false),
        ("GET", "/not-a-route", false),
        ("PATCH", "/", false),
        ("GET", "/metrics", true),
        ("GET", "/nowhere", true),
    ];
    let want: Vec<(String, String, bool)> = want
        .iter()
        .map(|(m, p, a)| (m.to_string(), p.to_string(), *a))
        .collect();
    assert_eq!(found, want);
    let rows = table_rows(section(DRIFTED, "Configuration").expect("section"));
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows["FRACTILE_MAX_ZOOM"],
        Row {
            flag: "--zoom".into(),
            default: "`24`".into()
        }
    );
    assert_eq!(fractile_names("`FRACTILE_*` and FRACTILE_A_B.").len(), 1);
}

#[tokio::test]
async fn a_drifted_readme_is_caught() {
    let binaries = Binaries::start().await;
    let problems = drift(DRIFTED, &binaries).await;
    let report = problems.join("\n");
    for expected in [
        // settings, both directions, flags and defaults
        "api setting FRACTILE_REDIS_URL has no row",
        "the Configuration table has FRACTILE_NOT_A_SETTING",
        "FRACTILE_MAX_ZOOM: the table says flag `--zoom`, the api's is `--max-zoom`",
        "FRACTILE_LISTEN: the table says default `0.0.0.0:9999`, the api's --help says `0.0.0.0:8080`",
        "the worker's paragraph names FRACTILE_L1_BYTES, which is no worker setting",
        "worker setting FRACTILE_WORKER_ID is not in the Configuration section",
        "the README names FRACTILE_UNHEARD_OF",
        // metrics, both directions
        "the README lists `made_up_seconds` for the api",
        "the api exports `http_requests_in_flight`",
        "the api exports `render_jobs_published_total`",
        "the README lists `no_such_worker_metric` for the worker",
        "the worker exports `worker_retries_total`",
        // routes: the fallback, a method the route lacks, the admin port
        "`GET /not-a-route`, which the traffic router does not route (404 Not Found)",
        "`PATCH /`, which the traffic router does not route (405 Method Not Allowed)",
        "`GET /nowhere`, which the admin router does not route (404 Not Found)",
    ] {
        assert!(
            report.contains(expected),
            "expected {expected:?} among:\n{report}"
        );
    }
    for fine in [
        "not_a_metric",
        "`http_requests_total`",
        "the api exports `http_connections_",
        "FRACTILE_RENDER_THREADS",
        "/tiles/",
        "`GET /metrics`",
    ] {
        assert!(
            !report.contains(fine),
            "{fine:?} was reported, wrongly:\n{report}"
        );
    }
}
