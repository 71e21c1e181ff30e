//! Storage of media metadata: uploads, thumbnails, quarantine.
//!
//! The bytes themselves are not in the database: they live in the media storage under their
//! SHA-256, and rows here point at them. Several rows may share one hash (identical uploads,
//! or a thumbnail that is the original itself), so a file may only be removed once no row
//! refers to it ([`Store::content_is_referenced`]).

use ranvier_core::{Result, error::Context};

use crate::Store;

/// One `mxc://` URI and what is known about its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaRow {
    pub origin: String,
    pub media_id: String,
    pub uploader: String,
    pub created_ts: i64,
    /// For a URI from `/create` without content yet: when it stops accepting an upload.
    pub unused_expires_ts: Option<i64>,
    /// When the content arrived; `None` while an asynchronous upload is pending.
    pub uploaded_ts: Option<i64>,
    pub content_type: Option<String>,
    pub upload_name: Option<String>,
    pub sha256: Option<String>,
    pub size: Option<i64>,
    /// Only the authenticated endpoints may serve it (it was uploaded during the freeze).
    pub authenticated: bool,
    pub quarantined_ts: Option<i64>,
    /// When it was last downloaded (coarsely: see [`Store::record_media_access`]).
    pub last_access_ts: Option<i64>,
}

impl MediaRow {
    /// Whether the content has been uploaded.
    pub fn has_content(&self) -> bool {
        self.uploaded_ts.is_some() && self.sha256.is_some()
    }
}

/// The content of an upload, as recorded once it is safely in the media storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaContent {
    pub content_type: String,
    pub upload_name: Option<String>,
    pub sha256: String,
    pub size: i64,
    pub uploaded_ts: i64,
}

/// What happened to an upload to a URI created with `/create`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompleteUpload {
    /// The content is recorded.
    Done,
    /// No such pending URI (never created, expired, or another server's).
    NotFound,
    /// The URI belongs to another user.
    NotOwner,
    /// The URI already has content.
    AlreadyUploaded,
}

/// A stored thumbnail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThumbnailRow {
    pub width: i64,
    pub height: i64,
    /// `crop` or `scale`.
    pub method: String,
    pub content_type: String,
    pub sha256: String,
    pub size: i64,
}

type MediaTuple = (
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    i64,
    Option<i64>,
    Option<i64>,
);

/// A stored URL preview.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlPreviewRow {
    pub url: String,
    /// The start of the cache period it belongs to.
    pub period_ts: i64,
    pub fetched_ts: i64,
    /// The OpenGraph object, as JSON text.
    pub og: String,
    /// The local media holding the preview's image, if any.
    pub image_media_id: Option<String>,
}

fn media_row(t: MediaTuple) -> MediaRow {
    MediaRow {
        origin: t.0,
        media_id: t.1,
        uploader: t.2,
        created_ts: t.3,
        unused_expires_ts: t.4,
        uploaded_ts: t.5,
        content_type: t.6,
        upload_name: t.7,
        sha256: t.8,
        size: t.9,
        authenticated: crate::flag(t.10),
        quarantined_ts: t.11,
        last_access_ts: t.12,
    }
}

