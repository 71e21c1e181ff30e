//! The media repository over HTTP: uploads (plain and asynchronous), authenticated and
//! frozen legacy downloads with their headers, thumbnails of real images, size limits, and
//! content scanning against a real `clamd` (started by `scripts/clamav-test-setup.sh`).

use std::{io::Cursor, path::Path, time::Duration};

use image::{DynamicImage, ImageFormat, RgbImage, RgbaImage};
use ranvier_test::{Backend, Method, TestServer, User, backend_tests, encode};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::{builder, start};

const UPLOAD: &str = "/_matrix/media/v3/upload";
const CREATE: &str = "/_matrix/media/v1/create";
const CONFIG: &str = "/_matrix/client/v1/media/config";
const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                   style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// A whole response with its body as bytes.
pub(crate) struct Raw {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Raw {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or("")
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Panic unless this is the Matrix error `errcode` with `status`.
    #[track_caller]
    pub(crate) fn assert_error(&self, status: u16, errcode: &str, what: &str) {
        let body = self.json();
        assert_eq!(
            (self.status, body["errcode"].as_str()),
            (status, Some(errcode)),
            "{what}: expected {status} {errcode}, got {} {body}",
            self.status
        );
        assert!(body["error"].is_string(), "{what}: a standard error body has an `error` string: {body}");
        assert!(self.header("content-type").starts_with("application/json"), "{what}: errors are JSON");
    }
}

/// Send a request with a raw body and read the raw response.
pub(crate) async fn send(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<(Vec<u8>, Option<&str>)>,
    headers: &[(&str, &str)],
) -> Raw {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("HTTP client");
    let mut request = client.request(method, format!("{}{path}", server.base_url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some((bytes, content_type)) = body {
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request = request.body(bytes);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{path}: no response: {e}\n{}", server.log_report()));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    Raw { status, headers, body }
}

pub(crate) async fn get(server: &TestServer, path: &str, token: Option<&str>) -> Raw {
    send(server, Method::GET, path, token, None, &[]).await
}

/// `POST /upload`; returns the raw reply.
pub(crate) async fn upload_raw(
    server: &TestServer,
    user: &User,
    bytes: &[u8],
    content_type: Option<&str>,
    filename: Option<&str>,
) -> Raw {
    let path = match filename {
        Some(name) => format!("{UPLOAD}?filename={}", encode(name)),
        None => UPLOAD.to_owned(),
    };
    send(server, Method::POST, &path, Some(&user.access_token), Some((bytes.to_vec(), content_type)), &[]).await
}

/// Upload and return `(server_name, media_id)` of the new `mxc://` URI.
pub(crate) async fn upload(
    server: &TestServer,
    user: &User,
    bytes: &[u8],
    content_type: &str,
    filename: Option<&str>,
) -> (String, String) {
    let reply = upload_raw(server, user, bytes, Some(content_type), filename).await;
    assert_eq!(reply.status, 200, "upload: {}\n{}", reply.json(), server.log_report());
    mxc_parts(&reply.json()["content_uri"])
}

pub(crate) fn mxc_parts(uri: &Value) -> (String, String) {
    let uri = uri.as_str().unwrap_or_else(|| panic!("content_uri is a string: {uri}"));
    let rest = uri.strip_prefix("mxc://").unwrap_or_else(|| panic!("an mxc:// URI: {uri}"));
    let (server_name, media_id) = rest.split_once('/').unwrap_or_else(|| panic!("mxc://server/id: {uri}"));
    assert!(
        !media_id.is_empty() && media_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "media ids use only A-Za-z0-9_-: {uri}"
    );
    (server_name.to_owned(), media_id.to_owned())
}

pub(crate) fn download_path((server_name, media_id): &(String, String)) -> String {
    format!("/_matrix/client/v1/media/download/{server_name}/{media_id}")
}

pub(crate) fn thumbnail_path((server_name, media_id): &(String, String), query: &str) -> String {
    format!("/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}?{query}")
}

/// A PNG with a colour gradient, so that resizing has something to do.
pub(crate) fn png(width: u32, height: u32) -> Vec<u8> {
    let image = RgbaImage::from_fn(width, height, |x, y| image::Rgba([(x % 256) as u8, (y % 256) as u8, 90, 255]));
    encode_image(DynamicImage::ImageRgba8(image), ImageFormat::Png)
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 200]));
    encode_image(DynamicImage::ImageRgb8(image), ImageFormat::Jpeg)
}

pub(crate) fn encode_image(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encode test image");
    out.into_inner()
}

/// Decode a served image, checking its format, and return its size.
#[track_caller]
pub(crate) fn decoded_size(bytes: &[u8], format: ImageFormat) -> (u32, u32) {
    assert_eq!(image::guess_format(bytes).ok(), Some(format), "the served image is {format:?}");
    let image = image::load_from_memory(bytes).expect("the served thumbnail decodes");
    (image.width(), image.height())
}

/// A PNG whose header announces `width`×`height` but which holds almost nothing: a
/// decompression bomb's shape, small on the wire and huge once decoded.
fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 6, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &header);
    chunk(&mut out, b"IDAT", &[0x78, 0x01, 0x01, 0x04, 0x00, 0xfb, 0xff, 0, 0, 0, 0, 0x00, 0x04, 0x00, 0x01]);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Every file under `dir`.
pub(crate) fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

pub(crate) fn stored_files(server: &TestServer) -> usize {
    files_under(&server.data_dir().join("media").join("content")).len()
}

/// Check the headers every served file carries.
#[track_caller]
fn assert_media_headers(reply: &Raw, what: &str) {
    assert_eq!(reply.header("content-security-policy"), CSP, "{what}");
    assert_eq!(reply.header("cross-origin-resource-policy"), "cross-origin", "{what}");
    assert_eq!(reply.header("x-content-type-options"), "nosniff", "{what}");
    assert!(
        reply.header("cache-control").contains("max-age="),
        "{what}: cache-control {}",
        reply.header("cache-control")
    );
    assert_eq!(reply.header("content-length"), reply.body.len().to_string(), "{what}");
}

