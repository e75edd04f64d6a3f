//! The admin router both binaries serve on their admin port: `/livez`, `/readyz`,
//! `/metrics` and `/faults`. It is never behind the load balancer and never shed, so an
//! overloaded process still answers its probes and its scrape; every response is
//! `Cache-Control: no-store` (see [`crate::no_store`]).
//!
//! Each binary supplies what only it knows through [`AdminProbe`]: its readiness check
//! (with the details `/readyz` reports) and its metrics exposition. What `/readyz` means
//! beyond that is shared: 503 `draining` once shutdown has begun, whatever the check says;
//! 503 with the check's reason while it fails; else 200 `ready`; the injected faults are
//! listed in every answer, so nobody mistakes a demo's slowness for an incident.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Readiness;
use crate::error::{ErrorBody, ErrorCode};
use crate::faults::{self, Faults};

/// What a binary's readiness check found.
#[derive(Debug, Default)]
pub struct ReadyCheck {
    /// Why the process should not receive work now (`/readyz` answers 503 with it as the
    /// `status`); `None`: ready.
    pub failing: Option<&'static str>,
    /// The dependencies' states, reported in the body (`"redis": "up"`, ...).
    pub details: Map<String, Value>,
}

/// What a binary plugs into the admin router.
pub trait AdminProbe: Send + Sync + 'static {
    /// Checks the dependencies (within their own budgets: a probe must answer in time).
    fn check(&self) -> impl Future<Output = ReadyCheck> + Send;

    /// The Prometheus text exposition, gauges refreshed first.
    fn encode_metrics(&self) -> impl Future<Output = Result<String, prometheus::Error>> + Send;
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`AdminProbe`] behind a pointer, so the handlers are plain functions the OpenAPI
/// annotations and `routes!` can name.
trait DynProbe: Send + Sync {
    fn check(&self) -> BoxFuture<'_, ReadyCheck>;
    fn encode_metrics(&self) -> BoxFuture<'_, Result<String, prometheus::Error>>;
}

impl<P: AdminProbe> DynProbe for P {
    fn check(&self) -> BoxFuture<'_, ReadyCheck> {
        Box::pin(AdminProbe::check(self))
    }

    fn encode_metrics(&self) -> BoxFuture<'_, Result<String, prometheus::Error>> {
        Box::pin(AdminProbe::encode_metrics(self))
    }
}

struct Admin {
    probe: Box<dyn DynProbe>,
    readiness: Readiness,
    faults: Faults,
}

/// The probe and metrics routes, registered from their OpenAPI annotations.
fn routes() -> OpenApiRouter<Arc<Admin>> {
    OpenApiRouter::new()
        .routes(routes!(livez))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// `/livez`, `/readyz`, `/metrics` and `/faults` (refused unless fault injection is on),
/// every answer `no-store`.
pub fn router<P: AdminProbe>(probe: P, readiness: Readiness, faults: Faults) -> Router {
    let admin = Arc::new(Admin {
        probe: Box::new(probe),
        readiness,
        faults: faults.clone(),
    });
    let (probes, _) = routes().split_for_parts();
    probes
        .with_state(admin)
        .merge(faults::routes::router(faults))
        .layer(axum::middleware::map_response(crate::no_store))
}

/// Tag of the operations served on the admin port (`FRACTILE_ADMIN_LISTEN`), not on the
/// traffic port.
pub const ADMIN_TAG: &str = "admin";

/// The admin router's operations, for the OpenAPI document (tag [`ADMIN_TAG`]).
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

    let mut doc = routes().into_openapi();
    doc.merge(faults::routes::routes().into_openapi());
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`Authorization: Bearer <FRACTILE_ADMIN_TOKEN>`"))
                    .build(),
            ),
        );
    doc
}

/// The answer of `/livez`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    /// Always `alive`.
    #[schema(example = "alive")]
    pub status: &'static str,
}

/// The answer of `/readyz`: the verdict, the faults in force, and the dependencies' states
/// (`redis`, `queue`, ... as further string members; which ones depends on the binary).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessReport {
    /// `ready`, `draining`, or why the process is not ready.
    #[schema(example = "ready")]
    pub status: &'static str,
    /// The binary's version.
    #[schema(example = "0.1.0")]
    pub version: &'static str,
    /// The source revision it was built from (`unknown` when the build had none).
    #[schema(example = "3f9a50d2c1ab")]
    pub revision: &'static str,
    /// Names of the injected faults in force (`/faults`).
    pub faults: Vec<&'static str>,
    /// The dependencies' states (`"redis": "up"`, ...).
    #[serde(flatten)]
    #[schema(value_type = std::collections::HashMap<String, String>)]
    pub details: Map<String, Value>,
}

/// The process is up. Checks no dependency: a restart would not fix one.
#[utoipa::path(get, path = "/livez", tag = "admin", operation_id = "livez",
    summary = "Liveness probe",
    responses((status = 200, description = "The process is up.", body = Liveness,
        headers(("Cache-Control" = String, description = "`no-store`")))))]
