//! Administration: backends with health and load, the queue, users and grants.
//! Every route takes [`AdminCaller`]: 403 `forbidden` for anyone else.

use std::collections::BTreeMap;

use crate::extract::{Path, Query};
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use station_core::Station;
use station_core::audit::{Actor, Via};
use station_core::points::{LedgerError, Posted};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, ErrorBody, MAX_PAGE, object, required_str};
use crate::AdminCaller;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new()
        .routes(routes!(admin_backends))
        .routes(routes!(admin_queue))
        .routes(routes!(admin_users))
        .routes(routes!(admin_grant))
        .routes(routes!(admin_audit))
}

/// One administrative action from the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditItem {
    /// Increasing with time; pass the last one as `before` for the next page.
    pub id: i64,
    /// When (Unix ms).
    pub at: i64,
    /// Who: `operator:<name>` (the server's command line) or `account:<id>`.
    pub actor: String,
    /// Through which door: `cli`, `api`, or a chat platform.
    pub via: String,
    /// What, as a dotted name (`points.grant`, `account.suspend`, `backend.add`, `lora.edit`, …).
    pub action: String,
    /// The same in words ("granted points").
    pub summary: String,
    /// To what: an account id, tool id, backend name, LoRA slug or group.
    pub target: String,
    /// The particulars, as a sentence.
    pub detail: String,
}

/// A page of the audit log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub items: Vec<AuditItem>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[schema(required = true)]
    pub next: Option<i64>,
}

/// Filters and paging for the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQueryParams {
    /// Items per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// Only entries older than this id (the `next` of the previous page).
    pub before: Option<i64>,
    /// Only entries at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Only this actor (`operator:<name>` or `account:<id>`).
    pub actor: Option<String>,
    /// Only this action (`points.grant`), or every action under a prefix ending in a dot (`points.`).
    pub action: Option<String>,
    /// Only entries about this target.
    pub target: Option<String>,
}

/// The audit log: every administrative action (grants, adjustments,
/// suspensions, role changes, tool switches, sponsors, backends, LoRA
/// catalog changes) with who did it, when and through which door. Entries
/// are never changed or removed.
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin", params(AuditQueryParams),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn admin_audit(
    State(station): State<Station>,
    _: AdminCaller,
    Query(q): Query<AuditQueryParams>,
) -> ApiResult<Json<AuditPage>> {
    let limit = super::Paging { limit: q.limit, before: None }.limit()?.min(MAX_PAGE);
    let query = station_core::audit::AuditQuery {
        since: q.since,
        actor: q.actor,
        action: q.action,
        target: q.target,
        before_id: q.before,
        limit: i64::from(limit) + 1,
    };
    let mut rows = station.audit_log(&query).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = if more { rows.last().map(|r| r.id) } else { None };
    let items = rows
        .into_iter()
        .map(|r| AuditItem {
            summary: station_core::audit::describe_action(&r.action).to_string(),
            id: r.id,
            at: r.at,
            actor: r.actor,
            via: r.via,
            action: r.action,
            target: r.target,
            detail: r.detail,
        })
        .collect();
    Ok(Json(AuditPage { items, next }))
}

/// One backend.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackendStatus {
    /// Name.
    pub name: String,
    /// Whether its last health check passed.
    pub healthy: bool,
    /// What the health check said.
    pub detail: String,
    /// Generations dispatched to or running on it now (all Station processes).
    pub active: i64,
}

/// One service (`comfyui`, `media`) and its backends.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceStatus {
    /// Service name.
    pub service: String,
    /// Jobs this process may run at once now.
    pub capacity: usize,
    /// Dispatched or running jobs of this service (all processes).
    pub active: i64,
    /// Its backends (none for the native media service).
    pub backends: Vec<BackendStatus>,
}

/// Backends by service.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackendsView {
    /// Registered services.
    pub services: Vec<ServiceStatus>,
}

