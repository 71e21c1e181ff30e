//! The client listener: HTTP/1.1 connections that give their memory back while idle.
//!
//! For each open HTTP/1.1 connection hyper keeps a read buffer of at least 8 KiB and the
//! connection's state, about 20 KiB in all, also while the connection only waits for the
//! client's next request. Clients and proxies keep connections open between requests, so a
//! server with many of them would hold that memory for nothing. Here a connection on which no
//! request has started or been under way for a while ([`IDLE`]) is *parked*: hyper finishes with
//! it and hands back the socket and any bytes it had read ahead; the task then waits for the
//! socket to become readable, holding nothing else, and serves it again with a new hyper
//! connection, the bytes read ahead put back in front. The client sees one connection
//! throughout.
//!
//! HTTP/2 with prior knowledge (h2c) is recognised by its preface and served without parking.
//!
//! On shutdown the listener stops accepting, parked connections close, and busy ones finish what
//! they are doing (hyper's graceful shutdown), as with `axum::serve`.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request},
    response::Response,
};
use bytes::{Buf, Bytes};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use tower::{Service, ServiceExt};

/// How long a connection stays unused before it is parked (it is parked between one and two
/// of these after its last request).
pub const IDLE: Duration = Duration::from_secs(1);

/// The first bytes of every HTTP/2 connection.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A response future as hyper gets it: boxed, so that the connection is `Unpin`.
type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// Serve `app` on `listener` until `shutdown` completes, then wait for the connections to
/// finish. Requests carry [`ConnectInfo<SocketAddr>`] with the client's address. Connections
/// unused for `idle` are parked; `parked` counts how many times one was.
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    idle: Duration,
    parked: Arc<AtomicU64>,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Unpin + 'static,
    S::Future: Send + 'static,
{
    let (stop, stopping) = watch::channel(false);
    // Each connection's task holds a sender; `recv` answers `None` once all are gone.
    let (running, mut all_done) = mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (app, stopping, running, parked) = (app.clone(), stopping.clone(), running.clone(), parked.clone());
        tokio::spawn(async move {
            connection(stream, address, app, idle, &parked, stopping).await;
            drop(running);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(running);
    let _ = all_done.recv().await;
}

/// After a failed `accept`: errors of the one connection are passed over; others (such as
/// running out of file descriptors) are logged and the listener waits a second before going on.
async fn accept_failed(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Requests started on a connection, and how many of them have not been answered yet.
#[derive(Default)]
struct Activity {
    started: AtomicU64,
    answered: AtomicU64,
}

impl Activity {
    /// Whether a request is under way, and how many have started.
    fn read(&self) -> (bool, u64) {
        // `answered` first: a request answered after this read still counts as started.
        let answered = self.answered.load(Ordering::Acquire);
        let started = self.started.load(Ordering::Acquire);
        (started != answered, started)
    }
}

/// Counts a request as answered when dropped (also when its future is dropped unfinished).
struct Answered(Arc<Activity>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::AcqRel);
    }
}

/// Serve one accepted connection until it closes or the server stops.
async fn connection<S>(
    mut stream: TcpStream,
    address: SocketAddr,
    app: S,
    idle: Duration,
    parked: &AtomicU64,
    mut stopping: watch::Receiver<bool>,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Unpin + 'static,
    S::Future: Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let service = {
        let activity = activity.clone();
        service_fn(move |request: hyper::Request<Incoming>| {
            activity.started.fetch_add(1, Ordering::AcqRel);
            let answered = Answered(activity.clone());
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(address));
            let app = app.clone();
            Box::pin(async move {
                let response = app.oneshot(request).await;
                drop(answered);
                response
            }) as ResponseFuture
        })
    };
    match http2_prior_knowledge(&stream, &mut stopping).await {
        None => return,
        Some(true) => {
            let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            let mut connection = Box::pin(builder.serve_connection(TokioIo::new(stream), service));
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stopping.wait_for(|stop| *stop) => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
            return;
        }
        Some(false) => {}
    }
    let mut service = Some(service);
    let mut read_ahead = Bytes::new();
    loop {
        if read_ahead.is_empty() {
            // Parked (or new): the socket alone is held until the client sends something.
            tokio::select! {
                readable = stream.readable() => if readable.is_err() { return },
                _ = stopping.wait_for(|stop| *stop) => return,
            }
        }
        let Some(next) = service.take() else { return };
        let io = TokioIo::new(Rewind { read_ahead, stream });
        let mut connection = Box::new(http1::Builder::new().serve_connection(io, next));
        if !serve_until_idle(&mut connection, &activity, idle, &mut stopping).await {
            return;
        }
        let parts = (*connection).into_parts();
        let rewind = parts.io.into_inner();
        stream = rewind.stream;
        // Copied, so that the parked connection does not keep hyper's read buffer alive.
        read_ahead = [rewind.read_ahead, parts.read_buf].concat().into();
        service = Some(parts.service);
        parked.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether the client opens with the HTTP/2 preface (`None`: it closed first, or the server
/// is stopping).
async fn http2_prior_knowledge(stream: &TcpStream, stopping: &mut watch::Receiver<bool>) -> Option<bool> {
    let mut first = [0; H2_PREFACE.len()];
    loop {
        let read = tokio::select! {
            read = stream.peek(&mut first) => match read {
                Ok(0) | Err(_) => return None,
                Ok(read) => read,
            },
            _ = stopping.wait_for(|stop| *stop) => return None,
        };
        if first[..read] != H2_PREFACE[..read] {
            return Some(false);
        }
        if read == H2_PREFACE.len() {
            return Some(true);
        }
        // Part of what could be the preface: wait for the rest.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

type Http1Connection<S> = http1::Connection<TokioIo<Rewind>, S>;

/// Drive an HTTP/1.1 connection. Answers `true` when it was shut down for being idle (to be
/// parked), `false` when it is over: closed by the client, failed, or finished because the
/// server is stopping.
async fn serve_until_idle<S>(
    connection: &mut Http1Connection<S>,
    activity: &Activity,
    idle: Duration,
    stopping: &mut watch::Receiver<bool>,
) -> bool
where
    S: hyper::service::HttpService<Incoming, ResBody = axum::body::Body, Error = Infallible> + Unpin,
    S::Future: Unpin,
{
    let mut checks = tokio::time::interval_at(tokio::time::Instant::now() + idle, idle);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Until a first request has been served, hyper would answer that request with
    // `connection: close` after a shutdown, so a connection is parked only once it has served one.
    let first = activity.read().1;
    let mut last_started = first;
    let mut parking = false;
    let mut stopped = false;
    loop {
        tokio::select! {
            done = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => {
                if let Err(error) = done {
                    tracing::debug!(%error, "HTTP connection ended with an error");
                    return false;
                }
                return parking && !stopped;
            }
            _ = checks.tick(), if !parking && !stopped => {
                let (busy, started) = activity.read();
                if !busy && started == last_started && started > first {
                    Pin::new(&mut *connection).graceful_shutdown();
                    parking = true;
                }
                last_started = started;
            }
            _ = stopping.wait_for(|stop| *stop), if !stopped => {
                Pin::new(&mut *connection).graceful_shutdown();
                stopped = true;
            }
        }
    }
}

/// A socket with bytes already read from it put back in front.
struct Rewind {
    read_ahead: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.read_ahead.is_empty() {
            let n = self.read_ahead.len().min(buf.remaining());
            buf.put_slice(&self.read_ahead[..n]);
            self.read_ahead.advance(n);
            if self.read_ahead.is_empty() {
                self.read_ahead = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use axum::{Router, extract::ConnectInfo, routing::get};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
        sync::oneshot,
    };

    use super::*;

    /// How long connections stay unused before they are parked, in these tests.
    const TEST_IDLE: Duration = Duration::from_millis(50);

    /// A listener on a free port answering `/who` with the client's address and `/slow` after
    /// a pause; the sender stops it, the handle ends when it has stopped, and the counter counts
    /// parked connections.
    async fn start() -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>, Arc<AtomicU64>) {
        let app = Router::new()
            .route("/who", get(|ConnectInfo(client): ConnectInfo<SocketAddr>| async move { client.to_string() }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "done"
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let parked = Arc::new(AtomicU64::new(0));
        let server = tokio::spawn(serve(listener, app, TEST_IDLE, parked.clone(), async {
            let _ = stopped.await;
        }));
        (address, stop, server, parked)
    }

    /// Read one HTTP/1.1 response with a `content-length` from `stream`: status line (with
    /// ` (close)` after it when the server says it closes the connection) and body. Bytes of
    /// later responses stay in `received` for the next call.
    async fn read_response_after(stream: &mut TcpStream, received: &mut Vec<u8>) -> (String, String) {
        let mut chunk = [0; 1024];
        loop {
            let text = String::from_utf8_lossy(received).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                    .unwrap()
                    .parse()
                    .unwrap();
                if text.len() >= end + 4 + length {
                    let mut status = text.lines().next().unwrap().to_owned();
                    if text[..end].to_ascii_lowercase().contains("\r\nconnection: close") {
                        status.push_str(" (close)");
                    }
                    received.drain(..end + 4 + length);
                    return (status, text[end + 4..end + 4 + length].to_owned());
                }
            }
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
                .await
                .expect("the response came within 5 s")
                .unwrap();
            assert!(read > 0, "connection closed before a whole response: {text:?}");
            received.extend_from_slice(&chunk[..read]);
        }
    }

    async fn read_response(stream: &mut TcpStream) -> (String, String) {
        let mut received = Vec::new();
        let response = read_response_after(stream, &mut received).await;
        assert!(received.is_empty(), "nothing follows the response");
        response
    }

    /// Whether `parked` reaches `count` within five seconds (the wait is long so that a busy
    /// machine does not fail the test; a connection that is never parked fails it).
    async fn parked_reaches(parked: &AtomicU64, count: u64) -> bool {
        for _ in 0..500 {
            if parked.load(Ordering::Relaxed) >= count {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// A connection to `address`, and the client address the server sees for it.
    async fn connect(address: SocketAddr) -> (TcpStream, String) {
        let stream = TcpStream::connect(address).await.unwrap();
        let client = stream.local_addr().unwrap().to_string();
        (stream, client)
    }

    const WHO: &[u8] = b"GET /who HTTP/1.1\r\nhost: test\r\n\r\n";

    #[tokio::test]
    async fn an_idle_connection_is_parked_and_then_serves_its_next_request() {
        let (address, _stop, _server, parked) = start().await;
        let (mut stream, client) = connect(address).await;
        stream.write_all(WHO).await.unwrap();
        assert_eq!(read_response(&mut stream).await, ("HTTP/1.1 200 OK".to_owned(), client.clone()));
        assert_eq!(parked.load(Ordering::Relaxed), 0, "not parked while in use");

        assert!(parked_reaches(&parked, 1).await, "the idle connection was parked");

        // Same socket, same client address: the connection stayed open through the park.
        stream.write_all(WHO).await.unwrap();
        let (status, body) = read_response(&mut stream).await;
        assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", client.as_str()));
        assert!(parked_reaches(&parked, 2).await, "parked again after its next request");
    }

    #[tokio::test]
    async fn a_request_that_arrives_in_parts_across_a_park_is_served_whole() {
        let (address, _stop, _server, parked) = start().await;
        let (mut stream, client) = connect(address).await;
        stream.write_all(WHO).await.unwrap();
        read_response(&mut stream).await;
        // The next request's first bytes, then a pause: hyper has read them when the
        // connection is parked, and they must be handed back.
        stream.write_all(&WHO[..10]).await.unwrap();
        assert!(parked_reaches(&parked, 1).await, "the connection was parked with part of a request read");
        stream.write_all(&WHO[10..]).await.unwrap();
        assert_eq!(read_response(&mut stream).await, ("HTTP/1.1 200 OK".to_owned(), client));
    }

    #[tokio::test]
    async fn a_connection_is_not_parked_while_a_request_is_under_way() {
        let (address, _stop, _server, _) = start().await;
        let (mut stream, client) = connect(address).await;
        // `/slow` takes six times the idle time; the connection stays open for what follows.
        stream.write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        assert_eq!(read_response(&mut stream).await, ("HTTP/1.1 200 OK".to_owned(), "done".to_owned()));
        stream.write_all(WHO).await.unwrap();
        assert_eq!(read_response(&mut stream).await, ("HTTP/1.1 200 OK".to_owned(), client));
    }

    #[tokio::test]
    async fn pipelined_requests_are_all_answered() {
        let (address, _stop, _server, _) = start().await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(&[WHO, WHO, WHO].concat()).await.unwrap();
        let mut received = Vec::new();
        for _ in 0..3 {
            assert_eq!(read_response_after(&mut stream, &mut received).await.0, "HTTP/1.1 200 OK");
        }
    }

    #[tokio::test]
    async fn http2_with_prior_knowledge_is_served() {
        let (address, _stop, _server, _) = start().await;
        let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
        let response = client.get(format!("http://{address}/who")).send().await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        assert!(response.text().await.unwrap().starts_with("127.0.0.1:"));
    }

    #[tokio::test]
    async fn shutdown_closes_idle_connections_and_finishes_requests_under_way() {
        let (address, stop, server, _) = start().await;
        let mut idle = TcpStream::connect(address).await.unwrap();
        idle.write_all(WHO).await.unwrap();
        read_response(&mut idle).await;
        let mut busy = TcpStream::connect(address).await.unwrap();
        busy.write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;

        stop.send(()).unwrap();
        // The request under way is answered before the server stops, saying it closes.
        assert_eq!(read_response(&mut busy).await, ("HTTP/1.1 200 OK (close)".to_owned(), "done".to_owned()));
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("the server stopped").unwrap();
        let mut rest = Vec::new();
        assert_eq!(idle.read_to_end(&mut rest).await.unwrap(), 0, "the idle connection was closed");
        assert!(TcpStream::connect(address).await.is_err(), "no longer accepting");
    }
}
