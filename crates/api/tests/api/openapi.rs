//! The OpenAPI document: the committed copy matches the generated one, `/openapi.json` serves
//! it, and its operations and the routers' routes are the same set.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use fractile_api::app::{document, document_json};
use fractile_api::openapi::REGENERATE;
use serde_json::Value;

use crate::helpers::{app_with, body_bytes, config, send};

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

fn generated() -> Value {
    serde_json::from_slice(document_json()).expect("the document is JSON")
}

/// Every documented operation: (tag, method, path).
fn operations() -> Vec<(String, Method, String)> {
    let doc = generated();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            // A path item's other members (`servers`, `parameters`) are no methods.
            let known = [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ];
            let Some(method) = known
                .contains(&method.as_str())
                .then(|| method.to_uppercase().parse::<Method>().ok())
                .flatten()
            else {
                continue;
            };
            let tag = op["tags"][0].as_str().expect("every operation is tagged");
            ops.push((tag.to_owned(), method, path.clone()));
        }
    }
    ops
}

/// A concrete URL of a templated path.
fn concrete(path: &str) -> String {
    path.replace("{z}", "1")
        .replace("{x}", "0")
        .replace("{y}", "1")
        .replace("{id}", "0123456789abcdef0123456789abcdef")
}

fn admin_app() -> Router {
    let (state, _) = app_with(&config());
    fractile_api::admin::admin_app(state)
}

#[test]
fn committed_copy() {
    let fresh = document_json();
    if std::env::var_os("FRACTILE_WRITE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, fresh).expect("writes crates/api/openapi.json");
        return;
    }
    let committed = std::fs::read(COMMITTED).unwrap_or_default();
    assert!(
        committed == fresh.as_ref(),
        "crates/api/openapi.json differs from the document the code generates; \
         regenerate it with:\n\n    {REGENERATE}\n"
    );
}

#[test]
fn the_document_is_openapi_3_1_and_documents_every_error_body() {
    let doc = generated();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/tiles/{z}/{x}/{y}.png"]["get"].is_object());
    assert!(doc["paths"].get("/tiles/{z}/{x}/{y}").is_none());
    let mut checked = 0;
    for (_, method, path) in operations() {
        let op = &doc["paths"][&path][method.as_str().to_lowercase()];
        for (status, response) in op["responses"].as_object().expect("responses") {
            // A probe's 503 is its report, with the reason in it.
            let probe = path == "/readyz";
            if (status.starts_with('4') || status.starts_with('5')) && !probe {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(
                    schema, "#/components/schemas/Error",
                    "{method} {path} {status} has the JSON error body"
                );
                checked += 1;
            }
            if status == "503" {
                assert!(
                    response["headers"]["Retry-After"].is_object() || probe,
                    "{method} {path} 503 says when to retry"
                );
            }
        }
    }
    assert!(checked > 20, "{checked}");
    assert_eq!(
        doc["components"]["schemas"]["Style"]["enum"],
        serde_json::json!(["classic", "fire", "ocean", "grayscale"])
    );
}

#[tokio::test]
async fn openapi_json_serves_the_document() {
    let (_state, app) = app_with(&config());
    let response = send(
        &app,
        Request::get("/openapi.json")
            .body(Body::empty())
            .expect("valid"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body = body_bytes(response).await;
    assert_eq!(body, document_json().as_ref());
    let served: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        served,
        serde_json::to_value(document()).expect("serializes")
    );
}

/// Every documented operation reaches a handler on the port its tag says (not the fallback's
/// 404, not a 405), and every other method on a documented path is a 405: the routers and
/// the document name the same (path, method) pairs. (Routes are registered from the
/// annotations by `utoipa_axum::routes!`, so a route cannot exist without its operation.)
#[tokio::test]
async fn documented_operations_and_routes_are_the_same() {
    let (_state, traffic) = app_with(&config());
    let admin = admin_app();
    let ops = operations();
    assert!(ops.len() >= 12, "{ops:?}");
    for (tag, method, path) in &ops {
        let app = if tag == "admin" { &admin } else { &traffic };
        let request = Request::builder()
            .method(method.clone())
            .uri(concrete(path))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                if method == Method::PUT || method == Method::POST {
                    "{}"
                } else {
                    ""
                },
            ))
            .expect("valid");
        let response = send(app, request).await;
        let status = response.status();
        let body = body_bytes(response).await;
        let fallback = status == StatusCode::NOT_FOUND
            && (body.is_empty() || String::from_utf8_lossy(&body).contains("no such resource"));
        assert!(
            !fallback && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} ({tag}) reached no route: {status}"
        );
        // The other port does not serve it.
        let other = if tag == "admin" { &traffic } else { &admin };
        let request = Request::builder()
            .method(method.clone())
            .uri(concrete(path))
            .body(Body::empty())
            .expect("valid");
        let status = send(other, request).await.status();
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} ({tag}) is also served on the other port: {status}"
        );
    }
    for (tag, _, path) in &ops {
        let app = if tag == "admin" { &admin } else { &traffic };
        for method in [
            Method::GET,
            Method::PUT,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
        ] {
            if ops.iter().any(|(_, m, p)| m == method && p == path) {
                continue;
            }
            let request = Request::builder()
                .method(method.clone())
                .uri(concrete(path))
                .body(Body::empty())
                .expect("valid");
            let status = send(app, request).await.status();
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is routed but not documented"
            );
        }
    }
}

