//! Configuration: a TOML file, overridden by `RANVIER_*` environment variables.
//!
//! Every setting can be overridden from the environment: `RANVIER_SERVER_NAME` sets
//! `server_name`, and a double underscore descends into a table, so `RANVIER_DATABASE__URL`
//! sets `database.url`. Values are parsed as TOML literals when they parse (`true`, `42`,
//! `["a"]`) and taken as strings otherwise.

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration. Every field has a default so that an empty file is valid.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The server name: the part after the colon in `@user:server_name`. Cannot change later.
    pub server_name: String,
    /// The URL clients use to reach this server; advertised in `/.well-known/matrix/client`.
    /// Defaults to `http://{listen}/`.
    pub public_baseurl: Option<String>,
    /// The address the client API listens on.
    pub listen: String,
    /// Where the SQLite database, the signing key and other files live.
    pub data_dir: PathBuf,
    /// The file holding the server's ed25519 signing key (PKCS#8 DER). Generated when absent.
    /// Defaults to `{data_dir}/signing.key`.
    pub signing_key_path: Option<PathBuf>,
    /// The log filter, in `tracing_subscriber::EnvFilter` syntax; `RUST_LOG` wins if set.
    pub log: String,
    /// The room version of new rooms unless the client asks for another.
    pub default_room_version: String,
    /// The threads that serve requests; 0 picks them by [`Config::worker_threads`].
    pub worker_threads: usize,
    pub database: DatabaseConfig,
    pub registration: RegistrationConfig,
    pub limits: LimitsConfig,
    pub rate_limits: RateLimitsConfig,
    pub presence: PresenceConfig,
    pub media: MediaConfig,
    pub push: PushConfig,
    pub federation: FederationConfig,
    pub server_notices: ServerNoticesConfig,
}

/// Server notices: messages from the server's administrators, sent by a system user into a
/// room of its own with each user (`POST /_synapse/admin/v1/send_server_notice`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerNoticesConfig {
    pub enabled: bool,
    /// The localpart of the user that sends notices; the account is created when needed.
    pub system_user_localpart: String,
    /// The system user's display name.
    pub system_user_display_name: Option<String>,
    /// The system user's avatar (an `mxc://` URI).
    pub system_user_avatar_url: Option<String>,
    /// The name of each user's notices room.
    pub room_name: String,
}

/// Which database to use.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://user@host/db`. Defaults to `{data_dir}/ranvier.db`.
    pub url: Option<String>,
    /// Size of the connection pool; 0 picks it by [`DatabaseConfig::pool_size`]. On SQLite,
    /// reads use at most one connection per core (at least 2), whatever this says (writes have
    /// their own connection). On PostgreSQL, events are written on a pool of their own, a
    /// quarter as large (at least 2).
    pub max_connections: u32,
    /// Memory for recently read and written events, in MiB (0 turns the cache off).
    pub event_cache_mb: u32,
    /// SQLite only: the page cache of the writing connection, in KiB; each reading
    /// connection gets half.
    pub sqlite_cache_kb: u32,
}

/// Who may create accounts.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Whether `/register` accepts new accounts at all.
    pub enabled: bool,
    /// Require a registration token (`m.login.registration_token`); manage tokens with
    /// `ranvier admin registration-token`.
    pub require_token: bool,
    /// Shared secret for Synapse-compatible admin registration (`/_synapse/admin/v1/register`).
    /// Empty disables that endpoint.
    pub shared_secret: String,
    /// Minimum password length for new passwords.
    pub min_password_length: usize,
}

/// Size limits.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest JSON request body accepted, in bytes (`M_TOO_LARGE` above).
    pub max_request_bytes: usize,
    /// Longest `/sync` long-poll, in milliseconds, whatever the client asks.
    pub max_sync_timeout_ms: u64,
}