/// Upload, download with the right headers, the file name override, and the errors.
async fn upload_and_download(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;

    let config = get(&server, CONFIG, Some(&alice.access_token)).await;
    assert_eq!(config.status, 200);
    assert_eq!(config.json()["m.upload.size"], json!(50 * 1024 * 1024));
    get(&server, CONFIG, None).await.assert_error(401, "M_MISSING_TOKEN", "config without a token");

    let picture = png(64, 48);
    let media = upload(&server, &alice, &picture, "image/png", Some("cat.png")).await;
    assert_eq!(media.0, server.server_name());

    let reply = get(&server, &download_path(&media), Some(&alice.access_token)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, picture, "the bytes come back unchanged");
    assert_eq!(reply.header("content-type"), "image/png");
    assert_eq!(reply.header("content-disposition"), "inline; filename=\"cat.png\"");
    assert_media_headers(&reply, "download");
    assert!(reply.header("cache-control").contains("private"), "authenticated media is not for shared caches");

    // Another user may download it too: knowing the URI is enough, with a token.
    let bob = server.register("bob").await;
    assert_eq!(get(&server, &download_path(&media), Some(&bob.access_token)).await.body, picture);

    // The file name in the path replaces the uploaded one; non-ASCII names use RFC 5987.
    let renamed =
        get(&server, &format!("{}/{}", download_path(&media), encode("Straße 1.png")), Some(&alice.access_token)).await;
    assert_eq!(renamed.status, 200);
    assert_eq!(renamed.header("content-disposition"), "inline; filename*=utf-8''Stra%C3%9Fe%201.png");
    assert_eq!(renamed.body, picture);

    // Entity tags let clients revalidate without downloading again.
    let etag = reply.header("etag").to_owned();
    assert!(etag.len() > 2, "an ETag is sent");
    let revalidated = send(
        &server,
        Method::GET,
        &download_path(&media),
        Some(&alice.access_token),
        None,
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(revalidated.status, 304);
    assert!(revalidated.body.is_empty());

    // Types that a browser could run are attachments; no name given means no filename.
    let page = upload(&server, &alice, b"<script>alert(1)</script>", "text/html", Some("page.html")).await;
    let reply = get(&server, &download_path(&page), Some(&alice.access_token)).await;
    assert_eq!(reply.header("content-type"), "text/html");
    assert_eq!(reply.header("content-disposition"), "attachment; filename=\"page.html\"");
    assert_media_headers(&reply, "html download");
    let reply = upload_raw(&server, &alice, b"\x00\x01binary", None, None).await;
    assert_eq!(reply.status, 200, "an upload without Content-Type is accepted: {}", reply.json());
    let blob = mxc_parts(&reply.json()["content_uri"]);
    let reply = get(&server, &download_path(&blob), Some(&alice.access_token)).await;
    assert_eq!(reply.header("content-type"), "application/octet-stream");
    assert_eq!(reply.header("content-disposition"), "attachment");
    assert_eq!(reply.body, b"\x00\x01binary");

    // Identical content is stored once.
    let before = stored_files(&server);
    let again = upload(&server, &bob, &picture, "image/png", Some("copy.png")).await;
    assert_ne!(again, media, "each upload gets its own URI");
    assert_eq!(stored_files(&server), before, "identical uploads share one file");

    // Errors.
    get(&server, &download_path(&media), None).await.assert_error(401, "M_MISSING_TOKEN", "download without a token");
    get(&server, &download_path(&media), Some("wrong")).await.assert_error(
        401,
        "M_UNKNOWN_TOKEN",
        "download, bad token",
    );
    let unknown = (server.server_name().to_owned(), "doesNotExist123".to_owned());
    get(&server, &download_path(&unknown), Some(&alice.access_token)).await.assert_error(
        404,
        "M_NOT_FOUND",
        "unknown media",
    );
    let traversal = format!("/_matrix/client/v1/media/download/{}/..%2F..%2Fetc", server.server_name());
    get(&server, &traversal, Some(&alice.access_token)).await.assert_error(404, "M_NOT_FOUND", "invalid media id");
    let remote = ("other.example".to_owned(), media.1.clone());
    get(&server, &download_path(&remote), Some(&alice.access_token)).await.assert_error(
        404,
        "M_NOT_FOUND",
        "remote media",
    );
    let reply = send(&server, Method::POST, UPLOAD, None, Some((b"x".to_vec(), Some("text/plain"))), &[]).await;
    reply.assert_error(401, "M_MISSING_TOKEN", "upload without a token");
    let reply = upload_raw(&server, &alice, b"x", Some("text/plain"), Some("nul\0name")).await;
    reply.assert_error(400, "M_INVALID_PARAM", "file name with NUL");
}

/// Unauthenticated downloads are frozen by default; media uploaded while they were allowed
/// stays reachable there.
async fn legacy_endpoints_are_frozen(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let media = upload(&server, &alice, &png(40, 40), "image/png", Some("a.png")).await;
    let (server_name, media_id) = &media;
    let legacy_download = format!("/_matrix/media/v3/download/{server_name}/{media_id}");
    let legacy_thumbnail = format!("/_matrix/media/v3/thumbnail/{server_name}/{media_id}?width=32&height=32");
    get(&server, &legacy_download, None).await.assert_error(404, "M_NOT_FOUND", "frozen legacy download");
    get(&server, &legacy_download, Some(&alice.access_token)).await.assert_error(
        404,
        "M_NOT_FOUND",
        "with a token too",
    );
    get(&server, &legacy_thumbnail, None).await.assert_error(404, "M_NOT_FOUND", "frozen legacy thumbnail");
    assert_eq!(get(&server, &download_path(&media), Some(&alice.access_token)).await.status, 200);
    drop(server);

    let server = builder(backend).env("RANVIER_MEDIA__LEGACY_UNAUTHENTICATED", "true").start().await;
    let alice = server.register("alice").await;
    let bytes = png(40, 40);
    let (server_name, media_id) = upload(&server, &alice, &bytes, "image/png", Some("a.png")).await;
    let reply = get(&server, &format!("/_matrix/media/v3/download/{server_name}/{media_id}"), None).await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    assert_eq!(reply.body, bytes);
    assert_media_headers(&reply, "legacy download");
    let reply = get(&server, &format!("/_matrix/media/r0/download/{server_name}/{media_id}/b.png"), None).await;
    assert_eq!(reply.header("content-disposition"), "inline; filename=\"b.png\"");
    let reply = get(
        &server,
        &format!("/_matrix/media/v3/thumbnail/{server_name}/{media_id}?width=32&height=32&method=crop"),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    assert_eq!(decoded_size(&reply.body, ImageFormat::Png), (32, 32));
}

/// `/create` then `PUT /upload/{serverName}/{mediaId}`: waiting downloads, overwrites,
/// ownership and the pending limit.
async fn async_upload(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    let created = send(&server, Method::POST, CREATE, Some(&alice.access_token), None, &[]).await;
    assert_eq!(created.status, 200, "{}", created.json());
    let body = created.json();
    let media = mxc_parts(&body["content_uri"]);
    let expires = body["unused_expires_at"].as_i64().expect("unused_expires_at");
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    assert!(expires > now + 3_600_000, "the id stays usable for hours: {expires} vs {now}");

    get(&server, &format!("{}?timeout_ms=0", download_path(&media)), Some(&alice.access_token)).await.assert_error(
        504,
        "M_NOT_YET_UPLOADED",
        "download before the upload",
    );
    get(&server, &thumbnail_path(&media, "width=32&height=32&timeout_ms=100"), Some(&alice.access_token))
        .await
        .assert_error(504, "M_NOT_YET_UPLOADED", "thumbnail before the upload");

    let put_path = format!("/_matrix/media/v3/upload/{}/{}?filename=later.txt", media.0, media.1);
    let reply = send(
        &server,
        Method::PUT,
        &put_path,
        Some(&bob.access_token),
        Some((b"bob's".to_vec(), Some("text/plain"))),
        &[],
    )
    .await;
    reply.assert_error(403, "M_FORBIDDEN", "upload to another user's media id");

    // A download waiting for the content gets it as soon as it arrives.
    let waiting = {
        let path = format!("{}?timeout_ms=20000", download_path(&media));
        let token = alice.access_token.clone();
        let server = &server;
        async move { get(server, &path, Some(&token)).await }
    };
    let uploading = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        send(
            &server,
            Method::PUT,
            &put_path,
            Some(&alice.access_token),
            Some((b"arrived later".to_vec(), Some("text/plain"))),
            &[],
        )
        .await
    };
    let (downloaded, uploaded) = tokio::join!(waiting, uploading);
    assert_eq!(uploaded.status, 200, "{}", uploaded.json());
    assert_eq!(uploaded.json(), json!({}));
    assert_eq!(downloaded.status, 200, "{}", downloaded.json());
    assert_eq!(downloaded.body, b"arrived later");
    assert_eq!(downloaded.header("content-disposition"), "inline; filename=\"later.txt\"");

    let reply = send(
        &server,
        Method::PUT,
        &put_path,
        Some(&alice.access_token),
        Some((b"again".to_vec(), Some("text/plain"))),
        &[],
    )
    .await;
    reply.assert_error(409, "M_CANNOT_OVERWRITE_MEDIA", "second upload");
    assert_eq!(get(&server, &download_path(&media), Some(&alice.access_token)).await.body, b"arrived later");

    let unknown = format!("/_matrix/media/v3/upload/{}/neverCreated", server.server_name());
    let reply = send(&server, Method::PUT, &unknown, Some(&alice.access_token), Some((b"x".to_vec(), None)), &[]).await;
    reply.assert_error(404, "M_NOT_FOUND", "upload to an id that was never created");
    let reply = send(&server, Method::PUT, &put_path, None, Some((b"x".to_vec(), None)), &[]).await;
    reply.assert_error(401, "M_MISSING_TOKEN", "async upload without a token");

    // At most 10 pending ids per user.
    for i in 0..10 {
        let reply = send(&server, Method::POST, CREATE, Some(&bob.access_token), None, &[]).await;
        assert_eq!(reply.status, 200, "pending id {i}: {}", reply.json());
    }
    send(&server, Method::POST, CREATE, Some(&bob.access_token), None, &[]).await.assert_error(
        429,
        "M_LIMIT_EXCEEDED",
        "an eleventh pending id",
    );
    assert_eq!(send(&server, Method::POST, CREATE, Some(&alice.access_token), None, &[]).await.status, 200);
}

/// `max_upload_bytes` is enforced (and only it: uploads are not bound by the JSON limit).
async fn size_limits(backend: Backend) {
    let server = builder(backend)
        .env("RANVIER_MEDIA__MAX_UPLOAD_BYTES", "6000000")
        .env("RANVIER_LIMITS__MAX_REQUEST_BYTES", "1000")
        .start()
        .await;
    let alice = server.register("alice").await;
    assert_eq!(get(&server, CONFIG, Some(&alice.access_token)).await.json()["m.upload.size"], json!(6_000_000));

    let exactly = vec![7u8; 6_000_000];
    let media = upload(&server, &alice, &exactly, "application/octet-stream", None).await;
    let reply = get(&server, &download_path(&media), Some(&alice.access_token)).await;
    assert_eq!(reply.body.len(), 6_000_000);
    assert!(reply.body == exactly);

    let before = stored_files(&server);
    let over = vec![8u8; 6_000_001];
    upload_raw(&server, &alice, &over, Some("application/octet-stream"), None).await.assert_error(
        413,
        "M_TOO_LARGE",
        "one byte over the limit",
    );
    let created = send(&server, Method::POST, CREATE, Some(&alice.access_token), None, &[]).await;
    let pending = mxc_parts(&created.json()["content_uri"]);
    let put_path = format!("/_matrix/media/v3/upload/{}/{}", pending.0, pending.1);
    let reply = send(&server, Method::PUT, &put_path, Some(&alice.access_token), Some((over, None)), &[]).await;
    reply.assert_error(413, "M_TOO_LARGE", "async upload over the limit");
    assert_eq!(stored_files(&server), before, "refused uploads leave nothing behind");
    let staging = files_under(&server.data_dir().join("media").join("tmp"));
    assert!(staging.is_empty(), "no staging files are left: {staging:?}");
}

/// Thumbnails of PNG and JPEG at the standard sizes, originals for small images, and the
/// refusals: non-images, decompression bombs, bad parameters.
async fn thumbnails(backend: Backend) {
    let mut server = start(backend).await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let big_png = upload(&server, &alice, &png(1000, 800), "image/png", Some("big.png")).await;

    let crop = get(&server, &thumbnail_path(&big_png, "width=90&height=90&method=crop"), token).await;
    assert_eq!(crop.status, 200, "{}", crop.json());
    assert_eq!(crop.header("content-type"), "image/png");
    assert_eq!(crop.header("content-disposition"), "inline; filename=\"thumbnail.png\"");
    assert_media_headers(&crop, "thumbnail");
    assert_eq!(decoded_size(&crop.body, ImageFormat::Png), (96, 96), "the nearest standard crop size");

    let scale = get(&server, &thumbnail_path(&big_png, "width=300&height=200&method=scale"), token).await;
    assert_eq!(decoded_size(&scale.body, ImageFormat::Png), (300, 240), "fits 320x240, keeps 5:4");
    let default_method = get(&server, &thumbnail_path(&big_png, "width=600&height=400"), token).await;
    assert_eq!(decoded_size(&default_method.body, ImageFormat::Png), (600, 480), "scale by default, 640x480");
    let huge = get(&server, &thumbnail_path(&big_png, "width=2000&height=2000&method=crop"), token).await;
    assert_eq!(decoded_size(&huge.body, ImageFormat::Png), (750, 600), "the largest standard size");

    // A second request is served from the cache: the same bytes.
    let again = get(&server, &thumbnail_path(&big_png, "width=96&height=96&method=crop"), token).await;
    assert_eq!(again.body, crop.body);
    assert_eq!(again.header("etag"), crop.header("etag"));

    let photo = upload(&server, &alice, &jpeg(640, 480), "image/jpeg", Some("photo.jpg")).await;
    let reply = get(&server, &thumbnail_path(&photo, "width=320&height=240&method=scale"), token).await;
    assert_eq!(reply.header("content-type"), "image/jpeg");
    assert_eq!(reply.header("content-disposition"), "inline; filename=\"thumbnail.jpg\"");
    assert_eq!(decoded_size(&reply.body, ImageFormat::Jpeg), (320, 240));

    // Images no larger than the size asked for are never enlarged: the original comes back.
    let small_bytes = png(20, 10);
    let small = upload(&server, &alice, &small_bytes, "image/png", None).await;
    let reply = get(&server, &thumbnail_path(&small, "width=96&height=96&method=crop"), token).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, small_bytes);

    // The type is sniffed: a PNG uploaded as octet-stream is still an image.
    let unlabelled = upload(&server, &alice, &png(200, 200), "application/octet-stream", None).await;
    let reply = get(&server, &thumbnail_path(&unlabelled, "width=32&height=32&method=crop"), token).await;
    assert_eq!(decoded_size(&reply.body, ImageFormat::Png), (32, 32));

    let text = upload(&server, &alice, b"not an image at all", "image/png", None).await;
    get(&server, &thumbnail_path(&text, "width=32&height=32"), token).await.assert_error(
        400,
        "M_UNKNOWN",
        "thumbnail of something that is not an image",
    );
    let bomb = upload(&server, &alice, &png_bomb(100_000, 100_000), "image/png", Some("bomb.png")).await;
    get(&server, &thumbnail_path(&bomb, "width=32&height=32"), token).await.assert_error(
        413,
        "M_TOO_LARGE",
        "decompression bomb",
    );
    assert!(server.is_running(), "the bomb did not bring the server down");
    let reply = get(&server, &thumbnail_path(&big_png, "width=32&height=32&method=crop"), token).await;
    assert_eq!(reply.status, 200, "the server still thumbnails after a bomb");

    get(&server, &thumbnail_path(&big_png, "height=32"), token).await.assert_error(400, "M_INVALID_PARAM", "no width");
    get(&server, &thumbnail_path(&big_png, "width=-1&height=32"), token).await.assert_error(
        400,
        "M_INVALID_PARAM",
        "negative width",
    );
    get(&server, &thumbnail_path(&big_png, "width=32&height=32&method=stretch"), token).await.assert_error(
        400,
        "M_INVALID_PARAM",
        "unknown method",
    );
    get(&server, &thumbnail_path(&big_png, "width=32&height=32"), None).await.assert_error(
        401,
        "M_MISSING_TOKEN",
        "thumbnail without a token",
    );
    let unknown = (server.server_name().to_owned(), "nothingHere".to_owned());
    get(&server, &thumbnail_path(&unknown, "width=32&height=32"), token).await.assert_error(
        404,
        "M_NOT_FOUND",
        "unknown",
    );
}

