//! Job events: status changes, progress, previews and results.
//!
//! Producers publish to an [`EventBus`]; every front end subscribes and keeps
//! what concerns it. The in-process bus is a broadcast channel. Events are
//! plain serialisable values (previews as base64) so [`PgBus`] carries them
//! between Station processes on one PostgreSQL with LISTEN/NOTIFY (a preview
//! too large for a notification stays in its process).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use station_store::JobStatus;
use tokio::sync::broadcast;

use crate::auth_cache::{Announcer, AuthCache, Invalidation};

/// Something that happened to a job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    /// The job changed state.
    Status {
        /// Job id.
        job_id: String,
        /// New status.
        status: JobStatus,
        /// Error text for failures.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Progress of a running job.
    Progress {
        /// Job id.
        job_id: String,
        /// 0..=1, never decreasing within one attempt.
        fraction: f64,
        /// Current step, when the backend reports steps.
        #[serde(skip_serializing_if = "Option::is_none")]
        step: Option<u64>,
        /// Steps in the current node.
        #[serde(skip_serializing_if = "Option::is_none")]
        of: Option<u64>,
        /// What is happening (node type, "loading model" …).
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// A preview image of the job's current state.
    Preview {
        /// Job id.
        job_id: String,
        /// `image/jpeg` or `image/png`.
        mime: String,
        /// Encoded image, base64 in JSON.
        #[serde(with = "b64")]
        data: Arc<Vec<u8>>,
    },
    /// The job finished with these output media ids.
    Result {
        /// Job id.
        job_id: String,
        /// Output media ids, in order.
        outputs: Vec<String>,
    },
}

impl JobEvent {
    /// The job this event belongs to.
    pub fn job_id(&self) -> &str {
        match self {
            JobEvent::Status { job_id, .. }
            | JobEvent::Progress { job_id, .. }
            | JobEvent::Preview { job_id, .. }
            | JobEvent::Result { job_id, .. } => job_id,
        }
    }
}

mod b64 {
    use std::sync::Arc;

    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &Arc<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(data.as_slice()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Vec<u8>>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(s).map(Arc::new).map_err(serde::de::Error::custom)
    }
}

/// Where job events are published and subscribed.
pub trait EventBus: Send + Sync + 'static {
    /// Publishes an event to every subscriber (never blocks; slow subscribers
    /// miss events and are told how many through `RecvError::Lagged`).
    fn publish(&self, event: JobEvent);
    /// Receives every event published from now on.
    fn subscribe(&self) -> broadcast::Receiver<JobEvent>;
}

/// The in-process bus: one broadcast channel.
pub struct InProcessBus {
    tx: broadcast::Sender<JobEvent>,
}

impl InProcessBus {
    /// A bus buffering up to `capacity` events per slow subscriber.
    pub fn new(capacity: usize) -> InProcessBus {
        InProcessBus { tx: broadcast::channel(capacity).0 }
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        InProcessBus::new(4096)
    }
}

impl EventBus for InProcessBus {
    fn publish(&self, event: JobEvent) {
        // No subscribers is fine: state is in the database either way.
        let _ = self.tx.send(event);
    }

    fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.tx.subscribe()
    }
}

/// Job events shared by every Station process on one PostgreSQL database:
/// each event is published locally and sent with `NOTIFY`; events other
/// processes send arrive through `LISTEN` and are published locally, so a
/// chat conversation sees live progress of a job another process runs.
///
/// Payloads must stay under PostgreSQL's 8000 bytes: previews travel only
/// when small enough (a process that did not run the job may miss some
/// previews, never a status or a result — and results are in the row anyway).
pub struct PgBus {
    local: InProcessBus,
    outbox: tokio::sync::mpsc::UnboundedSender<JobEvent>,
    stop: tokio_util::sync::CancellationToken,
    receiver: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// One notification: a job event, or a credential that stopped working
/// (see [`crate::auth_cache`]).
#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<JobEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<Invalidation>,
}

/// Announces this process's credential invalidations on the event channel.
struct PgAnnouncer {
    store: station_store::Store,
    channel: station_store::Channel,
    origin: String,
}

