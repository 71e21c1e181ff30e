//! In-memory token-bucket rate limits, keyed by a kind of action and a key (a user id, or the
//! client's address before login).
//!
//! Each bucket holds up to `burst` tokens and refills at `per_second`; an action takes one
//! token, and when none is left the caller gets `429 M_LIMIT_EXCEEDED` with the time until the
//! next token in `retry_after_ms` (and a `Retry-After` header). Buckets live in this process
//! only: behind a load balancer, each process enforces its own share.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use axum::extract::{ConnectInfo, FromRequestParts};
use parking_lot::Mutex;
use ranvier_core::{
    Error, Result,
    config::{RateLimit, RateLimitsConfig},
    error::ErrorKind,
};
use ruma::api::error::{LimitExceededErrorData, RetryAfter};

/// What is being limited; each kind has its own buckets and settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateLimitKind {
    /// Sending events, per user.
    Messages,
    /// `/register` and registration-token checks, per client address.
    Registration,
    /// `/login`, per client address.
    Login,
}

/// Once this many buckets exist, full ones are dropped (a full bucket is the same as none).
const PRUNE_THRESHOLD: usize = 10_000;

/// The longest wait ever announced.
const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The rate limiter: one bucket per (kind, key).
pub struct RateLimiter {
    enabled: bool,
    messages: RateLimit,
    registration: RateLimit,
    login: RateLimit,
    buckets: Mutex<HashMap<(RateLimitKind, String), Bucket>>,
}

impl RateLimiter {
    pub fn new(config: &RateLimitsConfig) -> Self {
        Self {
            enabled: config.enabled,
            messages: config.messages,
            registration: config.registration,
            login: config.login,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token from the bucket of (`kind`, `key`), or fail with `429 M_LIMIT_EXCEEDED`.
    pub fn check(&self, kind: RateLimitKind, key: &str) -> Result<()> {
        self.check_at(kind, key, Instant::now()).map_err(limit_exceeded)
    }

    fn limit(&self, kind: RateLimitKind) -> RateLimit {
        match kind {
            RateLimitKind::Messages => self.messages,
            RateLimitKind::Registration => self.registration,
            RateLimitKind::Login => self.login,
        }
    }

    /// The bucket logic at a given instant; `Err` carries the wait until the next token, or
    /// `None` if the bucket never refills.
    fn check_at(&self, kind: RateLimitKind, key: &str, now: Instant) -> Result<(), Option<Duration>> {
        if !self.enabled {
            return Ok(());
        }
        let limit = self.limit(kind);
        let capacity = f64::from(limit.burst.max(1));
        let rate = limit.per_second.max(0.0);
        let mut buckets = self.buckets.lock();
        if buckets.len() >= PRUNE_THRESHOLD {
            buckets.retain(|(kind, _), bucket| {
                let limit = self.limit(*kind);
                let refilled =
                    bucket.tokens + now.saturating_duration_since(bucket.updated).as_secs_f64() * limit.per_second;
                refilled < f64::from(limit.burst.max(1))
            });
        }
        let bucket = buckets.entry((kind, key.to_owned())).or_insert(Bucket { tokens: capacity, updated: now });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        if rate <= 0.0 {
            return Err(None);
        }
        // A tiny configured rate would give an absurd wait; a day is long enough to say "later".
        let wait = Duration::try_from_secs_f64((1.0 - bucket.tokens) / rate).unwrap_or(MAX_WAIT).min(MAX_WAIT);
        Err(Some(wait))
    }
}

/// `429 M_LIMIT_EXCEEDED`, with `retry_after_ms` rounded up to whole milliseconds.
fn limit_exceeded(wait: Option<Duration>) -> Error {
    let retry_after = wait.map(|wait| {
        let millis = wait.as_nanos().div_ceil(1_000_000).max(1);
        RetryAfter::Delay(Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX)))
    });
    let mut data = LimitExceededErrorData::new();
    data.retry_after = retry_after;
    Error::matrix(ErrorKind::LimitExceeded(data), "Too many requests")
}

/// The client's address, when the server was started with connection info. Requests built in
/// process (tests) have none and share one bucket.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub Option<IpAddr>);