/// The EICAR anti-virus test string, assembled here so that this source file does not itself
/// match scanners' signatures.
pub(crate) fn eicar() -> Vec<u8> {
    ["X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR", "-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"].concat().into_bytes()
}

/// The address of a running clamd: `RANVIER_TEST_CLAMAV_ADDRESS`, or the one
/// `scripts/clamav-test-setup.sh` starts (installing clamav-daemon if needed). `None` only
/// when `RANVIER_TEST_SKIP_CLAMAV=1`.
pub(crate) async fn clamd_address() -> Option<String> {
    if std::env::var("RANVIER_TEST_SKIP_CLAMAV").is_ok_and(|value| value == "1") {
        eprintln!("skipped: RANVIER_TEST_SKIP_CLAMAV=1");
        return None;
    }
    if let Ok(address) = std::env::var("RANVIER_TEST_CLAMAV_ADDRESS") {
        return Some(address);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/clamav-test-setup.sh");
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    let address = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        output.status.success() && address.starts_with("tcp://"),
        "{} failed ({}); set RANVIER_TEST_SKIP_CLAMAV=1 to skip the ClamAV tests\nstdout: {address}\nstderr: {}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Some(address)
}

/// With clamd: EICAR is refused and logged, clean files are stored and served.
async fn clamav_scanning(backend: Backend) {
    let Some(address) = clamd_address().await else {
        return;
    };
    let server = builder(backend)
        .env("RANVIER_MEDIA__SCANNER", "clamav")
        .env("RANVIER_MEDIA__CLAMAV__ADDRESS", &address)
        .start()
        .await;
    let alice = server.register("alice").await;

    let reply = upload_raw(&server, &alice, &eicar(), Some("text/plain"), Some("eicar.com")).await;
    reply.assert_error(403, "M_FORBIDDEN", "EICAR upload");
    let message = reply.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("Ranvier.Test.EICAR"), "the error names the detection: {message}");
    assert_eq!(stored_files(&server), 0, "the infected file is not stored");

    // Embedded in a larger file, it is found as well.
    let mut wrapped = b"some harmless text before ".to_vec();
    wrapped.extend(eicar());
    wrapped.extend(b" and after");
    upload_raw(&server, &alice, &wrapped, Some("application/octet-stream"), None).await.assert_error(
        403,
        "M_FORBIDDEN",
        "embedded EICAR",
    );

    // The asynchronous upload path is scanned too, and the id stays pending.
    let created = send(&server, Method::POST, CREATE, Some(&alice.access_token), None, &[]).await;
    let pending = mxc_parts(&created.json()["content_uri"]);
    let put_path = format!("/_matrix/media/v3/upload/{}/{}", pending.0, pending.1);
    let reply = send(&server, Method::PUT, &put_path, Some(&alice.access_token), Some((eicar(), None)), &[]).await;
    reply.assert_error(403, "M_FORBIDDEN", "EICAR async upload");
    get(&server, &format!("{}?timeout_ms=0", download_path(&pending)), Some(&alice.access_token)).await.assert_error(
        504,
        "M_NOT_YET_UPLOADED",
        "nothing was attached to the id",
    );
    assert_eq!(stored_files(&server), 0);

    let log = server.log();
    let refusals: Vec<&str> = log.lines().filter(|line| line.contains("upload refused")).collect();
    assert_eq!(refusals.len(), 3, "each refusal is logged once:\n{log}");
    assert!(refusals.iter().all(|line| line.contains("WARN") && line.contains(&alice.user_id)), "{refusals:#?}");
    assert!(refusals.iter().any(|line| line.contains(&pending.1)), "the media id is logged: {refusals:#?}");

    let picture = png(50, 50);
    let media = upload(&server, &alice, &picture, "image/png", Some("clean.png")).await;
    let reply = get(&server, &download_path(&media), Some(&alice.access_token)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, picture);
    let reply =
        send(&server, Method::PUT, &put_path, Some(&alice.access_token), Some((b"clean now".to_vec(), None)), &[])
            .await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    assert_eq!(get(&server, &download_path(&pending), Some(&alice.access_token)).await.body, b"clean now");
}

