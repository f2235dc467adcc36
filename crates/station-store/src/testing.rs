//! Fresh databases for tests: a SQLite file in a temporary folder always, and
//! a fresh PostgreSQL schema when `STATION_TEST_POSTGRES_URL` is set (CI sets it).

use crate::Store;

/// A migrated, empty database that lives as long as this value.
pub struct TestDb {
    /// The store.
    pub store: Store,
    /// `sqlite` or `postgres`, for assertion messages.
    pub kind: &'static str,
    /// The URL another process can use to reach the same database.
    pub url: String,
    /// Schema name on PostgreSQL (connections must set `search_path`).
    pub schema: Option<String>,
    _dir: Option<std::path::PathBuf>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(d) = &self._dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The PostgreSQL URL for tests, if configured.
pub fn postgres_url() -> Option<String> {
    std::env::var("STATION_TEST_POSTGRES_URL").ok().filter(|s| !s.is_empty())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A fresh SQLite database.
pub async fn sqlite() -> TestDb {
    sqlite_at(None).await
}

/// A fresh SQLite database migrated up to `version` (None: every migration).
async fn sqlite_at(version: Option<i64>) -> TestDb {
    let dir = std::env::temp_dir().join(unique("station_test"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("station.db");
    let store = Store::connect_sqlite(&path).await.expect("open sqlite");
    migrate(&store, version).await.expect("migrate sqlite");
    TestDb { store, kind: "sqlite", url: format!("sqlite://{}", path.display()), schema: None, _dir: Some(dir) }
}

/// A fresh PostgreSQL schema, or None when no server is configured.
pub async fn postgres() -> Option<TestDb> {
    postgres_at(None).await
}

/// A fresh PostgreSQL schema migrated up to `version` (None: every migration).
async fn postgres_at(version: Option<i64>) -> Option<TestDb> {
    let url = postgres_url()?;
    let schema = unique("t");
    let store = Store::connect_postgres_fresh_schema(&url, &schema).await.expect("postgres schema");
    migrate(&store, version).await.expect("migrate postgres");
    let sep = if url.contains('?') { '&' } else { '?' };
    let with_schema = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    Some(TestDb { store, kind: "postgres", url: with_schema, schema: Some(schema), _dir: None })
}

async fn migrate(store: &Store, version: Option<i64>) -> Result<(), crate::StoreError> {
    match version {
        Some(v) => store.migrate_to(v).await,
        None => store.migrate().await,
    }
}

/// Every configured database: SQLite always, PostgreSQL when available.
pub async fn all() -> Vec<TestDb> {
    let mut v = vec![sqlite().await];
    if let Some(pg) = postgres().await {
        v.push(pg);
    }
    v
}

/// Every configured database (as [`all`]) with migrations applied only up
/// to `version`, for tests that write rows in an older schema and then
/// upgrade it with [`Store::migrate`].
pub async fn all_at(version: i64) -> Vec<TestDb> {
    let mut v = vec![sqlite_at(Some(version)).await];
    if let Some(pg) = postgres_at(Some(version)).await {
        v.push(pg);
    }
    v
}

/// Defines `mod sqlite` and `mod postgres`, each with one test per named
/// `async fn case(db: TestDb)`: SQLite always, PostgreSQL when
/// `STATION_TEST_POSTGRES_URL` is set. Multi-threaded runtimes, because cases
/// spawn servers and blocking work.
#[macro_export]
macro_rules! on_every_db {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::testing::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::testing::postgres().await else { return };
                    super::$name(db).await;
                }
            )*
        }
    };
}
