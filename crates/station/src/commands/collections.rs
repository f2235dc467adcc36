//! `station collections …`: list, show, share (and revoke), export. The
//! rules are the core's; this prints what it answers.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;
use station_core::collections::{CollectionEdit, ShareRequest};
use station_core::{AccountRow, CollectionError, Station};

use super::cook::CookArgs;
use super::points::find_account;
use crate::exit;

/// `station collections …`.
#[derive(Debug, Subcommand)]
pub enum CollectionsCommand {
    /// An account's collections: id, name, items, who may see it.
    List {
        /// Account id, provider:subject or local user name (default: you, local:$USER).
        #[arg(long)]
        user: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a collection.
    Create {
        /// Its name.
        name: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// private, unlisted or public.
        #[arg(long, default_value = "private")]
        visibility: String,
        /// Account id, provider:subject or local user name (default: you).
        #[arg(long)]
        user: Option<String>,
    },
    /// One collection's items in order.
    Show {
        /// Collection id.
        id: String,
        /// Account id, provider:subject or local user name (default: you).
        #[arg(long)]
        user: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a share link (printed once), or list and revoke them.
    Share {
        /// Collection id.
        id: String,
        /// Days until the link expires (default 7).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=365))]
        days: Option<u64>,
        /// An account that may also add its results (repeat for more); without any, the link is view-only.
        #[arg(long = "can-add")]
        can_add: Vec<String>,
        /// List the collection's links instead of making one.
        #[arg(long, conflicts_with_all = ["days", "can_add", "revoke"])]
        list: bool,
        /// Revoke the link with this share id instead of making one.
        #[arg(long, conflicts_with_all = ["days", "can_add"])]
        revoke: Option<String>,
        /// Account id, provider:subject or local user name (default: you).
        #[arg(long)]
        user: Option<String>,
    },
    /// Export a collection as a ZIP (images' original bytes and metadata.json).
    Export {
        /// Collection id.
        id: String,
        /// Where to write the ZIP (default: collection-<id>.zip here).
        #[arg(long)]
        out: Option<PathBuf>,
        /// A cooked collection's kept pieces with per-piece NFT metadata.
        #[arg(long)]
        nft: bool,
        /// With --nft: in an order drawn from the cook seed.
        #[arg(long, requires = "nft")]
        shuffle: bool,
        /// Account id, provider:subject or local user name (default: you).
        #[arg(long)]
        user: Option<String>,
    },
    /// Cook a generative collection: save its recipe (a JSON file), start,
    /// pause, resume, stop or re-cook the cook, follow its progress, cull, show
    /// trait statistics. Without an action: where the cook stands.
    Cook {
        /// Collection id.
        id: String,
        /// Save this recipe (JSON; see docs/COLLECTIONS.md) first.
        #[arg(long)]
        recipe: Option<PathBuf>,
        /// Start cooking (the server's workers make the pieces).
        #[arg(long, conflicts_with_all = ["pause", "resume", "stop"])]
        start: bool,
        /// With --start: the cook seed (same seed, same pieces).
        #[arg(long, requires = "start")]
        seed: Option<i64>,
        /// Pause submitting pieces.
        #[arg(long, conflicts_with_all = ["resume", "stop"])]
        pause: bool,
        /// Go on after a pause.
        #[arg(long, conflicts_with = "stop")]
        resume: bool,
        /// Stop: queued pieces are cancelled, the rest never made.
        #[arg(long)]
        stop: bool,
        /// Cook again what a stop (or failures) left unmade; made pieces stay.
        #[arg(long, conflicts_with_all = ["start", "pause", "resume", "stop"])]
        recook: bool,
        /// Keep this many accepted pieces (the rest excluded from the export).
        #[arg(long)]
        cull: Option<i64>,
        /// Show how often each trait occurs against its weight.
        #[arg(long)]
        stats: bool,
        /// Follow the cook with a progress bar until it ends.
        #[arg(long)]
        watch: bool,
        /// Account id, provider:subject or local user name (default: you).
        #[arg(long)]
        user: Option<String>,
    },
    /// Review a cook's pieces one at a time: each is claimed for 5 minutes
    /// (no other reviewer sees it), then answer a (accept), r (reject),
    /// g (regenerate), s (skip) or q (quit) on standard input.
    Review {
        /// Collection id.
        id: String,
        /// Pieces to claim at a time (1–50).
        #[arg(long, default_value_t = 10)]
        count: i64,
        /// Account id, provider:subject or local user name (default: you).
        #[arg(long)]
        user: Option<String>,
    },
}

fn time(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

fn fail(e: CollectionError) -> u8 {
    eprintln!("error: {e}");
    match e {
        CollectionError::Storage(_) | CollectionError::Io(_) => exit::UNAVAILABLE,
        _ => exit::USAGE,
    }
}

async fn who(station: &Station, user: Option<String>) -> Result<AccountRow, u8> {
    let spec = user.unwrap_or_else(|| format!("local:{}", super::local_user(None)));
    find_account(station, &spec).await
}

fn public_url(station: &Station, path: &str) -> String {
    let base = station.config.web.public_url.clone().unwrap_or_else(|| format!("http://{}", station.config.listen));
    format!("{}{path}", base.trim_end_matches('/'))
}

/// Runs a `station collections` command.
pub async fn run(station: &Station, c: CollectionsCommand) -> u8 {
    match c {
        CollectionsCommand::List { user, json } => {
            let a = match who(station, user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            let list = match station.collections_of(&a).await {
                Ok(l) => l,
                Err(e) => return fail(e),
            };
            if json {
                let items: Vec<_> = list
                    .iter()
                    .map(|s| {
                        json!({"id": s.collection.id, "name": s.collection.name, "items": s.items,
                        "visibility": s.collection.visibility, "updated_at": s.collection.updated_at})
                    })
                    .collect();
                println!("{}", json!({"items": items}));
            } else if list.is_empty() {
                println!("{} has no collections yet.", a.name);
            } else {
                println!("{:<32}  {:>5}  {:<8}  name", "id", "items", "visible");
                for s in &list {
                    println!(
                        "{:<32}  {:>5}  {:<8}  {}",
                        s.collection.id, s.items, s.collection.visibility, s.collection.name
                    );
                }
            }
            exit::OK
        }
        CollectionsCommand::Create { name, description, visibility, user } => {
            let a = match who(station, user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            let edit = CollectionEdit {
                name: Some(name),
                description: Some(description),
                visibility: Some(visibility),
                cover_item: None,
            };
            match station.create_collection(&a, edit).await {
                Ok(c) => {
                    println!("{}", c.id);
                    eprintln!("created collection {:?} ({}) for {}", c.name, c.visibility, a.name);
                    exit::OK
                }
                Err(e) => fail(e),
            }
        }
        CollectionsCommand::Show { id, user, json } => {
            let a = match who(station, user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            let v = match station.collection_for(&a, &id).await {
                Ok(v) => v,
                Err(e) => return fail(e),
            };
            let c = &v.collection;
            if json {
                let items: Vec<_> = v
                    .items
                    .iter()
                    .enumerate()
                    .map(|(n, i)| {
                        json!({"position": n + 1, "id": i.item.id, "kind": i.item.kind,
                        "ref": i.item.ref_id, "prompt": i.prompt, "tool": i.tool, "lora_name": i.lora_name})
                    })
                    .collect();
                println!(
                    "{}",
                    json!({"id": c.id, "name": c.name, "description": c.description, "visibility": c.visibility,
                        "owner": v.owner_name, "items": items})
                );
                return exit::OK;
            }
            println!("{} — {} ({}, by {})", c.name, c.id, c.visibility, v.owner_name);
            if !c.description.is_empty() {
                println!("{}", c.description);
            }
            if c.visibility != "private" {
                println!("public page: {}", public_url(station, &format!("/c/{}", c.id)));
            }
            for (n, i) in v.items.iter().enumerate() {
                let what = match (&i.media, &i.lora_name) {
                    (Some(m), _) => format!(
                        "image {}×{} {} {}",
                        m.width,
                        m.height,
                        i.tool.as_deref().unwrap_or(""),
                        i.prompt.as_deref().unwrap_or("")
                    ),
                    (None, Some(l)) => format!("LoRA {l} ({})", i.item.ref_id),
                    (None, None) => format!("{} {} (removed)", i.item.kind, i.item.ref_id),
                };
                println!("{:>4}. {}  {}", n + 1, i.item.id, what.trim_end());
            }
            if v.items.is_empty() {
                println!("(empty)");
            }
            exit::OK
        }
        CollectionsCommand::Share { id, days, can_add, list, revoke, user } => {
            let a = match who(station, user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            if let Some(share) = revoke {
                return match station.revoke_collection_share(&a, &id, &share).await {
                    Ok(()) => {
                        println!("revoked share link {share}: it answers \"not found\" from now on");
                        exit::OK
                    }
                    Err(e) => fail(e),
                };
            }
            if list {
                let shares = match station.collection_shares(&a, &id).await {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                };
                let now = station_core::now_ms();
                for s in &shares {
                    let state = if s.revoked_at.is_some() {
                        "revoked"
                    } else if s.expires_at <= now {
                        "expired"
                    } else {
                        "live"
                    };
                    println!("{}  {:<4}  {:<7}  until {}", s.id, s.permission, state, time(s.expires_at));
                }
                if shares.is_empty() {
                    println!("no share links");
                }
                return exit::OK;
            }
            let req = ShareRequest { expires_in: days.map(|d| d as i64 * 86_400), can_add };
            match station.share_collection(&a, &id, req).await {
                Ok(made) => {
                    println!("{}", public_url(station, &format!("/c/{}", made.token)));
                    eprintln!(
                        "share link {} ({}) until {}; it is shown only now. Revoke it with \
                         `station collections share {id} --revoke {}`.",
                        made.share.id,
                        if made.share.permission == "add" { "the named accounts may add" } else { "view only" },
                        time(made.share.expires_at),
                        made.share.id
                    );
                    exit::OK
                }
                Err(e) => fail(e),
            }
        }
        CollectionsCommand::Cook { id, recipe, start, seed, pause, resume, stop, recook, cull, stats, watch, user } => {
            let a = match who(station, user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            let args = CookArgs { recipe, start, seed, pause, resume, stop, recook, cull, stats, watch };
            super::cook::run_cook(station, &a, &id, args).await
        }
        CollectionsCommand::Review { id, count, user } => {
            let a = match who(station, user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            super::cook::run_review(station, &a, &id, count).await
        }
        CollectionsCommand::Export { id, out, nft, shuffle, user } => {
            let a = match who(station, user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            let progress = |done: i64, total: i64| eprint!("\rexporting: {done} of {total} items");
            let e = if nft {
                station.export_cook_now(&a, &id, shuffle, &progress).await
            } else {
                station.export_collection_now(&a, &id, &progress).await
            };
            let e = match e {
                Ok(e) => e,
                Err(e) => return fail(e),
            };
            eprintln!();
            let (e, path) = match station.export_file(&a, &e.id).await {
                Ok(x) => x,
                Err(e) => return fail(e),
            };
            let out = out.unwrap_or_else(|| PathBuf::from(format!("collection-{}.zip", &id[..id.len().min(12)])));
            if let Err(err) = std::fs::copy(&path, &out) {
                eprintln!("error: cannot write {}: {err}", out.display());
                return exit::FAILED;
            }
            println!("{}", out.display());
            eprintln!("wrote {} items ({} bytes) to {}", e.total, e.size.unwrap_or(0), out.display());
            exit::OK
        }
    }
}