/// A scanner that cannot be reached refuses uploads with 503 (fail closed), or lets them
/// through unscanned when `scanner_fail_open` is set.
async fn scanner_outage(backend: Backend) {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(9);
    let address = format!("tcp://127.0.0.1:{port}");
    let server = builder(backend)
        .env("RANVIER_MEDIA__SCANNER", "clamav")
        .env("RANVIER_MEDIA__CLAMAV__ADDRESS", &address)
        .start()
        .await;
    let alice = server.register("alice").await;
    let reply = upload_raw(&server, &alice, b"harmless", Some("text/plain"), None).await;
    reply.assert_error(503, "M_UNKNOWN", "upload while the scanner is down");
    assert_eq!(reply.header("retry-after"), "30");
    assert_eq!(stored_files(&server), 0);
    drop(server);

    let server = builder(backend)
        .env("RANVIER_MEDIA__SCANNER", "clamav")
        .env("RANVIER_MEDIA__CLAMAV__ADDRESS", &address)
        .env("RANVIER_MEDIA__SCANNER_FAIL_OPEN", "true")
        .start()
        .await;
    let alice = server.register("alice").await;
    let media = upload(&server, &alice, b"harmless", "text/plain", None).await;
    assert_eq!(get(&server, &download_path(&media), Some(&alice.access_token)).await.body, b"harmless");
    assert!(server.log().contains("unscanned"), "accepting unscanned files is logged");
}

