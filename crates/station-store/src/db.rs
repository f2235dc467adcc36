use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL could not be understood.
    #[error("database URL {url:?} is not valid: {reason} (use sqlite://PATH or postgres://USER@HOST/DB)")]
    BadUrl {
        /// The offending URL with any password masked.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The database server could not be reached at start.
    #[error("cannot connect to {url} ({reason})")]
    Connect {
        /// The URL with any password masked.
        url: String,
        /// Why, in words ("connection refused", "password authentication failed …").
        reason: String,
    },
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// Running migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored JSON column could not be read.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A batched write (see `FinishBatcher`) did not reach the database;
    /// the message says why. Nothing of the batch was committed.
    #[error("batched write failed: {0}")]
    Batch(String),
    /// A row that must exist does not.
    #[error("{what} {id} not found")]
    NotFound {
        /// What kind of thing.
        what: &'static str,
        /// Its id.
        id: String,
    },
}

impl StoreError {
    /// The database could not be reached (connection refused or dropped,
    /// pool timed out waiting for a connection, server shutting down or
    /// starting up): worth answering "try again shortly", not a bug.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Sql(e) => match e {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed => true,
                // SQLSTATE class 08 (connection exception), 57P01–57P03
                // (the server is shutting down or not accepting connections yet).
                sqlx::Error::Database(d) => {
                    d.code().is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03"))
                }
                _ => false,
            },
            StoreError::Batch(m) => m.contains("pool timed out") || m.contains("error communicating"),
            _ => false,
        }
    }
}

/// Which database engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file (WAL).
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The database handle shared by every service. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Store {
    /// SQLite pool.
    Sqlite(SqlitePool),
    /// PostgreSQL pool.
    Postgres(PgPool),
}

/// Why a connection failed, in words.
fn connect_reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            std::io::ErrorKind::TimedOut => "connection timed out".into(),
            _ => io.to_string(),
        },
        sqlx::Error::Database(d) => d.message().to_string(),
        other => other.to_string(),
    }
}

/// Runs the same body against whichever pool the store holds. The body is
/// compiled once per database, so portable SQL is written only once.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::db::Store::Sqlite($pool) => $body,
            $crate::db::Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Begins a transaction that will write. On SQLite it is `BEGIN IMMEDIATE`:
/// a deferred transaction that reads first and writes later cannot wait for
/// the write lock once another connection has committed since its read
/// (SQLite answers `SQLITE_BUSY_SNAPSHOT`, "database is locked", at once and
/// the busy timeout does not apply); taking the lock at `BEGIN` makes it
/// wait its turn instead. PostgreSQL's row locks need nothing special.
pub(crate) trait BeginWrite {
    /// The pool's database.
    type Db: sqlx::Database;
    /// Starts the transaction, holding the write lock where the database has one.
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>> + Send;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error>> + Send {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error>> + Send {
        self.begin()
    }
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Masks the password of a URL for messages and logs.
pub fn mask_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:****{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Store {
    /// Connections the pool holds and how many of them are idle.
    pub fn pool_connections(&self) -> (u32, usize) {
        with_pool!(self, p => (p.size(), p.num_idle()))
    }

    /// Connects to the database named by `url` (`sqlite://path`, `sqlite::memory:`,
    /// `postgres://…`). Does not run migrations; call [`Store::migrate`].
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::BadUrl { url: mask_url(url), reason: e.to_string() })?;
            Self::connect_postgres(opts).await
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            Self::connect_sqlite(Path::new(path)).await
        } else {
            Err(StoreError::BadUrl { url: mask_url(url), reason: "unknown scheme".into() })
        }
    }

