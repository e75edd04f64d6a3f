# The few commands people run. CI (.ci/run) calls the same ones.
.PHONY: run test bench fuzz browser-test schemathesis clients-test openapi-lint deny lint validate k8s-validate e2e drill flood experiments stack-up stack-down ci

run:            ## serve the map at http://localhost:8080 (admin on :9000)
	cargo run --release -p fractile-api

test:           ## every Rust test, the ones that need Redis and RabbitMQ included (ignored by a plain cargo test)
	cargo test --locked --workspace -- --include-ignored

bench:          ## kernel, encoder and tile-bytes benchmarks (figures in README.md)
	cargo bench -p fractile-render

fuzz:           ## each cargo-fuzz target for FUZZ_SECONDS (default 300) on a copy of its corpus
	fuzz/run.sh

browser-test:   ## headless Chromium: the viewer, MapLibre GL and OpenLayers; screenshots in crates/api/tests/browser/output
	crates/api/tests/browser/run.sh

schemathesis:   ## schemathesis against the OpenAPI document: api + worker on Redis and RabbitMQ
	crates/api/tests/schemathesis/run.sh

clients-test:   ## real map clients read the metadata: OWSLib, and GDAL (gdal-bin) against the tiles
	crates/api/tests/clients/run.sh

openapi-lint:   ## redocly's recommended rules on the OpenAPI document (needs node, npm)
	crates/api/tests/redocly/run.sh

deny:           ## the dependency policy: licences, bans, sources (deny.toml; needs cargo-deny 0.18.9)
	cargo deny --locked check licenses bans sources

lint:
	cargo fmt --all --check
	cargo fmt --manifest-path fuzz/Cargo.toml --all --check
	cargo clippy --workspace --all-targets -- -D warnings

validate:       ## static checks of deploy/: compose, hadolint, nginx -t, promtool, dashboard
	deploy/validate.sh

k8s-validate:   ## k8s/: kustomize builds, schemas, checkov, promtool; the manifests against the binaries
	k8s/validate.sh
	cargo build -p fractile-api -p fractile-worker
	# .venv-tools/ (if k8s/validate.sh made one for PyYAML) first, as in the script.
	PATH="$(CURDIR)/.venv-tools/bin:$$PATH" python3 k8s/check_manifests.py drift \
	  --negative-fixture k8s/tests/alerts-unknown-metric.yml --drifted-fixture k8s/tests/drifted

e2e:            ## the whole topology as local processes, end to end
	deploy/local/e2e.sh

drill:          ## each fault on the local topology makes its alerts' expressions true (about 9 minutes)
	deploy/local/drill.sh

flood:          ## 1,200 connections of new tiles through nginx for 30 s: nothing but tiles and the api's 503s
	loadtests/flood.sh check

experiments:    ## the checklist experiments (about 6 minutes); rewrites loadtests/reports/
	loadtests/run-experiments.sh

stack-up:       ## the topology as local processes (no Docker): map on :8080, Prometheus on :9090
	deploy/local/start.sh

stack-down:
	deploy/local/stop.sh

ci:             ## what CI runs, installs included
	.ci/run
