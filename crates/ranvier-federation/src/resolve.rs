//! Server-name resolution (spec: "Resolving server names"): which base URL reaches a server.
//!
//! Implemented: IP literals with or without a port, host names with an explicit port, and
//! `/.well-known/matrix/server` delegation (the delegated name is resolved by the same rules).
//! SRV records are not looked up: a host name without a port (and without delegation) is
//! reached on port 8448. Connections go to the resolved host name, so TLS verifies the
//! certificate for it and the `Host` header carries it, as the spec asks.

use std::net::IpAddr;

/// The default federation port.
pub const DEFAULT_PORT: u16 = 8448;

/// A server name split into host and optional port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// The host: a DNS name, an IPv4 literal or a bracketed IPv6 literal.
    pub host: String,
    pub port: Option<u16>,
}

impl HostPort {
    /// Split `name` (`host`, `host:port`, `[v6]`, `[v6]:port`); `None` if malformed.
    pub fn parse(name: &str) -> Option<Self> {
        if let Some(rest) = name.strip_prefix('[') {
            let end = rest.find(']')?;
            let host = format!("[{}]", &rest[..end]);
            let after = &rest[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port.parse().ok()?),
                None if after.is_empty() => None,
                None => return None,
            };
            return Some(Self { host, port });
        }
        match name.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() => {
                Some(Self { host: host.to_owned(), port: Some(port.parse().ok()?) })
            }
            Some(_) => None,
            None if name.is_empty() => None,
            None => Some(Self { host: name.to_owned(), port: None }),
        }
    }

    /// Whether the host is an IP literal.
    pub fn is_ip_literal(&self) -> bool {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().is_ok()
    }

    /// The base URL for this host, with the default port if none is given.
    pub fn base_url(&self) -> String {
        format!("https://{}:{}", self.host, self.port.unwrap_or(DEFAULT_PORT))
    }
}

/// What resolution decided before (or without) asking for `.well-known`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The base URL is known.
    Direct(String),
    /// Ask `https://{host}/.well-known/matrix/server` for a delegation first.
    WellKnown(HostPort),
}

/// The first steps of resolution: an IP literal or an explicit port settle it.
pub fn first_step(server_name: &str) -> Option<Step> {
    let parsed = HostPort::parse(server_name)?;
    if parsed.is_ip_literal() || parsed.port.is_some() {
        return Some(Step::Direct(parsed.base_url()));
    }
    Some(Step::WellKnown(parsed))
}

/// The base URL for a delegated server name (`m.server` of `.well-known`). SRV is not looked
/// up, so a delegated host without a port is reached on 8448.
pub fn delegated(m_server: &str) -> Option<String> {
    HostPort::parse(m_server).map(|parsed| parsed.base_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_names() {
        assert_eq!(HostPort::parse("example.org"), Some(HostPort { host: "example.org".into(), port: None }));
        assert_eq!(HostPort::parse("example.org:80"), Some(HostPort { host: "example.org".into(), port: Some(80) }));
        assert_eq!(HostPort::parse("[::1]:8448"), Some(HostPort { host: "[::1]".into(), port: Some(8448) }));
        assert_eq!(HostPort::parse("[::1]"), Some(HostPort { host: "[::1]".into(), port: None }));
        assert_eq!(HostPort::parse("a:b"), None);
        assert_eq!(HostPort::parse(":1"), None);
        assert_eq!(HostPort::parse(""), None);
    }

    #[test]
    fn resolution_steps() {
        assert_eq!(first_step("127.0.0.1"), Some(Step::Direct("https://127.0.0.1:8448".into())));
        assert_eq!(first_step("127.0.0.1:9000"), Some(Step::Direct("https://127.0.0.1:9000".into())));
        assert_eq!(first_step("[::1]"), Some(Step::Direct("https://[::1]:8448".into())));
        assert_eq!(first_step("matrix.org:443"), Some(Step::Direct("https://matrix.org:443".into())));
        assert_eq!(first_step("matrix.org"), Some(Step::WellKnown(HostPort { host: "matrix.org".into(), port: None })));
        assert_eq!(delegated("m.example.org"), Some("https://m.example.org:8448".into()));
        assert_eq!(delegated("m.example.org:443"), Some("https://m.example.org:443".into()));
    }
}
