//! Seeds: bulk pre-rendering of a zoom range, optionally inside a bounding box.
//!
//! `POST /v1/seeds` counts the tiles first (cheap: one multiplication per zoom level) and
//! refuses a seed over `FRACTILE_SEED_MAX_TILES` before anything is queued. An accepted seed
//! is recorded in Redis, so any replica can report on it, and expanded into jobs by a
//! background task, one bounded batch at a time: tiles already in Redis are skipped
//! (counted as done), the rest published to the bulk queue with confirms. Workers record
//! each finished tile in a set (so a redelivered job is not counted twice) and skip the
//! jobs of a cancelled seed.
//!
//! Seeding is an operator action, so every seed route sits behind [`authorize`]: the bearer
//! token of `FRACTILE_SEED_TOKEN`, compared in constant time; without one configured the
//! routes answer 403. Seeds of a deployment are limited together, whichever replica took
//! them: `FRACTILE_SEED_MAX_ACTIVE` seeds at once and `FRACTILE_SEED_MAX_QUEUED_TILES`
//! tiles not yet rendered, checked and recorded in one Redis script
//! ([`TileStore::seed_admit`]); beyond them, 429 + Retry-After. With Redis unreachable
//! every seed route answers 503 + Retry-After, and the failure is logged once per interval.
//!
//! Limitation: expansion runs on the replica that accepted the seed. If that replica dies
//! mid-expansion, the seed stays `expanding` with the tiles queued so far, and holds its
//! place in the quotas until it is cancelled (`DELETE`) or its record expires.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fractile_queue::{Publisher, PublisherLink, QueueError, RenderJob, unix_ms};
use fractile_render::{MaxZoom, Style, TileKey, TileRange};
use fractile_runtime::ratelimited_log::RateLimitedLog;
use fractile_tile_store::{
    NewSeed, SeedAdmission, SeedFields, SeedOutcome, SeedState, StoreError, TileStore,
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::config::SeedToken;
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
/// At most one log line per this interval while Redis fails seed requests.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Who may use the seed routes: the holder of the configured token, or nobody.
#[derive(Clone)]
pub struct SeedGate {
    token: Option<SeedToken>,
}

impl SeedGate {
    /// A gate for `token`; `None` closes the seed routes (403).
    pub fn new(token: Option<SeedToken>) -> Self {
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
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized {
                code: "missing_token",
                message: "the seed routes need `Authorization: Bearer <FRACTILE_SEED_TOKEN>`",
            });
        };
        let invalid = || ApiError::Unauthorized {
            code: "invalid_token",
            message: "the bearer token is malformed or wrong",
        };
        // `Bearer <token>`; the scheme is case-insensitive (RFC 9110 §11.1).
        let presented = value
            .as_bytes()
            .split_at_checked(7)
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
            .map(|(_, token)| token.trim_ascii())
            .ok_or_else(invalid)?;
        // Constant time in the contents; slices of different lengths differ at once, which
        // tells a guesser only the length, not the token.
        if bool::from(presented.ct_eq(expected.expose())) {
            Ok(())
        } else {
            Err(invalid())
        }
    }
}

/// Middleware in front of every seed route: lets a request through only with the token.
pub async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.seed_gate.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// A failed store call as a response: 503 + Retry-After while Redis is unreachable (logged
/// once per [`LOG_EVERY`], with the number left out), 500 for a value this version did not
/// write.
fn store_failed(error: StoreError) -> ApiError {
    if let StoreError::Malformed(_) = error {
        return ApiError::Internal(error.to_string());
    }
    static UNAVAILABLE: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
    if let Some(suppressed) = UNAVAILABLE.check() {
        tracing::warn!(%error, suppressed, "seed request failed: Redis unavailable; answering 503");
    }
    ApiError::unavailable(
        "seed_store_unavailable",
        "seed records are unreachable (Redis); retry shortly",
    )
}

/// The body of `POST /v1/seeds`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeedRequest {
    /// Shallowest zoom to render.
    pub min_zoom: u8,
    /// Deepest zoom to render.
    pub max_zoom: u8,
    /// Only tiles intersecting this rectangle of the complex plane (default: everything).
    #[serde(default)]
    pub bbox: Option<BBox>,
    /// Style (default `classic`).
    #[serde(default)]
    pub style: Option<String>,
}

