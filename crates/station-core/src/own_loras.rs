//! What a person may do with the LoRAs they own (trained ones): list them,
//! share one with another account, make one public — at once, or after an
//! administrator's approval when `training.publish_needs_approval` — and
//! delete one. Administrators list and decide the requests; every change is
//! written to the audit log.

use serde::Serialize;
use station_store::{AccountRow, LoraPublishRow};

use crate::Station;
use crate::audit::{Actor, Via};
use crate::loras::{LoraEdit, LoraError, LoraRecord, Visibility};
use crate::training::TrainingError;

/// One of the account's LoRAs, with whom it is shared and where its
/// publication stands.
#[derive(Debug, Clone, Serialize)]
pub struct OwnLora {
    /// The catalog entry.
    #[serde(flatten)]
    pub lora: LoraRecord,
    /// The accounts it is shared with now (their names), besides the owner.
    pub shared_with: Vec<String>,
    /// Their account ids, in the same order (what unsharing names).
    #[serde(skip)]
    pub shared_ids: Vec<String>,
    /// `private`, `pending` (waiting for an administrator), `public`, or
    /// `refused` (an administrator said no; it stays private).
    pub publication: String,
}

/// What asking to publish a LoRA did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Publication {
    /// Everyone can use it now.
    Public,
    /// It waits for an administrator's approval.
    Pending,
}

/// A catalog refusal as the person's: a bad field stays a bad field, a
/// missing LoRA a missing one.
fn refused(e: LoraError) -> TrainingError {
    match e {
        LoraError::Invalid { field, reason } => TrainingError::Invalid { field, reason },
        LoraError::NotFound(slug) => TrainingError::NotFound(format!("no LoRA {slug:?}")),
        LoraError::Storage(e) => TrainingError::Storage(e),
        e => TrainingError::Lora(e),
    }
}

impl Station {
    /// The LoRA `slug` if the account owns it (administrators: any owned LoRA).
    async fn owned_lora(&self, account: &AccountRow, slug: &str) -> Result<LoraRecord, TrainingError> {
        let not_found = || TrainingError::NotFound(format!("you have no LoRA {slug:?}"));
        if slug.is_empty() || slug.len() > 200 || slug.chars().any(char::is_control) {
            return Err(not_found());
        }
        let lora = match self.loras().show(slug).await {
            Ok(l) => l,
            Err(LoraError::NotFound(_)) => return Err(not_found()),
            Err(e) => return Err(refused(e)),
        };
        match &lora.owner {
            Some(owner) if owner == &account.id || account.is_admin() => Ok(lora),
            _ => Err(not_found()),
        }
    }

    /// The LoRAs the account owns, by name.
    pub async fn own_loras(&self, account: &AccountRow) -> Result<Vec<OwnLora>, TrainingError> {
        let now = crate::now_ms();
        let catalog = self.loras().catalog().await.map_err(refused)?;
        let mut out = vec![];
        for lora in catalog.iter().filter(|l| l.owner.as_deref() == Some(account.id.as_str())) {
            out.push(self.own_view(lora.clone(), now).await?);
        }
        out.sort_by_key(|a| a.lora.name.to_lowercase());
        Ok(out)
    }

    /// One LoRA the account owns, as [`Station::own_loras`] lists it.
    pub async fn own_lora(&self, account: &AccountRow, slug: &str) -> Result<OwnLora, TrainingError> {
        let lora = self.owned_lora(account, slug).await?;
        self.own_view(lora, crate::now_ms()).await
    }

    async fn own_view(&self, lora: LoraRecord, now: i64) -> Result<OwnLora, TrainingError> {
        let mut shared_with = vec![];
        let mut shared_ids = vec![];
        for g in &lora.grants {
            let live = !g.revoked && g.expires_at.is_none_or(|t| t > now);
            if live && Some(&g.account) != lora.owner.as_ref() {
                let name =
                    self.store.get_account(&g.account).await?.map(|a| a.name).unwrap_or_else(|| g.account.clone());
                shared_with.push(name);
                shared_ids.push(g.account.clone());
            }
        }
        let publication = match lora.visibility {
            Visibility::Public => "public".to_owned(),
            Visibility::Private => match self.store.lora_publish_request(&lora.slug).await? {
                Some(r) if r.status == "pending" || r.status == "refused" => r.status,
                _ => "private".to_owned(),
            },
        };
        Ok(OwnLora { lora, shared_with, shared_ids, publication })
    }

    /// Lets another account use the account's LoRA `slug`. `with` names it:
    /// an account id or a platform identity such as `telegram:123` (someone
    /// who has used Station). Audited (`lora.grant`). Returns that account.
    pub async fn share_lora(
        &self,
        account: &AccountRow,
        slug: &str,
        with: &str,
        via: Via,
    ) -> Result<AccountRow, TrainingError> {
        let lora = self.owned_lora(account, slug).await?;
        let with = with.trim();
        if with.is_empty() {
            return Err(TrainingError::Invalid {
                field: "account".into(),
                reason: "is required: an account id or an identity like telegram:123".into(),
            });
        }
        let other = self.loras().find_account("account", with).await.map_err(refused)?;
        if lora.owner.as_deref() == Some(other.id.as_str()) {
            return Err(TrainingError::Invalid { field: "account".into(), reason: "is the LoRA's owner".into() });
        }
        self.loras().grant(&lora.slug, &other.id, None, &Actor::account(account, via)).await.map_err(refused)?;
        Ok(other)
    }

