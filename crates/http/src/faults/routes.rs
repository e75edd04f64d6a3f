//! `GET`, `PUT` and `DELETE /faults` on the admin port: reading is open, like every admin
//! route; a change wants fault injection on (else 403 `faults_disabled`) and the admin token
//! (else 401, [`crate::bearer::check_bearer`]).

use axum::Router;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{FaultError, FaultRequest, Faults, FaultsView};
use crate::bearer::{BearerRefusal, check_bearer};
use crate::error::{ErrorBody, ErrorCode};

/// `GET`, `PUT` and `DELETE /faults`, for the admin router.
pub fn router(faults: Faults) -> Router {
    let (router, _) = routes().split_for_parts();
    router.with_state(faults)
}

/// The `/faults` routes, registered from their OpenAPI annotations.
pub(crate) fn routes() -> OpenApiRouter<Faults> {
    OpenApiRouter::new().routes(routes!(show, put, delete))
}

fn error(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    (status, axum::Json(ErrorBody::new(code, message))).into_response()
}

fn disabled() -> Response {
    error(
        StatusCode::FORBIDDEN,
        ErrorCode::FaultsDisabled,
        "fault injection is off; start the process with FRACTILE_FAULT_INJECTION=true (and \
         FRACTILE_ADMIN_TOKEN) to use /faults",
    )
}

/// Why a change may not go ahead, if it may not: fault injection is off (403
/// `faults_disabled`) or the request lacks its token (401 `missing_token` / `invalid_token`,
/// with RFC 6750's `WWW-Authenticate`).
fn refusal(faults: &Faults, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = faults.token() else {
        return Some(disabled());
    };
    let (code, message, challenge) = match check_bearer(headers, token) {
        Ok(()) => return None,
        Err(BearerRefusal::Missing) => (
            ErrorCode::MissingToken,
            "changes to /faults need `Authorization: Bearer <FRACTILE_ADMIN_TOKEN>`",
            r#"Bearer realm="fractile-admin""#,
        ),
        Err(BearerRefusal::Invalid) => (
            ErrorCode::InvalidToken,
            "the bearer token is malformed or wrong",
            r#"Bearer realm="fractile-admin", error="invalid_token""#,
        ),
    };
    let mut response = error(StatusCode::UNAUTHORIZED, code, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    Some(response)
}

/// The faults in force.
#[utoipa::path(get, path = "/faults", tag = "admin", operation_id = "get_faults",
    summary = "Injected faults in force",
    responses((status = 200, description = "The faults in force.", body = FaultsView,
        headers(("Cache-Control" = String, description = "`no-store`")))))]
async fn show(State(faults): State<Faults>) -> Response {
    axum::Json(faults.view()).into_response()
}

/// Replaces the injected faults with these, until `duration_s` passes.
#[utoipa::path(put, path = "/faults", tag = "admin", operation_id = "put_faults",
    summary = "Inject faults",
    request_body = FaultRequest,
    responses(
        (status = 200, description = "In force.", body = FaultsView,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "`invalid_body`, `invalid_fault` (out of range) or \
            `unsupported_fault` (not a fault this process has).", body = ErrorBody,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 401, description = "`missing_token` or `invalid_token`: no or a wrong \
            `Authorization: Bearer <FRACTILE_ADMIN_TOKEN>`.", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"fractile-admin\"`, with `error=\"invalid_token\"` when a token was sent."),
                ("Cache-Control" = String, description = "`no-store`"))),
        (status = 403, description = "`faults_disabled`: the process started without \
            `FRACTILE_FAULT_INJECTION=true`.", body = ErrorBody,
            headers(("Cache-Control" = String, description = "`no-store`")))),
    security(("admin_token" = [])))]
async fn put(
    State(faults): State<Faults>,
    headers: HeaderMap,
    body: Result<axum::Json<serde_json::Value>, JsonRejection>,
) -> Response {
    if let Some(refused) = refusal(&faults, &headers) {
        return refused;
    }
    let body = body
        .map(|axum::Json(value)| value)
        .map_err(|r| r.body_text());
    let request = match body.and_then(fault_request) {
        Ok(request) => request,
        Err(message) => return error(StatusCode::BAD_REQUEST, ErrorCode::InvalidBody, &message),
    };
    match faults.apply(request) {
        Ok(()) => axum::Json(faults.view()).into_response(),
        Err(e @ FaultError::Invalid(_)) => error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidFault,
            &e.to_string(),
        ),
        Err(e @ FaultError::Unsupported(..)) => error(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedFault,
            &e.to_string(),
        ),
    }
}

/// The body as a [`FaultRequest`]. Only a JSON object is one: serde's derive also accepts a
/// sequence of the fields in order, so `[200, 0.5]` would otherwise inject 200 ms of latency
/// and fail half the tiles, and `[]` would lift every fault.
fn fault_request(body: serde_json::Value) -> Result<FaultRequest, String> {
    if !body.is_object() {
        return Err("the body must be a JSON object, e.g. {\"tile_latency_ms\": 200}".into());
    }
    serde_json::from_value(body).map_err(|e| format!("invalid fault request: {e}"))
}

/// Lifts every injected fault at once.
#[utoipa::path(delete, path = "/faults", tag = "admin", operation_id = "delete_faults",
    summary = "Lift injected faults",
    responses(
        (status = 200, description = "Lifted.", body = FaultsView,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 401, description = "`missing_token` or `invalid_token`: no or a wrong \
            `Authorization: Bearer <FRACTILE_ADMIN_TOKEN>`.", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"fractile-admin\"`, with `error=\"invalid_token\"` when a token was sent."),
                ("Cache-Control" = String, description = "`no-store`"))),
        (status = 403, description = "`faults_disabled`.", body = ErrorBody,
            headers(("Cache-Control" = String, description = "`no-store`")))),
    security(("admin_token" = [])))]