/// Run `ranvier admin ARGS` on the server's configuration, data and database.
pub(crate) async fn admin(server: &TestServer, args: &[&str]) -> (bool, String) {
    admin_with(server, args, &[]).await
}

/// `ranvier admin ARGS` with extra `RANVIER_*` settings (those the server was started with).
async fn admin_with(server: &TestServer, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut command = tokio::process::Command::new(crate::binary());
    command.arg("admin").arg("--config").arg(server.dir().join("ranvier.toml")).args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RANVIER_") {
            command.env_remove(&key);
        }
    }
    command.env("RANVIER_DATA_DIR", server.data_dir()).env("RANVIER_SERVER_NAME", server.server_name());
    if let Some(url) = server.database_url() {
        command.env("RANVIER_DATABASE__URL", url);
    }
    command.envs(env.iter().copied());
    let output = command.output().await.unwrap_or_else(|e| panic!("run ranvier admin: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// `ranvier admin media quarantine|delete|purge` on a running server.
async fn admin_quarantine_delete_and_purge(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let first = upload(&server, &alice, &png(200, 100), "image/png", Some("first.png")).await;
    let second = upload(&server, &alice, b"second file", "text/plain", None).await;
    let mxc = |(server_name, media_id): &(String, String)| format!("mxc://{server_name}/{media_id}");

    // A thumbnail made before the quarantine is not served after it either.
    assert_eq!(get(&server, &thumbnail_path(&first, "width=32&height=32&method=crop"), token).await.status, 200);
    let (ok, output) = admin(&server, &["media", "quarantine", &mxc(&first)]).await;
    assert!(ok, "{output}");
    get(&server, &download_path(&first), token).await.assert_error(404, "M_NOT_FOUND", "quarantined download");
    get(&server, &thumbnail_path(&first, "width=32&height=32&method=crop"), token).await.assert_error(
        404,
        "M_NOT_FOUND",
        "quarantined thumbnail",
    );
    assert_eq!(stored_files(&server), 3, "quarantined bytes are kept (original, thumbnail, second)");

    let (ok, output) = admin(&server, &["media", "delete", &mxc(&first)]).await;
    assert!(ok, "{output}");
    assert_eq!(stored_files(&server), 1, "the original and its thumbnail are gone");
    let (ok, output) = admin(&server, &["media", "delete", &mxc(&first)]).await;
    assert!(!ok && output.contains("no media"), "{output}");
    let (ok, output) = admin(&server, &["media", "quarantine", "not-an-mxc"]).await;
    assert!(!ok && output.contains("mxc://"), "{output}");

    // Retention: nothing is older than a day yet; everything is older than zero days.
    let (ok, output) = admin(&server, &["media", "purge", "--older-than-days", "1"]).await;
    assert!(ok && output.contains("deleted 0 files"), "{output}");
    assert_eq!(get(&server, &download_path(&second), token).await.status, 200);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (ok, output) = admin(&server, &["media", "purge", "--older-than-days", "0"]).await;
    assert!(ok && output.contains("deleted 1 files"), "{output}");
    get(&server, &download_path(&second), token).await.assert_error(404, "M_NOT_FOUND", "purged media");
    assert_eq!(stored_files(&server), 0);
}

/// An animated GIF of `frames` frames of `width`×`height`, each a different colour.
fn animated_gif(width: u32, height: u32, frames: u8) -> Vec<u8> {
    use image::{Delay, Frame, codecs::gif::GifEncoder};
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut bytes);
        let frames = (0..frames).map(|i| {
            let image = RgbaImage::from_fn(width, height, |x, y| {
                image::Rgba([i.wrapping_mul(50), (x % 256) as u8, (y % 256) as u8, 255])
            });
            Frame::from_parts(image, 0, 0, Delay::from_numer_denom_ms(80, 1))
        });
        encoder.encode_frames(frames).expect("encode the test GIF");
    }
    bytes
}

