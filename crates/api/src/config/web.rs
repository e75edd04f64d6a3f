//! The settings that describe how the api meets the web: where the viewer loads its assets
//! from, which origins may read the tiles (CORS), and the URL clients reach the api at.
//! Each is parsed and validated once, at start-up.

/// The base URL the viewer loads Leaflet from, validated: an `https://` URL or an absolute
/// path on the api's own origin, without a trailing `/`, made only of characters that need no
/// escaping in an HTML attribute or a CSP header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerAssets {
    base: String,
    origin: Option<String>,
}

impl ViewerAssets {
    /// Parses a `FRACTILE_VIEWER_ASSETS` value.
    pub fn parse(s: &str) -> Result<Self, String> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~/:@%+".contains(c);
        if let Some(bad) = s.chars().find(|&c| !allowed(c)) {
            return Err(format!(
                "{bad:?} is not allowed in the viewer asset URL (letters, digits and -._~/:@%+ only)"
            ));
        }
        let base = s.trim_end_matches('/').to_owned();
        if let Some(rest) = s.strip_prefix("https://") {
            let authority = rest.split('/').next().unwrap_or_default();
            if authority.is_empty() || authority.contains('@') {
                return Err("an https URL needs a host (and no user name)".into());
            }
            Ok(Self {
                origin: Some(format!("https://{authority}")),
                base,
            })
        } else if s.starts_with('/') && !s.starts_with("//") {
            Ok(Self { base, origin: None })
        } else {
            Err("expected an https:// URL or a path on this server starting with /".into())
        }
    }

    /// The base, without a trailing `/`: the page loads `{base}/leaflet.js` and `{base}/leaflet.css`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The origin the page's CSP must allow (`https://host[:port]`); `None` for a same-origin path.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }
}

/// Whether `s` is a `host[:port]` (a name, an IPv4 address or a bracketed IPv6 one) and
/// nothing else: no user, path, query or character a URL or a header would need escaped.
pub fn is_authority(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
}

/// Which web origins may read the tiles and the metadata from a script
/// (`FRACTILE_CORS_ALLOW_ORIGINS`): every one (`*`), a list, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any page may use the tiles (a public tile service's choice).
    Any,
    /// Only these origins (`scheme://host[:port]`, as browsers send them).
    List(Vec<String>),
    /// No CORS headers at all: scripts on other origins cannot read the responses.
    Off,
}

impl CorsOrigins {
    /// Parses a `FRACTILE_CORS_ALLOW_ORIGINS` value: `*`, `off`, or origins separated by
    /// commas.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "*" => return Ok(Self::Any),
            "off" => return Ok(Self::Off),
            _ => {}
        }
        let mut origins = Vec::new();
        for origin in s.split(',').map(str::trim) {
            let Some((scheme, authority)) = origin.split_once("://") else {
                return Err(format!(
                    "{origin:?} is not an origin: expected `*`, `off`, or origins such as \
                     https://maps.example.com separated by commas"
                ));
            };
            let valid = matches!(scheme, "http" | "https") && is_authority(authority);
            if !valid {
                return Err(format!(
                    "{origin:?} is not an origin: an origin is http(s)://host[:port], without a \
                     path or a trailing /"
                ));
            }
            origins.push(origin.to_owned());
        }
        Ok(Self::List(origins))
    }
}

/// The URL clients reach the api at (`FRACTILE_PUBLIC_URL`): `http(s)://host[:port][/path]`,
/// without a trailing `/`, a query or a fragment. The metadata documents name tiles under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    /// Parses a `FRACTILE_PUBLIC_URL` value.
    pub fn parse(s: &str) -> Result<Self, String> {
        let trimmed = s.trim_end_matches('/');
        let rest = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"))
            .ok_or("expected an http:// or https:// URL, such as https://tiles.example.com")?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host_ok = is_authority(authority);
        let path_ok = path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~/".contains(c));
        if !host_ok || !path_ok {
            return Err(
                "expected http(s)://host[:port][/path] with no user, query or fragment".into(),
            );
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The URL, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
