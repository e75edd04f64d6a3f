//! Seeds: bulk pre-rendering of a zoom range, optionally inside a bounding box.
//!
//! `POST /v1/seeds` counts the tiles first (cheap: one multiplication per zoom level) and
//! refuses a seed over `FRACTILE_SEED_MAX_TILES` before anything is queued. An accepted seed
//! is recorded in the state store, a Redis that neither evicts nor forgets
//! (`FRACTILE_STATE_REDIS_URL`; [`fractile_tile_store::seed`] owns the record and every
//! change to it), so any replica can report on it, and expanded into jobs by a background
//! task, one bounded batch at a time: tiles already in the cache are skipped (counted as
//! done), the rest published to the bulk queue with confirms. Workers record each finished
//! tile (a redelivered job is not counted twice) and skip the jobs of a cancelled seed.
//!
//! Expansion is durable. The accepting replica holds a lease on it (`FRACTILE_SEED_LEASE`),
//! renews it while it works and records a cursor with each batch; every replica looks for
//! expansions whose lease ran out ([`start_takeover`]) and continues them from the cursor,
//! so a seed whose replica is killed still finishes, without anyone asking. A clean
//! shutdown gives the lease up at once. When the bulk queue is full (the broker refuses
//! publishes past its maximum length with a nack), expansion backs off and retries the
//! refused jobs, for as long as it takes: a full queue drains as workers render.
//!
//! Seeding is an operator action, so every seed route sits behind [`authorize`]: the bearer
//! token of `FRACTILE_SEED_TOKEN`, compared in constant time; without one configured the
//! routes answer 403. Seeds of a deployment are limited together, whichever replica took
//! them: `FRACTILE_SEED_MAX_ACTIVE` seeds at once and `FRACTILE_SEED_MAX_QUEUED_TILES`
//! tiles not yet rendered, checked and recorded in one Redis script
//! ([`SeedStore::seed_admit`]); beyond them, 429 + Retry-After. With the state store
//! unreachable every seed route answers 503 + Retry-After, and with it full (it refuses
//! writes rather than evict) `POST` answers 503 `seed_store_full`; each failure is logged
//! once per interval. Tiles never depend on the state store.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fractile_http::bearer::{BearerRefusal, check_bearer};
use fractile_queue::{Publisher, PublisherLink, QueueError, RenderJob, unix_ms};
use fractile_render::{MaxZoom, Style, TileKey, TileRange};
use fractile_settings::Secret;
use fractile_telemetry::RateLimitedLog;
pub use fractile_tile_store::SeedBBox as BBox;
use fractile_tile_store::{
    LeaseStep, NewSeed, SeedAdmission, SeedOutcome, SeedRecord, SeedState, SeedStore, StoreError,
    TileStore,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use fractile_http::openapi::ErrorBody;

use crate::error::ApiError;
use crate::state::AppState;

/// Tiles checked against Redis and published per round trip.
const BATCH: usize = 500;
/// How long a seed's record is kept.
const RECORD_TTL: Duration = Duration::from_secs(7 * 86_400);
/// How long one batch is retried (the broker may be restarting or recovering) before the
/// seed is marked failed.
const BATCH_RETRY_FOR: Duration = Duration::from_secs(120);
/// Time allowed for a batch's confirms: a broker that takes jobs but never confirms them
/// (a resource alarm) must not stall the expansion for ever.
const BATCH_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Seconds a client refused by a seed quota is asked to wait: seeds take minutes, so
/// retrying sooner would only be refused again.
pub const QUOTA_RETRY_AFTER_SECONDS: u32 = 60;
/// `Retry-After` of a 503 `seed_store_full`: a full store frees room when seeds expire or an
/// operator acts, not within seconds.
pub const STORE_FULL_RETRY_AFTER_SECONDS: u32 = 60;
/// Longest pause between two attempts at jobs the full bulk queue refused.
const QUEUE_FULL_MAX_DELAY: Duration = Duration::from_secs(5);
/// At most one log line per this interval while Redis fails seed requests.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Who may use the seed routes: the holder of the configured token, or nobody.
#[derive(Clone)]
pub struct SeedGate {
    token: Option<Secret>,
}

impl SeedGate {
    /// A gate for `token`; `None` closes the seed routes (403).
    pub fn new(token: Option<Secret>) -> Self {
        SeedGate { token }
    }

    /// Whether `headers` carry the configured token as `Authorization: Bearer <token>`.
    fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.token else {
            return Err(ApiError::Forbidden {
                code: "seeding_disabled",
                message: "the seed routes are disabled: set FRACTILE_SEED_TOKEN on the api \
                          (at least 16 bytes, e.g. `openssl rand -hex 32`) to enable them, and \
                          send it as `Authorization: Bearer <token>`",
            });
        };
        check_bearer(headers, expected).map_err(|refusal| match refusal {
            BearerRefusal::Missing => ApiError::Unauthorized {
                code: "missing_token",
                message: "the seed routes need `Authorization: Bearer <FRACTILE_SEED_TOKEN>`",
            },
            BearerRefusal::Invalid => ApiError::Unauthorized {
                code: "invalid_token",
                message: "the bearer token is malformed or wrong",
            },
        })
    }
}

