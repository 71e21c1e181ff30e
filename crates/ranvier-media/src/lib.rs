//! The media repository: uploads, downloads, thumbnails, and the content scanning every file
//! passes before anyone can download it.
//!
//! # Layout
//! - [`Media`]: the service. Uploads arrive as a [`Staged`] file (the HTTP glue streams the
//!   body into it), are scanned, then committed to the storage and recorded in the database;
//!   downloads and thumbnails wait for pending asynchronous uploads and honour quarantine and
//!   the freeze of unauthenticated media.
//! - [`storage`]: the [`MediaStorage`] trait and [`FsStorage`] (content-addressed files under
//!   `{data_dir}/media`, atomic commits).
//! - [`scanner`]: the [`Scanner`] trait; [`clamav`]: the clamd implementation.
//! - [`s3`]: [`S3Storage`], content in an S3-compatible bucket (Signature Version 4 over
//!   `reqwest`).
//! - [`thumbnail`]: standard sizes, bounded decoding, animated thumbnails; [`disposition`]:
//!   `Content-Type` and `Content-Disposition` rules.
//! - [`preview`]: URL previews; [`fetch`]: the HTTP client confined by an IP filter that they
//!   fetch through; [`og`]: OpenGraph data from HTML.
//! - Remote media (`mxc://other.server/…`): fetched through `ranvier-federation` (one fetch
//!   per media at a time), scanned like an upload, kept as cached remote media; thumbnails are
//!   made locally from the cached original.
//! - Retention: downloads are noted in memory and written out in batches
//!   ([`Media::flush_accesses`]); a background task deletes media not accessed for the
//!   configured time ([`Media::purge_not_accessed_since`]).
//!
//! # Architecture invariant
//! Nothing reaches the storage without having passed the scanner (unless the operator chose
//! `scanner_fail_open` and the scanner was down), and the database never points at content
//! that is not in the storage: content is committed before its row is written.

pub mod clamav;
pub mod disposition;
pub mod fetch;
pub mod og;
pub mod preview;
pub mod s3;
pub mod scanner;
pub mod storage;
pub mod thumbnail;

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, Weak},
    time::{Duration, Instant},
};

use ranvier_core::{
    Config, Error, Result,
    config::{MediaConfig, ScannerKind, StorageKind},
    error::ErrorKind,
    util::{now_ms, random_string},
};
use ranvier_store::{
    Store,
    media::{CompleteUpload, MediaContent, MediaRow, ThumbnailRow},
};
use ruma::{OwnedMxcUri, ServerName, UserId, api::error::LimitExceededErrorData};
use tokio::sync::{Mutex, Semaphore, watch};

pub use preview::PreviewError;
pub use s3::S3Storage;
pub use scanner::{NoScanner, ScanUnavailable, Scanner, Verdict};
pub use storage::{Content, FsStorage, MediaStorage, Staged, StagedFile};
pub use thumbnail::ThumbnailMethod;

/// The length of generated media ids.
const MEDIA_ID_LEN: usize = 24;
/// The longest a download waits for a pending asynchronous upload, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// The longest file name kept from an upload, in bytes.
const MAX_FILENAME_LEN: usize = 1024;
/// How many thumbnails are decoded at once; decoding is CPU- and memory-heavy.
const THUMBNAIL_CONCURRENCY: usize = 2;
/// How many media ids a retention run deletes per database round.
const PURGE_BATCH: i64 = 100;
/// A download is noted only when the recorded last access is older than this: last access is
/// coarse, and most downloads cost no write at all.
const ACCESS_GRANULARITY_MS: i64 = 60 * 60 * 1000;
/// How long URL previews are kept in the database (their images are media like any other).
const PREVIEW_KEEP_MS: i64 = 24 * 60 * 60 * 1000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The message of the `M_TOO_LARGE` error for remote media larger than the upload limit;
/// the spec answers it with `502`, not `413`.
pub const REMOTE_TOO_LARGE: &str = "The remote content is too large to serve";

/// Why an upload was not accepted.
#[derive(Debug)]
pub enum UploadError {
    /// A Matrix error for the client (`M_FORBIDDEN` for infected files, `M_TOO_LARGE`, …).
    Matrix(Error),
    /// The scanner could not be asked and the server fails closed: the client may retry.
    ScannerUnavailable,
}

impl From<Error> for UploadError {
    fn from(error: Error) -> Self {
        Self::Matrix(error)
    }
}