/// The media repository.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Where uploaded files and thumbnails are kept. Defaults to `{data_dir}/media`.
    pub path: Option<PathBuf>,
    /// Largest upload accepted, in bytes (`413 M_TOO_LARGE` above); advertised as
    /// `m.upload.size`.
    pub max_upload_bytes: u64,
    /// Whether media uploaded from now on may also be downloaded through the deprecated
    /// unauthenticated `/_matrix/media/v3/download` and `/thumbnail` endpoints. Off by default:
    /// unauthenticated access is frozen, and media uploaded while this was on stays reachable
    /// there.
    pub legacy_unauthenticated: bool,
    /// The content scanner every upload passes before it is stored: `none` or `clamav`.
    pub scanner: ScannerKind,
    /// Accept uploads while the scanner cannot be reached (they are stored unscanned). Off by
    /// default: uploads are refused with `503` until the scanner answers again.
    pub scanner_fail_open: bool,
    pub clamav: ClamAvConfig,
    /// Images with more pixels than this are not thumbnailed (`413 M_TOO_LARGE`).
    pub max_thumbnail_pixels: u64,
    /// How long an `mxc://` URI from `POST /_matrix/media/v1/create` waits for its upload, in
    /// milliseconds.
    pub unused_expiry_ms: u64,
    /// How many created but not yet uploaded `mxc://` URIs one user may hold.
    pub max_pending_uploads: u32,
    /// Where the bytes are kept: `fs` (files under `path`) or `s3` (see `[media.s3]`).
    pub storage: StorageKind,
    pub s3: S3Config,
    pub url_preview: UrlPreviewConfig,
    pub retention: RetentionConfig,
    /// The most frames an animated thumbnail keeps.
    pub max_animated_frames: u32,
}

/// Which storage holds media content.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Files under `media.path`.
    Fs,
    /// An S3-compatible object store.
    S3,
}

/// An S3-compatible bucket for media content (`media.storage = "s3"`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// The service's base URL, e.g. `https://s3.eu-west-1.amazonaws.com` or
    /// `http://127.0.0.1:9000`.
    pub endpoint: String,
    pub bucket: String,
    /// The region requests are signed for.
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Address the bucket in the path (`endpoint/bucket/key`, what most self-hosted servers
    /// want) rather than as a subdomain (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Prepended to every object key, e.g. `media/`.
    pub prefix: String,
    /// How long one request to the store may take, in milliseconds.
    pub timeout_ms: u64,
}

/// URL previews (`GET /_matrix/client/v1/media/preview_url`). The server fetches pages on
/// behalf of users, so addresses inside the network are refused unless allowed explicitly.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UrlPreviewConfig {
    /// Off by default: previews make the server fetch any URL a user names.
    pub enabled: bool,
    /// Address ranges (CIDR) never fetched from. Defaults to loopback, private, link-local,
    /// shared (CGNAT), multicast, reserved and documentation ranges of IPv4 and IPv6.
    pub ip_range_blacklist: Vec<String>,
    /// Ranges fetched from even though the blacklist covers them.
    pub ip_range_whitelist: Vec<String>,
    /// Largest page (or image) fetched, in bytes.
    pub max_page_bytes: u64,
    /// The longest a whole preview (every redirect, the page and its image) may take, in
    /// milliseconds.
    pub timeout_ms: u64,
    /// How many redirects are followed.
    pub max_redirects: u32,
    /// How long a preview is reused before the page is fetched again, in milliseconds.
    pub cache_ms: u64,
}

/// Deleting media that nobody has fetched for a while.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Delete local media not downloaded for this many days (0: keep forever).
    pub local_media_days: u64,
    /// Delete cached remote media not downloaded for this many days (0: keep forever).
    pub remote_media_days: u64,
    /// How often the retention task runs, in milliseconds.
    pub interval_ms: u64,
    /// How often recorded downloads are written to the database, in milliseconds.
    pub access_flush_ms: u64,
}

/// Which content scanner to use.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ScannerKind {
    /// No scanning.
    None,
    /// ClamAV's `clamd`, over TCP or a Unix socket.
    Clamav,
}

/// How to reach `clamd`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClamAvConfig {
    /// `tcp://HOST:PORT` or `unix:/path/to/clamd.ctl`.
    pub address: String,
    /// How long one scan may take, in milliseconds, before the scanner counts as unavailable.
    pub timeout_ms: u64,
}

/// Token-bucket rate limits, per user (or per IP before login).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    pub enabled: bool,
    pub messages: RateLimit,
    pub registration: RateLimit,
    pub login: RateLimit,
}