impl Store {
    /// Record a URI from `POST /_matrix/media/v1/create`, unless `uploader` already holds
    /// `max_pending` URIs still waiting for content; returns whether it was created. Pending
    /// URIs of the uploader that have expired are removed on the way.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_pending_media(
        &self,
        origin: &str,
        media_id: &str,
        uploader: &str,
        now: i64,
        expires_ts: i64,
        authenticated: bool,
        max_pending: i64,
    ) -> Result<bool> {
        let mut txn = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM media WHERE uploader = $1 AND uploaded_ts IS NULL AND unused_expires_ts IS NOT NULL
             AND unused_expires_ts <= $2",
        )
        .bind(uploader)
        .bind(now)
        .execute(&mut *txn)
        .await
        .context("remove expired pending media")?;
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM media WHERE uploader = $1 AND uploaded_ts IS NULL")
            .bind(uploader)
            .fetch_one(&mut *txn)
            .await
            .context("count pending media")?;
        if pending >= max_pending {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO media (origin, media_id, uploader, created_ts, unused_expires_ts, authenticated, last_access_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $4)",
        )
        .bind(origin)
        .bind(media_id)
        .bind(uploader)
        .bind(now)
        .bind(expires_ts)
        .bind(i64::from(authenticated))
        .execute(&mut *txn)
        .await
        .context("create pending media")?;
        txn.commit().await?;
        Ok(true)
    }

    /// Record a complete upload (`POST /_matrix/media/v3/upload`).
    pub async fn insert_media(
        &self,
        origin: &str,
        media_id: &str,
        uploader: &str,
        content: &MediaContent,
        authenticated: bool,
    ) -> Result<()> {
        let mut txn = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO media (origin, media_id, uploader, created_ts, uploaded_ts, content_type, upload_name,
                                sha256, size, authenticated, last_access_ts)
             VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9, $4)",
        )
        .bind(origin)
        .bind(media_id)
        .bind(uploader)
        .bind(content.uploaded_ts)
        .bind(&content.content_type)
        .bind(content.upload_name.as_deref())
        .bind(&content.sha256)
        .bind(content.size)
        .bind(i64::from(authenticated))
        .execute(&mut *txn)
        .await
        .context("insert media")?;
        txn.commit().await
    }

    /// Attach content to a URI created with `/create`. Only its creator may, only once, and
    /// only before it expires.
    pub async fn complete_pending_media(
        &self,
        origin: &str,
        media_id: &str,
        uploader: &str,
        content: &MediaContent,
    ) -> Result<CompleteUpload> {
        let mut txn = self.begin_write().await?;
        // One conditional update, so that two uploads racing for the same URI cannot both win.
        let updated = sqlx::query(
            "UPDATE media SET uploaded_ts = $4, content_type = $5, upload_name = $6, sha256 = $7, size = $8,
                              unused_expires_ts = NULL, last_access_ts = $4
             WHERE origin = $1 AND media_id = $2 AND uploader = $3 AND uploaded_ts IS NULL
               AND unused_expires_ts > $4",
        )
        .bind(origin)
        .bind(media_id)
        .bind(uploader)
        .bind(content.uploaded_ts)
        .bind(&content.content_type)
        .bind(content.upload_name.as_deref())
        .bind(&content.sha256)
        .bind(content.size)
        .execute(&mut *txn)
        .await
        .context("complete pending media")?;
        if updated.rows_affected() > 0 {
            txn.commit().await?;
            return Ok(CompleteUpload::Done);
        }
        let row: Option<(String, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT uploader, uploaded_ts, unused_expires_ts FROM media WHERE origin = $1 AND media_id = $2",
        )
        .bind(origin)
        .bind(media_id)
        .fetch_optional(&mut *txn)
        .await
        .context("read pending media")?;
        Ok(classify_failed_completion(row, uploader, content.uploaded_ts))
    }

    /// One media row.
    pub async fn get_media(&self, origin: &str, media_id: &str) -> Result<Option<MediaRow>> {
        let row: Option<MediaTuple> = sqlx::query_as(
            "SELECT origin, media_id, uploader, created_ts, unused_expires_ts, uploaded_ts, content_type,
                        upload_name, sha256, size, authenticated, quarantined_ts, last_access_ts
                 FROM media WHERE origin = $1 AND media_id = $2",
        )
        .bind(origin)
        .bind(media_id)
        .fetch_optional(self.pool())
        .await
        .context("get media")?;
        Ok(row.map(media_row))
    }

    /// A stored thumbnail of one size and method.
    pub async fn get_thumbnail(
        &self,
        origin: &str,
        media_id: &str,
        width: i64,
        height: i64,
        method: &str,
    ) -> Result<Option<ThumbnailRow>> {
        let row: Option<(i64, i64, String, String, String, i64)> = sqlx::query_as(
            "SELECT width, height, method, content_type, sha256, size FROM media_thumbnails
             WHERE origin = $1 AND media_id = $2 AND width = $3 AND height = $4 AND method = $5",
        )
        .bind(origin)
        .bind(media_id)
        .bind(width)
        .bind(height)
        .bind(method)
        .fetch_optional(self.pool())
        .await
        .context("get thumbnail")?;
        Ok(row.map(|(width, height, method, content_type, sha256, size)| ThumbnailRow {
            width,
            height,
            method,
            content_type,
            sha256,
            size,
        }))
    }

    /// Record a thumbnail; a thumbnail of the same size generated meanwhile is kept instead.
    pub async fn insert_thumbnail(
        &self,
        origin: &str,
        media_id: &str,
        thumbnail: &ThumbnailRow,
        now: i64,
    ) -> Result<()> {
        let mut txn = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO media_thumbnails (origin, media_id, width, height, method, content_type, sha256, size, created_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (origin, media_id, width, height, method) DO NOTHING",
        )
        .bind(origin)
        .bind(media_id)
        .bind(thumbnail.width)
        .bind(thumbnail.height)
        .bind(&thumbnail.method)
        .bind(&thumbnail.content_type)
        .bind(&thumbnail.sha256)
        .bind(thumbnail.size)
        .bind(now)
        .execute(&mut *txn)
        .await
        .context("insert thumbnail")?;
        txn.commit().await
    }

    /// Whether any media or thumbnail row points at the content with this hash.
    pub async fn content_is_referenced(&self, sha256: &str) -> Result<bool> {
        let count: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1)
                  + (SELECT COUNT(*) FROM media_thumbnails WHERE sha256 = $1)",
        )
        .bind(sha256)
        .fetch_one(self.pool())
        .await
        .context("count content references")?;
        Ok(count > 0)
    }

    /// Mark media as quarantined: it is no longer served, but kept for inspection. Returns
    /// whether the media exists.
    pub async fn quarantine_media(&self, origin: &str, media_id: &str, by: &str, now: i64) -> Result<bool> {
        let mut txn = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE media SET quarantined_ts = COALESCE(quarantined_ts, $3), quarantined_by = COALESCE(quarantined_by, $4)
             WHERE origin = $1 AND media_id = $2",
        )
        .bind(origin)
        .bind(media_id)
        .bind(now)
        .bind(by)
        .execute(&mut *txn)
        .await
        .context("quarantine media")?;
        txn.commit().await?;
        Ok(updated.rows_affected() > 0)
    }

    /// Remove a media row and its thumbnails; returns the content hashes they pointed at (to
    /// be removed from the storage once unreferenced), or `None` if there was no such media.
    pub async fn delete_media(&self, origin: &str, media_id: &str) -> Result<Option<Vec<String>>> {
        let mut txn = self.begin_write().await?;
        let own: Option<Option<String>> =
            sqlx::query_scalar("SELECT sha256 FROM media WHERE origin = $1 AND media_id = $2")
                .bind(origin)
                .bind(media_id)
                .fetch_optional(&mut *txn)
                .await
                .context("read media for deletion")?;
        let Some(own) = own else {
            return Ok(None);
        };
        let mut hashes: Vec<String> =
            sqlx::query_scalar("SELECT sha256 FROM media_thumbnails WHERE origin = $1 AND media_id = $2")
                .bind(origin)
                .bind(media_id)
                .fetch_all(&mut *txn)
                .await
                .context("read thumbnails for deletion")?;
        hashes.extend(own);
        sqlx::query("DELETE FROM media_thumbnails WHERE origin = $1 AND media_id = $2")
            .bind(origin)
            .bind(media_id)
            .execute(&mut *txn)
            .await
            .context("delete thumbnails")?;
        sqlx::query("DELETE FROM media WHERE origin = $1 AND media_id = $2")
            .bind(origin)
            .bind(media_id)
            .execute(&mut *txn)
            .await
            .context("delete media")?;
        txn.commit().await?;
        hashes.sort();
        hashes.dedup();
        Ok(Some(hashes))
    }

    /// Up to `limit` media ids of `origin` uploaded before `before_ts`, oldest first; for
    /// retention.
    pub async fn media_uploaded_before(&self, origin: &str, before_ts: i64, limit: i64) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT media_id FROM media WHERE origin = $1 AND uploaded_ts IS NOT NULL AND uploaded_ts < $2
             ORDER BY uploaded_ts, media_id LIMIT $3",
        )
        .bind(origin)
        .bind(before_ts)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .context("list old media")
    }

    /// Record downloads: each `(origin, media_id, ts)` moves the media's last access forward
    /// to `ts` (never back). One transaction for the whole batch.
    pub async fn record_media_access(&self, accesses: &[(String, String, i64)]) -> Result<()> {
        if accesses.is_empty() {
            return Ok(());
        }
        let mut txn = self.begin_write().await?;
        for (origin, media_id, ts) in accesses {
            sqlx::query(
                "UPDATE media SET last_access_ts = $3
                 WHERE origin = $1 AND media_id = $2 AND (last_access_ts IS NULL OR last_access_ts < $3)",
            )
            .bind(origin)
            .bind(media_id)
            .bind(ts)
            .execute(&mut *txn)
            .await
            .context("record media access")?;
        }
        txn.commit().await
    }

    /// Up to `limit` media with content, not quarantined, last accessed (or, never accessed,
    /// uploaded) before `before_ts`, least recently used first: of `server_name` when `local`,
    /// of every other server otherwise. For retention; returns `(origin, media_id)` pairs.
    pub async fn media_not_accessed_since(
        &self,
        server_name: &str,
        local: bool,
        before_ts: i64,
        limit: i64,
    ) -> Result<Vec<(String, String)>> {
        let sql = if local {
            "SELECT origin, media_id FROM media
             WHERE origin = $1 AND uploaded_ts IS NOT NULL AND quarantined_ts IS NULL
               AND COALESCE(last_access_ts, uploaded_ts) < $2
             ORDER BY COALESCE(last_access_ts, uploaded_ts), media_id LIMIT $3"
        } else {
            "SELECT origin, media_id FROM media
             WHERE origin <> $1 AND uploaded_ts IS NOT NULL AND quarantined_ts IS NULL
               AND COALESCE(last_access_ts, uploaded_ts) < $2
             ORDER BY COALESCE(last_access_ts, uploaded_ts), media_id LIMIT $3"
        };
        sqlx::query_as(sql)
            .bind(server_name)
            .bind(before_ts)
            .bind(limit)
            .fetch_all(self.pool())
            .await
            .context("list media not accessed lately")
    }

    /// The preview of `url` kept for the cache period starting at `period_ts`.
    pub async fn get_url_preview(&self, url: &str, period_ts: i64) -> Result<Option<UrlPreviewRow>> {
        let row: Option<(String, i64, i64, String, Option<String>)> = sqlx::query_as(
            "SELECT url, period_ts, fetched_ts, og, image_media_id FROM url_previews WHERE url = $1 AND period_ts = $2",
        )
        .bind(url)
        .bind(period_ts)
        .fetch_optional(self.pool())
        .await
        .context("get URL preview")?;
        Ok(row.map(|(url, period_ts, fetched_ts, og, image_media_id)| UrlPreviewRow {
            url,
            period_ts,
            fetched_ts,
            og,
            image_media_id,
        }))
    }

    /// Keep a preview; one stored meanwhile for the same URL and period wins.
    pub async fn insert_url_preview(&self, preview: &UrlPreviewRow) -> Result<()> {
        let mut txn = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO url_previews (url, period_ts, fetched_ts, og, image_media_id) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (url, period_ts) DO NOTHING",
        )
        .bind(&preview.url)
        .bind(preview.period_ts)
        .bind(preview.fetched_ts)
        .bind(&preview.og)
        .bind(preview.image_media_id.as_deref())
        .execute(&mut *txn)
        .await
        .context("insert URL preview")?;
        txn.commit().await
    }

    /// Forget previews fetched before `before_ts`; returns how many.
    pub async fn delete_url_previews_before(&self, before_ts: i64) -> Result<u64> {
        let mut txn = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM url_previews WHERE fetched_ts < $1")
            .bind(before_ts)
            .execute(&mut *txn)
            .await
            .context("delete old URL previews")?;
        txn.commit().await?;
        Ok(deleted.rows_affected())
    }
}