/// A failed generation, for operators.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailureItem {
    /// Generation id.
    pub id: String,
    /// Owner account.
    pub account: String,
    /// Tool id.
    pub tool: String,
    /// Backend it last ran on.
    #[schema(required = true)]
    pub backend: Option<String>,
    /// Error code.
    #[schema(required = true)]
    pub error_code: Option<String>,
    /// Error text.
    #[schema(required = true)]
    pub error: Option<String>,
    /// Submissions made.
    pub attempts: i64,
    /// When it failed (Unix ms).
    #[schema(required = true)]
    pub finished_at: Option<i64>,
}

/// A generation dispatched to or running on a backend, for operators.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunningItem {
    /// Generation id.
    pub id: String,
    /// Owner account.
    pub account: String,
    /// Tool id.
    pub tool: String,
    /// `dispatched` or `running`.
    pub status: String,
    /// Backend it runs on.
    #[schema(required = true)]
    pub backend: Option<String>,
    /// Progress, 0–1.
    pub progress: f64,
    /// When it was created (Unix ms).
    pub created_at: i64,
}

/// The queue at a glance.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    /// Jobs waiting for a worker.
    pub depth: i64,
    /// Jobs per status.
    pub by_status: BTreeMap<String, i64>,
    /// Creation time of the oldest queued job (Unix ms).
    #[schema(required = true)]
    pub oldest_queued_at: Option<i64>,
    /// How long the oldest queued job has waited (ms).
    #[schema(required = true)]
    pub oldest_queued_age_ms: Option<i64>,
    /// Dispatched and running generations, oldest first (up to 20).
    pub running: Vec<RunningItem>,
    /// The latest failures, newest first.
    pub recent_failures: Vec<FailureItem>,
}

/// One account, for operators.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserItem {
    /// Account id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `user` or `admin`.
    pub role: String,
    /// Whether it may not run jobs.
    pub suspended: bool,
    /// Created (Unix ms).
    pub created_at: i64,
    /// Points owned.
    pub balance: i64,
    /// Points on hold.
    pub held: i64,
    /// Linked platform identities as `provider:subject`.
    pub identities: Vec<String>,
}

/// A page of accounts.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    /// By id.
    pub items: Vec<UserItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[schema(required = true)]
    pub next: Option<String>,
}

/// Paging for the user list (ordered by id).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// Items per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `next` value of the previous page.
    pub cursor: Option<String>,
}

/// `POST /api/v1/admin/users/{id}/grant`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)] // as `object` refuses them
#[schema(example = json!({"amount": 100, "reason": "welcome", "idempotency_key": "grant-2026-01"}))]
pub struct GrantRequest {
    /// Points to give (> 0).
    #[schema(minimum = 1)]
    amount: i64,
    /// Why (kept in the ledger).
    reason: String,
    /// Makes a retried request a no-op.
    idempotency_key: Option<String>,
}

/// The answer to a grant.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantResult {
    /// False when the idempotency key was already used (nothing changed).
    pub applied: bool,
    /// The account's balance after it.
    pub balance: i64,
    /// Points on hold.
    pub held: i64,
}

