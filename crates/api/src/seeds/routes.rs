//! The seed routes, `POST /v1/seeds`, `GET` and `DELETE /v1/seeds/{id}`, behind the bearer
//! token ([`authorize`]): they read the request, plan it ([`super::plan`]), admit it under the
//! deployment's quotas in the state store, and hand it to the expansions
//! ([`super::expansion`]). Their state is [`Seeds`], built once by `state.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fractile_http::bearer::{BearerRefusal, check_bearer};
use fractile_queue::unix_ms;
use fractile_render::MaxZoom;
use fractile_settings::Secret;
use fractile_telemetry::RateLimitedLog;
use fractile_tile_store::{NewSeed, SeedAdmission, SeedQuotas, SeedRecord, SeedStore, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::expansion::Expansions;
use super::plan::{PlanError, SeedRequest, plan, seed_request};
use crate::error::{ApiError, ErrorCode};
use crate::schemas::{SeedAccessRefusals, SeedLookupRefusals};
use fractile_http::error::ErrorBody;

/// How long a seed's record is kept.
const RECORD_TTL: Duration = Duration::from_secs(7 * 86_400);
/// Seconds a client refused by a seed quota is asked to wait: seeds take minutes, so
/// retrying sooner would only be refused again.
pub const QUOTA_RETRY_AFTER_SECONDS: u32 = 60;
/// `Retry-After` of a 503 `seed_store_full`: a full store frees room when seeds expire or an
/// operator acts, not within seconds.
pub const STORE_FULL_RETRY_AFTER_SECONDS: u32 = 60;
/// At most one log line per this interval while Redis fails seed requests.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The limits seeds are held to, from the configuration.
#[derive(Debug, Clone)]
pub struct SeedSettings {
    /// The seed routes' bearer token; `None` closes them (403).
    pub token: Option<Secret>,
    /// Deepest zoom served.
    pub max_zoom: MaxZoom,
    /// Largest seed accepted, in tiles.
    pub max_tiles: u64,
    /// Limits on the seeds of the deployment (enforced in Redis, across replicas).
    pub quotas: SeedQuotas,
}

/// What the seed routes use: their settings and, in distributed mode with a queue, the
/// expansions (the stores, the queue link, the background tasks). Cheap to clone.
#[derive(Clone)]
pub struct Seeds(Arc<Inner>);

struct Inner {
    settings: SeedSettings,
    gate: SeedGate,
    expansions: Option<Expansions>,
}

impl Seeds {
    /// The seed routes' state; `expansions` is `None` without Redis and RabbitMQ (the routes
    /// then answer 501).
    pub fn new(settings: SeedSettings, expansions: Option<Expansions>) -> Self {
        let gate = SeedGate {
            token: settings.token.clone(),
        };
        Seeds(Arc::new(Inner {
            settings,
            gate,
            expansions,
        }))
    }

    /// The expansions, when this deployment can seed.
    pub fn expansions(&self) -> Result<&Expansions, ApiError> {
        self.0.expansions.as_ref().ok_or(ApiError::NotImplemented {
            code: ErrorCode::SeedingUnavailable,
            message: "seeding needs FRACTILE_REDIS_URL and FRACTILE_AMQP_URL (workers render seeds)",
        })
    }
}

impl From<PlanError> for ApiError {
    fn from(error: PlanError) -> Self {
        match error {
            PlanError::InvalidBody(message) => ApiError::BadRequest {
                code: ErrorCode::InvalidBody,
                message,
            },
            PlanError::Invalid(message) => ApiError::BadRequest {
                code: ErrorCode::InvalidSeed,
                message,
            },
            too_large @ PlanError::TooLarge { .. } => ApiError::Unprocessable {
                code: ErrorCode::SeedTooLarge,
                message: too_large.to_string(),
            },
        }
    }
}

/// Who may use the seed routes: the holder of the configured token, or nobody.
#[derive(Clone)]
struct SeedGate {
    token: Option<Secret>,
}

impl SeedGate {
    /// Whether `headers` carry the configured token as `Authorization: Bearer <token>`.
    fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.token else {
            return Err(ApiError::Forbidden {
                code: ErrorCode::SeedingDisabled,
                message: "the seed routes are disabled: set FRACTILE_SEED_TOKEN on the api \
                          (at least 16 bytes, e.g. `openssl rand -hex 32`) to enable them, and \
                          send it as `Authorization: Bearer <token>`",
            });
        };
        check_bearer(headers, expected).map_err(|refusal| match refusal {
            BearerRefusal::Missing => ApiError::Unauthorized {
                code: ErrorCode::MissingToken,
                message: "the seed routes need `Authorization: Bearer <FRACTILE_SEED_TOKEN>`",
            },
            BearerRefusal::Invalid => ApiError::Unauthorized {
                code: ErrorCode::InvalidToken,
                message: "the bearer token is malformed or wrong",
            },
        })
    }
}

