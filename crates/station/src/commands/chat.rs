//! `station chat`: the conversation flows in a terminal, as a local account.
//!
//! A full platform adapter: views print as text, images are saved to files
//! (their paths shown), buttons are numbered choices shown as `[#3]`. Input
//! lines are commands (`/make`, `/dream a fox`), `#N` (press button N),
//! `@PATH` (send an image; `/upscale @photo.png` sends it with a command) or
//! text — a typed number is text (the value asked for), never a button.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::Map;
use station_core::{Station, Workers};
use station_flows::view::{Block, ImageRef, InputKind};
use station_flows::{Conversation, DeliveryKind, FlowSettings, Flows, Input, Outcome, Outgoing, Platform, View};
use tokio::io::AsyncBufReadExt;

use crate::cli::ChatArgs;
use crate::exit;

/// Prints views to stdout and numbers their buttons.
struct Terminal {
    station: Station,
    out_dir: PathBuf,
    state: Mutex<TermState>,
}

#[derive(Default)]
struct TermState {
    /// Button number → token.
    buttons: HashMap<usize, String>,
    next_button: usize,
    next_message: u64,
    /// What each message last printed: an edit that changes nothing prints nothing.
    printed: HashMap<String, String>,
}

impl Terminal {
    fn save_image(&self, image: &ImageRef, bytes: &[u8]) -> String {
        let ext = station_core::media::extension_for_mime(&image.mime);
        let name = if image.media_id.is_empty() { "preview".to_string() } else { image.media_id.clone() };
        let path = self.out_dir.join(format!("{name}.{ext}"));
        match std::fs::create_dir_all(&self.out_dir).and_then(|_| std::fs::write(&path, bytes)) {
            Ok(()) => path.display().to_string(),
            Err(e) => format!("(could not save {}: {e})", path.display()),
        }
    }

    async fn image_line(&self, image: &ImageRef) -> String {
        let bytes = match image.inline_bytes() {
            Some(b) => Some(b),
            None => self.station.media.get(&image.media_id, None).await.ok().map(|(_, b)| b),
        };
        let path = match bytes {
            Some(b) => self.save_image(image, &b),
            None => format!("(image {} unavailable)", image.media_id),
        };
        let size = match (image.width, image.height) {
            (Some(w), Some(h)) => format!(" {w}×{h}"),
            _ => String::new(),
        };
        match &image.caption {
            Some(c) => format!("🖼 {path}{size} — {c}"),
            None => format!("🖼 {path}{size}"),
        }
    }

    async fn render(&self, view: &View, kind: DeliveryKind) -> String {
        let mut lines = vec![];
        for b in &view.blocks {
            match b {
                Block::Text { text } => lines.push(text.to_plain()),
                Block::Image { image } => lines.push(self.image_line(image).await),
                Block::Gallery { images } => {
                    for i in images {
                        lines.push(self.image_line(i).await);
                    }
                }
                Block::Progress { fraction, label, preview } => {
                    let bar = match fraction {
                        Some(f) => {
                            let filled = (f.clamp(0.0, 1.0) * 20.0).round() as usize;
                            format!("[{}{}] {:>3.0}% ", "=".repeat(filled), " ".repeat(20 - filled), f * 100.0)
                        }
                        None => "[ … ] ".to_string(),
                    };
                    lines.push(format!("⏳ {bar}{label}"));
                    if let Some(p) = preview
                        && kind == DeliveryKind::Progress
                    {
                        lines.push(format!("   preview: {}", self.image_line(p).await));
                    }
                }
                Block::Card { title, body, image, fields } => {
                    lines.push(format!("── {title} ──"));
                    if let Some(b) = body {
                        lines.push(b.to_plain());
                    }
                    if let Some(i) = image {
                        lines.push(self.image_line(i).await);
                    }
                    for f in fields {
                        lines.push(format!("  {}: {}", f.name, f.value));
                    }
                }
                Block::List { title, items, page, pages } => {
                    if let Some(t) = title {
                        lines.push(t.clone());
                    }
                    for i in items {
                        lines.push(format!(
                            "  • {}{}",
                            i.title,
                            i.subtitle.as_ref().map(|s| format!(" — {s}")).unwrap_or_default()
                        ));
                    }
                    if *pages > 1 {
                        lines.push(format!("  page {page} of {pages}"));
                    }
                }
                Block::Grid { cells, .. } => {
                    for c in cells {
                        match &c.image {
                            Some(i) => lines.push(format!("  {} {}", c.label, self.image_line(i).await)),
                            None => lines.push(format!("  {}", c.label)),
                        }
                    }
                }
            }
        }
        let mut state = self.state.lock().expect("terminal state");
        let mut choices = vec![];
        for b in view.all_buttons() {
            match &b.action {
                station_flows::ButtonAction::Token(t) => {
                    state.next_button += 1;
                    let n = state.next_button;
                    state.buttons.insert(n, t.clone());
                    choices.push(format!("[#{n}] {}", b.label));
                }
                station_flows::ButtonAction::Url(u) => choices.push(format!("{}: {u}", b.label)),
                station_flows::ButtonAction::Pending(_) => {}
            }
        }
        if !choices.is_empty() {
            lines.push(choices.join("  "));
        }
        if let Some(input) = &view.input {
            let hint = match &input.kind {
                InputKind::Text { .. } => "type it",
                InputKind::Number { .. } => "type a number",
                InputKind::Choice { .. } => "press #N, or type the value",
                InputKind::Image { .. } => "send @PATH to an image",
                InputKind::File => "send @PATH",
                InputKind::Form { .. } => "send name=value lines",
            };
            lines.push(format!("› {} ({hint})", input.label));
        }
        lines.join("\n")
    }
}

