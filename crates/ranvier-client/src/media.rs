//! Media: authenticated `/_matrix/client/v1/media/…` and legacy `/_matrix/media/v3/…` endpoints.
//!
//! Uploads are plain axum handlers: the body is streamed into a staging file (never held in
//! memory) under the media upload limit instead of the JSON request limit. Downloads and
//! thumbnails are parsed with ruma and answered with a streamed body and the headers that
//! make served media safe in a browser: `Content-Disposition` (inline only for harmless
//! types), a sandboxing `Content-Security-Policy`, `X-Content-Type-Options: nosniff`, and
//! `Cross-Origin-Resource-Policy: cross-origin` so web clients may embed it.
//!
//! The deprecated unauthenticated downloads are frozen: they serve only media uploaded while
//! `media.legacy_unauthenticated` was on, and answer `404 M_NOT_FOUND` for everything else.
//!
//! Synapse's admin endpoints for retention are served too (for server administrators only):
//! `POST /_synapse/admin/v1/media/{serverName}/delete?before_ts=MS` deletes local media not
//! accessed since `before_ts`, `POST /_synapse/admin/v1/purge_media_cache?before_ts=MS` cached
//! remote media.
//!
//! URL previews are served on `/_matrix/client/v1/media/preview_url` and on the deprecated
//! `/_matrix/media/v3/preview_url`, both with an access token (the freeze never covered
//! them: the legacy endpoint always required one).

// The deprecated endpoints are served on purpose, for clients that predate authenticated media.
#![allow(deprecated)]

use std::time::Duration;

use axum::{
    body::Body,
    extract::{Path, Query, Request, State, rejection::PathRejection},
    response::{IntoResponse, Response},
};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use ranvier_core::{Error, error::ErrorKind};
use ranvier_http::{ApiResult, AuthState, Authed, Identity, Ruma, RumaResponse, error_response, matrix_error, route};
use ranvier_media::{
    Access, PreviewError, Served, ThumbnailMethod, ThumbnailRequest, UploadError, UploadMeta,
    disposition::{DEFAULT_CONTENT_TYPE, content_disposition, filename_parameter},
    storage::too_large,
};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, ServerName, UInt,
    api::client::{authenticated_media, media},
};
use serde::Deserialize;

use crate::AppState;

/// The recommended policy, with `media-src 'self'` so that audio and video still play.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                                       style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";
/// Media never changes once uploaded; authenticated responses may only be kept by the client.
const CACHE_AUTHENTICATED: &str = "private, max-age=86400, immutable";
const CACHE_LEGACY: &str = "public, max-age=86400, immutable";

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<media::create_content::v3::Request, _, _, _>(router, upload);
    let router = route::<media::create_mxc_uri::v1::Request, _, _, _>(router, create);
    let router = route::<media::create_content_async::v3::Request, _, _, _>(router, upload_to);
    let router = route::<authenticated_media::get_media_config::v1::Request, _, _, _>(router, config);
    let router = route::<media::get_media_config::v3::Request, _, _, _>(router, legacy_config);
    let router = route::<authenticated_media::get_content::v1::Request, _, _, _>(router, download);
    let router = route::<authenticated_media::get_content_as_filename::v1::Request, _, _, _>(router, download_as);
    let router = route::<authenticated_media::get_content_thumbnail::v1::Request, _, _, _>(router, thumbnail);
    let router = route::<media::get_content::v3::Request, _, _, _>(router, legacy_download);
    let router = route::<media::get_content_as_filename::v3::Request, _, _, _>(router, legacy_download_as);
    let router = route::<media::get_content_thumbnail::v3::Request, _, _, _>(router, legacy_thumbnail);
    let router = route::<authenticated_media::get_media_preview::v1::Request, _, _, _>(router, preview);
    let router = route::<media::get_media_preview::v3::Request, _, _, _>(router, legacy_preview);
    router
        .route("/_synapse/admin/v1/media/{server_name}/delete", axum::routing::post(admin_delete_local))
        .route("/_synapse/admin/v1/purge_media_cache", axum::routing::post(admin_purge_remote))
}

/// The query of the admin retention endpoints.
#[derive(Deserialize)]
struct BeforeQuery {
    before_ts: i64,
}

/// The administrator behind a request, and its `before_ts`.
async fn admin_request(state: &AppState, parts: &Parts) -> Result<i64, Error> {
    let identity = authenticate(state, parts).await?;
    let user = state.store.get_user(identity.user_id.as_str()).await?;
    if !user.is_some_and(|user| user.admin) {
        return Err(Error::forbidden("You are not a server admin"));
    }
    let Query(query) = Query::<BeforeQuery>::try_from_uri(&parts.uri)
        .map_err(|_| Error::missing_param("Missing integer query parameter 'before_ts'"))?;
    Ok(query.before_ts)
}