/// Middleware in front of every seed route: lets a request through only with the token.
pub async fn authorize(State(seeds): State<Seeds>, request: Request, next: Next) -> Response {
    match seeds.0.gate.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// A failed call to the state store as a response: 503 `seed_store_full` + `Retry-After: 60`
/// when it refuses writes because it is full (`noeviction` answers OOM), 503
/// `seed_store_unavailable` + `Retry-After: 1` while it is unreachable (each logged once per
/// [`LOG_EVERY`], with the number left out), 500 for a value this version did not write.
fn store_failed(error: StoreError) -> ApiError {
    if let StoreError::Malformed(_) = error {
        return ApiError::internal(error);
    }
    if error.is_out_of_memory() {
        static FULL: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
        if let Some(suppressed) = FULL.check() {
            tracing::warn!(%error, suppressed, "seed request failed: the state store is full (maxmemory, noeviction); answering 503");
        }
        return ApiError::unavailable_for(
            ErrorCode::SeedStoreFull,
            "the store of seed records is full; retry later, or ask the operator to make room",
            STORE_FULL_RETRY_AFTER_SECONDS,
        );
    }
    static UNAVAILABLE: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
    if let Some(suppressed) = UNAVAILABLE.check() {
        tracing::warn!(%error, suppressed, "seed request failed: the state store (Redis) is unavailable; answering 503");
    }
    ApiError::unavailable(
        ErrorCode::SeedStoreUnavailable,
        "seed records are unreachable (Redis); retry shortly",
    )
}

/// What `GET /v1/seeds/{id}` reports.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SeedStatus {
    /// The seed's id.
    pub id: String,
    /// `expanding` (jobs being queued), `running`, `done`, `cancelled`, `failed` (could not
    /// queue its jobs), or `interrupted` in records of versions before durable expansion.
    pub state: String,
    /// Tiles in the seed.
    pub total: u64,
    /// Jobs queued so far.
    pub queued: u64,
    /// Tiles finished: rendered, or found already stored.
    pub done: u64,
    /// Of `done`, tiles that were already stored.
    pub skipped: u64,
    /// Tiles that failed for good (their jobs are in the dead-letter queue).
    pub failed: u64,
    /// Shallowest zoom.
    pub min_zoom: u64,
    /// Deepest zoom.
    pub max_zoom: u64,
    /// Style.
    pub style: String,
}

/// Why a seed body could not be read: too large (a chunked body past the limit: a declared
/// length past it is refused before the handler) is 413, one that did not arrive within the
/// body deadline is 408, anything else (not JSON, wrong content type) is 400.
/// The body limit's error arrives wrapped in the deadline's, so axum's own status for it
/// (413) is lost; both are found by walking the causes.
fn body_error(rejection: JsonRejection) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
    while let Some(error) = cause {
        if error.is::<http_body_util::LengthLimitError>() {
            return ApiError::rejected(StatusCode::PAYLOAD_TOO_LARGE, error.to_string());
        }
        if error.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::rejected(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive within the body read timeout",
            );
        }
        cause = error.source();
    }
    ApiError::BadRequest {
        code: ErrorCode::InvalidBody,
        message: rejection.body_text(),
    }
}

