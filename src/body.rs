//! The one body type that flows through the proxy: a client's or an app's streaming body,
//! or a small body unstick makes itself (error pages, internal calls); and a client's request
//! body on its way to the app ([`ClientBody`]), whose pauses are bounded.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
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

/// How a client's request body is going (see [`ClientBody`]). Each frame passed on notifies
/// the receiver; the sender is dropped when the body is over (read whole, failed or dropped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Upload {
    /// Whether it waits for the client (rather than for the app to take more).
    pub waiting_for_client: bool,
}

/// Kept with a client's request body until the body has been read whole or dropped: the
/// server's mark that the request is still being read, so that its connection is not taken
/// for idle while the rest of the body is still to come (it would read that rest as a request).
#[derive(Clone)]
pub struct BodyInFlight {
    /// Held, never read: dropping it is the signal.
    _mark: Arc<dyn Send + Sync>,
}

impl BodyInFlight {
    pub fn new(mark: impl Send + Sync + 'static) -> BodyInFlight {
        BodyInFlight {
            _mark: Arc::new(mark),
        }
    }
}

/// A client's request body on its way to the app. A pause of the client longer than
/// `pause_limit` ends it with [`BodyStalled`], so that a client cannot hold an app connection
/// by sending nothing. Its progress is reported ([`Upload`]), so that the response timeout
/// can start when the body is over rather than while a slow client is still uploading.
pub struct ClientBody {
    inner: Incoming,
    pause_limit: Duration,
    /// Armed while the client is silent; allocated at the first pause, reset at the next.
    pause: Option<Pin<Box<Sleep>>>,
    progress: Option<watch::Sender<Upload>>,
    /// Let go with `progress`, when the body is over.
    in_flight: Option<BodyInFlight>,
}

impl ClientBody {
    /// The body, and the receiver of its progress.
    pub fn new(
        inner: Incoming,
        pause_limit: Duration,
        in_flight: Option<BodyInFlight>,
    ) -> (ClientBody, watch::Receiver<Upload>) {
        let (progress, upload) = watch::channel(Upload::default());
        let body = ClientBody {
            inner,
            pause_limit,
            pause: None,
            progress: Some(progress),
            in_flight,
        };
        (body, upload)
    }

    /// Notifies the receiver, changed or not (`send_modify`): a frame is progress too.
    fn report(&self, waiting_for_client: bool) {
        if let Some(progress) = &self.progress {
            progress.send_modify(|upload| upload.waiting_for_client = waiting_for_client);
        }
    }

    fn waiting_for_client(&self) -> bool {
        self.progress
            .as_ref()
            .is_some_and(|p| p.borrow().waiting_for_client)
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
            this.report(false);
            if frame.is_none() || this.inner.is_end_stream() {
                this.progress = None;
                this.in_flight = None;
            }
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        let limit = this.pause_limit;
        let newly_paused = !this.waiting_for_client();
        if newly_paused {
            this.report(true);
        }
        let pause = this
            .pause
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if newly_paused {
            pause.as_mut().reset(Instant::now() + limit);
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
