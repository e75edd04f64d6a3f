//! URLs that may carry a password (`redis://:pw@host`, `amqp://user:pw@host/vhost`): the
//! settings hold them as [`SecretUrl`], whose `Debug` and `Display` hide the password, so a
//! logged or printed configuration never leaks it; only [`SecretUrl::expose`] gives the
//! full text, to the client that connects with it. [`UrlParser`] reads them from clap and
//! checks them once, at start-up, with the client's own parser where one is given: a URL the
//! client would refuse stops the process (exit 2) with one error that names its variable and
//! shows the URL with its password hidden.
//!
//! A password may hold any character, written raw or percent-encoded, and a raw `/`, `?`,
//! `#` or `@` makes a URL parser see the password's end somewhere else (the host, a path, a
//! fragment). So hiding a password never trusts a parse: everything between the scheme and
//! the *last* `@` is the user and password ([`redact_url`]), and any text a parser or client
//! says about a URL is scrubbed of every form of its password before it is shown
//! ([`scrub`]).

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
    /// The client's own check (its URL parser): a URL it would refuse at connect time is
    /// refused at start-up, with exit 2, instead of failing later with exit 1.
    client_check: Option<ClientCheck>,
}

/// A client's own URL check: `Err` says why it would refuse the URL.
pub type ClientCheck = fn(&str) -> Result<(), String>;

impl UrlParser {
    /// A setting that must be given: empty is an error.
    pub const fn required(schemes: &'static [&'static str]) -> Self {
        UrlParser {
            schemes,
            empty_is_unset: false,
            client_check: None,
        }
    }

    /// A setting that may be left unset: empty means unset.
    pub const fn optional(schemes: &'static [&'static str]) -> Self {
        UrlParser {
            schemes,
            empty_is_unset: true,
            client_check: None,
        }
    }

    /// This parser, also asking `check` (the client's own URL parser) whether it would take
    /// the URL. What `check` says is shown scrubbed of the password ([`scrub`]).
    pub const fn checked_by(mut self, check: ClientCheck) -> Self {
        self.client_check = Some(check);
        self
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
        if let Some(check) = self.client_check {
            check(value).map_err(|why| format!("`{shown}`: {}", scrub(&why, value)))?;
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
        crate::secret::parse_quietly(cmd, arg, value, "it is not UTF-8", |v| self.check(v))
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
///
/// The user and password are everything between `://` and the last `@`, whatever a URL
/// parser would make of them: a raw `/`, `?`, `#` or `@` in a password ends the authority
/// early for a parser (`redis://u:123/x@host` parses as host `u`, port 123, path `/x@host`),
/// and showing that parse would show the password. The price: an `@` after the host (a
/// vhost named `a@b`) hides the host too, which is the safe side.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split_once(':').map_or(credentials, |(u, _)| u);
            let hidden = if credentials.contains(':') {
                ":***"
            } else {
                ""
            };
            format!("{scheme}://{user}{hidden}@{host}")
        }
        None => url.to_owned(),
    }
}

/// `message` (what a parser or client said about `url`) with every form of `url`'s password
/// replaced by `***`: as written, percent-decoded, and percent-encoded as a parser would
/// write it back. A client's message may quote the whole URL (amq-protocol's "Invalid URL")
/// or the part it took for a host or path.
pub fn scrub(message: &str, url: &str) -> String {
    let Some(password) = password_of(url) else {
        return message.to_owned();
    };
    let decoded = percent_decode(password);
    let encoded: String = decoded
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let mut forms = [password.to_owned(), decoded, encoded];
    // Longest first: one form may contain another.
    forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
    let mut scrubbed = message.to_owned();
    for form in forms.iter().filter(|form| !form.is_empty()) {
        scrubbed = scrubbed.replace(form.as_str(), "***");
    }
    scrubbed
}

/// The password of `url` as written: after the first `:` of what precedes the last `@`.
fn password_of(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let (credentials, _) = rest.rsplit_once('@')?;
    credentials.split_once(':').map(|(_, password)| password)
}

