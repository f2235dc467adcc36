//! Views as Discord messages: embeds for text, cards, lists and progress;
//! files for images (fitted to Discord's attachment limit); buttons, select
//! menus and modal-opening buttons for input — within Discord's limits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use station_core::Station;
use station_flows::view::{FormField, split_text};
use station_flows::{Block, Button, ButtonAction, ImageRef, InputKind, View};

use crate::commands::cut;
use crate::rest::FilePart;

/// Discord's limits used while rendering.
pub mod limits {
    /// Characters per embed description.
    pub const EMBED_DESCRIPTION: usize = 4096;
    /// Embeds per message.
    pub const EMBEDS: usize = 10;
    /// Characters of text over all embeds of a message.
    pub const EMBED_TOTAL: usize = 6000;
    /// Fields per embed.
    pub const FIELDS: usize = 25;
    /// Action rows per message.
    pub const ROWS: usize = 5;
    /// Buttons per row.
    pub const BUTTONS_PER_ROW: usize = 5;
    /// Options per select menu.
    pub const SELECT_OPTIONS: usize = 25;
    /// Files per message.
    pub const FILES: usize = 10;
    /// Text inputs per modal.
    pub const MODAL_FIELDS: usize = 5;
}

/// A rendered message.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The JSON body (content, embeds, components, attachments).
    pub payload: Value,
    /// Files to upload with it.
    pub files: Vec<FilePart>,
}

/// One text input of a modal.
#[derive(Debug, Clone)]
pub struct ModalField {
    /// Parameter name sent back.
    pub name: String,
    /// Label (≤ 45 characters).
    pub label: String,
    /// Hint.
    pub placeholder: Option<String>,
    /// Paragraph style.
    pub multiline: bool,
    /// Must be filled.
    pub required: bool,
    /// Prefilled value.
    pub value: Option<String>,
    /// Number constraints, when the field is a number: (integer, min, max).
    pub number: Option<(bool, Option<f64>, Option<f64>)>,
    /// Longest accepted text.
    pub max_len: Option<u32>,
}

/// A modal waiting to be opened by its button.
#[derive(Debug, Clone)]
pub struct ModalSpec {
    /// Title (≤ 45 characters).
    pub title: String,
    /// Fields (≤ 5).
    pub fields: Vec<ModalField>,
    /// A single free input (sent back as text) rather than a form.
    pub single: bool,
}

/// Modals behind "✏️" buttons, by key (the button's `custom_id` is `m:KEY`).
/// Kept for a day in memory; an unknown key gets a note to run the command again.
#[derive(Default)]
pub struct Modals {
    map: Mutex<HashMap<String, (Instant, ModalSpec)>>,
}

const MODAL_TTL: Duration = Duration::from_secs(24 * 3600);

impl Modals {
    /// Stores a spec, returning its key.
    pub fn put(&self, spec: ModalSpec) -> String {
        let key: String = (0..16).map(|_| char::from(b'a' + rand::random_range(0..26u8))).collect();
        let mut m = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.retain(|_, (at, _)| at.elapsed() < MODAL_TTL);
        m.insert(key.clone(), (Instant::now(), spec));
        key
    }

    /// The spec behind a key.
    pub fn get(&self, key: &str) -> Option<ModalSpec> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).map(|(_, s)| s.clone())
    }
}

fn field_from(name: &str, label: &str, kind: &InputKind, required: bool, value: Option<&Value>) -> ModalField {
    let value = value.map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let mut f = ModalField {
        name: name.to_string(),
        label: cut(label, 45, name),
        placeholder: None,
        multiline: false,
        required,
        value,
        number: None,
        max_len: None,
    };
    match kind {
        InputKind::Text { placeholder, multiline, max_len } => {
            f.placeholder = placeholder.as_ref().map(|p| cut(p, 100, ""));
            f.multiline = *multiline;
            f.max_len = max_len.map(|n| n.min(4000));
        }
        InputKind::Number { min, max, integer, .. } => {
            f.number = Some((*integer, *min, *max));
            let range = match (min, max) {
                (Some(a), Some(b)) => format!("{a} to {b}"),
                (Some(a), None) => format!("at least {a}"),
                (None, Some(b)) => format!("at most {b}"),
                (None, None) => if *integer { "a whole number" } else { "a number" }.to_string(),
            };
            f.placeholder = Some(cut(&range, 100, ""));
        }
        _ => f.placeholder = Some("type a value".into()),
    }
    f
}

