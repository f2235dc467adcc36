//! Feature flags: administrators list, set and remove them
//! (`/api/v1/admin/flags`); any caller reads which features are on for
//! them (`/api/v1/flags`), so front ends can hide what is switched off.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use station_core::Station;
use station_core::audit::{Actor, Via};
use station_core::flags::{FEATURES, Flag, FlagRule, FlagState, FlagSubject, SetFlagError};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::FieldIssue;
use super::{ApiError, ApiResult, ErrorBody, object};
use crate::extract::Path;
use crate::{AdminCaller, Caller};

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new().routes(routes!(list_flags)).routes(routes!(set_flag, unset_flag)).routes(routes!(my_flags))
}

/// One feature flag.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlagItem {
    /// Its name: a feature (`training`), `tool.<id>` or `platform.<name>`.
    pub name: String,
    /// `on`, `off`, or `some`.
    pub state: String,
    /// With `some`: the share of accounts it is on for (a stable hash of the account id).
    pub percent: u8,
    /// With `some`: accounts it is on for.
    pub accounts: Vec<String>,
    /// With `some`: groups (chat groups, servers) it is on for.
    pub groups: Vec<String>,
    /// With `some`: platforms it is on for.
    pub platforms: Vec<String>,
    /// With `some`: whether it is on for administrators.
    pub admins: bool,
    /// The rule in words ("on for 25 % of accounts and administrators").
    pub summary: String,
    /// What it switches, in words.
    pub switches: String,
    /// What the operator wrote it is for.
    pub description: String,
    /// When it was last set (Unix ms).
    pub updated_at: i64,
    /// Who set it.
    pub updated_by: String,
}

/// Every flag, and the features a flag can switch.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlagList {
    /// Stored flags, by name. A name without a flag is on for everyone.
    pub flags: Vec<FlagItem>,
    /// Features with a flag of their name: `[name, what it is]`.
    pub features: Vec<(String, String)>,
}

fn item(station: &Station, f: Flag) -> FlagItem {
    FlagItem {
        state: match f.rule.state {
            FlagState::On => "on",
            FlagState::Off => "off",
            FlagState::Some => "some",
        }
        .into(),
        summary: f.rule.describe(),
        switches: station_core::flags::flag_target(station, &f.name),
        percent: f.rule.percent,
        accounts: f.rule.accounts,
        groups: f.rule.groups,
        platforms: f.rule.platforms,
        admins: f.rule.admins,
        name: f.name,
        description: f.description,
        updated_at: f.updated_at,
        updated_by: f.updated_by,
    }
}

/// Every feature flag with who it is on for.
#[utoipa::path(get, path = "/api/v1/admin/flags", tag = "admin",
    responses((status = 200, body = FlagList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_flags(State(station): State<Station>, _: AdminCaller) -> ApiResult<Json<FlagList>> {
    let flags = station.flags().await?.into_iter().map(|f| item(&station, f)).collect();
    let features = FEATURES.iter().map(|(n, w)| (n.to_string(), w.to_string())).collect();
    Ok(Json(FlagList { flags, features }))
}

/// Sets a flag (creating it). Body: `state` (`on`, `off`, `some`) and, with
/// `some`, any of `percent` (0–100), `accounts` (ids), `groups`,
/// `platforms`, `admins`; optional `description`. Effective at once in
/// every Station process. Audited.
#[utoipa::path(put, path = "/api/v1/admin/flags/{name}", tag = "admin",
    params(("name" = String, Path, description = "Flag name, e.g. `training` or `tool.txt2img`")),
    request_body = Object,
    responses((status = 200, body = FlagItem), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn set_flag(
    State(station): State<Station>,
    AdminCaller(admin): AdminCaller,
    Path(name): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<FlagItem>> {
    let obj = object(body, &["state", "percent", "accounts", "groups", "platforms", "admins", "description"])?;
    let mut issues = vec![];
    let mut issue = |field: &str, reason: &str| issues.push(FieldIssue { field: field.into(), reason: reason.into() });
    let state = match obj.get("state").and_then(Value::as_str) {
        Some("on") => FlagState::On,
        Some("off") => FlagState::Off,
        Some("some") => FlagState::Some,
        _ => {
            issue("state", "is required: \"on\", \"off\" or \"some\"");
            FlagState::Off
        }
    };
    let percent = match obj.get("percent") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_u64().filter(|p| *p <= 100).and_then(|p| u8::try_from(p).ok()) {
            Some(p) => p,
            None => {
                issue("percent", "expected a whole number from 0 to 100");
                0
            }
        },
    };
    let mut list = |field: &str| -> Vec<String> {
        match obj.get(field) {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
                a.iter().filter_map(Value::as_str).map(|s| s.trim().to_string()).collect()
            }
            Some(_) => {
                issue(field, "expected a list of strings");
                vec![]
            }
        }
    };
    let (accounts, groups, platforms) = (list("accounts"), list("groups"), list("platforms"));
    let admins = match obj.get("admins") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            issue("admins", "expected true or false");
            false
        }
    };
    let description = match obj.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            issue("description", "expected a string");
            None
        }
    };
    if !issues.is_empty() {
        return Err(ApiError::invalid_fields(issues));
    }
    for id in &accounts {
        if station.account_by_id(id).await?.is_none() {
            return Err(ApiError::invalid(
                "accounts",
                format!("no account {id:?}; GET /api/v1/admin/users lists them"),
            ));
        }
    }
    let rule = FlagRule { state, percent, accounts, groups, platforms, admins };
    let by = Actor::account(&admin, Via::Api);
    match station.set_flag(&name, rule, description.as_deref(), &by).await {
        Ok(flag) => Ok(Json(item(&station, flag))),
        Err(SetFlagError::Invalid(errors)) => Err(ApiError::invalid_fields(
            errors.into_iter().map(|e| FieldIssue { field: e.field.into(), reason: e.reason }).collect(),
        )),
        Err(SetFlagError::Store(e)) => Err(e.into()),
    }
}

/// Removes a flag: what it switched is on for everyone again. Audited.
#[utoipa::path(delete, path = "/api/v1/admin/flags/{name}", tag = "admin",
    params(("name" = String, Path, description = "Flag name")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn unset_flag(
    State(station): State<Station>,
    AdminCaller(admin): AdminCaller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    if station.unset_flag(&name, &Actor::account(&admin, Via::Api)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("flag", &name, "GET /api/v1/admin/flags lists them"))
    }
}

/// The features that are on for you.
#[derive(Debug, Serialize, ToSchema)]
pub struct MyFlags {
    /// Each feature a flag can switch, with whether it is on for you.
    pub features: Vec<MyFeature>,
}

/// A feature and whether it is on for you.
#[derive(Debug, Serialize, ToSchema)]
pub struct MyFeature {
    /// The feature's name.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Whether you may use it.
    pub on: bool,
}

/// Which features are on for you (front ends hide the others).
#[utoipa::path(get, path = "/api/v1/flags", tag = "account",
    responses((status = 200, body = MyFlags), (status = 401, body = ErrorBody)))]
async fn my_flags(State(station): State<Station>, Caller(a): Caller) -> Json<MyFlags> {
    station.refresh_flags_if_stale().await;
    let who = FlagSubject::account(&a);
    let features = FEATURES
        .iter()
        .map(|(name, what)| MyFeature {
            name: name.to_string(),
            description: what.to_string(),
            on: station.flag_on(name, &who),
        })
        .collect();
    Json(MyFlags { features })
}
