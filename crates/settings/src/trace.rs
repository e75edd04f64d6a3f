//! Tracing's settings: the OpenTelemetry SDK's standard `OTEL_*` variables, the one
//! exception to fractile's `FRACTILE_*` names (users and platforms already set these), read
//! and checked here like every other setting. The SDK would quietly ignore a value it cannot
//! use (a sampler name misspelt, a ratio of 2); fractile exits 2 naming the variable.
//!
//! Only what the processes use is read: where to send spans (`OTEL_EXPORTER_OTLP_ENDPOINT`
//! or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, OTLP over HTTP, `http://` only: this build has
//! no TLS), the service's name, the sampler and its argument, and resource attributes. An
//! empty value reads as unset, as the SDK reads it (compose files write unset variables
//! as empty ones).

use std::fmt;

/// Where spans go, OTLP over HTTP with protobuf bodies: `http://host:port[/path]`; empty
/// when the variable is set to nothing (unset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint(Option<url::Url>);

impl OtlpEndpoint {
    /// The URL, if one was given.
    pub fn url(&self) -> Option<&str> {
        self.0.as_ref().map(url::Url::as_str)
    }
}

impl fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url().unwrap_or(""))
    }
}

/// A value parser from a function, whose refusals name the variable as well as the flag
/// (clap's own name only the flag, and an operator sets these as variables) and never
/// quote the value (an endpoint may hold a credential).
#[derive(Clone, Copy)]
struct Named<T>(fn(&str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> clap::builder::TypedValueParser for Named<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        crate::secret::parse_quietly(cmd, arg, value, "it is not UTF-8", self.0)
    }
}

/// Parses an OTLP/HTTP endpoint; `""` reads as unset.
fn parse_endpoint(value: &str) -> Result<OtlpEndpoint, String> {
    if value.is_empty() {
        return Ok(OtlpEndpoint(None));
    }
    let url = url::Url::parse(value).map_err(|e| format!("{e}: want http://host:port"))?;
    match url.scheme() {
        "http" => {}
        "https" => return Err("https needs TLS, which this build does not include".into()),
        other => return Err(format!("scheme {other}: want http://host:port")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host: want http://host:port".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Never echo the value: it may hold a credential.
        return Err("credentials in the URL are not supported (and would be logged)".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a query or fragment is not part of an OTLP endpoint".into());
    }
    Ok(OtlpEndpoint(Some(url)))
}

/// The samplers of the OpenTelemetry specification (`OTEL_TRACES_SAMPLER`), by their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SamplerName {
    /// Every trace.
    #[value(name = "always_on")]
    AlwaysOn,
    /// No trace (context still travels, ids are still logged).
    #[value(name = "always_off")]
    AlwaysOff,
    /// The ratio `OTEL_TRACES_SAMPLER_ARG` of traces, by trace id.
    #[value(name = "traceidratio")]
    TraceIdRatio,
    /// The caller's decision when there is a caller; every root trace otherwise.
    #[value(name = "parentbased_always_on")]
    ParentBasedAlwaysOn,
    /// The caller's decision when there is a caller; no root trace otherwise.
    #[value(name = "parentbased_always_off")]
    ParentBasedAlwaysOff,
    /// The caller's decision when there is a caller; the ratio otherwise.
    #[value(name = "parentbased_traceidratio")]
    ParentBasedTraceIdRatio,
}

/// The sampling decision: which sampler, with its ratio where it takes one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Every trace.
    AlwaysOn,
    /// No trace.
    AlwaysOff,
    /// A ratio of traces, by trace id.
    Ratio(f64),
    /// The parent's decision, and for a root the inner one.
    ParentBased(RootSampling),
}

/// What a parent-based sampler decides for a trace without a parent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RootSampling {
    /// Sampled.
    AlwaysOn,
    /// Not sampled.
    AlwaysOff,
    /// A ratio, by trace id.
    Ratio(f64),
}

