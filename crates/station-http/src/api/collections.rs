//! Collections (issue 24): create, list, show, rename, delete; add results
//! and LoRAs, remove and reorder items; share links with an expiry that can
//! be revoked; ZIP exports built in the background; and the read-only view
//! of a shared, unlisted or public collection that needs no account.
//! Every rule is the core's ([`station_core::collections`]).

use crate::extract::{Path, Query};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use station_core::collections::{CollectionEdit, CollectionSummary, ItemView, ShareRequest};
use station_core::{CollectionError, CollectionExportRow, CollectionShareRow, CollectionView, ItemRef, Station};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, ErrorBody, FieldIssue, object};
use crate::Caller;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new()
        .routes(routes!(list_collections, create_collection))
        .routes(routes!(public_collections))
        .routes(routes!(show_collection, edit_collection, delete_collection))
        .routes(routes!(add_items))
        .routes(routes!(remove_item))
        .routes(routes!(reorder_items))
        .routes(routes!(list_shares, create_share))
        .routes(routes!(revoke_share))
        .routes(routes!(start_export))
        .routes(routes!(show_export))
        .routes(routes!(download_export))
        .routes(routes!(shared_collection))
        .routes(routes!(shared_image))
        .routes(routes!(shared_thumbnail))
}

impl From<CollectionError> for ApiError {
    fn from(e: CollectionError) -> ApiError {
        match e {
            CollectionError::NotFound { what, id } => {
                ApiError::not_found(what, &id, "GET /api/v1/collections lists your collections")
            }
            CollectionError::Gone(message) => ApiError::new(StatusCode::NOT_FOUND, "gone", message),
            CollectionError::Invalid(fields) => ApiError::invalid_fields(
                fields.into_iter().map(|f| FieldIssue { field: f.field, reason: f.reason }).collect(),
            ),
            CollectionError::Storage(e) => ApiError::storage(e),
            e @ CollectionError::Io(_) => ApiError::internal(e),
        }
    }
}

/// A collection in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionSummaryInfo {
    /// Collection id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// `private`, `unlisted` or `public`.
    pub visibility: String,
    /// Items it holds.
    pub items: usize,
    /// Thumbnail of the cover image, if it has images: the owner's media
    /// address in your list, the public address in the public list.
    #[schema(required = true)]
    pub cover_thumbnail_url: Option<String>,
    /// Created (Unix ms).
    pub created_at: i64,
    /// Last changed (Unix ms).
    pub updated_at: i64,
}

impl CollectionSummaryInfo {
    fn from(s: &CollectionSummary) -> CollectionSummaryInfo {
        let c = &s.collection;
        CollectionSummaryInfo {
            id: c.id.clone(),
            name: c.name.clone(),
            description: c.description.clone(),
            visibility: c.visibility.clone(),
            items: s.items,
            cover_thumbnail_url: s.cover_media.as_ref().map(|m| format!("/api/v1/media/{m}/thumbnail")),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// A list of collections.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionList {
    /// Newest first.
    pub items: Vec<CollectionSummaryInfo>,
}

/// One item of a collection.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionItem {
    /// Item id (for remove, reorder, cover).
    pub id: String,
    /// `media` (a generation's result) or `lora`.
    pub kind: String,
    /// 1, 2, … in the collection's order.
    pub position: usize,
    /// The image's media id (`media` items).
    #[schema(required = true)]
    pub media: Option<String>,
    /// The image (full size).
    #[schema(required = true)]
    pub image_url: Option<String>,
    /// A thumbnail (`?size=N` for another size).
    #[schema(required = true)]
    pub thumbnail_url: Option<String>,
    /// Pixels.
    #[schema(required = true)]
    pub width: Option<i64>,
    /// Pixels.
    #[schema(required = true)]
    pub height: Option<i64>,
    /// The generation's prompt.
    #[schema(required = true)]
    pub prompt: Option<String>,
    /// The tool that made it.
    #[schema(required = true)]
    pub tool: Option<String>,
    /// The LoRA's slug (`lora` items).
    #[schema(required = true)]
    pub lora: Option<String>,
    /// The LoRA's name.
    #[schema(required = true)]
    pub lora_name: Option<String>,
    /// Added (Unix ms).
    pub added_at: i64,
}

/// A collection with its items in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct Collection {
    /// Collection id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// `private`, `unlisted` or `public`.
    pub visibility: String,
    /// The owner's name.
    pub owner: String,
    /// The cover's item id.
    #[schema(required = true)]
    pub cover_item: Option<String>,
    /// You may rename, reorder, remove, share and export (owner).
    pub can_edit: bool,
    /// You may add your own results.
    pub can_add: bool,
    /// The public page (unlisted and public collections); null for private ones.
    #[schema(required = true)]
    pub public_url: Option<String>,
    /// Items in order.
    pub items: Vec<CollectionItem>,
    /// Created (Unix ms).
    pub created_at: i64,
    /// Last changed (Unix ms).
    pub updated_at: i64,
}