/// `POST /v1/seeds`.
#[utoipa::path(post, path = "/v1/seeds", tag = "seeds", operation_id = "create_seed",
    summary = "Start a seed",
    description = "Pre-renders every tile of a zoom range, optionally inside a bounding box, \
        through the workers' bulk queue. Seeds of a deployment share quotas \
        (`FRACTILE_SEED_MAX_ACTIVE`, `FRACTILE_SEED_MAX_QUEUED_TILES`).",
    security(("seed_token" = [])),
    request_body = SeedRequest,
    responses(
        (status = 202, description = "Accepted; jobs are being queued.", body = SeedStatus,
            headers(("Location" = String, description = "`/v1/seeds/{id}`")),
            links(
                ("get_seed" = (operation_id = "get_seed", parameters(("id" = "$response.body#/id")))),
                ("cancel_seed" = (operation_id = "cancel_seed", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 400, description = "`invalid_body` (not a JSON object of these fields) or \
            `invalid_seed` (`min_zoom` above `max_zoom`, beyond the maximum zoom, an empty or \
            inverted bbox).", body = ErrorBody),
        SeedAccessRefusals,
        (status = 408, description = "`request_timeout`: the body did not arrive within \
            `FRACTILE_BODY_READ_TIMEOUT`.", body = ErrorBody),
        (status = 413, description = "`body_too_large`: over 16 KiB.", body = ErrorBody),
        (status = 422, description = "`seed_too_large`: more tiles than \
            `FRACTILE_SEED_MAX_TILES` or `FRACTILE_SEED_MAX_QUEUED_TILES`.", body = ErrorBody),
        (status = 429, description = "`seed_quota_active` or `seed_quota_tiles`: the \
            deployment's seed quotas are used up.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait."))),
        (status = 503, description = "`seed_store_unavailable`: the state store (Redis) is \
            unreachable (`Retry-After: 1`). `seed_store_full`: it is full and refuses writes \
            (`Retry-After: 60`). `queue_unavailable`: the render queue is unreachable.",
            body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ))]
pub async fn create(
    State(seeds): State<Seeds>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(body_error)?;
    let request = seed_request(body)?;
    let settings = &seeds.0.settings;
    let expansions = seeds.expansions()?;
    let backends = expansions.backends();
    // A seed larger than the queued-tiles quota could never be admitted: refuse it for good.
    let largest = settings.max_tiles.min(settings.quotas.max_queued_tiles);
    let plan = plan(&request, settings.max_zoom, largest)?;
    // A seed is nothing but queued jobs: refuse it while the queue cannot take them.
    if !backends.link.is_connected() {
        return Err(ApiError::unavailable(
            ErrorCode::QueueUnavailable,
            "the render queue is unavailable; retry later",
        ));
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut record = SeedRecord::new(
        plan.total,
        (request.min_zoom, request.max_zoom),
        request.bbox,
        plan.style.name(),
        unix_ms(SystemTime::now()),
    );
    // The seed's trace is this request's: its expansion joins it wherever it runs.
    record.traceparent = fractile_telemetry::context::traceparent(&tracing::Span::current());
    let expander = expansions.expander();
    let seed = NewSeed {
        id: &id,
        record: &record,
        ttl: RECORD_TTL,
        lease: Some((&expander.holder, expander.lease)),
    };
    let quotas = settings.quotas;
    match backends
        .seeds
        .seed_admit(&seed, quotas)
        .await
        .map_err(store_failed)?
    {
        SeedAdmission::Admitted => {}
        SeedAdmission::TooManyActive { active } => {
            return Err(ApiError::TooManyRequests {
                code: ErrorCode::SeedQuotaActive,
                message: format!(
                    "{active} seeds are running, the most this deployment runs at once \
                     (FRACTILE_SEED_MAX_ACTIVE={}); retry when one finishes or cancel one",
                    quotas.max_active
                ),
                retry_after: QUOTA_RETRY_AFTER_SECONDS,
            });
        }
        SeedAdmission::TooManyQueuedTiles { queued } => {
            return Err(ApiError::TooManyRequests {
                code: ErrorCode::SeedQuotaTiles,
                message: format!(
                    "unfinished seeds hold {queued} tiles; {} more would pass this \
                     deployment's limit (FRACTILE_SEED_MAX_QUEUED_TILES={}); retry later",
                    plan.total, quotas.max_queued_tiles
                ),
                retry_after: QUOTA_RETRY_AFTER_SECONDS,
            });
        }
    }
    tracing::info!(seed = %id, tiles = plan.total, "seed accepted");
    // The record as just written: no second round trip that could fail after the accept.
    let status = status_of(&id, &record);
    expansions.spawn(id.clone(), plan, 0, record.traceparent.as_deref());

    let mut response = (StatusCode::ACCEPTED, Json(status)).into_response();
    let location = HeaderValue::from_str(&format!("/v1/seeds/{id}")).map_err(ApiError::internal)?;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// `GET /v1/seeds/{id}`.
#[utoipa::path(get, path = "/v1/seeds/{id}", tag = "seeds", operation_id = "get_seed",
    summary = "A seed's progress",
    security(("seed_token" = [])),
    params(("id" = String, Path, description = "The seed's id (32 lowercase hex digits).")),
    responses(
        (status = 200, description = "The seed's progress.", body = SeedStatus),
        SeedAccessRefusals,
        SeedLookupRefusals,
    ))]
