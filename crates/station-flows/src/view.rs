//! Platform-agnostic views: what a flow step shows.
//!
//! A [`View`] is a small component tree (text, images, progress, cards,
//! lists, grids), rows of [`Button`]s and at most one [`InputRequest`].
//! Flows build views; adapters render them within their platform's limits
//! (Telegram messages and inline keyboards, Discord embeds and components,
//! web HTML, terminal text). Buttons carry short opaque tokens that map to
//! server-side action records, so callback-data limits (Telegram: 64 bytes,
//! Discord: 100 characters) never matter.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest action token the engine mints; fits every platform's callback data.
pub const MAX_TOKEN_LEN: usize = 16;

/// What one message (or screen) shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// Content, top to bottom.
    pub blocks: Vec<Block>,
    /// Buttons grouped in rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<Vec<Button>>,
    /// What input the step waits for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputRequest>,
    /// Private to the asker: the view holds a secret that grants their
    /// account (a sign-in link, a link code) and must reach only the account
    /// it is for — never a group or a channel others read. Every adapter
    /// honours it (Telegram: a private chat, Discord: an ephemeral message);
    /// the delivery service refuses to hand it to an adapter that cannot
    /// deliver privately ([`crate::Platform::delivers_privately`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
    /// For the asker, though no secret: their balance, settings, history,
    /// help, refusals. Where a platform has messages only one person sees in
    /// a shared channel (Discord's ephemeral messages) it uses them; elsewhere
    /// it is an ordinary message of the conversation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub personal: bool,
}

/// One component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// Formatted text.
    Text {
        /// The text.
        text: Rich,
    },
    /// One image.
    Image {
        /// The image.
        image: ImageRef,
    },
    /// Several images shown together (a result set).
    Gallery {
        /// The images.
        images: Vec<ImageRef>,
    },
    /// Progress of a long operation.
    Progress {
        /// 0.0–1.0 when known.
        fraction: Option<f64>,
        /// What is happening ("Queued: 3 ahead", "Sampling 12/20").
        label: String,
        /// Latest preview image, when the backend sends one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preview: Option<ImageRef>,
    },
    /// A titled box with fields.
    Card {
        /// Title.
        title: String,
        /// Body text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<Rich>,
        /// Image shown with the card.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<ImageRef>,
        /// Name/value pairs.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        fields: Vec<Field>,
    },
    /// One page of a longer list.
    List {
        /// Title.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        /// Items on this page.
        items: Vec<ListItem>,
        /// 1-based page number.
        page: u32,
        /// Number of pages.
        pages: u32,
    },
    /// Images (or labels) in a grid, each optionally pressable.
    Grid {
        /// Columns per row.
        columns: u8,
        /// Cells.
        cells: Vec<GridCell>,
    },
}

/// A name/value pair on a card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
    /// Shown beside other inline fields when the platform can.
    #[serde(default)]
    pub inline: bool,
}

/// One list entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListItem {
    /// Main line.
    pub title: String,
    /// Second line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtitle: Option<String>,
    /// Pressing the item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button: Option<Button>,
}

/// One grid cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridCell {
    /// Picture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// Caption.
    pub label: String,
    /// Pressing the cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button: Option<Button>,
}

/// An image in a view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRef {
    /// Stored media id (results, uploads, thumbnails), or empty for inline data.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_id: String,
    /// MIME type.
    pub mime: String,
    /// Inline bytes (progress previews, which are not stored), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_base64: Option<String>,
    /// Caption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// Pixels, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Pixels, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

impl ImageRef {
    /// A stored media item.
    pub fn media(id: &str, mime: &str) -> ImageRef {
        ImageRef {
            media_id: id.to_string(),
            mime: mime.to_string(),
            inline_base64: None,
            caption: None,
            width: None,
            height: None,
        }
    }

    /// Inline bytes (previews).
    pub fn inline(mime: &str, data: &[u8]) -> ImageRef {
        use base64::Engine;
        ImageRef {
            media_id: String::new(),
            mime: mime.to_string(),
            inline_base64: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            caption: None,
            width: None,
            height: None,
        }
    }

