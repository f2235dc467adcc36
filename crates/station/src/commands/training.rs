//! `station datasets …`, `station train` and `station trainings …`: LoRA
//! training from the command line. Every rule is the core's; this prints.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Map, Value};
use station_core::training::{TrainingError, TrainingRequest, TrainingView};
use station_core::{AccountRow, Station, SubmitError, Workers};

use super::{Interrupt, ServerOnAddress, confirm_on_terminal, local_user, other_server, server_on_address, wire};
use crate::exit;

/// `station datasets …`.
#[derive(Debug, Subcommand)]
pub enum DatasetsCommand {
    /// Create a dataset from a folder of images (captions from `NAME.txt`
    /// beside `NAME.png`, else empty; the trigger word is put in front).
    Create {
        /// Name; its slug names the dataset and the LoRA.
        name: String,
        /// Folder of images (PNG, JPEG, WebP, GIF), added in name order.
        #[arg(long)]
        images: PathBuf,
        /// Trigger word (default: the slug of the name).
        #[arg(long)]
        trigger_word: Option<String>,
        /// As this local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
    /// Your datasets.
    List {
        /// As this local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
    /// One dataset with its images and captions.
    Show {
        /// Dataset slug.
        dataset: String,
        /// As this local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
    /// Change one image's caption.
    Caption {
        /// Dataset slug.
        dataset: String,
        /// Slot number (as `datasets show` lists them).
        slot: i64,
        /// The caption.
        caption: String,
        /// As this local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
    /// Write the captions with the operator's caption tool (one job per
    /// image, each paid like a generation): only empty captions (no more
    /// than the trigger word) unless --overwrite. Waits and prints them.
    AutoCaption {
        /// Dataset slug.
        dataset: String,
        /// Write every image's caption again, also those someone wrote.
        #[arg(long)]
        overwrite: bool,
        /// Start the jobs and return (a running `station serve` runs them).
        #[arg(long)]
        no_wait: bool,
        /// As this local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
    /// Delete a dataset that is not being trained.
    Delete {
        /// Dataset slug.
        dataset: String,
        /// As this local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
}

/// `station train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset slug.
    pub dataset: String,
    /// As this local user (default: $USER).
    #[arg(long)]
    pub user: Option<String>,
    /// Base model (SD1.5, …; default: the first training definition).
    #[arg(long)]
    pub base_model: Option<String>,
    /// Training steps (default: the definition's).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Learning rate (default: the definition's).
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// LoRA rank (default: the definition's).
    #[arg(long)]
    pub rank: Option<u64>,
    /// Any other setting, `name=value` (repeatable).
    #[arg(short, long = "set", value_name = "NAME=VALUE")]
    pub settings: Vec<String>,
    /// Start without asking to accept the price.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Start, print the training id and return at once.
    #[arg(long)]
    pub no_wait: bool,
}

/// `station trainings …`.
#[derive(Debug, Subcommand)]
pub enum TrainingsCommand {
    /// Your trainings, newest first.
    List {
        /// As this local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
    /// One training.
    Show {
        /// Training id.
        id: String,
        /// As this local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
    /// Cancel a training (its points are released).
    Cancel {
        /// Training id.
        id: String,
        /// As this local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
}

/// The local account `--user` names (default: $USER), made on first use.
pub(crate) async fn account(station: &Station, user: Option<String>) -> Result<AccountRow, u8> {
    let user = local_user(user);
    station.account("local", &user, &user).await.map_err(|e| {
        eprintln!("error: {e}");
        exit::UNAVAILABLE
    })
}

/// A refusal printed with its fields; its exit code.
pub(crate) fn refused(e: TrainingError) -> u8 {
    match e {
        TrainingError::Submit(SubmitError::Invalid(errors)) => {
            eprintln!("error: not started:");
            for e in errors {
                eprintln!("  {}: {}", e.field, e.reason);
            }
            exit::USAGE
        }
        TrainingError::Storage(e) => {
            eprintln!("error: {e}");
            exit::UNAVAILABLE
        }
        e => {
            eprintln!("error: {e}");
            exit::USAGE
        }
    }
}

/// Runs `station datasets …`.
pub async fn datasets(station: &Station, cmd: DatasetsCommand) -> u8 {
    match cmd {
        DatasetsCommand::Create { name, images, trigger_word, user } => {
            let a = match account(station, user).await {
                Ok(a) => a,
                Err(c) => return c,
            };
            let mut files: Vec<PathBuf> = match std::fs::read_dir(&images) {
                Ok(d) => d.filter_map(Result::ok).map(|e| e.path()).filter(|p| is_image(p)).collect(),
                Err(e) => {
                    eprintln!("error: --images {}: {e}", images.display());
                    return exit::USAGE;
                }
            };
            files.sort();
            if files.is_empty() {
                eprintln!("error: --images {}: no PNG, JPEG, WebP or GIF files there", images.display());
                return exit::USAGE;
            }
            let dataset = match station.create_dataset(&a, &name, trigger_word.as_deref()).await {
                Ok(d) => d,
                Err(e) => return refused(e),
            };
            let slug = dataset.row.slug.clone();
            let mut failed = false;
            for path in &files {
                let caption = std::fs::read_to_string(path.with_extension("txt")).unwrap_or_default();
                let bytes = match std::fs::read(path) {
                    Ok(b) => b,
                    Err(e) => {
                        eprintln!("  {}: {e}", path.display());
                        failed = true;
                        continue;
                    }
                };
                match station.add_dataset_image(&a, &slug, bytes, &caption).await {
                    Ok(img) => println!("  slot {}: {} — {}", img.position, file_name(path), img.caption),
                    Err(e) => {
                        eprintln!("  {}: not added: {e}", file_name(path));
                        failed = true;
                    }
                }
            }
            match station.dataset(&a, &slug).await {
                Ok(d) => {
                    println!(
                        "dataset {slug}: {} of {} images (at least {}), trigger word {:?}, {}",
                        d.images.len(),
                        d.max_images,
                        d.min_images,
                        d.row.trigger_word,
                        d.row.status
                    );
                    if d.row.status == "ready" {
                        println!("train it with `station train {slug}`");
                    }
                }
                Err(e) => return refused(e),
            }
            if failed { exit::FAILED } else { exit::OK }
        }
        DatasetsCommand::List { user } => {
            let a = match account(station, user).await {
                Ok(a) => a,
                Err(c) => return c,
            };
            match station.datasets(&a).await {
                Ok(rows) if rows.is_empty() => {
                    println!("no datasets; create one with `station datasets create NAME --images DIR`");
                    exit::OK
                }
                Ok(rows) => {
                    for d in rows {
                        println!("{:<24} {:<8} trigger {}  ({})", d.slug, d.status, d.trigger_word, d.name);
                    }
                    exit::OK
                }
                Err(e) => refused(e),
            }
        }
        DatasetsCommand::Show { dataset, user } => {
            let a = match account(station, user).await {
                Ok(a) => a,
                Err(c) => return c,
            };
            match station.dataset(&a, &dataset).await {
                Ok(d) => {
                    println!(
                        "{} ({}): {}, trigger word {:?}, {} of {} images (at least {})",
                        d.row.slug,
                        d.row.name,
                        d.row.status,
                        d.row.trigger_word,
                        d.images.len(),
                        d.max_images,
                        d.min_images
                    );
                    for i in d.images {
                        println!("  slot {}: {}", i.position, i.caption);
                    }
                    exit::OK
                }
                Err(e) => refused(e),
            }
        }
        DatasetsCommand::AutoCaption { dataset, overwrite, no_wait, user } => {
            auto_caption(station, &dataset, overwrite, no_wait, user).await
        }
        DatasetsCommand::Caption { dataset, slot, caption, user } => {
            let a = match account(station, user).await {
                Ok(a) => a,
                Err(c) => return c,
            };
            match station.set_dataset_caption(&a, &dataset, slot, &caption).await {
                Ok(c) => {
                    println!("slot {slot}: {c}");
                    exit::OK
                }
                Err(e) => refused(e),
            }
        }
        DatasetsCommand::Delete { dataset, user } => {
            let a = match account(station, user).await {
                Ok(a) => a,
                Err(c) => return c,
            };
            match station.delete_dataset(&a, &dataset).await {
                Ok(()) => {
                    println!("deleted dataset {dataset}");
                    exit::OK
                }
                Err(e) => refused(e),
            }
        }
    }
}

fn is_image(p: &std::path::Path) -> bool {
    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    p.is_file() && matches!(ext.as_str(), "png" | "jpg" | "jpeg" | "webp" | "gif")
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Runs `station datasets auto-caption`: starts the run, then (unless
/// `no_wait`) runs it — here, or in the `station serve` on this database —
/// printing its progress, and lists the captions it wrote.
async fn auto_caption(station: &Station, dataset: &str, overwrite: bool, no_wait: bool, user: Option<String>) -> u8 {
    let a = match account(station, user).await {
        Ok(a) => a,
        Err(c) => return c,
    };
    let server = if no_wait { ServerOnAddress::Nobody } else { server_on_address(station).await };
    if let ServerOnAddress::Other(theirs) = &server {
        return other_server(station, theirs.as_deref());
    }
    let mut interrupt = Interrupt::listen();
    let run = match station.caption_dataset(&a, dataset, overwrite).await {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    eprintln!(
        "Writing {} caption{} with the caption tool ({}).",
        run.images,
        if run.images == 1 { "" } else { "s" },
        station_core::points::plural_points(run.price.unwrap_or(0))
    );
    if no_wait {
        eprintln!("started; follow it with `station datasets show {dataset}`");
        return exit::OK;
    }
    let embedded = match server {
        ServerOnAddress::Same => None,
        _ => {
            let background = wire::register_executors(station, true).await;
            Some((Workers::start(station), background))
        }
    };
    let mut last = String::new();
    let code = loop {
        let run = match station.caption_run(&a, dataset).await {
            Ok(Some(r)) => r,
            Ok(None) => break exit::FAILED,
            Err(e) => break refused(e),
        };
        let line = run.summary();
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if !run.running {
            for i in &run.items {
                let slot = i.position.map(|p| format!("slot {p}")).unwrap_or_else(|| "(removed)".into());
                match (i.status.as_str(), &i.caption, &i.error) {
                    ("applied", Some(c), _) => println!("  {slot}: {c}"),
                    ("kept", _, _) => println!("  {slot}: kept (it has a caption)"),
                    (status, _, Some(e)) => println!("  {slot}: {status}: {e}"),
                    (status, _, None) => println!("  {slot}: {status}"),
                }
            }
            break if run.failed > 0 { exit::FAILED } else { exit::OK };
        }
        tokio::select! {
            _ = interrupt.recv() => {
                eprintln!("stopped following; the caption jobs go on (`station datasets show {dataset}`)");
                break exit::FAILED;
            }
            _ = tokio::time::sleep(std::time::Duration::from_millis(300)) => {}
        }
    };
    if let Some((workers, background)) = embedded {
        workers.shutdown().await;
        background.shutdown().await;
    }
    code
}

/// Runs `station train`: the quote, the price accepted, then the run with a progress bar.
pub async fn train(station: &Station, args: TrainArgs) -> u8 {
    let a = match account(station, args.user.clone()).await {
        Ok(a) => a,
        Err(c) => return c,
    };
    let server = if args.no_wait { ServerOnAddress::Nobody } else { server_on_address(station).await };
    if let ServerOnAddress::Other(theirs) = &server {
        return other_server(station, theirs.as_deref());
    }
    let mut settings = Map::new();
    for s in &args.settings {
        let Some((k, v)) = s.split_once('=') else {
            eprintln!("error: --set {s:?}: expected NAME=VALUE");
            return exit::USAGE;
        };
        let v = v.trim();
        let value = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_owned()));
        settings.insert(k.trim().to_owned(), value);
    }
    if let Some(s) = args.steps {
        settings.insert("steps".into(), s.into());
    }
    if let Some(lr) = args.learning_rate {
        settings.insert("learning_rate".into(), lr.into());
    }
    if let Some(r) = args.rank {
        settings.insert("rank".into(), r.into());
    }
    let req = TrainingRequest {
        dataset: args.dataset.clone(),
        base_model: args.base_model.clone(),
        settings,
        ..Default::default()
    };
    let quote = match station.quote_training(&a, &req).await {
        Ok(q) => q,
        Err(e) => return refused(e),
    };
    let shown: Vec<String> = ["checkpoint", "steps", "learning_rate", "rank", "batch_size"]
        .iter()
        .filter_map(|k| {
            quote.settings.get(*k).map(|v| format!("{k} {}", v.as_str().map(str::to_owned).unwrap_or(v.to_string())))
        })
        .collect();
    eprintln!(
        "Training a {} LoRA {:?} (trigger word {:?}) on {} images: {}.",
        quote.base_model,
        quote.lora_slug,
        quote.trigger_word,
        quote.images,
        shown.join(", ")
    );
    eprintln!(
        "Price: {} ({} available): {}.",
        station_core::points::plural_points(quote.price),
        quote.available,
        quote.explanation
    );
    if !args.yes && !confirm_on_terminal("Start the training?") {
        eprintln!("not started; pass --yes to accept the price");
        return exit::USAGE;
    }
    let mut interrupt = Interrupt::listen();
    let view = match station.start_training(&a, &req).await {
        Ok(v) => v,
        Err(e) => return refused(e),
    };
    if args.no_wait {
        println!("{}", view.row.id);
        eprintln!("started; follow it with `station trainings show {}`", view.row.id);
        return exit::OK;
    }
    let Some(job) = view.job.clone() else {
        eprintln!("error: the training's job is missing");
        return exit::FAILED;
    };
    let embedded = match server {
        ServerOnAddress::Same => None,
        _ => {
            let background = wire::register_executors(station, true).await;
            Some((Workers::start(station), background))
        }
    };
    let short = station.short_job_id(&job.id).await.unwrap_or_else(|_| job.id.clone());
    let code = super::follow(station, &job, &short, None, embedded.as_ref().map(|(w, _)| w), &mut interrupt).await;
    let done = station.training(&a, &view.row.id).await;
    if let Some((workers, background)) = embedded {
        workers.shutdown().await;
        background.shutdown().await;
    }
    match done {
        Ok(v) => print_training(&v),
        Err(e) => return refused(e),
    }
    code
}

fn print_training(v: &TrainingView) {
    println!("training {}: {}", v.row.id, v.row.status);
    match (&v.lora, v.row.status.as_str()) {
        (Some(l), _) => println!(
            "LoRA {} ready ({}, private): use it with its trigger word {:?}; file {}",
            l.slug,
            l.checkpoint,
            l.trigger_words.first().cloned().unwrap_or_default(),
            l.filename
        ),
        (None, "running") => println!("progress {:.0} %", v.progress() * 100.0),
        (None, _) => {
            if let Some(e) = &v.row.error {
                println!("why: {e}");
            }
        }
    }
    println!("price {}", station_core::points::plural_points(v.row.price));
}

/// Runs `station trainings …`.
pub async fn trainings(station: &Station, cmd: TrainingsCommand) -> u8 {
    match cmd {
        TrainingsCommand::List { user } => {
            let a = match account(station, user).await {
                Ok(a) => a,
                Err(c) => return c,
            };
            match station.trainings(&a).await {
                Ok(list) if list.is_empty() => {
                    println!("no trainings; start one with `station train DATASET`");
                    exit::OK
                }
                Ok(list) => {
                    for v in list {
                        println!(
                            "{}  {:<9} {:>3.0} %  {}  {}",
                            v.row.id,
                            v.row.status,
                            v.progress() * 100.0,
                            v.row.lora_slug,
                            station_core::points::plural_points(v.row.price)
                        );
                    }
                    exit::OK
                }
                Err(e) => refused(e),
            }
        }
        TrainingsCommand::Show { id, user } => {
            let a = match account(station, user).await {
                Ok(a) => a,
                Err(c) => return c,
            };
            match station.training(&a, &id).await {
                Ok(v) => {
                    print_training(&v);
                    exit::OK
                }
                Err(e) => refused(e),
            }
        }
        TrainingsCommand::Cancel { id, user } => {
            let a = match account(station, user).await {
                Ok(a) => a,
                Err(c) => return c,
            };
            match station.cancel_training(&a, &id).await {
                Ok(v) => {
                    print_training(&v);
                    exit::OK
                }
                Err(e) => refused(e),
            }
        }
    }
}