/// Middleware in front of every seed route: lets a request through only with the token.
pub async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.seed_gate.check(request.headers()) {
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
        return ApiError::Internal(error.to_string());
    }
    if error.is_out_of_memory() {
        static FULL: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
        if let Some(suppressed) = FULL.check() {
            tracing::warn!(%error, suppressed, "seed request failed: the state store is full (maxmemory, noeviction); answering 503");
        }
        return ApiError::unavailable_for(
            "seed_store_full",
            "the store of seed records is full; retry later, or ask the operator to make room",
            STORE_FULL_RETRY_AFTER_SECONDS,
        );
    }
    static UNAVAILABLE: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
    if let Some(suppressed) = UNAVAILABLE.check() {
        tracing::warn!(%error, suppressed, "seed request failed: the state store (Redis) is unavailable; answering 503");
    }
    ApiError::unavailable(
        "seed_store_unavailable",
        "seed records are unreachable (Redis); retry shortly",
    )
}

/// The body of `POST /v1/seeds`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"min_zoom": 0, "max_zoom": 2, "style": "fire"}))]
pub struct SeedRequest {
    /// Shallowest zoom to render.
    #[schema(maximum = 32)]
    pub min_zoom: u8,
    /// Deepest zoom to render: at least `min_zoom`, at most the deployment's maximum zoom.
    #[schema(maximum = 32)]
    pub max_zoom: u8,
    /// Only tiles intersecting this rectangle of the complex plane (default: everything).
    #[serde(default)]
    #[schema(value_type = Option<crate::schemas::SeedBBox>)]
    pub bbox: Option<BBox>,
    /// Style (default `classic`).
    #[serde(default)]
    #[schema(value_type = Option<crate::schemas::StyleName>)]
    pub style: Option<String>,
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

/// The tile ranges of a request, validated.
#[derive(Debug)]
pub struct Plan {
    /// One range per zoom level that has tiles in the request, shallowest first.
    pub ranges: Vec<TileRange>,
    /// The style every tile is rendered in.
    pub style: Style,
    /// Tiles in all the ranges together: at least 1, at most the limit.
    pub total: u64,
}

/// Validates a seed request into a [`Plan`]: zooms in order and within `max_zoom`, a known
/// style, a finite non-empty bbox, and between 1 and `limit` tiles (over it: 422
/// `seed_too_large`; anything else wrong: 400 `invalid_seed`). Pure: no store or queue is
/// asked, so the fuzz target `seed_request` (fuzz/) calls it directly.
pub fn plan(request: &SeedRequest, max_zoom: MaxZoom, limit: u64) -> Result<Plan, ApiError> {
    let bad = |message: String| ApiError::BadRequest {
        code: "invalid_seed",
        message,
    };
    if request.min_zoom > request.max_zoom {
        return Err(bad(format!(
            "min_zoom {} is above max_zoom {}",
            request.min_zoom, request.max_zoom
        )));
    }
    if request.max_zoom > max_zoom.get() {
        return Err(bad(format!(
            "max_zoom {} is beyond the maximum zoom {}",
            request.max_zoom,
            max_zoom.get()
        )));
    }
    let style = match &request.style {
        None => Style::default(),
        Some(name) => name
            .parse()
            .map_err(|e: fractile_render::UnknownStyle| bad(e.to_string()))?,
    };
    let mut ranges = Vec::new();
    for z in request.min_zoom..=request.max_zoom {
        let range = match request.bbox {
            None => Some(TileRange::whole(z, max_zoom)),
            Some(b) => {
                let valid = [b.min_re, b.min_im, b.max_re, b.max_im]
                    .iter()
                    .all(|v| v.is_finite())
                    && b.min_re < b.max_re
                    && b.min_im < b.max_im;
                if !valid {
                    return Err(bad(
                        "bbox must be finite with min_re < max_re and min_im < max_im".into(),
                    ));
                }
                TileRange::covering(z, max_zoom, b.min_re, b.min_im, b.max_re, b.max_im).transpose()
            }
        };
        if let Some(range) = range {
            ranges.push(range.map_err(|e| bad(e.to_string()))?);
        }
    }
    let total = ranges
        .iter()
        .map(TileRange::count)
        .fold(0u64, u64::saturating_add);
    if total > limit {
        return Err(ApiError::Unprocessable {
            code: "seed_too_large",
            message: format!("this seed covers {total} tiles; the limit is {limit}"),
        });
    }
    if total == 0 {
        return Err(bad("the bbox contains no tiles".into()));
    }
    Ok(Plan {
        ranges,
        style,
        total,
    })
}

/// What seeding needs: the state store for the records, the tile cache to skip stored
/// tiles, and the render queue.
#[derive(Clone)]
struct Seeding {
    seeds: SeedStore,
    tiles: TileStore,
    link: PublisherLink,
}

fn seeding(state: &AppState) -> Result<Seeding, ApiError> {
    let backends = state.tiles.backends();
    let seeding = backends.and_then(|b| {
        b.publisher.clone().map(|link| Seeding {
            seeds: b.seeds.clone(),
            tiles: b.store.clone(),
            link,
        })
    });
    seeding.ok_or(ApiError::NotImplemented {
        code: "seeding_unavailable",
        message: "seeding needs FRACTILE_REDIS_URL and FRACTILE_AMQP_URL (workers render seeds)",
    })
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
        code: "invalid_body",
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
        (status = 401, description = "`missing_token` or `invalid_token`: no or a wrong \
            `Authorization: Bearer <FRACTILE_SEED_TOKEN>`.", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"fractile\"`, with `error=\"invalid_token\"` when a token was sent."))),
        (status = 403, description = "`seeding_disabled`: `FRACTILE_SEED_TOKEN` is not set.",
            body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body did not arrive within \
            `FRACTILE_BODY_READ_TIMEOUT`.", body = ErrorBody),
        (status = 413, description = "`body_too_large`: over 16 KiB.", body = ErrorBody),
        (status = 422, description = "`seed_too_large`: more tiles than \
            `FRACTILE_SEED_MAX_TILES` or `FRACTILE_SEED_MAX_QUEUED_TILES`.", body = ErrorBody),
        (status = 429, description = "`seed_quota_active` or `seed_quota_tiles`: the \
            deployment's seed quotas are used up.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait."))),
        (status = 500, description = "`internal`: a seed record this version did not write.",
            body = ErrorBody),
        (status = 501, description = "`seeding_unavailable`: the api runs without Redis and \
            RabbitMQ (embedded mode); seeds need workers.", body = ErrorBody),
        (status = 503, description = "`seed_store_unavailable`: the state store (Redis) is \
            unreachable (`Retry-After: 1`). `seed_store_full`: it is full and refuses writes \
            (`Retry-After: 60`). `queue_unavailable`: the render queue is unreachable.",
            body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ))]
