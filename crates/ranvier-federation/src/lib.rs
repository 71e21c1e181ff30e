//! Federation transport: this server's signed keys, X-Matrix request signing and
//! verification, server-name resolution, the outbound client and the TLS listener.
//!
//! # Layout
//! - [`Federation`]: the service. [`Federation::server_keys`] answers
//!   `GET /_matrix/key/v2/server`; [`Federation::verify_request`] checks an inbound request's
//!   `Authorization: X-Matrix …` header against the origin's keys (fetched from its
//!   `/_matrix/key/v2/server` and cached until their `valid_until_ts`; no notary);
//!   [`Federation::send`] signs and sends a ruma federation request to another server.
//! - [`resolve`]: which base URL reaches a server name (IP literals, explicit ports,
//!   `.well-known` delegation; SRV is not looked up).
//! - [`tls`]: the TLS listener the federation routes are served on.
//!
//! Federation is off unless `federation.enabled`; `federation.allowed_servers` limits it to a
//! list of servers, in both directions.

pub mod resolve;
pub mod tls;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use bytes::Bytes;
use parking_lot::Mutex;
use ranvier_core::{Config, Error, Result, config::FederationConfig, error::ErrorKind, util::now_ms};
use ranvier_rooms::Rooms;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName,
    api::{
        IncomingResponseExt, OutgoingRequest, OutgoingRequestExt,
        federation::authentication::{ServerSignatures, XMatrix, XMatrixSigningInput},
    },
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet},
};

/// The longest a fetched key set is trusted, whatever its `valid_until_ts`.
const MAX_KEY_CACHE_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// How long a `.well-known` answer (or its absence) is remembered.
const WELL_KNOWN_CACHE: Duration = Duration::from_secs(24 * 60 * 60);
const WELL_KNOWN_ERROR_CACHE: Duration = Duration::from_secs(60 * 60);
/// The largest `.well-known` or key response read.
const SMALL_RESPONSE_LIMIT: usize = 64 * 1024;

/// Why an outbound request failed.
#[derive(Debug)]
pub enum RequestError {
    /// The destination is not in `federation.allowed_servers`, or federation is off.
    NotAllowed,
    /// The server name cannot be resolved, or the connection failed.
    Unreachable(String),
    /// No answer within the timeout.
    TimedOut,
    /// The remote answered with an error status.
    Remote { status: http::StatusCode, body: String },
    /// The remote's answer could not be understood.
    BadResponse(String),
    /// The answer is larger than the caller accepts.
    TooLarge,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotAllowed => f.write_str("federation with this server is not allowed"),
            Self::Unreachable(why) => write!(f, "unreachable: {why}"),
            Self::TimedOut => f.write_str("timed out"),
            Self::Remote { status, body } => write!(f, "remote answered {status}: {body}"),
            Self::BadResponse(why) => write!(f, "bad response: {why}"),
            Self::TooLarge => f.write_str("response too large"),
        }
    }
}

struct CachedKeys {
    keys: PublicKeySet,
    valid_until_ms: i64,
}

/// The federation service. Cheap to clone.
#[derive(Clone)]
pub struct Federation {
    inner: Arc<Inner>,
}

struct Inner {
    server_name: OwnedServerName,
    config: FederationConfig,
    rooms: Rooms,
    /// Built on first use: an idle server, or one that never federates, does not load TLS
    /// roots or the client's code.
    http: OnceLock<reqwest::Client>,
    /// Extra roots from `federation.extra_root_certificates`, read and parsed at start-up so
    /// that a bad file stops the server there.
    extra_roots: Vec<reqwest::Certificate>,
    keys: Mutex<HashMap<OwnedServerName, CachedKeys>>,
    destinations: Mutex<HashMap<OwnedServerName, (String, Instant)>>,
}

