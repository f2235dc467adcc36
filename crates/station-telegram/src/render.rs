//! Views as Telegram shows them: HTML text (split at 4096 characters on line
//! boundaries so markup never breaks), captions of at most 1024 characters,
//! inline keyboards whose callback data is the action token, and the images
//! a view carries. Pure: no I/O.

use serde_json::{Value, json};
use station_flows::view::{Block, ButtonAction, GridCell, InputKind, Span, split_text};
use station_flows::{Button, ImageRef, Rich, View};

/// Longest message text (UTF-16 code units after entity parsing).
pub const TEXT_LIMIT: usize = 4096;
/// Longest caption.
pub const CAPTION_LIMIT: usize = 1024;
/// Longest callback data, in bytes.
pub const CALLBACK_LIMIT: usize = 64;
/// Most items in one album.
pub const ALBUM_LIMIT: usize = 10;

/// A view ready to send: text pieces, images and a keyboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// HTML pieces, each within [`TEXT_LIMIT`] shown characters.
    pub texts: Vec<String>,
    /// All the text as one HTML string (for captions and edits), with its shown length.
    pub html: String,
    /// Shown length of `html` in UTF-16 code units.
    pub shown_len: usize,
    /// Images to show, in order.
    pub images: Vec<ImageRef>,
    /// `reply_markup` with the inline keyboard, if the view has buttons.
    pub keyboard: Option<Value>,
}

impl Rendered {
    /// The HTML as a caption, if it fits one.
    pub fn caption(&self) -> Option<&str> {
        (self.shown_len <= CAPTION_LIMIT).then_some(self.html.as_str())
    }

    /// The HTML cut to fit `limit` shown characters (edits are one message).
    pub fn truncated(&self, limit: usize) -> String {
        if self.shown_len <= limit {
            return self.html.clone();
        }
        let mut out = self.texts.first().cloned().unwrap_or_default();
        if utf16(&strip(&out)) > limit {
            out = escape(&split_text(&strip(&out), limit.saturating_sub(1))[0]);
        }
        out
    }
}

fn utf16(s: &str) -> usize {
    s.encode_utf16().count()
}

fn escape(s: &str) -> String {
    station_flows::view::escape_html(s)
}

/// The shown text of our own HTML (tags removed, entities decoded).
fn strip(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&")
}

/// One line of text: its HTML and shown length.
struct Line {
    html: String,
    plain: String,
}

fn rich_lines(r: &Rich) -> Vec<Line> {
    let mut lines: Vec<Vec<Span>> = vec![vec![]];
    for span in &r.0 {
        for (i, part) in span.text.split('\n').enumerate() {
            if i > 0 {
                lines.push(vec![]);
            }
            if !part.is_empty() {
                lines.last_mut().expect("one line").push(Span { text: part.to_string(), style: span.style.clone() });
            }
        }
    }
    lines
        .into_iter()
        .map(|spans| {
            let r = Rich(spans);
            Line { html: r.to_html(), plain: r.to_plain() }
        })
        .collect()
}

fn plain_line(text: &str) -> Line {
    Line { html: escape(text), plain: text.to_string() }
}

fn bold_line(text: &str) -> Line {
    Line { html: format!("<b>{}</b>", escape(text)), plain: text.to_string() }
}

fn progress_bar(fraction: f64) -> String {
    let f = fraction.clamp(0.0, 1.0);
    let filled = (f * 10.0).round() as usize;
    format!("{}{} {:.0}%", "▰".repeat(filled), "▱".repeat(10 - filled), f * 100.0)
}