pub async fn create(
    State(state): State<AppState>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(body_error)?;
    let request = seed_request(body)?;
    let seeding = seeding(&state)?;
    // A seed larger than the queued-tiles quota could never be admitted: refuse it for good.
    let largest = state.seed_max_tiles.min(state.seed_quotas.max_queued_tiles);
    let plan = plan(&request, state.max_zoom, largest)?;
    // A seed is nothing but queued jobs: refuse it while the queue cannot take them.
    if !seeding.link.is_connected() {
        return Err(ApiError::unavailable(
            "queue_unavailable",
            "the render queue is unavailable; retry later",
        ));
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let record = SeedRecord::new(
        plan.total,
        (request.min_zoom, request.max_zoom),
        request.bbox,
        plan.style.name(),
        unix_ms(SystemTime::now()),
    );
    let expander = &state.seed_expander;
    let seed = NewSeed {
        id: &id,
        record: &record,
        ttl: RECORD_TTL,
        lease: Some((&expander.holder, expander.lease)),
    };
    let quotas = state.seed_quotas;
    match seeding
        .seeds
        .seed_admit(&seed, quotas)
        .await
        .map_err(store_failed)?
    {
        SeedAdmission::Admitted => {}
        SeedAdmission::TooManyActive { active } => {
            return Err(ApiError::TooManyRequests {
                code: "seed_quota_active",
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
                code: "seed_quota_tiles",
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
    spawn_expansion(&state, seeding, id.clone(), plan, 0);

    let mut response = (StatusCode::ACCEPTED, Json(status)).into_response();
    let location = HeaderValue::from_str(&format!("/v1/seeds/{id}"))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// The body as a [`SeedRequest`]. Only a JSON object is one: serde's derive also accepts
/// a sequence of the fields in order, so `[0,2]` would otherwise be a seed of zooms 0 to 2.
/// Anything else is 400 `invalid_body`.
pub fn seed_request(body: serde_json::Value) -> Result<SeedRequest, ApiError> {
    let bad = |message: String| ApiError::BadRequest {
        code: "invalid_body",
        message,
    };
    if !body.is_object() {
        return Err(bad(
            "the body must be a JSON object, e.g. {\"min_zoom\": 0, \"max_zoom\": 6}".into(),
        ));
    }
    // The same for the bbox: `[min_re, min_im, max_re, max_im]` is not one.
    if body
        .get("bbox")
        .is_some_and(|b| !b.is_object() && !b.is_null())
    {
        return Err(bad(
            "bbox must be a JSON object {\"min_re\", \"min_im\", \"max_re\", \"max_im\"} or null"
                .into(),
        ));
    }
    serde_json::from_value(body).map_err(|e| bad(format!("invalid seed request: {e}")))
}

/// `GET /v1/seeds/{id}`.
#[utoipa::path(get, path = "/v1/seeds/{id}", tag = "seeds", operation_id = "get_seed",
    summary = "A seed's progress",
    security(("seed_token" = [])),
    params(("id" = String, Path, description = "The seed's id (32 lowercase hex digits).")),
    responses(
        (status = 200, description = "The seed's progress.", body = SeedStatus),
        (status = 401, description = "`missing_token` or `invalid_token`: no or a wrong \
            `Authorization: Bearer <FRACTILE_SEED_TOKEN>`.", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"fractile\"`, with `error=\"invalid_token\"` when a token was sent."))),
        (status = 403, description = "`seeding_disabled`: `FRACTILE_SEED_TOKEN` is not set.",
            body = ErrorBody),
        (status = 404, description = "`seed_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`: a seed record this version did not write.",
            body = ErrorBody),
        (status = 501, description = "`seeding_unavailable`: the api runs without Redis and \
            RabbitMQ (embedded mode); seeds need workers.", body = ErrorBody),
        (status = 503, description = "`seed_store_unavailable`: the state store (Redis) is \
            unreachable.",
            body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ))]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SeedStatus>, ApiError> {
    let seeds = seeding(&state)?.seeds;
    Ok(Json(read_status(&seeds, &valid_id(&id)?).await?))
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
        (status = 401, description = "`missing_token` or `invalid_token`: no or a wrong \
            `Authorization: Bearer <FRACTILE_SEED_TOKEN>`.", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"fractile\"`, with `error=\"invalid_token\"` when a token was sent."))),
        (status = 403, description = "`seeding_disabled`: `FRACTILE_SEED_TOKEN` is not set.",
            body = ErrorBody),
        (status = 404, description = "`seed_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`: a seed record this version did not write.",
            body = ErrorBody),
        (status = 501, description = "`seeding_unavailable`: the api runs without Redis and \
            RabbitMQ (embedded mode); seeds need workers.", body = ErrorBody),
        (status = 503, description = "`seed_store_unavailable`: the state store (Redis) is \
            unreachable.",
            body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SeedStatus>, ApiError> {
    let seeds = seeding(&state)?.seeds;
    let id = valid_id(&id)?;
    let existed = seeds.seed_cancel(&id).await.map_err(store_failed)?;
    if !existed {
        return Err(not_found());
    }
    Ok(Json(read_status(&seeds, &id).await?))
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "seed_not_found",
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

/// This replica as a holder of expansion leases.
#[derive(Clone, Debug)]
pub struct Expander {
    /// The holder id written into the leases this replica takes: unique per process.
    pub holder: Arc<str>,
    /// How long a lease holds without renewal.
    pub lease: Duration,
}

impl Expander {
    /// A fresh holder id with leases of `lease`.
    pub fn new(lease: Duration) -> Self {
        Expander {
            holder: format!("api-{}", uuid::Uuid::new_v4().simple()).into(),
            lease,
        }
    }

    /// Pause between lease renewals, and between two looks for orphaned expansions.
    fn every(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(50))
    }
}

/// One expansion: what it needs, shared by its work and its lease keeper.
struct Expansion {
    seeding: Seeding,
    id: String,
    expander: Expander,
}

/// How an expansion ended.
enum Ended {
    /// Every tile is queued or found stored.
    Expanded,
    /// The broker refused the jobs for longer than [`BATCH_RETRY_FOR`].
    GaveUp,
    /// The lease is not ours any more (cancelled, or taken over): stop without a word.
    Lost(Option<SeedState>),
    /// Redis would not record progress: stop; the lease runs out and the expansion is
    /// taken over, by this replica or another, once Redis answers.
    Abandoned,
}

/// Expands seed `id` from `cursor` in the background, under this replica's lease.
fn spawn_expansion(state: &AppState, seeding: Seeding, id: String, plan: Plan, cursor: u64) {
    let expansion = Expansion {
        seeding,
        id,
        expander: state.seed_expander.clone(),
    };
    let stop = state.background.clone();
    state
        .seed_tasks
        .spawn(async move { expansion.run(plan, cursor, stop).await });
}

/// Looks for expansions whose holder stopped renewing its lease (a replica killed or cut
/// off) every third of a lease, and continues each from its cursor. Runs until shutdown;
/// does nothing without Redis and the render queue.
pub fn start_takeover(state: &AppState) {
    let Ok(seeding) = seeding(state) else {
        return;
    };
    let (seeds, link) = (seeding.seeds.clone(), seeding.link.clone());
    let state = state.clone();
    let stop = state.background.clone();
    let expander = state.seed_expander.clone();
    state.seed_tasks.clone().spawn(async move {
        static FAILED: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(expander.every()) => {}
            }
            // Taking a seed over while its jobs cannot be queued would only fail it.
            if !link.is_connected() {
                continue;
            }
            let taken = seeds.seed_take_over(&expander.holder, expander.lease).await;
            let id = match taken {
                Ok(Some(id)) => id,
                Ok(None) => continue,
                Err(error) => {
                    if let Some(suppressed) = FAILED.check() {
                        tracing::warn!(%error, suppressed, "looking for orphaned seed expansions failed");
                    }
                    continue;
                }
            };
            let record = match seeds.seed_get(&id).await {
                Ok(Some(record)) => record,
                // Gone meanwhile, or Redis failed: the lease runs out and it is found again.
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(seed = %id, %error, "reading a taken-over seed failed");
                    continue;
                }
            };
            let cursor = record.cursor.unwrap_or(0);
            match plan_of(&record, state.max_zoom) {
                Ok(plan) => {
                    tracing::info!(seed = %id, cursor, total = plan.total, "taking over a seed's expansion whose holder stopped");
                    spawn_expansion(&state, seeding.clone(), id, plan, cursor);
                }
                Err(error) => {
                    // Accepted by a replica configured differently (a deeper maximum zoom):
                    // this one cannot expand it; nor could it ever.
                    tracing::error!(seed = %id, ?error, "a taken-over seed cannot be planned here; marking it failed");
                    let _ = seeds
                        .seed_finish_expansion(&id, &expander.holder, SeedState::Failed)
                        .await;
                }
            }
        }
    });
}

