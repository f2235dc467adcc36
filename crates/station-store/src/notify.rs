//! PostgreSQL `LISTEN`/`NOTIFY`, so several Station processes sharing one
//! database hear each other's job events. SQLite (one process) has none.

use crate::db::{Store, StoreError};

/// A PostgreSQL notification channel scoped to the store's schema: schemas
/// sharing a server (tests, several deployments) never hear each other.
#[derive(Debug, Clone)]
pub struct Channel(String);

impl Channel {
    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// Notifications received on a channel.
pub struct Notifications(sqlx::postgres::PgListener);

impl Notifications {
    /// The next payload; errors when the connection is lost for good (the
    /// listener reconnects by itself on transient drops).
    pub async fn recv(&mut self) -> Result<String, StoreError> {
        Ok(self.0.recv().await?.payload().to_string())
    }

    /// Like [`Notifications::recv`], but says when the connection was lost
    /// and has just been re-established (`None`): notifications sent
    /// meanwhile were missed, so whoever relies on them can start afresh.
    pub async fn next(&mut self) -> Result<Option<String>, StoreError> {
        Ok(self.0.try_recv().await?.map(|n| n.payload().to_string()))
    }
}

impl Store {
    /// The event channel for this store's schema (PostgreSQL only).
    pub async fn event_channel(&self, prefix: &str) -> Result<Option<Channel>, StoreError> {
        let Store::Postgres(p) = self else { return Ok(None) };
        let (schema,): (String,) = sqlx::query_as("SELECT current_schema()").fetch_one(p).await?;
        let clean: String = schema.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        // Channel names are identifiers: at most 63 bytes.
        let mut name = format!("{prefix}_{clean}");
        name.truncate(63);
        Ok(Some(Channel(name)))
    }

    /// Sends a notification (payloads must stay under 8000 bytes).
    pub async fn notify(&self, channel: &Channel, payload: &str) -> Result<(), StoreError> {
        if let Store::Postgres(p) = self {
            sqlx::query("SELECT pg_notify($1, $2)").bind(&channel.0).bind(payload).execute(p).await?;
        }
        Ok(())
    }

    /// Listens on a channel (PostgreSQL only).
    pub async fn listen(&self, channel: &Channel) -> Result<Option<Notifications>, StoreError> {
        let Store::Postgres(p) = self else { return Ok(None) };
        let mut l = sqlx::postgres::PgListener::connect_with(p).await?;
        l.listen(&channel.0).await?;
        Ok(Some(Notifications(l)))
    }
}
