//! Bounds on the gRPC calls in flight, as a tower layer in front of every
//! service:
//!
//! - at most `max_in_flight` calls are handled at once across all
//!   connections (a budget the HTTP facades share); a call beyond that is
//!   answered RESOURCE_EXHAUSTED
//!   (reason `OVERLOADED`) at once, before its body is read, so a burst
//!   sheds load instead of queueing memory;
//! - a request message over the size limit, which tonic refuses from its
//!   length prefix before buffering it (as OUT_OF_RANGE), is answered
//!   RESOURCE_EXHAUSTED with reason `MESSAGE_TOO_LARGE`, as gRPC's
//!   convention has it. notesd's handlers never answer OUT_OF_RANGE, so the
//!   code identifies tonic's refusal.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::Code;

use super::status::edge_status;

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
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Ok(permit) = self.limits.in_flight.clone().try_acquire_owned() else {
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
            drop(permit);
            let refused_size = response
                .headers()
                .get("grpc-status")
                .is_some_and(|status| status.as_bytes() == b"11");
            if refused_size {
                let status = edge_status(
                    Code::ResourceExhausted,
                    REASON_MESSAGE_TOO_LARGE,
                    format!("the request message is larger than {max_message_bytes} bytes"),
                );
                return Ok(status.into_http());
            }
            Ok(response)
        })
    }
}
