//! The one error type handlers return, and its mapping to HTTP: a status, a JSON body
//! `{"error": {"code": "...", "message": "..."}}` with an [`ErrorCode`], `Retry-After` on
//! 503s and 429s, `WWW-Authenticate` on 401s, and `Cache-Control: no-store` on every 5xx.
//! 5xx bodies say nothing about internals: an internal error's cause rides on the response as
//! a [`Failure`] extension, and the tracking middleware (`app.rs`) logs it, in one place for
//! every 5xx whoever made it.

use std::error::Error as StdError;
use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fractile_http::error::ErrorBody;
pub use fractile_http::error::ErrorCode;

/// Why a request failed with a 500, kept whole (its `source` chain) for the log.
pub type Cause = Arc<dyn StdError + Send + Sync + 'static>;

/// The cause of a 500, on the response for the tracking middleware to log. The body says
/// only `internal`.
#[derive(Clone, Debug)]
pub struct Failure(pub Cause);

/// Seconds a client is asked to wait after a 503.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (400).
    #[error("{message}")]
    BadRequest {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
    /// The request carries no valid credentials (401 + `WWW-Authenticate: Bearer`).
    #[error("{message}")]
    Unauthorized {
        /// `missing_token` (no `Authorization: Bearer`) or `invalid_token` (malformed or
        /// wrong); the second is also RFC 6750's `error` in `WWW-Authenticate`.
        code: ErrorCode,
        /// Human-readable explanation; never quotes what the client sent.
        message: &'static str,
    },
    /// The route is turned off in this deployment, whoever asks (403).
    #[error("{message}")]
    Forbidden {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable explanation: how to turn it on.
        message: &'static str,
    },
    /// Nothing exists at this path (404).
    #[error("{message}")]
    NotFound {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
    /// Well-formed but refused (422).
    #[error("{message}")]
    Unprocessable {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
    /// A quota is used up; the client should retry later (429 + Retry-After).
    #[error("{message}")]
    TooManyRequests {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable explanation: which quota, and how full it is.
        message: String,
        /// Seconds the client is asked to wait.
        retry_after: u32,
    },
    /// This deployment does not offer the feature (501).
    #[error("{message}")]
    NotImplemented {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable explanation.
        message: &'static str,
    },
    /// The route exists but not for this method (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Refused to protect the service; the client should retry later (503 + Retry-After).
    #[error("{message}")]
    Unavailable {
        /// Machine-readable reason: `overloaded`, `render_queue_full`, `render_timeout`,
        /// `timeout`, `seed_store_unavailable`, `seed_store_full`.
        code: ErrorCode,
        /// Human-readable explanation.
        message: &'static str,
        /// Seconds the client is asked to wait.
        retry_after: u32,
    },
    /// Refused below the handlers, with the status the refusing layer chose: a request over
    /// a size limit (413 body, 414 URI, 431 head), or a bare status from a layer that writes
    /// no body of its own (see [`ApiError::rejected`]).
    #[error("{message}")]
    Rejected {
        /// The refusal's status.
        status: StatusCode,
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
    /// A bug or an unexpected failure (500). The cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] Cause),
}

impl ApiError {
    /// A 503 with the given reason, worth retrying after [`RETRY_AFTER_SECONDS`].
    pub fn unavailable(code: ErrorCode, message: &'static str) -> Self {
        Self::unavailable_for(code, message, RETRY_AFTER_SECONDS)
    }

    /// A 503 with the given reason, worth retrying after `retry_after` seconds.
    pub fn unavailable_for(code: ErrorCode, message: &'static str, retry_after: u32) -> Self {
        ApiError::Unavailable {
            code,
            message,
            retry_after,
        }
    }
}

impl ApiError {
    /// A 500 for `cause` (an error, or a message for a failure that has no error value).
    pub fn internal(cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        ApiError::Internal(Arc::from(cause.into()))
    }

    /// A refusal with `status` and the code clients read for it: `body_too_large` (413),
    /// `uri_too_long` (414), `head_too_large` (431), `request_timeout` (408),
    /// `bad_request` (400), otherwise `client_error` or `server_error`.
    pub fn rejected(status: StatusCode, message: impl Into<String>) -> Self {
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
            StatusCode::URI_TOO_LONG => ErrorCode::UriTooLong,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorCode::HeadTooLarge,
            StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
            StatusCode::BAD_REQUEST => ErrorCode::BadRequest,
            s if s.is_server_error() => ErrorCode::ServerError,
            _ => ErrorCode::ClientError,
        };
        ApiError::Rejected {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut retry_after = None;
        let (status, code, message) = match &self {
            ApiError::BadRequest { code, message } => {
                (StatusCode::BAD_REQUEST, *code, message.as_str())
            }
            ApiError::Unauthorized { code, message } => (StatusCode::UNAUTHORIZED, *code, *message),
            ApiError::Forbidden { code, message } => (StatusCode::FORBIDDEN, *code, *message),
            ApiError::NotFound { code, message } => {
                (StatusCode::NOT_FOUND, *code, message.as_str())
            }
            ApiError::TooManyRequests {
                code,
                message,
                retry_after: seconds,
            } => {
                retry_after = Some(*seconds);
                (StatusCode::TOO_MANY_REQUESTS, *code, message.as_str())
            }
            ApiError::Unprocessable { code, message } => {
                (StatusCode::UNPROCESSABLE_ENTITY, *code, message.as_str())
            }
            ApiError::NotImplemented { code, message } => {
                (StatusCode::NOT_IMPLEMENTED, *code, *message)
            }
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "method not allowed on this path",
            ),
            ApiError::Unavailable {
                code,
                message,
                retry_after: seconds,
            } => {
                retry_after = Some(*seconds);
                (StatusCode::SERVICE_UNAVAILABLE, *code, *message)
            }
            ApiError::Rejected {
                status,
                code,
                message,
            } => (*status, *code, message.as_str()),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "internal server error",
            ),
        };
        let mut response = (status, Json(ErrorBody::new(code, message))).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let ApiError::Unauthorized { code, .. } = &self {
            // RFC 6750 §3: the scheme, and `error="invalid_token"` when a token was sent.
            let challenge = if *code == ErrorCode::InvalidToken {
                r#"Bearer realm="fractile", error="invalid_token""#
            } else {
                r#"Bearer realm="fractile""#
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        // A refusal or failure is about this moment: a CDN or browser that kept it would
        // serve the error after the service recovered.
        if status.is_server_error() {
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        if let ApiError::Internal(cause) = self {
            response.extensions_mut().insert(Failure(cause));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_5xx_is_no_store_and_4xx_are_left_alone() {
        let unavailable = ApiError::unavailable(ErrorCode::Overloaded, "retry").into_response();
        assert_eq!(unavailable.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(unavailable.headers()[header::RETRY_AFTER], "1");
        let internal = ApiError::internal("test").into_response();
        assert_eq!(internal.headers()[header::CACHE_CONTROL], "no-store");
        let cause = internal
            .extensions()
            .get::<Failure>()
            .expect("the cause, for the log");
        assert_eq!(cause.0.to_string(), "test");
        let not_implemented = ApiError::NotImplemented {
            code: ErrorCode::SeedingUnavailable,
            message: "y",
        }
        .into_response();
        assert_eq!(not_implemented.headers()[header::CACHE_CONTROL], "no-store");
        let not_found = ApiError::NotFound {
            code: ErrorCode::NotFound,
            message: "y".into(),
        }
        .into_response();
        assert!(not_found.headers().get(header::CACHE_CONTROL).is_none());
    }

    #[test]
    fn refusals_say_when_to_retry_and_how_to_authenticate() {
        let quota = ApiError::TooManyRequests {
            code: ErrorCode::SeedQuotaActive,
            message: "full".into(),
            retry_after: 30,
        }
        .into_response();
        assert_eq!(quota.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(quota.headers()[header::RETRY_AFTER], "30");
        let missing = ApiError::Unauthorized {
            code: ErrorCode::MissingToken,
            message: "m",
        }
        .into_response();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            missing.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="fractile""#
        );
        let wrong = ApiError::Unauthorized {
            code: ErrorCode::InvalidToken,
            message: "m",
        }
        .into_response();
        assert!(
            wrong.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .expect("ascii")
                .ends_with(r#"error="invalid_token""#)
        );
        assert!(wrong.headers().get(header::RETRY_AFTER).is_none());
    }
}
