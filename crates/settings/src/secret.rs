//! Secrets given as settings: bearer tokens (the seed routes', the admin port's) and keys
//! (the tiles' MAC key). A [`Secret`] never reaches `Debug`, logs or errors: only
//! [`Secret::expose`] gives its bytes, to what compares or signs with them. [`SecretParser`]
//! reads one from clap and checks it at start-up; its errors name the setting and never
//! quote the value (clap's own errors do, and a mistyped secret is still close to the real
//! one). Comparing one with what a request carries is `fractile_http::bearer`'s.

use std::fmt;

/// A secret setting. `Debug` shows only that it is set.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// `value` if it is visible ASCII without spaces (what fits in an `Authorization`
    /// header unchanged) and at least `min_bytes` long. The reason for a refusal never
    /// quotes the value.
    pub fn new(value: &str, min_bytes: usize) -> Result<Self, String> {
        if value.is_empty() {
            return Err(format!(
                "it is empty; set at least {min_bytes} random bytes (e.g. `openssl rand -hex 32`)"
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "it must be visible ASCII without spaces (e.g. `openssl rand -hex 32`)".into(),
            );
        }
        if value.len() < min_bytes {
            return Err(format!(
                "it is {} bytes; at least {min_bytes} are needed (e.g. `openssl rand -hex 32`)",
                value.len()
            ));
        }
        Ok(Secret(value.to_owned()))
    }

    /// Its bytes, to compare or sign with. Never log them.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The clap parser of a [`Secret`] setting of at least `min_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct SecretParser {
    min_bytes: usize,
}

impl SecretParser {
    /// A parser for secrets of at least `min_bytes`.
    pub const fn at_least(min_bytes: usize) -> Self {
        SecretParser { min_bytes }
    }
}

impl clap::builder::TypedValueParser for SecretParser {
    type Value = Secret;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Secret, clap::Error> {
        parse_quietly(
            cmd,
            arg,
            value,
            "it must be visible ASCII without spaces",
            |v| Secret::new(v, self.min_bytes),
        )
    }
}

/// A clap value parser's work for a value that must never be shown: `parse` the value as
/// text, and refuse it naming the setting and why, not quoting it (clap's own refusals do).
pub(crate) fn parse_quietly<T>(
    cmd: &clap::Command,
    arg: Option<&clap::Arg>,
    value: &std::ffi::OsStr,
    not_utf8: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, clap::Error> {
    let parsed = value
        .to_str()
        .ok_or_else(|| not_utf8.to_owned())
        .and_then(parse);
    parsed.map_err(|why| {
        clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            format!("invalid value for {}: {why}\n", setting_name(arg)),
        )
        .with_cmd(cmd)
    })
}

/// How an error names a setting: its variable and its flag, `FRACTILE_X (--x <X>)`.
pub fn setting_name(arg: Option<&clap::Arg>) -> String {
    match arg {
        Some(arg) => match arg.get_env() {
            Some(env) => format!("{} ({arg})", env.to_string_lossy()),
            None => arg.to_string(),
        },
        None => "the setting".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_checked_and_never_shown() {
        let secret = Secret::new("s3cret-s3cret-s3cret", 16).expect("valid");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(secret.expose(), b"s3cret-s3cret-s3cret");
        for (bad, why) in [
            ("", "empty"),
            ("short", "5 bytes"),
            ("has a space in it!!", "ASCII"),
        ] {
            let error = Secret::new(bad, 16).expect_err(bad);
            assert!(error.contains(why), "{bad:?}: {error}");
            assert!(bad.is_empty() || !error.contains(bad), "{error}");
        }
    }
}