/// The client's description of an upload, checked.
#[derive(Clone, Debug)]
pub struct UploadMeta {
    content_type: String,
    filename: Option<String>,
}

impl UploadMeta {
    /// From the request's `Content-Type` header and `filename` query parameter. A file name
    /// with NUL characters or longer than 1024 bytes is refused with `M_INVALID_PARAM`.
    pub fn new(content_type: Option<&str>, filename: Option<String>) -> Result<Self> {
        let filename = filename.filter(|name| !name.is_empty());
        if let Some(name) = &filename {
            if name.contains('\0') {
                return Err(Error::invalid_param("The file name may not contain NUL characters"));
            }
            if name.len() > MAX_FILENAME_LEN {
                return Err(Error::invalid_param(format!("The file name is longer than {MAX_FILENAME_LEN} bytes")));
            }
        }
        Ok(Self { content_type: disposition::upload_content_type(content_type), filename })
    }
}

/// Which endpoints a download comes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `/_matrix/client/v1/media/…`, with an access token.
    Authenticated,
    /// The deprecated `/_matrix/media/v3/download` and `/thumbnail`: only media uploaded while
    /// unauthenticated access was allowed.
    Legacy,
}

/// A thumbnail request.
#[derive(Clone, Copy, Debug)]
pub struct ThumbnailRequest {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
    pub animated: bool,
}

/// Content on its way to a client.
pub struct Served {
    pub content_type: String,
    /// The name given at upload, if any.
    pub filename: Option<String>,
    /// The SHA-256 of the bytes, usable as an entity tag.
    pub sha256: String,
    pub content: Content,
}

/// Held while one remote media is fetched.
type FetchLock = Arc<Mutex<()>>;

/// The media service. Cheap to clone.
#[derive(Clone)]
pub struct Media {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    server_name: ruma::OwnedServerName,
    config: MediaConfig,
    storage: Arc<dyn MediaStorage>,
    scanner: Arc<dyn Scanner>,
    /// Bumped whenever content arrives, waking downloads that wait for a pending upload.
    uploads: watch::Sender<u64>,
    /// Serialises "commit content, then record it" against "remove unreferenced content", so
    /// that a file another upload is about to point at is never removed under it.
    content_lock: Mutex<()>,
    thumbnailers: Semaphore,
    /// `None` when URL previews are off.
    previewer: Option<preview::Previewer>,
    /// Downloads not yet written to the database: `(origin, media_id)` → time.
    accesses: std::sync::Mutex<HashMap<(String, String), i64>>,
    /// How remote media is fetched; unset when federation is off.
    federation: OnceLock<ranvier_federation::Federation>,
    /// One fetch at a time per remote media: `(origin, media_id)` → its lock.
    fetching: std::sync::Mutex<HashMap<(String, String), FetchLock>>,
}

impl Media {
    /// The media service as configured: files under [`Config::media_path`], the configured
    /// scanner.
    pub fn new(store: Store, server_name: ruma::OwnedServerName, config: &Config) -> Result<Self> {
        let storage: Arc<dyn MediaStorage> = match config.media.storage {
            StorageKind::Fs => Arc::new(FsStorage::open(&config.media_path())?),
            StorageKind::S3 => Arc::new(S3Storage::open(&config.media.s3, &config.media_path().join("tmp"))?),
        };
        let scanner: Arc<dyn Scanner> = match config.media.scanner {
            ScannerKind::None => Arc::new(NoScanner),
            ScannerKind::Clamav => {
                let address = clamav::ClamdAddress::parse(&config.media.clamav.address).map_err(Error::internal)?;
                let timeout = Duration::from_millis(config.media.clamav.timeout_ms.max(1));
                Arc::new(clamav::ClamAv::new(address, timeout))
            }
        };
        let previewer = preview::Previewer::new(&config.media.url_preview)?;
        Ok(Self::from_parts(store, server_name, config.media.clone(), storage, scanner, previewer))
    }

    /// The media service over explicit parts (other storages or scanners, tests).
    pub fn with_parts(
        store: Store,
        server_name: ruma::OwnedServerName,
        config: MediaConfig,
        storage: Arc<dyn MediaStorage>,
        scanner: Arc<dyn Scanner>,
    ) -> Result<Self> {
        let previewer = preview::Previewer::new(&config.url_preview)?;
        Ok(Self::from_parts(store, server_name, config, storage, scanner, previewer))
    }

