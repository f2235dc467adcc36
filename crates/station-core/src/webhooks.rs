//! Webhooks: an account subscribes a URL to events (`generation.succeeded`,
//! `generation.failed`, `generation.cancelled`, `cast.*`, `training.*`) and Station
//! posts each event there, signed, until the receiver answers 2xx.
//!
//! Durable first: an event that happened (a generation, cast or training
//! row that ended) is found by a sweep and written as one delivery row per URL
//! before anything is sent (`(event id, url)` unique, so a restart or a
//! second process never enqueues it twice). Deliveries are claimed with a
//! lease, sent with a short timeout and no redirects, and retried with
//! exponential backoff for `webhooks.give_up_hours`. Every attempt of one
//! event carries the same `X-Station-Event-Id`, so a receiver that
//! remembers ids acts at most once per event. Bodies are signed like
//! Stripe's: `X-Station-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>`. Only http(s) URLs are taken, and none on private,
//! loopback or link-local addresses unless `webhooks.allow_private`
//! (checked when subscribing and again, after resolving, when sending).

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use station_store::{AccountRow, NewWebhookDelivery, PendingEvent, StoreError, WebhookDeliveryRow, WebhookRow};
use station_tools::FieldError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Station;
use crate::jobs::SubmitError;

/// Every event a subscription may name.
pub const EVENTS: [&str; 9] = [
    "generation.succeeded",
    "generation.failed",
    "generation.cancelled",
    "cast.succeeded",
    "cast.failed",
    "cast.cancelled",
    "training.succeeded",
    "training.failed",
    "training.cancelled",
];

/// A subscription as its owner sees it (the secret only when created).
#[derive(Debug, Clone, Serialize)]
pub struct Webhook {
    /// Id.
    pub id: String,
    /// Destination.
    pub url: String,
    /// Events sent there.
    pub events: Vec<String>,
    /// When created (Unix ms).
    pub created_at: i64,
}

/// One delivery as its owner sees it (the delivery log).
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// Id (to replay it).
    pub id: String,
    /// The event's id, sent as `X-Station-Event-Id`.
    pub event_id: String,
    /// The event.
    pub event: String,
    /// Destination.
    pub url: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    /// Attempts so far.
    pub attempts: i64,
    /// The receiver's last HTTP status.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When enqueued (Unix ms).
    pub created_at: i64,
    /// When delivered.
    pub delivered_at: Option<i64>,
    /// The JSON body sent.
    pub body: Value,
}

impl From<WebhookDeliveryRow> for Delivery {
    fn from(r: WebhookDeliveryRow) -> Delivery {
        Delivery {
            id: r.id,
            event_id: r.event_id,
            event: r.event,
            url: r.url,
            state: r.state,
            attempts: r.attempts,
            last_status: r.last_status,
            last_error: r.last_error,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
            body: serde_json::from_str(&r.body).unwrap_or(Value::Null),
        }
    }
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Bad URL or events; every problem listed.
    #[error("invalid webhook: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] StoreError),
}

fn view(r: WebhookRow) -> Webhook {
    Webhook {
        events: r.events.split(',').filter(|e| !e.is_empty()).map(str::to_string).collect(),
        id: r.id,
        url: r.url,
        created_at: r.created_at,
    }
}

/// HMAC-SHA256 of `message` under `key` (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The `X-Station-Signature` value for `body` sent at Unix second `t`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    format!("t={t},v1={}", hex::encode(hmac_sha256(secret.as_bytes(), format!("{t}.{body}").as_bytes())))
}

/// Whether an address is one a webhook may not reach without `allow_private`.
fn private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]) // carrier-grade NAT
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| private(IpAddr::V4(v4)))
        }
    }
}