/// Renders a view.
pub fn render(view: &View) -> Rendered {
    let mut lines: Vec<Line> = vec![];
    let mut images: Vec<ImageRef> = vec![];
    let mut rows: Vec<Vec<Value>> = vec![];
    let gap = |lines: &mut Vec<Line>| {
        if !lines.is_empty() {
            lines.push(plain_line(""));
        }
    };
    for b in &view.blocks {
        match b {
            Block::Text { text } => {
                gap(&mut lines);
                lines.extend(rich_lines(text));
            }
            Block::Image { image } => {
                images.push(image.clone());
                if let Some(c) = &image.caption {
                    gap(&mut lines);
                    lines.push(plain_line(c));
                }
            }
            Block::Gallery { images: list } => images.extend(list.iter().cloned()),
            Block::Progress { fraction, label, preview } => {
                gap(&mut lines);
                lines.push(bold_line(label));
                if let Some(f) = fraction {
                    lines.push(plain_line(&progress_bar(*f)));
                }
                if let Some(p) = preview {
                    images.push(p.clone());
                }
            }
            Block::Card { title, body, image, fields } => {
                gap(&mut lines);
                lines.push(bold_line(title));
                if let Some(body) = body {
                    lines.extend(rich_lines(body));
                }
                for f in fields {
                    lines.push(Line {
                        html: format!("<b>{}:</b> {}", escape(&f.name), escape(&f.value)),
                        plain: format!("{}: {}", f.name, f.value),
                    });
                }
                if let Some(i) = image {
                    images.push(i.clone());
                }
            }
            Block::List { title, items, page, pages } => {
                gap(&mut lines);
                if let Some(t) = title {
                    lines.push(bold_line(t));
                }
                for i in items {
                    let text = match &i.subtitle {
                        Some(s) => format!("• {} — {s}", i.title),
                        None => format!("• {}", i.title),
                    };
                    lines.push(plain_line(&text));
                    if let Some(b) = &i.button {
                        rows.extend(button(b).map(|b| vec![b]));
                    }
                }
                if *pages > 1 {
                    lines.push(Line {
                        html: format!("<i>page {page} of {pages}</i>"),
                        plain: format!("page {page} of {pages}"),
                    });
                }
            }
            Block::Grid { columns, cells } => {
                let cols = (*columns).clamp(1, 8) as usize;
                let mut row = vec![];
                for GridCell { image, label, button: b } in cells {
                    if let Some(i) = image {
                        images.push(i.clone());
                    }
                    match b.as_ref().and_then(|b| button_with_label(b, label)) {
                        Some(btn) => row.push(btn),
                        None => {
                            gap(&mut lines);
                            lines.push(plain_line(label));
                        }
                    }
                    if row.len() == cols {
                        rows.push(std::mem::take(&mut row));
                    }
                }
                if !row.is_empty() {
                    rows.push(row);
                }
            }
        }
    }
    for r in &view.buttons {
        let row: Vec<Value> = r.iter().filter_map(button).collect();
        if !row.is_empty() {
            rows.push(row);
        }
    }
    if let Some(input) = &view.input {
        match &input.kind {
            InputKind::Choice { options } => {
                for chunk in options.chunks(2) {
                    let row: Vec<Value> = chunk.iter().filter_map(button).collect();
                    if !row.is_empty() {
                        rows.push(row);
                    }
                }
            }
            kind => {
                let hint = match kind {
                    InputKind::Image { .. } => format!("{}: send a photo.", input.label),
                    InputKind::File => format!("{}: send a file.", input.label),
                    _ => format!("{}: send it as a message.", input.label),
                };
                gap(&mut lines);
                lines.push(Line { html: format!("<i>{}</i>", escape(&hint)), plain: hint });
            }
        }
    }
    let texts = pack(&lines, TEXT_LIMIT);
    let html = lines.iter().map(|l| l.html.as_str()).collect::<Vec<_>>().join("\n");
    let shown_len = utf16(&lines.iter().map(|l| l.plain.as_str()).collect::<Vec<_>>().join("\n"));
    let keyboard = (!rows.is_empty()).then(|| json!({"inline_keyboard": rows}));
    Rendered { texts, html, shown_len, images, keyboard }
}

/// Packs lines into messages of at most `limit` shown characters, splitting
/// a line that is too long on its own as plain text.
fn pack(lines: &[Line], limit: usize) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let mut cur_html = String::new();
    let mut cur_len = 0usize;
    let flush = |out: &mut Vec<String>, html: &mut String, len: &mut usize| {
        let trimmed = html.trim_end_matches('\n').to_string();
        if !strip(&trimmed).trim().is_empty() {
            out.push(trimmed);
        }
        html.clear();
        *len = 0;
    };
    for line in lines {
        let len = utf16(&line.plain);
        if len > limit {
            flush(&mut out, &mut cur_html, &mut cur_len);
            // split_text counts chars; shrink until every piece fits in UTF-16 units.
            let mut max = limit;
            loop {
                let parts = split_text(&line.plain, max);
                if parts.iter().all(|p| utf16(p) <= limit) {
                    out.extend(parts.iter().filter(|p| !p.trim().is_empty()).map(|p| escape(p)));
                    break;
                }
                max = max * 3 / 4;
            }
            continue;
        }
        let extra = if cur_html.is_empty() { len } else { len + 1 };
        if cur_len + extra > limit {
            flush(&mut out, &mut cur_html, &mut cur_len);
        }
        if !cur_html.is_empty() {
            cur_html.push('\n');
            cur_len += 1;
        }
        cur_html.push_str(&line.html);
        cur_len += len;
    }
    flush(&mut out, &mut cur_html, &mut cur_len);
    out
}