#[async_trait::async_trait]
impl Platform for Terminal {
    fn name(&self) -> &str {
        "terminal"
    }

    /// Typed lines; pictures are file paths.
    fn style(&self) -> station_flows::ChatStyle {
        station_flows::ChatStyle::Terminal
    }

    /// Only the person at the terminal reads it.
    fn delivers_privately(&self) -> bool {
        true
    }

    async fn deliver(&self, _conversation: &Conversation, out: &Outgoing) -> Outcome {
        let message_ref = {
            let mut s = self.state.lock().expect("terminal state");
            s.next_message += 1;
            out.replace.clone().unwrap_or_else(|| format!("t{}", s.next_message))
        };
        if out.kind == DeliveryKind::Progress && out.view.all_buttons().is_empty() && out.replace.is_some() {
            // The job ended: its result (or failure) is the next message; a
            // last "100 %" line above it would only repeat it.
            return Outcome::Sent { message_ref: Some(message_ref) };
        }
        {
            let mut s = self.state.lock().expect("terminal state");
            // Progress prints once per change: an edit showing what is on
            // screen already (fresh button tokens aside) prints nothing.
            let labels: Vec<&str> = out.view.all_buttons().iter().map(|b| b.label.as_str()).collect();
            let key = format!("{}\n{}", out.view.plain_text(), labels.join("|"));
            if s.printed.get(&message_ref) == Some(&key) {
                return Outcome::Sent { message_ref: Some(message_ref) };
            }
            s.printed.insert(message_ref.clone(), key);
        }
        let text = self.render(&out.view, out.kind).await;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "\n{text}");
        let _ = stdout.flush();
        Outcome::Sent { message_ref: Some(message_ref) }
    }
}

/// Runs the terminal chat until EOF or `/quit`.
pub async fn run(station: &Station, args: ChatArgs) -> u8 {
    let user = super::local_user(args.user);
    let account = match station.account("local", &user, &user).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::UNAVAILABLE;
        }
    };
    // Without a server on this database, this process runs the jobs itself.
    let embedded = match super::server_on_address(station).await {
        super::ServerOnAddress::Same => None,
        super::ServerOnAddress::Other(theirs) => return super::other_server(station, theirs.as_deref()),
        super::ServerOnAddress::Nobody => {
            let background = super::wire::register_executors(station, true).await;
            Some((Workers::start(station), background))
        }
    };
    let settings = FlowSettings::from_config(&station.config);
    let flows = Flows::with_settings(station.clone(), settings);
    let terminal = Arc::new(Terminal { station: station.clone(), out_dir: args.out, state: Default::default() });
    flows.add_platform(terminal.clone());
    let runner = flows.start();
    // One conversation per local user, so a restarted chat resumes where it was.
    let conv = Conversation::new("terminal", &user);
    println!(
        "Station chat as {user}. Commands: /make, /help, /status, /history, /settings, /quit. Type #3 to press \
         button [#3]; @photo.png sends a picture."
    );
    // A resumed chat asks its open question again, with buttons that work.
    if let Err(e) = flows.show_open_step(&account, &conv).await {
        println!("⚠ {e}");
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let code = loop {
        let line = tokio::select! {
            l = lines.next_line() => l,
            _ = tokio::signal::ctrl_c() => break exit::INTERRUPTED,
        };
        let line = match line {
            Ok(Some(l)) => l.trim().to_string(),
            Ok(None) => break exit::OK,
            Err(e) => {
                eprintln!("error: cannot read input: {e}");
                break exit::UNAVAILABLE;
            }
        };
        if line.is_empty() {
            continue;
        }
        if line == "/quit" || line == "/exit" {
            break exit::OK;
        }
        let input = match parse_line(station, &account.id, &terminal, &line).await {
            Ok(i) => i,
            Err(msg) => {
                println!("⚠ {msg}");
                continue;
            }
        };
        match flows.handle(&account, &conv, input).await {
            Ok(reply) => {
                if let Some(t) = reply.toast {
                    println!("· {t}");
                }
            }
            Err(e) => println!("⚠ {e}"),
        }
    };
    // Let the last messages out before leaving.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    runner.shutdown().await;
    if let Some((workers, background)) = embedded {
        workers.shutdown().await;
        background.shutdown().await;
    }
    code
}

/// Turns a typed line into input: `/cmd text @img`, `#N` (a button), `@img`, or text.
async fn parse_line(station: &Station, account_id: &str, terminal: &Terminal, line: &str) -> Result<Input, String> {
    if let Some(n) = line.strip_prefix('#').and_then(|n| n.trim().parse::<usize>().ok()) {
        let token = terminal.state.lock().expect("terminal state").buttons.get(&n).cloned();
        return match token {
            Some(token) => Ok(Input::Action { token }),
            None => Err(format!("there is no button [#{n}]")),
        };
    }
    let mut images = vec![];
    let mut words = vec![];
    for word in line.split_whitespace() {
        match word.strip_prefix('@') {
            Some(path) if !path.is_empty() => {
                let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
                let media = station
                    .media
                    .put_image(bytes, Some(account_id), None, "input")
                    .await
                    .map_err(|e| format!("{path}: {e}"))?;
                images.push(media.id);
            }
            _ => words.push(word),
        }
    }
    let text = words.join(" ");
    if let Some(cmd) = text.strip_prefix('/') {
        let (name, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
        return Ok(Input::Command { name: name.to_string(), text: rest.to_string(), images, params: Map::new() });
    }
    if !images.is_empty() && text.is_empty() {
        return Ok(Input::Images { media: images });
    }
    if !images.is_empty() {
        return Err("send an image alone, or after a command (for example /upscale @photo.png)".into());
    }
    Ok(Input::Text { text: line.to_string() })
}