impl ClientAddr {
    /// The rate-limit key for this client.
    pub fn key(&self) -> String {
        match self.0 {
            Some(ip) => ip.to_string(),
            None => "unknown".to_owned(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut http::request::Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
        Ok(ClientAddr(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32) -> RateLimiter {
        let limit = RateLimit { per_second, burst };
        RateLimiter::new(&RateLimitsConfig { enabled: true, messages: limit, registration: limit, login: limit })
    }

    #[test]
    fn burst_then_refill_at_rate() {
        let limiter = limiter(2.0, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(RateLimitKind::Login, "a", start).is_ok());
        }
        let wait = limiter.check_at(RateLimitKind::Login, "a", start).unwrap_err().unwrap();
        assert_eq!(wait, Duration::from_millis(500), "one token every half second");
        // A quarter second later half a token has come back: still refused, for 250 ms more.
        let later = start + Duration::from_millis(250);
        let wait = limiter.check_at(RateLimitKind::Login, "a", later).unwrap_err().unwrap();
        assert_eq!(wait, Duration::from_millis(250));
        assert!(limiter.check_at(RateLimitKind::Login, "a", start + Duration::from_millis(500)).is_ok());
        assert!(limiter.check_at(RateLimitKind::Login, "a", start + Duration::from_millis(500)).is_err());
        // A long pause refills only up to the burst.
        let much_later = start + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(limiter.check_at(RateLimitKind::Login, "a", much_later).is_ok());
        }
        assert!(limiter.check_at(RateLimitKind::Login, "a", much_later).is_err());
    }

    #[test]
    fn keys_and_kinds_have_separate_buckets() {
        let limiter = limiter(1.0, 1);
        let now = Instant::now();
        assert!(limiter.check_at(RateLimitKind::Login, "a", now).is_ok());
        assert!(limiter.check_at(RateLimitKind::Login, "a", now).is_err());
        assert!(limiter.check_at(RateLimitKind::Login, "b", now).is_ok());
        assert!(limiter.check_at(RateLimitKind::Registration, "a", now).is_ok());
        assert!(limiter.check_at(RateLimitKind::Messages, "a", now).is_ok());
    }

    #[test]
    fn disabled_limiter_allows_everything() {
        let limit = RateLimit { per_second: 0.0, burst: 1 };
        let limiter =
            RateLimiter::new(&RateLimitsConfig { enabled: false, messages: limit, registration: limit, login: limit });
        let now = Instant::now();
        for _ in 0..100 {
            assert!(limiter.check_at(RateLimitKind::Messages, "a", now).is_ok());
        }
    }

    #[test]
    fn a_bucket_that_never_refills_gives_no_retry_time() {
        let limiter = limiter(0.0, 2);
        let now = Instant::now();
        assert!(limiter.check_at(RateLimitKind::Login, "a", now).is_ok());
        assert!(limiter.check_at(RateLimitKind::Login, "a", now).is_ok());
        assert_eq!(limiter.check_at(RateLimitKind::Login, "a", now + Duration::from_secs(60)), Err(None));
    }

    #[test]
    fn error_carries_retry_after_in_milliseconds() {
        let error = limit_exceeded(Some(Duration::from_micros(1500)));
        let Some(ErrorKind::LimitExceeded(data)) = error.kind() else {
            panic!("expected M_LIMIT_EXCEEDED, got {error}");
        };
        assert!(matches!(data.retry_after, Some(RetryAfter::Delay(d)) if d == Duration::from_millis(2)));
    }

    #[test]
    fn full_buckets_are_pruned() {
        let limiter = limiter(1000.0, 1);
        let start = Instant::now();
        for i in 0..PRUNE_THRESHOLD {
            assert!(limiter.check_at(RateLimitKind::Login, &i.to_string(), start).is_ok());
        }
        assert_eq!(limiter.buckets.lock().len(), PRUNE_THRESHOLD);
        // A second later every bucket has refilled, so the next check drops them all.
        assert!(limiter.check_at(RateLimitKind::Login, "new", start + Duration::from_secs(1)).is_ok());
        assert_eq!(limiter.buckets.lock().len(), 1);
    }
}
