//! Station's platform-agnostic core.
//!
//! [`Station`] bundles configuration, storage, the tool registry, media and
//! the event bus; jobs are submitted through it and run by [`Workers`]
//! through pluggable [`Executor`]s (ComfyUI, native media). Front ends
//! (CLI, HTTP, chat bots) call into this crate and never the other way round.

pub mod adapter_state;
pub mod admin;
pub mod alerts;
pub mod audit;
pub mod auth_cache;
pub mod captions;
pub mod collections;
pub mod config;
pub mod conversations;
pub mod cook;
pub mod doctor;
pub mod events;
pub mod executor;
#[doc(hidden)]
pub mod faults;
pub mod flags;
pub mod group_tools;
pub mod identity;
pub mod inbox;
pub mod jobs;
pub mod loras;
pub mod media;
pub mod models;
pub mod native;
pub mod own_loras;
pub mod points;
pub mod secrets;
pub mod settings;
pub mod spells;
pub mod stats;
pub mod telemetry;
pub mod training;
pub mod wallets;
pub mod watermark;
pub mod webhooks;
pub mod worker;

use std::sync::{Arc, RwLock};

pub use adapter_state::AdapterState;
pub use admin::{BackendHealth, QueueOverview, ServiceHealth};
pub use collections::{CollectionError, CollectionView, ItemRef};
pub use config::Config;
pub use events::{EventBus, InProcessBus, JobEvent, PgBus};
pub use executor::{DatasetFile, ExecContext, ExecError, ExecJob, Executor, InputImage, OutputFile};
pub use inbox::InboxService;
pub use jobs::{
    DownloadError, GenerationPage, GenerationsZip, JobAccessError, JobIdError, JobStatusView, JobView, RatingError,
    SubmitError, SubmitRequest, service_name,
};
pub use media::{CheckedImage, DecodeSlot, ImageProblem, MediaService, MediaServiceError, UPLOAD_SLOT_WAIT};
pub use native::MediaExecutor;
pub use settings::{SettingsError, SettingsService};
pub use worker::Workers;

use station_store::Store;
/// What a tool is, for front ends that draw forms and commands from tool
/// definitions: the types, and the one way text typed by a person becomes a
/// parameter value.
pub mod tools {
    pub use station_tools::{
        Cost, FieldError, InputDef, InputType, LoadOptions, ToolDef, ToolLoadError, ToolRegistry, Visibility,
        check_dir, check_dir_with, check_input, coerce_text, coerce_value,
    };
}

/// The records front ends read, as the core hands them out. Only the core
/// writes them; front ends never name the store.
pub use station_store::{
    AccountRow, BackendRow, CollectionExportRow, CollectionItemRow, CollectionRow, CollectionShareRow,
    GenerationFilter, JobFilter, JobRow, JobStatus, MediaRow, RatedJob, Role, StoreError, mask_url, now_ms,
};
use station_tools::{ToolLoadError, ToolRegistry};

/// The core, shared by every front end. Cloning is one reference count:
/// axum clones the state for every request, often twice.
#[derive(Clone)]
pub struct Station(Arc<StationParts>);

impl std::ops::Deref for Station {
    type Target = StationParts;

    fn deref(&self) -> &StationParts {
        &self.0
    }
}

/// What a [`Station`] holds; its fields are read through the `Station`.
#[derive(Clone)]
pub struct StationParts {
    /// Effective configuration.
    pub config: Arc<Config>,
    /// Database: private to the core. Front ends call `Station` methods and
    /// services, which enforce ownership, validation and idempotency once.
    pub(crate) store: Store,
    /// Tools (reloads when the folder changes, once [`ToolRegistry::watch`] runs).
    pub tools: ToolRegistry,
    /// Media records and blobs.
    pub media: MediaService,
    /// Job events.
    pub bus: Arc<dyn EventBus>,
    /// Wakes idle workers when a job is submitted.
    pub wake: Arc<tokio::sync::Notify>,
    /// Wakes the export worker when a collection export is asked for.
    pub export_wake: Arc<tokio::sync::Notify>,
    /// Wakes the cook driver when a cook starts, resumes or a piece is sent back.
    pub cook_wake: Arc<tokio::sync::Notify>,
    /// Registered executors, one per service.
    pub executors: Arc<RwLock<Vec<Arc<dyn Executor>>>>,
    /// Accounts this process knows already received their starting grant, so
    /// a submit does not write an (idempotent) grant every time.
    pub starting_granted: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// The LoRA catalog as last read (see [`Station::loras`]).
    pub lora_cache: loras::LoraCache,
    /// The backends' models and the catalog as last read (see [`models`]).
    pub model_cache: models::ModelCache,
    /// The operator's automatic watermark on job results (`media.auto_watermark`).
    pub auto_watermark: watermark::AutoWatermark,
    /// Per-account request budgets (see [`Station::check_rate`]).
    pub rate_limits: Arc<identity::RateLimiter>,
    /// Recently resolved API keys and sessions (see [`auth_cache`]).
    pub auth_cache: Arc<auth_cache::AuthCache>,
    /// Feature flags as last read (see [`flags`]).
    pub flag_cache: Arc<flags::FlagCache>,
    /// Who sends alert messages to chat sinks in this process (see [`alerts`]).
    pub alert_senders: alerts::AlertSenders,
    /// The configured chains of `[wallets]`, checked (see [`wallets`]).
    pub wallet_chains: Arc<[wallets::Chain]>,
    /// Recent run times per tool for ETAs, read at most once a second.
    pub eta_cache: jobs::EtaCache,
    /// Jobs of this process waiting on a hosted provider, by remote id: an
    /// unsigned webhook only wakes them ([`Station::hint_remote`]).
    pub remote_hints: executor::RemoteHints,
    /// Cancelled when the process begins to shut down ([`Station::begin_shutdown`]):
    /// long-lived streams (server-sent events) end on it.
    pub closing: tokio_util::sync::CancellationToken,
    /// The cross-process event bus on PostgreSQL, closed before the pool.
    pg_bus: Option<Arc<events::PgBus>>,
    /// Test-only fault injection (stall or crash at named points).
    #[doc(hidden)]
    pub faults: faults::Faults,
}

