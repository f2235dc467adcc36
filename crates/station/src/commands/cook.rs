//! `station collections cook|review`: a cook's recipe, start, pause,
//! resume, stop, progress (a bar), cull and trait statistics; reviewing
//! pieces one at a time from standard input. The rules are the core's.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use station_core::cook::{CookView, Decision};
use station_core::{AccountRow, CollectionError, Station};

use crate::exit;

/// What `station collections cook` was asked to do.
pub struct CookArgs {
    /// A recipe file to save first.
    pub recipe: Option<PathBuf>,
    /// Start the cook.
    pub start: bool,
    /// The cook seed.
    pub seed: Option<i64>,
    /// Pause it.
    pub pause: bool,
    /// Resume it.
    pub resume: bool,
    /// Stop it.
    pub stop: bool,
    /// Cook again what a stop left unmade.
    pub recook: bool,
    /// Cull to this many accepted pieces.
    pub cull: Option<i64>,
    /// Print trait statistics.
    pub stats: bool,
    /// Follow with a progress bar.
    pub watch: bool,
}

fn fail(e: CollectionError) -> u8 {
    match &e {
        CollectionError::Invalid(fields) => {
            for f in fields {
                eprintln!("error: {}: {}", f.field, f.reason);
            }
        }
        e => eprintln!("error: {e}"),
    }
    match e {
        CollectionError::Storage(_) | CollectionError::Io(_) => exit::UNAVAILABLE,
        _ => exit::USAGE,
    }
}

fn show(c: &CookView) {
    println!("{}", c.progress_text);
    println!(
        "pieces: {} made, {} failed, {} in progress, {} waiting, {} stopped (of {}); seed {}",
        c.done, c.failed, c.in_flight, c.pending, c.stopped, c.total, c.seed
    );
    if c.accepted + c.rejected > 0 {
        println!("review: {} accepted ({} kept), {} rejected", c.accepted, c.kept, c.rejected);
    }
}

/// Runs `station collections cook`.
pub async fn run_cook(station: &Station, a: &AccountRow, id: &str, args: CookArgs) -> u8 {
    if let Some(path) = &args.recipe {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return exit::USAGE;
            }
        };
        let value: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {} is not JSON: {e}", path.display());
                return exit::USAGE;
            }
        };
        match station.save_recipe(a, id, &value).await {
            Ok(r) => eprintln!("recipe saved: {} pieces, {} categories", r.supply, r.categories.len()),
            Err(e) => return fail(e),
        }
    }
    let action = if args.pause {
        Some("pause")
    } else if args.resume {
        Some("resume")
    } else if args.stop {
        Some("stop")
    } else if args.recook {
        Some("recook")
    } else {
        None
    };
    let result = if args.start {
        station.start_cook(a, id, args.seed).await.map(Some)
    } else if let Some(action) = action {
        station.control_cook(a, id, action).await.map(Some)
    } else if let Some(target) = args.cull {
        station.cull_cook(a, id, target).await.map(Some)
    } else {
        station.cook_status(a, id).await
    };
    let cook = match result {
        Ok(Some(c)) => c,
        Ok(None) if args.recipe.is_some() => return exit::OK,
        Ok(None) => {
            eprintln!("This collection has not been cooked; save a recipe with --recipe and start with --start.");
            return exit::USAGE;
        }
        Err(e) => return fail(e),
    };
    if args.watch {
        return watch(station, a, id, cook).await;
    }
    show(&cook);
    if args.stats {
        match station.trait_stats(a, id, args.cull.is_some()).await {
            Ok(s) => {
                println!("traits over {} pieces ({}):", s.pieces, s.scope);
                for t in &s.traits {
                    println!(
                        "  {:<16} {:<20} {:>5} pieces  {:>5.1} %  (weight asks {:.1} %)",
                        t.category,
                        t.name,
                        t.occurrences,
                        t.share * 100.0,
                        t.expected * 100.0
                    );
                }
            }
            Err(e) => return fail(e),
        }
    }
    exit::OK
}

/// A progress bar until the cook ends (made by the server's workers).
async fn watch(station: &Station, a: &AccountRow, id: &str, mut cook: CookView) -> u8 {
    let bar = ProgressBar::new(cook.total.max(0) as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    loop {
        bar.set_position(cook.done.max(0) as u64);
        bar.set_message(cook.progress_text.clone());
        if cook.status != "running" {
            bar.finish_with_message(cook.progress_text.clone());
            return exit::OK;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        cook = match station.cook_status(a, id).await {
            Ok(Some(c)) => c,
            Ok(None) => return exit::FAILED,
            Err(e) => {
                bar.abandon();
                return fail(e);
            }
        };
    }
}

/// Runs `station collections review`: claims pieces and asks about each.
pub async fn run_review(station: &Station, a: &AccountRow, id: &str, count: i64) -> u8 {
    let mut lines = std::io::stdin().lock().lines();
    let mut decided = 0;
    let mut skipped = std::collections::HashSet::new();
    loop {
        let pieces = match station.claim_pieces(a, id, count).await {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        let todo: Vec<_> = pieces.into_iter().filter(|p| !skipped.contains(&p.id)).collect();
        if todo.is_empty() {
            println!("Nothing left to review ({decided} decided).");
            return exit::OK;
        }
        for p in todo {
            let traits: Vec<String> = p.traits.iter().map(|t| format!("{}: {}", t.category, t.name)).collect();
            println!("piece #{} — {}", p.number, traits.join(", "));
            if let Some(m) = &p.media_id {
                println!("  image: station media get {m}");
            }
            eprint!("  a accept, r reject, g regenerate, s skip, q quit > ");
            let Some(Ok(line)) = lines.next() else {
                println!("\n{decided} decided.");
                return exit::OK;
            };
            let decision = match line.trim() {
                "a" => Decision::Accept,
                "r" => Decision::Reject,
                "g" => Decision::Regenerate,
                "q" => {
                    println!("{decided} decided.");
                    return exit::OK;
                }
                _ => {
                    skipped.insert(p.id.clone());
                    continue;
                }
            };
            match station.review_piece(a, id, &p.id, decision).await {
                Ok(v) => {
                    decided += 1;
                    let word = match decision {
                        Decision::Accept => "accepted",
                        Decision::Reject => "rejected",
                        Decision::Regenerate => "sent back to be made again",
                    };
                    println!("  piece #{} {word}", v.number);
                }
                Err(e) => {
                    fail(e);
                }
            }
        }
    }
}
