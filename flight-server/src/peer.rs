//! Connections that only send what the server refuses cost the sender
//! time, not the server's cores.
//!
//! A flood of garbage is cheap to send and, answered as fast as it comes,
//! keeps the Flight port's connection tasks busy, so every other caller's
//! requests (cached answers too) wait behind it. Two guards, both per
//! connection on the Flight port, make refusing such a peer nearly free:
//!
//! - **Held**: a connection whose first bytes are not the start of the
//!   HTTP/2 connection preface (or, when the port serves TLS, of a TLS
//!   handshake record) is neither read further nor answered: it is held
//!   for [`HOLD`], then closed. Holding costs a socket and a timer, and the
//!   sender cannot connect again sooner. At most [`MAX_HELD`] connections
//!   are held at a time; past that they are closed at once, as before.
//! - **Delayed**: every connection counts its requests refused as the
//!   caller's protocol or identity fault (a body or Flight SQL envelope
//!   that does not decode, `UNAUTHENTICATED`) in a leaky bucket that drains one a second. Once it
//!   holds more than [`FREE_REFUSALS`], each further request on that connection waits
//!   [`PENALTY`] before it is read at all. A client that makes a few
//!   mistakes never notices; one that keeps sending garbage gets an answer
//!   a second, and its load on the server falls to that.
//!
//! Both count in `/metrics`: `adlake_connections_held_total` and
//! `adlake_requests_delayed_total`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::codegen::http;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};

/// How long a connection that does not speak HTTP/2 is held before it is
/// closed.
pub const HOLD: Duration = Duration::from_secs(2);

/// At most this many connections are held at once.
pub const MAX_HELD: usize = 256;

/// Refusals a connection may collect (draining one a second) before its
/// requests are delayed.
pub const FREE_REFUSALS: f64 = 10.0;

/// The wait before each request of a connection past its free refusals.
pub const PENALTY: Duration = Duration::from_secs(1);

/// The first bytes every HTTP/2 client sends (RFC 9113, section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The first byte of a TLS handshake record (RFC 8446, section 5.1).
const TLS_HANDSHAKE: u8 = 0x16;

/// Connections held now, over the whole process.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// What the first bytes of a connection must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Plain HTTP/2: the connection preface.
    Http2,
    /// TLS: a handshake record.
    Tls,
}

/// The refusals one connection has collected.
#[derive(Debug)]
pub struct Refusals {
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    level: f64,
    at: Instant,
}

impl Bucket {
    fn drained(&self, now: Instant) -> f64 {
        (self.level - now.saturating_duration_since(self.at).as_secs_f64()).max(0.0)
    }
}

impl Default for Refusals {
    fn default() -> Self {
        Self {
            bucket: Mutex::new(Bucket {
                level: 0.0,
                at: Instant::now(),
            }),
        }
    }
}

impl Refusals {
    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        // A poisoned bucket is still a valid count.
        self.bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one refusal at `now`.
    pub fn add(&self, now: Instant) {
        let mut bucket = self.lock();
        bucket.level = bucket.drained(now) + 1.0;
        bucket.at = now;
    }

    /// Whether the connection's requests are delayed at `now`.
    pub fn over(&self, now: Instant) -> bool {
        self.lock().drained(now) > FREE_REFUSALS
    }
}

/// What a request on the Flight port knows about its connection, as a
/// request extension (inside [`TlsConnectInfo`] when the port serves TLS).
#[derive(Debug, Clone)]
pub struct Peer {
    /// The TCP addresses.
    pub tcp: TcpConnectInfo,
    /// The connection's refusals.
    pub refusals: Arc<Refusals>,
}

impl Peer {
    /// The peer of a request, whether the port serves TLS or not.
    fn of<B>(request: &http::Request<B>) -> Option<&Peer> {
        let extensions = request.extensions();
        extensions.get::<Peer>().or_else(|| {
            extensions
                .get::<TlsConnectInfo<Peer>>()
                .map(TlsConnectInfo::get_ref)
        })
    }
}

/// A connection of the Flight port: its bytes pass through unchanged once
/// they start as [`Expect`] says; otherwise it is held, then closed.
#[derive(Debug)]
pub struct Guarded<IO> {
    io: IO,
    expect: Expect,
    /// Bytes of the start checked so far; `None` once all are.
    checked: Option<usize>,
    held: Option<Held>,
    peer: Peer,
}