    /// Opens (creating if needed) a SQLite database file in WAL mode.
    pub async fn connect_sqlite(path: &Path) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::BadUrl {
                url: path.display().to_string(),
                reason: format!("cannot create folder {}: {e}", parent.display()),
            })?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL is durable across process crashes (the WAL is
            // fsynced at checkpoints); only an OS crash can lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-16000");
        let pool = SqlitePoolOptions::new().max_connections(8).min_connections(1).connect_with(opts).await?;
        Ok(Store::Sqlite(pool))
    }

    /// Connects to PostgreSQL with explicit options (tests use a per-test schema
    /// through `search_path`).
    pub async fn connect_postgres(opts: PgConnectOptions) -> Result<Store, StoreError> {
        // One connection first: a pool only says "timed out" when the
        // server is unreachable; a connection says why.
        {
            use sqlx::{ConnectOptions as _, Connection as _};
            let url = mask_url(opts.to_url_lossy().as_str());
            let first = tokio::time::timeout(Duration::from_secs(10), opts.connect()).await;
            match first {
                Ok(Ok(c)) => {
                    let _ = c.close().await;
                }
                Ok(Err(e)) => return Err(StoreError::Connect { url, reason: connect_reason(&e) }),
                Err(_) => return Err(StoreError::Connect { url, reason: "no answer within 10 s".into() }),
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        Ok(Store::Postgres(pool))
    }

    /// Creates a fresh schema on a PostgreSQL server and returns a store whose
    /// connections use it. Used by tests so each one gets an empty database.
    pub async fn connect_postgres_fresh_schema(url: &str, schema: &str) -> Result<Store, StoreError> {
        let base = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl { url: mask_url(url), reason: e.to_string() })?;
        let admin = PgPoolOptions::new().max_connections(1).connect_with(base.clone()).await?;
        sqlx::query(safe(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))).execute(&admin).await?;
        sqlx::query(safe(&format!("CREATE SCHEMA \"{schema}\""))).execute(&admin).await?;
        admin.close().await;
        Self::connect_postgres(base.options([("search_path", schema)])).await
    }

    /// Drops a schema made by [`Store::connect_postgres_fresh_schema`] and
    /// everything in it (benchmarks and tests clean up after themselves).
    pub async fn drop_postgres_schema(url: &str, schema: &str) -> Result<(), StoreError> {
        let base = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl { url: mask_url(url), reason: e.to_string() })?;
        let admin = PgPoolOptions::new().max_connections(1).connect_with(base).await?;
        sqlx::query(safe(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))).execute(&admin).await?;
        admin.close().await;
        Ok(())
    }

    /// Which engine this store uses.
    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite(_) => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies every pending migration. Safe to call at every start: applied
    /// versions are skipped, and concurrent processes are serialised by sqlx.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(p) => SQLITE_MIGRATOR.run(p).await?,
            Store::Postgres(p) => POSTGRES_MIGRATOR.run(p).await?,
        }
        Ok(())
    }

    /// Applies pending migrations up to and including `version`, leaving
    /// later ones pending: tests of upgrades write rows in an older schema
    /// before [`Store::migrate`] brings it up to date.
    pub async fn migrate_to(&self, version: i64) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(p) => SQLITE_MIGRATOR.run_to(version, p).await?,
            Store::Postgres(p) => POSTGRES_MIGRATOR.run_to(version, p).await?,
        }
        Ok(())
    }

    /// Lists `(version, description, applied)` for every known migration.
    pub async fn migration_status(&self) -> Result<Vec<(i64, String, bool)>, StoreError> {
        let migrator = match self {
            Store::Sqlite(_) => &SQLITE_MIGRATOR,
            Store::Postgres(_) => &POSTGRES_MIGRATOR,
        };
        let applied: Vec<i64> = with_pool!(self, p => {
            let exists: Result<Vec<(i64,)>, _> =
                sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
                    .fetch_all(p)
                    .await;
            exists.map(|v| v.into_iter().map(|r| r.0).collect()).unwrap_or_default()
        });
        Ok(migrator.iter().map(|m| (m.version, m.description.to_string(), applied.contains(&m.version))).collect())
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, p => { sqlx::query("SELECT 1").execute(p).await?; });
        Ok(())
    }

    /// Closes every pooled connection (SQLite checkpoints its WAL).
    pub async fn close(&self) {
        with_pool!(self, p => p.close().await);
    }
}

/// Marks SQL text as audited. Station's dynamic SQL is assembled only from
/// constant fragments and quoted identifiers it generated itself; values are
/// always bound parameters.
pub(crate) fn safe(sql: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql.to_owned())
}
