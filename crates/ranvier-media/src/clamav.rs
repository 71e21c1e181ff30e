//! A [`Scanner`] that asks ClamAV's `clamd` over TCP or a Unix socket.
//!
//! The protocol is clamd's `zINSTREAM`: the command, NUL-terminated, then the file as chunks
//! each preceded by its length as a 4-byte big-endian integer, then a zero-length chunk. clamd
//! answers one NUL-terminated line: `stream: OK`, `stream: <signature> FOUND`, or
//! `<reason> ERROR` (for instance when the stream exceeds its `StreamMaxLength`, after which it
//! closes the connection without reading the rest).

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::scanner::{ScanUnavailable, Scanner, Verdict};

/// How much of the file goes in one chunk.
const CHUNK: usize = 64 * 1024;
/// The longest reply accepted from clamd.
const MAX_REPLY: usize = 4096;
/// How long to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where clamd listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClamdAddress {
    /// `tcp://HOST:PORT`
    Tcp(String),
    /// `unix:/path/to/socket` (or `unix:///path`)
    Unix(PathBuf),
}

impl ClamdAddress {
    /// Parse `tcp://HOST:PORT` or `unix:/path`.
    pub fn parse(address: &str) -> Result<Self, String> {
        if let Some(host_port) = address.strip_prefix("tcp://") {
            let host_port = host_port.trim_end_matches('/');
            let valid =
                host_port.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(format!("clamd address `{address}`: expected tcp://HOST:PORT"));
            }
            return Ok(Self::Tcp(host_port.to_owned()));
        }
        if let Some(path) = address.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if !path.starts_with('/') {
                return Err(format!("clamd address `{address}`: expected unix:/absolute/path"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        Err(format!("clamd address `{address}`: expected tcp://HOST:PORT or unix:/path"))
    }
}

impl std::fmt::Display for ClamdAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(host_port) => write!(f, "tcp://{host_port}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The clamd scanner.
pub struct ClamAv {
    address: ClamdAddress,
    timeout: Duration,
}

impl ClamAv {
    /// A scanner for clamd at `address`; a scan taking longer than `timeout` counts as the
    /// scanner being unavailable.
    pub fn new(address: ClamdAddress, timeout: Duration) -> Self {
        Self { address, timeout }
    }

    async fn scan_file(&self, path: &Path) -> Result<Verdict, ScanUnavailable> {
        let unavailable =
            |what: &str, e: &dyn std::fmt::Display| ScanUnavailable(format!("clamd at {}: {what}: {e}", self.address));
        let file = tokio::fs::File::open(path).await.map_err(|e| unavailable("open the file to scan", &e))?;
        let scan = async {
            let reply = match &self.address {
                ClamdAddress::Tcp(host_port) => {
                    let conn = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(host_port))
                        .await
                        .map_err(|e| unavailable("connect", &e))?
                        .map_err(|e| unavailable("connect", &e))?;
                    instream(conn, file).await
                }
                #[cfg(unix)]
                ClamdAddress::Unix(socket) => {
                    let conn = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(socket))
                        .await
                        .map_err(|e| unavailable("connect", &e))?
                        .map_err(|e| unavailable("connect", &e))?;
                    instream(conn, file).await
                }
                #[cfg(not(unix))]
                ClamdAddress::Unix(_) => {
                    return Err(ScanUnavailable("Unix sockets are not supported on this platform".into()));
                }
            };
            let reply = reply.map_err(|e| unavailable("scan", &e))?;
            parse_reply(&reply).map_err(|e| unavailable("scan", &e))
        };
        tokio::time::timeout(self.timeout, scan)
            .await
            .map_err(|_| ScanUnavailable(format!("clamd at {}: no answer within {:?}", self.address, self.timeout)))?
    }
}

impl Scanner for ClamAv {
    fn name(&self) -> &'static str {
        "clamav"
    }

    fn scan<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<Verdict, ScanUnavailable>> {
        Box::pin(self.scan_file(path))
    }
}