/// Presence (online / unavailable / offline). It costs memory and wake-ups on busy servers, so
/// it can be turned off.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    pub enabled: bool,
    /// An online user with no activity for this long becomes `unavailable`.
    pub idle_timeout_ms: u64,
    /// A user with no `/sync` running for this long becomes `offline`.
    pub offline_timeout_ms: u64,
}

/// Push notifications sent to push gateways by HTTP pushers.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Send the event's content to push gateways (the `event_id_only` format never does).
    pub include_content: bool,
    /// The first wait before a failed delivery is tried again, in milliseconds; each further
    /// failure doubles it.
    pub retry_initial_ms: u64,
    /// The longest wait between two tries of a delivery, in milliseconds.
    pub retry_max_ms: u64,
    /// A notification that could not be delivered for this long is dropped, in milliseconds.
    pub give_up_after_ms: u64,
    /// How long one request to a push gateway may take, in milliseconds.
    pub request_timeout_ms: u64,
}

/// One bucket: `per_second` sustained, up to `burst` at once.
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".into(),
            public_baseurl: None,
            listen: "127.0.0.1:8008".into(),
            data_dir: PathBuf::from("ranvier-data"),
            signing_key_path: None,
            log: "info,ruma_state_res=warn".into(),
            default_room_version: "12".into(),
            worker_threads: 0,
            database: DatabaseConfig::default(),
            registration: RegistrationConfig::default(),
            limits: LimitsConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            presence: PresenceConfig::default(),
            media: MediaConfig::default(),
            server_notices: ServerNoticesConfig::default(),
            push: PushConfig::default(),
            federation: FederationConfig::default(),
        }
    }
}

/// Federation with other servers (`[federation]`). Off unless enabled.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationConfig {
    /// Serve the federation API and fetch remote media from other servers.
    pub enabled: bool,
    /// The address of the federation TLS listener (other servers connect here; 8448 is the
    /// port they assume when the server name has none and no delegation says otherwise).
    pub listen: String,
    /// The PEM certificate chain the federation listener presents.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Verify other servers' TLS certificates. Only turn off for tests.
    pub verify_certificates: bool,
    /// PEM files of certificate authorities trusted besides the system's (a private CA).
    pub extra_root_certificates: Vec<PathBuf>,
    /// The only servers federated with; empty means every server.
    pub allowed_servers: Vec<String>,
    /// How long other servers may cache this server's keys, in milliseconds.
    pub key_valid_ms: u64,
    /// How long an outbound federation request may take, in milliseconds.
    pub request_timeout_ms: u64,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "127.0.0.1:8448".into(),
            tls_cert: None,
            tls_key: None,
            verify_certificates: true,
            extra_root_certificates: Vec::new(),
            allowed_servers: Vec::new(),
            key_valid_ms: 24 * 60 * 60 * 1000,
            request_timeout_ms: 20_000,
        }
    }
}

impl Default for ServerNoticesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            system_user_localpart: "notices".into(),
            system_user_display_name: Some("Server Notices".into()),
            system_user_avatar_url: None,
            room_name: "Server Notices".into(),
        }
    }
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            include_content: true,
            retry_initial_ms: 1_000,
            retry_max_ms: 60 * 60 * 1000,
            give_up_after_ms: 24 * 60 * 60 * 1000,
            request_timeout_ms: 10_000,
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_upload_bytes: 50 * 1024 * 1024,
            legacy_unauthenticated: false,
            scanner: ScannerKind::None,
            scanner_fail_open: false,
            clamav: ClamAvConfig::default(),
            max_thumbnail_pixels: 32_000_000,
            unused_expiry_ms: 24 * 60 * 60 * 1000,
            max_pending_uploads: 10,
            storage: StorageKind::Fs,
            s3: S3Config::default(),
            url_preview: UrlPreviewConfig::default(),
            retention: RetentionConfig::default(),
            max_animated_frames: 100,
        }
    }
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            bucket: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            path_style: true,
            prefix: String::new(),
            timeout_ms: 60_000,
        }
    }
}

/// The ranges previews never fetch from unless whitelisted.
pub const DEFAULT_IP_RANGE_BLACKLIST: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

