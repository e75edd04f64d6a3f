//! What the OpenAPI documents of both binaries share: the JSON error body every error
//! response carries, and the tag of the admin port's operations.

use serde::Serialize;
use utoipa::ToSchema;

/// Tag of the operations served on the admin port (`FRACTILE_ADMIN_LISTEN`), not on the
/// traffic port.
pub const ADMIN_TAG: &str = "admin";

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
    pub code: &'a str,
    /// Human-readable explanation; may change between versions.
    pub message: &'a str,
}

impl<'a> ErrorBody<'a> {
    /// The body for `code` and `message`.
    pub fn new(code: &'a str, message: &'a str) -> Self {
        ErrorBody {
            error: ErrorDetail { code, message },
        }
    }
}