/// Backends with health and load.
#[utoipa::path(get, path = "/api/v1/admin/backends", tag = "admin",
    responses((status = 200, body = BackendsView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn admin_backends(State(station): State<Station>, _: AdminCaller) -> ApiResult<Json<BackendsView>> {
    // The same figures chat operators see with /queue.
    let services = station
        .service_health()
        .await?
        .into_iter()
        .map(|s| ServiceStatus {
            service: s.service,
            capacity: s.capacity,
            active: s.active,
            backends: s
                .backends
                .into_iter()
                .map(|b| BackendStatus { name: b.name, healthy: b.healthy, detail: b.detail, active: b.active })
                .collect(),
        })
        .collect();
    Ok(Json(BackendsView { services }))
}

/// How many running jobs the queue view lists.
const RUNNING_SHOWN: i64 = 20;

/// Queue depth, the oldest queued job, what runs now and recent failures.
#[utoipa::path(get, path = "/api/v1/admin/queue", tag = "admin",
    responses((status = 200, body = QueueView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn admin_queue(State(station): State<Station>, _: AdminCaller) -> ApiResult<Json<QueueView>> {
    let overview = station.queue_overview(RUNNING_SHOWN).await?;
    let failures = station.recent_failures(20).await?;
    Ok(Json(QueueView {
        depth: overview.depth,
        by_status: overview.by_status,
        oldest_queued_at: overview.oldest_queued_at,
        oldest_queued_age_ms: overview.oldest_queued_age_ms,
        running: overview
            .running
            .into_iter()
            .map(|j| RunningItem {
                id: j.id,
                account: j.account_id,
                tool: j.tool_id,
                status: j.status,
                backend: j.backend,
                progress: j.progress,
                created_at: j.created_at,
            })
            .collect(),
        recent_failures: failures
            .into_iter()
            .map(|j| FailureItem {
                id: j.id,
                account: j.account_id,
                tool: j.tool_id,
                backend: j.backend,
                error_code: j.error_code,
                error: j.error,
                attempts: j.attempts,
                finished_at: j.finished_at,
            })
            .collect(),
    }))
}

/// Accounts with their points and identities, by id.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", params(UserQuery),
    responses((status = 200, body = UserPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn admin_users(
    State(station): State<Station>,
    _: AdminCaller,
    Query(q): Query<UserQuery>,
) -> ApiResult<Json<UserPage>> {
    let limit = super::Paging { limit: q.limit, before: None }.limit()?.min(MAX_PAGE);
    let mut rows = station.accounts_page(q.cursor.as_deref(), i64::from(limit) + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = if more { rows.last().map(|r| r.id.clone()) } else { None };
    let mut items = vec![];
    for a in rows {
        let b = station.points(&a.id).await?;
        let ids = station.account_identities(&a.id).await?;
        items.push(UserItem {
            identities: ids.into_iter().map(|(p, s)| format!("{p}:{s}")).collect(),
            id: a.id,
            name: a.name,
            role: a.role.to_string(),
            suspended: a.suspended,
            created_at: a.created_at,
            balance: b.balance,
            held: b.held,
        });
    }
    Ok(Json(UserPage { items, next }))
}

/// Gives points to an account.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/grant", tag = "admin",
    params(("id" = String, Path, description = "Account id")),
    request_body = GrantRequest,
    responses((status = 200, body = GrantResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn admin_grant(
    State(station): State<Station>,
    AdminCaller(admin): AdminCaller,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<GrantResult>> {
    let obj = object(body, &["amount", "reason", "idempotency_key"])?;
    let amount = obj
        .get("amount")
        .and_then(Value::as_i64)
        .filter(|a| *a > 0)
        .ok_or_else(|| ApiError::invalid("amount", "is required: a whole number of points above 0"))?;
    let reason = required_str(&obj, "reason", "say why (it is kept in the ledger)")?;
    let key = match obj.get("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 200 => Some(format!("api-grant:{s}")),
        Some(_) => return Err(ApiError::invalid("idempotency_key", "expected a string of 1 to 200 characters")),
    };
    let account = station
        .account_by_id(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("account", &id, "GET /api/v1/admin/users lists them"))?;
    let actor = Actor::account(&admin, Via::Api);
    let applied = match station.grant_points(&account, amount, &reason, &actor, key.as_deref()).await {
        Ok(Posted::Applied(_)) => true,
        Ok(_) => false,
        Err(LedgerError::Invalid { field, reason }) => return Err(ApiError::invalid(field, reason)),
        Err(e) => return Err(ApiError::new(StatusCode::CONFLICT, "not_granted", e.to_string())),
    };
    let b = station.points(&account.id).await?;
    Ok(Json(GrantResult { applied, balance: b.balance, held: b.held }))
}