/// A [`Station`] that does not keep it alive ([`Station::downgrade`]).
#[derive(Clone)]
pub struct WeakStation(std::sync::Weak<StationParts>);

impl WeakStation {
    /// The Station, while it exists.
    pub fn upgrade(&self) -> Option<Station> {
        self.0.upgrade().map(Station)
    }
}

/// Why Station could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data folder could not be created.
    #[error("cannot create data folder {path}: {source}")]
    DataDir {
        /// The folder.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] station_store::StoreError),
    /// The media store (folder or bucket) could not be opened or does not
    /// answer: the sentence says which setting to look at.
    #[error("media store: {0}")]
    Media(String),
    /// The automatic watermark settings are unusable.
    #[error("{0}")]
    Watermark(String),
    /// The `[wallets]` section is unusable (names the chain and key).
    #[error("{0}")]
    Wallets(String),
    /// The `[training]` section names something that does not exist.
    #[error("{0}")]
    Training(String),
}

impl Station {
    /// Opens the database (running migrations), the media store and the tool
    /// registry. Returns the tool files that failed to load, which never stop
    /// the others (nor start-up).
    /// With `media.store = "s3"` one listing request checks the bucket and
    /// the credentials, so a missing bucket or refused keys stop start-up
    /// with a sentence saying which.
    pub async fn open(config: Config) -> Result<(Station, Vec<ToolLoadError>), OpenError> {
        let (station, errors) = Self::open_without_media_check(config).await?;
        station.media.check_store().await.map_err(OpenError::Media)?;
        Ok((station, errors))
    }

