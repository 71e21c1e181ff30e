//! Media content in an S3-compatible object store: [`S3Storage`], a second [`MediaStorage`].
//!
//! Objects are named `{prefix}{sha256}`. Uploads are still staged (and scanned) in a local
//! directory; a commit is one `PUT` of the staged file, which S3 makes visible atomically, and
//! is skipped when an object of that name already exists (identical content). Requests are
//! signed with AWS Signature Version 4 ([`sign`]), whose payload hash for a `PUT` is exactly
//! the SHA-256 already computed while staging, so the body is streamed and never read twice.
//!
//! Only four operations are needed (`HEAD`, `GET`, `PUT`, `DELETE` of one object), so this is
//! a small client over `reqwest` rather than a general SDK.

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::{StreamExt, TryStreamExt, future::BoxFuture};
use hmac::{Hmac, Mac};
use ranvier_core::{Error, Result, config::S3Config, error::Context};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};

use crate::storage::{
    Content, MediaStorage, Staged, StagedFile, file_stream, is_content_hash, remove_stale_staging, stage_in,
};

/// The SHA-256 of an empty payload, for requests without a body.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Content in an S3 bucket, staged under a local directory.
pub struct S3Storage {
    client: reqwest::Client,
    /// `http` or `https`.
    scheme: String,
    /// The `Host` header of every request (with the port when it is not the default one).
    host: String,
    /// The path before the key, percent-encoded, ending in `/`: `/{bucket}/` for path-style
    /// addressing, `/` for virtual-hosted buckets (plus any path of the endpoint).
    base_path: String,
    prefix: String,
    region: String,
    access_key_id: String,
    secret_access_key: String,
    staging: PathBuf,
}

impl S3Storage {
    /// The bucket of `config`, with staging files in `staging` (created if needed).
    pub fn open(config: &S3Config, staging: &Path) -> Result<Self> {
        let endpoint = reqwest::Url::parse(&config.endpoint)
            .map_err(|e| Error::internal(format!("media.s3.endpoint `{}`: {e}", config.endpoint)))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(Error::internal("media.s3.endpoint must be an http:// or https:// URL"));
        }
        if config.bucket.is_empty() {
            return Err(Error::internal("media.s3.bucket is not set"));
        }
        let host = endpoint.host_str().ok_or_else(|| Error::internal("media.s3.endpoint has no host"))?;
        let host = if config.path_style { host.to_owned() } else { format!("{}.{host}", config.bucket) };
        let host = match endpoint.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        let mut base_path = endpoint.path().trim_end_matches('/').to_owned();
        if config.path_style {
            base_path.push('/');
            base_path.push_str(&uri_encode(&config.bucket, true));
        }
        base_path.push('/');
        std::fs::create_dir_all(staging).context("create media staging directory")?;
        remove_stale_staging(staging);
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("build S3 client")?;
        Ok(Self {
            client,
            scheme: endpoint.scheme().to_owned(),
            host,
            base_path,
            prefix: config.prefix.clone(),
            region: config.region.clone(),
            access_key_id: config.access_key_id.clone(),
            secret_access_key: config.secret_access_key.clone(),
            staging: staging.to_owned(),
        })
    }

    /// A signed request for the object of `sha256`.
    fn request(&self, method: Method, sha256: &str, payload_sha256: &str) -> reqwest::RequestBuilder {
        let path = format!("{}{}", self.base_path, uri_encode(&format!("{}{sha256}", self.prefix), false));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let amz_date = amz_date(now);
        let signed = sign(&SigningInput {
            method: method.as_str(),
            path: &path,
            query: "",
            headers: &[("host", &self.host), ("x-amz-content-sha256", payload_sha256), ("x-amz-date", &amz_date)],
            payload_sha256,
            amz_date: &amz_date,
            region: &self.region,
            access_key_id: &self.access_key_id,
            secret_access_key: &self.secret_access_key,
        });
        self.client
            .request(method, format!("{}://{}{path}", self.scheme, self.host))
            .header("x-amz-content-sha256", payload_sha256)
            .header("x-amz-date", amz_date)
            .header("authorization", signed)
    }

    async fn exists(&self, sha256: &str) -> Result<bool> {
        let response = self.request(Method::HEAD, sha256, EMPTY_SHA256).send().await.context("S3 HEAD object")?;
        match response.status() {
            status if status.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status => Err(Error::internal(format!("S3 HEAD object {sha256}: status {status}"))),
        }
    }

    async fn commit_object(&self, staged: StagedFile) -> Result<()> {
        if !is_content_hash(&staged.sha256) {
            return Err(Error::internal("commit media: malformed content hash"));
        }
        if self.exists(&staged.sha256).await? {
            // Identical content is already stored; the staging file is dropped.
            return Ok(());
        }
        let file = tokio::fs::File::open(staged.path()).await.context("open staged media")?;
        let response = self
            .request(Method::PUT, &staged.sha256, &staged.sha256)
            .header("content-length", staged.size)
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(file_stream(file)))
            .send()
            .await
            .context("S3 PUT object")?;
        check(response, "PUT", &staged.sha256).await
    }

    async fn open_object(&self, sha256: &str) -> Result<Option<Content>> {
        if !is_content_hash(sha256) {
            return Ok(None);
        }
        let response = self.request(Method::GET, sha256, EMPTY_SHA256).send().await.context("S3 GET object")?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return check(response, "GET", sha256).await.map(|()| None);
        }
        let size = response
            .content_length()
            .ok_or_else(|| Error::internal(format!("S3 GET object {sha256}: no Content-Length")))?;
        let stream = response.bytes_stream().map_err(io::Error::other).boxed();
        Ok(Some(Content { size, stream }))
    }

    async fn delete_object(&self, sha256: &str) -> Result<()> {
        if !is_content_hash(sha256) {
            return Ok(());
        }
        let response = self.request(Method::DELETE, sha256, EMPTY_SHA256).send().await.context("S3 DELETE object")?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        check(response, "DELETE", sha256).await
    }
}

