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
    pub database: DatabaseConfig,
    pub registration: RegistrationConfig,
    pub limits: LimitsConfig,
    pub rate_limits: RateLimitsConfig,
    pub presence: PresenceConfig,
    pub media: MediaConfig,
    pub push: PushConfig,
}

/// Which database to use.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://user@host/db`. Defaults to `{data_dir}/ranvier.db`.
    pub url: Option<String>,
    /// Size of the connection pool.
    pub max_connections: u32,
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
            database: DatabaseConfig::default(),
            registration: RegistrationConfig::default(),
            limits: LimitsConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            presence: PresenceConfig::default(),
            media: MediaConfig::default(),
            push: PushConfig::default(),
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
        }
    }
}

impl Default for ClamAvConfig {
    fn default() -> Self {
        Self { address: "tcp://127.0.0.1:3310".into(), timeout_ms: 60_000 }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: None, max_connections: 16 }
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

[database]
# Leave unset for the embedded SQLite database in data_dir.
# For PostgreSQL: url = "postgres://ranvier@127.0.0.1/ranvier"
# url = "sqlite://ranvier-data/ranvier.db"
max_connections = 16

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

[media.clamav]
# tcp://HOST:PORT or unix:/run/clamav/clamd.ctl. clamd's StreamMaxLength must be at least
# max_upload_bytes, or large uploads count as scanner failures.
address = "tcp://127.0.0.1:3310"
timeout_ms = 60000

[push]
# Send message content to push gateways (pushers with format "event_id_only" never get it).
include_content = true
# A failed delivery to a push gateway is tried again after retry_initial_ms, then after twice
# as long each time, at most retry_max_ms apart; after give_up_after_ms it is dropped.
retry_initial_ms = 1000
retry_max_ms = 3600000
give_up_after_ms = 86400000
request_timeout_ms = 10000
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
