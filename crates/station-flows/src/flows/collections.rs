//! `/collections`: your collections in chat — each one's size and who can
//! see it, its address on the web, and a share link made on the spot (view
//! only, for 7 days). Adding goes through a result's "➕ Collection" button
//! (the `collect` flow). Ownership, visibility and links are the core's
//! rules ([`station_core::collections`]).

use serde_json::{Value, json};
use station_core::collections::{CollectionError, CollectionSummary, ShareRequest};

use crate::flow::{Cx, Flow, FlowError, Next, Out, Start, StepInput, StepSpec, get_str};
use crate::view::{Block, Button, Field, Rich, View};

/// The collections flow.
pub struct Collections;

const NO_STEPS: &[StepSpec] = &[];

/// How many collections the list shows (the web shows them all).
const LISTED: usize = 10;

fn words(e: CollectionError) -> Result<String, FlowError> {
    match e {
        CollectionError::Storage(s) => Err(s.into()),
        CollectionError::Invalid(fields) => Ok(fields.iter().map(|f| f.reason.clone()).collect::<Vec<_>>().join("; ")),
        CollectionError::NotFound { .. } => Ok("That collection is gone.".into()),
        other => Ok(other.to_string()),
    }
}

fn finish(view: View) -> Next {
    Next::Finish(vec![Out::message(view.personal())])
}

/// "3 images", "1 image".
fn items(n: usize) -> String {
    if n == 1 { "1 image".into() } else { format!("{n} images") }
}

/// Who can see it, in words.
fn who_sees(visibility: &str) -> &'static str {
    match visibility {
        "public" => "everyone (public)",
        "unlisted" => "anyone with its address (unlisted)",
        _ => "only you, and people you give a link to (private)",
    }
}

fn open(id: &str) -> Value {
    json!({"flow": "collections", "args": {"collection": id}})
}

impl Collections {
    async fn answer(&self, cx: &Cx<'_>, start: Start) -> Result<Next, FlowError> {
        if let Some(off) = cx.station.feature_refusal("collections", cx.account).await {
            return Ok(finish(View::text(off.reason)));
        }
        let mine = match cx.station.collections_of(cx.account).await {
            Ok(m) => m,
            Err(e) => return Ok(finish(View::text(words(e)?))),
        };
        if let Some(id) = get_str(&start.args, "collection") {
            return match mine.iter().find(|c| c.collection.id == id) {
                Some(c) => self.one(cx, c, get_str(&start.args, "do") == Some("share")).await,
                None => Ok(finish(View::text("That collection is gone."))),
            };
        }
        if mine.is_empty() {
            return Ok(finish(View::text(
                "You have no collections yet. Press ➕ Collection under a result to start one.",
            )));
        }
        let fields = mine
            .iter()
            .take(LISTED)
            .map(|c| Field {
                name: c.collection.name.clone(),
                value: format!("{} · seen by {}", items(c.items), who_sees(&c.collection.visibility)),
                inline: false,
            })
            .collect();
        let title = if mine.len() > LISTED {
            format!("Your collections (the newest {LISTED} of {})", mine.len())
        } else {
            "Your collections".to_string()
        };
        let mut view = View::default().block(Block::Card { title, body: None, image: None, fields });
        let buttons: Vec<Button> = mine
            .iter()
            .take(LISTED)
            .map(|c| Button::action(format!("📂 {}", c.collection.name), "start", open(&c.collection.id)))
            .collect();
        for row in buttons.chunks(2) {
            view = view.row(row.to_vec());
        }
        let base = cx.flows.settings().public_url.trim_end_matches('/').to_string();
        view = view.row(vec![Button::url("🌐 All on the web", format!("{base}/collections"))]);
        Ok(finish(view))
    }

    /// One collection: what it holds, who sees it, its address — and, when
    /// asked, a new view-only share link.
    async fn one(&self, cx: &Cx<'_>, c: &CollectionSummary, share: bool) -> Result<Next, FlowError> {
        let base = cx.flows.settings().public_url.trim_end_matches('/').to_string();
        let col = &c.collection;
        let mut fields = vec![
            Field { name: "Holds".into(), value: items(c.items), inline: true },
            Field { name: "Seen by".into(), value: who_sees(&col.visibility).into(), inline: true },
        ];
        if col.visibility != "private" {
            fields.push(Field { name: "Address".into(), value: format!("{base}/c/{}", col.id), inline: false });
        }
        let mut said = None;
        if share {
            said = Some(match cx.station.share_collection(cx.account, &col.id, ShareRequest::default()).await {
                Ok(new) => {
                    let until = station_core::audit::utc_text(new.share.expires_at);
                    format!(
                        "Anyone with this link can look at {} until {until}:\n{base}/c/{}\nYou can revoke it on the web.",
                        col.name, new.token
                    )
                }
                Err(e) => format!("⚠ {}", words(e)?),
            });
        }
        let body = (!col.description.is_empty()).then(|| Rich::plain(col.description.clone()));
        let mut view = View::default().block(Block::Card { title: col.name.clone(), body, image: None, fields });
        let mut row = vec![];
        if col.visibility != "public" {
            row.push(Button::action(
                "🔗 Share link (7 days)",
                "start",
                json!({"flow": "collections", "args": {"collection": col.id, "do": "share"}}),
            ));
        }
        row.push(Button::url("🌐 Open on the web", format!("{base}/collections/{}", col.id)));
        view = view.row(row);
        view = view.row(vec![Button::action("⬅ Your collections", "start", json!({"flow": "collections"}))]);
        if let Some(s) = said {
            view = view.with_text(s);
        }
        Ok(finish(view))
    }
}

#[async_trait::async_trait]
impl Flow for Collections {
    fn name(&self) -> &'static str {
        "collections"
    }

    fn description(&self) -> &'static str {
        "Your collections: what they hold, their address, a share link"
    }

    fn personal(&self) -> bool {
        true
    }

    fn steps(&self) -> &'static [StepSpec] {
        NO_STEPS
    }

    async fn start(&self, cx: &Cx<'_>, start: Start) -> Result<Next, FlowError> {
        self.answer(cx, start).await
    }

    async fn view(&self, _cx: &Cx<'_>, _step: &str, _state: &Value) -> Result<View, FlowError> {
        Ok(View::default())
    }

    async fn input(&self, _cx: &Cx<'_>, _s: &str, _st: &Value, _i: StepInput) -> Result<Next, FlowError> {
        Ok(Next::Cancel)
    }
}
