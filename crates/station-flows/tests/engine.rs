//! The flow engine with a purpose-built flow: loops ("add images until at
//! least two"), branches, back, jumps, input-kind checks, hooks, versioned
//! state and expiry — on SQLite and PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};
use station_core::AccountRow;
use station_core::{Config, Station};
use station_flows::flow::{Accepts, Cx, Flow, FlowError, Next, Out, Start, StepInput, StepSpec, with};
use station_flows::testing::{Shown, TestPlatform};
use station_flows::view::{Button, InputKind};
use station_flows::{Conversation, FlowSettings, Flows, FlowsRunner, Input, View};
use station_testkit::TestDb;

/// A dataset-like flow: name → images (loop until ≥ 2) → kind (branch:
/// "portrait" asks for a trigger word, "style" jumps to the summary) → done.
struct Album {
    before: Arc<AtomicUsize>,
    after: Arc<AtomicUsize>,
    version: i64,
}

const STEPS: &[StepSpec] = &[
    StepSpec { id: "name", accepts: &[Accepts::Text] },
    StepSpec { id: "images", accepts: &[Accepts::Image] },
    StepSpec { id: "kind", accepts: &[] },
    StepSpec { id: "trigger", accepts: &[Accepts::Text] },
    StepSpec { id: "summary", accepts: &[] },
];

#[async_trait::async_trait]
impl Flow for Album {
    fn name(&self) -> &'static str {
        "album"
    }
    fn description(&self) -> &'static str {
        "test flow"
    }
    fn version(&self) -> i64 {
        self.version
    }
    fn steps(&self) -> &'static [StepSpec] {
        STEPS
    }
    async fn start(&self, _cx: &Cx<'_>, _start: Start) -> Result<Next, FlowError> {
        Ok(Next::Goto("name".into(), json!({"images": []})))
    }
    async fn view(&self, _cx: &Cx<'_>, step: &str, state: &Value) -> Result<View, FlowError> {
        let n = state["images"].as_array().map(std::vec::Vec::len).unwrap_or(0);
        Ok(match step {
            "name" => View::text("Name?")
                .ask("name", InputKind::Text { placeholder: None, multiline: false, max_len: Some(20) }),
            "images" => View::text(format!("Images so far: {n} (at least 2)"))
                .row(vec![Button::action("Back", "back", Value::Null)])
                .ask("images", InputKind::Image { min: 1, max: 20 }),
            "kind" => View::text("Kind?").ask(
                "kind",
                InputKind::Choice {
                    options: vec![
                        Button::action("Portrait", "kind", json!("portrait")),
                        Button::action("Style", "kind", json!("style")),
                    ],
                },
            ),
            "trigger" => View::text("Trigger word?"),
            _ => View::text(format!("Summary: {} with {n} images, trigger {}", state["name"], state["trigger"]))
                .row(vec![Button::action("Finish", "finish", Value::Null)]),
        })
    }
    async fn input(&self, _cx: &Cx<'_>, step: &str, state: &Value, input: StepInput) -> Result<Next, FlowError> {
        Ok(match (step, input) {
            ("name", StepInput::Text(t)) if t.trim().is_empty() || t.len() > 20 => {
                Next::Invalid("the name must have 1 to 20 characters".into())
            }
            ("name", StepInput::Text(t)) => Next::Goto("images".into(), with(state, "name", t)),
            ("images", StepInput::Images(m)) => {
                let mut all: Vec<Value> = state["images"].as_array().cloned().unwrap_or_default();
                all.extend(m.into_iter().map(Value::String));
                let s = with(state, "images", all.clone());
                if all.len() >= 2 { Next::Goto("kind".into(), s) } else { Next::Stay(s) }
            }
            ("kind", StepInput::Action { args, .. }) if args == "portrait" => {
                Next::Goto("trigger".into(), state.clone())
            }
            ("kind", StepInput::Action { .. }) => Next::Goto("summary".into(), with(state, "trigger", "none")),
            ("trigger", StepInput::Text(t)) => Next::Goto("summary".into(), with(state, "trigger", t)),
            ("summary", StepInput::Action { .. }) => Next::Finish(vec![Out::message(View::text("Album saved."))]),
            _ => Next::Invalid("unexpected input".into()),
        })
    }
    async fn before_step(&self, _cx: &Cx<'_>, _step: &str, _state: &Value) -> Result<Option<Next>, FlowError> {
        self.before.fetch_add(1, Ordering::SeqCst);
        Ok(None)
    }
    async fn after_step(&self, _cx: &Cx<'_>, _from: &str, _to: &str, _state: &Value) {
        self.after.fetch_add(1, Ordering::SeqCst);
    }
}

struct Env {
    station: Station,
    flows: Flows,
    runner: Option<FlowsRunner>,
    platform: TestPlatform,
    account: AccountRow,
    conv: Conversation,
    before: Arc<AtomicUsize>,
    after: Arc<AtomicUsize>,
    db: TestDb,
    _dir: tempfile::TempDir,
}

fn album(version: i64, before: &Arc<AtomicUsize>, after: &Arc<AtomicUsize>) -> Arc<dyn Flow> {
    Arc::new(Album { before: before.clone(), after: after.clone(), version })
}