/// The plan of a stored seed, rebuilt exactly as it was planned when accepted.
fn plan_of(record: &SeedRecord, max_zoom: MaxZoom) -> Result<Plan, ApiError> {
    let request = SeedRequest {
        min_zoom: record.min_zoom,
        max_zoom: record.max_zoom,
        bbox: record.bbox,
        style: Some(record.style.clone()),
    };
    plan(&request, max_zoom, u64::MAX)
}

impl Expansion {
    /// Expands, keeping the lease, until done, stopped by shutdown (the lease is then
    /// released for another replica), or the lease is lost.
    async fn run(self, plan: Plan, cursor: u64, stop: CancellationToken) {
        let id = &self.id;
        let ended = tokio::select! {
            ended = self.expand(plan, cursor) => ended,
            lost = self.keep_lease() => Ended::Lost(lost),
            () = stop.cancelled() => {
                let released = self.seeding.seeds.seed_release(id, &self.expander.holder).await;
                tracing::info!(seed = %id, ?released, "shutting down mid-expansion; lease released for another replica");
                return;
            }
        };
        let to = match ended {
            Ended::Expanded => SeedState::Running,
            Ended::GaveUp => SeedState::Failed,
            Ended::Lost(state) => {
                tracing::info!(seed = %id, ?state, "stopped expanding: the seed is cancelled or another replica holds it");
                return;
            }
            Ended::Abandoned => {
                tracing::warn!(seed = %id, "stopped expanding: progress could not be recorded; the expansion will be taken over when Redis answers");
                return;
            }
        };
        match self
            .seeding
            .seeds
            .seed_finish_expansion(id, &self.expander.holder, to)
            .await
        {
            Ok(LeaseStep::Held) => tracing::info!(seed = %id, state = to.as_str(), "seed expanded"),
            Ok(LeaseStep::Lost(state)) => {
                tracing::info!(seed = %id, ?state, "expansion ended, but the seed was cancelled or taken over meanwhile");
            }
            // The lease runs out, another replica finds nothing left past the cursor and
            // finishes the expansion.
            Err(error) => {
                tracing::warn!(seed = %id, %error, "recording the end of an expansion failed")
            }
        }
    }

