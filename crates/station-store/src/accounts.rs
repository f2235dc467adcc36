//! Accounts and the platform identities that lead to them: created on first
//! contact, looked up, listed and administered (role, suspension).

use crate::db::BeginWrite as _;
use serde::{Deserialize, Serialize};

use crate::db::{Store, StoreError, safe, with_pool};
use crate::ledger::EntryKind;

/// What an account may do: everyone is a user; administrators also run the
/// operator commands, see every job and use admin-only tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An ordinary account.
    #[default]
    User,
    /// An operator.
    Admin,
}

impl Role {
    /// The stored name: `user` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    /// The role named `s` (`user` or `admin`).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Role {
    type Error = StoreError;

    fn try_from(s: String) -> Result<Role, StoreError> {
        Role::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("accounts.role: unknown role {s:?}")))
    }
}

/// One account.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct AccountRow {
    /// Account id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// What the account may do.
    #[sqlx(try_from = "String")]
    pub role: Role,
    /// Suspended accounts cannot start jobs.
    pub suspended: bool,
    /// Creation time.
    pub created_at: i64,
}

impl AccountRow {
    /// Whether the account is an administrator.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the account may act on something `owner` owns: its owner, or
    /// an administrator.
    pub fn may_access(&self, owner: Option<&str>) -> bool {
        self.is_admin() || owner == Some(self.id.as_str())
    }
}

impl Store {
    /// The account behind a platform identity, created on first contact.
    pub async fn account_for_identity(
        &self,
        provider: &str,
        subject: &str,
        name: &str,
        now: i64,
    ) -> Result<AccountRow, StoreError> {
        if let Some(a) = self.find_account_by_identity(provider, subject).await? {
            return Ok(a);
        }
        let id = uuid::Uuid::now_v7().simple().to_string();
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("INSERT INTO accounts (id, name, role, suspended, created_at) VALUES ($1, $2, 'user', FALSE, $3)")
                .bind(&id).bind(name).bind(now).execute(&mut *tx).await?;
            let inserted = sqlx::query(
                "INSERT INTO identities (provider, subject, account_id, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (provider, subject) DO NOTHING",
            )
            .bind(provider).bind(subject).bind(&id).bind(now).execute(&mut *tx).await?;
            if inserted.rows_affected() == 1 {
                tx.commit().await?;
            } else {
                // Someone else created it concurrently: use theirs.
                tx.rollback().await?;
            }
        });
        self.find_account_by_identity(provider, subject)
            .await?
            .ok_or(StoreError::NotFound { what: "identity", id: format!("{provider}:{subject}") })
    }

    /// One account by id. The id of an account that was linked into another
    /// (see [`Store::redeem_link_code`]) gives the account it was joined into.
    pub async fn get_account(&self, id: &str) -> Result<Option<AccountRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT id, name, role, suspended, created_at FROM accounts \
                 WHERE id = COALESCE((SELECT merged_into FROM accounts WHERE id = $1), $1)",
            )
            .bind(id)
            .fetch_optional(p)
            .await?)
        })
    }

    /// The account behind a platform identity, without creating one.
    pub async fn find_account_by_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<AccountRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT a.id, a.name, a.role, a.suspended, a.created_at FROM accounts a \
                 JOIN identities i ON i.account_id = a.id WHERE i.provider = $1 AND i.subject = $2",
            )
            .bind(provider)
            .bind(subject)
            .fetch_optional(p)
            .await?)
        })
    }

    /// Accounts, oldest first (not those linked into another).
    pub async fn list_accounts(&self, limit: i64) -> Result<Vec<AccountRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT id, name, role, suspended, created_at FROM accounts WHERE merged_into IS NULL \
                 ORDER BY created_at, id LIMIT $1",
            )
            .bind(limit.clamp(1, 100_000))
            .fetch_all(p)
            .await?)
        })
    }

    /// The `(provider, subject)` identities linked to an account.
    pub async fn account_identities(&self, account_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as("SELECT provider, subject FROM identities WHERE account_id = $1 ORDER BY provider, subject")
                .bind(account_id)
                .fetch_all(p)
                .await?)
        })
    }

    /// Accounts with `role` that have an identity on `provider`, as
    /// `(account, subject)`, by subject (chat adapters give admins their menus).
    pub async fn role_identities(&self, role: Role, provider: &str) -> Result<Vec<(AccountRow, String)>, StoreError> {
        let rows: Vec<(String, String, String, bool, i64, String)> = with_pool!(self, p => {
            sqlx::query_as(
                "SELECT a.id, a.name, a.role, a.suspended, a.created_at, i.subject FROM accounts a \
                 JOIN identities i ON i.account_id = a.id \
                 WHERE a.role = $1 AND i.provider = $2 AND a.merged_into IS NULL ORDER BY i.subject",
            )
            .bind(role.as_str())
            .bind(provider)
            .fetch_all(p)
            .await?
        });
        rows.into_iter()
            .map(|(id, name, role, suspended, created_at, subject)| {
                Ok((AccountRow { id, name, role: Role::try_from(role)?, suspended, created_at }, subject))
            })
            .collect()
    }

    /// Sets an account's role. False if there is no such account.
    pub async fn set_account_role(&self, account_id: &str, role: Role) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query("UPDATE accounts SET role = $1 WHERE id = $2")
                .bind(role.as_str())
                .bind(account_id)
                .execute(p)
                .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Suspends or reinstates an account. False if there is no such account.
    pub async fn set_account_suspended(&self, account_id: &str, suspended: bool) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query("UPDATE accounts SET suspended = $1 WHERE id = $2")
                .bind(suspended)
                .bind(account_id)
                .execute(p)
                .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Accounts ordered by id (not those linked into another), after `after_id`.
    pub async fn list_accounts_page(&self, after_id: Option<&str>, limit: i64) -> Result<Vec<AccountRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT id, name, role, suspended, created_at FROM accounts WHERE merged_into IS NULL AND id > $1 \
                 ORDER BY id LIMIT $2",
            )
            .bind(after_id.unwrap_or(""))
            .bind(limit.clamp(1, 500))
            .fetch_all(p)
            .await?)
        })
    }
}