impl Default for UrlPreviewConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ip_range_blacklist: DEFAULT_IP_RANGE_BLACKLIST.iter().map(|range| (*range).to_owned()).collect(),
            ip_range_whitelist: Vec::new(),
            max_page_bytes: 10 * 1024 * 1024,
            timeout_ms: 20_000,
            max_redirects: 5,
            cache_ms: 60 * 60 * 1000,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { local_media_days: 0, remote_media_days: 0, interval_ms: 60 * 60 * 1000, access_flush_ms: 60_000 }
    }
}

impl Default for ClamAvConfig {
    fn default() -> Self {
        Self { address: "tcp://127.0.0.1:3310".into(), timeout_ms: 60_000 }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: None, max_connections: 0, event_cache_mb: 16, sqlite_cache_kb: 512 }
    }
}

impl DatabaseConfig {
    /// The connection pool's size on a machine of `cores` cores: `max_connections` when set,
    /// else four per core, at least eight. The server's own cores bound how many queries it can
    /// use at once; a PostgreSQL connection holds its buffers and prepared statements in the
    /// server's memory (tens of kilobytes each, once used) and a backend process in
    /// PostgreSQL's, and a burst of requests opens the pool to its full size.
    pub fn pool_size(&self, cores: usize) -> u32 {
        match self.max_connections {
            0 => u32::try_from(cores.saturating_mul(4)).unwrap_or(u32::MAX).max(8),
            n => n,
        }
    }
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self { enabled: true, require_token: false, shared_secret: String::new(), min_password_length: 0 }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { max_request_bytes: 4 * 1024 * 1024, max_sync_timeout_ms: 60_000 }
    }
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { enabled: true, idle_timeout_ms: 5 * 60_000, offline_timeout_ms: 30_000 }
    }
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            messages: RateLimit { per_second: 10.0, burst: 50 },
            registration: RateLimit { per_second: 0.5, burst: 10 },
            login: RateLimit { per_second: 1.0, burst: 10 },
        }
    }
}

impl Config {
    /// Parse a TOML document, then apply `RANVIER_*` overrides from `env`.
    pub fn from_toml_and_env(text: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, String> {
        let mut root: toml::Table = text.parse().map_err(|e| format!("config file: {e}"))?;
        for (key, value) in env {
            let Some(path) = key.strip_prefix("RANVIER_") else {
                continue;
            };
            // RANVIER_CONFIG names the file itself (a command-line option), not a setting.
            if path.is_empty() || path == "CONFIG" {
                continue;
            }
            let segments: Vec<String> = path.split("__").map(|s| s.to_ascii_lowercase()).collect();
            set_path(&mut root, &segments, parse_env_value(&value))?;
        }
        Config::deserialize(toml::Value::Table(root)).map_err(|e| format!("config: {e}"))
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("ranvier.db").display()),
        }
    }

    /// Whether the database is the embedded SQLite one.
    pub fn is_sqlite(&self) -> bool {
        is_sqlite_url(&self.database_url())
    }

    /// How many threads serve requests on a machine of `cores` cores: `worker_threads` when
    /// set, else one per core, less one on SQLite (at least one). SQLite's work runs on its
    /// connections' own threads (the writer, and a reader per core), and every write waits on
    /// the writer's thread: a request handed there leaves its worker idle, and with a worker on
    /// every core the idle ones are woken to look for work the others could have done, each
    /// time, for nothing.
    pub fn worker_threads(&self, cores: usize) -> usize {
        match self.worker_threads {
            0 if self.is_sqlite() => cores.saturating_sub(1).max(1),
            0 => cores.max(1),
            n => n,
        }
    }

    /// The path of the signing key file.
    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key_path.clone().unwrap_or_else(|| self.data_dir.join("signing.key"))
    }

    /// The directory of the media repository.
    pub fn media_path(&self) -> PathBuf {
        self.media.path.clone().unwrap_or_else(|| self.data_dir.join("media"))
    }

    /// The base URL clients should use, always ending in `/`.
    pub fn public_baseurl(&self) -> String {
        let mut url = self.public_baseurl.clone().unwrap_or_else(|| format!("http://{}/", self.listen));
        if !url.ends_with('/') {
            url.push('/');
        }
        url
    }
}

