//! URL previews over HTTP: pages served on loopback by the test itself, refused by the
//! default IP block-list and previewed once the test's address is allowed (OpenGraph fields,
//! the image stored as `mxc://`), redirects into blocked ranges, size limits, failures, the
//! cache, and the image passing the virus scanner like any upload.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get as route_get,
};
use ranvier_test::{Backend, TestServer, backend_tests, encode};
use serde_json::Value;

use crate::{
    builder,
    media::{Raw, clamd_address, download_path, eicar, get, mxc_parts, png},
    start,
};

const PREVIEW: &str = "/_matrix/client/v1/media/preview_url";
const LEGACY_PREVIEW: &str = "/_matrix/media/v3/preview_url";
/// The page size limit the tests configure.
const PAGE_LIMIT: usize = 100_000;

/// What the test site counts and serves.
#[derive(Clone)]
struct Site {
    hits: Arc<AtomicUsize>,
    image: Arc<Vec<u8>>,
    /// Where `/redirect-away` points.
    away: String,
}

/// A site on loopback; returns its address and hit counter.
async fn serve_site(ip: &str, away: String) -> (SocketAddr, Arc<AtomicUsize>, Arc<Vec<u8>>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind the test site");
    let address = listener.local_addr().expect("test site address");
    let site = Site { hits: Arc::new(AtomicUsize::new(0)), image: Arc::new(png(64, 48)), away };
    let hits = site.hits.clone();
    let image = site.image.clone();
    let router = Router::new()
        .route("/page", route_get(page))
        .route("/plain", route_get(plain))
        .route("/image.png", route_get(image_png))
        .route("/infected-page", route_get(infected_page))
        .route("/infected.png", route_get(infected_png))
        .route("/redirect-here", route_get(|| async { redirect("/page") }))
        .route("/redirect-away", route_get(|State(site): State<Site>| async move { redirect(&site.away) }))
        .route("/redirect-loop", route_get(|| async { redirect("/redirect-loop") }))
        .route("/big", route_get(|| async { html(format!("<title>big</title>{}", "x".repeat(PAGE_LIMIT * 2))) }))
        .route("/big-chunked", route_get(big_chunked))
        .route("/missing", route_get(|| async { (StatusCode::NOT_FOUND, "nothing here") }))
        .route("/text", route_get(|| async { ([(header::CONTENT_TYPE, "text/plain")], "just text") }))
        .layer(axum::middleware::from_fn_with_state(site.clone(), count))
        .with_state(site);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (address, hits, image)
}

async fn count(State(site): State<Site>, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    site.hits.fetch_add(1, Ordering::SeqCst);
    next.run(request).await
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn redirect(location: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location.to_owned())]).into_response()
}

async fn page() -> Response {
    html(
        r#"<!doctype html><html><head><title>Fallback title</title>
        <meta property="og:title" content="Ranvier &amp; friends">
        <meta property="og:description" content="A page about a homeserver">
        <meta property="og:image" content="/image.png">
        <meta property="og:image:width" content="9999">
        <meta property="og:site_name" content="Test site">
        <script>var s = '<meta property="og:title" content="not this">';</script>
        </head><body>hello</body></html>"#
            .to_owned(),
    )
}

async fn plain() -> Response {
    html("<html><head><title>  Only a\n title </title><meta name=\"description\" content=\"Described\"></head>".into())
}

async fn image_png(State(site): State<Site>) -> Response {
    ([(header::CONTENT_TYPE, "image/png")], site.image.as_ref().clone()).into_response()
}

async fn infected_page() -> Response {
    html(r#"<meta property="og:title" content="Infected"><meta property="og:image" content="/infected.png">"#.into())
}

/// A real PNG with the EICAR test string after its end: an image to the sniffer, malware to
/// the scanner.
async fn infected_png() -> Response {
    let mut bytes = png(16, 16);
    bytes.extend(eicar());
    ([(header::CONTENT_TYPE, "image/png")], bytes).into_response()
}

async fn big_chunked() -> Response {
    let chunks = (0..40).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 8 * 1024]));
    let mut response = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/html"));
    response
}

