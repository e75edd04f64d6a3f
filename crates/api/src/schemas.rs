//! Types that exist only to describe the HTTP contract in the OpenAPI document, shared by
//! the handlers' annotations: a leaf module, importing nothing of the api, so any handler
//! can name them without an import circle.

use std::borrow::Cow;

use fractile_http::error::ErrorBody;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoResponses, PartialSchema, ToSchema};

/// A style's name, as the `style` parameter and seeds take it.
pub struct StyleName;

impl PartialSchema for StyleName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(
                fractile_render::palette::STYLES.iter().map(|s| s.name()),
            ))
            .description(Some("A palette."))
            .into()
    }
}

impl ToSchema for StyleName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Style")
    }
}

/// A style other than the default, as a tile URL names it: the default style's tiles are
/// served without a query, so that each tile has one URL.
pub struct OtherStyleName;

impl PartialSchema for OtherStyleName {
    fn schema() -> RefOr<Schema> {
        let default = fractile_render::Style::default();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(
                fractile_render::palette::STYLES
                    .iter()
                    .filter(|s| **s != default)
                    .map(|s| s.name()),
            ))
            .description(Some(format!(
                "A palette other than the default `{}`, whose tiles have no query.",
                default.name()
            )))
            .into()
    }
}

impl ToSchema for OtherStyleName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("OtherStyle")
    }
}

/// A tile's bytes.
pub struct Png;

impl PartialSchema for Png {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("image/png")
            .description(Some("A 256×256 PNG."))
            .into()
    }
}

impl ToSchema for Png {}

// The document's view of `fractile_tile_store::SeedBBox`, which the seed routes read: the
// store knows nothing of OpenAPI. Deserialize only for `deny_unknown_fields`, which the
// schema shows as `additionalProperties: false`, as the store's type refuses them.
/// The rectangle of the complex plane a seed covers.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct SeedBBox {
    /// Left edge.
    min_re: f64,
    /// Bottom edge.
    min_im: f64,
    /// Right edge.
    max_re: f64,
    /// Top edge.
    max_im: f64,
}

// The refusals every seed route shares, listed once: each route's annotation names these
// beside its own responses. Never constructed: they exist for the document.

/// The seed routes' refusals before a seed is looked at: credentials, configuration, and a
/// record this version cannot read.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum SeedAccessRefusals {
    /// No or a wrong token.
    #[response(status = 401, description = "`missing_token` or `invalid_token`: no or a wrong \
        `Authorization: Bearer <FRACTILE_SEED_TOKEN>`.",
        headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"fractile\"`, with `error=\"invalid_token\"` when a token was sent.")))]
    Unauthorized(ErrorBody<'static>),
    /// Seeding is off.
    #[response(
        status = 403,
        description = "`seeding_disabled`: `FRACTILE_SEED_TOKEN` is not set."
    )]
    Forbidden(ErrorBody<'static>),
    /// A record this version did not write.
    #[response(
        status = 500,
        description = "`internal`: a seed record this version did not write."
    )]
    Internal(ErrorBody<'static>),
    /// Embedded mode.
    #[response(
        status = 501,
        description = "`seeding_unavailable`: the api runs without Redis and \
        RabbitMQ (embedded mode); seeds need workers."
    )]
    NotImplemented(ErrorBody<'static>),
}

/// The refusals of the routes that read one seed (`GET` and `DELETE /v1/seeds/{id}`).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum SeedLookupRefusals {
    /// No such seed.
    #[response(status = 404, description = "`seed_not_found`.")]
    NotFound(ErrorBody<'static>),
    /// The state store is unreachable.
    #[response(status = 503, description = "`seed_store_unavailable`: the state store (Redis) is \
        unreachable.",
        headers(("Retry-After" = u32, description = "Seconds to wait.")))]
    Unavailable(ErrorBody<'static>),
}