fn item(i: &ItemView, n: usize, media_base: &dyn Fn(&ItemView) -> (String, String)) -> CollectionItem {
    let m = i.media.as_ref();
    let (image, thumb) = m.map(|_| media_base(i)).unzip();
    CollectionItem {
        id: i.item.id.clone(),
        kind: i.item.kind.clone(),
        position: n + 1,
        media: m.map(|m| m.id.clone()),
        image_url: image,
        thumbnail_url: thumb,
        width: m.map(|m| m.width),
        height: m.map(|m| m.height),
        prompt: i.prompt.clone(),
        tool: i.tool.clone(),
        lora: (i.item.kind == "lora").then(|| i.item.ref_id.clone()),
        lora_name: i.lora_name.clone(),
        added_at: i.item.added_at,
    }
}

impl Collection {
    /// The owner's (or a member's) view: images through the media API.
    fn owned(v: &CollectionView) -> Collection {
        let urls = |i: &ItemView| {
            let id = i.media.as_ref().map(|m| m.id.clone()).unwrap_or_default();
            (format!("/api/v1/media/{id}"), format!("/api/v1/media/{id}/thumbnail"))
        };
        Collection::build(v, &urls)
    }

    /// The view through a link or public address: images through `key`.
    fn shared(v: &CollectionView, key: &str) -> Collection {
        let urls = |i: &ItemView| {
            let base = format!("/api/v1/shared/{key}/items/{}", i.item.id);
            (format!("{base}/image"), format!("{base}/thumbnail"))
        };
        Collection::build(v, &urls)
    }

