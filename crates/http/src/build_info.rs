//! What a binary is: its version and the source revision it was built from (`build.rs`),
//! shown by `--version`, in `/readyz`'s body, and as the `fractile_build_info` gauge, so a
//! dashboard or an operator can tell which build each replica runs.

use prometheus::{IntGaugeVec, Opts, Registry};

/// The crate version (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The source revision (`git rev-parse --short=12 HEAD`, or the build's `FRACTILE_REVISION`;
/// `unknown` when neither was available).
pub const REVISION: &str = env!("FRACTILE_REVISION");
/// `--version`'s text: the version and the revision.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("FRACTILE_REVISION"),
    ")"
);

/// Registers `fractile_build_info{version, revision}`, always 1.
pub fn register(registry: &Registry) -> Result<(), prometheus::Error> {
    let info = IntGaugeVec::new(
        Opts::new(
            "fractile_build_info",
            "The build this process runs: its version and source revision (always 1).",
        ),
        &["version", "revision"],
    )?;
    info.with_label_values(&[VERSION, REVISION]).set(1);
    registry.register(Box::new(info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_line_names_both() {
        assert!(VERSION_LINE.starts_with(VERSION));
        assert!(VERSION_LINE.contains(REVISION));
        assert!(!REVISION.is_empty());
    }

    #[test]
    fn the_gauge_carries_the_build() {
        let registry = Registry::new();
        register(&registry).expect("registers");
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("encodes");
        assert!(
            text.contains(&format!(
                "fractile_build_info{{revision=\"{REVISION}\",version=\"{VERSION}\"}} 1"
            )),
            "{text}"
        );
    }
}
