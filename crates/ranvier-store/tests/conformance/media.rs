//! Conformance of the media store: last access (recorded forward only, in batches) and the
//! retention listing built on it, and the URL preview cache.

use ranvier_store::media::{MediaContent, UrlPreviewRow};
use ranvier_test::{Backend, backend_tests};

use super::fresh;

fn content(sha: char, uploaded_ts: i64) -> MediaContent {
    MediaContent {
        content_type: "text/plain".into(),
        upload_name: None,
        sha256: sha.to_string().repeat(64),
        size: 1,
        uploaded_ts,
    }
}

async fn last_access_and_retention(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    let ok = |result: ranvier_core::Result<()>| result.unwrap_or_else(|e| panic!("{e}"));
    ok(store.insert_media("here", "old", "@a:here", &content('a', 100), true).await);
    ok(store.insert_media("here", "used", "@a:here", &content('b', 100), true).await);
    ok(store.insert_media("here", "new", "@a:here", &content('c', 5_000), true).await);
    ok(store.insert_media("here", "quarantined", "@a:here", &content('d', 100), true).await);
    ok(store.insert_media("remote.example", "cached", "@b:remote.example", &content('e', 100), true).await);
    let created = store.create_pending_media("here", "pending", "@a:here", 100, 1_000_000, true, 10).await;
    assert!(created.unwrap_or_else(|e| panic!("{e}")));
    assert!(store.quarantine_media("here", "quarantined", "admin", 200).await.unwrap_or_else(|e| panic!("{e}")));

    let row = store.get_media("here", "old").await.unwrap_or_else(|e| panic!("{e}")).expect("media");
    assert_eq!(row.last_access_ts, Some(100), "an upload counts as the first access");

    // Forward only, in one batch; unknown media is ignored.
    let batch = vec![
        ("here".to_owned(), "used".to_owned(), 4_000),
        ("here".to_owned(), "new".to_owned(), 10),
        ("here".to_owned(), "nothing".to_owned(), 4_000),
    ];
    ok(store.record_media_access(&batch).await);
    ok(store.record_media_access(&[]).await);
    let last = |id: &'static str| {
        let store = store.clone();
        async move { store.get_media("here", id).await.unwrap_or_else(|e| panic!("{e}")).expect("media").last_access_ts }
    };
    assert_eq!(last("used").await, Some(4_000));
    assert_eq!(last("new").await, Some(5_000), "an older access does not move the last access back");

    let local = store.media_not_accessed_since("here", true, 3_000, 10).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(local, vec![("here".to_owned(), "old".to_owned())], "quarantined and pending media are not listed");
    let remote = store.media_not_accessed_since("here", false, 3_000, 10).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(remote, vec![("remote.example".to_owned(), "cached".to_owned())]);
    let all = store.media_not_accessed_since("here", true, i64::MAX, 2).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.len(), 2, "the limit holds");
    assert_eq!(all[0].1, "old", "least recently used first");
}

async fn url_preview_cache(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    let row = UrlPreviewRow {
        url: "https://example.org/".into(),
        period_ts: 3_600_000,
        fetched_ts: 3_600_500,
        og: r#"{"og:title":"Example"}"#.into(),
        image_media_id: Some("img".into()),
    };
    assert_eq!(store.get_url_preview(&row.url, row.period_ts).await.unwrap_or_else(|e| panic!("{e}")), None);
    store.insert_url_preview(&row).await.unwrap_or_else(|e| panic!("{e}"));
    let later = UrlPreviewRow { og: "{}".into(), fetched_ts: 3_600_900, image_media_id: None, ..row.clone() };
    store.insert_url_preview(&later).await.unwrap_or_else(|e| panic!("{e}"));
    let stored = store.get_url_preview(&row.url, row.period_ts).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored, Some(row.clone()), "the first preview of a period wins");
    assert_eq!(store.get_url_preview(&row.url, 0).await.unwrap_or_else(|e| panic!("{e}")), None, "periods differ");

    assert_eq!(store.delete_url_previews_before(3_600_500).await.unwrap_or_else(|e| panic!("{e}")), 0);
    assert_eq!(store.delete_url_previews_before(3_600_501).await.unwrap_or_else(|e| panic!("{e}")), 1);
    assert_eq!(store.get_url_preview(&row.url, row.period_ts).await.unwrap_or_else(|e| panic!("{e}")), None);
}

backend_tests!(last_access_and_retention, url_preview_cache);
