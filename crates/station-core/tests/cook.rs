//! Cook (issue 24, items 4–7) through the real core and workers with the
//! native `watermark` tool, on SQLite and PostgreSQL: a recipe refused
//! field by field; a 200-piece cook that survives a crash (its workers
//! aborted mid-way, one piece's job queued by the dead process but never
//! recorded) with no piece lost or doubled and one charge per piece;
//! concurrent reviewers who never hold the same piece; regenerate, cull,
//! trait statistics and the NFT export.

use std::collections::HashSet;
use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use station_core::audit::Actor;
use station_core::collections::{CollectionEdit, CollectionError};
use station_core::cook::{CookView, Decision};
use station_core::{Config, MediaExecutor, Station, SubmitRequest, Workers};
use station_media::image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use station_store::testing::TestDb;
use station_store::{AccountRow, JobFilter, on_every_db};

struct Env {
    station: Station,
    owner: AccountRow,
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
    config.queue.lease_seconds = 2;
    config.queue.per_user_running = 8;
    config.points.starting_grant = 0;
    config.points.free_daily = 0;
    config.collections.max_in_flight = 4;
    install_media_tools(&config.tools_dir());
    let station = open(&db, &config);
    let owner = station.account("local", "cook", "Cook").await.unwrap();
    station.grant_points(&owner, 1000, "test", &Actor::operator("test"), Some("g1")).await.unwrap();
    Env { station, owner, db, config, _dir: dir }
}

