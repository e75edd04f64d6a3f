//! The SLOs and the alerts as files that cannot drift apart. Needs no service.
//!
//! - `deploy/prometheus/slo-rules.yml` is what the `slokit` crate generates from
//!   `deploy/slo/fractile.slo.yml` (recording rules over the SRE workbook's windows and the
//!   multi-window multi-burn-rate page and ticket alerts), with `${RUNBOOK_BASE}` replaced by
//!   `deploy/slo/runbook-base`. `FRACTILE_WRITE_SLO_RULES=1` writes it instead of comparing,
//!   and moves the hand-written alerts' runbook links to that base.
//! - Every alert of `alerts.yml` and `slo-rules.yml` has `severity` `page` or `ticket` and a
//!   `runbook_url` that is the base joined to a runbook under `docs/runbooks/`; every runbook
//!   there is some alert's, and is titled with its name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_norway::Value;

const SPEC: &str = "deploy/slo/fractile.slo.yml";
const BASE: &str = "deploy/slo/runbook-base";
const GENERATED: &str = "deploy/prometheus/slo-rules.yml";
const HAND_WRITTEN: &str = "deploy/prometheus/alerts.yml";
const RUNBOOKS: &str = "docs/runbooks";
const WRITE: &str = "FRACTILE_WRITE_SLO_RULES";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn runbook_base() -> String {
    read(BASE).trim().to_string()
}

/// The rules `slokit` generates from the spec, as the committed file holds them.
fn generated() -> String {
    let spec = read(SPEC).replace("${RUNBOOK_BASE}", &runbook_base());
    let spec = slokit::spec::Spec::from_yaml(&spec).expect("a valid SLO spec");
    let rules = slokit::generate::generate_rules(&spec).expect("rules generated");
    let yaml = rules.to_prometheus_yaml().expect("rules rendered");
    format!(
        "# Generated from {SPEC} by the slokit crate: do not edit.\n\
         # Regenerate: {WRITE}=1 cargo test -p fractile-system-tests --test slo\n{yaml}"
    )
}

#[test]
fn the_slo_rules_are_generated_from_the_spec() {
    let expected = generated();
    if std::env::var_os(WRITE).is_some() {
        std::fs::write(root().join(GENERATED), &expected).expect("write the rules");
        move_runbook_links(HAND_WRITTEN, &runbook_base());
        return;
    }
    assert!(
        read(GENERATED) == expected,
        "{GENERATED} is not what {SPEC} generates; run {WRITE}=1 cargo test -p \
         fractile-system-tests --test slo and commit the result"
    );
}

/// Rewrites the `runbook_url` annotations of `path` to start with `base`.
fn move_runbook_links(path: &str, base: &str) {
    let text = read(path);
    let moved: Vec<String> = text
        .lines()
        .map(|line| match line.split_once("runbook_url: ") {
            Some((indent, url)) => {
                let file = url.rsplit('/').next().unwrap_or(url);
                format!("{indent}runbook_url: {base}{file}")
            }
            None => line.to_string(),
        })
        .collect();
    std::fs::write(root().join(path), moved.join("\n") + "\n").expect("write the alerts");
}

/// An alerting rule: its name, labels and annotations.
type Alert = (String, BTreeMap<String, String>, BTreeMap<String, String>);

/// Every alerting rule of a rules file.
fn alerts(path: &str) -> Vec<Alert> {
    let doc: Value = serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let strings = |v: &Value| -> BTreeMap<String, String> {
        v.as_mapping()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut found = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            if let Some(name) = rule.get("alert").and_then(Value::as_str) {
                found.push((
                    name.to_string(),
                    strings(&rule["labels"]),
                    strings(&rule["annotations"]),
                ));
            }
        }
    }
    found
}