    /// [`Station::open`] without checking that the media store answers:
    /// for `station doctor`, which reports that as one of its findings.
    pub async fn open_without_media_check(config: Config) -> Result<(Station, Vec<ToolLoadError>), OpenError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| OpenError::DataDir { path: config.data_dir.clone(), source })?;
        let store = Store::connect(&config.database_url()).await?;
        store.migrate().await?;
        let (mut station, errors) = Self::with_store(config, store)?;
        station.join_processes().await?;
        // Tool lists (synchronous) read the inventory from this copy.
        station.reload_models().await?;
        // Flags are read synchronously (tool lookups): loaded before the first one.
        station.reload_flags().await?;
        Ok((station, errors))
    }

    /// On PostgreSQL, shares job events and credential invalidations with
    /// every other Station process on the same schema (LISTEN/NOTIFY); on
    /// SQLite, nothing. [`Station::open`] does this; stations made with
    /// [`Station::with_store`] (tests) may.
    pub async fn join_processes(&mut self) -> Result<(), OpenError> {
        if let Some(bus) = events::PgBus::start_with(self.store.clone(), Some(self.auth_cache.clone())).await? {
            // A clone made before joining keeps the in-process bus.
            let parts = Arc::make_mut(&mut self.0);
            parts.bus = bus.clone() as Arc<dyn EventBus>;
            parts.pg_bus = Some(bus);
        }
        Ok(())
    }

    /// Like [`Station::open`] on an already migrated store (tests).
    pub fn with_store(config: Config, store: Store) -> Result<(Station, Vec<ToolLoadError>), OpenError> {
        let blobs: Arc<dyn station_media::BlobStore> = match config.media.store {
            config::MediaStoreKind::Local => Arc::new(
                station_media::MediaStore::open(config.media_dir())
                    .map_err(|e| OpenError::Media(format!("media_dir: {e}")))?,
            ),
            config::MediaStoreKind::S3 => Arc::new(
                station_media::ObjectBlobStore::open(&config.media.s3.settings())
                    .map_err(|e| OpenError::Media(format!("[media.s3]: {e}")))?,
            ),
        };
        let limits = station_media::DecodeLimits {
            max_bytes: config.media.max_bytes,
            max_pixels: config.media.max_pixels,
            max_frames: config.media.max_frames,
            ..Default::default()
        };
        let auto_watermark =
            watermark::AutoWatermark::from_config(&config.media, limits).map_err(OpenError::Watermark)?;
        let wallet_chains: Arc<[wallets::Chain]> =
            wallets::chains_from_config(&config.wallets).map_err(OpenError::Wallets)?.into();
        training::check_config(&config.training).map_err(OpenError::Training)?;
        let tools_dir = config.tools_dir();
        let (tools, errors) = ToolRegistry::load_with(Some(&tools_dir), config.tools.load_options());
        let rate_limits = Arc::new(identity::RateLimiter::new(config.limits.requests_per_minute));
        let auth_cache =
            Arc::new(auth_cache::AuthCache::new(std::time::Duration::from_millis(config.limits.auth_cache_ms)));
        let station = Station(Arc::new(StationParts {
            media: MediaService::new(
                blobs,
                store.clone(),
                limits,
                usize::try_from(config.media.decode_concurrency).unwrap_or(usize::MAX),
            )
            .with_presign(config.media.presign_seconds),
            config: Arc::new(config),
            store,
            tools,
            bus: Arc::new(InProcessBus::default()),
            wake: Arc::new(tokio::sync::Notify::new()),
            export_wake: Arc::new(tokio::sync::Notify::new()),
            cook_wake: Arc::new(tokio::sync::Notify::new()),
            executors: Default::default(),
            starting_granted: Default::default(),
            lora_cache: Default::default(),
            model_cache: Default::default(),
            auto_watermark,
            rate_limits,
            auth_cache,
            flag_cache: Default::default(),
            alert_senders: Default::default(),
            eta_cache: Default::default(),
            remote_hints: Default::default(),
            wallet_chains,
            faults: Default::default(),
            closing: tokio_util::sync::CancellationToken::new(),
            pg_bus: None,
        }));
        Ok((station, errors))
    }

    /// Registers the executor for a service (replacing any earlier one).
    /// Register before [`Workers::start`].
    pub fn register_executor(&self, ex: Arc<dyn Executor>) {
        ex.attach(self);
        let mut list = self.executors.write().expect("executors lock");
        list.retain(|e| e.service() != ex.service());
        list.push(ex);
    }

    /// The context an executor runs job `job_id` with, as worker `owner`
    /// holding its lease: what tests use to drive an executor directly.
    pub fn exec_context(&self, owner: &str, job_id: &str, cancel: tokio_util::sync::CancellationToken) -> ExecContext {
        ExecContext::new(self, owner, job_id, cancel)
    }

    /// A hosted provider said (in an unsigned webhook) that its run
    /// `remote_id` moved: wakes the job of this process that waits on it,
    /// which then asks the provider itself before recording anything, so a
    /// forged hint costs one status request and changes no outcome. True
    /// when a waiter was woken. Only services with a registered executor
    /// are hinted.
    pub fn hint_remote(&self, service: &str, remote_id: &str) -> bool {
        let known = self.executors.read().expect("executors lock").iter().any(|e| e.service() == service);
        known && !remote_id.is_empty() && remote_id.len() <= 200 && self.remote_hints.wake(service, remote_id)
    }

    /// A reference that does not keep the Station alive (for executors,
    /// which the Station holds).
    pub fn downgrade(&self) -> WeakStation {
        WeakStation(Arc::downgrade(&self.0))
    }

    /// Prompts to cancel on `backend` (every backend when None): the
    /// earlier prompts of jobs that moved elsewhere and the prompts of jobs
    /// that timed out, as `(backend, prompt id)`, oldest first.
    pub async fn prompts_to_cancel(&self, backend: Option<&str>) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.store.remote_cancels(backend).await?.into_iter().map(|r| (r.backend, r.remote_id)).collect())
    }

    /// A prompt listed by [`Station::prompts_to_cancel`] was cancelled on its
    /// backend (or is gone there).
    pub async fn prompt_cancelled(&self, backend: &str, prompt_id: &str) -> Result<(), StoreError> {
        self.store.remote_cancel_done(backend, prompt_id).await
    }

    /// Tells long-lived work of this process (event streams) to end: the
    /// first step of a graceful shutdown.
    pub fn begin_shutdown(&self) {
        self.closing.cancel();
    }

    /// Closes the database connections: on PostgreSQL the listener sharing
    /// events between processes first (so it does not report the pool it
    /// reconnects through as closed), then the pool. Call once, at exit.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        if let Some(bus) = &self.pg_bus {
            bus.close().await;
        }
        self.store.close().await;
    }

    /// The account for a platform identity, created on first contact.
    pub async fn account(
        &self,
        provider: &str,
        subject: &str,
        name: &str,
    ) -> Result<station_store::AccountRow, station_store::StoreError> {
        self.store.account_for_identity(provider, subject, name, station_store::now_ms()).await
    }
}