/// Whether a database URL names a SQLite database (`sqlite://PATH`).
pub fn is_sqlite_url(url: &str) -> bool {
    url.starts_with("sqlite:")
}

fn parse_env_value(raw: &str) -> toml::Value {
    // Parse as a TOML value by wrapping it in a one-key document; fall back to a plain string.
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut table) => table.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Ok(()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry =
                table.entry(first.clone()).or_insert_with(|| toml::Value::Table(BTreeMap::new().into_iter().collect()));
            match entry {
                toml::Value::Table(inner) => set_path(inner, rest, value),
                _ => Err(format!("RANVIER_ override descends into `{first}`, which is not a table")),
            }
        }
    }
}

/// The commented configuration written on first run.
pub const DEFAULT_CONFIG_TOML: &str = r#"# Ranvier configuration.
#
# Every setting may also be given in the environment: RANVIER_SERVER_NAME=example.org sets
# server_name, and a double underscore descends into a table: RANVIER_DATABASE__URL=postgres://...
# See docs/configuration.md for the full reference.

# The name in user ids (@alice:server_name). It cannot be changed once users exist.
server_name = "localhost"

# The URL clients use to reach this server (advertised in /.well-known/matrix/client).
# public_baseurl = "https://matrix.example.org/"

# Address of the client API listener.
listen = "127.0.0.1:8008"

# Where the SQLite database and the signing key are kept.
data_dir = "ranvier-data"

# Log filter (tracing EnvFilter syntax). RUST_LOG overrides it.
log = "info,ruma_state_res=warn"

# Room version for new rooms.
default_room_version = "12"

# Threads serving requests; 0 means one per core (less one on SQLite, whose own threads need it).
worker_threads = 0

[database]
# Leave unset for the embedded SQLite database in data_dir.
# For PostgreSQL: url = "postgres://ranvier@127.0.0.1/ranvier"
# url = "sqlite://ranvier-data/ranvier.db"
# Connections to the database; 0 means four per core, at least 8.
max_connections = 0
# Memory for recently read and written events, in MiB (0 turns the cache off).
event_cache_mb = 16
# SQLite only: the page cache of the writing connection, in KiB (each reader gets half).
sqlite_cache_kb = 512

[registration]
# Open registration. This server listens on loopback by default; before exposing it,
# set require_token = true and create tokens with `ranvier admin registration-token create`.
enabled = true
require_token = false
# Shared secret for /_synapse/admin/v1/register (register_new_matrix_user); empty disables it.
shared_secret = ""

[limits]
max_request_bytes = 4194304
max_sync_timeout_ms = 60000

[rate_limits]
enabled = true
messages = { per_second = 10.0, burst = 50 }
registration = { per_second = 0.5, burst = 10 }
login = { per_second = 1.0, burst = 10 }

[presence]
# Whether users see each other online. Turn off to save memory and CPU on busy servers.
enabled = true
# Online users become "unavailable" after this long without activity.
idle_timeout_ms = 300000
# Users become "offline" this long after their last /sync ended.
offline_timeout_ms = 30000

[media]
# Where uploads and thumbnails are kept (default: data_dir/media).
# path = "ranvier-data/media"
max_upload_bytes = 52428800
# Serve media uploaded from now on through the deprecated unauthenticated
# /_matrix/media/v3/download and /thumbnail endpoints too. Off: those are frozen.
legacy_unauthenticated = false
# Scan every upload before it is stored: "none" or "clamav" (clamd, see [media.clamav]).
scanner = "none"
# Accept uploads unscanned while the scanner is down (default: refuse them with 503).
scanner_fail_open = false
max_thumbnail_pixels = 32000000
# The most frames an animated thumbnail (animated=true) keeps.
max_animated_frames = 100
# Where the bytes are kept: "fs" (files under path) or "s3" (see [media.s3]).
storage = "fs"

[media.clamav]
# tcp://HOST:PORT or unix:/run/clamav/clamd.ctl. clamd's StreamMaxLength must be at least
# max_upload_bytes, or large uploads count as scanner failures.
address = "tcp://127.0.0.1:3310"
timeout_ms = 60000