/// Checks a destination: http(s), a host, and — unless `allow_private` —
/// no private, loopback or link-local address (every address it resolves to).
pub async fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("only http and https URLs are taken, not {}:", parsed.scheme()));
    }
    let Some(host) = parsed.host_str() else { return Err("the URL names no host".into()) };
    if url.len() > 2000 {
        return Err("longer than 2000 characters".into());
    }
    if allow_private {
        return Ok(());
    }
    let port = parsed.port_or_known_default().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) if host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost") => {
            return Err(format!("{host} is this machine; private destinations are refused"));
        }
        Err(_) => match tokio::net::lookup_host((host, port)).await {
            Ok(a) => a.map(|s| s.ip()).collect(),
            Err(e) => return Err(format!("{host} does not resolve ({e})")),
        },
    };
    match addrs.iter().find(|ip| private(**ip)) {
        Some(ip) => Err(format!(
            "{host} is a private or loopback address ({ip}); such destinations are refused (webhooks.allow_private)"
        )),
        None => Ok(()),
    }
}

impl Station {
    /// Subscribes `url` to `events` for `account` (`cast.*` stands for the
    /// three cast events, `generation.*` and `training.*` likewise). Returns the subscription
    /// and its signing secret, which is shown only now.
    pub async fn add_webhook(
        &self,
        account: &AccountRow,
        url: &str,
        events: &[String],
    ) -> Result<(Webhook, String), WebhookError> {
        if let Some(off) = self.feature_refusal("webhooks", account).await {
            return Err(WebhookError::Invalid(vec![off]));
        }
        let mut errors = vec![];
        if let Err(reason) = check_url(url.trim(), self.config.webhooks.allow_private).await {
            errors.push(FieldError { field: "url".into(), reason });
        }
        let mut chosen: Vec<&str> = vec![];
        for e in events {
            let matched: Vec<&str> = match e.strip_suffix(".*") {
                Some(prefix) => EVENTS.iter().copied().filter(|x| x.starts_with(&format!("{prefix}."))).collect(),
                None => EVENTS.iter().copied().filter(|x| x == e).collect(),
            };
            if matched.is_empty() {
                errors.push(FieldError {
                    field: "events".into(),
                    reason: format!(
                        "unknown event {e:?}; known: {}, or generation.*, cast.*, training.*",
                        EVENTS.join(", ")
                    ),
                });
            }
            for m in matched {
                if !chosen.contains(&m) {
                    chosen.push(m);
                }
            }
        }
        if events.is_empty() {
            errors.push(FieldError { field: "events".into(), reason: "name at least one event".into() });
        }
        if !errors.is_empty() {
            return Err(WebhookError::Invalid(errors));
        }
        let secret = format!("whsec_{}", hex::encode(rand::random::<[u8; 24]>()));
        let row = WebhookRow {
            id: uuid::Uuid::now_v7().to_string(),
            account_id: account.id.clone(),
            url: url.trim().to_string(),
            events: format!(",{},", chosen.join(",")),
            secret: secret.clone(),
            created_at: station_store::now_ms(),
            disabled_at: None,
        };
        self.store.insert_webhook(&row).await?;
        Ok((view(row), secret))
    }

    /// The secret `callback_url` deliveries of `account` are signed with
    /// (made the first time it is needed or asked for; subscriptions each
    /// have their own).
    pub async fn callback_secret(&self, account: &AccountRow) -> Result<String, StoreError> {
        let fresh = format!("whsec_{}", hex::encode(rand::random::<[u8; 24]>()));
        self.store.callback_secret(&account.id, &fresh, station_store::now_ms()).await
    }

    /// A request's `callback_url`, trimmed and checked as a subscription's
    /// URL is (refused as the invalid field `callback_url`); `None` when absent or empty.
    pub(crate) async fn check_callback_url(&self, url: Option<&str>) -> Result<Option<String>, SubmitError> {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else { return Ok(None) };
        match check_url(url, self.config.webhooks.allow_private).await {
            Ok(()) => Ok(Some(url.to_string())),
            Err(reason) => Err(SubmitError::Invalid(vec![FieldError { field: "callback_url".into(), reason }])),
        }
    }