/// `text` with `%XX` escapes decoded (invalid UTF-8 replaced); a `%` not followed by two hex
/// digits is kept as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
    fn passwords_with_url_delimiters_are_hidden_whatever_a_parser_makes_of_them() {
        // Each of these leaked whole or in part: the parser ended the password early.
        for (url, shown) in [
            (
                "redis://user:pa?ss-SECRET@127.0.0.1:6391",
                "redis://user:***@127.0.0.1:6391",
            ),
            (
                "amqp://u:pa/ss-SECRET@127.0.0.1:5672/%2f",
                "amqp://u:***@127.0.0.1:5672/%2f",
            ),
            ("redis://u:123/x@host", "redis://u:***@host"),
            ("redis://u:pa#SECRET@host:1", "redis://u:***@host:1"),
            ("redis://user:SEC@RET@host:1", "redis://user:***@host:1"),
        ] {
            assert_eq!(redact_url(url), shown);
            let why = REDIS.check(url).err().unwrap_or_default();
            assert!(
                !why.contains("SECRET") && !why.contains("RET@"),
                "{url}: {why}"
            );
        }
        // A client that quotes the URL, password and all (amq-protocol's "Invalid URL: '…'"),
        // in every form it may take.
        let url = "amqp://u:p%40ss-SECRET@host";
        for said in [
            format!("Invalid URL: '{url}'"),
            "password p@ss-SECRET refused".to_owned(),
            "as p%40ss-SECRET".to_owned(),
        ] {
            let scrubbed = scrub(&said, url);
            assert!(!scrubbed.contains("SECRET"), "{scrubbed}");
        }
    }

    /// Characters a password is drawn from in the property below: letters that appear in no
    /// other part of the URLs or of any message (so a leak of even part of a password shows),
    /// and every delimiter and special character a URL has.
    const PASSWORD_CHARS: &[char] = &[
        'V', 'W', 'X', 'Z', 'J', 'K', '/', '?', '#', '@', ':', '%', '!', '$', '&', '\'', '(', ')',
        '*', '+', ',', ';', '=', '[', ']', ' ', '~', '"', '<', '>', '\\', '^', '`', '{', '|', '}',
        'é',
    ];

    fn leaks(text: &str) -> bool {
        text.contains(['V', 'W', 'X', 'Z', 'J', 'K'])
    }

    /// Percent-encodes every byte but unreserved ASCII, as a careful user would.
    fn encoded(password: &str) -> String {
        password
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2000))]

        /// Whatever a password holds, raw or percent-encoded, in a Redis or an AMQP URL, no
        /// part of it reaches a redacted URL, `Debug`, `Display` or a refusal's reason.
        #[test]
        fn no_part_of_a_password_is_ever_shown(
            chars in proptest::collection::vec(proptest::sample::select(PASSWORD_CHARS), 1..24),
            scheme in proptest::sample::select(&["redis", "rediss", "amqp", "amqps"][..]),
            tail in proptest::sample::select(&["", ":6379", ":5672/%2f", ":1/0", "/v?heartbeat=10"][..]),
            raw in proptest::bool::ANY,
        ) {
            // At least one marker letter, so a leak of the password cannot go unseen.
            let password: String = std::iter::once('W').chain(chars).collect();
            let written = if raw { password.clone() } else { encoded(&password) };
            let url = format!("{scheme}://user:{written}@host{tail}");
            let parser = if scheme.starts_with("redis") {
                UrlParser::required(&["redis", "rediss"])
            } else {
                UrlParser::required(&["amqp", "amqps"])
            };
            let shown = [
                redact_url(&url),
                format!("{:?}", SecretUrl::new(url.as_str())),
                SecretUrl::new(url.as_str()).to_string(),
                parser.check(&url).err().unwrap_or_default(),
                scrub(&format!("Invalid URL: '{url}'"), &url),
            ];
            for text in shown {
                proptest::prop_assert!(!leaks(&text), "{} shows {}", url, text);
            }
        }
    }

    #[test]
    fn debug_and_display_hide_the_password_and_expose_keeps_it() {
        let url = SecretUrl::new("redis://:s3cret@redis:6379");
        assert_eq!(format!("{url:?}"), "\"redis://:***@redis:6379\"");
        assert_eq!(url.to_string(), "redis://:***@redis:6379");
        assert_eq!(url.expose(), "redis://:s3cret@redis:6379");
    }
}
