//! Idle HTTP/1.1 connections parked outside hyper. A keep-alive connection that has had no
//! request for [`PARK_AFTER`] gives up its hyper state (read and write buffers, some 25 KB) and
//! keeps only its socket; the next request starts a fresh hyper connection on the same socket.
//! Thousands of idle keep-alive clients then cost their sockets, not their buffers.

use super::connections::{Activity, Counted};
use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How long a keep-alive connection stays in hyper without a request before it is parked.
/// Busy clients send their next request well within it, so they never pay for a new hyper
/// connection; a client idle for longer pays one (a few allocations) on its next request.
/// Short, because every connection opened in a burst holds its buffers until then (at 100 ms,
/// 10,000 connections opened at once left about 8 MiB more behind than at 50 ms); the price is
/// a watchdog wake-up every 50 ms per connection that is busy.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(50);

/// What an HTTP/2 client sends first (RFC 9113 section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client socket that can wait for bytes without reading them (the parked state).
pub(crate) trait ClientSocket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ClientSocket for Counted<TcpStream> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().poll_read_ready(cx)
    }
}

/// A connection parks only after TLS has handed all it decrypted to hyper (its read returned
/// Pending), so the next bytes to come are on the TCP socket.
impl ClientSocket for tokio_rustls::server::TlsStream<Counted<TcpStream>> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}

/// The protocol a client speaks, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

/// The client socket as hyper sees it: bytes read before hyper took over are served first,
/// and once the connection's watchdog asks it to park, a read that would wait (no request
/// under way, nothing more from the client) ends the hyper connection instead, as if the
/// client had closed, leaving the socket open.
pub(crate) struct ClientStream<S> {
    socket: S,
    /// Read but not yet handed to hyper: the protocol sniff, or what hyper held when parked.
    prefix: Bytes,
    activity: Arc<Activity>,
    /// Set when this stream told hyper "end of stream" to park; the socket stays open.
    parked: bool,
}

impl<S: ClientSocket> ClientStream<S> {
    pub(crate) fn new(socket: S, activity: Arc<Activity>) -> Self {
        ClientStream {
            socket,
            prefix: Bytes::new(),
            activity,
            parked: false,
        }
    }

    /// Reads until the first bytes tell HTTP/2 (its preface, h2c or ALPN h2) from HTTP/1.1;
    /// what was read is kept for hyper. A client that closes first is left to HTTP/1.1 to end.
    pub(crate) async fn sniff_protocol(&mut self) -> io::Result<Protocol> {
        let mut seen = [0u8; H2_PREFACE.len()];
        let mut len = 0;
        while len < seen.len() {
            let read = self.socket.read(&mut seen[len..]).await?;
            if read == 0 {
                break;
            }
            len += read;
            if seen[..len] != H2_PREFACE[..len] {
                break;
            }
        }
        self.prefix = Bytes::copy_from_slice(&seen[..len]);
        Ok(if seen == *H2_PREFACE {
            Protocol::Http2
        } else {
            Protocol::Http1
        })
    }

    /// Whether hyper ended because this stream parked it (not because the client closed).
    pub(crate) fn parked(&self) -> bool {
        self.parked
    }

    /// Back from parking with `unread`, what hyper had read and not parsed: normally nothing;
    /// the start of a pipelined request head whose rest was late, which the next hyper
    /// connection reads first.
    pub(crate) fn unpark(&mut self, unread: Bytes) {
        self.parked = false;
        self.activity.unparked();
        if !unread.is_empty() {
            // A request is arriving: no parking until it is answered.
            self.activity.bytes_arrived();
        }
        self.prefix = unread;
    }

    /// Completes when the client has sent something (or closed, or the socket failed).
    pub(crate) async fn readable(&self) -> io::Result<()> {
        if !self.prefix.is_empty() {
            return Ok(());
        }
        std::future::poll_fn(|cx| self.socket.poll_read_ready(cx)).await
    }
}

impl<S: ClientSocket> AsyncRead for ClientStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.socket).poll_read(cx, buf) {
            Poll::Pending if this.activity.park_requested() => {
                // hyper, idle between requests, takes this as the client closing (it still
                // flushes what it has not sent; a head it holds the start of is handed back,
                // as hyper answers an incomplete head with nothing).
                this.parked = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.activity.bytes_arrived();
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: ClientSocket> AsyncWrite for ClientStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    /// hyper shuts its stream down when it ends; a parked stream stays open.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.parked {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}
