//! The OpenAPI 3.1 document of the HTTP api, served at `GET /openapi.json` on the traffic
//! port and committed as `crates/api/openapi.json`.
//!
//! It is generated from the code: each handler carries a `#[utoipa::path]` annotation (its
//! parameters, request body, and every status and header it can answer), the routers
//! register the handlers from those annotations (`utoipa_axum::routes!`), and the bodies'
//! schemas are derived from the Rust types that serialize them. What the annotations cannot
//! say is added here, in one place:
//!
//! - the tile route's path: axum 0.8 cannot route `{y}.png`, so the route is
//!   `/tiles/{z}/{x}/{y}` and the handler strips `.png`; the document shows the URL clients
//!   use, `/tiles/{z}/{x}/{y}.png`;
//! - what the middleware stack adds to every traffic response: `X-Request-Id` on each,
//!   `Cache-Control: no-store` on each 5xx, and the refusals of requests over the body or
//!   head limits (413, 414, 431) or that made a handler panic (500);
//! - the bearer scheme of the seed routes.
//!
//! The admin port's operations (tag `admin`) are in the same document: both binaries serve
//! them on their admin port, never on the traffic port.

use fractile_http::admin::ADMIN_TAG;
use fractile_http::error::{ErrorBody, ErrorCode};
use utoipa::OpenApi;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::server::{ServerBuilder, ServerVariableBuilder};
use utoipa::openapi::{OpenApi as Document, RefOr, ResponseBuilder};

use crate::schemas::{OtherStyleName, Png, SeedBBox, StyleName};

/// The tile route as axum matches it (`{y}` is `N.png`).
pub const TILE_ROUTE: &str = "/tiles/{z}/{x}/{y}";
/// The tile route as clients see it, in the document.
pub const TILE_PATH: &str = "/tiles/{z}/{x}/{y}.png";

/// The command that rewrites the committed copy of the document.
pub const REGENERATE: &str =
    "FRACTILE_WRITE_OPENAPI=1 cargo test -p fractile-api --test api openapi::committed_copy";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "fractile",
        description = "Mandelbrot map tiles over HTTP. Operations tagged `admin` are served on \
            the admin port (`FRACTILE_ADMIN_LISTEN`, by the api and by each worker), every \
            other operation on the traffic port (`FRACTILE_LISTEN`). Every error answers \
            `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    tags(
        (name = "tiles", description = "Map tiles, behind admission control."),
        (name = "seeds", description = "Bulk pre-rendering; needs `FRACTILE_SEED_TOKEN`, Redis and RabbitMQ."),
        (name = "viewer", description = "The map page and this document; never shed."),
        (name = "metadata", description = "TileJSON and WMTS capabilities for map clients; never shed."),
        (name = "admin", description = "Probes, metrics and fault injection, on the admin port."),
    ),
    components(schemas(ErrorBody, ErrorCode, StyleName, OtherStyleName, Png, SeedBBox)),
)]
struct ApiDoc;

/// The whole document: `traffic`, the traffic routes' operations as their annotations
/// describe them (`app::routes`), completed with what the annotations cannot say, and the
/// admin port's operations.
pub fn document(traffic: Document) -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.merge(traffic);
    if let Some(item) = doc.paths.paths.remove(TILE_ROUTE) {
        doc.paths.paths.insert(TILE_PATH.to_owned(), item);
    }
    doc.merge(fractile_http::admin::openapi());
    // Which port each operation lives on, for generic tools (client generators, schemathesis
    // run on the document alone): the traffic port serves this document, so `/`; the admin
    // operations name the admin port, of the api or of a worker, on its own paths.
    doc.servers = Some(vec![
        ServerBuilder::new()
            .url("/")
            .description(Some(
                "The traffic port (`FRACTILE_LISTEN`), which serves this document: every \
                 operation not tagged `admin`.",
            ))
            .build(),
    ]);
    let admin_port = ServerBuilder::new()
        .url("http://{host}:{port}")
        .description(Some(
            "The admin port (`FRACTILE_ADMIN_LISTEN`) of the api (default 9000) or of a worker \
             (9001 in the compose stack); never behind the load balancer.",
        ))
        .parameter(
            "host",
            ServerVariableBuilder::new().default_value("127.0.0.1"),
        )
        .parameter("port", ServerVariableBuilder::new().default_value("9000"))
        .build();
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ];
        let mut admin = false;
        for op in ops.into_iter().flatten() {
            if op.tags.iter().flatten().any(|t| t == ADMIN_TAG) {
                admin = true;
            } else {
                add_stack_responses(op);
            }
            // An open operation says so (`security: []`), rather than leaving a reader to
            // wonder whether the document forgot its scheme.
            op.security.get_or_insert_with(Vec::new);
        }
        if admin {
            item.servers = Some(vec![admin_port.clone()]);
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "seed_token",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("`Authorization: Bearer <FRACTILE_SEED_TOKEN>`"))
                .build(),
        ),
    );
    doc
}

/// What the traffic stack (`app::stack`) adds to an operation's responses.
fn add_stack_responses(op: &mut Operation) {
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                utoipa::openapi::content::ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "Error",
                    ))))
                    .build(),
            )
            .build()
    };
    let responses = &mut op.responses.responses;
    for (status, description) in [
        (
            "413",
            "`body_too_large`: the request body is over 16 KiB (any route; a tile request \
             needs none).",
        ),
        (
            "414",
            "`uri_too_long`: the request target is over `FRACTILE_MAX_URI_BYTES`.",
        ),
        (
            "431",
            "`head_too_large`: the request head is over `FRACTILE_MAX_HEAD_BYTES` or \
             `FRACTILE_MAX_HEADERS`.",
        ),
        (
            "500",
            "`internal`: an unexpected failure (logged, never described).",
        ),
    ] {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(error(description)));
    }
    let string = || Header::new(ObjectBuilder::new().schema_type(Type::String));
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let mut request_id = string();
        request_id.description =
            Some("The request's id: the one sent in `X-Request-Id`, else a new UUID.".into());
        response
            .headers
            .insert("X-Request-Id".into(), RefOr::T(request_id));
        if status.starts_with('5') {
            let mut no_store = string();
            no_store.description = Some("`no-store`".into());
            response
                .headers
                .entry("Cache-Control".into())
                .or_insert(RefOr::T(no_store));
        }
    }
}