    /// Renews the lease every third of its length; returns when it is lost. A failed
    /// renewal is retried: the lease only runs out if Redis stays unreachable for longer.
    async fn keep_lease(&self) -> Option<SeedState> {
        static FAILED: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
        loop {
            tokio::time::sleep(self.expander.every()).await;
            match self
                .seeding
                .seeds
                .seed_renew(&self.id, &self.expander.holder, self.expander.lease)
                .await
            {
                Ok(LeaseStep::Held) => {}
                Ok(LeaseStep::Lost(state)) => return state,
                Err(error) => {
                    if let Some(suppressed) = FAILED.check() {
                        tracing::warn!(seed = %self.id, %error, suppressed, "renewing a seed lease failed");
                    }
                }
            }
        }
    }

    /// Queues the plan's tiles from `cursor`, a batch at a time, recording the cursor with
    /// each batch.
    async fn expand(&self, plan: Plan, mut cursor: u64) -> Ended {
        let style = plan.style;
        let mut tiles = plan
            .ranges
            .into_iter()
            .flat_map(TileRange::tiles)
            .skip(usize::try_from(cursor).unwrap_or(usize::MAX))
            .map(|tile| TileKey { tile, style });
        loop {
            let batch: Vec<TileKey> = tiles.by_ref().take(BATCH).collect();
            if batch.is_empty() {
                return Ended::Expanded;
            }
            let Some((queued, skipped)) = self.queue_batch(batch.clone()).await else {
                return Ended::GaveUp;
            };
            cursor += batch.len() as u64;
            if let Some(ended) = self.advance(cursor, queued, skipped).await {
                return ended;
            }
        }
    }

