//! Embeds the source revision the binaries were built from (`FRACTILE_REVISION` at compile
//! time): the `FRACTILE_REVISION` environment variable when the build sets it (the Dockerfile
//! passes its `REVISION` build argument: the image's context has no `.git`), else
//! `git rev-parse --short=12 HEAD`, else `unknown`. Rebuilt when HEAD moves.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=FRACTILE_REVISION");
    let from_env = std::env::var("FRACTILE_REVISION")
        .ok()
        .filter(|r| !r.is_empty());
    let revision = from_env
        .clone()
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    // Only characters a label value and a version line can hold.
    let revision: String = revision
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-._".contains(*c))
        .collect();
    println!("cargo:rustc-env=FRACTILE_REVISION={revision}");
    if from_env.is_none() {
        for path in ["HEAD", "refs/heads", "packed-refs"] {
            if let Some(p) = git(&["rev-parse", "--git-path", path]) {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
}