async fn delete(State(faults): State<Faults>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&faults, &headers) {
        return refused;
    }
    faults.clear();
    tracing::info!("injected faults lifted");
    axum::Json(faults.view()).into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fractile_settings::{ADMIN_TOKEN_MIN_BYTES, Secret};
    use prometheus::Registry;

    use super::*;
    use crate::faults::Fault;

    const API: &[Fault] = &[Fault::TileLatency, Fault::TileErrors, Fault::RenderSlowdown];

    const TOKEN: &str = "admin-token-for-tests-0123456789";

    fn faults(enabled: bool) -> Faults {
        let token = Secret::new(TOKEN, ADMIN_TOKEN_MIN_BYTES).expect("valid token");
        Faults::new(enabled.then_some(token), API, &Registry::new()).expect("registers")
    }

    async fn call(app: &Router, method: &str, auth: Option<&str>, body: &str) -> Response {
        use axum::body::Body;
        use tower::ServiceExt;

        let mut request = axum::http::Request::builder()
            .method(method)
            .uri("/faults")
            .header("content-type", "application/json");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let request = request.body(Body::from(body.to_owned())).expect("valid");
        app.clone().oneshot(request).await.expect("infallible")
    }

    async fn body_code(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON body");
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Found by the hostile trial: with fault injection on, anyone who reached an admin
    /// port could fail every tile of the replica for an hour.
    #[tokio::test]
    async fn changes_want_the_admin_token_and_reading_does_not() {
        let faults = faults(true);
        let app = router(faults.clone());
        let fault = r#"{"tile_error_ratio": 1, "tile_latency_ms": 60000, "duration_s": 3600}"#;
        let bearer = format!("Bearer {TOKEN}");
        let lowercase = format!("bearer {TOKEN}");
        let almost = format!("Bearer {}x", &TOKEN[..TOKEN.len() - 1]);
        for (method, auth, code, challenge) in [
            (
                "PUT",
                None,
                ErrorCode::MissingToken,
                r#"Bearer realm="fractile-admin""#,
            ),
            (
                "DELETE",
                None,
                ErrorCode::MissingToken,
                r#"Bearer realm="fractile-admin""#,
            ),
            (
                "PUT",
                Some(almost.as_str()),
                ErrorCode::InvalidToken,
                r#"Bearer realm="fractile-admin", error="invalid_token""#,
            ),
            (
                "PUT",
                Some("Basic YWRtaW46YWRtaW4="),
                ErrorCode::InvalidToken,
                r#"Bearer realm="fractile-admin", error="invalid_token""#,
            ),
            (
                "PUT",
                Some(TOKEN),
                ErrorCode::InvalidToken,
                r#"Bearer realm="fractile-admin", error="invalid_token""#,
            ),
            (
                "PUT",
                Some("Bearer "),
                ErrorCode::InvalidToken,
                r#"Bearer realm="fractile-admin", error="invalid_token""#,
            ),
        ] {
            let response = call(&app, method, auth, fault).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {auth:?}"
            );
            assert_eq!(
                response.headers()[header::WWW_AUTHENTICATE],
                challenge,
                "{method} {auth:?}"
            );
            assert_eq!(
                body_code(response).await,
                code.as_str(),
                "{method} {auth:?}"
            );
            assert!(
                faults.active().is_empty(),
                "{method} {auth:?} injected nothing"
            );
        }
        let response = call(&app, "GET", None, "").await;
        assert_eq!(response.status(), StatusCode::OK, "reading stays open");
        for auth in [&bearer, &lowercase] {
            let response = call(&app, "PUT", Some(auth), fault).await;
            assert_eq!(response.status(), StatusCode::OK, "{auth}");
        }
        assert_eq!(faults.active(), ["tile_latency", "tile_errors"]);
        let response = call(&app, "DELETE", Some(&bearer), "").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(faults.active().is_empty());
    }

    #[tokio::test]
    async fn without_injection_changes_are_forbidden_even_with_a_token() {
        let faults = faults(false);
        let app = router(faults.clone());
        let bearer = format!("Bearer {TOKEN}");
        for auth in [None, Some(bearer.as_str())] {
            let response = call(&app, "PUT", auth, r#"{"tile_latency_ms": 200}"#).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{auth:?}");
            assert_eq!(body_code(response).await, "faults_disabled");
        }
        assert!(faults.tile_latency().is_none());
    }

    /// Found by schemathesis: serde's derive reads a struct from a JSON array too.
    #[tokio::test]
    async fn a_put_body_must_be_an_object() {
        let faults = faults(true);
        let app = router(faults.clone());
        let bearer = format!("Bearer {TOKEN}");
        for (body, expected) in [
            ("[]", StatusCode::BAD_REQUEST),
            ("[200, 0.5]", StatusCode::BAD_REQUEST),
            ("7", StatusCode::BAD_REQUEST),
            (r#"{"tile_latency_ms": 200}"#, StatusCode::OK),
        ] {
            let response = call(&app, "PUT", Some(&bearer), body).await;
            assert_eq!(response.status(), expected, "{body}");
            if expected == StatusCode::BAD_REQUEST {
                assert!(faults.tile_latency().is_none(), "{body} injected nothing");
            }
        }
        assert_eq!(faults.tile_latency(), Some(Duration::from_millis(200)));
    }
}
