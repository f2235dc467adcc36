//! Spells through the real core and workers with the native media tools, on
//! SQLite and PostgreSQL: validation errors all at once, casts of 1, 2 and 3
//! steps (outputs bound, quote = holds, each step settled), a failing middle
//! step releasing the rest, cancel, a crash between steps, and a public
//! spell cast by another account.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use station_core::audit::Actor;
use station_core::spells::{CastError, CastRequest, CastView, SpellError, SpellSpec};
use station_core::{Config, MediaExecutor, Station, SubmitError, Workers};
use station_media::image::{DynamicImage, GenericImageView, ImageFormat, Rgba, RgbaImage};
use station_store::testing::TestDb;
use station_store::{AccountRow, ClaimRequest, JobStatus, on_every_db};

struct Env {
    station: Station,
    account: AccountRow,
    db: TestDb,
    config: Config,
    _dir: tempfile::TempDir,
}

fn install_media_tools(tools_dir: &Path) {
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../station-tools/builtin");
    std::fs::create_dir_all(tools_dir).unwrap();
    for entry in std::fs::read_dir(&builtin).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["service"] == "media" {
            std::fs::write(tools_dir.join(path.file_name().unwrap()), text).unwrap();
        }
    }
}

async fn setup(db: TestDb) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
    config.media_dir = Some(dir.path().join("media"));
    config.queue.poll_ms = 50;
    config.points.starting_grant = 0;
    config.points.free_daily = 0;
    install_media_tools(&config.tools_dir());
    let station = open(&db, &config);
    let account = station.account("local", "caster", "Caster").await.unwrap();
    station.grant_points(&account, 20, "test", &Actor::operator("test"), Some("g1")).await.unwrap();
    Env { station, account, db, config, _dir: dir }
}