/// The frame sizes of a GIF.
fn gif_frames(bytes: &[u8]) -> Vec<(u32, u32)> {
    use image::AnimationDecoder;
    let decoder = image::codecs::gif::GifDecoder::new(Cursor::new(bytes)).expect("a GIF");
    decoder.into_frames().map(|frame| frame.expect("a frame").into_buffer().dimensions()).collect()
}

/// `animated=true` on an animated GIF gives an animated GIF (every frame resized); without
/// it, or for a still original, a still image.
async fn animated_thumbnails(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let gif = upload(&server, &alice, &animated_gif(200, 150, 5), "image/gif", Some("dance.gif")).await;

    let animated = get(&server, &thumbnail_path(&gif, "width=96&height=96&method=crop&animated=true"), token).await;
    assert_eq!(animated.status, 200, "{}", animated.json());
    assert_eq!(animated.header("content-type"), "image/gif");
    assert_eq!(animated.header("content-disposition"), "inline; filename=\"thumbnail.gif\"");
    let frames = gif_frames(&animated.body);
    assert_eq!(frames, vec![(96, 96); 5], "an animated thumbnail keeps every frame, cropped");

    let scaled = get(&server, &thumbnail_path(&gif, "width=100&height=100&animated=true"), token).await;
    assert_eq!(gif_frames(&scaled.body), vec![(200, 150); 5], "an animation smaller than the size is served as it is");

    for query in ["width=96&height=96&method=crop&animated=false", "width=96&height=96&method=crop"] {
        let still = get(&server, &thumbnail_path(&gif, query), token).await;
        assert_eq!(still.status, 200, "{query}: {}", still.json());
        assert_eq!(still.header("content-type"), "image/png", "{query}: a still image");
        assert_eq!(decoded_size(&still.body, ImageFormat::Png), (96, 96), "{query}");
    }
    // The cache keeps the two apart.
    let again = get(&server, &thumbnail_path(&gif, "width=96&height=96&method=crop&animated=true"), token).await;
    assert_eq!(again.body, animated.body);

    let still_png = upload(&server, &alice, &png(300, 300), "image/png", None).await;
    let reply = get(&server, &thumbnail_path(&still_png, "width=96&height=96&method=crop&animated=true"), token).await;
    assert_eq!(reply.header("content-type"), "image/png", "a still original gives a still thumbnail");
    assert_eq!(decoded_size(&reply.body, ImageFormat::Png), (96, 96));
}

