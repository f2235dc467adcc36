//! `station spells …`: list, show, create and cast spells (saved chains of
//! tools). Validation, pricing and advancing are the core's.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{Map, Value};
use station_core::Station;
use station_core::spells::{CastError, CastRequest, SpellError, SpellSpec, SpellVisibility};
use station_core::tools::InputType;
use station_core::{SubmitError, Workers};

use super::{ServerOnAddress, local_user, other_server, server_on_address, wire};
use crate::exit;

/// `station spells …`.
#[derive(Debug, Subcommand)]
pub enum SpellsCommand {
    /// Spells you can cast: yours and every public one.
    List {
        /// Local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One spell as JSON: steps and the inputs a cast fills in.
    Show {
        /// Slug.
        slug: String,
        /// Local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
    /// Save a spell from a JSON file (`-` reads standard input); every problem is listed at once.
    Create {
        /// The file: {"slug", "name", "steps": [{"tool", "params", "inputs_from"}], "inputs"}.
        file: PathBuf,
        /// Owner: local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
    /// Cast a spell and follow it to the end; the last step's outputs are saved.
    Cast {
        /// Slug.
        slug: String,
        /// An input, `name=value` (repeatable).
        #[arg(short, long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// An image input: `PATH` for the spell's image input, or `NAME=PATH`.
        #[arg(short, long = "image", value_name = "[NAME=]PATH")]
        images: Vec<String>,
        /// Folder to save outputs in.
        #[arg(short, long, default_value = ".")]
        out: PathBuf,
        /// Cast it, print its id and return at once.
        #[arg(long)]
        no_wait: bool,
        /// Agree to a price above the confirmation threshold.
        #[arg(long)]
        yes: bool,
        /// Caster: local user (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
}

/// Runs a `station spells` command.
pub async fn run(station: &Station, c: SpellsCommand) -> u8 {
    let user = match &c {
        SpellsCommand::List { user, .. }
        | SpellsCommand::Show { user, .. }
        | SpellsCommand::Create { user, .. }
        | SpellsCommand::Cast { user, .. } => local_user(user.clone()),
    };
    let account = match station.account("local", &user, &user).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::UNAVAILABLE;
        }
    };
    match c {
        SpellsCommand::List { json, .. } => match station.spells(&account).await {
            Ok(list) if json => {
                println!("{}", serde_json::to_string_pretty(&list).expect("spells serialise"));
                exit::OK
            }
            Ok(list) if list.is_empty() => {
                println!("no spells yet; save one with `station spells create FILE`");
                exit::OK
            }
            Ok(list) => {
                // Public spells as chat commands: which command each is, or why it is none.
                let flows = station.config.spells.commands.then(|| station_flows::Flows::new(station.clone()));
                for s in list {
                    let tools: Vec<&str> = s.steps.iter().map(|t| t.tool_name.as_str()).collect();
                    let state = s.broken.as_ref().map(|_| " (broken)").unwrap_or_default();
                    let command = match &flows {
                        Some(f) if s.visibility == SpellVisibility::Public && s.broken.is_none() => {
                            match f.spell_command(&s.slug) {
                                Ok(name) => format!("  chat command /{name}"),
                                Err(why) => format!("  not a chat command: {why}"),
                            }
                        }
                        _ => String::new(),
                    };
                    println!(
                        "{:<24} {:<9} {:>5} casts  {}{state}{command}",
                        s.slug,
                        s.visibility.as_str(),
                        s.casts,
                        tools.join(" → ")
                    );
                }
                exit::OK
            }
            Err(e) => fail(e),
        },
        SpellsCommand::Show { slug, .. } => match station.spell(&account, &slug).await {
            Ok(Some(s)) => {
                println!("{}", serde_json::to_string_pretty(&s).expect("a spell serialises"));
                exit::OK
            }
            Ok(None) => {
                eprintln!("error: no spell {slug:?}; `station spells list` shows the ones you can cast");
                exit::USAGE
            }
            Err(e) => fail(e),
        },
        SpellsCommand::Create { file, .. } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
                    eprintln!("error: standard input: {e}");
                    return exit::USAGE;
                }
                s
            } else {
                match std::fs::read_to_string(&file) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("error: {}: {e}", file.display());
                        return exit::USAGE;
                    }
                }
            };
            let spec: SpellSpec = match serde_json::from_str(&text) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    return exit::USAGE;
                }
            };
            match station.create_spell(&account, spec).await {
                Ok(s) => {
                    let inputs: Vec<String> = s
                        .inputs
                        .iter()
                        .map(|i| format!("{}{}", i.name, if i.def.required { "" } else { "?" }))
                        .collect();
                    println!(
                        "saved spell {} ({} steps); cast it with `station spells cast {}`{}",
                        s.slug,
                        s.steps.len(),
                        s.slug,
                        if inputs.is_empty() { String::new() } else { format!(" — inputs: {}", inputs.join(", ")) }
                    );
                    exit::OK
                }
                Err(SpellError::Invalid(errors)) => {
                    eprintln!("error: the spell was not saved:");
                    for e in errors {
                        eprintln!("  {}: {}", e.field, e.reason);
                    }
                    exit::USAGE
                }
                Err(e) => fail(e),
            }
        }
        SpellsCommand::Cast { slug, params, images, out, no_wait, yes, .. } => {
            let spell = match station.spell(&account, &slug).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    eprintln!("error: no spell {slug:?}; `station spells list` shows the ones you can cast");
                    return exit::USAGE;
                }
                Err(e) => return fail(e),
            };
            if out.exists() && !out.is_dir() {
                eprintln!("error: --out {} is a file; give a folder to save the outputs in", out.display());
                return exit::USAGE;
            }
            let server = if no_wait { ServerOnAddress::Nobody } else { server_on_address(station).await };
            if let ServerOnAddress::Other(theirs) = &server {
                return other_server(station, theirs.as_deref());
            }
            let mut inputs = Map::new();
            for p in &params {
                let Some((k, v)) = p.split_once('=') else {
                    eprintln!("error: --param {p:?}: expected NAME=VALUE");
                    return exit::USAGE;
                };
                inputs.insert(k.trim().to_string(), Value::String(v.to_string()));
            }
            for spec in &images {
                let (name, path) = match spec.split_once('=') {
                    Some((n, p)) if spell.inputs.iter().any(|i| i.name == n) => (n.to_string(), PathBuf::from(p)),
                    _ => match spell.inputs.iter().find(|i| i.def.kind == InputType::Image) {
                        Some(i) => (i.name.clone(), PathBuf::from(spec)),
                        None => {
                            eprintln!("error: --image: spell {slug} takes no image input");
                            return exit::USAGE;
                        }
                    },
                };
                let bytes = match std::fs::read(&path) {
                    Ok(b) => b,
                    Err(e) => {
                        eprintln!("error: --image {}: {e}", path.display());
                        return exit::USAGE;
                    }
                };
                match station.media.put_image(bytes, Some(&account.id), None, "input").await {
                    Ok(m) => {
                        inputs.insert(name, Value::String(format!("media:{}", m.id)));
                    }
                    Err(e) => {
                        eprintln!("error: --image {}: {e}", path.display());
                        return exit::USAGE;
                    }
                }
            }
            let req = CastRequest { spell: slug.clone(), inputs, confirmed: yes, ..Default::default() };
            let cast = match station.cast(&account, req).await {
                Ok(c) => c,
                Err(CastError::Submit(SubmitError::Invalid(errors))) => {
                    eprintln!("error: the spell was not cast:");
                    for e in errors {
                        let field = e.field.strip_prefix("inputs.").map(|f| format!("--param {f}"));
                        eprintln!("  {}: {}", field.unwrap_or(e.field), e.reason);
                    }
                    return exit::USAGE;
                }
                Err(CastError::Submit(SubmitError::ConfirmationRequired { price, threshold })) => {
                    eprintln!(
                        "not cast: {price} points is above your confirmation threshold of {threshold}; \
                         pass --yes to cast it"
                    );
                    return exit::USAGE;
                }
                Err(e) => {
                    eprintln!("error: the spell was not cast: {e}");
                    return exit::USAGE;
                }
            };
            eprintln!("{}: {} points held for {} steps", spell.slug, cast.price, cast.steps_total);
            if no_wait {
                println!("{}", cast.id);
                return exit::OK;
            }
            let embedded = match server {
                ServerOnAddress::Same => None,
                _ => {
                    let comfy = cast.steps.iter().any(|s| {
                        station
                            .tools
                            .get(&s.tool_id)
                            .is_some_and(|t| station_core::service_name(t.service) == "comfyui")
                    });
                    let background = wire::register_executors(station, comfy).await;
                    Some((Workers::start(station), background))
                }
            };
            let mut last = String::new();
            let done = loop {
                match station.cast_view(&account, &cast.id).await {
                    Ok(Some(v)) => {
                        if v.progress_text != last {
                            eprintln!("{}", v.progress_text);
                            last = v.progress_text.clone();
                        }
                        if v.status != "running" {
                            break v;
                        }
                    }
                    Ok(None) => return exit::FAILED,
                    Err(e) => tracing::warn!(error = %e, "cannot read the cast"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            if let Some((workers, background)) = embedded {
                // Settled by the workers; anything cut short is settled at the next start.
                for s in &done.steps {
                    let _ = station.settle_job(&s.job_id, "cli").await;
                }
                workers.shutdown().await;
                background.shutdown().await;
            }
            if done.status != "succeeded" {
                eprintln!("cast {}: {}", done.status, done.error.as_deref().unwrap_or("no details"));
                return exit::FAILED;
            }
            match station.job(&done.steps.last().expect("a cast has steps").job_id).await {
                Ok(Some(job)) => super::save_outputs(station, &job, &job.id, &out).await,
                _ => exit::FAILED,
            }
        }
    }
}

fn fail(e: impl std::fmt::Display) -> u8 {
    eprintln!("error: {e}");
    exit::FAILED
}