    fn from_parts(
        store: Store,
        server_name: ruma::OwnedServerName,
        config: MediaConfig,
        storage: Arc<dyn MediaStorage>,
        scanner: Arc<dyn Scanner>,
        previewer: Option<preview::Previewer>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                server_name,
                config,
                storage,
                scanner,
                uploads: watch::Sender::new(0),
                content_lock: Mutex::new(()),
                thumbnailers: Semaphore::new(THUMBNAIL_CONCURRENCY),
                previewer,
                accesses: std::sync::Mutex::new(HashMap::new()),
                federation: OnceLock::new(),
                fetching: std::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Fetch remote media through `federation` from now on.
    pub fn set_federation(&self, federation: ranvier_federation::Federation) {
        let _ = self.inner.federation.set(federation);
    }

    /// Start the background tasks of a serving process: writing noted downloads out, and
    /// retention. They end when the service is dropped.
    pub fn start_background_tasks(&self) {
        let weak = Arc::downgrade(&self.inner);
        let flush_every = Duration::from_millis(self.inner.config.retention.access_flush_ms.max(10));
        tokio::spawn(every(weak.clone(), flush_every, |media| async move {
            if let Err(error) = media.flush_accesses().await {
                tracing::warn!(%error, "could not record media downloads");
            }
        }));
        let retention_every = Duration::from_millis(self.inner.config.retention.interval_ms.max(10));
        tokio::spawn(every(weak, retention_every, |media| async move {
            if let Err(error) = media.run_retention().await {
                tracing::warn!(%error, "media retention run failed");
            }
        }));
    }

    /// Write the downloads noted since the last flush to the database.
    pub async fn flush_accesses(&self) -> Result<()> {
        let batch: Vec<(String, String, i64)> = {
            let mut accesses = self.inner.accesses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            accesses.drain().map(|((origin, media_id), ts)| (origin, media_id, ts)).collect()
        };
        self.inner.store.record_media_access(&batch).await
    }

    /// One retention run: delete media not accessed for the configured times, and old URL
    /// previews. Returns how many media were deleted.
    pub async fn run_retention(&self) -> Result<u64> {
        // Downloads noted but not yet written must count.
        self.flush_accesses().await?;
        let retention = &self.inner.config.retention;
        let now = now_ms();
        let mut deleted = 0;
        for (local, days) in [(true, retention.local_media_days), (false, retention.remote_media_days)] {
            if days == 0 {
                continue;
            }
            let age = i64::try_from(days).unwrap_or(i64::MAX).saturating_mul(DAY_MS);
            deleted += self.purge_not_accessed_since(local, now.saturating_sub(age)).await?.len() as u64;
        }
        if deleted > 0 {
            tracing::info!(deleted, "media retention: deleted media not accessed lately");
        }
        self.inner.store.delete_url_previews_before(now.saturating_sub(PREVIEW_KEEP_MS)).await?;
        Ok(deleted)
    }

    /// Delete media (local ones, or cached remote ones) last accessed before `before_ts` (ms),
    /// quarantined media excepted; returns the media ids deleted.
    pub async fn purge_not_accessed_since(&self, local: bool, before_ts: i64) -> Result<Vec<String>> {
        let mut deleted = Vec::new();
        loop {
            let batch = self
                .inner
                .store
                .media_not_accessed_since(self.inner.server_name.as_str(), local, before_ts, PURGE_BATCH)
                .await?;
            if batch.is_empty() {
                return Ok(deleted);
            }
            for (origin, media_id) in batch {
                let Ok(origin) = ruma::OwnedServerName::try_from(origin.as_str()) else {
                    continue;
                };
                if self.delete(&origin, &media_id).await? {
                    deleted.push(media_id);
                }
            }
        }
    }

    /// Note a download of `row`, unless its recorded last access is recent enough.
    fn note_access(&self, row: &MediaRow) {
        let now = now_ms();
        if row.last_access_ts.is_some_and(|last| now.saturating_sub(last) < ACCESS_GRANULARITY_MS) {
            return;
        }
        let mut accesses = self.inner.accesses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        accesses.insert((row.origin.clone(), row.media_id.clone()), now);
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The largest upload accepted, in bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.inner.config.max_upload_bytes
    }

    /// A staging file to stream an upload into; it refuses bytes beyond the upload limit.
    pub async fn stage_upload(&self) -> Result<Staged> {
        self.inner.storage.stage(self.max_upload_bytes()).await
    }

    /// Store a complete upload (`POST /_matrix/media/v3/upload`) once it passes the scanner;
    /// returns its new `mxc://` URI.
    pub async fn upload(
        &self,
        uploader: &UserId,
        staged: Staged,
        meta: UploadMeta,
    ) -> Result<OwnedMxcUri, UploadError> {
        let media_id = random_string(MEDIA_ID_LEN);
        let file = staged.finish().await?;
        self.scan(uploader.as_str(), &media_id, &file).await?;
        let content = self.content_of(&file, meta);
        let sha256 = file.sha256.clone();
        let _lock = self.inner.content_lock.lock().await;
        self.inner.storage.commit(file).await?;
        let recorded = self
            .inner
            .store
            .insert_media(
                self.inner.server_name.as_str(),
                &media_id,
                uploader.as_str(),
                &content,
                !self.inner.config.legacy_unauthenticated,
            )
            .await;
        if let Err(error) = recorded {
            self.remove_if_unreferenced(&sha256).await;
            return Err(error.into());
        }
        drop(_lock);
        self.inner.uploads.send_modify(|n| *n = n.wrapping_add(1));
        tracing::info!(user = %uploader, media_id, sha256, size = content.size, "media uploaded");
        Ok(self.mxc(&media_id))
    }

    /// Reserve an `mxc://` URI for a later upload (`POST /_matrix/media/v1/create`); returns
    /// it with the time (ms) at which it expires unless content arrives.
    pub async fn create_mxc(&self, uploader: &UserId) -> Result<(OwnedMxcUri, i64)> {
        let now = now_ms();
        let expires = now.saturating_add(i64::try_from(self.inner.config.unused_expiry_ms).unwrap_or(i64::MAX));
        let media_id = random_string(MEDIA_ID_LEN);
        let created = self
            .inner
            .store
            .create_pending_media(
                self.inner.server_name.as_str(),
                &media_id,
                uploader.as_str(),
                now,
                expires,
                !self.inner.config.legacy_unauthenticated,
                i64::from(self.inner.config.max_pending_uploads),
            )
            .await?;
        if !created {
            return Err(Error::matrix(
                ErrorKind::LimitExceeded(LimitExceededErrorData::new()),
                "Too many pending uploads: upload to the media ids already created first",
            ));
        }
        Ok((self.mxc(&media_id), expires))
    }

    /// Check, before the body is read, that `uploader` may upload to this URI now
    /// (`PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`).
    pub async fn check_pending_upload(
        &self,
        uploader: &UserId,
        server_name: &ServerName,
        media_id: &str,
    ) -> Result<()> {
        let row = self.local_row(server_name, media_id).await?.ok_or_else(unknown_media)?;
        if row.uploader != uploader.as_str() {
            return Err(Error::forbidden("This media id was created by another user"));
        }
        if row.has_content() {
            return Err(cannot_overwrite());
        }
        if row.unused_expires_ts.is_none_or(|expires| expires <= now_ms()) {
            return Err(unknown_media());
        }
        Ok(())
    }

    /// Upload content to a URI from [`create_mxc`](Self::create_mxc).
    pub async fn upload_to(
        &self,
        uploader: &UserId,
        server_name: &ServerName,
        media_id: &str,
        staged: Staged,
        meta: UploadMeta,
    ) -> Result<(), UploadError> {
        self.check_pending_upload(uploader, server_name, media_id).await?;
        let file = staged.finish().await?;
        self.scan(uploader.as_str(), media_id, &file).await?;
        let content = self.content_of(&file, meta);
        let sha256 = file.sha256.clone();
        let _lock = self.inner.content_lock.lock().await;
        self.inner.storage.commit(file).await?;
        let outcome =
            self.inner.store.complete_pending_media(server_name.as_str(), media_id, uploader.as_str(), &content).await;
        let error = match outcome {
            Ok(CompleteUpload::Done) => None,
            Ok(CompleteUpload::NotFound) => Some(unknown_media()),
            Ok(CompleteUpload::NotOwner) => Some(Error::forbidden("This media id was created by another user")),
            Ok(CompleteUpload::AlreadyUploaded) => Some(cannot_overwrite()),
            Err(error) => Some(error),
        };
        if let Some(error) = error {
            // Another upload won the race, or the id expired meanwhile: the committed copy may
            // be referenced by nothing.
            self.remove_if_unreferenced(&sha256).await;
            return Err(error.into());
        }
        drop(_lock);
        self.inner.uploads.send_modify(|n| *n = n.wrapping_add(1));
        tracing::info!(user = %uploader, media_id, sha256, size = content.size, "media uploaded");
        Ok(())
    }

    /// The content of `mxc://{server_name}/{media_id}`, waiting up to `timeout` for a pending
    /// upload (`M_NOT_YET_UPLOADED` after that).
    ///
    /// Media of other servers is fetched over federation (unless `allow_remote` is false),
    /// scanned, and kept as cached remote media.
    pub async fn download(
        &self,
        server_name: &ServerName,
        media_id: &str,
        access: Access,
        timeout: Duration,
        allow_remote: bool,
    ) -> Result<Served> {
        let row = self.row_to_serve(server_name, media_id, access, timeout, allow_remote).await?;
        self.note_access(&row);
        let sha256 = row.sha256.clone().unwrap_or_default();
        let content = self.open_content(&sha256).await?;
        Ok(Served {
            content_type: row.content_type.unwrap_or_else(|| disposition::DEFAULT_CONTENT_TYPE.to_owned()),
            filename: row.upload_name,
            sha256,
            content,
        })
    }

    /// A thumbnail of `mxc://{server_name}/{media_id}` at the standard size that answers
    /// `request`, made on first use and kept.
    pub async fn thumbnail(
        &self,
        server_name: &ServerName,
        media_id: &str,
        request: ThumbnailRequest,
        access: Access,
        timeout: Duration,
        allow_remote: bool,
    ) -> Result<Served> {
        let row = self.row_to_serve(server_name, media_id, access, timeout, allow_remote).await?;
        self.note_access(&row);
        let target = thumbnail::choose_size(request.width, request.height, request.method);
        // An animated wish changes the answer only for small animated originals, but it is
        // simplest and still cheap to keep its thumbnails apart.
        let method_key = match request.animated {
            true => format!("{}+animated", target.method.as_str()),
            false => target.method.as_str().to_owned(),
        };
        let (width, height) = (i64::from(target.width), i64::from(target.height));
        let cached = self.inner.store.get_thumbnail(&row.origin, &row.media_id, width, height, &method_key).await?;
        let thumbnail = match cached {
            Some(thumbnail) => thumbnail,
            None => self.make_thumbnail(&row, target, request.animated, method_key).await?,
        };
        let content = self.open_content(&thumbnail.sha256).await?;
        Ok(Served { content_type: thumbnail.content_type, filename: None, sha256: thumbnail.sha256, content })
    }

    /// Stop serving media (it is kept for inspection); returns whether it exists.
    pub async fn quarantine(&self, server_name: &ServerName, media_id: &str, by: &str) -> Result<bool> {
        let quarantined = self.inner.store.quarantine_media(server_name.as_str(), media_id, by, now_ms()).await?;
        if quarantined {
            tracing::warn!(server_name = %server_name, media_id, by, "media quarantined");
        }
        Ok(quarantined)
    }

    /// Delete media, its thumbnails and any file no longer referenced; returns whether it
    /// existed.
    pub async fn delete(&self, server_name: &ServerName, media_id: &str) -> Result<bool> {
        let Some(hashes) = self.inner.store.delete_media(server_name.as_str(), media_id).await? else {
            return Ok(false);
        };
        let _lock = self.inner.content_lock.lock().await;
        for sha256 in hashes {
            if !self.inner.store.content_is_referenced(&sha256).await? {
                self.inner.storage.delete(&sha256).await?;
            }
        }
        tracing::info!(server_name = %server_name, media_id, "media deleted");
        Ok(true)
    }

    /// Delete every local media uploaded before `before_ts` (ms); returns how many.
    pub async fn purge_uploaded_before(&self, before_ts: i64) -> Result<u64> {
        let mut deleted = 0;
        loop {
            let ids =
                self.inner.store.media_uploaded_before(self.inner.server_name.as_str(), before_ts, PURGE_BATCH).await?;
            if ids.is_empty() {
                return Ok(deleted);
            }
            for media_id in ids {
                if self.delete(&self.inner.server_name, &media_id).await? {
                    deleted += 1;
                }
            }
        }
    }

    fn mxc(&self, media_id: &str) -> OwnedMxcUri {
        OwnedMxcUri::from(format!("mxc://{}/{media_id}", self.inner.server_name))
    }

    fn content_of(&self, file: &StagedFile, meta: UploadMeta) -> MediaContent {
        MediaContent {
            content_type: meta.content_type,
            upload_name: meta.filename,
            sha256: file.sha256.clone(),
            size: i64::try_from(file.size).unwrap_or(i64::MAX),
            uploaded_ts: now_ms(),
        }
    }

    /// Pass the staged file through the scanner, applying the fail-open policy.
    async fn scan(&self, uploader: &str, media_id: &str, file: &StagedFile) -> Result<(), UploadError> {
        let scanner = &self.inner.scanner;
        match scanner.scan(file.path()).await {
            Ok(Verdict::Clean) => Ok(()),
            Ok(Verdict::Infected(detection)) => {
                tracing::warn!(
                    user = %uploader, media_id, sha256 = file.sha256, detection, scanner = scanner.name(),
                    "upload refused: the content scanner found malware"
                );
                Err(Error::forbidden(format!("This file was refused: the content scanner detected {detection}")).into())
            }
            Err(ScanUnavailable(reason)) if self.inner.config.scanner_fail_open => {
                tracing::warn!(
                    user = %uploader, media_id, sha256 = file.sha256, reason, scanner = scanner.name(),
                    "content scanner unavailable; storing the upload unscanned (scanner_fail_open)"
                );
                Ok(())
            }
            Err(ScanUnavailable(reason)) => {
                tracing::error!(
                    user = %uploader, media_id, reason, scanner = scanner.name(),
                    "content scanner unavailable; upload refused"
                );
                Err(UploadError::ScannerUnavailable)
            }
        }
    }

    /// The row of local media, `None` for unknown ids. Remote media is not fetched (yet):
    /// other servers' ids are unknown here.
    async fn local_row(&self, server_name: &ServerName, media_id: &str) -> Result<Option<MediaRow>> {
        if server_name != self.inner.server_name || !is_valid_media_id(media_id) {
            return Ok(None);
        }
        self.inner.store.get_media(server_name.as_str(), media_id).await
    }

    /// The row of servable media: local media (see [`Self::wait_for_content`]) or remote
    /// media, from the cache or fetched.
    async fn row_to_serve(
        &self,
        server_name: &ServerName,
        media_id: &str,
        access: Access,
        timeout: Duration,
        allow_remote: bool,
    ) -> Result<MediaRow> {
        if server_name == self.inner.server_name {
            return self.wait_for_content(server_name, media_id, access, timeout).await;
        }
        if !is_valid_media_id(media_id) {
            return Err(unknown_media());
        }
        if let Some(row) = self.inner.store.get_media(server_name.as_str(), media_id).await? {
            if row.quarantined_ts.is_some() || (access == Access::Legacy && row.authenticated) {
                return Err(unknown_media());
            }
            if row.has_content() {
                return Ok(row);
            }
        }
        if !allow_remote || (access == Access::Legacy && !self.inner.config.legacy_unauthenticated) {
            return Err(unknown_media());
        }
        let Some(federation) = self.inner.federation.get() else {
            return Err(unknown_media());
        };
        // Requests for the same remote media wait for one fetch instead of each fetching it.
        let key = (server_name.as_str().to_owned(), media_id.to_owned());
        let lock = {
            let mut fetching = self.inner.fetching.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            fetching.entry(key.clone()).or_default().clone()
        };
        let guard = lock.lock().await;
        let result = match self.inner.store.get_media(server_name.as_str(), media_id).await {
            Ok(Some(row)) if row.has_content() && row.quarantined_ts.is_none() => Ok(row),
            Err(error) => Err(error),
            Ok(_) => {
                let timeout = timeout.clamp(Duration::from_secs(1), MAX_WAIT);
                self.fetch_remote(federation, server_name, media_id, timeout).await
            }
        };
        drop(guard);
        let mut fetching = self.inner.fetching.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Forget the lock once nobody else holds it (the map and this function hold two).
        if fetching.get(&key).is_some_and(|held| Arc::strong_count(held) <= 2) {
            fetching.remove(&key);
        }
        drop(fetching);
        result
    }

    /// Fetch remote media over federation, scan it, store it as cached remote media.
    async fn fetch_remote(
        &self,
        federation: &ranvier_federation::Federation,
        server_name: &ServerName,
        media_id: &str,
        timeout: Duration,
    ) -> Result<MediaRow> {
        use ranvier_federation::RequestError;
        use ruma::api::federation::authenticated_media::{FileOrLocation, get_content};
        let mut request = get_content::v1::Request::new(media_id.to_owned());
        request.timeout_ms = timeout;
        // The multipart envelope adds a little to the content itself.
        let max_body = self.max_upload_bytes().saturating_add(64 * 1024);
        let fetched = match federation.send(server_name, request, timeout + Duration::from_secs(5), max_body).await {
            Ok(response) => match response.content {
                FileOrLocation::File(content) => Ok((
                    content.content_type,
                    content.content_disposition.and_then(|d| d.filename),
                    bytes::Bytes::from(content.file),
                )),
                FileOrLocation::Location(url) => federation
                    .get_location(&url, timeout, self.max_upload_bytes())
                    .await
                    .map(|(content_type, body)| (content_type, None, body)),
                _ => Err(RequestError::BadResponse("unknown media response".into())),
            },
            Err(error) => Err(error),
        };
        let (content_type, filename, body) = match fetched {
            Ok(fetched) => fetched,
            Err(RequestError::TooLarge) => return Err(Error::too_large(REMOTE_TOO_LARGE)),
            Err(RequestError::TimedOut) => {
                return Err(Error::matrix(ErrorKind::NotYetUploaded, "The remote server did not answer in time"));
            }
            Err(error) => {
                tracing::info!(server = %server_name, media_id, %error, "could not fetch remote media");
                return Err(unknown_media());
            }
        };
        if body.len() as u64 > self.max_upload_bytes() {
            return Err(Error::too_large(REMOTE_TOO_LARGE));
        }
        let mut staged = self.inner.storage.stage(body.len() as u64).await?;
        staged.write(&body).await?;
        let file = staged.finish().await?;
        let who = format!("remote:{server_name}");
        self.scan(&who, media_id, &file).await.map_err(|error| match error {
            UploadError::Matrix(error) => error,
            UploadError::ScannerUnavailable => {
                Error::matrix(ErrorKind::NotYetUploaded, "The content scanner is unavailable; try again later")
            }
        })?;
        let meta = UploadMeta::new(content_type.as_deref(), filename)
            .unwrap_or(UploadMeta { content_type: disposition::DEFAULT_CONTENT_TYPE.to_owned(), filename: None });
        let content = self.content_of(&file, meta);
        let sha256 = file.sha256.clone();
        let _lock = self.inner.content_lock.lock().await;
        self.inner.storage.commit(file).await?;
        let authenticated = !self.inner.config.legacy_unauthenticated;
        let recorded = self.inner.store.insert_media(server_name.as_str(), media_id, "", &content, authenticated).await;
        if let Err(error) = recorded {
            // Another request may have cached it first.
            tracing::debug!(%error, "recording remote media failed; reading what is recorded");
            self.remove_if_unreferenced(&sha256).await;
        }
        drop(_lock);
        tracing::info!(server = %server_name, media_id, sha256, size = content.size, "remote media cached");
        let row = self.inner.store.get_media(server_name.as_str(), media_id).await?;
        row.filter(MediaRow::has_content).ok_or_else(unknown_media)
    }

    /// The row of servable media, waiting for a pending upload up to `timeout` (capped).
    async fn wait_for_content(
        &self,
        server_name: &ServerName,
        media_id: &str,
        access: Access,
        timeout: Duration,
    ) -> Result<MediaRow> {
        let deadline = Instant::now() + timeout.min(MAX_WAIT);
        loop {
            // Subscribe before reading, so that an upload landing in between still wakes us.
            let mut uploads = self.inner.uploads.subscribe();
            let row = self.local_row(server_name, media_id).await?.ok_or_else(unknown_media)?;
            if access == Access::Legacy && row.authenticated {
                // The freeze: media from after it is only served on the authenticated endpoints.
                return Err(unknown_media());
            }
            if row.quarantined_ts.is_some() {
                return Err(unknown_media());
            }
            if row.has_content() {
                return Ok(row);
            }
            if row.unused_expires_ts.is_none_or(|expires| expires <= now_ms()) {
                return Err(unknown_media());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::matrix(ErrorKind::NotYetUploaded, "Content has not yet been uploaded"));
            }
            // A timeout here just leads to the check above.
            let _ = tokio::time::timeout(deadline - now, uploads.changed()).await;
        }
    }