/// Retention by last access: downloads move the last access forward (written out in
/// batches), `admin media purge --not-accessed-for-days` deletes what nobody fetched
/// (quarantined media excepted), and the periodic task does the same on its own.
async fn retention_by_last_access(backend: Backend) {
    let server = builder(backend).env("RANVIER_MEDIA__RETENTION__ACCESS_FLUSH_MS", "100").start().await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let unused = upload(&server, &alice, b"nobody reads me", "text/plain", None).await;
    let used = upload(&server, &alice, &png(64, 64), "image/png", None).await;
    let fresh = upload(&server, &alice, b"just uploaded", "text/plain", None).await;
    let kept = upload(&server, &alice, b"quarantined", "text/plain", None).await;
    let mxc = |(server_name, media_id): &(String, String)| format!("mxc://{server_name}/{media_id}");
    let (ok, output) = admin(&server, &["media", "quarantine", &mxc(&kept)]).await;
    assert!(ok, "{output}");
    // Sixty days without a download, as far as the database knows.
    let old = |(_, media_id): &(String, String)| format!("'{media_id}'");
    server
        .execute_sql(&format!(
            "UPDATE media SET last_access_ts = 1000 WHERE media_id IN ({}, {}, {})",
            old(&unused),
            old(&used),
            old(&kept)
        ))
        .await;
    // A thumbnail counts as an access too.
    assert_eq!(get(&server, &thumbnail_path(&used, "width=32&height=32&method=crop"), token).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (ok, output) = admin(&server, &["media", "purge", "--not-accessed-for-days", "30"]).await;
    assert!(ok && output.contains("deleted 1 local files"), "{output}");
    get(&server, &download_path(&unused), token).await.assert_error(404, "M_NOT_FOUND", "purged for disuse");
    assert_eq!(get(&server, &download_path(&used), token).await.status, 200, "accessed lately: kept");
    assert_eq!(get(&server, &download_path(&fresh), token).await.status, 200, "new: kept");
    let (ok, output) = admin(&server, &["media", "delete", &mxc(&kept)]).await;
    assert!(ok, "quarantined media was kept for inspection: {output}");
    let (ok, output) = admin(&server, &["media", "purge", "--not-accessed-for-days", "30", "--remote"]).await;
    assert!(ok && output.contains("deleted 0 remote files"), "{output}");
    let (ok, output) = admin(&server, &["media", "purge", "--remote"]).await;
    assert!(!ok, "--remote needs --not-accessed-for-days: {output}");

    // Synapse's admin endpoints: administrators only.
    let stale = upload(&server, &alice, b"stale", "text/plain", None).await;
    server.execute_sql(&format!("UPDATE media SET last_access_ts = 1000 WHERE media_id = {}", old(&stale))).await;
    let delete_path =
        |before: i64| format!("/_synapse/admin/v1/media/{}/delete?before_ts={before}", server.server_name());
    let reply = send(&server, Method::POST, &delete_path(2000), token, None, &[]).await;
    reply.assert_error(403, "M_FORBIDDEN", "not an admin");
    server.execute_sql(&format!("UPDATE users SET admin = 1 WHERE user_id = '{}'", alice.user_id)).await;
    let reply = send(&server, Method::POST, &delete_path(2000), token, None, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    assert_eq!(reply.json(), json!({"total": 1, "deleted_media": [stale.1]}));
    get(&server, &download_path(&stale), token).await.assert_error(404, "M_NOT_FOUND", "deleted by the admin API");
    assert_eq!(get(&server, &download_path(&used), token).await.status, 200);
    let reply =
        send(&server, Method::POST, "/_synapse/admin/v1/media/elsewhere.example/delete?before_ts=1", token, None, &[])
            .await;
    reply.assert_error(400, "M_INVALID_PARAM", "remote server name");
    let reply = send(
        &server,
        Method::POST,
        &format!("/_synapse/admin/v1/media/{}/delete", server.server_name()),
        token,
        None,
        &[],
    )
    .await;
    reply.assert_error(400, "M_MISSING_PARAM", "no before_ts");
    let reply =
        send(&server, Method::POST, "/_synapse/admin/v1/purge_media_cache?before_ts=9999999999999", token, None, &[])
            .await;
    assert_eq!((reply.status, reply.json()), (200, json!({"deleted": 0})), "no remote media yet");
    drop(server);

    // The periodic task.
    let server = builder(backend)
        .env("RANVIER_MEDIA__RETENTION__LOCAL_MEDIA_DAYS", "30")
        .env("RANVIER_MEDIA__RETENTION__INTERVAL_MS", "200")
        .start()
        .await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let stale = upload(&server, &alice, b"stale", "text/plain", None).await;
    let recent = upload(&server, &alice, b"recent", "text/plain", None).await;
    server.execute_sql(&format!("UPDATE media SET last_access_ts = 1000 WHERE media_id = {}", old(&stale))).await;
    // Watch the storage, not the API: a download would count as an access.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stored_files(&server) > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the retention task did not delete stale media\n{}",
            server.log_report()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    get(&server, &download_path(&stale), token).await.assert_error(404, "M_NOT_FOUND", "deleted by the task");
    assert_eq!(stored_files(&server), 1, "the stale file is gone from the storage");
    assert_eq!(get(&server, &download_path(&recent), token).await.status, 200, "recent media is kept");
    assert!(server.log().contains("media retention"), "retention runs are logged");
}

/// A running S3-compatible server and credentials it accepts.
#[derive(Clone)]
pub(crate) struct S3Server {
    endpoint: String,
    access_key_id: String,
    secret_access_key: String,
}

/// The S3 server of `RANVIER_TEST_S3` (`ENDPOINT KEY SECRET`), or the one
/// `scripts/s3-test-setup.sh` starts (installing moto if needed). `None` only when
/// `RANVIER_TEST_SKIP_S3=1`.
pub(crate) async fn s3_server() -> Option<S3Server> {
    if std::env::var("RANVIER_TEST_SKIP_S3").is_ok_and(|value| value == "1") {
        eprintln!("skipped: RANVIER_TEST_SKIP_S3=1");
        return None;
    }
    let line = match std::env::var("RANVIER_TEST_S3") {
        Ok(line) => line,
        Err(_) => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/s3-test-setup.sh");
            let output = tokio::process::Command::new("bash")
                .arg(&script)
                .output()
                .await
                .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
            assert!(
                output.status.success(),
                "{} failed ({}); set RANVIER_TEST_SKIP_S3=1 to skip the S3 tests\nstderr: {}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }
    };
    let parts: Vec<&str> = line.split_whitespace().collect();
    let [endpoint, access_key_id, secret_access_key] = parts[..] else {
        panic!("expected `http://HOST:PORT KEY SECRET` for the S3 server, got `{line}`");
    };
    assert!(endpoint.starts_with("http://"), "an http:// endpoint: {line}");
    Some(S3Server {
        endpoint: endpoint.to_owned(),
        access_key_id: access_key_id.to_owned(),
        secret_access_key: secret_access_key.to_owned(),
    })
}

impl S3Server {
    /// A request to the S3 server, signed with the test credentials (path and query as sent).
    async fn signed(&self, method: Method, path: &str, query: &str) -> reqwest::Response {
        const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let host = self.endpoint.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let amz_date = ranvier_media::s3::amz_date(now);
        let authorization = ranvier_media::s3::sign(&ranvier_media::s3::SigningInput {
            method: method.as_str(),
            path,
            query,
            headers: &[("host", &host), ("x-amz-content-sha256", EMPTY_SHA256), ("x-amz-date", &amz_date)],
            payload_sha256: EMPTY_SHA256,
            amz_date: &amz_date,
            region: "us-east-1",
            access_key_id: &self.access_key_id,
            secret_access_key: &self.secret_access_key,
        });
        let url =
            if query.is_empty() { format!("http://{host}{path}") } else { format!("http://{host}{path}?{query}") };
        reqwest::Client::new()
            .request(method, url)
            .header("x-amz-content-sha256", EMPTY_SHA256)
            .header("x-amz-date", amz_date)
            .header("authorization", authorization)
            .send()
            .await
            .expect("S3 request")
    }

    /// A new, empty bucket; returns its name.
    async fn create_bucket(&self) -> String {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let unique = ranvier_test::txn_id().replace(|c: char| !c.is_ascii_alphanumeric(), "");
        let bucket = format!("ranvier-{nanos}-{}", unique.to_ascii_lowercase());
        let reply = self.signed(Method::PUT, &format!("/{bucket}"), "").await;
        assert!(reply.status().is_success(), "create bucket {bucket}: {}", reply.status());
        bucket
    }

    /// The object keys in a bucket.
    async fn bucket_keys(&self, bucket: &str) -> Vec<String> {
        let reply = self.signed(Method::GET, &format!("/{bucket}"), "list-type=2").await;
        assert!(reply.status().is_success(), "list bucket {bucket}: {}", reply.status());
        let listing = reply.text().await.expect("bucket listing");
        listing.split("<Key>").skip(1).filter_map(|rest| rest.split("</Key>").next()).map(str::to_owned).collect()
    }

    /// The settings that put a server's media in `bucket`.
    fn settings<'a>(&'a self, bucket: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("RANVIER_MEDIA__STORAGE", "s3"),
            ("RANVIER_MEDIA__S3__ENDPOINT", &self.endpoint),
            ("RANVIER_MEDIA__S3__BUCKET", bucket),
            ("RANVIER_MEDIA__S3__ACCESS_KEY_ID", &self.access_key_id),
            ("RANVIER_MEDIA__S3__SECRET_ACCESS_KEY", &self.secret_access_key),
            ("RANVIER_MEDIA__S3__PREFIX", "media/"),
        ]
    }
}

/// Media in an S3 bucket (a real S3-compatible server on loopback): upload, download,
/// deduplication, thumbnails, deletion; nothing lands in the local content directory.
async fn s3_storage(backend: Backend) {
    let Some(s3) = s3_server().await else {
        return;
    };
    let bucket = s3.create_bucket().await;
    let settings = s3.settings(&bucket);
    let mut server_builder = builder(backend);
    for (key, value) in &settings {
        server_builder = server_builder.env(key, value);
    }
    let server = server_builder.start().await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());

    let picture = png(300, 200);
    let first = upload(&server, &alice, &picture, "image/png", Some("first.png")).await;
    let reply = get(&server, &download_path(&first), token).await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    assert_eq!(reply.body, picture, "the bytes come back from the bucket");
    assert_eq!(reply.header("content-length"), picture.len().to_string());
    let keys = s3.bucket_keys(&bucket).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("media/") && keys[0].len() == "media/".len() + 64, "{keys:?}");

    let second = upload(&server, &alice, &picture, "image/png", None).await;
    assert_eq!(s3.bucket_keys(&bucket).await, keys, "identical content is stored once");
    assert_eq!(get(&server, &download_path(&second), token).await.body, picture);
    let large = vec![7u8; 3 * 1024 * 1024 + 17];
    let big = upload(&server, &alice, &large, "application/octet-stream", None).await;
    assert_eq!(get(&server, &download_path(&big), token).await.body, large, "a larger file streams both ways");

    let thumbnail = get(&server, &thumbnail_path(&first, "width=32&height=32&method=crop"), token).await;
    assert_eq!(thumbnail.status, 200, "{}", thumbnail.json());
    assert_eq!(decoded_size(&thumbnail.body, ImageFormat::Png), (32, 32));
    let animated = upload(&server, &alice, &animated_gif(120, 120, 3), "image/gif", None).await;
    let reply = get(&server, &thumbnail_path(&animated, "width=32&height=32&method=crop&animated=true"), token).await;
    assert_eq!(gif_frames(&reply.body).len(), 3, "animated thumbnails on S3 too");
    assert_eq!(s3.bucket_keys(&bucket).await.len(), 5, "original, large, thumbnail, GIF and its thumbnail");
    assert_eq!(stored_files(&server), 0, "nothing is kept in the local content directory");

    let mxc = |(server_name, media_id): &(String, String)| format!("mxc://{server_name}/{media_id}");
    let (ok, output) = admin_with(&server, &["media", "delete", &mxc(&first)], &settings).await;
    assert!(ok, "{output}");
    assert_eq!(s3.bucket_keys(&bucket).await.len(), 4, "the thumbnail is gone, the shared original kept");
    assert_eq!(get(&server, &download_path(&second), token).await.body, picture);
    for media in [&second, &big, &animated] {
        let (ok, output) = admin_with(&server, &["media", "delete", &mxc(media)], &settings).await;
        assert!(ok, "{output}");
    }
    let keys = s3.bucket_keys(&bucket).await;
    assert!(keys.is_empty(), "deleting every reference empties the bucket: {keys:?}");
    get(&server, &download_path(&second), token).await.assert_error(404, "M_NOT_FOUND", "deleted");
    let staging = files_under(&server.data_dir().join("media").join("tmp"));
    assert!(staging.is_empty(), "no staging files are left: {staging:?}");

    drop(server);

    // The S3 server checks signatures: a wrong secret gets nothing stored.
    let forged = S3Server { secret_access_key: "not the secret".into(), ..s3.clone() };
    let mut builder = builder(backend);
    for (key, value) in forged.settings(&bucket) {
        builder = builder.env(key, value);
    }
    let server = builder.start().await;
    let alice = server.register("alice").await;
    upload_raw(&server, &alice, b"forged", Some("text/plain"), None).await.assert_error(
        500,
        "M_UNKNOWN",
        "an upload signed with the wrong secret",
    );
    assert!(s3.bucket_keys(&bucket).await.is_empty(), "nothing was stored");
    let log = server.log();
    assert!(
        log.lines().any(|line| line.contains("S3") && line.contains("403")),
        "the store's refusal is logged:\n{log}"
    );
}

/// A bucket that cannot be reached makes uploads fail cleanly (no 2xx, no staging files
/// left), and the server keeps running.
async fn s3_unreachable(backend: Backend) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(9);
    let unreachable = S3Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        access_key_id: "nobody".into(),
        secret_access_key: "nothing".into(),
    };
    let mut builder = builder(backend);
    for (key, value) in unreachable.settings("missing") {
        builder = builder.env(key, value);
    }
    let mut server = builder.start().await;
    let alice = server.register("alice").await;
    let reply = upload_raw(&server, &alice, b"nowhere to go", Some("text/plain"), None).await;
    reply.assert_error(500, "M_UNKNOWN", "upload while the bucket is unreachable");
    assert!(server.is_running());
    let staging = files_under(&server.data_dir().join("media").join("tmp"));
    assert!(staging.is_empty(), "no staging files are left: {staging:?}");
}

backend_tests!(
    upload_and_download,
    admin_quarantine_delete_and_purge,
    legacy_endpoints_are_frozen,
    async_upload,
    size_limits,
    thumbnails,
    clamav_scanning,
    scanner_outage,
    animated_thumbnails,
    retention_by_last_access,
    s3_storage,
    s3_unreachable,
);