#[async_trait::async_trait]
impl Announcer for PgAnnouncer {
    async fn announce(&self, inv: &Invalidation) {
        let envelope = Envelope { origin: self.origin.clone(), event: None, auth: Some(inv.clone()) };
        let payload = serde_json::to_string(&envelope).expect("an invalidation serialises");
        if let Err(e) = self.store.notify(&self.channel, &payload).await {
            tracing::warn!(error = %e, "could not announce a credential change to other processes");
        }
    }
}

const PG_PAYLOAD_MAX: usize = 7900;

impl PgBus {
    /// Starts the bus on `store`'s event channel; `None` on SQLite (one
    /// process: the in-process bus is enough).
    pub async fn start(store: station_store::Store) -> Result<Option<Arc<PgBus>>, station_store::StoreError> {
        Self::start_with(store, None).await
    }

    /// [`PgBus::start`] that also carries credential invalidations for
    /// `auth`: those other processes announce are applied to it, and
    /// [`crate::Station::invalidate_credentials`] announces this process's
    /// on the same channel.
    pub async fn start_with(
        store: station_store::Store,
        auth: Option<Arc<AuthCache>>,
    ) -> Result<Option<Arc<PgBus>>, station_store::StoreError> {
        let Some(channel) = store.event_channel("station_events").await? else { return Ok(None) };
        let Some(mut listener) = store.listen(&channel).await? else { return Ok(None) };
        let origin = uuid::Uuid::new_v4().simple().to_string();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<JobEvent>();
        let stop = tokio_util::sync::CancellationToken::new();
        let bus = Arc::new(PgBus {
            local: InProcessBus::default(),
            outbox: tx,
            stop: stop.clone(),
            receiver: std::sync::Mutex::new(None),
        });
        if let Some(auth) = &auth {
            auth.set_remote(Arc::new(PgAnnouncer {
                store: store.clone(),
                channel: channel.clone(),
                origin: origin.clone(),
            }));
        }
        // Sender: one NOTIFY per event, in order.
        let send_store = store.clone();
        let send_channel = channel.clone();
        let send_origin = origin.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let envelope = Envelope { origin: send_origin.clone(), event: Some(event), auth: None };
                let text = match serde_json::to_string(&envelope) {
                    Ok(t) if t.len() <= PG_PAYLOAD_MAX => t,
                    _ => continue,
                };
                if let Err(e) = send_store.notify(&send_channel, &text).await {
                    tracing::debug!(error = %e, "could not share a job event with other processes");
                }
            }
        });
        // Receiver: events from other processes join the local bus.
        let weak = Arc::downgrade(&bus);
        let receiver = tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    // Closing: the listener is dropped here, before the pool closes.
                    () = stop.cancelled() => return,
                    n = listener.next() => n,
                };
                let payload = match next {
                    Ok(Some(p)) => p,
                    Ok(None) => {
                        // Reconnected: announcements sent meanwhile were missed.
                        if let Some(auth) = &auth {
                            auth.apply(&Invalidation::All);
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "event listener stopped; other processes' progress is read from the rows");
                        return;
                    }
                };
                let Some(bus) = weak.upgrade() else { return };
                match serde_json::from_str::<Envelope>(&payload) {
                    Ok(env) if env.origin != origin => {
                        if let Some(event) = env.event {
                            bus.local.publish(event);
                        }
                        if let (Some(inv), Some(auth)) = (env.auth, &auth) {
                            auth.apply(&inv);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "ignoring an unreadable event notification"),
                }
            }
        });
        *bus.receiver.lock().expect("receiver lock") = Some(receiver);
        Ok(Some(bus))
    }
}

impl PgBus {
    /// Stops listening (the listener's connection is closed) and waits until
    /// it has stopped. Called before the pool closes.
    pub async fn close(&self) {
        self.stop.cancel();
        let task = self.receiver.lock().expect("receiver lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl EventBus for PgBus {
    fn publish(&self, event: JobEvent) {
        self.local.publish(event.clone());
        let _ = self.outbox.send(event);
    }

    fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.local.subscribe()
    }
}
