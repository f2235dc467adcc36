//! `station loras …`: the LoRA catalog from the command line.

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;
use station_core::Station;
use station_core::audit::{Actor, Via};
use station_core::loras::LoraFilter;
use station_core::loras::{LoraEdit, LoraError};
use station_core::loras::{LoraRecord, Visibility};
use station_core::own_loras::Publication;

use crate::exit;

/// `station loras …`.
#[derive(Debug, Subcommand)]
pub enum LorasCommand {
    /// Catalog entries by slug, optionally narrowed.
    List {
        /// Only this base model family (SD1.5, SDXL, FLUX, …).
        #[arg(long)]
        checkpoint: Option<String>,
        /// Only LoRAs with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only LoRAs whose slug, name, description or words contain this text.
        #[arg(long)]
        search: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One LoRA in full, with its grants, as JSON.
    Show {
        /// Slug.
        slug: String,
    },
    /// Add a LoRA.
    #[command(
        mut_arg("checkpoint", |a| a.required(true)),
        mut_arg("filename", |a| a.required(true)),
        mut_arg("visibility", |a| a.required(true))
    )]
    Add {
        /// Slug: lowercase a-z, digits, '-', '_', '.'.
        slug: String,
        /// Its fields.
        #[command(flatten)]
        fields: LoraFields,
    },
    /// Change the given fields of a LoRA (list options replace the whole list).
    Edit {
        /// Slug.
        slug: String,
        /// Fields to change.
        #[command(flatten)]
        fields: LoraFields,
    },
    /// Delete a LoRA and its grants.
    Remove {
        /// Slug.
        slug: String,
    },
    /// Let an account use a private LoRA.
    Grant {
        /// Slug.
        slug: String,
        /// Account id or platform identity such as telegram:123.
        account: String,
        /// When the grant ends: RFC 3339 time or Unix milliseconds (default: never).
        #[arg(long)]
        expires: Option<String>,
    },
    /// Withdraw an account's grant.
    Revoke {
        /// Slug.
        slug: String,
        /// Account id or platform identity such as telegram:123.
        account: String,
    },
    /// Your own (trained) LoRAs: whom each is shared with, whether it is public.
    Mine {
        /// As this local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
    /// Let another account use one of your LoRAs.
    Share {
        /// Slug.
        slug: String,
        /// Account id or platform identity such as telegram:123.
        account: String,
        /// As this local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
    /// Stop sharing one of your LoRAs with an account.
    Unshare {
        /// Slug.
        slug: String,
        /// Account id or platform identity such as telegram:123.
        account: String,
        /// As this local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
    /// Make one of your LoRAs public (after an administrator's approval when
    /// `training.publish_needs_approval`).
    Publish {
        /// Slug.
        slug: String,
        /// As this local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
    /// Delete one of your LoRAs.
    Delete {
        /// Slug.
        slug: String,
        /// As this local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
    /// Requests to publish a LoRA that wait for an administrator.
    Requests,
    /// Approve a request to publish a LoRA (written to the audit log).
    Approve {
        /// Slug.
        slug: String,
    },
    /// Refuse a request to publish a LoRA (written to the audit log).
    Refuse {
        /// Slug.
        slug: String,
    },
    /// Import a JSON array of LoRA records (`-` reads standard input).
    Import {
        /// The file.
        file: PathBuf,
    },
    /// Print the catalog in the import format.
    Export,
    /// Show how a prompt's trigger words resolve, as JSON {prompt, applied, warnings}.
    Resolve {
        /// The prompt.
        prompt: String,
        /// Resolve as this existing account (id or provider:subject); default: anonymous, public LoRAs only.
        #[arg(long)]
        user: Option<String>,
        /// Only LoRAs usable with this base model (SD1.5, SDXL, FLUX, …).
        #[arg(long)]
        base_model: Option<String>,
    },
}

/// Fields of `add` and `edit`.
#[derive(Debug, Args)]
pub struct LoraFields {
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Free-text description.
    #[arg(long)]
    description: Option<String>,
    /// Trigger word (repeatable; the first is the canonical one).
    #[arg(long = "trigger")]
    triggers: Vec<String>,
    /// Alternative word replaced by the first trigger word (repeatable).
    #[arg(long = "cognate")]
    cognates: Vec<String>,
    /// Default weight in [0, 2], or `none` for 1.0.
    #[arg(long)]
    weight: Option<String>,
    /// Base model family (SD1.5, SDXL, ILLUSTRIOUS, FLUX, …).
    #[arg(long)]
    checkpoint: Option<String>,
    /// File name on the ComfyUI servers.
    #[arg(long)]
    filename: Option<String>,
    /// Tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Owner: account id or provider:subject, or `none` for the operator.
    #[arg(long)]
    owner: Option<String>,
    /// public or private.
    #[arg(long)]
    visibility: Option<String>,
}

/// Usage problems are exit 2; storage trouble is exit 1.
fn fail(e: LoraError) -> u8 {
    eprintln!("error: {e}");
    match e {
        LoraError::Storage(_) => exit::FAILED,
        _ => exit::USAGE,
    }
}

fn usage(field: &str, reason: String) -> u8 {
    fail(LoraError::Invalid { field: field.into(), reason })
}

fn print_json(v: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("JSON values always serialise"));
}

impl LoraFields {
    fn into_edit(self) -> Result<LoraEdit, LoraError> {
        let invalid = |field: &str, reason: String| LoraError::Invalid { field: field.into(), reason };
        let default_weight = match self.weight.as_deref().map(str::trim) {
            None => None,
            Some("none") => Some(None),
            Some(w) => Some(Some(w.parse::<f64>().map_err(|_| invalid("weight", format!("{w:?} is not a number")))?)),
        };
        let visibility = match &self.visibility {
            None => None,
            Some(v) => Some(
                Visibility::parse(v)
                    .ok_or_else(|| invalid("visibility", format!("{v:?} is neither \"public\" nor \"private\"")))?,
            ),
        };
        let list = |v: Vec<String>| (!v.is_empty()).then_some(v);
        Ok(LoraEdit {
            name: self.name,
            description: self.description,
            trigger_words: list(self.triggers),
            cognates: list(self.cognates),
            default_weight,
            checkpoint: self.checkpoint,
            filename: self.filename,
            tags: list(self.tags),
            owner: self.owner.map(|o| (o.trim() != "none").then_some(o)),
            visibility,
        })
    }
}

/// Unix milliseconds or an RFC 3339 time.
fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    text.parse::<i64>().ok().or_else(|| chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_millis()))
}

fn print_table(records: &[LoraRecord]) {
    if records.is_empty() {
        println!("no LoRAs; add some with `station loras import FILE` or `station loras add`");
        return;
    }
    println!("{:<28} {:<12} {:<8} {:<6} TRIGGERS", "SLUG", "CHECKPOINT", "VISIBLE", "WEIGHT");
    for r in records {
        println!(
            "{:<28} {:<12} {:<8} {:<6} {}",
            r.slug,
            r.checkpoint,
            r.visibility.as_str(),
            r.effective_default_weight(),
            r.trigger_words.join(", ")
        );
    }
}

/// Runs one `station loras` command and returns the exit code.
pub async fn run(station: &Station, c: LorasCommand) -> u8 {
    let loras = station.loras();
    let by = Actor::operator(&super::local_user(None));
    match c {
        LorasCommand::List { checkpoint, tag, search, json } => {
            match loras.list(&LoraFilter { checkpoint, tag, search }).await {
                Ok(list) if json => print_json(&list),
                Ok(list) => print_table(&list),
                Err(e) => return fail(e),
            }
        }
        LorasCommand::Show { slug } => match loras.show(&slug).await {
            Ok(r) => print_json(&r),
            Err(e) => return fail(e),
        },
        LorasCommand::Add { slug, fields } => match async { loras.add(&slug, fields.into_edit()?, &by).await }.await {
            Ok(r) => println!("added {}", r.slug),
            Err(e) => return fail(e),
        },
        LorasCommand::Edit { slug, fields } => {
            match async { loras.edit(&slug, fields.into_edit()?, &by).await }.await {
                Ok(r) => println!("updated {}", r.slug),
                Err(e) => return fail(e),
            }
        }
        LorasCommand::Remove { slug } => match loras.remove(&slug, &by).await {
            Ok(()) => println!("removed {slug}"),
            Err(e) => return fail(e),
        },
        LorasCommand::Grant { slug, account, expires } => {
            let expires_at = match expires.as_deref().map(|t| (t, parse_time(t))) {
                None => None,
                Some((_, Some(ms))) => Some(ms),
                Some((t, None)) => {
                    return usage("expires", format!("{t:?} is neither Unix milliseconds nor an RFC 3339 time"));
                }
            };
            match loras.grant(&slug, &account, expires_at, &by).await {
                Ok(id) => println!("granted {slug} to account {id}"),
                Err(e) => return fail(e),
            }
        }
        LorasCommand::Revoke { slug, account } => match loras.revoke(&slug, &account, &by).await {
            Ok(true) => println!("revoked {account}'s grant on {slug}"),
            Ok(false) => println!("{account} had no grant on {slug}"),
            Err(e) => return fail(e),
        },
        LorasCommand::Import { file } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).map(|_| s)
            } else {
                std::fs::read_to_string(&file)
            };
            let text = match text {
                Ok(t) => t,
                Err(e) => return usage("file", format!("cannot read {}: {e}", file.display())),
            };
            match loras.import(&text, &by).await {
                Ok(report) => {
                    print_json(&report);
                    for e in &report.errors {
                        eprintln!("skipped {e}");
                    }
                    if !report.errors.is_empty() {
                        return exit::FAILED;
                    }
                }
                Err(e) => return fail(e),
            }
        }
        LorasCommand::Mine { user } => {
            let a = match super::training::account(station, user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            match station.own_loras(&a).await {
                Ok(list) if list.is_empty() => println!("no LoRAs of your own yet; train one with `station train`"),
                Ok(list) => {
                    println!("{:<28} {:<10} {:<9} {:<20} SHARED WITH", "SLUG", "BASE", "PUBLIC", "TRIGGER");
                    for o in list {
                        println!(
                            "{:<28} {:<10} {:<9} {:<20} {}",
                            o.lora.slug,
                            o.lora.checkpoint,
                            o.publication,
                            o.lora.trigger_words.first().cloned().unwrap_or_default(),
                            if o.shared_with.is_empty() { "-".to_owned() } else { o.shared_with.join(", ") }
                        );
                    }
                }
                Err(e) => return super::training::refused(e),
            }
        }
        LorasCommand::Share { slug, account, user } => {
            let a = match super::training::account(station, user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            match station.share_lora(&a, &slug, &account, Via::Cli).await {
                Ok(other) => println!("{} may now use {slug}", other.name),
                Err(e) => return super::training::refused(e),
            }
        }
        LorasCommand::Unshare { slug, account, user } => {
            let a = match super::training::account(station, user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            match station.unshare_lora(&a, &slug, &account, Via::Cli).await {
                Ok(true) => println!("{account} may no longer use {slug}"),
                Ok(false) => println!("{slug} was not shared with {account}"),
                Err(e) => return super::training::refused(e),
            }
        }
        LorasCommand::Publish { slug, user } => {
            let a = match super::training::account(station, user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            match station.publish_lora(&a, &slug, Via::Cli).await {
                Ok(Publication::Public) => println!("{slug} is public"),
                Ok(Publication::Pending) => println!("{slug} waits for an administrator's approval"),
                Err(e) => return super::training::refused(e),
            }
        }
        LorasCommand::Delete { slug, user } => {
            let a = match super::training::account(station, user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            match station.delete_lora(&a, &slug, Via::Cli).await {
                Ok(()) => println!("deleted {slug}"),
                Err(e) => return super::training::refused(e),
            }
        }
        LorasCommand::Requests => match station.lora_publish_requests().await {
            Ok(list) if list.is_empty() => println!("no requests to publish a LoRA wait"),
            Ok(list) => {
                println!("{:<28} {:<24} ASKED", "SLUG", "BY");
                for r in list {
                    let by = match station.account_by_id(&r.account_id).await {
                        Ok(Some(a)) => a.name,
                        _ => r.account_id.clone(),
                    };
                    println!("{:<28} {:<24} {}", r.slug, by, station_core::audit::utc_text(r.requested_at));
                }
            }
            Err(e) => return super::training::refused(e),
        },
        LorasCommand::Approve { slug } => match station.decide_lora_publish(&slug, true, &by).await {
            Ok(()) => println!("{slug} is public"),
            Err(e) => return super::training::refused(e),
        },
        LorasCommand::Refuse { slug } => match station.decide_lora_publish(&slug, false, &by).await {
            Ok(()) => println!("{slug} stays private"),
            Err(e) => return super::training::refused(e),
        },
        LorasCommand::Export => match loras.export().await {
            Ok(v) => print_json(&v),
            Err(e) => return fail(e),
        },
        LorasCommand::Resolve { prompt, user, base_model } => {
            let account = match &user {
                None => None,
                Some(u) => match loras.find_account("user", u).await {
                    Ok(a) => Some(a),
                    Err(e) => return fail(e),
                },
            };
            match loras.resolve(&prompt, account.as_ref(), base_model.as_deref()).await {
                Ok(r) => print_json(&r),
                Err(e) => return fail(e),
            }
        }
    }
    exit::OK
}
