//! The request-head limits the api answers with a JSON error: a request target longer than
//! `FRACTILE_MAX_URI_BYTES` gets 414, a head (request line and headers) over
//! `FRACTILE_MAX_HEAD_BYTES` or with more than `FRACTILE_MAX_HEADERS` lines gets 431.
//!
//! hyper refuses a head over its own limits by writing a bodyless 431 itself, with no hook to
//! give it a body. So these limits are checked here, on the parsed request, and hyper's
//! limits are set at twice them ([`HeadLimits::connection_limits`]): a head between the two
//! gets the JSON answer, and hyper's limit stays the hard bound on what one connection may
//! buffer. The head's size is counted as it arrived on the wire (`Name: value` plus CRLF per
//! line), without whitespace the parser dropped around values.

use std::num::NonZeroUsize;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use fractile_http::serve::ConnectionLimits;

use crate::config::Config;
use crate::error::ApiError;

/// `" HTTP/1.1\r\n"` after the request target, and the space after the method.
const REQUEST_LINE_OVERHEAD: usize = 1 + 1 + 8 + 2;
/// `": "` and `"\r\n"` around each header's value.
const HEADER_LINE_OVERHEAD: usize = 4;

/// The head limits answered with JSON.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Largest head in bytes (request line and headers, with their line ends).
    pub max_head_bytes: usize,
    /// Most header lines.
    pub max_headers: usize,
    /// Longest request target (path and query, or the absolute form).
    pub max_uri_bytes: usize,
}

impl HeadLimits {
    /// The limits `config` sets.
    pub fn new(config: &Config) -> Self {
        HeadLimits {
            max_head_bytes: config.max_head_bytes,
            max_headers: config.max_headers,
            max_uri_bytes: config.max_uri_bytes,
        }
    }

    /// The traffic listener's connection limits, with hyper's head limits at twice these.
    pub fn connection_limits(
        &self,
        max_connections: NonZeroUsize,
        header_read_timeout: Duration,
        write_timeout: Duration,
    ) -> ConnectionLimits {
        ConnectionLimits {
            max_connections,
            header_read_timeout,
            write_timeout,
            max_head_bytes: self.max_head_bytes.saturating_mul(2),
            max_headers: self.max_headers.saturating_mul(2),
        }
    }

    /// `Err` with the 414 or 431 to answer when `request`'s head is over a limit.
    pub fn check(&self, request: &Request) -> Result<(), ApiError> {
        let uri = request.uri();
        // The target as sent: origin form (`/path?query`), or absolute form with scheme and
        // authority, which a client may send to a server too.
        let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
            + uri.scheme_str().map_or(0, |s| s.len() + 3)
            + uri.authority().map_or(0, |a| a.as_str().len());
        if target > self.max_uri_bytes {
            return Err(ApiError::rejected(
                StatusCode::URI_TOO_LONG,
                format!("the request target exceeds {} bytes", self.max_uri_bytes),
            ));
        }
        let headers = request.headers();
        if headers.len() > self.max_headers {
            return Err(ApiError::rejected(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "the request has more than {} header lines",
                    self.max_headers
                ),
            ));
        }
        let head = request.method().as_str().len()
            + target
            + REQUEST_LINE_OVERHEAD
            + headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + HEADER_LINE_OVERHEAD)
                .sum::<usize>()
            + 2;
        if head > self.max_head_bytes {
            return Err(ApiError::rejected(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("the request head exceeds {} bytes", self.max_head_bytes),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::response::IntoResponse;

    const LIMITS: HeadLimits = HeadLimits {
        max_head_bytes: 1024,
        max_headers: 4,
        max_uri_bytes: 512,
    };

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::get(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::empty()).expect("valid request")
    }

    fn status(result: Result<(), ApiError>) -> Option<StatusCode> {
        result.err().map(|e| e.into_response().status())
    }

    #[test]
    fn the_head_is_counted_as_sent() {
        // "GET /a HTTP/1.1\r\n" (17) + "host: x\r\n" (9) + "\r\n" (2) = 28 bytes.
        let exact = HeadLimits {
            max_head_bytes: 28,
            ..LIMITS
        };
        assert_eq!(status(exact.check(&request("/a", &[("host", "x")]))), None);
        let one_less = HeadLimits {
            max_head_bytes: 27,
            ..exact
        };
        assert_eq!(
            status(one_less.check(&request("/a", &[("host", "x")]))),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
    }

    #[test]
    fn too_many_lines_or_bytes_is_431_and_a_long_uri_is_414() {
        let five = [("a", "1"), ("b", "1"), ("c", "1"), ("d", "1"), ("e", "1")];
        assert_eq!(
            status(LIMITS.check(&request("/", &five))),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        assert_eq!(status(LIMITS.check(&request("/", &five[..4]))), None);
        let big = "v".repeat(1024);
        assert_eq!(
            status(LIMITS.check(&request("/", &[("cookie", &big)]))),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let long = format!("/{}", "x".repeat(LIMITS.max_uri_bytes));
        assert_eq!(
            status(LIMITS.check(&request(&long, &[]))),
            Some(StatusCode::URI_TOO_LONG)
        );
    }
}
