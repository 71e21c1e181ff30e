//! Fetching URLs on behalf of users (URL previews) without letting them reach into the
//! server's own network.
//!
//! Every address a request could connect to is checked against an [`IpFilter`] (a block-list
//! of CIDR ranges with an allow-list that wins over it):
//! - host names are resolved by [`GuardedResolver`], the client's only DNS resolver, which
//!   refuses the whole name when any of its addresses is blocked, so no connection to a
//!   blocked address is ever opened (and a name cannot alternate between a public and a
//!   private address);
//! - literal IP hosts, which never reach a resolver, are checked before each request;
//! - redirects are not followed by the client but one by one here, each new URL checked the
//!   same way, up to a limit;
//! - proxies from the environment are ignored (a proxy would resolve names itself);
//! - bodies are read up to a size limit (a larger `Content-Length` is refused before reading).
//!
//! IPv6 addresses that embed an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible,
//! NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are also checked as that IPv4 address.

use std::{
    error::Error as StdError,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use ipnet::IpNet;
use reqwest::{
    StatusCode, Url,
    dns::{Addrs, Name, Resolve, Resolving},
};

/// The `User-Agent` of preview requests. Some sites only give OpenGraph data to bots.
const USER_AGENT: &str = "Ranvier URL preview (bot)";

/// Blocked and allowed address ranges.
#[derive(Clone, Debug, Default)]
pub struct IpFilter {
    blacklist: Vec<IpNet>,
    whitelist: Vec<IpNet>,
}

impl IpFilter {
    /// A filter from CIDR ranges (a bare address counts as a range of one).
    pub fn new(blacklist: &[String], whitelist: &[String]) -> Result<Self, String> {
        let parse = |ranges: &[String]| {
            ranges
                .iter()
                .map(|range| {
                    range
                        .parse::<IpNet>()
                        .or_else(|_| range.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|_| format!("`{range}` is not an IP range (CIDR)"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self { blacklist: parse(blacklist)?, whitelist: parse(whitelist)? })
    }

    /// Whether connecting to `ip` is refused: it (or the IPv4 address it embeds) is in a
    /// blocked range, and neither is in an allowed one.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        let forms = [Some(ip), embedded_ipv4(ip).map(IpAddr::V4)];
        let in_any = |ranges: &[IpNet]| forms.iter().flatten().any(|ip| ranges.iter().any(|range| range.contains(ip)));
        in_any(&self.blacklist) && !in_any(&self.whitelist)
    }
}

/// The IPv4 address an IPv6 address stands for, if it embeds one.
fn embedded_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else {
        return None;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let segments = v6.segments();
    let low32 = |s: [u16; 8]| Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    // IPv4-compatible (deprecated) `::a.b.c.d`, but not `::` or `::1`.
    if segments[..6] == [0; 6] && v6 != Ipv6Addr::UNSPECIFIED && v6 != Ipv6Addr::LOCALHOST {
        return Some(low32(segments));
    }
    // NAT64 well-known prefix 64:ff9b::/96.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low32(segments));
    }
    // 6to4 2002:AABB:CCDD::/48.
    if segments[0] == 0x2002 {
        let [a, b] = segments[1].to_be_bytes();
        let [c, d] = segments[2].to_be_bytes();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    None
}

/// The error a [`GuardedResolver`] gives for a name with a blocked address.
#[derive(Debug)]
pub struct BlockedAddress(pub String);

impl fmt::Display for BlockedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} resolves to an address that may not be fetched from", self.0)
    }
}

impl StdError for BlockedAddress {}

/// A DNS resolver that refuses names resolving to any blocked address.
pub struct GuardedResolver {
    filter: Arc<IpFilter>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let filter = self.filter.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(blocked) = addrs.iter().find(|addr| filter.is_blocked(addr.ip())) {
                tracing::info!(host, address = %blocked.ip(), "URL preview: refused a name resolving to a blocked address");
                return Err(Box::new(BlockedAddress(host)) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Why a fetch failed.
#[derive(Debug)]
pub enum FetchError {
    /// The URL, a redirect or a name points at a blocked address, or is not `http(s)`.
    Blocked(String),
    /// The body is larger than allowed.
    TooLarge(u64),
    /// Anything else: no connection, an error status, too many redirects.
    Failed(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Blocked(why) => write!(f, "blocked: {why}"),
            Self::TooLarge(limit) => write!(f, "the content is larger than {limit} bytes"),
            Self::Failed(why) => f.write_str(why),
        }
    }
}

/// A fetched resource.
#[derive(Debug)]
pub struct Fetched {
    /// The URL after redirects.
    pub url: Url,
    /// The media type of `Content-Type`, lower case, without parameters.
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// An HTTP client confined by an [`IpFilter`].
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    filter: Arc<IpFilter>,
    max_redirects: u32,
}

impl Fetcher {
    pub fn new(filter: IpFilter, max_redirects: u32, connect_timeout: Duration) -> Result<Self, String> {
        let filter = Arc::new(filter);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { filter: filter.clone() }))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| format!("build the URL preview client: {e}"))?;
        Ok(Self { client, filter, max_redirects })
    }

    /// `GET url`, following redirects, reading at most `max_bytes` of the body. The caller
    /// bounds the total time.
    pub async fn get(&self, url: &str, max_bytes: u64) -> Result<Fetched, FetchError> {
        let mut url = Url::parse(url).map_err(|e| FetchError::Failed(format!("invalid URL: {e}")))?;
        let mut redirects = 0;
        loop {
            self.check_url(&url)?;
            let response = self
                .client
                .get(url.clone())
                .header("accept", "text/html,application/xhtml+xml,image/*;q=0.9,*/*;q=0.5")
                .send()
                .await
                .map_err(|e| request_error(&e))?;
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .ok_or_else(|| FetchError::Failed(format!("{status} without a Location")))?;
                let next = url.join(location).map_err(|e| FetchError::Failed(format!("bad redirect: {e}")))?;
                redirects += 1;
                if redirects > self.max_redirects {
                    return Err(FetchError::Failed(format!("more than {} redirects", self.max_redirects)));
                }
                url = next;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Failed(format!("the server answered {status}")));
            }
            if response.content_length().is_some_and(|length| length > max_bytes) {
                return Err(FetchError::TooLarge(max_bytes));
            }
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.split(';').next())
                .map(|value| value.trim().to_ascii_lowercase())
                .filter(|value| !value.is_empty());
            let body = read_limited(response, max_bytes).await?;
            return Ok(Fetched { url, content_type, body });
        }
    }

    /// Refuse URLs that are not `http(s)` or whose host is a blocked literal address (names
    /// are checked by the resolver).
    fn check_url(&self, url: &Url) -> Result<(), FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Blocked(format!("{} URLs are not fetched", url.scheme())));
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(FetchError::Failed("the URL has no host".into())),
        };
        if self.filter.is_blocked(ip) {
            return Err(FetchError::Blocked(format!("{ip} may not be fetched from")));
        }
        Ok(())
    }
}