fn button(b: &Button) -> Option<Value> {
    button_with_label(b, &b.label)
}

fn button_with_label(b: &Button, label: &str) -> Option<Value> {
    let text: String = label.chars().take(64).collect();
    let text = if text.trim().is_empty() { "·".to_string() } else { text };
    match &b.action {
        ButtonAction::Token(t) if !t.is_empty() && t.len() <= CALLBACK_LIMIT => {
            Some(json!({"text": text, "callback_data": t}))
        }
        ButtonAction::Token(t) => {
            tracing::warn!(
                len = t.len(),
                "a button token does not fit Telegram's 64-byte callback data; button left out"
            );
            None
        }
        ButtonAction::Url(u) if u.starts_with("http://") || u.starts_with("https://") => {
            Some(json!({"text": text, "url": u}))
        }
        ButtonAction::Url(_) | ButtonAction::Pending(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use station_flows::view::{Field, ListItem};

    fn token_button(label: &str, token: &str) -> Button {
        Button { label: label.into(), action: ButtonAction::Token(token.into()), style: Default::default() }
    }

    #[test]
    fn long_text_splits_on_lines_and_keeps_markup_whole() {
        let mut r = Rich::default();
        for i in 0..400 {
            r = r.bold(format!("line {i}")).text(format!(": {}\n", "x".repeat(20)));
        }
        let out = render(&View::text(r));
        assert!(out.texts.len() >= 3);
        for t in &out.texts {
            let shown = strip(t);
            assert!(utf16(&shown) <= TEXT_LIMIT);
            assert_eq!(t.matches("<b>").count(), t.matches("</b>").count(), "markup split: {t}");
        }
        // One unbroken line longer than a message.
        let out = render(&View::text("😀".repeat(5000)));
        assert!(out.texts.iter().all(|t| utf16(t) <= TEXT_LIMIT));
        assert_eq!(out.texts.concat().chars().count(), 5000);
    }

    #[test]
    fn keyboards_cards_lists_progress_and_input() {
        let view = View::default()
            .block(Block::Card {
                title: "Job <1>".into(),
                body: None,
                image: None,
                fields: vec![Field { name: "Seed".into(), value: "42".into(), inline: true }],
            })
            .block(Block::List {
                title: Some("History".into()),
                items: vec![ListItem { title: "a".into(), subtitle: None, button: Some(token_button("Open a", "t1")) }],
                page: 1,
                pages: 3,
            })
            .block(Block::Progress { fraction: Some(0.5), label: "Sampling".into(), preview: None })
            .row(vec![
                token_button("Rerun", "t2"),
                Button::url("Site", "https://e.x"),
                token_button("Bad", &"x".repeat(65)),
            ])
            .ask("Prompt", InputKind::Text { placeholder: None, multiline: false, max_len: None });
        let out = render(&view);
        assert!(out.html.contains("<b>Job &lt;1&gt;</b>"));
        assert!(out.html.contains("<b>Seed:</b> 42"));
        assert!(out.html.contains("▰▰▰▰▰▱▱▱▱▱ 50%"));
        assert!(out.html.contains("<i>page 1 of 3</i>"));
        assert!(out.html.contains("<i>Prompt: send it as a message.</i>"));
        let kb = out.keyboard.clone().unwrap();
        assert_eq!(kb["inline_keyboard"][0][0]["callback_data"], json!("t1"));
        assert_eq!(kb["inline_keyboard"][1].as_array().unwrap().len(), 2, "the over-long token is left out");
        assert_eq!(kb["inline_keyboard"][1][1]["url"], json!("https://e.x"));
        assert!(out.caption().is_some());
    }

    #[test]
    fn images_and_long_captions() {
        let img = ImageRef::media("m1", "image/png");
        let view = View::default().block(Block::Gallery { images: vec![img.clone(), img.clone()] });
        let out = render(&view);
        assert_eq!(out.images.len(), 2);
        assert!(out.texts.is_empty());
        let view = View::text("y".repeat(1500)).block(Block::Image { image: img });
        let out = render(&view);
        assert!(out.caption().is_none(), "1500 characters do not fit a caption");
        assert_eq!(out.truncated(CAPTION_LIMIT).chars().count(), CAPTION_LIMIT - 1);
    }
}
