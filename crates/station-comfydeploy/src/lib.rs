//! Hosted ComfyUI on ComfyDeploy as a Station backend kind.
//!
//! A tool with `"service": "comfydeploy"` names a deployment and maps its
//! inputs to the deployment's external inputs (`station-tools`). The
//! [`DeployExecutor`] runs such jobs behind the core's `Executor` seam:
//! it queues a run (`POST /api/run/deployment/queue`), records the run id
//! as the job's `remote_id` before waiting, follows the run by
//! `GET /api/run/{id}` (woken early by the provider's webhooks, which are
//! unsigned and so only hints), reports progress, downloads the outputs
//! and cancels with `POST /api/run/{id}/cancel`. A job claimed again after
//! a restart is reconciled by its run id: followed or collected, never
//! queued twice while the provider knows the run. Configuration is the
//! `[comfydeploy]` section ([`ComfyDeployConfig`]).

mod client;
mod config;
mod executor;

pub use client::{ApiError, DeployClient, RunState};
pub use config::{ComfyDeployConfig, DeployBackendConfig, EXAMPLE, SECTION};
pub use executor::DeployExecutor;

/// The service name tools declare (`"service": "comfydeploy"`) and the
/// webhook path's last segment (`/hooks/comfydeploy`).
pub const SERVICE: &str = "comfydeploy";