/// Send `source` with `zINSTREAM` over `conn` and return clamd's reply line.
pub async fn instream<C, R>(mut conn: C, mut source: R) -> io::Result<String>
where
    C: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let sent = send_stream(&mut conn, &mut source).await;
    // clamd may stop reading and answer early (a size limit): its reply then explains the
    // failed write better than the write error does.
    let reply = read_reply(&mut conn).await;
    match (sent, reply) {
        (_, Ok(reply)) if !reply.is_empty() => Ok(reply),
        (Err(e), _) => Err(e),
        (Ok(()), Ok(_)) => {
            Err(io::Error::new(io::ErrorKind::UnexpectedEof, "clamd closed the connection without a reply"))
        }
        (Ok(()), Err(e)) => Err(e),
    }
}

async fn send_stream<C, R>(conn: &mut C, source: &mut R) -> io::Result<()>
where
    C: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    conn.write_all(b"zINSTREAM\0").await?;
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let read = source.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        let length = u32::try_from(read).map_err(|_| io::Error::other("chunk too large"))?;
        conn.write_all(&length.to_be_bytes()).await?;
        conn.write_all(&buffer[..read]).await?;
    }
    conn.write_all(&0u32.to_be_bytes()).await?;
    conn.flush().await
}

async fn read_reply<C: AsyncRead + Unpin>(conn: &mut C) -> io::Result<String> {
    let mut reply = Vec::new();
    let mut byte = [0u8; 256];
    loop {
        let read = conn.read(&mut byte).await?;
        if read == 0 {
            break;
        }
        reply.extend_from_slice(&byte[..read]);
        if let Some(end) = reply.iter().position(|&b| b == 0) {
            reply.truncate(end);
            break;
        }
        if reply.len() > MAX_REPLY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "clamd reply too long"));
        }
    }
    Ok(String::from_utf8_lossy(&reply).trim().to_owned())
}