/// Turn an unsuccessful response into an internal error that names the operation and carries
/// the start of the service's explanation.
async fn check(response: reqwest::Response, operation: &str, sha256: &str) -> Result<()> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    let excerpt: String = body.chars().take(300).collect();
    Err(Error::internal(format!("S3 {operation} object {sha256}: status {status}: {excerpt}")))
}

impl MediaStorage for S3Storage {
    fn stage(&self, limit: u64) -> BoxFuture<'_, Result<Staged>> {
        Box::pin(stage_in(&self.staging, limit))
    }

    fn commit(&self, staged: StagedFile) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.commit_object(staged))
    }

    fn open<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<Option<Content>>> {
        Box::pin(self.open_object(sha256))
    }

    fn delete<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.delete_object(sha256))
    }
}

/// What a Signature Version 4 `Authorization` header is computed from.
pub struct SigningInput<'a> {
    pub method: &'a str,
    /// The percent-encoded path.
    pub path: &'a str,
    /// The canonical (sorted, encoded) query string.
    pub query: &'a str,
    /// The signed headers, names in lower case, sorted by name.
    pub headers: &'a [(&'a str, &'a str)],
    pub payload_sha256: &'a str,
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: &'a str,
    pub region: &'a str,
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
}

/// The `Authorization` header of an S3 request (AWS Signature Version 4).
pub fn sign(input: &SigningInput<'_>) -> String {
    let canonical_headers: String =
        input.headers.iter().map(|(name, value)| format!("{name}:{}\n", value.trim())).collect();
    let signed_headers = input.headers.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        input.method, input.path, input.query, input.payload_sha256
    );
    let date = &input.amz_date[..8.min(input.amz_date.len())];
    let scope = format!("{date}/{}/s3/aws4_request", input.region);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        input.amz_date,
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let key = [date, input.region, "s3", "aws4_request"]
        .iter()
        .fold(format!("AWS4{}", input.secret_access_key).into_bytes(), |key, part| hmac(&key, part.as_bytes()));
    let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        input.access_key_id
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Percent-encode as S3 wants: everything but `A-Za-z0-9-._~` (and `/` unless
/// `encode_slash`).
fn uri_encode(text: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(byte as char),
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time in seconds (UTC).
pub fn amz_date(unix_secs: u64) -> String {
    let days = i64::try_from(unix_secs / 86_400).unwrap_or(0);
    let secs = unix_secs % 86_400;
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of AWS's documentation for signing a `GET` of an object with the
    /// `Authorization` header ("Example: GET Object").
    #[test]
    fn signature_matches_the_documented_example() {
        let authorization = sign(&SigningInput {
            method: "GET",
            path: "/test.txt",
            query: "",
            headers: &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_SHA256),
                ("x-amz-date", "20130524T000000Z"),
            ],
            payload_sha256: EMPTY_SHA256,
            amz_date: "20130524T000000Z",
            region: "us-east-1",
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        });
        assert_eq!(
            authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn dates_are_formatted_in_utc() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_369_353_600), "20130524T000000Z");
        assert_eq!(amz_date(951_782_400 + 3_723), "20000229T010203Z");
        assert_eq!(amz_date(4_107_542_399), "21000228T235959Z");
    }

    #[test]
    fn keys_are_percent_encoded() {
        assert_eq!(uri_encode("media/ab cd~é", false), "media/ab%20cd~%C3%A9");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
    }

    #[test]
    fn addressing_styles() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = S3Config {
            endpoint: "http://127.0.0.1:9000/".into(),
            bucket: "media".into(),
            prefix: "p/".into(),
            ..S3Config::default()
        };
        let storage = S3Storage::open(&config, dir.path()).unwrap();
        assert_eq!((storage.host.as_str(), storage.base_path.as_str()), ("127.0.0.1:9000", "/media/"));
        config.endpoint = "https://s3.example.org".into();
        config.path_style = false;
        let storage = S3Storage::open(&config, dir.path()).unwrap();
        assert_eq!((storage.host.as_str(), storage.base_path.as_str()), ("media.s3.example.org", "/"));
        config.bucket = String::new();
        assert!(S3Storage::open(&config, dir.path()).is_err());
    }
}