[media.s3]
# An S3-compatible bucket, used when storage = "s3". Uploads are still staged and scanned
# under path/tmp before they are stored in the bucket.
# endpoint = "https://s3.eu-west-1.amazonaws.com"
# bucket = "ranvier-media"
region = "us-east-1"
# access_key_id = ""
# secret_access_key = ""
# Address the bucket as endpoint/bucket (most self-hosted servers) or bucket.endpoint.
path_style = true
prefix = ""
timeout_ms = 60000

[media.url_preview]
# URL previews make the server fetch any URL its users name; off by default. Addresses in
# ip_range_blacklist (loopback, private, link-local, CGNAT, multicast, ... by default) are
# never fetched unless ip_range_whitelist allows them.
enabled = false
# ip_range_blacklist = ["127.0.0.0/8", "10.0.0.0/8", "..."]
ip_range_whitelist = []
max_page_bytes = 10485760
timeout_ms = 20000
max_redirects = 5
# How long a preview is reused before the page is fetched again.
cache_ms = 3600000

[media.retention]
# Delete media nobody downloaded for this many days (0 keeps it forever).
local_media_days = 0
remote_media_days = 0
interval_ms = 3600000
# Downloads are recorded in memory and written out this often.
access_flush_ms = 60000

[server_notices]
# Let administrators send notices to users (POST /_synapse/admin/v1/send_server_notice).
# Each user gets one room with the system user, tagged m.server_notice, that they cannot
# write in.
enabled = false
system_user_localpart = "notices"
system_user_display_name = "Server Notices"
# system_user_avatar_url = "mxc://example.org/abcdef"
room_name = "Server Notices"
[push]
# Send message content to push gateways (pushers with format "event_id_only" never get it).
include_content = true
# A failed delivery to a push gateway is tried again after retry_initial_ms, then after twice
# as long each time, at most retry_max_ms apart; after give_up_after_ms it is dropped.
retry_initial_ms = 1000
retry_max_ms = 3600000
give_up_after_ms = 86400000
request_timeout_ms = 10000

