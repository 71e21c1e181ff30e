//! The federation API this server answers, on the federation TLS listener: its signed keys
//! (`GET /_matrix/key/v2/server`) and its media for other servers
//! (`GET /_matrix/federation/v1/media/download/{mediaId}` and `/thumbnail/{mediaId}`,
//! `multipart/mixed` answers). Media requests must carry valid X-Matrix authentication.

use std::time::Duration;

use axum::{
    Router,
    extract::{Path, Request, State},
    response::{IntoResponse, Response},
};
use ranvier_core::Error;
use ranvier_http::{RumaResponse, error_response};
use ranvier_media::{Access, Served, ThumbnailMethod, ThumbnailRequest};
use ruma::{
    api::{
        IncomingRequestExt,
        federation::authenticated_media::{
            Content, ContentMetadata, FileOrLocation, get_content, get_content_thumbnail,
        },
    },
    http_headers::{ContentDisposition, ContentDispositionType},
};

use crate::AppState;

/// The largest body read from an inbound federation media request (they have none).
const MAX_REQUEST_BODY: usize = 64 * 1024;
/// The longest a media request from another server waits for a pending upload.
const MAX_MEDIA_WAIT: Duration = Duration::from_secs(20);

/// The federation router over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/_matrix/key/v2/server", axum::routing::get(server_keys))
        // The deprecated form with a key id answers with all keys, as the spec allows.
        .route("/_matrix/key/v2/server/{key_id}", axum::routing::get(server_keys))
        .route("/_matrix/federation/v1/version", axum::routing::get(version))
        .route("/_matrix/federation/v1/media/download/{media_id}", axum::routing::get(media_download))
        .route("/_matrix/federation/v1/media/thumbnail/{media_id}", axum::routing::get(media_thumbnail))
        .fallback(ranvier_http::fallback)
        .with_state(state)
}

/// `GET /_matrix/key/v2/server`
async fn server_keys(State(state): State<AppState>) -> Response {
    match state.federation.server_keys() {
        Ok(object) => axum::Json(object).into_response(),
        Err(error) => error_response(error),
    }
}

/// `GET /_matrix/federation/v1/version`
async fn version() -> Response {
    axum::Json(serde_json::json!({ "server": { "name": "Ranvier", "version": env!("CARGO_PKG_VERSION") } }))
        .into_response()
}

/// Read the request and check its X-Matrix authentication.
async fn authenticated(state: &AppState, request: Request) -> Result<http::Request<axum::body::Bytes>, Error> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_REQUEST_BODY)
        .await
        .map_err(|_| Error::too_large("The request body is too large"))?;
    let request = http::Request::from_parts(parts, body);
    state.federation.verify_request(&request).await?;
    Ok(request)
}

/// `GET /_matrix/federation/v1/media/download/{mediaId}`: local media only.
async fn media_download(State(state): State<AppState>, Path(media_id): Path<String>, request: Request) -> Response {
    let result = async {
        let request = authenticated(&state, request).await?;
        let parsed = get_content::v1::Request::try_from_http_request(as_slice(&request), &[&media_id])
            .map_err(|e| Error::invalid_param(format!("Invalid request: {e}")))?;
        let timeout = parsed.timeout_ms.min(MAX_MEDIA_WAIT);
        let served =
            state.media.download(&state.server_name, &parsed.media_id, Access::Authenticated, timeout, false).await?;
        let content = collect(served).await?;
        Ok::<_, Error>(get_content::v1::Response::new(ContentMetadata::new(), content))
    };
    match result.await {
        Ok(response) => RumaResponse(response).into_response(),
        Err(error) => error_response(error),
    }
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`: local media only.
async fn media_thumbnail(State(state): State<AppState>, Path(media_id): Path<String>, request: Request) -> Response {
    let result = async {
        let request = authenticated(&state, request).await?;
        let parsed = get_content_thumbnail::v1::Request::try_from_http_request(as_slice(&request), &[&media_id])
            .map_err(|e| Error::invalid_param(format!("Invalid request: {e}")))?;
        let method = match parsed.method {
            None | Some(ruma::media::Method::Scale) => ThumbnailMethod::Scale,
            Some(ruma::media::Method::Crop) => ThumbnailMethod::Crop,
            Some(other) => return Err(Error::invalid_param(format!("Unknown thumbnail method `{}`", other.as_str()))),
        };
        let clamp = |value: ruma::UInt| u32::try_from(u64::from(value)).unwrap_or(u32::MAX);
        let thumbnail = ThumbnailRequest {
            width: clamp(parsed.width),
            height: clamp(parsed.height),
            method,
            animated: parsed.animated.unwrap_or(false),
        };
        let timeout = parsed.timeout_ms.min(MAX_MEDIA_WAIT);
        let served = state
            .media
            .thumbnail(&state.server_name, &parsed.media_id, thumbnail, Access::Authenticated, timeout, false)
            .await?;
        let content = collect(served).await?;
        Ok(get_content_thumbnail::v1::Response::new(ContentMetadata::new(), content))
    };
    match result.await {
        Ok(response) => RumaResponse(response).into_response(),
        Err(error) => error_response(error),
    }
}

/// The whole content as the file part of a multipart answer.
async fn collect(served: Served) -> Result<FileOrLocation, Error> {
    let Served { content_type, filename, content, .. } = served;
    let bytes = content.collect().await?;
    let disposition = ContentDisposition::new(ContentDispositionType::Attachment).with_filename(filename);
    Ok(FileOrLocation::File(Content::new(bytes, content_type, disposition)))
}

/// The request with a borrowed body, as ruma parses it.
fn as_slice(request: &http::Request<axum::body::Bytes>) -> http::Request<&[u8]> {
    let mut builder = http::Request::builder().method(request.method()).uri(request.uri());
    if let Some(headers) = builder.headers_mut() {
        *headers = request.headers().clone();
    }
    builder.body(&request.body()[..]).unwrap_or_default()
}