fn open(db: &TestDb, config: &Config) -> Station {
    let (station, errors) = Station::with_store(config.clone(), db.store.clone()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    station.register_executor(Arc::new(MediaExecutor::new(config)));
    station
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = DynamicImage::ImageRgba8(RgbaImage::from_fn(w, h, |x, _| {
        Rgba(if x < w / 2 { [20, 40, 200, 255] } else { [200, 180, 20, 255] })
    }));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

async fn collection(env: &Env, name: &str) -> String {
    let edit = CollectionEdit { name: Some(name.into()), ..Default::default() };
    env.station.create_collection(&env.owner, edit).await.unwrap().id
}

/// Watermark a picture with `[[Sky]] #[[Number]]`: skies weighted, numbers
/// a unique range.
async fn recipe(env: &Env, supply: i64, reviewers: &[&str]) -> Value {
    let image = env.station.media.put_image(png(48, 32), Some(&env.owner.id), None, "input").await.unwrap();
    json!({
        "tool": "watermark",
        "params": {"image": format!("media:{}", image.id), "text": "[[Sky]] #[[Number]]", "opacity": 1},
        "supply": supply,
        "categories": [
            {"name": "Sky", "traits": [
                {"name": "Dawn", "value": "dawn", "weight": 3},
                {"name": "Dusk", "value": "dusk", "weight": 1},
            ]},
            {"name": "Number", "type": "range", "start": 1, "end": supply, "zero_pad": 3, "unique": true},
        ],
        "name_template": "{{collection}} #{{number}}",
        "description": "A {{Sky}} sky",
        "reviewers": reviewers,
    })
}

fn fields(e: CollectionError) -> Vec<String> {
    match e {
        CollectionError::Invalid(errs) => errs.into_iter().map(|e| e.field).collect(),
        other => panic!("not a field error: {other}"),
    }
}

async fn wait_cook(env: &Env, station: &Station, id: &str, until: impl Fn(&CookView) -> bool) -> CookView {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = station.cook_status(&env.owner, id).await.unwrap().expect("a cook");
        if until(&c) {
            return c;
        }
        assert!(Instant::now() < deadline, "cook stuck: {}", c.progress_text);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_settled(env: &Env, expected: (i64, i64)) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = env.station.points(&env.owner.id).await.unwrap();
        if (b.balance, b.held) == expected {
            return;
        }
        assert!(Instant::now() < deadline, "balance {:?}, expected {expected:?}", (b.balance, b.held));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn a_recipe_is_refused_field_by_field(db: TestDb) {
    let env = setup(db).await;
    let id = collection(&env, "Skies").await;
    let mut r = recipe(&env, 10, &[]).await;
    r["supply"] = json!(20_000);
    r["params"]["text"] = json!("[[Sky]] [[Moon]]");
    r["categories"][0]["traits"][1]["weight"] = json!(0);
    let e = env.station.save_recipe(&env.owner, &id, &r).await.unwrap_err();
    assert_eq!(fields(e), ["supply", "categories[0].traits[1].weight", "params.text"]);

    let mut r = recipe(&env, 10, &["telegram:404"]).await;
    r["tool"] = json!("no-such-tool");
    let e = env.station.save_recipe(&env.owner, &id, &r).await.unwrap_err();
    assert_eq!(fields(e), ["reviewers[0]", "tool"]);

    // Parameters the tool refuses, found on a sample piece: the longest
    // trait value overflows `text` (200 characters), a bad enum.
    let mut r = recipe(&env, 10, &[]).await;
    r["categories"][0]["traits"][1]["value"] = json!("x".repeat(300));
    r["params"]["position"] = json!("nowhere");
    let e = env.station.save_recipe(&env.owner, &id, &r).await.unwrap_err();
    let mut f = fields(e);
    f.sort();
    assert_eq!(f, ["params.position", "params.text"]);
    assert!(env.station.recipe_of(&env.owner, &id).await.unwrap().is_none(), "nothing stored");

    // Starting without a recipe names it; another account sees nothing.
    let e = env.station.start_cook(&env.owner, &id, None).await.unwrap_err();
    assert_eq!(fields(e), ["recipe"]);
    let other = env.station.account("local", "stranger", "Stranger").await.unwrap();
    let r = recipe(&env, 10, &[]).await;
    assert!(matches!(env.station.save_recipe(&other, &id, &r).await.unwrap_err(), CollectionError::NotFound { .. }));
    let saved = env.station.save_recipe(&env.owner, &id, &r).await.unwrap();
    assert_eq!(saved.supply, 10);
}

/// 200 pieces, the workers aborted mid-way (a crash: leases left to lapse)
/// and the dead process having queued one piece's job without recording it;
/// a new process finishes: 200 pieces, 200 jobs, 200 charges.
async fn a_200_piece_cook_survives_a_crash(db: TestDb) {
    let env = setup(db).await;
    let id = collection(&env, "Skies").await;
    let r = recipe(&env, 200, &[]).await;
    env.station.save_recipe(&env.owner, &id, &r).await.unwrap();
    let started = env.station.start_cook(&env.owner, &id, Some(7)).await.unwrap();
    assert_eq!((started.status.as_str(), started.total, started.pending), ("running", 200, 200));
    // Every piece is written, with its traits and parameters, before any job.
    let pieces = env.station.cook_pieces(&env.owner, &id).await.unwrap();
    assert_eq!(pieces.len(), 200);
    assert!(pieces.iter().all(|p| p.job_id.is_none() && p.status == "pending"));
    assert_eq!(
        pieces[0].params["text"],
        json!(format!("{} #{}", pieces[0].traits[0].value, pieces[0].traits[1].value))
    );

    let workers = Workers::start(&env.station);
    let mid = wait_cook(&env, &env.station, &id, |c| c.done >= 60).await;
    assert!(mid.in_flight <= 4, "at most max_in_flight out: {}", mid.in_flight);
    drop(workers); // the crash: no lease released, no goodbye

    // The dead process had queued the next piece's job but not recorded it.
    let next = env.station.cook_pieces(&env.owner, &id).await.unwrap().into_iter().find(|p| p.status == "pending");
    let next = next.expect("pieces left after the crash");
    let orphan = env
        .station
        .submit(
            &env.owner,
            SubmitRequest {
                tool: "watermark".into(),
                params: next.params.clone(),
                confirmed: true,
                idempotency_key: Some(format!("cook:{id}:{}:0", next.number)),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    let restarted = open(&env.db, &env.config);
    let workers = Workers::start(&restarted);
    let done = wait_cook(&env, &restarted, &id, |c| c.status == "done").await;
    assert_eq!((done.done, done.failed, done.in_flight, done.pending), (200, 0, 0, 0), "{}", done.progress_text);
    assert_eq!(done.progress_text, "done: 200 of 200 made");

    let pieces = env.station.cook_pieces(&env.owner, &id).await.unwrap();
    let jobs: HashSet<_> = pieces.iter().map(|p| p.job_id.clone().unwrap()).collect();
    assert_eq!(jobs.len(), 200, "one job per piece");
    assert_eq!(pieces.iter().find(|p| p.number == next.number).unwrap().job_id.as_deref(), Some(orphan.id.as_str()));
    let numbers: HashSet<_> = pieces.iter().map(|p| p.traits[1].name.clone()).collect();
    assert_eq!(numbers.len(), 200, "the unique range never repeats");
    let all = env
        .db
        .store
        .list_jobs(&JobFilter { account_id: Some(env.owner.id.clone()), limit: 1000, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(all.len(), 200, "no job doubled");
    // One point per piece captured, nothing left held; the ledger adds up.
    wait_settled(&env, (800, 0)).await;
    let problems = env.station.audit_points().await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");

    // The same seed draws the same pieces.
    let other = collection(&env, "Skies again").await;
    env.station.save_recipe(&env.owner, &other, &r).await.unwrap();
    restarted.control_cook(&env.owner, &other, "stop").await.unwrap_err();
    let again = env.station.start_cook(&env.owner, &other, Some(7)).await.unwrap();
    env.station.control_cook(&env.owner, &other, "stop").await.unwrap();
    let twins = env.station.cook_pieces(&env.owner, &other).await.unwrap();
    assert_eq!(again.total, 200);
    for (a, b) in pieces.iter().zip(&twins) {
        assert_eq!((&a.traits, &a.params, a.seed), (&b.traits, &b.params, b.seed));
    }
    workers.shutdown().await;
}

async fn reviewers_never_share_a_piece_then_cull_and_export(db: TestDb) {
    let env = setup(db).await;
    let bob = env.station.account("local", "bob", "Bob").await.unwrap();
    let carol = env.station.account("local", "carol", "Carol").await.unwrap();
    let id = collection(&env, "Skies").await;
    let r = recipe(&env, 12, &["local:bob"]).await;
    let saved = env.station.save_recipe(&env.owner, &id, &r).await.unwrap();
    assert_eq!(saved.reviewers, std::slice::from_ref(&bob.id), "named by identity, kept as the account");
    env.station.start_cook(&env.owner, &id, Some(3)).await.unwrap();
    // Pause and resume on the way.
    let paused = env.station.control_cook(&env.owner, &id, "pause").await.unwrap();
    assert_eq!(paused.status, "paused");
    assert_eq!(fields(env.station.control_cook(&env.owner, &id, "pause").await.unwrap_err()), ["action"]);
    let workers = Workers::start(&env.station);
    env.station.control_cook(&env.owner, &id, "resume").await.unwrap();
    wait_cook(&env, &env.station, &id, |c| c.status == "done").await;

    // Claims race: the owner and Bob each take 5 at once, never the same.
    let (a, b) = tokio::join!(env.station.claim_pieces(&env.owner, &id, 5), env.station.claim_pieces(&bob, &id, 5));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mine: HashSet<_> = a.iter().map(|p| p.id.clone()).collect();
    let his: HashSet<_> = b.iter().map(|p| p.id.clone()).collect();
    assert!(mine.is_disjoint(&his), "a piece given to two reviewers");
    assert_eq!(mine.len() + his.len(), 10);
    // A third claim gets what is left; Carol is no reviewer.
    let rest = env.station.claim_pieces(&bob, &id, 50).await.unwrap();
    assert_eq!(rest.len(), 2 + his.len(), "his own claims come back with the 2 left");
    assert!(matches!(env.station.claim_pieces(&carol, &id, 1).await.unwrap_err(), CollectionError::NotFound { .. }));

    // Bob cannot decide the owner's claimed piece; he decides his own.
    let owners = &a[0];
    let e = env.station.review_piece(&bob, &id, &owners.id, Decision::Accept).await.unwrap_err();
    assert_eq!(fields(e), ["piece"]);
    for p in &rest {
        env.station.review_piece(&bob, &id, &p.id, Decision::Accept).await.unwrap();
    }
    for p in &a[1..] {
        env.station.review_piece(&env.owner, &id, &p.id, Decision::Accept).await.unwrap();
    }
    // The owner regenerates one: same traits, a new seed and job.
    let before = owners.clone();
    let sent = env.station.review_piece(&env.owner, &id, &owners.id, Decision::Regenerate).await.unwrap();
    assert_eq!((sent.status.as_str(), sent.attempt), ("pending", 1));
    let c = wait_cook(&env, &env.station, &id, |c| c.status == "done" && c.done == 12).await;
    assert_eq!(c.accepted, 11);
    let again =
        env.station.cook_pieces(&env.owner, &id).await.unwrap().into_iter().find(|p| p.id == before.id).unwrap();
    assert_eq!(again.traits, before.traits);
    assert_ne!(again.seed, before.seed);
    assert_ne!(again.job_id, before.job_id);
    env.station.claim_pieces(&env.owner, &id, 1).await.unwrap();
    env.station.review_piece(&env.owner, &id, &again.id, Decision::Reject).await.unwrap();

    // Cull 11 accepted to 8; statistics count them.
    let culled = env.station.cull_cook(&env.owner, &id, 8).await.unwrap();
    assert_eq!((culled.accepted, culled.kept, culled.rejected), (11, 8, 1));
    let stats = env.station.trait_stats(&env.owner, &id, true).await.unwrap();
    assert_eq!(stats.pieces, 8);
    assert_eq!(stats.traits.iter().map(|t| t.occurrences).sum::<i64>(), 8);
    assert_eq!(stats.traits[0].expected, 0.75);
    let made = env.station.trait_stats(&bob, &id, false).await.unwrap();
    assert_eq!(made.pieces, 12);

    // The NFT export: 8 images and their metadata in a shuffled order.
    let e = env.station.export_cook(&env.owner, &id, true).await.unwrap();
    assert_eq!(e.total, 8);
    let deadline = Instant::now() + Duration::from_secs(30);
    let path = loop {
        match env.station.export_file(&env.owner, &e.id).await {
            Ok((_, path)) => break path,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(err) => panic!("export never built: {err}"),
        }
    };
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    assert_eq!(zip.len(), 8 * 2 + 1, "8 images, 8 metadata files, metadata.json");
    let mut text = String::new();
    zip.by_name("metadata/1.json").unwrap().read_to_string(&mut text).unwrap();
    let one: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(one["name"], "Skies #1");
    assert_eq!(one["image"], "images/1.png");
    let sky = one["attributes"][0]["value"].as_str().unwrap();
    assert_eq!(one["description"], json!(format!("A {sky} sky")));
    assert_eq!(one["attributes"][0]["trait_type"], "Sky");
    assert_eq!(one["attributes"][1]["trait_type"], "Number");
    let kept: HashSet<i64> = env
        .station
        .cook_pieces(&env.owner, &id)
        .await
        .unwrap()
        .iter()
        .filter(|p| p.review == "accepted" && p.kept)
        .map(|p| p.number)
        .collect();
    let mut order = vec![];
    for n in 1..=8 {
        let mut text = String::new();
        zip.by_name(&format!("metadata/{n}.json")).unwrap().read_to_string(&mut text).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        order.push(v["piece"].as_i64().unwrap());
    }
    assert_eq!(order.iter().copied().collect::<HashSet<_>>(), kept, "exactly the kept pieces");
    let mut sorted = order.clone();
    sorted.sort();
    assert_ne!(order, sorted, "shuffled");
    workers.shutdown().await;
}

/// Re-cook after a stop: the pieces a stop left unmade are made, the
/// made ones stay; a piece never submitted keeps its draw, one whose job
/// the stop cancelled gets the next attempt (a new key, a new job), and
/// every piece is charged once.
async fn a_stopped_cook_is_cooked_again(db: TestDb) {
    let env = setup(db).await;
    let id = collection(&env, "Skies").await;
    let r = recipe(&env, 10, &[]).await;
    env.station.save_recipe(&env.owner, &id, &r).await.unwrap();
    env.station.start_cook(&env.owner, &id, Some(11)).await.unwrap();
    // Not stopped, not done: nothing to re-cook.
    assert_eq!(fields(env.station.control_cook(&env.owner, &id, "recook").await.unwrap_err()), ["action"]);
    // One pass of the driver queues max_in_flight (4) jobs; no worker runs them.
    env.station.drive_cook(&id, "test-driver").await.unwrap();
    let drawn = env.station.cook_pieces(&env.owner, &id).await.unwrap();
    assert_eq!(drawn.iter().filter(|p| p.status == "submitted").count(), 4);
    let stopped = env.station.control_cook(&env.owner, &id, "stop").await.unwrap();
    assert_eq!((stopped.status.as_str(), stopped.stopped), ("stopped", 6));
    // The driver records the cancelled jobs' pieces as stopped.
    env.station.drive_cook(&id, "test-driver").await.unwrap();
    let c = env.station.cook_status(&env.owner, &id).await.unwrap().unwrap();
    assert_eq!((c.stopped, c.in_flight, c.done), (10, 0, 0), "{}", c.progress_text);
    wait_settled(&env, (1000, 0)).await;

    let again = env.station.control_cook(&env.owner, &id, "recook").await.unwrap();
    assert_eq!((again.status.as_str(), again.pending, again.stopped), ("running", 10, 0));
    let workers = Workers::start(&env.station);
    let done = wait_cook(&env, &env.station, &id, |c| c.status == "done").await;
    assert_eq!((done.done, done.failed, done.stopped), (10, 0, 0), "{}", done.progress_text);
    let made = env.station.cook_pieces(&env.owner, &id).await.unwrap();
    for (before, after) in drawn.iter().zip(&made) {
        assert_eq!(before.traits, after.traits, "piece {}: same traits", before.number);
        if before.status == "submitted" {
            assert_eq!(after.attempt, 1, "piece {}: its cancelled job is not taken again", before.number);
            assert_ne!(after.job_id, before.job_id);
        } else {
            assert_eq!((after.attempt, after.seed, &after.params), (0, before.seed, &before.params));
        }
    }
    let jobs = env
        .db
        .store
        .list_jobs(&JobFilter { account_id: Some(env.owner.id.clone()), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 14, "4 cancelled by the stop, then one per piece");
    wait_settled(&env, (990, 0)).await;
    let problems = env.station.audit_points().await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    // Everything made: a re-cook has nothing to do.
    let e = env.station.control_cook(&env.owner, &id, "recook").await.unwrap_err();
    assert_eq!(fields(e), ["action"]);
    workers.shutdown().await;
}

/// A recipe that casts a spell (watermark the trait's text, then mirror):
/// each piece is one cast of the spell with its traits filled in, charged
/// per step, and a refused spell input is named by field.
async fn a_recipe_casts_a_spell(db: TestDb) {
    let env = setup(db).await;
    let spell: station_core::spells::SpellSpec = serde_json::from_value(json!({
        "slug": "stamp-and-mirror", "name": "Stamp and mirror",
        "steps": [
            {"tool": "watermark", "params": {"opacity": 1},
             "inputs_from": {"image": "input.image", "text": "input.text"}},
            {"tool": "flip", "params": {"direction": "horizontal"}, "inputs_from": {"image": "step1.output[0]"}},
        ],
    }))
    .unwrap();
    env.station.create_spell(&env.owner, spell).await.unwrap();
    let id = collection(&env, "Mirrored skies").await;
    let image = env.station.media.put_image(png(48, 32), Some(&env.owner.id), None, "input").await.unwrap();
    let mut r = json!({
        "spell": "stamp-and-mirror",
        "params": {"image": format!("media:{}", image.id), "text": "[[Sky]]", "colour": "red"},
        "supply": 4,
        "categories": [{"name": "Sky", "traits": [{"name": "Dawn", "value": "dawn"}, {"name": "Dusk", "value": "dusk"}]}],
    });
    let e = env.station.save_recipe(&env.owner, &id, &r).await.unwrap_err();
    assert_eq!(fields(e), ["params.colour"], "the spell has no such input");
    r["params"].as_object_mut().unwrap().remove("colour");
    env.station.save_recipe(&env.owner, &id, &r).await.unwrap();
    env.station.start_cook(&env.owner, &id, Some(5)).await.unwrap();
    let workers = Workers::start(&env.station);
    let done = wait_cook(&env, &env.station, &id, |c| c.status == "done").await;
    assert_eq!((done.done, done.failed), (4, 0), "{}", done.progress_text);
    for p in env.station.cook_pieces(&env.owner, &id).await.unwrap() {
        let cast = env.station.cast_view(&env.owner, p.job_id.as_deref().unwrap()).await.unwrap().expect("a cast");
        assert_eq!(cast.spell, "stamp-and-mirror");
        assert_eq!(cast.status, "succeeded");
        assert_eq!(cast.inputs["text"], json!(p.traits[0].value), "piece {}", p.number);
        assert_eq!(p.media_id.as_deref(), cast.outputs.first().map(String::as_str), "the last step's image");
    }
    wait_settled(&env, (1000 - 4 * 2, 0)).await;
    workers.shutdown().await;
}

on_every_db!(
    a_recipe_is_refused_field_by_field,
    a_stopped_cook_is_cooked_again,
    a_recipe_casts_a_spell,
    a_200_piece_cook_survives_a_crash,
    reviewers_never_share_a_piece_then_cull_and_export,
);
