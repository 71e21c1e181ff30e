//! Where the bytes live: the [`MediaStorage`] trait and its local filesystem implementation.
//!
//! Content is addressed by its SHA-256, so identical uploads share one file. An upload is
//! first written to a [`Staged`] file while its hash and size are computed; only once it has
//! passed the scanner is it committed, which for [`FsStorage`] is a rename of the fsynced
//! staging file to its final name, so that a reader never sees half a file and a crash never
//! leaves one behind under a content name.

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures_util::{
    future::BoxFuture,
    stream::{self, BoxStream},
};
use ranvier_core::{Error, Result, error::Context, util::random_string};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How much of a file is read at a time when it is streamed out.
const READ_CHUNK: usize = 64 * 1024;
/// Staging files older than this are leftovers of a crash, removed at startup.
const STALE_STAGING: Duration = Duration::from_secs(3600);

/// Stored content being read: its size and a stream of its bytes.
pub struct Content {
    pub size: u64,
    pub stream: BoxStream<'static, io::Result<Bytes>>,
}

impl Content {
    /// Read the whole content into memory (for thumbnailing; the caller bounds `size`).
    pub async fn collect(self) -> Result<Vec<u8>> {
        use futures_util::StreamExt;
        let mut out = Vec::with_capacity(usize::try_from(self.size).unwrap_or(0));
        let mut stream = self.stream;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.context("read media content")?);
        }
        Ok(out)
    }
}

/// A backend that keeps content by hash. Implementations must make [`commit`] atomic: the
/// content is either wholly there under its hash, or not at all.
///
/// [`commit`]: MediaStorage::commit
pub trait MediaStorage: Send + Sync {
    /// A new, empty staging file for content of at most `limit` bytes.
    fn stage(&self, limit: u64) -> BoxFuture<'_, Result<Staged>>;
    /// Store finished staged content under its hash (a no-op if that content is already
    /// stored). The staging file is consumed either way.
    fn commit(&self, staged: StagedFile) -> BoxFuture<'_, Result<()>>;
    /// The content with this hash, or `None` if there is none.
    fn open<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<Option<Content>>>;
    /// Remove the content with this hash (nothing happens if there is none).
    fn delete<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// Content being received: bytes are appended, hashed and counted, up to a limit.
pub struct Staged {
    file: tokio::fs::File,
    hasher: Sha256,
    size: u64,
    limit: u64,
    guard: StagingGuard,
}

/// Received content, flushed to disk, with its hash and size; not yet committed.
pub struct StagedFile {
    pub sha256: String,
    pub size: u64,
    guard: StagingGuard,
}

impl StagedFile {
    /// Where the staged bytes are, for the scanner to read.
    pub fn path(&self) -> &Path {
        &self.guard.path
    }
}

/// Removes a staging file that was neither committed nor kept.
struct StagingGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: a leftover is also removed at the next startup.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Staged {
    /// Append a chunk; fails with `M_TOO_LARGE` once the content exceeds the limit.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        let size = self.size.saturating_add(chunk.len() as u64);
        if size > self.limit {
            return Err(too_large(self.limit));
        }
        self.file.write_all(chunk).await.context("write staged media")?;
        self.hasher.update(chunk);
        self.size = size;
        Ok(())
    }

    /// Flush the content to disk and compute its hash.
    pub async fn finish(mut self) -> Result<StagedFile> {
        self.file.flush().await.context("flush staged media")?;
        self.file.sync_all().await.context("fsync staged media")?;
        Ok(StagedFile { sha256: hex::encode(self.hasher.finalize()), size: self.size, guard: self.guard })
    }
}

/// The `M_TOO_LARGE` error for content over `limit` bytes.
pub fn too_large(limit: u64) -> Error {
    Error::too_large(format!("Cannot upload files larger than {limit} bytes"))
}

/// A new staging file in `dir` for content of at most `limit` bytes.
pub(crate) async fn stage_in(dir: &Path, limit: u64) -> Result<Staged> {
    let path = dir.join(format!("upload-{}", random_string(24)));
    let file =
        tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await.context("create staging file")?;
    Ok(Staged { file, hasher: Sha256::new(), size: 0, limit, guard: StagingGuard { path, armed: true } })
}

/// Remove staging files in `dir` left behind by a crash.
pub(crate) fn remove_stale_staging(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .map(|modified| now.duration_since(modified).unwrap_or_default() > STALE_STAGING)
            .unwrap_or(false);
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Stream a file's bytes in chunks.
pub(crate) fn file_stream(file: tokio::fs::File) -> BoxStream<'static, io::Result<Bytes>> {
    let stream = stream::try_unfold(file, |mut file| async move {
        let mut buffer = vec![0; READ_CHUNK];
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.truncate(read);
        Ok(Some((Bytes::from(buffer), file)))
    });
    Box::pin(stream)
}

