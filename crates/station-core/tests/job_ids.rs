//! Job ids as people type them: unique prefixes, ambiguous and malformed
//! ones, and short ids that stay unique — on both databases.

use serde_json::json;
use station_core::{Config, JobIdError, Station, SubmitRequest};
use station_store::testing;

fn png() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    station_media::image::RgbImage::from_pixel(4, 4, station_media::image::Rgb([9, 9, 9]))
        .write_to(&mut out, station_media::image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

#[tokio::test]
async fn prefixes_name_one_job_and_short_ids_stay_unique() {
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        let st = Station::with_store(config, db.store.clone()).unwrap().0;
        let acct = st.account("local", "ann", "Ann").await.unwrap();
        let img = st.media.put_image(png(), Some(&acct.id), None, "input").await.unwrap();
        let mut ids = vec![];
        for _ in 0..3 {
            let params = json!({"image": format!("media:{}", img.id), "width": 2}).as_object().cloned().unwrap();
            let req = SubmitRequest { tool: "resize".into(), params, ..Default::default() };
            ids.push(st.submit(&acct, req).await.unwrap().id);
        }
        let kind = db.kind;
        for id in &ids {
            // The whole id, in capitals too, and its short form name it.
            assert_eq!(&st.resolve_job_id(id).await.unwrap(), id, "{kind}");
            assert_eq!(&st.resolve_job_id(&id.to_uppercase()).await.unwrap(), id, "{kind}");
            let short = st.short_job_id(id).await.unwrap();
            assert!(short.len() >= station_core::jobs::SHORT_ID_MIN && id.starts_with(&short), "{kind}: {short}");
            assert!(!short.ends_with('-'), "{kind}: {short}");
            assert_eq!(&st.resolve_job_id(&short).await.unwrap(), id, "{kind}: {short}");
        }
        // Jobs made together share their first characters (the time).
        match st.resolve_job_id(&ids[0][..4]).await {
            Err(JobIdError::Ambiguous { first, second, .. }) => {
                assert!(ids.contains(&first) && ids.contains(&second) && first != second, "{kind}");
            }
            other => panic!("{kind}: expected ambiguous, got {other:?}"),
        }
        assert!(matches!(st.resolve_job_id("ffffffff").await, Err(JobIdError::NotFound(_))), "{kind}");
        for bad in ["abc", "0190%", "01_9", "zz-zz-zz"] {
            assert!(matches!(st.resolve_job_id(bad).await, Err(JobIdError::Malformed(_))), "{kind}: {bad}");
        }
    }
}
