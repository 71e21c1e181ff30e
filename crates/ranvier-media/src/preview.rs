//! URL previews (`GET /_matrix/client/v1/media/preview_url`): fetch a page through the
//! confined [`Fetcher`], read its OpenGraph data ([`og`](crate::og)), and store its image as
//! ordinary local media (scanned like any upload) so that clients get it as an `mxc://` URI
//! with `matrix:image:size`.
//!
//! Previews are kept in the database per URL and cache period (`url_preview.cache_ms`): a
//! request names a time (`ts`, default now), the period holding it is looked up, then the
//! current one, and only then is the page fetched (the spec lets a server answer with a
//! newer preview than the one asked for).
//!
//! Errors, close to Synapse's: previews switched off and addresses refused by the IP filter
//! are `403 M_FORBIDDEN`; a page that cannot be fetched (no connection, an error status,
//! too many redirects, the time limit) is `502 M_UNKNOWN`, a page over the size limit
//! `502 M_TOO_LARGE`. A page whose image cannot be had still gets a preview, without image.

use std::{io::Cursor, time::Duration};

use ranvier_core::{Error, Result, config::UrlPreviewConfig, util::now_ms};
use ranvier_store::media::UrlPreviewRow;
use ruma::UserId;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::{
    Media, UploadError, UploadMeta,
    fetch::{FetchError, Fetched, Fetcher, IpFilter},
    og,
};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a preview could not be made.
#[derive(Debug)]
pub enum PreviewError {
    /// A Matrix error for the client (`M_FORBIDDEN`, `M_INVALID_PARAM`, …).
    Matrix(Error),
    /// The page could not be fetched (`502 M_UNKNOWN`).
    Upstream(String),
    /// The page is larger than allowed (`502 M_TOO_LARGE`).
    UpstreamTooLarge(String),
}

impl From<Error> for PreviewError {
    fn from(error: Error) -> Self {
        Self::Matrix(error)
    }
}

impl From<FetchError> for PreviewError {
    fn from(error: FetchError) -> Self {
        match error {
            FetchError::Blocked(why) => Self::Matrix(Error::forbidden(format!("This URL may not be previewed: {why}"))),
            FetchError::TooLarge(limit) => {
                Self::UpstreamTooLarge(format!("The page is larger than the preview limit of {limit} bytes"))
            }
            FetchError::Failed(why) => Self::Upstream(format!("Could not fetch the page: {why}")),
        }
    }
}

/// The previewer's configuration and client; `None` in [`Media`] when previews are off.
pub(crate) struct Previewer {
    fetcher: Fetcher,
    config: UrlPreviewConfig,
}

impl Previewer {
    pub(crate) fn new(config: &UrlPreviewConfig) -> Result<Option<Self>> {
        if !config.enabled {
            return Ok(None);
        }
        let filter = IpFilter::new(&config.ip_range_blacklist, &config.ip_range_whitelist).map_err(Error::internal)?;
        let fetcher = Fetcher::new(filter, config.max_redirects, CONNECT_TIMEOUT).map_err(Error::internal)?;
        Ok(Some(Self { fetcher, config: config.clone() }))
    }
}

/// Whether a media type is an HTML page.
fn is_html(content_type: Option<&str>) -> bool {
    matches!(content_type, Some("text/html" | "application/xhtml+xml"))
}

