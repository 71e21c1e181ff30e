//! Remote media over federation between two real servers on loopback: each serves the
//! federation API on a TLS listener with a certificate from a test CA (generated with
//! `openssl`), trusted through `federation.extra_root_certificates`. Covers fetching and
//! caching remote media, thumbnails of remote media, scanning of fetched media with clamd,
//! size limits and timeouts, the allow-list, the server key endpoint, requests signed with a
//! server's real key sent straight to the federation media endpoints, and refusal of requests
//! with missing or bad X-Matrix signatures.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

use ranvier_test::{Backend, Method, TestServer, backend_tests};
use serde_json::Value;
use tempfile::TempDir;

use crate::{
    builder,
    media::{clamd_address, eicar, png, send, upload, upload_raw},
};

/// A test CA and a certificate it issued for `localhost` and `127.0.0.1`.
struct Certs {
    _dir: TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

fn make_certs() -> Certs {
    let dir = tempfile::Builder::new().prefix("ranvier-certs-").tempdir().expect("certificate directory");
    let path = dir.path();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Ranvier Test CA"]);
    openssl(path, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend(["-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=localhost"]);
    openssl(path, &csr);
    std::fs::write(
        path.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write extensions");
    openssl(
        path,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    );
    Certs { ca: path.join("ca.pem"), cert: path.join("cert.pem"), key: path.join("key.pem"), _dir: dir }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A server named `localhost:<federation port>` with federation on.
async fn federated(backend: Backend, certs: &Certs, extra: &[(&str, &str)]) -> (TestServer, u16) {
    let port = free_port();
    let mut server = builder(backend)
        .server_name(&format!("localhost:{port}"))
        .env("RANVIER_FEDERATION__ENABLED", "true")
        .env("RANVIER_FEDERATION__LISTEN", &format!("127.0.0.1:{port}"))
        .env("RANVIER_FEDERATION__TLS_CERT", &certs.cert.display().to_string())
        .env("RANVIER_FEDERATION__TLS_KEY", &certs.key.display().to_string())
        .env("RANVIER_FEDERATION__EXTRA_ROOT_CERTIFICATES", &format!("[\"{}\"]", certs.ca.display()))
        .env("RANVIER_FEDERATION__REQUEST_TIMEOUT_MS", "10000");
    for (key, value) in extra {
        server = server.env(key, value);
    }
    (server.start().await, port)
}

/// An HTTPS client trusting the test CA.
fn https_client(certs: &Certs) -> reqwest::Client {
    let pem = std::fs::read(&certs.ca).expect("read CA");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA certificate"))
        .build()
        .expect("HTTPS client")
}

async fn get_json(client: &reqwest::Client, url: &str, authorization: Option<&str>) -> (u16, Value) {
    let mut request = client.get(url);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// B's user downloads and thumbnails A's media through B; later downloads come from B's cache
/// even with A stopped; unknown remote media is 404.
async fn remote_download_and_cache(backend: Backend) {
    let certs = make_certs();
    let (mut a, _) = federated(backend, &certs, &[]).await;
    let (b, _) = federated(backend, &certs, &[]).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let image = png(640, 480);
    let (origin, media_id) = upload(&a, &alice, &image, "image/png", Some("cat.png")).await;
    assert_eq!(origin, a.server_name());

    let path = format!("/_matrix/client/v1/media/download/{origin}/{media_id}");
    // Two clients at once: one fetch over federation serves both.
    let (reply, twin) = tokio::join!(
        send(&b, Method::GET, &path, Some(&bob.access_token), None, &[]),
        send(&b, Method::GET, &path, Some(&bob.access_token), None, &[])
    );
    assert_eq!(reply.status, 200, "remote download: {}\nB: {}\nA: {}", reply.json(), b.log_report(), a.log_report());
    assert_eq!((twin.status, &twin.body), (200, &image), "the concurrent download");
    assert_eq!(b.log().matches("remote media cached").count(), 1, "fetched once: {}", b.log_report());
    assert_eq!(reply.body, image, "the bytes are the uploaded ones");
    assert_eq!(reply.header("content-type"), "image/png");
    assert!(reply.header("content-disposition").contains("cat.png"), "the file name travels with the media");

    let thumb = format!("/_matrix/client/v1/media/thumbnail/{origin}/{media_id}?width=32&height=32&method=scale");
    let reply = send(&b, Method::GET, &thumb, Some(&bob.access_token), None, &[]).await;
    assert_eq!(reply.status, 200, "remote thumbnail: {}", reply.json());
    assert!(reply.header("content-type").starts_with("image/"), "a thumbnail is an image");
    assert_ne!(reply.body, image, "the thumbnail is not the original");

    let unknown = format!("/_matrix/client/v1/media/download/{origin}/NoSuchMedia");
    send(&b, Method::GET, &unknown, Some(&bob.access_token), None, &[]).await.assert_error(
        404,
        "M_NOT_FOUND",
        "unknown remote media",
    );
    let invalid = format!("/_matrix/client/v1/media/download/{origin}/bad.id");
    send(&b, Method::GET, &invalid, Some(&bob.access_token), None, &[]).await.assert_error(
        404,
        "M_NOT_FOUND",
        "invalid remote media id",
    );

    a.stop().await;
    let reply = send(&b, Method::GET, &path, Some(&bob.access_token), None, &[]).await;
    assert_eq!(reply.status, 200, "cached download with the origin stopped: {}", reply.json());
    assert_eq!(reply.body, image, "the cache serves the same bytes");
    let other = format!("/_matrix/client/v1/media/download/{origin}/AnotherMedia");
    send(&b, Method::GET, &other, Some(&bob.access_token), None, &[]).await.assert_error(
        404,
        "M_NOT_FOUND",
        "uncached media of an unreachable server",
    );
}

/// A serves its signed keys; federation media requests without a valid X-Matrix signature are
/// refused with 401 M_UNAUTHORIZED.
async fn keys_and_request_authentication(backend: Backend) {
    let certs = make_certs();
    let (a, a_port) = federated(backend, &certs, &[]).await;
    let (b, _) = federated(backend, &certs, &[]).await;
    let alice = a.register("alice").await;
    let (_, media_id) = upload(&a, &alice, b"hello", "text/plain", None).await;
    let client = https_client(&certs);
    let base = format!("https://localhost:{a_port}");

    let (status, version) = get_json(&client, &format!("{base}/_matrix/federation/v1/version"), None).await;
    assert_eq!((status, version["server"]["name"].as_str()), (200, Some("Ranvier")), "version: {version}");
    let (status, keys) = get_json(&client, &format!("{base}/_matrix/key/v2/server"), None).await;
    assert_eq!(status, 200, "keys: {keys}");
    assert_eq!(keys["server_name"], a.server_name());
    assert!(keys["valid_until_ts"].as_i64().unwrap_or(0) > 0);
    let key_ids: Vec<&String> = keys["verify_keys"].as_object().map(|m| m.keys().collect()).unwrap_or_default();
    assert_eq!(key_ids.len(), 1, "one verify key: {keys}");
    assert!(keys["signatures"][a.server_name()][key_ids[0].as_str()].is_string(), "self-signed: {keys}");

    let url = format!("{base}/_matrix/federation/v1/media/download/{media_id}");
    let (status, body) = get_json(&client, &url, None).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "no authorization: {body}");
    let forged = format!(
        "X-Matrix origin=\"{}\",destination=\"{}\",key=\"{}\",sig=\"{}\"",
        b.server_name(),
        a.server_name(),
        key_ids[0],
        "dGhpcyBpcyBub3QgYSBzaWduYXR1cmUgb2YgdGhpcyByZXF1ZXN0IGF0IGFsbCBhdCBhbGwgYXQgYWxsIGF0IGFsbCE"
    );
    let (status, body) = get_json(&client, &url, Some(&forged)).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "bad signature: {body}");
    let wrong_destination =
        forged.replace(&format!("destination=\"{}\"", a.server_name()), "destination=\"elsewhere\"");
    let (status, body) = get_json(&client, &url, Some(&wrong_destination)).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "wrong destination: {body}");
}

/// Media fetched from a server that does not scan is scanned before it is served or kept:
/// EICAR on A is refused by B's clamd.
async fn remote_media_is_scanned(backend: Backend) {
    let Some(address) = clamd_address().await else {
        return;
    };
    let certs = make_certs();
    let (a, _) = federated(backend, &certs, &[]).await;
    let (b, _) = federated(
        backend,
        &certs,
        &[("RANVIER_MEDIA__SCANNER", "clamav"), ("RANVIER_MEDIA__CLAMAV__ADDRESS", &address)],
    )
    .await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let reply = upload_raw(&a, &alice, &eicar(), Some("text/plain"), Some("eicar.com")).await;
    assert_eq!(reply.status, 200, "A does not scan: {}", reply.json());
    let uri = reply.json()["content_uri"].as_str().unwrap_or_default().to_owned();
    let rest = uri.trim_start_matches("mxc://");
    let path = format!("/_matrix/client/v1/media/download/{rest}");
    for attempt in ["first", "second"] {
        let reply = send(&b, Method::GET, &path, Some(&bob.access_token), None, &[]).await;
        reply.assert_error(403, "M_FORBIDDEN", &format!("{attempt} download of remote EICAR"));
    }
    let clean = b"a clean file".to_vec();
    let (origin, media_id) = upload(&a, &alice, &clean, "text/plain", None).await;
    let reply = send(
        &b,
        Method::GET,
        &format!("/_matrix/client/v1/media/download/{origin}/{media_id}"),
        Some(&bob.access_token),
        None,
        &[],
    )
    .await;
    assert_eq!((reply.status, reply.body), (200, clean), "clean remote media passes the scanner");
}

/// `federation.allowed_servers`: a server not on A's list gets `403 M_FORBIDDEN` from A, and
/// its users cannot fetch A's media through it.
async fn allow_list(backend: Backend) {
    let certs = make_certs();
    let (a, a_port) = federated(backend, &certs, &[("RANVIER_FEDERATION__ALLOWED_SERVERS", "[\"localhost:1\"]")]).await;
    let (b, _) = federated(backend, &certs, &[]).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let (origin, media_id) = upload(&a, &alice, b"not for everyone", "text/plain", None).await;
    let path = format!("/_matrix/client/v1/media/download/{origin}/{media_id}");
    send(&b, Method::GET, &path, Some(&bob.access_token), None, &[]).await.assert_error(
        404,
        "M_NOT_FOUND",
        "media of a server that does not federate with us",
    );
    let authorization = format!(
        "X-Matrix origin=\"{}\",destination=\"{}\",key=\"ed25519:a_1\",sig=\"{}\"",
        b.server_name(),
        a.server_name(),
        "dGhpcyBpcyBub3QgYSBzaWduYXR1cmUgb2YgdGhpcyByZXF1ZXN0IGF0IGFsbCBhdCBhbGwgYXQgYWxsIGF0IGFsbCE"
    );
    let url = format!("https://localhost:{a_port}/_matrix/federation/v1/media/download/{media_id}");
    let (status, body) = get_json(&https_client(&certs), &url, Some(&authorization)).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "origin not allowed: {body}");
}

/// Remote failures: content over the local size limit is `502 M_TOO_LARGE`; a server that
/// accepts connections but never answers is `504 M_NOT_YET_UPLOADED` after `timeout_ms`.
async fn remote_failures(backend: Backend) {
    let certs = make_certs();
    let (a, _) = federated(backend, &certs, &[]).await;
    let (b, _) = federated(backend, &certs, &[("RANVIER_MEDIA__MAX_UPLOAD_BYTES", "1000")]).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let (origin, media_id) = upload(&a, &alice, &vec![b'x'; 200_000], "text/plain", None).await;
    let path = format!("/_matrix/client/v1/media/download/{origin}/{media_id}");
    send(&b, Method::GET, &path, Some(&bob.access_token), None, &[]).await.assert_error(
        502,
        "M_TOO_LARGE",
        "remote media over the size limit",
    );

    // A server that takes connections and says nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = silent.local_addr().expect("address").port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let started = std::time::Instant::now();
    let path = format!("/_matrix/client/v1/media/download/localhost:{port}/Silent?timeout_ms=1000");
    send(&b, Method::GET, &path, Some(&bob.access_token), None, &[]).await.assert_error(
        504,
        "M_NOT_YET_UPLOADED",
        "a remote server that does not answer",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "the timeout is bounded");
    hold.abort();
}

/// Send a ruma federation request to `destination` as `origin` (signed with `key`, or with the
/// `Authorization` header of `replace_authorization`), returning the raw response.
async fn signed<R>(
    client: &reqwest::Client,
    base: &str,
    origin: &str,
    destination: &str,
    key: &ruma::signatures::Ed25519KeyPair,
    request: R,
) -> (http::HeaderMap, u16, Vec<u8>, String)
where
    R: ruma::api::OutgoingRequest<
            Authentication = ruma::api::federation::authentication::ServerSignatures,
            PathBuilder = ruma::api::path_builder::SinglePath,
        >,
{
    use ruma::api::{OutgoingRequestExt, federation::authentication::XMatrixSigningInput};
    let input =
        XMatrixSigningInput::new(origin.try_into().expect("origin"), destination.try_into().expect("destination"), key);
    let request = request.try_into_http_request::<Vec<u8>>(base, input, ()).expect("signed request");
    let authorization = request.headers()["authorization"].to_str().expect("header").to_owned();
    let response = client
        .get(request.uri().to_string())
        .header("authorization", &authorization)
        .send()
        .await
        .expect("federation request");
    let headers = response.headers().clone();
    let status = response.status().as_u16();
    let body = response.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    (headers, status, body, authorization)
}

fn http_response(headers: http::HeaderMap, body: &[u8]) -> http::Response<&[u8]> {
    let mut response = http::Response::builder().status(200);
    if let Some(map) = response.headers_mut() {
        *map = headers;
    }
    response.body(body).expect("response")
}

/// Requests signed with B's real key, sent straight to A's federation listener: downloads and
/// thumbnails come back as `multipart/mixed`; a signature over another request is refused;
/// unknown media is 404.
async fn signed_requests_to_the_federation_api(backend: Backend) {
    use ruma::api::{
        IncomingResponseExt,
        federation::authenticated_media::{FileOrLocation, get_content, get_content_thumbnail},
    };
    let certs = make_certs();
    let (a, a_port) = federated(backend, &certs, &[]).await;
    let (b, _) = federated(backend, &certs, &[]).await;
    let alice = a.register("alice").await;
    let image = png(640, 480);
    let (_, media_id) = upload(&a, &alice, &image, "image/png", Some("big.png")).await;
    let key = ranvier_rooms::keys::load_or_generate(&b.data_dir().join("signing.key")).expect("B's signing key");
    let client = https_client(&certs);
    let base = format!("https://localhost:{a_port}");
    let (origin, destination) = (b.server_name(), a.server_name());

    let request = get_content::v1::Request::new(media_id.clone());
    let (headers, status, body, authorization) = signed(&client, &base, origin, destination, &key, request).await;
    assert_eq!(
        status,
        200,
        "signed download: {}
{}",
        String::from_utf8_lossy(&body),
        a.log_report()
    );
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(content_type.starts_with("multipart/mixed"), "multipart answer: {content_type}");
    let response = get_content::v1::Response::try_from_http_response(http_response(headers, &body)).expect("multipart");
    let FileOrLocation::File(file) = response.content else { panic!("expected the file inline") };
    assert_eq!(file.file, image, "the bytes of the upload");
    assert_eq!(file.content_type.as_deref(), Some("image/png"));

    let request = get_content_thumbnail::v1::Request::new(media_id.clone(), 32u32.into(), 32u32.into());
    let (headers, status, body, _) = signed(&client, &base, origin, destination, &key, request).await;
    assert_eq!(status, 200, "signed thumbnail: {}", String::from_utf8_lossy(&body));
    let response =
        get_content_thumbnail::v1::Response::try_from_http_response(http_response(headers, &body)).expect("multipart");
    let FileOrLocation::File(file) = response.content else { panic!("expected the thumbnail inline") };
    let thumbnail = image::load_from_memory(&file.file).expect("the thumbnail is an image");
    assert!(thumbnail.width() < 640, "a smaller image: {}x{}", thumbnail.width(), thumbnail.height());

    // A valid signature, but for another request.
    let other = format!("{base}/_matrix/federation/v1/media/download/SomethingElse");
    let (status, body) = get_json(&client, &other, Some(&authorization)).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "replayed signature: {body}");

    let request = get_content::v1::Request::new("NoSuchMedia".to_owned());
    let (_, status, body, _) = signed(&client, &base, origin, destination, &key, request).await;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "unknown media: {body}");
}

backend_tests!(
    signed_requests_to_the_federation_api,
    remote_download_and_cache,
    keys_and_request_authentication,
    remote_media_is_scanned,
    allow_list,
    remote_failures
);
