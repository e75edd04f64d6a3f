//! What map clients read before they ask for tiles: a TileJSON 3.0.0 document per style
//! (MapLibre GL, QGIS) and the WMTS 1.0.0 capabilities of every style (GDAL, QGIS,
//! OpenLayers, MapProxy). Both name the tiles by their canonical URL, the zoom range this
//! deployment serves and the square Web Mercator grid the tile coordinates are laid on.
//!
//! Absolute URLs: from `FRACTILE_PUBLIC_URL` when set, and then the documents are the same for
//! every client and cacheable; otherwise from the request's `Host` (plain `http://`), and then
//! `Cache-Control: no-store`, so no shared cache hands a document naming one host to clients
//! of another. `X-Forwarded-*` is never read: a client could name any host with it, and
//! a deployment behind a proxy that terminates TLS sets the public URL instead.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::Response;
use bytes::Bytes;
use fractile_http::error::ErrorBody;
use fractile_render::{STYLES, Style};

use crate::config::is_authority;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use crate::tiles::url::{style_named, tile_url};
use crate::validator::{weak_etag, with_validator};

/// How long a shared cache may keep a document built from `FRACTILE_PUBLIC_URL`: it changes
/// only with the configuration.
const CACHEABLE: &str = "public, max-age=300";
/// The latitude where the square Web Mercator grid ends (arctan(sinh(π)) in degrees).
const MAX_LATITUDE: f64 = 85.051_128_779_806_6;
/// Half the width of the Web Mercator plane in metres (EPSG:3857), its top-left corner.
const MERCATOR_HALF: &str = "20037508.3427892";
/// The scale denominator of zoom 0 in the GoogleMapsCompatible set (256-pixel tiles at
/// 0.28 mm per pixel).
const SCALE_ZOOM_0: f64 = 559_082_264.028_717_8;

/// The base URL the documents' absolute URLs start with, and the `Cache-Control` they get.
fn base_url(state: &AppState, headers: &HeaderMap) -> Result<(String, HeaderValue), ApiError> {
    if let Some(public) = &state.public_url {
        return Ok((
            public.as_str().to_owned(),
            HeaderValue::from_static(CACHEABLE),
        ));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| is_authority(h))
        .ok_or_else(|| ApiError::BadRequest {
            code: ErrorCode::BadRequest,
            message: "the metadata's URLs are built from the Host header, which is missing or \
                      not a host[:port]; or set FRACTILE_PUBLIC_URL"
                .into(),
        })?;
    Ok((
        format!("http://{host}"),
        HeaderValue::from_static("no-store"),
    ))
}

/// The style a metadata URL's query names: none for the default, `style=<name>` for any.
fn style_of(uri: &Uri) -> Result<Style, ApiError> {
    let Some(query) = uri.query() else {
        return Ok(Style::default());
    };
    let name = query
        .strip_prefix("style=")
        .filter(|name| !name.contains('&'))
        .ok_or_else(|| ApiError::BadRequest {
            code: ErrorCode::InvalidQuery,
            message: "the TileJSON document takes no query but one `style=<name>`".into(),
        })?;
    style_named(name)
}

/// The canonical tile URL template of `style` under `base` ([`tile_url`]).
fn tile_template(base: &str, style: Style, z: &str, x: &str, y: &str) -> String {
    format!("{base}{}", tile_url(z, x, y, style))
}

/// `GET /tilejson.json`.
#[utoipa::path(get, path = "/tilejson.json", tag = "metadata", operation_id = "tilejson",
    summary = "TileJSON 3.0.0 of a style",
    description = "The tile URL template, zoom range, bounds and attribution of one style, for \
        MapLibre GL, QGIS and other TileJSON clients. URLs are absolute: from \
        `FRACTILE_PUBLIC_URL`, or from the request's `Host` (then `no-store`).",
    params(
        ("style" = Option<crate::schemas::OtherStyleName>, Query, example = "ocean",
            description = "Omitted for the default, `classic`."),
        ("If-None-Match" = Option<String>, Header, description = "A copy's ETag; a match answers 304."),
    ),
    responses(
        (status = 200, description = "The TileJSON document.", content_type = "application/json",
            body = Object,
            headers(
                ("Cache-Control" = String,
                    description = "`public, max-age=300` with `FRACTILE_PUBLIC_URL`, else `no-store`."),
                ("ETag" = String, description = "Weak validator of the document."),
            )),
        (status = 304, description = "Not modified: `If-None-Match` matched."),
        (status = 400, description = "`invalid_query`, `unknown_style`, or `bad_request` (no \
            usable `Host` and no `FRACTILE_PUBLIC_URL`).", body = ErrorBody),
    ))]
