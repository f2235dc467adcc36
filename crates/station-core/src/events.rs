//! Job events: status changes, progress, previews and results.
//!
//! Producers publish to an [`EventBus`]; every front end subscribes and keeps
//! what concerns it. The in-process bus is a broadcast channel. Events are
//! plain serialisable values (previews as base64) so a PostgreSQL
//! LISTEN/NOTIFY bus can carry them between Station processes: a payload too
//! large for NOTIFY (previews) would then travel by media id instead.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use station_store::JobStatus;
use tokio::sync::broadcast;

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
