//! Bearer tokens on HTTP routes: [`check_bearer`] compares a request's `Authorization:
//! Bearer` with a [`Secret`] in constant time. The seed routes and `/faults` use it, each
//! answering its refusals in its own words.

use axum::http::{HeaderMap, header};
use fractile_settings::Secret;
use subtle::ConstantTimeEq;

/// Why a request's credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerRefusal {
    /// No `Authorization` header.
    Missing,
    /// Not `Bearer <token>`, or not the right token.
    Invalid,
}

/// Whether `headers` carry `expected` as `Authorization: Bearer <token>` (the scheme is
/// case-insensitive, RFC 9110 §11.1). Constant time in the token's contents: slices of
/// different lengths differ at once, which tells a guesser only the length.
pub fn check_bearer(headers: &HeaderMap, expected: &Secret) -> Result<(), BearerRefusal> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(BearerRefusal::Missing)?;
    let presented = value
        .as_bytes()
        .split_at_checked(7)
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|(_, token)| token.trim_ascii())
        .ok_or(BearerRefusal::Invalid)?;
    if bool::from(presented.ct_eq(expected.expose())) {
        Ok(())
    } else {
        Err(BearerRefusal::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn only_the_right_bearer_token_passes() {
        let secret = Secret::new("0123456789abcdef", 16).expect("valid");
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(value).expect("a header"),
            );
            check_bearer(&headers, &secret)
        };
        assert_eq!(with("Bearer 0123456789abcdef"), Ok(()));
        assert_eq!(with("bearer 0123456789abcdef "), Ok(()));
        assert_eq!(with("Bearer 0123456789abcdeX"), Err(BearerRefusal::Invalid));
        assert_eq!(with("Basic 0123456789abcdef"), Err(BearerRefusal::Invalid));
        assert_eq!(with("Bearer"), Err(BearerRefusal::Invalid));
        assert_eq!(
            check_bearer(&HeaderMap::new(), &secret),
            Err(BearerRefusal::Missing)
        );
    }
}
