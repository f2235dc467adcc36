//! An in-memory platform that records every rendered message, for testing
//! flows end to end (and as the simplest example of an adapter).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::platform::{Conversation, DeliveryKind, Outcome, Outgoing, Platform};
use crate::view::View;

/// One message as the test platform shows it: the latest view, every
/// earlier version (edits), and its kind.
#[derive(Debug, Clone)]
pub struct Shown {
    /// Platform message reference (`m1`, `m2` …).
    pub message_ref: String,
    /// Kind of the delivery that created it.
    pub kind: DeliveryKind,
    /// The current view.
    pub view: View,
    /// Earlier versions, oldest first.
    pub edits: Vec<View>,
    /// The delivery record id that created it.
    pub delivery_id: String,
    /// When each edit arrived.
    pub edited_at: Vec<std::time::Instant>,
}

/// Records deliveries per conversation chat id.
#[derive(Clone, Default)]
pub struct TestPlatform {
    name: String,
    state: Arc<Mutex<State>>,
    /// Cannot show a view to one person alone (a shared screen).
    public_only: bool,
}

#[derive(Default)]
struct State {
    chats: HashMap<String, Vec<Shown>>,
    next: u64,
    /// Outcomes to return instead of sending, in order (failure injection).
    scripted: VecDeque<Outcome>,
    /// Delivery ids seen, with how often (duplicates are a bug).
    seen: HashMap<String, u32>,
}

impl TestPlatform {
    /// A test platform named `name` (conversations use it as their platform).
    pub fn new(name: &str) -> TestPlatform {
        TestPlatform { name: name.to_string(), state: Default::default(), public_only: false }
    }

    /// A platform that cannot deliver privately (everything it shows, all
    /// of the chat reads): private views must never reach it.
    pub fn public_only(name: &str) -> TestPlatform {
        TestPlatform { public_only: true, ..TestPlatform::new(name) }
    }

    /// The chat where private views for `account_id` asked in a group are shown.
    pub fn private_chat(account_id: &str) -> String {
        format!("private:{account_id}")
    }

    /// Makes the next sends return these outcomes instead of succeeding.
    pub fn script(&self, outcomes: Vec<Outcome>) {
        self.state.lock().expect("state").scripted.extend(outcomes);
    }

    /// Messages in a chat, oldest first.
    pub fn messages(&self, chat: &str) -> Vec<Shown> {
        self.state.lock().expect("state").chats.get(chat).cloned().unwrap_or_default()
    }

    /// The newest message in a chat.
    pub fn last(&self, chat: &str) -> Option<Shown> {
        self.messages(chat).pop()
    }

    /// How many times each new message's delivery id was sent as a new message (>1 = duplicate).
    pub fn send_counts(&self) -> HashMap<String, u32> {
        self.state.lock().expect("state").seen.clone()
    }

    /// Waits until `pred` holds for the chat's messages (or panics after `timeout`).
    pub async fn wait_for(
        &self,
        chat: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[Shown]) -> bool,
    ) -> Vec<Shown> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msgs = self.messages(chat);
            if pred(&msgs) {
                return msgs;
            }
            if tokio::time::Instant::now() > deadline {
                let dump: Vec<String> =
                    msgs.iter().map(|m| format!("[{:?}] {}", m.kind, m.view.plain_text())).collect();
                panic!("timed out waiting for {what}; chat {chat} shows:\n{}", dump.join("\n---\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[async_trait::async_trait]
impl Platform for TestPlatform {
    fn name(&self) -> &str {
        &self.name
    }

    /// Private views in a group conversation go to the chat
    /// [`TestPlatform::private_chat`] of their account, never the group.
    fn delivers_privately(&self) -> bool {
        !self.public_only
    }

    async fn deliver(&self, conversation: &Conversation, out: &Outgoing) -> Outcome {
        let mut s = self.state.lock().expect("state");
        if let Some(o) = s.scripted.pop_front() {
            return o;
        }
        let conversation = &if out.view.private && conversation.group.is_some() {
            Conversation::new(&conversation.platform, &TestPlatform::private_chat(&out.account_id))
        } else {
            conversation.clone()
        };
        let chat = s.chats.entry(conversation.chat.clone()).or_default();
        if let Some(r) = &out.replace
            && let Some(m) = chat.iter_mut().find(|m| &m.message_ref == r)
        {
            let old = std::mem::replace(&mut m.view, out.view.clone());
            // A progress message that becomes its job's result is a result now.
            m.kind = out.kind;
            m.edits.push(old);
            m.edited_at.push(std::time::Instant::now());
            return Outcome::Sent { message_ref: Some(r.clone()) };
        }
        let _ = chat;
        s.next += 1;
        let message_ref = format!("m{}", s.next);
        *s.seen.entry(out.delivery_id.clone()).or_default() += 1;
        s.chats.entry(conversation.chat.clone()).or_default().push(Shown {
            message_ref: message_ref.clone(),
            kind: out.kind,
            view: out.view.clone(),
            edits: vec![],
            delivery_id: out.delivery_id.clone(),
            edited_at: vec![],
        });
        Outcome::Sent { message_ref: Some(message_ref) }
    }
}