    /// The account's subscriptions.
    pub async fn webhooks(&self, account: &AccountRow) -> Result<Vec<Webhook>, StoreError> {
        Ok(self.store.webhooks(&account.id).await?.into_iter().map(view).collect())
    }

    /// Ends one of the account's subscriptions; false when it has none by that id.
    pub async fn remove_webhook(&self, account: &AccountRow, id: &str) -> Result<bool, StoreError> {
        self.store.disable_webhook(&account.id, id, station_store::now_ms()).await
    }

    /// The account's delivery log, newest first.
    pub async fn webhook_deliveries(&self, account: &AccountRow, limit: i64) -> Result<Vec<Delivery>, StoreError> {
        Ok(self.store.webhook_deliveries(&account.id, limit).await?.into_iter().map(Delivery::from).collect())
    }

    /// Sends one of the account's deliveries again now, with the same event
    /// id; false when it has none by that id.
    pub async fn replay_webhook_delivery(&self, account: &AccountRow, id: &str) -> Result<bool, StoreError> {
        let done = self.store.replay_webhook_delivery(&account.id, id, station_store::now_ms()).await?;
        if done {
            self.wake.notify_waiters();
        }
        Ok(done)
    }

    /// Writes a delivery row for every event owed to a subscription (see
    /// [`station_store::Store::pending_events`]); returns how many.
    pub async fn enqueue_webhook_events(&self) -> Result<usize, StoreError> {
        let now = station_store::now_ms();
        let since = now - (self.config.webhooks.give_up_hours.min(24 * 365) as i64) * 3_600_000;
        let mut n = 0;
        for (kind, ev) in self.store.pending_events(since, 100).await? {
            let event = format!("{kind}.{}", ev.status);
            let event_id = format!("{event}:{}", ev.subject_id);
            let Some(data) = self.event_data(&kind, &ev).await? else { continue };
            let body = json!({"id": event_id, "type": event, "created": now / 1000, "data": data}).to_string();
            let d = NewWebhookDelivery {
                id: uuid::Uuid::now_v7().to_string(),
                event_id: &event_id,
                event: &event,
                account_id: &ev.account_id,
                subscription_id: ev.subscription_id.as_deref(),
                url: &ev.url,
                secret: &ev.secret,
                body: &body,
            };
            if self.store.insert_webhook_delivery(&d, now).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// What an event says about its generation or cast.
    async fn event_data(&self, kind: &str, ev: &PendingEvent) -> Result<Option<Value>, StoreError> {
        if kind == "cast" {
            let Some(owner) = self.store.get_account(&ev.account_id).await? else { return Ok(None) };
            return Ok(self
                .cast_view(&owner, &ev.subject_id)
                .await?
                .map(|c| serde_json::to_value(c).unwrap_or_default()));
        }
        if kind == "training" {
            let Some(t) = self.store.get_training(&ev.subject_id).await? else { return Ok(None) };
            return Ok(Some(json!({
                "id": t.id,
                "status": t.status,
                "lora": t.lora_slug,
                "job_id": t.job_id,
                "price": t.price,
                "error": t.error,
                "created_at": t.created_at,
                "finished_at": t.finished_at,
            })));
        }
        let Some(job) = self.store.get_job(&ev.subject_id).await? else { return Ok(None) };
        Ok(Some(json!({
            "id": job.id,
            "tool": job.tool_id,
            "status": job.status,
            "outputs": job.output_ids(),
            "error_code": job.error_code,
            "error": job.error,
            "created_at": job.created_at,
            "finished_at": job.finished_at,
        })))
    }

    /// Sends the deliveries that are due, each once; returns how many were delivered.
    pub async fn send_due_webhooks(&self, client: &reqwest::Client) -> Result<usize, StoreError> {
        let cfg = &self.config.webhooks;
        let lease = (cfg.timeout_seconds.clamp(1, 600) * 1000 + 5_000) as i64;
        let due = self.store.claim_webhook_deliveries(station_store::now_ms(), lease, 20).await?;
        let sends = due.into_iter().map(|d| async move {
            let outcome = self.send_one(client, &d).await;
            let now = station_store::now_ms();
            let (state, status, error, next) = match outcome {
                Ok(status) if (200..300).contains(&status) => ("delivered", Some(status), None, now),
                other => {
                    let (status, error) = match other {
                        Ok(s) => (Some(s), format!("the receiver answered {s}")),
                        Err(e) => (None, e),
                    };
                    let backoff =
                        (cfg.retry_base_ms as i64).saturating_mul(1 << d.attempts.clamp(1, 20).saturating_sub(1));
                    let next = now + backoff.min(3_600_000);
                    let give_up = d.created_at + (cfg.give_up_hours as i64) * 3_600_000;
                    let state = if next > give_up { "failed" } else { "pending" };
                    (state, status, Some(error), next)
                }
            };
            match self
                .store
                .record_webhook_delivery(&d.id, d.attempts, state, status, error.as_deref(), next, now)
                .await
            {
                Ok(_) => {
                    if state == "delivered" {
                        info!(event = %d.event_id, url = %d.url, "webhook delivered");
                    } else {
                        info!(event = %d.event_id, url = %d.url, ?status, ?error, %state, "webhook not delivered");
                    }
                }
                Err(e) => warn!(delivery = %d.id, error = %e, "could not record a webhook attempt; it is sent again"),
            }
            state == "delivered"
        });
        Ok(futures::future::join_all(sends).await.into_iter().filter(|ok| *ok).count())
    }

    async fn send_one(&self, client: &reqwest::Client, d: &WebhookDeliveryRow) -> Result<i64, String> {
        check_url(&d.url, self.config.webhooks.allow_private).await?;
        let t = station_store::now_ms() / 1000;
        let r = client
            .post(&d.url)
            .header("content-type", "application/json")
            .header("user-agent", concat!("Station-Webhooks/", env!("CARGO_PKG_VERSION")))
            .header("x-station-event-id", &d.event_id)
            .header("x-station-event", &d.event)
            .header("x-station-signature", signature(&d.secret, t, &d.body))
            .body(d.body.clone())
            .send()
            .await
            .map_err(|e| format!("could not reach it: {e}"))?;
        Ok(i64::from(r.status().as_u16()))
    }
}

/// The HTTP client webhooks are sent with: short timeouts, no redirects
/// (a redirect could lead to a private address after the check).
pub fn client(station: &Station) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let t = Duration::from_secs(station.config.webhooks.timeout_seconds.clamp(1, 600));
    reqwest::Client::builder()
        .timeout(t)
        .connect_timeout(t)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client with rustls")
}

/// Enqueues and sends webhook deliveries until `stop`: started with the workers.
pub(crate) async fn webhook_loop(station: Station, stop: CancellationToken) {
    let client = client(&station);
    let every = Duration::from_millis(station.config.queue.poll_ms.clamp(50, 1000));
    loop {
        if let Err(e) = station.enqueue_webhook_events().await {
            warn!(error = %e, "could not enqueue webhook events");
        }
        if let Err(e) = station.send_due_webhooks(&client).await {
            warn!(error = %e, "could not send webhooks");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // Test case 6: a key longer than a block.
        let mac = hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex::encode(mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[tokio::test]
    async fn private_destinations_are_refused() {
        for url in [
            "http://127.0.0.1:9/x",
            "http://10.1.2.3/",
            "http://[::1]/",
            "http://localhost/",
            "http://169.254.169.254/",
        ] {
            assert!(check_url(url, false).await.is_err(), "{url}");
            assert!(check_url(url, true).await.is_ok(), "{url} with allow_private");
        }
        assert!(check_url("ftp://example.com/", true).await.is_err());
        assert!(check_url("http://93.184.216.34/hook", false).await.is_ok());
    }
}