pub async fn show(
    State(seeds): State<Seeds>,
    Path(id): Path<String>,
) -> Result<Json<SeedStatus>, ApiError> {
    let store = &seeds.expansions()?.backends().seeds;
    Ok(Json(read_status(store, &valid_id(&id)?).await?))
}

/// `DELETE /v1/seeds/{id}`: workers skip the seed's remaining jobs; a done seed stays done.
#[utoipa::path(delete, path = "/v1/seeds/{id}", tag = "seeds", operation_id = "cancel_seed",
    summary = "Cancel a seed",
    security(("seed_token" = [])),
    params(("id" = String, Path, description = "The seed's id (32 lowercase hex digits).")),
    responses(
        (status = 200, description = "The seed's record after the cancel: `cancelled` (workers \
            skip its remaining jobs; it stays readable), or `done`, unchanged, when every tile \
            was already accounted for.", body = SeedStatus),
        SeedAccessRefusals,
        SeedLookupRefusals,
    ))]
pub async fn cancel(
    State(seeds): State<Seeds>,
    Path(id): Path<String>,
) -> Result<Json<SeedStatus>, ApiError> {
    let store = &seeds.expansions()?.backends().seeds;
    let id = valid_id(&id)?;
    let existed = store.seed_cancel(&id).await.map_err(store_failed)?;
    if !existed {
        return Err(not_found());
    }
    Ok(Json(read_status(store, &id).await?))
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        code: ErrorCode::SeedNotFound,
        message: "no such seed".into(),
    }
}

/// Seed ids are 32 lowercase hex digits (a random UUID); anything else names no seed.
fn valid_id(id: &str) -> Result<String, ApiError> {
    let ok = id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(id.to_owned())
    } else {
        Err(not_found())
    }
}

async fn read_status(seeds: &SeedStore, id: &str) -> Result<SeedStatus, ApiError> {
    let record = seeds
        .seed_get(id)
        .await
        .map_err(store_failed)?
        .ok_or_else(not_found)?;
    Ok(status_of(id, &record))
}

fn status_of(id: &str, record: &SeedRecord) -> SeedStatus {
    SeedStatus {
        id: id.to_owned(),
        state: record.reported_state().to_owned(),
        total: record.total,
        queued: record.queued,
        done: record.done,
        skipped: record.skipped,
        failed: record.failed,
        min_zoom: u64::from(record.min_zoom),
        max_zoom: u64::from(record.max_zoom),
        style: record.style.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ids_are_32_lowercase_hex_digits() {
        assert!(valid_id("0123456789abcdef0123456789abcdef").is_ok());
        assert!(valid_id("0123456789ABCDEF0123456789abcdef").is_err());
        assert!(valid_id("../etc").is_err());
    }
}