/// A rectangle of the complex plane.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BBox {
    /// Left edge.
    pub min_re: f64,
    /// Bottom edge.
    pub min_im: f64,
    /// Right edge.
    pub max_re: f64,
    /// Top edge.
    pub max_im: f64,
}

/// What `GET /v1/seeds/{id}` reports.
#[derive(Debug, Serialize, Deserialize)]
pub struct SeedStatus {
    /// The seed's id.
    pub id: String,
    /// `expanding` (jobs being queued), `running`, `done`, `cancelled`, `failed` (could not
    /// queue its jobs) or `interrupted` (the accepting replica shut down mid-expansion).
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
struct Plan {
    ranges: Vec<TileRange>,
    style: Style,
    total: u64,
}

fn plan(request: &SeedRequest, max_zoom: MaxZoom, limit: u64) -> Result<Plan, ApiError> {
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

fn seeding(state: &AppState) -> Result<(TileStore, PublisherLink), ApiError> {
    let backends = state.tiles.backends();
    match backends.and_then(|b| b.publisher.clone().map(|p| (b.store.clone(), p))) {
        Some(both) => Ok(both),
        None => Err(ApiError::NotImplemented {
            code: "seeding_unavailable",
            message: "seeding needs FRACTILE_REDIS_URL and FRACTILE_AMQP_URL (workers render seeds)",
        }),
    }
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
pub async fn create(
    State(state): State<AppState>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(body_error)?;
    let request = seed_request(body)?;
    let (store, link) = seeding(&state)?;
    // A seed larger than the queued-tiles quota could never be admitted: refuse it for good.
    let largest = state.seed_max_tiles.min(state.seed_quotas.max_queued_tiles);
    let plan = plan(&request, state.max_zoom, largest)?;
    // A seed is nothing but queued jobs: refuse it while the queue cannot take them.
    if !link.is_connected() {
        return Err(ApiError::unavailable(
            "queue_unavailable",
            "the render queue is unavailable; retry later",
        ));
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let fields = [
        ("state", SeedState::Expanding.as_str().to_owned()),
        ("total", plan.total.to_string()),
        ("queued", "0".into()),
        ("skipped", "0".into()),
        ("min_zoom", request.min_zoom.to_string()),
        ("max_zoom", request.max_zoom.to_string()),
        ("style", plan.style.name().to_owned()),
        ("created_unix_ms", unix_ms(SystemTime::now()).to_string()),
    ];
    let seed = NewSeed {
        id: &id,
        total: plan.total,
        fields: &fields,
        ttl: RECORD_TTL,
    };
    let quotas = state.seed_quotas;
    match store
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
    let mut recorded: SeedFields = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    recorded.insert("done".into(), "0".into());
    recorded.insert("failed".into(), "0".into());
    let status = status_of(&id, &recorded);
    let stop = state.background.clone();
    state
        .seed_tasks
        .spawn(expand(store.clone(), link, id.clone(), plan, stop));

    let mut response = (StatusCode::ACCEPTED, Json(status)).into_response();
    let location = HeaderValue::from_str(&format!("/v1/seeds/{id}"))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// The body as a [`SeedRequest`]. Only a JSON object is one: serde's derive also accepts
/// a sequence of the fields in order, so `[0,2]` would otherwise be a seed of zooms 0 to 2.
fn seed_request(body: serde_json::Value) -> Result<SeedRequest, ApiError> {
    let bad = |message: String| ApiError::BadRequest {
        code: "invalid_body",
        message,
    };
    if !body.is_object() {
        return Err(bad(
            "the body must be a JSON object, e.g. {\"min_zoom\": 0, \"max_zoom\": 6}".into(),
        ));
    }
    serde_json::from_value(body).map_err(|e| bad(format!("invalid seed request: {e}")))
}

/// `GET /v1/seeds/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SeedStatus>, ApiError> {
    let (store, _) = seeding(&state)?;
    Ok(Json(read_status(&store, &valid_id(&id)?).await?))
}

/// `DELETE /v1/seeds/{id}`: workers skip the seed's remaining jobs.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SeedStatus>, ApiError> {
    let (store, _) = seeding(&state)?;
    let id = valid_id(&id)?;
    let existed = store
        .seed_set(&id, "state", SeedState::Cancelled.as_str())
        .await
        .map_err(store_failed)?;
    if !existed {
        return Err(not_found());
    }
    Ok(Json(read_status(&store, &id).await?))
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

async fn read_status(store: &TileStore, id: &str) -> Result<SeedStatus, ApiError> {
    let fields = store
        .seed_get(id)
        .await
        .map_err(store_failed)?
        .ok_or_else(not_found)?;
    Ok(status_of(id, &fields))
}

fn status_of(id: &str, f: &SeedFields) -> SeedStatus {
    let n = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let stored = f.get("state").map_or("unknown", String::as_str);
    let (total, done, failed) = (n("total"), n("done"), n("failed"));
    // "running" becomes "done" when every tile is accounted for; workers only count.
    let state = match stored {
        running if running == SeedState::Running.as_str() && done + failed >= total => "done",
        other => other,
    };
    SeedStatus {
        id: id.to_owned(),
        state: state.to_owned(),
        total,
        queued: n("queued"),
        done,
        skipped: n("skipped"),
        failed,
        min_zoom: n("min_zoom"),
        max_zoom: n("max_zoom"),
        style: f.get("style").cloned().unwrap_or_default(),
    }
}

/// Expands a seed into bulk jobs, a batch at a time, skipping tiles already stored.
async fn expand(
    store: TileStore,
    link: PublisherLink,
    id: String,
    plan: Plan,
    stop: CancellationToken,
) {
    let style = plan.style;
    let mut tiles = plan
        .ranges
        .into_iter()
        .flat_map(TileRange::tiles)
        .map(|tile| TileKey { tile, style });
    loop {
        let batch: Vec<TileKey> = tiles.by_ref().take(BATCH).collect();
        if batch.is_empty() {
            break;
        }
        if stop.is_cancelled() {
            let _ = store
                .seed_set(&id, "state", SeedState::Interrupted.as_str())
                .await;
            return;
        }
        if let Ok(Some(state)) = store.seed_field(&id, "state").await
            && state == SeedState::Cancelled.as_str()
        {
            return;
        }
        let mut attempt = 1;
        let first_failure = std::time::Instant::now();
        let mut delays = fractile_queue::backoff_delays(Duration::from_secs(5));
        // The publisher is fetched again on every attempt: the link replaces a dead one.
        while let Err(error) = expand_batch(&store, link.publisher(), &id, &batch).await {
            tracing::warn!(seed = %id, %error, attempt, "queueing a seed batch failed");
            if first_failure.elapsed() >= BATCH_RETRY_FOR || stop.is_cancelled() {
                let _ = store
                    .seed_set(&id, "state", SeedState::Failed.as_str())
                    .await;
                return;
            }
            attempt += 1;
            let delay = delays.next().unwrap_or(Duration::from_secs(5));
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
    // Only move on if nobody cancelled meanwhile.
    if let Ok(Some(state)) = store.seed_field(&id, "state").await
        && state == SeedState::Expanding.as_str()
    {
        let _ = store
            .seed_set(&id, "state", SeedState::Running.as_str())
            .await;
    }
    tracing::info!(seed = %id, "seed expanded");
}

/// One batch: skip what Redis has, publish the rest and wait for every confirm.
async fn expand_batch(
    store: &TileStore,
    publisher: Option<Publisher>,
    id: &str,
    batch: &[TileKey],
) -> Result<(), String> {
    let publisher = publisher.ok_or_else(|| QueueError::NotConnected.to_string())?;
    let stored = store.exists(batch).await.map_err(|e| e.to_string())?;
    let mut pending = Vec::new();
    let mut already = Vec::new();
    for (key, stored) in batch.iter().zip(&stored) {
        if *stored {
            already.push(*key);
        } else {
            pending.push(
                publisher
                    .publish(&RenderJob::bulk(key, id))
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    let queued = i64::try_from(pending.len()).unwrap_or(i64::MAX);
    let confirmed = async {
        for confirm in pending {
            confirm.confirmed().await?;
        }
        Ok::<_, QueueError>(())
    };
    tokio::time::timeout(BATCH_CONFIRM_TIMEOUT, confirmed)
        .await
        .unwrap_or(Err(QueueError::Timeout("confirms")))
        .map_err(|e| e.to_string())?;
    let counted = async {
        store.seed_add(id, "queued", queued).await?;
        if !already.is_empty() {
            store
                .seed_add(
                    id,
                    "skipped",
                    i64::try_from(already.len()).unwrap_or(i64::MAX),
                )
                .await?;
            store.seed_mark(id, SeedOutcome::Done, &already).await?;
        }
        Ok::<_, fractile_tile_store::StoreError>(())
    };
    counted.await.map_err(|e| e.to_string())
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
