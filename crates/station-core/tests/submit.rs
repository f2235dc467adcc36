//! Submitting jobs through the core: parameter precedence, validation,
//! ownership of inputs, command mapping and queue views — on both databases.

use serde_json::{Map, Value, json};
use station_core::{Config, Station, SubmitError, SubmitRequest};
use station_store::{JobStatus, testing};

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

async fn station(db: &testing::TestDb, dir: &std::path::Path, edit: impl FnOnce(&mut Config)) -> Station {
    let mut config = Config { data_dir: dir.to_path_buf(), ..Config::default() };
    edit(&mut config);
    Station::with_store(config, db.store.clone()).unwrap().0
}

fn png() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    station_media::image::RgbImage::from_pixel(4, 4, station_media::image::Rgb([9, 9, 9]))
        .write_to(&mut out, station_media::image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

#[tokio::test]
async fn explicit_beats_saved_beats_default() {
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path(), |_| {}).await;
        let acct = st.account("local", "ann", "Ann").await.unwrap();
        let img = st.media.put_image(png(), Some(&acct.id), None, "input").await.unwrap();
        let image = json!(format!("media:{}", img.id));
        // Default only.
        let j = st
            .submit(
                &acct,
                SubmitRequest { tool: "upscale".into(), params: params(json!({"image": image})), ..Default::default() },
            )
            .await
            .unwrap();
        assert_eq!(j.params_json()["scale_by"], json!(2.0), "{}", db.kind);
        // Saved preference wins over the default.
        db.store.save_tool_settings(&acct.id, "upscale", &params(json!({"scale_by": 3.0})), 1).await.unwrap();
        let j = st
            .submit(
                &acct,
                SubmitRequest { tool: "upscale".into(), params: params(json!({"image": image})), ..Default::default() },
            )
            .await
            .unwrap();
        assert_eq!(j.params_json()["scale_by"], json!(3.0), "{}", db.kind);
        // Explicit wins over both, given as text from a chat or CLI.
        let j = st
            .submit(
                &acct,
                SubmitRequest {
                    tool: "/upscale".into(),
                    params: params(json!({"image": image, "scale_by": "1.5"})),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(j.params_json()["scale_by"], json!(1.5), "{}", db.kind);
        assert_eq!(j.status(), JobStatus::Queued);
    }
}

#[tokio::test]
async fn every_bad_field_is_reported_and_nothing_is_written() {
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path(), |_| {}).await;
        let acct = st.account("local", "ann", "Ann").await.unwrap();
        let err = st
            .submit(
                &acct,
                SubmitRequest {
                    tool: "upscale".into(),
                    params: params(json!({"scale_by": 99, "colour": "red"})),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        let SubmitError::Invalid(fields) = err else { panic!("expected invalid, got {err}") };
        let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        assert!(names.contains(&"scale_by") && names.contains(&"colour") && names.contains(&"image"), "{names:?}");
        assert!(db.store.list_jobs(&Default::default()).await.unwrap().is_empty());
        let err = st.submit(&acct, SubmitRequest { tool: "nope".into(), ..Default::default() }).await.unwrap_err();
        assert!(err.to_string().contains("unknown tool"), "{err}");
    }
}

#[tokio::test]
async fn image_inputs_must_belong_to_the_caller() {
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path(), |_| {}).await;
        let ann = st.account("local", "ann", "Ann").await.unwrap();
        let bob = st.account("local", "bob", "Bob").await.unwrap();
        let img = st.media.put_image(png(), Some(&ann.id), None, "input").await.unwrap();
        let err = st
            .submit(
                &bob,
                SubmitRequest {
                    tool: "invert".into(),
                    params: params(json!({"image": format!("media:{}", img.id)})),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, SubmitError::Invalid(ref f) if f[0].field == "image"), "{err}");
        assert!(st.media.get(&img.id, Some(&bob)).await.is_err(), "bob must not read ann's media");
    }
}

#[tokio::test]
async fn operator_maps_a_command_to_another_tool_and_users_cannot_raise_priority() {
    let db = testing::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let st = station(&db, dir.path(), |c| {
        c.commands.insert("upscale".into(), "resize".into());
    })
    .await;
    let acct = st.account("local", "ann", "Ann").await.unwrap();
    assert_eq!(st.find_tool("upscale", &acct).unwrap().id, "resize");
    assert_eq!(st.find_tool("/upscale", &acct).unwrap().id, "resize");
    let img = st.media.put_image(png(), Some(&acct.id), None, "input").await.unwrap();
    let j = st
        .submit(
            &acct,
            SubmitRequest {
                tool: "upscale".into(),
                params: params(json!({"image": format!("media:{}", img.id), "width": 8})),
                priority: 9,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((j.tool_id.as_str(), j.service.as_str(), j.priority), ("resize", "media", 0));
}

#[tokio::test]
async fn queued_jobs_report_their_position() {
    let db = testing::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let st = station(&db, dir.path(), |_| {}).await;
    let acct = st.account("local", "ann", "Ann").await.unwrap();
    let img = st.media.put_image(png(), Some(&acct.id), None, "input").await.unwrap();
    let mut last = None;
    for _ in 0..3 {
        let req = SubmitRequest {
            tool: "invert".into(),
            params: params(json!({"image": format!("media:{}", img.id)})),
            ..Default::default()
        };
        last = Some(st.submit(&acct, req).await.unwrap());
    }
    let view = st.job_view(&last.unwrap().id).await.unwrap().unwrap();
    assert_eq!(view.queue_position, Some(2));
}
