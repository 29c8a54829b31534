//! Bounds on the gRPC calls in flight, as a tower layer in front of every
//! service:
//!
//! - at most `max_in_flight` notes.v1 calls are handled at once across
//!   all connections (a budget the HTTP facades share), each holding its
//!   permit until its response body has been sent; a call beyond that is
//!   answered RESOURCE_EXHAUSTED
//!   (reason `OVERLOADED`) at once, before its body is read, so a burst
//!   sheds load instead of queueing memory. WatchNotes streams are
//!   bounded by their own limit (`--max-watchers`, in `storage::watch`)
//!   instead: a watch is open for hours and would hold a permit throughout;
//! - a request message over the size limit, which tonic refuses from its
//!   length prefix before buffering it (as OUT_OF_RANGE), is answered
//!   RESOURCE_EXHAUSTED with reason `MESSAGE_TOO_LARGE`, as gRPC's
//!   convention has it. tonic's refusal is the one OUT_OF_RANGE without an
//!   ErrorInfo: notesd's own (an expired watch token) always has one. So
//!   is a compressed message that would decompress past the limit, which
//!   tonic stops while decompressing and answers RESOURCE_EXHAUSTED
//!   without an ErrorInfo (notesd's own always carry one).
//!
//! Health and reflection are outside the budget: a probe must answer
//! under load, and a health watch would hold a permit for as long as it
//! runs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Code;

use super::status::edge_status;

/// The calls that take a permit of the budget: notes.v1, not health or
/// reflection...
const BUDGETED_PREFIX: &str = "/notes.v1.";
/// ...and not the change stream.
const WATCH_PATH: &str = "/notes.v1.NotesService/WatchNotes";

/// The ErrorInfo reason of a call shed because too many are in flight.
const REASON_OVERLOADED: &str = "OVERLOADED";
/// The ErrorInfo reason of a request message over the size limit.
const REASON_MESSAGE_TOO_LARGE: &str = "MESSAGE_TOO_LARGE";

/// The layer; one per server, its budget shared by every connection.
#[derive(Debug, Clone)]
pub(crate) struct CallLimitsLayer {
    in_flight: Arc<Semaphore>,
    max_message_bytes: usize,
}

impl CallLimitsLayer {
    /// `in_flight` holds a permit for each call that may be handled at
    /// once (shared with the HTTP facades).
    pub(crate) fn new(in_flight: Arc<Semaphore>, max_message_bytes: usize) -> Self {
        Self {
            in_flight,
            max_message_bytes,
        }
    }
}

impl<S> tower::Layer<S> for CallLimitsLayer {
    type Service = CallLimits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallLimits {
            inner,
            limits: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CallLimits<S> {
    inner: S,
    limits: CallLimitsLayer,
}

impl<S, B, R> tower::Service<http::Request<B>> for CallLimits<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<HeldBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if !path.starts_with(BUDGETED_PREFIX) {
            let response = self.inner.call(request);
            return Box::pin(async move { Ok(response.await?.map(HeldBody::unheld)) });
        }
        let permit = if path == WATCH_PATH {
            None
        } else if let Ok(permit) = self.limits.in_flight.clone().try_acquire_owned() {
            Some(permit)
        } else {
            let status = edge_status(
                Code::ResourceExhausted,
                REASON_OVERLOADED,
                "the server has too many calls in flight; retry with backoff",
            );
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        let max_message_bytes = self.limits.max_message_bytes;
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let headers = response.headers();
            // OUT_OF_RANGE: refused from the length prefix; RESOURCE_EXHAUSTED:
            // a compressed message that would decompress past the limit.
            let refused_size = headers
                .get("grpc-status")
                .is_some_and(|status| matches!(status.as_bytes(), b"11" | b"8"))
                && !headers.contains_key("grpc-status-details-bin");
            if refused_size {
                let status = edge_status(
                    Code::ResourceExhausted,
                    REASON_MESSAGE_TOO_LARGE,
                    format!(
                        "the request message is larger than {max_message_bytes} bytes \
                         (decompressed, when it is compressed)"
                    ),
                );
                return Ok(status.into_http());
            }
            Ok(response.map(|body| match permit {
                Some(permit) => HeldBody::holding(body, permit),
                None => HeldBody::unheld(body),
            }))
        })
    }
}

/// A response body that holds what its call holds (a permit of the budget,
/// its place under its quotas) until it is dropped: the memory of a reply
/// (a page of notes, say) counts against the budget until it has been
/// sent, and a watch holds its place for as long as it streams.
#[derive(Debug)]
pub(crate) struct HeldBody<B, H = OwnedSemaphorePermit> {
    inner: B,
    _held: Option<H>,
}

impl<B: Default, H> Default for HeldBody<B, H> {
    fn default() -> Self {
        Self::unheld(B::default())
    }
}

impl<B, H> HeldBody<B, H> {
    pub(crate) fn unheld(inner: B) -> Self {
        Self { inner, _held: None }
    }

    pub(crate) fn holding(inner: B, held: H) -> Self {
        Self {
            inner,
            _held: Some(held),
        }
    }
}

impl<B, H> http_body::Body for HeldBody<B, H>
where
    B: http_body::Body + Unpin,
    H: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