/// What is wrong with the alerts of `files` against the runbooks in `runbooks` (file name →
/// text), with links under `base`.
fn runbook_problems(
    files: &[(&str, Vec<Alert>)],
    runbooks: &BTreeMap<String, String>,
    base: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut named = BTreeSet::new();
    for (file, alerts) in files {
        for (name, labels, annotations) in alerts {
            named.insert(name.clone());
            let severity = labels.get("severity").map(String::as_str);
            if !matches!(severity, Some("page" | "ticket")) {
                problems.push(format!(
                    "{file}: {name} has severity {severity:?}, not page or ticket"
                ));
            }
            let Some(url) = annotations.get("runbook_url") else {
                problems.push(format!("{file}: {name} has no runbook_url"));
                continue;
            };
            let Some(runbook) = url.strip_prefix(base) else {
                problems.push(format!(
                    "{file}: {name}'s runbook_url {url} is not under {base}"
                ));
                continue;
            };
            match runbooks.get(runbook) {
                None => problems.push(format!("{file}: {name}'s runbook {runbook} does not exist")),
                Some(text) if text.lines().next() != Some(&format!("# {name}")) => problems.push(
                    format!("{runbook} is linked from {name} but not titled `# {name}`"),
                ),
                Some(_) => {}
            }
        }
    }
    for (runbook, text) in runbooks {
        let title = text.lines().next().and_then(|l| l.strip_prefix("# "));
        if !title.is_some_and(|t| named.contains(t)) {
            problems.push(format!(
                "{runbook} is titled {title:?}, which is no alert's name"
            ));
        }
    }
    problems
}

/// The runbooks, by file name (the index excluded).
fn runbooks() -> BTreeMap<String, String> {
    let dir = root().join(RUNBOOKS);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{RUNBOOKS}: {e}"))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .filter(|p| p.file_name().is_some_and(|n| n != "README.md"))
        .map(|p| {
            let name = p.file_name().expect("a name").to_string_lossy().to_string();
            let text = std::fs::read_to_string(&p).expect("a runbook");
            (name, text)
        })
        .collect()
}

#[test]
fn every_alert_has_a_severity_and_a_runbook_and_every_runbook_an_alert() {
    let files = [
        (HAND_WRITTEN, alerts(HAND_WRITTEN)),
        (GENERATED, alerts(GENERATED)),
    ];
    assert!(files.iter().all(|(_, alerts)| !alerts.is_empty()));
    let problems = runbook_problems(&files, &runbooks(), &runbook_base());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_missing_runbook_a_stray_one_and_a_bad_severity_are_caught() {
    let base = "https://example.org/runbooks/";
    let alert = |name: &str, severity: &str, runbook: Option<&str>| {
        let labels = BTreeMap::from([("severity".to_string(), severity.to_string())]);
        let annotations = runbook
            .map(|r| BTreeMap::from([("runbook_url".to_string(), format!("{base}{r}"))]))
            .unwrap_or_default();
        (name.to_string(), labels, annotations)
    };
    let runbooks = BTreeMap::from([
        ("good.md".to_string(), "# Good\n".to_string()),
        ("mistitled.md".to_string(), "# Other\n".to_string()),
        ("stray.md".to_string(), "# NoSuchAlert\n".to_string()),
    ]);
    let files = [(
        "rules.yml",
        vec![
            alert("Good", "page", Some("good.md")),
            alert("Unlinked", "ticket", None),
            alert("Missing", "ticket", Some("missing.md")),
            alert("Warned", "warning", Some("good.md")),
            alert("Mistitled", "page", Some("mistitled.md")),
        ],
    )];
    let problems = runbook_problems(&files, &runbooks, base);
    let expected = [
        "Unlinked has no runbook_url",
        "Missing's runbook missing.md does not exist",
        "Warned has severity Some(\"warning\")",
        "mistitled.md is linked from Mistitled",
        "good.md is linked from Warned",
        "stray.md is titled Some(\"NoSuchAlert\")",
        "mistitled.md is titled Some(\"Other\")",
    ];
    for what in expected {
        assert!(
            problems.iter().any(|p| p.contains(what)),
            "{what}: {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
}