/// Read a body, failing as soon as it exceeds `max_bytes`.
async fn read_limited(mut response: reqwest::Response, max_bytes: u64) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| request_error(&e))? {
        if body.len() as u64 + chunk.len() as u64 > max_bytes {
            return Err(FetchError::TooLarge(max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A request error, [`FetchError::Blocked`] when the resolver refused the name.
fn request_error(error: &reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(blocked) = current.downcast_ref::<BlockedAddress>() {
            return FetchError::Blocked(blocked.to_string());
        }
        source = current.source();
    }
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(current) = source {
        message.push_str(": ");
        message.push_str(&current.to_string());
        source = current.source();
    }
    FetchError::Failed(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_filter() -> IpFilter {
        let blacklist: Vec<String> =
            ranvier_core::config::DEFAULT_IP_RANGE_BLACKLIST.iter().map(|s| (*s).to_owned()).collect();
        IpFilter::new(&blacklist, &[]).unwrap()
    }

    #[test]
    fn default_blacklist_covers_internal_addresses() {
        let filter = default_filter();
        for blocked in [
            "127.0.0.1",
            "127.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
        ] {
            assert!(filter.is_blocked(blocked.parse().unwrap()), "{blocked} is blocked");
        }
        for allowed in ["1.1.1.1", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(!filter.is_blocked(allowed.parse().unwrap()), "{allowed} is allowed");
        }
    }

    #[test]
    fn whitelist_wins_and_ranges_are_validated() {
        let filter = IpFilter::new(&["127.0.0.0/8".into()], &["127.0.0.1".into()]).unwrap();
        assert!(!filter.is_blocked("127.0.0.1".parse().unwrap()));
        assert!(!filter.is_blocked("::ffff:127.0.0.1".parse().unwrap()), "mapped forms are allowed too");
        assert!(filter.is_blocked("127.0.0.2".parse().unwrap()));
        assert!(IpFilter::new(&["not a range".into()], &[]).is_err());
        assert!(IpFilter::new(&[], &["10.0.0.0/33".into()]).is_err());
    }

    #[tokio::test]
    async fn literal_and_resolved_blocked_hosts_are_refused_before_connecting() {
        let fetcher = Fetcher::new(default_filter(), 3, Duration::from_secs(2)).unwrap();
        for url in ["http://127.0.0.1:9/", "http://[::1]:9/", "http://[::ffff:7f00:1]:9/", "http://localhost:9/"] {
            match fetcher.get(url, 1024).await {
                Err(FetchError::Blocked(_)) => {}
                other => panic!("{url}: expected a refusal, got {other:?}"),
            }
        }
        match fetcher.get("file:///etc/passwd", 1024).await {
            Err(FetchError::Blocked(_)) => {}
            other => panic!("file URL: {other:?}"),
        }
    }
}