    fn build(v: &CollectionView, urls: &dyn Fn(&ItemView) -> (String, String)) -> Collection {
        let c = &v.collection;
        Collection {
            id: c.id.clone(),
            name: c.name.clone(),
            description: c.description.clone(),
            visibility: c.visibility.clone(),
            owner: v.owner_name.clone(),
            cover_item: v.cover().map(|i| i.item.id.clone()),
            can_edit: v.can_edit,
            can_add: v.can_add,
            public_url: (c.visibility != "private").then(|| format!("/c/{}", c.id)),
            items: v.items.iter().enumerate().map(|(n, i)| item(i, n, urls)).collect(),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// `POST /api/v1/collections`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documents the body; parsed field by field for precise errors
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Best of June", "description": "Night cities", "visibility": "unlisted"}))]
pub struct CreateCollection {
    /// 1–100 characters.
    name: String,
    /// Up to 2000 characters.
    description: Option<String>,
    /// `private` (default), `unlisted` (whoever has the address) or `public`.
    visibility: Option<String>,
}

/// `PATCH /api/v1/collections/{id}`: the fields to change.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
pub struct EditCollection {
    /// 1–100 characters.
    name: Option<String>,
    /// Up to 2000 characters.
    description: Option<String>,
    /// `private`, `unlisted` or `public`.
    visibility: Option<String>,
    /// The item to show as the cover; `""` for the first image.
    cover_item: Option<String>,
}

/// `POST /api/v1/collections/{id}/items`: exactly one of the fields.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
pub struct AddItems {
    /// One of your result images (`media:<id>` or the id).
    media: Option<String>,
    /// One of your generations: every result image of it.
    generation: Option<String>,
    /// A LoRA you own, by slug.
    lora: Option<String>,
}

/// What an add did.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddedItems {
    /// Item ids added (things the collection held already are skipped).
    pub added: Vec<String>,
    /// The collection now.
    pub collection: Collection,
}

/// `PUT /api/v1/collections/{id}/order`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
pub struct ReorderItems {
    /// Every item id once, in the new order.
    items: Vec<String>,
}

/// `POST /api/v1/collections/{id}/shares`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
pub struct CreateShare {
    /// Seconds until the link expires (default 604800: 7 days; at most 365 days).
    #[schema(minimum = 1, maximum = 31536000)]
    expires_in: Option<i64>,
    /// Accounts (ids or identities like `telegram:123`) that may also add
    /// their own results while the link lives; empty: view only.
    can_add: Option<Vec<String>>,
}

/// A share link.
#[derive(Debug, Serialize, ToSchema)]
pub struct Share {
    /// Share id (to revoke it).
    pub id: String,
    /// `view` or `add`.
    pub permission: String,
    /// Accounts that may add.
    pub can_add: Vec<String>,
    /// Made (Unix ms).
    pub created_at: i64,
    /// Ends (Unix ms).
    pub expires_at: i64,
    /// Revoked (Unix ms).
    #[schema(required = true)]
    pub revoked_at: Option<i64>,
    /// `live`, `expired` or `revoked`.
    pub state: String,
    /// The page to send (only in the answer that made it: the token is not kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The secret token (only in the answer that made it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Share {
    fn from_row(s: &CollectionShareRow, token: Option<&str>) -> Share {
        let now = station_core::now_ms();
        let state = if s.revoked_at.is_some() {
            "revoked"
        } else if s.expires_at <= now {
            "expired"
        } else {
            "live"
        };
        Share {
            id: s.id.clone(),
            permission: s.permission.clone(),
            can_add: serde_json::from_str(&s.accounts).unwrap_or_default(),
            created_at: s.created_at,
            expires_at: s.expires_at,
            revoked_at: s.revoked_at,
            state: state.into(),
            url: token.map(|t| format!("/c/{t}")),
            token: token.map(str::to_owned),
        }
    }
}

/// A collection's share links.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShareList {
    /// Newest first.
    pub items: Vec<Share>,
}

/// A ZIP export.
#[derive(Debug, Serialize, ToSchema)]
pub struct Export {
    /// Export id.
    pub id: String,
    /// The collection.
    pub collection: String,
    /// `queued`, `running`, `succeeded`, `failed`.
    pub status: String,
    /// Items written.
    pub done: i64,
    /// Items to write.
    pub total: i64,
    /// 0–1.
    pub progress: f64,
    /// Why it failed.
    #[schema(required = true)]
    pub error: Option<String>,
    /// Bytes of the ZIP.
    #[schema(required = true)]
    pub size: Option<i64>,
    /// The download (succeeded, until `expires_at`).
    #[schema(required = true)]
    pub download_url: Option<String>,
    /// The download ends (Unix ms).
    #[schema(required = true)]
    pub expires_at: Option<i64>,
    /// Asked (Unix ms).
    pub created_at: i64,
}

impl Export {
    fn from_row(e: &CollectionExportRow) -> Export {
        let live = e.status == "succeeded" && e.expires_at.is_some_and(|t| t > station_core::now_ms());
        Export {
            id: e.id.clone(),
            collection: e.collection_id.clone(),
            status: e.status.clone(),
            done: e.done,
            total: e.total,
            progress: if e.status == "succeeded" {
                1.0
            } else if e.total > 0 {
                e.done as f64 / e.total as f64
            } else {
                0.0
            },
            error: e.error.clone(),
            size: e.size,
            download_url: live.then(|| format!("/api/v1/exports/{}/download", e.id)),
            expires_at: e.expires_at,
            created_at: e.created_at,
        }
    }
}

fn opt_str(obj: &serde_json::Map<String, Value>, field: &str) -> ApiResult<Option<String>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(field, "expected a string")),
    }
}

fn edit_from(obj: &serde_json::Map<String, Value>) -> ApiResult<CollectionEdit> {
    Ok(CollectionEdit {
        name: opt_str(obj, "name")?,
        description: opt_str(obj, "description")?,
        visibility: opt_str(obj, "visibility")?,
        cover_item: opt_str(obj, "cover_item")?,
    })
}