pub async fn tilejson(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let style = style_of(&uri)?;
    let (base, cache_control) = base_url(&state, &headers)?;
    let max_zoom = state.max_zoom.get();
    let document = serde_json::json!({
        "tilejson": "3.0.0",
        "name": format!("fractile {}", style.name()),
        "description": format!("The Mandelbrot set, style {}, rendered by fractile", style.name()),
        "attribution": "fractile",
        "scheme": "xyz",
        "tiles": [tile_template(&base, style, "{z}", "{x}", "{y}")],
        "minzoom": 0,
        "maxzoom": max_zoom,
        "bounds": [-180.0, -MAX_LATITUDE, 180.0, MAX_LATITUDE],
        "center": [0.0, 0.0, 2.min(max_zoom)],
    });
    let body = Bytes::from(document.to_string());
    Ok(with_validator(
        &headers,
        &weak_etag(&body),
        body,
        &[
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, cache_control),
        ],
    ))
}

/// XML-escapes `text` for an attribute or element.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The WMTS 1.0.0 capabilities (RESTful) of every style over `base`, zooms 0 to `max_zoom`.
pub fn capabilities(base: &str, max_zoom: u8) -> String {
    let mut out = String::with_capacity(4096 + 600 * usize::from(max_zoom));
    out.push_str(concat!(
        r#"<?xml version="1.0" encoding="UTF-8"?>"#,
        "\n",
        r#"<Capabilities xmlns="http://www.opengis.net/wmts/1.0" xmlns:ows="http://www.opengis.net/ows/1.1" "#,
        r#"xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" "#,
        r#"xsi:schemaLocation="http://www.opengis.net/wmts/1.0 http://schemas.opengis.net/wmts/1.0/wmtsGetCapabilities_response.xsd" "#,
        r#"version="1.0.0">"#,
        "\n",
        "  <ows:ServiceIdentification>\n",
        "    <ows:Title>fractile</ows:Title>\n",
        "    <ows:Abstract>Map tiles of the Mandelbrot set.</ows:Abstract>\n",
        "    <ows:ServiceType>OGC WMTS</ows:ServiceType>\n",
        "    <ows:ServiceTypeVersion>1.0.0</ows:ServiceTypeVersion>\n",
        "  </ows:ServiceIdentification>\n",
        "  <Contents>\n",
    ));
    for style in STYLES {
        let name = style.name();
        let template = xml(&tile_template(
            base,
            style,
            "{TileMatrix}",
            "{TileCol}",
            "{TileRow}",
        ));
        let _ = write!(
            out,
            "    <Layer>\n\
             \x20     <ows:Title>fractile {name}</ows:Title>\n\
             \x20     <ows:WGS84BoundingBox>\n\
             \x20       <ows:LowerCorner>-180 -{MAX_LATITUDE}</ows:LowerCorner>\n\
             \x20       <ows:UpperCorner>180 {MAX_LATITUDE}</ows:UpperCorner>\n\
             \x20     </ows:WGS84BoundingBox>\n\
             \x20     <ows:Identifier>{name}</ows:Identifier>\n\
             \x20     <Style isDefault=\"true\"><ows:Identifier>default</ows:Identifier></Style>\n\
             \x20     <Format>image/png</Format>\n\
             \x20     <TileMatrixSetLink><TileMatrixSet>GoogleMapsCompatible</TileMatrixSet></TileMatrixSetLink>\n\
             \x20     <ResourceURL format=\"image/png\" resourceType=\"tile\" template=\"{template}\"/>\n\
             \x20   </Layer>\n"
        );
    }
    out.push_str(concat!(
        "    <TileMatrixSet>\n",
        "      <ows:Identifier>GoogleMapsCompatible</ows:Identifier>\n",
        "      <ows:SupportedCRS>urn:ogc:def:crs:EPSG::3857</ows:SupportedCRS>\n",
        "      <WellKnownScaleSet>urn:ogc:def:wkss:OGC:1.0:GoogleMapsCompatible</WellKnownScaleSet>\n",
    ));
    for z in 0..=max_zoom {
        let width = 1u64 << z;
        let scale = SCALE_ZOOM_0 / width as f64;
        let _ = write!(
            out,
            "      <TileMatrix>\n\
             \x20       <ows:Identifier>{z}</ows:Identifier>\n\
             \x20       <ScaleDenominator>{scale}</ScaleDenominator>\n\
             \x20       <TopLeftCorner>-{MERCATOR_HALF} {MERCATOR_HALF}</TopLeftCorner>\n\
             \x20       <TileWidth>256</TileWidth>\n\
             \x20       <TileHeight>256</TileHeight>\n\
             \x20       <MatrixWidth>{width}</MatrixWidth>\n\
             \x20       <MatrixHeight>{width}</MatrixHeight>\n\
             \x20     </TileMatrix>\n"
        );
    }
    out.push_str("    </TileMatrixSet>\n  </Contents>\n</Capabilities>\n");
    out
}

