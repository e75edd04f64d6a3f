//! URLs that may carry a password (`redis://:pw@host`, `amqp://user:pw@host/vhost`): the
//! settings hold them as [`SecretUrl`], whose `Debug` and `Display` hide the password, so a
//! logged or printed configuration never leaks it; only [`SecretUrl::expose`] gives the
//! full text, to the client that connects with it. [`UrlParser`] reads them from clap and
//! checks them once, at start-up: a bad URL stops the process with one error that names its
//! variable and shows the URL with its password hidden.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

/// A connection URL whose password never reaches `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The URL with its password, for the client that connects with it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for SecretUrl {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretUrl::new(s))
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        SecretUrl(url)
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> Self {
        SecretUrl::new(url)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&redact_url(&self.0), f)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// The clap parser of a URL setting: it must parse as a URL with a host and one of
/// `schemes`. The error names the variable (and flag) and shows the URL with its password
/// hidden; clap's own errors quote the raw value, password included.
///
/// An empty value (`FRACTILE_REDIS_URL=`, as a Docker `.env` file writes an unset one) is
/// refused by [`UrlParser::required`]; an [`UrlParser::optional`] setting passes it through
/// as an empty [`SecretUrl`] (see [`SecretUrl::is_empty`]), for the configuration to read as
/// unset.
#[derive(Debug, Clone, Copy)]
pub struct UrlParser {
    schemes: &'static [&'static str],
    empty_is_unset: bool,
}

impl UrlParser {
    /// A setting that must be given: empty is an error.
    pub const fn required(schemes: &'static [&'static str]) -> Self {
        UrlParser {
            schemes,
            empty_is_unset: false,
        }
    }

    /// A setting that may be left unset: empty means unset.
    pub const fn optional(schemes: &'static [&'static str]) -> Self {
        UrlParser {
            schemes,
            empty_is_unset: true,
        }
    }

    /// Checks `value`; the reason for a refusal never shows a password.
    pub fn check(&self, value: &str) -> Result<SecretUrl, String> {
        let value = value.trim();
        let schemes = self
            .schemes
            .iter()
            .map(|s| format!("{s}://"))
            .collect::<Vec<_>>()
            .join(" or ");
        if value.is_empty() {
            return if self.empty_is_unset {
                Ok(SecretUrl::new(""))
            } else {
                Err(format!("it is empty; set a URL starting with {schemes}"))
            };
        }
        let shown = redact_invalid(value);
        let parsed = url::Url::parse(value).map_err(|e| format!("`{shown}`: {e}"))?;
        if !self.schemes.contains(&parsed.scheme()) {
            return Err(format!("`{shown}` does not start with {schemes}"));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!("`{shown}` has no host"));
        }
        Ok(SecretUrl::new(value))
    }
}

impl clap::builder::TypedValueParser for UrlParser {
    type Value = SecretUrl;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<SecretUrl, clap::Error> {
        let checked = value
            .to_str()
            .ok_or_else(|| "it is not UTF-8".to_owned())
            .and_then(|v| self.check(v));
        checked.map_err(|why| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "invalid value for {}: {why}\n",
                    crate::secret::setting_name(arg)
                ),
            )
            .with_cmd(cmd)
        })
    }
}

impl SecretUrl {
    /// Whether the value is empty: an optional setting given as `VAR=` (see [`UrlParser`]).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// [`redact_url`] for a value that may not even be a URL: `user:pw@host` (no scheme) shows as
/// `***@host`.
fn redact_invalid(value: &str) -> String {
    if !value.contains("://")
        && let Some((_, host)) = value.rsplit_once('@')
    {
        return format!("***@{host}");
    }
    redact_url(value)
}

/// `url` with its password replaced by `***`, for logs: `amqp://user:***@host:5672/%2f`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The authority ends at the first `/`, `?` or `#`; credentials end at its last `@`.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split_once(':').map_or(credentials, |(u, _)| u);
            let hidden = if credentials.contains(':') {
                ":***"
            } else {
                ""
            };
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@rabbitmq:5672/%2f"),
            "amqp://guest:***@rabbitmq:5672/%2f"
        );
        assert_eq!(
            redact_url("amqp://u:p@ss@host:1/v?heartbeat=10"),
            "amqp://u:***@host:1/v?heartbeat=10"
        );
        assert_eq!(
            redact_url("redis://:pw@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
        assert_eq!(redact_url("amqp://user@host"), "amqp://user@host");
        assert_eq!(redact_url("amqp://host:5672"), "amqp://host:5672");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    const REDIS: UrlParser = UrlParser::required(&["redis", "rediss"]);

    #[test]
    fn urls_are_checked_and_the_reason_hides_the_password() {
        assert!(REDIS.check("redis://:pw@redis:6379/0").is_ok());
        assert!(REDIS.check("rediss://redis").is_ok());
        for bad in [
            "redis-host:6379",
            "user:pw@redis:6379",
            "http://:pw@redis:6379",
            "redis://:pw@",
            "amqp://u:pw@rabbitmq",
        ] {
            let why = REDIS.check(bad).expect_err(bad);
            assert!(!why.contains("pw"), "{bad}: {why}");
        }
        let why = REDIS.check("http://:pw@redis:6379").expect_err("scheme");
        assert!(why.contains("http://:***@redis:6379"), "{why}");
        assert!(why.contains("redis:// or rediss://"), "{why}");
    }

    #[test]
    fn empty_is_an_error_when_required_and_unset_when_optional() {
        assert!(REDIS.check("").expect_err("required").contains("empty"));
        let optional = UrlParser::optional(&["redis"]);
        assert!(optional.check("").expect("unset").is_empty());
        assert!(optional.check("  ").expect("unset").is_empty());
        assert!(optional.check("nope").is_err());
    }

    #[test]
    fn debug_and_display_hide_the_password_and_expose_keeps_it() {
        let url = SecretUrl::new("redis://:s3cret@redis:6379");
        assert_eq!(format!("{url:?}"), "\"redis://:***@redis:6379\"");
        assert_eq!(url.to_string(), "redis://:***@redis:6379");
        assert_eq!(url.expose(), "redis://:s3cret@redis:6379");
    }
}