/// Your collections, newest first.
#[utoipa::path(get, path = "/api/v1/collections", tag = "collections",
    responses((status = 200, body = CollectionList), (status = 401, body = ErrorBody)))]
async fn list_collections(State(station): State<Station>, Caller(a): Caller) -> ApiResult<Json<CollectionList>> {
    let list = station.collections_of(&a).await?;
    Ok(Json(CollectionList { items: list.iter().map(CollectionSummaryInfo::from).collect() }))
}

/// Public collections, newest first (no account needed).
#[utoipa::path(get, path = "/api/v1/collections/public", tag = "collections", security(()),
    responses((status = 200, body = CollectionList)))]
async fn public_collections(State(station): State<Station>) -> ApiResult<Json<CollectionList>> {
    let list = station.public_collections(100).await?;
    let items = list
        .iter()
        .map(|s| {
            let mut i = CollectionSummaryInfo::from(s);
            // The cover through the public address, not the owner's media API.
            i.cover_thumbnail_url =
                s.cover_item.as_ref().map(|item| format!("/api/v1/shared/{}/items/{item}/thumbnail", s.collection.id));
            i
        })
        .collect();
    Ok(Json(CollectionList { items }))
}

/// Creates a collection (answers 201 with it).
#[utoipa::path(post, path = "/api/v1/collections", tag = "collections",
    request_body = CreateCollection,
    responses((status = 201, body = Collection), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_collection(
    State(station): State<Station>,
    Caller(a): Caller,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Response> {
    let obj = object(body, &["name", "description", "visibility"])?;
    let c = station.create_collection(&a, edit_from(&obj)?).await?;
    let view = station.collection_for(&a, &c.id).await?;
    let location = format!("/api/v1/collections/{}", c.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(Collection::owned(&view))).into_response())
}

/// A collection you own, may add to, or that is unlisted or public.
#[utoipa::path(get, path = "/api/v1/collections/{id}", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    responses((status = 200, body = Collection), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn show_collection(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Collection>> {
    let view = station.collection_for(&a, &id).await?;
    // Someone else's unlisted or public collection: its images through the public address.
    if view.can_edit { Ok(Json(Collection::owned(&view))) } else { Ok(Json(Collection::shared(&view, &id))) }
}