/// One account for [`Store::create_accounts_bulk`]: its first identity and name.
#[derive(Debug, Clone)]
pub struct NewBulkAccount {
    /// Identity provider (`bench`, `telegram`, …).
    pub provider: String,
    /// Identity subject within the provider.
    pub subject: String,
    /// Display name.
    pub name: String,
}

/// Rows per multi-row `INSERT` of [`Store::create_accounts_bulk`] (well under
/// both engines' limits on bound parameters).
const BULK_ROWS: usize = 500;

impl Store {
    /// Creates many new accounts, each with its identity and, when `grant` is
    /// given, a `grant` ledger entry of that many points (key
    /// `grant:bulk:<account>`) and the balance it makes — the rows
    /// [`Store::account_for_identity`] and a grant write, a chunk of
    /// accounts per transaction with multi-row inserts. Every identity must
    /// be new: a taken one fails its chunk (nothing of it is stored).
    /// Returns the accounts in input order.
    pub async fn create_accounts_bulk(
        &self,
        accounts: &[NewBulkAccount],
        grant: Option<(i64, &str, &str)>,
        now: i64,
    ) -> Result<Vec<AccountRow>, StoreError> {
        let mut out = Vec::with_capacity(accounts.len());
        for chunk in accounts.chunks(BULK_ROWS) {
            let rows: Vec<AccountRow> = chunk
                .iter()
                .map(|a| AccountRow {
                    id: uuid::Uuid::now_v7().simple().to_string(),
                    name: a.name.clone(),
                    role: Role::User,
                    suspended: false,
                    created_at: now,
                })
                .collect();
            let sql = |head: &str, width: usize| {
                let rows: Vec<String> = (0..chunk.len())
                    .map(|r| {
                        let cols: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
                        format!("({})", cols.join(", "))
                    })
                    .collect();
                format!("{head} VALUES {}", rows.join(", "))
            };
            let accounts_sql = sql("INSERT INTO accounts (id, name, role, suspended, created_at)", 5);
            let identities_sql = sql("INSERT INTO identities (provider, subject, account_id, created_at)", 4);
            let ledger_sql =
                sql("INSERT INTO ledger (idem_key, account_id, kind, amount, held, reason, actor, created_at)", 8);
            let balances_sql = sql("INSERT INTO balances (account_id, balance, held, updated_at)", 4);
            with_pool!(self, p => {
                let mut tx = p.begin_write().await?;
                let mut q = sqlx::query(safe(&accounts_sql));
                for r in &rows {
                    q = q.bind(&r.id).bind(&r.name).bind(Role::User.as_str()).bind(false).bind(now);
                }
                q.execute(&mut *tx).await?;
                let mut q = sqlx::query(safe(&identities_sql));
                for (a, r) in chunk.iter().zip(&rows) {
                    q = q.bind(&a.provider).bind(&a.subject).bind(&r.id).bind(now);
                }
                q.execute(&mut *tx).await?;
                if let Some((amount, reason, actor)) = grant {
                    let mut q = sqlx::query(safe(&ledger_sql));
                    for r in &rows {
                        q = q
                            .bind(format!("grant:bulk:{}", r.id))
                            .bind(&r.id)
                            .bind(EntryKind::Grant.as_str())
                            .bind(amount)
                            .bind(0i64)
                            .bind(reason)
                            .bind(actor)
                            .bind(now);
                    }
                    q.execute(&mut *tx).await?;
                    let mut q = sqlx::query(safe(&balances_sql));
                    for r in &rows {
                        q = q.bind(&r.id).bind(amount).bind(0i64).bind(now);
                    }
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await?;
            });
            out.extend(rows);
        }
        Ok(out)
    }
}
