//! `station doctor`'s findings: one [`Check`] per thing looked at, with what
//! to do when it is not right. The core checks what it owns (configuration,
//! database, migrations, disk, media store, tools); the ComfyUI pool and the chat
//! adapters add theirs in the same shape.

use std::path::Path;
use std::time::Duration;

use crate::Station;

/// How a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Fine.
    Ok,
    /// Works, but something should be looked at.
    Warn,
    /// Broken: Station (or that part of it) cannot work like this.
    Fail,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked ("database", "backend gpu-1", "Telegram bot").
    pub subject: String,
    /// How it went.
    pub verdict: Verdict,
    /// What was found, as a sentence.
    pub detail: String,
    /// What to do about it (for warnings and failures).
    pub fix: Option<String>,
}

impl Check {
    /// A check that passed.
    pub fn ok(subject: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { subject: subject.into(), verdict: Verdict::Ok, detail: detail.into(), fix: None }
    }

    /// A warning, with what to do.
    pub fn warn(subject: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { subject: subject.into(), verdict: Verdict::Warn, detail: detail.into(), fix: Some(fix.into()) }
    }

    /// A failure, with what to do.
    pub fn fail(subject: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { subject: subject.into(), verdict: Verdict::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
}

/// Less than this many bytes free where the data folder is fails the check:
/// a few uploads and results would fill it. What matters is room in bytes,
/// not a share: 4 % of a large disk is still plenty.
const DISK_FAIL_BYTES: u64 = 1 << 30;
/// Less than this many bytes free, or less than `DISK_WARN_SHARE`, warns.
const DISK_WARN_BYTES: u64 = 10 << 30;
const DISK_WARN_SHARE: f64 = 0.05;

impl Station {
    /// The core's own checks: the data folder, the database and its
    /// migrations, free disk space, and the tool definitions.
    pub async fn doctor(&self, tool_problems: &[String]) -> Vec<Check> {
        let mut out = vec![data_folder(&self.config.data_dir)];
        let db = station_store::mask_url(&self.config.database_url());
        match self.database_health(Duration::from_secs(5)).await {
            Ok(()) => out.push(Check::ok("database", format!("{db} answers"))),
            Err(e) => out.push(Check::fail(
                "database",
                format!("{db}: {e}"),
                "start the database or correct database.url (STATION_DATABASE_URL)",
            )),
        }
        match self.migration_status().await {
            Ok(list) => {
                let pending: Vec<String> =
                    list.iter().filter(|(_, _, applied)| !applied).map(|(v, d, _)| format!("{v} {d}")).collect();
                if pending.is_empty() {
                    out.push(Check::ok("migrations", format!("all {} applied", list.len())));
                } else {
                    out.push(Check::fail(
                        "migrations",
                        format!("{} not applied: {}", pending.len(), pending.join(", ")),
                        "run `station migrate` (every `station serve` also applies them at start)",
                    ));
                }
            }
            Err(e) => out.push(Check::fail("migrations", format!("cannot be read: {e}"), "fix the database first")),
        }
        out.push(disk(&self.config.data_dir));
        out.push(self.media_store_check().await);
        let tools = self.tools.list();
        if tool_problems.is_empty() {
            out.push(Check::ok("tools", format!("{} loaded from {}", tools.len(), self.config.tools_dir().display())));
        } else {
            for p in tool_problems {
                out.push(Check::fail(
                    "tools",
                    p.clone(),
                    "correct the file; `station tools check` shows every problem",
                ));
            }
        }
        out
    }
}

impl Station {
    /// Where media is kept and whether it answers: the folder, or the
    /// bucket (one listing request, so a missing bucket or refused
    /// credentials show here).
    async fn media_store_check(&self) -> Check {
        let Some(location) = self.media.store_location() else {
            return Check::ok("media store", format!("files in {}", self.config.media_dir().display()));
        };
        match self.media.check_store().await {
            Ok(()) => Check::ok("media store", format!("{location} answers")),
            Err(e) => Check::fail(
                "media store",
                e,
                "create the bucket, or correct [media.s3] (STATION_MEDIA_S3_BUCKET, STATION_MEDIA_S3_ENDPOINT, \
                 STATION_MEDIA_S3_ACCESS_KEY_ID, STATION_MEDIA_S3_SECRET_ACCESS_KEY or AWS_*)",
            ),
        }
    }
}

fn data_folder(dir: &Path) -> Check {
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    match std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&probe, b"ok")) {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Check::ok("data folder", format!("{} is writable", dir.display()))
        }
        Err(e) => Check::fail(
            "data folder",
            format!("{} cannot be written: {e}", dir.display()),
            "give the user running Station write access, or set data_dir (STATION_DATA_DIR)",
        ),
    }
}

/// Free and total bytes of the file system holding `dir`, as an
/// unprivileged user sees them (the doctor's disk check and the
/// `disk_free` alert rule measure the same way).
pub fn disk_space(dir: &Path) -> Result<(u64, u64), String> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| e.to_string())?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let total = stat.f_blocks.saturating_mul(stat.f_frsize).max(1);
    Ok((free, total))
}

fn disk(dir: &Path) -> Check {
    let (free, total) = match disk_space(dir) {
        Ok(s) => s,
        Err(e) => {
            return Check::warn("disk", format!("free space of {} unknown: {e}", dir.display()), "check it with df");
        }
    };
    let share = free as f64 / total as f64;
    let detail = format!("{} free of {} ({:.0} %) where {} is", gib(free), gib(total), share * 100.0, dir.display());
    let fix = "free space or move data_dir: media, the database and uploads all live there";
    if free < DISK_FAIL_BYTES {
        Check::fail("disk", detail, fix)
    } else if free < DISK_WARN_BYTES || share < DISK_WARN_SHARE {
        Check::warn("disk", detail, fix)
    } else {
        Check::ok("disk", detail)
    }
}

pub(crate) fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}