impl Media {
    /// The preview of `url` for `user`, as the OpenGraph JSON object's text.
    pub async fn preview_url(&self, user: &UserId, url: &str, ts: Option<i64>) -> Result<String, PreviewError> {
        let Some(previewer) = &self.inner.previewer else {
            return Err(Error::forbidden("URL previews are disabled on this server").into());
        };
        let parsed = reqwest::Url::parse(url).map_err(|_| Error::invalid_param("The URL is not a valid URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid_param("Only http and https URLs can be previewed").into());
        }

        let now = now_ms();
        let period = i64::try_from(previewer.config.cache_ms.max(1)).unwrap_or(i64::MAX);
        let current = now - now.rem_euclid(period);
        let wanted = ts.filter(|ts| *ts >= 0 && *ts < now).map_or(current, |ts| ts - ts.rem_euclid(period));
        let store = &self.inner.store;
        for candidate in [wanted, current] {
            if let Some(row) = store.get_url_preview(url, candidate).await? {
                return Ok(row.og);
            }
        }

        let deadline = Instant::now() + Duration::from_millis(previewer.config.timeout_ms.max(1));
        let page = fetch_before(previewer, url, deadline).await?;
        let (og, image_media_id) = self.open_graph(user, previewer, page, deadline).await;
        let og = Value::Object(og).to_string();
        let row = UrlPreviewRow { url: url.to_owned(), period_ts: current, fetched_ts: now, og, image_media_id };
        store.insert_url_preview(&row).await?;
        // Another request may have stored one first; everyone gets the same answer.
        let stored = store.get_url_preview(url, current).await?.map_or(row.og, |row| row.og);
        tracing::info!(user = %user, url, "URL previewed");
        Ok(stored)
    }

    /// The preview object of a fetched page (an HTML page's OpenGraph data, or the image
    /// itself), with its image stored; and the media id of that image.
    async fn open_graph(
        &self,
        user: &UserId,
        previewer: &Previewer,
        page: Fetched,
        deadline: Instant,
    ) -> (Map<String, Value>, Option<String>) {
        let mut og = Map::new();
        let image = if is_html(page.content_type.as_deref()) {
            let html = String::from_utf8_lossy(&page.body);
            let mut found = og::parse(&html);
            let image_url = found.remove("og:image").and_then(|image| page.url.join(&image).ok());
            for (key, value) in found {
                if key.starts_with("og:image:") {
                    continue;
                }
                og.insert(key, Value::String(value));
            }
            match image_url {
                Some(image_url) => match fetch_before(previewer, image_url.as_str(), deadline).await {
                    Ok(image) => Some(image),
                    Err(error) => {
                        tracing::info!(url = %image_url, ?error, "URL preview: could not fetch the page's image");
                        None
                    }
                },
                None => None,
            }
        } else if page.content_type.as_deref().is_some_and(|t| t.starts_with("image/")) {
            Some(page)
        } else {
            None
        };
        let Some(image) = image else {
            return (og, None);
        };
        match self.store_image(user, image).await {
            Ok(Some((media_id, content_type, size, dimensions))) => {
                og.insert("og:image".into(), Value::String(format!("mxc://{}/{media_id}", self.inner.server_name)));
                og.insert("og:image:type".into(), Value::String(content_type.into()));
                og.insert("matrix:image:size".into(), Value::from(size));
                if let Some((width, height)) = dimensions {
                    og.insert("og:image:width".into(), Value::from(width));
                    og.insert("og:image:height".into(), Value::from(height));
                }
                (og, Some(media_id))
            }
            Ok(None) => (og, None),
            Err(error) => {
                tracing::warn!(%error, "URL preview: could not store the page's image");
                (og, None)
            }
        }
    }

    /// Store a fetched image as local media of `user`, through the scanner. `None` when it is
    /// not an image we can read or the scanner refused it. Returns the media id, the sniffed
    /// type, the size and the dimensions.
    async fn store_image(
        &self,
        user: &UserId,
        image: Fetched,
    ) -> Result<Option<(String, &'static str, u64, Option<(u32, u32)>)>> {
        let Ok(format) = image::guess_format(&image.body) else {
            return Ok(None);
        };
        let content_type = match format {
            image::ImageFormat::Png => "image/png",
            image::ImageFormat::Jpeg => "image/jpeg",
            image::ImageFormat::Gif => "image/gif",
            image::ImageFormat::WebP => "image/webp",
            _ => return Ok(None),
        };
        let dimensions = image::ImageReader::with_format(Cursor::new(&image.body), format).into_dimensions().ok();
        let size = image.body.len() as u64;
        if size > self.max_upload_bytes() {
            return Ok(None);
        }
        let mut staged = self.stage_upload().await?;
        staged.write(&image.body).await?;
        let filename = image.url.path_segments().and_then(|mut s| s.next_back()).map(str::to_owned);
        let meta = UploadMeta::new(Some(content_type), filename.filter(|name| name.len() <= 255))?;
        match self.upload(user, staged, meta).await {
            Ok(uri) => {
                let media_id = uri.media_id().map(str::to_owned).map_err(Error::internal)?;
                Ok(Some((media_id, content_type, size, dimensions)))
            }
            Err(UploadError::Matrix(error)) => {
                tracing::warn!(%error, url = %image.url, "URL preview: the page's image was refused");
                Ok(None)
            }
            Err(UploadError::ScannerUnavailable) => Ok(None),
        }
    }
}

/// Fetch `url` with what is left of the time until `deadline`.
async fn fetch_before(previewer: &Previewer, url: &str, deadline: Instant) -> Result<Fetched, PreviewError> {
    match tokio::time::timeout_at(deadline, previewer.fetcher.get(url, previewer.config.max_page_bytes)).await {
        Ok(fetched) => Ok(fetched?),
        Err(_) => {
            Err(PreviewError::Upstream(format!("Could not fetch the page within {} ms", previewer.config.timeout_ms)))
        }
    }
}
