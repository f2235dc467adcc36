//! `station models …`: the models the backends offer and the operator's catalog of them.

use clap::Subcommand;
use station_core::Station;
use station_core::models::{BASE_MODEL_KINDS, BaseModelSource, ModelError, ModelSettings};

use crate::exit;

/// `station models …`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Every model the backends offer: kind, base model and where it comes
    /// from (catalog, file metadata, file name) or that it is unknown, which
    /// backends have it, and the catalog's settings.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a model's catalog entry.
    Set {
        /// File name, as `station models list` shows it.
        name: String,
        /// Base model: SD1.5, SDXL, FLUX, … ("" clears it).
        #[arg(long)]
        base_model: Option<String>,
        /// What people see instead of the file name ("" clears it).
        #[arg(long)]
        label: Option<String>,
        /// Make it the default of its base model.
        #[arg(long)]
        default: bool,
        /// Do not offer it to members.
        #[arg(long, conflicts_with = "visible")]
        hidden: bool,
        /// Offer it again.
        #[arg(long)]
        visible: bool,
        /// Multiplies the price of jobs run with it (e.g. 1.5).
        #[arg(long)]
        price_multiplier: Option<f64>,
    },
}

/// Runs `station models …`.
pub async fn run(station: &Station, c: ModelsCommand) -> u8 {
    match c {
        ModelsCommand::List { json } => {
            let models = match station.models().await {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::UNAVAILABLE;
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&*models).unwrap_or_default());
                return exit::OK;
            }
            if models.is_empty() {
                println!(
                    "no models known yet: start `station serve` or run `station backends refresh` with a backend configured"
                );
                return exit::OK;
            }
            println!("{:<14} {:<44} {:<8} {:<9} {:<24} SETTINGS", "KIND", "NAME", "BASE", "FROM", "BACKENDS");
            let mut unknown = 0;
            for m in models.iter() {
                // Where the base model comes from: the catalog, the file's own metadata, its name.
                let (base, from) = match (m.base_model_source, &m.base_model) {
                    // Upscale models and VAEs belong to no base model that matters here.
                    _ if !BASE_MODEL_KINDS.contains(&m.kind.as_str()) => ("-".to_string(), "-"),
                    (BaseModelSource::Unknown, _) | (_, None) => {
                        unknown += 1;
                        ("unknown".to_string(), "-")
                    }
                    (BaseModelSource::Name, Some(b)) => (b.clone(), "name"),
                    (BaseModelSource::Metadata, Some(b)) => (b.clone(), "metadata"),
                    (BaseModelSource::Catalog, Some(b)) => (b.clone(), "catalog"),
                };
                let mut backends = m.backends.join(",");
                if !m.offline_backends.is_empty() {
                    if !backends.is_empty() {
                        backends.push(',');
                    }
                    backends.push_str(&format!("({} down)", m.offline_backends.join(",")));
                }
                if backends.is_empty() {
                    backends = "-".into();
                }
                let mut settings = vec![];
                if m.label != m.name && !m.name.starts_with(&m.label) {
                    settings.push(format!("label={:?}", m.label));
                }
                if m.hidden {
                    settings.push("hidden".into());
                }
                if m.default {
                    settings.push("default".into());
                }
                if m.price_multiplier != 1.0 {
                    settings.push(format!("price×{}", m.price_multiplier));
                }
                println!(
                    "{:<14} {:<44} {:<8} {:<9} {:<24} {}",
                    m.kind,
                    m.name,
                    base,
                    from,
                    backends,
                    settings.join(" ")
                );
            }
            println!(
                "(FROM: catalog = set with `station models set`; metadata = named in the file's own metadata, as its \
                 backend reports it; name = guessed from the file name)"
            );
            if unknown > 0 {
                println!(
                    "hint: {unknown} model(s) have an unknown base model, so their tools use generic defaults and \
                     LoRAs are not matched to them; set it with `station models set NAME --base-model SD1.5|SDXL|FLUX`"
                );
            }
            exit::OK
        }
        ModelsCommand::Set { name, base_model, label, default, hidden, visible, price_multiplier } => {
            let settings = ModelSettings {
                base_model,
                label,
                default: default.then_some(true),
                hidden: if hidden {
                    Some(true)
                } else if visible {
                    Some(false)
                } else {
                    None
                },
                price_multiplier,
            };
            match station
                .set_model(&name, &settings, &station_core::audit::Actor::operator(&super::local_user(None)))
                .await
            {
                Ok(m) => {
                    println!(
                        "{}: {} {}, base model {}{}{}, price ×{}",
                        m.name,
                        m.kind,
                        if m.hidden { "hidden" } else { "offered" },
                        m.base_model.as_deref().unwrap_or("unknown"),
                        if m.default { ", default" } else { "" },
                        if m.label != m.name { format!(", label {:?}", m.label) } else { String::new() },
                        m.price_multiplier
                    );
                    exit::OK
                }
                Err(e @ (ModelError::Unknown { .. } | ModelError::Invalid { .. })) => {
                    eprintln!("error: {e}");
                    exit::USAGE
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::UNAVAILABLE
                }
            }
        }
    }
}