impl Federation {
    /// The service for `config`; the signing key is the rooms service's.
    pub fn new(config: &Config, server_name: OwnedServerName, rooms: Rooms) -> Result<Self> {
        let federation = &config.federation;
        let mut extra_roots = Vec::new();
        for path in &federation.extra_root_certificates {
            let pem = std::fs::read(path)
                .map_err(|e| Error::internal(format!("read root certificate {}: {e}", path.display())))?;
            extra_roots.extend(
                reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| Error::internal(format!("parse root certificate {}: {e}", path.display())))?,
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                server_name,
                config: federation.clone(),
                rooms,
                http: OnceLock::new(),
                extra_roots,
                keys: Mutex::new(HashMap::new()),
                destinations: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn enabled(&self) -> bool {
        self.inner.config.enabled
    }

    /// The outbound HTTP client, built on first use.
    fn http(&self) -> Result<&reqwest::Client, RequestError> {
        if let Some(client) = self.inner.http.get() {
            return Ok(client);
        }
        let federation = &self.inner.config;
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_millis(federation.request_timeout_ms.max(1)))
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("Ranvier/", env!("CARGO_PKG_VERSION")));
        for cert in &self.inner.extra_roots {
            builder = builder.add_root_certificate(cert.clone());
        }
        if !federation.verify_certificates {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let client = builder.build().map_err(|e| RequestError::Unreachable(format!("federation HTTP client: {e}")))?;
        // Two first uses at once build two clients; one is kept.
        Ok(self.inner.http.get_or_init(|| client))
    }

    pub fn server_name(&self) -> &ServerName {
        &self.inner.server_name
    }

    /// Whether federation with `server` is allowed (enabled, and on the allow-list if any).
    pub fn is_allowed(&self, server: &ServerName) -> bool {
        let config = &self.inner.config;
        config.enabled
            && (config.allowed_servers.is_empty() || config.allowed_servers.iter().any(|s| s == server.as_str()))
    }

    /// The signed key object of `GET /_matrix/key/v2/server`.
    pub fn server_keys(&self) -> Result<CanonicalJsonObject> {
        let key = self.inner.rooms.signing_key();
        let valid_until = now_ms().saturating_add(i64::try_from(self.inner.config.key_valid_ms).unwrap_or(i64::MAX));
        let key_id = format!("ed25519:{}", key.version());
        let verify_key = CanonicalJsonObject::from([(
            "key".to_owned(),
            CanonicalJsonValue::String(Base64::<ruma::serde::base64::Standard, _>::new(key.public_key()).encode()),
        )]);
        let mut object = CanonicalJsonObject::from([
            ("server_name".to_owned(), CanonicalJsonValue::String(self.inner.server_name.to_string())),
            ("valid_until_ts".to_owned(), CanonicalJsonValue::Integer(ruma::Int::new_saturating(valid_until))),
            (
                "verify_keys".to_owned(),
                CanonicalJsonValue::Object(CanonicalJsonObject::from([(
                    key_id,
                    CanonicalJsonValue::Object(verify_key),
                )])),
            ),
            ("old_verify_keys".to_owned(), CanonicalJsonValue::Object(CanonicalJsonObject::new())),
        ]);
        ruma::signatures::sign_json(self.inner.server_name.as_str(), key, &mut object)
            .map_err(|e| Error::internal(format!("sign server keys: {e}")))?;
        Ok(object)
    }

    /// Check the X-Matrix authentication of an inbound request; returns the origin.
    /// Missing or bad authentication is `401 M_UNAUTHORIZED`; an origin that is not allowed
    /// `403 M_FORBIDDEN`.
    pub async fn verify_request(&self, request: &http::Request<Bytes>) -> Result<OwnedServerName> {
        let xmatrix = XMatrix::extract_from_http_headers(request.headers())
            .map_err(|e| unauthorized(format!("Missing or malformed X-Matrix authorization: {e}")))?;
        if xmatrix.destination.as_deref().is_some_and(|destination| destination != self.inner.server_name) {
            return Err(unauthorized("The request is not meant for this server"));
        }
        if !self.is_allowed(&xmatrix.origin) {
            return Err(Error::forbidden("Federation with this server is not allowed"));
        }
        if xmatrix.origin == self.inner.server_name {
            return Err(unauthorized("Requests may not claim to come from this server"));
        }
        let keys = self.keys_of(&xmatrix.origin).await.map_err(|error| {
            tracing::info!(origin = %xmatrix.origin, %error, "could not fetch the origin's keys");
            unauthorized("Could not fetch the origin's signing keys")
        })?;
        if !keys.contains_key(xmatrix.key.as_str()) {
            return Err(unauthorized("Unknown signing key"));
        }
        let map: PublicKeyMap = BTreeMap::from([(xmatrix.origin.to_string(), keys)]);
        xmatrix
            .verify_http_request(request, &self.inner.server_name, &map)
            .map_err(|e| unauthorized(format!("Invalid X-Matrix signature: {e}")))?;
        Ok(xmatrix.origin)
    }

    /// The verify keys of `server`, from the cache or from its `/_matrix/key/v2/server`.
    pub async fn keys_of(&self, server: &ServerName) -> Result<PublicKeySet, RequestError> {
        let now = now_ms();
        if let Some(cached) = self.inner.keys.lock().get(server)
            && cached.valid_until_ms > now
        {
            return Ok(cached.keys.clone());
        }
        let base = self.base_url(server).await?;
        let body = self.get_small(&format!("{base}/_matrix/key/v2/server")).await?;
        let (keys, valid_until) = verify_key_response(server, &body).map_err(RequestError::BadResponse)?;
        let valid_until_ms = valid_until.min(now.saturating_add(MAX_KEY_CACHE_MS));
        if valid_until_ms > now {
            self.inner.keys.lock().insert(server.to_owned(), CachedKeys { keys: keys.clone(), valid_until_ms });
        }
        Ok(keys)
    }

    /// The base URL (`https://host:port`) that reaches `server`.
    pub async fn base_url(&self, server: &ServerName) -> Result<String, RequestError> {
        let step = resolve::first_step(server.as_str())
            .ok_or_else(|| RequestError::Unreachable(format!("invalid server name {server}")))?;
        let host = match step {
            resolve::Step::Direct(url) => return Ok(url),
            resolve::Step::WellKnown(host) => host,
        };
        if let Some((url, expires)) = self.inner.destinations.lock().get(server)
            && *expires > Instant::now()
        {
            return Ok(url.clone());
        }
        let (url, keep) = match self.get_small(&format!("https://{}/.well-known/matrix/server", host.host)).await {
            Ok(body) => match serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("m.server").and_then(|s| s.as_str()).and_then(resolve::delegated))
            {
                Some(url) => (url, WELL_KNOWN_CACHE),
                None => (host.base_url(), WELL_KNOWN_ERROR_CACHE),
            },
            Err(_) => (host.base_url(), WELL_KNOWN_ERROR_CACHE),
        };
        self.inner.destinations.lock().insert(server.to_owned(), (url.clone(), Instant::now() + keep));
        Ok(url)
    }

