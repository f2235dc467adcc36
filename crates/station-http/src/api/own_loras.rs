//! Your own (trained) LoRAs: list, share, unshare, publish, delete; and the
//! administrators' decisions on requests to publish one. Every rule is the
//! core's (`station_core::own_loras`); this module translates.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use station_core::Station;
use station_core::audit::{Actor, Via};
use station_core::own_loras::{OwnLora, Publication};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiResult, ErrorBody, object, required_str};
use crate::extract::Path;
use crate::{AdminCaller, Caller};

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new()
        .routes(routes!(list_own))
        .routes(routes!(delete_own))
        .routes(routes!(share))
        .routes(routes!(unshare))
        .routes(routes!(publish))
        .routes(routes!(publish_requests))
        .routes(routes!(approve))
        .routes(routes!(refuse))
}

/// One of your LoRAs.
#[derive(Debug, Serialize, ToSchema)]
pub struct OwnLoraInfo {
    /// Slug: how the LoRA is named in URLs.
    pub slug: String,
    /// Name.
    pub name: String,
    /// The words that bring it into a prompt.
    pub trigger_words: Vec<String>,
    /// Base model (SD1.5, SDXL, …).
    pub base_model: String,
    /// The file name the backends load.
    pub filename: String,
    /// Names of the accounts it is shared with.
    pub shared_with: Vec<String>,
    /// `private`, `pending` (waiting for an administrator), `public`, or
    /// `refused` (an administrator said no; it stays private).
    pub publication: String,
}

impl From<OwnLora> for OwnLoraInfo {
    fn from(o: OwnLora) -> Self {
        OwnLoraInfo {
            slug: o.lora.slug,
            name: o.lora.name,
            trigger_words: o.lora.trigger_words,
            base_model: o.lora.checkpoint,
            filename: o.lora.filename,
            shared_with: o.shared_with,
            publication: o.publication,
        }
    }
}

/// Whom to share a LoRA with.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"account": "telegram:123456"}))]
pub struct ShareLora {
    /// An account id, or a platform identity such as `telegram:123` of
    /// someone who has used Station.
    account: String,
}

/// A request to publish a LoRA, waiting for an administrator.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublishRequestInfo {
    /// The LoRA.
    pub slug: String,
    /// Its owner, who asked.
    pub account: String,
    /// Asked (Unix ms).
    pub requested_at: i64,
}

/// Your own LoRAs (those you trained), by name, with whom each is shared
/// and where its publication stands.
#[utoipa::path(get, path = "/api/v1/loras", tag = "training",
    responses((status = 200, body = Vec<OwnLoraInfo>), (status = 401, body = ErrorBody)))]
async fn list_own(State(station): State<Station>, Caller(a): Caller) -> ApiResult<Json<Vec<OwnLoraInfo>>> {
    Ok(Json(station.own_loras(&a).await?.into_iter().map(OwnLoraInfo::from).collect()))
}

/// Deletes one of your LoRAs and its grants.
#[utoipa::path(delete, path = "/api/v1/loras/{slug}", tag = "training",
    params(("slug" = String, Path, description = "LoRA slug")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_own(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(slug): Path<String>,
) -> ApiResult<StatusCode> {
    station.delete_lora(&a, &slug, Via::Api).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lets another account use one of your LoRAs.
#[utoipa::path(post, path = "/api/v1/loras/{slug}/share", tag = "training", request_body = ShareLora,
    params(("slug" = String, Path, description = "LoRA slug")),
    responses((status = 200, body = OwnLoraInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn share(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(slug): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<OwnLoraInfo>> {
    let with = named_account(body)?;
    station.share_lora(&a, &slug, &with, Via::Api).await?;
    Ok(Json(station.own_lora(&a, &slug).await?.into()))
}

/// Stops sharing one of your LoRAs with an account.
#[utoipa::path(post, path = "/api/v1/loras/{slug}/unshare", tag = "training", request_body = ShareLora,
    params(("slug" = String, Path, description = "LoRA slug")),
    responses((status = 200, body = OwnLoraInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn unshare(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(slug): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<OwnLoraInfo>> {
    let with = named_account(body)?;
    station.unshare_lora(&a, &slug, &with, Via::Api).await?;
    Ok(Json(station.own_lora(&a, &slug).await?.into()))
}

/// The account a share or an unshare names (`{"account": …}`).
fn named_account(body: Result<Json<Value>, JsonRejection>) -> ApiResult<String> {
    let obj = object(body, &["account"])?;
    required_str(&obj, "account", "an account id or an identity like telegram:123")
}

/// Makes one of your LoRAs public: at once (200), or — when the operator
/// wants to approve publications — as a request an administrator decides
/// (202, `publication: "pending"`).
#[utoipa::path(post, path = "/api/v1/loras/{slug}/publish", tag = "training",
    params(("slug" = String, Path, description = "LoRA slug")),
    responses((status = 200, body = OwnLoraInfo), (status = 202, body = OwnLoraInfo), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn publish(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(slug): Path<String>,
) -> ApiResult<(StatusCode, Json<OwnLoraInfo>)> {
    let status = match station.publish_lora(&a, &slug, Via::Api).await? {
        Publication::Public => StatusCode::OK,
        Publication::Pending => StatusCode::ACCEPTED,
    };
    Ok((status, Json(station.own_lora(&a, &slug).await?.into())))
}

/// Requests to publish a LoRA that wait for an administrator, oldest first.
#[utoipa::path(get, path = "/api/v1/admin/lora-publications", tag = "admin",
    responses((status = 200, body = Vec<PublishRequestInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn publish_requests(State(station): State<Station>, _: AdminCaller) -> ApiResult<Json<Vec<PublishRequestInfo>>> {
    let mut out = vec![];
    for r in station.lora_publish_requests().await? {
        let account = station.account_by_id(&r.account_id).await?.map(|a| a.name).unwrap_or(r.account_id);
        out.push(PublishRequestInfo { slug: r.slug, account, requested_at: r.requested_at });
    }
    Ok(Json(out))
}

/// Approves a request to publish a LoRA: it becomes public (written to the audit log).
#[utoipa::path(post, path = "/api/v1/admin/lora-publications/{slug}/approve", tag = "admin",
    params(("slug" = String, Path, description = "LoRA slug")),
    responses((status = 204, description = "Approved"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn approve(
    State(station): State<Station>,
    AdminCaller(admin): AdminCaller,
    Path(slug): Path<String>,
) -> ApiResult<StatusCode> {
    station.decide_lora_publish(&slug, true, &Actor::account(&admin, Via::Api)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses a request to publish a LoRA: it stays private (written to the audit log).
#[utoipa::path(post, path = "/api/v1/admin/lora-publications/{slug}/refuse", tag = "admin",
    params(("slug" = String, Path, description = "LoRA slug")),
    responses((status = 204, description = "Refused"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn refuse(
    State(station): State<Station>,
    AdminCaller(admin): AdminCaller,
    Path(slug): Path<String>,
) -> ApiResult<StatusCode> {
    station.decide_lora_publish(&slug, false, &Actor::account(&admin, Via::Api)).await?;
    Ok(StatusCode::NO_CONTENT)
}