/// Renames, describes, changes the visibility or cover (owner only).
#[utoipa::path(patch, path = "/api/v1/collections/{id}", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    request_body = EditCollection,
    responses((status = 200, body = Collection), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn edit_collection(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<Collection>> {
    let obj = object(body, &["name", "description", "visibility", "cover_item"])?;
    station.edit_collection(&a, &id, edit_from(&obj)?).await?;
    Ok(Json(Collection::owned(&station.collection_for(&a, &id).await?)))
}

/// Deletes a collection with its items and links (the images stay yours).
#[utoipa::path(delete, path = "/api/v1/collections/{id}", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_collection(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    station.delete_collection(&a, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds one of your results, every result of one of your generations, or
/// one of your LoRAs ("➕ Collection"). The owner may add, and so may the
/// accounts a live "can add" link names.
#[utoipa::path(post, path = "/api/v1/collections/{id}/items", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    request_body = AddItems,
    responses((status = 200, body = AddedItems), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn add_items(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<AddedItems>> {
    let obj = object(body, &["media", "generation", "lora"])?;
    let given: Vec<ItemRef> = [
        opt_str(&obj, "media")?.map(ItemRef::Media),
        opt_str(&obj, "generation")?.map(ItemRef::Generation),
        opt_str(&obj, "lora")?.map(ItemRef::Lora),
    ]
    .into_iter()
    .flatten()
    .collect();
    let [what] = <[ItemRef; 1]>::try_from(given)
        .map_err(|_| ApiError::invalid("(body)", "give exactly one of media, generation or lora"))?;
    let added = station.add_to_collection(&a, &id, what).await?;
    let view = station.collection_for(&a, &id).await?;
    Ok(Json(AddedItems { added: added.into_iter().map(|i| i.id).collect(), collection: Collection::owned(&view) }))
}

/// Removes one item (owner only; the image itself stays yours).
#[utoipa::path(delete, path = "/api/v1/collections/{id}/items/{item}", tag = "collections",
    params(("id" = String, Path, description = "Collection id"), ("item" = String, Path, description = "Item id")),
    responses((status = 204, description = "Removed"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove_item(
    State(station): State<Station>,
    Caller(a): Caller,
    Path((id, item)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    station.remove_from_collection(&a, &id, &item).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Puts the items in a new order: every item id once (owner only).
#[utoipa::path(put, path = "/api/v1/collections/{id}/order", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    request_body = ReorderItems,
    responses((status = 200, body = Collection), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn reorder_items(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<Collection>> {
    let obj = object(body, &["items"])?;
    let items: Vec<String> = match obj.get("items") {
        Some(Value::Array(v)) => v
            .iter()
            .map(|x| x.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::invalid("items", "expected a list of item ids (strings)"))?,
        _ => return Err(ApiError::invalid("items", "is required: every item id once, in the new order")),
    };
    station.reorder_collection(&a, &id, &items).await?;
    Ok(Json(Collection::owned(&station.collection_for(&a, &id).await?)))
}

/// A collection's share links, newest first (owner only).
#[utoipa::path(get, path = "/api/v1/collections/{id}/shares", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    responses((status = 200, body = ShareList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_shares(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ShareList>> {
    let shares = station.collection_shares(&a, &id).await?;
    Ok(Json(ShareList { items: shares.iter().map(|s| Share::from_row(s, None)).collect() }))
}

/// Makes a share link (answers 201 with its `url`, shown only now): view
/// only, or "can add" for named accounts; it expires after `expires_in`
/// seconds (default 7 days) and can be revoked. A public collection's page
/// is open already, so it takes only "can add" links.
#[utoipa::path(post, path = "/api/v1/collections/{id}/shares", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    request_body(content = Option<CreateShare>, content_type = "application/json"),
    responses((status = 201, body = Share), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn create_share(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Response> {
    let obj = match body {
        Err(JsonRejection::MissingJsonContentType(_)) => serde_json::Map::new(),
        body => object(body, &["expires_in", "can_add"])?,
    };
    let expires_in = match obj.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| ApiError::invalid("expires_in", "expected whole seconds"))?),
    };
    let can_add = match obj.get("can_add") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(v)) => v
            .iter()
            .map(|x| x.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::invalid("can_add", "expected a list of account ids or identities"))?,
        Some(_) => return Err(ApiError::invalid("can_add", "expected a list of account ids or identities")),
    };
    let made = station.share_collection(&a, &id, ShareRequest { expires_in, can_add }).await?;
    Ok((StatusCode::CREATED, Json(Share::from_row(&made.share, Some(&made.token)))).into_response())
}

/// Revokes a share link at once: it answers 404 from then on.
#[utoipa::path(delete, path = "/api/v1/collections/{id}/shares/{share}", tag = "collections",
    params(("id" = String, Path, description = "Collection id"), ("share" = String, Path, description = "Share id")),
    responses((status = 204, description = "Revoked"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_share(
    State(station): State<Station>,
    Caller(a): Caller,
    Path((id, share)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    station.revoke_collection_share(&a, &id, &share).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Options of an export.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct ExportRequest {
    /// A cooked collection's NFT export: its accepted, kept pieces, each
    /// with `metadata/<n>.json` (`name`, `description`, `image`,
    /// `attributes`), instead of the curated items.
    pub nft: Option<bool>,
    /// With `nft`: the pieces in an order drawn from the cook seed.
    pub shuffle: Option<bool>,
}

/// Starts a ZIP export (answers 202): the images' original bytes and
/// `metadata.json`, built in the background; follow it at its URL. With
/// `{"nft": true}` a cooked collection's pieces are exported with
/// per-piece NFT metadata (optionally shuffled).
#[utoipa::path(post, path = "/api/v1/collections/{id}/exports", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    request_body(content = Option<ExportRequest>, content_type = "application/json"),
    responses((status = 202, body = Export), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn start_export(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Response> {
    let obj = match body {
        Err(JsonRejection::MissingJsonContentType(_)) => serde_json::Map::new(),
        body => object(body, &["nft", "shuffle"])?,
    };
    let flag = |name: &str| match obj.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid(name, "expected true or false")),
    };
    let (nft, shuffle) = (flag("nft")?, flag("shuffle")?);
    if shuffle && !nft {
        return Err(ApiError::invalid("shuffle", "only an NFT export (nft: true) is shuffled"));
    }
    let e = if nft { station.export_cook(&a, &id, shuffle).await? } else { station.export_collection(&a, &id).await? };
    let location = format!("/api/v1/exports/{}", e.id);
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(Export::from_row(&e))).into_response())
}

/// An export's progress, and its download link once built.
#[utoipa::path(get, path = "/api/v1/exports/{id}", tag = "collections",
    params(("id" = String, Path, description = "Export id")),
    responses((status = 200, body = Export), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn show_export(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Export>> {
    Ok(Json(Export::from_row(&station.collection_export(&a, &id).await?)))
}

/// The export's ZIP, while its link lasts (`collections.export_ttl_hours`);
/// 404 `gone` after.
#[utoipa::path(get, path = "/api/v1/exports/{id}/download", tag = "collections",
    params(("id" = String, Path, description = "Export id")),
    responses((status = 200, description = "The ZIP", content_type = "application/zip"),
        (status = 400, body = ErrorBody, description = "Still being built, or failed"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody, description = "No such export, or its link expired")))]
async fn download_export(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (e, path) = station.export_file(&a, &id).await?;
    let file = tokio::fs::File::open(&path).await.map_err(|_| {
        ApiError::new(StatusCode::NOT_FOUND, "gone", "this export's file is gone; export the collection again")
    })?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    if let Some(size) = e.size {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(size.max(0) as u64));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    let name = format!("collection-{}.zip", &e.collection_id[..e.collection_id.len().min(12)]);
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// A collection through a share link's token (`sc_…`) or the id of an
/// unlisted or public collection: no account needed. An expired or revoked
/// link answers 404 `gone` saying which.
#[utoipa::path(get, path = "/api/v1/shared/{key}", tag = "collections", security(()),
    params(("key" = String, Path, description = "Share token or collection id")),
    responses((status = 200, body = Collection), (status = 404, body = ErrorBody)))]
async fn shared_collection(State(station): State<Station>, Path(key): Path<String>) -> ApiResult<Json<Collection>> {
    let view = station.shared_collection(&key).await?;
    Ok(Json(Collection::shared(&view, &key)))
}

/// Thumbnail size.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SharedThumbQuery {
    /// Longest side in pixels, 16–1024 (default 256).
    pub size: Option<u32>,
}

fn image(bytes: Vec<u8>, mime: &str) -> Response {
    let mut r = Body::from(bytes).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(mime).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    // A link can be revoked: browsers must ask again.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    r
}

/// An image of a shared, unlisted or public collection (original bytes).
#[utoipa::path(get, path = "/api/v1/shared/{key}/items/{item}/image", tag = "collections", security(()),
    params(("key" = String, Path, description = "Share token or collection id"), ("item" = String, Path, description = "Item id")),
    responses((status = 200, description = "The image", content_type = "image/*"), (status = 404, body = ErrorBody)))]
async fn shared_image(
    State(station): State<Station>,
    Path((key, item)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (m, bytes) = station.shared_image(&key, &item, None).await?;
    Ok(image(bytes, &m.mime))
}

/// A JPEG thumbnail of an image of a shared, unlisted or public collection.
#[utoipa::path(get, path = "/api/v1/shared/{key}/items/{item}/thumbnail", tag = "collections", security(()),
    params(("key" = String, Path, description = "Share token or collection id"), ("item" = String, Path, description = "Item id"),
        SharedThumbQuery),
    responses((status = 200, description = "JPEG thumbnail", content_type = "image/jpeg"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn shared_thumbnail(
    State(station): State<Station>,
    Path((key, item)): Path<(String, String)>,
    Query(q): Query<SharedThumbQuery>,
) -> ApiResult<Response> {
    let size = q.size.unwrap_or(256);
    if !(16..=1024).contains(&size) {
        return Err(ApiError::invalid("size", format!("{size} is out of range; use 16 to 1024 pixels")));
    }
    let (_, bytes) = station.shared_image(&key, &item, Some(size)).await?;
    Ok(image(bytes, "image/jpeg"))
}