    /// Stops sharing the account's LoRA `slug` with `with` (as
    /// [`Station::share_lora`] names it); false when it was not shared.
    /// Audited (`lora.revoke`).
    pub async fn unshare_lora(
        &self,
        account: &AccountRow,
        slug: &str,
        with: &str,
        via: Via,
    ) -> Result<bool, TrainingError> {
        let lora = self.owned_lora(account, slug).await?;
        let other = self.loras().find_account("account", with).await.map_err(refused)?;
        if lora.owner.as_deref() == Some(other.id.as_str()) {
            return Err(TrainingError::Invalid { field: "account".into(), reason: "is the LoRA's owner".into() });
        }
        self.loras().revoke(&lora.slug, &other.id, &Actor::account(account, via)).await.map_err(refused)
    }

    /// Makes the account's LoRA `slug` public: at once, or — when
    /// `training.publish_needs_approval` and the account is not an
    /// administrator — as a request an administrator decides. Asking again
    /// while a request waits changes nothing. Audited (`lora.publish` or
    /// `lora.publish.request`).
    pub async fn publish_lora(&self, account: &AccountRow, slug: &str, via: Via) -> Result<Publication, TrainingError> {
        let lora = self.owned_lora(account, slug).await?;
        if lora.visibility == Visibility::Public {
            return Ok(Publication::Public);
        }
        let by = Actor::account(account, via);
        if self.config.training.publish_needs_approval && !account.is_admin() {
            if self.store.request_lora_publish(&lora.slug, &account.id, crate::now_ms()).await? {
                self.audit(
                    &by,
                    "lora.publish.request",
                    &lora.slug,
                    format!("{} asked to make it public", account.name),
                )
                .await;
            }
            return Ok(Publication::Pending);
        }
        self.make_public(&lora.slug, &by).await?;
        self.audit(&by, "lora.publish", &lora.slug, format!("{} made it public", account.name)).await;
        Ok(Publication::Public)
    }

    async fn make_public(&self, slug: &str, by: &Actor) -> Result<(), TrainingError> {
        let edit = LoraEdit { visibility: Some(Visibility::Public), ..Default::default() };
        self.loras().edit(slug, edit, by).await.map_err(refused)?;
        Ok(())
    }

    /// Requests to publish a LoRA that wait for an administrator, oldest first.
    pub async fn lora_publish_requests(&self) -> Result<Vec<LoraPublishRow>, TrainingError> {
        Ok(self.store.pending_lora_publish_requests().await?)
    }

    /// An administrator's decision on the request to publish `slug`:
    /// approved, the LoRA becomes public; refused, it stays private. Written
    /// to the audit log (`lora.publish.approve`, `lora.publish.refuse`). The
    /// LoRA is made public before the request is marked, so a crash in
    /// between leaves a request that approving again completes.
    pub async fn decide_lora_publish(&self, slug: &str, approve: bool, by: &Actor) -> Result<(), TrainingError> {
        let not_found = || TrainingError::NotFound(format!("no request to publish {slug:?} waits"));
        if slug.is_empty() || slug.len() > 200 || slug.chars().any(char::is_control) {
            return Err(not_found());
        }
        let request = self.store.lora_publish_request(slug).await?.filter(|r| r.status == "pending");
        let Some(request) = request else { return Err(not_found()) };
        let now = crate::now_ms();
        if approve {
            match self.loras().show(slug).await {
                Ok(_) => self.make_public(slug, by).await?,
                Err(LoraError::NotFound(_)) => {
                    self.store.delete_lora_publish_request(slug).await?;
                    return Err(TrainingError::NotFound(format!("the LoRA {slug:?} was deleted")));
                }
                Err(e) => return Err(refused(e)),
            }
        }
        let status = if approve { "approved" } else { "refused" };
        if self.store.decide_lora_publish(slug, status, &by.who, now).await? {
            let owner = self.store.get_account(&request.account_id).await?.map(|a| a.name).unwrap_or_default();
            let what = if approve { "approve" } else { "refuse" };
            self.audit(by, &format!("lora.publish.{what}"), slug, format!("{status} the request of {owner}")).await;
        }
        Ok(())
    }

    /// Deletes the account's LoRA `slug` with its grants (and its file in
    /// `training.publish_dir`, when it was written there). Audited
    /// (`lora.remove`). The trained file stays with the training's job.
    pub async fn delete_lora(&self, account: &AccountRow, slug: &str, via: Via) -> Result<(), TrainingError> {
        let lora = self.owned_lora(account, slug).await?;
        self.loras().remove(&lora.slug, &Actor::account(account, via)).await.map_err(refused)?;
        self.store.delete_lora_publish_request(&lora.slug).await?;
        if let Some(dir) = &self.config.training.publish_dir
            && lora.filename == format!("{}.safetensors", lora.slug)
        {
            let path = dir.join(&lora.filename);
            if let Err(e) = tokio::fs::remove_file(&path).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(lora = %lora.slug, path = %path.display(), error = %e, "could not delete a deleted LoRA's published file");
            }
        }
        Ok(())
    }
}