/// `POST /_synapse/admin/v1/media/{serverName}/delete?before_ts=MS`: delete local media not
/// accessed since `before_ts`.
async fn admin_delete_local(
    State(state): State<AppState>,
    Path(server_name): Path<String>,
    request: Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let result = async {
        let before_ts = admin_request(&state, &parts).await?;
        if server_name != state.server_name.as_str() {
            return Err(Error::invalid_param("Can only delete local media"));
        }
        state.media.purge_not_accessed_since(true, before_ts).await
    };
    match result.await {
        Ok(deleted) => {
            axum::Json(serde_json::json!({ "total": deleted.len(), "deleted_media": deleted })).into_response()
        }
        Err(error) => error_response(error),
    }
}

/// `POST /_synapse/admin/v1/purge_media_cache?before_ts=MS`: delete cached remote media not
/// accessed since `before_ts`.
async fn admin_purge_remote(State(state): State<AppState>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let result = async {
        let before_ts = admin_request(&state, &parts).await?;
        state.media.purge_not_accessed_since(false, before_ts).await
    };
    match result.await {
        Ok(deleted) => axum::Json(serde_json::json!({ "deleted": deleted.len() })).into_response(),
        Err(error) => error_response(error),
    }
}

/// `GET /_matrix/client/v1/media/preview_url`
async fn preview(
    State(state): State<AppState>,
    req: Authed<authenticated_media::get_media_preview::v1::Request>,
) -> Response {
    let user_id = req.user_id().to_owned();
    let body = req.body;
    let ts = body.ts.map(|ts| i64::from(ts.0));
    match state.media.preview_url(&user_id, &body.url, ts).await.and_then(preview_json) {
        Ok(data) => {
            RumaResponse(authenticated_media::get_media_preview::v1::Response::from_raw_value(data)).into_response()
        }
        Err(error) => preview_error(error),
    }
}

/// `GET /_matrix/media/v3/preview_url` (deprecated, still authenticated)
async fn legacy_preview(State(state): State<AppState>, req: Authed<media::get_media_preview::v3::Request>) -> Response {
    let user_id = req.user_id().to_owned();
    let body = req.body;
    let ts = body.ts.map(|ts| i64::from(ts.0));
    match state.media.preview_url(&user_id, &body.url, ts).await.and_then(preview_json) {
        Ok(data) => RumaResponse(media::get_media_preview::v3::Response::from_raw_value(data)).into_response(),
        Err(error) => preview_error(error),
    }
}

fn preview_json(og: String) -> Result<Box<serde_json::value::RawValue>, PreviewError> {
    serde_json::value::RawValue::from_string(og)
        .map_err(|e| PreviewError::Matrix(Error::internal(format!("stored URL preview is not JSON: {e}"))))
}

/// The response for a failed preview: the page's server failing us is a bad gateway.
fn preview_error(error: PreviewError) -> Response {
    match error {
        PreviewError::Matrix(error) => error_response(error),
        PreviewError::Upstream(message) => matrix_error(StatusCode::BAD_GATEWAY, ErrorKind::Unknown, message),
        PreviewError::UpstreamTooLarge(message) => matrix_error(StatusCode::BAD_GATEWAY, ErrorKind::TooLarge, message),
    }
}

/// The query of the upload endpoints.
#[derive(Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

/// `POST /_matrix/media/v3/upload`
async fn upload(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let result = async {
        let identity = authenticate(&state, &parts).await?;
        let meta = upload_meta(&parts)?;
        let staged = receive(&state, &parts, body).await?;
        state.media.upload(&identity.user_id, staged, meta).await
    };
    match result.await {
        Ok(content_uri) => RumaResponse(media::create_content::v3::Response::new(content_uri)).into_response(),
        Err(error) => upload_error(error),
    }
}