async fn setup(db: TestDb) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let config =
        Config { data_dir: dir.path().to_path_buf(), media_dir: Some(dir.path().join("media")), ..Default::default() };
    let (station, _) = Station::with_store(config, db.store.clone()).unwrap();
    let (before, after) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let flows = Flows::with_flows(station.clone(), FlowSettings::default(), vec![album(1, &before, &after)]);
    let platform = TestPlatform::new("test");
    flows.add_platform(Arc::new(platform.clone()));
    let runner = Some(flows.start());
    let account = station.account("test", "u1", "Ada").await.unwrap();
    Env {
        station,
        flows,
        runner,
        platform,
        account,
        conv: Conversation::new("test", "c1"),
        before,
        after,
        db,
        _dir: dir,
    }
}

impl Env {
    async fn send(&self, input: Input) -> Option<String> {
        self.flows.handle(&self.account, &self.conv, input).await.unwrap().toast
    }
    async fn text(&self, t: &str) {
        self.send(Input::Text { text: t.into() }).await;
    }
    async fn images(&self, n: usize) {
        let media = (0..n).map(|i| format!("m{i}")).collect();
        self.send(Input::Images { media }).await;
    }
    async fn press(&self, label: &str) -> Option<String> {
        let msgs = self.platform.messages("c1");
        let token = msgs
            .iter()
            .rev()
            .flat_map(|m| m.view.all_buttons().into_iter().cloned().collect::<Vec<_>>())
            .find(|b| b.label == label)
            .and_then(|b| b.token().map(str::to_owned))
            .unwrap_or_else(|| panic!("no button {label}"));
        self.send(Input::Action { token }).await
    }
    async fn wait_last(&self, text: &str) -> Vec<Shown> {
        self.platform
            .wait_for("c1", Duration::from_secs(10), text, |m| {
                m.last().is_some_and(|m| m.view.plain_text().contains(text))
            })
            .await
    }
    async fn wait_count(&self, n: usize) -> Vec<Shown> {
        self.platform.wait_for("c1", Duration::from_secs(10), &format!("{n} messages"), |m| m.len() >= n).await
    }
    async fn step(&self) -> String {
        self.db.store.active_flow(&self.conv.key(), &self.account.id).await.unwrap().map(|i| i.step).unwrap_or_default()
    }
}

async fn loops_branches_back_and_hooks(db: TestDb) {
    let env = setup(db).await;
    env.send(Input::Command { name: "album".into(), text: String::new(), images: vec![], params: Map::new() }).await;
    env.wait_last("Name?").await;
    // Validation: the message says what is wrong and the step is asked again.
    env.text(&"x".repeat(30)).await;
    let msgs = env.wait_count(3).await;
    assert!(msgs[1].view.plain_text().contains("1 to 20 characters"));
    assert!(msgs[2].view.plain_text().contains("Name?"), "asked again");
    // Input of the wrong kind is refused naming what the step expects.
    env.images(1).await;
    let msgs = env.wait_count(5).await;
    assert!(msgs[3].view.plain_text().contains("expects text"), "{}", msgs[3].view.plain_text());
    assert!(msgs[4].view.plain_text().contains("Name?"), "asked again");
    env.text("cats").await;
    env.wait_last("Images so far: 0").await;
    // Loop: one image is not enough; the step repeats with the new state.
    env.images(1).await;
    env.wait_last("Images so far: 1").await;
    // Back returns to the previous step and state.
    env.press("Back").await;
    env.wait_last("Name?").await;
    assert_eq!(env.step().await, "name");
    env.text("dogs").await;
    env.wait_last("Images so far: 0").await;
    env.images(3).await;
    env.wait_last("Kind?").await;
    // Branch: "style" jumps over the trigger step.
    env.press("Style").await;
    env.wait_last("Summary: \"dogs\" with 3 images, trigger \"none\"").await;
    env.press("Finish").await;
    env.wait_last("Album saved.").await;
    assert_eq!(env.step().await, "", "finished flows are no longer active");
    assert!(env.before.load(Ordering::SeqCst) >= 7, "before hook ran for every shown step");
    assert!(env.after.load(Ordering::SeqCst) >= 7, "after hook ran for every stored transition");
    env.runner.unwrap().shutdown().await;
}

async fn old_versions_end_politely(db: TestDb) {
    let env = setup(db).await;
    env.send(Input::Command { name: "album".into(), text: String::new(), images: vec![], params: Map::new() }).await;
    env.wait_last("Name?").await;
    // A new release ships version 2 of the flow with no upgrade path.
    let v2 = Flows::with_flows(env.station.clone(), FlowSettings::default(), vec![album(2, &env.before, &env.after)]);
    v2.handle(&env.account, &env.conv, Input::Text { text: "cats".into() }).await.unwrap();
    env.wait_last("cannot continue").await;
    assert_eq!(env.step().await, "");
    env.runner.unwrap().shutdown().await;
}

async fn buttons_of_others_and_unknown_tokens(db: TestDb) {
    let env = setup(db).await;
    env.send(Input::Command { name: "album".into(), text: "".into(), images: vec![], params: Map::new() }).await;
    env.text("cats").await;
    env.images(2).await;
    let msgs = env.wait_last("Kind?").await;
    let token = msgs.last().unwrap().view.all_buttons()[0].token().unwrap().to_string();
    let other = env.station.account("test", "u2", "Bob").await.unwrap();
    let r = env.flows.handle(&other, &env.conv, Input::Action { token }).await.unwrap();
    assert!(r.toast.unwrap().contains("someone else"));
    assert_eq!(env.step().await, "kind", "another person's press changed nothing");
    let r = env.send(Input::Action { token: "nonexistent".into() }).await;
    assert!(r.unwrap().contains("expired"));
    env.runner.unwrap().shutdown().await;
}

use station_testkit::on_every_db;

on_every_db!(loops_branches_back_and_hooks, old_versions_end_politely, buttons_of_others_and_unknown_tokens);
