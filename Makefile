# The few commands people run. CI (.ci/run) calls the same ones.
.PHONY: run test bench browser-test lint ci

run:            ## serve the map at http://localhost:8080 (admin on :9000)
	cargo run --release -p fractile-api

test:           ## every Rust test
	cargo test --workspace

bench:          ## kernel and encoder benchmarks (figures in README.md)
	cargo bench -p fractile-render --bench render

browser-test:   ## headless Chromium opens the viewer; screenshots in crates/api/tests/browser/output
	crates/api/tests/browser/run.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

ci:             ## what CI runs, installs included
	.ci/run
