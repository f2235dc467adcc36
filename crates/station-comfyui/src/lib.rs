//! ComfyUI protocol client for Station: HTTP calls, one multiplexed websocket per backend,
//! progress figures, and running a prompt to its end with reconciliation after gaps.

pub mod client;
pub mod error;
pub mod executor;
pub mod inventory;
pub mod progress;
pub mod protocol;
pub mod run;
pub mod socket;

pub use client::{ComfyClient, SubmitRequest};
pub use error::{ComfyError, NodeError};
pub use executor::{BackendSpec, BackendStatus, ComfyExecutor, DEFAULT_HEALTH_TIMEOUTS, DEFAULT_UNREACHABLE_GRACE};
pub use progress::ProgressTracker;
pub use protocol::{Graph, HistoryEntry, ImageRef, ObjectInfo, QueueState, UploadedImage};
pub use run::{PromptOutcome, RemoteState, RunOptions, reconcile, run_prompt};
pub use socket::{BackendSocket, PromptEvent};