    /// The inline bytes, if this is an inline image.
    pub fn inline_bytes(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        self.inline_base64.as_ref().and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
    }
}

/// A pressable button.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Button {
    /// Label.
    pub label: String,
    /// What pressing does.
    pub action: ButtonAction,
    /// Emphasis.
    #[serde(default)]
    pub style: ButtonStyle,
}

impl Button {
    /// A button that runs `action` with `args` in the flow that showed it.
    pub fn action(label: impl Into<String>, action: &str, args: Value) -> Button {
        Button {
            label: label.into(),
            action: ButtonAction::Pending(ActionSpec { name: action.to_string(), args }),
            style: ButtonStyle::Secondary,
        }
    }

    /// A link button.
    pub fn url(label: impl Into<String>, url: impl Into<String>) -> Button {
        Button { label: label.into(), action: ButtonAction::Url(url.into()), style: ButtonStyle::Link }
    }

    /// Same button, primary style.
    pub fn primary(mut self) -> Button {
        self.style = ButtonStyle::Primary;
        self
    }

    /// Same button, danger style.
    pub fn danger(mut self) -> Button {
        self.style = ButtonStyle::Danger;
        self
    }

    /// The minted token, once the engine has recorded the action.
    pub fn token(&self) -> Option<&str> {
        match &self.action {
            ButtonAction::Token(t) => Some(t),
            _ => None,
        }
    }
}

/// What a button does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonAction {
    /// Declared by a flow; the engine replaces it with a [`ButtonAction::Token`]
    /// before the view is stored or sent.
    Pending(ActionSpec),
    /// Opaque token of a stored action record (what adapters put in callback data).
    Token(String),
    /// Opens a link.
    Url(String),
}

/// An action as a flow declares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionSpec {
    /// Action name, meaningful to the flow (`rerun`, `page`, `choose`).
    pub name: String,
    /// Arguments.
    #[serde(default)]
    pub args: Value,
}

/// Button emphasis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonStyle {
    /// The suggested action.
    Primary,
    /// Ordinary.
    #[default]
    Secondary,
    /// Destructive (cancel, delete).
    Danger,
    /// Opens a link.
    Link,
}

/// The input a step waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRequest {
    /// What is asked, as a label ("Prompt", "Width").
    pub label: String,
    /// The kind of input.
    pub kind: InputKind,
}

/// Kinds of input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputKind {
    /// Free text.
    Text {
        /// Hint shown in an empty field.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        placeholder: Option<String>,
        /// Several lines expected.
        #[serde(default)]
        multiline: bool,
        /// Longest accepted text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_len: Option<u32>,
    },
    /// A number.
    Number {
        /// Smallest.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        /// Largest.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
        /// Step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<f64>,
        /// Whole numbers only.
        #[serde(default)]
        integer: bool,
    },
    /// One of some options (rendered as buttons or a select menu; typing the
    /// value works too).
    Choice {
        /// The options; each option's button carries its token.
        options: Vec<Button>,
    },
    /// One or more images.
    Image {
        /// Fewest accepted.
        min: u32,
        /// Most accepted.
        max: u32,
    },
    /// A file.
    File,
    /// Several fields at once (web forms, Discord modals).
    Form {
        /// Fields.
        fields: Vec<FormField>,
    },
}

/// One field of a form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormField {
    /// Parameter name sent back.
    pub name: String,
    /// Label.
    pub label: String,
    /// The field's kind (never a nested form).
    pub kind: InputKind,
    /// Must be filled.
    #[serde(default)]
    pub required: bool,
    /// Current value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// Text with simple formatting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rich(pub Vec<Span>);

/// A run of text in one style.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// The text.
    pub text: String,
    /// Its style.
    #[serde(default, skip_serializing_if = "is_plain")]
    pub style: Style,
}

fn is_plain(s: &Style) -> bool {
    *s == Style::Plain
}