fn open(db: &TestDb, config: &Config) -> Station {
    let (station, errors) = Station::with_store(config.clone(), db.store.clone()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    station.register_executor(Arc::new(MediaExecutor::new(config)));
    station
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = DynamicImage::ImageRgba8(RgbaImage::from_fn(w, h, |x, _| {
        Rgba(if x < w / 2 { [255, 0, 0, 255] } else { [0, 0, 255, 255] })
    }));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

async fn upload(env: &Env, account: &AccountRow, w: u32, h: u32) -> String {
    let row = env.station.media.put_image(png(w, h), Some(&account.id), None, "input").await.unwrap();
    format!("media:{}", row.id)
}

fn spec(v: Value) -> SpellSpec {
    serde_json::from_value(v).unwrap()
}

/// resize (width from an exposed input) → flip → rotate 90°.
fn three_steps(slug: &str, visibility: &str) -> SpellSpec {
    spec(json!({
        "slug": slug, "name": "Shrink, mirror, turn", "visibility": visibility,
        "steps": [
            {"tool": "resize", "inputs_from": {"image": "input.image", "width": "input.width"}},
            {"tool": "flip", "params": {"direction": "horizontal"}, "inputs_from": {"image": "step1.output[0]"}},
            {"tool": "rotate", "params": {"degrees": "90"}, "inputs_from": {"image": "step2.output[0]"}},
        ],
        "inputs": {"width": {"default": 16, "description": "Width after shrinking"}},
    }))
}

async fn wait_cast(env: &Env, account: &AccountRow, id: &str) -> CastView {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = env.station.cast_view(account, id).await.unwrap().expect("the caster sees the cast");
        if c.status != "running" {
            return c;
        }
        assert!(Instant::now() < deadline, "cast stuck: {}", c.progress_text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn balance(env: &Env, account: &AccountRow) -> (i64, i64) {
    let b = env.station.points(&account.id).await.unwrap();
    (b.balance, b.held)
}

async fn audit_clean(env: &Env) {
    let problems = env.station.audit_points().await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

async fn three_step_cast_binds_outputs_and_settles_each_step(db: TestDb) {
    let env = setup(db).await;
    let spell = env.station.create_spell(&env.account, three_steps("turn", "private")).await.unwrap();
    let names: Vec<(&str, &str, bool)> =
        spell.inputs.iter().map(|i| (i.name.as_str(), i.def.kind.as_str(), i.def.required)).collect();
    assert_eq!(names, [("image", "image", true), ("width", "integer", false)], "derived inputs");
    assert_eq!(spell.inputs[1].def.max, Some(16384.0), "constraints come from resize's width");
    assert_eq!(spell.inputs[1].def.default, Some(json!(16)));
    assert_eq!(spell.steps[2].tool_name, "Rotate");

    let image = upload(&env, &env.account, 32, 16).await;
    // Cast before any worker runs: the whole price is held, only step 1 is claimable.
    let req = CastRequest {
        spell: "turn".into(),
        inputs: json!({"image": image}).as_object().unwrap().clone(),
        ..Default::default()
    };
    let cast = env.station.cast(&env.account, req).await.unwrap();
    assert_eq!((cast.price, cast.steps_total, cast.step), (3, 3, 1));
    assert_eq!(cast.progress_text, "step 1 of 3: Resize queued");
    assert_eq!(cast.steps.iter().map(|s| s.status.as_str()).collect::<Vec<_>>(), ["queued", "waiting", "waiting"]);
    assert_eq!(balance(&env, &env.account).await, (20, 3), "quote = holds, all at cast time");
    audit_clean(&env).await;

    let workers = Workers::start(&env.station);
    let done = wait_cast(&env, &env.account, &cast.id).await;
    assert_eq!(done.status, "succeeded", "{:?}", done.error);
    assert_eq!(done.progress_text, "done: 3 of 3 steps");
    assert_eq!(done.outputs.len(), 1);
    let (_, bytes) = env.station.media.get(&done.outputs[0], None).await.unwrap();
    let img = station_media::decode(&bytes, &Default::default()).unwrap();
    assert_eq!(img.dimensions(), (8, 16), "32×16 shrunk to 16×8, then turned");
    // Each step's job took the previous step's output.
    for pair in done.steps.windows(2) {
        let job = env.station.job(&pair[1].job_id).await.unwrap().unwrap();
        assert_eq!(job.params_json()["image"], json!(format!("media:{}", pair[0].outputs[0])));
    }
    wait_settled(&env, &env.account, (17, 0)).await; // each step captured its price
    audit_clean(&env).await;
    workers.shutdown().await;
}

async fn one_and_two_step_casts(db: TestDb) {
    let env = setup(db).await;
    let workers = Workers::start(&env.station);
    let one = spec(json!({"slug": "mirror", "name": "Mirror",
        "steps": [{"tool": "flip", "inputs_from": {"image": "input.picture"}}]}));
    env.station.create_spell(&env.account, one).await.unwrap();
    let two = spec(json!({"slug": "half-turn", "name": "Half turn",
    "steps": [
        {"tool": "resize", "params": {"scale": 0.5}, "inputs_from": {"image": "input.picture"}},
        {"tool": "rotate", "params": {"degrees": "180"}, "inputs_from": {"image": "step1.output[0]"}},
    ]}));
    env.station.create_spell(&env.account, two).await.unwrap();
    let image = upload(&env, &env.account, 20, 10).await;
    for (slug, dims, price) in [("mirror", (20, 10), 1), ("half-turn", (10, 5), 2)] {
        let before = balance(&env, &env.account).await.0;
        let req = CastRequest {
            spell: slug.into(),
            inputs: json!({"picture": image}).as_object().unwrap().clone(),
            ..Default::default()
        };
        let cast = env.station.cast(&env.account, req).await.unwrap();
        let done = wait_cast(&env, &env.account, &cast.id).await;
        assert_eq!(done.status, "succeeded", "{slug}: {:?}", done.error);
        let (_, bytes) = env.station.media.get(&done.outputs[0], None).await.unwrap();
        let img = station_media::decode(&bytes, &Default::default()).unwrap();
        assert_eq!(img.dimensions(), dims, "{slug}");
        wait_settled(&env, &env.account, (before - price, 0)).await;
    }
    audit_clean(&env).await;
    workers.shutdown().await;
}

async fn validation_names_every_error_with_step_and_field(db: TestDb) {
    let env = setup(db).await;
    let bad = spec(json!({
        "slug": "Bad Slug", "name": "",
        "steps": [
            {"tool": "no-such-tool"},
            {"tool": "resize", "params": {"width": 0, "colour": "red"}, "inputs_from": {"image": "step3.output[0]"}},
            {"tool": "rotate", "inputs_from": {"degrees": "step1.output[0]"}},
            {"tool": "flip", "inputs_from": {"image": "input.prompt", "direction": "input.prompt"}},
        ],
        "inputs": {"unused": {"default": 1}},
    }));
    let Err(SpellError::Invalid(errors)) = env.station.create_spell(&env.account, bad).await else { panic!("refused") };
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "slug",
            "name",
            "step1.tool",
            "step2.params.colour",
            "step2.params.width",
            "step2.inputs_from.image",
            "step3.inputs_from.degrees",
            "step3.image",
            "step4.inputs_from.direction",
            "inputs.unused",
        ],
        "{errors:#?}"
    );
    let text: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect();
    assert!(text[5].contains("not an earlier step"), "{}", text[5]);
    assert!(text[6].contains("is an image but Rotate input degrees takes enum"), "{}", text[6]);
    assert!(text[7].contains("Rotate needs image"), "{}", text[7]);
    assert!(text[8].contains("input prompt is image"), "{}", text[8]);
    assert!(env.station.spells(&env.account).await.unwrap().is_empty(), "nothing stored");

    // A good spell's slug is then taken; a cast names bad inputs as the caster knows them.
    env.station.create_spell(&env.account, three_steps("turn", "private")).await.unwrap();
    let Err(SpellError::Invalid(e)) = env.station.create_spell(&env.account, three_steps("turn", "private")).await
    else {
        panic!("slug taken")
    };
    assert_eq!(e[0].field, "slug");
    let req = CastRequest {
        spell: "turn".into(),
        inputs: json!({"width": 0, "colour": 1}).as_object().unwrap().clone(),
        ..Default::default()
    };
    let Err(CastError::Submit(SubmitError::Invalid(e))) = env.station.cast(&env.account, req).await else {
        panic!("refused")
    };
    let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["inputs.colour", "inputs.image", "inputs.width"], "{e:#?}");
    assert_eq!(balance(&env, &env.account).await, (20, 0), "nothing held");
}

async fn failing_middle_step_releases_the_rest(db: TestDb) {
    let env = setup(db).await;
    let workers = Workers::start(&env.station);
    // Crop far outside a small picture: valid when cast (the size is not known
    // yet), fails when it runs.
    let s = spec(json!({"slug": "break", "name": "Breaks in the middle",
    "steps": [
        {"tool": "flip", "inputs_from": {"image": "input.image"}},
        {"tool": "crop", "params": {"x": 5000, "y": 5000, "width": 8, "height": 8},
         "inputs_from": {"image": "step1.output[0]"}},
        {"tool": "rotate", "inputs_from": {"image": "step2.output[0]"}},
    ]}));
    env.station.create_spell(&env.account, s).await.unwrap();
    let image = upload(&env, &env.account, 16, 8).await;
    let req = CastRequest {
        spell: "break".into(),
        inputs: json!({"image": image}).as_object().unwrap().clone(),
        ..Default::default()
    };
    let cast = env.station.cast(&env.account, req).await.unwrap();
    let done = wait_cast(&env, &env.account, &cast.id).await;
    assert_eq!(done.status, "failed");
    assert!(done.error.as_deref().unwrap().starts_with("step 2 (Crop) failed"), "{:?}", done.error);
    assert_eq!(done.progress_text, "failed at step 2 of 3: Crop");
    assert_eq!(done.steps.iter().map(|s| s.status.as_str()).collect::<Vec<_>>(), ["succeeded", "failed", "cancelled"]);
    // Only the first step was charged; the failed and the never-run step were released.
    wait_settled(&env, &env.account, (19, 0)).await;
    audit_clean(&env).await;
    workers.shutdown().await;
}

/// Waits for the workers' settlement (after the outcome is committed).
async fn wait_settled(env: &Env, account: &AccountRow, want: (i64, i64)) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while balance(env, account).await != want {
        assert!(Instant::now() < deadline, "balance {:?}, want {want:?}", balance(env, account).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cancel_stops_the_cast_and_returns_its_points(db: TestDb) {
    let env = setup(db).await;
    env.station.create_spell(&env.account, three_steps("turn", "private")).await.unwrap();
    let image = upload(&env, &env.account, 32, 16).await;
    let req = CastRequest {
        spell: "turn".into(),
        inputs: json!({"image": image}).as_object().unwrap().clone(),
        ..Default::default()
    };
    let cast = env.station.cast(&env.account, req).await.unwrap();
    let other = env.station.account("local", "other", "Other").await.unwrap();
    assert!(env.station.cancel_cast(&other, &cast.id).await.unwrap().is_none(), "not someone else's");
    let done = env.station.cancel_cast(&env.account, &cast.id).await.unwrap().unwrap();
    assert_eq!(done.status, "cancelled");
    assert_eq!(done.steps.iter().map(|s| s.status.as_str()).collect::<Vec<_>>(), ["cancelled"; 3]);
    assert_eq!(balance(&env, &env.account).await, (20, 0));
    audit_clean(&env).await;
}

/// The state a crash between steps leaves — step 1 succeeded and settled,
/// step 2 still parked, no process advancing — is picked up by the next
/// process's workers: each step runs exactly once.
async fn crash_between_steps_neither_loses_nor_repeats_a_step(db: TestDb) {
    let env = setup(db).await;
    env.station.create_spell(&env.account, three_steps("turn", "private")).await.unwrap();
    let image = upload(&env, &env.account, 32, 16).await;
    let req = CastRequest {
        spell: "turn".into(),
        inputs: json!({"image": image}).as_object().unwrap().clone(),
        ..Default::default()
    };
    let cast = env.station.cast(&env.account, req).await.unwrap();
    // "Process 1" runs step 1 and dies before advancing: claimed and finished
    // by hand (its output: a picture of the right size), no cast loop.
    let claimed = env
        .db
        .store
        .claim_jobs(&ClaimRequest {
            service: "media",
            owner: "dead-process",
            limit: 10,
            lease_ms: 60_000,
            per_account_running_cap: 10,
            now: station_store::now_ms(),
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "only step 1 is claimable; the others are parked");
    assert_eq!(claimed[0].id, cast.steps[0].job_id);
    let out = env.station.media.put_image(png(16, 8), Some(&env.account.id), None, "output").await.unwrap();
    let finished = env
        .db
        .store
        .finish_job(
            &claimed[0].id,
            "dead-process",
            JobStatus::Succeeded,
            Some(std::slice::from_ref(&out.id)),
            None,
            station_store::now_ms(),
        )
        .await
        .unwrap();
    assert!(finished);
    env.station.settle_job(&claimed[0].id, "worker:dead-process").await.unwrap();
    let between = env.station.cast_view(&env.account, &cast.id).await.unwrap().unwrap();
    assert_eq!(
        between.steps.iter().map(|s| s.status.as_str()).collect::<Vec<_>>(),
        ["succeeded", "waiting", "waiting"]
    );

    // Advancing twice at once (two processes) moves it once.
    let (a, b) = tokio::join!(env.station.advance_cast(&cast.id), env.station.advance_cast(&cast.id));
    a.unwrap();
    b.unwrap();
    let moved = env.station.cast_view(&env.account, &cast.id).await.unwrap().unwrap();
    assert_eq!(moved.step, 2);
    assert_eq!(moved.steps.iter().map(|s| s.status.as_str()).collect::<Vec<_>>(), ["succeeded", "queued", "waiting"]);

    // "Process 2" starts: its workers finish the cast.
    let restarted = open(&env.db, &env.config);
    let workers = Workers::start(&restarted);
    let done = wait_cast(&env, &env.account, &cast.id).await;
    assert_eq!(done.status, "succeeded", "{:?}", done.error);
    for s in &done.steps {
        let job = env.station.job(&s.job_id).await.unwrap().unwrap();
        assert!(job.attempts <= 1, "step {} ran {} times", s.step, job.attempts);
    }
    let step2 = env.station.job(&done.steps[1].job_id).await.unwrap().unwrap();
    assert_eq!(step2.params_json()["image"], json!(format!("media:{}", out.id)), "bound to step 1's output");
    wait_settled(&env, &env.account, (17, 0)).await;
    audit_clean(&env).await;
    workers.shutdown().await;
}

async fn public_spell_is_cast_under_the_callers_points(db: TestDb) {
    let env = setup(db).await;
    let workers = Workers::start(&env.station);
    env.station.create_spell(&env.account, three_steps("shared", "public")).await.unwrap();
    env.station.create_spell(&env.account, three_steps("secret", "private")).await.unwrap();
    let fan = env.station.account("local", "fan", "Fan").await.unwrap();
    env.station.grant_points(&fan, 5, "test", &Actor::operator("test"), Some("g2")).await.unwrap();
    let listed: Vec<String> = env.station.spells(&fan).await.unwrap().into_iter().map(|s| s.slug).collect();
    assert_eq!(listed, ["shared"], "the private spell is not listed");
    let image = upload(&env, &fan, 32, 16).await;
    let req = |slug: &str| CastRequest {
        spell: slug.into(),
        inputs: json!({"image": image}).as_object().unwrap().clone(),
        ..Default::default()
    };
    assert!(matches!(env.station.cast(&fan, req("secret")).await, Err(CastError::UnknownSpell(_))));
    let cast = env.station.cast(&fan, req("shared")).await.unwrap();
    let done = wait_cast(&env, &fan, &cast.id).await;
    assert_eq!(done.status, "succeeded", "{:?}", done.error);
    wait_settled(&env, &fan, (2, 0)).await; // the caster paid
    assert_eq!(balance(&env, &env.account).await, (20, 0), "the owner paid nothing");
    assert!(env.station.cast_view(&env.account, &cast.id).await.unwrap().is_none(), "the owner does not see it");
    let shared = env.station.spell(&fan, "shared").await.unwrap().unwrap();
    assert_eq!(shared.casts, 1, "usage counted");
    // Short of points for the whole chain: refused, nothing held.
    let poor = env.station.account("local", "poor", "Poor").await.unwrap();
    env.station.grant_points(&poor, 2, "test", &Actor::operator("test"), Some("g3")).await.unwrap();
    let image = upload(&env, &poor, 32, 16).await;
    let r = CastRequest {
        spell: "shared".into(),
        inputs: json!({"image": image}).as_object().unwrap().clone(),
        ..Default::default()
    };
    let e = env.station.cast(&poor, r).await.unwrap_err();
    assert!(matches!(e, CastError::Submit(SubmitError::InsufficientPoints { .. })), "{e}");
    assert_eq!(balance(&env, &poor).await, (2, 0));
    audit_clean(&env).await;
    workers.shutdown().await;
}

async fn a_spell_whose_tool_changed_is_marked_broken(db: TestDb) {
    let env = setup(db).await;
    env.station.create_spell(&env.account, three_steps("turn", "private")).await.unwrap();
    // The operator narrows rotate's choices: the spell's "90" is still one.
    let edit = |id: &str, f: &dyn Fn(&mut Value)| {
        let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../station-tools/builtin/{id}.json"));
        let mut tool: Value = serde_json::from_str(&std::fs::read_to_string(builtin).unwrap()).unwrap();
        f(&mut tool);
        std::fs::write(env.config.tools_dir().join(format!("{id}.json")), tool.to_string()).unwrap();
    };
    edit("rotate", &|t| {
        t["inputs"]["degrees"]["choices"] = json!(["90", "270"]);
        t["inputs"]["degrees"]["default"] = json!("270");
    });
    let station = open(&env.db, &env.config);
    let spell = station.spell(&env.account, "turn").await.unwrap().unwrap();
    assert!(spell.broken.is_none(), "a compatible change keeps it working: {:?}", spell.broken);
    // flip's image input is renamed: the spell's mapping into it is gone.
    edit("flip", &|t| {
        let image = t["inputs"]["image"].take();
        t["inputs"].as_object_mut().unwrap().remove("image");
        t["inputs"]["picture"] = image;
    });
    let station = open(&env.db, &env.config);
    let spell = station.spell(&env.account, "turn").await.unwrap().unwrap();
    let reason = spell.broken.expect("marked broken");
    assert!(reason.contains("step2.inputs_from.image: Flip has no input image"), "{reason}");
    let image = upload(&env, &env.account, 32, 16).await;
    let req = CastRequest {
        spell: "turn".into(),
        inputs: json!({"image": image}).as_object().unwrap().clone(),
        ..Default::default()
    };
    assert!(matches!(station.cast(&env.account, req).await, Err(CastError::Broken { .. })));
}

on_every_db!(
    three_step_cast_binds_outputs_and_settles_each_step,
    one_and_two_step_casts,
    validation_names_every_error_with_step_and_field,
    failing_middle_step_releases_the_rest,
    cancel_stops_the_cast_and_returns_its_points,
    crash_between_steps_neither_loses_nor_repeats_a_step,
    public_spell_is_cast_under_the_callers_points,
    a_spell_whose_tool_changed_is_marked_broken,
);