async fn livez() -> impl IntoResponse {
    axum::Json(Liveness { status: "alive" })
}

/// Whether the process should receive work; the dependencies' states either way.
#[utoipa::path(get, path = "/readyz", tag = "admin", operation_id = "readyz",
    summary = "Readiness probe",
    responses(
        (status = 200, description = "Ready.", body = ReadinessReport,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 503, description = "Not ready: draining (shutdown has begun) or the check failed; \
            `status` says which.", body = ReadinessReport,
            headers(("Cache-Control" = String, description = "`no-store`")))))]
async fn readyz(State(admin): State<Arc<Admin>>) -> Response {
    let ReadyCheck { failing, details } = admin.probe.check().await;
    let (code, status) = match (admin.readiness.is_draining(), failing) {
        (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        (false, Some(reason)) => (StatusCode::SERVICE_UNAVAILABLE, reason),
        (false, None) => (StatusCode::OK, "ready"),
    };
    let report = ReadinessReport {
        status,
        version: crate::build_info::VERSION,
        revision: crate::build_info::REVISION,
        faults: admin.faults.active(),
        details,
    };
    (code, axum::Json(report)).into_response()
}

/// The Prometheus text exposition of the process's metrics.
#[utoipa::path(get, path = "/metrics", tag = "admin", operation_id = "metrics",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4.", body = String,
            content_type = "text/plain; version=0.0.4",
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 500, description = "The metrics could not be encoded.", body = ErrorBody,
            headers(("Cache-Control" = String, description = "`no-store`")))))]
async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    match admin.probe.encode_metrics().await {
        Ok(body) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "encoding metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(ErrorBody::new(
                    ErrorCode::Internal,
                    "the metrics could not be encoded",
                )),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use serde_json::json;

    use super::*;

    struct Probe(Arc<AtomicBool>);

    impl AdminProbe for Probe {
        async fn check(&self) -> ReadyCheck {
            let mut details = Map::new();
            details.insert("redis".into(), json!("up"));
            ReadyCheck {
                failing: (!self.0.load(Ordering::Relaxed)).then_some("redis unreachable"),
                details,
            }
        }

        async fn encode_metrics(&self) -> Result<String, prometheus::Error> {
            Ok("up 1\n".into())
        }
    }

    async fn get(app: &Router, uri: &str) -> (StatusCode, String, Value) {
        let response = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let cache = response
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, cache, body)
    }

    struct Broken;

    impl AdminProbe for Broken {
        async fn check(&self) -> ReadyCheck {
            ReadyCheck::default()
        }

        async fn encode_metrics(&self) -> Result<String, prometheus::Error> {
            Err(prometheus::Error::Msg("broken".into()))
        }
    }

    /// Every error the admin port answers has the JSON error body the document promises.
    #[tokio::test]
    async fn a_failed_scrape_is_a_500_with_the_json_error_body() {
        let registry = prometheus::Registry::new();
        let faults = Faults::new(None, &[], &registry).expect("registers");
        let app = router(Broken, Readiness::default(), faults);
        let (code, cache, body) = get(&app, "/metrics").await;
        assert_eq!(
            (code, cache.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "no-store")
        );
        assert_eq!(body["error"]["code"], "internal", "{body}");
    }

    #[tokio::test]
    async fn readyz_reports_the_check_and_draining_wins() {
        let healthy = Arc::new(AtomicBool::new(true));
        let readiness = Readiness::default();
        let registry = prometheus::Registry::new();
        let faults = Faults::new(None, &[], &registry).expect("registers");
        let app = router(Probe(Arc::clone(&healthy)), readiness.clone(), faults);

        let (code, cache, body) = get(&app, "/readyz").await;
        assert_eq!((code, cache.as_str()), (StatusCode::OK, "no-store"));
        assert_eq!(body["status"], "ready");
        assert_eq!(body["version"], crate::build_info::VERSION);
        assert_eq!(body["revision"], crate::build_info::REVISION);
        assert_eq!(body["redis"], "up");
        assert_eq!(body["faults"], json!([]));

        healthy.store(false, Ordering::Relaxed);
        let (code, _, body) = get(&app, "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "redis unreachable");

        healthy.store(true, Ordering::Relaxed);
        readiness.drain();
        let (code, _, body) = get(&app, "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "draining");
        assert_eq!(
            body["redis"], "up",
            "details are still reported while draining"
        );

        let (code, cache, body) = get(&app, "/livez").await;
        assert_eq!((code, cache.as_str()), (StatusCode::OK, "no-store"));
        assert_eq!(body["status"], "alive");
        let (code, cache, _) = get(&app, "/faults").await;
        assert_eq!((code, cache.as_str()), (StatusCode::OK, "no-store"));
    }
}