/// `POST /_matrix/media/v1/create`
async fn create(
    State(state): State<AppState>,
    req: Authed<media::create_mxc_uri::v1::Request>,
) -> ApiResult<media::create_mxc_uri::v1::Response> {
    let (content_uri, expires) = state.media.create_mxc(req.user_id()).await?;
    let mut response = media::create_mxc_uri::v1::Response::new(content_uri);
    response.unused_expires_at = UInt::try_from(expires).ok().map(MilliSecondsSinceUnixEpoch);
    Ok(response.into())
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
async fn upload_to(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let result = async {
        let identity = authenticate(&state, &parts).await?;
        let Path((server_name, media_id)) = path.map_err(|_| Error::invalid_param("Invalid path parameters"))?;
        let server_name = ServerName::parse(&server_name).map_err(|_| Error::invalid_param("Invalid server name"))?;
        let meta = upload_meta(&parts)?;
        // Refuse before reading the body when the upload cannot succeed anyway.
        state.media.check_pending_upload(&identity.user_id, &server_name, &media_id).await?;
        let staged = receive(&state, &parts, body).await?;
        state.media.upload_to(&identity.user_id, &server_name, &media_id, staged, meta).await
    };
    match result.await {
        // ruma's response type for this endpoint has no public constructor; it is `{}`.
        Ok(()) => axum::Json(serde_json::json!({})).into_response(),
        Err(error) => upload_error(error),
    }
}

/// `GET /_matrix/client/v1/media/config`
async fn config(
    State(state): State<AppState>,
    _req: Authed<authenticated_media::get_media_config::v1::Request>,
) -> ApiResult<authenticated_media::get_media_config::v1::Response> {
    Ok(authenticated_media::get_media_config::v1::Response::new(upload_size(&state)).into())
}

/// `GET /_matrix/media/v3/config` (deprecated, still authenticated).
async fn legacy_config(
    State(state): State<AppState>,
    _req: Authed<media::get_media_config::v3::Request>,
) -> ApiResult<media::get_media_config::v3::Response> {
    Ok(media::get_media_config::v3::Response::new(upload_size(&state)).into())
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
async fn download(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Authed<authenticated_media::get_content::v1::Request>,
) -> Response {
    let body = req.body;
    let served =
        state.media.download(&body.server_name, &body.media_id, Access::Authenticated, body.timeout_ms, true).await;
    serve_download(served, None, CACHE_AUTHENTICATED, &headers)
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
async fn download_as(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Authed<authenticated_media::get_content_as_filename::v1::Request>,
) -> Response {
    let body = req.body;
    let served =
        state.media.download(&body.server_name, &body.media_id, Access::Authenticated, body.timeout_ms, true).await;
    serve_download(served, Some(&body.filename), CACHE_AUTHENTICATED, &headers)
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
async fn thumbnail(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Authed<authenticated_media::get_content_thumbnail::v1::Request>,
) -> Response {
    let body = req.body;
    let served = async {
        let request = thumbnail_request(body.width, body.height, body.method.as_ref(), body.animated)?;
        state
            .media
            .thumbnail(&body.server_name, &body.media_id, request, Access::Authenticated, body.timeout_ms, true)
            .await
    };
    serve_thumbnail(served.await, CACHE_AUTHENTICATED, &headers)
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}` (deprecated, frozen)
async fn legacy_download(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Ruma<media::get_content::v3::Request>,
) -> Response {
    let body = req.body;
    let served = legacy_served(&state, &body.server_name, &body.media_id, body.timeout_ms, body.allow_remote).await;
    serve_download(served, None, CACHE_LEGACY, &headers)
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}` (deprecated, frozen)
async fn legacy_download_as(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Ruma<media::get_content_as_filename::v3::Request>,
) -> Response {
    let body = req.body;
    let served = legacy_served(&state, &body.server_name, &body.media_id, body.timeout_ms, body.allow_remote).await;
    serve_download(served, Some(&body.filename), CACHE_LEGACY, &headers)
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}` (deprecated, frozen)
async fn legacy_thumbnail(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Ruma<media::get_content_thumbnail::v3::Request>,
) -> Response {
    let body = req.body;
    let served = async {
        let request = thumbnail_request(body.width, body.height, body.method.as_ref(), body.animated)?;
        state
            .media
            .thumbnail(&body.server_name, &body.media_id, request, Access::Legacy, body.timeout_ms, body.allow_remote)
            .await
    };
    serve_thumbnail(served.await, CACHE_LEGACY, &headers)
}

async fn legacy_served(
    state: &AppState,
    server_name: &OwnedServerName,
    media_id: &str,
    timeout: Duration,
    allow_remote: bool,
) -> ranvier_core::Result<Served> {
    state.media.download(server_name, media_id, Access::Legacy, timeout, allow_remote).await
}

fn upload_size(state: &AppState) -> UInt {
    UInt::try_from(state.media.max_upload_bytes()).unwrap_or(UInt::MAX)
}

/// The user behind an upload request (the upload handlers do not use the ruma extractors).
async fn authenticate(state: &AppState, parts: &Parts) -> Result<Identity, Error> {
    let token = ranvier_http::extract::access_token(parts)
        .ok_or_else(|| Error::matrix(ErrorKind::MissingToken, "Missing access token"))?;
    state.authenticate(&token).await
}

/// The upload's `Content-Type` and `filename`.
fn upload_meta(parts: &Parts) -> Result<UploadMeta, Error> {
    let Query(query) = Query::<UploadQuery>::try_from_uri(&parts.uri)
        .map_err(|e| Error::invalid_param(format!("Invalid query parameters: {e}")))?;
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    UploadMeta::new(content_type, query.filename)
}

/// Stream the request body into a staging file, refusing it early when `Content-Length`
/// already exceeds the limit.
async fn receive(state: &AppState, parts: &Parts, body: Body) -> Result<ranvier_media::Staged, Error> {
    let limit = state.media.max_upload_bytes();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|length| length > limit) {
        drain(&mut stream).await;
        return Err(too_large(limit));
    }
    let mut staged = state.media.stage_upload().await?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::unknown(format!("Could not read the upload: {e}")))?;
        if let Err(error) = staged.write(&chunk).await {
            drain(&mut stream).await;
            return Err(error);
        }
    }
    Ok(staged)
}

/// Read and discard what is left of a refused upload, within bounds, before answering.
/// A server that answers while the client is still sending and then closes the connection
/// makes many clients fail with a broken pipe instead of reading the `413`.
async fn drain(stream: &mut axum::body::BodyDataStream) {
    const MAX_DRAIN_BYTES: usize = 64 * 1024 * 1024;
    const MAX_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);
    let _ = tokio::time::timeout(MAX_DRAIN_TIME, async {
        let mut drained = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            drained += chunk.len();
            if drained > MAX_DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

/// The response for a failed upload. A scanner that cannot be reached makes the server
/// unable to accept files for now: `503`, so that clients know to retry later.
fn upload_error(error: UploadError) -> Response {
    match error {
        UploadError::Matrix(error) => error_response(error),
        UploadError::ScannerUnavailable => {
            let mut response = matrix_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Unknown,
                "The content scanner is unavailable; try the upload again later".to_owned(),
            );
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            response
        }
    }
}

/// A thumbnail request from the query, `scale` when no method is given.
fn thumbnail_request(
    width: UInt,
    height: UInt,
    method: Option<&ruma::media::Method>,
    animated: Option<bool>,
) -> Result<ThumbnailRequest, Error> {
    let method = match method {
        None | Some(ruma::media::Method::Scale) => ThumbnailMethod::Scale,
        Some(ruma::media::Method::Crop) => ThumbnailMethod::Crop,
        Some(other) => return Err(Error::invalid_param(format!("Unknown thumbnail method `{}`", other.as_str()))),
    };
    let clamp = |value: UInt| u32::try_from(u64::from(value)).unwrap_or(u32::MAX);
    Ok(ThumbnailRequest { width: clamp(width), height: clamp(height), method, animated: animated.unwrap_or(false) })
}

fn serve_download(
    served: ranvier_core::Result<Served>,
    filename: Option<&str>,
    cache: &'static str,
    request_headers: &HeaderMap,
) -> Response {
    match served {
        Ok(served) => {
            let name = filename.map(str::to_owned).or_else(|| served.filename.clone());
            let disposition = content_disposition(&served.content_type, name.as_deref());
            respond(served, disposition, cache, request_headers)
        }
        Err(error) => media_error(error),
    }
}

fn serve_thumbnail(served: ranvier_core::Result<Served>, cache: &'static str, request_headers: &HeaderMap) -> Response {
    match served {
        Ok(served) => {
            let extension = served.content_type.strip_prefix("image/").unwrap_or("bin").replace("jpeg", "jpg");
            let disposition = format!("inline; {}", filename_parameter(&format!("thumbnail.{extension}")));
            respond(served, disposition, cache, request_headers)
        }
        Err(error) => media_error(error),
    }
}

/// A download or thumbnail error; remote content over the size limit is `502 M_TOO_LARGE`.
fn media_error(error: Error) -> Response {
    match error {
        Error::Matrix { kind: ErrorKind::TooLarge, message } if message == ranvier_media::REMOTE_TOO_LARGE => {
            matrix_error(StatusCode::BAD_GATEWAY, ErrorKind::TooLarge, message)
        }
        error => error_response(error),
    }
}

/// The response carrying served media, or `304` when the client already has it.
fn respond(served: Served, disposition: String, cache: &'static str, request_headers: &HeaderMap) -> Response {
    let etag = format!("\"{}\"", served.sha256);
    let unchanged = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let content_type =
        HeaderValue::from_str(&served.content_type).unwrap_or_else(|_| HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
    // Every part is built from checked ASCII; fall back to `attachment` should one not be.
    let disposition = HeaderValue::from_str(&disposition).unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Response::new(Body::from_stream(served.content.stream));
        response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(served.content.size));
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    response
}
