//! The one body type that flows through the proxy: a client's or an app's streaming body,
//! or a small body unstick makes itself (error pages, internal calls); and a client's request
//! body on its way to the app ([`ClientBody`]), whose pauses are bounded.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

/// What a body's stream may fail with: hyper's errors, or [`BodyStalled`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub type Body = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body received by hyper (a client's request, an app's response), as a [`Body`].
pub fn incoming(body: Incoming) -> Body {
    body.map_err(BoxError::from).boxed()
}

/// The client sent nothing of its request body for `listener.body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent nothing of its request body for {0:?}")]
pub struct BodyStalled(pub Duration);

impl BodyStalled {
    /// Whether `error`, or an error it was caused by, is a stalled client body.
    pub fn caused(error: &(dyn std::error::Error + 'static)) -> bool {
        std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<BodyStalled>())
    }
}

/// A client's request body on its way to the app. A pause longer than `pause_limit` ends it
/// with [`BodyStalled`], so that a client cannot hold an app connection by sending nothing;
/// and its end (read whole, failed or dropped) is announced, for the response timeout to
/// start then rather than while a slow client is still uploading.
pub struct ClientBody {
    inner: Incoming,
    pause_limit: Duration,
    /// Armed while the client is silent; allocated at the first pause, reset at the next.
    pause: Option<Pin<Box<Sleep>>>,
    paused: bool,
    /// Dropped at the end of the body (or with it): its receiver then hears it.
    until_sent: Option<oneshot::Sender<()>>,
}

impl ClientBody {
    /// The body, and a receiver that resolves (with an error) once the body is over.
    pub fn new(inner: Incoming, pause_limit: Duration) -> (ClientBody, oneshot::Receiver<()>) {
        let (until_sent, sent) = oneshot::channel();
        let body = ClientBody {
            inner,
            pause_limit,
            pause: None,
            paused: false,
            until_sent: Some(until_sent),
        };
        (body, sent)
    }
}

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.paused = false;
            if frame.is_none() || this.inner.is_end_stream() {
                this.until_sent = None;
            }
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        let limit = this.pause_limit;
        let pause = this
            .pause
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !this.paused {
            pause.as_mut().reset(Instant::now() + limit);
            this.paused = true;
        }
        match pause.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyStalled(limit).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