/// Text styles every platform can show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// Plain.
    #[default]
    Plain,
    /// Bold.
    Bold,
    /// Italic.
    Italic,
    /// Monospace.
    Code,
    /// A link to the URL.
    Link(String),
}

impl Rich {
    /// Plain text.
    pub fn plain(text: impl Into<String>) -> Rich {
        Rich(vec![Span { text: text.into(), style: Style::Plain }])
    }

    /// Appends plain text.
    pub fn text(mut self, text: impl Into<String>) -> Rich {
        self.0.push(Span { text: text.into(), style: Style::Plain });
        self
    }

    /// Appends bold text.
    pub fn bold(mut self, text: impl Into<String>) -> Rich {
        self.0.push(Span { text: text.into(), style: Style::Bold });
        self
    }

    /// Appends italic text.
    pub fn italic(mut self, text: impl Into<String>) -> Rich {
        self.0.push(Span { text: text.into(), style: Style::Italic });
        self
    }

    /// Appends monospace text.
    pub fn code(mut self, text: impl Into<String>) -> Rich {
        self.0.push(Span { text: text.into(), style: Style::Code });
        self
    }

    /// Appends a link.
    pub fn link(mut self, text: impl Into<String>, url: impl Into<String>) -> Rich {
        self.0.push(Span { text: text.into(), style: Style::Link(url.into()) });
        self
    }

    /// The text without formatting.
    pub fn to_plain(&self) -> String {
        self.0
            .iter()
            .map(|s| match &s.style {
                Style::Link(url) if url != &s.text => format!("{} ({url})", s.text),
                _ => s.text.clone(),
            })
            .collect()
    }

    /// Telegram's HTML parse mode (`<b>`, `<i>`, `<code>`, `<a>`), escaped.
    pub fn to_html(&self) -> String {
        self.0
            .iter()
            .map(|s| {
                let t = escape_html(&s.text);
                match &s.style {
                    Style::Plain => t,
                    Style::Bold => format!("<b>{t}</b>"),
                    Style::Italic => format!("<i>{t}</i>"),
                    Style::Code => format!("<code>{t}</code>"),
                    Style::Link(url) => format!("<a href=\"{}\">{t}</a>", escape_html(url)),
                }
            })
            .collect()
    }

    /// Markdown as Discord renders it, with markup characters in the text escaped.
    pub fn to_markdown(&self) -> String {
        self.0
            .iter()
            .map(|s| match &s.style {
                Style::Plain => escape_markdown(&s.text),
                Style::Bold => format!("**{}**", escape_markdown(&s.text)),
                Style::Italic => format!("*{}*", escape_markdown(&s.text)),
                Style::Code => format!("`{}`", s.text.replace('`', "'")),
                Style::Link(url) => format!("[{}]({url})", escape_markdown(&s.text)),
            })
            .collect()
    }
}

/// Escapes `<`, `>`, `&` and `"` for HTML.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// A number of points in words: "1 point", "2 points", "-1 point".
pub fn points(n: i64) -> String {
    if n.unsigned_abs() == 1 { format!("{n} point") } else { format!("{n} points") }
}

/// `text` cut to at most `max` characters (whole characters, control
/// characters shown as spaces), with "…" when something was cut.
pub fn excerpt(text: &str, max: usize) -> String {
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let clean = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    if clean.chars().count() <= max {
        clean
    } else {
        let cut: String = clean.chars().take(max.saturating_sub(1)).collect();
        format!("{}…", cut.trim_end())
    }
}