/// The stack's refusals are documented on every traffic operation they can reach: a body over
/// the limit is refused on any route, before the handler, with a status the operation lists.
#[tokio::test]
async fn every_traffic_operation_documents_the_body_limit_it_enforces() {
    let doc = generated();
    let (_state, traffic) = app_with(&config());
    for (tag, method, path) in operations() {
        if tag == "admin" {
            continue;
        }
        let request = Request::builder()
            .method(method.clone())
            .uri(concrete(&path))
            .header(header::CONTENT_TYPE, "application/json")
            // As a client sends it: the limit refuses on the declared length.
            .header(header::CONTENT_LENGTH, 20 * 1024)
            .body(Body::from(vec![b' '; 20 * 1024]))
            .expect("valid");
        let status = send(&traffic, request).await.status();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{method} {path}");
        let responses = &doc["paths"][&path][method.as_str().to_lowercase()]["responses"];
        assert!(
            responses.get("413").is_some(),
            "{method} {path} answers 413 but does not document it"
        );
    }
}

/// The document's list of error codes is `ErrorCode`'s, spelled as clients read them.
#[test]
fn the_error_codes_in_the_document_are_the_enum() {
    let doc = generated();
    let listed: Vec<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("an enum of codes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let codes: Vec<&str> = fractile_http::error::ErrorCode::ALL
        .iter()
        .map(|code| code.as_str())
        .collect();
    assert_eq!(listed, codes);
}

/// Found by generic tools: with no `servers`, a default schemathesis run called the admin
/// operations on the traffic port (12 failures) and `openapi-python-client` generated an
/// admin client for the wrong port; open operations without `security: []` failed redocly's
/// lint; `x`/`y` as `int32` refused the columns of zooms past 31.
#[test]
fn every_operation_says_where_it_lives_and_what_it_needs() {
    let doc = generated();
    assert_eq!(doc["servers"][0]["url"], "/");
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let admin = item
            .as_object()
            .expect("path item")
            .values()
            .any(|op| op["tags"][0] == "admin");
        if admin {
            assert_eq!(item["servers"][0]["url"], "http://{host}:{port}", "{path}");
            assert_eq!(item["servers"][0]["variables"]["port"]["default"], "9000");
        } else {
            assert!(item.get("servers").is_none(), "{path}");
        }
        for (method, op) in item.as_object().expect("path item") {
            if method == "servers" {
                continue;
            }
            assert!(op["security"].is_array(), "{method} {path}: no security");
        }
    }
    let tile = &doc["paths"]["/tiles/{z}/{x}/{y}.png"]["get"];
    assert_eq!(tile["security"], serde_json::json!([]));
    assert_eq!(
        doc["paths"]["/v1/seeds"]["post"]["security"][0]["seed_token"],
        serde_json::json!([])
    );
    for param in tile["parameters"].as_array().expect("parameters") {
        if param["name"] == "x" || param["name"] == "y" {
            assert_eq!(param["schema"]["format"], "int64");
            assert_eq!(param["schema"]["maximum"], 4_294_967_295_u64);
        }
    }
}