    async fn open_content(&self, sha256: &str) -> Result<Content> {
        self.inner
            .storage
            .open(sha256)
            .await?
            .ok_or_else(|| Error::internal(format!("media content {sha256} is recorded but missing from the storage")))
    }

    /// Make the thumbnail of `row` at `target`, store it and record it under `method_key`.
    async fn make_thumbnail(
        &self,
        row: &MediaRow,
        target: thumbnail::ThumbnailSize,
        animated: bool,
        method_key: String,
    ) -> Result<ThumbnailRow> {
        let original = row.sha256.clone().unwrap_or_default();
        let _permit = self.inner.thumbnailers.acquire().await.map_err(|_| Error::internal("thumbnailer closed"))?;
        let bytes = self.open_content(&original).await?.collect().await?;
        let max_frames = usize::try_from(self.inner.config.max_animated_frames).unwrap_or(usize::MAX);
        let limits = thumbnail::DecodeLimits::for_pixels(self.inner.config.max_thumbnail_pixels, max_frames);
        let made = tokio::task::spawn_blocking(move || thumbnail::make_thumbnail(&bytes, target, animated, limits))
            .await
            .map_err(|e| Error::internal(format!("thumbnail task: {e}")))??;
        let (width, height) = (i64::from(target.width), i64::from(target.height));
        let (content_type, file) = match made {
            thumbnail::Thumbnail::Original { content_type } => (content_type, None),
            thumbnail::Thumbnail::Generated { bytes, content_type, .. } => {
                let mut staged = self.inner.storage.stage(bytes.len() as u64).await?;
                staged.write(&bytes).await?;
                (content_type, Some(staged.finish().await?))
            }
        };
        let thumbnail = ThumbnailRow {
            width,
            height,
            method: method_key,
            content_type: content_type.to_owned(),
            sha256: file.as_ref().map_or_else(|| original.clone(), |file| file.sha256.clone()),
            size: file.as_ref().map_or(row.size.unwrap_or(0), |file| i64::try_from(file.size).unwrap_or(i64::MAX)),
        };
        // Commit and record under the content lock, so that the file cannot be removed as
        // unreferenced before its row exists.
        let _lock = self.inner.content_lock.lock().await;
        if let Some(file) = file {
            self.inner.storage.commit(file).await?;
        }
        self.inner.store.insert_thumbnail(&row.origin, &row.media_id, &thumbnail, now_ms()).await?;
        // A thumbnail made at the same time by another request may have been recorded first;
        // serve whichever is recorded.
        let recorded = self
            .inner
            .store
            .get_thumbnail(&row.origin, &row.media_id, width, height, &thumbnail.method)
            .await?
            .unwrap_or(thumbnail.clone());
        if recorded.sha256 != thumbnail.sha256 {
            self.remove_if_unreferenced(&thumbnail.sha256).await;
        }
        Ok(recorded)
    }

