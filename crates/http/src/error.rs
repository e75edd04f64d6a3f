//! The JSON error body every fractile error response carries, `{"error": {"code", "message"}}`,
//! and [`ErrorCode`], the one list of the codes clients read: handlers name a variant, the
//! OpenAPI document derives the code's schema from the enum, so neither can list a code the
//! other does not have.

use serde::Serialize;
use utoipa::ToSchema;

/// Declares [`ErrorCode`], [`ErrorCode::ALL`] and [`ErrorCode::as_str`] from one list.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        // Each code is its variant's name in snake case; `as_str` spells it out, and a test
        // holds the two together.
        /// Machine-readable reasons of error responses, stable across versions.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order declared.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as clients read it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }
        }
    };
}

error_codes! {
    // A tile URL that is not the canonical URL of a tile (400, 404).
    /// A coordinate with a sign, a leading zero, or not digits.
    InvalidCoordinate = "invalid_coordinate",
    /// A style the api does not have.
    UnknownStyle = "unknown_style",
    /// Percent-encoding, or the default style named: another spelling of a tile's URL.
    NonCanonicalUrl = "non_canonical_url",
    /// Not `/tiles/{z}/{x}/{y}.png`.
    InvalidPath = "invalid_path",
    /// A query other than none or one `style=<name>`.
    InvalidQuery = "invalid_query",
    /// Deeper than the maximum zoom, or past the edge.
    TileNotFound = "tile_not_found",
    /// No such resource (or not `.png`).
    NotFound = "not_found",
    /// The route exists, not for this method.
    MethodNotAllowed = "method_not_allowed",

    // Refused to protect the service (503 + Retry-After).
    /// Too many requests in flight, or too many misses being filled.
    Overloaded = "overloaded",
    /// The render pool's queue is full.
    RenderQueueFull = "render_queue_full",
    /// The render did not finish before its deadline.
    RenderTimeout = "render_timeout",
    /// The render queue or Redis is down and the fallback is to refuse.
    RenderUnavailable = "render_unavailable",
    /// The request took longer than the request timeout.
    Timeout = "timeout",

    // The request itself, any route.
    /// The body is over the limit.
    BodyTooLarge = "body_too_large",
    /// The request target is over the limit.
    UriTooLong = "uri_too_long",
    /// The request head is over the limit.
    HeadTooLarge = "head_too_large",
    /// The body did not arrive in time.
    RequestTimeout = "request_timeout",
    /// A malformed request a layer refused.
    BadRequest = "bad_request",
    /// Another refusal by a layer (4xx).
    ClientError = "client_error",
    /// A failure below the handlers (5xx).
    ServerError = "server_error",
    /// An unexpected failure: logged, never described.
    Internal = "internal",

    // Credentials (seed routes, `/faults`).
    /// No `Authorization: Bearer`.
    MissingToken = "missing_token",
    /// A malformed or wrong bearer token.
    InvalidToken = "invalid_token",

    // Seeds.
    /// The body is not a JSON object of the expected fields.
    InvalidBody = "invalid_body",
    /// Zooms out of order or range, or an empty or inverted bbox.
    InvalidSeed = "invalid_seed",
    /// The seed routes are off: no `FRACTILE_SEED_TOKEN`.
    SeedingDisabled = "seeding_disabled",
    /// More tiles than one seed may have.
    SeedTooLarge = "seed_too_large",
    /// The deployment's seeds running at once are used up.
    SeedQuotaActive = "seed_quota_active",
    /// The deployment's queued seed tiles are used up.
    SeedQuotaTiles = "seed_quota_tiles",
    /// No Redis and RabbitMQ (embedded mode): seeds need workers.
    SeedingUnavailable = "seeding_unavailable",
    /// The state store is unreachable.
    SeedStoreUnavailable = "seed_store_unavailable",
    /// The state store is full and refuses writes.
    SeedStoreFull = "seed_store_full",
    /// The render queue is unreachable.
    QueueUnavailable = "queue_unavailable",
    /// No such seed.
    SeedNotFound = "seed_not_found",

    // Fault injection (`/faults`, admin port).
    /// Fault injection is off.
    FaultsDisabled = "faults_disabled",
    /// A fault out of its range.
    InvalidFault = "invalid_fault",
    /// A fault this process has no work for.
    UnsupportedFault = "unsupported_fault",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    /// What went wrong.
    #[schema(inline)]
    pub error: ErrorDetail<'a>,
}

/// The inside of the error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// Machine-readable reason, stable across versions (`tile_not_found`, `overloaded`, ...).
    pub code: ErrorCode,
    /// Human-readable explanation; may change between versions.
    pub message: &'a str,
}

impl<'a> ErrorBody<'a> {
    /// The body for `code` and `message`.
    pub fn new(code: ErrorCode, message: &'a str) -> Self {
        ErrorBody {
            error: ErrorDetail { code, message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case_strings() {
        let body =
            serde_json::to_value(ErrorBody::new(ErrorCode::TileNotFound, "m")).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "tile_not_found", "message": "m"}})
        );
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).expect("json");
            assert_eq!(json, code.as_str(), "{code:?}");
        }
    }
}