    /// Records a queued batch (cursor, counters, lease in one step), retrying while Redis
    /// fails for up to [`BATCH_RETRY_FOR`]. `None` to go on.
    async fn advance(&self, cursor: u64, queued: u64, skipped: u64) -> Option<Ended> {
        let started = Instant::now();
        let mut delays = fractile_queue::backoff_delays(Duration::from_secs(5));
        loop {
            let (id, holder, lease) = (&self.id, &self.expander.holder, self.expander.lease);
            match self
                .seeding
                .seeds
                .seed_advance(id, holder, lease, cursor, queued, skipped)
                .await
            {
                Ok(LeaseStep::Held) => return None,
                Ok(LeaseStep::Lost(state)) => return Some(Ended::Lost(state)),
                Err(error) if started.elapsed() < BATCH_RETRY_FOR => {
                    tracing::warn!(seed = %id, %error, "recording seed progress failed; retrying");
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
                }
                Err(_) => return Some(Ended::Abandoned),
            }
        }
    }

    /// Queues one batch: skips (and marks done) what Redis has, publishes the rest and
    /// waits for every confirm. Jobs the broker refuses because the bulk queue is full are
    /// published again after a pause, for as long as it stays full; other failures are
    /// retried for up to [`BATCH_RETRY_FOR`] (`None` past it). Answers the jobs queued and
    /// the tiles skipped.
    async fn queue_batch(&self, batch: Vec<TileKey>) -> Option<(u64, u64)> {
        static FULL: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
        let mut progress = BatchProgress {
            unchecked: Some(batch),
            left: Vec::new(),
            queued: 0,
            skipped: 0,
        };
        let mut failing_since: Option<Instant> = None;
        let mut delays = fractile_queue::backoff_delays(Duration::from_secs(5));
        let mut full_delays = fractile_queue::backoff_delays(QUEUE_FULL_MAX_DELAY);
        loop {
            let queued_before = progress.queued;
            let delay = match self.batch_step(&mut progress).await {
                Ok(()) => return Some((progress.queued, progress.skipped)),
                Err(BatchFailure::QueueFull) => {
                    // Not a failure: workers drain the queue. Wait as long as that takes,
                    // pausing longer only while no job at all gets in.
                    failing_since = None;
                    if progress.queued > queued_before {
                        full_delays = fractile_queue::backoff_delays(QUEUE_FULL_MAX_DELAY);
                    }
                    if let Some(suppressed) = FULL.check() {
                        tracing::warn!(seed = %self.id, refused = progress.left.len(), suppressed, "the bulk queue is full (publishes nacked); backing off");
                    }
                    full_delays.next().unwrap_or(QUEUE_FULL_MAX_DELAY)
                }
                Err(BatchFailure::Other(error)) => {
                    tracing::warn!(seed = %self.id, %error, "queueing a seed batch failed");
                    full_delays = fractile_queue::backoff_delays(QUEUE_FULL_MAX_DELAY);
                    if failing_since.get_or_insert_with(Instant::now).elapsed() >= BATCH_RETRY_FOR {
                        return None;
                    }
                    delays.next().unwrap_or(Duration::from_secs(5))
                }
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt at what is left of a batch.
    async fn batch_step(&self, p: &mut BatchProgress) -> Result<(), BatchFailure> {
        let other = |e: &dyn std::fmt::Display| BatchFailure::Other(e.to_string());
        if let Some(batch) = p.unchecked.take() {
            let stored = match self.seeding.tiles.exists(&batch).await {
                Ok(stored) => stored,
                Err(error) => {
                    p.unchecked = Some(batch);
                    return Err(other(&error));
                }
            };
            let (already, rest): (Vec<_>, Vec<_>) =
                batch.iter().zip(&stored).partition(|(_, stored)| **stored);
            let already: Vec<TileKey> = already.into_iter().map(|(k, _)| *k).collect();
            if let Err(error) = self
                .seeding
                .seeds
                .seed_mark(&self.id, SeedOutcome::Done, &already)
                .await
            {
                p.unchecked = Some(batch);
                return Err(other(&error));
            }
            p.skipped = already.len() as u64;
            p.left = rest.into_iter().map(|(k, _)| *k).collect();
        }
        if p.left.is_empty() {
            return Ok(());
        }
        // Fetched on every attempt: the link replaces a dead publisher.
        let publisher: Publisher = self
            .seeding
            .link
            .publisher()
            .ok_or_else(|| other(&QueueError::NotConnected))?;
        let mut sent = Vec::new();
        let mut failure: Option<QueueError> = None;
        let mut tiles = std::mem::take(&mut p.left).into_iter();
        for key in tiles.by_ref() {
            match publisher.publish(&RenderJob::bulk(&key, &self.id)).await {
                Ok(confirm) => sent.push((key, confirm)),
                Err(error) => {
                    p.left.push(key);
                    failure = Some(error);
                    break;
                }
            }
        }
        p.left.extend(tiles);
        // A broker that takes jobs but never confirms them (a resource alarm) must not
        // stall the expansion for ever.
        let deadline = tokio::time::Instant::now() + BATCH_CONFIRM_TIMEOUT;
        for (key, confirm) in sent {
            let verdict = tokio::time::timeout_at(deadline, confirm.confirmed())
                .await
                .unwrap_or(Err(QueueError::Timeout("confirms")));
            match verdict {
                Ok(()) => p.queued += 1,
                Err(error) => {
                    p.left.push(key);
                    // A refusal for a full queue is only reported if nothing worse happened.
                    if failure
                        .as_ref()
                        .is_none_or(|f| matches!(f, QueueError::Rejected(_)))
                    {
                        failure = Some(error);
                    }
                }
            }
        }
        match failure {
            None => Ok(()),
            Some(QueueError::Rejected(_)) => Err(BatchFailure::QueueFull),
            Some(error) => Err(other(&error)),
        }
    }
}

/// Where a batch stands: not yet checked against Redis, or the jobs still to queue.
struct BatchProgress {
    unchecked: Option<Vec<TileKey>>,
    left: Vec<TileKey>,
    queued: u64,
    skipped: u64,
}

/// Why an attempt at a batch did not queue all of it.
enum BatchFailure {
    /// The broker refused jobs with a nack: the bulk queue is at its maximum length.
    QueueFull,
    /// Anything else (not connected, a timeout, Redis).
    Other(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(min_zoom: u8, max_zoom: u8, bbox: Option<BBox>) -> SeedRequest {
        SeedRequest {
            min_zoom,
            max_zoom,
            bbox,
            style: None,
        }
    }

    fn max() -> MaxZoom {
        MaxZoom::new(20).expect("valid")
    }

    #[test]
    fn whole_zoom_levels_count_four_to_the_z() {
        let p = plan(&request(0, 6, None), max(), 10_000).expect("valid");
        assert_eq!(p.total, 5461);
    }

    #[test]
    fn seeds_over_the_limit_state_the_count_and_the_limit() {
        match plan(&request(0, 6, None), max(), 1000) {
            Err(ApiError::Unprocessable { code, message }) => {
                assert_eq!(code, "seed_too_large");
                assert!(
                    message.contains("5461") && message.contains("1000"),
                    "{message}"
                );
            }
            other => panic!("expected 422, got {:?}", other.err()),
        }
    }

    #[test]
    fn a_bbox_limits_the_tiles() {
        let bbox = BBox {
            min_re: -0.76,
            min_im: 0.09,
            max_re: -0.74,
            max_im: 0.11,
        };
        let p = plan(&request(8, 8, Some(bbox)), max(), 10_000).expect("valid");
        // Columns 127-128, rows 120-122 of zoom 8.
        assert_eq!(p.total, 6);
        let outside = BBox {
            min_re: 10.0,
            min_im: 10.0,
            max_re: 11.0,
            max_im: 11.0,
        };
        assert!(plan(&request(8, 8, Some(outside)), max(), 10_000).is_err());
    }

    /// serde's derive reads a struct from a JSON array too; the document says object.
    #[test]
    fn only_objects_are_seed_requests_and_bboxes() {
        use serde_json::json;
        assert!(seed_request(json!([0, 2])).is_err());
        assert!(
            seed_request(json!({"min_zoom": 0, "max_zoom": 1, "bbox": [-2.0, -1.0, 1.0, 1.0]}))
                .is_err()
        );
        let bbox = json!({"min_re": -2.0, "min_im": -1.0, "max_re": 1.0, "max_im": 1.0});
        assert!(seed_request(json!({"min_zoom": 0, "max_zoom": 1, "bbox": bbox})).is_ok());
        assert!(seed_request(json!({"min_zoom": 0, "max_zoom": 1, "bbox": null})).is_ok());
    }

    #[test]
    fn a_seed_of_the_deepest_whole_level_is_too_large() {
        // Zoom 32 has 2^64 tiles: counting them overflowed, so with FRACTILE_MAX_ZOOM=32 the
        // seed panicked (debug) or counted 0 tiles and was refused as empty (release).
        match plan(&request(32, 32, None), MaxZoom::LIMIT, 100_000) {
            Err(ApiError::Unprocessable { code, .. }) => assert_eq!(code, "seed_too_large"),
            other => panic!("expected 422, got {:?}", other.map(|p| p.total)),
        }
        let everything = plan(&request(0, 32, None), MaxZoom::LIMIT, u64::MAX).expect("valid");
        assert_eq!(everything.total, u64::MAX);
    }

    #[test]
    fn invalid_requests_are_refused() {
        assert!(plan(&request(5, 4, None), max(), 10).is_err());
        assert!(plan(&request(0, 21, None), max(), u64::MAX).is_err());
        let inverted = BBox {
            min_re: 1.0,
            min_im: 0.0,
            max_re: 0.0,
            max_im: 1.0,
        };
        assert!(plan(&request(0, 2, Some(inverted)), max(), 100).is_err());
        assert!(valid_id("0123456789abcdef0123456789abcdef").is_ok());
        assert!(valid_id("0123456789ABCDEF0123456789abcdef").is_err());
        assert!(valid_id("../etc").is_err());
    }
}