/// A sampler's name; `""` reads as unset (the default).
fn parse_sampler(value: &str) -> Result<SamplerName, String> {
    if value.is_empty() {
        return Ok(SamplerName::ParentBasedAlwaysOn);
    }
    <SamplerName as clap::ValueEnum>::from_str(value, false).map_err(|_| {
        format!(
            "{value:?} is not a sampler: want always_on, always_off, traceidratio, \
             parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
        )
    })
}

/// A sampler's ratio, from 0 to 1; empty when the variable is set to nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio(Option<f64>);

/// Parses a ratio; `""` reads as unset.
fn parse_ratio(value: &str) -> Result<Ratio, String> {
    if value.is_empty() {
        return Ok(Ratio(None));
    }
    let ratio: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number: want a ratio from 0 to 1"))?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(format!("{ratio} is outside 0 to 1"));
    }
    Ok(Ratio(Some(ratio)))
}

/// A resource attribute list, `key=value,key=value` (W3C Baggage syntax; values may be
/// percent-encoded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceAttributes(pub Vec<(String, String)>);

fn parse_resource_attributes(value: &str) -> Result<ResourceAttributes, String> {
    let mut pairs = Vec::new();
    for member in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let (key, raw) = member
            .split_once('=')
            .ok_or_else(|| format!("{member:?} has no `=`: want key=value,key=value"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("{member:?} has an empty key"));
        }
        let value = percent_decode(raw.trim())
            .ok_or_else(|| format!("the value of {key} has an invalid percent-encoding"))?;
        pairs.push((key.to_string(), value));
    }
    Ok(ResourceAttributes(pairs))
}

/// `%XX` escapes decoded, as UTF-8; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A service name: not empty once trimmed.
fn parse_service_name(value: &str) -> Result<String, String> {
    Ok(value.trim().to_string())
}

/// `OTEL_SDK_DISABLED`: `true` or `false`, any case; `""` reads as unset (`false`).
fn parse_disabled(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "" | "false" => Ok(false),
        "true" => Ok(true),
        _ => Err(format!("{value:?}: want true or false")),
    }
}

/// Tracing's settings (a clap argument group both binaries flatten, through
/// [`crate::ProcessArgs`]).
#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// `true` turns tracing off altogether: no spans, no trace context in or out, no trace
    /// ids in logs, and none of its cost on each request.
    #[arg(long = "otel-sdk-disabled", env = "OTEL_SDK_DISABLED", value_parser = Named(parse_disabled), default_value = "false", action = clap::ArgAction::Set)]
    pub sdk_disabled: bool,

    /// OTLP/HTTP base URL to send spans to (`http://collector:4318`; spans go to its
    /// `/v1/traces`). Unset: nothing is exported, but trace context still travels (HTTP in,
    /// AMQP out) and log lines still carry trace and span ids.
    #[arg(long = "otel-exporter-otlp-endpoint", env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = Named(parse_endpoint))]
    pub otlp_endpoint: Option<OtlpEndpoint>,

    /// OTLP/HTTP URL for spans, used as given (overrides the base URL's `/v1/traces`).
    #[arg(long = "otel-exporter-otlp-traces-endpoint", env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", value_parser = Named(parse_endpoint))]
    pub otlp_traces_endpoint: Option<OtlpEndpoint>,

    /// The service's name in traces (default: the binary's name).
    #[arg(long = "otel-service-name", env = "OTEL_SERVICE_NAME", value_parser = Named(parse_service_name))]
    pub service_name: Option<String>,

    /// Sampler: `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`,
    /// `parentbased_always_off`, `parentbased_traceidratio`.
    #[arg(long = "otel-traces-sampler", env = "OTEL_TRACES_SAMPLER", value_parser = Named(parse_sampler), default_value = "parentbased_always_on")]
    pub sampler: SamplerName,

    /// The ratio of the `*traceidratio` samplers, from 0 to 1 (default 1).
    #[arg(long = "otel-traces-sampler-arg", env = "OTEL_TRACES_SAMPLER_ARG", value_parser = Named(parse_ratio))]
    pub sampler_arg: Option<Ratio>,

    /// Resource attributes, `key=value,key=value` (`deployment.environment.name=demo`).
    #[arg(long = "otel-resource-attributes", env = "OTEL_RESOURCE_ATTRIBUTES", value_parser = Named(parse_resource_attributes))]
    pub resource_attributes: Option<ResourceAttributes>,
}