/// Escapes Discord markdown characters.
pub fn escape_markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '_' | '`' | '~' | '|' | '\\' | '>' | '[' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl View {
    /// A view of one text block.
    pub fn text(text: impl Into<Rich>) -> View {
        View { blocks: vec![Block::Text { text: text.into() }], ..Default::default() }
    }

    /// The same view, private to the account it is for (see [`View::private`]).
    pub fn private(mut self) -> View {
        self.private = true;
        self
    }

    /// The same view, for its asker's eyes where the platform can do that
    /// without a private chat (see [`View::personal`]).
    pub fn personal(mut self) -> View {
        self.personal = true;
        self
    }

    /// Appends a block.
    pub fn block(mut self, b: Block) -> View {
        self.blocks.push(b);
        self
    }

    /// Appends a text block.
    pub fn with_text(self, text: impl Into<Rich>) -> View {
        self.block(Block::Text { text: text.into() })
    }

    /// Appends a row of buttons (empty rows are skipped).
    pub fn row(mut self, row: Vec<Button>) -> View {
        if !row.is_empty() {
            self.buttons.push(row);
        }
        self
    }

    /// Sets the input the step waits for.
    pub fn ask(mut self, label: impl Into<String>, kind: InputKind) -> View {
        self.input = Some(InputRequest { label: label.into(), kind });
        self
    }

    /// Every button in the view (rows, list items, grid cells, choice options).
    pub fn buttons_mut(&mut self) -> Vec<&mut Button> {
        let mut out: Vec<&mut Button> = vec![];
        for b in &mut self.blocks {
            match b {
                Block::List { items, .. } => out.extend(items.iter_mut().filter_map(|i| i.button.as_mut())),
                Block::Grid { cells, .. } => out.extend(cells.iter_mut().filter_map(|c| c.button.as_mut())),
                _ => {}
            }
        }
        for row in &mut self.buttons {
            out.extend(row.iter_mut());
        }
        if let Some(InputRequest { kind: InputKind::Choice { options }, .. }) = &mut self.input {
            out.extend(options.iter_mut());
        }
        out
    }

    /// The view as it stays in the chat once its step is over: the same
    /// content with no buttons to press (links aside) and no input asked.
    pub fn without_buttons(&self) -> View {
        let mut v = self.clone();
        for b in &mut v.blocks {
            match b {
                Block::List { items, .. } => items.iter_mut().for_each(|i| i.button = None),
                Block::Grid { cells, .. } => cells.iter_mut().for_each(|c| c.button = None),
                _ => {}
            }
        }
        for row in &mut v.buttons {
            row.retain(|b| matches!(b.action, ButtonAction::Url(_)));
        }
        v.buttons.retain(|r| !r.is_empty());
        v.input = None;
        v
    }

    /// Every button, read-only, in the same order as [`View::buttons_mut`].
    pub fn all_buttons(&self) -> Vec<&Button> {
        let mut out: Vec<&Button> = vec![];
        for b in &self.blocks {
            match b {
                Block::List { items, .. } => out.extend(items.iter().filter_map(|i| i.button.as_ref())),
                Block::Grid { cells, .. } => out.extend(cells.iter().filter_map(|c| c.button.as_ref())),
                _ => {}
            }
        }
        for row in &self.buttons {
            out.extend(row.iter());
        }
        if let Some(InputRequest { kind: InputKind::Choice { options }, .. }) = &self.input {
            out.extend(options.iter());
        }
        out
    }

    /// The view's text without formatting (tests, logs, plain renderers).
    pub fn plain_text(&self) -> String {
        let mut out = vec![];
        for b in &self.blocks {
            match b {
                Block::Text { text } => out.push(text.to_plain()),
                Block::Progress { fraction, label, .. } => match fraction {
                    Some(f) => out.push(format!("{label} ({:.0}%)", f * 100.0)),
                    None => out.push(label.clone()),
                },
                Block::Card { title, body, fields, .. } => {
                    out.push(title.clone());
                    if let Some(b) = body {
                        out.push(b.to_plain());
                    }
                    for f in fields {
                        out.push(format!("{}: {}", f.name, f.value));
                    }
                }
                Block::List { title, items, page, pages } => {
                    if let Some(t) = title {
                        out.push(t.clone());
                    }
                    for i in items {
                        match &i.subtitle {
                            Some(s) => out.push(format!("• {} — {s}", i.title)),
                            None => out.push(format!("• {}", i.title)),
                        }
                    }
                    if *pages > 1 {
                        out.push(format!("page {page} of {pages}"));
                    }
                }
                Block::Image { image } => out.extend(image.caption.clone()),
                Block::Gallery { images } => out.extend(images.iter().filter_map(|i| i.caption.clone())),
                Block::Grid { cells, .. } => out.extend(cells.iter().map(|c| c.label.clone())),
            }
        }
        if let Some(i) = &self.input {
            out.push(i.label.clone());
        }
        out.join("\n")
    }

    /// Media ids of every stored image in the view, in order.
    pub fn media_ids(&self) -> Vec<String> {
        let mut out = vec![];
        let mut push = |i: &ImageRef| {
            if !i.media_id.is_empty() {
                out.push(i.media_id.clone());
            }
        };
        for b in &self.blocks {
            match b {
                Block::Image { image } => push(image),
                Block::Gallery { images } => images.iter().for_each(&mut push),
                Block::Card { image: Some(i), .. } => push(i),
                Block::Progress { preview: Some(i), .. } if !i.media_id.is_empty() => push(i),
                Block::Grid { cells, .. } => cells.iter().filter_map(|c| c.image.as_ref()).for_each(&mut push),
                _ => {}
            }
        }
        out
    }
}