/// Interpret one reply line of `zINSTREAM`: the verdict, or why there is none.
pub fn parse_reply(reply: &str) -> Result<Verdict, String> {
    let reply = reply.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    // With IDSESSION clamd prefixes replies with a request number (`1: stream: OK`).
    let body = match reply.find("stream: ") {
        Some(start) => &reply[start + "stream: ".len()..],
        None => reply,
    };
    if body == "OK" {
        return Ok(Verdict::Clean);
    }
    if let Some(name) = body.strip_suffix(" FOUND") {
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("unexpected clamd reply `{reply}`"));
        }
        return Ok(Verdict::Infected(name.to_owned()));
    }
    if body.ends_with("ERROR") {
        return Err(format!("clamd error: {reply}"));
    }
    Err(format!("unexpected clamd reply `{reply}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_parsed() {
        assert_eq!(parse_reply("stream: OK"), Ok(Verdict::Clean));
        assert_eq!(parse_reply("stream: OK\0"), Ok(Verdict::Clean));
        assert_eq!(parse_reply("1: stream: OK"), Ok(Verdict::Clean));
        assert_eq!(
            parse_reply("stream: Eicar-Test-Signature FOUND"),
            Ok(Verdict::Infected("Eicar-Test-Signature".into()))
        );
        assert_eq!(
            parse_reply("stream: Win.Test.EICAR_HDB-1 FOUND\n"),
            Ok(Verdict::Infected("Win.Test.EICAR_HDB-1".into()))
        );
        assert!(parse_reply("INSTREAM size limit exceeded. ERROR").unwrap_err().contains("size limit"));
        assert!(parse_reply("stream: FOUND").is_err());
        assert!(parse_reply("").is_err());
        assert!(parse_reply("PONG").is_err());
    }

    #[test]
    fn addresses_are_parsed() {
        assert_eq!(ClamdAddress::parse("tcp://127.0.0.1:3310"), Ok(ClamdAddress::Tcp("127.0.0.1:3310".into())));
        assert_eq!(ClamdAddress::parse("tcp://localhost:3310/"), Ok(ClamdAddress::Tcp("localhost:3310".into())));
        assert_eq!(
            ClamdAddress::parse("unix:/run/clamav/clamd.ctl"),
            Ok(ClamdAddress::Unix("/run/clamav/clamd.ctl".into()))
        );
        assert_eq!(ClamdAddress::parse("unix:///run/clamd.sock"), Ok(ClamdAddress::Unix("/run/clamd.sock".into())));
        assert!(ClamdAddress::parse("tcp://127.0.0.1").is_err());
        assert!(ClamdAddress::parse("tcp://:3310").is_err());
        assert!(ClamdAddress::parse("unix:relative").is_err());
        assert!(ClamdAddress::parse("127.0.0.1:3310").is_err());
    }

    /// A fake clamd that checks the framing byte by byte and answers `reply`; returns what it
    /// received once the terminating chunk arrives.
    async fn fake_clamd(mut conn: tokio::io::DuplexStream, reply: &'static [u8]) -> io::Result<(Vec<u8>, Vec<usize>)> {
        let mut command = [0u8; 10];
        conn.read_exact(&mut command).await?;
        assert_eq!(&command, b"zINSTREAM\0");
        let mut data = Vec::new();
        let mut chunks = Vec::new();
        loop {
            let mut length = [0u8; 4];
            conn.read_exact(&mut length).await?;
            let length = u32::from_be_bytes(length) as usize;
            if length == 0 {
                break;
            }
            chunks.push(length);
            let mut chunk = vec![0u8; length];
            conn.read_exact(&mut chunk).await?;
            data.extend_from_slice(&chunk);
        }
        conn.write_all(reply).await?;
        Ok((data, chunks))
    }

    #[tokio::test]
    async fn instream_frames_chunks_and_reads_the_reply() {
        let payload: Vec<u8> = (0..(CHUNK * 2 + 100)).map(|i| (i % 251) as u8).collect();
        let (client, server) = tokio::io::duplex(1024);
        let fake = tokio::spawn(fake_clamd(server, b"stream: Some.Sig FOUND\0"));
        let reply = instream(client, &payload[..]).await.unwrap();
        assert_eq!(parse_reply(&reply), Ok(Verdict::Infected("Some.Sig".into())));
        let (received, chunks) = fake.await.unwrap().unwrap();
        assert_eq!(received, payload);
        assert!(chunks.iter().all(|&len| len <= CHUNK), "chunks are bounded: {chunks:?}");
        assert!(chunks.len() >= 3);
    }

    #[tokio::test]
    async fn an_empty_file_is_one_terminating_chunk() {
        let (client, server) = tokio::io::duplex(1024);
        let fake = tokio::spawn(fake_clamd(server, b"stream: OK\0"));
        let reply = instream(client, &b""[..]).await.unwrap();
        assert_eq!(parse_reply(&reply), Ok(Verdict::Clean));
        let (received, chunks) = fake.await.unwrap().unwrap();
        assert!(received.is_empty() && chunks.is_empty());
    }

    #[tokio::test]
    async fn an_early_error_reply_wins_over_the_broken_write() {
        let (client, mut server) = tokio::io::duplex(64);
        let fake = tokio::spawn(async move {
            let mut start = [0u8; 10];
            server.read_exact(&mut start).await.unwrap();
            server.write_all(b"INSTREAM size limit exceeded. ERROR\0").await.unwrap();
            // Closing without reading the rest, as clamd does.
        });
        let payload = vec![7u8; CHUNK * 4];
        let reply = instream(client, &payload[..]).await.unwrap();
        fake.await.unwrap();
        assert!(parse_reply(&reply).unwrap_err().contains("size limit exceeded"));
    }

    #[tokio::test]
    async fn an_unreachable_clamd_is_unavailable() {
        // Bind a port and close it again, so nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"data").unwrap();
        let scanner = ClamAv::new(ClamdAddress::Tcp(format!("127.0.0.1:{port}")), Duration::from_secs(5));
        let error = scanner.scan(&file).await.unwrap_err();
        assert!(error.0.contains("connect"), "{error}");
    }
}