impl TraceArgs {
    /// Where spans are sent: the traces URL if set, else the base URL's `/v1/traces`;
    /// `None` when neither is set (nothing is exported) or tracing is off.
    pub fn traces_url(&self) -> Option<String> {
        if self.sdk_disabled {
            return None;
        }
        if let Some(url) = self
            .otlp_traces_endpoint
            .as_ref()
            .and_then(OtlpEndpoint::url)
        {
            return Some(url.to_string());
        }
        let base = self.otlp_endpoint.as_ref().and_then(OtlpEndpoint::url)?;
        let base = base.trim_end_matches('/');
        Some(format!("{base}/v1/traces"))
    }

    /// The service name: `OTEL_SERVICE_NAME`, else a `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES` (the specification's precedence), else `default` (the
    /// binary's name).
    pub fn service_name(&self, default: &str) -> String {
        let from_attributes = || {
            self.resource_attributes()
                .iter()
                .find(|(key, _)| key == "service.name")
                .map(|(_, value)| value.clone())
        };
        match self.service_name.as_deref() {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => from_attributes().unwrap_or_else(|| default.to_string()),
        }
    }

    /// The sampler the settings name, with its ratio (default 1).
    pub fn sampling(&self) -> Sampling {
        let ratio = self.ratio().unwrap_or(1.0);
        match self.sampler {
            SamplerName::AlwaysOn => Sampling::AlwaysOn,
            SamplerName::AlwaysOff => Sampling::AlwaysOff,
            SamplerName::TraceIdRatio => Sampling::Ratio(ratio),
            SamplerName::ParentBasedAlwaysOn => Sampling::ParentBased(RootSampling::AlwaysOn),
            SamplerName::ParentBasedAlwaysOff => Sampling::ParentBased(RootSampling::AlwaysOff),
            SamplerName::ParentBasedTraceIdRatio => {
                Sampling::ParentBased(RootSampling::Ratio(ratio))
            }
        }
    }

    /// The sampler's ratio, if one is set.
    fn ratio(&self) -> Option<f64> {
        self.sampler_arg.and_then(|ratio| ratio.0)
    }

    /// The resource attributes, in the order given.
    pub fn resource_attributes(&self) -> &[(String, String)] {
        self.resource_attributes
            .as_ref()
            .map_or(&[], |attributes| attributes.0.as_slice())
    }