[federation]
# Serve the federation API (server keys, media for other servers) on a TLS listener and fetch
# remote media through other servers' federation endpoints.
enabled = false
listen = "127.0.0.1:8448"
# tls_cert = "/etc/ranvier/fullchain.pem"
# tls_key = "/etc/ranvier/privkey.pem"
# Verify other servers' certificates; extra_root_certificates adds private CAs (PEM files).
verify_certificates = true
extra_root_certificates = []
# Federate only with these servers; empty means all.
allowed_servers = []
key_valid_ms = 86400000
request_timeout_ms = 20000
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses_to_defaults() {
        let config = Config::from_toml_and_env(DEFAULT_CONFIG_TOML, []).unwrap();
        assert_eq!(config.server_name, "localhost");
        assert_eq!(config.listen, "127.0.0.1:8008");
        assert!(config.registration.enabled);
        assert_eq!(config.media.scanner, ScannerKind::None);
        assert_eq!(config.media.max_upload_bytes, MediaConfig::default().max_upload_bytes);
        assert!(!config.server_notices.enabled);
        assert_eq!(config.server_notices.system_user_localpart, "notices");
        assert_eq!(config.server_notices.system_user_display_name.as_deref(), Some("Server Notices"));
        assert_eq!(config.server_notices.room_name, "Server Notices");
    }

    #[test]
    fn worker_threads_leave_sqlite_a_core() {
        let sqlite = Config::from_toml_and_env(DEFAULT_CONFIG_TOML, []).unwrap();
        assert!(sqlite.is_sqlite());
        assert_eq!(sqlite.worker_threads(8), 7);
        assert_eq!(sqlite.worker_threads(2), 1);
        assert_eq!(sqlite.worker_threads(1), 1);
        let env = [("RANVIER_DATABASE__URL".to_owned(), "postgres://ranvier@127.0.0.1/ranvier".to_owned())];
        let postgres = Config::from_toml_and_env(DEFAULT_CONFIG_TOML, env).unwrap();
        assert!(!postgres.is_sqlite());
        assert_eq!(postgres.worker_threads(2), 2);
        let env = [("RANVIER_WORKER_THREADS".to_owned(), "3".to_owned())];
        let set = Config::from_toml_and_env(DEFAULT_CONFIG_TOML, env).unwrap();
        assert_eq!(set.worker_threads(2), 3);
    }

    #[test]
    fn pool_size_follows_the_cores_unless_set() {
        let default = Config::from_toml_and_env(DEFAULT_CONFIG_TOML, []).unwrap();
        assert_eq!(default.database.pool_size(1), 8);
        assert_eq!(default.database.pool_size(2), 8);
        assert_eq!(default.database.pool_size(8), 32);
        let env = [("RANVIER_DATABASE__MAX_CONNECTIONS".to_owned(), "5".to_owned())];
        let set = Config::from_toml_and_env(DEFAULT_CONFIG_TOML, env).unwrap();
        assert_eq!(set.database.pool_size(8), 5);
    }

    #[test]
    fn media_scanner_from_env() {
        let env = [
            ("RANVIER_MEDIA__SCANNER".to_owned(), "clamav".to_owned()),
            ("RANVIER_MEDIA__CLAMAV__ADDRESS".to_owned(), "unix:/run/clamd.ctl".to_owned()),
        ];
        let config = Config::from_toml_and_env(DEFAULT_CONFIG_TOML, env).unwrap();
        assert_eq!(config.media.scanner, ScannerKind::Clamav);
        assert_eq!(config.media.clamav.address, "unix:/run/clamd.ctl");
        assert!(Config::from_toml_and_env("[media]\nscanner = \"other\"", []).is_err());
    }

    #[test]
    fn media_sections_default_and_override() {
        let config = Config::from_toml_and_env(DEFAULT_CONFIG_TOML, []).unwrap();
        assert_eq!(config.media.storage, StorageKind::Fs);
        assert!(!config.media.url_preview.enabled);
        assert_eq!(config.media.url_preview.ip_range_blacklist.len(), DEFAULT_IP_RANGE_BLACKLIST.len());
        assert_eq!(config.media.retention.local_media_days, 0);
        let env = [
            ("RANVIER_MEDIA__STORAGE".to_owned(), "s3".to_owned()),
            ("RANVIER_MEDIA__S3__BUCKET".to_owned(), "media".to_owned()),
            ("RANVIER_MEDIA__URL_PREVIEW__ENABLED".to_owned(), "true".to_owned()),
            ("RANVIER_MEDIA__URL_PREVIEW__IP_RANGE_WHITELIST".to_owned(), "[\"127.0.0.1/32\"]".to_owned()),
            ("RANVIER_MEDIA__RETENTION__LOCAL_MEDIA_DAYS".to_owned(), "30".to_owned()),
        ];
        let config = Config::from_toml_and_env(DEFAULT_CONFIG_TOML, env).unwrap();
        assert_eq!(config.media.storage, StorageKind::S3);
        assert_eq!(config.media.s3.bucket, "media");
        assert!(config.media.url_preview.enabled);
        assert_eq!(config.media.url_preview.ip_range_whitelist, ["127.0.0.1/32"]);
        assert_eq!(config.media.retention.local_media_days, 30);
    }

    #[test]
    fn env_overrides_nested_and_typed_values() {
        let env = [
            ("RANVIER_SERVER_NAME".to_owned(), "example.org".to_owned()),
            ("RANVIER_DATABASE__URL".to_owned(), "postgres://u@h/db".to_owned()),
            ("RANVIER_REGISTRATION__ENABLED".to_owned(), "false".to_owned()),
            ("RANVIER_LIMITS__MAX_REQUEST_BYTES".to_owned(), "1000".to_owned()),
            ("OTHER".to_owned(), "ignored".to_owned()),
            ("RANVIER_CONFIG".to_owned(), "/etc/ranvier.toml".to_owned()),
        ];
        let config = Config::from_toml_and_env("", env).unwrap();
        assert_eq!(config.server_name, "example.org");
        assert_eq!(config.database.url.as_deref(), Some("postgres://u@h/db"));
        assert!(!config.registration.enabled);
        assert_eq!(config.limits.max_request_bytes, 1000);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(Config::from_toml_and_env("nonsense = 1", []).is_err());
    }
}