/// The modal for a view's input, if it needs one (text, number, form).
pub fn modal_for(view: &View) -> Option<ModalSpec> {
    let input = view.input.as_ref()?;
    match &input.kind {
        InputKind::Text { .. } | InputKind::Number { .. } => Some(ModalSpec {
            title: cut(&input.label, 45, "Station"),
            fields: vec![field_from("value", &input.label, &input.kind, true, None)],
            single: true,
        }),
        InputKind::Form { fields } => Some(ModalSpec {
            title: cut(&input.label, 45, "Station"),
            fields: fields
                .iter()
                .filter(|f: &&FormField| matches!(f.kind, InputKind::Text { .. } | InputKind::Number { .. }))
                .take(limits::MODAL_FIELDS)
                .map(|f| field_from(&f.name, &f.label, &f.kind, f.required, f.value.as_ref()))
                .collect(),
            single: false,
        }),
        _ => None,
    }
}

/// The modal as an interaction response (type 9).
pub fn modal_response(key: &str, spec: &ModalSpec) -> Value {
    let rows: Vec<Value> = spec
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut t = json!({
                "type": 4, "custom_id": format!("{i}:{}", cut(&f.name, 90, "v")), "label": f.label,
                "style": if f.multiline { 2 } else { 1 }, "required": f.required,
            });
            if let Some(p) = &f.placeholder
                && !p.is_empty()
            {
                t["placeholder"] = json!(p);
            }
            if let Some(v) = &f.value {
                t["value"] = json!(cut(v, 4000, ""));
            }
            if let Some(n) = f.max_len {
                t["max_length"] = json!(n.max(1));
            }
            json!({"type": 1, "components": [t]})
        })
        .collect();
    json!({"type": 9, "data": {"custom_id": format!("f:{key}"), "title": spec.title, "components": rows}})
}

/// Reads a submitted modal's values: text, or numbers for number fields.
/// Errors name the field and say what is expected.
pub fn modal_values(spec: &ModalSpec, data: &Value) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for row in data["components"].as_array().into_iter().flatten() {
        for c in row["components"].as_array().into_iter().flatten() {
            let id = c["custom_id"].as_str().unwrap_or("");
            let idx: usize = id.split(':').next().and_then(|i| i.parse().ok()).unwrap_or(usize::MAX);
            let Some(f) = spec.fields.get(idx) else { continue };
            let text = c["value"].as_str().unwrap_or("").trim().to_string();
            if text.is_empty() {
                if f.required {
                    return Err(format!("{} is required: please fill it in.", f.label));
                }
                continue;
            }
            let v = match f.number {
                None => Value::String(text),
                Some((integer, min, max)) => {
                    let n: f64 = text
                        .replace(',', ".")
                        .parse()
                        .map_err(|_| format!("{}: {text:?} is not a number; type digits like 7 or 0.5.", f.label))?;
                    if integer && n.fract() != 0.0 {
                        return Err(format!("{}: {text} is not a whole number.", f.label));
                    }
                    if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                        return Err(format!(
                            "{}: {text} is out of range ({} to {}).",
                            f.label,
                            min.map(|m| m.to_string()).unwrap_or("…".into()),
                            max.map(|m| m.to_string()).unwrap_or("…".into())
                        ));
                    }
                    if integer { json!(n as i64) } else { json!(n) }
                }
            };
            out.insert(f.name.clone(), v);
        }
    }
    Ok(out)
}

fn button_json(b: &Button) -> Option<Value> {
    let label = cut(&b.label, 80, "·");
    match &b.action {
        ButtonAction::Token(t) => {
            let style = match b.style {
                station_flows::view::ButtonStyle::Primary => 1,
                station_flows::view::ButtonStyle::Danger => 4,
                _ => 2,
            };
            Some(json!({"type": 2, "style": style, "label": label, "custom_id": cut(t, 100, "x")}))
        }
        ButtonAction::Url(u) => Some(json!({"type": 2, "style": 5, "label": label, "url": u})),
        ButtonAction::Pending(_) => None,
    }
}

fn rows_of(buttons: Vec<Value>) -> Vec<Value> {
    buttons.chunks(limits::BUTTONS_PER_ROW).map(|c| json!({"type": 1, "components": c})).collect()
}

fn progress_line(fraction: Option<f64>, label: &str) -> String {
    match fraction {
        Some(f) => {
            let f = f.clamp(0.0, 1.0);
            let filled = (f * 10.0).round() as usize;
            format!("{label} — {:.0}%\n{}{}", f * 100.0, "▰".repeat(filled), "▱".repeat(10 - filled))
        }
        None => label.to_string(),
    }
}

/// Loads a stored image and fits it to Discord's attachment limit.
async fn load_image(station: &Station, image: &ImageRef, name: &str) -> Result<FilePart, String> {
    let refused = |e: station_core::MediaServiceError| format!("image {name} cannot be sent to Discord: {e}");
    let (bytes, mime) = match image.inline_bytes() {
        Some(b) => station_core::media::fit_bytes(b, crate::ATTACHMENT_LIMITS).await.map_err(refused)?,
        None => {
            let (bytes, mime, _) =
                station.deliverable(&image.media_id, crate::ATTACHMENT_LIMITS).await.map_err(refused)?;
            (bytes, mime)
        }
    };
    Ok(FilePart { name: format!("{name}.{}", station_core::media::extension_for_mime(&mime)), mime, bytes })
}