/// Why a conditional completion updated nothing, given the row as it now is.
fn classify_failed_completion(
    row: Option<(String, Option<i64>, Option<i64>)>,
    uploader: &str,
    now: i64,
) -> CompleteUpload {
    match row {
        None => CompleteUpload::NotFound,
        Some((owner, _, _)) if owner != uploader => CompleteUpload::NotOwner,
        Some((_, Some(_), _)) => CompleteUpload::AlreadyUploaded,
        Some((_, None, expires)) if expires.is_none_or(|expires| expires <= now) => CompleteUpload::NotFound,
        // The row changed between the update and the read (it cannot, inside one transaction
        // on either backend, but the answer is still honest).
        Some(_) => CompleteUpload::AlreadyUploaded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_completions_are_classified() {
        let me = "@a:x";
        assert_eq!(classify_failed_completion(None, me, 10), CompleteUpload::NotFound);
        assert_eq!(
            classify_failed_completion(Some(("@b:x".into(), None, Some(100))), me, 10),
            CompleteUpload::NotOwner
        );
        assert_eq!(
            classify_failed_completion(Some((me.into(), Some(5), None)), me, 10),
            CompleteUpload::AlreadyUploaded
        );
        assert_eq!(classify_failed_completion(Some((me.into(), None, Some(10))), me, 10), CompleteUpload::NotFound);
    }
}