impl From<&str> for Rich {
    fn from(s: &str) -> Rich {
        Rich::plain(s)
    }
}

impl From<String> for Rich {
    fn from(s: String) -> Rich {
        Rich::plain(s)
    }
}

/// Splits text into pieces of at most `max` characters, preferring line
/// breaks, then spaces (Telegram: 4096 per message, 1024 per caption;
/// Discord: 2000 per message, 4096 per embed description).
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    assert!(max > 0, "split_text needs a positive limit");
    let mut out = vec![];
    let mut rest: &str = text;
    while rest.chars().count() > max {
        let cut_byte = rest.char_indices().nth(max).map(|(i, _)| i).unwrap_or(rest.len());
        let head = &rest[..cut_byte];
        let split = head.rfind('\n').or_else(|| head.rfind(' ')).filter(|&i| i > 0).unwrap_or(cut_byte);
        out.push(rest[..split].to_string());
        rest = rest[split..].trim_start_matches(['\n', ' ']);
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_and_markdown_escape_user_text() {
        let r = Rich::plain("a<b> & ").bold("*x*").link("site", "https://e.x/?a=1&b=2");
        assert_eq!(r.to_html(), "a&lt;b&gt; &amp; <b>*x*</b><a href=\"https://e.x/?a=1&amp;b=2\">site</a>");
        assert_eq!(r.to_markdown(), "a<b\\> & **\\*x\\***[site](https://e.x/?a=1&b=2)");
        assert_eq!(r.to_plain(), "a<b> & *x*site (https://e.x/?a=1&b=2)");
    }

    #[test]
    fn split_text_respects_limits_and_prefers_line_breaks() {
        let text = format!("{}\n{}", "a".repeat(10), "b".repeat(10));
        assert_eq!(split_text(&text, 15), vec!["a".repeat(10), "b".repeat(10)]);
        let long = "x".repeat(9000);
        let parts = split_text(&long, 4096);
        assert_eq!(parts.iter().map(|p| p.chars().count()).collect::<Vec<_>>(), vec![4096, 4096, 808]);
        let multibyte = "é".repeat(5000);
        let parts = split_text(&multibyte, 4096);
        assert_eq!(parts.concat(), multibyte);
        assert!(parts.iter().all(|p| p.chars().count() <= 4096));
        assert_eq!(split_text("", 10), vec![String::new()]);
    }

    #[test]
    fn views_round_trip_through_json() {
        let v = View::text(Rich::plain("hi").bold("there"))
            .block(Block::Progress { fraction: Some(0.5), label: "Sampling".into(), preview: None })
            .row(vec![Button::action("Rerun", "rerun", serde_json::json!({"job": "j1"})).primary()])
            .ask("Prompt", InputKind::Text { placeholder: None, multiline: true, max_len: Some(2000) });
        let json = serde_json::to_string(&v).unwrap();
        let back: View = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
        assert_eq!(back.plain_text(), "hithere\nSampling (50%)\nPrompt");
    }
}