/// Renders a view. `modals` keeps the specs of modal-opening buttons.
pub async fn render(station: &Station, view: &View, modals: &Modals) -> Rendered {
    let mut text: Vec<String> = vec![];
    let mut embeds: Vec<Value> = vec![];
    let mut files: Vec<FilePart> = vec![];
    let mut extra_buttons: Vec<Value> = vec![];
    let mut main_image: Option<String> = None;
    let mut images: Vec<(ImageRef, String)> = vec![];
    let mut omitted = 0usize;
    let mut add_image = |img: &ImageRef, name: String, images: &mut Vec<(ImageRef, String)>| {
        if images.len() < limits::FILES {
            images.push((img.clone(), name));
        } else {
            omitted += 1;
        }
    };
    for (bi, b) in view.blocks.iter().enumerate() {
        match b {
            Block::Text { text: t } => text.push(t.to_markdown()),
            Block::Image { image } => {
                if let Some(c) = &image.caption {
                    text.push(station_flows::view::escape_markdown(c));
                }
                add_image(image, format!("image-{bi}"), &mut images);
            }
            Block::Gallery { images: list } => {
                for (i, img) in list.iter().enumerate() {
                    add_image(img, format!("result-{}", i + 1), &mut images);
                }
            }
            Block::Progress { fraction, label, preview } => {
                text.push(progress_line(*fraction, &station_flows::view::escape_markdown(label)));
                if let Some(p) = preview {
                    let name = "preview".to_string();
                    add_image(p, name.clone(), &mut images);
                    main_image = Some(name);
                }
            }
            Block::Card { title, body, image, fields } => {
                let mut e = json!({"title": cut(title, 256, "·")});
                if let Some(b) = body {
                    e["description"] = json!(cut(&b.to_markdown(), limits::EMBED_DESCRIPTION, ""));
                }
                let fs: Vec<Value> = fields
                    .iter()
                    .take(limits::FIELDS)
                    .map(|f| json!({"name": cut(&f.name, 256, "·"), "value": cut(&f.value, 1024, "—"), "inline": f.inline}))
                    .collect();
                if !fs.is_empty() {
                    e["fields"] = json!(fs);
                }
                if let Some(img) = image {
                    let name = format!("card-{bi}");
                    add_image(img, name.clone(), &mut images);
                    e["image"] = json!({"url": format!("attachment://{name}")});
                }
                embeds.push(e);
            }
            Block::List { title, items, page, pages } => {
                let mut lines = vec![];
                if let Some(t) = title {
                    lines.push(format!("**{}**", station_flows::view::escape_markdown(t)));
                }
                for i in items {
                    let t = station_flows::view::escape_markdown(&i.title);
                    match &i.subtitle {
                        Some(s) => lines.push(format!("• {t} — {}", station_flows::view::escape_markdown(s))),
                        None => lines.push(format!("• {t}")),
                    }
                    extra_buttons.extend(i.button.as_ref().and_then(button_json));
                }
                if *pages > 1 {
                    lines.push(format!("*page {page} of {pages}*"));
                }
                text.push(lines.join("\n"));
            }
            Block::Grid { cells, .. } => {
                for (i, c) in cells.iter().enumerate() {
                    if let Some(img) = &c.image {
                        add_image(img, format!("cell-{}", i + 1), &mut images);
                    }
                    extra_buttons.extend(c.button.as_ref().and_then(button_json));
                }
                text.push(
                    cells
                        .iter()
                        .enumerate()
                        .map(|(i, c)| format!("{}. {}", i + 1, c.label))
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
            }
        }
    }
    if omitted > 0 {
        text.push(format!("*{omitted} more image(s) not shown: Discord allows 10 per message.*"));
    }
    for (img, name) in &images {
        match load_image(station, img, name).await {
            Ok(f) => {
                if main_image.as_deref() == Some(name.as_str()) {
                    main_image = Some(f.name.clone());
                }
                for e in &mut embeds {
                    if e["image"]["url"] == json!(format!("attachment://{name}")) {
                        e["image"]["url"] = json!(format!("attachment://{}", f.name));
                    }
                }
                files.push(f);
            }
            Err(e) => {
                tracing::warn!(error = %e, "image left out of a Discord message");
                text.push(format!("*An image could not be attached ({}).*", station_flows::view::escape_markdown(&e)));
            }
        }
    }
    // Input.
    let mut input_row: Option<Value> = None;
    if let Some(input) = &view.input {
        match &input.kind {
            InputKind::Choice { options } => {
                let opts: Vec<Value> = options
                    .iter()
                    .filter_map(|b| {
                        b.token().map(|t| json!({"label": cut(&b.label, 100, "·"), "value": cut(t, 100, "x")}))
                    })
                    .take(limits::SELECT_OPTIONS)
                    .collect();
                if !opts.is_empty() {
                    input_row = Some(json!({"type": 1, "components": [{
                        "type": 3, "custom_id": "s:choice", "placeholder": cut(&input.label, 150, "Choose"),
                        "options": opts, "min_values": 1, "max_values": 1,
                    }]}));
                }
                if options.len() > limits::SELECT_OPTIONS {
                    text.push(format!("*Showing the first {} choices.*", limits::SELECT_OPTIONS));
                }
            }
            InputKind::Text { .. } | InputKind::Number { .. } | InputKind::Form { .. } => {
                if let Some(spec) = modal_for(view) {
                    let key = modals.put(spec);
                    input_row = Some(json!({"type": 1, "components": [{
                        "type": 2, "style": 1, "label": cut(&format!("✏️ {}", input.label), 80, "✏️"), "custom_id": format!("m:{key}"),
                    }]}));
                }
            }
            InputKind::Image { .. } | InputKind::File => text.push(format!(
                "**{}**: run the command again with an image attached, or use *Apps → {}* on a message with an image.",
                station_flows::view::escape_markdown(&input.label),
                crate::commands::USE_IN_STATION
            )),
        }
    }
    // Main embed from the text, split within the description limit.
    let joined = text.join("\n\n");
    let mut main: Vec<Value> = if joined.trim().is_empty() {
        vec![]
    } else {
        split_text(&joined, limits::EMBED_DESCRIPTION).into_iter().map(|part| json!({"description": part})).collect()
    };
    if let Some(name) = &main_image {
        match main.first_mut() {
            Some(e) => e["image"] = json!({"url": format!("attachment://{name}")}),
            None => main.push(json!({"image": {"url": format!("attachment://{name}")}})),
        }
    }
    main.extend(embeds);
    let mut embeds = main;
    embeds.truncate(limits::EMBEDS);
    fit_embed_total(&mut embeds);
    // Components: the input first (so it is never cut), then the view's rows.
    let mut rows: Vec<Value> = input_row.into_iter().collect();
    for row in &view.buttons {
        rows.extend(rows_of(row.iter().filter_map(button_json).collect()));
    }
    rows.extend(rows_of(extra_buttons));
    rows.retain(|r| r["components"].as_array().is_some_and(|c| !c.is_empty()));
    if rows.len() > limits::ROWS {
        tracing::warn!(rows = rows.len(), "view has more button rows than Discord shows; extra rows dropped");
        rows.truncate(limits::ROWS);
    }
    let attachments: Vec<Value> = files.iter().enumerate().map(|(i, f)| json!({"id": i, "filename": f.name})).collect();
    let mut payload = json!({"content": "", "embeds": embeds, "components": rows, "attachments": attachments,
                             "allowed_mentions": {"parse": []}});
    if payload["embeds"].as_array().is_some_and(Vec::is_empty)
        && files.is_empty()
        && payload["components"].as_array().is_some_and(Vec::is_empty)
    {
        payload["content"] = json!("…");
    }
    Rendered { payload, files }
}

/// Shortens descriptions until all embeds together hold at most 6000 characters.
fn fit_embed_total(embeds: &mut Vec<Value>) {
    let len = |e: &Value| {
        e["description"].as_str().map(|s| s.chars().count()).unwrap_or(0)
            + e["title"].as_str().map(|s| s.chars().count()).unwrap_or(0)
            + e["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    f["name"].as_str().unwrap_or("").chars().count() + f["value"].as_str().unwrap_or("").chars().count()
                })
                .sum::<usize>()
    };
    while embeds.iter().map(len).sum::<usize>() > limits::EMBED_TOTAL {
        let over = embeds.iter().map(len).sum::<usize>() - limits::EMBED_TOTAL;
        let Some(last) = embeds.iter_mut().rev().find(|e| e["description"].as_str().is_some_and(|d| !d.is_empty()))
        else {
            embeds.pop();
            continue;
        };
        let d = last["description"].as_str().unwrap_or("").to_string();
        let keep = d.chars().count().saturating_sub(over + 1);
        if keep == 0 {
            last.as_object_mut().map(|o| o.remove("description"));
        } else {
            last["description"] = json!(cut(&d, keep + 1, "…"));
        }
        if len(last) == 0 && last.get("image").is_none() {
            embeds.retain(|e| len(e) > 0 || e.get("image").is_some());
        }
    }
}

/// A short text-only message (notes, errors).
pub fn note(text: &str, ephemeral: bool) -> Value {
    let mut v = json!({"content": cut(text, 2000, "…"), "allowed_mentions": {"parse": []}});
    if ephemeral {
        v["flags"] = json!(64);
    }
    v
}