    /// An unauthenticated GET of a small JSON document.
    async fn get_small(&self, url: &str) -> Result<Vec<u8>, RequestError> {
        let response = self.http()?.get(url).send().await.map_err(request_error)?;
        let status = response.status();
        let body = read_limited(response, SMALL_RESPONSE_LIMIT as u64).await?;
        if !status.is_success() {
            return Err(RequestError::Remote { status, body: String::from_utf8_lossy(&body).into_owned() });
        }
        Ok(body.to_vec())
    }

    /// Sign `request` with X-Matrix and send it to `destination`; `timeout` bounds the whole
    /// exchange, `max_body` the size of the answer read (bytes).
    pub async fn send<R>(
        &self,
        destination: &ServerName,
        request: R,
        timeout: Duration,
        max_body: u64,
    ) -> Result<R::IncomingResponse, RequestError>
    where
        R: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = ruma::api::path_builder::SinglePath>,
    {
        if !self.is_allowed(destination) {
            return Err(RequestError::NotAllowed);
        }
        let base = self.base_url(destination).await?;
        let input = XMatrixSigningInput::new(
            self.inner.server_name.clone(),
            destination.to_owned(),
            self.inner.rooms.signing_key(),
        );
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&base, input, ())
            .map_err(|e| RequestError::BadResponse(format!("build request: {e}")))?;
        let (parts, body) = http_request.into_parts();
        let url = parts.uri.to_string();
        let mut outgoing = self.http()?.request(parts.method, url).headers(parts.headers).timeout(timeout);
        if !body.is_empty() {
            outgoing = outgoing.body(body);
        }
        let response = outgoing.send().await.map_err(request_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_limited(response, max_body).await?;
        if !status.is_success() {
            return Err(RequestError::Remote { status, body: String::from_utf8_lossy(&body).into_owned() });
        }
        let mut http_response = http::Response::builder().status(status);
        if let Some(map) = http_response.headers_mut() {
            *map = headers;
        }
        let http_response =
            http_response.body(&body[..]).map_err(|e| RequestError::BadResponse(format!("response: {e}")))?;
        R::IncomingResponse::try_from_http_response(http_response).map_err(|e| RequestError::BadResponse(e.to_string()))
    }