async fn preview(server: &TestServer, token: Option<&str>, url: &str) -> Raw {
    get(server, &format!("{PREVIEW}?url={}", encode(url)), token).await
}

/// Previews are off by default, and the default block-list refuses loopback addresses (as
/// literals and through DNS) without ever connecting.
async fn previews_refused_by_default(backend: Backend) {
    let (site, hits, _) = serve_site("127.0.0.1", String::new()).await;
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    preview(&server, token, &format!("http://{site}/page")).await.assert_error(403, "M_FORBIDDEN", "disabled");
    drop(server);

    let server = builder(backend).env("RANVIER_MEDIA__URL_PREVIEW__ENABLED", "true").start().await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    for url in [
        format!("http://{site}/page"),
        format!("http://localhost:{}/page", site.port()),
        format!("http://[::ffff:127.0.0.1]:{}/page", site.port()),
        format!("http://[::1]:{}/page", site.port()),
    ] {
        preview(&server, token, &url).await.assert_error(403, "M_FORBIDDEN", &url);
    }
    preview(&server, token, "ftp://example.org/").await.assert_error(400, "M_INVALID_PARAM", "ftp URL");
    preview(&server, token, "not a url").await.assert_error(400, "M_INVALID_PARAM", "not a URL");
    preview(&server, None, &format!("http://{site}/page")).await.assert_error(401, "M_MISSING_TOKEN", "no token");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no request reached the blocked site");
}