    /// The checks that span settings: a ratio for a sampler that takes none is a mistake
    /// the SDK would ignore.
    pub fn check(&self) -> Result<(), String> {
        let takes_ratio = matches!(
            self.sampler,
            SamplerName::TraceIdRatio | SamplerName::ParentBasedTraceIdRatio
        );
        if self.ratio().is_some() && !takes_ratio {
            return Err(
                "OTEL_TRACES_SAMPLER_ARG is set but OTEL_TRACES_SAMPLER takes no ratio \
                 (only traceidratio and parentbased_traceidratio do)"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        trace: TraceArgs,
    }

    fn parse(args: &[&str]) -> Result<TraceArgs, String> {
        let cli = Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.trace.check()?;
        Ok(cli.trace)
    }

    #[test]
    fn defaults_export_nothing_and_follow_the_parent() {
        let t = parse(&[]).expect("defaults");
        assert_eq!(t.traces_url(), None);
        assert_eq!(t.sampling(), Sampling::ParentBased(RootSampling::AlwaysOn));
        assert_eq!(t.service_name("fractile-api"), "fractile-api");
        assert!(t.resource_attributes().is_empty());
    }

    #[test]
    fn the_traces_url_is_the_base_url_with_its_path_or_the_one_given() {
        let t = parse(&["--otel-exporter-otlp-endpoint", "http://collector:4318"]).expect("ok");
        assert_eq!(
            t.traces_url().as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        let t = parse(&["--otel-exporter-otlp-endpoint", "http://c:4318/otlp/"]).expect("ok");
        assert_eq!(
            t.traces_url().as_deref(),
            Some("http://c:4318/otlp/v1/traces")
        );
        let t = parse(&[
            "--otel-exporter-otlp-endpoint",
            "http://c:4318",
            "--otel-exporter-otlp-traces-endpoint",
            "http://other:4318/traces",
        ])
        .expect("ok");
        assert_eq!(t.traces_url().as_deref(), Some("http://other:4318/traces"));
        let t = parse(&["--otel-exporter-otlp-endpoint", ""]).expect("empty is unset");
        assert_eq!(t.traces_url(), None);
    }

    #[test]
    fn endpoints_the_exporter_cannot_use_are_refused() {
        for bad in [
            "https://collector:4318",
            "grpc://collector:4317",
            "collector:4318",
            "http://user:secret@collector:4318",
            "http://collector:4318/?x=1",
            "not a url",
        ] {
            let err = parse(&["--otel-exporter-otlp-endpoint", bad]).expect_err(bad);
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn samplers_by_their_specification_names() {
        let t = parse(&[
            "--otel-traces-sampler",
            "parentbased_traceidratio",
            "--otel-traces-sampler-arg",
            "0.01",
        ])
        .expect("ok");
        assert_eq!(
            t.sampling(),
            Sampling::ParentBased(RootSampling::Ratio(0.01))
        );
        let t = parse(&["--otel-traces-sampler", "traceidratio"]).expect("ok");
        assert_eq!(t.sampling(), Sampling::Ratio(1.0));
        assert_eq!(
            parse(&["--otel-traces-sampler", "always_off"])
                .expect("ok")
                .sampling(),
            Sampling::AlwaysOff
        );
        for bad in [
            &["--otel-traces-sampler", "AlwaysOn"][..],
            &["--otel-traces-sampler", "ratio"][..],
            &[
                "--otel-traces-sampler",
                "traceidratio",
                "--otel-traces-sampler-arg",
                "2",
            ][..],
            &[
                "--otel-traces-sampler",
                "traceidratio",
                "--otel-traces-sampler-arg",
                "x",
            ][..],
            &["--otel-traces-sampler-arg", "0.5"][..],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_sdk_can_be_turned_off_and_then_exports_nothing() {
        assert!(!parse(&[]).expect("default").sdk_disabled);
        let t = parse(&[
            "--otel-sdk-disabled",
            "TRUE",
            "--otel-exporter-otlp-endpoint",
            "http://c:4318",
        ])
        .expect("ok");
        assert!(t.sdk_disabled);
        assert_eq!(t.traces_url(), None);
        assert!(
            !parse(&["--otel-sdk-disabled", ""])
                .expect("empty")
                .sdk_disabled
        );
        assert!(parse(&["--otel-sdk-disabled", "yes"]).is_err());
    }

    #[test]
    fn resource_attributes_are_pairs_with_decoded_values() {
        let t = parse(&[
            "--otel-resource-attributes",
            "deployment.environment.name=demo, team=tiles%20and%20maps,",
        ])
        .expect("ok");
        assert_eq!(
            t.resource_attributes(),
            [
                ("deployment.environment.name".into(), "demo".into()),
                ("team".into(), "tiles and maps".into())
            ]
        );
        let named = parse(&["--otel-resource-attributes", "service.name=tiles"]).expect("ok");
        assert_eq!(named.service_name("fractile-api"), "tiles");
        let both = parse(&[
            "--otel-resource-attributes",
            "service.name=tiles",
            "--otel-service-name",
            "maps",
        ])
        .expect("ok");
        assert_eq!(both.service_name("fractile-api"), "maps");
        for bad in ["novalue", "=x", "k=%zz", "k=%ff"] {
            assert!(
                parse(&["--otel-resource-attributes", bad]).is_err(),
                "{bad}"
            );
        }
    }
}