/// `GET /wmts/1.0.0/WMTSCapabilities.xml`.
#[utoipa::path(get, path = "/wmts/1.0.0/WMTSCapabilities.xml", tag = "metadata",
    operation_id = "wmts_capabilities",
    summary = "WMTS 1.0.0 capabilities",
    description = "Every style as a layer of the RESTful WMTS, on the GoogleMapsCompatible \
        (Web Mercator) tile matrix set from zoom 0 to `FRACTILE_MAX_ZOOM`: for GDAL \
        (`gdalinfo WMTS:<url>`), QGIS, OpenLayers and MapProxy. URLs as in the TileJSON.",
    params(("If-None-Match" = Option<String>, Header, description = "A copy's ETag; a match answers 304.")),
    responses(
        (status = 200, description = "The capabilities document.", content_type = "application/xml",
            body = String,
            headers(
                ("Cache-Control" = String,
                    description = "`public, max-age=300` with `FRACTILE_PUBLIC_URL`, else `no-store`."),
                ("ETag" = String, description = "Weak validator of the document."),
            )),
        (status = 304, description = "Not modified: `If-None-Match` matched."),
        (status = 400, description = "`bad_request`: no usable `Host` and no \
            `FRACTILE_PUBLIC_URL`.", body = ErrorBody),
    ))]
pub async fn wmts_capabilities(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (base, cache_control) = base_url(&state, &headers)?;
    let body = Bytes::from(capabilities(&base, state.max_zoom.get()));
    Ok(with_validator(
        &headers,
        &weak_etag(&body),
        body,
        &[
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml"),
            ),
            (header::CACHE_CONTROL, cache_control),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_canonical_tile_urls() {
        assert_eq!(
            tile_template("http://h", Style::Classic, "{z}", "{x}", "{y}"),
            "http://h/tiles/{z}/{x}/{y}.png"
        );
        assert_eq!(
            tile_template("http://h", Style::Fire, "{z}", "{x}", "{y}"),
            "http://h/tiles/{z}/{x}/{y}.png?style=fire"
        );
    }

    #[test]
    fn capabilities_list_every_style_and_zoom() {
        let caps = capabilities("https://t.example/a&b", 3);
        for style in STYLES {
            assert!(caps.contains(&format!(
                "<ows:Identifier>{}</ows:Identifier>",
                style.name()
            )));
        }
        assert_eq!(caps.matches("<TileMatrix>").count(), 4);
        assert!(caps.contains("<MatrixWidth>8</MatrixWidth>"));
        assert!(caps.contains("template=\"https://t.example/a&amp;b/tiles/{TileMatrix}/{TileCol}/{TileRow}.png?style=fire\""));
        assert!(!caps.contains("a&b"));
    }
}