/// With the test's address allowed: OpenGraph data and the image as `mxc://`, fallbacks,
/// the cache, the legacy endpoint, redirects (and redirects into blocked ranges), size limits
/// and upstream failures.
async fn previews_of_an_allowed_site(backend: Backend) {
    // A second site on another loopback address stays blocked: redirects must not reach it.
    let (blocked_site, blocked_hits, _) = serve_site("127.0.0.2", String::new()).await;
    let (site, hits, image) = serve_site("127.0.0.1", format!("http://{blocked_site}/page")).await;
    let mut server = builder(backend)
        .env("RANVIER_MEDIA__URL_PREVIEW__ENABLED", "true")
        .env("RANVIER_MEDIA__URL_PREVIEW__IP_RANGE_WHITELIST", "[\"127.0.0.1/32\"]")
        .env("RANVIER_MEDIA__URL_PREVIEW__MAX_PAGE_BYTES", &PAGE_LIMIT.to_string())
        .start()
        .await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let url = format!("http://{site}/page");

    let reply = preview(&server, token, &url).await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.json(), server.log_report());
    let og = reply.json();
    assert_eq!(og["og:title"], "Ranvier & friends", "{og}");
    assert_eq!(og["og:description"], "A page about a homeserver");
    assert_eq!(og["og:site_name"], "Test site");
    assert_eq!(og["og:image:type"], "image/png");
    assert_eq!((og["og:image:width"].as_u64(), og["og:image:height"].as_u64()), (Some(64), Some(48)), "real size");
    assert_eq!(og["matrix:image:size"].as_u64(), Some(image.len() as u64));
    let media = mxc_parts(&og["og:image"]);
    assert_eq!(media.0, server.server_name());
    let download = get(&server, &download_path(&media), token).await;
    assert_eq!(download.status, 200);
    assert_eq!(&download.body, image.as_ref(), "the page's image is stored as media");
    let fetched = hits.load(Ordering::SeqCst);
    assert_eq!(fetched, 2, "the page and its image");

    // The cache answers the same URL again, also for another user and on the legacy endpoint.
    let bob = server.register("bob").await;
    let again = preview(&server, Some(&bob.access_token), &url).await;
    assert_eq!(again.json(), og);
    let legacy = get(&server, &format!("{LEGACY_PREVIEW}?url={}", encode(&url)), token).await;
    assert_eq!(legacy.status, 200, "{}", legacy.json());
    assert_eq!(legacy.json(), og);
    let past = get(&server, &format!("{PREVIEW}?url={}&ts=1000", encode(&url)), token).await;
    assert_eq!(past.json(), og, "a newer preview answers for a time that has none");
    assert_eq!(hits.load(Ordering::SeqCst), fetched, "previews are cached");

    let plain = preview(&server, token, &format!("http://{site}/plain")).await.json();
    assert_eq!(plain["og:title"], "Only a title", "{plain}");
    assert_eq!(plain["og:description"], "Described");
    assert!(plain.get("og:image").is_none(), "{plain}");
    let text = preview(&server, token, &format!("http://{site}/text")).await;
    assert_eq!((text.status, text.json()), (200, serde_json::json!({})), "nothing to preview in plain text");
    let direct = preview(&server, token, &format!("http://{site}/image.png")).await.json();
    assert_eq!(direct["og:image:type"], "image/png", "an image URL previews as its image: {direct}");
    assert_eq!(direct["matrix:image:size"].as_u64(), Some(image.len() as u64));

    let followed = preview(&server, token, &format!("http://{site}/redirect-here")).await;
    assert_eq!(followed.json()["og:title"], "Ranvier & friends", "redirects on allowed addresses are followed");
    preview(&server, token, &format!("http://{site}/redirect-away")).await.assert_error(
        403,
        "M_FORBIDDEN",
        "a redirect into a blocked range",
    );
    preview(&server, token, &format!("http://{blocked_site}/page")).await.assert_error(
        403,
        "M_FORBIDDEN",
        "127.0.0.2 is not whitelisted",
    );
    assert_eq!(blocked_hits.load(Ordering::SeqCst), 0, "nothing ever connected to the blocked site");
    preview(&server, token, &format!("http://{site}/redirect-loop")).await.assert_error(
        502,
        "M_UNKNOWN",
        "too many redirects",
    );

    preview(&server, token, &format!("http://{site}/big")).await.assert_error(502, "M_TOO_LARGE", "declared length");
    preview(&server, token, &format!("http://{site}/big-chunked")).await.assert_error(
        502,
        "M_TOO_LARGE",
        "streamed body",
    );
    preview(&server, token, &format!("http://{site}/missing")).await.assert_error(502, "M_UNKNOWN", "404 page");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(9);
    preview(&server, token, &format!("http://127.0.0.1:{closed}/")).await.assert_error(
        502,
        "M_UNKNOWN",
        "nothing listening",
    );
    assert!(server.is_running());
}

/// The image of a preview passes the virus scanner: an infected one is left out.
async fn preview_images_are_scanned(backend: Backend) {
    let Some(address) = clamd_address().await else {
        return;
    };
    let (site, _, _) = serve_site("127.0.0.1", String::new()).await;
    let server = builder(backend)
        .env("RANVIER_MEDIA__URL_PREVIEW__ENABLED", "true")
        .env("RANVIER_MEDIA__URL_PREVIEW__IP_RANGE_WHITELIST", "[\"127.0.0.1\"]")
        .env("RANVIER_MEDIA__SCANNER", "clamav")
        .env("RANVIER_MEDIA__CLAMAV__ADDRESS", &address)
        .start()
        .await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let reply = preview(&server, token, &format!("http://{site}/infected-page")).await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    let og: Value = reply.json();
    assert_eq!(og["og:title"], "Infected");
    assert!(og.get("og:image").is_none() && og.get("matrix:image:size").is_none(), "{og}");
    assert!(server.log().contains("upload refused"), "the refusal is logged");
    let clean = preview(&server, token, &format!("http://{site}/page")).await.json();
    assert!(clean["og:image"].as_str().is_some_and(|uri| uri.starts_with("mxc://")), "{clean}");
}

backend_tests!(previews_refused_by_default, previews_of_an_allowed_site, preview_images_are_scanned);