/// Whether `sha256` is 64 hex digits, the only form content names take.
pub(crate) fn is_content_hash(sha256: &str) -> bool {
    sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Content on the local filesystem: `{root}/content/ab/cd/abcd…` (the SHA-256 in hex),
/// staging files in `{root}/tmp`. Both are on the same filesystem, so a commit is a rename.
pub struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    /// Storage under `root`, creating its directories and removing stale staging files.
    pub fn open(root: &Path) -> Result<Self> {
        let storage = Self { root: root.to_owned() };
        std::fs::create_dir_all(storage.content_dir()).context("create media content directory")?;
        std::fs::create_dir_all(storage.tmp_dir()).context("create media staging directory")?;
        storage.remove_stale_staging();
        Ok(storage)
    }

    fn content_dir(&self) -> PathBuf {
        self.root.join("content")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The file of the content with `sha256`, or `None` if the hash is malformed (it never
    /// is when it comes from this crate, but a path is only ever built from 64 hex digits).
    fn path_of(&self, sha256: &str) -> Option<PathBuf> {
        if !is_content_hash(sha256) {
            return None;
        }
        Some(self.content_dir().join(&sha256[0..2]).join(&sha256[2..4]).join(sha256))
    }

    fn remove_stale_staging(&self) {
        remove_stale_staging(&self.tmp_dir());
    }

    async fn stage_file(&self, limit: u64) -> Result<Staged> {
        stage_in(&self.tmp_dir(), limit).await
    }

    async fn commit_file(&self, mut staged: StagedFile) -> Result<()> {
        let Some(target) = self.path_of(&staged.sha256) else {
            return Err(Error::internal("commit media: malformed content hash"));
        };
        if tokio::fs::try_exists(&target).await.context("check media content")? {
            // Identical content is already stored; the staging file is dropped.
            return Ok(());
        }
        let Some(dir) = target.parent() else {
            return Err(Error::internal("commit media: content path has no directory"));
        };
        tokio::fs::create_dir_all(dir).await.context("create media content directory")?;
        tokio::fs::rename(&staged.guard.path, &target).await.context("move staged media into place")?;
        staged.guard.armed = false;
        // The rename is durable only once the directories holding the new name are synced.
        let mut dirs = vec![dir.to_owned()];
        dirs.extend(dir.parent().map(Path::to_owned));
        tokio::task::spawn_blocking(move || {
            for dir in dirs {
                std::fs::File::open(&dir)?.sync_all()?;
            }
            Ok::<_, io::Error>(())
        })
        .await
        .context("fsync media directory")?
        .context("fsync media directory")
    }

    async fn open_file(&self, sha256: &str) -> Result<Option<Content>> {
        let Some(path) = self.path_of(sha256) else {
            return Ok(None);
        };
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::internal(format!("open media content: {e}"))),
        };
        let size = file.metadata().await.context("stat media content")?.len();
        Ok(Some(Content { size, stream: file_stream(file) }))
    }

    async fn delete_file(&self, sha256: &str) -> Result<()> {
        let Some(path) = self.path_of(sha256) else {
            return Ok(());
        };
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::internal(format!("delete media content: {e}"))),
        }
    }
}

impl MediaStorage for FsStorage {
    fn stage(&self, limit: u64) -> BoxFuture<'_, Result<Staged>> {
        Box::pin(self.stage_file(limit))
    }

    fn commit(&self, staged: StagedFile) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.commit_file(staged))
    }

    fn open<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<Option<Content>>> {
        Box::pin(self.open_file(sha256))
    }

    fn delete<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.delete_file(sha256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn stage_bytes(storage: &FsStorage, bytes: &[u8]) -> StagedFile {
        let mut staged = storage.stage(1024).await.unwrap();
        for chunk in bytes.chunks(3) {
            staged.write(chunk).await.unwrap();
        }
        staged.finish().await.unwrap()
    }

    #[tokio::test]
    async fn content_is_stored_by_hash_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::open(dir.path()).unwrap();
        let first = stage_bytes(&storage, b"hello media").await;
        // The SHA-256 of "hello media", computed independently of the hasher under test.
        let expected = hex::encode(Sha256::digest(b"hello media"));
        assert_eq!(first.sha256, expected);
        assert_eq!(first.size, 11);
        let staging_path = first.path().to_owned();
        storage.commit(first).await.unwrap();
        assert!(!staging_path.exists(), "the staging file is renamed away");

        let second = stage_bytes(&storage, b"hello media").await;
        let second_path = second.path().to_owned();
        storage.commit(second).await.unwrap();
        assert!(!second_path.exists(), "a duplicate staging file is removed");
        let files: Vec<_> = walk(&dir.path().join("content"));
        assert_eq!(files.len(), 1, "identical content is stored once: {files:?}");

        let content = storage.open(&expected).await.unwrap().unwrap();
        assert_eq!(content.size, 11);
        assert_eq!(content.collect().await.unwrap(), b"hello media");

        storage.delete(&expected).await.unwrap();
        assert!(storage.open(&expected).await.unwrap().is_none());
        storage.delete(&expected).await.unwrap();
    }

    #[tokio::test]
    async fn staging_enforces_the_limit_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::open(dir.path()).unwrap();
        let mut staged = storage.stage(5).await.unwrap();
        staged.write(b"12345").await.unwrap();
        let error = staged.write(b"6").await.unwrap_err();
        assert_eq!(error.kind().map(|kind| kind.errcode()), Some("M_TOO_LARGE".into()));
        drop(staged);
        assert!(walk(&dir.path().join("tmp")).is_empty(), "an abandoned upload leaves no file");
    }

    #[tokio::test]
    async fn malformed_hashes_never_become_paths() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::open(dir.path()).unwrap();
        assert!(storage.open("../../etc/passwd").await.unwrap().is_none());
        assert!(storage.path_of(&"g".repeat(64)).is_none());
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    out.extend(walk(&path));
                } else {
                    out.push(path);
                }
            }
        }
        out
    }
}