/// A held connection's timer; its drop releases the connection's place.
#[derive(Debug)]
struct Held {
    until: Pin<Box<tokio::time::Sleep>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<IO> Guarded<IO> {
    /// Guards `io`, a connection whose TCP addresses are `tcp`.
    pub fn new(io: IO, tcp: TcpConnectInfo, expect: Expect) -> Self {
        Self {
            io,
            expect,
            checked: Some(0),
            held: None,
            peer: Peer {
                tcp,
                refusals: Arc::default(),
            },
        }
    }

    /// Whether `bytes`, read at offset `from` of the connection, keep its
    /// start as expected.
    fn starts_well(&self, from: usize, bytes: &[u8]) -> bool {
        match self.expect {
            Expect::Tls => from > 0 || bytes.first().is_none_or(|b| *b == TLS_HANDSHAKE),
            Expect::Http2 => {
                let rest = PREFACE.get(from..).unwrap_or_default();
                let n = rest.len().min(bytes.len());
                bytes[..n] == rest[..n]
            }
        }
    }

    fn needed(&self) -> usize {
        match self.expect {
            Expect::Tls => 1,
            Expect::Http2 => PREFACE.len(),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(held) = &mut this.held {
            ready!(held.until.as_mut().poll(cx));
            // Closed: the caller sees the end of the stream.
            return Poll::Ready(Ok(()));
        }
        let Some(from) = this.checked else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        if this.starts_well(from, read) {
            let upto = from + read.len();
            this.checked = (upto < this.needed() && !read.is_empty()).then_some(upto);
            return Poll::Ready(Ok(()));
        }
        // Not a client of this port: hand nothing on, hold, then close.
        buf.set_filled(before);
        this.checked = None;
        crate::observability::connection_held();
        if HELD.fetch_add(1, Ordering::Relaxed) >= MAX_HELD {
            HELD.fetch_sub(1, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let mut held = Held {
            until: Box::pin(tokio::time::sleep(HOLD)),
        };
        if held.until.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        this.held = Some(held);
        Poll::Pending
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO> Connected for Guarded<IO> {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

/// The [`tower::Layer`] of [`DelayRefused`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DelayRefusedLayer;

impl<S> tower::Layer<S> for DelayRefusedLayer {
    type Service = DelayRefused<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DelayRefused { inner }
    }
}

/// Counts a connection's refused requests and delays its requests once it
/// has too many.
#[derive(Debug, Clone)]
pub struct DelayRefused<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for DelayRefused<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(refusals) = Peer::of(&request).map(|peer| Arc::clone(&peer.refusals)) else {
            return Box::pin(self.inner.call(request));
        };
        // The clone is ready only after its own poll_ready; take the one
        // that was polled and leave the clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            if refusals.over(Instant::now()) {
                crate::observability::request_delayed();
                tokio::time::sleep(PENALTY).await;
            }
            let response = inner.call(request).await?;
            if is_callers_fault(&response) {
                refusals.add(Instant::now());
            }
            Ok(response)
        })
    }
}

/// Whether an answer refuses the request for what the caller sent rather
/// than what it asked: a body that does not decode (tonic's decoder or a
/// Flight SQL envelope), or no valid identity.
fn is_callers_fault(response: &http::Response<tonic::body::Body>) -> bool {
    if response
        .extensions()
        .get::<crate::decode::Undecodable>()
        .is_some()
    {
        return true;
    }
    Status::from_header_map(response.headers()).is_some_and(|status| match status.code() {
        Code::Unauthenticated => true,
        Code::InvalidArgument => status.message().starts_with(crate::flight_sql::MALFORMED),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn tcp() -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: None,
            remote_addr: None,
        }
    }

    /// What `Guarded` hands on of `sent`, written in `chunks`.
    async fn pass(expect: Expect, sent: &[u8], chunks: usize) -> Vec<u8> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut guarded = Guarded::new(server, tcp(), expect);
        let mut client = client;
        let step = sent.len().div_ceil(chunks.max(1)).max(1);
        for chunk in sent.chunks(step) {
            client.write_all(chunk).await.unwrap();
            client.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
        drop(client);
        let mut out = Vec::new();
        guarded.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn an_http2_client_passes_whole_however_its_bytes_arrive() {
        let mut sent = PREFACE.to_vec();
        sent.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00 and the frames after");
        for chunks in [1, 2, 5, sent.len()] {
            assert_eq!(
                pass(Expect::Http2, &sent, chunks).await,
                sent,
                "{chunks} chunks"
            );
        }
    }

    #[tokio::test]
    async fn bytes_that_are_not_http2_are_held_then_closed_without_being_handed_on() {
        let before = Instant::now();
        let out = pass(Expect::Http2, &[0xab; 4096], 1).await;
        assert!(out.is_empty(), "handed on {} bytes", out.len());
        assert!(
            before.elapsed() >= HOLD,
            "closed after {:?}",
            before.elapsed()
        );
        // A start that goes wrong late in the preface is caught too.
        let mut late = PREFACE[..20].to_vec();
        late.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let out = pass(Expect::Http2, &late, 3).await;
        assert!(out.len() < 20, "handed on {} bytes", out.len());
    }

    #[tokio::test]
    async fn a_tls_port_expects_a_handshake_record() {
        let hello = [TLS_HANDSHAKE, 3, 1, 0, 5, 1, 2, 3, 4, 5];
        assert_eq!(pass(Expect::Tls, &hello, 2).await, hello);
        assert!(pass(Expect::Tls, PREFACE, 1).await.is_empty());
    }

    #[test]
    fn refusals_for_what_was_sent_are_the_callers_fault() {
        let mut undecodable = Status::invalid_argument("does not decode").into_http();
        undecodable
            .extensions_mut()
            .insert(crate::decode::Undecodable);
        assert!(is_callers_fault(&undecodable));
        let envelope = Status::invalid_argument(format!(
            "{}: unknown type url",
            crate::flight_sql::MALFORMED
        ));
        assert!(is_callers_fault(&envelope.into_http()));
        assert!(is_callers_fault(
            &Status::unauthenticated("invalid token").into_http()
        ));
        for answer in [
            Status::invalid_argument("unknown metric 'x'"),
            Status::resource_exhausted("rate limit"),
            Status::internal("internal error"),
        ] {
            assert!(!is_callers_fault(&answer.into_http()));
        }
        let ok = http::Response::new(tonic::body::Body::empty());
        assert!(!is_callers_fault(&ok));
    }

    #[test]
    fn refusals_drain_one_a_second() {
        let refusals = Refusals::default();
        let start = Instant::now();
        for _ in 0..FREE_REFUSALS as usize {
            refusals.add(start);
        }
        assert!(!refusals.over(start), "a few mistakes are free");
        refusals.add(start);
        assert!(refusals.over(start));
        assert!(refusals.over(start + Duration::from_millis(500)));
        assert!(!refusals.over(start + Duration::from_secs(2)), "it drains");
        // One refusal a second keeps a connection over once it is.
        let mut at = start;
        for _ in 0..20 {
            at += Duration::from_secs(1);
            refusals.add(at);
        }
        assert!(refusals.over(at));
    }
}
