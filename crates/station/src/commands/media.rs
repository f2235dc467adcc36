//! `station media migrate --to s3`: copies the local media folder into the
//! bucket of `[media.s3]`, with progress, verifying every copy by hash.

use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use station_core::Config;

use crate::exit;

/// `station media`.
#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// Copy every blob, thumbnail and fitted copy of `media_dir` to object
    /// storage, checking each by its sha256. Safe to run again: what is there
    /// already is verified, not copied. Then set `media.store = "s3"`.
    Migrate {
        /// Where to copy to.
        #[arg(long, value_enum)]
        to: Target,
    },
}

/// A media store to migrate to.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Target {
    /// The bucket of `[media.s3]` (STATION_MEDIA_S3_*).
    S3,
}

/// Runs `station media` and returns the exit code.
pub async fn run(config: &Config, c: MediaCommand) -> u8 {
    let MediaCommand::Migrate { to: Target::S3 } = c;
    let bar = ProgressBar::hidden();
    let location = if config.media.s3.prefix.trim_matches('/').is_empty() {
        format!("s3://{}", config.media.s3.bucket)
    } else {
        format!("s3://{}/{}", config.media.s3.bucket, config.media.s3.prefix.trim_matches('/'))
    };
    let total = |files: u64, bytes: u64| {
        println!("Copying {files} files ({}) from {} to {location}", size(bytes), config.media_dir().display());
        bar.set_length(bytes);
        bar.set_style(
            ProgressStyle::with_template("[{bar:30}] {bytes}/{total_bytes} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
    };
    let on_file = |rel: &str, bytes: u64, outcome: Result<_, &str>| {
        bar.inc(bytes);
        bar.set_message(rel.to_string());
        if let Err(why) = outcome {
            bar.suspend(|| eprintln!("error: {rel}: {why}"));
        }
    };
    let report = match station_core::media::migrate_to_object_store(config, total, on_file).await {
        Ok(r) => r,
        Err(e) => {
            bar.abandon();
            eprintln!("error: {e}");
            return exit::UNAVAILABLE;
        }
    };
    bar.finish_and_clear();
    println!(
        "{} copied, {} already there, {} failed; every copy verified by its sha256.",
        report.copied,
        report.already_there,
        report.failed.len()
    );
    if report.failed.is_empty() {
        if config.media.store != station_core::config::MediaStoreKind::S3 {
            println!("Set media.store = \"s3\" (STATION_MEDIA_STORE=s3) and restart to serve media from the bucket.");
        }
        exit::OK
    } else {
        println!("Fix the files above and run the command again; only what is missing is copied.");
        exit::FAILED
    }
}

fn size(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    }
}
