//! Job ids as people type them: any unique prefix names a job (as git does
//! with commits), and the shortest unique prefix of at least
//! [`SHORT_ID_MIN`] characters is what file names and listings show.
//!
//! Job ids are UUIDv7, whose first 13 characters (`01a25047-548e`) are the
//! creation time in milliseconds. A short id at least that long never
//! becomes ambiguous later: a job created afterwards has a later time.

use station_store::StoreError;

use crate::Station;

/// The fewest characters of a job id shown as its short form: the
/// millisecond of its creation (see the module's documentation).
pub const SHORT_ID_MIN: usize = 13;

/// The fewest characters accepted as a prefix.
pub const PREFIX_MIN: usize = 4;

/// Why a typed job id names no single job.
#[derive(Debug, thiserror::Error)]
pub enum JobIdError {
    /// Not the characters of a job id, or too short to look up.
    #[error("{0:?} is not a job id: give at least {PREFIX_MIN} of its characters (hex digits and '-')")]
    Malformed(String),
    /// No job starts with it.
    #[error("no job {0}")]
    NotFound(String),
    /// Several jobs start with it.
    #[error("{prefix} names more than one job ({first}, {second}, …): give more characters")]
    Ambiguous {
        /// What was typed.
        prefix: String,
        /// Two of the jobs it names.
        first: String,
        /// Two of the jobs it names.
        second: String,
    },
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] StoreError),
}

impl Station {
    /// The full id of the one job whose id starts with `typed` (a whole id
    /// or any unique prefix, case-insensitive).
    pub async fn resolve_job_id(&self, typed: &str) -> Result<String, JobIdError> {
        let prefix = typed.trim().to_ascii_lowercase();
        if prefix.len() < PREFIX_MIN || !prefix.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(JobIdError::Malformed(typed.to_string()));
        }
        let mut ids = self.store.job_ids_with_prefix(&prefix, 2).await?;
        match ids.len() {
            0 => Err(JobIdError::NotFound(typed.to_string())),
            1 => Ok(ids.remove(0)),
            _ => Err(JobIdError::Ambiguous { prefix: typed.to_string(), second: ids.remove(1), first: ids.remove(0) }),
        }
    }

    /// The shortest prefix of job `id`, at least [`SHORT_ID_MIN`]
    /// characters, that names only it today (later jobs may share it, as
    /// with git's short hashes).
    pub async fn short_job_id(&self, id: &str) -> Result<String, StoreError> {
        let start = id.char_indices().nth(SHORT_ID_MIN).map_or(id.len(), |(i, _)| i);
        if start == id.len() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Ok(id.to_string());
        }
        // Jobs sharing the first characters are those created within about a minute.
        let near = self.store.job_ids_with_prefix(&id[..start], 10_000).await?;
        let common = near
            .iter()
            .filter(|other| other.as_str() != id)
            .map(|other| other.bytes().zip(id.bytes()).take_while(|(a, b)| a == b).count())
            .max()
            .unwrap_or(0);
        let mut len = (common + 1).max(SHORT_ID_MIN).min(id.len());
        // Never end on the separator.
        while len < id.len() && id.as_bytes()[len - 1] == b'-' {
            len += 1;
        }
        Ok(id[..len].to_string())
    }
}