    /// A plain GET of `url` (a `Location` given by a media response), bounded by `timeout`
    /// and `max_body` bytes.
    pub async fn get_location(
        &self,
        url: &str,
        timeout: Duration,
        max_body: u64,
    ) -> Result<(Option<String>, Bytes), RequestError> {
        let response = self.http()?.get(url).timeout(timeout).send().await.map_err(request_error)?;
        let status = response.status();
        let content_type =
            response.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = read_limited(response, max_body).await?;
        if !status.is_success() {
            return Err(RequestError::Remote { status, body: String::from_utf8_lossy(&body).into_owned() });
        }
        Ok((content_type, body))
    }
}

/// Read a response body, refusing more than `limit` bytes (checked before and while reading).
async fn read_limited(mut response: reqwest::Response, limit: u64) -> Result<Bytes, RequestError> {
    if response.content_length().is_some_and(|length| length > limit) {
        return Err(RequestError::TooLarge);
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(request_error)? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(RequestError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn unauthorized(message: impl Into<String>) -> Error {
    Error::matrix(ErrorKind::Unauthorized, message)
}

fn request_error(error: reqwest::Error) -> RequestError {
    if error.is_timeout() { RequestError::TimedOut } else { RequestError::Unreachable(error.to_string()) }
}

/// Check a `/_matrix/key/v2/server` response of `server`: its name, its self-signature;
/// returns its verify keys and `valid_until_ts`.
pub fn verify_key_response(server: &ServerName, body: &[u8]) -> Result<(PublicKeySet, i64), String> {
    let mut object: CanonicalJsonObject = serde_json::from_slice(body).map_err(|e| format!("key response: {e}"))?;
    if object.get("server_name").and_then(|v| v.as_str()) != Some(server.as_str()) {
        return Err("the key response is for another server".into());
    }
    let valid_until = match object.get("valid_until_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
        _ => return Err("the key response has no valid_until_ts".into()),
    };
    let mut keys = PublicKeySet::new();
    if let Some(CanonicalJsonValue::Object(verify_keys)) = object.get("verify_keys") {
        for (key_id, value) in verify_keys {
            if let Some(key) = value.as_object().and_then(|v| v.get("key")).and_then(|k| k.as_str())
                && let Ok(key) = Base64::parse(key)
            {
                keys.insert(key_id.clone(), key);
            }
        }
    }
    if keys.is_empty() {
        return Err("the key response has no verify keys".into());
    }
    // Only the server's own signature is checked (no notary).
    if let Some(CanonicalJsonValue::Object(signatures)) = object.get_mut("signatures") {
        signatures.retain(|entity, _| entity == server.as_str());
    }
    let map: PublicKeyMap = BTreeMap::from([(server.to_string(), keys.clone())]);
    ruma::signatures::verify_json(&map, &object).map_err(|e| format!("key response signature: {e}"))?;
    Ok((keys, valid_until))
}

#[cfg(test)]
mod tests {
    use ruma::{server_name, signatures::Ed25519KeyPair};

    use super::*;

    fn signed_keys(name: &str, key: &Ed25519KeyPair, valid_until: i64) -> CanonicalJsonObject {
        let verify_key = CanonicalJsonObject::from([(
            "key".to_owned(),
            CanonicalJsonValue::String(Base64::<ruma::serde::base64::Standard, _>::new(key.public_key()).encode()),
        )]);
        let mut object = CanonicalJsonObject::from([
            ("server_name".to_owned(), CanonicalJsonValue::String(name.to_owned())),
            ("valid_until_ts".to_owned(), CanonicalJsonValue::Integer(ruma::Int::new_saturating(valid_until))),
            (
                "verify_keys".to_owned(),
                CanonicalJsonValue::Object(CanonicalJsonObject::from([(
                    format!("ed25519:{}", key.version()),
                    CanonicalJsonValue::Object(verify_key),
                )])),
            ),
        ]);
        ruma::signatures::sign_json(name, key, &mut object).unwrap();
        object
    }

    fn key() -> Ed25519KeyPair {
        Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "k1".to_owned()).unwrap()
    }

    #[test]
    fn key_responses_are_checked() {
        let key = key();
        let body = serde_json::to_vec(&signed_keys("a.example", &key, 1234)).unwrap();
        let (keys, valid_until) = verify_key_response(server_name!("a.example"), &body).unwrap();
        assert_eq!(valid_until, 1234);
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["ed25519:k1"]);

        // Another server's keys, and tampered keys, are refused.
        assert!(verify_key_response(server_name!("b.example"), &body).is_err());
        let mut tampered = signed_keys("a.example", &key, 1234);
        tampered.insert("valid_until_ts".into(), CanonicalJsonValue::Integer(ruma::Int::new_saturating(9999)));
        assert!(verify_key_response(server_name!("a.example"), &serde_json::to_vec(&tampered).unwrap()).is_err());
        // Signed by a key other than the one it publishes.
        let mut foreign = signed_keys("a.example", &key, 1234);
        foreign.remove("signatures");
        ruma::signatures::sign_json("a.example", &self::key(), &mut foreign).unwrap();
        assert!(verify_key_response(server_name!("a.example"), &serde_json::to_vec(&foreign).unwrap()).is_err());
    }

    #[test]
    fn x_matrix_round_trip() {
        let key = key();
        let request = http::Request::builder()
            .method("GET")
            .uri("https://b.example/_matrix/federation/v1/media/download/abc")
            .body(Vec::<u8>::new())
            .unwrap();
        let input =
            XMatrixSigningInput::new(server_name!("a.example").to_owned(), server_name!("b.example").to_owned(), &key);
        let xmatrix = XMatrix::sign_http_request(&request, input).unwrap();
        let keys = PublicKeySet::from([("ed25519:k1".to_owned(), Base64::new(key.public_key().to_vec()))]);
        let map: PublicKeyMap = BTreeMap::from([("a.example".to_owned(), keys)]);
        assert!(xmatrix.verify_http_request(&request, server_name!("b.example"), &map).is_ok());
        assert!(xmatrix.verify_http_request(&request, server_name!("c.example"), &map).is_err());
        let other = http::Request::builder()
            .method("GET")
            .uri("https://b.example/_matrix/federation/v1/media/download/xyz")
            .body(Vec::<u8>::new())
            .unwrap();
        assert!(xmatrix.verify_http_request(&other, server_name!("b.example"), &map).is_err());
    }
}