    /// Remove stored content that no row refers to (after a failed or lost upload). Failures
    /// are logged: the file is only wasted space.
    async fn remove_if_unreferenced(&self, sha256: &str) {
        match self.inner.store.content_is_referenced(sha256).await {
            Ok(true) => {}
            Ok(false) => {
                if let Err(error) = self.inner.storage.delete(sha256).await {
                    tracing::warn!(sha256, %error, "could not remove unreferenced media content");
                }
            }
            Err(error) => tracing::warn!(sha256, %error, "could not check media content references"),
        }
    }
}

/// Run `task` on the service every `period` for as long as it exists.
async fn every<F, Fut>(inner: Weak<Inner>, period: Duration, task: F)
where
    F: Fn(Media) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; start one period in.
    interval.tick().await;
    loop {
        interval.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        task(Media { inner }).await;
    }
}

/// Whether `media_id` is a valid media id: `A-Za-z0-9`, `_` and `-` (the spec's rule, which
/// also keeps ids safe in paths and headers).
pub fn is_valid_media_id(media_id: &str) -> bool {
    !media_id.is_empty()
        && media_id.len() <= 255
        && media_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn unknown_media() -> Error {
    Error::not_found("Unknown media")
}

fn cannot_overwrite() -> Error {
    Error::matrix(ErrorKind::CannotOverwriteMedia, "Media already uploaded")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_ids() {
        assert!(is_valid_media_id("AbC_12-x"));
        for bad in ["", "a/b", "..", "a.b", "a b", "ü", &"a".repeat(256)] {
            assert!(!is_valid_media_id(bad), "{bad}");
        }
    }

    #[test]
    fn upload_meta() {
        let meta = UploadMeta::new(Some("image/png"), Some("cat.png".into())).unwrap();
        assert_eq!((meta.content_type.as_str(), meta.filename.as_deref()), ("image/png", Some("cat.png")));
        let meta = UploadMeta::new(None, Some(String::new())).unwrap();
        assert_eq!((meta.content_type.as_str(), meta.filename), (disposition::DEFAULT_CONTENT_TYPE, None));
        assert!(UploadMeta::new(None, Some("a\0b".into())).is_err());
        assert!(UploadMeta::new(None, Some("a".repeat(MAX_FILENAME_LEN + 1))).is_err());
    }
}
