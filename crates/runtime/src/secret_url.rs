//! URLs that may carry a password (`redis://:pw@host`, `amqp://user:pw@host/vhost`): the
//! settings hold them as [`SecretUrl`], whose `Debug` and `Display` hide the password, so a
//! logged or printed configuration never leaks it; only [`SecretUrl::expose`] gives the
//! full text, to the client that connects with it.

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

    #[test]
    fn debug_and_display_hide_the_password_and_expose_keeps_it() {
        let url = SecretUrl::new("redis://:s3cret@redis:6379");
        assert_eq!(format!("{url:?}"), "\"redis://:***@redis:6379\"");
        assert_eq!(url.to_string(), "redis://:***@redis:6379");
        assert_eq!(url.expose(), "redis://:s3cret@redis:6379");
    }
}
